//! The way in: which paths are streams, what a client subscribed to and
//! with which filters, and the RFC 6455 §4.2 checks of an upgrade request.
//! Pure: a request in, a subscription and a 101 response (or a refusal)
//! out. The client cap, and what a stream reads from, are the request
//! handler's.

use crate::fleet::snapshot::Snapshot;
use crate::proto::{StatusFilter, WorkerId, check_worker_id};
use crate::serve::head::{Method, Request, Response, percent_decode, query_param};
use crate::serve::views::status_filter;

/// The streams, as documented in README.md and musterd(8).
pub const ENDPOINTS: [&str; 5] = [
    "/ws/telemetry",
    "/ws/telemetry/{id}",
    "/ws/workers/telemetry",
    "/ws/tasks",
    "/ws/alerts",
];

/// What a client subscribed to.
#[derive(Clone, Debug, PartialEq)]
pub enum Stream {
    /// `/ws/telemetry`: every worker, snapshot then changes.
    All,
    /// `/ws/telemetry/{id}`: one worker, which may not exist yet.
    One(WorkerId),
    /// `/ws/workers/telemetry`: the fleet's summary every `summary_interval`.
    Summary,
    /// `/ws/tasks`: the tasks, snapshot then changes.
    Tasks,
    /// `/ws/alerts`: the alerts, again after each change.
    Alerts,
}

/// Query-string filters, common to all three streams.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Filter {
    pub status: Option<StatusFilter>,
    pub label: Option<(String, String)>,
    /// Only these telemetry fields (plus `worker_id`).
    pub fields: Option<Vec<String>>,
}

