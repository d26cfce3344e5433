//! Operator commands over musterd's HTTP and WebSocket API: `workers`,
//! `status`, `health` and `watch`, and the table they share.

use super::client::{self, ClientError};
use super::{Fail, Out};
use crate::clock::unix_ms;
use crate::proto;
use lexopt::prelude::*;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

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

fn colour_enabled() -> bool {
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

/// "3s ago", "5m ago", "2h ago".
pub fn ago(then_ms: u64, now_ms: u64) -> String {
    let s = now_ms.saturating_sub(then_ms) / 1000;
    match s {
        0..60 => format!("{s}s ago"),
        60..3600 => format!("{}m ago", s / 60),
        3600..86400 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86400),
    }
}

fn num(v: &Value, digits: usize) -> String {
    v.as_f64()
        .map_or("-".to_string(), |x| format!("{x:.digits$}"))
}

/// The table of `muster workers` and `muster watch`.
pub fn table(workers: &[&Value], now_ms: u64, colour: bool) -> String {
    let header = [
        "ID",
        "STATUS",
        "ACTIVE",
        "CPU%",
        "MEM%",
        "RSS MB",
        "QUEUE",
        "LAST SEEN",
    ];
    let rows: Vec<[String; 8]> = workers
        .iter()
        .map(|w| {
            [
                w["worker_id"].as_str().unwrap_or("?").to_string(),
                w["status"].as_str().unwrap_or("?").to_string(),
                if w["is_active"] == true { "yes" } else { "no" }.to_string(),
                num(&w["cpu_usage"], 1),
                num(&w["memory_usage"], 1),
                num(&w["resource_usage"]["rss_mb"], 1),
                w["queue_depth"]
                    .as_u64()
                    .map_or("-".into(), |q| q.to_string()),
                w["last_update"]
                    .as_u64()
                    .map_or("-".into(), |t| ago(t, now_ms)),
            ]
        })
        .collect();
    let mut width = header.map(str::len);
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.len());
        }
    }
    let mut out = String::new();
    let line = |cells: &[String], out: &mut String, paint_status: bool| {
        for (i, c) in cells.iter().enumerate() {
            let pad = " ".repeat(width[i] - c.len());
            let shown = if i == 1 && paint_status {
                paint(c, colour)
            } else {
                c.clone()
            };
            // Numbers right-aligned, text left-aligned.
            if (3..=6).contains(&i) {
                out.push_str(&format!("{pad}{shown}"));
            } else {
                out.push_str(&format!("{shown}{pad}"));
            }
            out.push_str(if i + 1 < cells.len() { "  " } else { "\n" });
        }
    };
    line(&header.map(String::from), &mut out, false);
    for r in &rows {
        line(r, &mut out, true);
    }
    out
}

