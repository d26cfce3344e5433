//! The ingest thread: one mio `Poll` over the heartbeat UDP socket, the TCP
//! listener and the TCP connections, and its mailbox of [`News`]. It
//! decodes frames (through the pure `proto` module), routes them to
//! workers' inboxes, and answers TCP peers.
//!
//! - `udp`: the UDP socket: datagrams in batches → decode → route.
//! - `peers`: the listener and the TCP connections: accept, read lines,
//!   deliver, answer, close; the one place that says a worker is lost.
//! - `tcp`: one connection's buffers; `session`: the TCP session rules.
//!
//! Delivery rules: over UDP a full inbox drops the frame and counts it; over
//! TCP a full inbox parks the frame on its connection and stops reading that
//! connection until the inbox has room (tried every [`RETRY`]), so nothing a
//! TCP peer sent is lost. A burst of UDP is read in batches so TCP peers
//! are served between batches.
//!
//! This loop never touches the HTTP side; it reaches the rest of the daemon
//! through the registry, the [`Shared`] context and the task book. Lines
//! for workers come through its mailbox from the task book.

mod peers;
pub mod session;
pub mod tcp;
mod udp;

use crate::config::{Config, View};
use crate::fleet::Shared;
use crate::fleet::notify::Mailbox;
use crate::fleet::registry::Registry;
use crate::logging::RateLimit;
use crate::proto::{Reject, WorkerId};
use crate::sys::systemd::{Progress, Watchdog};
use crate::tasks::{Outbox, Tasks};
use mio::net::{TcpListener, UdpSocket};
use mio::{Events, Interest, Poll, Token};
use peers::Peers;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use udp::UdpIntake;

pub(crate) const UDP: Token = Token(usize::MAX - 1);
/// The token of the loop's waker: the daemon makes the waker with it.
pub const WAKER: Token = Token(usize::MAX - 3);
/// Longest time shutdown spends on parked frames and goodbyes.
const GOODBYE: Duration = Duration::from_secs(1);
/// How often parked TCP frames retry their worker's inbox, and a failed
/// accept (EMFILE) is tried again.
pub const RETRY: Duration = Duration::from_millis(2);
/// Idle connections are looked for on this tick; an idle loop goes round
/// at least this often.
pub const TICK: Duration = Duration::from_millis(500);

/// What other threads tell the ingest loop.
#[derive(Debug)]
pub enum News {
    /// A line for a worker's session (a task, a cancel).
    Line(WorkerId, Vec<u8>),
    /// End the loop.
    Stop,
}

/// The task book's lines reach workers through the ingest loop, which
/// owns their sessions.
impl Outbox for Mailbox<News> {
    fn send(&self, worker: WorkerId, line: Vec<u8>) {
        self.post(News::Line(worker, line));
    }
}

/// What the loop's parts read for one event: the fleet and this turn's
/// configuration.
pub struct Env<'a> {
    pub registry: &'a Registry,
    pub shared: &'a Shared,
    pub cfg: &'a Config,
}

/// How the loop proves it is alive: the systemd watchdog when HTTP is off
/// and this loop pings it, and the progress the HTTP loop watches.
pub struct Liveness {
    pub watchdog: Option<Watchdog>,
    pub progress: Progress,
}

pub struct Ingest {
    poll: Poll,
    udp: UdpIntake,
    peers: Peers,
    news: Mailbox<News>,
    registry: Arc<Registry>,
    shared: Arc<Shared>,
    config: View,
    liveness: Liveness,
}

/// The sockets the loop serves.
pub struct Sockets {
    pub udp: UdpSocket,
    pub tcp: TcpListener,
    /// The TLS heartbeat listener, when its certificate is set.
    pub tls: Option<TcpListener>,
}

impl Ingest {
    /// A loop over `poll`, whose waker (on [`WAKER`]) wakes `news`.
    pub fn new(
        poll: Poll,
        mut sockets: Sockets,
        news: Mailbox<News>,
        (registry, shared, tasks): (Arc<Registry>, Arc<Shared>, Arc<Tasks>),
        liveness: Liveness,
    ) -> io::Result<Ingest> {
        poll.registry()
            .register(&mut sockets.udp, UDP, Interest::READABLE)?;
        let peers = Peers::new((sockets.tcp, sockets.tls), poll.registry(), tasks)?;
        let udp = UdpIntake::new(sockets.udp, shared.config.get().heartbeats.max_frame_bytes);
        Ok(Ingest {
            poll,
            udp,
            peers,
            news,
            registry,
            config: shared.config.view(),
            shared,
            liveness,
        })
    }

