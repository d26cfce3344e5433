//! The daemon's own keeping: where its state lives, how it logs, and what
//! it reports of the fleet.

use super::setting::{Alias, area, name_of, off_or, one_of, optional_path, show_path, shown_off};
use super::units::{at_least, fmt_duration, parse_duration};
use super::{Config, WorkerSeries};
use log::LevelFilter;
use std::path::PathBuf;
use std::time::Duration;

const SERIES: [(&str, WorkerSeries); 3] = [
    ("full", WorkerSeries::Full),
    ("basic", WorkerSeries::Basic),
    ("off", WorkerSeries::Off),
];

const FORMATS: [(&str, bool); 2] = [("text", false), ("json", true)];

fn level(v: &str) -> Result<LevelFilter, String> {
    v.parse()
        .map_err(|_| format!("{v:?} is not one of off, error, warn, info, debug, trace"))
}

fn report_every(v: &str) -> Result<Option<Duration>, String> {
    off_or(v, |v| at_least(parse_duration(v)?, 1000))
}

/// The older `METRICS_INTERVAL`: milliseconds when bare (`60000`), or a
/// duration with its unit, or `off`.
fn metrics_interval(v: &str, _: &Config) -> Result<String, String> {
    let v = v.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        Ok(format!("{v}ms"))
    } else {
        Ok(v.to_string())
    }
}

area! {
    /// State across restarts, logs, reports.
    pub struct Daemon in daemon {
        state_dir: Option<PathBuf> = "state_dir", "/var/lib/muster", Path, restart,
            "where the registry is saved across restarts, or `off`",
            optional_path, show_path;
        state_save_interval: Duration = "state_save_interval", "10s", Duration, live,
            "how often the registry is saved (and always at shutdown)",
            |v| at_least(parse_duration(v)?, 1000), |d: &Duration| fmt_duration(*d);
        state_series_interval: Duration = "state_series_interval", "5m", Duration, live,
            "how often the workers' histories and run windows are saved (and always at shutdown)",
            |v| at_least(parse_duration(v)?, 1000), |d: &Duration| fmt_duration(*d);
        log_level: LevelFilter = "log_level", "info", Level, live,
            "error, warn, info, debug or trace",
            level, |l: &LevelFilter| l.to_string().to_lowercase();
        /// `json`: one JSON object per log line (otherwise text).
        log_json: bool = "log_format", "text", Text, restart,
            "text, or json: one object per line with time, level, target and message",
            |v| one_of(v, &FORMATS), |j: &bool| name_of(j, &FORMATS);
        metrics_report_interval: Option<Duration> = "metrics_report_interval", "60s", Duration, live,
            "how often the fleet's run metrics are logged, or `off`",
            report_every, |d: &Option<Duration>| shown_off(*d, fmt_duration),
            aliases: [Alias { name: "METRICS_INTERVAL", read: metrics_interval }];
        metrics_worker_series: WorkerSeries = "metrics_worker_series", "full", Text, live,
            "per-worker series on /metrics: full (about 30 a worker with runs), basic (5) or off",
            |v| one_of(v, &SERIES), |s: &WorkerSeries| name_of(s, &SERIES);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_interval_is_milliseconds_when_bare() {
        let c = super::super::defaults();
        assert_eq!(metrics_interval("60000", &c).unwrap(), "60000ms");
        assert_eq!(metrics_interval(" 30s", &c).unwrap(), "30s");
        assert_eq!(metrics_interval("off", &c).unwrap(), "off");
    }
}
