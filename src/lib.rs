//! muster: roll call for a fleet of worker processes.
//!
//! The daemon's parts, one concern per module. Pure modules (`protocol`,
//! `http_head`, `config`, parsers in `procfs` and `capacity`) take bytes or
//! text and return values; the rest own threads and sockets.

pub mod agent;
pub mod api;
pub mod bench;
pub mod bench_push;
pub mod bench_ws;
pub mod capacity;
pub mod changes;
pub mod cli;
pub mod client;
pub mod config;
pub mod daemon;
pub mod gpu;
pub mod history;
pub mod http;
pub mod http_conn;
pub mod http_head;
pub mod ingest;
pub mod listen;
pub mod live;
pub mod logging;
pub mod metrics;
pub mod procfs;
pub mod protocol;
pub mod ratelimit;
pub mod registry;
pub mod runs;
pub mod sd_notify;
pub mod stats;
pub mod sweeper;
pub mod tcp_conn;
pub mod usage;
pub mod worker;
pub mod ws;
