//! Heartbeat datagrams: the UDP socket and what reading it needs. Read up
//! to [`mmsg::BATCH`] per system call (`recvmmsg`), decode, group the batch
//! by worker and hand each worker its frames under one lock of its inbox.
//! The inbox decides what a full queue does: a heartbeat merges into the
//! newest queued one, a `run` waits up to `max_pending_events` and is
//! dropped past it (counted). A refused frame is counted and logged,
//! rate-limited, and counted against the worker it names without entering
//! its inbox.
//!
//! A busy socket is read at most every [`PACE`]: datagrams that come
//! sooner wait in the kernel's buffer and are read together. The rest is
//! a deadline the loop waits for in its poll ([`UdpIntake::wake_at`]),
//! never a sleep, and the socket leaves the poll while it rests: the poll
//! is edge-triggered, and each datagram that arrived would end the wait
//! (at 100,000 a second, a hundred wakes of the loop per rest, each a
//! context switch, for nothing it could read).

use super::UDP;

use super::Env;
use super::session::{Owners, authorized};
use crate::fleet::inbox::Msg;
use crate::fleet::snapshot::Transport;
use crate::logging::RateLimit;
use crate::proto::{self, Frame, Reject, RejectReason, WorkerId};
use crate::stats::{Counter, DropReason};
use crate::sys::mmsg::{self, Datagrams};
use mio::net::UdpSocket;
use mio::{Interest, Registry as Poller};
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// Largest UDP payload (65,507) fits in a slot of this size.
const MAX_SLOT: usize = 65536;
/// Datagrams read before the loop looks at other sockets.
pub const BATCH: usize = 256;
/// Least time between two reads of a busy UDP socket. Datagrams that come
/// sooner wait in the kernel's buffer and are read together, up to 64 a
/// system call: at 100,000 a second that is about 2 reads a millisecond
/// instead of a wake for every few datagrams. A quiet socket is read the
/// moment a datagram arrives.
pub const PACE: Duration = Duration::from_millis(1);

/// One decoded frame of a batch, with the worker it names.
struct Routed {
    id: WorkerId,
    peer: SocketAddr,
    /// Taken when delivered.
    msg: Option<Msg>,
}

pub struct UdpIntake {
    pub socket: UdpSocket,
    /// The `recvmmsg` slots, and a batch's frames on their way to workers.
    dgrams: Datagrams,
    routed: Vec<Routed>,
    order: Vec<(u64, usize)>,
    /// Readable and not yet read empty.
    backlog: bool,
    /// When the socket was last read empty, and, when that came within
    /// [`PACE`] of the one before, when to read it next (out of the poll
    /// until then).
    drained: Instant,
    rest_until: Option<Instant>,
    log_limit: RateLimit,
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
fn slot_for(max_frame_bytes: usize) -> usize {
    (max_frame_bytes + 1).min(MAX_SLOT)
}

impl UdpIntake {
    pub fn new(socket: UdpSocket, max_frame_bytes: usize) -> UdpIntake {
        UdpIntake {
            socket,
            dgrams: Datagrams::new(slot_for(max_frame_bytes)),
            routed: Vec::with_capacity(mmsg::BATCH),
            order: Vec::with_capacity(mmsg::BATCH),
            backlog: false,
            drained: Instant::now(),
            rest_until: None,
            log_limit: RateLimit::new(Duration::from_secs(10)),
        }
    }

    /// The socket is readable.
    pub fn ready(&mut self) {
        self.backlog = true;
    }

    /// When the loop must come back for the socket: now while datagrams
    /// wait, at the end of a rest while the socket is paced, else never.
    pub fn wake_at(&self, now: Instant) -> Option<Instant> {
        match self.rest_until {
            Some(t) => Some(t.max(now)),
            None => self.backlog.then_some(now),
        }
    }

