//! Tokens with roles, over real sockets: every change route against every
//! role, from loopback and from another address; reads behind a token;
//! own-task cancels; rotation on SIGHUP; and the audit log of it all,
//! which never holds a token.

mod support;

use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use support::Daemon;

const MUSTER: &str = env!("CARGO_BIN_EXE_muster");
const ROLES: [&str; 4] = ["read", "submit", "operate", "admin"];

/// `muster token new NAME ROLE`: the token and its line.
fn new_token(name: &str, role: &str) -> (String, String) {
    let out = Command::new(MUSTER)
        .args(["token", "new", name, role])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    let token = lines.next().unwrap().to_string();
    let line = lines.next().unwrap().to_string();
    assert!(line.starts_with(&format!("{name} {role} ")), "{line}");
    assert!(
        !line.contains(&token),
        "the line holds the hash, not the token"
    );
    (token, line)
}

/// A token per role, named after it, in a tokens file.
struct Tokens {
    file: PathBuf,
    by_role: Vec<(&'static str, String)>,
}

impl Tokens {
    fn make(dir: &Path) -> Tokens {
        let mut text = String::from("# made by muster token new\n");
        let mut by_role = Vec::new();
        for role in ROLES {
            let (token, line) = new_token(&format!("{role}-bot"), role);
            text.push_str(&line);
            text.push('\n');
            by_role.push((role, token));
        }
        let file = dir.join("tokens");
        std::fs::write(&file, text).unwrap();
        Tokens { file, by_role }
    }

