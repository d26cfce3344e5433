//! Heartbeat protocol v1: decoding and validation of frames, and encoding of
//! the daemon's replies (`welcome`, `error`).
//!
//! Pure: bytes in, a [`Frame`] or a [`Reject`] out. No sockets, no logging, no
//! clocks. Transport rules (one frame per UDP datagram, one per line over TCP,
//! `hello` first on TCP) are the ingest loop's business; this module only
//! knows what one frame may contain.
//!
//! Invariants of a decoded frame: the worker id, when present, obeys
//! [`valid_worker_id`]; every number is finite and within its range; strings
//! and collections are bounded (see the `MAX_*` constants), so a frame's
//! in-memory size is bounded by a small multiple of its wire size.

use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// Longest worker id, in bytes.
pub const MAX_ID_LEN: usize = 128;
/// Ids that name endpoints under `/api/workers/` and so cannot be worker ids.
pub const RESERVED_IDS: [&str; 3] = ["registry", "scale", "snapshot"];
/// At most this many labels per frame.
pub const MAX_LABELS: usize = 64;
/// Longest label key, in bytes.
pub const MAX_LABEL_KEY: usize = 128;
/// Longest label value, in bytes.
pub const MAX_LABEL_VALUE: usize = 1024;
/// At most this many entries in `running_tasks`.
pub const MAX_RUNNING_TASKS: usize = 256;
/// Longest free-text string field (hostname, job id and type), in bytes.
pub const MAX_TEXT: usize = 256;
/// Longest run we believe: 30 days. Anything longer is a unit mistake.
pub const MAX_RUN_MS: f64 = 30.0 * 24.0 * 3600.0 * 1000.0;
/// CPU may exceed 100 (% of one core); beyond this many cores it is nonsense.
pub const MAX_CPU_PERCENT: f64 = 100.0 * 4096.0;

/// A worker id: 1–128 bytes of `A-Za-z0-9._:@-`, not a reserved word.
pub type WorkerId = Arc<str>;
/// Label map, ordered so that rendering is stable.
pub type Labels = BTreeMap<String, String>;

/// Whether `id` may name a worker (syntax only; reserved words are separate).
pub fn valid_worker_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'@' | b'-'))
}

/// Check a candidate id against the syntax and the reserved words.
pub fn check_worker_id(id: &str) -> Result<(), RejectReason> {
    if !valid_worker_id(id) {
        Err(RejectReason::BadWorkerId)
    } else if RESERVED_IDS.contains(&id) {
        Err(RejectReason::ReservedId)
    } else {
        Ok(())
    }
}

/// The status a worker reports about itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reported {
    Idle,
    Working,
    Error,
}

impl Reported {
    pub fn as_str(self) -> &'static str {
        match self {
            Reported::Idle => "idle",
            Reported::Working => "working",
            Reported::Error => "error",
        }
    }

    /// The status a frame names, if it is one of the three.
    pub fn parse(s: &str) -> Option<Reported> {
        match s {
            "idle" => Some(Reported::Idle),
            "working" => Some(Reported::Working),
            "error" => Some(Reported::Error),
            _ => None,
        }
    }
}

/// `resource_usage` as seed 000 shapes it; every figure is in MB.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ResourceUsage {
    pub rss_mb: Option<f64>,
    pub heap_used_mb: Option<f64>,
    pub heap_total_mb: Option<f64>,
    pub external_mb: Option<f64>,
    /// What `muster agent` adds: peak RSS, threads, open descriptors and
    /// storage I/O of the process tree.
    pub peak_rss_mb: Option<f64>,
    pub threads: Option<u64>,
    pub fds: Option<u64>,
    pub io_read_bytes: Option<u64>,
    pub io_write_bytes: Option<u64>,
}

