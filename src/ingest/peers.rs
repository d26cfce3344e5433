//! Heartbeat TCP peers on the ingest loop: accept, read lines, judge each
//! frame by the session rules (`session`), deliver it to the worker's inbox
//! or park it, answer, supersede, and close.

use super::Ingest;
use super::session::Verdict;
use super::tcp::{Line, TcpConn};
use crate::fleet::inbox::Msg;
use crate::fleet::snapshot::Transport;
use crate::fleet::worker::Handle;
use crate::proto::task::{TaskLog, TaskUpdate};
use crate::proto::{self, ErrorCode, Frame, Reject, RejectReason, WorkerId};
use crate::stats::{Counter, DropReason};
use mio::{Interest, Token};
use std::io;
use std::sync::Arc;
use std::sync::mpsc::TrySendError;
use std::time::Instant;

/// TCP connections beyond `max_workers` plus this are refused.
const TCP_SLACK: usize = 64;

impl Ingest {
    /// Accept until the queue is empty. On an error such as EMFILE the
    /// queue is not empty, but no new readiness will say so: the loop
    /// tries again after [`super::RETRY`].
    pub(super) fn accept(&mut self, now: Instant) {
        loop {
            match self.listener.accept() {
                Ok((stream, peer)) => {
                    // Replies are single lines, each written whole.
                    let _ = stream.set_nodelay(true);
                    let stats = &self.shared.stats;
                    if !super::allowed(self.config.get(), peer.ip()) {
                        stats.incr(Counter::TcpNotAllowed);
                        self.log_limit.warn("tcp_not_allowed", || {
                            format!("refusing tcp peer={peer}: not in heartbeat_allow_from")
                        });
                        continue;
                    }
                    if self.conns.len() >= self.config.get().max_workers + TCP_SLACK {
                        stats.incr(Counter::TcpRefusedFull);
                        self.log_limit.warn("tcp_full", || {
                            format!("refusing tcp peer={peer}: too many connections")
                        });
                        continue;
                    }
                    let max_ip = self.config.get().tcp_max_connections_per_ip;
                    let capped = self.config.get().capped(peer.ip());
                    if capped && self.per_ip.count(peer.ip()) >= max_ip {
                        stats.incr(Counter::TcpRefusedPerIp);
                        self.log_limit.warn("tcp_per_ip", || {
                            format!("refusing tcp peer={peer}: tcp_max_connections_per_ip={max_ip} reached for this address")
                        });
                        continue;
                    }
                    let entry = self.conns.vacant_entry();
                    let key = entry.key();
                    let mut conn = TcpConn::new(stream, peer, now);
                    if let Err(e) = self.poll.registry().register(
                        &mut conn.stream,
                        Token(key),
                        Interest::READABLE,
                    ) {
                        log::warn!("tcp register failed peer={peer}: {e}");
                        continue;
                    }
                    entry.insert(conn);
                    self.per_ip.add(peer.ip());
                    stats.incr(Counter::TcpAccepted);
                    stats.set(Counter::TcpOpen, self.conns.len() as u64);
                    log::debug!("tcp connect peer={peer}");
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.accept_retry = false;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if crate::sys::fds::out_of_descriptors(&e) && self.reserve.release() => {
                    // The reserve's descriptor takes the queue's head and
                    // closes it: the worker reconnects later rather than
                    // waiting on a queue nobody can take from.
                    self.log_limit.warn("tcp_accept", || {
                        format!("tcp accept failed ({e}): closing the queued connection from the reserve descriptor")
                    });
                    // Closed at once: its descriptor goes back to the reserve.
                    let taken = self.listener.accept().map(drop);
                    self.reserve.restore();
                    if taken.is_err() {
                        self.accept_retry = true;
                        return;
                    }
                    self.shared.stats.incr(Counter::TcpRefusedNoFds);
                }
                Err(e) => {
                    self.log_limit
                        .warn("tcp_accept", || format!("tcp accept failed: {e}"));
                    self.accept_retry = true;
                    return;
                }
            }
        }
    }

    /// Deliver the parked frame, then every buffered line, then read more
    /// until the socket would block; stop early when an inbox is full (the
    /// connection goes to `blocked`).
    pub(super) fn on_readable(&mut self, key: usize, now: Instant) {
        let max = self.config.get().max_frame_bytes;
        loop {
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            if conn.closing {
                break;
            }
            if let Some(msg) = conn.pending.take() {
                if let Some(msg) = self.deliver(key, msg) {
                    self.park(key, msg);
                    break;
                }
                continue;
            }
            match conn.next_line(max) {
                Line::Frame(range) => {
                    let decoded = proto::decode(conn.bytes(range.clone()), max);
                    conn.consume(range.end);
                    self.on_frame(key, decoded, now);
                    if self.conns.get(key).is_some_and(|c| c.pending.is_some()) {
                        break;
                    }
                }
                Line::TooLong => {
                    let rej = Reject::new(
                        RejectReason::TooLarge,
                        format!("line longer than max_frame_bytes={max}"),
                    );
                    self.on_frame(key, Err(rej), now);
                    if let Some(c) = self.conns.get_mut(key) {
                        c.closing = true;
                    }
                }
                Line::Incomplete if conn.peer_closed => {
                    if let Some(range) = conn.take_tail() {
                        let decoded = proto::decode(conn.bytes(range.clone()), max);
                        conn.consume(range.end);
                        self.on_frame(key, decoded, now);
                        continue;
                    }
                    conn.closing = true;
                }
                Line::Incomplete => match conn.read_some(max) {
                    Ok(true) => {}
                    Ok(false) if conn.peer_closed => {}
                    Ok(false) => break,
                    Err(_) => {
                        conn.closing = true;
                        conn.peer_closed = true;
                    }
                },
            }
        }
        self.flush(key);
    }

    /// A `task_update` (Ok) or `task_log` (Err) from a bound session; one
    /// about a task the worker does not hold is answered with an error.
    fn on_task_frame(&mut self, key: usize, f: Result<TaskUpdate, TaskLog>) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let Some(id) = conn.session.worker().cloned() else {
            return;
        };
        let (task_id, r) = match f {
            Ok(u) => (u.task_id.clone(), self.tasks.on_update(&id, u)),
            Err(l) => (l.task_id.clone(), self.tasks.on_log(&id, l)),
        };
        if let (Err(crate::tasks::NotHeld), Some(conn)) = (r, self.conns.get_mut(key)) {
            conn.send(&proto::encode_error(
                ErrorCode::TaskNotHeld,
                &format!("task {task_id} is not held by {id}"),
            ));
            self.log_limit.warn("task_not_held", || {
                format!(
                    "refused an update for task {task_id} from worker {id}: it does not hold it"
                )
            });
        }
    }

