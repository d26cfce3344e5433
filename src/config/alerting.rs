//! The alert settings: which built-in rules run, their thresholds, and
//! where notifications go. All live (SIGHUP changes them).

use super::settings::{Setting, Unit};
use super::units::{at_least, fmt_duration, parse_count, parse_duration, parse_list};

/// The built-in rules, as `alert_rules` names them.
pub const RULES: [&str; 7] = [
    "worker_inactive",
    "worker_error",
    "worker_flapping",
    "error_rate",
    "queue_depth",
    "pool_member_fatal",
    "task_failed",
];

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

pub const ALERT_RULES: Setting = Setting {
    key: "alert_rules",
    default: "all",
    unit: Unit::List,
    live: true,
    help: "built-in alert rules that run: all, off, or a list of worker_inactive, worker_error, worker_flapping, error_rate, queue_depth, pool_member_fatal, task_failed",
    set: |c, v| {
        c.alert_rules = match v {
            "all" => RULES.to_vec(),
            "off" => Vec::new(),
            _ => {
                let mut out = Vec::new();
                for r in parse_list(v) {
                    let known = RULES.iter().find(|k| **k == r).ok_or_else(|| {
                        format!("{r:?} is not a rule: all, off, or {}", RULES.join(", "))
                    })?;
                    out.push(*known);
                }
                out
            }
        };
        Ok(())
    },
    show: |c| match c.alert_rules.len() {
        0 => "off".into(),
        n if n == RULES.len() => "all".into(),
        _ => c.alert_rules.join(", "),
    },
};

pub const ALERT_FOR: Setting = Setting {
    key: "alert_for",
    default: "1m",
    unit: Unit::Duration,
    live: true,
    help: "how long a worker is inactive, in error or over the queue depth before its alert fires",
    set: |c, v| {
        c.alert_for = parse_duration(v)?;
        Ok(())
    },
    show: |c| fmt_duration(c.alert_for),
};

pub const ALERT_FLAPPING: Setting = Setting {
    key: "alert_flapping",
    default: "3",
    unit: Unit::Count,
    live: true,
    help: "worker_flapping fires when a worker went inactive more than this many times in 10 minutes",
    set: |c, v| {
        c.alert_flapping = parse_count(v, 1, 1000)? as u32;
        Ok(())
    },
    show: |c| c.alert_flapping.to_string(),
};

pub const ALERT_ERROR_RATE: Setting = Setting {
    key: "alert_error_rate",
    default: "10",
    unit: Unit::Count,
    live: true,
    help: "error_rate fires when more than this % of runs failed in the last hour (a worker's, or the fleet's)",
    set: |c, v| {
        c.alert_error_rate = parse_count(v, 1, 100)? as u32;
        Ok(())
    },
    show: |c| c.alert_error_rate.to_string(),
};

pub const ALERT_ERROR_RATE_MIN_RUNS: Setting = Setting {
    key: "alert_error_rate_min_runs",
    default: "10",
    unit: Unit::Count,
    live: true,
    help: "runs in the last hour below which error_rate stays quiet",
    set: |c, v| {
        c.alert_error_rate_min_runs = parse_count(v, 1, 1_000_000)? as u64;
        Ok(())
    },
    show: |c| c.alert_error_rate_min_runs.to_string(),
};

pub const ALERT_QUEUE_DEPTH: Setting = Setting {
    key: "alert_queue_depth",
    default: "1000",
    unit: Unit::Count,
    live: true,
    help: "queue_depth fires when a worker reports more than this for alert_for",
    set: |c, v| {
        c.alert_queue_depth = parse_count(v, 1, usize::MAX)? as u64;
        Ok(())
    },
    show: |c| c.alert_queue_depth.to_string(),
};

pub const ALERTMANAGER_URL: Setting = Setting {
    key: "alertmanager_url",
    default: "off",
    unit: Unit::List,
    live: true,
    help: "Prometheus Alertmanagers to post alerts to (API v2), http:// only; list both of an HA pair",
    set: |c, v| {
        c.alertmanager_url = urls(v)?;
        Ok(())
    },
    show: |c| show_urls(&c.alertmanager_url),
};

pub const ALERT_WEBHOOK_URL: Setting = Setting {
    key: "alert_webhook_url",
    default: "off",
    unit: Unit::List,
    live: true,
    help: "URLs to post alerts to as JSON (Alertmanager's webhook shape), http:// only",
    set: |c, v| {
        c.alert_webhook_url = urls(v)?;
        Ok(())
    },
    show: |c| show_urls(&c.alert_webhook_url),
};

pub const ALERT_RESEND: Setting = Setting {
    key: "alert_resend",
    default: "1m",
    unit: Unit::Duration,
    live: true,
    help: "how often firing alerts are posted again",
    set: |c, v| {
        c.alert_resend = at_least(parse_duration(v)?, 1000)?;
        Ok(())
    },
    show: |c| fmt_duration(c.alert_resend),
};

fn show_urls(u: &[HttpUrl]) -> String {
    if u.is_empty() {
        "off".into()
    } else {
        u.iter().map(HttpUrl::show).collect::<Vec<_>>().join(", ")
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
        let mut c = crate::config::defaults();
        (ALERT_RULES.set)(&mut c, "worker_inactive, task_failed").unwrap();
        assert_eq!(c.alert_rules, ["worker_inactive", "task_failed"]);
        assert!(
            (ALERT_RULES.set)(&mut c, "worker_sad")
                .unwrap_err()
                .contains("not a rule")
        );
        (ALERT_RULES.set)(&mut c, "off").unwrap();
        assert_eq!((ALERT_RULES.show)(&c), "off");
    }
}
