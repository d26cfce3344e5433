//! The HTTP thread: one mio `Poll` serving the REST API on keep-alive
//! connections, plus the `Waker` through which worker threads announce
//! changes.
//!
//! Dispatch by token: the listener, the waker, and one token per connection
//! (its key in the slab). Every readiness is drained to `WouldBlock` by the
//! connection's handlers; the loop re-registers a connection only when the
//! interest it wants changed. A once-a-second tick runs deadlines.
//!
//! Requests are answered on this thread; rendering reads immutable
//! snapshots, so a slow request never blocks a worker thread.

pub mod conn;
pub mod head;
pub mod metrics;
pub mod routes;
pub mod ws;

use crate::fleet::registry::Registry;
use crate::serve::conn::{Conn, Next};
use crate::serve::routes::Api;
use crate::serve::ws::Fanout;
use crate::sys::systemd::Watchdog;
use head::Response;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;
use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);
/// Least time between two change fan-outs to WebSocket clients.
const FANOUT_GAP: Duration = Duration::from_millis(4);
/// Longest extra spacing a slow fan-out adds.
const MAX_FANOUT_GAP: Duration = Duration::from_millis(50);
/// Clients one fan-out thread serves before another core is asked to help.
const PARALLEL_FANOUT: usize = 64;
/// Deadlines, pings and summary messages run on this tick.
const TICK: Duration = Duration::from_millis(100);

pub struct HttpServer {
    poll: Poll,
    listener: TcpListener,
    conns: Slab<(Conn, Interest)>,
    api: Api,
    shutdown: Arc<AtomicBool>,
    watchdog: Option<Watchdog>,
    /// Threads a fan-out may use.
    cores: usize,
}

