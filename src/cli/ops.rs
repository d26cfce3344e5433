//! Operator commands over musterd's HTTP and WebSocket API: `workers`,
//! `status`, `health` and `watch`, and the table they share.

use super::client::{self, ClientError};
use super::{Fail, Out};
use crate::clock::unix_ms;
use crate::proto;
use lexopt::prelude::*;
use serde_json::Value;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;

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

fn addr(url: &str) -> Result<SocketAddr, Fail> {
    client::parse_url(url).map_err(|e| Fail(2, e.to_string()))
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

pub(super) fn colour_enabled() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

fn paint(status: &str, on: bool) -> String {
    if !on {
        return status.to_string();
    }
    let code = match status {
        "working" => "32",
        "idle" => "36",
        "error" => "31",
        "inactive" => "33",
        "terminated" | "created" => "2",
        _ => "0",
    };
    format!("\x1b[{code}m{status}\x1b[0m")
}

/// An age as one word: "3s", "5m", "2h", "4d".
pub fn age(then_ms: u64, now_ms: u64) -> String {
    let s = now_ms.saturating_sub(then_ms) / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// "3s ago", "5m ago", "2h ago".
pub fn ago(then_ms: u64, now_ms: u64) -> String {
    format!("{} ago", age(then_ms, now_ms))
}

fn num(v: &Value, digits: usize) -> String {
    v.as_f64()
        .map_or("-".to_string(), |x| format!("{x:.digits$}"))
}

/// A cell as one word: blanks and control characters become `_`, so every
/// row splits into as many fields as the header, and a missing value is
/// `-`.
fn word(s: Option<&str>) -> String {
    match s {
        None | Some("") => "-".into(),
        Some(s) => s
            .chars()
            .map(|c| {
                if c.is_whitespace() || c.is_control() {
                    '_'
                } else {
                    c
                }
            })
            .collect(),
    }
}

/// A table column: its header, whether it is a number (right-aligned),
/// whether only `--wide` shows it, and its cell.
struct Column {
    name: &'static str,
    number: bool,
    wide: bool,
    cell: fn(&Value, u64) -> String,
}

const COLUMNS: &[Column] = &[
    Column {
        name: "ID",
        number: false,
        wide: false,
        cell: |w, _| word(w["worker_id"].as_str()),
    },
    Column {
        name: "STATUS",
        number: false,
        wide: false,
        cell: |w, _| word(w["status"].as_str()),
    },
    Column {
        name: "ACTIVE",
        number: false,
        wide: false,
        cell: |w, _| if w["is_active"] == true { "yes" } else { "no" }.into(),
    },
    Column {
        name: "CPU%",
        number: true,
        wide: false,
        cell: |w, _| num(&w["cpu_usage"], 1),
    },
    Column {
        name: "MEM%",
        number: true,
        wide: false,
        cell: |w, _| num(&w["memory_usage"], 1),
    },
    Column {
        name: "GPU%",
        number: true,
        wide: true,
        cell: |w, _| num(&w["gpu_usage"], 1),
    },
    Column {
        name: "RSS_MB",
        number: true,
        wide: false,
        cell: |w, _| num(&w["resource_usage"]["rss_mb"], 1),
    },
    Column {
        name: "QUEUE",
        number: true,
        wide: false,
        cell: |w, _| {
            w["queue_depth"]
                .as_u64()
                .map_or("-".into(), |q| q.to_string())
        },
    },
    Column {
        name: "JOB",
        number: false,
        wide: true,
        cell: |w, _| {
            let j = &w["current_job"];
            word(j["id"].as_str().or(j["type"].as_str()))
        },
    },
    Column {
        name: "HOST",
        number: false,
        wide: true,
        cell: |w, _| word(w["hostname"].as_str()),
    },
    Column {
        name: "TRANSPORT",
        number: false,
        wide: true,
        cell: |w, _| word(w["transport"].as_str()),
    },
    Column {
        name: "LAST_SEEN",
        number: false,
        wide: false,
        cell: |w, now| {
            w["last_update"]
                .as_u64()
                .map_or("-".into(), |t| age(t, now))
        },
    },
];

/// How a table is shown.
#[derive(Clone, Copy, Default)]
pub struct Shape {
    pub wide: bool,
    pub headers: bool,
    pub colour: bool,
}

/// The table of `muster workers` and `muster watch`, a line each (no
/// newline): columns two spaces apart, numbers right-aligned, no trailing
/// blanks, every line as many fields as the header.
pub fn table(workers: &[&Value], now_ms: u64, shape: Shape) -> Vec<String> {
    let columns: Vec<&Column> = COLUMNS.iter().filter(|c| shape.wide || !c.wide).collect();
    let rows: Vec<Vec<String>> = workers
        .iter()
        .map(|w| columns.iter().map(|c| (c.cell)(w, now_ms)).collect())
        .collect();
    let mut width: Vec<usize> = columns
        .iter()
        .map(|c| if shape.headers { c.name.len() } else { 0 })
        .collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let line = |cells: &[String], paint_status: bool| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            let pad = " ".repeat(width[i] - c.chars().count());
            let shown = if columns[i].name == "STATUS" && paint_status {
                paint(c, shape.colour)
            } else {
                c.clone()
            };
            if i > 0 {
                out.push_str("  ");
            }
            if columns[i].number {
                out.push_str(&pad);
                out.push_str(&shown);
            } else {
                out.push_str(&shown);
                if i + 1 < cells.len() {
                    out.push_str(&pad);
                }
            }
        }
        out
    };
    let mut out = Vec::with_capacity(rows.len() + 1);
    if shape.headers {
        let names: Vec<String> = columns.iter().map(|c| c.name.to_string()).collect();
        out.push(line(&names, false));
    }
    out.extend(rows.iter().map(|r| line(r, true)));
    out
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
    let v = client::get_json(addr(&url)?, &path).map_err(|e| match e {
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
    let v = client::get_json(addr(&url)?, &format!("/api/workers/{id}")).map_err(|e| match e {
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
    let (status, body) = client::request(addr(&url)?, "DELETE", &path, token.as_deref())?;
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
    let mut as_json = false;
    let mut p = lexopt::Parser::from_args(args.iter().cloned());
    while let Some(arg) = p.next()? {
        match arg {
            Long("json") => as_json = true,
            Long("url") => take_url(&mut p, &mut url)?,
            Short('h') | Long("help") => {
                println!(
                    "usage: muster health [--json]\n\n\
                     Exit status: 0 healthy, 3 degraded (a worker in error or inactive, or\n\
                     frames dropped or rejected in the last minute), 1 unreachable."
                );
                return Ok(());
            }
            _ => return Err(arg.unexpected().into()),
        }
    }
    let v = client::get_json(addr(&url)?, "/health")?;
    let degraded = v["status"] != "healthy";
    if as_json {
        print_json(&v);
    } else {
        let w = &v["workers"];
        let f = &v["frames"];
        println!(
            "status   {} (musterd {}, up {})",
            v["status"].as_str().unwrap_or("?"),
            v["version"].as_str().unwrap_or("?"),
            crate::clock::format_uptime(v["uptime_seconds"].as_u64().unwrap_or(0))
        );
        for r in v["reasons"].as_array().into_iter().flatten() {
            println!("         - {}", r.as_str().unwrap_or("?"));
        }
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
    let v = client::get_json(addr(&url)?, "/api/alerts")?;
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
            let mut width = [0usize; 5];
            for r in std::iter::once(&head).chain(&rows) {
                for (i, c) in r.iter().enumerate() {
                    width[i] = width[i].max(c.chars().count());
                }
            }
            let mut out = std::io::stdout().lock();
            for r in headers.then_some(&head).into_iter().chain(&rows) {
                let mut line = String::new();
                for (i, c) in r.iter().enumerate() {
                    line.push_str(c);
                    if i + 1 < r.len() {
                        line.push_str(&" ".repeat(width[i] - c.chars().count() + 2));
                    }
                }
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
