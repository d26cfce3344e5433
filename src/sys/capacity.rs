//! How many worker threads this host lets us start.
//!
//! Each thread costs [`MAPS_PER_THREAD`] memory maps (its stack and guard
//! page, its signal stack and guard page: measured, 4.0 a thread at 5,000
//! workers), one pid, one entry against `kernel.threads-max` and one
//! against RLIMIT_NPROC (which counts every thread of the user). Maps are
//! also taken by the rest of the process, [`MAPS_RESERVED`] of them kept
//! free: malloc's arenas, blocks of a megabyte or more (each is a map of
//! its own), and the stacks of ended threads that glibc keeps for reuse
//! (up to 40 MiB). Past `vm.max_map_count` a new thread cannot map its
//! signal stack and the process aborts, so this limit is a hard one. The
//! pids controller of the process's cgroup (systemd's `TasksMax`) counts
//! every thread as a task, at the unit and at each cgroup above it.
//! `max_workers` is clamped to the smallest of
//! those limits less what is already in use, with a margin for the daemon's
//! own threads, so that a full roll call never hits EAGAIN on spawn.
//! Spawning still checks for failure; this just makes it rare.
//!
//! Pure arithmetic over [`Limits`]; [`Limits::read`] is the thin reader.

use std::fs;

pub const MAPS_PER_THREAD: u64 = 4;
/// Memory maps kept free for everything but the worker threads.
pub const MAPS_RESERVED: u64 = 4096;
/// Threads kept free for the daemon itself and the rest of the host.
pub const MARGIN: u64 = 64;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    pub max_map_count: Option<u64>,
    pub pid_max: Option<u64>,
    pub threads_max: Option<u64>,
    /// RLIMIT_NPROC soft limit; `None` when unlimited.
    pub nproc: Option<u64>,
    /// Threads running on the whole host now (for pid_max, threads-max).
    pub host_threads: u64,
    /// Memory maps this process has now.
    pub own_maps: u64,
    /// Tasks the pids controller still lets this cgroup start, the
    /// tightest over it and its ancestors (`TasksMax` under systemd);
    /// `None` when no level sets a limit.
    pub cgroup_tasks_left: Option<u64>,
}

fn read_u64(path: &str) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

impl Limits {
    pub fn read() -> Limits {
        // SAFETY: getrlimit writes into the struct we pass and nothing else.
        let nproc = unsafe {
            let mut rl: libc::rlimit = std::mem::zeroed();
            if libc::getrlimit(libc::RLIMIT_NPROC, &mut rl) == 0
                && rl.rlim_cur != libc::RLIM_INFINITY
            {
                Some(rl.rlim_cur)
            } else {
                None
            }
        };
        let host_threads = fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|s| parse_loadavg_threads(&s))
            .unwrap_or(0);
        let own_maps = fs::read_to_string("/proc/self/maps")
            .map(|s| s.lines().count() as u64)
            .unwrap_or(0);
        let cgroup_tasks_left = fs::read_to_string("/proc/self/cgroup")
            .ok()
            .and_then(|c| tasks_left(&c, |p| fs::read_to_string(p).ok()));
        Limits {
            cgroup_tasks_left,
            max_map_count: read_u64("/proc/sys/vm/max_map_count"),
            pid_max: read_u64("/proc/sys/kernel/pid_max"),
            threads_max: read_u64("/proc/sys/kernel/threads-max"),
            nproc,
            host_threads,
            own_maps,
        }
    }

    /// The most worker threads these limits allow, and which limit binds.
    pub fn allowed(&self) -> (u64, &'static str) {
        let mut best = (u64::MAX, "none");
        let mut consider = |v: Option<u64>, name: &'static str| {
            if let Some(v) = v {
                if v < best.0 {
                    best = (v, name);
                }
            }
        };
        consider(
            self.max_map_count
                .map(|m| m.saturating_sub(self.own_maps + MAPS_RESERVED) / MAPS_PER_THREAD),
            "vm.max_map_count",
        );
        consider(
            self.pid_max.map(|m| m.saturating_sub(self.host_threads)),
            "kernel.pid_max",
        );
        consider(
            self.threads_max
                .map(|m| m.saturating_sub(self.host_threads)),
            "kernel.threads-max",
        );
        consider(self.cgroup_tasks_left, "the cgroup's pids.max (TasksMax)");
        // RLIMIT_NPROC counts this user's threads; the host count bounds it.
        consider(
            self.nproc
                .map(|m| m.saturating_sub(self.host_threads.min(m))),
            "RLIMIT_NPROC",
        );
        (best.0.saturating_sub(MARGIN), best.1)
    }

    /// `wanted` clamped, with a warning line when clamped.
    pub fn clamp(&self, wanted: usize) -> (usize, Option<String>) {
        let (allowed, which) = self.allowed();
        if (wanted as u64) <= allowed {
            (wanted, None)
        } else {
            let n = allowed.max(1) as usize;
            (
                n,
                Some(format!(
                    "max_workers={wanted} exceeds what {which} allows; using max_workers={n}"
                )),
            )
        }
    }
}

