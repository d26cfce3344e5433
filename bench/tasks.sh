#!/usr/bin/env bash
# Tasks side by side with beanstalkd (Debian's package; installed when
# missing), the same clients for both (`muster bench tasks`), in one run:
#   - submissions/s, 32 submitters: musterd task_fsync=always vs beanstalkd -f 0
#   - end-to-end tasks/s, 32 workers with a no-op handler: musterd
#     task_fsync=batch vs beanstalkd -f 10
#   - dispatch latency on an idle musterd (201 → worker has the task)
#   - memory per queued task with a 1 KiB payload
#   - restart with 1,000,000 tasks in the journal: start → ready
#
#   bench/tasks.sh            # 10 s per load run
#   bench/tasks.sh e2e        # only the end-to-end runs
#   bench/tasks.sh restart    # only the restart with a million tasks
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
command -v beanstalkd >/dev/null || { apt-get install -y -qq beanstalkd >/dev/null; }
work=$(mktemp -d)
trap 'kill "${pid:-}" "${bpid:-}" 2>/dev/null || true; rm -rf "$work"' EXIT
secs=${SECS:-10}
bench() { $bin/muster-bench tasks --duration "${secs}s" --json "$@"; }
field() { python3 -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }
beanstalk() { # $1: -f value
  rm -rf "$work/binlog"; mkdir -p "$work/binlog"
  beanstalkd -l 127.0.0.1 -p 11300 -b "$work/binlog" -f "$1" &
  bpid=$!
  sleep 0.5
}
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

# End to end, 32 workers with a no-op handler: musterd's workers send one
# frame per task (the result), then two (running, then the result).
e2e() {
  echo "## end to end, 32 workers, no-op handler"
  rm -rf "$work/m2"
  start --state-dir "$work/m2" --task-fsync batch --max-tasks 10000000
  m_e2e=$(bench --mode e2e --submitters 32 --workers 32 --payload-bytes 100)
  stop
  rm -rf "$work/m2"
  start --state-dir "$work/m2" --task-fsync batch --max-tasks 10000000
  m_e2e2=$(bench --mode e2e --submitters 32 --workers 32 --payload-bytes 100 --say-running)
  stop
  beanstalk 10
  b_e2e=$(bench --target beanstalkd --mode e2e --submitters 32 --workers 32 --payload-bytes 100)
  kill $bpid; wait $bpid 2>/dev/null || true
  echo "musterd batch, the result alone: $m_e2e"
  echo "musterd batch, running then the result: $m_e2e2"
  echo "beanstalkd -f 10: $b_e2e"
}

section=${1:-all}
if [ "$section" = e2e ]; then e2e; exit 0; fi
if [ "$section" = all ]; then
echo "## submissions/s, c32, 100 B payload"
start --state-dir "$work/m1" --task-fsync always --max-tasks 10000000
m_sub=$(bench --mode submit --submitters 32 --payload-bytes 100)
stop
beanstalk 0
b_sub=$(bench --target beanstalkd --mode submit --submitters 32 --payload-bytes 100)
kill $bpid; wait $bpid 2>/dev/null || true
echo "musterd always: $m_sub"; echo "beanstalkd -f 0: $b_sub"

e2e


echo "## dispatch latency, idle"
start --state-dir "$work/m3"
lat=$($bin/muster-bench tasks --mode latency --json)
stop
echo "$lat"

echo "## memory per queued task, 1 KiB payload"
start --state-dir "$work/m4" --task-fsync off --max-tasks 10000000
before=$(rss_kib "$pid")
bench --mode submit --submitters 8 --payload-bytes 1024 > "$work/mem.json"
n=$(curl -s http://$http/health | python3 -c 'import json,sys; print(json.load(sys.stdin)["tasks"]["queued"])')
after=$(rss_kib "$pid")
stop
per=$(awk -v a="$after" -v b="$before" -v n="$n" 'BEGIN { printf "%.0f", (a - b) * 1024 / n }')
echo "$n queued tasks: RSS $before → $after KiB, $per bytes per task"
fi

echo "## restart with 1,000,000 tasks in the journal"
start --state-dir "$work/m5" --task-fsync off --max-tasks 2000000
$bin/muster-bench tasks --mode submit --submitters 16 --payload-bytes 100 --duration 300s --json >/dev/null &
loader=$!
while :; do
  q=$(curl -s http://$http/health | python3 -c 'import json,sys; print(json.load(sys.stdin)["tasks"]["queued"])')
  [ "$q" -ge 1000000 ] && break
  sleep 1
done
kill $loader; wait $loader 2>/dev/null || true
q=$(curl -s http://$http/health | python3 -c 'import json,sys; print(json.load(sys.stdin)["tasks"]["queued"])')
stop
jsize=$(du -m "$work/m5/tasks.journal" | cut -f1)
t0=$(date +%s.%N)
start --state-dir "$work/m5" --task-fsync off --max-tasks 2000000
t1=$(date +%s.%N)
rq=$(curl -s http://$http/health | python3 -c 'import json,sys; print(json.load(sys.stdin)["tasks"]["queued"])')
rss=$(rss_kib "$pid")
stop
ready=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
echo "$q tasks ($jsize MB journal): ready in $ready s with $rq queued, RSS $rss KiB"

[ "$section" = all ] || exit 0
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
ms=$(field "$m_sub" submitted_per_s); bs=$(field "$b_sub" submitted_per_s)
me=$(field "$m_e2e" finished_per_s); be=$(field "$b_e2e" finished_per_s)
echo
echo "| measure | musterd | beanstalkd | ratio | target |"
echo "|---|---|---|---|---|"
echo "| submissions/s, c32, \`task_fsync = always\` vs \`-f 0\` | $ms | $bs | $(ratio "$ms" "$bs") | ≥ 1.0× |"
echo "| end-to-end tasks/s, 32 workers, \`batch\` vs \`-f 10\` | $me | $be | $(ratio "$me" "$be") | ≥ 0.5× |"
echo "| dispatch latency, idle (submission sent → worker has it) | p50 $(field "$lat" dispatch_p50_ms) ms, p99 $(field "$lat" dispatch_p99_ms) ms | | | p99 ≤ 5 ms |"
echo "| memory per queued task, 1 KiB payload | $per B ($(( per - 1024 )) B over the payload) | | | ≤ 2 KiB over |"
echo "| restart with $q tasks in the journal ($jsize MB) | ready in $ready s | | | ≤ 3 s |"
