#!/usr/bin/env bash
# Cluster mode side by side with pgbench on the same PostgreSQL (Debian's
# server, started here in a temporary directory on a private port, with its
# defaults: fsync and synchronous_commit on), in one run:
#   - submissions/s, 32 submitters over 3 nodes vs pgbench -c 32 running the
#     same INSERT (a row shaped like a task) one per transaction
#   - end-to-end tasks/s, 3 nodes, 32 no-op workers spread over them vs
#     pgbench -c 32 running the claim (SELECT … FOR UPDATE SKIP LOCKED,
#     UPDATE) and the completion (UPDATE) of a queue table
#   - a submission on one node visible on another (p50, p99)
#   - the fleet: a status change on one node visible on another; database
#     rows written by 10,000 steady workers on a node, at two heartbeat rates
#   - a node killed under 50 workers told two nodes: when each shows
#     connected to the other
#   - a node killed: its worker's task running again elsewhere; the leader
#     killed: a new leader (node_ttl 15 s, the default)
#
#   bench/cluster.sh          # SECS=10 per load run
#   ONLY=submit bench/cluster.sh   # the submissions row alone, RUNS times
#                                  # (default 3), musterd and pgbench in turn
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
bin=target/release
musterd=${MUSTERD:-$bin/musterd}
secs=${SECS:-10}
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$pgbin/initdb" ] || { apt-get install -y -qq postgresql >/dev/null; pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1); }
command -v pgbench >/dev/null || PATH=$pgbin:$PATH
work=$(mktemp -d)
chmod 755 "$work"
port=$((20000 + RANDOM % 20000))
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  as_pg "$pgbin/pg_ctl" -D "$work/pg" -m immediate stop >/dev/null 2>&1 || true
  [ -n "${KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/pg" && chown postgres "$work/pg" 2>/dev/null || true
as_pg "$pgbin/initdb" -D "$work/pg" -U muster -A trust >/dev/null
as_pg "$pgbin/pg_ctl" -D "$work/pg" -l "$work/pg/log" -w \
  -o "-p $port -k $work/pg -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null
psql() { command psql -X -A -t -q -h 127.0.0.1 -p "$port" -U muster "$@"; }
psql -d postgres -c "CREATE DATABASE muster" >/dev/null
uri="postgresql://muster@127.0.0.1:$port/muster"
ttl=${NODE_TTL:-15s}

# Nodes n1..n3 on ports 1808N (HTTP) and 1809N (heartbeats).
node() { # $1: 1..3
  "$musterd" --config /dev/null --state-dir off --cluster-database "$uri" --node-id "n$1" \
    --node-ttl "$ttl" --http-addr "127.0.0.1:1808$1" --heartbeat-addr "127.0.0.1:1809$1" \
    --http-max-connections-per-ip 1000000 --tcp-max-connections-per-ip 1000000 \
    --max-tasks 10000000 --max-workers 20000 2>"$work/n$1.log" &
  eval "n$1=$!"; pids+=($!)
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:1808$1/health" >/dev/null 2>&1 && return; sleep 0.1; done
  echo "node n$1 did not start" >&2; cat "$work/n$1.log" >&2; exit 1
}
down() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
sum() { python3 -c "import json,sys; print(round(sum(json.loads(l)[sys.argv[1]] for l in open(sys.argv[2]))))" "$1" "$2"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
tps() { sed -n 's/^tps = \([0-9.]*\).*/\1/p' | head -1 | cut -d. -f1; }
load() { # $1 mode, then per node: submitters workers
  : >"$work/load.json"
  local mode=$1; shift
  local i=1 ps=()
  while [ $# -gt 0 ]; do
    $bin/muster-bench tasks --mode "$mode" --addr "127.0.0.1:1808$i" --heartbeat-addr "127.0.0.1:1809$i" \
      --submitters "$1" --workers "$2" --worker-prefix "b$i" --payload-bytes 100 --duration "${secs}s" --json >>"$work/load.json" &
    ps+=($!); i=$((i + 1)); shift 2
  done
  wait "${ps[@]}"
}

node 1; node 2; node 3
sleep 1
# A task row as a submission makes it (about 330 bytes of JSON).
row=$(curl -s -X POST -d '{"type":"bench","payload":"'"$(printf 'x%.0s' $(seq 100))"'"}' http://127.0.0.1:18081/api/tasks)
curl -s -X DELETE "http://127.0.0.1:18081/api/tasks/$(echo "$row" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')" >/dev/null
task_json=$(psql -d muster -c "SELECT task::text FROM muster_tasks LIMIT 1")

echo "## submissions/s, c32 over 3 nodes"
psql -d muster -c "CREATE SEQUENCE bench_ids; CREATE TABLE bench_tasks (LIKE muster_tasks INCLUDING ALL)"
cat >"$work/insert.sql" <<EOF
INSERT INTO bench_tasks (id, kind, priority, target_labels, state, task) VALUES (nextval('bench_ids'), 'bench', 0, '{}', 'queued', '$task_json');
EOF
submissions() {
  load submit 11 0 11 0 10 0
  m_sub=$(sum submitted_per_s "$work/load.json")
  cat "$work/load.json"
  b_sub=$(pgbench -n -h 127.0.0.1 -p "$port" -U muster -c 32 -j 2 -T "$secs" -f "$work/insert.sql" muster 2>/dev/null | tps)
  echo "pgbench INSERT c32: $b_sub tps"
}
if [ "${ONLY:-}" = submit ]; then
  for run in $(seq "${RUNS:-3}"); do
    submissions
    echo "run $run: musterd $m_sub/s, pgbench $b_sub/s, ratio $(ratio "$m_sub" "$b_sub")"
    psql -d muster -c "TRUNCATE bench_tasks; DELETE FROM muster_tasks"
  done
  exit 0
fi
submissions

echo "## end to end, 32 no-op workers over 3 nodes"
load e2e 11 11 11 11 10 10
m_e2e=$(sum finished_per_s "$work/load.json")
cat "$work/load.json"
psql -d muster -c "TRUNCATE bench_tasks; INSERT INTO bench_tasks (id, kind, priority, target_labels, state, task)
  SELECT g, 'bench', 0, '{}', 'queued', '$task_json'::jsonb FROM generate_series(1, 2000000) g"
psql -d muster -c "VACUUM ANALYZE bench_tasks"
cat >"$work/claim.sql" <<'EOF'
BEGIN;
SELECT id FROM bench_tasks WHERE state = 'queued' ORDER BY priority DESC, id LIMIT 1 FOR UPDATE SKIP LOCKED \gset
UPDATE bench_tasks SET state = 'assigned', lease = nextval('bench_ids'), rev = rev + 1, changed = pg_current_xact_id() WHERE id = :id;
COMMIT;
UPDATE bench_tasks SET state = 'succeeded', rev = rev + 1, changed = pg_current_xact_id() WHERE id = :id;
EOF
b_e2e=$(pgbench -n -h 127.0.0.1 -p "$port" -U muster -c 32 -j 2 -T "$secs" -f "$work/claim.sql" muster 2>/dev/null | tps)
echo "pgbench claim+complete c32: $b_e2e tps"
psql -d muster -c "DROP TABLE bench_tasks; DROP SEQUENCE bench_ids; DELETE FROM muster_tasks"
psql -d muster -c "VACUUM ANALYZE"

echo "## a submission on n1 visible on n2"
vis=$(python3 - <<'EOF'
import http.client, json, time
a = http.client.HTTPConnection("127.0.0.1", 18081)
b = http.client.HTTPConnection("127.0.0.1", 18082)
lat = []
for i in range(200):
    a.request("POST", "/api/tasks", body=json.dumps({"type": "vis", "worker_id": "nobody"}))
    r = a.getresponse(); t = json.loads(r.read()); t0 = time.monotonic()
    while True:
        b.request("GET", "/api/tasks/" + t["id"]); r = b.getresponse(); r.read()
        if r.status == 200: break
        time.sleep(0.002)
    lat.append((time.monotonic() - t0) * 1000)
    time.sleep(0.02)
lat.sort()
print("p50 %.0f ms, p99 %.0f ms" % (lat[len(lat) // 2], lat[int(len(lat) * 0.99) - 1]))
EOF
)
echo "$vis"

echo "## the fleet: a status change on n1 visible on n2"
fleetvis=$(python3 - <<'EOF'
import http.client, json, socket, time
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
b = http.client.HTTPConnection("127.0.0.1", 18082)
lat = []
for i in range(200):
    st = ("idle", "working")[i % 2]
    u.sendto(json.dumps({"type": "heartbeat", "worker_id": "vis-w", "status": st, "seq": i}).encode(), ("127.0.0.1", 18091))
    t0 = time.monotonic()
    while True:
        b.request("GET", "/telemetry/vis-w"); r = b.getresponse(); body = r.read()
        if r.status == 200 and json.loads(body)["status"] == st: break
        time.sleep(0.002)
    lat.append((time.monotonic() - t0) * 1000)
    time.sleep(0.02)
lat.sort()
print("p50 %.0f ms, p99 %.0f ms" % (lat[len(lat) // 2], lat[int(len(lat) * 0.99) - 1]))
EOF
)
echo "$fleetvis"

echo "## rows written, 10,000 steady workers on n1 (seed-shaped heartbeats)"
written() { psql -d muster -c "SELECT sum(n_tup_ins + n_tup_upd + n_tup_del) FROM pg_stat_user_tables"; }
beats() { # $1 rate, $2 seconds: heartbeats applied
  $bin/muster-bench heartbeats --workers 10000 --worker-prefix steady- --rate "$1" --duration "${2}s" --url http://127.0.0.1:18081 \
    --heartbeat-addr 127.0.0.1:18091 --json | python3 -c "import json,sys; print(json.load(sys.stdin)['applied'])"
}
# Every worker new, then its first refresh: not steady yet.
beats 2000 15 >/dev/null
steady=$((secs < 20 ? 20 : secs))
w0=$(written); applied_lo=$(beats 2000 "$steady"); w1=$(written)
applied_hi=$(beats 10000 "$steady"); w2=$(written)
rows_lo=$(( (w1 - w0) / steady )); rows_hi=$(( (w2 - w1) / steady ))
per_beat=$(awk -v a="$((w2 - w1 - (w1 - w0)))" -v b="$((applied_hi - applied_lo))" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "-" }')
echo "at 2,000 beats/s: $rows_lo rows/s ($applied_lo applied); at 10,000 beats/s: $rows_hi rows/s ($applied_hi applied); rows per extra heartbeat $per_beat"

echo "## n3 killed: its 50 workers connected to n1 (told n3 and n1)"
for i in $(seq 50); do
  $bin/muster agent --tasks --id "mv-$i" --interval 1s --heartbeat-addr 127.0.0.1:18093,127.0.0.1:18091 -- /bin/true >/dev/null 2>&1 &
  pids+=($!)
done
until [ "$(curl -s 'http://127.0.0.1:18081/api/workers' | python3 -c 'import json,sys; print(sum(1 for w in json.load(sys.stdin) if w["worker_id"].startswith("mv-") and w.get("node") == "n3" and w["status"] == "idle"))')" = 50 ]; do sleep 0.2; done
kill -9 "$n3"
moved=$(python3 - <<'EOF'
import http.client, json, time
t0 = time.monotonic(); seen = {}
a = http.client.HTTPConnection("127.0.0.1", 18081)
while len(seen) < 50 and time.monotonic() - t0 < 60:
    a.request("GET", "/api/workers"); ws = json.loads(a.getresponse().read())
    now = time.monotonic()
    for w in ws:
        if w["worker_id"].startswith("mv-") and w.get("node") == "n1" and w["is_active"]:
            seen.setdefault(w["worker_id"], (now - t0) * 1000)
    time.sleep(0.02)
lat = sorted(seen.values())
print("%d of 50; p50 %.0f ms, p99 %.0f ms" % (len(lat), lat[len(lat) // 2], lat[int(len(lat) * 0.99) - 1]) if lat else "none moved")
EOF
)
echo "$moved"
for p in $(pgrep -f 'muster agent --tasks --id mv-'); do kill "$p" 2>/dev/null || true; done
node 3

echo "## a node killed: its worker's task running again elsewhere (node_ttl $ttl)"
cat >"$work/h.sh" <<'EOF'
#!/bin/sh
cat >/dev/null
sleep 30
EOF
chmod +x "$work/h.sh"
$bin/muster agent --tasks --id lost --interval 1s --heartbeat-addr 127.0.0.1:18092 -- "$work/h.sh" >/dev/null 2>&1 &
lost=$!; pids+=($lost)
sleep 2
id=$(curl -s -X POST -d '{"type":"long"}' http://127.0.0.1:18081/api/tasks | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
until curl -s "http://127.0.0.1:18081/api/tasks/$id" | grep -q '"state":"running"'; do sleep 0.1; done
$bin/muster agent --tasks --id survivor --interval 1s --heartbeat-addr 127.0.0.1:18091 -- "$work/h.sh" >/dev/null 2>&1 &
pids+=($!)
sleep 2
t0=$(date +%s.%N)
kill -9 "$n2" "$lost"
until curl -s "http://127.0.0.1:18081/api/tasks/$id" | grep -q '"worker_id":"survivor","queued_at":[0-9]*,"assigned_at":[0-9]*,"started_at":[0-9]'; do sleep 0.05; done
t1=$(date +%s.%N)
requeue=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
echo "running again on survivor $requeue s after the kill"

echo "## the leader killed: a new leader"
leader=$(curl -s http://127.0.0.1:18081/api/nodes | python3 -c 'import json,sys; print(json.load(sys.stdin)["leader"]["node_id"])')
case $leader in n1) victim=$n1; ask=18083 ;; *) victim=$n3; ask=18081 ;; esac
t0=$(date +%s.%N)
kill -9 "$victim"
until curl -s "http://127.0.0.1:$ask/api/nodes" | python3 -c 'import json,sys; l=json.load(sys.stdin)["leader"]; sys.exit(0 if l and l["held"] and l["node_id"] != sys.argv[1] else 1)' "$leader"; do sleep 0.1; done
t1=$(date +%s.%N)
elect=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
echo "leader $leader killed; a new leader seen $elect s later"

echo
echo "| measure | musterd | pgbench | ratio | target |"
echo "|---|---|---|---|---|"
echo "| submissions/s, c32 over 3 nodes vs the same INSERT one per transaction | $m_sub | $b_sub | $(ratio "$m_sub" "$b_sub") | ≥ 1.0× |"
echo "| end-to-end tasks/s, 3 nodes, 32 no-op workers vs claim-and-complete | $m_e2e | $b_e2e | $(ratio "$m_e2e" "$b_e2e") | ≥ 0.5× |"
echo "| rows per extra steady heartbeat (2,000 → 10,000 beats/s) | $per_beat | | | 0 |"
echo "| refresh rows/s at 10,000 steady workers | $rows_lo at 2,000 beats/s, $rows_hi at 10,000 beats/s | | | ≤ 1,000 |"
echo "| a status change on one node visible on another | $fleetvis | | | p99 ≤ 1 s |"
echo "| node killed → its workers connected elsewhere | $moved | | | p99 ≤ 3 s |"
echo "| a submission on one node visible on another | $vis | | | p99 ≤ 1 s |"
echo "| node killed → its worker's task running again elsewhere | $requeue s | | | ≤ node_ttl ($ttl) + 2 s |"
echo "| leader killed → a new leader | $elect s | | | ≤ node_ttl + one renewal |"
