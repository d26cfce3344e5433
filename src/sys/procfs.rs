//! Readings from /proc: the kernel's drop counter for our UDP socket, and a
//! process's CPU time, memory, threads, descriptors, I/O and children.
//!
//! Parsers are pure functions over the file's text, so they are tested on
//! captured samples; the readers beside them only open the file.

use std::os::fd::AsRawFd;

/// Read a small /proc file. Unlike `fs::read_to_string` it does not stat
/// the file first (proc files report size 0 anyway): open, read, close.
pub fn read_proc(path: &str) -> Option<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).ok()?;
    let mut buf = vec![0u8; 4096];
    let mut len = 0;
    loop {
        if len == buf.len() {
            buf.resize(len * 2, 0);
        }
        match f.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    buf.truncate(len);
    String::from_utf8(buf).ok()
}

/// The inode of a socket, which is how /proc/net/udp names it.
pub fn socket_inode(sock: &impl AsRawFd) -> Option<u64> {
    // SAFETY: fstat writes into the struct we pass; the fd is borrowed live.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        (libc::fstat(sock.as_raw_fd(), &mut st) == 0).then_some(st.st_ino)
    }
}

/// The `drops` column of the line whose inode is `inode`, in the text of
/// /proc/net/udp or /proc/net/udp6.
pub fn udp_drops(text: &str, inode: u64) -> Option<u64> {
    text.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() >= 13 && f[9].parse() == Ok(inode) {
            f[12].parse().ok()
        } else {
            None
        }
    })
}

/// Kernel drops on the UDP socket with this inode (IPv4 or IPv6 table).
pub fn read_udp_drops(inode: u64) -> Option<u64> {
    ["/proc/net/udp", "/proc/net/udp6"].iter().find_map(|p| {
        let text = std::fs::read_to_string(p).ok()?;
        udp_drops(&text, inode)
    })
}

/// The fields of /proc/<pid>/stat that muster uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stat {
    pub ppid: u32,
    /// Session id (field 6).
    pub session: u32,
    /// User and system CPU time, in clock ticks.
    pub utime: u64,
    pub stime: u64,
    /// CPU time of its children that exited and were waited for (fields
    /// 16 and 17), in clock ticks.
    pub cutime: u64,
    pub cstime: u64,
    pub num_threads: u64,
    /// Start time after boot, in clock ticks.
    pub starttime: u64,
}

/// Parse /proc/<pid>/stat. The command name (field 2) may hold spaces and
/// parentheses, so fields are counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); field N is f[N - 3].
    let field = |n: usize| f.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        ppid: field(4)? as u32,
        session: field(6)? as u32,
        utime: field(14)?,
        stime: field(15)?,
        cutime: field(16)?,
        cstime: field(17)?,
        num_threads: field(20)?,
        starttime: field(22)?,
    })
}

/// A `Key:   1234 kB` line of /proc/<pid>/status, in kB.
pub fn status_kb(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let v = l.strip_prefix(key)?.strip_prefix(':')?;
        v.split_whitespace().next()?.parse().ok()
    })
}

/// `read_bytes` and `write_bytes` of /proc/<pid>/io (storage I/O).
pub fn parse_io(text: &str) -> Option<(u64, u64)> {
    let field = |key: &str| {
        text.lines().find_map(|l| {
            l.strip_prefix(key)?
                .strip_prefix(':')?
                .trim()
                .parse::<u64>()
                .ok()
        })
    };
    Some((field("read_bytes")?, field("write_bytes")?))
}

/// The pids in a `children` file (space-separated).
pub fn parse_children(text: &str) -> Vec<u32> {
    text.split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// MemTotal of /proc/meminfo, in kB.
pub fn mem_total_kb() -> Option<u64> {
    status_kb(&std::fs::read_to_string("/proc/meminfo").ok()?, "MemTotal")
}

/// Page size in bytes.
pub fn page_size() -> u64 {
    // SAFETY: sysconf has no memory effects.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 { p as u64 } else { 4096 }
}

/// The direct children of `pid`: every thread's `children` file, since a
/// child belongs to the thread that started it (and moves to another
/// thread of the process when that one ends, so the main thread's file
/// alone can list some children and miss others); when the kernel lacks
/// those files, by scanning every process's parent. O(threads of `pid`).
pub fn children(pid: u32) -> Vec<u32> {
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        let mut out = Vec::new();
        let mut found = false;
        for t in dir.flatten() {
            if let Ok(text) = std::fs::read_to_string(t.path().join("children")) {
                found = true;
                out.extend(parse_children(&text));
            }
        }
        if found {
            out.sort_unstable();
            out.dedup();
            return out;
        }
    }
    all_pids()
        .into_iter()
        .filter(|&p| read_stat(p).is_some_and(|s| s.ppid == pid))
        .collect()
}

