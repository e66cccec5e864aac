//! Handing freed heap memory back to the operating system.
//!
//! glibc's allocator keeps the memory a program frees in its arenas (one per thread that
//! allocates, up to eight per core), ready for reuse. After a burst of short-lived allocations,
//! such as decoding a list of thousands of Kubernetes objects, most of it stays resident though
//! nothing uses it, pinned by the few long-lived allocations made in between.
//! [`release_freed_memory`] returns the free pages of every arena; call it after such a burst,
//! not on a hot path (it walks the free lists of every arena under their locks).

/// Returns the heap memory the allocator holds free to the operating system: glibc's
/// `malloc_trim(0)`, which shrinks the top of every arena and gives back the whole free pages
/// inside them. Logs at debug level whether anything was released and the resident set before
/// and after. On C libraries other than glibc it does nothing.
#[cfg(target_env = "gnu")]
#[allow(unsafe_code)]
pub fn release_freed_memory() {
    let before = debug_resident_kib();
    // SAFETY: `malloc_trim` has no preconditions: it only takes the allocator's own arena locks
    // and returns free pages of those arenas to the kernel; it touches no memory that is still
    // allocated, so no reference held anywhere in this program is affected.
    let released = unsafe { libc::malloc_trim(0) } != 0;
    tracing::debug!(
        released,
        resident_kib_before = before,
        resident_kib_after = debug_resident_kib(),
        "malloc_trim: freed heap memory returned to the OS"
    );
}

/// Returns the heap memory the allocator holds free to the operating system; this build's C
/// library is not glibc, so there is nothing to call and it does nothing.
#[cfg(not(target_env = "gnu"))]
pub fn release_freed_memory() {
    tracing::debug!("not glibc: no freed heap memory to return");
}

/// This process's resident set in KiB (`VmRSS` of `/proc/self/status`), read only when debug
/// logs are on.
#[cfg(target_env = "gnu")]
fn debug_resident_kib() -> Option<u64> {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return None;
    }
    resident_kib()
}

/// This process's resident set in KiB, from `/proc/self/status`.
#[cfg(target_env = "gnu")]
fn resident_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[cfg(all(test, target_env = "gnu"))]
mod tests {
    use super::*;

    #[test]
    fn freed_memory_goes_back_to_the_os() {
        const MIB_KIB: u64 = 1024;
        // 64 MiB of 1 KiB blocks (below the mmap threshold, so in the heap), then every block
        // freed but one in 64: the survivors, spread over the whole region, keep the allocator
        // from shrinking its heap on its own, as long-lived allocations made while decoding do.
        let before = resident_kib().expect("VmRSS in /proc/self/status");
        let mut blocks: Vec<Vec<u8>> = (0..64 * 1024).map(|_| vec![0xa5u8; 1024]).collect();
        let filled = resident_kib().expect("VmRSS");
        assert!(
            filled >= before + 48 * MIB_KIB,
            "resident {before} KiB, {filled} KiB with the blocks"
        );
        let mut i = 0;
        blocks.retain(|_| {
            i += 1;
            i % 64 == 0
        });
        let kept = blocks.len();
        release_freed_memory();
        let after = resident_kib().expect("VmRSS");
        assert!(
            after + 32 * MIB_KIB <= filled,
            "resident {filled} KiB with the blocks, {after} KiB after freeing all but {kept} \
             and releasing"
        );
        assert!(blocks.iter().all(|b| b.len() == 1024 && b[1023] == 0xa5));
    }
}