    /// Read what the socket holds, up to [`BATCH`] datagrams, unless it is
    /// resting; back from a rest, into the poll again first.
    /// `tcp` says which workers speak over a TCP session: UDP frames
    /// naming them are refused (`worker_mismatch`).
    pub fn on_readable(&mut self, poller: &Poller, env: &Env, now: Instant, tcp: &Owners) {
        match self.rest_until {
            Some(t) if now < t => return,
            Some(_) => {
                self.rest_until = None;
                if let Err(e) = poller.register(&mut self.socket, UDP, Interest::READABLE) {
                    log::error!("udp socket: cannot return to the poll: {e}");
                }
                self.backlog = true;
            }
            None => {}
        }
        if !self.backlog {
            return;
        }
        let max = env.cfg.heartbeats.max_frame_bytes;
        if self.dgrams.slot() != slot_for(max) {
            self.dgrams = Datagrams::new(slot_for(max));
        }
        for _ in 0..BATCH.div_ceil(mmsg::BATCH) {
            let n = match self.dgrams.recv(self.socket.as_raw_fd()) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.backlog = false;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("udp receive failed: {e}");
                    self.backlog = false;
                    return;
                }
            };
            self.on_batch(env, n, max, now, tcp);
            if n < mmsg::BATCH {
                // The queue was emptied; a datagram that comes later
                // raises readiness again. Emptied twice within PACE, the
                // socket is busy: let the next datagrams gather.
                self.backlog = false;
                if now.duration_since(self.drained) < PACE {
                    match poller.deregister(&mut self.socket) {
                        Ok(()) => self.rest_until = Some(now + PACE),
                        Err(e) => log::warn!("udp socket: cannot rest it: {e}"),
                    }
                }
                self.drained = now;
                return;
            }
        }
        // More may be queued: come back after serving the other sockets.
        self.backlog = true;
    }

    /// Decode the batch's datagrams, then deliver them grouped by worker,
    /// each worker's in arrival order.
    fn on_batch(&mut self, env: &Env, n: usize, max: usize, now: Instant, tcp: &Owners) {
        let mut routed = std::mem::take(&mut self.routed);
        for i in 0..n {
            let (bytes, peer) = self.dgrams.get(i);
            let Some(peer) = peer else { continue };
            if !super::allowed(env.cfg, peer.ip()) {
                env.shared.stats.incr(Counter::UdpNotAllowed);
                self.log_limit.warn("udp_not_allowed", || {
                    format!("dropped datagram peer={peer}: not in heartbeat_allow_from")
                });
                continue;
            }
            env.shared.stats.incr(Counter::FramesReceived);
            // A datagram cut to its slot is longer than `max`: decode
            // refuses it as too large.
            let max_state = env.cfg.heartbeats.max_worker_state_bytes;
            match proto::decode(bytes, max).and_then(|f| proto::within_state(f, max_state)) {
                Ok(frame) => {
                    if let Some(r) = self.check(env, frame, peer, now, tcp) {
                        routed.push(r);
                    }
                }
                Err(mut rej) => {
                    if env.cfg.heartbeats.token.is_some() {
                        // Anyone can name a worker; only its token would
                        // prove the frame is its own.
                        rej.worker_id = None;
                    }
                    super::reject(env, &mut self.log_limit, &rej, peer)
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
            self.deliver(env, &id, peer, group);
            at = end;
        }
        order.clear();
        routed.clear();
        self.order = order;
        self.routed = routed;
    }

    /// The frame as a message for its worker, or refused. A worker bound
    /// to a live TCP session owns its id: a datagram naming it (anyone
    /// can send one, and without a heartbeat token nothing proves who) is
    /// refused, and counted apart from the worker, so that a spoofer can
    /// neither rewrite nor end it, nor run up its error count.
    fn check(
        &mut self,
        env: &Env,
        frame: Frame,
        peer: SocketAddr,
        now: Instant,
        tcp: &Owners,
    ) -> Option<Routed> {
        let refused = if !authorized(&frame, env.cfg.heartbeats.token.as_ref()) {
            Some(Reject::new(
                RejectReason::Unauthorized,
                "frame without the heartbeat token",
            ))
        } else if matches!(
            frame,
            Frame::TaskUpdate(_) | Frame::TaskLog(_) | Frame::TaskProgress(_)
        ) {
            Some(Reject::new(
                RejectReason::TcpOnly,
                "task frames travel over TCP only",
            ))
        } else if frame.worker_id().is_none() {
            Some(Reject::new(
                RejectReason::BadWorkerId,
                "worker_id is required over UDP",
            ))
        } else if frame.worker_id().is_some_and(|id| tcp.owner(id).is_some()) {
            Some(Reject::new(
                RejectReason::WorkerMismatch,
                "the worker speaks over a TCP session: its UDP frames are refused",
            ))
        } else {
            None
        };
        if let Some(rej) = refused {
            super::reject(env, &mut self.log_limit, &rej, peer);
            return None;
        }
        let id = frame.worker_id().cloned()?;
        Some(Routed {
            id,
            peer,
            msg: Some(Msg::frame(frame, Transport::Udp, now)),
        })
    }

    /// One worker's frames of a batch, under one lock of its inbox.
    fn deliver(
        &mut self,
        env: &Env,
        id: &WorkerId,
        peer: SocketAddr,
        msgs: impl IntoIterator<Item = Msg>,
    ) {
        let back = self.offer_to(env, id, peer, msgs);
        if back.is_empty() {
            return;
        }
        // The worker was removed between lookup and send: once more.
        let back = self.offer_to(env, id, peer, back);
        let n = back.len() as u64;
        env.shared.stats.drop_frames(DropReason::ShuttingDown, n);
    }

    /// Route to the worker and offer; what its ended thread handed back.
    fn offer_to(
        &mut self,
        env: &Env,
        id: &WorkerId,
        peer: SocketAddr,
        msgs: impl IntoIterator<Item = Msg>,
    ) -> Vec<Msg> {
        let handle = match env.registry.route(id, Transport::Udp) {
            Ok(h) => h,
            Err(reason) => {
                let rej = Reject::new(reason, format!("worker {id} refused"));
                for _ in msgs {
                    super::reject(env, &mut self.log_limit, &rej, peer);
                }
                return Vec::new();
            }
        };
        let max_events = env.cfg.heartbeats.max_pending_events;
        let o = handle.inbox.offer(msgs, max_events);
        let stats = &env.shared.stats;
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use crate::fleet::Shared;
    use crate::fleet::registry::Registry;
    use std::sync::Arc;

    /// A datagram sent to the intake's socket is applied to its worker; a
    /// refused one is counted and creates nobody.
    #[test]
    fn datagrams_reach_their_workers_and_refusals_are_counted() {
        let mut cfg = config::defaults();
        cfg.fleet.max_workers = 10;
        let shared = Arc::new(Shared::new(cfg.clone()));
        let registry = Registry::new(shared.clone());
        let socket = UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let at = socket.local_addr().unwrap();
        let mut intake = UdpIntake::new(socket, cfg.heartbeats.max_frame_bytes);
        let poll = mio::Poll::new().unwrap();
        poll.registry()
            .register(&mut intake.socket, UDP, Interest::READABLE)
            .unwrap();
        let send = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for d in [
            &br#"{"type":"heartbeat","worker_id":"u1","queue_depth":5}"#[..],
            br#"{"type":"heartbeat"}"#,
            br#"not json"#,
            br#"{"type":"task_log","worker_id":"u1","task_id":"1","lines":[]}"#,
            // t1 holds a TCP session: datagrams naming it are refused.
            br#"{"type":"heartbeat","worker_id":"t1","status":"error","labels":{"owner":"attacker"}}"#,
            br#"{"type":"bye","worker_id":"t1"}"#,
        ] {
            send.send_to(d, at).unwrap();
        }
        let env = Env {
            registry: &registry,
            shared: &shared,
            cfg: &cfg,
        };
        let mut tcp = Owners::default();
        tcp.claim(&WorkerId::from("t1"), 7);
        let deadline = Instant::now() + Duration::from_secs(5);
        while shared.stats.get(Counter::FramesReceived) < 6 {
            assert!(Instant::now() < deadline, "datagrams never read");
            intake.ready();
            intake.on_readable(poll.registry(), &env, Instant::now() + PACE * 2, &tcp);
            std::thread::sleep(Duration::from_millis(2));
        }
        while registry.snapshot("u1").is_none() {
            assert!(Instant::now() < deadline, "never applied");
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(registry.snapshot("u1").unwrap().queue_depth, 5);
        assert_eq!(registry.len(), 1, "refused frames create nobody");
        assert_eq!(shared.stats.rejected(RejectReason::WorkerMismatch), 2);
        let st = &shared.stats;
        assert_eq!(st.rejected(RejectReason::BadWorkerId), 1);
        assert_eq!(st.rejected(RejectReason::NotJson), 1);
        assert_eq!(st.rejected(RejectReason::TcpOnly), 1);
        registry.shutdown(Instant::now() + Duration::from_secs(5));
    }

    #[test]
    fn a_busy_socket_rests_for_its_pace_and_the_loop_is_told_when() {
        let socket = UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let mut intake = UdpIntake::new(socket, 65536);
        let now = Instant::now();
        assert_eq!(intake.wake_at(now), None, "nothing to read");
        intake.ready();
        assert_eq!(intake.wake_at(now), Some(now), "read at once");
        intake.rest_until = Some(now + PACE);
        assert_eq!(intake.wake_at(now), Some(now + PACE));
    }

    /// Emptied twice within its pace, the socket leaves the poll: the
    /// datagrams that come meanwhile wake nobody, and are read, all of
    /// them, once the rest is over.
    #[test]
    fn a_resting_socket_does_not_wake_the_poll() {
        let cfg = config::defaults();
        let shared = Arc::new(Shared::new(cfg.clone()));
        let registry = Registry::new(shared.clone());
        let env = Env {
            registry: &registry,
            shared: &shared,
            cfg: &cfg,
        };
        let socket = UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let at = socket.local_addr().unwrap();
        let mut intake = UdpIntake::new(socket, cfg.heartbeats.max_frame_bytes);
        let mut poll = mio::Poll::new().unwrap();
        poll.registry()
            .register(&mut intake.socket, UDP, Interest::READABLE)
            .unwrap();
        let send = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let beat = br#"{"type":"heartbeat","worker_id":"r1","queue_depth":1}"#;
        send.send_to(beat, at).unwrap();
        let mut events = mio::Events::with_capacity(8);
        poll.poll(&mut events, Some(Duration::from_secs(5)))
            .unwrap();
        let now = Instant::now();
        intake.drained = now;
        intake.ready();
        intake.on_readable(poll.registry(), &env, now, &Owners::default());
        assert!(intake.rest_until.is_some(), "emptied twice within PACE");
        for _ in 0..5 {
            send.send_to(beat, at).unwrap();
        }
        poll.poll(&mut events, Some(Duration::from_millis(50)))
            .unwrap();
        assert!(events.is_empty(), "a resting socket woke the poll");
        intake.on_readable(poll.registry(), &env, now + PACE, &Owners::default());
        assert_eq!(intake.rest_until, None);
        assert_eq!(shared.stats.get(Counter::FramesReceived), 6);
        // In the poll again: the next datagram wakes it.
        send.send_to(beat, at).unwrap();
        poll.poll(&mut events, Some(Duration::from_secs(5)))
            .unwrap();
        assert!(events.iter().any(|e| e.token() == UDP));
        registry.shutdown(Instant::now() + Duration::from_secs(5));
    }
}
