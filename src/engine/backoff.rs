//! Exponential back-off for paths that keep failing, so one unreadable file
//! or one permission error is reported and retried later without stalling
//! the rest of the pair.
//!
//! Time is passed in, never read, so the rules are testable.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::model::{RelPath, Scope};

/// The first retry waits this long; each further failure doubles it.
pub const FIRST_DELAY: Duration = Duration::from_secs(2);
/// The longest wait between retries.
pub const MAX_DELAY: Duration = Duration::from_secs(3600);

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
        let delay = FIRST_DELAY
            .saturating_mul(1u32 << (attempts - 1).min(16))
            .min(MAX_DELAY);
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
