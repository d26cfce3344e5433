//! Dependencies: a task submitted with `depends_on` is `waiting` until
//! each of them succeeded, then queued (or scheduled, for a `run_at`
//! still ahead); once one ends otherwise (failed for good, dead,
//! cancelled, timed out, or gone), the waiting task ends `failed` with
//! `dependency failed: ID`, and its own dependents after it. A task names
//! only tasks that exist when it is submitted, so no cycle can form.
//!
//! Cost: a task that ends looks at its dependents; a waiting task is
//! looked at again only when one of its dependencies ended. In cluster
//! mode the leader's statements do this in the database instead
//! (`duties.rs`), and the book only mirrors it.

use super::*;

impl Book {
    /// Note what `t` depends on; a waiting task is looked at on the
    /// next [`Book::settle`] (it may already be free, or failed).
    pub(super) fn depend(&mut self, t: &Task) {
        for d in &t.depends_on {
            self.dependents.entry(*d).or_default().push(t.id);
        }
        if t.state() == State::Waiting {
            self.unsettled.insert(t.id);
        }
    }

    pub(super) fn undepend(&mut self, t: &Task) {
        for d in &t.depends_on {
            if let Some(v) = self.dependents.get_mut(d) {
                v.retain(|x| *x != t.id);
                if v.is_empty() {
                    self.dependents.remove(d);
                }
            }
        }
        self.unsettled.remove(&t.id);
    }

    /// Task `id` ended: its waiting dependents are looked at again.
    pub(super) fn ended(&mut self, id: TaskId) {
        if let Some(v) = self.dependents.get(&id) {
            self.unsettled.extend(v.iter().copied());
        }
    }

    /// Whether a waiting task depends on `id`: then `id` is kept past its
    /// retention, until they settle.
    pub fn pinned(&self, id: TaskId) -> bool {
        self.dependents.get(&id).is_some_and(|v| {
            v.iter().any(|d| {
                self.entries
                    .get(d)
                    .is_some_and(|e| e.task.state() == State::Waiting)
            })
        })
    }

    /// Whether every id names a task this book has.
    pub fn all_known(&self, ids: &[TaskId]) -> Result<(), TaskId> {
        match ids.iter().find(|id| !self.entries.contains_key(id)) {
            Some(id) => Err(*id),
            None => Ok(()),
        }
    }

    /// Queue the waiting tasks whose dependencies all succeeded, and fail
    /// those with one that ended otherwise, and theirs in turn.
    pub fn settle(&mut self, now_ms: u64, fx: &mut Effects) {
        while let Some(id) = self.unsettled.pop_first() {
            let Some(e) = self.entries.get(&id) else {
                continue;
            };
            if e.task.state() != State::Waiting {
                continue;
            }
            let mut ready = true;
            let mut failed = None;
            for d in &e.task.depends_on {
                match self.entries.get(d).map(|e| e.task.state()) {
                    Some(State::Succeeded) => {}
                    Some(s) if !s.is_final() => ready = false,
                    // Ended otherwise, or gone: it will never succeed.
                    _ => {
                        failed = Some(*d);
                        break;
                    }
                }
            }
            let t = match failed {
                Some(d) => self.set_state(id, |p| {
                    p.state = State::Failed;
                    p.finished_at = Some(now_ms);
                    p.error = Some(format!("dependency failed: {d}"));
                }),
                None if ready => self.set_state(id, |p| p.ready(now_ms)),
                None => continue,
            };
            if let Some(t) = t {
                fx.progress(&t);
            }
        }
    }
}
