//! A deadline per worker, in a heap: the sweeper's (when a worker would be
//! silent too long) and the alert rules' (when a worker's oldest inactive
//! spell leaves the flapping window).
//!
//! Setting a worker's deadline anew pushes a new entry and leaves the old
//! one in the heap, stale: popping skips an entry that is not the one in
//! force. So a set is O(log n) and never searches the heap. Stale entries
//! (a deadline moved, a worker cancelled or removed) are dropped once they
//! outnumber the ones in force, so the heap stays within twice the
//! deadlines in force however many workers come and go.

use crate::proto::WorkerId;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Instant;

/// Stale entries kept at most beyond twice those in force.
pub const STALE_KEPT: usize = 1024;

#[derive(Default)]
pub struct Deadlines {
    heap: BinaryHeap<Reverse<(Instant, WorkerId)>>,
    /// Each worker's deadline in force; heap entries that differ are stale.
    due: HashMap<WorkerId, Instant>,
}

impl Deadlines {
    /// `id`'s deadline is `at` (its earlier one, if any, no longer is).
    pub fn set(&mut self, id: &WorkerId, at: Instant) {
        if self.due.get(id) != Some(&at) {
            self.due.insert(id.clone(), at);
            self.heap.push(Reverse((at, id.clone())));
        }
    }

    /// `id` has no deadline any more.
    pub fn cancel(&mut self, id: &str) {
        self.due.remove(id);
    }

    /// The worker with the earliest deadline in force, taken out, if
    /// `due` says that deadline is due.
    pub fn pop(&mut self, due: impl Fn(Instant) -> bool) -> Option<WorkerId> {
        while let Some(Reverse((at, _))) = self.heap.peek() {
            if !due(*at) {
                return None;
            }
            let Reverse((at, id)) = self.heap.pop()?;
            if self.due.get(&id) == Some(&at) {
                self.due.remove(&id);
                return Some(id);
            }
        }
        None
    }

    /// Deadlines in force.
    pub fn len(&self) -> usize {
        self.due.len()
    }

    pub fn is_empty(&self) -> bool {
        self.due.is_empty()
    }

    pub fn clear(&mut self) {
        self.heap.clear();
        self.due.clear();
    }

    /// Keep only the deadlines of the workers `keep` names; their stale
    /// entries go too. O(deadlines).
    pub fn retain(&mut self, keep: impl Fn(&WorkerId) -> bool) {
        self.due.retain(|id, _| keep(id));
        self.drop_stale();
    }

    /// Drop the stale entries once they outnumber those in force.
    /// O(heap), once per as many stale entries as there are deadlines.
    pub fn compact(&mut self) {
        if self.heap.len() > 2 * self.due.len() + STALE_KEPT {
            self.drop_stale();
        }
    }

    fn drop_stale(&mut self) {
        let due = &self.due;
        self.heap
            .retain(|Reverse((at, id))| due.get(id) == Some(at));
    }

    /// Heap entries, stale ones included.
    #[cfg(test)]
    pub fn entries(&self) -> usize {
        self.heap.len()
    }

    /// The workers with a deadline.
    #[cfg(test)]
    pub fn ids(&self) -> Vec<&str> {
        self.due.keys().map(|k| &**k).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn pops_in_order_skips_stale_and_compacts() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut d = Deadlines::default();
        d.set(&"a".into(), at(30));
        d.set(&"b".into(), at(10));
        d.set(&"a".into(), at(20)); // moved: its entry at 30 is stale
        d.cancel("b");
        d.set(&"c".into(), at(40));
        assert_eq!(d.pop(|t| t <= at(25)).as_deref(), Some("a"));
        assert_eq!(d.pop(|t| t <= at(35)), None, "a's old entry is stale");
        assert_eq!(d.pop(|t| t < at(40)), None);
        assert_eq!(d.pop(|t| t <= at(40)).as_deref(), Some("c"));
        assert!(d.is_empty());

        for i in 0..10_000 {
            d.set(&format!("w{i}").as_str().into(), at(i));
            d.cancel(&format!("w{i}"));
        }
        d.compact();
        assert!(d.entries() <= STALE_KEPT, "{} entries", d.entries());
        d.set(&"kept".into(), at(1));
        d.set(&"gone".into(), at(2));
        d.retain(|id| &**id == "kept");
        assert_eq!((d.ids(), d.entries()), (vec!["kept"], 1));
    }
}
