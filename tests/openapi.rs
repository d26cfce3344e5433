//! `GET /api/openapi.json`, held to what the daemon does: every operation
//! in it is an endpoint README.md lists and the router answers, every
//! listed endpoint is in it, and schemathesis (from PyPI) fuzzes a real
//! daemon with it: no 5xx, and every answer's status, content type and
//! body as the document says.

mod support;

use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::process::Command;
use support::Daemon;

fn document() -> Value {
    serde_json::from_str(muster::serve::routes::OPENAPI).expect("openapi.json is JSON")
}

/// `METHOD path` of every operation in the document.
fn operations(doc: &Value) -> BTreeSet<String> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            ops.insert(format!("{} {path}", method.to_uppercase()));
        }
    }
    ops
}

/// The endpoints README.md's table lists, as `METHOD path`.
fn listed() -> BTreeSet<String> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let mut eps = BTreeSet::new();
    for line in readme.lines().filter(|l| l.starts_with("| `")) {
        let cell = line[2..].split(" |").next().unwrap_or("");
        for part in cell.split(", ") {
            let Some(ep) = part.strip_prefix('`').and_then(|p| p.strip_suffix('`')) else {
                continue;
            };
            if ["GET ", "POST ", "PUT ", "DELETE "]
                .iter()
                .any(|m| ep.starts_with(m))
            {
                eps.insert(ep.to_string());
            }
        }
    }
    eps
}

#[test]
fn the_document_lists_exactly_the_endpoints_the_readme_and_the_router_list() {
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    let ops = operations(&doc);
    assert_eq!(ops, listed(), "the document and README.md's table differ");
    for (method, path) in muster::serve::routes::ENDPOINTS {
        assert!(
            ops.contains(&format!("{method} {path}")),
            "{method} {path} is not in the document"
        );
    }
    // Every reference resolves.
    let text = muster::serve::routes::OPENAPI;
    for r in text.split("\"$ref\": \"#/components/schemas/").skip(1) {
        let name = r.split('"').next().unwrap();
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "no schema {name}"
        );
    }
}

/// A body the operation takes, for the walk below.
fn body(op: &str) -> Option<Value> {
    Some(match op {
        "POST /api/tasks" => json!({"type": "t"}),
        "POST /api/tasks/bulk" => json!({"action": "cancel", "filter": {"type": "nothing-here"}}),
        "PUT /api/limits" => json!({"type": "t", "concurrency": 5}),
        "POST /api/schedules" => json!({"name": "s1", "cron": "@hourly", "task": {"type": "t"}}),
        "POST /api/workers/scale" => json!({"count": 1}),
        _ => return None,
    })
}

#[test]
fn every_operation_in_the_document_is_answered() {
    let d = Daemon::start(&[]);
    d.udp(br#"{"type":"heartbeat","worker_id":"w1","status":"idle"}"#);
    d.wait_applied("w1", 1);
    let (status, t) = d.post("/api/tasks", "", r#"{"type":"t"}"#);
    assert_eq!(status, 201);
    let task = t["id"].as_str().unwrap().to_string();
    let (status, _) = d.post(
        "/api/schedules",
        "",
        &body("POST /api/schedules").unwrap().to_string(),
    );
    assert_eq!(status, 201);
    let ops = operations(&document());
    // Deletes last: they remove what the others read.
    let (deletes, rest): (Vec<&String>, Vec<&String>) =
        ops.iter().partition(|o| o.starts_with("DELETE "));
    for op in rest.into_iter().chain(deletes) {
        let (method, path) = op.split_once(' ').unwrap();
        let id = if path.starts_with("/api/tasks/") {
            task.as_str()
        } else {
            "w1"
        };
        let target = path
            .replace("{id}", id)
            .replace("{name}", "s1")
            .replace("{type}", "t");
        let b = body(op).map(|b| b.to_string()).unwrap_or_default();
        let (status, _, _) = d.request(&format!(
            "{method} {target} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{b}",
            b.len()
        ));
        // No pool runs here, nor a cluster: scaling and the node list say so.
        let alone =
            path.ends_with("/scale") || path.ends_with("/nodes") || path.ends_with("/retry");
        assert!(
            status < 300 || (alone && status == 409),
            "{method} {target} -> {status}"
        );
    }
}

#[test]
fn schemathesis_finds_no_server_error_and_no_answer_off_the_document() {
    let have = support::runs("schemathesis", &["--version"]);
    if !support::require("schemathesis (pip install schemathesis)", have) {
        return;
    }
    let d = Daemon::start(&[]);
    d.udp(br#"{"type":"heartbeat","worker_id":"w1","status":"idle"}"#);
    d.wait_applied("w1", 1);
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("schemathesis")
        .args(["run", &format!("http://{}/api/openapi.json", d.http)])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            "--max-examples",
            "30",
            "--request-timeout",
            "10",
            "--seed",
            "1",
        ])
        .current_dir(dir.path())
        .output()
        .expect("run schemathesis");
    let text = String::from_utf8_lossy(&out.stdout);
    let summary: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("generated") || l.contains("passed") || l.contains("failed"))
        .collect();
    eprintln!("schemathesis: {}", summary.join(" / "));
    assert!(
        out.status.success(),
        "schemathesis found something:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("passed"), "{text}");
    // The daemon stayed up through it.
    assert_eq!(d.get("/health").0, 200);
}
