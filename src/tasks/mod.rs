//! Tasks: submitted over HTTP, kept in a journal in `state_dir`, dispatched
//! by a scheduler thread to workers that offered capacity in their TCP
//! `hello`, reported back in `task_update` and `task_log` frames, requeued
//! when the session layer says their worker is lost.
//!
//! - `task`: a task, its id and states, and what a submission may say
//!   (pure).
//! - `book`: every task, the logs, the takers, and the rules of each
//!   change (pure: changes return their effects).
//! - `queue`: the queued tasks, indexed by type and by worker.
//! - `effects`: carrying out a change's effects (journal, outbox, runs,
//!   counters, feed), in one place.
//! - `journal`: the file format and its one writer thread (group commit).
//! - `feed`: which tasks changed, for `/ws/tasks`.
//! - `logs`: a task's log lines; `timing`: wait and run histograms.
//!
//! [`Tasks`] holds the book under one lock, held for the rules and for
//! handing the effects over; the journal thread writes, the ingest loop
//! (which owns the workers' sockets) sends. Only the session layer decides
//! that a worker is lost ([`Tasks::on_lost`]); the scheduler keeps the
//! deadlines and dispatches. A submission may reach a worker before its
//! record is on disk (delivery is at least once, and a restart requeues
//! what workers held); its `201` waits for the disk.

pub mod admin;
pub mod adopt;
pub mod book;
pub mod bulk;
pub mod cluster;
mod duties;
pub mod effects;
pub mod feed;
pub mod filter;
mod fire;
pub mod journal;
pub mod limit;
pub mod logs;
pub mod queue;
pub mod schedule;
mod scheduler;
pub mod task;
pub mod timing;
mod writer;

use crate::clock::unix_ms;
use crate::config::Config;
use crate::fleet::Shared;
use crate::fleet::notify::Notify;
use crate::proto::task::{Held, Reported, TaskLog, TaskProgress, TaskUpdate};
use crate::proto::{Labels, WorkerId};
use crate::stats::Counter;
pub use book::NotHeld;
use book::{Book, Effects};
pub use effects::{Outbox, Runs};
use effects::{Outlets, Runner};
use journal::{Ack, Append, Record};
pub use scheduler::run;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;
use task::{BadField, State, Task, TaskId};

/// Tasks in a `/ws/tasks` snapshot at most: the newest.
pub const SNAPSHOT_TASKS: usize = 1000;

/// The least time a single node, restarted, keeps a task held when it
/// stopped for its worker to come back and re-report it.
const RETURN_GRACE_MIN_MS: u64 = 10_000;

/// Cluster mode: a task's progress is written at most this often (ms), so
/// that a worker reporting it many times a second costs the database one
/// row update a second; the last report is written within it.
const PROGRESS_WRITE_EVERY_MS: u64 = 1000;

/// Why a submission was refused.
#[derive(Debug)]
pub enum Refused {
    Bad(BadField),
    TooLarge(usize),
    Full(usize),
    /// Its `unique_key` is held by this task, not ended.
    Unique(TaskId),
    /// Cluster mode: no submission can be stored now.
    Unavailable(&'static str),
}

/// Who may take work now, by the roll call: the scheduler asks it once per
/// taker with room.
pub trait Eligible: Send + Sync {
    fn eligible(&self, worker: &str) -> bool;
}

/// Where the task book's effects and news go: given at construction.
pub struct Links {
    /// Told when tasks change (the HTTP loop, for `/ws/tasks`).
    pub changed: Arc<dyn Notify>,
    /// Lines for workers' sessions (the ingest loop).
    pub outbox: Arc<dyn Outbox>,
    /// Finished runs, for the workers' run metrics.
    pub runs: Arc<dyn Runs>,
    /// Who may take work now.
    pub eligible: Arc<dyn Eligible>,
}

pub struct Tasks {
    book: Mutex<Book>,
    runner: Runner,
    eligible: Arc<dyn Eligible>,
    shared: Arc<Shared>,
    wake: (Mutex<bool>, Condvar),
    stopping: AtomicBool,
    /// A single node: when its earliest scheduled task is due (Unix ms;
    /// 0: none), so that the scheduler's turn comes then, not at the
    /// next [`scheduler::TICK`].
    due: AtomicU64,
    /// A single node whose book is at rest ([`Book::at_rest`]): the
    /// scheduler's turn comes every [`scheduler::REST_TICK`], not every
    /// [`scheduler::TICK`].
    resting: AtomicBool,
    /// Where the journal is, and how large it has grown.
    dir: Option<std::path::PathBuf>,
    size: Arc<journal::Size>,
    /// Cluster mode: the database, in the journal's place.
    store: Option<Arc<cluster::Store>>,
}

/// A `POST /api/tasks` as the HTTP layer read it.
pub struct Submission<'a> {
    pub body: &'a [u8],
    /// `traceparent` and `tracestate`, as [`task::trace_context`] keeps them.
    pub trace: Option<Box<task::Trace>>,
    /// The `Idempotency-Key` header, checked by [`task::valid_key`].
    pub idempotency_key: Option<String>,
    /// Who submitted it: the API token's name.
    pub submitted_by: Option<String>,
}

