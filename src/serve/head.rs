//! HTTP/1.1 request heads in, response bytes out (RFC 9112).
//!
//! Pure: [`parse`] looks at the bytes buffered so far and says "need more",
//! "here is a request whose head is N bytes", or why the head is refused
//! (with the status to answer). [`write_response`] appends a response to an
//! output buffer. No sockets, no clocks, no routing.
//!
//! Limits: a head of at most [`MAX_HEAD`] bytes and [`MAX_HEADERS`] fields
//! (431 past either), a body of at most [`MAX_BODY`] (413). Request bodies
//! are framed by Content-Length only; `Transfer-Encoding` is answered 411.

use std::borrow::Cow;
use std::sync::Arc;

pub const MAX_HEAD: usize = 16 * 1024;
pub const MAX_HEADERS: usize = 64;
pub const MAX_BODY: usize = 1024 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Options,
    Other,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
            Method::Other => "OTHER",
        }
    }

    /// Whether a request with this method changes something.
    pub fn is_change(self) -> bool {
        !matches!(self, Method::Get | Method::Head | Method::Options)
    }

    fn from(s: &str) -> Method {
        match s {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "OPTIONS" => Method::Options,
            _ => Method::Other,
        }
    }
}

/// The parts of a request head the daemon acts on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    /// The path without the query, still percent-encoded.
    pub path: String,
    /// The query without `?`, still percent-encoded; empty when absent.
    pub query: String,
    /// Minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
    pub keep_alive: bool,
    pub content_length: usize,
    /// `Upgrade` and the WebSocket handshake fields (RFC 6455 §4.2.1).
    pub upgrade: Option<String>,
    pub connection_upgrade: bool,
    pub ws_key: Option<String>,
    pub ws_version: Option<String>,
    /// `Accept`, for answers with more than one form (task logs).
    pub accept: Option<String>,
    /// `Accept-Encoding` names gzip (with a q above 0): `/metrics` may be
    /// sent compressed.
    pub gzip: bool,
    /// `Host`, `Origin` and `Authorization`, for the access checks.
    pub host: Option<String>,
    pub origin: Option<String>,
    pub authorization: Option<String>,
    /// W3C Trace Context of a task submission: `traceparent` (a second
    /// one makes it unreadable, as the spec says), and every `tracestate`
    /// line joined with commas.
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
    /// `Idempotency-Key` of a task submission (a second one makes it
    /// empty, which no key may be).
    pub idempotency_key: Option<String>,
    /// Who sent it (set by the connection, not read from the head).
    pub peer: Option<std::net::IpAddr>,
    /// Whose token it carried, as the access check found.
    pub who: super::access::Who,
}

/// Why a head is refused; each maps to the status it is answered with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadError {
    /// Not HTTP/1.x, or malformed (400).
    Malformed,
    /// Head larger than [`MAX_HEAD`] (431).
    HeadTooLarge,
    /// More than [`MAX_HEADERS`] fields (431).
    TooManyHeaders,
    /// `Transfer-Encoding` on a request (411: send Content-Length).
    LengthRequired,
    /// Body above [`MAX_BODY`] (413).
    BodyTooLarge,
}

impl HeadError {
    pub fn status(self) -> u16 {
        match self {
            HeadError::Malformed => 400,
            HeadError::HeadTooLarge | HeadError::TooManyHeaders => 431,
            HeadError::LengthRequired => 411,
            HeadError::BodyTooLarge => 413,
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            HeadError::Malformed => "malformed HTTP request",
            HeadError::HeadTooLarge => "request head larger than 16 KiB",
            HeadError::TooManyHeaders => "more than 64 header fields",
            HeadError::LengthRequired => "send bodies with Content-Length, not chunked",
            HeadError::BodyTooLarge => "request body larger than 1 MiB",
        }
    }
}

