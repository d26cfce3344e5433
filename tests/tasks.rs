//! Tasks end to end: a real daemon, real agents running a real handler
//! script, over real sockets; crashes of the agent and of the daemon.

mod support;

use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::{Daemon, read_line, starts_of};

const MUSTER: &str = env!("CARGO_BIN_EXE_muster");

/// A handler: notes each start in `starts` beside it (task, attempt,
/// Unix ms), prints its task and payload, then by type: `fail` exits 3,
/// `flaky` exits 4 before its third attempt, `fixable` exits 5 until a
/// file `fixed` is beside it, `trace` answers its trace context,
/// `sleep61` to `sleep63` sleep a minute (one
/// name per test), `slow` sleeps 2 s, `long` reports its progress around
/// 8 s of sleep; the rest print a JSON result.
fn handler(dir: &Path) -> PathBuf {
    let path = dir.join("handler.sh");
    std::fs::write(
        &path,
        r#"#!/bin/sh
here=$(dirname "$0")
echo "$MUSTER_TASK_ID $MUSTER_TASK_ATTEMPT $(date +%s%3N)" >>"$here/starts"
payload=$(cat)
echo "task $MUSTER_TASK_ID attempt $MUSTER_TASK_ATTEMPT"
echo "payload $payload" >&2
case "$MUSTER_TASK_TYPE" in
  fail) exit 3 ;;
  flaky) [ "$MUSTER_TASK_ATTEMPT" -ge 3 ] || exit 4 ;;
  fixable) [ -e "$here/fixed" ] || exit 5 ;;
  trace) echo "{\"traceparent\":\"$TRACEPARENT\",\"tracestate\":\"$TRACESTATE\"}"; exit 0 ;;
  sleep61) sleep 61 ;;
  sleep62) sleep 62 ;;
  sleep63) sleep 63 ;;
  slow) sleep 2 ;;
  long) echo "::progress 0.5 halfway"; sleep 8; echo "::progress 100% done" ;;
