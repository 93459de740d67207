//! The lease of an S3 remote: `.prism-sync/lease`, holding the line
//! [`crate::remote::lease`] defines, created with `If-None-Match: *`,
//! renewed with `If-Match` on the ETag just read, and removed (on drop,
//! or a stale one taken over) only while it is still that version. On a
//! server that ignores conditions the lease is read back after it was
//! written, and looked at again just before it is removed, which catches
//! most races.

use std::io::Cursor;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::Seekable;
use super::client::{Condition, ConditionSupport, Metadata, S3Client};
use super::error::S3Error;
use super::replica::{delete_version, read_small};
use crate::remote::{Lease, ReplicaError, lease};
use crate::tracker::ignore::METADATA_DIR;

pub struct S3Lease {
    client: Arc<S3Client>,
    support: ConditionSupport,
    key: String,
    owner: String,
    ttl: Duration,
}

impl S3Lease {
    /// Takes the lease for `device`, over a stale one if need be.
    pub fn acquire(
        client: Arc<S3Client>,
        support: ConditionSupport,
        device: &str,
        ttl: Duration,
    ) -> Result<S3Lease, ReplicaError> {
        let held = S3Lease {
            client,
            support,
            key: format!("{METADATA_DIR}/lease"),
            owner: lease::owner(device),
            ttl,
        };
        for _ in 0..2 {
            if held.put(&Condition::Absent)? {
                if !held.support.create {
                    match held.read()? {
                        Some((text, _)) if lease::held_by(&text, &held.owner) => {}
                        _ => return Err(lease::lost_race()),
                    }
                }
                return Ok(held);
            }
            let Some((holder, etag)) = held.read()? else {
                // Released between the two requests: try again.
                continue;
            };
            // This very process's lease (its release was lost with a
            // connection) is taken back at once, as every backend does.
            if !lease::held_by(&holder, &held.owner) {
                lease::check_stale(&holder, SystemTime::now())?;
            }
            // The holder crashed or hung past its lease, or it is ours:
            // take over, unless someone renewed or took it meanwhile (the
            // ETag moved).
            match delete_version(&held.client, held.support, &held.key, &etag) {
                Ok(()) | Err(ReplicaError::Changed { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Err(lease::lost_race())
    }

    fn read(&self) -> Result<Option<(String, String)>, ReplicaError> {
        read_small(&self.client, &self.key)
    }

    /// Writes our record on `condition`; false when it does not hold.
    fn put(&self, condition: &Condition) -> Result<bool, ReplicaError> {
        let record = lease::record(&self.owner, self.ttl, SystemTime::now());
        let mut body = Seekable::new(Cursor::new(record.as_bytes()))
            .map_err(|e| ReplicaError::io("lock", &self.key, e))?;
        match self.client.put(
            &self.key,
            &mut body,
            record.len() as u64,
            condition,
            &Metadata::new(),
        ) {
            Ok(_) => Ok(true),
            Err(S3Error::PreconditionFailed { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

impl Lease for S3Lease {
    fn renew(&mut self) -> Result<(), ReplicaError> {
        let Some((_, etag)) = self
            .read()?
            .filter(|(text, _)| lease::held_by(text, &self.owner))
        else {
            return Err(lease::taken_over());
        };
        // Replaced only if it is still the version just read.
        if self.put(&Condition::Matches(etag))? {
            Ok(())
        } else {
            Err(lease::taken_over())
        }
    }
}

impl Drop for S3Lease {
    fn drop(&mut self) {
        if let Ok(Some((text, etag))) = self.read()
            && lease::held_by(&text, &self.owner)
            && let Err(e) = delete_version(&self.client, self.support, &self.key, &etag)
        {
            tracing::debug!(error = %e, "could not remove the lease; it expires by itself");
        }
    }
}
