//! A minimal HTTP/1.1 client for `muster`: one request per connection,
//! plain or over TLS (`https://`, [`super::net`]), responses parsed with
//! httparse. No redirects, no chunked bodies (musterd never sends them).

use super::net::{self, Target};
use serde_json::Value;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::ToSocketAddrs;
use std::time::Duration;

/// Default daemon address, overridden by `--url` or `MUSTER_URL`.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";
/// Default heartbeat address, overridden by `--heartbeat-addr` or
/// `MUSTER_HEARTBEAT_ADDR`.
pub const DEFAULT_HEARTBEAT_ADDR: &str = "127.0.0.1:8090";

/// The daemon's HTTP address before flags: `MUSTER_URL` or the default.
pub fn env_url() -> String {
    std::env::var("MUSTER_URL").unwrap_or_else(|_| DEFAULT_URL.into())
}

/// The heartbeat address before flags: `MUSTER_HEARTBEAT_ADDR` or the default.
pub fn env_heartbeat_addr() -> String {
    std::env::var("MUSTER_HEARTBEAT_ADDR").unwrap_or_else(|_| DEFAULT_HEARTBEAT_ADDR.into())
}
/// Where `muster` finds the API token (for changes) and the heartbeat
/// token, when no flag names the file.
pub const TOKEN_ENV: &str = "MUSTER_TOKEN_FILE";
pub const HEARTBEAT_TOKEN_ENV: &str = "MUSTER_HEARTBEAT_TOKEN_FILE";

/// The token in `path`, read as musterd reads it.
pub fn read_token(path: Option<&std::path::Path>) -> Result<Option<String>, String> {
    path.map(|p| crate::config::secret::read_token(p).map(|t| t.reveal().to_string()))
        .transpose()
}

const TIMEOUT: Duration = Duration::from_secs(10);
/// Largest response read: a fleet of 10,000 workers is a few MB.
const MAX_RESPONSE: u64 = 256 << 20;

#[derive(Debug)]
pub enum ClientError {
    /// The URL, and what is wrong with it.
    BadUrl(String, &'static str),
    /// The host name did not resolve.
    Resolve(String, io::Error),
    Unreachable(String, io::Error),
    /// Something answered, but not as musterd does.
    NotMusterd(String, String),
    Protocol(String),
    /// The daemon answered with an error status.
    Status(u16, String),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::BadUrl(u, why) => write!(f, "bad url {u:?}: {why}"),
            ClientError::Resolve(h, e) => write!(f, "cannot resolve {h:?}: {e}"),
            ClientError::Unreachable(u, e) if timed_out(e) => write!(
                f,
                "musterd at {u} did not answer: timed out after {} s",
                TIMEOUT.as_secs()
            ),
            ClientError::Unreachable(u, e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                write!(
                    f,
                    "cannot reach musterd at {u}: connection refused (is it running, on this port?)"
                )
            }
            ClientError::Unreachable(u, e) => write!(f, "cannot reach musterd at {u}: {e}"),
            ClientError::NotMusterd(u, what) => write!(f, "{u} is not a musterd server: {what}"),
            ClientError::Protocol(m) => write!(f, "bad response from musterd: {m}"),
            ClientError::Status(s, m) => write!(f, "musterd answered {s}: {m}"),
        }
    }
}

/// A read or connect that ran out of time (a socket timeout reads as
/// `WouldBlock` on Linux).
pub fn timed_out(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    )
}

impl std::error::Error for ClientError {}

/// A heartbeat address list, `HOST:PORT[,HOST:PORT…]` (the nodes of a
/// cluster, in the order to try them) → their socket addresses.
pub fn parse_addrs(list: &str) -> Result<Vec<Target>, ClientError> {
    let out = list
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(parse_url)
        .collect::<Result<Vec<_>, _>>()?;
    if out.is_empty() {
        return Err(ClientError::BadUrl(list.to_string(), "no address"));
    }
    Ok(out)
}

