#!/usr/bin/env bash
# Side-by-side runs against the tools muster users would otherwise use, on
# this machine, back to back, with the same client and settings:
#   - GET /health: musterd vs nginx returning a body of the same bytes;
#   - GET /telemetry with 1,000 live workers vs nginx serving a static copy;
#   - a 1,000-worker fleet's state: heartbeats to musterd vs one PUT per
#     worker per beat to Prometheus Pushgateway;
#   - memory per tracked worker: musterd at 0 and 10,000 workers (history
#     rings are resident from a worker's first sample, so this is the cost
#     with history full) vs Pushgateway's growth per pushed group.
# Writes the table between the compare markers in BENCHMARKS.md.
# Installs nginx-light, prometheus-pushgateway and wrk from Debian's packages
# when missing (as root). Servers are pinned to CPU 0 and clients to CPU 1.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || need+=(nginx-light)
command -v prometheus-pushgateway >/dev/null || need+=(prometheus-pushgateway)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
pin_d=""; pin_c=""
if [ "$(nproc)" -ge 2 ]; then pin_d="taskset -c 0"; pin_c="taskset -c 1"; fi
. bench/lib.sh
work=$(mktemp -d)
# nginx's worker runs as nobody when started as root: let it read the copy.
chmod 755 "$work"
others=()
trap 'kill "${pid:-}" "${others[@]}" 2>/dev/null || true; rm -rf "$work"' EXIT

# wrk's requests/s and p99 (ms) for a URL. A run with any non-2xx answer
# or socket error measured something else: stop.
wrk_run() {
  $pin_c wrk -t1 -c64 -d10s --latency "$1" > "$work/wrk.txt"
  if grep -qE "Non-2xx|Socket errors" "$work/wrk.txt"; then
    echo "wrk saw errors from $1:" >&2; cat "$work/wrk.txt" >&2; exit 1
  fi
  rps=$(awk '/Requests\/sec/ {print $2}' "$work/wrk.txt")
  p99=$(awk '$1 == "99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; print v}' "$work/wrk.txt")
  echo "$rps $p99"
}

nginx_serve() { # $1: location block body
  mkdir -p "$work/nginx"
  cat > "$work/nginx/nginx.conf" <<CONF
worker_processes 1;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  default_type application/json;
  server {
    listen 127.0.0.1:18081;
    $1
  }
}
CONF
  $pin_d nginx -c "$work/nginx/nginx.conf" -g 'daemon off;' &
  npid=$!
  others+=($npid)
  for _ in $(seq 50); do curl -fs -o /dev/null http://127.0.0.1:18081/ 2>/dev/null && break; curl -s -o /dev/null http://127.0.0.1:18081/x && break; sleep 0.1; done
}
nginx_stop() { kill "$npid"; wait "$npid" 2>/dev/null || true; }
# Both servers must send the very same bytes: same status and length.
same_size() { # $1: url, $2: file with the expected body
  local got
  got=$(curl -s -o /dev/null -w '%{http_code} %{size_download}' "$1")
  if [ "$got" != "200 $(wc -c < "$2")" ]; then
    echo "$1 answered '$got', expected '200 $(wc -c < "$2")'" >&2; exit 1
  fi
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }

rows=()

echo "## GET /health: musterd vs nginx"
start
curl -s http://$http/health > "$work/health.json"
read -r m_rps m_p99 < <(wrk_run "http://$http/health")
stop
body=$(sed 's/\\/\\\\/g; s/'"'"'/\\'"'"'/g' "$work/health.json")
nginx_serve "location / { return 200 '$body'; }"
same_size "http://127.0.0.1:18081/health" "$work/health.json"
read -r n_rps n_p99 < <(wrk_run "http://127.0.0.1:18081/health")
nginx_stop
echo "musterd $m_rps req/s p99 $m_p99 ms; nginx $n_rps req/s p99 $n_p99 ms"
rows+=("| \`GET /health\` ($(wc -c < "$work/health.json") B), wrk -t1 -c64 -d10s | $m_rps req/s, p99 $m_p99 ms | $n_rps req/s, p99 $n_p99 ms | $(ratio "$m_rps" "$n_rps") | ≥ 1.0×, p99 ≤ 1 ms |")

echo "## GET /telemetry with 1,000 live workers: musterd vs nginx static copy"
start
$pin_c $bin/muster-bench heartbeats --workers 1000 --rate 1000 --duration 40s >/dev/null &
bg=$!
sleep 4
curl -s http://$http/telemetry > "$work/telemetry"
read -r m_rps m_p99 < <(wrk_run "http://$http/telemetry")
wait $bg
stop
nginx_serve "location /telemetry { alias $work/telemetry; }"
same_size "http://127.0.0.1:18081/telemetry" "$work/telemetry"
read -r n_rps n_p99 < <(wrk_run "http://127.0.0.1:18081/telemetry")
nginx_stop
echo "musterd $m_rps req/s p99 $m_p99 ms; nginx $n_rps req/s p99 $n_p99 ms"
rows+=("| \`GET /telemetry\`, 1,000 workers ($(wc -c < "$work/telemetry") B), wrk -t1 -c64 -d10s | $m_rps req/s, p99 $m_p99 ms | $n_rps req/s, p99 $n_p99 ms (static file) | $(ratio "$m_rps" "$n_rps") | ≥ 0.5× |")

