//! The settings table: one row per setting, and the only list of them.
//!
//! A row carries the key (which also names the flag `--http-addr` and the
//! variable `MUSTER_HTTP_ADDR`), the default as text, its unit, whether
//! SIGHUP can change it, one line of help, and the two functions that read
//! it into a [`Config`] and show it back. Parsing, `musterd --help`, the
//! reload notes and the docs tests all walk this table.

use super::Config;
use super::alerting;
use super::units::{
    Cidr, at_least, fmt_duration, parse_addr, parse_count, parse_duration, parse_list, parse_size,
    positive,
};
use super::work;
use std::path::PathBuf;

pub struct Setting {
    pub key: &'static str,
    /// The default, as text, parsed like any other value.
    pub default: &'static str,
    pub unit: Unit,
    /// Whether SIGHUP applies a change (otherwise it needs a restart).
    pub live: bool,
    pub help: &'static str,
    /// Read a value into the configuration; the error names no key.
    pub set: fn(&mut Config, &str) -> Result<(), String>,
    /// The value as text that `set` reads back.
    pub show: fn(&Config) -> String,
}

/// What kind of value a setting takes, as `--help` and the docs say it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Address,
    Duration,
    Bytes,
    Count,
    Text,
    Level,
    List,
    Path,
}

impl Unit {
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Address => "address",
            Unit::Duration => "duration",
            Unit::Bytes => "bytes",
            Unit::Count => "count",
            Unit::Text => "text",
            Unit::Level => "level",
            Unit::List => "list",
            Unit::Path => "path",
        }
    }
}

fn off_or<T>(v: &str, parse: impl Fn(&str) -> Result<T, String>) -> Result<Option<T>, String> {
    if v.eq_ignore_ascii_case("off") {
        Ok(None)
    } else {
        parse(v).map(Some)
    }
}

fn shown_off<T>(v: Option<T>, show: impl Fn(T) -> String) -> String {
    v.map_or_else(|| "off".to_string(), show)
}

fn path(v: &str) -> Result<PathBuf, String> {
    if v.is_empty() {
        return Err("give a path, or `off`".into());
    }
    Ok(PathBuf::from(v))
}

