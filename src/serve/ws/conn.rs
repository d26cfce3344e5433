//! One upgraded connection's stream state, generic over nothing it writes:
//! every byte it sends goes into the connection's one output queue, which
//! the connection alone writes to the socket.
//!
//! tungstenite's `WebSocketContext` reads the client's frames (masking,
//! control-frame rules, the close handshake, size limits) through a
//! [`Capture`] that hands the socket to its reads and keeps what it would
//! write (pongs, the close reply, our pings and close) for the queue, in
//! order and between whole messages. Data frames are framed here with
//! tungstenite's `FrameHeader`. So there is one writer per socket.
//!
//! What a client is sent is its [`Feed`]: the fleet (every worker, one
//! worker, or the summary) or a book of its own (tasks, alerts). Delivery
//! is state, not a log: a fleet client's pending map holds the latest
//! snapshot of each worker that changed since its last message, so a slow
//! client gets fewer, fresher messages and its backlog is bounded by the
//! number of workers. A message is composed only once the one before is
//! out of the queue (at most one in flight), and an update is cut at
//! `ws_max_queue_bytes`.
//!
//! It does not own its socket or decide when to run: the HTTP connection
//! calls [`WsConn::on_readable`], [`WsConn::on_changes`],
//! [`WsConn::next_message`] and [`WsConn::on_tick`].

use super::book::Book;
use super::fanout::Fanout;
use super::messages::{
    data_frame, push_entry, removed_message, summary_message, text_frame, workers_head,
    workers_message,
};
use super::pending::Pending;
use super::upgrade::{Filter, Stream, Subscription};
use crate::fleet::registry::Registry;
use crate::fleet::snapshot::Snapshot;
use crate::proto::WorkerId;
use crate::serve::head::Body;
use crate::serve::out::OutQueue;
use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig, WebSocketContext};
use tungstenite::{Error as WsError, Message};

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

/// The most a snapshot fragment holds (or one worker, if larger), and at
/// most `ws_max_queue_bytes`.
pub const FRAGMENT: usize = 64 * 1024;

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

/// The socket for tungstenite's reads, and a buffer for its writes: what
/// it would write (a pong, a close) is taken into the output queue.
struct Capture<'a, S> {
    stream: &'a mut S,
    written: &'a mut Vec<u8>,
}

impl<S: Read> Read for Capture<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.read(buf)
    }
}

impl<S> Write for Capture<'_, S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.written.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The output queue for tungstenite's own frames; no socket behind it.
struct NoRead;

impl Read for NoRead {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Err(io::ErrorKind::WouldBlock.into())
    }
}

/// What a client is sent.
pub enum Feed {
    /// `/ws/telemetry`, `/ws/telemetry/{id}`, `/ws/workers/telemetry`.
    Fleet(Box<FleetFeed>),
    /// `/ws/tasks`, `/ws/alerts`.
    Book(BookFeed),
}

pub struct FleetFeed {
    registry: Arc<Registry>,
    sub: Subscription,
    need_snapshot: bool,
    /// The latest snapshot of each worker changed since the last message
    /// (All and One streams), oldest change first.
    pending: Pending,
    removed: Vec<WorkerId>,
    /// Ids the client has been told about and that still match its filter.
    visible: HashSet<WorkerId>,
    next_summary: Instant,
    /// A shared frame ready to send: the whole fleet's snapshot, or an
    /// update framed once for every plain client.
    ready: Option<Arc<[u8]>>,
    /// A snapshot of its own (filtered, or narrowed by `?fields=`) going
    /// out as the fragments of one message.
    fragments: Option<Fragments>,
}

pub struct BookFeed {
    book: Arc<dyn Book>,
    /// Which book: `Tasks` or `Alerts`.
    topic: Stream,
    /// The version the client has seen; `None` until its snapshot.
    seen: Option<u64>,
}

/// A client's own snapshot, sent as the fragments of one WebSocket message
/// (RFC 6455 §5.4), each rendered when the queue has taken the one before:
/// what the client holds is one fragment and the list of workers still to
/// render, whatever the fleet's size. The workers are the ones of the
/// moment the snapshot began.
struct Fragments {
    rest: std::vec::IntoIter<Arc<Snapshot>>,
    fields: Option<Vec<String>>,
    begun: bool,
}

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
        Some(data_frame(first, last, text.as_bytes()))
    }
}

impl FleetFeed {
    pub fn new(registry: Arc<Registry>, sub: Subscription, now: Instant) -> FleetFeed {
        FleetFeed {
            registry,
            need_snapshot: sub.stream != Stream::Summary,
            sub,
            pending: Pending::default(),
            removed: Vec::new(),
            visible: HashSet::new(),
            next_summary: now,
            ready: None,
            fragments: None,
        }
    }

