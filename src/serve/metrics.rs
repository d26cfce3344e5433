//! `GET /metrics`: the Prometheus text exposition format, version 0.0.4.
//!
//! Pure rendering: counters and snapshots in, bytes out. The daemon's
//! counters come from the one table in [`crate::stats`]. Each family has one
//! HELP and one TYPE line and all its samples together; counters end in
//! `_total`; units are base units (seconds, whole bytes); per-worker series
//! carry the `worker_id` label only (plus `outcome`, `status` or `le` where
//! the family needs it); `muster_worker_info` alone carries the hostname,
//! transport and the worker's labels. Values a worker never reported are
//! left out, not rendered as 0; run series appear once a worker reports its
//! first run.
//!
//! `muster_worker_up` is 1 for a worker heard from within the inactivity
//! timeout and 0 for one that went silent; a worker that said `bye` has no
//! `up` series at all, so `muster_worker_up == 0` pages for silence only.
//! `muster_worker_status` is one series a worker, value 1, with the status
//! the API shows as a label: a state-set (a series for every status a
//! worker is not in) would multiply the largest part of the output by six
//! for nothing a `count by (status)` cannot answer, and Prometheus ends the
//! old series at the next scrape when the status changes.
//!
//! `metrics_worker_series` bounds the cardinality: `full`, `basic` (up,
//! status, info and run counts) or `off`.
//!
//! Cost: O(workers × families) formatting into one buffer; no locks held.

use crate::config::WorkerSeries;
use crate::fleet::registry::Counts;
use crate::fleet::snapshot::{RUN_BUCKETS_S, Snapshot};
use crate::proto::RejectReason;
use crate::stats::{
    COUNTERS, DROPPED_FAMILY, DropReason, HTTP_CLASSES, HTTP_FAMILY, REJECTED_FAMILY, Stats,
};
use crate::tasks::timing::{Histogram, TASK_BUCKETS_S};
use std::fmt::Write;
use std::sync::Arc;
use std::time::Instant;

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Escape a label value: backslash, double quote and newline (the format's
/// only escapes).
pub fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// What `/metrics` shows besides the counters and the snapshots.
/// When a worker was last heard, if later than its snapshot says.
pub type Heard<'a> = dyn Fn(&Snapshot) -> Option<Instant> + 'a;

pub struct Figures<'a> {
    pub stats: &'a Stats,
    pub version: &'a str,
    pub uptime_seconds: f64,
    pub udp_kernel_drops: Option<u64>,
    pub max_workers: usize,
    /// The task histograms, when there is a task book.
    pub tasks: Option<&'a crate::tasks::Tasks>,
    pub series: WorkerSeries,
    /// The daemon's own process (`process_*`), when /proc can be read.
    pub process: Option<crate::sys::procfs::OwnProcess>,
    /// When a worker was last heard, if its snapshot does not say yet (a
    /// quiet beat waiting in its inbox: [`crate::fleet::inbox`]).
    pub heard: Option<&'a Heard<'a>>,
}

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn one(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", escape_label(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    /// One gauge family with a sample per worker that has a value.
    fn per_worker(
        &mut self,
        snaps: &[Arc<Snapshot>],
        name: &str,
        help: &str,
        value: impl Fn(&Snapshot) -> Option<f64>,
    ) {
        self.family(name, "gauge", help);
        for s in snaps {
            if let Some(v) = value(s) {
                self.sample(name, &[("worker_id", &s.id)], v);
            }
        }
    }

    /// Every exported row of the counter table, a family per run of rows
    /// with the same name.
    fn counters(&mut self, st: &Stats) {
        let mut current = "";
        for (row, m) in COUNTERS
            .iter()
            .filter_map(|r| r.metric.as_ref().map(|m| (r, m)))
        {
            if m.family != current {
                self.family(m.family, m.kind.as_str(), m.help);
                current = m.family;
            }
            let labels: &[(&str, &str)] = match &m.label {
                Some(l) => std::slice::from_ref(l),
                None => &[],
            };
            self.sample(m.family, labels, st.get(row.counter) as f64);
        }
    }
}

