//! Running one function over many items on a few threads.
//!
//! Hashing files, flushing them and putting them in place mostly wait for
//! the disk or the network, so a handful of threads finish a batch several
//! times sooner than one. The threads are scoped: items and the function
//! may borrow from the caller, and every thread has ended on return.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::locks::LockExt;

/// Applies `f` to every item on up to `workers` threads and returns the
/// results in the items' order. With one worker (or one item) everything
/// runs on the calling thread.
///
/// A panic in `f` is raised again on the calling thread once the other
/// threads have stopped.
pub fn map<T: Send, R: Send>(items: Vec<T>, workers: usize, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    let workers = workers.min(items.len());
    if workers <= 1 {
        return items.into_iter().map(f).collect();
    }
    let queue = Mutex::new(items.into_iter().enumerate());
    // Once one thread panicked the others take no more items.
    let panicked = AtomicBool::new(false);
    let mut done: Vec<(usize, R)> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    let _raise = RaiseOnPanic(&panicked);
                    let mut done = Vec::new();
                    while !panicked.load(Ordering::Relaxed) {
                        let next = queue.locked().next();
                        let Some((index, item)) = next else {
                            break;
                        };
                        done.push((index, f(item)));
                    }
                    done
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|thread| {
                thread
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    });
    done.sort_by_key(|(index, _)| *index);
    done.into_iter().map(|(_, result)| result).collect()
}

/// Raises its flag when dropped by a panicking thread.
struct RaiseOnPanic<'a>(&'a AtomicBool);

impl Drop for RaiseOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.store(true, Ordering::Relaxed);
        }
    }
}

/// The processor cores this process may use.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// How many threads work on what mostly waits for a local disk: the
/// machine's cores, at most four (beyond that, threads only queue at the
/// same disk).
pub fn disk_workers() -> usize {
    cores().min(4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::time::Duration;

    #[test]
    fn results_come_back_in_the_items_order_from_several_threads() {
        let items: Vec<u64> = (0..200).collect();
        let threads = Mutex::new(HashSet::new());
        let squares = map(items, 4, |n| {
            threads.locked().insert(std::thread::current().id());
            // Later items finish sooner: order must not follow completion.
            std::thread::sleep(Duration::from_micros(200 - n));
            n * n
        });
        assert_eq!(squares, (0..200).map(|n| n * n).collect::<Vec<_>>());
        assert!(threads.locked().len() > 1, "ran on one thread only");
    }

    #[test]
    fn one_worker_or_no_items_run_on_the_calling_thread() {
        let caller = std::thread::current().id();
        assert_eq!(
            map(vec![1, 2, 3], 1, |n| (n, std::thread::current().id())),
            [(1, caller), (2, caller), (3, caller)]
        );
        assert!(map(Vec::<u8>::new(), 8, |n| n).is_empty());
    }

    #[test]
    fn a_panic_in_a_worker_reaches_the_caller_and_stops_the_others() {
        let started = std::sync::atomic::AtomicUsize::new(0);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            map((0..3000).collect(), 3, |n: i32| {
                started.fetch_add(1, Ordering::Relaxed);
                assert!(n != 7, "item 7 is bad");
                std::thread::sleep(Duration::from_millis(1));
                n
            })
        }));
        let panic = outcome.unwrap_err();
        let message = panic
            .downcast_ref::<&str>()
            .map(|m| m.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned());
        assert_eq!(message.as_deref(), Some("item 7 is bad"));
        let started = started.load(Ordering::Relaxed);
        // The panic hook (a backtrace) takes a while before the flag rises;
        // without the flag all 3,000 items would be taken, a second's work.
        assert!(started < 1000, "{started} items were taken after the panic");
    }
}
