//! Per-worker history: a ring of fixed-size numeric samples (time, CPU,
//! memory, GPU, RSS, queue depth), at most one a second, `history_samples`
//! long (720 by default: an hour at a 5 s heartbeat).
//!
//! A sample is 24 bytes, so a full default ring is about 17 KiB. Absent
//! readings are stored as NaN and served as `null`.
//!
//! The ring is allocated and written through at its first sample, so its
//! memory is resident from then on: a worker costs on its first beat what
//! it will cost an hour later, and the daemon's footprint does not creep up
//! while the rings fill (a `MemoryMax=` is met or missed at once).

use serde::Serialize;

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

impl Sample {
    const EMPTY: Sample = Sample {
        t: 0,
        cpu: f32::NAN,
        memory: f32::NAN,
        gpu: f32::NAN,
        rss_mb: f32::NAN,
        queue: 0,
    };
}

#[derive(Clone, Debug, Default)]
pub struct History {
    /// Every slot written once at allocation; `len` of them, from `start`
    /// and wrapping, are samples.
    ring: Box<[Sample]>,
    start: usize,
    len: usize,
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
    /// the configured length (it may change on reload: the newest samples
    /// are kept).
    pub fn push(&mut self, s: Sample, cap: usize) {
        let cap = cap.max(1);
        if self.ring.len() != cap {
            self.resize(cap);
        }
        if self.len > 0 && self.slot(self.len - 1).t == s.t {
            *self.slot_mut(self.len - 1) = s;
            return;
        }
        if self.len == cap {
            self.start = (self.start + 1) % cap;
            self.len -= 1;
        }
        self.len += 1;
        *self.slot_mut(self.len - 1) = s;
    }

    fn resize(&mut self, cap: usize) {
        let keep = self.len.min(cap);
        let mut ring = vec![Sample::EMPTY; cap].into_boxed_slice();
        for (i, dst) in ring.iter_mut().enumerate().take(keep) {
            *dst = *self.slot(self.len - keep + i);
        }
        (self.ring, self.start, self.len) = (ring, 0, keep);
    }

    fn slot(&self, i: usize) -> &Sample {
        &self.ring[(self.start + i) % self.ring.len()]
    }

    fn slot_mut(&mut self, i: usize) -> &mut Sample {
        let n = self.ring.len();
        &mut self.ring[(self.start + i) % n]
    }

    /// The samples, oldest first.
    pub fn samples(&self) -> impl ExactSizeIterator<Item = &Sample> {
        (0..self.len).map(|i| self.slot(i))
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Samples at or after `since_ms`, oldest first.
    pub fn since(&self, since_ms: u64) -> Vec<SampleView> {
        self.samples()
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
        assert_eq!(h.ring.len(), 3, "sized to the cap, not doubled past it");
        let v = h.since(13_000);
        assert_eq!(
            v.iter().map(|x| x.timestamp).collect::<Vec<_>>(),
            [13_000, 14_000]
        );
        assert_eq!(v[0].memory_usage, None);
        assert_eq!(v[0].cpu_usage, Some(13.0));
        h.push(s(20, 0.0), 2);
        assert_eq!(
            h.since(0).iter().map(|x| x.timestamp).collect::<Vec<_>>(),
            [14_000, 20_000],
            "a smaller cap after reload keeps the newest"
        );
        h.push(s(21, 0.0), 4);
        h.push(s(22, 0.0), 4);
        assert_eq!(
            h.since(0).iter().map(|x| x.timestamp).collect::<Vec<_>>(),
            [14_000, 20_000, 21_000, 22_000],
            "a larger cap keeps what there was"
        );
    }

    #[test]
    fn wraps_around_many_times_in_order() {
        let mut h = History::default();
        for t in 1..=1000 {
            h.push(s(t, 0.0), 7);
        }
        let got: Vec<u64> = h.since(0).iter().map(|x| x.timestamp / 1000).collect();
        assert_eq!(got, (994..=1000).collect::<Vec<_>>());
    }
}