    pub fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut news = Vec::new();
        let mut next_tick = Instant::now() + TICK;
        'run: loop {
            let now = Instant::now();
            self.liveness.progress.mark(now);
            let mut wake_at = next_tick;
            if let Some(w) = &mut self.liveness.watchdog {
                wake_at = wake_at.min(w.tick(now));
            }
            if let Some(t) = self.udp.wake_at(now) {
                wake_at = wake_at.min(t);
            }
            if self.peers.wants_retry() {
                wake_at = wake_at.min(now + RETRY);
            }
            let timeout = wake_at.saturating_duration_since(Instant::now());
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                log::error!("ingest poll failed: {e}");
                break;
            }
            self.config.refresh(&self.shared.config);
            let env = Env {
                registry: &self.registry,
                shared: &self.shared,
                cfg: self.config.get(),
            };
            let poller = self.poll.registry();
            let now = Instant::now();
            for ev in events.iter() {
                match ev.token() {
                    UDP => self.udp.ready(),
                    peers::LISTENER => self.peers.ready(false),
                    peers::LISTENER_TLS => self.peers.ready(true),
                    WAKER => {}
                    Token(key) => {
                        let readable = ev.is_readable() || ev.is_read_closed();
                        self.peers
                            .on_event(key, readable, ev.is_writable(), poller, &env, now);
                    }
                }
            }
            self.peers.accept(poller, &env, now);
            self.udp.on_readable(poller, &env, now, self.peers.owners());
            self.peers.retry_blocked(poller, &env, now);
            self.news.take(&mut news);
            for n in news.drain(..) {
                match n {
                    News::Line(id, line) => self.peers.send_line(&id, &line, poller, &env),
                    News::Stop => break 'run,
                }
            }
            if now >= next_tick {
                self.peers.on_tick(poller, &env, now);
                next_tick = now + TICK;
            }
        }
        self.goodbye(&mut events);
    }

    /// Shutdown: hand every parked frame to its worker (they are still
    /// running and drain their inboxes), then tell each TCP worker
    /// `shutting_down` before its connection closes, so that its client
    /// reconnects to the next musterd instead of guessing. Bounded by
    /// [`GOODBYE`]; the loop waits in its poll, for room and for writable
    /// sockets.
    fn goodbye(&mut self, events: &mut Events) {
        let deadline = Instant::now() + GOODBYE;
        let env = Env {
            registry: &self.registry,
            shared: &self.shared,
            cfg: self.config.get(),
        };
        let wait = |poll: &mut Poll, events: &mut Events, most: Duration| {
            let left = deadline.saturating_duration_since(Instant::now()).min(most);
            !left.is_zero() && poll.poll(events, Some(left)).is_ok()
        };
        // Parked frames wait for their workers' threads to make room: the
        // poll waits a retry's time between tries.
        while self.peers.deliver_parked(&env) {
            if !wait(&mut self.poll, events, RETRY) {
                break;
            }
        }
        self.peers.say_goodbye(self.poll.registry(), &env);
        // The line is short: it fits any socket buffer but a full one.
        while self.peers.flush_all(self.poll.registry(), &env) {
            if !wait(&mut self.poll, events, GOODBYE) {
                break;
            }
        }
        log::debug!(
            "ingest loop stopped; {} tcp connections left unflushed",
            self.peers.len()
        );
    }
}

/// Whether heartbeats are taken from `ip` (`heartbeat_allow_from`).
fn allowed(cfg: &Config, ip: std::net::IpAddr) -> bool {
    cfg.heartbeats
        .allow_from
        .as_ref()
        .is_none_or(|blocks| blocks.iter().any(|b| b.contains(ip)))
}

/// Count a refused frame, blame its worker if it named one, log (limited).
fn reject(env: &Env, log: &mut RateLimit, rej: &Reject, peer: SocketAddr) {
    env.shared.stats.reject(rej.reason);
    if let Some(id) = &rej.worker_id {
        if let Some(h) = env.registry.handle(id) {
            h.refuse();
        }
    }
    if let Some(suppressed) = log.check(rej.reason.as_str(), Instant::now()) {
        log::warn!(
            "rejected frame reason={} peer={peer} worker={}: {} (suppressed={suppressed})",
            rej.reason.as_str(),
            rej.worker_id.as_deref().unwrap_or("-"),
            rej.message
        );
    }
}
