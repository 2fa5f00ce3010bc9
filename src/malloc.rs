//! glibc malloc settings for a long-running watcher: one arena and fixed trim and mmap thresholds.
//!
//! The runner's memory is its objects plus what parsing a list page leaves behind.
//! glibc gives each thread that allocates an arena of its own (the tokio workers, the
//! blocking pool, the log writer) and raises its mmap threshold after large frees, so
//! list pages end up spread over several heaps that are never given back. Measured on
//! 1,000 pods (bench/RESULTS.md): about 1 MiB less peak RSS with these settings; the
//! per-thread caches (tcache) keep small allocations off the shared arena's lock.
//! `MALLOC_ARENA_MAX` and friends in the environment still win: glibc reads them first
//! and these calls only set what the environment left alone.

/// Applies the settings; call before any thread starts.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use nix::libc::{M_ARENA_MAX, M_MMAP_THRESHOLD, M_TRIM_THRESHOLD, mallopt};
        const THRESHOLD: i32 = 128 * 1024;
        for (param, value, var) in [
            (M_ARENA_MAX, 1, "MALLOC_ARENA_MAX"),
            (M_TRIM_THRESHOLD, THRESHOLD, "MALLOC_TRIM_THRESHOLD_"),
            (M_MMAP_THRESHOLD, THRESHOLD, "MALLOC_MMAP_THRESHOLD_"),
        ] {
            if std::env::var_os(var).is_none() {
                // SAFETY: mallopt only changes allocator parameters; no thread allocates concurrently yet.
                unsafe { mallopt(param, value) };
            }
        }
    }
}