impl<'a> Submission<'a> {
    /// A body with no headers that matter.
    pub fn of(body: &'a [u8]) -> Submission<'a> {
        Submission {
            body,
            trace: None,
            idempotency_key: None,
            submitted_by: None,
        }
    }
}

/// What a submission made.
#[derive(Debug)]
pub enum Submitted {
    /// A new task.
    New(Task),
    /// The task an earlier submission with its `Idempotency-Key` made.
    Repeat(Task),
}

/// What opening the task book found and started.
pub struct Opened {
    pub tasks: Arc<Tasks>,
    /// The journal's thread, or the database writer's and mirror's.
    pub threads: Vec<JoinHandle<()>>,
}

/// Read the journal in `dir`, cut a torn tail, and start its thread; the
/// book as the journal left it, and the thread's queue.
fn open_journal(
    dir: &Path,
    shared: &Arc<Shared>,
    book: &mut Book,
    size: &Arc<journal::Size>,
) -> Option<(mpsc::Sender<Append>, JoinHandle<()>)> {
    let cfg = shared.config.get();
    let (file, bytes) = match journal::open(dir) {
        Ok(x) => x,
        Err(e) => {
            log::warn!(
                "task journal in {} is unusable ({e}): tasks will not survive a restart",
                dir.display()
            );
            return None;
        }
    };
    let started = Instant::now();
    let r = journal::replay(&bytes, |rec| book.replay(rec, cfg.tasks.log_bytes));
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
    let kept = r.cut_at.unwrap_or(bytes.len() as u64);
    size.now.store(kept, Ordering::Relaxed);
    let (tx, rx) = mpsc::channel();
    let (sh, sz) = (shared.clone(), size.clone());
    let spawned = std::thread::Builder::new()
        .name("journal".into())
        .spawn(move || {
            let mode = sh.clone();
            journal::run(
                file,
                rx,
                move || mode.config.get().tasks.fsync,
                move |b, ok| {
                    sh.stats.add(Counter::JournalBytes, b);
                    if !ok {
                        sh.stats.incr(Counter::JournalErrors);
                    }
                },
                sz,
            )
        });
    match spawned {
        Ok(t) => Some((tx, t)),
        Err(e) => {
            log::error!("cannot start the journal thread: {e}");
            None
        }
    }
}

impl Tasks {
    /// Open the journal in `dir` (when there is one), replay it, cut a
    /// torn tail, requeue what workers held, and start the journal thread.
    /// In cluster mode the database takes the journal's place: the book
    /// starts empty and the mirror fills it.
    pub fn open(
        dir: Option<&Path>,
        shared: Arc<Shared>,
        links: Links,
        cluster: Option<Arc<crate::cluster::Cluster>>,
    ) -> Opened {
        if let Some(c) = cluster {
            return Tasks::open_clustered(c, shared, links);
        }
        let mut book = Book::default();
        let size = Arc::new(journal::Size::default());
        let opened = dir.and_then(|d| open_journal(d, &shared, &mut book, &size));
        let (journal, thread) = match opened {
            Some((tx, t)) => (Some(tx), Some(t)),
            None => (None, None),
        };
        let mut fx = Effects::default();
        // Workers that ran tasks when the daemon stopped may come back
        // with them: three heartbeat intervals, at least 10 s (a worker's
        // reconnect backoff tops out at 5 s, with jitter 7.5 s).
        let interval = shared.config.get().fleet.heartbeat_interval.as_millis() as u64;
        let now = unix_ms();
        book.hold_for_return(now + (3 * interval).max(RETURN_GRACE_MIN_MS), now, &mut fx);
        let tasks = Tasks::new(book, links, shared, journal, None);
        let tasks = Arc::new(Tasks {
            dir: dir.map(Path::to_path_buf),
            size,
            ..tasks
        });
        tasks.runner.apply(&tasks.lock(), fx, None);
        Opened {
            tasks,
            threads: thread.into_iter().collect(),
        }
    }

