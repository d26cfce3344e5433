//! Heartbeat TCP peers: the listener and the connections. Accept, read
//! lines, judge each frame by the session rules (`session`), deliver it to
//! the worker's inbox or park it, answer, supersede, and close.
//!
//! This is the one place that decides a worker is lost to its tasks: its
//! session closed (by the peer, `bye`, idle, superseded by nobody), its
//! worker went inactive by the roll call while the session stayed open
//! (the session is then closed, so the worker reconnects and says hello
//! again), or its worker was forgotten. Each tells the task book once.

use super::Env;
use super::session::{Owners, Verdict};
use super::tcp::{Line, TcpConn};
use crate::fleet::inbox::Msg;
use crate::fleet::snapshot::Transport;
use crate::fleet::worker::Handle;
use crate::logging::RateLimit;
use crate::proto::{self, ErrorCode, Frame, Reject, RejectReason, WorkerId};
use crate::stats::{Counter, DropReason, PerAddress};
use crate::sys::accept::{Accepted, Acceptor};
use crate::sys::stream::Stream;
use crate::tasks::Tasks;
use crate::tasks::adopt::Said;
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry as Poller, Token};
use slab::Slab;
use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::sync::mpsc::TrySendError;
use std::time::{Duration, Instant};

/// TCP connections beyond `max_workers` plus this are refused.
const TCP_SLACK: usize = 64;
/// The listeners' tokens; connections' tokens are their slab keys.
pub const LISTENER: Token = Token(usize::MAX - 2);
pub const LISTENER_TLS: Token = Token(usize::MAX - 4);

pub struct Peers {
    listener: TcpListener,
    acceptor: Acceptor,
    /// The TLS listener, when `heartbeat_tls_cert_file` is set.
    tls: Option<(TcpListener, Acceptor)>,
    conns: Slab<TcpConn<Stream>>,
    /// Workers that said hello with a client certificate naming them: a
    /// hello without one (plain TCP, or TLS without a client CA) may not
    /// speak for them while they are known.
    certified: HashSet<WorkerId>,
    /// Open connections by address, for `tcp_max_connections_per_ip`.
    per_ip: PerAddress,
    /// Which connection speaks for each TCP worker.
    owners: Owners,
    /// Connections with a parked frame or unread input.
    blocked: BTreeSet<usize>,
    /// The task book: frames about tasks go there, and lost workers.
    tasks: Arc<Tasks>,
    log_limit: RateLimit,
    /// The daemon is stopping: sessions closing now are not workers lost.
    stopping: bool,
}

impl Peers {
    pub fn new(
        (mut listener, tls): (TcpListener, Option<TcpListener>),
        poller: &Poller,
        tasks: Arc<Tasks>,
    ) -> std::io::Result<Peers> {
        poller.register(&mut listener, LISTENER, Interest::READABLE)?;
        let tls = match tls {
            Some(mut l) => {
                poller.register(&mut l, LISTENER_TLS, Interest::READABLE)?;
                Some((l, Acceptor::new()))
            }
            None => None,
        };
        Ok(Peers {
            listener,
            acceptor: Acceptor::new(),
            tls,
            conns: Slab::new(),
            certified: HashSet::new(),
            per_ip: PerAddress::default(),
            owners: Owners::default(),
            blocked: BTreeSet::new(),
            tasks,
            log_limit: RateLimit::new(Duration::from_secs(10)),
            stopping: false,
        })
    }

    /// Which connection speaks for each TCP worker.
    pub fn owners(&self) -> &Owners {
        &self.owners
    }

    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// A listener is readable: the plain one, or with `tls` the TLS one.
    pub fn ready(&mut self, tls: bool) {
        match (&mut self.tls, tls) {
            (Some((_, a)), true) => a.ready(),
            _ => self.acceptor.ready(),
        }
    }

