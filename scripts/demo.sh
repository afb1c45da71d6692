#!/usr/bin/env bash
# The main job, end to end on one machine: install the dependencies, build
# `lcd-server` and the `lcd` CLI (release preset; CUDA kernels compiled when
# nvcc is present, CPU backend at run time), start the server on the small
# Llama-architecture model committed in models/tiny-shakespeare, make a
# streaming Generate call against it over gRPC, show a few of its Prometheus
# metrics, and shut it down gracefully (SIGTERM).
#
#   scripts/demo.sh                      # default prompt
#   scripts/demo.sh "KING RICHARD III:"  # your own prompt
#   MAX_NEW_TOKENS=200 TEMPERATURE=0.7 SEED=7 scripts/demo.sh
#
# Environment: JOBS (build parallelism, default nproc), MODEL (model
# directory, default models/tiny-shakespeare), GRPC_PORT (default 50051),
# METRICS_PORT (default 9400), MAX_NEW_TOKENS, TEMPERATURE, SEED.
set -euo pipefail
cd "$(dirname "$0")/.."

PROMPT=${1:-"ROMEO:
"}
MODEL=${MODEL:-models/tiny-shakespeare}
JOBS=${JOBS:-$(nproc)}
GRPC_PORT=${GRPC_PORT:-50051}
METRICS_PORT=${METRICS_PORT:-9400}
BIN=build/release

scripts/install-deps.sh

echo "== build (release preset: lcd-server, lcd)"
cmake --preset release >/dev/null
cmake --build --preset release -j "$JOBS" --target lcd-server lcd

echo "== start lcd-server (model tiny-shakespeare from $MODEL)"
LOG=$(mktemp -t lcd-server.XXXXXX.log)
"$BIN/server/lcd-server" --model "tiny-shakespeare=$MODEL" \
  --grpc-address 127.0.0.1 --grpc-port "$GRPC_PORT" \
  --metrics-address 127.0.0.1 --metrics-port "$METRICS_PORT" >"$LOG" 2>&1 &
SERVER_PID=$!
cleanup() { kill "$SERVER_PID" 2>/dev/null || true; }
trap cleanup EXIT

# Ready when the metrics endpoint answers and the model is loaded (the
# server reports SERVING only after its configured models have loaded).
for _ in $(seq 1 120); do
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "lcd-server exited during start-up:"; cat "$LOG"; exit 1
  fi
  if curl -sf "http://127.0.0.1:$METRICS_PORT/healthz" >/dev/null 2>&1; then break; fi
  sleep 0.5
done
"$BIN/tools/lcd" client --server "127.0.0.1:$GRPC_PORT" --model tiny-shakespeare \
  --prompt "$PROMPT" --stream \
  --max-new-tokens "${MAX_NEW_TOKENS:-120}" --temperature "${TEMPERATURE:-0.8}" --seed "${SEED:-1}"

echo "== a few of the server's Prometheus metrics (http://127.0.0.1:$METRICS_PORT/metrics)"
curl -sf "http://127.0.0.1:$METRICS_PORT/metrics" |
  grep -E '^lcd_(requests_total|generation_tokens_total|prompt_tokens_total|time_to_first_token_seconds_count)' || true

echo "== graceful shutdown (SIGTERM)"
kill -TERM "$SERVER_PID"
wait "$SERVER_PID"
echo "lcd-server exited with status $?; its log: $LOG"
trap - EXIT
