#!/usr/bin/env bash
# One node holding a large fleet, with heartbeats shaped like a real
# worker's (seed frames, about 330 bytes; a minimal-frame row second): the
# build at BASE against this tree, back to back, the daemon pinned to CPU 0
# and the sender to CPU 1.
#
#   bench/scale.sh              # 10,000 workers each beating every second, 30 s
#   bench/scale.sh quick        # 10 s runs
#   WORKERS=100000 INTERVAL=5 bench/scale.sh
#   BASE=<commit> bench/scale.sh
#   FRAMES=seed bench/scale.sh  # the seed-frame rows only
#
# Rows: daemon CPU per heartbeat (the daemon's utime+stime over the send
# window, divided by the heartbeats it applied); RSS once the fleet beats;
# idle CPU with the whole fleet silent but not yet inactive, and once all
# are inactive; and where the RSS is, per worker: thread stacks, malloc's
# heap (history rings, snapshots, queues, maps), the rest. 100,000 workers need kernel.pid_max above 100,000 (the
# script raises it when it can).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=30; [ "${1:-}" = quick ] && secs=10
workers=${WORKERS:-10000}
interval=${INTERVAL:-1}
base=${BASE:-fa3c524}
pin_d=""; pin_c=""
if [ "$(nproc)" -ge 2 ]; then pin_d="taskset -c 0"; pin_c="taskset -c 1"; fi
. bench/lib.sh
room_for_threads "$workers"

base_build "$base"

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_mb() { awk '/VmRSS/ {printf "%.0f", $2 / 1024}' "/proc/$1/status"; }
hz=$(getconf CLK_TCK)
# Where the RSS is, per worker: "stack_kib heap_kib other_kib". Thread
# stacks are the largest anonymous read-write maps under a MiB that nearly
# every worker has one of (the 8 KiB signal stacks are the other such maps);
# heap is every other anonymous map (malloc's arenas, the main heap): the
# history rings, snapshots, queues and maps; other is the binary, the
# libraries and the main thread's stack.
mem_split() {
  python3 - "$1" "$workers" <<'PY'
import collections, re, sys
pid, n = sys.argv[1], int(sys.argv[2])
maps, cur = [], None
for line in open(f"/proc/{pid}/smaps"):
    m = re.match(r"^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \d+\s*(.*)$", line)
    if m:
        cur = [int(m[2], 16) - int(m[1], 16), m[3], m[4].strip(), 0]
        maps.append(cur)
    elif line.startswith("Rss:"):
        cur[3] = int(line.split()[1])
sizes = collections.Counter(sz for sz, perm, name, _ in maps if not name and perm == "rw-p")
stack = max((sz for sz, c in sizes.items() if c >= 0.9 * n and sz < 1 << 20), default=0)
kib = collections.Counter()
for sz, perm, name, rss in maps:
    if not name and perm == "rw-p" and sz == stack:
        kib["stack"] += rss
    elif not name or name == "[heap]":
        kib["heap"] += rss
    else:
        kib["other"] += rss
print(" ".join(f"{kib[k] / n:.1f}" for k in ("stack", "heap", "other")))
PY
}
field() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

# build frame -> "us_per_heartbeat rss_mb idle_cores inactive_cores lost stack heap other"
run() {
  local m=$1 frame=$2
  MUSTERD=$m
  musterd=$m
  bench_flags
  start --max-workers $((workers + 100)) --inactivity-timeout 60s
  # Every worker says its first frame once, then the fleet beats.
  $pin_c $bin/muster-bench heartbeats --workers "$workers" --interval "${interval}s" --duration "$((interval * 2))s" \
    --worker-prefix w --frame "$frame" --pid "$pid" --json >/dev/null
  local t0; t0=$(ticks "$pid")
  local out; out=$($pin_c $bin/muster-bench heartbeats --workers "$workers" --interval "${interval}s" --duration "${secs}s" \
    --worker-prefix w --frame "$frame" --pid "$pid" --json)
  local t1; t1=$(ticks "$pid")
  local rss; rss=$(rss_mb "$pid")
  local split; split=$(mem_split "$pid")
  # Silent, not yet inactive (the timeout is 60 s).
  sleep 2
  local i0; i0=$(ticks "$pid"); sleep 20; local i1; i1=$(ticks "$pid")
  # All inactive: wait out the timeout.
  sleep 40
  local j0; j0=$(ticks "$pid"); sleep 20; local j1; j1=$(ticks "$pid")
  stop
  local sent lost
  sent=$(echo "$out" | field sent); lost=$(echo "$out" | field lost)
  python3 -c "import sys; s,l,t,hz,i,j,r=map(float,sys.argv[1:]); print(f'{t/hz/(s-l)*1e6:.2f} {r:.0f} {i/hz/20:.4f} {j/hz/20:.4f} {int(l)}')" \
    "$sent" "$lost" "$((t1 - t0))" "$hz" "$((i1 - i0))" "$((j1 - j0))" "$rss" | tr '\n' ' '
  echo "$split"
}

printf '%d workers, one beat every %d s each (%d/s), %d s runs\n' "$workers" "$interval" $((workers / interval)) "$secs"
printf '%-8s %-8s %12s %8s %12s %14s %6s %24s\n' build frame 'us/beat' 'RSS MB' 'idle cores' 'inactive cores' lost 'KiB/worker stack heap other'

for frame in ${FRAMES:-seed minimal}; do
  for b in base new; do
    if [ $b = base ]; then m=$old/target/release/musterd; else m=$bin/musterd; fi
    read -r us rss idle inact lost stack heap other < <(run "$m" "$frame")
    printf '%-8s %-8s %12s %8s %12s %14s %6s %24s\n' "$b" "$frame" "$us" "$rss" "$idle" "$inact" "$lost" "$stack $heap $other"
  done
done
