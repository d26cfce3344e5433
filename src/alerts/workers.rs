//! The worker rules, kept up to date by change rather than by a pass over
//! the fleet: each tick judges again only the local workers whose state
//! changed since the last one (the change feed's watcher), forgets those
//! removed, and re-judges a worker whose oldest inactive spell leaves the
//! flapping window when that time comes (a deadline heap). What a tick
//! costs grows with what changed, not with the fleet.
//!
//! The whole fleet is judged once at start, and again when the rules or
//! their thresholds change (a reload).

use super::rules::{self, Condition, Flaps, Thresholds};
use crate::config::alerts::Rule;
use crate::fleet::deadlines::Deadlines;
use crate::fleet::snapshot::Snapshot;
use crate::proto::WorkerId;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the worker rules were last judged against: a change re-judges all.
#[derive(Clone, PartialEq)]
struct Judged {
    rules: Vec<Rule>,
    hold: Duration,
    inactivity: Duration,
    flapping: u32,
    queue_depth: u64,
}

impl Judged {
    fn of(t: &Thresholds) -> Judged {
        Judged {
            rules: t.rules.to_vec(),
            hold: t.hold,
            inactivity: t.inactivity,
            flapping: t.flapping,
            queue_depth: t.queue_depth,
        }
    }
}

/// What one tick found: conditions that hold (new, or with new words) and
/// the keys of those that no longer do.
#[derive(Default)]
pub struct Verdict {
    pub holds: Vec<Condition>,
    pub gone: Vec<String>,
}

#[derive(Default)]
pub struct Workers {
    flaps: Flaps,
    /// The keys of each worker's conditions as last judged; only workers
    /// with any are here.
    held: HashMap<WorkerId, Vec<String>>,
    /// When a worker's oldest spell leaves the flapping window.
    expiries: Deadlines,
    judged: Option<Judged>,
}

impl Workers {
    /// Whether the next tick must judge the whole fleet (`fleet`), because
    /// nothing was judged yet or `t` differs from what was.
    pub fn needs_all(&self, t: &Thresholds) -> bool {
        self.judged.as_ref() != Some(&Judged::of(t))
    }

    /// One tick: `removed` forgotten, `changed` judged again, then (when
    /// [`Self::needs_all`]) every snapshot in `fleet`, then each worker
    /// whose flapping window moved on by `now`, read through `current`.
    pub fn tick(
        &mut self,
        changed: Vec<Arc<Snapshot>>,
        removed: Vec<WorkerId>,
        fleet: Option<Vec<Arc<Snapshot>>>,
        current: impl Fn(&str) -> Option<Arc<Snapshot>>,
        t: &Thresholds,
        now: Instant,
    ) -> Verdict {
        let mut v = Verdict::default();
        for id in removed {
            self.flaps.forget(&id);
            self.expiries.cancel(&id);
            v.gone.extend(self.held.remove(&id).unwrap_or_default());
        }
        for s in changed {
            self.judge(&s, t, now, &mut v);
        }
        if let Some(all) = fleet {
            // The thresholds moved: what held may hold no longer.
            for (_, keys) in self.held.drain() {
                v.gone.extend(keys);
            }
            for s in all {
                self.judge(&s, t, now, &mut v);
            }
            self.judged = Some(Judged::of(t));
        }
        // A spell leaves the window once `now` is past its expiry (as
        // `Flaps::note` trims): one judged at its expiry is scheduled anew.
        while let Some(id) = self.expiries.pop(|at| at < now) {
            if let Some(s) = current(&id) {
                self.judge(&s, t, now, &mut v);
            }
        }
        // A worker removed, or with no spell left, leaves its entry behind:
        // with workers coming and going, every worker seen inactive in the
        // last flapping window.
        self.expiries.compact();
        // A key both gone and held again (a worker removed and back in one
        // tick) holds.
        if !v.gone.is_empty() {
            let holds: std::collections::HashSet<String> =
                v.holds.iter().map(Condition::key).collect();
            v.gone.retain(|k| !holds.contains(k));
        }
        v
    }

    /// Judge one worker's state: its conditions now, and what it held
    /// before that it no longer does.
    fn judge(&mut self, s: &Snapshot, t: &Thresholds, now: Instant, v: &mut Verdict) {
        let flapped = self.flaps.note(&s.id, s.times_inactive, now);
        match self.flaps.next_expiry(&s.id) {
            Some(at) => self.expiries.set(&s.id, at),
            None => self.expiries.cancel(&s.id),
        }
        let conds = if s.is_shown() {
            rules::worker_conditions(s, flapped, t)
        } else {
            Vec::new()
        };
        let keys: Vec<String> = conds.iter().map(Condition::key).collect();
        let before = if keys.is_empty() {
            self.held.remove(&s.id)
        } else {
            self.held.insert(s.id.clone(), keys.clone())
        };
        for k in before.unwrap_or_default() {
            if !keys.contains(&k) {
                v.gone.push(k);
            }
        }
        v.holds.extend(conds);
    }