/// Parse the head at the start of `buf`: `Ok(None)` until it is complete,
/// then the request and the head's length in bytes.
pub fn parse(buf: &[u8]) -> Result<Option<(Request, usize)>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n <= MAX_HEAD => n,
        Ok(httparse::Status::Complete(_)) => return Err(HeadError::HeadTooLarge),
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            return Err(HeadError::HeadTooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyHeaders),
        Err(_) => return Err(HeadError::Malformed),
    };
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(HeadError::Malformed);
    };
    if !target.starts_with('/') {
        return Err(HeadError::Malformed);
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut r = Request {
        method: Method::from(method),
        path: path.to_string(),
        query: query.to_string(),
        minor,
        keep_alive: minor >= 1,
        content_length: 0,
        upgrade: None,
        connection_upgrade: false,
        ws_key: None,
        ws_version: None,
        accept: None,
        gzip: false,
        host: None,
        origin: None,
        authorization: None,
        traceparent: None,
        idempotency_key: None,
        tracestate: None,
        peer: None,
        who: Default::default(),
    };
    let mut length: Option<usize> = None;
    for h in req.headers.iter() {
        let value = std::str::from_utf8(h.value)
            .map_err(|_| HeadError::Malformed)?
            .trim();
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            // RFC 9110 §8.6: 1*DIGIT, so no sign (`+5` is refused as
            // nginx refuses it); RFC 9112 §6.3: differing lengths are
            // unrecoverable.
            if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                return Err(HeadError::Malformed);
            }
            let n: usize = value.parse().map_err(|_| HeadError::Malformed)?;
            if length.is_some_and(|l| l != n) {
                return Err(HeadError::Malformed);
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(HeadError::LengthRequired);
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    r.keep_alive = false;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    r.keep_alive = true;
                } else if token.eq_ignore_ascii_case("upgrade") {
                    r.connection_upgrade = true;
                }
            }
        } else if name.eq_ignore_ascii_case("upgrade") {
            r.upgrade = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            r.ws_key = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            r.ws_version = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("host") {
            // RFC 9112 §3.2: more than one Host is a bad request.
            if r.host.replace(value.to_string()).is_some() {
                return Err(HeadError::Malformed);
            }
        } else if name.eq_ignore_ascii_case("origin") {
            if r.origin.replace(value.to_string()).is_some() {
                return Err(HeadError::Malformed);
            }
        } else if name.eq_ignore_ascii_case("accept") {
            r.accept = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("accept-encoding") {
            r.gzip |= takes_gzip(value);
        } else if name.eq_ignore_ascii_case("authorization") {
            r.authorization = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("traceparent") {
            let twice = r.traceparent.is_some();
            r.traceparent = Some(if twice {
                String::new()
            } else {
                value.to_string()
            });
        } else if name.eq_ignore_ascii_case("idempotency-key") {
            let twice = r.idempotency_key.is_some();
            r.idempotency_key = Some(if twice {
                String::new()
            } else {
                value.to_string()
            });
        } else if name.eq_ignore_ascii_case("tracestate") {
            match &mut r.tracestate {
                Some(s) => {
                    s.push(',');
                    s.push_str(value);
                }
                None => r.tracestate = Some(value.to_string()),
            }
        }
    }
    r.content_length = length.unwrap_or(0);
    if r.content_length > MAX_BODY {
        return Err(HeadError::BodyTooLarge);
    }
    Ok(Some((r, len)))
}

/// Decode `%XX` escapes; `None` when an escape is broken or the result is
/// not UTF-8.
pub fn percent_decode(s: &str) -> Option<Cow<'_, str>> {
    if !s.contains('%') {
        return Some(Cow::Borrowed(s));
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

/// The first value of `key` in a query string, decoded (`+` is a space).
pub fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then(|| percent_decode(&v.replace('+', " ")).map(|v| v.into_owned()))?
    })
}

/// A response body: bytes of its own, or bytes shared with a cache (written
/// out from the shared copy, never copied per response).
#[derive(Clone, Debug, PartialEq)]
pub enum Body {
    Owned(Vec<u8>),
    Shared(Arc<[u8]>),
}

impl Default for Body {
    fn default() -> Body {
        Body::Owned(Vec::new())
    }
}

impl std::ops::Deref for Body {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Body::Owned(v) => v,
            Body::Shared(a) => a,
        }
    }
}

impl From<Vec<u8>> for Body {
    fn from(v: Vec<u8>) -> Body {
        Body::Owned(v)
    }
}

impl From<Arc<[u8]>> for Body {
    fn from(a: Arc<[u8]>) -> Body {
        Body::Shared(a)
    }
}

/// A response to write. `headers` are extra fields beyond the ones every
/// response carries (Content-Type, Content-Length, Connection, CORS).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Body,
    /// Close the connection after this response whatever the request said.
    pub close: bool,
}

impl Response {
    pub fn json(status: u16, body: impl Into<Body>) -> Response {
        Response {
            status,
            content_type: "application/json",
            body: body.into(),
            ..Response::default()
        }
    }

    /// The error shape of the whole API: `{"error": CODE, "message": TEXT}`.
    pub fn error(status: u16, code: &str, message: &str) -> Response {
        let body = serde_json::json!({ "error": code, "message": message });
        Response::json(status, body.to_string().into_bytes())
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }
}

