//! Tasks (seed 002; DESIGN.md, "Tasks"): submitted over HTTP, kept in a
//! journal in `state_dir`, dispatched by a scheduler thread to workers that
//! offered capacity in their TCP `hello`, reported back in `task_update`
//! and `task_log` frames, requeued when the roll call loses their worker.
//!
//! - `task`: a task, its states, and what a submission may say (pure).
//! - `book`: every task, the queue, the logs, the takers, and the rules of
//!   each change (pure: changes return their journal records and frames).
//! - `journal`: the file format and its one writer thread (group commit).
//! - `feed`: which tasks changed, for `/ws/tasks`.
//! - `logs`: a task's log lines; `timing`: wait and run histograms.
//!
//! [`Tasks`] holds the book under one lock, held for the rules only; it
//! hands records to the journal thread and frames to the ingest loop (the
//! [`Outbox`]), which owns the workers' sockets. The HTTP loop is answered
//! through an acknowledgement once a submission is on disk.

pub mod book;
pub mod feed;
pub mod journal;
pub mod logs;
pub mod task;
pub mod timing;

use crate::clock::unix_ms;
use crate::config::Config;
use crate::fleet::Shared;
use crate::fleet::inbox::Msg;
use crate::fleet::registry::Registry;
use crate::fleet::snapshot::Transport;
use crate::proto::task::{TaskLog, TaskUpdate};
use crate::proto::{Frame, Labels, Reported as WorkerStatus, Run, WorkerId};
use crate::stats::Counter;
pub use book::NotHeld;
use book::{Book, Effects, Limits};
use journal::{Ack, Append, Fsync, Record};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use task::{BadField, State, Task};

/// Tasks in a `/ws/tasks` snapshot at most: the newest.
pub const SNAPSHOT_TASKS: usize = 1000;

/// How often the scheduler looks, when nothing wakes it sooner.
const TICK: Duration = Duration::from_millis(50);

/// Lines for workers' TCP sessions, taken by the ingest loop.
pub struct Outbox {
    tx: Sender<(WorkerId, Vec<u8>)>,
    waker: OnceLock<Arc<mio::Waker>>,
}

impl Outbox {
    pub fn set_waker(&self, w: Arc<mio::Waker>) {
        let _ = self.waker.set(w);
    }
}

/// Why a submission was refused.
#[derive(Debug)]
pub enum Refused {
    Bad(BadField),
    TooLarge(usize),
    Full(usize),
}

pub struct Tasks {
    book: Mutex<Book>,
    journal: Mutex<Option<Sender<Append>>>,
    pub outbox: Outbox,
    registry: Arc<Registry>,
    shared: Arc<Shared>,
    wake: (Mutex<bool>, Condvar),
    stopping: AtomicBool,
    /// Opened with a journal: once it is closed, nothing more is accepted.
    durable: bool,
    /// Where the journal is, and how large it has grown.
    dir: Option<std::path::PathBuf>,
    size: Arc<journal::Size>,
    /// What changed, for `/ws/tasks`.
    feed: feed::Feed,
    /// Queued → assigned, and running → finished, for `/metrics`.
    pub queue_wait: timing::Histogram,
    pub run_time: timing::Histogram,
}

/// What opening the task book found and started.
pub struct Opened {
    pub tasks: Arc<Tasks>,
    /// For the ingest loop.
    pub outbox: Receiver<(WorkerId, Vec<u8>)>,
    pub journal: Option<JoinHandle<()>>,
}

fn fsync_mode(cfg: &Config) -> Fsync {
    cfg.task_fsync
}

