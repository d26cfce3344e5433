//! `muster tasks [cancel|retry|delete]`, `muster task submit|show|logs|cancel|retry` and
//! `muster queues`, `muster queue pause|resume`: the task API
//! from a terminal or a script. Changes send the API token from
//! `--token-file` or `$MUSTER_TOKEN_FILE`. `task submit --wait` exits 0 when
//! the task succeeded, 3 when it failed, 5 when it was cancelled or timed
//! out.

use super::client;
use super::net::Target;
use super::{Fail, Out};
use lexopt::prelude::*;
use serde_json::{Map, Value, json};
use std::path::PathBuf;
use std::time::Duration;

pub(super) fn addr(url: &str) -> Result<Target, Fail> {
    client::parse_url(url).map_err(|e| Fail(2, e.to_string()))
}

pub(super) fn token(file: Option<PathBuf>) -> Result<Option<String>, Fail> {
    let file = file.or_else(|| std::env::var_os(client::TOKEN_ENV).map(PathBuf::from));
    client::read_token(file.as_deref()).map_err(|m| Fail(2, m))
}

/// The answer's JSON, or the API's error as a failure (404 → exit 4).
pub(super) fn answer(to: &Target, status: u16, body: &[u8]) -> Result<Value, Fail> {
    Ok(client::answer(to, status, body)?)
}

fn task_id(v: Option<String>, what: &str) -> Result<String, Fail> {
    let id = v.ok_or_else(|| Fail(2, format!("task {what} needs a task id")))?;
    if !crate::proto::task::valid_task_id(&id) {
        return Err(Fail(2, format!("{id:?} is not a task id")));
    }
    Ok(id)
}

fn line(t: &Value) -> String {
    let s = |k: &str| t[k].as_str().unwrap_or("-").to_string();
    format!(
        "{:<18} {:<16} {:<10} {:>7} {}",
        s("id"),
        s("type"),
        s("state"),
        t["attempt"].as_u64().unwrap_or(0),
        s("worker_id")
    )
}

const TASKS_USE: &str = "usage: muster tasks [FILTER] [--json]\n       muster tasks cancel|retry|delete FILTER [--token-file F]\nFILTER: [--state S[,S...]] [--type T] [--worker ID] [--label K:V]... [--q TEXT]\n        [--created-after T] [--created-before T] [--finished-after T] [--finished-before T]\n        (times RFC 3339 or Unix ms)";
const BULK_USE: &str = "usage: muster tasks cancel|retry|delete FILTER [--token-file F]\nFILTER: [--state S[,S...]] [--type T] [--worker ID] [--label K:V]... [--q TEXT]\n        [--created-after T] [--created-before T] [--finished-after T] [--finished-before T]\n        (times RFC 3339 or Unix ms); at least one";

/// A filter flag of `muster tasks`, as its query key, or `None`.
fn filter_key(flag: &str) -> Option<&'static str> {
    Some(match flag {
        "state" => "state",
        "type" => "type",
        "worker" => "worker_id",
        "label" => "label",
        "q" => "q",
        "created-after" => "created_after",
        "created-before" => "created_before",
        "finished-after" => "finished_after",
        "finished-before" => "finished_before",
        _ => return None,
    })
}

