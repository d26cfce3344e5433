//! Settings: one table, one naming rule, one precedence.
//!
//! A setting `http_addr` is the config-file key `http_addr`, the environment
//! variable `MUSTER_HTTP_ADDR` and the flag `--http-addr`. A flag beats the
//! environment, which beats the file, which beats the default in [`SETTINGS`].
//! The file is `key = value` lines with `#` comments (musterd.conf(5)).
//!
//! This module parses and validates; it does not open sockets or apply
//! anything. Applying a reloaded config to the running daemon is
//! [`crate::config::reload::Live`]'s job. Clamping `max_workers` to the kernel's limits
//! is [`crate::sys::capacity`]'s.

pub mod reload;

use log::LevelFilter;
use std::collections::HashMap;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The file read when neither `--config` nor `MUSTER_CONFIG` names one.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/muster/musterd.conf";

/// One setting: its key, default (as text, parsed like any other value),
/// whether SIGHUP can change it, and one line of help.
pub struct Setting {
    pub key: &'static str,
    pub default: &'static str,
    pub live: bool,
    pub help: &'static str,
}

pub const SETTINGS: &[Setting] = &[
    Setting {
        key: "http_addr",
        default: "127.0.0.1:8080",
        live: false,
        help: "HTTP and WebSocket address, or `off`",
    },
    Setting {
        key: "heartbeat_addr",
        default: "127.0.0.1:8090",
        live: false,
        help: "heartbeat address, UDP and TCP on the same port",
    },
    Setting {
        key: "heartbeat_interval",
        default: "5s",
        live: true,
        help: "interval told to TCP workers in `welcome`",
    },
    Setting {
        key: "inactivity_timeout",
        default: "30s",
        live: true,
        help: "silence after which a worker is marked inactive",
    },
    Setting {
        key: "forget_after",
        default: "1h",
        live: true,
        help: "inactive or terminated workers older than this are evicted",
    },
    Setting {
        key: "max_workers",
        default: "10000",
        live: true,
        help: "most workers tracked (each has a thread); clamped to kernel limits",
    },
    Setting {
        key: "max_frame_bytes",
        default: "65536",
        live: true,
        help: "largest heartbeat frame accepted",
    },
    Setting {
        key: "udp_recv_buffer",
        default: "4MiB",
        live: false,
        help: "kernel receive buffer of the UDP socket (SO_RCVBUF)",
    },
    Setting {
        key: "http_max_connections",
        default: "1024",
        live: true,
        help: "open HTTP connections beyond this are answered 503 and closed",
    },
    Setting {
        key: "summary_interval",
        default: "1s",
        live: true,
        help: "how often /ws/workers/telemetry sends its summary",
    },
    Setting {
        key: "ws_max_clients",
        default: "4096",
        live: true,
        help: "WebSocket clients beyond this are answered 503 before the upgrade",
    },
    Setting {
        key: "ws_max_queue_bytes",
        default: "1MiB",
        live: true,
        help: "largest update message queued for one WebSocket client",
    },
    Setting {
        key: "ws_stall_timeout",
        default: "10s",
        live: true,
        help: "a WebSocket client that takes no data this long is closed (1008)",
    },
    Setting {
        key: "history_samples",
        default: "720",
        live: true,
        help: "samples kept per worker for /api/workers/{id}/history (at most one a second)",
    },
    Setting {
        key: "metrics_report_interval",
        default: "60s",
        live: true,
        help: "how often the fleet's run metrics are logged, or `off`",
    },
    Setting {
        key: "cors_allow_origin",
        default: "*",
        live: true,
        help: "Access-Control-Allow-Origin value",
    },
    Setting {
        key: "log_level",
        default: "info",
        live: true,
        help: "error, warn, info, debug or trace",
    },
];

