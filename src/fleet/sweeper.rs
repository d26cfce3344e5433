//! The sweeper thread: finds workers silent past `inactivity_timeout` and
//! asks their threads to mark them inactive; evicts workers that have been
//! inactive or terminated for `forget_after`.
//!
//! It judges silence on the daemon's monotonic clock (the `Instant` of the
//! last applied frame), never on timestamps a worker sent. It does not
//! mutate worker state itself: the worker's thread re-checks against its own
//! clock, so a frame that arrives between the sweeper's look and the mark
//! wins. It ticks every [`TICK`], so a worker goes inactive between the
//! timeout and the timeout plus one tick.
//!
//! It keeps a deadline per worker in a heap: when the worker would be
//! silent for the timeout (or, once not active, for `forget_after`) as last
//! seen. A tick looks only at the workers whose deadline passed: one heard
//! from since gets its next deadline, one still silent is marked or
//! forgotten. It learns of new workers from the registry
//! ([`Registry::take_started`]), and of workers found not live tells the
//! registry, which may let them make room ([`Registry::note_not_live`]).
//!
//! Cost: O(deadlines passed) per tick, about workers ÷ `inactivity_timeout`
//! a second for a fleet that beats, never a pass over the fleet; a whole
//! pass only at start and when the timeouts are reloaded.

use super::Shared;
use super::deadlines::{Deadlines, STALE_KEPT};
use super::inbox::Msg;
use super::registry::{Registry, is_live};
use crate::proto::WorkerId;
use crate::stats::Counter;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

pub const TICK: Duration = Duration::from_millis(500);

/// Run until `stop` receives a message or its sender is dropped. Before
/// `grace_until` no worker is marked inactive: after a restart, restored
/// workers get one full inactivity timeout to be heard from again.
pub fn run(registry: Arc<Registry>, shared: Arc<Shared>, stop: Receiver<()>, grace_until: Instant) {
    let mut sweeper = Sweeper::default();
    loop {
        match stop.recv_timeout(TICK) {
            Err(RecvTimeoutError::Timeout) => {
                let now = Instant::now();
                let judge = if now >= grace_until {
                    Ok(())
                } else {
                    Err(grace_until)
                };
                sweeper.tick(&registry, &shared, now, judge);
            }
            _ => return,
        }
    }
}

/// What one tick did.
#[derive(Debug, Default, PartialEq)]
pub struct Swept {
    /// Workers whose deadline had passed, looked at.
    pub checked: usize,
    /// Asked to mark themselves inactive.
    pub asked: usize,
    pub evicted: usize,
}

/// The deadlines, and what the sweeper knows of each worker.
#[derive(Default)]
pub struct Sweeper {
    deadlines: Deadlines,
    /// Workers found not live and told to the registry.
    not_live: HashSet<WorkerId>,
    /// The timeouts the deadlines were set with.
    timeouts: Option<(Duration, Duration)>,
}

impl Sweeper {
    /// One tick at `now`: new workers are looked at now, then every worker
    /// whose deadline passed. `judge` is `Err(until)` during the grace
    /// after a restart: no one is marked before `until`.
    pub fn tick(
        &mut self,
        registry: &Registry,
        shared: &Shared,
        now: Instant,
        judge: Result<(), Instant>,
    ) -> Swept {
        let cfg = shared.config.get();
        let timeouts = (cfg.fleet.inactivity_timeout, cfg.fleet.forget_after);
        let started = if self.timeouts != Some(timeouts) {
            // Deadlines set with other timeouts: look at everyone again.
            self.timeouts = Some(timeouts);
            self.deadlines.clear();
            let mut all = registry.take_started();
            all.extend(registry.handles().iter().map(|h| h.snapshot().id.clone()));
            all
        } else {
            registry.take_started()
        };
        for id in started {
            self.deadlines.set(&id, now);
        }
        let mut swept = Swept::default();
        while let Some(id) = self.deadlines.pop(|at| at <= now) {
            swept.checked += 1;
            if let Some(next) = self.check(&id, registry, shared, now, judge, timeouts, &mut swept)
            {
                self.deadlines.set(&id, next);
            } else {
                self.not_live.remove(&id);
            }
        }
        self.compact(registry);
        swept
    }

    /// A worker removed by someone else (making room, `DELETE`) keeps its
    /// deadline until it passes, up to `forget_after` away: with workers
    /// coming and going that grows with the churn, so once they outnumber
    /// the fleet, keep only the workers still there. O(deadlines), once per
    /// as many removals as there are workers.
    fn compact(&mut self, registry: &Registry) {
        if self.deadlines.len() > 2 * registry.len().max(STALE_KEPT) {
            let there: HashSet<WorkerId> = registry.ids().into_iter().collect();
            self.deadlines.retain(|id| there.contains(id));
            self.not_live.retain(|id| there.contains(id));
        } else {
            self.deadlines.compact();
        }
    }

