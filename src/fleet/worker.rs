//! One worker: its state, the frames that change it, and the thread that
//! owns it.
//!
//! Only the worker's own thread mutates its state. It applies the messages
//! in its inbox in arrival order, and after each batch publishes an
//! immutable [`Snapshot`] behind an `Arc`; readers (HTTP, the sweeper) clone
//! the `Arc` under a lock held for nanoseconds and never block the worker.
//!
//! This module does not decide which workers exist (the registry does), when
//! one is silent (the sweeper asks, the worker decides against its own
//! clock), or how snapshots are rendered for an endpoint other than the
//! shared telemetry object (the API module).

use crate::clock::unix_ms;
use crate::config::reload::Live;
use crate::fleet::history::{History, Sample};
use crate::fleet::runs::RunWindow;
use crate::proto::{
    CurrentJob, Frame, Heartbeat, Hello, Labels, Reported, ResourceUsage, Run, WorkerId,
};
use serde::Serialize;
use serde_json::Value;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Frames a worker's inbox holds before UDP drops and TCP stops reading.
pub const INBOX_CAPACITY: usize = 128;
/// Least time between two wakes of a busy worker thread. Frames that arrive
/// sooner wait in the inbox and are applied together, so a worker beating
/// faster than ten times a second costs ten wakes a second, not one per
/// frame. The inbox holds [`INBOX_CAPACITY`] frames: 1,280 a second.
pub const COALESCE: Duration = Duration::from_millis(100);
/// How late a worker thread's COALESCE pause may end, so that the kernel
/// can wake many workers on one timer interrupt.
pub const TIMER_SLACK: Duration = Duration::from_millis(5);
/// Stack of a worker thread. Its work is shallow (apply a frame, clone a
/// snapshot); the kernel only backs the pages it touches.
pub const STACK_BYTES: usize = 64 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Udp,
    Tcp,
}

/// A worker's inbox: at most [`INBOX_CAPACITY`] messages wait in it.
///
/// A counted unbounded channel rather than `sync_channel`, which reserves
/// every slot up front (5 KiB a worker, idle or not); this one holds memory
/// only for the messages in it.
pub struct Inbox {
    tx: Sender<Msg>,
    depth: Arc<AtomicUsize>,
}

/// The worker thread's end of its inbox.
pub struct InboxRx {
    rx: Receiver<Msg>,
    depth: Arc<AtomicUsize>,
}

pub fn inbox() -> (Inbox, InboxRx) {
    let (tx, rx) = mpsc::channel();
    let depth = Arc::new(AtomicUsize::new(0));
    (
        Inbox {
            tx,
            depth: depth.clone(),
        },
        InboxRx { rx, depth },
    )
}

impl Inbox {
    /// Queue `msg` unless the inbox is full or its thread has ended.
    pub fn try_send(&self, msg: Msg) -> Result<(), TrySendError<Msg>> {
        if self.depth.fetch_add(1, Ordering::AcqRel) >= INBOX_CAPACITY {
            self.depth.fetch_sub(1, Ordering::AcqRel);
            return Err(TrySendError::Full(msg));
        }
        self.tx.send(msg).map_err(|e| {
            self.depth.fetch_sub(1, Ordering::AcqRel);
            TrySendError::Disconnected(e.0)
        })
    }
}

impl InboxRx {
    fn taken(&self, msg: Option<Msg>) -> Option<Msg> {
        if msg.is_some() {
            self.depth.fetch_sub(1, Ordering::AcqRel);
        }
        msg
    }

    /// The next message, waiting for one; `None` once every sender is gone.
    fn recv(&self) -> Option<Msg> {
        self.taken(self.rx.recv().ok())
    }

    /// The next message if one is queued.
    fn try_recv(&self) -> Option<Msg> {
        self.taken(self.rx.try_recv().ok())
    }
}

/// What a worker thread receives.
pub enum Msg {
    /// A decoded frame with its transport and arrival time.
    Frame(Box<Frame>, Transport, Instant),
    /// A frame naming this worker was refused: count it against the worker.
    Rejected,
    /// The sweeper thinks the worker has been silent past the timeout.
    Sweep { timeout_ms: u64 },
    /// End the thread.
    Stop,
}

