//! Waiting for the remote lease while another agent holds it.
//!
//! Two agents on one remote take turns: each takes the lease only to write
//! (a run that finds nothing to do never asks for it) and drops it when its
//! run ends. An agent that finds the lease held is not failing; it waits
//! and tries again, a little while in the run, then, if the holder is still
//! at it, from the pair's scheduler after a pause (see
//! [`crate::engine::backoff::LeaseBusy`]).
//!
//! Fairness: the holder must list and plan again before it can ask for the
//! lease once more, while a waiter asks more and more often the longer it
//! has waited (delays shrink from [`FIRST_DELAY`] to [`MIN_DELAY`]), so it
//! takes the lease in the first gap between the holder's runs. Each delay
//! is jittered, so two agents that started in step drift apart.
//!
//! The delay rule is pure (the jitter is passed in); [`acquire`] does the
//! asking and the sleeping.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::remote::{Lease, Replica, ReplicaError};

/// The first wait after finding the lease held: about the time another
/// agent holds it to carry one small change (a file downloaded or
/// uploaded and logged), so a change made while another device syncs is
/// on its way after one such wait, not several.
pub const FIRST_DELAY: Duration = Duration::from_millis(80);
/// The shortest wait: the pace of a waiter that has waited a while.
pub const MIN_DELAY: Duration = Duration::from_millis(40);
/// How long one run waits before it hands the wait back to the scheduler,
/// which can then serve other messages (pause, resolve) in between.
pub const RUN_WAIT: Duration = Duration::from_secs(10);

/// The wait before asking again, after `attempts` refusals in a row, with
/// `jitter` in `[0, 1)`: between half and all of a ceiling that halves
/// with each refusal, from [`FIRST_DELAY`] down to [`MIN_DELAY`].
pub fn delay(attempts: u32, jitter: f64) -> Duration {
    let ceiling = (FIRST_DELAY / (1 << attempts.saturating_sub(1).min(8))).max(MIN_DELAY);
    ceiling.mul_f64(0.5 + jitter.clamp(0.0, 1.0) / 2.0)
}

/// A lease taken, and whether another agent had to be waited for first
/// (then it probably just wrote, and what was listed before is stale).
pub struct Acquired {
    pub lease: Option<Box<dyn Lease>>,
    pub waited: bool,
}

/// Takes the lease of `remote`, waiting up to [`RUN_WAIT`] while another
/// agent holds it. `waiting` is told who holds it at each refusal, and
/// `None` once the wait is over. Returns [`ReplicaError::Busy`] if the
/// lease is still held at the end, or as soon as `cancel` is raised.
pub fn acquire(
    remote: &dyn Replica,
    device: &str,
    ttl: Duration,
    cancel: &AtomicBool,
    waiting: &dyn Fn(Option<&str>),
) -> Result<Acquired, ReplicaError> {
    let started = Instant::now();
    let mut attempts = 0;
    let result = loop {
        match remote.lease(device, ttl) {
            Ok(lease) => {
                break Ok(Acquired {
                    lease,
                    waited: attempts > 0,
                });
            }
            Err(ReplicaError::Busy(holder)) => {
                attempts += 1;
                let pause = delay(attempts, fastrand::f64());
                if cancel.load(Ordering::Relaxed) || started.elapsed() + pause > RUN_WAIT {
                    break Err(ReplicaError::Busy(holder));
                }
                if attempts == 1 {
                    tracing::debug!(remote = %remote.describe(), %holder, "waiting for the lease");
                }
                waiting(Some(&holder));
                std::thread::sleep(pause);
            }
            Err(other) => break Err(other),
        }
    };
    if attempts > 0 {
        waiting(None);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::LocalFolder;

    #[test]
    fn delays_shrink_with_each_refusal_and_are_jittered() {
        assert_eq!(delay(1, 0.0), FIRST_DELAY / 2);
        assert_eq!(
            delay(1, 0.999_999_9).as_millis(),
            FIRST_DELAY.as_millis() - 1
        );
        assert_eq!(delay(2, 1.0), (FIRST_DELAY / 2).max(MIN_DELAY));
        assert_eq!(delay(3, 1.0), (FIRST_DELAY / 4).max(MIN_DELAY));
        assert!(delay(2, 1.0) <= delay(1, 1.0));
        for attempts in 4..100 {
            assert_eq!(delay(attempts, 1.0), MIN_DELAY, "{attempts}");
            assert_eq!(delay(attempts, 0.0), MIN_DELAY / 2, "{attempts}");
        }
    }

    #[test]
    fn a_lease_held_for_a_moment_is_waited_for_and_then_taken() {
        let dir = tempfile::tempdir().unwrap();
        let remote = LocalFolder::remote(dir.path().to_owned());
        let theirs = remote.lease("other", Duration::from_secs(60)).unwrap();
        let cancel = AtomicBool::new(false);
        let told = std::sync::Mutex::new(Vec::<Option<String>>::new());
        let acquired = std::thread::scope(|s| {
            s.spawn(move || {
                std::thread::sleep(Duration::from_millis(300));
                drop(theirs);
            });
            acquire(
                &remote,
                "mine",
                Duration::from_secs(60),
                &cancel,
                &|holder: Option<&str>| {
                    crate::locks::LockExt::locked(&told).push(holder.map(str::to_owned))
                },
            )
        })
        .expect("the lease once the other agent let go");
        assert!(acquired.waited);
        assert!(acquired.lease.is_some());
        let told = told.into_inner().unwrap();
        assert!(
            told.first()
                .cloned()
                .flatten()
                .is_some_and(|h| h.contains("other")),
            "{told:?}"
        );
        assert_eq!(told.last(), Some(&None), "the wait is over");
    }

    #[test]
    fn a_waiter_gets_a_turn_against_a_holder_that_keeps_coming_back() {
        let dir = tempfile::tempdir().unwrap();
        let remote = LocalFolder::remote(dir.path().to_owned());
        let cancel = AtomicBool::new(false);
        let done = AtomicBool::new(false);
        let acquired = std::thread::scope(|s| {
            // A greedy holder: it writes for 50 ms, lets go only for the
            // few milliseconds a listing takes, and asks again at once.
            s.spawn(|| {
                while !done.load(Ordering::Relaxed) {
                    match remote.lease("greedy", Duration::from_secs(60)) {
                        Ok(lease) => {
                            std::thread::sleep(Duration::from_millis(50));
                            drop(lease);
                            std::thread::sleep(Duration::from_millis(3));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(1)),
                    }
                }
            });
            std::thread::sleep(Duration::from_millis(20));
            let acquired = acquire(
                &remote,
                "patient",
                Duration::from_secs(60),
                &cancel,
                &|_| {},
            );
            done.store(true, Ordering::Relaxed);
            acquired
        });
        let acquired = acquired.expect("the waiter's turn came within one run's wait");
        assert!(acquired.waited, "the holder had it first");
    }

    #[test]
    fn a_cancelled_wait_gives_up_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let remote = LocalFolder::remote(dir.path().to_owned());
        let _theirs = remote.lease("other", Duration::from_secs(60)).unwrap();
        let cancel = AtomicBool::new(true);
        let started = Instant::now();
        let error = acquire(&remote, "mine", Duration::from_secs(60), &cancel, &|_| {})
            .err()
            .expect("still busy");
        assert!(matches!(error, ReplicaError::Busy(_)), "{error}");
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