    /// Whether the loop must come back soon: a parked frame to retry, or
    /// an accept that failed.
    pub fn wants_retry(&self) -> bool {
        !self.blocked.is_empty()
            || self.acceptor.retry()
            || self.tls.as_ref().is_some_and(|(_, a)| a.retry())
    }

    /// Accept on both listeners until their queues are empty.
    pub fn accept(&mut self, poller: &Poller, env: &Env, now: Instant) {
        let mut accepted = Vec::new();
        if self.acceptor.retry() {
            take(
                &mut self.acceptor,
                &self.listener,
                env,
                &mut self.log_limit,
                false,
                &mut accepted,
            );
        }
        if let Some((l, a)) = &mut self.tls
            && a.retry()
        {
            take(a, l, env, &mut self.log_limit, true, &mut accepted);
        }
        for (stream, peer, tls) in accepted {
            self.admit(poller, env, (stream, tls), peer, now);
        }
    }
}

/// Accept until the queue is empty; refuse connections taken with the
/// reserve descriptor.
fn take(
    acceptor: &mut Acceptor,
    listener: &TcpListener,
    env: &Env,
    log: &mut RateLimit,
    tls: bool,
    accepted: &mut Vec<(TcpStream, std::net::SocketAddr, bool)>,
) {
    let stats = &env.shared.stats;
    acceptor.accept(listener, |a| match a {
        Accepted::Conn(stream, peer) => accepted.push((stream, peer, tls)),
        Accepted::Shed(stream, e) => {
            // Closed at once: the worker reconnects later rather than
            // waiting on a queue nobody can take from.
            log.warn("tcp_accept_shed", || {
                format!("tcp accept failed ({e}): closing the queued connection from the reserve descriptor")
            });
            drop(stream);
            stats.incr(Counter::TcpRefusedNoFds);
        }
        Accepted::Failed(e) => log.warn("tcp_accept", || format!("tcp accept failed: {e}")),
    });
}

impl Peers {
    fn admit(
        &mut self,
        poller: &Poller,
        env: &Env,
        (stream, tls): (TcpStream, bool),
        peer: std::net::SocketAddr,
        now: Instant,
    ) {
        // Replies are single lines, each written whole.
        let _ = stream.set_nodelay(true);
        let stats = &env.shared.stats;
        if !super::allowed(env.cfg, peer.ip()) {
            stats.incr(Counter::TcpNotAllowed);
            self.log_limit.warn("tcp_not_allowed", || {
                format!("refusing tcp peer={peer}: not in heartbeat_allow_from")
            });
            return;
        }
        if self.conns.len() >= env.cfg.fleet.max_workers + TCP_SLACK {
            stats.incr(Counter::TcpRefusedFull);
            self.log_limit.warn("tcp_full", || {
                format!("refusing tcp peer={peer}: too many connections")
            });
            return;
        }
        let max_ip = env.cfg.heartbeats.tcp_max_connections_per_ip;
        if env.cfg.capped(peer.ip()) && self.per_ip.count(peer.ip()) >= max_ip {
            stats.incr(Counter::TcpRefusedPerIp);
            self.log_limit.warn("tcp_per_ip", || {
                format!("refusing tcp peer={peer}: tcp_max_connections_per_ip={max_ip} reached for this address")
            });
            return;
        }
        let stream = match (tls, &env.cfg.heartbeats.tls) {
            (false, _) => Stream::Plain(stream),
            (true, Some(t)) => match rustls::ServerConnection::new(t.server.clone()) {
                Ok(c) => Stream::Tls(Box::new(crate::sys::stream::tls::TlsStream::new(c, stream))),
                Err(e) => {
                    log::warn!("tls heartbeat connection from {peer} not set up: {e}");
                    return;
                }
            },
            // The certificate was removed by a reload: no TLS to speak.
            (true, None) => return,
        };
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let mut conn = TcpConn::new(stream, peer, now);
        if let Err(e) = poller.register(&mut conn.stream, Token(key), Interest::READABLE) {
            log::warn!("tcp register failed peer={peer}: {e}");
            return;
        }
        entry.insert(conn);
        self.per_ip.add(peer.ip());
        stats.incr(Counter::TcpAccepted);
        stats.set(Counter::TcpOpen, self.conns.len() as u64);
        log::debug!("tcp connect peer={peer}");
    }

