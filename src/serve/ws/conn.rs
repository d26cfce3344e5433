//! One upgraded connection's state around a tungstenite `WebSocketContext`
//! (no thread per client), generic over its stream.
//!
//! Delivery is state, not a log: a client's pending map holds the latest
//! snapshot of each worker that changed since its last message, so a slow
//! client gets fewer, fresher messages and its backlog is bounded by the
//! number of workers. At most one message is in flight per client (a new
//! one is composed only when the previous one is flushed), and an update
//! message is cut at `ws_max_queue_bytes`.
//!
//! It does not own its socket or decide when to run: the HTTP loop calls
//! [`WsConn::on_readable`], [`WsConn::on_changes`], [`WsConn::pump`] and
//! [`WsConn::on_tick`].

use super::fanout::Fanout;
use super::messages::{
    RAW_MIN, push_entry, raw_frame, raw_text_frame, removed_message, summary_message, workers_head,
    workers_message,
};
use super::upgrade::{Filter, Stream, Subscription};
use crate::fleet::registry::Registry;
use crate::fleet::snapshot::Snapshot;
use crate::proto::WorkerId;
use crate::serve::head::Body;
use std::collections::{BTreeMap, HashSet};
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig, WebSocketContext};
use tungstenite::{Error as WsError, Message, Utf8Bytes};

/// Client messages larger than this close the connection with 1009.
pub const MAX_CLIENT_MESSAGE: usize = 4096;
/// Server pings this often; two unanswered pings close the connection.
pub const PING_EVERY: Duration = Duration::from_secs(30);

/// The kernel send buffer of a WebSocket client (`SO_SNDBUF`; Linux
/// doubles it for bookkeeping). Small, so that a client that stops reading
/// is felt within milliseconds: its socket stops taking data, the changes
/// meant for it gather in its latest-wins set, and the stall clock starts,
/// instead of megabytes of old updates queueing in the kernel.
pub const SEND_BUFFER: usize = 64 * 1024;

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
    /// The latest snapshot of each worker changed since the last message
    /// (All and One streams).
    pending: BTreeMap<WorkerId, Arc<Snapshot>>,
    removed: Vec<WorkerId>,
    /// Ids the client has been told about and that still match its filter.
    visible: HashSet<WorkerId>,
    /// A message was handed to the socket and not yet fully written.
    unflushed: bool,
    /// When the socket last took bytes: the stall clock.
    last_progress: Instant,
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
    /// Shutdown: the close frame (1001) is queued.
    said_away: bool,
    /// `/ws/tasks`, `/ws/alerts`: the book, and the version this client
    /// has seen.
    book: Option<(Arc<dyn super::Book>, u64)>,
    /// A snapshot of its own (filtered, or narrowed by `?fields=`) going
    /// out as fragments of one message.
    fragments: Option<Fragments>,
}

/// A client's own snapshot, sent as the fragments of one WebSocket message
/// (RFC 6455 §5.4), each rendered when the socket has taken the one
/// before: what the client holds is one fragment and the list of workers
/// still to render, whatever the fleet's size. The workers are the ones of
/// the moment the snapshot began.
struct Fragments {
    rest: std::vec::IntoIter<Arc<Snapshot>>,
    fields: Option<Vec<String>>,
    begun: bool,
}

/// The most a snapshot fragment holds (or one worker, if larger), and at
/// most `ws_max_queue_bytes`.
pub const FRAGMENT: usize = 64 * 1024;

impl Fragments {
    /// The next fragment, framed; `None` once the last has been given.
    fn next(&mut self, limit: usize) -> Option<Vec<u8>> {
        let first = !self.begun;
        if !first && self.rest.len() == 0 {
            return None;
        }
        self.begun = true;
        let mut text = if first {
            workers_head("snapshot")
        } else {
            String::new()
        };
        let mut comma = !first;
        while text.len() < limit {
            let Some(s) = self.rest.next() else { break };
            push_entry(&mut text, &s, comma, self.fields.as_deref());
            comma = true;
        }
        let last = self.rest.len() == 0;
        if last {
            text.push_str("}}");
        }
        Some(raw_frame(first, last, text.as_bytes()))
    }
}

