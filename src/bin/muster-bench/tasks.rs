//! `muster-bench tasks`: a work queue under load, musterd or beanstalkd
//! (the anchor: a small C queue with a write-ahead binlog), with the same
//! clients, so the two are compared in one run.
//!
//! - `submit`: C submitters, each a connection putting tasks of B bytes as
//!   fast as answers come, for D: acknowledged submissions per second.
//! - `e2e`: the same submitters and A workers that take each task and
//!   finish it at once (a no-op handler): finished tasks per second.
//! - `latency` (musterd): one worker, one task at a time on an idle daemon:
//!   from the submission leaving the client to the worker receiving the
//!   task, p50 and p99. The task is dispatched as soon as it is queued, so
//!   the worker may have it before the `201` (which waits for the journal).
//!
//! musterd workers speak the heartbeat protocol over TCP (`hello` with
//! capacity 1, then for each task one `task_update` succeeded, as a worker
//! that finishes within `task_ack_timeout` may; `--say-running` sends
//! `running` before it, one frame more per task); beanstalkd clients
//! speak its text protocol (`put`, `reserve`, `delete`).

use super::report;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const USAGE: &str = "usage: muster-bench tasks [--target musterd|beanstalkd] [--mode submit|e2e|latency|delayed|dispatch]
       [--submitters C] [--workers A] [--payload-bytes B] [--duration D] [--addr HOST:PORT]
       [--heartbeat-addr HOST:PORT] [--worker-prefix P] [--tasks N] [--types T] [--hold D] [--say-running] [--json]
  --mode delayed    N tasks (--tasks, default 10000) submitted 3 s ahead with run_at spread
                    over --duration; how late each reached a worker after its run_at
  --mode dispatch   N tasks (--tasks, default 100000) of --types types (default 100) queued,
                    then --workers takers (default 1000, 10 types each) finish each at once;
                    from a taker's finish to its next task, p50 and p99; --hold D: each
                    taker finishes each task D after it came (a fleet at work)
  --addr            musterd's HTTP address (default from $MUSTER_URL) or beanstalkd's (127.0.0.1:11300)
  --heartbeat-addr  musterd's heartbeat address, for its workers (default $MUSTER_HEARTBEAT_ADDR)
  --worker-prefix   the workers' ids: P-0, P-1, ... (default bench; one per run when several
                    runs share a fleet)
  --say-running     musterd workers report `running` before the result (two frames a task)
";

struct Opts {
    target: String,
    mode: String,
    submitters: usize,
    /// Default 32 (1,000 for `dispatch`).
    workers: Option<usize>,
    payload: usize,
    duration: Duration,
    addr: Option<String>,
    heartbeat: String,
    prefix: String,
    /// Default 10,000 for `delayed`, 100,000 for `dispatch`.
    tasks: Option<usize>,
    types: usize,
    hold: Duration,
    say_running: bool,
    json: bool,
}

