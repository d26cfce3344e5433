//! The queues, schedules and limits as `/api/queues`, `/api/schedules`
//! and `/api/limits` reach them. Schedules: made or changed,
//! listed, paused, resumed and deleted, each change recorded (the journal,
//! or the database for every node). Ticks fire from the scheduler's turn
//! on a single node ([`super::book::Book::fire_schedules`]), and from the
//! leader's in cluster mode (`duties.rs`).

use super::Tasks;
use super::journal::Record;
use super::schedule::{MAX_SCHEDULES, Schedule};
use serde_json::Value;

/// A task type's queue, as `GET /api/queues` shows it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct QueueView {
    #[serde(rename = "type")]
    pub kind: String,
    pub paused: bool,
    pub queued: usize,
}

impl QueueView {
    fn new(kind: &str, queued: usize, paused: bool) -> QueueView {
        QueueView {
            kind: kind.to_string(),
            paused,
            queued,
        }
    }
}

/// Why a schedule was not made.
#[derive(Debug, PartialEq)]
pub enum NotMade {
    /// [`MAX_SCHEDULES`] are kept already.
    Full,
    /// Its timing no longer parses here.
    Bad,
}

impl Tasks {
    /// `POST /api/queues/{type}/pause|resume`: whether it changed
    /// anything. Kept in the journal, or in the database (cluster-wide:
    /// every node's claims skip a paused type there).
    pub fn pause(&self, kind: &str, paused: bool) -> bool {
        let changed = self.change(|book, fx| book.pause(kind, paused, fx));
        self.poke();
        changed
    }

    /// `GET /api/queues`: every type queued or paused, with its depth.
    pub fn queues(&self) -> Vec<QueueView> {
        let book = self.lock();
        let q = book.queues();
        let mut by: std::collections::BTreeMap<&str, QueueView> = q
            .depths()
            .map(|(k, n)| (k, QueueView::new(k, n, false)))
            .collect();
        for k in q.paused() {
            by.entry(k.as_str())
                .or_insert_with(|| QueueView::new(k, 0, true))
                .paused = true;
        }
        by.into_values().collect()
    }

    /// Make `s`, or change the one with its name (which keeps its record
    /// of ticks). Its view, and whether it is new.
    pub fn schedule_put(&self, mut s: Schedule) -> Result<(Value, bool), NotMade> {
        // The scheduler learns the schedule's first tick at its next turn.
        let made = self.change(|book, fx| {
            let old = book.schedules.get(&s.name);
            let new = old.is_none();
            if let Some(old) = old {
                s.created_at = old.created_at;
                s.last_tick = old.last_tick;
                s.last_task = old.last_task;
                s.fired = old.fired;
                s.skipped = old.skipped;
            } else if book.schedules.len() >= MAX_SCHEDULES {
                return Err(NotMade::Full);
            }
            if !book.schedules.put(s.clone()) {
                return Err(NotMade::Bad);
            }
            log::info!(
                "schedule {} {}: {} in {}",
                s.name,
                if new { "made" } else { "changed" },
                s.cron,
                s.timezone
            );
            let view = serde_json::to_value(book.schedules.view(&s.name)).unwrap_or_default();
            fx.records.push(Record::Schedule {
                schedule: Box::new(s),
            });
            Ok((view, new))
        });
        self.poke();
        made
    }

    pub fn schedules(&self) -> Value {
        serde_json::to_value(self.lock().schedules.views()).unwrap_or_default()
    }

    pub fn schedule(&self, name: &str) -> Option<Value> {
        let book = self.lock();
        book.schedules
            .view(name)
            .map(|v| serde_json::to_value(v).unwrap_or_default())
    }

    /// Delete a schedule: its view as it was. Tasks it submitted stay.
    pub fn unschedule(&self, name: &str) -> Option<Value> {
        self.change(|book, fx| {
            let view = serde_json::to_value(book.schedules.view(name)?).unwrap_or_default();
            book.schedules.remove(name);
            log::info!("schedule {name} deleted");
            fx.records.push(Record::Unschedule {
                name: name.to_string(),
            });
            Some(view)
        })
    }

    /// Pause or resume a schedule; its view. Ticks missed while paused
    /// are as its `catch_up` says.
    pub fn schedule_pause(&self, name: &str, paused: bool) -> Option<Value> {
        let out = self.change(|book, fx| {
            let mut s = book.schedules.get(name)?.clone();
            if s.paused != paused {
                s.paused = paused;
                book.schedules.put(s.clone());
                log::info!(
                    "schedule {name} {}",
                    if paused { "paused" } else { "resumed" }
                );
                fx.records.push(Record::Schedule {
                    schedule: Box::new(s),
                });
            }
            book.schedules
                .view(name)
                .map(|v| serde_json::to_value(v).unwrap_or_default())
        });
        self.poke();
        out
    }
}

impl Tasks {
    /// `GET /api/limits`.
    pub fn limits(&self) -> Value {
        serde_json::to_value(self.lock().limits.views()).unwrap_or_default()
    }

    /// `PUT /api/limits`: set or (`None`) remove one limit, recorded.
    /// False when [`super::limit::MAX_LIMITS`] are kept already.
    pub fn set_limit(
        &self,
        scope: super::limit::Scope,
        limit: Option<super::limit::Limit>,
    ) -> bool {
        let ok = self.change(|book, fx| {
            let known = book.limits.all().any(|(s, _)| *s == scope);
            if !known && limit.is_some() && book.limits.len() >= super::limit::MAX_LIMITS {
                return false;
            }
            log::info!(
                "limit on {}: {}",
                scope.text(),
                limit.map_or_else(|| "removed".to_string(), |l| format!("{l:?}"))
            );
            book.limits.set(scope.clone(), limit);
            fx.records.push(Record::Limit { scope, limit });
            true
        });
        self.poke();
        ok
    }
}