/// Resident pages from /proc/<pid>/statm (second field).
pub fn parse_statm_resident(text: &str) -> Option<u64> {
    text.split_whitespace().nth(1)?.parse().ok()
}

fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Every process in session `sid`: what a pool member started, even in
/// process groups of its own.
pub fn session_members(sid: u32) -> Vec<u32> {
    all_pids()
        .into_iter()
        .filter(|&p| read_stat(p).is_some_and(|s| s.session == sid))
        .collect()
}

pub fn read_stat(pid: u32) -> Option<Stat> {
    parse_stat(&read_proc(&format!("/proc/{pid}/stat"))?)
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`).
pub fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no memory effects.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

/// CPU seconds used so far and resident KiB of a process, or `None` when
/// it is gone.
pub fn cpu_and_rss(pid: u32) -> Option<(f64, u64)> {
    let stat = parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let cpu = (stat.utime + stat.stime) as f64 / clock_ticks() as f64;
    Some((cpu, status_kb(&status, "VmRSS").unwrap_or(0)))
}

/// The daemon's own process, as Prometheus client libraries export it
/// (`process_*`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct OwnProcess {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub open_fds: u64,
    pub max_fds: Option<u64>,
    /// Unix seconds when the process started.
    pub start_time_seconds: Option<f64>,
}

/// Boot time from the `btime` line of /proc/stat, in Unix seconds.
pub fn parse_btime(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

/// This process's figures, or `None` when /proc cannot be read.
pub fn own_process() -> Option<OwnProcess> {
    let stat = parse_stat(&read_proc("/proc/self/stat")?)?;
    let statm = read_proc("/proc/self/statm")?;
    let mut pages = statm.split_whitespace().map(|v| v.parse::<u64>().ok());
    let (size, resident) = (pages.next()??, pages.next()??);
    let tck = clock_ticks() as f64;
    let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    // SAFETY: getrlimit writes into the struct we pass.
    let max_fds = unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        (libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur != libc::RLIM_INFINITY)
            .then_some(r.rlim_cur)
    };
    // The boot time never changes, and /proc/stat grows with the CPUs:
    // read it once.
    static BTIME: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    let btime = *BTIME.get_or_init(|| read_proc("/proc/stat").and_then(|t| parse_btime(&t)));
    Some(OwnProcess {
        cpu_seconds: (stat.utime + stat.stime) as f64 / tck,
        resident_bytes: resident * page_size(),
        virtual_bytes: size * page_size(),
        // The directory read holds one descriptor of its own.
        open_fds: open_fds.saturating_sub(1),
        max_fds,
        start_time_seconds: btime.map(|b| b as f64 + stat.starttime as f64 / tck),
    })
}

/// The machine's CPU time from the `cpu` line of `/proc/stat`, in clock
/// ticks: `(steal, total)`. Steal is time this (virtual) machine wanted to
/// run and the hypervisor gave to someone else.
pub fn parse_cpu_totals(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    // user nice system idle iowait irq softirq steal (guest time is
    // already counted in user and nice).
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    (f.len() == 8).then(|| (f[7], f.iter().sum()))
}

pub fn read_cpu_totals() -> Option<(u64, u64)> {
    parse_cpu_totals(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// Percent of the machine's CPU time stolen between two readings.
pub fn steal_percent(a: Option<(u64, u64)>, b: Option<(u64, u64)>) -> Option<f64> {
    let ((s0, t0), (s1, t1)) = (a?, b?);
    (t1 > t0).then(|| 100.0 * s1.saturating_sub(s0) as f64 / (t1 - t0) as f64)
}

/// The machine's host name, as the kernel has it.
pub fn hostname() -> Option<String> {
    let h = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let h = h.trim();
    (!h.is_empty()).then(|| h.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn btime_and_own_process() {
        assert_eq!(
            parse_btime("cpu  1 2 3\nintr 5\nbtime 1700000000\nprocesses 9\n"),
            Some(1_700_000_000)
        );
        assert_eq!(parse_btime("cpu 1\n"), None);
        let before = own_process().unwrap();
        let f = std::fs::File::open("/proc/self/stat").unwrap();
        let after = own_process().unwrap();
        // Other test threads open files too: at least the one held here.
        assert!(after.open_fds >= 1 && before.resident_bytes > 0);
        drop(f);
        assert!(after.virtual_bytes >= after.resident_bytes);
    }

    #[test]
    fn stat_with_awkward_names() {
        let line = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 1200 0 0 0 731 42 0 0 20 0 7 0 98765 123456789 2048 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        let s = parse_stat(line).unwrap();
        assert_eq!(
            (s.utime, s.stime, s.num_threads, s.starttime),
            (731, 42, 7, 98765)
        );
        assert_eq!(parse_stat("12 (x) S 1 2"), None);
        assert_eq!(parse_stat("no parens"), None);
    }

    #[test]
    fn io_children_and_ppid() {
        let io = "rchar: 4321\nwchar: 99\nsyscr: 5\nsyscw: 1\nread_bytes: 8192\nwrite_bytes: 4096\ncancelled_write_bytes: 0\n";
        assert_eq!(parse_io(io), Some((8192, 4096)));
        assert_eq!(parse_io("rchar: 1\n"), None);
        assert_eq!(parse_children("12 13 99\n"), vec![12, 13, 99]);
        assert!(parse_children("").is_empty());
        assert_eq!(parse_statm_resident("2048 512 100 1 0 300 0\n"), Some(512));
        assert_eq!(parse_statm_resident("2048"), None);
        let line = "7 (sh) S 4 7 7 0 -1 0 0 0 0 0 1 2 0 0 20 0 1 0 50 0 0";
        assert_eq!(parse_stat(line).unwrap().ppid, 4);
    }

    /// A child started by a thread that has ended belongs to another
    /// thread of the process; a child of this thread is found beside it.
    #[test]
    fn finds_the_children_of_every_thread() {
        let orphan = std::thread::spawn(|| {
            std::process::Command::new("sleep")
                .arg("5")
                .spawn()
                .unwrap()
        })
        .join()
        .unwrap();
        let mine = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let kids = children(std::process::id());
        for mut c in [orphan, mine] {
            assert!(kids.contains(&c.id()), "{} in {kids:?}", c.id());
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    #[test]
    fn finds_a_child() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let kids = children(std::process::id());
        assert!(kids.contains(&child.id()), "{kids:?}");
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(mem_total_kb().unwrap() > 0);
        assert!(page_size() >= 4096);
    }

    #[test]
    fn status_lines() {
        let text = "Name:\tmusterd\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\nThreads:\t5\n";
        assert_eq!(status_kb(text, "VmRSS"), Some(10240));
        assert_eq!(status_kb(text, "VmHWM"), Some(20480));
        assert_eq!(status_kb(text, "VmSwap"), None);
    }

    #[test]
    fn reads_this_process() {
        let (cpu, rss) = cpu_and_rss(std::process::id()).unwrap();
        assert!(cpu >= 0.0 && rss > 0);
        assert!(cpu_and_rss(u32::MAX).is_none());
    }

    const SAMPLE: &str = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  277: 0100007F:1F9A 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 431234 2 0000000000000000 17
  812: 00000000:0044 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 15678 2 0000000000000000 0
";

    #[test]
    fn finds_our_socket() {
        assert_eq!(udp_drops(SAMPLE, 431234), Some(17));
        assert_eq!(udp_drops(SAMPLE, 15678), Some(0));
        assert_eq!(udp_drops(SAMPLE, 1), None);
        assert_eq!(udp_drops("", 1), None);
        assert_eq!(udp_drops("header\n 1: short line", 1), None);
    }

    #[test]
    fn reads_a_live_socket() {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let inode = socket_inode(&s).unwrap();
        assert_eq!(read_udp_drops(inode), Some(0));
    }

    #[test]
    fn steal_from_proc_stat() {
        let a = "cpu  100 0 50 800 10 0 5 35 0 0\ncpu0 50 0 25 400 5 0 2 18 0 0\n";
        let b = "cpu  150 0 70 900 10 0 5 100 0 0\ncpu0 1 1 1 1 1 1 1 1 0 0\n";
        assert_eq!(parse_cpu_totals(a), Some((35, 1000)));
        assert_eq!(parse_cpu_totals(b), Some((100, 1235)));
        let pct = steal_percent(parse_cpu_totals(a), parse_cpu_totals(b)).unwrap();
        assert!((pct - 100.0 * 65.0 / 235.0).abs() < 1e-9, "{pct}");
        assert_eq!(parse_cpu_totals("cpu  1 2 3\n"), None);
        assert_eq!(parse_cpu_totals("intr 5\n"), None);
        assert_eq!(steal_percent(Some((0, 10)), Some((0, 10))), None);
    }
}
