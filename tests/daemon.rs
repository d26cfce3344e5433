//! The daemon's lifecycle: flags, configuration, exit codes, signals.

mod support;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::{Daemon, MUSTERD, command};

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(MUSTERD)
        .args(args)
        .env_remove("HTTP_PORT")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("muster-test-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("musterd.conf");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn help_version_and_usage_errors() {
    let (code, out, _) = run(&["--help"]);
    assert_eq!(code, 0);
    for flag in [
        "--http-addr",
        "--heartbeat-addr",
        "--inactivity-timeout",
        "--max-workers",
        "--check-config",
    ] {
        assert!(out.contains(flag), "help lacks {flag}");
    }
    let (code, out, _) = run(&["--version"]);
    assert_eq!((code, out.starts_with("musterd ")), (0, true));
    let (code, _, err) = run(&["--frobnicate"]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown argument"), "{err}");
}

#[test]
fn check_config_exit_codes() {
    let good = temp_file(
        "good",
        "# ok\nhttp_addr = 127.0.0.1:9999\ninactivity_timeout = 45s\n",
    );
    let (code, out, _) = run(&["--check-config", "--config", good.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("configuration ok"));
    let bad = temp_file("bad", "inactivity_timeout = 1s\nheartbeat_interval = 5s\n");
    let (code, _, err) = run(&["--check-config", "--config", bad.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("inactivity_timeout"), "{err}");
    let typo = temp_file("typo", "max_wrokers = 5\n");
    let (code, _, err) = run(&["--check-config", "--config", typo.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains(":1:") && err.contains("max_wrokers"), "{err}");
    let (code, _, err) = run(&["--check-config", "--config", "/nonexistent/musterd.conf"]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot read"), "{err}");
    let (code, _, _) = run(&[
        "--check-config",
        "--config",
        "/dev/null",
        "--heartbeat-interval",
        "fast",
    ]);
    assert_eq!(code, 2);
}

#[test]
fn sigterm_exits_zero_promptly() {
    let d = Daemon::start(&[]);
    for i in 0..50 {
        d.udp(format!(r#"{{"type":"heartbeat","worker_id":"w{i}"}}"#).as_bytes());
    }
    d.wait_for("threads", |d| d.json("/health")["workers"]["threads"] == 50);
    let log = d.log.clone();
    let (status, took) = d.stop();
    assert_eq!(status.code(), Some(0));
    assert!(took < Duration::from_secs(5), "took {took:?}");
    std::thread::sleep(Duration::from_millis(50));
    assert!(log.lock().unwrap().iter().any(|l| l.contains("stopped in")));
}

#[test]
fn sigint_exits_zero() {
    let mut d = Daemon::start(&[]);
    d.signal(libc::SIGINT);
    let status = d.child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn a_taken_port_is_exit_1_with_a_clear_line() {
    let holder = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = holder.local_addr().unwrap().to_string();
    let (code, _, err) = run(&[
        "--config",
        "/dev/null",
        "--http-addr",
        "off",
        "--heartbeat-addr",
        &addr,
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot bind udp heartbeat socket"), "{err}");
}

#[test]
fn http_port_env_off_disables_http() {
    // Not `command()`: its --http-addr flag would win over the environment.
    let mut c = Command::new(MUSTERD);
    c.args(["--config", "/dev/null", "--heartbeat-addr", "127.0.0.1:0"])
        .args(["--state-dir", "off"])
        .env("HTTP_PORT", "")
        .stdin(Stdio::null())
        .stderr(Stdio::piped());
    let d = Daemon::spawn(c);
    assert!(d.log_has("listening http=off"));
    d.udp(br#"{"type":"heartbeat","worker_id":"w"}"#);
    assert_eq!(d.stop().0.code(), Some(0));
}

#[test]
fn sighup_reloads_live_settings_and_survives_a_bad_file() {
    let path = temp_file("reload", "inactivity_timeout = 30s\n");
    let mut c = command(&[]);
    c.args(["--config", path.to_str().unwrap()]);
    let d = Daemon::spawn(c);
    std::fs::write(
        &path,
        "inactivity_timeout = 1m\nlog_level = debug\nmax_workers = 7\n",
    )
    .unwrap();
    d.signal(libc::SIGHUP);
    d.wait_for("reload logged", |d| {
        d.log_has("reload: inactivity_timeout: 30s -> 1m")
    });
    d.wait_for("level logged", |d| {
        d.log_has("reload: log_level: info -> debug")
    });
    d.wait_for("max applied", |d| d.json("/health")["workers"]["max"] == 7);

    std::fs::write(&path, "inactivity_timeout = soon\n").unwrap();
    d.signal(libc::SIGHUP);
    d.wait_for("reload refused", |d| {
        d.log_has("reload failed, keeping the running configuration")
    });
    assert_eq!(
        d.json("/health")["workers"]["max"],
        7,
        "old configuration kept"
    );
    assert_eq!(d.stop().0.code(), Some(0));
}

/// Under systemd, stderr is the journal stream `JOURNAL_STREAM` names: each
/// line then starts with its syslog priority (sd-daemon(3)), so
/// `journalctl -p warning` shows musterd's warnings, and carries no
/// timestamp. The fleet report is logged only when the fleet changed since
/// the last one. With `JOURNAL_STREAM` naming another file, nothing changes.
#[test]
fn journal_lines_carry_priorities_and_a_quiet_fleet_is_reported_once() {
    use std::os::unix::fs::MetadataExt;
    let dir = std::env::temp_dir().join(format!("muster-journal-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let run = |stream: &dyn Fn(&std::fs::Metadata) -> String| -> String {
        let path = dir.join("stderr");
        let file = std::fs::File::create(&path).unwrap();
        let meta = file.metadata().unwrap();
        let mut cmd = command(&["--http-addr", "0.0.0.0:0"]);
        cmd.env("JOURNAL_STREAM", stream(&meta))
            .env("MUSTER_METRICS_REPORT_INTERVAL", "1s")
            .stderr(Stdio::from(file));
        let mut child = cmd.spawn().unwrap();
        std::thread::sleep(Duration::from_millis(3500));
        // SAFETY: kill(2) on our own child.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        child.wait().unwrap();
        std::fs::read_to_string(&path).unwrap()
    };
    let journal = run(&|m| format!("{}:{}", m.dev(), m.ino()));
    let warning = journal
        .lines()
        .find(|l| l.contains("beyond loopback"))
        .unwrap_or_else(|| panic!("no warning in:\n{journal}"));
    assert!(warning.starts_with("<4>[WARN] "), "{warning}");
    assert!(
        journal
            .lines()
            .any(|l| l.starts_with("<6>[INFO] listening")),
        "{journal}"
    );
    assert!(journal.lines().all(|l| l.starts_with('<')), "{journal}");
    let reports = journal
        .lines()
        .filter(|l| l.contains("fleet report"))
        .count();
    assert_eq!(
        reports, 1,
        "an empty fleet reported every second:\n{journal}"
    );

    let elsewhere = run(&|m| format!("{}:{}", m.dev(), m.ino() + 1));
    let warning = elsewhere
        .lines()
        .find(|l| l.contains("beyond loopback"))
        .unwrap();
    assert!(
        warning.contains(" [WARN] ") && !warning.starts_with('<'),
        "{warning}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `log_format = json`: every line on stderr is one JSON object with the
/// time, the level, the target and the message.
#[test]
fn json_log_lines_are_objects() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stderr");
    let mut cmd = command(&["--http-addr", "0.0.0.0:0", "--log-format", "json"]);
    cmd.env_remove("JOURNAL_STREAM")
        .stderr(Stdio::from(std::fs::File::create(&path).unwrap()));
    let mut child = cmd.spawn().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let log = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    assert!(lines.len() >= 3, "{log}");
    for l in &lines {
        let time = l["time"].as_str().unwrap();
        assert!(time.ends_with('Z') && time.len() == 24, "{l}");
        assert!(l["target"].as_str().unwrap().starts_with("muster"), "{l}");
    }
    let warning = lines
        .iter()
        .find(|l| l["message"].as_str().unwrap().contains("beyond loopback"))
        .unwrap_or_else(|| panic!("{log}"));
    assert_eq!(warning["level"], "warn");
    assert!(
        lines.iter().any(
            |l| l["level"] == "info" && l["message"].as_str().unwrap().starts_with("listening")
        ),
        "{log}"
    );
}

/// malloc's own count of bytes in use, as `/metrics` reports it, once
/// the fleet has settled: read after a second, and a second time, so that
/// the first scrape's own body is in the count both times.
fn heap_in_use(d: &Daemon) -> u64 {
    std::thread::sleep(Duration::from_secs(1));
    scrape_heap(d);
    scrape_heap(d)
}

fn scrape_heap(d: &Daemon) -> u64 {
    let (_, _, body) =
        d.request("GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let text = String::from_utf8(body).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("muster_heap_in_use_bytes "))
        .expect("muster_heap_in_use_bytes");
    line.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as u64
}

/// `n` workers that beat once, with heartbeats shaped like a real
/// worker's and ids that embed a time and a counter, as real ids do; then
/// wait until every one is forgotten.
fn come_and_go(d: &Daemon, round: &str, n: usize) {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let started = std::time::Instant::now();
    for i in 0..n {
        let f = format!(
            r#"{{"type":"heartbeat","worker_id":"w_{round}_{i}","status":"working","cpu_usage":12.5,"memory_usage":30.2,"queue_depth":3,"resource_usage":{{"rss_mb":120.5,"heap_used_mb":80.25,"heap_total_mb":96.0,"external_mb":2.5}},"current_job":{{"id":"job-{i}","type":"scan","files":3,"started_at":1700000000000}},"labels":{{"pool":"scan"}}}}"#
        );
        s.send_to(f.as_bytes(), d.heartbeat).unwrap();
        // 2,500 a second, well within what a debug build keeps up with.
        if i % 250 == 249 {
            let due = Duration::from_millis(100) * (i as u32 + 1) / 250;
            std::thread::sleep(due.saturating_sub(started.elapsed()));
        }
    }
    d.wait_for("every worker forgotten", |d| {
        d.json("/health")["workers"]["total"] == 0 && d.json("/health")["workers"]["threads"] == 0
    });
}

/// Workers that come and go leave nothing behind: 100,000 distinct
/// workers, each seen once and forgotten, leave the heap (malloc's count
/// of bytes in use, not RSS) where the first 20,000 left it. The tables
/// that hold the fleet at its busiest (the registry's map, the probation
/// list) keep their high-water size, so the fleet is held to 2,000 at once
/// (the newest make room by probation) and the first workers take them
/// there; after that the heap is flat.
#[test]
fn a_hundred_thousand_workers_created_and_forgotten_leave_the_heap_where_it_was() {
    let d = Daemon::start(&[
        "--heartbeat-interval",
        "250ms",
        "--inactivity-timeout",
        "500ms",
        "--forget-after",
        "1s",
        "--max-workers",
        "2000",
    ]);
    come_and_go(&d, "warm", 20_000);
    let warm = heap_in_use(&d);
    come_and_go(&d, "many", 100_000);
    let after = heap_in_use(&d);
    let h = d.json("/health");
    // Each applied frame made a worker (the ids are distinct); each was
    // forgotten after forget_after, or made room for while the registry
    // was at the cap this machine's limits allow.
    let gone = h["workers"]["evicted"].as_u64().unwrap()
        + h["workers"]["probation_evicted"].as_u64().unwrap();
    assert_eq!(gone, h["frames"]["applied"].as_u64().unwrap(), "{h}");
    assert!(gone >= 110_000, "{h}");
    eprintln!("heap in use: {warm} after 20,000 workers, {after} after 100,000 more");
    assert!(
        after <= warm + (1 << 20),
        "the heap grew {} bytes for 100,000 forgotten workers ({} bytes each)",
        after.saturating_sub(warm),
        after.saturating_sub(warm) / 100_000
    );
    assert!(d.stop().0.success());
}

/// A process's environment as it was started, `NAME=value` each. (glibc
/// cuts GLIBC_TUNABLES at each `:` in place as it reads it.)
fn environ(pid: u32) -> Vec<String> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    raw.split(|&b| b == 0)
        .filter(|v| !v.is_empty())
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

fn tunables(env: &[String]) -> Option<&str> {
    env.iter().find_map(|v| v.strip_prefix("GLIBC_TUNABLES="))
}

/// musterd runs without glibc's per-thread malloc caches (a thread per
/// worker each filling its own: the heap crept for hours), added to what
/// GLIBC_TUNABLES already said; an operator's own tcache tunable is kept;
/// and the processes it starts get the environment it was given.
#[test]
fn musterd_runs_without_malloc_thread_caches_and_its_children_get_its_environment() {
    let member = |d: &Daemon| -> u32 {
        d.wait_for("a pool member", |d| {
            d.json("/api/pool")["members"][0]["pid"].is_u64()
        });
        d.json("/api/pool")["members"][0]["pid"].as_u64().unwrap() as u32
    };
    let pool = ["--pool-command", "sleep 60", "--pool-size", "1"];
    for (given, want) in [
        (None, "glibc.malloc.tcache_count=0"),
        (
            Some("glibc.malloc.arena_max=2"),
            "glibc.malloc.arena_max=2:glibc.malloc.tcache_count=0",
        ),
    ] {
        let mut cmd = command(&pool);
        match given {
            Some(v) => cmd.env("GLIBC_TUNABLES", v),
            None => cmd.env_remove("GLIBC_TUNABLES"),
        };
        let d = Daemon::spawn(cmd);
        let env = environ(d.child.id()).join(":");
        assert!(env.contains(&format!("GLIBC_TUNABLES={want}")), "{env}");
        let kid = environ(member(&d));
        assert_eq!(tunables(&kid), given, "the member's: {kid:?}");
        assert!(
            !kid.iter().any(|v| v.starts_with("MUSTER_GLIBC")),
            "{kid:?}"
        );
        assert!(d.stop().0.success());
    }
    let mut cmd = command(&[]);
    cmd.env("GLIBC_TUNABLES", "glibc.malloc.tcache_count=3");
    let d = Daemon::spawn(cmd);
    let env = environ(d.child.id());
    assert_eq!(tunables(&env), Some("glibc.malloc.tcache_count=3"));
    assert!(
        !env.iter().any(|v| v.starts_with("MUSTER_GLIBC")),
        "not executed again"
    );
    assert!(d.stop().0.success());
}
