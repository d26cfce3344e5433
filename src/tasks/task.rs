//! A task and its life, as data: its id, what a submission may say, the
//! states, and the progress that changes. Pure.
//!
//! (`scheduled` until its `run_at`) → `queued` → `assigned` (sent to a
//! worker) → `running` (the worker said so) → `succeeded` · `failed` ·
//! `cancelled` · `timed_out` · `dead`. A task whose worker is lost goes
//! back to `queued` at once with `attempt + 1`; one whose handler failed
//! is `scheduled` again after a backoff ([`backoff_ms`]) unless the worker
//! said the failure is not retryable (then `failed`). Either way, after
//! `max_attempts` it is `dead`.

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
/// The longest `delay_ms` or backoff: a year.
pub const MAX_DELAY_MS: i64 = 366 * 24 * 3600 * 1000;
/// The backoff when neither the submission nor the configuration sets one
/// (`retry_backoff_base`, `retry_backoff_max`).
pub const DEFAULT_BACKOFF: Backoff = Backoff {
    backoff_base_ms: 1000,
    backoff_max_ms: 3_600_000,
};

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
    Scheduled,
    Dead,
    /// Waits for its `depends_on` to succeed.
    Waiting,
}

impl State {
    pub const ALL: [State; 10] = [
        State::Queued,
        State::Assigned,
        State::Running,
        State::Succeeded,
        State::Failed,
        State::Cancelled,
        State::TimedOut,
        State::Scheduled,
        State::Dead,
        State::Waiting,
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
            State::Scheduled => "scheduled",
            State::Dead => "dead",
            State::Waiting => "waiting",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        State::ALL.into_iter().find(|x| x.as_str() == s)
    }

    pub fn is_final(self) -> bool {
        matches!(
            self,
            State::Succeeded | State::Failed | State::Cancelled | State::TimedOut | State::Dead
        )
    }

    /// Ended in a way `POST /api/tasks/{id}/retry` brings back from.
    pub fn is_retryable_end(self) -> bool {
        self.is_final() && self != State::Succeeded
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
    /// When a `scheduled` task is due (Unix ms): its `run_at`, or the end
    /// of its backoff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_at: Option<u64>,
    /// What the worker last said of how far this attempt has come.
    #[serde(default, rename = "progress", skip_serializing_if = "Option::is_none")]
    pub advance: Option<Box<Advance>>,
}

/// A `task_progress` as the task keeps it: `fraction` done (0 to 1),
/// what the worker is doing, and when it said so (Unix ms).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Advance {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fraction: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub at: u64,
}

impl Progress {
    /// A waiting task whose dependencies all succeeded: queued, or
    /// scheduled when its `run_at` is still ahead.
    pub fn ready(&mut self, now_ms: u64) {
        if self.run_at.is_some_and(|t| t > now_ms) {
            self.state = State::Scheduled;
        } else {
            self.state = State::Queued;
            self.queued_at = Some(now_ms);
            self.run_at = None;
        }
    }

    /// A fresh cycle from `now_ms`: attempt 1, queued, or scheduled for
    /// `run_at` when that is later.
    pub fn fresh(now_ms: u64, run_at: Option<u64>) -> Progress {
        let later = run_at.filter(|&t| t > now_ms);
        Progress {
            state: if later.is_some() {
                State::Scheduled
            } else {
                State::Queued
            },
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
            run_at: later,
            advance: None,
        }
    }
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
    /// The submission's own backoff, where it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Backoff>,
    /// W3C Trace Context of the submission, passed to the worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<Box<Trace>>,
    /// The submission's `Idempotency-Key`: a repeat within
    /// `idempotency_retention` is answered with this task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// The name of the API token that submitted it (`loopback` without
    /// tokens); a `submit` token may cancel only its own tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitted_by: Option<String>,
    /// No second task with this key while this one has not ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique_key: Option<String>,
    /// What its dispatch limits count it under besides its type (a
    /// tenant, a customer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_key: Option<String>,
    /// Tasks that must succeed before this one is queued (`waiting`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<TaskId>,
    /// The schedule and tick that submitted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Box<super::schedule::Fired>>,
    pub created_at: u64,
    pub progress: Progress,
}

/// Tasks one task may depend on, at most.
pub const MAX_DEPENDS: usize = 100;