    /// A task book with these outlets: a journal's queue, or the database.
    fn new(
        book: Book,
        links: Links,
        shared: Arc<Shared>,
        journal: Option<mpsc::Sender<Append>>,
        store: Option<Arc<cluster::Store>>,
    ) -> Tasks {
        Tasks {
            book: Mutex::new(book),
            runner: Runner::new(Outlets {
                journal,
                remote: store.clone(),
                outbox: links.outbox,
                runs: links.runs,
                feed: feed::Feed::new(links.changed),
                shared: shared.clone(),
            }),
            eligible: links.eligible,
            shared,
            wake: (Mutex::new(false), Condvar::new()),
            stopping: AtomicBool::new(false),
            due: AtomicU64::new(0),
            resting: AtomicBool::new(false),
            dir: None,
            size: Arc::new(journal::Size::default()),
            store,
        }
    }

    fn open_clustered(
        cluster: Arc<crate::cluster::Cluster>,
        shared: Arc<Shared>,
        links: Links,
    ) -> Opened {
        let (store, rx) = cluster::Store::new(cluster, shared.clone());
        let tasks = Arc::new(Tasks::new(
            Book::default(),
            links,
            shared,
            None,
            Some(store.clone()),
        ));
        let weak: std::sync::Weak<dyn cluster::Replica> =
            Arc::downgrade(&(tasks.clone() as Arc<dyn cluster::Replica>));
        let mut threads = Vec::new();
        let (s, w) = (store.clone(), weak.clone());
        match std::thread::Builder::new()
            .name("task-writer".into())
            .spawn(move || writer::write(s, rx, w))
        {
            Ok(t) => threads.push(t),
            Err(e) => log::error!("cannot start the task writer thread: {e}"),
        }
        let s = store.clone();
        match std::thread::Builder::new()
            .name("task-notify".into())
            .spawn(move || cluster::notify(s))
        {
            Ok(t) => threads.push(t),
            Err(e) => log::error!("cannot start the task notifier thread: {e}"),
        }
        match std::thread::Builder::new()
            .name("task-mirror".into())
            .spawn(move || cluster::mirror(store, weak))
        {
            Ok(t) => threads.push(t),
            Err(e) => log::error!("cannot start the task mirror thread: {e}"),
        }
        Opened { tasks, threads }
    }

    fn lock(&self) -> MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Change the book by `f` and carry out what it asks.
    fn change<T>(&self, f: impl FnOnce(&mut Book, &mut Effects) -> T) -> T {
        let mut book = self.lock();
        let mut fx = Effects::default();
        let out = f(&mut book, &mut fx);
        self.runner.apply(&book, fx, None);
        out
    }

    /// Queued → assigned, and running → finished, for `/metrics`.
    pub fn queue_wait(&self) -> &timing::Histogram {
        &self.runner.queue_wait
    }

    pub fn run_time(&self) -> &timing::Histogram {
        &self.runner.run_time
    }

    /// The version of the last change.
    pub fn version(&self) -> u64 {
        self.runner.feed.version()
    }

