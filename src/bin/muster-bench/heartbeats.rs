//! `muster-bench heartbeats`: a capacity tool. N simulated workers send
//! paced heartbeats with increasing `seq` over UDP or TCP for a duration;
//! then it asks musterd what it applied and reports sent, applied, lost,
//! kernel and inbox drops, and musterd's CPU and RSS (from /proc when the
//! daemon runs on this host).
//!
//! Applied counts come from the daemon's own per-worker
//! `messages_processed`, so "lost" is the truth as musterd sees it, not an
//! estimate. Worker ids carry a per-run prefix, so repeated runs against one
//! daemon do not mix.

use super::report::{drive, find_musterd, print_steal};
use lexopt::prelude::*;
use muster::cli::client;
use muster::cli::net::{self, Conn, Target};
use muster::sys::procfs;
use serde_json::{Value, json};
use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

const USAGE: &str = "usage: muster-bench heartbeats [options]
       muster-bench ws --help
       muster-bench push --help

Send paced heartbeats from N simulated workers and report what musterd applied.

options:
  --workers N          simulated workers (default 1000)
  --rate R             heartbeats per second, all workers together (default 10000)
  --interval D         or: each worker beats once every D (5s, 500ms): a rate of
                       workers / D, a fleet's shape (not with --rate)
  --duration D         how long to send: 500ms, 10s, 5m (default 10s)
  --udp | --tcp        transport (default udp); tcp opens one connection per worker
  --tls                TCP inside TLS (to musterd's heartbeat_tls_addr, as --heartbeat);
                       --ca-file F verifies it (default $MUSTER_TLS_CA_FILE, else the system's)
  --frame F            seed: shaped like a real worker's heartbeat, with nested
                       resource_usage and current_job, about 330 bytes (default);
                       minimal: type, id, seq, status and three numbers
  --payload-bytes B    pad each heartbeat to about B bytes (default: no padding)
  --threads T          sender threads (default 1)
  --pid PID            musterd's pid for CPU and RSS (default: found in /proc)
  --url URL            musterd's HTTP address (default $MUSTER_URL or http://127.0.0.1:8080)
  --heartbeat-addr A   musterd's heartbeat address (default $MUSTER_HEARTBEAT_ADDR or 127.0.0.1:8090)
  --worker-prefix P    worker ids P0, P1, …, the same each run, so that a second run
                       beats for a steady fleet (default: a new prefix per run)
  --json               print the report as JSON
";

#[derive(Clone, Debug)]
struct Opts {
    workers: usize,
    rate: u64,
    duration: Duration,
    tcp: bool,
    tls: bool,
    seed: bool,
    payload: usize,
    threads: usize,
    pid: Option<u32>,
    url: String,
    heartbeat: String,
    json: bool,
    prefix: Option<String>,
}

fn parse(args: &[String]) -> Result<Option<Opts>, lexopt::Error> {
    let mut o = Opts {
        workers: 1000,
        rate: 10_000,
        duration: Duration::from_secs(10),
        tcp: false,
        tls: false,
        seed: true,
        payload: 0,
        threads: 1,
        pid: None,
        url: muster::cli::client::env_url(),
        heartbeat: muster::cli::client::env_heartbeat_addr(),
        json: false,
        prefix: None,
    };
    let mut p = lexopt::Parser::from_args(args.iter().cloned());
    let mut mode = None;
    let (mut rate, mut interval) = (None, None);
    while let Some(arg) = p.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(None),
            Value(v) if mode.is_none() => mode = Some(v.string()?),
            Long("workers") => o.workers = p.value()?.parse()?,
            Long("rate") => rate = Some(p.value()?.parse()?),
            Long("interval") => {
                let v = p.value()?.string()?;
                interval =
                    Some(muster::config::units::parse_duration(&v).map_err(lexopt::Error::from)?);
            }
            Long("duration") => {
                let v = p.value()?.string()?;
                o.duration =
                    muster::config::units::parse_duration(&v).map_err(lexopt::Error::from)?;
            }
            Long("tcp") => o.tcp = true,
            Long("udp") => o.tcp = false,
            Long("tls") => {
                o.tcp = true;
                o.tls = true;
            }
            Long("ca-file") => {
                let mut files = net::TlsFiles::from_env();
                files.ca = Some(p.value()?.into());
                net::set_files(files);
            }
            Long("frame") => {
                o.seed = match p.value()?.string()?.as_str() {
                    "seed" => true,
                    "minimal" => false,
                    f => return Err(format!("--frame {f:?}: seed or minimal").into()),
                }
            }
            Long("payload-bytes") => o.payload = p.value()?.parse()?,
            Long("threads") => o.threads = p.value()?.parse()?,
            Long("pid") => o.pid = Some(p.value()?.parse()?),
            Long("url") => o.url = p.value()?.string()?,
            Long("heartbeat-addr") => o.heartbeat = p.value()?.string()?,
            Long("json") => o.json = true,
            Long("worker-prefix") => o.prefix = Some(p.value()?.string()?),
            _ => return Err(arg.unexpected()),
        }
    }
    match mode.as_deref() {
        Some("heartbeats") => {}
        Some(m) => return Err(format!("unknown bench {m:?} (try heartbeats or ws)").into()),
        None => return Ok(None),
    }
    o.rate = match (rate, interval) {
        (Some(_), Some(_)) => return Err("--rate or --interval, not both".into()),
        (Some(r), None) => r,
        (None, Some(i)) if i.is_zero() => return Err("--interval must be above 0".into()),
        (None, Some(i)) => (o.workers as f64 / i.as_secs_f64()).round().max(1.0) as u64,
        (None, None) => o.rate,
    };
    if o.workers == 0 || o.rate == 0 || o.threads == 0 {
        return Err("--workers, --rate and --threads must be above 0".into());
    }
    Ok(Some(o))
}

