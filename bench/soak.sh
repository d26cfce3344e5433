#!/usr/bin/env bash
# The soak: musterd left running with everything moving at once, for an
# hour by default, and how its memory moves (bench/soak.py has the load):
# 1,000 steady workers beating every second, 20 new worker ids a second
# forgotten after forget_after = 20 s, WebSocket clients coming and going,
# tasks run by four `muster agent --tasks` and kept 30 s after they end.
#
#   bench/soak.sh                      # an hour, growth measured after 10 min
#   DURATION=1200 WARMUP=300 bench/soak.sh
#   MUSTERD=/path/to/other/musterd bench/soak.sh   # another build, same load
#   BENCH_HTTP=127.0.0.1:18180 BENCH_HEARTBEAT=127.0.0.1:18190 OUT=/tmp/b.csv \
#     MUSTERD=... bench/soak.sh                    # beside another soak
#   WORKERS=95000 INTERVAL=5 bench/soak.sh         # a large steady fleet, each
#     # worker beating every INTERVAL seconds: sent by `muster-bench
#     # heartbeats` (seed frames) instead of the Python load, which keeps the
#     # churn, the WebSocket clients and the tasks; inactivity_timeout is
#     # three intervals (at least 5 s)
#
# Prints each thread's CPU and five GET /health timings halfway through,
# the median RSS and heap in use (malloc's own count) of each 5-minute
# window and the growth per hour after the warm-up; every sample
# goes to $OUT (default /tmp/muster-soak.csv), which
# `python3 bench/soak.py --report $OUT` summarises again.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
duration=${DURATION:-3600}
warmup=${WARMUP:-600}
state=$(mktemp -d)
agents=()
cleanup() {
  for a in "${agents[@]}"; do kill "$a" 2>/dev/null || true; done
  stop
  rm -rf "$state"
}
trap cleanup EXIT
workers=${WORKERS:-1000}
interval=${INTERVAL:-1}
room_for_threads "$workers" 30000
inactivity=$((interval * 3 > 5 ? interval * 3 : 5))
start --state-dir "$state" --heartbeat-interval "${interval}s" --inactivity-timeout "${inactivity}s" \
  --forget-after 20s --task-retention 30s --max-workers $((workers + 20000))
steady=(--workers "$workers")
if [ "$workers" -gt 1000 ]; then
  $bin/muster-bench heartbeats --frame seed --workers "$workers" --interval "${interval}s" \
    --duration "${duration}s" --worker-prefix steady- --pid "$pid" >/tmp/muster-soak-beats.log 2>&1 &
  agents+=($!)
  steady=(--workers 0 --ws-worker steady-1)
fi
for i in 1 2 3 4; do
  $bin/muster agent --tasks --capacity 4 --id "soak-agent-$i" --interval 1s -- true >/dev/null 2>&1 &
  agents+=($!)
done
echo "soak: musterd pid $pid ($($musterd --version)), ${duration} s, warm-up ${warmup} s"
python3 bench/soak.py --pid "$pid" --http "$http" --heartbeat "$hb" "${steady[@]}" \
  --duration "$duration" --warmup "$warmup" --out "${OUT:-/tmp/muster-soak.csv}" &
soak=$!
# Halfway through: each thread's CPU over 20 s, and five GET /health
# answered under the load.
sleep $((duration / 2))
echo "at $((duration / 2)) s: CPU by thread over 20 s"
threads_cpu "$pid" 20
for _ in 1 2 3 4 5; do
  curl -s -o /dev/null -m 30 -w 'GET /health %{time_total} s\n' "http://$http/health" || echo "GET /health: no answer in 30 s"
done
wait "$soak"
