//! Worker state: one thread per worker, immutable snapshots out.
//!
//! - `registry`: id → handle, find-or-spawn, remove, shutdown; the map only.
//! - `inbox`: the counted queue into a worker's thread.
//! - `snapshot`: a worker's state and the status model (pure).
//! - `telemetry`: the shared telemetry object and its serde views.
//! - `worker`: the handle readers see and the thread that owns the state.
//! - `runs`, `history`: a worker's run window and history ring.
//! - `changes`: the change feed and fleet version.
//! - `notify`: how news reaches a loop (a mailbox, a notifier), no mio.
//! - `sweeper`: inactivity and eviction.
//! - `deadlines`: a deadline per worker in a heap (the sweeper's, the
//!   alert rules' flapping windows).
//!
//! [`Shared`] is what every loop and thread gets besides the registry: the
//! counters, the running configuration and the change feed.

pub mod changes;
pub mod deadlines;
pub mod history;
pub mod inbox;
pub mod notify;
pub mod registry;
pub mod runs;
pub mod snapshot;
pub mod sweeper;
pub mod telemetry;
pub mod worker;

use crate::config::{Config, Running};
use crate::stats::Stats;
use changes::Changes;
use snapshot::Snapshot;
use std::sync::Arc;

/// The context handed to each loop and worker thread.
pub struct Shared {
    pub stats: Stats,
    pub config: Running,
    pub changes: Changes,
}

impl Shared {
    /// A context whose change feed tells no one (tests, tools).
    pub fn new(cfg: Config) -> Shared {
        Shared::with(cfg, Arc::new(notify::Nobody))
    }

    /// A context whose change feed tells `fleet` when it has something.
    pub fn with(cfg: Config, fleet: Arc<dyn notify::Notify>) -> Shared {
        Shared {
            stats: Stats::default(),
            config: Running::new(cfg),
            changes: Changes::new(fleet),
        }
    }
}

impl worker::OnChange for Shared {
    fn will_change(&self) {
        self.changes.bump();
    }

    fn changed(&self, snap: &Arc<Snapshot>, handle: &worker::Handle) {
        self.changes.local(snap, &|| handle.is_stopped());
    }
}
