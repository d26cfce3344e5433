#!/usr/bin/env bash
# Operations checks with the real tools: the systemd units (systemd-analyze
# verify and security), the man pages (mandoc -Tlint), and /metrics
# (promtool check metrics, and a real Prometheus server scraping musterd).
# Run by test.sh after `cargo test`; needs the debug binaries built.
# Each missing tool is an error under CI=true and a skip elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$PWD/target/debug
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
failed=0
need() {
  command -v "$1" >/dev/null 2>&1 && return 0
  if [ "${CI:-}" = true ]; then echo "ops: $1 is required in CI" >&2; exit 1; fi
  echo "ops: skipping checks that need $1 (not installed)"
  return 1
}
check() { echo "ops: $*"; }
fail() { echo "ops: FAIL: $*" >&2; failed=$((failed + 1)); }

# Man pages.
if need mandoc; then
  for page in man/*.[0-9]; do
    out=$(mandoc -Tlint -Wwarning "$page" 2>&1) || true
    [ -z "$out" ] && check "mandoc lint clean: $page" || fail "mandoc $page: $out"
  done
fi

# Units: verify a copy whose commands point at the binaries just built, with
# the man pages on MANPATH so Documentation= resolves.
if need systemd-analyze; then
  mkdir -p "$work/units" "$work/man/man1" "$work/man/man5" "$work/man/man7" "$work/man/man8"
  for page in man/*.[0-9]; do cp "$page" "$work/man/man${page##*.}/"; done
  for u in systemd/musterd.service systemd/musterd.socket; do
    sed "s#/usr/bin/musterd#$bin/musterd#g" "$u" > "$work/units/${u##*/}"
  done
  if out=$(MANPATH=$work/man systemd-analyze verify "$work/units/musterd.service" "$work/units/musterd.socket" 2>&1); then
    check "systemd-analyze verify: units clean"
  else
    # A container without systemd as init lacks the standard targets; only
    # problems with our own units count.
    real=$(echo "$out" | grep -v -e 'sysinit.target not found' -e 'Failed to create .*/start' || true)
    [ -z "$real" ] && check "systemd-analyze verify: units clean (no init system here)" || fail "systemd-analyze verify: $real"
  fi
  score=$(systemd-analyze security --offline=true systemd/musterd.service 2>/dev/null | sed -n 's/.*Overall exposure level for musterd.service: \([0-9.]*\).*/\1/p')
  if [ -n "$score" ] && awk -v s="$score" 'BEGIN { exit !(s <= 1.5) }'; then
    check "systemd-analyze security: exposure $score <= 1.5"
  else
    fail "systemd-analyze security: exposure '${score:-?}' is above 1.5"
  fi
fi

# A live musterd with workers in every state.
start_musterd() {
  "$bin/musterd" --config /dev/null --http-addr 127.0.0.1:0 --heartbeat-addr 127.0.0.1:0 --state-dir off \
    --heartbeat-interval 1s --inactivity-timeout 1s 2>"$work/musterd.log" &
  pids+=($!)
  for _ in $(seq 100); do
    line=$(grep -o 'listening http=[^ ]* heartbeat=[^ ]*' "$work/musterd.log" || true)
    [ -n "$line" ] && break
    sleep 0.05
  done
  http=$(echo "$line" | sed 's/.*http=\([^ ]*\).*/\1/')
  hb=$(echo "$line" | sed 's/.*heartbeat=\([^ ]*\).*/\1/')
  [ -n "$http" ] || { cat "$work/musterd.log" >&2; exit 1; }
}
udp() { printf '%s' "$1" > "/dev/udp/${hb%:*}/${hb#*:}"; }