/// A body gzipped at the fastest level: the text compresses about 10:1
/// even so.
pub fn gzip(text: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(
        Vec::with_capacity(text.len() / 8),
        flate2::Compression::fast(),
    );
    // Writing into a Vec cannot fail.
    let _ = e.write_all(text);
    e.finish().unwrap_or_default()
}

/// A histogram family from a [`Histogram`] reading.
fn histogram(o: &mut Out, name: &str, help: &str, h: &Histogram) {
    let (cumulative, count, sum) = h.reading();
    o.family(name, "histogram", help);
    let bucket = format!("{name}_bucket");
    for (bound, n) in TASK_BUCKETS_S.iter().zip(cumulative) {
        o.sample(&bucket, &[("le", &bound.to_string())], n as f64);
    }
    o.sample(&bucket, &[("le", "+Inf")], count as f64);
    o.sample(&format!("{name}_sum"), &[], sum);
    o.sample(&format!("{name}_count"), &[], count as f64);
}

pub fn render(d: &Figures, snaps: &[Arc<Snapshot>], now: Instant) -> String {
    let mut o = Out(String::with_capacity(4096 + snaps.len() * 1200));
    let st = d.stats;
    o.family(
        "muster_build_info",
        "gauge",
        "Version of musterd, as a label; always 1.",
    );
    o.sample("muster_build_info", &[("version", d.version)], 1.0);
    o.family(
        "muster_uptime_seconds",
        "gauge",
        "Seconds since musterd started.",
    );
    o.sample("muster_uptime_seconds", &[], d.uptime_seconds);
    o.counters(st);
    if let Some(t) = d.tasks {
        histogram(
            &mut o,
            "muster_task_queue_wait_seconds",
            "Time tasks waited in the queue before a worker was sent them.",
            t.queue_wait(),
        );
        histogram(
            &mut o,
            "muster_task_run_seconds",
            "Time from running to succeeded or failed, as the daemon saw it.",
            t.run_time(),
        );
    }
    o.family(REJECTED_FAMILY, "counter", "Frames refused, by reason.");
    for r in RejectReason::ALL {
        o.sample(
            REJECTED_FAMILY,
            &[("reason", r.as_str())],
            st.rejected(r) as f64,
        );
    }
    o.family(
        DROPPED_FAMILY,
        "counter",
        "Valid frames not applied, by reason; udp_kernel is the kernel's count for the UDP socket.",
    );
    for r in DropReason::ALL {
        o.sample(
            DROPPED_FAMILY,
            &[("reason", r.as_str())],
            st.dropped(r) as f64,
        );
    }
    if let Some(k) = d.udp_kernel_drops {
        o.sample(DROPPED_FAMILY, &[("reason", "udp_kernel")], k as f64);
    }
    o.family(HTTP_FAMILY, "counter", "HTTP responses, by status class.");
    for (class, n) in HTTP_CLASSES.iter().zip(st.http_responses()) {
        o.sample(HTTP_FAMILY, &[("class", class)], n as f64);
    }
    o.family(
        "muster_workers_max",
        "gauge",
        "The max_workers limit in force.",
    );
    o.sample("muster_workers_max", &[], d.max_workers as f64);
    if let Some(p) = &d.process {
        process(&mut o, p);
    }
    fleet(&mut o, snaps);
    if d.series != WorkerSeries::Off {
        basic(&mut o, snaps);
        run_counts(&mut o, snaps);
    }
    if d.series == WorkerSeries::Full {
        workers(&mut o, snaps, now, d.heard);
        run_durations(&mut o, snaps);
    }
    o.0
}

