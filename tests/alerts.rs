//! Built-in alerts end to end: a worker goes silent, the alert reaches a
//! real Prometheus Alertmanager (and a webhook), and resolves when the
//! worker beats again; an Alertmanager that is down costs retries, counted,
//! and nothing else.

mod support;

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use support::{Daemon, require, runs};

const MUSTER: &str = env!("CARGO_BIN_EXE_muster");

fn beat(d: &Daemon, id: &str, status: &str) {
    d.udp(format!(r#"{{"type":"heartbeat","worker_id":"{id}","status":"{status}"}}"#).as_bytes());
}

/// A GET to a plain HTTP server; the body as JSON.
fn get_json(addr: &str, path: &str) -> Value {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let (_, _, body) = support::parse_response(&buf);
    serde_json::from_slice(&body).unwrap_or(Value::Null)
}

struct Alertmanager {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn alertmanager() -> Option<Alertmanager> {
    if !require(
        "prometheus-alertmanager",
        runs("prometheus-alertmanager", &["--version"]),
    ) {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("am.yml");
    std::fs::write(
        &cfg,
        "route:\n  receiver: none\nreceivers:\n  - name: none\n",
    )
    .unwrap();
    let addr = format!("127.0.0.1:{}", support::free_port());
    let child = Command::new("prometheus-alertmanager")
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!(
            "--storage.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={addr}"))
        .arg("--cluster.listen-address=")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(&addr).is_err() {
        assert!(Instant::now() < deadline, "alertmanager did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    Some(Alertmanager {
        child,
        addr,
        _dir: dir,
    })
}

/// The worker_inactive alerts Alertmanager holds for `id`.
fn am_alerts(am: &Alertmanager, id: &str) -> Vec<Value> {
    get_json(&am.addr, "/api/v2/alerts")
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|a| a["labels"]["alertname"] == "worker_inactive" && a["labels"]["worker_id"] == id)
        .collect()
}

/// A webhook receiver: each POST body, as JSON, on a channel.
fn webhook() -> (String, mpsc::Receiver<Value>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut len = 0;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            let _ = r.read_exact(&mut body);
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            let _ = tx.send(serde_json::from_slice(&body).unwrap_or(Value::Null));
        }
    });
    (addr, rx)
}

