//! The HTTP thread: one mio `Poll` serving the REST API and the WebSocket
//! streams on keep-alive connections, plus the `Waker` through which worker
//! threads announce changes.
//!
//! - `head`: HTTP/1.1 heads in, response bytes out (pure).
//! - `conns`: accept, settle and close connections.
//! - `conn`, `out`: one connection's state machine and its output queue.
//! - `routes`, `views`, `health`, `metrics`: requests → responses.
//! - `ws`: the WebSocket streams.
//!
//! Dispatch by token: the listener, the waker, and one token per connection
//! (its key in the slab). Every readiness is drained to `WouldBlock` by the
//! connection's handlers; the loop re-registers a connection only when the
//! interest it wants changed. A [`TICK`] runs deadlines, pings and summary
//! messages. Only this thread writes these sockets: a change fan-out is
//! prepared from the snapshots the feed hands over and written here.
//!
//! This loop never touches the ingest side; it reads workers through the
//! registry and the [`Shared`] context only.

pub mod access;
pub mod conn;
mod conns;
pub mod dashboard;
pub mod head;
pub mod health;
pub mod metrics;
pub mod out;
mod render;
pub mod routes;
pub mod stream;
pub mod task_routes;
pub mod trpc;
pub mod views;
pub mod ws;

use crate::config::{Config, View};
use crate::fleet::Shared;
use crate::logging::RateLimit;
use crate::sys::systemd::Watchdog;
use conn::{Conn, Next, READ_CHUNK};
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};
use routes::Api;
use slab::Slab;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use stream::Stream;

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);
/// Least time between two change fan-outs to WebSocket clients.
const FANOUT_GAP: Duration = Duration::from_millis(1);
/// Longest extra spacing a slow fan-out adds.
const MAX_FANOUT_GAP: Duration = Duration::from_millis(50);
/// Deadlines, pings and summary messages run on this tick, and a failed
/// accept (EMFILE) is tried again.
const TICK: Duration = Duration::from_millis(100);
/// Longest time shutdown spends telling WebSocket clients goodbye.
const GOODBYE: Duration = Duration::from_secs(1);

/// What a connection's handlers may use: the API, the shared context, this
/// turn's configuration, and the loop's one read buffer.
pub struct Ctx<'a> {
    pub api: &'a mut Api,
    pub shared: &'a Shared,
    pub cfg: &'a Config,
    pub names: &'a access::Names,
    pub read_buf: &'a mut [u8],
}

/// A connection in the slab, with what the loop keeps about it.
struct Slot {
    conn: Conn<Stream>,
    registered: Interest,
    /// Counted among the clients that stream changes.
    subscribed: bool,
}

pub struct HttpServer {
    poll: Poll,
    listener: TcpListener,
    conns: Slab<Slot>,
    api: Api,
    shared: Arc<Shared>,
    config: View,
    read_buf: Box<[u8]>,
    /// The names this daemon answers to (the `Host` check).
    names: access::Names,
    /// Connections holding an answer until its ticket settles.
    waiting: std::collections::BTreeSet<usize>,
    /// Connections whose write stopped at its turn: written again after the
    /// next poll, which then does not wait.
    write_again: Vec<usize>,
    /// The task book's version the `/ws/tasks` clients were last given.
    tasks_version: u64,
    /// WebSocket clients that want the change feed.
    subscribers: usize,
    /// WebSocket clients at the last tick: fewer now means memory to trim.
    ws_clients_at_tick: u64,
    /// Open connections by address, for `http_max_connections_per_ip`.
    per_ip: crate::stats::PerAddress,
    accept_retry: bool,
    /// A descriptor kept to answer 503 when none is free.
    reserve: crate::sys::fds::Reserve,
    log_limit: RateLimit,
    shutdown: Arc<AtomicBool>,
    watchdog: Option<Watchdog>,
}

impl HttpServer {
    /// Register the listener and create the waker other threads use.
    pub fn new(
        mut listener: TcpListener,
        mut api: Api,
        shared: Arc<Shared>,
        shutdown: Arc<AtomicBool>,
        watchdog: Option<Watchdog>,
    ) -> io::Result<(HttpServer, Arc<Waker>)> {
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        api.waker = Some(waker.clone());
        api.tasks.set_http_waker(waker.clone());
        api.alerts.set_waker(waker.clone());
        Ok((
            HttpServer {
                poll,
                listener,
                conns: Slab::new(),
                api,
                config: shared.config.view(),
                shared,
                read_buf: vec![0; READ_CHUNK].into_boxed_slice(),
                names: access::Names::of_this_machine(),
                waiting: Default::default(),
                write_again: Vec::new(),
                tasks_version: 0,
                subscribers: 0,
                ws_clients_at_tick: 0,
                per_ip: Default::default(),
                accept_retry: false,
                reserve: crate::sys::fds::Reserve::new(),
                log_limit: RateLimit::new(Duration::from_secs(10)),
                shutdown,
                watchdog,
            },
            waker,
        ))
    }

