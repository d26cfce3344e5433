//! `muster agent`: turn any command into a monitored worker. It starts the
//! command (or watches a running pid), samples the process tree from /proc
//! every interval, heartbeats for it, and reports each run's outcome.
//!
//! Delivery: over TCP (the default) the agent says hello and keeps the
//! connection; when the daemon is away it keeps the command running,
//! reconnects with backoff, and delivers the `run` frames it owes (at most
//! [`MAX_OWED`]; older ones are dropped and said so). Heartbeats are state:
//! one that cannot be sent is not queued.
//!
//! Exit status: the command's own, 128+N when a signal N ended it, 127 when
//! it could not be started. SIGTERM, SIGINT and SIGHUP sent to the agent are
//! passed to the command's process group.

mod link;
mod tasks;

use crate::proto::{self, Frame, Heartbeat, Hello, Labels, Reported, ResourceUsage, Run, WorkerId};
use crate::sys::gpu::Gpu;
use crate::sys::process;
use crate::sys::usage::{Sampler, Usage};
use lexopt::prelude::*;
use link::Link;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

/// Run frames kept for a daemon that is away.
pub const MAX_OWED: usize = 100;
/// How often the agent looks at its child and its signals.
const POLL: Duration = Duration::from_millis(100);
/// How long a finishing agent keeps trying to deliver what it owes.
const FINAL_DELIVERY: Duration = Duration::from_secs(10);

const USAGE: &str = "usage: muster agent [options] -- CMD [ARGS...]
       muster agent [options] --pid PID
       muster agent --tasks [--capacity N] [--task-type T]... [options] -- HANDLER [ARGS...]

Run CMD (or watch process PID) as a monitored worker: heartbeats with its
CPU, memory, GPU and resource usage every interval, a `run` frame with its
outcome when it ends, then `bye`. Exits with CMD's status (128+N for signal N,
127 if CMD cannot be started).

options:
  --id ID              worker id (default: <hostname>-<command name>)
  --interval D         heartbeat interval (default 5s)
  --tcp | --udp        transport (default tcp: hello, reconnects, owed runs)
  --label K=V          a label; repeatable
  --every D            rerun CMD every D (a monitored cron job; idle between runs)
  --pid PID            watch a process this agent did not start, until it exits
  --heartbeat-addr A   musterd's heartbeat address, or a cluster's: A,B,C tried in turn
                       (default $MUSTER_HEARTBEAT_ADDR or 127.0.0.1:8090)
  --heartbeat-token-file F  file holding musterd's heartbeat token (default $MUSTER_HEARTBEAT_TOKEN_FILE)
  --tls                TLS heartbeats (musterd's heartbeat_tls_addr); default $MUSTER_TLS
  --ca-file F          CA to verify musterd with (default $MUSTER_TLS_CA_FILE, else the system's)
  --cert-file F        this worker's certificate, when musterd asks for one (its CN is the id;
  --key-file F         default $MUSTER_TLS_CERT_FILE and $MUSTER_TLS_KEY_FILE)
  --tasks              take tasks: run HANDLER once per task, the payload on stdin,
                       MUSTER_TASK_ID/TYPE/ATTEMPT in its environment; its output
                       lines are the task's log; exit 0 succeeds (a JSON last
                       stdout line is the result), else fails
  --capacity N         with --tasks: tasks run at once (default 1)
  --task-type T        with --tasks: take only tasks of type T; repeatable
";

#[derive(Debug)]
pub(crate) struct Opts {
    id: Option<String>,
    interval: Duration,
    tcp: bool,
    labels: Labels,
    every: Option<Duration>,
    pid: Option<u32>,
    cmd: Vec<String>,
    heartbeat: String,
    /// Sent with hello (TCP) or every frame (UDP) when musterd asks for one.
    token: Option<String>,
    /// `--tasks`: take tasks, run CMD once per task.
    tasks: bool,
    capacity: u32,
    task_types: Vec<String>,
    /// TLS heartbeats, and the files they read.
    tls: bool,
    files: crate::cli::net::TlsFiles,
}

