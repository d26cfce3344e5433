//! Who may change the daemon, over real sockets: Host, Origin, token,
//! loopback; heartbeat tokens and the allow-list.

mod support;

use std::io::Write;
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;
use support::{Daemon, read_line};

const MUSTER: &str = env!("CARGO_BIN_EXE_muster");

fn beat(d: &Daemon, id: &str) {
    d.udp(format!(r#"{{"type":"heartbeat","worker_id":"{id}"}}"#).as_bytes());
    d.wait_applied(id, 1);
}

fn delete(d: &Daemon, id: &str, extra: &str) -> (u16, String) {
    let (status, head, _) = d.request(&format!(
        "DELETE /api/workers/{id} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{extra}\r\n"
    ));
    (status, head)
}

fn exists(d: &Daemon, id: &str) -> bool {
    d.get(&format!("/api/workers/{id}")).0 == 200
}

fn access(d: &Daemon, key: &str) -> u64 {
    d.json("/health")["access"][key].as_u64().unwrap()
}

#[test]
fn a_page_on_another_origin_cannot_delete() {
    let d = Daemon::start(&[]);
    beat(&d, "w1");
    for origin in ["http://localhost:9999", "null", "https://evil.example"] {
        let (status, _) = delete(&d, "w1", &format!("Origin: {origin}\r\n"));
        assert_eq!(status, 403, "Origin {origin}");
        assert!(exists(&d, "w1"), "the worker survives Origin {origin}");
    }
    assert_eq!(access(&d, "http_refused_origin"), 3);
    // The preflight from a foreign page offers reads only.
    let (status, head, _) = d.request(
        "OPTIONS /api/workers/w1 HTTP/1.1\r\nHost: localhost\r\nOrigin: http://localhost:9999\r\nAccess-Control-Request-Method: DELETE\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 204);
    assert!(
        head.contains("Access-Control-Allow-Methods: GET, HEAD\r\n"),
        "{head}"
    );
    let methods = head
        .lines()
        .find(|l| l.starts_with("Access-Control-Allow-Methods"));
    assert!(!methods.unwrap().contains("DELETE"), "{head}");
    // Without an Origin (curl, muster) from loopback, a change is taken.
    assert_eq!(delete(&d, "w1", "").0, 204);
    assert!(!exists(&d, "w1"));
}

#[test]
fn a_listed_origin_may_change() {
    let d = Daemon::start(&["--cors-allow-origin", "https://dash.example"]);
    beat(&d, "w1");
    let (_, head, _) = d.request(
        "OPTIONS /api/workers/w1 HTTP/1.1\r\nHost: localhost\r\nOrigin: https://dash.example\r\nConnection: close\r\n\r\n",
    );
    assert!(
        head.contains("Access-Control-Allow-Methods: GET, HEAD, DELETE\r\n"),
        "{head}"
    );
    assert!(head.contains("Authorization"), "{head}");
    assert!(
        head.contains("Access-Control-Allow-Origin: https://dash.example"),
        "{head}"
    );
    let (_, head, _) = d.request(
        "GET /health HTTP/1.1\r\nHost: localhost\r\nOrigin: https://other.example\r\nConnection: close\r\n\r\n",
    );
    assert!(!head.contains("Access-Control-Allow-Origin"), "{head}");
    assert_eq!(delete(&d, "w1", "Origin: https://dash.example\r\n").0, 204);
}

/// Every route that takes a change, as the README lists them: a page on a
/// listed origin is offered its method and `Authorization`; a page on
/// another origin is offered no change at all.
#[test]
fn every_change_route_is_preflighted_by_its_own_methods() {
    let d = Daemon::start(&["--cors-allow-origin", "https://dash.example"]);
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let routes: Vec<(&str, String)> = readme
        .lines()
        .filter_map(|l| {
            let cell = l.strip_prefix("| `")?.split('`').next()?;
            let (method, path) = cell.split_once(' ')?;
            matches!(method, "POST" | "DELETE" | "PUT").then(|| {
                let path = path
                    .replace("{id}", "w1")
                    .replace("{name}", "nightly")
                    .replace("/api/tasks/w1", "/api/tasks/0000000000000001");
                (method, path)
            })
        })
        .collect();
    for must in ["/api/tasks", "/api/workers/scale", "/api/workers/w1"] {
        assert!(
            routes.iter().any(|(_, p)| p == must),
            "{must} not in the README's table"
        );
    }
    for (method, path) in &routes {
        let ask = |origin: &str| {
            d.request(&format!(
                "OPTIONS {path} HTTP/1.1\r\nHost: localhost\r\nOrigin: {origin}\r\nAccess-Control-Request-Method: {method}\r\nAccess-Control-Request-Headers: authorization\r\nConnection: close\r\n\r\n"
            ))
        };
        let (status, head, _) = ask("https://dash.example");
        assert_eq!(status, 204, "{method} {path}: {head}");
        let field = |name: &str| {
            head.lines()
                .find_map(|l| l.strip_prefix(&format!("{name}: ")[..]))
                .unwrap_or("")
                .to_string()
        };
        let offered = field("Access-Control-Allow-Methods");
        assert!(
            offered.split(", ").any(|m| m == *method),
            "{method} {path} offered {offered:?}"
        );
        assert!(
            field("Access-Control-Allow-Headers").contains("Authorization"),
            "{method} {path}: {head}"
        );
        let (_, head, _) = ask("https://evil.example");
        let offered = head
            .lines()
            .find_map(|l| l.strip_prefix("Access-Control-Allow-Methods: "))
            .unwrap_or("");
        assert!(
            !offered.contains(method),
            "a foreign page is offered {method} {path}: {offered:?}"
        );
        assert!(!head.contains("Authorization"), "{head}");
    }
}

#[test]
fn a_rebound_host_name_reads_nothing() {
    let d = Daemon::start(&["--http-allowed-hosts", "muster.internal"]);
    beat(&d, "w1");
    for req in [
        "GET /telemetry HTTP/1.1\r\nHost: rebind.evil.example:8080\r\nConnection: close\r\n\r\n",
        "DELETE /api/workers/w1 HTTP/1.1\r\nHost: rebind.evil.example\r\nConnection: close\r\n\r\n",
        "GET /ws/telemetry HTTP/1.1\r\nHost: rebind.evil.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    ] {
        let (status, _, body) = d.request(req);
        assert_eq!(status, 421, "{req}");
        assert!(!String::from_utf8_lossy(&body).contains("w1"));
    }
    assert!(exists(&d, "w1"));
    assert_eq!(access(&d, "http_refused_host"), 3);
    let (status, _, _) =
        d.request("GET /health HTTP/1.1\r\nHost: muster.internal:80\r\nConnection: close\r\n\r\n");
    assert_eq!(status, 200);
}

/// Run a command that must succeed.
fn succeeds(c: &mut Command) {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A token file in `dir`.
fn token_file(dir: &tempfile::TempDir, token: &str) -> std::path::PathBuf {
    let path = dir.path().join("token");
    std::fs::write(&path, format!("{token}\n")).unwrap();
    path
}

#[test]
fn with_a_token_changes_need_it() {
    let dir = tempfile::tempdir().unwrap();
    let token = token_file(&dir, "s3cret-token");
    let d = Daemon::start(&["--api-token-file", token.to_str().unwrap()]);
    beat(&d, "w1");
    let (status, head) = delete(&d, "w1", "");
    assert_eq!(status, 401);
    assert!(head.contains("WWW-Authenticate: Bearer"), "{head}");
    assert_eq!(delete(&d, "w1", "Authorization: Bearer wrong\r\n").0, 403);
    assert!(exists(&d, "w1"));
    // muster forget: refused without the token, done with it.
    let forget = |extra: &[&str]| {
        Command::new(MUSTER)
            .args(["--url", &format!("http://{}", d.http), "forget", "w1"])
            .args(extra)
            .env_remove("MUSTER_TOKEN_FILE")
            .output()
            .unwrap()
    };
    let out = forget(&[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
    assert!(exists(&d, "w1"));
    let out = forget(&["--token-file", token.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!exists(&d, "w1"));
    beat(&d, "w2");
    assert_eq!(
        delete(&d, "w2", "Authorization: Bearer s3cret-token\r\n").0,
        204
    );
    assert_eq!(access(&d, "http_refused_token"), 3);
    // The token is in no answer and no log line.
    let all = [
        d.request("GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .2,
        d.request("GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .2,
    ];
    for body in all {
        assert!(!String::from_utf8_lossy(&body).contains("s3cret"));
    }
    assert!(!d.log_has("s3cret"));
    // A rotated token takes effect on SIGHUP.
    std::fs::write(&token, "rotated\n").unwrap();
    d.signal(libc::SIGHUP);
    d.wait_for("reload", |d| d.log_has("api_token_file: re-read"));
    beat(&d, "w3");
    assert_eq!(
        delete(&d, "w3", "Authorization: Bearer s3cret-token\r\n").0,
        403
    );
    assert_eq!(delete(&d, "w3", "Authorization: Bearer rotated\r\n").0, 204);
}

#[test]
fn without_a_token_changes_come_from_loopback_only() {
    let ip = support::non_loopback();
    let Some(ip) = ip.filter(|_| support::require("a non-loopback IPv4 address", ip.is_some()))
    else {
        return;
    };
    let d = Daemon::start(&["--http-addr", "0.0.0.0:0"]);
    beat(&d, "w1");
    let port = d.http.port();
    let send = |req: &str| {
        let mut s = TcpStream::connect((ip, port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(req.as_bytes()).unwrap();
        let mut buf = Vec::new();
        let _ = std::io::Read::read_to_end(&mut s, &mut buf);
        support::parse_response(&buf).0
    };
    let host = format!("Host: {ip}:{port}\r\n");
    assert_eq!(
        send(&format!(
            "DELETE /api/workers/w1 HTTP/1.1\r\n{host}Connection: close\r\n\r\n"
        )),
        403
    );
    assert!(exists(&d, "w1"));
    assert_eq!(access(&d, "http_refused_peer"), 1);
    // Reads stay open to it.
    assert_eq!(
        send(&format!(
            "GET /api/workers/w1 HTTP/1.1\r\n{host}Connection: close\r\n\r\n"
        )),
        200
    );
}

#[test]
fn heartbeats_need_the_token_when_set() {
    let dir = tempfile::tempdir().unwrap();
    let token = token_file(&dir, "beat-key");
    let d = Daemon::start(&["--heartbeat-token-file", token.to_str().unwrap()]);
    d.udp(br#"{"type":"heartbeat","worker_id":"w1","token":"beat-key","status":"working"}"#);
    d.wait_applied("w1", 1);
    // A spoofed bye, without or with a wrong token, changes nothing.
    d.udp(br#"{"type":"bye","worker_id":"w1"}"#);
    d.udp(br#"{"type":"bye","worker_id":"w1","token":"guess"}"#);
    d.udp(br#"{"type":"heartbeat","worker_id":"w9","status":"error"}"#);
    d.wait_for("two refusals", |d| d.rejected("unauthorized") == 3);
    let w1 = d.json("/api/workers/w1");
    assert_eq!(w1["status"], "working");
    assert_eq!(w1["errors"], 0, "a spoofer cannot blame the worker");
    assert_eq!(d.get("/api/workers/w9").0, 404);
    // TCP: a hello without the token is refused and closed; no takeover.
    let mut s = d.tcp();
    s.write_all(b"{\"type\":\"hello\",\"worker_id\":\"w1\"}\n")
        .unwrap();
    let reply = read_line(&mut s).unwrap();
    assert_eq!(reply["code"], "unauthorized");
    assert!(support::closed(&mut s));
    let mut s = d.tcp();
    s.write_all(b"{\"type\":\"hello\",\"worker_id\":\"w2\",\"token\":\"beat-key\"}\n{\"type\":\"heartbeat\",\"status\":\"idle\"}\n").unwrap();
    assert_eq!(read_line(&mut s).unwrap()["type"], "welcome");
    d.wait_applied("w2", 2);
    // muster beat sends it from the flag or the environment.
    let hb = d.heartbeat.to_string();
    for tcp in [false, true] {
        let mut c = Command::new(MUSTER);
        c.args([
            "beat",
            "--id",
            "w3",
            "--status",
            "working",
            "--heartbeat-addr",
            &hb,
        ]);
        if tcp {
            c.arg("--tcp");
        }
        succeeds(c.env("MUSTER_HEARTBEAT_TOKEN_FILE", &token));
    }
    d.wait_applied("w3", 2);
    // muster agent too, over UDP (every frame) and TCP (the hello).
    for (id, transport) in [("a-udp", "--udp"), ("a-tcp", "--tcp")] {
        succeeds(
            Command::new(MUSTER)
                .args(["agent", "--id", id, transport, "--heartbeat-addr", &hb])
                .arg("--heartbeat-token-file")
                .arg(&token)
                .args(["--", "true"])
                .env_remove("MUSTER_HEARTBEAT_TOKEN_FILE"),
        );
        d.wait_for("the agent's run and bye", |d| {
            let w = d.get(&format!("/api/workers/{id}")).1;
            w["runs"]["total"] == 1 && w["status"] == "terminated"
        });
    }
    assert_eq!(
        d.rejected("unauthorized"),
        4,
        "nothing from the tools was refused"
    );
    assert!(!d.log_has("beat-key"));
}

#[test]
fn heartbeats_from_outside_the_allow_list_are_refused() {
    let d = Daemon::start(&["--heartbeat-allow-from", "10.0.0.0/8"]);
    d.udp(br#"{"type":"heartbeat","worker_id":"w1"}"#);
    d.wait_for("udp drop", |d| access(d, "udp_not_allowed") == 1);
    let mut s = d.tcp();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(b"{\"type\":\"hello\",\"worker_id\":\"w1\"}\n");
    assert!(support::closed(&mut s));
    assert_eq!(access(&d, "tcp_not_allowed"), 1);
    assert_eq!(d.get("/api/workers/w1").0, 404);
    let d = Daemon::start(&["--heartbeat-allow-from", "10.0.0.0/8, 127.0.0.1"]);
    beat(&d, "w1");
}
