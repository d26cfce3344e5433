//! Settings: one table, one naming rule, one precedence.
//!
//! A setting `http_addr` is the config-file key `http_addr`, the environment
//! variable `MUSTER_HTTP_ADDR` and the flag `--http-addr`. A flag beats the
//! environment, which beats the file, which beats the default in
//! [`SETTINGS`]. The file is `key = value` lines with `#` comments
//! (musterd.conf(5)).
//!
//! - `settings`: the table, one row per setting; everything else walks it.
//! - `units`: durations, sizes, counts, addresses (also used by `muster`).
//! - `args`: `musterd`'s command line (lexopt) and `--help`.
//! - `reload`: the running `Arc<Config>`, swapped on SIGHUP.
//!
//! This module parses and validates; it opens no sockets. Clamping
//! `max_workers` to the kernel's limits is the daemon's, at start-up.

pub mod alerting;
pub mod args;
pub mod env;
pub mod reload;
pub mod secret;
pub mod settings;
pub mod tls;
pub mod units;
pub mod work;

pub use args::{Cli, parse_args, usage};
pub use env::{Environment, load_process};
pub use reload::{Running, View};
pub use settings::{SETTINGS, Setting, env_name, flag_name};
pub use units::{fmt_duration, parse_duration};

use log::LevelFilter;
pub use secret::Secret;
use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
pub use tls::Tls;
use units::Cidr;

/// The file read when neither `--config` nor `MUSTER_CONFIG` names one.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/muster/musterd.conf";

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
    /// Events (`run` frames) waiting for one worker's thread, at most.
    pub max_pending_events: usize,
    /// State one frame may leave a worker holding, in bytes as parsed.
    pub max_worker_state_bytes: usize,
    pub udp_recv_buffer: usize,
    pub http_max_connections: usize,
    /// HTTP connections one address may hold.
    pub http_max_connections_per_ip: usize,
    /// Heartbeat TCP connections one address may hold.
    pub tcp_max_connections_per_ip: usize,
    /// Peers not held to the per-address caps (reverse proxies).
    pub trusted_proxies: Vec<Cidr>,
    pub summary_interval: Duration,
    pub ws_max_clients: usize,
    pub ws_max_queue_bytes: usize,
    pub ws_stall_timeout: Duration,
    pub history_samples: usize,
    pub metrics_report_interval: Option<Duration>,
    pub metrics_worker_series: WorkerSeries,
    /// The built-in alert rules that run (names from [`alerting::RULES`]).
    pub alert_rules: Vec<&'static str>,
    pub alert_for: Duration,
    pub alert_flapping: u32,
    /// Percent.
    pub alert_error_rate: u32,
    pub alert_error_rate_min_runs: u64,
    pub alert_queue_depth: u64,
    pub alertmanager_url: Vec<alerting::HttpUrl>,
    pub alert_webhook_url: Vec<alerting::HttpUrl>,
    pub alert_resend: Duration,
    pub cors_allow_origin: Vec<String>,
    pub ws_allow_origin: Vec<String>,
    pub http_allowed_hosts: Vec<String>,
    pub api_token_file: Option<PathBuf>,
    pub heartbeat_token_file: Option<PathBuf>,
    /// `None`: from anywhere.
    pub heartbeat_allow_from: Option<Vec<Cidr>>,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub state_save_interval: Duration,
    pub task_fsync: Fsync,
    pub max_tasks: usize,
    pub max_task_bytes: usize,
    pub task_retention: Duration,
    pub task_log_bytes: usize,
    pub task_ack_timeout: Duration,
    pub task_cancel_grace: Duration,
    /// The pool: what a member runs (argv; empty: no pool), how many.
    pub pool_command: Vec<String>,
    pub pool_size: usize,
    pub pool_min: usize,
    pub pool_max: usize,
    pub pool_stop_grace: Duration,
    pub pool_restart_backoff: Duration,
    pub pool_max_restarts: usize,
    pub pool_restart_window: Duration,
    /// `queue`: size the pool from the task queue (`None`: off).
    pub autoscale: bool,
    pub autoscale_tasks_per_worker: usize,
    pub autoscale_cooldown: Duration,
    pub log_level: LevelFilter,
    /// `json`: one JSON object per log line (otherwise text).
    pub log_json: bool,
    /// Read from `api_token_file` when the configuration loads.
    pub api_token: Option<Secret>,
    /// Read from `heartbeat_token_file`.
    pub heartbeat_token: Option<Secret>,
    /// Read from `tls_cert_file` and `tls_key_file`.
    pub tls: Option<Tls>,
}

impl Config {
    /// Whether `ip` is held to the per-address connection caps: every
    /// address but the `trusted_proxies`.
    pub fn capped(&self, ip: std::net::IpAddr) -> bool {
        !self.trusted_proxies.iter().any(|b| b.contains(ip))
    }
}

