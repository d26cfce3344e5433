//! `muster-bench tasks --mode dispatch`: dispatch from a deep queue. N
//! tasks (`--tasks`, default 100,000) of T types (`--types`, default 100)
//! are queued first, with no worker connected; then W takers (`--workers`,
//! default 1,000; capacity 1, each taking 10 of the types) connect on one
//! `mio` loop and finish every task (one `task_update` each) at once, or
//! `--hold` after it arrived: a fleet busy with work rather than a
//! daemon saturated, where each slot's wait is Little's law (takers over
//! the dispatch rate) more than the dispatch.
//! Measured: for each task after a taker's first, the time from its
//! finish leaving the taker to its next task arriving, which is what a
//! free slot waits for work while the queue is deep. One loop for every
//! taker, so that the client's own threads do not stand in the figure.

use super::tasks::read_response;
use mio::net::TcpStream as MioStream;
use mio::{Events, Interest, Poll, Token};
use serde_json::{Value, json};
use std::io::{BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Types each taker takes.
const TYPES_PER_TAKER: usize = 10;

pub struct Load {
    pub tasks: usize,
    pub types: usize,
    pub takers: usize,
    pub duration: Duration,
    pub prefix: String,
    /// How long a taker holds each task before it finishes it.
    pub hold: Duration,
}

/// Queue `n` tasks, cycling through `types` types, over 16 connections.
fn fill(addr: SocketAddr, n: usize, types: usize, payload: &str) -> Result<(), String> {
    let next = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..16)
        .map(|_| {
            let (next, payload) = (next.clone(), payload.to_string());
            std::thread::spawn(move || -> Result<(), String> {
                let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
                s.set_nodelay(true).map_err(|e| e.to_string())?;
                let mut r = BufReader::new(s.try_clone().map_err(|e| e.to_string())?);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    if i >= n {
                        return Ok(());
                    }
                    let body = format!(r#"{{"type":"t{}","payload":"{payload}"}}"#, i % types);
                    let req = format!(
                        "POST /api/tasks HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
                    let (status, _) = read_response(&mut r)?;
                    if status != 201 {
                        return Err(format!("musterd answered {status}"));
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().map_err(|_| "a submitter panicked")??;
    }
    Ok(())
}

struct Taker {
    s: MioStream,
    buf: Vec<u8>,
    /// When its last finish was written; `None` before its first task.
    finished: Option<Instant>,
}

fn write_all(s: &mut MioStream, mut b: &[u8]) -> Result<(), String> {
    while !b.is_empty() {
        match s.write(b) {
            Ok(n) => b = &b[n..],
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::yield_now(),
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(())
}

pub fn run(l: &Load, addr: SocketAddr, hb: SocketAddr, payload: &str) -> Result<Value, String> {
    let filled = Instant::now();
    fill(addr, l.tasks, l.types, payload)?;
    let fill_s = filled.elapsed().as_secs_f64();
    let mut poll = Poll::new().map_err(|e| e.to_string())?;
    let mut takers = Vec::with_capacity(l.takers);
    for i in 0..l.takers {
        let mut s = TcpStream::connect(hb).map_err(|e| e.to_string())?;
        s.set_nodelay(true).map_err(|e| e.to_string())?;
        let types: Vec<String> = (0..TYPES_PER_TAKER)
            .map(|k| format!("\"t{}\"", (i * TYPES_PER_TAKER + k) % l.types))
            .collect();
        writeln!(
            s,
            r#"{{"type":"hello","worker_id":"{}-{i}","capacity":1,"task_types":[{}]}}"#,
            l.prefix,
            types.join(",")
        )
        .map_err(|e| e.to_string())?;
        s.set_nonblocking(true).map_err(|e| e.to_string())?;
        let mut s = MioStream::from_std(s);
        poll.registry()
            .register(&mut s, Token(i), Interest::READABLE)
            .map_err(|e| e.to_string())?;
        takers.push(Taker {
            s,
            buf: Vec::new(),
            finished: None,
        });
    }
    let mut events = Events::with_capacity(1024);
    let mut us: Vec<f64> = Vec::new();
    let mut dispatched = 0u64;
    let started = Instant::now();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut last_task = Instant::now();
    // Finishes held back: when, which taker, the frame. In order, as the
    // hold is the same for every task.
    let mut held: std::collections::VecDeque<(Instant, usize, Vec<u8>)> = Default::default();
    while started.elapsed() < l.duration && last_task.elapsed() < Duration::from_secs(2) {
        let wait = held
            .front()
            .map_or(Duration::from_millis(100), |(at, _, _)| {
                at.saturating_duration_since(Instant::now())
            });
        poll.poll(&mut events, Some(wait))
            .map_err(|e| e.to_string())?;
        while held.front().is_some_and(|(at, _, _)| *at <= Instant::now()) {
            let Some((_, i, out)) = held.pop_front() else {
                break;
            };
            write_all(&mut takers[i].s, &out)?;
            takers[i].finished = Some(Instant::now());
        }
        for ev in events.iter() {
            let t = &mut takers[ev.token().0];
            loop {
                match t.s.read(&mut chunk) {
                    Ok(0) => return Err("musterd closed a session".into()),
                    Ok(n) => t.buf.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e.to_string()),
                }
            }
            let now = Instant::now();
            let mut out = Vec::new();
            while let Some(nl) = t.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = t.buf.drain(..=nl).collect();
                let Ok(muster::proto::Reply::Task(task)) = muster::proto::decode_reply(&line)
                else {
                    continue;
                };
                if let Some(f) = t.finished {
                    us.push(now.saturating_duration_since(f).as_secs_f64() * 1e6);
                }
                dispatched += 1;
                last_task = now;
                out.extend_from_slice(
                    format!(
                        "{{\"type\":\"task_update\",\"task_id\":\"{}\",\"state\":\"succeeded\"}}\n",
                        task.task_id
                    )
                    .as_bytes(),
                );
            }
            if out.is_empty() {
                continue;
            }
            if l.hold.is_zero() {
                write_all(&mut t.s, &out)?;
                t.finished = Some(Instant::now());
            } else {
                held.push_back((now + l.hold, ev.token().0, out));
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    if us.is_empty() {
        return Err("no taker got a second task".into());
    }
    us.sort_by(f64::total_cmp);
    let at = |p: f64| us[((us.len() as f64 * p) as usize).min(us.len() - 1)];
    let ms = |x: f64| (x / 10.0).round() / 100.0;
    Ok(json!({
        "target": "musterd",
        "mode": "dispatch",
        "queued_first": l.tasks,
        "types": l.types,
        "takers": l.takers,
        "hold_ms": l.hold.as_millis() as u64,
        "fill_seconds": (fill_s * 10.0).round() / 10.0,
        "seconds": (secs * 10.0).round() / 10.0,
        "dispatched": dispatched,
        "dispatched_per_s": (dispatched as f64 / secs).round(),
        "finish_to_next_p50_ms": ms(at(0.5)),
        "finish_to_next_p99_ms": ms(at(0.99)),
        "finish_to_next_max_ms": ms(us[us.len() - 1]),
    }))
}