/// The next message for a client: composed for it, or a shared frame.
enum Next {
    Text(String),
    Frame(Body),
}

impl WsConn {
    /// A new upgraded connection; `early` holds bytes the client sent right
    /// after its handshake. The first message goes out on the first pump.
    pub fn new(sub: Subscription, early: Vec<u8>, now: Instant) -> WsConn {
        WsConn {
            ctx: WebSocketContext::from_partially_read(early, Role::Server, Some(config())),
            need_snapshot: sub.stream != Stream::Summary,
            sub,
            pending: BTreeMap::new(),
            removed: Vec::new(),
            visible: HashSet::new(),
            unflushed: false,
            last_progress: now,
            next_ping: now + PING_EVERY,
            unanswered_pings: 0,
            next_summary: now,
            ready: None,
            raw: None,
            read_deferred: false,
            said_away: false,
            book: None,
            fragments: None,
        }
    }

    /// Whether the client wants the change feed at all.
    pub fn wants_changes(&self) -> bool {
        !matches!(
            self.sub.stream,
            Stream::Summary | Stream::Tasks | Stream::Alerts
        )
    }

    /// A `/ws/tasks` or `/ws/alerts` client: it reads from that book.
    pub fn follow_book(&mut self, book: Arc<dyn super::Book>) {
        self.book = Some((book, 0));
    }

    pub fn follows_book(&self) -> bool {
        self.book.is_some()
    }

    pub fn wants_write(&self) -> bool {
        self.unflushed || self.raw.is_some()
    }

