//! Running one function over many items on a few threads.
//!
//! Hashing files, flushing them and putting them in place mostly wait for
//! the disk or the network, so a handful of threads finish a batch several
//! times sooner than one. The threads are scoped: items and the function
//! may borrow from the caller, and every thread has ended on return.

use std::sync::Mutex;

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
    let mut done: Vec<(usize, R)> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let next = queue.lock().expect("work queue").next();
                        let Some((index, item)) = next else {
                            return done;
                        };
                        done.push((index, f(item)));
                    }
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
            threads.lock().unwrap().insert(std::thread::current().id());
            // Later items finish sooner: order must not follow completion.
            std::thread::sleep(Duration::from_micros(200 - n));
            n * n
        });
        assert_eq!(squares, (0..200).map(|n| n * n).collect::<Vec<_>>());
        assert!(threads.lock().unwrap().len() > 1, "ran on one thread only");
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
    #[should_panic(expected = "item 7 is bad")]
    fn a_panic_in_a_worker_reaches_the_caller() {
        map((0..20).collect(), 3, |n: i32| {
            assert!(n != 7, "item 7 is bad");
            n
        });
    }
}