fn none_or_list(v: &[String]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// `*`, or origins as browsers send them: `scheme://host[:port]`, no path.
fn origins(v: &str) -> Result<Vec<String>, String> {
    let list = parse_list(v);
    if list.is_empty() {
        return Err("list origins, or `*`".into());
    }
    for o in &list {
        let ok = o == "*"
            || o.split_once("://").is_some_and(|(scheme, rest)| {
                !scheme.is_empty() && !rest.is_empty() && !rest.contains('/')
            });
        if !ok || o.bytes().any(|b| b.is_ascii_control()) {
            return Err(format!(
                "{o:?} is not an origin like https://dash.example.com or `*`"
            ));
        }
    }
    Ok(list)
}

pub const SETTINGS: &[Setting] = &[
    Setting {
        key: "http_addr",
        default: "127.0.0.1:8080",
        unit: Unit::Address,
        live: false,
        help: "HTTP and WebSocket address, or `off`",
        set: |c, v| {
            c.http_addr = off_or(v, parse_addr)?;
            Ok(())
        },
        show: |c| shown_off(c.http_addr, |a| a.to_string()),
    },
    Setting {
        key: "heartbeat_addr",
        default: "127.0.0.1:8090",
        unit: Unit::Address,
        live: false,
        help: "heartbeat address, UDP and TCP on the same port",
        set: |c, v| {
            c.heartbeat_addr = parse_addr(v)?;
            Ok(())
        },
        show: |c| c.heartbeat_addr.to_string(),
    },
    Setting {
        key: "heartbeat_interval",
        default: "5s",
        unit: Unit::Duration,
        live: true,
        help: "interval told to TCP workers in `welcome`",
        set: |c, v| {
            c.heartbeat_interval = positive(parse_duration(v)?)?;
            Ok(())
        },
        show: |c| fmt_duration(c.heartbeat_interval),
    },
    Setting {
        key: "inactivity_timeout",
        default: "30s",
        unit: Unit::Duration,
        live: true,
        help: "silence after which a worker is marked inactive",
        set: |c, v| {
            c.inactivity_timeout = positive(parse_duration(v)?)?;
            Ok(())
        },
        show: |c| fmt_duration(c.inactivity_timeout),
    },
    Setting {
        key: "forget_after",
        default: "1h",
        unit: Unit::Duration,
        live: true,
        help: "inactive or terminated workers older than this are evicted",
        set: |c, v| {
            c.forget_after = positive(parse_duration(v)?)?;
            Ok(())
        },
        show: |c| fmt_duration(c.forget_after),
    },
    Setting {
        key: "max_workers",
        default: "10000",
        unit: Unit::Count,
        live: true,
        help: "most workers tracked (each has a thread); clamped to kernel limits",
        set: |c, v| {
            c.max_workers = parse_count(v, 1, 10_000_000)?;
            Ok(())
        },
        show: |c| c.max_workers.to_string(),
    },
    Setting {
        key: "max_frame_bytes",
        default: "65536",
        unit: Unit::Bytes,
        live: true,
        help: "largest heartbeat frame accepted",
        set: |c, v| {
            c.max_frame_bytes = parse_size(v, 256, 16 << 20)?;
            Ok(())
        },
        show: |c| c.max_frame_bytes.to_string(),
    },
    Setting {
        key: "max_worker_state_bytes",
        default: "16KiB",
        unit: Unit::Bytes,
        live: true,
        help: "state one frame may leave a worker holding (labels, running tasks, current job, as parsed); more is refused as too_large",
        set: |c, v| {
            c.max_worker_state_bytes = parse_size(v, 1024, 16 << 20)?;
            Ok(())
        },
        show: |c| c.max_worker_state_bytes.to_string(),
    },
    Setting {
        key: "max_pending_events",
        default: "4096",
        unit: Unit::Count,
        live: true,
        help: "run frames waiting for one worker's thread before UDP drops them (heartbeats merge instead)",
        set: |c, v| {
            c.max_pending_events = parse_count(v, 1, 1_000_000)?;
            Ok(())
        },
        show: |c| c.max_pending_events.to_string(),
    },
    Setting {
        key: "udp_recv_buffer",
        default: "16MiB",
        unit: Unit::Bytes,
        live: false,
        help: "kernel receive buffer of the UDP socket (SO_RCVBUF)",
        set: |c, v| {
            c.udp_recv_buffer = parse_size(v, 4096, 1 << 30)?;
            Ok(())
        },
        show: |c| c.udp_recv_buffer.to_string(),
    },
    Setting {
        key: "http_max_connections",
        default: "1024",
        unit: Unit::Count,
        live: true,
        help: "open HTTP connections beyond this are answered 503 and closed",
        set: |c, v| {
            c.http_max_connections = parse_count(v, 1, 1_000_000)?;
            Ok(())
        },
        show: |c| c.http_max_connections.to_string(),
    },
    Setting {
        key: "http_max_connections_per_ip",
        default: "256",
        unit: Unit::Count,
        live: true,
        help: "open HTTP connections from one address; past it the address's oldest idle one is closed, or the new one is answered 503",
        set: |c, v| {
            c.http_max_connections_per_ip = parse_count(v, 1, 1_000_000)?;
            Ok(())
        },
        show: |c| c.http_max_connections_per_ip.to_string(),
    },
    Setting {
        key: "tcp_max_connections_per_ip",
        default: "1024",
        unit: Unit::Count,
        live: true,
        help: "heartbeat TCP connections from one address; past it new ones are closed",
        set: |c, v| {
            c.tcp_max_connections_per_ip = parse_count(v, 1, 1_000_000)?;
            Ok(())
        },
        show: |c| c.tcp_max_connections_per_ip.to_string(),
    },
    Setting {
        key: "trusted_proxies",
        default: "127.0.0.0/8, ::1",
        unit: Unit::List,
        live: true,
        help: "peers that speak for many clients (a local reverse proxy): not held to the per-address caps; `none` holds every address to them",
        set: |c, v| {
            c.trusted_proxies = if v.eq_ignore_ascii_case("none") {
                Vec::new()
            } else {
                let blocks = parse_list(v)
                    .iter()
                    .map(|b| Cidr::parse(b))
                    .collect::<Result<Vec<_>, _>>()?;
                if blocks.is_empty() {
                    return Err("list address blocks, or `none`".into());
                }
                blocks
            };
            Ok(())
        },
        show: |c| {
            if c.trusted_proxies.is_empty() {
                "none".into()
            } else {
                let b: Vec<String> = c.trusted_proxies.iter().map(Cidr::to_string).collect();
                b.join(", ")
            }
        },
    },
    Setting {
        key: "summary_interval",
        default: "1s",
        unit: Unit::Duration,
        live: true,
        help: "how often /ws/workers/telemetry sends its summary",
        set: |c, v| {
            c.summary_interval = at_least(parse_duration(v)?, 100)?;
            Ok(())
        },
        show: |c| fmt_duration(c.summary_interval),
    },
    Setting {
        key: "ws_max_clients",
        default: "4096",
        unit: Unit::Count,
        live: true,
        help: "WebSocket clients beyond this are answered 503 before the upgrade",
        set: |c, v| {
            c.ws_max_clients = parse_count(v, 0, 1_000_000)?;
            Ok(())
        },
        show: |c| c.ws_max_clients.to_string(),
    },
    Setting {
        key: "ws_max_queue_bytes",
        default: "1MiB",
        unit: Unit::Bytes,
        live: true,
        help: "largest update message queued for one WebSocket client",
        set: |c, v| {
            c.ws_max_queue_bytes = parse_size(v, 4096, 1 << 30)?;
            Ok(())
        },
        show: |c| c.ws_max_queue_bytes.to_string(),
    },
    Setting {
        key: "ws_stall_timeout",
        default: "10s",
        unit: Unit::Duration,
        live: true,
        help: "a WebSocket client that takes no data this long is closed (1008)",
        set: |c, v| {
            c.ws_stall_timeout = at_least(parse_duration(v)?, 100)?;
            Ok(())
        },
        show: |c| fmt_duration(c.ws_stall_timeout),
    },
    Setting {
        key: "history_samples",
        default: "720",
        unit: Unit::Count,
        live: true,
        help: "samples kept per worker for /api/workers/{id}/history (at most one a second)",
        set: |c, v| {
            c.history_samples = parse_count(v, 1, 100_000)?;
            Ok(())
        },
        show: |c| c.history_samples.to_string(),
    },
    Setting {
        key: "metrics_report_interval",
        default: "60s",
        unit: Unit::Duration,
        live: true,
        help: "how often the fleet's run metrics are logged, or `off`",
        set: |c, v| {
            let every = |v: &str| at_least(parse_duration(v)?, 1000);
            c.metrics_report_interval = off_or(v, every)?;
            Ok(())
        },
        show: |c| shown_off(c.metrics_report_interval, fmt_duration),
    },
    Setting {
        key: "metrics_worker_series",
        default: "full",
        unit: Unit::Text,
        live: true,
        help: "per-worker series on /metrics: full (about 30 a worker with runs), basic (5) or off",
        set: |c, v| {
            c.metrics_worker_series = match v {
                "full" => super::WorkerSeries::Full,
                "basic" => super::WorkerSeries::Basic,
                "off" => super::WorkerSeries::Off,
                _ => return Err(format!("{v:?} is not full, basic or off")),
            };
            Ok(())
        },
        show: |c| c.metrics_worker_series.as_str().into(),
    },
    Setting {
        key: "cors_allow_origin",
        default: "*",
        unit: Unit::List,
        live: true,
        help: "origins whose pages may read (`*`: any); listed by name, they may also change",
        set: |c, v| {
            c.cors_allow_origin = origins(v)?;
            Ok(())
        },
        show: |c| c.cors_allow_origin.join(", "),
    },
    Setting {
        key: "ws_allow_origin",
        default: "*",
        unit: Unit::List,
        live: true,
        help: "origins whose pages may open WebSocket streams (`*`: any)",
        set: |c, v| {
            c.ws_allow_origin = origins(v)?;
            Ok(())
        },
        show: |c| c.ws_allow_origin.join(", "),
    },
    Setting {
        key: "http_allowed_hosts",
        default: "none",
        unit: Unit::List,
        live: true,
        help: "host names answered besides localhost, the machine's name and IP addresses",
        set: |c, v| {
            c.http_allowed_hosts = if v.eq_ignore_ascii_case("none") {
                Vec::new()
            } else {
                parse_list(v)
                    .into_iter()
                    .map(|h| h.trim_end_matches('.').to_ascii_lowercase())
                    .collect()
            };
            if c.http_allowed_hosts
                .iter()
                .any(|h| h.contains(['/', ':', '*']))
            {
                return Err("list host names only, without ports or wildcards".into());
            }
            Ok(())
        },
        show: |c| none_or_list(&c.http_allowed_hosts),
    },
    Setting {
        key: "api_token_file",
        default: "off",
        unit: Unit::Path,
        live: true,
        help: "file holding the token that POST, PUT and DELETE must carry (re-read on SIGHUP)",
        set: |c, v| {
            c.api_token_file = off_or(v, path)?;
            Ok(())
        },
        show: |c| shown_off(c.api_token_file.as_ref(), |p| p.display().to_string()),
    },
    Setting {
        key: "heartbeat_token_file",
        default: "off",
        unit: Unit::Path,
        live: true,
        help: "file holding the token a TCP hello and every UDP frame must carry",
        set: |c, v| {
            c.heartbeat_token_file = off_or(v, path)?;
            Ok(())
        },
        show: |c| shown_off(c.heartbeat_token_file.as_ref(), |p| p.display().to_string()),
    },
    Setting {
        key: "heartbeat_allow_from",
        default: "any",
        unit: Unit::List,
        live: true,
        help: "address blocks heartbeats are taken from (`any`, or e.g. `10.0.0.0/8, ::1`)",
        set: |c, v| {
            c.heartbeat_allow_from = if v.eq_ignore_ascii_case("any") {
                None
            } else {
                let blocks = parse_list(v)
                    .iter()
                    .map(|b| Cidr::parse(b))
                    .collect::<Result<Vec<_>, _>>()?;
                if blocks.is_empty() {
                    return Err("list at least one address block, or `any`".into());
                }
                Some(blocks)
            };
            Ok(())
        },
        show: |c| match &c.heartbeat_allow_from {
            None => "any".into(),
            Some(b) => b.iter().map(Cidr::to_string).collect::<Vec<_>>().join(", "),
        },
    },
    Setting {
        key: "tls_cert_file",
        default: "off",
        unit: Unit::Path,
        live: true,
        help: "PEM certificate chain: serve HTTPS and wss:// (with tls_key_file)",
        set: |c, v| {
            c.tls_cert_file = off_or(v, path)?;
            Ok(())
        },
        show: |c| shown_off(c.tls_cert_file.as_ref(), |p| p.display().to_string()),
    },
    Setting {
        key: "tls_key_file",
        default: "off",
        unit: Unit::Path,
        live: true,
        help: "PEM private key of tls_cert_file",
        set: |c, v| {
            c.tls_key_file = off_or(v, path)?;
            Ok(())
        },
        show: |c| shown_off(c.tls_key_file.as_ref(), |p| p.display().to_string()),
    },
    Setting {
        key: "state_dir",
        default: "/var/lib/muster",
        unit: Unit::Path,
        live: false,
        help: "where the registry is saved across restarts, or `off`",
        set: |c, v| {
            c.state_dir = off_or(v, path)?;
            Ok(())
        },
        show: |c| shown_off(c.state_dir.as_ref(), |p| p.display().to_string()),
    },
    Setting {
        key: "state_save_interval",
        default: "10s",
        unit: Unit::Duration,
        live: true,
        help: "how often the registry is saved (and always at shutdown)",
        set: |c, v| {
            c.state_save_interval = at_least(parse_duration(v)?, 1000)?;
            Ok(())
        },
        show: |c| fmt_duration(c.state_save_interval),
    },
    work::TASK_FSYNC,
    work::MAX_TASKS,
    work::MAX_TASK_BYTES,
    work::TASK_RETENTION,
    work::TASK_LOG_BYTES,
    work::TASK_ACK_TIMEOUT,
    work::TASK_CANCEL_GRACE,
    work::POOL_COMMAND,
    work::POOL_SIZE,
    work::POOL_MIN,
    work::POOL_MAX,
    work::POOL_STOP_GRACE,
    work::POOL_RESTART_BACKOFF,
    work::POOL_MAX_RESTARTS,
    work::POOL_RESTART_WINDOW,
    work::AUTOSCALE,
    work::AUTOSCALE_TASKS_PER_WORKER,
    work::AUTOSCALE_COOLDOWN,
    alerting::ALERT_RULES,
    alerting::ALERT_FOR,
    alerting::ALERT_FLAPPING,
    alerting::ALERT_ERROR_RATE,
    alerting::ALERT_ERROR_RATE_MIN_RUNS,
    alerting::ALERT_QUEUE_DEPTH,
    alerting::ALERTMANAGER_URL,
    alerting::ALERT_WEBHOOK_URL,
    alerting::ALERT_RESEND,
    Setting {
        key: "log_level",
        default: "info",
        unit: Unit::Level,
        live: true,
        help: "error, warn, info, debug or trace",
        set: |c, v| {
            c.log_level = v
                .parse()
                .map_err(|_| format!("{v:?} is not one of off, error, warn, info, debug, trace"))?;
            Ok(())
        },
        show: |c| c.log_level.to_string().to_lowercase(),
    },
    Setting {
        key: "log_format",
        default: "text",
        unit: Unit::Text,
        live: false,
        help: "text, or json: one object per line with time, level, target and message",
        set: |c, v| {
            c.log_json = match v {
                "text" => false,
                "json" => true,
                _ => return Err(format!("{v:?} is not text or json")),
            };
            Ok(())
        },
        show: |c| if c.log_json { "json" } else { "text" }.into(),
    },
];

/// The row for `key`, if it is a setting.
pub fn find(key: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.key == key)
}