/// The longest `Idempotency-Key` or `unique_key`.
pub const MAX_KEY: usize = 255;

/// A key as a submission may give it: 1 to [`MAX_KEY`] bytes of printable
/// ASCII, spaces inside allowed.
pub fn valid_key(k: &str) -> bool {
    !k.is_empty() && k.len() <= MAX_KEY && k.bytes().all(|b| (0x20..0x7f).contains(&b))
}

/// A submission's W3C Trace Context.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Trace {
    pub traceparent: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<String>,
}

/// The longest `tracestate` kept (W3C Trace Context asks that at least
/// 512 characters be passed on).
pub const MAX_TRACESTATE: usize = 512;

/// A submission's `traceparent` and `tracestate` as they are kept: both
/// dropped when `traceparent` cannot be parsed (W3C Trace Context, 4.3:
/// a receiver ignores it, it does not refuse the request), and a
/// `tracestate` longer than [`MAX_TRACESTATE`] dropped on its own.
/// A later version's longer form is kept as its first 55 characters.
pub fn trace_context(traceparent: Option<&str>, tracestate: Option<&str>) -> Option<Box<Trace>> {
    let tp = traceparent.map(str::trim).and_then(parse_traceparent)?;
    let ts = tracestate
        .map(str::trim)
        .filter(|s| {
            !s.is_empty()
                && s.len() <= MAX_TRACESTATE
                && s.bytes().all(|b| (0x20..0x7f).contains(&b))
        })
        .map(str::to_string);
    Some(Box::new(Trace {
        traceparent: tp.to_string(),
        tracestate: ts,
    }))
}

/// `version-traceid-parentid-flags`, lowercase hex, neither id all zeros,
/// version `ff` invalid; version `00` is exactly 55 characters, a later
/// one may go on after a `-`.
fn parse_traceparent(s: &str) -> Option<&str> {
    let b = s.as_bytes();
    let hex =
        |r: std::ops::Range<usize>| b[r].iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
    let zero = |r: std::ops::Range<usize>| b[r].iter().all(|c| *c == b'0');
    if b.len() < 55 || !hex(0..2) || &s[..2] == "ff" {
        return None;
    }
    if (s.starts_with("00") && b.len() != 55) || (b.len() > 55 && b[55] != b'-') {
        return None;
    }
    let dashes = b[2] == b'-' && b[35] == b'-' && b[52] == b'-';
    let ok = dashes && hex(3..35) && hex(36..52) && hex(53..55) && !zero(3..35) && !zero(36..52);
    ok.then(|| &s[..55])
}

/// How long a failed task waits before its next attempt.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Backoff {
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
}

impl Default for Backoff {
    fn default() -> Self {
        DEFAULT_BACKOFF
    }
}

