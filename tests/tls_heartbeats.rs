//! Heartbeats over TLS, against certificates the test makes with openssl,
//! spoken by a client we did not write (Python's ssl): a worker with its
//! certificate joins; a wrong CA, an expired certificate, none at all, or
//! one naming another worker are refused; a certificate-bound worker's id
//! cannot be taken over plain TCP; and a renewed server certificate is
//! read on SIGHUP.

mod support;

use serde_json::Value;
use std::path::Path;
use std::process::Command;
use support::Daemon;
use support::pki::Pki;

/// One TLS session: hello as `id` with a client certificate (or none),
/// then the daemon's first line, or `tls-error ...`.
const HELLO: &str = r#"
import json, socket, ssl, sys
port, ca, cert, key, wid = sys.argv[1:6]
ctx = ssl.create_default_context(cafile=ca)
if cert != "-":
    ctx.load_cert_chain(cert, key)
try:
    with socket.create_connection(("127.0.0.1", int(port)), timeout=10) as s:
        with ctx.wrap_socket(s, server_hostname="127.0.0.1") as t:
            t.sendall((json.dumps({"type": "hello", "worker_id": wid}) + "\n").encode())
            f = t.makefile("r")
            line = f.readline()
            if not line:
                print("closed")
            else:
                print(line.strip())
                t.sendall(b'{"type":"heartbeat","status":"working","cpu_usage":7}\n')
                t.sendall(b'{"type":"bye"}\n')
                print(f.readline().strip() or "closed")
except (ssl.SSLError, OSError) as e:
    print("tls-error " + str(e))
"#;

fn hello(d: &Daemon, ca: &Path, pair: Option<(&Path, &Path)>, id: &str) -> String {
    let port = d.heartbeat_tls.expect("a TLS heartbeat listener").port();
    let (cert, key) = pair.map_or(("-".into(), "-".into()), |(c, k)| {
        (c.display().to_string(), k.display().to_string())
    });
    let out = Command::new("python3")
        .args(["-c", HELLO, &port.to_string()])
        .arg(ca)
        .args([&cert, &key, id])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

fn first(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or(Value::Null)
}

fn tls_failed(d: &Daemon) -> u64 {
    d.json("/health")["connections"]["tcp_tls_failed"]
        .as_u64()
        .unwrap_or(0)
}

fn tools() -> bool {
    Pki::available() && support::require("python3", support::runs("python3", &["--version"]))
}

#[test]
fn workers_with_their_certificates_join_and_others_are_refused() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let d = Daemon::start(&[
        "--heartbeat-tls-addr",
        "127.0.0.1:0",
        "--heartbeat-tls-cert-file",
        pki.server_cert.to_str().unwrap(),
        "--heartbeat-tls-key-file",
        pki.server_key.to_str().unwrap(),
        "--heartbeat-tls-client-ca-file",
        pki.ca.to_str().unwrap(),
    ]);
    let w1 = pki.client("w1");
    let pair = |p: &support::pki::Pair| (p.cert.clone(), p.key.clone());
    let (c, k) = pair(&w1);
    let line = hello(&d, &pki.ca, Some((&c, &k)), "w1");
    assert_eq!(first(&line)["type"], "welcome", "{line}");
    d.wait_for("w1 applied", |d| {
        d.get("/api/workers/w1").1["cpu_usage"] == 7.0
    });
    assert_eq!(d.json("/api/workers/w1")["transport"], "tcp");

    // The certificate names w1: a hello for w2 with it is refused.
    let line = hello(&d, &pki.ca, Some((&c, &k)), "w2");
    let e = first(&line);
    assert_eq!(e["code"], "worker_mismatch", "{line}");
    assert!(
        e["message"].as_str().unwrap().contains("worker w1's"),
        "{e}"
    );
    assert_eq!(d.get("/api/workers/w2").0, 404);

    let before = tls_failed(&d);
    // Signed by a CA the daemon does not trust, expired, or none at all:
    // the handshake fails.
    let rogue = pki.rogue("w3");
    let expired = pki.expired("w4");
    for (what, p) in [
        ("rogue CA", Some(pair(&rogue))),
        ("expired", Some(pair(&expired))),
        ("none", None),
    ] {
        let p = p.as_ref().map(|(c, k)| (c.as_path(), k.as_path()));
        let line = hello(&d, &pki.ca, p, "w3");
        assert!(
            line.starts_with("tls-error") || line == "closed",
            "{what}: {line}"
        );
    }
    assert_eq!(d.get("/api/workers/w3").0, 404);
    d.wait_for("three handshakes counted", |d| tls_failed(d) >= before + 3);
    assert!(d.log_has("tls heartbeat handshake from"), "logged");

    // The client does not trust a server its CA did not sign.
    let line = hello(&d, &pki.rogue_ca(), Some((&c, &k)), "w1");
    assert!(line.starts_with("tls-error"), "{line}");

    // w1's id is its certificate's: plain TCP cannot say hello for it.
    let mut s = d.tcp();
    use std::io::Write;
    s.write_all(b"{\"type\":\"hello\",\"worker_id\":\"w1\"}\n")
        .unwrap();
    let e = support::read_line(&mut s).unwrap();
    assert_eq!(e["code"], "worker_mismatch", "{e}");
    // Plain TCP still serves other workers.
    let mut s = d.tcp();
    s.write_all(b"{\"type\":\"hello\",\"worker_id\":\"p1\"}\n")
        .unwrap();
    assert_eq!(support::read_line(&mut s).unwrap()["type"], "welcome");
}

