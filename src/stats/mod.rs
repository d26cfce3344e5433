//! Daemon-wide counters: what arrived, what was refused and why, what was
//! dropped and why, what the connections did. Every bound in the daemon that
//! throws something away counts it here, so `/health` and `/metrics` can
//! tell the truth.
//!
//! One table, [`COUNTERS`], names each counter once: where it sits in
//! `/health` and which Prometheus family carries it. `/health`, `/metrics`
//! and systemd's `STATUS=` line walk it; none lists counters of its own.
//! Refusals and drops are counted by reason, and HTTP responses by status
//! class, in arrays indexed by their enums.
//!
//! Plain relaxed atomics: counters are read for display, never to
//! synchronise anything.

use crate::proto::RejectReason;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Why an accepted, valid frame was nevertheless not applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// UDP: the worker's inbox was full (its thread is behind).
    InboxFull,
    /// The daemon was shutting down.
    ShuttingDown,
    /// UDP: a `run` found `max_pending_events` waiting for its worker.
    EventsDropped,
}

impl DropReason {
    pub const ALL: [DropReason; 3] = [
        DropReason::InboxFull,
        DropReason::ShuttingDown,
        DropReason::EventsDropped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::InboxFull => "inbox_full",
            DropReason::ShuttingDown => "shutting_down",
            DropReason::EventsDropped => "events_dropped",
        }
    }
}

/// Every single-valued counter and gauge; [`COUNTERS`] describes each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Frames read off a socket (datagrams, TCP lines), valid or not.
    FramesReceived,
    /// Frames applied by a worker thread.
    FramesApplied,
    /// UDP heartbeats merged into a queued one while the inbox was full.
    HeartbeatsMerged,
    /// Worker threads running now.
    WorkerThreads,
    /// Workers evicted by the sweeper after `forget_after`.
    WorkersEvicted,
    /// UDP workers on probation (one frame, then silence) evicted to make
    /// room for a new worker while `max_workers` was reached.
    WorkersProbationEvicted,
    /// Inactive, terminated or restored-and-unheard workers, the longest
    /// silent first, forgotten to make room for a live one while
    /// `max_workers` was reached.
    WorkersDisplaced,
    /// Workers forgotten through `DELETE /api/workers/{id}`.
    WorkersDeleted,
    TcpOpen,
    TcpAccepted,
    TcpClosedIdle,
    TcpClosedSuperseded,
    TcpRefusedFull,
    /// Heartbeat TCP connections refused: their address held its share.
    TcpRefusedPerIp,
    /// Heartbeat TCP connections closed at accept: no descriptor was free.
    TcpRefusedNoFds,
    /// TLS heartbeat connections whose handshake failed (a certificate
    /// the CA did not sign, expired, or none when one is required).
    TcpTlsFailed,
    HttpOpen,
    HttpRefusedFull,
    /// HTTP connections refused: their address held its share, none idle.
    HttpRefusedPerIp,
    /// Idle HTTP connections closed to make room for a new one.
    HttpEvictedIdle,
    /// HTTP connections answered 503 at accept: no descriptor was free.
    HttpRefusedNoFds,
    WsClients,
    WsAccepted,
    WsClosedStalled,
    WsClosedPing,
    WsClosedTooBig,
    /// HTTP requests refused by the access checks (serve::access).
    HttpRefusedHost,
    HttpRefusedOrigin,
    HttpRefusedToken,
    HttpRefusedPeer,
    /// A token whose role is below what the change needs.
    HttpRefusedRole,
    /// Heartbeat peers outside `heartbeat_allow_from`: datagrams dropped,
    /// connections refused.
    UdpNotAllowed,
    TcpNotAllowed,
    /// The saved registry: saves written (of either file), saves that
    /// failed, workers restored at start, and how long the last save of
    /// each file took.
    StateSaves,
    StateSaveErrors,
    StateRestored,
    StateLastSaveMs,
    StateLastSeriesSaveMs,
    /// Cluster mode: worker rows written to the database, failed writes.
    FleetRowsWritten,
    FleetWriteErrors,
    /// Tasks (tasks/): kept now by state (gauges), and what happened.
    TasksQueued,
    TasksAssigned,
    TasksRunning,
    TasksSucceeded,
    TasksFailed,
    TasksCancelled,
    TasksTimedOut,
    TasksScheduled,
    TasksDead,
    TasksWaiting,
    TasksSubmitted,
    TasksRefused,
    TasksRequeued,
    TasksLost,
    /// Handler failures given another attempt after a backoff.
    TasksRetried,
    /// Submissions answered with the task their `Idempotency-Key` made.
    TasksRepeated,
    TasksAdopted,
    TaskUpdatesRefused,
    TaskLogLinesDropped,
    JournalBytes,
    JournalSkipped,
    JournalCut,
    /// Journal writes or syncs that failed (their submissions got 503).
    JournalErrors,
    /// Cluster mode: changes refused for a stale claim; failed transactions.
    TaskWritesStale,
    ClusterWriteErrors,
    /// The pool: members running, restarts, hung members replaced, fatal.
    PoolMembers,
    PoolRestarts,
    PoolHung,
    PoolFatal,
    PoolAutoscaled,
    /// Alerts: firing now, notifications delivered and failed (each try
    /// to each Alertmanager or webhook), state changes.
    AlertsFiring,
    AlertChanges,
    AlertsSent,
    AlertsFailed,
}

