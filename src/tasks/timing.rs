//! How long tasks wait and run: histograms for `/metrics`, of relaxed
//! atomics, observed by the task book as tasks are sent and finish.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Upper bounds, in seconds, of the task histograms' buckets.
pub const TASK_BUCKETS_S: [f64; 14] = [
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0, 1800.0, 3600.0, 86400.0,
];

/// A latency histogram of relaxed atomics (Prometheus buckets: each
/// counts the observations up to its bound, not cumulative here).
#[derive(Default)]
pub struct Histogram {
    buckets: [AtomicU64; TASK_BUCKETS_S.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, ms: u64) {
        let secs = ms as f64 / 1000.0;
        if let Some(i) = TASK_BUCKETS_S.iter().position(|&b| secs <= b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_us.fetch_add(ms * 1000, Relaxed);
    }

    /// Cumulative bucket counts (in [`TASK_BUCKETS_S`] order), the count,
    /// and the sum in seconds.
    pub fn reading(&self) -> (Vec<u64>, u64, f64) {
        let mut acc = 0;
        let cumulative = self
            .buckets
            .iter()
            .map(|b| {
                acc += b.load(Relaxed);
                acc
            })
            .collect();
        (
            cumulative,
            self.count.load(Relaxed),
            self.sum_us.load(Relaxed) as f64 / 1e6,
        )
    }
}