#[test]
fn without_a_client_ca_tls_is_encryption_only_and_the_certificate_renews_on_sighup() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let (cert, key) = (dir.path().join("live.pem"), dir.path().join("live.key"));
    std::fs::copy(&pki.server_cert, &cert).unwrap();
    std::fs::copy(&pki.server_key, &key).unwrap();
    let d = Daemon::start(&[
        "--heartbeat-tls-addr",
        "127.0.0.1:0",
        "--heartbeat-tls-cert-file",
        cert.to_str().unwrap(),
        "--heartbeat-tls-key-file",
        key.to_str().unwrap(),
    ]);
    let line = hello(&d, &pki.ca, None, "anon-1");
    assert_eq!(first(&line)["type"], "welcome", "{line}");
    // A renewed certificate from another CA: new sessions get it.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let pki2 = Pki::new(&other);
    std::fs::copy(&pki2.server_cert, &cert).unwrap();
    std::fs::copy(&pki2.server_key, &key).unwrap();
    d.signal(libc::SIGHUP);
    d.wait_for("reload", |d| d.log_has("heartbeat_tls_cert_file: re-read"));
    assert!(hello(&d, &pki.ca, None, "anon-2").starts_with("tls-error"));
    let line = hello(&d, &pki2.ca, None, "anon-2");
    assert_eq!(first(&line)["type"], "welcome", "{line}");
}

