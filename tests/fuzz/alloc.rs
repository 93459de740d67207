//! The fuzz binary's global allocator: the system allocator, counting per
//! thread the bytes live and their peak, so each case can be held to a
//! memory budget that depends on its input's length.
//!
//! Counting is per thread because the test harness runs the targets on
//! threads of their own; a case's parser runs on its target's thread, so
//! what it allocates is counted there. (Work a case hands to another thread,
//! such as the API handlers' blocking calls, is not counted.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

pub struct Counting;

thread_local! {
    // `const` initialisers without destructors: reading them never
    // allocates, so the allocator can use them.
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn add(bytes: isize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get() + bytes;
        live.set(now);
        let _ = PEAK.try_with(|peak| {
            if now > peak.get() {
                peak.set(now);
            }
        });
    });
}

// SAFETY: every call is forwarded unchanged to `System`; the counting only
// touches thread-local integers.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            add(layout.size() as isize);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            add(layout.size() as isize);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        add(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            add(new_size as isize - layout.size() as isize);
        }
        new
    }
}

/// Starts a measurement on this thread: the peak is reset to what is live
/// now, which is returned as the baseline.
pub fn start() -> isize {
    let live = LIVE.with(Cell::get);
    PEAK.with(|peak| peak.set(live));
    live
}

/// The most this thread had allocated above `baseline` since [`start`].
pub fn peak_since(baseline: isize) -> usize {
    PEAK.with(Cell::get).saturating_sub(baseline).max(0) as usize
}
