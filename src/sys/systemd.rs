//! systemd integration with std only: the sd_notify datagram protocol and
//! socket activation (sd_listen_fds).
//!
//! [`Notifier`] sends `READY=1`, `STATUS=…`, `WATCHDOG=1`, `RELOADING=1`,
//! `STOPPING=1` to `$NOTIFY_SOCKET` (a path, or an abstract name written
//! `@name`). Without `NOTIFY_SOCKET` it does nothing. A socket that is
//! missing or refuses is logged once; the daemon runs on regardless.
//!
//! [`Watchdog`] carries the ping cadence (half of `$WATCHDOG_USEC`) to the
//! event-loop thread that should prove it is alive by sending the pings.
//!
//! [`listen_fds`] adopts sockets passed by systemd when `$LISTEN_PID` is
//! this process, named through `$LISTEN_FDNAMES`. Parsing of the variables
//! is pure and tested; this module does not bind anything itself.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The first fd systemd passes (SD_LISTEN_FDS_START).
pub const LISTEN_FDS_START: RawFd = 3;

pub struct Notifier {
    target: Option<SocketAddr>,
    sock: Option<UnixDatagram>,
    complained: AtomicBool,
}

impl Notifier {
    /// A notifier for `$NOTIFY_SOCKET`, or a silent one when it is unset.
    pub fn from_env() -> Arc<Notifier> {
        Arc::new(Notifier::new(
            std::env::var("NOTIFY_SOCKET").ok().as_deref(),
        ))
    }

    pub fn new(socket: Option<&str>) -> Notifier {
        let target = socket
            .filter(|s| !s.is_empty())
            .and_then(|s| match s.strip_prefix('@') {
                Some(name) => SocketAddr::from_abstract_name(name.as_bytes()).ok(),
                None => SocketAddr::from_pathname(s).ok(),
            });
        let sock = target.as_ref().and_then(|_| UnixDatagram::unbound().ok());
        Notifier {
            target,
            sock,
            complained: AtomicBool::new(false),
        }
    }

    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Send one state message (`KEY=value` lines).
    pub fn notify(&self, state: &str) {
        let (Some(target), Some(sock)) = (&self.target, &self.sock) else {
            return;
        };
        if let Err(e) = sock.send_to_addr(state.as_bytes(), target) {
            if !self.complained.swap(true, Ordering::Relaxed) {
                log::warn!(
                    "cannot notify systemd through NOTIFY_SOCKET: {e} (further failures are not logged)"
                );
            }
        }
    }

    pub fn ready(&self) {
        self.notify("READY=1");
    }

    pub fn status(&self, line: &str) {
        // One line: a newline would start another assignment.
        self.notify(&format!("STATUS={}", line.replace('\n', " ")));
    }

    /// `RELOADING=1` with the monotonic time that systemd ≥ 253 requires.
    pub fn reloading(&self) {
        self.notify(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()));
    }

    pub fn stopping(&self) {
        self.notify("STOPPING=1");
    }
}

fn monotonic_usec() -> u64 {
    // SAFETY: clock_gettime writes the timespec we pass.
    unsafe {
        let mut ts: libc::timespec = std::mem::zeroed();
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
        ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
    }
}

/// A loop's proof of life: when it last went round. The loop that owns the
/// watchdog pings only while every other loop it watches keeps going, so
/// that systemd restarts a daemon with one loop stuck, not only both.
#[derive(Clone)]
pub struct Progress(Arc<(Instant, AtomicU64)>);

impl Default for Progress {
    fn default() -> Progress {
        Progress(Arc::new((Instant::now(), AtomicU64::new(0))))
    }
}

impl Progress {
    /// The loop went round at `now`.
    pub fn mark(&self, now: Instant) {
        let ms = now.saturating_duration_since(self.0.0).as_millis() as u64;
        self.0.1.store(ms, Ordering::Relaxed);
    }

    /// How long since the loop last went round.
    pub fn age(&self, now: Instant) -> Duration {
        let at = self.0.0 + Duration::from_millis(self.0.1.load(Ordering::Relaxed));
        now.saturating_duration_since(at)
    }
}

