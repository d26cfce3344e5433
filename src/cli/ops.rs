//! Operator commands over musterd's HTTP and WebSocket API: `workers`,
//! `status`, `health` and `watch`, and the table they share.

use super::client::{self, ClientError};
use super::net::Target;
use super::table::{Shape, age, ago, align, colour_enabled, paint, table, word};
use super::{Fail, Out};
use crate::clock::unix_ms;
use crate::proto;
use lexopt::prelude::*;
use serde_json::Value;
use std::io::Write;

/// `--url` may also follow the command.
fn take_url(p: &mut lexopt::Parser, url: &mut String) -> Result<(), Fail> {
    *url = p.value()?.string()?;
    Ok(())
}

/// The worker id a command was given: present and valid, or a usage error.
fn worker_arg(id: Option<String>, command: &str) -> Result<String, Fail> {
    let id = id.ok_or_else(|| Fail(2, format!("{command} needs a worker id")))?;
    if proto::check_worker_id(&id).is_err() {
        return Err(Fail(2, format!("{id:?} is not a valid worker id")));
    }
    Ok(id)
}

fn addr(url: &str) -> Result<Target, Fail> {
    client::parse_url(url).map_err(|e| Fail(2, e.to_string()))
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// `--label K=V`: a worker carries every one of them.
fn has_labels(w: &Value, want: &[(String, String)]) -> bool {
    want.iter()
        .all(|(k, v)| w["labels"][k.as_str()].as_str() == Some(v.as_str()))
}

fn label_arg(v: String) -> Result<(String, String), Fail> {
    match v.split_once('=') {
        Some((k, val)) if !k.is_empty() => Ok((k.to_string(), val.to_string())),
        _ => Err(Fail(2, format!("--label {v:?}: expected KEY=VALUE"))),
    }
}

pub(super) fn workers(url: &str, args: &[String]) -> Out {
    let mut url = url.to_string();
    let (mut status, mut as_json) = (None, false);
    let mut labels = Vec::new();
    let mut shape = Shape {
        headers: true,
        colour: colour_enabled(),
        ..Shape::default()
    };
    let mut p = lexopt::Parser::from_args(args.iter().cloned());
    while let Some(arg) = p.next()? {
        match arg {
            Long("status") => status = Some(p.value()?.string()?),
            Long("label") => labels.push(label_arg(p.value()?.string()?)?),
            Long("wide") => shape.wide = true,
            Long("no-headers") => shape.headers = false,
            Long("json") => as_json = true,
            Long("url") => take_url(&mut p, &mut url)?,
            Short('h') | Long("help") => {
                println!(
                    "usage: muster workers [--status S] [--label K=V]... [--wide] [--no-headers] [--json]\n\n\
                     S is created, idle, working, error, inactive, terminated or active.\n\
                     --label keeps workers with that label (all of them, when repeated).\n\
                     --wide adds GPU%, JOB, HOST and TRANSPORT. --no-headers is for scripts:\n\
                     every row splits into the same fields, blanks are -."
                );
                return Ok(());
            }
            _ => return Err(arg.unexpected().into()),
        }
    }
    let path = match &status {
        Some(s) => format!("/api/workers?status={s}"),
        None => "/api/workers".to_string(),
    };
    let v = client::get_json(&addr(&url)?, &path).map_err(|e| match e {
        ClientError::Status(400, m) => Fail(2, m),
        e => e.into(),
    })?;
    let list: Vec<&Value> = v
        .as_array()
        .map(|a| a.iter().filter(|w| has_labels(w, &labels)).collect())
        .unwrap_or_default();
    if as_json {
        print_json(&Value::Array(list.into_iter().cloned().collect()));
        return Ok(());
    }
    if list.is_empty() {
        if shape.headers {
            eprintln!("no workers");
        }
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    for line in table(&list, unix_ms(), shape) {
        let _ = writeln!(out, "{line}");
    }
    Ok(())
}

/// A Unix-ms time as people read it: ISO 8601 and how long ago.
fn when(ms: u64, now: u64) -> String {
    format!("{} ({})", crate::clock::iso_ms(ms), ago(ms, now))
}

/// Keys of `/api/workers/{id}` that hold Unix-ms times.
fn is_time(key: &str) -> bool {
    matches!(
        key,
        "last_update" | "created_at" | "first_seen" | "last_run_time" | "started_at"
    )
}

/// The line `muster status ID` opens with.
fn summary(w: &Value, now: u64) -> String {
    let mut out = format!(
        "{} is {}",
        w["worker_id"].as_str().unwrap_or("?"),
        w["status"].as_str().unwrap_or("?")
    );
    if w["is_active"] == true {
        out.push_str(" and active");
    }
    let figures: Vec<String> = [
        ("cpu", &w["cpu_usage"], "%"),
        ("mem", &w["memory_usage"], "%"),
        ("rss", &w["resource_usage"]["rss_mb"], " MB"),
    ]
    .iter()
    .filter_map(|(k, v, unit)| v.as_f64().map(|x| format!("{k} {x:.1}{unit}")))
    .chain(std::iter::once(format!("queue {}", w["queue_depth"])))
    .collect();
    out.push_str(&format!(": {}", figures.join(", ")));
    if let Some(t) = w["last_update"].as_u64() {
        out.push_str(&format!("; last seen {}", ago(t, now)));
    }
    if let Some(h) = w["hostname"].as_str() {
        out.push_str(&format!("; on {h}"));
        if let Some(pid) = w["pid"].as_u64() {
            out.push_str(&format!(" pid {pid}"));
        }
    }
    out
}

pub(super) fn status(url: &str, args: &[String]) -> Out {
    let mut url = url.to_string();
    let (mut id, mut as_json) = (None, false);
    let mut p = lexopt::Parser::from_args(args.iter().cloned());
    while let Some(arg) = p.next()? {
        match arg {
            Value(v) if id.is_none() => id = Some(v.string()?),
            Long("json") => as_json = true,
            Long("url") => take_url(&mut p, &mut url)?,
            Short('h') | Long("help") => {
                println!(
                    "usage: muster status ID [--json]\n\nA one-line summary, then every field; times as ISO 8601 and age."
                );
                return Ok(());
            }
            _ => return Err(arg.unexpected().into()),
        }
    }
    let id = worker_arg(id, "status")?;
    let v = client::get_json(&addr(&url)?, &format!("/api/workers/{id}")).map_err(|e| match e {
        ClientError::Status(404, _) => Fail(4, format!("no worker {id}")),
        e => e.into(),
    })?;
    if as_json {
        print_json(&v);
        return Ok(());
    }
    let now = unix_ms();
    println!("{}", summary(&v, now));
    println!();
    let colour = colour_enabled();
    let obj = v.as_object().cloned().unwrap_or_default();
    let mut lines: Vec<(String, String)> = Vec::new();
    let mut show = |k: String, val: &Value| {
        let shown = match val {
            Value::String(s) if k == "status" => paint(s, colour),
            Value::Number(n) if is_time(k.rsplit('.').next().unwrap_or("")) => {
                n.as_u64().map_or(n.to_string(), |ms| when(ms, now))
            }
            Value::String(s) => s.clone(),
            Value::Null => "-".into(),
            other => other.to_string(),
        };
        lines.push((k, shown));
    };
    for (k, val) in &obj {
        match val {
            // One level of nesting is flattened: `runs.total`.
            Value::Object(inner) if !inner.is_empty() && k != "labels" => {
                for (ik, iv) in inner {
                    show(format!("{k}.{ik}"), iv);
                }
            }
            _ => show(k.clone(), val),
        }
    }
    lines.sort();
    let width = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, shown) in lines {
        println!("{k:<width$}  {shown}");
    }
    Ok(())
}

/// `muster forget ID`: `DELETE /api/workers/{id}`, with the API token
/// from `--token-file` or `$MUSTER_TOKEN_FILE` when musterd asks for one.
pub(super) fn forget(url: &str, args: &[String]) -> Out {
    let mut url = url.to_string();
    let mut id = None;
    let mut token_file = std::env::var_os(client::TOKEN_ENV).map(std::path::PathBuf::from);
    let mut p = lexopt::Parser::from_args(args.iter().cloned());
    while let Some(arg) = p.next()? {
        match arg {
            Value(v) if id.is_none() => id = Some(v.string()?),
            Long("url") => take_url(&mut p, &mut url)?,
            Long("token-file") => token_file = Some(p.value()?.into()),
            Short('h') | Long("help") => {
                println!("usage: muster forget ID [--token-file FILE]");
                return Ok(());
            }
            _ => return Err(arg.unexpected().into()),
        }
    }
    let id = worker_arg(id, "forget")?;
    let token = client::read_token(token_file.as_deref()).map_err(|m| Fail(2, m))?;
    let path = format!("/api/workers/{id}");
    let (status, body) = client::request(&addr(&url)?, "DELETE", &path, token.as_deref())?;
    match status {
        204 => Ok(()),
        404 => Err(Fail(4, format!("no worker {id}"))),
        s => {
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let msg = v["message"].as_str().unwrap_or("error");
            Err(Fail(1, format!("musterd answered {s}: {msg}")))
        }
    }
}

pub(super) fn health(url: &str, args: &[String]) -> Out {
    let mut url = url.to_string();
    let (mut as_json, mut fleet) = (false, false);
    let mut p = lexopt::Parser::from_args(args.iter().cloned());
    while let Some(arg) = p.next()? {
        match arg {
            Long("json") => as_json = true,
            Long("fleet") => fleet = true,
            Long("url") => take_url(&mut p, &mut url)?,
            Short('h') | Long("help") => {
                println!(
                    "usage: muster health [--fleet] [--json]\n\n\
                     Exit status: 0 healthy, 3 when musterd itself is degraded (it dropped\n\
                     frames, or failed to save its state or write its task journal, in the\n\
                     last minute), 1 unreachable. With --fleet, 3 also when the fleet is\n\
                     degraded (a worker in error or inactive, frames rejected)."
                );
                return Ok(());
            }
            _ => return Err(arg.unexpected().into()),
        }
    }
    let v = client::get_json(&addr(&url)?, "/health")?;
    let degraded =
        v["status"] != "healthy" || (fleet && v["fleet"]["status"].as_str() != Some("healthy"));
    if as_json {
        print_json(&v);
    } else {
        let w = &v["workers"];
        let f = &v["frames"];
        let reasons = |v: &Value| {
            for r in v["reasons"].as_array().into_iter().flatten() {
                println!("         - {}", r.as_str().unwrap_or("?"));
            }
        };
        println!(
            "status   {} (musterd {}, up {})",
            v["status"].as_str().unwrap_or("?"),
            v["version"].as_str().unwrap_or("?"),
            crate::clock::format_uptime(v["uptime_seconds"].as_u64().unwrap_or(0))
        );
        reasons(&v);
        println!("fleet    {}", v["fleet"]["status"].as_str().unwrap_or("?"));
        reasons(&v["fleet"]);
        println!(
            "workers  {} total, {} active, {} inactive, {} terminated, {} in error (max {})",
            w["total"], w["active"], w["inactive"], w["terminated"], w["error"], w["max"]
        );
        println!(
            "frames   {} received, {} applied, {} rejected, {} dropped, {} kernel drops",
            f["received"], f["applied"], f["rejected"], f["dropped"], v["udp_kernel_drops"]
        );
    }
    if degraded {
        // Said on stdout already; the exit status is for scripts.
        return Err(Fail(3, String::new()));
    }
    Ok(())
}

/// `muster alerts`: the built-in alerts firing now (and pending, and with
/// `--all` those resolved in the last hour), a line each.
pub(super) fn alerts(url: &str, args: &[String]) -> Out {
    let mut url = url.to_string();
    let (mut as_json, mut all, mut headers) = (false, false, true);
    let mut p = lexopt::Parser::from_args(args.iter().cloned());
    while let Some(arg) = p.next()? {
        match arg {
            Long("json") => as_json = true,
            Long("all") => all = true,
            Long("no-headers") => headers = false,
            Long("url") => take_url(&mut p, &mut url)?,
            Short('h') | Long("help") => {
                println!(
                    "usage: muster alerts [--all] [--no-headers] [--json]\n\n\
                     The built-in alerts firing and pending; --all adds those resolved in\n\
                     the last hour. Exit status 0, or 3 when any is firing."
                );
                return Ok(());
            }
            _ => return Err(arg.unexpected().into()),
        }
    }
    let v = client::get_json(&addr(&url)?, "/api/alerts")?;
    let firing = v["firing"].as_array().is_some_and(|a| !a.is_empty());
    if as_json {
        print_json(&v);
    } else {
        let now = unix_ms();
        let mut rows: Vec<[String; 5]> = Vec::new();
        let groups: &[&str] = if all {
            &["firing", "pending", "resolved"]
        } else {
            &["firing", "pending"]
        };
        for g in groups {
            for a in v[*g].as_array().into_iter().flatten() {
                let labels: Vec<String> = a["labels"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(k, _)| *k != "alertname" && *k != "severity")
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                    .collect();
                let since = match *g {
                    "resolved" => a["ends_at"].as_u64(),
                    _ => a["starts_at"].as_u64(),
                };
                rows.push([
                    g.to_string(),
                    word(a["alertname"].as_str()),
                    word(a["labels"]["severity"].as_str()),
                    word(Some(&labels.join(","))),
                    since.map_or("-".into(), |t| age(t, now)),
                ]);
            }
        }
        if rows.is_empty() {
            if headers {
                eprintln!("no alerts");
            }
        } else {
            let head = ["STATE", "ALERT", "SEVERITY", "LABELS", "SINCE"].map(String::from);
            let rows: Vec<Vec<String>> = headers
                .then(|| head.to_vec())
                .into_iter()
                .chain(rows.into_iter().map(|r| r.to_vec()))
                .collect();
            let mut out = std::io::stdout().lock();
            for line in align(&rows, &[false; 5]) {
                let _ = writeln!(out, "{line}");
            }
        }
    }
    if firing {
        return Err(Fail(3, String::new()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ago_reads_like_a_person() {
        assert_eq!(ago(10_000, 13_000), "3s ago");
        assert_eq!(ago(0, 125_000), "2m ago");
        assert_eq!(ago(0, 7_300_000), "2h ago");
        assert_eq!(ago(5_000, 1_000), "0s ago", "clock skew is not negative");
        assert_eq!(age(0, 200_000_000), "2d");
    }

    fn plain(wide: bool, headers: bool) -> Shape {
        Shape {
            wide,
            headers,
            colour: false,
        }
    }

    #[test]
    fn table_lines_up_with_no_trailing_blanks() {
        let a = json!({"worker_id":"w1","status":"working","is_active":true,"cpu_usage":12.5,"memory_usage":null,"resource_usage":{"rss_mb":52.8},"queue_depth":5,"last_update":1000,"current_job":{"id":"job 7"},"hostname":"h1","transport":"tcp","gpu_usage":40});
        let b = json!({"worker_id":"longer-id","status":"inactive","is_active":false,"queue_depth":0,"last_update":1000});
        for wide in [false, true] {
            let t = table(&[&a, &b], 4000, plain(wide, true));
            let fields = t[0].split_whitespace().count();
            for line in &t {
                assert_eq!(line.trim_end(), line, "trailing blanks: {line:?}");
                assert_eq!(line.split_whitespace().count(), fields, "{t:#?}");
            }
            // Every column starts where its header starts (text) or ends
            // where it ends (numbers).
            let at = |line: usize, name: &str| t[line][t[0].find(name).unwrap()..].to_string();
            assert!(at(1, "STATUS").starts_with("working"));
            assert!(at(2, "STATUS").starts_with("inactive"));
            assert!(at(1, "LAST_SEEN").starts_with("3s"));
        }
        let t = table(&[&a, &b], 4000, plain(false, true));
        assert_eq!(
            t[0],
            "ID         STATUS    ACTIVE  CPU%  MEM%  RSS_MB  QUEUE  LAST_SEEN"
        );
        assert_eq!(
            t[1],
            "w1         working   yes     12.5     -    52.8      5  3s"
        );
        let wide = table(&[&a], 4000, plain(true, false));
        assert_eq!(wide.len(), 1, "no header");
        assert_eq!(
            wide[0],
            "w1  working  yes  12.5  -  40.0  52.8  5  job_7  h1  tcp  3s"
        );
        let colour = Shape {
            colour: true,
            ..plain(false, true)
        };
        assert!(
            !t.concat().contains('\x1b'),
            "no colour when asked for none"
        );
        assert!(table(&[&a], 4000, colour)[1].contains("\x1b[32mworking\x1b[0m "));
    }

    #[test]
    fn labels_filter() {
        let w = json!({"labels":{"team":"ml","zone":"a"}});
        let want = |p: &[(&str, &str)]| {
            let p: Vec<(String, String)> = p
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            has_labels(&w, &p)
        };
        assert!(want(&[]));
        assert!(want(&[("team", "ml"), ("zone", "a")]));
        assert!(!want(&[("team", "ml"), ("zone", "b")]));
        assert!(!want(&[("gpu", "")]));
        assert!(label_arg("k=v=w".into()).is_ok_and(|(k, v)| k == "k" && v == "v=w"));
        assert!(label_arg("=v".into()).is_err() && label_arg("k".into()).is_err());
    }

    #[test]
    fn status_opens_with_a_summary() {
        let w = json!({"worker_id":"w1","status":"working","is_active":true,"cpu_usage":12.5,"resource_usage":{"rss_mb":52.8},"queue_depth":5,"last_update":1000,"hostname":"h1","pid":42});
        assert_eq!(
            summary(&w, 4000),
            "w1 is working and active: cpu 12.5%, rss 52.8 MB, queue 5; last seen 3s ago; on h1 pid 42"
        );
        assert_eq!(when(1000, 4000), "1970-01-01T00:00:01.000Z (3s ago)");
    }
}
