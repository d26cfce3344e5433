//! WebSocket streams on the HTTP loop: the upgrade check, subscriptions and
//! their filters, the JSON messages, and one upgraded connection's state
//! around a tungstenite `WebSocketContext` (no thread per client).
//!
//! Delivery is state, not a log: a client's pending set holds the ids that
//! changed since its last message, and each message renders the latest
//! snapshot of each, so a slow client gets fewer, fresher messages and its
//! backlog is bounded by the number of workers. At most one message is in
//! flight per client (a new one is composed only when the previous one is
//! flushed), and an update message is cut at `ws_max_queue_bytes`.
//!
//! This module does not own sockets or decide when to run: the HTTP loop
//! calls [`WsConn::on_readable`], [`WsConn::on_changes`], [`WsConn::pump`]
//! and [`WsConn::on_tick`].

use crate::clock::unix_ms;
use crate::fleet::registry::Registry;
use crate::fleet::worker::{ResourceUsageView, Snapshot, Telemetry};
use crate::proto::{WorkerId, check_worker_id};
use crate::serve::head::{Body, Request, Response, percent_decode, query_param};
use mio::net::TcpStream;
use serde_json::{Map, Value, json};
use std::collections::{BTreeSet, HashSet};
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig, WebSocketContext};
use tungstenite::{Error as WsError, Message, Utf8Bytes};

/// The streams, as documented in README.md and musterd(8).
pub const ENDPOINTS: [&str; 3] = [
    "/ws/telemetry",
    "/ws/telemetry/{id}",
    "/ws/workers/telemetry",
];

/// Client messages larger than this close the connection with 1009.
pub const MAX_CLIENT_MESSAGE: usize = 4096;
/// Server pings this often; two unanswered pings close the connection.
pub const PING_EVERY: Duration = Duration::from_secs(30);

/// What a client subscribed to.
#[derive(Clone, Debug, PartialEq)]
pub enum Stream {
    /// `/ws/telemetry`: every worker, snapshot then changes.
    All,
    /// `/ws/telemetry/{id}`: one worker, which may not exist yet.
    One(WorkerId),
    /// `/ws/workers/telemetry`: seed 000's summary every `summary_interval`.
    Summary,
}

/// Query-string filters, common to all three streams.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Filter {
    pub status: Option<String>,
    pub label: Option<(String, String)>,
    /// Only these telemetry fields (plus `worker_id`).
    pub fields: Option<Vec<String>>,
}

