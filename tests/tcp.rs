//! Heartbeats over TCP against the real daemon: sessions, errors,
//! takeover, timeouts and backpressure.

mod support;
use std::io::Write;
use std::time::{Duration, Instant};
use support::{Daemon, closed, read_line};

#[test]
fn hello_gets_welcome_and_frames_apply() {
    let d = Daemon::start(&["--heartbeat-interval", "2s", "--inactivity-timeout", "7s"]);
    let mut s = d.tcp();
    s.write_all(b"{\"type\":\"hello\",\"worker_id\":\"t1\",\"pid\":42,\"hostname\":\"box\",\"capacity\":4,\"labels\":{\"pool\":\"scan\"}}\n")
        .unwrap();
    let w = read_line(&mut s).unwrap();
    assert_eq!(w["type"], "welcome");
    assert_eq!(w["heartbeat_interval_ms"], 2000);
    assert_eq!(w["inactivity_timeout_ms"], 7000);
    assert_eq!(d.json("/telemetry/t1")["status"], "created");
    s.write_all(b"{\"type\":\"heartbeat\",\"status\":\"working\",\"cpu_usage\":80}\r\n{\"type\":\"run\",\"duration_ms\":120,\"ok\":false}\n")
        .unwrap();
    d.wait_for("applied", |d| {
        d.json("/api/workers/t1")["messages_processed"] == 3
    });
    let w = d.json("/api/workers/t1");
    assert_eq!(
        (w["status"].as_str(), w["cpu_usage"].as_f64()),
        (Some("working"), Some(80.0))
    );
    assert_eq!(
        (
            w["pid"].as_u64(),
            w["hostname"].as_str(),
            w["capacity"].as_u64()
        ),
        (Some(42), Some("box"), Some(4))
    );
    assert_eq!(w["transport"], "tcp");
    assert_eq!(w["labels"]["pool"], "scan");
    assert_eq!(w["runs"]["failed"], 1);
    s.write_all(b"{\"type\":\"bye\"}\n").unwrap();
    d.wait_for("terminated", |d| {
        d.json("/telemetry/t1")["status"] == "terminated"
    });
}

#[test]
fn bad_frames_get_error_lines_and_the_session_continues() {
    let d = Daemon::start(&[]);
    let mut s = d.tcp();
    s.write_all(b"{\"type\":\"hello\",\"worker_id\":\"t2\"}\n")
        .unwrap();
    assert_eq!(read_line(&mut s).unwrap()["type"], "welcome");
    s.write_all(
        b"nonsense\n{\"type\":\"dance\"}\n{\"type\":\"heartbeat\",\"worker_id\":\"other\"}\n",
    )
    .unwrap();
    for code in ["not_json", "unknown_type", "worker_mismatch"] {
        let e = read_line(&mut s).unwrap();
        assert_eq!(
            (e["type"].as_str(), e["code"].as_str()),
            (Some("error"), Some(code))
        );
        assert!(e["message"].is_string());
    }
    s.write_all(b"{\"type\":\"heartbeat\",\"queue_depth\":4}\n")
        .unwrap();
    d.wait_for("still applied", |d| {
        d.json("/telemetry/t2")["queue_depth"] == 4
    });
    assert_eq!(d.json("/api/workers/t2")["errors"], 3);
    assert_eq!(d.rejected("worker_mismatch"), 1);
}

#[test]
fn frames_before_hello_are_refused_and_closed() {
    let d = Daemon::start(&[]);
    let mut s = d.tcp();
    s.write_all(b"{\"type\":\"heartbeat\",\"worker_id\":\"early\"}\n")
        .unwrap();
    let e = read_line(&mut s).unwrap();
    assert_eq!(e["code"], "hello_required");
    assert!(closed(&mut s));
    assert_eq!(d.rejected("hello_required"), 1);
    assert_eq!(d.get("/telemetry/early").0, 404);
}