    /// The newest tasks, at most `n`, and the version they are as of.
    pub fn snapshot(&self, n: usize) -> (Vec<Task>, u64) {
        let book = self.lock();
        let v = self.runner.feed.version();
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

    /// What changed after version `since`: the tasks as they are now that
    /// `keep` wants (the others are not copied) and the ids forgotten,
    /// with the version they are as of; `None` when `since` is older than
    /// the changes remembered.
    pub fn changes_since(
        &self,
        since: u64,
        keep: impl Fn(&Task) -> bool,
    ) -> Option<(Vec<Task>, Vec<TaskId>, u64)> {
        let book = self.lock();
        let (ids, v) = self.runner.feed.since(since)?;
        let (mut tasks, mut gone) = (Vec::new(), Vec::new());
        for id in ids {
            match book.entries.get(&id) {
                Some(e) if keep(&e.task) => tasks.push(e.task.clone()),
                Some(_) => {}
                None => gone.push(id),
            }
        }
        Some((tasks, gone, v))
    }

    /// Wake the scheduler for a turn. A turn already asked for is not
    /// asked again: the scheduler reads the flag before it waits, so only
    /// the poke that raised it needs the wake (a syscall).
    fn poke(&self) {
        let (m, c) = &self.wake;
        let was = std::mem::replace(&mut *m.lock().unwrap_or_else(|p| p.into_inner()), true);
        if !was {
            c.notify_one();
        }
    }

    /// `POST /api/tasks`: the task, queued; `ack` is called once it is
    /// on disk (at once without a journal). A submission whose
    /// `Idempotency-Key` a task kept has is answered with that task
    /// ([`Submitted::Repeat`]), and `ack` is not called.
    pub fn submit(&self, s: Submission<'_>, cfg: &Config, ack: Ack) -> Result<Submitted, Refused> {
        let Submission {
            body,
            trace,
            idempotency_key,
            submitted_by,
        } = s;
        let st = &self.shared.stats;
        if body.len() > cfg.tasks.max_task_bytes {
            st.incr(Counter::TasksRefused);
            return Err(Refused::TooLarge(cfg.tasks.max_task_bytes));
        }
        let now = unix_ms();
        let mut book = self.lock();
        let keep = cfg.tasks.idempotency_retention.as_millis() as u64;
        if let Some(t) = idempotency_key
            .as_deref()
            .and_then(|k| book.repeat_of(k, now, keep))
        {
            st.incr(Counter::TasksRepeated);
            return Ok(Submitted::Repeat(t.clone()));
        }
        let id = match &self.store {
            None => book.next_id(now),
            Some(s) => s.next_id(now).ok_or_else(|| {
                st.incr(Counter::TasksRefused);
                Refused::Unavailable("this node has no place in the cluster's database yet")
            })?,
        };
        let mut task = task::parse_submit(body, id, now).map_err(|b| {
            st.incr(Counter::TasksRefused);
            Refused::Bad(b)
        })?;
        task.trace = trace;
        task.idempotency_key = idempotency_key;
        task.submitted_by = submitted_by;
        if let Some(held) = task
            .unique_key
            .as_deref()
            .and_then(|k| book.unique_holder(k))
        {
            st.incr(Counter::TasksRefused);
            return Err(Refused::Unique(held));
        }
        // In cluster mode the database answers for a task this node has
        // not read yet.
        if let (Err(unknown), None) = (book.all_known(&task.depends_on), &self.store) {
            st.incr(Counter::TasksRefused);
            return Err(Refused::Bad(BadField(
                "depends_on",
                format!("no task {unknown} (a task may depend only on tasks kept now)"),
            )));
        }
        let mut fx = Effects::default();
        if !book.make_room(cfg.tasks.max_tasks, &mut fx) {
            st.incr(Counter::TasksRefused);
            return Err(Refused::Full(cfg.tasks.max_tasks));
        }
        book.insert(task.clone());
        fx.records.push(Record::Submit {
            task: Box::new(task.clone()),
        });
        st.incr(Counter::TasksSubmitted);
        if self.store.is_none() {
            // Its dependencies may all have succeeded, or one failed.
            book.settle(now, &mut fx);
        }
        let task = book.entries.get(&task.id).map_or(task, |e| e.task.clone());
        self.runner.apply(&book, fx, Some(ack));
        drop(book);
        // In cluster mode a queued task can be claimed once it is
        // committed: the writer wakes the scheduler then (`stored`).
        if self.store.is_none() || task.state() != State::Queued {
            self.poke();
        }
        Ok(Submitted::New(task))
    }

    pub fn get(&self, id: TaskId) -> Option<Task> {
        self.lock().entries.get(&id).map(|e| e.task.clone())
    }

    /// Tasks in id (submission) order after `after`, filtered, at most `limit`.
    pub fn list(
        &self,
        filter: impl Fn(&Task) -> bool,
        after: Option<TaskId>,
        limit: usize,
    ) -> Vec<Task> {
        use std::ops::Bound;
        let book = self.lock();
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        book.entries
            .range((from, Bound::Unbounded))
            .map(|(_, e)| &e.task)
            .filter(|t| filter(t))
            .take(limit)
            .cloned()
            .collect()
    }

    /// A task's log lines from offset `since`, and the next offset.
    pub fn logs(&self, id: TaskId, since: u64) -> Option<(Vec<String>, u64)> {
        let book = self.lock();
        let e = book.entries.get(&id)?;
        let (lines, next) = e.logs.since(since);
        Some((lines.into_iter().map(str::to_string).collect(), next))
    }

    /// `DELETE /api/tasks/{id}`. In cluster mode the database decides:
    /// a task still queued there is cancelled, one that a node holds is
    /// asked of its worker by that node.
    pub fn cancel(&self, id: TaskId) -> Option<Task> {
        let Some(store) = &self.store else {
            return self.change(|book, fx| book.cancel(id, unix_ms(), fx));
        };
        let now = unix_ms();
        let mut book = self.lock();
        let was = book.entries.get(&id)?.task.state();
        let mut fx = Effects::default();
        let t = book.cancel(id, now, &mut fx)?;
        if !was.is_final() {
            store.send(cluster::Write::Cancel {
                id,
                at: now,
                queued: matches!(was, State::Queued | State::Scheduled | State::Waiting)
                    .then(|| t.clone()),
            });
        }
        self.runner.apply_stored(&book, fx);
        Some(t)
    }

    /// `POST /api/tasks/{id}/retry`: a fresh cycle for a task that ended
    /// otherwise than in success. `None`: no such task; `Err`: the task,
    /// which has not ended so. In cluster mode this node's copy answers,
    /// and the stored change is guarded (`Write::Retry`): a task that no
    /// longer ended in the database is left as it is, the write counted
    /// stale.
    pub fn retry(&self, id: TaskId) -> Option<Result<Task, Task>> {
        let now = unix_ms();
        let Some(store) = &self.store else {
            let r = self.change(|book, fx| book.retry(id, now, fx));
            self.poke();
            return r;
        };
        let mut book = self.lock();
        let mut fx = Effects::default();
        let r = book.retry(id, now, &mut fx)?;
        if let Ok(t) = &r {
            store.send(cluster::Write::Retry { task: t.clone() });
        }
        self.runner.apply_stored(&book, fx);
        Some(r)
    }

    /// The task not ended that holds `unique_key`.
    pub fn unique_holder(&self, key: &str) -> Option<TaskId> {
        self.lock().unique_holder(key)
    }

    /// A TCP `hello`: the worker takes `capacity` tasks at once.
    /// `running`: the tasks its `hello` says it still runs (a worker that
    /// reconnected); see [`adopt`].
    pub fn on_hello(
        &self,
        id: &WorkerId,
        capacity: u32,
        types: Option<Vec<String>>,
        labels: Labels,
        running: &[Held],
    ) {
        let cluster = self.store.is_some();
        self.change(|book, fx| {
            book.on_hello(id, capacity, types, labels);
            book.reported(id, running, cluster, unix_ms(), fx);
        });
        self.poke();
    }

    /// Whether a stop keeps held tasks for their workers to re-report
    /// after the restart (a single node: [`Book::hold_for_return`]); in
    /// cluster mode a session that closes gives its tasks back, and a
    /// worker that moves to another node is adopted there by lease.
    pub fn keeps_held_through_a_stop(&self) -> bool {
        self.store.is_none()
    }

    /// Whether this node judges the cluster-wide alerts: a single node
    /// does, a cluster's leader does, the other nodes do not.
    pub fn judges_the_cluster(&self) -> bool {
        self.store
            .as_ref()
            .is_none_or(|s| s.cluster.leading().is_some())
    }

    /// Cluster mode: the heartbeat addresses of the nodes alive now, for
    /// `welcome`; empty on a single node.
    pub fn nodes(&self) -> Vec<String> {
        self.store.as_ref().map_or_else(Vec::new, |s| {
            let view = s.cluster.view();
            view.nodes
                .into_iter()
                .filter(|n| n.alive)
                .map(|n| n.heartbeat)
                .collect()
        })
    }

    /// The session layer's word that a worker is lost (its session closed,
    /// it said bye, went inactive, or was forgotten): its tasks go back.
    pub fn on_lost(&self, id: &str, why: &str) {
        self.change(|book, fx| {
            if book.takers.contains_key(id) {
                book.on_lost(id, why, unix_ms(), fx);
            }
        });
    }

    /// A worker's `task_update`. On a single node, a finish that freed
    /// room is followed at once by the worker's next task, under the same
    /// lock; the scheduler's turn does the rest (other workers, deadlines,
    /// a task that waited on this one).
    pub fn on_update(&self, worker: &WorkerId, u: TaskUpdate) -> Result<(), NotHeld> {
        let finished = !matches!(u.state, Reported::Running);
        let r = self.change(|book, fx| {
            let now = unix_ms();
            let r = book.on_update(worker, u, now, fx);
            if r.is_ok() && finished && self.store.is_none() {
                book.dispatch_to(worker, now, |w| self.eligible.eligible(w), fx);
            }
            r
        });
        self.refused(r);
        self.poke();
        r
    }

    pub fn on_log(&self, worker: &WorkerId, l: TaskLog) -> Result<(), NotHeld> {
        let cap = self.shared.config.get().tasks.log_bytes;
        let r = self.change(|book, fx| book.on_log(worker, l, cap, fx));
        self.refused(r);
        r
    }

    pub fn on_progress(&self, worker: &WorkerId, p: TaskProgress) -> Result<(), NotHeld> {
        let every = self.store.as_ref().map(|_| PROGRESS_WRITE_EVERY_MS);
        let r = self.change(|book, fx| book.on_progress(worker, p, unix_ms(), every, fx));
        self.refused(r);
        r
    }

    fn refused(&self, r: Result<(), NotHeld>) {
        if r.is_err() {
            self.shared.stats.incr(Counter::TaskUpdatesRefused);
        }
    }

    /// Hand the journal thread every live task as it is now, to rewrite the
    /// journal as. Under the book's lock the tasks are only cloned; the
    /// thread encodes and writes them, and records sent after this one land
    /// in the new journal, in order.
    fn compact(&self, book: &Book) {
        let Some(dir) = &self.dir else { return };
        let mut records = Vec::with_capacity(book.len());
        for kind in book.queues().paused() {
            records.push(Record::Pause {
                kind: kind.clone(),
                paused: true,
            });
        }
        for (scope, limit) in book.limits.all() {
            records.push(Record::Limit {
                scope: scope.clone(),
                limit: Some(*limit),
            });
        }
        // Before the tasks, whose ticks they record again as they load.
        for v in book.schedules.views() {
            records.push(Record::Schedule {
                schedule: Box::new(v.schedule.clone()),
            });
        }
        for e in book.entries.values() {
            records.push(Record::Submit {
                task: Box::new(e.task.clone()),
            });
            if !e.logs.lines.is_empty() {
                records.push(Record::Log {
                    id: e.task.id,
                    lines: e.logs.lines.iter().cloned().collect(),
                });
            }
        }
        // Not due again until this one has landed.
        self.size
            .base
            .store(self.size.now.load(Ordering::Relaxed), Ordering::Relaxed);
        self.runner.compact(Append {
            bytes: Vec::new(),
            ack: None,
            compact: Some((dir.clone(), records)),
        });
    }

    /// Tasks a worker holds now (assigned or running).
    pub fn held_by(&self, worker: &str) -> usize {
        self.lock().takers.get(worker).map_or(0, |t| t.held.len())
    }

    /// Tasks waiting in the queue now.
    pub fn queued(&self) -> usize {
        self.lock().count(State::Queued) as usize
    }

    /// The last hour's task ends, by minute, as of `now_ms`.
    pub fn last_hour(&self, now_ms: u64) -> Vec<book::ends::Minute> {
        self.lock().ends.last_hour(now_ms)
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
        self.runner.close();
        if let Some(s) = &self.store {
            s.close();
        }
    }
}

/// Cluster mode: the book is the database's copy.
impl cluster::Replica for Tasks {
    fn mirror(&self, changes: cluster::Changes) {
        let Some(store) = &self.store else { return };
        let me = store.cluster.me().incarnation;
        let cfg = self.shared.config.get();
        let now = unix_ms();
        let mut book = self.lock();
        let (mut stored, mut fx) = (Effects::default(), Effects::default());
        for (kind, paused) in changes.pauses {
            book.mirror_pause(&kind, paused);
        }
        for (scope, limit) in changes.limits {
            book.limits.set(scope, limit);
        }
        for (name, s) in changes.schedules {
            match s {
                Some(s) => {
                    book.schedules.put(s);
                }
                None => {
                    book.schedules.remove(&name);
                }
            }
        }
        for r in changes.rows {
            if r.deleted {
                let id = r.task.id;
                book.deleted_here.remove(&id);
                if book.entries.contains_key(&id) {
                    book.forget(id);
                    stored.records.push(Record::Forget { id });
                }
                continue;
            }
            let mut task = r.task;
            let asked = task.progress.cancel_requested_at.or(r.cancel_requested_at);
            task.progress.cancel_requested_at = asked;
            match book.entries.get(&task.id) {
                // Held here under this claim: this node's book is ahead of
                // the database, but for a cancel asked on another node.
                Some(e) if r.holder == Some(me) && r.lease != 0 && r.lease == e.lease => {
                    if r.cancel_requested_at.is_some()
                        && e.task.progress.cancel_requested_at.is_none()
                        && e.task.state().is_held()
                    {
                        book.cancel(task.id, now, &mut fx);
                    }
                    continue;
                }
                Some(e) if r.rev <= e.rev => continue,
                Some(_) => {}
                // Deleted here, its deletion not read back yet: a row from
                // before it.
                None if book.deleted_here.contains(&task.id) => continue,
                None => {
                    if !book.make_room(cfg.tasks.max_tasks, &mut stored) {
                        continue;
                    }
                }
            }
            book.mirror(task, r.lease, r.rev, &mut stored);
        }
        for (id, lines) in changes.logs {
            if let Some(e) = book.entries.get_mut(&id) {
                stored.log_dropped += e.logs.push(&lines, cfg.tasks.log_bytes);
            }
        }
        self.runner.apply_stored(&book, stored);
        self.runner.apply(&book, fx, None);
        drop(book);
        self.poke();
    }