/// `muster tasks [FILTER] [--json]`: the tasks a filter matches; and
/// `muster tasks cancel|retry|delete FILTER`: a bulk action on them,
/// sent again while more match.
pub(super) fn list(url: &str, args: &[String]) -> Out {
    let mut url = url.to_string();
    let mut filter: Vec<(&'static str, String)> = Vec::new();
    let (mut as_json, mut action, mut token_file) = (false, None, None);
    let mut p = lexopt::Parser::from_args(args.iter().cloned());
    while let Some(arg) = p.next()? {
        match arg {
            Value(v) if action.is_none() && filter.is_empty() => {
                let v = v.string()?;
                if !["cancel", "retry", "delete"].contains(&v.as_str()) {
                    return Err(Fail(2, format!("unknown tasks action {v:?}\n{TASKS_USE}")));
                }
                action = Some(v);
            }
            Long(flag) if filter_key(flag).is_some() => {
                let key = filter_key(flag).unwrap_or_default();
                let v = p.value()?.string()?;
                // Repeated labels are all required.
                match filter.iter_mut().find(|(k, _)| *k == "label") {
                    Some((_, have)) if key == "label" => {
                        have.push(',');
                        have.push_str(&v);
                    }
                    _ => filter.push((key, v)),
                }
            }
            Long("json") => as_json = true,
            Long("token-file") => token_file = Some(p.value()?.into()),
            Long("url") => url = p.value()?.string()?,
            Short('h') | Long("help") => {
                println!(
                    "{}",
                    if action.is_some() {
                        BULK_USE
                    } else {
                        TASKS_USE
                    }
                );
                return Ok(());
            }
            _ => return Err(arg.unexpected().into()),
        }
    }
    let to = addr(&url)?;
    if let Some(action) = action {
        if filter.is_empty() {
            return Err(Fail(
                2,
                format!("tasks {action} needs a filter: it never means every task"),
            ));
        }
        let mut f = Map::new();
        for (k, v) in &filter {
            f.insert((*k).to_string(), Value::String(v.clone()));
        }
        let body = json!({"action": action, "filter": f}).to_string();
        let token = token(token_file)?;
        let (mut matched, mut changed) = (0, 0);
        // Each round takes at most 10,000; a change that leaves tasks
        // matching (a cancel asked of a worker) would repeat them.
        for _ in 0..1000 {
            let (status, b) = client::request_body(
                &to,
                "POST",
                "/api/tasks/bulk",
                token.as_deref(),
                body.as_bytes(),
            )?;
            let v = answer(&to, status, &b)?;
            let n = v["changed"].as_u64().unwrap_or(0);
            matched += v["matched"].as_u64().unwrap_or(0);
            changed += n;
            if v["more"] != true || n == 0 {
                break;
            }
        }
        println!("{action}: {changed} of {matched} tasks");
        return Ok(());
    }
    let mut query: Vec<String> = filter
        .iter()
        .map(|(k, v)| format!("{k}={}", segment(v)))
        .collect();
    query.push("limit=1000".into());
    let (status, body) = client::get(&to, &format!("/api/tasks?{}", query.join("&")))?;
    let v = answer(&to, status, &body)?;
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&v["tasks"]).unwrap_or_default()
        );
        return Ok(());
    }
    println!(
        "{:<18} {:<16} {:<10} {:>7} WORKER",
        "ID", "TYPE", "STATE", "ATTEMPT"
    );
    for t in v["tasks"].as_array().into_iter().flatten() {
        println!("{}", line(t));
    }
    Ok(())
}

/// `muster task submit|show|logs|cancel`.
pub(super) fn task(url: &str, args: &[String]) -> Out {
    let Some((sub, rest)) = args.split_first() else {
        return Err(Fail(
            2,
            "usage: muster task submit|show|logs|cancel|retry ...".into(),
        ));
    };
    if ["-h", "--help"].contains(&sub.as_str()) || rest.iter().any(|a| a == "-h" || a == "--help") {
        println!(
            "usage: muster task submit TYPE [--payload JSON|@FILE|-] [--priority N] [--worker ID] [--label K=V]... [--max-attempts N] [--timeout-ms N] [--delay-ms N|--run-at TIME] [--depends-on ID]... [--unique-key K] [--wait] [--token-file F]\n       muster task show ID [--json]\n       muster task logs ID [-f]\n       muster task cancel ID [--token-file F]\n       muster task retry ID [--token-file F]"
        );
        return Ok(());
    }
    match sub.as_str() {
        "submit" => submit(url, rest),
        "show" | "logs" | "cancel" | "retry" => one(url, sub, rest),
        other => Err(Fail(2, format!("unknown task command {other:?}"))),
    }
}