impl Filter {
    pub fn matches(&self, s: &Snapshot) -> bool {
        let status_ok = self.status.as_deref().is_none_or(|st| s.has_status(st));
        let label_ok = match &self.label {
            None => true,
            Some((k, v)) => s.labels.get(k) == Some(v),
        };
        status_ok && label_ok
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Subscription {
    pub stream: Stream,
    pub filter: Filter,
}

/// Is this a WebSocket path? Then the request must be a valid upgrade.
pub fn is_ws_path(path: &str) -> bool {
    path == "/ws" || path.starts_with("/ws/")
}

/// Parse the path and query of a WebSocket request.
pub fn subscription(path: &str, query: &str) -> Result<Subscription, Response> {
    let segs: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let stream = match segs.as_slice() {
        ["ws", "telemetry"] => Stream::All,
        ["ws", "workers", "telemetry"] => Stream::Summary,
        ["ws", "telemetry", id] => {
            let id = percent_decode(id)
                .filter(|id| check_worker_id(id).is_ok())
                .ok_or_else(|| {
                    Response::error(
                        400,
                        "bad_worker_id",
                        "worker ids are 1-128 bytes of A-Za-z0-9._:@-",
                    )
                })?;
            Stream::One(WorkerId::from(id.as_ref()))
        }
        _ => return Err(Response::error(404, "not_found", "no such stream")),
    };
    let mut filter = Filter {
        status: crate::serve::routes::status_filter(query)?,
        ..Filter::default()
    };
    if let Some(l) = query_param(query, "label") {
        let (k, v) = l
            .split_once(':')
            .ok_or_else(|| Response::error(400, "bad_label", "label filter is key:value"))?;
        filter.label = Some((k.to_string(), v.to_string()));
    }
    if let Some(f) = query_param(query, "fields") {
        filter.fields = Some(
            f.split(',')
                .map(str::trim)
                .filter(|f| !f.is_empty())
                .map(String::from)
                .collect(),
        );
    }
    Ok(Subscription { stream, filter })
}

/// Check an upgrade request (RFC 6455 §4.2.1) and build the 101 response.
pub fn accept(req: &Request) -> Result<Response, Response> {
    let bad = |msg: &str| {
        Response::error(400, "bad_upgrade", msg).with_header("Sec-WebSocket-Version", "13")
    };
    if req.upgrade.is_none() && !req.connection_upgrade {
        return Err(
            Response::error(426, "upgrade_required", "this is a WebSocket endpoint")
                .with_header("Upgrade", "websocket")
                .with_header("Sec-WebSocket-Version", "13"),
        );
    }
    if req.method != crate::serve::head::Method::Get || req.minor < 1 {
        return Err(bad("a WebSocket upgrade is an HTTP/1.1 GET"));
    }
    if !req
        .upgrade
        .as_deref()
        .is_some_and(|u| u.eq_ignore_ascii_case("websocket"))
        || !req.connection_upgrade
    {
        return Err(bad("needs Upgrade: websocket and Connection: Upgrade"));
    }
    // §4.4: an unsupported version is refused, naming the one we speak.
    if req.ws_version.as_deref() != Some("13") {
        return Err(bad("only Sec-WebSocket-Version 13 is supported"));
    }
    let key = req.ws_key.as_deref().unwrap_or("");
    // A base64-encoded 16-byte nonce is 24 characters ending in "==".
    if key.len() != 24 || !key.ends_with("==") {
        return Err(bad("missing or malformed Sec-WebSocket-Key"));
    }
    Ok(Response {
        status: 101,
        ..Response::default()
    }
    .with_header("Upgrade", "websocket")
    .with_header("Connection", "Upgrade")
    .with_header(
        "Sec-WebSocket-Accept",
        tungstenite::handshake::derive_accept_key(key.as_bytes()),
    ))
}

/// Append `"id":{telemetry}` for one worker, honouring `fields`.
fn push_worker(out: &mut String, s: &Snapshot, fields: Option<&[String]>) {
    // Worker ids are validated to need no JSON escaping.
    out.push('"');
    out.push_str(&s.id);
    out.push_str("\":");
    match fields {
        None => out.push_str(s.telemetry_json()),
        Some(fields) => {
            let full = serde_json::to_value(Telemetry::of(s)).unwrap_or(Value::Null);
            let mut m = Map::new();
            m.insert("worker_id".into(), json!(&*s.id));
            for f in fields {
                if let Some(v) = full.get(f) {
                    m.insert(f.clone(), v.clone());
                }
            }
            out.push_str(&Value::Object(m).to_string());
        }
    }
}

/// `{"type":KIND,"timestamp":…,"workers":{…}}` for these snapshots.
pub fn workers_message(kind: &str, snaps: &[Arc<Snapshot>], fields: Option<&[String]>) -> String {
    let mut out = format!(
        "{{\"type\":\"{kind}\",\"timestamp\":{},\"workers\":{{",
        unix_ms()
    );
    for (i, s) in snaps.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_worker(&mut out, s, fields);
    }
    out.push_str("}}");
    out
}

pub fn removed_message(ids: &[WorkerId]) -> String {
    let ids: Vec<&str> = ids.iter().map(|i| &**i).collect();
    json!({"type": "removed", "timestamp": unix_ms(), "worker_ids": ids}).to_string()
}

/// Seed 000's summary message, with `inactive`, `terminated` and `created`
/// counts added.
pub fn summary_message(snaps: &[Arc<Snapshot>], filter: &Filter) -> String {
    let mut workers = Map::new();
    let count = |k: &str, c: &mut Map<String, Value>| {
        let n = c.get(k).and_then(Value::as_u64).unwrap_or(0);
        c.insert(k.into(), json!(n + 1));
    };
    let mut summary = Map::new();
    for k in [
        "total",
        "idle",
        "working",
        "error",
        "inactive",
        "terminated",
        "created",
        "total_queue_depth",
    ] {
        summary.insert(k.into(), json!(0));
    }
    let mut queue = 0u64;
    for s in snaps.iter().filter(|s| filter.matches(s)) {
        let mut w = Map::new();
        w.insert("status".into(), json!(s.status()));
        w.insert(
            "resource_usage".into(),
            serde_json::to_value(s.resource_usage.as_ref().map(ResourceUsageView))
                .unwrap_or(Value::Null),
        );
        w.insert("queue_depth".into(), json!(s.queue_depth));
        if let Some(fields) = &filter.fields {
            let t = serde_json::to_value(Telemetry::of(s)).unwrap_or(Value::Null);
            for f in fields {
                if let Some(v) = t.get(f) {
                    w.insert(f.clone(), v.clone());
                }
            }
        }
        workers.insert(s.id.to_string(), Value::Object(w));
        count("total", &mut summary);
        count(s.status(), &mut summary);
        queue += s.queue_depth;
    }
    summary.insert("total_queue_depth".into(), json!(queue));
    json!({"timestamp": unix_ms(), "workers": workers, "summary": summary}).to_string()
}

/// Settings a connection needs from the live configuration.
#[derive(Clone, Copy, Debug)]
pub struct WsLimits {
    pub max_queue_bytes: usize,
    pub stall_timeout: Duration,
    pub summary_interval: Duration,
}

pub fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(Some(MAX_CLIENT_MESSAGE))
        .max_frame_size(Some(MAX_CLIENT_MESSAGE))
}

