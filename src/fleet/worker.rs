//! One worker's thread, and the handle through which everyone else sees it.
//!
//! Only the worker's own thread mutates its state. It applies the messages
//! in its inbox in arrival order, and after each batch publishes an
//! immutable [`Snapshot`] behind an `Arc`, together with the runs and
//! history samples of the batch, under one lock; readers (HTTP, the
//! sweeper) take what they need under that lock, held for nanoseconds, and
//! never block the worker.
//!
//! This module does not decide which workers exist (the registry does), when
//! one is silent (the sweeper asks, the worker decides against its own
//! clock), what a frame does to the state (`snapshot` does), or how the
//! state is shown (`telemetry` and the HTTP views do).

use super::Shared;
use super::history::{History, Sample};
use super::inbox::{INBOX_CAPACITY, Inbox, InboxRx, Msg, QUIET_LAG};
use super::runs::{self, RunWindow};
use super::snapshot::Snapshot;
use crate::proto::Frame;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Least time between two wakes of a busy worker thread. Frames that arrive
/// sooner wait in the inbox and are applied together, so a worker beating
/// faster than ten times a second costs ten wakes a second, not one per
/// frame. The inbox holds [`INBOX_CAPACITY`] frames: 1,280 a second.
pub const COALESCE: Duration = Duration::from_millis(100);
/// How late a worker thread's COALESCE pause may end, so that the kernel
/// can wake many workers on one timer interrupt.
pub const TIMER_SLACK: Duration = Duration::from_millis(5);
/// Stack of a worker thread. Its work is shallow (apply a frame, clone a
/// snapshot); the kernel only backs the pages it touches.
pub const STACK_BYTES: usize = 64 * 1024;

/// A worker's run window and history, kept beside its snapshot rather than
/// in it, so that publishing a snapshot never copies them.
#[derive(Debug, Default)]
pub struct Series {
    pub runs: RunWindow,
    pub history: History,
}

/// What readers see of a worker: its latest snapshot and its series, under
/// one lock, so that a reader takes both at once and they agree.
pub struct Published {
    pub snapshot: Arc<Snapshot>,
    pub series: Series,
}

/// The shared half of a worker: its inbox and what it published.
pub struct Handle {
    pub inbox: Inbox,
    published: Mutex<Published>,
    stopped: AtomicBool,
    /// Refused frames naming the worker, not yet taken by its thread.
    refused: AtomicU64,
}

impl Handle {
    pub fn new(inbox: Inbox, first: Snapshot) -> Handle {
        Handle::with(inbox, first, Series::default())
    }

    /// A handle that starts from a known state (restored at start).
    pub fn with(inbox: Inbox, first: Snapshot, series: Series) -> Handle {
        Handle {
            inbox,
            published: Mutex::new(Published {
                snapshot: Arc::new(first),
                series,
            }),
            stopped: AtomicBool::new(false),
            refused: AtomicU64::new(0),
        }
    }

    /// Count a refused frame against the worker without queueing it: a
    /// flood of refused frames naming a worker takes none of the room its
    /// real frames need. The first of a run of them wakes the thread.
    pub fn refuse(&self) {
        if self.refused.fetch_add(1, Ordering::AcqRel) == 0 {
            self.inbox.nudge();
        }
    }

