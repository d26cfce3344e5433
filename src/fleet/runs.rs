//! Run metrics: a sliding window of recent runs per worker, and
//! the figures derived from it.
//!
//! Pure: runs and clocks in, figures out. Rates and percentiles cover the
//! window: the last hour, at most [`MAX_RUNS`] runs. Totals (since the
//! worker was first seen) are kept by the worker's snapshot, not here. With
//! no runs the rates are 0 and the durations `null`, never NaN.

use serde::Serialize;
use std::collections::VecDeque;

/// Runs kept in the window at most.
pub const MAX_RUNS: usize = 1000;
/// The window's length.
pub const WINDOW_MS: u64 = 3_600_000;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Run {
    /// Unix ms when the run was recorded.
    pub at_ms: u64,
    pub duration_ms: f32,
    pub ok: bool,
}

#[derive(Clone, Debug, Default)]
pub struct RunWindow {
    runs: VecDeque<Run>,
}

impl RunWindow {
    pub fn record(&mut self, run: Run) {
        self.prune(run.at_ms);
        if self.runs.len() == MAX_RUNS {
            self.runs.pop_front();
        }
        self.runs.push_back(run);
    }

    /// Drop runs older than the window.
    pub fn prune(&mut self, now_ms: u64) {
        while self
            .runs
            .front()
            .is_some_and(|r| now_ms.saturating_sub(r.at_ms) > WINDOW_MS)
        {
            self.runs.pop_front();
        }
    }

    pub fn runs(&self) -> impl ExactSizeIterator<Item = &Run> {
        self.runs.iter()
    }

    pub fn len(&self) -> usize {
        self.runs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }
}

/// Totals since the worker (or fleet) was first seen.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Totals {
    pub total: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub last_run_time: Option<u64>,
}

/// The run metrics, as served by `/api/workers/{id}/metrics` and
/// `/api/metrics`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Metrics {
    pub uptime: String,
    pub uptime_seconds: u64,
    pub total_runs: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub success_rate: f64,
    pub error_rate: f64,
    pub runs_per_hour: f64,
    pub avg_execution_ms: Option<f64>,
    pub min_execution_ms: Option<f64>,
    pub max_execution_ms: Option<f64>,
    pub p50_execution_ms: Option<f64>,
    pub p95_execution_ms: Option<f64>,
    pub p99_execution_ms: Option<f64>,
    pub window_runs: usize,
    pub worker_start_time: u64,
    pub last_run_time: Option<u64>,
    pub timestamp: u64,
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Figures over `runs` (already pruned to the window) for something first
/// seen at `start_ms`.
pub fn compute<'a>(
    runs: impl Iterator<Item = &'a Run>,
    totals: Totals,
    start_ms: u64,
    now_ms: u64,
) -> Metrics {
    let mut durations = Vec::new();
    let mut ok = 0usize;
    for r in runs.filter(|r| now_ms.saturating_sub(r.at_ms) <= WINDOW_MS) {
        // Kept as f32; widened as is, 1102.29 would read 1102.2900390625.
        durations.push(round2(f64::from(r.duration_ms)));
        ok += r.ok as usize;
    }
    durations.sort_unstable_by(f64::total_cmp);
    let n = durations.len();
    let uptime_ms = now_ms.saturating_sub(start_ms);
    // Runs per hour over the window, or over the uptime while it is shorter
    // (at least a minute, so one early run is not "3600 an hour").
    let span_h = uptime_ms.clamp(60_000, WINDOW_MS) as f64 / 3_600_000.0;
    let rate = |k: usize| {
        if n == 0 {
            0.0
        } else {
            round2(k as f64 / n as f64 * 100.0)
        }
    };
    Metrics {
        uptime: crate::clock::format_uptime(uptime_ms / 1000),
        uptime_seconds: uptime_ms / 1000,
        total_runs: totals.total,
        succeeded: totals.succeeded,
        failed: totals.failed,
        success_rate: rate(ok),
        error_rate: rate(n - ok),
        runs_per_hour: round2(n as f64 / span_h),
        avg_execution_ms: (n > 0).then(|| round2(durations.iter().sum::<f64>() / n as f64)),
        min_execution_ms: durations.first().copied(),
        max_execution_ms: durations.last().copied(),
        p50_execution_ms: percentile(&durations, 50.0),
        p95_execution_ms: percentile(&durations, 95.0),
        p99_execution_ms: percentile(&durations, 99.0),
        window_runs: n,
        worker_start_time: start_ms,
        last_run_time: totals.last_run_time,
        timestamp: now_ms,
    }
}

