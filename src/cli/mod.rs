//! The `muster` command line: operator commands (`workers`, `status`,
//! `health`, `watch`) over musterd's HTTP and WebSocket API, the worker-side
//! `beat` for shell scripts, and `bench`.
//!
//! Exit codes: 0 ok, 1 daemon unreachable or an error answer, 2 usage,
//! 4 worker not found. Errors are one line on stderr, never a backtrace.
//! Colour only on a terminal and never with `NO_COLOR` set.

pub mod agent;
pub mod bench;
pub mod client;

use crate::VERSION;
use crate::proto;
use client::ClientError;
use lexopt::prelude::*;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

const USAGE: &str = "muster: the command line for musterd

usage: muster [--url URL] <command> [options]

operator commands:
  workers [--status S] [--json]     list workers as a table
  status ID [--json]                everything known about one worker
  health [--json]                   the daemon's health and counters
  watch [ID] [--status S]           live view over WebSocket; reconnects

worker commands:
  beat --id ID [--status S] [--cpu N] [--mem N] [--queue N] [--tcp]
                                    send one heartbeat (UDP unless --tcp)
  beat --id ID --bye                say goodbye: the worker is terminated
  agent [options] -- CMD [ARGS...]  run CMD as a monitored worker (usage, runs)
  agent [options] --pid PID         watch a running process until it exits

other:
  bench heartbeats [options]        load musterd and report what it applied
  help, version

