//! Bytes → [`Frame`] or [`Reject`]: the general path, through a
//! `serde_json::Value` tree, which checks every field and explains what is
//! wrong. Plain heartbeats are first offered to [`super::fast`].

use super::fast;
use super::frame::*;
use super::id::{Reject, RejectReason, WorkerId, check_worker_id};
use super::task::{self, TaskLog, TaskProgress, TaskUpdate};
use serde_json::{Map, Value};

/// Decode one frame. `max_bytes` is the configured frame limit.
pub fn decode(bytes: &[u8], max_bytes: usize) -> Result<Frame, Reject> {
    if bytes.len() > max_bytes {
        return Err(Reject::new(
            RejectReason::TooLarge,
            format!("frame of {} bytes exceeds {max_bytes}", bytes.len()),
        ));
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|e| Reject::new(RejectReason::InvalidUtf8, e.to_string()))?;
    if let Some(beat) = fast::heartbeat(text) {
        return Ok(Frame::Heartbeat(beat));
    }
    let value: Value = serde_json::from_str(text)
        .map_err(|e| Reject::new(RejectReason::NotJson, e.to_string()))?;
    let Value::Object(map) = value else {
        return Err(Reject::new(
            RejectReason::NotObject,
            "a frame is one JSON object",
        ));
    };
    // Attribute later errors to the worker when its id is readable.
    let named = match map.get("worker_id") {
        Some(Value::String(s)) if check_worker_id(s).is_ok() => Some(WorkerId::from(s.as_str())),
        _ => None,
    };
    decode_object(&map).map_err(|mut r| {
        r.worker_id = named;
        r
    })
}

fn decode_object(map: &Map<String, Value>) -> Result<Frame, Reject> {
    let kind = match map.get("type") {
        None => return Err(Reject::new(RejectReason::MissingType, "no \"type\"")),
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err(bad_field("type", "must be a string")),
    };
    let f = Fields(map);
    match kind {
        "hello" => Ok(Frame::Hello(Hello {
            worker_id: f
                .worker_id()?
                .ok_or_else(|| Reject::new(RejectReason::BadWorkerId, "hello needs a worker_id"))?,
            pid: f.uint("pid", u32::MAX as u64)?.map(|v| v as u32),
            hostname: f.text("hostname", MAX_TEXT)?,
            capacity: f.uint("capacity", u32::MAX as u64)?.map(|v| v as u32),
            labels: f.labels()?,
            task_types: f.task_types()?,
            token: f.text("token", MAX_TEXT)?,
            running: f.running()?,
        })),
        "heartbeat" => Ok(Frame::Heartbeat(Heartbeat {
            worker_id: f.worker_id()?,
            seq: f.uint("seq", u64::MAX)?,
            status: f.status()?,
            cpu_usage: f.number("cpu_usage", MAX_CPU_PERCENT)?,
            memory_usage: f.number("memory_usage", 100.0)?,
            gpu_usage: f.number("gpu_usage", 100.0)?,
            resource_usage: f.resource_usage()?,
            queue_depth: f.uint("queue_depth", u64::MAX)?,
            current_job: f.current_job()?,
            running_tasks: f.running_tasks()?,
            labels: f.labels()?,
            token: f.text("token", MAX_TEXT)?,
        })),
        "run" => Ok(Frame::Run(Run {
            worker_id: f.worker_id()?,
            duration_ms: f
                .number("duration_ms", MAX_RUN_MS)?
                .ok_or_else(|| bad_field("duration_ms", "required"))?,
            ok: f
                .boolean("ok")?
                .ok_or_else(|| bad_field("ok", "required"))?,
            exit_code: f.int("exit_code")?,
            signal: f.int("signal")?,
            token: f.text("token", MAX_TEXT)?,
        })),
        "task_update" => Ok(Frame::TaskUpdate(TaskUpdate {
            task_id: f.task_id()?,
            state: match f.text("state", 16)? {
                Some(s) => task::Reported::parse(&s)
                    .ok_or_else(|| bad_field("state", "running, succeeded, failed or cancelled"))?,
                None => return Err(bad_field("state", "required")),
            },
            result: f.get("result").cloned(),
            error: f.text("error", task::MAX_ERROR)?,
            exit_code: f.int("exit_code")?,
            retryable: f.boolean("retryable")?,
        })),
        "task_log" => Ok(Frame::TaskLog(TaskLog {
            task_id: f.task_id()?,
            lines: match f.get("lines") {
                Some(Value::Array(a)) if a.len() <= task::MAX_LOG_LINES => a
                    .iter()
                    .map(|l| l.as_str().map(str::to_string))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| bad_field("lines", "must be strings"))?,
                Some(Value::Array(_)) => {
                    return Err(bad_field(
                        "lines",
                        &format!("more than {}", task::MAX_LOG_LINES),
                    ));
                }
                _ => return Err(bad_field("lines", "required: a list of strings")),
            },
        })),
        "task_progress" => {
            let p = TaskProgress {
                task_id: f.task_id()?,
                fraction: f.number("fraction", 1.0)?,
                message: f.text("message", task::MAX_PROGRESS_MESSAGE)?,
            };
            if p.fraction.is_none() && p.message.is_none() {
                return Err(bad_field(
                    "fraction",
                    "required: fraction (0 to 1), message, or both",
                ));
            }
            Ok(Frame::TaskProgress(p))
        }
        "bye" => Ok(Frame::Bye {
            worker_id: f.worker_id()?,
            token: f.text("token", MAX_TEXT)?,
        }),
        other => Err(Reject::new(
            RejectReason::UnknownType,
            format!("unknown type {:?}", truncate(other, 32)),
        )),
    }
}

