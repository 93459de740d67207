//! Exponential back-off for paths that keep failing, so one unreadable file
//! or one permission error is reported and retried later without stalling
//! the rest of the pair.
//!
//! It also holds the pair-wide rules for an unreachable remote
//! ([`Offline`]): the scheduler retries the whole pair after 2 s, doubling
//! up to 5 min, until a run gets through; and for a remote whose lease
//! another agent keeps ([`LeaseBusy`]): a pause of about 1 s, doubling up
//! to 30 s.
//!
//! Time is passed in, never read, so the rules are testable.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::model::{RelPath, Scope};

/// The first retry waits this long; each further failure doubles it.
pub const FIRST_DELAY: Duration = Duration::from_secs(2);
/// The longest wait between retries.
pub const MAX_DELAY: Duration = Duration::from_secs(3600);

/// The first retry of an unreachable remote waits this long.
pub const OFFLINE_FIRST_DELAY: Duration = Duration::from_secs(2);
/// The longest wait between retries of an unreachable remote: short
/// enough that a server back from a reboot is noticed within minutes.
pub const OFFLINE_MAX_DELAY: Duration = Duration::from_secs(300);

/// How long to wait after `failures` consecutive failures, starting at
/// `first` and doubling up to `max`.
fn doubling(first: Duration, max: Duration, failures: u32) -> Duration {
    first
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(max)
}

/// A pair whose remote cannot be reached: how many runs in a row failed
/// that way and when to try again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offline {
    pub failures: u32,
    pub retry_at: Instant,
}

impl Offline {
    /// The state after one more unreachable run at `now`, following
    /// `previous` (`None`: the pair was online until now).
    pub fn after(previous: Option<Offline>, now: Instant) -> Offline {
        let failures = previous.map_or(1, |o| o.failures.saturating_add(1));
        Offline {
            failures,
            retry_at: now + doubling(OFFLINE_FIRST_DELAY, OFFLINE_MAX_DELAY, failures),
        }
    }

    /// The wait until the retry, as shown in status.
    pub fn delay_from(&self, now: Instant) -> Duration {
        self.retry_at.saturating_duration_since(now)
    }
}

/// The first pause of a pair whose run gave up waiting for another
/// agent's lease (see `engine::lease_wait`); it doubles while the same
/// wait goes on, so an agent does not keep asking through another's hour-long
/// upload.
pub const BUSY_FIRST_DELAY: Duration = Duration::from_secs(1);
/// The longest such pause.
pub const BUSY_MAX_DELAY: Duration = Duration::from_secs(30);

/// A pair waiting for another agent to release the remote's lease: not a
/// failure, only a pause before the next try.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseBusy {
    /// Runs in a row that gave up waiting.
    pub waits: u32,
    pub retry_at: Instant,
}

