//! Tasks in cluster mode against a real PostgreSQL: submitted on one node
//! and run by a worker of another, seen, cancelled and read from any node;
//! every `201` in the database through a `kill -9`, under which a worker
//! moves to another node with its task and the task of a worker that never
//! comes back is given back by the leader; a node cut off from the
//! database answers 503, stops claiming, and its late finish is refused.

mod support;

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use support::pg::{self, TTL, node};
use support::{Daemon, starts_of};

const MUSTER: &str = env!("CARGO_BIN_EXE_muster");

/// Every node alive on `d`'s list, and one of them leading.
fn wait_cluster(d: &Daemon, n: usize) {
    d.wait_for(&format!("{n} nodes and a leader"), |d| {
        let v = d.json("/api/nodes");
        let alive = v["nodes"]
            .as_array()
            .is_some_and(|a| a.iter().filter(|n| n["alive"] == true).count() == n);
        alive && v["leader"]["held"] == true
    });
}

/// Nodes n1 and n2 on `pg`, each with `extra` flags, once both are
/// alive and one leads.
fn two_nodes(pg: &pg::Pg, extra: &[&str]) -> Vec<Daemon> {
    let ds: Vec<Daemon> = ["n1", "n2"].map(|n| node(pg, n, extra)).into();
    wait_cluster(&ds[0], 2);
    ds
}

/// A handler that counts its runs in `dir/runs` (one line per start, with
/// the task id) and notes them in `dir/starts` (task, attempt, Unix ms),
/// then by type: `slow` sleeps 4 s, `progress` says it is halfway and
/// sleeps 3 s, `long` sleeps 8 s, `sleep61` a minute, `flaky` fails
/// before its third attempt, `fixable` fails until `dir/fixed` exists,
/// `trace` answers its `TRACEPARENT`.
fn handler(dir: &Path) -> PathBuf {
    let path = dir.join("handler.sh");
    let runs = dir.join("runs");
    std::fs::write(
        &path,
        format!(
            r#"#!/bin/sh
cat >/dev/null
echo "$MUSTER_TASK_ID" >>{runs}
echo "$MUSTER_TASK_ID $MUSTER_TASK_ATTEMPT $(date +%s%3N)" >>{dir}/starts
echo "task $MUSTER_TASK_ID attempt $MUSTER_TASK_ATTEMPT"
case "$MUSTER_TASK_TYPE" in
  slow) sleep 4 ;;
  progress) echo "::progress 0.5 halfway"; sleep 3 ;;
  long) sleep 8 ;;
  sleep61) sleep 61 ;;
  flaky) [ "$MUSTER_TASK_ATTEMPT" -ge 3 ] || exit 4 ;;
  fixable) [ -e {dir}/fixed ] || exit 5 ;;
  trace) echo "{{\"traceparent\":\"$TRACEPARENT\"}}"; exit 0 ;;
esac
echo '{{"done":true}}'
"#,
            runs = runs.display(),
            dir = dir.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// The task ids the handlers in `dir` started, one per run.
