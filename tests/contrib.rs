//! The files in contrib/, each checked with the tool that reads it: the
//! Prometheus rules with promtool (check and unit tests), the Alertmanager
//! example with amtool, and the Grafana dashboard against the metrics a
//! running musterd exposes.

mod support;

use std::collections::BTreeSet;
use std::process::Command;
use support::{Daemon, require, runs};

fn ok(cmd: &str, args: &[&str], dir: &str) -> String {
    let out = Command::new(cmd)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd} {args:?}:\n{text}");
    text
}

#[test]
fn prometheus_rules_check_and_pass_their_tests() {
    if !require("promtool", runs("promtool", &["--version"])) {
        return;
    }
    let dir = "contrib/prometheus";
    assert!(
        ok("promtool", &["check", "rules", "muster-rules.yml"], dir)
            .contains("SUCCESS: 7 rules found")
    );
    assert!(ok("promtool", &["test", "rules", "muster-rules.test.yml"], dir).contains("SUCCESS"));
}

#[test]
fn the_alertmanager_example_is_valid() {
    if !require("amtool", runs("amtool", &["--version"])) {
        return;
    }
    let out = ok(
        "amtool",
        &["check-config", "alertmanager.yml"],
        "contrib/alertmanager",
    );
    assert!(out.contains("SUCCESS"), "{out}");
}

/// Every metric a Grafana query or an alerting rule names is one musterd
/// exposes (a daemon with workers, runs, tasks: every family present).
#[test]
fn grafana_and_rules_name_only_exposed_metrics() {
    let d = Daemon::start(&[]);
    d.udp(br#"{"type":"heartbeat","worker_id":"w1","status":"working","cpu_usage":5,"queue_depth":3}"#);
    d.udp(br#"{"type":"run","worker_id":"w1","duration_ms":120,"ok":true}"#);
    d.wait_applied("w1", 2);
    let exposed: BTreeSet<String> = {
        let (_, _, body) =
            d.request("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
        String::from_utf8(body)
            .unwrap()
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| l.split(' ').next().unwrap().to_string())
            .collect()
    };
    let known = |name: &str| {
        exposed.contains(name)
            || ["_bucket", "_sum", "_count"]
                .iter()
                .any(|s| name.strip_suffix(s).is_some_and(|f| exposed.contains(f)))
    };
    let names = |text: &str| -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let bytes = text.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            let rest = &text[i..];
            if (rest.starts_with("muster_") || rest.starts_with("process_"))
                && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_'))
            {
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                out.insert(rest[..end].to_string());
                i += end;
            } else {
                i += 1;
            }
        }
        out
    };
    let grafana: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string("contrib/grafana/muster-dashboard.json").unwrap(),
    )
    .unwrap();
    let mut exprs = Vec::new();
    for p in grafana["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            exprs.push(t["expr"].as_str().unwrap().to_string());
        }
    }
    for v in grafana["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["query"].as_str() {
            exprs.push(q.to_string());
        }
    }
    assert!(exprs.len() >= 10, "{exprs:?}");
    let rules = std::fs::read_to_string("contrib/prometheus/muster-rules.yml").unwrap();
    let mut used = BTreeSet::new();
    for e in exprs.iter().map(String::as_str).chain([rules.as_str()]) {
        used.extend(names(e));
    }
    let unknown: Vec<&String> = used.iter().filter(|n| !known(n)).collect();
    assert!(
        unknown.is_empty(),
        "not on /metrics: {unknown:?} (exposed: {exposed:?})"
    );
    assert!(used.len() >= 15, "{used:?}");
}
