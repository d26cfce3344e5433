//! The scheduler's turn: deadlines, then dispatch from the book (a single
//! node) or claims from the database (cluster mode), every [`TICK`] and
//! sooner when poked.

use super::book::{Effects, Limits};
use super::task::{Backoff, State};
use super::{PROGRESS_WRITE_EVERY_MS, Tasks};
use crate::clock::unix_ms;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// How often the scheduler looks, when nothing wakes it sooner.
pub(super) const TICK: Duration = Duration::from_millis(50);
/// How often a single node's scheduler looks while its book is at rest:
/// every change that could give it work pokes it, and a scheduled task or
/// a schedule's tick sets when it wakes, so this turn only prunes
/// finished tasks past their retention (a second late at most).
pub(super) const REST_TICK: Duration = Duration::from_secs(1);

impl Tasks {
    /// One scheduler turn: deadlines, then dispatch. O(tasks held) for the
    /// deadlines; dispatch as [`book`](super::book) says.
    pub fn tick(&self) {
        let cfg = self.shared.config.get();
        let now = unix_ms();
        let limits = Limits {
            ack_timeout_ms: cfg.tasks.ack_timeout.as_millis() as u64,
            cancel_grace_ms: cfg.tasks.cancel_grace.as_millis() as u64,
            retention_ms: cfg.tasks.retention.as_millis() as u64,
            dead_retention_ms: cfg.tasks.dead_retention.as_millis() as u64,
            promote: self.store.is_none(),
        };
        let mut book = self.lock();
        book.backoff = Backoff {
            backoff_base_ms: cfg.tasks.backoff_base.as_millis() as u64,
            backoff_max_ms: (cfg.tasks.backoff_max.max(cfg.tasks.backoff_base)).as_millis() as u64,
        };
        let mut fx = Effects::default();
        book.deadlines(now, &limits, &mut fx);
        if limits.promote {
            book.settle(now, &mut fx);
            book.fire_schedules(now, cfg.tasks.max_tasks, &mut fx);
        }
        let due = book.next_due().unwrap_or(0);
        match &self.store {
            Some(s) => {
                s.next_due.store(due, Ordering::Relaxed);
                let tick = book.schedules.next_due().unwrap_or(0);
                s.next_tick.store(tick, Ordering::Relaxed);
                let waiting = book.count(State::Waiting) > 0;
                s.waiting.store(waiting, Ordering::Relaxed);
            }
            None => self
                .due
                .store(book.next_wake().unwrap_or(0), Ordering::Relaxed),
        }
        let Some(store) = &self.store else {
            book.dispatch(now, |w| self.eligible.eligible(w), &mut fx);
            self.runner.apply(&book, fx, None);
            self.resting.store(book.at_rest(), Ordering::Relaxed);
            if self.size.due(book.live_bytes) {
                self.compact(&book);
            }
            return;
        };
        book.progress_due(now, PROGRESS_WRITE_EVERY_MS, &mut fx);
        self.runner.apply(&book, fx, None);
        // Claims only while this node's lease holds: once it may have
        // lapsed, the leader may be giving its tasks to others.
        if !store.cluster.lease_holds() {
            return;
        }
        book.close_limited(now);
        let wanted = book.wanted(|w| self.eligible.eligible(w));
        let limits: Vec<_> = book.limits.all().map(|(s, l)| (s.clone(), *l)).collect();
        drop(book);
        self.adopt_reported(store, now);
        if wanted.is_empty() {
            return;
        }
        let claims = store.claim(&wanted, &limits, now);
        if claims.is_empty() {
            return;
        }
        let mut book = self.lock();
        let (mut stored, mut fx) = (Effects::default(), Effects::default());
        for c in claims {
            let id = c.task.id;
            if !book.claimed(&c.worker, c.task, c.lease, c.rev, &mut stored) {
                book.requeue(id, "its worker left while it was claimed", now, &mut fx);
            }
        }
        self.runner.apply_stored(&book, stored);
        self.runner.apply(&book, fx, None);
    }
}

/// The scheduler thread: a turn every [`TICK`] ([`REST_TICK`] while a
/// single node's book is at rest), sooner when poked or when a scheduled
/// task or a schedule's tick falls due.
pub fn run(tasks: Arc<Tasks>) {
    loop {
        {
            let (m, c) = &tasks.wake;
            let mut woken = m.lock().unwrap_or_else(|p| p.into_inner());
            let due = tasks.due.load(Ordering::Relaxed);
            let tick = if tasks.resting.load(Ordering::Relaxed) {
                REST_TICK
            } else {
                TICK
            };
            let wait = match due {
                0 => tick,
                at => tick.min(Duration::from_millis(at.saturating_sub(unix_ms()).max(1))),
            };
            if !*woken {
                woken = c
                    .wait_timeout(woken, wait)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|p| p.into_inner().0);
            }
            *woken = false;
        }
        if tasks.stopping.load(Ordering::Acquire) {
            return;
        }
        tasks.tick();
    }
}
