//! Built-in alerts: the rules in [`rules`] run twice a second over the
//! fleet (and the pool and the task book); a condition that has held for
//! its time fires, and resolves when it no longer holds. Each change is a
//! log line, a counter, a new version for `/ws/alerts`, and notifications
//! that [`notify`] posts from a thread of its own to each Alertmanager
//! (API v2) and webhook, again every `alert_resend` while firing.
//!
//! Cost per tick: the worker rules judge only the workers that changed
//! since the last tick ([`workers`]), O(changes); pending alerts are
//! checked for their hold, O(pending); the pool's, the task queue's and the
//! failed tasks' few conditions are judged whole. The hour's run outcomes
//! are counted every 10 s, O(workers that ran + runs kept), and only while
//! `error_rate` is on. Nothing here runs on a loop thread.

pub mod notify;
pub mod rules;
pub mod workers;

use crate::clock::unix_ms;
use crate::config::alerts::Rule;
use crate::fleet::Shared;
use crate::fleet::notify::Notify;
use crate::fleet::registry::Registry;
use crate::stats::Counter;
use crate::tasks::Tasks;
use crate::tasks::task::State;
use rules::{Condition, Outcomes, Thresholds};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How often the rules run: an alert fires at most this long after its
/// condition has held for its time.
pub const TICK: Duration = Duration::from_millis(500);
/// Resolved alerts kept for `/api/alerts`, and for how long.
const RESOLVED_KEPT: usize = 1000;
const RESOLVED_FOR: Duration = Duration::from_secs(3600);
/// A failed task's alert resolves by itself after this.
const TASK_ALERT_FOR: Duration = Duration::from_secs(600);
/// Failed-task alerts firing at once, at most (the oldest resolve first).
const TASK_ALERTS_MAX: usize = 100;
/// How often the hour's run outcomes are counted again.
const OUTCOMES_EVERY: Duration = Duration::from_secs(10);

/// One alert: what it says, and where it is in its life.
#[derive(Clone, Debug)]
pub struct Alert {
    pub cond: Condition,
    /// A number of its own, new for each time it fires.
    pub id: u64,
    pub pending_since: Instant,
    /// Unix ms when it fired, and when it resolved.
    pub starts_at: Option<u64>,
    pub ends_at: Option<u64>,
    resolved_at: Option<Instant>,
}

impl Alert {
    pub fn state(&self) -> &'static str {
        match (self.starts_at, self.ends_at) {
            (_, Some(_)) => "resolved",
            (Some(_), None) => "firing",
            (None, None) => "pending",
        }
    }

    /// The labels notifications carry: `alertname`, `severity` and the
    /// condition's own.
    pub fn labels(&self) -> BTreeMap<String, String> {
        let mut l = self.cond.labels.clone();
        l.insert("alertname".into(), self.cond.name.as_str().into());
        l.insert("severity".into(), self.cond.severity.into());
        l
    }

    pub fn json(&self) -> Value {
        json!({
            "alertname": self.cond.name.as_str(),
            "state": self.state(),
            "labels": self.labels(),
            "annotations": {"summary": self.cond.summary, "description": self.cond.description},
            "starts_at": self.starts_at,
            "ends_at": self.ends_at,
        })
    }
}

#[derive(Default)]
struct Inner {
    /// Pending and firing, by key.
    active: BTreeMap<String, Alert>,
    /// Those still pending, by when their hold ends: a tick takes only
    /// the ones due.
    pending: std::collections::BTreeSet<(Instant, String)>,
    /// The keys of active alerts judged whole each tick (not the worker
    /// rules'): those a tick does not name again are over.
    whole: HashSet<String>,
    /// Active alerts that fired.
    firing: usize,
    /// Newest last.
    resolved: VecDeque<Alert>,
    /// Failed tasks' alerts: key → when they fired.
    task_events: BTreeMap<String, (Instant, Condition)>,
}

impl Inner {
    /// `c` holds at `now`: a new alert starts pending, a known one takes
    /// its new words.
    fn hold(&mut self, c: Condition, now: Instant) {
        let key = c.key();
        if let Some(a) = self.active.get_mut(&key) {
            a.cond.summary = c.summary;
            a.cond.description = c.description;
            return;
        }
        let since = c.since.map_or(now, |t| t.min(now));
        self.pending.insert((since + c.hold, key.clone()));
        self.active.insert(
            key,
            Alert {
                id: 0,
                pending_since: since,
                cond: c,
                starts_at: None,
                ends_at: None,
                resolved_at: None,
            },
        );
    }

