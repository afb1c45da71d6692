#!/usr/bin/env bash
# The whole test suite: install deps, check the module dependency rules,
# build (release preset, CUDA kernels compiled when nvcc exists), run clang's
# thread-safety analysis on the engine/registry/server sources, run every
# CTest test (C++ unit, Python-oracle parity, end-to-end), run the README's
# main job (scripts/demo.sh), then the C++ tests again under ASan+UBSan, then
# each fuzz target briefly.
#   LCD_SKIP_ASAN=1 / LCD_SKIP_FUZZ=1 skip those stages (local iteration).
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=${JOBS:-$(nproc)}
scripts/install-deps.sh

echo "== dependency rules"
python3 scripts/check_deps.py

echo "== build (release)"
cmake --preset release >/dev/null
cmake --build --preset release -j "$JOBS"
# Clang's -Wthread-safety over runtime/ and server/ (Abseil annotations),
# syntax-only on the release build's compile commands: about a minute.
echo "== thread-safety analysis (clang -Wthread-safety)"
python3 scripts/thread_safety.py build/release

echo "== test (release)"
ctest --preset release -j "$JOBS"

# The README's other promise: the main job runs end to end (reuses the
# release build; ports away from the defaults so a running server is no clash).
echo "== main job (scripts/demo.sh)"
GRPC_PORT=${DEMO_GRPC_PORT:-50151} METRICS_PORT=${DEMO_METRICS_PORT:-9451} scripts/demo.sh

if [ "${LCD_SKIP_ASAN:-0}" != 1 ]; then
  echo "== build + test (asan)"
  cmake --preset asan >/dev/null
  cmake --build --preset asan -j "$JOBS"
  ctest --preset asan -j "$JOBS"
fi

if [ "${LCD_SKIP_FUZZ:-0}" != 1 ]; then
  echo "== fuzz (brief)"
  scripts/fuzz.sh "${LCD_FUZZ_SECONDS:-30}"
fi
echo "== all tests passed"