/// The flag for a key: `http_addr` → `--http-addr`.
pub fn flag_name(key: &str) -> String {
    format!("--{}", key.replace('_', "-"))
}

/// The environment variable for a key: `http_addr` → `MUSTER_HTTP_ADDR`.
pub fn env_name(key: &str) -> String {
    format!("MUSTER_{}", key.to_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_default_reads_and_shows_back_the_same() {
        let blank = super::super::defaults();
        for s in SETTINGS {
            let mut c = blank.clone();
            (s.set)(&mut c, s.default).unwrap_or_else(|e| panic!("{}: {e}", s.key));
            let shown = (s.show)(&c);
            let mut again = blank.clone();
            (s.set)(&mut again, &shown).unwrap_or_else(|e| panic!("{}: {shown}: {e}", s.key));
            assert_eq!(
                c, again,
                "{} shows {shown:?}, which reads back differently",
                s.key
            );
        }
    }

    #[test]
    fn keys_are_unique_and_name_their_flags() {
        let mut keys: Vec<&str> = SETTINGS.iter().map(|s| s.key).collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), SETTINGS.len());
        assert_eq!(flag_name("http_addr"), "--http-addr");
        assert_eq!(env_name("http_addr"), "MUSTER_HTTP_ADDR");
        assert!(find("max_workers").is_some() && find("nope").is_none());
    }
}
