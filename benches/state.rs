//! What saving the registry costs: a fleet of WORKERS (default 10,000)
//! workers, each with a full history ring (history_samples = 720) and a
//! full run window (1,000 runs), each of the two files (the registry,
//! the series) saved to a temporary state_dir ROUNDS (default 5) times.
//! Prints, per save, the wall time and the CPU time of the saving thread,
//! the file size, and the longest the save held any one worker's lock
//! (what that worker's thread or an HTTP reader of it could wait at most);
//! what the two cost a minute at the default intervals; then how long
//! reading the files back takes.
//!
//!   cargo bench --bench state
//!   WORKERS=1000 ROUNDS=3 cargo bench --bench state

use muster::config;
use muster::fleet::Shared;
use muster::fleet::history::Sample;
use muster::fleet::registry::Registry;
use muster::fleet::runs::{MAX_RUNS, Run};
use muster::fleet::snapshot::{Snapshot, Transport};
use muster::fleet::worker::Series;
use muster::store::{Part, Store};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn env(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn fleet(n: usize, samples: usize) -> (Arc<Shared>, Arc<Registry>) {
    let mut cfg = config::defaults();
    cfg.fleet.max_workers = n;
    cfg.fleet.history_samples = samples;
    let shared = Arc::new(Shared::new(cfg));
    let registry = Arc::new(Registry::new(shared.clone()));
    let now_s = (muster::clock::unix_ms() / 1000) as u32;
    let now_ms = muster::clock::unix_ms();
    let workers = (0..n).map(|i| {
        let mut s = Snapshot::new(
            format!("worker-{i:05}").as_str().into(),
            Transport::Tcp,
            Instant::now(),
        );
        s.cpu_usage = Some(12.5);
        s.labels = Arc::new([("pool".to_string(), "scan".to_string())].into());
        let mut series = Series::default();
        for k in 0..samples {
            let t = now_s - (samples - k) as u32;
            series.history.push(
                Sample {
                    t,
                    cpu: 1.0 + k as f32,
                    memory: 2.0,
                    gpu: f32::NAN,
                    rss_mb: 50.0,
                    queue: 3,
                },
                samples,
            );
        }
        for k in 0..MAX_RUNS {
            series.runs.record(Run {
                at_ms: now_ms - (MAX_RUNS - k) as u64 * 1000,
                duration_ms: 120.0,
                ok: k % 7 != 0,
            });
        }
        (s, series)
    });
    let restored = registry.restore(workers.collect());
    assert_eq!(restored, n);
    (shared, registry)
}

fn main() {
    // `cargo test --all-targets` runs this without `--bench`: a small
    // fleet then, so that the bench is kept working, not timed.
    let timed = std::env::args().any(|a| a == "--bench");
    let (n, rounds) = if timed {
        (env("WORKERS", 10_000), env("ROUNDS", 5))
    } else {
        (100, 1)
    };
    let samples = 720;
    eprintln!("building {n} workers with {samples} samples and {MAX_RUNS} runs each");
    let (_shared, registry) = fleet(n, samples);
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path()).expect("store");

    // Per file: the median save's CPU and its size.
    let mut per_part = Vec::new();
    for part in [Part::Registry, Part::Series] {
        println!("\n{part:?} file:\n");
        println!("| save | wall ms | cpu ms | file MB | longest hold of one worker's lock |");
        println!("|---|---|---|---|---|");
        let (mut cpu, mut bytes) = (Vec::new(), 0);
        for round in 1..=rounds {
            let saved = store.save(&registry, part).expect("save");
            cpu.push(saved.cpu.as_secs_f64() * 1000.0);
            bytes = saved.bytes;
            println!(
                "| {round} | {:.0} | {:.0} | {:.0} | {:.1} µs |",
                saved.took.as_secs_f64() * 1000.0,
                saved.cpu.as_secs_f64() * 1000.0,
                saved.bytes as f64 / 1e6,
                saved.max_hold.as_secs_f64() * 1e6
            );
        }
        cpu.sort_by(f64::total_cmp);
        let median = cpu[cpu.len() / 2];
        println!("\n{n} workers: median save cpu {median:.0} ms");
        per_part.push((median, bytes as f64 / 1e6));
    }
    // At the default intervals (state_save_interval 10 s,
    // state_series_interval 5 min), with the fleet changing all the time.
    let (reg, ser) = (per_part[0], per_part[1]);
    println!(
        "\nat the default intervals: {:.0} MB written and {:.0} ms of CPU a minute",
        reg.1 * 6.0 + ser.1 / 5.0,
        reg.0 * 6.0 + ser.0 / 5.0
    );
    let t = Instant::now();
    let loaded = store.load(&registry_config(n, samples));
    println!(
        "load: {} workers read back in {:.0} ms",
        loaded.workers.len(),
        t.elapsed().as_secs_f64() * 1000.0
    );
    registry.shutdown(Instant::now() + Duration::from_secs(10));
}

fn registry_config(n: usize, samples: usize) -> config::Config {
    let mut cfg = config::defaults();
    cfg.fleet.max_workers = n;
    cfg.fleet.history_samples = samples;
    cfg
}