/// Prometheus type of a family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// Where a counter is exported under `/metrics`: its family, and the label
/// that tells it from the family's other members, if it shares one.
pub struct Metric {
    pub family: &'static str,
    pub kind: Kind,
    pub help: &'static str,
    pub label: Option<(&'static str, &'static str)>,
}

/// The objects of `/health` that counters sit in, in the order shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    Workers,
    Frames,
    Connections,
    Access,
    State,
    Tasks,
    Pool,
    Alerts,
}

impl Group {
    /// The groups `/health` renders from the table alone, after `workers`
    /// and `frames` (which it opens with figures of its own).
    pub const PLAIN: [Group; 6] = [
        Group::Connections,
        Group::Access,
        Group::State,
        Group::Tasks,
        Group::Pool,
        Group::Alerts,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Group::Workers => "workers",
            Group::Frames => "frames",
            Group::Connections => "connections",
            Group::Access => "access",
            Group::State => "state",
            Group::Tasks => "tasks",
            Group::Pool => "pool",
            Group::Alerts => "alerts",
        }
    }
}

pub struct Row {
    pub counter: Counter,
    /// `/health`: the object it sits in and its key there.
    pub group: Group,
    pub key: &'static str,
    pub metric: Option<Metric>,
}

mod table;

pub use per_address::PerAddress;
mod per_address;
pub use table::COUNTERS;

/// The counter families kept by reason or class, as `/metrics` names them.
pub const REJECTED_FAMILY: &str = "muster_frames_rejected_total";
pub const DROPPED_FAMILY: &str = "muster_frames_dropped_total";
pub const HTTP_FAMILY: &str = "muster_http_responses_total";
/// HTTP status classes, in the order of [`Stats::http_responses`].
pub const HTTP_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

const N: usize = Counter::AlertsFailed as usize + 1;

pub struct Stats {
    values: [AtomicU64; N],
    rejected: [AtomicU64; RejectReason::ALL.len()],
    dropped: [AtomicU64; DropReason::ALL.len()],
    http_responses: [AtomicU64; 5],
}

impl Default for Stats {
    fn default() -> Stats {
        Stats {
            values: std::array::from_fn(|_| AtomicU64::new(0)),
            rejected: Default::default(),
            dropped: Default::default(),
            http_responses: Default::default(),
        }
    }
}

impl Stats {
    pub fn get(&self, c: Counter) -> u64 {
        self.values[c as usize].load(Relaxed)
    }

    pub fn add(&self, c: Counter, n: u64) {
        self.values[c as usize].fetch_add(n, Relaxed);
    }

    pub fn incr(&self, c: Counter) {
        self.add(c, 1);
    }

    pub fn decr(&self, c: Counter) {
        self.values[c as usize].fetch_sub(1, Relaxed);
    }

    /// Set a gauge that its owner recounts (open connections).
    pub fn set(&self, c: Counter, v: u64) {
        self.values[c as usize].store(v, Relaxed);
    }

