//! Keeping the daemon's resident memory near what it actually uses.
//!
//! glibc's malloc gives each thread that allocates an arena of its own (up to eight per
//! core) and hands little of the freed memory back to the system. With rayon's scanner
//! threads, tokio's blocking pool and the puller's workers, a daemon syncing 100,000
//! files peaked at 546 MiB resident for a 152 MiB heap (heaptrack). One arena, and a trim after
//! each scan and pull (the moments big transient maps are freed), keep it close.

/// Limits malloc to one arena. Call once, first thing in `main`, before threads start.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Returns freed memory of every arena to the system.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim is thread-safe and only releases free pages.
    unsafe {
        libc::malloc_trim(0);
    }
}
