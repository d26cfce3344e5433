//! The real `muster` binary against a real `musterd`.

mod support;
use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::Daemon;

const MUSTER: &str = env!("CARGO_BIN_EXE_muster");

fn muster(d: &Daemon, args: &[&str]) -> Output {
    Command::new(MUSTER)
        .args(args)
        .env("MUSTER_URL", format!("http://{}", d.http))
        .env("MUSTER_HEARTBEAT_ADDR", d.heartbeat.to_string())
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(o: &Output) -> (i32, String, String) {
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into(),
        String::from_utf8_lossy(&o.stderr).into(),
    )
}

#[test]
fn beat_then_workers_status_and_health() {
    let d = Daemon::start(&[]);
    let (code, _, err) = text(&muster(
        &d,
        &[
            "beat", "--id", "w1", "--status", "working", "--cpu", "50", "--mem", "12.5", "--queue",
            "3",
        ],
    ));
    assert_eq!(code, 0, "{err}");
    d.wait_applied("w1", 1);
    let (code, _, _) = text(&muster(&d, &["beat", "--id", "w2", "--tcp"]));
    assert_eq!(code, 0);
    assert_eq!(d.json("/api/workers/w2")["transport"], "tcp");
    // The pid is the script's that ran `muster beat` (here, this test).
    d.wait_for("w2's pid from its hello", |d| {
        d.json("/api/workers/w2")["pid"] == std::process::id()
    });

    let (code, out2, _) = text(&muster(&d, &["workers"]));
    assert_eq!(code, 0);
    let lines: Vec<&str> = out2.lines().collect();
    assert!(
        lines[0].starts_with("ID") && lines[0].ends_with("LAST_SEEN"),
        "{out2}"
    );
    let w1: Vec<&str> = lines
        .iter()
        .find(|l| l.starts_with("w1"))
        .unwrap()
        .split_whitespace()
        .collect();
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(w1.len(), header.len(), "{out2}");
    for (column, cell) in [
        ("STATUS", "working"),
        ("ACTIVE", "yes"),
        ("CPU%", "50.0"),
        ("MEM%", "12.5"),
        ("QUEUE", "3"),
        ("RSS_MB", "-"),
    ] {
        let i = header.iter().position(|h| *h == column).unwrap();
        assert_eq!(w1[i], cell, "{column} in {out2}");
    }
    assert!(w1.last().unwrap().ends_with('s'), "{out2}");
    assert!(
        !out2.contains('\x1b') && out2.lines().all(|l| l.trim_end() == l),
        "no colour when stdout is not a terminal, no trailing blanks"
    );
    // For scripts: no header, and every row splits the same.
    let (code, bare, _) = text(&muster(&d, &["workers", "--no-headers", "--wide"]));
    assert_eq!(code, 0);
    let rows: Vec<Vec<&str>> = bare
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 2, "{bare}");
    assert!(rows.iter().all(|r| r.len() == 12), "{bare}");
    let w2 = rows.iter().find(|r| r[0] == "w2").unwrap();
    assert_eq!(w2[10], "tcp", "{bare}");
    assert!(w2[9] != "-", "the hello's hostname: {bare}");

    let (_, json_out, _) = text(&muster(&d, &["workers", "--status", "working", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&json_out).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);

    let (code, out, _) = text(&muster(&d, &["status", "w1"]));
    assert_eq!(code, 0);
    assert!(
        out.starts_with("w1 is working and active: cpu 50.0%, mem 12.5%, queue 3; last seen "),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("cpu_usage") && l.ends_with("50.0")),
        "{out}"
    );
    let created = out.lines().find(|l| l.starts_with("created_at")).unwrap();
    assert!(
        created.contains("Z (") && created.ends_with(" ago)"),
        "ISO date and age: {created}"
    );
    let (code, out, _) = text(&muster(&d, &["status", "w1", "--json"]));
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["queue_depth"],
        3
    );

    let (code, out, _) = text(&muster(&d, &["health"]));
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("status   healthy"), "{out}");
    assert!(out.contains("2 total, 2 active"), "{out}");
    assert_eq!(d.json("/health")["reasons"], serde_json::json!([]));

    // A worker that says error is the fleet's trouble, not musterd's: the
    // daemon stays healthy, the fleet is degraded with the reason, and
    // `--fleet` makes the exit status say so.
    let (code, _, _) = text(&muster(&d, &["beat", "--id", "w3", "--status", "error"]));
    assert_eq!(code, 0);
    d.wait_applied("w3", 1);
    let (code, out, _) = text(&muster(&d, &["health"]));
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("status   healthy"), "{out}");
    assert!(
        out.contains("fleet    degraded\n         - 1 worker report error"),
        "{out}"
    );
    let h = d.json("/health");
    assert_eq!(h["status"], "healthy");
    assert_eq!(h["reasons"], serde_json::json!([]));
    assert_eq!(h["fleet"]["status"], "degraded");
    assert_eq!(
        h["fleet"]["reasons"],
        serde_json::json!(["1 worker report error"])
    );
    let (code, _, _) = text(&muster(&d, &["health", "--fleet"]));
    assert_eq!(code, 3, "--fleet exits 3 on the fleet's reasons");
    let (code, _, _) = text(&muster(&d, &["health", "--fleet", "--json"]));
    assert_eq!(code, 3, "the exit status says degraded with --json too");

    // --label keeps the workers carrying every label given.
    d.udp(br#"{"type":"heartbeat","worker_id":"w4","labels":{"team":"ml","zone":"a"}}"#);
    d.wait_applied("w4", 1);
    let (_, out, _) = text(&muster(
        &d,
        &["workers", "--no-headers", "--label", "team=ml"],
    ));
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.starts_with("w4 "), "{out}");
    let (_, out, err) = text(&muster(
        &d,
        &["workers", "--label", "team=ml", "--label", "zone=b"],
    ));
    assert_eq!((out.as_str(), err.as_str()), ("", "no workers\n"));

    let (code, _, _) = text(&muster(&d, &["beat", "--id", "w1", "--bye"]));
    assert_eq!(code, 0);
    d.wait_for("terminated", |d| {
        d.json("/telemetry/w1")["status"] == "terminated"
    });
}

