//! One fleet over three nodes on a real PostgreSQL: every node shows every
//! worker with the node that holds it, each transition reaches the others,
//! heartbeats alone write no row, and a dead node's workers read inactive
//! once its lease lapses.

mod support;

use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::Daemon;
use support::pg::{self, node};

/// A heartbeat shaped like seed 000's registry entry.
fn beat(id: &str, status: &str, seq: u64) -> Vec<u8> {
    json!({
        "type": "heartbeat", "worker_id": id, "status": status, "seq": seq,
        "cpu_usage": 12.5 + seq as f64, "memory_usage": 40.0, "queue_depth": 2,
        "resource_usage": {"cpu_percent": 12.5, "rss_mb": 512.0, "open_fds": 31},
        "current_job": {"id": format!("job-{seq}"), "type": "scan", "files": 4,
                        "started_at": 1_700_000_000_000u64},
        "labels": {"pool": "scan"},
    })
    .to_string()
    .into_bytes()
}

/// `worker → (node, status)` as `/api/workers` on `d` lists them.
fn fleet(d: &Daemon) -> Vec<(String, String, String)> {
    let v = d.json("/api/workers");
    let mut out: Vec<_> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["worker_id"].as_str().unwrap().to_string(),
                w["node"].as_str().unwrap_or("-").to_string(),
                w["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

fn row(id: &str, node: &str, status: &str) -> (String, String, String) {
    (id.into(), node.into(), status.into())
}

fn rows_written(d: &Daemon) -> u64 {
    d.json("/health")["state"]["cluster_rows"].as_u64().unwrap()
}

#[test]
fn three_nodes_show_one_fleet_and_follow_each_transition() {
    let Some(pg) = pg::start() else { return };
    let names = ["n1", "n2", "n3"];
    let ds: Vec<Daemon> = names.iter().map(|n| node(&pg, n, &[])).collect();
    for (i, d) in ds.iter().enumerate() {
        d.udp(&beat(&format!("w{}", i + 1), "idle", 1));
    }
    let want = vec![
        row("w1", "n1", "idle"),
        row("w2", "n2", "idle"),
        row("w3", "n3", "idle"),
    ];
    for d in &ds {
        d.wait_for("the three workers on every node", |d| fleet(d) == want);
    }
    // The telemetry object of a remote worker, as its node wrote it.
    let t = ds[0].json("/telemetry/w3");
    assert_eq!(
        (t["node"].as_str(), t["queue_depth"].as_u64()),
        (Some("n3"), Some(2))
    );
    assert_eq!(t["current_job"]["type"], "scan", "{t}");
    assert_eq!(ds[0].json("/telemetry")["w2"]["node"], "n2");
    let one = ds[1].json("/api/workers/w1");
    assert_eq!(
        (one["node"].as_str(), one["hostname"].clone()),
        (Some("n1"), Value::Null)
    );
    let (code, _, metrics) = ds[0].request("GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_eq!(code, 200);
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        metrics.lines().any(|l| l.starts_with("muster_worker_info{")
            && l.contains("worker_id=\"w3\"")
            && l.contains("node=\"n3\"")),
        "no info series for w3 on n3: {}",
        metrics
            .lines()
            .filter(|l| l.starts_with("muster_worker_info"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let h = ds[2].json("/health");
    assert_eq!(h["workers"]["total"], 3, "{h}");

    // A status change on n1 reaches n2 and n3; a bye on n2 too.
    ds[0].udp(&beat("w1", "error", 2));
    ds[1].udp(br#"{"type":"bye","worker_id":"w2"}"#);
    let want = vec![
        row("w1", "n1", "error"),
        row("w2", "n2", "terminated"),
        row("w3", "n3", "idle"),
    ];
    for d in &ds {
        d.wait_for("the error and the bye on every node", |d| fleet(d) == want);
    }

    // Steady heartbeats write nothing (the refresh is 10 s away).
    let before: Vec<u64> = ds.iter().map(rows_written).collect();
    for seq in 3..13 {
        ds[2].udp(&beat("w3", "idle", seq));
        std::thread::sleep(Duration::from_millis(100));
    }
    ds[2].wait_applied("w3", 11);
    std::thread::sleep(Duration::from_millis(500));
    let after: Vec<u64> = ds.iter().map(rows_written).collect();
    assert_eq!(before, after, "rows written for heartbeats alone");

    // n3 is killed: its worker reads inactive on the others once n3's
    // lease lapses, and n1 and n2 keep their own.
    let mut ds = ds;
    let mut n3 = ds.pop().unwrap();
    let killed = Instant::now();
    n3.child.kill().unwrap();
    let _ = n3.child.wait();
    let want = vec![
        row("w1", "n1", "error"),
        row("w2", "n2", "terminated"),
        row("w3", "n3", "inactive"),
    ];
    for d in &ds {
        d.wait_for("n3's worker inactive", |d| fleet(d) == want);
    }
    let took = killed.elapsed();
    assert!(
        took >= Duration::from_secs(2),
        "inactive before n3's lease could lapse ({took:?})"
    );

    // w3 comes back on n1: shown there, active, on both nodes.
    ds[0].udp(&beat("w3", "working", 20));
    let want = vec![
        row("w1", "n1", "error"),
        row("w2", "n2", "terminated"),
        row("w3", "n1", "working"),
    ];
    for d in &ds {
        d.wait_for("w3 back, on n1", |d| fleet(d) == want);
    }
}

/// One node's dashboard shows the other node's worker with its node, and
/// its panel says where that worker's run metrics are kept.
#[test]
fn one_nodes_dashboard_shows_every_nodes_workers() {
    use support::cdp::{Browser, chromium};
    let Some(browser) = chromium().filter(|_| support::require("chromium", chromium().is_some()))
    else {
        return;
    };
    let Some(pg) = pg::start() else { return };
    let mut b = Browser::start(browser, 1280, 800);
    let n1 = node(&pg, "n1", &[]);
    let n2 = node(&pg, "n2", &[]);
    n1.udp(&beat("w1", "working", 1));
    n2.udp(&beat("w2", "idle", 1));
    n1.wait_for("w2 on n1", |d| fleet(d).len() == 2);
    b.goto(&format!("http://{}/", n1.http));
    let ids = "[...document.querySelectorAll('#rows .row')].map(r => r.dataset.id).join(',')";
    b.wait_for(
        "both workers",
        &format!("{ids} === 'w1,w2'"),
        Duration::from_secs(15),
    );
    assert_eq!(
        b.eval("document.querySelector('#rows [data-id=w2] .node').textContent"),
        "n2"
    );
    assert_eq!(
        b.eval("getComputedStyle(document.querySelector('#rows [data-id=w2] .node')).display"),
        "block",
        "the node column shows in cluster mode"
    );
    b.eval("document.querySelector('#rows [data-id=w2]').click()");
    b.wait_for(
        "w2's panel",
        "!document.getElementById('panel').hidden && /kept by node n2/.test(document.getElementById('runs').innerText) && /n2/.test(document.getElementById('details').innerText)",
        Duration::from_secs(10),
    );
    let errors = b.eval("document.getElementById('details').innerText");
    assert!(
        !errors.as_str().unwrap().contains("cannot read"),
        "{errors}"
    );
}
