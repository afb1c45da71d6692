#!/usr/bin/env bash
# Installs everything lcdserve needs to build, test and run on Debian 12:
# Debian packages for the C++ build, PyPI packages for the Python oracles
# (transformers, tokenizers, sentencepiece) and the Python gRPC client.
# Idempotent; safe to re-run. Needs root (or sudo).
set -euo pipefail
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

DEB_PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git clang libclang-rt-14-dev
  libabsl-dev libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
  libcxxopts-dev nlohmann-json3-dev libsentencepiece-dev libpcre2-dev libsqlite3-dev
  libssl-dev libopenblas-dev libgtest-dev libgmock-dev libbenchmark-dev libcpp-httplib-dev
  prometheus python3 python3-pip curl
)
missing=()
for p in "${DEB_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "[install-deps] apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if ! $PY -c "import pytest, torch, transformers, tokenizers, sentencepiece, safetensors, numpy, grpc, grpc_tools" 2>/dev/null; then
  echo "[install-deps] pip install -r scripts/requirements-test.txt"
  # Debian's python marks its site-packages externally managed; a pyenv/venv
  # python does not. --break-system-packages is accepted by pip >= 23.
  PIP_FLAGS=(-q)
  if $PY -m pip install --help 2>/dev/null | grep -q break-system-packages; then
    if $PY -c "import sys; sys.exit(0 if sys.prefix == sys.base_prefix and sys.prefix.startswith('/usr') else 1)"; then
      PIP_FLAGS+=(--break-system-packages)
    fi
  fi
  $PY -m pip install "${PIP_FLAGS[@]}" -r "$(dirname "$0")/requirements-test.txt"
fi
echo "[install-deps] done"