    /// Every worker, no filter: such clients share one snapshot frame and
    /// one rendered update.
    pub fn is_plain(&self) -> bool {
        self.sub.stream == Stream::All && self.sub.filter == Filter::default()
    }

    /// Send `frame`, the whole fleet's snapshot framed once for every
    /// plain client, as this client's snapshot.
    pub fn give_snapshot(&mut self, frame: Arc<[u8]>) {
        self.need_snapshot = false;
        self.pending.clear();
        self.ready = Some(frame);
    }

    /// Only a status or label filter can hide a worker the client saw, so
    /// only then is what it saw tracked (O(workers) per client).
    fn tracks_visibility(&self) -> bool {
        self.sub.filter.status.is_some() || self.sub.filter.label.is_some()
    }

    fn follows(&self, id: &WorkerId) -> bool {
        match &self.sub.stream {
            Stream::All => true,
            Stream::One(one) => one == id,
            Stream::Summary | Stream::Tasks | Stream::Alerts => false,
        }
    }

    fn on_changes(&mut self, f: &Fanout, in_flight: bool) {
        if let Some(shared) = &f.shared {
            let in_step = self.pending.is_empty()
                && self.ready.is_none()
                && self.fragments.is_none()
                && !self.need_snapshot
                && !in_flight;
            if self.is_plain() && in_step {
                self.ready = Some(shared.frame.clone());
                self.note_removed(&f.removed);
                return;
            }
        }
        for snap in &f.changed {
            if self.follows(&snap.id) {
                self.pending.insert(snap);
            }
        }
        self.note_removed(&f.removed);
    }

    fn note_removed(&mut self, removed: &[WorkerId]) {
        for id in removed {
            if !self.follows(id) {
                continue;
            }
            self.pending.remove(id);
            if !self.tracks_visibility() || self.visible.remove(id) {
                self.removed.push(id.clone());
            }
        }
    }

    fn next(&mut self, limits: WsLimits, now: Instant) -> Option<Body> {
        let fragment = limits.max_queue_bytes.clamp(1, FRAGMENT);
        if let Some(f) = self.fragments.as_mut() {
            match f.next(fragment) {
                Some(f) => return Some(Body::Owned(f)),
                None => self.fragments = None,
            }
        }
        if let Some(frame) = self.ready.take() {
            return Some(Body::Shared(frame));
        }
        if self.need_snapshot {
            self.begin_snapshot();
            return self.next(limits, now);
        }
        self.compose(limits, now)
            .map(|text| Body::Owned(text_frame(text.as_bytes())))
    }

    /// The client's own snapshot: filtered, narrowed, or of one worker.
    fn begin_snapshot(&mut self) {
        self.need_snapshot = false;
        let snaps: Vec<Arc<Snapshot>> = match &self.sub.stream {
            Stream::One(id) => self.registry.fleet_snapshot(id).into_iter().collect(),
            _ => self.registry.fleet(),
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
            fields: self.sub.filter.fields.clone(),
            begun: false,
        });
    }

    fn compose(&mut self, limits: WsLimits, now: Instant) -> Option<String> {
        if self.sub.stream == Stream::Summary {
            if now < self.next_summary {
                return None;
            }
            self.next_summary = now + limits.summary_interval;
            return Some(summary_message(
                &self.registry.fleet_unsorted(),
                &self.sub.filter,
            ));
        }
        // Updates: the latest state of each pending worker, cut at the
        // limit. Removals reach `pending` through the feed, in order.
        let mut snaps = Vec::new();
        let mut size = 0;
        while let Some((id, s)) = self.pending.pop() {
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
            let fields = self.sub.filter.fields.as_deref();
            return Some(workers_message("update", &snaps, fields));
        }
        if !self.removed.is_empty() {
            let ids = std::mem::take(&mut self.removed);
            return Some(removed_message(&ids));
        }
        None
    }
}

impl BookFeed {
    pub fn new(book: Arc<dyn Book>, topic: Stream) -> BookFeed {
        BookFeed {
            book,
            topic,
            seen: None,
        }
    }

    /// A snapshot first, then what changed.
    fn next(&mut self) -> Option<Body> {
        let (msg, v) = self.book.compose(self.seen)?;
        self.seen = Some(v);
        (!msg.is_empty()).then(|| Body::Owned(text_frame(msg.as_bytes())))
    }
}

pub struct WsConn {
    ctx: WebSocketContext,
    pub feed: Feed,
    next_ping: Instant,
    unanswered_pings: u8,
    /// Shutdown: the close frame (1001) is queued.
    said_away: bool,
    /// What tungstenite wrote during the last call, for the queue.
    written: Vec<u8>,
}

