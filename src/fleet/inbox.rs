//! A worker's inbox: the queue between the ingest loop (and the sweeper)
//! and the worker's thread, and the messages it carries.
//!
//! Two kinds of message share it under two bounds. **State** (a heartbeat,
//! a hello, a sweep) is what only its latest value matters for: at most
//! [`INBOX_CAPACITY`] wait, and a heartbeat that arrives over UDP while
//! they are full is merged into the newest queued heartbeat (the fields it
//! carries overwrite), so nothing a later read could show is lost. **Events**
//! (a `run`) are each counted by run metrics: at most `max_pending_events`
//! wait, and only past that is one dropped. Over TCP nothing is merged or
//! dropped: a full inbox stops the connection's reads (back-pressure).
//!
//! A mutex and a condition variable over a `VecDeque`, rather than a
//! channel: a merge needs to reach the queued heartbeat, and a batch of
//! datagrams for one worker goes in under one lock with at most one wake.
//! It holds memory only for what waits in it, and gives back a burst's
//! room once drained.
//!
//! **Quiet beats.** A heartbeat that repeats the one before it (the same
//! [`Heartbeat::fingerprint`](crate::proto::Heartbeat::fingerprint), the
//! next `seq`) changes nothing a reader sees but when the worker was
//! heard. While the thread lingers after a batch ([`InboxRx::linger`]),
//! such a beat is queued without waking it: it is applied, in order with
//! the rest, when anything else comes or when the linger ends, at most
//! [`QUIET_LAG`] later. When it was heard is kept at once ([`Inbox::heard`])
//! for the sweeper and for the views that say how long a worker has been
//! silent.

use super::snapshot::Transport;
use crate::proto::Frame;
use std::collections::VecDeque;
use std::sync::mpsc::TrySendError;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

/// State messages a worker's inbox holds before UDP merges or drops and TCP
/// stops reading.
pub const INBOX_CAPACITY: usize = 128;
/// The default bound on waiting events (`max_pending_events`).
pub const DEFAULT_MAX_EVENTS: usize = 4096;
/// Room kept after a burst drains; more is given back.
const KEEP: usize = 32;
/// Longest a quiet beat waits in the inbox before its thread applies it.
pub const QUIET_LAG: std::time::Duration = std::time::Duration::from_secs(5);

/// What a worker thread receives.
pub enum Msg {
    /// A decoded frame with its transport, arrival time, and the number of
    /// heartbeats it stands for (more than 1 once others merged into it).
    Frame(Box<Frame>, Transport, Instant, u32),
    /// A `run`: an event, kept small while it waits.
    Run(RunEvent, Transport, Instant),
    /// Frames naming this worker were refused: the worker takes the count
    /// from its handle. At most one waits, however many were refused.
    Refused,
    /// The sweeper thinks the worker has been silent past the timeout.
    Sweep { timeout_ms: u64 },
    /// End the thread.
    Stop,
}

/// What a `run` frame tells the worker's state.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RunEvent {
    pub duration_ms: f64,
    pub ok: bool,
}

impl Msg {
    /// A frame as it waits: a `run` as a [`RunEvent`], anything else boxed.
    pub fn frame(frame: Frame, transport: Transport, at: Instant) -> Msg {
        match frame {
            Frame::Run(r) => Msg::Run(
                RunEvent {
                    duration_ms: r.duration_ms,
                    ok: r.ok,
                },
                transport,
                at,
            ),
            f => Msg::Frame(Box::new(f), transport, at, 1),
        }
    }

    fn is_event(&self) -> bool {
        matches!(self, Msg::Run(..))
    }
}

#[derive(Default)]
struct Pending {
    msgs: VecDeque<Msg>,
    states: usize,
    events: usize,
    /// The worker thread waits on the condition variable.
    waiting: bool,
    /// The sending half is gone: the thread ends once it has drained.
    closed: bool,
    /// The thread is gone: sends fail.
    gone: bool,
    /// How many waiting messages wake the thread: 1 when it sleeps for
    /// the next one, more while it lets a chatty worker's frames gather.
    wake_at: usize,
    /// The thread lingers: quiet beats do not wake it.
    lingering: bool,
    /// Waiting messages that are not quiet beats.
    loud: usize,
    /// The fingerprint and `seq` of the last heartbeat queued, to know
    /// the next one for quiet; `None` after anything else that changes
    /// the state (a hello, a bye, a task's frame).
    last_beat: Option<(u64, Option<u64>)>,
    /// When the newest heartbeat queued arrived.
    heard: Option<Instant>,
}

