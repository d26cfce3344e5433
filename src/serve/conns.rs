//! The HTTP loop's connections: the listener and the slab of connections,
//! what each follows, and the caps. Accept (or refuse when full), run a
//! handler on one connection, then settle what it asked for: keep it with
//! the interest it wants, or close it and count it out.
//!
//! It knows which connections stream what (the fleet's changes, tasks,
//! alerts), so that news reaches exactly the connections it is for,
//! without a scan of every connection.

use super::News;
use super::access;
use super::conn::{Conn, Ctx, Next, READ_CHUNK};
use super::head::{self, Part, Response, Then};
use super::routes::Api;
use super::ticket::Later;
use super::ws::Stream as Topic;
use crate::config::Config;
use crate::fleet::Shared;
use crate::fleet::notify::Mailbox;
use crate::logging::RateLimit;
use crate::stats::{Counter, PerAddress};
use crate::sys::accept::{Accepted, Acceptor};
use crate::sys::stream::Stream;
#[cfg(feature = "tls")]
use crate::sys::stream::tls::TlsStream;
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};
use slab::Slab;
use std::collections::BTreeSet;
use std::io::Write;
use std::time::{Duration, Instant};

/// What the connections' handlers share besides the API.
pub struct Env<'a> {
    pub shared: &'a Shared,
    pub cfg: &'a Config,
    pub mailbox: &'a Mailbox<News>,
}

/// A connection in the slab, with what the loop keeps about it.
struct Slot {
    conn: Conn<Stream>,
    registered: Interest,
    /// What it streams, once upgraded.
    follows: Option<Topic>,
}

/// The connections that stream something, by what they follow.
#[derive(Default)]
pub struct Followers {
    /// Every worker or one: the change feed.
    pub workers: BTreeSet<usize>,
    /// Of those, the ones with no filter: they share one update.
    pub plain: usize,
    pub tasks: BTreeSet<usize>,
    pub alerts: BTreeSet<usize>,
}

pub struct Conns {
    listener: TcpListener,
    acceptor: Acceptor,
    slab: Slab<Slot>,
    /// Open connections by address, for `http_max_connections_per_ip`.
    per_ip: PerAddress,
    pub followers: Followers,
    /// Connections upgraded to a stream (`ws_max_clients` holds them).
    streams: usize,
    /// Connections whose write stopped at its turn: written again after the
    /// next poll, which then does not wait.
    write_again: Vec<usize>,
    read_buf: Box<[u8]>,
    /// The names this daemon answers to (the `Host` check).
    names: access::Names,
    log_limit: RateLimit,
}

/// The listener's token; connections' tokens are their slab keys.
pub const LISTENER: Token = Token(usize::MAX - 1);

impl Conns {
    pub fn new(mut listener: TcpListener, registry: &Registry) -> std::io::Result<Conns> {
        registry.register(&mut listener, LISTENER, Interest::READABLE)?;
        Ok(Conns {
            listener,
            acceptor: Acceptor::new(),
            slab: Slab::new(),
            per_ip: PerAddress::default(),
            followers: Followers::default(),
            streams: 0,
            write_again: Vec::new(),
            read_buf: vec![0; READ_CHUNK].into_boxed_slice(),
            names: access::Names::of_this_machine(),
            log_limit: RateLimit::new(Duration::from_secs(10)),
        })
    }

    /// Every connection's key (for the tick and shutdown).
    pub fn keys(&self) -> Vec<usize> {
        self.slab.iter().map(|(k, _)| k).collect()
    }

