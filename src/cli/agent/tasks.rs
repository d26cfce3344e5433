//! `muster agent --tasks -- HANDLER ARGS…`: a worker that takes tasks.
//! It says hello with `capacity` (and `task_types`), runs HANDLER once per
//! `task` frame (no shell; the payload on stdin; `MUSTER_TASK_ID`,
//! `MUSTER_TASK_TYPE`, `MUSTER_TASK_ATTEMPT` in its environment), turns its
//! stdout and stderr lines into `task_log` frames, and reports the outcome:
//! exit 0 is `succeeded` (the last stdout line, when it is JSON, is the
//! result), anything else `failed` with the exit code. A `cancel` frame
//! sends SIGTERM to the handler's process group, SIGKILL after
//! [`CANCEL_GRACE`], and reports `cancelled`. Heartbeats say `working` with
//! `running_tasks` while tasks run, `idle` otherwise. A stdout line
//! `::progress FRACTION MESSAGE` (either may be left out; FRACTION 0 to 1,
//! or a percentage such as `40%`) is sent as `task_progress`, not logged.

use super::link::Link;
use super::{Opts, hello};
use crate::proto::task::{
    Held, MAX_LOG_LINES, MAX_PROGRESS_MESSAGE, Offer, Reported as TaskState, TaskLog, TaskProgress,
    TaskUpdate,
};
use crate::proto::{Frame, Heartbeat, Reply, Reported, WorkerId};
use crate::sys::process;
use serde_json::{Value, json};
use signal_hook::consts::{SIGKILL, SIGTERM};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

/// How long a cancelled handler has between SIGTERM and SIGKILL.
pub const CANCEL_GRACE: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(20);

struct Running {
    offer: Offer,
    child: Child,
    lines: Receiver<(bool, String)>,
    last_stdout: Option<String>,
    /// When SIGKILL follows a cancel's SIGTERM.
    kill_at: Option<Instant>,
}

fn spawn(cmd: &[String], offer: &Offer) -> std::io::Result<Running> {
    let (prog, args) = cmd.split_first().ok_or(std::io::ErrorKind::InvalidInput)?;
    let mut cmd = Command::new(prog);
    cmd.args(args)
        .env("MUSTER_TASK_ID", &offer.task_id)
        .env("MUSTER_TASK_TYPE", &offer.task_type)
        .env("MUSTER_TASK_ATTEMPT", offer.attempt.to_string())
        .env_remove("TRACEPARENT")
        .env_remove("TRACESTATE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // The task's trace context, never the agent's own.
    if let Some(tp) = &offer.traceparent {
        cmd.env("TRACEPARENT", tp);
    }
    if let Some(ts) = &offer.tracestate {
        cmd.env("TRACESTATE", ts);
    }
    process::dies_with_parent(&mut cmd);
    let mut child = cmd.spawn()?;
    let (tx, lines) = mpsc::channel();
    if let Some(out) = child.stdout.take() {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send((true, l));
            }
        });
    }
    if let Some(err) = child.stderr.take() {
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send((false, l));
            }
        });
    }
    if let Some(mut stdin) = child.stdin.take() {
        let payload = serde_json::to_vec(&offer.payload).unwrap_or_default();
        // A handler that never reads its stdin must not hold the agent.
        std::thread::spawn(move || {
            let _ = stdin.write_all(&payload);
        });
    }
    Ok(Running {
        offer: offer.clone(),
        child,
        lines,
        last_stdout: None,
        kill_at: None,
    })
}

fn update(
    task_id: &str,
    state: TaskState,
    result: Option<Value>,
    error: Option<String>,
    code: Option<i32>,
) -> Frame {
    Frame::TaskUpdate(TaskUpdate {
        task_id: task_id.to_string(),
        state,
        result,
        error,
        exit_code: code,
        retryable: None,
    })
}

