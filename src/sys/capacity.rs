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
//! signal stack and the process aborts, so this limit is a hard one. `max_workers` is clamped to the smallest of
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
        Limits {
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
