//! TLS with a certificate the test makes (openssl), checked with clients we
//! did not write: curl, and Python's websockets over wss://. Goodbyes too:
//! on SIGTERM a WebSocket client sees 1001 and a TCP worker `shutting_down`.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use support::{Daemon, read_line};

/// openssl, curl and Python's websockets.
fn tools() -> bool {
    support::require(
        "openssl, curl and python3 websockets",
        support::runs("openssl", &["version"])
            && support::runs("curl", &["--version"])
            && support::runs("python3", &["-c", "import websockets"]),
    )
}

/// A self-signed certificate for localhost and 127.0.0.1: (cert, key).
fn make_cert(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    let st = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    (cert, key)
}

fn curl(ca: &Path, url: &str) -> Option<String> {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(ca)
        .arg(url)
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).to_string())
}

const WSS: &str = r#"
import asyncio, json, ssl, sys, websockets
async def main():
    ctx = ssl.create_default_context(cafile=sys.argv[2]) if sys.argv[2] != "-" else None
    async with websockets.connect(sys.argv[1], ssl=ctx) as ws:
        print(json.dumps(json.loads(await asyncio.wait_for(ws.recv(), 10))), flush=True)
        try:
            while True:
                print(json.dumps(json.loads(await asyncio.wait_for(ws.recv(), 20))), flush=True)
        except websockets.ConnectionClosed:
            print(json.dumps({"closed": ws.close_code}), flush=True)
asyncio.run(main())
"#;

/// A Python client on `url`; its lines (messages, then the close code).
fn python_ws(
    url: &str,
    ca: &str,
) -> (
    std::process::Child,
    impl Iterator<Item = serde_json::Value> + use<>,
) {
    let mut child = Command::new("python3")
        .args(["-c", WSS, url, ca])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap());
    (child, lines)
}

#[test]
fn https_and_wss_with_a_certificate_renewed_on_sighup() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = make_cert(dir.path(), "one");
    let (live_cert, live_key) = (dir.path().join("live.pem"), dir.path().join("live.key"));
    std::fs::copy(&cert, &live_cert).unwrap();
    std::fs::copy(&key, &live_key).unwrap();
    let d = Daemon::start(&[
        "--tls-cert-file",
        live_cert.to_str().unwrap(),
        "--tls-key-file",
        live_key.to_str().unwrap(),
    ]);
    let port = d.http.port();
    let url = |host: &str, path: &str| format!("https://{host}:{port}{path}");
    let health = curl(&cert, &url("localhost", "/health")).expect("curl over TLS");
    assert!(health.contains("\"status\":\"healthy\""), "{health}");
    // Plain HTTP on the TLS port gets nothing it can read as HTTP.
    let (status, _, _) = d.request("GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_eq!(status, 0);

    d.udp(br#"{"type":"heartbeat","worker_id":"w1","cpu_usage":3}"#);
    d.wait_for("w1 over https", |_| {
        curl(&cert, &url("localhost", "/telemetry/w1"))
            .is_some_and(|b| b.contains("\"cpu_usage\":3"))
    });
    let (mut child, mut lines) = python_ws(
        &format!("wss://localhost:{port}/ws/telemetry"),
        cert.to_str().unwrap(),
    );
    let snap = lines.next().unwrap();
    assert_eq!(snap["workers"]["w1"]["cpu_usage"], 3.0);

    // A renewed certificate: new connections get it, the open stream stays.
    let (cert2, key2) = make_cert(dir.path(), "two");
    std::fs::copy(&cert2, &live_cert).unwrap();
    std::fs::copy(&key2, &live_key).unwrap();
    d.signal(libc::SIGHUP);
    d.wait_for("reload", |d| d.log_has("tls_cert_file: re-read"));
    d.udp(br#"{"type":"heartbeat","worker_id":"w1","cpu_usage":9}"#);
    let update = lines.next().unwrap();
    assert_eq!(
        update["workers"]["w1"]["cpu_usage"], 9.0,
        "the stream survived the reload"
    );
    assert!(curl(&cert2, &url("127.0.0.1", "/telemetry")).is_some());
    assert!(
        curl(&cert, &url("127.0.0.1", "/telemetry")).is_none(),
        "old certificate retired"
    );

    // Shutdown: the wss client is told 1001, not dropped.
    let (st, _) = d.stop();
    assert!(st.success());
    assert_eq!(lines.next().unwrap()["closed"], 1001);
    assert!(child.wait().unwrap().success());
}

#[test]
fn a_bad_key_is_a_configuration_error() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (cert, _) = make_cert(dir.path(), "one");
    let bad = dir.path().join("bad.key");
    std::fs::write(
        &bad,
        "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let (_, other_key) = make_cert(dir.path(), "two");
    for key in [&bad, &other_key] {
        let out = support::command(&[
            "--tls-cert-file",
            cert.to_str().unwrap(),
            "--tls-key-file",
            key.to_str().unwrap(),
        ])
        .output()
        .unwrap();
        assert_eq!(out.status.code(), Some(2), "{key:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("tls_cert_file") && err.contains(".key"),
            "{err}"
        );
    }
    let out = support::command(&["--tls-cert-file", cert.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn shutdown_says_goodbye_to_streams_and_workers() {
    if !tools() {
        return;
    }
    let d = Daemon::start(&[]);
    let mut w = d.tcp();
    w.write_all(b"{\"type\":\"hello\",\"worker_id\":\"w1\"}\n")
        .unwrap();
    assert_eq!(read_line(&mut w).unwrap()["type"], "welcome");
    let (mut child, mut lines) = python_ws(&format!("ws://{}/ws/telemetry", d.http), "-");
    assert_eq!(lines.next().unwrap()["type"], "snapshot");
    w.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let (st, _) = d.stop();
    assert!(st.success());
    let bye = read_line(&mut w).expect("a line before the close");
    assert_eq!(
        (bye["type"].as_str(), bye["code"].as_str()),
        (Some("error"), Some("shutting_down"))
    );
    assert!(support::closed(&mut w));
    assert_eq!(lines.next().unwrap()["closed"], 1001);
    assert!(child.wait().unwrap().success());
}