    /// Lines from the task book for workers' sessions; a worker with no
    /// session has lost its tasks.
    pub(super) fn send_tasks(&mut self) {
        while let Ok((id, line)) = self.outbox.try_recv() {
            match self.owners.owner(&id) {
                Some(key) => {
                    if let Some(c) = self.conns.get_mut(key) {
                        c.send(&line);
                    }
                    self.flush(key);
                }
                None => self.tasks.on_lost(&id, "no session to send it to"),
            }
        }
    }

    /// Shutdown: offer a parked frame to its worker once more.
    pub(super) fn deliver_parked(&mut self, key: usize) {
        let Some(msg) = self.conns.get_mut(key).and_then(|c| c.pending.take()) else {
            return;
        };
        if let Some(msg) = self.deliver(key, msg) {
            self.park(key, msg);
        }
    }

    fn park(&mut self, key: usize, msg: Msg) {
        if let Some(conn) = self.conns.get_mut(key) {
            conn.pending = Some(msg);
            self.blocked.insert(key);
        }
    }

    /// Try the connection's worker inbox; give the message back when full.
    fn deliver(&mut self, key: usize, mut msg: Msg) -> Option<Msg> {
        for _ in 0..2 {
            let conn = self.conns.get_mut(key)?;
            let id = conn.session.worker()?.clone();
            let handle: Arc<Handle> = match &conn.handle {
                Some(h) if !h.is_stopped() => h.clone(),
                // Forgotten (DELETE or eviction) while connected: start afresh.
                _ => match self.registry.route(&id, Transport::Tcp) {
                    Ok(h) => {
                        conn.handle = Some(h.clone());
                        h
                    }
                    Err(reason) => {
                        self.shared.stats.reject(reason);
                        conn.send(&proto::encode_error(reason, "worker refused"));
                        conn.closing = true;
                        return None;
                    }
                },
            };
            match handle.inbox.send(msg, self.config.get().max_pending_events) {
                Ok(()) => return None,
                Err(TrySendError::Full(m)) => return Some(m),
                Err(TrySendError::Disconnected(m)) => {
                    msg = m;
                    handle.stop();
                }
            }
        }
        self.shared.stats.drop_frame(DropReason::ShuttingDown);
        None
    }

