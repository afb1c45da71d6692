#!/bin/bash
# Hot swap under load (#9): lcd-server serves model "tiny" from an artifact store while
# `lcd bench-serve` runs 16 concurrent GenerateStream clients (N requests); three new versions
# are published the way lcd-jobs publishes (a .partial directory renamed into place), GAP s apart.
# Prints when each version served, the requests each version answered (from /metrics) and the
# bench summary: "failed" must be 0. From the repository root, after the release build:
#   N=1400 GAP=9 tests/bench/hot_swap_under_load.sh
set -e
mkdir -p ${WORK:-/tmp/lcd-swap-bench}
L=build/release/tools/lcd; S=build/release/server/lcd-server; ST=${WORK:-/tmp/lcd-swap-bench}/store
rm -rf $ST; mkdir -p $ST/tiny
$L quantize --model models/tiny-shakespeare --out $ST/tiny/1 --method rtn --bits 4 --group-size 32 >/dev/null 2>&1
$S --artifact-root $ST --model tiny=$ST/tiny/1 --grpc-port 50071 --metrics-port 9471 --artifact-rescan-seconds 1 > ${WORK:-/tmp/lcd-swap-bench}/server.log 2>&1 &
SP=$!
for i in $(seq 1 100); do grep -q "READY" ${WORK:-/tmp/lcd-swap-bench}/server.log && break; sleep 0.2; done
$L bench-serve --server 127.0.0.1:50071 --model tiny --concurrency 16 --num-requests ${N:-1600} --prompt-tokens 64 --output-tokens 64 --json ${WORK:-/tmp/lcd-swap-bench}/bench.json > ${WORK:-/tmp/lcd-swap-bench}/bench.out 2>&1 &
BP=$!
SECONDS=0
for v in 2 3 4; do
  sleep ${GAP:-7}
  cp -r $ST/tiny/1 $ST/tiny/$v.partial && mv $ST/tiny/$v.partial $ST/tiny/$v
  for i in $(seq 1 150); do grep -q "READY (version $v" ${WORK:-/tmp/lcd-swap-bench}/server.log && break; sleep 0.1; done
  echo "version $v serving at +${SECONDS} s"
done
wait $BP; echo "bench-serve exit $?"
echo "bench took ${SECONDS} s"
curl -s 127.0.0.1:9471/metrics | grep -E '^lcd_requests_total|^lcd_model_info'
kill -TERM $SP; wait $SP || true
python3 -c "import json;d=json.load(open('${WORK:-/tmp/lcd-swap-bench}/bench.json'));print({k:d[k] for k in ('completed','failed','failures','duration_s','output_throughput','request_throughput')})"
