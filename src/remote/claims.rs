//! Claims: how agents take turns at the lease record on a store that
//! cannot create a file only if it is absent, or whose conditional create
//! checks and writes in two steps (rclone has none; Apache's mod_dav
//! checks `If-None-Match: *` and then writes, so agents creating the
//! record at once can all be told yes).
//!
//! Each agent that finds the lease free puts a claim of its own in
//! `.prism-sync/lease-claims/` (a fresh name, so no claim replaces
//! another) and then lists the folder. An agent that finds no live claim
//! but its own is alone: it reads the lease again, writes its record if the
//! lease is still free, and withdraws its claim. One that finds a claim
//! smaller than its own (claims are ordered by their lease ids) withdraws;
//! one that finds only larger ones lists again until they are withdrawn,
//! and gives up at once if the lease turns out held.
//!
//! Two agents are never alone at once: each lists after its claim is
//! there, so of two that overlap, the later lister finds the earlier
//! one's claim. Among agents that claim at once the smallest waits out
//! the rest and goes on. This needs only that a listing shows every file
//! whose write ended before it began, which the stores Prism Sync reaches
//! give (a file system, SFTP, WebDAV, S3 since 2020, the cloud drives'
//! APIs). The holder renews and releases the lease under a claim too
//! (waiting for every other claim to go: takers that find the lease held
//! withdraw), since some stores replace a file in two steps (rclone's move
//! on SFTP: remove, then rename) and a taker must never read the record in
//! between.
//!
//! Clocks matter only for a claim left by an agent that died while
//! holding it: it is stale once its expiry has passed (at once if its
//! process is known to be gone). A claim counts for as long as the lease
//! it is for (at least [`MIN_CLAIM_TTL`]), so agents whose clocks differ by
//! less than the lease's time (which the lease itself needs, see
//! [`super::lease::check_stale`]) never take a live claim for stale; and an
//! agent that took longer than half of that from its claim to its record
//! gives up rather than write after its claim may have been taken for
//! stale.

use std::time::{Duration, Instant, SystemTime};

use super::ReplicaError;
use super::lease::{Owner, check_stale, lost_race, name_record, record_of_name};

/// Where the claims are, below `.prism-sync/`.
pub const CLAIMS_DIR: &str = "lease-claims";

/// The shortest time a claim counts (a claim counts as long as its lease):
/// far longer than taking the lease takes, so a claim is stale only when
/// its agent died while holding it.
const MIN_CLAIM_TTL: Duration = Duration::from_secs(60);

/// How long an agent waits for other claims to be withdrawn before it
/// says the lease is busy: their agents withdraw as soon as they list the
/// folder and find a smaller claim or read a live lease (one or two of
/// their calls).
const CLAIM_WAIT: Duration = Duration::from_secs(10);

/// The pause between two listings of the claims while waiting.
const CLAIM_POLL: Duration = Duration::from_millis(40);

/// The claims folder as a store keeps it. Names are bare file names in
/// [`CLAIMS_DIR`].
pub(crate) trait ClaimFolder {
    /// Creates the file `name`, empty (its name is all it says), making the
    /// folder where it is missing.
    fn put(&self, name: &str) -> Result<(), ReplicaError>;

    /// The names of the files in the folder; none when it is not there.
    fn names(&self) -> Result<Vec<String>, ReplicaError>;

    /// Removes the file `name`; a failure is left for its expiry.
    fn remove(&self, name: &str);
}

/// How an agent with a claim treats the claims of others.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Wait {
    /// Taking the lease: a smaller claim, or the lease held by another
    /// agent, is [`lost_race`]; larger claims are waited out.
    AsTaker,
    /// Renewing or releasing it: every other claim is waited out (their
    /// agents find the lease held and withdraw).
    AsHolder,
}

/// An agent's claim while it takes, renews or releases the lease;
/// withdrawn when dropped.
///
/// A claim's name says whose it is and until when it counts
/// ([`name_record`]): its content is never read, since a read of a file
/// its agent is removing at that moment can break off midway.
pub(crate) struct Claim<'a> {
    folder: &'a dyn ClaimFolder,
    name: String,
    /// About when the claim was written (its expiry counts from then).
    written: Instant,
    ttl: Duration,
}