/// A validated configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Where the file came from, if one was read.
    pub path: Option<PathBuf>,
    pub http_addr: Option<SocketAddr>,
    pub heartbeat_addr: SocketAddr,
    pub heartbeat_interval: Duration,
    pub inactivity_timeout: Duration,
    pub forget_after: Duration,
    pub max_workers: usize,
    pub max_frame_bytes: usize,
    pub udp_recv_buffer: usize,
    pub http_max_connections: usize,
    pub summary_interval: Duration,
    pub ws_max_clients: usize,
    pub ws_max_queue_bytes: usize,
    pub ws_stall_timeout: Duration,
    pub history_samples: usize,
    pub metrics_report_interval: Option<Duration>,
    pub cors_allow_origin: String,
    pub log_level: LevelFilter,
}

/// What the command line asked for besides settings.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Cli {
    pub config: Option<PathBuf>,
    pub check_config: bool,
    pub help: bool,
    pub version: bool,
    /// `(key, value)` pairs from `--some-key value`, in order.
    pub settings: Vec<(String, String)>,
}

#[derive(Debug)]
pub enum ConfigError {
    Usage(String),
    Read(PathBuf, std::io::Error),
    /// A bad line in a file: path, line number, message.
    Line(PathBuf, usize, String),
    /// A bad value: where it came from, key, message.
    Value(String, String, String),
    Invalid(String),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Usage(m) => write!(f, "{m}"),
            ConfigError::Read(p, e) => write!(f, "cannot read {}: {e}", p.display()),
            ConfigError::Line(p, n, m) => write!(f, "{}:{n}: {m}", p.display()),
            ConfigError::Value(src, k, m) => write!(f, "{src}: {k}: {m}"),
            ConfigError::Invalid(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::Read(_, e) => Some(e),
            _ => None,
        }
    }
}

/// The flag for a key: `http_addr` → `--http-addr`.
pub fn flag_name(key: &str) -> String {
    format!("--{}", key.replace('_', "-"))
}

/// The environment variable for a key: `http_addr` → `MUSTER_HTTP_ADDR`.
pub fn env_name(key: &str) -> String {
    format!("MUSTER_{}", key.to_ascii_uppercase())
}

/// Parse `musterd`'s arguments (without the program name).
pub fn parse_args<I: IntoIterator<Item = String>>(args: I) -> Result<Cli, ConfigError> {
    let mut cli = Cli::default();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| ConfigError::Usage(format!("{name} needs a value")))
        };
        match name.as_str() {
            "-h" | "--help" => cli.help = true,
            "-V" | "--version" => cli.version = true,
            "--check-config" => cli.check_config = true,
            "--config" => cli.config = Some(PathBuf::from(value("--config")?)),
            _ => {
                let key = name
                    .strip_prefix("--")
                    .map(|k| k.replace('-', "_"))
                    .filter(|k| SETTINGS.iter().any(|s| s.key == k))
                    .ok_or_else(|| {
                        ConfigError::Usage(format!("unknown argument {arg:?} (see --help)"))
                    })?;
                let v = value(&name)?;
                cli.settings.push((key, v));
            }
        }
    }
    Ok(cli)
}

/// Build the configuration from the command line, an environment lookup and
/// the file it names (or the default file when that exists).
pub fn load(cli: &Cli, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    let path = cli
        .config
        .clone()
        .or_else(|| env("MUSTER_CONFIG").map(PathBuf::from))
        .or_else(|| {
            let p = Path::new(DEFAULT_CONFIG_PATH);
            p.exists().then(|| p.to_path_buf())
        });
    let file = match &path {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| ConfigError::Read(p.clone(), e))?;
            parse_file(p, &text)?
        }
        None => HashMap::new(),
    };
    let mut cfg = defaults();
    cfg.path = path.clone();
    for s in SETTINGS {
        if let Some(v) = file.get(s.key) {
            let src = path.as_ref().map(|p| p.display().to_string());
            set(&mut cfg, s.key, v)
                .map_err(|m| ConfigError::Value(src.unwrap_or_default(), s.key.to_string(), m))?;
        }
        if s.key == "http_addr" {
            if let Some(v) = env("HTTP_PORT") {
                set_http_port(&mut cfg, &v)
                    .map_err(|m| ConfigError::Value("HTTP_PORT".into(), s.key.to_string(), m))?;
            }
        }
        let var = env_name(s.key);
        if let Some(v) = env(&var) {
            set(&mut cfg, s.key, &v)
                .map_err(|m| ConfigError::Value(var.clone(), s.key.to_string(), m))?;
        }
    }
    for (k, v) in &cli.settings {
        set(&mut cfg, k, v).map_err(|m| ConfigError::Value(flag_name(k), k.clone(), m))?;
    }
    validate(&cfg)?;
    Ok(cfg)
}