/// What the general path alone makes of `text`: the oracle the fast
/// path is held to, in the tests and the fuzz target.
pub fn general(text: &str) -> Option<Frame> {
    match serde_json::from_str(text) {
        Ok(Value::Object(m)) => decode_object(&m).ok(),
        _ => None,
    }
}

fn bad_field(name: &str, why: &str) -> Reject {
    Reject::new(RejectReason::BadField, format!("{name}: {why}"))
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Typed access to an object's fields; `null` reads as absent.
struct Fields<'a>(&'a Map<String, Value>);

impl Fields<'_> {
    fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    fn worker_id(&self) -> Result<Option<WorkerId>, Reject> {
        match self.0.get("worker_id") {
            None => Ok(None),
            Some(Value::String(s)) => match check_worker_id(s) {
                Ok(()) => Ok(Some(WorkerId::from(s.as_str()))),
                Err(RejectReason::ReservedId) => Err(Reject::new(
                    RejectReason::ReservedId,
                    format!("{s:?} is reserved"),
                )),
                Err(reason) => Err(Reject::new(
                    reason,
                    "worker_id must be 1-128 bytes of A-Za-z0-9._:@-",
                )),
            },
            Some(_) => Err(Reject::new(
                RejectReason::BadWorkerId,
                "worker_id must be a string",
            )),
        }
    }

    fn number(&self, name: &str, max: f64) -> Result<Option<f64>, Reject> {
        number_in(self.get(name), name, max)
    }

    fn uint(&self, name: &str, max: u64) -> Result<Option<u64>, Reject> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) if n <= max => Ok(Some(n)),
                _ => Err(bad_field(
                    name,
                    &format!("must be a whole number from 0 to {max}"),
                )),
            },
        }
    }

    fn int(&self, name: &str) -> Result<Option<i32>, Reject> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_i64()
                .and_then(|n| i32::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| bad_field(name, "must be a 32-bit integer")),
        }
    }

    fn boolean(&self, name: &str) -> Result<Option<bool>, Reject> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(bad_field(name, "must be true or false")),
        }
    }

    fn text(&self, name: &str, max: usize) -> Result<Option<String>, Reject> {
        text_in(self.get(name), name, max)
    }

    fn task_id(&self) -> Result<String, Reject> {
        match self.get("task_id") {
            Some(Value::String(s)) if task::valid_task_id(s) => Ok(s.clone()),
            Some(_) => Err(bad_field("task_id", "1-64 of A-Za-z0-9._:-")),
            None => Err(bad_field("task_id", "required")),
        }
    }

    fn task_types(&self) -> Result<Option<Vec<String>>, Reject> {
        match self.get("task_types") {
            None => Ok(None),
            Some(Value::Array(a)) if a.len() <= task::MAX_TASK_TYPES => a
                .iter()
                .map(|t| match t.as_str() {
                    Some(s) if !s.is_empty() && s.len() <= task::MAX_TASK_TYPE => {
                        Some(s.to_string())
                    }
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()
                .map(Some)
                .ok_or_else(|| bad_field("task_types", "1-128 byte strings")),
            Some(_) => Err(bad_field("task_types", "a list of at most 64 strings")),
        }
    }

    /// `hello`'s `running`: at most [`task::MAX_RUNNING`] of
    /// `{"task_id", "lease"}`.
    fn running(&self) -> Result<Option<Vec<task::Held>>, Reject> {
        let why = || bad_field("running", "a list of {\"task_id\", \"lease\"}");
        match self.get("running") {
            None => Ok(None),
            Some(Value::Array(a)) if a.len() <= task::MAX_RUNNING => a
                .iter()
                .map(|h| {
                    let id = h.get("task_id")?.as_str()?;
                    let lease = h.get("lease")?.as_u64()?;
                    task::valid_task_id(id).then(|| task::Held {
                        task_id: id.to_string(),
                        lease,
                    })
                })
                .collect::<Option<Vec<_>>>()
                .map(Some)
                .ok_or_else(why),
            Some(Value::Array(_)) => Err(bad_field(
                "running",
                &format!("more than {}", task::MAX_RUNNING),
            )),
            Some(_) => Err(why()),
        }
    }

    fn status(&self) -> Result<Option<Reported>, Reject> {
        match self.get("status") {
            None => Ok(None),
            Some(Value::String(s)) => Reported::parse(s)
                .map(Some)
                .ok_or_else(|| bad_field("status", "must be idle, working or error")),
            Some(_) => Err(bad_field("status", "must be a string")),
        }
    }

    fn resource_usage(&self) -> Result<Option<ResourceUsage>, Reject> {
        let Some(v) = self.get("resource_usage") else {
            return Ok(None);
        };
        let Value::Object(m) = v else {
            return Err(bad_field("resource_usage", "must be an object"));
        };
        let get = |k: &str| m.get(k).filter(|v| !v.is_null());
        let mb = |k: &str| number_in(get(k), k, f64::MAX);
        let count = |k: &str| match get(k) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| bad_field(k, "must be a whole number")),
        };
        Ok(Some(ResourceUsage {
            rss_mb: mb("rss_mb")?,
            heap_used_mb: mb("heap_used_mb")?,
            heap_total_mb: mb("heap_total_mb")?,
            external_mb: mb("external_mb")?,
            peak_rss_mb: mb("peak_rss_mb")?,
            threads: count("threads")?,
            fds: count("fds")?,
            io_read_bytes: count("io_read_bytes")?,
            io_write_bytes: count("io_write_bytes")?,
        }))
    }

    /// Outer `Option`: whether the field was sent; inner: `null` clears it.
    fn current_job(&self) -> Result<Option<Option<CurrentJob>>, Reject> {
        let v = match self.0.get("current_job") {
            None => return Ok(None),
            Some(Value::Null) => return Ok(Some(None)),
            Some(v) => v,
        };
        let Value::Object(m) = v else {
            return Err(bad_field("current_job", "must be an object or null"));
        };
        let g = |k: &str| m.get(k).filter(|v| !v.is_null());
        let id = match g("id") {
            // Job ids are often numbers; keep them as text.
            Some(Value::Number(n)) => Some(n.to_string()),
            other => text_in(other, "current_job.id", MAX_TEXT)?,
        };
        let whole = |k: &str, v: Option<&Value>| match v {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| bad_field(k, "must be a whole number")),
        };
        Ok(Some(Some(CurrentJob {
            id,
            kind: text_in(g("type"), "current_job.type", MAX_TEXT)?,
            files: whole("current_job.files", g("files"))?,
            started_at: whole("current_job.started_at", g("started_at"))?,
        })))
    }

    fn running_tasks(&self) -> Result<Option<Vec<Value>>, Reject> {
        match self.get("running_tasks") {
            None => Ok(None),
            Some(Value::Array(a)) if a.len() > MAX_RUNNING_TASKS => Err(bad_field(
                "running_tasks",
                &format!("more than {MAX_RUNNING_TASKS} entries"),
            )),
            Some(Value::Array(a)) if a.iter().all(Value::is_object) => Ok(Some(a.clone())),
            Some(_) => Err(bad_field("running_tasks", "must be a list of objects")),
        }
    }

    fn labels(&self) -> Result<Option<Labels>, Reject> {
        let Some(v) = self.get("labels") else {
            return Ok(None);
        };
        let Value::Object(m) = v else {
            return Err(bad_field("labels", "must be an object of strings"));
        };
        if m.len() > MAX_LABELS {
            return Err(bad_field("labels", &format!("more than {MAX_LABELS}")));
        }
        let mut out = Labels::new();
        for (k, v) in m {
            if k.is_empty() || k.len() > MAX_LABEL_KEY {
                return Err(bad_field("labels", "keys are 1-128 bytes"));
            }
            let Value::String(s) = v else {
                return Err(bad_field("labels", "values must be strings"));
            };
            if s.len() > MAX_LABEL_VALUE {
                return Err(bad_field("labels", "values are at most 1024 bytes"));
            }
            out.insert(k.clone(), s.clone());
        }
        Ok(Some(out))
    }
}

