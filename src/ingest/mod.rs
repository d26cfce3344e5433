//! The ingest thread: one mio `Poll` over the heartbeat UDP socket, the TCP
//! listener and the TCP connections. It decodes frames (through the pure
//! protocol module), routes them to workers' inboxes, and answers TCP peers.
//!
//! Delivery rules: over UDP a full inbox drops the frame and counts it; over
//! TCP a full inbox parks the frame on its connection and stops reading that
//! connection until the inbox has room (checked every [`RETRY`]), so nothing
//! a TCP peer sent is lost. A burst of UDP is read in batches of
//! [`UDP_BATCH`] so TCP peers are served between batches.
//!
//! TCP session rules: `hello` first (anything else is answered
//! `hello_required` and the connection closed); later frames may omit
//! `worker_id` and must not name another worker. A second connection that
//! says hello for a worker already connected takes over: the older one is
//! told `superseded` and closed (a restarted worker must not wait for its
//! dead connection to time out). A connection without a complete frame for
//! 3 × `heartbeat_interval` is told `idle_timeout` and closed.

pub mod tcp;

use crate::fleet::registry::Registry;
use crate::fleet::worker::{Handle, Msg, Transport};
use crate::ingest::tcp::{Line, TcpConn};
use crate::logging::RateLimit;
use crate::proto::{self, Frame, Reject, RejectReason, WorkerId};
use crate::stats::DropReason;
use crate::sys::systemd::Watchdog;
use mio::net::{TcpListener, UdpSocket};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;
use std::collections::{BTreeSet, HashMap};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{
    AtomicBool,
    Ordering::{Acquire, Relaxed},
};
use std::sync::mpsc::TrySendError;
use std::time::{Duration, Instant};

const UDP: Token = Token(usize::MAX - 1);
const LISTENER: Token = Token(usize::MAX - 2);
const WAKER: Token = Token(usize::MAX - 3);
/// Datagrams read before the loop looks at other sockets.
pub const UDP_BATCH: usize = 256;
/// How often parked TCP frames retry their worker's inbox.
pub const RETRY: Duration = Duration::from_millis(2);
const TICK: Duration = Duration::from_millis(500);
/// Largest UDP payload; a datagram is never truncated.
const UDP_BUF: usize = 65536;
/// TCP connections beyond `max_workers` plus this are refused.
const TCP_SLACK: usize = 64;

pub struct Ingest {
    poll: Poll,
    udp: UdpSocket,
    listener: TcpListener,
    conns: Slab<TcpConn>,
    /// Which connection speaks for each TCP worker.
    owners: HashMap<WorkerId, usize>,
    /// Connections with a parked frame or unread input.
    blocked: BTreeSet<usize>,
    registry: Arc<Registry>,
    shutdown: Arc<AtomicBool>,
    udp_buf: Vec<u8>,
    udp_backlog: bool,
    log_limit: RateLimit,
    /// The systemd watchdog, when HTTP is off and this loop proves liveness.
    watchdog: Option<Watchdog>,
}

