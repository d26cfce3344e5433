//! muster: roll call for a fleet of worker processes.

// Peer input must not be able to panic the daemon: outside tests, no
// unwrap, expect or panic! (true invariants use `unreachable!` with a reason).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod fleet;
pub mod ingest;
pub mod logging;
pub mod proto;
#[cfg(test)]
pub mod script;
pub mod serve;
pub mod stats;
pub mod sys;

/// The version of both binaries.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
