//! The built-in rules, pure: what the fleet looks like now (and a little
//! memory of what it did) in, the conditions that hold out. Whether a
//! condition has held long enough to fire is [`super::Book`]'s business.

use crate::config::alerts::Rule;
use crate::fleet::snapshot::Snapshot;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How far back `worker_flapping` counts.
pub const FLAP_WINDOW: Duration = Duration::from_secs(600);

/// A condition that holds now, with what an alert for it says.
#[derive(Clone, Debug, PartialEq)]
pub struct Condition {
    pub name: Rule,
    /// Labels besides `alertname` and `severity`: `worker_id`, `member`…
    pub labels: BTreeMap<String, String>,
    pub severity: &'static str,
    pub summary: String,
    pub description: String,
    /// How long it must hold before the alert fires.
    pub hold: Duration,
    /// When it began, when that is known and earlier than the pass that
    /// sees it (a worker's inactivity mark).
    pub since: Option<Instant>,
}

impl Condition {
    /// Its identity: the name and the labels.
    pub fn key(&self) -> String {
        let mut k = self.name.as_str().to_string();
        for (l, v) in &self.labels {
            k.push_str(&format!(",{l}={v}"));
        }
        k
    }
}

/// What the rules read besides the snapshots.
pub struct Thresholds<'a> {
    pub rules: &'a [Rule],
    pub hold: Duration,
    /// `inactivity_timeout`: when a silent worker was marked inactive.
    pub inactivity: Duration,
    pub flapping: u32,
    pub error_rate: u32,
    pub min_runs: u64,
    pub queue_depth: u64,
    pub task_queue_depth: u64,
}

/// Per worker: the times it went inactive in the last [`FLAP_WINDOW`].
/// Told of a worker when its state changes, never on a timer: a spell
/// leaving the window is [`Flaps::next_expiry`]'s to announce.
#[derive(Default)]
pub struct Flaps {
    /// Id → its `times_inactive` when last seen, and the spells in the window.
    seen: HashMap<Arc<str>, (u64, VecDeque<Instant>)>,
}

impl Flaps {
    /// Note a worker's `times_inactive` at `now` and drop spells older than
    /// the window; how many are left. A worker first seen counts none of
    /// the spells before. A worker already known costs a lookup.
    pub fn note(&mut self, id: &str, times_inactive: u64, now: Instant) -> usize {
        let (last, times) = match self.seen.get_mut(id) {
            Some(e) => e,
            None => self
                .seen
                .entry(Arc::from(id))
                .or_insert((times_inactive, VecDeque::new())),
        };
        for _ in *last..times_inactive {
            times.push_back(now);
        }
        *last = times_inactive;
        while times
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > FLAP_WINDOW)
        {
            times.pop_front();
        }
        times.len()
    }

    /// When the oldest spell of `id` leaves the window, if it has any.
    pub fn next_expiry(&self, id: &str) -> Option<Instant> {
        let (_, times) = self.seen.get(id)?;
        times.front().map(|t| *t + FLAP_WINDOW)
    }

    pub fn forget(&mut self, id: &str) {
        self.seen.remove(id);
    }

    pub fn count(&self, id: &str) -> usize {
        self.seen.get(id).map_or(0, |(_, t)| t.len())
    }
}

/// Runs in the last hour: `(runs, failed)`, per worker that reported any.
pub type Outcomes = HashMap<Arc<str>, (u64, u64)>;

fn worker(name: Rule, id: &str, severity: &'static str, hold: Duration) -> Condition {
    Condition {
        name,
        labels: BTreeMap::from([("worker_id".to_string(), id.to_string())]),
        severity,
        summary: String::new(),
        description: String::new(),
        hold,
        since: None,
    }
}

fn on(t: &Thresholds, rule: Rule) -> bool {
    t.rules.contains(&rule)
}

/// The task queue's rule: `queued` tasks wait now (in cluster mode, the
/// whole cluster's, and only the leader asks).
pub fn task_queue(queued: u64, t: &Thresholds) -> Option<Condition> {
    if queued <= t.task_queue_depth || !on(t, Rule::TaskQueueDepth) {
        return None;
    }
    Some(Condition {
        name: Rule::TaskQueueDepth,
        labels: BTreeMap::new(),
        severity: "warning",
        summary: format!("{queued} tasks wait in the queue"),
        description: format!(
            "{queued} tasks are queued, more than alert_task_queue_depth = {}: add workers, or look for a type no worker takes",
            t.task_queue_depth
        ),
        hold: t.hold,
        since: None,
    })
}

