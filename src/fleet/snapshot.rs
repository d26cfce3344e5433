//! A worker's state at one instant, and the status model: how frames and
//! the sweeper's question change it. Pure: frames and clocks in, state out;
//! the worker's thread owns the one copy that changes and publishes
//! immutable clones.

use super::history::Sample;
use super::inbox::RunEvent;
use crate::clock::unix_ms;
use crate::proto::{
    CurrentJob, Frame, Heartbeat, Hello, Labels, Reported, ResourceUsage, Status, StatusFilter,
    WorkerId,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

/// Details a worker gave in its `hello`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
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
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
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

/// The interval a snapshot assumes until its thread says otherwise.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
/// A gap in `seq` of up to this many beats is believed whatever the time.
const SEQ_SLACK: u64 = 64;

/// When the last `seq` arrived, and the shortest time per step seen.
#[derive(Clone, Copy, Debug, Default)]
pub struct BeatClock {
    last_at: Option<Instant>,
    fastest: Option<Duration>,
}

impl BeatClock {
    /// The most beats a worker can have sent in `elapsed`: elapsed time
    /// over its interval, or over the fastest it has beaten when faster,
    /// plus [`SEQ_SLACK`].
    fn most_beats(&self, elapsed: Duration, interval: Duration) -> u64 {
        let per = self
            .fastest
            .map_or(interval, |f| f.min(interval))
            .max(Duration::from_micros(1));
        (elapsed.as_nanos() / per.as_nanos()).min(u64::MAX as u128) as u64 + SEQ_SLACK
    }
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
    /// Times `seq` went back: the worker restarted its count.
    pub seq_restarts: u64,
    /// Times `seq` leapt further ahead than the time since the last beat
    /// allows: not counted as missed beats.
    pub seq_jumps: u64,
    /// When the last heartbeat with a `seq` arrived, and the shortest time
    /// per `seq` step seen from this worker: what bounds a gap.
    pub(super) beat_clock: BeatClock,
    /// The interval the worker is held to (`heartbeat_interval`), set by
    /// its thread from the running configuration.
    pub(super) interval: Duration,
    /// How many times the sweeper found the worker silent.
    pub times_inactive: u64,
    pub runs: RunCounts,
    /// Restored from `state_dir` at start and not heard from since.
    pub restored: bool,
    /// In cluster mode, the node that holds the worker's session (this one
    /// for a local worker); `None` on a single node.
    pub node: Option<Arc<str>>,
    /// A worker of another node, as that node last wrote it.
    pub remote: bool,
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
            seq_restarts: 0,
            seq_jumps: 0,
            beat_clock: BeatClock::default(),
            interval: DEFAULT_INTERVAL,
            times_inactive: 0,
            runs: RunCounts::default(),
            restored: false,
            node: None,
            remote: false,
            rendered: OnceLock::new(),
        }
    }

    /// `resource_usage` as every view shows it: empty until reported.
    pub fn usage(&self) -> &ResourceUsage {
        self.resource_usage.as_ref().unwrap_or(&ResourceUsage::NONE)
    }

    /// The status shown to people: daemon-judged states win over reported ones.
    pub fn status(&self) -> Status {
        if self.terminated {
            Status::Terminated
        } else if self.inactive {
            Status::Inactive
        } else {
            Status::reported(self.reported)
        }
    }

    /// Whether the worker can be shown: its thread has applied a frame, it
    /// was restored, or it came over TCP. A datagram is acknowledged by
    /// nothing, so until its thread applies it the worker exists only for
    /// those who deliver to it, and no reader sees an empty `created`
    /// worker for the heartbeat it just sent. A TCP worker is created by
    /// its `hello` and told `welcome` at once: from then on it exists, for
    /// its own `muster beat --tcp` as for everyone (its hello's fields
    /// follow when its thread applies it).
    pub fn is_shown(&self) -> bool {
        self.messages_processed > 0 || self.restored || self.transport == Transport::Tcp
    }

    pub fn is_active(&self) -> bool {
        !self.inactive && !self.terminated
    }

    /// Whether a `?status=` filter keeps this worker.
    pub fn has_status(&self, filter: StatusFilter) -> bool {
        filter.keeps(self.status())
    }

    /// The telemetry object of `GET /telemetry/{id}`, rendered once per
    /// snapshot however many readers ask.
    pub fn telemetry_json(&self) -> &str {
        self.rendered.get_or_init(|| {
            serde_json::to_string(&super::telemetry::Telemetry::of(self))
                .unwrap_or_else(|_| String::from("{}"))
                .into_boxed_str()
        })
    }

    /// Whether the telemetry object was rendered already.
    #[cfg(test)]
    pub fn is_rendered(&self) -> bool {
        self.rendered.get().is_some()
    }

    /// Apply one frame that arrived at `at`.
    pub fn apply(&mut self, frame: Frame, transport: Transport, at: Instant) {
        self.apply_n(frame, transport, at, 1);
    }

    /// Apply a frame that stands for `n` received frames: heartbeats merged
    /// into one while the worker's inbox was full.
    pub fn apply_n(&mut self, frame: Frame, transport: Transport, at: Instant, n: u32) {
        self.touch(transport, at, n);
        match frame {
            Frame::Hello(h) => self.apply_hello(h),
            Frame::Heartbeat(h) => self.apply_heartbeat(h, at, n),
            Frame::Run(r) => self.apply_run(r.duration_ms, r.ok),
            Frame::Bye { .. } => {
                self.terminated = true;
                self.inactive = false;
            }
            // Handled by the task book; here they only say the worker lives.
            Frame::TaskUpdate(_) | Frame::TaskLog(_) | Frame::TaskProgress(_) => {}
        }
    }

    /// A `run` as it waited in the inbox.
    pub fn apply_run_event(&mut self, run: RunEvent, transport: Transport, at: Instant) {
        self.touch(transport, at, 1);
        self.apply_run(run.duration_ms, run.ok);
    }

    fn touch(&mut self, transport: Transport, at: Instant, n: u32) {
        self.messages_processed += u64::from(n);
        self.restored = false;
        self.last_seen = at;
        // When it arrived, on the wall clock: a quiet beat is applied
        // after it waited in the inbox.
        self.last_update = unix_ms().saturating_sub(at.elapsed().as_millis() as u64);
        self.transport = transport;
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
        self.beat_clock = BeatClock::default();
    }

    /// Count the beats a `seq` says were missed. Arithmetic that cannot
    /// overflow: a seq lower than the last is the worker counting afresh,
    /// and a gap larger than the time since the last beat allows is a jump
    /// (a worker's bug or a forged frame), counted as such and not as
    /// missed beats, so `missed_beats` stays bounded by the time a worker
    /// has been silent.
    fn count_seq(&mut self, seq: u64, at: Instant, n: u32) {
        let clock = self.beat_clock;
        self.beat_clock.last_at = Some(at);
        let Some(last) = self.last_seq.replace(seq) else {
            return;
        };
        if seq < last {
            self.seq_restarts = self.seq_restarts.saturating_add(1);
            return;
        }
        let steps = seq - last;
        if steps == 0 {
            return;
        }
        let elapsed = clock
            .last_at
            .map_or(Duration::ZERO, |t| at.saturating_duration_since(t));
        // The beats merged into this one arrived: not missed.
        let gap = (steps - 1).saturating_sub(u64::from(n) - 1);
        if gap > clock.most_beats(elapsed, self.interval) {
            self.seq_jumps = self.seq_jumps.saturating_add(1);
            return;
        }
        self.missed_beats = self.missed_beats.saturating_add(gap);
        let per = elapsed / (steps.min(u32::MAX as u64) as u32);
        if clock.last_at.is_some() {
            self.beat_clock.fastest = Some(clock.fastest.map_or(per, |f| f.min(per)));
        }
    }

    /// `n`: how many heartbeats this one stands for (see [`Self::apply_n`]).
    fn apply_heartbeat(&mut self, h: Heartbeat, at: Instant, n: u32) {
        self.inactive = false;
        self.terminated = false;
        self.reported = h.status.or(self.reported).or(Some(Reported::Idle));
        if let Some(seq) = h.seq {
            self.count_seq(seq, at, n);
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
        // The shared parts are replaced only when the beat changed them: a
        // beat that repeats its job, tasks or labels keeps the ones the
        // published snapshots already share.
        if let Some(job) = h.current_job {
            if self.current_job.as_deref() != job.as_ref() {
                self.current_job = job.map(Arc::new);
            }
        }
        if let Some(t) = h.running_tasks {
            if *self.running_tasks != t {
                self.running_tasks = Arc::new(t);
            }
        }
        if let Some(l) = h.labels {
            if *self.labels != l {
                self.labels = Arc::new(l);
            }
        }
    }

    fn apply_run(&mut self, duration_ms: f64, ok: bool) {
        self.inactive = false;
        self.runs.total += 1;
        if ok {
            self.runs.succeeded += 1;
        } else {
            self.runs.failed += 1;
            self.errors += 1;
        }
        self.runs.sum_ms += duration_ms;
        let secs = duration_ms / 1000.0;
        if let Some(i) = RUN_BUCKETS_S.iter().position(|&b| secs <= b) {
            self.runs.buckets[i] += 1;
        }
        self.runs.last_duration_ms = Some(duration_ms);
        self.runs.last_run_time = Some(self.last_update);
    }

    /// The sweeper's question, answered on the worker's own clock: a frame
    /// may have arrived since the sweeper looked.
    pub(super) fn sweep(&mut self, timeout_ms: u64, now: Instant) -> bool {
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
    pub(super) fn publishable(&self) -> Snapshot {
        let mut s = self.clone();
        s.rendered = OnceLock::new();
        s
    }

    /// A copy that reads as lost: the node that held the worker's session
    /// is gone, so it is inactive, unless it had said bye.
    pub fn as_lost(&self) -> Snapshot {
        let mut s = self.publishable();
        if !s.terminated {
            s.inactive = true;
        }
        s
    }

    /// [`Self::publishable`], built on the heap: the worker thread's stack
    /// never holds a second snapshot.
    #[inline(never)]
    pub(super) fn published(&self) -> Arc<Snapshot> {
        let mut a = Arc::new(self.clone());
        if let Some(s) = Arc::get_mut(&mut a) {
            s.rendered = OnceLock::new();
        }
        a
    }
}

/// Helpers for the tests of every module that handles snapshots.
#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::proto::decode;
    use std::time::Duration;

    pub(crate) fn frame(json: &str) -> Frame {
        decode(json.as_bytes(), 65536).unwrap()
    }

    /// Worker `w1`, just created.
    pub(crate) fn fresh() -> Snapshot {
        Snapshot::new("w1".into(), Transport::Udp, Instant::now())
    }

    /// A published snapshot of worker `id` with this queue depth.
    pub(crate) fn queued(id: &str, queue: u64) -> Arc<Snapshot> {
        let mut s = Snapshot::new(id.into(), Transport::Udp, Instant::now());
        s.queue_depth = queue;
        Arc::new(s)
    }

    #[test]
    fn status_model() {
        let mut s = fresh();
        assert_eq!(s.status().as_str(), "created");
        s.apply(
            frame(r#"{"type":"heartbeat","worker_id":"w1"}"#),
            Transport::Udp,
            Instant::now(),
        );
        assert_eq!(s.status().as_str(), "idle");
        s.apply(
            frame(r#"{"type":"heartbeat","worker_id":"w1","status":"working"}"#),
            Transport::Udp,
            Instant::now(),
        );
        assert_eq!(s.status().as_str(), "working");
        assert!(s.sweep(0, Instant::now() + Duration::from_millis(1)));
        assert_eq!(s.status().as_str(), "inactive");
        assert!(!s.is_active());
        assert!(!s.sweep(0, Instant::now()), "already inactive");
        s.apply(
            frame(r#"{"type":"heartbeat","worker_id":"w1"}"#),
            Transport::Udp,
            Instant::now(),
        );
        assert_eq!(
            s.status().as_str(),
            "working",
            "back to the reported status"
        );
        s.apply(
            frame(r#"{"type":"bye","worker_id":"w1"}"#),
            Transport::Udp,
            Instant::now(),
        );
        assert_eq!(s.status().as_str(), "terminated");
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
    fn a_seq_jump_is_not_missed_beats_and_a_lower_seq_is_a_restart() {
        let mut s = fresh();
        let t0 = Instant::now();
        let beat = |s: &mut Snapshot, seq: u64, at: Duration| {
            let f = frame(&format!(
                r#"{{"type":"heartbeat","worker_id":"w1","seq":{seq}}}"#
            ));
            s.apply(f, Transport::Udp, t0 + at);
        };
        for (i, seq) in [0, u64::MAX, 0, 5, 3].into_iter().enumerate() {
            beat(&mut s, seq, Duration::from_millis(5 * i as u64));
        }
        assert_eq!(
            s.missed_beats, 4,
            "0 -> 5 misses four; the leap to 2^64-1 none"
        );
        assert_eq!(s.seq_jumps, 1);
        assert_eq!(s.seq_restarts, 2);
        assert_eq!(s.last_seq, Some(3));
        // Silent for an hour at a 5 s interval: 720 beats may be missed,
        // and are; ten times that is a jump.
        let mut s = fresh();
        beat(&mut s, 1, Duration::ZERO);
        beat(&mut s, 722, Duration::from_secs(3600));
        assert_eq!((s.missed_beats, s.seq_jumps), (720, 0));
        beat(&mut s, 722 + 7300, Duration::from_secs(7200));
        assert_eq!((s.missed_beats, s.seq_jumps), (720, 1));
        // A worker that beats every 10 ms, faster than its interval, is
        // judged by its own pace: 100 lost in a second are missed beats.
        let mut s = fresh();
        for seq in 1..=10u64 {
            beat(&mut s, seq, Duration::from_millis(10 * seq));
        }
        beat(&mut s, 111, Duration::from_millis(1110));
        assert_eq!((s.missed_beats, s.seq_jumps), (100, 0));
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

    /// Across the shared parts (labels, job, running tasks): a beat that
    /// repeats one keeps the very part published snapshots share, a beat
    /// that changes it replaces it, and a beat without it keeps it.
    #[test]
    fn shared_parts_are_reused_while_unchanged_and_replaced_when_changed() {
        let mut s = fresh();
        let full = |job: &str, zone: &str| {
            frame(&format!(
                r#"{{"type":"heartbeat","worker_id":"w1","current_job":{{"id":"{job}","type":"scan"}},"running_tasks":[{{"task_id":"t1"}}],"labels":{{"pool":"scan","zone":"{zone}"}}}}"#
            ))
        };
        s.apply(full("j1", "eu-1"), Transport::Udp, Instant::now());
        let published = s.published();
        s.apply(full("j1", "eu-1"), Transport::Udp, Instant::now());
        assert!(Arc::ptr_eq(&s.labels, &published.labels));
        assert!(Arc::ptr_eq(
            s.current_job.as_ref().unwrap(),
            published.current_job.as_ref().unwrap()
        ));
        assert!(Arc::ptr_eq(&s.running_tasks, &published.running_tasks));
        s.apply(full("j2", "eu-2"), Transport::Udp, Instant::now());
        assert_eq!(s.labels["zone"], "eu-2");
        assert_eq!(s.current_job.as_ref().unwrap().id.as_deref(), Some("j2"));
        assert_eq!(published.labels["zone"], "eu-1", "what was published stays");
        assert!(Arc::ptr_eq(&s.running_tasks, &published.running_tasks));
        let before = s.labels.clone();
        s.apply(
            frame(r#"{"type":"heartbeat","worker_id":"w1","cpu_usage":1}"#),
            Transport::Udp,
            Instant::now(),
        );
        assert!(Arc::ptr_eq(&s.labels, &before), "absent: kept");
        assert_eq!(s.current_job.as_ref().unwrap().id.as_deref(), Some("j2"));
        assert_eq!(s.running_tasks.len(), 1);
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
}
