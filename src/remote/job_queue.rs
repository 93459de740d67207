//! The work queue of a parallel listing (SFTP and WebDAV walk their trees
//! this way): workers take jobs, a job may add more (a folder's
//! subfolders), and the walk is over when no job is left and no worker is
//! busy, or as soon as a job recorded something that stops it. A worker
//! that panics ends the walk for all (see [`JobQueue::worker`]), so the
//! others never wait for a job it will not finish.

use std::sync::{Condvar, Mutex, MutexGuard};

use crate::locks::{CondvarExt, LockExt};

/// What stops a walk early, gathered from the jobs that reported it.
pub trait Stop: Default {
    fn stops(&self) -> bool;
}

impl<E> Stop for Option<E> {
    fn stops(&self) -> bool {
        self.is_some()
    }
}

pub struct JobQueue<J, S> {
    state: Mutex<State<J, S>>,
    /// Signalled when jobs are added or the last busy worker finished.
    more: Condvar,
}

struct State<J, S> {
    jobs: Vec<J>,
    /// Workers running a job (which may add more).
    busy: usize,
    stop: S,
    /// A worker panicked: its job will never finish.
    abandoned: bool,
}

/// Held by a worker for as long as it takes jobs: if the worker panics,
/// dropping it ends the walk, so the other workers stop waiting and the
/// panic reaches whoever started the walk.
pub struct Worker<'q, J, S: Stop> {
    queue: &'q JobQueue<J, S>,
}

impl<J, S: Stop> Drop for Worker<'_, J, S> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.queue.lock().abandoned = true;
            self.queue.more.notify_all();
        }
    }
}

impl<J, S: Stop> JobQueue<J, S> {
    pub fn new() -> Self {
        JobQueue {
            state: Mutex::new(State {
                jobs: Vec::new(),
                busy: 0,
                stop: S::default(),
                abandoned: false,
            }),
            more: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<J, S>> {
        self.state.locked()
    }

    /// Adds the first jobs, before the workers start.
    pub fn add(&self, jobs: Vec<J>) {
        self.lock().jobs.extend(jobs);
        self.more.notify_all();
    }

    /// Registers the calling thread as a worker; keep the guard while
    /// taking jobs.
    pub fn worker(&self) -> Worker<'_, J, S> {
        Worker { queue: self }
    }

    /// The next job, waiting while other workers may still add some; `None`
    /// when all is done, the walk was stopped, or a worker panicked.
    pub fn next(&self) -> Option<J> {
        let mut state = self.lock();
        loop {
            if state.stop.stops() || state.abandoned {
                return None;
            }
            if let Some(job) = state.jobs.pop() {
                state.busy += 1;
                return Some(job);
            }
            if state.busy == 0 {
                return None;
            }
            state = self.more.wait_locked(state);
        }
    }

    /// Ends a job taken with [`JobQueue::next`]: queues what it `found` and
    /// lets it `record` what should stop the walk.
    pub fn finish(&self, found: Vec<J>, record: impl FnOnce(&mut S)) {
        let mut state = self.lock();
        state.jobs.extend(found);
        state.busy -= 1;
        record(&mut state.stop);
        drop(state);
        self.more.notify_all();
    }

    /// What stopped the walk, if anything did.
    pub fn into_stop(self) -> S {
        self.state.into_inner().expect("walk queue").stop
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_added_by_jobs_run_until_none_is_left_and_a_stop_ends_the_walk() {
        // Job n adds n - 1: from 3, jobs 3, 2, 1 and 0 run.
        let queue: JobQueue<u32, Option<&str>> = JobQueue::new();
        queue.add(vec![3]);
        let ran = Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            for _ in 0..3 {
                scope.spawn(|| {
                    while let Some(n) = queue.next() {
                        ran.locked().push(n);
                        let more = if n > 0 { vec![n - 1] } else { Vec::new() };
                        queue.finish(more, |_| {});
                    }
                });
            }
        });
        let mut ran = ran.into_inner().unwrap();
        ran.sort();
        assert_eq!(ran, [0, 1, 2, 3]);
        assert_eq!(queue.into_stop(), None);

        let queue: JobQueue<u32, Option<&str>> = JobQueue::new();
        queue.add(vec![1, 2, 3]);
        let first = queue.next().unwrap();
        queue.finish(vec![9], |stop| {
            stop.get_or_insert("the root is gone");
        });
        assert_eq!(first, 3);
        assert!(queue.next().is_none(), "a stop ends the walk");
        assert_eq!(queue.into_stop(), Some("the root is gone"));
    }

    #[test]
    fn a_worker_that_panics_ends_the_walk_instead_of_leaving_the_others_waiting() {
        let queue: JobQueue<u32, Option<&str>> = JobQueue::new();
        queue.add(vec![1]);
        let walk = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            std::thread::scope(|scope| {
                for _ in 0..3 {
                    scope.spawn(|| {
                        let _worker = queue.worker();
                        while let Some(n) = queue.next() {
                            // Job 1 adds nothing and never finishes: the
                            // others would wait for it forever.
                            assert!(n != 1, "a bug in a job");
                            queue.finish(Vec::new(), |_| {});
                        }
                    });
                }
            })
        }));
        assert!(walk.is_err(), "the panic reaches whoever started the walk");
        assert!(queue.next().is_none());
    }
}