/// Raise the soft open-file limit to the hard one: every TCP worker and
/// HTTP client is a descriptor, and 1024 is a common soft default.
/// Returns the soft limit now in force.
pub fn raise_nofile() -> Option<u64> {
    // SAFETY: get/setrlimit on our own process with a struct we own.
    unsafe {
        let mut rl: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) != 0 {
            return None;
        }
        if rl.rlim_cur < rl.rlim_max {
            let want = libc::rlimit {
                rlim_cur: rl.rlim_max,
                rlim_max: rl.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                return Some(want.rlim_cur);
            }
        }
        Some(rl.rlim_cur)
    }
}

/// Size the kernel's futex hash for many threads. Since Linux 6.16 a
/// process gets a private futex hash that starts small; every wake of a
/// worker thread walks a bucket of it, and with thousands of sleeping worker
/// threads the chains grow long (measured: over half the ingest thread's
/// time in `futex_wake` with 10,000 workers). Asking for `slots` buckets
/// (a power of two) keeps chains short. Older kernels answer EINVAL, which is
/// harmless: their global hash is already sized for the machine.
pub fn size_futex_hash(slots: u64) -> bool {
    const PR_FUTEX_HASH: libc::c_int = 78;
    const PR_FUTEX_HASH_SET_SLOTS: libc::c_ulong = 1;
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(
            PR_FUTEX_HASH,
            PR_FUTEX_HASH_SET_SLOTS,
            slots as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        ) == 0
    }
}

/// From `/proc/self/cgroup`'s text, the tasks the pids controller lets
/// this cgroup start: `pids.max - pids.current` at the cgroup and at each
/// one above it, the least of them. The pids hierarchy of cgroup v1 when
/// mounted, else the unified one. `read` reads a file under /sys/fs/cgroup.
fn tasks_left(cgroup: &str, read: impl Fn(&str) -> Option<String>) -> Option<u64> {
    let line = |want: &dyn Fn(&str, &str) -> bool| {
        cgroup.lines().find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, ctl, path) = (f.next()?, f.next()?, f.next()?);
            want(ctl, path).then(|| path.to_string())
        })
    };
    let v1 = line(&|ctl: &str, _: &str| ctl.split(',').any(|c| c == "pids"));
    let (root, mut path) = match v1 {
        Some(p) => ("/sys/fs/cgroup/pids", p),
        None => (
            "/sys/fs/cgroup",
            line(&|ctl: &str, _: &str| ctl.is_empty())?,
        ),
    };
    let mut least: Option<u64> = None;
    loop {
        let dir = format!("{root}{}", path.trim_end_matches('/'));
        let max = read(&format!("{dir}/pids.max")).and_then(|m| m.trim().parse::<u64>().ok());
        let current =
            read(&format!("{dir}/pids.current")).and_then(|c| c.trim().parse::<u64>().ok());
        if let (Some(max), Some(current)) = (max, current) {
            let left = max.saturating_sub(current);
            least = Some(least.map_or(left, |l| l.min(left)));
        }
        match path.trim_end_matches('/').rsplit_once('/') {
            Some((up, _)) => path = up.to_string(),
            None => return least,
        }
        if path.is_empty() {
            return least;
        }
    }
}