#[test]
fn bad_heartbeat_tls_settings_are_refused_at_start() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let cert = pki.server_cert.to_str().unwrap();
    let key = pki.server_key.to_str().unwrap();
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let junk = junk.to_str().unwrap();
    for (args, says) in [
        (vec!["--heartbeat-tls-cert-file", cert], "set together"),
        (
            vec!["--heartbeat-tls-client-ca-file", cert],
            "needs heartbeat_tls_cert_file",
        ),
        (
            vec![
                "--heartbeat-tls-cert-file",
                junk,
                "--heartbeat-tls-key-file",
                key,
            ],
            "no certificate",
        ),
        (
            vec![
                "--heartbeat-tls-cert-file",
                cert,
                "--heartbeat-tls-key-file",
                key,
                "--heartbeat-tls-client-ca-file",
                junk,
            ],
            "no certificate",
        ),
    ] {
        let mut a = args.clone();
        a.push("--check-config");
        let out = support::command(&a).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

/// `muster` itself over TLS: `workers` and `health` at an `https://` URL,
/// `beat --tls` and `agent --tls` with client certificates, all verified
/// against the test's CA (a wrong one is refused, and said).
#[test]
fn muster_speaks_https_and_tls_heartbeats() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let ca = pki.ca.to_str().unwrap();
    let args = pki.daemon_args();
    let d = Daemon::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let muster = env!("CARGO_BIN_EXE_muster");
    let url = format!("https://127.0.0.1:{}", d.http.port());
    let hb = d.heartbeat_tls.unwrap().to_string();
    let run = |args: &[&str]| {
        let out = Command::new(muster)
            .args(args)
            .env_remove("MUSTER_TLS_CA_FILE")
            .env_remove("MUSTER_TLS")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, out, err) = run(&["--url", &url, "--ca-file", ca, "health", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("\"status\""), "{out}");
    // Not the system's roots, nor another CA: refused, and said why.
    let (code, _, err) = run(&["--url", &url, "health"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("certificate"), "{err}");
    let (code, _, err) = run(&[
        "--url",
        &url,
        "--ca-file",
        pki.rogue_ca().to_str().unwrap(),
        "health",
    ]);
    assert_eq!(code, Some(1));
    assert!(err.contains("certificate"), "{err}");

    let b1 = pki.client("b1");
    // `muster beat --tls` as `id` with b1's certificate.
    let beat_as = |id: &str, extra: &[&str]| {
        let mut args = vec!["beat", "--id", id, "--tls", "--ca-file", ca];
        args.extend(["--cert-file", b1.cert.to_str().unwrap()]);
        args.extend([
            "--key-file",
            b1.key.to_str().unwrap(),
            "--heartbeat-addr",
            &hb,
        ]);
        args.extend_from_slice(extra);
        run(&args)
    };
    let (code, _, err) = beat_as("b1", &["--status", "working"]);
    assert_eq!(code, Some(0), "{err}");
    // b1's certificate cannot say it is b2.
    let (code, _, err) = beat_as("b2", &[]);
    assert_eq!(code, Some(1));
    assert!(err.contains("worker_mismatch"), "{err}");

    let a1 = pki.client("a1");
    let mut agent = Command::new(muster)
        .args([
            "agent",
            "--id",
            "a1",
            "--interval",
            "200ms",
            "--tls",
            "--ca-file",
            ca,
        ])
        .args([
            "--cert-file",
            a1.cert.to_str().unwrap(),
            "--key-file",
            a1.key.to_str().unwrap(),
        ])
        .args(["--heartbeat-addr", &hb, "--", "sleep", "30"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The daemon's HTTP is HTTPS: asked through muster itself.
    let status = |id: &str| -> Value {
        let (_, out, _) = run(&["--url", &url, "--ca-file", ca, "status", id, "--json"]);
        serde_json::from_str(&out).unwrap_or(Value::Null)
    };
    let until = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while status("a1")["messages_processed"].as_u64().unwrap_or(0) < 3 {
        assert!(
            std::time::Instant::now() < until,
            "the agent never beat over TLS"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(status("b1")["status"], "working");
    let (code, out, err) = run(&["--url", &url, "--ca-file", ca, "workers", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let ids: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w["worker_id"].as_str())
        .collect();
    assert!(ids.contains(&"a1") && ids.contains(&"b1"), "{out}");
    let _ = agent.kill();
    let _ = agent.wait();

    // watch over wss://: b1's next beat shows up in its lines.
    let mut watch = Command::new(muster)
        .args(["--url", &url, "--ca-file", ca, "watch"])
        .env_remove("MUSTER_TLS_CA_FILE")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = watch.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let until = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let mut seen = false;
    while !seen && std::time::Instant::now() < until {
        let (code, _, err) = beat_as("b1", &["--cpu", "42"]);
        assert_eq!(code, Some(0), "{err}");
        while let Ok(l) = rx.recv_timeout(std::time::Duration::from_millis(300)) {
            seen |= l.contains("b1") && l.contains("cpu=42.0");
        }
    }
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(seen, "muster watch over wss:// never showed b1's beat");
}