The daemon is at --url or $MUSTER_URL (default http://127.0.0.1:8080);
heartbeats go to --heartbeat-addr or $MUSTER_HEARTBEAT_ADDR (default
127.0.0.1:8090). Exit status: 0 ok, 1 daemon unreachable or error,
2 usage, 4 worker not found. `muster <command> --help` for details.
";

/// A failed command: its exit code and one line for stderr.
struct Fail(i32, String);

impl From<ClientError> for Fail {
    fn from(e: ClientError) -> Fail {
        match e {
            ClientError::Status(404, m) => Fail(4, m),
            e => Fail(1, e.to_string()),
        }
    }
}

impl From<lexopt::Error> for Fail {
    fn from(e: lexopt::Error) -> Fail {
        Fail(2, format!("{e} (see --help)"))
    }
}

type Out = Result<(), Fail>;

pub fn main(args: Vec<String>) -> i32 {
    match run(args) {
        Ok(()) => 0,
        Err(Fail(code, msg)) => {
            if !msg.is_empty() {
                eprintln!("muster: {msg}");
            }
            code
        }
    }
}

fn run(args: Vec<String>) -> Out {
    // Global --url before the command.
    let mut url = crate::cli::client::env_url();
    let mut rest = args.into_iter().peekable();
    let mut head = Vec::new();
    while let Some(a) = rest.peek() {
        if a == "--url" {
            rest.next();
            url = rest
                .next()
                .ok_or_else(|| Fail(2, "--url needs a value".into()))?;
        } else if let Some(u) = a.strip_prefix("--url=") {
            url = u.to_string();
            rest.next();
        } else {
            head.push(rest.next().unwrap_or_default());
            break;
        }
    }
    let cmd = head.pop();
    let args: Vec<String> = rest.collect();
    match cmd.as_deref() {
        None | Some("help" | "-h" | "--help") => {
            print!("{USAGE}");
            Ok(())
        }
        Some("version" | "-V" | "--version") => {
            println!("muster {VERSION}");
            Ok(())
        }
        Some("workers") => workers(&url, &args),
        Some("status") => status(&url, &args),
        Some("health") => health(&url, &args),
        Some("watch") => watch(&url, &args),
        Some("beat") => beat(&args),
        Some("agent") => match crate::cli::agent::main(&args) {
            0 => Ok(()),
            // The agent has said what went wrong, or passes on CMD's status.
            n => Err(Fail(n, String::new())),
        },
        Some("bench") => match crate::cli::bench::main(&args) {
            0 => Ok(()),
            // bench has said what went wrong.
            n => Err(Fail(n, String::new())),
        },
        Some(other) => Err(Fail(
            2,
            format!("unknown command {other:?} (see muster --help)"),
        )),
    }
}

/// `--url` may also follow the command.
fn take_url(p: &mut lexopt::Parser, url: &mut String) -> Result<(), Fail> {
    *url = p.value()?.string()?;
    Ok(())
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

fn workers(url: &str, args: &[String]) -> Out {
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
    print!(
        "{}",
        table(&list, crate::clock::unix_ms(), colour_enabled())
    );
    Ok(())
}

fn status(url: &str, args: &[String]) -> Out {
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
    let id = id.ok_or_else(|| Fail(2, "status needs a worker id".into()))?;
    if proto::check_worker_id(&id).is_err() {
        return Err(Fail(2, format!("{id:?} is not a valid worker id")));
    }
    let v = client::get_json(addr(&url)?, &format!("/api/workers/{id}")).map_err(|e| match e {
        ClientError::Status(404, _) => Fail(4, format!("no worker {id}")),
        e => e.into(),
    })?;
    if as_json {
        print_json(&v);
        return Ok(());
    }
    let now = crate::clock::unix_ms();
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

fn health(url: &str, args: &[String]) -> Out {
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

fn watch(url: &str, args: &[String]) -> Out {
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
            let _ = write!(
                out,
                "\x1b[H\x1b[2J{}",
                table(&list, crate::clock::unix_ms(), colour)
            );
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

fn beat(args: &[String]) -> Out {
    let mut hb_addr = crate::cli::client::env_heartbeat_addr();
    let mut frame = Map::new();
    let (mut id, mut tcp, mut bye) = (None, false, false);
    let mut p = lexopt::Parser::from_args(args.iter().cloned());
    let number = |p: &mut lexopt::Parser, name: &str| -> Result<Value, Fail> {
        let v = p.value()?.string()?;
        v.parse::<f64>()
            .ok()
            .filter(|x| x.is_finite())
            .map(|x| json!(x))
            .ok_or_else(|| Fail(2, format!("--{name} needs a number, got {v:?}")))
    };
    while let Some(arg) = p.next()? {
        match arg {
            Long("id") => id = Some(p.value()?.string()?),
            Long("status") => {
                frame.insert("status".into(), json!(p.value()?.string()?));
            }
            Long("cpu") => {
                let v = number(&mut p, "cpu")?;
                frame.insert("cpu_usage".into(), v);
            }
            Long("mem") => {
                let v = number(&mut p, "mem")?;
                frame.insert("memory_usage".into(), v);
            }
            Long("queue") => {
                let v = p.value()?.string()?;
                let q: u64 = v
                    .parse()
                    .map_err(|_| Fail(2, format!("--queue needs a whole number, got {v:?}")))?;
                frame.insert("queue_depth".into(), json!(q));
            }
            Long("tcp") => tcp = true,
            Long("udp") => tcp = false,
            Long("bye") => bye = true,
            Long("heartbeat-addr") => hb_addr = p.value()?.string()?,
            Short('h') | Long("help") => {
                println!(
                    "usage: muster beat --id ID [--status idle|working|error] [--cpu N] [--mem N] [--queue N] [--tcp] [--heartbeat-addr ADDR]\n       muster beat --id ID --bye"
                );
                return Ok(());
            }
            _ => return Err(arg.unexpected().into()),
        }
    }
    let id = id.ok_or_else(|| Fail(2, "beat needs --id".into()))?;
    frame.insert("type".into(), json!(if bye { "bye" } else { "heartbeat" }));
    frame.insert("worker_id".into(), json!(id));
    let text = Value::Object(frame).to_string();
    // Check it here: over UDP the daemon cannot tell us what was wrong.
    if let Err(r) = proto::decode(text.as_bytes(), 65536) {
        return Err(Fail(2, r.to_string()));
    }
    let to = client::parse_url(&hb_addr)
        .map_err(|_| Fail(2, format!("bad --heartbeat-addr {hb_addr:?}")))?;
    if tcp {
        beat_tcp(to, &id, &text)
    } else {
        let s = UdpSocket::bind(if to.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" })
            .map_err(|e| Fail(1, format!("udp socket: {e}")))?;
        s.send_to(text.as_bytes(), to)
            .map_err(|e| Fail(1, format!("cannot send to {to}: {e}")))?;
        Ok(())
    }
}

/// hello, the frame, and a check that no error came back.
fn beat_tcp(to: SocketAddr, id: &str, text: &str) -> Out {
    let unreachable = |e: std::io::Error| Fail(1, format!("cannot reach musterd at {to}: {e}"));
    let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(5)).map_err(unreachable)?;
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .map_err(unreachable)?;
    let hello = json!({"type": "hello", "worker_id": id, "pid": std::process::id()}).to_string();
    s.write_all(format!("{hello}\n{text}\n").as_bytes())
        .map_err(unreachable)?;
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut reply = String::new();
    let _ = std::io::Read::read_to_string(&mut s, &mut reply);
    for line in reply.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or(Value::Null);
        if v["type"] == "error" {
            return Err(Fail(
                1,
                format!(
                    "musterd refused the frame: {} ({})",
                    v["message"].as_str().unwrap_or("?"),
                    v["code"].as_str().unwrap_or("?")
                ),
            ));
        }
    }
    if !reply.contains("\"welcome\"") {
        return Err(Fail(1, format!("no welcome from musterd at {to}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