    /// The snapshot and series together. Held for as long as a reader
    /// copies or sums what it needs; never across I/O.
    pub fn read(&self) -> MutexGuard<'_, Published> {
        self.published.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.read().snapshot.clone()
    }

    /// Swap in a new snapshot and add what the batch recorded, in one lock.
    fn publish(&self, snap: Arc<Snapshot>, batch: &mut Batch, history_cap: usize) {
        let mut p = self.read();
        p.snapshot = snap;
        for run in batch.runs.drain(..) {
            p.series.runs.record(run);
        }
        for sample in batch.samples.drain(..) {
            p.series.history.push(sample, history_cap);
        }
    }

    /// A task this worker ran finished: one of its runs, recorded by its
    /// thread like a `run` frame (a task's report came over its session).
    pub fn record_run(&self, duration_ms: f64, ok: bool) {
        let run = super::inbox::RunEvent { duration_ms, ok };
        let msg = Msg::Run(run, super::snapshot::Transport::Tcp, Instant::now());
        let _ = self.inbox.try_send(msg);
    }

    /// Ask the thread to end after applying what its inbox holds: the stop
    /// goes in behind the queued frames. When the inbox stays full until
    /// `deadline`, the thread is stopped outright.
    pub fn finish(&self, deadline: Instant) {
        let mut msg = Msg::Stop;
        loop {
            match self.inbox.try_send(msg) {
                Ok(()) => return,
                Err(std::sync::mpsc::TrySendError::Full(m)) if Instant::now() < deadline => {
                    msg = m;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(_) => return self.stop(),
            }
        }
    }

    /// Ask the thread to end. The flag is seen even when the inbox is full.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        let _ = self.inbox.try_send(Msg::Stop);
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }
}

/// Runs and history samples a batch of frames produced, added to the
/// series when the batch is published.
#[derive(Default)]
struct Batch {
    runs: Vec<runs::Run>,
    samples: Vec<Sample>,
}

/// Called by a worker thread around each publish, so that subscribers can
/// be handed what changed.
pub trait OnChange: Send + Sync {
    /// Called just before a publish, so that anyone who sees the new
    /// snapshot also sees that the fleet moved on.
    fn will_change(&self) {}
    /// `handle` published `snap` (its `is_stopped` says whether it was
    /// removed meanwhile).
    fn changed(&self, snap: &Arc<Snapshot>, handle: &Handle);
}