    /// A connection's readiness.
    pub fn on_event(
        &mut self,
        key: usize,
        readable: bool,
        writable: bool,
        poller: &Poller,
        env: &Env,
        now: Instant,
    ) {
        if writable {
            self.flush(key, poller, env);
        }
        if readable {
            self.on_readable(key, poller, env, now);
        }
    }

    /// Try the parked frames again (their workers' inboxes may have room).
    pub fn retry_blocked(&mut self, poller: &Poller, env: &Env, now: Instant) {
        for key in std::mem::take(&mut self.blocked) {
            self.on_readable(key, poller, env, now);
        }
    }

    /// Deliver the parked frame, then every buffered line, then read more
    /// until the socket would block; stop early when an inbox is full (the
    /// connection goes to `blocked`).
    fn on_readable(&mut self, key: usize, poller: &Poller, env: &Env, now: Instant) {
        let max = env.cfg.heartbeats.max_frame_bytes;
        loop {
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            if conn.closing {
                break;
            }
            if let Some(msg) = conn.pending.take() {
                if let Some(msg) = self.deliver(key, env, msg) {
                    self.park(key, msg);
                    break;
                }
                continue;
            }
            match conn.next_line(max) {
                Line::Frame(range) => {
                    let decoded = proto::decode(conn.bytes(range.clone()), max);
                    conn.consume(range.end);
                    self.on_frame(key, (poller, env), decoded, now);
                    if self.conns.get(key).is_some_and(|c| c.pending.is_some()) {
                        break;
                    }
                }
                Line::TooLong => {
                    let rej = Reject::new(
                        RejectReason::TooLarge,
                        format!("line longer than max_frame_bytes={max}"),
                    );
                    self.on_frame(key, (poller, env), Err(rej), now);
                    if let Some(c) = self.conns.get_mut(key) {
                        c.closing = true;
                    }
                }
                Line::Incomplete if conn.peer_closed => {
                    if let Some(range) = conn.take_tail() {
                        let decoded = proto::decode(conn.bytes(range.clone()), max);
                        conn.consume(range.end);
                        self.on_frame(key, (poller, env), decoded, now);
                        continue;
                    }
                    conn.closing = true;
                }
                Line::Incomplete => match conn.read_some(max) {
                    Ok(true) => {}
                    Ok(false) if conn.peer_closed => {}
                    Ok(false) => break,
                    Err(e) => {
                        conn.closing = true;
                        conn.peer_closed = true;
                        if e.kind() == std::io::ErrorKind::InvalidData && conn.stream.handshaking()
                        {
                            env.shared.stats.incr(Counter::TcpTlsFailed);
                            let peer = conn.peer;
                            self.log_limit.warn("tcp_tls_failed", || {
                                format!("tls heartbeat handshake from {peer} failed: {e}")
                            });
                        }
                    }
                },
            }
        }
        self.flush(key, poller, env);
    }