/// Details a worker gave in its `hello`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct HelloInfo {
    pub pid: Option<u32>,
    pub hostname: Option<String>,
    pub capacity: Option<u32>,
}

/// Upper bounds, in seconds, of the run-duration histogram buckets.
pub const RUN_BUCKETS_S: [f64; 16] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
    3600.0,
];

/// Run outcomes since the worker was first seen.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RunCounts {
    pub total: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub sum_ms: f64,
    /// Runs per [`RUN_BUCKETS_S`] bucket (not cumulative); longer runs are
    /// counted only in `total`.
    pub buckets: [u64; RUN_BUCKETS_S.len()],
    pub last_duration_ms: Option<f64>,
    pub last_run_time: Option<u64>,
}

/// A worker's state at one instant. Immutable once published.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub id: WorkerId,
    /// What the worker last reported; `None` until its first heartbeat.
    pub reported: Option<Reported>,
    pub inactive: bool,
    pub terminated: bool,
    pub cpu_usage: Option<f64>,
    pub memory_usage: Option<f64>,
    pub gpu_usage: Option<f64>,
    pub resource_usage: Option<ResourceUsage>,
    pub queue_depth: u64,
    pub current_job: Option<Arc<CurrentJob>>,
    pub running_tasks: Arc<Vec<Value>>,
    pub labels: Arc<Labels>,
    pub hello: Option<Arc<HelloInfo>>,
    pub transport: Transport,
    /// Unix ms when the daemon first heard of the worker.
    pub created_at: u64,
    /// Unix ms of the last applied frame.
    pub last_update: u64,
    /// Monotonic time of the last applied frame: what timeouts are judged on.
    pub last_seen: Instant,
    pub messages_processed: u64,
    /// Refused frames naming this worker, plus failed runs.
    pub errors: u64,
    pub last_seq: Option<u64>,
    /// Heartbeats the daemon never received, counted from gaps in `seq`.
    pub missed_beats: u64,
    /// How many times the sweeper found the worker silent.
    pub times_inactive: u64,
    pub runs: RunCounts,
    /// The telemetry object, rendered on first use and shared by every reader.
    rendered: OnceLock<Box<str>>,
}

impl Snapshot {
    pub fn new(id: WorkerId, transport: Transport, now: Instant) -> Snapshot {
        let wall = unix_ms();
        Snapshot {
            id,
            reported: None,
            inactive: false,
            terminated: false,
            cpu_usage: None,
            memory_usage: None,
            gpu_usage: None,
            resource_usage: None,
            queue_depth: 0,
            current_job: None,
            running_tasks: Arc::new(Vec::new()),
            labels: Arc::new(Labels::new()),
            hello: None,
            transport,
            created_at: wall,
            last_update: wall,
            last_seen: now,
            messages_processed: 0,
            errors: 0,
            last_seq: None,
            missed_beats: 0,
            times_inactive: 0,
            runs: RunCounts::default(),
            rendered: OnceLock::new(),
        }
    }

