//! The ingest thread: one mio `Poll` over the heartbeat UDP socket, the TCP
//! listener and the TCP connections. It decodes frames (through the pure
//! `proto` module), routes them to workers' inboxes, and answers TCP peers.
//!
//! - `udp`: datagrams in batches → decode → route.
//! - `peers`: TCP connections: accept, read lines, deliver, answer, close.
//! - `tcp`: one connection's buffers; `session`: the TCP session rules.
//!
//! Delivery rules: over UDP a full inbox drops the frame and counts it; over
//! TCP a full inbox parks the frame on its connection and stops reading that
//! connection until the inbox has room (tried every [`RETRY`]), so nothing a
//! TCP peer sent is lost. A burst of UDP is read in batches of
//! [`UDP_BATCH`] so TCP peers are served between batches.
//!
//! This loop never touches the HTTP side; it reaches the rest of the daemon
//! through the registry and the [`Shared`] context only.

mod peers;
pub mod session;
pub mod tcp;
mod udp;

use crate::config::View;
use crate::fleet::Shared;
use crate::fleet::registry::Registry;
use crate::logging::RateLimit;
use crate::proto;
use crate::proto::WorkerId;
use crate::sys::systemd::{Progress, Watchdog};
use crate::tasks::Tasks;
use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token, Waker};
use session::Owners;
use slab::Slab;
use std::collections::BTreeSet;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Acquire};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};
use tcp::TcpConn;

const UDP: Token = Token(usize::MAX - 1);
const LISTENER: Token = Token(usize::MAX - 2);
const WAKER: Token = Token(usize::MAX - 3);
/// Longest time shutdown spends on parked frames and goodbyes.
const GOODBYE: Duration = Duration::from_secs(1);
/// Datagrams read before the loop looks at other sockets.
pub const UDP_BATCH: usize = 256;
/// Least time between two reads of a busy UDP socket. Datagrams that come
/// sooner wait in the kernel's buffer and are read together, up to 64 a
/// system call: at 100,000 a second that is about 2 reads a millisecond
/// instead of a wake for every few datagrams. A quiet socket is read the
/// moment a datagram arrives.
const UDP_PACE: Duration = Duration::from_millis(1);
/// How often parked TCP frames retry their worker's inbox, and a failed
/// accept (EMFILE) is tried again.
pub const RETRY: Duration = Duration::from_millis(2);
/// Idle connections are looked for on this tick; an idle loop goes round
/// at least this often.
pub const TICK: Duration = Duration::from_millis(500);

pub struct Ingest {
    poll: Poll,
    udp: UdpSocket,
    listener: TcpListener,
    conns: Slab<TcpConn<TcpStream>>,
    /// Open connections by address, for `tcp_max_connections_per_ip`.
    per_ip: crate::stats::PerAddress,
    /// Which connection speaks for each TCP worker.
    owners: Owners,
    /// Connections with a parked frame or unread input.
    blocked: BTreeSet<usize>,
    registry: Arc<Registry>,
    shared: Arc<Shared>,
    config: View,
    shutdown: Arc<AtomicBool>,
    /// The `recvmmsg` slots, and a batch's frames on their way to workers.
    dgrams: crate::sys::mmsg::Datagrams,
    routed: Vec<udp::Routed>,
    order: Vec<(u64, usize)>,
    udp_backlog: bool,
    /// When the UDP socket was last read empty, and, when that came
    /// within [`UDP_PACE`] of the one before, when to read it next.
    udp_drained: Instant,
    udp_rest_until: Option<Instant>,
    /// The last accept failed (descriptors exhausted): try again soon,
    /// since connections already queued raise no new readiness.
    accept_retry: bool,
    /// A descriptor kept to take and close a connection when none is free.
    reserve: crate::sys::fds::Reserve,
    log_limit: RateLimit,
    /// The systemd watchdog, when HTTP is off and this loop proves liveness;
    /// otherwise the HTTP loop's watchdog watches this loop's progress.
    watchdog: Option<Watchdog>,
    progress: Progress,
    /// The task book (frames about tasks go there) and the lines it sends
    /// to workers' sessions.
    tasks: Arc<Tasks>,
    outbox: Receiver<(WorkerId, Vec<u8>)>,
}