impl<'a> Claim<'a> {
    /// Puts a claim for `owner`'s lease of `lease_ttl` and waits until it
    /// is the only live one (see the module's notes);
    /// [`ReplicaError::Busy`] when it gives up. `lease_is_free` reads the
    /// lease: `Ok` when there is none, a stale one or our own, else
    /// [`ReplicaError::Busy`] naming the holder.
    pub fn enter(
        folder: &'a dyn ClaimFolder,
        owner: &Owner,
        lease_ttl: Duration,
        wait: Wait,
        lease_is_free: &dyn Fn() -> Result<(), ReplicaError>,
    ) -> Result<Claim<'a>, ReplicaError> {
        let ttl = lease_ttl.max(MIN_CLAIM_TTL);
        let name = name_record(owner, ttl, SystemTime::now());
        let ours = record_of_name(&name).map(|(_, id)| id);
        // Made before the write: one that landed but whose answer was lost
        // is still withdrawn.
        let claim = Claim {
            folder,
            name,
            written: Instant::now(),
            ttl,
        };
        folder.put(&claim.name)?;
        let deadline = Instant::now() + CLAIM_WAIT;
        loop {
            let rivals = claim.live_rivals(ours)?;
            if rivals.is_empty() {
                return Ok(claim);
            }
            if Instant::now() > deadline {
                return Err(lost_race());
            }
            if wait == Wait::AsTaker {
                if rivals.iter().any(|&rival| Some(rival) < ours) {
                    return Err(lost_race());
                }
                // Larger claims may be the holder's, renewing: it waits
                // for ours to go.
                lease_is_free()?;
            }
            std::thread::sleep(CLAIM_POLL + Duration::from_millis(fastrand::u64(..20)));
        }
    }

    /// [`lost_race`] when so much time passed since the claim was written
    /// that another agent may take it for stale before our next write
    /// lands.
    pub fn check_in_time(&self) -> Result<(), ReplicaError> {
        if self.written.elapsed() > self.ttl / 2 {
            return Err(lost_race());
        }
        Ok(())
    }

    /// The lease ids of the other agents' live claims.
    fn live_rivals(&self, ours: Option<u64>) -> Result<Vec<u64>, ReplicaError> {
        let mut rivals = Vec::new();
        for name in self.folder.names()? {
            let Some((record, id)) = record_of_name(&name) else {
                // Not a claim (an upload on its way).
                continue;
            };
            if Some(id) == ours {
                continue;
            }
            if check_stale(&record, SystemTime::now()).is_err() {
                rivals.push(id);
            } else {
                // Left by an agent that died holding it.
                self.folder.remove(&name);
            }
        }
        Ok(rivals)
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        // A claim whose removal fails (the connection died) is stale once
        // its process is gone or its expiry has passed.
        self.folder.remove(&self.name);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Barrier, Mutex};

    use super::*;
    use crate::locks::LockExt;
    use crate::remote::lease::owner;

    /// A folder whose listing shows every file whose write has ended.
    #[derive(Default)]
    struct Memory(Mutex<BTreeSet<String>>);

    impl ClaimFolder for Memory {
        fn put(&self, name: &str) -> Result<(), ReplicaError> {
            self.0.locked().insert(name.to_owned());
            Ok(())
        }

        fn names(&self) -> Result<Vec<String>, ReplicaError> {
            Ok(self.0.locked().iter().cloned().collect())
        }

        fn remove(&self, name: &str) {
            self.0.locked().remove(name);
        }
    }

    const LEASE: Duration = Duration::from_secs(60);

    #[test]
    fn of_agents_claiming_at_once_one_is_alone_at_a_time_and_one_goes_on() {
        let folder = Memory::default();
        let inside = AtomicUsize::new(0);
        for _ in 0..20 {
            let start = Barrier::new(6);
            let entered = AtomicUsize::new(0);
            std::thread::scope(|scope| {
                for _ in 0..6 {
                    scope.spawn(|| {
                        let me = owner("laptop");
                        start.wait();
                        if let Ok(claim) =
                            Claim::enter(&folder, &me, LEASE, Wait::AsTaker, &|| Ok(()))
                        {
                            assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "two alone");
                            entered.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(Duration::from_millis(2));
                            inside.fetch_sub(1, Ordering::SeqCst);
                            drop(claim);
                        }
                    });
                }
            });
            assert!(entered.load(Ordering::SeqCst) >= 1, "someone goes on");
            assert!(folder.0.locked().is_empty(), "every claim withdrawn");
        }
    }

    #[test]
    fn a_taker_gives_up_at_once_when_the_lease_is_held_and_a_holder_waits_its_turn() {
        let folder = Memory::default();
        let (holder, taker) = (owner("holder"), owner("taker"));
        // A taker that finds only a larger claim (maybe the holder's,
        // renewing) reads the lease and, finding it held, withdraws at
        // once rather than wait.
        let claim_of = |who: &Owner| name_record(who, LEASE, SystemTime::now());
        let (h, t) = (claim_of(&holder), claim_of(&taker));
        let id = |name: &str| record_of_name(name).unwrap().1;
        let (larger, smaller) = if id(&h) > id(&t) {
            (&holder, &taker)
        } else {
            (&taker, &holder)
        };
        folder.put(&claim_of(larger)).unwrap();
        let busy = || Err(ReplicaError::Busy("held".into()));
        let started = Instant::now();
        assert!(matches!(
            Claim::enter(&folder, smaller, LEASE, Wait::AsTaker, &busy),
            Err(ReplicaError::Busy(message)) if message == "held"
        ));
        assert!(started.elapsed() < CLAIM_WAIT / 2);
        // A claim left by an agent that is gone (this process, a lease no
        // longer held) is stale and removed.
        let gone = owner("gone");
        let stale = claim_of(&gone);
        drop(gone);
        folder.0.locked().clear();
        folder.put(&stale).unwrap();
        let claim = Claim::enter(&folder, &holder, LEASE, Wait::AsHolder, &|| Ok(())).unwrap();
        assert_eq!(folder.names().unwrap().len(), 1, "only ours is left");
        drop(claim);
        assert!(folder.names().unwrap().is_empty());
    }
}
