//! The frames a worker sends, as types: `hello`, `heartbeat`, `run`, `bye`.
//! [`super::decode`] builds them from bytes; [`super::encode`] writes them.
//! Their bounds (`MAX_*`) are what decoding enforces, so a decoded frame's
//! in-memory size is a small multiple of its wire size.

use super::id::WorkerId;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

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

/// Label map, ordered so that rendering is stable.
pub type Labels = BTreeMap<String, String>;

/// The status a worker reports about itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
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

/// `resource_usage` as workers report it (`rss_mb`, `heap_used_mb`, …);
/// every figure is in MB.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourceUsage {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_mb: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heap_used_mb: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heap_total_mb: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_mb: Option<f64>,
    /// What `muster agent` adds: peak RSS, threads, open descriptors and
    /// storage I/O of the process tree.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_rss_mb: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threads: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fds: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub io_read_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub io_write_bytes: Option<u64>,
}

impl ResourceUsage {
    /// Nothing reported: shown as `{}`, so a reader of
    /// `resource_usage.rss_mb` gets `undefined`, never a `TypeError`.
    pub const NONE: ResourceUsage = ResourceUsage {
        rss_mb: None,
        heap_used_mb: None,
        heap_total_mb: None,
        external_mb: None,
        peak_rss_mb: None,
        threads: None,
        fds: None,
        io_read_bytes: None,
        io_write_bytes: None,
    };
}