    /// No connection is open.
    pub fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }

    /// Keys to write again without waiting for readiness.
    pub fn take_write_again(&mut self) -> Vec<usize> {
        std::mem::take(&mut self.write_again)
    }

    pub fn has_write_again(&self) -> bool {
        !self.write_again.is_empty()
    }

    /// The listener is readable.
    pub fn ready(&mut self) {
        self.acceptor.ready();
    }

    /// Whether an accept must be tried (readiness, or one that failed).
    pub fn wants_accept(&self) -> bool {
        self.acceptor.retry()
    }

    /// Accept until the queue is empty. One address may not hold every
    /// slot; at its share, or when all are taken, the oldest idle
    /// connection (of that address, or of any) makes room, so that a fresh
    /// request is served while silent sockets wait.
    pub fn accept(&mut self, registry: &Registry, env: &Env, now: Instant) {
        let mut accepted = Vec::new();
        let log = &mut self.log_limit;
        self.acceptor.accept(&self.listener, |a| match a {
            Accepted::Conn(stream, peer) => accepted.push((stream, peer)),
            Accepted::Shed(stream, e) => {
                log.warn("http_accept_shed", || {
                    format!("http accept failed ({e}): answering 503 from the reserve descriptor")
                });
                refuse(stream, env, Counter::HttpRefusedNoFds);
            }
            Accepted::Failed(e) => log.warn("http_accept", || {
                format!("http accept failed, retrying: {e}")
            }),
        });
        for (stream, peer) in accepted {
            self.admit(registry, env, stream, peer, now);
        }
    }

    fn admit(
        &mut self,
        registry: &Registry,
        env: &Env,
        stream: TcpStream,
        peer: std::net::SocketAddr,
        now: Instant,
    ) {
        // Every response and WebSocket message is written whole: Nagle
        // would only hold its tail back for an ACK the client delays (up
        // to 40 ms).
        let _ = stream.set_nodelay(true);
        let ip = peer.ip();
        let cfg = env.cfg;
        let capped = cfg.capped(ip);
        if capped
            && self.per_ip.count(ip) >= cfg.http.max_connections_per_ip
            && !self.evict_idle(registry, env, Some(ip))
        {
            return refuse(stream, env, Counter::HttpRefusedPerIp);
        }
        if self.slab.len() >= cfg.http.max_connections && !self.evict_idle(registry, env, None) {
            return refuse(stream, env, Counter::HttpRefusedFull);
        }
        let Some(stream) = wrap(stream, cfg) else {
            return;
        };
        let entry = self.slab.vacant_entry();
        let token = Token(entry.key());
        let mut conn = Conn::new(stream, ip, now);
        if let Err(e) = registry.register(&mut conn.stream, token, Interest::READABLE) {
            log::warn!("http register failed peer={peer}: {e}");
            return;
        }
        entry.insert(Slot {
            conn,
            registered: Interest::READABLE,
            follows: None,
        });
        self.per_ip.add(ip);
        env.shared
            .stats
            .set(Counter::HttpOpen, self.slab.len() as u64);
        log::trace!("http accept peer={peer} token={}", token.0);
    }

    /// Run a handler on one connection, then settle what it asked for.
    pub fn with(
        &mut self,
        key: usize,
        registry: &Registry,
        api: &mut Api,
        env: &Env,
        f: impl FnOnce(&mut Conn<Stream>, &mut Ctx<Api>) -> Next,
    ) {
        let Some(slot) = self.slab.get_mut(key) else {
            return;
        };
        let mut cx = Ctx {
            handler: api,
            stats: &env.shared.stats,
            cfg: env.cfg,
            names: &self.names,
            read_buf: &mut self.read_buf,
            later: Later {
                mailbox: env.mailbox.clone(),
                key,
            },
            streams: self.streams,
        };
        let next = f(&mut slot.conn, &mut cx);
        self.settle(key, next, registry, env);
    }

    /// Close the connection, or re-register it if its wanted interest
    /// changed; note what a newly upgraded one follows.
    fn settle(&mut self, key: usize, next: Next, registry: &Registry, env: &Env) {
        let Some(slot) = self.slab.get_mut(key) else {
            return;
        };
        if next == Next::Close {
            return self.close(key, registry, env);
        }
        if slot.conn.take_turn_ended() {
            self.write_again.push(key);
        }
        if slot.follows.is_none() {
            if let Some(w) = slot.conn.ws() {
                let topic = w.topic();
                match topic {
                    Topic::All | Topic::One(_) => {
                        self.followers.workers.insert(key);
                        self.followers.plain += usize::from(w.is_plain());
                    }
                    Topic::Tasks => {
                        self.followers.tasks.insert(key);
                    }
                    Topic::Alerts => {
                        self.followers.alerts.insert(key);
                    }
                    Topic::Summary => {}
                }
                slot.follows = Some(topic);
                self.streams += 1;
                env.shared
                    .stats
                    .set(Counter::WsClients, self.streams as u64);
            }
        }
        let want = slot.conn.interest();
        if want != slot.registered {
            if registry
                .reregister(&mut slot.conn.stream, Token(key), want)
                .is_ok()
            {
                slot.registered = want;
            } else {
                self.close(key, registry, env);
            }
        }
    }

    /// Close the connection idle the longest, of `ip` or of any address.
    /// O(connections), and only when a cap is reached.
    fn evict_idle(&mut self, registry: &Registry, env: &Env, ip: Option<std::net::IpAddr>) -> bool {
        let oldest = self
            .slab
            .iter()
            .filter(|(_, s)| ip.is_none_or(|ip| s.conn.peer().to_canonical() == ip.to_canonical()))
            .filter_map(|(k, s)| s.conn.idle_since().map(|t| (t, k)))
            .min();
        let Some((_, key)) = oldest else {
            return false;
        };
        self.close(key, registry, env);
        env.shared.stats.incr(Counter::HttpEvictedIdle);
        true
    }

    fn close(&mut self, key: usize, registry: &Registry, env: &Env) {
        let mut slot = self.slab.remove(key);
        let _ = registry.deregister(&mut slot.conn.stream);
        self.per_ip.remove(slot.conn.peer());
        let stats = &env.shared.stats;
        stats.set(Counter::HttpOpen, self.slab.len() as u64);
        if slot.follows.is_some() {
            self.streams -= 1;
            stats.set(Counter::WsClients, self.streams as u64);
        }
        let f = &mut self.followers;
        if f.workers.remove(&key) && slot.conn.ws().is_some_and(|w| w.is_plain()) {
            f.plain -= 1;
        }
        f.tasks.remove(&key);
        f.alerts.remove(&key);
        if f.workers.is_empty() {
            // Record changes only while some client streams them (one
            // admitted and gone within its first turn was never counted).
            env.shared.changes.set_wanted(false);
        }
    }

    /// Shutdown: tell every stream 1001 and write what each is owed; the
    /// keys of those with something left, registered for WRITABLE.
    pub fn going_away(&mut self, keys: &[usize], registry: &Registry) -> Vec<usize> {
        let mut left = Vec::new();
        for &k in keys {
            let Some(s) = self.slab.get_mut(k) else {
                continue;
            };
            if s.conn.going_away() {
                continue;
            }
            let want = s.conn.interest();
            if want != s.registered
                && registry
                    .reregister(&mut s.conn.stream, Token(k), want)
                    .is_ok()
            {
                s.registered = want;
            }
            left.push(k);
        }
        left
    }

    /// How many connections are streams.
    pub fn stream_count(&self) -> usize {
        self.streams
    }

    /// The connections that are streams.
    pub fn streams(&self) -> Vec<usize> {
        self.slab
            .iter()
            .filter(|(_, s)| s.conn.ws().is_some())
            .map(|(k, _)| k)
            .collect()
    }
}

