#!/usr/bin/env bash
# The main job, end to end on one machine: install the dependencies, build the
# `lcd` command-line tool (release preset; CUDA kernels compiled when nvcc is
# present), and generate text with the small Llama-architecture model that is
# committed in models/tiny-shakespeare.
#
#   scripts/demo.sh                      # default prompt
#   scripts/demo.sh "KING RICHARD III:"  # your own prompt
#   MAX_NEW_TOKENS=200 TEMPERATURE=0.7 SEED=7 scripts/demo.sh
#
# Environment: JOBS (build parallelism, default nproc), MODEL (model
# directory, default models/tiny-shakespeare), MAX_NEW_TOKENS, TEMPERATURE,
# SEED.
set -euo pipefail
cd "$(dirname "$0")/.."

PROMPT=${1:-"ROMEO:
"}
MODEL=${MODEL:-models/tiny-shakespeare}
JOBS=${JOBS:-$(nproc)}

scripts/install-deps.sh

echo "== build (release preset, target lcd)"
cmake --preset release >/dev/null
cmake --build --preset release -j "$JOBS" --target lcd

echo "== generate (model: $MODEL)"
build/release/tools/lcd generate \
  --model "$MODEL" \
  --prompt "$PROMPT" \
  --max-new-tokens "${MAX_NEW_TOKENS:-120}" \
  --temperature "${TEMPERATURE:-0.8}" \
  --seed "${SEED:-1}"
