#!/usr/bin/env bash
# The main job, end to end on one machine with no GPU: install the
# dependencies, build lcd-server, lcd-jobs and the `lcd` CLI, then the whole
# product loop on the small Llama-architecture model in models/tiny-shakespeare:
#   1. start lcd-jobs (job store, artifact store, token) and lcd-server
#      (serving the model from its checkpoint, following the artifact store);
#   2. Generate (streaming) from the checkpoint;
#   3. submit a quantization job (k-means, 4 bits) and watch its progress;
#   4. see lcd-server switch to the published version by itself (hot swap);
#   5. Generate again, now from the quantized artifact;
#   6. show both daemons' metrics, and stop both with SIGTERM.
#
#   scripts/demo.sh                      # default prompt
#   scripts/demo.sh "KING RICHARD III:"  # your own prompt
#   MAX_NEW_TOKENS=200 TEMPERATURE=0.7 SEED=7 scripts/demo.sh
#
# Environment: JOBS (build parallelism, default nproc), GRPC_PORT (default
# 50051), METRICS_PORT (9400), JOBS_GRPC_PORT (50061), JOBS_METRICS_PORT
# (9401), METHOD (kmeans), BITS (4), GROUP_SIZE (64), MAX_NEW_TOKENS,
# TEMPERATURE, SEED.
set -euo pipefail
cd "$(dirname "$0")/.."

PROMPT=${1:-"ROMEO:
"}
JOBS=${JOBS:-$(nproc)}
GRPC_PORT=${GRPC_PORT:-50051}
METRICS_PORT=${METRICS_PORT:-9400}
JOBS_GRPC_PORT=${JOBS_GRPC_PORT:-50061}
JOBS_METRICS_PORT=${JOBS_METRICS_PORT:-9401}
BIN=build/release
NAME=tiny-shakespeare

scripts/install-deps.sh

echo "== build (release preset: lcd-server, lcd-jobs, lcd)"
cmake --preset release >/dev/null
cmake --build --preset release -j "$JOBS" --target lcd-server lcd-jobs lcd

WORK=$(mktemp -d -t lcd-demo.XXXXXX)
STORE="$WORK/artifacts"
mkdir -p "$STORE"
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$WORK/token"
export LCD_JOBS_TOKEN
LCD_JOBS_TOKEN=$(cat "$WORK/token")

echo "== start lcd-jobs (store $WORK/jobs.db, artifacts $STORE)"
"$BIN/server/lcd-jobs" --grpc-port "$JOBS_GRPC_PORT" --metrics-port "$JOBS_METRICS_PORT" \
  --store "$WORK/jobs.db" --artifact-root "$STORE" --model-roots "$PWD/models" \
  --token-file "$WORK/token" --worker-threads 1 >"$WORK/lcd-jobs.log" 2>&1 &
JOBS_PID=$!
echo "== start lcd-server ($NAME from models/$NAME, following $STORE)"
"$BIN/server/lcd-server" --model "$NAME=models/$NAME" \
  --grpc-address 127.0.0.1 --grpc-port "$GRPC_PORT" \
  --metrics-address 127.0.0.1 --metrics-port "$METRICS_PORT" \
  --artifact-root "$STORE" --artifact-rescan-seconds 1 >"$WORK/lcd-server.log" 2>&1 &
SERVER_PID=$!
cleanup() { kill "$SERVER_PID" "$JOBS_PID" 2>/dev/null || true; }
trap cleanup EXIT

wait_healthy() {  # pid port name
  for _ in $(seq 1 120); do
    if ! kill -0 "$1" 2>/dev/null; then
      echo "$3 exited during start-up:"; cat "$WORK/$3.log"; exit 1
    fi
    if curl -sf "http://127.0.0.1:$2/healthz" >/dev/null 2>&1; then return; fi
    sleep 0.5
  done
  echo "$3 did not become healthy:"; cat "$WORK/$3.log"; exit 1
}
wait_healthy "$JOBS_PID" "$JOBS_METRICS_PORT" lcd-jobs
wait_healthy "$SERVER_PID" "$METRICS_PORT" lcd-server

generate() {
  "$BIN/tools/lcd" client --server "127.0.0.1:$GRPC_PORT" --model "$NAME" --prompt "$PROMPT" --stream \
    --max-new-tokens "${MAX_NEW_TOKENS:-120}" --temperature "${TEMPERATURE:-0.8}" --seed "${SEED:-1}"
}
echo "== Generate from the checkpoint"
generate

echo "== submit a quantization job and watch it (lcd jobs submit --watch)"
"$BIN/tools/lcd" jobs submit --server "127.0.0.1:$JOBS_GRPC_PORT" --source "$NAME" --target "$NAME" \
  --method "${METHOD:-kmeans}" --bits "${BITS:-4}" --group-size "${GROUP_SIZE:-64}" --watch
VERSION=$("$BIN/tools/lcd" jobs list --server "127.0.0.1:$JOBS_GRPC_PORT" --state SUCCEEDED |
          head -1 | sed -E 's/.* v([0-9]+) .*/\1/')

echo "== lcd-server picks up version $VERSION by itself (hot swap)"
for _ in $(seq 1 120); do
  if grep -q "model $NAME: READY (version $VERSION," "$WORK/lcd-server.log"; then break; fi
  sleep 0.5
done
grep -E "artifact watcher|model $NAME: (READY|draining)" "$WORK/lcd-server.log" | sed 's/^/  /'

echo "== Generate from the quantized version"
generate

echo "== metrics: lcd-server (http://127.0.0.1:$METRICS_PORT/metrics)"
curl -sf "http://127.0.0.1:$METRICS_PORT/metrics" |
  grep -E '^lcd_(requests_total|generation_tokens_total|model_load_seconds_count|model_versions_refused_total)' || true
echo "== metrics: lcd-jobs (http://127.0.0.1:$JOBS_METRICS_PORT/metrics)"
curl -sf "http://127.0.0.1:$JOBS_METRICS_PORT/metrics" |
  grep -E '^lcd_(jobs|job_duration_seconds_count|job_worker_restarts_total)' || true

echo "== graceful shutdown (SIGTERM)"
kill -TERM "$SERVER_PID" "$JOBS_PID"
wait "$SERVER_PID"; SERVER_RC=$?
wait "$JOBS_PID"; JOBS_RC=$?
trap - EXIT
echo "lcd-server exited with status $SERVER_RC, lcd-jobs with $JOBS_RC; logs in $WORK"
