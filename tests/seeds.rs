//! The seeds' own clients and promises against the real daemon: JSON paths
//! read exactly as each seed's snippet reads them (seed 000's browser
//! expression run in Node), seed 004's tRPC query and `METRICS_INTERVAL`,
//! seeds 001 and 002's `.env` and Go-style `HTTP_PORT`, and the README's
//! first example run as written.

mod support;
use serde_json::{Value, json};
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;
use support::{Daemon, MUSTERD, command, read_line, require, runs};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

type Ws = WebSocket<MaybeTlsStream<TcpStream>>;

fn connect(d: &Daemon, path: &str) -> Ws {
    let (mut ws, _) = tungstenite::connect(format!("ws://{}{path}", d.http)).expect("upgrade");
    if let MaybeTlsStream::Plain(s) = ws.get_mut() {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    }
    ws
}

fn next_text(ws: &mut Ws) -> String {
    loop {
        match ws.read().expect("a message") {
            Message::Text(t) => return t.to_string(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Seed 000's WebSocket client, its `onmessage` body verbatim, run by Node
/// on one message.
const SEED_000_CLIENT: &str = r#"
const event = { data: require('fs').readFileSync(0, 'utf8') };
const onmessage = (event) => {
  const telemetry = JSON.parse(event.data);
  console.log(`Workers: ${telemetry.summary.total}`);
  console.log(`Queue depth: ${telemetry.summary.total_queue_depth}`);
  console.log(`RSS: ${Object.values(telemetry.workers)[0]?.resource_usage.rss_mb}MB`);
};
onmessage(event);
"#;

fn node(script: &str, stdin: &str) -> std::process::Output {
    let mut child = Command::new("node")
        .args(["-e", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn seed_000s_browser_client_reads_a_worker_that_never_sent_resource_usage() {
    if !require("node (Debian's nodejs)", runs("node", &["--version"])) {
        return;
    }
    let d = Daemon::start(&["--summary-interval", "200ms"]);
    d.udp(br#"{"type":"heartbeat","worker_id":"bare","queue_depth":4}"#);
    d.wait_applied("bare", 1);
    let mut ws = connect(&d, "/ws/workers/telemetry");
    let msg = next_text(&mut ws);
    let out = node(SEED_000_CLIENT, &msg);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout, "Workers: 1\nQueue depth: 4\nRSS: undefinedMB\n",
        "{msg}"
    );
    // And every view shows the same object.
    assert_eq!(d.json("/telemetry")["bare"]["resource_usage"], json!({}));
    assert_eq!(
        d.json("/api/workers/registry")["bare"]["resource_usage"],
        json!({})
    );
    assert_eq!(d.json("/api/workers/bare")["resource_usage"], json!({}));
    let mut full = connect(&d, "/ws/telemetry");
    let snap: Value = serde_json::from_str(&next_text(&mut full)).unwrap();
    assert_eq!(snap["workers"]["bare"]["resource_usage"], json!({}));
}

#[test]
fn fields_narrows_the_summary_streams_workers() {
    let d = Daemon::start(&["--summary-interval", "200ms"]);
    d.udp(br#"{"type":"heartbeat","worker_id":"f1","cpu_usage":7,"queue_depth":2}"#);
    d.wait_applied("f1", 1);
    let mut ws = connect(&d, "/ws/workers/telemetry?fields=cpu_usage");
    let m: Value = serde_json::from_str(&next_text(&mut ws)).unwrap();
    assert_eq!(
        m["workers"]["f1"],
        json!({"worker_id": "f1", "cpu_usage": 7.0})
    );
    assert_eq!(m["summary"]["total_queue_depth"], 2, "counts stay whole");
}

#[test]
fn the_snapshot_download_has_seed_000s_name() {
    let d = Daemon::start(&[]);
    d.udp(br#"{"type":"heartbeat","worker_id":"w_1234567890_0"}"#);
    d.wait_applied("w_1234567890_0", 1);
    let (status, head, body) = d.request(
        "GET /api/workers/snapshot/w_1234567890_0 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200);
    let disposition = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Disposition: "))
        .expect("Content-Disposition");
    let name = disposition
        .strip_prefix("attachment; filename=\"worker-w_1234567890_0-")
        .and_then(|r| r.strip_suffix(".heapsnapshot\""))
        .unwrap_or_else(|| panic!("{disposition}"));
    assert!(name.parse::<u64>().is_ok(), "{disposition}");
    assert!(head.contains("Content-Type: application/json"), "{head}");
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["worker_id"], "w_1234567890_0");
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Seed 004's field list, as its `worker.metrics` returns it.
const SEED_004_FIELDS: &[&str] = &[
    "uptime",
    "uptimeSeconds",
    "totalRuns",
    "successRate",
    "errorRate",
    "runsPerHour",
    "avgExecutionTime",
    "minExecutionTime",
    "maxExecutionTime",
    "succeeded",
    "failed",
    "workerStartTime",
    "lastRunTime",
    "timestamp",
];

#[test]
fn seed_004s_trpc_query_answers_in_its_fields_and_errors_in_trpcs_shape() {
    let d = Daemon::start(&[]);
    for (ms, ok) in [(1000, true), (3000, true), (2000, false)] {
        d.udp(
            format!(r#"{{"type":"run","worker_id":"r1","duration_ms":{ms},"ok":{ok}}}"#).as_bytes(),
        );
    }
    d.wait_applied("r1", 3);
    let input = encode(r#"{"workerId":"r1"}"#);
    let v = d.json(&format!("/trpc/worker.metrics?input={input}"));
    let data = &v["result"]["data"];
    for f in SEED_004_FIELDS {
        assert!(data.get(*f).is_some(), "missing {f}: {v}");
    }
    assert_eq!(data["totalRuns"], 3);
    assert_eq!(data["succeeded"], 2);
    assert_eq!(data["failed"], 1);
    assert_eq!(data["successRate"], 66.67);
    assert_eq!(data["errorRate"], 33.33);
    assert_eq!(data["avgExecutionTime"], 2000.0);
    assert_eq!(data["minExecutionTime"], 1000.0);
    assert_eq!(data["maxExecutionTime"], 3000.0);
    assert!(data["uptime"].as_str().unwrap().ends_with('s'));
    // A Date, as JSON carries one.
    let start = data["workerStartTime"].as_str().unwrap();
    assert!(start.len() == 24 && start.ends_with('Z') && start.as_bytes()[10] == b'T');
    assert!(data["lastRunTime"].is_string());

    // The fleet, without input.
    let fleet = d.json("/trpc/worker.metrics");
    assert_eq!(fleet["result"]["data"]["totalRuns"], 3);
    assert_eq!(fleet["result"]["data"]["workers"], 1);

    // tRPC's error shape.
    let (status, e) = d.get(&format!(
        "/trpc/worker.metrics?input={}",
        encode(r#"{"workerId":"nobody"}"#)
    ));
    assert_eq!(status, 404);
    assert_eq!(e["error"]["code"], -32004);
    assert_eq!(e["error"]["data"]["code"], "NOT_FOUND");
    assert_eq!(e["error"]["data"]["httpStatus"], 404);
    assert_eq!(e["error"]["data"]["path"], "worker.metrics");
    assert!(e["error"]["message"].as_str().unwrap().contains("nobody"));
    let (status, e) = d.get(&format!(
        "/trpc/worker.metrics?input={}",
        encode(r#"{"workerId":5}"#)
    ));
    assert_eq!(
        (status, &e["error"]["data"]["code"]),
        (400, &json!("BAD_REQUEST"))
    );
    assert_eq!(e["error"]["code"], -32600);
    let (status, e) = d.get("/trpc/worker.metrics?input=%7Bnot");
    assert_eq!(
        (status, &e["error"]["data"]["code"]),
        (400, &json!("PARSE_ERROR"))
    );

    // The batch link's form: two calls, one of them failing.
    let input = encode(r#"{"0":{"workerId":"r1"},"1":{"workerId":"nobody"}}"#);
    let (status, b) = d.get(&format!(
        "/trpc/worker.metrics,worker.metrics?batch=1&input={input}"
    ));
    assert_eq!(status, 207);
    assert_eq!(b[0]["result"]["data"]["totalRuns"], 3);
    assert_eq!(b[1]["error"]["data"]["code"], "NOT_FOUND");
}

#[test]
fn metrics_interval_sets_the_report_with_seed_004s_fields() {
    let d = Daemon::spawn({
        let mut c = command(&[]);
        c.env("METRICS_INTERVAL", "1000");
        c
    });
    d.udp(br#"{"type":"run","worker_id":"m1","duration_ms":1250,"ok":true}"#);
    d.wait_for("a report with the run", |d| {
        d.log_has("total_runs=1 succeeded=1 failed=0 error_rate=0.00% success_rate=100.00%")
    });
    let log = d.log.lock().unwrap().join("\n");
    let line = log.lines().rfind(|l| l.contains("total_runs=1")).unwrap();
    for word in [
        "uptime=\"",
        "runs_per_hour=",
        "avg_duration=1250ms",
        "p95=1250ms",
    ] {
        assert!(line.contains(word), "{word} not in {line}");
    }
    assert!(!line.contains("  "), "{line}");
}

/// A temporary working directory with a `.env` and a config file.
fn dir_with(dotenv: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(".env"), dotenv).unwrap();
    std::fs::write(dir.path().join("m.conf"), "heartbeat_interval = 3s\n").unwrap();
    dir
}

/// The `welcome`'s heartbeat interval from a daemon started in `dir`.
fn interval_in(dir: &tempfile::TempDir, env: &[(&str, &str)]) -> u64 {
    let mut c = command(&[]);
    c.current_dir(dir.path())
        .args(["--config", "m.conf"])
        .env_remove("MUSTER_HEARTBEAT_INTERVAL");
    for (k, v) in env {
        c.env(k, v);
    }
    let d = Daemon::spawn(c);
    let mut s = d.tcp();
    s.write_all(b"{\"type\":\"hello\",\"worker_id\":\"e1\"}\n")
        .unwrap();
    read_line(&mut s).unwrap()["heartbeat_interval_ms"]
        .as_u64()
        .unwrap()
}

#[test]
fn dotenv_sits_below_the_environment_and_above_the_file() {
    let dir = dir_with(
        "# shared with the app\nDATABASE_URL=postgres://x\nMUSTER_HEARTBEAT_INTERVAL=\"7s\"\n",
    );
    assert_eq!(interval_in(&dir, &[]), 7000, ".env beats the file");
    assert_eq!(
        interval_in(&dir, &[("MUSTER_HEARTBEAT_INTERVAL", "9s")]),
        9000,
        "the environment beats .env"
    );
}

#[test]
fn a_bad_dotenv_line_is_a_configuration_error_naming_it() {
    let dir = dir_with("HTTP_PORT=:0\nthis is not a pair\n");
    let out = Command::new(MUSTERD)
        .current_dir(dir.path())
        .args(["--config", "m.conf", "--check-config"])
        .env_remove("HTTP_PORT")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(".env:2: expected KEY=VALUE"), "{err}");
}

#[test]
fn http_port_colon_port_listens_on_every_interface_and_warns() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut c = Command::new(MUSTERD);
    c.args([
        "--config",
        "/dev/null",
        "--heartbeat-addr",
        "127.0.0.1:0",
        "--state-dir",
        "off",
    ])
    .env("HTTP_PORT", format!(":{port}"))
    .env_remove("JOURNAL_STREAM")
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    let d = Daemon::spawn(c);
    assert_eq!(d.http.to_string(), format!("0.0.0.0:{port}"));
    // 127.0.0.2 is a local address that a loopback-only bind would refuse.
    let mut s = TcpStream::connect(("127.0.0.2", port)).expect("reachable on 127.0.0.2");
    s.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.2\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut buf = Vec::new();
    std::io::Read::read_to_end(&mut s, &mut buf).unwrap();
    assert_eq!(support::parse_response(&buf).0, 200);
    d.wait_log("beyond loopback, without api_tokens_file");
}

/// The README's first example, as a reader types it: ten datagrams from
/// bash's `/dev/udp`, each one a separate command, then `curl`.
#[test]
fn the_readmes_first_example_loses_no_datagram() {
    if !require("curl", runs("curl", &["--version"])) {
        return;
    }
    let readme = std::fs::read_to_string("README.md").unwrap();
    let block = readme
        .split("## The first five minutes")
        .nth(1)
        .and_then(|r| r.split("```bash\n").nth(1))
        .and_then(|r| r.split("```").next())
        .expect("the first example");
    let lines: Vec<&str> = block.lines().collect();
    let d = Daemon::start(&[]);
    let local = |l: &str| {
        l.replace(
            "127.0.0.1/8090",
            &format!("127.0.0.1/{}", d.heartbeat.port()),
        )
        .replace("localhost:8080", &d.http.to_string())
    };
    let send = lines[0];
    assert!(send.contains("> /dev/udp/"), "{send}");
    for _ in 0..10 {
        let st = Command::new("bash")
            .args(["-c", &local(send)])
            .status()
            .unwrap();
        assert!(st.success());
    }
    d.wait_applied("w1", 10);
    let curl = Command::new("bash")
        .args(["-c", &local(lines[1])])
        .output()
        .unwrap();
    let got = String::from_utf8_lossy(&curl.stdout);
    let want = lines[2].trim_start_matches("# ");
    let prefix = want.split("...").next().unwrap();
    assert!(
        got.starts_with(prefix),
        "README says {want}, curl printed {got}"
    );
    assert_eq!(d.json("/telemetry/w1")["messages_processed"], 10);
}

/// Seed 001's troubleshooting one-liner: how many workers are active.
#[test]
fn seed_001s_jq_count_of_active_workers() {
    if !require(
        "curl and jq",
        runs("curl", &["--version"]) && runs("jq", &["--version"]),
    ) {
        return;
    }
    let d = Daemon::start(&[]);
    for id in ["worker-1", "worker-2"] {
        d.udp(format!(r#"{{"type":"heartbeat","worker_id":"{id}"}}"#).as_bytes());
        d.wait_applied(id, 1);
    }
    let line = format!(
        "curl -s http://{}/workers | jq 'to_entries | map(select(.value.is_active)) | length'",
        d.http
    );
    let out = Command::new("bash").args(["-c", &line]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2\n");
}