#[test]
fn an_overlong_line_is_refused_and_closed() {
    let d = Daemon::start(&["--max-frame-bytes", "1024"]);
    let mut s = d.tcp();
    s.write_all(b"{\"type\":\"hello\",\"worker_id\":\"big\"}\n")
        .unwrap();
    assert_eq!(read_line(&mut s).unwrap()["type"], "welcome");
    // No newline at all: the daemon must not wait for one.
    let _ = s.write_all(&vec![b'x'; 4096]);
    let e = read_line(&mut s).unwrap();
    assert_eq!(e["code"], "too_large");
    assert!(closed(&mut s));
    assert_eq!(d.rejected("too_large"), 1);
    // Other workers are unaffected.
    d.udp(br#"{"type":"heartbeat","worker_id":"fine"}"#);
    d.wait_for("fine", |d| d.get("/telemetry/fine").0 == 200);
}

#[test]
fn a_second_connection_for_the_same_worker_takes_over() {
    let d = Daemon::start(&[]);
    let mut old = d.tcp();
    old.write_all(b"{\"type\":\"hello\",\"worker_id\":\"dup\"}\n")
        .unwrap();
    assert_eq!(read_line(&mut old).unwrap()["type"], "welcome");
    let mut new = d.tcp();
    new.write_all(
        b"{\"type\":\"hello\",\"worker_id\":\"dup\"}\n{\"type\":\"heartbeat\",\"queue_depth\":7}\n",
    )
    .unwrap();
    assert_eq!(read_line(&mut new).unwrap()["type"], "welcome");
    assert_eq!(read_line(&mut old).unwrap()["code"], "superseded");
    assert!(closed(&mut old));
    d.wait_for("new session applies", |d| {
        d.json("/telemetry/dup")["queue_depth"] == 7
    });
    assert_eq!(d.json("/health")["connections"]["tcp_closed_superseded"], 1);
}

#[test]
fn silent_and_dribbling_peers_are_closed_after_three_intervals() {
    let d = Daemon::start(&["--heartbeat-interval", "1s", "--inactivity-timeout", "3s"]);
    let mut silent = d.tcp();
    silent
        .write_all(b"{\"type\":\"hello\",\"worker_id\":\"quiet\"}\n")
        .unwrap();
    assert_eq!(read_line(&mut silent).unwrap()["type"], "welcome");

    let mut dribbler = d.tcp();
    let start = Instant::now();
    let dribble = std::thread::spawn(move || {
        // One byte every 300 ms of a frame that never ends.
        for b in b"{\"type\":\"hello\",\"worker_id\":\"slow\""
            .iter()
            .cycle()
            .take(40)
        {
            if dribbler.write_all(&[*b]).is_err() {
                return (dribbler, true);
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        (dribbler, false)
    });
    assert_eq!(read_line(&mut silent).unwrap()["code"], "idle_timeout");
    assert!(closed(&mut silent));
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(2900),
        "closed after {waited:?}"
    );
    let (mut dribbler, _) = dribble.join().unwrap();
    assert!(closed(&mut dribbler), "dribbler closed too");
    assert_eq!(d.json("/health")["connections"]["tcp_closed_idle"], 2);
}

#[test]
fn tcp_is_lossless_under_a_burst() {
    let d = Daemon::start(&[]);
    let mut s = d.tcp();
    let n = 20_000u64;
    let mut burst = String::from("{\"type\":\"hello\",\"worker_id\":\"burst\"}\n");
    for seq in 1..=n {
        burst.push_str(&format!(
            "{{\"type\":\"heartbeat\",\"seq\":{seq},\"queue_depth\":{seq}}}\n"
        ));
    }
    s.write_all(burst.as_bytes()).unwrap();
    d.wait_for("every frame applied", |d| {
        d.get("/telemetry/burst").1["messages_processed"] == n + 1
    });
    let w = d.json("/api/workers/burst");
    assert_eq!(
        (w["missed_beats"].as_u64(), w["queue_depth"].as_u64()),
        (Some(0), Some(n))
    );
    assert_eq!(d.json("/health")["frames"]["dropped"], 0);
}

#[test]
fn deleting_a_connected_worker_lets_it_come_back() {
    let d = Daemon::start(&[]);
    let mut s = d.tcp();
    s.write_all(b"{\"type\":\"hello\",\"worker_id\":\"again\"}\n")
        .unwrap();
    assert_eq!(read_line(&mut s).unwrap()["type"], "welcome");
    let (status, _, _) =
        d.request("DELETE /api/workers/again HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_eq!(status, 204);
    assert_eq!(d.get("/telemetry/again").0, 404);
    s.write_all(b"{\"type\":\"heartbeat\",\"queue_depth\":2}\n")
        .unwrap();
    d.wait_for("recreated", |d| {
        d.get("/telemetry/again").1["queue_depth"] == 2
    });
}

/// Out of descriptors, ingest cannot accept; its reserve descriptor takes
/// each queued connection and closes it, so no worker hangs on a queue
/// nobody takes from (it reconnects); once descriptors are free, workers
/// are welcomed again.
#[test]
fn workers_queued_while_out_of_descriptors_are_closed_not_left_waiting() {
    let d = Daemon::spawn(support::with_nofile(support::command(&[]), 32));
    let conns: Vec<std::net::TcpStream> = (0..40)
        .map(|i| {
            let mut s = std::net::TcpStream::connect(d.heartbeat).unwrap();
            s.write_all(format!("{{\"type\":\"hello\",\"worker_id\":\"q{i}\"}}\n").as_bytes())
                .unwrap();
            s
        })
        .collect();
    let (mut welcomed, mut closed_now) = (Vec::new(), 0);
    for mut s in conns {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // A timeout is neither: the connection still waits in the queue.
        let mut first = [0u8; 1];
        match s.peek(&mut first) {
            Ok(0) => closed_now += 1,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => closed_now += 1,
            Ok(_) => match read_line(&mut s) {
                Some(v) if v["type"] == "welcome" => welcomed.push(s),
                other => panic!("answered {other:?}"),
            },
            Err(e) => panic!("neither welcomed nor closed within 10 s: {e}"),
        }
    }
    assert!(
        closed_now > 0,
        "every worker was accepted: the limit did not bite"
    );
    d.wait_log("from the reserve descriptor");
    drop(welcomed);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        d.json("/health")["connections"]["tcp_refused_no_fds"],
        closed_now
    );
    let mut again = d.tcp();
    again
        .write_all(b"{\"type\":\"hello\",\"worker_id\":\"q-again\"}\n")
        .unwrap();
    assert_eq!(read_line(&mut again).unwrap()["type"], "welcome");
}

/// One address may hold `tcp_max_connections_per_ip` heartbeat
/// connections; the next is closed at once and counted, and the others
/// keep working.
#[test]
fn an_address_past_its_share_of_tcp_connections_is_refused() {
    // Loopback is a trusted proxy by default: held to the cap here.
    let d = Daemon::start(&[
        "--tcp-max-connections-per-ip",
        "2",
        "--trusted-proxies",
        "none",
    ]);
    let mut held: Vec<_> = (0..2).map(|_| d.tcp()).collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut extra = d.tcp();
    assert!(closed(&mut extra), "the third connection stays open");
    let h = d.json("/health");
    assert_eq!(h["connections"]["tcp_refused_per_ip"], 1, "{h}");
    held[0]
        .write_all(b"{\"type\":\"hello\",\"worker_id\":\"t-share\"}\n")
        .unwrap();
    assert_eq!(read_line(&mut held[0]).unwrap()["type"], "welcome");
    drop(held);
}

/// A worker bound to a live TCP session owns its id: UDP datagrams naming
/// it (without a heartbeat token anyone can send them) change nothing,
/// a spoofed `bye` ends nothing, and each is counted as `worker_mismatch`.
/// Once the session closes, UDP may speak for the id again.
#[test]
fn udp_frames_naming_a_tcp_bound_worker_are_refused() {
    let d = Daemon::start(&[]);
    let mut s = d.tcp();
    s.write_all(b"{\"type\":\"hello\",\"worker_id\":\"owned\",\"labels\":{\"owner\":\"me\"}}\n{\"type\":\"heartbeat\",\"status\":\"idle\",\"cpu_usage\":5}\n")
        .unwrap();
    assert_eq!(read_line(&mut s).unwrap()["type"], "welcome");
    d.wait_for("the worker", |d| {
        d.json("/telemetry/owned")["status"] == "idle"
    });
    d.udp(br#"{"type":"heartbeat","worker_id":"owned","status":"error","cpu_usage":409600,"labels":{"owner":"attacker"}}"#);
    d.udp(br#"{"type":"bye","worker_id":"owned"}"#);
    d.wait_for("both refused", |d| d.rejected("worker_mismatch") == 2);
    let w = d.json("/api/workers/owned");
    assert_eq!(
        (
            w["status"].as_str(),
            w["cpu_usage"].as_f64(),
            w["labels"]["owner"].as_str(),
            w["transport"].as_str()
        ),
        (Some("idle"), Some(5.0), Some("me"), Some("tcp")),
        "{w}"
    );
    // The session goes on.
    s.write_all(b"{\"type\":\"heartbeat\",\"status\":\"working\"}\n")
        .unwrap();
    d.wait_for("the session's own frame", |d| {
        d.json("/telemetry/owned")["status"] == "working"
    });
    drop(s);
    // Closed: a datagram is the worker's own again.
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        d.udp(br#"{"type":"heartbeat","worker_id":"owned","status":"working","cpu_usage":7}"#);
        if d.json("/telemetry/owned")["cpu_usage"] == 7.0 {
            break;
        }
        assert!(Instant::now() < until, "UDP never spoke for the id again");
        std::thread::sleep(Duration::from_millis(100));
    }
}
