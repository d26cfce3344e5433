//! `muster-bench ws`: N WebSocket clients on `/ws/telemetry` while W
//! workers send paced UDP heartbeats; each heartbeat carries its send time
//! (label `sent_us`, Unix microseconds), and clients record the time from
//! send to the update that shows it. Reports p50, p99 and max latency,
//! messages received, and musterd's CPU and RSS. `--stalled K` adds K
//! clients that connect and never read.
//!
//! Client and daemon share this host's clock. The clients share one thread
//! per core, each polling its sockets and decoding frames itself: with a
//! thread per client, every update woke a thousand threads and the run
//! measured the scheduler more than the server. Each thread keeps a sample
//! of latencies (bounded), so memory stays flat however long the run.

use lexopt::prelude::*;
use muster::cli::client;
use muster::sys::procfs;
use serde_json::{Value, json};
use std::io::Write;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tungstenite::protocol::frame::coding::{Control, OpCode};
use tungstenite::protocol::frame::{Frame, FrameHeader};

const USAGE: &str = "usage: muster-bench ws [options]

WebSocket clients on /ws/telemetry; heartbeat-sent to update-received latency.

options:
  --clients N          WebSocket clients (default 1000)
  --workers W          simulated workers (default 1000)
  --rate R             heartbeats per second, all workers together (default 1000)
  --duration D         how long to send (default 10s)
  --stalled K          extra clients that connect and never read (default 0)
  --frame F            seed: heartbeats shaped like a real worker's, with nested
                       resource_usage and current_job (default); minimal: id, seq,
                       status, CPU and the send time
  --threads T          client threads, each one epoll loop (default 1)
  --floor              the server is bench/fanout.c: no snapshot, no /health
  --pid PID            musterd's pid for CPU and RSS (default: found in /proc)
  --url URL            musterd's HTTP address (default $MUSTER_URL or http://127.0.0.1:8080)
  --heartbeat-addr A   musterd's heartbeat address (default $MUSTER_HEARTBEAT_ADDR or 127.0.0.1:8090)
  --json               print the report as JSON
";

/// Latency samples kept per client thread at most.
const SAMPLES_PER_THREAD: usize = 2_000_000;

struct Opts {
    clients: usize,
    workers: usize,
    rate: u64,
    duration: Duration,
    stalled: usize,
    threads: usize,
    floor: bool,
    seed: bool,
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
        threads: 1,
        floor: false,
        seed: true,
        pid: None,
        url: muster::cli::client::env_url(),
        heartbeat: muster::cli::client::env_heartbeat_addr(),
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
                o.duration =
                    muster::config::units::parse_duration(&v).map_err(lexopt::Error::from)?;
            }
            Long("stalled") => o.stalled = p.value()?.parse()?,
            Long("threads") => o.threads = p.value()?.parse()?,
            Long("floor") => o.floor = true,
            Long("frame") => {
                o.seed = match p.value()?.string()?.as_str() {
                    "seed" => true,
                    "minimal" => false,
                    f => return Err(format!("--frame {f:?}: seed or minimal").into()),
                }
            }
            Long("pid") => o.pid = Some(p.value()?.parse()?),
            Long("url") => o.url = p.value()?.string()?,
            Long("heartbeat-addr") => o.heartbeat = p.value()?.string()?,
            Long("json") => o.json = true,
            _ => return Err(arg.unexpected()),
        }
    }
    if o.clients == 0 || o.workers == 0 || o.rate == 0 || o.threads == 0 {
        return Err("--clients, --workers, --rate and --threads must be above 0".into());
    }
    Ok(Some(o))
}

pub fn main(args: &[String]) -> i32 {
    super::report::drive(
        "muster-bench ws",
        USAGE,
        parse(args),
        |o: &Opts| (o.json, run(o)),
        print_table,
    )
}