#[test]
fn exit_codes() {
    let d = Daemon::start(&[]);
    let (code, _, err) = text(&muster(&d, &["status", "nobody"]));
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("no worker nobody"));
    let (code, _, _) = text(&muster(&d, &["frobnicate"]));
    assert_eq!(code, 2);
    let (code, _, _) = text(&muster(&d, &["beat", "--cpu", "5"]));
    assert_eq!(code, 2, "beat without --id");
    let (code, _, err) = text(&muster(&d, &["beat", "--id", "bad id"]));
    assert_eq!(code, 2, "{err}");
    let (code, _, _) = text(&muster(&d, &["beat", "--id", "w", "--cpu", "lots"]));
    assert_eq!(code, 2);
    let (code, _, _) = text(&muster(&d, &["workers", "--status", "sleepy"]));
    assert_eq!(code, 2);
    for sub in ["workers", "status", "health", "watch", "beat"] {
        let (code, out, _) = text(&muster(&d, &[sub, "--help"]));
        assert_eq!(code, 0, "{sub} --help");
        assert!(out.contains("usage: muster"), "{sub} --help: {out}");
    }
}

/// Each failure says what it is: a name that does not resolve, https, a
/// server that is not musterd, one that never answers.
#[test]
fn errors_name_their_cause() {
    let run = |url: &str| {
        let out = Command::new(MUSTER)
            .args(["--url", url, "health"])
            .output()
            .unwrap();
        let (code, _, err) = text(&out);
        assert_eq!(err.lines().count(), 1, "{err}");
        (code, err)
    };
    let (code, err) = run("http://no-such-host.invalid:8080");
    assert_eq!(code, 2);
    assert!(
        err.starts_with("muster: cannot resolve \"no-such-host.invalid\": "),
        "{err}"
    );
    // https:// is spoken (tests/tls_heartbeats.rs); a URL of another
    // scheme is a usage error.
    let (code, err) = run("ftp://127.0.0.1:8080");
    assert_eq!(code, 2);
    assert!(
        err.contains("expected http://HOST:PORT or https://HOST:PORT"),
        "{err}"
    );

    // A web server that is not musterd.
    let foreign = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let at = foreign.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in foreign.incoming().take(1) {
            let mut s = s.unwrap();
            let mut buf = [0u8; 1024];
            let _ = std::io::Read::read(&mut s, &mut buf);
            let _ = std::io::Write::write_all(
                &mut s,
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            );
        }
    });
    let (code, err) = run(&format!("http://{at}"));
    assert_eq!(code, 1);
    assert_eq!(
        err,
        format!(
            "muster: {at} is not a musterd server: it answered HTTP 200 with a body that is not JSON\n"
        )
    );

    // One that accepts and never answers: a timeout, said as one.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let at = silent.local_addr().unwrap();
    let (code, err) = run(&format!("http://{at}"));
    assert_eq!(code, 1);
    assert_eq!(
        err,
        format!("muster: musterd at {at} did not answer: timed out after 10 s\n")
    );
    drop(silent);
}