/// `current_job`: what the worker is busy with.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CurrentJob {
    pub id: Option<String>,
    pub kind: Option<String>,
    pub files: Option<u64>,
    pub started_at: Option<u64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Hello {
    pub worker_id: WorkerId,
    pub pid: Option<u32>,
    pub hostname: Option<String>,
    pub capacity: Option<u32>,
    pub labels: Option<Labels>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Heartbeat {
    pub worker_id: Option<WorkerId>,
    pub seq: Option<u64>,
    pub status: Option<Reported>,
    pub cpu_usage: Option<f64>,
    pub memory_usage: Option<f64>,
    pub gpu_usage: Option<f64>,
    pub resource_usage: Option<ResourceUsage>,
    pub queue_depth: Option<u64>,
    pub current_job: Option<Option<CurrentJob>>,
    /// Each entry is a JSON object, kept as sent.
    pub running_tasks: Option<Vec<Value>>,
    pub labels: Option<Labels>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Run {
    pub worker_id: Option<WorkerId>,
    pub duration_ms: f64,
    pub ok: bool,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
}

// Heartbeats dominate the traffic and are the large variant; frames are
// boxed whole when queued, so boxing the variant would only add a second
// allocation per frame.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Frame {
    Hello(Hello),
    Heartbeat(Heartbeat),
    Run(Run),
    Bye { worker_id: Option<WorkerId> },
}

impl Frame {
    /// The id the frame names, if any (a TCP frame after `hello` may omit it).
    pub fn worker_id(&self) -> Option<&WorkerId> {
        match self {
            Frame::Hello(h) => Some(&h.worker_id),
            Frame::Heartbeat(h) => h.worker_id.as_ref(),
            Frame::Run(r) => r.worker_id.as_ref(),
            Frame::Bye { worker_id } => worker_id.as_ref(),
        }
    }

    /// Fill in the id from the connection's `hello` when the frame left it out.
    pub fn set_worker_id(&mut self, id: WorkerId) {
        match self {
            Frame::Hello(h) => h.worker_id = id,
            Frame::Heartbeat(h) => h.worker_id = Some(id),
            Frame::Run(r) => r.worker_id = Some(id),
            Frame::Bye { worker_id } => *worker_id = Some(id),
        }
    }
}

/// Why a frame was refused. Every variant is a counter in `/health` and
/// `/metrics`, under the name [`RejectReason::as_str`] gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RejectReason {
    TooLarge,
    InvalidUtf8,
    NotJson,
    NotObject,
    MissingType,
    UnknownType,
    BadWorkerId,
    ReservedId,
    BadField,
    /// TCP: a frame other than `hello` on a connection that has not said hello.
    HelloRequired,
    /// TCP: a frame naming another worker than the connection's `hello`.
    WorkerMismatch,
    /// The worker would be new and `max_workers` are already tracked, or its
    /// thread could not be started.
    WorkerCap,
}

impl RejectReason {
    pub const ALL: [RejectReason; 12] = [
        RejectReason::TooLarge,
        RejectReason::InvalidUtf8,
        RejectReason::NotJson,
        RejectReason::NotObject,
        RejectReason::MissingType,
        RejectReason::UnknownType,
        RejectReason::BadWorkerId,
        RejectReason::ReservedId,
        RejectReason::BadField,
        RejectReason::HelloRequired,
        RejectReason::WorkerMismatch,
        RejectReason::WorkerCap,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::TooLarge => "too_large",
            RejectReason::InvalidUtf8 => "invalid_utf8",
            RejectReason::NotJson => "not_json",
            RejectReason::NotObject => "not_object",
            RejectReason::MissingType => "missing_type",
            RejectReason::UnknownType => "unknown_type",
            RejectReason::BadWorkerId => "bad_worker_id",
            RejectReason::ReservedId => "reserved_id",
            RejectReason::BadField => "bad_field",
            RejectReason::HelloRequired => "hello_required",
            RejectReason::WorkerMismatch => "worker_mismatch",
            RejectReason::WorkerCap => "worker_cap",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// A refused frame: the reason (for counting), a message for the peer and
/// the log, and the worker id when the frame named a valid one.
#[derive(Clone, Debug, PartialEq)]
pub struct Reject {
    pub reason: RejectReason,
    pub message: String,
    pub worker_id: Option<WorkerId>,
}

impl Reject {
    pub fn new(reason: RejectReason, message: impl Into<String>) -> Reject {
        Reject {
            reason,
            message: message.into(),
            worker_id: None,
        }
    }
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason.as_str(), self.message)
    }
}

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
        })),
        "bye" => Ok(Frame::Bye {
            worker_id: f.worker_id()?,
        }),
        other => Err(Reject::new(
            RejectReason::UnknownType,
            format!("unknown type {:?}", truncate(other, 32)),
        )),
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
fn in_range(x: f64, max: f64) -> bool {
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

/// The `welcome` line sent in reply to `hello` (with its trailing newline).
pub fn encode_welcome(worker_id: &str, interval_ms: u64, timeout_ms: u64) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Welcome<'a> {
        r#type: &'static str,
        version: u32,
        worker_id: &'a str,
        heartbeat_interval_ms: u64,
        inactivity_timeout_ms: u64,
    }
    line(&Welcome {
        r#type: "welcome",
        version: 1,
        worker_id,
        heartbeat_interval_ms: interval_ms,
        inactivity_timeout_ms: timeout_ms,
    })
}

