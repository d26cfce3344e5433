//! The book as cluster mode's copy of the database: what this node's
//! takers may claim, the claims and adoptions the database granted, and
//! the rows other nodes changed.

use super::*;

/// Cluster mode: what a node's takers with room may take, for a claim.
#[derive(Clone, Debug)]
pub struct Wanted {
    pub worker: WorkerId,
    pub free: u32,
    pub types: Option<Vec<String>>,
    pub labels: Labels,
}

impl Book {
    /// Cluster mode: the takers with room that `eligible` admits and that
    /// this book's copy of the queue has a task for. The copy may be a
    /// moment behind the database's; a claim finds out.
    pub fn wanted(&self, eligible: impl Fn(&str) -> bool) -> Vec<Wanted> {
        if self.queues.is_empty() {
            return Vec::new();
        }
        self.takers
            .iter()
            .filter(|(w, t)| t.free() > 0 && eligible(w))
            .filter(|(w, t)| {
                let takes = |id: &TaskId| {
                    self.entries.get(id).is_some_and(|e| {
                        t.takes(&e.task, w) && !self.queues.is_paused(&e.task.kind)
                    })
                };
                self.queues.best(w, t.types.as_deref(), takes).is_some()
            })
            .map(|(w, t)| Wanted {
                worker: w.clone(),
                free: t.free(),
                types: t.types.clone(),
                labels: t.labels.clone(),
            })
            .collect()
    }

    /// Cluster mode: a task the database gave `worker` under `lease` (it
    /// is stored assigned already). False when the worker is no longer
    /// here to take it: the caller gives it back.
    pub fn claimed(
        &mut self,
        worker: &WorkerId,
        task: Task,
        lease: i64,
        rev: i64,
        fx: &mut Effects,
    ) -> bool {
        let id = task.id;
        if !self.keep(worker, task, lease, rev, fx) {
            return false;
        }
        if let Some(e) = self.entries.get(&id) {
            fx.frames.push((worker.clone(), offer(&e.task, e.lease)));
        }
        true
    }

    /// Cluster mode: `task`, stored under `lease`, is `worker`'s here; false
    /// when the worker is gone (the task is in the book all the same).
    fn keep(
        &mut self,
        worker: &WorkerId,
        task: Task,
        lease: i64,
        rev: i64,
        fx: &mut Effects,
    ) -> bool {
        let id = task.id;
        self.put(task, lease, rev);
        let Some(tk) = self.takers.get_mut(worker) else {
            return false;
        };
        tk.held.insert(id);
        if let Some(e) = self.entries.get(&id) {
            fx.progress(&e.task);
        }
        true
    }

    /// `hello`'s `running`: the tasks `worker` still runs. Those it holds
    /// here already are its (on a single node, also those it held when the
    /// daemon stopped: [`Book::hold_for_return`]); in cluster mode the
    /// others are asked of the database ([`super::adopt`]); on a single
    /// node, or when too many wait, the worker is told to stop them. A
    /// task held at the restart that the worker does not re-report is
    /// requeued.
    pub fn reported(
        &mut self,
        worker: &WorkerId,
        running: &[Held],
        cluster: bool,
        now_ms: u64,
        fx: &mut Effects,
    ) {
        let said: std::collections::HashSet<&str> =
            running.iter().map(|h| h.task_id.as_str()).collect();
        let dropped: Vec<TaskId> = self
            .takers
            .get(worker)
            .into_iter()
            .flat_map(|t| t.held.iter())
            .filter(|id| self.orphans.contains(id) && !said.contains(id.to_string().as_str()))
            .copied()
            .collect();
        for id in dropped {
            self.requeue(id, "its worker came back without it", now_ms, fx);
        }
        for h in running {
            let id = TaskId::parse(&h.task_id);
            let holds = |b: &Book, id| b.takers.get(worker).is_some_and(|t| t.held.contains(&id));
            match id {
                Some(id) if holds(self, id) => {
                    if self.orphans.remove(&id) {
                        log::info!(
                            "task {id}: {worker} re-reported it after the restart; it goes on"
                        );
                    }
                    // Said back: the task is the worker's here, under the
                    // claim it holds (0 on a single node).
                    let lease = self.entries.get(&id).map_or(0, |e| e.lease.max(0) as u64);
                    let line = crate::proto::encode_lease(&h.task_id, lease);
                    fx.frames.push((worker.clone(), line));
                }
                Some(id)
                    if cluster
                        && self
                            .adoptions
                            .ask(worker, id, h.lease.min(i64::MAX as u64) as i64) => {}
                _ => fx
                    .frames
                    .push((worker.clone(), crate::proto::encode_cancel(&h.task_id))),
            }
        }
    }

    /// Cluster mode: the database gave this node a task `worker`
    /// re-reported, under `lease` (stored already). Its worker is told the
    /// new token. False when the worker is no longer here to keep it.
    pub fn adopted(
        &mut self,
        worker: &WorkerId,
        task: Task,
        lease: i64,
        rev: i64,
        fx: &mut Effects,
    ) -> bool {
        let id = task.id;
        if !self.keep(worker, task, lease, rev, fx) {
            return false;
        }
        let lease = crate::proto::encode_lease(&id.to_string(), lease.max(0) as u64);
        fx.frames.push((worker.clone(), lease));
        true
    }

    /// Cluster mode: a task as the database has it after another node
    /// (or this one, earlier) changed it. A local session that held it
    /// under another claim holds it no longer.
    pub fn mirror(&mut self, task: Task, lease: i64, rev: i64, fx: &mut Effects) {
        let id = task.id;
        if let Some(e) = self.entries.get(&id) {
            if e.lease != lease {
                if let Some(w) = &e.task.progress.worker_id {
                    if let Some(t) = self.takers.get_mut(w) {
                        t.held.remove(&id);
                    }
                }
            }
        }
        self.put(task, lease, rev);
        if let Some(e) = self.entries.get(&id) {
            fx.progress(&e.task);
        }
    }

    /// Put `task` in as it is, keeping the indexes, with its claim.
    fn put(&mut self, task: Task, lease: i64, rev: i64) {
        let id = task.id;
        if self.entries.contains_key(&id) {
            let progress = task.progress;
            self.set_state(id, |p| *p = progress);
        } else {
            self.insert(task);
        }
        if let Some(e) = self.entries.get_mut(&id) {
            e.lease = lease;
            e.rev = rev;
        }
    }
}