#[test]
fn a_closed_port_is_exit_1_with_one_clear_line() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let out = Command::new(MUSTER)
        .args(["--url", &format!("http://{port}"), "workers"])
        .output()
        .unwrap();
    let (code, _, err) = text(&out);
    assert_eq!(code, 1);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("cannot reach musterd") && !err.contains("panicked"),
        "{err}"
    );
}

#[test]
fn watch_streams_lines_and_reconnects_after_a_restart() {
    let d = Daemon::start(&[]);
    let http = d.http;
    let mut watch = Command::new(MUSTER)
        .args(["--url", &format!("http://{http}"), "watch"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = watch.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let wait_line = |needle: &str| {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) if l.contains(needle) => return l,
                Ok(_) => {}
                Err(_) => panic!("watch never printed {needle:?}"),
            }
        }
    };
    std::thread::sleep(Duration::from_millis(300));
    let beat = |d: &Daemon, cpu: &str| {
        let o = muster(d, &["beat", "--id", "wx", "--cpu", cpu]);
        assert!(o.status.success());
    };
    beat(&d, "77");
    wait_line("wx idle cpu=77.0");
    drop(d);
    // A new daemon on the same HTTP port; watch reconnects by itself.
    let d2 = Daemon::start(&["--http-addr", &http.to_string()]);
    beat(&d2, "33");
    wait_line("wx idle cpu=33.0");
    let _ = watch.kill();
    let _ = watch.wait();
}

