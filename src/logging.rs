//! Logging set-up, once, on stderr. Under systemd (JOURNAL_STREAM set) lines
//! carry no timestamp, since journald adds its own. The level can change at
//! run time through `log::set_max_level` (SIGHUP does this).
//!
//! Rate-limited warnings ([`RateLimit`]): the first occurrence of a kind of
//! event is logged, repeats within the window are counted and summed into
//! the next line. A peer that sends garbage a thousand times a second costs
//! one log line per window, never a flood. Keys are static strings, so the
//! map is bounded by the number of call sites.

use log::LevelFilter;
use simplelog::{ConfigBuilder, WriteLogger};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub fn init(level: LevelFilter) {
    let mut b = ConfigBuilder::new();
    b.set_target_level(LevelFilter::Off)
        .set_thread_level(LevelFilter::Off)
        .set_location_level(LevelFilter::Off);
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        b.set_time_level(LevelFilter::Off);
    } else {
        b.set_time_format_rfc3339();
    }
    // The logger passes everything; the global max level filters.
    let _ = WriteLogger::init(LevelFilter::Trace, b.build(), std::io::stderr());
    log::set_max_level(level);
}

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
