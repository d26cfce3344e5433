//! The running configuration, shared by every thread: an `Arc<Config>`
//! swapped whole on SIGHUP. Readers hold one `Arc` for as long as one piece
//! of work takes, so a reload never shows them half of each configuration;
//! loops keep a [`View`] and look for a new one once per turn, at the cost
//! of one relaxed load.
//!
//! What a reload changed is told from the settings table: each setting is
//! shown before and after, and a setting that needs a restart (listening
//! addresses, the UDP buffer) keeps its running value, said so in the notes.

use super::Config;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

pub struct Running {
    current: RwLock<Arc<Config>>,
    generation: AtomicU64,
}

impl Running {
    pub fn new(cfg: Config) -> Running {
        log::set_max_level(cfg.daemon.log_level);
        Running {
            current: RwLock::new(Arc::new(cfg)),
            generation: AtomicU64::new(0),
        }
    }

    /// The configuration in force now.
    pub fn get(&self) -> Arc<Config> {
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// A view for a loop: the configuration now, refreshed cheaply.
    pub fn view(&self) -> View {
        View {
            generation: self.generation.load(Ordering::Acquire),
            cfg: self.get(),
        }
    }

    /// Swap in a reloaded configuration. Returns one line per change, and
    /// one per change that needs a restart (and so was not applied).
    pub fn apply(&self, mut next: Config) -> Vec<String> {
        let old = self.get();
        let mut notes = Vec::new();
        for s in super::settings() {
            let (a, b) = ((s.show)(&old), (s.show)(&next));
            if a == b {
                continue;
            }
            if s.live {
                notes.push(format!("{}: {a} -> {b}", s.key));
            } else {
                notes.push(format!(
                    "{}: {a} -> {b} needs a restart; keeping {a}",
                    s.key
                ));
                // What `show` writes, `set` reads: the settings test says so.
                let _ = (s.set)(&mut next, &a);
            }
        }
        // Same paths, new contents: a rotated token or certificate.
        let reread = [
            (
                if next.http.api_tokens_file.is_some() {
                    "api_tokens_file"
                } else {
                    "api_token_file"
                },
                old.http.tokens != next.http.tokens,
            ),
            (
                "heartbeat_token_file",
                old.heartbeats.token != next.heartbeats.token,
            ),
            ("tls_cert_file", old.http.tls != next.http.tls),
            (
                "heartbeat_tls_cert_file",
                old.heartbeats.tls != next.heartbeats.tls,
            ),
        ];
        for (key, changed) in reread {
            if changed && !notes.iter().any(|n| n.starts_with(key)) {
                notes.push(format!("{key}: re-read; its contents changed"));
            }
        }
        log::set_max_level(next.daemon.log_level);
        match self.current.write() {
            Ok(mut c) => *c = Arc::new(next),
            Err(p) => *p.into_inner() = Arc::new(next),
        }
        self.generation.fetch_add(1, Ordering::Release);
        notes
    }
}

/// A loop's copy of the running configuration.
pub struct View {
    generation: u64,
    cfg: Arc<Config>,
}

impl View {
    /// Take the newest configuration if a reload happened since.
    pub fn refresh(&mut self, running: &Running) -> &Config {
        let g = running.generation.load(Ordering::Acquire);
        if g != self.generation {
            self.generation = g;
            self.cfg = running.get();
        }
        &self.cfg
    }

    pub fn get(&self) -> &Config {
        &self.cfg
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use std::time::Duration;

    #[test]
    fn reload_applies_live_settings_and_keeps_addresses() {
        let cfg = config::defaults();
        let live = Running::new(cfg.clone());
        let mut view = live.view();
        let mut next = cfg.clone();
        next.fleet.inactivity_timeout = Duration::from_secs(60);
        next.http.addr = Some("127.0.0.1:9999".parse().unwrap());
        next.fleet.max_workers = 500;
        let notes = live.apply(next.clone());
        assert_eq!(view.get().fleet.inactivity_timeout, Duration::from_secs(30));
        assert_eq!(
            view.refresh(&live).fleet.inactivity_timeout,
            Duration::from_secs(60)
        );
        assert_eq!(live.get().fleet.max_workers, 500);
        assert_eq!(
            live.get().http.addr,
            cfg.http.addr,
            "an address needs a restart"
        );
        assert!(
            notes.iter().any(|n| n == "inactivity_timeout: 30s -> 1m"),
            "{notes:?}"
        );
        assert!(
            notes
                .iter()
                .any(|n| n.starts_with("http_addr:") && n.contains("restart"))
        );
        assert!(notes.iter().any(|n| n == "max_workers: 10000 -> 500"));
        // A second identical reload only repeats what still needs a restart.
        let again = live.apply(next);
        assert_eq!(again.len(), 1, "{again:?}");
        assert!(again[0].starts_with("http_addr:"));
    }
}