impl Ingest {
    pub fn new(
        mut udp: UdpSocket,
        mut listener: TcpListener,
        registry: Arc<Registry>,
        shared: Arc<Shared>,
        shutdown: Arc<AtomicBool>,
        liveness: (Option<Watchdog>, Progress),
        tasks: (Arc<Tasks>, Receiver<(WorkerId, Vec<u8>)>),
    ) -> io::Result<(Ingest, Arc<Waker>)> {
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut udp, UDP, Interest::READABLE)?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tasks, outbox) = tasks;
        let (watchdog, progress) = liveness;
        let dgrams =
            crate::sys::mmsg::Datagrams::new(udp::slot_for(shared.config.get().max_frame_bytes));
        tasks.outbox.set_waker(waker.clone());
        Ok((
            Ingest {
                poll,
                udp,
                listener,
                conns: Slab::new(),
                per_ip: Default::default(),
                owners: Owners::default(),
                blocked: BTreeSet::new(),
                registry,
                config: shared.config.view(),
                shared,
                shutdown,
                dgrams,
                routed: Vec::with_capacity(crate::sys::mmsg::BATCH),
                order: Vec::with_capacity(crate::sys::mmsg::BATCH),
                udp_backlog: false,
                udp_drained: Instant::now(),
                udp_rest_until: None,
                accept_retry: false,
                reserve: crate::sys::fds::Reserve::new(),
                log_limit: RateLimit::new(Duration::from_secs(10)),
                watchdog,
                progress,
                tasks,
                outbox,
            },
            waker,
        ))
    }

    pub fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut next_tick = Instant::now() + TICK;
        while !self.shutdown.load(Acquire) {
            if let Some(t) = self.udp_rest_until.take() {
                std::thread::sleep(t.saturating_duration_since(Instant::now()));
            }
            self.progress.mark(Instant::now());
            let mut wake_at = next_tick;
            if let Some(w) = &mut self.watchdog {
                wake_at = wake_at.min(w.tick(Instant::now()));
            }
            let timeout = if self.udp_backlog {
                Duration::ZERO
            } else if !self.blocked.is_empty() || self.accept_retry {
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
            self.config.refresh(&self.shared.config);
            let now = Instant::now();
            for ev in events.iter() {
                match ev.token() {
                    UDP => self.udp_backlog = true,
                    LISTENER => self.accept_retry = true,
                    WAKER => self.send_tasks(),
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
            if self.accept_retry {
                self.accept(now);
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
        self.goodbye();
    }

    /// Shutdown: hand every parked frame to its worker (they are still
    /// running and drain their inboxes), then tell each TCP worker
    /// `shutting_down` before its connection closes, so that its client
    /// reconnects to the next musterd instead of guessing. Bounded by
    /// [`GOODBYE`].
    fn goodbye(&mut self) {
        let deadline = Instant::now() + GOODBYE;
        let now = Instant::now();
        while !self.blocked.is_empty() && Instant::now() < deadline {
            for key in std::mem::take(&mut self.blocked) {
                self.deliver_parked(key);
            }
            if !self.blocked.is_empty() {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let line = proto::encode_error(proto::ErrorCode::ShuttingDown, "musterd is shutting down");
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for &key in &keys {
            if let Some(c) = self.conns.get_mut(key) {
                c.send(&line);
                c.closing = true;
            }
            self.flush(key);
        }
        // The line is short: it fits any socket buffer but a full one.
        while !self.conns.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
            for &key in &keys {
                self.flush(key);
            }
        }
        log::debug!(
            "ingest loop stopped in {} ms; {} tcp connections left unflushed",
            now.elapsed().as_millis(),
            self.conns.len()
        );
    }
}

/// Whether heartbeats are taken from `ip` (`heartbeat_allow_from`).
fn allowed(cfg: &crate::config::Config, ip: std::net::IpAddr) -> bool {
    cfg.heartbeat_allow_from
        .as_ref()
        .is_none_or(|blocks| blocks.iter().any(|b| b.contains(ip)))
}