/// What a real worker's heartbeat carries besides (seed 000's registry
/// entry): memory, queue, resource usage, the current job, labels.
fn seed_parts(frame: &mut serde_json::Value, seq: u64) {
    frame["memory_usage"] = json!(3.2);
    frame["queue_depth"] = json!(seq % 10);
    frame["resource_usage"] =
        json!({"rss_mb": 120.5, "heap_used_mb": 80.25, "heap_total_mb": 96.0, "external_mb": 2.5});
    frame["current_job"] = json!({"id": format!("job-{}", seq / 10), "type": "scan",
        "files": 1000, "started_at": 1_733_808_005_000u64});
    frame["labels"]["pool"] = json!("scan");
    frame["labels"]["zone"] = json!("eu-1");
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

/// One reading client's socket, after its handshake, and the bytes read
/// and not yet decoded.
struct Reader {
    stream: mio::net::TcpStream,
    buf: Vec<u8>,
    /// A fragmented message being gathered (servers seldom fragment).
    partial: Vec<u8>,
    open: bool,
}

/// Open a WebSocket on `/ws/telemetry` by hand: the bytes after the 101
/// response (the start of the first message) are kept, not lost.
/// Connect `n` clients at once (non-blocking connects, every upgrade
/// request written as soon as its socket is writable), and wait until each
/// has its `101` and, when `snapshot`, its first whole message: what 2,000
/// dashboards reconnecting after a restart do. Returns the clients and the
/// time that took.
fn connect_all(
    http: SocketAddr,
    n: usize,
    snapshot: bool,
) -> Result<(Vec<Reader>, Duration), String> {
    use mio::{Events, Interest, Poll, Token};
    use std::io::Read;
    let req = format!(
        "GET /ws/telemetry HTTP/1.1\r\nHost: {http}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    let mut poll = Poll::new().map_err(|e| e.to_string())?;
    let started = Instant::now();
    // Per client: the stream, what it has read, whether its request is
    // written, and whether it is ready.
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        let mut s =
            mio::net::TcpStream::connect(http).map_err(|e| format!("connect {http}: {e}"))?;
        poll.registry()
            .register(&mut s, Token(i), Interest::READABLE | Interest::WRITABLE)
            .map_err(|e| e.to_string())?;
        conns.push((s, Vec::new(), false, false));
    }
    let mut ready = 0;
    let mut events = Events::with_capacity(1024);
    let mut chunk = vec![0u8; 256 * 1024];
    let deadline = started + Duration::from_secs(60);
    while ready < n {
        if Instant::now() > deadline {
            return Err(format!("{} of {n} clients ready after 60 s", ready));
        }
        poll.poll(&mut events, Some(Duration::from_millis(100)))
            .map_err(|e| e.to_string())?;
        for ev in events.iter() {
            let (s, buf, sent, done) = &mut conns[ev.token().0];
            if *done {
                continue;
            }
            if !*sent && ev.is_writable() {
                if let Ok(Some(e)) = s.take_error() {
                    return Err(format!("connect {http}: {e}"));
                }
                match s.write(req.as_bytes()) {
                    Ok(k) if k == req.len() => *sent = true,
                    Ok(_) => return Err("upgrade request cut short".into()),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                    Err(e) if e.kind() == std::io::ErrorKind::NotConnected => continue,
                    Err(e) => return Err(format!("connect {http}: {e}")),
                }
            }
            loop {
                match s.read(&mut chunk) {
                    Ok(0) => return Err("a client was closed while connecting".into()),
                    Ok(k) => buf.extend_from_slice(&chunk[..k]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotConnected => break,
                    Err(e) => return Err(format!("read: {e}")),
                }
            }
            let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            if !buf.starts_with(b"HTTP/1.1 101") {
                let line = String::from_utf8_lossy(&buf[..head_end])
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string();
                return Err(format!("websocket handshake refused: {line}"));
            }
            if snapshot && !has_whole_message(&buf[head_end + 4..])? {
                continue;
            }
            *done = true;
            ready += 1;
        }
    }
    let took = started.elapsed();
    let readers = conns
        .into_iter()
        .map(|(mut s, mut buf, _, _)| {
            let _ = poll.registry().deregister(&mut s);
            let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0);
            buf.drain(..head_end + 4);
            Reader {
                stream: s,
                buf,
                partial: Vec::new(),
                open: true,
            }
        })
        .collect();
    Ok((readers, took))
}

/// Whether `buf` holds a whole data message (its final frame).
fn has_whole_message(buf: &[u8]) -> Result<bool, String> {
    let mut at = 0;
    while let Some((opcode, fin, _, len)) = parse_frame(&buf[at..])? {
        if fin && opcode <= 0x2 {
            return Ok(true);
        }
        at += len;
    }
    Ok(false)
}

type FrameHead = (u8, bool, std::ops::Range<usize>, usize);

/// One frame from a server (RFC 6455 §5.2), its header read by
/// tungstenite; `None` until complete. The payload is not copied: the
/// clients must stay cheaper than the server they measure.
fn parse_frame(buf: &[u8]) -> Result<Option<FrameHead>, String> {
    let mut cursor = std::io::Cursor::new(buf);
    let Some((header, len)) = FrameHeader::parse(&mut cursor).map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    if header.mask.is_some() {
        return Err("a server frame is masked".into());
    }
    let head = cursor.position() as usize;
    let end = head + len as usize;
    if buf.len() < end {
        return Ok(None);
    }
    Ok(Some((
        u8::from(header.opcode),
        header.is_final,
        head..end,
        end,
    )))
}

/// A client's masked control frame (RFC 6455 §5.3), framed by tungstenite;
/// the mask is fixed, which the RFC allows a load generator no less than
/// anyone.
fn client_frame(opcode: Control, payload: &[u8]) -> Vec<u8> {
    let header = FrameHeader {
        opcode: OpCode::Control(opcode),
        mask: Some([0x37, 0xfa, 0x21, 0x3d]),
        ..FrameHeader::default()
    };
    let payload = &payload[..payload.len().min(125)];
    let mut out = Vec::with_capacity(payload.len() + 6);
    // Writing into a Vec cannot fail.
    let _ = Frame::from_payload(header, payload.to_vec().into()).format(&mut out);
    out
}

/// What the reading clients keep: latencies of sampled updates.
struct Tally {
    samples: Vec<u32>,
    seen: u64,
    every: u64,
}

impl Tally {
    fn message(&mut self, text: &[u8], now: u64) {
        // Scan for the send stamps instead of parsing the JSON: the clients
        // must stay cheaper than the server they measure.
        if !text.starts_with(b"{\"type\":\"update\"") {
            return;
        }
        let Ok(text) = std::str::from_utf8(text) else {
            return;
        };
        for (i, _) in text.match_indices("\"sent_us\":\"") {
            self.seen += 1;
            if self.seen % self.every != 0 || self.samples.len() >= SAMPLES_PER_THREAD {
                continue;
            }
            let digits = &text[i + 11..];
            let end = digits.find('"').unwrap_or(0);
            if let Ok(sent) = digits[..end].parse::<u64>() {
                self.samples
                    .push(now.saturating_sub(sent).min(u32::MAX as u64) as u32);
            }
        }
    }
}

impl Reader {
    /// Read what the socket has and handle every complete frame.
    fn on_readable(&mut self, chunk: &mut [u8], tally: &mut Tally, messages: &AtomicU64) {
        use std::io::Read;
        loop {
            match self.stream.read(chunk) {
                Ok(0) => {
                    self.open = false;
                    break;
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    self.open = false;
                    break;
                }
            }
        }
        let now = now_us();
        let mut at = 0;
        loop {
            let frame = match parse_frame(&self.buf[at..]) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(_) => {
                    self.open = false;
                    break;
                }
            };
            let (opcode, fin, range, len) = frame;
            let payload = &self.buf[at + range.start..at + range.end];
            match opcode {
                0x0..=0x2 if fin && self.partial.is_empty() => {
                    messages.fetch_add(1, Relaxed);
                    tally.message(payload, now);
                }
                0x0..=0x2 => {
                    self.partial.extend_from_slice(payload);
                    if fin {
                        messages.fetch_add(1, Relaxed);
                        tally.message(&std::mem::take(&mut self.partial), now);
                    }
                }
                0x8 => self.open = false,
                0x9 => {
                    let _ = self.stream.write_all(&client_frame(Control::Pong, payload));
                }
                _ => {}
            }
            at += len;
        }
        self.buf.drain(..at);
        if self.buf.is_empty() && self.buf.capacity() > 1 << 20 {
            self.buf = Vec::new();
        }
    }
}