impl HttpServer {
    /// Register the listener and create the waker other threads use.
    pub fn new(
        mut listener: TcpListener,
        api: Api,
        shutdown: Arc<AtomicBool>,
        watchdog: Option<Watchdog>,
    ) -> io::Result<(HttpServer, Arc<Waker>)> {
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        Ok((
            HttpServer {
                poll,
                listener,
                conns: Slab::new(),
                api,
                shutdown,
                watchdog,
                cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
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
            let timeout = wake_at.saturating_duration_since(Instant::now());
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                log::error!("http poll failed: {e}");
                break;
            }
            let now = Instant::now();
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept(now),
                    WAKER => fanout_due = Some(next_fanout),
                    Token(key) => {
                        let readable = ev.is_readable() || ev.is_read_closed();
                        self.on_conn(key, readable, ev.is_writable(), now);
                        if self.conns.get(key).is_some_and(|(c, _)| c.ws().is_some()) {
                            // Perhaps upgraded just now: record changes.
                            self.update_wanted();
                        }
                    }
                }
            }
            if fanout_due.is_some_and(|due| now >= due) {
                fanout_due = None;
                let started = Instant::now();
                self.on_wake(started);
                // A fan-out that took long (many clients) waits as long
                // again before the next, so fan-out takes at most half the
                // loop and each one carries more changes.
                let took = started.elapsed();
                next_fanout = Instant::now() + took.clamp(FANOUT_GAP, MAX_FANOUT_GAP);
            }
            if now >= next_tick {
                self.on_tick(now);
                self.update_wanted();
                next_tick = now + TICK;
            }
        }
        log::debug!(
            "http loop stopped; closing {} connections",
            self.conns.len()
        );
    }

    fn accept(&mut self, now: Instant) {
        loop {
            match self.listener.accept() {
                Ok((stream, peer)) => {
                    // Every response and WebSocket message is written whole:
                    // Nagle would only hold its tail back for an ACK the
                    // client delays (up to 40 ms).
                    let _ = stream.set_nodelay(true);
                    if self.conns.len() >= self.api.registry.live.http_max_connections() {
                        refuse_full(stream, &self.api);
                        continue;
                    }
                    let entry = self.conns.vacant_entry();
                    let token = Token(entry.key());
                    let mut conn = Conn::new(stream, now);
                    if let Err(e) =
                        self.poll
                            .registry()
                            .register(&mut conn.stream, token, Interest::READABLE)
                    {
                        log::warn!("http register failed peer={peer}: {e}");
                        continue;
                    }
                    entry.insert((conn, Interest::READABLE));
                    self.api
                        .registry
                        .stats
                        .http_open
                        .store(self.conns.len(), Ordering::Relaxed);
                    log::trace!("http accept peer={peer} token={}", token.0);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // EMFILE and friends: log and wait for the next readiness.
                    log::warn!("http accept failed: {e}");
                    return;
                }
            }
        }
    }

    /// Worker threads announced changes: pass them to WebSocket clients,
    /// rendering the update for plain clients once.
    fn on_wake(&mut self, now: Instant) {
        let (changed, removed) = self.api.registry.changes.take();
        if changed.is_empty() && removed.is_empty() {
            return;
        }
        let registry: &Registry = &self.api.registry;
        let mut clients: Vec<(usize, &mut Conn)> = self
            .conns
            .iter_mut()
            .filter(|(_, (c, _))| c.ws().is_some_and(|w| w.wants_changes()))
            .map(|(k, (c, _))| (k, c))
            .collect();
        let any_plain = clients
            .iter()
            .any(|(_, c)| c.ws().is_some_and(|w| w.is_plain()));
        let fanout = Fanout::new(changed, removed, registry, any_plain);
        let send = |part: &mut [(usize, &mut Conn)]| -> Vec<(usize, Next)> {
            part.iter_mut()
                .map(|(k, c)| (*k, c.on_changes(registry, &fanout, now)))
                .collect()
        };
        // Each send to a client is a syscall and a trip through the TCP
        // stack: beyond PARALLEL_FANOUT clients, helper threads take a
        // share each, up to one thread per core.
        let shares = clients.len().div_ceil(PARALLEL_FANOUT).clamp(1, self.cores);
        let results = if shares > 1 {
            let per = clients.len().div_ceil(shares);
            let mut parts = clients.chunks_mut(per);
            let mine = parts.next().unwrap_or_default();
            // A helper takes its share from its slot; a share whose helper
            // could not be started is still in its slot, done here.
            let slots: Vec<_> = parts.map(|p| std::sync::Mutex::new(Some(p))).collect();
            std::thread::scope(|s| {
                let helpers: Vec<_> = slots
                    .iter()
                    .map(|slot| {
                        std::thread::Builder::new()
                            .name("musterd-fanout".into())
                            .spawn_scoped(s, || take_share(slot).map(send).unwrap_or_default())
                    })
                    .collect();
                let mut results = send(mine);
                for h in helpers.into_iter().flatten() {
                    results.extend(h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
                }
                // No thread to be had (the kernel's limit): do it here.
                for slot in &slots {
                    results.extend(take_share(slot).map(send).unwrap_or_default());
                }
                results
            })
        } else {
            send(&mut clients)
        };
        for (key, next) in results {
            self.settle(key, next);
        }
    }

    /// Record changes only while some client streams them.
    fn update_wanted(&self) {
        let wanted = self
            .conns
            .iter()
            .any(|(_, (c, _))| c.ws().is_some_and(|w| w.wants_changes()));
        self.api.registry.changes.set_wanted(wanted);
    }

    fn on_conn(&mut self, key: usize, readable: bool, writable: bool, now: Instant) {
        let Some((conn, _)) = self.conns.get_mut(key) else {
            return;
        };
        let mut next = Next::Keep;
        if writable {
            next = conn.on_writable(&self.api, now);
        }
        if readable && next == Next::Keep {
            next = conn.on_readable(&self.api, now);
        }
        self.settle(key, next);
    }

    /// Close the connection, or re-register it if its wanted interest changed.
    fn settle(&mut self, key: usize, next: Next) {
        let Some((conn, registered)) = self.conns.get_mut(key) else {
            return;
        };
        if next == Next::Close {
            let (mut conn, _) = self.conns.remove(key);
            let _ = self.poll.registry().deregister(&mut conn.stream);
            self.api
                .registry
                .stats
                .http_open
                .store(self.conns.len(), Ordering::Relaxed);
            return;
        }
        let want = conn.interest();
        if want != *registered {
            if self
                .poll
                .registry()
                .reregister(&mut conn.stream, Token(key), want)
                .is_ok()
            {
                *registered = want;
            } else {
                self.settle(key, Next::Close);
            }
        }
    }

    fn on_tick(&mut self, now: Instant) {
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            if let Some((conn, _)) = self.conns.get_mut(key) {
                let next = conn.on_timeout(&self.api, now);
                self.settle(key, next);
            }
        }
    }
}

/// Over `http_max_connections`: a best-effort 503 and close, never a wait.
fn refuse_full(mut stream: TcpStream, api: &Api) {
    let mut out = Vec::new();
    let resp = Response::error(503, "too_many_connections", "http_max_connections reached");
    head::write_response(
        &mut out,
        &resp,
        false,
        false,
        &api.registry.live.cors_allow_origin(),
    );
    let _ = stream.write(&out);
    api.registry
        .stats
        .http_refused_full
        .fetch_add(1, Ordering::Relaxed);
    api.registry.stats.http_response(503);
}

/// Take what a slot holds, once: whichever thread comes first.
fn take_share<T>(slot: &std::sync::Mutex<Option<T>>) -> Option<T> {
    slot.lock().ok().and_then(|mut p| p.take())
}
