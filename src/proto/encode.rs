//! Frames → bytes, both ways: what a worker sends ([`Frame`]: `hello`,
//! `heartbeat`, `run`, `bye`) and what the daemon answers over TCP
//! ([`Reply`]: `welcome`, `error`). `muster beat`, `muster agent` and the
//! ingest loop all write their frames here, so the wire format has one
//! author; the round-trip tests below hold it to [`super::decode`].

use super::frame::Frame;
use serde::{Deserialize, Serialize};

/// A frame as one JSON object, without a newline: a UDP datagram.
pub fn encode(frame: &Frame) -> String {
    // Serialising these types cannot fail: no map has non-string keys.
    serde_json::to_string(frame).unwrap_or_default()
}

/// What the daemon says to a TCP worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Reply {
    /// The answer to `hello`.
    Welcome(Welcome),
    /// Why a frame or the connection was refused.
    Error(ErrorReply),
    /// A task for the worker to run.
    Task(super::task::Offer),
    /// Stop the task, and say `cancelled` when it has stopped.
    Cancel { task_id: String },
    /// Cluster mode: a task re-reported in `hello` was adopted by this
    /// node under a new lease token.
    Lease { task_id: String, lease: u64 },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Welcome {
    pub version: u32,
    pub worker_id: String,
    pub heartbeat_interval_ms: u64,
    pub inactivity_timeout_ms: u64,
    /// Cluster mode: the heartbeat addresses of the nodes alive now, to
    /// reconnect to when this one goes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// An [`super::ErrorCode`] name, kept as text: a client reads codes a
    /// newer daemon may have added.
    pub code: String,
    pub message: String,
    /// The task a `task_not_held` is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
}

/// Read one reply line (with or without its newline).
pub fn decode_reply(line: &[u8]) -> Result<Reply, serde_json::Error> {
    serde_json::from_slice(line)
}

/// The `welcome` line sent in reply to `hello` (with its trailing newline).
pub fn encode_welcome(
    worker_id: &str,
    interval_ms: u64,
    timeout_ms: u64,
    nodes: Vec<String>,
) -> Vec<u8> {
    line(&Reply::Welcome(Welcome {
        version: 1,
        worker_id: worker_id.to_string(),
        heartbeat_interval_ms: interval_ms,
        inactivity_timeout_ms: timeout_ms,
        nodes,
    }))
}

/// A `lease` line: the task is this node's now, under `lease`.
pub fn encode_lease(task_id: &str, lease: u64) -> Vec<u8> {
    line(&Reply::Lease {
        task_id: task_id.to_string(),
        lease,
    })
}

/// A `task` line.
pub fn encode_task(offer: super::task::Offer) -> Vec<u8> {
    line(&Reply::Task(offer))
}

/// A `cancel` line.
pub fn encode_cancel(task_id: &str) -> Vec<u8> {
    line(&Reply::Cancel {
        task_id: task_id.to_string(),
    })
}

/// An `error` line.
pub fn encode_error(code: impl Into<super::ErrorCode>, message: &str) -> Vec<u8> {
    line(&Reply::Error(ErrorReply {
        code: code.into().as_str().to_string(),
        message: message.to_string(),
        task_id: None,
    }))
}

/// An `error` line about one task (`task_not_held`), naming it.
pub fn encode_task_error(code: super::ErrorCode, task_id: &str, message: &str) -> Vec<u8> {
    line(&Reply::Error(ErrorReply {
        code: code.as_str().to_string(),
        message: message.to_string(),
        task_id: Some(task_id.to_string()),
    }))
}