/// The defaults, parsed from [`SETTINGS`] like any other value.
pub fn defaults() -> Config {
    let mut cfg = Config {
        path: None,
        http_addr: None,
        heartbeat_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        heartbeat_interval: Duration::ZERO,
        inactivity_timeout: Duration::ZERO,
        forget_after: Duration::ZERO,
        max_workers: 0,
        max_frame_bytes: 0,
        udp_recv_buffer: 0,
        http_max_connections: 0,
        summary_interval: Duration::ZERO,
        ws_max_clients: 0,
        ws_max_queue_bytes: 0,
        ws_stall_timeout: Duration::ZERO,
        history_samples: 0,
        metrics_report_interval: None,
        cors_allow_origin: String::new(),
        log_level: LevelFilter::Info,
    };
    for s in SETTINGS {
        if let Err(e) = set(&mut cfg, s.key, s.default) {
            unreachable!("default of {} does not parse: {e}", s.key);
        }
    }
    cfg
}

fn validate(cfg: &Config) -> Result<(), ConfigError> {
    if cfg.inactivity_timeout < cfg.heartbeat_interval {
        return Err(ConfigError::Invalid(format!(
            "inactivity_timeout ({}) is below heartbeat_interval ({}): every worker would flap",
            fmt_duration(cfg.inactivity_timeout),
            fmt_duration(cfg.heartbeat_interval)
        )));
    }
    if cfg.forget_after < cfg.inactivity_timeout {
        return Err(ConfigError::Invalid(format!(
            "forget_after ({}) is below inactivity_timeout ({})",
            fmt_duration(cfg.forget_after),
            fmt_duration(cfg.inactivity_timeout)
        )));
    }
    Ok(())
}

/// Advice that does not stop the daemon (logged as warnings).
pub fn warnings(cfg: &Config) -> Vec<String> {
    let mut w = Vec::new();
    if cfg.inactivity_timeout < cfg.heartbeat_interval * 3 {
        w.push(format!(
            "inactivity_timeout={} is below 3x heartbeat_interval={}: one late beat marks a worker inactive",
            fmt_duration(cfg.inactivity_timeout),
            fmt_duration(cfg.heartbeat_interval)
        ));
    }
    w
}

/// Parse a config file into key → value, refusing unknown keys and repeats.
pub fn parse_file(path: &Path, text: &str) -> Result<HashMap<String, String>, ConfigError> {
    let mut out = HashMap::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = strip_comment(raw).trim();
        if line.is_empty() {
            continue;
        }
        let err = |m: String| ConfigError::Line(path.to_path_buf(), n, m);
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| err(format!("expected `key = value`, got {line:?}")))?;
        let (k, v) = (k.trim(), unquote(v.trim()));
        if !SETTINGS.iter().any(|s| s.key == k) {
            return Err(err(format!("unknown setting {k:?}")));
        }
        if out.insert(k.to_string(), v.to_string()).is_some() {
            return Err(err(format!("{k} is set twice")));
        }
    }
    Ok(out)
}

/// `#` starts a comment unless it sits inside double quotes.
fn strip_comment(line: &str) -> &str {
    let mut quoted = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '#' if !quoted => return &line[..i],
            _ => {}
        }
    }
    line
}

fn unquote(v: &str) -> &str {
    v.strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(v)
}

