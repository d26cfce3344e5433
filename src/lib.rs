//! muster: roll call for a fleet of worker processes.
//!
//! The crate map, one line per folder: what it owns, and what it may import.
//! Arrows point down only; `serve` and `ingest` never import each other.
//!
//! - `daemon`: one process: flags, start-up, signals, reload, ordered stop.
//!   Imports everything below.
//! - `serve`: the HTTP loop: REST, WebSocket streams, `/health`, `/metrics`,
//!   the dashboard. Imports `audit`, `alerts`, `pool`, `tasks`, `cluster`, `cron`,
//!   `fleet`, `config`, `stats`, `proto`, `sys`, `logging`, `clock`.
//! - `ingest`: the heartbeat loop: UDP datagrams, TCP sessions. Imports the
//!   same as `serve`.
//! - `fleet`: worker state: the registry, one thread per worker, snapshots,
//!   the change feed, the sweeper, [`fleet::Shared`] (counters, running
//!   configuration, change feed) handed to each loop, and `notify`, how
//!   news reaches a loop without its sender knowing mio. Imports `proto`,
//!   `config`, `stats`, `sys`, `logging`, `clock`.
//! - `alerts`: built-in alert rules over the fleet, the pool and the
//!   tasks, and their notifications (Alertmanager, webhooks). Imports
//!   `pool`, `tasks`, `fleet`, `config`, `stats`, `proto`, `logging`,
//!   `clock`.
//! - `pool`: local worker processes, supervised and scaled.
//!   Imports `tasks`, `fleet`, `config`, `stats`, `proto`, `sys`, `logging`,
//!   `clock`.
//! - `tasks`: the task book, its journal, the scheduler; in cluster mode
//!   the database in the journal's place. Imports `cluster`, `cron`,
//!   `fleet`, `config`, `stats`, `proto`, `logging`, `clock`.
//! - `audit`: the audit log of changes, in `state_dir` or, in cluster mode,
//!   the database. Imports `cluster`, `fleet`, `config`, `logging`,
//!   `clock`.
//! - `store`: the registry saved in `state_dir` and read back at start;
//!   in cluster mode also the fleet in the database. Imports `cluster`,
//!   `fleet`, `config`, `stats`, `proto`, `sys`, `logging`, `clock`.
//! - `cluster`: cluster mode: the shared PostgreSQL, its schema, this
//!   node's lease and the leader's. Imports `config`, `clock`.
//! - `config`: the settings table, parsing, the running `Arc<Config>`.
//!   Imports nothing of ours.
//! - `cron`: when a periodic schedule fires (cron expressions in IANA
//!   zones, `@every`); pure. Imports nothing of ours.
//! - `stats`: the counter table. Imports `proto` (reject reasons).
//! - `proto`: heartbeat protocol v1, both directions; pure. Imports nothing.
//! - `sys`: Linux and systemd interfaces (procfs, limits, sd_notify,
//!   process groups, sockets, threads, GPUs): the only folder with
//!   `unsafe`. Imports nothing of ours.
//! - `cli`: the `muster` binary and its agent (the load generators are
//!   `src/bin/muster-bench`, not part of the library). Imports `proto`,
//!   `sys`, `config::units`, `clock`.
//! - `logging`, `clock`: log set-up and rate-limited warnings; wall time
//!   and how people read it. `logging` imports `clock` (JSON lines' times).
//!
//! ARCHITECTURE.md walks a heartbeat and a request through these rooms.

// Peer input must not be able to panic the daemon: outside tests, no
// unwrap, expect or panic! (true invariants use `unreachable!` with a reason).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
// `unsafe` lives in `sys/` alone, each block under a SAFETY line; the rest
// of the tree cannot write any.
#![deny(unsafe_code)]

pub mod alerts;
pub mod audit;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod cron;
pub mod daemon;
pub mod fleet;
pub mod ingest;
pub mod logging;
pub mod pool;
pub mod proto;
#[cfg(test)]
pub mod script;
pub mod serve;
pub mod stats;
pub mod store;
pub mod sys;
pub mod tasks;

/// The version of both binaries.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