/// `http://host:port[/]`, `https://host:port[/]` or `host:port` → where
/// to connect (over TLS for `https://`).
pub fn parse_url(url: &str) -> Result<Target, ClientError> {
    let bad = |why| ClientError::BadUrl(url.to_string(), why);
    let (rest, tls) = match url.strip_prefix("https://") {
        Some(r) => (r, true),
        None => (url.strip_prefix("http://").unwrap_or(url), false),
    };
    if rest.contains("://") {
        return Err(bad("expected http://HOST:PORT or https://HOST:PORT"));
    }
    let hostport = rest.split('/').next().unwrap_or("");
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && !h.ends_with(':') => (h, p),
        _ if hostport.is_empty() || hostport.contains(':') => {
            return Err(bad("expected http://HOST:PORT or https://HOST:PORT"));
        }
        _ if tls => (hostport, "443"),
        _ => (hostport, "80"),
    };
    let port: u16 = port
        .parse()
        .map_err(|_| bad("the port is not a number from 0 to 65535"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addr = (host, port)
        .to_socket_addrs()
        .map_err(|e| ClientError::Resolve(host.to_string(), e))?
        .next()
        .ok_or_else(|| {
            ClientError::Resolve(host.to_string(), io::Error::other("no address for it"))
        })?;
    Ok(Target {
        addr,
        host: host.to_string(),
        tls,
    })
}

/// GET `path` and return status and body.
pub fn get(addr: &Target, path: &str) -> Result<(u16, Vec<u8>), ClientError> {
    request(addr, "GET", path, None)
}

/// One request; `token` goes out as `Authorization: Bearer`.
pub fn request(
    addr: &Target,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> Result<(u16, Vec<u8>), ClientError> {
    request_body(addr, method, path, token, &[])
}

/// GET asking for JSON where an endpoint also speaks text (task logs).
pub fn get_accepting_json(addr: &Target, path: &str) -> Result<(u16, Vec<u8>), ClientError> {
    send(addr, "GET", path, "Accept: application/json\r\n", &[])
}

/// One request with a JSON body.
pub fn request_body(
    addr: &Target,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> Result<(u16, Vec<u8>), ClientError> {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    send(addr, method, path, &auth, body)
}

fn send(
    addr: &Target,
    method: &str,
    path: &str,
    auth: &str,
    body: &[u8],
) -> Result<(u16, Vec<u8>), ClientError> {
    let unreachable = |e| ClientError::Unreachable(addr.to_string(), e);
    let mut s = net::connect(addr, TIMEOUT).map_err(unreachable)?;
    s.tcp()
        .set_read_timeout(Some(TIMEOUT))
        .map_err(unreachable)?;
    s.tcp()
        .set_write_timeout(Some(TIMEOUT))
        .map_err(unreachable)?;
    let length = if body.is_empty() {
        String::new()
    } else {
        format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        )
    };
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nUser-Agent: muster\r\n{auth}{length}\r\n",
        addr.addr
    );
    s.write_all(head.as_bytes()).map_err(unreachable)?;
    s.write_all(body).map_err(unreachable)?;
    s.flush().map_err(unreachable)?;
    let mut buf = Vec::new();
    s.take(MAX_RESPONSE)
        .read_to_end(&mut buf)
        .map_err(unreachable)?;
    parse_response(&buf).map_err(|e| match e {
        ClientError::Protocol(m) if !buf.starts_with(b"HTTP/") => {
            ClientError::NotMusterd(addr.to_string(), format!("not an HTTP answer ({m})"))
        }
        e => e,
    })
}

/// An answer's JSON, or the API's error message (`{"error", "message"}`)
/// as [`ClientError::Status`]. A body that is not JSON did not come from
/// musterd.
pub fn answer(addr: &Target, status: u16, body: &[u8]) -> Result<Value, ClientError> {
    let v: Value = serde_json::from_slice(body).map_err(|_| {
        ClientError::NotMusterd(
            addr.to_string(),
            format!("it answered HTTP {status} with a body that is not JSON"),
        )
    })?;
    if status >= 400 {
        let msg = v["message"].as_str().unwrap_or("error").to_string();
        return Err(ClientError::Status(status, msg));
    }
    Ok(v)
}

/// The Content-Length of a parsed response head, if it has a valid one.
pub fn content_length(headers: &[httparse::Header]) -> Option<usize> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
}

