//! `muster agent` under a real `musterd`, and the run metrics and history
//! it feeds.

mod support;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::Daemon;

const MUSTER: &str = env!("CARGO_BIN_EXE_muster");

fn agent(d: &Daemon, args: &[&str]) -> Command {
    let mut c = Command::new(MUSTER);
    c.arg("agent")
        .args(args)
        .env("MUSTER_HEARTBEAT_ADDR", d.heartbeat.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

fn wait_exit(child: &mut Child, within: Duration) -> i32 {
    let deadline = Instant::now() + within;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st.code().unwrap_or(-1);
        }
        assert!(Instant::now() < deadline, "agent did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn metrics(d: &Daemon, id: &str) -> serde_json::Value {
    d.json(&format!("/api/workers/{id}/metrics"))
}

#[test]
fn a_failing_command_is_a_failed_run_and_its_exit_status() {
    let d = Daemon::start(&[]);
    let out = agent(&d, &["--id", "fail3", "--", "sh", "-c", "exit 3"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    d.wait_for("run recorded", |d| {
        d.get("/api/workers/fail3/metrics").1["total_runs"] == 1
    });
    let m = metrics(&d, "fail3");
    assert_eq!(
        (m["failed"].as_u64(), m["succeeded"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(m["error_rate"], 100.0);
    assert!(m["max_execution_ms"].as_f64().unwrap() >= 0.0);
    d.wait_for("bye", |d| {
        d.json("/telemetry/fail3")["status"] == "terminated"
    });
    assert_eq!(d.json("/api/workers/fail3")["transport"], "tcp");
}

#[test]
fn a_missing_command_exits_127_and_is_recorded() {
    let d = Daemon::start(&[]);
    let out = agent(&d, &["--id", "nocmd", "--", "/nonexistent/command"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(127));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot run") && err.lines().count() == 1,
        "{err}"
    );
    d.wait_for("failed run", |d| {
        d.get("/api/workers/nocmd/metrics").1["failed"] == 1
    });
}

#[test]
fn a_cpu_burner_shows_above_50_percent_and_sigterm_is_passed_on() {
    let d = Daemon::start(&[]);
    let mut a = agent(
        &d,
        &[
            "--id",
            "burn",
            "--interval",
            "300ms",
            "--",
            "sh",
            "-c",
            "while :; do :; done",
        ],
    )
    .spawn()
    .unwrap();
    d.wait_for("cpu above 50", |d| {
        d.get("/telemetry/burn").1["cpu_usage"]
            .as_f64()
            .unwrap_or(0.0)
            > 50.0
    });
    let t = d.json("/telemetry/burn");
    assert_eq!(t["status"], "working");
    assert!(t["resource_usage"]["threads"].as_u64().unwrap() >= 1);
    assert!(t["gpu_usage"].is_null(), "no GPU here: absent, not 0");
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(a.id() as i32, libc::SIGTERM) };
    assert_eq!(
        wait_exit(&mut a, Duration::from_secs(10)),
        128 + libc::SIGTERM
    );
    d.wait_for("run with signal", |d| {
        d.get("/api/workers/burn/metrics").1["failed"] == 1
    });
}

#[test]
fn a_child_that_touches_50_mb_shows_it() {
    let d = Daemon::start(&[]);
    let script = "b = b'x' * (60 * 1024 * 1024); import time; time.sleep(4)";
    let mut a = agent(
        &d,
        &[
            "--id",
            "mem",
            "--interval",
            "300ms",
            "--",
            "sh",
            "-c",
            &format!("python3 -c \"{script}\""),
        ],
    )
    .spawn()
    .unwrap();
    d.wait_for("rss >= 50", |d| {
        d.get("/telemetry/mem").1["resource_usage"]["rss_mb"]
            .as_f64()
            .unwrap_or(0.0)
            >= 50.0
    });
    let r = d.json("/telemetry/mem")["resource_usage"].clone();
    assert!(r["peak_rss_mb"].as_f64().unwrap() >= 50.0);
    assert!(d.json("/telemetry/mem")["memory_usage"].as_f64().unwrap() > 0.0);
    let _ = a.kill();
    let _ = a.wait();
}

#[test]
fn every_accumulates_runs_and_idles_between() {
    let d = Daemon::start(&[]);
    let mut a = agent(
        &d,
        &[
            "--id",
            "cron",
            "--interval",
            "100ms",
            "--every",
            "400ms",
            "--",
            "true",
        ],
    )
    .spawn()
    .unwrap();
    d.wait_for("three runs", |d| {
        d.get("/api/workers/cron/metrics").1["total_runs"]
            .as_u64()
            .unwrap_or(0)
            >= 3
    });
    d.wait_for("idle between runs", |d| {
        d.json("/telemetry/cron")["status"] == "idle"
    });
    let m = metrics(&d, "cron");
    assert_eq!(m["success_rate"], 100.0);
    assert!(m["p95_execution_ms"].as_f64().is_some());
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(a.id() as i32, libc::SIGTERM) };
    assert_eq!(wait_exit(&mut a, Duration::from_secs(10)), 0);
    d.wait_for("bye", |d| {
        d.json("/telemetry/cron")["status"] == "terminated"
    });
}

#[test]
fn watching_a_pid() {
    let d = Daemon::start(&[]);
    let out = agent(&d, &["--pid", "999999999"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no process 999999999"));

    let mut sleeper = Command::new("sleep").arg("2").spawn().unwrap();
    let pid = sleeper.id().to_string();
    let mut a = agent(
        &d,
        &["--id", "watched", "--interval", "200ms", "--pid", &pid],
    )
    .spawn()
    .unwrap();
    d.wait_for("heartbeats", |d| {
        d.get("/telemetry/watched").1["status"] == "working"
    });
    sleeper.wait().unwrap();
    assert_eq!(wait_exit(&mut a, Duration::from_secs(10)), 0);
    d.wait_for("terminated", |d| {
        d.json("/telemetry/watched")["status"] == "terminated"
    });
}

#[test]
fn runs_owed_while_the_daemon_is_down_are_delivered() {
    // A port with no daemon yet.
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut c = Command::new(MUSTER);
    c.args([
        "agent",
        "--id",
        "late",
        "--interval",
        "200ms",
        "--heartbeat-addr",
        &port.to_string(),
        "--",
        "sleep",
        "1",
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let mut a = c.spawn().unwrap();
    std::thread::sleep(Duration::from_millis(600));
    let d = Daemon::start(&["--heartbeat-addr", &port.to_string()]);
    assert_eq!(wait_exit(&mut a, Duration::from_secs(20)), 0);
    d.wait_for("owed run delivered", |d| {
        d.get("/api/workers/late/metrics").1["succeeded"] == 1
    });
}

#[test]
fn metrics_history_and_bad_runs() {
    let d = Daemon::start(&[]);
    for (dur, ok) in [(100, true), (300, false), (200, true)] {
        d.udp(
            format!(r#"{{"type":"run","worker_id":"r1","duration_ms":{dur},"ok":{ok}}}"#)
                .as_bytes(),
        );
    }
    d.udp(br#"{"type":"heartbeat","worker_id":"r1","cpu_usage":7,"queue_depth":2}"#);
    d.udp(br#"{"type":"run","worker_id":"r1","duration_ms":-5,"ok":true}"#);
    d.udp(br#"{"type":"run","worker_id":"r1","duration_ms":1e15,"ok":true}"#);
    d.wait_applied("r1", 4);
    d.wait_for("bad runs counted", |d| d.rejected("bad_field") == 2);
    let m = metrics(&d, "r1");
    assert_eq!(
        (m["total_runs"].as_u64(), m["failed"].as_u64()),
        (Some(3), Some(1))
    );
    assert_eq!(
        (
            m["min_execution_ms"].as_f64(),
            m["max_execution_ms"].as_f64()
        ),
        (Some(100.0), Some(300.0))
    );
    assert_eq!(m["p50_execution_ms"], 200.0);
    for key in [
        "uptime",
        "uptime_seconds",
        "success_rate",
        "error_rate",
        "runs_per_hour",
        "avg_execution_ms",
        "p95_execution_ms",
        "p99_execution_ms",
        "worker_start_time",
        "last_run_time",
        "timestamp",
    ] {
        assert!(m.get(key).is_some(), "metrics lack {key}");
    }
    assert_eq!(d.get("/api/workers/nobody/metrics").0, 404);
    let fleet = d.json("/api/metrics");
    assert_eq!(
        (fleet["total_runs"].as_u64(), fleet["workers"].as_u64()),
        (Some(3), Some(1))
    );

    let h = d.json("/api/workers/r1/history");
    let samples = h["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 1);
    assert_eq!(
        (
            samples[0]["cpu_usage"].as_f64(),
            samples[0]["queue_depth"].as_u64()
        ),
        (Some(7.0), Some(2))
    );
    let far = h["samples"][0]["timestamp"].as_u64().unwrap() + 1000;
    assert!(
        d.json(&format!("/api/workers/r1/history?since={far}"))["samples"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(d.get("/api/workers/r1/history?since=soon").0, 400);
    let snap = d.json("/api/workers/snapshot/r1");
    assert_eq!(snap["history"].as_array().unwrap().len(), 1);
    assert_eq!(snap["metrics"]["total_runs"], 3);
    // No runs: rates 0, durations null.
    d.udp(br#"{"type":"heartbeat","worker_id":"quiet"}"#);
    d.wait_applied("quiet", 1);
    let q = metrics(&d, "quiet");
    assert_eq!(
        (q["success_rate"].as_f64(), q["runs_per_hour"].as_f64()),
        (Some(0.0), Some(0.0))
    );
    assert!(q["avg_execution_ms"].is_null());
}

#[test]
fn the_periodic_report_is_logged() {
    let d = Daemon::start(&["--metrics-report-interval", "1s"]);
    d.udp(br#"{"type":"run","worker_id":"rep","duration_ms":10,"ok":true}"#);
    d.wait_for("report", |d| {
        d.log_has("fleet report: workers=1 ") && d.log_has("total_runs=1 succeeded=1 failed=0")
    });
}

/// The worker's pid is the command's (what `kill` and `ps` see), and each
/// run of `--every` reports its own.
#[test]
fn the_pid_reported_is_the_commands() {
    let d = Daemon::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pids");
    let script = format!("echo $$ >> {}; sleep 1", file.display());
    let mut a = agent(
        &d,
        &[
            "--id",
            "pid1",
            "--every",
            "1500ms",
            "--interval",
            "100ms",
            "--",
            "sh",
            "-c",
            &script,
        ],
    )
    .spawn()
    .unwrap();
    let agent_pid = a.id().to_string();
    let pids = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            let pids: Vec<String> = text.lines().map(str::to_string).collect();
            if pids.len() >= n {
                return pids;
            }
            assert!(Instant::now() < deadline, "{n} runs did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    for run in 1..=2 {
        let shell = pids(run)[run - 1].clone();
        assert_ne!(shell, agent_pid);
        d.wait_for("the command's pid", |d| {
            d.json("/api/workers/pid1")["pid"]
                .as_u64()
                .map(|p| p.to_string())
                == Some(shell.clone())
        });
    }
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(a.id() as i32, libc::SIGTERM);
    }
    wait_exit(&mut a, Duration::from_secs(10));
}