/// The fourth field of /proc/loadavg is `running/total` threads.
fn parse_loadavg_threads(s: &str) -> Option<u64> {
    s.split_whitespace().nth(3)?.split('/').nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smallest_limit_binds() {
        let l = Limits {
            max_map_count: Some(65530),
            pid_max: Some(4_194_304),
            threads_max: Some(190_000),
            nproc: None,
            host_threads: 500,
            own_maps: 30,
            cgroup_tasks_left: None,
        };
        let (n, which) = l.allowed();
        assert_eq!(which, "vm.max_map_count");
        assert_eq!(n, (65530 - 30 - MAPS_RESERVED) / 4 - MARGIN);
        assert_eq!(l.clamp(10_000), (10_000, None));
        let (n2, warn) = l.clamp(100_000);
        assert_eq!(n2 as u64, n);
        assert!(warn.unwrap().contains("vm.max_map_count"));
    }

    #[test]
    fn nproc_and_unknowns() {
        let l = Limits {
            nproc: Some(1000),
            host_threads: 300,
            ..Limits::default()
        };
        assert_eq!(l.allowed(), (700 - MARGIN, "RLIMIT_NPROC"));
        let none = Limits::default();
        assert_eq!(none.clamp(10_000), (10_000, None));
    }

    #[test]
    fn the_tightest_pids_limit_of_the_cgroup_and_those_above_binds() {
        let files = std::collections::HashMap::from([
            (
                "/sys/fs/cgroup/system.slice/musterd.service/pids.max",
                "10064\n",
            ),
            (
                "/sys/fs/cgroup/system.slice/musterd.service/pids.current",
                "64\n",
            ),
            ("/sys/fs/cgroup/system.slice/pids.max", "max\n"),
            ("/sys/fs/cgroup/system.slice/pids.current", "900\n"),
        ]);
        let read = |p: &str| files.get(p).map(|s| s.to_string());
        let v2 = "0::/system.slice/musterd.service\n";
        assert_eq!(tasks_left(v2, read), Some(10_000));
        // A slice above with less room binds.
        let mut tight = files.clone();
        tight.insert("/sys/fs/cgroup/system.slice/pids.max", "1000\n");
        let read = |p: &str| tight.get(p).map(|s| s.to_string());
        assert_eq!(tasks_left(v2, read), Some(100));
        // cgroup v1: the pids hierarchy.
        let v1 = "9:name=systemd:/x\n8:pids:/system.slice/musterd.service\n0::/\n";
        let read = |p: &str| {
            p.strip_prefix("/sys/fs/cgroup/pids")
                .and_then(|rest| files.get(format!("/sys/fs/cgroup{rest}").as_str()))
                .map(|s| s.to_string())
        };
        assert_eq!(tasks_left(v1, read), Some(10_000));
        // No limit anywhere, or no cgroup file: none.
        assert_eq!(tasks_left("0::/\n", |_| Some("max".into())), None);
        assert_eq!(tasks_left("", |_| None), None);
        let l = Limits {
            cgroup_tasks_left: Some(5000),
            ..Limits::default()
        };
        let (n, warn) = l.clamp(10_000);
        assert_eq!(n as u64, 5000 - MARGIN);
        assert!(warn.unwrap().contains("TasksMax"));
    }

    #[test]
    fn loadavg() {
        assert_eq!(
            parse_loadavg_threads("0.00 0.01 0.05 1/123 4567\n"),
            Some(123)
        );
        assert_eq!(parse_loadavg_threads("garbage"), None);
    }

    #[test]
    fn reads_this_host() {
        let l = Limits::read();
        assert!(l.host_threads > 0);
        assert!(l.own_maps > 0);
    }
}