fn number_in(v: Option<&Value>, name: &str, max: f64) -> Result<Option<f64>, Reject> {
    match v {
        None => Ok(None),
        Some(v) => match v.as_f64() {
            Some(x) if in_range(x, max) => Ok(Some(x)),
            Some(_) => Err(bad_field(name, &format!("must be from 0 to {max}"))),
            None => Err(bad_field(name, "must be a number")),
        },
    }
}

/// A figure a frame may carry: finite, from 0 to `max`.
pub(super) fn in_range(x: f64, max: f64) -> bool {
    x.is_finite() && (0.0..=max).contains(&x)
}

fn text_in(v: Option<&Value>, name: &str, max: usize) -> Result<Option<String>, Reject> {
    match v {
        None => Ok(None),
        Some(Value::String(s)) if s.len() <= max => Ok(Some(s.clone())),
        Some(Value::String(_)) => Err(bad_field(name, &format!("longer than {max} bytes"))),
        Some(_) => Err(bad_field(name, "must be a string")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 65536;

    fn reason(input: &[u8]) -> Option<RejectReason> {
        decode(input, MAX).err().map(|r| r.reason)
    }

    #[test]
    fn rejects_by_reason() {
        use RejectReason::*;
        let long_id = format!(
            r#"{{"type":"heartbeat","worker_id":"{}"}}"#,
            "a".repeat(129)
        );
        let max_id = format!(
            r#"{{"type":"heartbeat","worker_id":"{}"}}"#,
            "a".repeat(128)
        );
        let table: &[(&[u8], Option<RejectReason>)] = &[
            (b"", Some(NotJson)),
            (b"hello", Some(NotJson)),
            (b"{\"type\":\"heartbeat\"", Some(NotJson)),
            (b"\xff\xfe{}", Some(InvalidUtf8)),
            (b"[1,2]", Some(NotObject)),
            (b"\"str\"", Some(NotObject)),
            (b"42", Some(NotObject)),
            (b"{}", Some(MissingType)),
            (br#"{"type":7}"#, Some(BadField)),
            (br#"{"type":"dance","worker_id":"w1"}"#, Some(UnknownType)),
            (br#"{"type":"heartbeat","worker_id":""}"#, Some(BadWorkerId)),
            (
                br#"{"type":"heartbeat","worker_id":"a b"}"#,
                Some(BadWorkerId),
            ),
            (
                br#"{"type":"heartbeat","worker_id":"w/1"}"#,
                Some(BadWorkerId),
            ),
            (br#"{"type":"heartbeat","worker_id":12}"#, Some(BadWorkerId)),
            (
                br#"{"type":"task_progress","task_id":"1","fraction":1.5}"#,
                Some(BadField),
            ),
            (
                br#"{"type":"task_progress","task_id":"1","fraction":-0.1}"#,
                Some(BadField),
            ),
            (br#"{"type":"task_progress","task_id":"1"}"#, Some(BadField)),
            (
                br#"{"type":"task_progress","task_id":"1","message":7}"#,
                Some(BadField),
            ),
            (
                br#"{"type":"task_progress","task_id":"1","fraction":1}"#,
                None,
            ),
            (long_id.as_bytes(), Some(BadWorkerId)),
            (max_id.as_bytes(), None),
            (
                br#"{"type":"heartbeat","worker_id":"registry"}"#,
                Some(ReservedId),
            ),
            (
                br#"{"type":"heartbeat","worker_id":"scale"}"#,
                Some(ReservedId),
            ),
            (
                br#"{"type":"heartbeat","worker_id":"snapshot"}"#,
                Some(ReservedId),
            ),
            (br#"{"type":"hello"}"#, Some(BadWorkerId)),
            (
                br#"{"type":"heartbeat","worker_id":"w","cpu_usage":"hot"}"#,
                Some(BadField),
            ),
            (
                br#"{"type":"heartbeat","worker_id":"w","cpu_usage":-1}"#,
                Some(BadField),
            ),
            (
                br#"{"type":"heartbeat","worker_id":"w","cpu_usage":1e999}"#,
                Some(NotJson),
            ),
            (
                br#"{"type":"heartbeat","worker_id":"w","cpu_usage":NaN}"#,
                Some(NotJson),
            ),
            (
                br#"{"type":"heartbeat","worker_id":"w","memory_usage":101}"#,
                Some(BadField),
            ),
            (
                br#"{"type":"heartbeat","worker_id":"w","queue_depth":-3}"#,
                Some(BadField),
            ),
            (
                br#"{"type":"heartbeat","worker_id":"w","queue_depth":1.5}"#,
                Some(BadField),
            ),
            (
                br#"{"type":"heartbeat","worker_id":"w","status":"sleepy"}"#,
                Some(BadField),
            ),
            (
                br#"{"type":"heartbeat","worker_id":"w","labels":{"a":1}}"#,
                Some(BadField),
            ),
            (
                br#"{"type":"heartbeat","worker_id":"w","labels":[]}"#,
                Some(BadField),
            ),
            (
                br#"{"type":"heartbeat","worker_id":"w","running_tasks":[1]}"#,
                Some(BadField),
            ),
            (
                br#"{"type":"heartbeat","worker_id":"w","resource_usage":{"rss_mb":-2}}"#,
                Some(BadField),
            ),
            (
                br#"{"type":"heartbeat","worker_id":"w","current_job":"x"}"#,
                Some(BadField),
            ),
            (
                br#"{"type":"run","worker_id":"w","ok":true}"#,
                Some(BadField),
            ),
            (
                br#"{"type":"run","worker_id":"w","ok":true,"duration_ms":-5}"#,
                Some(BadField),
            ),
            (
                br#"{"type":"run","worker_id":"w","ok":true,"duration_ms":1e12}"#,
                Some(BadField),
            ),
            (
                br#"{"type":"run","worker_id":"w","ok":"yes","duration_ms":5}"#,
                Some(BadField),
            ),
            (
                br#"{"type":"run","worker_id":"w","ok":true,"duration_ms":5}"#,
                None,
            ),
            (br#"{"type":"bye","worker_id":"w"}"#, None),
            (br#"{"type":"heartbeat","worker_id":"w.1_x:y@z-2"}"#, None),
            (
                br#" {"type":"heartbeat","worker_id":"w","extra":{"deep":[1]}} "#,
                None,
            ),
            (
                br#"{"type":"heartbeat","worker_id":"w","cpu_usage":null}"#,
                None,
            ),
        ];
        for (input, want) in table {
            assert_eq!(
                reason(input),
                *want,
                "input {:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn too_large_is_checked_before_parsing() {
        let frame = br#"{"type":"heartbeat","worker_id":"w"}"#;
        assert_eq!(
            decode(frame, frame.len() - 1).unwrap_err().reason,
            RejectReason::TooLarge
        );
        assert!(decode(frame, frame.len()).is_ok());
    }

    #[test]
    fn full_heartbeat_decodes() {
        let frame = br#"{"type":"heartbeat","worker_id":"w1","seq":9,"status":"working",
            "cpu_usage":150.5,"memory_usage":12,"gpu_usage":3.5,
            "resource_usage":{"rss_mb":52.8,"heap_used_mb":14.2},
            "queue_depth":5,"current_job":{"id":789,"type":"scan","files":1000,"started_at":1733808005000},
            "running_tasks":[{"task_id":"t1"}],"labels":{"pool":"scan"},"unknown":true}"#;
        let Frame::Heartbeat(h) = decode(frame, MAX).unwrap() else {
            panic!("not a heartbeat");
        };
        assert_eq!(h.worker_id.as_deref(), Some("w1"));
        assert_eq!(h.seq, Some(9));
        assert_eq!(h.status, Some(Reported::Working));
        assert_eq!(h.cpu_usage, Some(150.5));
        assert_eq!(h.memory_usage, Some(12.0));
        assert_eq!(h.resource_usage.as_ref().unwrap().rss_mb, Some(52.8));
        assert_eq!(h.resource_usage.as_ref().unwrap().external_mb, None);
        assert_eq!(h.queue_depth, Some(5));
        let job = h.current_job.clone().unwrap().unwrap();
        assert_eq!(job.id.as_deref(), Some("789"));
        assert_eq!(job.kind.as_deref(), Some("scan"));
        assert_eq!(h.running_tasks.as_ref().unwrap().len(), 1);
        assert_eq!(h.labels.as_ref().unwrap()["pool"], "scan");
    }

    #[test]
    fn null_current_job_clears() {
        let frame = br#"{"type":"heartbeat","worker_id":"w","current_job":null}"#;
        let Frame::Heartbeat(h) = decode(frame, MAX).unwrap() else {
            panic!()
        };
        assert_eq!(h.current_job, Some(None));
    }

    #[test]
    fn rejects_keep_a_readable_worker_id() {
        let r = decode(
            br#"{"type":"heartbeat","worker_id":"w9","cpu_usage":"x"}"#,
            MAX,
        )
        .unwrap_err();
        assert_eq!(r.worker_id.as_deref(), Some("w9"));
        assert!(r.message.contains("cpu_usage"), "{}", r.message);
    }

    #[test]
    fn hello_carries_details() {
        let frame = br#"{"type":"hello","worker_id":"w1","pid":42,"hostname":"h","capacity":4,"token":"s"}"#;
        let Frame::Hello(h) = decode(frame, MAX).unwrap() else {
            panic!()
        };
        assert_eq!((h.pid, h.capacity), (Some(42), Some(4)));
        assert_eq!(h.hostname.as_deref(), Some("h"));
    }

    #[test]
    fn hello_reports_what_still_runs_and_bad_lists_are_refused() {
        let frame = br#"{"type":"hello","worker_id":"w1","running":[{"task_id":"17","lease":9}]}"#;
        let Frame::Hello(h) = decode(frame, MAX).unwrap() else {
            panic!()
        };
        assert_eq!(
            h.running.unwrap(),
            [task::Held {
                task_id: "17".into(),
                lease: 9
            }]
        );
        for bad in [
            r#""running":{}"#,
            r#""running":[{"task_id":"17"}]"#,
            r#""running":[{"task_id":"a b","lease":1}]"#,
            r#""running":[{"task_id":"17","lease":-1}]"#,
        ] {
            let frame = format!(r#"{{"type":"hello","worker_id":"w1",{bad}}}"#);
            let r = decode(frame.as_bytes(), MAX).unwrap_err();
            assert!(r.message.contains("running"), "{bad}: {}", r.message);
        }
        let many: Vec<String> = (0..=task::MAX_RUNNING)
            .map(|i| format!(r#"{{"task_id":"{i}","lease":1}}"#))
            .collect();
        let frame = format!(
            r#"{{"type":"hello","worker_id":"w1","running":[{}]}}"#,
            many.join(",")
        );
        assert!(decode(frame.as_bytes(), 1 << 20).is_err());
    }

    /// Two beats that differ only in `seq` and token have one
    /// fingerprint; any reported figure, the job, the labels or the
    /// status changes it; a beat listing running tasks has none.
    #[test]
    fn fingerprints_name_everything_but_seq_and_token() {
        let seed = r#"{"type":"heartbeat","worker_id":"w_1","seq":SEQ,"status":"working","cpu_usage":12.5,"memory_usage":30.2,"gpu_usage":1.5,"queue_depth":3,"resource_usage":{"rss_mb":120.5,"heap_used_mb":80.25,"heap_total_mb":96.0,"external_mb":2.5,"peak_rss_mb":130.0,"threads":4,"fds":9,"io_read_bytes":10,"io_write_bytes":20},"current_job":{"id":"job-1","type":"scan","files":3,"started_at":1700000000000},"labels":{"pool":"scan","zone":"eu-1"}TOKEN}"#;
        let fp = |json: &str| match decode(json.as_bytes(), MAX).unwrap() {
            Frame::Heartbeat(h) => h.fingerprint(),
            f => panic!("not a heartbeat: {f:?}"),
        };
        let base = seed.replace("SEQ", "1").replace("TOKEN", "");
        let first = fp(&base).expect("a fingerprint");
        let next = seed.replace("SEQ", "2").replace("TOKEN", r#","token":"t""#);
        assert_eq!(fp(&next), Some(first), "seq and token are not state");
        let changes = [
            ("\"w_1\"", "\"w_2\""),
            ("\"working\"", "\"idle\""),
            ("12.5", "12.6"),
            ("30.2", "30.3"),
            ("\"gpu_usage\":1.5", "\"gpu_usage\":1.6"),
            ("\"queue_depth\":3", "\"queue_depth\":4"),
            ("120.5", "120.75"),
            ("80.25", "80.5"),
            ("96.0", "97.0"),
            ("\"external_mb\":2.5", "\"external_mb\":2.75"),
            ("130.0", "131.0"),
            ("\"threads\":4", "\"threads\":5"),
            ("\"fds\":9", "\"fds\":10"),
            ("\"io_read_bytes\":10", "\"io_read_bytes\":11"),
            ("\"io_write_bytes\":20", "\"io_write_bytes\":21"),
            ("job-1", "job-2"),
            ("\"scan\",\"files\"", "\"index\",\"files\""),
            ("\"files\":3", "\"files\":4"),
            ("1700000000000", "1700000000001"),
            ("eu-1", "eu-2"),
            (",\"zone\":\"eu-1\"", ""),
        ];
        for (from, to) in changes {
            assert_eq!(base.matches(from).count(), 1, "{from} once in the frame");
            let changed = base.replace(from, to);
            assert_ne!(fp(&changed), Some(first), "{from} → {to}");
        }
        let no_job = base.replace(
            r#""current_job":{"id":"job-1","type":"scan","files":3,"started_at":1700000000000}"#,
            r#""current_job":null"#,
        );
        assert_ne!(fp(&no_job), Some(first), "a job ended");
        let minimal = r#"{"type":"heartbeat","worker_id":"w_1"}"#;
        assert_ne!(fp(minimal), Some(first), "fields left out");
        let tasks = base.replace("\"labels\"", r#""running_tasks":[{"id":1}],"labels""#);
        assert_eq!(fp(&tasks), None, "running tasks are not hashed");
    }
}
