//! Resource usage of a process and all its descendants, sampled from /proc
//! (through [`crate::sys::procfs`]): CPU percent over the interval between two
//! samples, resident memory, threads, open descriptors and storage I/O.
//!
//! A process tree, not one pid: `sh -c 'make'` must not hide the compiler
//! doing the work. Processes that vanish while being read are skipped, not
//! errors.
//!
//! CPU counts each process's own time and its reaped children's
//! (`cutime`, `cstime`), so a child that lives and dies between two samples
//! (a shell loop running `date`) is counted through its parent. A child
//! seen in the previous sample and reaped since had its time counted up to
//! then; that part is taken off again, so nothing is counted twice. Only a
//! child reaped outside the tree (an orphan adopted by init) is lost.

use crate::sys::procfs;
use std::collections::HashMap;
use std::time::Instant;

/// One reading of a process tree.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Usage {
    /// % of one core since the previous sample; `None` on the first one.
    pub cpu_percent: Option<f64>,
    /// Resident memory as % of MemTotal.
    pub memory_percent: Option<f64>,
    pub rss_mb: f64,
    /// Largest tree RSS seen, or the root's VmHWM if larger.
    pub peak_rss_mb: f64,
    pub threads: u64,
    pub fds: u64,
    /// Storage I/O of the tree; `None` when the root's io file is unreadable.
    pub io_read_bytes: Option<u64>,
    pub io_write_bytes: Option<u64>,
    pub processes: usize,
}

/// A process in one sample, keyed by pid and start time so that a reused
/// pid is not mistaken for the old process.
type Key = (u32, u64);

pub struct Sampler {
    root: u32,
    clk_tck: f64,
    mem_total_kb: Option<u64>,
    prev: Option<(Instant, HashMap<Key, Ticks>)>,
    peak_rss_kb: u64,
    page_kb: u64,
}

/// A process's CPU ticks (its own and its reaped children's) and its parent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticks {
    pub ticks: u64,
    pub ppid: u32,
}

/// CPU percent from CPU ticks of two samples taken `secs` apart. A process
/// new in `now` counts all its ticks (it started within the interval). A
/// process gone since `prev` whose parent (or its parent's parent, if that
/// went too) is still in the tree has been reaped there: its whole time is
/// now in that ancestor's children's time, so what was counted of it
/// before is taken off.
pub fn cpu_percent(
    prev: &HashMap<Key, Ticks>,
    now: &HashMap<Key, Ticks>,
    clk_tck: f64,
    secs: f64,
) -> f64 {
    if secs <= 0.0 {
        return 0.0;
    }
    let grown: u64 = now
        .iter()
        .map(|(k, t)| t.ticks.saturating_sub(prev.get(k).map_or(0, |p| p.ticks)))
        .sum();
    let live: std::collections::HashSet<u32> = now.keys().map(|k| k.0).collect();
    let parent_of: HashMap<u32, u32> = prev.iter().map(|(k, t)| (k.0, t.ppid)).collect();
    let reaped_in_tree = |mut pid: u32| {
        for _ in 0..64 {
            match parent_of.get(&pid) {
                Some(&ppid) if live.contains(&ppid) => return true,
                Some(&ppid) => pid = ppid,
                None => return false,
            }
        }
        false
    };
    let counted_before: u64 = prev
        .iter()
        .filter(|(k, _)| !now.contains_key(k) && reaped_in_tree(k.0))
        .map(|(_, t)| t.ticks)
        .sum();
    grown.saturating_sub(counted_before) as f64 / clk_tck / secs * 100.0
}

impl Sampler {
    pub fn new(root: u32) -> Sampler {
        Sampler {
            root,
            clk_tck: procfs::clock_ticks() as f64,
            mem_total_kb: procfs::mem_total_kb(),
            prev: None,
            peak_rss_kb: 0,
            page_kb: procfs::page_size() / 1024,
        }
    }

    /// The root and every descendant alive now.
    pub fn tree(&self) -> Vec<u32> {
        let mut out = vec![self.root];
        let mut i = 0;
        while i < out.len() && out.len() < 4096 {
            let kids = procfs::children(out[i]);
            out.extend(
                kids.into_iter()
                    .filter(|k| !out.contains(k))
                    .collect::<Vec<_>>(),
            );
            i += 1;
        }
        out
    }

