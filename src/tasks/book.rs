//! The task book: every task the daemon holds, the queue, the logs, and
//! the workers that take tasks. Pure state and rules: each change returns
//! the journal records and the frames it implies, and the caller (the
//! `Tasks` handle) writes and sends them. Only `Tasks` touches a book,
//! under its one lock.

use super::journal::Record;
pub use super::logs::Logs;
use super::task::{Progress, State, Task};
use crate::proto::task::{Offer, Reported, TaskLog, TaskUpdate};
use crate::proto::{Labels, WorkerId};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// A worker with an open TCP session that takes tasks.
#[derive(Clone, Debug, Default)]
pub struct Taker {
    pub capacity: u32,
    pub types: Option<Vec<String>>,
    pub labels: Labels,
    pub held: BTreeSet<String>,
    /// Said hello while the roll call still showed it inactive or
    /// terminated from before: not judged on that until it is active.
    pub stale: bool,
}

impl Taker {
    fn takes(&self, t: &Task, id: &str) -> bool {
        self.types.as_ref().is_none_or(|ts| ts.contains(&t.kind))
            && t.target.worker_id.as_deref().is_none_or(|w| w == id)
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
}

/// What a task takes in the journal beyond its payload, about.
const RECORD_OVERHEAD: u64 = 512;

/// What a change asks of the caller: records for the journal, lines for
/// workers, runs to feed to workers' metrics, counters.
#[derive(Default, Debug)]
pub struct Effects {
    pub records: Vec<Record>,
    pub frames: Vec<(WorkerId, Vec<u8>)>,
    /// Finished runs: worker, duration ms, succeeded.
    pub runs: Vec<(WorkerId, f64, bool)>,
    pub requeued: u64,
    pub lost: u64,
    pub log_dropped: u64,
}

impl Effects {
    fn progress(&mut self, t: &Task) {
        self.records.push(Record::Progress {
            id: t.id.clone(),
            progress: t.progress.clone(),
        });
    }
}

#[derive(Default)]
pub struct Book {
    pub entries: BTreeMap<String, Entry>,
    queue: BTreeSet<(Reverse<i64>, String)>,
    /// Finished tasks by when they finished: retention and room, without
    /// a walk over every task.
    finished: BTreeSet<(u64, String)>,
    pub takers: HashMap<WorkerId, Taker>,
    pub by_state: HashMap<State, u64>,
    last_id: u64,
    /// About what the live tasks take in a compacted journal.
    pub live_bytes: u64,
}

/// Why a worker's `task_update` or `task_log` is refused: it does not
/// hold the task (finished, requeued to another, or never its own).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotHeld;

impl Book {
    /// A new id: sortable by submission time, unique within this book.
    pub fn next_id(&mut self, now_ms: u64) -> String {
        self.last_id = (now_ms << 20).max(self.last_id + 1);
        format!("{:016x}", self.last_id)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn count(&mut self, s: State, delta: i64) {
        let c = self.by_state.entry(s).or_default();
        *c = c.saturating_add_signed(delta);
    }

    fn set_state(&mut self, id: &str, p: impl FnOnce(&mut Progress)) -> Option<&Task> {
        let e = self.entries.get_mut(id)?;
        let before = e.task.progress.state;
        let finished_before = e.task.progress.finished_at;
        p(&mut e.task.progress);
        let after = e.task.progress.state;
        let finished_after = e.task.progress.finished_at;
        let priority = e.task.priority;
        if before.is_final() {
            self.finished
                .remove(&(finished_before.unwrap_or(0), id.to_string()));
        }
        if after.is_final() {
            self.finished
                .insert((finished_after.unwrap_or(0), id.to_string()));
        }
        if before != after {
            self.count(before, -1);
            self.count(after, 1);
            let key = (Reverse(priority), id.to_string());
            if after == State::Queued {
                self.queue.insert(key);
            } else if before == State::Queued {
                self.queue.remove(&key);
            }
        }
        self.entries.get(id).map(|e| &e.task)
    }

    /// Add a task (a submission, or one replayed from the journal).
    pub fn insert(&mut self, task: Task) {
        if let Some(n) = u64::from_str_radix(&task.id, 16)
            .ok()
            .filter(|n| *n > self.last_id)
        {
            self.last_id = n;
        }
        let s = task.state();
        self.count(s, 1);
        if s == State::Queued {
            self.queue.insert((Reverse(task.priority), task.id.clone()));
        }
        if s.is_final() {
            self.finished
                .insert((task.progress.finished_at.unwrap_or(0), task.id.clone()));
        }
        let size =
            RECORD_OVERHEAD + serde_json::to_string(&task.payload).map_or(0, |p| p.len() as u64);
        self.live_bytes += size;
        self.entries.insert(
            task.id.clone(),
            Entry {
                task,
                logs: Logs::default(),
                size,
            },
        );
    }

    pub fn forget(&mut self, id: &str) {
        if let Some(e) = self.entries.remove(id) {
            self.live_bytes = self.live_bytes.saturating_sub(e.size + e.logs.bytes as u64);
            self.count(e.task.state(), -1);
            self.queue
                .remove(&(Reverse(e.task.priority), id.to_string()));
            if let Some(w) = &e.task.progress.worker_id {
                if let Some(t) = self.takers.get_mut(w.as_str()) {
                    t.held.remove(id);
                }
            }
        }
    }

    /// Apply a replayed record.
    pub fn replay(&mut self, r: Record, log_cap: usize) {
        match r {
            Record::Submit { task } => self.insert(task.into()),
            Record::Progress { id, progress } => {
                self.set_state(&id, |p| *p = progress);
            }
            Record::Log { id, lines } => {
                if let Some(e) = self.entries.get_mut(&id) {
                    e.logs.push(&lines, log_cap);
                }
            }
            Record::Forget { id } => self.forget(&id),
        }
    }

    /// After a restart no worker session survives: every held task is
    /// treated as its worker lost.
    pub fn requeue_all_held(&mut self, now_ms: u64, fx: &mut Effects) {
        let held: Vec<String> = self
            .entries
            .values()
            .filter(|e| e.task.state().is_held())
            .map(|e| e.task.id.clone())
            .collect();
        for id in held {
            self.requeue(&id, "the daemon restarted", now_ms, fx);
        }
    }

    /// A held task goes back to the queue with one more attempt, or fails
    /// when its attempts are spent.
    pub fn requeue(&mut self, id: &str, why: &str, now_ms: u64, fx: &mut Effects) {
        let Some(e) = self.entries.get(id) else {
            return;
        };
        if !e.task.state().is_held() {
            return;
        }
        if let Some(w) = e.task.progress.worker_id.clone() {
            if let Some(t) = self.takers.get_mut(w.as_str()) {
                t.held.remove(id);
            }
        }
        let spent = e.task.progress.attempt >= e.task.max_attempts;
        let task = self.set_state(id, |p| {
            if spent {
                p.state = State::Failed;
                p.finished_at = Some(now_ms);
                p.error = Some("worker lost".into());
            } else {
                p.state = State::Queued;
                p.attempt += 1;
                p.queued_at = Some(now_ms);
                p.assigned_at = None;
                p.started_at = None;
            }
        });
        if let Some(t) = task.cloned() {
            log::info!(
                "task {id} {} ({why}; attempt {} of {})",
                if spent {
                    "failed: worker lost"
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
    pub fn on_hello(
        &mut self,
        id: &WorkerId,
        capacity: u32,
        types: Option<Vec<String>>,
        labels: Labels,
        stale: bool,
    ) {
        if capacity == 0 {
            self.takers.remove(id.as_ref() as &str);
            return;
        }
        let held = self
            .takers
            .remove(id.as_ref() as &str)
            .map(|t| t.held)
            .unwrap_or_default();
        self.takers.insert(
            id.clone(),
            Taker {
                capacity,
                types,
                labels,
                held,
                stale,
            },
        );
    }

    /// The worker is gone (session closed, bye, inactive): its tasks are
    /// requeued.
    pub fn on_lost(&mut self, id: &str, why: &str, now_ms: u64, fx: &mut Effects) {
        let held: Vec<String> = match self.takers.remove(id) {
            Some(t) => t.held.into_iter().collect(),
            None => Vec::new(),
        };
        for t in held {
            self.requeue(&t, why, now_ms, fx);
        }
    }

    /// Whether `worker` holds task `id` now.
    fn holds(&self, worker: &str, id: &str) -> bool {
        self.entries.get(id).is_some_and(|e| {
            e.task.state().is_held() && e.task.progress.worker_id.as_deref() == Some(worker)
        })
    }

    /// A `task_update` from `worker`.
    pub fn on_update(
        &mut self,
        worker: &WorkerId,
        u: TaskUpdate,
        now_ms: u64,
        fx: &mut Effects,
    ) -> Result<(), NotHeld> {
        if !self.holds(worker, &u.task_id) {
            return Err(NotHeld);
        }
        let cancelling = self.entries[&u.task_id]
            .task
            .progress
            .cancel_requested_at
            .is_some();
        let finished = !matches!(u.state, Reported::Running);
        let task = self
            .set_state(&u.task_id, |p| {
                match u.state {
                    Reported::Running => {
                        p.state = State::Running;
                        p.started_at.get_or_insert(now_ms);
                    }
                    Reported::Succeeded => p.state = State::Succeeded,
                    Reported::Failed if cancelling => p.state = State::Cancelled,
                    Reported::Failed => p.state = State::Failed,
                    Reported::Cancelled => p.state = State::Cancelled,
                }
                if finished {
                    p.finished_at = Some(now_ms);
                    p.result = u.result;
                    p.error = u.error;
                    p.exit_code = u.exit_code;
                }
            })
            .cloned();
        let Some(t) = task else { return Ok(()) };
        fx.progress(&t);
        if finished {
            if let Some(tk) = self.takers.get_mut(worker.as_ref() as &str) {
                tk.held.remove(&t.id);
            }
            if matches!(t.state(), State::Succeeded | State::Failed) {
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
        if !self.holds(worker, &l.task_id) {
            return Err(NotHeld);
        }
        if let Some(e) = self.entries.get_mut(&l.task_id) {
            let before = e.logs.bytes;
            fx.log_dropped += e.logs.push(&l.lines, cap);
            self.live_bytes = (self.live_bytes + e.logs.bytes as u64).saturating_sub(before as u64);
        }
        fx.records.push(Record::Log {
            id: l.task_id,
            lines: l.lines,
        });
        Ok(())
    }

    /// Cancel: a queued task at once; a held one is asked to stop.
    /// `None` when there is no such task.
    pub fn cancel(&mut self, id: &str, now_ms: u64, fx: &mut Effects) -> Option<Task> {
        let e = self.entries.get(id)?;
        match e.task.state() {
            State::Queued => {
                let t = self.set_state(id, |p| {
                    p.state = State::Cancelled;
                    p.finished_at = Some(now_ms);
                })?;
                let t = t.clone();
                fx.progress(&t);
                Some(t)
            }
            State::Assigned | State::Running if e.task.progress.cancel_requested_at.is_none() => {
                let worker = e.task.progress.worker_id.clone();
                let t = self
                    .set_state(id, |p| p.cancel_requested_at = Some(now_ms))?
                    .clone();
                fx.progress(&t);
                if let Some(w) = worker {
                    fx.frames
                        .push((WorkerId::from(w.as_str()), crate::proto::encode_cancel(id)));
                }
                Some(t)
            }
            _ => Some(e.task.clone()),
        }
    }

    /// End a held task without its worker: timed out, or not confirmed
    /// cancelled within the grace.
    fn end_held(&mut self, id: &str, state: State, error: &str, now_ms: u64, fx: &mut Effects) {
        let Some(worker) = self
            .entries
            .get(id)
            .and_then(|e| e.task.progress.worker_id.clone())
        else {
            return;
        };
        if let Some(tk) = self.takers.get_mut(worker.as_str()) {
            tk.held.remove(id);
        }
        if let Some(t) = self
            .set_state(id, |p| {
                p.state = state;
                p.finished_at = Some(now_ms);
                p.error = Some(error.into());
            })
            .cloned()
        {
            fx.progress(&t);
        }
    }

    /// Deadlines: unacknowledged assignments, task timeouts, cancel grace,
    /// finished tasks past retention.
    pub fn deadlines(&mut self, now_ms: u64, limits: &Limits, fx: &mut Effects) {
        let mut requeue = Vec::new();
        let mut timed_out = Vec::new();
        let mut unconfirmed = Vec::new();
        // Only held tasks have deadlines: every one is in its taker's set.
        let held = self.takers.values().flat_map(|t| t.held.iter());
        for e in held.filter_map(|id| self.entries.get(id)) {
            let p = &e.task.progress;
            let since = |t: Option<u64>| now_ms.saturating_sub(t.unwrap_or(now_ms));
            if p.state.is_held() && p.cancel_requested_at.is_some() {
                if since(p.cancel_requested_at) >= limits.cancel_grace_ms {
                    unconfirmed.push(e.task.id.clone());
                }
                continue;
            }
            match p.state {
                State::Assigned if since(p.assigned_at) >= limits.ack_timeout_ms => {
                    requeue.push(e.task.id.clone());
                }
                State::Running if e.task.timeout_ms.is_some_and(|t| since(p.started_at) >= t) => {
                    timed_out.push((e.task.id.clone(), p.worker_id.clone()));
                }
                _ => {}
            }
        }
        let expired: Vec<String> = self
            .finished
            .iter()
            .take_while(|(at, _)| now_ms.saturating_sub(*at) >= limits.retention_ms)
            .map(|(_, id)| id.clone())
            .collect();
        for id in requeue {
            self.requeue(&id, "not acknowledged in time", now_ms, fx);
        }
        for (id, worker) in timed_out {
            if let Some(w) = worker {
                fx.frames
                    .push((WorkerId::from(w.as_str()), crate::proto::encode_cancel(&id)));
            }
            self.end_held(&id, State::TimedOut, "timed out", now_ms, fx);
        }
        for id in unconfirmed {
            self.end_held(
                &id,
                State::Cancelled,
                "cancelled; the worker did not confirm",
                now_ms,
                fx,
            );
        }
        for id in expired {
            self.forget(&id);
            fx.records.push(Record::Forget { id });
        }
    }

    /// Room for one more task: forget the oldest finished ones when full.
    /// False when every kept task is unfinished.
    pub fn make_room(&mut self, max: usize, fx: &mut Effects) -> bool {
        while self.entries.len() >= max {
            let Some((_, id)) = self.finished.first().cloned() else {
                return false;
            };
            self.forget(&id);
            fx.records.push(Record::Forget { id });
        }
        true
    }

    /// Send queued tasks to the matching worker with the most free
    /// capacity, highest priority first, then oldest. `eligible` says
    /// whether a worker may take work now (not `error`, `inactive` or
    /// `terminated`).
    pub fn dispatch(&mut self, now_ms: u64, eligible: impl Fn(&str) -> bool, fx: &mut Effects) {
        if self.takers.values().all(|t| t.free() == 0) {
            return;
        }
        let order: Vec<String> = self.queue.iter().map(|(_, id)| id.clone()).collect();
        for id in order {
            let Some(task) = self.entries.get(&id).map(|e| &e.task) else {
                continue;
            };
            let best = self
                .takers
                .iter()
                .filter(|(w, t)| t.free() > 0 && t.takes(task, w) && eligible(w))
                .max_by_key(|(w, t)| (t.free(), Reverse((*w).clone())))
                .map(|(w, _)| w.clone());
            let Some(worker) = best else { continue };
            if let Some(tk) = self.takers.get_mut(worker.as_ref() as &str) {
                tk.held.insert(id.clone());
            }
            let Some(t) = self
                .set_state(&id, |p| {
                    p.state = State::Assigned;
                    p.worker_id = Some(worker.to_string());
                    p.assigned_at = Some(now_ms);
                    p.cancel_requested_at = None;
                })
                .cloned()
            else {
                continue;
            };
            fx.progress(&t);
            let offer = Offer {
                task_id: t.id.clone(),
                task_type: t.kind.clone(),
                payload: t.payload.clone(),
                attempt: t.progress.attempt,
                timeout_ms: t.timeout_ms,
            };
            fx.frames.push((worker, crate::proto::encode_task(offer)));
            if self.takers.values().all(|t| t.free() == 0) {
                break;
            }
        }
    }
}

/// The settings deadlines are judged by.
pub struct Limits {
    pub ack_timeout_ms: u64,
    pub cancel_grace_ms: u64,
    pub retention_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::task::parse_submit;

    fn book_with(n: usize) -> Book {
        let mut b = Book::default();
        for i in 0..n {
            let id = b.next_id(1000);
            let body = format!(r#"{{"type":"t","priority":{}}}"#, i % 2);
            b.insert(parse_submit(body.as_bytes(), id, 1000).unwrap());
        }
        b
    }

    fn limits() -> Limits {
        Limits {
            ack_timeout_ms: 100,
            cancel_grace_ms: 100,
            retention_ms: 1000,
        }
    }

    #[test]
    fn dispatch_by_priority_to_the_freest_worker() {
        let mut b = book_with(4);
        let (w1, w2) = (WorkerId::from("w1"), WorkerId::from("w2"));
        b.on_hello(&w1, 1, None, Labels::new(), false);
        b.on_hello(&w2, 2, None, Labels::new(), false);
        let mut fx = Effects::default();
        b.dispatch(2000, |_| true, &mut fx);
        assert_eq!(fx.frames.len(), 3, "capacity 3 in all");
        assert_eq!(b.takers["w2"].held.len(), 2);
        assert_eq!(b.takers["w1"].held.len(), 1);
        // The two priority-1 tasks went first.
        let sent: Vec<i64> = fx
            .frames
            .iter()
            .map(|(_, l)| {
                let r: crate::proto::Reply = crate::proto::decode_reply(l).unwrap();
                let crate::proto::Reply::Task(o) = r else {
                    panic!()
                };
                b.entries[&o.task_id].task.priority
            })
            .collect();
        assert_eq!(&sent[..2], &[1, 1]);
        assert_eq!(b.by_state[&State::Queued], 1);
    }

    #[test]
    fn a_lost_worker_requeues_then_fails_its_tasks() {
        let mut b = book_with(1);
        let w = WorkerId::from("w1");
        let id = b.entries.keys().next().unwrap().clone();
        for attempt in 1..=3 {
            b.on_hello(&w, 1, None, Labels::new(), false);
            let mut fx = Effects::default();
            b.dispatch(0, |_| true, &mut fx);
            assert_eq!(b.entries[&id].task.progress.attempt, attempt);
            b.on_lost("w1", "test", 5, &mut fx);
        }
        let t = &b.entries[&id].task;
        assert_eq!(
            (t.state(), t.progress.error.as_deref()),
            (State::Failed, Some("worker lost"))
        );
    }

    #[test]
    fn updates_only_from_the_holder() {
        let mut b = book_with(1);
        let w = WorkerId::from("w1");
        let id = b.entries.keys().next().unwrap().clone();
        b.on_hello(&w, 1, None, Labels::new(), false);
        let mut fx = Effects::default();
        b.dispatch(0, |_| true, &mut fx);
        let up = |state| TaskUpdate {
            task_id: id.clone(),
            state,
            result: None,
            error: None,
            exit_code: Some(0),
        };
        assert_eq!(
            b.on_update(&"w2".into(), up(Reported::Running), 1, &mut fx),
            Err(NotHeld)
        );
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
        b.on_hello(&w, 2, None, Labels::new(), false);
        let mut fx = Effects::default();
        b.dispatch(0, |_| true, &mut fx);
        let ids: Vec<String> = b.entries.keys().cloned().collect();
        // One is acknowledged; the other is not, and is requeued.
        b.on_update(
            &w,
            TaskUpdate {
                task_id: ids[0].clone(),
                state: Reported::Running,
                result: None,
                error: None,
                exit_code: None,
            },
            50,
            &mut fx,
        )
        .unwrap();
        b.deadlines(150, &limits(), &mut fx);
        assert_eq!(b.entries[&ids[1]].task.state(), State::Queued);
        assert_eq!(b.entries[&ids[1]].task.progress.attempt, 2);
        // Cancel the running one; no confirmation within the grace.
        b.cancel(&ids[0], 200, &mut fx);
        b.deadlines(250, &limits(), &mut fx);
        assert_eq!(b.entries[&ids[0]].task.state(), State::Running);
        b.deadlines(300, &limits(), &mut fx);
        assert_eq!(b.entries[&ids[0]].task.state(), State::Cancelled);
        b.deadlines(1300, &limits(), &mut fx);
        assert!(!b.entries.contains_key(&ids[0]), "past retention");
        let mut logs = Logs::default();
        assert_eq!(
            logs.push(&["aaaa".into(), "bbbb".into(), "cccc".into()], 10),
            1
        );
        assert_eq!(logs.since(0), (vec!["bbbb", "cccc"], 3));
        assert_eq!(logs.since(2), (vec!["cccc"], 3));
    }
}