/// The body of a worker thread: apply messages in order until stopped.
/// Publishes once per batch: everything already queued is applied first.
pub fn run(handle: Arc<Handle>, inbox: InboxRx, shared: Arc<Shared>, on_change: Arc<dyn OnChange>) {
    // Worker threads are many and each has little to do; the ingest and
    // HTTP threads they would preempt are the ones a client is waiting on,
    // and an ingest thread preempted for each worker it wakes falls behind
    // its socket.
    crate::sys::thread::batch_priority(TIMER_SLACK);
    // On the heap: the stack this thread touches stays within two pages.
    let mut state = Box::new(handle.snapshot().as_ref().publishable());
    let mut recorded = Batch::default();
    let mut config = shared.config.view();
    let mut msgs = VecDeque::new();
    if !inbox.take(&mut msgs, true) {
        return;
    }
    let mut woke = Instant::now();
    // Paced: this worker beats faster than COALESCE, so its thread wakes on
    // a timer once per COALESCE and takes what gathered, instead of being
    // woken by the ingest thread for each frame.
    let mut paced = false;
    loop {
        let batch = msgs.len();
        let mut changed = false;
        let mut frames = 0;
        let mut stopping = false;
        while let Some(m) = msgs.pop_front() {
            match m {
                // Publish what this batch applied, then end.
                Msg::Stop => {
                    stopping = true;
                    msgs.clear();
                    break;
                }
                Msg::Frame(frame, transport, at, n) => {
                    let beat = matches!(&*frame, Frame::Heartbeat(_));
                    state.interval = config.get().fleet.heartbeat_interval;
                    state.apply_n(*frame, transport, at, n);
                    if beat {
                        recorded.samples.push(state.sample());
                    }
                    frames += u64::from(n);
                    changed = true;
                }
                Msg::Run(run, transport, at) => {
                    state.apply_run_event(run, transport, at);
                    recorded.runs.push(runs::Run {
                        at_ms: state.last_update,
                        duration_ms: run.duration_ms as f32,
                        ok: run.ok,
                    });
                    frames += 1;
                    changed = true;
                }
                Msg::Refused => {
                    let n = handle.refused.swap(0, Ordering::AcqRel);
                    state.errors = state.errors.saturating_add(n);
                    changed |= n > 0;
                }
                Msg::Sweep { timeout_ms } => changed |= state.sweep(timeout_ms, Instant::now()),
            }
            if handle.is_stopped() {
                return;
            }
        }
        if frames > 0 {
            shared
                .stats
                .add(crate::stats::Counter::FramesApplied, frames);
        }
        if changed {
            on_change.will_change();
            let snap = state.published();
            let cap = config.refresh(&shared.config).fleet.history_samples;
            handle.publish(snap.clone(), &mut recorded, cap);
            on_change.changed(&snap, &handle);
        }
        if stopping {
            return;
        }
        // A paced worker lets its frames gather until COALESCE after its
        // last wake: every wake by the ingest thread costs that thread a
        // syscall and a context switch. Half an inbox gathered ends the
        // pause (a burst: a TCP peer is not read while the inbox is full),
        // and a batch that half filled it means the worker is behind: no
        // pause then, or a flood would be capped at the inbox per period.
        let taken = if paced && batch < INBOX_CAPACITY / 2 {
            inbox.gather(&mut msgs, woke + COALESCE, INBOX_CAPACITY / 2)
        } else {
            inbox.take(&mut msgs, false)
        };
        if !taken {
            return;
        }
        if !msgs.is_empty() {
            // Frames came while applying or pausing: stay on the cadence.
            woke = Instant::now();
            continue;
        }
        // Nothing waiting: sleep until the next frame. An active worker's
        // thread lingers first: beats that only repeat the last one wait
        // up to QUIET_LAG and are applied together, so a worker that beats
        // every second without news costs a wake every QUIET_LAG; anything
        // else is applied the moment it arrives. A worker that went silent
        // costs nothing until its next frame. Woken again within COALESCE
        // of the last wake, the worker is chatty and goes paced.
        if state.is_active() && !inbox.linger(&mut msgs, Instant::now() + QUIET_LAG) {
            return;
        }
        if msgs.is_empty() && !inbox.take(&mut msgs, true) {
            return;
        }
        let now = Instant::now();
        paced = now.duration_since(woke) < COALESCE;
        woke = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::snapshot::Transport;
    use crate::fleet::snapshot::tests::{frame, fresh};
    use std::sync::atomic::AtomicUsize;

    struct Quiet;
    impl OnChange for Quiet {
        fn changed(&self, _: &Arc<Snapshot>, _: &Handle) {}
    }

    /// A worker thread reporting its publishes to `on_change`.
    fn start(on_change: Arc<dyn OnChange>) -> (Arc<Handle>, std::thread::JoinHandle<()>) {
        let (tx, rx) = crate::fleet::inbox::inbox();
        let handle = Arc::new(Handle::new(tx, fresh()));
        let h = handle.clone();
        let shared = Arc::new(Shared::new(crate::config::defaults()));
        let t = std::thread::spawn(move || run(h, rx, shared, on_change));
        (handle, t)
    }

    #[test]
    fn thread_applies_in_order_and_stops() {
        let (handle, t) = start(Arc::new(Quiet));
        for seq in 1..=50u64 {
            let f = frame(&format!(
                r#"{{"type":"heartbeat","worker_id":"w1","seq":{seq},"queue_depth":{seq}}}"#
            ));
            handle
                .inbox
                .try_send(Msg::frame(f, Transport::Udp, Instant::now()))
                .unwrap_or_else(|_| panic!("room for 50"));
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while handle.snapshot().messages_processed < 50 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        let s = handle.snapshot();
        assert_eq!(
            (s.messages_processed, s.queue_depth, s.missed_beats),
            (50, 50, 0)
        );
        handle.stop();
        t.join().unwrap();
    }

    /// Counts publishes.
    struct Publishes(AtomicUsize);
    impl OnChange for Publishes {
        fn changed(&self, _: &Arc<Snapshot>, _: &Handle) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn a_chatty_worker_is_applied_on_a_cadence_and_a_quiet_one_by_itself() {
        let publishes = Arc::new(Publishes(AtomicUsize::new(0)));
        let (handle, t) = start(publishes.clone());
        let beat = |seq: u64| {
            // Each beat says something new: a repeat would be quiet.
            let f = frame(&format!(
                r#"{{"type":"heartbeat","worker_id":"w1","seq":{seq},"queue_depth":{seq}}}"#
            ));
            handle
                .inbox
                .try_send(Msg::frame(f, Transport::Udp, Instant::now()))
                .unwrap_or_else(|_| panic!("inbox full at seq {seq}"));
        };
        let applied = |n: u64| {
            let deadline = Instant::now() + Duration::from_secs(5);
            while handle.snapshot().messages_processed < n && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            handle.snapshot().messages_processed
        };
        // 500 frames 2 ms apart: a wake for each would be 500 publishes; on
        // a COALESCE cadence it is one per COALESCE and the first two. How
        // many periods the run took is the machine's business; that the
        // frames share publishes is the thread's.
        for seq in 1..=500u64 {
            beat(seq);
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(applied(500), 500);
        let chatty = publishes.0.load(Ordering::Relaxed);
        assert!(
            (2..=250).contains(&chatty),
            "{chatty} publishes for 500 frames: not one per frame"
        );
        // Quiet again: the next frame is applied and published by itself.
        std::thread::sleep(COALESCE * 3);
        let before = publishes.0.load(Ordering::Relaxed);
        beat(501);
        assert_eq!(applied(501), 501);
        // The snapshot is readable a moment before its publish is counted.
        let deadline = Instant::now() + Duration::from_secs(5);
        while publishes.0.load(Ordering::Relaxed) == before && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(COALESCE * 2);
        assert_eq!(publishes.0.load(Ordering::Relaxed), before + 1);
        handle.stop();
        t.join().unwrap();
    }

    /// Beats that repeat the last one wait in the inbox without a wake,
    /// heard at once; the next message that is not one wakes the thread,
    /// which applies them all in order, each stamped when it arrived.
    #[test]
    fn quiet_beats_are_applied_in_order_with_the_next_message() {
        let (handle, t) = start(Arc::new(Quiet));
        let send = |seq: u64, at: Instant| {
            let f = frame(&format!(
                r#"{{"type":"heartbeat","worker_id":"w1","seq":{seq},"cpu_usage":4.5}}"#
            ));
            let msg = Msg::frame(f, Transport::Udp, at);
            assert!(handle.inbox.try_send(msg).is_ok());
        };
        let applied = |n: u64| {
            let deadline = Instant::now() + Duration::from_secs(30);
            while handle.snapshot().messages_processed < n && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            handle.snapshot()
        };
        let earlier = Instant::now() - Duration::from_secs(2);
        send(1, earlier - Duration::from_secs(1));
        assert_eq!(applied(1).messages_processed, 1);
        send(2, earlier);
        send(3, earlier + Duration::from_secs(1));
        std::thread::sleep(Duration::from_millis(300));
        let s = handle.snapshot();
        assert_eq!(
            s.messages_processed, 1,
            "quiet beats do not wake the thread"
        );
        assert_eq!(handle.inbox.heard(), Some(earlier + Duration::from_secs(1)));
        // A sweep that finds the worker heard from: loud, but no change.
        let sweep = Msg::Sweep { timeout_ms: 60_000 };
        assert!(handle.inbox.try_send(sweep).is_ok());
        let s = applied(3);
        assert_eq!(
            (
                s.messages_processed,
                s.last_seq,
                s.missed_beats,
                s.is_active()
            ),
            (3, Some(3), 0, true)
        );
        assert_eq!(s.last_seen, earlier + Duration::from_secs(1));
        let stamps: Vec<u32> = handle
            .read()
            .series
            .history
            .samples()
            .map(|x| x.t)
            .collect();
        assert_eq!(stamps.len(), 3);
        assert!(
            stamps[0] < stamps[1] && stamps[1] < stamps[2],
            "stamped on arrival, a second apart, not when applied: {stamps:?}"
        );
        handle.stop();
        t.join().unwrap();
    }

    /// Resident kB of the mapping of this process that holds `addr`.
    fn resident_kb(addr: usize) -> Option<u64> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
        let mut inside = false;
        for line in smaps.lines() {
            let first = line.split_whitespace().next().unwrap_or("");
            if let Some((a, b)) = first.split_once('-') {
                if let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
                {
                    inside = (a..b).contains(&addr);
                    continue;
                }
            }
            if inside {
                if let Some(kb) = line.strip_prefix("Rss:") {
                    return kb.trim().trim_end_matches(" kB").parse().ok();
                }
            }
        }
        None
    }

    /// The guard on a worker thread's memory: the pages of stack it touches
    /// stay resident for the worker's life, so the deepest path it takes
    /// (the largest frames, a merge, a run, a sweep, refusals, a publish
    /// into the real change feed) must fit in two pages. Measured in a
    /// release build, as the daemon runs (test.sh runs it so).
    #[test]
    #[cfg_attr(
        debug_assertions,
        ignore = "stack depth is a release-build property: test.sh runs this with --release"
    )]
    fn a_worker_thread_touches_at_most_two_pages_of_stack() {
        let (tx, rx) = crate::fleet::inbox::inbox();
        let handle = Arc::new(Handle::new(tx, fresh()));
        let shared = Arc::new(Shared::new(crate::config::defaults()));
        let (h, on) = (handle.clone(), shared.clone());
        let at = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mark = at.clone();
        let t = std::thread::Builder::new()
            .stack_size(STACK_BYTES)
            .spawn(move || {
                let here = 0u8;
                mark.store(
                    std::hint::black_box(&here) as *const u8 as usize,
                    Ordering::SeqCst,
                );
                run(h, rx, on.clone(), on);
            })
            .unwrap();
        let labels: Vec<String> = (0..64)
            .map(|i| format!(r#""k{i}":"{}""#, "v".repeat(200)))
            .collect();
        let tasks: Vec<String> = (0..50)
            .map(|i| format!(r#"{{"id":"t{i}","n":{i}}}"#))
            .collect();
        let big = format!(
            r#"{{"type":"heartbeat","worker_id":"w1","seq":1,"status":"working","cpu_usage":1.5,"memory_usage":2,"gpu_usage":3,"queue_depth":4,"resource_usage":{{"rss_mb":1,"heap_used_mb":2,"heap_total_mb":3,"external_mb":4,"peak_rss_mb":5,"threads":6,"fds":7,"io_read_bytes":8,"io_write_bytes":9}},"current_job":{{"id":"j","type":"scan","files":9,"started_at":1}},"running_tasks":[{}],"labels":{{{}}}}}"#,
            tasks.join(","),
            labels.join(",")
        );
        let now = Instant::now;
        for round in 0..3u64 {
            let mut msgs = Vec::new();
            for seq in 0..300u64 {
                let f = big.replace(r#""seq":1"#, &format!(r#""seq":{}"#, round * 1000 + seq));
                msgs.push(Msg::frame(frame(&f), Transport::Udp, now()));
                msgs.push(Msg::frame(
                    frame(r#"{"type":"run","worker_id":"w1","duration_ms":5,"ok":false}"#),
                    Transport::Udp,
                    now(),
                ));
            }
            handle.inbox.offer(msgs, 4096);
            handle.refuse();
            let _ = handle.inbox.try_send(Msg::Sweep { timeout_ms: 0 });
            let _ = handle.inbox.try_send(Msg::frame(
                frame(r#"{"type":"bye","worker_id":"w1"}"#),
                Transport::Udp,
                now(),
            ));
            std::thread::sleep(Duration::from_millis(300));
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while handle.snapshot().runs.total < 900 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(handle.snapshot().runs.total, 900);
        let kb = resident_kb(at.load(Ordering::SeqCst)).expect("the worker's stack in smaps");
        handle.stop();
        t.join().unwrap();
        assert!(kb <= 8, "a worker thread's stack holds {kb} kB resident");
    }
}
