//! The change feed: worker threads say "this worker changed" or "this worker
//! is gone", the HTTP loop collects them when it is told (a [`Notify`]
//! handed over at construction).
//!
//! Coalescing and bounded: a worker that changes a thousand times between
//! two drains is one entry, so the feed never holds more ids than there are
//! workers. It wakes the loop only when the feed goes from empty to
//! non-empty, and records nothing while no one subscribes, so a daemon with
//! no live subscribers pays one relaxed load per change.
//!
//! It carries state: each change is the snapshot just published, the latest
//! one per worker, so the HTTP loop fans out without going back to the
//! registry for each worker or each client.
//!
//! A second, separate reader takes this node's own workers' changes: the
//! alert rules ([`Changes::set_watching`]), which judge a worker again only
//! when it changed, never by a pass over the fleet.
//!
//! It also keeps a version, bumped before and after every publish, and after
//! every insert and removal, whether or not anyone subscribes: a reader that
//! assembled something from every snapshot at version `v` may reuse it while
//! the version is still `v`. (Before: whoever sees the new snapshot also sees
//! a new version. After: whatever was assembled meanwhile is not reused.)

use super::notify::{Nobody, Notify};
use super::snapshot::Snapshot;
use crate::proto::WorkerId;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{
    AtomicBool, AtomicU64, Ordering::Acquire, Ordering::Relaxed, Ordering::Release,
};
use std::sync::{Arc, Mutex};

/// Removal notices kept between drains at most; older ones are dropped
/// (subscribers then learn of the removal from their next full snapshot).
pub const MAX_REMOVED: usize = 65536;

#[derive(Default)]
struct Pending {
    changed: HashMap<WorkerId, Arc<Snapshot>>,
    removed: Vec<WorkerId>,
}

/// What the watcher has not taken yet: latest snapshot per changed local
/// worker, and the ids removed since. Both hold at most one entry per id.
#[derive(Default)]
struct Watched {
    changed: HashMap<WorkerId, Arc<Snapshot>>,
    removed: HashSet<WorkerId>,
}

pub struct Changes {
    pending: Mutex<Pending>,
    watched: Mutex<Watched>,
    watching: AtomicBool,
    /// Told when the feed goes from empty to not empty.
    notify: Arc<dyn Notify>,
    wanted: AtomicBool,
    version: AtomicU64,
}

impl Default for Changes {
    fn default() -> Changes {
        Changes::new(Arc::new(Nobody))
    }
}

impl Changes {
    /// A feed that tells `notify` when there is something to take.
    pub fn new(notify: Arc<dyn Notify>) -> Changes {
        Changes {
            pending: Mutex::default(),
            watched: Mutex::default(),
            watching: AtomicBool::new(false),
            notify,
            wanted: AtomicBool::new(false),
            version: AtomicU64::new(0),
        }
    }

    /// Whether anyone subscribes; while false, nothing is recorded.
    pub fn set_wanted(&self, wanted: bool) {
        self.wanted.store(wanted, Relaxed);
    }

    /// The fleet's version: read it before reading the snapshots.
    pub fn version(&self) -> u64 {
        self.version.load(Acquire)
    }

    /// Say that the fleet changed (a worker was added) without naming it.
    pub fn bump(&self) {
        self.version.fetch_add(1, Release);
    }

    fn record(&self, f: impl FnOnce(&mut Pending)) {
        self.bump();
        if !self.wanted.load(Relaxed) {
            return;
        }
        let was_empty = {
            let Ok(mut p) = self.pending.lock() else {
                return;
            };
            let was_empty = p.changed.is_empty() && p.removed.is_empty();
            f(&mut p);
            was_empty
        };
        if was_empty {
            self.notify.notify();
        }
    }

    /// Start (or stop) keeping local workers' changes for [`Self::take_watched`].
    pub fn set_watching(&self, on: bool) {
        self.watching.store(on, Relaxed);
        if !on {
            *self.watched.lock().unwrap_or_else(|p| p.into_inner()) = Watched::default();
        }
    }

    /// The local workers changed and the ids removed since the last take.
    /// An id in both was removed and then seen again: apply the removals
    /// first.
    pub fn take_watched(&self) -> (Vec<Arc<Snapshot>>, Vec<WorkerId>) {
        let mut w = self.watched.lock().unwrap_or_else(|p| p.into_inner());
        (
            w.changed.drain().map(|(_, s)| s).collect(),
            w.removed.drain().collect(),
        )
    }

    pub fn removed(&self, id: &WorkerId) {
        if self.watching.load(Relaxed) {
            let mut w = self.watched.lock().unwrap_or_else(|p| p.into_inner());
            w.changed.remove(id);
            w.removed.insert(id.clone());
        }
        self.record(|p| {
            p.changed.remove(id);
            if p.removed.len() >= MAX_REMOVED {
                p.removed.remove(0);
            }
            p.removed.push(id.clone());
        });
    }

    /// A worker published `snap`; it replaces any change not yet taken.
    /// While someone streams changes its telemetry is rendered here, on the
    /// worker's own thread, so the HTTP loop's fan-out only copies it.
    pub fn changed(&self, snap: &Arc<Snapshot>) {
        self.published(snap, &|| false);
    }

