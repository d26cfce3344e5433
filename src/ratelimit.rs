//! Rate-limited logging: the first occurrence of a kind of event is logged,
//! repeats within the window are counted and summed into the next line.
//! A peer that sends garbage a thousand times a second costs one log line
//! per window, never a flood. Keys are static strings, so the map is bounded
//! by the number of call sites.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct RateLimit {
    every: Duration,
    seen: Mutex<HashMap<&'static str, (Instant, u64)>>,
}

impl RateLimit {
    pub fn new(every: Duration) -> RateLimit {
        RateLimit {
            every,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(n)` when a line for `key` may be logged now, `n` being how many
    /// were suppressed since the last one; `None` to stay quiet.
    pub fn check(&self, key: &'static str, now: Instant) -> Option<u64> {
        let mut seen = self.seen.lock().ok()?;
        match seen.get_mut(key) {
            Some((last, suppressed)) if now.saturating_duration_since(*last) < self.every => {
                *suppressed += 1;
                None
            }
            Some((last, suppressed)) => {
                let n = *suppressed;
                *last = now;
                *suppressed = 0;
                Some(n)
            }
            None => {
                seen.insert(key, (now, 0));
                Some(0)
            }
        }
    }
}

impl RateLimit {
    /// Log a warning for `key` unless one was logged within the window;
    /// the line says how many were suppressed since the last.
    pub fn warn(&self, key: &'static str, msg: impl FnOnce() -> String) {
        if let Some(suppressed) = self.check(key, Instant::now()) {
            log::warn!("{} (suppressed={suppressed})", msg());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_window() {
        let rl = RateLimit::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(rl.check("a", t0), Some(0));
        assert_eq!(rl.check("a", t0 + Duration::from_secs(1)), None);
        assert_eq!(rl.check("a", t0 + Duration::from_secs(2)), None);
        assert_eq!(rl.check("b", t0 + Duration::from_secs(2)), Some(0));
        assert_eq!(rl.check("a", t0 + Duration::from_secs(11)), Some(2));
        assert_eq!(rl.check("a", t0 + Duration::from_secs(12)), None);
    }
}