    pub fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut next_tick = Instant::now() + TICK;
        // Change fan-out runs at most every FANOUT_GAP: changes that arrive
        // meanwhile stay coalesced in the feed and share one message.
        let mut next_fanout = Instant::now();
        let mut fanout_due: Option<Instant> = None;
        while !self.shutdown.load(Ordering::Acquire) {
            // Pinged from this loop so that a stuck loop stops the pings.
            let mut wake_at = next_tick;
            if let Some(due) = fanout_due {
                wake_at = wake_at.min(due);
            }
            if let Some(w) = &mut self.watchdog {
                wake_at = wake_at.min(w.tick(Instant::now()));
            }
            let mut timeout = wake_at.saturating_duration_since(Instant::now());
            if !self.write_again.is_empty() {
                timeout = Duration::ZERO;
            }
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                log::error!("http poll failed: {e}");
                break;
            }
            self.config.refresh(&self.shared.config);
            let now = Instant::now();
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept_retry = true,
                    WAKER => fanout_due = Some(next_fanout),
                    Token(key) => {
                        let readable = ev.is_readable() || ev.is_read_closed();
                        self.on_conn(key, readable, ev.is_writable(), now);
                    }
                }
            }
            for key in std::mem::take(&mut self.write_again) {
                self.on_conn(key, false, true, now);
            }
            if self.accept_retry {
                self.accept(now);
            }
            if !self.waiting.is_empty() {
                self.on_settled(now);
            }
            self.on_task_changes(now);
            if fanout_due.is_some_and(|due| now >= due) {
                fanout_due = None;
                let started = Instant::now();
                self.on_wake(started);
                // A fan-out that took long (many clients) waits a quarter
                // as long before the next, so each one carries more changes
                // when they come fast and the loop keeps a fifth for the
                // rest; a longer wait doubled the latency of every update
                // at 1,000 clients (p50 13 ms, against 4.8 ms now).
                let took = started.elapsed();
                next_fanout = Instant::now() + (took / 4).clamp(FANOUT_GAP, MAX_FANOUT_GAP);
            }
            if now >= next_tick {
                self.on_tick(now);
                next_tick = now + TICK;
            }
        }
        self.goodbye();
    }

    /// Shutdown: every WebSocket client is told 1001 (going away) rather
    /// than seeing its connection drop (1006). Bounded by [`GOODBYE`]: a
    /// client that reads nothing does not hold the daemon up.
    fn goodbye(&mut self) {
        let deadline = Instant::now() + GOODBYE;
        let mut left: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, s)| s.conn.ws().is_some())
            .map(|(k, _)| k)
            .collect();
        let told = left.len();
        loop {
            left.retain(|&k| self.conns.get_mut(k).is_some_and(|s| !s.conn.going_away()));
            if left.is_empty() || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        log::debug!(
            "http loop stopped; {told} websocket clients told goodbye, {} not flushed",
            left.len()
        );
    }

    /// Worker threads announced changes: pass them to WebSocket clients,
    /// rendering the update for plain clients once. O(clients).
    fn on_wake(&mut self, now: Instant) {
        let (changed, removed) = self.shared.changes.take();
        if changed.is_empty() && removed.is_empty() {
            return;
        }
        let any_plain = self
            .conns
            .iter()
            .any(|(_, s)| s.subscribed && s.conn.ws().is_some_and(|w| w.is_plain()));
        let fanout = ws::Fanout::new(changed, removed, any_plain);
        let keys: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, s)| s.subscribed)
            .map(|(k, _)| k)
            .collect();
        for key in keys {
            self.with_conn(key, |conn, cx| conn.on_changes(cx, &fanout, now));
        }
    }

    /// Tasks or alerts changed since the last look: `/ws/tasks` and
    /// `/ws/alerts` clients compose.
    /// O(connections) when the book moved, nothing otherwise.
    fn on_task_changes(&mut self, now: Instant) {
        // Both books' versions only grow: their sum moves with either.
        let v = self.api.tasks.version() + self.api.alerts.version();
        if v == self.tasks_version {
            return;
        }
        self.tasks_version = v;
        let keys: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, s)| s.conn.ws().is_some_and(|w| w.follows_book()))
            .map(|(k, _)| k)
            .collect();
        for key in keys {
            self.with_conn(key, |conn, cx| conn.on_task_changes(cx, now));
        }
    }

    /// Answers whose tickets settled (tasks on disk) go out.
    fn on_settled(&mut self, now: Instant) {
        for key in std::mem::take(&mut self.waiting) {
            self.with_conn(key, |conn, cx| conn.on_settled(cx, now));
        }
    }

    fn on_conn(&mut self, key: usize, readable: bool, writable: bool, now: Instant) {
        self.with_conn(key, |conn, cx| {
            let mut next = Next::Keep;
            if writable {
                next = conn.on_writable(cx, now);
            }
            if readable && next == Next::Keep {
                next = conn.on_readable(cx, now);
            }
            next
        });
    }

    /// Deadlines of every connection. O(connections) per tick.
    fn on_tick(&mut self, now: Instant) {
        if self.accept_retry {
            self.accept(now);
        }
        if self.subscribers == 0 {
            // A client admitted and gone within one turn was never counted.
            self.shared.changes.set_wanted(false);
        }
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.with_conn(key, |conn, cx| conn.on_timeout(cx, now));
        }
        self.api.expire_ws_snapshot();
        // WebSocket clients left since the last tick: hand the pages their
        // buffers freed back to the system, so RSS comes down once they are
        // gone (blocks of a megabyte or more are unmapped when freed).
        let clients = self.shared.stats.get(crate::stats::Counter::WsClients);
        if clients < self.ws_clients_at_tick {
            crate::sys::memory::trim();
        }
        self.ws_clients_at_tick = clients;
    }
}
