//! A minimal HTTP/1.1 client for `muster`: one request per connection over
//! a std `TcpStream`, responses parsed with httparse. Enough to talk to
//! musterd on a local or private network; no TLS, no redirects, no chunked
//! bodies (musterd never sends them).

use serde_json::Value;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
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
    BadUrl(String),
    Unreachable(String, io::Error),
    Protocol(String),
    /// The daemon answered with an error status.
    Status(u16, String),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::BadUrl(u) => write!(f, "bad url {u:?}: expected http://HOST:PORT"),
            ClientError::Unreachable(u, e) => write!(f, "cannot reach musterd at {u}: {e}"),
            ClientError::Protocol(m) => write!(f, "bad response from musterd: {m}"),
            ClientError::Status(s, m) => write!(f, "musterd answered {s}: {m}"),
        }
    }
}

impl std::error::Error for ClientError {}

/// `http://host:port[/]` → the socket address.
pub fn parse_url(url: &str) -> Result<SocketAddr, ClientError> {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let hostport = rest.split('/').next().unwrap_or("");
    let hostport = if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:80")
    };
    hostport
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| ClientError::BadUrl(url.to_string()))
}

/// GET `path` and return status and body.
pub fn get(addr: SocketAddr, path: &str) -> Result<(u16, Vec<u8>), ClientError> {
    request(addr, "GET", path, None)
}

/// One request; `token` goes out as `Authorization: Bearer`.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> Result<(u16, Vec<u8>), ClientError> {
    request_body(addr, method, path, token, &[])
}

/// GET asking for JSON where an endpoint also speaks text (task logs).
pub fn get_accepting_json(addr: SocketAddr, path: &str) -> Result<(u16, Vec<u8>), ClientError> {
    send(addr, "GET", path, "Accept: application/json\r\n", &[])
}

/// One request with a JSON body.
pub fn request_body(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> Result<(u16, Vec<u8>), ClientError> {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    send(addr, method, path, &auth, body)
}

fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    auth: &str,
    body: &[u8],
) -> Result<(u16, Vec<u8>), ClientError> {
    let unreachable = |e| ClientError::Unreachable(addr.to_string(), e);
    let mut s = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(unreachable)?;
    s.set_read_timeout(Some(TIMEOUT)).map_err(unreachable)?;
    s.set_write_timeout(Some(TIMEOUT)).map_err(unreachable)?;
    let length = if body.is_empty() {
        String::new()
    } else {
        format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        )
    };
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nUser-Agent: muster\r\n{auth}{length}\r\n"
    );
    s.write_all(head.as_bytes()).map_err(unreachable)?;
    s.write_all(body).map_err(unreachable)?;
    let mut buf = Vec::new();
    s.take(MAX_RESPONSE)
        .read_to_end(&mut buf)
        .map_err(unreachable)?;
    parse_response(&buf)
}

/// The Content-Length of a parsed response head, if it has a valid one.
pub fn content_length(headers: &[httparse::Header]) -> Option<usize> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
}

fn parse_response(buf: &[u8]) -> Result<(u16, Vec<u8>), ClientError> {
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
pub fn get_json(addr: SocketAddr, path: &str) -> Result<Value, ClientError> {
    let (status, body) = get(addr, path)?;
    let v: Value =
        serde_json::from_slice(&body).map_err(|e| ClientError::Protocol(e.to_string()))?;
    if status >= 400 {
        let msg = v["message"].as_str().unwrap_or("error").to_string();
        return Err(ClientError::Status(status, msg));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("http://127.0.0.1:8080").unwrap(),
            "127.0.0.1:8080".parse().unwrap()
        );
        assert_eq!(parse_url("http://127.0.0.1:9/x").unwrap().port(), 9);
        assert_eq!(parse_url("127.0.0.1:7").unwrap().port(), 7);
        assert!(parse_url("http://").is_err());
    }

    #[test]
    fn responses() {
        let (s, b) = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}").unwrap();
        assert_eq!((s, b.as_slice()), (200, b"{}".as_slice()));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n{}").is_err());
        assert!(parse_response(b"garbage\r\n\r\n").is_err());
    }
}
