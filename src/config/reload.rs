//! The settings that SIGHUP may change while the daemon runs, shared by every
//! thread. Threads read them on each use, so a reload takes effect on the
//! next frame, sweep or connection without restarting anything.
//!
//! Settings that need a restart (listening addresses, the UDP buffer) are not
//! here; [`Live::apply`] reports a change to them as ignored.

use crate::config::{Config, fmt_duration};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::Duration;

pub struct Live {
    heartbeat_interval_ms: AtomicU64,
    inactivity_timeout_ms: AtomicU64,
    forget_after_ms: AtomicU64,
    max_workers: AtomicUsize,
    max_frame_bytes: AtomicUsize,
    http_max_connections: AtomicUsize,
    summary_interval_ms: AtomicU64,
    ws_max_clients: AtomicUsize,
    ws_max_queue_bytes: AtomicUsize,
    ws_stall_timeout_ms: AtomicU64,
    history_samples: AtomicUsize,
    /// 0 means off.
    metrics_report_ms: AtomicU64,
    cors_allow_origin: RwLock<Arc<str>>,
    /// The configuration last applied, to tell what a reload changed.
    applied: RwLock<Config>,
}

impl Live {
    /// `max_workers` is passed separately: it is the configured value already
    /// clamped to what the kernel allows.
    pub fn new(cfg: &Config, max_workers: usize) -> Live {
        let live = Live {
            heartbeat_interval_ms: AtomicU64::new(0),
            inactivity_timeout_ms: AtomicU64::new(0),
            forget_after_ms: AtomicU64::new(0),
            max_workers: AtomicUsize::new(0),
            max_frame_bytes: AtomicUsize::new(0),
            http_max_connections: AtomicUsize::new(0),
            summary_interval_ms: AtomicU64::new(0),
            ws_max_clients: AtomicUsize::new(0),
            ws_max_queue_bytes: AtomicUsize::new(0),
            ws_stall_timeout_ms: AtomicU64::new(0),
            history_samples: AtomicUsize::new(0),
            metrics_report_ms: AtomicU64::new(0),
            cors_allow_origin: RwLock::new(Arc::from("")),
            applied: RwLock::new(cfg.clone()),
        };
        live.store(cfg, max_workers);
        live
    }

    fn store(&self, cfg: &Config, max_workers: usize) {
        let ms = |d: Duration| d.as_millis() as u64;
        self.heartbeat_interval_ms
            .store(ms(cfg.heartbeat_interval), Relaxed);
        self.inactivity_timeout_ms
            .store(ms(cfg.inactivity_timeout), Relaxed);
        self.forget_after_ms.store(ms(cfg.forget_after), Relaxed);
        self.max_workers.store(max_workers, Relaxed);
        self.max_frame_bytes.store(cfg.max_frame_bytes, Relaxed);
        self.http_max_connections
            .store(cfg.http_max_connections, Relaxed);
        self.summary_interval_ms
            .store(ms(cfg.summary_interval), Relaxed);
        self.ws_max_clients.store(cfg.ws_max_clients, Relaxed);
        self.ws_max_queue_bytes
            .store(cfg.ws_max_queue_bytes, Relaxed);
        self.ws_stall_timeout_ms
            .store(ms(cfg.ws_stall_timeout), Relaxed);
        self.history_samples.store(cfg.history_samples, Relaxed);
        self.metrics_report_ms
            .store(cfg.metrics_report_interval.map_or(0, ms), Relaxed);
        if let Ok(mut o) = self.cors_allow_origin.write() {
            *o = Arc::from(cfg.cors_allow_origin.as_str());
        }
        log::set_max_level(cfg.log_level);
    }

