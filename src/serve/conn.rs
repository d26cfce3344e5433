//! One HTTP/1.1 connection: bytes in, requests parsed and answered in
//! order, bytes out.
//!
//! A plain state machine driven by the loop's readiness events. Handlers
//! return whether to keep the connection; the loop then asks
//! [`Conn::interest`] what to wait for (WRITABLE only while output is
//! queued). Pipelined requests are answered in order; parsing pauses while
//! more than [`OUT_HIGH`] bytes wait to be written (backpressure), and
//! reading pauses while the input buffer is full.
//!
//! Deadlines use `Instant`: a request head (and its body) must complete
//! within [`HEAD_TIMEOUT`] (else 408 and close); a connection with nothing
//! in flight is closed after [`IDLE_TIMEOUT`].

use crate::fleet::registry::Registry;
use crate::serve::head::{self, Body, HeadError, Method, Request, Response};
use crate::serve::routes::Api;
use crate::serve::ws::{self, Ended, WsConn, WsLimits};
use mio::Interest;
use mio::net::TcpStream;
use std::collections::VecDeque;
use std::io::{self, IoSlice, Read, Write};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Queued output above which no further pipelined request is parsed.
pub const OUT_HIGH: usize = 4 << 20;
/// Input buffered at most: one largest head plus one largest body.
const IN_CAP: usize = head::MAX_HEAD + head::MAX_BODY;
const READ_CHUNK: usize = 16 * 1024;

thread_local! {
    /// The loop's one read buffer, zeroed once rather than per read.
    static READ_BUF: std::cell::RefCell<Box<[u8]>> =
        std::cell::RefCell::new(vec![0; READ_CHUNK].into_boxed_slice());
}
/// Buffers above this are freed once empty, so idle connections stay small.
const KEEP_CAPACITY: usize = 64 * 1024;
/// Shared bodies this large are queued by reference instead of copied.
const SHARE_MIN: usize = 16 * 1024;
/// Buffers handed to one `writev` at most.
const IOV_MAX: usize = 64;

/// Output waiting for the socket, in order: bytes of our own (heads, small
/// bodies) and shared bodies (a cached `/telemetry`), written with one
/// `writev` so a shared body is never copied into the connection.
#[derive(Default)]
struct OutQueue {
    bufs: VecDeque<Body>,
    /// Bytes of the front buffer already written.
    pos: usize,
    /// Bytes not yet written.
    len: usize,
}

impl OutQueue {
    fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The buffer to append owned bytes to: the last one when it is ours.
    fn tail(&mut self) -> &mut Vec<u8> {
        if !matches!(self.bufs.back(), Some(Body::Owned(_))) {
            self.bufs.push_back(Body::Owned(Vec::new()));
        }
        match self.bufs.back_mut() {
            Some(Body::Owned(v)) => v,
            _ => unreachable!("an owned buffer was just pushed"),
        }
    }

    /// Append `resp`: its head always, its body unless `head_only`.
    fn push(&mut self, resp: &Response, head_only: bool, keep_alive: bool, cors: &str) {
        let tail = self.tail();
        let before = tail.len();
        let has_body = head::write_head(tail, resp, keep_alive, cors) && !head_only;
        self.len += tail.len() - before;
        if !has_body {
            return;
        }
        match &resp.body {
            Body::Shared(a) if a.len() >= SHARE_MIN => self.bufs.push_back(Body::Shared(a.clone())),
            body => self.tail().extend_from_slice(body),
        }
        self.len += resp.body.len();
    }

