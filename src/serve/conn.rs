//! One HTTP/1.1 connection: bytes in, requests parsed and answered in
//! order, bytes out; after a 101, a WebSocket stream.
//!
//! A plain state machine driven by the loop's readiness events and generic
//! over its stream, so it is tested without sockets. Handlers return whether
//! to keep the connection; the loop then asks [`Conn::interest`] what to
//! wait for (WRITABLE only while output is queued). Reads drain the socket
//! to `WouldBlock`, so a FIN that arrives with the last request is seen at
//! once. Pipelined requests are answered in order; parsing pauses while more
//! than [`OUT_HIGH`] bytes wait to be written (backpressure), and reading
//! pauses while the input buffer is full.
//!
//! Deadlines use `Instant`: a request head (and its body) must complete
//! within [`HEAD_TIMEOUT`] (else 408 and close); a connection with nothing
//! in flight is closed after [`IDLE_TIMEOUT`].

use super::Ctx;
use super::access;
use super::head::{self, HeadError, Method, Request, Response};
use super::out::{Flushed, KEEP_CAPACITY, OutQueue, WRITE_TURN};
use super::stream::Pending;
use super::ws::{self, Ended, WsConn, WsLimits};
use crate::config::Config;
use crate::stats::Counter;
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

#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    Keep,
    Close,
}

enum State {
    /// Reading and answering requests.
    Open,
    /// A response said `Connection: close`: flush, then close.
    Closing,
    /// Upgraded: a WebSocket stream (RFC 6455) after the 101 response.
    Ws(Box<WsConn>),
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
    read_paused: bool,
    peer_closed: bool,
    /// Its kernel send buffer is bounded (it was sent a large body).
    send_limited: bool,
    /// A write stopped at its turn with more to go: no readiness edge will
    /// come, so the loop calls [`Conn::on_writable`] again itself.
    turn_ended: bool,
    /// An answer held until its ticket settles; later requests wait.
    waiting: Option<Waiting>,
}

struct Waiting {
    resp: Response,
    reply: Reply,
    keep: Keep,
    origin: Option<String>,
}

