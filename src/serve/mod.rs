//! The HTTP thread: one mio `Poll` serving the REST API and the WebSocket
//! streams on keep-alive connections, and its mailbox of [`News`].
//!
//! - `head`: HTTP/1.1 heads in, response bytes out (pure).
//! - `conns`: the listener and the connections: accept, settle, close,
//!   and who follows what.
//! - `conn`, `out`: one connection's state machine and its output queue.
//! - `ticket`, `render`: answers that wait for another thread, and large
//!   bodies built off the loop.
//! - `routes` (the [`conn::Handler`]), `views`, `health`, `metrics`,
//!   `task_routes`, `trpc`, `dashboard`: requests → responses.
//! - `access`: who may ask what.
//! - `ws`: the WebSocket streams.
//!
//! Dispatch by token: the listener, the mailbox's waker, and one token per
//! connection (its key in the slab). Every readiness is drained to
//! `WouldBlock` by the connection's handlers; a connection is
//! re-registered only when the interest it wants changed. Other threads
//! reach the loop only through its mailbox, and the loop handles exactly
//! the news that came: the fleet changed (a fan-out, paced), tasks or
//! alerts moved (their followers compose), an answer settled (that one
//! connection sends it), stop. A [`TICK`] runs deadlines, pings and
//! summary messages. Only this thread writes these sockets.
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
pub mod task_routes;
pub mod ticket;
mod trend;
pub mod trpc;
pub mod views;
pub mod ws;

use crate::config::View;
use crate::fleet::Shared;
use crate::fleet::notify::Mailbox;
use crate::sys::stream::Stream;
use crate::sys::systemd::Watchdog;
use conn::{Conn, Ctx, Next};
use conns::{Conns, Env};
use mio::net::TcpListener;
use mio::{Events, Poll, Token};
use routes::Api;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The token of the loop's waker: the daemon makes the waker with it.
pub const WAKER: Token = Token(usize::MAX - 2);
/// Least time between two change fan-outs to WebSocket clients.
const FANOUT_GAP: Duration = Duration::from_millis(1);
/// Longest extra spacing a slow fan-out adds.
const MAX_FANOUT_GAP: Duration = Duration::from_millis(50);
/// Deadlines, pings and summary messages run on this tick, and a failed
/// accept (EMFILE) is tried again.
const TICK: Duration = Duration::from_millis(100);
/// The tick with no connection open: it only expires cached snapshots,
/// prunes the audit trail and samples the queue for the trend (once a
/// second). The first connection brings [`TICK`] back at once.
const IDLE_TICK: Duration = Duration::from_secs(1);
/// Longest time shutdown spends telling WebSocket clients goodbye.
const GOODBYE: Duration = Duration::from_secs(1);

/// What other threads tell the HTTP loop.
#[derive(Clone, Debug, PartialEq)]
pub enum News {
    /// Workers changed: the change feed has something to fan out.
    Fleet,
    /// Tasks changed: `/ws/tasks` clients compose.
    Tasks,
    /// Alerts fired or resolved: `/ws/alerts` clients compose.
    Alerts,
    /// The answer connection `key` holds has settled.
    Settled(usize),
    /// End the loop.
    Stop,
}

pub struct HttpServer {
    poll: Poll,
    conns: Conns,
    api: Api,
    news: Mailbox<News>,
    shared: Arc<Shared>,
    config: View,
    watchdog: Option<Watchdog>,
    /// WebSocket clients at the last tick: fewer now means memory to trim.
    ws_clients_at_tick: usize,
}

impl HttpServer {
    /// A loop over `poll`, whose waker (on [`WAKER`]) wakes `news`.
    pub fn new(
        poll: Poll,
        listener: TcpListener,
        news: Mailbox<News>,
        api: Api,
        shared: Arc<Shared>,
        watchdog: Option<Watchdog>,
    ) -> io::Result<HttpServer> {
        let conns = Conns::new(listener, poll.registry())?;
        Ok(HttpServer {
            poll,
            conns,
            api,
            news,
            config: shared.config.view(),
            shared,
            watchdog,
            ws_clients_at_tick: 0,
        })
    }