/// How the task journal syncs (`task_fsync`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fsync {
    /// Every acknowledged record is on disk (group commit).
    Always,
    /// Synced every 10 ms; a crash may lose the last 10 ms.
    Batch,
    /// Left to the kernel.
    Off,
}

impl Fsync {
    pub fn as_str(self) -> &'static str {
        match self {
            Fsync::Always => "always",
            Fsync::Batch => "batch",
            Fsync::Off => "off",
        }
    }
}

/// Which per-worker series `/metrics` shows (`metrics_worker_series`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerSeries {
    /// Everything: also resource gauges and the run-duration histogram.
    Full,
    /// Up, status, info and run counts: five series a worker.
    Basic,
    /// None: fleet totals only.
    Off,
}

impl WorkerSeries {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerSeries::Full => "full",
            WorkerSeries::Basic => "basic",
            WorkerSeries::Off => "off",
        }
    }
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
        let set = |cfg: &mut Config, v: &str| (s.set)(cfg, v.trim());
        if let Some(v) = file.get(s.key) {
            let src = path.as_ref().map(|p| p.display().to_string());
            set(&mut cfg, v)
                .map_err(|m| ConfigError::Value(src.unwrap_or_default(), s.key.to_string(), m))?;
        }
        if s.key == "http_addr" {
            if let Some(v) = env("HTTP_PORT") {
                env::set_http_port(&mut cfg, &v)
                    .map_err(|m| ConfigError::Value("HTTP_PORT".into(), s.key.to_string(), m))?;
            }
        }
        if s.key == "metrics_report_interval" {
            if let Some(v) = env("METRICS_INTERVAL") {
                set(&mut cfg, &env::metrics_interval(&v)).map_err(|m| {
                    ConfigError::Value("METRICS_INTERVAL".into(), s.key.to_string(), m)
                })?;
            }
        }
        let var = env_name(s.key);
        if let Some(v) = env(&var) {
            set(&mut cfg, &v).map_err(|m| ConfigError::Value(var.clone(), s.key.to_string(), m))?;
        }
    }
    for (k, v) in &cli.settings {
        let s = settings::find(k)
            .ok_or_else(|| ConfigError::Usage(format!("unknown setting {k:?}")))?;
        (s.set)(&mut cfg, v.trim()).map_err(|m| ConfigError::Value(flag_name(k), k.clone(), m))?;
    }
    validate(&cfg)?;
    read_files(&mut cfg)?;
    Ok(cfg)
}

/// Read what the settings name by path: the tokens, the certificate and key.
fn read_files(cfg: &mut Config) -> Result<(), ConfigError> {
    let value = |key: &str, m: String| ConfigError::Value("file".into(), key.into(), m);
    if let Some(p) = &cfg.api_token_file {
        cfg.api_token = Some(secret::read_token(p).map_err(|m| value("api_token_file", m))?);
    }
    if let Some(p) = &cfg.heartbeat_token_file {
        cfg.heartbeat_token =
            Some(secret::read_token(p).map_err(|m| value("heartbeat_token_file", m))?);
    }
    cfg.tls = match (&cfg.tls_cert_file, &cfg.tls_key_file) {
        (None, None) => None,
        (Some(c), Some(k)) => Some(tls::load(c, k).map_err(|m| value("tls_cert_file", m))?),
        _ => {
            return Err(ConfigError::Invalid(
                "tls_cert_file and tls_key_file are set together or not at all".into(),
            ));
        }
    };
    Ok(())
}

