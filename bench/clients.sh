#!/usr/bin/env bash
# The worker libraries (clients/python, clients/go, clients/node) against
# `muster agent --tasks`, one after another on one musterd each:
#   - a client's own CPU while idle, beating once a second (30 s)
#   - no-op tasks/s through one client process, capacity 32: N tasks
#     queued first, then the worker started; from its start to the last
#     one succeeded (`muster agent` runs `true` per task: it has no
#     in-process handler)
#   - reconnect after the daemon restarts: from the new daemon answering
#     /health to the worker shown again
#
#   bench/clients.sh            # N=20000 tasks per client (5000 for the agent)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
N=${N:-20000}
AGENT_N=${AGENT_N:-5000}
IDLE_SECS=${IDLE_SECS:-30}
work=$(mktemp -d)
trap 'kill "${pid:-}" "${wpid:-}" 2>/dev/null || true; rm -rf "$work"' EXIT
(cd bench/clients/noop-go && GOFLAGS=-mod=mod GOTOOLCHAIN=local go build -o "$work/noop-go" .)
export MUSTER_ADDRS=$hb MUSTER_HEARTBEAT_ADDR=$hb MUSTER_CAPACITY=32

health() { curl -fs "http://$http/health"; }
succeeded() { health | python3 -c 'import json,sys; print(json.load(sys.stdin)["tasks"]["succeeded"])'; }
shown() { curl -fs "http://$http/api/workers/$1" >/dev/null 2>&1; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
fill() { # count type
  python3 - "$http" "$1" "$2" <<'PY'
import http.client, json, sys, threading
host, n, kind = sys.argv[1], int(sys.argv[2]), sys.argv[3]
body = json.dumps({"type": kind}).encode()
left = [n]
lock = threading.Lock()
def run():
    c = http.client.HTTPConnection(host)
    while True:
        with lock:
            if left[0] == 0:
                return
            left[0] -= 1
        c.request("POST", "/api/tasks", body, {"Content-Type": "application/json"})
        r = c.getresponse(); r.read()
        assert r.status == 201, r.status
ts = [threading.Thread(target=run) for _ in range(8)]
[t.start() for t in ts]; [t.join() for t in ts]
PY
}
start_worker() { # name
  case $1 in
    python) PYTHONPATH=clients/python MUSTER_WORKER_ID=bench-python python3 bench/clients/noop.py & ;;
    go) MUSTER_WORKER_ID=bench-go "$work/noop-go" & ;;
    node) MUSTER_WORKER_ID=bench-node node bench/clients/noop.mjs & ;;
    agent) $bin/muster agent --tasks --capacity 32 --task-type noop --interval 1s --id bench-agent -- true >/dev/null 2>&1 & ;;
  esac
  wpid=$!
}

echo "| worker | idle CPU, % of a core | no-op tasks/s | reconnect after restart |"
echo "|---|---|---|---|"
for w in agent go python node; do
  n=$N; [ $w = agent ] && n=$AGENT_N
  start --heartbeat-interval 1s --max-tasks 10000000
  fill "$n" noop
  before=$(succeeded)
  t0=$(date +%s.%N)
  start_worker $w
  while [ "$(succeeded)" -lt $((before + n)) ]; do sleep 0.05; done
  t1=$(date +%s.%N)
  rate=$(awk -v a="$t0" -v b="$t1" -v n="$n" 'BEGIN { printf "%.0f", n / (b - a) }')
  # Idle: the worker beats once a second with nothing to do.
  sleep 2
  c0=$(cpu_ticks $wpid); s0=$(date +%s.%N)
  sleep "$IDLE_SECS"
  c1=$(cpu_ticks $wpid); s1=$(date +%s.%N)
  hz=$(getconf CLK_TCK)
  idle=$(awk -v a="$c0" -v b="$c1" -v s="$s0" -v e="$s1" -v hz="$hz" 'BEGIN { printf "%.3f", (b - a) / hz / (e - s) * 100 }')
  # Restart: same ports, no state; the worker must come back by itself.
  stop
  sleep 0.5
  start --heartbeat-interval 1s --max-tasks 10000000
  r0=$(date +%s.%N)
  until shown "bench-$w"; do sleep 0.02; done
  r1=$(date +%s.%N)
  back=$(awk -v a="$r0" -v b="$r1" 'BEGIN { printf "%.2f s", b - a }')
  echo "| $w | $idle | $rate ($n tasks) | $back |"
  kill $wpid 2>/dev/null || true; wait $wpid 2>/dev/null || true
  stop
done
