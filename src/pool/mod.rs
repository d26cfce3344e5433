//! The pool: local worker processes that musterd starts, supervises and
//! scales.
//!
//! - `member`: one member's process, output, and restart bookkeeping.
//!
//! One supervisor thread owns the members' lifecycle. It waits in `poll`
//! on every member's pidfd (Linux `pidfd_open`: readable when the process
//! ends) and a wake-up socket, with a timeout at the next deadline (a
//! restart's backoff, a stop's SIGKILL, the watchdog's look), so an idle
//! pool costs nothing between events and an exit is seen at once. pidfds
//! rather than SIGCHLD: signal-hook's handler is process-wide, and a
//! SIGCHLD would also fire for the agent's children in tests and tools
//! that embed this crate; a pidfd belongs to one child.
//!
//! The watchdog: a member whose worker (`MUSTER_WORKER_ID`) is inactive,
//! or has said nothing one `inactivity_timeout` after its start, is hung:
//! stopped (SIGTERM, `pool_stop_grace`, SIGKILL) and restarted. Its tasks
//! go back to the queue when its session closes, as any lost worker's.

pub mod member;

use crate::config::Config;
use crate::fleet::Shared;
use crate::fleet::registry::Registry;
use crate::tasks::Tasks;
use member::{Member, State, StopReason};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The supervisor looks at least this often (the watchdog).
const LOOK: Duration = Duration::from_millis(500);

/// Why a scale request was refused.
#[derive(Debug, PartialEq)]
pub enum ScaleError {
    NoPool,
    OutOfBounds(usize, usize),
}

struct Inner {
    desired: usize,
    members: BTreeMap<u32, Member>,
    stopping: bool,
    /// Autoscale: since when its target has been below the size.
    below_since: Option<Instant>,
    /// The `pool_size` and `pool_command` last applied: a reload that
    /// changes them resizes the pool, and replaces members one at a time.
    size: usize,
    command: Vec<String>,
}

pub struct Pool {
    inner: Mutex<Inner>,
    shared: Arc<Shared>,
    registry: Arc<Registry>,
    tasks: Arc<Tasks>,
    /// What every member's environment carries besides its id.
    env: Vec<(String, String)>,
    wake: UnixStream,
}