    /// The status shown to people: daemon-judged states win over reported ones.
    pub fn status(&self) -> &'static str {
        if self.terminated {
            "terminated"
        } else if self.inactive {
            "inactive"
        } else {
            self.reported.map_or("created", Reported::as_str)
        }
    }

    pub fn is_active(&self) -> bool {
        !self.inactive && !self.terminated
    }

    /// Whether a `?status=` filter (a status, or `active`) keeps this worker.
    pub fn has_status(&self, filter: &str) -> bool {
        if filter == "active" {
            self.is_active()
        } else {
            self.status() == filter
        }
    }

    /// The telemetry object of `GET /telemetry/{id}`, rendered once per
    /// snapshot however many readers ask.
    pub fn telemetry_json(&self) -> &str {
        self.rendered.get_or_init(|| {
            serde_json::to_string(&Telemetry::of(self))
                .unwrap_or_else(|_| String::from("{}"))
                .into_boxed_str()
        })
    }

    /// Apply one frame that arrived at `at`.
    pub fn apply(&mut self, frame: Frame, transport: Transport, at: Instant) {
        self.messages_processed += 1;
        self.last_seen = at;
        self.last_update = unix_ms();
        self.transport = transport;
        match frame {
            Frame::Hello(h) => self.apply_hello(h),
            Frame::Heartbeat(h) => self.apply_heartbeat(h),
            Frame::Run(r) => self.apply_run(r),
            Frame::Bye { .. } => {
                self.terminated = true;
                self.inactive = false;
            }
        }
    }

    fn apply_hello(&mut self, h: Hello) {
        self.inactive = false;
        self.terminated = false;
        self.hello = Some(Arc::new(HelloInfo {
            pid: h.pid,
            hostname: h.hostname,
            capacity: h.capacity,
        }));
        if let Some(l) = h.labels {
            self.labels = Arc::new(l);
        }
        // A new session's seq starts afresh.
        self.last_seq = None;
    }

    fn apply_heartbeat(&mut self, h: Heartbeat) {
        self.inactive = false;
        self.terminated = false;
        self.reported = h.status.or(self.reported).or(Some(Reported::Idle));
        if let Some(seq) = h.seq {
            if let Some(last) = self.last_seq {
                if seq > last {
                    self.missed_beats += seq - last - 1;
                }
            }
            self.last_seq = Some(seq);
        }
        if h.cpu_usage.is_some() {
            self.cpu_usage = h.cpu_usage;
        }
        if h.memory_usage.is_some() {
            self.memory_usage = h.memory_usage;
        }
        if h.gpu_usage.is_some() {
            self.gpu_usage = h.gpu_usage;
        }
        if h.resource_usage.is_some() {
            self.resource_usage = h.resource_usage;
        }
        if let Some(q) = h.queue_depth {
            self.queue_depth = q;
        }
        if let Some(job) = h.current_job {
            self.current_job = job.map(Arc::new);
        }
        if let Some(t) = h.running_tasks {
            self.running_tasks = Arc::new(t);
        }
        if let Some(l) = h.labels {
            self.labels = Arc::new(l);
        }
    }

    fn apply_run(&mut self, r: Run) {
        self.inactive = false;
        self.runs.total += 1;
        if r.ok {
            self.runs.succeeded += 1;
        } else {
            self.runs.failed += 1;
            self.errors += 1;
        }
        self.runs.sum_ms += r.duration_ms;
        let secs = r.duration_ms / 1000.0;
        if let Some(i) = RUN_BUCKETS_S.iter().position(|&b| secs <= b) {
            self.runs.buckets[i] += 1;
        }
        self.runs.last_duration_ms = Some(r.duration_ms);
        self.runs.last_run_time = Some(self.last_update);
    }

    /// The sweeper's question, answered on the worker's own clock: a frame
    /// may have arrived since the sweeper looked.
    fn sweep(&mut self, timeout_ms: u64, now: Instant) -> bool {
        let silent = now.saturating_duration_since(self.last_seen).as_millis() as u64;
        if self.is_active() && silent >= timeout_ms {
            self.inactive = true;
            self.times_inactive += 1;
            true
        } else {
            false
        }
    }

    /// This state as a history sample.
    pub fn sample(&self) -> Sample {
        let f = |x: Option<f64>| x.map_or(f32::NAN, |v| v as f32);
        Sample {
            t: (self.last_update / 1000) as u32,
            cpu: f(self.cpu_usage),
            memory: f(self.memory_usage),
            gpu: f(self.gpu_usage),
            rss_mb: f(self.resource_usage.as_ref().and_then(|r| r.rss_mb)),
            queue: self.queue_depth.min(u32::MAX as u64) as u32,
        }
    }

    /// A copy to publish: shares every large part, re-renders lazily.
    fn publishable(&self) -> Snapshot {
        let mut s = self.clone();
        s.rendered = OnceLock::new();
        s
    }
}

/// The shared telemetry object: `GET /telemetry`'s values and the items of
/// `GET /api/workers`.
#[derive(Serialize)]
pub struct Telemetry<'a> {
    worker_id: &'a str,
    status: &'static str,
    is_active: bool,
    cpu_usage: Option<f64>,
    memory_usage: Option<f64>,
    gpu_usage: Option<f64>,
    resource_usage: Option<ResourceUsageView<'a>>,
    queue_depth: u64,
    current_job: Option<JobView<'a>>,
    running_tasks: &'a [Value],
    labels: &'a Labels,
    last_update: u64,
    messages_processed: u64,
}