    fn in_flight(&self) -> bool {
        self.unflushed || self.raw.is_some() || self.fragments.is_some()
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
            Stream::Summary | Stream::Tasks | Stream::Alerts => false,
        };
        for snap in f.changed.iter().filter(|s| follows(&s.id)) {
            self.pending.insert(snap.id.clone(), snap.clone());
        }
        self.note_removed(&f.removed);
    }

    /// Whether the next message is the whole fleet's snapshot, the same for
    /// every client: no filter, no fields.
    pub fn wants_plain_snapshot(&self) -> bool {
        self.need_snapshot && !self.in_flight() && self.book.is_none() && self.is_plain()
    }

    /// Send `frame`, the whole fleet's snapshot framed once for every
    /// client, as this client's snapshot.
    pub fn give_snapshot(&mut self, frame: Arc<[u8]>) {
        self.need_snapshot = false;
        self.pending.clear();
        self.raw = Some((Body::Shared(frame), 0));
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
            Stream::Summary | Stream::Tasks | Stream::Alerts => false,
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
    pub fn on_readable<S: Read + Write>(&mut self, stream: &mut S) -> Result<(), Ended> {
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

    fn close<S: Read + Write>(&mut self, stream: &mut S, code: CloseCode, reason: &str) {
        let frame = CloseFrame {
            code,
            reason: reason.to_string().into(),
        };
        let _ = self.ctx.close(stream, Some(frame));
    }

    /// Shutdown: finish the frame in flight, then close with 1001 (going
    /// away). Returns true once all of it is written, or the socket is
    /// broken; call again on the next chance to write.
    pub fn going_away<S: Read + Write>(&mut self, stream: &mut S) -> bool {
        if let Some((frame, pos)) = &mut self.raw {
            while *pos < frame.len() {
                match stream.write(&frame[*pos..]) {
                    Ok(0) => return true,
                    Ok(n) => *pos += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return true,
                }
            }
            self.raw = None;
        }
        if !std::mem::replace(&mut self.said_away, true) {
            self.close(stream, CloseCode::Away, "musterd is shutting down");
        }
        !matches!(self.ctx.flush(stream),
            Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Flush what is in flight, then compose and write the next message,
    /// until the socket would block or nothing is due.
    pub fn pump<S: Read + Write>(
        &mut self,
        stream: &mut S,
        registry: &Registry,
        limits: WsLimits,
        now: Instant,
    ) -> Result<(), Ended> {
        loop {
            if let Some((frame, pos)) = &mut self.raw {
                while *pos < frame.len() {
                    match stream.write(&frame[*pos..]) {
                        Ok(0) => return Err(Ended::Closed),
                        Ok(n) => {
                            *pos += n;
                            self.last_progress = now;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => return Err(Ended::Error),
                    }
                }
                // Dropping the buffer returns its memory at once.
                self.raw = None;
                if std::mem::take(&mut self.read_deferred) {
                    self.on_readable(stream)?;
                }
            }
            if self.unflushed {
                match self.ctx.flush(stream) {
                    Ok(()) => {
                        self.unflushed = false;
                        self.last_progress = now;
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
                Some(Next::Frame(frame)) => {
                    self.raw = Some((frame, 0));
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
        let fragment = limits.max_queue_bytes.clamp(1, FRAGMENT);
        if let Some(f) = self.fragments.as_mut().and_then(|f| f.next(fragment)) {
            return Some(Next::Frame(Body::Owned(f)));
        }
        self.fragments = None;
        if let Some(text) = self.compose(registry, limits, now) {
            return Some(Next::Text(text));
        }
        if let Some(f) = self.fragments.as_mut().and_then(|f| f.next(fragment)) {
            return Some(Next::Frame(Body::Owned(f)));
        }
        self.ready.take().map(|f| Next::Frame(Body::Shared(f)))
    }

    /// A book's stream: a snapshot first, then what changed.
    fn compose_book(&mut self) -> Option<String> {
        let (book, seen) = self.book.as_mut()?;
        let since = (!self.need_snapshot).then_some(*seen);
        self.need_snapshot = false;
        let (msg, v) = book.compose(since)?;
        *seen = v;
        (!msg.is_empty()).then_some(msg)
    }

    fn compose(&mut self, registry: &Registry, limits: WsLimits, now: Instant) -> Option<String> {
        if self.book.is_some() {
            return self.compose_book();
        }
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
            self.fragments = Some(Fragments {
                rest: snaps.into_iter(),
                fields,
                begun: false,
            });
            return None;
        }
        if self.sub.stream == Stream::Summary {
            if now < self.next_summary {
                return None;
            }
            self.next_summary = now + limits.summary_interval;
            return Some(summary_message(&registry.snapshots(), &self.sub.filter));
        }
        // Updates: the latest state of each pending worker, cut at the
        // limit. Removals reach `pending` through the feed, in order.
        let mut snaps = Vec::new();
        let mut size = 0;
        while let Some((id, s)) = self.pending.pop_first() {
            if self.sub.filter.matches(&s) {
                size += s.telemetry_json().len() + id.len() + 4;
                if self.tracks_visibility() {
                    self.visible.insert(id);
                }
                snaps.push(s);
                if size >= limits.max_queue_bytes {
                    break;
                }
            } else if self.visible.remove(&id) {
                // No longer matches the filter: gone from this view.
                self.removed.push(id);
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

    /// Pings, and the stall check; on every tick of the loop.
    pub fn on_tick<S: Read + Write>(
        &mut self,
        stream: &mut S,
        limits: WsLimits,
        now: Instant,
    ) -> Result<(), Ended> {
        if self.in_flight()
            && now.saturating_duration_since(self.last_progress) >= limits.stall_timeout
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
    use crate::config;
    use crate::fleet::Shared;
    use crate::fleet::snapshot::tests::queued as snap;
    use crate::script::{Script, Step};
    use crate::serve::ws::subscription;

    const LIMITS: WsLimits = WsLimits {
        max_queue_bytes: 1 << 20,
        stall_timeout: Duration::from_secs(10),
        summary_interval: Duration::from_secs(1),
    };

    fn changes(snaps: &[Arc<Snapshot>], plain: bool) -> Fanout {
        Fanout::new(snaps.to_vec(), Vec::new(), plain)
    }

    /// The text of each server frame written (unmasked, RFC 6455 §5.2).
    fn messages(mut b: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        while b.len() >= 2 {
            let (len, at) = match b[1] & 0x7f {
                126 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
                127 => (
                    u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize,
                    10,
                ),
                n => (n as usize, 2),
            };
            out.push(String::from_utf8_lossy(&b[at..at + len]).into_owned());
            b = &b[at + len..];
        }
        out
    }

    fn queue_of(msg: &str) -> Vec<u64> {
        let v: serde_json::Value = serde_json::from_str(msg).unwrap();
        v["workers"]
            .as_object()
            .map(|m| {
                m.values()
                    .filter_map(|w| w["queue_depth"].as_u64())
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn a_slow_client_gets_the_latest_state_not_every_change() {
        let registry = Registry::new(Arc::new(Shared::new(config::defaults())));
        let t0 = Instant::now();
        let mut ws = WsConn::new(subscription("/ws/telemetry", "").unwrap(), Vec::new(), t0);
        let mut sock = Script::new(vec![]);
        ws.pump(&mut sock, &registry, LIMITS, t0).unwrap();
        let pump_after = |ws: &mut WsConn, sock: &mut Script, q: u64, plain: bool| {
            ws.on_changes(&changes(&[snap("a", q)], plain));
            ws.pump(sock, &registry, LIMITS, t0).unwrap();
        };
        pump_after(&mut ws, &mut sock, 1, true);
        // The socket fills: the next update stays in flight.
        sock.then(vec![Step::Write(3), Step::Block]);
        pump_after(&mut ws, &mut sock, 2, true);
        assert!(ws.wants_write(), "in flight");
        sock.then(vec![Step::Block, Step::Block]);
        pump_after(&mut ws, &mut sock, 3, true);
        pump_after(&mut ws, &mut sock, 4, true);
        // Room again.
        ws.pump(&mut sock, &registry, LIMITS, t0).unwrap();
        assert!(!ws.wants_write());
        let got = messages(&sock.written);
        assert!(got[0].starts_with(r#"{"type":"snapshot""#), "{got:?}");
        let queues: Vec<Vec<u64>> = got[1..].iter().map(|m| queue_of(m)).collect();
        assert_eq!(queues, [vec![1], vec![2], vec![4]], "3 was superseded");
    }

    #[test]
    fn filtered_clients_see_only_their_workers() {
        let registry = Registry::new(Arc::new(Shared::new(config::defaults())));
        let t0 = Instant::now();
        let sub = subscription("/ws/telemetry/b", "").unwrap();
        let mut ws = WsConn::new(sub, Vec::new(), t0);
        let mut sock = Script::new(vec![]);
        ws.pump(&mut sock, &registry, LIMITS, t0).unwrap();
        ws.on_changes(&changes(&[snap("a", 1), snap("b", 2)], false));
        ws.pump(&mut sock, &registry, LIMITS, t0).unwrap();
        let got = messages(&sock.written);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(queue_of(&got[1]), [2]);
        assert!(got[1].contains(r#""b":"#) && !got[1].contains(r#""a":"#));
    }

    #[test]
    fn a_client_that_takes_nothing_is_closed_at_the_stall_timeout() {
        let registry = Registry::new(Arc::new(Shared::new(config::defaults())));
        let t0 = Instant::now();
        let mut ws = WsConn::new(subscription("/ws/telemetry", "").unwrap(), Vec::new(), t0);
        let mut sock = Script::new(vec![Step::Block, Step::Block, Step::Block]);
        ws.pump(&mut sock, &registry, LIMITS, t0).unwrap();
        assert!(ws.wants_write());
        let almost = t0 + LIMITS.stall_timeout - Duration::from_millis(1);
        assert_eq!(ws.on_tick(&mut sock, LIMITS, almost), Ok(()));
        assert_eq!(
            ws.on_tick(&mut sock, LIMITS, t0 + LIMITS.stall_timeout),
            Err(Ended::Stalled)
        );
    }
}
