# syntax=docker/dockerfile:1
#
# lcdserve image: a builder stage that compiles lcd, lcd-server and lcd-jobs,
# and a slim runtime stage with only the shared libraries those binaries link.
#
# CPU image (Debian 12; the default):
#   docker build -t lcdserve:cpu .
# CUDA image (CUDA kernels compiled for sm_80 and sm_90a; runs on hosts with
# the NVIDIA container toolkit). The CUDA base images are Ubuntu 24.04, which
# ships the same gRPC 1.51 / protobuf 3.21 / Abseil 20220623 as Debian 12:
#   docker build -t lcdserve:cuda \
#     --build-arg CUDA=1 \
#     --build-arg BASE_IMAGE=nvidia/cuda:12.6.3-devel-ubuntu24.04 \
#     --build-arg RUNTIME_IMAGE=nvidia/cuda:12.6.3-runtime-ubuntu24.04 .
# Run:
#   docker run --rm -p 50051:50051 -p 9090:9090 lcdserve:cpu
#   docker run --rm --entrypoint lcd lcdserve:cpu generate \
#     --model /opt/lcd/models/tiny-shakespeare --prompt "ROMEO:"
#
# No HEALTHCHECK: Kubernetes probes the standard gRPC health service
# (helm/lcdserve), and `docker run` users can do the same with grpc_health_probe.

ARG BASE_IMAGE=debian:12
ARG RUNTIME_IMAGE=debian:12-slim

# ---------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS builder
# CUDA=1 selects the cuda-release preset (LCD_CUDA=ON), CUDA=0 cpu-release.
ARG CUDA=0
ENV DEBIAN_FRONTEND=noninteractive
# The C++ build dependencies of scripts/install-deps.sh, minus the test-only
# ones (gtest, benchmark, clang) and the Python packages: tests are not built here.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      build-essential cmake ninja-build pkg-config ca-certificates \
      libabsl-dev libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc \
      libcxxopts-dev nlohmann-json3-dev libsentencepiece-dev libpcre2-dev libsqlite3-dev \
      prometheus-cpp-dev libcivetweb-dev libopenblas-dev \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY . .

# Binaries land at build/<preset>/tools/lcd and build/<preset>/server/lcd-{server,jobs};
# liblcd_spm_shim.so (libsentencepiece behind a C API, dlopen()ed at run time
# because Debian's libsentencepiece clashes with libprotobuf) at build/<preset>/lib.
RUN set -eux; \
    if [ "${CUDA}" = 1 ]; then preset=cuda-release; else preset=cpu-release; fi; \
    cmake --preset "${preset}" -DLCD_BUILD_TESTS=OFF -DLCD_BUILD_BENCHMARKS=OFF; \
    cmake --build --preset "${preset}" --target lcd lcd-server lcd-jobs lcd_spm_shim; \
    mkdir -p /out/bin /out/lib; \
    cp "build/${preset}/tools/lcd" "build/${preset}/server/lcd-server" "build/${preset}/server/lcd-jobs" /out/bin/; \
    cp "build/${preset}/lib/liblcd_spm_shim.so" /out/lib/; \
    strip /out/bin/*; \
    strip --strip-unneeded /out/lib/*

# The runtime packages are the ones that own the shared libraries the binaries
# and the shim load, found here with ldd + dpkg rather than listed by hand, so the list is
# right for either base image. On Debian 12 it comes out as libgrpc++1.51,
# libgrpc29, libprotobuf32, libabsl20220623, libsentencepiece0, libpcre2-8-0,
# libsqlite3-0, libprometheus-cpp-core1.0, libprometheus-cpp-pull1.0, libcivetweb1
# and their dependencies (libssl3, zlib1g, ...).
RUN set -eux; \
    ldd /out/bin/* /out/lib/* | awk '$2 == "=>" && $3 ~ /^\// { print $3 }' | sort -u \
      | while read -r lib; do dpkg -S "*/$(basename "$(dirname "${lib}")")/$(basename "${lib}")" 2>/dev/null | head -n1 | cut -d: -f1; done \
      | sort -u > /out/runtime-packages.txt; \
    cat /out/runtime-packages.txt; \
    test -s /out/runtime-packages.txt

# ---------------------------------------------------------------------------
FROM ${RUNTIME_IMAGE} AS runtime
ENV DEBIAN_FRONTEND=noninteractive
COPY --from=builder /out/runtime-packages.txt /tmp/runtime-packages.txt
RUN apt-get update \
 && xargs -a /tmp/runtime-packages.txt apt-get install -y --no-install-recommends \
 && rm -rf /var/lib/apt/lists/* /tmp/runtime-packages.txt

RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/lcd --create-home lcd \
 && mkdir -p /etc/lcd /var/lib/lcd/artifacts \
 && chown -R lcd:lcd /var/lib/lcd

COPY --from=builder /out/bin/ /usr/local/bin/
# One of the places the runtime looks for the shim (others: $LCD_SPM_SHIM,
# <binary dir>/../lib, /usr/local/lib/lcd); see runtime/src/sentencepiece_library.h.
COPY --from=builder /out/lib/liblcd_spm_shim.so /opt/lcd/lib/
# The small committed model, so the image can serve something with no volume.
COPY models/tiny-shakespeare/ /opt/lcd/models/tiny-shakespeare/
# Example server configuration; Kubernetes mounts its ConfigMap over it.
COPY deploy/config/server.json /etc/lcd/server.json

# lcd-server and lcd-jobs bind 127.0.0.1 by default; in a container the pod
# network is the boundary, so the image listens on every interface (lcd-jobs
# then insists on a token file: mount it from a Secret). lcd-jobs runs its
# workers as `lcd`, found beside it in /usr/local/bin.
ENV LCD_GRPC_ADDRESS=0.0.0.0 LCD_METRICS_ADDRESS=0.0.0.0

USER lcd:lcd
WORKDIR /var/lib/lcd
# lcd-server: 50051 gRPC (Generate, health, reflection), 9090 /metrics.
# lcd-jobs (run with --entrypoint lcd-jobs or the chart's command): 50061, 9401.
EXPOSE 50051 9090 50061 9401
ENTRYPOINT ["lcd-server"]
CMD ["--config", "/etc/lcd/server.json", "--grpc-port", "50051", "--metrics-port", "9090"]
