//! The conformance suite of the worker libraries
//! (`clients/conformance/README.md`): each client's runner, a worker made
//! with its library, joins a real musterd, is driven over its standard
//! input, and is judged by what the daemon shows. The scenarios are
//! written once, here, and run for Python, Go and Node.

mod support;

use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};
use support::Daemon;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// How to start a client's runner; `None` (and a loud skip, a failure in
/// CI) when its language is not installed.
fn runner(client: &str) -> Option<Command> {
    let root = Path::new(ROOT);
    match client {
        "python" => {
            support::require("python3", support::runs("python3", &["--version"])).then(|| {
                let mut c = Command::new("python3");
                c.arg(root.join("clients/python/conformance/runner.py"))
                    .env("PYTHONPATH", root.join("clients/python"));
                c
            })
        }
        "node" => support::require("node", support::runs("node", &["--version"])).then(|| {
            let mut c = Command::new("node");
            c.arg(root.join("clients/node/conformance/runner.js"));
            c
        }),
        "go" => go_runner().map(Command::new),
        _ => unreachable!("{client}"),
    }
}

/// The Go runner, built once per run of this suite.
fn go_runner() -> Option<PathBuf> {
    static BUILT: OnceLock<Option<PathBuf>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            if !support::require("go (golang-go)", support::runs("go", &["version"])) {
                return None;
            }
            let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("muster-go-conformance");
            let built = Command::new("go")
                .args(["build", "-o"])
                .arg(&out)
                .arg("./conformance")
                .current_dir(Path::new(ROOT).join("clients/go"))
                .env("GOFLAGS", "-mod=mod")
                .env("GOTOOLCHAIN", "local")
                .status()
                .expect("run go build");
            assert!(built.success(), "go build of the conformance runner failed");
            Some(out)
        })
        .clone()
}