/// A handler's `::progress FRACTION MESSAGE` line, as a `task_progress`
/// for `task_id`; `None` for any other line.
fn progress_line(task_id: &str, line: &str) -> Option<TaskProgress> {
    let rest = line.strip_prefix("::progress")?;
    if !(rest.is_empty() || rest.starts_with(' ')) {
        return None;
    }
    let rest = rest.trim();
    let (first, after) = rest.split_once(' ').unwrap_or((rest, ""));
    let fraction = match first.strip_suffix('%') {
        Some(p) => p.parse::<f64>().ok().map(|p| p / 100.0),
        None => first.parse::<f64>().ok(),
    }
    .filter(|f| (0.0..=1.0).contains(f));
    let message = if fraction.is_some() { after } else { rest }.trim();
    let mut message = message.to_string();
    if message.len() > MAX_PROGRESS_MESSAGE {
        let mut end = MAX_PROGRESS_MESSAGE;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
    }
    let message = (!message.is_empty()).then_some(message);
    (fraction.is_some() || message.is_some()).then(|| TaskProgress {
        task_id: task_id.to_string(),
        fraction,
        message,
    })
}

/// One line the handler printed: its progress sent at once, any other
/// line kept for the log (and, from stdout, as its last line).
fn said(link: &mut Link, r: &mut Running, stdout: bool, l: String, log: &mut Vec<String>) {
    if stdout {
        if let Some(p) = progress_line(&r.offer.task_id, &l) {
            link.heartbeat(Frame::TaskProgress(p));
            return;
        }
        r.last_stdout = Some(l.clone());
    }
    log.push(l);
}

/// Take what the handler printed; send it as `task_log` frames.
fn drain(link: &mut Link, r: &mut Running) {
    let mut lines = Vec::new();
    while let Ok((stdout, l)) = r.lines.try_recv() {
        said(link, r, stdout, l, &mut lines);
    }
    for chunk in lines.chunks(MAX_LOG_LINES) {
        link.heartbeat(Frame::TaskLog(TaskLog {
            task_id: r.offer.task_id.clone(),
            lines: chunk.to_vec(),
        }));
    }
}