fn runs(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("runs"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn agent(d: &Daemon, id: &str, handler: &Path) -> Agent {
    agent_to(d, &d.heartbeat.to_string(), id, handler)
}

/// An agent given `addrs` (a list), shown on `d` once it beats.
fn agent_to(d: &Daemon, addrs: &str, id: &str, handler: &Path) -> Agent {
    let a = Agent(
        Command::new(MUSTER)
            .args(["agent", "--tasks", "--capacity", "2", "--interval", "300ms"])
            .args(["--id", id, "--heartbeat-addr", addrs])
            .arg("--")
            .arg(handler)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    d.wait_for(&format!("{id} beating"), |d| {
        d.get(&format!("/api/workers/{id}")).1["status"] == "idle"
    });
    a
}

fn post(d: &Daemon, body: &str) -> (u16, Value) {
    d.post("/api/tasks", "", body)
}

fn submit(d: &Daemon, body: Value) -> String {
    let (status, t) = post(d, &body.to_string());
    assert_eq!(status, 201, "{t}");
    t["id"].as_str().unwrap().to_string()
}

/// The task as `d` shows it (a node may not have read it yet: 404).
fn task(d: &Daemon, id: &str) -> Value {
    d.get(&format!("/api/tasks/{id}")).1
}

fn wait_state(d: &Daemon, id: &str, state: &str) -> Value {
    d.wait_for(&format!("task {id} {state}"), |d| {
        task(d, id)["state"] == state
    });
    task(d, id)
}

fn delete(d: &Daemon, id: &str) -> (u16, Value) {
    let (status, _, b) = d.request(&format!(
        "DELETE /api/tasks/{id} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    ));
    (status, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

/// A counter from `/health`'s tasks group.
fn tasks_counter(d: &Daemon, name: &str) -> u64 {
    d.json("/health")["tasks"][name].as_u64().unwrap_or(0)
}

#[test]
fn a_task_submitted_on_one_node_runs_on_another_and_is_seen_and_cancelled_from_any() {
    let Some(pg) = pg::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let h = handler(dir.path());
    let ds: Vec<Daemon> = ["n1", "n2", "n3"].map(|n| node(&pg, n, &[])).into();
    wait_cluster(&ds[0], 3);
    let _a = agent(&ds[2], "w3", &h);
    let id = submit(&ds[0], json!({"type": "echo", "payload": {"n": 7}}));
    let t = wait_state(&ds[0], &id, "succeeded");
    assert_eq!(
        (t["worker_id"].clone(), t["result"].clone()),
        (json!("w3"), json!({"done": true}))
    );
    assert_eq!(
        pg.psql(&format!(
            "SELECT state || ' ' || holder_node FROM muster_tasks WHERE id = x'{id}'::bigint"
        )),
        "succeeded n3"
    );
    // Every node shows it, and its log lines.
    for d in &ds {
        wait_state(d, &id, "succeeded");
        d.wait_for("its log", |d| {
            let (_, _, b) = d.request(&format!(
                "GET /api/tasks/{id}/logs HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
            ));
            String::from_utf8_lossy(&b).contains(&format!("task {id} attempt 1"))
        });
        let list = d.json("/api/tasks?state=succeeded");
        assert!(
            list["tasks"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["id"] == id.as_str()),
            "{list}"
        );
    }
    assert_eq!(runs(dir.path()), vec![id.clone()], "run once");
    // A running task cancelled on a node that does not hold it: its
    // holder asks its worker, and every node sees it cancelled.
    let long = submit(&ds[1], json!({"type": "sleep61"}));
    wait_state(&ds[0], &long, "running");
    let (status, _) = delete(&ds[0], &long);
    assert_eq!(status, 200);
    for d in &ds {
        wait_state(d, &long, "cancelled");
    }
    // A queued task (aimed at a worker nobody has) cancelled elsewhere.
    let queued = submit(&ds[0], json!({"type": "echo", "worker_id": "nobody"}));
    wait_state(&ds[2], &queued, "queued");
    let (status, t) = delete(&ds[2], &queued);
    assert_eq!((status, t["state"].clone()), (200, json!("cancelled")));
    wait_state(&ds[0], &queued, "cancelled");
    assert_eq!(
        pg.psql(&format!(
            "SELECT state FROM muster_tasks WHERE id = x'{queued}'::bigint"
        )),
        "cancelled"
    );
    // Ids from three nodes never collide: each carries its node's ordinal.
    let ords = pg.psql("SELECT count(DISTINCT ordinal) FROM muster_nodes");
    assert_eq!(ords, "3");
}

/// A node is killed under its workers: they reconnect to a node they
/// learnt from `welcome`, re-report what they run, and that node adopts it:
/// each task runs once and succeeds at its first attempt, the leader gives
/// nothing back once the dead node's lease lapses, and the fleet shows the
/// workers on their new node.
/// A row written by a transaction that was still running at a mirror's
/// look is read at a later look: the mirrors skip what they saw, not what
/// was in flight.
#[test]
fn a_change_committed_after_a_look_that_saw_it_running_is_read() {
    use std::io::{BufRead, Write};
    let Some(pg) = pg::start() else { return };
    let ds = two_nodes(&pg, &[]);
    let id = submit(&ds[0], json!({"type": "held"}));
    wait_state(&ds[1], &id, "queued");
    let mut s = pg.session();
    let mut stdin = s.stdin.take().unwrap();
    let mut out = std::io::BufReader::new(s.stdout.take().unwrap());
    writeln!(
        stdin,
        "BEGIN;\nUPDATE muster_tasks SET task = jsonb_set(task, '{{progress,error}}', '\"late\"'),\n\
         rev = rev + 1, changed = pg_current_xact_id() WHERE id = x'{id}'::bigint;\n\\echo updated"
    )
    .unwrap();
    let mut line = String::new();
    while line.trim() != "updated" {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "psql ended");
    }
    // Both nodes look (another submission's notification) while the
    // update is in flight.
    let other = submit(&ds[0], json!({"type": "held"}));
    for d in &ds {
        wait_state(d, &other, "queued");
    }
    assert_eq!(task(&ds[1], &id)["error"], Value::Null);
    writeln!(stdin, "COMMIT;").unwrap();
    drop(stdin);
    assert!(s.wait().unwrap().success());
    for d in &ds {
        d.wait_for("the late commit", |d| task(d, &id)["error"] == "late");
    }
}

/// Retries and delays in cluster mode: the holder schedules a failed task,
/// the leader queues it when due, any node's worker takes it; a dead task
/// is retried from a node that never held it.
#[test]
fn retries_wait_their_backoff_delays_their_time_and_a_dead_task_is_retried_from_any_node() {
    let Some(pg) = pg::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let h = handler(dir.path());
    let ds: Vec<Daemon> = ["n1", "n2"]
        .map(|n| node(&pg, n, &["--retry-backoff-base", "400ms"]))
        .into();
    wait_cluster(&ds[0], 2);
    let _a = agent(&ds[1], "w2", &h);
    let flaky = submit(&ds[0], json!({"type": "flaky"}));
    let (status, t) = post(&ds[0], r#"{"type":"later","delay_ms":2000}"#);
    assert_eq!(
        (status, t["state"].clone()),
        (201, json!("scheduled")),
        "{t}"
    );
    let later = t["id"].as_str().unwrap().to_string();
    let run_at = t["run_at"].as_u64().unwrap();
    let t = wait_state(&ds[0], &flaky, "succeeded");
    assert_eq!(t["attempt"], 3);
    let runs = starts_of(dir.path(), &flaky);
    assert_eq!(runs.iter().map(|r| r.0).collect::<Vec<_>>(), [1, 2, 3]);
    assert!(runs[1].1 - runs[0].1 >= 400, "{runs:?}");
    assert!(runs[2].1 - runs[1].1 >= 800, "{runs:?}");
    wait_state(&ds[0], &later, "succeeded");
    let started = starts_of(dir.path(), &later);
    assert_eq!(started.len(), 1);
    assert!(
        started[0].1 >= run_at,
        "started {} before {run_at}",
        started[0].1
    );
    // Dead after its last attempt, in the database too.
    let fixable = submit(
        &ds[0],
        json!({"type": "fixable", "retry": {"max_attempts": 2, "backoff_base_ms": 100}}),
    );
    for d in &ds {
        wait_state(d, &fixable, "dead");
    }
    assert_eq!(
        pg.psql(&format!(
            "SELECT state FROM muster_tasks WHERE id = x'{fixable}'::bigint"
        )),
        "dead"
    );
    std::fs::write(dir.path().join("fixed"), "").unwrap();
    let (status, t) = ds[0].post(&format!("/api/tasks/{fixable}/retry"), "", "");
    assert_eq!(status, 200, "{t}");
    for d in &ds {
        let t = wait_state(d, &fixable, "succeeded");
        assert_eq!(t["attempt"], 1);
    }
    // The trace context a submission on n1 carried reaches n2's worker.
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let (status, t) = ds[0].post(
        "/api/tasks",
        &format!("traceparent: {tp}\r\n"),
        r#"{"type":"trace"}"#,
    );
    assert_eq!(status, 201);
    let id = t["id"].as_str().unwrap().to_string();
    for d in &ds {
        let t = wait_state(d, &id, "succeeded");
        assert_eq!(
            (t["traceparent"].clone(), t["result"].clone()),
            (json!(tp), json!({"traceparent": tp}))
        );
    }
}

#[test]
fn workers_of_a_killed_node_reconnect_elsewhere_and_their_tasks_finish_once() {
    let Some(pg) = pg::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let h = handler(dir.path());
    let mut n1 = node(&pg, "n1", &[]);
    let n2 = node(&pg, "n2", &[]);
    wait_cluster(&n1, 2);
    wait_cluster(&n2, 2);
    // Told n1 alone: n2 comes from n1's welcome.
    let _a = agent_to(&n1, &n1.heartbeat.to_string(), "wa", &h);
    let _b = agent_to(&n1, &n1.heartbeat.to_string(), "wb", &h);
    let ids: Vec<String> = (0..4)
        .map(|_| submit(&n2, json!({"type": "slow"})))
        .collect();
    for id in &ids {
        wait_state(&n2, id, "running");
    }
    let killed = Instant::now();
    n1.child.kill().unwrap();
    let _ = n1.child.wait();
    n2.wait_for("both workers on n2", |d| {
        let v = d.json("/api/workers");
        ["wa", "wb"].iter().all(|w| {
            v.as_array()
                .unwrap()
                .iter()
                .any(|x| x["worker_id"] == *w && x["node"] == "n2" && x["status"] == "working")
        })
    });
    eprintln!("workers on n2 {:?} after the kill", killed.elapsed());
    for id in &ids {
        let t = wait_state(&n2, id, "succeeded");
        assert_eq!(t["attempt"], 1, "{t}");
    }
    assert!(tasks_counter(&n2, "adopted") >= 4, "{}", n2.json("/health"));
    // Past n1's lease and the leader's next look: nothing was given back.
    std::thread::sleep(Duration::from_secs(5));
    let mut ran = runs(dir.path());
    ran.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(ran, want, "each task ran once");
    for id in &ids {
        assert_eq!(task(&n2, id)["state"], "succeeded");
    }
}

#[test]
fn every_201_through_a_kill_9_is_in_the_database_and_a_dead_nodes_tasks_run_again_or_move() {
    let Some(pg) = pg::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let h = handler(dir.path());
    let mut ds: Vec<Option<Daemon>> = ["n1", "n2", "n3"].map(|n| Some(node(&pg, n, &[]))).into();
    wait_cluster(ds[0].as_ref().unwrap(), 3);
    // A worker on n2 runs a slow task; it and n2 will not come back (the
    // worker is frozen before n2 is killed, then killed). Another worker
    // on n2, told n2 and n1, runs one too: it moves to n1 with its task.
    let lost_worker = agent(ds[1].as_ref().unwrap(), "w2", &h);
    let slow = submit(ds[0].as_ref().unwrap(), json!({"type": "slow"}));
    wait_state(ds[0].as_ref().unwrap(), &slow, "running");
    let n2 = ds[1].as_ref().unwrap();
    let both = format!("{},{}", n2.heartbeat, ds[0].as_ref().unwrap().heartbeat);
    let _mover = agent_to(n2, &both, "mover", &h);
    let moved = submit(
        ds[0].as_ref().unwrap(),
        json!({"type": "slow", "worker_id": "mover"}),
    );
    wait_state(ds[0].as_ref().unwrap(), &moved, "running");
    // 32 submitters over the three nodes; n2 is killed under them.
    let addrs: Vec<_> = ds.iter().map(|d| d.as_ref().unwrap().http).collect();
    let accepted = Mutex::new(Vec::<String>::new());
    let refused = Mutex::new(0u64);
    let until = Instant::now() + Duration::from_secs(4);
    std::thread::scope(|s| {
        for i in 0..32 {
            let (addrs, accepted, refused) = (&addrs, &accepted, &refused);
            s.spawn(move || {
                let at = addrs[i % 3];
                while Instant::now() < until {
                    let body = r#"{"type":"bulk","worker_id":"nobody"}"#;
                    match support::try_request(
                        at,
                        &format!(
                            "POST /api/tasks HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        ),
                    ) {
                        Some((201, _, b)) => {
                            let v: Value = serde_json::from_slice(&b).unwrap();
                            accepted.lock().unwrap().push(v["id"].as_str().unwrap().into());
                        }
                        Some(_) | None => {
                            *refused.lock().unwrap() += 1;
                            if at == addrs[1] {
                                std::thread::sleep(Duration::from_millis(50));
                            }
                        }
                    }
                }
            });
        }
        std::thread::sleep(Duration::from_secs(2));
        // Frozen first, so that it cannot reconnect to another node.
        unsafe { libc::kill(lost_worker.0.id() as i32, libc::SIGSTOP) };
        ds[1].as_ref().unwrap().signal(libc::SIGKILL);
    });
    let killed_at = Instant::now();
    drop(lost_worker);
    let accepted = accepted.into_inner().unwrap();
    assert!(accepted.len() > 100, "{} accepted", accepted.len());
    let stored = pg.psql("SELECT string_agg(lpad(to_hex(id), 16, '0'), ' ') FROM muster_tasks");
    let stored: std::collections::HashSet<&str> = stored.split(' ').collect();
    let missing: Vec<&String> = accepted
        .iter()
        .filter(|id| !stored.contains(id.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} tasks that got a 201 are not in the database: {missing:?}",
        missing.len(),
        accepted.len()
    );
    let refused = refused.into_inner().unwrap();
    eprintln!(
        "{} accepted, {refused} refused or unanswered",
        accepted.len()
    );
    // The slow task's worker never comes back: once n2's lease lapses
    // the leader gives it back, and a worker elsewhere runs it again.
    let survivor = ds[0].as_ref().unwrap();
    // The worker that moved finished its task there, at its first attempt,
    // having run it once.
    let t = wait_state(survivor, &moved, "succeeded");
    assert_eq!(
        (t["worker_id"].clone(), t["attempt"].clone()),
        (json!("mover"), json!(1))
    );
    assert_eq!(runs(dir.path()).iter().filter(|r| **r == moved).count(), 1);
    // The lost worker's task runs again on a live worker (w1, or the one
    // that moved, whichever is free first), at its second attempt.
    let _a1 = agent(survivor, "w1", &h);
    let t = wait_state(survivor, &slow, "succeeded");
    assert_eq!(t["attempt"], json!(2), "{t}");
    assert!(t["worker_id"] == "w1" || t["worker_id"] == "mover", "{t}");
    let took = killed_at.elapsed();
    assert!(
        took < Duration::from_secs(3 + 8),
        "run again {took:?} after the kill"
    );
    let mut d = ds[1].take().unwrap();
    let _ = d.child.wait();
}

#[test]
fn a_node_cut_off_from_the_database_refuses_submissions_and_its_late_finish_is_refused() {
    let Some(pg) = pg::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let h = handler(dir.path());
    let a = node(&pg, "a", &[]);
    wait_cluster(&a, 1);
    // Node b connects as a role of its own, so that it alone can be cut
    // off: its logins refused and its connections ended.
    pg.psql(&format!(
        "CREATE ROLE {r} LOGIN PASSWORD 'b-secret';
         GRANT CREATE, USAGE ON SCHEMA public TO {r};
         GRANT ALL ON ALL TABLES IN SCHEMA public TO {r};
         GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {r}",
        r = pg::PASSWORD_ROLE
    ));
    let secret = dir.path().join("pw");
    std::fs::write(&secret, "b-secret\n").unwrap();
    let uri_b = format!(
        "postgresql://{}@127.0.0.1:{}/muster",
        pg::PASSWORD_ROLE,
        pg.port
    );
    let b = Daemon::start(&[
        "--cluster-database",
        &uri_b,
        "--cluster-database-password-file",
        secret.to_str().unwrap(),
        "--node-id",
        "b",
        "--node-ttl",
        TTL,
    ]);
    wait_cluster(&a, 2);
    let _wb = agent(&b, "wb", &h);
    let long = submit(&a, json!({"type": "slow"}));
    wait_state(&a, &long, "running");
    assert_eq!(task(&a, &long)["worker_id"], "wb");
    pg.psql(&format!(
        "ALTER ROLE {r} NOLOGIN; SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = '{r}'",
        r = pg::PASSWORD_ROLE
    ));
    b.wait_for("b degraded", |d| d.json("/health")["status"] == "degraded");
    let (status, t) = post(&b, r#"{"type":"echo"}"#);
    assert_eq!(status, 503, "{t}");
    // b's lease lapses; the leader (a) gives the task back; a worker of
    // a's runs it.
    let _wa = agent(&a, "wa", &h);
    a.wait_for("the task taken by wa", |d| {
        task(d, &long)["worker_id"] == "wa"
    });
    // b's worker finishes while b is cut off: b's book takes the finish
    // (it cannot know better), and its writer holds it for the database.
    wait_state(&b, &long, "succeeded");
    assert_eq!(task(&b, &long)["worker_id"], "wb");
    // Back online, that finish is refused by the database: the claim it
    // was made under moved on.
    pg.psql(&format!("ALTER ROLE {r} LOGIN", r = pg::PASSWORD_ROLE));
    b.wait_for("b healthy", |d| d.json("/health")["status"] == "healthy");
    b.wait_for("the stale finish refused", |d| {
        tasks_counter(d, "writes_stale") >= 1
    });
    let t = wait_state(&a, &long, "succeeded");
    assert_eq!(t["worker_id"], "wa", "one result: the claim that holds it");
    // b's copy had its own finish: the database's row replaces it once
    // b's mirror reads it.
    b.wait_for("b's copy corrected to wa's finish", |d| {
        let t = task(d, &long);
        t["state"] == "succeeded" && t["worker_id"] == "wa"
    });
    assert_eq!(
        pg.psql(&format!(
            "SELECT task->'progress'->>'worker_id' FROM muster_tasks WHERE id = x'{long}'::bigint"
        )),
        "wa"
    );
}

/// A primary and its synchronous standby under 16 submitters over two
/// nodes: the standby is promoted and the primary stopped; the nodes
/// follow the multi-host URI, submissions are accepted again, and every
/// task that got a 201 before, during or after is on the new primary.
#[test]
fn a_promoted_standby_under_submissions_loses_no_201() {
    let Some(mut primary) = pg::start() else {
        return;
    };
    let standby = primary.standby();
    let uri = pg::either(&primary, &standby);
    let ds = [pg::node_at(&uri, "p1", &[]), pg::node_at(&uri, "p2", &[])];
    wait_cluster(&ds[0], 2);
    let addrs: Vec<_> = ds.iter().map(|d| d.http).collect();
    let accepted = Mutex::new(Vec::<(Instant, String)>::new());
    let until = Instant::now() + Duration::from_secs(10);
    let mut failed_over = Instant::now();
    let mut promoted = Instant::now();
    std::thread::scope(|s| {
        for i in 0..16 {
            let (addrs, accepted) = (&addrs, &accepted);
            s.spawn(move || {
                while Instant::now() < until {
                    let body = r#"{"type":"bulk","worker_id":"nobody"}"#;
                    let r = support::try_request(
                        addrs[i % 2],
                        &format!(
                            "POST /api/tasks HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        ),
                    );
                    match r {
                        Some((201, _, b)) => {
                            let v: Value = serde_json::from_slice(&b).unwrap();
                            let id = v["id"].as_str().unwrap().to_string();
                            accepted.lock().unwrap().push((Instant::now(), id));
                        }
                        _ => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
            });
        }
        std::thread::sleep(Duration::from_secs(3));
        promoted = Instant::now();
        standby.promote();
        primary.stop("fast");
        failed_over = Instant::now();
    });
    let accepted = accepted.into_inner().unwrap();
    let after: Vec<&(Instant, String)> =
        accepted.iter().filter(|(t, _)| *t > failed_over).collect();
    let before = accepted.len() - after.len();
    assert!(before > 50, "{before} accepted before the failover");
    assert!(
        !after.is_empty(),
        "no submission accepted after the failover"
    );
    // The first 201 from the new primary: the first after the promotion
    // that came later than any answer the old primary could give.
    let again = after.iter().map(|(t, _)| *t).min().unwrap() - promoted;
    eprintln!(
        "{} accepted, {} after the old primary stopped ({:?} after the promotion); accepted again {again:?} after the promotion",
        accepted.len(),
        after.len(),
        failed_over - promoted
    );
    let stored =
        standby.psql("SELECT string_agg(lpad(to_hex(id), 16, '0'), ' ') FROM muster_tasks");
    let stored: std::collections::HashSet<&str> = stored.split(' ').collect();
    let missing: Vec<&String> = accepted
        .iter()
        .map(|(_, id)| id)
        .filter(|id| !stored.contains(id.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} tasks that got a 201 are not on the new primary: {missing:?}",
        missing.len(),
        accepted.len()
    );
}

/// With its synchronous standby gone, a commit waits; after 10 s the node
/// cancels it, and PostgreSQL reports it committed with a warning:
/// committed on the primary only, which a failover would lose. The
/// submission is answered 503, never 201.
#[test]
fn a_commit_the_standby_never_confirmed_is_not_a_201() {
    let Some(primary) = pg::start() else {
        return;
    };
    let mut standby = primary.standby();
    let d = node(&primary, "solo", &[]);
    wait_cluster(&d, 1);
    let (status, _) = post(&d, r#"{"type":"echo"}"#);
    assert_eq!(status, 201, "with its standby");
    standby.stop("immediate");
    let asked = Instant::now();
    let (status, body) = post(&d, r#"{"type":"echo"}"#);
    eprintln!("answered {status} after {:?}", asked.elapsed());
    assert_eq!(status, 503, "{body}");
    assert!(d.log_has("for the synchronous standby"));
    assert!(tasks_counter(&d, "cluster_write_errors") >= 1);
}

/// The task queue is the cluster's: its alert is judged by the leader
/// alone, so it fires once however many nodes there are.
#[test]
fn the_cluster_wide_queue_alert_fires_on_the_leader_alone() {
    let Some(pg) = pg::start() else { return };
    let extra = ["--alert-task-queue-depth", "5", "--alert-for", "1s"];
    let ds: Vec<Daemon> = ["q1", "q2"].map(|n| node(&pg, n, &extra)).into();
    wait_cluster(&ds[0], 2);
    for _ in 0..8 {
        submit(&ds[1], json!({"type": "nobody-takes-this"}));
    }
    let leader = ds[0].json("/api/nodes")["leader"]["node_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (lead, other) = if leader == "q1" {
        (&ds[0], &ds[1])
    } else {
        (&ds[1], &ds[0])
    };
    lead.wait_for("task_queue_depth firing on the leader", |d| {
        d.json("/api/alerts")["firing"].as_array().is_some_and(|a| {
            a.iter()
                .any(|x| x["labels"]["alertname"] == "task_queue_depth")
        })
    });
    other.wait_for("the other node sees the 8 tasks", |d| {
        d.json("/health")["tasks"]["queued"] == 8
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        other.json("/api/alerts")["firing"],
        json!([]),
        "judged once"
    );
}

#[test]
fn a_queue_paused_on_one_node_is_paused_on_every_node_until_resumed_on_another() {
    let Some(pg) = pg::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let h = handler(dir.path());
    let ds = two_nodes(&pg, &[]);
    let (status, _) = ds[0].post("/api/queues/held/pause", "", "");
    assert_eq!(status, 200);
    ds[1].wait_for("the pause on n2", |d| {
        d.json("/api/queues")["queues"][0]["paused"] == true
    });
    let _a = agent(&ds[1], "w2", &h);
    let held = submit(&ds[0], json!({"type": "held"}));
    let other = submit(&ds[0], json!({"type": "other"}));
    wait_state(&ds[0], &other, "succeeded");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(task(&ds[1], &held)["state"], "queued", "ran while paused");
    assert_eq!(
        pg.psql("SELECT paused FROM muster_queues WHERE kind = 'held'"),
        "t"
    );
    let (status, q) = ds[1].post("/api/queues/held/resume", "", "");
    assert_eq!((status, q["paused"].clone()), (200, json!(false)));
    for d in &ds {
        wait_state(d, &held, "succeeded");
        assert_eq!(d.json("/api/queues")["queues"], json!([]));
    }
}

/// `POST /api/tasks` to `d` with an `Idempotency-Key`: status and body.
fn keyed(d: &Daemon, key: &str, body: &str) -> (u16, Value) {
    d.post("/api/tasks", &format!("Idempotency-Key: {key}\r\n"), body)
}

#[test]
fn a_key_used_on_one_node_answers_on_every_node_and_a_race_makes_one_task() {
    let Some(pg) = pg::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let h = handler(dir.path());
    let extra = ["--idempotency-retention", "2s"];
    let ds = two_nodes(&pg, &extra);
    // A repeat on another node, whether its book has the task yet or the
    // database answers for it.
    let (status, first) = keyed(&ds[0], "k-0", r#"{"type":"held"}"#);
    assert_eq!(status, 201, "{first}");
    let (status, again) = keyed(&ds[1], "k-0", r#"{"type":"held"}"#);
    assert_eq!((status, &again["id"]), (200, &first["id"]), "{again}");
    // Both nodes at once, key by key: one task each, the same for both.
    for n in 1..=20 {
        let key = format!("k-{n}");
        let (a, b) = std::thread::scope(|s| {
            let [a, b] = [0, 1].map(|i| {
                let (d, key) = (&ds[i], &key);
                s.spawn(move || keyed(d, key, r#"{"type":"held"}"#))
            });
            (a.join().unwrap(), b.join().unwrap())
        });
        let mut statuses = [a.0, b.0];
        statuses.sort();
        assert_eq!(statuses, [200, 201], "{key}: {a:?} {b:?}");
        assert_eq!(a.1["id"], b.1["id"], "{key}");
    }
    assert_eq!(
        pg.psql("SELECT count(*) FROM muster_tasks WHERE idempotency_key LIKE 'k-%'"),
        "21"
    );
    let repeated: u64 = ds.iter().map(|d| tasks_counter(d, "repeated")).sum();
    assert_eq!(repeated, 21, "every repeat counted, on either path");
    // Unique keys, raced the same way: one task not ended per key, the
    // loser told which.
    let mut winners = Vec::new();
    for n in 0..10 {
        let body = format!(r#"{{"type":"held","unique_key":"u-{n}"}}"#);
        let (a, b) = std::thread::scope(|s| {
            let [a, b] = [0, 1].map(|i| {
                let (d, body) = (&ds[i], &body);
                s.spawn(move || post(d, body))
            });
            (a.join().unwrap(), b.join().unwrap())
        });
        let (won, lost) = if a.0 == 201 { (a, b) } else { (b, a) };
        assert_eq!((won.0, lost.0), (201, 409), "u-{n}: {won:?} {lost:?}");
        assert_eq!(lost.1["task_id"], won.1["id"], "u-{n}");
        winners.push(won.1["id"].as_str().unwrap().to_string());
    }
    // The key is free once its task has ended, on any node.
    let _a = agent(&ds[1], "w2", &h);
    wait_state(&ds[0], &winners[0], "succeeded");
    let (status, e) = post(&ds[0], r#"{"type":"held","unique_key":"u-0"}"#);
    assert_eq!(status, 201, "{e}");
    // Past idempotency_retention the leader frees the keys in the
    // database, on its first turn too: a new leader frees them at once.
    std::thread::sleep(Duration::from_millis(2100));
    drop(ds);
    let d = node(&pg, "n3", &extra);
    d.wait_for("n3 to lead", |d| {
        d.json("/api/nodes")["leader"]["node_id"] == "n3"
    });
    d.wait_for("the keys freed", |_| {
        pg.psql("SELECT count(*) FROM muster_tasks WHERE idempotency_key IS NOT NULL") == "0"
    });
    let (status, e) = keyed(&d, "k-0", r#"{"type":"held"}"#);
    assert_eq!(status, 201, "{e}");
}

#[test]
fn a_workers_progress_is_seen_on_every_node() {
    let Some(pg) = pg::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let h = handler(dir.path());
    let ds = two_nodes(&pg, &[]);
    let _a = agent(&ds[1], "w2", &h);
    let id = submit(&ds[0], json!({"type": "progress"}));
    for d in &ds {
        d.wait_for("the progress", |d| {
            let t = task(d, &id);
            t["state"] == "running" && t["progress"]["fraction"] == 0.5
        });
        assert_eq!(task(d, &id)["progress"]["message"], "halfway");
    }
    let t = wait_state(&ds[0], &id, "succeeded");
    assert_eq!(t["progress"]["fraction"], 0.5, "kept with the task: {t}");
}

#[test]
fn bulk_actions_on_one_node_hold_on_every_node() {
    let Some(pg) = pg::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let h = handler(dir.path());
    let ds = two_nodes(&pg, &[]);
    let ids: Vec<String> = (0..20)
        .map(|_| submit(&ds[0], json!({"type": "batch", "max_attempts": 1})))
        .collect();
    // A worker of n2 takes them all and is lost.
    {
        use std::io::Write;
        let mut s = ds[1].tcp();
        let hello = json!({"type": "hello", "worker_id": "raw", "capacity": 20});
        s.write_all(
            format!("{hello}\n{{\"type\":\"heartbeat\",\"status\":\"idle\"}}\n").as_bytes(),
        )
        .unwrap();
        let mut taken = 0;
        while taken < 20 {
            let l = support::read_line(&mut s).expect("a frame");
            taken += usize::from(l["type"] == "task");
        }
    }
    ds[0].wait_for("20 dead on n1", |d| tasks_counter(d, "dead") == 20);
    // Retried from n1 by a filter, run by a worker of n2.
    let (status, v) = ds[0].post(
        "/api/tasks/bulk",
        "",
        &json!({"action": "retry", "filter": {"state": "dead", "type": "batch"}}).to_string(),
    );
    assert_eq!((status, &v["changed"]), (200, &json!(20)), "{v}");
    let _a = agent(&ds[1], "w2", &h);
    for id in &ids {
        wait_state(&ds[1], id, "succeeded");
    }
    // Deleted from n2: gone on n1 too, and from the database a minute on.
    let (status, v) = ds[1].post(
        "/api/tasks/bulk",
        "",
        &json!({"action": "delete", "filter": {"type": "batch"}}).to_string(),
    );
    assert_eq!((status, &v["changed"]), (200, &json!(20)), "{v}");
    for d in &ds {
        d.wait_for("the deletes", |d| {
            d.get(&format!("/api/tasks/{}", ids[0])).0 == 404
        });
        assert_eq!(d.json("/api/tasks?type=batch")["tasks"], json!([]));
    }
    assert_eq!(
        pg.psql(
            "SELECT count(*) FROM muster_tasks WHERE kind = 'batch' AND deleted_at IS NOT NULL"
        ),
        "20"
    );
    // A node started now never shows them.
    let d3 = node(&pg, "n3", &[]);
    wait_cluster(&d3, 3);
    assert_eq!(d3.get(&format!("/api/tasks/{}", ids[0])).0, 404);
}

#[test]
fn dependencies_are_settled_by_the_leader_for_every_node() {
    let Some(pg) = pg::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let h = handler(dir.path());
    let ds = two_nodes(&pg, &[]);
    let _a = agent(&ds[1], "w2", &h);
    // A chain submitted on n1, run by n2's worker, in order.
    let a = submit(&ds[0], json!({"type": "slow"}));
    let b = submit(&ds[0], json!({"type": "step", "depends_on": [&a]}));
    let c = submit(&ds[1], json!({"type": "step", "depends_on": [&b]}));
    wait_state(&ds[1], &a, "running");
    for d in &ds {
        d.wait_for("c waiting", |d| task(d, &c)["state"] == "waiting");
    }
    for d in &ds {
        wait_state(d, &c, "succeeded");
    }
    let start = |id: &str| starts_of(dir.path(), id)[0].1;
    let a_end = task(&ds[0], &a)["finished_at"].as_u64().unwrap();
    let b_end = task(&ds[0], &b)["finished_at"].as_u64().unwrap();
    assert!(start(&b) >= a_end && start(&c) >= b_end, "out of order");
    // A dependency that fails for good fails its dependents in turn.
    let f = submit(&ds[1], json!({"type": "flaky", "max_attempts": 1}));
    let g = submit(&ds[0], json!({"type": "step", "depends_on": [&f]}));
    let k = submit(&ds[1], json!({"type": "step", "depends_on": [&g]}));
    for d in &ds {
        let t = wait_state(d, &k, "failed");
        assert_eq!(t["error"], format!("dependency failed: {g}"));
        assert_eq!(task(d, &g)["error"], format!("dependency failed: {f}"));
    }
    assert!(starts_of(dir.path(), &g).is_empty());
    // A task no node has: the database refuses it, and no 201 is sent.
    let (status, e) = post(
        &ds[0],
        &json!({"type": "step", "depends_on": ["ffffffffffffffff"]}).to_string(),
    );
    assert_eq!(status, 400, "{e}");
    assert_eq!(e["message"], "depends_on: no task ffffffffffffffff");
    assert_eq!(
        pg.psql("SELECT count(*) FROM muster_tasks WHERE kind = 'step'"),
        "4",
        "b, c, g and k"
    );
    assert_eq!(
        pg.psql(&format!(
            "SELECT state FROM muster_tasks WHERE id = {}",
            u64::from_str_radix(&k, 16).unwrap()
        )),
        "failed"
    );
}

/// (tasks, distinct ticks) schedule `name` made, as the database has them.
fn fired(pg: &pg::Pg, name: &str) -> (u64, u64) {
    let v = pg.psql(&format!(
        "SELECT count(*) || ' ' || count(DISTINCT task->'schedule'->>'tick') FROM muster_tasks
         WHERE task->'schedule'->>'name' = '{name}'"
    ));
    let (a, b) = v.split_once(' ').unwrap();
    (a.parse().unwrap(), b.parse().unwrap())
}

#[test]
fn a_schedule_fires_once_per_tick_on_three_nodes_and_through_a_leader_lost() {
    let Some(pg) = pg::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let h = handler(dir.path());
    let mut ds: Vec<Daemon> = ["n1", "n2", "n3"].map(|n| node(&pg, n, &[])).into();
    wait_cluster(&ds[0], 3);
    let _a = agent(&ds[2], "w3", &h);
    let body =
        json!({"name": "beat", "cron": "@every 2s", "task": {"type": "tick"}, "overlap": "allow"});
    let (status, s) = ds[1].post("/api/schedules", "", &body.to_string());
    assert_eq!(status, 201, "{s}");
    for d in &ds {
        d.wait_for("the schedule everywhere", |d| {
            d.get("/api/schedules/beat").0 == 200
        });
    }
    ds[0].wait_for("three ticks", |_| fired(&pg, "beat").1 >= 3);
    let (n, ticks) = fired(&pg, "beat");
    assert_eq!(n, ticks, "a tick fired twice");
    // The leader is killed: another takes over, and no tick fires twice.
    let leader = ds[0].json("/api/nodes")["leader"]["node_id"]
        .as_str()
        .unwrap()
        .to_string();
    let i = ["n1", "n2", "n3"]
        .iter()
        .position(|n| *n == leader)
        .unwrap();
    let dead = ds.remove(i);
    dead.signal(libc::SIGKILL);
    let before = fired(&pg, "beat").1;
    ds[0].wait_for("ticks from the new leader", |_| {
        fired(&pg, "beat").1 >= before + 2
    });
    let (n, ticks) = fired(&pg, "beat");
    assert_eq!(n, ticks, "a tick fired twice across leaders");
    let s = ds[0].json("/api/schedules/beat");
    assert!(s["fired"].as_u64().unwrap() >= ticks - 1, "{s}");
    // Deleted on one node: gone on every node, and no more ticks.
    let status = ds[1]
        .request(
            "DELETE /api/schedules/beat HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        )
        .0;
    assert_eq!(status, 200);
    for d in &ds {
        d.wait_for("the schedule gone", |d| {
            d.get("/api/schedules/beat").0 == 404
        });
    }
    let after = fired(&pg, "beat").1;
    std::thread::sleep(Duration::from_millis(4500));
    assert_eq!(fired(&pg, "beat").1, after, "fired after its deletion");
}

#[test]
fn a_concurrency_limit_holds_across_nodes() {
    let Some(pg) = pg::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let h = handler(dir.path());
    let ds = two_nodes(&pg, &[]);
    let body = json!({"type": "slow", "concurrency": 2}).to_string();
    let (status, _, _) = ds[0].request(&format!(
        "PUT /api/limits HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    assert_eq!(status, 200);
    ds[1].wait_for("the limit on n2", |d| {
        d.json("/api/limits")["limits"][0]["concurrency"] == 2
    });
    // Room for two on each node, both up before the tasks come: without a
    // cluster-wide count each node would run two, four at once.
    let _a = agent(&ds[0], "w1", &h);
    let _b = agent(&ds[1], "w2", &h);
    let ids: Vec<String> = (0..4)
        .map(|i| submit(&ds[i % 2], json!({"type": "slow"})))
        .collect();
    for id in &ids {
        wait_state(&ds[0], id, "succeeded");
    }
    let most = support::most_at_once(ids.iter().map(|id| {
        let end = task(&ds[0], id)["finished_at"].as_u64().unwrap();
        (starts_of(dir.path(), id)[0].1, end)
    }));
    assert_eq!(most, 2, "more than two at once across the nodes");
}

#[test]
fn a_long_task_stays_its_workers_on_every_node_while_the_worker_beats() {
    let Some(pg) = pg::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let h = handler(dir.path());
    // Deadlines far shorter than the task, and node leases renewed
    // meanwhile: only a lost worker or node could take it away.
    let extra = [
        "--heartbeat-interval",
        "300ms",
        "--inactivity-timeout",
        "1s",
        "--task-ack-timeout",
        "1s",
    ];
    let ds = two_nodes(&pg, &extra);
    let _a = agent(&ds[1], "w2", &h);
    let id = submit(&ds[0], json!({"type": "long", "max_attempts": 1}));
    wait_state(&ds[0], &id, "running");
    let until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < until {
        for d in &ds {
            let t = task(d, &id);
            assert_eq!(
                (
                    t["state"].as_str(),
                    t["attempt"].as_u64(),
                    t["worker_id"].as_str()
                ),
                (Some("running"), Some(1), Some("w2")),
                "{t}"
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let t = wait_state(&ds[0], &id, "succeeded");
    assert_eq!(t["attempt"], 1);
    assert_eq!(runs(dir.path()), vec![id.clone()], "it ran once");
    for d in &ds {
        assert_eq!(tasks_counter(d, "requeued"), 0);
    }
}

/// `/api/history` on every node counts the cluster's ends, each once,
/// whichever node's worker ran it, and a node started later reads them
/// from the database.
#[test]
fn every_node_charts_the_same_ends_of_the_last_hour() {
    let Some(pg) = pg::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let h = handler(dir.path());
    let ds = two_nodes(&pg, &[]);
    let _a = agent(&ds[1], "w2", &h);
    let ok: Vec<String> = (0..4)
        .map(|_| submit(&ds[0], json!({"type": "quick"})))
        .collect();
    let never = submit(&ds[1], json!({"type": "quick", "worker_id": "nobody"}));
    for id in &ok {
        wait_state(&ds[0], id, "succeeded");
    }
    assert_eq!(delete(&ds[0], &never).0, 200);
    let ends = |d: &Daemon| {
        let m = d.json("/api/history")["minutes"].clone();
        let sum = |k: &str| {
            m.as_array()
                .unwrap()
                .iter()
                .map(|x| x[k].as_u64().unwrap())
                .sum::<u64>()
        };
        (sum("succeeded"), sum("failed"), sum("cancelled"))
    };
    for d in &ds {
        d.wait_for("the ends counted", |d| ends(d) == (4, 0, 1));
    }
    let late = node(&pg, "n3", &[]);
    wait_cluster(&late, 3);
    late.wait_for("the ends read from the database", |d| ends(d) == (4, 0, 1));
    // The workers of every node are in each node's count.
    for d in [&ds[0], &late] {
        d.wait_for("w2 counted", |d| {
            d.json("/api/history")["minutes"][60]["workers"]["idle"] == 1
        });
    }
}

/// The backend of `d`'s connection `what` (`musterd {node} {what}`).
fn backend(pg: &pg::Pg, node: &str, what: &str) -> i32 {
    let pid = pg.psql(&format!(
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'musterd {node} {what}'"
    ));
    pid.parse()
        .unwrap_or_else(|_| panic!("no connection {node} {what}: {pid:?}"))
}

/// The backends that notified `muster_tasks` to `l` within `wait`.
fn notified_by(l: &mut postgres::Client, wait: Duration) -> Vec<i32> {
    use postgres::fallible_iterator::FallibleIterator;
    let mut by = Vec::new();
    let mut n = l.notifications();
    let mut it = n.timeout_iter(wait);
    while let Some(m) = it.next().unwrap() {
        if m.channel() == "muster_tasks" {
            by.push(m.process_id());
        }
    }
    by
}

/// A node's writer commits without notifying (a notifying commit holds the
/// server's one notification lock through its flush, so every node's
/// writer would commit one at a time), and the node announces its commits
/// after them from a connection of its own; another node sees the task.
/// A node does not read back what it inserted, and a node restarted under
/// the same id reads what its earlier run submitted.
#[test]
fn commits_are_announced_after_them_and_a_restarted_node_reads_its_earlier_tasks() {
    let Some(pg) = pg::start() else { return };
    let mut ds = two_nodes(&pg, &[]);
    let mut l = postgres::Client::connect(&pg.uri(), postgres::NoTls).unwrap();
    l.batch_execute("LISTEN muster_tasks").unwrap();
    // The triggers, directly: quiet for a session that set muster.quiet.
    let mut quiet = pg
        .uri()
        .parse::<postgres::Config>()
        .unwrap()
        .options("-c muster.quiet=on")
        .connect(postgres::NoTls)
        .unwrap();
    let mut plain = postgres::Client::connect(&pg.uri(), postgres::NoTls).unwrap();
    let pid = |c: &mut postgres::Client| {
        c.query_one("SELECT pg_backend_pid()", &[])
            .unwrap()
            .get::<_, i32>(0)
    };
    let (quiet_pid, plain_pid) = (pid(&mut quiet), pid(&mut plain));
    let touch = "UPDATE muster_tasks SET rev = rev WHERE false";
    quiet.batch_execute(touch).unwrap();
    plain.batch_execute(touch).unwrap();
    let by = notified_by(&mut l, Duration::from_millis(500));
    assert!(
        by.contains(&plain_pid),
        "a plain session's change notifies: {by:?}"
    );
    assert!(
        !by.contains(&quiet_pid),
        "a quiet session's change does not: {by:?}"
    );

    // Both connections are made at the first use.
    let id = submit(&ds[0], json!({"type": "announced"}));
    let by = notified_by(&mut l, Duration::from_millis(1500));
    let writer = backend(&pg, "n1", "tasks");
    let notifier = backend(&pg, "n1", "notify");
    assert!(
        by.contains(&notifier),
        "n1's notifier announced the submission: {by:?}"
    );
    assert!(
        !by.contains(&writer),
        "n1's writer committed quietly: {by:?}"
    );
    wait_state(&ds[1], &id, "queued");
    assert_eq!(
        pg.psql(&format!(
            "SELECT rev, inserted_by IS NOT NULL FROM muster_tasks WHERE id = x'{id}'::bigint"
        )),
        "1|t",
        "the row as n1 inserted it"
    );
    assert_eq!(task(&ds[0], &id)["state"], "queued");

    // n1 again, a new incarnation: the row its earlier run inserted is read.
    let (st, _) = ds.remove(0).stop();
    assert!(st.success());
    let n1 = node(&pg, "n1", &[]);
    n1.wait_for("the task of n1's earlier run", |d| {
        d.get(&format!("/api/tasks/{id}")).0 == 200
    });
    assert_eq!(task(&n1, &id)["type"], "announced");
}
