//! One reusable I/O buffer per thread for streaming copies and hashes.
//!
//! A sync of many small files streams each one through a buffer; a fresh
//! 256 KiB allocation per file is an `mmap`, page faults and a `munmap`
//! every time, which showed up in profiles of a 10,000-file first sync.
//! Each thread keeps one buffer instead.

use std::cell::RefCell;

/// The buffer's size. BLAKE3 uses SIMD over several 1 KiB chunks at once,
/// and large reads keep the number of system calls per gigabyte small;
/// 256 KiB is past the point where a larger buffer still helps.
pub const BUFFER_BYTES: usize = 256 * 1024;

thread_local! {
    static BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's buffer of [`BUFFER_BYTES`]. A nested call
/// (the reader inside a copy hashing on its own) gets a fresh buffer
/// rather than a panic.
pub fn with_buffer<R>(f: impl FnOnce(&mut [u8]) -> R) -> R {
    BUFFER.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buffer) => {
            if buffer.len() < BUFFER_BYTES {
                buffer.resize(BUFFER_BYTES, 0);
            }
            f(&mut buffer[..BUFFER_BYTES])
        }
        Err(_) => f(&mut vec![0u8; BUFFER_BYTES]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_buffer_is_reused_and_nesting_is_safe() {
        let first = with_buffer(|b| b.as_ptr() as usize);
        let second = with_buffer(|b| b.as_ptr() as usize);
        assert_eq!(first, second, "one buffer per thread");
        let (outer, inner) = with_buffer(|outer| {
            let inner = with_buffer(|inner| {
                inner[0] = 7;
                inner.as_ptr() as usize
            });
            (outer.as_ptr() as usize, inner)
        });
        assert_ne!(outer, inner, "a nested call gets its own buffer");
        assert_eq!(with_buffer(|b| b.len()), BUFFER_BYTES);
    }
}
