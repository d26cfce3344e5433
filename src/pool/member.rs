//! One pool member: its process (its own group, killed with musterd by
//! `PR_SET_PDEATHSIG`), the pidfd the supervisor polls, its output read
//! into musterd's log, and the restart bookkeeping.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Longest output line logged, in bytes; the rest is cut.
const MAX_LINE: usize = 1024;
/// Output lines logged per member per second at most; the rest are
/// counted and said.
const LINES_PER_SECOND: u32 = 50;
/// The longest restart backoff.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A member up this long has its backoff reset.
pub const HEALTHY: Duration = Duration::from_secs(60);

/// Why a member is told to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The pool was scaled below it.
    ScaledDown,
    /// musterd is stopping.
    Shutdown,
    /// A new `pool_command`: it is replaced, and restarted at once.
    Replaced,
    /// Its worker is silent: it is restarted at once.
    Hung,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::ScaledDown => "scaled down",
            StopReason::Shutdown => "musterd is stopping",
            StopReason::Replaced => "replaced",
            StopReason::Hung => "hung",
        }
    }

    /// Whether the member comes back at once, not after its backoff.
    pub fn restarts_at_once(self) -> bool {
        matches!(self, StopReason::Replaced | StopReason::Hung)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Starting,
    Running,
    Stopping,
    Backoff,
    Fatal,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Running => "running",
            State::Stopping => "stopping",
            State::Backoff => "backoff",
            State::Fatal => "fatal",
        }
    }
}

pub struct Member {
    pub n: u32,
    pub id: String,
    pub child: Option<Child>,
    /// Shared so that the supervisor can poll it without holding the pool.
    pub pidfd: Option<std::sync::Arc<OwnedFd>>,
    pub state: State,
    pub started: Option<Instant>,
    pub started_at_ms: Option<u64>,
    /// Restarts within the window, oldest first.
    pub restarts: VecDeque<Instant>,
    pub total_restarts: u64,
    pub backoff: Duration,
    pub next_start: Option<Instant>,
    pub last_exit: Option<String>,
    /// SIGKILL after this, when stopping.
    pub kill_at: Option<Instant>,
    /// Scaled away: removed once its process is gone.
    pub leaving: bool,
    /// Why it is being stopped.
    pub stop_reason: Option<StopReason>,
    /// The command its process runs.
    pub command: Option<Vec<String>>,
}