    /// Write as much as the socket takes. `Ok(true)` once all is written.
    fn write_to(&mut self, w: &mut impl Write) -> io::Result<bool> {
        while !self.is_empty() {
            let mut iov = [IoSlice::new(&[]); IOV_MAX];
            let mut n = 0;
            for (i, b) in self.bufs.iter().take(IOV_MAX).enumerate() {
                let from = if i == 0 { self.pos } else { 0 };
                iov[n] = IoSlice::new(&b[from..]);
                n += 1;
            }
            match w.write_vectored(&iov[..n]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => self.advance(written),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        // `advance` has left at most one empty buffer of our own.
        Ok(true)
    }

    fn advance(&mut self, mut written: usize) {
        self.len -= written;
        while let Some(front) = self.bufs.front() {
            let left = front.len() - self.pos;
            if written < left {
                self.pos += written;
                return;
            }
            written -= left;
            self.pos = 0;
            let done = self.bufs.pop_front();
            // Keep one small buffer of our own for the next response.
            if let (Some(Body::Owned(mut v)), true) = (done, self.bufs.is_empty()) {
                if v.capacity() <= KEEP_CAPACITY {
                    v.clear();
                    self.bufs.push_back(Body::Owned(v));
                    return;
                }
            }
        }
    }
}

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

pub struct Conn {
    pub stream: TcpStream,
    state: State,
    inbuf: Vec<u8>,
    out: OutQueue,
    /// When the unfinished request at the front of `inbuf` began.
    head_started: Option<Instant>,
    last_active: Instant,
    read_paused: bool,
    peer_closed: bool,
    /// Set when upgraded, to count the client out when the connection drops.
    ws_stats: Option<std::sync::Arc<crate::stats::Stats>>,
}

impl Conn {
    pub fn new(stream: TcpStream, now: Instant) -> Conn {
        Conn {
            stream,
            state: State::Open,
            inbuf: Vec::new(),
            out: OutQueue::default(),
            head_started: None,
            last_active: now,
            read_paused: false,
            peer_closed: false,
            ws_stats: None,
        }
    }

    pub fn is_open(&self) -> bool {
        matches!(self.state, State::Open)
    }

    pub fn ws(&self) -> Option<&WsConn> {
        match &self.state {
            State::Ws(w) => Some(w),
            _ => None,
        }
    }

    pub fn interest(&self) -> Interest {
        let ws_out = self.ws().is_some_and(|w| w.wants_write());
        if !self.out.is_empty() || ws_out {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        }
    }

    fn pending_out(&self) -> usize {
        self.out.len
    }

    pub fn on_readable(&mut self, api: &Api, now: Instant) -> Next {
        if let State::Ws(w) = &mut self.state {
            let read = w.on_readable(&mut self.stream);
            return self.ws_result(&api.registry, read, now);
        }
        let read = READ_BUF.with_borrow_mut(|chunk| {
            while self.is_open() && !self.peer_closed {
                if self.inbuf.len() >= IN_CAP || self.pending_out() > OUT_HIGH {
                    self.read_paused = true;
                    break;
                }
                let room = READ_CHUNK.min(IN_CAP - self.inbuf.len());
                match self.stream.read(&mut chunk[..room]) {
                    Ok(0) => self.peer_closed = true,
                    Ok(n) => {
                        self.inbuf.extend_from_slice(&chunk[..n]);
                        self.last_active = now;
                        self.process(api, now);
                        // A short read emptied the socket: bytes arriving
                        // later raise a new edge, so skip the read that would
                        // only say WouldBlock (one syscall per request).
                        if n < room {
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return Err(()),
                }
            }
            Ok(())
        });
        if read.is_err() {
            return Next::Close;
        }
        self.process(api, now);
        let next = self.flush(now);
        if let (Next::Keep, State::Ws(w)) = (&next, &mut self.state) {
            // Just upgraded: read what the client sent since, then send the
            // first message.
            let read = w.on_readable(&mut self.stream);
            return self.ws_result(&api.registry, read, now);
        }
        next
    }

    pub fn on_writable(&mut self, api: &Api, now: Instant) -> Next {
        if self.flush(now) == Next::Close {
            return Next::Close;
        }
        if matches!(self.state, State::Ws(_)) {
            return self.ws_result(&api.registry, Ok(()), now);
        }
        if self.read_paused && self.pending_out() <= OUT_HIGH {
            self.read_paused = false;
            return self.on_readable(api, now);
        }
        Next::Keep
    }

    /// New changes from worker threads, for a WebSocket client.
    pub fn on_changes(&mut self, registry: &Registry, fanout: &ws::Fanout, now: Instant) -> Next {
        match &mut self.state {
            State::Ws(w) => w.on_changes(fanout),
            _ => return Next::Keep,
        }
        self.ws_result(registry, Ok(()), now)
    }

    /// After a WebSocket event: pump output unless it ended.
    fn ws_result(&mut self, registry: &Registry, r: Result<(), Ended>, now: Instant) -> Next {
        let limits = ws_limits(registry);
        let r = match (&mut self.state, r) {
            (State::Ws(w), Ok(())) if self.out.is_empty() => {
                w.pump(&mut self.stream, registry, limits, now)
            }
            (_, r) => r,
        };
        match r {
            Ok(()) => Next::Keep,
            Err(ended) => {
                let st = &registry.stats;
                match ended {
                    Ended::Stalled => st.ws_closed_stalled.fetch_add(1, Relaxed),
                    Ended::PingTimeout => st.ws_closed_ping.fetch_add(1, Relaxed),
                    Ended::TooBig => st.ws_closed_too_big.fetch_add(1, Relaxed),
                    Ended::Closed | Ended::Error => 0,
                };
                log::debug!("websocket closed: {ended:?}");
                Next::Close
            }
        }
    }

    /// Deadlines; called a few times a second.
    pub fn on_timeout(&mut self, api: &Api, now: Instant) -> Next {
        if let State::Ws(w) = &mut self.state {
            let r = w.on_tick(&mut self.stream, ws_limits(&api.registry), now);
            return self.ws_result(&api.registry, r, now);
        }
        if let Some(start) = self.head_started {
            if now.saturating_duration_since(start) >= HEAD_TIMEOUT {
                let resp =
                    Response::error(408, "request_timeout", "request not complete within 10 s");
                self.respond(api, &resp, false, false);
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

    /// Answer every complete request buffered, in order.
    fn process(&mut self, api: &Api, now: Instant) {
        let mut start = 0;
        while self.is_open() && self.pending_out() <= OUT_HIGH {
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
                    self.refuse(api, e);
                    break;
                }
                Ok(Some((req, head_len))) => {
                    let total = head_len + req.content_length;
                    if buf.len() < total {
                        self.head_started.get_or_insert(now);
                        break;
                    }
                    if ws::is_ws_path(&req.path) {
                        self.upgrade(api, &req, start + head_len, now);
                        start = self.inbuf.len();
                        break;
                    }
                    let resp = api.handle(&req, &buf[head_len..total]);
                    let keep = req.keep_alive && !resp.close;
                    self.respond(api, &resp, req.method == Method::Head, keep);
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
    fn upgrade(&mut self, api: &Api, req: &Request, body_start: usize, now: Instant) {
        let st = &api.registry.stats;
        let accepted = ws::subscription(&req.path, &req.query).and_then(|sub| {
            if st.ws_clients.load(Relaxed) >= api.registry.live.ws_max_clients() {
                return Err(Response::error(
                    503,
                    "too_many_clients",
                    "ws_max_clients reached",
                ));
            }
            ws::accept(req).map(|resp| (sub, resp))
        });
        match accepted {
            Ok((sub, resp)) => {
                // Record changes from now on, before the first snapshot is
                // composed, so nothing between the two is missed.
                if sub.stream != ws::Stream::Summary {
                    api.registry.changes.set_wanted(true);
                }
                self.respond(api, &resp, false, true);
                let early = self.inbuf[body_start..].to_vec();
                self.state = State::Ws(Box::new(WsConn::new(sub, early, now)));
                st.ws_clients.fetch_add(1, Relaxed);
                st.ws_accepted.fetch_add(1, Relaxed);
                self.ws_stats = Some(api.registry.stats.clone());
            }
            Err(resp) => {
                self.respond(api, &resp, false, false);
                self.state = State::Closing;
            }
        }
        self.head_started = None;
    }

    fn refuse(&mut self, api: &Api, e: HeadError) {
        let code = match e {
            HeadError::Malformed => "bad_request",
            HeadError::HeadTooLarge | HeadError::TooManyHeaders => "head_too_large",
            HeadError::LengthRequired => "length_required",
            HeadError::BodyTooLarge => "body_too_large",
        };
        let resp = Response::error(e.status(), code, e.message());
        self.respond(api, &resp, false, false);
        self.state = State::Closing;
        self.head_started = None;
    }

    fn respond(&mut self, api: &Api, resp: &Response, head_only: bool, keep_alive: bool) {
        let cors = api.registry.live.cors_allow_origin();
        self.out.push(resp, head_only, keep_alive, &cors);
        api.registry.stats.http_response(resp.status);
    }

    fn flush(&mut self, now: Instant) -> Next {
        let before = self.out.len;
        let done = self.out.write_to(&mut self.stream);
        if self.out.len < before {
            self.last_active = now;
        }
        match done {
            Ok(true) => {}
            Ok(false) => return Next::Keep,
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

fn ws_limits(registry: &Registry) -> WsLimits {
    let live = &registry.live;
    WsLimits {
        max_queue_bytes: live.ws_max_queue_bytes(),
        stall_timeout: live.ws_stall_timeout(),
        summary_interval: live.summary_interval(),
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        // The count of WebSocket clients follows the connections.
        if let Some(stats) = self.ws_stats.take() {
            stats.ws_clients.fetch_sub(1, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A socket that takes at most `max` bytes per call and refuses every
    /// other call, as a full send buffer would.
    struct Trickle {
        got: Vec<u8>,
        max: usize,
        calls: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.write_vectored(&[IoSlice::new(buf)])
        }
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            self.calls += 1;
            if self.calls % 2 == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(self.max - n);
                self.got.extend_from_slice(&b[..take]);
                n += take;
            }
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn queue_writes_heads_and_shared_bodies_in_order() {
        let shared: Arc<[u8]> = vec![b's'; SHARE_MIN + 3].into();
        let small = Response::json(200, b"{\"a\":1}".to_vec());
        let big = Response::json(200, shared.clone());
        let mut q = OutQueue::default();
        let mut want = Vec::new();
        for (resp, head_only) in [
            (&small, false),
            (&big, false),
            (&big, true),
            (&small, false),
        ] {
            q.push(resp, head_only, true, "");
            head::write_response(&mut want, resp, head_only, true, "");
        }
        assert_eq!(q.len, want.len());
        assert!(
            q.bufs
                .iter()
                .any(|b| matches!(b, Body::Shared(a) if Arc::ptr_eq(a, &shared))),
            "a large shared body is queued by reference"
        );
        let mut sock = Trickle {
            got: Vec::new(),
            max: 1000,
            calls: 0,
        };
        let mut rounds = 0;
        while !q.write_to(&mut sock).unwrap() {
            rounds += 1;
            assert!(rounds < 1000);
        }
        assert_eq!(sock.got, want);
        assert!(q.is_empty());
        assert_eq!(Arc::strong_count(&shared), 2, "written bodies are let go");
    }
}