/// An `error` line: `code` is a [`RejectReason`] name or a connection-level
/// code such as `superseded` or `idle_timeout`.
pub fn encode_error(code: &str, message: &str) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Error<'a> {
        r#type: &'static str,
        code: &'a str,
        message: &'a str,
    }
    line(&Error {
        r#type: "error",
        code,
        message,
    })
}

fn line(v: &impl serde::Serialize) -> Vec<u8> {
    let mut out = serde_json::to_vec(v).unwrap_or_default();
    out.push(b'\n');
    out
}

/// The common frame, a heartbeat of plain fields, decoded without building
/// a `serde_json::Value` tree: keys and strings are borrowed from the input
/// and numbers are read as [`serde_json::Number`], exactly as the tree
/// would hold them. Anything else (another type, a nested field, a key
/// given twice, an escaped string, a value out of range, any syntax error)
/// returns `None` and takes the general path, which decides and explains.
/// So the fast path only ever agrees with the general one; the tests check
/// that on generated frames.
mod fast {
    use super::{Heartbeat, MAX_CPU_PERCENT, Reported, WorkerId, check_worker_id, in_range};
    use serde::de::{Deserializer as _, IgnoredAny, MapAccess, Visitor};
    use serde_json::Number;
    use std::fmt;

    /// The fields this path reads; any other field the general path
    /// reads sends the frame there.
    const FIELDS: [&str; 8] = [
        "type",
        "worker_id",
        "seq",
        "status",
        "cpu_usage",
        "memory_usage",
        "gpu_usage",
        "queue_depth",
    ];

    pub fn heartbeat(text: &str) -> Option<Heartbeat> {
        let mut de = serde_json::Deserializer::from_str(text);
        let beat = de.deserialize_map(Beat).ok()??;
        de.end().ok()?;
        Some(beat)
    }

    struct Beat;

    /// A number as the general path reads it: `null` is absent.
    fn float(n: Option<Number>, max: f64) -> Option<Option<f64>> {
        match n {
            None => Some(None),
            Some(n) => {
                let x = n.as_f64()?;
                in_range(x, max).then_some(Some(x))
            }
        }
    }

    fn whole(n: Option<Number>) -> Option<Option<u64>> {
        match n {
            None => Some(None),
            Some(n) => Some(Some(n.as_u64()?)),
        }
    }

