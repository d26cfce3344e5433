//! Notifications: a thread of its own posts alerts to each Alertmanager
//! (`POST /api/v2/alerts`, an array of alerts, as Prometheus sends them)
//! and each webhook (one JSON object in Alertmanager's webhook shape).
//!
//! Per URL: an alert is posted when it fires, again every `alert_resend`
//! while it fires (an Alertmanager forgets alerts not sent again before
//! their `endsAt`, which is set to four resend intervals ahead), and once
//! more with `endsAt` when it resolves. A failed post is counted, logged at
//! a limited rate and retried with backoff (1 s doubling to 60 s) with
//! everything still due; other URLs are not held up. The client is a small
//! blocking one with timeouts; it never runs on a loop thread.

use super::{Alert, Alerts};
use crate::clock::iso_ms;
use crate::config::alerts::HttpUrl;
use crate::logging::RateLimit;
use crate::stats::Counter;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A resolved alert is told for this long (if a URL is down longer, the
/// receiver learns of it from the `endsAt` it was sent while firing).
pub const RESOLVED_NOTICE: Duration = Duration::from_secs(600);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const IO_TIMEOUT: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Alertmanager,
    Webhook,
}

/// What one URL has been told.
#[derive(Default)]
struct Told {
    /// Alert id → when it was last posted firing.
    firing: HashMap<u64, Instant>,
    /// Alert ids whose resolution was posted.
    resolved: std::collections::HashSet<u64>,
    next_try: Option<Instant>,
    backoff: Duration,
}

/// The alerts due for one URL now.
fn due<'a>(alerts: &'a [Alert], told: &Told, resend: Duration, now: Instant) -> Vec<&'a Alert> {
    alerts
        .iter()
        .filter(|a| match a.ends_at {
            Some(_) => !told.resolved.contains(&a.id),
            None => told
                .firing
                .get(&a.id)
                .is_none_or(|at| now.saturating_duration_since(*at) >= resend),
        })
        .collect()
}

/// One alert as Alertmanager's API v2 takes it.
pub fn alertmanager_alert(a: &Alert, resend: Duration, now_ms: u64, source: &str) -> Value {
    let ends = a.ends_at.unwrap_or(now_ms + 4 * resend.as_millis() as u64);
    json!({
        "labels": a.labels(),
        "annotations": {"summary": a.cond.summary, "description": a.cond.description},
        "startsAt": iso_ms(a.starts_at.unwrap_or(now_ms)),
        "endsAt": iso_ms(ends),
        "generatorURL": source,
    })
}

/// The body for `kind`.
pub fn body(kind: Kind, alerts: &[&Alert], resend: Duration, now_ms: u64, source: &str) -> Vec<u8> {
    let list: Vec<Value> = alerts
        .iter()
        .map(|a| {
            let mut v = alertmanager_alert(a, resend, now_ms, source);
            if kind == Kind::Webhook {
                v["status"] = json!(if a.ends_at.is_some() {
                    "resolved"
                } else {
                    "firing"
                });
            }
            v
        })
        .collect();
    let v = match kind {
        Kind::Alertmanager => Value::Array(list),
        Kind::Webhook => {
            let firing = alerts.iter().any(|a| a.ends_at.is_none());
            json!({
                "version": "4",
                "receiver": "musterd",
                "status": if firing { "firing" } else { "resolved" },
                "alerts": list,
            })
        }
    };
    v.to_string().into_bytes()
}

/// POST `body` as JSON; the status, or why there is none.
pub fn post(url: &HttpUrl, body: &[u8]) -> Result<u16, String> {
    let addr = url
        .authority
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", url.authority))?
        .next()
        .ok_or_else(|| format!("no address for {}", url.authority))?;
    let mut s = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: musterd/{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        url.path,
        url.authority,
        crate::VERSION,
        body.len()
    );
    s.write_all(head.as_bytes()).map_err(|e| e.to_string())?;
    s.write_all(body).map_err(|e| e.to_string())?;
    // The status line is all that is needed; read at most 64 KiB of it.
    let mut buf = Vec::new();
    let _ = s.take(64 * 1024).read_to_end(&mut buf);
    status_of(&buf)
}

/// The status of an HTTP answer (peer input: whatever the URL's server
/// sent back).
pub fn status_of(answer: &[u8]) -> Result<u16, String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(answer) {
        Ok(_) => resp.code.ok_or_else(|| "no status in the answer".into()),
        Err(e) => Err(format!("not an HTTP answer: {e}")),
    }
}