impl WsConn {
    /// A new upgraded connection; `early` holds bytes the client sent right
    /// after its handshake.
    pub fn new(feed: Feed, early: Vec<u8>, now: Instant) -> WsConn {
        WsConn {
            ctx: WebSocketContext::from_partially_read(early, Role::Server, Some(config())),
            feed,
            next_ping: now + PING_EVERY,
            unanswered_pings: 0,
            said_away: false,
            written: Vec::new(),
        }
    }

    /// Whether the client streams the change feed: a fleet client that
    /// follows workers (the summary is composed on a clock instead).
    pub fn wants_changes(&self) -> bool {
        match &self.feed {
            Feed::Fleet(f) => f.sub.stream != Stream::Summary,
            Feed::Book(_) => false,
        }
    }

    /// What the client follows: the stream its path named.
    pub fn topic(&self) -> Stream {
        match &self.feed {
            Feed::Fleet(f) => f.sub.stream.clone(),
            Feed::Book(b) => b.topic.clone(),
        }
    }

    /// Whether it can share the update rendered once for every client.
    pub fn is_plain(&self) -> bool {
        matches!(&self.feed, Feed::Fleet(f) if f.is_plain())
    }

    /// Workers changed or were removed: note the ones this client follows,
    /// or take the shared update when this client is plain and in step.
    /// `in_flight`: its last message is still in the queue.
    pub fn on_changes(&mut self, f: &Fanout, in_flight: bool) {
        if let Feed::Fleet(feed) = &mut self.feed {
            feed.on_changes(f, in_flight);
        }
    }

    /// The next message, framed, when one is due: called only once the
    /// queue has taken the one before.
    pub fn next_message(&mut self, limits: WsLimits, now: Instant) -> Option<Body> {
        match &mut self.feed {
            Feed::Fleet(f) => f.next(limits, now),
            Feed::Book(b) => b.next(),
        }
    }

    /// Move what tungstenite wrote into the queue.
    fn queue_written(&mut self, out: &mut OutQueue) {
        if !self.written.is_empty() {
            out.push_bytes(&self.written);
            self.written.clear();
        }
    }