/// The wait before attempt `next` (2 or later) of task `id`:
/// `base × 2^(next − 2)`, at most `max`, plus up to half of that again
/// at random (so that tasks failed together do not come back together).
/// Never less than the first part.
pub fn backoff_ms(b: Backoff, id: TaskId, next: u32) -> u64 {
    use std::hash::BuildHasher;
    let doublings = next.saturating_sub(2).min(40);
    let wait = b
        .backoff_base_ms
        .saturating_mul(1u64 << doublings)
        .min(b.backoff_max_ms);
    let noise = std::collections::hash_map::RandomState::new().hash_one((id.0, next));
    wait + noise % (wait / 2 + 1)
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
    #[serde(skip_serializing_if = "Option::is_none")]
    retry: Option<Backoff>,
    #[serde(skip_serializing_if = "Option::is_none")]
    traceparent: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tracestate: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    idempotency_key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    submitted_by: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unique_key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    concurrency_key: Option<&'a str>,
    #[serde(skip_serializing_if = "<[TaskId]>::is_empty")]
    depends_on: &'a [TaskId],
    #[serde(skip_serializing_if = "Option::is_none")]
    schedule: Option<&'a super::schedule::Fired>,
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
            retry: self.retry,
            traceparent: self.trace.as_ref().map(|t| t.traceparent.as_str()),
            tracestate: self.trace.as_ref().and_then(|t| t.tracestate.as_deref()),
            idempotency_key: self.idempotency_key.as_deref(),
            submitted_by: self.submitted_by.as_deref(),
            unique_key: self.unique_key.as_deref(),
            concurrency_key: self.concurrency_key.as_deref(),
            depends_on: &self.depends_on,
            schedule: self.schedule.as_deref(),
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
    let run_at = match (m.get("run_at"), int("delay_ms", &m)?) {
        (Some(Value::Null) | None, None) => None,
        (Some(Value::String(t)), None) => {
            let at: jiff::Timestamp = t.parse().map_err(|e| {
                BadField(
                    "run_at",
                    format!("an RFC 3339 time like 2026-12-02T10:00:00Z ({e})"),
                )
            })?;
            Some(u64::try_from(at.as_millisecond()).unwrap_or(0))
        }
        (Some(Value::Null) | None, Some(d)) if (0..=MAX_DELAY_MS).contains(&d) => {
            Some(now_ms + d as u64)
        }
        (Some(Value::Null) | None, Some(_)) => {
            return Err(BadField("delay_ms", format!("0 to {MAX_DELAY_MS}")));
        }
        (Some(Value::String(_)), Some(_)) => {
            return Err(BadField(
                "run_at",
                "either run_at or delay_ms, not both".into(),
            ));
        }
        (Some(_), _) => return Err(BadField("run_at", "an RFC 3339 time as text".into())),
    };
    let (max_attempts, retry) = match m.get("retry") {
        None | Some(Value::Null) => (max_attempts, None),
        Some(Value::Object(r)) => {
            let n = match int("max_attempts", r)? {
                None => max_attempts,
                Some(n) if (1..=i64::from(MAX_ATTEMPTS)).contains(&n) => n as u32,
                Some(_) => {
                    return Err(BadField(
                        "retry.max_attempts",
                        format!("1 to {MAX_ATTEMPTS}"),
                    ));
                }
            };
            let ms = |name: &'static str, field: &'static str| match int(name, r)? {
                None => Ok(None),
                Some(v) if (1..=MAX_DELAY_MS).contains(&v) => Ok(Some(v as u64)),
                Some(_) => Err(BadField(field, format!("1 to {MAX_DELAY_MS}"))),
            };
            let base = ms("backoff_base_ms", "retry.backoff_base_ms")?;
            let max = ms("backoff_max_ms", "retry.backoff_max_ms")?;
            let backoff = match (base, max) {
                (None, None) => None,
                (b, m) => {
                    let b = b.unwrap_or(DEFAULT_BACKOFF.backoff_base_ms);
                    let m = m.unwrap_or(DEFAULT_BACKOFF.backoff_max_ms.max(b));
                    if m < b {
                        return Err(BadField(
                            "retry.backoff_max_ms",
                            "at least backoff_base_ms".into(),
                        ));
                    }
                    Some(Backoff {
                        backoff_base_ms: b,
                        backoff_max_ms: m,
                    })
                }
            };
            (n, backoff)
        }
        Some(_) => return Err(BadField("retry", "an object".into())),
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
    let key = |name: &'static str| match m.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(k)) if valid_key(k) && k != "*" => Ok(Some(k.clone())),
        Some(_) => Err(BadField(
            name,
            format!("1-{MAX_KEY} printable ASCII characters, not *"),
        )),
    };
    let unique_key = key("unique_key")?;
    let concurrency_key = key("concurrency_key")?;
    let depends_on = match m.get("depends_on") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) if a.len() <= MAX_DEPENDS => {
            let ids = a
                .iter()
                .map(|v| v.as_str().and_then(TaskId::parse))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| BadField("depends_on", "a list of task ids".into()))?;
            let mut seen = std::collections::BTreeSet::new();
            if let Some(twice) = ids.iter().find(|id| !seen.insert(**id)) {
                return Err(BadField("depends_on", format!("{twice} is named twice")));
            }
            ids
        }
        Some(_) => {
            return Err(BadField(
                "depends_on",
                format!("a list of at most {MAX_DEPENDS} task ids"),
            ));
        }
    };
    let mut progress = Progress::fresh(now_ms, run_at);
    if !depends_on.is_empty() {
        progress.state = State::Waiting;
    }
    Ok(Task {
        id,
        kind,
        payload: m.get("payload").cloned().unwrap_or(Value::Null),
        priority,
        target: Target { worker_id, labels },
        timeout_ms,
        max_attempts,
        retry,
        trace: None,
        idempotency_key: None,
        submitted_by: None,
        unique_key,
        concurrency_key,
        depends_on,
        schedule: None,
        created_at: now_ms,
        progress,
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
            (br#"{"type":"a","delay_ms":-1}"#, "delay_ms"),
            (br#"{"type":"a","run_at":"tomorrow"}"#, "run_at"),
            (br#"{"type":"a","run_at":5}"#, "run_at"),
            (br#"{"type":"a","unique_key":""}"#, "unique_key"),
            (br#"{"type":"a","unique_key":7}"#, "unique_key"),
            (br#"{"type":"a","unique_key":"tab\there"}"#, "unique_key"),
            (
                br#"{"type":"a","run_at":"2026-12-02T10:00:00Z","delay_ms":5}"#,
                "run_at",
            ),
            (
                br#"{"type":"a","retry":{"max_attempts":0}}"#,
                "retry.max_attempts",
            ),
            (
                br#"{"type":"a","retry":{"backoff_base_ms":0}}"#,
                "retry.backoff_base_ms",
            ),
            (
                br#"{"type":"a","retry":{"backoff_base_ms":10,"backoff_max_ms":5}}"#,
                "retry.backoff_max_ms",
            ),
        ] {
            assert_eq!(parse_submit(body, TaskId(2), 0).unwrap_err().0, field);
        }
    }

    #[test]
    fn delays_and_backoffs() {
        let t = parse_submit(br#"{"type":"a","delay_ms":2000}"#, TaskId(1), 1000).unwrap();
        assert_eq!(
            (t.state(), t.progress.run_at),
            (State::Scheduled, Some(3000))
        );
        let t = parse_submit(br#"{"type":"a","delay_ms":0}"#, TaskId(1), 1000).unwrap();
        assert_eq!((t.state(), t.progress.run_at), (State::Queued, None));
        let t = parse_submit(
            br#"{"type":"a","run_at":"2026-12-02T10:00:00.5+01:00"}"#,
            TaskId(1),
            1000,
        )
        .unwrap();
        assert_eq!(t.progress.run_at, Some(1_796_202_000_500));
        let past = parse_submit(
            br#"{"type":"a","run_at":"2020-01-01T00:00:00Z"}"#,
            TaskId(1),
            1_796_202_000_000,
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(past.state(), State::Queued, "a past run_at is due now");
        let t = parse_submit(
            br#"{"type":"a","retry":{"max_attempts":5,"backoff_base_ms":100}}"#,
            TaskId(1),
            0,
        )
        .unwrap();
        let b = t.retry.unwrap();
        assert_eq!((t.max_attempts, b.backoff_base_ms), (5, 100));
        for next in 2..30 {
            let wait = b
                .backoff_base_ms
                .saturating_mul(1 << (next - 2))
                .min(b.backoff_max_ms);
            let got = backoff_ms(b, TaskId(9), next);
            assert!(
                (wait..=wait + wait / 2).contains(&got),
                "{next}: {got} for {wait}"
            );
        }
        let back: Task = serde_json::from_value(serde_json::to_value(&t).unwrap()).unwrap();
        assert_eq!(back, t);
    }

    #[test]
    fn trace_context_is_kept_when_it_parses() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let kept = |tp, ts| trace_context(tp, ts).map(|t| (t.traceparent, t.tracestate));
        assert_eq!(
            kept(Some(tp), Some("a=b")),
            Some((tp.to_string(), Some("a=b".to_string())))
        );
        let long = "x".repeat(MAX_TRACESTATE + 1);
        assert_eq!(kept(Some(tp), Some(&long)), Some((tp.to_string(), None)));
        assert_eq!(kept(None, Some("a=b")), None);
        let later = format!("cc{}-more", &tp[2..]);
        assert_eq!(
            kept(Some(&later), None),
            Some((later[..55].to_string(), None))
        );
        for bad in [
            "",
            "00",
            &tp[..54],
            &format!("{tp}0"),
            &tp.replace("00-4b", "ff-4b"),
            &tp.to_uppercase(),
            &tp.replace('-', "_"),
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            &format!("cc{}x", &tp[2..]),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0é",
        ] {
            assert_eq!(kept(Some(bad), Some("a=b")), None, "{bad:?}");
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
