//! The task frames: what a worker that takes tasks sends about them
//! (`task_update`, `task_log`, `task_progress`) and what the daemon sends it (`task`,
//! `cancel`, in [`super::encode::Reply`]). Tasks travel over TCP
//! only: a UDP datagram has no session to hold a task.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Longest task id, in bytes; ids are the daemon's own (`[0-9a-f]`).
pub const MAX_TASK_ID: usize = 64;
/// At most this many log lines per `task_log` frame.
pub const MAX_LOG_LINES: usize = 1024;
/// Longest task type, in bytes, and longest `error` text.
pub const MAX_TASK_TYPE: usize = 128;
pub const MAX_ERROR: usize = 4096;
/// Longest `task_progress` message, in bytes.
pub const MAX_PROGRESS_MESSAGE: usize = 1024;
/// At most this many task types a worker takes.
pub const MAX_TASK_TYPES: usize = 64;
/// At most this many tasks a `hello` re-reports as still running.
pub const MAX_RUNNING: usize = 1024;

/// Whether `id` can be a task id: 1–64 of `A-Za-z0-9._:-`.
pub fn valid_task_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_TASK_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// What a worker reports of a task it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reported {
    Running,
    Succeeded,
    Failed,
    /// The worker stopped it after a `cancel`.
    Cancelled,
}

impl Reported {
    pub fn parse(s: &str) -> Option<Reported> {
        match s {
            "running" => Some(Reported::Running),
            "succeeded" => Some(Reported::Succeeded),
            "failed" => Some(Reported::Failed),
            "cancelled" => Some(Reported::Cancelled),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TaskUpdate {
    pub task_id: String,
    pub state: Reported,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// `failed` only: `false` says another attempt would fail the same
    /// way (the task ends `failed`, not retried).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retryable: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TaskLog {
    pub task_id: String,
    pub lines: Vec<String>,
}

/// How far a running task has come, as its worker says: `fraction` done
/// (0 to 1) and what it is doing. Kept and shown, never a state change.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TaskProgress {
    pub task_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fraction: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The daemon's `task` frame: one task for the worker to run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Offer {
    pub task_id: String,
    pub task_type: String,
    pub payload: Value,
    pub attempt: u32,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub timeout_ms: Option<u64>,
    /// Cluster mode: the token of the claim the task is held under. A
    /// worker that reconnects (to any node) re-reports it in its `hello`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub lease: Option<u64>,
    /// The submission's W3C Trace Context, when it had one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub traceparent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tracestate: Option<String>,
}

/// A task a worker still runs, as its `hello` re-reports it after a
/// reconnect: its id and the lease token it was last given.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    pub task_id: String,
    pub lease: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids() {
        assert!(valid_task_id("0193a1b2c3d4e5f6"));
        assert!(!valid_task_id(""));
        assert!(!valid_task_id("a b"));
        assert!(!valid_task_id(&"a".repeat(65)));
    }
}
