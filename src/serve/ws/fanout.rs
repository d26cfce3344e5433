//! What fleet clients share: one change fan-out (the snapshots the change
//! feed handed over, and the update for plain clients rendered and framed
//! once for all of them), and the whole fleet's snapshot, framed once per
//! fleet version for every plain client that connects. Prepared on the
//! HTTP loop.

use super::messages::{text_frame, workers_message};
use crate::fleet::registry::Registry;
use crate::fleet::snapshot::Snapshot;
use crate::proto::WorkerId;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// One fan-out of changes to every client.
pub struct Fanout {
    /// The latest snapshot of each worker that changed.
    pub changed: Vec<Arc<Snapshot>>,
    pub removed: Vec<WorkerId>,
    /// The update for plain clients, rendered once for all of them.
    pub shared: Option<SharedUpdate>,
}

pub struct SharedUpdate {
    /// The update as one server frame, written to every plain client from
    /// this copy.
    pub frame: Arc<[u8]>,
    /// The workers it carries.
    pub ids: Vec<WorkerId>,
}

impl Fanout {
    /// Render the shared update once when any client can use it.
    pub fn new(changed: Vec<Arc<Snapshot>>, removed: Vec<WorkerId>, any_plain: bool) -> Fanout {
        let shared = (any_plain && !changed.is_empty()).then(|| SharedUpdate {
            ids: changed.iter().map(|s| s.id.clone()).collect(),
            frame: text_frame(workers_message("update", &changed, None).as_bytes()).into(),
        });
        Fanout {
            changed,
            removed,
            shared,
        }
    }
}

/// How long a shared snapshot serves new clients of a quiet fleet.
const SNAPSHOT_FRESH: Duration = Duration::from_secs(1);

/// The whole fleet as a `snapshot` message, framed once per fleet version
/// and shared by every plain client: 200 clients of a 16 MB fleet hold one
/// 16 MB frame, not 200. A frame serves new clients for a second (its
/// `timestamp` is that old at most), and after that while the fleet is
/// unchanged and some client is still being sent it, since a second copy
/// of the same fleet would only double the memory.
///
/// At most one such frame exists: while clients still hold one, a client
/// of a newer fleet version gets none and composes its snapshot itself,
/// from the workers' snapshots and the JSON each one rendered once. A
/// frame per version would be pinned by every client that never reads it:
/// 200 such clients of a fleet that keeps changing held 200 copies of the
/// fleet. Composed, they share each worker's bytes, and hold only the
/// versions of the workers that changed.
#[derive(Default)]
pub struct SnapshotFrames {
    current: Option<(u64, Arc<[u8]>, Instant)>,
    /// The last one, past its second, while clients are still sent it.
    sent: Option<(u64, Weak<[u8]>)>,
}

impl SnapshotFrames {
    /// The frame for the fleet at `version`; `None` while a frame of
    /// another version is still being sent to some client.
    pub fn frame(&mut self, registry: &Registry, version: u64) -> Option<Arc<[u8]>> {
        self.expire();
        if let Some((v, frame, _)) = &self.current {
            if *v == version {
                return Some(frame.clone());
            }
        }
        let in_flight = self.sent.as_ref().filter(|(v, _)| *v == version);
        if let Some(frame) = in_flight.and_then(|(_, weak)| weak.upgrade()) {
            return Some(frame);
        }
        let held = self
            .current
            .as_ref()
            .is_some_and(|(_, f, _)| Arc::strong_count(f) > 1)
            || self
                .sent
                .as_ref()
                .is_some_and(|(_, w)| w.strong_count() > 0);
        if held {
            return None;
        }
        let msg = workers_message("snapshot", &registry.fleet(), None);
        let frame: Arc<[u8]> = text_frame(msg.as_bytes()).into();
        self.current = Some((version, frame.clone(), Instant::now()));
        Some(frame)
    }

    /// Let go of a frame older than a second, and of the weak reference to
    /// the one before once no client holds it (a `Weak` keeps the
    /// allocation). On every tick.
    pub fn expire(&mut self) {
        if self
            .sent
            .as_ref()
            .is_some_and(|(_, w)| w.strong_count() == 0)
        {
            self.sent = None;
        }
        if self
            .current
            .as_ref()
            .is_some_and(|(_, _, at)| at.elapsed() >= SNAPSHOT_FRESH)
        {
            if let Some((version, frame, _)) = self.current.take() {
                self.sent = Some((version, Arc::downgrade(&frame)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::Shared;

    #[test]
    fn one_whole_snapshot_frame_at_a_time_while_clients_hold_it() {
        let registry = Registry::new(Arc::new(Shared::new(crate::config::defaults())));
        let mut frames = SnapshotFrames::default();
        let held = frames.frame(&registry, 1).expect("the first is framed");
        let again = frames.frame(&registry, 1).expect("the same version");
        assert!(Arc::ptr_eq(&held, &again), "one frame for one version");
        drop(again);
        assert!(
            frames.frame(&registry, 2).is_none(),
            "a client still holds version 1: a client of version 2 composes its own"
        );
        drop(held);
        let next = frames.frame(&registry, 2).expect("no one holds a frame");
        assert!(frames.frame(&registry, 3).is_none());
        drop(next);
        assert!(frames.frame(&registry, 3).is_some());
    }
}
