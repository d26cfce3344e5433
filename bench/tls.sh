#!/usr/bin/env bash
# What TLS costs: the same musterd binary, plain and with a certificate,
# back to back, under the same wrk load. /health (small, cached body) and
# /telemetry with 1,000 live workers (about 300 KB), each over keep-alive
# connections and with a new connection per request (a TLS handshake each).
# Prints a Markdown table with the TLS / plain ratio.
#
#   bench/tls.sh          # 10 s per wrk run
#
# Needs wrk (built with OpenSSL, as Debian's is) and openssl.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)" >&2; exit 1; }
work=$(mktemp -d)
trap 'kill "${pid:-}" "${bg:-}" 2>/dev/null || true; rm -rf "$work"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
  -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
secs=${SECS:-10}

# requests/s and p99 ms of one wrk run; $1 url, then extra wrk args
wrk_run() {
  wrk -t1 -c32 -d"${secs}s" --latency "${@:2}" "$1" > "$work/wrk.txt"
  if grep -qE "Non-2xx|Socket errors" "$work/wrk.txt"; then
    echo "wrk saw errors from $1:" >&2; cat "$work/wrk.txt" >&2; exit 1
  fi
  awk '/Requests\/sec/ {r=$2} $1 == "99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; p=v} END {print r, p}' "$work/wrk.txt"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }

declare -A rps p99
for mode in plain tls; do
  if [ $mode = tls ]; then
    start --tls-cert-file "$work/cert.pem" --tls-key-file "$work/key.pem"
    scheme=https
  else
    start
    scheme=http
  fi
  # 1,000 workers beating once a second, the same for both daemons
  # (`muster bench heartbeats` reads /health over plain HTTP).
  python3 - "$hb" <<'PY' &
import socket, sys, time
host, port = sys.argv[1].rsplit(":", 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
pad = "x" * 40
while True:
    for i in range(1000):
        s.sendto(('{"type":"heartbeat","worker_id":"w%d","status":"working","cpu_usage":%d,"queue_depth":%d,"labels":{"pool":"%s"}}' % (i, i % 100, i % 7, pad)).encode(), (host, int(port)))
    time.sleep(1)
PY
  bg=$!
  sleep 3
  n=$(curl -sk "$scheme://$http/health" | python3 -c 'import json,sys; print(json.load(sys.stdin)["workers"]["total"])')
  [ "$n" = 1000 ] || { echo "expected 1000 workers, found $n" >&2; exit 1; }
  for path in /health /telemetry; do
    for conn in keep close; do
      extra=()
      [ $conn = close ] && extra=(-H "Connection: close")
      read -r r p < <(wrk_run "$scheme://127.0.0.1:18080$path" "${extra[@]}")
      rps[$mode$path$conn]=$r
      p99[$mode$path$conn]=$p
      echo "$mode $path $conn: $r req/s, p99 $p ms" >&2
    done
  done
  kill $bg 2>/dev/null || true
  wait $bg 2>/dev/null || true
  stop
done
echo "| request | connections | plain | TLS | TLS / plain |"
echo "|---|---|---|---|---|"
for path in /health /telemetry; do
  for conn in keep close; do
    label=$([ $conn = keep ] && echo "keep-alive, wrk -c32" || echo "one per request (handshake each)")
    echo "| \`GET $path\` | $label | ${rps[plain$path$conn]} req/s, p99 ${p99[plain$path$conn]} ms | ${rps[tls$path$conn]} req/s, p99 ${p99[tls$path$conn]} ms | $(ratio "${rps[tls$path$conn]}" "${rps[plain$path$conn]}") |"
  done
done