    /// A `task_update`, `task_log` or `task_progress` from a bound
    /// session; one about a task the worker does not hold is answered
    /// with an error.
    fn on_task_frame(&mut self, key: usize, said: Said) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let Some(id) = conn.session.worker().cloned() else {
            return;
        };
        let (task_id, r) = match said {
            Said::Update(u) => (u.task_id.clone(), self.tasks.on_update(&id, u)),
            Said::Log(l) => (l.task_id.clone(), self.tasks.on_log(&id, l)),
            Said::Progress(p) => (p.task_id.clone(), self.tasks.on_progress(&id, p)),
        };
        if let (Err(crate::tasks::NotHeld), Some(conn)) = (r, self.conns.get_mut(key)) {
            conn.send(&proto::encode_task_error(
                ErrorCode::TaskNotHeld,
                &task_id,
                &format!("task {task_id} is not held by {id}"),
            ));
            self.log_limit.warn("task_not_held", || {
                format!(
                    "refused an update for task {task_id} from worker {id}: it does not hold it"
                )
            });
        }
    }

    /// A hello for `id` that the connection's certificate (or its lack of
    /// one) does not allow: refused as `worker_mismatch`, and closed.
    fn refuse_identity(&mut self, key: usize, env: &Env, id: &WorkerId, why: &str) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.session.unbind();
        let rej = Reject::new(
            RejectReason::WorkerMismatch,
            format!("hello for worker {id} refused: {why}"),
        );
        conn.send(&proto::encode_error(rej.reason, &rej.message));
        conn.closing = true;
        let peer = conn.peer;
        super::reject(env, &mut self.log_limit, &rej, peer);
    }

    /// A line from the task book for a worker's session; a worker with no
    /// session has lost its tasks.
    pub fn send_line(&mut self, id: &WorkerId, line: &[u8], poller: &Poller, env: &Env) {
        match self.owners.owner(id) {
            Some(key) => {
                if let Some(c) = self.conns.get_mut(key) {
                    c.send(line);
                }
                self.flush(key, poller, env);
            }
            None => self.tasks.on_lost(id, "no session to send it to"),
        }
    }

    /// Shutdown: offer a parked frame to its worker once more; whether
    /// any is still parked.
    pub fn deliver_parked(&mut self, env: &Env) -> bool {
        for key in std::mem::take(&mut self.blocked) {
            let Some(msg) = self.conns.get_mut(key).and_then(|c| c.pending.take()) else {
                continue;
            };
            if let Some(msg) = self.deliver(key, env, msg) {
                self.park(key, msg);
            }
        }
        !self.blocked.is_empty()
    }

    /// Shutdown: tell every worker `shutting_down` and close once flushed.
    pub fn say_goodbye(&mut self, poller: &Poller, env: &Env) {
        self.stopping = true;
        let line = proto::encode_error(ErrorCode::ShuttingDown, "musterd is shutting down");
        for key in self.keys() {
            if let Some(c) = self.conns.get_mut(key) {
                c.send(&line);
                c.closing = true;
            }
            self.flush(key, poller, env);
        }
    }

    /// Shutdown: write what each connection still owes; whether any is
    /// left open.
    pub fn flush_all(&mut self, poller: &Poller, env: &Env) -> bool {
        for key in self.keys() {
            self.flush(key, poller, env);
        }
        !self.conns.is_empty()
    }

    fn keys(&self) -> Vec<usize> {
        self.conns.iter().map(|(k, _)| k).collect()
    }

    fn park(&mut self, key: usize, msg: Msg) {
        if let Some(conn) = self.conns.get_mut(key) {
            conn.pending = Some(msg);
            self.blocked.insert(key);
        }
    }

    /// Try the connection's worker inbox; give the message back when full.
    fn deliver(&mut self, key: usize, env: &Env, mut msg: Msg) -> Option<Msg> {
        for _ in 0..2 {
            let conn = self.conns.get_mut(key)?;
            let id = conn.session.worker()?.clone();
            let handle: Arc<Handle> = match &conn.handle {
                Some(h) if !h.is_stopped() => h.clone(),
                // Forgotten (DELETE or eviction) while connected: start afresh.
                _ => match env.registry.route(&id, Transport::Tcp) {
                    Ok(h) => {
                        conn.handle = Some(h.clone());
                        h
                    }
                    Err(reason) => {
                        env.shared.stats.reject(reason);
                        conn.send(&proto::encode_error(reason, "worker refused"));
                        conn.closing = true;
                        return None;
                    }
                },
            };
            match handle
                .inbox
                .send(msg, env.cfg.heartbeats.max_pending_events)
            {
                Ok(()) => return None,
                Err(TrySendError::Full(m)) => return Some(m),
                Err(TrySendError::Disconnected(m)) => {
                    msg = m;
                    handle.stop();
                }
            }
        }
        env.shared.stats.drop_frame(DropReason::ShuttingDown);
        None
    }

    fn on_frame(
        &mut self,
        key: usize,
        (poller, env): (&Poller, &Env),
        decoded: Result<Frame, Reject>,
        now: Instant,
    ) {
        env.shared.stats.incr(Counter::FramesReceived);
        let max_state = env.cfg.heartbeats.max_worker_state_bytes;
        let decoded = decoded.and_then(|f| proto::within_state(f, max_state));
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let peer = conn.peer;
        let token = env.cfg.heartbeats.token.as_ref();
        match conn.session.on_frame(decoded, token, now) {
            Verdict::Refuse { reject, close } => {
                conn.send(&proto::encode_error(reject.reason, &reject.message));
                conn.closing |= close;
                super::reject(env, &mut self.log_limit, &reject, peer);
            }
            Verdict::Hello(id, frame) => self.on_hello(key, (poller, env), id, frame, now),
            Verdict::Deliver(Frame::TaskUpdate(u)) => self.on_task_frame(key, Said::Update(u)),
            Verdict::Deliver(Frame::TaskLog(l)) => self.on_task_frame(key, Said::Log(l)),
            Verdict::Deliver(Frame::TaskProgress(p)) => {
                self.on_task_frame(key, Said::Progress(p));
            }
            Verdict::Deliver(frame) => {
                if let (Frame::Bye { .. }, Some(id)) = (&frame, conn.session.worker()) {
                    self.tasks.on_lost(id, "worker said bye");
                }
                let msg = Msg::frame(frame, Transport::Tcp, now);
                if let Some(msg) = self.deliver(key, env, msg) {
                    self.park(key, msg);
                }
            }
        }
    }

    fn on_hello(
        &mut self,
        key: usize,
        (poller, env): (&Poller, &Env),
        id: WorkerId,
        frame: Frame,
        now: Instant,
    ) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let peer = conn.peer;
        let certified = match conn.stream.peer_certificate().map(identity) {
            Some(Some(cn)) if *cn == *id => true,
            Some(Some(cn)) => {
                return self.refuse_identity(
                    key,
                    env,
                    &id,
                    &format!("the client certificate is worker {cn}'s"),
                );
            }
            Some(None) => {
                return self.refuse_identity(
                    key,
                    env,
                    &id,
                    "the client certificate's subject names no worker (no CN)",
                );
            }
            None if self.certified.contains(&id) => {
                return self.refuse_identity(key, env, &id, "it holds a client certificate: only a connection that presents it may speak for it");
            }
            None => false,
        };
        if certified {
            self.certified.insert(id.clone());
        }
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let handle = match env.registry.route(&id, Transport::Tcp) {
            Ok(h) => h,
            Err(reason) => {
                conn.session.unbind();
                conn.send(&proto::encode_error(reason, "max_workers reached"));
                conn.closing = true;
                let rej = Reject::new(reason, format!("worker {id} refused"));
                return super::reject(env, &mut self.log_limit, &rej, peer);
            }
        };
        conn.handle = Some(handle);
        conn.send(&proto::encode_welcome(
            &id,
            env.cfg.fleet.heartbeat_interval.as_millis() as u64,
            env.cfg.fleet.inactivity_timeout.as_millis() as u64,
            self.tasks.nodes(),
        ));
        if let Some(old) = self.owners.claim(&id, key) {
            self.supersede(old, &id, peer, poller, env);
        }
        if let Frame::Hello(h) = &frame {
            let labels = h.labels.clone().unwrap_or_default();
            let types = h.task_types.clone();
            let running = h.running.as_deref().unwrap_or_default();
            self.tasks
                .on_hello(&id, h.capacity.unwrap_or(0), types, labels, running);
        }
        let msg = Msg::frame(frame, Transport::Tcp, now);
        if let Some(msg) = self.deliver(key, env, msg) {
            self.park(key, msg);
        }
    }

    /// Close an older connection of a worker that said hello again. Its
    /// tasks stay the worker's: the new session speaks for it.
    fn supersede(
        &mut self,
        old: usize,
        id: &WorkerId,
        peer: std::net::SocketAddr,
        poller: &Poller,
        env: &Env,
    ) {
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
        env.shared.stats.incr(Counter::TcpClosedSuperseded);
        log::info!(
            "worker id={id} reconnected from {peer}; closing its older connection from {}",
            oc.peer
        );
        self.flush(old, poller, env);
    }

    /// Write queued replies; close when asked to and flushed, or when broken.
    fn flush(&mut self, key: usize, poller: &Poller, env: &Env) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let broken = conn.flush().is_err();
        let done = conn.closing && conn.flushed() || conn.peer_closed && conn.pending.is_none();
        if broken || done {
            return self.close(key, poller, env);
        }
        let want = conn.interest();
        if want != conn.registered {
            if poller
                .reregister(&mut conn.stream, Token(key), want)
                .is_ok()
            {
                conn.registered = want;
            } else {
                self.close(key, poller, env);
            }
        }
    }

    fn close(&mut self, key: usize, poller: &Poller, env: &Env) {
        if !self.conns.contains(key) {
            return;
        }
        let mut conn = self.conns.remove(key);
        let _ = poller.deregister(&mut conn.stream);
        self.per_ip.remove(conn.peer.ip());
        if let Some(id) = conn.session.worker() {
            // The worker's last session: the tasks it held go back, but
            // not for a stop of a single node, which keeps them for the
            // workers to re-report when it is back.
            let kept = self.stopping && self.tasks.keeps_held_through_a_stop();
            if self.owners.release(id, key) && !kept {
                self.tasks.on_lost(id, "its session closed");
            }
        }
        self.blocked.remove(&key);
        env.shared
            .stats
            .set(Counter::TcpOpen, self.conns.len() as u64);
        log::debug!("tcp close peer={}", conn.peer);
    }

    /// On the loop's tick, O(connections): close connections silent for
    /// 3 × heartbeat_interval, and sessions whose worker the roll call
    /// judged inactive since their hello; tell the task book of workers
    /// forgotten while connected.
    pub fn on_tick(&mut self, poller: &Poller, env: &Env, now: Instant) {
        let limit = env.cfg.fleet.heartbeat_interval * 3;
        let mut ended = Vec::new();
        for (key, c) in self.conns.iter_mut() {
            if c.pending.is_some() || c.closing {
                continue;
            }
            if c.session.is_idle(now, limit) {
                c.send(&proto::encode_error(
                    ErrorCode::IdleTimeout,
                    "no frame for 3 heartbeat intervals",
                ));
                env.shared.stats.incr(Counter::TcpClosedIdle);
                ended.push(key);
                continue;
            }
            let (Some(id), Some(h)) = (c.session.worker(), &c.handle) else {
                continue;
            };
            if h.is_stopped() {
                // Forgotten while connected: its tasks go back; its next
                // frame brings it back as a new worker.
                self.tasks.on_lost(id, "worker forgotten");
                c.handle = None;
                continue;
            }
            let s = h.snapshot();
            // Judged on this session's frames only: a hello not yet applied
            // leaves the state of the session before.
            let this_session = c.session.bound_at().is_some_and(|b| s.last_seen >= b);
            if s.inactive && this_session {
                c.send(&proto::encode_error(
                    ErrorCode::IdleTimeout,
                    "silent past inactivity_timeout",
                ));
                ended.push(key);
            }
        }
        for key in ended {
            if let Some(c) = self.conns.get_mut(key) {
                c.closing = true;
                log::debug!("tcp close peer={}: silent", c.peer);
            }
            self.flush(key, poller, env);
        }
    }
}