/// Why a WebSocket connection ended, for logs and counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// The peer closed, or the close handshake completed.
    Closed,
    /// No write progress for `ws_stall_timeout` (closed with 1008).
    Stalled,
    /// Two pings went unanswered.
    PingTimeout,
    /// A client message over the size limit (closed with 1009).
    TooBig,
    /// A protocol or socket error.
    Error,
}

pub struct WsConn {
    ctx: WebSocketContext,
    pub sub: Subscription,
    need_snapshot: bool,
    /// Ids changed since the last message (All and One streams).
    pending: BTreeSet<WorkerId>,
    removed: Vec<WorkerId>,
    /// Ids the client has been told about and that still match its filter.
    visible: HashSet<WorkerId>,
    /// A message was handed to the socket and not yet fully written.
    unflushed: bool,
    last_flushed: Instant,
    next_ping: Instant,
    unanswered_pings: u8,
    next_summary: Instant,
    /// A shared update framed once for every plain client, ready to send.
    ready: Option<Arc<[u8]>>,
    /// A large message written by us, not tungstenite, and how much of it
    /// is out. tungstenite keeps its write buffer at the size of the largest
    /// message it ever sent; a 300 KB snapshot to each of 5,000 clients
    /// would stay 1.5 GB. While this is in flight tungstenite neither
    /// writes nor reads, so frames never interleave.
    /// Shared updates go out this way too, from the one framed copy.
    raw: Option<(Body, usize)>,
    read_deferred: bool,
}

/// The next message for a client: composed for it, or a shared frame.
enum Next {
    Text(String),
    Framed(Arc<[u8]>),
}

/// Messages at least this large bypass tungstenite's write buffer.
pub const RAW_MIN: usize = 32 * 1024;

/// One unmasked, final text frame (RFC 6455 §5.2): a server's frame.
pub fn raw_text_frame(payload: &[u8]) -> Vec<u8> {
    let n = payload.len();
    let mut f = Vec::with_capacity(n + 10);
    f.push(0x81);
    if n < 126 {
        f.push(n as u8);
    } else if n <= u16::MAX as usize {
        f.push(126);
        f.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        f.push(127);
        f.extend_from_slice(&(n as u64).to_be_bytes());
    }
    f.extend_from_slice(payload);
    f
}

/// One fan-out of changes to every client.
pub struct Fanout {
    pub changed: Vec<WorkerId>,
    pub removed: Vec<WorkerId>,
    /// The update for plain clients, rendered once for all of them.
    pub shared: Option<SharedUpdate>,
}

pub struct SharedUpdate {
    /// The update as one server frame, written to every plain client from
    /// this copy.
    pub frame: Arc<[u8]>,
    /// The workers it carries.
    pub ids: Vec<WorkerId>,
}