    /// Look at one worker whose deadline passed; its next deadline, or
    /// `None` when it is gone.
    #[allow(clippy::too_many_arguments)]
    fn check(
        &mut self,
        id: &WorkerId,
        registry: &Registry,
        shared: &Shared,
        now: Instant,
        judge: Result<(), Instant>,
        (timeout, forget): (Duration, Duration),
        swept: &mut Swept,
    ) -> Option<Instant> {
        let handle = registry.handle(id)?;
        let snap = handle.snapshot();
        if is_live(&snap) {
            self.not_live.remove(id);
        } else if self.not_live.insert(id.clone()) {
            registry.note_not_live(id.clone());
        }
        let silent = now.saturating_duration_since(snap.last_seen);
        if snap.is_active() {
            if silent < timeout {
                return Some(snap.last_seen + timeout);
            }
            if let Err(until) = judge {
                return Some(until.max(snap.last_seen + timeout));
            }
            // Beats that repeat the last one wait in the inbox before the
            // thread applies them: heard is not silent.
            if let Some(heard) = handle.inbox.heard().filter(|h| now < *h + timeout) {
                return Some(heard + timeout);
            }
            // A full inbox means frames are arriving: nothing to mark.
            let _ = handle.inbox.try_send(Msg::Sweep {
                timeout_ms: timeout.as_millis() as u64,
            });
            swept.asked += 1;
            // Marked by then, or heard from.
            return Some(now + TICK);
        }
        if silent < forget {
            return Some(snap.last_seen + forget);
        }
        if registry.remove(&snap.id) {
            shared.stats.incr(Counter::WorkersEvicted);
            swept.evicted += 1;
            log::info!(
                "forgot worker id={} status={} silent_s={}",
                snap.id,
                snap.status(),
                silent.as_secs()
            );
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use crate::fleet::snapshot::Transport;

    fn fleet(n: usize, timeout: Duration, forget: Duration) -> (Arc<Shared>, Registry) {
        let mut cfg = config::defaults();
        cfg.fleet.heartbeat_interval = Duration::from_millis(10);
        cfg.fleet.inactivity_timeout = timeout;
        cfg.fleet.forget_after = forget;
        cfg.fleet.max_workers = n;
        let shared = Arc::new(Shared::new(cfg));
        let r = Registry::new(shared.clone());
        (shared, r)
    }

    fn beat(r: &Registry, id: &str) {
        let h = r.route(&id.into(), Transport::Udp).unwrap();
        let frame = format!(r#"{{"type":"heartbeat","worker_id":"{id}"}}"#);
        let beat = crate::proto::decode(frame.as_bytes(), 1024).unwrap();
        let _ = h
            .inbox
            .try_send(Msg::frame(beat, Transport::Udp, Instant::now()));
    }

    fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !f() {
            assert!(Instant::now() < deadline, "never: {what}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    #[test]
    fn marks_then_evicts_each_at_its_deadline() {
        let (timeout, forget) = (Duration::from_millis(50), Duration::from_secs(2));
        let (shared, r) = fleet(10, timeout, forget);
        beat(&r, "w");
        wait_for("w applied", || r.snapshot("w").is_some());
        let t0 = r.snapshot("w").unwrap().last_seen;
        let mut s = Sweeper::default();
        let at = |ms: u64| t0 + Duration::from_millis(ms);

        let got = s.tick(&r, &shared, at(40), Ok(()));
        assert_eq!(
            (got.checked, got.asked),
            (1, 0),
            "not yet silent long enough"
        );
        let got = s.tick(&r, &shared, at(45), Ok(()));
        assert_eq!(got.checked, 0, "nothing looked at before its deadline");
        let got = s.tick(&r, &shared, at(60), Err(at(1000)));
        assert_eq!((got.checked, got.asked), (1, 0), "not judged in the grace");
        assert!(r.snapshot("w").unwrap().is_active());
        assert_eq!(s.tick(&r, &shared, at(999), Ok(())).checked, 0);
        std::thread::sleep(timeout * 2);
        let got = s.tick(&r, &shared, at(1000), Ok(()));
        assert_eq!((got.checked, got.asked), (1, 1), "the grace is over");
        wait_for("w marked", || !r.snapshot("w").unwrap().is_active());
        assert_eq!(
            r.snapshot("w").unwrap().status(),
            crate::proto::Status::Inactive
        );
        let got = s.tick(&r, &shared, at(1500), Ok(()));
        assert_eq!(
            (got.checked, got.evicted),
            (1, 0),
            "kept until forget_after"
        );
        assert_eq!(s.tick(&r, &shared, at(1999), Ok(())).checked, 0);
        let got = s.tick(&r, &shared, at(2000), Ok(()));
        assert_eq!(got.evicted, 1);
        assert!(r.snapshot("w").is_none(), "evicted");
        assert_eq!(shared.stats.get(Counter::WorkersEvicted), 1);
        r.shutdown(Instant::now() + Duration::from_secs(5));
    }

    /// A worker whose beats only repeat the last one is heard while its
    /// thread lets them wait: it is not asked. Once silent it is, and its
    /// thread applies the waiting beats before it marks itself.
    #[test]
    fn quiet_beats_keep_a_worker_active_until_it_goes_silent() {
        let timeout = Duration::from_millis(200);
        let (shared, r) = fleet(1, timeout, Duration::from_secs(3600));
        beat(&r, "w");
        wait_for("w applied", || r.snapshot("w").is_some());
        let mut s = Sweeper::default();
        for _ in 0..8 {
            std::thread::sleep(timeout / 2);
            beat(&r, "w");
            assert_eq!(s.tick(&r, &shared, Instant::now(), Ok(())).asked, 0);
        }
        let w = r.snapshot("w").unwrap();
        assert_eq!(w.messages_processed, 1, "the repeats wait unapplied");
        assert!(w.is_active());
        std::thread::sleep(timeout * 2);
        let got = s.tick(&r, &shared, Instant::now(), Ok(()));
        assert_eq!((got.checked, got.asked), (1, 1), "silent now");
        wait_for("w marked", || !r.snapshot("w").unwrap().is_active());
        assert_eq!(r.snapshot("w").unwrap().messages_processed, 9);
        r.shutdown(Instant::now() + Duration::from_secs(5));
    }

    /// Workers removed by the registry (not by the sweeper) leave the
    /// deadlines behind once they outnumber the fleet.
    #[test]
    fn workers_removed_by_others_leave_no_deadline_behind() {
        // More than twice STALE_KEPT, few enough threads beside the test
        // of 10,000 below.
        const N: usize = 2_500;
        let (shared, r) = fleet(N, Duration::from_secs(60), Duration::from_secs(3600));
        let mut s = Sweeper::default();
        for i in 0..N {
            beat(&r, &format!("w{i}"));
        }
        s.tick(&r, &shared, Instant::now(), Ok(()));
        assert_eq!(s.deadlines.len(), N);
        for i in 0..N {
            assert!(r.remove(&format!("w{i}")));
        }
        beat(&r, "kept");
        s.tick(&r, &shared, Instant::now(), Ok(()));
        assert_eq!(s.deadlines.ids(), vec!["kept"]);
        let left = s.deadlines.entries();
        assert!(left <= STALE_KEPT, "{left} in the heap");
        r.shutdown(Instant::now() + Duration::from_secs(30));
    }

    /// 10,000 workers go silent at once: each is asked on the first tick
    /// at or after its timeout, none before, and a tick between deadlines
    /// looks at no one. A worker heard from again gets a later deadline.
    #[test]
    fn ten_thousand_silent_at_once_are_marked_within_a_tick_of_their_timeout() {
        const N: usize = 10_000;
        let timeout = Duration::from_millis(300);
        let (shared, r) = fleet(N, timeout, Duration::from_secs(3600));
        for i in 0..N {
            beat(&r, &format!("w{i}"));
        }
        wait_for("all applied", || {
            r.handles()
                .iter()
                .all(|h| h.snapshot().messages_processed == 1)
        });
        let seen: Vec<Instant> = r.handles().iter().map(|h| h.snapshot().last_seen).collect();
        let (first, last) = (*seen.iter().min().unwrap(), *seen.iter().max().unwrap());
        let mut s = Sweeper::default();
        let got = s.tick(&r, &shared, first, Ok(()));
        assert_eq!(
            (got.checked, got.asked),
            (N, 0),
            "the first tick looks at all"
        );
        let got = s.tick(
            &r,
            &shared,
            first + timeout - Duration::from_millis(1),
            Ok(()),
        );
        assert_eq!((got.checked, got.asked), (0, 0), "no deadline has passed");
        std::thread::sleep((last + timeout).saturating_duration_since(Instant::now()));
        let got = s.tick(&r, &shared, last + timeout, Ok(()));
        assert_eq!((got.checked, got.asked), (N, N), "every deadline passed");
        wait_for("all inactive", || {
            r.handles().iter().all(|h| !h.snapshot().is_active())
        });
        // One comes back; the next tick after the rest are looked at again
        // finds it active with its deadline moved on.
        std::thread::sleep((last + timeout + TICK).saturating_duration_since(Instant::now()));
        beat(&r, "w7");
        wait_for("w7 back", || r.snapshot("w7").unwrap().is_active());
        let again = Instant::now();
        let got = s.tick(&r, &shared, again, Ok(()));
        assert_eq!((got.checked, got.asked), (N, 0));
        assert_eq!(s.tick(&r, &shared, again, Ok(())).checked, 0);
        r.shutdown(Instant::now() + Duration::from_secs(30));
    }
}
