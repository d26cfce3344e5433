//! One node holding a fleet of 100,000 workers at once, a thread each: all
//! appear, turn inactive once silent for the timeout, and are forgotten
//! after `forget_after`. Correctness only; what it costs is
//! `bench/scale.sh`'s.
//!
//! A thread per worker needs the kernel's leave: `kernel.pid_max` and
//! `vm.max_map_count` are raised where the test may (as root), and where a
//! limit cannot be raised (`RLIMIT_NPROC`, `kernel.threads-max`) the fleet
//! is the largest it allows, said on stderr.

mod support;

use std::time::{Duration, Instant};
use support::Daemon;

const WANTED: usize = 100_000;
/// Threads left for everything else this user runs meanwhile.
const SPARE: usize = 3_000;

fn read(path: &str) -> Option<usize> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Raise `path` to at least `want` if it is lower; what it is then.
fn raise(path: &str, want: usize) -> usize {
    let now = read(path).unwrap_or(0);
    if now < want && std::fs::write(path, want.to_string()).is_err() {
        eprintln!("{path} is {now} and cannot be raised to {want} here");
    }
    read(path).unwrap_or(0)
}

/// The soft limit on this user's processes and threads.
fn nproc() -> usize {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    limits
        .lines()
        .find(|l| l.starts_with("Max processes"))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse().ok())
        .unwrap_or(usize::MAX)
}

/// The largest fleet up to [`WANTED`] this machine lets one process hold.
fn fleet() -> usize {
    let pid_max = raise("/proc/sys/kernel/pid_max", WANTED + 2 * SPARE + 10_000);
    // Four maps per worker thread: stack, its guard, signal stack, its guard.
    let maps = raise("/proc/sys/vm/max_map_count", WANTED * 4 + 20_000);
    let limits = [
        ("kernel.pid_max", pid_max.saturating_sub(2 * SPARE)),
        ("vm.max_map_count", maps.saturating_sub(20_000) / 4),
        (
            "kernel.threads-max",
            read("/proc/sys/kernel/threads-max")
                .unwrap_or(usize::MAX)
                .saturating_sub(2 * SPARE),
        ),
        ("RLIMIT_NPROC", nproc().saturating_sub(SPARE)),
    ];
    let mut n = WANTED;
    for (name, most) in limits {
        if most < n {
            eprintln!(
                "{name} allows {most} worker threads here, not {WANTED}: the fleet is {most}"
            );
            n = most;
        }
    }
    n
}

/// A heartbeat shaped like a real worker's.
fn seed_frame(i: usize) -> String {
    format!(
        r#"{{"type":"heartbeat","worker_id":"w{i}","status":"working","cpu_usage":12.5,"memory_usage":30.2,"queue_depth":3,"resource_usage":{{"rss_mb":120.5,"heap_used_mb":80.25,"heap_total_mb":96.0,"external_mb":2.5}},"current_job":{{"id":"job-{i}","type":"scan","files":3,"started_at":1700000000000}},"labels":{{"pool":"p{}"}}}}"#,
        i % 8
    )
}

/// Wait for `ok` on `/health`, at most `secs` seconds.
fn wait(d: &Daemon, what: &str, secs: u64, mut ok: impl FnMut(&serde_json::Value) -> bool) {
    let until = Instant::now() + Duration::from_secs(secs);
    loop {
        let h = d.json("/health");
        if ok(&h) {
            return;
        }
        assert!(Instant::now() < until, "never: {what}: {h}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The fleet beats once, all of it is there; then the timeouts are
/// lowered (SIGHUP) below how long it has been silent: every worker is
/// marked inactive, and forgotten once silent for `forget_after`, not
/// before. The timeouts start long so that a slow build sending the whole
/// fleet loses none of it on the way.
#[test]
fn a_hundred_thousand_workers_appear_turn_inactive_and_are_forgotten() {
    let n = fleet();
    assert!(
        n >= 20_000,
        "this machine allows {n} threads: too few to say anything about a large fleet"
    );
    let dir = std::env::temp_dir().join(format!("muster-test-{}-scale", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("musterd.conf");
    let settings = |timeout: &str, forget: &str| {
        format!(
            "heartbeat_interval = 5s\ninactivity_timeout = {timeout}\nforget_after = {forget}\nmax_workers = {}\n",
            n + 100
        )
    };
    std::fs::write(&conf, settings("1h", "2h")).unwrap();
    let mut c = support::command(&[]);
    c.args(["--config", conf.to_str().unwrap()]);
    let d = Daemon::spawn(c);
    let applied = |h: &serde_json::Value| h["frames"]["applied"].as_u64().unwrap();
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    // In batches, each sent once the daemon applied most of the one
    // before, so that the socket's buffer never overflows whatever the
    // build's speed: every frame sent is one applied.
    let first_sent = Instant::now();
    let mut sent = 0u64;
    for start in (0..n).step_by(2_000) {
        let end = (start + 2_000).min(n);
        for i in start..end {
            s.send_to(seed_frame(i).as_bytes(), d.heartbeat).unwrap();
        }
        sent += (end - start) as u64;
        wait(&d, "frames applied", 60, |h| applied(h) + 1_000 >= sent);
    }
    wait(&d, "every worker there", 120, |h| {
        h["workers"]["total"].as_u64() == Some(n as u64)
            && h["workers"]["threads"].as_u64() == Some(n as u64)
            && applied(h) == sent
    });
    let h = d.json("/health");
    assert_eq!(h["workers"]["active"].as_u64(), Some(n as u64), "{h}");
    assert_eq!(h["frames"]["rejected"].as_u64(), Some(0), "{h}");
    assert_eq!(h["frames"]["dropped"].as_u64(), Some(0), "{h}");
    let w = d.json(&format!("/telemetry/w{}", n - 1));
    assert_eq!(w["resource_usage"]["rss_mb"], 120.5, "{w}");

    // Every worker has been silent for at least this long; forgetting
    // comes 30 s after that, so there is time to see them all inactive.
    let silent = first_sent.elapsed().as_secs() + 1;
    let forget = silent + 30;
    std::fs::write(&conf, settings("10s", &format!("{forget}s"))).unwrap();
    let lowered = Instant::now();
    d.signal(libc::SIGHUP);
    wait(&d, "every worker inactive", 120, |h| {
        h["workers"]["inactive"].as_u64() == Some(n as u64)
    });
    assert!(
        first_sent.elapsed() < Duration::from_secs(forget),
        "too slow to tell inactive from forgotten"
    );
    assert_eq!(
        d.json("/health")["workers"]["total"].as_u64(),
        Some(n as u64)
    );
    wait(&d, "every worker forgotten", 240, |h| {
        h["workers"]["total"].as_u64() == Some(0) && h["workers"]["threads"].as_u64() == Some(0)
    });
    assert!(
        first_sent.elapsed() >= Duration::from_secs(forget),
        "forgotten before forget_after"
    );
    let h = d.json("/health");
    assert_eq!(h["workers"]["evicted"].as_u64(), Some(n as u64), "{h}");
    assert_eq!(h["workers"]["probation_evicted"].as_u64(), Some(0), "{h}");
    eprintln!(
        "{n} workers: inactive and then forgotten {:.1} s after the timeouts were lowered",
        lowered.elapsed().as_secs_f64()
    );
    assert!(d.stop().0.success());
    let _ = std::fs::remove_dir_all(&dir);
}