impl Pending {
    fn fits(&self, msg: &Msg, max_events: usize) -> bool {
        if msg.is_event() {
            self.events < max_events
        } else {
            self.states < INBOX_CAPACITY
        }
    }

    fn push(&mut self, msg: Msg, quiet: bool) {
        if msg.is_event() {
            self.events += 1;
        } else {
            self.states += 1;
        }
        if !quiet {
            self.loud += 1;
        }
        self.msgs.push_back(msg);
    }

    /// Whether `msg` is a quiet beat: a heartbeat with the fingerprint of
    /// the last one queued and the `seq` after its (or, like it, none).
    /// Notes a heartbeat as the last one, and when it was heard.
    fn quiet(&mut self, msg: &Msg) -> bool {
        let Msg::Frame(frame, _, at, _) = msg else {
            return false;
        };
        let Frame::Heartbeat(beat) = &**frame else {
            self.last_beat = None;
            return false;
        };
        self.heard = Some(self.heard.map_or(*at, |h| h.max(*at)));
        let fp = beat.fingerprint();
        let quiet = match (fp, self.last_beat) {
            (Some(fp), Some((last, seq))) => {
                fp == last
                    && match (seq, beat.seq) {
                        (None, None) => true,
                        (Some(a), Some(b)) => a.checked_add(1) == Some(b),
                        _ => false,
                    }
            }
            _ => false,
        };
        self.last_beat = fp.map(|fp| (fp, beat.seq));
        quiet
    }

    /// What wakes a lingering thread: anything but a quiet beat, or half
    /// an inbox of them.
    fn wakes_lingering(&self) -> bool {
        self.loud > 0 || self.states >= INBOX_CAPACITY / 2
    }

    /// Merge a UDP heartbeat into the newest queued state message when
    /// that is a heartbeat. Events between them may stay where they are:
    /// their order against a heartbeat changes nothing a read can show.
    fn merge(&mut self, msg: Msg) -> Result<(), Msg> {
        let udp_beat = |m: &Msg| matches!(m, Msg::Frame(f, Transport::Udp, ..) if matches!(**f, Frame::Heartbeat(_)));
        let newest = self.msgs.iter_mut().rev().find(|m| !m.is_event());
        let Some(newest) = newest.filter(|n| udp_beat(n) && udp_beat(&msg)) else {
            return Err(msg);
        };
        if let (Msg::Frame(old, _, old_at, count), Msg::Frame(new, _, at, n)) = (newest, msg) {
            if let (Frame::Heartbeat(old), Frame::Heartbeat(new)) = (&mut **old, *new) {
                old.merge(new);
                *old_at = at;
                *count = count.saturating_add(n);
            }
        }
        Ok(())
    }
}

struct Queue {
    pending: Mutex<Pending>,
    ready: Condvar,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The sending half: the ingest loop, the sweeper, the handle.
pub struct Inbox {
    q: Arc<Queue>,
}

/// The worker thread's half.
pub struct InboxRx {
    q: Arc<Queue>,
}

pub fn inbox() -> (Inbox, InboxRx) {
    let q = Arc::new(Queue {
        pending: Mutex::new(Pending::default()),
        ready: Condvar::new(),
    });
    (Inbox { q: q.clone() }, InboxRx { q })
}

/// What became of a batch offered over UDP.
#[derive(Default)]
pub struct Offered {
    pub queued: u64,
    /// Heartbeats merged into a queued one.
    pub merged: u64,
    /// State that could be neither queued nor merged.
    pub dropped_state: u64,
    /// Events past `max_pending_events`.
    pub dropped_events: u64,
    /// The thread had ended: these messages are handed back.
    pub returned: Vec<Msg>,
}

impl Inbox {
    /// Queue `msg` within the default bounds, or hand it back.
    pub fn try_send(&self, msg: Msg) -> Result<(), TrySendError<Msg>> {
        self.send(msg, DEFAULT_MAX_EVENTS)
    }

    /// Queue `msg` unless its kind's bound is reached or the thread has
    /// ended. Nothing is merged: TCP waits for room instead.
    pub fn send(&self, msg: Msg, max_events: usize) -> Result<(), TrySendError<Msg>> {
        let mut p = self.q.lock();
        if p.gone {
            return Err(TrySendError::Disconnected(msg));
        }
        if !p.fits(&msg, max_events) {
            return Err(TrySendError::Full(msg));
        }
        let urgent = matches!(msg, Msg::Stop);
        let quiet = p.quiet(&msg);
        p.push(msg, quiet);
        self.wake(p, urgent);
        Ok(())
    }