/// A whole HTTP answer: its status and body.
pub fn parse_response(buf: &[u8]) -> Result<(u16, Vec<u8>), ClientError> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let n = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return Err(ClientError::Protocol("truncated head".into()));
        }
        Err(e) => return Err(ClientError::Protocol(e.to_string())),
    };
    let status = resp.code.unwrap_or(0);
    let len = content_length(resp.headers);
    let body = &buf[n..];
    let body = match len {
        Some(l) if l <= body.len() => &body[..l],
        Some(_) => return Err(ClientError::Protocol("truncated body".into())),
        None => body,
    };
    Ok((status, body.to_vec()))
}

/// GET `path` and parse JSON; an error status becomes [`ClientError::Status`]
/// with the API's `message`.
pub fn get_json(addr: &Target, path: &str) -> Result<Value, ClientError> {
    let (status, body) = get(addr, path)?;
    answer(addr, status, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let t = parse_url("http://127.0.0.1:8080").unwrap();
        assert_eq!(t.addr, "127.0.0.1:8080".parse().unwrap());
        assert!(!t.tls);
        assert_eq!(parse_url("http://127.0.0.1:9/x").unwrap().addr.port(), 9);
        assert_eq!(parse_url("127.0.0.1:7").unwrap().addr.port(), 7);
        assert_eq!(
            parse_url("http://[::1]:9").unwrap().addr,
            "[::1]:9".parse().unwrap()
        );
        let t = parse_url("localhost:5").unwrap();
        assert_eq!((t.addr.port(), t.host.as_str()), (5, "localhost"));
        let t = parse_url("https://localhost:8443/").unwrap();
        assert_eq!(
            (t.addr.port(), t.host.as_str(), t.tls),
            (8443, "localhost", true)
        );
        assert_eq!(parse_url("https://127.0.0.1").unwrap().addr.port(), 443);
        let said = |u: &str| parse_url(u).unwrap_err().to_string();
        assert_eq!(
            said("http://"),
            "bad url \"http://\": expected http://HOST:PORT or https://HOST:PORT"
        );
        assert!(said("ftp://h:1").contains("expected http://HOST:PORT"));
        assert!(said("https://").contains("expected http://HOST:PORT or https://HOST:PORT"));
        assert!(said("http://h:port").contains("the port is not a number"));
        let dns = said("http://no-such-host.invalid:8080");
        assert!(
            dns.starts_with("cannot resolve \"no-such-host.invalid\": "),
            "{dns}"
        );
    }

    #[test]
    fn errors_name_the_cause() {
        let timeout = ClientError::Unreachable("h:1".into(), io::ErrorKind::WouldBlock.into());
        assert_eq!(
            timeout.to_string(),
            "musterd at h:1 did not answer: timed out after 10 s"
        );
        let a = &Target::plain("127.0.0.1:9".parse().unwrap());
        let e = answer(a, 200, b"<html>hello</html>").unwrap_err();
        assert_eq!(
            e.to_string(),
            "127.0.0.1:9 is not a musterd server: it answered HTTP 200 with a body that is not JSON"
        );
        let e = answer(a, 409, br#"{"error":"no_pool","message":"no pool"}"#).unwrap_err();
        assert_eq!(e.to_string(), "musterd answered 409: no pool");
    }

    #[test]
    fn responses() {
        let (s, b) = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}").unwrap();
        assert_eq!((s, b.as_slice()), (200, b"{}".as_slice()));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n{}").is_err());
        assert!(parse_response(b"garbage\r\n\r\n").is_err());
    }
}