    fn on_frame(&mut self, key: usize, decoded: Result<Frame, Reject>, now: Instant) {
        self.shared.stats.incr(Counter::FramesReceived);
        let max_state = self.config.get().max_worker_state_bytes;
        let decoded = decoded.and_then(|f| proto::within_state(f, max_state));
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let peer = conn.peer;
        let token = self.config.get().heartbeat_token.as_ref();
        match conn.session.on_frame(decoded, token, now) {
            Verdict::Refuse { reject, close } => {
                conn.send(&proto::encode_error(reject.reason, &reject.message));
                conn.closing |= close;
                self.reject(&reject, peer);
            }
            Verdict::Hello(id, frame) => self.on_hello(key, id, frame, now),
            Verdict::Deliver(Frame::TaskUpdate(u)) => self.on_task_frame(key, Ok(u)),
            Verdict::Deliver(Frame::TaskLog(l)) => self.on_task_frame(key, Err(l)),
            Verdict::Deliver(frame) => {
                if let (Frame::Bye { .. }, Some(id)) = (&frame, conn.session.worker()) {
                    self.tasks.on_lost(id, "worker said bye");
                }
                let msg = Msg::frame(frame, Transport::Tcp, now);
                if let Some(msg) = self.deliver(key, msg) {
                    self.park(key, msg);
                }
            }
        }
    }

    fn on_hello(&mut self, key: usize, id: WorkerId, frame: Frame, now: Instant) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let peer = conn.peer;
        let handle = match self.registry.route(&id, Transport::Tcp) {
            Ok(h) => h,
            Err(reason) => {
                conn.session.unbind();
                conn.send(&proto::encode_error(reason, "max_workers reached"));
                conn.closing = true;
                return self.reject(&Reject::new(reason, format!("worker {id} refused")), peer);
            }
        };
        conn.handle = Some(handle);
        let cfg = self.config.get();
        conn.send(&proto::encode_welcome(
            &id,
            cfg.heartbeat_interval.as_millis() as u64,
            cfg.inactivity_timeout.as_millis() as u64,
        ));
        if let Some(old) = self.owners.claim(&id, key) {
            self.supersede(old, &id, peer);
        }
        if let Frame::Hello(h) = &frame {
            let labels = h.labels.clone().unwrap_or_default();
            let types = h.task_types.clone();
            self.tasks
                .on_hello(&id, h.capacity.unwrap_or(0), types, labels);
        }
        let msg = Msg::frame(frame, Transport::Tcp, now);
        if let Some(msg) = self.deliver(key, msg) {
            self.park(key, msg);
        }
    }

    /// Close an older connection of a worker that said hello again.
    fn supersede(&mut self, old: usize, id: &WorkerId, peer: std::net::SocketAddr) {
        let Some(oc) = self.conns.get_mut(old) else {
            return;
        };
        oc.send(&proto::encode_error(
            ErrorCode::Superseded,
            "another connection said hello for this worker",
        ));
        oc.session.unbind();
        oc.handle = None;
        oc.pending = None;
        oc.closing = true;
        self.shared.stats.incr(Counter::TcpClosedSuperseded);
        log::info!(
            "worker id={id} reconnected from {peer}; closing its older connection from {}",
            oc.peer
        );
        self.flush(old);
    }

    /// Write queued replies; close when asked to and flushed, or when broken.
    pub(super) fn flush(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let broken = conn.flush().is_err();
        let done = conn.closing && conn.flushed() || conn.peer_closed && conn.pending.is_none();
        if broken || done {
            return self.close(key);
        }
        let want = conn.interest();
        if want != conn.registered {
            if self
                .poll
                .registry()
                .reregister(&mut conn.stream, Token(key), want)
                .is_ok()
            {
                conn.registered = want;
            } else {
                self.close(key);
            }
        }
    }

    fn close(&mut self, key: usize) {
        if !self.conns.contains(key) {
            return;
        }
        let mut conn = self.conns.remove(key);
        let _ = self.poll.registry().deregister(&mut conn.stream);
        self.per_ip.remove(conn.peer.ip());
        if let Some(id) = conn.session.worker() {
            if self.owners.release(id, key) {
                // The worker's last session: the tasks it held go back.
                self.tasks.on_lost(id, "its session closed");
            }
        }
        self.blocked.remove(&key);
        self.shared
            .stats
            .set(Counter::TcpOpen, self.conns.len() as u64);
        log::debug!("tcp close peer={}", conn.peer);
    }

    /// Close connections silent for 3 × heartbeat_interval. Runs on the
    /// loop's tick; O(connections).
    pub(super) fn on_tick(&mut self, now: Instant) {
        let limit = self.config.get().heartbeat_interval * 3;
        let silent: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.pending.is_none() && !c.closing && c.session.is_idle(now, limit))
            .map(|(k, _)| k)
            .collect();
        for key in silent {
            if let Some(conn) = self.conns.get_mut(key) {
                conn.send(&proto::encode_error(
                    ErrorCode::IdleTimeout,
                    "no frame for 3 heartbeat intervals",
                ));
                conn.closing = true;
                self.shared.stats.incr(Counter::TcpClosedIdle);
                log::debug!("tcp idle close peer={}", conn.peer);
            }
            self.flush(key);
        }
    }
}