impl Fanout {
    /// Render the shared update once when any client can use it.
    pub fn new(
        changed: Vec<WorkerId>,
        removed: Vec<WorkerId>,
        registry: &Registry,
        any_plain: bool,
    ) -> Fanout {
        let shared = any_plain.then(|| {
            let snaps: Vec<Arc<Snapshot>> = changed
                .iter()
                .filter_map(|id| registry.snapshot(id))
                .collect();
            SharedUpdate {
                ids: snaps.iter().map(|s| s.id.clone()).collect(),
                frame: raw_text_frame(workers_message("update", &snaps, None).as_bytes()).into(),
            }
        });
        let shared = shared.filter(|s| !s.ids.is_empty());
        Fanout {
            changed,
            removed,
            shared,
        }
    }
}

impl WsConn {
    /// A new upgraded connection; `early` holds bytes the client sent right
    /// after its handshake. The first message goes out on the first pump.
    pub fn new(sub: Subscription, early: Vec<u8>, now: Instant) -> WsConn {
        WsConn {
            ctx: WebSocketContext::from_partially_read(early, Role::Server, Some(config())),
            need_snapshot: sub.stream != Stream::Summary,
            sub,
            pending: BTreeSet::new(),
            removed: Vec::new(),
            visible: HashSet::new(),
            unflushed: false,
            last_flushed: now,
            next_ping: now + PING_EVERY,
            unanswered_pings: 0,
            next_summary: now,
            ready: None,
            raw: None,
            read_deferred: false,
        }
    }

    /// Whether the client wants the change feed at all.
    pub fn wants_changes(&self) -> bool {
        self.sub.stream != Stream::Summary
    }

    pub fn wants_write(&self) -> bool {
        self.unflushed || self.raw.is_some()
    }

    fn in_flight(&self) -> bool {
        self.unflushed || self.raw.is_some()
    }

    /// Every worker, no filter: such clients can share one rendered update.
    pub fn is_plain(&self) -> bool {
        self.sub.stream == Stream::All && self.sub.filter == Filter::default()
    }

    /// Workers changed or were removed: note the ones this client follows,
    /// or take the shared update when this client is plain and in step.
    pub fn on_changes(&mut self, f: &Fanout) {
        if let Some(shared) = &f.shared {
            let in_step = self.pending.is_empty()
                && self.ready.is_none()
                && !self.need_snapshot
                && !self.in_flight();
            if self.is_plain() && in_step {
                self.ready = Some(shared.frame.clone());
                self.note_removed(&f.removed);
                return;
            }
        }
        let follows = |id: &WorkerId| match &self.sub.stream {
            Stream::All => true,
            Stream::One(one) => one == id,
            Stream::Summary => false,
        };
        for id in f.changed.iter().filter(|id| follows(id)) {
            self.pending.insert(id.clone());
        }
        self.note_removed(&f.removed);
    }

    /// Only a status or label filter can hide a worker the client saw, so
    /// only then is what it saw tracked (O(workers) per client).
    fn tracks_visibility(&self) -> bool {
        self.sub.filter.status.is_some() || self.sub.filter.label.is_some()
    }

    fn note_removed(&mut self, removed: &[WorkerId]) {
        let follows = |id: &WorkerId| match &self.sub.stream {
            Stream::All => true,
            Stream::One(one) => one == id,
            Stream::Summary => false,
        };
        for id in removed.iter().filter(|id| follows(id)) {
            self.pending.remove(id);
            if !self.tracks_visibility() || self.visible.remove(id) {
                self.removed.push(id.clone());
            }
        }
    }

