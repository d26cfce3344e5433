#!/usr/bin/env bash
# Hostile and heavy load, each scenario against a fresh musterd on loopback
# (issue: the daemon stays reachable and bounded when peers misbehave).
#
#   bench/hostile.sh                      # about 4 minutes
#   MUSTERD=/path/to/old/musterd bench/hostile.sh   # another build, same load
#   FLOOR=0 bench/hostile.sh              # skip the raw C fan-out floor
#
# 1. WebSocket latency, 1,000 clients, 1,000 workers at 100 heartbeats/s:
#    musterd, then bench/fanout.c (the floor: one send per client per
#    datagram, nothing else) with the same client.
# 2. The same at 1,000 heartbeats/s (overload on two cores).
# 3. 2,000 WebSocket clients connecting at once: time until every one holds
#    its snapshot.
# 4. /health latency (wrk, one connection) while a 240 MB /telemetry is
#    downloaded without pause and one worker changes 20 times a second.
# 5. RSS before, during and after 200 WebSocket clients that never read, on
#    a 2,000-worker fleet whose snapshot is about 16 MB.
# 6. The same while 50 more workers beat 10 times a second each, the
#    clients connecting over 10 s: its peak RSS.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
ulimit -n "$(ulimit -Hn)"
# Builds from before the bound take large workers without being told.
msb=()
$musterd --help 2>&1 | grep -q -- --max-worker-state-bytes && msb=(--max-worker-state-bytes 64KiB)
rss() { awk '/VmRSS/ {print $2}' /proc/$pid/status; }
ws() { $bin/muster-bench ws --workers 1000 --duration 20s "$@"; }

echo "## 1. 1,000 clients, 1,000 workers at 100 heartbeats/s"
start
ws --clients 1000 --rate 100 --pid $pid
stop
if [ "${FLOOR:-1}" = 1 ]; then
  cc -O2 -o target/fanout bench/fanout.c
  target/fanout 18080 18090 & fp=$!
  sleep 0.3
  echo "## 1. the same against bench/fanout.c (the floor)"
  ws --floor --clients 1000 --rate 100 --pid $fp
  kill $fp; wait $fp 2>/dev/null || true
fi

echo "## 2. 1,000 clients, 1,000 workers at 1,000 heartbeats/s"
start
ws --clients 1000 --rate 1000 --pid $pid
stop

echo "## 3. 2,000 clients connecting at once"
start --ws-max-clients 4096 --http-max-connections 4096
$bin/muster-bench heartbeats --workers 1000 --rate 1000 --duration 1s --pid $pid >/dev/null
$bin/muster-bench ws --clients 2000 --workers 10 --rate 10 --duration 1s --pid $pid | grep -E "connected|websocket"
stop

fill() { # n workers, bytes of labels each
  python3 - "$1" "$2" <<'EOF'
import socket, sys, time, json
n, size = int(sys.argv[1]), int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
labels = {f"k{i:02}": "v" * 1000 for i in range(size // 1010)}
for i in range(n):
    s.sendto(json.dumps({"type": "heartbeat", "worker_id": f"big{i:05}", "labels": labels}).encode(), ("127.0.0.1", 18090))
    if i % 10 == 0:
        time.sleep(0.005)
EOF
}

echo "## 4. /health while a 240 MB /telemetry is downloaded without pause"
start "${msb[@]}"
fill 4000 60000
sleep 1
echo "telemetry bytes: $(curl -s http://$http/telemetry | wc -c)"
while :; do
  printf '{"type":"heartbeat","worker_id":"trickle","cpu_usage":%d}' $RANDOM >/dev/udp/127.0.0.1/18090
  sleep 0.05
done & tr=$!
while :; do curl -s -o /dev/null http://$http/telemetry; done & dl=$!
sleep 1
wrk -t1 -c1 -d20s --latency http://$http/health | grep -E "50%|90%|99%|Requests/sec"
kill $tr $dl; wait $tr $dl 2>/dev/null || true
stop

# One WebSocket client that upgrades and then never reads: its fd is
# added to fds.
stall_client() {
  exec {fd}<>/dev/tcp/127.0.0.1/18080
  printf 'GET /ws/telemetry HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n' >&$fd
  fds+=($fd)
}

# A daemon with stall timeout $1 holding 2,000 workers of 8 KB (a 16 MB
# snapshot), its heap warmed by one /telemetry: its RSS in $before.
big_fleet() {
  start --ws-stall-timeout "$1" "${msb[@]}"
  fill 2000 7800
  sleep 2
  curl -s -o /dev/null http://$http/telemetry
  sleep 2
  before=$(rss)
}

echo "## 5. RSS around 200 WebSocket clients that never read (16 MB snapshot)"
big_fleet 5s
fds=()
for i in $(seq 200); do
  stall_client
done
sleep 2
during=$(rss)
t0=$(date +%s%N)
stalled() { curl -s http://$http/health | python3 -c 'import json,sys; print(json.load(sys.stdin)["connections"]["ws_closed_stalled"])'; }
while [ "$(stalled)" -lt 200 ] && [ $(( ($(date +%s%N) - t0) / 1000000 )) -lt 60000 ]; do sleep 0.2; done
closed_ms=$(( ($(date +%s%N) - t0) / 1000000 + 2000 ))
closed="$(stalled) closed as stalled ${closed_ms} ms after connecting"
for fd in "${fds[@]}"; do exec {fd}>&-; done
sleep 3
after=$(rss)
echo "RSS before ${before} KiB, during ${during} KiB, after ${after} KiB; ${closed} (stall timeout 5 s)"
stop

echo "## 6. RSS around 200 WebSocket clients that never read while 50 of 2,050 workers beat"
# The fleet keeps changing, so clients that connect a moment apart are sent
# the fleet at different versions, and hold what they were sent.
big_fleet 60s
$bin/muster-bench heartbeats --workers 50 --rate 500 --duration 40s --worker-prefix beat \
  --url http://$http --heartbeat-addr $hb --pid "$pid" >/dev/null &
beater=$!
fds=()
peak=$before
for i in $(seq 200); do
  stall_client
  sleep 0.05
  r=$(rss); [ "$r" -gt "$peak" ] && peak=$r
done
for _ in $(seq 20); do sleep 0.5; r=$(rss); [ "$r" -gt "$peak" ] && peak=$r; done
for fd in "${fds[@]}"; do exec {fd}>&-; done
kill $beater 2>/dev/null || true; wait $beater 2>/dev/null || true
sleep 3
after=$(rss)
echo "RSS before ${before} KiB, peak ${peak} KiB ($(( peak * 100 / before ))% of before), after ${after} KiB"
stop