impl<'a> Telemetry<'a> {
    pub fn of(s: &'a Snapshot) -> Telemetry<'a> {
        Telemetry {
            worker_id: &s.id,
            status: s.status(),
            is_active: s.is_active(),
            cpu_usage: s.cpu_usage,
            memory_usage: s.memory_usage,
            gpu_usage: s.gpu_usage,
            resource_usage: s.resource_usage.as_ref().map(ResourceUsageView),
            queue_depth: s.queue_depth,
            current_job: s.current_job.as_deref().map(JobView),
            running_tasks: &s.running_tasks,
            labels: &s.labels,
            last_update: s.last_update,
            messages_processed: s.messages_processed,
        }
    }
}

/// Renders only the figures the worker sent.
pub struct ResourceUsageView<'a>(pub &'a ResourceUsage);

impl Serialize for ResourceUsageView<'_> {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let r = self.0;
        let mut m = ser.serialize_map(None)?;
        for (k, v) in [
            ("rss_mb", r.rss_mb),
            ("heap_used_mb", r.heap_used_mb),
            ("heap_total_mb", r.heap_total_mb),
            ("external_mb", r.external_mb),
            ("peak_rss_mb", r.peak_rss_mb),
        ] {
            if let Some(v) = v {
                m.serialize_entry(k, &v)?;
            }
        }
        for (k, v) in [
            ("threads", r.threads),
            ("fds", r.fds),
            ("io_read_bytes", r.io_read_bytes),
            ("io_write_bytes", r.io_write_bytes),
        ] {
            if let Some(v) = v {
                m.serialize_entry(k, &v)?;
            }
        }
        m.end()
    }
}

/// `current_job` in seed 000's shape.
pub struct JobView<'a>(pub &'a CurrentJob);

impl Serialize for JobView<'_> {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let j = self.0;
        let mut m = ser.serialize_map(None)?;
        m.serialize_entry("id", &j.id)?;
        m.serialize_entry("type", &j.kind)?;
        m.serialize_entry("files", &j.files)?;
        m.serialize_entry("started_at", &j.started_at)?;
        m.end()
    }
}

/// The shared half of a worker: its inbox and its latest snapshot.
pub struct Handle {
    pub inbox: Inbox,
    snapshot: Mutex<Arc<Snapshot>>,
    stopped: AtomicBool,
    /// The worker's run window and history: written only by its thread,
    /// copied out by readers under a brief lock. Kept out of the snapshot so
    /// that publishing one never copies them.
    extra: Mutex<Extra>,
}

#[derive(Default)]
pub struct Extra {
    pub runs: RunWindow,
    pub history: History,
}

impl Handle {
    pub fn new(inbox: Inbox, first: Snapshot) -> Handle {
        Handle {
            inbox,
            snapshot: Mutex::new(Arc::new(first)),
            stopped: AtomicBool::new(false),
            extra: Mutex::new(Extra::default()),
        }
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        match self.snapshot.lock() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn publish(&self, snap: Snapshot) {
        let snap = Arc::new(snap);
        match self.snapshot.lock() {
            Ok(mut s) => *s = snap,
            Err(poisoned) => *poisoned.into_inner() = snap,
        }
    }

    pub fn extra(&self) -> std::sync::MutexGuard<'_, Extra> {
        self.extra.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ask the thread to end. The flag is seen even when the inbox is full.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        let _ = self.inbox.try_send(Msg::Stop);
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }
}

/// Called by a worker thread after it publishes, so that subscribers can be
/// told which worker changed.
pub trait OnChange: Send + Sync {
    /// Called just before a publish, so that anyone who sees the new
    /// snapshot also sees that the fleet moved on.
    fn will_change(&self) {}
    fn changed(&self, id: &WorkerId);
}

/// Counters a worker thread reports into.
pub trait OnApplied: Send + Sync {
    fn applied(&self, frames: u64);
}

