//! Which tasks changed, for `/ws/tasks`: a version per change and the ids
//! of the newest [`CHANGELOG`] changes, and whom to tell (a [`Notify`]
//! handed over at construction). A client remembers the version it was
//! given and asks what changed since; one that fell further behind than
//! the log reaches gets a new snapshot.

use super::journal::Record;
use super::task::TaskId;
use crate::fleet::notify::Notify;
use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Changes remembered.
pub const CHANGELOG: usize = 10_000;

pub struct Feed {
    version: AtomicU64,
    log: Mutex<VecDeque<(u64, TaskId)>>,
    notify: Arc<dyn Notify>,
}

impl Feed {
    pub fn new(notify: Arc<dyn Notify>) -> Feed {
        Feed {
            version: AtomicU64::new(0),
            log: Mutex::default(),
            notify,
        }
    }

    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Note the tasks these records change; wake the HTTP loop.
    pub fn note(&self, records: &[Record]) {
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        let mut changed = false;
        for r in records {
            let id = match r {
                Record::Submit { task } => task.id,
                Record::Progress { id, .. } | Record::Forget { id } => *id,
                Record::Log { .. }
                | Record::Pause { .. }
                | Record::Schedule { .. }
                | Record::Unschedule { .. }
                | Record::Limit { .. } => continue,
            };
            let v = self.version.fetch_add(1, Ordering::AcqRel) + 1;
            log.push_back((v, id));
            if log.len() > CHANGELOG {
                log.pop_front();
            }
            changed = true;
        }
        drop(log);
        if changed {
            self.notify.notify();
        }
    }

    /// The ids changed after `since`, and the version now; `None` when the
    /// log no longer reaches back to `since`.
    pub fn since(&self, since: u64) -> Option<(BTreeSet<TaskId>, u64)> {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        let v = self.version();
        if log.front().is_some_and(|(first, _)| *first > since + 1) {
            return None;
        }
        let ids = log
            .iter()
            .filter(|(at, _)| *at > since)
            .map(|(_, id)| *id)
            .collect();
        Some((ids, v))
    }
}
