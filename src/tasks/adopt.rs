//! Tasks a worker still runs when it says hello again (`hello`'s
//! `running`): after a reconnect, to this node or from another one.
//!
//! Cluster mode asks the database to hand each over to this node under a
//! new lease token, if the token the worker re-reports is still the
//! task's (its old node died, or has not given it back yet): the task
//! then goes on where it runs, and nothing runs twice. Until the database
//! has answered, what the worker says of those tasks waits here, in
//! order, and is applied once the task is this node's; a task the
//! database does not give (finished, given back, claimed again) is
//! cancelled on the worker, and what it said of it is refused.
//!
//! A single node has no other node to take tasks from: a re-reported task
//! that the book does not have the worker holding was given back when the
//! session ended (or at a restart), so the worker is asked to stop it.

use super::book::Effects;
use super::cluster::Store;
use super::task::TaskId;
use crate::proto::WorkerId;
use crate::proto::task::{TaskLog, TaskUpdate};
use crate::stats::Counter;
use std::collections::HashMap;

/// One task a worker re-reported, to ask the database for.
#[derive(Clone, Debug, PartialEq)]
pub struct Adopt {
    pub worker: WorkerId,
    pub id: TaskId,
    pub lease: i64,
}

/// What a worker says of a task it holds (kept, in order, while the task
/// is being adopted).
#[derive(Debug)]
pub enum Said {
    Update(TaskUpdate),
    Log(TaskLog),
    /// Not kept while a task is adopted: the next one will do.
    Progress(crate::proto::task::TaskProgress),
}

#[derive(Default)]
pub struct Adoptions {
    /// Not yet asked of the database.
    asked: Vec<Adopt>,
    /// Asked, or about to be: who re-reported each, and what it said since.
    waiting: HashMap<TaskId, (WorkerId, Vec<Said>)>,
}

/// Re-reported tasks kept waiting at most (a hostile hello cannot grow
/// the map past it).
pub const MAX_WAITING: usize = 100_000;

impl Adoptions {
    /// `worker` re-reported `id` under `lease`. False when too many wait.
    pub fn ask(&mut self, worker: &WorkerId, id: TaskId, lease: i64) -> bool {
        if self.waiting.len() >= MAX_WAITING || self.waiting.contains_key(&id) {
            return false;
        }
        self.waiting.insert(id, (worker.clone(), Vec::new()));
        self.asked.push(Adopt {
            worker: worker.clone(),
            id,
            lease,
        });
        true
    }

    /// What to ask the database for now.
    pub fn take_asked(&mut self) -> Vec<Adopt> {
        std::mem::take(&mut self.asked)
    }

    /// Ask again later (the database could not be reached).
    pub fn ask_again(&mut self, asks: Vec<Adopt>) {
        self.asked.extend(asks);
    }

    /// Whether what `worker` says of `id` must wait for the database's
    /// answer ([`Self::keep`] it).
    pub fn waits(&self, worker: &str, id: TaskId) -> bool {
        self.waiting.get(&id).is_some_and(|(w, _)| &**w == worker)
    }

    pub fn keep(&mut self, id: TaskId, said: Said) {
        if let Some((_, list)) = self.waiting.get_mut(&id) {
            list.push(said);
        }
    }

    /// The database answered for `id`: what its worker said meanwhile.
    pub fn answered(&mut self, id: TaskId) -> Option<(WorkerId, Vec<Said>)> {
        self.waiting.remove(&id)
    }

    /// The worker left before the answer: nothing it said counts, and the
    /// answer, when it comes, gives the task back.
    pub fn forget_worker(&mut self, worker: &str) {
        self.waiting.retain(|_, (w, _)| &**w != worker);
        self.asked.retain(|a| &*a.worker != worker);
    }

    pub fn is_empty(&self) -> bool {
        self.asked.is_empty() && self.waiting.is_empty()
    }
}

impl super::Tasks {
    /// The scheduler's turn at re-reported tasks (cluster mode): ask the
    /// database for them, then keep each adopted one (and apply what its
    /// worker said meanwhile) or cancel it on the worker.
    pub(super) fn adopt_reported(&self, store: &Store, now_ms: u64) {
        let asks = self.lock().adoptions.take_asked();
        if asks.is_empty() {
            return;
        }
        let Some(mut got) = store.adopt(&asks) else {
            self.lock().adoptions.ask_again(asks);
            return;
        };
        let cap = self.shared.config.get().tasks.log_bytes;
        let st = &self.shared.stats;
        let mut book = self.lock();
        let (mut stored, mut fx) = (Effects::default(), Effects::default());
        for ask in asks {
            let answered = book.adoptions.answered(ask.id);
            let Some(a) = got.remove(&ask.id) else {
                // Not the worker's to keep: it stops it, and what it said
                // of it meanwhile does not count.
                if let Some((worker, said)) = answered {
                    st.add(Counter::TaskUpdatesRefused, said.len() as u64);
                    let cancel = crate::proto::encode_cancel(&ask.id.to_string());
                    fx.frames.push((worker, cancel));
                }
                continue;
            };
            // The task is this node's now; if its worker left meanwhile, it
            // goes back to the queue.
            let worker = answered
                .as_ref()
                .map_or_else(|| ask.worker.clone(), |(w, _)| w.clone());
            let kept = book.adopted(&worker, a.task, a.lease, a.rev, &mut stored);
            let Some((_, said)) = answered.filter(|_| kept) else {
                let why = "its worker left while it was adopted";
                book.requeue(ask.id, why, now_ms, &mut fx);
                continue;
            };
            st.incr(Counter::TasksAdopted);
            for s in said {
                let r = match s {
                    Said::Update(u) => book.on_update(&worker, u, now_ms, &mut fx),
                    Said::Log(l) => book.on_log(&worker, l, cap, &mut fx),
                    Said::Progress(_) => Ok(()),
                };
                if r.is_err() {
                    st.incr(Counter::TaskUpdatesRefused);
                }
            }
        }
        self.runner.apply_stored(&book, stored);
        self.runner.apply(&book, fx, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(id: &str) -> Said {
        Said::Log(TaskLog {
            task_id: id.into(),
            lines: vec!["x".into()],
        })
    }

    #[test]
    fn what_a_worker_says_waits_for_the_answer_in_order() {
        let mut a = Adoptions::default();
        let w: WorkerId = "w1".into();
        assert!(a.ask(&w, TaskId(7), 3));
        assert!(!a.ask(&w, TaskId(7), 3), "asked once");
        assert_eq!(a.take_asked().len(), 1);
        assert!(a.take_asked().is_empty());
        for _ in 0..2 {
            assert!(a.waits("w1", TaskId(7)));
            a.keep(TaskId(7), log("7"));
        }
        assert!(!a.waits("w2", TaskId(7)), "not w2's");
        assert!(!a.waits("w1", TaskId(8)), "not waiting");
        let (who, said) = a.answered(TaskId(7)).unwrap();
        assert_eq!((&*who, said.len()), ("w1", 2));
        assert!(a.is_empty());
    }

    #[test]
    fn a_worker_that_leaves_takes_its_asks_with_it() {
        let mut a = Adoptions::default();
        a.ask(&"w1".into(), TaskId(1), 1);
        a.ask(&"w2".into(), TaskId(2), 1);
        a.forget_worker("w1");
        assert_eq!(a.take_asked().len(), 1);
        assert!(a.answered(TaskId(1)).is_none());
        assert!(a.answered(TaskId(2)).is_some());
    }
}