fn line(v: &impl Serialize) -> Vec<u8> {
    let mut out = serde_json::to_vec(v).unwrap_or_default();
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{
        CurrentJob, Heartbeat, Hello, Labels, Reported, ResourceUsage, Run, WorkerId, decode,
    };
    use serde_json::{Value, json};

    #[test]
    fn replies_are_single_json_lines() {
        for line in [
            encode_welcome("w1", 5000, 30000, vec![]),
            encode_error(crate::proto::RejectReason::BadField, "x\ny"),
        ] {
            assert_eq!(line.last(), Some(&b'\n'));
            assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
            let v: Value = serde_json::from_slice(&line).unwrap();
            assert!(v["type"].is_string());
        }
        assert!(encode_welcome("w1", 1, 2, vec![]).starts_with(br#"{"type":"welcome""#));
        assert!(
            encode_error(crate::proto::ErrorCode::TaskNotHeld, "y")
                .starts_with(br#"{"type":"error""#)
        );
    }

    #[test]
    fn replies_round_trip() {
        let w = encode_welcome("w1", 5000, 30000, vec![]);
        assert!(
            !String::from_utf8_lossy(&w).contains("nodes"),
            "no list on one node"
        );
        assert_eq!(
            decode_reply(&w).unwrap(),
            Reply::Welcome(Welcome {
                version: 1,
                worker_id: "w1".into(),
                heartbeat_interval_ms: 5000,
                inactivity_timeout_ms: 30000,
                nodes: vec![],
            })
        );
        let w = encode_welcome("w1", 5000, 30000, vec!["10.0.0.2:8090".into()]);
        let Reply::Welcome(w) = decode_reply(&w).unwrap() else {
            panic!()
        };
        assert_eq!(w.nodes, ["10.0.0.2:8090"]);
        assert_eq!(
            decode_reply(&encode_lease("17", 9)).unwrap(),
            Reply::Lease {
                task_id: "17".into(),
                lease: 9
            }
        );
        let e = encode_error(crate::proto::ErrorCode::Superseded, "another\nconnection");
        assert_eq!(
            decode_reply(&e).unwrap(),
            Reply::Error(ErrorReply {
                code: "superseded".into(),
                message: "another\nconnection".into(),
                task_id: None,
            })
        );
        let e = encode_task_error(crate::proto::ErrorCode::TaskNotHeld, "17", "not held");
        assert!(
            !String::from_utf8_lossy(&encode_error(crate::proto::ErrorCode::Superseded, "x"))
                .contains("task_id")
        );
        match decode_reply(&e).unwrap() {
            Reply::Error(r) => assert_eq!(
                (r.code.as_str(), r.task_id.as_deref()),
                ("task_not_held", Some("17"))
            ),
            r => panic!("{r:?}"),
        }
        assert!(decode_reply(br#"{"type":"dance"}"#).is_err());
    }

    fn id(s: &str) -> WorkerId {
        WorkerId::from(s)
    }

    /// Every frame type, with every field it can carry, and with none.
    fn frames() -> Vec<Frame> {
        let labels: Labels = [("pool".to_string(), "scan \"q\"".to_string())].into();
        vec![
            Frame::Hello(Hello {
                worker_id: id("w-1"),
                pid: Some(42),
                hostname: Some("host.example".into()),
                capacity: Some(4),
                labels: Some(labels.clone()),
                task_types: Some(vec!["scan".into()]),
                token: Some("t0k".into()),
                running: Some(vec![crate::proto::task::Held {
                    task_id: "0193a1".into(),
                    lease: 77,
                }]),
            }),
            Frame::Hello(Hello {
                worker_id: id("w-1"),
                pid: None,
                hostname: None,
                capacity: None,
                labels: None,
                task_types: None,
                token: None,
                running: None,
            }),
            Frame::Heartbeat(Heartbeat {
                worker_id: Some(id("w:2@x")),
                seq: Some(u64::MAX),
                status: Some(Reported::Working),
                cpu_usage: Some(150.25),
                memory_usage: Some(12.5),
                gpu_usage: Some(0.0),
                resource_usage: Some(ResourceUsage {
                    rss_mb: Some(52.8),
                    heap_used_mb: Some(1.5),
                    heap_total_mb: Some(3.0),
                    external_mb: Some(0.25),
                    peak_rss_mb: Some(60.0),
                    threads: Some(7),
                    fds: Some(12),
                    io_read_bytes: Some(1 << 40),
                    io_write_bytes: Some(0),
                }),
                queue_depth: Some(5),
                current_job: Some(Some(CurrentJob {
                    id: Some("789".into()),
                    kind: Some("scan".into()),
                    files: Some(1000),
                    started_at: Some(1_733_808_005_000),
                })),
                running_tasks: Some(vec![json!({"task_id": "t1"})]),
                labels: Some(labels),
                token: Some("t0k".into()),
            }),
            Frame::Heartbeat(Heartbeat {
                current_job: Some(None),
                status: Some(Reported::Error),
                ..Heartbeat::default()
            }),
            Frame::Heartbeat(Heartbeat {
                worker_id: Some(id("w")),
                status: Some(Reported::Idle),
                ..Heartbeat::default()
            }),
            Frame::Run(Run {
                worker_id: Some(id("w")),
                duration_ms: 1234.5,
                ok: false,
                exit_code: Some(-1),
                signal: Some(9),
                token: Some("t0k".into()),
            }),
            Frame::Run(Run {
                worker_id: None,
                duration_ms: 0.0,
                ok: true,
                exit_code: None,
                signal: None,
                token: None,
            }),
            Frame::Bye {
                worker_id: Some(id("w")),
                token: Some("t0k".into()),
            },
            Frame::Bye {
                worker_id: None,
                token: None,
            },
            Frame::TaskUpdate(crate::proto::task::TaskUpdate {
                task_id: "0193a1b2c3d4e5f6".into(),
                state: crate::proto::task::Reported::Succeeded,
                result: Some(json!({"rows": 3})),
                error: None,
                exit_code: Some(0),
                retryable: None,
            }),
            Frame::TaskUpdate(crate::proto::task::TaskUpdate {
                task_id: "0193a1b2c3d4e5f6".into(),
                state: crate::proto::task::Reported::Failed,
                result: None,
                error: Some("bad input".into()),
                exit_code: Some(2),
                retryable: Some(false),
            }),
            Frame::TaskLog(crate::proto::task::TaskLog {
                task_id: "0193a1b2c3d4e5f6".into(),
                lines: vec!["one".into(), "two \"quoted\"".into()],
            }),
            Frame::TaskProgress(crate::proto::task::TaskProgress {
                task_id: "0193a1b2c3d4e5f6".into(),
                fraction: Some(0.25),
                message: Some("resizing 3 of 12".into()),
            }),
            Frame::TaskProgress(crate::proto::task::TaskProgress {
                task_id: "0193a1b2c3d4e5f6".into(),
                fraction: None,
                message: Some("waiting for the GPU".into()),
            }),
        ]
    }

    #[test]
    fn every_frame_type_round_trips() {
        let mut kinds = std::collections::BTreeSet::new();
        for f in frames() {
            let text = encode(&f);
            let back = decode(text.as_bytes(), 65536).unwrap_or_else(|r| panic!("{text}: {r}"));
            assert_eq!(back, f, "{text}");
            let v: Value = serde_json::from_str(&text).unwrap();
            kinds.insert(v["type"].as_str().unwrap().to_string());
        }
        assert_eq!(
            kinds.into_iter().collect::<Vec<_>>(),
            [
                "bye",
                "heartbeat",
                "hello",
                "run",
                "task_log",
                "task_progress",
                "task_update"
            ]
        );
    }

    #[test]
    fn absent_fields_are_left_out_not_null() {
        let text = encode(&Frame::Bye {
            worker_id: None,
            token: None,
        });
        assert_eq!(text, r#"{"type":"bye"}"#);
        let text = encode(&Frame::Heartbeat(Heartbeat {
            current_job: Some(None),
            ..Heartbeat::default()
        }));
        assert_eq!(text, r#"{"type":"heartbeat","current_job":null}"#);
    }
}