fn parse(args: &[String]) -> Result<Option<Opts>, String> {
    let split = args.iter().position(|a| a == "--").unwrap_or(args.len());
    let (opts, cmd) = (&args[..split], args.get(split + 1..).unwrap_or(&[]));
    let mut o = Opts {
        // A pool member is told its id.
        id: std::env::var("MUSTER_WORKER_ID")
            .ok()
            .filter(|v| !v.is_empty()),
        interval: Duration::from_secs(5),
        tcp: true,
        labels: Labels::new(),
        every: None,
        pid: None,
        cmd: cmd.to_vec(),
        heartbeat: crate::cli::client::env_heartbeat_addr(),
        token: None,
        tasks: false,
        capacity: 1,
        task_types: Vec::new(),
        tls: crate::cli::net::env_tls()?,
        files: crate::cli::net::files(),
    };
    let mut token_file =
        std::env::var_os(crate::cli::client::HEARTBEAT_TOKEN_ENV).map(PathBuf::from);
    let err = |e: lexopt::Error| e.to_string();
    let dur = |v: String| crate::config::units::parse_duration(&v);
    let mut p = lexopt::Parser::from_args(opts.iter().cloned());
    while let Some(arg) = p.next().map_err(err)? {
        match arg {
            Short('h') | Long("help") => return Ok(None),
            Long("id") => o.id = Some(p.value().map_err(err)?.string().map_err(err)?),
            Long("interval") => o.interval = dur(p.value().map_err(err)?.string().map_err(err)?)?,
            Long("every") => o.every = Some(dur(p.value().map_err(err)?.string().map_err(err)?)?),
            Long("tcp") => o.tcp = true,
            Long("udp") => o.tcp = false,
            Long("pid") => o.pid = Some(p.value().map_err(err)?.parse().map_err(err)?),
            Long("heartbeat-addr") => {
                o.heartbeat = p.value().map_err(err)?.string().map_err(err)?
            }
            Long("heartbeat-token-file") => token_file = Some(p.value().map_err(err)?.into()),
            Long("tls") => o.tls = true,
            Long("ca-file") => o.files.ca = Some(p.value().map_err(err)?.into()),
            Long("cert-file") => o.files.cert = Some(p.value().map_err(err)?.into()),
            Long("key-file") => o.files.key = Some(p.value().map_err(err)?.into()),
            Long("tasks") => o.tasks = true,
            Long("capacity") => {
                o.capacity = p.value().map_err(err)?.parse().map_err(err)?;
                if o.capacity == 0 {
                    return Err("--capacity is at least 1".into());
                }
            }
            Long("task-type") => o
                .task_types
                .push(p.value().map_err(err)?.string().map_err(err)?),
            Long("label") => {
                let kv = p.value().map_err(err)?.string().map_err(err)?;
                let (k, v) = kv
                    .split_once('=')
                    .ok_or(format!("--label takes KEY=VALUE, got {kv:?}"))?;
                o.labels.insert(k.to_string(), v.to_string());
            }
            Value(v) => {
                return Err(format!(
                    "unexpected {:?}: put the command after --",
                    v.to_string_lossy()
                ));
            }
            _ => return Err(err(arg.unexpected())),
        }
    }
    o.token = crate::cli::client::read_token(token_file.as_deref())?;
    if o.interval < Duration::from_millis(100) {
        return Err("--interval must be at least 100ms".into());
    }
    match (o.pid, o.cmd.is_empty()) {
        (Some(_), false) => return Err("give either --pid or a command, not both".into()),
        (None, true) => return Err("no command: muster agent [options] -- CMD [ARGS...]".into()),
        _ => {}
    }
    if o.tasks && (o.pid.is_some() || o.every.is_some() || !o.tcp) {
        return Err("--tasks runs HANDLER per task over TCP: no --pid, --every or --udp".into());
    }
    if o.tls && !o.tcp {
        return Err("--tls runs over TCP: not with --udp".into());
    }
    if o.pid.is_some() && o.every.is_some() {
        return Err("--every reruns a command; it does not go with --pid".into());
    }
    Ok(Some(o))
}