    /// Read client frames: answer pings (tungstenite queues the pong), note
    /// pongs, ignore data, complete the close handshake.
    pub fn on_readable(&mut self, stream: &mut TcpStream) -> Result<(), Ended> {
        if self.raw.is_some() {
            // tungstenite would answer a ping in the middle of our frame.
            self.read_deferred = true;
            return Ok(());
        }
        loop {
            match self.ctx.read(stream) {
                Ok(Message::Pong(_)) => self.unanswered_pings = 0,
                Ok(_) => {}
                Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(WsError::Io(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => {
                    return Err(Ended::Closed);
                }
                Err(WsError::Capacity(_)) => {
                    self.close(stream, CloseCode::Size, "message too big");
                    return Err(Ended::TooBig);
                }
                Err(_) => return Err(Ended::Error),
            }
        }
    }

    fn close(&mut self, stream: &mut TcpStream, code: CloseCode, reason: &str) {
        let frame = CloseFrame {
            code,
            reason: reason.to_string().into(),
        };
        let _ = self.ctx.close(stream, Some(frame));
    }

    /// Flush what is in flight, then compose and write the next message,
    /// until the socket would block or nothing is due.
    pub fn pump(
        &mut self,
        stream: &mut TcpStream,
        registry: &Registry,
        limits: WsLimits,
        now: Instant,
    ) -> Result<(), Ended> {
        loop {
            if let Some((frame, pos)) = &mut self.raw {
                while *pos < frame.len() {
                    match io::Write::write(stream, &frame[*pos..]) {
                        Ok(0) => return Err(Ended::Closed),
                        Ok(n) => *pos += n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => return Err(Ended::Error),
                    }
                }
                // Dropping the buffer returns its memory at once.
                self.raw = None;
                self.last_flushed = now;
                if std::mem::take(&mut self.read_deferred) {
                    self.on_readable(stream)?;
                }
            }
            if self.unflushed {
                match self.ctx.flush(stream) {
                    Ok(()) => {
                        self.unflushed = false;
                        self.last_flushed = now;
                    }
                    Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                    Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => {
                        return Err(Ended::Closed);
                    }
                    Err(_) => return Err(Ended::Error),
                }
            }
            let text = match self.next_message(registry, limits, now) {
                None => return Ok(()),
                Some(Next::Framed(frame)) => {
                    self.raw = Some((Body::Shared(frame), 0));
                    continue;
                }
                Some(Next::Text(text)) if text.len() >= RAW_MIN => {
                    self.raw = Some((Body::Owned(raw_text_frame(text.as_bytes())), 0));
                    continue;
                }
                Some(Next::Text(text)) => text,
            };
            match self.ctx.write(stream, Message::Text(Utf8Bytes::from(text))) {
                Ok(()) => self.unflushed = true,
                Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.unflushed = true;
                    return Ok(());
                }
                Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => {
                    return Err(Ended::Closed);
                }
                Err(_) => return Err(Ended::Error),
            }
        }
    }

    fn next_message(
        &mut self,
        registry: &Registry,
        limits: WsLimits,
        now: Instant,
    ) -> Option<Next> {
        self.compose(registry, limits, now)
            .map(Next::Text)
            .or_else(|| self.ready.take().map(Next::Framed))
    }

    fn compose(&mut self, registry: &Registry, limits: WsLimits, now: Instant) -> Option<String> {
        let fields = self.sub.filter.fields.clone();
        if self.need_snapshot {
            self.need_snapshot = false;
            let snaps: Vec<Arc<Snapshot>> = match &self.sub.stream {
                Stream::One(id) => registry.snapshot(id).into_iter().collect(),
                _ => registry.snapshots(),
            };
            let snaps: Vec<Arc<Snapshot>> = snaps
                .into_iter()
                .filter(|s| self.sub.filter.matches(s))
                .collect();
            if self.tracks_visibility() {
                self.visible = snaps.iter().map(|s| s.id.clone()).collect();
            }
            self.pending.clear();
            return Some(workers_message("snapshot", &snaps, fields.as_deref()));
        }
        if self.sub.stream == Stream::Summary {
            if now < self.next_summary {
                return None;
            }
            self.next_summary = now + limits.summary_interval;
            return Some(summary_message(&registry.snapshots(), &self.sub.filter));
        }
        // Updates: the latest state of each pending id, cut at the limit.
        let mut snaps = Vec::new();
        let mut size = 0;
        while let Some(id) = self.pending.pop_first() {
            match registry.snapshot(&id) {
                Some(s) if self.sub.filter.matches(&s) => {
                    size += s.telemetry_json().len() + id.len() + 4;
                    if self.tracks_visibility() {
                        self.visible.insert(id);
                    }
                    snaps.push(s);
                    if size >= limits.max_queue_bytes {
                        break;
                    }
                }
                Some(_) => {
                    // No longer matches the filter: gone from this view.
                    if self.visible.remove(&id) {
                        self.removed.push(id);
                    }
                }
                None => {
                    if !self.tracks_visibility() || self.visible.remove(&id) {
                        self.removed.push(id);
                    }
                }
            }
        }
        if !snaps.is_empty() {
            return Some(workers_message("update", &snaps, fields.as_deref()));
        }
        if !self.removed.is_empty() {
            let ids = std::mem::take(&mut self.removed);
            return Some(removed_message(&ids));
        }
        None
    }

    /// Pings, and the stall check; about once a second.
    pub fn on_tick(
        &mut self,
        stream: &mut TcpStream,
        limits: WsLimits,
        now: Instant,
    ) -> Result<(), Ended> {
        if self.in_flight()
            && now.saturating_duration_since(self.last_flushed) >= limits.stall_timeout
        {
            self.close(stream, CloseCode::Policy, "client stalled");
            return Err(Ended::Stalled);
        }
        if now >= self.next_ping && self.raw.is_none() {
            if self.unanswered_pings >= 2 {
                self.close(stream, CloseCode::Policy, "pings unanswered");
                return Err(Ended::PingTimeout);
            }
            self.unanswered_pings += 1;
            self.next_ping = now + PING_EVERY;
            match self.ctx.write(stream, Message::Ping(Vec::new().into())) {
                Ok(()) => self.unflushed = true,
                Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.unflushed = true
                }
                Err(_) => return Err(Ended::Error),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::head::parse;

    fn req(text: &str) -> Request {
        parse(text.as_bytes()).unwrap().unwrap().0
    }

    const GOOD: &str = "GET /ws/telemetry HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

    #[test]
    fn upgrade_checks() {
        let ok = accept(&req(GOOD)).unwrap();
        assert_eq!(ok.status, 101);
        // RFC 6455 §1.3's worked example.
        assert!(ok.headers.contains(&(
            "Sec-WebSocket-Accept",
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".to_string()
        )));
        let v8 = GOOD.replace("Version: 13", "Version: 8");
        let e = accept(&req(&v8)).unwrap_err();
        assert_eq!(e.status, 400);
        assert!(
            e.headers
                .contains(&("Sec-WebSocket-Version", "13".to_string()))
        );
        let nokey = GOOD.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "");
        assert_eq!(accept(&req(&nokey)).unwrap_err().status, 400);
        let plain = "GET /ws/telemetry HTTP/1.1\r\n\r\n";
        assert_eq!(accept(&req(plain)).unwrap_err().status, 426);
        let post = GOOD.replace("GET", "POST");
        assert_eq!(accept(&req(&post)).unwrap_err().status, 400);
    }

    #[test]
    fn raw_frames_have_rfc_6455_headers() {
        assert_eq!(raw_text_frame(b"hi"), [0x81, 2, b'h', b'i']);
        let mid = raw_text_frame(&[b'x'; 300]);
        assert_eq!(&mid[..4], &[0x81, 126, 1, 44]);
        let big = raw_text_frame(&vec![b'x'; 70_000]);
        assert_eq!(&big[..10], &[0x81, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
        assert_eq!(big.len(), 70_010);
    }

    #[test]
    fn subscriptions() {
        assert_eq!(
            subscription("/ws/telemetry", "").unwrap().stream,
            Stream::All
        );
        assert_eq!(
            subscription("/ws/workers/telemetry", "").unwrap().stream,
            Stream::Summary
        );
        assert_eq!(
            subscription("/ws/telemetry/w%3A1", "").unwrap().stream,
            Stream::One("w:1".into())
        );
        assert_eq!(
            subscription("/ws/telemetry/bad%20id", "")
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(subscription("/ws/other", "").unwrap_err().status, 404);
        let s = subscription(
            "/ws/telemetry",
            "status=working&label=pool:scan&fields=cpu_usage,queue_depth",
        )
        .unwrap();
        assert_eq!(s.filter.status.as_deref(), Some("working"));
        assert_eq!(s.filter.label, Some(("pool".into(), "scan".into())));
        assert_eq!(
            s.filter.fields,
            Some(vec!["cpu_usage".to_string(), "queue_depth".to_string()])
        );
        assert_eq!(
            subscription("/ws/telemetry", "status=bogus")
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(
            subscription("/ws/telemetry", "label=nocolon")
                .unwrap_err()
                .status,
            400
        );
    }
}
