#!/usr/bin/env bash
# Builds the libFuzzer targets with clang and runs each for N seconds
# (default 30) from its seed corpus in tests/fuzz/corpus/<target>.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_TARGET=${1:-30}
cmake --preset fuzz >/dev/null
cmake --build --preset fuzz -j "${JOBS:-$(nproc)}"
shopt -s nullglob
found=0
for bin in build/fuzz/tests/fuzz/fuzz_*; do
  [ -x "$bin" ] || continue
  found=1
  name=$(basename "$bin")
  corpus_src=tests/fuzz/corpus/${name#fuzz_}
  work=build/fuzz/corpus/$name
  mkdir -p "$work"
  [ -d "$corpus_src" ] && cp -n "$corpus_src"/* "$work"/ 2>/dev/null || true
  echo "-- $name for ${SECONDS_PER_TARGET}s"
  "$bin" -max_total_time="$SECONDS_PER_TARGET" -max_len=65536 -print_final_stats=1 "$work" 2>&1 | tail -n 12
done
[ "$found" = 1 ] || { echo "no fuzz targets built"; exit 1; }