/// The "Worker Metrics Report" line as `key=value` words: uptime, total
/// runs, succeeded, failed, error and success rate, runs per hour, average
/// duration, and p95.
pub fn report_words(m: &Metrics) -> String {
    let ms = |x: Option<f64>| x.map_or("-".to_string(), |x| format!("{x:.0}ms"));
    format!(
        "uptime=\"{}\" total_runs={} succeeded={} failed={} error_rate={:.2}% success_rate={:.2}% runs_per_hour={:.2} avg_duration={} p95={}",
        m.uptime,
        m.total_runs,
        m.succeeded,
        m.failed,
        m.error_rate,
        m.success_rate,
        m.runs_per_hour,
        ms(m.avg_execution_ms),
        ms(m.p95_execution_ms),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(at_ms: u64, duration_ms: f32, ok: bool) -> Run {
        Run {
            at_ms,
            duration_ms,
            ok,
        }
    }

    #[test]
    fn durations_read_as_they_were_sent() {
        let runs = [run(1_000, 1102.29, true), run(2_000, 0.07, true)];
        let m = compute(runs.iter(), Totals::default(), 0, 3_000);
        let json = serde_json::to_string(&m).unwrap();
        assert!(json.contains("\"max_execution_ms\":1102.29,"), "{json}");
        assert!(json.contains("\"min_execution_ms\":0.07,"), "{json}");
        assert!(json.contains("\"p99_execution_ms\":1102.29,"), "{json}");
    }

    #[test]
    fn report_words_carry_seed_004s_report() {
        let runs: Vec<Run> = (0..42).map(|i| run(i * 1000, 1250.0, i >= 2)).collect();
        let totals = Totals {
            total: 42,
            succeeded: 40,
            failed: 2,
            last_run_time: Some(41_000),
        };
        let m = compute(runs.iter(), totals, 0, 323_000);
        assert_eq!(
            report_words(&m),
            "uptime=\"5m 23s\" total_runs=42 succeeded=40 failed=2 error_rate=4.76% success_rate=95.24% runs_per_hour=468.11 avg_duration=1250ms p95=1250ms"
        );
        let none = compute([].iter(), Totals::default(), 0, 1000);
        assert!(report_words(&none).ends_with("avg_duration=- p95=-"));
    }

    #[test]
    fn window_prunes_by_age_and_count() {
        let mut w = RunWindow::default();
        w.record(run(0, 1.0, true));
        w.record(run(1000, 1.0, true));
        w.record(run(WINDOW_MS + 500, 1.0, true));
        assert_eq!(w.len(), 2, "the run at 0 is over an hour old");
        let base = 10 * WINDOW_MS;
        for i in 0..(MAX_RUNS as u64 + 50) {
            w.record(run(base + i, 1.0, true));
        }
        assert_eq!(w.len(), MAX_RUNS);
        assert_eq!(w.runs().next().unwrap().at_ms, base + 50);
    }

    #[test]
    fn percentiles_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 95.0), Some(95.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn rates_and_durations() {
        let now = 2 * 3_600_000;
        let runs = [
            run(now - 10, 100.0, true),
            run(now - 20, 300.0, false),
            run(now - 30, 200.0, true),
            run(now - 40, 400.0, true),
        ];
        let totals = Totals {
            total: 10,
            succeeded: 8,
            failed: 2,
            last_run_time: Some(now - 10),
        };
        let m = compute(runs.iter(), totals, 0, now);
        assert_eq!(
            (m.total_runs, m.succeeded, m.failed),
            (10, 8, 2),
            "totals since first seen"
        );
        assert_eq!((m.success_rate, m.error_rate), (75.0, 25.0), "window rates");
        assert_eq!(m.runs_per_hour, 4.0);
        assert_eq!(
            (m.min_execution_ms, m.max_execution_ms, m.avg_execution_ms),
            (Some(100.0), Some(400.0), Some(250.0))
        );
        assert_eq!(m.p50_execution_ms, Some(200.0));
        assert_eq!(m.uptime, "2h 0m 0s");
    }

    #[test]
    fn no_runs_is_zero_and_null_never_nan() {
        let m = compute([].iter(), Totals::default(), 0, 1000);
        assert_eq!(
            (m.success_rate, m.error_rate, m.runs_per_hour),
            (0.0, 0.0, 0.0)
        );
        assert_eq!(m.avg_execution_ms, None);
        let v = serde_json::to_value(&m).unwrap();
        assert!(v["p99_execution_ms"].is_null());
        assert!(!serde_json::to_string(&m).unwrap().contains("NaN"));
    }

    #[test]
    fn young_workers_rate_over_at_least_a_minute() {
        let m = compute([run(500, 1.0, true)].iter(), Totals::default(), 0, 1000);
        assert_eq!(m.runs_per_hour, 60.0);
    }
}
