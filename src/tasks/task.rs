//! A task and its life (DESIGN.md, "Tasks"), as data: what a submission
//! may say, the states, and the progress that changes. Pure.
//!
//! `queued` → `assigned` (sent to a worker) → `running` (the worker said
//! so) → `succeeded` · `failed` · `cancelled` · `timed_out`. A task whose
//! worker is lost goes back to `queued` with `attempt + 1`, until
//! `max_attempts`; then it is `failed` with `error: "worker lost"`.

use crate::proto::Labels;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Attempts a task gets unless its submission says otherwise.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
pub const MAX_ATTEMPTS: u32 = 100;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Queued,
    Assigned,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    TimedOut,
}

impl State {
    pub const ALL: [State; 7] = [
        State::Queued,
        State::Assigned,
        State::Running,
        State::Succeeded,
        State::Failed,
        State::Cancelled,
        State::TimedOut,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Assigned => "assigned",
            State::Running => "running",
            State::Succeeded => "succeeded",
            State::Failed => "failed",
            State::Cancelled => "cancelled",
            State::TimedOut => "timed_out",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        State::ALL.into_iter().find(|x| x.as_str() == s)
    }

    pub fn is_final(self) -> bool {
        matches!(
            self,
            State::Succeeded | State::Failed | State::Cancelled | State::TimedOut
        )
    }

    /// Held by a worker: assigned or running.
    pub fn is_held(self) -> bool {
        matches!(self, State::Assigned | State::Running)
    }
}

/// Which workers may take a task: one by id, or any whose labels include
/// these; nothing means any worker that takes its type.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Target {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
}

/// What changes in a task after it is submitted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub state: State,
    pub attempt: u32,
    /// The worker holding (or that last held) the task.
    #[serde(default)]
    pub worker_id: Option<String>,
    /// When it last entered the queue (submitted, or requeued).
    #[serde(default)]
    pub queued_at: Option<u64>,
    #[serde(default)]
    pub assigned_at: Option<u64>,
    #[serde(default)]
    pub started_at: Option<u64>,
    #[serde(default)]
    pub finished_at: Option<u64>,
    #[serde(default)]
    pub result: Option<Value>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// A cancel was asked while a worker held the task.
    #[serde(default)]
    pub cancel_requested_at: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub payload: Value,
    pub priority: i64,
    #[serde(default)]
    pub target: Target,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    pub max_attempts: u32,
    pub created_at: u64,
    #[serde(flatten)]
    pub progress: Progress,
}

impl Task {
    pub fn state(&self) -> State {
        self.progress.state
    }
}

/// Why a submission was refused: the field, and what is wrong with it.
#[derive(Debug, PartialEq)]
pub struct BadField(pub &'static str, pub String);

/// Read a `POST /api/tasks` body. The daemon assigns id and times.
pub fn parse_submit(body: &[u8], id: String, now_ms: u64) -> Result<Task, BadField> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| BadField("body", format!("not JSON: {e}")))?;
    let Value::Object(m) = v else {
        return Err(BadField("body", "a task is one JSON object".into()));
    };
    let kind = match m.get("type") {
        Some(Value::String(s)) if !s.is_empty() && s.len() <= crate::proto::task::MAX_TASK_TYPE => {
            s.clone()
        }
        Some(_) => return Err(BadField("type", "1-128 bytes of text".into())),
        None => return Err(BadField("type", "required".into())),
    };
    let int = |name: &'static str, m: &Map<String, Value>| -> Result<Option<i64>, BadField> {
        match m.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_i64()
                .map(Some)
                .ok_or_else(|| BadField(name, "a whole number".into())),
        }
    };
    let priority = int("priority", &m)?.unwrap_or(0);
    let timeout_ms = match int("timeout_ms", &m)? {
        None => None,
        Some(t) if t > 0 => Some(t as u64),
        Some(_) => return Err(BadField("timeout_ms", "above zero".into())),
    };
    let max_attempts = match int("max_attempts", &m)? {
        None => DEFAULT_MAX_ATTEMPTS,
        Some(n) if (1..=i64::from(MAX_ATTEMPTS)).contains(&n) => n as u32,
        Some(_) => return Err(BadField("max_attempts", format!("1 to {MAX_ATTEMPTS}"))),
    };
    let worker_id = match m.get("worker_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if crate::proto::check_worker_id(s).is_ok() => Some(s.clone()),
        Some(_) => return Err(BadField("worker_id", "a worker id".into())),
    };
    let labels = match m.get("labels") {
        None | Some(Value::Null) => Labels::new(),
        Some(Value::Object(o)) => o
            .iter()
            .map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
            .collect::<Option<Labels>>()
            .ok_or_else(|| BadField("labels", "an object of strings".into()))?,
        Some(_) => return Err(BadField("labels", "an object of strings".into())),
    };
    Ok(Task {
        id,
        kind,
        payload: m.get("payload").cloned().unwrap_or(Value::Null),
        priority,
        target: Target { worker_id, labels },
        timeout_ms,
        max_attempts,
        created_at: now_ms,
        progress: Progress {
            state: State::Queued,
            attempt: 1,
            worker_id: None,
            queued_at: Some(now_ms),
            assigned_at: None,
            started_at: None,
            finished_at: None,
            result: None,
            error: None,
            exit_code: None,
            cancel_requested_at: None,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn submissions() {
        let t = parse_submit(
            br#"{"type":"scan","payload":{"x":1},"priority":5,"labels":{"pool":"a"},"timeout_ms":1000}"#,
            "id1".into(),
            7,
        )
        .unwrap();
        assert_eq!(
            (t.kind.as_str(), t.priority, t.timeout_ms),
            ("scan", 5, Some(1000))
        );
        assert_eq!(
            (t.state(), t.progress.attempt, t.max_attempts),
            (State::Queued, 1, 3)
        );
        let back: Task = serde_json::from_value(serde_json::to_value(&t).unwrap()).unwrap();
        assert_eq!(back, t);
        for (body, field) in [
            (&b"{"[..], "body"),
            (b"[]", "body"),
            (b"{}", "type"),
            (br#"{"type":7}"#, "type"),
            (br#"{"type":"a","priority":"high"}"#, "priority"),
            (br#"{"type":"a","timeout_ms":0}"#, "timeout_ms"),
            (br#"{"type":"a","max_attempts":0}"#, "max_attempts"),
            (br#"{"type":"a","worker_id":"bad id"}"#, "worker_id"),
            (br#"{"type":"a","labels":{"k":1}}"#, "labels"),
        ] {
            assert_eq!(parse_submit(body, "i".into(), 0).unwrap_err().0, field);
        }
    }
}
