//! The task book: every task the daemon holds, the queues, the logs, and
//! the workers that take tasks. Pure state and rules: each change returns
//! the journal records and the frames it implies ([`Effects`]), and the
//! effects runner writes and sends them. Only `Tasks` touches a book,
//! under its one lock.
//!
//! Dispatch (`dispatch.rs`) gives the taker with the most room the best
//! task it may take from the heads of the queues it reads
//! ([`super::queue`]), and repeats while room and tasks last.

use super::adopt::{Adoptions, Said};
use super::journal::Record;
pub use super::logs::Logs;
use super::queue::Queues;
use super::task::{Advance, Backoff, Progress, State, Task, TaskId};
use crate::proto::task::{Held, Offer, Reported, TaskLog, TaskProgress, TaskUpdate};
use crate::proto::{Labels, WorkerId};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};

mod copy;
mod dispatch;
pub mod ends;
mod fire;
mod waits;
pub use copy::Wanted;

/// A worker with an open TCP session that takes tasks.
#[derive(Clone, Debug, Default)]
pub struct Taker {
    pub capacity: u32,
    pub types: Option<Vec<String>>,
    pub labels: Labels,
    pub held: BTreeSet<TaskId>,
}

impl Taker {
    fn takes(&self, t: &Task, id: &WorkerId) -> bool {
        self.types.as_ref().is_none_or(|ts| ts.contains(&t.kind))
            && t.target.worker_id.as_ref().is_none_or(|w| w == id)
            && t.target
                .labels
                .iter()
                .all(|(k, v)| self.labels.get(k) == Some(v))
    }

    fn free(&self) -> u32 {
        self.capacity.saturating_sub(self.held.len() as u32)
    }
}

pub struct Entry {
    pub task: Task,
    pub logs: Logs,
    /// About what its journal records take: its payload and fields.
    pub size: u64,
    /// Cluster mode: the token of the claim that holds (or last held) the
    /// task, and the database's count of its changes as last read.
    pub lease: i64,
    pub rev: i64,
    /// When its worker's progress was last written (cluster mode).
    pub progress_written: u64,
}

/// What a task takes in the journal beyond its payload, about.
const RECORD_OVERHEAD: u64 = 512;

/// What a change asks of the effects runner: records for the journal,
/// lines for workers, runs for workers' metrics, counters.
#[derive(Default, Debug)]
pub struct Effects {
    pub records: Vec<Record>,
    /// Changes for `/ws/tasks` alone, never written (a worker's progress
    /// between writes).
    pub unwritten: Vec<Record>,
    pub frames: Vec<(WorkerId, Vec<u8>)>,
    /// Finished runs: worker, duration ms, succeeded.
    pub runs: Vec<(WorkerId, f64, bool)>,
    pub requeued: u64,
    pub lost: u64,
    /// Handler failures scheduled for another attempt.
    pub retried: u64,
    /// Tasks schedules submitted.
    pub submitted: u64,
    pub log_dropped: u64,
}

impl Effects {
    fn progress(&mut self, t: &Task) {
        self.records.push(Record::Progress {
            id: t.id,
            progress: t.progress.clone(),
        });
    }
}

/// Why a worker's `task_update` or `task_log` is refused: it does not
/// hold the task (finished, requeued to another, or never its own).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotHeld;

#[derive(Default)]
pub struct Book {
    pub entries: BTreeMap<TaskId, Entry>,
    queues: Queues,
    /// Finished tasks by when they finished: retention and room, without
    /// a walk over every task.
    finished: BTreeSet<(u64, TaskId)>,
    /// Dead tasks by when they died: kept `dead_retention`, apart from the
    /// other finished ones (kept `task_retention`, and the first to go
    /// when the book is full).
    dead: BTreeSet<(u64, TaskId)>,
    /// Scheduled tasks by when they are due.
    scheduled: BTreeSet<(u64, TaskId)>,
    /// The backoff of tasks whose submission set none (configured).
    pub backoff: Backoff,
    pub takers: HashMap<WorkerId, Taker>,
    by_state: [u64; State::ALL.len()],
    last_id: u64,
    /// About what the live tasks take in a compacted journal.
    pub live_bytes: u64,
    /// Tasks re-reported by workers that said hello again.
    pub adoptions: Adoptions,
    /// Tasks by their submission's `Idempotency-Key` (the first of each).
    idempotent: HashMap<String, TaskId>,
    /// Tasks not ended, by their `unique_key`.
    unique: HashMap<String, TaskId>,
    /// Tasks whose last progress waits to be written (cluster mode).
    progress_due: std::collections::BTreeSet<TaskId>,
    /// The tasks that name each task in their `depends_on`.
    dependents: HashMap<TaskId, Vec<TaskId>>,
    /// Waiting tasks to look at again: one of their dependencies ended.
    unsettled: BTreeSet<TaskId>,
    pub schedules: super::schedule::Schedules,
    pub limits: super::limit::Limits,
    /// The last hour's ends, by minute.
    pub ends: ends::Ends,
    /// When [`Book::deadlines`] last walked the held tasks.
    held_walked_at: u64,
    /// A single node after a restart: the tasks held when it stopped,
    /// kept their workers' until the workers say hello again and
    /// re-report them, or until the given time.
    orphans: BTreeSet<TaskId>,
    orphans_until: u64,
    /// Cluster mode: tasks this node deleted whose deletion the mirror has
    /// not read back yet, so that a row it read from before does not put
    /// them back.
    pub deleted_here: std::collections::HashSet<TaskId>,
}

/// How often the deadlines walk the held tasks (assignments not
/// acknowledged, timeouts, cancels unconfirmed): a turn of the scheduler
/// comes with every finish, and the walk is O(tasks held), so under a
/// stream of finishes it is not redone each turn. Those deadlines are met
/// this much late at most.
const HELD_WALK_EVERY_MS: u64 = 20;

