//! `muster-bench push`: the Prometheus Pushgateway way of reporting a
//! fleet's state, for comparison with heartbeats to musterd. W simulated
//! workers each PUT their metrics group (`/metrics/job/muster/instance/ID`,
//! text format) once per beat, paced to R updates a second over C
//! keep-alive connections. Reports updates sent and accepted (2xx), errors,
//! and the server's CPU and RSS from /proc.

use lexopt::prelude::*;
use muster::sys::procfs;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

const USAGE: &str = "usage: muster-bench push --url URL [options]

PUT each simulated worker's metrics to a Prometheus Pushgateway, paced.

options:
  --url URL            the Pushgateway (default http://127.0.0.1:9091)
  --workers W          simulated workers (default 1000)
  --rate R             updates per second, all workers together (default 10000)
  --duration D         how long (default 10s)
  --connections C      keep-alive connections, one thread each (default 8)
  --pid PID            the server's pid, for CPU and RSS
  --json               print the report as JSON
";

struct Opts {
    url: String,
    workers: usize,
    rate: u64,
    duration: Duration,
    connections: usize,
    pid: Option<u32>,
    json: bool,
}

fn parse(args: &[String]) -> Result<Option<Opts>, lexopt::Error> {
    let mut o = Opts {
        url: "http://127.0.0.1:9091".into(),
        workers: 1000,
        rate: 10_000,
        duration: Duration::from_secs(10),
        connections: 8,
        pid: None,
        json: false,
    };
    let mut p = lexopt::Parser::from_args(args.iter().cloned());
    while let Some(arg) = p.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(None),
            Long("url") => o.url = p.value()?.string()?,
            Long("workers") => o.workers = p.value()?.parse()?,
            Long("rate") => o.rate = p.value()?.parse()?,
            Long("duration") => {
                let v = p.value()?.string()?;
                o.duration =
                    muster::config::units::parse_duration(&v).map_err(lexopt::Error::from)?;
            }
            Long("connections") => o.connections = p.value()?.parse()?,
            Long("pid") => o.pid = Some(p.value()?.parse()?),
            Long("json") => o.json = true,
            _ => return Err(arg.unexpected()),
        }
    }
    if o.workers == 0 || o.rate == 0 || o.connections == 0 {
        return Err("--workers, --rate and --connections must be above 0".into());
    }
    Ok(Some(o))
}

pub fn main(args: &[String]) -> i32 {
    super::report::drive(
        "muster-bench push",
        USAGE,
        parse(args),
        |o: &Opts| (o.json, run(o)),
        print_table,
    )
}

/// One PUT and its response; the status code, or None on a broken
/// connection.
fn put(s: &mut TcpStream, host: &str, id: &str, seq: u64, buf: &mut Vec<u8>) -> Option<u16> {
    let body = format!(
        "# TYPE worker_cpu_usage gauge\nworker_cpu_usage {}\n# TYPE worker_memory_usage gauge\nworker_memory_usage 3.2\n# TYPE worker_queue_depth gauge\nworker_queue_depth {}\n# TYPE worker_seq gauge\nworker_seq {seq}\n",
        (seq % 100) as f64,
        seq % 10
    );
    let req = format!(
        "PUT /metrics/job/muster/instance/{id} HTTP/1.1\r\nHost: {host}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    buf.clear();
    let mut chunk = [0u8; 4096];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        if let Ok(httparse::Status::Complete(n)) = resp.parse(buf) {
            let len = muster::cli::client::content_length(resp.headers).unwrap_or(0);
            let code = resp.code;
            while buf.len() < n + len {
                let k = s.read(&mut chunk).ok().filter(|&k| k > 0)?;
                buf.extend_from_slice(&chunk[..k]);
            }
            return code;
        }
        let k = s.read(&mut chunk).ok().filter(|&k| k > 0)?;
        buf.extend_from_slice(&chunk[..k]);
    }
}

fn run(o: &Opts) -> Result<Value, String> {
    let to: SocketAddr = muster::cli::client::parse_url(&o.url)
        .map_err(|e| e.to_string())?
        .addr;
    let host = to.to_string();
    let proc0 = o.pid.and_then(procfs::cpu_and_rss);
    let start = Instant::now();
    let end = start + o.duration;
    let per = o.rate as f64 / o.connections as f64;
    let threads: Vec<_> = (0..o.connections)
        .map(|c| {
            let (host, workers, conns) = (host.clone(), o.workers, o.connections);
            std::thread::spawn(move || -> (u64, u64, u64) {
                let Ok(mut s) = TcpStream::connect(to) else {
                    return (0, 0, 1);
                };
                let _ = s.set_nodelay(true);
                let mine: Vec<String> = (c..workers)
                    .step_by(conns)
                    .map(|i| format!("push-{i}"))
                    .collect();
                let (mut sent, mut ok, mut errors, mut w) = (0u64, 0u64, 0u64, 0usize);
                let mut buf = Vec::new();
                while Instant::now() < end && !mine.is_empty() {
                    let due = start.elapsed().as_secs_f64() * per;
                    if (sent as f64) >= due {
                        std::thread::sleep(Duration::from_micros(200));
                        continue;
                    }
                    sent += 1;
                    match put(&mut s, &host, &mine[w], sent, &mut buf) {
                        Some(code) if (200..300).contains(&code) => ok += 1,
                        Some(_) => errors += 1,
                        None => {
                            errors += 1;
                            match TcpStream::connect(to) {
                                Ok(n) => s = n,
                                Err(_) => break,
                            }
                        }
                    }
                    w = (w + 1) % mine.len();
                }
                (sent, ok, errors)
            })
        })
        .collect();
    let (mut sent, mut ok, mut errors) = (0, 0, 0);
    for t in threads {
        let (s, k, e) = t.join().map_err(|_| "a client thread panicked")?;
        sent += s;
        ok += k;
        errors += e;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let proc1 = o.pid.and_then(procfs::cpu_and_rss);
    Ok(json!({
        "workers": o.workers,
        "target_rate": o.rate,
        "duration_s": elapsed,
        "sent": sent,
        "accepted": ok,
        "errors": errors,
        "accepted_per_s": ok as f64 / elapsed,
        "server_cpu_cores": match (proc0, proc1) { (Some((a, _)), Some((b, _))) => Some((b - a) / elapsed), _ => None },
        "server_rss_kib": proc1.map(|(_, kb)| kb),
        "server_rss_before_kib": proc0.map(|(_, kb)| kb),
    }))
}

fn print_table(r: &Value) {
    println!(
        "pushgateway: {} workers, target {}/s for {:.1}s",
        r["workers"],
        r["target_rate"],
        r["duration_s"].as_f64().unwrap_or(0.0)
    );
    println!("  sent            {:>12}", r["sent"]);
    println!(
        "  accepted (2xx)  {:>12}  ({:.0}/s)",
        r["accepted"],
        r["accepted_per_s"].as_f64().unwrap_or(0.0)
    );
    println!("  errors          {:>12}", r["errors"]);
    match r["server_cpu_cores"].as_f64() {
        Some(c) => println!(
            "  server          cpu {c:.3} cores, rss {} KiB",
            r["server_rss_kib"]
        ),
        None => println!("  server          (pass --pid for CPU and RSS)"),
    }
}
