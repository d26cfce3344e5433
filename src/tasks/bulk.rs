//! `POST /api/tasks/bulk`: cancel, retry or delete many tasks at once,
//! named by id or by a [`Filter`], at most [`MAX_BULK`] a request (the
//! oldest first; `more` says to send it again). Each task goes the way a
//! single `DELETE` or `retry` takes it; `delete` removes ended tasks (from
//! the journal, or from every node's copy in cluster mode).

use super::Tasks;
use super::book::Effects;
use super::cluster::Write;
use super::filter::Filter;
use super::journal::Record;
use super::task::{BadField, TaskId};
use crate::clock::unix_ms;
use serde::Serialize;
use serde_json::Value;

/// Tasks one request acts on at most.
pub const MAX_BULK: usize = 10_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Cancel,
    Retry,
    Delete,
}

impl Action {
    pub fn parse(s: &str) -> Option<Action> {
        match s {
            "cancel" => Some(Action::Cancel),
            "retry" => Some(Action::Retry),
            "delete" => Some(Action::Delete),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Cancel => "cancel",
            Action::Retry => "retry",
            Action::Delete => "delete",
        }
    }
}

/// Which tasks: these ids, or those a filter matches.
#[derive(Clone, Debug, PartialEq)]
pub enum Selection {
    Ids(Vec<TaskId>),
    Filter(Filter),
}

/// Read a `POST /api/tasks/bulk` body: its action, and its ids or its
/// filter (one of the two; a filter naming at least one key).
pub fn parse(body: &[u8]) -> Result<(Action, Selection), BadField> {
    let bad = |field: &'static str, why: &str| BadField(field, why.to_string());
    let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(body) else {
        return Err(bad("body", "a JSON object with action, and ids or filter"));
    };
    let Some(action) = m
        .get("action")
        .and_then(Value::as_str)
        .and_then(Action::parse)
    else {
        return Err(bad("action", "cancel, retry or delete"));
    };
    let which = match (m.get("ids"), m.get("filter")) {
        (Some(Value::Array(ids)), None) => {
            if ids.len() > MAX_BULK {
                return Err(bad("ids", &format!("at most {MAX_BULK}")));
            }
            let ids = ids.iter().map(|v| v.as_str().and_then(TaskId::parse));
            Selection::Ids(
                ids.collect::<Option<Vec<_>>>()
                    .ok_or_else(|| bad("ids", "a list of task ids"))?,
            )
        }
        (None, Some(Value::Object(f))) => {
            let f = Filter::from_json(f)?;
            if f.is_empty() {
                return Err(bad(
                    "filter",
                    "name at least one key: an empty filter is every task",
                ));
            }
            Selection::Filter(f)
        }
        _ => return Err(bad("body", "either ids (a list) or filter (an object)")),
    };
    Ok((action, which))
}

/// What a bulk action did.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Done {
    pub action: &'static str,
    /// Tasks it looked at: the ids that exist, or the filter's matches.
    pub matched: usize,
    /// Of those, the ones it changed.
    pub changed: usize,
    /// The ones it left as they were (a cancel of an ended task, a retry
    /// of a succeeded one, a delete of one not ended or that a waiting
    /// task depends on).
    pub unchanged: usize,
    /// The filter matched more than [`MAX_BULK`]: send it again.
    pub more: bool,
}

impl Tasks {
    pub fn bulk(&self, action: Action, which: &Selection) -> Done {
        let (ids, more) = match which {
            Selection::Ids(ids) => {
                let book = self.lock();
                let known = ids
                    .iter()
                    .copied()
                    .filter(|id| book.entries.contains_key(id));
                (known.collect::<Vec<_>>(), false)
            }
            Selection::Filter(f) => {
                let book = self.lock();
                let mut ids: Vec<TaskId> = book
                    .entries
                    .values()
                    .filter(|e| f.matches(&e.task))
                    .map(|e| e.task.id)
                    .take(MAX_BULK + 1)
                    .collect();
                let more = ids.len() > MAX_BULK;
                ids.truncate(MAX_BULK);
                (ids, more)
            }
        };
        let changed = match action {
            Action::Cancel => ids
                .iter()
                .filter(|id| {
                    let was = self.get(**id).map(|t| t.state());
                    was.is_some_and(|s| !s.is_final()) && self.cancel(**id).is_some()
                })
                .count(),
            Action::Retry => ids
                .iter()
                .filter(|id| matches!(self.retry(**id), Some(Ok(_))))
                .count(),
            Action::Delete => self.delete(&ids),
        };
        if !ids.is_empty() {
            self.poke();
        }
        Done {
            action: action.as_str(),
            matched: ids.len(),
            changed,
            unchanged: ids.len() - changed,
            more,
        }
    }

    /// Forget the ended tasks among `ids`: in the journal, or marked
    /// deleted in the database for every node. How many.
    fn delete(&self, ids: &[TaskId]) -> usize {
        let mut book = self.lock();
        let mut fx = Effects::default();
        let mut gone = Vec::new();
        for &id in ids {
            if book
                .entries
                .get(&id)
                .is_some_and(|e| e.task.state().is_final())
                && !book.pinned(id)
            {
                book.forget(id);
                fx.records.push(Record::Forget { id });
                gone.push(id);
            }
        }
        let n = gone.len();
        if let (Some(store), false) = (&self.store, gone.is_empty()) {
            book.deleted_here.extend(gone.iter().copied());
            store.send(Write::Delete {
                ids: gone,
                at: unix_ms(),
            });
        }
        self.runner.apply(&book, fx, None);
        n
    }
}
