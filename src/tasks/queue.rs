//! The queued tasks, indexed so that dispatch never walks them: one queue
//! per task type, highest priority then oldest first, and one per worker
//! for the tasks aimed at it. A taker reads the queues of the types it
//! takes (every type's when it names none) and its own. A paused type's
//! queue is not read at all (`POST /api/queues/{type}/pause`).

use super::task::{Task, TaskId};
use crate::proto::WorkerId;
use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};

/// A queued task's place: highest priority first, then oldest.
type Place = (Reverse<i64>, TaskId);

/// Every queue that holds a task (an emptied one is let go), and the
/// types paused. A queued task waits in its worker's queue when aimed at
/// one, else in its type's; both maps are looked up by `&str`, so a
/// dispatch reads a queue without building its key.
#[derive(Default)]
pub struct Queues {
    types: HashMap<String, BTreeSet<Place>>,
    workers: HashMap<WorkerId, BTreeSet<Place>>,
    paused: BTreeSet<String>,
    /// Types no task of which may start now (their limits are reached):
    /// their queues are not read. Set for each dispatch.
    pub closed: std::collections::HashSet<String>,
}

impl Queues {
    pub fn is_empty(&self) -> bool {
        self.types.is_empty() && self.workers.is_empty()
    }

    /// Pause (or resume) a type; whether that changed anything.
    pub fn pause(&mut self, kind: &str, paused: bool) -> bool {
        if paused {
            self.paused.insert(kind.to_string())
        } else {
            self.paused.remove(kind)
        }
    }

    pub fn is_paused(&self, kind: &str) -> bool {
        self.paused.contains(kind)
    }

    pub fn paused(&self) -> &BTreeSet<String> {
        &self.paused
    }

    /// Tasks queued of each type (not those aimed at a worker).
    pub fn depths(&self) -> impl Iterator<Item = (&str, usize)> {
        self.types.iter().map(|(t, s)| (t.as_str(), s.len()))
    }

    pub fn insert(&mut self, t: &Task) {
        let place = (Reverse(t.priority), t.id);
        match &t.target.worker_id {
            Some(w) => self.workers.entry(w.clone()).or_default().insert(place),
            None => self.types.entry(t.kind.clone()).or_default().insert(place),
        };
    }

    pub fn remove(&mut self, t: &Task) {
        let place = (Reverse(t.priority), t.id);
        match &t.target.worker_id {
            Some(w) => take_out(&mut self.workers, w, &place),
            None => take_out(&mut self.types, t.kind.as_str(), &place),
        }
    }

    /// The best task `worker` may take: the first that `takes` accepts at
    /// the head of each queue it reads (its own, and those of `types`, or
    /// of every type, but the paused), the highest priority then oldest of
    /// those. Costs the queues read plus the tasks passed over at their
    /// heads. (`takes` refuses a paused type's tasks in the worker's own
    /// queue.)
    pub fn best(
        &self,
        worker: &WorkerId,
        types: Option<&[String]>,
        takes: impl Fn(&TaskId) -> bool,
    ) -> Option<TaskId> {
        let own = self.workers.get(&**worker);
        let open = |t: &String| !self.paused.contains(t) && !self.closed.contains(t);
        let typed: Box<dyn Iterator<Item = &BTreeSet<Place>>> = match types {
            Some(types) => Box::new(
                types
                    .iter()
                    .filter(|t| open(t))
                    .filter_map(|t| self.types.get(t.as_str())),
            ),
            None => Box::new(self.types.iter().filter(|(t, _)| open(t)).map(|(_, s)| s)),
        };
        own.into_iter()
            .chain(typed)
            .filter_map(|q| q.iter().find(|(_, id)| takes(id)).copied())
            .min()
            .map(|(_, id)| id)
    }
}

/// Take a place out of a queue, and the queue out once it is empty.
fn take_out<K>(map: &mut HashMap<K, BTreeSet<Place>>, key: &str, place: &Place)
where
    K: std::borrow::Borrow<str> + std::hash::Hash + Eq,
{
    if let Some(set) = map.get_mut(key) {
        set.remove(place);
        if set.is_empty() {
            map.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::task::parse_submit;

    fn task(id: u64, body: &str) -> Task {
        parse_submit(body.as_bytes(), TaskId(id), 0).unwrap()
    }

    #[test]
    fn the_best_head_of_the_queues_a_worker_reads() {
        let mut q = Queues::default();
        let scan = task(1, r#"{"type":"scan"}"#);
        let urgent = task(2, r#"{"type":"resize","priority":9}"#);
        let mine = task(3, r#"{"type":"scan","worker_id":"w1"}"#);
        for t in [&scan, &urgent, &mine] {
            q.insert(t);
        }
        let w1: WorkerId = "w1".into();
        let all = |_: &TaskId| true;
        assert_eq!(q.best(&w1, None, all), Some(TaskId(2)), "priority first");
        let scans = ["scan".to_string()];
        assert_eq!(q.best(&w1, Some(&scans), all), Some(TaskId(1)), "then age");
        assert_eq!(q.best(&"w2".into(), Some(&scans), all), Some(TaskId(1)));
        let not_one = |id: &TaskId| *id != TaskId(1);
        assert_eq!(
            q.best(&w1, Some(&scans), not_one),
            Some(TaskId(3)),
            "its own"
        );
        assert!(q.pause("resize", true) && !q.pause("resize", true));
        assert_eq!(q.best(&w1, None, all), Some(TaskId(1)), "resize paused");
        assert!(q.pause("resize", false));
        assert_eq!(q.best(&w1, None, all), Some(TaskId(2)), "resumed");
        for t in [&scan, &urgent, &mine] {
            q.remove(t);
        }
        assert!(q.is_empty());
    }
}