    /// Read the tree now. `None` when the root process is gone.
    pub fn sample(&mut self) -> Option<Usage> {
        let now = Instant::now();
        let root_stat = procfs::read_stat(self.root)?;
        let mut ticks = HashMap::new();
        let mut u = Usage::default();
        let (mut rss_kb, mut io_r, mut io_w) = (0u64, 0u64, 0u64);
        let mut root_io = false;
        let mut root_hwm_kb = 0;
        for pid in self.tree() {
            let stat = if pid == self.root {
                Some(root_stat)
            } else {
                procfs::read_stat(pid)
            };
            let Some(stat) = stat else { continue };
            // statm is the cheapest read of RSS; only the root's peak needs status.
            let Some(pages) = procfs::read_proc(&format!("/proc/{pid}/statm"))
                .and_then(|t| procfs::parse_statm_resident(&t))
            else {
                continue;
            };
            let own = stat.utime + stat.stime + stat.cutime + stat.cstime;
            ticks.insert(
                (pid, stat.starttime),
                Ticks {
                    ticks: own,
                    ppid: stat.ppid,
                },
            );
            u.processes += 1;
            u.threads += stat.num_threads;
            rss_kb += pages * self.page_kb;
            if pid == self.root {
                root_hwm_kb = procfs::read_proc(&format!("/proc/{pid}/status"))
                    .and_then(|t| procfs::status_kb(&t, "VmHWM"))
                    .unwrap_or(0);
            }
            u.fds += std::fs::read_dir(format!("/proc/{pid}/fd"))
                .map(|d| d.count() as u64)
                .unwrap_or(0);
            if let Some((r, w)) =
                procfs::read_proc(&format!("/proc/{pid}/io")).and_then(|t| procfs::parse_io(&t))
            {
                io_r += r;
                io_w += w;
                root_io |= pid == self.root;
            }
        }
        self.peak_rss_kb = self.peak_rss_kb.max(rss_kb).max(root_hwm_kb);
        u.rss_mb = rss_kb as f64 / 1024.0;
        u.peak_rss_mb = self.peak_rss_kb as f64 / 1024.0;
        u.memory_percent = self
            .mem_total_kb
            .filter(|&t| t > 0)
            .map(|t| rss_kb as f64 / t as f64 * 100.0);
        if root_io {
            u.io_read_bytes = Some(io_r);
            u.io_write_bytes = Some(io_w);
        }
        if let Some((then, prev)) = &self.prev {
            u.cpu_percent = Some(cpu_percent(
                prev,
                &ticks,
                self.clk_tck,
                now.duration_since(*then).as_secs_f64(),
            ));
        }
        self.prev = Some((now, ticks));
        Some(u)
    }
}