/// The handler ended: its last lines, then its outcome.
fn finish(link: &mut Link, mut r: Running, st: std::process::ExitStatus) {
    // Its pipes close with it (unless it left children holding them).
    let until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < until {
        match r.lines.recv_timeout(Duration::from_millis(50)) {
            Ok((stdout, l)) => {
                let mut lines = Vec::new();
                said(link, &mut r, stdout, l, &mut lines);
                if !lines.is_empty() {
                    link.heartbeat(Frame::TaskLog(TaskLog {
                        task_id: r.offer.task_id.clone(),
                        lines,
                    }));
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    drain(link, &mut r);
    let (_, code, signal) = process::exit_code(st);
    let id = &r.offer.task_id;
    let frame = if r.kill_at.is_some() {
        update(
            id,
            TaskState::Cancelled,
            None,
            Some("cancelled".into()),
            code,
        )
    } else if code == Some(0) {
        let result = r
            .last_stdout
            .as_deref()
            .and_then(|l| serde_json::from_str(l).ok());
        update(id, TaskState::Succeeded, result, None, code)
    } else {
        let why = match signal {
            Some(s) => format!("killed by signal {s}"),
            None => format!("exit status {}", code.unwrap_or(1)),
        };
        update(id, TaskState::Failed, None, Some(why), code)
    };
    link.run(frame);
}

pub(super) fn run(
    o: &Opts,
    id: &str,
    to: Vec<crate::cli::net::Target>,
    signals: &mut signal_hook::iterator::Signals,
) -> i32 {
    let mut first = hello(id, std::process::id(), &o.labels);
    if let Frame::Hello(h) = &mut first {
        h.capacity = Some(o.capacity);
        h.task_types = (!o.task_types.is_empty()).then(|| o.task_types.clone());
    }
    let mut link = match Link::new(to, id, true, o.token.clone(), first) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("muster agent: {e}");
            return 1;
        }
    };
    let mut running: Vec<Running> = Vec::new();
    let mut next_beat = Instant::now();
    let mut seq = 0u64;
    let mut stopping = false;
    loop {
        if signals.pending().next().is_some() && !stopping {
            stopping = true;
            for r in &mut running {
                process::signal_group(r.child.id() as i32, SIGTERM);
                r.kill_at = Some(Instant::now() + CANCEL_GRACE);
            }
        }
        if stopping && running.is_empty() {
            break;
        }
        for reply in link.replies() {
            match reply {
                Reply::Task(offer) if !stopping && running.len() < o.capacity as usize => {
                    match spawn(&o.cmd, &offer) {
                        Ok(r) => {
                            link.run(update(&offer.task_id, TaskState::Running, None, None, None));
                            running.push(r);
                        }
                        Err(e) => link.run(update(
                            &offer.task_id,
                            TaskState::Failed,
                            None,
                            Some(format!("cannot run {:?}: {e}", o.cmd[0])),
                            Some(127),
                        )),
                    }
                }
                // More than we offered to take, or stopping: let it time
                // out and go to another worker.
                Reply::Task(_) => {}
                // The node this worker reconnected to keeps the task, under
                // a new token (for the next reconnect).
                Reply::Lease { task_id, lease } => {
                    for r in running.iter_mut().filter(|r| r.offer.task_id == task_id) {
                        r.offer.lease = Some(lease);
                    }
                }
                Reply::Cancel { task_id } => {
                    for r in running.iter_mut().filter(|r| r.offer.task_id == task_id) {
                        process::signal_group(r.child.id() as i32, SIGTERM);
                        r.kill_at.get_or_insert(Instant::now() + CANCEL_GRACE);
                    }
                }
                Reply::Welcome(_) | Reply::Error(_) => {}
            }
        }
        link.set_running(
            running
                .iter()
                .map(|r| Held {
                    task_id: r.offer.task_id.clone(),
                    lease: r.offer.lease.unwrap_or(0),
                })
                .collect(),
        );
        let mut i = 0;
        while i < running.len() {
            drain(&mut link, &mut running[i]);
            let r = &mut running[i];
            if r.kill_at.is_some_and(|t| Instant::now() >= t) {
                process::signal_group(r.child.id() as i32, SIGKILL);
            }
            match r.child.try_wait() {
                Ok(Some(st)) => {
                    let r = running.swap_remove(i);
                    finish(&mut link, r, st);
                    next_beat = Instant::now();
                }
                _ => i += 1,
            }
        }
        if Instant::now() >= next_beat {
            seq += 1;
            let tasks: Vec<Value> = running
                .iter()
                .map(|r| json!({"task_id": r.offer.task_id, "task_type": r.offer.task_type}))
                .collect();
            link.heartbeat(Frame::Heartbeat(Heartbeat {
                worker_id: Some(WorkerId::from(id)),
                seq: Some(seq),
                status: Some(if tasks.is_empty() {
                    Reported::Idle
                } else {
                    Reported::Working
                }),
                queue_depth: Some(tasks.len() as u64),
                running_tasks: Some(tasks),
                ..Heartbeat::default()
            }));
            next_beat += o.interval;
        }
        std::thread::sleep(POLL);
    }
    link.settle(Duration::from_secs(5));
    link.bye();
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn said(line: &str) -> Option<(Option<f64>, Option<String>)> {
        progress_line("t1", line).map(|p| (p.fraction, p.message))
    }

    #[test]
    fn progress_lines() {
        assert_eq!(
            said("::progress 0.25 resizing"),
            Some((Some(0.25), Some("resizing".into())))
        );
        assert_eq!(said("::progress 40%"), Some((Some(0.4), None)));
        assert_eq!(
            said("::progress waiting for the GPU"),
            Some((None, Some("waiting for the GPU".into())))
        );
        // A fraction out of range is words.
        assert_eq!(
            said("::progress 2 of 3"),
            Some((None, Some("2 of 3".into())))
        );
        assert_eq!(said("::progress"), None);
        assert_eq!(said("::progressive rock"), None);
        assert_eq!(said("progress 0.5"), None);
        let long = format!("::progress 0.5 {}", "é".repeat(MAX_PROGRESS_MESSAGE));
        let (_, m) = said(&long).unwrap();
        assert!(m.unwrap().len() <= MAX_PROGRESS_MESSAGE);
    }
}