fn parse(args: &[String]) -> Result<Option<Opts>, String> {
    use lexopt::prelude::*;
    let mut o = Opts {
        target: "musterd".into(),
        mode: "submit".into(),
        submitters: 32,
        workers: None,
        payload: 100,
        duration: Duration::from_secs(10),
        addr: None,
        heartbeat: muster::cli::client::env_heartbeat_addr(),
        prefix: "bench".into(),
        tasks: None,
        types: 100,
        hold: Duration::ZERO,
        say_running: false,
        json: false,
    };
    let err = |e: lexopt::Error| e.to_string();
    let mut p = lexopt::Parser::from_args(args.iter().cloned());
    let val = |p: &mut lexopt::Parser| -> Result<String, String> {
        p.value().map_err(err)?.string().map_err(err)
    };
    while let Some(arg) = p.next().map_err(err)? {
        match arg {
            Long("target") => o.target = val(&mut p)?,
            Long("mode") => o.mode = val(&mut p)?,
            Long("submitters") => {
                o.submitters = val(&mut p)?.parse().map_err(|_| "--submitters N")?
            }
            Long("workers") => o.workers = Some(val(&mut p)?.parse().map_err(|_| "--workers N")?),
            Long("payload-bytes") => {
                o.payload = val(&mut p)?.parse().map_err(|_| "--payload-bytes N")?
            }
            Long("duration") => o.duration = muster::config::units::parse_duration(&val(&mut p)?)?,
            Long("addr") => o.addr = Some(val(&mut p)?),
            Long("heartbeat-addr") => o.heartbeat = val(&mut p)?,
            Long("worker-prefix") => o.prefix = val(&mut p)?,
            Long("tasks") => o.tasks = Some(val(&mut p)?.parse().map_err(|_| "--tasks N")?),
            Long("hold") => o.hold = muster::config::units::parse_duration(&val(&mut p)?)?,
            Long("types") => o.types = val(&mut p)?.parse().map_err(|_| "--types N")?,
            Long("say-running") => o.say_running = true,
            Long("json") => o.json = true,
            Short('h') | Long("help") => return Ok(None),
            _ => return Err(err(arg.unexpected())),
        }
    }
    Ok(Some(o))
}

pub fn main(args: &[String]) -> i32 {
    report::drive(
        "muster-bench tasks",
        USAGE,
        parse(args),
        |o| (o.json, run(o)),
        table,
    )
}

fn table(r: &Value) {
    for (k, v) in r.as_object().into_iter().flatten() {
        println!("  {k:<22} {v}");
    }
}

fn resolve(a: &str) -> Result<SocketAddr, String> {
    muster::cli::client::parse_url(a)
        .map(|t| t.addr)
        .map_err(|e| e.to_string())
}