fn wait(what: &str, within: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !ok() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A silent worker's alert reaches a real Alertmanager with its labels and
/// annotations, and the webhook; it resolves in both when the worker beats
/// again. `/api/alerts`, `/ws/alerts`, `muster alerts` and the log say the
/// same.
#[test]
fn a_silent_worker_pages_through_alertmanager_and_resolves() {
    let Some(am) = alertmanager() else { return };
    let (hook, posts) = webhook();
    let d = Daemon::start(&[
        "--heartbeat-interval",
        "1s",
        "--inactivity-timeout",
        "1s",
        "--alert-for",
        "1s",
        "--alert-resend",
        "1s",
        "--alertmanager-url",
        &format!("http://{}", am.addr),
        "--alert-webhook-url",
        &format!("http://{hook}/hook"),
    ]);
    let (mut ws, _) = tungstenite::connect(format!("ws://{}/ws/alerts", d.http)).unwrap();
    let first: Value = serde_json::from_str(ws.read().unwrap().to_text().unwrap()).unwrap();
    assert_eq!(
        (first["type"].as_str(), &first["firing"]),
        (Some("snapshot"), &serde_json::json!([]))
    );

    beat(&d, "w1", "working");
    beat(&d, "w2", "working");
    d.wait_applied("w1", 1);
    // w2 keeps beating; w1 falls silent.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let keep = {
        let (stop, hb) = (stop.clone(), d.heartbeat);
        std::thread::spawn(move || {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = s.send_to(
                    br#"{"type":"heartbeat","worker_id":"w2","status":"working"}"#,
                    hb,
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    wait(
        "w1 never paged in Alertmanager",
        Duration::from_secs(20),
        || !am_alerts(&am, "w1").is_empty(),
    );
    let a = &am_alerts(&am, "w1")[0];
    assert_eq!(a["labels"]["severity"], "warning");
    assert_eq!(a["annotations"]["summary"], "Worker w1 is silent");
    assert_eq!(a["status"]["state"], "active");
    assert!(
        get_json(&am.addr, "/api/v2/alerts")
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["labels"]["worker_id"] != "w2")
    );

    let mut fired = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    while fired.is_none() && Instant::now() < deadline {
        if let Ok(p) = posts.recv_timeout(Duration::from_millis(200)) {
            if p["alerts"][0]["labels"]["worker_id"] == "w1" && p["status"] == "firing" {
                fired = Some(p);
            }
        }
    }
    let fired = fired.expect("no firing webhook post for w1");
    assert_eq!(fired["alerts"][0]["labels"]["alertname"], "worker_inactive");

    let api = d.json("/api/alerts");
    assert_eq!(api["firing"][0]["labels"]["worker_id"], "w1");
    let update: Value = serde_json::from_str(ws.read().unwrap().to_text().unwrap()).unwrap();
    assert_eq!(update["type"], "update");
    assert_eq!(update["firing"][0]["alertname"], "worker_inactive");
    let out = Command::new(MUSTER)
        .args(["--url", &format!("http://{}", d.http), "alerts"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "firing: exit 3");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("firing  worker_inactive  warning   worker_id=w1")),
        "{text}"
    );
    d.wait_log("alert firing: worker_inactive worker_id=w1");

    // w1 beats again: resolved everywhere.
    beat(&d, "w1", "working");
    wait(
        "w1 never resolved in Alertmanager",
        Duration::from_secs(20),
        || am_alerts(&am, "w1").is_empty(),
    );
    let mut resolved = false;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !resolved && Instant::now() < deadline {
        if let Ok(p) = posts.recv_timeout(Duration::from_millis(200)) {
            resolved = p["status"] == "resolved" && p["alerts"][0]["labels"]["worker_id"] == "w1";
        }
    }
    assert!(resolved, "no resolved webhook post");
    let api = d.json("/api/alerts");
    assert_eq!(api["firing"], serde_json::json!([]));
    assert_eq!(api["resolved"][0]["labels"]["worker_id"], "w1");
    d.wait_log("alert resolved: worker_inactive worker_id=w1");
    let h = d.json("/health");
    assert!(
        h["alerts"]["sent"].as_u64().unwrap() >= 4,
        "{}",
        h["alerts"]
    );
    assert_eq!(h["alerts"]["failed"], 0);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    keep.join().unwrap();
}

/// Alertmanager down: each try fails, is counted and retried with backoff;
/// the daemon answers as ever.
#[test]
fn an_alertmanager_that_is_down_costs_counted_retries_only() {
    let closed = format!("http://127.0.0.1:{}", support::free_port());
    let d = Daemon::start(&[
        "--inactivity-timeout",
        "1s",
        "--heartbeat-interval",
        "1s",
        "--alert-for",
        "0s",
        "--alertmanager-url",
        &closed,
    ]);
    beat(&d, "gone", "idle");
    d.wait_applied("gone", 1);
    let failed = |d: &Daemon| d.json("/health")["alerts"]["failed"].as_u64().unwrap();
    wait("no failed post counted", Duration::from_secs(15), || {
        failed(&d) >= 2
    });
    assert_eq!(
        d.json("/api/alerts")["firing"][0]["labels"]["worker_id"],
        "gone"
    );
    assert!(
        d.log_has("cannot post alerts to"),
        "{:?}",
        d.log.lock().unwrap()
    );
    // Backoff: 1 s, 2 s, 4 s… not a try a second.
    let before = failed(&d);
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        failed(&d) - before <= 2,
        "{} tries in 3 s",
        failed(&d) - before
    );
    assert_eq!(d.get("/health").0, 200);
    let (_, _, body) =
        d.request("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    let text = String::from_utf8(body).unwrap();
    assert!(
        text.contains("muster_alert_notifications_total{outcome=\"failed\"} "),
        "{text}"
    );
    assert!(text.contains("muster_alerts_firing 1\n"), "{text}");
}

/// For BENCHMARKS.md (bench/alerts.sh, never a timed test): from the
/// moment a worker is marked inactive (its `/ws/telemetry` update) to the
/// webhook post of its `worker_inactive` alert, less `alert_for`.
#[test]
#[ignore = "a benchmark: bench/alerts.sh"]
fn alert_latency_bench() {
    let (hook, posts) = webhook();
    let d = Daemon::start(&[
        "--heartbeat-interval",
        "1s",
        "--inactivity-timeout",
        "2s",
        "--alert-for",
        "3s",
        "--alert-webhook-url",
        &format!("http://{hook}/"),
    ]);
    let (mut ws, _) = tungstenite::connect(format!("ws://{}/ws/telemetry", d.http)).unwrap();
    let mut delays = Vec::new();
    for i in 0..8 {
        let id = format!("lat-{i}");
        beat(&d, &id, "working");
        let inactive_at = loop {
            let tungstenite::Message::Text(t) = ws.read().unwrap() else {
                continue;
            };
            let m: Value = serde_json::from_str(&t).unwrap();
            if m["workers"][&id]["status"] == "inactive" {
                break Instant::now();
            }
        };
        let posted_at = loop {
            let p = posts
                .recv_timeout(Duration::from_secs(30))
                .expect("no post");
            if p["status"] == "firing"
                && p["alerts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|a| a["labels"]["worker_id"] == id.as_str())
            {
                break Instant::now();
            }
        };
        delays.push((posted_at - inactive_at).as_secs_f64() - 3.0);
    }
    delays.sort_by(f64::total_cmp);
    println!(
        "alerts: inactivity mark to webhook post, less alert_for (3 s), 8 workers: median {:.0} ms, max {:.0} ms",
        delays[delays.len() / 2] * 1000.0,
        delays[delays.len() - 1] * 1000.0
    );
}