echo "## fleet state, 1,000 workers: heartbeats to musterd vs PUTs to Pushgateway"
start
$pin_c $bin/muster-bench heartbeats --workers 1000 --rate 100000 --duration 30s --pid $pid --json > "$work/m.json"
stop
$pin_d prometheus-pushgateway --web.listen-address=127.0.0.1:19091 >/dev/null 2>&1 &
gpid=$!
others+=($gpid)
sleep 1
$pin_c $bin/muster-bench push --url http://127.0.0.1:19091 --workers 1000 --rate 100000 --connections 8 --duration 30s --pid $gpid --json > "$work/p.json"
kill $gpid; wait $gpid 2>/dev/null || true
read -r m_ups m_lost m_rss < <(python3 -c 'import json; r=json.load(open("'"$work/m.json"'")); print(round(r["applied"]/r["duration_s"]), r["lost"], r["musterd_rss_kib"])')
read -r m_cpu < <(python3 -c 'import json; r=json.load(open("'"$work/m.json"'")); print(round(r["musterd_cpu_cores"], 2))')
read -r p_ups p_err p_rss p_rss0 p_cpu p_n < <(python3 -c 'import json; r=json.load(open("'"$work/p.json"'")); print(round(r["accepted_per_s"]), r["errors"], r["server_rss_kib"], r["server_rss_before_kib"], round(r["server_cpu_cores"], 2), r["accepted"])')
echo "musterd $m_ups updates/s ($m_lost lost), rss $m_rss KiB; pushgateway $p_ups updates/s ($p_err errors), rss $p_rss KiB"
rows+=("| fleet-state updates/s, 1,000 workers, 30 s (musterd: UDP heartbeats offered at 100,000/s; Pushgateway: PUT per worker over 8 keep-alive connections, offered at 100,000/s) | $m_ups/s, $m_lost lost, $m_cpu core, RSS $((m_rss / 1024)) MiB | $p_ups/s, $p_err errors, $p_cpu core, RSS $((p_rss / 1024)) MiB | $(ratio "$m_ups" "$p_ups") (memory $(ratio "$m_rss" "$p_rss")) | ≥ 10× at ≤ 0.1× memory |")

echo "## memory per tracked worker: musterd at 0 and 10,000 workers"
start
$pin_c $bin/muster-bench heartbeats --workers 10000 --rate 10000 --duration 30s --pid $pid --json > "$work/mem.json"
stop
read -r w_rss0 w_rss w_lost < <(python3 -c 'import json; r=json.load(open("'"$work/mem.json"'")); print(r["musterd_rss_before_kib"], r["musterd_rss_kib"], r["lost"])')
m_per=$(awk -v a="$w_rss0" -v b="$w_rss" 'BEGIN { printf "%.1f", (b - a) / 10000 }')
p_per=$(awk -v a="$p_rss0" -v b="$p_rss" 'BEGIN { printf "%.1f", (b - a) / 1000 }')
echo "musterd $w_rss0 -> $w_rss KiB ($m_per KiB/worker); pushgateway $p_rss0 -> $p_rss KiB ($p_per KiB/group)"
rows+=("| memory per tracked worker (musterd: RSS at 0 and at 10,000 workers beating 1/s for 30 s, $w_lost lost; history rings are resident from the first sample, so this is the full-history cost. Pushgateway: RSS growth over the 1,000 groups of the row above, no history) | $m_per KiB ($((w_rss0 / 1024)) → $((w_rss / 1024)) MiB) | $p_per KiB ($((p_rss0 / 1024)) → $((p_rss / 1024)) MiB, $p_n PUTs) | $(ratio "$m_per" "$p_per") | ≤ 48 KiB |")

table=$(printf '%s\n' "| measure | musterd | other | musterd / other | target |" "|---|---|---|---|---|" "${rows[@]}")
stamp="Recorded $(date -u +%Y-%m-%d) with \`bench/compare.sh\` (servers on CPU 0, clients on CPU 1)."
python3 - "$table" "$stamp" <<'PY'
import sys
table, stamp = sys.argv[1], sys.argv[2]
p = "BENCHMARKS.md"
s = open(p).read()
begin, end = "<!-- compare:begin -->", "<!-- compare:end -->"
block = f"{begin}\n{stamp}\n\n{table}\n{end}"
if begin in s:
    s = s[: s.index(begin)] + block + s[s.index(end) + len(end):]
else:
    s += f"\n## Side by side (`bench/compare.sh`)\n\n{block}\n"
open(p, "w").write(s)
PY
echo "BENCHMARKS.md updated"
