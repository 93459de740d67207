//! The advisory lease of an rclone remote: `.prism-sync/lease`, holding
//! `EXPIRES DEVICE ID PID HOST` as for every remote ([`crate::remote::lease`]).
//!
//! rclone cannot create a file only if it is absent, so two agents that
//! both find no lease (or a stale one) must not both write theirs. They
//! settle it with claims, files that only the agents taking the lease
//! write: each puts a claim of its own under `.prism-sync/lease-claims/`
//! (a fresh name, so no claim replaces another) and then lists the
//! folder. An agent that finds no live claim but its own is alone: it
//! reads the lease again, writes its record if the lease is still free,
//! and removes its claim. One that finds a claim smaller than its own
//! (claims are ordered by their lease ids) withdraws; one that finds only
//! larger ones lists again until they are withdrawn.
//!
//! Two agents are never alone at once: each lists after its claim is
//! there, so of two that overlap, the later lister finds the earlier
//! one's claim. Among agents that claim at once the smallest waits out
//! the rest and goes on; one waiting for larger claims while the lease is
//! held by another agent gives up at once. This needs only that a listing
//! shows every file whose upload ended before it began, which the stores
//! rclone reaches give (a file system, SFTP, S3 since 2020, the cloud
//! drives' APIs). The holder renews and releases the lease under a claim
//! too (waiting for every other claim to go, as takers that find the
//! lease held withdraw): rclone replaces a file in two steps on some
//! backends (SFTP: remove, then rename), and a taker must never read the
//! record in between.
//!
//! Clocks matter only for a claim left by an agent that died while
//! holding it: it is stale once its expiry has passed (at once if its
//! process is known to be gone). A claim counts for as long as the lease
//! it is for (at least [`MIN_CLAIM_TTL`]), so agents whose clocks differ
//! by less than the lease's time (which the lease itself needs, see
//! [`crate::remote::lease::check_stale`]) never take a live claim for
//! stale; and an agent that took longer than half of that from its claim
//! to its record gives up rather than write after its claim may have been
//! taken for stale.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::calls::Remote;
use crate::remote::lease::{
    Owner, check_stale, held_by, lost_race, name_record, owner, record, record_of_name, taken_over,
};
use crate::remote::{Lease, ReplicaError};

const NAME: &str = "lease";

/// Where the claims of agents taking the lease are (below `.prism-sync/`).
const CLAIMS: &str = "lease-claims";

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

pub struct RcloneLease {
    remote: Arc<Remote>,
    owner: Owner,
    ttl: Duration,
    /// Whether the lease was taken (until then there is nothing to
    /// release).
    held: bool,
}

impl RcloneLease {
    /// Takes the lease for `device`, or [`ReplicaError::Busy`] naming the
    /// live holder.
    pub fn acquire(
        remote: Arc<Remote>,
        device: &str,
        ttl: Duration,
    ) -> Result<RcloneLease, ReplicaError> {
        let mut lease = RcloneLease {
            remote,
            owner: owner(device),
            ttl,
            held: false,
        };
        // A live lease is busy without a claim (the usual case when
        // another agent writes: one read).
        lease.check_free()?;
        let claim = Claim::enter(&lease, Wait::AsTaker)?;
        // Alone among the agents taking the lease: it is still free unless
        // one took it between the first look and our claim.
        lease.check_free()?;
        claim.check_in_time()?;
        lease.write()?;
        // Only now: an agent that finds no claim finds the record.
        drop(claim);
        lease.held = true;
        Ok(lease)
    }

    fn claim_ttl(&self) -> Duration {
        self.ttl.max(MIN_CLAIM_TTL)
    }

    /// `Ok` when there is no lease or a stale one (or our own).
    fn check_free(&self) -> Result<(), ReplicaError> {
        match self.remote.read_text(NAME)? {
            Some(current) if !held_by(&current, &self.owner) => {
                check_stale(&current, SystemTime::now())
            }
            _ => Ok(()),
        }
    }

    fn write(&self) -> Result<(), ReplicaError> {
        let content = record(&self.owner, self.ttl, SystemTime::now());
        self.remote.write_text(NAME, &content)
    }
}

/// How an agent with a claim treats the claims of others.
#[derive(Clone, Copy, PartialEq)]
enum Wait {
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
struct Claim<'a> {
    remote: &'a Remote,
    name: String,
    /// About when the claim was written (its expiry counts from then).
    written: Instant,
    ttl: Duration,
}

impl<'a> Claim<'a> {
    /// Puts a claim for `lease` and waits until it is the only live one
    /// (see the module's notes); [`ReplicaError::Busy`] when it gives up.
    fn enter(lease: &'a RcloneLease, wait: Wait) -> Result<Claim<'a>, ReplicaError> {
        let ttl = lease.claim_ttl();
        let name = name_record(&lease.owner, ttl, SystemTime::now());
        let ours = record_of_name(&name).map(|(_, id)| id);
        // Made before the upload: an upload that landed but whose answer
        // was lost is still withdrawn.
        let claim = Claim {
            remote: &lease.remote,
            name: format!("{CLAIMS}/{name}"),
            written: Instant::now(),
            ttl,
        };
        lease.remote.create_marker(&claim.name)?;
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
                lease.check_free()?;
            }
            std::thread::sleep(CLAIM_POLL + Duration::from_millis(fastrand::u64(..20)));
        }
    }

    /// [`lost_race`] when so much time passed since the claim was written
    /// that another agent may take it for stale before our next write
    /// lands.
    fn check_in_time(&self) -> Result<(), ReplicaError> {
        if self.written.elapsed() > self.ttl / 2 {
            return Err(lost_race());
        }
        Ok(())
    }

    /// The lease ids of the other agents' live claims.
    fn live_rivals(&self, ours: Option<u64>) -> Result<Vec<u64>, ReplicaError> {
        let mut rivals = Vec::new();
        for name in self.remote.list_metadata(CLAIMS)? {
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
                let _ = self.remote.delete_metadata(&format!("{CLAIMS}/{name}"));
            }
        }
        Ok(rivals)
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        // A claim whose removal fails (the connection died) is stale once
        // its process is gone or its expiry has passed.
        let _ = self.remote.delete_metadata(&self.name);
    }
}

impl Lease for RcloneLease {
    fn renew(&mut self) -> Result<(), ReplicaError> {
        let claim = Claim::enter(self, Wait::AsHolder)?;
        match self.remote.read_text(NAME)? {
            Some(current) if held_by(&current, &self.owner) => {
                claim.check_in_time()?;
                self.write()
            }
            _ => Err(taken_over()),
        }
    }
}

impl Drop for RcloneLease {
    fn drop(&mut self) {
        if !self.held {
            return;
        }
        // Under a claim where it can be had (no taker reads the record
        // while it goes); only our own: a lease taken over since stays
        // its holder's.
        let _claim = Claim::enter(self, Wait::AsHolder);
        if let Ok(Some(current)) = self.remote.read_text(NAME)
            && held_by(&current, &self.owner)
        {
            let _ = self.remote.delete_metadata(NAME);
        }
    }
}
