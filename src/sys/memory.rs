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
