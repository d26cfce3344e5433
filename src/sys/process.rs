//! Processes the agent runs: each in its own process group, so a signal
//! reaches the whole tree, and their exit status as a worker reports it.

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

/// Send `sig` to every process in the group `pgid`.
pub fn signal_group(pgid: i32, sig: i32) {
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    unsafe {
        libc::kill(-pgid, sig);
    }
}

/// The exit status to report and to exit with: the code, or 128+N.
pub fn exit_code(st: ExitStatus) -> (i32, Option<i32>, Option<i32>) {
    match (st.code(), st.signal()) {
        (Some(c), _) => (c, Some(c), None),
        (None, Some(s)) => (128 + s, None, Some(s)),
        _ => (1, None, None),
    }
}
