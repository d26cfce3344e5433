//! `muster schedule add|ls|rm|pause|resume`: periodic tasks from a
//! terminal. Changes send the API token from `--token-file` or
//! `$MUSTER_TOKEN_FILE`.

use super::client;
use super::tasks::{addr, answer, listing, segment, token};
use super::{Fail, Out};
use lexopt::prelude::*;
use serde_json::{Map, json};

const ADD_USE: &str = "usage: muster schedule add NAME CRON TYPE [--timezone ZONE] [--payload JSON] [--priority N] [--overlap skip|allow|cancel] [--catch-up skip|once] [--paused] [--token-file F]\nCRON: 5 fields (\"*/5 * * * *\"), a macro (@hourly, @daily), or \"@every 30s\"";
const LS_USE: &str = "usage: muster schedule ls [--json]";
const ONE_USE: &str = "usage: muster schedule rm|pause|resume NAME [--token-file F]";

pub(super) fn schedule(url: &str, args: &[String]) -> Out {
    let all = format!("{ADD_USE}\n{LS_USE}\n{ONE_USE}");
    let Some((sub, rest)) = args.split_first() else {
        return Err(Fail(2, all));
    };
    if ["-h", "--help"].contains(&sub.as_str()) {
        println!("{all}");
        return Ok(());
    }
    if rest.iter().any(|a| a == "-h" || a == "--help") {
        let usage = match sub.as_str() {
            "add" => ADD_USE,
            "ls" => LS_USE,
            _ => ONE_USE,
        };
        println!("{usage}");
        return Ok(());
    }
    match sub.as_str() {
        "add" => add(url, rest),
        "ls" => list(url, rest),
        "rm" | "pause" | "resume" => one(url, sub, rest),
        other => Err(Fail(
            2,
            format!("unknown schedule command {other:?}\n{all}"),
        )),
    }
}

fn add(url: &str, args: &[String]) -> Out {
    let mut url = url.to_string();
    let mut words = Vec::new();
    let (mut body, mut task) = (Map::new(), Map::new());
    let mut token_file = None;
    let mut p = lexopt::Parser::from_args(args.iter().cloned());
    while let Some(arg) = p.next()? {
        match arg {
            Value(v) => words.push(v.string()?),
            Long("timezone") => {
                body.insert("timezone".into(), json!(p.value()?.string()?));
            }
            Long("overlap") => {
                body.insert("overlap".into(), json!(p.value()?.string()?));
            }
            Long("catch-up") => {
                body.insert("catch_up".into(), json!(p.value()?.string()?));
            }
            Long("paused") => {
                body.insert("paused".into(), json!(true));
            }
            Long("payload") => {
                let v = p.value()?.string()?;
                let payload: serde_json::Value = serde_json::from_str(&v)
                    .map_err(|e| Fail(2, format!("--payload is not JSON: {e}")))?;
                task.insert("payload".into(), payload);
            }
            Long("priority") => {
                let v = p.value()?.string()?;
                let n: i64 = v
                    .parse()
                    .map_err(|_| Fail(2, format!("--priority needs a whole number, got {v:?}")))?;
                task.insert("priority".into(), json!(n));
            }
            Long("token-file") => token_file = Some(p.value()?.into()),
            Long("url") => url = p.value()?.string()?,
            _ => return Err(arg.unexpected().into()),
        }
    }
    let [name, cron, kind] = <[String; 3]>::try_from(words)
        .map_err(|_| Fail(2, format!("schedule add needs NAME CRON TYPE\n{ADD_USE}")))?;
    task.insert("type".into(), json!(kind));
    body.insert("name".into(), json!(name));
    body.insert("cron".into(), json!(cron));
    body.insert("task".into(), serde_json::Value::Object(task));
    let to = addr(&url)?;
    let token = token(token_file)?;
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    let (status, b) =
        client::request_body(&to, "POST", "/api/schedules", token.as_deref(), &bytes)?;
    let s = answer(&to, status, &b)?;
    println!(
        "{name} {}: next tick {}",
        if status == 201 { "made" } else { "changed" },
        next(&s)
    );
    Ok(())
}

/// A schedule's next tick, as people read it.
fn next(s: &serde_json::Value) -> String {
    match s["next_tick"].as_u64() {
        Some(ms) => jiff::Timestamp::from_millisecond(ms as i64)
            .map_or_else(|_| ms.to_string(), |t| t.to_string()),
        None if s["paused"] == true => "none (paused)".into(),
        None => "none".into(),
    }
}

fn list(url: &str, args: &[String]) -> Out {
    let Some(v) = listing(url, args, LS_USE, "/api/schedules", Some("schedules"))? else {
        return Ok(());
    };
    println!(
        "{:<20} {:<16} {:<16} {:>6} {:>7} NEXT",
        "NAME", "CRON", "TIMEZONE", "FIRED", "SKIPPED"
    );
    for s in v["schedules"].as_array().into_iter().flatten() {
        let t = |k: &str| s[k].as_str().unwrap_or("-").to_string();
        println!(
            "{:<20} {:<16} {:<16} {:>6} {:>7} {}",
            t("name"),
            t("cron"),
            t("timezone"),
            s["fired"].as_u64().unwrap_or(0),
            s["skipped"].as_u64().unwrap_or(0),
            next(s)
        );
    }
    Ok(())
}

fn one(url: &str, what: &str, args: &[String]) -> Out {
    let mut url = url.to_string();
    let (mut name, mut token_file) = (None, None);
    let mut p = lexopt::Parser::from_args(args.iter().cloned());
    while let Some(arg) = p.next()? {
        match arg {
            Value(v) if name.is_none() => name = Some(v.string()?),
            Long("token-file") => token_file = Some(p.value()?.into()),
            Long("url") => url = p.value()?.string()?,
            _ => return Err(arg.unexpected().into()),
        }
    }
    let name = name.ok_or_else(|| Fail(2, format!("schedule {what} needs a NAME")))?;
    let to = addr(&url)?;
    let token = token(token_file)?;
    let path = format!("/api/schedules/{}", segment(&name));
    let (method, path) = match what {
        "rm" => ("DELETE", path),
        other => ("POST", format!("{path}/{other}")),
    };
    let (status, b) = client::request_body(&to, method, &path, token.as_deref(), b"")?;
    let s = answer(&to, status, &b)?;
    let done = match what {
        "rm" => "deleted".to_string(),
        "pause" => "paused".to_string(),
        _ => format!("resumed: next tick {}", next(&s)),
    };
    println!("{name} {done}");
    Ok(())
}
