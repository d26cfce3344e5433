#!/usr/bin/env bash
# Ingest and memory, side by side in one run: the build at BASE (default:
# the commit before batched receives and the two-bound inbox) against this
# tree, with the same load generators, then Prometheus Pushgateway for the
# memory row.
#
#   bench/ingest.sh          # 60 s UDP runs (about 8 minutes)
#   bench/ingest.sh quick    # 15 s UDP runs
#   BASE=<commit> bench/ingest.sh
#
# Needs prometheus-pushgateway (apt-get install -y prometheus-pushgateway).
# musterd is pinned to CPU 0 and the senders to CPU 1 when there are two.
set -euo pipefail
cd "$(dirname "$0")/.."
quick=${1:-}
secs=60; [ -n "$quick" ] && secs=15
base=${BASE:-99c480f}
pin_d=""; pin_c=""
if [ "$(nproc)" -ge 2 ]; then pin_d="taskset -c 0"; pin_c="taskset -c 1"; fi
. bench/lib.sh
pgw=$(command -v prometheus-pushgateway || command -v pushgateway || true)
[ -n "$pgw" ] || { echo "needs prometheus-pushgateway" >&2; exit 1; }

# The baseline build, in a worktree of its own.
base_build "$base"

rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
# utime+stime clock ticks of the daemon's thread named $2.
ticks() {
  for t in /proc/"$1"/task/*; do
    if [ "$(cat "$t/comm" 2>/dev/null)" = "$2" ]; then
      awk '{print $14 + $15}' "$t/stat"; return
    fi
  done
  echo 0
}
hz=$(getconf CLK_TCK)
field() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

udp_run() { # rate [frame] -> "received lost ingest_us_per_datagram cores rate"
  start
  local t0; t0=$(ticks "$pid" ingest)
  local out; out=$($pin_c $bin/muster-bench heartbeats --workers 1000 --rate "$1" --frame "${2:-seed}" --duration "${secs}s" --pid "$pid" --json)
  local t1; t1=$(ticks "$pid" ingest)
  stop
  local sent lost cores rate
  sent=$(echo "$out" | field sent); lost=$(echo "$out" | field lost); cores=$(echo "$out" | field musterd_cpu_cores)
  rate=$(echo "$out" | field achieved_rate)
  python3 -c "import sys; s,l,t,hz,c,r=map(float,sys.argv[1:]); print(f'{int(s-l)} {int(l)} {t/hz/(s-l)*1e6:.2f} {c:.3f} {r:.0f}')" \
    "$sent" "$lost" "$((t1 - t0))" "$hz" "$cores" "$rate"
}

mem_run() { # workers -> "KiB per worker, total MiB"
  start --history-samples 720
  local r0; r0=$(rss "$pid")
  $pin_c $bin/muster-bench heartbeats --workers "$1" --rate $(( $1 * 2 )) --duration 3s --pid "$pid" --json >/dev/null
  sleep 1
  local r1; r1=$(rss "$pid")
  stop
  python3 -c "import sys; a,b,n=map(int,sys.argv[1:]); print(f'{(b-a)/n:.1f} {b/1024:.1f}')" "$r0" "$r1" "$1"
}

burst_run() { # -> runs recorded of 300 sent in a burst
  start
  python3 - "$hb" <<'EOF'
import socket, sys
host, port = sys.argv[1].rsplit(':', 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(300):
    s.sendto(b'{"type":"run","worker_id":"burst","duration_ms":%d,"ok":true}' % i, (host, int(port)))
EOF
  sleep 2
  curl -fs "http://$http/api/workers/burst/metrics" | field total_runs
  stop
}

declare -A r
for which in old new; do
  musterd=$bin/musterd; [ $which = old ] && musterd=$old/target/release/musterd
  bench_flags
  echo "== $which: $musterd"
  r[$which,100k]=$(udp_run 100000); echo "100k/s: ${r[$which,100k]}"
  r[$which,200k]=$(udp_run 200000); echo "200k/s: ${r[$which,200k]}"
  r[$which,100kmin]=$(udp_run 100000 minimal); echo "100k/s minimal frames: ${r[$which,100kmin]}"
  r[$which,mem5k]=$(mem_run 5000); echo "5,000 workers: ${r[$which,mem5k]}"
  r[$which,mem1k]=$(mem_run 1000); echo "1,000 workers: ${r[$which,mem1k]}"
  r[$which,burst]=$(burst_run); echo "burst: ${r[$which,burst]}"
done

$pgw --web.listen-address=127.0.0.1:19091 >/dev/null 2>&1 &
gp=$!
sleep 1
g0=$(rss $gp)
$pin_c $bin/muster-bench push --url http://127.0.0.1:19091 --workers 1000 --rate 2000 --duration 10s --pid $gp >/dev/null
g1=$(rss $gp)
kill $gp; wait $gp 2>/dev/null || true
pgw_mib=$(python3 -c "print(f'{$g1/1024:.1f}')")
echo "pushgateway, 1,000 groups: ${pgw_mib} MiB (from $((g0 / 1024)) MiB)"

w() { echo "${r[$1,$2]}" | cut -d' ' -f"$3"; }
echo
echo "Heartbeats shaped like a real worker's (about 330 bytes: resource_usage, current_job, labels) unless the row says minimal."
echo
echo "| measure | before ($base) | after | ratio |"
echo "|---|---|---|---|"
echo "| ingest thread CPU per datagram at 100,000/s | $(w old 100k 3) µs | $(w new 100k 3) µs | $(python3 -c "print(f'{$(w new 100k 3)/$(w old 100k 3):.2f}')") |"
echo "| ingest thread CPU per datagram at 100,000/s, minimal frames | $(w old 100kmin 3) µs | $(w new 100kmin 3) µs | $(python3 -c "print(f'{$(w new 100kmin 3)/$(w old 100kmin 3):.2f}')") |"
echo "| UDP 1,000 workers, 100,000/s, ${secs} s: lost | $(w old 100k 2) ($(w old 100k 4) core) | $(w new 100k 2) ($(w new 100k 4) core) | |"
echo "| UDP 1,000 workers, 200,000/s offered, ${secs} s: lost | $(w old 200k 2) of $(( $(w old 200k 1) + $(w old 200k 2) )) at $(w old 200k 5)/s ($(w old 200k 4) core) | $(w new 200k 2) of $(( $(w new 200k 1) + $(w new 200k 2) )) at $(w new 200k 5)/s ($(w new 200k 4) core) | |"
echo "| ingest thread CPU per datagram at 200,000/s | $(w old 200k 3) µs | $(w new 200k 3) µs | $(python3 -c "print(f'{$(w new 200k 3)/$(w old 200k 3):.2f}')") |"
echo "| memory per tracked worker, history resident (5,000 workers) | $(w old mem5k 1) KiB | $(w new mem5k 1) KiB | $(python3 -c "print(f'{$(w new mem5k 1)/$(w old mem5k 1):.2f}')") |"
echo "| RSS at 1,000 workers / Pushgateway ${pgw_mib} MiB | $(w old mem1k 2) MiB ($(python3 -c "print(f'{$(w old mem1k 2)/$pgw_mib:.2f}')")×) | $(w new mem1k 2) MiB ($(python3 -c "print(f'{$(w new mem1k 2)/$pgw_mib:.2f}')")×) | |"
echo "| run frames recorded of a 300-frame UDP burst | ${r[old,burst]} | ${r[new,burst]} | |"
