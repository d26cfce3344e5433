//! A task and its life, as data: its id, what a submission may say, the
//! states, and the progress that changes. Pure.
//!
//! `queued` → `assigned` (sent to a worker) → `running` (the worker said
//! so) → `succeeded` · `failed` · `cancelled` · `timed_out`. A task whose
//! worker is lost goes back to `queued` with `attempt + 1`, until
//! `max_attempts`; then it is `failed` with `error: "worker lost"`.

use crate::proto::{Labels, WorkerId};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use std::fmt;

/// A task's id: a number the daemon assigns, in submission order, shown
/// (in the API, the journal and the `task` frame) as 16 hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId(pub u64);

impl TaskId {
    /// The id a text names: 1 to 16 hex digits.
    pub fn parse(s: &str) -> Option<TaskId> {
        let hex = !s.is_empty() && s.len() <= 16 && s.bytes().all(|b| b.is_ascii_hexdigit());
        hex.then(|| u64::from_str_radix(s, 16).ok().map(TaskId))?
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl Serialize for TaskId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TaskId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<TaskId, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        TaskId::parse(&s).ok_or_else(|| serde::de::Error::custom("a task id is 16 hex digits"))
    }
}

/// Attempts a task gets unless its submission says otherwise.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
pub const MAX_ATTEMPTS: u32 = 100;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
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
    pub worker_id: Option<WorkerId>,
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
    pub worker_id: Option<WorkerId>,
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

/// A task. Serialised as the journal keeps it, its progress nested (serde
/// reads a nested struct without buffering each record twice, which is
/// most of what a restart with a million tasks costs); the API shows it
/// with its progress flattened in, through [`Task::shown`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub id: TaskId,
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
    pub progress: Progress,
}

/// A task as the API shows it: its progress among its own fields.
#[derive(Serialize)]
pub struct Shown<'a> {
    id: TaskId,
    #[serde(rename = "type")]
    kind: &'a str,
    payload: &'a Value,
    priority: i64,
    target: &'a Target,
    timeout_ms: Option<u64>,
    max_attempts: u32,
    created_at: u64,
    #[serde(flatten)]
    progress: &'a Progress,
}

impl Task {
    pub fn state(&self) -> State {
        self.progress.state
    }

    pub fn shown(&self) -> Shown<'_> {
        Shown {
            id: self.id,
            kind: &self.kind,
            payload: &self.payload,
            priority: self.priority,
            target: &self.target,
            timeout_ms: self.timeout_ms,
            max_attempts: self.max_attempts,
            created_at: self.created_at,
            progress: &self.progress,
        }
    }
}

/// Tasks as the API shows them.
pub fn shown(tasks: &[Task]) -> Vec<Shown<'_>> {
    tasks.iter().map(Task::shown).collect()
}

/// Why a submission was refused: the field, and what is wrong with it.
#[derive(Debug, PartialEq)]
pub struct BadField(pub &'static str, pub String);

/// Read a `POST /api/tasks` body. The daemon assigns id and times.
pub fn parse_submit(body: &[u8], id: TaskId, now_ms: u64) -> Result<Task, BadField> {
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
        Some(Value::String(s)) if crate::proto::check_worker_id(s).is_ok() => {
            Some(WorkerId::from(s.as_str()))
        }
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
            TaskId(1),
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
        let shown = serde_json::to_value(t.shown()).unwrap();
        assert_eq!(shown["id"], "0000000000000001");
        assert_eq!(shown["state"], "queued", "progress flattened in");
        assert!(shown.get("progress").is_none());
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
            assert_eq!(parse_submit(body, TaskId(2), 0).unwrap_err().0, field);
        }
    }

    #[test]
    fn task_ids_are_16_hex_digits() {
        assert_eq!(TaskId(0x1a2b).to_string(), "0000000000001a2b");
        assert_eq!(TaskId::parse("0000000000001a2b"), Some(TaskId(0x1a2b)));
        assert_eq!(TaskId::parse("1A2B"), Some(TaskId(0x1a2b)));
        for bad in ["", "x", "00000000000000000", "-1", "a b"] {
            assert_eq!(TaskId::parse(bad), None, "{bad:?}");
        }
        let json = serde_json::to_string(&TaskId(7)).unwrap();
        assert_eq!(json, "\"0000000000000007\"");
        assert_eq!(serde_json::from_str::<TaskId>(&json).unwrap(), TaskId(7));
    }
}