/// One client thread: its share of the sockets on one poll, as a load
/// generator must be to measure the server rather than its own thousand
/// sleeping threads.
fn client_thread(
    mut readers: Vec<Reader>,
    stop: Arc<AtomicBool>,
    messages: Arc<AtomicU64>,
    every: u64,
) -> Result<(Vec<u32>, f64), String> {
    use mio::{Events, Interest, Poll, Token};
    let mut poll = Poll::new().map_err(|e| e.to_string())?;
    for (i, r) in readers.iter_mut().enumerate() {
        poll.registry()
            .register(&mut r.stream, Token(i), Interest::READABLE)
            .map_err(|e| e.to_string())?;
    }
    let mut events = Events::with_capacity(1024);
    let mut chunk = vec![0u8; 256 * 1024];
    let mut tally = Tally {
        samples: Vec::new(),
        seen: 0,
        every,
    };
    // Bytes that came with the handshake responses.
    for r in &mut readers {
        r.on_readable(&mut chunk, &mut tally, &messages);
    }
    while !stop.load(Relaxed) {
        if let Err(e) = poll.poll(&mut events, Some(Duration::from_millis(100))) {
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e.to_string());
            }
        }
        for ev in events.iter() {
            let r = &mut readers[ev.token().0];
            if r.open {
                r.on_readable(&mut chunk, &mut tally, &messages);
                if !r.open {
                    let _ = poll.registry().deregister(&mut r.stream);
                }
            }
        }
    }
    Ok((
        tally.samples,
        muster::sys::usage::thread_cpu().as_secs_f64(),
    ))
}

