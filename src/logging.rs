//! Logging set-up, once, on stderr. When stderr is the journal (the stream
//! `JOURNAL_STREAM` names), lines carry no timestamp, since journald adds
//! its own, and each starts with its syslog priority as sd-daemon(3)
//! prefixes it (`<3>` error, `<4>` warning, `<6>` info, `<7>` debug), so
//! `journalctl -p warning` finds musterd's warnings. The level can change at
//! run time through `log::set_max_level` (SIGHUP does this).
//!
//! `log_format = json` writes one object per line instead, for people who
//! ship logs to a store that parses them:
//! `{"time":"2026-01-02T03:04:05.678Z","level":"warn","target":"muster::ingest","message":"…"}`.
//! Under the journal the priority prefix comes first all the same.
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

pub fn init(level: LevelFilter, json: bool) {
    if json {
        let logger = Json {
            journal: stderr_is_journal(),
        };
        let _ = log::set_boxed_logger(Box::new(logger));
        log::set_max_level(level);
        return;
    }
    let mut b = ConfigBuilder::new();
    b.set_target_level(LevelFilter::Off)
        .set_thread_level(LevelFilter::Off)
        .set_location_level(LevelFilter::Off);
    // The logger passes everything; the global max level filters.
    if stderr_is_journal() {
        b.set_time_level(LevelFilter::Off);
        let out = Prioritised {
            line: Vec::new(),
            out: std::io::stderr(),
        };
        let _ = WriteLogger::init(LevelFilter::Trace, b.build(), out);
    } else {
        b.set_time_format_rfc3339();
        let _ = WriteLogger::init(LevelFilter::Trace, b.build(), std::io::stderr());
    }
    log::set_max_level(level);
}

/// Whether stderr is the journal stream `JOURNAL_STREAM` names
/// (`DEVICE:INODE`, as sd-daemon(3) says to check): a program run from a
/// unit's shell with stderr redirected elsewhere must not get prefixes.
fn stderr_is_journal() -> bool {
    let Some(v) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    let Ok(st) = std::fs::File::from(fd).metadata() else {
        return false;
    };
    dev.parse() == Ok(st.dev()) && ino.parse() == Ok(st.ino())
}

/// The syslog priority of a line simplelog formatted (`[WARN] …`).
fn priority(line: &[u8]) -> u8 {
    match line {
        l if l.starts_with(b"[ERROR]") => 3,
        l if l.starts_with(b"[WARN]") => 4,
        // The audit log's lines are notices (logging.rs's one notice).
        l if l.starts_with(b"[INFO] audit: ") => 5,
        l if l.starts_with(b"[DEBUG]") || l.starts_with(b"[TRACE]") => 7,
        _ => 6,
    }
}

fn level_priority(level: log::Level) -> u8 {
    match level {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    }
}

/// One JSON object per record, written whole with one call.
struct Json {
    journal: bool,
}

impl Json {
    fn line(&self, record: &log::Record, time_ms: u64) -> String {
        #[derive(serde::Serialize)]
        struct Line<'a> {
            time: String,
            level: String,
            target: &'a str,
            message: String,
        }
        let body = serde_json::to_string(&Line {
            time: crate::clock::iso_ms(time_ms),
            level: record.level().as_str().to_ascii_lowercase(),
            target: record.target(),
            message: record.args().to_string(),
        })
        .unwrap_or_default();
        if self.journal {
            // The audit log's lines are notices, as in text lines.
            let notice =
                record.level() == log::Level::Info && body.contains("\"message\":\"audit: ");
            let p = if notice {
                5
            } else {
                level_priority(record.level())
            };
            format!("<{p}>{body}\n")
        } else {
            format!("{body}\n")
        }
    }
}

impl log::Log for Json {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }

    fn log(&self, record: &log::Record) {
        use std::io::Write;
        let line = self.line(record, crate::clock::unix_ms());
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// stderr, each line prefixed with its priority. simplelog writes a record
/// in pieces under its own lock; whole lines go out here.
struct Prioritised<W> {
    line: Vec<u8>,
    out: W,
}

impl<W: std::io::Write> std::io::Write for Prioritised<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        for piece in buf.split_inclusive(|&b| b == b'\n') {
            self.line.extend_from_slice(piece);
            if piece.ends_with(b"\n") {
                let mut out = format!("<{}>", priority(&self.line)).into_bytes();
                out.append(&mut self.line);
                self.out.write_all(&out)?;
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
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
    use std::io::Write;

    #[test]
    fn journal_lines_carry_their_priority() {
        let mut p = Prioritised {
            line: Vec::new(),
            out: Vec::new(),
        };
        for piece in ["[WARN] ", "disk full\n[ERROR] gone\n", "[INFO]", " up\n"] {
            p.write_all(piece.as_bytes()).unwrap();
        }
        p.write_all(b"[DEBUG] x\n[TRACE] y\nno level\n[INFO] audit: ci (submit) x\n")
            .unwrap();
        assert_eq!(
            String::from_utf8(p.out).unwrap(),
            "<4>[WARN] disk full\n<3>[ERROR] gone\n<6>[INFO] up\n<7>[DEBUG] x\n<7>[TRACE] y\n<6>no level\n<5>[INFO] audit: ci (submit) x\n"
        );
    }

    #[test]
    fn json_lines_are_one_object_each() {
        let args = format_args!("bad \"frame\"\nfrom {}", "10.0.0.1");
        let record = log::Record::builder()
            .level(log::Level::Warn)
            .target("muster::ingest")
            .args(args)
            .build();
        let plain = Json { journal: false }.line(&record, 1_700_000_000_123);
        assert_eq!(
            plain,
            "{\"time\":\"2023-11-14T22:13:20.123Z\",\"level\":\"warn\",\"target\":\"muster::ingest\",\"message\":\"bad \\\"frame\\\"\\nfrom 10.0.0.1\"}\n"
        );
        let journal = Json { journal: true }.line(&record, 1_700_000_000_123);
        assert_eq!(journal, format!("<4>{plain}"));
    }

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
