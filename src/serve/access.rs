//! Who may do what over HTTP.
//!
//! Every request, reads too, must name the daemon in its `Host`:
//! localhost, the machine's name, an IP address, or one of
//! `http_allowed_hosts`; anything else is a DNS-rebinding page and is
//! answered 421. Changes (any method but `GET`, `HEAD` and `OPTIONS`) are
//! then refused 403 when they carry an `Origin` not listed by name in
//! `cors_allow_origin` (a page on another site, or a `file://` page,
//! whose `Origin` is `null`).
//!
//! Then who is asking. A bearer token is looked up among the tokens
//! (`api_tokens_file`, and `api_token_file`'s as an `admin`): a token not
//! among them is refused 403, on reads too. With no tokens configured a
//! loopback peer may do everything, as `loopback`, and nobody else may
//! change anything. With tokens, a change needs one (401 without), and
//! reads need one too when `api_read_requires_token` is on (the dashboard's
//! files and `/health` stay open, so the page can load and ask for it).
//! Which role each change needs is the route's to say
//! ([`super::routes`]). Pure: a request and a peer in, a verdict out.

use super::head::{Request, Response};
use crate::config::{Config, Role};
use crate::stats::Counter;
use std::net::IpAddr;
use std::sync::Arc;

/// Who sent a request, as the access check found: a token's name and
/// role, `loopback` (an admin while no token is configured), or
/// `anonymous` with no role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Who {
    pub name: Arc<str>,
    pub role: Option<Role>,
}

impl Default for Who {
    fn default() -> Who {
        Who {
            name: "anonymous".into(),
            role: None,
        }
    }
}

impl Who {
    pub fn loopback() -> Who {
        Who {
            name: "loopback".into(),
            role: Some(Role::Admin),
        }
    }

    /// Whether it holds `role` or one above it.
    pub fn may(&self, role: Role) -> bool {
        self.role.is_some_and(|r| r >= role)
    }

    /// The 403 for a change that needs `role`, naming it.
    pub fn lacks(&self, role: Role, what: &str) -> Response {
        let held = match self.role {
            Some(r) => format!("token {} holds role {r}", self.name),
            None => format!("{} holds no role", self.name),
        };
        Response::error(
            403,
            "forbidden_role",
            &format!("{what} needs role {role} or above; {held}"),
        )
    }
}

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `Host` names something else (421).
    Host,
    /// A change from a page whose origin is not listed (403).
    Origin,
    /// A change without the token (401).
    NoToken,
    /// A change with a wrong token (403).
    BadToken,
    /// A change from a non-loopback peer with no token configured (403).
    Peer,
    /// A read without a token while `api_read_requires_token` is on (401).
    ReadToken,
}

impl Refusal {
    pub fn counter(self) -> Counter {
        match self {
            Refusal::Host => Counter::HttpRefusedHost,
            Refusal::Origin => Counter::HttpRefusedOrigin,
            Refusal::NoToken | Refusal::BadToken | Refusal::ReadToken => Counter::HttpRefusedToken,
            Refusal::Peer => Counter::HttpRefusedPeer,
        }
    }

    pub fn response(self) -> Response {
        match self {
            Refusal::Host => Response::error(
                421,
                "misdirected_request",
                "this daemon does not answer to that Host (add it to http_allowed_hosts)",
            ),
            Refusal::Origin => Response::error(
                403,
                "forbidden_origin",
                "changes are not taken from pages on origins not listed in cors_allow_origin",
            ),
            Refusal::NoToken => Response::error(
                401,
                "unauthorized",
                "changes need Authorization: Bearer TOKEN",
            )
            .with_header("WWW-Authenticate", "Bearer realm=\"muster\""),
            Refusal::ReadToken => Response::error(
                401,
                "unauthorized",
                "reads need Authorization: Bearer TOKEN (api_read_requires_token is on)",
            )
            .with_header("WWW-Authenticate", "Bearer realm=\"muster\""),
            Refusal::BadToken => Response::error(403, "forbidden", "wrong token"),
            Refusal::Peer => Response::error(
                403,
                "forbidden",
                "changes are taken from loopback only unless api_tokens_file is set",
            ),
        }
    }
}

