//! Cluster mode: the PostgreSQL several nodes share, who this node is, and
//! the clocks of its leases. Without `cluster_database` the daemon is the
//! single node it always was, and none of the rest is read.

use super::setting::{area, off_or, optional_path, show_path};
use super::units::{fmt_duration, parse_duration};
use std::path::PathBuf;
use std::time::Duration;

area! {
    /// Several nodes on one database.
    pub struct Cluster in cluster {
        database: Option<Database> = "cluster_database", "off", Text, restart,
            "PostgreSQL URI of the cluster (libpq form, several hosts with target_session_attrs=read-write), or off for one node on its own",
            |v| off_or(v, Database::parse), |d: &Option<Database>| d.as_ref().map_or("off".into(), Database::shown);
        password_file: Option<PathBuf> = "cluster_database_password_file", "off", Path, restart,
            "file holding the database password (it never appears in logs or URIs)",
            optional_path, show_path;
        /// `None` (`auto`): the host name, found at start.
        node_id: Option<String> = "node_id", "auto", Text, restart,
            "this node's name in the cluster; auto: the host name",
            |v| auto_or(v, node_id), |s: &Option<String>| s.clone().unwrap_or_else(|| "auto".into());
        /// `None` (`auto`): the bound addresses, found at start.
        advertise: Option<(String, String)> = "node_advertise", "auto", List, restart,
            "HTTP and heartbeat addresses other nodes and workers reach this node at, e.g. `10.0.0.5:8080, 10.0.0.5:8090`; auto: the bound ones (a wildcard under the host name)",
            |v| auto_or(v, advertise), show_advertise;
        node_ttl: Duration = "node_ttl", "15s", Duration, restart,
            "a node that has not renewed its lease for this long is dead; it renews every third of it",
            |v| at_least(parse_duration(v)?, Duration::from_secs(3)), |d: &Duration| fmt_duration(*d);
        refresh_interval: Duration = "cluster_refresh_interval", "10s", Duration, live,
            "how often a node writes what changed in its workers (transitions are written at once)",
            |v| at_least(parse_duration(v)?, Duration::from_secs(1)), |d: &Duration| fmt_duration(*d);
    }
    derived {
        /// Read from `cluster_database_password_file`.
        password: Option<super::Secret>,
    }
}

/// A connection URI or libpq `key=value` string, as given; its password,
/// if it holds one, is never shown. `sslmode` and `sslrootcert` are read
/// here (the driver knows neither `verify-ca`, `verify-full` nor a root
/// file); the rest goes to the driver as given.
#[derive(Clone, PartialEq, Eq)]
pub struct Database {
    given: String,
    /// `given` without `sslmode` and `sslrootcert`.
    rest: String,
    pub ssl: SslMode,
    /// The CA bundle `verify-ca` and `verify-full` check against.
    pub root: Option<PathBuf>,
}

/// libpq's `sslmode`, as musterd keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    /// TLS when the server offers it, unverified (libpq's default).
    Prefer,
    /// TLS or nothing, unverified.
    Require,
    /// TLS with a certificate from a known CA, for any host name.
    VerifyCa,
    /// TLS with a certificate from a known CA, for this host name.
    VerifyFull,
}

impl SslMode {
    fn parse(v: &str) -> Result<SslMode, String> {
        Ok(match v {
            "disable" => SslMode::Disable,
            "prefer" | "allow" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => {
                return Err(format!(
                    "sslmode {v:?}: disable, prefer, require, verify-ca or verify-full"
                ));
            }
        })
    }
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown())
    }
}

/// Take `sslmode` and `sslrootcert` out of a URI's query or a `key=value`
/// string: the rest, and their values.
fn take_ssl(v: &str) -> (String, Option<String>, Option<String>) {
    let (mut mode, mut root) = (None, None);
    let mut keep = |pair: &str| match pair.split_once('=') {
        Some(("sslmode", m)) => {
            mode = Some(m.to_string());
            false
        }
        Some(("sslrootcert", r)) => {
            root = Some(r.to_string());
            false
        }
        _ => true,
    };
    let rest = if v.contains("://") {
        match v.split_once('?') {
            Some((base, query)) => {
                let kept: Vec<&str> = query.split('&').filter(|p| keep(p)).collect();
                if kept.is_empty() {
                    base.to_string()
                } else {
                    format!("{base}?{}", kept.join("&"))
                }
            }
            None => v.to_string(),
        }
    } else {
        v.split_whitespace()
            .filter(|p| keep(p))
            .collect::<Vec<_>>()
            .join(" ")
    };
    (rest, mode, root)
}

impl Database {
    pub fn parse(v: &str) -> Result<Database, String> {
        let v = v.trim();
        if v.is_empty() {
            return Err("give a PostgreSQL URI (postgresql://host/db), or `off`".into());
        }
        let (rest, mode, root) = take_ssl(v);
        rest.parse::<postgres::Config>()
            .map_err(|e| format!("not a PostgreSQL connection string: {e}"))?;
        let ssl = mode
            .as_deref()
            .map_or(Ok(SslMode::Prefer), SslMode::parse)?;
        let root = root.map(|r| PathBuf::from(percent_decoded(&r)));
        if root.is_some() && !matches!(ssl, SslMode::VerifyCa | SslMode::VerifyFull) {
            return Err("sslrootcert is read with sslmode=verify-ca or verify-full".into());
        }
        Ok(Database {
            given: v.to_string(),
            rest,
            ssl,
            root,
        })
    }

    /// The text the driver reads (without `sslmode` and `sslrootcert`).
    pub fn as_str(&self) -> &str {
        &self.rest
    }

    /// As logs and `--help` show it: any password replaced by `***`.
    pub fn shown(&self) -> String {
        redact(&self.given)
    }
}