pub(super) fn workers(url: &str, args: &[String]) -> Out {
    let mut url = url.to_string();
    let (mut status, mut as_json) = (None, false);
    let mut p = lexopt::Parser::from_args(args.iter().cloned());
    while let Some(arg) = p.next()? {
        match arg {
            Long("status") => status = Some(p.value()?.string()?),
            Long("json") => as_json = true,
            Long("url") => take_url(&mut p, &mut url)?,
            Short('h') | Long("help") => {
                println!(
                    "usage: muster workers [--status S] [--json]\n\nS is created, idle, working, error, inactive, terminated or active."
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
    if as_json {
        print_json(&v);
        return Ok(());
    }
    let list: Vec<&Value> = v.as_array().map(|a| a.iter().collect()).unwrap_or_default();
    if list.is_empty() {
        println!("no workers");
        return Ok(());
    }
    print!("{}", table(&list, unix_ms(), colour_enabled()));
    Ok(())
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
                println!("usage: muster status ID [--json]");
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
    let obj = v.as_object().cloned().unwrap_or_default();
    let keys: BTreeMap<&String, &Value> = obj.iter().collect();
    for (k, val) in keys {
        let shown = match (k.as_str(), val) {
            ("status", Value::String(s)) => paint(s, colour_enabled()),
            ("last_update" | "created_at" | "first_seen", Value::Number(n)) => {
                format!("{n} ({})", ago(n.as_u64().unwrap_or(0), now))
            }
            (_, Value::String(s)) => s.clone(),
            (_, Value::Null) => "-".into(),
            (_, other) => other.to_string(),
        };
        println!("{k:<26} {shown}");
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
                println!("usage: muster health [--json]");
                return Ok(());
            }
            _ => return Err(arg.unexpected().into()),
        }
    }
    let v = client::get_json(addr(&url)?, "/health")?;
    if as_json {
        print_json(&v);
        return Ok(());
    }
    let w = &v["workers"];
    let f = &v["frames"];
    println!(
        "status     {} (musterd {}, up {}s)",
        v["status"].as_str().unwrap_or("?"),
        v["version"].as_str().unwrap_or("?"),
        v["uptime_seconds"]
    );
    println!(
        "workers    {} total, {} active, {} inactive, {} terminated (max {})",
        w["total"], w["active"], w["inactive"], w["terminated"], w["max"]
    );
    println!(
        "frames     {} received, {} applied, {} rejected, {} dropped, {} kernel drops",
        f["received"], f["applied"], f["rejected"], f["dropped"], v["udp_kernel_drops"]
    );
    Ok(())
}

pub(super) fn watch(url: &str, args: &[String]) -> Out {
    let mut url = url.to_string();
    let (mut id, mut status) = (None, None);
    let mut p = lexopt::Parser::from_args(args.iter().cloned());
    while let Some(arg) = p.next()? {
        match arg {
            Value(v) if id.is_none() => id = Some(v.string()?),
            Long("status") => status = Some(p.value()?.string()?),
            Long("url") => take_url(&mut p, &mut url)?,
            Short('h') | Long("help") => {
                println!(
                    "usage: muster watch [ID] [--status S]\n\nOn a terminal the table is redrawn in place; otherwise one line per change.\nReconnects with backoff when the daemon restarts. Ctrl-C ends."
                );
                return Ok(());
            }
            _ => return Err(arg.unexpected().into()),
        }
    }
    if let Some(id) = &id {
        if proto::check_worker_id(id).is_err() {
            return Err(Fail(2, format!("{id:?} is not a valid worker id")));
        }
    }
    let http = addr(&url)?;
    let mut path = match &id {
        Some(id) => format!("/ws/telemetry/{id}"),
        None => "/ws/telemetry".to_string(),
    };
    if let Some(s) = &status {
        path.push_str(&format!("?status={s}"));
    }
    let tty = std::io::stdout().is_terminal();
    let mut backoff = Duration::from_millis(250);
    let mut said_down = false;
    loop {
        match watch_once(http, &path, tty) {
            Ok(()) => backoff = Duration::from_millis(250),
            Err(WatchEnd::Refused(code, msg)) => return Err(Fail(code, msg)),
            Err(WatchEnd::Lost(msg)) => {
                if !said_down {
                    eprintln!("muster: {msg}; reconnecting");
                    said_down = true;
                }
            }
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

enum WatchEnd {
    /// The daemon answered but refused: do not retry.
    Refused(i32, String),
    /// The connection failed or dropped: retry.
    Lost(String),
}

fn watch_once(http: SocketAddr, path: &str, tty: bool) -> Result<(), WatchEnd> {
    let stream = TcpStream::connect_timeout(&http, Duration::from_secs(5))
        .map_err(|e| WatchEnd::Lost(format!("cannot reach musterd at {http}: {e}")))?;
    let url = format!("ws://{http}{path}");
    let (mut ws, _) = tungstenite::client(url.as_str(), stream).map_err(|e| match e {
        tungstenite::HandshakeError::Failure(tungstenite::Error::Http(resp)) => {
            let code = resp.status().as_u16();
            let body = resp
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice::<Value>(b).ok());
            let msg = body
                .and_then(|b| b["message"].as_str().map(String::from))
                .unwrap_or_else(|| format!("musterd answered {code}"));
            WatchEnd::Refused(if code == 400 { 2 } else { 1 }, msg)
        }
        e => WatchEnd::Lost(format!("websocket handshake failed: {e}")),
    })?;
    let mut fleet: BTreeMap<String, Value> = BTreeMap::new();
    let colour = colour_enabled();
    let mut last_draw = Instant::now() - Duration::from_secs(1);
    loop {
        let msg = match ws.read() {
            Ok(tungstenite::Message::Text(t)) => t,
            Ok(tungstenite::Message::Close(_)) => {
                return Err(WatchEnd::Lost("musterd closed the stream".into()));
            }
            Ok(_) => continue,
            Err(e) => return Err(WatchEnd::Lost(format!("stream lost: {e}"))),
        };
        let Ok(v) = serde_json::from_str::<Value>(&msg) else {
            continue;
        };
        let kind = v["type"].as_str().unwrap_or("");
        let changed: Map<String, Value> = v["workers"].as_object().cloned().unwrap_or_default();
        if kind == "snapshot" {
            fleet.clear();
        }
        for id in v["worker_ids"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            fleet.remove(id);
            if !tty {
                println!("{} {id} removed", v["timestamp"]);
            }
        }
        for (id, w) in &changed {
            fleet.insert(id.clone(), w.clone());
            if !tty {
                println!(
                    "{} {id} {} cpu={} mem={} queue={}",
                    v["timestamp"],
                    w["status"].as_str().unwrap_or("?"),
                    num(&w["cpu_usage"], 1),
                    num(&w["memory_usage"], 1),
                    w["queue_depth"]
                );
            }
        }
        if tty && last_draw.elapsed() >= Duration::from_millis(100) {
            last_draw = Instant::now();
            let list: Vec<&Value> = fleet.values().collect();
            let mut out = std::io::stdout().lock();
            let _ = write!(out, "\x1b[H\x1b[2J{}", table(&list, unix_ms(), colour));
            let _ = writeln!(
                out,
                "\n{} workers, watching {path} (Ctrl-C to stop)",
                fleet.len()
            );
            let _ = out.flush();
        } else if !tty {
            let _ = std::io::stdout().flush();
        }
    }
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
    }

    #[test]
    fn table_aligns_and_fills_blanks() {
        let a = json!({"worker_id":"w1","status":"working","is_active":true,"cpu_usage":12.5,"memory_usage":null,"resource_usage":{"rss_mb":52.8},"queue_depth":5,"last_update":1000});
        let b = json!({"worker_id":"longer-id","status":"inactive","is_active":false,"queue_depth":0,"last_update":1000});
        let t = table(&[&a, &b], 4000, false);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("ID         STATUS"));
        assert!(
            lines[1].contains("w1")
                && lines[1].contains("12.5")
                && lines[1].contains("52.8")
                && lines[1].contains("3s ago")
        );
        assert!(lines[2].contains("inactive") && lines[2].contains(" -  "));
        assert!(!t.contains('\x1b'), "no colour when asked for none");
        assert!(table(&[&a], 4000, true).contains("\x1b[32mworking"));
    }
}