/// Watchdog pings, owned by the loop whose liveness they prove.
pub struct Watchdog {
    notifier: Arc<Notifier>,
    pub every: Duration,
    next: Instant,
    /// Other loops that must have gone round since the last ping, each
    /// with the longest an idle turn of it takes.
    watched: Vec<(&'static str, Progress, Duration)>,
}

impl Watchdog {
    /// From `$WATCHDOG_USEC` (and `$WATCHDOG_PID`, when set, must be us).
    pub fn from_env(notifier: Arc<Notifier>) -> Option<Watchdog> {
        let usec = std::env::var("WATCHDOG_USEC").ok();
        let pid = std::env::var("WATCHDOG_PID").ok();
        let every = watchdog_interval(usec.as_deref(), pid.as_deref(), std::process::id())?;
        notifier.enabled().then(|| Watchdog {
            notifier,
            every,
            next: Instant::now(),
            watched: Vec::new(),
        })
    }

    /// Ping only while `loop_name` keeps going round, too; an idle turn of
    /// it takes up to `turn`.
    pub fn watch(&mut self, loop_name: &'static str, progress: Progress, turn: Duration) {
        self.watched.push((loop_name, progress, turn));
    }

    /// The first watched loop that has not gone round within a ping
    /// interval (or two of its idle turns, if longer), and for how long.
    fn stuck(&self, now: Instant) -> Option<(&'static str, Duration)> {
        self.watched
            .iter()
            .map(|(name, p, turn)| (*name, p.age(now), self.every.max(*turn * 2)))
            .find(|(_, age, allowed)| age > allowed)
            .map(|(name, age, _)| (name, age))
    }