impl Member {
    pub fn new(n: u32, first_backoff: Duration) -> Member {
        Member {
            n,
            id: format!("pool-{n}"),
            child: None,
            pidfd: None,
            state: State::Backoff,
            started: None,
            started_at_ms: None,
            restarts: VecDeque::new(),
            total_restarts: 0,
            backoff: first_backoff,
            next_start: Some(Instant::now()),
            last_exit: None,
            kill_at: None,
            leaving: false,
            stop_reason: None,
            command: None,
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Start its process; on failure the member is treated as exited.
    pub fn spawn(&mut self, argv: &[String], env: &[(String, String)]) -> Result<(), String> {
        let (prog, args) = argv.split_first().ok_or("pool_command is empty")?;
        let mut cmd = Command::new(prog);
        cmd.args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("MUSTER_WORKER_ID", &self.id)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        crate::sys::process::dies_with_parent(&mut cmd);
        crate::sys::process::own_session(&mut cmd);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {prog:?}: {e}"))?;
        self.pidfd = crate::sys::process::pidfd_open(child.id()).map(std::sync::Arc::new);
        if let Some(out) = child.stdout.take() {
            forward(self.id.clone(), out);
        }
        if let Some(err) = child.stderr.take() {
            forward(self.id.clone(), err);
        }
        self.child = Some(child);
        self.command = Some(argv.to_vec());
        self.state = State::Starting;
        self.started = Some(Instant::now());
        self.started_at_ms = Some(crate::clock::unix_ms());
        self.next_start = None;
        self.kill_at = None;
        self.stop_reason = None;
        Ok(())
    }

    /// Signal its whole process group; SIGKILL goes to its whole session,
    /// so nothing it started outlives it.
    pub fn signal(&self, sig: i32) {
        let Some(pid) = self.pid() else { return };
        crate::sys::process::signal_group(pid as i32, sig);
        if sig == libc::SIGKILL {
            for p in crate::sys::procfs::session_members(pid) {
                crate::sys::process::signal(p, sig);
            }
        }
    }

    /// SIGTERM now, SIGKILL after `grace`.
    pub fn stop(&mut self, grace: Duration, why: StopReason) {
        if self.child.is_some() && self.state != State::Stopping {
            self.signal(libc::SIGTERM);
            self.state = State::Stopping;
            self.kill_at = Some(Instant::now() + grace);
            self.stop_reason = Some(why);
        }
    }

    /// Whether its process ended; if so, how, as people read it. Whatever
    /// it left running in its session goes with it, killed while the ended
    /// process is not yet reaped: until then its pid, which names the
    /// session, cannot be given to another process.
    pub fn reap(&mut self) -> Option<String> {
        let child = self.child.as_mut()?;
        let pid = child.id();
        let kill_session = || {
            for p in crate::sys::procfs::session_members(pid) {
                crate::sys::process::signal(p, libc::SIGKILL);
            }
        };
        let st = match &self.pidfd {
            Some(fd) => {
                let ended = crate::sys::process::wait_readable(&[fd.as_fd()], Duration::ZERO);
                if !ended[0] {
                    return None;
                }
                kill_session();
                child.try_wait().ok()??
            }
            // Without a pidfd the end is seen only by reaping it.
            None => {
                let st = child.try_wait().ok()??;
                kill_session();
                st
            }
        };
        self.child = None;
        self.pidfd = None;
        Some(match (st.code(), st.signal()) {
            (Some(c), _) => format!("exit {c}"),
            (_, Some(s)) => format!("signal {s}"),
            _ => "ended".into(),
        })
    }

    /// After an exit not asked for: back off, or go fatal when it restarted
    /// `max` times within `window`. Returns whether it went fatal.
    pub fn schedule_restart(&mut self, first: Duration, max: usize, window: Duration) -> bool {
        let now = Instant::now();
        if self
            .started
            .is_some_and(|s| now.duration_since(s) >= HEALTHY)
        {
            self.backoff = first;
        }
        while self
            .restarts
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            self.restarts.pop_front();
        }
        if self.restarts.len() >= max {
            self.state = State::Fatal;
            self.next_start = None;
            return true;
        }
        self.restarts.push_back(now);
        self.total_restarts += 1;
        self.state = State::Backoff;
        self.next_start = Some(now + self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        false
    }
}

/// Read a member's output into musterd's log, a line at a time, cut at
/// [`MAX_LINE`] and at most [`LINES_PER_SECOND`].
fn forward(id: String, out: impl Read + Send + 'static) {
    let name = format!("{id}-out");
    let spawned = std::thread::Builder::new()
        .name(name.clone())
        .stack_size(64 * 1024)
        .spawn(move || {
            let (mut second, mut n, mut dropped) = (Instant::now(), 0u32, 0u64);
            for line in BufReader::new(out).split(b'\n').map_while(Result::ok) {
                if second.elapsed() >= Duration::from_secs(1) {
                    if dropped > 0 {
                        log::warn!(
                            "{id}: {dropped} output lines not logged (over {LINES_PER_SECOND}/s)"
                        );
                    }
                    (second, n, dropped) = (Instant::now(), 0, 0);
                }
                n += 1;
                if n > LINES_PER_SECOND {
                    dropped += 1;
                    continue;
                }
                let text = String::from_utf8_lossy(&line[..line.len().min(MAX_LINE)]);
                log::info!("{id}: {}", text.trim_end());
            }
        });
    if let Err(e) = spawned {
        log::warn!("{name}: cannot read its output: {e}");
    }
}
