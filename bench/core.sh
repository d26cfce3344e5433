#!/usr/bin/env bash
# Core daemon benchmarks (issue: musterd core). Builds release binaries,
# starts a fresh musterd per scenario on loopback, and prints each result.
#
#   bench/core.sh            # all scenarios (about 14 minutes)
#   bench/core.sh quick      # shorter durations, for a smoke run
#
# Needs wrk (apt-get install -y wrk). The load generator and musterd share
# this machine's cores; musterd is pinned to CPU 0 and the clients to CPU 1
# when there are two or more, so they do not fight over one core.
set -euo pipefail
cd "$(dirname "$0")/.."
quick=${1:-}
command -v wrk >/dev/null || { echo "bench/core.sh needs wrk: apt-get install -y wrk" >&2; exit 1; }
pin_d=""; pin_c=""
if [ "$(nproc)" -ge 2 ]; then pin_d="taskset -c 0"; pin_c="taskset -c 1"; fi
. bench/lib.sh
d() { if [ -n "$quick" ]; then echo "$2"; else echo "$1"; fi; }

echo "## UDP, 1,000 workers, 50,000 heartbeats/s"
start
$pin_c $bin/muster-bench heartbeats --workers 1000 --rate 50000 --duration "$(d 60s 10s)" --pid $pid
stop

echo "## UDP, 1,000 workers, 100,000 heartbeats/s (stretch)"
start
$pin_c $bin/muster-bench heartbeats --workers 1000 --rate 100000 --duration "$(d 60s 10s)" --pid $pid
stop

echo "## TCP, 1,000 workers, 50,000 heartbeats/s"
start
$pin_c $bin/muster-bench heartbeats --workers 1000 --rate 50000 --duration "$(d 30s 10s)" --tcp --pid $pid
stop

echo "## UDP, 10,000 workers at 1 heartbeat/s each"
start
$pin_c $bin/muster-bench heartbeats --workers 10000 --rate 10000 --duration "$(d 10m 20s)" --pid $pid
echo "### rendering with 10,000 workers: GET /metrics and GET /telemetry, 20 requests each"
for path in /metrics /telemetry; do
  for _ in $(seq 20); do curl -s -o /dev/null -w '%{time_total} %{size_download}\n' "http://$http$path"; done |
    sort -n | awk -v p="$path" '{t[NR]=$1; b=$2} END {printf "%s: median %.1f ms, max %.1f ms, %d bytes\n", p, t[int((NR+1)/2)]*1000, t[NR]*1000, b}'
done
stop

echo "## GET /telemetry/{id} and GET /telemetry with 1,000 live workers, wrk -t1 -c16"
start
$pin_c $bin/muster-bench heartbeats --workers 1000 --rate 1000 --duration 40s --pid $pid >/tmp/bench-bg.txt &
bg=$!
sleep 3
id=$(curl -s http://$http/api/workers | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["worker_id"])')
echo "### GET /telemetry/$id"
$pin_c wrk -t1 -c16 -d10s --latency "http://$http/telemetry/$id" | sed -n '/Latency Distribution/,/Requests\/sec/p'
echo "### GET /telemetry ($(curl -s http://$http/telemetry | wc -c) bytes)"
$pin_c wrk -t1 -c16 -d10s --latency "http://$http/telemetry" | sed -n '/Latency Distribution/,/Requests\/sec/p'
wait $bg
stop