    pub fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut news = Vec::new();
        let mut ticked = Instant::now();
        // Change fan-out runs at most every FANOUT_GAP: changes that arrive
        // meanwhile stay coalesced in the feed and share one message.
        let mut next_fanout = Instant::now();
        let mut fanout_due: Option<Instant> = None;
        'run: loop {
            let idle = self.conns.is_empty() && !self.conns.wants_accept();
            let next_tick = ticked + if idle { IDLE_TICK } else { TICK };
            // Pinged from this loop so that a stuck loop stops the pings.
            let mut wake_at = fanout_due.map_or(next_tick, |d| d.min(next_tick));
            if let Some(w) = &mut self.watchdog {
                wake_at = wake_at.min(w.tick(Instant::now()));
            }
            let timeout = if self.conns.has_write_again() {
                Duration::ZERO
            } else {
                wake_at.saturating_duration_since(Instant::now())
            };
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
                    conns::LISTENER => self.conns.ready(),
                    WAKER => {}
                    Token(key) => {
                        let readable = ev.is_readable() || ev.is_read_closed();
                        self.on_conn(key, readable, ev.is_writable(), now);
                    }
                }
            }
            for key in self.conns.take_write_again() {
                self.on_conn(key, false, true, now);
            }
            if self.conns.wants_accept() {
                self.accept(now);
            }
            self.news.take(&mut news);
            for n in news.drain(..) {
                match n {
                    News::Fleet => {
                        fanout_due.get_or_insert(next_fanout);
                    }
                    News::Tasks => self.on_book(true, now),
                    News::Alerts => self.on_book(false, now),
                    News::Settled(key) => self.with(key, |c, cx| c.on_settled(cx, now)),
                    News::Stop => break 'run,
                }
            }
            if fanout_due.is_some_and(|due| now >= due) {
                fanout_due = None;
                let started = Instant::now();
                self.on_fleet(started);
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
                ticked = now;
            }
        }
        self.goodbye(&mut events);
    }

    fn with(&mut self, key: usize, f: impl FnOnce(&mut Conn<Stream>, &mut Ctx<Api>) -> Next) {
        let cfg = self.config.get();
        let env = Env {
            shared: &self.shared,
            cfg,
            mailbox: &self.news,
        };
        self.conns
            .with(key, self.poll.registry(), &mut self.api, &env, f);
    }

    fn accept(&mut self, now: Instant) {
        let env = Env {
            shared: &self.shared,
            cfg: self.config.get(),
            mailbox: &self.news,
        };
        self.conns.accept(self.poll.registry(), &env, now);
    }

    fn on_conn(&mut self, key: usize, readable: bool, writable: bool, now: Instant) {
        self.with(key, |conn, cx| conn.on_ready(cx, readable, writable, now));
    }

    /// Worker threads published changes: pass them to the clients that
    /// follow workers, rendering the update for plain clients once.
    /// O(those clients).
    fn on_fleet(&mut self, now: Instant) {
        let (changed, removed) = self.shared.changes.take();
        if changed.is_empty() && removed.is_empty() {
            return;
        }
        let followers = &self.conns.followers;
        let fanout = ws::Fanout::new(changed, removed, followers.plain > 0);
        let keys: Vec<usize> = followers.workers.iter().copied().collect();
        for key in keys {
            self.with(key, |conn, cx| conn.on_changes(cx, &fanout, now));
        }
    }

    /// A book moved: its followers compose what they have not seen.
    fn on_book(&mut self, tasks: bool, now: Instant) {
        let f = &self.conns.followers;
        let keys: Vec<usize> = if tasks { &f.tasks } else { &f.alerts }
            .iter()
            .copied()
            .collect();
        for key in keys {
            self.with(key, |conn, cx| conn.on_news(cx, now));
        }
    }

    /// Deadlines of every connection. O(connections) per tick.
    fn on_tick(&mut self, now: Instant) {
        if self.conns.wants_accept() {
            self.accept(now);
        }
        for key in self.conns.keys() {
            self.with(key, |conn, cx| conn.on_timeout(cx, now));
        }
        self.api.on_tick();
        // WebSocket clients left since the last tick: hand the pages their
        // buffers freed back to the system, so RSS comes down once they are
        // gone (blocks of a megabyte or more are unmapped when freed).
        let clients = self.conns.stream_count();
        if clients < self.ws_clients_at_tick {
            crate::sys::memory::trim();
        }
        self.ws_clients_at_tick = clients;
    }

    /// Shutdown: every WebSocket client is told 1001 (going away) rather
    /// than seeing its connection drop (1006). Bounded by [`GOODBYE`]: a
    /// client that reads nothing does not hold the daemon up. The loop
    /// waits in its poll for the sockets to take the rest.
    fn goodbye(&mut self, events: &mut Events) {
        let deadline = Instant::now() + GOODBYE;
        let streams = self.conns.streams();
        let told = streams.len();
        let mut left = self.conns.going_away(&streams, self.poll.registry());
        while !left.is_empty() {
            let wait = deadline.saturating_duration_since(Instant::now());
            if wait.is_zero() {
                break;
            }
            if let Err(e) = self.poll.poll(events, Some(wait)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    break;
                }
            }
            left = self.conns.going_away(&left, self.poll.registry());
        }
        log::debug!(
            "http loop stopped; {told} websocket clients told goodbye, {} not flushed",
            left.len()
        );
    }
}
