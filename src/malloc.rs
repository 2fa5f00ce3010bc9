//! glibc malloc settings for a long-running watcher: one arena, no fastbins, fixed trim and mmap thresholds.
//!
//! The runner's memory is its objects plus what parsing a list page leaves behind.
//! glibc gives each thread that allocates an arena of its own (the tokio workers, the
//! blocking pool, the log writer) and raises its mmap threshold after large frees, so
//! list pages end up spread over several heaps that are never given back. Measured on
//! 1,000 pods (bench/RESULTS.md): about 1 MiB less peak RSS with these settings; the
//! per-thread caches (tcache) keep small allocations off the shared arena's lock.
//! Fastbins are off: with them, every allocation above 1 KiB (a hook's task, its
//! environment) first merges all fastbin chunks, 3-4 % of the runner's CPU in a
//! throughput run (perf); the per-thread caches serve small sizes without them.
//! What the environment sets still wins: with `GLIBC_TUNABLES` nothing is changed, and
//! each of `MALLOC_ARENA_MAX`, `MALLOC_TRIM_THRESHOLD_`, `MALLOC_MMAP_THRESHOLD_` keeps
//! its own setting.

/// Applies the settings; call before any thread starts.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use nix::libc::{M_ARENA_MAX, M_MMAP_THRESHOLD, M_MXFAST, M_TRIM_THRESHOLD, mallopt};
        const THRESHOLD: i32 = 128 * 1024;
        if std::env::var_os("GLIBC_TUNABLES").is_some() {
            return;
        }
        for (param, value, var) in [
            (M_ARENA_MAX, 1, Some("MALLOC_ARENA_MAX")),
            (M_TRIM_THRESHOLD, THRESHOLD, Some("MALLOC_TRIM_THRESHOLD_")),
            (M_MMAP_THRESHOLD, THRESHOLD, Some("MALLOC_MMAP_THRESHOLD_")),
            (M_MXFAST, 0, None),
        ] {
            if var.is_none_or(|v| std::env::var_os(v).is_none()) {
                // SAFETY: mallopt only changes allocator parameters; no thread allocates concurrently yet.
                unsafe { mallopt(param, value) };
            }
        }
    }
}
