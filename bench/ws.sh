#!/usr/bin/env bash
# WebSocket fan-out benchmarks: heartbeat-sent to update-received latency
# with `muster bench ws`. Each scenario starts a fresh musterd on loopback.
#
#   bench/ws.sh          # about 2 minutes
#
# Not pinned: the clients need a whole core of their own to keep up, and
# with two cores the daemon and the clients share the machine.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
ulimit -n "$(ulimit -Hn)"

echo "## 1,000 clients, 1,000 workers at 1 heartbeat/s"
start
$bin/muster-bench ws --clients 1000 --workers 1000 --rate 1000 --duration 30s --pid $pid
stop

echo "## 1,000 clients and 1 stalled client, 1,000 workers at 1 heartbeat/s"
start --ws-stall-timeout 5s
$bin/muster-bench ws --clients 1000 --stalled 1 --workers 1000 --rate 1000 --duration 30s --pid $pid
stop

echo "## 5,000 clients, 1,000 workers at 1 heartbeat/s"
start --http-max-connections 6000 --ws-max-clients 6000
$bin/muster-bench ws --clients 5000 --workers 1000 --rate 1000 --duration 30s --pid $pid
stop
