//! Processes the agent runs: each in its own process group, so a signal
//! reaches the whole tree, and their exit status as a worker reports it.

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus};

/// Start `cmd` (argv, no shell) as the leader of a new process group.
pub fn spawn_group(cmd: &[String]) -> std::io::Result<Child> {
    let Some((prog, args)) = cmd.split_first() else {
        return Err(std::io::ErrorKind::InvalidInput.into());
    };
    Command::new(prog).args(args).process_group(0).spawn()
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
