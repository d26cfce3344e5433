//! One HTTP/1.1 connection: bytes in, requests parsed and answered in
//! order, bytes out; after a 101, a WebSocket stream.
//!
//! A plain state machine driven by the loop's readiness events and generic
//! over its stream and its [`Handler`], so it is tested without sockets
//! and without a daemon behind it. It knows HTTP, the access rules and the
//! WebSocket upgrade; what a request means (workers, tasks, alerts) is the
//! handler's. Handlers return whether to keep the connection; the loop
//! then asks [`Conn::interest`] what to wait for (WRITABLE only while
//! output is queued). Reads drain the socket to `WouldBlock`, so a FIN
//! that arrives with the last request is seen at once. Pipelined requests
//! are answered in order: an answer that waits for another thread holds
//! the connection in [`State::Held`] until it settles, and parsing pauses
//! while more than [`OUT_HIGH`] bytes wait to be written (backpressure).
//!
//! There is one output queue and one writer: HTTP answers and, after the
//! upgrade, every WebSocket frame go through [`OutQueue`].
//!
//! Deadlines use `Instant`: a request head (and its body) must complete
//! within [`HEAD_TIMEOUT`] (else 408 and close); a connection with nothing
//! in flight is closed after [`IDLE_TIMEOUT`].

use super::access;
use super::head::{self, HeadError, Method, Part, Request, Response, Then};
use super::out::{Flushed, KEEP_CAPACITY, OutQueue, WRITE_TURN};
use super::ticket::{Later, Outcome, Ticket};
use super::ws::{self, Ended, WsConn, WsLimits};
use crate::config::Config;
use crate::stats::{Counter, Stats};
use crate::sys::stream::Pending;
use mio::Interest;
use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::time::{Duration, Instant};

pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Queued output above which no further pipelined request is parsed.
pub const OUT_HIGH: usize = 4 << 20;
/// Input buffered at most: one largest head plus one largest body.
const IN_CAP: usize = head::MAX_HEAD + head::MAX_BODY;
/// The most one read takes: the size of the loop's read buffer.
pub const READ_CHUNK: usize = 16 * 1024;
/// A response body this large bounds its connection's kernel send buffer
/// to [`LARGE_SEND_BUFFER`] (`SO_SNDBUF`; Linux doubles it).
pub const LARGE_BODY: usize = 1 << 20;
pub const LARGE_SEND_BUFFER: usize = 256 * 1024;

/// What a request becomes: an answer now, or one held until its ticket
/// settles (then sent; a 503 if it failed; the settled body in place of
/// this one's when it waited for a body).
pub enum Reply {
    Now(Response),
    Later(Ticket, Response),
}

/// What a connection asks of the rest of the daemon: an answer to a
/// request, and a stream for an upgrade. The only door from a connection
/// to workers, tasks and alerts.
pub trait Handler {
    /// Answer a request that passed the access checks. `later` is where
    /// an answer that must wait is told it settled.
    fn respond(&mut self, req: &Request, body: &[u8], later: &Later) -> Reply;

    /// Open the stream a WebSocket path names: the connection's state
    /// after its 101, and the 101 itself; or the refusal (400, 404, 426),
    /// after which the connection closes. Not asked when the loop holds
    /// `ws_max_clients` streams already: the connection answers 503.
    fn open_stream(
        &mut self,
        req: &Request,
        early: Vec<u8>,
        now: Instant,
    ) -> Result<(WsConn, Response), Response>;
}

#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    Keep,
    Close,
}

/// An answer held until its ticket settles; requests behind it wait.
struct Held {
    ticket: Ticket,
    resp: Response,
    part: Part,
    then: Then,
    origin: Option<String>,
}

enum State {
    /// Reading and answering requests.
    Open,
    /// An answer waits for its ticket; nothing behind it is answered yet.
    Held(Box<Held>),
    /// A response said `Connection: close`: flush, then close.
    Closing,
    /// Upgraded: a WebSocket stream (RFC 6455) after the 101 response.
    Ws(Box<WsConn>),
}

/// What a connection's handlers may use besides the connection itself.
pub struct Ctx<'a, H> {
    pub handler: &'a mut H,
    pub stats: &'a Stats,
    pub cfg: &'a Config,
    pub names: &'a access::Names,
    pub read_buf: &'a mut [u8],
    /// Where this connection's waiting answers are told they settled.
    pub later: Later,
    /// The loop's open streams, for `ws_max_clients`.
    pub streams: usize,
}