/// Whether an `Accept-Encoding` value (RFC 9110 §12.5.3) takes gzip:
/// `gzip` or `x-gzip` listed with no `q`, or a `q` above 0.
pub fn takes_gzip(value: &str) -> bool {
    value.split(',').any(|item| {
        let mut parts = item.split(';').map(str::trim);
        let coding = parts.next().unwrap_or("");
        if !(coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip")) {
            return false;
        }
        parts
            .filter_map(|p| p.strip_prefix("q=").or_else(|| p.strip_prefix("Q=")))
            .all(|q| q.trim().parse::<f64>().is_ok_and(|q| q > 0.0))
    })
}

pub fn reason(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        207 => "Multi-Status",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        403 => "Forbidden",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        421 => "Misdirected Request",
        413 => "Content Too Large",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// How much of a response goes out: all of it, or its head only (the
/// answer to `HEAD`, RFC 9110 §9.3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Whole,
    HeadOnly,
}

/// What the connection does after a response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Then {
    KeepAlive,
    Close,
}

impl Then {
    pub fn keep_alive(keep: bool) -> Then {
        if keep { Then::KeepAlive } else { Then::Close }
    }
}

/// Append `resp` to `out`. 204 carries no Content-Length (RFC 9110 §8.6).
pub fn write_response(out: &mut Vec<u8>, resp: &Response, part: Part, then: Then, cors: &str) {
    if write_head(out, resp, then, cors) && part == Part::Whole {
        out.extend_from_slice(&resp.body);
    }
}