/// A running runner: its stdin for commands, its stdout lines.
struct Runner {
    client: &'static str,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl Drop for Runner {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Runner {
    /// Start `client`'s runner as worker `id` on `addrs`, with `env` on
    /// top, and wait for its `ready`.
    fn start(
        client: &'static str,
        d: &Daemon,
        addrs: &str,
        id: &str,
        env: &[(&str, &str)],
    ) -> Option<Runner> {
        let mut c = runner(client)?;
        c.env("MUSTER_ADDRS", addrs)
            .env("MUSTER_URL", format!("http://{}", d.http))
            .env("MUSTER_WORKER_ID", id)
            .env_remove("MUSTER_HEARTBEAT_TOKEN_FILE")
            .env_remove("MUSTER_TOKEN_FILE")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            c.env(k, v);
        }
        let mut child = c
            .spawn()
            .unwrap_or_else(|e| panic!("{client}: start the runner: {e}"));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let mut r = Runner {
            client,
            child,
            stdin,
            lines,
        };
        let first = r.line(Duration::from_secs(30));
        assert_eq!(
            first.as_deref(),
            Some("ready"),
            "{client}: the runner's first line"
        );
        Some(r)
    }

    /// The next line, within `within`.
    fn line(&mut self, within: Duration) -> Option<String> {
        self.lines.recv_timeout(within).ok()
    }

    /// Send one command and read its answer.
    fn ask(&mut self, command: &str) -> String {
        let stdin = self.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{command}")
            .unwrap_or_else(|e| panic!("{}: write {command:?}: {e}", self.client));
        stdin.flush().unwrap();
        self.line(Duration::from_secs(40))
            .unwrap_or_else(|| panic!("{}: no answer to {command:?}", self.client))
    }

    /// Wait for the runner to exit; its code.
    fn exit_code(&mut self, within: Duration) -> Option<i32> {
        let until = Instant::now() + within;
        while Instant::now() < until {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

fn daemon(extra: &[&str]) -> Daemon {
    let mut args = vec!["--heartbeat-interval", "1s", "--inactivity-timeout", "5s"];
    args.extend_from_slice(extra);
    Daemon::start(&args)
}

fn submit(d: &Daemon, body: Value) -> String {
    let (status, t) = d.post("/api/tasks", "", &body.to_string());
    assert_eq!(status, 201, "{t}");
    t["id"].as_str().unwrap().to_string()
}

fn task(d: &Daemon, id: &str) -> Value {
    d.json(&format!("/api/tasks/{id}"))
}

fn wait_state(d: &Daemon, client: &str, id: &str, state: &str) -> Value {
    d.wait_for(&format!("{client}: task {id} {state}"), |d| {
        task(d, id)["state"] == state
    });
    task(d, id)
}

fn logs(d: &Daemon, id: &str) -> Vec<String> {
    let (status, _, body) = d.request(&format!(
        "GET /api/tasks/{id}/logs HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    ));
    assert_eq!(status, 200);
    let v: Value = serde_json::from_slice(&body).unwrap();
    v["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect()
}

fn worker(d: &Daemon, id: &str) -> Value {
    d.get(&format!("/api/workers/{id}")).1
}

fn joined(d: &Daemon, client: &str, id: &str) {
    d.wait_for(&format!("{client}: {id} joined"), |d| {
        worker(d, id)["status"] == "idle"
    });
}

fn join(client: &'static str) {
    let d = daemon(&[]);
    let id = format!("{client}-join");
    let Some(mut r) = Runner::start(client, &d, &d.heartbeat.to_string(), &id, &[]) else {
        return;
    };
    joined(&d, client, &id);
    let w = worker(&d, &id);
    assert_eq!(w["transport"], "tcp", "{client}: {w}");
    assert_eq!(w["labels"]["client"], client, "{client}: {w}");
    assert_eq!(w["capacity"], 4, "{client}: {w}");
    // bye: the worker is terminated at once, and the runner ends.
    let stdin = r.stdin.as_mut().unwrap();
    writeln!(stdin, "bye").unwrap();
    assert_eq!(
        r.exit_code(Duration::from_secs(10)),
        Some(0),
        "{client}: exit after bye"
    );
    d.wait_for(&format!("{client}: terminated by bye"), |d| {
        worker(d, &id)["status"] == "terminated"
    });
}

fn state(client: &'static str) {
    let d = daemon(&[]);
    let id = format!("{client}-state");
    let Some(mut r) = Runner::start(client, &d, &d.heartbeat.to_string(), &id, &[]) else {
        return;
    };
    joined(&d, client, &id);
    let set = json!({"status": "working", "queue_depth": 3, "current_job": {"id": "job-1", "type": "resize"}, "cpu_usage": 12.5});
    assert_eq!(r.ask(&format!("set {set}")), "ok");
    d.wait_for(&format!("{client}: state shown"), |d| {
        let w = worker(d, &id);
        w["status"] == "working"
            && w["queue_depth"] == 3
            && w["current_job"]["id"] == "job-1"
            && w["cpu_usage"] == 12.5
    });
    assert_eq!(r.ask("run 0.25 ok"), "ok");
    assert_eq!(r.ask("run 0.5 fail"), "ok");
    d.wait_for(&format!("{client}: runs counted"), |d| {
        let m = d.get(&format!("/api/workers/{id}/metrics")).1;
        m["total_runs"] == 2 && m["failed"] == 1
    });
}

fn task_runs(client: &'static str) {
    let d = daemon(&[]);
    let id = format!("{client}-task");
    let Some(_r) = Runner::start(client, &d, &d.heartbeat.to_string(), &id, &[]) else {
        return;
    };
    joined(&d, client, &id);
    let t = submit(&d, json!({"type": "echo", "payload": {"n": 1}}));
    let done = wait_state(&d, client, &t, "succeeded");
    assert_eq!(
        done["result"],
        json!({"echo": {"n": 1}, "client": client}),
        "{client}: {done}"
    );
    assert_eq!(done["worker_id"], id.as_str());
    assert_eq!(done["progress"]["fraction"], 0.5, "{client}: {done}");
    assert_eq!(done["progress"]["message"], "halfway", "{client}: {done}");
    let lines = logs(&d, &t);
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&format!("hello from {client}"))),
        "{client}: {lines:?}"
    );
}

fn failure(client: &'static str) {
    let d = daemon(&[]);
    let id = format!("{client}-failure");
    let Some(_r) = Runner::start(client, &d, &d.heartbeat.to_string(), &id, &[]) else {
        return;
    };
    joined(&d, client, &id);
    let fail = submit(&d, json!({"type": "fail"}));
    let t = wait_state(&d, client, &fail, "failed");
    assert!(
        t["error"].as_str().unwrap_or("").contains("boom"),
        "{client}: {t}"
    );
    assert_eq!(t["attempt"], 1, "{client}: not retried: {t}");
    let flaky = submit(
        &d,
        json!({"type": "flaky", "retry": {"backoff_base_ms": 100, "backoff_max_ms": 200}}),
    );
    let t = wait_state(&d, client, &flaky, "succeeded");
    assert_eq!(
        (t["attempt"].clone(), t["result"].clone()),
        (json!(2), json!({"attempt": 2})),
        "{client}: {t}"
    );
}

fn cancel(client: &'static str) {
    let d = daemon(&[]);
    let id = format!("{client}-cancel");
    let Some(_r) = Runner::start(client, &d, &d.heartbeat.to_string(), &id, &[]) else {
        return;
    };
    joined(&d, client, &id);
    let t = submit(&d, json!({"type": "wait"}));
    wait_state(&d, client, &t, "running");
    let (status, _, _) = d.request(&format!(
        "DELETE /api/tasks/{t} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    ));
    assert_eq!(status, 200);
    let done = wait_state(&d, client, &t, "cancelled");
    assert!(
        logs(&d, &t).iter().any(|l| l.contains("cancel seen")),
        "{client}: the handler saw no cancel: {done}"
    );
}

fn token(client: &'static str) {
    let dir = tempfile::tempdir().unwrap();
    let (right, wrong) = (dir.path().join("right"), dir.path().join("wrong"));
    std::fs::write(&right, "the-right-token-0123456789\n").unwrap();
    std::fs::write(&wrong, "a-wrong-token-9876543210\n").unwrap();
    let d = daemon(&["--heartbeat-token-file", right.to_str().unwrap()]);
    // The right token joins.
    let ok = format!("{client}-token-ok");
    let Some(_good) = Runner::start(
        client,
        &d,
        &d.heartbeat.to_string(),
        &ok,
        &[("MUSTER_HEARTBEAT_TOKEN_FILE", right.to_str().unwrap())],
    ) else {
        return;
    };
    joined(&d, client, &ok);
    // A wrong one is fatal, reported, and not tried forever.
    let id = format!("{client}-token");
    let Some(mut r) = Runner::start(
        client,
        &d,
        &d.heartbeat.to_string(),
        &id,
        &[("MUSTER_HEARTBEAT_TOKEN_FILE", wrong.to_str().unwrap())],
    ) else {
        return;
    };
    let said = r.line(Duration::from_secs(10));
    assert!(
        said.as_deref().is_some_and(|l| l.starts_with("fatal")),
        "{client}: {said:?}"
    );
    assert_eq!(
        r.exit_code(Duration::from_secs(5)),
        Some(3),
        "{client}: exit code"
    );
    assert_eq!(d.get(&format!("/api/workers/{id}")).0, 404);
}

fn oversized(client: &'static str) {
    let d = daemon(&[]);
    let id = format!("{client}-big");
    let Some(mut r) = Runner::start(client, &d, &d.heartbeat.to_string(), &id, &[]) else {
        return;
    };
    joined(&d, client, &id);
    let big = json!({"current_job": {"id": "big", "type": "x".repeat(70_000)}});
    let said = r.ask(&format!("set {big}"));
    assert!(said.starts_with("error"), "{client}: {said}");
    assert_eq!(r.ask(r#"set {"status":"working"}"#), "ok");
    d.wait_for(&format!("{client}: the next set shown"), |d| {
        worker(d, &id)["status"] == "working"
    });
    let w = worker(&d, &id);
    assert!(w["current_job"].is_null(), "{client}: {w}");
    assert_eq!(
        d.rejected("too_large"),
        0,
        "{client}: refused before it was sent"
    );
}

fn restart(client: &'static str) {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let runs = dir.path().join("runs");
    let d = daemon(&["--state-dir", state.to_str().unwrap()]);
    let (http, hb) = (d.http.to_string(), d.heartbeat.to_string());
    let id = format!("{client}-restart");
    let Some(_r) = Runner::start(
        client,
        &d,
        &hb,
        &id,
        &[("MUSTER_CONFORMANCE_RUNS", runs.to_str().unwrap())],
    ) else {
        return;
    };
    joined(&d, client, &id);
    let t = submit(&d, json!({"type": "slow"}));
    wait_state(&d, client, &t, "running");
    let (status, _) = d.stop();
    assert!(status.success(), "{client}: the daemon's stop");
    let ready = Instant::now();
    let d = daemon(&[
        "--state-dir",
        state.to_str().unwrap(),
        "--http-addr",
        &http,
        "--heartbeat-addr",
        &hb,
    ]);
    d.wait_for(&format!("{client}: back after the restart"), |d| {
        d.get(&format!("/api/workers/{id}")).1["transport"] == "tcp"
    });
    eprintln!(
        "{client}: reconnected {:?} after the daemon was ready",
        ready.elapsed()
    );
    let done = wait_state(&d, client, &t, "succeeded");
    assert_eq!(done["attempt"], 1, "{client}: kept, not run again: {done}");
    assert_eq!(done["result"], json!({"slept": true}), "{client}: {done}");
    let started = std::fs::read_to_string(&runs).unwrap();
    assert_eq!(
        started.lines().count(),
        1,
        "{client}: started once: {started:?}"
    );
}

fn failover(client: &'static str) {
    let d = daemon(&[]);
    // An address nothing listens on, first.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let id = format!("{client}-failover");
    let addrs = format!("{dead},{}", d.heartbeat);
    let Some(_r) = Runner::start(client, &d, &addrs, &id, &[]) else {
        return;
    };
    joined(&d, client, &id);
}

fn producer(client: &'static str) {
    let d = daemon(&[]);
    let id = format!("{client}-producer");
    let Some(mut r) = Runner::start(client, &d, &d.heartbeat.to_string(), &id, &[]) else {
        return;
    };
    joined(&d, client, &id);
    let first = r.ask(r#"submit echo {"k":1} key-1"#);
    let again = r.ask(r#"submit echo {"k":1} key-1"#);
    assert!(first.starts_with("task "), "{client}: {first}");
    assert_eq!(first, again, "{client}: one task per idempotency key");
    let t = first.trim_start_matches("task ").to_string();
    assert_eq!(r.ask(&format!("wait {t}")), "state succeeded", "{client}");
    let shown = r.ask(&format!("show {t}"));
    let shown: Value = serde_json::from_str(shown.trim_start_matches("task "))
        .unwrap_or_else(|e| panic!("{client}: {shown}: {e}"));
    assert_eq!(
        shown["result"]["echo"],
        json!({"k": 1}),
        "{client}: {shown}"
    );
    // A task nobody takes, cancelled through the client.
    let queued = r.ask(r#"submit nobody-takes-this {} -"#);
    let q = queued.trim_start_matches("task ").to_string();
    assert_ne!(q, t);
    assert_eq!(r.ask(&format!("cancel {q}")), "ok");
    assert_eq!(task(&d, &q)["state"], "cancelled");
}

fn kill(client: &'static str) {
    let d = daemon(&[]);
    let id = format!("{client}-kill");
    let Some(mut r) = Runner::start(client, &d, &d.heartbeat.to_string(), &id, &[]) else {
        return;
    };
    joined(&d, client, &id);
    let t = submit(&d, json!({"type": "slow", "worker_id": id}));
    wait_state(&d, client, &t, "running");
    r.child.kill().unwrap();
    let _ = r.child.wait();
    let back = wait_state(&d, client, &t, "queued");
    assert_eq!(back["attempt"], 2, "{client}: {back}");
}

/// Over TLS: heartbeats to the TLS listener with a client certificate
/// naming the worker, the producer over `https://`, both verified against
/// the test's CA; a certificate naming another worker is fatal.
fn tls(client: &'static str) {
    if !support::pki::Pki::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pki = support::pki::Pki::new(dir.path());
    let ca = pki.ca.to_str().unwrap();
    let args = pki.daemon_args();
    let d = daemon(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let id = format!("{client}-tls");
    let mine = pki.client(&id);
    let url = format!("https://127.0.0.1:{}", d.http.port());
    let addr = d.heartbeat_tls.unwrap().to_string();
    let env = |pair: &support::pki::Pair| {
        vec![
            ("MUSTER_URL".to_string(), url.clone()),
            ("MUSTER_TLS".to_string(), "1".to_string()),
            ("MUSTER_TLS_CA_FILE".to_string(), ca.to_string()),
            (
                "MUSTER_TLS_CERT_FILE".to_string(),
                pair.cert.display().to_string(),
            ),
            (
                "MUSTER_TLS_KEY_FILE".to_string(),
                pair.key.display().to_string(),
            ),
        ]
    };
    let e = env(&mine);
    let e: Vec<(&str, &str)> = e.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let Some(mut r) = Runner::start(client, &d, &addr, &id, &e) else {
        return;
    };
    // Submitted over https by the library's client, run by the worker
    // over TLS heartbeats, read back over https.
    let made = r.ask(r#"submit echo {"over":"tls"} -"#);
    assert!(made.starts_with("task "), "{client}: {made}");
    let t = made.trim_start_matches("task ").to_string();
    assert_eq!(r.ask(&format!("wait {t}")), "state succeeded", "{client}");
    let shown = r.ask(&format!("show {t}"));
    let shown: Value = serde_json::from_str(shown.trim_start_matches("task "))
        .unwrap_or_else(|e| panic!("{client}: {shown}: {e}"));
    assert_eq!(
        shown["result"]["echo"],
        json!({"over": "tls"}),
        "{client}: {shown}"
    );
    assert_eq!(shown["worker_id"], id.as_str(), "{client}: {shown}");
    // Another worker's certificate: the daemon refuses the hello, and the
    // library stops for good.
    let e = env(&mine);
    let e: Vec<(&str, &str)> = e.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let Some(mut other) = Runner::start(client, &d, &addr, &format!("{client}-not-mine"), &e)
    else {
        return;
    };
    let said = other.line(Duration::from_secs(15)).unwrap_or_default();
    // The daemon's reason, passed on (the code is worker_mismatch).
    assert!(
        said.starts_with("fatal")
            && said.contains(&format!("the client certificate is worker {id}'s")),
        "{client}: {said:?}"
    );
    assert_eq!(
        other.exit_code(Duration::from_secs(10)),
        Some(3),
        "{client}"
    );
}

macro_rules! conformance {
    ($($client:ident),*) => {$(
        mod $client {
            const C: &str = stringify!($client);
            #[test] fn join() { super::join(C) }
            #[test] fn state() { super::state(C) }
            #[test] fn task() { super::task_runs(C) }
            #[test] fn failure() { super::failure(C) }
            #[test] fn cancel() { super::cancel(C) }
            #[test] fn token() { super::token(C) }
            #[test] fn oversized() { super::oversized(C) }
            #[test] fn restart() { super::restart(C) }
            #[test] fn failover() { super::failover(C) }
            #[test] fn producer() { super::producer(C) }
            #[test] fn kill() { super::kill(C) }
            #[test] fn tls() { super::tls(C) }
        }
    )*};
}

conformance!(python, go, node);

/// A code block of README.md's worker libraries section, by language.
fn readme_example(lang: &str) -> String {
    let readme = std::fs::read_to_string(Path::new(ROOT).join("README.md")).unwrap();
    let section = readme
        .split("## Worker libraries")
        .nth(1)
        .expect("README.md has a worker libraries section");
    let block = section
        .split(&format!("```{lang}\n"))
        .nth(1)
        .unwrap_or_else(|| panic!("no {lang} example"));
    block.split("```").next().unwrap().to_string()
}

/// README.md's example worker, as a user runs it: the library installed
/// from the repository (`pip install` into a fresh virtual environment,
/// `npm install` into a fresh package, `go` with a `replace` to the
/// checkout), the example pointed at a real musterd, a `resize` task
/// submitted and done.
fn readme_worker(client: &'static str) {
    let dir = tempfile::tempdir().unwrap();
    let d = daemon(&[]);
    let code = readme_example(match client {
        "python" => "python",
        "go" => "go",
        _ => "js",
    })
    .replace("127.0.0.1:8090", &d.heartbeat.to_string());
    let root = Path::new(ROOT);
    let mut cmd = match client {
        "python" => {
            if !support::require(
                "python3 -m venv",
                support::runs("python3", &["-m", "venv", "--help"]),
            ) {
                return;
            }
            let venv = dir.path().join("venv");
            let ok = Command::new("python3")
                .arg("-m")
                .arg("venv")
                .arg(&venv)
                .status()
                .unwrap();
            assert!(ok.success());
            let pip = Command::new(venv.join("bin/pip"))
                .args(["install", "-q", "--disable-pip-version-check"])
                .arg(root.join("clients/python"))
                .status()
                .unwrap();
            assert!(pip.success(), "pip install ./clients/python");
            std::fs::write(dir.path().join("worker.py"), &code).unwrap();
            let mut c = Command::new(venv.join("bin/python"));
            c.arg(dir.path().join("worker.py"));
            c
        }
        "node" => {
            if !support::require("npm", support::runs("npm", &["--version"])) {
                return;
            }
            std::fs::write(
                dir.path().join("package.json"),
                r#"{"name":"example","type":"module","private":true}"#,
            )
            .unwrap();
            let npm = Command::new("npm")
                .args(["install", "--silent", "--no-audit", "--no-fund"])
                .arg(root.join("clients/node"))
                .current_dir(dir.path())
                .status()
                .unwrap();
            assert!(npm.success(), "npm install ./clients/node");
            std::fs::write(dir.path().join("worker.mjs"), &code).unwrap();
            let mut c = Command::new("node");
            c.arg(dir.path().join("worker.mjs"));
            c
        }
        _ => {
            if go_runner().is_none() {
                return;
            }
            let main = format!(
                "package main\n\nimport (\n\t\"context\"\n\t\"log\"\n\n\t\"muster.dev/muster\"\n)\n\nfunc main() {{\n{code}}}\n"
            );
            std::fs::write(dir.path().join("main.go"), main).unwrap();
            let gomod = format!(
                "module example\n\ngo 1.19\n\nrequire muster.dev/muster v0.0.0\n\nreplace muster.dev/muster => {}\n",
                root.join("clients/go").display()
            );
            std::fs::write(dir.path().join("go.mod"), gomod).unwrap();
            let bin = dir.path().join("example");
            let built = Command::new("go")
                .args(["build", "-o"])
                .arg(&bin)
                .arg(".")
                .current_dir(dir.path())
                .env("GOFLAGS", "-mod=mod")
                .env("GOTOOLCHAIN", "local")
                .status()
                .unwrap();
            assert!(built.success(), "go build of the README's example");
            Command::new(bin)
        }
    };
    let mut example = cmd
        .env_remove("MUSTER_ADDRS")
        .env_remove("MUSTER_WORKER_ID")
        .env_remove("MUSTER_CAPACITY")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    d.wait_for(&format!("{client}: the README's worker"), |d| {
        worker(d, "resizer-1")["status"] == "idle"
    });
    let t = submit(&d, json!({"type": "resize", "payload": {"file": "a.png"}}));
    let done = wait_state(&d, client, &t, "succeeded");
    let _ = example.kill();
    let _ = example.wait();
    assert!(done["result"].is_object(), "{client}: {done}");
    assert!(
        logs(&d, &t).iter().any(|l| l.contains("resizing")),
        "{client}"
    );
}

mod readme {
    #[test]
    fn python() {
        super::readme_worker("python")
    }
    #[test]
    fn go() {
        super::readme_worker("go")
    }
    #[test]
    fn node() {
        super::readme_worker("node")
    }
}
