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
#   - database rows written per heartbeat, 10,000 steady workers on a node
#   - a node killed: its worker's task running again elsewhere; the leader
#     killed: a new leader (node_ttl 15 s, the default)
#
#   bench/cluster.sh          # SECS=10 per load run
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
bin=target/release
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
  $bin/musterd --config /dev/null --state-dir off --cluster-database "$uri" --node-id "n$1" \
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
load submit 11 0 11 0 10 0
m_sub=$(sum submitted_per_s "$work/load.json")
cat "$work/load.json"
psql -d muster -c "CREATE SEQUENCE bench_ids; CREATE TABLE bench_tasks (LIKE muster_tasks INCLUDING ALL)"
cat >"$work/insert.sql" <<EOF
INSERT INTO bench_tasks (id, kind, priority, target_labels, state, task) VALUES (nextval('bench_ids'), 'bench', 0, '{}', 'queued', '$task_json');
EOF
b_sub=$(pgbench -n -h 127.0.0.1 -p "$port" -U muster -c 32 -j 2 -T "$secs" -f "$work/insert.sql" muster 2>/dev/null | tps)
echo "pgbench INSERT c32: $b_sub tps"

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

echo "## rows written per heartbeat, 10,000 workers on n1 at 2,000/s"
written() { psql -d muster -c "SELECT sum(n_tup_ins + n_tup_upd + n_tup_del) FROM pg_stat_user_tables"; }
sleep 1; w0=$(written)
hbjson=$($bin/muster-bench heartbeats --workers 10000 --rate 2000 --duration "${secs}s" --url http://127.0.0.1:18081 --heartbeat-addr 127.0.0.1:18091 --json)
sleep 1; w1=$(written)
applied=$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['applied'])" "$hbjson")
rows=$((w1 - w0))
echo "$applied heartbeats applied; $rows rows written meanwhile (the three nodes' lease renewals included)"

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
echo "| rows written per steady heartbeat ($applied heartbeats) | $rows rows in all, lease renewals included | | | 0 |"
echo "| a submission on one node visible on another | $vis | | | p99 ≤ 1 s |"
echo "| node killed → its worker's task running again elsewhere | $requeue s | | | ≤ node_ttl ($ttl) + 2 s |"
echo "| leader killed → a new leader | $elect s | | | ≤ node_ttl + one renewal |"