/// `%2F` and the like in a URI's value.
fn percent_decoded(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, ..) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Hide the password of a URI (`user:secret@`, `password=secret`) or of a
/// `key=value` string.
pub fn redact(s: &str) -> String {
    let mut out = s.to_string();
    if let Some(scheme) = out.find("://") {
        let rest = scheme + 3;
        let end = out[rest..].find(['/', '?']).map_or(out.len(), |i| rest + i);
        if let Some(at) = out[rest..end].rfind('@') {
            let userinfo = &out[rest..rest + at];
            if let Some(colon) = userinfo.find(':') {
                out.replace_range(rest + colon + 1..rest + at, "***");
            }
        }
    }
    let lower = out.to_ascii_lowercase();
    if let Some(i) = lower.find("password=") {
        let start = i + "password=".len();
        let stop = out[start..]
            .find(['&', ' '])
            .map_or(out.len(), |j| start + j);
        out.replace_range(start..stop, "***");
    }
    out
}

/// `auto`, or a value.
fn auto_or<T>(v: &str, parse: impl Fn(&str) -> Result<T, String>) -> Result<Option<T>, String> {
    if v.trim() == "auto" {
        Ok(None)
    } else {
        parse(v).map(Some)
    }
}

/// A node's name: 1 to 64 letters, digits, `.`, `_` or `-`.
fn node_id(v: &str) -> Result<String, String> {
    let v = v.trim();
    let ok = (1..=64).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(v.to_string())
    } else {
        Err("1 to 64 letters, digits, `.`, `_` or `-`".into())
    }
}

/// `HTTP_ADDR, HEARTBEAT_ADDR`: each `host:port`, the host a name or an
/// address.
fn advertise(v: &str) -> Result<(String, String), String> {
    let v = v.trim();
    let parts: Vec<&str> = v.split(',').map(str::trim).collect();
    let [http, heartbeat] = parts[..] else {
        return Err("two addresses: the HTTP one, then the heartbeat one".into());
    };
    for a in [http, heartbeat] {
        let Some((host, port)) = a.rsplit_once(':') else {
            return Err(format!("{a:?} is not host:port"));
        };
        if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(format!("{a:?} is not host:port"));
        }
    }
    Ok((http.to_string(), heartbeat.to_string()))
}

fn show_advertise(a: &Option<(String, String)>) -> String {
    a.as_ref()
        .map_or_else(|| "auto".into(), |(h, b)| format!("{h}, {b}"))
}

fn at_least(d: Duration, min: Duration) -> Result<Duration, String> {
    if d < min {
        Err(format!("at least {}", fmt_duration(min)))
    } else {
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_never_shown() {
        for (given, shown) in [
            (
                "postgresql://muster:s3cret@db1:5432,db2:5432/muster?target_session_attrs=read-write",
                "postgresql://muster:***@db1:5432,db2:5432/muster?target_session_attrs=read-write",
            ),
            (
                "postgresql://muster@db/muster",
                "postgresql://muster@db/muster",
            ),
            (
                "host=db user=muster password=s3cret dbname=muster",
                "host=db user=muster password=*** dbname=muster",
            ),
            (
                "postgresql://db/muster?password=s3cret&sslmode=require",
                "postgresql://db/muster?password=***&sslmode=require",
            ),
        ] {
            assert_eq!(redact(given), shown);
            let d = Database::parse(given).unwrap();
            assert_eq!(format!("{d:?}"), shown);
        }
        assert!(Database::parse("not a uri at all =").is_err());
        assert!(Database::parse("").is_err());
    }

    #[test]
    fn sslmode_and_root_are_read_here_and_the_rest_goes_on() {
        let d = Database::parse(
            "postgresql://db1,db2/muster?target_session_attrs=read-write&sslmode=verify-full&sslrootcert=%2Fetc%2Fdb-ca.pem",
        )
        .unwrap();
        assert_eq!(d.ssl, SslMode::VerifyFull);
        assert_eq!(
            d.root.as_deref(),
            Some(std::path::Path::new("/etc/db-ca.pem"))
        );
        assert_eq!(
            d.as_str(),
            "postgresql://db1,db2/muster?target_session_attrs=read-write"
        );
        let d = Database::parse("host=db dbname=muster sslmode=require").unwrap();
        assert_eq!(
            (d.ssl, d.as_str()),
            (SslMode::Require, "host=db dbname=muster")
        );
        let d = Database::parse("postgresql://db/muster?sslmode=disable").unwrap();
        assert_eq!(
            (d.ssl, d.as_str()),
            (SslMode::Disable, "postgresql://db/muster")
        );
        assert_eq!(
            Database::parse("postgresql://db/m").unwrap().ssl,
            SslMode::Prefer
        );
        assert!(Database::parse("postgresql://db/m?sslmode=sometimes").is_err());
        assert!(Database::parse("postgresql://db/m?sslrootcert=/x").is_err());
    }

    #[test]
    fn node_ids_and_addresses() {
        assert_eq!(node_id("node-1.eu").unwrap(), "node-1.eu");
        assert!(node_id("").is_err());
        assert_eq!(auto_or("auto", node_id).unwrap(), None);
        assert!(node_id("a b").is_err());
        assert!(node_id(&"x".repeat(65)).is_err());
        assert_eq!(
            advertise("10.0.0.5:8080, node5.internal:8090").unwrap(),
            ("10.0.0.5:8080".into(), "node5.internal:8090".into())
        );
        assert_eq!(auto_or("auto", advertise).unwrap(), None);
        for bad in [
            "",
            "10.0.0.5:8080",
            "a:1,b",
            ":1,b:2",
            "a:0,b:1",
            "a:1,b:2,c:3",
        ] {
            assert!(advertise(bad).is_err(), "{bad}");
        }
    }
}