/// A response as it may go out now: itself when it waits on nothing or its
/// ticket succeeded, a 503 when the ticket failed; `Err` gives it back
/// while its ticket is pending.
fn settled(resp: Response) -> Result<Response, Response> {
    match resp.wait.as_ref().map(|t| t.settled()) {
        Some(None) => Err(resp),
        Some(Some(false)) => Ok(Response::error(
            503,
            "not_stored",
            "the task could not be written to the journal; it was not accepted",
        )),
        _ => Ok(resp),
    }
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
            read_paused: false,
            peer_closed: false,
            waiting: None,
            send_limited: false,
            turn_ended: false,
        }
    }

    pub fn is_open(&self) -> bool {
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
            && self.out.is_empty()
            && self.waiting.is_none();
        idle.then_some(self.last_active)
    }

    pub fn ws(&self) -> Option<&WsConn> {
        match &self.state {
            State::Ws(w) => Some(w),
            _ => None,
        }
    }

    pub fn interest(&self) -> Interest {
        let ws_out = self.ws().is_some_and(|w| w.wants_write());
        if !self.out.is_empty() || ws_out || self.stream.pending() {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        }
    }

    fn pending_out(&self) -> usize {
        self.out.len
    }

    pub fn on_readable(&mut self, cx: &mut Ctx, now: Instant) -> Next {
        if let State::Ws(w) = &mut self.state {
            let read = w.on_readable(&mut self.stream);
            return self.ws_result(cx, read, now);
        }
        while self.is_open() && !self.peer_closed {
            if self.inbuf.len() >= IN_CAP || self.pending_out() > OUT_HIGH {
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
            let read = w.on_readable(&mut self.stream);
            return self.ws_result(cx, read, now);
        }
        next
    }

    pub fn on_writable(&mut self, cx: &mut Ctx, now: Instant) -> Next {
        if self.flush(now) == Next::Close {
            return Next::Close;
        }
        if matches!(self.state, State::Ws(_)) {
            return self.ws_result(cx, Ok(()), now);
        }
        if self.read_paused && self.pending_out() <= OUT_HIGH {
            self.read_paused = false;
            return self.on_readable(cx, now);
        }
        if !self.inbuf.is_empty() && self.waiting.is_none() && self.pending_out() <= OUT_HIGH {
            // Requests pipelined behind a large answer waited for it to
            // drain; no read will come for them.
            self.process(cx, now);
            return self.flush(now);
        }
        Next::Keep
    }

    /// Tasks changed: a `/ws/tasks` client composes what it has not seen.
    pub fn on_task_changes(&mut self, cx: &mut Ctx, now: Instant) -> Next {
        if !self.ws().is_some_and(|w| w.follows_book()) {
            return Next::Keep;
        }
        self.ws_result(cx, Ok(()), now)
    }

    /// New changes from worker threads, for a WebSocket client.
    pub fn on_changes(&mut self, cx: &mut Ctx, fanout: &ws::Fanout, now: Instant) -> Next {
        match &mut self.state {
            State::Ws(w) => w.on_changes(fanout),
            _ => return Next::Keep,
        }
        self.ws_result(cx, Ok(()), now)
    }

    /// After a WebSocket event: pump output unless it ended.
    fn ws_result(&mut self, cx: &mut Ctx, r: Result<(), Ended>, now: Instant) -> Next {
        let limits = ws_limits(cx.cfg);
        let r = match (&mut self.state, r) {
            (State::Ws(w), Ok(())) if self.out.is_empty() => {
                if w.wants_plain_snapshot() {
                    w.give_snapshot(cx.api.ws_snapshot_frame());
                }
                w.pump(&mut self.stream, &cx.api.registry, limits, now)
            }
            (_, r) => r,
        };
        match r {
            Ok(()) => Next::Keep,
            Err(ended) => {
                let counter = match ended {
                    Ended::Stalled => Some(Counter::WsClosedStalled),
                    Ended::PingTimeout => Some(Counter::WsClosedPing),
                    Ended::TooBig => Some(Counter::WsClosedTooBig),
                    Ended::Closed | Ended::Error => None,
                };
                if let Some(c) = counter {
                    cx.shared.stats.incr(c);
                }
                log::debug!("websocket closed: {ended:?}");
                Next::Close
            }
        }
    }

    /// Shutdown: a WebSocket client gets a close frame with 1001 after what
    /// is queued for it. Returns true when nothing is left to write.
    pub fn going_away(&mut self) -> bool {
        match self.out.write_to(&mut self.stream) {
            Ok(true) => {}
            Ok(false) => return false,
            Err(_) => return true,
        }
        match &mut self.state {
            State::Ws(w) => w.going_away(&mut self.stream),
            _ => true,
        }
    }

    /// Deadlines; called on every tick of the loop.
    pub fn on_timeout(&mut self, cx: &mut Ctx, now: Instant) -> Next {
        if let State::Ws(w) = &mut self.state {
            let r = w.on_tick(&mut self.stream, ws_limits(cx.cfg), now);
            return self.ws_result(cx, r, now);
        }
        if let Some(start) = self.head_started {
            if now.saturating_duration_since(start) >= HEAD_TIMEOUT {
                let resp =
                    Response::error(408, "request_timeout", "request not complete within 10 s");
                self.respond(cx, &resp, Reply::Full, Keep::Close, None);
                self.state = State::Closing;
                self.head_started = None;
                return self.flush(now);
            }
        }
        if now.saturating_duration_since(self.last_active) >= IDLE_TIMEOUT {
            return Next::Close;
        }
        Next::Keep
    }

    /// Whether its last write stopped at its turn (and clear it).
    pub fn take_turn_ended(&mut self) -> bool {
        std::mem::take(&mut self.turn_ended)
    }

    pub fn is_waiting(&self) -> bool {
        self.waiting.is_some()
    }

    /// The held answer's ticket may have settled: send it (or a 503 when
    /// the write failed), then go on with requests buffered behind it.
    pub fn on_settled(&mut self, cx: &mut Ctx, now: Instant) -> Next {
        let Some(Waiting {
            resp,
            reply,
            keep,
            origin,
        }) = self.waiting.take()
        else {
            return Next::Keep;
        };
        let resp = match settled(resp) {
            Ok(r) => r,
            Err(resp) => {
                self.waiting = Some(Waiting {
                    resp,
                    reply,
                    keep,
                    origin,
                });
                return Next::Keep;
            }
        };
        self.respond(cx, &resp, reply, keep, origin.as_deref());
        if keep == Keep::Close {
            self.state = State::Closing;
        } else {
            self.process(cx, now);
        }
        self.flush(now)
    }

    /// Answer every complete request buffered, in order.
    fn process(&mut self, cx: &mut Ctx, now: Instant) {
        let mut start = 0;
        while self.is_open() && self.waiting.is_none() && self.pending_out() <= OUT_HIGH {
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
                Ok(Some((req, head_len))) => {
                    let total = head_len + req.content_length;
                    if buf.len() < total {
                        self.head_started.get_or_insert(now);
                        break;
                    }
                    let is_ws = ws::is_ws_path(&req.path);
                    let verdict = if is_ws {
                        access::check_ws(&req, cx.cfg, cx.names)
                    } else {
                        access::check(&req, self.peer, cx.cfg, cx.names)
                    };
                    if let Err(refusal) = verdict {
                        cx.shared.stats.incr(refusal.counter());
                        let keep = req.keep_alive && !is_ws;
                        let origin = req.origin.as_deref();
                        self.respond(
                            cx,
                            &refusal.response(),
                            Reply::Full,
                            Keep::from(keep),
                            origin,
                        );
                        start += total;
                        self.head_started = None;
                        if !keep {
                            self.state = State::Closing;
                        }
                        continue;
                    }
                    if is_ws {
                        self.upgrade(cx, &req, start + head_len, now);
                        start = self.inbuf.len();
                        break;
                    }
                    let resp = cx.api.handle(&req, &buf[head_len..total], cx.cfg);
                    let keep = req.keep_alive && !resp.close;
                    let reply = if req.method == Method::Head {
                        Reply::HeadOnly
                    } else {
                        Reply::Full
                    };
                    let resp = match settled(resp) {
                        Ok(r) => r,
                        Err(resp) => {
                            self.waiting = Some(Waiting {
                                resp,
                                reply,
                                keep: Keep::from(keep),
                                origin: req.origin.clone(),
                            });
                            start += total;
                            self.head_started = None;
                            break;
                        }
                    };
                    self.respond(cx, &resp, reply, Keep::from(keep), req.origin.as_deref());
                    start += total;
                    self.head_started = None;
                    if !keep {
                        self.state = State::Closing;
                    }
                }
            }
        }
        self.inbuf.drain(..start.min(self.inbuf.len()));
        if !self.is_open() {
            self.inbuf.clear();
        }
    }

    /// A request on a WebSocket path: answer 101 and switch to the stream,
    /// or refuse (400, 404, 426 or 503) and close.
    fn upgrade(&mut self, cx: &mut Ctx, req: &Request, body_start: usize, now: Instant) {
        match ws::admit(req, cx.shared, cx.cfg) {
            Ok((sub, resp)) => {
                self.respond(cx, &resp, Reply::Full, Keep::Open, None);
                let early = self.inbuf[body_start..].to_vec();
                let book: Option<std::sync::Arc<dyn ws::Book>> = match sub.stream {
                    ws::Stream::Tasks => Some(cx.api.tasks.clone()),
                    ws::Stream::Alerts => Some(cx.api.alerts.clone()),
                    _ => None,
                };
                let mut w = WsConn::new(sub, early, now);
                if let Some(b) = book {
                    w.follow_book(b);
                }
                self.stream.limit_send_buffer(ws::SEND_BUFFER);
                self.state = State::Ws(Box::new(w));
            }
            Err(resp) => {
                self.respond(cx, &resp, Reply::Full, Keep::Close, None);
                self.state = State::Closing;
            }
        }
        self.head_started = None;
    }

    fn refuse(&mut self, cx: &mut Ctx, e: HeadError) {
        let code = match e {
            HeadError::Malformed => "bad_request",
            HeadError::HeadTooLarge | HeadError::TooManyHeaders => "head_too_large",
            HeadError::LengthRequired => "length_required",
            HeadError::BodyTooLarge => "body_too_large",
        };
        let resp = Response::error(e.status(), code, e.message());
        self.respond(cx, &resp, Reply::Full, Keep::Close, None);
        self.state = State::Closing;
        self.head_started = None;
    }

    /// Queue a response; `origin` is the request's, for its CORS field.
    fn respond(
        &mut self,
        cx: &mut Ctx,
        resp: &Response,
        reply: Reply,
        keep: Keep,
        origin: Option<&str>,
    ) {
        self.out.push(
            resp,
            reply == Reply::HeadOnly,
            keep == Keep::Open,
            access::allow_origin(cx.cfg, origin),
        );
        if resp.body.len() >= LARGE_BODY && !self.send_limited {
            // Each write of a large body then copies at most this much, so
            // the loop turns to other requests between writes (the kernel
            // would otherwise grow the buffer to megabytes per write).
            self.send_limited = true;
            self.stream.limit_send_buffer(LARGE_SEND_BUFFER);
        }
        cx.shared.stats.http_response(resp.status);
    }

    fn flush(&mut self, now: Instant) -> Next {
        let before = self.out.len;
        let done = self.out.write_turn(&mut self.stream, WRITE_TURN);
        if self.out.len < before {
            self.last_active = now;
        }
        match done {
            Ok(Flushed::All) => {}
            Ok(Flushed::Blocked) => return Next::Keep,
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

/// Whether a response goes out whole or as its head only (`HEAD`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reply {
    Full,
    HeadOnly,
}

/// Whether the connection stays open after a response.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Keep {
    Open,
    Close,
}