impl LeaseBusy {
    /// The state after one more run gave up at `now`, following `previous`;
    /// `jitter` in `[0, 1)` spreads the pause over 75–125 % of its length,
    /// so two agents that keep meeting fall out of step.
    pub fn after(previous: Option<LeaseBusy>, now: Instant, jitter: f64) -> LeaseBusy {
        let waits = previous.map_or(1, |b| b.waits.saturating_add(1));
        let pause = doubling(BUSY_FIRST_DELAY, BUSY_MAX_DELAY, waits)
            .mul_f64(0.75 + jitter.clamp(0.0, 1.0) / 2.0);
        LeaseBusy {
            waits,
            retry_at: now + pause,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Failure {
    pub attempts: u32,
    pub retry_at: Instant,
    pub error: String,
}

/// The failing paths of one pair.
#[derive(Debug, Default)]
pub struct Backoff {
    failures: BTreeMap<RelPath, Failure>,
}

impl Backoff {
    /// Records a failure of `path`; returns when to retry it.
    pub fn fail(&mut self, path: &RelPath, error: String, now: Instant) -> Instant {
        let attempts = self.failures.get(path).map_or(1, |f| f.attempts + 1);
        let delay = doubling(FIRST_DELAY, MAX_DELAY, attempts);
        let retry_at = now + delay;
        self.failures.insert(
            path.clone(),
            Failure {
                attempts,
                retry_at,
                error,
            },
        );
        retry_at
    }

    /// Forgets a path that worked.
    pub fn succeed(&mut self, path: &RelPath) {
        self.failures.remove(path);
    }

    /// Forgets the failures a run looked at again without failing: paths
    /// in `scope` whose retry time had come by `looked_at` and that are not
    /// in `failed`. (A path whose problem went away by itself, say a file
    /// deleted after its upload failed, has no action to succeed with.)
    pub fn settle(&mut self, scope: &Scope, looked_at: Instant, failed: &BTreeSet<RelPath>) {
        self.failures.retain(|path, failure| {
            failure.retry_at > looked_at || !scope.contains(path) || failed.contains(path)
        });
    }

    /// Paths still waiting for their retry time: a sync leaves them alone.
    pub fn waiting(&self, now: Instant) -> Vec<RelPath> {
        self.failures
            .iter()
            .filter(|(_, f)| f.retry_at > now)
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// The earliest retry, for the scheduler.
    pub fn next_retry(&self) -> Option<Instant> {
        self.failures.values().map(|f| f.retry_at).min()
    }

    pub fn failures(&self) -> impl Iterator<Item = (&RelPath, &Failure)> {
        self.failures.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.failures.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_success_forgets() {
        let mut backoff = Backoff::default();
        let path = RelPath::new("locked.db").unwrap();
        let now = Instant::now();
        assert_eq!(backoff.fail(&path, "denied".into(), now), now + FIRST_DELAY);
        assert_eq!(
            backoff.fail(&path, "denied".into(), now),
            now + FIRST_DELAY * 2
        );
        assert_eq!(
            backoff.fail(&path, "denied".into(), now),
            now + FIRST_DELAY * 4
        );
        for _ in 0..30 {
            backoff.fail(&path, "denied".into(), now);
        }
        assert_eq!(backoff.next_retry(), Some(now + MAX_DELAY));
        assert_eq!(backoff.waiting(now), std::slice::from_ref(&path));
        assert!(backoff.waiting(now + MAX_DELAY).is_empty());
        backoff.succeed(&path);
        assert!(backoff.is_empty());
    }

    #[test]
    fn an_offline_pair_retries_after_2_s_doubling_up_to_5_min() {
        let now = Instant::now();
        let mut offline = Offline::after(None, now);
        let mut delays = vec![offline.delay_from(now)];
        for _ in 0..40 {
            offline = Offline::after(Some(offline), now);
            delays.push(offline.delay_from(now));
        }
        let secs: Vec<u64> = delays.iter().map(Duration::as_secs).collect();
        assert_eq!(secs[..10], [2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert!(secs.iter().all(|&s| s <= 300));
        assert_eq!(*secs.last().unwrap(), 300);
        assert_eq!(offline.failures, 41);
        assert_eq!(
            offline.delay_from(now + OFFLINE_MAX_DELAY * 2),
            Duration::ZERO
        );
    }

    #[test]
    fn a_pair_waiting_for_a_lease_pauses_1_s_doubling_to_30_s_with_jitter() {
        let now = Instant::now();
        let mut busy = LeaseBusy::after(None, now, 0.5);
        assert_eq!(busy.retry_at, now + BUSY_FIRST_DELAY);
        let mut pauses = Vec::new();
        for _ in 0..10 {
            busy = LeaseBusy::after(Some(busy), now, 0.5);
            pauses.push(busy.retry_at.duration_since(now).as_secs());
        }
        assert_eq!(pauses, [2, 4, 8, 16, 30, 30, 30, 30, 30, 30]);
        let early = LeaseBusy::after(None, now, 0.0).retry_at;
        let late = LeaseBusy::after(None, now, 0.999).retry_at;
        assert_eq!(early, now + BUSY_FIRST_DELAY.mul_f64(0.75));
        assert!(late > now + BUSY_FIRST_DELAY.mul_f64(1.24));
    }

    #[test]
    fn a_run_that_looked_again_and_did_not_fail_settles_the_path() {
        let mut backoff = Backoff::default();
        let gone = RelPath::new("deleted-after-failing.txt").unwrap();
        let still = RelPath::new("still-failing.txt").unwrap();
        let elsewhere = RelPath::new("other/x").unwrap();
        let now = Instant::now();
        for path in [&gone, &still, &elsewhere] {
            backoff.fail(path, "denied".into(), now);
        }
        let later = now + MAX_DELAY;
        let scope = Scope::Paths(vec![gone.clone(), still.clone()]);
        backoff.settle(&scope, later, &BTreeSet::from([still.clone()]));
        let left: Vec<_> = backoff.failures().map(|(p, _)| p.clone()).collect();
        assert_eq!(left, [elsewhere.clone(), still.clone()]);
        // Not yet due: the run did not look at it, so it is kept.
        backoff.settle(&Scope::Full, now, &BTreeSet::new());
        assert_eq!(backoff.failures().count(), 2);
    }
}
