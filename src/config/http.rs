//! The HTTP and WebSocket side, and who may use it: addresses, caps,
//! origins, host names, the API token and TLS.

use super::Config;
use super::setting::{
    Alias, area, cidrs, name_of, none_or_list, off_or, one_of, optional_path, show_cidrs,
    show_path, shown_off,
};
use super::tls::Tls;
use super::tokens::Tokens;
use super::units::{
    Cidr, at_least, fmt_duration, parse_addr, parse_count, parse_duration, parse_list, parse_size,
};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

const ON_OFF: [(&str, bool); 2] = [("off", false), ("on", true)];

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

/// Host names only, lower case, without a final dot; `none` for none.
fn hosts(v: &str) -> Result<Vec<String>, String> {
    let hosts: Vec<String> = if v.eq_ignore_ascii_case("none") {
        Vec::new()
    } else {
        parse_list(v)
            .into_iter()
            .map(|h| h.trim_end_matches('.').to_ascii_lowercase())
            .collect()
    };
    if hosts.iter().any(|h| h.contains(['/', ':', '*'])) {
        return Err("list host names only, without ports or wildcards".into());
    }
    Ok(hosts)
}

/// The older `HTTP_PORT`, read as Go reads it: `":9090"` is port 9090 on
/// every IPv4 interface, `"host:9090"` as written, `""` is off, and a bare
/// `"9090"` keeps the host set so far.
fn http_port(v: &str, c: &Config) -> Result<String, String> {
    let v = v.trim();
    if v.is_empty() {
        return Ok("off".into());
    }
    if let Some(port) = v.strip_prefix(':') {
        let port = port
            .parse::<u16>()
            .map_err(|_| format!("{v:?} is not :PORT"))?;
        return Ok(SocketAddr::from(([0, 0, 0, 0], port)).to_string());
    }
    if let Ok(port) = v.parse::<u16>() {
        let host = c.http.addr.map_or([127, 0, 0, 1].into(), |a| a.ip());
        return Ok(SocketAddr::new(host, port).to_string());
    }
    parse_addr(v).map(|a| a.to_string())
}

area! {
    /// HTTP and WebSocket, and who may use them.
    pub struct Http in http {
        addr: Option<SocketAddr> = "http_addr", "127.0.0.1:8080", Address, restart,
            "HTTP and WebSocket address, or `off`",
            |v| off_or(v, parse_addr), |a: &Option<SocketAddr>| shown_off(*a, |a| a.to_string()),
            aliases: [Alias { name: "HTTP_PORT", read: http_port }];
        max_connections: usize = "http_max_connections", "1024", Count, live,
            "open HTTP connections beyond this are answered 503 and closed",
            |v| parse_count(v, 1, 1_000_000), |n: &usize| n.to_string();
        /// HTTP connections one address may hold.
        max_connections_per_ip: usize = "http_max_connections_per_ip", "256", Count, live,
            "open HTTP connections from one address; past it the address's oldest idle one is closed, or the new one is answered 503",
            |v| parse_count(v, 1, 1_000_000), |n: &usize| n.to_string();
        /// Peers not held to the per-address caps (reverse proxies).
        trusted_proxies: Vec<Cidr> = "trusted_proxies", "127.0.0.0/8, ::1", List, live,
            "peers that speak for many clients (a local reverse proxy): not held to the per-address caps; `none` holds every address to them",
            |v| cidrs(v, "none").map(Option::unwrap_or_default),
            |b: &Vec<Cidr>| show_cidrs((!b.is_empty()).then_some(b.as_slice()), "none");
        summary_interval: Duration = "summary_interval", "1s", Duration, live,
            "how often /ws/workers/telemetry sends its summary",
            |v| at_least(parse_duration(v)?, 100), |d: &Duration| fmt_duration(*d);
        ws_max_clients: usize = "ws_max_clients", "4096", Count, live,
            "WebSocket clients beyond this are answered 503 before the upgrade",
            |v| parse_count(v, 0, 1_000_000), |n: &usize| n.to_string();
        ws_max_queue_bytes: usize = "ws_max_queue_bytes", "1MiB", Bytes, live,
            "largest update message queued for one WebSocket client",
            |v| parse_size(v, 4096, 1 << 30), |n: &usize| n.to_string();
        ws_stall_timeout: Duration = "ws_stall_timeout", "10s", Duration, live,
            "a WebSocket client that takes no data this long is closed (1008)",
            |v| at_least(parse_duration(v)?, 100), |d: &Duration| fmt_duration(*d);
        cors_allow_origin: Vec<String> = "cors_allow_origin", "*", List, live,
            "origins whose pages may read (`*`: any); listed by name, they may also change",
            origins, |o: &Vec<String>| o.join(", ");
        ws_allow_origin: Vec<String> = "ws_allow_origin", "*", List, live,
            "origins whose pages may open WebSocket streams (`*`: any)",
            origins, |o: &Vec<String>| o.join(", ");
        allowed_hosts: Vec<String> = "http_allowed_hosts", "none", List, live,
            "host names answered besides localhost, the machine's name and IP addresses",
            hosts, |h: &Vec<String>| none_or_list(h);
        api_token_file: Option<PathBuf> = "api_token_file", "off", Path, live,
            "file holding one admin token that POST, PUT and DELETE may carry (re-read on SIGHUP)",
            optional_path, show_path;
        api_tokens_file: Option<PathBuf> = "api_tokens_file", "off", Path, live,
            "file of tokens with roles, `NAME ROLE SHA256` a line (re-read on SIGHUP)",
            optional_path, show_path;
        audit_retention: Duration = "audit_retention", "90d", Duration, live,
            "how long the audit log keeps each change (GET /api/audit)",
            |v| at_least(parse_duration(v)?, 60_000), |d: &Duration| fmt_duration(*d);
        api_read_requires_token: bool = "api_read_requires_token", "off", Text, live,
            "`on`: reads need a token too (role read or above); the dashboard, /api/access and /health stay open",
            |v| one_of(v, &ON_OFF), |b: &bool| name_of(b, &ON_OFF);
        tls_cert_file: Option<PathBuf> = "tls_cert_file", "off", Path, live,
            "PEM certificate chain: serve HTTPS and wss:// (with tls_key_file)",
            optional_path, show_path;
        tls_key_file: Option<PathBuf> = "tls_key_file", "off", Path, live,
            "PEM private key of tls_cert_file",
            optional_path, show_path;
    }
    derived {
        /// Read from `api_tokens_file` and `api_token_file` (an `admin`)
        /// when the configuration loads.
        tokens: Tokens,
        /// Read from `tls_cert_file` and `tls_key_file`.
        tls: Option<Tls>,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_port_reads_as_go_reads_it() {
        let mut c = super::super::defaults();
        let read = |v: &str, c: &Config| http_port(v, c).unwrap();
        assert_eq!(read(":9090", &c), "0.0.0.0:9090");
        assert_eq!(read("127.0.0.2:9091", &c), "127.0.0.2:9091");
        c.http.addr = Some("127.0.0.2:9091".parse().unwrap());
        assert_eq!(read("9092", &c), "127.0.0.2:9092", "keeps the host");
        assert_eq!(read("", &c), "off");
        assert!(http_port(":http", &c).is_err());
    }
}