    /// Ping if due and every watched loop is alive; returns when the next
    /// ping is due.
    pub fn tick(&mut self, now: Instant) -> Instant {
        if now >= self.next {
            match self.stuck(now) {
                None => self.notifier.notify("WATCHDOG=1"),
                Some((name, age)) => log::error!(
                    "the {name} loop has not gone round for {} ms: no watchdog ping, so the service manager restarts the daemon",
                    age.as_millis()
                ),
            }
            self.next = now + self.every;
        }
        self.next
    }
}

/// Half the watchdog timeout, as systemd recommends; `None` when the
/// watchdog is off or meant for another process.
pub fn watchdog_interval(usec: Option<&str>, pid: Option<&str>, me: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
    if let Some(p) = pid {
        if p.trim().parse::<u32>().ok()? != me {
            return None;
        }
    }
    Some(Duration::from_micros(usec / 2))
}

/// Which passed fd is which, from `$LISTEN_PID`, `$LISTEN_FDS` and
/// `$LISTEN_FDNAMES`: `(fd, name)` pairs, or nothing when the sockets are
/// not for this process.
pub fn parse_listen_env(
    pid: Option<&str>,
    fds: Option<&str>,
    names: Option<&str>,
    me: u32,
) -> Vec<(RawFd, String)> {
    let Some(pid) = pid.and_then(|p| p.trim().parse::<u32>().ok()) else {
        return Vec::new();
    };
    if pid != me {
        return Vec::new();
    }
    let n: i32 = fds.and_then(|f| f.trim().parse().ok()).unwrap_or(0);
    let names: Vec<&str> = names.map(|n| n.split(':').collect()).unwrap_or_default();
    (0..n.clamp(0, 64))
        .map(|i| {
            let name = names.get(i as usize).copied().unwrap_or("unknown");
            (LISTEN_FDS_START + i, name.to_string())
        })
        .collect()
}

/// A socket systemd passed us.
pub struct Passed {
    pub name: String,
    pub fd: OwnedFd,
    /// `SOCK_STREAM` or `SOCK_DGRAM`.
    pub kind: libc::c_int,
}

/// Take the sockets systemd passed, if they are ours, and clear the
/// variables so that no child inherits them.
pub fn listen_fds() -> Vec<Passed> {
    let var = |k: &str| std::env::var(k).ok();
    let found = parse_listen_env(
        var("LISTEN_PID").as_deref(),
        var("LISTEN_FDS").as_deref(),
        var("LISTEN_FDNAMES").as_deref(),
        std::process::id(),
    );
    // SAFETY: called from the main thread before any other thread starts,
    // so nothing reads the environment concurrently.
    unsafe {
        std::env::remove_var("LISTEN_PID");
        std::env::remove_var("LISTEN_FDS");
        std::env::remove_var("LISTEN_FDNAMES");
    }
    found
        .into_iter()
        .filter_map(|(fd, name)| {
            // SAFETY: fcntl/getsockopt on an fd number systemd passed us; we
            // take ownership only after checking it is an open socket.
            unsafe {
                if libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) != 0 {
                    return None;
                }
                let mut kind: libc::c_int = 0;
                let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
                let p = &mut kind as *mut libc::c_int as *mut libc::c_void;
                if libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_TYPE, p, &mut len) != 0 {
                    log::warn!("LISTEN_FDS: fd {fd} ({name}) is not a socket; ignored");
                    return None;
                }
                Some(Passed {
                    name,
                    fd: OwnedFd::from_raw_fd(fd),
                    kind,
                })
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_holds_its_ping_while_a_watched_loop_is_stuck() {
        let mut w = Watchdog {
            notifier: Arc::new(Notifier::new(None)),
            every: Duration::from_millis(100),
            next: Instant::now(),
            watched: Vec::new(),
        };
        let ingest = Progress::default();
        w.watch("ingest", ingest.clone(), Duration::from_millis(10));
        let t0 = Instant::now();
        ingest.mark(t0);
        assert_eq!(w.stuck(t0 + Duration::from_millis(50)), None);
        let (name, age) = w.stuck(t0 + Duration::from_millis(250)).unwrap();
        assert_eq!(name, "ingest");
        assert!(age >= Duration::from_millis(250));
        ingest.mark(t0 + Duration::from_millis(240));
        assert_eq!(
            w.stuck(t0 + Duration::from_millis(250)),
            None,
            "going round again"
        );
    }

    #[test]
    fn watchdog_cadence() {
        assert_eq!(
            watchdog_interval(Some("30000000"), None, 7),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            watchdog_interval(Some("1000000"), Some("7"), 7),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            watchdog_interval(Some("1000000"), Some("8"), 7),
            None,
            "another pid's watchdog"
        );
        assert_eq!(watchdog_interval(Some("0"), None, 7), None);
        assert_eq!(watchdog_interval(Some("soon"), None, 7), None);
        assert_eq!(watchdog_interval(None, None, 7), None);
    }

    #[test]
    fn listen_env() {
        let got = parse_listen_env(Some("42"), Some("3"), Some("http:heartbeat:heartbeat"), 42);
        assert_eq!(
            got,
            vec![
                (3, "http".into()),
                (4, "heartbeat".into()),
                (5, "heartbeat".into())
            ]
        );
        assert!(
            parse_listen_env(Some("41"), Some("3"), None, 42).is_empty(),
            "another pid's sockets"
        );
        assert!(parse_listen_env(None, Some("3"), None, 42).is_empty());
        assert_eq!(
            parse_listen_env(Some("42"), Some("1"), None, 42),
            vec![(3, "unknown".into())]
        );
    }

    #[test]
    fn notifies_a_bound_socket_and_survives_a_missing_one() {
        let dir = std::env::temp_dir().join(format!("muster-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let rx = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::new(path.to_str());
        n.ready();
        n.status("3 workers\nsecond line");
        let mut buf = [0u8; 256];
        let k = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..k], b"READY=1");
        let k = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..k], b"STATUS=3 workers second line");
        n.reloading();
        let k = rx.recv(&mut buf).unwrap();
        assert!(
            std::str::from_utf8(&buf[..k])
                .unwrap()
                .starts_with("RELOADING=1\nMONOTONIC_USEC=")
        );

        let gone = Notifier::new(Some("/nonexistent/notify.sock"));
        gone.ready();
        gone.ready();
        assert!(gone.complained.load(Ordering::Relaxed));
        assert!(!Notifier::new(None).enabled());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn abstract_names() {
        let name = format!("muster-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let rx = UnixDatagram::bind_addr(&addr).unwrap();
        Notifier::new(Some(&format!("@{name}"))).stopping();
        let mut buf = [0u8; 64];
        let k = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..k], b"STOPPING=1");
    }
}