fn submit(url: &str, args: &[String]) -> Out {
    let mut url = url.to_string();
    let mut body = Map::new();
    let (mut kind, mut wait, mut token_file) = (None, false, None);
    let mut labels = Map::new();
    let mut depends_on = Vec::new();
    let mut p = lexopt::Parser::from_args(args.iter().cloned());
    let int = |p: &mut lexopt::Parser, name: &str| -> Result<i64, Fail> {
        let v = p.value()?.string()?;
        v.parse()
            .map_err(|_| Fail(2, format!("--{name} needs a whole number, got {v:?}")))
    };
    while let Some(arg) = p.next()? {
        match arg {
            Value(v) if kind.is_none() => kind = Some(v.string()?),
            Long("payload") => {
                let v = p.value()?.string()?;
                let text = match v.strip_prefix('@') {
                    Some(f) => {
                        std::fs::read_to_string(f).map_err(|e| Fail(2, format!("{f}: {e}")))?
                    }
                    None if v == "-" => std::io::read_to_string(std::io::stdin())
                        .map_err(|e| Fail(2, format!("stdin: {e}")))?,
                    None => v,
                };
                let payload: Value = serde_json::from_str(&text)
                    .map_err(|e| Fail(2, format!("--payload is not JSON: {e}")))?;
                body.insert("payload".into(), payload);
            }
            Long("priority") => {
                body.insert("priority".into(), json!(int(&mut p, "priority")?));
            }
            Long("max-attempts") => {
                body.insert("max_attempts".into(), json!(int(&mut p, "max-attempts")?));
            }
            Long("timeout-ms") => {
                body.insert("timeout_ms".into(), json!(int(&mut p, "timeout-ms")?));
            }
            Long("delay-ms") => {
                body.insert("delay_ms".into(), json!(int(&mut p, "delay-ms")?));
            }
            Long("run-at") => {
                body.insert("run_at".into(), json!(p.value()?.string()?));
            }
            Long("worker") => {
                body.insert("worker_id".into(), json!(p.value()?.string()?));
            }
            Long("label") => {
                let kv = p.value()?.string()?;
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| Fail(2, format!("--label takes KEY=VALUE, got {kv:?}")))?;
                labels.insert(k.into(), json!(v));
            }
            Long("depends-on") => depends_on.push(json!(p.value()?.string()?)),
            Long("unique-key") => {
                body.insert("unique_key".into(), json!(p.value()?.string()?));
            }
            Long("wait") => wait = true,
            Long("token-file") => token_file = Some(p.value()?.into()),
            Long("url") => url = p.value()?.string()?,
            _ => return Err(arg.unexpected().into()),
        }
    }
    let kind = kind.ok_or_else(|| Fail(2, "task submit needs a TYPE".into()))?;
    if !depends_on.is_empty() {
        body.insert("depends_on".into(), Value::Array(depends_on));
    }
    body.insert("type".into(), json!(kind));
    if !labels.is_empty() {
        body.insert("labels".into(), Value::Object(labels));
    }
    let to = addr(&url)?;
    let token = token(token_file)?;
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    let (status, b) = client::request_body(&to, "POST", "/api/tasks", token.as_deref(), &bytes)?;
    let t = answer(&to, status, &b)?;
    let id = t["id"].as_str().unwrap_or_default().to_string();
    println!("{id}");
    if !wait {
        return Ok(());
    }
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let (status, b) = client::get(&to, &format!("/api/tasks/{id}"))?;
        let t = answer(&to, status, &b)?;
        match t["state"].as_str() {
            Some("succeeded") => {
                if !t["result"].is_null() {
                    println!("{}", t["result"]);
                }
                return Ok(());
            }
            Some(s @ ("failed" | "dead")) => {
                let why = t["error"].as_str().unwrap_or("failed");
                return Err(Fail(3, format!("task {id} {s}: {why}")));
            }
            Some(s @ ("cancelled" | "timed_out")) => return Err(Fail(5, format!("task {id} {s}"))),
            _ => {}
        }
    }
}

