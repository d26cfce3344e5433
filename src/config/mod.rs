//! Settings: one table, one naming rule, one precedence.
//!
//! A setting `http_addr` is the config-file key `http_addr`, the environment
//! variable `MUSTER_HTTP_ADDR` and the flag `--http-addr`. A flag beats the
//! environment (where an older name, such as `HTTP_PORT`, comes below the
//! `MUSTER_` one), which beats the file, which beats the default in its
//! row. The file is `key = value` lines with `#` comments
//! (musterd.conf(5)).
//!
//! - `setting`: what a setting is, and [`setting::area!`], which declares
//!   an area's settings once each.
//! - the areas, each a struct of [`Config`] with its rows: `http`,
//!   `heartbeats`, `fleet`, `daemon`, `tasks`, `pool`, `alerts`; together
//!   they are the only list of settings ([`settings`]), which parsing,
//!   `--help`, the reload notes and the docs tests walk.
//! - `units`: durations, sizes, counts, addresses (also used by `muster`).
//! - `args`: `musterd`'s command line (lexopt) and `--help`.
//! - `reload`: the running `Arc<Config>`, swapped on SIGHUP.
//!
//! This module parses and validates; it opens no sockets. Clamping
//! `max_workers` to the kernel's limits is the daemon's, at start-up.

pub mod alerts;
pub mod args;
pub mod cluster;
pub mod daemon;
pub mod env;
pub mod fleet;
pub mod heartbeats;
pub mod http;
pub mod pool;
pub mod reload;
pub mod secret;
pub mod setting;
pub mod tasks;
pub mod tls;
pub mod tokens;
pub mod units;

pub use args::{Cli, parse_args, usage};
pub use env::{Environment, load_process};
pub use reload::{Running, View};
pub use secret::Secret;
pub use setting::Setting;
pub use tls::Tls;
pub use tokens::{Role, Tokens};
pub use units::{fmt_duration, parse_duration};

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// The file read when neither `--config` nor `MUSTER_CONFIG` names one.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/muster/musterd.conf";

/// A validated configuration, by area.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Where the file came from, if one was read.
    pub path: Option<PathBuf>,
    pub http: http::Http,
    pub heartbeats: heartbeats::Heartbeats,
    pub fleet: fleet::Fleet,
    pub daemon: daemon::Daemon,
    pub tasks: tasks::Tasks,
    pub pool: pool::Pool,
    pub alerts: alerts::Alerts,
    pub cluster: cluster::Cluster,
}

/// Every area's settings: together, the only list of them.
const AREAS: [&[Setting]; 8] = [
    http::ROWS,
    heartbeats::ROWS,
    fleet::ROWS,
    daemon::ROWS,
    tasks::ROWS,
    pool::ROWS,
    alerts::ROWS,
    cluster::ROWS,
];

/// Every setting, area by area, in the order `--help` lists them.
pub fn settings() -> impl Iterator<Item = &'static Setting> {
    AREAS.into_iter().flatten()
}

/// The row for `key`, if it is a setting.
pub fn find(key: &str) -> Option<&'static Setting> {
    settings().find(|s| s.key == key)
}

/// The flag for a key: `http_addr` → `--http-addr`.
pub fn flag_name(key: &str) -> String {
    format!("--{}", key.replace('_', "-"))
}

/// The environment variable for a key: `http_addr` → `MUSTER_HTTP_ADDR`.
pub fn env_name(key: &str) -> String {
    format!("MUSTER_{}", key.to_ascii_uppercase())
}