/// `current_job`: what the worker is busy with.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CurrentJob {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Hello {
    pub worker_id: WorkerId,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capacity: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<Labels>,
    /// The task types this worker takes (with `capacity`); absent: any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_types: Option<Vec<String>>,
    /// The heartbeat token, when the daemon asks for one; never stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// After a reconnect: the tasks the worker still runs, with the lease
    /// tokens they were given (cluster mode adopts them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub running: Option<Vec<super::task::Held>>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Heartbeat {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<WorkerId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Reported>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_usage: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_usage: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu_usage: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_usage: Option<ResourceUsage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_depth: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_job: Option<Option<CurrentJob>>,
    /// Each entry is a JSON object, kept as sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub running_tasks: Option<Vec<Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<Labels>,
    /// The heartbeat token, when the daemon asks for one; never stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl Heartbeat {
    /// Fold a later heartbeat into this one: each field it carries
    /// overwrites, as applying both in turn would leave the state.
    pub fn merge(&mut self, later: Heartbeat) {
        fn take<T>(into: &mut Option<T>, from: Option<T>) {
            if from.is_some() {
                *into = from;
            }
        }
        let Heartbeat {
            worker_id,
            seq,
            status,
            cpu_usage,
            memory_usage,
            gpu_usage,
            resource_usage,
            queue_depth,
            current_job,
            running_tasks,
            labels,
            token,
        } = later;
        take(&mut self.worker_id, worker_id);
        take(&mut self.seq, seq);
        take(&mut self.status, status);
        take(&mut self.cpu_usage, cpu_usage);
        take(&mut self.memory_usage, memory_usage);
        take(&mut self.gpu_usage, gpu_usage);
        take(&mut self.resource_usage, resource_usage);
        take(&mut self.queue_depth, queue_depth);
        take(&mut self.current_job, current_job);
        take(&mut self.running_tasks, running_tasks);
        take(&mut self.labels, labels);
        take(&mut self.token, token);
    }

    /// What the heartbeat says but for its `seq` and token, as a hash:
    /// a beat with the fingerprint of the one before it, and the next
    /// `seq`, moves nothing a reader sees but the time it was heard
    /// (the inbox lets such beats wait; see `fleet::inbox`). `None` for
    /// a beat that lists running tasks, which are kept as sent and not
    /// hashed. Every field is named, so one added here must be added
    /// to it.
    pub fn fingerprint(&self) -> Option<u64> {
        use std::hash::{Hash, Hasher};
        let Heartbeat {
            worker_id,
            seq: _,
            status,
            cpu_usage,
            memory_usage,
            gpu_usage,
            resource_usage,
            queue_depth,
            current_job,
            running_tasks,
            labels,
            token: _,
        } = self;
        if running_tasks.is_some() {
            return None;
        }
        let bits = |x: &Option<f64>| x.map(f64::to_bits);
        let mut h = std::hash::DefaultHasher::new();
        worker_id.hash(&mut h);
        status.map(Reported::as_str).hash(&mut h);
        (bits(cpu_usage), bits(memory_usage), bits(gpu_usage)).hash(&mut h);
        queue_depth.hash(&mut h);
        resource_usage
            .as_ref()
            .map(|r| {
                let ResourceUsage {
                    rss_mb,
                    heap_used_mb,
                    heap_total_mb,
                    external_mb,
                    peak_rss_mb,
                    threads,
                    fds,
                    io_read_bytes,
                    io_write_bytes,
                } = r;
                (
                    [
                        rss_mb,
                        heap_used_mb,
                        heap_total_mb,
                        external_mb,
                        peak_rss_mb,
                    ]
                    .map(bits),
                    [threads, fds, io_read_bytes, io_write_bytes],
                )
            })
            .hash(&mut h);
        current_job
            .as_ref()
            .map(|j| {
                j.as_ref().map(|j| {
                    let CurrentJob {
                        id,
                        kind,
                        files,
                        started_at,
                    } = j;
                    (id, kind, files, started_at)
                })
            })
            .hash(&mut h);
        labels.hash(&mut h);
        Some(h.finish())
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Run {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<WorkerId>,
    pub duration_ms: f64,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// The heartbeat token, when the daemon asks for one; never stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

// Heartbeats dominate the traffic and are the large variant; frames are
// boxed whole when queued, so boxing the variant would only add a second
// allocation per frame.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Frame {
    Hello(Hello),
    Heartbeat(Heartbeat),
    Run(Run),
    Bye {
        #[serde(skip_serializing_if = "Option::is_none")]
        worker_id: Option<WorkerId>,
        #[serde(skip_serializing_if = "Option::is_none")]
        token: Option<String>,
    },
    /// TCP only: about a task the worker holds.
    #[serde(rename = "task_update")]
    TaskUpdate(super::task::TaskUpdate),
    #[serde(rename = "task_log")]
    TaskLog(super::task::TaskLog),
    #[serde(rename = "task_progress")]
    TaskProgress(super::task::TaskProgress),
}

impl Frame {
    /// The id the frame names, if any (a TCP frame after `hello` may omit it).
    pub fn worker_id(&self) -> Option<&WorkerId> {
        match self {
            Frame::Hello(h) => Some(&h.worker_id),
            Frame::Heartbeat(h) => h.worker_id.as_ref(),
            Frame::Run(r) => r.worker_id.as_ref(),
            Frame::Bye { worker_id, .. } => worker_id.as_ref(),
            Frame::TaskUpdate(_) | Frame::TaskLog(_) | Frame::TaskProgress(_) => None,
        }
    }

    /// Set the heartbeat token a client sends.
    pub fn set_token(&mut self, t: Option<String>) {
        match self {
            Frame::Hello(h) => h.token = t,
            Frame::Heartbeat(h) => h.token = t,
            Frame::Run(r) => r.token = t,
            Frame::Bye { token, .. } => *token = t,
            Frame::TaskUpdate(_) | Frame::TaskLog(_) | Frame::TaskProgress(_) => {}
        }
    }

    /// The heartbeat token the frame carries, if any.
    pub fn token(&self) -> Option<&str> {
        match self {
            Frame::Hello(h) => h.token.as_deref(),
            Frame::Heartbeat(h) => h.token.as_deref(),
            Frame::Run(r) => r.token.as_deref(),
            Frame::Bye { token, .. } => token.as_deref(),
            Frame::TaskUpdate(_) | Frame::TaskLog(_) | Frame::TaskProgress(_) => None,
        }
    }

    /// Fill in the id from the connection's `hello` when the frame left it out.
    pub fn set_worker_id(&mut self, id: WorkerId) {
        match self {
            Frame::Hello(h) => h.worker_id = id,
            Frame::Heartbeat(h) => h.worker_id = Some(id),
            Frame::Run(r) => r.worker_id = Some(id),
            Frame::Bye { worker_id, .. } => *worker_id = Some(id),
            Frame::TaskUpdate(_) | Frame::TaskLog(_) | Frame::TaskProgress(_) => {}
        }
    }
}