/// The worker id a verified client certificate names: its subject's CN.
fn identity(der: &[u8]) -> Option<String> {
    let der = rustls::pki_types::CertificateDer::from(der);
    let cert = webpki::EndEntityCert::try_from(&der).ok()?;
    proto::cert::common_name(cert.subject()).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{self, Config};
    use crate::fleet::Shared;
    use crate::fleet::registry::Registry;
    use mio::{Events, Poll};
    use std::io::{ErrorKind, Read, Write};
    use std::net::SocketAddr;

    /// The peers on a loopback listener, driven turn by turn as the ingest
    /// loop drives them, and a task book that dispatches to anyone.
    struct Rig {
        poll: Poll,
        events: Events,
        peers: Peers,
        registry: Arc<Registry>,
        shared: Arc<Shared>,
        cfg: Config,
        tasks: Arc<Tasks>,
        at: SocketAddr,
    }

    /// A worker's end of a connection: lines out, lines back.
    struct Client {
        stream: std::net::TcpStream,
        got: Vec<u8>,
    }

    impl Rig {
        fn new() -> Rig {
            let cfg = config::defaults();
            let shared = Arc::new(Shared::new(cfg.clone()));
            let registry = Arc::new(Registry::new(shared.clone()));
            let tasks = Tasks::open(None, shared.clone(), crate::tasks::unlinked(), None).tasks;
            let poll = Poll::new().unwrap();
            let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
            let at = listener.local_addr().unwrap();
            let peers = Peers::new((listener, None), poll.registry(), tasks.clone()).unwrap();
            Rig {
                poll,
                events: Events::with_capacity(64),
                peers,
                registry,
                shared,
                cfg,
                tasks,
                at,
            }
        }

        /// One loop turn: readiness in, accept, retry what is parked.
        fn turn(&mut self) {
            self.poll
                .poll(&mut self.events, Some(Duration::from_millis(5)))
                .unwrap();
            let env = Env {
                registry: &self.registry,
                shared: &self.shared,
                cfg: &self.cfg,
            };
            let poller = self.poll.registry();
            let now = Instant::now();
            for ev in self.events.iter() {
                match ev.token() {
                    LISTENER => self.peers.ready(false),
                    Token(key) => {
                        let readable = ev.is_readable() || ev.is_read_closed();
                        self.peers
                            .on_event(key, readable, ev.is_writable(), poller, &env, now);
                    }
                }
            }
            self.peers.accept(poller, &env, now);
            self.peers.retry_blocked(poller, &env, now);
        }

        fn until(&mut self, what: &str, done: impl Fn(&Rig) -> bool) {
            let deadline = Instant::now() + Duration::from_secs(5);
            while !done(self) {
                assert!(Instant::now() < deadline, "{what}: not within 5 s");
                self.turn();
            }
        }

        fn connect(&mut self) -> Client {
            let stream = std::net::TcpStream::connect(self.at).unwrap();
            stream.set_nonblocking(true).unwrap();
            let n = self.peers.len();
            self.until("accepted", |r| r.peers.len() == n + 1);
            Client {
                stream,
                got: Vec::new(),
            }
        }

        /// The next line the daemon sent `c`, turning the loop meanwhile.
        fn line(&mut self, c: &mut Client) -> String {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                if let Some(end) = c.got.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = c.got.drain(..=end).collect();
                    return String::from_utf8(line).unwrap();
                }
                assert!(Instant::now() < deadline, "no line within 5 s");
                self.turn();
                let mut buf = [0u8; 4096];
                match c.stream.read(&mut buf) {
                    Ok(0) => panic!("closed with {:?} unread", c.got),
                    Ok(n) => c.got.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => panic!("{e}"),
                }
            }
        }

        /// Whether the daemon closed `c` (after any lines it sent).
        fn closed(&mut self, c: &mut Client) -> bool {
            self.turn();
            let mut buf = [0u8; 4096];
            loop {
                match c.stream.read(&mut buf) {
                    Ok(0) => return true,
                    Ok(n) => c.got.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
                    Err(_) => return true,
                }
            }
        }
    }

    impl Client {
        fn send(&mut self, line: &str) {
            self.stream
                .write_all(format!("{line}\n").as_bytes())
                .unwrap();
        }
    }

    impl Drop for Rig {
        fn drop(&mut self) {
            self.registry
                .shutdown(Instant::now() + Duration::from_secs(5));
        }
    }

    /// A hello is welcomed, its heartbeats reach the worker, and a line
    /// that is not a frame is answered with its error and counted.
    #[test]
    fn a_hello_is_welcomed_and_its_heartbeats_reach_the_worker() {
        let mut rig = Rig::new();
        let mut c = rig.connect();
        c.send(r#"{"type":"hello","worker_id":"p1","pid":42}"#);
        let welcome = rig.line(&mut c);
        assert!(welcome.contains(r#""type":"welcome""#), "{welcome}");
        assert!(welcome.contains(r#""worker_id":"p1""#), "{welcome}");
        c.send(r#"{"type":"heartbeat","worker_id":"p1","queue_depth":7}"#);
        rig.until("the heartbeat applied", |r| {
            r.registry
                .snapshot("p1")
                .is_some_and(|s| s.queue_depth == 7)
        });
        let hello = rig.registry.snapshot("p1").unwrap().hello.clone();
        assert_eq!(hello.and_then(|h| h.pid), Some(42));

        c.send("not json");
        let error = rig.line(&mut c);
        assert!(error.contains(r#""code":"not_json""#), "{error}");
        assert_eq!(rig.shared.stats.rejected(RejectReason::NotJson), 1);
        // A frame that names another worker is refused on this session.
        c.send(r#"{"type":"heartbeat","worker_id":"someone-else"}"#);
        let error = rig.line(&mut c);
        assert!(error.contains("worker_mismatch"), "{error}");
        assert!(rig.registry.snapshot("someone-else").is_none());
    }

    /// The tasks a worker holds go back to the queue when its last session
    /// closes, and not when a newer session supersedes an older one.
    #[test]
    fn a_closed_session_returns_its_tasks_and_a_superseded_one_keeps_them() {
        let mut rig = Rig::new();
        let mut first = rig.connect();
        first.send(r#"{"type":"hello","worker_id":"p2","capacity":1}"#);
        rig.line(&mut first);
        let (cfg, ack): (_, crate::tasks::journal::Ack) = (rig.cfg.clone(), Box::new(|_| {}));
        rig.tasks
            .submit(
                crate::tasks::Submission::of(br#"{"type":"scan"}"#),
                &cfg,
                ack,
            )
            .unwrap();
        rig.until("the worker eligible", |r| {
            r.registry.snapshot("p2").is_some()
        });
        rig.tasks.tick();
        assert_eq!(rig.tasks.held_by("p2"), 1, "dispatched to p2");

        // The worker reconnects: the old session is told and closed, and
        // the task stays with the worker.
        let mut second = rig.connect();
        second.send(r#"{"type":"hello","worker_id":"p2","capacity":1}"#);
        rig.line(&mut second);
        let told = rig.line(&mut first);
        assert!(told.contains("superseded"), "{told}");
        rig.until("the old session closed", |r| r.peers.len() == 1);
        assert!(rig.closed(&mut first));
        assert_eq!(
            rig.tasks.held_by("p2"),
            1,
            "a superseded session loses nothing"
        );

        // The last session closes: the task is queued again.
        drop(second);
        rig.until("the session closed", |r| r.peers.len() == 0);
        assert_eq!(rig.tasks.held_by("p2"), 0);
        assert_eq!(rig.tasks.queued(), 1);
    }
}
