//! Heartbeats over UDP against the real daemon.

mod support;
use std::net::UdpSocket;
use support::Daemon;

#[test]
fn walkthrough_active_then_inactive_then_active_again() {
    let d = Daemon::start(&["--heartbeat-interval", "1s", "--inactivity-timeout", "2s"]);
    d.udp(br#"{"type":"heartbeat","worker_id":"w1","cpu_usage":12.5}"#);
    d.wait_applied("w1", 1);
    let t = d.json("/telemetry");
    assert_eq!(t["w1"]["is_active"], true);
    assert_eq!(t["w1"]["cpu_usage"], 12.5);
    assert_eq!(t["w1"]["status"], "idle");

    // Timed from the frame's own arrival, not from when this test saw it,
    // so a slow test thread cannot make the daemon look early.
    let applied_ms = t["w1"]["last_update"].as_u64().unwrap();
    let unix_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    };
    d.wait_for("inactive", |d| {
        d.json("/telemetry/w1")["status"] == "inactive"
    });
    let after = unix_ms() - applied_ms;
    // Not before the timeout (less the moment between arrival and apply);
    // within the timeout plus a sweep tick (plus polling slack) after it.
    assert!((1950..3500).contains(&after), "inactive after {after} ms");
    assert_eq!(d.json("/telemetry/w1")["is_active"], false);
    assert_eq!(d.json("/health")["workers"]["inactive"], 1);

    d.udp(br#"{"type":"heartbeat","worker_id":"w1","status":"working"}"#);
    d.wait_for("active again", |d| {
        d.json("/telemetry/w1")["status"] == "working"
    });
    assert_eq!(d.json("/api/workers/w1")["times_inactive"], 1);
}

#[test]
fn bad_datagrams_are_counted_by_reason_and_good_ones_still_apply() {
    let d = Daemon::start(&["--max-frame-bytes", "1024"]);
    let long_id = format!(
        r#"{{"type":"heartbeat","worker_id":"{}"}}"#,
        "a".repeat(129)
    );
    let oversized = format!(
        r#"{{"type":"heartbeat","worker_id":"w","pad":"{}"}}"#,
        "x".repeat(2000)
    );
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("not_json", b"not json at all".to_vec()),
        (
            "invalid_utf8",
            b"{\"type\":\"heartbeat\",\"worker_id\":\"\xff\"}".to_vec(),
        ),
        ("not_object", b"[1,2,3]".to_vec()),
        ("missing_type", br#"{"worker_id":"w"}"#.to_vec()),
        ("bad_worker_id", br#"{"type":"heartbeat"}"#.to_vec()),
        (
            "bad_worker_id",
            br#"{"type":"heartbeat","worker_id":"has space"}"#.to_vec(),
        ),
        ("bad_worker_id", long_id.into_bytes()),
        (
            "reserved_id",
            br#"{"type":"heartbeat","worker_id":"registry"}"#.to_vec(),
        ),
        (
            "reserved_id",
            br#"{"type":"heartbeat","worker_id":"snapshot"}"#.to_vec(),
        ),
        (
            "bad_field",
            br#"{"type":"heartbeat","worker_id":"w2","cpu_usage":"lots"}"#.to_vec(),
        ),
        (
            "bad_field",
            br#"{"type":"heartbeat","worker_id":"w2","cpu_usage":-4}"#.to_vec(),
        ),
        (
            "not_json",
            br#"{"type":"heartbeat","worker_id":"w2","cpu_usage":NaN}"#.to_vec(),
        ),
        (
            "unknown_type",
            br#"{"type":"party","worker_id":"w2"}"#.to_vec(),
        ),
        ("too_large", oversized.into_bytes()),
    ];
    let good = br#"{"type":"heartbeat","worker_id":"good","queue_depth":1}"#;
    for (_, payload) in &cases {
        d.udp(payload);
        d.udp(good);
    }
    let total = cases.len() as u64;
    d.wait_for("every frame counted", |d| {
        d.json("/health")["frames"]["received"] == total * 2
    });
    for reason in [
        "not_json",
        "invalid_utf8",
        "not_object",
        "missing_type",
        "bad_worker_id",
        "reserved_id",
        "bad_field",
        "unknown_type",
        "too_large",
    ] {
        let want = cases.iter().filter(|(r, _)| *r == reason).count() as u64;
        assert_eq!(d.rejected(reason), want, "reason {reason}");
    }
    let h = d.json("/health");
    assert_eq!(h["frames"]["rejected"], total);
    d.wait_for("good frames applied", |d| {
        d.json("/telemetry/good")["messages_processed"] == total
    });
    // A worker named in a refused frame is never created by it...
    assert_eq!(d.get("/telemetry/w").0, 404);
    assert_eq!(d.get("/telemetry/w2").0, 404);
    // ...but an existing one has the refusal counted against it.
    d.udp(br#"{"type":"heartbeat","worker_id":"good","memory_usage":500}"#);
    d.wait_for("error counted", |d| {
        d.json("/api/workers/good")["errors"] == 1
    });
    d.wait_log("rejected frame reason=");
}

#[test]
fn repeated_bad_frames_log_once_per_window() {
    let d = Daemon::start(&[]);
    for _ in 0..200 {
        d.udp(b"garbage");
    }
    d.wait_for("counted", |d| d.rejected("not_json") == 200);
    let lines = d
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("reason=not_json"))
        .count();
    assert_eq!(lines, 1, "rate-limited to one line per 10 s");
}

#[test]
fn worker_cap_refuses_new_ids_and_keeps_serving() {
    let d = Daemon::start(&["--max-workers", "2"]);
    for id in ["a", "b", "c", "d"] {
        d.udp(format!(r#"{{"type":"heartbeat","worker_id":"{id}"}}"#).as_bytes());
    }
    d.wait_for("refusals counted", |d| d.rejected("worker_cap") == 2);
    assert_eq!(d.json("/health")["workers"]["total"], 2);
    // Known workers still update.
    d.udp(br#"{"type":"heartbeat","worker_id":"a","queue_depth":9}"#);
    d.wait_for("a updated", |d| d.json("/telemetry/a")["queue_depth"] == 9);
    d.wait_log("max_workers=2 reached");
}

#[test]
fn bye_terminates_and_forget_after_evicts() {
    let d = Daemon::start(&[
        "--heartbeat-interval",
        "1s",
        "--inactivity-timeout",
        "1s",
        "--forget-after",
        "2s",
    ]);
    d.udp(br#"{"type":"heartbeat","worker_id":"leaver","status":"working"}"#);
    d.wait_applied("leaver", 1);
    d.udp(br#"{"type":"bye","worker_id":"leaver"}"#);
    d.wait_for("terminated", |d| {
        d.json("/telemetry/leaver")["status"] == "terminated"
    });
    assert_eq!(d.json("/telemetry/leaver")["is_active"], false);
    assert_eq!(d.json("/health")["workers"]["terminated"], 1);
    d.wait_for("evicted", |d| d.get("/telemetry/leaver").0 == 404);
    let h = d.json("/health");
    assert_eq!(h["workers"]["evicted"], 1);
    d.wait_for("thread ended", |d| {
        d.json("/health")["workers"]["threads"] == 0
    });
}

/// Read your write: a worker first seen through a heartbeat is shown with
/// that heartbeat's fields the first time it is shown at all, never as an
/// empty `created` worker in the moment before its thread applies it.
#[test]
fn the_first_read_after_a_heartbeat_carries_its_fields() {
    let d = Daemon::start(&[]);
    let mut empty = Vec::new();
    for i in 0..50 {
        let id = format!("ryw-{i}");
        d.udp(
            format!(
                r#"{{"type":"heartbeat","worker_id":"{id}","status":"working","queue_depth":7}}"#
            )
            .as_bytes(),
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let first = loop {
            let (status, v) = d.get(&format!("/telemetry/{id}"));
            if status == 200 {
                break v;
            }
            assert_eq!(status, 404, "{v}");
            assert!(std::time::Instant::now() < deadline, "{id} never shown");
        };
        if first["status"] != "working" || first["queue_depth"] != 7 {
            empty.push(first);
        }
    }
    assert!(
        empty.is_empty(),
        "{} of 50 first reads without the fields: {:?}",
        empty.len(),
        empty.first()
    );
}

/// `/health` says how musterd is, not how its workers are: inactive and
/// erring workers leave it healthy (the fleet is degraded, with the
/// reasons); frames musterd itself drops make it degraded.
#[test]
fn health_is_the_daemons_own_and_the_fleets_is_beside_it() {
    let d = Daemon::start(&[
        "--heartbeat-interval",
        "100ms",
        "--inactivity-timeout",
        "300ms",
        "--max-pending-events",
        "1",
    ]);
    d.udp(br#"{"type":"heartbeat","worker_id":"erring","status":"error"}"#);
    d.udp(br#"{"type":"heartbeat","worker_id":"silent"}"#);
    d.wait_applied("erring", 1);
    d.wait_for("silent inactive", |d| {
        d.udp(br#"{"type":"heartbeat","worker_id":"erring","status":"error"}"#);
        d.get("/telemetry/silent").1["status"] == "inactive"
    });
    d.udp(br#"{"type":"heartbeat","worker_id":"erring","status":"error"}"#);
    let h = d.json("/health");
    assert_eq!(h["status"], "healthy", "{h}");
    assert_eq!(h["reasons"], serde_json::json!([]));
    assert_eq!(h["fleet"]["status"], "degraded");
    let fleet: Vec<&str> = h["fleet"]["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r.as_str())
        .collect();
    assert!(fleet.contains(&"1 worker report error"), "{fleet:?}");
    assert!(fleet.iter().any(|r| r.ends_with("inactive")), "{fleet:?}");
    // A burst of runs past max_pending_events: musterd drops them.
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..2000 {
        s.send_to(
            br#"{"type":"run","worker_id":"busy","duration_ms":1,"ok":true}"#,
            d.heartbeat,
        )
        .unwrap();
    }
    d.wait_for("a drop", |d| d.json("/health")["frames"]["dropped"] != 0);
    let h = d.json("/health");
    assert_eq!(h["status"], "degraded", "{h}");
    let said = h["reasons"][0].as_str().unwrap();
    assert!(said.contains("dropped by musterd"), "{said}");
}

#[test]
fn seq_gaps_show_as_missed_beats() {
    let d = Daemon::start(&[]);
    for seq in [1, 2, 3, 7] {
        d.udp(format!(r#"{{"type":"heartbeat","worker_id":"s","seq":{seq}}}"#).as_bytes());
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    d.wait_for("applied", |d| d.get("/api/workers/s").1["last_seq"] == 7);
    assert_eq!(d.json("/api/workers/s")["missed_beats"], 3);
}

/// `seq` jumping to 2^64-1 and back: the leap is a jump, not 2^64 missed
/// beats (no worker can have missed more beats than the time allows), the
/// fall is a restart of the worker's count, and the worker stays alive and
/// current.
#[test]
fn a_seq_jump_to_the_edge_of_u64_is_a_jump_and_a_fall_is_a_restart() {
    let d = Daemon::start(&[]);
    for seq in [0, u64::MAX, 0, 1] {
        d.udp(format!(r#"{{"type":"heartbeat","worker_id":"edge","seq":{seq}}}"#).as_bytes());
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    d.wait_applied("edge", 4);
    let w = d.json("/api/workers/edge");
    assert_eq!(w["missed_beats"], 0, "{w}");
    assert_eq!(w["seq_jumps"], 1);
    assert_eq!(w["seq_restarts"], 1);
    assert_eq!(w["last_seq"], 1);
    d.udp(br#"{"type":"heartbeat","worker_id":"edge","seq":2,"queue_depth":9}"#);
    d.wait_for("the worker still applies", |d| {
        d.get("/telemetry/edge").1["queue_depth"] == 9
    });
}

/// Events queue: a burst of `run` frames is recorded whole, though it is
/// twice the inbox's room for state.
#[test]
fn a_burst_of_run_frames_is_recorded_whole() {
    let d = Daemon::start(&[]);
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..300 {
        let ok = i % 10 != 0;
        let f = format!(r#"{{"type":"run","worker_id":"burst","duration_ms":{i},"ok":{ok}}}"#);
        s.send_to(f.as_bytes(), d.heartbeat).unwrap();
    }
    d.wait_for("300 runs", |d| {
        d.get("/api/workers/burst/metrics").1["total_runs"] == 300
    });
    let m = d.json("/api/workers/burst/metrics");
    assert_eq!(
        (m["succeeded"].as_u64(), m["failed"].as_u64()),
        (Some(270), Some(30))
    );
    let h = d.json("/health");
    assert_eq!(h["frames"]["dropped_by_reason"]["events_dropped"], 0);
    assert_eq!(h["frames"]["dropped_by_reason"]["inbox_full"], 0);
}

/// State merges: however many heartbeats a burst holds, the worker ends in
/// the last one's state, with every field it carried, and none counted as
/// missed.
#[test]
fn a_burst_of_heartbeats_ends_in_the_last_ones_state() {
    let d = Daemon::start(&[]);
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let n = 10_000u64;
    for seq in 1..=n {
        let extra = if seq == 17 { r#","gpu_usage":33"# } else { "" };
        let f = format!(
            r#"{{"type":"heartbeat","worker_id":"flood","seq":{seq},"queue_depth":{seq},"cpu_usage":{}{extra},"labels":{{"at":"{seq}"}}}}"#,
            seq % 100
        );
        s.send_to(f.as_bytes(), d.heartbeat).unwrap();
    }
    d.wait_for("the last heartbeat", |d| {
        d.get("/telemetry/flood").1["queue_depth"] == n
    });
    let t = d.json("/api/workers/flood");
    assert_eq!(t["cpu_usage"], (n % 100) as f64);
    assert_eq!(t["labels"]["at"], n.to_string());
    assert_eq!(
        t["gpu_usage"], 33.0,
        "a field only an early beat carried stays"
    );
    assert_eq!(t["last_seq"], n);
    let h = d.json("/health");
    let received = h["frames"]["received"].as_u64().unwrap();
    let merged = h["frames"]["merged"].as_u64().unwrap();
    assert_eq!(h["frames"]["dropped"], 0, "{h}");
    // Datagrams the kernel dropped never arrive; those that did are all
    // in the worker's count, merged or not, and only the kernel's are
    // missed beats.
    assert_eq!(
        t["messages_processed"].as_u64(),
        Some(received),
        "merged {merged}"
    );
    assert_eq!(t["missed_beats"].as_u64(), Some(n - received));
}

/// `recvmmsg` reads several datagrams a call; one longer than its slot is
/// cut there and refused as too large, and the rest of the batch applies.
#[test]
fn a_datagram_longer_than_its_slot_is_too_large_and_the_batch_applies() {
    let d = Daemon::start(&["--max-frame-bytes", "1024"]);
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let big = format!(
        r#"{{"type":"heartbeat","worker_id":"cut","labels":{{"pad":"{}"}}}}"#,
        "x".repeat(5000)
    );
    for i in 0..20 {
        let f = if i == 7 {
            big.clone()
        } else {
            format!(r#"{{"type":"heartbeat","worker_id":"cut","seq":{i}}}"#)
        };
        s.send_to(f.as_bytes(), d.heartbeat).unwrap();
    }
    d.wait_applied("cut", 19);
    assert_eq!(d.rejected("too_large"), 1);
}

/// A flood of refused frames naming a worker costs it none of its beats:
/// refusals are counted against it outside its inbox.
#[test]
fn refused_frames_naming_a_worker_take_none_of_its_room() {
    let d = Daemon::start(&[]);
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let bad = br#"{"type":"heartbeat","worker_id":"victim","cpu_usage":"high"}"#;
    d.udp(br#"{"type":"heartbeat","worker_id":"victim","seq":0}"#);
    d.wait_applied("victim", 1);
    for seq in 1..=200u64 {
        for _ in 0..50 {
            s.send_to(bad, d.heartbeat).unwrap();
        }
        let good = format!(r#"{{"type":"heartbeat","worker_id":"victim","seq":{seq}}}"#);
        s.send_to(good.as_bytes(), d.heartbeat).unwrap();
    }
    // The good beats repeat each other: the last of them may wait in the
    // inbox for up to QUIET_LAG (5 s) before the thread applies them.
    d.wait_for("every refusal counted and every beat applied", |d| {
        let t = d.get("/api/workers/victim").1;
        t["errors"].as_u64() == Some(d.rejected("bad_field"))
            && d.rejected("bad_field") > 0
            && t["last_seq"] == 200
    });
    let h = d.json("/health");
    let dropped = h["frames"]["dropped"].as_u64().unwrap();
    let t = d.json("/api/workers/victim");
    assert_eq!(dropped, 0, "{h}");
    assert_eq!(t["last_seq"], 200);
    let received_good = h["frames"]["received"].as_u64().unwrap() - d.rejected("bad_field");
    assert_eq!(t["messages_processed"].as_u64(), Some(received_good));
}

/// Probation: 100,000 spoofed ids, one datagram each, fill `max_workers`,
/// yet a real worker that beats is admitted (a spoofed id silent for
/// `heartbeat_interval` makes room) and, beating again, stays.
#[test]
fn spoofed_ids_cannot_lock_out_a_new_worker() {
    let d = Daemon::start(&[
        "--max-workers",
        "100",
        "--heartbeat-interval",
        "300ms",
        "--inactivity-timeout",
        "1s",
    ]);
    let hb = d.heartbeat;
    let flood = std::thread::spawn(move || {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..100_000u32 {
            let f = format!(r#"{{"type":"heartbeat","worker_id":"spoof-{i}"}}"#);
            let _ = s.send_to(f.as_bytes(), hb);
            if i % 500 == 0 {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
    });
    d.wait_for("spoofed ids to fill max_workers", |d| {
        d.json("/health")["workers"]["total"] == 100
    });
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut seq = 0u64;
    loop {
        seq += 1;
        let f = format!(r#"{{"type":"heartbeat","worker_id":"real","seq":{seq}}}"#);
        s.send_to(f.as_bytes(), d.heartbeat).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(100));
        let (status, w) = d.get("/api/workers/real");
        if status == 200 && w["messages_processed"].as_u64() >= Some(3) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the real worker was locked out"
        );
    }
    let flooding = !flood.is_finished();
    flood.join().unwrap();
    let h = d.json("/health");
    assert!(h["workers"]["probation_evicted"].as_u64() > Some(0), "{h}");
    assert!(h["workers"]["total"].as_u64() <= Some(100));
    // Admitted while the flood went on, and still there after it.
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(
        d.get("/api/workers/real").0,
        200,
        "flooding at admission: {flooding}"
    );
}

/// The worst a worker can cost: every one of 1,000 workers sends a frame
/// whose state is just under `max_worker_state_bytes` (16 KiB), and 1,000
/// more send 64 KB datagrams of 32,000 numbers (a megabyte each once
/// parsed), which are refused as too large. RSS grows by at most the
/// 64 KiB a worker the docs state.
#[test]
fn worst_case_frames_keep_memory_per_worker_within_the_stated_bound() {
    let d = Daemon::start(&[]);
    let pid = d.child.id();
    let rss = || support::rss_kib(pid);
    let before = rss();
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    // 60 labels of 200 bytes: 60 × (64 + 8 + 200) ≈ 16,000 bytes retained.
    let labels: Vec<String> = (0..60)
        .map(|i| format!(r#""k{i:05}":"{}""#, "v".repeat(200)))
        .collect();
    let numbers: Vec<&str> = vec!["7"; 32_000];
    for i in 0..1000 {
        let full = format!(
            r#"{{"type":"heartbeat","worker_id":"heavy{i}","labels":{{{}}}}}"#,
            labels.join(",")
        );
        s.send_to(full.as_bytes(), d.heartbeat).unwrap();
        if i % 50 == 0 {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
    d.wait_for("1,000 heavy workers", |d| {
        d.json("/health")["workers"]["total"] == 1000
    });
    for i in 0..1000 {
        let amplifier = format!(
            r#"{{"type":"heartbeat","worker_id":"amp{i}","running_tasks":[{{"n":[{}]}}]}}"#,
            numbers.join(",")
        );
        assert!(amplifier.len() <= 65_507);
        s.send_to(amplifier.as_bytes(), d.heartbeat).unwrap();
        if i % 10 == 0 {
            std::thread::sleep(std::time::Duration::from_millis(30));
        }
    }
    d.wait_for("the amplifiers refused", |d| d.rejected("too_large") >= 990);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let grown = rss().saturating_sub(before);
    let per_worker = grown / 1000;
    assert_eq!(
        d.json("/health")["workers"]["total"],
        1000,
        "an amplifier was let in"
    );
    assert!(
        per_worker <= 64,
        "{per_worker} KiB per worker ({grown} KiB for 1,000)"
    );
    eprintln!("worst case: {per_worker} KiB per worker");
}
