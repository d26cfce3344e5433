//! The running daemon: the main thread waits for signals and watches its
//! threads; SIGHUP reloads, SIGTERM and SIGINT stop everything in order.
//! It also writes systemd's `STATUS=` line and the periodic run-metrics
//! report.

use super::start::Daemon;
use crate::config;
use crate::fleet::runs;
use crate::serve::views;
use signal_hook::consts::SIGHUP;
use signal_hook::iterator::Signals;
use std::time::{Duration, Instant};

/// How long shutdown waits for worker threads.
const STOP_GRACE: Duration = Duration::from_secs(4);
/// How often `STATUS=` is refreshed under systemd.
const STATUS_EVERY: Duration = Duration::from_secs(5);
/// How often the main thread looks at signals and its threads.
const WATCH: Duration = Duration::from_millis(100);

impl Daemon {
    pub(super) fn run(self, mut signals: Signals) -> i32 {
        let mut next_status = Instant::now();
        let mut next_report = self.started;
        // The fleet's version at the last report: a fleet that has not
        // changed since is not reported again.
        let mut reported: Option<u64> = None;
        let status = 'watch: loop {
            for sig in signals.pending() {
                match sig {
                    SIGHUP => {
                        self.notifier.reloading();
                        self.reload();
                        self.notifier.ready();
                    }
                    _ => {
                        log::info!("signal {sig}: shutting down");
                        break 'watch 0;
                    }
                }
            }
            if self.ingest.0.is_finished()
                || self.http.as_ref().is_some_and(|(t, _)| t.is_finished())
            {
                log::error!("a service thread stopped unexpectedly; shutting down");
                break 'watch 1;
            }
            if let Some(every) = self.shared.config.get().daemon.metrics_report_interval {
                if Instant::now() >= next_report {
                    let version = self.shared.changes.version();
                    if next_report > self.started && reported != Some(version) {
                        self.report();
                        reported = Some(version);
                    }
                    next_report = Instant::now() + every;
                }
            }
            if self.notifier.enabled() && Instant::now() >= next_status {
                self.notifier.status(&self.summary());
                next_status = Instant::now() + STATUS_EVERY;
            }
            std::thread::sleep(WATCH);
        };
        self.stop();
        status
    }

    /// Seed 004's periodic report: the fleet's counts by status and its
    /// run metrics, one line.
    fn report(&self) {
        let m = views::fleet_metrics(&self.registry, self.started);
        let mut by_status = std::collections::BTreeMap::new();
        for s in self.registry.snapshots() {
            *by_status.entry(s.status()).or_insert(0u64) += 1;
        }
        let mut line = format!("fleet report: workers={}", m.workers);
        for (k, v) in by_status {
            line.push_str(&format!(" {k}={v}"));
        }
        log::info!("{line} {}", runs::report_words(&m.runs));
    }

    /// One line for `systemctl status`: the workers, and the totals of
    /// the by-reason counters that say something was lost or refused.
    fn summary(&self) -> String {
        let c = self.registry.counts();
        let st = &self.shared.stats;
        format!(
            "{} workers, {} active, {} dropped, {} rejected",
            c.total,
            c.active,
            st.dropped_total(),
            st.rejected_total()
        )
    }

    fn reload(&self) {
        match config::load_process(&self.cli) {
            Ok((mut cfg, _)) => {
                let (max_workers, warning) = self.limits.clamp(cfg.fleet.max_workers);
                if let Some(w) = warning {
                    log::warn!("{w}");
                }
                cfg.fleet.max_workers = max_workers;
                for w in config::warnings(&cfg) {
                    log::warn!("{w}");
                }
                let notes = self.shared.config.apply(cfg);
                if notes.is_empty() {
                    log::info!("reload: nothing changed");
                }
                for n in notes {
                    log::info!("reload: {n}");
                }
            }
            Err(e) => log::error!("reload failed, keeping the running configuration: {e}"),
        }
    }

    fn stop(self) {
        let started = Instant::now();
        self.notifier.stopping();
        // Members first: their workers say bye while everything listens.
        self.pool.stop_all();
        let _ = self.supervisor.join();
        // A stop is not an incident: no resolutions are posted for it.
        self.alerts.stop();
        for t in self.alert_threads {
            let _ = t.join();
        }
        let (ingest, ingest_news) = self.ingest;
        ingest_news.post(crate::ingest::News::Stop);
        let _ = ingest.join();
        // No frame can reach the task book now: stop it, and let the
        // journal thread write and sync what it holds.
        self.tasks.stop();
        let _ = self.scheduler.join();
        if let Some(j) = self.journal {
            let _ = j.join();
        }
        if let Some((thread, stop)) = self.saver {
            drop(stop);
            let _ = thread.join();
        }
        drop(self.sweeper_stop);
        let _ = self.sweeper.join();
        // Every frame read off a socket is applied before the last save.
        let late = self.registry.finish(started + STOP_GRACE);
        if late > 0 {
            log::warn!("{late} worker threads did not stop in time");
        }
        if let Some(store) = &self.store {
            if let Some(s) = store.save_counted(&self.registry, &self.shared) {
                log::info!("saved {} workers to {}", s.workers, store.path().display());
            }
        }
        self.registry.shutdown(Instant::now());
        if let Some((thread, news)) = self.http {
            news.post(crate::serve::News::Stop);
            let _ = thread.join();
        }
        log::info!("stopped in {} ms", started.elapsed().as_millis());
    }
}