pub(crate) fn hostname() -> String {
    crate::sys::procfs::hostname().unwrap_or_else(|| "localhost".into())
}

/// `<hostname>-<name>`, with characters a worker id cannot hold replaced.
pub fn default_id(host: &str, name: &str) -> String {
    let base = name.rsplit('/').next().unwrap_or(name);
    let id: String = format!("{host}-{base}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._:@-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(proto::MAX_ID_LEN)
        .collect();
    if proto::check_worker_id(&id).is_ok() {
        id
    } else {
        format!("agent-{}", std::process::id())
    }
}

fn heartbeat_frame(
    id: &str,
    seq: u64,
    status: Reported,
    u: Option<&Usage>,
    gpu: Option<f64>,
) -> Frame {
    let round = |x: f64, places: f64| (x * places).round() / places;
    let mut beat = Heartbeat {
        worker_id: Some(WorkerId::from(id)),
        seq: Some(seq),
        status: Some(status),
        gpu_usage: gpu.map(|g| g.clamp(0.0, 100.0)),
        ..Heartbeat::default()
    };
    if let Some(u) = u {
        beat.cpu_usage = u.cpu_percent.map(|c| round(c, 100.0));
        beat.memory_usage = u.memory_percent.map(|m| round(m.min(100.0), 1000.0));
        // Storage I/O is reported as a pair or not at all.
        let io = u.io_read_bytes.zip(u.io_write_bytes);
        beat.resource_usage = Some(ResourceUsage {
            rss_mb: Some(round(u.rss_mb, 100.0)),
            peak_rss_mb: Some(round(u.peak_rss_mb, 100.0)),
            threads: Some(u.threads),
            fds: Some(u.fds),
            io_read_bytes: io.map(|(r, _)| r),
            io_write_bytes: io.map(|(_, w)| w),
            ..ResourceUsage::default()
        });
    }
    Frame::Heartbeat(beat)
}

fn run_frame(id: &str, duration: Duration, code: Option<i32>, signal: Option<i32>) -> Frame {
    Frame::Run(Run {
        worker_id: Some(WorkerId::from(id)),
        duration_ms: (duration.as_secs_f64() * 1000.0 * 100.0).round() / 100.0,
        ok: code == Some(0),
        exit_code: code,
        signal,
        token: None,
    })
}

pub fn main(args: &[String]) -> i32 {
    let o = match parse(args) {
        Ok(Some(o)) => o,
        Ok(None) => {
            print!("{USAGE}");
            return 0;
        }
        Err(e) => {
            eprintln!("muster agent: {e}\n\n{USAGE}");
            return 2;
        }
    };
    let to: Vec<_> = match crate::cli::client::parse_addrs(&o.heartbeat) {
        Ok(a) => a.into_iter().map(|t| t.with_tls(o.tls)).collect(),
        Err(_) => {
            eprintln!("muster agent: bad --heartbeat-addr {:?}", o.heartbeat);
            return 2;
        }
    };
    crate::cli::net::set_files(o.files.clone());
    if o.tls {
        // Said now, not at the first connection after CMD has started.
        if let Err(e) = crate::cli::net::check() {
            eprintln!("muster agent: TLS: {e}");
            return 2;
        }
    }
    let mut signals = match signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("muster agent: cannot handle signals: {e}");
            return 1;
        }
    };
    match o.pid {
        Some(pid) => watch_pid(&o, pid, to, &mut signals),
        None if o.tasks => {
            let id = match checked_id(
                o.id.clone()
                    .unwrap_or_else(|| default_id(&hostname(), &o.cmd[0])),
            ) {
                Ok(id) => id,
                Err(c) => return c,
            };
            tasks::run(&o, &id, to, &mut signals)
        }
        None => run_cmd(&o, to, &mut signals),
    }
}

