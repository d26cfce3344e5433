#!/usr/bin/env bash
# What roles and TLS heartbeats cost, each against its baseline in the same
# run, with the same binary:
#
#   bench/access.sh roles   # GET /health and POST /api/tasks, wrk -c32:
#                           # no tokens (loopback) against an api_tokens_file
#                           # of 4 tokens and requests carrying one; twice each,
#                           # alternating
#   bench/access.sh tls     # 1,000 TCP workers beating once a second, seed
#                           # frames: daemon CPU over plain TCP against TLS
#                           # (with client certificates asked for)
#
# SECS (default 10) is each wrk run's length, BEAT_SECS (default 30) each
# heartbeat run's. The daemon runs on core 0, the load on core 1.
# Needs wrk (apt-get install wrk) and openssl.
set -euo pipefail
cd "$(dirname "$0")/.."
pin_d="taskset -c 0"
source bench/lib.sh
work=$(mktemp -d)
trap 'kill "${pid:-}" 2>/dev/null || true; rm -rf "$work"' EXIT
secs=${SECS:-10}
load="taskset -c 1"

# requests/s and p99 ms of one wrk run; $1 url, then extra wrk args
wrk_run() {
  $load wrk -t1 -c32 -d"${secs}s" --latency "${@:2}" "$1" > "$work/wrk.txt"
  if grep -qE "Non-2xx|Socket errors" "$work/wrk.txt"; then
    echo "wrk saw errors from $1:" >&2; cat "$work/wrk.txt" >&2; exit 1
  fi
  awk '/Requests\/sec/ {r=$2} $1 == "99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; p=v} END {print r, p}' "$work/wrk.txt"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "-" }'; }

roles() {
  command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)" >&2; exit 1; }
  : > "$work/tokens"
  for name in dash ci oncall root; do
    role=$(case $name in dash) echo read;; ci) echo submit;; oncall) echo operate;; root) echo admin;; esac)
    $bin/muster token new "$name" "$role" > "$work/$name"
    tail -n 1 "$work/$name" >> "$work/tokens"
  done
  token=$(head -n 1 "$work/ci")
  cat > "$work/post.lua" <<EOF
wrk.method = "POST"
wrk.body = '{"type":"bench","payload":{"n":1}}'
wrk.headers["Content-Type"] = "application/json"
EOF
  declare -A rps p99
  for round in 1 2; do
    for mode in none role; do
      if [ $mode = role ]; then
        start --api-tokens-file "$work/tokens" --max-tasks 10000000
        auth=(-H "Authorization: Bearer $token")
      else
        start --max-tasks 10000000
        auth=()
      fi
      read -r r p < <(wrk_run "http://$http/health" "${auth[@]}")
      rps[$mode-health-$round]=$r; p99[$mode-health-$round]=$p
      read -r r p < <(wrk_run "http://$http/api/tasks" -s "$work/post.lua" "${auth[@]}")
      rps[$mode-post-$round]=$r; p99[$mode-post-$round]=$p
      echo "round $round $mode: /health ${rps[$mode-health-$round]} req/s, POST ${rps[$mode-post-$round]} req/s" >&2
      stop
    done
  done
  echo "| request | round | no tokens (loopback) | a submit token checked | with / without |"
  echo "|---|---|---|---|---|"
  for req in health post; do
    label=$([ $req = health ] && echo '`GET /health`' || echo '`POST /api/tasks`')
    for round in 1 2; do
      echo "| $label | $round | ${rps[none-$req-$round]} req/s, p99 ${p99[none-$req-$round]} ms | ${rps[role-$req-$round]} req/s, p99 ${p99[role-$req-$round]} ms | $(ratio "${rps[role-$req-$round]}" "${rps[none-$req-$round]}") |"
    done
  done
}

tls() {
  # A CA, the daemon's certificate, and one client certificate per worker
  # would be 1,000 certificates: the bench's workers share one client
  # certificate, so the daemon is asked for none (the handshake is not
  # in the measured window either way; records are).
  # A CA and a server certificate it signs (rustls takes no self-signed
  # CA certificate as a server's).
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=bench-ca -keyout "$work/ca.key" -out "$work/ca.pem" 2>/dev/null
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -subj /CN=localhost -keyout "$work/key.pem" -out "$work/cert.csr" 2>/dev/null
  printf 'basicConstraints=CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n' > "$work/ext.cnf"
  openssl x509 -req -in "$work/cert.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" \
    -days 2 -extfile "$work/ext.cnf" -out "$work/cert.pem" 2>/dev/null
  beat_secs=${BEAT_SECS:-30}
  tls_at=127.0.0.1:18091
  start --heartbeat-tls-addr $tls_at --heartbeat-tls-cert-file "$work/cert.pem" \
    --heartbeat-tls-key-file "$work/key.pem"
  declare -A cpu
  for round in 1 2; do
    for mode in tcp tls; do
      if [ $mode = tls ]; then
        to=(--tls --heartbeat-addr $tls_at --ca-file "$work/ca.pem")
      else
        to=(--tcp)
      fi
      out=$($load $bin/muster-bench heartbeats "${to[@]}" --workers 1000 --rate 1000 \
        --duration "${beat_secs}s" --pid "$pid" --json)
      cpu[$mode-$round]=$(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print(round(r["musterd_cpu_cores"], 4), r["applied"], r["sent"])' "$out")
      echo "round $round $mode: ${cpu[$mode-$round]} (cores, applied, sent)" >&2
    done
  done
  stop
  echo "| round | plain TCP: daemon CPU (cores), applied/sent | TLS: daemon CPU (cores), applied/sent | TLS / plain |"
  echo "|---|---|---|---|"
  for round in 1 2; do
    read -r c1 a1 s1 <<<"${cpu[tcp-$round]}"
    read -r c2 a2 s2 <<<"${cpu[tls-$round]}"
    echo "| $round | $c1, $a1/$s1 | $c2, $a2/$s2 | $(ratio "$c2" "$c1") |"
  done
}

case "${1:-}" in
  roles) roles ;;
  tls) tls ;;
  *) echo "usage: bench/access.sh roles|tls" >&2; exit 2 ;;
esac
