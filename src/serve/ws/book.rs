//! Streams read from a book of their own rather than the worker change
//! feed: `/ws/tasks` (the task book) and `/ws/alerts` (the alerts). A
//! client remembers the version it was sent and is composed a message when
//! the book has moved past it; the loop asks when the book says it moved.

use crate::clock::unix_ms;
use crate::tasks::Tasks;
use serde_json::json;

pub trait Book: Send + Sync {
    /// The message for a client that has seen version `seen` (`None`: it
    /// needs a snapshot), and the version it brings the client to; `None`
    /// when there is nothing new.
    fn compose(&self, seen: Option<u64>) -> Option<(String, u64)>;
}

/// `/ws/tasks`: the newest tasks, then what changed, as it is now (a slow
/// client gets the latest state of each task, never a backlog; one that
/// fell behind the change log gets a new snapshot).
impl Book for Tasks {
    fn compose(&self, seen: Option<u64>) -> Option<(String, u64)> {
        if seen == Some(Tasks::version(self)) {
            return None;
        }
        match seen.and_then(|s| self.changes_since(s, |_| true)) {
            Some((changed, removed, v)) => {
                if changed.is_empty() && removed.is_empty() {
                    return Some((String::new(), v));
                }
                let m = json!({"type": "update", "timestamp": unix_ms(), "tasks": crate::tasks::task::shown(&changed), "removed": removed});
                Some((m.to_string(), v))
            }
            None => {
                let (all, v) = self.snapshot(crate::tasks::SNAPSHOT_TASKS);
                let m = json!({"type": "snapshot", "timestamp": unix_ms(), "tasks": crate::tasks::task::shown(&all)});
                Some((m.to_string(), v))
            }
        }
    }
}

/// `/ws/alerts`: the whole list (firing, pending, resolved in the last
/// hour) on connect and again after each firing or resolving: it is small.
impl Book for crate::alerts::Alerts {
    fn compose(&self, seen: Option<u64>) -> Option<(String, u64)> {
        let v = crate::alerts::Alerts::version(self);
        if seen == Some(v) {
            return None;
        }
        let mut m = self.view();
        m["type"] = json!(if seen.is_some() { "update" } else { "snapshot" });
        m["timestamp"] = json!(unix_ms());
        Some((m.to_string(), v))
    }
}