    /// Queue what fits of a UDP batch, under one lock and with at most one
    /// wake: a heartbeat over the bound merges into the newest queued one,
    /// an event over `max_events` is dropped.
    pub fn offer(&self, msgs: impl IntoIterator<Item = Msg>, max_events: usize) -> Offered {
        let mut out = Offered::default();
        let mut p = self.q.lock();
        for msg in msgs {
            if p.gone {
                out.returned.push(msg);
                continue;
            }
            let quiet = p.quiet(&msg);
            if p.fits(&msg, max_events) {
                p.push(msg, quiet);
                out.queued += 1;
                continue;
            }
            if msg.is_event() {
                out.dropped_events += 1;
                continue;
            }
            match p.merge(msg) {
                Ok(()) => {
                    out.merged += 1;
                    p.loud += usize::from(!quiet);
                }
                Err(_) => out.dropped_state += 1,
            }
        }
        if out.queued + out.merged > 0 {
            self.wake(p, false);
        }
        out
    }

    /// Say that frames naming the worker were refused. Outside the bounds:
    /// the caller sends it only when no other waits.
    pub fn nudge(&self) {
        let mut p = self.q.lock();
        if !p.gone {
            p.msgs.push_back(Msg::Refused);
            p.loud += 1;
            self.wake(p, false);
        }
    }

    /// Wake the thread if it waits and enough has gathered (while it
    /// lingers: anything but quiet beats), or `urgent` (a stop, or the
    /// senders gone).
    fn wake(&self, p: MutexGuard<'_, Pending>, urgent: bool) {
        let due = if p.lingering {
            p.wakes_lingering()
        } else {
            p.msgs.len() >= p.wake_at
        };
        let waiting = p.waiting && (urgent || due);
        drop(p);
        if waiting {
            self.q.ready.notify_one();
        }
    }

    /// Messages waiting, of both kinds.
    pub fn len(&self) -> usize {
        self.q.lock().msgs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// When the newest heartbeat queued arrived: a quiet beat is heard
    /// before its thread applies it.
    pub fn heard(&self) -> Option<Instant> {
        self.q.lock().heard
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        let mut p = self.q.lock();
        p.closed = true;
        self.wake(p, true);
    }
}

impl InboxRx {
    /// Move every waiting message into `out`. With `wait`, sleep until one
    /// comes; `false` once the sender is gone and nothing is left.
    pub(super) fn take(&self, out: &mut VecDeque<Msg>, wait: bool) -> bool {
        let mut p = self.q.lock();
        while wait && p.msgs.is_empty() && !p.closed {
            p.waiting = true;
            p.wake_at = 1;
            p = self.q.ready.wait(p).unwrap_or_else(|e| e.into_inner());
            p.waiting = false;
        }
        self.take_locked(p, out)
    }

    /// Sleep until a message comes that is not a quiet beat, or until
    /// `until`, then take what waits as [`Self::take`] does (nothing, if
    /// nothing came). Quiet beats queued meanwhile do not wake the thread.
    pub(super) fn linger(&self, out: &mut VecDeque<Msg>, until: Instant) -> bool {
        let mut p = self.q.lock();
        loop {
            let now = Instant::now();
            if p.closed || p.wakes_lingering() || now >= until {
                break;
            }
            p.waiting = true;
            p.lingering = true;
            p = match self.q.ready.wait_timeout(p, until - now) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
            p.waiting = false;
            p.lingering = false;
        }
        self.take_locked(p, out)
    }

    /// Let messages gather until `until`, or until `enough` wait (a burst:
    /// a TCP peer then stops being read, so it must not wait out the
    /// pause), then take them as [`Self::take`] does. Senders do not wake
    /// the thread for each message meanwhile.
    pub(super) fn gather(&self, out: &mut VecDeque<Msg>, until: Instant, enough: usize) -> bool {
        let mut p = self.q.lock();
        loop {
            let now = Instant::now();
            if p.closed || p.msgs.len() >= enough || now >= until {
                break;
            }
            p.waiting = true;
            p.wake_at = enough;
            p = match self.q.ready.wait_timeout(p, until - now) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
            p.waiting = false;
        }
        self.take_locked(p, out)
    }