/// The worker rules over `snaps`, and the fleet's error rate over `outcomes`.
#[cfg(test)]
pub fn evaluate(
    snaps: &[Arc<Snapshot>],
    flaps: &Flaps,
    outcomes: &Outcomes,
    t: &Thresholds,
) -> Vec<Condition> {
    let mut out = Vec::new();
    for s in snaps {
        out.extend(worker_conditions(s, flaps.count(&s.id), t));
    }
    out.extend(error_rates(outcomes, t));
    out
}

/// The conditions one worker's state holds, `flapped` being its inactive
/// spells in the window. A healthy worker costs no allocation.
pub fn worker_conditions(s: &Snapshot, flapped: usize, t: &Thresholds) -> Vec<Condition> {
    let mut out = Vec::new();
    if s.terminated {
        return out;
    }
    let id = &*s.id;
    if s.inactive && on(t, Rule::WorkerInactive) {
        let mut c = worker(Rule::WorkerInactive, id, "warning", t.hold);
        c.since = Some(s.last_seen + t.inactivity);
        c.summary = format!("Worker {id} is silent");
        c.description = format!(
            "{id} has sent nothing within the inactivity timeout ({} s).",
            t.inactivity.as_secs()
        );
        out.push(c);
    }
    if !s.inactive && s.reported == Some(crate::proto::Reported::Error) && on(t, Rule::WorkerError)
    {
        let mut c = worker(Rule::WorkerError, id, "warning", t.hold);
        c.summary = format!("Worker {id} reports error");
        c.description = format!("{id} reports status error.");
        out.push(c);
    }
    if flapped > t.flapping as usize && on(t, Rule::WorkerFlapping) {
        let mut c = worker(Rule::WorkerFlapping, id, "warning", Duration::ZERO);
        c.summary = format!("Worker {id} is flapping");
        c.description = format!("{id} went inactive {flapped} times in the last 10 minutes.");
        out.push(c);
    }
    if !s.inactive && s.queue_depth > t.queue_depth && on(t, Rule::QueueDepth) {
        let mut c = worker(Rule::QueueDepth, id, "warning", t.hold);
        c.summary = format!("Worker {id} has {} queued", s.queue_depth);
        c.description = format!(
            "{id} reports a queue depth of {}, above {}.",
            s.queue_depth, t.queue_depth
        );
        out.push(c);
    }
    out
}

/// `error_rate` per worker and for the fleet, over the hour's outcomes.
pub fn error_rates(outcomes: &Outcomes, t: &Thresholds) -> Vec<Condition> {
    let mut out = Vec::new();
    if on(t, Rule::ErrorRate) {
        let (mut runs, mut failed) = (0, 0);
        let mut ids: Vec<&Arc<str>> = outcomes.keys().collect();
        ids.sort();
        for id in ids {
            let (n, f) = outcomes[id];
            runs += n;
            failed += f;
            if let Some(c) = error_rate(Some(id), n, f, t) {
                out.push(c);
            }
        }
        out.extend(error_rate(None, runs, failed, t));
    }
    out
}