impl Pool {
    /// The pool, sized `pool_size`; `run` starts its members.
    pub fn new(
        shared: Arc<Shared>,
        registry: Arc<Registry>,
        tasks: Arc<Tasks>,
        env: Vec<(String, String)>,
    ) -> std::io::Result<(Arc<Pool>, UnixStream)> {
        let (wake, rx) = UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        rx.set_nonblocking(true)?;
        let cfg = shared.config.get();
        let desired = if cfg.pool.command.is_empty() {
            0
        } else {
            cfg.pool.size
        };
        Ok((
            Arc::new(Pool {
                inner: Mutex::new(Inner {
                    desired,
                    members: BTreeMap::new(),
                    stopping: false,
                    below_since: None,
                    size: cfg.pool.size,
                    command: cfg.pool.command.clone(),
                }),
                shared,
                registry,
                tasks,
                env,
                wake,
            }),
            rx,
        ))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn poke(&self) {
        let _ = (&self.wake).write(&[1]);
    }

    /// `POST /api/workers/scale`: the pool's new size. Returns how many
    /// members are created and how many are told to stop.
    pub fn scale(&self, count: usize, cfg: &Config) -> Result<(usize, usize), ScaleError> {
        if cfg.pool.command.is_empty() {
            return Err(ScaleError::NoPool);
        }
        if !(cfg.pool.min..=cfg.pool.max).contains(&count) {
            return Err(ScaleError::OutOfBounds(cfg.pool.min, cfg.pool.max));
        }
        let mut inner = self.lock();
        let staying: Vec<u32> = inner
            .members
            .values()
            .filter(|m| !m.leaving)
            .map(|m| m.n)
            .collect();
        inner.desired = count;
        let created = count.saturating_sub(staying.len());
        let mut terminated = 0;
        if staying.len() > count {
            // Idle first, then the fewest tasks held, then the newest.
            let mut order: Vec<(u8, usize, std::cmp::Reverse<u64>, u32)> = staying
                .iter()
                .filter_map(|n| inner.members.get(n))
                .map(|m| {
                    let idle = self
                        .registry
                        .snapshot(&m.id)
                        .is_some_and(|s| s.status() == crate::proto::Status::Idle);
                    let held = self.tasks.held_by(&m.id);
                    (
                        u8::from(!idle),
                        held,
                        std::cmp::Reverse(m.started_at_ms.unwrap_or(0)),
                        m.n,
                    )
                })
                .collect();
            order.sort();
            for (_, _, _, n) in order.into_iter().take(staying.len() - count) {
                if let Some(m) = inner.members.get_mut(&n) {
                    m.leaving = true;
                    m.stop(cfg.pool.stop_grace, StopReason::ScaledDown);
                    terminated += 1;
                }
            }
        }
        log::info!("pool: scale to {count} (+{created} -{terminated})");
        drop(inner);
        self.poke();
        Ok((created, terminated))
    }

    /// `GET /api/pool`.
    pub fn view(&self) -> Value {
        let inner = self.lock();
        let members: Vec<Value> = inner
            .members
            .values()
            .map(|m| {
                json!({
                    "id": m.id,
                    "pid": m.pid(),
                    "state": m.state.as_str(),
                    "leaving": m.leaving,
                    "restarts": m.total_restarts,
                    "last_exit": m.last_exit,
                    "started_at": m.started_at_ms,
                })
            })
            .collect();
        let actual = inner.members.values().filter(|m| m.child.is_some()).count();
        json!({"desired": inner.desired, "actual": actual, "members": members})
    }

    /// The members given up on (`fatal`), by id.
    pub fn fatal_members(&self) -> Vec<String> {
        self.lock()
            .members
            .values()
            .filter(|m| m.state == State::Fatal)
            .map(|m| m.id.to_string())
            .collect()
    }

    /// Shutdown: every member told to stop, killed after the grace, and
    /// waited for (at most `grace` + 1 s).
    pub fn stop_all(&self) {
        let grace = self.shared.config.get().pool.stop_grace;
        {
            let mut inner = self.lock();
            inner.stopping = true;
            inner.desired = 0;
            for m in inner.members.values_mut() {
                m.leaving = true;
                m.stop(grace, StopReason::Shutdown);
            }
        }
        self.poke();
        let deadline = Instant::now() + grace + Duration::from_secs(1);
        while Instant::now() < deadline {
            let mut inner = self.lock();
            let now = Instant::now();
            for m in inner.members.values_mut() {
                if m.kill_at.is_some_and(|k| now >= k) {
                    m.signal(libc::SIGKILL);
                }
                m.reap();
            }
            inner.members.retain(|_, m| m.child.is_some());
            if inner.members.is_empty() {
                return;
            }
            drop(inner);
            std::thread::sleep(Duration::from_millis(20));
        }
        log::warn!("pool: members still running at exit; they die with musterd");
    }

    /// Autoscale (`autoscale = queue`): the size the queue asks for,
    /// `ceil(queued ÷ autoscale_tasks_per_worker)`, or with no tasks queued
    /// the members' reported `queue_depth` the same way, within bounds.
    /// Up at once; down only once the target stayed lower for
    /// `autoscale_cooldown`, so it never flaps.
    fn autoscale(&self, cfg: &Config) {
        if !cfg.pool.autoscale || cfg.pool.command.is_empty() {
            return;
        }
        let per = cfg.pool.autoscale_tasks_per_worker.max(1);
        let queued = self.tasks.queued();
        let (inputs, work) = if queued > 0 {
            ("queued tasks", queued)
        } else {
            let depth: u64 = {
                let inner = self.lock();
                inner
                    .members
                    .values()
                    .filter_map(|m| self.registry.snapshot(&m.id))
                    .map(|s| s.queue_depth)
                    .sum()
            };
            ("reported queue depth", depth as usize)
        };
        // Never fewer than the members running tasks: a scale-down stops
        // idle members, not a task under way (the queue depth members
        // report lags their tasks by a heartbeat).
        let busy = {
            let inner = self.lock();
            inner
                .members
                .values()
                .filter(|m| !m.leaving && self.tasks.held_by(&m.id) > 0)
                .count()
        };
        let target = work
            .div_ceil(per)
            .max(busy)
            .clamp(cfg.pool.min, cfg.pool.max);
        let (desired, below) = {
            let inner = self.lock();
            (inner.desired, inner.below_since)
        };
        let now = Instant::now();
        let change = if target > desired {
            Some(target)
        } else if target < desired {
            match below {
                Some(t) if now.duration_since(t) >= cfg.pool.autoscale_cooldown => Some(target),
                Some(_) => None,
                None => {
                    self.lock().below_since = Some(now);
                    None
                }
            }
        } else {
            self.lock().below_since = None;
            None
        };
        if let Some(to) = change {
            self.lock().below_since = None;
            log::info!(
                "autoscale: {desired} -> {to} members ({inputs} {work}, {per} per member, bounds {}..={})",
                cfg.pool.min,
                cfg.pool.max
            );
            self.shared
                .stats
                .incr(crate::stats::Counter::PoolAutoscaled);
            let _ = self.scale(to, cfg);
        }
    }

    /// After SIGHUP: a new `pool_size` resizes the pool (within bounds;
    /// `pool_command = off` empties it), and a new `pool_command` replaces
    /// the members one at a time, each once the one before runs.
    fn reloaded(&self, cfg: &Config, inner: &mut Inner) {
        if cfg.pool.command.is_empty() {
            inner.desired = 0;
        } else if cfg.pool.size != inner.size {
            inner.desired = cfg.pool.size.clamp(cfg.pool.min, cfg.pool.max);
            log::info!("pool: reload sets the size to {}", inner.desired);
        }
        inner.size = cfg.pool.size;
        if cfg.pool.command == inner.command || cfg.pool.command.is_empty() {
            return;
        }
        let busy = inner.members.values().any(|m| {
            !m.leaving
                && (m.stop_reason == Some(StopReason::Replaced) || m.state == State::Starting)
        });
        if busy {
            return;
        }
        let old = inner.members.values_mut().find(|m| {
            !m.leaving && m.child.is_some() && m.command.as_ref() != Some(&cfg.pool.command)
        });
        match old {
            Some(m) => {
                log::info!("pool: replacing {} to run the new pool_command", m.id);
                m.stop(cfg.pool.stop_grace, StopReason::Replaced);
            }
            None => {
                log::info!("pool: every member runs the new pool_command");
                inner.command = cfg.pool.command.clone();
            }
        }
    }

    /// One supervisor turn; returns when the next deadline is.
    fn turn(&self) -> Instant {
        let cfg = self.shared.config.get();
        self.autoscale(&cfg);
        self.reloaded(&cfg, &mut self.lock());
        let now = Instant::now();
        let mut next = now + LOOK;
        let mut inner = self.lock();
        let stopping = inner.stopping;
        // Members to make up the desired size, with the lowest free numbers.
        let staying = inner.members.values().filter(|m| !m.leaving).count();
        let mut n = 1;
        for _ in staying..inner.desired {
            while inner.members.contains_key(&n) {
                n += 1;
            }
            inner
                .members
                .insert(n, Member::new(n, cfg.pool.restart_backoff));
        }
        let timeout_ms = cfg.fleet.inactivity_timeout;
        let ended = ended(&inner.members);
        for (n, m) in inner.members.iter_mut() {
            if let Some(how) = ended.contains(n).then(|| m.reap()).flatten() {
                let why = m.stop_reason.take();
                m.last_exit = Some(match why {
                    Some(w) => format!("{how} ({})", w.as_str()),
                    None => how.clone(),
                });
                if m.leaving || stopping {
                    log::info!("pool: {} stopped ({how})", m.id);
                    continue;
                }
                let fatal = m.schedule_restart(
                    cfg.pool.restart_backoff,
                    cfg.pool.max_restarts,
                    cfg.pool.restart_window,
                );
                if why.is_some_and(StopReason::restarts_at_once) && !fatal {
                    // Stopped on purpose: back at once.
                    m.next_start = Some(now);
                }
                if fatal {
                    self.shared.stats.incr(crate::stats::Counter::PoolFatal);
                    log::error!(
                        "pool: {} is fatal: {} restarts within {}; last {how}; no more restarts",
                        m.id,
                        cfg.pool.max_restarts,
                        crate::config::fmt_duration(cfg.pool.restart_window)
                    );
                } else {
                    self.shared.stats.incr(crate::stats::Counter::PoolRestarts);
                    log::warn!(
                        "pool: {} exited ({}); restart in {} ms",
                        m.id,
                        m.last_exit.as_deref().unwrap_or("?"),
                        m.next_start
                            .map_or(0, |t| t.saturating_duration_since(now).as_millis())
                    );
                }
            }
            if m.state == State::Stopping {
                if let Some(k) = m.kill_at {
                    if now >= k {
                        m.signal(libc::SIGKILL);
                        m.kill_at = Some(now + Duration::from_secs(1));
                    }
                    next = next.min(m.kill_at.unwrap_or(next));
                }
            }
            // The watchdog: alive by the roll call, or hung.
            if matches!(m.state, State::Starting | State::Running) && !m.leaving {
                let snap = self.registry.snapshot(&m.id);
                let up = m.started.map_or(Duration::ZERO, |s| now.duration_since(s));
                let hung = match snap {
                    Some(s) if s.is_active() && s.last_seen >= m.started.unwrap_or(now) => {
                        m.state = State::Running;
                        None
                    }
                    _ if up
                        >= timeout_ms
                            + cfg.fleet.heartbeat_interval.min(Duration::from_secs(1)) =>
                    {
                        Some(format!("no word for {} ms", up.as_millis()))
                    }
                    Some(s) if !s.is_active() && m.state == State::Running => {
                        Some(format!("its worker is {}", s.status()))
                    }
                    _ => None,
                };
                if let Some(why) = hung {
                    log::warn!("pool: {} is hung ({why}): restarting", m.id);
                    self.shared.stats.incr(crate::stats::Counter::PoolHung);
                    m.stop(cfg.pool.stop_grace, StopReason::Hung);
                    next = next.min(m.kill_at.unwrap_or(next));
                }
            }
            if m.child.is_none() && m.state == State::Backoff && !m.leaving && !stopping {
                match m.next_start {
                    Some(t) if t <= now => {
                        if let Err(e) = m.spawn(&cfg.pool.command, &self.env) {
                            m.last_exit = Some(e.clone());
                            log::error!("pool: {}: {e}", m.id);
                            if m.schedule_restart(
                                cfg.pool.restart_backoff,
                                cfg.pool.max_restarts,
                                cfg.pool.restart_window,
                            ) {
                                self.shared.stats.incr(crate::stats::Counter::PoolFatal);
                                log::error!("pool: {} is fatal: it cannot be started", m.id);
                            }
                        } else {
                            log::info!("pool: {} started pid={}", m.id, m.pid().unwrap_or(0));
                        }
                    }
                    Some(t) => next = next.min(t),
                    None => {}
                }
            }
        }
        inner
            .members
            .retain(|_, m| !(m.leaving && m.child.is_none()));
        let running = inner.members.values().filter(|m| m.child.is_some()).count();
        self.shared
            .stats
            .set(crate::stats::Counter::PoolMembers, running as u64);
        next
    }

    /// The supervisor thread: a turn, then `poll` on every member's pidfd
    /// and the wake-up socket until the next deadline; ends once the pool
    /// is stopping and empty.
    pub fn run(self: Arc<Pool>, mut wake: UnixStream) {
        loop {
            let next = self.turn();
            let pidfds: Vec<Arc<OwnedFd>> = {
                let inner = self.lock();
                if inner.stopping && inner.members.is_empty() {
                    return;
                }
                inner
                    .members
                    .values()
                    .filter_map(|m| m.pidfd.clone())
                    .collect()
            };
            let mut fds = vec![wake.as_fd()];
            fds.extend(pidfds.iter().map(|f| f.as_fd()));
            let timeout = next
                .saturating_duration_since(Instant::now())
                .min(Duration::from_secs(60));
            crate::sys::process::wait_readable(&fds, timeout);
            let mut buf = [0u8; 64];
            while matches!(wake.read(&mut buf), Ok(n) if n > 0) {}
        }
    }
}

/// The members that may have ended: those whose pidfd is readable, found
/// by one `poll` of them all (not one each at every turn), and those
/// without a pidfd, which only reaping them tells.
fn ended(members: &BTreeMap<u32, Member>) -> std::collections::HashSet<u32> {
    let (with, without): (Vec<_>, Vec<_>) = members
        .iter()
        .filter(|(_, m)| m.child.is_some())
        .partition(|(_, m)| m.pidfd.is_some());
    let fds: Vec<_> = with
        .iter()
        .filter_map(|(_, m)| m.pidfd.as_deref().map(|f| f.as_fd()))
        .collect();
    let ready = crate::sys::process::wait_readable(&fds, Duration::ZERO);
    with.iter()
        .zip(ready)
        .filter(|(_, r)| *r)
        .map(|((n, _), _)| **n)
        .chain(without.iter().map(|(n, _)| **n))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use crate::stats::Counter;

    fn pool(command: &str, edit: impl FnOnce(&mut Config)) -> Arc<Pool> {
        let mut cfg = config::defaults();
        cfg.pool.command = vec!["sh".into(), "-c".into(), command.into()];
        cfg.pool.size = 2;
        cfg.pool.stop_grace = Duration::from_millis(200);
        cfg.pool.restart_backoff = Duration::from_millis(10);
        edit(&mut cfg);
        let shared = Arc::new(Shared::new(cfg));
        let registry = Arc::new(Registry::new(shared.clone()));
        let tasks = Tasks::open(None, shared.clone(), crate::tasks::unlinked(), None).tasks;
        Pool::new(shared, registry, tasks, Vec::new()).unwrap().0
    }

    /// Supervisor turns, a few ms apart, until `done` holds.
    fn until(p: &Pool, what: &str, done: impl Fn(&Pool) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done(p) {
            assert!(Instant::now() < deadline, "{what}: not within 10 s");
            p.turn();
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn running(p: &Pool) -> u64 {
        p.view()["actual"].as_u64().unwrap()
    }

    #[test]
    fn members_are_started_to_the_size_and_scaled_down_by_stopping_the_extra() {
        let p = pool("sleep 30", |_| {});
        until(&p, "two members", |p| running(p) == 2);
        let ids: Vec<Value> = p.view()["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].clone())
            .collect();
        assert_eq!(ids, [json!("pool-1"), json!("pool-2")]);
        let cfg = p.shared.config.get();
        assert_eq!(p.scale(1, &cfg), Ok((0, 1)));
        until(&p, "one member", |p| {
            running(p) == 1 && p.view()["members"].as_array().unwrap().len() == 1
        });
        assert_eq!(
            p.view()["members"][0]["id"],
            "pool-1",
            "the highest number leaves"
        );
        assert_eq!(
            p.shared.stats.get(Counter::PoolRestarts),
            0,
            "a scale-down is not a restart"
        );
        assert_eq!(p.scale(3, &cfg), Ok((2, 0)));
        until(&p, "three members", |p| running(p) == 3);
        p.stop_all();
        assert_eq!(running(&p), 0);
    }

    #[test]
    fn scaling_is_refused_outside_the_bounds_and_without_a_command() {
        let p = pool("sleep 30", |c| c.pool.max = 4);
        let cfg = p.shared.config.get();
        assert_eq!(
            p.scale(5, &cfg),
            Err(ScaleError::OutOfBounds(cfg.pool.min, 4))
        );
        let mut none = (*cfg).clone();
        none.pool.command = Vec::new();
        assert_eq!(p.scale(1, &none), Err(ScaleError::NoPool));
        p.stop_all();
    }

    /// A member that keeps exiting is restarted after its backoff, and
    /// given up on (fatal, counted) after max_restarts within the window.
    #[test]
    fn a_member_that_keeps_exiting_is_restarted_then_given_up() {
        let p = pool("exit 3", |c| {
            c.pool.size = 1;
            c.pool.max_restarts = 2;
            c.pool.restart_window = Duration::from_secs(60);
        });
        until(&p, "fatal", |p| !p.fatal_members().is_empty());
        assert_eq!(p.fatal_members(), ["pool-1"]);
        let st = &p.shared.stats;
        assert_eq!(st.get(Counter::PoolFatal), 1);
        assert_eq!(st.get(Counter::PoolRestarts), 2);
        let m = &p.view()["members"][0];
        assert_eq!(
            (m["state"].as_str(), m["last_exit"].as_str()),
            (Some("fatal"), Some("exit 3"))
        );
        for _ in 0..20 {
            p.turn();
        }
        assert_eq!(running(&p), 0, "a fatal member is not started again");
        p.stop_all();
    }

    /// A member whose worker never says a word within inactivity_timeout
    /// is hung: stopped and started again at once.
    #[test]
    fn a_member_that_never_beats_is_hung_and_restarted() {
        let p = pool("sleep 30", |c| {
            c.pool.size = 1;
            c.fleet.inactivity_timeout = Duration::from_millis(200);
            c.fleet.heartbeat_interval = Duration::from_millis(100);
        });
        until(&p, "started", |p| running(p) == 1);
        let first = p.view()["members"][0]["pid"].clone();
        until(&p, "hung", |p| p.shared.stats.get(Counter::PoolHung) >= 1);
        until(&p, "started again", |p| {
            running(p) == 1 && p.view()["members"][0]["pid"] != first
        });
        let m = &p.view()["members"][0];
        assert!(m["last_exit"].as_str().unwrap().contains("hung"), "{m}");
        assert_eq!(p.shared.stats.get(Counter::PoolRestarts), 1);
        p.stop_all();
    }
}