impl Ingest {
    pub fn new(
        mut udp: UdpSocket,
        mut listener: TcpListener,
        registry: Arc<Registry>,
        shutdown: Arc<AtomicBool>,
        watchdog: Option<Watchdog>,
    ) -> io::Result<(Ingest, Arc<Waker>)> {
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut udp, UDP, Interest::READABLE)?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        Ok((
            Ingest {
                poll,
                udp,
                listener,
                conns: Slab::new(),
                owners: HashMap::new(),
                blocked: BTreeSet::new(),
                registry,
                shutdown,
                udp_buf: vec![0; UDP_BUF],
                udp_backlog: false,
                log_limit: RateLimit::new(Duration::from_secs(10)),
                watchdog,
            },
            waker,
        ))
    }

    pub fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut next_tick = Instant::now() + TICK;
        while !self.shutdown.load(Acquire) {
            let mut wake_at = next_tick;
            if let Some(w) = &mut self.watchdog {
                wake_at = wake_at.min(w.tick(Instant::now()));
            }
            let timeout = if self.udp_backlog {
                Duration::ZERO
            } else if !self.blocked.is_empty() {
                RETRY
            } else {
                wake_at.saturating_duration_since(Instant::now())
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                log::error!("ingest poll failed: {e}");
                break;
            }
            let now = Instant::now();
            for ev in events.iter() {
                match ev.token() {
                    UDP => self.udp_backlog = true,
                    LISTENER => self.accept(now),
                    WAKER => {}
                    Token(key) => {
                        if ev.is_writable() {
                            self.flush(key);
                        }
                        if ev.is_readable() || ev.is_read_closed() {
                            self.on_readable(key, now);
                        }
                    }
                }
            }
            if self.udp_backlog {
                self.on_udp(now);
            }
            for key in std::mem::take(&mut self.blocked) {
                self.on_readable(key, now);
            }
            if now >= next_tick {
                self.on_tick(now);
                next_tick = now + TICK;
            }
        }
        log::debug!(
            "ingest loop stopped; {} tcp connections open",
            self.conns.len()
        );
    }

    fn on_udp(&mut self, now: Instant) {
        for _ in 0..UDP_BATCH {
            match self.udp.recv_from(&mut self.udp_buf) {
                Ok((n, peer)) => {
                    self.registry.stats.frames_received.fetch_add(1, Relaxed);
                    let max = self.registry.live.max_frame_bytes();
                    match proto::decode(&self.udp_buf[..n], max) {
                        Ok(frame) => self.on_udp_frame(frame, peer, now),
                        Err(rej) => self.reject(&rej, peer),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.udp_backlog = false;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::warn!("udp receive failed: {e}");
                    self.udp_backlog = false;
                    return;
                }
            }
        }
        // More may be queued: come back after serving the other sockets.
        self.udp_backlog = true;
    }

    fn on_udp_frame(&mut self, frame: Frame, peer: SocketAddr, now: Instant) {
        let Some(id) = frame.worker_id().cloned() else {
            let rej = Reject::new(RejectReason::BadWorkerId, "worker_id is required over UDP");
            return self.reject(&rej, peer);
        };
        let mut msg = Msg::Frame(Box::new(frame), Transport::Udp, now);
        // Twice at most: the worker may be removed between lookup and send.
        for _ in 0..2 {
            let handle = match self.registry.route(&id, Transport::Udp) {
                Ok(h) => h,
                Err(reason) => {
                    return self.reject(&Reject::new(reason, format!("worker {id} refused")), peer);
                }
            };
            match handle.inbox.try_send(msg) {
                Ok(()) => return,
                Err(TrySendError::Full(_)) => {
                    self.registry.stats.drop_frame(DropReason::InboxFull);
                    self.log_limit.warn("udp_inbox_full", || {
                        format!("dropped udp frame worker={id}: inbox full (worker thread behind)")
                    });
                    return;
                }
                Err(TrySendError::Disconnected(m)) => msg = m,
            }
        }
        self.registry.stats.drop_frame(DropReason::ShuttingDown);
    }

    /// Count a refused frame, blame its worker if it named one, log (limited).
    fn reject(&self, rej: &Reject, peer: SocketAddr) {
        self.registry.stats.reject(rej.reason);
        if let Some(id) = &rej.worker_id {
            if let Some(h) = self.registry.handle(id) {
                let _ = h.inbox.try_send(Msg::Rejected);
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

    fn accept(&mut self, now: Instant) {
        loop {
            match self.listener.accept() {
                Ok((stream, peer)) => {
                    // Replies are single lines, each written whole.
                    let _ = stream.set_nodelay(true);
                    let stats = &self.registry.stats;
                    if self.conns.len() >= self.registry.live.max_workers() + TCP_SLACK {
                        stats.tcp_refused_full.fetch_add(1, Relaxed);
                        self.log_limit.warn("tcp_full", || {
                            format!("refusing tcp peer={peer}: too many connections")
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
                    stats.tcp_accepted.fetch_add(1, Relaxed);
                    stats.tcp_open.store(self.conns.len(), Relaxed);
                    log::debug!("tcp connect peer={peer}");
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::warn!("tcp accept failed: {e}");
                    return;
                }
            }
        }
    }

    /// Deliver the parked frame, then every buffered line, then read more;
    /// stop early when an inbox is full (the connection goes to `blocked`).
    fn on_readable(&mut self, key: usize, now: Instant) {
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
            let max = self.registry.live.max_frame_bytes();
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
            let (id, handle) = conn.worker.as_ref()?;
            let handle: Arc<Handle> = if handle.is_stopped() {
                // Forgotten (DELETE or eviction) while connected: start afresh.
                match self.registry.route(id, Transport::Tcp) {
                    Ok(h) => {
                        conn.worker = Some((id.clone(), h.clone()));
                        h
                    }
                    Err(reason) => {
                        self.registry.stats.reject(reason);
                        conn.send(&proto::encode_error(reason.as_str(), "worker refused"));
                        conn.closing = true;
                        return None;
                    }
                }
            } else {
                handle.clone()
            };
            match handle.inbox.try_send(msg) {
                Ok(()) => return None,
                Err(TrySendError::Full(m)) => return Some(m),
                Err(TrySendError::Disconnected(m)) => {
                    msg = m;
                    handle.stop();
                }
            }
        }
        self.registry.stats.drop_frame(DropReason::ShuttingDown);
        None
    }

    fn on_frame(&mut self, key: usize, decoded: Result<Frame, Reject>, now: Instant) {
        self.registry.stats.frames_received.fetch_add(1, Relaxed);
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let peer = conn.peer;
        let bound = conn.worker.as_ref().map(|(id, _)| id.clone());
        let mut frame = match decoded {
            Ok(f) => f,
            Err(mut rej) => {
                conn.send(&proto::encode_error(rej.reason.as_str(), &rej.message));
                rej.worker_id = rej.worker_id.or(bound);
                return self.reject(&rej, peer);
            }
        };
        if let Frame::Hello(h) = &frame {
            return self.on_hello(key, h.worker_id.clone(), frame, now);
        }
        let Some(id) = bound else {
            conn.send(&proto::encode_error("hello_required", "send hello first"));
            conn.closing = true;
            return self.reject(
                &Reject::new(RejectReason::HelloRequired, "frame before hello"),
                peer,
            );
        };
        if frame.worker_id().is_some_and(|f| *f != id) {
            let msg = format!("this connection speaks for {id}");
            conn.send(&proto::encode_error("worker_mismatch", &msg));
            let mut rej = Reject::new(RejectReason::WorkerMismatch, msg);
            rej.worker_id = Some(id);
            return self.reject(&rej, peer);
        }
        frame.set_worker_id(id);
        conn.last_frame = now;
        let msg = Msg::Frame(Box::new(frame), Transport::Tcp, now);
        if let Some(msg) = self.deliver(key, msg) {
            self.park(key, msg);
        }
    }

    fn on_hello(&mut self, key: usize, id: WorkerId, frame: Frame, now: Instant) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let peer = conn.peer;
        if let Some((bound, _)) = &conn.worker {
            if *bound != id {
                let msg = format!("this connection speaks for {bound}");
                conn.send(&proto::encode_error("worker_mismatch", &msg));
                return self.reject(&Reject::new(RejectReason::WorkerMismatch, msg), peer);
            }
        }
        let handle = match self.registry.route(&id, Transport::Tcp) {
            Ok(h) => h,
            Err(reason) => {
                conn.send(&proto::encode_error(reason.as_str(), "max_workers reached"));
                conn.closing = true;
                return self.reject(&Reject::new(reason, format!("worker {id} refused")), peer);
            }
        };
        conn.worker = Some((id.clone(), handle));
        conn.last_frame = now;
        let live = &self.registry.live;
        conn.send(&proto::encode_welcome(
            &id,
            live.heartbeat_interval().as_millis() as u64,
            live.inactivity_timeout().as_millis() as u64,
        ));
        if let Some(old) = self
            .owners
            .insert(id.clone(), key)
            .filter(|&old| old != key)
        {
            if let Some(oc) = self.conns.get_mut(old) {
                oc.send(&proto::encode_error(
                    "superseded",
                    "another connection said hello for this worker",
                ));
                oc.worker = None;
                oc.pending = None;
                oc.closing = true;
                self.registry
                    .stats
                    .tcp_closed_superseded
                    .fetch_add(1, Relaxed);
                log::info!(
                    "worker id={id} reconnected from {peer}; closing its older connection from {}",
                    oc.peer
                );
                self.flush(old);
            }
        }
        let msg = Msg::Frame(Box::new(frame), Transport::Tcp, now);
        if let Some(msg) = self.deliver(key, msg) {
            self.park(key, msg);
        }
    }

    /// Write queued replies; close when asked to and flushed, or when broken.
    fn flush(&mut self, key: usize) {
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
        if let Some((id, _)) = &conn.worker {
            if self.owners.get(id) == Some(&key) {
                self.owners.remove(id);
            }
        }
        self.blocked.remove(&key);
        self.registry
            .stats
            .tcp_open
            .store(self.conns.len(), Relaxed);
        log::debug!("tcp close peer={}", conn.peer);
    }

    /// Close connections silent for 3 × heartbeat_interval.
    fn on_tick(&mut self, now: Instant) {
        let limit = self.registry.live.heartbeat_interval() * 3;
        let silent: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                c.pending.is_none()
                    && !c.closing
                    && now.saturating_duration_since(c.last_frame) >= limit
            })
            .map(|(k, _)| k)
            .collect();
        for key in silent {
            if let Some(conn) = self.conns.get_mut(key) {
                conn.send(&proto::encode_error(
                    "idle_timeout",
                    "no frame for 3 heartbeat intervals",
                ));
                conn.closing = true;
                self.registry.stats.tcp_closed_idle.fetch_add(1, Relaxed);
                log::debug!("tcp idle close peer={}", conn.peer);
            }
            self.flush(key);
        }
    }
}
