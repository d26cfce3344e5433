//! Per-worker history: a ring of fixed-size numeric samples (time, CPU,
//! memory, GPU, RSS, queue depth), at most one a second, `history_samples`
//! long (720 by default: an hour at a 5 s heartbeat).
//!
//! A sample is stored in 14 bytes: the time as whole Unix seconds, and each
//! of the five readings as a 16-bit unsigned float ([`Uf16`]: 6 exponent
//! bits, 10 mantissa bits), so a full default ring is 9.8 KiB. A reading
//! comes back within 1/2048 (0.05 %) of what was sent; integers up to
//! 2,048 (a queue depth) come back exact; absent readings are kept as
//! absent and served as `null`.
//!
//! The ring is allocated and written through at its first sample, so its
//! memory is resident from then on: a worker costs on its first beat what
//! it will cost an hour later, and the daemon's footprint does not creep up
//! while the rings fill (a `MemoryMax=` is met or missed at once).

use serde::Serialize;

/// A sample as the worker's state gives it and readers take it.
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

/// A non-negative reading in 16 bits: 0 is zero, `u16::MAX` is absent
/// (NaN), anything else a 6-bit exponent (bias 32) over a 10-bit mantissa,
/// from 2^-31 to about 4.29e9. Rounded to nearest.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Uf16(u16);

impl Uf16 {
    const ABSENT: Uf16 = Uf16(u16::MAX);

    pub fn new(x: f32) -> Uf16 {
        if x.is_nan() {
            return Uf16::ABSENT;
        }
        if x <= 0.0 {
            return Uf16(0);
        }
        let bits = x.to_bits();
        let mut exp = ((bits >> 23) & 0xff) as i32 - 127;
        let mut mant = ((bits & 0x7f_ffff) + (1 << 12)) >> 13;
        if mant == 1 << 10 {
            mant = 0;
            exp += 1;
        }
        if exp < -31 {
            return Uf16(0);
        }
        if exp > 31 || (exp == 31 && mant > 1022) {
            // The largest finite code: the one above it means absent.
            return Uf16((63 << 10) | 1022);
        }
        Uf16((((exp + 32) as u16) << 10) | mant as u16)
    }

    pub fn get(self) -> f32 {
        match self.0 {
            0 => 0.0,
            u16::MAX => f32::NAN,
            c => {
                let exp = (c >> 10) as u32 + 127 - 32;
                f32::from_bits((exp << 23) | (u32::from(c & 0x3ff) << 13))
            }
        }
    }
}

/// A sample as the ring keeps it: 14 bytes, aligned to 2.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Packed([u16; 7]);

impl Packed {
    const EMPTY: Packed = Packed([0, 0, u16::MAX, u16::MAX, u16::MAX, u16::MAX, 0]);

    fn pack(s: &Sample) -> Packed {
        Packed([
            (s.t >> 16) as u16,
            s.t as u16,
            Uf16::new(s.cpu).0,
            Uf16::new(s.memory).0,
            Uf16::new(s.gpu).0,
            Uf16::new(s.rss_mb).0,
            Uf16::new(s.queue as f32).0,
        ])
    }

    fn t(&self) -> u32 {
        (u32::from(self.0[0]) << 16) | u32::from(self.0[1])
    }

    fn unpack(&self) -> Sample {
        let f = |i: usize| Uf16(self.0[i]).get();
        Sample {
            t: self.t(),
            cpu: f(2),
            memory: f(3),
            gpu: f(4),
            rss_mb: f(5),
            queue: f(6) as u32,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct History {
    /// Every slot written once at allocation; `len` of them, from `start`
    /// and wrapping, are samples.
    ring: Box<[Packed]>,
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
        let s = Packed::pack(&s);
        if self.len > 0 && self.slot(self.len - 1).t() == s.t() {
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
        let mut ring = vec![Packed::EMPTY; cap].into_boxed_slice();
        for (i, dst) in ring.iter_mut().enumerate().take(keep) {
            *dst = *self.slot(self.len - keep + i);
        }
        (self.ring, self.start, self.len) = (ring, 0, keep);
    }

    fn slot(&self, i: usize) -> &Packed {
        &self.ring[(self.start + i) % self.ring.len()]
    }

    fn slot_mut(&mut self, i: usize) -> &mut Packed {
        let n = self.ring.len();
        &mut self.ring[(self.start + i) % n]
    }

    /// The samples, oldest first.
    pub fn samples(&self) -> impl ExactSizeIterator<Item = Sample> + '_ {
        (0..self.len).map(|i| self.slot(i).unpack())
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
        assert_eq!(std::mem::size_of::<Packed>(), 14, "fixed-size record");
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

    #[test]
    fn readings_come_back_within_one_part_in_2048() {
        let mut worst = 0f64;
        let mut x = 1e-6f32;
        while x < 4e9 {
            let back = Uf16::new(x).get();
            let err = ((back - x) / x).abs() as f64;
            worst = worst.max(err);
            x *= 1.0007;
        }
        assert!(worst <= 1.0 / 2048.0, "worst relative error {worst}");
        for n in 0..=2048u32 {
            assert_eq!(
                Uf16::new(n as f32).get(),
                n as f32,
                "integers to 2048 exact"
            );
        }
        assert_eq!(Uf16::new(12.5).get(), 12.5);
        assert!(Uf16::new(f32::NAN).get().is_nan());
        assert_eq!(Uf16::new(-3.0).get(), 0.0);
        assert_eq!(
            Uf16::new(1e12).get(),
            Uf16(0xfffe).get(),
            "saturates, never absent"
        );
    }

    #[test]
    fn a_sample_round_trips_through_the_ring() {
        let mut h = History::default();
        let sample = Sample {
            t: 1_795_418_359,
            cpu: 37.25,
            memory: f32::NAN,
            gpu: 99.9,
            rss_mb: 52.8,
            queue: 100_000,
        };
        h.push(sample, 720);
        let back = h.samples().next().unwrap();
        assert_eq!(back.t, sample.t);
        assert_eq!(back.cpu, 37.25);
        assert!(back.memory.is_nan());
        for (a, b) in [
            (back.gpu, 99.9),
            (back.rss_mb, 52.8),
            (back.queue as f32, 100_000.0),
        ] {
            assert!(((a - b) / b).abs() <= 1.0 / 2048.0, "{a} vs {b}");
        }
    }
}