    fn take_locked(&self, mut p: MutexGuard<'_, Pending>, out: &mut VecDeque<Msg>) -> bool {
        if p.msgs.is_empty() {
            return !p.closed;
        }
        if out.is_empty() {
            std::mem::swap(out, &mut p.msgs);
        } else {
            out.append(&mut p.msgs);
        }
        (p.states, p.events, p.loud) = (0, 0, 0);
        if p.msgs.capacity() > KEEP {
            p.msgs.shrink_to(KEEP);
        }
        true
    }
}

impl Drop for InboxRx {
    fn drop(&mut self) {
        let mut p = self.q.lock();
        p.gone = true;
        p.msgs.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::decode;

    fn udp(json: &str) -> Msg {
        Msg::frame(
            decode(json.as_bytes(), 65536).unwrap(),
            Transport::Udp,
            Instant::now(),
        )
    }

    fn drain(rx: &InboxRx) -> Vec<Msg> {
        let mut out = VecDeque::new();
        rx.take(&mut out, false);
        out.into()
    }

    #[test]
    fn state_is_bounded_and_tcp_gets_it_back() {
        let (tx, rx) = inbox();
        for _ in 0..INBOX_CAPACITY {
            assert!(tx.try_send(Msg::Sweep { timeout_ms: 1 }).is_ok());
        }
        assert!(matches!(
            tx.try_send(Msg::Sweep { timeout_ms: 1 }),
            Err(TrySendError::Full(_))
        ));
        assert_eq!(drain(&rx).len(), INBOX_CAPACITY);
        assert!(tx.try_send(Msg::Stop).is_ok(), "room again after a take");
        drop(rx);
        assert!(matches!(
            tx.try_send(Msg::Stop),
            Err(TrySendError::Disconnected(_))
        ));
    }

    #[test]
    fn a_full_inbox_merges_udp_heartbeats_into_the_newest() {
        let (tx, rx) = inbox();
        let beats = (0..INBOX_CAPACITY + 50).map(|i| {
            udp(&format!(
                r#"{{"type":"heartbeat","worker_id":"w","seq":{i},"queue_depth":{i}{}}}"#,
                if i == 3 { r#","cpu_usage":9"# } else { "" }
            ))
        });
        let o = tx.offer(beats, DEFAULT_MAX_EVENTS);
        assert_eq!((o.queued, o.merged, o.dropped_state), (128, 50, 0));
        let msgs = drain(&rx);
        let Msg::Frame(last, _, _, n) = &msgs[INBOX_CAPACITY - 1] else {
            panic!("a frame")
        };
        assert_eq!(*n, 51, "the newest stands for itself and 50 merged");
        let Frame::Heartbeat(h) = &**last else {
            panic!("a heartbeat")
        };
        assert_eq!(h.seq, Some(177));
        assert_eq!(h.queue_depth, Some(177));
        assert_eq!(h.cpu_usage, None, "only what the merged frames carried");
    }

    #[test]
    fn events_have_their_own_bound() {
        let (tx, rx) = inbox();
        let run = || udp(r#"{"type":"run","worker_id":"w","duration_ms":5,"ok":true}"#);
        for _ in 0..INBOX_CAPACITY {
            tx.try_send(Msg::Sweep { timeout_ms: 1 }).unwrap();
        }
        let o = tx.offer((0..300).map(|_| run()), 256);
        assert_eq!((o.queued, o.dropped_events), (256, 44));
        assert_eq!(drain(&rx).len(), INBOX_CAPACITY + 256);
        // A heartbeat with no heartbeat queued to merge into is dropped.
        for _ in 0..INBOX_CAPACITY {
            tx.try_send(Msg::Sweep { timeout_ms: 1 }).unwrap();
        }
        let o = tx.offer([udp(r#"{"type":"heartbeat","worker_id":"w"}"#)], 256);
        assert_eq!(o.dropped_state, 1);
    }

    #[test]
    fn gathering_ends_once_enough_wait_or_the_senders_go() {
        let (tx, rx) = inbox();
        let sender = std::thread::spawn(move || {
            for _ in 0..INBOX_CAPACITY {
                while tx.try_send(Msg::Sweep { timeout_ms: 1 }).is_err() {
                    std::thread::yield_now();
                }
            }
            tx
        });
        // An hour away: only enough messages end it.
        let mut out = VecDeque::new();
        let hour = Instant::now() + std::time::Duration::from_secs(3600);
        assert!(rx.gather(&mut out, hour, INBOX_CAPACITY / 2));
        assert!(out.len() >= INBOX_CAPACITY / 2, "{}", out.len());
        let tx = sender.join().unwrap();
        drop(tx);
        out.clear();
        // The senders gone: it takes what is left at once, then says so.
        let mut left = 0;
        while rx.gather(&mut out, hour, INBOX_CAPACITY) {
            left += out.len();
            out.clear();
        }
        assert!(left <= INBOX_CAPACITY / 2);
    }

    #[test]
    fn a_dropped_sender_ends_the_receiver_after_the_rest() {
        let (tx, rx) = inbox();
        tx.try_send(Msg::Stop).unwrap();
        drop(tx);
        let mut out = VecDeque::new();
        assert!(rx.take(&mut out, true));
        assert_eq!(out.len(), 1);
        out.clear();
        assert!(!rx.take(&mut out, true));
    }

    fn beat(seq: u64, cpu: f64) -> Msg {
        udp(&format!(
            r#"{{"type":"heartbeat","worker_id":"w","seq":{seq},"cpu_usage":{cpu},"resource_usage":{{"rss_mb":12.5}},"labels":{{"a":"b"}}}}"#
        ))
    }

    fn seqs(msgs: &[Msg]) -> Vec<u64> {
        msgs.iter()
            .map(|m| match m {
                Msg::Frame(f, ..) => match &**f {
                    Frame::Heartbeat(h) => h.seq.unwrap_or(0),
                    _ => u64::MAX,
                },
                _ => u64::MAX - 1,
            })
            .collect()
    }

    /// A beat is quiet when it repeats the last one queued with the next
    /// `seq`: a gap, a new figure, or a hello between makes it loud.
    #[test]
    fn a_beat_is_quiet_when_it_repeats_the_last_with_the_next_seq() {
        let mut p = Pending::default();
        assert!(!p.quiet(&beat(1, 5.0)), "the first beat is news");
        assert!(p.quiet(&beat(2, 5.0)));
        assert!(p.quiet(&beat(3, 5.0)));
        assert!(!p.quiet(&beat(5, 5.0)), "a gap in seq is counted");
        assert!(p.quiet(&beat(6, 5.0)));
        assert!(!p.quiet(&beat(7, 6.0)), "a new figure");
        assert!(p.quiet(&beat(8, 6.0)));
        assert!(!p.quiet(&beat(1, 6.0)), "the seq counted afresh");
        assert!(!p.quiet(&Msg::Sweep { timeout_ms: 1 }));
        assert!(p.quiet(&beat(2, 6.0)), "a sweep changes no beat");
        assert!(!p.quiet(&udp(r#"{"type":"hello","worker_id":"w"}"#)));
        assert!(!p.quiet(&beat(3, 6.0)), "after a hello a beat is news");
        let plain = r#"{"type":"heartbeat","worker_id":"w"}"#;
        assert!(!p.quiet(&udp(plain)));
        assert!(p.quiet(&udp(plain)), "no seq on either");
        assert!(p.heard.is_some());
    }

    /// A lingering thread is not woken by quiet beats; the next message
    /// that is not one wakes it, and it takes everything in order.
    #[test]
    fn quiet_beats_wait_for_the_next_loud_message() {
        let (tx, rx) = inbox();
        tx.try_send(beat(1, 5.0)).ok().unwrap();
        assert_eq!(seqs(&drain(&rx)), vec![1]);
        let lingering = std::thread::spawn(move || {
            let mut out = VecDeque::new();
            let until = Instant::now() + std::time::Duration::from_secs(60);
            assert!(rx.linger(&mut out, until));
            (Vec::from(out), rx)
        });
        let before = Instant::now();
        for seq in 2..=4 {
            tx.try_send(beat(seq, 5.0)).ok().unwrap();
        }
        assert!(tx.heard().is_some_and(|h| h >= before), "heard at once");
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert!(!lingering.is_finished(), "quiet beats do not wake it");
        assert_eq!(tx.len(), 3);
        tx.try_send(beat(5, 7.5)).ok().unwrap();
        let (got, rx) = lingering.join().unwrap();
        assert_eq!(seqs(&got), vec![2, 3, 4, 5]);
        // Half an inbox of quiet beats wakes it too: TCP stops reading
        // at a full one.
        let lingering = std::thread::spawn(move || {
            let mut out = VecDeque::new();
            let until = Instant::now() + std::time::Duration::from_secs(60);
            assert!(rx.linger(&mut out, until));
            out.len()
        });
        for seq in 6..6 + INBOX_CAPACITY as u64 / 2 {
            tx.try_send(beat(seq, 7.5)).ok().unwrap();
        }
        assert_eq!(lingering.join().unwrap(), INBOX_CAPACITY / 2);
    }

    /// A linger that ends with nothing waiting takes nothing; one that
    /// ends with quiet beats takes them.
    #[test]
    fn a_linger_ends_on_its_deadline() {
        let (tx, rx) = inbox();
        let mut out = VecDeque::new();
        let soon = || Instant::now() + std::time::Duration::from_millis(20);
        assert!(rx.linger(&mut out, soon()));
        assert!(out.is_empty());
        tx.try_send(beat(1, 1.0)).ok().unwrap();
        tx.try_send(beat(2, 1.0)).ok().unwrap();
        assert!(rx.linger(&mut out, soon()));
        assert_eq!(out.len(), 2);
    }
}
