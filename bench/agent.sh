#!/usr/bin/env bash
# muster agent and history benchmarks:
#  - the agent's own RSS and CPU at a 5 s interval over 60 s;
#  - one procfs sample of a 20-process tree;
#  - the daemon's memory per worker with a full history ring (720 samples at
#    one a second: this scenario runs 13 minutes).
#
#   bench/agent.sh           # agent and procfs only (about 1 minute)
#   bench/agent.sh history   # also the full-history memory run
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
bin=target/release
musterd=${MUSTERD:-$bin/musterd}
http=127.0.0.1:18080
hb=127.0.0.1:18090
export MUSTER_URL=http://$http MUSTER_HEARTBEAT_ADDR=$hb
state_off=()
$musterd --help 2>&1 | grep -q -- --state-dir && state_off=(--state-dir off)

start() {
  $musterd --config /dev/null --http-addr $http --heartbeat-addr $hb "${state_off[@]}" "$@" 2>/tmp/musterd-bench.log &
  pid=$!
  for _ in $(seq 50); do curl -fs http://$http/health >/dev/null && return; sleep 0.1; done
  echo "musterd did not start" >&2; exit 1
}
stop() { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; }
# A failed scenario must not leave its daemon holding the ports.
trap 'kill "${pid:-}" 2>/dev/null || true' EXIT
ticks=$(getconf CLK_TCK)
cpu_s() { awk -v t="$ticks" '{ s = substr($0, index($0, ")") + 2); split(s, f, " "); print (f[12] + f[13]) / t }' "/proc/$1/stat"; }

echo "## muster agent at --interval 5s for 60 s (wrapping sleep)"
start
$bin/muster agent --id bench-agent --interval 5s -- sleep 70 &
apid=$!
sleep 5
c0=$(cpu_s $apid)
sleep 60
c1=$(cpu_s $apid)
rss=$(awk '/VmRSS/ {print $2}' /proc/$apid/status)
hwm=$(awk '/VmHWM/ {print $2}' /proc/$apid/status)
awk -v a="$c0" -v b="$c1" -v r="$rss" -v h="$hwm" 'BEGIN { printf "agent: cpu %.4f%% of one core over 60 s, rss %d KiB (peak %d KiB)\n", (b - a) / 60 * 100, r, h }'
kill $apid; wait $apid 2>/dev/null || true
stop

echo "## one procfs sample of a 20-process tree"
$bin/muster-bench procfs --processes 20 --samples 2000

if [ "${1:-}" = history ]; then
  echo "## memory per worker with a full history ring: 2,000 workers at 1 heartbeat/s for 750 s"
  start --history-samples 720
  $bin/muster-bench heartbeats --workers 2000 --rate 2000 --duration 750s --pid $pid
  curl -s "http://$http/api/workers/$(curl -s http://$http/api/workers | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["worker_id"])')/history" |
    python3 -c 'import json,sys; print("history samples of one worker:", len(json.load(sys.stdin)["samples"]))'
  stop
fi