/// CPU time the calling thread has used.
pub fn thread_cpu() -> std::time::Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to fill.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return std::time::Duration::ZERO;
    }
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ticks: u64, ppid: u32) -> Ticks {
        Ticks { ticks, ppid }
    }

    #[test]
    fn cpu_arithmetic() {
        // pid 2's parent is outside the tree (9): it went and nobody here
        // reaped it.
        let prev = HashMap::from([((1, 10), t(100, 0)), ((2, 20), t(50, 9))]);
        // Over 2 s at 100 ticks/s: pid 1 used 100 ticks, pid 2 gone, pid 3
        // new with 40 ticks, and a reused pid 2 (new start time) with 10.
        let now = HashMap::from([
            ((1, 10), t(200, 0)),
            ((3, 30), t(40, 1)),
            ((2, 99), t(10, 1)),
        ]);
        let pct = cpu_percent(&prev, &now, 100.0, 2.0);
        assert!((pct - 75.0).abs() < 1e-9, "{pct}");
        assert_eq!(cpu_percent(&prev, &now, 100.0, 0.0), 0.0);
        // Two busy cores is 200 %.
        let two = HashMap::from([((1, 10), t(300, 0)), ((2, 20), t(250, 9))]);
        assert!((cpu_percent(&prev, &two, 100.0, 2.0) - 200.0).abs() < 1e-9);
    }

    #[test]
    fn a_child_reaped_between_samples_is_counted_once() {
        // The shell (1) had used 10 ticks and its child (2) 30 when last
        // seen; the child used 20 more, exited and was reaped: the shell's
        // children's time now holds all 50, and the shell used 5 itself.
        let prev = HashMap::from([((1, 10), t(10, 0)), ((2, 20), t(30, 1))]);
        let now = HashMap::from([((1, 10), t(10 + 5 + 50, 0))]);
        let pct = cpu_percent(&prev, &now, 100.0, 1.0);
        assert!((pct - 25.0).abs() < 1e-9, "5 + 20 ticks, not {pct}");
        // A grandchild (3) that went with its parent (2): both reaped up
        // the chain into the shell.
        let prev = HashMap::from([((1, 10), t(0, 0)), ((2, 20), t(10, 1)), ((3, 30), t(10, 2))]);
        let now = HashMap::from([((1, 10), t(30, 0))]);
        let pct = cpu_percent(&prev, &now, 100.0, 1.0);
        assert!((pct - 10.0).abs() < 1e-9, "{pct}");
        // Children that lived and died between samples count through
        // their parent.
        let prev = HashMap::from([((1, 10), t(0, 0))]);
        let now = HashMap::from([((1, 10), t(80, 0))]);
        assert!((cpu_percent(&prev, &now, 100.0, 1.0) - 80.0).abs() < 1e-9);
    }

    /// A shell that runs a short-lived process on each turn: what the
    /// samples add up to is within 15 % of the CPU the shell's `times`
    /// reports for itself and its children.
    #[test]
    fn a_fork_heavy_loop_is_counted_whole() {
        let out = std::env::temp_dir().join(format!("muster-times-{}", std::process::id()));
        let script = format!(
            "i=0; while [ $i -lt 1500 ]; do /bin/true; i=$((i+1)); done; times > {}; sleep 0.5",
            out.display()
        );
        let mut child = std::process::Command::new("sh")
            .args(["-c", &script])
            .spawn()
            .unwrap();
        let mut s = Sampler::new(child.id());
        let interval = std::time::Duration::from_millis(100);
        let mut sampled = 0.0;
        let mut last = Instant::now();
        s.sample();
        // Until the shell is a zombie: it has then reaped every child, and
        // a zombie's stat still holds its times.
        loop {
            std::thread::sleep(interval);
            let zombie =
                procfs::read_proc(&format!("/proc/{}/stat", child.id())).is_some_and(|t| {
                    t.rsplit(')')
                        .next()
                        .is_some_and(|r| r.trim_start().starts_with('Z'))
                });
            let Some(u) = s.sample() else { break };
            let now = Instant::now();
            sampled +=
                u.cpu_percent.unwrap_or(0.0) / 100.0 * now.duration_since(last).as_secs_f64();
            last = now;
            if zombie {
                break;
            }
        }
        child.wait().unwrap();
        // `times`: the shell's user and system time, then its children's,
        // as `0m1.234s 0m0.567s`.
        let text = std::fs::read_to_string(&out).unwrap();
        let _ = std::fs::remove_file(&out);
        let secs = |w: &str| -> f64 {
            let (m, s) = w.trim_end_matches('s').split_once('m').unwrap();
            m.parse::<f64>().unwrap() * 60.0 + s.parse::<f64>().unwrap()
        };
        let total: f64 = text.split_whitespace().map(secs).sum();
        assert!(
            total > 0.2,
            "the loop used {total} s: too little to compare"
        );
        let ratio = sampled / total;
        assert!(
            (0.85..=1.15).contains(&ratio),
            "sampled {sampled:.2} s of {total:.2} s ({text:?})"
        );
    }

    #[test]
    fn samples_a_shell_and_its_child() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 5 & sleep 5; wait"])
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        let mut s = Sampler::new(child.id());
        let first = s.sample().unwrap();
        assert_eq!(first.cpu_percent, None);
        assert!(first.processes >= 3, "sh and two sleeps: {first:?}");
        assert!(first.rss_mb > 0.0 && first.threads >= 3 && first.fds > 0);
        let second = s.sample().unwrap();
        assert!(second.cpu_percent.is_some());
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(s.sample().is_none(), "root gone");
    }
}
