//! The JSON messages of the three streams (snapshot, update, removed,
//! summary) and the server's text frames. Pure: snapshots in, text or
//! bytes out.

use super::upgrade::Filter;
use crate::clock::unix_ms;
use crate::fleet::registry::Counts;
use crate::fleet::snapshot::Snapshot;
use crate::fleet::telemetry::Telemetry;
use crate::proto::{Status, WorkerId};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::{Data, OpCode};

/// Append `"id":{telemetry}` for one worker, honouring `fields`.
fn push_worker(out: &mut String, s: &Snapshot, fields: Option<&[String]>) {
    // Worker ids are validated to need no JSON escaping.
    out.push('"');
    out.push_str(&s.id);
    out.push_str("\":");
    match fields {
        None => out.push_str(s.telemetry_json()),
        Some(fields) => out.push_str(&only(s, fields).to_string()),
    }
}

/// `worker_id` and the named telemetry fields: what `?fields=` asks for.
fn only(s: &Snapshot, fields: &[String]) -> Value {
    let full = serde_json::to_value(Telemetry::of(s)).unwrap_or(Value::Null);
    let mut m = Map::new();
    m.insert("worker_id".into(), json!(&*s.id));
    for f in fields {
        if let Some(v) = full.get(f) {
            m.insert(f.clone(), v.clone());
        }
    }
    Value::Object(m)
}

/// `{"type":KIND,"timestamp":…,"workers":{…}}` for these snapshots.
pub fn workers_message(kind: &str, snaps: &[Arc<Snapshot>], fields: Option<&[String]>) -> String {
    let mut out = workers_head(kind);
    for (i, s) in snaps.iter().enumerate() {
        push_entry(&mut out, s, i > 0, fields);
    }
    out.push_str("}}");
    out
}

/// The start of a `workers_message`, up to its first worker; `}}` ends it.
pub fn workers_head(kind: &str) -> String {
    format!(
        "{{\"type\":\"{kind}\",\"timestamp\":{},\"workers\":{{",
        unix_ms()
    )
}

/// One worker's entry of a `workers_message`, after a comma unless first.
pub fn push_entry(out: &mut String, s: &Snapshot, comma: bool, fields: Option<&[String]>) {
    if comma {
        out.push(',');
    }
    push_worker(out, s, fields);
}

pub fn removed_message(ids: &[WorkerId]) -> String {
    let ids: Vec<&str> = ids.iter().map(|i| &**i).collect();
    json!({"type": "removed", "timestamp": unix_ms(), "worker_ids": ids}).to_string()
}

/// The summary message of `/ws/workers/telemetry`: every worker's status,
/// usage and queue, and the counts by status. Written straight into the
/// text, without a `Value` per worker: each client of the stream is sent
/// the whole fleet every `ws_summary_interval`, 95,000 entries at a large
/// node, on the HTTP loop.
pub fn summary_message(snaps: &[Arc<Snapshot>], filter: &Filter) -> String {
    use std::io::Write;
    let mut out = Vec::with_capacity(64 + snaps.len() * 160);
    let _ = write!(out, "{{\"timestamp\":{},\"workers\":{{", unix_ms());
    let mut counts = Counts::default();
    let mut queue = 0u64;
    for (i, s) in snaps.iter().filter(|s| filter.matches(s)).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        // Worker ids are validated to need no JSON escaping.
        let _ = write!(out, "\"{}\":", s.id);
        match &filter.fields {
            Some(fields) => {
                let _ = serde_json::to_writer(&mut out, &only(s, fields));
            }
            None => {
                let _ = write!(
                    out,
                    "{{\"status\":\"{}\",\"resource_usage\":",
                    s.status().as_str()
                );
                let _ = serde_json::to_writer(&mut out, s.usage());
                let _ = write!(out, ",\"queue_depth\":{}}}", s.queue_depth);
            }
        }
        counts.add(s);
        queue += s.queue_depth;
    }
    let mut summary = Map::new();
    summary.insert("total".into(), json!(counts.total));
    for (st, n) in Status::ALL.iter().zip(counts.by_status) {
        summary.insert(st.as_str().into(), json!(n));
    }
    summary.insert("total_queue_depth".into(), json!(queue));
    out.extend_from_slice(b"},\"summary\":");
    let _ = serde_json::to_writer(&mut out, &summary);
    out.push(b'}');
    // Every piece above is JSON, which is UTF-8.
    String::from_utf8(out).unwrap_or_default()
}

