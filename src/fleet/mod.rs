//! Worker state: one thread per worker, immutable snapshots out.

pub mod changes;
pub mod history;
pub mod registry;
pub mod runs;
pub mod sweeper;
pub mod worker;
