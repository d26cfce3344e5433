//! One fan-out of changes to every WebSocket client: the snapshots the
//! change feed handed over, and the update for plain clients (every worker,
//! no filter) rendered and framed once for all of them. Prepared on the
//! HTTP loop from what the feed carries; it reads no registry.

use super::messages::{raw_text_frame, workers_message};
use crate::fleet::snapshot::Snapshot;
use crate::proto::WorkerId;
use std::sync::Arc;

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
            frame: raw_text_frame(workers_message("update", &changed, None).as_bytes()).into(),
        });
        Fanout {
            changed,
            removed,
            shared,
        }
    }
}