    fn of(&self, role: &str) -> &str {
        &self.by_role.iter().find(|(r, _)| *r == role).unwrap().1
    }
}

fn send(at: SocketAddr, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, Value) {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let raw = format!(
        "{method} {path} HTTP/1.1\r\nHost: {at}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut s = TcpStream::connect(at).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(raw.as_bytes()).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let (status, _, b) = support::parse_response(&buf);
    (status, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

/// Every change route, with a body, and the lowest role that may send it.
fn changes(task: &str) -> Vec<(&'static str, String, String, &'static str)> {
    let sched = json!({"name": "nightly", "cron": "@every 1h", "task": {"type": "t"}});
    vec![
        (
            "POST",
            "/api/tasks".into(),
            r#"{"type":"t"}"#.into(),
            "submit",
        ),
        (
            "POST",
            format!("/api/tasks/{task}/retry"),
            String::new(),
            "operate",
        ),
        (
            "POST",
            "/api/tasks/bulk".into(),
            r#"{"action":"retry","filter":{"state":"failed"}}"#.into(),
            "operate",
        ),
        (
            "POST",
            "/api/schedules".into(),
            sched.to_string(),
            "operate",
        ),
        (
            "POST",
            "/api/schedules/nightly/pause".into(),
            String::new(),
            "operate",
        ),
        (
            "POST",
            "/api/schedules/nightly/resume".into(),
            String::new(),
            "operate",
        ),
        (
            "DELETE",
            "/api/schedules/nightly".into(),
            String::new(),
            "operate",
        ),
        (
            "POST",
            "/api/queues/t/pause".into(),
            String::new(),
            "operate",
        ),
        (
            "POST",
            "/api/queues/t/resume".into(),
            String::new(),
            "operate",
        ),
        (
            "PUT",
            "/api/limits".into(),
            r#"{"type":"t","concurrency":5}"#.into(),
            "operate",
        ),
        (
            "POST",
            "/api/workers/scale".into(),
            r#"{"count":0}"#.into(),
            "operate",
        ),
        (
            "DELETE",
            "/api/workers/w-gone".into(),
            String::new(),
            "operate",
        ),
        (
            "DELETE",
            format!("/api/tasks/{task}"),
            String::new(),
            "operate",
        ),
    ]
}

fn rank(role: &str) -> usize {
    ROLES.iter().position(|r| *r == role).unwrap()
}

/// Each route: without a token 401; each role below the route's 403
/// naming the role it needs; each role at or above it not refused.
fn matrix(at: SocketAddr, tokens: &Tokens) {
    let (status, t) = send(
        at,
        "POST",
        "/api/tasks",
        Some(tokens.of("admin")),
        r#"{"type":"t"}"#,
    );
    assert_eq!(status, 201, "{t}");
    let task = t["id"].as_str().unwrap().to_string();
    for (method, path, body, needs) in changes(&task) {
        let (status, v) = send(at, method, &path, None, &body);
        assert_eq!(
            status, 401,
            "{method} {path} without a token from {at}: {v}"
        );
        for role in ROLES {
            let (status, v) = send(at, method, &path, Some(tokens.of(role)), &body);
            if rank(role) < rank(needs) {
                assert_eq!(status, 403, "{method} {path} as {role} from {at}: {v}");
                assert_eq!(v["error"], "forbidden_role", "{v}");
                // It names the role held and one it lacks: the route's,
                // or for a cancel by a read token, submit (a submit token
                // may cancel its own tasks).
                let said = v["message"].as_str().unwrap();
                let lacks = ROLES[rank(role) + 1..=rank(needs)]
                    .iter()
                    .any(|r| said.contains(&format!("needs role {r} ")));
                assert!(
                    lacks && said.contains(&format!("holds role {role}")),
                    "{said}"
                );
            } else {
                assert!(
                    status != 401 && status != 403,
                    "{method} {path} as {role} from {at}: {status} {v}"
                );
            }
        }
    }
}

#[test]
fn every_change_route_against_every_role_from_loopback_and_beyond() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = Tokens::make(dir.path());
    let d = Daemon::start(&[
        "--http-addr",
        "0.0.0.0:0",
        "--api-tokens-file",
        tokens.file.to_str().unwrap(),
    ]);
    let port = d.http.port();
    matrix(SocketAddr::from(([127, 0, 0, 1], port)), &tokens);
    match support::non_loopback() {
        Some(ip) => matrix(SocketAddr::new(ip, port), &tokens),
        None => {
            support::require("a non-loopback IPv4 address", false);
        }
    }
    // A token that is none of them is refused, on reads too.
    let at = SocketAddr::from(([127, 0, 0, 1], port));
    assert_eq!(send(at, "GET", "/api/workers", Some("mst_nope"), "").0, 403);
    assert_eq!(
        send(at, "GET", "/api/workers", None, "").0,
        200,
        "reads stay open"
    );
    let refused = d.json("/health")["access"]["http_refused_role"]
        .as_u64()
        .unwrap();
    assert!(refused > 0, "counted");
    // The audit log is operate's to read.
    assert_eq!(
        send(at, "GET", "/api/audit", Some(tokens.of("submit")), "").0,
        403
    );
    let (status, log) = send(
        at,
        "GET",
        "/api/audit?limit=1000",
        Some(tokens.of("operate")),
        "",
    );
    assert_eq!(status, 200, "{log}");
    let entries = log["entries"].as_array().unwrap();
    // Each change tried, allowed or refused, is there with its actor.
    for action in [
        "task.retry",
        "tasks.bulk",
        "queue.pause",
        "pool.scale",
        "worker.forget",
    ] {
        for role in ROLES {
            let name = format!("{role}-bot");
            assert!(
                entries
                    .iter()
                    .any(|e| e["action"] == action && e["actor"] == name.as_str()),
                "{action} by {name} is not in the audit log"
            );
        }
    }
    let refusal = entries
        .iter()
        .find(|e| e["action"] == "queue.pause" && e["actor"] == "submit-bot")
        .unwrap();
    assert_eq!(refusal["status"], 403);
    assert_eq!(refusal["role"], "submit");
    assert_eq!(refusal["target"], "t");
    assert!(refusal["peer"].as_str().is_some());
    let bulk = entries
        .iter()
        .find(|e| e["action"] == "tasks.bulk" && e["actor"] == "admin-bot")
        .unwrap();
    assert_eq!(bulk["detail"]["action"], "retry", "{bulk}");
    // No token is in the log, the audit log, or its file's answers.
    let text = log.to_string();
    let logged = d.log.lock().unwrap().join("\n");
    for (_, token) in &tokens.by_role {
        assert!(!text.contains(&token[4..]), "a token in /api/audit");
        assert!(!logged.contains(&token[4..]), "a token in the log");
    }
    assert!(d.log_has("audit: admin-bot (admin) tasks.bulk"), "logged");
}

#[test]
fn a_submit_token_cancels_its_own_tasks_only() {
    let dir = tempfile::tempdir().unwrap();
    let (ci, ci_line) = new_token("ci", "submit");
    let (other, other_line) = new_token("other", "submit");
    let file = dir.path().join("tokens");
    std::fs::write(&file, format!("{ci_line}\n{other_line}\n")).unwrap();
    let d = Daemon::start(&["--api-tokens-file", file.to_str().unwrap()]);
    let at = d.http;
    let (status, t) = send(at, "POST", "/api/tasks", Some(&ci), r#"{"type":"t"}"#);
    assert_eq!(status, 201);
    assert_eq!(t["submitted_by"], "ci");
    let path = format!("/api/tasks/{}", t["id"].as_str().unwrap());
    let (status, v) = send(at, "DELETE", &path, Some(&other), "");
    assert_eq!(status, 403, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("needs role operate")
    );
    let (status, v) = send(at, "DELETE", &path, Some(&ci), "");
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["state"], "cancelled");
    assert_eq!(
        send(at, "DELETE", "/api/tasks/00000000000000ff", Some(&ci), "").0,
        404
    );
}

#[test]
fn reads_need_a_token_when_asked_and_tokens_rotate_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let (reader, line) = new_token("dash", "read");
    let file = dir.path().join("tokens");
    std::fs::write(&file, format!("{line}\n")).unwrap();
    let d = Daemon::start(&[
        "--api-tokens-file",
        file.to_str().unwrap(),
        "--api-read-requires-token",
        "on",
    ]);
    let at = d.http;
    assert_eq!(send(at, "GET", "/api/workers", None, "").0, 401);
    assert_eq!(send(at, "GET", "/metrics", None, "").0, 401);
    assert_eq!(send(at, "GET", "/api/workers", Some(&reader), "").0, 200);
    // The page and the probe stay open.
    assert_eq!(send(at, "GET", "/health", None, "").0, 200);
    assert_eq!(send(at, "GET", "/", None, "").0, 200);
    let (status, who) = send(at, "GET", "/api/access", Some(&reader), "");
    assert_eq!(status, 200);
    assert_eq!(who["name"], "dash");
    assert_eq!(who["role"], "read");
    assert_eq!(who["roles"], json!(["read"]));
    // Streams take the token in the query, as a browser must send it.
    let ws = |query: &str| {
        let mut s = TcpStream::connect(at).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "GET /ws/telemetry{query} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .unwrap();
        let mut buf = [0u8; 12];
        s.read_exact(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[9..12]).to_string()
    };
    assert_eq!(ws(""), "401");
    assert_eq!(ws(&format!("?access_token={reader}")), "101");
    // Rotation: a new line in place of the old, then SIGHUP.
    let (rotated, line) = new_token("dash", "operate");
    std::fs::write(&file, format!("{line}\n")).unwrap();
    d.signal(libc::SIGHUP);
    d.wait_for("reload", |d| d.log_has("api_tokens_file: re-read"));
    assert_eq!(send(at, "GET", "/api/workers", Some(&reader), "").0, 403);
    assert_eq!(send(at, "GET", "/api/workers", Some(&rotated), "").0, 200);
    let (_, who) = send(at, "GET", "/api/access", Some(&rotated), "");
    assert_eq!(who["role"], "operate");
    // A file that does not read keeps the running tokens.
    std::fs::write(&file, "dash boss 00\n").unwrap();
    d.signal(libc::SIGHUP);
    d.wait_for("refused reload", |d| d.log_has("\"boss\" is not a role"));
    assert_eq!(send(at, "GET", "/api/workers", Some(&rotated), "").0, 200);
}

#[test]
fn bad_token_files_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens");
    for (text, says) in [
        ("", "lists no token"),
        ("ci submit abc\n", "line 1: the last word"),
        ("ci root 0000\n", "\"root\" is not a role"),
    ] {
        std::fs::write(&file, text).unwrap();
        let out = support::command(&[
            "--api-tokens-file",
            file.to_str().unwrap(),
            "--check-config",
        ])
        .output()
        .unwrap();
        assert_eq!(out.status.code(), Some(2), "{text:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{text:?}: {err}");
    }
    let out = support::command(&["--api-read-requires-token", "on", "--check-config"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("api_read_requires_token"));
}

/// Cluster mode: the audit log is in the database, and every node serves
/// every node's entries; a node started later reads them too.
#[test]
fn cluster_nodes_share_one_audit_log() {
    let Some(pg) = support::pg::start() else {
        return;
    };
    let a = support::pg::node(&pg, "n1", &[]);
    let b = support::pg::node(&pg, "n2", &[]);
    let (status, _) = send(a.http, "POST", "/api/queues/t/pause", None, "");
    assert_eq!(status, 200);
    let (status, _) = send(b.http, "POST", "/api/queues/t/resume", None, "");
    assert_eq!(status, 200);
    let both = |d: &Daemon| {
        let v = d.json("/api/audit");
        let e = v["entries"].as_array().unwrap().clone();
        let by = |action: &str, node: &str| {
            e.iter()
                .any(|x| x["action"] == action && x["node"] == node && x["actor"] == "loopback")
        };
        by("queue.pause", "n1") && by("queue.resume", "n2")
    };
    a.wait_for("n2's entry on n1", both);
    b.wait_for("n1's entry on n2", both);
    let c = support::pg::node(&pg, "n3", &[]);
    c.wait_for("both on a node started after", both);
    let rows = pg.psql("SELECT count(*) FROM muster_audit");
    assert_eq!(rows.trim(), "2", "one row per change, not per node");
    // A change just before a stop is written by the stop, which ends.
    assert_eq!(send(c.http, "POST", "/api/queues/u/pause", None, "").0, 200);
    let (status, _) = c.stop();
    assert!(status.success(), "{status:?}");
    let rows = pg.psql("SELECT count(*) FROM muster_audit WHERE entry->>'target' = 'u'");
    assert_eq!(rows.trim(), "1");
}