    /// The condition of `key` no longer holds: an alert that fired is
    /// resolved (true), one still pending just ends.
    fn end(&mut self, key: &str, now: Instant) -> bool {
        let Some(mut a) = self.active.remove(key) else {
            return false;
        };
        if a.starts_at.is_none() {
            let due = a.pending_since + a.cond.hold;
            self.pending.remove(&(due, key.to_string()));
            return false;
        }
        self.firing -= 1;
        a.ends_at = Some(unix_ms());
        a.resolved_at = Some(now);
        log::info!("alert resolved: {}", describe(&a));
        self.resolved.push_back(a);
        true
    }
}

pub struct Alerts {
    shared: Arc<Shared>,
    registry: Arc<Registry>,
    tasks: Arc<Tasks>,
    pool: Option<Arc<crate::pool::Pool>>,
    inner: Mutex<Inner>,
    version: AtomicU64,
    /// Woken when [`version`](Alerts::version) moves or the rules stop:
    /// the notifications' thread waits on it.
    moved: (Mutex<()>, Condvar),
    next_id: AtomicU64,
    /// Told of each firing and resolving (`/ws/alerts`).
    changed: Arc<dyn Notify>,
    stop: AtomicBool,
}

impl Alerts {
    pub fn new(
        shared: Arc<Shared>,
        registry: Arc<Registry>,
        tasks: Arc<Tasks>,
        pool: Option<Arc<crate::pool::Pool>>,
        changed: Arc<dyn Notify>,
    ) -> Alerts {
        Alerts {
            shared,
            registry,
            tasks,
            pool,
            inner: Mutex::default(),
            version: AtomicU64::new(0),
            moved: (Mutex::new(()), Condvar::new()),
            next_id: AtomicU64::new(1),
            changed,
            stop: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Moves on each firing and resolving.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.wake_waiters();
    }

    /// Wait until the version is no longer `seen`, the rules stop, or
    /// `at_most` passed.
    pub fn wait_moved(&self, seen: u64, at_most: Duration) {
        let (m, c) = &self.moved;
        let guard = m.lock().unwrap_or_else(|p| p.into_inner());
        let _ = c.wait_timeout_while(guard, at_most, |_| {
            self.version() == seen && !self.stopped()
        });
    }

    /// The waiter checks under the lock, so taking it before the notify
    /// means a waiter has either seen the change or is waiting for it.
    fn wake_waiters(&self) {
        let (m, c) = &self.moved;
        drop(m.lock().unwrap_or_else(|p| p.into_inner()));
        c.notify_all();
    }

    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// `GET /api/alerts` and `/ws/alerts`: firing, pending, and resolved in
    /// the last hour (newest first).
    pub fn view(&self) -> Value {
        let inner = self.lock();
        let pick = |state: &str| -> Vec<Value> {
            inner
                .active
                .values()
                .filter(|a| a.state() == state)
                .map(Alert::json)
                .collect()
        };
        let resolved: Vec<Value> = inner.resolved.iter().rev().map(Alert::json).collect();
        json!({"firing": pick("firing"), "pending": pick("pending"), "resolved": resolved})
    }

    /// What notifications need: firing alerts, and those resolved in the
    /// last [`notify::RESOLVED_NOTICE`].
    pub fn for_delivery(&self) -> Vec<Alert> {
        let inner = self.lock();
        let now = Instant::now();
        inner
            .active
            .values()
            .filter(|a| a.starts_at.is_some())
            .chain(inner.resolved.iter().filter(|a| {
                a.resolved_at
                    .is_some_and(|t| now.saturating_duration_since(t) < notify::RESOLVED_NOTICE)
            }))
            .cloned()
            .collect()
    }

    /// One pass over every condition, as if all were judged whole.
    #[cfg(test)]
    fn apply(&self, conds: Vec<Condition>, now: Instant) {
        self.pass(workers::Verdict::default(), conds, now);
    }

    /// One tick at `now`: the worker rules' verdict (what holds anew and
    /// what no longer does), the whole set of the other conditions; fire
    /// what has held long enough, resolve what no longer holds.
    fn pass(&self, verdict: workers::Verdict, whole: Vec<Condition>, now: Instant) {
        let mut inner = self.lock();
        let mut changed = 0u64;
        let mut seen = HashSet::with_capacity(whole.len());
        for c in whole {
            seen.insert(c.key());
            inner.hold(c, now);
        }
        let over: Vec<String> = inner.whole.difference(&seen).cloned().collect();
        inner.whole = seen;
        for c in verdict.holds {
            inner.hold(c, now);
        }
        for key in verdict.gone.into_iter().chain(over) {
            if inner.end(&key, now) {
                changed += 1;
            }
        }
        while let Some((at, key)) = inner.pending.first().cloned() {
            if at > now {
                break;
            }
            inner.pending.pop_first();
            let Some(a) = inner.active.get_mut(&key) else {
                continue;
            };
            a.starts_at = Some(unix_ms());
            a.id = self.next_id.fetch_add(1, Ordering::Relaxed);
            log::warn!("alert firing: {}: {}", describe(a), a.cond.summary);
            inner.firing += 1;
            changed += 1;
        }
        while inner.resolved.len() > RESOLVED_KEPT
            || inner.resolved.front().is_some_and(|a| {
                a.resolved_at
                    .is_some_and(|t| now.saturating_duration_since(t) > RESOLVED_FOR)
            })
        {
            inner.resolved.pop_front();
        }
        let firing = inner.firing;
        drop(inner);
        let st = &self.shared.stats;
        st.set(Counter::AlertsFiring, firing as u64);
        if changed > 0 {
            st.add(Counter::AlertChanges, changed);
            self.version.fetch_add(changed, Ordering::AcqRel);
            self.wake_waiters();
            self.changed.notify();
        }
    }

    /// Failed tasks since `seen`: each an alert of its own for
    /// [`TASK_ALERT_FOR`]; the conditions that still hold.
    fn task_conditions(&self, seen: &mut u64, now: Instant) -> Vec<Condition> {
        let mut inner = self.lock();
        let events = &mut inner.task_events;
        match self
            .tasks
            .changes_since(*seen, |t| t.state() == State::Failed)
        {
            Some((failed, _, v)) => {
                *seen = v;
                for t in &failed {
                    let c = Condition {
                        name: Rule::TaskFailed,
                        labels: BTreeMap::from([
                            ("task_id".to_string(), t.id.to_string()),
                            ("task_type".to_string(), t.kind.clone()),
                            (
                                "worker_id".to_string(),
                                t.progress.worker_id.as_deref().unwrap_or("").to_string(),
                            ),
                        ]),
                        severity: "info",
                        summary: format!("Task {} ({}) failed", t.id, t.kind),
                        description: t
                            .progress
                            .error
                            .clone()
                            .unwrap_or_else(|| "the task failed".into()),
                        hold: Duration::ZERO,
                        since: None,
                    };
                    events.insert(c.key(), (now, c));
                }
            }
            None => *seen = self.tasks.version(),
        }
        events.retain(|_, (at, _)| now.saturating_duration_since(*at) < TASK_ALERT_FOR);
        while events.len() > TASK_ALERTS_MAX {
            let oldest = events
                .iter()
                .min_by_key(|(_, (at, _))| *at)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                events.remove(&k);
            }
        }
        events.values().map(|(_, c)| c.clone()).collect()
    }