    /// Read client frames: note pongs, ignore data; tungstenite's pongs
    /// and its close reply go into `out`.
    pub fn on_readable<S: Read>(
        &mut self,
        stream: &mut S,
        out: &mut OutQueue,
    ) -> Result<(), Ended> {
        let r = loop {
            let mut cap = Capture {
                stream: &mut *stream,
                written: &mut self.written,
            };
            match self.ctx.read(&mut cap) {
                Ok(Message::Pong(_)) => self.unanswered_pings = 0,
                Ok(_) => {}
                Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => break Ok(()),
                Err(WsError::Io(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => {
                    break Err(Ended::Closed);
                }
                Err(WsError::Capacity(_)) => {
                    self.close(CloseCode::Size, "message too big");
                    break Err(Ended::TooBig);
                }
                Err(_) => break Err(Ended::Error),
            }
        };
        self.queue_written(out);
        r
    }

    /// Queue a close frame (tungstenite keeps the handshake's state).
    fn close(&mut self, code: CloseCode, reason: &str) {
        let frame = CloseFrame {
            code,
            reason: reason.to_string().into(),
        };
        let mut cap = Capture {
            stream: &mut NoRead,
            written: &mut self.written,
        };
        let _ = self.ctx.close(&mut cap, Some(frame));
    }

    /// Shutdown: queue a close frame with 1001 (going away) after what is
    /// queued already.
    pub fn going_away(&mut self, out: &mut OutQueue) {
        if !std::mem::replace(&mut self.said_away, true) {
            self.close(CloseCode::Away, "musterd is shutting down");
            self.queue_written(out);
        }
    }

    /// Pings, and the stall check; on every tick of the loop. `stalled`:
    /// since when the queue has held bytes the socket did not take.
    pub fn on_tick(
        &mut self,
        out: &mut OutQueue,
        stalled: Option<Instant>,
        limits: WsLimits,
        now: Instant,
    ) -> Result<(), Ended> {
        if stalled.is_some_and(|t| now.saturating_duration_since(t) >= limits.stall_timeout) {
            self.close(CloseCode::Policy, "client stalled");
            self.queue_written(out);
            return Err(Ended::Stalled);
        }
        if now >= self.next_ping {
            if self.unanswered_pings >= 2 {
                self.close(CloseCode::Policy, "pings unanswered");
                self.queue_written(out);
                return Err(Ended::PingTimeout);
            }
            self.unanswered_pings += 1;
            self.next_ping = now + PING_EVERY;
            let mut cap = Capture {
                stream: &mut NoRead,
                written: &mut self.written,
            };
            if self
                .ctx
                .write(&mut cap, Message::Ping(Vec::new().into()))
                .is_err()
                || self.ctx.flush(&mut cap).is_err()
            {
                return Err(Ended::Error);
            }
            self.queue_written(out);
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

    /// The text of each server frame (unmasked, RFC 6455 §5.2).
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

    fn fleet(path: &str) -> WsConn {
        let registry = Arc::new(Registry::new(Arc::new(Shared::new(config::defaults()))));
        let feed = FleetFeed::new(registry, subscription(path, "").unwrap(), Instant::now());
        WsConn::new(Feed::Fleet(Box::new(feed)), Vec::new(), Instant::now())
    }

    /// Write what the queue holds to `sock` until it blocks; then, when the
    /// queue is empty, the next message, as the connection does.
    fn pump(ws: &mut WsConn, out: &mut OutQueue, sock: &mut Script) {
        loop {
            match out.write_to(sock) {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => panic!("{e}"),
            }
            match ws.next_message(LIMITS, Instant::now()) {
                Some(Body::Owned(b)) => out.push_bytes(&b),
                Some(Body::Shared(b)) => out.push_shared(&b),
                None => return,
            }
        }
    }

    #[test]
    fn a_slow_client_gets_the_latest_state_not_every_change() {
        let mut ws = fleet("/ws/telemetry");
        let (mut out, mut sock) = (OutQueue::default(), Script::new(vec![]));
        pump(&mut ws, &mut out, &mut sock);
        let change = |ws: &mut WsConn, out: &mut OutQueue, sock: &mut Script, q: u64| {
            ws.on_changes(&changes(&[snap("a", q)], true), !out.is_empty());
            pump(ws, out, sock);
        };
        change(&mut ws, &mut out, &mut sock, 1);
        // The socket fills: the next update stays in the queue.
        sock.then(vec![Step::Write(3), Step::Block]);
        change(&mut ws, &mut out, &mut sock, 2);
        assert!(!out.is_empty(), "in flight");
        sock.then(vec![Step::Block, Step::Block]);
        change(&mut ws, &mut out, &mut sock, 3);
        change(&mut ws, &mut out, &mut sock, 4);
        // Room again.
        pump(&mut ws, &mut out, &mut sock);
        assert!(out.is_empty());
        let got = messages(&sock.written);
        assert!(got[0].starts_with(r#"{"type":"snapshot""#), "{got:?}");
        let queues: Vec<Vec<u64>> = got[1..].iter().map(|m| queue_of(m)).collect();
        assert_eq!(queues, [vec![1], vec![2], vec![4]], "3 was superseded");
    }

    #[test]
    fn filtered_clients_see_only_their_workers() {
        let mut ws = fleet("/ws/telemetry/b");
        let (mut out, mut sock) = (OutQueue::default(), Script::new(vec![]));
        pump(&mut ws, &mut out, &mut sock);
        ws.on_changes(&changes(&[snap("a", 1), snap("b", 2)], false), false);
        pump(&mut ws, &mut out, &mut sock);
        let got = messages(&sock.written);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(queue_of(&got[1]), [2]);
        assert!(got[1].contains(r#""b":"#) && !got[1].contains(r#""a":"#));
    }

    #[test]
    fn a_client_that_takes_nothing_is_closed_at_the_stall_timeout() {
        let mut ws = fleet("/ws/telemetry");
        let mut out = OutQueue::default();
        let t0 = Instant::now();
        let almost = t0 + LIMITS.stall_timeout - Duration::from_millis(1);
        assert_eq!(ws.on_tick(&mut out, Some(t0), LIMITS, almost), Ok(()));
        assert_eq!(
            ws.on_tick(&mut out, Some(t0), LIMITS, t0 + LIMITS.stall_timeout),
            Err(Ended::Stalled)
        );
        let mut sock = Script::new(vec![]);
        assert!(out.write_to(&mut sock).unwrap());
        assert_eq!(sock.written[0], 0x88, "a close frame went into the queue");
    }

    #[test]
    fn a_ping_read_mid_message_is_answered_after_the_message() {
        let mut ws = fleet("/ws/telemetry");
        let mut out = OutQueue::default();
        // The snapshot is queued; the socket takes part of it, then the
        // client pings (a masked ping frame, RFC 6455 §5.5.2).
        let snapshot = ws.next_message(LIMITS, Instant::now()).unwrap();
        out.push_bytes(&snapshot);
        let mut sock = Script::new(vec![Step::Write(5), Step::Block]);
        assert!(!out.write_to(&mut sock).unwrap());
        let ping = vec![0x89, 0x80, 1, 2, 3, 4];
        let mut reader = Script::new(vec![Step::Read(ping)]);
        assert_eq!(ws.on_readable(&mut reader, &mut out), Ok(()));
        assert!(out.write_to(&mut sock).unwrap());
        let got = &sock.written;
        assert_eq!(
            &got[..],
            &[&snapshot[..], &[0x8a, 0]].concat()[..],
            "the pong after the whole snapshot"
        );
    }
}
