//! The pool with real processes: `muster agent -- sleep` members started,
//! scaled, restarted, found hung, and never left behind.

mod support;

use serde_json::{Value, json};
use std::time::Duration;
use support::Daemon;

const MUSTER: &str = env!("CARGO_BIN_EXE_muster");

/// Quick clocks: silent members are found within seconds.
const TIMING: [&str; 6] = [
    "--heartbeat-interval",
    "300ms",
    "--inactivity-timeout",
    "1500ms",
    "--pool-stop-grace",
    "2s",
];

fn pool_daemon(command: &str, extra: &[&str]) -> Daemon {
    let mut args = TIMING.to_vec();
    args.extend(["--pool-command", command]);
    args.extend_from_slice(extra);
    Daemon::start(&args)
}

/// Members are `muster agent -- sleep N`: N tells one test's from another's.
/// An executable script in `dir`.
fn script(dir: &tempfile::TempDir, body: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.path().join("h.sh");
    std::fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn agent_command(n: u32) -> String {
    format!("{MUSTER} agent --interval 200ms -- sleep {n}")
}

/// Processes whose command line is `sleep N`.
fn sleepers(n: u32) -> usize {
    let out = std::process::Command::new("pgrep")
        .args(["-f", &format!("^sleep {n}$")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|p| alive(p.parse().unwrap()))
        .count()
}

fn scale(d: &Daemon, body: &str) -> (u16, Value) {
    let (status, _, b) = d.request(&format!(
        "POST /api/workers/scale HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    (status, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

fn pool(d: &Daemon) -> Value {
    d.json("/api/pool")
}

fn pids(d: &Daemon) -> Vec<u32> {
    pool(d)["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["pid"].as_u64().map(|p| p as u32))
        .collect()
}

fn alive(pid: u32) -> bool {
    // A zombie is gone in all but name.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .is_some_and(|r| !r.trim_start().starts_with('Z'))
    })
}

fn running(d: &Daemon, n: usize) {
    d.wait_for(&format!("{n} members running"), |d| {
        let p = pool(d);
        p["actual"] == n
            && p["members"]
                .as_array()
                .unwrap()
                .iter()
                .all(|m| m["state"] == "running")
    });
}

#[test]
fn scaling_up_and_down_leaves_no_process_behind() {
    let d = pool_daemon(&agent_command(3601), &[]);
    assert_eq!(
        scale(&d, r#"{"count":8}"#),
        (200, json!({"created": 8, "terminated": 0, "count": 8}))
    );
    running(&d, 8);
    let ids: Vec<String> = pool(&d)["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        ids,
        (1..=8).map(|n| format!("pool-{n}")).collect::<Vec<_>>()
    );
    // Every member is a worker on the roll call, by its id.
    d.wait_for("8 workers", |d| {
        d.json("/api/workers?status=working")
            .as_array()
            .unwrap()
            .len()
            == 8
    });
    let before = pids(&d);
    assert_eq!(scale(&d, r#"{"count":2}"#).1["terminated"], 6);
    d.wait_for("2 left", |d| {
        pool(d)["members"].as_array().unwrap().len() == 2
    });
    let after = pids(&d);
    for pid in before.iter().filter(|p| !after.contains(p)) {
        d.wait_for("a stopped member gone from /proc", |_| !alive(*pid));
    }
    // Numbers are reused from the lowest free.
    assert_eq!(scale(&d, r#"{"count":3}"#).1["created"], 1);
    running(&d, 3);
    let all = pids(&d);
    assert_eq!(scale(&d, r#"{"count":0}"#).1["terminated"], 3);
    d.wait_for("none left", |d| {
        pool(d)["members"].as_array().unwrap().is_empty()
    });
    for pid in all {
        d.wait_for("every member gone from /proc", |_| !alive(pid));
    }
    d.wait_for("no command left either", |_| sleepers(3601) == 0);
}

#[test]
fn a_crashed_member_is_restarted_and_a_crash_loop_is_fatal() {
    let d = pool_daemon(&agent_command(3602), &["--pool-size", "1"]);
    running(&d, 1);
    let pid = pids(&d)[0];
    // SAFETY: kill(2) on a process this test's daemon started.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    d.wait_for("a new process", |d| {
        pids(d).first().is_some_and(|p| *p != pid)
    });
    let m = &pool(&d)["members"][0];
    assert_eq!(m["restarts"], 1);
    assert_eq!(m["last_exit"], "signal 9");
    running(&d, 1);

    let d = pool_daemon(
        "false",
        &[
            "--pool-size",
            "1",
            "--pool-restart-backoff",
            "50ms",
            "--pool-max-restarts",
            "3",
        ],
    );
    d.wait_for("fatal", |d| pool(d)["members"][0]["state"] == "fatal");
    let m = &pool(&d)["members"][0];
    assert_eq!(
        (m["restarts"].as_u64(), m["last_exit"].as_str()),
        (Some(3), Some("exit 1"))
    );
    assert_eq!(d.json("/health")["pool"]["fatal"], 1);
    d.wait_log("is fatal");
    let d = pool_daemon(
        "/nonexistent/worker",
        &[
            "--pool-size",
            "1",
            "--pool-restart-backoff",
            "50ms",
            "--pool-max-restarts",
            "2",
        ],
    );
    d.wait_for("fatal", |d| pool(d)["members"][0]["state"] == "fatal");
    d.wait_log("cannot start");
    assert_eq!(d.json("/health")["status"], "healthy");
}

#[test]
fn a_hung_member_is_replaced() {
    let d = pool_daemon(&agent_command(3603), &["--pool-size", "1"]);
    running(&d, 1);
    d.wait_for("its worker", |d| d.get("/api/workers/pool-1").0 == 200);
    let pid = pids(&d)[0];
    // Stop the whole member (agent and sleep): it says nothing more.
    unsafe { libc::kill(-(pid as i32), libc::SIGSTOP) };
    d.wait_for("replaced", |d| pids(d).first().is_some_and(|p| *p != pid));
    let m = &pool(&d)["members"][0];
    assert!(m["last_exit"].as_str().unwrap().contains("hung"), "{m}");
    assert_eq!(d.json("/health")["pool"]["hung"], 1);
    d.wait_for("the old group gone", |_| !alive(pid));
    running(&d, 1);
    d.wait_for("the stopped command gone with its agent", |_| {
        sleepers(3603) == 1
    });
}

#[test]
fn members_do_not_outlive_musterd() {
    let d = pool_daemon(&agent_command(3604), &["--pool-size", "3"]);
    running(&d, 3);
    let p = pids(&d);
    assert!(d.stop().0.success());
    assert_eq!(sleepers(3604), 0, "commands outlived SIGTERM");
    for pid in &p {
        assert!(!alive(*pid), "member {pid} outlived SIGTERM");
    }
    let d = pool_daemon(&agent_command(3605), &["--pool-size", "3"]);
    running(&d, 3);
    let p = pids(&d);
    d.signal(libc::SIGKILL);
    drop(d);
    std::thread::sleep(Duration::from_secs(1));
    for pid in &p {
        assert!(!alive(*pid), "member {pid} outlived kill -9 of musterd");
    }
    assert_eq!(sleepers(3605), 0, "commands outlived kill -9 of musterd");
}

#[test]
fn scale_requests_are_checked() {
    let d = pool_daemon("sleep 3600", &["--pool-max", "4"]);
    for (body, msg) in [
        ("x", "the body is JSON"),
        ("{}", "count: required"),
        (r#"{"count":"2"}"#, "count: must be a whole number"),
        (r#"{"count":1.5}"#, "count: must be a whole number"),
        (r#"{"count":-1}"#, "count: must not be negative"),
        (
            r#"{"count":1000000000}"#,
            "count: must be within pool_min=0 and pool_max=4",
        ),
    ] {
        let (status, v) = scale(&d, body);
        assert_eq!(status, 400, "{body}");
        assert!(v["message"].as_str().unwrap().starts_with(msg), "{v}");
    }
    let out = std::process::Command::new(MUSTER)
        .args(["--url", &format!("http://{}", d.http), "scale", "9"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "out of bounds");
    let out = std::process::Command::new(MUSTER)
        .args(["--url", &format!("http://{}", d.http), "scale", "2"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "created 2 terminated 0 count 2"
    );
    let out = std::process::Command::new(MUSTER)
        .args(["--url", &format!("http://{}", d.http), "pool"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("pool-2"));
    let d = Daemon::start(&[]);
    assert_eq!(scale(&d, r#"{"count":1}"#).0, 409);
}

/// A pool of `muster agent --tasks` members whose handler runs `work`,
/// autoscaled on the queue at 10 tasks per member.
fn autoscaled(work: &str, cooldown: &str, max: &str) -> (tempfile::TempDir, Daemon) {
    let dir = tempfile::tempdir().unwrap();
    let handler = script(&dir, &format!("cat >/dev/null\n{work}\necho '{{}}'\n"));
    let command = format!(
        "{MUSTER} agent --tasks --interval 200ms -- {}",
        handler.display()
    );
    let d = pool_daemon(
        &command,
        &[
            "--autoscale",
            "queue",
            "--autoscale-tasks-per-worker",
            "10",
            "--autoscale-cooldown",
            cooldown,
            "--pool-max",
            max,
        ],
    );
    (dir, d)
}

/// `n` tasks of type `t`, each answered 201.
fn submit_tasks(d: &Daemon, n: usize) {
    for i in 0..n {
        let body = format!(r#"{{"type":"t","payload":{i}}}"#);
        let (status, _, _) = d.request(&format!(
            "POST /api/tasks HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ));
        assert_eq!(status, 201);
    }
}

#[test]
fn autoscale_follows_the_queue_without_flapping() {
    let (_dir, d) = autoscaled("sleep 0.2", "2s", "10");
    submit_tasks(&d, 100);
    // Sizes seen until the queue is drained and the pool is empty again.
    let mut sizes = vec![0u64];
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let desired = pool(&d)["desired"].as_u64().unwrap();
        if sizes.last() != Some(&desired) {
            sizes.push(desired);
        }
        let done = d.json("/health")["tasks"]["succeeded"] == 100;
        if done && desired == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "sizes so far {sizes:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(sizes.iter().max(), Some(&10), "{sizes:?}");
    // Up, then down: never down and up again.
    let peak = sizes.iter().position(|s| *s == 10).unwrap();
    assert!(sizes[..=peak].windows(2).all(|w| w[0] < w[1]), "{sizes:?}");
    assert!(sizes[peak..].windows(2).all(|w| w[0] > w[1]), "{sizes:?}");
    // The first step's size depends on how many submissions it saw.
    d.wait_log("autoscale: 0 -> ");
    let log = d.log.lock().unwrap();
    let first = log.iter().find(|l| l.contains("autoscale: 0 -> ")).unwrap();
    assert!(
        first.contains(" members (queued tasks ")
            && first.contains(", 10 per member, bounds 0..=10)"),
        "{first}"
    );
}

#[test]
fn a_reload_replaces_members_one_at_a_time_and_resizes() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("musterd.conf");
    let write = |cmd: &str, size: u32| {
        std::fs::write(
            &conf,
            format!("pool_command = \"{cmd}\"\npool_size = {size}\n"),
        )
        .unwrap();
    };
    write(&agent_command(3606), 2);
    let mut c = support::command(&TIMING);
    c.args(["--config", conf.to_str().unwrap()]);
    let d = Daemon::spawn(c);
    running(&d, 2);
    write(&agent_command(3607), 3);
    d.signal(libc::SIGHUP);
    d.wait_for("all on the new command", |d| {
        d.log_has("every member runs the new pool_command") && sleepers(3607) == 3
    });
    assert_eq!(sleepers(3606), 0);
    running(&d, 3);
    // One at a time: never two replacements under way.
    let log = d.log.lock().unwrap().clone();
    let replacing: Vec<&String> = log
        .iter()
        .filter(|l| l.contains("replacing pool-"))
        .collect();
    assert_eq!(replacing.len(), 2, "the two old members, each once");
}

#[test]
fn scaling_down_keeps_busy_members_and_a_hung_ones_task_is_done_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    // The first attempt hangs on; a later one finishes at once.
    let handler = script(
        &dir,
        "cat >/dev/null\n[ \"$MUSTER_TASK_ATTEMPT\" = 1 ] && sleep 3608\necho '{\"ok\":1}'\n",
    );
    let command = format!(
        "{MUSTER} agent --tasks --interval 200ms -- {}",
        handler.display()
    );
    let d = pool_daemon(&command, &["--pool-size", "3"]);
    running(&d, 3);
    d.wait_for("three idle workers", |d| {
        d.json("/api/workers?status=idle").as_array().unwrap().len() == 3
    });
    let body = r#"{"type":"long"}"#;
    let (_, _, b) = d.request(&format!(
        "POST /api/tasks HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    let id = serde_json::from_slice::<Value>(&b).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    d.wait_for("running", |d| {
        d.json(&format!("/api/tasks/{id}"))["state"] == "running"
    });
    let holder = d.json(&format!("/api/tasks/{id}"))["worker_id"]
        .as_str()
        .unwrap()
        .to_string();
    d.wait_for("its member reports working", |d| {
        d.json(&format!("/api/workers/{holder}"))["status"] == "working"
    });
    // The two idle members go; the busy one stays.
    assert_eq!(scale(&d, r#"{"count":1}"#).1["terminated"], 2);
    d.wait_for("one left", |d| {
        pool(d)["members"].as_array().unwrap().len() == 1
    });
    assert_eq!(pool(&d)["members"][0]["id"], holder.as_str());
    assert_eq!(
        d.json(&format!("/api/tasks/{id}"))["state"],
        "running",
        "untouched"
    );
    // It hangs: replaced, and its task done by the replacement.
    let pid = pids(&d)[0];
    unsafe { libc::kill(-(pid as i32), libc::SIGSTOP) };
    d.wait_for("done on the second attempt", |d| {
        d.json(&format!("/api/tasks/{id}"))["state"] == "succeeded"
    });
    let t = d.json(&format!("/api/tasks/{id}"));
    assert_eq!(
        (t["attempt"].as_u64(), t["result"].clone()),
        (Some(2), json!({"ok": 1}))
    );
    assert!(
        pool(&d)["members"][0]["last_exit"]
            .as_str()
            .unwrap()
            .contains("hung")
    );
    d.wait_for("the first attempt's handler gone", |_| sleepers(3608) == 0);
}

/// A member takes one task at a time, so the queue depth members report
/// asks for fewer members than are busy (10 per member): the autoscaler
/// shrinks the pool only to the members running tasks, and no task under
/// way is stopped.
#[test]
fn autoscale_down_never_stops_a_member_running_a_task() {
    let (_dir, d) = autoscaled("sleep 1.5", "1s", "3");
    submit_tasks(&d, 12);
    d.wait_for("every task finished", |d| {
        let t = &d.json("/health")["tasks"];
        t["queued"] == 0 && t["assigned"] == 0 && t["running"] == 0
    });
    let t = d.json("/health")["tasks"].clone();
    assert_eq!(
        (
            t["succeeded"].as_u64(),
            t["failed"].as_u64(),
            t["cancelled"].as_u64()
        ),
        (Some(12), Some(0), Some(0)),
        "{t}"
    );
}
