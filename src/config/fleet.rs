//! The roll call: the interval workers are held to, when they are judged
//! silent and forgotten, how many are tracked, and what is kept of each.

use super::setting::area;
use super::units::{fmt_duration, parse_count, parse_duration, positive};
use std::time::Duration;

area! {
    /// The workers and how the daemon judges them.
    pub struct Fleet in fleet {
        heartbeat_interval: Duration = "heartbeat_interval", "5s", Duration, live,
            "interval told to TCP workers in `welcome`",
            |v| positive(parse_duration(v)?), |d: &Duration| fmt_duration(*d);
        inactivity_timeout: Duration = "inactivity_timeout", "30s", Duration, live,
            "silence after which a worker is marked inactive",
            |v| positive(parse_duration(v)?), |d: &Duration| fmt_duration(*d);
        forget_after: Duration = "forget_after", "1h", Duration, live,
            "inactive or terminated workers older than this are evicted",
            |v| positive(parse_duration(v)?), |d: &Duration| fmt_duration(*d);
        max_workers: usize = "max_workers", "10000", Count, live,
            "most workers tracked (each has a thread); clamped to kernel limits",
            |v| parse_count(v, 1, 10_000_000), |n: &usize| n.to_string();
        history_samples: usize = "history_samples", "720", Count, live,
            "samples kept per worker for /api/workers/{id}/history (at most one a second)",
            |v| parse_count(v, 1, 100_000), |n: &usize| n.to_string();
    }
}
