//! `muster bench ws`: N WebSocket clients on `/ws/telemetry` while W
//! workers send paced UDP heartbeats; each heartbeat carries its send time
//! (label `sent_us`, Unix microseconds), and clients record the time from
//! send to the update that shows it. Reports p50, p99 and max latency,
//! messages received, and musterd's CPU and RSS. `--stalled K` adds K
//! clients that connect and never read.
//!
//! Client and daemon share this host's clock. Each client keeps a sample of
//! latencies (bounded), so memory stays flat however long the run.

use crate::client;
use crate::procfs;
use lexopt::prelude::*;
use serde_json::{Value, json};
use std::io::Write;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tungstenite::Message;

const USAGE: &str = "usage: muster bench ws [options]

WebSocket clients on /ws/telemetry; heartbeat-sent to update-received latency.

options:
  --clients N          WebSocket clients (default 1000)
  --workers W          simulated workers (default 1000)
  --rate R             heartbeats per second, all workers together (default 1000)
  --duration D         how long to send (default 10s)
  --stalled K          extra clients that connect and never read (default 0)
  --pid PID            musterd's pid for CPU and RSS (default: found in /proc)
  --url URL            musterd's HTTP address (default $MUSTER_URL or http://127.0.0.1:8080)
  --heartbeat-addr A   musterd's heartbeat address (default $MUSTER_HEARTBEAT_ADDR or 127.0.0.1:8090)
  --json               print the report as JSON
";

/// Latency samples kept per client at most.
const SAMPLES_PER_CLIENT: usize = 20_000;

struct Opts {
    clients: usize,
    workers: usize,
    rate: u64,
    duration: Duration,
    stalled: usize,
    pid: Option<u32>,
    url: String,
    heartbeat: String,
    json: bool,
}

fn parse(args: &[String]) -> Result<Option<Opts>, lexopt::Error> {
    let mut o = Opts {
        clients: 1000,
        workers: 1000,
        rate: 1000,
        duration: Duration::from_secs(10),
        stalled: 0,
        pid: None,
        url: crate::client::env_url(),
        heartbeat: crate::client::env_heartbeat_addr(),
        json: false,
    };
    let mut p = lexopt::Parser::from_args(args.iter().cloned());
    while let Some(arg) = p.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(None),
            Long("clients") => o.clients = p.value()?.parse()?,
            Long("workers") => o.workers = p.value()?.parse()?,
            Long("rate") => o.rate = p.value()?.parse()?,
            Long("duration") => {
                let v = p.value()?.string()?;
                o.duration = crate::config::parse_duration(&v).map_err(lexopt::Error::from)?;
            }
            Long("stalled") => o.stalled = p.value()?.parse()?,
            Long("pid") => o.pid = Some(p.value()?.parse()?),
            Long("url") => o.url = p.value()?.string()?,
            Long("heartbeat-addr") => o.heartbeat = p.value()?.string()?,
            Long("json") => o.json = true,
            _ => return Err(arg.unexpected()),
        }
    }
    if o.clients == 0 || o.workers == 0 || o.rate == 0 {
        return Err("--clients, --workers and --rate must be above 0".into());
    }
    Ok(Some(o))
}

