//! Daemon-wide counters: what arrived, what was refused and why, what was
//! dropped and why. Every bound in the daemon that throws something away
//! counts it here, so `/health` (and later `/metrics`) can tell the truth.
//!
//! Plain relaxed atomics: counters are read for display, never to
//! synchronise anything.

use crate::proto::RejectReason;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

/// Why an accepted, valid frame was nevertheless not applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// UDP: the worker's inbox was full (its thread is behind).
    InboxFull,
    /// The daemon was shutting down.
    ShuttingDown,
}

impl DropReason {
    pub const ALL: [DropReason; 2] = [DropReason::InboxFull, DropReason::ShuttingDown];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::InboxFull => "inbox_full",
            DropReason::ShuttingDown => "shutting_down",
        }
    }
}

#[derive(Default)]
pub struct Stats {
    /// Frames read off a socket (datagrams, TCP lines), valid or not.
    pub frames_received: AtomicU64,
    /// Frames applied by a worker thread.
    pub frames_applied: AtomicU64,
    rejected: [AtomicU64; RejectReason::ALL.len()],
    dropped: [AtomicU64; DropReason::ALL.len()],
    /// Worker threads running now.
    pub worker_threads: AtomicUsize,
    /// Workers evicted by the sweeper after `forget_after`.
    pub workers_evicted: AtomicU64,
    /// Workers forgotten through `DELETE /api/workers/{id}`.
    pub workers_deleted: AtomicU64,
    /// TCP connections open now, and accepted in all.
    pub tcp_open: AtomicUsize,
    pub tcp_accepted: AtomicU64,
    /// TCP connections closed by the daemon, by cause.
    pub tcp_closed_idle: AtomicU64,
    pub tcp_closed_superseded: AtomicU64,
    pub tcp_refused_full: AtomicU64,
    /// HTTP connections open now and requests answered by status class.
    pub http_open: AtomicUsize,
    pub http_refused_full: AtomicU64,
    pub http_responses: [AtomicU64; 5],
    /// WebSocket clients connected now, accepted in all, and closed by cause.
    pub ws_clients: AtomicUsize,
    pub ws_accepted: AtomicU64,
    pub ws_closed_stalled: AtomicU64,
    pub ws_closed_ping: AtomicU64,
    pub ws_closed_too_big: AtomicU64,
}

impl Stats {
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
        self.dropped[reason as usize].fetch_add(1, Relaxed);
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
        assert_eq!(s.http_responses[3].load(Relaxed), 1);
        assert_eq!(s.http_responses[4].load(Relaxed), 1);
    }
}
