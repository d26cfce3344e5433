//! Giving freed memory back to the system. glibc keeps freed heap pages
//! for reuse; after a large, passing use (a many-megabyte snapshot sent to
//! many clients, a `/telemetry` of a large fleet) they would stay counted
//! in the daemon's RSS for as long as it runs.

/// Allocations at least this large get pages of their own (`mmap`), which
/// go back to the system the moment they are freed.
pub const MAPPED_FROM: usize = 1 << 20;

/// Fix glibc's mmap threshold at [`MAPPED_FROM`]. Left alone, glibc raises
/// it to the largest block freed so far (up to 32 MiB), after which a
/// 16 MB snapshot is carved from a thread's arena; freeing it leaves the
/// arena's top free but resident, and `malloc_trim` does not shrink the
/// top of a thread's arena. Setting the threshold also stops it moving.
pub fn map_large_allocations() {
    // SAFETY: mallopt only changes a malloc tunable; called once at start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MAPPED_FROM as libc::c_int);
    }
}

/// The tunable that turns glibc's per-thread caches off.
const NO_THREAD_CACHES: &str = "glibc.malloc.tcache_count=0";
/// Set across the re-execution: what GLIBC_TUNABLES was before (`=VALUE`),
/// or `unset`, so that the daemon's children get the environment it got.
const BEFORE: &str = "MUSTER_GLIBC_TUNABLES_BEFORE";

/// Run without glibc's per-thread caches of freed blocks (tcache: up to
/// seven blocks of each size under 1 KiB, per thread). musterd has a thread
/// per worker, mostly asleep, each freeing blocks that another thread
/// allocated, so each cache fills with blocks only that thread can reuse:
/// measured in an hour's soak at 1,400 threads, the caches held 14 MB at
/// the start and grew 8 MB an hour; without them the heap stayed flat, for
/// 3 to 5 % more CPU per heartbeat. glibc reads its tunables once, when the
/// process starts, so a daemon whose `GLIBC_TUNABLES` says nothing of the
/// tcache sets it and executes itself again, once, before it has threads,
/// sockets or output; the new image puts `GLIBC_TUNABLES` back as it was,
/// for the processes it starts. An operator's own tcache tunable is kept.
/// Returns when nothing is to be done, after putting the environment back,
/// or when the execution failed (said on stderr: the daemon runs on).
pub fn without_thread_caches() {
    if let Some(before) = std::env::var_os(BEFORE) {
        let before = before.to_string_lossy().into_owned();
        // SAFETY: called from main before any other thread exists, so no
        // one reads the environment while it changes.
        unsafe {
            match before.strip_prefix('=') {
                Some(v) => std::env::set_var("GLIBC_TUNABLES", v),
                None => std::env::remove_var("GLIBC_TUNABLES"),
            }
            std::env::remove_var(BEFORE);
        }
        return;
    }
    if !cfg!(target_env = "gnu") {
        return;
    }
    let current = match std::env::var("GLIBC_TUNABLES") {
        Ok(v) if v.contains("glibc.malloc.tcache_count") => return,
        Ok(v) => Some(v),
        Err(std::env::VarError::NotPresent) => None,
        // Not text: the operator's, left alone.
        Err(std::env::VarError::NotUnicode(_)) => return,
    };
    let (tunables, before) = match &current {
        Some(v) if !v.is_empty() => (format!("{v}:{NO_THREAD_CACHES}"), format!("={v}")),
        Some(v) => (NO_THREAD_CACHES.to_string(), format!("={v}")),
        None => (NO_THREAD_CACHES.to_string(), "unset".to_string()),
    };
    use std::os::unix::process::CommandExt;
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_default();
    let err = std::process::Command::new("/proc/self/exe")
        .arg0(argv0)
        .args(args)
        .env("GLIBC_TUNABLES", tunables)
        .env(BEFORE, before)
        .exec();
    eprintln!(
        "musterd: cannot execute itself again without malloc's thread caches ({err}); running with them"
    );
}

/// Return the free pages of every malloc arena to the system: the small
/// blocks many connections left behind.
pub fn trim() {
    // SAFETY: malloc_trim only releases memory malloc holds free.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// What malloc holds, from its own counters (glibc's `mallinfo2`, summed
/// over every arena): what is allocated and not freed, and what it keeps
/// free for reuse. Unlike RSS, `in_use` does not count pages freed blocks
/// still occupy, so it says whether something grows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Heap {
    /// Bytes allocated and not freed, arenas and mmapped blocks together.
    pub in_use: u64,
    /// Bytes free inside the arenas.
    pub free: u64,
}

pub fn heap() -> Heap {
    // SAFETY: mallinfo2 takes each arena's lock in turn and returns a copy.
    let m = unsafe { libc::mallinfo2() };
    Heap {
        in_use: (m.uordblks + m.hblkhd) as u64,
        free: m.fordblks as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The heap is the process's: tests running beside this one allocate
    /// and free too, so the block is large beside their noise.
    #[test]
    fn the_heap_counts_what_is_allocated() {
        let before = heap().in_use;
        let block = std::hint::black_box(vec![7u8; 64 << 20]);
        let during = heap().in_use;
        drop(block);
        let after = heap().in_use;
        assert!(during >= before + (48 << 20), "{before} -> {during}");
        assert!(after + (48 << 20) <= during, "freed: {during} -> {after}");
    }
}
