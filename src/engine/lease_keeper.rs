//! Keeps a run's remote lease alive for as long as the run lasts.
//!
//! A round can take far longer than the lease's time to live (the first
//! upload of a large folder over a slow link), so renewing once per round is
//! not enough: another agent would take the lease over as stale and both
//! would write at once. A small thread renews it every third of its time to
//! live instead. If a renewal fails the lease can no longer be trusted; the
//! keeper raises a flag that stops the run at its next step, and the run
//! reports the renewal's error.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::remote::{Lease, ReplicaError};

/// Renews a lease in the background; dropping the keeper stops the
/// renewals and releases the lease.
pub struct LeaseKeeper {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<Option<ReplicaError>>>,
    lost: Arc<AtomicBool>,
}

impl LeaseKeeper {
    /// Starts renewing `lease` every `interval`. Without a lease (a replica
    /// that needs none) the keeper only carries a flag that never rises.
    pub fn start(lease: Option<Box<dyn Lease>>, interval: Duration) -> LeaseKeeper {
        let lost = Arc::new(AtomicBool::new(false));
        let Some(mut lease) = lease else {
            return LeaseKeeper {
                stop: None,
                thread: None,
                lost,
            };
        };
        let (stop, stopped) = mpsc::channel::<()>();
        let flag = Arc::clone(&lost);
        let thread = std::thread::Builder::new()
            .name("lease-keeper".to_owned())
            .spawn(move || {
                // A message or a hang-up both mean the run is over; only a
                // timeout means it is time to renew.
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
                    if let Err(error) = lease.renew() {
                        flag.store(true, Ordering::Relaxed);
                        return Some(error);
                    }
                }
                None
            })
            .expect("spawn the lease keeper thread");
        LeaseKeeper {
            stop: Some(stop),
            thread: Some(thread),
            lost,
        }
    }

    /// The flag the run's steps check: raised once the lease is lost.
    pub fn lost_flag(&self) -> &AtomicBool {
        &self.lost
    }

    /// The error that lost the lease, if it was lost. Stops the renewals.
    pub fn failure(&mut self) -> Option<ReplicaError> {
        if !self.lost.load(Ordering::Relaxed) {
            return None;
        }
        self.stop.take();
        self.thread.take().and_then(|t| t.join().ok().flatten())
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        // Hanging up wakes the thread at once; joining it makes sure the
        // lease (released by its own Drop) is gone before the run returns.
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::locks::LockExt;
    use std::sync::Mutex;

    /// Counts renewals and fails from the `fail_from`th one on.
    struct CountingLease {
        renewals: Arc<Mutex<u32>>,
        fail_from: u32,
        released: Arc<AtomicBool>,
    }

    impl Lease for CountingLease {
        fn renew(&mut self) -> Result<(), ReplicaError> {
            let mut n = self.renewals.locked();
            *n += 1;
            if *n >= self.fail_from {
                return Err(ReplicaError::Other("the lease file is gone".into()));
            }
            Ok(())
        }
    }

    impl Drop for CountingLease {
        fn drop(&mut self) {
            self.released.store(true, Ordering::Relaxed);
        }
    }

    fn lease(fail_from: u32) -> (Box<dyn Lease>, Arc<Mutex<u32>>, Arc<AtomicBool>) {
        let renewals = Arc::new(Mutex::new(0));
        let released = Arc::new(AtomicBool::new(false));
        let lease = CountingLease {
            renewals: Arc::clone(&renewals),
            fail_from,
            released: Arc::clone(&released),
        };
        (Box::new(lease), renewals, released)
    }

    #[test]
    fn renews_while_the_run_lasts_and_releases_when_dropped() {
        let (lease, renewals, released) = lease(u32::MAX);
        let mut keeper = LeaseKeeper::start(Some(lease), Duration::from_millis(10));
        std::thread::sleep(Duration::from_millis(200));
        assert!(*renewals.locked() >= 3, "renewed in the background");
        assert!(keeper.failure().is_none());
        assert!(!released.load(Ordering::Relaxed));
        drop(keeper);
        assert!(released.load(Ordering::Relaxed), "dropping releases");
    }

    #[test]
    fn a_failed_renewal_raises_the_flag_and_keeps_the_error() {
        let (lease, renewals, _) = lease(2);
        let mut keeper = LeaseKeeper::start(Some(lease), Duration::from_millis(5));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !keeper.lost_flag().load(Ordering::Relaxed) {
            assert!(std::time::Instant::now() < deadline, "the flag never rose");
            std::thread::sleep(Duration::from_millis(5));
        }
        let error = keeper.failure().expect("the renewal's error");
        assert!(error.to_string().contains("lease file is gone"), "{error}");
        assert_eq!(*renewals.locked(), 2, "no renewal after the failure");
    }

    #[test]
    fn without_a_lease_nothing_is_ever_lost() {
        let mut keeper = LeaseKeeper::start(None, Duration::from_millis(1));
        std::thread::sleep(Duration::from_millis(20));
        assert!(!keeper.lost_flag().load(Ordering::Relaxed));
        assert!(keeper.failure().is_none());
    }
}