esac
echo '{"done":true}'
"#,
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn agent(d: &Daemon, id: &str, handler: &Path) -> Agent {
    Agent(
        Command::new(MUSTER)
            .args([
                "agent",
                "--tasks",
                "--capacity",
                "2",
                "--interval",
                "300ms",
                "--id",
                id,
            ])
            .args(["--heartbeat-addr", &d.heartbeat.to_string(), "--"])
            .arg(handler)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

fn post(d: &Daemon, body: &str) -> (u16, Value) {
    d.post("/api/tasks", "", body)
}

fn submit(d: &Daemon, body: Value) -> String {
    let (status, t) = post(d, &body.to_string());
    assert_eq!(status, 201, "{t}");
    t["id"].as_str().unwrap().to_string()
}

fn task(d: &Daemon, id: &str) -> Value {
    d.json(&format!("/api/tasks/{id}"))
}

fn wait_state(d: &Daemon, id: &str, state: &str) -> Value {
    d.wait_for(&format!("task {id} {state}"), |d| {
        task(d, id)["state"] == state
    });
    task(d, id)
}

fn worker_up(d: &Daemon, id: &str) {
    d.wait_for(&format!("{id} beating"), |d| {
        d.get(&format!("/api/workers/{id}")).1["status"] == "idle"
    });
}

#[test]
fn an_agent_runs_tasks_reports_logs_and_is_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let h = handler(dir.path());
    let d = Daemon::start(&["--state-dir", dir.path().to_str().unwrap()]);
    let _a = agent(&d, "ag1", &h);
    worker_up(&d, "ag1");
    let ok = submit(&d, json!({"type": "echo", "payload": {"n": 7}}));
    let t = wait_state(&d, &ok, "succeeded");
    assert_eq!(
        (
            t["result"].clone(),
            t["exit_code"].clone(),
            t["worker_id"].clone()
        ),
        (json!({"done": true}), json!(0), json!("ag1"))
    );
    let (_, _, logs) = d.request(&format!(
        "GET /api/tasks/{ok}/logs HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    ));
    let logs = String::from_utf8(logs).unwrap();
    assert!(logs.contains(&format!("task {ok} attempt 1")), "{logs}");
    assert!(logs.contains("payload {\"n\":7}"), "{logs}");
    // One attempt: dead at its first failure.
    let bad = submit(&d, json!({"type": "fail", "max_attempts": 1}));
    let t = wait_state(&d, &bad, "dead");
    assert_eq!(
        (t["exit_code"].clone(), t["error"].clone()),
        (json!(3), json!("exit status 3"))
    );
    // Finished tasks are runs of their worker (applied by its thread).
    d.wait_for("two runs", |d| {
        d.json("/api/workers/ag1/metrics")["total_runs"] == 2
    });
    assert_eq!(d.json("/api/workers/ag1/metrics")["failed"], 1);
    let listed = d.json("/api/workers/ag1/tasks");
    assert_eq!(listed["tasks"].as_array().unwrap().len(), 2);

    let long = submit(&d, json!({"type": "sleep61"}));
    wait_state(&d, &long, "running");
    let pid = |d: &Daemon| {
        d.json("/api/workers/ag1")["running_tasks"]
            .as_array()
            .map_or(0, |a| a.len())
    };
    d.wait_for("the heartbeat shows the task", |d| pid(d) == 1);
    let (status, _, _) = d.request(&format!(
        "DELETE /api/tasks/{long} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    ));
    assert_eq!(status, 200);
    let t = wait_state(&d, &long, "cancelled");
    assert!(t["cancel_requested_at"].is_u64());
    // The handler's process group is gone.
    let left = Command::new("pgrep")
        .args(["-f", "sleep 61"])
        .output()
        .unwrap();
    assert!(left.stdout.is_empty(), "the handler was killed");
    // Filters.
    let page = d.json("/api/tasks?state=succeeded");
    assert_eq!(page["tasks"].as_array().unwrap().len(), 1);
    let page = d.json("/api/tasks?limit=1");
    assert_eq!(page["tasks"].as_array().unwrap().len(), 1);
    let next = page["next_after"].as_str().unwrap();
    let page2 = d.json(&format!("/api/tasks?limit=5&after={next}"));
    assert_eq!(page2["tasks"].as_array().unwrap().len(), 2);
}

#[test]
fn a_killed_agent_loses_its_tasks_to_another() {
    let dir = tempfile::tempdir().unwrap();
    let h = handler(dir.path());
    let d = Daemon::start(&[
        "--state-dir",
        dir.path().to_str().unwrap(),
        "--heartbeat-interval",
        "300ms",
        "--inactivity-timeout",
        "1s",
    ]);
    let mut a1 = agent(&d, "ag1", &h);
    worker_up(&d, "ag1");
    let once = submit(
        &d,
        json!({"type": "sleep62", "max_attempts": 1, "worker_id": "ag1"}),
    );
    let twice = submit(&d, json!({"type": "slow"}));
    wait_state(&d, &once, "running");
    wait_state(&d, &twice, "running");
    let _ = a1.0.kill();
    let _ = a1.0.wait();
    // Its last attempt: dead, worker lost. The other goes back to the queue.
    let t = wait_state(&d, &once, "dead");
    assert_eq!(t["error"], "worker lost");
    let t = wait_state(&d, &twice, "queued");
    assert_eq!(t["attempt"], 2);
    let _a2 = agent(&d, "ag2", &h);
    let t = wait_state(&d, &twice, "succeeded");
    assert_eq!(
        (t["worker_id"].clone(), t["attempt"].clone()),
        (json!("ag2"), json!(2))
    );
    let h = d.json("/health");
    assert_eq!(
        (
            h["tasks"]["requeued"].as_u64(),
            h["tasks"]["worker_lost"].as_u64()
        ),
        (Some(1), Some(1))
    );
    // A handler outlives an agent killed with SIGKILL: end it here.
    let _ = Command::new("pkill").args(["-f", "sleep 62"]).status();
}

#[test]
fn every_acknowledged_task_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&["--state-dir", dir.path().to_str().unwrap()]);
    let addr = d.http;
    // 32 submitters until the daemon dies under them.
    let submitters: Vec<_> = (0..32)
        .map(|c| {
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                for i in 0.. {
                    let body = format!(r#"{{"type":"load","payload":{{"c":{c},"i":{i}}}}}"#);
                    let Ok(mut s) = TcpStream::connect(addr) else { break };
                    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                    let req = format!("POST /api/tasks HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
                    if s.write_all(req.as_bytes()).is_err() {
                        break;
                    }
                    let mut buf = Vec::new();
                    let _ = s.read_to_end(&mut buf);
                    let (status, _, b) = support::parse_response(&buf);
                    if status != 201 {
                        break;
                    }
                    let v: Value = serde_json::from_slice(&b).unwrap();
                    acked.push(v["id"].as_str().unwrap().to_string());
                }
                acked
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    d.signal(libc::SIGKILL);
    drop(d);
    let acked: Vec<String> = submitters
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert!(acked.len() > 100, "only {} acknowledged", acked.len());
    let d = Daemon::start(&[
        "--state-dir",
        dir.path().to_str().unwrap(),
        "--max-tasks",
        "1000000",
    ]);
    for id in &acked {
        let (status, t) = d.get(&format!("/api/tasks/{id}"));
        assert_eq!((status, t["state"].as_str()), (200, Some("queued")), "{id}");
    }
    eprintln!("{} acknowledged tasks all back after kill -9", acked.len());
}

#[test]
fn a_damaged_journal_is_cut_or_skipped_and_the_daemon_starts() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&["--state-dir", dir.path().to_str().unwrap()]);
    let ids: Vec<String> = (0..3)
        .map(|i| submit(&d, json!({"type": "t", "payload": i})))
        .collect();
    assert!(d.stop().0.success());
    let path = dir.path().join("tasks.journal");
    let whole = std::fs::read(&path).unwrap();
    // Torn: the last record cut in the middle.
    std::fs::write(&path, &whole[..whole.len() - 10]).unwrap();
    let d = Daemon::start(&["--state-dir", dir.path().to_str().unwrap()]);
    assert!(d.log_has("torn or damaged tail"));
    assert_eq!(d.get(&format!("/api/tasks/{}", ids[0])).0, 200);
    assert_eq!(d.get(&format!("/api/tasks/{}", ids[2])).0, 404);
    assert_eq!(d.json("/health")["tasks"]["journal_cut"], 1);
    let after_cut = submit(&d, json!({"type": "t"}));
    assert!(d.stop().0.success());
    // A flipped byte inside the first record: that record is skipped.
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[20] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let d = Daemon::start(&["--state-dir", dir.path().to_str().unwrap()]);
    assert!(d.log_has("damaged records skipped"));
    assert_eq!(d.get(&format!("/api/tasks/{}", ids[0])).0, 404);
    assert_eq!(d.get(&format!("/api/tasks/{}", ids[1])).0, 200);
    assert_eq!(d.get(&format!("/api/tasks/{after_cut}")).0, 200);
}

#[test]
fn bad_input_gets_clear_errors() {
    let d = Daemon::start(&["--max-task-bytes", "1KiB", "--max-tasks", "2"]);
    for (body, field) in [
        ("{", "body"),
        (r#"{"payload":1}"#, "type"),
        (r#"{"type":"a","priority":"x"}"#, "priority"),
        (r#"{"type":"a","worker_id":"no way"}"#, "worker_id"),
    ] {
        let (status, v) = post(&d, body);
        assert_eq!(status, 400, "{body}");
        assert!(v["message"].as_str().unwrap().starts_with(field), "{v}");
    }
    let big = format!(r#"{{"type":"a","payload":"{}"}}"#, "x".repeat(2000));
    assert_eq!(post(&d, &big).0, 413);
    assert_eq!(d.get("/api/tasks/ffffffffffffffff").0, 404);
    assert_eq!(d.get("/api/tasks/bad%20id").0, 400);
    assert_eq!(d.get("/api/tasks?state=bogus").0, 400);
    submit(&d, json!({"type": "a"}));
    submit(&d, json!({"type": "a"}));
    assert_eq!(post(&d, r#"{"type":"a"}"#).0, 503, "max_tasks unfinished");
    // Updates for tasks the worker does not hold, and task frames over UDP.
    let mut s = d.tcp();
    s.write_all(b"{\"type\":\"hello\",\"worker_id\":\"w1\",\"capacity\":1}\n")
        .unwrap();
    assert_eq!(read_line(&mut s).unwrap()["type"], "welcome");
    s.write_all(b"{\"type\":\"task_update\",\"task_id\":\"nope\",\"state\":\"succeeded\"}\n")
        .unwrap();
    // The worker may first be offered a queued task: skip to the error.
    let err = loop {
        let l = read_line(&mut s).unwrap();
        if l["type"] == "error" {
            break l;
        }
    };
    assert_eq!(err["code"], "task_not_held");
    d.udp(br#"{"type":"task_update","task_id":"x","state":"running"}"#);
    d.wait_for("tcp_only", |d| d.rejected("tcp_only") == 1);
    let h = d.json("/health");
    assert_eq!(h["tasks"]["refused"], 6);
    assert_eq!(h["tasks"]["updates_refused"], 1);
}

#[test]
fn the_command_line_submits_waits_and_reads_logs() {
    let dir = tempfile::tempdir().unwrap();
    let h = handler(dir.path());
    let d = Daemon::start(&[]);
    let _a = agent(&d, "ag1", &h);
    worker_up(&d, "ag1");
    let muster = |args: &[&str]| {
        Command::new(MUSTER)
            .args(["--url", &format!("http://{}", d.http)])
            .args(args)
            .env_remove("MUSTER_TOKEN_FILE")
            .output()
            .unwrap()
    };
    let out = muster(&[
        "task",
        "submit",
        "echo",
        "--payload",
        r#"{"n":1}"#,
        "--wait",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let id = text.lines().next().unwrap().to_string();
    assert_eq!(text.lines().nth(1), Some(r#"{"done":true}"#));
    let out = muster(&["task", "submit", "fail", "--max-attempts", "1", "--wait"]);
    assert_eq!(out.status.code(), Some(3), "dead");
    let out = muster(&["task", "logs", &id]);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("task {id} attempt 1")));
    let out = muster(&["tasks", "--state", "dead", "--json"]);
    let dead: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(dead.as_array().unwrap().len(), 1);
    // A dead task comes back as a fresh cycle.
    let dead_id = dead[0]["id"].as_str().unwrap();
    let out = muster(&["task", "retry", dead_id]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        muster(&["task", "retry", &id]).status.code(),
        Some(1),
        "a success is not retried"
    );
    let out = muster(&["task", "submit", "sleep63", "--timeout-ms", "500", "--wait"]);
    assert_eq!(out.status.code(), Some(5), "timed out");
    assert_eq!(
        muster(&["task", "show", "ffffffffffffffff"]).status.code(),
        Some(4)
    );
    assert_eq!(muster(&["task", "submit"]).status.code(), Some(2));
}

#[test]
fn the_journal_is_compacted_and_still_replays() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--state-dir",
        dir.path().to_str().unwrap(),
        "--task-retention",
        "1s",
        "--max-task-bytes",
        "1MiB",
    ];
    let d = Daemon::start(&args);
    let big = "x".repeat(60_000);
    for _ in 0..400 {
        let id = submit(&d, json!({"type": "big", "payload": big}));
        let (status, _, _) = d.request(&format!(
            "DELETE /api/tasks/{id} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        ));
        assert_eq!(status, 200);
    }
    let keep = submit(&d, json!({"type": "keep", "payload": {"n": 1}}));
    let journal = dir.path().join("tasks.journal");
    let written = d.json("/health")["tasks"]["journal_bytes"]
        .as_u64()
        .unwrap();
    // Every payload was written (a record each, and its cancel's).
    assert!(written >= 400 * 60_000, "{written} bytes written");
    // Past retention the cancelled ones are forgotten; then compaction.
    d.wait_for("compaction", |d| d.log_has("task journal compacted"));
    d.wait_for("the forgotten gone", |d| {
        d.json("/api/tasks")["tasks"].as_array().unwrap().len() == 1
    });
    // Journals under 8 MiB are left alone; this one never grows past that
    // for long, whatever was written.
    d.wait_for("a compacted journal", |_| {
        std::fs::metadata(&journal).unwrap().len() <= 8 << 20
    });
    let after = submit(&d, json!({"type": "after"}));
    assert!(d.stop().0.success());
    let d = Daemon::start(&args);
    assert_eq!(task(&d, &keep)["payload"], json!({"n": 1}));
    assert_eq!(task(&d, &after)["state"], "queued");
    assert_eq!(d.json("/api/tasks")["tasks"].as_array().unwrap().len(), 2);
}

#[test]
fn the_task_stream_sends_a_snapshot_then_changes() {
    let d = Daemon::start(&[]);
    let first = submit(&d, json!({"type": "a"}));
    let url = format!("ws://{}/ws/tasks", d.http);
    let (mut ws, _) = tungstenite::connect(url.as_str()).unwrap();
    let next = |ws: &mut tungstenite::WebSocket<_>| -> Value {
        let m = ws.read().unwrap();
        serde_json::from_str(m.to_text().unwrap()).unwrap()
    };
    let snap = next(&mut ws);
    assert_eq!(snap["type"], "snapshot");
    assert_eq!(snap["tasks"][0]["id"], first.as_str());
    let second = submit(&d, json!({"type": "b"}));
    let up = next(&mut ws);
    assert_eq!(up["type"], "update");
    assert_eq!(up["tasks"][0]["id"], second.as_str());
    let (status, _, _) = d.request(&format!(
        "DELETE /api/tasks/{first} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    ));
    assert_eq!(status, 200);
    let up = next(&mut ws);
    assert_eq!(
        (
            up["tasks"][0]["id"].as_str(),
            up["tasks"][0]["state"].as_str()
        ),
        (Some(first.as_str()), Some("cancelled"))
    );
}

/// Tasks past their retention are forgotten once and leave nothing
/// behind: with every task gone, an idle daemon writes nothing more to its
/// journal (each forgotten task was written again on every scheduler turn,
/// and kept in memory, for as long as the daemon ran).
#[test]
fn forgotten_tasks_are_written_once_and_an_idle_journal_stays_still() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&[
        "--state-dir",
        dir.path().to_str().unwrap(),
        "--task-retention",
        "1s",
    ]);
    for _ in 0..200 {
        let id = submit(&d, json!({"type": "nobody-takes-this"}));
        let (status, _, _) = d.request(&format!(
            "DELETE /api/tasks/{id} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        ));
        assert_eq!(status, 200);
    }
    d.wait_for("every task forgotten", |d| {
        d.json("/api/tasks")["tasks"].as_array().unwrap().is_empty()
    });
    let written = |d: &Daemon| {
        d.json("/health")["tasks"]["journal_bytes"]
            .as_u64()
            .unwrap()
    };
    std::thread::sleep(Duration::from_millis(500));
    let before = written(&d);
    // Forty scheduler turns.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        written(&d),
        before,
        "an idle daemon kept writing its journal"
    );
    assert!(d.stop().0.success());
}

fn retry(d: &Daemon, id: &str) -> (u16, Value) {
    d.post(&format!("/api/tasks/{id}/retry"), "", "")
}

#[test]
fn a_failing_handler_is_retried_after_each_backoff_and_a_dead_task_retried_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let h = handler(dir.path());
    let d = Daemon::start(&[
        "--state-dir",
        dir.path().to_str().unwrap(),
        "--retry-backoff-base",
        "400ms",
    ]);
    let _a = agent(&d, "ag1", &h);
    let flaky = submit(&d, json!({"type": "flaky"}));
    let t = wait_state(&d, &flaky, "succeeded");
    assert_eq!(t["attempt"], 3);
    let runs = starts_of(dir.path(), &flaky);
    assert_eq!(runs.iter().map(|r| r.0).collect::<Vec<_>>(), [1, 2, 3]);
    // Each attempt waited at least its backoff after the failure before
    // it, which came after that attempt's start: 400 ms, then 800 ms.
    assert!(runs[1].1 - runs[0].1 >= 400, "{runs:?}");
    assert!(runs[2].1 - runs[1].1 >= 800, "{runs:?}");
    // Dead after its last attempt, listed as dead, then retried by hand.
    let fixable = submit(
        &d,
        json!({"type": "fixable", "retry": {"max_attempts": 2, "backoff_base_ms": 100}}),
    );
    let t = wait_state(&d, &fixable, "dead");
    assert_eq!(
        (t["attempt"].clone(), t["exit_code"].clone()),
        (json!(2), json!(5))
    );
    let listed = d.json("/api/tasks?state=dead");
    assert_eq!(listed["tasks"][0]["id"], fixable.as_str());
    assert_eq!(d.json("/health")["tasks"]["dead"], 1, "counted");
    std::fs::write(dir.path().join("fixed"), "").unwrap();
    let (status, t) = retry(&d, &fixable);
    assert_eq!((status, t["attempt"].clone()), (200, json!(1)), "{t}");
    let t = wait_state(&d, &fixable, "succeeded");
    assert_eq!(
        (t["attempt"].clone(), t["error"].clone()),
        (json!(1), Value::Null)
    );
    let (status, t) = retry(&d, &fixable);
    assert_eq!((status, t["error"].clone()), (409, json!("not_retryable")));
    assert_eq!(retry(&d, "00000000000000ff").0, 404);
}

#[test]
fn a_delayed_task_never_starts_before_its_time_also_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let h = handler(dir.path());
    let state = dir.path().join("state");
    let args = ["--state-dir", state.to_str().unwrap()];
    let d = Daemon::start(&args);
    let (status, t) = post(&d, r#"{"type":"later","delay_ms":2000}"#);
    assert_eq!(
        (status, t["state"].clone()),
        (201, json!("scheduled")),
        "{t}"
    );
    let id = t["id"].as_str().unwrap().to_string();
    let run_at = t["run_at"].as_u64().unwrap();
    let at = rfc3339(run_at + 1500);
    let (status, t) = post(&d, &format!(r#"{{"type":"later","run_at":"{at}"}}"#));
    assert_eq!(
        (status, t["run_at"].clone()),
        (201, json!(run_at + 1500)),
        "{t}"
    );
    let second = t["id"].as_str().unwrap().to_string();
    for (body, field) in [
        (r#"{"type":"x","delay_ms":-5}"#, "delay_ms"),
        (r#"{"type":"x","run_at":"soon"}"#, "run_at"),
    ] {
        let (status, t) = post(&d, body);
        assert_eq!(status, 400, "{body}");
        assert!(t["message"].as_str().unwrap().starts_with(field), "{t}");
    }
    // A restart while they wait: still scheduled after it.
    drop(d);
    let d = Daemon::start(&args);
    assert_eq!(task(&d, &id)["state"], "scheduled");
    let _a = agent(&d, "ag1", &h);
    wait_state(&d, &id, "succeeded");
    wait_state(&d, &second, "succeeded");
    let first = starts_of(dir.path(), &id);
    let later = starts_of(dir.path(), &second);
    assert!(
        first[0].1 >= run_at,
        "started {} before {run_at}",
        first[0].1
    );
    assert!(later[0].1 >= run_at + 1500, "{later:?}");
}

/// `ms` (Unix ms) as RFC 3339 in UTC, for a submission's `run_at`.
fn rfc3339(ms: u64) -> String {
    let out = Command::new("date")
        .args(["-u", "-d", &format!("@{}.{:03}", ms / 1000, ms % 1000)])
        .arg("+%Y-%m-%dT%H:%M:%S.%3NZ")
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn trace_context_goes_from_the_submission_to_the_handler_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let h = handler(dir.path());
    let d = Daemon::start(&[]);
    let _a = agent(&d, "ag1", &h);
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let headers = format!("traceparent: {tp}\r\ntracestate: congo=t61rcWkgMzE\r\n");
    let (status, t) = d.post("/api/tasks", &headers, r#"{"type":"trace"}"#);
    assert_eq!((status, t["traceparent"].clone()), (201, json!(tp)), "{t}");
    let id = t["id"].as_str().unwrap().to_string();
    let t = wait_state(&d, &id, "succeeded");
    assert_eq!(
        t["result"],
        json!({"traceparent": tp, "tracestate": "congo=t61rcWkgMzE"})
    );
    assert_eq!(t["tracestate"], "congo=t61rcWkgMzE");
    // One that cannot be parsed is ignored with its tracestate (W3C Trace
    // Context, 4.3): the task is taken, without a trace.
    for bad in [
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        "xyz",
    ] {
        let headers = format!("traceparent: {bad}\r\ntracestate: a=b\r\n");
        let (status, t) = d.post("/api/tasks", &headers, r#"{"type":"trace"}"#);
        assert_eq!(status, 201, "{bad}: {t}");
        assert!(
            t.get("traceparent").is_none() && t.get("tracestate").is_none(),
            "{bad}: {t}"
        );
        let t = wait_state(&d, t["id"].as_str().unwrap(), "succeeded");
        assert_eq!(
            t["result"],
            json!({"traceparent": "", "tracestate": ""}),
            "{bad}"
        );
    }
    // A later version's longer form is taken as its version-00 part.
    let newer = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes-next";
    let (_, t) = d.post(
        "/api/tasks",
        &format!("traceparent: {newer}\r\n"),
        r#"{"type":"x"}"#,
    );
    assert_eq!(t["traceparent"], &newer[..55]);
}

#[test]
fn a_paused_queue_dispatches_nothing_through_a_restart_until_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let h = handler(dir.path());
    let state = dir.path().join("state");
    let args = ["--state-dir", state.to_str().unwrap()];
    let d = Daemon::start(&args);
    let (status, q) = d.post("/api/queues/held/pause", "", "");
    assert_eq!(
        (status, q["type"].clone(), q["paused"].clone()),
        (200, json!("held"), json!(true)),
        "{q}"
    );
    let _a = agent(&d, "ag1", &h);
    let held: Vec<String> = (0..2)
        .map(|_| submit(&d, json!({"type": "held"})))
        .collect();
    // Tasks aimed at the worker are paused by their type too.
    let aimed = submit(&d, json!({"type": "held", "worker_id": "ag1"}));
    let other = submit(&d, json!({"type": "other"}));
    wait_state(&d, &other, "succeeded");
    std::thread::sleep(Duration::from_millis(700));
    for id in held.iter().chain([&aimed]) {
        assert_eq!(task(&d, id)["state"], "queued", "{id} ran while paused");
    }
    let queues = d.json("/api/queues")["queues"].clone();
    assert_eq!(
        queues,
        json!([{"type": "held", "paused": true, "queued": 2}]),
        "the aimed task waits in its worker's queue"
    );
    // A restart keeps the pause.
    drop(_a);
    drop(d);
    let d = Daemon::start(&args);
    assert_eq!(d.json("/api/queues")["queues"][0]["paused"], true);
    let _a = agent(&d, "ag1", &h);
    worker_up(&d, "ag1");
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(task(&d, &held[0])["state"], "queued");
    // The command line resumes it, and every task runs.
    let out = Command::new(MUSTER)
        .args([
            "--url",
            &format!("http://{}", d.http),
            "queue",
            "resume",
            "held",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("held resumed"));
    for id in held.iter().chain([&aimed]) {
        wait_state(&d, id, "succeeded");
    }
    let out = Command::new(MUSTER)
        .args(["--url", &format!("http://{}", d.http), "queues"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("held"));
    // Bad input.
    assert_eq!(d.post("/api/queues/%ZZ/pause", "", "").0, 400);
    let long = "a".repeat(129);
    assert_eq!(d.post(&format!("/api/queues/{long}/pause"), "", "").0, 400);
    assert_eq!(d.get("/api/queues/held/pause").0, 405);
}

/// `POST /api/tasks` with an `Idempotency-Key`: status, head and body.
fn keyed(d: &Daemon, key: &str, body: &str) -> (u16, String, Value) {
    let (status, head, b) = d.request(&format!(
        "POST /api/tasks HTTP/1.1\r\nHost: localhost\r\nIdempotency-Key: {key}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    (
        status,
        head,
        serde_json::from_slice(&b).unwrap_or(Value::Null),
    )
}

#[test]
fn a_repeated_submission_gets_its_first_task_and_a_unique_key_one_live_task() {
    let dir = tempfile::tempdir().unwrap();
    let h = handler(dir.path());
    let state = dir.path().join("state");
    let args = [
        "--state-dir",
        state.to_str().unwrap(),
        "--idempotency-retention",
        "3s",
    ];
    let d = Daemon::start(&args);
    // A client retries a POST it never saw answered: one task, and the
    // repeat says so, whatever its body.
    let (status, _, first) = keyed(&d, "order-17", r#"{"type":"held"}"#);
    assert_eq!(status, 201, "{first}");
    let (status, head, again) = keyed(&d, "order-17", r#"{"type":"other"}"#);
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["id"], first["id"]);
    assert_eq!(again["type"], "held");
    assert!(
        head.to_ascii_lowercase()
            .contains("idempotent-replayed: true"),
        "{head}"
    );
    assert!(head.contains(&format!("/api/tasks/{}", first["id"].as_str().unwrap())));
    assert_eq!(d.json("/health")["tasks"]["repeated"], 1);
    // Bad keys.
    let (status, _, e) = keyed(&d, &"k".repeat(256), r#"{"type":"held"}"#);
    assert_eq!(
        (status, e["error"].as_str()),
        (400, Some("bad_task")),
        "{e}"
    );
    let (status, e) = d.post(
        "/api/tasks",
        "Idempotency-Key: a\r\nIdempotency-Key: b\r\n",
        r#"{"type":"held"}"#,
    );
    assert_eq!(status, 400, "{e}");
    // Unique keys: one task not ended per key.
    let (status, u1) = post(&d, r#"{"type":"slow","unique_key":"report:acme"}"#);
    assert_eq!(status, 201, "{u1}");
    let (status, e) = post(&d, r#"{"type":"slow","unique_key":"report:acme"}"#);
    assert_eq!(status, 409, "{e}");
    assert_eq!(e["error"], "unique_key_taken");
    assert_eq!(e["task_id"], u1["id"]);
    let (status, e) = post(
        &d,
        &format!(r#"{{"type":"slow","unique_key":"{}"}}"#, "u".repeat(256)),
    );
    assert_eq!(
        (status, e["error"].as_str()),
        (400, Some("bad_task")),
        "{e}"
    );
    // Across a restart, both kinds of key hold.
    drop(d);
    let d = Daemon::start(&args);
    let (status, _, again) = keyed(&d, "order-17", r#"{"type":"held"}"#);
    assert_eq!((status, &again["id"]), (200, &first["id"]), "{again}");
    let (status, e) = post(&d, r#"{"type":"slow","unique_key":"report:acme"}"#);
    assert_eq!((status, &e["task_id"]), (409, &u1["id"]), "{e}");
    // Once its task has ended, a unique key is free; a failed task with
    // the key is not retried while another holds it.
    let _a = agent(&d, "ag1", &h);
    let u1 = u1["id"].as_str().unwrap();
    wait_state(&d, u1, "succeeded");
    let failing = submit(
        &d,
        json!({"type": "fail", "unique_key": "nightly", "max_attempts": 1}),
    );
    wait_state(&d, &failing, "dead");
    let (status, u2) = post(&d, r#"{"type":"slow","unique_key":"report:acme"}"#);
    assert_eq!(status, 201, "{u2}");
    let holder = submit(&d, json!({"type": "slow", "unique_key": "nightly"}));
    let (status, e) = retry(&d, &failing);
    assert_eq!(
        (status, &e["error"]),
        (409, &json!("unique_key_taken")),
        "{e}"
    );
    assert_eq!(e["task_id"], holder.as_str());
    wait_state(&d, &holder, "succeeded");
    let (status, e) = retry(&d, &failing);
    assert_eq!(status, 200, "{e}");
    // Past idempotency_retention the key makes a new task.
    d.wait_for("the key to lapse", |d| {
        keyed(d, "order-17", r#"{"type":"held"}"#).0 == 201
    });
}

#[test]
fn a_long_task_stays_with_its_beating_worker_and_shows_its_progress() {
    let dir = tempfile::tempdir().unwrap();
    let h = handler(dir.path());
    // Deadlines far shorter than the task: heartbeats every 300 ms, silent
    // for 1 s is inactive, 1 s to say `running`. Only they could end it.
    let d = Daemon::start(&[
        "--state-dir",
        dir.path().to_str().unwrap(),
        "--heartbeat-interval",
        "300ms",
        "--inactivity-timeout",
        "1s",
        "--task-ack-timeout",
        "1s",
    ]);
    let _a = agent(&d, "ag1", &h);
    worker_up(&d, "ag1");
    let id = submit(&d, json!({"type": "long", "max_attempts": 1}));
    d.wait_for("its progress", |d| {
        task(d, &id)["progress"]["fraction"] == 0.5
    });
    let t = task(&d, &id);
    assert_eq!(t["progress"]["message"], "halfway", "{t}");
    assert!(t["progress"]["at"].as_u64().is_some(), "{t}");
    // Eight seconds, eight times the inactivity timeout: still its
    // worker's, in its first attempt.
    let until = std::time::Instant::now() + Duration::from_secs(6);
    while std::time::Instant::now() < until {
        let t = task(&d, &id);
        assert_eq!(
            (
                t["state"].as_str(),
                t["attempt"].as_u64(),
                t["worker_id"].as_str()
            ),
            (Some("running"), Some(1), Some("ag1")),
            "{t}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let t = wait_state(&d, &id, "succeeded");
    assert_eq!(t["attempt"], 1);
    assert_eq!(t["progress"]["fraction"], 1.0, "{t}");
    assert_eq!(d.json("/health")["tasks"]["requeued"], 0);
    // Progress lines are not log lines.
    let (_, _, logs) = d.request(&format!(
        "GET /api/tasks/{id}/logs HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    ));
    let logs = String::from_utf8_lossy(&logs);
    assert!(logs.contains("attempt 1"), "{logs}");
    assert!(!logs.contains("::progress"), "{logs}");
}

/// A worker over raw TCP in `region` that takes up to `n` tasks of `kind`.
fn raw_taker(d: &Daemon, id: &str, region: &str, kind: &str, n: usize) -> TcpStream {
    let mut s = d.tcp();
    let hello = json!({
        "type": "hello", "worker_id": id, "capacity": n, "task_types": [kind],
        "labels": {"region": region},
    });
    s.write_all(format!("{hello}\n").as_bytes()).unwrap();
    assert_eq!(read_line(&mut s).unwrap()["type"], "welcome");
    s.write_all(b"{\"type\":\"heartbeat\",\"status\":\"idle\"}\n")
        .unwrap();
    s
}

/// Read `task` frames from `s` until `n` came; their ids.
fn offers(s: &mut TcpStream, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    while ids.len() < n {
        let l = read_line(s).unwrap_or_else(|| panic!("a task frame after {}", ids.len()));
        if l["type"] == "task" {
            ids.push(l["task_id"].as_str().unwrap().to_string());
        }
    }
    ids
}

#[test]
fn a_thousand_dead_tasks_are_found_and_retried_at_once_and_bulk_actions_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let args = [
        "--state-dir",
        state.to_str().unwrap(),
        "--task-fsync",
        "batch",
    ];
    let d = Daemon::start(&args);
    let ids: Vec<String> = (0..1000)
        .map(|i| {
            let region = if i % 2 == 0 { "eu" } else { "us" };
            submit(
                &d,
                json!({"type": "bulk", "max_attempts": 1, "labels": {"region": region}}),
            )
        })
        .collect();
    // Two workers take them all and are lost: each task's last attempt.
    for region in ["eu", "us"] {
        let mut s = raw_taker(&d, &format!("taker-{region}"), region, "bulk", 500);
        offers(&mut s, 500);
    }
    d.wait_for("1000 dead", |d| d.json("/health")["tasks"]["dead"] == 1000);
    // Search: by state and text, by label, by time.
    let page = |q: &str| {
        d.json(&format!("/api/tasks?limit=1000&{q}"))["tasks"]
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!(page("state=dead&q=WORKER%20LOST"), 1000);
    assert_eq!(page("state=dead,queued&label=region:eu"), 500);
    assert_eq!(page("q=no%20such%20error"), 0);
    let first = task(&d, &ids[0])["created_at"].as_u64().unwrap();
    let last = task(&d, &ids[999])["created_at"].as_u64().unwrap();
    assert_eq!(page(&format!("created_after={}", last + 1)), 0);
    assert_eq!(
        page(&format!("created_before={last}&created_after={first}")),
        1000
    );
    assert_eq!(page("finished_after=2000-01-01T00:00:00Z"), 1000);
    for (q, field) in [
        ("state=asleep", "state"),
        ("label=region", "label"),
        ("created_after=tuesday", "created_after"),
    ] {
        let (status, e) = d.get(&format!("/api/tasks?{q}"));
        assert_eq!(status, 400, "{q}: {e}");
        assert!(
            e["message"].as_str().unwrap().starts_with(field),
            "{q}: {e}"
        );
    }
    // One request retries them all, from the command line.
    let out = Command::new(MUSTER)
        .args([
            "--url",
            &format!("http://{}", d.http),
            "tasks",
            "retry",
            "--state",
            "dead",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "retry: 1000 of 1000 tasks"
    );
    assert_eq!(d.json("/health")["tasks"]["queued"], 1000);
    // They run again, and this time succeed.
    let mut takers = Vec::new();
    for region in ["eu", "us"] {
        let mut s = raw_taker(&d, &format!("again-{region}"), region, "bulk", 500);
        for id in offers(&mut s, 500) {
            for state in ["running", "succeeded"] {
                let u = json!({"type": "task_update", "task_id": id, "state": state});
                s.write_all(format!("{u}\n").as_bytes()).unwrap();
            }
        }
        takers.push(s);
    }
    d.wait_for("1000 succeeded", |d| {
        d.json("/health")["tasks"]["succeeded"] == 1000
    });
    // Bulk by ids, and what it leaves alone.
    let (status, v) = d.post(
        "/api/tasks/bulk",
        "",
        &json!({"action": "delete", "ids": &ids[..10]}).to_string(),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v,
        json!({"action": "delete", "matched": 10, "changed": 10, "unchanged": 0, "more": false})
    );
    assert_eq!(d.get(&format!("/api/tasks/{}", ids[0])).0, 404);
    let queued = submit(&d, json!({"type": "other"}));
    let (_, v) = d.post(
        "/api/tasks/bulk",
        "",
        &json!({"action": "delete", "ids": [&queued, &ids[0], &ids[10]]}).to_string(),
    );
    assert_eq!(
        (
            v["matched"].clone(),
            v["changed"].clone(),
            v["unchanged"].clone()
        ),
        (json!(2), json!(1), json!(1)),
        "a queued task is not deleted, an unknown id is not matched: {v}"
    );
    let (_, v) = d.post(
        "/api/tasks/bulk",
        "",
        &json!({"action": "cancel", "filter": {"type": "other"}}).to_string(),
    );
    assert_eq!(
        (v["changed"].clone(), v["matched"].clone()),
        (json!(1), json!(1)),
        "{v}"
    );
    assert_eq!(task(&d, &queued)["state"], "cancelled");
    // Bad bulk requests name what is wrong.
    let many: Vec<String> = (0..10_001).map(|i| format!("{i:016x}")).collect();
    for (body, field) in [
        (json!({"action": "explode", "ids": []}), "action"),
        (json!({"action": "retry", "filter": {}}), "filter"),
        (
            json!({"action": "retry", "filter": {"colour": "red"}}),
            "filter",
        ),
        (
            json!({"action": "retry", "filter": {"state": "asleep"}}),
            "state",
        ),
        (json!({"action": "retry", "ids": ["not an id"]}), "ids"),
        (json!({"action": "retry", "ids": many}), "ids"),
        (json!({"action": "retry"}), "body"),
        (
            json!({"action": "retry", "ids": [], "filter": {"type": "x"}}),
            "body",
        ),
    ] {
        let (status, e) = d.post("/api/tasks/bulk", "", &body.to_string());
        assert_eq!(
            (status, e["error"].as_str()),
            (400, Some("bad_bulk")),
            "{body}: {e}"
        );
        assert!(e["message"].as_str().unwrap().starts_with(field), "{e}");
    }
    assert_eq!(d.post("/api/tasks/bulk", "", "[").0, 400);
    assert_eq!(d.get("/api/tasks/bulk").0, 405);
    // Deleted tasks stay deleted through a restart.
    drop(takers);
    drop(d);
    let d = Daemon::start(&args);
    assert_eq!(d.get(&format!("/api/tasks/{}", ids[5])).0, 404);
    assert_eq!(d.json("/health")["tasks"]["succeeded"], 989);
}

#[test]
fn a_dependency_chain_runs_in_order_and_a_failed_dependency_fails_its_dependents() {
    let dir = tempfile::tempdir().unwrap();
    let h = handler(dir.path());
    let state = dir.path().join("state");
    let args = ["--state-dir", state.to_str().unwrap()];
    let d = Daemon::start(&args);
    let _a = agent(&d, "ag1", &h);
    worker_up(&d, "ag1");
    // A chain: b after a, c after b; a takes 2 s.
    let a = submit(&d, json!({"type": "slow"}));
    let (status, b) = post(&d, &json!({"type": "step", "depends_on": [&a]}).to_string());
    assert_eq!((status, b["state"].as_str()), (201, Some("waiting")), "{b}");
    let b = b["id"].as_str().unwrap().to_string();
    let c = submit(&d, json!({"type": "step", "depends_on": [&b, &a]}));
    wait_state(&d, &a, "running");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(task(&d, &b)["state"], "waiting");
    assert_eq!(task(&d, &c)["state"], "waiting");
    assert_eq!(d.json("/health")["tasks"]["waiting"], 2);
    wait_state(&d, &c, "succeeded");
    let start = |id: &str| starts_of(dir.path(), id)[0].1;
    let a_end = task(&d, &a)["finished_at"].as_u64().unwrap();
    assert!(start(&b) >= a_end, "b started before a ended");
    let b_end = task(&d, &b)["finished_at"].as_u64().unwrap();
    assert!(start(&c) >= b_end, "c started before b ended");
    // A dependency that already succeeded: queued at once.
    let (status, now) = post(&d, &json!({"type": "step", "depends_on": [&a]}).to_string());
    assert_eq!(
        (status, now["state"].as_str()),
        (201, Some("queued")),
        "{now}"
    );
    // One that fails for good fails its dependents, and theirs.
    let f = submit(&d, json!({"type": "fail", "max_attempts": 1}));
    let g = submit(&d, json!({"type": "step", "depends_on": [&f]}));
    let k = submit(&d, json!({"type": "step", "depends_on": [&g]}));
    let t = wait_state(&d, &g, "failed");
    assert_eq!(t["error"], format!("dependency failed: {f}"));
    let t = wait_state(&d, &k, "failed");
    assert_eq!(t["error"], format!("dependency failed: {g}"));
    assert!(
        starts_of(dir.path(), &g).is_empty(),
        "a dependent of a failure never runs"
    );
    // Bad lists are refused, naming the field.
    let unknown = "ffffffffffffffff";
    for body in [
        json!({"type": "step", "depends_on": [unknown]}),
        json!({"type": "step", "depends_on": [&a, &a]}),
        json!({"type": "step", "depends_on": ["not an id"]}),
        json!({"type": "step", "depends_on": &a}),
    ] {
        let (status, e) = post(&d, &body.to_string());
        assert_eq!(status, 400, "{body}: {e}");
        assert!(
            e["message"].as_str().unwrap().starts_with("depends_on"),
            "{e}"
        );
    }
    // Waiting survives a restart; a cancelled dependency fails its
    // dependent; a waiting task can be cancelled itself.
    let (status, _) = d.post("/api/queues/later/pause", "", "");
    assert_eq!(status, 200);
    let p = submit(&d, json!({"type": "later"}));
    let q = submit(&d, json!({"type": "step", "depends_on": [&p]}));
    let r = submit(&d, json!({"type": "step", "depends_on": [&p]}));
    drop(_a);
    drop(d);
    let d = Daemon::start(&args);
    assert_eq!(task(&d, &q)["state"], "waiting");
    assert_eq!(
        d.request(&format!(
            "DELETE /api/tasks/{r} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        ))
        .0,
        200
    );
    assert_eq!(task(&d, &r)["state"], "cancelled");
    let _a = agent(&d, "ag1", &h);
    assert_eq!(d.post("/api/queues/later/resume", "", "").0, 200);
    wait_state(&d, &q, "succeeded");
    assert_eq!(d.post("/api/queues/later/pause", "", "").0, 200);
    let s = submit(&d, json!({"type": "later"}));
    let u = submit(&d, json!({"type": "step", "depends_on": [&s]}));
    assert_eq!(
        d.request(&format!(
            "DELETE /api/tasks/{s} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        ))
        .0,
        200
    );
    let t = wait_state(&d, &u, "failed");
    assert_eq!(t["error"], format!("dependency failed: {s}"));
}

/// The ticks of the tasks schedule `name` submitted, oldest first.
fn ticks_of(d: &Daemon, name: &str) -> Vec<u64> {
    let v = d.json("/api/tasks?limit=1000");
    let mut ticks: Vec<u64> = v["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["schedule"]["name"] == name)
        .map(|t| t["schedule"]["tick"].as_u64().unwrap())
        .collect();
    ticks.sort();
    ticks
}

#[test]
fn a_schedule_fires_once_per_tick_through_a_restart_and_skips_while_its_task_runs() {
    let dir = tempfile::tempdir().unwrap();
    let h = handler(dir.path());
    let state = dir.path().join("state");
    let args = ["--state-dir", state.to_str().unwrap()];
    let d = Daemon::start(&args);
    let _a = agent(&d, "ag1", &h);
    let body = json!({"name": "beat", "cron": "@every 2s", "task": {"type": "tick"}});
    let (status, s) = d.post("/api/schedules", "", &body.to_string());
    assert_eq!(status, 201, "{s}");
    let created = s["created_at"].as_u64().unwrap();
    assert_eq!(s["next_tick"], created + 2000);
    d.wait_for("two ticks", |d| ticks_of(d, "beat").len() >= 2);
    // Through a restart: no tick twice, and ticks go on.
    drop(_a);
    drop(d);
    std::thread::sleep(Duration::from_millis(500));
    let d = Daemon::start(&args);
    let _a = agent(&d, "ag1", &h);
    let before = ticks_of(&d, "beat").len();
    d.wait_for("a tick after the restart", |d| {
        ticks_of(d, "beat").len() > before
    });
    let ticks = ticks_of(&d, "beat");
    let mut unique = ticks.clone();
    unique.dedup();
    assert_eq!(unique, ticks, "a tick fired twice");
    assert!(
        ticks.iter().all(|t| (t - created) % 2000 == 0),
        "ticks off the grid: {ticks:?}"
    );
    let s = d.json("/api/schedules/beat");
    assert_eq!(s["fired"].as_u64().unwrap() as usize, ticks.len(), "{s}");
    // Paused: nothing; resumed: on again.
    let (status, s) = d.post("/api/schedules/beat/pause", "", "");
    assert_eq!((status, &s["paused"]), (200, &json!(true)));
    assert_eq!(s["next_tick"], Value::Null);
    let paused_at = ticks_of(&d, "beat").len();
    std::thread::sleep(Duration::from_millis(4500));
    assert_eq!(ticks_of(&d, "beat").len(), paused_at, "fired while paused");
    assert_eq!(d.post("/api/schedules/beat/resume", "", "").0, 200);
    d.wait_for("a tick after resume", |d| {
        ticks_of(d, "beat").len() > paused_at
    });
    // A task still running at the next tick: that tick is skipped.
    let body = json!({"name": "slowly", "cron": "@every 1s", "task": {"type": "slow"}});
    assert_eq!(d.post("/api/schedules", "", &body.to_string()).0, 201);
    d.wait_for("a skipped tick", |d| {
        d.json("/api/schedules/slowly")["skipped"].as_u64() >= Some(1)
    });
    let running = d.json("/api/tasks?state=running,assigned,queued&q=slow")["tasks"].clone();
    assert!(
        running.as_array().unwrap().len() <= 1,
        "two at once: {running}"
    );
    // Listed, changed in place (its record kept), deleted.
    let list = d.json("/api/schedules")["schedules"].clone();
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    let body = json!({"name": "beat", "cron": "0 9 * * MON-FRI", "timezone": "Europe/Paris", "task": {"type": "tick"}});
    let (status, s) = d.post("/api/schedules", "", &body.to_string());
    assert_eq!(status, 200, "{s}");
    assert_eq!(s["created_at"], created);
    assert!(s["fired"].as_u64().unwrap() >= 3, "{s}");
    let out = Command::new(MUSTER)
        .args(["--url", &format!("http://{}", d.http), "schedule", "ls"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Europe/Paris") && text.contains("slowly"),
        "{text}"
    );
    let out = Command::new(MUSTER)
        .args([
            "--url",
            &format!("http://{}", d.http),
            "schedule",
            "rm",
            "slowly",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(d.get("/api/schedules/slowly").0, 404);
    // Bad input names its field.
    for (body, field) in [
        (
            json!({"name": "x", "cron": "61 * * * *", "task": {"type": "a"}}),
            "cron",
        ),
        (
            json!({"name": "x", "cron": "@every 1s", "timezone": "Mars/Base", "task": {"type": "a"}}),
            "timezone",
        ),
        (
            json!({"name": "x y", "cron": "@every 1s", "task": {"type": "a"}}),
            "name",
        ),
        (json!({"name": "x", "cron": "@every 1s"}), "task"),
        (
            json!({"name": "x", "cron": "@every 1s", "task": {"type": "a", "delay_ms": -1}}),
            "task",
        ),
        (
            json!({"name": "x", "cron": "@every 1s", "task": {"type": "a"}, "overlap": "queue"}),
            "overlap",
        ),
    ] {
        let (status, e) = d.post("/api/schedules", "", &body.to_string());
        assert_eq!(
            (status, e["error"].as_str()),
            (400, Some("bad_schedule")),
            "{body}: {e}"
        );
        assert!(e["message"].as_str().unwrap().starts_with(field), "{e}");
    }
    assert_eq!(d.get("/api/schedules/a%20b").0, 400);
    // Deleted schedules stay deleted through a restart.
    drop(_a);
    drop(d);
    let d = Daemon::start(&args);
    assert_eq!(d.get("/api/schedules/slowly").0, 404);
    assert_eq!(d.json("/api/schedules/beat")["timezone"], "Europe/Paris");
}

/// The most tasks of `kind` that ran at once, from the handler's notes of
/// each start (`starts`) and the tasks' finish times.
fn most_at_once(d: &Daemon, dir: &Path, kind: &str) -> usize {
    let v = d.json(&format!("/api/tasks?type={kind}&limit=1000"));
    support::most_at_once(v["tasks"].as_array().unwrap().iter().filter_map(|t| {
        let start = starts_of(dir, t["id"].as_str().unwrap()).first()?.1;
        Some((start, t["finished_at"].as_u64().unwrap_or(u64::MAX)))
    }))
}

#[test]
fn a_concurrency_limit_of_two_is_never_exceeded_and_a_rate_spaces_starts() {
    let dir = tempfile::tempdir().unwrap();
    let h = handler(dir.path());
    let state = dir.path().join("state");
    let args = ["--state-dir", state.to_str().unwrap()];
    let d = Daemon::start(&args);
    let put = |d: &Daemon, body: Value| {
        d.request(&format!(
            "PUT /api/limits HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.to_string().len()
        ))
    };
    let (status, _, b) = put(&d, json!({"type": "slow", "concurrency": 2}));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&b));
    // Two agents with room for six: the limit, not the room, holds them.
    let _a = agent(&d, "ag1", &h);
    let _b = agent(&d, "ag2", &h);
    worker_up(&d, "ag1");
    worker_up(&d, "ag2");
    let ids: Vec<String> = (0..6)
        .map(|_| submit(&d, json!({"type": "slow"})))
        .collect();
    // Other types are not held back.
    let other = submit(&d, json!({"type": "quick"}));
    wait_state(&d, &other, "succeeded");
    let v = d.json("/api/limits");
    assert_eq!(v["limits"][0]["held"], 2, "{v}");
    for id in &ids {
        wait_state(&d, id, "succeeded");
    }
    assert_eq!(most_at_once(&d, dir.path(), "slow"), 2);
    // A rate per customer: two a second for acme, whatever the room.
    let (status, _, _) = put(&d, json!({"concurrency_key": "*", "rate": 2, "per": "1s"}));
    assert_eq!(status, 200);
    // Kept through a restart.
    drop((_a, _b));
    drop(d);
    let d = Daemon::start(&args);
    let v = d.json("/api/limits")["limits"].clone();
    assert_eq!(v.as_array().unwrap().len(), 2, "{v}");
    let _a = agent(&d, "ag1", &h);
    worker_up(&d, "ag1");
    let acme: Vec<String> = (0..6)
        .map(|_| submit(&d, json!({"type": "quick", "concurrency_key": "acme"})))
        .collect();
    for id in &acme {
        wait_state(&d, id, "succeeded");
    }
    let mut starts: Vec<u64> = acme
        .iter()
        .map(|id| starts_of(dir.path(), id)[0].1)
        .collect();
    starts.sort();
    // Six starts at two a second (a full bucket of two first): at least
    // two seconds from the first to the last.
    assert!(starts[5] - starts[0] >= 1900, "{starts:?}");
    // Bad limits name their field; a limit removed is gone.
    for (body, field) in [
        (json!({"type": "slow", "concurrency": 0}), "concurrency"),
        (json!({"concurrency": 2}), "type"),
        (json!({"type": "slow", "rate": 1, "per": "soon"}), "per"),
    ] {
        let (status, _, b) = put(&d, body.clone());
        let e: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(
            (status, e["error"].as_str()),
            (400, Some("bad_limit")),
            "{body}: {e}"
        );
        assert!(e["message"].as_str().unwrap().starts_with(field), "{e}");
    }
    let (status, _, _) = put(&d, json!({"type": "slow"}));
    assert_eq!(status, 200);
    assert_eq!(d.json("/api/limits")["limits"].as_array().unwrap().len(), 1);
    let (status, e) = post(&d, r#"{"type":"a","concurrency_key":"*"}"#);
    assert_eq!(status, 400, "{e}");
}

/// The sums of `/api/history`'s minutes: succeeded, failed, cancelled.
fn ends_in_the_last_hour(d: &Daemon) -> (u64, u64, u64) {
    let h = d.json("/api/history");
    let m = h["minutes"].as_array().unwrap();
    assert_eq!(m.len(), 61, "{h}");
    let sum = |k: &str| m.iter().map(|x| x[k].as_u64().unwrap()).sum::<u64>();
    (sum("succeeded"), sum("failed"), sum("cancelled"))
}

/// `GET /api/history` (the dashboard's header chart): every end counted
/// once under its minute, the queue and the workers sampled now; the ends
/// are the task book's, so a restart shows them again.
#[test]
fn the_last_hour_counts_every_end_once_and_keeps_them_through_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let h = handler(dir.path());
    let state = dir.path().join("state");
    let args = ["--state-dir", state.to_str().unwrap()];
    let d = Daemon::start(&args);
    let a = agent(&d, "ag1", &h);
    let ok: Vec<String> = (0..3)
        .map(|_| submit(&d, json!({"type": "quick"})))
        .collect();
    let dead = submit(&d, json!({"type": "fail", "retry": {"max_attempts": 1}}));
    let never = submit(&d, json!({"type": "quick", "worker_id": "nobody"}));
    for id in &ok {
        wait_state(&d, id, "succeeded");
    }
    wait_state(&d, &dead, "dead");
    let (status, _, _) = d.request(&format!(
        "DELETE /api/tasks/{never} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    ));
    assert_eq!(status, 200);
    wait_state(&d, &never, "cancelled");
    let queued = submit(&d, json!({"type": "quick", "worker_id": "nobody"}));
    assert_eq!(ends_in_the_last_hour(&d), (3, 1, 1));
    let hour = d.json("/api/history");
    let now = &hour["minutes"][60];
    assert!(now["at"].as_u64().unwrap() <= hour["now"].as_u64().unwrap());
    assert!(now["queued"].as_u64().unwrap() >= 1, "{now}");
    // The agent, idle or still working as its last beat said.
    let shown: u64 = ["idle", "working"]
        .iter()
        .map(|k| now["workers"][k].as_u64().unwrap())
        .sum();
    assert_eq!(shown, 1, "{now}");
    // The minutes before the daemon ran have no samples of their own.
    assert!(hour["minutes"][0]["workers"].is_null(), "{hour}");
    assert_eq!(task(&d, &queued)["state"], "queued");

    drop(a);
    drop(d);
    let d = Daemon::start(&args);
    assert_eq!(ends_in_the_last_hour(&d), (3, 1, 1), "after the restart");
    // A dead task retried and ended again is a second end.
    assert_eq!(retry(&d, &dead).0, 200);
    let _a = agent(&d, "ag1", &h);
    wait_state(&d, &dead, "dead");
    assert_eq!(ends_in_the_last_hour(&d), (3, 2, 1));
}
