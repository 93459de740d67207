//! The advisory lease of an rclone remote: `.prism-sync/lease`, holding
//! `EXPIRES DEVICE ID PID HOST` as for every remote ([`crate::remote::lease`]).
//!
//! rclone cannot create a file only if it is absent, so the lease is taken
//! by writing it and reading it back after a pause: of agents that wrote at
//! once, the last write stands and only its writer finds its own record.
//! The pause is three times as long as the read and the write took (between [`MIN_SETTLE`]
//! and [`MAX_SETTLE`]), so a rival that read "no lease" before our write landed
//! has written by then. RACE: a rival whose read and write are further
//! apart than that can hold it at the same time; the re-check before every
//! step still keeps each file from being overwritten unseen.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::calls::Remote;
use crate::remote::lease::{Owner, check_stale, held_by, lost_race, owner, record, taken_over};
use crate::remote::{Lease, ReplicaError};

const NAME: &str = "lease";

/// The shortest pause between writing the lease and reading it back.
const MIN_SETTLE: Duration = Duration::from_millis(100);

/// The longest: well within the shortest lease, whose record counts
/// whole seconds.
const MAX_SETTLE: Duration = Duration::from_millis(700);

pub struct RcloneLease {
    remote: Arc<Remote>,
    owner: Owner,
    ttl: Duration,
}

impl RcloneLease {
    /// Takes the lease for `device`, or [`ReplicaError::Busy`] naming the
    /// live holder.
    pub fn acquire(
        remote: Arc<Remote>,
        device: &str,
        ttl: Duration,
    ) -> Result<RcloneLease, ReplicaError> {
        let lease = RcloneLease {
            remote,
            owner: owner(device),
            ttl,
        };
        let started = Instant::now();
        if let Some(current) = lease.remote.read_text(NAME)? {
            check_stale(&current, SystemTime::now())?;
        }
        if let Err(e) = lease.write() {
            // A rival's write of the same record at the same moment can
            // make ours fail (its move replaced what ours was replacing).
            return match lease.remote.read_text(NAME) {
                Ok(Some(current)) if !held_by(&current, &lease.owner) && !e.is_offline() => {
                    Err(lost_race())
                }
                _ => Err(e),
            };
        }
        let settle = (started.elapsed() * 3).clamp(MIN_SETTLE, MAX_SETTLE);
        std::thread::sleep(settle);
        match lease.remote.read_text(NAME)? {
            Some(current) if held_by(&current, &lease.owner) => Ok(lease),
            _ => Err(lost_race()),
        }
    }

    fn write(&self) -> Result<(), ReplicaError> {
        let content = record(&self.owner, self.ttl, SystemTime::now());
        self.remote.write_text(NAME, &content)
    }
}

impl Lease for RcloneLease {
    fn renew(&mut self) -> Result<(), ReplicaError> {
        match self.remote.read_text(NAME)? {
            Some(current) if held_by(&current, &self.owner) => self.write(),
            _ => Err(taken_over()),
        }
    }
}

impl Drop for RcloneLease {
    fn drop(&mut self) {
        // Only our own: a lease taken over since stays its holder's.
        if let Ok(Some(current)) = self.remote.read_text(NAME)
            && held_by(&current, &self.owner)
        {
            let _ = self
                .remote
                .delete_file(&format!("{}/{NAME}", crate::tracker::ignore::METADATA_DIR));
        }
    }
}
