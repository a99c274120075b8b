//! Gives the heap pages a reconcile pass freed back to the kernel, so the agent's resident memory
//! follows what it holds rather than the high-water mark of its passes.
//!
//! A pass builds its peer set, routing plan and device snapshot whole (at 5,000 nodes a few MiB
//! each) and frees them at its end. glibc's `free` returns memory to the kernel only from the top
//! of a heap and only above `M_TRIM_THRESHOLD`; the rest stays resident in the arena of whichever
//! tokio worker ran the pass, and across the churn the arenas settle at the sum of their peaks.
//! `malloc_trim(0)` walks every arena and `madvise(MADV_DONTNEED)`s each whole free page
//! (glibc `malloc/malloc.c`, `mtrim`; since glibc 2.8), as Go's scavenger does for its heap.
//!
//! It runs after every pass: at 5,000 nodes 1–2 ms, plus the next pass faulting its pages in
//! again (BENCHMARKS.md, "Freed pages back to the kernel"). Paced to once a second it saved
//! nothing: two passes are enough to bring the arenas back to their peaks.

/// Releases the free pages of every malloc arena to the kernel; returns whether any memory was
/// released. A no-op (false) where the C library is not glibc (musl has no `malloc_trim`).
pub fn release_free_pages() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `malloc_trim` takes no pointers and changes only the allocator's own state,
        // under each arena's lock; it may be called from any thread at any time.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    /// The process's resident memory, in bytes (`/proc/self/statm`, in pages).
    fn resident() -> u64 {
        let me = procfs::process::Process::myself().expect("/proc/self");
        me.statm().expect("statm").resident * procfs::page_size()
    }

    /// 64 MiB in small blocks (below glibc's mmap threshold, so on the heap), all freed but the
    /// last, which pins the top of the heap as a pass's long-lived data does: `free` alone
    /// keeps them resident, the release gives them back. nextest runs each test in a process
    /// of its own, so no other test's memory is counted.
    #[test]
    fn freed_heap_pages_go_back_to_the_kernel() {
        const BLOCK: usize = 4096;
        let mut blocks: Vec<Vec<u8>> = (0..64 * 256).map(|i| vec![(i % 251) as u8 + 1; BLOCK]).collect();
        let pin = blocks.pop();
        let touched = resident();
        drop(blocks);
        let freed = resident();
        assert!(release_free_pages(), "something was released");
        let released = resident();
        let mib = |b: u64| b as f64 / f64::from(1 << 20);
        assert!(
            freed > released + (48 << 20),
            "resident after touching {:.1} MiB, after free {:.1} MiB, after the release {:.1} MiB",
            mib(touched),
            mib(freed),
            mib(released)
        );
        drop(pin);
    }
}
