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
