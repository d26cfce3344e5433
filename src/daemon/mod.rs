//! Wiring and lifecycle: read the configuration, open the sockets, start the
//! ingest, HTTP and sweeper threads, handle signals, and shut down in order.
//!
//! The main thread only waits for signals (signal-hook sets them aside; no
//! work happens in a handler) and watches that its threads are alive.
//! SIGTERM/SIGINT: stop intake, end ingest, stop and join the worker threads
//! and the sweeper, close HTTP, exit 0 within about 5 s. SIGHUP: re-read the
//! configuration and apply what can change live, or keep the old one and say
//! why.

pub mod listen;

use crate::VERSION;
use crate::config::reload::Live;
use crate::config::{self, Cli, Config};
use crate::fleet::changes::Changes;
use crate::fleet::registry::Registry;
use crate::fleet::sweeper;
use crate::ingest::Ingest;
use crate::logging;
use crate::serve::HttpServer;
use crate::serve::routes::Api;
use crate::stats::Stats;
use crate::sys::capacity::Limits;
use crate::sys::procfs;
use crate::sys::systemd::{self, Notifier, Watchdog};
use listen::{Adopted, StartupError};
use mio::Waker;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long shutdown waits for worker threads.
const STOP_GRACE: Duration = Duration::from_secs(4);
/// How often `STATUS=` is refreshed under systemd.
const STATUS_EVERY: Duration = Duration::from_secs(5);
/// How often the main thread looks at signals and its threads.
const WATCH: Duration = Duration::from_millis(100);

/// `musterd`'s whole life; returns the exit status.
pub fn main(args: Vec<String>) -> i32 {
    let cli = match config::parse_args(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("musterd: {e}");
            return 2;
        }
    };
    if cli.help {
        print!("{}", config::usage());
        return 0;
    }
    if cli.version {
        println!("musterd {VERSION}");
        return 0;
    }
    let env = |k: &str| std::env::var(k).ok();
    let cfg = match config::load(&cli, &env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("musterd: configuration error: {e}");
            return 2;
        }
    };
    if cli.check_config {
        for w in config::warnings(&cfg) {
            eprintln!("musterd: warning: {w}");
        }
        let from = cfg
            .path
            .as_ref()
            .map_or("defaults".to_string(), |p| p.display().to_string());
        println!("musterd: configuration ok ({from})");
        return 0;
    }
    logging::init(cfg.log_level);
    for w in config::warnings(&cfg) {
        log::warn!("{w}");
    }
    // Before any other thread exists: this edits the environment.
    let adopted = listen::Adopted::from(systemd::listen_fds());
    let notifier = Notifier::from_env();
    let signals = match Signals::new([SIGTERM, SIGINT, SIGHUP]) {
        Ok(s) => s,
        Err(e) => {
            log::error!("cannot install signal handlers: {e}");
            return 1;
        }
    };
    match Daemon::start(cli, cfg, adopted, notifier) {
        Ok(d) => d.run(signals),
        Err(e) => {
            log::error!("{e}");
            1
        }
    }
}

struct Daemon {
    cli: Cli,
    limits: Limits,
    registry: Arc<Registry>,
    shutdown: Arc<AtomicBool>,
    ingest: JoinHandle<()>,
    ingest_waker: Arc<Waker>,
    http: Option<(JoinHandle<()>, Arc<Waker>)>,
    sweeper: JoinHandle<()>,
    sweeper_stop: mpsc::Sender<()>,
    notifier: Arc<Notifier>,
    started: Instant,
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, StartupError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map_err(|source| StartupError {
            what: format!("cannot start the {name} thread"),
            source,
        })
}