    /// Apply a reloaded configuration. Returns one line per change, and one
    /// per change that needs a restart (and so was not applied).
    pub fn apply(&self, cfg: &Config, max_workers: usize) -> Vec<String> {
        let mut notes = Vec::new();
        let Ok(mut old) = self.applied.write() else {
            return notes;
        };
        let d = |v: Duration| fmt_duration(v);
        let mut diff = |key: &str, a: String, b: String, live: bool| {
            if a != b {
                notes.push(if live {
                    format!("{key}: {a} -> {b}")
                } else {
                    format!("{key}: {a} -> {b} needs a restart; keeping {a}")
                });
            }
        };
        let addr = |a: Option<std::net::SocketAddr>| a.map_or("off".to_string(), |a| a.to_string());
        diff("http_addr", addr(old.http_addr), addr(cfg.http_addr), false);
        diff(
            "heartbeat_addr",
            old.heartbeat_addr.to_string(),
            cfg.heartbeat_addr.to_string(),
            false,
        );
        diff(
            "udp_recv_buffer",
            old.udp_recv_buffer.to_string(),
            cfg.udp_recv_buffer.to_string(),
            false,
        );
        diff(
            "heartbeat_interval",
            d(old.heartbeat_interval),
            d(cfg.heartbeat_interval),
            true,
        );
        diff(
            "inactivity_timeout",
            d(old.inactivity_timeout),
            d(cfg.inactivity_timeout),
            true,
        );
        diff(
            "forget_after",
            d(old.forget_after),
            d(cfg.forget_after),
            true,
        );
        diff(
            "max_workers",
            self.max_workers().to_string(),
            max_workers.to_string(),
            true,
        );
        diff(
            "max_frame_bytes",
            old.max_frame_bytes.to_string(),
            cfg.max_frame_bytes.to_string(),
            true,
        );
        diff(
            "http_max_connections",
            old.http_max_connections.to_string(),
            cfg.http_max_connections.to_string(),
            true,
        );
        diff(
            "summary_interval",
            d(old.summary_interval),
            d(cfg.summary_interval),
            true,
        );
        diff(
            "ws_max_clients",
            old.ws_max_clients.to_string(),
            cfg.ws_max_clients.to_string(),
            true,
        );
        diff(
            "ws_max_queue_bytes",
            old.ws_max_queue_bytes.to_string(),
            cfg.ws_max_queue_bytes.to_string(),
            true,
        );
        diff(
            "ws_stall_timeout",
            d(old.ws_stall_timeout),
            d(cfg.ws_stall_timeout),
            true,
        );
        diff(
            "history_samples",
            old.history_samples.to_string(),
            cfg.history_samples.to_string(),
            true,
        );
        let report = |v: Option<Duration>| v.map_or("off".to_string(), d);
        diff(
            "metrics_report_interval",
            report(old.metrics_report_interval),
            report(cfg.metrics_report_interval),
            true,
        );
        diff(
            "cors_allow_origin",
            old.cors_allow_origin.clone(),
            cfg.cors_allow_origin.clone(),
            true,
        );
        diff(
            "log_level",
            old.log_level.to_string().to_lowercase(),
            cfg.log_level.to_string().to_lowercase(),
            true,
        );
        let mut next = cfg.clone();
        next.http_addr = old.http_addr;
        next.heartbeat_addr = old.heartbeat_addr;
        next.udp_recv_buffer = old.udp_recv_buffer;
        self.store(&next, max_workers);
        *old = next;
        notes
    }

    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms.load(Relaxed))
    }

    pub fn inactivity_timeout(&self) -> Duration {
        Duration::from_millis(self.inactivity_timeout_ms.load(Relaxed))
    }

    pub fn forget_after(&self) -> Duration {
        Duration::from_millis(self.forget_after_ms.load(Relaxed))
    }

    pub fn max_workers(&self) -> usize {
        self.max_workers.load(Relaxed)
    }

    pub fn max_frame_bytes(&self) -> usize {
        self.max_frame_bytes.load(Relaxed)
    }

    pub fn http_max_connections(&self) -> usize {
        self.http_max_connections.load(Relaxed)
    }

    pub fn summary_interval(&self) -> Duration {
        Duration::from_millis(self.summary_interval_ms.load(Relaxed))
    }

    pub fn ws_max_clients(&self) -> usize {
        self.ws_max_clients.load(Relaxed)
    }

    pub fn ws_max_queue_bytes(&self) -> usize {
        self.ws_max_queue_bytes.load(Relaxed)
    }

    pub fn ws_stall_timeout(&self) -> Duration {
        Duration::from_millis(self.ws_stall_timeout_ms.load(Relaxed))
    }

    pub fn history_samples(&self) -> usize {
        self.history_samples.load(Relaxed)
    }

    pub fn metrics_report_interval(&self) -> Option<Duration> {
        let ms = self.metrics_report_ms.load(Relaxed);
        (ms > 0).then(|| Duration::from_millis(ms))
    }

    pub fn cors_allow_origin(&self) -> Arc<str> {
        self.cors_allow_origin
            .read()
            .map(|o| o.clone())
            .unwrap_or_else(|_| Arc::from("*"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    #[test]
    fn reload_applies_live_settings_and_keeps_addresses() {
        let cfg = config::defaults();
        let live = Live::new(&cfg, cfg.max_workers);
        let mut next = cfg.clone();
        next.inactivity_timeout = Duration::from_secs(60);
        next.http_addr = Some("127.0.0.1:9999".parse().unwrap());
        let notes = live.apply(&next, 500);
        assert_eq!(live.inactivity_timeout(), Duration::from_secs(60));
        assert_eq!(live.max_workers(), 500);
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
        let again = live.apply(&next, 500);
        assert_eq!(again.len(), 1, "{again:?}");
        assert!(again[0].starts_with("http_addr:"));
    }
}