/// The names this daemon answers to besides IP addresses and the
/// configured ones: `localhost` and the machine's host name.
pub struct Names(Vec<String>);

impl Names {
    pub fn of_this_machine() -> Names {
        let mut names = vec!["localhost".to_string()];
        if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
            let h = h.trim().to_ascii_lowercase();
            if !h.is_empty() {
                if let Some((short, _)) = h.split_once('.') {
                    names.push(short.to_string());
                }
                names.push(h);
            }
        }
        Names(names)
    }

    #[cfg(test)]
    pub fn of(names: &[&str]) -> Names {
        Names(names.iter().map(|s| s.to_string()).collect())
    }
}

/// The host part of a `Host` value, without port, brackets or final dot.
fn host_part(host: &str) -> &str {
    let h = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    h.trim_end_matches('.')
}

fn host_ok(req: &Request, cfg: &Config, names: &Names) -> bool {
    let Some(host) = req.host.as_deref() else {
        // Browsers always send Host, so a request without one is not a
        // rebinding page but a tool (`nc`, an HTTP/1.0 client).
        return true;
    };
    let h = host_part(host);
    h.parse::<IpAddr>().is_ok()
        || names.0.iter().any(|n| n.eq_ignore_ascii_case(h))
        || cfg
            .http
            .allowed_hosts
            .iter()
            .any(|n| n.eq_ignore_ascii_case(h))
}

/// Whether `origin` is listed by name (not only through `*`).
pub fn listed(list: &[String], origin: Option<&str>) -> bool {
    origin.is_some_and(|o| list.iter().any(|l| l != "*" && l.eq_ignore_ascii_case(o)))
}

/// The `Access-Control-Allow-Origin` value for a response: `*` when reads
/// are open to any page, the request's origin when it is listed, else none.
pub fn allow_origin<'a>(cfg: &'a Config, origin: Option<&'a str>) -> &'a str {
    if cfg.http.cors_allow_origin.iter().any(|o| o == "*") {
        "*"
    } else if listed(&cfg.http.cors_allow_origin, origin) {
        origin.unwrap_or("")
    } else {
        ""
    }
}

/// Whether the page that sent a request is this daemon's own (the
/// dashboard): its `Origin` is the `Host` it asked, which the Host check
/// has already found to name this daemon, so a rebinding page cannot pass.
/// The token or loopback rule still applies after.
fn same_origin(req: &Request) -> bool {
    let (Some(origin), Some(host)) = (req.origin.as_deref(), req.host.as_deref()) else {
        return false;
    };
    origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .is_some_and(|o| o.eq_ignore_ascii_case(host))
}

/// The bearer credential of `Authorization`, if it is one.
fn bearer(req: &Request) -> Option<&str> {
    let (scheme, cred) = req.authorization.as_deref()?.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| cred.trim())
}

/// Who sent it, by its token or its address.
fn who(token: Option<&str>, peer: IpAddr, cfg: &Config) -> Result<Who, Refusal> {
    let tokens = &cfg.http.tokens;
    if tokens.is_empty() {
        return Ok(if peer.to_canonical().is_loopback() {
            Who::loopback()
        } else {
            Who::default()
        });
    }
    match token {
        None => Ok(Who::default()),
        Some(t) => match tokens.find(t.as_bytes()) {
            Some((name, role)) => Ok(Who {
                name: name.into(),
                role: Some(role),
            }),
            None => Err(Refusal::BadToken),
        },
    }
}

/// Reads open to all even when `api_read_requires_token` is on: the
/// dashboard's own files, so that it can load and ask for a token,
/// `/api/access`, which tells it that one is needed, and `/health`, for
/// load balancers and probes.
fn always_open(path: &str) -> bool {
    path == "/health" || path == "/api/access" || super::dashboard::file(path).is_some()
}