fn percentile(sorted: &[u32], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    Some(sorted[i] as f64 / 1000.0)
}

fn run(o: &Opts) -> Result<Value, String> {
    let http = client::parse_url(&o.url).map_err(|e| e.to_string())?.addr;
    let hb = client::parse_url(&o.heartbeat)
        .map_err(|e| e.to_string())?
        .addr;
    let pid = o.pid.or_else(super::report::find_musterd);
    muster::sys::capacity::raise_nofile();
    let prefix: Arc<str> = Arc::from(format!("wsb{}-", muster::clock::unix_ms() % 1_000_000));
    let stop = Arc::new(AtomicBool::new(false));
    let messages = Arc::new(AtomicU64::new(0));
    // Sample so that all clients together keep about 20,000 latencies a second.
    let every = ((o.clients as u64 * o.rate) / 20_000).max(1);
    // The clients are spread over one thread per core, each polling its
    // share of the sockets.
    let threads = o.threads.min(o.clients);
    let mut shares: Vec<Vec<Reader>> = (0..threads).map(|_| Vec::new()).collect();
    let (clients, connect_took) = connect_all(http, o.clients, !o.floor)?;
    for (i, r) in clients.into_iter().enumerate() {
        shares[i % threads].push(r);
    }
    let mut readers = Vec::new();
    for share in shares {
        let (stop, messages) = (stop.clone(), messages.clone());
        let t = std::thread::Builder::new()
            .spawn(move || client_thread(share, stop, messages, every))
            .map_err(|e| format!("cannot start client thread: {e}"))?;
        readers.push(t);
    }
    // Stalled clients: handshake done, then never read.
    let stalled: Vec<Ws> = (0..o.stalled)
        .map(|_| connect(http))
        .collect::<Result<_, _>>()?;
    let proc0 = pid.and_then(procfs::cpu_and_rss);
    let host0 = procfs::read_cpu_totals();
    let sock = UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
    let start = Instant::now();
    let (mut sent, mut w) = (0u64, 0usize);
    let mut seq = vec![0u64; o.workers];
    while start.elapsed() < o.duration {
        let due = start.elapsed().as_secs_f64() * o.rate as f64;
        while (sent as f64) < due {
            seq[w] += 1;
            let mut frame = json!({"type": "heartbeat", "worker_id": format!("{prefix}{w}"), "seq": seq[w],
                "status": "working", "cpu_usage": (sent % 100) as f64, "labels": {"sent_us": now_us().to_string()}});
            if o.seed {
                seed_parts(&mut frame, seq[w]);
            }
            let _ = sock.send_to(frame.to_string().as_bytes(), hb);
            sent += 1;
            w = (w + 1) % o.workers;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    let elapsed = start.elapsed().as_secs_f64();
    let proc1 = pid.and_then(procfs::cpu_and_rss);
    let steal = procfs::steal_percent(host0, procfs::read_cpu_totals());
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Relaxed);
    let mut all: Vec<u32> = Vec::new();
    let mut client_cpu = 0.0;
    for t in readers {
        let (samples, cpu) = t.join().map_err(|_| "a client thread panicked")??;
        all.extend(samples);
        client_cpu += cpu;
    }
    let health = if o.floor {
        Value::Null
    } else {
        client::get_json(&muster::cli::net::Target::plain(http), "/health")
            .map_err(|e| e.to_string())?
    };
    drop(stalled);
    all.sort_unstable();
    let cpu = match (proc0, proc1) {
        (Some((a, _)), Some((b, _))) => Some((b - a) / elapsed),
        _ => None,
    };
    Ok(json!({
        "clients": o.clients,
        "connect_ms": connect_took.as_secs_f64() * 1000.0,
        "client_threads": threads,
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
        "client_cpu_cores": client_cpu / elapsed,
        "host_steal_percent": steal,
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
    println!(
        "  connected          {:>12}  (all {} with their {}, {} client threads)",
        ms("connect_ms"),
        r["clients"],
        if r["ws_closed_stalled"].is_null() {
            "101"
        } else {
            "snapshot"
        },
        r["client_threads"]
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
    if let Some(c) = r["client_cpu_cores"].as_f64() {
        println!("  clients            cpu {c:.3} cores");
    }
    super::report::print_steal(r);
    let _ = std::io::stdout().flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server's text frame, as tungstenite writes it.
    fn server_frame(payload: &[u8]) -> Vec<u8> {
        use tungstenite::protocol::frame::{Frame, coding::Data, coding::OpCode};
        let mut out = Vec::new();
        Frame::message(payload.to_vec(), OpCode::Data(Data::Text), true)
            .format(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn frames_are_decoded_whole_or_not_at_all() {
        let short = server_frame(b"hi");
        assert_eq!(parse_frame(&short).unwrap(), Some((1, true, 2..4, 4)));
        let mid = server_frame(&[b'x'; 300]);
        assert_eq!(parse_frame(&mid).unwrap(), Some((1, true, 4..304, 304)));
        let big = server_frame(&vec![b'y'; 70_000]);
        assert_eq!(
            parse_frame(&big).unwrap(),
            Some((1, true, 10..70_010, 70_010))
        );
        for cut in [0, 1, 3, 9, 70_009] {
            assert_eq!(parse_frame(&big[..cut]).unwrap(), None, "cut at {cut}");
        }
        assert!(
            parse_frame(&client_frame(Control::Pong, b"p")).is_err(),
            "masked"
        );
    }

    #[test]
    fn tally_reads_send_stamps_of_updates_only() {
        let mut t = Tally {
            samples: Vec::new(),
            seen: 0,
            every: 1,
        };
        let update = r#"{"type":"update","workers":{"a":{"labels":{"sent_us":"1000"}},"b":{"labels":{"sent_us":"4000"}}}}"#;
        t.message(update.as_bytes(), 5000);
        t.message(
            br#"{"type":"snapshot","workers":{"a":{"labels":{"sent_us":"1"}}}}"#,
            5000,
        );
        assert_eq!(t.samples, [4000, 1000]);
    }

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
        let a: Vec<String> = ["--threads", "2", "--floor"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let o = parse(&a).unwrap().unwrap();
        assert_eq!((o.threads, o.floor), (2, true));
        assert_eq!(
            parse(&[]).unwrap().unwrap().threads,
            1,
            "one epoll thread by default"
        );
        assert!(parse(&["--threads".to_string(), "0".to_string()]).is_err());
    }
}
