//! Processes the agent runs: each in its own process group, so a signal
//! reaches the whole tree, and their exit status as a worker reports it.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus};

/// Start `cmd` (argv, no shell) as the leader of a new process group,
/// killed when the thread that started it dies.
pub fn spawn_group(cmd: &[String]) -> std::io::Result<Child> {
    let Some((prog, args)) = cmd.split_first() else {
        return Err(std::io::ErrorKind::InvalidInput.into());
    };
    let mut c = Command::new(prog);
    c.args(args).process_group(0);
    dies_with_parent(&mut c);
    c.spawn()
}

/// The child gets SIGKILL when its parent (the thread that forks it) dies,
/// however it dies: a supervisor killed with `kill -9` leaves nothing
/// running behind it.
pub fn dies_with_parent(cmd: &mut Command) {
    // SAFETY: prctl takes plain integers and is async-signal-safe, as the
    // code between fork and exec must be.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// The child leads a session of its own: what it starts in groups of
/// their own (an agent's handlers) is still found, and killed with it.
pub fn own_session(cmd: &mut Command) {
    // SAFETY: setsid takes no arguments and is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Send `sig` to every process in the group `pgid`.
pub fn signal_group(pgid: i32, sig: i32) {
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    unsafe {
        libc::kill(-pgid, sig);
    }
}

/// Send `sig` to one process.
pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// A descriptor that becomes readable when process `pid` ends (Linux
/// `pidfd_open`, 5.3 and later); `None` where the kernel has none.
pub fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and touches no memory.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) } as i32;
    // SAFETY: a descriptor the kernel just gave us, owned by nothing else.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Wait until one of `fds` is readable or `timeout` passes (poll(2));
/// says which were.
pub fn wait_readable(fds: &[BorrowedFd], timeout: std::time::Duration) -> Vec<bool> {
    let mut p: Vec<libc::pollfd> = fds
        .iter()
        .map(|fd| libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: `p` is a valid array of pollfd for the length given.
    let n = unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, ms) };
    p.iter().map(|x| n > 0 && x.revents != 0).collect()
}

/// The exit status to report and to exit with: the code, or 128+N.
pub fn exit_code(st: ExitStatus) -> (i32, Option<i32>, Option<i32>) {
    match (st.code(), st.signal()) {
        (Some(c), _) => (c, Some(c), None),
        (None, Some(s)) => (128 + s, None, Some(s)),
        _ => (1, None, None),
    }
}