impl From<bool> for Keep {
    fn from(open: bool) -> Keep {
        if open { Keep::Open } else { Keep::Close }
    }
}

fn ws_limits(cfg: &Config) -> WsLimits {
    WsLimits {
        max_queue_bytes: cfg.ws_max_queue_bytes,
        stall_timeout: cfg.ws_stall_timeout,
        summary_interval: cfg.summary_interval,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use crate::fleet::Shared;
    use crate::fleet::registry::Registry;
    use crate::script::{Script, Step};
    use crate::serve::routes::Api;
    use std::sync::Arc;

    impl Pending for Script {}

    const HEALTH: &[u8] = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n";

    /// A connection over a script, and what its handlers need.
    struct Rig {
        conn: Conn<Script>,
        api: Api,
        shared: Arc<Shared>,
        buf: Vec<u8>,
        names: access::Names,
        now: Instant,
    }

    impl Rig {
        fn new(steps: Vec<Step>) -> Rig {
            let shared = Arc::new(Shared::new(config::defaults()));
            let registry = Arc::new(Registry::new(shared.clone()));
            let now = Instant::now();
            Rig {
                conn: Conn::new(Script::new(steps), [127, 0, 0, 1].into(), now),
                api: Api::new(
                    registry.clone(),
                    shared.clone(),
                    crate::tasks::Tasks::open(None, registry, shared.clone()).tasks,
                    now,
                    None,
                ),
                shared,
                buf: vec![0; READ_CHUNK],
                names: access::Names::of(&["x"]),
                now,
            }
        }

        fn with<T>(&mut self, f: impl FnOnce(&mut Conn<Script>, &mut Ctx, Instant) -> T) -> T {
            let cfg = self.shared.config.get();
            let mut cx = Ctx {
                api: &mut self.api,
                shared: &self.shared,
                cfg: &cfg,
                names: &self.names,
                read_buf: &mut self.buf,
            };
            f(&mut self.conn, &mut cx, self.now)
        }

        fn readable(&mut self) -> Next {
            self.with(|c, cx, now| c.on_readable(cx, now))
        }

        fn writable(&mut self) -> Next {
            self.with(|c, cx, now| c.on_writable(cx, now))
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
    fn an_upgrade_switches_to_a_websocket_and_sends_the_snapshot() {
        let upgrade = b"GET /ws/telemetry HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
        let mut r = Rig::new(vec![Step::Read(upgrade.to_vec())]);
        assert_eq!(r.readable(), Next::Keep);
        assert_eq!(r.statuses(), [101]);
        assert!(r.conn.ws().is_some_and(|w| w.wants_changes()));
        let written = r.conn.stream.take_written();
        let head_end = written
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|i| i + 4)
            .unwrap();
        let frame = &written[head_end..];
        assert_eq!(frame[0], 0x81, "a final text frame follows the 101");
        let payload = String::from_utf8_lossy(&frame[2..]);
        assert!(payload.starts_with(r#"{"type":"snapshot""#), "{payload}");
        assert_eq!(r.shared.stats.get(Counter::WsClients), 1);
        // The client closes: the stream ends.
        r.conn.stream.then(vec![Step::Eof]);
        assert_eq!(r.readable(), Next::Close);
        // A refused upgrade (bad version) closes.
        let v8 = String::from_utf8_lossy(upgrade).replace("Version: 13", "Version: 8");
        let mut r = Rig::new(vec![Step::Read(v8.into_bytes())]);
        assert_eq!(r.readable(), Next::Close);
        assert_eq!(r.statuses(), [400]);
    }
}