impl Daemon {
    fn start(
        cli: Cli,
        cfg: Config,
        adopted: Adopted,
        notifier: Arc<Notifier>,
    ) -> Result<Daemon, StartupError> {
        let limits = Limits::read();
        if let Some(n) = crate::sys::capacity::raise_nofile() {
            log::debug!("open file limit={n}");
        }
        let (max_workers, warning) = limits.clamp(cfg.max_workers);
        if let Some(w) = warning {
            log::warn!("{w}");
        }
        let slots = (max_workers as u64).next_power_of_two().clamp(256, 1 << 16);
        if crate::sys::capacity::size_futex_hash(slots) {
            log::debug!("futex hash slots={slots}");
        }
        if adopted.count() > 0 {
            log::info!("adopted {} sockets from systemd", adopted.count());
        }
        let (udp, tcp) = match (adopted.udp, adopted.tcp) {
            (Some(u), Some(t)) => (u, t),
            (None, None) => listen::bind_heartbeat(cfg.heartbeat_addr)?,
            _ => {
                return Err(StartupError {
                    what: "socket activation passed only one of the two heartbeat sockets (UDP and TCP, both named heartbeat)".into(),
                    source: std::io::ErrorKind::InvalidInput.into(),
                });
            }
        };
        match listen::set_recv_buffer(&udp, cfg.udp_recv_buffer) {
            Ok(got) if got < cfg.udp_recv_buffer => log::warn!(
                "udp receive buffer is {got} bytes, below udp_recv_buffer={}: raise net.core.rmem_max or run with CAP_NET_ADMIN",
                cfg.udp_recv_buffer
            ),
            Ok(got) => log::debug!("udp receive buffer bytes={got}"),
            Err(e) => log::warn!("cannot set the udp receive buffer: {e}"),
        }
        let http_listener = match adopted.http {
            Some(l) => Some(l),
            None => cfg.http_addr.map(listen::bind_http).transpose()?,
        };
        // The watchdog proves the HTTP loop alive, or ingest when HTTP is off.
        let mut watchdog = Watchdog::from_env(notifier.clone());
        if let Some(w) = &watchdog {
            log::info!("systemd watchdog: pinging every {} ms", w.every.as_millis());
        }
        let local =
            |r: std::io::Result<std::net::SocketAddr>| r.map_or("?".to_string(), |a| a.to_string());
        let heartbeat_at = local(udp.local_addr());
        let http_at = http_listener
            .as_ref()
            .map_or("off".to_string(), |l| local(l.local_addr()));
        let udp_inode = procfs::socket_inode(&udp);

        let started = Instant::now();
        let stats = Arc::new(Stats::default());
        let live = Arc::new(Live::new(&cfg, max_workers));
        let changes = Arc::new(Changes::default());
        let registry = Arc::new(Registry::new(stats, live, changes.clone()));
        let shutdown = Arc::new(AtomicBool::new(false));

        let http = match http_listener {
            Some(listener) => {
                let api = Api::new(registry.clone(), started, udp_inode);
                let (server, waker) =
                    HttpServer::new(listener, api, shutdown.clone(), watchdog.take()).map_err(
                        |source| StartupError {
                            what: "cannot set up the http loop".into(),
                            source,
                        },
                    )?;
                changes.set_waker(waker.clone());
                Some((spawn("http", move || server.run())?, waker))
            }
            None => None,
        };
        let (ingest, ingest_waker) =
            Ingest::new(udp, tcp, registry.clone(), shutdown.clone(), watchdog).map_err(
                |source| StartupError {
                    what: "cannot set up the ingest loop".into(),
                    source,
                },
            )?;
        let ingest = spawn("ingest", move || ingest.run())?;
        let (sweeper_stop, stop_rx) = mpsc::channel();
        let reg = registry.clone();
        let sweeper = spawn("sweeper", move || sweeper::run(reg, stop_rx))?;
        log::info!("listening http={http_at} heartbeat={heartbeat_at}");
        notifier.ready();
        log::info!(
            "musterd {VERSION} ready: max_workers={max_workers} heartbeat_interval={} inactivity_timeout={}",
            config::fmt_duration(cfg.heartbeat_interval),
            config::fmt_duration(cfg.inactivity_timeout)
        );
        Ok(Daemon {
            cli,
            limits,
            registry,
            shutdown,
            ingest,
            ingest_waker,
            http,
            sweeper,
            sweeper_stop,
            notifier,
            started,
        })
    }

    fn run(self, mut signals: Signals) -> i32 {
        let mut next_status = Instant::now();
        let mut next_report = self.started;
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
            if self.ingest.is_finished() || self.http.as_ref().is_some_and(|(t, _)| t.is_finished())
            {
                log::error!("a service thread stopped unexpectedly; shutting down");
                break 'watch 1;
            }
            if let Some(every) = self.registry.live.metrics_report_interval() {
                if Instant::now() >= next_report {
                    if next_report > self.started {
                        self.report();
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

    /// seed 004's periodic report: one line with the fleet's summary.
    fn report(&self) {
        let m = crate::serve::routes::fleet_metrics(&self.registry, self.started);
        let mut by_status = std::collections::BTreeMap::new();
        for s in self.registry.snapshots() {
            *by_status.entry(s.status()).or_insert(0u64) += 1;
        }
        let statuses: Vec<String> = by_status.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let ms = |v: &serde_json::Value| v.as_f64().map_or("-".to_string(), |x| format!("{x:.0}"));
        log::info!(
            "fleet report: workers={} {} runs={} window_runs={} success_rate={}% runs_per_hour={} p95_ms={}",
            m["workers"],
            statuses.join(" "),
            m["total_runs"],
            m["window_runs"],
            m["success_rate"],
            m["runs_per_hour"],
            ms(&m["p95_execution_ms"])
        );
    }

    /// One line for `systemctl status`.
    fn summary(&self) -> String {
        let c = self.registry.counts();
        let st = &self.registry.stats;
        format!(
            "{} workers, {} active, {} dropped, {} rejected",
            c.total,
            c.active,
            st.dropped_total(),
            st.rejected_total()
        )
    }

    fn reload(&self) {
        let env = |k: &str| std::env::var(k).ok();
        match config::load(&self.cli, &env) {
            Ok(cfg) => {
                let (max_workers, warning) = self.limits.clamp(cfg.max_workers);
                if let Some(w) = warning {
                    log::warn!("{w}");
                }
                for w in config::warnings(&cfg) {
                    log::warn!("{w}");
                }
                let notes = self.registry.live.apply(&cfg, max_workers);
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
        self.shutdown.store(true, Ordering::Release);
        let _ = self.ingest_waker.wake();
        let _ = self.ingest.join();
        let late = self.registry.shutdown(started + STOP_GRACE);
        if late > 0 {
            log::warn!("{late} worker threads did not stop in time");
        }
        drop(self.sweeper_stop);
        let _ = self.sweeper.join();
        if let Some((thread, waker)) = self.http {
            let _ = waker.wake();
            let _ = thread.join();
        }
        log::info!("stopped in {} ms", started.elapsed().as_millis());
    }
}