pub(crate) fn hello(id: &str, pid: u32, labels: &Labels) -> Frame {
    Frame::Hello(Hello {
        worker_id: WorkerId::from(id),
        pid: Some(pid),
        hostname: Some(hostname()),
        capacity: None,
        task_types: None,
        labels: Some(labels.clone()),
        token: None,
        running: None,
    })
}

fn checked_id(id: String) -> Result<String, i32> {
    match proto::check_worker_id(&id) {
        Ok(()) => Ok(id),
        Err(_) => {
            eprintln!("muster agent: {id:?} is not a valid worker id (1-128 of A-Za-z0-9._:@-)");
            Err(2)
        }
    }
}

fn watch_pid(
    o: &Opts,
    pid: u32,
    to: Vec<crate::cli::net::Target>,
    signals: &mut signal_hook::iterator::Signals,
) -> i32 {
    let Some(_) = crate::sys::procfs::read_stat(pid) else {
        eprintln!("muster agent: no process {pid}");
        return 1;
    };
    let name = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    let id = match checked_id(
        o.id.clone()
            .unwrap_or_else(|| default_id(&hostname(), name.trim())),
    ) {
        Ok(id) => id,
        Err(c) => return c,
    };
    let mut link = match Link::new(to, &id, o.tcp, o.token.clone(), hello(&id, pid, &o.labels)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("muster agent: {e}");
            return 1;
        }
    };
    let gpu = Gpu::probe();
    let mut sampler = Sampler::new(pid);
    let mut seq = 0;
    let mut next_beat = Instant::now();
    loop {
        if signals.pending().next().is_some() {
            break;
        }
        if Instant::now() >= next_beat {
            let Some(u) = sampler.sample() else { break };
            seq += 1;
            let g = gpu.usage(&sampler.tree());
            link.heartbeat(heartbeat_frame(&id, seq, Reported::Working, Some(&u), g));
            next_beat += o.interval;
        }
        if crate::sys::procfs::read_stat(pid).is_none() {
            break;
        }
        std::thread::sleep(POLL);
    }
    link.bye();
    0
}

fn run_cmd(
    o: &Opts,
    to: Vec<crate::cli::net::Target>,
    signals: &mut signal_hook::iterator::Signals,
) -> i32 {
    let id = match checked_id(
        o.id.clone()
            .unwrap_or_else(|| default_id(&hostname(), &o.cmd[0])),
    ) {
        Ok(id) => id,
        Err(c) => return c,
    };
    let mut link = match Link::new(
        to,
        &id,
        o.tcp,
        o.token.clone(),
        hello(&id, std::process::id(), &o.labels),
    ) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("muster agent: {e}");
            return 1;
        }
    };
    let gpu = Gpu::probe();
    let mut seq = 0u64;
    let mut status;
    loop {
        let started = Instant::now();
        let mut child = match process::spawn_group(&o.cmd) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("muster agent: cannot run {:?}: {e}", o.cmd[0]);
                link.run(run_frame(&id, Duration::ZERO, Some(127), None));
                status = 127;
                if o.every.is_none() {
                    break;
                }
                match idle_until(o, &id, &mut link, &mut seq, started, signals) {
                    true => continue,
                    false => break,
                }
            }
        };
        let pgid = child.id() as i32;
        // The worker's pid is the command's, as `kill` and `ps` see it.
        link.hello_again(hello(&id, child.id(), &o.labels));
        let mut sampler = Sampler::new(child.id());
        let mut next_beat = Instant::now();
        let exit = loop {
            for sig in signals.pending() {
                process::signal_group(pgid, sig);
            }
            match child.try_wait() {
                Ok(Some(st)) => break st,
                Ok(None) => {}
                Err(e) => {
                    eprintln!("muster agent: waiting for the command failed: {e}");
                    break ExitStatus::from_raw(1 << 8);
                }
            }
            if Instant::now() >= next_beat {
                let u = sampler.sample();
                seq += 1;
                let g = gpu.usage(&sampler.tree());
                link.heartbeat(heartbeat_frame(&id, seq, Reported::Working, u.as_ref(), g));
                next_beat += o.interval;
            }
            std::thread::sleep(POLL);
        };
        let (code, exit_code, signal) = process::exit_code(exit);
        status = code;
        link.run(run_frame(&id, started.elapsed(), exit_code, signal));
        if o.every.is_none() || signal.is_some_and(|s| [SIGTERM, SIGINT].contains(&s)) {
            break;
        }
        if !idle_until(o, &id, &mut link, &mut seq, started, signals) {
            break;
        }
    }
    link.settle(FINAL_DELIVERY);
    link.bye();
    status
}