    /// Workers holding a condition now.
    #[cfg(test)]
    fn holding(&self) -> usize {
        self.held.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::snapshot::Transport;
    use crate::proto::decode;

    fn snap(id: &str, frame: &str) -> Arc<Snapshot> {
        let mut s = Snapshot::new(id.into(), Transport::Udp, Instant::now());
        s.apply(
            decode(frame.as_bytes(), 65536).unwrap(),
            Transport::Udp,
            Instant::now(),
        );
        Arc::new(s)
    }

    fn beat(id: &str) -> Arc<Snapshot> {
        snap(id, &format!(r#"{{"type":"heartbeat","worker_id":"{id}"}}"#))
    }

    fn silent(id: &str, times: u64) -> Arc<Snapshot> {
        let mut s = (*beat(id)).clone();
        s.inactive = true;
        s.times_inactive = times;
        Arc::new(s)
    }

    const T: Thresholds = Thresholds {
        flapping: 1,
        ..rules::tests::ALL
    };

    fn keys(v: &Verdict) -> (Vec<String>, Vec<String>) {
        let mut holds: Vec<String> = v.holds.iter().map(Condition::key).collect();
        let mut gone = v.gone.clone();
        holds.sort();
        gone.sort();
        (holds, gone)
    }

    #[test]
    fn only_what_changed_is_judged_and_what_ends_is_gone() {
        let mut w = Workers::default();
        let none = |_: &str| None;
        let t0 = Instant::now();
        assert!(w.needs_all(&T));
        let fleet: Vec<Arc<Snapshot>> = (0..10_000).map(|i| beat(&format!("w{i}"))).collect();
        let v = w.tick(vec![], vec![], Some(fleet), none, &T, t0);
        assert_eq!(keys(&v), (vec![], vec![]), "a healthy fleet holds nothing");
        assert!(!w.needs_all(&T));
        // 40 go silent: only they are handed over, and only they hold.
        let gone_silent: Vec<Arc<Snapshot>> =
            (0..40).map(|i| silent(&format!("w{i}"), 1)).collect();
        let v = w.tick(gone_silent, vec![], None, none, &T, t0);
        assert_eq!(v.holds.len(), 40);
        assert!(v.gone.is_empty());
        assert_eq!(w.holding(), 40);
        // w0 is back; w1 is forgotten; w2 stays silent and is not told again.
        let v = w.tick(vec![beat("w0")], vec!["w1".into()], None, none, &T, t0);
        assert_eq!(
            keys(&v),
            (
                vec![],
                vec![
                    "worker_inactive,worker_id=w0".to_string(),
                    "worker_inactive,worker_id=w1".to_string()
                ]
            )
        );
        assert_eq!(w.holding(), 38);
        // New thresholds: the whole fleet again, from what it is now.
        let off = Thresholds {
            rules: &[Rule::WorkerError],
            ..T
        };
        assert!(w.needs_all(&off));
        let fleet = (2..40).map(|i| silent(&format!("w{i}"), 1)).collect();
        let v = w.tick(vec![], vec![], Some(fleet), none, &off, t0);
        assert_eq!((v.holds.len(), v.gone.len()), (0, 38));
        assert_eq!(w.holding(), 0);
    }

    #[test]
    fn flapping_ends_when_its_oldest_spell_leaves_the_window_without_a_change() {
        let mut w = Workers::default();
        let t0 = Instant::now();
        let now = beat("f");
        let current = |id: &str| (id == "f").then(|| now.clone());
        w.tick(vec![beat("f")], vec![], Some(vec![]), current, &T, t0);
        // Two spells, a minute apart, and back each time: flapping (> 1).
        let mut back = (*beat("f")).clone();
        back.times_inactive = 1;
        w.tick(vec![Arc::new(back.clone())], vec![], None, current, &T, t0);
        back.times_inactive = 2;
        let later = t0 + Duration::from_secs(60);
        let v = w.tick(
            vec![Arc::new(back.clone())],
            vec![],
            None,
            current,
            &T,
            later,
        );
        assert_eq!(keys(&v).0, vec!["worker_flapping,worker_id=f".to_string()]);
        // Nothing changes; ten minutes after the first spell it has left
        // the window, and the tick that passes its time says so.
        let v = w.tick(vec![], vec![], None, current, &T, t0 + rules::FLAP_WINDOW);
        assert!(v.gone.is_empty(), "not before its time");
        let v = w.tick(
            vec![],
            vec![],
            None,
            |_: &str| Some(Arc::new(back.clone())),
            &T,
            t0 + rules::FLAP_WINDOW + Duration::from_millis(1),
        );
        assert_eq!(keys(&v).1, vec!["worker_flapping,worker_id=f".to_string()]);
    }

    /// Workers that went inactive and were then removed leave no entry
    /// in the expiry heap beyond the few kept before compacting.
    #[test]
    fn removed_workers_leave_the_expiry_heap() {
        let mut w = Workers::default();
        let none = |_: &str| None;
        let now = Instant::now();
        let n = 10_000;
        let seen: Vec<Arc<Snapshot>> = (0..n).map(|i| beat(&format!("w{i}"))).collect();
        w.tick(seen, Vec::new(), Some(Vec::new()), none, &T, now);
        let gone: Vec<Arc<Snapshot>> = (0..n).map(|i| silent(&format!("w{i}"), 1)).collect();
        w.tick(gone, Vec::new(), None, none, &T, now);
        assert_eq!(w.expiries.len(), n, "each has a spell in the window");
        let ids = (0..n).map(|i| WorkerId::from(format!("w{i}").as_str()));
        w.tick(Vec::new(), ids.collect(), None, none, &T, now);
        assert!(w.expiries.is_empty());
        let left = w.expiries.entries();
        assert!(
            left <= crate::fleet::deadlines::STALE_KEPT,
            "{left} entries left for no one"
        );
    }

    #[test]
    fn a_worker_removed_and_back_in_one_tick_holds() {
        let mut w = Workers::default();
        let none = |_: &str| None;
        let t0 = Instant::now();
        w.tick(vec![silent("a", 1)], vec![], Some(vec![]), none, &T, t0);
        let v = w.tick(vec![silent("a", 1)], vec!["a".into()], None, none, &T, t0);
        assert_eq!(
            keys(&v),
            (vec!["worker_inactive,worker_id=a".to_string()], vec![])
        );
    }
}