/// A server that accepts and never answers the handshake: watch says so
/// within its timeout and retries, rather than hanging.
#[test]
fn watch_times_out_a_silent_handshake() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let at = silent.local_addr().unwrap();
    let mut watch = Command::new(MUSTER)
        .args(["--url", &format!("http://{at}"), "watch"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let mut err = BufReader::new(watch.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    assert_eq!(
        line,
        "muster: no WebSocket handshake within 5 s; reconnecting\n"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(watch.try_wait().unwrap().is_none(), "still retrying");
    let _ = watch.kill();
    let _ = watch.wait();
    drop(silent);
}

/// `muster watch` in a real terminal (tmux): drawn in place on the
/// alternate screen, clipped to the window with a `+N more` line, ages
/// ticking on a silent fleet, and a visible disconnected state.
#[test]
fn watch_in_tmux_draws_in_place_clipped_and_says_when_disconnected() {
    if !support::require("tmux", support::runs("tmux", &["-V"])) {
        return;
    }
    let d = Daemon::start(&[]);
    for i in 0..30 {
        d.udp(format!(r#"{{"type":"heartbeat","worker_id":"worker-{i:02}","status":"working","cpu_usage":12.5,"memory_usage":3,"queue_depth":7}}"#).as_bytes());
    }
    d.wait_applied("worker-29", 1);
    let socket = format!("muster-test-{}", std::process::id());
    let tmux = |args: &[&str]| -> String {
        let out = Command::new("tmux")
            .args(["-L", &socket])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let cmd = format!("{MUSTER} --url http://{} watch", d.http);
    tmux(&[
        "-f",
        "/dev/null",
        "new-session",
        "-d",
        "-x",
        "50",
        "-y",
        "12",
        "-s",
        "w",
        &cmd,
    ]);
    let screen = |what: &str, ok: &dyn Fn(&str) -> bool| -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let s = tmux(&["capture-pane", "-p", "-t", "w"]);
            if ok(&s) {
                return s;
            }
            assert!(Instant::now() < deadline, "{what}; the screen:\n{s}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let first = screen("the table", &|s| s.contains("+22 more"));
    let lines: Vec<&str> = first.lines().collect();
    assert!(lines[0].starts_with("ID  "), "{first}");
    assert!(lines[1].starts_with("worker-00  working"), "{first}");
    assert!(lines.iter().all(|l| l.chars().count() <= 50), "{first}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("30 workers, live from /ws/telemetry")),
        "{first}"
    );
    assert_eq!(
        tmux(&["display", "-p", "-t", "w", "#{alternate_on}"]).trim(),
        "1"
    );
    // Wider, the last column shows; nothing is sent, and the ages go on.
    tmux(&["resize-window", "-t", "w", "-x", "100", "-y", "12"]);
    let later = screen("ages ticking", &|s| {
        s.lines().nth(1).is_some_and(|l| {
            l.split_whitespace()
                .last()
                .and_then(|a| a.strip_suffix('s')?.parse::<u32>().ok())
                .is_some_and(|age| age >= 3)
        })
    });
    assert!(
        later.lines().next().unwrap().ends_with("LAST_SEEN"),
        "{later}"
    );
    assert!(later.contains("+22 more"));
    assert_eq!(
        tmux(&["display", "-p", "-t", "w", "#{history_size}"]).trim(),
        "0",
        "redraws scrolled nothing into the history"
    );
    drop(d);
    let lost = screen("disconnected", &|s| s.contains("disconnected — retrying"));
    assert!(lost.lines().next().unwrap().starts_with("ID  "), "{lost}");
    assert!(lost.contains("worker-00"), "the last table stays:\n{lost}");
    tmux(&["send-keys", "-t", "w", "C-c"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Command::new("tmux")
        .args(["-L", &socket, "has-session", "-t", "w"])
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
    {
        assert!(Instant::now() < deadline, "Ctrl-C did not end watch");
        std::thread::sleep(Duration::from_millis(100));
    }
    tmux(&["kill-server"]);
}

/// The completion table names every option each command's `--help` names;
/// the scripts in contrib/ are what `muster completions` writes; bash
/// completes from them.
#[test]
fn completions_cover_every_option() {
    use muster::cli::complete::COMMANDS;
    use std::collections::BTreeSet;
    let flags = |text: &str| -> BTreeSet<String> {
        text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .filter(|w| (w.starts_with("--") && w.len() > 2) || *w == "-f")
            .filter(|w| !["--help", "--url"].contains(w))
            .map(String::from)
            .collect()
    };
    let mut by_help: std::collections::BTreeMap<String, BTreeSet<String>> = Default::default();
    for c in COMMANDS {
        // The task subcommands share one usage text.
        let key = if c.path.starts_with("task ") {
            "task"
        } else {
            c.path
        };
        by_help
            .entry(key.to_string())
            .or_default()
            .extend(c.opts.iter().map(|o| o.name.to_string()));
    }
    for (path, table) in &by_help {
        let mut args: Vec<&str> = path.split(' ').collect();
        args.push("--help");
        let out = Command::new(MUSTER).args(&args).output().unwrap();
        assert!(out.status.success(), "muster {path} --help");
        let help = flags(&String::from_utf8_lossy(&out.stdout));
        assert_eq!(&help, table, "muster {path}: --help against the table");
    }
    for (shell, file) in [("bash", "muster.bash"), ("zsh", "_muster")] {
        let out = Command::new(MUSTER)
            .args(["completions", shell])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            std::fs::read_to_string(format!("contrib/completions/{file}")).unwrap(),
            "contrib/completions/{file} is stale: muster completions {shell} > contrib/completions/{file}"
        );
    }
    let complete = |line: &str| -> String {
        let words: Vec<&str> = line.split(' ').collect();
        let script = format!(
            "source contrib/completions/muster.bash; COMP_WORDS=({}); COMP_CWORD={}; _muster; echo \"${{COMPREPLY[*]}}\"",
            words
                .iter()
                .map(|w| format!("'{w}'"))
                .collect::<Vec<_>>()
                .join(" "),
            words.len() - 1
        );
        let out = Command::new("bash").args(["-c", &script]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(complete("muster wor"), "workers");
    assert_eq!(complete("muster workers --st"), "--status");
    assert_eq!(complete("muster workers --status w"), "working");
    assert_eq!(complete("muster --url http://h:1 task su"), "submit");
    assert_eq!(complete("muster task submit --wa"), "--wait");
    assert_eq!(complete("muster task show --j"), "--json");
    if support::require("zsh", support::runs("zsh", &["--version"])) {
        assert!(support::runs("zsh", &["-n", "contrib/completions/_muster"]));
    }
}