impl Tasks {
    /// Open the journal in `dir` (when there is one), replay it, cut a
    /// torn tail, requeue what workers held, and start the journal thread.
    pub fn open(dir: Option<&Path>, registry: Arc<Registry>, shared: Arc<Shared>) -> Opened {
        let (tx, outbox) = mpsc::channel();
        let cfg = shared.config.get();
        let mut book = Book::default();
        let mut fx = Effects::default();
        let mut journal = None;
        let mut thread = None;
        let size = Arc::new(journal::Size::default());
        if let Some(dir) = dir {
            match journal::open(dir) {
                Ok((file, bytes)) => {
                    let started = Instant::now();
                    let r = journal::replay(&bytes, |rec| book.replay(rec, cfg.task_log_bytes));
                    shared.stats.add(Counter::JournalSkipped, r.skipped as u64);
                    if let Some(at) = r.cut_at {
                        shared.stats.incr(Counter::JournalCut);
                        log::warn!(
                            "task journal: a torn or damaged tail after byte {at} of {} was cut",
                            bytes.len()
                        );
                        if let Err(e) = journal::cut(&file, at) {
                            log::error!("task journal: cannot cut it: {e}");
                        }
                    }
                    if r.skipped > 0 {
                        log::warn!("task journal: {} damaged records skipped", r.skipped);
                    }
                    if r.records > 0 {
                        log::info!(
                            "task journal: {} records, {} tasks, read in {} ms",
                            r.records,
                            book.len(),
                            started.elapsed().as_millis()
                        );
                    }
                    book.requeue_all_held(unix_ms(), &mut fx);
                    let kept = r.cut_at.unwrap_or(bytes.len() as u64);
                    size.now.store(kept, Ordering::Relaxed);
                    let (jtx, jrx) = mpsc::channel();
                    let sh = shared.clone();
                    let sz = size.clone();
                    let spawned =
                        std::thread::Builder::new()
                            .name("journal".into())
                            .spawn(move || {
                                let sh2 = sh.clone();
                                journal::run(
                                    file,
                                    jrx,
                                    move || fsync_mode(&sh.config.get()),
                                    move |b, ok| {
                                        sh2.stats.add(Counter::JournalBytes, b);
                                        if !ok {
                                            sh2.stats.incr(Counter::JournalErrors);
                                        }
                                    },
                                    sz,
                                )
                            });
                    match spawned {
                        Ok(t) => {
                            journal = Some(jtx);
                            thread = Some(t);
                        }
                        Err(e) => log::error!("cannot start the journal thread: {e}"),
                    }
                }
                Err(e) => log::warn!(
                    "task journal in {} is unusable ({e}): tasks will not survive a restart",
                    dir.display()
                ),
            }
        }
        let tasks = Arc::new(Tasks {
            book: Mutex::new(book),
            journal: Mutex::new(journal),
            outbox: Outbox {
                tx,
                waker: OnceLock::new(),
            },
            registry,
            shared,
            wake: (Mutex::new(false), Condvar::new()),
            stopping: AtomicBool::new(false),
            durable: thread.is_some(),
            dir: dir.map(Path::to_path_buf),
            size,
            queue_wait: Default::default(),
            run_time: Default::default(),
            feed: feed::Feed::default(),
        });
        tasks.apply(&tasks.lock(), fx, None);
        Opened {
            tasks,
            outbox,
            journal: thread,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Carry out what a change asks: journal, frames, runs, counters.
    /// Called with the book locked, so records reach the journal in order.
    fn apply(&self, book: &Book, fx: Effects, ack: Option<Ack>) {
        let st = &self.shared.stats;
        st.add(Counter::TasksRequeued, fx.requeued);
        st.add(Counter::TasksLost, fx.lost);
        st.add(Counter::TaskLogLinesDropped, fx.log_dropped);
        for r in &fx.records {
            if let Record::Progress { progress: p, .. } = r {
                match (p.state, p.assigned_at, p.started_at, p.finished_at) {
                    (State::Assigned, Some(at), ..) => {
                        let queued = p.queued_at.unwrap_or(at);
                        self.queue_wait.observe(at.saturating_sub(queued));
                    }
                    (State::Succeeded | State::Failed, _, Some(s), Some(f)) => {
                        self.run_time.observe(f.saturating_sub(s));
                    }
                    _ => {}
                }
            }
        }
        for s in State::ALL {
            st.set(
                state_counter(s),
                book.by_state.get(&s).copied().unwrap_or(0),
            );
        }
        self.feed.note(&fx.records);
        let journal = self.journal.lock().unwrap_or_else(|p| p.into_inner());
        let mut ack = ack;
        let n = fx.records.len();
        for (i, r) in fx.records.iter().enumerate() {
            let a = if i + 1 == n { ack.take() } else { None };
            match journal.as_ref() {
                Some(j) => {
                    if let Err(mpsc::SendError(lost)) = j.send(Append {
                        bytes: journal::encode(r),
                        ack: a,
                        compact: None,
                    }) {
                        if let Some(a) = lost.ack {
                            a(false);
                        }
                    }
                }
                None => {
                    // In memory only, or the journal is closed (stopping).
                    if let Some(a) = a {
                        a(!self.durable);
                    }
                }
            }
        }
        drop(journal);
        if let Some(a) = ack {
            a(!self.durable);
        }
        if !fx.frames.is_empty() {
            for f in fx.frames {
                let _ = self.outbox.tx.send(f);
            }
            if let Some(w) = self.outbox.waker.get() {
                let _ = w.wake();
            }
        }
        for (worker, ms, ok) in fx.runs {
            if let Some(h) = self.registry.handle(&worker) {
                let run = Frame::Run(Run {
                    worker_id: Some(worker.clone()),
                    duration_ms: ms,
                    ok,
                    exit_code: None,
                    signal: None,
                    token: None,
                });
                let _ = h
                    .inbox
                    .try_send(Msg::frame(run, Transport::Tcp, Instant::now()));
            }
        }
    }

    /// The HTTP loop, woken when tasks change.
    pub fn set_http_waker(&self, w: Arc<mio::Waker>) {
        self.feed.set_waker(w);
    }

    /// The version of the last change.
    pub fn version(&self) -> u64 {
        self.feed.version()
    }

    /// The newest tasks, at most `n`, and the version they are as of.
    pub fn snapshot(&self, n: usize) -> (Vec<Task>, u64) {
        let book = self.lock();
        let v = self.feed.version();
        let mut t: Vec<Task> = book
            .entries
            .values()
            .rev()
            .take(n)
            .map(|e| e.task.clone())
            .collect();
        t.reverse();
        (t, v)
    }

    /// What changed after version `since`: the tasks as they are now and
    /// the ids forgotten, with the version they are as of; `None` when
    /// `since` is older than the changes remembered.
    pub fn changes_since(&self, since: u64) -> Option<(Vec<Task>, Vec<String>, u64)> {
        let book = self.lock();
        let (ids, v) = self.feed.since(since)?;
        let (mut tasks, mut gone) = (Vec::new(), Vec::new());
        for id in ids {
            match book.entries.get(id.as_str()) {
                Some(e) => tasks.push(e.task.clone()),
                None => gone.push(id),
            }
        }
        Some((tasks, gone, v))
    }

    fn poke(&self) {
        let (m, c) = &self.wake;
        *m.lock().unwrap_or_else(|p| p.into_inner()) = true;
        c.notify_one();
    }

    /// `POST /api/tasks`: the task, queued; `ack` is called once it is
    /// on disk (at once without a journal).
    pub fn submit(&self, body: &[u8], cfg: &Config, ack: Ack) -> Result<Task, Refused> {
        let st = &self.shared.stats;
        if body.len() > cfg.max_task_bytes {
            st.incr(Counter::TasksRefused);
            return Err(Refused::TooLarge(cfg.max_task_bytes));
        }
        let now = unix_ms();
        let mut book = self.lock();
        let id = book.next_id(now);
        let task = task::parse_submit(body, id, now).map_err(|b| {
            st.incr(Counter::TasksRefused);
            Refused::Bad(b)
        })?;
        let mut fx = Effects::default();
        if !book.make_room(cfg.max_tasks, &mut fx) {
            st.incr(Counter::TasksRefused);
            return Err(Refused::Full(cfg.max_tasks));
        }
        book.insert(task.clone());
        fx.records.push(Record::Submit {
            task: task.clone().into(),
        });
        st.incr(Counter::TasksSubmitted);
        self.apply(&book, fx, Some(ack));
        drop(book);
        self.poke();
        Ok(task)
    }

    pub fn get(&self, id: &str) -> Option<Task> {
        self.lock().entries.get(id).map(|e| e.task.clone())
    }

    /// Tasks in id (submission) order after `after`, filtered, at most `limit`.
    pub fn list(
        &self,
        filter: impl Fn(&Task) -> bool,
        after: Option<&str>,
        limit: usize,
    ) -> Vec<Task> {
        use std::ops::Bound;
        let book = self.lock();
        let from = after.map_or(Bound::Unbounded, |a| Bound::Excluded(a.to_string()));
        book.entries
            .range((from, Bound::Unbounded))
            .map(|(_, e)| &e.task)
            .filter(|t| filter(t))
            .take(limit)
            .cloned()
            .collect()
    }

    /// A task's log lines from offset `since`, and the next offset.
    pub fn logs(&self, id: &str, since: u64) -> Option<(Vec<String>, u64)> {
        let book = self.lock();
        let e = book.entries.get(id)?;
        let (lines, next) = e.logs.since(since);
        Some((lines.into_iter().map(str::to_string).collect(), next))
    }

    /// `DELETE /api/tasks/{id}`.
    pub fn cancel(&self, id: &str) -> Option<Task> {
        let mut book = self.lock();
        let mut fx = Effects::default();
        let t = book.cancel(id, unix_ms(), &mut fx)?;
        self.apply(&book, fx, None);
        Some(t)
    }

    /// A TCP `hello`: the worker takes `capacity` tasks at once.
    pub fn on_hello(
        &self,
        id: &WorkerId,
        capacity: u32,
        types: Option<Vec<String>>,
        labels: Labels,
    ) {
        let stale = self.registry.snapshot(id).is_some_and(|s| !s.is_active());
        self.lock().on_hello(id, capacity, types, labels, stale);
        self.poke();
    }

    /// The worker's session closed (or it said bye).
    pub fn on_lost(&self, id: &str, why: &str) {
        let mut book = self.lock();
        if !book.takers.contains_key(id) {
            return;
        }
        let mut fx = Effects::default();
        book.on_lost(id, why, unix_ms(), &mut fx);
        self.apply(&book, fx, None);
    }

    pub fn on_update(&self, worker: &WorkerId, u: TaskUpdate) -> Result<(), NotHeld> {
        let mut book = self.lock();
        let mut fx = Effects::default();
        let r = book.on_update(worker, u, unix_ms(), &mut fx);
        self.refused(r);
        self.apply(&book, fx, None);
        drop(book);
        self.poke();
        r
    }

    pub fn on_log(&self, worker: &WorkerId, l: TaskLog) -> Result<(), NotHeld> {
        let cap = self.shared.config.get().task_log_bytes;
        let mut book = self.lock();
        let mut fx = Effects::default();
        let r = book.on_log(worker, l, cap, &mut fx);
        self.refused(r);
        self.apply(&book, fx, None);
        r
    }

    fn refused(&self, r: Result<(), NotHeld>) {
        if r.is_err() {
            self.shared.stats.incr(Counter::TaskUpdatesRefused);
        }
    }

    /// One scheduler turn: lost workers, deadlines, dispatch.
    pub fn tick(&self) {
        let cfg = self.shared.config.get();
        let now = unix_ms();
        // Raw handles: a worker whose hello is not applied yet is not gone.
        let status = |w: &str| self.registry.handle(w).map(|h| h.snapshot());
        let mut book = self.lock();
        let mut fx = Effects::default();
        // A worker that said hello again is judged on what it said since:
        // the state its snapshot still shows from before (`inactive`,
        // `terminated`) is stale until the hello is applied.
        let mut lost: Vec<(WorkerId, &'static str)> = Vec::new();
        for (w, t) in book.takers.iter_mut() {
            match status(w) {
                None => lost.push((w.clone(), "worker forgotten")),
                Some(s) if t.stale && !s.is_active() => {}
                Some(s) if s.terminated => lost.push((w.clone(), "worker said bye")),
                Some(s) if s.inactive => lost.push((w.clone(), "worker inactive")),
                _ => t.stale = false,
            }
        }
        for (w, why) in lost {
            book.on_lost(&w, why, now, &mut fx);
        }
        let limits = Limits {
            ack_timeout_ms: cfg.task_ack_timeout.as_millis() as u64,
            cancel_grace_ms: cfg.task_cancel_grace.as_millis() as u64,
            retention_ms: cfg.task_retention.as_millis() as u64,
        };
        book.deadlines(now, &limits, &mut fx);
        book.dispatch(
            now,
            |w| status(w).is_some_and(|s| s.is_active() && s.reported != Some(WorkerStatus::Error)),
            &mut fx,
        );
        self.apply(&book, fx, None);
        if self.size.due(book.live_bytes) {
            self.compact(&book);
        }
    }

    /// Hand the journal thread every live task as it is now, to rewrite the
    /// journal as. Under the book's lock the tasks are only cloned; the
    /// thread encodes and writes them, and records sent after this one land
    /// in the new journal, in order.
    fn compact(&self, book: &Book) {
        let Some(dir) = &self.dir else { return };
        let mut records = Vec::with_capacity(book.len());
        for e in book.entries.values() {
            records.push(Record::Submit {
                task: e.task.clone().into(),
            });
            if !e.logs.lines.is_empty() {
                records.push(Record::Log {
                    id: e.task.id.clone(),
                    lines: e.logs.lines.iter().cloned().collect(),
                });
            }
        }
        // Not due again until this one has landed.
        self.size
            .base
            .store(self.size.now.load(Ordering::Relaxed), Ordering::Relaxed);
        if let Some(j) = self
            .journal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            let _ = j.send(Append {
                bytes: Vec::new(),
                ack: None,
                compact: Some((dir.clone(), records)),
            });
        }
    }

    /// Tasks a worker holds now (assigned or running).
    pub fn held_by(&self, worker: &str) -> usize {
        self.lock().takers.get(worker).map_or(0, |t| t.held.len())
    }

    /// Tasks waiting in the queue now.
    pub fn queued(&self) -> usize {
        self.lock()
            .by_state
            .get(&State::Queued)
            .copied()
            .unwrap_or(0) as usize
    }

    /// Tasks a worker holds or held, newest first.
    pub fn of_worker(&self, worker: &str, limit: usize) -> Vec<Task> {
        let book = self.lock();
        book.entries
            .values()
            .rev()
            .filter(|e| e.task.progress.worker_id.as_deref() == Some(worker))
            .take(limit)
            .map(|e| e.task.clone())
            .collect()
    }

    /// Stop the scheduler and close the journal (its thread syncs and ends).
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        self.poke();
        self.journal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
    }
}

/// The scheduler thread: a turn every [`TICK`], or sooner when poked.
pub fn run(tasks: Arc<Tasks>) {
    loop {
        {
            let (m, c) = &tasks.wake;
            let mut woken = m.lock().unwrap_or_else(|p| p.into_inner());
            if !*woken {
                woken = c
                    .wait_timeout(woken, TICK)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|p| p.into_inner().0);
            }
            *woken = false;
        }
        if tasks.stopping.load(Ordering::Acquire) {
            return;
        }
        tasks.tick();
    }
}

fn state_counter(s: State) -> Counter {
    match s {
        State::Queued => Counter::TasksQueued,
        State::Assigned => Counter::TasksAssigned,
        State::Running => Counter::TasksRunning,
        State::Succeeded => Counter::TasksSucceeded,
        State::Failed => Counter::TasksFailed,
        State::Cancelled => Counter::TasksCancelled,
        State::TimedOut => Counter::TasksTimedOut,
    }
}