/// `error_rate` for one worker, or (`None`) the fleet.
fn error_rate(id: Option<&str>, runs: u64, failed: u64, t: &Thresholds) -> Option<Condition> {
    if runs < t.min_runs || failed * 100 <= runs * u64::from(t.error_rate) {
        return None;
    }
    let pct = failed as f64 * 100.0 / runs as f64;
    let (mut c, who) = match id {
        Some(id) => (
            worker(Rule::ErrorRate, id, "warning", Duration::ZERO),
            format!("Worker {id}"),
        ),
        None => (
            Condition {
                name: Rule::ErrorRate,
                labels: BTreeMap::new(),
                severity: "warning",
                summary: String::new(),
                description: String::new(),
                hold: Duration::ZERO,
                since: None,
            },
            "The fleet".to_string(),
        ),
    };
    c.summary = format!("{who} fails {pct:.0} % of its runs");
    c.description = format!(
        "{failed} of {runs} runs failed in the last hour, above {} %.",
        t.error_rate
    );
    Some(c)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::fleet::snapshot::Transport;
    use crate::proto::decode;

    fn snap(id: &str, frame: &str) -> Snapshot {
        let mut s = Snapshot::new(id.into(), Transport::Udp, Instant::now());
        s.apply(
            decode(frame.as_bytes(), 65536).unwrap(),
            Transport::Udp,
            Instant::now(),
        );
        s
    }

    pub(in crate::alerts) const ALL: Thresholds = Thresholds {
        rules: &Rule::ALL,
        hold: Duration::from_secs(60),
        inactivity: Duration::from_secs(30),
        flapping: 3,
        error_rate: 10,
        min_runs: 10,
        queue_depth: 1000,
        task_queue_depth: 100,
    };

    #[test]
    fn each_worker_rule() {
        let mut silent = snap("s", r#"{"type":"heartbeat","worker_id":"s"}"#);
        silent.inactive = true;
        let mut done = snap("d", r#"{"type":"heartbeat","worker_id":"d"}"#);
        done.terminated = true;
        done.inactive = true;
        let snaps = vec![
            Arc::new(silent),
            Arc::new(done),
            Arc::new(snap(
                "e",
                r#"{"type":"heartbeat","worker_id":"e","status":"error"}"#,
            )),
            Arc::new(snap(
                "q",
                r#"{"type":"heartbeat","worker_id":"q","queue_depth":5000}"#,
            )),
            Arc::new(snap(
                "ok",
                r#"{"type":"heartbeat","worker_id":"ok","queue_depth":1000}"#,
            )),
        ];
        let got = evaluate(&snaps, &Flaps::default(), &Outcomes::new(), &ALL);
        let keys: Vec<String> = got.iter().map(Condition::key).collect();
        assert_eq!(
            keys,
            [
                "worker_inactive,worker_id=s",
                "worker_error,worker_id=e",
                "queue_depth,worker_id=q"
            ],
            "a worker that said bye is never silent"
        );
        assert_eq!(got[0].summary, "Worker s is silent");
        assert_eq!(got[0].hold, Duration::from_secs(60));
        assert_eq!(
            got[0].since,
            Some(snaps[0].last_seen + Duration::from_secs(30)),
            "silent since its inactivity mark"
        );
        let none = Thresholds {
            rules: &[Rule::WorkerError],
            ..ALL
        };
        assert_eq!(
            evaluate(&snaps, &Flaps::default(), &Outcomes::new(), &none).len(),
            1
        );
    }

    #[test]
    fn the_task_queue_rule_fires_over_its_threshold_with_no_worker_label() {
        assert!(task_queue(100, &ALL).is_none(), "at the threshold");
        let c = task_queue(101, &ALL).unwrap();
        assert_eq!((c.name, c.labels.len()), (Rule::TaskQueueDepth, 0));
        assert_eq!(c.summary, "101 tasks wait in the queue");
        let off = Thresholds {
            rules: &[Rule::QueueDepth],
            ..ALL
        };
        assert!(task_queue(5000, &off).is_none());
    }

    #[test]
    fn flapping_counts_inactive_spells_in_ten_minutes() {
        let mut s = snap("f", r#"{"type":"heartbeat","worker_id":"f"}"#);
        let t0 = Instant::now();
        let mut flaps = Flaps::default();
        assert_eq!(flaps.note("f", 0, t0), 0);
        assert_eq!(flaps.next_expiry("f"), None);
        for i in 1..=4u64 {
            s.times_inactive = i;
            flaps.note("f", i, t0 + Duration::from_secs(i * 60));
        }
        assert_eq!(flaps.count("f"), 4);
        assert_eq!(
            flaps.next_expiry("f"),
            Some(t0 + Duration::from_secs(60) + FLAP_WINDOW),
            "the first spell leaves the window ten minutes after it began"
        );
        let got = evaluate(&[Arc::new(s.clone())], &flaps, &Outcomes::new(), &ALL);
        assert_eq!(got[0].key(), "worker_flapping,worker_id=f");
        assert_eq!(
            got[0].description,
            "f went inactive 4 times in the last 10 minutes."
        );
        // Eleven minutes on, the first spell has left the window.
        assert_eq!(flaps.note("f", 4, t0 + Duration::from_secs(11 * 60 + 1)), 3);
        assert!(evaluate(&[Arc::new(s)], &flaps, &Outcomes::new(), &ALL).is_empty());
        // A worker first seen with spells behind it counts none of them.
        assert_eq!(flaps.note("g", 7, t0), 0);
        flaps.forget("f");
        assert_eq!(flaps.count("f"), 0, "a forgotten worker is forgotten here");
    }

    #[test]
    fn error_rate_per_worker_and_fleet_with_enough_runs() {
        let outcomes = Outcomes::from([
            (Arc::from("bad"), (20, 5)),
            (Arc::from("few"), (5, 5)),
            (Arc::from("good"), (100, 1)),
        ]);
        let got = evaluate(&[], &Flaps::default(), &outcomes, &ALL);
        let keys: Vec<String> = got.iter().map(Condition::key).collect();
        // The fleet: 11 of 125 failed, 8.8 %: quiet.
        assert_eq!(keys, ["error_rate,worker_id=bad"]);
        assert_eq!(got[0].summary, "Worker bad fails 25 % of its runs");
        let strict = Thresholds {
            error_rate: 5,
            ..ALL
        };
        let got = evaluate(&[], &Flaps::default(), &outcomes, &strict);
        assert_eq!(got.last().unwrap().key(), "error_rate");
        assert_eq!(
            got.last().unwrap().summary,
            "The fleet fails 9 % of its runs"
        );
    }
}
