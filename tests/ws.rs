//! WebSocket streams against the real daemon, with tungstenite clients.

mod support;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use support::{Daemon, parse_response};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

type Ws = WebSocket<MaybeTlsStream<TcpStream>>;

fn connect(d: &Daemon, path: &str) -> Ws {
    let (mut ws, resp) = tungstenite::connect(format!("ws://{}{path}", d.http)).expect("upgrade");
    assert_eq!(resp.status().as_u16(), 101);
    if let MaybeTlsStream::Plain(s) = ws.get_mut() {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    }
    ws
}

/// The next JSON text message (pings and pongs are skipped).
fn next(ws: &mut Ws) -> Value {
    loop {
        match ws.read().expect("a message") {
            Message::Text(t) => return serde_json::from_str(&t).unwrap(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Read messages until one satisfies `ok`.
fn until(ws: &mut Ws, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "no message: {what}");
        let m = next(ws);
        if ok(&m) {
            return m;
        }
    }
}

fn beat(d: &Daemon, json: &str) {
    d.udp(json.as_bytes());
}

#[test]
fn snapshot_then_updates_then_removed() {
    let d = Daemon::start(&[]);
    beat(&d, r#"{"type":"heartbeat","worker_id":"w1","cpu_usage":1}"#);
    d.wait_applied("w1", 1);
    let mut ws = connect(&d, "/ws/telemetry");
    let snap = next(&mut ws);
    assert_eq!(snap["type"], "snapshot");
    assert!(snap["timestamp"].as_u64().unwrap() > 0);
    assert_eq!(snap["workers"]["w1"]["cpu_usage"], 1.0);
    assert_eq!(
        snap["workers"]["w1"],
        d.json("/telemetry/w1"),
        "same objects as GET /telemetry"
    );

    beat(
        &d,
        r#"{"type":"heartbeat","worker_id":"w1","cpu_usage":77}"#,
    );
    let up = until(&mut ws, "update", |m| m["type"] == "update");
    assert_eq!(up["workers"]["w1"]["cpu_usage"], 77.0);
    assert_eq!(
        up["workers"].as_object().unwrap().len(),
        1,
        "changed workers only"
    );

    let (status, _, _) = d.request("DELETE /api/workers/w1 HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_eq!(status, 204);
    let gone = until(&mut ws, "removed", |m| m["type"] == "removed");
    assert_eq!(gone["worker_ids"], serde_json::json!(["w1"]));
}

#[test]
fn one_worker_stream_waits_for_its_worker() {
    let d = Daemon::start(&[]);
    let mut ws = connect(&d, "/ws/telemetry/later");
    let snap = next(&mut ws);
    assert_eq!(
        (
            snap["type"].as_str(),
            snap["workers"].as_object().unwrap().len()
        ),
        (Some("snapshot"), 0)
    );
    beat(
        &d,
        r#"{"type":"heartbeat","worker_id":"other","cpu_usage":5}"#,
    );
    beat(
        &d,
        r#"{"type":"heartbeat","worker_id":"later","cpu_usage":9}"#,
    );
    let up = until(&mut ws, "update", |m| m["type"] == "update");
    assert_eq!(
        up["workers"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["later"]
    );
}

#[test]
fn filters_by_status_label_and_fields() {
    let d = Daemon::start(&[]);
    beat(
        &d,
        r#"{"type":"heartbeat","worker_id":"a","status":"idle","labels":{"pool":"scan"}}"#,
    );
    beat(
        &d,
        r#"{"type":"heartbeat","worker_id":"b","status":"working","labels":{"pool":"build"}}"#,
    );
    d.wait_for("both applied", |d| {
        d.get("/telemetry/b").1["status"] == "working"
            && d.get("/telemetry/a").1["labels"]["pool"] == "scan"
    });

    let mut working = connect(
        &d,
        "/ws/telemetry?status=working&fields=cpu_usage,queue_depth",
    );
    let snap = next(&mut working);
    assert_eq!(
        snap["workers"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["b"]
    );
    let mut keys: Vec<&String> = snap["workers"]["b"].as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["cpu_usage", "queue_depth", "worker_id"]);

    let mut scan = connect(&d, "/ws/telemetry?label=pool:scan");
    assert_eq!(
        next(&mut scan)["workers"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["a"]
    );

    // a starts working: it enters the status filter...
    beat(
        &d,
        r#"{"type":"heartbeat","worker_id":"a","status":"working","cpu_usage":3}"#,
    );
    let up = until(&mut working, "a enters", |m| {
        m["type"] == "update" && m["workers"].get("a").is_some()
    });
    assert_eq!(up["workers"]["a"]["cpu_usage"], 3.0);
    // ...and leaving it is told as a removal.
    beat(
        &d,
        r#"{"type":"heartbeat","worker_id":"b","status":"idle"}"#,
    );
    let gone = until(&mut working, "b leaves", |m| m["type"] == "removed");
    assert_eq!(gone["worker_ids"], serde_json::json!(["b"]));
}

#[test]
fn summary_stream_has_seed_000_shape_on_its_cadence() {
    let d = Daemon::start(&["--summary-interval", "200ms"]);
    beat(
        &d,
        r#"{"type":"heartbeat","worker_id":"s1","status":"working","queue_depth":4,"resource_usage":{"rss_mb":52.8}}"#,
    );
    beat(
        &d,
        r#"{"type":"heartbeat","worker_id":"s2","status":"idle","queue_depth":1}"#,
    );
    d.wait_for("both applied", |d| {
        d.get("/telemetry/s1").1["status"] == "working"
            && d.get("/telemetry/s2").1["status"] == "idle"
    });
    let mut ws = connect(&d, "/ws/workers/telemetry");
    let start = Instant::now();
    let mut msgs = Vec::new();
    for _ in 0..4 {
        msgs.push(next(&mut ws));
    }
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(500),
        "4 messages at 200 ms took {took:?}"
    );
    let m = &msgs[3];
    assert_eq!(m["summary"]["total"], 2);
    assert_eq!(m["summary"]["working"], 1);
    assert_eq!(m["summary"]["idle"], 1);
    assert_eq!(m["summary"]["inactive"], 0);
    assert_eq!(m["summary"]["total_queue_depth"], 5);
    assert_eq!(m["workers"]["s1"]["status"], "working");
    assert_eq!(m["workers"]["s1"]["resource_usage"]["rss_mb"], 52.8);
    assert_eq!(m["workers"]["s1"]["queue_depth"], 4);
}

#[test]
fn pings_are_answered_and_close_completes() {
    let d = Daemon::start(&[]);
    let mut ws = connect(&d, "/ws/telemetry");
    next(&mut ws);
    ws.send(Message::Ping(b"hi".to_vec().into())).unwrap();
    loop {
        match ws.read().unwrap() {
            Message::Pong(p) => {
                assert_eq!(&p[..], b"hi");
                break;
            }
            Message::Text(_) => {}
            other => panic!("{other:?}"),
        }
    }
    ws.close(None).unwrap();
    loop {
        match ws.read() {
            Ok(Message::Close(_)) | Err(tungstenite::Error::ConnectionClosed) => break,
            Ok(_) => {}
            Err(e) => panic!("close handshake: {e}"),
        }
    }
    d.wait_for("client gone", |d| {
        d.json("/health")["connections"]["ws_clients"] == 0
    });
}

fn raw_upgrade(d: &Daemon, path: &str, extra: &str) -> (u16, String) {
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{extra}\r\n"
    );
    let (status, head, _) = d.request(&req);
    (status, head)
}

#[test]
fn bad_upgrades_are_refused() {
    let d = Daemon::start(&["--ws-max-clients", "1"]);
    let key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    let (status, head) = raw_upgrade(&d, "/ws/telemetry", "Sec-WebSocket-Version: 13\r\n");
    assert_eq!(status, 400, "no key");
    assert!(head.contains("Sec-WebSocket-Version: 13"));
    let (status, head) = raw_upgrade(
        &d,
        "/ws/telemetry",
        &format!("{key}Sec-WebSocket-Version: 8\r\n"),
    );
    assert_eq!(status, 400, "version 8");
    assert!(head.contains("Sec-WebSocket-Version: 13"), "{head}");
    let (status, _) = raw_upgrade(
        &d,
        "/ws/telemetry/bad%20id",
        &format!("{key}Sec-WebSocket-Version: 13\r\n"),
    );
    assert_eq!(status, 400, "bad id");
    let (status, _, _) = d.request("GET /ws/telemetry HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_eq!(status, 426, "plain GET");
    let _first = connect(&d, "/ws/telemetry");
    d.wait_for("one client", |d| {
        d.json("/health")["connections"]["ws_clients"] == 1
    });
    let (status, _) = raw_upgrade(
        &d,
        "/ws/telemetry",
        &format!("{key}Sec-WebSocket-Version: 13\r\n"),
    );
    assert_eq!(status, 503, "ws_max_clients");
}

#[test]
fn oversized_client_frames_close_with_1009() {
    let d = Daemon::start(&[]);
    let mut ws = connect(&d, "/ws/telemetry");
    next(&mut ws);
    // Send a 1 MiB text frame; the server closes after the first 4 KiB.
    let _ = ws.send(Message::text("x".repeat(1 << 20)));
    let code = loop {
        match ws.read() {
            Ok(Message::Close(Some(f))) => break Some(u16::from(f.code)),
            Ok(Message::Close(None)) => break None,
            Ok(_) => {}
            Err(_) => break None,
        }
    };
    assert_eq!(code, Some(1009));
    d.wait_for("counted", |d| {
        d.json("/health")["connections"]["ws_closed_too_big"] == 1
    });
}

#[test]
fn a_client_that_never_reads_is_closed_and_others_keep_streaming() {
    // Large worker states (80 KB each) fill the stuck client's buffers fast.
    let d = Daemon::start(&[
        "--ws-stall-timeout",
        "1s",
        "--ws-max-queue-bytes",
        "64KiB",
        "--max-worker-state-bytes",
        "1MiB",
    ]);
    // A raw client: handshake, then never read again.
    let mut stuck = TcpStream::connect(d.http).unwrap();
    stuck
        .write_all(b"GET /ws/telemetry HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        .unwrap();
    let mut head = [0u8; 256];
    let n = stuck.read(&mut head).unwrap();
    assert_eq!(parse_response(&head[..n]).0, 101);
    let mut reader = connect(&d, "/ws/telemetry");
    next(&mut reader);

    // Big, changing states so that the stuck client's socket buffers fill.
    let tasks: Vec<String> = (0..200)
        .map(|i| format!(r#"{{"task_id":"t{i}","note":"{}"}}"#, "n".repeat(100)))
        .collect();
    let pad = tasks.join(",");
    let started = Instant::now();
    let mut seq = 0;
    while d.json("/health")["connections"]["ws_closed_stalled"] == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "stuck client never closed"
        );
        for w in 0..20 {
            seq += 1;
            beat(
                &d,
                &format!(
                    r#"{{"type":"heartbeat","worker_id":"w{w}","seq":{seq},"running_tasks":[{pad}]}}"#
                ),
            );
        }
        // The healthy client keeps receiving.
        assert_eq!(next(&mut reader)["type"], "update");
        std::thread::sleep(Duration::from_millis(20));
    }
    let clients = d.json("/health")["connections"]["ws_clients"]
        .as_u64()
        .unwrap();
    assert_eq!(clients, 1, "only the reader is left");
    // The reader still gets fresh state.
    beat(
        &d,
        r#"{"type":"heartbeat","worker_id":"w0","cpu_usage":42}"#,
    );
    until(&mut reader, "fresh update", |m| {
        m["workers"]["w0"]["cpu_usage"] == 42.0
    });
}

#[test]
fn a_client_that_vanishes_is_cleaned_up() {
    let d = Daemon::start(&[]);
    {
        let mut ws = connect(&d, "/ws/telemetry");
        next(&mut ws);
        d.wait_for("one", |d| {
            d.json("/health")["connections"]["ws_clients"] == 1
        });
        // Dropped without a close frame.
    }
    d.wait_for("gone", |d| {
        d.json("/health")["connections"]["ws_clients"] == 0
    });
}

#[test]
fn a_large_snapshot_and_large_updates_arrive_whole() {
    let d = Daemon::start(&[]);
    let pad = "p".repeat(200);
    for i in 0..400 {
        beat(
            &d,
            &format!(r#"{{"type":"heartbeat","worker_id":"big{i}","labels":{{"pad":"{pad}"}}}}"#),
        );
    }
    d.wait_for("all", |d| d.json("/health")["frames"]["applied"] == 400);
    let mut ws = connect(&d, "/ws/telemetry");
    let snap = next(&mut ws);
    assert_eq!(
        snap["workers"].as_object().unwrap().len(),
        400,
        "a {}-byte snapshot",
        snap.to_string().len()
    );
    // A ping in the middle of a large frame must not break it.
    ws.send(Message::Ping(b"mid".to_vec().into())).unwrap();
    for i in 0..400 {
        beat(
            &d,
            &format!(
                r#"{{"type":"heartbeat","worker_id":"big{i}","cpu_usage":9,"labels":{{"pad":"{pad}"}}}}"#
            ),
        );
    }
    let mut seen = std::collections::HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.len() < 400 {
        assert!(Instant::now() < deadline, "saw {} of 400", seen.len());
        let m = next(&mut ws);
        for (id, w) in m["workers"].as_object().into_iter().flatten() {
            if w["cpu_usage"] == 9.0 {
                seen.insert(id.clone());
            }
        }
    }
}

#[test]
fn many_clients_each_get_every_change() {
    // Enough clients that the fan-out is split between threads on a machine
    // with two cores or more, plain and filtered ones mixed so every share
    // holds both kinds.
    let d = Daemon::start(&[]);
    beat(&d, r#"{"type":"heartbeat","worker_id":"m1","cpu_usage":1}"#);
    d.wait_applied("m1", 1);
    let mut clients: Vec<Ws> = (0..100)
        .map(|i| {
            let path = if i % 3 == 0 {
                "/ws/telemetry?status=idle"
            } else {
                "/ws/telemetry"
            };
            connect(&d, path)
        })
        .collect();
    for ws in &mut clients {
        assert_eq!(next(ws)["type"], "snapshot");
    }
    for cpu in 2..=4 {
        beat(
            &d,
            &format!(r#"{{"type":"heartbeat","worker_id":"m1","seq":{cpu},"cpu_usage":{cpu}}}"#),
        );
        for (i, ws) in clients.iter_mut().enumerate() {
            until(ws, &format!("client {i} sees cpu {cpu}"), |m| {
                m["type"] == "update" && m["workers"]["m1"]["cpu_usage"] == cpu as f64
            });
        }
    }
}

/// 200 clients that never read, on a 2,000-worker fleet whose snapshot is
/// about 16 MB. Half are plain: they share one framed snapshot. Half are
/// filtered: each renders its own snapshot a 64 KiB fragment at a time, as
/// its socket takes it. Either way RSS grows by about one snapshot, not 200
/// (3.2 GB once); each client's kernel buffer is small, so every one is
/// closed at `ws_stall_timeout`; once they are gone, RSS is back within
/// 10 % of where it was. Clients that read get the whole snapshot, as one
/// message, both ways.
#[test]
fn two_hundred_clients_that_never_read_cost_one_snapshot_and_give_it_back() {
    let d = Daemon::start(&["--ws-stall-timeout", "2s"]);
    let pid = d.child.id();
    let rss = || support::rss_kib(pid);
    let labels: Vec<String> = (0..28)
        .map(|i| format!(r#""k{i:02}":"{}""#, "v".repeat(260)))
        .collect();
    let labels = labels.join(",");
    for i in 0..2000 {
        beat(
            &d,
            &format!(
                r#"{{"type":"heartbeat","worker_id":"fat{i:04}","status":"idle","labels":{{{labels}}}}}"#
            ),
        );
        if i % 100 == 0 {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    d.wait_for("2,000 workers", |d| {
        d.json("/health")["workers"]["total"] == 2000
    });
    let snapshot_bytes = d
        .request("GET /telemetry HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .2
        .len() as u64;
    assert!(snapshot_bytes > 15_000_000, "{snapshot_bytes}");
    std::thread::sleep(Duration::from_millis(1500));
    let before = rss();

    let stuck: Vec<TcpStream> = (0..200)
        .map(|i| {
            let path = if i % 2 == 0 { "/ws/telemetry" } else { "/ws/telemetry?status=idle" };
            let mut s = TcpStream::connect(d.http).unwrap();
            write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").unwrap();
            s
        })
        .collect();
    let opened = Instant::now();
    for path in ["/ws/telemetry", "/ws/telemetry?status=idle&fields=status"] {
        let snap = next(&mut connect(&d, path));
        assert_eq!(snap["type"], "snapshot", "{path}");
        let workers = snap["workers"].as_object().unwrap();
        assert_eq!(workers.len(), 2000, "{path}");
        assert_eq!(workers["fat1999"]["status"], "idle", "{path}");
    }
    std::thread::sleep(Duration::from_millis(500));
    let during = rss();
    assert!(
        during < before + 3 * snapshot_bytes / 1024,
        "RSS {before} → {during} KiB with a {snapshot_bytes}-byte snapshot"
    );
    d.wait_for("all 200 closed as stalled", |d| {
        d.json("/health")["connections"]["ws_closed_stalled"] == 200
    });
    let took = opened.elapsed();
    assert!(
        took < Duration::from_secs(6),
        "closed after {took:?}, stall timeout 2 s"
    );
    drop(stuck);
    std::thread::sleep(Duration::from_millis(2000));
    let after = rss();
    assert!(
        after <= before + before / 10,
        "RSS {before} KiB before, {during} during, {after} after"
    );
    eprintln!("RSS {before} KiB before, {during} during, {after} after; closed in {took:?}");
}

/// Behind a local reverse proxy every client is 127.0.0.1: 300 streams
/// from loopback are all admitted, past the 256 one address may hold,
/// and a loopback peer held to the caps (`trusted_proxies = none`) is not.
#[test]
fn three_hundred_streams_from_loopback_are_all_admitted() {
    let open = |d: &Daemon| -> (Vec<TcpStream>, usize) {
        let mut held = Vec::new();
        let mut upgraded = 0;
        for _ in 0..300 {
            let mut s = TcpStream::connect(d.http).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.write_all(b"GET /ws/workers/telemetry HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").unwrap();
            let mut head = [0u8; 12];
            if s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 101") {
                upgraded += 1;
            }
            held.push(s);
        }
        (held, upgraded)
    };
    let d = Daemon::start(&[]);
    let (held, upgraded) = open(&d);
    assert_eq!(upgraded, 300);
    assert_eq!(d.json("/health")["connections"]["ws_clients"], 300);
    drop(held);
    let d = Daemon::start(&["--trusted-proxies", "none"]);
    let (_held, upgraded) = open(&d);
    assert!(
        upgraded <= 256,
        "{upgraded} upgraded past the per-address cap"
    );
}

/// 2,000 WebSocket clients connecting at once (dashboards after a restart)
/// all get their upgrade and their snapshot: none is lost to a full listen
/// queue or refused. `muster-bench ws` connects them concurrently and fails
/// unless every one holds its snapshot; its time is in BENCHMARKS.md.
#[test]
fn two_thousand_clients_connecting_at_once_all_get_their_snapshot() {
    let d = Daemon::start(&[
        "--http-max-connections",
        "4096",
        "--http-max-connections-per-ip",
        "4096",
    ]);
    for i in 0..50 {
        beat(&d, &format!(r#"{{"type":"heartbeat","worker_id":"w{i}"}}"#));
    }
    d.wait_for("50 workers", |d| {
        d.json("/health")["workers"]["total"] == 50
    });
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_muster-bench"))
        .args(["ws", "--clients", "2000", "--workers", "5", "--rate", "5"])
        .args([
            "--duration",
            "1s",
            "--json",
            "--pid",
            &d.child.id().to_string(),
        ])
        .args(["--url", &format!("http://{}", d.http)])
        .args(["--heartbeat-addr", &d.heartbeat.to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(r["clients"], 2000);
    assert!(r["connect_ms"].as_f64().is_some());
    assert_eq!(d.json("/health")["connections"]["ws_accepted"], 2000);
    eprintln!(
        "2,000 clients held their snapshot after {} ms",
        r["connect_ms"]
    );
}