/// The stream a new connection runs over: TLS when a certificate is
/// configured (the one loaded now; a reload changes it for later
/// connections only).
fn wrap(stream: TcpStream, cfg: &Config) -> Option<Stream> {
    #[cfg(feature = "tls")]
    if let Some(tls) = &cfg.http.tls {
        return match rustls::ServerConnection::new(tls.server.clone()) {
            Ok(c) => Some(Stream::Tls(Box::new(TlsStream::new(c, stream)))),
            Err(e) => {
                log::warn!("tls: cannot start a session: {e}");
                None
            }
        };
    }
    #[cfg(not(feature = "tls"))]
    let _ = cfg;
    Some(Stream::Plain(stream))
}

/// Answer 503 and close, counted as `counter`; never a wait. A TLS
/// connection just closes: no handshake is spent on it, and a plain
/// answer would be noise.
fn refuse(mut stream: TcpStream, env: &Env, counter: Counter) {
    env.shared.stats.incr(counter);
    if env.cfg.http.tls.is_some() {
        return;
    }
    let mut out = Vec::new();
    let message = match counter {
        Counter::HttpRefusedPerIp => "http_max_connections_per_ip reached for this address",
        Counter::HttpRefusedNoFds => "out of file descriptors",
        _ => "http_max_connections reached",
    };
    let resp = Response::error(503, "too_many_connections", message);
    head::write_response(
        &mut out,
        &resp,
        Part::Whole,
        Then::Close,
        access::allow_origin(env.cfg, None),
    );
    let _ = stream.write(&out);
    env.shared.stats.http_response(503);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::Alerts;
    use crate::config;
    use crate::fleet::notify::Nobody;
    use crate::fleet::registry::Registry as Fleet;
    use crate::serve::routes::Sources;
    use crate::tasks::Tasks;
    use mio::{Events, Poll};
    use std::io::{ErrorKind, Read};
    use std::net::SocketAddr;
    use std::sync::Arc;

    /// The connections on a loopback listener, driven as the HTTP loop
    /// drives them, over the real API.
    struct Rig {
        poll: Poll,
        events: Events,
        conns: Conns,
        api: Api,
        shared: Arc<Shared>,
        cfg: Config,
        mailbox: Mailbox<News>,
        at: SocketAddr,
    }

    impl Rig {
        fn new(edit: impl FnOnce(&mut Config)) -> Rig {
            let mut cfg = config::defaults();
            edit(&mut cfg);
            let shared = Arc::new(Shared::new(cfg.clone()));
            let fleet = Arc::new(Fleet::new(shared.clone()));
            let tasks = Tasks::open(None, shared.clone(), crate::tasks::unlinked(), None).tasks;
            let alerts = Arc::new(Alerts::new(
                shared.clone(),
                fleet.clone(),
                tasks.clone(),
                None,
                Arc::new(Nobody),
            ));
            let from = Sources {
                registry: fleet,
                shared: shared.clone(),
                tasks,
                alerts,
                pool: None,
                cluster: None,
                audit: Arc::new(crate::audit::Audit::open(
                    None,
                    std::time::Duration::from_secs(60),
                )),
            };
            let poll = Poll::new().unwrap();
            let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
            let at = listener.local_addr().unwrap();
            Rig {
                conns: Conns::new(listener, poll.registry()).unwrap(),
                poll,
                events: Events::with_capacity(64),
                api: Api::new(from, Instant::now(), None),
                shared,
                cfg,
                mailbox: Mailbox::new(Nobody),
                at,
            }
        }

        fn turn(&mut self) {
            self.poll
                .poll(&mut self.events, Some(Duration::from_millis(5)))
                .unwrap();
            let env = Env {
                shared: &self.shared,
                cfg: &self.cfg,
                mailbox: &self.mailbox,
            };
            let now = Instant::now();
            let mut ready = Vec::new();
            for ev in self.events.iter() {
                match ev.token() {
                    LISTENER => self.conns.ready(),
                    Token(key) => ready.push((
                        key,
                        ev.is_readable() || ev.is_read_closed(),
                        ev.is_writable(),
                    )),
                }
            }
            ready.extend(
                self.conns
                    .take_write_again()
                    .into_iter()
                    .map(|k| (k, false, true)),
            );
            for (key, readable, writable) in ready {
                self.conns.with(
                    key,
                    self.poll.registry(),
                    &mut self.api,
                    &env,
                    |conn, cx| conn.on_ready(cx, readable, writable, now),
                );
            }
            if self.conns.wants_accept() {
                self.conns.accept(self.poll.registry(), &env, now);
            }
        }

        fn until(&mut self, what: &str, done: impl Fn(&Rig) -> bool) {
            let deadline = Instant::now() + Duration::from_secs(5);
            while !done(self) {
                assert!(Instant::now() < deadline, "{what}: not within 5 s");
                self.turn();
            }
        }

        fn connect(&mut self) -> std::net::TcpStream {
            let c = std::net::TcpStream::connect(self.at).unwrap();
            c.set_nonblocking(true).unwrap();
            let n = self.conns.keys().len();
            let (refused, evicted) = (self.refused(), self.evicted());
            self.until("accepted or refused", |r| {
                r.conns.keys().len() == n + 1 || r.refused() > refused || r.evicted() > evicted
            });
            c
        }

        fn evicted(&self) -> u64 {
            self.shared.stats.get(Counter::HttpEvictedIdle)
        }

        fn refused(&self) -> u64 {
            let st = &self.shared.stats;
            st.get(Counter::HttpRefusedFull) + st.get(Counter::HttpRefusedPerIp)
        }

        /// What `c` was sent until the daemon closed it or `stop` holds.
        fn read(
            &mut self,
            c: &mut std::net::TcpStream,
            stop: impl Fn(&str) -> bool,
        ) -> (String, bool) {
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut got = Vec::new();
            loop {
                self.turn();
                let mut buf = [0u8; 8192];
                match c.read(&mut buf) {
                    Ok(0) => return (String::from_utf8_lossy(&got).into_owned(), true),
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(_) => return (String::from_utf8_lossy(&got).into_owned(), true),
                }
                let text = String::from_utf8_lossy(&got).into_owned();
                if stop(&text) {
                    return (text, false);
                }
                assert!(Instant::now() < deadline, "read: {text:?}");
            }
        }
    }

    fn get(c: &mut std::net::TcpStream, path: &str) {
        write!(c, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    }

    /// With every slot taken, a newcomer is served by closing the
    /// connection idle the longest; one with a request under way is kept.
    #[test]
    fn the_oldest_idle_connection_makes_room_and_a_busy_one_is_kept() {
        let mut rig = Rig::new(|c| c.http.max_connections = 2);
        // b, the older, is mid-request: not idle.
        let mut b = rig.connect();
        write!(b, "GET /health HTTP/1.1\r\n").unwrap();
        for _ in 0..5 {
            rig.turn();
        }
        let mut a = rig.connect();
        get(&mut a, "/health");
        let (text, closed) = rig.read(&mut a, |t| t.contains("\"fleet\""));
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(!closed, "keep-alive");
        let mut c = rig.connect();
        assert_eq!(rig.shared.stats.get(Counter::HttpEvictedIdle), 1);
        let (_, a_closed) = rig.read(&mut a, |_| false);
        assert!(a_closed, "a, idle the longest, made room");
        get(&mut c, "/health");
        let (text, _) = rig.read(&mut c, |t| t.contains("\"fleet\""));
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        write!(b, "Host: 127.0.0.1\r\n\r\n").unwrap();
        let (text, _) = rig.read(&mut b, |t| t.contains("\"fleet\""));
        assert!(text.starts_with("HTTP/1.1 200"), "b kept: {text}");

        // With b and c both mid-request, a newcomer is refused with a 503.
        write!(b, "GET /health HTTP/1.1\r\n").unwrap();
        write!(c, "GET /health HTTP/1.1\r\n").unwrap();
        for _ in 0..10 {
            rig.turn();
        }
        let mut d = rig.connect();
        let (text, closed) = rig.read(&mut d, |_| false);
        assert!(closed && text.starts_with("HTTP/1.1 503"), "{text}");
        assert_eq!(rig.shared.stats.get(Counter::HttpRefusedFull), 1);
    }

    /// A connection upgraded to a stream is followed by its topic while it
    /// is open, and counted out when it closes.
    #[test]
    fn an_upgraded_stream_is_followed_until_it_closes() {
        let mut rig = Rig::new(|_| {});
        let mut c = rig.connect();
        write!(
            c,
            "GET /ws/tasks HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .unwrap();
        let (text, _) = rig.read(&mut c, |t| t.contains("\r\n\r\n"));
        assert!(text.starts_with("HTTP/1.1 101"), "{text}");
        assert_eq!(rig.conns.followers.tasks.len(), 1);
        assert!(rig.conns.followers.workers.is_empty());
        assert_eq!(
            (rig.conns.streams().len(), rig.conns.stream_count()),
            (1, 1)
        );
        assert_eq!(rig.shared.stats.get(Counter::WsClients), 1);
        drop(c);
        rig.until("closed", |r| r.conns.keys().is_empty());
        assert!(rig.conns.followers.tasks.is_empty());
        assert_eq!(rig.shared.stats.get(Counter::WsClients), 0);
        assert_eq!(rig.shared.stats.get(Counter::HttpOpen), 0);
    }
}