fn one(url: &str, what: &str, args: &[String]) -> Out {
    let mut url = url.to_string();
    let (mut id, mut as_json, mut follow, mut token_file) = (None, false, false, None);
    let mut p = lexopt::Parser::from_args(args.iter().cloned());
    while let Some(arg) = p.next()? {
        match arg {
            Value(v) if id.is_none() => id = Some(v.string()?),
            Long("json") => as_json = true,
            Short('f') | Long("follow") if what == "logs" => follow = true,
            Long("token-file") => token_file = Some(p.value()?.into()),
            Long("url") => url = p.value()?.string()?,
            _ => return Err(arg.unexpected().into()),
        }
    }
    let id = task_id(id, what)?;
    let to = addr(&url)?;
    match what {
        "cancel" => {
            let token = token(token_file)?;
            let (status, b) =
                client::request(&to, "DELETE", &format!("/api/tasks/{id}"), token.as_deref())?;
            let t = answer(&to, status, &b)?;
            println!("{}", line(&t));
            Ok(())
        }
        "retry" => {
            let token = token(token_file)?;
            let path = format!("/api/tasks/{id}/retry");
            let (status, b) = client::request_body(&to, "POST", &path, token.as_deref(), b"")?;
            let t = answer(&to, status, &b)?;
            println!("{}", line(&t));
            Ok(())
        }
        "show" => {
            let (status, b) = client::get(&to, &format!("/api/tasks/{id}"))?;
            let t = answer(&to, status, &b)?;
            if as_json {
                println!("{}", serde_json::to_string_pretty(&t).unwrap_or_default());
            } else {
                for (k, v) in t.as_object().into_iter().flatten() {
                    if !v.is_null() {
                        println!("{k:<20} {v}");
                    }
                }
            }
            Ok(())
        }
        _ => {
            let mut since = 0u64;
            loop {
                // Whether it had ended before these lines were read.
                let (st, tb) = client::get(&to, &format!("/api/tasks/{id}"))?;
                let done = answer(&to, st, &tb)?["state"].as_str().is_some_and(|s| {
                    matches!(
                        s,
                        "succeeded" | "failed" | "cancelled" | "timed_out" | "dead"
                    )
                });
                let path = format!("/api/tasks/{id}/logs?since={since}");
                let (status, lb) = client::get_accepting_json(&to, &path)?;
                let v = answer(&to, status, &lb)?;
                for l in v["lines"].as_array().into_iter().flatten() {
                    println!("{}", l.as_str().unwrap_or_default());
                }
                since = v["next"].as_u64().unwrap_or(since);
                if !follow || done {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
}

/// A path segment as RFC 3986 allows it: unreserved bytes as they are,
/// the rest percent-encoded.
pub(super) fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A read-only listing command, `[--json]`: GET `path`, and with
/// `--json` print its `key` (the whole answer without one) and return
/// `None`; otherwise the answer, for a table. `-h` prints `usage`.
pub(super) fn listing(
    url: &str,
    args: &[String],
    usage: &str,
    path: &str,
    key: Option<&str>,
) -> Result<Option<Value>, Fail> {
    let mut url = url.to_string();
    let mut as_json = false;
    let mut p = lexopt::Parser::from_args(args.iter().cloned());
    while let Some(arg) = p.next()? {
        match arg {
            Long("json") => as_json = true,
            Long("url") => url = p.value()?.string()?,
            Short('h') | Long("help") => {
                println!("{usage}");
                return Ok(None);
            }
            _ => return Err(arg.unexpected().into()),
        }
    }
    let to = addr(&url)?;
    let (status, body) = client::get(&to, path)?;
    let v = answer(&to, status, &body)?;
    if as_json {
        let shown = key.map_or(&v, |k| &v[k]);
        println!(
            "{}",
            serde_json::to_string_pretty(shown).unwrap_or_default()
        );
        return Ok(None);
    }
    Ok(Some(v))
}

/// `muster queues [--json]`: each task type queued or paused.
pub(super) fn queues(url: &str, args: &[String]) -> Out {
    let usage = "usage: muster queues [--json]";
    let Some(v) = listing(url, args, usage, "/api/queues", Some("queues"))? else {
        return Ok(());
    };
    println!("{:<24} {:>8} STATE", "TYPE", "QUEUED");
    for q in v["queues"].as_array().into_iter().flatten() {
        println!(
            "{:<24} {:>8} {}",
            q["type"].as_str().unwrap_or("-"),
            q["queued"].as_u64().unwrap_or(0),
            if q["paused"] == true {
                "paused"
            } else {
                "running"
            }
        );
    }
    Ok(())
}

/// `muster queue pause|resume TYPE [--token-file F]`.
pub(super) fn queue(url: &str, args: &[String]) -> Out {
    const USE: &str = "usage: muster queue pause|resume TYPE [--token-file F]";
    let mut url = url.to_string();
    let (mut action, mut kind, mut token_file) = (None, None, None);
    let mut p = lexopt::Parser::from_args(args.iter().cloned());
    while let Some(arg) = p.next()? {
        match arg {
            Value(v) if action.is_none() => action = Some(v.string()?),
            Value(v) if kind.is_none() => kind = Some(v.string()?),
            Long("token-file") => token_file = Some(p.value()?.into()),
            Long("url") => url = p.value()?.string()?,
            Short('h') | Long("help") => {
                println!("{USE}");
                return Ok(());
            }
            _ => return Err(arg.unexpected().into()),
        }
    }
    let action = match action.as_deref() {
        Some(a @ ("pause" | "resume")) => a.to_string(),
        _ => return Err(Fail(2, USE.into())),
    };
    let kind = kind.ok_or_else(|| Fail(2, format!("queue {action} needs a TYPE")))?;
    let to = addr(&url)?;
    let token = token(token_file)?;
    let path = format!("/api/queues/{}/{action}", segment(&kind));
    let (status, b) = client::request_body(&to, "POST", &path, token.as_deref(), b"")?;
    let q = answer(&to, status, &b)?;
    println!(
        "{} {} ({} queued)",
        kind,
        if q["paused"] == true {
            "paused"
        } else {
            "resumed"
        },
        q["queued"].as_u64().unwrap_or(0)
    );
    Ok(())
}