    /// A worker of this node published `snap` (its own thread calls this):
    /// for the subscribers and for the watcher. `stopped` says whether the
    /// registry removed the worker meanwhile. It is read under each lock
    /// [`Self::removed`] takes, and the registry stops a worker before it
    /// calls that, so a publish that loses the race to its worker's removal
    /// is dropped rather than bringing the worker back after its removal
    /// (to the subscribers, and to the alert rules, which would keep it).
    pub fn local(&self, snap: &Arc<Snapshot>, stopped: &dyn Fn() -> bool) {
        self.published(snap, stopped);
        if self.watching.load(Relaxed) {
            let mut w = self.watched.lock().unwrap_or_else(|p| p.into_inner());
            if !stopped() {
                w.changed.insert(snap.id.clone(), snap.clone());
            }
        }
    }

    fn published(&self, snap: &Arc<Snapshot>, stopped: &dyn Fn() -> bool) {
        if self.wanted.load(Relaxed) {
            let _ = snap.telemetry_json();
        }
        self.record(|p| {
            if !stopped() {
                p.changed.insert(snap.id.clone(), snap.clone());
            }
        });
    }

    /// Take everything recorded so far: the latest snapshot of each changed
    /// worker, and the ids removed.
    pub fn take(&self) -> (Vec<Arc<Snapshot>>, Vec<WorkerId>) {
        match self.pending.lock() {
            Ok(mut p) => (
                p.changed.drain().map(|(_, s)| s).collect(),
                std::mem::take(&mut p.removed),
            ),
            Err(_) => (Vec::new(), Vec::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::snapshot::tests::queued as snap;
    use std::sync::atomic::AtomicUsize;

    struct Count(AtomicUsize);
    impl Notify for Count {
        fn notify(&self) {
            self.0.fetch_add(1, Relaxed);
        }
    }

    #[test]
    fn coalesces_and_wakes_once_per_batch() {
        let told = Arc::new(Count(AtomicUsize::new(0)));
        let changes = Changes::new(told.clone());
        changes.changed(&snap("a", 0));
        assert!(
            changes.take().0.is_empty(),
            "nothing recorded while unwanted"
        );

        changes.set_wanted(true);
        for q in 0..1000 {
            changes.changed(&snap("a", q));
        }
        changes.changed(&snap("b", 0));
        changes.removed(&"b".into());
        assert_eq!(told.0.load(Relaxed), 1, "told once for the batch");
        let (changed, removed) = changes.take();
        assert_eq!(changed.len(), 1);
        assert_eq!(
            (&*changed[0].id, changed[0].queue_depth),
            ("a", 999),
            "the latest wins"
        );
        assert_eq!(removed.len(), 1);
        assert_eq!(&*removed[0], "b");
        let (changed, removed) = changes.take();
        assert!(changed.is_empty() && removed.is_empty());
    }

    /// A change is rendered by whoever records it (the worker's thread)
    /// while someone streams changes, and not at all while nobody does.
    #[test]
    fn the_watcher_sees_local_changes_and_removals_only_while_watching() {
        let changes = Changes::default();
        changes.local(&snap("a", 1), &|| false);
        assert!(changes.take_watched().0.is_empty(), "not watching yet");
        changes.set_watching(true);
        for q in 0..10 {
            changes.local(&snap("a", q), &|| false);
        }
        changes.local(&snap("b", 0), &|| false);
        changes.removed(&"b".into());
        let (changed, removed) = changes.take_watched();
        assert_eq!(changed.len(), 1);
        assert_eq!((&*changed[0].id, changed[0].queue_depth), ("a", 9));
        assert_eq!(
            removed,
            vec![WorkerId::from("b")],
            "b's change went with it"
        );
        // Removed, then back: both, the removal to be applied first.
        changes.removed(&"c".into());
        changes.local(&snap("c", 3), &|| false);
        let (changed, removed) = changes.take_watched();
        assert_eq!((changed.len(), removed.len()), (1, 1));
        assert!(changes.take_watched().0.is_empty());
        assert!(
            changes.take().0.is_empty(),
            "the subscribers' feed is apart from the watcher's"
        );
    }

    /// A worker's last publish that comes after its removal (it was
    /// stopped between applying a batch and publishing it) is in neither
    /// feed: the worker stays removed.
    #[test]
    fn a_publish_after_the_removal_of_its_worker_is_dropped() {
        let changes = Changes::default();
        changes.set_wanted(true);
        changes.set_watching(true);
        changes.local(&snap("a", 1), &|| false);
        changes.removed(&"a".into());
        changes.local(&snap("a", 2), &|| true);
        let (changed, removed) = changes.take();
        assert!(changed.is_empty(), "subscribers see a only removed");
        assert_eq!(removed, vec![WorkerId::from("a")]);
        let (changed, removed) = changes.take_watched();
        assert!(changed.is_empty(), "the watcher sees a only removed");
        assert_eq!(removed, vec![WorkerId::from("a")]);
        // Its successor under the same id is not stopped: it is seen.
        changes.local(&snap("a", 3), &|| false);
        assert_eq!(changes.take().0.len(), 1);
        assert_eq!(changes.take_watched().0.len(), 1);
    }

    #[test]
    fn a_change_is_rendered_where_it_is_recorded_while_wanted() {
        let changes = Changes::default();
        let quiet = snap("a", 1);
        changes.changed(&quiet);
        assert!(!quiet.is_rendered());
        changes.set_wanted(true);
        let heard = snap("a", 2);
        changes.changed(&heard);
        assert!(heard.is_rendered());
        assert!(
            changes.take().0[0]
                .telemetry_json()
                .contains("\"queue_depth\":2")
        );
    }
}
