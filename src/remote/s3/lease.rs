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
    owner: lease::Owner,
    ttl: Duration,
}

impl S3Lease {
    /// Takes the lease for `device` by the rule every backend shares
    /// ([`lease::acquire`]): over a stale one, or one this very process
    /// left behind.
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
        lease::acquire(&held, SystemTime::now())?;
        Ok(held)
    }

    fn read_record(&self) -> Result<Option<(String, String)>, ReplicaError> {
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

impl lease::LeaseFile for S3Lease {
    fn create(&self) -> Result<bool, ReplicaError> {
        if !self.put(&Condition::Absent)? {
            return Ok(false);
        }
        // A server that ignores the condition let every creator through:
        // only the one whose record stayed holds the lease.
        if !self.support.create {
            match self.read_record()? {
                Some((text, _)) if lease::held_by(&text, &self.owner) => {}
                _ => return Err(lease::lost_race()),
            }
        }
        Ok(true)
    }

    fn read(&self) -> Result<Option<(String, Option<String>)>, ReplicaError> {
        Ok(self.read_record()?.map(|(text, etag)| (text, Some(etag))))
    }

    /// Removed only while it is still the version read (someone may have
    /// renewed or taken it meanwhile).
    fn remove(&self, version: Option<&str>) {
        let Some(etag) = version else {
            return;
        };
        match delete_version(&self.client, self.support, &self.key, etag) {
            Ok(()) | Err(ReplicaError::Changed { .. }) => {}
            Err(e) => tracing::debug!(error = %e, "could not remove a stale lease"),
        }
    }
}

impl Lease for S3Lease {
    fn renew(&mut self) -> Result<(), ReplicaError> {
        let Some((_, etag)) = self
            .read_record()?
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
        if let Ok(Some((text, etag))) = self.read_record()
            && lease::held_by(&text, &self.owner)
            && let Err(e) = delete_version(&self.client, self.support, &self.key, &etag)
        {
            tracing::debug!(error = %e, "could not remove the lease; it expires by itself");
        }
    }
}
