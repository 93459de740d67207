//! The advisory lease of an rclone remote: `.prism-sync/lease`, holding
//! `EXPIRES DEVICE ID PID HOST` as for every remote ([`crate::remote::lease`]).
//!
//! rclone cannot create a file only if it is absent, so agents take
//! turns at the record with claims ([`crate::remote::claims`]): the record
//! is written, renewed and removed only by an agent whose claim is the
//! only live one.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::calls::Remote;
use crate::remote::claims::{CLAIMS_DIR, Claim, ClaimFolder, Wait};
use crate::remote::lease::{Owner, check_stale, held_by, owner, record, taken_over};
use crate::remote::{Lease, ReplicaError};

const NAME: &str = "lease";

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
        let claims = Claims(&lease.remote);
        let claim = lease.claim(&claims, Wait::AsTaker)?;
        // Alone among the agents taking the lease: it is still free unless
        // one took it between the first look and our claim.
        lease.check_free()?;
        claim.check_in_time()?;
        // From here a record of ours may be there even when the answer is
        // lost: dropping the lease removes it (only if it is ours).
        lease.held = true;
        lease.write(&claim)?;
        // Only now: an agent that finds no claim finds the record.
        drop(claim);
        Ok(lease)
    }

    fn claim<'a>(&self, claims: &'a Claims<'_>, wait: Wait) -> Result<Claim<'a>, ReplicaError> {
        let seen = &claims.0.claims_seen;
        Claim::enter(claims, seen, &self.owner, self.ttl, wait, &|| {
            self.check_free()
        })
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

    /// Writes our record under `claim`: staged, then moved in only if the
    /// claim is still in time.
    fn write(&self, claim: &Claim<'_>) -> Result<(), ReplicaError> {
        let content = record(&self.owner, self.ttl, SystemTime::now());
        self.remote
            .write_text_in_time(NAME, &content, &|| claim.check_in_time())
    }
}

/// The claims folder through the rcd.
struct Claims<'a>(&'a Remote);

impl ClaimFolder for Claims<'_> {
    /// Uploaded under its name directly (no staged move): a fresh name,
    /// whose presence is all it says.
    fn put(&self, name: &str) -> Result<(), ReplicaError> {
        self.0.create_marker(&format!("{CLAIMS_DIR}/{name}"))
    }

    fn names(&self) -> Result<Vec<String>, ReplicaError> {
        self.0.list_metadata(CLAIMS_DIR)
    }

    fn remove(&self, name: &str) {
        let _ = self.0.delete_metadata(&format!("{CLAIMS_DIR}/{name}"));
    }
}

impl Lease for RcloneLease {
    fn renew(&mut self) -> Result<(), ReplicaError> {
        let claims = Claims(&self.remote);
        let claim = self.claim(&claims, Wait::AsHolder)?;
        match self.remote.read_text(NAME)? {
            Some(current) if held_by(&current, &self.owner) => {
                claim.check_in_time()?;
                self.write(&claim)
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
        // Only under a claim still in time, and only our own: a lease
        // taken over since stays its holder's. Without one (the claims
        // could not be had, or the read took too long), an agent may have
        // taken our expired record over between our read and our delete:
        // the record is left to expire instead (at once for agents on this
        // host, whose check sees this lease dropped).
        let claims = Claims(&self.remote);
        let Ok(claim) = self.claim(&claims, Wait::Releasing) else {
            return;
        };
        if let Ok(Some(current)) = self.remote.read_text(NAME)
            && held_by(&current, &self.owner)
            && claim.check_in_time().is_ok()
        {
            let _ = self.remote.delete_metadata(NAME);
        }
    }
}