/// The verdict on a plain HTTP request: who sent it, or why not.
pub fn check(req: &Request, peer: IpAddr, cfg: &Config, names: &Names) -> Result<Who, Refusal> {
    if !host_ok(req, cfg, names) {
        return Err(Refusal::Host);
    }
    if !req.method.is_change() {
        let who = who(bearer(req), peer, cfg)?;
        if cfg.http.api_read_requires_token
            && who.role.is_none()
            && !always_open(&req.path)
            && req.method != super::head::Method::Options
        {
            return Err(Refusal::ReadToken);
        }
        return Ok(who);
    }
    if req.origin.is_some()
        && !listed(&cfg.http.cors_allow_origin, req.origin.as_deref())
        && !same_origin(req)
    {
        return Err(Refusal::Origin);
    }
    let who = who(bearer(req), peer, cfg)?;
    match who.role {
        Some(_) => Ok(who),
        None if cfg.http.tokens.is_empty() => Err(Refusal::Peer),
        None => Err(Refusal::NoToken),
    }
}

/// The verdict on a WebSocket upgrade: streams are reads, so the `Host`,
/// the page's origin when `ws_allow_origin` lists origins, and a token
/// when `api_read_requires_token` is on. A browser cannot set
/// `Authorization` on a WebSocket, so the token may also come as
/// `access_token` in the query (RFC 6750 §2.3).
pub fn check_ws(req: &Request, peer: IpAddr, cfg: &Config, names: &Names) -> Result<Who, Refusal> {
    if !host_ok(req, cfg, names) {
        return Err(Refusal::Host);
    }
    let any = cfg.http.ws_allow_origin.iter().any(|o| o == "*");
    if !any && req.origin.is_some() && !listed(&cfg.http.ws_allow_origin, req.origin.as_deref()) {
        return Err(Refusal::Origin);
    }
    let query = super::head::query_param(&req.query, "access_token");
    let who = who(bearer(req).or(query.as_deref()), peer, cfg)?;
    if cfg.http.api_read_requires_token && who.role.is_none() {
        return Err(Refusal::ReadToken);
    }
    Ok(who)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{self, Secret, Tokens};
    use crate::serve::head::parse;

    fn req(text: &str) -> Request {
        parse(text.as_bytes()).unwrap().unwrap().0
    }

    const LOOP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    const FAR: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    fn verdict(cfg: &Config, peer: IpAddr, text: &str) -> Result<(), Refusal> {
        check(&req(text), peer, cfg, &Names::of(&["localhost", "box"])).map(|_| ())
    }

    #[test]
    fn host_must_name_the_daemon() {
        let mut cfg = config::defaults();
        let get = |host: &str| format!("GET /health HTTP/1.1\r\nHost: {host}\r\n\r\n");
        for ok in [
            "localhost:8080",
            "127.0.0.1:8080",
            "[::1]:8080",
            "box",
            "BOX.",
            "10.1.2.3",
        ] {
            assert_eq!(verdict(&cfg, FAR, &get(ok)), Ok(()), "{ok}");
        }
        for bad in [
            "rebind.evil.example",
            "rebind.evil.example:8080",
            "localhost.evil",
        ] {
            assert_eq!(verdict(&cfg, LOOP, &get(bad)), Err(Refusal::Host), "{bad}");
        }
        cfg.http.allowed_hosts = vec!["muster.internal".into()];
        assert_eq!(verdict(&cfg, LOOP, &get("muster.internal:80")), Ok(()));
        assert_eq!(verdict(&cfg, LOOP, "GET /health HTTP/1.1\r\n\r\n"), Ok(()));
    }

    #[test]
    fn changes_need_origin_then_token_or_loopback() {
        let mut cfg = config::defaults();
        let del = |extra: &str| {
            format!("DELETE /api/workers/w1 HTTP/1.1\r\nHost: localhost\r\n{extra}\r\n")
        };
        assert_eq!(verdict(&cfg, LOOP, &del("")), Ok(()));
        assert_eq!(verdict(&cfg, FAR, &del("")), Err(Refusal::Peer));
        let foreign = del("Origin: http://localhost:9999\r\n");
        assert_eq!(verdict(&cfg, LOOP, &foreign), Err(Refusal::Origin));
        assert_eq!(
            verdict(&cfg, LOOP, &del("Origin: null\r\n")),
            Err(Refusal::Origin)
        );
        // The daemon's own page (the dashboard): Origin is the Host asked.
        let own = |origin: &str, host: &str| {
            format!("DELETE /api/workers/w1 HTTP/1.1\r\nHost: {host}\r\nOrigin: {origin}\r\n\r\n")
        };
        let same = own("http://127.0.0.1:8080", "127.0.0.1:8080");
        assert_eq!(verdict(&cfg, LOOP, &same), Ok(()));
        assert_eq!(
            verdict(&cfg, FAR, &same),
            Err(Refusal::Peer),
            "then loopback or token"
        );
        for (origin, host) in [
            ("http://127.0.0.1:8081", "127.0.0.1:8080"),
            ("http://rebind.evil.example:8080", "127.0.0.1:8080"),
        ] {
            assert_eq!(
                verdict(&cfg, LOOP, &own(origin, host)),
                Err(Refusal::Origin)
            );
        }
        assert_eq!(
            verdict(
                &cfg,
                LOOP,
                &own(
                    "http://rebind.evil.example:8080",
                    "rebind.evil.example:8080"
                )
            ),
            Err(Refusal::Host),
            "a rebinding page is its own origin, and fails the Host check"
        );
        // Reads stay open to any page.
        let read = "GET /health HTTP/1.1\r\nHost: localhost\r\nOrigin: null\r\n\r\n";
        assert_eq!(verdict(&cfg, FAR, read), Ok(()));
        cfg.http.cors_allow_origin = vec!["*".into(), "http://localhost:9999".into()];
        assert_eq!(verdict(&cfg, LOOP, &foreign), Ok(()));

        cfg.http.tokens = Tokens::default().with_admin(&Secret::new("t0k")).unwrap();
        assert_eq!(verdict(&cfg, LOOP, &del("")), Err(Refusal::NoToken));
        let with = |t: &str| del(&format!("Authorization: Bearer {t}\r\n"));
        assert_eq!(verdict(&cfg, FAR, &with("nope")), Err(Refusal::BadToken));
        assert_eq!(verdict(&cfg, FAR, &with("t0k")), Ok(()));
        let basic = del("Authorization: Basic dDBr\r\n");
        assert_eq!(verdict(&cfg, FAR, &basic), Err(Refusal::NoToken));
        // The origin check comes first, even with the right token.
        let both = del("Origin: http://evil.example\r\nAuthorization: Bearer t0k\r\n");
        assert_eq!(verdict(&cfg, FAR, &both), Err(Refusal::Origin));
        let r = Refusal::NoToken.response();
        assert_eq!(r.status, 401);
        assert!(r.headers.iter().any(|(k, _)| *k == "WWW-Authenticate"));
    }

    #[test]
    fn cors_header_and_streams() {
        let mut cfg = config::defaults();
        assert_eq!(allow_origin(&cfg, Some("http://x")), "*");
        cfg.http.cors_allow_origin = vec!["https://dash.example".into()];
        assert_eq!(
            allow_origin(&cfg, Some("https://dash.example")),
            "https://dash.example"
        );
        assert_eq!(allow_origin(&cfg, Some("http://x")), "");
        let names = Names::of(&["localhost"]);
        let ws = req("GET /ws/telemetry HTTP/1.1\r\nHost: localhost\r\nOrigin: http://x\r\n\r\n");
        assert_eq!(check_ws(&ws, LOOP, &cfg, &names).map(|_| ()), Ok(()));
        cfg.http.ws_allow_origin = vec!["https://dash.example".into()];
        assert_eq!(
            check_ws(&ws, LOOP, &cfg, &names).map(|_| ()),
            Err(Refusal::Origin)
        );
        let tool = req("GET /ws/telemetry HTTP/1.1\r\nHost: localhost\r\n\r\n");
        assert_eq!(check_ws(&tool, LOOP, &cfg, &names).map(|_| ()), Ok(()));
    }
}