impl Filter {
    pub fn matches(&self, s: &Snapshot) -> bool {
        let status_ok = self.status.is_none_or(|st| s.has_status(st));
        let label_ok = match &self.label {
            None => true,
            Some((k, v)) => s.labels.get(k) == Some(v),
        };
        status_ok && label_ok
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Subscription {
    pub stream: Stream,
    pub filter: Filter,
}

/// Is this a WebSocket path? Then the request must be a valid upgrade.
pub fn is_ws_path(path: &str) -> bool {
    path == "/ws" || path.starts_with("/ws/")
}

/// Parse the path and query of a WebSocket request.
pub fn subscription(path: &str, query: &str) -> Result<Subscription, Response> {
    let segs: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let stream = match segs.as_slice() {
        ["ws", "telemetry"] => Stream::All,
        ["ws", "workers", "telemetry"] => Stream::Summary,
        ["ws", "tasks"] => Stream::Tasks,
        ["ws", "alerts"] => Stream::Alerts,
        ["ws", "telemetry", id] => {
            let id = percent_decode(id)
                .filter(|id| check_worker_id(id).is_ok())
                .ok_or_else(|| {
                    Response::error(
                        400,
                        "bad_worker_id",
                        "worker ids are 1-128 bytes of A-Za-z0-9._:@-",
                    )
                })?;
            Stream::One(WorkerId::from(id.as_ref()))
        }
        _ => return Err(Response::error(404, "not_found", "no such stream")),
    };
    let mut filter = Filter {
        status: status_filter(query)?,
        ..Filter::default()
    };
    if let Some(l) = query_param(query, "label") {
        let (k, v) = l
            .split_once(':')
            .ok_or_else(|| Response::error(400, "bad_label", "label filter is key:value"))?;
        filter.label = Some((k.to_string(), v.to_string()));
    }
    if let Some(f) = query_param(query, "fields") {
        filter.fields = Some(
            f.split(',')
                .map(str::trim)
                .filter(|f| !f.is_empty())
                .map(String::from)
                .collect(),
        );
    }
    Ok(Subscription { stream, filter })
}

/// Check an upgrade request (RFC 6455 §4.2.1) and build the 101 response.
pub fn accept(req: &Request) -> Result<Response, Response> {
    let bad = |msg: &str| {
        Response::error(400, "bad_upgrade", msg).with_header("Sec-WebSocket-Version", "13")
    };
    if req.upgrade.is_none() && !req.connection_upgrade {
        return Err(
            Response::error(426, "upgrade_required", "this is a WebSocket endpoint")
                .with_header("Upgrade", "websocket")
                .with_header("Sec-WebSocket-Version", "13"),
        );
    }
    if req.method != Method::Get || req.minor < 1 {
        return Err(bad("a WebSocket upgrade is an HTTP/1.1 GET"));
    }
    if !req
        .upgrade
        .as_deref()
        .is_some_and(|u| u.eq_ignore_ascii_case("websocket"))
        || !req.connection_upgrade
    {
        return Err(bad("needs Upgrade: websocket and Connection: Upgrade"));
    }
    // §4.4: an unsupported version is refused, naming the one we speak.
    if req.ws_version.as_deref() != Some("13") {
        return Err(bad("only Sec-WebSocket-Version 13 is supported"));
    }
    let key = req.ws_key.as_deref().unwrap_or("");
    // A base64-encoded 16-byte nonce is 24 characters ending in "==".
    if key.len() != 24 || !key.ends_with("==") {
        return Err(bad("missing or malformed Sec-WebSocket-Key"));
    }
    Ok(Response {
        status: 101,
        ..Response::default()
    }
    .with_header("Upgrade", "websocket")
    .with_header("Connection", "Upgrade")
    .with_header(
        "Sec-WebSocket-Accept",
        tungstenite::handshake::derive_accept_key(key.as_bytes()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::head::parse;

    fn req(text: &str) -> Request {
        parse(text.as_bytes()).unwrap().unwrap().0
    }

    const GOOD: &str = "GET /ws/telemetry HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

    #[test]
    fn upgrade_checks() {
        let ok = accept(&req(GOOD)).unwrap();
        assert_eq!(ok.status, 101);
        // RFC 6455 §1.3's worked example.
        assert!(ok.headers.contains(&(
            "Sec-WebSocket-Accept",
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".to_string()
        )));
        let v8 = GOOD.replace("Version: 13", "Version: 8");
        let e = accept(&req(&v8)).unwrap_err();
        assert_eq!(e.status, 400);
        assert!(
            e.headers
                .contains(&("Sec-WebSocket-Version", "13".to_string()))
        );
        let nokey = GOOD.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "");
        assert_eq!(accept(&req(&nokey)).unwrap_err().status, 400);
        let plain = "GET /ws/telemetry HTTP/1.1\r\n\r\n";
        assert_eq!(accept(&req(plain)).unwrap_err().status, 426);
        let post = GOOD.replace("GET", "POST");
        assert_eq!(accept(&req(&post)).unwrap_err().status, 400);
    }

    #[test]
    fn subscriptions() {
        assert_eq!(
            subscription("/ws/telemetry", "").unwrap().stream,
            Stream::All
        );
        assert_eq!(
            subscription("/ws/workers/telemetry", "").unwrap().stream,
            Stream::Summary
        );
        assert_eq!(
            subscription("/ws/telemetry/w%3A1", "").unwrap().stream,
            Stream::One("w:1".into())
        );
        assert_eq!(
            subscription("/ws/telemetry/bad%20id", "")
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(subscription("/ws/other", "").unwrap_err().status, 404);
        let s = subscription(
            "/ws/telemetry",
            "status=working&label=pool:scan&fields=cpu_usage,queue_depth",
        )
        .unwrap();
        assert_eq!(s.filter.status, StatusFilter::parse("working"));
        assert_eq!(s.filter.label, Some(("pool".into(), "scan".into())));
        assert_eq!(
            s.filter.fields,
            Some(vec!["cpu_usage".to_string(), "queue_depth".to_string()])
        );
        assert_eq!(
            subscription("/ws/telemetry", "status=bogus")
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(
            subscription("/ws/telemetry", "label=nocolon")
                .unwrap_err()
                .status,
            400
        );
    }
}