/// One unmasked, final text frame (RFC 6455 §5.2): a server's frame.
pub fn text_frame(payload: &[u8]) -> Vec<u8> {
    data_frame(true, true, payload)
}

/// One unmasked frame of a text message (RFC 6455 §5.2, §5.4): the first
/// is a text frame, the rest continuation frames; the last has FIN set.
/// The header is tungstenite's; the payload goes after it uncopied by it.
pub fn data_frame(first: bool, last: bool, payload: &[u8]) -> Vec<u8> {
    let header = FrameHeader {
        is_final: last,
        opcode: OpCode::Data(if first { Data::Text } else { Data::Continue }),
        ..FrameHeader::default()
    };
    let mut f = Vec::with_capacity(payload.len() + 10);
    // Writing into a Vec cannot fail.
    let _ = header.format(payload.len() as u64, &mut f);
    f.extend_from_slice(payload);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_have_rfc_6455_headers() {
        assert_eq!(text_frame(b"hi"), [0x81, 2, b'h', b'i']);
        let mid = text_frame(&[b'x'; 300]);
        assert_eq!(&mid[..4], &[0x81, 126, 1, 44]);
        assert_eq!(data_frame(true, false, b"a"), [0x01, 1, b'a']);
        assert_eq!(data_frame(false, false, b"b"), [0x00, 1, b'b']);
        assert_eq!(data_frame(false, true, b"c"), [0x80, 1, b'c']);
        let big = text_frame(&vec![b'x'; 70_000]);
        assert_eq!(&big[..10], &[0x81, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
        assert_eq!(big.len(), 70_010);
    }

    fn summary(filter: &Filter) -> Value {
        let s = Arc::new(crate::fleet::snapshot::tests::fresh());
        serde_json::from_str(&summary_message(&[s], filter)).unwrap()
    }

    #[test]
    fn a_summary_of_several_workers_is_one_json_object() {
        let mut a = crate::fleet::snapshot::tests::fresh();
        a.apply(
            crate::fleet::snapshot::tests::frame(
                r#"{"type":"heartbeat","worker_id":"a","status":"working","queue_depth":4,"resource_usage":{"rss_mb":512.5,"heap_used_mb":5}}"#,
            ),
            crate::fleet::snapshot::Transport::Udp,
            std::time::Instant::now(),
        );
        let b = crate::fleet::snapshot::tests::queued("b", 2);
        let text = summary_message(&[Arc::new(a), b], &Filter::default());
        let v: Value = serde_json::from_str(&text).unwrap();
        let workers = v["workers"].as_object().unwrap();
        assert_eq!(workers.len(), 2);
        let a = workers.values().find(|w| w["queue_depth"] == 4).unwrap();
        assert_eq!(a["status"], "working");
        assert_eq!(a["resource_usage"]["rss_mb"], 512.5);
        assert_eq!(a["resource_usage"]["heap_used_mb"], 5.0);
        assert_eq!(v["summary"]["total"], 2);
        assert_eq!(v["summary"]["working"], 1);
        assert_eq!(v["summary"]["total_queue_depth"], 6);
        assert!(v["timestamp"].as_u64().unwrap() > 0);
        let empty: Value = serde_json::from_str(&summary_message(&[], &Filter::default())).unwrap();
        assert_eq!(empty["workers"], json!({}));
    }

    #[test]
    fn summary_entries_follow_seed_000_and_fields_narrows_them() {
        let v = summary(&Filter::default());
        let w = v["workers"]
            .as_object()
            .unwrap()
            .values()
            .next()
            .unwrap()
            .clone();
        assert_eq!(
            w,
            json!({"status": "created", "resource_usage": {}, "queue_depth": 0})
        );
        let narrow = Filter {
            fields: Some(vec!["queue_depth".into()]),
            ..Filter::default()
        };
        let v = summary(&narrow);
        let w = v["workers"].as_object().unwrap().values().next().unwrap();
        let keys: Vec<&str> = w.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        assert_eq!(keys, ["queue_depth", "worker_id"]);
        assert_eq!(v["summary"]["total"], 1, "the counts stay whole");
    }
}