/// The standard `process_*` families every Prometheus client library
/// exports, for musterd itself.
fn process(o: &mut Out, p: &crate::sys::procfs::OwnProcess) {
    o.one(
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
        p.cpu_seconds,
    );
    o.one(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
        p.resident_bytes as f64,
    );
    o.one(
        "process_virtual_memory_bytes",
        "gauge",
        "Virtual memory size in bytes.",
        p.virtual_bytes as f64,
    );
    o.one(
        "process_open_fds",
        "gauge",
        "Number of open file descriptors.",
        p.open_fds as f64,
    );
    if let Some(max) = p.max_fds {
        o.one(
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            max as f64,
        );
    }
    if let Some(start) = p.start_time_seconds {
        o.one(
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            start,
        );
    }
    let heap = crate::sys::memory::heap();
    o.one(
        "muster_heap_in_use_bytes",
        "gauge",
        "Bytes musterd has allocated and not freed, by malloc's own count (RSS also counts pages that freed blocks still hold).",
        heap.in_use as f64,
    );
    o.one(
        "muster_heap_free_bytes",
        "gauge",
        "Bytes malloc keeps free for reuse inside its arenas.",
        heap.free as f64,
    );
}

/// A Prometheus label name for a worker label: `label_` and the key with
/// anything outside `[A-Za-z0-9_]` made `_`.
fn label_name(key: &str) -> String {
    let mut out = String::with_capacity(6 + key.len());
    out.push_str("label_");
    out.extend(
        key.chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }),
    );
    out
}

/// The series every worker has unless `metrics_worker_series = off`.
fn basic(o: &mut Out, snaps: &[Arc<Snapshot>]) {
    o.family(
        "muster_worker_up",
        "gauge",
        "1 if the worker was heard from within the inactivity timeout, 0 if it went silent; absent once it said bye.",
    );
    for s in snaps.iter().filter(|s| !s.terminated) {
        let up = if s.is_active() { 1.0 } else { 0.0 };
        o.sample("muster_worker_up", &[("worker_id", &s.id)], up);
    }
    o.family(
        "muster_worker_status",
        "gauge",
        "The worker's status as a label (one of the statuses muster shows); always 1.",
    );
    for s in snaps {
        o.sample(
            "muster_worker_status",
            &[("worker_id", &s.id), ("status", s.status().as_str())],
            1.0,
        );
    }
    o.family(
        "muster_worker_info",
        "gauge",
        "The worker's hostname, transport, node (in cluster mode) and labels (label_KEY); always 1.",
    );
    for s in snaps {
        let mut labels: Vec<(String, &str)> = vec![
            ("worker_id".into(), &s.id),
            ("transport".into(), s.transport.as_str()),
        ];
        if let Some(h) = s.hello.as_ref().and_then(|h| h.hostname.as_deref()) {
            labels.push(("hostname".into(), h));
        }
        if let Some(n) = s.node.as_deref() {
            labels.push(("node".into(), n));
        }
        for (k, v) in s.labels.iter() {
            let name = label_name(k);
            // Two keys that read the same once made valid: the first wins.
            if !labels.iter().any(|(n, _)| *n == name) {
                labels.push((name, v));
            }
        }
        let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        o.sample("muster_worker_info", &labels, 1.0);
    }
}

/// Workers by the state the daemon judges.
fn fleet(o: &mut Out, snaps: &[Arc<Snapshot>]) {
    let mut c = Counts::default();
    for s in snaps {
        c.add(s);
    }
    o.family("muster_workers", "gauge", "Workers tracked, by state.");
    for (state, n) in [
        ("active", c.active),
        ("inactive", c.inactive),
        ("terminated", c.terminated),
    ] {
        o.sample("muster_workers", &[("state", state)], n as f64);
    }
}