impl Config {
    /// Whether `ip` is held to the per-address connection caps: every
    /// address but the `trusted_proxies`.
    pub fn capped(&self, ip: std::net::IpAddr) -> bool {
        !self.http.trusted_proxies.iter().any(|b| b.contains(ip))
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
    for s in settings() {
        let value = |src: &str, m: String| ConfigError::Value(src.into(), s.key.to_string(), m);
        if let Some(v) = file.get(s.key) {
            let src = path.as_ref().map(|p| p.display().to_string());
            (s.set)(&mut cfg, v.trim()).map_err(|m| value(&src.unwrap_or_default(), m))?;
        }
        for alias in s.aliases {
            if let Some(v) = env(alias.name) {
                let own = (alias.read)(&v, &cfg).map_err(|m| value(alias.name, m))?;
                (s.set)(&mut cfg, &own).map_err(|m| value(alias.name, m))?;
            }
        }
        let var = env_name(s.key);
        if let Some(v) = env(&var) {
            (s.set)(&mut cfg, v.trim()).map_err(|m| value(&var, m))?;
        }
    }
    for (k, v) in &cli.settings {
        let s = find(k).ok_or_else(|| ConfigError::Usage(format!("unknown setting {k:?}")))?;
        (s.set)(&mut cfg, v.trim()).map_err(|m| ConfigError::Value(flag_name(k), k.clone(), m))?;
    }
    validate(&cfg)?;
    read_files(&mut cfg)?;
    Ok(cfg)
}

/// Read what the settings name by path: the tokens, the certificate and key.
fn read_files(cfg: &mut Config) -> Result<(), ConfigError> {
    let value = |key: &str, m: String| ConfigError::Value("file".into(), key.into(), m);
    let mut tokens = match &cfg.http.api_tokens_file {
        Some(p) => Tokens::read(p).map_err(|m| value("api_tokens_file", m))?,
        None => Tokens::default(),
    };
    if let Some(p) = &cfg.http.api_token_file {
        let one = secret::read_token(p).map_err(|m| value("api_token_file", m))?;
        tokens = tokens
            .with_admin(&one)
            .map_err(|m| value("api_token_file", m))?;
    }
    cfg.http.tokens = tokens;
    if let Some(p) = &cfg.heartbeats.token_file {
        cfg.heartbeats.token =
            Some(secret::read_token(p).map_err(|m| value("heartbeat_token_file", m))?);
    }
    if let Some(p) = &cfg.cluster.password_file {
        cfg.cluster.password =
            Some(secret::read_token(p).map_err(|m| value("cluster_database_password_file", m))?);
    }
    let hb = &cfg.heartbeats;
    cfg.heartbeats.tls = match (&hb.tls_cert_file, &hb.tls_key_file, &hb.tls_client_ca_file) {
        (None, None, None) => None,
        (Some(c), Some(k), ca) => Some(
            tls::load_heartbeat(c, k, ca.as_deref())
                .map_err(|m| value("heartbeat_tls_cert_file", m))?,
        ),
        (_, _, Some(_)) if hb.tls_cert_file.is_none() => {
            return Err(ConfigError::Invalid(
                "heartbeat_tls_client_ca_file needs heartbeat_tls_cert_file and heartbeat_tls_key_file".into(),
            ));
        }
        _ => {
            return Err(ConfigError::Invalid(
                "heartbeat_tls_cert_file and heartbeat_tls_key_file are set together or not at all"
                    .into(),
            ));
        }
    };
    cfg.http.tls = match (&cfg.http.tls_cert_file, &cfg.http.tls_key_file) {
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

/// The defaults, read from each setting's row like any other value.
pub fn defaults() -> Config {
    Config {
        path: None,
        http: http::Http::defaults(),
        heartbeats: heartbeats::Heartbeats::defaults(),
        fleet: fleet::Fleet::defaults(),
        daemon: daemon::Daemon::defaults(),
        tasks: tasks::Tasks::defaults(),
        pool: pool::Pool::defaults(),
        alerts: alerts::Alerts::defaults(),
        cluster: cluster::Cluster::defaults(),
    }
}

fn validate(cfg: &Config) -> Result<(), ConfigError> {
    if cfg.http.api_read_requires_token
        && cfg.http.api_tokens_file.is_none()
        && cfg.http.api_token_file.is_none()
    {
        return Err(ConfigError::Invalid(
            "api_read_requires_token is on, but no api_tokens_file (or api_token_file) says which tokens may read".into(),
        ));
    }
    if cfg.fleet.inactivity_timeout < cfg.fleet.heartbeat_interval {
        return Err(ConfigError::Invalid(format!(
            "inactivity_timeout ({}) is below heartbeat_interval ({}): every worker would flap",
            fmt_duration(cfg.fleet.inactivity_timeout),
            fmt_duration(cfg.fleet.heartbeat_interval)
        )));
    }
    if cfg.pool.min > cfg.pool.max || !(cfg.pool.min..=cfg.pool.max).contains(&cfg.pool.size) {
        return Err(ConfigError::Invalid(format!(
            "pool_size ({}) must be within pool_min ({}) and pool_max ({})",
            cfg.pool.size, cfg.pool.min, cfg.pool.max
        )));
    }
    if cfg.fleet.forget_after < cfg.fleet.inactivity_timeout {
        return Err(ConfigError::Invalid(format!(
            "forget_after ({}) is below inactivity_timeout ({})",
            fmt_duration(cfg.fleet.forget_after),
            fmt_duration(cfg.fleet.inactivity_timeout)
        )));
    }
    Ok(())
}

/// Advice that does not stop the daemon (logged as warnings).
pub fn warnings(cfg: &Config) -> Vec<String> {
    let mut w = Vec::new();
    match cfg.tasks.fsync {
        Fsync::Always => {}
        Fsync::Batch => w.push(
            "task_fsync=batch: a 201 is answered before the task is on disk; a crash may lose the last 10 ms of submissions".into(),
        ),
        Fsync::Off => w.push(
            "task_fsync=off: the task journal is left to the kernel; a crash of the machine may lose accepted tasks".into(),
        ),
    }
    if let Some(a) = cfg.http.addr {
        if !a.ip().to_canonical().is_loopback() && cfg.http.tokens.is_empty() {
            w.push(format!(
                "HTTP listens on {a}, beyond loopback, without api_tokens_file: anyone who reaches it reads the fleet (changes stay loopback-only)"
            ));
        }
    }
    if cfg.fleet.inactivity_timeout < cfg.fleet.heartbeat_interval * 3 {
        w.push(format!(
            "inactivity_timeout={} is below 3x heartbeat_interval={}: one late beat marks a worker inactive",
            fmt_duration(cfg.fleet.inactivity_timeout),
            fmt_duration(cfg.fleet.heartbeat_interval)
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
        if find(k).is_none() {
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
    use log::LevelFilter;
    use std::time::Duration;

    #[test]
    fn every_default_reads_and_shows_back_the_same() {
        let blank = defaults();
        for s in settings() {
            let mut c = blank.clone();
            (s.set)(&mut c, s.default).unwrap_or_else(|e| panic!("{}: {e}", s.key));
            assert_eq!(c, blank, "{}: its default is the area's default", s.key);
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
        let mut keys: Vec<&str> = settings().map(|s| s.key).collect();
        let n = keys.len();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), n);
        assert_eq!(flag_name("http_addr"), "--http-addr");
        assert_eq!(env_name("http_addr"), "MUSTER_HTTP_ADDR");
        assert!(find("max_workers").is_some() && find("nope").is_none());
    }

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
        assert_eq!(c.http.addr, Some("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(c.heartbeats.addr, "127.0.0.1:8090".parse().unwrap());
        assert_eq!(c.fleet.heartbeat_interval, Duration::from_secs(5));
        assert_eq!(c.fleet.inactivity_timeout, Duration::from_secs(30));
        assert_eq!(c.fleet.forget_after, Duration::from_secs(3600));
        assert_eq!(c.fleet.max_workers, 10_000);
        assert_eq!(c.heartbeats.max_frame_bytes, 65536);
        assert_eq!(c.heartbeats.udp_recv_buffer, 16 << 20);
        assert_eq!(c.http.max_connections, 1024);
        assert_eq!(c.http.cors_allow_origin, ["*"]);
        assert_eq!(c.http.summary_interval, Duration::from_secs(1));
        assert_eq!(c.http.ws_max_clients, 4096);
        assert_eq!(c.http.ws_max_queue_bytes, 1 << 20);
        assert_eq!(c.http.ws_stall_timeout, Duration::from_secs(10));
        assert_eq!(c.fleet.history_samples, 720);
        assert_eq!(
            c.daemon.metrics_report_interval,
            Some(Duration::from_secs(60))
        );
        assert_eq!(c.daemon.log_level, LevelFilter::Info);
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
        assert_eq!(cfg.fleet.max_workers, 30, "flag wins");
        assert_eq!(cfg.heartbeats.max_frame_bytes, 2048, "env beats file");
        assert_eq!(
            cfg.daemon.log_level,
            LevelFilter::Debug,
            "file beats default"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn http_port_alias() {
        let env = |v: &'static str| move |k: &str| (k == "HTTP_PORT").then(|| v.to_string());
        let c = load(&cli(&[]), &env(":9090")).unwrap();
        assert_eq!(c.http.addr, Some("0.0.0.0:9090".parse().unwrap()));
        assert!(warnings(&c).iter().any(|w| w.contains("beyond loopback")));
        let c = load(&cli(&[]), &env("127.0.0.1:9090")).unwrap();
        assert!(!warnings(&c).iter().any(|w| w.contains("beyond loopback")));
        let c = load(&cli(&[]), &env("")).unwrap();
        assert_eq!(c.http.addr, None);
        let c = load(&cli(&["--http-addr", "127.0.0.1:7000"]), &env("")).unwrap();
        assert_eq!(c.http.addr, Some("127.0.0.1:7000".parse().unwrap()));
        let c = load(&cli(&["--http-addr", "off"]), &no_env).unwrap();
        assert_eq!(c.http.addr, None);
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
        assert_eq!(
            c.daemon.metrics_report_interval,
            Some(Duration::from_secs(30))
        );
        let c = load(&cli(&[]), &both).unwrap();
        assert_eq!(
            c.daemon.metrics_report_interval,
            Some(Duration::from_secs(120))
        );
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