fn run(o: &Opts) -> Result<Value, String> {
    let payload = "x".repeat(o.payload);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let beanstalk = o.target == "beanstalkd";
    let addr = resolve(o.addr.as_deref().unwrap_or(if beanstalk {
        "127.0.0.1:11300"
    } else {
        "127.0.0.1:8080"
    }))?;
    let addr = match (&o.addr, beanstalk) {
        (None, false) => resolve(&muster::cli::client::env_url())?,
        _ => addr,
    };
    if o.mode == "latency" {
        return latency(addr, resolve(&o.heartbeat)?, &payload);
    }
    if o.mode == "dispatch" {
        let load = super::dispatch::Load {
            tasks: o.tasks.unwrap_or(100_000),
            types: o.types.max(1),
            takers: o.workers.unwrap_or(1000),
            duration: o.duration,
            prefix: o.prefix.clone(),
            hold: o.hold,
        };
        return super::dispatch::run(&load, addr, resolve(&o.heartbeat)?, &payload);
    }
    if o.mode == "delayed" {
        return delayed(o, addr, resolve(&o.heartbeat)?, &payload);
    }
    let mut threads = Vec::new();
    if o.mode == "e2e" {
        for i in 0..o.workers.unwrap_or(32) {
            let (stop, done) = (stop.clone(), done.clone());
            let hb = resolve(&o.heartbeat)?;
            let id = format!("{}-{i}", o.prefix);
            let say_running = o.say_running;
            threads.push(std::thread::spawn(move || {
                let r = if beanstalk {
                    beanstalk_worker(addr, &stop, &done)
                } else {
                    muster_worker(hb, &id, say_running, &stop, &done, None)
                };
                if let Err(e) = r {
                    eprintln!("worker: {e}");
                }
                0
            }));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let started = Instant::now();
    let submitters: Vec<_> = (0..o.submitters)
        .map(|_| {
            let (stop, payload) = (stop.clone(), payload.clone());
            std::thread::spawn(move || {
                let r = if beanstalk {
                    beanstalk_put(addr, &payload, &stop)
                } else {
                    muster_submit(addr, &payload, &stop)
                };
                r.unwrap_or_else(|e| {
                    eprintln!("submitter: {e}");
                    0
                })
            })
        })
        .collect();
    let before = done.load(Ordering::Relaxed);
    std::thread::sleep(o.duration);
    let finished = done.load(Ordering::Relaxed) - before;
    stop.store(true, Ordering::Relaxed);
    let secs = started.elapsed().as_secs_f64();
    let submitted: u64 = submitters.into_iter().map(|t| t.join().unwrap_or(0)).sum();
    for t in threads {
        let _ = t.join();
    }
    Ok(json!({
        "target": o.target,
        "mode": o.mode,
        "submitters": o.submitters,
        "workers": if o.mode == "e2e" { o.workers.unwrap_or(32) } else { 0 },
        "payload_bytes": o.payload,
        "frames_per_task": if beanstalk { Value::Null } else { json!(1 + usize::from(o.say_running)) },
        "seconds": (secs * 10.0).round() / 10.0,
        "submitted": submitted,
        "submitted_per_s": (submitted as f64 / secs).round(),
        "finished_per_s": (finished as f64 / o.duration.as_secs_f64()).round(),
    }))
}

/// Keep-alive POSTs until `stop`; returns the tasks acknowledged (201).
fn muster_submit(addr: SocketAddr, payload: &str, stop: &AtomicBool) -> Result<u64, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    let body = format!(r#"{{"type":"bench","payload":"{payload}"}}"#);
    let req = format!(
        "POST /api/tasks HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut r = BufReader::new(s.try_clone().map_err(|e| e.to_string())?);
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
        let (status, _) = read_response(&mut r)?;
        if status != 201 {
            return Err(format!("musterd answered {status}"));
        }
        n += 1;
    }
    Ok(n)
}

pub fn read_response(r: &mut impl BufRead) -> Result<(u16, Vec<u8>), String> {
    let mut line = String::new();
    r.read_line(&mut line).map_err(|e| e.to_string())?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut len = 0;
    loop {
        line.clear();
        r.read_line(&mut line).map_err(|e| e.to_string())?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).map_err(|e| e.to_string())?;
    Ok((status, body))
}

/// A worker that finishes every task at once, saying `running` first when
/// `say_running`. `seen`, when given, gets each task's id and the instant
/// its frame arrived.
fn muster_worker(
    hb: SocketAddr,
    id: &str,
    say_running: bool,
    stop: &AtomicBool,
    done: &AtomicU64,
    seen: Option<std::sync::mpsc::Sender<(String, Instant)>>,
) -> Result<(), String> {
    let mut s = TcpStream::connect(hb).map_err(|e| e.to_string())?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(|e| e.to_string())?;
    writeln!(s, r#"{{"type":"hello","worker_id":"{id}","capacity":1}}"#)
        .map_err(|e| e.to_string())?;
    let mut r = BufReader::new(s.try_clone().map_err(|e| e.to_string())?);
    let mut line = String::new();
    while !stop.load(Ordering::Relaxed) {
        line.clear();
        match r.read_line(&mut line) {
            Ok(0) => return Err("musterd closed the session".into()),
            Ok(_) => {}
            Err(_) => continue,
        }
        let Ok(muster::proto::Reply::Task(t)) = muster::proto::decode_reply(line.as_bytes()) else {
            continue;
        };
        if let Some(tx) = &seen {
            let _ = tx.send((t.task_id.clone(), Instant::now()));
        }
        let id = t.task_id;
        let mut out = String::new();
        if say_running {
            out = format!(
                "{{\"type\":\"task_update\",\"task_id\":\"{id}\",\"state\":\"running\"}}\n"
            );
        }
        out.push_str(&format!(
            "{{\"type\":\"task_update\",\"task_id\":\"{id}\",\"state\":\"succeeded\"}}\n"
        ));
        s.write_all(out.as_bytes()).map_err(|e| e.to_string())?;
        done.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

fn beanstalk_put(addr: SocketAddr, payload: &str, stop: &AtomicBool) -> Result<u64, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut r = BufReader::new(s.try_clone().map_err(|e| e.to_string())?);
    let req = format!("put 1024 0 60 {}\r\n{payload}\r\n", payload.len());
    let mut line = String::new();
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
        line.clear();
        r.read_line(&mut line).map_err(|e| e.to_string())?;
        if !line.starts_with("INSERTED") {
            return Err(format!("beanstalkd answered {line:?}"));
        }
        n += 1;
    }
    Ok(n)
}

fn beanstalk_worker(addr: SocketAddr, stop: &AtomicBool, done: &AtomicU64) -> Result<(), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut r = BufReader::new(s.try_clone().map_err(|e| e.to_string())?);
    let mut line = String::new();
    while !stop.load(Ordering::Relaxed) {
        s.write_all(b"reserve-with-timeout 1\r\n")
            .map_err(|e| e.to_string())?;
        line.clear();
        r.read_line(&mut line).map_err(|e| e.to_string())?;
        let mut words = line.split_whitespace();
        if words.next() != Some("RESERVED") {
            continue;
        }
        let id = words.next().unwrap_or("0").to_string();
        let bytes: usize = words.next().and_then(|b| b.parse().ok()).unwrap_or(0);
        let mut body = vec![0; bytes + 2];
        r.read_exact(&mut body).map_err(|e| e.to_string())?;
        s.write_all(format!("delete {id}\r\n").as_bytes())
            .map_err(|e| e.to_string())?;
        line.clear();
        r.read_line(&mut line).map_err(|e| e.to_string())?;
        done.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

/// One worker, one task at a time: 201 → the worker has it.
fn latency(addr: SocketAddr, hb: SocketAddr, payload: &str) -> Result<Value, String> {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let (tx, rx) = std::sync::mpsc::channel();
    let (st, dn) = (stop.clone(), done.clone());
    let w =
        std::thread::spawn(move || muster_worker(hb, "bench-latency", false, &st, &dn, Some(tx)));
    // Warm: the worker says hello and the daemon knows it takes tasks.
    std::thread::sleep(Duration::from_millis(500));
    let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut r = BufReader::new(s.try_clone().map_err(|e| e.to_string())?);
    let body = format!(r#"{{"type":"bench","payload":"{payload}"}}"#);
    let req = format!(
        "POST /api/tasks HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut us = Vec::new();
    for _ in 0..1000 {
        let sent = Instant::now();
        s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
        let (status, _) = read_response(&mut r)?;
        if status != 201 {
            return Err(format!("musterd answered {status}"));
        }
        let (_, got) = rx
            .recv_timeout(Duration::from_secs(5))
            .map_err(|_| "the worker got no task".to_string())?;
        us.push(got.saturating_duration_since(sent).as_secs_f64() * 1e6);
        // Let the worker finish it before the next.
        std::thread::sleep(Duration::from_millis(2));
    }
    stop.store(true, Ordering::Relaxed);
    let _ = w.join();
    us.sort_by(f64::total_cmp);
    let at = |p: f64| us[((us.len() as f64 * p) as usize).min(us.len() - 1)];
    Ok(json!({
        "target": "musterd",
        "mode": "latency",
        "tasks": us.len(),
        "dispatch_p50_ms": (at(0.5) / 10.0).round() / 100.0,
        "dispatch_p99_ms": (at(0.99) / 10.0).round() / 100.0,
        "dispatch_max_ms": (us[us.len() - 1] / 10.0).round() / 100.0,
    }))
}

/// `--mode delayed`: `--tasks` tasks, each submitted with a `delay_ms`
/// that makes it due at its place in `--duration` (starting 3 s after the
/// first submission), to `--workers` no-op workers; how long after its
/// due time each task frame reached its worker.
fn delayed(o: &Opts, addr: SocketAddr, hb: SocketAddr, payload: &str) -> Result<Value, String> {
    const LEAD_MS: u64 = 3000;
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let (tx, rx) = std::sync::mpsc::channel();
    let mut workers = Vec::new();
    for i in 0..o.workers.unwrap_or(32).max(1) {
        let (st, dn, tx) = (stop.clone(), done.clone(), tx.clone());
        let id = format!("{}-{i}", o.prefix);
        let say_running = o.say_running;
        workers.push(std::thread::spawn(move || {
            muster_worker(hb, &id, say_running, &st, &dn, Some(tx))
        }));
    }
    drop(tx);
    std::thread::sleep(Duration::from_millis(500));
    let base = Instant::now();
    let span = o.duration.as_millis() as u64;
    let n = o.tasks.unwrap_or(10_000).max(1);
    // Due times as offsets from `base`, by task id.
    let due: Arc<std::sync::Mutex<std::collections::HashMap<String, u64>>> = Arc::default();
    let submitters = o.submitters.clamp(1, 16);
    let mut subs = Vec::new();
    for c in 0..submitters {
        let due = due.clone();
        let payload = payload.to_string();
        subs.push(std::thread::spawn(move || -> Result<(), String> {
            let s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
            s.set_nodelay(true).map_err(|e| e.to_string())?;
            let mut w = s.try_clone().map_err(|e| e.to_string())?;
            let mut r = BufReader::new(s);
            for i in (c..n).step_by(submitters) {
                let at = LEAD_MS + i as u64 * span / n as u64;
                let now = base.elapsed().as_millis() as u64;
                let delay = at
                    .checked_sub(now)
                    .ok_or("submissions fell behind the lead")?;
                let body =
                    format!(r#"{{"type":"bench","payload":"{payload}","delay_ms":{delay}}}"#);
                let req = format!(
                    "POST /api/tasks HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                w.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
                let (status, b) = read_response(&mut r)?;
                if status != 201 {
                    return Err(format!("musterd answered {status}"));
                }
                let v: Value = serde_json::from_slice(&b).map_err(|e| e.to_string())?;
                let id = v["id"].as_str().unwrap_or_default().to_string();
                // The daemon's own due time, from its clock and ours alike
                // (the delay counts from its receipt, a moment after `now`).
                due.lock().unwrap().insert(id, now + delay);
            }
            Ok(())
        }));
    }
    for s in subs {
        s.join().map_err(|_| "a submitter panicked")??;
    }
    let mut late_ms = Vec::with_capacity(n);
    let mut early = 0u64;
    let deadline = base + Duration::from_millis(LEAD_MS + span + 10_000);
    while late_ms.len() < n && Instant::now() < deadline {
        let Ok((id, at)) = rx.recv_timeout(Duration::from_millis(500)) else {
            continue;
        };
        let got = at.saturating_duration_since(base).as_secs_f64() * 1000.0;
        let Some(&want) = due.lock().unwrap().get(&id) else {
            continue;
        };
        // Both sides count whole ms, on clocks whose ms need not align:
        // earlier by more than that is early.
        if got < want as f64 - 1.0 {
            early += 1;
        }
        late_ms.push((got - want as f64).max(0.0));
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.join();
    }
    if late_ms.is_empty() {
        return Err("no delayed task reached a worker".into());
    }
    late_ms.sort_by(f64::total_cmp);
    let at = |p: f64| late_ms[((late_ms.len() as f64 * p) as usize).min(late_ms.len() - 1)];
    let r = |v: f64| (v * 10.0).round() / 10.0;
    Ok(json!({
        "target": "musterd",
        "mode": "delayed",
        "tasks": n,
        "started": late_ms.len(),
        "over_ms": span,
        "started_early": early,
        "late_p50_ms": r(at(0.5)),
        "late_p99_ms": r(at(0.99)),
        "late_max_ms": r(late_ms[late_ms.len() - 1]),
    }))
}
