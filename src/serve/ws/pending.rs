//! A fleet client's latest-wins set: the newest snapshot of each worker
//! that changed since its last message, given back oldest change first.
//!
//! A client that is behind takes every change of the fleet into this set,
//! so an insert is on the HTTP loop's path once per change per such
//! client: a hash map keyed by the worker id (std's keyed SipHash, since
//! peers choose the ids) and a queue of the order in which workers first
//! became pending. An ordered map keyed by the id string cost a dozen and
//! more string comparisons per insert at 95,000 workers; taking workers in
//! the order they changed also means a client cut at `ws_max_queue_bytes`
//! message after message is sent every worker in turn, not the low ids
//! again and again.
//!
//! A worker removed from the set leaves its place in the queue behind; the
//! place is skipped when reached (its mark is stale), and the queue is
//! compacted once stale places outnumber live ones, so the set stays
//! bounded by the workers in it whatever the fleet's churn.

use crate::fleet::snapshot::Snapshot;
use crate::proto::WorkerId;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

#[derive(Default)]
pub struct Pending {
    /// Each pending worker's latest snapshot, and the mark of its place.
    latest: HashMap<WorkerId, (u64, Arc<Snapshot>)>,
    /// Places, in the order the workers became pending.
    order: VecDeque<(u64, WorkerId)>,
    next_mark: u64,
}

impl Pending {
    pub fn is_empty(&self) -> bool {
        self.latest.is_empty()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.latest.len()
    }

    pub fn clear(&mut self) {
        self.latest.clear();
        self.order.clear();
    }

    /// The worker's newest snapshot; it keeps its place if it had one.
    pub fn insert(&mut self, snap: &Arc<Snapshot>) {
        if let Some((_, s)) = self.latest.get_mut(&snap.id) {
            *s = snap.clone();
            return;
        }
        let mark = self.next_mark;
        self.next_mark += 1;
        self.latest.insert(snap.id.clone(), (mark, snap.clone()));
        self.order.push_back((mark, snap.id.clone()));
    }

    pub fn remove(&mut self, id: &WorkerId) {
        if self.latest.remove(id).is_some() && self.order.len() > 2 * self.latest.len() + 64 {
            let latest = &self.latest;
            self.order
                .retain(|(mark, id)| latest.get(id).is_some_and(|(m, _)| m == mark));
        }
    }

    /// The worker that has been pending longest, and its newest snapshot.
    pub fn pop(&mut self) -> Option<(WorkerId, Arc<Snapshot>)> {
        while let Some((mark, id)) = self.order.pop_front() {
            if self.latest.get(&id).is_some_and(|(m, _)| *m == mark) {
                let (_, snap) = self.latest.remove(&id)?;
                return Some((id, snap));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::snapshot::tests::queued as snap;

    fn drain(p: &mut Pending) -> Vec<(String, u64)> {
        std::iter::from_fn(|| p.pop())
            .map(|(id, s)| (id.to_string(), s.queue_depth))
            .collect()
    }

    #[test]
    fn the_newest_snapshot_in_the_order_workers_first_changed() {
        let mut p = Pending::default();
        p.insert(&snap("b", 1));
        p.insert(&snap("a", 1));
        p.insert(&snap("b", 2));
        p.insert(&snap("c", 1));
        assert_eq!(p.len(), 3);
        assert_eq!(
            drain(&mut p),
            [("b".into(), 2), ("a".into(), 1), ("c".into(), 1)]
        );
        assert!(p.is_empty() && p.pop().is_none());
    }

    #[test]
    fn a_removed_worker_that_returns_takes_a_new_place() {
        let mut p = Pending::default();
        p.insert(&snap("a", 1));
        p.insert(&snap("b", 1));
        p.remove(&"a".into());
        p.insert(&snap("c", 1));
        p.insert(&snap("a", 2));
        assert_eq!(
            drain(&mut p),
            [("b".into(), 1), ("c".into(), 1), ("a".into(), 2)],
            "a's first place is stale and skipped"
        );
    }

    #[test]
    fn churn_does_not_grow_the_queue() {
        let mut p = Pending::default();
        p.insert(&snap("steady", 1));
        for i in 0..10_000 {
            let id = format!("w{i}");
            p.insert(&snap(&id, 1));
            p.remove(&id.as_str().into());
        }
        assert_eq!(p.len(), 1);
        assert!(p.order.len() <= 2 * p.len() + 65, "{}", p.order.len());
        assert_eq!(drain(&mut p), [("steady".into(), 1)]);
    }
}