pub fn main(args: &[String]) -> i32 {
    drive(
        "muster bench",
        USAGE,
        parse(args),
        |o: &Opts| (o.json, run(o)),
        print_table,
    )
}

/// What each heartbeat looks like.
#[derive(Clone, Copy, Debug)]
struct Shape {
    /// Shaped like a real worker's, as `bench/soak.py` sends them.
    seed: bool,
    /// Padded to about this many bytes.
    pad: usize,
}

/// One heartbeat of worker `id`.
fn heartbeat(id: &str, seq: u64, shape: Shape) -> Vec<u8> {
    let mut s = format!(
        r#"{{"type":"heartbeat","worker_id":"{id}","seq":{seq},"status":"working","cpu_usage":12.5,"memory_usage":3.2,"queue_depth":{}"#,
        seq % 10
    );
    if shape.seed {
        s.push_str(&format!(
            r#","resource_usage":{{"rss_mb":120.5,"heap_used_mb":80.25,"heap_total_mb":96.0,"external_mb":2.5}},"current_job":{{"id":"job-{}","type":"scan","files":1000,"started_at":1733808005000}},"labels":{{"pool":"scan","zone":"eu-1"}}"#,
            seq / 10
        ));
    }
    if shape.pad > s.len() + 10 {
        let fill = shape.pad - s.len() - 10;
        s.push_str(&format!(r#","pad":"{}""#, "x".repeat(fill)));
    }
    s.push('}');
    s.into_bytes()
}

enum Link {
    Udp(UdpSocket, SocketAddr),
    Tcp(Vec<Conn>),
}

impl Link {
    fn send(&mut self, worker: usize, frame: &[u8]) -> bool {
        match self {
            Link::Udp(s, to) => s.send_to(frame, *to).is_ok(),
            Link::Tcp(conns) => {
                // One write a line: over TLS, one record.
                let mut line = Vec::with_capacity(frame.len() + 1);
                line.extend_from_slice(frame);
                line.push(b'\n');
                let c = &mut conns[worker];
                c.write_all(&line).is_ok() && c.flush().is_ok()
            }
        }
    }
}

/// One sender thread: workers `ids`, `rate` per second, until `end`.
fn send_paced(
    ids: &[String],
    mut link: Link,
    rate: f64,
    start: Instant,
    end: Instant,
    shape: Shape,
) -> (u64, u64) {
    let mut seq = vec![0u64; ids.len()];
    let (mut sent, mut failed, mut w) = (0u64, 0u64, 0usize);
    loop {
        let now = Instant::now();
        if now >= end {
            return (sent, failed);
        }
        let due = (now - start).as_secs_f64() * rate;
        while ((sent + failed) as f64) < due {
            seq[w] += 1;
            if link.send(w, &heartbeat(&ids[w], seq[w], shape)) {
                sent += 1;
            } else {
                failed += 1;
            }
            w = (w + 1) % ids.len();
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn connect_tcp(ids: &[String], to: &Target) -> Result<Vec<Conn>, String> {
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let mut s = net::connect(to, Duration::from_secs(10))
            .map_err(|e| format!("tcp connect {to}: {e}"))?;
        s.write_all(format!("{{\"type\":\"hello\",\"worker_id\":\"{id}\"}}\n").as_bytes())
            .and_then(|()| s.flush())
            .map_err(|e| format!("hello: {e}"))?;
        out.push(s);
    }
    Ok(out)
}

/// Sum of `messages_processed` over this run's workers, as musterd reports.
fn applied(http: &Target, prefix: &str) -> Result<u64, String> {
    let t = client::get_json(http, "/telemetry").map_err(|e| e.to_string())?;
    let obj = t.as_object().ok_or("telemetry is not an object")?;
    Ok(obj
        .iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(_, v)| v["messages_processed"].as_u64().unwrap_or(0))
        .sum())
}

fn run(o: &Opts) -> Result<Value, String> {
    let http = client::parse_url(&o.url).map_err(|e| e.to_string())?;
    let hb = client::parse_url(&o.heartbeat)
        .map_err(|e| e.to_string())?
        .with_tls(o.tls);
    let health0 = client::get_json(&http, "/health").map_err(|e| e.to_string())?;
    let pid = o.pid.or_else(find_musterd);
    let prefix = o
        .prefix
        .clone()
        .unwrap_or_else(|| format!("bench{}-", muster::clock::unix_ms() % 1_000_000));
    let ids: Vec<String> = (0..o.workers).map(|i| format!("{prefix}{i}")).collect();
    // What an earlier run with the same prefix left applied.
    let before = applied(&http, &prefix)?;
    let threads = o.threads.min(o.workers);
    let mut links = Vec::new();
    if o.tcp {
        muster::sys::capacity::raise_nofile();
        for chunk in ids.chunks(ids.len().div_ceil(threads)) {
            links.push((chunk.to_vec(), Link::Tcp(connect_tcp(chunk, &hb)?)));
        }
    } else {
        for chunk in ids.chunks(ids.len().div_ceil(threads)) {
            let s = UdpSocket::bind("0.0.0.0:0").map_err(|e| format!("udp socket: {e}"))?;
            links.push((chunk.to_vec(), Link::Udp(s, hb.addr)));
        }
    }
    let proc0 = pid.and_then(procfs::cpu_and_rss);
    let host0 = procfs::read_cpu_totals();
    let start = Instant::now();
    let end = start + o.duration;
    let per_thread = o.rate as f64 / links.len() as f64;
    let shape = Shape {
        seed: o.seed,
        pad: o.payload,
    };
    let handles: Vec<_> = links
        .into_iter()
        .map(|(ids, link)| {
            std::thread::spawn(move || send_paced(&ids, link, per_thread, start, end, shape))
        })
        .collect();
    let (mut sent, mut failed) = (0, 0);
    for h in handles {
        let (s, f) = h.join().map_err(|_| "a sender thread panicked")?;
        sent += s;
        failed += f;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let proc1 = pid.and_then(procfs::cpu_and_rss);
    let steal = procfs::steal_percent(host0, procfs::read_cpu_totals());
    // Let musterd drain its queues: wait until the count stops moving.
    let hellos = if o.tcp { o.workers as u64 } else { 0 };
    let mut got = applied(&http, &prefix)?.saturating_sub(before);
    let settle = Instant::now();
    while got < sent + hellos && settle.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(250));
        let now = applied(&http, &prefix)?.saturating_sub(before);
        if now == got && settle.elapsed() > Duration::from_secs(2) {
            break;
        }
        got = now;
    }
    let got = got.saturating_sub(hellos);
    let health1 = client::get_json(&http, "/health").map_err(|e| e.to_string())?;
    let delta = |a: &Value, b: &Value| {
        b.as_u64()
            .unwrap_or(0)
            .saturating_sub(a.as_u64().unwrap_or(0))
    };
    let cpu = match (proc0, proc1) {
        (Some((c0, _)), Some((c1, _))) => Some((c1 - c0) / elapsed),
        _ => None,
    };
    let rss = proc1.map(|(_, kb)| kb);
    let rss_growth_per_worker = match (proc0, proc1) {
        (Some((_, a)), Some((_, b))) => Some((b as f64 - a as f64) / o.workers as f64),
        _ => None,
    };
    Ok(json!({
        "transport": if o.tls { "tls" } else if o.tcp { "tcp" } else { "udp" },
        "frame": if o.seed { "seed" } else { "minimal" },
        "frame_bytes": heartbeat(&ids[0], 1_000_000, shape).len(),
        "workers": o.workers,
        "target_rate": o.rate,
        "duration_s": elapsed,
        "sent": sent,
        "send_errors": failed,
        "achieved_rate": sent as f64 / elapsed,
        "applied": got,
        "lost": sent.saturating_sub(got),
        "loss_percent": if sent > 0 { 100.0 * sent.saturating_sub(got) as f64 / sent as f64 } else { 0.0 },
        "kernel_drops": delta(&health0["udp_kernel_drops"], &health1["udp_kernel_drops"]),
        "inbox_drops": delta(&health0["frames"]["dropped_by_reason"]["inbox_full"], &health1["frames"]["dropped_by_reason"]["inbox_full"]),
        "rejected": delta(&health0["frames"]["rejected"], &health1["frames"]["rejected"]),
        "musterd_pid": pid,
        "musterd_cpu_cores": cpu,
        "musterd_rss_kib": rss,
        "musterd_rss_before_kib": proc0.map(|(_, kb)| kb),
        "rss_growth_kib_per_worker": rss_growth_per_worker,
        "host_steal_percent": steal,
    }))
}

fn print_table(r: &Value) {
    let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
    println!(
        "{} heartbeats ({} frames, {} bytes): {} workers, target {}/s for {:.1}s",
        r["transport"].as_str().unwrap_or("?"),
        r["frame"].as_str().unwrap_or("?"),
        r["frame_bytes"],
        r["workers"],
        r["target_rate"],
        f("duration_s")
    );
    println!(
        "  sent            {:>12}  ({:.0}/s achieved, {} send errors)",
        r["sent"],
        f("achieved_rate"),
        r["send_errors"]
    );
    println!("  applied         {:>12}", r["applied"]);
    println!(
        "  lost            {:>12}  ({:.4}%)",
        r["lost"],
        f("loss_percent")
    );
    println!("  kernel drops    {:>12}", r["kernel_drops"]);
    println!("  inbox drops     {:>12}", r["inbox_drops"]);
    match r["musterd_cpu_cores"].as_f64() {
        Some(c) => println!(
            "  musterd         {:>12}  cpu {:.3} cores, rss {} KiB (was {} KiB, {:+.1} KiB/worker)",
            format!("pid {}", r["musterd_pid"]),
            c,
            r["musterd_rss_kib"],
            r["musterd_rss_before_kib"],
            f("rss_growth_kib_per_worker")
        ),
        None => println!("  musterd         (not on this host or not found: pass --pid)"),
    }
    print_steal(r);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Vec<String> {
        s.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn options() {
        let o = parse(&args(&[
            "heartbeats",
            "--workers",
            "5",
            "--rate",
            "100",
            "--duration",
            "2s",
            "--tcp",
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(
            (o.workers, o.rate, o.duration, o.tcp),
            (5, 100, Duration::from_secs(2), true)
        );
        let fleet = parse(&args(&[
            "heartbeats",
            "--workers",
            "100000",
            "--interval",
            "5s",
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(fleet.rate, 20_000, "100,000 workers each every 5 s");
        assert!(parse(&args(&["heartbeats", "--rate", "5", "--interval", "1s"])).is_err());
        assert!(parse(&args(&["heartbeats", "--interval", "0s"])).is_err());
        assert!(parse(&args(&["heartbeats", "--workers", "0"])).is_err());
        assert!(parse(&args(&["heartbeats", "--bogus"])).is_err());
        assert!(parse(&args(&["flood"])).is_err());
        assert!(parse(&args(&["--help"])).unwrap().is_none());
    }

    #[test]
    fn frames_are_valid_and_padded() {
        let shape = |seed, pad| Shape { seed, pad };
        let f = heartbeat("bench1-0", 7, shape(false, 0));
        assert!(muster::proto::decode(&f, 65536).is_ok());
        let f = heartbeat("bench1-0", 7, shape(false, 500));
        assert!((495..=505).contains(&f.len()), "{}", f.len());
        assert!(muster::proto::decode(&f, 65536).is_ok());
        // A real worker's: nested objects, about 330 bytes.
        let f = heartbeat("bench123456-999", 1_000_000, shape(true, 0));
        assert!((300..=360).contains(&f.len()), "{}", f.len());
        let v: serde_json::Value = serde_json::from_slice(&f).unwrap();
        assert_eq!(v["resource_usage"]["rss_mb"], 120.5);
        assert_eq!(v["current_job"]["type"], "scan");
        assert!(muster::proto::decode(&f, 65536).is_ok());
    }
}
