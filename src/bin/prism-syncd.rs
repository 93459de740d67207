//! `prism-syncd`: the Prism Sync agent. Parses arguments, sets up logging,
//! and hands over to `prism_sync::agent::run`.

use std::process::ExitCode;

fn main() -> ExitCode {
    keep_large_allocations_apart();
    ExitCode::from(prism_sync::cli::syncd_main())
}

/// glibc's malloc serves an allocation from the heap instead of a mapping
/// of its own once a mapping that large was freed (it raises its threshold
/// up to 32 MiB). A sync's large lists (a listing's entries, reconcile's
/// slots) are made and freed once per sync: from the heap, their room is
/// touched whole and stays part of the process between syncs, where a
/// mapping of their own touches only what they fill and goes back to the
/// system when they are freed. A fixed threshold keeps them mapped. It is
/// above the 256 KiB transfer buffers, which are made per chunk and are
/// best reused from the heap than mapped and unmapped each time.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_large_allocations_apart() {
    const THRESHOLD: libc::c_int = 512 * 1024;
    // SAFETY: mallopt only sets a malloc parameter; it is called before
    // any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, THRESHOLD);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_large_allocations_apart() {}