/// Put the calling thread under `SCHED_BATCH`: when woken it waits for the
/// running thread's turn to end instead of preempting it. Worker threads
/// are many and each has little to do; the ingest and HTTP threads they
/// would preempt are the ones a client is waiting on, and an ingest thread
/// preempted for each worker it wakes falls behind its socket. Its timer
/// slack is widened to [`TIMER_SLACK`] so that the kernel can serve the
/// COALESCE pauses of many workers with one timer interrupt. Neither needs
/// privilege; if refused, the thread runs as before.
fn batch_priority() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; `param` outlives the call.
    let _ = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
    // SAFETY: PR_SET_TIMERSLACK takes a value and touches no memory.
    let _ = unsafe {
        libc::prctl(
            libc::PR_SET_TIMERSLACK,
            TIMER_SLACK.as_nanos() as libc::c_ulong,
        )
    };
}

/// The body of a worker thread: apply messages in order until stopped.
/// Publishes once per batch: everything already queued is applied first.
pub fn run(
    handle: Arc<Handle>,
    inbox: InboxRx,
    on_change: Arc<dyn OnChange>,
    on_applied: Arc<dyn OnApplied>,
    live: Arc<Live>,
) {
    batch_priority();
    let mut state = handle.snapshot().as_ref().publishable();
    let mut next = inbox.recv();
    let mut woke = Instant::now();
    // Paced: this worker beats faster than COALESCE, so its thread wakes on
    // a timer once per COALESCE and takes what gathered, instead of being
    // woken by the ingest thread for each frame.
    let mut paced = false;
    while let Some(msg) = next.take() {
        let mut changed = false;
        let mut frames = 0;
        let mut batch = 0;
        let mut msg = Some(msg);
        while let Some(m) = msg.take() {
            batch += 1;
            match m {
                Msg::Stop => return,
                Msg::Frame(frame, transport, at) => {
                    let run = match &*frame {
                        Frame::Run(r) => Some((r.duration_ms, r.ok)),
                        _ => None,
                    };
                    let beat = matches!(&*frame, Frame::Heartbeat(_));
                    state.apply(*frame, transport, at);
                    if let Some((duration_ms, ok)) = run {
                        let at_ms = state.last_update;
                        handle.extra().runs.record(crate::fleet::runs::Run {
                            at_ms,
                            duration_ms: duration_ms as f32,
                            ok,
                        });
                    } else if beat {
                        handle
                            .extra()
                            .history
                            .push(state.sample(), live.history_samples());
                    }
                    frames += 1;
                    changed = true;
                }
                Msg::Rejected => {
                    state.errors += 1;
                    changed = true;
                }
                Msg::Sweep { timeout_ms } => changed |= state.sweep(timeout_ms, Instant::now()),
            }
            if handle.is_stopped() {
                return;
            }
            msg = inbox.try_recv();
        }
        if frames > 0 {
            on_applied.applied(frames);
        }
        if changed {
            on_change.will_change();
            handle.publish(state.publishable());
            on_change.changed(&state.id);
        }
        // A paced worker lets its frames gather until COALESCE after its
        // last wake: every wake by the ingest thread costs that thread a
        // syscall and a context switch. A batch that half fills the inbox
        // means the worker is behind: no pause then, or a flood would be
        // capped at the inbox per period.
        if paced && batch < INBOX_CAPACITY / 2 {
            std::thread::sleep(COALESCE.saturating_sub(woke.elapsed()));
        }
        next = inbox.try_recv();
        if next.is_some() {
            // Frames came while applying or pausing: stay on the cadence.
            woke = Instant::now();
            continue;
        }
        // Nothing waiting: sleep until the next frame. Woken again within
        // COALESCE of the last wake, the worker is chatty and goes paced;
        // frames further apart are applied the moment they arrive.
        next = inbox.recv();
        let now = Instant::now();
        paced = now.duration_since(woke) < COALESCE;
        woke = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::decode;
    use std::time::Duration;

    fn frame(json: &str) -> Frame {
        decode(json.as_bytes(), 65536).unwrap()
    }

    fn fresh() -> Snapshot {
        Snapshot::new("w1".into(), Transport::Udp, Instant::now())
    }

    #[test]
    fn status_model() {
        let mut s = fresh();
        assert_eq!(s.status(), "created");
        s.apply(
            frame(r#"{"type":"heartbeat","worker_id":"w1"}"#),
            Transport::Udp,
            Instant::now(),
        );
        assert_eq!(s.status(), "idle");
        s.apply(
            frame(r#"{"type":"heartbeat","worker_id":"w1","status":"working"}"#),
            Transport::Udp,
            Instant::now(),
        );
        assert_eq!(s.status(), "working");
        assert!(s.sweep(0, Instant::now() + Duration::from_millis(1)));
        assert_eq!(s.status(), "inactive");
        assert!(!s.is_active());
        assert!(!s.sweep(0, Instant::now()), "already inactive");
        s.apply(
            frame(r#"{"type":"heartbeat","worker_id":"w1"}"#),
            Transport::Udp,
            Instant::now(),
        );
        assert_eq!(s.status(), "working", "back to the reported status");
        s.apply(
            frame(r#"{"type":"bye","worker_id":"w1"}"#),
            Transport::Udp,
            Instant::now(),
        );
        assert_eq!(s.status(), "terminated");
        assert_eq!(s.times_inactive, 1);
        assert_eq!(s.messages_processed, 4);
    }

    #[test]
    fn sweep_spares_a_worker_heard_from_since() {
        let mut s = fresh();
        let later = s.last_seen + Duration::from_secs(10);
        s.last_seen = later;
        assert!(!s.sweep(30_000, later + Duration::from_secs(29)));
        assert!(s.sweep(30_000, later + Duration::from_secs(30)));
    }

    #[test]
    fn seq_gaps_count_missed_beats() {
        let mut s = fresh();
        for seq in [1, 2, 5, 6, 3, 4] {
            let f = frame(&format!(
                r#"{{"type":"heartbeat","worker_id":"w1","seq":{seq}}}"#
            ));
            s.apply(f, Transport::Udp, Instant::now());
        }
        // 2 -> 5 misses 3 and 4; going back to 3 is a restart, not a gap.
        assert_eq!(s.missed_beats, 2);
    }

    #[test]
    fn partial_heartbeats_keep_other_fields() {
        let mut s = fresh();
        s.apply(
            frame(r#"{"type":"heartbeat","worker_id":"w1","cpu_usage":5,"queue_depth":3,"current_job":{"id":"j"}}"#),
            Transport::Udp,
            Instant::now(),
        );
        s.apply(
            frame(r#"{"type":"heartbeat","worker_id":"w1","memory_usage":7}"#),
            Transport::Udp,
            Instant::now(),
        );
        assert_eq!(
            (s.cpu_usage, s.memory_usage, s.queue_depth),
            (Some(5.0), Some(7.0), 3)
        );
        assert!(s.current_job.is_some());
        s.apply(
            frame(r#"{"type":"heartbeat","worker_id":"w1","current_job":null}"#),
            Transport::Udp,
            Instant::now(),
        );
        assert!(s.current_job.is_none());
    }

    #[test]
    fn runs_count_outcomes() {
        let mut s = fresh();
        for ok in [true, false, true] {
            let f = frame(&format!(
                r#"{{"type":"run","worker_id":"w1","duration_ms":12,"ok":{ok}}}"#
            ));
            s.apply(f, Transport::Udp, Instant::now());
        }
        assert_eq!((s.runs.total, s.runs.succeeded, s.runs.failed), (3, 2, 1));
        assert_eq!(s.errors, 1);
    }

    #[test]
    fn telemetry_renders_the_contract_fields() {
        let mut s = fresh();
        s.apply(
            frame(r#"{"type":"heartbeat","worker_id":"w1","cpu_usage":12.5,"resource_usage":{"rss_mb":3},"labels":{"pool":"scan"}}"#),
            Transport::Udp,
            Instant::now(),
        );
        let v: Value = serde_json::from_str(s.telemetry_json()).unwrap();
        for key in [
            "worker_id",
            "status",
            "is_active",
            "cpu_usage",
            "memory_usage",
            "gpu_usage",
            "resource_usage",
            "queue_depth",
            "current_job",
            "running_tasks",
            "labels",
            "last_update",
            "messages_processed",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        assert_eq!(v["cpu_usage"], 12.5);
        assert_eq!(v["gpu_usage"], Value::Null, "never a made-up 0");
        assert_eq!(v["resource_usage"], serde_json::json!({"rss_mb": 3.0}));
        assert_eq!(v["labels"]["pool"], "scan");
    }

    struct Quiet;
    impl OnChange for Quiet {
        fn changed(&self, _: &WorkerId) {}
    }
    impl OnApplied for Quiet {
        fn applied(&self, _: u64) {}
    }

    #[test]
    fn inbox_holds_at_most_its_capacity() {
        let (tx, rx) = inbox();
        for _ in 0..INBOX_CAPACITY {
            assert!(tx.try_send(Msg::Rejected).is_ok());
        }
        assert!(matches!(
            tx.try_send(Msg::Rejected),
            Err(TrySendError::Full(_))
        ));
        assert!(rx.try_recv().is_some());
        assert!(
            tx.try_send(Msg::Rejected).is_ok(),
            "room again after a take"
        );
        assert!(matches!(
            tx.try_send(Msg::Rejected),
            Err(TrySendError::Full(_))
        ));
        drop(rx);
        let (tx, rx) = inbox();
        drop(rx);
        assert!(matches!(
            tx.try_send(Msg::Stop),
            Err(TrySendError::Disconnected(_))
        ));
        assert!(
            tx.try_send(Msg::Stop).is_err(),
            "a refused send takes no room"
        );
        assert_eq!(tx.depth.load(Ordering::Relaxed), 0);
    }

    /// A worker thread reporting its publishes to `on_change`.
    fn start(on_change: Arc<dyn OnChange>) -> (Arc<Handle>, std::thread::JoinHandle<()>) {
        let (tx, rx) = inbox();
        let handle = Arc::new(Handle::new(tx, fresh()));
        let h = handle.clone();
        let live = Arc::new(Live::new(&crate::config::defaults(), 10));
        let t = std::thread::spawn(move || run(h, rx, on_change, Arc::new(Quiet), live));
        (handle, t)
    }

    #[test]
    fn thread_applies_in_order_and_stops() {
        let (handle, t) = start(Arc::new(Quiet));
        for seq in 1..=50u64 {
            let f = frame(&format!(
                r#"{{"type":"heartbeat","worker_id":"w1","seq":{seq},"queue_depth":{seq}}}"#
            ));
            handle
                .inbox
                .try_send(Msg::Frame(Box::new(f), Transport::Udp, Instant::now()))
                .unwrap_or_else(|_| panic!("room for 50"));
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while handle.snapshot().messages_processed < 50 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        let s = handle.snapshot();
        assert_eq!(
            (s.messages_processed, s.queue_depth, s.missed_beats),
            (50, 50, 0)
        );
        handle.stop();
        t.join().unwrap();
    }

    /// Counts publishes.
    struct Publishes(AtomicUsize);
    impl OnChange for Publishes {
        fn changed(&self, _: &WorkerId) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn a_chatty_worker_is_applied_on_a_cadence_and_a_quiet_one_by_itself() {
        let publishes = Arc::new(Publishes(AtomicUsize::new(0)));
        let (handle, t) = start(publishes.clone());
        let beat = |seq: u64| {
            let f = frame(&format!(
                r#"{{"type":"heartbeat","worker_id":"w1","seq":{seq}}}"#
            ));
            handle
                .inbox
                .try_send(Msg::Frame(Box::new(f), Transport::Udp, Instant::now()))
                .unwrap_or_else(|_| panic!("inbox full at seq {seq}"));
        };
        let applied = |n: u64| {
            let deadline = Instant::now() + Duration::from_secs(5);
            while handle.snapshot().messages_processed < n && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            handle.snapshot().messages_processed
        };
        // 500 frames 2 ms apart: a wake for each would be 500 publishes; on
        // a COALESCE cadence it is one per COALESCE and the first two.
        let start = Instant::now();
        for seq in 1..=500u64 {
            beat(seq);
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(applied(500), 500);
        let periods = (start.elapsed().as_millis() / COALESCE.as_millis()) as usize;
        let chatty = publishes.0.load(Ordering::Relaxed);
        assert!(
            (2..=periods + 3).contains(&chatty),
            "{chatty} publishes for 500 frames in {periods} periods"
        );
        // Quiet again: the next frame is applied and published by itself.
        std::thread::sleep(COALESCE * 3);
        let before = publishes.0.load(Ordering::Relaxed);
        beat(501);
        assert_eq!(applied(501), 501);
        assert_eq!(publishes.0.load(Ordering::Relaxed), before + 1);
        handle.stop();
        t.join().unwrap();
    }
}