    fn pool_conditions(&self) -> Vec<Condition> {
        let Some(pool) = &self.pool else {
            return Vec::new();
        };
        pool.fatal_members()
            .into_iter()
            .map(|m| Condition {
                name: Rule::PoolMemberFatal,
                summary: format!("Pool member {m} is fatal"),
                description: format!(
                    "{m} exited pool_max_restarts times within pool_restart_window and is no longer restarted."
                ),
                labels: BTreeMap::from([("member".to_string(), m)]),
                severity: "critical",
                hold: Duration::ZERO,
                since: None,
            })
            .collect()
    }

    /// Runs in the last hour, per worker that reported any.
    fn outcomes(&self) -> Outcomes {
        let now = unix_ms();
        let mut out = HashMap::new();
        for h in self.registry.handles() {
            let p = h.read();
            if p.snapshot.runs.total == 0 {
                continue;
            }
            let (mut n, mut failed) = (0, 0);
            for r in p
                .series
                .runs
                .runs()
                .filter(|r| now.saturating_sub(r.at_ms) <= crate::fleet::runs::WINDOW_MS)
            {
                n += 1;
                failed += u64::from(!r.ok);
            }
            if n > 0 {
                out.insert(Arc::from(&*p.snapshot.id), (n, failed));
            }
        }
        out
    }
}

fn describe(a: &Alert) -> String {
    let mut s = a.cond.name.as_str().to_string();
    for (k, v) in &a.cond.labels {
        s.push_str(&format!(" {k}={v}"));
    }
    s
}