/// One gauge family per reported figure, a sample per worker.
fn workers(o: &mut Out, snaps: &[Arc<Snapshot>], now: Instant, heard: Option<&Heard>) {
    o.per_worker(
        snaps,
        "muster_worker_cpu_usage_percent",
        "CPU use as the worker reported it, % of one core.",
        |s| s.cpu_usage,
    );
    o.per_worker(
        snaps,
        "muster_worker_memory_usage_percent",
        "Memory use as the worker reported it, % of host memory.",
        |s| s.memory_usage,
    );
    o.per_worker(
        snaps,
        "muster_worker_gpu_usage_percent",
        "GPU use as the worker reported it.",
        |s| s.gpu_usage,
    );
    o.per_worker(
        snaps,
        "muster_worker_rss_bytes",
        "Resident memory as the worker reported it, in whole bytes.",
        |s| {
            s.resource_usage
                .as_ref()?
                .rss_mb
                .map(|mb| (mb * 1024.0 * 1024.0).round())
        },
    );
    o.per_worker(
        snaps,
        "muster_worker_queue_depth",
        "Queue depth as the worker reported it.",
        |s| Some(s.queue_depth as f64),
    );
    o.per_worker(
        snaps,
        "muster_worker_seconds_since_last_heartbeat",
        "Seconds since the daemon last heard from the worker.",
        |s| {
            let seen = heard.and_then(|f| f(s)).unwrap_or(s.last_seen);
            Some(now.saturating_duration_since(seen).as_secs_f64())
        },
    );
    o.family(
        "muster_worker_missed_beats_total",
        "counter",
        "Heartbeats never received, from gaps in seq.",
    );
    for s in snaps {
        o.sample(
            "muster_worker_missed_beats_total",
            &[("worker_id", &s.id)],
            s.missed_beats as f64,
        );
    }
}

/// Workers that reported runs: run series only for them, since most
/// workers in a large fleet never do, and 20 zero samples each would
/// dominate.
fn runners(snaps: &[Arc<Snapshot>]) -> impl Iterator<Item = &Arc<Snapshot>> {
    snaps.iter().filter(|s| s.runs.total > 0)
}

/// Run counts by outcome, per worker that reported runs.
fn run_counts(o: &mut Out, snaps: &[Arc<Snapshot>]) {
    o.family(
        "muster_worker_runs_total",
        "counter",
        "Runs the worker reported, by outcome.",
    );
    for s in runners(snaps) {
        o.sample(
            "muster_worker_runs_total",
            &[("worker_id", &s.id), ("outcome", "ok")],
            s.runs.succeeded as f64,
        );
        o.sample(
            "muster_worker_runs_total",
            &[("worker_id", &s.id), ("outcome", "failed")],
            s.runs.failed as f64,
        );
    }
}