if need promtool || need prometheus; then
  start_musterd
  udp '{"type":"heartbeat","worker_id":"gone","status":"idle"}'
  udp '{"type":"heartbeat","worker_id":"left","status":"working"}'
  udp '{"type":"bye","worker_id":"left"}'
  sleep 2   # "gone" turns inactive
  udp '{"type":"heartbeat","worker_id":"busy","status":"working","cpu_usage":50,"resource_usage":{"rss_mb":12}}'
  udp '{"type":"run","worker_id":"busy","duration_ms":250,"ok":true}'
  udp '{"type":"run","worker_id":"busy","duration_ms":9000,"ok":false}'
  udp '{"type":"heartbeat","worker_id":"bad","cpu_usage":"x"}'
  exec 3<>"/dev/tcp/${hb%:*}/${hb#*:}"
  printf '{"type":"hello","worker_id":"new","hostname":"h1","labels":{"team":"ml"}}\n' >&3
  sleep 0.3
  states=$(curl -fs "http://$http/workers" | python3 -c 'import json,sys; print(" ".join(sorted(set(w["status"] for w in json.load(sys.stdin).values()))))')
  [ "$states" = "created inactive terminated working" ] && check "workers in every state: $states" || fail "states were: $states"
  # From here "busy" and "new" keep beating, so only "gone" is silent.
  ( while :; do
      udp '{"type":"heartbeat","worker_id":"busy","status":"working"}'
      printf '{"type":"heartbeat","worker_id":"new"}\n' >&3
      sleep 0.3
    done ) &
  pids+=($!)
  curl -fs "http://$http/metrics" > "$work/metrics.txt"
  curl -fs --compressed -D "$work/gzip.head" "http://$http/metrics" > "$work/metrics-gzip.txt"
  if grep -qi '^content-encoding: gzip' "$work/gzip.head" && grep -q '^muster_worker_info' "$work/metrics-gzip.txt"; then
    check "/metrics is gzipped when asked ($(curl -fs -H 'Accept-Encoding: gzip' "http://$http/metrics" | wc -c) bytes for $(wc -c < "$work/metrics.txt"))"
  else
    fail "/metrics was not gzipped: $(cat "$work/gzip.head")"
  fi
  if need promtool; then
    for f in metrics metrics-gzip; do
      if out=$(promtool check metrics < "$work/$f.txt" 2>&1) && [ -z "$out" ]; then
        check "promtool check metrics ($f): clean ($(grep -c '^muster_\|^process_' "$work/$f.txt") samples)"
      else
        fail "promtool check metrics ($f): $out"
      fi
    done
  fi
  if need prometheus; then
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    cat > "$work/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: muster
    static_configs:
      - targets: ['$http']
EOF
    prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
      --web.listen-address="127.0.0.1:$port" >"$work/prometheus.log" 2>&1 &
    pids+=($!)
    up=""
    for _ in $(seq 60); do
      up=$(curl -fs "http://127.0.0.1:$port/api/v1/query?query=up%7Bjob%3D%22muster%22%7D" 2>/dev/null \
        | python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else "")' 2>/dev/null || true)
      [ "$up" = 1 ] && break
      sleep 0.5
    done
    [ "$up" = 1 ] && check "prometheus scrapes musterd: up == 1" || { fail "prometheus never saw up == 1"; tail -5 "$work/prometheus.log" >&2; }
    series=$(curl -fs "http://127.0.0.1:$port/api/v1/query?query=muster_worker_up%7Bworker_id%3D%22busy%22%7D" \
      | python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else "")')
    [ -n "$series" ] && check "prometheus has the per-worker series muster_worker_up{worker_id=\"busy\"} ($series)" || fail "per-worker series missing"
    # The rule the README tells users to write fires for silence only, not
    # for a worker that said bye.
    query() {
      curl -fs -G "http://127.0.0.1:$port/api/v1/query" --data-urlencode "query=$1" \
        | python3 -c 'import json,sys; print(" ".join(sorted(r["metric"].get("worker_id", r["value"][1]) for r in json.load(sys.stdin)["data"]["result"])))'
    }
    down=$(query 'muster_worker_up == 0')
    [ "$down" = gone ] && check "muster_worker_up == 0 is the silent worker only: $down" || fail "muster_worker_up == 0 gave: $down"
    working=$(query 'muster_worker_status{status="working"} == 1')
    [ "$working" = busy ] && check "muster_worker_status{status=\"working\"}: $working" || fail "working: $working"
    info=$(query 'muster_worker_info{hostname="h1",label_team="ml"}')
    [ "$info" = new ] && check "muster_worker_info carries hostname and labels: $info" || fail "info: $info"
    fds=$(query 'process_open_fds{job="muster"}')
    [ -n "$fds" ] && [ "$fds" -gt 3 ] && check "process_open_fds: $fds" || fail "process_open_fds: $fds"
  fi
  exec 3>&-
fi

if [ "$failed" -gt 0 ]; then
  echo "ops: $failed failed" >&2
  exit 1
fi
echo "ops: all checks passed"