/// The defaults, read from [`SETTINGS`] like any other value.
pub fn defaults() -> Config {
    // A blank to fill: every field is then set by its row's default.
    let mut cfg = Config {
        path: None,
        http_addr: None,
        heartbeat_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        heartbeat_interval: Duration::ZERO,
        inactivity_timeout: Duration::ZERO,
        forget_after: Duration::ZERO,
        max_workers: 0,
        max_frame_bytes: 0,
        max_pending_events: 0,
        max_worker_state_bytes: 0,
        udp_recv_buffer: 0,
        http_max_connections: 0,
        http_max_connections_per_ip: 0,
        tcp_max_connections_per_ip: 0,
        trusted_proxies: Vec::new(),
        summary_interval: Duration::ZERO,
        ws_max_clients: 0,
        ws_max_queue_bytes: 0,
        ws_stall_timeout: Duration::ZERO,
        history_samples: 0,
        metrics_report_interval: None,
        metrics_worker_series: WorkerSeries::Full,
        alert_rules: Vec::new(),
        alert_for: Duration::ZERO,
        alert_flapping: 0,
        alert_error_rate: 0,
        alert_error_rate_min_runs: 0,
        alert_queue_depth: 0,
        alertmanager_url: Vec::new(),
        alert_webhook_url: Vec::new(),
        alert_resend: Duration::ZERO,
        cors_allow_origin: Vec::new(),
        ws_allow_origin: Vec::new(),
        http_allowed_hosts: Vec::new(),
        api_token_file: None,
        heartbeat_token_file: None,
        heartbeat_allow_from: None,
        tls_cert_file: None,
        tls_key_file: None,
        state_dir: None,
        state_save_interval: Duration::ZERO,
        task_fsync: Fsync::Always,
        max_tasks: 0,
        max_task_bytes: 0,
        task_retention: Duration::ZERO,
        task_log_bytes: 0,
        task_ack_timeout: Duration::ZERO,
        task_cancel_grace: Duration::ZERO,
        pool_command: Vec::new(),
        pool_size: 0,
        pool_min: 0,
        pool_max: 0,
        pool_stop_grace: Duration::ZERO,
        pool_restart_backoff: Duration::ZERO,
        pool_max_restarts: 0,
        pool_restart_window: Duration::ZERO,
        autoscale: false,
        autoscale_tasks_per_worker: 0,
        autoscale_cooldown: Duration::ZERO,
        log_level: LevelFilter::Info,
        log_json: false,
        api_token: None,
        heartbeat_token: None,
        tls: None,
    };
    for s in SETTINGS {
        if let Err(e) = (s.set)(&mut cfg, s.default) {
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
    if cfg.pool_min > cfg.pool_max || !(cfg.pool_min..=cfg.pool_max).contains(&cfg.pool_size) {
        return Err(ConfigError::Invalid(format!(
            "pool_size ({}) must be within pool_min ({}) and pool_max ({})",
            cfg.pool_size, cfg.pool_min, cfg.pool_max
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
    match cfg.task_fsync {
        Fsync::Always => {}
        Fsync::Batch => w.push(
            "task_fsync=batch: a 201 is answered before the task is on disk; a crash may lose the last 10 ms of submissions".into(),
        ),
        Fsync::Off => w.push(
            "task_fsync=off: the task journal is left to the kernel; a crash of the machine may lose accepted tasks".into(),
        ),
    }
    if let Some(a) = cfg.http_addr {
        if !a.ip().to_canonical().is_loopback() && cfg.api_token_file.is_none() {
            w.push(format!(
                "HTTP listens on {a}, beyond loopback, without api_token_file: anyone who reaches it reads the fleet (changes stay loopback-only)"
            ));
        }
    }
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
        if settings::find(k).is_none() {
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
        assert_eq!(c.udp_recv_buffer, 16 << 20);
        assert_eq!(c.http_max_connections, 1024);
        assert_eq!(c.cors_allow_origin, ["*"]);
        assert_eq!(c.summary_interval, Duration::from_secs(1));
        assert_eq!(c.ws_max_clients, 4096);
        assert_eq!(c.ws_max_queue_bytes, 1 << 20);
        assert_eq!(c.ws_stall_timeout, Duration::from_secs(10));
        assert_eq!(c.history_samples, 720);
        assert_eq!(c.metrics_report_interval, Some(Duration::from_secs(60)));
        assert_eq!(c.log_level, LevelFilter::Info);
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
        assert_eq!(c.http_addr, Some("0.0.0.0:9090".parse().unwrap()));
        assert!(warnings(&c).iter().any(|w| w.contains("beyond loopback")));
        let c = load(&cli(&[]), &env("127.0.0.1:9090")).unwrap();
        assert!(!warnings(&c).iter().any(|w| w.contains("beyond loopback")));
        let c = load(&cli(&[]), &env("")).unwrap();
        assert_eq!(c.http_addr, None);
        let c = load(&cli(&["--http-addr", "127.0.0.1:7000"]), &env("")).unwrap();
        assert_eq!(c.http_addr, Some("127.0.0.1:7000".parse().unwrap()));
        let c = load(&cli(&["--http-addr", "off"]), &no_env).unwrap();
        assert_eq!(c.http_addr, None);
    }

    #[test]
    fn metrics_interval_alias_yields_to_the_muster_name() {
        let both = |k: &str| match k {
            "METRICS_INTERVAL" => Some("30000".to_string()),
            "MUSTER_METRICS_REPORT_INTERVAL" => Some("2m".to_string()),
            _ => None,
        };
        let alone = |k: &str| (k == "METRICS_INTERVAL").then(|| "30000".to_string());
        let c = load(&cli(&[]), &alone).unwrap();
        assert_eq!(c.metrics_report_interval, Some(Duration::from_secs(30)));
        let c = load(&cli(&[]), &both).unwrap();
        assert_eq!(c.metrics_report_interval, Some(Duration::from_secs(120)));
        let bad = |k: &str| (k == "METRICS_INTERVAL").then(|| "10".to_string());
        let e = load(&cli(&[]), &bad).unwrap_err().to_string();
        assert!(
            e.starts_with("METRICS_INTERVAL: metrics_report_interval"),
            "{e}"
        );
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
    fn warns_below_three_intervals() {
        let c = load(&cli(&["--inactivity-timeout", "10s"]), &no_env).unwrap();
        assert_eq!(warnings(&c).len(), 1);
        let c = load(&cli(&[]), &no_env).unwrap();
        assert!(warnings(&c).is_empty());
    }
}
