//! The one rule for in-process locks: a lock is never left poisoned.
//!
//! A std `Mutex` marks itself poisoned when a thread panics while holding
//! it, and every later `lock().expect(..)` panics in turn: one pair's
//! crashed sync would take every other pair, and the control socket, down
//! with it through the journal they share, until a restart. Prism Sync's
//! critical sections keep their data consistent at every point a panic can
//! start there: they make single assignments, inserts and removals, and the
//! journal's SQL runs inside transactions that SQLite rolls back when their
//! guard drops during the unwind. So the data behind a poisoned lock is
//! still good, and [`LockExt::locked`] takes it, clears the poison and logs
//! it once. The panic itself is caught where a sync run starts and reported
//! as that run's failure (`engine::PairEngine::sync`).
//!
//! Every `Mutex` is taken through [`LockExt::locked`]; `clippy.toml`
//! refuses a bare `Mutex::lock`. A critical section that could not keep
//! that promise must not hide behind this: it would need its own recovery.

use std::sync::{Condvar, Mutex, MutexGuard};

/// Taking a lock without ever failing on poison.
pub trait LockExt<T: ?Sized> {
    /// Locks; a lock poisoned by a panic elsewhere is taken all the same
    /// (see the module docs for why its data is still consistent).
    fn locked(&self) -> MutexGuard<'_, T>;
}

impl<T: ?Sized> LockExt<T> for Mutex<T> {
    #[allow(clippy::disallowed_methods)] // The one place allowed to.
    fn locked(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(|poisoned| {
            tracing::warn!(
                "a lock was held by a thread that panicked; its data is consistent and in use again"
            );
            self.clear_poison();
            poisoned.into_inner()
        })
    }
}

/// Waiting on a condition variable under the same rule.
pub trait CondvarExt {
    /// Waits for a notification; a lock poisoned meanwhile is taken all the
    /// same, as [`LockExt::locked`] does.
    fn wait_locked<'a, T>(&self, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T>;
}

impl CondvarExt for Condvar {
    #[allow(clippy::disallowed_methods)] // The one place allowed to.
    fn wait_locked<'a, T>(&self, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
        self.wait(guard)
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_poisoned_by_a_panic_is_taken_again_and_cleared() {
        let shared = Mutex::new(vec![1]);
        let result = std::thread::scope(|s| {
            s.spawn(|| {
                let mut data = shared.locked();
                data.push(2);
                panic!("a bug while holding the lock");
            })
            .join()
        });
        assert!(result.is_err(), "the thread panicked");
        assert!(shared.is_poisoned());
        assert_eq!(*shared.locked(), [1, 2], "the data is there as left");
        assert!(!shared.is_poisoned(), "the poison is cleared");
    }
}