/// The run-duration histogram, per worker that reported runs.
fn run_durations(o: &mut Out, snaps: &[Arc<Snapshot>]) {
    o.family(
        "muster_worker_run_duration_seconds",
        "histogram",
        "Durations of the runs the worker reported.",
    );
    for s in runners(snaps) {
        let mut cumulative = 0;
        for (i, bound) in RUN_BUCKETS_S.iter().enumerate() {
            cumulative += s.runs.buckets[i];
            o.sample(
                "muster_worker_run_duration_seconds_bucket",
                &[("worker_id", &s.id), ("le", &bound.to_string())],
                cumulative as f64,
            );
        }
        o.sample(
            "muster_worker_run_duration_seconds_bucket",
            &[("worker_id", &s.id), ("le", "+Inf")],
            s.runs.total as f64,
        );
        o.sample(
            "muster_worker_run_duration_seconds_sum",
            &[("worker_id", &s.id)],
            s.runs.sum_ms / 1000.0,
        );
        o.sample(
            "muster_worker_run_duration_seconds_count",
            &[("worker_id", &s.id)],
            s.runs.total as f64,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::snapshot::Transport;
    use crate::proto::decode;
    use std::collections::HashSet;
    use std::sync::Arc;

    #[test]
    fn escapes() {
        assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label("line\nbreak"), "line\\nbreak");
        assert_eq!(escape_label("w-1:x@y"), "w-1:x@y");
    }

    fn worker(id: &str, frames: &[&str]) -> Arc<Snapshot> {
        let mut s = Snapshot::new(id.into(), Transport::Udp, Instant::now());
        for f in frames {
            s.apply(
                decode(f.as_bytes(), 65536).unwrap(),
                Transport::Udp,
                Instant::now(),
            );
        }
        Arc::new(s)
    }

    fn figures(stats: &Stats, series: WorkerSeries) -> Figures<'_> {
        Figures {
            stats,
            version: "9.9.9",
            uptime_seconds: 3.0,
            udp_kernel_drops: Some(4),
            max_workers: 10,
            tasks: None,
            series,
            process: crate::sys::procfs::own_process(),
            heard: None,
        }
    }

    fn fleet3() -> Vec<Arc<Snapshot>> {
        let mut c = Snapshot::new("c".into(), Transport::Tcp, Instant::now());
        c.apply(
            decode(
                br#"{"type":"hello","worker_id":"c","hostname":"gpu-7","labels":{"team":"ml","k8s.io/zone":"a\"b"}}"#,
                65536,
            )
            .unwrap(),
            Transport::Tcp,
            Instant::now(),
        );
        c.apply(
            decode(
                br#"{"type":"heartbeat","worker_id":"c","status":"error","seq":1}"#,
                65536,
            )
            .unwrap(),
            Transport::Tcp,
            Instant::now(),
        );
        c.apply(
            decode(br#"{"type":"heartbeat","worker_id":"c","seq":4}"#, 65536).unwrap(),
            Transport::Tcp,
            Instant::now(),
        );
        let mut d = Snapshot::new("d".into(), Transport::Udp, Instant::now());
        d.inactive = true;
        vec![
            worker(
                "a",
                &[
                    r#"{"type":"heartbeat","worker_id":"a","status":"working","resource_usage":{"rss_mb":1.3}}"#,
                    r#"{"type":"run","worker_id":"a","duration_ms":30,"ok":true}"#,
                ],
            ),
            worker("b", &[r#"{"type":"bye","worker_id":"b"}"#]),
            Arc::new(c),
            Arc::new(d),
        ]
    }

    /// Up means heard from within the timeout, and a worker that said bye
    /// is not down; status and info carry what the API shows; bytes are
    /// whole; the counter of missed beats is a counter.
    #[test]
    fn up_status_info_and_whole_bytes() {
        let stats = Stats::default();
        let text = render(
            &figures(&stats, WorkerSeries::Full),
            &fleet3(),
            Instant::now(),
        );
        for want in [
            "muster_worker_up{worker_id=\"a\"} 1\n",
            "muster_worker_up{worker_id=\"d\"} 0\n",
            "muster_worker_status{worker_id=\"a\",status=\"working\"} 1\n",
            "muster_worker_status{worker_id=\"b\",status=\"terminated\"} 1\n",
            "muster_worker_status{worker_id=\"c\",status=\"error\"} 1\n",
            "muster_worker_status{worker_id=\"d\",status=\"inactive\"} 1\n",
            "muster_worker_info{worker_id=\"c\",transport=\"tcp\",hostname=\"gpu-7\",label_k8s_io_zone=\"a\\\"b\",label_team=\"ml\"} 1\n",
            "muster_worker_info{worker_id=\"a\",transport=\"udp\"} 1\n",
            "muster_worker_rss_bytes{worker_id=\"a\"} 1363149\n",
            "muster_worker_missed_beats_total{worker_id=\"c\"} 2\n",
            "# TYPE muster_worker_missed_beats_total counter\n",
            "# TYPE process_cpu_seconds_total counter\n",
        ] {
            assert!(text.contains(want), "no {want:?} in\n{text}");
        }
        assert!(!text.contains("muster_worker_up{worker_id=\"b\""), "{text}");
        let line = |name: &str| {
            text.lines()
                .find(|l| l.starts_with(name))
                .unwrap_or_else(|| panic!("no {name}"))
                .rsplit(' ')
                .next()
                .unwrap()
                .parse::<f64>()
                .unwrap()
        };
        assert!(line("process_resident_memory_bytes ") > 1e6);
        assert!(line("process_open_fds ") >= 3.0);
        let start = line("process_start_time_seconds ");
        let now = crate::clock::unix_ms() as f64 / 1000.0;
        assert!(
            start <= now + 1.0 && start > now - 86_400.0 * 365.0,
            "{start}"
        );
    }

    /// `basic` keeps five series a worker at most, `off` none.
    #[test]
    fn worker_series_bounded() {
        let stats = Stats::default();
        let per_worker = |series| {
            let text = render(&figures(&stats, series), &fleet3(), Instant::now());
            text.lines()
                .filter(|l| l.contains("worker_id=\"a\""))
                .map(|l| l.split('{').next().unwrap().to_string())
                .collect::<Vec<_>>()
        };
        assert!(per_worker(WorkerSeries::Full).len() > 20);
        assert_eq!(
            per_worker(WorkerSeries::Basic),
            [
                "muster_worker_up",
                "muster_worker_status",
                "muster_worker_info",
                "muster_worker_runs_total",
                "muster_worker_runs_total"
            ]
        );
        assert!(per_worker(WorkerSeries::Off).is_empty());
        let off = render(
            &figures(&stats, WorkerSeries::Off),
            &fleet3(),
            Instant::now(),
        );
        assert!(
            off.contains("muster_workers{state=\"inactive\"} 1\n"),
            "{off}"
        );
    }

    #[test]
    fn gzip_round_trips() {
        use std::io::Read;
        let text = "muster_up 1\n".repeat(1000);
        let z = gzip(text.as_bytes());
        assert!(z.len() < text.len() / 10, "{}", z.len());
        let mut back = String::new();
        flate2::read::GzDecoder::new(&z[..])
            .read_to_string(&mut back)
            .unwrap();
        assert_eq!(back, text);
    }

    #[test]
    fn one_help_and_type_per_family_and_samples_grouped() {
        let stats = Stats::default();
        let snaps = vec![
            worker(
                "a",
                &[
                    r#"{"type":"heartbeat","worker_id":"a","cpu_usage":5,"resource_usage":{"rss_mb":2}}"#,
                    r#"{"type":"run","worker_id":"a","duration_ms":30,"ok":true}"#,
                    r#"{"type":"run","worker_id":"a","duration_ms":7000,"ok":false}"#,
                ],
            ),
            worker("b", &[r#"{"type":"bye","worker_id":"b"}"#]),
        ];
        let text = render(&figures(&stats, WorkerSeries::Full), &snaps, Instant::now());
        let mut seen = HashSet::new();
        let mut current = String::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap().to_string();
                assert!(seen.insert(name.clone()), "TYPE twice for {name}");
                current = name;
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                assert!(
                    name.starts_with(current.as_str()),
                    "{name} outside its family {current}"
                );
            }
        }
        assert!(text.contains("muster_worker_cpu_usage_percent{worker_id=\"a\"} 5\n"));
        assert!(
            !text.contains("muster_worker_cpu_usage_percent{worker_id=\"b\"}"),
            "unreported values are absent"
        );
        assert!(text.contains("muster_worker_rss_bytes{worker_id=\"a\"} 2097152\n"));
        assert!(text.contains("muster_worker_runs_total{worker_id=\"a\",outcome=\"failed\"} 1\n"));
        assert!(text.contains(
            "muster_worker_run_duration_seconds_bucket{worker_id=\"a\",le=\"0.05\"} 1\n"
        ));
        assert!(text.contains(
            "muster_worker_run_duration_seconds_bucket{worker_id=\"a\",le=\"+Inf\"} 2\n"
        ));
        assert!(text.contains("muster_worker_run_duration_seconds_sum{worker_id=\"a\"} 7.03\n"));
        assert!(text.contains("muster_frames_dropped_total{reason=\"udp_kernel\"} 4\n"));
        assert!(text.contains("muster_workers{state=\"terminated\"} 1\n"));
        assert!(
            !text.contains("muster_worker_runs_total{worker_id=\"b\""),
            "no run series before a first run"
        );
        for line in text
            .lines()
            .filter(|l| l.starts_with("# TYPE") && l.ends_with("counter"))
        {
            assert!(
                line.split(' ').nth(2).unwrap().ends_with("_total"),
                "{line}"
            );
        }
    }
}
