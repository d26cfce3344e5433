//! State across restarts, with the real daemon: SIGTERM keeps everything,
//! `kill -9` at most one save interval, a restart never marks a live fleet
//! inactive, and a bad file never keeps the daemon down.

mod support;

use serde_json::Value;
use std::io::Write;
use std::net::UdpSocket;
use std::path::Path;
use std::time::{Duration, Instant};
use support::Daemon;

fn start(dir: &Path, extra: &[&str]) -> Daemon {
    let mut args = vec!["--state-dir", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    Daemon::start(&args)
}

fn health(d: &Daemon) -> Value {
    d.json("/health")
}

fn beat_all(d: &Daemon, sock: &UdpSocket, ids: impl Iterator<Item = usize>, extra: &str) {
    for i in ids {
        let frame = format!(
            r#"{{"type":"heartbeat","worker_id":"w{i}","status":"working","cpu_usage":{i}{extra}}}"#
        );
        sock.send_to(frame.as_bytes(), d.heartbeat).unwrap();
        if i % 100 == 99 {
            // Stay inside the socket buffer however slow the daemon is.
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// After a restart that restored a registry full of silent workers, a new
/// worker beating every 200 ms is admitted, in the place of the longest
/// silent one; one restored worker that beats again is live and kept.
#[test]
fn a_full_registry_restored_from_the_silent_makes_room_for_a_live_newcomer() {
    const N: usize = 50;
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--max-workers", "50"];
    let d = start(dir.path(), &flags);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    beat_all(&d, &sock, 0..N, "");
    d.wait_for("every worker", |d| health(d)["workers"]["total"] == N);
    let (status, _) = d.stop();
    assert!(status.success());
    let d = start(dir.path(), &flags);
    assert_eq!(health(&d)["workers"]["total"], N);
    beat_all(&d, &sock, [7].into_iter(), "");
    d.wait_for("w7 heard again", |d| {
        d.json("/api/workers/w7")["restored"] != true
    });
    d.wait_for("the newcomer admitted", |d| {
        sock.send_to(
            br#"{"type":"heartbeat","worker_id":"fresh","queue_depth":1}"#,
            d.heartbeat,
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        d.get("/telemetry/fresh").0 == 200
    });
    let h = health(&d);
    assert_eq!(h["workers"]["total"], N, "{h}");
    assert_eq!(h["workers"]["displaced"], 1, "{h}");
    assert_eq!(
        d.get("/telemetry/w7").0,
        200,
        "a live worker is never displaced"
    );
}

#[test]
fn a_restart_keeps_the_fleet_and_marks_no_live_worker_inactive() {
    const N: usize = 1000;
    let dir = tempfile::tempdir().unwrap();
    let d = start(
        dir.path(),
        &["--inactivity-timeout", "4s", "--heartbeat-interval", "1s"],
    );
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    beat_all(&d, &sock, 0..N, "");
    for i in 0..N {
        let run = format!(
            r#"{{"type":"run","worker_id":"w{i}","duration_ms":{},"ok":{}}}"#,
            100 + i,
            i % 10 != 0
        );
        sock.send_to(run.as_bytes(), d.heartbeat).unwrap();
        if i % 100 == 99 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    d.wait_for("every frame applied", |d| {
        health(d)["frames"]["applied"].as_u64() == Some(2 * N as u64)
    });
    let before = d.json("/api/workers/w7/metrics");
    let (status, _) = d.stop();
    assert!(status.success());
    // Down for longer than the timeout: judged on its last frame alone,
    // every worker would be inactive at the first sweep.
    std::thread::sleep(Duration::from_millis(4500));

    let d = start(
        dir.path(),
        &["--inactivity-timeout", "4s", "--heartbeat-interval", "1s"],
    );
    let started = Instant::now();
    assert!(d.log_has(&format!("restored {N} workers")));
    let list = d.json("/api/workers");
    assert_eq!(list.as_array().unwrap().len(), N);
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|w| w["restored"] == true && w["status"] == "working")
    );
    let w7 = d.json("/api/workers/w7");
    assert_eq!(
        (w7["cpu_usage"].as_f64(), w7["runs"]["total"].as_u64()),
        (Some(7.0), Some(1))
    );
    let after = d.json("/api/workers/w7/metrics");
    for key in [
        "total_runs",
        "succeeded",
        "failed",
        "avg_execution_ms",
        "p50_execution_ms",
    ] {
        assert_eq!(after[key], before[key], "{key}");
    }
    let history = d.json("/api/workers/w7/history");
    assert_eq!(history["samples"].as_array().unwrap().len(), 1);
    assert_eq!(health(&d)["state"]["restored"], N as u64);

    // Half the fleet keeps beating; during the grace no one is judged.
    while started.elapsed() < Duration::from_secs(3) {
        beat_all(&d, &sock, 0..N / 2, "");
        assert_eq!(
            health(&d)["workers"]["inactive"],
            0,
            "judged within the grace"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    // After it, the silent half is marked, the beating half is not.
    d.wait_for("the silent half marked inactive", |d| {
        beat_all(d, &sock, 0..N / 2, "");
        health(d)["workers"]["inactive"] == N as u64 / 2
    });
    assert_eq!(d.json("/telemetry/w1")["status"], "working");
    assert!(
        d.json("/telemetry/w1").get("restored").is_none(),
        "heard from since"
    );
    assert_eq!(d.json("/telemetry/w999")["status"], "inactive");
}

#[test]
fn sigterm_loses_nothing_it_read() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path(), &[]);
    let mut s = d.tcp();
    let mut frames = String::from("{\"type\":\"hello\",\"worker_id\":\"t1\"}\n");
    for seq in 1..=300 {
        frames.push_str(&format!(
            "{{\"type\":\"heartbeat\",\"seq\":{seq},\"queue_depth\":{seq}}}\n"
        ));
    }
    s.write_all(frames.as_bytes()).unwrap();
    // Read by the daemon, not yet all applied: then stop at once.
    d.wait_for("all frames read", |d| {
        health(d)["frames"]["received"] == 301
    });
    let (status, _) = d.stop();
    assert!(status.success());
    let d = start(dir.path(), &[]);
    let t1 = d.json("/api/workers/t1");
    assert_eq!(t1["messages_processed"], 301);
    assert_eq!(t1["queue_depth"], 300);
    assert_eq!(t1["last_seq"], 300);
}

#[test]
fn kill_9_loses_at_most_one_save_interval() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path(), &["--state-save-interval", "1s"]);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    beat_all(&d, &sock, 0..50, "");
    d.wait_for("applied", |d| health(d)["frames"]["applied"] == 50);
    let saves = health(&d)["state"]["saves"].as_u64().unwrap();
    // The next save holds all 50.
    d.wait_for("a save after the frames", |d| {
        health(d)["state"]["saves"].as_u64().unwrap() > saves
    });
    beat_all(&d, &sock, 50..60, "");
    d.signal(libc::SIGKILL);
    drop(d);
    let d = start(dir.path(), &[]);
    let n = d.json("/api/workers").as_array().unwrap().len();
    assert!((50..=60).contains(&n), "restored {n}");
}

/// The histories and run windows live in `state_dir/series`, saved on a
/// clock of their own: after `kill -9` they come back as of the last
/// series save, beside the registry's newer state.
#[test]
fn kill_9_keeps_the_series_of_the_last_series_save() {
    let dir = tempfile::tempdir().unwrap();
    let flags = [
        "--state-save-interval",
        "1s",
        "--state-series-interval",
        "1h",
    ];
    let d = start(dir.path(), &flags);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let run = r#"{"type":"run","worker_id":"w1","duration_ms":20,"ok":true}"#;
    beat_all(&d, &sock, 1..2, "");
    sock.send_to(run.as_bytes(), d.heartbeat).unwrap();
    d.wait_for("applied", |d| health(d)["frames"]["applied"] == 2);
    // The saver's first turn writes both files; the series file then
    // waits its hour.
    d.wait_for("both files saved", |d| {
        health(d)["state"]["saves"].as_u64() >= Some(2)
    });
    assert!(dir.path().join("series").exists());
    assert!(health(&d)["state"]["last_series_save_ms"].is_u64());
    sock.send_to(run.as_bytes(), d.heartbeat).unwrap();
    beat_all(&d, &sock, 1..2, r#","queue_depth":9"#);
    d.wait_for("applied", |d| health(d)["frames"]["applied"] == 4);
    let saves = health(&d)["state"]["saves"].as_u64().unwrap();
    d.wait_for("a registry save after them", |d| {
        health(d)["state"]["saves"].as_u64().unwrap() > saves
    });
    d.signal(libc::SIGKILL);
    drop(d);
    let d = start(dir.path(), &[]);
    let w1 = d.json("/api/workers/w1");
    assert_eq!(w1["queue_depth"], 9, "the registry's state");
    assert_eq!(w1["runs"]["total"], 2, "the counters are the registry's");
    let history = d.json("/api/workers/w1/history");
    assert_eq!(history["samples"].as_array().unwrap().len(), 1);
    assert_eq!(
        d.json("/api/workers/w1/metrics")["window_runs"],
        1,
        "the run window as of the series save"
    );
}

#[test]
fn a_bad_file_is_kept_aside_and_the_daemon_starts() {
    let dir = tempfile::tempdir().unwrap();
    // A real file, cut short.
    let d = start(dir.path(), &[]);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    beat_all(&d, &sock, 0..20, "");
    d.wait_for("applied", |d| health(d)["frames"]["applied"] == 20);
    assert!(d.stop().0.success());
    let path = dir.path().join("registry");
    let whole = std::fs::read(&path).unwrap();
    for bad in [
        whole[..whole.len() / 2].to_vec(),
        b"\x00garbage\xffnot a registry".to_vec(),
    ] {
        std::fs::write(&path, &bad).unwrap();
        let d = start(dir.path(), &[]);
        assert!(d.log_has("is unreadable"), "says why");
        assert_eq!(d.json("/api/workers"), serde_json::json!([]));
        assert!(!path.exists() || d.stop().0.success());
    }
    let aside = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            name.to_string_lossy().starts_with("registry.bad-")
        })
        .count();
    assert_eq!(aside, 2, "each bad file is kept");
}
