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
mod run;
mod start;

use crate::VERSION;
use crate::config;
use crate::logging;
use crate::sys::systemd::{self, Notifier};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use start::Daemon;

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
    let (cfg, env) = match config::load_process(&cli) {
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
        let mut from = cfg
            .path
            .as_ref()
            .map_or("defaults".to_string(), |p| p.display().to_string());
        if let Some(p) = &env.dotenv_path {
            from.push_str(&format!(", {}", p.display()));
        }
        if let Some(url) = &cfg.cluster.database {
            use crate::cluster::{Checked, schema::VERSION};
            match crate::cluster::check(&cfg) {
                Ok(Some(Checked::Schema(0))) => println!(
                    "musterd: cluster database {} answers; no muster schema yet (the first node to start creates version {VERSION})",
                    url.shown()
                ),
                Ok(Some(Checked::Schema(v))) => println!(
                    "musterd: cluster database {} answers; schema version {v} (this musterd writes {VERSION})",
                    url.shown()
                ),
                Ok(Some(Checked::Away(why))) => eprintln!(
                    "musterd: warning: cluster database {} does not answer ({why}): musterd would start degraded and keep trying",
                    url.shown()
                ),
                Ok(None) => {}
                Err(e) => {
                    eprintln!("musterd: {e}");
                    return 2;
                }
            }
        }
        println!("musterd: configuration ok ({from})");
        return 0;
    }
    crate::sys::memory::without_thread_caches();
    crate::sys::memory::map_large_allocations();
    logging::init(cfg.daemon.log_level, cfg.daemon.log_json);
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
        Err(start::Failed::Startup(e)) => {
            log::error!("{e}");
            1
        }
        Err(start::Failed::Cluster(e)) => {
            log::error!("cluster: {e}");
            2
        }
    }
}