    fn ticks_due(&self, now_ms: u64) -> Vec<schedule::Due> {
        self.lock().schedules.due(now_ms)
    }

    fn stored(&self) {
        if !self.lock().takers.is_empty() {
            self.poke();
        }
    }

    fn unstored(&self, ids: Vec<TaskId>) {
        let mut book = self.lock();
        let mut fx = Effects::default();
        for id in ids {
            book.forget(id);
            fx.records.push(Record::Forget { id });
        }
        self.runner.apply_stored(&book, fx);
    }
}

/// A finished task is one of its worker's runs, recorded by its thread.
impl Runs for crate::fleet::registry::Registry {
    fn record(&self, worker: &WorkerId, duration_ms: f64, ok: bool) {
        if let Some(h) = self.handle(worker) {
            h.record_run(duration_ms, ok);
        }
    }
}

/// A worker may take work while the roll call judges it active and it does
/// not report `error`.
impl Eligible for crate::fleet::registry::Registry {
    fn eligible(&self, worker: &str) -> bool {
        self.handle(worker).is_some_and(|h| {
            let s = h.snapshot();
            s.is_active() && s.reported != Some(crate::proto::Reported::Error)
        })
    }
}

/// What a unit test needs to open a task book: links that go nowhere, and
/// every worker eligible.
#[cfg(test)]
pub fn unlinked() -> Links {
    struct Nowhere;
    impl Outbox for Nowhere {
        fn send(&self, _: WorkerId, _: Vec<u8>) {}
    }
    impl Runs for Nowhere {
        fn record(&self, _: &WorkerId, _: f64, _: bool) {}
    }
    impl Eligible for Nowhere {
        fn eligible(&self, _: &str) -> bool {
            true
        }
    }
    Links {
        changed: Arc::new(crate::fleet::notify::Nobody),
        outbox: Arc::new(Nowhere),
        runs: Arc::new(Nowhere),
        eligible: Arc::new(Nowhere),
    }
}