/// The notifications' thread: every second (or at once after a change),
/// post what is due to each URL.
pub fn run(alerts: Arc<Alerts>, source: String) {
    let mut told: HashMap<String, Told> = HashMap::new();
    let limit = RateLimit::new(Duration::from_secs(60));
    let mut seen_version = u64::MAX;
    let mut last_pass = Instant::now() - Duration::from_secs(1);
    while !alerts.stopped() {
        let v = alerts.version();
        let since = last_pass.elapsed();
        if v == seen_version && since < Duration::from_secs(1) {
            alerts.wait_moved(v, Duration::from_secs(1) - since);
            continue;
        }
        seen_version = v;
        last_pass = Instant::now();
        let cfg = alerts.shared.config.get();
        let targets: Vec<(Kind, &HttpUrl)> = cfg
            .alerts
            .alertmanagers
            .iter()
            .map(|u| (Kind::Alertmanager, u))
            .chain(cfg.alerts.webhooks.iter().map(|u| (Kind::Webhook, u)))
            .collect();
        if targets.is_empty() {
            told.clear();
            continue;
        }
        let list = alerts.for_delivery();
        let ids: std::collections::HashSet<u64> = list.iter().map(|a| a.id).collect();
        told.retain(|k, _| targets.iter().any(|(_, u)| u.show() == *k));
        for (kind, url) in targets {
            let now = Instant::now();
            let t = told.entry(url.show()).or_default();
            if t.next_try.is_some_and(|at| now < at) {
                continue;
            }
            let due = due(&list, t, cfg.alerts.resend, now);
            // Forget what is no longer there to tell.
            t.firing.retain(|id, _| ids.contains(id));
            t.resolved.retain(|id| ids.contains(id));
            if due.is_empty() {
                continue;
            }
            let path_url = match kind {
                Kind::Alertmanager => HttpUrl {
                    authority: url.authority.clone(),
                    path: format!("{}api/v2/alerts", with_slash(&url.path)),
                },
                Kind::Webhook => url.clone(),
            };
            let b = body(
                kind,
                &due,
                cfg.alerts.resend,
                crate::clock::unix_ms(),
                &source,
            );
            let stats = &alerts.shared.stats;
            match post(&path_url, &b) {
                Ok(200..=299) => {
                    stats.incr(Counter::AlertsSent);
                    t.backoff = Duration::ZERO;
                    t.next_try = None;
                    for a in due {
                        match a.ends_at {
                            Some(_) => {
                                t.resolved.insert(a.id);
                                t.firing.remove(&a.id);
                            }
                            None => {
                                t.firing.insert(a.id, now);
                            }
                        }
                    }
                }
                outcome => {
                    stats.incr(Counter::AlertsFailed);
                    t.backoff = (t.backoff * 2).clamp(Duration::from_secs(1), BACKOFF_MAX);
                    t.next_try = Some(now + t.backoff);
                    let why = match outcome {
                        Ok(code) => format!("answered {code}"),
                        Err(e) => e,
                    };
                    limit.warn("alert-post", || {
                        format!(
                            "cannot post alerts to {}: {why}; retrying in {} s",
                            path_url.show(),
                            t.backoff.as_secs()
                        )
                    });
                }
            }
        }
    }
}

fn with_slash(p: &str) -> String {
    if p.ends_with('/') {
        p.to_string()
    } else {
        format!("{p}/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::rules::Condition;
    use std::collections::BTreeMap;

    fn alert(id: u64, resolved: bool) -> Alert {
        Alert {
            cond: Condition {
                name: crate::config::alerts::Rule::WorkerInactive,
                labels: BTreeMap::from([("worker_id".to_string(), format!("w{id}"))]),
                severity: "warning",
                summary: "s".into(),
                description: "d".into(),
                hold: Duration::ZERO,
                since: None,
            },
            id,
            pending_since: Instant::now(),
            starts_at: Some(1_700_000_000_000),
            ends_at: resolved.then_some(1_700_000_060_000),
            resolved_at: None,
        }
    }

    #[test]
    fn due_when_new_when_resend_is_up_and_once_resolved() {
        let list = [alert(1, false), alert(2, true)];
        let mut t = Told::default();
        let now = Instant::now();
        let resend = Duration::from_secs(60);
        assert_eq!(due(&list, &t, resend, now).len(), 2);
        t.firing.insert(1, now);
        t.resolved.insert(2);
        assert!(due(&list, &t, resend, now + Duration::from_secs(59)).is_empty());
        let again = due(&list, &t, resend, now + Duration::from_secs(60));
        assert_eq!(again.iter().map(|a| a.id).collect::<Vec<_>>(), [1]);
    }

    #[test]
    fn bodies_as_alertmanager_and_webhooks_read_them() {
        let (firing, resolved) = (alert(1, false), alert(2, true));
        let resend = Duration::from_secs(60);
        let am: Value = serde_json::from_slice(&body(
            Kind::Alertmanager,
            &[&firing, &resolved],
            resend,
            1_700_000_030_000,
            "http://h:8080/",
        ))
        .unwrap();
        assert_eq!(am[0]["labels"]["alertname"], "worker_inactive");
        assert_eq!(am[0]["labels"]["severity"], "warning");
        assert_eq!(am[0]["startsAt"], "2023-11-14T22:13:20.000Z");
        assert_eq!(
            am[0]["endsAt"], "2023-11-14T22:17:50.000Z",
            "four resends ahead"
        );
        assert_eq!(
            am[1]["endsAt"], "2023-11-14T22:14:20.000Z",
            "when it resolved"
        );
        assert_eq!(am[0]["generatorURL"], "http://h:8080/");
        let hook: Value =
            serde_json::from_slice(&body(Kind::Webhook, &[&resolved], resend, 0, "x")).unwrap();
        assert_eq!(
            (
                hook["status"].as_str(),
                hook["alerts"][0]["status"].as_str()
            ),
            (Some("resolved"), Some("resolved"))
        );
    }
}
