//! The alert settings: which built-in rules run, their thresholds, and
//! where notifications go. All live (SIGHUP changes them).

use super::setting::area;
use super::units::{at_least, fmt_duration, parse_count, parse_duration, parse_list};
use std::time::Duration;

/// The built-in alert rules, by the names `alert_rules` and the alerts
/// themselves (`alertname`) give them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    WorkerInactive,
    WorkerError,
    WorkerFlapping,
    ErrorRate,
    QueueDepth,
    PoolMemberFatal,
    TaskFailed,
    TaskQueueDepth,
}

impl Rule {
    pub const ALL: [Rule; 8] = [
        Rule::WorkerInactive,
        Rule::WorkerError,
        Rule::WorkerFlapping,
        Rule::ErrorRate,
        Rule::QueueDepth,
        Rule::PoolMemberFatal,
        Rule::TaskFailed,
        Rule::TaskQueueDepth,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Rule::WorkerInactive => "worker_inactive",
            Rule::WorkerError => "worker_error",
            Rule::WorkerFlapping => "worker_flapping",
            Rule::ErrorRate => "error_rate",
            Rule::QueueDepth => "queue_depth",
            Rule::PoolMemberFatal => "pool_member_fatal",
            Rule::TaskFailed => "task_failed",
            Rule::TaskQueueDepth => "task_queue_depth",
        }
    }

    pub fn parse(s: &str) -> Option<Rule> {
        Rule::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An `http://host:port/path` a notification is posted to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpUrl {
    /// `host:port`, resolved at each send.
    pub authority: String,
    /// The path, from `/`.
    pub path: String,
}

impl HttpUrl {
    pub fn parse(v: &str) -> Result<HttpUrl, String> {
        if v.starts_with("https://") {
            return Err(format!(
                "{v:?}: https is not supported; post to a local TLS relay (see musterd.conf(5))"
            ));
        }
        let rest = v
            .strip_prefix("http://")
            .ok_or_else(|| format!("{v:?} is not an http:// URL"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let port_ok = authority
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
        if !port_ok {
            return Err(format!("{v:?}: expected http://HOST:PORT[/PATH]"));
        }
        Ok(HttpUrl {
            authority: authority.to_string(),
            path: path.to_string(),
        })
    }

    pub fn show(&self) -> String {
        format!("http://{}{}", self.authority, self.path)
    }
}

fn urls(v: &str) -> Result<Vec<HttpUrl>, String> {
    if v == "off" {
        return Ok(Vec::new());
    }
    parse_list(v).iter().map(|u| HttpUrl::parse(u)).collect()
}

fn show_urls(u: &[HttpUrl]) -> String {
    if u.is_empty() {
        "off".into()
    } else {
        u.iter().map(HttpUrl::show).collect::<Vec<_>>().join(", ")
    }
}

/// `all`, `off`, or a list of rules.
fn rules(v: &str) -> Result<Vec<Rule>, String> {
    match v {
        "all" => Ok(Rule::ALL.to_vec()),
        "off" => Ok(Vec::new()),
        _ => parse_list(v)
            .iter()
            .map(|r| {
                Rule::parse(r).ok_or_else(|| {
                    let names: Vec<&str> = Rule::ALL.iter().map(|r| r.as_str()).collect();
                    format!("{r:?} is not a rule: all, off, or {}", names.join(", "))
                })
            })
            .collect(),
    }
}

fn show_rules(r: &[Rule]) -> String {
    match r.len() {
        0 => "off".into(),
        n if n == Rule::ALL.len() => "all".into(),
        _ => r.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", "),
    }
}

area! {
    /// The built-in alerts and where they are sent.
    pub struct Alerts in alerts {
        /// The rules that run.
        rules: Vec<Rule> = "alert_rules", "all", List, live,
            "built-in alert rules that run: all, off, or a list of worker_inactive, worker_error, worker_flapping, error_rate, queue_depth, pool_member_fatal, task_failed, task_queue_depth",
            rules, |r: &Vec<Rule>| show_rules(r);
        /// How long a condition holds before its alert fires.
        hold: Duration = "alert_for", "1m", Duration, live,
            "how long a worker is inactive, in error or over the queue depth before its alert fires",
            parse_duration, |d: &Duration| fmt_duration(*d);
        flapping: u32 = "alert_flapping", "3", Count, live,
            "worker_flapping fires when a worker went inactive more than this many times in 10 minutes",
            |v| parse_count(v, 1, 1000).map(|n| n as u32), |n: &u32| n.to_string();
        /// Percent.
        error_rate: u32 = "alert_error_rate", "10", Count, live,
            "error_rate fires when more than this % of runs failed in the last hour (a worker's, or the fleet's)",
            |v| parse_count(v, 1, 100).map(|n| n as u32), |n: &u32| n.to_string();
        error_rate_min_runs: u64 = "alert_error_rate_min_runs", "10", Count, live,
            "runs in the last hour below which error_rate stays quiet",
            |v| parse_count(v, 1, 1_000_000).map(|n| n as u64), |n: &u64| n.to_string();
        queue_depth: u64 = "alert_queue_depth", "1000", Count, live,
            "queue_depth fires when a worker reports more than this for alert_for",
            |v| parse_count(v, 1, usize::MAX).map(|n| n as u64), |n: &u64| n.to_string();
        task_queue_depth: u64 = "alert_task_queue_depth", "10000", Count, live,
            "task_queue_depth fires when more than this many tasks wait in the queue for alert_for (in cluster mode the whole cluster's queue, judged by the leader)",
            |v| parse_count(v, 1, usize::MAX).map(|n| n as u64), |n: &u64| n.to_string();
        alertmanagers: Vec<HttpUrl> = "alertmanager_url", "off", List, live,
            "Prometheus Alertmanagers to post alerts to (API v2), http:// only; list both of an HA pair",
            urls, |u: &Vec<HttpUrl>| show_urls(u);
        webhooks: Vec<HttpUrl> = "alert_webhook_url", "off", List, live,
            "URLs to post alerts to as JSON (Alertmanager's webhook shape), http:// only",
            urls, |u: &Vec<HttpUrl>| show_urls(u);
        resend: Duration = "alert_resend", "1m", Duration, live,
            "how often firing alerts are posted again",
            |v| at_least(parse_duration(v)?, 1000), |d: &Duration| fmt_duration(*d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_plain_http_with_a_port() {
        let u = HttpUrl::parse("http://am1:9093").unwrap();
        assert_eq!((u.authority.as_str(), u.path.as_str()), ("am1:9093", "/"));
        let u = HttpUrl::parse("http://127.0.0.1:5001/hook?x=1").unwrap();
        assert_eq!(u.path, "/hook?x=1");
        assert!(
            HttpUrl::parse("https://am:9093")
                .unwrap_err()
                .contains("TLS relay")
        );
        assert!(HttpUrl::parse("am:9093").is_err());
        assert!(HttpUrl::parse("http://am").is_err());
        assert!(HttpUrl::parse("http://:9093").is_err());
    }

    #[test]
    fn rules_by_name() {
        assert_eq!(
            rules("worker_inactive, task_failed").unwrap(),
            [Rule::WorkerInactive, Rule::TaskFailed]
        );
        assert!(rules("worker_sad").unwrap_err().contains("not a rule"));
        assert_eq!(show_rules(&rules("off").unwrap()), "off");
        assert_eq!(show_rules(&rules("all").unwrap()), "all");
        for r in Rule::ALL {
            assert_eq!(Rule::parse(r.as_str()), Some(r));
        }
    }
}
