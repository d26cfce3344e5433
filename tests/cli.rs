//! The real `muster` binary against a real `musterd`.

mod support;
use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::Daemon;

const MUSTER: &str = env!("CARGO_BIN_EXE_muster");

fn muster(d: &Daemon, args: &[&str]) -> Output {
    Command::new(MUSTER)
        .args(args)
        .env("MUSTER_URL", format!("http://{}", d.http))
        .env("MUSTER_HEARTBEAT_ADDR", d.heartbeat.to_string())
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(o: &Output) -> (i32, String, String) {
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into(),
        String::from_utf8_lossy(&o.stderr).into(),
    )
}

#[test]
fn beat_then_workers_status_and_health() {
    let d = Daemon::start(&[]);
    let (code, _, err) = text(&muster(
        &d,
        &[
            "beat", "--id", "w1", "--status", "working", "--cpu", "50", "--mem", "12.5", "--queue",
            "3",
        ],
    ));
    assert_eq!(code, 0, "{err}");
    d.wait_applied("w1", 1);
    let (code, _, _) = text(&muster(&d, &["beat", "--id", "w2", "--tcp"]));
    assert_eq!(code, 0);
    assert_eq!(d.json("/api/workers/w2")["transport"], "tcp");

    let (code, out2, _) = text(&muster(&d, &["workers"]));
    assert_eq!(code, 0);
    let lines: Vec<&str> = out2.lines().collect();
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("LAST SEEN"),
        "{out2}"
    );
    let w1 = lines.iter().find(|l| l.starts_with("w1")).unwrap();
    for cell in ["working", "yes", "50.0", "12.5", "3", "s ago"] {
        assert!(w1.contains(cell), "{w1:?} lacks {cell}");
    }
    assert!(
        !out2.contains('\x1b'),
        "no colour when stdout is not a terminal"
    );

    let (_, json_out, _) = text(&muster(&d, &["workers", "--status", "working", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&json_out).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);

    let (code, out, _) = text(&muster(&d, &["status", "w1"]));
    assert_eq!(code, 0);
    assert!(
        out.lines()
            .any(|l| l.starts_with("cpu_usage") && l.ends_with("50.0")),
        "{out}"
    );
    let (code, out, _) = text(&muster(&d, &["status", "w1", "--json"]));
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["queue_depth"],
        3
    );

    let (code, out, _) = text(&muster(&d, &["health"]));
    assert_eq!(code, 0);
    assert!(out.contains("2 total, 2 active"), "{out}");

    let (code, _, _) = text(&muster(&d, &["beat", "--id", "w1", "--bye"]));
    assert_eq!(code, 0);
    d.wait_for("terminated", |d| {
        d.json("/telemetry/w1")["status"] == "terminated"
    });
}

#[test]
fn exit_codes() {
    let d = Daemon::start(&[]);
    let (code, _, err) = text(&muster(&d, &["status", "nobody"]));
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("no worker nobody"));
    let (code, _, _) = text(&muster(&d, &["frobnicate"]));
    assert_eq!(code, 2);
    let (code, _, _) = text(&muster(&d, &["beat", "--cpu", "5"]));
    assert_eq!(code, 2, "beat without --id");
    let (code, _, err) = text(&muster(&d, &["beat", "--id", "bad id"]));
    assert_eq!(code, 2, "{err}");
    let (code, _, _) = text(&muster(&d, &["beat", "--id", "w", "--cpu", "lots"]));
    assert_eq!(code, 2);
    let (code, _, _) = text(&muster(&d, &["workers", "--status", "sleepy"]));
    assert_eq!(code, 2);
    for sub in ["workers", "status", "health", "watch", "beat", "bench"] {
        let (code, out, _) = text(&muster(&d, &[sub, "--help"]));
        assert_eq!(code, 0, "{sub} --help");
        assert!(out.contains("usage: muster"), "{sub} --help: {out}");
    }
}

#[test]
fn a_closed_port_is_exit_1_with_one_clear_line() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let out = Command::new(MUSTER)
        .args(["--url", &format!("http://{port}"), "workers"])
        .output()
        .unwrap();
    let (code, _, err) = text(&out);
    assert_eq!(code, 1);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("cannot reach musterd") && !err.contains("panicked"),
        "{err}"
    );
}

#[test]
fn watch_streams_lines_and_reconnects_after_a_restart() {
    let d = Daemon::start(&[]);
    let http = d.http;
    let mut watch = Command::new(MUSTER)
        .args(["--url", &format!("http://{http}"), "watch"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = watch.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let wait_line = |needle: &str| {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) if l.contains(needle) => return l,
                Ok(_) => {}
                Err(_) => panic!("watch never printed {needle:?}"),
            }
        }
    };
    std::thread::sleep(Duration::from_millis(300));
    let beat = |d: &Daemon, cpu: &str| {
        let o = muster(d, &["beat", "--id", "wx", "--cpu", cpu]);
        assert!(o.status.success());
    };
    beat(&d, "77");
    wait_line("wx idle cpu=77.0");
    drop(d);
    // A new daemon on the same HTTP port; watch reconnects by itself.
    let d2 = Daemon::start(&["--http-addr", &http.to_string()]);
    beat(&d2, "33");
    wait_line("wx idle cpu=33.0");
    let _ = watch.kill();
    let _ = watch.wait();
}
