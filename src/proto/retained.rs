//! What a frame leaves in a worker's state once applied: labels, running
//! tasks and the current job replace what the worker held, so their size
//! is what one worker holds at most. Counted as the heap the parsed values
//! take (strings, map nodes, JSON value slots), which for a list of small
//! numbers is many times its wire size: 32,000 numbers in 64 KB of JSON
//! take a megabyte once parsed.

use super::frame::{CurrentJob, Frame, Labels};
use super::{Reject, RejectReason};
use serde_json::Value;

/// A JSON value slot, or a map entry's bookkeeping, in bytes.
const SLOT: usize = std::mem::size_of::<Value>();
const ENTRY: usize = 64;

/// Heap bytes a parsed JSON value holds.
fn value_bytes(v: &Value) -> usize {
    match v {
        Value::String(s) => s.len(),
        Value::Array(a) => a.iter().map(|v| SLOT + value_bytes(v)).sum(),
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| ENTRY + k.len() + SLOT + value_bytes(v))
            .sum(),
        _ => 0,
    }
}

fn labels_bytes(l: &Labels) -> usize {
    l.iter().map(|(k, v)| ENTRY + k.len() + v.len()).sum()
}

fn job_bytes(j: &CurrentJob) -> usize {
    ENTRY + j.id.as_ref().map_or(0, String::len) + j.kind.as_ref().map_or(0, String::len)
}

/// The bytes of state `frame` would leave its worker holding.
pub fn retained_bytes(frame: &Frame) -> usize {
    match frame {
        Frame::Hello(h) => {
            h.labels.as_ref().map_or(0, labels_bytes)
                + h.hostname.as_ref().map_or(0, String::len)
                + h.task_types
                    .as_ref()
                    .map_or(0, |t| t.iter().map(|s| ENTRY + s.len()).sum())
        }
        Frame::Heartbeat(b) => {
            b.labels.as_ref().map_or(0, labels_bytes)
                + b.running_tasks
                    .as_ref()
                    .map_or(0, |t| t.iter().map(|v| SLOT + value_bytes(v)).sum())
                + b.current_job
                    .as_ref()
                    .and_then(Option::as_ref)
                    .map_or(0, job_bytes)
        }
        _ => 0,
    }
}

/// The frame, or `too_large` when what it would leave its worker holding
/// exceeds `max` (`max_worker_state_bytes`).
pub fn within_state(frame: Frame, max: usize) -> Result<Frame, Reject> {
    let n = retained_bytes(&frame);
    if n <= max {
        return Ok(frame);
    }
    let mut rej = Reject::new(
        RejectReason::TooLarge,
        format!("frame would leave {n} bytes of worker state, over max_worker_state_bytes={max}"),
    );
    rej.worker_id = frame.worker_id().cloned();
    Err(rej)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::decode;

    #[test]
    fn a_list_of_small_numbers_weighs_what_it_takes_parsed() {
        let nums: Vec<String> = (0..32_000).map(|i| (i % 10).to_string()).collect();
        let json = format!(
            r#"{{"type":"heartbeat","worker_id":"w","running_tasks":[{{"n":[{}]}}]}}"#,
            nums.join(",")
        );
        assert!(json.len() < 65_000);
        let f = decode(json.as_bytes(), 65_536).unwrap();
        let n = retained_bytes(&f);
        assert!(n > 32_000 * SLOT, "{n}");
        let rej = within_state(f, 16 << 10).unwrap_err();
        assert_eq!(rej.reason, RejectReason::TooLarge);
        assert_eq!(rej.worker_id.as_deref(), Some("w"));
    }

    #[test]
    fn ordinary_frames_weigh_little() {
        let f = decode(
            br#"{"type":"heartbeat","worker_id":"w","cpu_usage":3,"labels":{"pool":"scan"},"current_job":{"id":"j1","type":"scan"}}"#,
            65_536,
        )
        .unwrap();
        let n = retained_bytes(&f);
        assert!(n < 256, "{n}");
        assert!(within_state(f, 16 << 10).is_ok());
    }
}
