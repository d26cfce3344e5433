//! The HTTP loop's connections: accept them (or refuse them when full),
//! run a handler on one, and settle what it asked for: keep it with the
//! interest it wants, or close it and count it out.

use super::access;
use super::conn::{Conn, Next};
use super::head::{self, Response};
use super::stream::Stream;
#[cfg(feature = "tls")]
use super::stream::tls::TlsStream;
use super::{Ctx, HttpServer, Slot};
use crate::config::Config;
use crate::fleet::Shared;
use crate::stats::Counter;
use mio::net::TcpStream;
use mio::{Interest, Token};
use std::io::{self, Write};
use std::time::Instant;

impl HttpServer {
    /// Accept until the queue is empty. On an error such as EMFILE the
    /// queue is not empty, but no new readiness will say so: the loop
    /// tries again on its next tick.
    pub(super) fn accept(&mut self, now: Instant) {
        loop {
            match self.listener.accept() {
                Ok((stream, peer)) => {
                    // Every response and WebSocket message is written whole:
                    // Nagle would only hold its tail back for an ACK the
                    // client delays (up to 40 ms).
                    let _ = stream.set_nodelay(true);
                    let ip = peer.ip();
                    let (max, max_ip) = {
                        let cfg = self.config.get();
                        (cfg.http_max_connections, cfg.http_max_connections_per_ip)
                    };
                    // One address may not hold every slot; at its share,
                    // or when all are taken, the oldest idle connection
                    // (of that address, or of any) makes room, so that a
                    // fresh request is served while silent sockets wait.
                    let capped = self.config.get().capped(ip);
                    if capped && self.per_ip.count(ip) >= max_ip && !self.evict_idle(Some(ip)) {
                        refuse(
                            stream,
                            &self.shared,
                            self.config.get(),
                            Counter::HttpRefusedPerIp,
                        );
                        continue;
                    }
                    if self.conns.len() >= max && !self.evict_idle(None) {
                        refuse(
                            stream,
                            &self.shared,
                            self.config.get(),
                            Counter::HttpRefusedFull,
                        );
                        continue;
                    }
                    let Some(stream) = wrap(stream, self.config.get()) else {
                        continue;
                    };
                    let entry = self.conns.vacant_entry();
                    let token = Token(entry.key());
                    let mut conn = Conn::new(stream, peer.ip(), now);
                    if let Err(e) =
                        self.poll
                            .registry()
                            .register(&mut conn.stream, token, Interest::READABLE)
                    {
                        log::warn!("http register failed peer={peer}: {e}");
                        continue;
                    }
                    entry.insert(Slot {
                        conn,
                        registered: Interest::READABLE,
                        subscribed: false,
                    });
                    self.per_ip.add(ip);
                    let open = self.conns.len() as u64;
                    self.shared.stats.set(Counter::HttpOpen, open);
                    log::trace!("http accept peer={peer} token={}", token.0);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.accept_retry = false;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if crate::sys::fds::out_of_descriptors(&e) && self.reserve.release() => {
                    // The reserve's descriptor takes the queue's head, which
                    // is told 503 and closed; then the next, until the queue
                    // is empty: a client waits for an answer, not for a
                    // descriptor that may not come.
                    self.log_limit.warn("http_accept", || {
                        format!(
                            "http accept failed ({e}): answering 503 from the reserve descriptor"
                        )
                    });
                    let taken = self.listener.accept();
                    if let Ok((stream, _)) = taken {
                        refuse(
                            stream,
                            &self.shared,
                            self.config.get(),
                            Counter::HttpRefusedNoFds,
                        );
                        self.reserve.restore();
                    } else {
                        self.reserve.restore();
                        self.accept_retry = true;
                        return;
                    }
                }
                Err(e) => {
                    self.log_limit.warn("http_accept", || {
                        format!("http accept failed, retrying: {e}")
                    });
                    self.accept_retry = true;
                    return;
                }
            }
        }
    }

    /// Run a handler on one connection, then settle what it asked for.
    pub(super) fn with_conn(
        &mut self,
        key: usize,
        f: impl FnOnce(&mut Conn<Stream>, &mut Ctx) -> Next,
    ) {
        let Some(slot) = self.conns.get_mut(key) else {
            return;
        };
        let mut cx = Ctx {
            api: &mut self.api,
            shared: &self.shared,
            cfg: self.config.get(),
            names: &self.names,
            read_buf: &mut self.read_buf,
        };
        let next = f(&mut slot.conn, &mut cx);
        self.settle(key, next);
    }

    /// Close the connection, or re-register it if its wanted interest
    /// changed; count a client that now streams changes.
    fn settle(&mut self, key: usize, next: Next) {
        let Some(slot) = self.conns.get_mut(key) else {
            return;
        };
        if next == Next::Close {
            return self.close(key);
        }
        if slot.conn.is_waiting() {
            self.waiting.insert(key);
        }
        if slot.conn.take_turn_ended() {
            self.write_again.push(key);
        }
        if !slot.subscribed && slot.conn.ws().is_some_and(|w| w.wants_changes()) {
            slot.subscribed = true;
            self.subscribers += 1;
        }
        let want = slot.conn.interest();
        if want != slot.registered {
            if self
                .poll
                .registry()
                .reregister(&mut slot.conn.stream, Token(key), want)
                .is_ok()
            {
                slot.registered = want;
            } else {
                self.close(key);
            }
        }
    }

    /// Close the connection idle the longest, of `ip` or of any address.
    /// O(connections), and only when a cap is reached.
    fn evict_idle(&mut self, ip: Option<std::net::IpAddr>) -> bool {
        let oldest = self
            .conns
            .iter()
            .filter(|(_, s)| ip.is_none_or(|ip| s.conn.peer().to_canonical() == ip.to_canonical()))
            .filter_map(|(k, s)| s.conn.idle_since().map(|t| (t, k)))
            .min();
        let Some((_, key)) = oldest else {
            return false;
        };
        self.close(key);
        self.shared.stats.incr(Counter::HttpEvictedIdle);
        true
    }

    fn close(&mut self, key: usize) {
        let mut slot = self.conns.remove(key);
        let _ = self.poll.registry().deregister(&mut slot.conn.stream);
        self.per_ip.remove(slot.conn.peer());
        let stats = &self.shared.stats;
        stats.set(Counter::HttpOpen, self.conns.len() as u64);
        if slot.conn.ws().is_some() {
            stats.decr(Counter::WsClients);
        }
        if slot.subscribed {
            self.subscribers -= 1;
            // Record changes only while some client streams them.
            if self.subscribers == 0 {
                self.shared.changes.set_wanted(false);
            }
        }
    }
}

/// The stream a new connection runs over: TLS when a certificate is
/// configured (the one loaded now; a reload changes it for later
/// connections only).
fn wrap(stream: TcpStream, cfg: &Config) -> Option<Stream> {
    #[cfg(feature = "tls")]
    if let Some(tls) = &cfg.tls {
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

/// Over `http_max_connections`: a best-effort 503 and close, never a wait.
/// Over TLS a plain answer would be noise: the connection is just closed.
/// Answer 503 and close (a TLS connection just closes: no handshake is
/// spent on it), counted as `counter`.
fn refuse(mut stream: TcpStream, shared: &Shared, cfg: &Config, counter: Counter) {
    shared.stats.incr(counter);
    if cfg.tls.is_some() {
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
        false,
        false,
        access::allow_origin(cfg, None),
    );
    let _ = stream.write(&out);
    shared.stats.http_response(503);
}