/// Set one key from text. The error is a message without the key.
pub fn set(cfg: &mut Config, key: &str, v: &str) -> Result<(), String> {
    let v = v.trim();
    match key {
        "http_addr" => {
            cfg.http_addr = if v.eq_ignore_ascii_case("off") {
                None
            } else {
                Some(parse_addr(v)?)
            }
        }
        "heartbeat_addr" => cfg.heartbeat_addr = parse_addr(v)?,
        "heartbeat_interval" => cfg.heartbeat_interval = positive(parse_duration(v)?)?,
        "inactivity_timeout" => cfg.inactivity_timeout = positive(parse_duration(v)?)?,
        "forget_after" => cfg.forget_after = positive(parse_duration(v)?)?,
        "max_workers" => cfg.max_workers = parse_count(v, 1, 10_000_000)?,
        "max_frame_bytes" => cfg.max_frame_bytes = parse_size(v, 256, 16 << 20)?,
        "udp_recv_buffer" => cfg.udp_recv_buffer = parse_size(v, 4096, 1 << 30)?,
        "http_max_connections" => cfg.http_max_connections = parse_count(v, 1, 1_000_000)?,
        "summary_interval" => cfg.summary_interval = at_least(parse_duration(v)?, 100)?,
        "ws_max_clients" => cfg.ws_max_clients = parse_count(v, 0, 1_000_000)?,
        "ws_max_queue_bytes" => cfg.ws_max_queue_bytes = parse_size(v, 4096, 1 << 30)?,
        "ws_stall_timeout" => cfg.ws_stall_timeout = at_least(parse_duration(v)?, 100)?,
        "history_samples" => cfg.history_samples = parse_count(v, 1, 100_000)?,
        "metrics_report_interval" => {
            cfg.metrics_report_interval = if v.eq_ignore_ascii_case("off") {
                None
            } else {
                Some(at_least(parse_duration(v)?, 1000)?)
            }
        }
        "cors_allow_origin" => {
            if v.bytes().any(|b| b.is_ascii_control()) {
                return Err("must not contain control characters".into());
            }
            cfg.cors_allow_origin = v.to_string();
        }
        "log_level" => {
            cfg.log_level = v
                .parse()
                .map_err(|_| format!("{v:?} is not one of off, error, warn, info, debug, trace"))?
        }
        _ => return Err(format!("unknown setting {key:?}")),
    }
    Ok(())
}

/// The seeds' `HTTP_PORT`: `":9090"` or `"9090"` sets the port on the
/// configured host, `"host:port"` sets both, `""` turns HTTP off.
fn set_http_port(cfg: &mut Config, v: &str) -> Result<(), String> {
    let v = v.trim();
    if v.is_empty() {
        cfg.http_addr = None;
        return Ok(());
    }
    let port_only = v.strip_prefix(':').unwrap_or(v);
    if let Ok(port) = port_only.parse::<u16>() {
        let host = cfg
            .http_addr
            .map(|a| a.ip())
            .unwrap_or_else(|| [127, 0, 0, 1].into());
        cfg.http_addr = Some(SocketAddr::new(host, port));
        Ok(())
    } else {
        cfg.http_addr = Some(parse_addr(v)?);
        Ok(())
    }
}

fn parse_addr(v: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = v.parse() {
        return Ok(a);
    }
    // Allow `localhost:8080`; resolution is local, no network.
    v.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| format!("{v:?} is not an address like 127.0.0.1:8080"))
}

fn at_least(d: Duration, min_ms: u64) -> Result<Duration, String> {
    if d < Duration::from_millis(min_ms) {
        Err(format!("must be at least {min_ms}ms"))
    } else {
        Ok(d)
    }
}

fn positive(d: Duration) -> Result<Duration, String> {
    if d.is_zero() {
        Err("must be above zero".into())
    } else {
        Ok(d)
    }
}

