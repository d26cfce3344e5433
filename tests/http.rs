//! The HTTP front: keep-alive, pipelining, limits and bad requests, against
//! the real daemon over real sockets.

mod support;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use support::{Daemon, closed, parse_response, require, runs};

fn connect(d: &Daemon) -> TcpStream {
    let s = TcpStream::connect(d.http).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// Read exactly one response with a Content-Length body.
fn read_one(s: &mut TcpStream) -> (u16, String, Vec<u8>) {
    let mut buf = Vec::new();
    let mut b = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).unwrap(), 1, "connection closed mid-head");
        buf.push(b[0]);
    }
    let (status, head, _) = parse_response(&buf);
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .map_or(0, |v| v.parse().unwrap());
    let mut body = vec![0; len];
    s.read_exact(&mut body).unwrap();
    (status, head, body)
}

#[test]
fn every_endpoint_answers() {
    let d = Daemon::start(&[]);
    d.udp(br#"{"type":"heartbeat","worker_id":"w1","status":"working","current_job":{"id":"job-789","type":"scan","files":1000,"started_at":1733808005000},"resource_usage":{"rss_mb":52.8}}"#);
    d.wait_applied("w1", 1);
    let h = d.json("/health");
    assert_eq!(h["status"], "healthy");
    assert!(
        h["time"].as_u64().unwrap() > 1_600_000_000 && h["time"].as_u64().unwrap() < 10_000_000_000,
        "seconds"
    );
    assert!(h["version"].is_string() && h["uptime_seconds"].is_u64());
    assert_eq!(h["udp_kernel_drops"], 0);
    assert_eq!(d.json("/workers")["w1"]["status"], "working");
    assert_eq!(d.json("/api/workers")[0]["worker_id"], "w1");
    let reg = d.json("/api/workers/registry");
    assert_eq!(reg["w1"]["current_job"]["id"], "job-789");
    assert_eq!(reg["w1"]["resource_usage"]["rss_mb"], 52.8);
    let (status, head, body) =
        d.request("GET /api/workers/snapshot/w1 HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_eq!(status, 200);
    assert!(
        head.contains("Content-Disposition: attachment; filename=\"worker-w1-"),
        "{head}"
    );
    let snap: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(snap["worker_id"], "w1");
}

#[test]
fn keep_alive_and_pipelining_answer_in_order() {
    let d = Daemon::start(&[]);
    let mut s = connect(&d);
    s.write_all(b"GET /health HTTP/1.1\r\n\r\nGET /nope HTTP/1.1\r\n\r\nHEAD /telemetry HTTP/1.1\r\n\r\nGET /telemetry HTTP/1.1\r\n\r\n")
        .unwrap();
    let (a, head, _) = read_one(&mut s);
    assert_eq!(a, 200);
    assert!(head.contains("Connection: keep-alive"));
    assert!(head.contains("Access-Control-Allow-Origin: *"));
    assert_eq!(read_one(&mut s).0, 404);
    let mut b = Vec::new();
    let mut byte = [0u8; 1];
    while !b.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        b.push(byte[0]);
    }
    let (status, head, _) = parse_response(&b);
    assert_eq!(status, 200);
    assert!(
        head.contains("Content-Length: 2"),
        "HEAD has the GET's length: {head}"
    );
    let (status, _, body) = read_one(&mut s);
    assert_eq!((status, body.as_slice()), (200, b"{}".as_slice()));
    // Same connection, later request.
    s.write_all(b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    assert_eq!(read_one(&mut s).0, 200);
    assert!(closed(&mut s));
}

#[test]
fn methods_cors_and_ids() {
    let d = Daemon::start(&["--cors-allow-origin", "https://dash.example"]);
    let (status, head, _) =
        d.request("POST /health HTTP/1.1\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}");
    assert_eq!(status, 405);
    assert!(head.contains("Allow: GET, HEAD, OPTIONS"), "{head}");
    let (status, head, _) = d.request(
        "OPTIONS /telemetry HTTP/1.1\r\nOrigin: https://dash.example\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 204);
    assert!(head.contains("Access-Control-Allow-Origin: https://dash.example"));
    assert!(head.contains("Access-Control-Allow-Methods"));
    assert_eq!(d.get("/telemetry/bad%20id").0, 400);
    assert_eq!(d.get("/telemetry/has%zzbroken").0, 400);
    assert_eq!(d.get(&format!("/telemetry/{}", "a".repeat(129))).0, 400);
    assert_eq!(d.get("/telemetry/nobody").0, 404);
    assert_eq!(d.get("/api/workers/nobody").0, 404);
    let (status, body) = d.get("/api/workers?status=bogus");
    assert_eq!((status, body["error"].as_str()), (400, Some("bad_status")));
}

#[test]
fn junk_is_answered_400_and_closed() {
    let d = Daemon::start(&[]);
    let mut s = connect(&d);
    s.write_all(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n")
        .unwrap();
    let (status, _, body) = read_one(&mut s);
    assert_eq!(status, 400);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"], "bad_request");
    assert!(closed(&mut s));
    assert_eq!(d.get("/health").0, 200, "still serving");
}

#[test]
fn limits_431_411_413() {
    let d = Daemon::start(&[]);
    let big = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(17 * 1024));
    assert_eq!(d.request(&big).0, 431);
    let many: String = (0..70).map(|i| format!("X-{i}: v\r\n")).collect();
    assert_eq!(
        d.request(&format!("GET /health HTTP/1.1\r\n{many}\r\n")).0,
        431
    );
    assert_eq!(
        d.request("POST /health HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
            .0,
        411
    );
    assert_eq!(
        d.request("POST /health HTTP/1.1\r\nContent-Length: 5000000\r\n\r\n")
            .0,
        413
    );
    assert_eq!(d.get("/health").0, 200);
}

#[test]
fn a_slow_head_gets_408() {
    let d = Daemon::start(&[]);
    let mut s = connect(&d);
    let start = Instant::now();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: localho")
        .unwrap();
    let (status, _, _) = read_one(&mut s);
    assert_eq!(status, 408);
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_secs(10) && waited < Duration::from_secs(13),
        "{waited:?}"
    );
    assert!(closed(&mut s));
}

/// Full of connections with work in hand (a head half sent), the next is
/// answered 503; idle ones would have been closed to make room instead.
#[test]
fn connection_cap_answers_503() {
    let d = Daemon::start(&["--http-max-connections", "2"]);
    let mut _a = connect(&d);
    let mut _b = connect(&d);
    _a.write_all(b"GET /health HTTP/1.1\r\n").unwrap();
    _b.write_all(b"GET /health HTTP/1.1\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let mut c = connect(&d);
    let mut buf = Vec::new();
    let _ = c.read_to_end(&mut buf);
    assert_eq!(parse_response(&buf).0, 503);
    drop((_a, _b));
    // Once the others close, requests are served again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _, _) = d.request("GET /health HTTP/1.1\r\nConnection: close\r\n\r\n");
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "never served again");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn metrics_are_prometheus_text() {
    let d = Daemon::start(&[]);
    d.udp(br#"{"type":"heartbeat","worker_id":"m1","cpu_usage":5}"#);
    d.udp(br#"{"type":"run","worker_id":"m1","duration_ms":40,"ok":true}"#);
    d.wait_for("applied", |d| {
        d.get("/api/workers/m1").1["runs"]["total"] == 1
    });
    let (status, head, body) = d.request("GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_eq!(status, 200);
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    let text = String::from_utf8(body).unwrap();
    assert!(text.contains("muster_worker_up{worker_id=\"m1\"} 1\n"));
    assert!(text.contains("muster_worker_runs_total{worker_id=\"m1\",outcome=\"ok\"} 1\n"));
    assert!(text.contains("muster_frames_received_total 2\n"));
}

/// Out of descriptors, the daemon cannot accept; its reserve descriptor
/// takes each queued connection and answers it 503, so no client hangs on
/// a queue nobody takes from; once descriptors are free, requests are
/// served again.
#[test]
fn connections_queued_while_out_of_descriptors_are_answered_503() {
    let d = Daemon::spawn(support::with_nofile(support::command(&[]), 32));
    let request = b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let conns: Vec<TcpStream> = (0..40)
        .map(|_| {
            let mut s = connect(&d);
            s.write_all(request).unwrap();
            s
        })
        .collect();
    let (mut ok, mut refused) = (0, 0);
    for mut s in conns {
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        match read_one(&mut s).0 {
            200 => ok += 1,
            503 => refused += 1,
            other => panic!("answered {other}"),
        }
    }
    assert!(
        refused > 0,
        "every connection was accepted: the limit did not bite"
    );
    assert!(ok > 0);
    d.wait_log("answering 503 from the reserve descriptor");
    let h = d.json("/health");
    assert_eq!(h["connections"]["http_refused_no_fds"], refused, "{h}");
}

/// The flood the daemon once wedged on: with 256 descriptors, 400 HTTP and
/// 135 TCP connections, then all closed. Within a second of the end both
/// listeners answer again.
#[test]
fn both_listeners_answer_within_a_second_of_a_descriptor_flood() {
    let d = Daemon::spawn(support::with_nofile(support::command(&[]), 256));
    let http: Vec<TcpStream> = (0..400)
        .filter_map(|_| TcpStream::connect(d.http).ok())
        .collect();
    let tcp: Vec<TcpStream> = (0..135)
        .filter_map(|_| TcpStream::connect(d.heartbeat).ok())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    drop((http, tcp));
    let end = Instant::now();
    let deadline = end + Duration::from_secs(1);
    let served = loop {
        let ok = TcpStream::connect(d.http).ok().and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_millis(200))).ok()?;
            s.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .ok()?;
            let mut buf = Vec::new();
            let _ = s.read_to_end(&mut buf);
            (parse_response(&buf).0 == 200).then_some(())
        });
        if ok.is_some() || Instant::now() >= deadline {
            break ok.is_some();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(served, "/health not answered within 1 s of the flood's end");
    let mut s = d.tcp();
    s.set_read_timeout(Some(
        deadline.saturating_duration_since(Instant::now()) + Duration::from_millis(200),
    ))
    .unwrap();
    s.write_all(b"{\"type\":\"hello\",\"worker_id\":\"after-flood\"}\n")
        .unwrap();
    assert_eq!(support::read_line(&mut s).unwrap()["type"], "welcome");
}

/// RFC 9110 §8.6: Content-Length is digits only. A signed length is a
/// malformed head, as nginx answers it, never a body of 5 bytes.
#[test]
fn a_signed_content_length_is_refused() {
    let d = Daemon::start(&[]);
    let (status, _, body) = d.request(
        "POST /api/tasks HTTP/1.1\r\nHost: localhost\r\nContent-Length: +5\r\nConnection: close\r\n\r\nhello",
    );
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    assert_eq!(d.json("/api/tasks")["tasks"], serde_json::json!([]));
}

/// Both listeners queue as many connections as the kernel allows
/// (`somaxconn`), not 128: a crowd reconnecting after a restart waits in
/// the queue rather than for SYN retries. `ss` shows a listener's backlog
/// in Send-Q.
#[test]
fn listeners_take_the_kernels_deepest_backlog() {
    if !require("ss (iproute2)", runs("ss", &["-V"])) {
        return;
    }
    let somaxconn: u64 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let d = Daemon::start(&[]);
    for port in [d.http.port(), d.heartbeat.port()] {
        let out = std::process::Command::new("ss")
            .args(["-ltnH", &format!("sport = :{port}")])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let backlog: u64 = text
            .split_whitespace()
            .nth(2)
            .and_then(|w| w.parse().ok())
            .unwrap_or_else(|| panic!("no listener on {port}: {text}"));
        assert_eq!(backlog, somaxconn, "port {port}: {text}");
    }
}

/// One address holding 1,100 silent sockets takes at most its share of
/// the slots, and its idle ones make room: `/health` is answered every
/// time, from that address too.
#[test]
fn health_is_served_while_one_address_holds_1100_silent_sockets() {
    // Loopback is a trusted proxy by default: held to its share here.
    let d = Daemon::start(&["--trusted-proxies", "none"]);
    let silent: Vec<TcpStream> = (0..1100)
        .map(|_| TcpStream::connect(d.http).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut answered = 0;
    for _ in 0..50 {
        if d.get("/health").0 == 200 {
            answered += 1;
        }
    }
    assert_eq!(answered, 50);
    let h = d.json("/health");
    let c = &h["connections"];
    assert!(c["http_evicted_idle"].as_u64() > Some(800), "{c}");
    assert!(c["http_open"].as_u64() <= Some(256), "{c}");
    drop(silent);
}

/// At its share, an address whose connections are all busy (a head half
/// sent) is answered 503 for the next one: nothing idle to close.
#[test]
fn an_address_at_its_share_with_nothing_idle_is_answered_503() {
    // Loopback is a trusted proxy by default: held to the cap here.
    let d = Daemon::start(&[
        "--http-max-connections-per-ip",
        "2",
        "--trusted-proxies",
        "none",
    ]);
    let busy: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut s = connect(&d);
            s.write_all(b"GET /health HTTP/1.1\r\n").unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let (status, _, body) = d.request("GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("per_ip"));
    drop(busy);
}

/// Full of idle connections, the oldest is closed to make room: a fresh
/// request is served.
#[test]
fn a_full_table_of_idle_connections_makes_room_for_a_request() {
    let d = Daemon::start(&["--http-max-connections", "2"]);
    let mut oldest = connect(&d);
    std::thread::sleep(Duration::from_millis(20));
    let _newer = connect(&d);
    std::thread::sleep(Duration::from_millis(100));
    let (status, _, _) =
        d.request("GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    assert_eq!(status, 200);
    assert!(closed(&mut oldest), "the oldest idle connection was kept");
    assert!(d.json("/health")["connections"]["http_evicted_idle"].as_u64() >= Some(1));
}

/// A whole-fleet answer for a large fleet is rendered off the loop: while
/// the first `/telemetry` of 2,000 workers of 60 KB each (120 MB) is
/// assembled and sent, `/health` is answered on another connection before
/// a byte of it arrives; then it arrives whole, valid, with every worker,
/// and a `HEAD` waits the same way and gets no body.
#[test]
fn health_is_answered_while_a_large_telemetry_renders() {
    let d = Daemon::start(&["--max-worker-state-bytes", "64KiB"]);
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let labels: Vec<String> = (0..56)
        .map(|i| format!(r#""k{i:02}":"{}""#, "v".repeat(1000)))
        .collect();
    let labels = labels.join(",");
    for i in 0..2000 {
        let beat =
            format!(r#"{{"type":"heartbeat","worker_id":"big{i:04}","labels":{{{labels}}}}}"#);
        s.send_to(beat.as_bytes(), d.heartbeat).unwrap();
        if i % 10 == 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    d.wait_for("2,000 large workers", |d| {
        d.json("/health")["workers"]["total"] == 2000
    });

    let mut big = connect(&d);
    big.write_all(b"GET /telemetry HTTP/1.1\r\nHost: localhost\r\n\r\nHEAD /telemetry HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    big.set_nonblocking(true).unwrap();
    let mut probe = connect(&d);
    for _ in 0..5 {
        probe
            .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let (status, _, _) = read_one(&mut probe);
        assert_eq!(status, 200);
    }
    let mut first = [0u8; 1];
    assert!(
        matches!(big.read(&mut first), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "/telemetry began before /health was answered: rendered on the loop"
    );
    big.set_nonblocking(false).unwrap();
    let (status, head, body) = read_one(&mut big);
    assert_eq!(status, 200, "{head}");
    assert!(body.len() > 110_000_000, "{}", body.len());
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v.as_object().unwrap().len(), 2000);
    assert_eq!(v["big1999"]["labels"]["k55"].as_str().unwrap().len(), 1000);
    // HEAD: the same length, no body (the next read is the probe below).
    let mut buf = Vec::new();
    let mut b = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        big.read_exact(&mut b).unwrap();
        buf.push(b[0]);
    }
    let head = String::from_utf8(buf).unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("content-length: {}", body.len())),
        "{head}"
    );
    big.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let (status, _, health) = read_one(&mut big);
    assert_eq!(status, 200);
    assert!(health.starts_with(b"{"), "HEAD sent a body");
}