pub struct Conn<S> {
    pub stream: S,
    /// The peer's address: changes are taken from loopback only, unless a
    /// token is configured.
    peer: IpAddr,
    state: State,
    inbuf: Vec<u8>,
    out: OutQueue,
    /// When the unfinished request at the front of `inbuf` began.
    head_started: Option<Instant>,
    last_active: Instant,
    /// Since when queued output has waited for the socket (the WebSocket
    /// stall clock); `None` while nothing is queued.
    blocked_since: Option<Instant>,
    read_paused: bool,
    peer_closed: bool,
    /// Its kernel send buffer is bounded (it was sent a large body).
    send_limited: bool,
    /// A write stopped at its turn with more to go: no readiness edge will
    /// come, so the loop calls [`Conn::on_writable`] again itself.
    turn_ended: bool,
}

impl<S: Read + Write + Pending> Conn<S> {
    pub fn new(stream: S, peer: IpAddr, now: Instant) -> Conn<S> {
        Conn {
            stream,
            peer,
            state: State::Open,
            inbuf: Vec::new(),
            out: OutQueue::default(),
            head_started: None,
            last_active: now,
            blocked_since: None,
            read_paused: false,
            peer_closed: false,
            send_limited: false,
            turn_ended: false,
        }
    }

    fn is_open(&self) -> bool {
        matches!(self.state, State::Open)
    }

    pub fn peer(&self) -> IpAddr {
        self.peer
    }

    /// Since when the connection has been idle: open, between requests,
    /// nothing read or owed. `None` while it has work (or streams).
    pub fn idle_since(&self) -> Option<Instant> {
        let idle = self.is_open()
            && self.inbuf.is_empty()
            && self.head_started.is_none()
            && self.out.is_empty();
        idle.then_some(self.last_active)
    }

    pub fn ws(&self) -> Option<&WsConn> {
        match &self.state {
            State::Ws(w) => Some(w),
            _ => None,
        }
    }

    /// An answer waits for its ticket.
    pub fn is_held(&self) -> bool {
        matches!(self.state, State::Held(_))
    }

    pub fn interest(&self) -> Interest {
        if !self.out.is_empty() || self.stream.pending() {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        }
    }

    /// The socket is ready: write what is owed first, then read.
    pub fn on_ready<H: Handler>(
        &mut self,
        cx: &mut Ctx<H>,
        readable: bool,
        writable: bool,
        now: Instant,
    ) -> Next {
        let mut next = Next::Keep;
        if writable {
            next = self.on_writable(cx, now);
        }
        if readable && next == Next::Keep {
            next = self.on_readable(cx, now);
        }
        next
    }