/// The rules' thread: a pass every [`TICK`] until [`Alerts::stop`].
pub fn run(alerts: Arc<Alerts>) {
    let changes = &alerts.shared.changes;
    changes.set_watching(true);
    let mut judged = workers::Workers::default();
    let mut outcomes = Outcomes::new();
    let mut outcomes_at: Option<Instant> = None;
    let mut tasks_seen = alerts.tasks.version();
    while !alerts.stopped() {
        let now = Instant::now();
        let cfg = alerts.shared.config.get();
        let t = Thresholds {
            rules: &cfg.alerts.rules,
            hold: cfg.alerts.hold,
            inactivity: cfg.fleet.inactivity_timeout,
            flapping: cfg.alerts.flapping,
            error_rate: cfg.alerts.error_rate,
            min_runs: cfg.alerts.error_rate_min_runs,
            queue_depth: cfg.alerts.queue_depth,
            task_queue_depth: cfg.alerts.task_queue_depth,
        };
        let (changed, removed) = changes.take_watched();
        let fleet = judged
            .needs_all(&t)
            .then(|| alerts.registry.shown_unsorted());
        let verdict = judged.tick(
            changed,
            removed,
            fleet,
            |id| alerts.registry.snapshot(id),
            &t,
            now,
        );
        let mut conds = Vec::new();
        if t.rules.contains(&Rule::ErrorRate) {
            if outcomes_at.is_none_or(|at| now.saturating_duration_since(at) >= OUTCOMES_EVERY) {
                outcomes = alerts.outcomes();
                outcomes_at = Some(now);
            }
            conds.extend(rules::error_rates(&outcomes, &t));
        }
        if t.rules.contains(&Rule::PoolMemberFatal) {
            conds.extend(alerts.pool_conditions());
        }
        // The queue is one for the whole cluster: the leader judges it.
        if alerts.tasks.judges_the_cluster() {
            conds.extend(rules::task_queue(alerts.tasks.queued() as u64, &t));
        }
        let task_conds = alerts.task_conditions(&mut tasks_seen, now);
        if t.rules.contains(&Rule::TaskFailed) {
            conds.extend(task_conds);
        }
        alerts.pass(verdict, conds, now);
        std::thread::sleep(TICK.saturating_sub(now.elapsed()));
    }
    changes.set_watching(false);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alerts() -> Alerts {
        let shared = Arc::new(Shared::new(crate::config::defaults()));
        let registry = Arc::new(Registry::new(shared.clone()));
        let tasks = Tasks::open(None, shared.clone(), crate::tasks::unlinked(), None).tasks;
        Alerts::new(
            shared,
            registry,
            tasks,
            None,
            Arc::new(crate::fleet::notify::Nobody),
        )
    }

    fn cond(id: &str, hold: u64) -> Condition {
        Condition {
            name: Rule::WorkerInactive,
            labels: BTreeMap::from([("worker_id".to_string(), id.to_string())]),
            severity: "warning",
            summary: format!("Worker {id} is silent"),
            description: String::new(),
            hold: Duration::from_secs(hold),
            since: None,
        }
    }

    #[test]
    fn pending_then_firing_then_resolved() {
        let a = alerts();
        let t0 = Instant::now();
        a.apply(vec![cond("w1", 60)], t0);
        assert_eq!(a.view()["pending"][0]["labels"]["worker_id"], "w1");
        assert_eq!(
            (a.version(), a.for_delivery().len()),
            (0, 0),
            "pending is not news"
        );
        a.apply(vec![cond("w1", 60)], t0 + Duration::from_secs(59));
        assert_eq!(a.view()["firing"], json!([]));
        a.apply(vec![cond("w1", 60)], t0 + Duration::from_secs(60));
        let v = a.view();
        assert_eq!(v["firing"][0]["labels"]["alertname"], "worker_inactive");
        assert_eq!(v["firing"][0]["labels"]["severity"], "warning");
        assert_eq!(a.version(), 1);
        assert_eq!(a.shared.stats.get(Counter::AlertsFiring), 1);
        a.apply(vec![], t0 + Duration::from_secs(61));
        let v = a.view();
        assert_eq!(v["firing"], json!([]));
        assert_eq!(v["resolved"][0]["state"], "resolved");
        assert!(
            v["resolved"][0]["ends_at"].as_u64().unwrap()
                >= v["resolved"][0]["starts_at"].as_u64().unwrap()
        );
        assert_eq!(a.version(), 2);
        assert_eq!(
            a.for_delivery().len(),
            1,
            "the resolution is still to be told"
        );
        // A condition known to have begun earlier (a worker's inactivity
        // mark) counts its time from then, not from the pass that sees it.
        let mut early = cond("w3", 60);
        early.since = Some(t0 + Duration::from_secs(1));
        a.apply(vec![early], t0 + Duration::from_secs(61));
        assert_eq!(a.view()["firing"][0]["labels"]["worker_id"], "w3");
        a.apply(vec![], t0 + Duration::from_secs(61));
        assert_eq!(a.version(), 4);
        // A condition that goes before its time never fired: no news.
        a.apply(vec![cond("w2", 60)], t0 + Duration::from_secs(62));
        a.apply(vec![], t0 + Duration::from_secs(63));
        assert_eq!(a.version(), 4);
    }
}
