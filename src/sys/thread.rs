//! The calling thread's place in the scheduler: how eagerly it runs when
//! woken, and how precisely its timers fire. Each call touches only the
//! calling thread, needs no privilege, and leaves the thread as it was if
//! refused.

use std::time::Duration;

/// Lower the calling thread's priority by `nice` steps (0–19): on a busy
/// host it waits before the loops that clients are waiting on.
pub fn lower_priority(nice: i32) {
    // SAFETY: setpriority on this thread's own id; touches no memory.
    unsafe {
        libc::setpriority(
            libc::PRIO_PROCESS,
            libc::gettid() as libc::id_t,
            nice.clamp(0, 19),
        );
    }
}

/// Put the calling thread under `SCHED_BATCH` (when woken it waits for the
/// running thread's turn to end instead of preempting it) and widen its
/// timer slack to `slack`, so the kernel can serve the sleeps of many such
/// threads with one timer interrupt.
pub fn batch_priority(slack: Duration) {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; `param` outlives the call.
    let _ = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
    // SAFETY: PR_SET_TIMERSLACK takes a value and touches no memory.
    let _ = unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, slack.as_nanos() as libc::c_ulong) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_can_lower_itself_and_go_batch() {
        std::thread::spawn(|| {
            lower_priority(10);
            // SAFETY: getpriority reads this thread's own nice value.
            let nice =
                unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) };
            assert_eq!(nice, 10);
            batch_priority(Duration::from_millis(5));
            // SAFETY: sched_getscheduler(0) reads this thread's policy.
            assert_eq!(unsafe { libc::sched_getscheduler(0) }, libc::SCHED_BATCH);
        })
        .join()
        .unwrap();
    }
}