pub fn main(args: &[String]) -> i32 {
    crate::bench::drive(
        "muster bench ws",
        USAGE,
        parse(args),
        |o: &Opts| (o.json, run(o)),
        print_table,
    )
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

type Ws = tungstenite::WebSocket<TcpStream>;

fn connect(http: SocketAddr) -> Result<Ws, String> {
    let s = TcpStream::connect(http).map_err(|e| format!("connect {http}: {e}"))?;
    let (ws, _) = tungstenite::client(format!("ws://{http}/ws/telemetry").as_str(), s)
        .map_err(|e| format!("websocket handshake: {e}"))?;
    Ok(ws)
}

/// One reading client: record send-to-receive latency of sampled updates.
fn reader(mut ws: Ws, stop: Arc<AtomicBool>, messages: Arc<AtomicU64>, every: u64) -> Vec<u32> {
    let _ = ws
        .get_mut()
        .set_read_timeout(Some(Duration::from_millis(200)));
    let mut samples = Vec::new();
    let mut seen = 0u64;
    while !stop.load(Relaxed) {
        let text = match ws.read() {
            Ok(Message::Text(t)) => t,
            Ok(_) => continue,
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(_) => break,
        };
        let now = now_us();
        messages.fetch_add(1, Relaxed);
        // Scan for the send stamps instead of parsing the JSON: the client
        // must stay cheaper than the server it measures.
        if !text.starts_with("{\"type\":\"update\"") {
            continue;
        }
        for (i, _) in text.match_indices("\"sent_us\":\"") {
            seen += 1;
            if seen % every != 0 || samples.len() >= SAMPLES_PER_CLIENT {
                continue;
            }
            let digits = &text[i + 11..];
            let end = digits.find('"').unwrap_or(0);
            if let Ok(sent) = digits[..end].parse::<u64>() {
                samples.push(now.saturating_sub(sent).min(u32::MAX as u64) as u32);
            }
        }
    }
    samples
}

fn percentile(sorted: &[u32], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    Some(sorted[i] as f64 / 1000.0)
}

fn run(o: &Opts) -> Result<Value, String> {
    let http = client::parse_url(&o.url).map_err(|e| e.to_string())?;
    let hb = client::parse_url(&o.heartbeat).map_err(|e| e.to_string())?;
    let pid = o.pid.or_else(crate::bench::find_musterd);
    crate::capacity::raise_nofile();
    let prefix: Arc<str> = Arc::from(format!("wsb{}-", crate::worker::unix_ms() % 1_000_000));
    let stop = Arc::new(AtomicBool::new(false));
    let messages = Arc::new(AtomicU64::new(0));
    // Sample so that all clients together keep about 20,000 latencies a second.
    let every = ((o.clients as u64 * o.rate) / 20_000).max(1);
    let ready = Arc::new(Barrier::new(o.clients + 1));
    let mut readers = Vec::new();
    for _ in 0..o.clients {
        let ws = connect(http)?;
        let (stop, messages, ready) = (stop.clone(), messages.clone(), ready.clone());
        let t = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || {
                ready.wait();
                reader(ws, stop, messages, every)
            })
            .map_err(|e| format!("cannot start client thread: {e}"))?;
        readers.push(t);
    }
    // Stalled clients: handshake done, then never read.
    let stalled: Vec<Ws> = (0..o.stalled)
        .map(|_| connect(http))
        .collect::<Result<_, _>>()?;
    ready.wait();
    let proc0 = pid.and_then(procfs::cpu_and_rss);
    let sock = UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
    let start = Instant::now();
    let (mut sent, mut w) = (0u64, 0usize);
    let mut seq = vec![0u64; o.workers];
    while start.elapsed() < o.duration {
        let due = start.elapsed().as_secs_f64() * o.rate as f64;
        while (sent as f64) < due {
            seq[w] += 1;
            let frame = json!({"type": "heartbeat", "worker_id": format!("{prefix}{w}"), "seq": seq[w],
                "status": "working", "cpu_usage": (sent % 100) as f64, "labels": {"sent_us": now_us().to_string()}});
            let _ = sock.send_to(frame.to_string().as_bytes(), hb);
            sent += 1;
            w = (w + 1) % o.workers;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    let elapsed = start.elapsed().as_secs_f64();
    let proc1 = pid.and_then(procfs::cpu_and_rss);
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Relaxed);
    let mut all: Vec<u32> = Vec::new();
    for t in readers {
        all.extend(t.join().map_err(|_| "a client thread panicked")?);
    }
    let health = client::get_json(http, "/health").map_err(|e| e.to_string())?;
    drop(stalled);
    all.sort_unstable();
    let cpu = match (proc0, proc1) {
        (Some((a, _)), Some((b, _))) => Some((b - a) / elapsed),
        _ => None,
    };
    Ok(json!({
        "clients": o.clients,
        "stalled_clients": o.stalled,
        "workers": o.workers,
        "rate": o.rate,
        "duration_s": elapsed,
        "heartbeats_sent": sent,
        "messages_received": messages.load(Relaxed),
        "latency_samples": all.len(),
        "latency_p50_ms": percentile(&all, 0.50),
        "latency_p99_ms": percentile(&all, 0.99),
        "latency_max_ms": all.last().map(|&m| m as f64 / 1000.0),
        "ws_closed_stalled": health["connections"]["ws_closed_stalled"],
        "musterd_cpu_cores": cpu,
        "musterd_rss_kib": proc1.map(|(_, kb)| kb),
    }))
}

fn print_table(r: &Value) {
    let ms = |k: &str| {
        r[k].as_f64()
            .map_or("-".to_string(), |v| format!("{v:.2} ms"))
    };
    println!(
        "websocket: {} clients ({} stalled), {} workers at {}/s for {:.1}s",
        r["clients"],
        r["stalled_clients"],
        r["workers"],
        r["rate"],
        r["duration_s"].as_f64().unwrap_or(0.0)
    );
    println!("  heartbeats sent    {:>12}", r["heartbeats_sent"]);
    println!("  messages received  {:>12}", r["messages_received"]);
    println!("  latency p50        {:>12}", ms("latency_p50_ms"));
    println!("  latency p99        {:>12}", ms("latency_p99_ms"));
    println!(
        "  latency max        {:>12}  ({} samples)",
        ms("latency_max_ms"),
        r["latency_samples"]
    );
    println!("  stalled closed     {:>12}", r["ws_closed_stalled"]);
    match r["musterd_cpu_cores"].as_f64() {
        Some(c) => println!(
            "  musterd            cpu {c:.3} cores, rss {} KiB",
            r["musterd_rss_kib"]
        ),
        None => println!("  musterd            (not on this host or not found: pass --pid)"),
    }
    let _ = std::io::stdout().flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let v: Vec<u32> = (1..=100).map(|i| i * 1000).collect();
        assert_eq!(percentile(&v, 0.5), Some(51.0));
        assert_eq!(percentile(&v, 0.99), Some(99.0));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn options() {
        let a: Vec<String> = ["--clients", "5", "--stalled", "1", "--duration", "2s"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let o = parse(&a).unwrap().unwrap();
        assert_eq!(
            (o.clients, o.stalled, o.duration),
            (5, 1, Duration::from_secs(2))
        );
        assert!(parse(&["--clients".to_string(), "0".to_string()]).is_err());
    }
}
