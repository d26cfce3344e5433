//! Per-worker history: a ring of fixed-size numeric samples (time, CPU,
//! memory, GPU, RSS, queue depth), at most one a second, `history_samples`
//! long (720 by default: an hour at a 5 s heartbeat).
//!
//! A sample is 24 bytes, so a full default ring is about 17 KiB. Absent
//! readings are stored as NaN and served as `null`.

use serde::Serialize;
use std::collections::VecDeque;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// Unix seconds.
    pub t: u32,
    pub cpu: f32,
    pub memory: f32,
    pub gpu: f32,
    pub rss_mb: f32,
    pub queue: u32,
}

#[derive(Clone, Debug, Default)]
pub struct History {
    ring: VecDeque<Sample>,
}

fn opt(x: f32) -> Option<f32> {
    (!x.is_nan()).then_some(x)
}

/// A sample as served: milliseconds, and `null` for absent readings.
#[derive(Serialize)]
pub struct SampleView {
    pub timestamp: u64,
    pub cpu_usage: Option<f32>,
    pub memory_usage: Option<f32>,
    pub gpu_usage: Option<f32>,
    pub rss_mb: Option<f32>,
    pub queue_depth: u32,
}

impl History {
    /// Add a sample; one in the same second replaces the last. `cap` is
    /// the configured length (it may shrink on reload).
    pub fn push(&mut self, s: Sample, cap: usize) {
        if self.ring.back().is_some_and(|last| last.t == s.t) {
            self.ring.pop_back();
        }
        // Make room first: pushing onto a full ring would double it.
        while self.ring.len() >= cap.max(1) {
            self.ring.pop_front();
        }
        if self.ring.capacity() < cap {
            // Grow to the configured size once, exactly: doubling would
            // leave a 720-sample ring holding room for 1,024.
            self.ring.reserve_exact(cap - self.ring.len());
        }
        self.ring.push_back(s);
    }

    pub fn len(&self) -> usize {
        self.ring.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }

    /// Samples at or after `since_ms`, oldest first.
    pub fn since(&self, since_ms: u64) -> Vec<SampleView> {
        self.ring
            .iter()
            .filter(|s| s.t as u64 * 1000 >= since_ms)
            .map(|s| SampleView {
                timestamp: s.t as u64 * 1000,
                cpu_usage: opt(s.cpu),
                memory_usage: opt(s.memory),
                gpu_usage: opt(s.gpu),
                rss_mb: opt(s.rss_mb),
                queue_depth: s.queue,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(t: u32, cpu: f32) -> Sample {
        Sample {
            t,
            cpu,
            memory: f32::NAN,
            gpu: f32::NAN,
            rss_mb: 1.5,
            queue: 2,
        }
    }

    #[test]
    fn one_a_second_bounded_and_filtered() {
        assert_eq!(std::mem::size_of::<Sample>(), 24, "fixed-size record");
        let mut h = History::default();
        h.push(s(10, 1.0), 3);
        h.push(s(10, 2.0), 3);
        assert_eq!(h.len(), 1, "same second replaces");
        for t in 11..15 {
            h.push(s(t, t as f32), 3);
        }
        assert_eq!(h.len(), 3);
        assert!(
            h.ring.capacity() < 8,
            "sized to the cap, not doubled past it"
        );
        let v = h.since(13_000);
        assert_eq!(
            v.iter().map(|x| x.timestamp).collect::<Vec<_>>(),
            [13_000, 14_000]
        );
        assert_eq!(v[0].memory_usage, None);
        assert_eq!(v[0].cpu_usage, Some(13.0));
        h.push(s(20, 0.0), 1);
        assert_eq!(h.len(), 1, "a smaller cap after reload trims");
    }
}