    pub fn on_readable<H: Handler>(&mut self, cx: &mut Ctx<H>, now: Instant) -> Next {
        if let State::Ws(w) = &mut self.state {
            let read = w.on_readable(&mut self.stream, &mut self.out);
            return self.ws_result(cx, read, now);
        }
        while matches!(self.state, State::Open | State::Held(_)) && !self.peer_closed {
            if self.inbuf.len() >= IN_CAP || self.out.len > OUT_HIGH {
                self.read_paused = true;
                break;
            }
            let room = cx.read_buf.len().min(IN_CAP - self.inbuf.len());
            match self.stream.read(&mut cx.read_buf[..room]) {
                Ok(0) => self.peer_closed = true,
                Ok(n) => {
                    self.inbuf.extend_from_slice(&cx.read_buf[..n]);
                    self.last_active = now;
                    self.process(cx, now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Next::Close,
            }
        }
        self.process(cx, now);
        let next = self.flush(now);
        if let (Next::Keep, State::Ws(w)) = (&next, &mut self.state) {
            // Just upgraded: read what the client sent since, then send the
            // first message.
            let read = w.on_readable(&mut self.stream, &mut self.out);
            return self.ws_result(cx, read, now);
        }
        next
    }

    pub fn on_writable<H: Handler>(&mut self, cx: &mut Ctx<H>, now: Instant) -> Next {
        if matches!(self.state, State::Ws(_)) {
            return self.ws_result(cx, Ok(()), now);
        }
        if self.flush(now) == Next::Close {
            return Next::Close;
        }
        if self.read_paused && self.out.len <= OUT_HIGH {
            self.read_paused = false;
            return self.on_readable(cx, now);
        }
        if !self.inbuf.is_empty() && self.is_open() && self.out.len <= OUT_HIGH {
            // Requests pipelined behind a large answer waited for it to
            // drain; no read will come for them.
            self.process(cx, now);
            return self.flush(now);
        }
        Next::Keep
    }

    /// A stream client's source moved (tasks, alerts): compose for it.
    pub fn on_news<H: Handler>(&mut self, cx: &mut Ctx<H>, now: Instant) -> Next {
        if !matches!(self.state, State::Ws(_)) {
            return Next::Keep;
        }
        self.ws_result(cx, Ok(()), now)
    }

    /// New changes from worker threads, for a WebSocket client.
    pub fn on_changes<H: Handler>(
        &mut self,
        cx: &mut Ctx<H>,
        fanout: &ws::Fanout,
        now: Instant,
    ) -> Next {
        let in_flight = !self.out.is_empty();
        match &mut self.state {
            State::Ws(w) => w.on_changes(fanout, in_flight),
            _ => return Next::Keep,
        }
        self.ws_result(cx, Ok(()), now)
    }

    /// After a WebSocket event: write what is queued and, once the queue
    /// is empty, the next message, until the socket would block or
    /// nothing is due.
    fn ws_result<H>(&mut self, cx: &mut Ctx<H>, r: Result<(), Ended>, now: Instant) -> Next {
        let limits = ws_limits(cx.cfg);
        let mut r = r;
        while r.is_ok() {
            match self.flush(now) {
                Next::Close => return Next::Close,
                Next::Keep if !self.out.is_empty() => break,
                Next::Keep => {}
            }
            let State::Ws(w) = &mut self.state else { break };
            match w.next_message(limits, now) {
                Some(head::Body::Owned(b)) => self.out.push_bytes(&b),
                Some(head::Body::Shared(b)) => self.out.push_shared(&b),
                None => break,
            }
            r = Ok(());
        }
        match r {
            Ok(()) => Next::Keep,
            Err(ended) => {
                // A close frame may be queued: one try to send it.
                let _ = self.out.write_turn(&mut self.stream, WRITE_TURN);
                let counter = match ended {
                    Ended::Stalled => Some(Counter::WsClosedStalled),
                    Ended::PingTimeout => Some(Counter::WsClosedPing),
                    Ended::TooBig => Some(Counter::WsClosedTooBig),
                    Ended::Closed | Ended::Error => None,
                };
                if let Some(c) = counter {
                    cx.stats.incr(c);
                }
                log::debug!("websocket closed: {ended:?}");
                Next::Close
            }
        }
    }

    /// Shutdown: a WebSocket client gets a close frame with 1001 after what
    /// is queued for it. Returns true when nothing is left to write.
    pub fn going_away(&mut self) -> bool {
        if let State::Ws(w) = &mut self.state {
            w.going_away(&mut self.out);
        }
        !matches!(self.out.write_to(&mut self.stream), Ok(false))
    }

    /// Deadlines; called on every tick of the loop.
    pub fn on_timeout<H: Handler>(&mut self, cx: &mut Ctx<H>, now: Instant) -> Next {
        if let State::Ws(w) = &mut self.state {
            let r = w.on_tick(&mut self.out, self.blocked_since, ws_limits(cx.cfg), now);
            return self.ws_result(cx, r, now);
        }
        if let Some(start) = self.head_started {
            if now.saturating_duration_since(start) >= HEAD_TIMEOUT {
                let resp =
                    Response::error(408, "request_timeout", "request not complete within 10 s");
                self.respond(cx, &resp, Part::Whole, Then::Close, None);
                self.state = State::Closing;
                self.head_started = None;
                return self.flush(now);
            }
        }
        let waiting = self.is_held();
        if !waiting && now.saturating_duration_since(self.last_active) >= IDLE_TIMEOUT {
            return Next::Close;
        }
        Next::Keep
    }

    /// Whether its last write stopped at its turn (and clear it).
    pub fn take_turn_ended(&mut self) -> bool {
        std::mem::take(&mut self.turn_ended)
    }

    /// The held answer's ticket may have settled: send it (or a 503 when
    /// it failed), then go on with requests buffered behind it.
    pub fn on_settled<H: Handler>(&mut self, cx: &mut Ctx<H>, now: Instant) -> Next {
        let State::Held(held) = &self.state else {
            return Next::Keep;
        };
        let Some(outcome) = held.ticket.outcome() else {
            return Next::Keep;
        };
        let State::Held(held) = std::mem::replace(&mut self.state, State::Open) else {
            unreachable!("held just above")
        };
        let Held {
            mut resp,
            part,
            then,
            origin,
            ..
        } = *held;
        match outcome {
            Outcome::Done => {}
            Outcome::Body(b) => resp.body = head::Body::Shared(b),
            Outcome::Instead(r) => resp = *r,
            Outcome::Failed => {
                resp = Response::error(
                    503,
                    "not_stored",
                    "the answer could not be completed (a task not written to the journal, a body not rendered)",
                );
            }
        }
        self.respond(cx, &resp, part, then, origin.as_deref());
        if then == Then::Close {
            self.state = State::Closing;
        } else {
            self.process(cx, now);
        }
        self.flush(now)
    }

    /// Answer every complete request buffered, in order, until one is held.
    fn process<H: Handler>(&mut self, cx: &mut Ctx<H>, now: Instant) {
        let mut start = 0;
        while self.is_open() && self.out.len <= OUT_HIGH {
            let buf = &self.inbuf[start..];
            if buf.is_empty() {
                break;
            }
            match head::parse(buf) {
                Ok(None) => {
                    self.head_started.get_or_insert(now);
                    break;
                }
                Err(e) => {
                    self.refuse(cx, e);
                    break;
                }
                Ok(Some((mut req, head_len))) => {
                    req.peer = Some(self.peer);
                    let total = head_len + req.content_length;
                    if buf.len() < total {
                        self.head_started.get_or_insert(now);
                        break;
                    }
                    self.head_started = None;
                    let is_ws = ws::is_ws_path(&req.path);
                    let verdict = if is_ws {
                        access::check_ws(&req, self.peer, cx.cfg, cx.names)
                    } else {
                        access::check(&req, self.peer, cx.cfg, cx.names)
                    };
                    let refused = match verdict {
                        Ok(who) => {
                            req.who = who;
                            None
                        }
                        Err(r) => Some(r),
                    };
                    if let Some(refusal) = refused {
                        cx.stats.incr(refusal.counter());
                        let then = Then::keep_alive(req.keep_alive && !is_ws);
                        let origin = req.origin.as_deref();
                        self.respond(cx, &refusal.response(), Part::Whole, then, origin);
                        start += total;
                        if then == Then::Close {
                            self.state = State::Closing;
                        }
                        continue;
                    }
                    if is_ws {
                        let early = self.inbuf[start + head_len..].to_vec();
                        self.upgrade(cx, &req, early, now);
                        start = self.inbuf.len();
                        break;
                    }
                    let reply = cx.handler.respond(&req, &buf[head_len..total], &cx.later);
                    start += total;
                    let part = if req.method == Method::Head {
                        Part::HeadOnly
                    } else {
                        Part::Whole
                    };
                    let origin = req.origin;
                    match reply {
                        Reply::Now(resp) => {
                            let then = Then::keep_alive(req.keep_alive && !resp.close);
                            self.respond(cx, &resp, part, then, origin.as_deref());
                            if then == Then::Close {
                                self.state = State::Closing;
                            }
                        }
                        Reply::Later(ticket, resp) => {
                            let then = Then::keep_alive(req.keep_alive && !resp.close);
                            self.state = State::Held(Box::new(Held {
                                ticket,
                                resp,
                                part,
                                then,
                                origin,
                            }));
                        }
                    }
                }
            }
        }
        self.inbuf.drain(..start.min(self.inbuf.len()));
        if matches!(self.state, State::Closing | State::Ws(_)) {
            self.inbuf.clear();
        }
    }

    /// A request on a WebSocket path: answer 101 and switch to the stream,
    /// or refuse (400, 404, 426 or 503) and close.
    fn upgrade<H: Handler>(
        &mut self,
        cx: &mut Ctx<H>,
        req: &Request,
        early: Vec<u8>,
        now: Instant,
    ) {
        let opened = if cx.streams >= cx.cfg.http.ws_max_clients {
            Err(Response::error(
                503,
                "too_many_clients",
                "ws_max_clients reached",
            ))
        } else {
            cx.handler.open_stream(req, early, now)
        };
        match opened {
            Ok((w, resp)) => {
                self.respond(cx, &resp, Part::Whole, Then::KeepAlive, None);
                self.stream.limit_send_buffer(ws::SEND_BUFFER);
                self.state = State::Ws(Box::new(w));
            }
            Err(resp) => {
                self.respond(cx, &resp, Part::Whole, Then::Close, None);
                self.state = State::Closing;
            }
        }
    }

    fn refuse<H>(&mut self, cx: &mut Ctx<H>, e: HeadError) {
        let code = match e {
            HeadError::Malformed => "bad_request",
            HeadError::HeadTooLarge | HeadError::TooManyHeaders => "head_too_large",
            HeadError::LengthRequired => "length_required",
            HeadError::BodyTooLarge => "body_too_large",
        };
        let resp = Response::error(e.status(), code, e.message());
        self.respond(cx, &resp, Part::Whole, Then::Close, None);
        self.state = State::Closing;
        self.head_started = None;
    }

    /// Queue a response; `origin` is the request's, for its CORS field.
    fn respond<H>(
        &mut self,
        cx: &mut Ctx<H>,
        resp: &Response,
        part: Part,
        then: Then,
        origin: Option<&str>,
    ) {
        self.out
            .push(resp, part, then, access::allow_origin(cx.cfg, origin));
        if resp.body.len() >= LARGE_BODY && !self.send_limited {
            // Each write of a large body then copies at most this much, so
            // the loop turns to other requests between writes (the kernel
            // would otherwise grow the buffer to megabytes per write).
            self.send_limited = true;
            self.stream.limit_send_buffer(LARGE_SEND_BUFFER);
        }
        cx.stats.http_response(resp.status);
    }

    fn flush(&mut self, now: Instant) -> Next {
        let before = self.out.len;
        let done = self.out.write_turn(&mut self.stream, WRITE_TURN);
        if self.out.len < before {
            self.last_active = now;
            self.blocked_since = None;
        }
        match done {
            Ok(Flushed::All) => self.blocked_since = None,
            Ok(Flushed::Blocked) => {
                self.blocked_since.get_or_insert(now);
                return Next::Keep;
            }
            Ok(Flushed::Turn) => {
                self.turn_ended = true;
                return Next::Keep;
            }
            Err(_) => return Next::Close,
        }
        if self.inbuf.is_empty() && self.inbuf.capacity() > KEEP_CAPACITY {
            self.inbuf = Vec::new();
        }
        match self.state {
            State::Closing => Next::Close,
            State::Open if self.peer_closed => Next::Close,
            _ => Next::Keep,
        }
    }
}

fn ws_limits(cfg: &Config) -> WsLimits {
    WsLimits {
        max_queue_bytes: cfg.http.ws_max_queue_bytes,
        stall_timeout: cfg.http.ws_stall_timeout,
        summary_interval: cfg.http.summary_interval,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use crate::fleet::notify::{Mailbox, Nobody};
    use crate::script::{Script, Step};
    use crate::serve::ticket::Settler;
    use std::sync::Arc;

    impl Pending for Script {}

    const HEALTH: &[u8] = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n";

    /// A handler that knows two paths: `/health` answers at once, `/slow`
    /// waits for a ticket the test settles; anything else is 404. Streams
    /// are refused 404.
    #[derive(Default)]
    struct Stub {
        asked: Vec<String>,
        settlers: Vec<Settler>,
        book: Arc<Counting>,
    }

    /// A book whose messages are its version: `v1`, `v2`, …
    #[derive(Default)]
    struct Counting(std::sync::atomic::AtomicU64);

    impl Counting {
        fn bump(&self) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    impl ws::book::Book for Counting {
        fn compose(&self, seen: Option<u64>) -> Option<(String, u64)> {
            let v = self.0.load(std::sync::atomic::Ordering::Relaxed);
            (seen != Some(v)).then(|| (format!("v{v}"), v))
        }
    }

    impl Handler for Stub {
        fn respond(&mut self, req: &Request, _: &[u8], later: &Later) -> Reply {
            self.asked.push(req.path.clone());
            match req.path.as_str() {
                "/health" => Reply::Now(Response::json(200, b"{\"status\":\"healthy\"}".to_vec())),
                "/slow" => {
                    let (ticket, settler) = later.ticket();
                    self.settlers.push(settler);
                    Reply::Later(ticket, Response::json(201, b"{}".to_vec()))
                }
                _ => Reply::Now(Response::error(404, "not_found", "no")),
            }
        }

        fn open_stream(
            &mut self,
            req: &Request,
            early: Vec<u8>,
            now: Instant,
        ) -> Result<(WsConn, Response), Response> {
            if req.path != "/ws/book" {
                return Err(Response::error(404, "not_found", "no such stream"));
            }
            let ok = ws::upgrade::accept(req)?;
            let feed = ws::conn::BookFeed::new(self.book.clone(), ws::Stream::Tasks);
            Ok((WsConn::new(ws::conn::Feed::Book(feed), early, now), ok))
        }
    }

    /// A connection over a script, and what its handlers need.
    struct Rig {
        conn: Conn<Script>,
        handler: Stub,
        stats: Stats,
        buf: Vec<u8>,
        names: access::Names,
        now: Instant,
        streams: usize,
    }

    impl Rig {
        fn new(steps: Vec<Step>) -> Rig {
            let now = Instant::now();
            Rig {
                conn: Conn::new(Script::new(steps), [127, 0, 0, 1].into(), now),
                handler: Stub::default(),
                stats: Stats::default(),
                buf: vec![0; READ_CHUNK],
                names: access::Names::of(&["x"]),
                now,
                streams: 0,
            }
        }

        fn with<T>(
            &mut self,
            f: impl FnOnce(&mut Conn<Script>, &mut Ctx<Stub>, Instant) -> T,
        ) -> T {
            let cfg = config::defaults();
            let mut cx = Ctx {
                handler: &mut self.handler,
                stats: &self.stats,
                cfg: &cfg,
                names: &self.names,
                read_buf: &mut self.buf,
                later: Later {
                    mailbox: Mailbox::new(Nobody),
                    key: 0,
                },
                streams: self.streams,
            };
            f(&mut self.conn, &mut cx, self.now)
        }

        fn readable(&mut self) -> Next {
            self.with(|c, cx, now| c.on_readable(cx, now))
        }

        fn writable(&mut self) -> Next {
            self.with(|c, cx, now| c.on_writable(cx, now))
        }

        fn settled(&mut self) -> Next {
            self.with(|c, cx, now| c.on_settled(cx, now))
        }

        fn timeout(&mut self, after: Duration) -> Next {
            let at = self.now + after;
            self.with(|c, cx, _| c.on_timeout(cx, at))
        }

        /// The status codes of the responses written so far.
        fn statuses(&self) -> Vec<u16> {
            let text = String::from_utf8_lossy(&self.conn.stream.written);
            text.match_indices("HTTP/1.1 ")
                .filter_map(|(i, _)| text.get(i + 9..i + 12)?.parse().ok())
                .collect()
        }
    }

    #[test]
    fn a_request_split_anywhere_is_answered_once() {
        for cut in 1..HEALTH.len() {
            let mut r = Rig::new(vec![Step::Read(HEALTH[..cut].to_vec())]);
            assert_eq!(r.readable(), Next::Keep);
            assert!(r.statuses().is_empty(), "answered a partial head at {cut}");
            r.conn.stream.then(vec![Step::Read(HEALTH[cut..].to_vec())]);
            assert_eq!(r.readable(), Next::Keep);
            assert_eq!(r.statuses(), [200], "cut at {cut}");
        }
    }

    #[test]
    fn pipelined_requests_are_answered_in_order() {
        let two = [HEALTH, b"GET /nope HTTP/1.1\r\n\r\n", HEALTH].concat();
        let mut r = Rig::new(vec![Step::Read(two)]);
        assert_eq!(r.readable(), Next::Keep);
        assert_eq!(r.statuses(), [200, 404, 200]);
    }

    #[test]
    fn a_held_answer_holds_the_requests_behind_it_until_it_settles() {
        let three = [
            HEALTH,
            b"POST /slow HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            HEALTH,
        ]
        .concat();
        let mut r = Rig::new(vec![Step::Read(three)]);
        assert_eq!(r.readable(), Next::Keep);
        assert_eq!(r.statuses(), [200], "the one behind /slow waits");
        assert!(r.conn.is_held());
        assert_eq!(r.handler.asked, ["/health", "/slow"], "not asked yet");
        assert_eq!(r.settled(), Next::Keep, "not settled: nothing moves");
        assert_eq!(r.statuses(), [200]);
        r.handler.settlers.pop().unwrap().settle(Outcome::Done);
        assert_eq!(r.settled(), Next::Keep);
        assert_eq!(r.statuses(), [200, 201, 200], "in order");
        // A failed ticket answers 503.
        let slow = b"POST /slow HTTP/1.1\r\nContent-Length: 0\r\n\r\n".to_vec();
        r.conn.stream.then(vec![Step::Read(slow)]);
        r.readable();
        drop(r.handler.settlers.pop());
        r.settled();
        assert_eq!(r.statuses(), [200, 201, 200, 503]);
        assert!(!r.conn.is_held());
        // A held answer does not time the connection out as idle.
        let slow = b"POST /slow HTTP/1.1\r\nContent-Length: 0\r\n\r\n".to_vec();
        r.conn.stream.then(vec![Step::Read(slow)]);
        r.readable();
        assert_eq!(r.timeout(IDLE_TIMEOUT), Next::Keep);
    }

    #[test]
    fn short_and_blocked_writes_keep_the_rest_queued() {
        let mut r = Rig::new(vec![
            Step::Read(HEALTH.to_vec()),
            Step::Write(10),
            Step::Block,
        ]);
        assert_eq!(r.readable(), Next::Keep);
        assert_eq!(r.conn.stream.written.len(), 10);
        assert_eq!(r.conn.interest(), Interest::READABLE | Interest::WRITABLE);
        r.conn.stream.then(vec![Step::Write(5), Step::Block]);
        assert_eq!(r.writable(), Next::Keep);
        assert_eq!(r.conn.stream.written.len(), 15);
        assert_eq!(r.writable(), Next::Keep, "no step left: the rest goes");
        assert_eq!(r.conn.interest(), Interest::READABLE);
        assert_eq!(r.statuses(), [200]);
        let text = String::from_utf8_lossy(&r.conn.stream.written).into_owned();
        assert!(text.ends_with('}'), "the whole body went out: {text}");
    }

    #[test]
    fn a_fin_with_the_last_request_closes_after_the_answer() {
        let mut r = Rig::new(vec![Step::Read(HEALTH.to_vec()), Step::Eof]);
        assert_eq!(r.readable(), Next::Close);
        assert_eq!(r.statuses(), [200]);
        // A FIN while the answer is still queued: close once it is out.
        let mut r = Rig::new(vec![Step::Read(HEALTH.to_vec()), Step::Eof, Step::Block]);
        assert_eq!(r.readable(), Next::Keep);
        assert!(r.statuses().is_empty());
        assert_eq!(r.writable(), Next::Close);
        assert_eq!(r.statuses(), [200]);
    }

    #[test]
    fn connection_close_and_bad_heads_close() {
        let close = b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n".to_vec();
        let mut r = Rig::new(vec![Step::Read(close)]);
        assert_eq!(r.readable(), Next::Close);
        assert_eq!(r.statuses(), [200]);
        let mut r = Rig::new(vec![Step::Read(b"NOT HTTP AT ALL\r\n\r\n".to_vec())]);
        assert_eq!(r.readable(), Next::Close);
        assert_eq!(r.statuses(), [400]);
        let mut r = Rig::new(vec![Step::Fail]);
        assert_eq!(r.readable(), Next::Close, "a broken stream");
    }

    #[test]
    fn deadlines() {
        let mut r = Rig::new(vec![Step::Read(b"GET /health HTTP/1.1\r\n".to_vec())]);
        assert_eq!(r.readable(), Next::Keep);
        assert_eq!(
            r.timeout(HEAD_TIMEOUT - Duration::from_millis(1)),
            Next::Keep
        );
        assert_eq!(r.timeout(HEAD_TIMEOUT), Next::Close);
        assert_eq!(r.statuses(), [408]);
        let mut r = Rig::new(vec![]);
        assert_eq!(
            r.timeout(IDLE_TIMEOUT - Duration::from_millis(1)),
            Next::Keep
        );
        assert_eq!(r.timeout(IDLE_TIMEOUT), Next::Close);
    }

    #[test]
    fn a_refused_upgrade_is_answered_and_closes() {
        let upgrade = b"GET /ws/telemetry HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
        let mut r = Rig::new(vec![Step::Read(upgrade.to_vec())]);
        assert_eq!(r.readable(), Next::Close);
        assert_eq!(r.statuses(), [404]);
        // A foreign Host is refused before the handler is asked.
        let rebound = String::from_utf8_lossy(upgrade).replace("Host: x", "Host: evil.example");
        let mut r = Rig::new(vec![Step::Read(rebound.into_bytes())]);
        assert_eq!(r.readable(), Next::Close);
        assert_eq!(r.statuses(), [421]);
    }

    /// The text frames a server wrote after its 101, unmasked.
    fn text_frames(written: &[u8]) -> Vec<String> {
        let text = String::from_utf8_lossy(written);
        let at = text.find("\r\n\r\n").map_or(written.len(), |i| i + 4);
        let mut rest = &written[at..];
        let mut out = Vec::new();
        while rest.len() >= 2 {
            let (op, len) = (rest[0], usize::from(rest[1] & 0x7f));
            assert!(len < 126, "a short frame");
            if op == 0x81 {
                out.push(String::from_utf8(rest[2..2 + len].to_vec()).unwrap());
            }
            rest = &rest[2 + len..];
        }
        out
    }

    /// An upgrade the handler accepts: the 101, the stream's first message
    /// at once and the next when its book moves; a client's close frame is
    /// answered with one and ends the connection.
    #[test]
    fn an_accepted_upgrade_streams_its_book_until_the_client_closes() {
        let upgrade = b"GET /ws/book HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
        // A masked close frame, code 1000.
        let mask = [1u8, 2, 3, 4];
        let mut close = vec![0x88, 0x82];
        close.extend_from_slice(&mask);
        close.extend([0x03 ^ mask[0], 0xe8 ^ mask[1]]);
        let mut r = Rig::new(vec![Step::Read(upgrade.to_vec())]);
        assert_eq!(r.readable(), Next::Keep);
        assert_eq!(r.statuses(), [101]);
        let head = String::from_utf8_lossy(&r.conn.stream.written).to_string();
        assert!(
            head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            "{head}"
        );
        assert_eq!(text_frames(&r.conn.stream.written), ["v0"]);
        assert!(r.conn.ws().is_some());

        assert_eq!(r.with(|c, cx, now| c.on_news(cx, now)), Next::Keep);
        assert_eq!(
            text_frames(&r.conn.stream.written),
            ["v0"],
            "nothing new, nothing sent"
        );
        r.handler.book.bump();
        assert_eq!(r.with(|c, cx, now| c.on_news(cx, now)), Next::Keep);
        assert_eq!(text_frames(&r.conn.stream.written), ["v0", "v1"]);

        r.conn.stream.then(vec![Step::Read(close)]);
        assert_eq!(r.readable(), Next::Close);
        let written = &r.conn.stream.written;
        let tail = &written[written.len() - 4..];
        assert_eq!(
            tail,
            [0x88, 0x02, 0x03, 0xe8],
            "the close answered with 1000"
        );
    }

    /// With the loop's streams at `ws_max_clients`, an upgrade is answered
    /// 503 without opening a stream; one below it is admitted.
    #[test]
    fn an_upgrade_past_the_client_cap_is_refused() {
        let upgrade = b"GET /ws/book HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
        let cap = config::defaults().http.ws_max_clients;
        let mut r = Rig::new(vec![Step::Read(upgrade.to_vec())]);
        r.streams = cap;
        assert_eq!(r.readable(), Next::Close);
        assert_eq!(r.statuses(), [503]);
        assert!(r.conn.ws().is_none());
        let mut r = Rig::new(vec![Step::Read(upgrade.to_vec())]);
        r.streams = cap - 1;
        assert_eq!(r.readable(), Next::Keep);
        assert_eq!(r.statuses(), [101]);
    }
}