/// Between runs of `--every`: heartbeat as idle until the next start.
/// Returns false when a signal asks the agent to stop.
fn idle_until(
    o: &Opts,
    id: &str,
    link: &mut Link,
    seq: &mut u64,
    last_start: Instant,
    signals: &mut signal_hook::iterator::Signals,
) -> bool {
    let Some(every) = o.every else { return false };
    let next_start = last_start + every;
    let mut next_beat = Instant::now();
    while Instant::now() < next_start {
        if signals.pending().next().is_some() {
            return false;
        }
        if Instant::now() >= next_beat {
            *seq += 1;
            link.heartbeat(heartbeat_frame(id, *seq, Reported::Idle, None, None));
            next_beat += o.interval;
        }
        std::thread::sleep(POLL.min(next_start.saturating_duration_since(Instant::now())));
    }
    true
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
            "--id",
            "x",
            "--interval",
            "1s",
            "--udp",
            "--label",
            "pool=scan",
            "--",
            "sh",
            "-c",
            "exit 3",
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(
            (o.id.as_deref(), o.interval, o.tcp),
            (Some("x"), Duration::from_secs(1), false)
        );
        assert_eq!(o.labels["pool"], "scan");
        assert_eq!(o.cmd, ["sh", "-c", "exit 3"]);
        assert!(parse(&args(&["--pid", "1", "--", "ls"])).is_err());
        assert!(parse(&args(&[])).is_err());
        assert!(parse(&args(&["ls"])).is_err(), "the command goes after --");
        assert!(parse(&args(&["--label", "nokv", "--", "ls"])).is_err());
        assert!(parse(&args(&["--interval", "1ms", "--", "ls"])).is_err());
        assert!(parse(&args(&["--help"])).unwrap().is_none());
    }

    #[test]
    fn ids() {
        assert_eq!(default_id("box1", "/usr/bin/backup.sh"), "box1-backup.sh");
        assert_eq!(default_id("my host", "run job"), "my-host-run-job");
        assert_eq!(default_id("h", &"x".repeat(300)).len(), 128);
    }

    #[test]
    fn exit_codes() {
        assert_eq!(
            process::exit_code(ExitStatus::from_raw(3 << 8)),
            (3, Some(3), None)
        );
        assert_eq!(
            process::exit_code(ExitStatus::from_raw(9)),
            (137, None, Some(9))
        );
    }

    #[test]
    fn frames_are_valid() {
        let u = Usage {
            cpu_percent: Some(150.0),
            memory_percent: Some(1.5),
            rss_mb: 50.0,
            peak_rss_mb: 60.0,
            threads: 3,
            fds: 9,
            io_read_bytes: None,
            io_write_bytes: None,
            processes: 2,
        };
        for f in [
            heartbeat_frame("w", 1, Reported::Working, Some(&u), None),
            heartbeat_frame("w", 2, Reported::Idle, None, Some(40.0)),
            run_frame("w", Duration::from_millis(1234), Some(0), None),
            run_frame("w", Duration::from_millis(5), None, Some(9)),
        ] {
            let f = proto::encode(&f);
            assert!(proto::decode(f.as_bytes(), 65536).is_ok(), "{f}");
        }
        let beat = proto::encode(&heartbeat_frame("w", 1, Reported::Working, Some(&u), None));
        let v: serde_json::Value = serde_json::from_str(&beat).unwrap();
        assert!(
            v.get("gpu_usage").is_none(),
            "absent without a GPU, never 0"
        );
        assert!(v["resource_usage"].get("io_read_bytes").is_none());
    }
}