/// The status line and header fields of `resp`; returns whether a body
/// follows them (a HEAD request still sends none).
pub fn write_head(out: &mut Vec<u8>, resp: &Response, then: Then, cors: &str) -> bool {
    use std::io::Write;
    let _ = write!(out, "HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status));
    let bodiless = resp.status == 204 || resp.status < 200;
    if !bodiless {
        if !resp.content_type.is_empty() {
            let _ = write!(out, "Content-Type: {}\r\n", resp.content_type);
        }
        let _ = write!(out, "Content-Length: {}\r\n", resp.body.len());
    }
    if !cors.is_empty() {
        let _ = write!(out, "Access-Control-Allow-Origin: {cors}\r\n");
        if cors != "*" {
            // The answer depends on who asks: caches must keep them apart.
            let _ = write!(out, "Vary: Origin\r\n");
        }
    }
    for (name, value) in &resp.headers {
        let _ = write!(out, "{name}: {value}\r\n");
    }
    // A 101 names its own `Connection: Upgrade` among its headers.
    if resp.status != 101 {
        let conn = if then == Then::KeepAlive && !resp.close {
            "keep-alive"
        } else {
            "close"
        };
        let _ = write!(out, "Connection: {conn}\r\n");
    }
    out.extend_from_slice(b"\r\n");
    !bodiless
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_when_listed_with_a_q_above_zero() {
        for (v, want) in [
            ("gzip", true),
            ("gzip, deflate, br", true),
            ("deflate, GZIP;q=0.5", true),
            ("x-gzip", true),
            ("gzip;q=0", false),
            ("gzip; q=0.0", false),
            ("identity", false),
            ("*", false),
            ("gzipped", false),
            ("", false),
        ] {
            assert_eq!(takes_gzip(v), want, "{v:?}");
        }
    }

    const VALID: &[&str] = &[
        "GET /health HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /telemetry/w1?x=1 HTTP/1.0\r\n\r\n",
        "POST /api/tasks HTTP/1.1\r\nContent-Length: 5\r\nConnection: close\r\n\r\n",
        "GET /ws/telemetry HTTP/1.1\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    ];

    /// A head arrives in pieces: no prefix of it is a request, and the
    /// whole of it, with any part of the next request behind it (a
    /// pipelining client), is the same request and consumes only itself.
    #[test]
    fn a_head_is_complete_only_when_whole_and_consumes_only_itself() {
        for text in VALID {
            let bytes = text.as_bytes();
            let (whole, len) = parse(bytes).unwrap().unwrap();
            assert_eq!(len, bytes.len());
            for cut in 0..bytes.len() {
                assert_eq!(parse(&bytes[..cut]), Ok(None), "{text:?} cut at {cut}");
            }
            let next = VALID[0].as_bytes();
            for cut in 0..=next.len() {
                let mut buf = bytes.to_vec();
                buf.extend_from_slice(&next[..cut]);
                let (again, used) = parse(&buf).unwrap().unwrap();
                assert_eq!((&again, used), (&whole, len), "{text:?} then {cut} bytes");
            }
        }
    }

    #[test]
    fn fields() {
        let (r, _) = parse(VALID[1].as_bytes()).unwrap().unwrap();
        assert_eq!(
            (r.method, r.path.as_str(), r.query.as_str()),
            (Method::Get, "/telemetry/w1", "x=1")
        );
        assert!(!r.keep_alive, "1.0 closes by default");
        let (r, _) = parse(VALID[2].as_bytes()).unwrap().unwrap();
        assert_eq!((r.content_length, r.keep_alive), (5, false));
        let (r, _) = parse(VALID[3].as_bytes()).unwrap().unwrap();
        assert!(r.connection_upgrade && r.keep_alive);
        assert_eq!(r.upgrade.as_deref(), Some("websocket"));
        assert_eq!(r.ws_version.as_deref(), Some("13"));
    }

    #[test]
    fn refusals() {
        let many = format!(
            "GET / HTTP/1.1\r\n{}\r\n",
            (0..65).map(|i| format!("X-{i}: v\r\n")).collect::<String>()
        );
        let huge = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        let table: Vec<(Vec<u8>, HeadError)> = vec![
            (
                b"\x16\x03\x01garbage\r\n\r\n".to_vec(),
                HeadError::Malformed,
            ),
            (b"GET / HTTP/2.0\r\n\r\n".to_vec(), HeadError::Malformed),
            (
                b"GET nopath HTTP/1.1\r\n\r\n".to_vec(),
                HeadError::Malformed,
            ),
            (
                b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n".to_vec(),
                HeadError::Malformed,
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\nhello".to_vec(),
                HeadError::Malformed,
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: -0\r\n\r\n".to_vec(),
                HeadError::Malformed,
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n".to_vec(),
                HeadError::Malformed,
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(),
                HeadError::LengthRequired,
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 1048577\r\n\r\n".to_vec(),
                HeadError::BodyTooLarge,
            ),
            (many.into_bytes(), HeadError::TooManyHeaders),
            (huge.into_bytes(), HeadError::HeadTooLarge),
            (vec![b'a'; MAX_HEAD + 1], HeadError::HeadTooLarge),
        ];
        for (input, want) in table {
            assert_eq!(
                parse(&input).err(),
                Some(want),
                "{:?}",
                String::from_utf8_lossy(&input[..40.min(input.len())])
            );
        }
        // An unfinished head past the limit is refused without waiting for more.
        let partial = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(MAX_HEAD));
        assert_eq!(parse(partial.as_bytes()), Err(HeadError::HeadTooLarge));
    }

    #[test]
    fn pipelined_heads_parse_one_at_a_time() {
        let two = b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n";
        let (a, n) = parse(two).unwrap().unwrap();
        let (b, _) = parse(&two[n..]).unwrap().unwrap();
        assert_eq!((a.path.as_str(), b.path.as_str()), ("/a", "/b"));
    }

    #[test]
    fn percent_and_query() {
        assert_eq!(percent_decode("w%3A1").as_deref(), Some("w:1"));
        assert_eq!(percent_decode("plain").as_deref(), Some("plain"));
        assert_eq!(percent_decode("bad%zz"), None);
        assert_eq!(percent_decode("cut%4"), None);
        assert_eq!(percent_decode("%ff"), None);
        assert_eq!(
            query_param("status=working&x=1", "status").as_deref(),
            Some("working")
        );
        assert_eq!(
            query_param("label=pool%3Ascan", "label").as_deref(),
            Some("pool:scan")
        );
        assert_eq!(query_param("a=1", "status"), None);
    }

    #[test]
    fn responses() {
        let mut out = Vec::new();
        let r = Response::json(200, b"{}".to_vec()).with_header("Allow", "GET");
        write_response(&mut out, &r, Part::Whole, Then::KeepAlive, "*");
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(text.contains("Content-Length: 2\r\n"));
        assert!(text.contains("Access-Control-Allow-Origin: *\r\n"));
        assert!(text.contains("Allow: GET\r\n"));
        assert!(text.contains("Connection: keep-alive\r\n"));
        assert!(text.ends_with("\r\n\r\n{}"));

        let mut out = Vec::new();
        write_response(&mut out, &r, Part::HeadOnly, Then::Close, "");
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("Content-Length: 2\r\n") && text.ends_with("\r\n\r\n"),
            "HEAD keeps the length, drops the body"
        );
        assert!(text.contains("Connection: close"));

        let mut out = Vec::new();
        write_response(
            &mut out,
            &Response {
                status: 204,
                ..Response::default()
            },
            Part::Whole,
            Then::KeepAlive,
            "*",
        );
        assert!(!String::from_utf8(out).unwrap().contains("Content-Length"));
    }
}
