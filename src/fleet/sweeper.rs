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
//! Cost: O(workers) snapshot reads per tick.

use super::Shared;
use super::inbox::Msg;
use super::registry::{Registry, is_live};
use crate::stats::Counter;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

pub const TICK: Duration = Duration::from_millis(500);

/// Run until `stop` receives a message or its sender is dropped. Before
/// `grace_until` no worker is marked inactive: after a restart, restored
/// workers get one full inactivity timeout to be heard from again.
pub fn run(registry: Arc<Registry>, shared: Arc<Shared>, stop: Receiver<()>, grace_until: Instant) {
    loop {
        match stop.recv_timeout(TICK) {
            Err(RecvTimeoutError::Timeout) => {
                let now = Instant::now();
                sweep(&registry, &shared, now, now >= grace_until);
            }
            _ => return,
        }
    }
}

/// One pass over every worker; marks the silent inactive only when `judge`,
/// and hands the registry the workers that are not live, the longest
/// silent first (who may make room while it is full).
pub fn sweep(registry: &Registry, shared: &Shared, now: Instant, judge: bool) {
    let cfg = shared.config.get();
    let (timeout, forget) = (cfg.fleet.inactivity_timeout, cfg.fleet.forget_after);
    let mut not_live = Vec::new();
    for handle in registry.handles() {
        let snap = handle.snapshot();
        if !is_live(&snap) {
            not_live.push((snap.last_seen, snap.id.clone()));
        }
        let silent = now.saturating_duration_since(snap.last_seen);
        if snap.is_active() {
            if judge && silent >= timeout {
                // A full inbox means frames are arriving: nothing to mark.
                let _ = handle.inbox.try_send(Msg::Sweep {
                    timeout_ms: timeout.as_millis() as u64,
                });
            }
        } else if silent >= forget && registry.remove(&snap.id) {
            shared.stats.incr(Counter::WorkersEvicted);
            log::info!(
                "forgot worker id={} status={} silent_s={}",
                snap.id,
                snap.status(),
                silent.as_secs()
            );
        }
    }
    not_live.sort_unstable();
    registry.set_displaceable(not_live.into_iter().map(|(_, id)| id).collect());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use crate::fleet::snapshot::Transport;

    #[test]
    fn marks_then_evicts() {
        let mut cfg = config::defaults();
        cfg.fleet.heartbeat_interval = Duration::from_millis(10);
        cfg.fleet.inactivity_timeout = Duration::from_millis(50);
        cfg.fleet.forget_after = Duration::from_millis(200);
        cfg.fleet.max_workers = 10;
        let shared = Arc::new(Shared::new(cfg));
        let r = Registry::new(shared.clone());
        let h = r.route(&"w".into(), Transport::Udp).unwrap();
        let beat = crate::proto::decode(br#"{"type":"heartbeat","worker_id":"w"}"#, 1024).unwrap();
        let _ = h.inbox.try_send(crate::fleet::inbox::Msg::frame(
            beat,
            Transport::Udp,
            Instant::now(),
        ));
        while r.snapshot("w").is_none() {
            std::thread::sleep(Duration::from_millis(1));
        }
        let t0 = r.snapshot("w").unwrap().last_seen;

        sweep(&r, &shared, t0 + Duration::from_millis(40), true);
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            r.snapshot("w").unwrap().is_active(),
            "not yet silent long enough"
        );

        sweep(&r, &shared, t0 + Duration::from_millis(60), false);
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            r.snapshot("w").unwrap().is_active(),
            "not judged in the grace"
        );
        sweep(&r, &shared, t0 + Duration::from_millis(60), true);
        let deadline = Instant::now() + Duration::from_secs(5);
        while r.snapshot("w").unwrap().is_active() {
            assert!(Instant::now() < deadline, "never marked inactive");
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(
            r.snapshot("w").unwrap().status(),
            crate::proto::Status::Inactive
        );

        sweep(&r, &shared, t0 + Duration::from_millis(150), true);
        assert!(r.snapshot("w").is_some(), "kept until forget_after");
        sweep(&r, &shared, t0 + Duration::from_millis(250), true);
        assert!(r.snapshot("w").is_none(), "evicted");
        assert_eq!(shared.stats.get(Counter::WorkersEvicted), 1);
        r.shutdown(Instant::now() + Duration::from_secs(5));
    }
}
