#!/usr/bin/env bash
# Schedules and due tasks at scale (bench/periodic.py does the measuring):
#   - 10,000 schedules ticking at the same minute: each tick's task's
#     created_at minus its tick (issue 28: p99 <= 100 ms)
#   - 100,000 tasks with one run_at: from it to all queued (<= 1 s)
#
#   bench/periodic.sh             # both; about 2.5 minutes
#   SCHEDULES=N DUE=N bench/periodic.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
work=$(mktemp -d)
trap 'kill "${pid:-}" 2>/dev/null || true; rm -rf "$work"' EXIT

echo "## ${SCHEDULES:-10000} schedules on one minute"
start --state-dir "$work/s" --task-fsync batch --max-tasks 1000000
python3 bench/periodic.py "$http" schedules "${SCHEDULES:-10000}"
echo "rss_kib $(awk '/VmRSS/ {print $2}' /proc/$pid/status)"
stop

echo "## ${DUE:-100000} tasks due at the same second"
start --state-dir "$work/d" --task-fsync batch --max-tasks 1000000
python3 bench/periodic.py "$http" due "${DUE:-100000}"
stop