/// `500ms`, `5s`, `2m`, `1h`, `1d`; a bare number is seconds.
pub fn parse_duration(v: &str) -> Result<Duration, String> {
    let v = v.trim();
    let split = v
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{v:?} is not a duration like 500ms, 5s, 2m or 1h"))?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        _ => return Err(format!("{v:?} has an unknown unit (ms, s, m, h, d)")),
    };
    if !secs.is_finite() || secs > 365.0 * 86400.0 {
        return Err(format!("{v:?} is longer than a year"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Show a duration as the shortest whole form: `500ms`, `5s`, `2m`, `1h`.
pub fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 3_600_000 == 0 && ms > 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms % 60_000 == 0 && ms > 0 {
        format!("{}m", ms / 60_000)
    } else if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

fn parse_count(v: &str, min: usize, max: usize) -> Result<usize, String> {
    let n: usize = v
        .replace('_', "")
        .parse()
        .map_err(|_| format!("{v:?} is not a whole number"))?;
    if n < min || n > max {
        return Err(format!("{n} is outside {min}..={max}"));
    }
    Ok(n)
}

/// A byte size: `65536`, `64KiB`, `4MiB`, `1GiB` (K/M/G are binary too).
pub fn parse_size(v: &str, min: usize, max: usize) -> Result<usize, String> {
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: usize = num
        .parse()
        .map_err(|_| format!("{v:?} is not a size like 65536 or 4MiB"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("{v:?} has an unknown unit (KiB, MiB, GiB)")),
    };
    let n = n
        .checked_mul(mult)
        .ok_or_else(|| format!("{v:?} is too large"))?;
    if n < min || n > max {
        return Err(format!("{v} is outside {min}..={max} bytes"));
    }
    Ok(n)
}

/// `musterd --help`.
pub fn usage() -> String {
    let mut s = String::from(
        "musterd: roll call for a fleet of worker processes\n\n\
         usage: musterd [--config FILE] [--check-config] [--SETTING VALUE]...\n\n\
         options:\n\
         \x20 --config FILE      read settings from FILE (default /etc/muster/musterd.conf if it exists)\n\
         \x20 --check-config     validate the configuration and exit 0 (valid) or 2 (invalid)\n\
         \x20 -h, --help         print this help\n\
         \x20 -V, --version      print the version\n\n\
         settings (flag, environment MUSTER_<KEY>, file key; default):\n",
    );
    for st in SETTINGS {
        s.push_str(&format!(
            "  {:<24} {:<16} {}\n",
            flag_name(st.key),
            st.default,
            st.help
        ));
    }
    s.push_str("\nHTTP_PORT=\":9090\" sets the HTTP port and HTTP_PORT=\"\" turns HTTP off.\nSee musterd(8) and musterd.conf(5).\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn cli(args: &[&str]) -> Cli {
        let mut c = parse_args(args.iter().map(|s| s.to_string())).unwrap();
        if c.config.is_none() {
            c.config = Some("/dev/null".into());
        }
        c
    }

    #[test]
    fn defaults_match_the_contract() {
        let c = load(&cli(&[]), &no_env).unwrap();
        assert_eq!(c.http_addr, Some("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(c.heartbeat_addr, "127.0.0.1:8090".parse().unwrap());
        assert_eq!(c.heartbeat_interval, Duration::from_secs(5));
        assert_eq!(c.inactivity_timeout, Duration::from_secs(30));
        assert_eq!(c.forget_after, Duration::from_secs(3600));
        assert_eq!(c.max_workers, 10_000);
        assert_eq!(c.max_frame_bytes, 65536);
        assert_eq!(c.udp_recv_buffer, 4 << 20);
        assert_eq!(c.http_max_connections, 1024);
        assert_eq!(c.cors_allow_origin, "*");
        assert_eq!(c.summary_interval, Duration::from_secs(1));
        assert_eq!(c.ws_max_clients, 4096);
        assert_eq!(c.ws_max_queue_bytes, 1 << 20);
        assert_eq!(c.ws_stall_timeout, Duration::from_secs(10));
        assert_eq!(c.history_samples, 720);
        assert_eq!(c.metrics_report_interval, Some(Duration::from_secs(60)));
        assert_eq!(c.log_level, LevelFilter::Info);
    }

    #[test]
    fn durations() {
        let table = [
            ("500ms", Some(500)),
            ("5s", Some(5000)),
            ("5", Some(5000)),
            ("2m", Some(120_000)),
            ("1h", Some(3_600_000)),
            ("1.5s", Some(1500)),
            ("5x", None),
            ("", None),
            ("ms", None),
            ("-1s", None),
            ("400d", None),
        ];
        for (text, want) in table {
            let got = parse_duration(text).ok().map(|d| d.as_millis() as u64);
            assert_eq!(got, want, "{text:?}");
        }
        assert_eq!(fmt_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(fmt_duration(Duration::from_secs(120)), "2m");
    }

    #[test]
    fn precedence_flag_over_env_over_file() {
        let dir = std::env::temp_dir().join(format!("muster-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("m.conf");
        std::fs::write(
            &file,
            "# comment\nmax_workers = 10\nmax_frame_bytes = 1024 # trailing\nlog_level = \"debug\"\n",
        )
        .unwrap();
        let env = |k: &str| match k {
            "MUSTER_MAX_WORKERS" => Some("20".to_string()),
            "MUSTER_MAX_FRAME_BYTES" => Some("2048".to_string()),
            _ => None,
        };
        let c = parse_args(
            ["--config", file.to_str().unwrap(), "--max-workers=30"]
                .iter()
                .map(|s| s.to_string()),
        )
        .unwrap();
        let cfg = load(&c, &env).unwrap();
        assert_eq!(cfg.max_workers, 30, "flag wins");
        assert_eq!(cfg.max_frame_bytes, 2048, "env beats file");
        assert_eq!(cfg.log_level, LevelFilter::Debug, "file beats default");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn http_port_alias() {
        let env = |v: &'static str| move |k: &str| (k == "HTTP_PORT").then(|| v.to_string());
        let c = load(&cli(&[]), &env(":9090")).unwrap();
        assert_eq!(c.http_addr, Some("127.0.0.1:9090".parse().unwrap()));
        let c = load(&cli(&[]), &env("")).unwrap();
        assert_eq!(c.http_addr, None);
        let c = load(&cli(&["--http-addr", "127.0.0.1:7000"]), &env("")).unwrap();
        assert_eq!(c.http_addr, Some("127.0.0.1:7000".parse().unwrap()));
        let c = load(&cli(&["--http-addr", "off"]), &no_env).unwrap();
        assert_eq!(c.http_addr, None);
    }

    #[test]
    fn bad_values_are_refused() {
        let bad: &[&[&str]] = &[
            &["--inactivity-timeout", "1s"],
            &["--heartbeat-interval", "0s"],
            &["--max-workers", "0"],
            &["--max-workers", "many"],
            &["--http-addr", "nowhere"],
            &["--log-level", "loud"],
            &["--max-frame-bytes", "12"],
            &["--udp-recv-buffer", "4XB"],
            &["--forget-after", "10s"],
        ];
        for args in bad {
            assert!(load(&cli(args), &no_env).is_err(), "{args:?} accepted");
        }
        assert!(parse_args(["--nope".to_string()]).is_err());
        assert!(parse_args(["--max-workers".to_string()]).is_err());
    }

    #[test]
    fn file_errors_name_the_line() {
        let p = Path::new("x.conf");
        let e = parse_file(p, "max_workers = 1\nbogus\n").unwrap_err();
        assert!(e.to_string().starts_with("x.conf:2:"), "{e}");
        assert!(parse_file(p, "nope = 1").is_err());
        assert!(parse_file(p, "max_workers = 1\nmax_workers = 2").is_err());
        assert!(parse_file(p, "\n  # only comments\n").unwrap().is_empty());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4MiB", 1, usize::MAX), Ok(4 << 20));
        assert_eq!(parse_size("64k", 1, usize::MAX), Ok(65536));
        assert_eq!(parse_size("1000", 1, usize::MAX), Ok(1000));
        assert!(parse_size("4XB", 1, usize::MAX).is_err());
    }

    #[test]
    fn warns_below_three_intervals() {
        let c = load(&cli(&["--inactivity-timeout", "10s"]), &no_env).unwrap();
        assert_eq!(warnings(&c).len(), 1);
        let c = load(&cli(&[]), &no_env).unwrap();
        assert!(warnings(&c).is_empty());
    }

    #[test]
    fn names() {
        assert_eq!(flag_name("http_addr"), "--http-addr");
        assert_eq!(env_name("http_addr"), "MUSTER_HTTP_ADDR");
    }
}
