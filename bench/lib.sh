# Shared by the bench scripts: build, addresses, and a fresh musterd per
# scenario. Source it after `cd` to the repository root. Set pin_d (e.g.
# "taskset -c 0") before calling start to pin the daemon.
cargo build --release --quiet
bin=target/release
# The daemon under test; MUSTERD=path/to/musterd measures another build
# with the same load generators (before and after a change, back to back).
musterd=${MUSTERD:-$bin/musterd}
# BENCH_HTTP and BENCH_HEARTBEAT move the daemon's addresses, so that two
# builds can soak side by side.
http=${BENCH_HTTP:-127.0.0.1:18080}
hb=${BENCH_HEARTBEAT:-127.0.0.1:18090}
export MUSTER_URL=http://$http MUSTER_HEARTBEAT_ADDR=$hb
pin_d=${pin_d:-}
# The flags every scenario runs with, as far as the build knows them: no
# state kept between scenarios, and no per-address caps (every load
# generator connects from 127.0.0.1).
bench_flags() {
  flags=()
  $musterd --help 2>&1 | grep -q -- --state-dir && flags+=(--state-dir off)
  $musterd --help 2>&1 | grep -q -- --http-max-connections-per-ip &&
    flags+=(--http-max-connections-per-ip 1000000 --tcp-max-connections-per-ip 1000000)
  return 0
}
bench_flags

start() {
  $pin_d $musterd --config /dev/null --http-addr $http --heartbeat-addr $hb "${flags[@]}" "$@" 2>/tmp/musterd-bench.log &
  pid=$!
  for _ in $(seq 50); do
    { curl -fs http://$http/health || curl -fsk https://$http/health; } >/dev/null 2>&1 && return
    sleep 0.1
  done
  echo "musterd did not start" >&2; cat /tmp/musterd-bench.log >&2; exit 1
}
stop() { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; }
# The release musterd of commit $1, built once in a worktree of its own
# under /tmp, for a before-and-after run: its directory in $old.
base_build() {
  old=/tmp/muster-base-$1
  if [ ! -x "$old/target/release/musterd" ]; then
    rm -rf "$old"; git worktree prune
    git worktree add --detach "$old" "$1" >/dev/null
    (cd "$old" && cargo build --release --quiet --bin musterd)
  fi
}
# Room for a thread per worker ($1 workers, plus $2 more threads of other
# work, default 10,000): kernel.pid_max, RLIMIT_NPROC (musterd clamps
# max_workers to it) and vm.max_map_count (each worker thread takes four
# maps), raised where they are too low; where they cannot be, say so and
# stop.
room_for_threads() { # workers [extra]
  local n=$(($1 + ${2:-10000}))
  if [ "$(cat /proc/sys/kernel/pid_max)" -lt "$n" ]; then
    echo "$n" > /proc/sys/kernel/pid_max 2>/dev/null ||
      { echo "kernel.pid_max is below $n and cannot be raised here" >&2; exit 1; }
  fi
  ulimit -u unlimited 2>/dev/null || ulimit -u "$(ulimit -Hu)" || true
  local maps=$(($1 * 4 + 20000))
  if [ "$(cat /proc/sys/vm/max_map_count)" -lt "$maps" ]; then
    echo "$maps" > /proc/sys/vm/max_map_count 2>/dev/null ||
      { echo "vm.max_map_count is below $maps and cannot be raised here" >&2; exit 1; }
  fi
}
# A failed scenario must not leave its daemon holding the ports.
trap 'kill "${pid:-}" 2>/dev/null || true' EXIT
# Time on the CPU by thread name over $2 seconds (default 20) for process
# $1, from /proc/PID/task/*/schedstat (nanoseconds, and the times each
# thread was put on a CPU, about its wakes): one line per name, the most
# costly first, with how many threads share it. Worker threads (named by
# their worker's id) count as "(workers)", pool members' output readers
# as "(pool-out)".
threads_cpu() { # pid [seconds]
  python3 - "$1" "${2:-20}" <<'PY'
import os, re, sys, time
pid, secs = sys.argv[1], float(sys.argv[2])
own = re.compile(r"^(musterd|http|ingest|sweeper|scheduler|pool|alerts|alert-posts|saver|journal|render|signals|audit|lease|task-writer|task-notify|task-mirror|fleet-writer|fleet-mirror)$")
def read():
    out = {}
    for t in os.listdir("/proc/%s/task" % pid):
        try:
            name = open("/proc/%s/task/%s/comm" % (pid, t)).read().strip()
            ns, _, runs = open("/proc/%s/task/%s/schedstat" % (pid, t)).read().split()
        except (OSError, ValueError):
            continue
        out[t] = (name, int(ns), int(runs))
    return out
a = read(); time.sleep(secs); b = read()
by = {}
for t, (name, ns, runs) in b.items():
    if t not in a:
        continue
    if name.endswith("-out"):
        name = "(pool-out)"
    elif not own.match(name):
        name = "(workers)"
    c = by.setdefault(name, [0, 0, 0])
    c[0] += 1; c[1] += ns - a[t][1]; c[2] += runs - a[t][2]
total = sum(c[1] for c in by.values())
print("%-14s %6s %8.5f cores" % ("all", "-", total / secs / 1e9))
for name, (k, ns, runs) in sorted(by.items(), key=lambda x: -x[1][1]):
    print("%-14s %6d %8.5f cores %9.1f wakes/s" % (name, k, ns / secs / 1e9, runs / secs))
PY
}
