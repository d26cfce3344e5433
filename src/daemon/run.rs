//! The running daemon: the main thread waits for signals, which a thread
//! of signal-hook's reads and hands over a channel, and watches its
//! threads; SIGHUP reloads, SIGTERM and SIGINT stop everything in order.
//! It also writes systemd's `STATUS=` line and the periodic run-metrics
//! report. Between those it sleeps: a signal wakes it at once.

use super::start::Daemon;
use crate::config;
use crate::fleet::runs;
use crate::proto::Status;
use crate::serve::views;
use signal_hook::consts::SIGHUP;
use signal_hook::iterator::Signals;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

/// How long shutdown waits for worker threads.
const STOP_GRACE: Duration = Duration::from_secs(4);
/// How often `STATUS=` is refreshed under systemd.
const STATUS_EVERY: Duration = Duration::from_secs(5);
/// How often the main thread looks whether a service thread ended (it
/// never should: this is the net under a bug).
const WATCH: Duration = Duration::from_secs(1);

impl Daemon {
    pub(super) fn run(self, mut signals: Signals) -> i32 {
        let (tx, rx) = mpsc::channel();
        let handle = signals.handle();
        let reader = std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                for sig in signals.forever() {
                    if tx.send(sig).is_err() {
                        break;
                    }
                }
            });
        let reader = match reader {
            Ok(t) => t,
            Err(e) => {
                log::error!("cannot start the signals thread: {e}");
                self.stop();
                return 1;
            }
        };
        let mut next_watch = Instant::now() + WATCH;
        let mut next_status = Instant::now();
        let mut next_report = self.started;
        // The fleet's version at the last report: a fleet that has not
        // changed since is not reported again.
        let mut reported: Option<u64> = None;
        let status = loop {
            let report_every = self.shared.config.get().daemon.metrics_report_interval;
            let mut until = next_watch;
            if self.notifier.enabled() {
                until = until.min(next_status);
            }
            if report_every.is_some() {
                until = until.min(next_report);
            }
            match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
                Ok(SIGHUP) => {
                    self.notifier.reloading();
                    self.reload();
                    self.notifier.ready();
                }
                Ok(sig) => {
                    log::info!("signal {sig}: shutting down");
                    break 0;
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    log::error!("the signals thread stopped; shutting down");
                    break 1;
                }
            }
            let now = Instant::now();
            if now >= next_watch {
                if self.ingest.0.is_finished()
                    || self.http.as_ref().is_some_and(|(t, _)| t.is_finished())
                {
                    log::error!("a service thread stopped unexpectedly; shutting down");
                    break 1;
                }
                next_watch = now + WATCH;
            }
            if let Some(every) = report_every {
                if now >= next_report {
                    let version = self.shared.changes.version();
                    if next_report > self.started && reported != Some(version) {
                        self.report();
                        reported = Some(version);
                    }
                    next_report = now + every;
                }
            }
            if self.notifier.enabled() && now >= next_status {
                self.notifier.status(&self.summary());
                next_status = now + STATUS_EVERY;
            }
        };
        handle.close();
        let _ = reader.join();
        self.stop();
        status
    }

    /// The periodic report: the fleet's counts by status and its
    /// run metrics, one line.
    fn report(&self) {
        let m = views::fleet_metrics(&self.registry, self.started);
        let counts = self.registry.counts();
        let mut line = format!("fleet report: workers={}", m.workers);
        for (k, v) in Status::ALL.iter().zip(counts.by_status) {
            if v > 0 {
                line.push_str(&format!(" {k}={v}"));
            }
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
        // The fleet's rows keep what the workers were (the members' byes
        // included): sessions closed by this stop are not transitions the
        // other nodes should show; they see this node's lease end instead.
        if let Some(fleet) = self.fleet {
            fleet.stop();
        }
        let (ingest, ingest_news) = self.ingest;
        ingest_news.post(crate::ingest::News::Stop);
        let _ = ingest.join();
        // No frame can reach the task book now: stop it, and let the
        // journal thread (or the database writer) store what it holds.
        self.tasks.stop();
        let _ = self.scheduler.join();
        for t in self.task_threads {
            let _ = t.join();
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
            if let Some(s) = crate::store::save_all(store, &self.registry, &self.shared) {
                log::info!("saved {} workers to {}", s.workers, store.path().display());
            }
        }
        self.registry.shutdown(Instant::now());
        if let Some((thread, news)) = self.http {
            news.post(crate::serve::News::Stop);
            let _ = thread.join();
        }
        if let Some(audit) = self.audit {
            audit.stop();
        }
        // Last: the node's leases are handed back once it serves nothing.
        if let Some((cluster, thread)) = self.cluster {
            cluster.stop();
            let _ = thread.join();
        }
        log::info!("stopped in {} ms", started.elapsed().as_millis());
    }
}