    pub fn reject(&self, reason: RejectReason) {
        self.rejected[reason.index()].fetch_add(1, Relaxed);
    }

    pub fn rejected(&self, reason: RejectReason) -> u64 {
        self.rejected[reason.index()].load(Relaxed)
    }

    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().map(|c| c.load(Relaxed)).sum()
    }

    pub fn drop_frame(&self, reason: DropReason) {
        self.drop_frames(reason, 1);
    }

    pub fn drop_frames(&self, reason: DropReason, n: u64) {
        self.dropped[reason as usize].fetch_add(n, Relaxed);
    }

    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped[reason as usize].load(Relaxed)
    }

    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().map(|c| c.load(Relaxed)).sum()
    }

    /// Count an HTTP response by its status class (1xx..5xx).
    pub fn http_response(&self, status: u16) {
        let class = (status / 100).clamp(1, 5) as usize - 1;
        self.http_responses[class].fetch_add(1, Relaxed);
    }

    /// Responses per class, in the order of [`HTTP_CLASSES`].
    pub fn http_responses(&self) -> [u64; 5] {
        std::array::from_fn(|i| self.http_responses[i].load(Relaxed))
    }

    /// Every value in [`COUNTERS`] order, then the by-reason arrays: cheap
    /// to take and compare, so a reader can tell whether anything moved.
    pub fn reading(&self) -> Vec<u64> {
        let mut v: Vec<u64> = COUNTERS.iter().map(|r| self.get(r.counter)).collect();
        v.extend(RejectReason::ALL.iter().map(|&r| self.rejected(r)));
        v.extend(DropReason::ALL.iter().map(|&r| self.dropped(r)));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_reason() {
        let s = Stats::default();
        s.reject(RejectReason::NotJson);
        s.reject(RejectReason::NotJson);
        s.reject(RejectReason::WorkerCap);
        s.drop_frame(DropReason::InboxFull);
        assert_eq!(s.rejected(RejectReason::NotJson), 2);
        assert_eq!(s.rejected(RejectReason::TooLarge), 0);
        assert_eq!(s.rejected_total(), 3);
        assert_eq!(s.dropped(DropReason::InboxFull), 1);
        assert_eq!(s.dropped_total(), 1);
        s.http_response(404);
        s.http_response(200);
        s.http_response(999);
        assert_eq!(s.http_responses(), [0, 1, 0, 1, 1]);
    }

    #[test]
    fn the_table_names_every_counter_once_and_families_stand_together() {
        assert_eq!(COUNTERS.len(), N);
        for (i, r) in COUNTERS.iter().enumerate() {
            assert_eq!(r.counter as usize, i, "{:?} out of order", r.counter);
        }
        let mut keys: Vec<(&str, &str)> =
            COUNTERS.iter().map(|r| (r.group.as_str(), r.key)).collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), N, "a /health key twice");
        let families: Vec<&str> = COUNTERS
            .iter()
            .filter_map(|r| r.metric.as_ref().map(|m| m.family))
            .collect();
        for (i, f) in families.iter().enumerate() {
            if i > 0 && families[i - 1] != *f {
                assert!(!families[..i].contains(f), "{f} split in two");
            }
            let kind = COUNTERS
                .iter()
                .filter_map(|r| r.metric.as_ref())
                .find(|m| m.family == *f)
                .map(|m| m.kind);
            assert_eq!(kind == Some(Kind::Counter), f.ends_with("_total"), "{f}");
        }
    }

    #[test]
    fn counters_move() {
        let s = Stats::default();
        s.incr(Counter::TcpAccepted);
        s.add(Counter::FramesApplied, 5);
        s.set(Counter::HttpOpen, 9);
        s.incr(Counter::WsClients);
        s.decr(Counter::WsClients);
        assert_eq!(
            (
                s.get(Counter::TcpAccepted),
                s.get(Counter::FramesApplied),
                s.get(Counter::HttpOpen),
                s.get(Counter::WsClients)
            ),
            (1, 5, 9, 0)
        );
        let before = s.reading();
        s.reject(RejectReason::BadField);
        assert_ne!(s.reading(), before);
    }
}
