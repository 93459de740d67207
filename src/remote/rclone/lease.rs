//! The advisory lease of an rclone remote: `.prism-sync/lease`, holding
//! `EXPIRES DEVICE ID PID HOST` as for every remote ([`crate::remote::lease`]).
//!
//! rclone cannot create a file only if it is absent, so the lease is taken
//! by writing it and reading it back after a pause: of agents that wrote at
//! once, the last write stands and only its writer finds its own record.
//! The pause is three times as long as the read and the write took
//! (between [`MIN_SETTLE`] and [`MAX_SETTLE`], and at most a quarter of the
//! lease's time), so a rival that read "no lease" before our write landed
//! has written by then. A rival is slower than that only when its own read
//! and write took longer than our pause; an agent whose read and write took
//! longer than the longest pause a rival may use gives the lease up (the
//! rule of Fischer's mutual exclusion), so two agents hold it at once only
//! when one took more than three times as long as the other and still less
//! than that longest pause. RACE: in that case both hold it; the re-check
//! before every step still keeps each file from being overwritten unseen.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::calls::Remote;
use crate::remote::lease::{Owner, check_stale, held_by, lost_race, owner, record, taken_over};
use crate::remote::{Lease, ReplicaError};

const NAME: &str = "lease";

/// The shortest pause between writing the lease and reading it back: well
/// above a loaded machine's scheduling delays, which a rival's read and
/// write may suffer though its calls were quick.
const MIN_SETTLE: Duration = Duration::from_millis(200);

/// The longest: providers whose calls take a second or more (Drive,
/// OneDrive) still get a pause longer than a rival's read and write.
const MAX_SETTLE: Duration = Duration::from_secs(2);

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
            // None: a rival's move is between removing the record it
            // replaces and putting its own in place.
            return match lease.remote.read_text(NAME) {
                Ok(Some(current)) if !held_by(&current, &lease.owner) && !e.is_offline() => {
                    Err(lost_race())
                }
                Ok(None) if !e.is_offline() => Err(lost_race()),
                _ => Err(e),
            };
        }
        let Some(settle) = settle(started.elapsed(), ttl) else {
            // A rival may have read its own record back before ours landed
            // over it and hold the lease: ours is not to be trusted.
            return Err(lost_race());
        };
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

/// How long to wait before reading the lease back, after the read and the
/// write took `took`; `None` when they took longer than the longest wait
/// of a rival (see the module's notes). A short lease (whose record counts
/// whole seconds) is not spent waiting.
fn settle(took: Duration, ttl: Duration) -> Option<Duration> {
    let longest = MAX_SETTLE.min(ttl / 4).max(MIN_SETTLE);
    (took <= longest).then(|| (took * 3).clamp(MIN_SETTLE, longest))
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

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(600);

    #[test]
    fn the_pause_outlasts_a_slow_rivals_read_and_write_and_a_slower_agent_gives_up() {
        let ms = Duration::from_millis;
        assert_eq!(settle(ms(10), LEASE), Some(MIN_SETTLE));
        assert_eq!(settle(ms(200), LEASE), Some(ms(600)));
        // A provider whose calls take most of a second: a rival's read and
        // write of 1.7 s land within the pause.
        assert_eq!(settle(ms(750), LEASE), Some(ms(2000)));
        assert_eq!(settle(ms(1700), LEASE), Some(ms(2000)));
        // Slower than any rival waits: its write may have landed after a
        // rival read its own back.
        assert_eq!(settle(ms(2100), LEASE), None);
        // A lease of two seconds waits half a second at most.
        assert_eq!(settle(ms(400), Duration::from_secs(2)), Some(ms(500)));
        assert_eq!(settle(ms(600), Duration::from_secs(2)), None);
    }
}