impl Book {
    /// A new id: sortable by submission time, unique within this book.
    pub fn next_id(&mut self, now_ms: u64) -> TaskId {
        self.last_id = (now_ms << 20).max(self.last_id + 1);
        TaskId(self.last_id)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Tasks in a state now.
    pub fn count(&self, s: State) -> u64 {
        self.by_state[s as usize]
    }

    fn recount(&mut self, s: State, delta: i64) {
        let c = &mut self.by_state[s as usize];
        *c = c.saturating_add_signed(delta);
    }

    fn enqueue(&mut self, t: &Task) {
        self.queues.insert(t);
    }

    fn dequeue(&mut self, t: &Task) {
        self.queues.remove(t);
    }

    /// The time-ordered set a task in `p`'s state belongs to, and its key.
    fn timeline(&mut self, p: Timed) -> Option<(&mut BTreeSet<(u64, TaskId)>, u64)> {
        match p.0 {
            State::Dead => Some((&mut self.dead, p.1.unwrap_or(0))),
            State::Scheduled => Some((&mut self.scheduled, p.2.unwrap_or(0))),
            s if s.is_final() => Some((&mut self.finished, p.1.unwrap_or(0))),
            _ => None,
        }
    }

    fn index(&mut self, p: Timed, id: TaskId) {
        if let Some((set, at)) = self.timeline(p) {
            set.insert((at, id));
        }
    }

    fn unindex(&mut self, p: Timed, id: TaskId) {
        if let Some((set, at)) = self.timeline(p) {
            set.remove(&(at, id));
        }
    }

    fn set_state(&mut self, id: TaskId, p: impl FnOnce(&mut Progress)) -> Option<Task> {
        let e = self.entries.get_mut(&id)?;
        let was = timed(&e.task.progress);
        p(&mut e.task.progress);
        let task = e.task.clone();
        let (before, after) = (was.0, task.progress.state);
        self.unindex(was, id);
        self.index(timed(&task.progress), id);
        if after.is_final() && !before.is_final() {
            self.ended(id);
            self.ends.add(after, task.progress.finished_at.unwrap_or(0));
        }
        if before.is_held() != after.is_held() {
            self.limits
                .held(&task, if after.is_held() { 1 } else { -1 });
        }
        if before.is_final() != after.is_final() {
            if let Some(k) = &task.unique_key {
                if !after.is_final() {
                    self.unique.entry(k.clone()).or_insert(id);
                } else if self.unique.get(k) == Some(&id) {
                    self.unique.remove(k);
                }
            }
        }
        if before != after {
            self.recount(before, -1);
            self.recount(after, 1);
            if after == State::Queued {
                self.enqueue(&task);
            } else if before == State::Queued {
                self.dequeue(&task);
            }
        }
        Some(task)
    }

    /// Add a task (a submission, or one replayed from the journal).
    pub fn insert(&mut self, task: Task) {
        self.last_id = self.last_id.max(task.id.0);
        let s = task.state();
        self.recount(s, 1);
        if s.is_final() {
            self.ends.add(s, task.progress.finished_at.unwrap_or(0));
        }
        if s.is_held() {
            self.limits.held(&task, 1);
        }
        if s == State::Queued {
            self.enqueue(&task);
        }
        self.index(timed(&task.progress), task.id);
        // The newest task with a key answers for it: an older one is past
        // idempotency_retention, or was not stored.
        if let Some(k) = &task.idempotency_key
            && self.idempotent.get(k).is_none_or(|old| *old < task.id)
        {
            self.idempotent.insert(k.clone(), task.id);
        }
        if let Some(k) = &task.unique_key
            && !s.is_final()
        {
            self.unique.entry(k.clone()).or_insert(task.id);
        }
        self.depend(&task);
        if let Some(f) = &task.schedule {
            self.schedules.note_fired(f, task.id);
        }
        let size =
            RECORD_OVERHEAD + serde_json::to_string(&task.payload).map_or(0, |p| p.len() as u64);
        self.live_bytes += size;
        self.entries.insert(
            task.id,
            Entry {
                task,
                logs: Logs::default(),
                size,
                lease: 0,
                rev: 0,
                progress_written: 0,
            },
        );
    }

    pub fn forget(&mut self, id: TaskId) {
        let Some(e) = self.entries.remove(&id) else {
            return;
        };
        self.live_bytes = self.live_bytes.saturating_sub(e.size + e.logs.bytes as u64);
        self.recount(e.task.state(), -1);
        if e.task.state().is_held() {
            self.limits.held(&e.task, -1);
        }
        if e.task.state() == State::Queued {
            self.dequeue(&e.task);
        }
        self.unindex(timed(&e.task.progress), id);
        if let Some(w) = &e.task.progress.worker_id {
            if let Some(t) = self.takers.get_mut(w) {
                t.held.remove(&id);
            }
        }
        self.undepend(&e.task);
        for (keys, k) in [
            (&mut self.idempotent, &e.task.idempotency_key),
            (&mut self.unique, &e.task.unique_key),
        ] {
            if let Some(k) = k
                && keys.get(k) == Some(&id)
            {
                keys.remove(k);
            }
        }
    }

    /// The task a submission with Idempotency-Key `key` repeats: the first
    /// with that key, if it was submitted less than `keep_ms` ago.
    pub fn repeat_of(&self, key: &str, now_ms: u64, keep_ms: u64) -> Option<&Task> {
        let id = self.idempotent.get(key)?;
        let t = &self.entries.get(id)?.task;
        (now_ms.saturating_sub(t.created_at) < keep_ms).then_some(t)
    }

    /// The task not ended that holds `unique_key`.
    pub fn unique_holder(&self, key: &str) -> Option<TaskId> {
        self.unique.get(key).copied()
    }

    /// Apply a replayed record.
    pub fn replay(&mut self, r: Record, log_cap: usize) {
        match r {
            Record::Submit { task } => self.insert(*task),
            Record::Progress { id, progress } => {
                self.set_state(id, |p| *p = progress);
            }
            Record::Log { id, lines } => {
                if let Some(e) = self.entries.get_mut(&id) {
                    e.logs.push(&lines, log_cap);
                }
            }
            Record::Forget { id } => self.forget(id),
            Record::Pause { kind, paused } => {
                self.queues.pause(&kind, paused);
            }
            Record::Schedule { schedule } => {
                self.schedules.put(*schedule);
            }
            Record::Unschedule { name } => {
                self.schedules.remove(&name);
            }
            Record::Limit { scope, limit } => self.limits.set(scope, limit),
        }
    }

    /// `POST /api/queues/{type}/pause|resume`: nothing of `kind` is
    /// dispatched while it is paused; what runs goes on. Whether that
    /// changed anything (a change is recorded).
    pub fn pause(&mut self, kind: &str, paused: bool, fx: &mut Effects) -> bool {
        let changed = self.queues.pause(kind, paused);
        if changed {
            log::info!("queue {kind} {}", if paused { "paused" } else { "resumed" });
            fx.records.push(Record::Pause {
                kind: kind.to_string(),
                paused,
            });
        }
        changed
    }

    /// Cluster mode: a pause as the database has it (recorded there).
    pub fn mirror_pause(&mut self, kind: &str, paused: bool) {
        self.queues.pause(kind, paused);
    }

    pub fn queues(&self) -> &Queues {
        &self.queues
    }

    /// After a restart no worker session survives, but the workers may
    /// still run their tasks and come back: each held task stays its
    /// worker's (a taker of no capacity until its hello) until `until`,
    /// for its worker to re-report it ([`Book::reported`]); then it is
    /// requeued as a lost worker's ([`Book::deadlines`]).
    pub fn hold_for_return(&mut self, until: u64, now_ms: u64, fx: &mut Effects) {
        let held: Vec<(TaskId, Option<WorkerId>)> = self
            .entries
            .values()
            .filter(|e| e.task.state().is_held())
            .map(|e| (e.task.id, e.task.progress.worker_id.clone()))
            .collect();
        for (id, worker) in held {
            let Some(w) = worker else {
                self.requeue(id, "the daemon restarted", now_ms, fx);
                continue;
            };
            self.takers.entry(w).or_default().held.insert(id);
            self.orphans.insert(id);
        }
        self.orphans_until = until;
    }

    /// Requeue the tasks held at the restart that no worker re-reported
    /// in time.
    fn requeue_orphans(&mut self, now_ms: u64, fx: &mut Effects) {
        if self.orphans.is_empty() || now_ms < self.orphans_until {
            return;
        }
        for id in std::mem::take(&mut self.orphans) {
            self.requeue(
                id,
                "its worker did not come back after the restart",
                now_ms,
                fx,
            );
        }
        // The stand-ins of workers that never said hello again.
        self.takers
            .retain(|_, t| t.capacity > 0 || !t.held.is_empty());
    }

    /// A held task goes back to the queue with one more attempt, or fails
    /// when its attempts are spent.
    pub fn requeue(&mut self, id: TaskId, why: &str, now_ms: u64, fx: &mut Effects) {
        self.orphans.remove(&id);
        let Some(e) = self.entries.get(&id) else {
            return;
        };
        if !e.task.state().is_held() {
            return;
        }
        if let Some(w) = e.task.progress.worker_id.clone() {
            if let Some(t) = self.takers.get_mut(&w) {
                t.held.remove(&id);
            }
        }
        let max = e.task.max_attempts;
        let mut spent = false;
        let task = self.set_state(id, |p| spent = requeued(p, max, now_ms));
        if let Some(t) = task {
            log::info!(
                "task {id} {} ({why}; attempt {} of {})",
                if spent {
                    "dead: worker lost"
                } else {
                    "requeued"
                },
                t.progress.attempt,
                t.max_attempts
            );
            fx.progress(&t);
            if spent {
                fx.lost += 1;
            } else {
                fx.requeued += 1;
            }
        }
    }

    /// A worker's session said hello with `capacity`; 0 takes nothing.
    /// Tasks it held from an earlier session are its still.
    pub fn on_hello(
        &mut self,
        id: &WorkerId,
        capacity: u32,
        types: Option<Vec<String>>,
        labels: Labels,
    ) {
        let held = self.takers.remove(id).map(|t| t.held).unwrap_or_default();
        if capacity == 0 && held.is_empty() {
            return;
        }
        self.takers.insert(
            id.clone(),
            Taker {
                capacity,
                types,
                labels,
                held,
            },
        );
    }

    /// The worker is gone (its session closed, it said bye, went inactive
    /// or was forgotten): its tasks are requeued.
    pub fn on_lost(&mut self, id: &str, why: &str, now_ms: u64, fx: &mut Effects) {
        self.adoptions.forget_worker(id);
        let held: Vec<TaskId> = match self.takers.remove(id) {
            Some(t) => t.held.into_iter().collect(),
            None => Vec::new(),
        };
        for t in held {
            self.requeue(t, why, now_ms, fx);
        }
    }

    /// The task `id` names, if `worker` holds it now: through this
    /// book's own session with it (a task another node's session holds is
    /// not this session's, whatever the worker's name).
    fn held_by(&self, worker: &str, id: &str) -> Result<TaskId, NotHeld> {
        let id = TaskId::parse(id).ok_or(NotHeld)?;
        let e = self.entries.get(&id).ok_or(NotHeld)?;
        let held = e.task.state().is_held()
            && e.task.progress.worker_id.as_deref() == Some(worker)
            && self
                .takers
                .get(worker)
                .is_some_and(|t| t.held.contains(&id));
        held.then_some(id).ok_or(NotHeld)
    }

    /// A `task_update` from `worker`.
    pub fn on_update(
        &mut self,
        worker: &WorkerId,
        u: TaskUpdate,
        now_ms: u64,
        fx: &mut Effects,
    ) -> Result<(), NotHeld> {
        if let Some(id) = TaskId::parse(&u.task_id)
            && self.adoptions.waits(worker, id)
        {
            self.adoptions.keep(id, Said::Update(u));
            return Ok(());
        }
        let id = self.held_by(worker, &u.task_id)?;
        let cancelling = self.entries[&id]
            .task
            .progress
            .cancel_requested_at
            .is_some();
        let finished = !matches!(u.state, Reported::Running);
        let e = &self.entries[&id].task;
        let retry_at = match u.state {
            Reported::Failed if !cancelling && u.retryable != Some(false) => {
                (e.progress.attempt < e.max_attempts).then(|| {
                    let b = e.retry.unwrap_or(self.backoff);
                    now_ms + super::task::backoff_ms(b, id, e.progress.attempt + 1)
                })
            }
            _ => None,
        };
        let spent = matches!(u.state, Reported::Failed)
            && !cancelling
            && u.retryable != Some(false)
            && retry_at.is_none();
        let task = self.set_state(id, |p| {
            match u.state {
                Reported::Running => {
                    p.state = State::Running;
                    p.started_at.get_or_insert(now_ms);
                }
                Reported::Succeeded => p.state = State::Succeeded,
                Reported::Failed if cancelling => p.state = State::Cancelled,
                Reported::Failed if retry_at.is_some() => p.state = State::Scheduled,
                Reported::Failed if spent => p.state = State::Dead,
                Reported::Failed => p.state = State::Failed,
                Reported::Cancelled => p.state = State::Cancelled,
            }
            if finished {
                p.finished_at = Some(now_ms);
                p.result = u.result;
                p.error = u.error;
                p.exit_code = u.exit_code;
            }
            if let Some(at) = retry_at {
                p.finished_at = None;
                p.run_at = Some(at);
                p.attempt += 1;
            }
        });
        let Some(t) = task else { return Ok(()) };
        fx.progress(&t);
        if let Some(at) = retry_at {
            fx.retried += 1;
            log::info!(
                "task {id} failed; attempt {} of {} in {} ms",
                t.progress.attempt,
                t.max_attempts,
                at - now_ms
            );
        }
        if finished {
            if let Some(tk) = self.takers.get_mut(worker) {
                tk.held.remove(&t.id);
            }
            if matches!(u.state, Reported::Succeeded | Reported::Failed) && !cancelling {
                let began = t
                    .progress
                    .started_at
                    .or(t.progress.assigned_at)
                    .unwrap_or(now_ms);
                let ms = now_ms.saturating_sub(began) as f64;
                fx.runs
                    .push((worker.clone(), ms, t.state() == State::Succeeded));
            }
        }
        Ok(())
    }

    /// A `task_log` from `worker`.
    pub fn on_log(
        &mut self,
        worker: &str,
        l: TaskLog,
        cap: usize,
        fx: &mut Effects,
    ) -> Result<(), NotHeld> {
        if let Some(id) = TaskId::parse(&l.task_id)
            && self.adoptions.waits(worker, id)
        {
            self.adoptions.keep(id, Said::Log(l));
            return Ok(());
        }
        let id = self.held_by(worker, &l.task_id)?;
        if let Some(e) = self.entries.get_mut(&id) {
            let before = e.logs.bytes;
            fx.log_dropped += e.logs.push(&l.lines, cap);
            self.live_bytes = (self.live_bytes + e.logs.bytes as u64).saturating_sub(before as u64);
        }
        fx.records.push(Record::Log { id, lines: l.lines });
        Ok(())
    }

    /// A `task_progress` from `worker`: kept and shown. `write_every`:
    /// how often it may also be written (cluster mode, so that every
    /// node shows it); `None` never alone (the journal: a running task
    /// starts again after a restart anyway).
    pub fn on_progress(
        &mut self,
        worker: &str,
        p: TaskProgress,
        now_ms: u64,
        write_every: Option<u64>,
        fx: &mut Effects,
    ) -> Result<(), NotHeld> {
        if let Some(id) = TaskId::parse(&p.task_id)
            && self.adoptions.waits(worker, id)
        {
            // The next one will do.
            return Ok(());
        }
        let id = self.held_by(worker, &p.task_id)?;
        let advance = Advance {
            fraction: p.fraction,
            message: p.message,
            at: now_ms,
        };
        let Some(e) = self.entries.get_mut(&id) else {
            return Err(NotHeld);
        };
        e.task.progress.advance = Some(Box::new(advance));
        let record = Record::Progress {
            id,
            progress: e.task.progress.clone(),
        };
        match write_every {
            Some(every) if now_ms.saturating_sub(e.progress_written) >= every => {
                e.progress_written = now_ms;
                fx.records.push(record);
            }
            Some(_) => {
                self.progress_due.insert(id);
                fx.unwritten.push(record);
            }
            None => fx.unwritten.push(record),
        }
        Ok(())
    }

    /// Cluster mode: write the progress [`Book::on_progress`] held back,
    /// once `every` has passed since the last write of each.
    pub fn progress_due(&mut self, now_ms: u64, every: u64, fx: &mut Effects) {
        let mut later = std::collections::BTreeSet::new();
        for id in std::mem::take(&mut self.progress_due) {
            let Some(e) = self.entries.get_mut(&id) else {
                continue;
            };
            if !e.task.state().is_held() {
                continue;
            }
            if now_ms.saturating_sub(e.progress_written) < every {
                later.insert(id);
                continue;
            }
            e.progress_written = now_ms;
            fx.records.push(Record::Progress {
                id,
                progress: e.task.progress.clone(),
            });
        }
        self.progress_due = later;
    }

    /// Cancel: a queued task at once; a held one is asked to stop.
    /// `None` when there is no such task.
    pub fn cancel(&mut self, id: TaskId, now_ms: u64, fx: &mut Effects) -> Option<Task> {
        let e = self.entries.get(&id)?;
        match e.task.state() {
            State::Queued | State::Scheduled | State::Waiting => {
                let t = self.set_state(id, |p| {
                    p.state = State::Cancelled;
                    p.finished_at = Some(now_ms);
                })?;
                fx.progress(&t);
                Some(t)
            }
            State::Assigned | State::Running if e.task.progress.cancel_requested_at.is_none() => {
                let worker = e.task.progress.worker_id.clone();
                let t = self.set_state(id, |p| p.cancel_requested_at = Some(now_ms))?;
                fx.progress(&t);
                if let Some(w) = worker {
                    fx.frames
                        .push((w, crate::proto::encode_cancel(&id.to_string())));
                }
                Some(t)
            }
            _ => Some(e.task.clone()),
        }
    }

    /// `POST /api/tasks/{id}/retry`: a task that ended otherwise than in
    /// success starts a fresh cycle (attempt 1, queued). `None` when there
    /// is no such task, `Err` with the task when it has not ended so.
    pub fn retry(
        &mut self,
        id: TaskId,
        now_ms: u64,
        fx: &mut Effects,
    ) -> Option<Result<Task, Task>> {
        let e = self.entries.get(&id)?;
        let taken = |k: &String| self.unique.get(k).is_some_and(|h| *h != id);
        if !e.task.state().is_retryable_end() || e.task.unique_key.as_ref().is_some_and(taken) {
            return Some(Err(e.task.clone()));
        }
        let waits = !e.task.depends_on.is_empty();
        let t = self.set_state(id, |p| {
            *p = Progress::fresh(now_ms, None);
            if waits {
                p.state = State::Waiting;
            }
        })?;
        if let Some(e) = self.entries.get_mut(&id) {
            e.lease = 0;
        }
        if waits {
            self.unsettled.insert(id);
        }
        fx.progress(&t);
        Some(Ok(t))
    }

    /// When the earliest scheduled task is due, if any is.
    pub fn next_due(&self) -> Option<u64> {
        self.scheduled.first().map(|(at, _)| *at)
    }

    /// When the scheduler must look next: a scheduled task or a
    /// schedule's tick.
    pub fn next_wake(&self) -> Option<u64> {
        match (self.next_due(), self.schedules.next_due()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Nothing for a single node's scheduler to do but at [`next_wake`]
    /// or when poked: no task queued, held, waiting on another or left
    /// to settle.
    ///
    /// [`next_wake`]: Book::next_wake
    pub fn at_rest(&self) -> bool {
        [
            State::Queued,
            State::Assigned,
            State::Running,
            State::Waiting,
        ]
        .iter()
        .all(|s| self.count(*s) == 0)
            && self.orphans.is_empty()
            && self.unsettled.is_empty()
    }

    /// End a held task without its worker: timed out, or not confirmed
    /// cancelled within the grace.
    fn end_held(&mut self, id: TaskId, state: State, error: &str, now_ms: u64, fx: &mut Effects) {
        let Some(worker) = self
            .entries
            .get(&id)
            .and_then(|e| e.task.progress.worker_id.clone())
        else {
            return;
        };
        if let Some(tk) = self.takers.get_mut(&worker) {
            tk.held.remove(&id);
        }
        if let Some(t) = self.set_state(id, |p| {
            p.state = state;
            p.finished_at = Some(now_ms);
            p.error = Some(error.into());
        }) {
            fx.progress(&t);
        }
    }

    /// Deadlines: unacknowledged assignments, task timeouts, cancel grace
    /// (O(tasks held), at most every [`HELD_WALK_EVERY_MS`]), scheduled
    /// tasks come due and finished tasks past retention (O(those)).
    pub fn deadlines(&mut self, now_ms: u64, limits: &Limits, fx: &mut Effects) {
        self.requeue_orphans(now_ms, fx);
        let mut requeue = Vec::new();
        let mut timed_out = Vec::new();
        let mut unconfirmed = Vec::new();
        let walk = now_ms >= self.held_walked_at.saturating_add(HELD_WALK_EVERY_MS)
            || now_ms < self.held_walked_at;
        if walk {
            self.held_walked_at = now_ms;
        }
        // Only held tasks have deadlines: every one is in its taker's set.
        let held = self
            .takers
            .values()
            .filter(|_| walk)
            .flat_map(|t| t.held.iter());
        for e in held.filter_map(|id| self.entries.get(id)) {
            let p = &e.task.progress;
            let since = |t: Option<u64>| now_ms.saturating_sub(t.unwrap_or(now_ms));
            if p.state.is_held() && p.cancel_requested_at.is_some() {
                if since(p.cancel_requested_at) >= limits.cancel_grace_ms {
                    unconfirmed.push(e.task.id);
                }
                continue;
            }
            match p.state {
                State::Assigned if since(p.assigned_at) >= limits.ack_timeout_ms => {
                    requeue.push(e.task.id);
                }
                State::Running if e.task.timeout_ms.is_some_and(|t| since(p.started_at) >= t) => {
                    timed_out.push((e.task.id, p.worker_id.clone()));
                }
                _ => {}
            }
        }
        let past = |set: &BTreeSet<(u64, TaskId)>, keep: u64| -> Vec<TaskId> {
            set.iter()
                .take_while(|(at, _)| now_ms.saturating_sub(*at) >= keep)
                .map(|(_, id)| *id)
                .filter(|id| !self.pinned(*id))
                .collect()
        };
        let mut expired = past(&self.finished, limits.retention_ms);
        expired.extend(past(&self.dead, limits.dead_retention_ms));
        if limits.promote {
            let due: Vec<TaskId> = self
                .scheduled
                .iter()
                .take_while(|(at, _)| *at <= now_ms)
                .map(|(_, id)| *id)
                .collect();
            for id in due {
                if let Some(t) = self.set_state(id, |p| due_now(p, now_ms)) {
                    fx.progress(&t);
                }
            }
        }
        for id in requeue {
            self.requeue(id, "not acknowledged in time", now_ms, fx);
        }
        for (id, worker) in timed_out {
            if let Some(w) = worker {
                fx.frames
                    .push((w, crate::proto::encode_cancel(&id.to_string())));
            }
            self.end_held(id, State::TimedOut, "timed out", now_ms, fx);
        }
        for id in unconfirmed {
            self.end_held(
                id,
                State::Cancelled,
                "cancelled; the worker did not confirm",
                now_ms,
                fx,
            );
        }
        for id in expired {
            self.forget(id);
            fx.records.push(Record::Forget { id });
        }
    }

    /// Room for one more task: forget the oldest finished ones when full.
    /// False when every kept task is unfinished.
    pub fn make_room(&mut self, max: usize, fx: &mut Effects) -> bool {
        while self.entries.len() >= max {
            let oldest = self.finished.iter().map(|(_, id)| *id);
            let Some(id) = oldest.clone().find(|id| !self.pinned(*id)) else {
                return false;
            };
            self.forget(id);
            fx.records.push(Record::Forget { id });
        }
        true
    }
}

/// What places a task in the book's time-ordered sets: its state, when it
/// finished, when it is due.
type Timed = (State, Option<u64>, Option<u64>);

fn timed(p: &Progress) -> Timed {
    (p.state, p.finished_at, p.run_at)
}

/// A scheduled task come due: queued, as every mode makes it.
pub fn due_now(p: &mut Progress, now_ms: u64) {
    p.state = State::Queued;
    p.queued_at = Some(now_ms);
}

/// Assignment to `worker`, as every mode makes it.
pub fn assigned(p: &mut Progress, worker: &WorkerId, now_ms: u64) {
    p.state = State::Assigned;
    p.worker_id = Some(worker.clone());
    p.assigned_at = Some(now_ms);
    p.cancel_requested_at = None;
    p.advance = None;
}

/// A held task whose worker (or whose node) is lost: back to the queue
/// with one more attempt, or failed once its attempts are spent. Whether
/// they were.
pub fn requeued(p: &mut Progress, max_attempts: u32, now_ms: u64) -> bool {
    let spent = p.attempt >= max_attempts;
    if spent {
        p.state = State::Dead;
        p.finished_at = Some(now_ms);
        p.error = Some("worker lost".into());
    } else {
        p.state = State::Queued;
        p.attempt += 1;
        p.queued_at = Some(now_ms);
        p.assigned_at = None;
        p.started_at = None;
    }
    spent
}

/// The `task` frame that offers `t` to its worker.
fn offer(t: &Task, lease: i64) -> Vec<u8> {
    crate::proto::encode_task(Offer {
        task_id: t.id.to_string(),
        task_type: t.kind.clone(),
        payload: t.payload.clone(),
        attempt: t.progress.attempt,
        timeout_ms: t.timeout_ms,
        lease: (lease > 0).then_some(lease as u64),
        traceparent: t.trace.as_ref().map(|x| x.traceparent.clone()),
        tracestate: t.trace.as_ref().and_then(|x| x.tracestate.clone()),
    })
}

/// The settings deadlines are judged by.
pub struct Limits {
    pub ack_timeout_ms: u64,
    pub cancel_grace_ms: u64,
    pub retention_ms: u64,
    pub dead_retention_ms: u64,
    /// Whether this book queues its scheduled tasks when due: a single
    /// node does; in cluster mode the leader does it in the database.
    pub promote: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::task::parse_submit;

    fn submit(b: &mut Book, body: &str) -> TaskId {
        let id = b.next_id(1000);
        b.insert(parse_submit(body.as_bytes(), id, 1000).unwrap());
        id
    }

    fn book_with(n: usize) -> Book {
        let mut b = Book::default();
        for i in 0..n {
            submit(&mut b, &format!(r#"{{"type":"t","priority":{}}}"#, i % 2));
        }
        b
    }

    fn limits() -> Limits {
        Limits {
            ack_timeout_ms: 100,
            cancel_grace_ms: 100,
            retention_ms: 1000,
            dead_retention_ms: 5000,
            promote: true,
        }
    }

    fn offered(b: &Book, fx: &Effects) -> Vec<(String, TaskId)> {
        fx.frames
            .iter()
            .map(|(w, l)| {
                let r: crate::proto::Reply = crate::proto::decode_reply(l).unwrap();
                let crate::proto::Reply::Task(o) = r else {
                    panic!()
                };
                let id = TaskId::parse(&o.task_id).unwrap();
                assert!(b.entries.contains_key(&id));
                (w.to_string(), id)
            })
            .collect()
    }

    #[test]
    fn dispatch_by_priority_to_the_freest_worker() {
        let mut b = book_with(4);
        let (w1, w2) = (WorkerId::from("w1"), WorkerId::from("w2"));
        b.on_hello(&w1, 1, None, Labels::new());
        b.on_hello(&w2, 2, None, Labels::new());
        let mut fx = Effects::default();
        b.dispatch(2000, |_| true, &mut fx);
        assert_eq!(fx.frames.len(), 3, "capacity 3 in all");
        assert_eq!(b.takers["w2"].held.len(), 2);
        assert_eq!(b.takers["w1"].held.len(), 1);
        // The two priority-1 tasks went first.
        let sent: Vec<i64> = offered(&b, &fx)
            .iter()
            .map(|(_, id)| b.entries[id].task.priority)
            .collect();
        assert_eq!(&sent[..2], &[1, 1]);
        assert_eq!(b.count(State::Queued), 1);
    }

    /// A restarted single node keeps each held task its worker's until
    /// the worker re-reports it in its hello, requeues one the worker
    /// came back without, and requeues the rest once the grace is over.
    #[test]
    fn tasks_held_at_a_restart_wait_for_their_workers_to_come_back() {
        let mut b = book_with(4);
        let (w1, w2) = (WorkerId::from("w1"), WorkerId::from("w2"));
        b.on_hello(&w1, 2, None, Labels::new());
        b.on_hello(&w2, 2, None, Labels::new());
        let mut fx = Effects::default();
        b.dispatch(0, |_| true, &mut fx);
        let sent = offered(&b, &fx);
        let of = |w: &str| -> Vec<TaskId> {
            sent.iter()
                .filter(|(x, _)| x == w)
                .map(|(_, id)| *id)
                .collect()
        };
        let (mine, theirs) = (of("w1"), of("w2"));
        assert_eq!((mine.len(), theirs.len()), (2, 2));
        // The restart: no sessions, the tasks as the journal had them.
        b.takers.clear();
        let mut fx = Effects::default();
        b.hold_for_return(10_000, 1_000, &mut fx);
        assert_eq!(b.count(State::Assigned), 4, "nothing requeued at once");
        // w1 comes back with one of its two.
        let held = |id: &TaskId| Held {
            task_id: id.to_string(),
            lease: 0,
        };
        b.on_hello(&w1, 2, None, Labels::new());
        b.reported(&w1, &[held(&mine[0])], false, 2_000, &mut fx);
        // Said back with a lease (0: a single node's), not cancelled.
        let said: Vec<String> = fx
            .frames
            .iter()
            .map(|(_, l)| String::from_utf8_lossy(l).into_owned())
            .collect();
        assert_eq!(said.len(), 1, "{said:?}");
        assert!(
            said[0].contains("\"lease\"") && said[0].contains(&mine[0].to_string()),
            "{said:?}"
        );
        assert_eq!(b.entries[&mine[0]].task.state(), State::Assigned);
        assert_eq!(
            b.entries[&mine[1]].task.state(),
            State::Queued,
            "came back without it"
        );
        assert_eq!(b.entries[&mine[1]].task.progress.attempt, 2);
        // w2 never comes back: its tasks wait out the grace, then go back
        // (an acknowledgement is not what they wait for here).
        let lim = Limits {
            ack_timeout_ms: 60_000,
            ..limits()
        };
        b.deadlines(9_999, &lim, &mut fx);
        assert_eq!(b.entries[&theirs[0]].task.state(), State::Assigned);
        b.deadlines(10_000, &lim, &mut fx);
        for id in &theirs {
            assert_eq!(b.entries[id].task.state(), State::Queued);
        }
        assert!(!b.takers.contains_key("w2"), "its stand-in is gone");
        assert_eq!(
            b.entries[&mine[0]].task.state(),
            State::Assigned,
            "kept: re-reported"
        );
    }

    /// A finish straight from `assigned` (no `running` first) ends the
    /// task, and the worker's next task goes to it alone, at once.
    #[test]
    fn a_finish_frees_room_that_dispatch_to_fills_for_that_worker_alone() {
        let mut b = book_with(3);
        let (w1, w2) = (WorkerId::from("w1"), WorkerId::from("w2"));
        b.on_hello(&w1, 1, None, Labels::new());
        let mut fx = Effects::default();
        b.dispatch(0, |_| true, &mut fx);
        let (_, first) = offered(&b, &fx)[0].clone();
        b.on_hello(&w2, 1, None, Labels::new());
        let done = TaskUpdate {
            task_id: first.to_string(),
            state: Reported::Succeeded,
            result: None,
            error: None,
            exit_code: None,
            retryable: None,
        };
        let mut fx = Effects::default();
        b.on_update(&w1, done, 5, &mut fx).unwrap();
        assert_eq!(b.entries[&first].task.state(), State::Succeeded);
        assert_eq!(b.entries[&first].task.progress.started_at, None);
        // Not eligible: nothing.
        b.dispatch_to(&w1, 5, |_| false, &mut fx);
        assert!(offered(&b, &fx).is_empty());
        b.dispatch_to(&w1, 5, |_| true, &mut fx);
        let sent = offered(&b, &fx);
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert_eq!(sent[0].0, "w1", "w2 has room too, but waits for the turn");
        assert_eq!(b.takers["w2"].held.len(), 0);
        // Full again: a second call sends nothing.
        b.dispatch_to(&w1, 5, |_| true, &mut fx);
        assert_eq!(offered(&b, &fx).len(), 1);
    }

    #[test]
    fn dispatch_reads_the_queues_a_worker_takes_and_the_tasks_aimed_at_it() {
        let mut b = Book::default();
        let scan = submit(&mut b, r#"{"type":"scan"}"#);
        let resize = submit(&mut b, r#"{"type":"resize","priority":5}"#);
        let mine = submit(&mut b, r#"{"type":"scan","worker_id":"w2"}"#);
        let gpu = submit(&mut b, r#"{"type":"scan","labels":{"gpu":"yes"}}"#);
        let w1 = WorkerId::from("w1");
        let w2 = WorkerId::from("w2");
        b.on_hello(&w1, 4, Some(vec!["scan".into()]), Labels::new());
        let mut fx = Effects::default();
        b.dispatch(0, |_| true, &mut fx);
        assert_eq!(
            offered(&b, &fx),
            [("w1".into(), scan)],
            "not resize, not w2's, not gpu"
        );
        let gpu_labels = Labels::from([("gpu".to_string(), "yes".to_string())]);
        b.on_hello(&w2, 4, None, gpu_labels);
        let mut fx = Effects::default();
        b.dispatch(0, |_| true, &mut fx);
        let got: Vec<TaskId> = offered(&b, &fx).into_iter().map(|(_, id)| id).collect();
        assert_eq!(got, [resize, mine, gpu], "priority, then age");
        assert_eq!(b.count(State::Queued), 0);
        assert!(b.queues.is_empty(), "empty queues are let go");
        // An ineligible worker (in error, inactive) is given nothing.
        let later = submit(&mut b, r#"{"type":"scan"}"#);
        let mut fx = Effects::default();
        b.dispatch(0, |_| false, &mut fx);
        assert!(fx.frames.is_empty());
        assert_eq!(b.entries[&later].task.state(), State::Queued);
    }

    #[test]
    fn a_lost_worker_requeues_then_kills_its_tasks() {
        let mut b = book_with(1);
        let w = WorkerId::from("w1");
        let id = *b.entries.keys().next().unwrap();
        for attempt in 1..=3 {
            b.on_hello(&w, 1, None, Labels::new());
            let mut fx = Effects::default();
            b.dispatch(0, |_| true, &mut fx);
            assert_eq!(b.entries[&id].task.progress.attempt, attempt);
            b.on_lost("w1", "test", 5, &mut fx);
        }
        let t = &b.entries[&id].task;
        assert_eq!(
            (t.state(), t.progress.error.as_deref()),
            (State::Dead, Some("worker lost"))
        );
    }

    /// A worker's report that task `id` failed (exit code 1).
    fn failed(id: TaskId, retryable: Option<bool>) -> TaskUpdate {
        TaskUpdate {
            task_id: id.to_string(),
            state: Reported::Failed,
            result: None,
            error: Some("boom".into()),
            exit_code: Some(1),
            retryable,
        }
    }

    #[test]
    fn the_book_rests_only_with_nothing_queued_held_or_waiting() {
        let mut b = Book::default();
        assert!(b.at_rest(), "an empty book");
        let id = submit(
            &mut b,
            r#"{"type":"t","retry":{"max_attempts":2,"backoff_base_ms":100}}"#,
        );
        assert!(!b.at_rest(), "a queued task");
        let w: WorkerId = "w".into();
        b.on_hello(&w, 1, None, Labels::new());
        let mut fx = Effects::default();
        b.dispatch(1000, |_| true, &mut fx);
        assert_eq!(b.entries[&id].task.state(), State::Assigned);
        assert!(!b.at_rest(), "a held task");
        b.on_update(&w, failed(id, None), 1000, &mut fx).unwrap();
        assert_eq!(b.entries[&id].task.state(), State::Scheduled);
        assert!(b.at_rest(), "a retry waiting for its time");
        let at = b.entries[&id].task.progress.run_at.unwrap();
        assert_eq!(b.next_wake(), Some(at), "the retry's time wakes it");
        let after = submit(&mut b, &format!(r#"{{"type":"t","depends_on":["{id}"]}}"#));
        assert_eq!(b.entries[&after].task.state(), State::Waiting);
        assert!(!b.at_rest(), "a task waiting on another");
    }

    #[test]
    fn a_failed_task_waits_its_backoff_then_dies_after_its_last_attempt() {
        let mut b = Book::default();
        let id = submit(
            &mut b,
            r#"{"type":"t","retry":{"max_attempts":3,"backoff_base_ms":100}}"#,
        );
        let w: WorkerId = "w".into();
        b.on_hello(&w, 1, None, Labels::new());
        let fail = |b: &mut Book, now: u64, retryable| {
            let mut fx = Effects::default();
            b.dispatch(now, |_| true, &mut fx);
            assert_eq!(offered(b, &fx), vec![("w".to_string(), id)], "at {now}");
            b.on_update(&w, failed(id, retryable), now, &mut fx)
                .unwrap();
            fx
        };
        let mut now = 1000;
        for (attempt, wait) in [(2, 100), (3, 200)] {
            let fx = fail(&mut b, now, None);
            assert_eq!(fx.retried, 1);
            let t = &b.entries[&id].task;
            assert_eq!((t.state(), t.progress.attempt), (State::Scheduled, attempt));
            let at = t.progress.run_at.unwrap();
            assert!((now + wait..=now + wait + wait / 2).contains(&at), "{at}");
            let mut fx = Effects::default();
            b.deadlines(at - 1, &limits(), &mut fx);
            b.dispatch(at - 1, |_| true, &mut fx);
            assert!(fx.frames.is_empty(), "not before its backoff");
            assert_eq!(b.entries[&id].task.state(), State::Scheduled);
            b.deadlines(at, &limits(), &mut fx);
            assert_eq!(b.entries[&id].task.state(), State::Queued);
            now = at;
        }
        fail(&mut b, now, None);
        let t = &b.entries[&id].task;
        assert_eq!(
            (t.state(), t.progress.error.as_deref()),
            (State::Dead, Some("boom"))
        );
        assert_eq!(b.count(State::Dead), 1);
        // Kept past task_retention, forgotten after dead_retention.
        let mut fx = Effects::default();
        b.deadlines(now + 2000, &limits(), &mut fx);
        assert!(b.entries.contains_key(&id));
        // Retried by hand: a fresh cycle.
        let t = b.retry(id, now + 2000, &mut fx).unwrap().unwrap();
        assert_eq!(
            (t.state(), t.progress.attempt, t.progress.error),
            (State::Queued, 1, None)
        );
        assert_eq!(b.count(State::Dead), 0);
        // A failure the worker says is not retryable ends it at once.
        fail(&mut b, now + 2001, Some(false));
        assert_eq!(b.entries[&id].task.state(), State::Failed);
        b.retry(id, now + 2002, &mut fx).unwrap().unwrap();
        for _ in 0..3 {
            let at = b.entries[&id].task.progress.run_at.unwrap_or(now + 2002);
            b.deadlines(at, &limits(), &mut fx);
            fail(&mut b, at, None);
        }
        let died = b.entries[&id].task.progress.finished_at.unwrap();
        assert_eq!(b.entries[&id].task.state(), State::Dead);
        assert!(b.retry(TaskId(12345), 0, &mut fx).is_none());
        b.deadlines(died + 5000, &limits(), &mut fx);
        assert!(!b.entries.contains_key(&id), "gone after dead_retention");
    }

    #[test]
    fn updates_only_from_the_holder() {
        let mut b = book_with(1);
        let w = WorkerId::from("w1");
        let id = *b.entries.keys().next().unwrap();
        b.on_hello(&w, 1, None, Labels::new());
        let mut fx = Effects::default();
        b.dispatch(0, |_| true, &mut fx);
        let up = |state| TaskUpdate {
            task_id: id.to_string(),
            state,
            result: None,
            error: None,
            exit_code: Some(0),
            retryable: None,
        };
        assert_eq!(
            b.on_update(&"w2".into(), up(Reported::Running), 1, &mut fx),
            Err(NotHeld)
        );
        let mut bogus = up(Reported::Running);
        bogus.task_id = "not-a-task".into();
        assert_eq!(b.on_update(&w, bogus, 1, &mut fx), Err(NotHeld));
        b.on_update(&w, up(Reported::Running), 1, &mut fx).unwrap();
        b.on_update(&w, up(Reported::Succeeded), 11, &mut fx)
            .unwrap();
        assert_eq!(b.entries[&id].task.state(), State::Succeeded);
        assert_eq!(fx.runs, vec![(w.clone(), 10.0, true)]);
        assert_eq!(
            b.on_update(&w, up(Reported::Failed), 12, &mut fx),
            Err(NotHeld),
            "late"
        );
        assert!(b.takers["w1"].held.is_empty());
    }

    #[test]
    fn deadlines_and_logs() {
        let mut b = book_with(2);
        let w = WorkerId::from("w1");
        b.on_hello(&w, 2, None, Labels::new());
        let mut fx = Effects::default();
        b.dispatch(0, |_| true, &mut fx);
        let ids: Vec<TaskId> = b.entries.keys().copied().collect();
        // One is acknowledged; the other is not, and is requeued.
        b.on_update(
            &w,
            TaskUpdate {
                task_id: ids[0].to_string(),
                state: Reported::Running,
                result: None,
                error: None,
                exit_code: None,
                retryable: None,
            },
            50,
            &mut fx,
        )
        .unwrap();
        b.deadlines(150, &limits(), &mut fx);
        assert_eq!(b.entries[&ids[1]].task.state(), State::Queued);
        assert_eq!(b.entries[&ids[1]].task.progress.attempt, 2);
        // Cancel the running one; no confirmation within the grace.
        b.cancel(ids[0], 200, &mut fx);
        b.deadlines(250, &limits(), &mut fx);
        assert_eq!(b.entries[&ids[0]].task.state(), State::Running);
        b.deadlines(300, &limits(), &mut fx);
        assert_eq!(b.entries[&ids[0]].task.state(), State::Cancelled);
        let mut fx = Effects::default();
        b.deadlines(1300, &limits(), &mut fx);
        assert!(!b.entries.contains_key(&ids[0]), "past retention");
        let forgets = |fx: &Effects| {
            fx.records
                .iter()
                .filter(|r| matches!(r, Record::Forget { .. }))
                .count()
        };
        assert_eq!(forgets(&fx), 1);
        // Forgotten once: no record again on the next pass, nothing kept.
        let mut fx = Effects::default();
        b.deadlines(1400, &limits(), &mut fx);
        assert_eq!(forgets(&fx), 0);
        assert!(b.finished.iter().all(|(_, id)| b.entries.contains_key(id)));
        let mut logs = Logs::default();
        assert_eq!(
            logs.push(&["aaaa".into(), "bbbb".into(), "cccc".into()], 10),
            1
        );
        assert_eq!(logs.since(0), (vec!["bbbb", "cccc"], 3));
        assert_eq!(logs.since(2), (vec!["cccc"], 3));
    }

    #[test]
    fn forgetting_a_task_leaves_no_trace_in_the_indexes() {
        let mut b = Book::default();
        let queued = submit(&mut b, r#"{"type":"scan"}"#);
        let mut fx = Effects::default();
        b.cancel(queued, 5, &mut fx);
        b.forget(queued);
        let kept = submit(&mut b, r#"{"type":"scan","worker_id":"w9"}"#);
        b.forget(kept);
        assert!(b.entries.is_empty() && b.queues.is_empty() && b.finished.is_empty());
        assert!(State::ALL.iter().all(|s| b.count(*s) == 0));
        assert_eq!(b.live_bytes, 0);
    }
}
