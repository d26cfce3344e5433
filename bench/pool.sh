#!/usr/bin/env bash
# The pool against supervisord (Debian's package; installed when missing):
#   - scale 0 → 100 members, until all 100 heartbeat (`muster agent -- sleep`)
#   - a crashed member restarted: kill -9 → the new process (first backoff 1 s)
#   - a hung member (SIGSTOP) found and replaced
#   - CPU of the supervisor with 100 idle members, over 30 s
# supervisord: the crash restart and the idle CPU, with 100 `sleep` programs.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
command -v supervisord >/dev/null || apt-get install -y -qq supervisor >/dev/null
work=$(mktemp -d)
trap 'kill "${pid:-}" 2>/dev/null || true; [ -n "${spid:-}" ] && kill "$spid" 2>/dev/null; rm -rf "$work"' EXIT
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
idle_cpu() { # $1 pid: cores used over 30 s
  local a b
  a=$(cpu_ticks "$1"); sleep 30; b=$(cpu_ticks "$1")
  awk -v a="$a" -v b="$b" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.4f", (b - a) / hz / 30 }'
}
pool_json() { curl -s "http://$http/api/pool"; }

start --heartbeat-interval 1s --inactivity-timeout 3s --pool-stop-grace 2s \
  --pool-command "$PWD/$bin/muster agent --interval 1s -- sleep 3600"
t0=$(now)
curl -s -X POST "http://$http/api/workers/scale" -d '{"count":100}' >/dev/null
until [ "$(curl -s "http://$http/health" | python3 -c 'import json,sys; print(json.load(sys.stdin)["workers"]["active"])')" = 100 ]; do sleep 0.05; done
t1=$(now)
scale_s=$(secs "$t0" "$t1")
echo "scale 0 → 100, all heartbeating: $scale_s s"

sleep 3
m_cpu=$(idle_cpu "$pid")
echo "musterd with 100 idle members: $m_cpu cores"
echo "by thread, over 20 s more (schedstat):"
threads_cpu "$pid" 20

victim=$(pool_json | python3 -c 'import json,sys; print(json.load(sys.stdin)["members"][0]["pid"])')
t0=$(now); kill -9 "$victim"
until pool_json | python3 -c 'import json,sys; m=json.load(sys.stdin)["members"][0]; sys.exit(0 if m["pid"] and m["pid"] != '"$victim"' else 1)'; do sleep 0.01; done
# When musterd started the new process, by its own log (polling adds its
# own delay).
t1=$(grep "pool: pool-1 started" /tmp/musterd-bench.log | tail -1 | python3 -c 'import sys,datetime; l=sys.stdin.read().split()[0]; print(datetime.datetime.fromisoformat(l[:26]+"+00:00").timestamp())')
m_restart=$(secs "$t0" "$t1")
echo "a crashed member restarted after $m_restart s"

victim=$(pool_json | python3 -c 'import json,sys; print(json.load(sys.stdin)["members"][1]["pid"])')
t0=$(now); kill -STOP -- -"$victim"
until pool_json | python3 -c 'import json,sys; m=json.load(sys.stdin)["members"][1]; sys.exit(0 if m["pid"] and m["pid"] != '"$victim"' else 1)'; do sleep 0.05; done
t1=$(now)
m_hung=$(secs "$t0" "$t1")
echo "a hung member replaced after $m_hung s (inactivity_timeout 3s, grace 2s)"
stop

mkdir -p "$work/sv"
cat > "$work/sv/supervisord.conf" <<CONF
[supervisord]
nodaemon=true
logfile=$work/sv/supervisord.log
pidfile=$work/sv/supervisord.pid
[unix_http_server]
file=$work/sv/supervisor.sock
[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
[supervisorctl]
serverurl=unix://$work/sv/supervisor.sock
[program:w]
command=sleep 3601
numprocs=100
process_name=%(program_name)s_%(process_num)03d
autorestart=true
startsecs=0
startretries=10
stdout_logfile=NONE
stderr_logfile=NONE
CONF
supervisord -c "$work/sv/supervisord.conf" >/dev/null 2>&1 &
spid=$!
until [ "$(pgrep -fc '^sleep 3601$' || true)" -ge 100 ]; do sleep 0.1; done
sleep 3
s_cpu=$(idle_cpu "$spid")
echo "supervisord with 100 idle programs: $s_cpu cores"
victim=$(pgrep -f '^sleep 3601$' | head -1)
before=$(pgrep -f '^sleep 3601$' | sort)
t0=$(now); kill -9 "$victim"
until [ "$(pgrep -fc '^sleep 3601$' || true)" -ge 100 ] && [ "$(pgrep -f '^sleep 3601$' | sort)" != "$before" ]; do sleep 0.01; done
t1=$(now)
s_restart=$(secs "$t0" "$t1")
echo "supervisord restarted a crashed program after $s_restart s"
kill "$spid"; wait "$spid" 2>/dev/null || true; spid=

echo
echo "| measure | musterd | supervisord | target |"
echo "|---|---|---|---|"
echo "| scale 0 → 100 members, all heartbeating | $scale_s s | | ≤ 2 s |"
echo "| a crashed member restarted (first backoff 1 s) | $m_restart s after kill -9 | $s_restart s | ≤ 1.1 s |"
echo "| a hung member found and replaced (timeout 3 s, grace 2 s) | $m_hung s | cannot: it restarts on exit only | ≤ timeout + 1 s + grace = 6 s |"
echo "| CPU with 100 idle members | $m_cpu cores | $s_cpu cores | ≤ 0.01 core |"
