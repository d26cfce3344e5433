//! Heartbeat datagrams: read up to [`mmsg::BATCH`] per system call
//! (`recvmmsg`), decode, group the batch by worker and hand each worker its
//! frames under one lock of its inbox. The inbox decides what a full queue
//! does: a heartbeat merges into the newest queued one, a `run` waits up to
//! `max_pending_events` and is dropped past it (counted). A refused frame
//! is counted and logged, rate-limited, and counted against the worker it
//! names without entering its inbox.

use super::session::authorized;
use super::{Ingest, UDP_BATCH};
use crate::fleet::inbox::Msg;
use crate::fleet::snapshot::Transport;
use crate::proto::{self, Frame, Reject, RejectReason, WorkerId};
use crate::stats::{Counter, DropReason};
use crate::sys::mmsg::{self, Datagrams};
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::Instant;

/// Largest UDP payload (65,507) fits in a slot of this size.
const MAX_SLOT: usize = 65536;

/// One decoded frame of a batch, with the worker it names.
pub(super) struct Routed {
    id: WorkerId,
    peer: SocketAddr,
    /// Taken when delivered.
    msg: Option<Msg>,
}

/// FNV-1a of a worker id: a cheap key to bring a batch's frames for one
/// worker together (equal ids are still compared, so a collision only
/// splits a group).
fn group_key(id: &str) -> u64 {
    id.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The slot size for `max_frame_bytes`: one byte past it, so that a
/// datagram cut to its slot is still seen to be too large.
pub(super) fn slot_for(max_frame_bytes: usize) -> usize {
    (max_frame_bytes + 1).min(MAX_SLOT)
}

impl Ingest {
    pub(super) fn on_udp(&mut self, now: Instant) {
        let max = self.config.get().max_frame_bytes;
        if self.dgrams.slot() != slot_for(max) {
            self.dgrams = Datagrams::new(slot_for(max));
        }
        for _ in 0..UDP_BATCH.div_ceil(mmsg::BATCH) {
            let n = match self.dgrams.recv(self.udp.as_raw_fd()) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.udp_backlog = false;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("udp receive failed: {e}");
                    self.udp_backlog = false;
                    return;
                }
            };
            self.on_batch(n, max, now);
            if n < mmsg::BATCH {
                // The queue was emptied; a datagram that comes later
                // raises readiness again. Emptied twice within UDP_PACE,
                // the socket is busy: let the next datagrams gather.
                self.udp_backlog = false;
                if now.duration_since(self.udp_drained) < super::UDP_PACE {
                    self.udp_rest_until = Some(now + super::UDP_PACE);
                }
                self.udp_drained = now;
                return;
            }
        }
        // More may be queued: come back after serving the other sockets.
        self.udp_backlog = true;
    }

    /// Decode the batch's datagrams, then deliver them grouped by worker,
    /// each worker's in arrival order.
    fn on_batch(&mut self, n: usize, max: usize, now: Instant) {
        let mut routed = std::mem::take(&mut self.routed);
        for i in 0..n {
            let (bytes, peer) = self.dgrams.get(i);
            let Some(peer) = peer else { continue };
            if !super::allowed(self.config.get(), peer.ip()) {
                self.shared.stats.incr(Counter::UdpNotAllowed);
                self.log_limit.warn("udp_not_allowed", || {
                    format!("dropped datagram peer={peer}: not in heartbeat_allow_from")
                });
                continue;
            }
            self.shared.stats.incr(Counter::FramesReceived);
            // A datagram cut to its slot is longer than `max`: decode
            // refuses it as too large.
            let max_state = self.config.get().max_worker_state_bytes;
            match proto::decode(bytes, max).and_then(|f| proto::within_state(f, max_state)) {
                Ok(frame) => {
                    if let Some(r) = self.check(frame, peer, now) {
                        routed.push(r);
                    }
                }
                Err(mut rej) => {
                    if self.config.get().heartbeat_token.is_some() {
                        // Anyone can name a worker; only its token would
                        // prove the frame is its own.
                        rej.worker_id = None;
                    }
                    self.reject(&rej, peer)
                }
            }
        }
        // Each worker's frames together, in arrival order: sorted by
        // (key, index), so nothing but two small numbers moves.
        let mut order = std::mem::take(&mut self.order);
        order.extend(
            routed
                .iter()
                .enumerate()
                .map(|(i, r)| (group_key(&r.id), i)),
        );
        order.sort_unstable();
        let mut at = 0;
        while at < order.len() {
            let first = &routed[order[at].1];
            let (id, peer) = (first.id.clone(), first.peer);
            let mut end = at + 1;
            while end < order.len() && routed[order[end].1].id == id {
                end += 1;
            }
            let group = order[at..end]
                .iter()
                .filter_map(|&(_, i)| routed[i].msg.take());
            self.deliver_udp(&id, peer, group);
            at = end;
        }
        order.clear();
        routed.clear();
        self.order = order;
        self.routed = routed;
    }

    /// The frame as a message for its worker, or refused.
    fn check(&self, frame: Frame, peer: SocketAddr, now: Instant) -> Option<Routed> {
        if !authorized(&frame, self.config.get().heartbeat_token.as_ref()) {
            let rej = Reject::new(
                RejectReason::Unauthorized,
                "frame without the heartbeat token",
            );
            self.reject(&rej, peer);
            return None;
        }
        if matches!(frame, Frame::TaskUpdate(_) | Frame::TaskLog(_)) {
            let rej = Reject::new(RejectReason::TcpOnly, "task frames travel over TCP only");
            self.reject(&rej, peer);
            return None;
        }
        let Some(id) = frame.worker_id().cloned() else {
            let rej = Reject::new(RejectReason::BadWorkerId, "worker_id is required over UDP");
            self.reject(&rej, peer);
            return None;
        };
        Some(Routed {
            id,
            peer,
            msg: Some(Msg::frame(frame, Transport::Udp, now)),
        })
    }

    /// One worker's frames of a batch, under one lock of its inbox.
    fn deliver_udp(
        &mut self,
        id: &WorkerId,
        peer: SocketAddr,
        msgs: impl IntoIterator<Item = Msg>,
    ) {
        let back = self.offer_to(id, peer, msgs);
        if back.is_empty() {
            return;
        }
        // The worker was removed between lookup and send: once more.
        let back = self.offer_to(id, peer, back);
        let n = back.len() as u64;
        self.shared.stats.drop_frames(DropReason::ShuttingDown, n);
    }

    /// Route to the worker and offer; what its ended thread handed back.
    fn offer_to(
        &mut self,
        id: &WorkerId,
        peer: SocketAddr,
        msgs: impl IntoIterator<Item = Msg>,
    ) -> Vec<Msg> {
        let handle = match self.registry.route(id, Transport::Udp) {
            Ok(h) => h,
            Err(reason) => {
                let rej = Reject::new(reason, format!("worker {id} refused"));
                for _ in msgs {
                    self.reject(&rej, peer);
                }
                return Vec::new();
            }
        };
        let max_events = self.config.get().max_pending_events;
        let o = handle.inbox.offer(msgs, max_events);
        let stats = &self.shared.stats;
        stats.add(Counter::HeartbeatsMerged, o.merged);
        stats.drop_frames(DropReason::InboxFull, o.dropped_state);
        stats.drop_frames(DropReason::EventsDropped, o.dropped_events);
        if o.dropped_state + o.dropped_events > 0 {
            self.log_limit.warn("udp_inbox_full", || {
                format!(
                    "dropped udp frames worker={id}: {} heartbeats (nothing queued to merge into), {} runs past max_pending_events={max_events}",
                    o.dropped_state, o.dropped_events
                )
            });
        }
        o.returned
    }

    /// Count a refused frame, blame its worker if it named one, log (limited).
    pub(super) fn reject(&self, rej: &Reject, peer: SocketAddr) {
        self.shared.stats.reject(rej.reason);
        if let Some(id) = &rej.worker_id {
            if let Some(h) = self.registry.handle(id) {
                h.refuse();
            }
        }
        if let Some(suppressed) = self.log_limit.check(rej.reason.as_str(), Instant::now()) {
            log::warn!(
                "rejected frame reason={} peer={peer} worker={}: {} (suppressed={suppressed})",
                rej.reason.as_str(),
                rej.worker_id.as_deref().unwrap_or("-"),
                rej.message
            );
        }
    }
}