    impl<'de> Visitor<'de> for Beat {
        /// `None`: not for the fast path.
        type Value = Option<Heartbeat>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a heartbeat object")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut beat = Heartbeat::default();
            let (mut typed, mut seen) = (false, 0u16);
            while let Some(key) = map.next_key::<&str>()? {
                let Some(i) = FIELDS.iter().position(|f| *f == key) else {
                    if matches!(
                        key,
                        "resource_usage" | "current_job" | "running_tasks" | "labels"
                    ) {
                        return Ok(None);
                    }
                    map.next_value::<IgnoredAny>()?;
                    continue;
                };
                if seen & (1 << i) != 0 {
                    return Ok(None);
                }
                seen |= 1 << i;
                let ok = match key {
                    "type" => {
                        typed = map.next_value::<Option<&str>>()? == Some("heartbeat");
                        typed
                    }
                    "worker_id" => match map.next_value::<Option<&str>>()? {
                        Some(id) if check_worker_id(id).is_ok() => {
                            beat.worker_id = Some(WorkerId::from(id));
                            true
                        }
                        _ => false,
                    },
                    "status" => match map.next_value::<Option<&str>>()? {
                        None => true,
                        Some(s) => {
                            beat.status = Reported::parse(s);
                            beat.status.is_some()
                        }
                    },
                    "seq" => whole(map.next_value()?).map(|v| beat.seq = v).is_some(),
                    "queue_depth" => whole(map.next_value()?)
                        .map(|v| beat.queue_depth = v)
                        .is_some(),
                    "cpu_usage" => float(map.next_value()?, MAX_CPU_PERCENT)
                        .map(|v| beat.cpu_usage = v)
                        .is_some(),
                    "memory_usage" => float(map.next_value()?, 100.0)
                        .map(|v| beat.memory_usage = v)
                        .is_some(),
                    "gpu_usage" => float(map.next_value()?, 100.0)
                        .map(|v| beat.gpu_usage = v)
                        .is_some(),
                    // Not in FIELDS: cannot happen; the general path decides.
                    _ => false,
                };
                if !ok {
                    return Ok(None);
                }
            }
            Ok(typed.then_some(beat))
        }
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
    fn replies_are_single_json_lines() {
        for line in [
            encode_welcome("w1", 5000, 30000),
            encode_error("bad_field", "x\ny"),
        ] {
            assert_eq!(line.last(), Some(&b'\n'));
            assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
            let v: Value = serde_json::from_slice(&line).unwrap();
            assert!(v["type"].is_string());
        }
        assert!(encode_welcome("w1", 1, 2).starts_with(br#"{"type":"welcome""#));
        assert!(encode_error("x", "y").starts_with(br#"{"type":"error""#));
    }

    #[test]
    fn id_rules() {
        assert!(valid_worker_id("a"));
        assert!(valid_worker_id(&"z".repeat(128)));
        assert!(!valid_worker_id(&"z".repeat(129)));
        assert!(!valid_worker_id("é"));
        assert_eq!(check_worker_id("registry"), Err(RejectReason::ReservedId));
    }

    /// What the general path alone makes of `text`.
    fn general(text: &str) -> Option<Frame> {
        match serde_json::from_str(text) {
            Ok(Value::Object(m)) => decode_object(&m).ok(),
            _ => None,
        }
    }

    /// Generated frames around the fast path's edges: whenever it decodes
    /// one, the general path must decode the very same frame.
    #[test]
    fn the_fast_path_agrees_with_the_general_one() {
        let values: &[(&str, &[&str])] = &[
            (
                "type",
                &[
                    r#""heartbeat""#,
                    r#""hello""#,
                    "null",
                    "7",
                    r#""heart\u0062eat""#,
                ],
            ),
            (
                "worker_id",
                &[
                    r#""w-1""#,
                    r#""registry""#,
                    r#""a b""#,
                    "null",
                    "12",
                    r#""w\u002d1""#,
                ],
            ),
            (
                "seq",
                &[
                    "0",
                    "18446744073709551615",
                    "18446744073709551616",
                    "-1",
                    "1.0",
                    "1e3",
                    "null",
                    r#""1""#,
                ],
            ),
            (
                "status",
                &[
                    r#""idle""#,
                    r#""working""#,
                    r#""error""#,
                    r#""busy""#,
                    "null",
                    "1",
                ],
            ),
            (
                "cpu_usage",
                &[
                    "0", "12.5", "409600", "409600.1", "-0.0", "-1", "1e308", "null", "true",
                ],
            ),
            (
                "memory_usage",
                &["100", "100.0000001", "3", "null", r#""3""#],
            ),
            ("gpu_usage", &["0.5", "101", "null"]),
            ("queue_depth", &["0", "7", "7.5", "null", "-3"]),
            ("labels", &[r#"{"a":"b"}"#, "null", "[]"]),
            ("current_job", &["null", r#"{"id":"j1"}"#]),
            ("running_tasks", &["[]", "null"]),
            ("resource_usage", &[r#"{"rss_mb":5}"#, "null"]),
            (
                "pad",
                &[r#""xxxx""#, r#"{"deep":[1,{"x":null}]}"#, "[1,2", "tru"],
            ),
        ];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let (mut fast_taken, mut cases) = (0, 0);
        for _ in 0..20_000 {
            let mut fields = vec![r#""type":"heartbeat""#.to_string()];
            fields.push(r#""worker_id":"w-1""#.to_string());
            for _ in 0..next(8) {
                let (k, vs) = values[next(values.len())];
                fields.push(format!(r#""{k}":{}"#, vs[next(vs.len())]));
            }
            // Shuffle, and now and then drop the leading type or id.
            for i in (1..fields.len()).rev() {
                fields.swap(i, next(i + 1));
            }
            if next(10) == 0 {
                fields.remove(next(fields.len()));
            }
            let mut text = format!(
                "{{{}}}",
                fields.join(if next(4) == 0 { " , " } else { "," })
            );
            match next(20) {
                0 => text.push_str(" x"),
                1 => text.push_str("\n "),
                _ => {}
            }
            cases += 1;
            let general = general(&text);
            if let Some(beat) = fast::heartbeat(&text) {
                fast_taken += 1;
                assert_eq!(Some(Frame::Heartbeat(beat)), general, "{text}");
            }
        }
        // The generator reaches both paths.
        assert!(
            fast_taken > cases / 10,
            "fast path took {fast_taken} of {cases}"
        );
        assert!(
            fast_taken < cases * 9 / 10,
            "fast path took {fast_taken} of {cases}"
        );
    }

    #[test]
    fn a_plain_heartbeat_takes_the_fast_path() {
        let text = r#"{"type":"heartbeat","worker_id":"w1","seq":3,"status":"working","cpu_usage":12.5,"memory_usage":3.2,"queue_depth":4,"pad":"xx"}"#;
        let beat = fast::heartbeat(text).expect("fast path");
        assert_eq!(Some(Frame::Heartbeat(beat)), general(text));
    }
}
