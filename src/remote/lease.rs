//! The lease record every backend writes to `.prism-sync/lease`: one line,
//! `EXPIRES DEVICE PID HOST`, and the rules for reading another agent's.
//!
//! How the file is created exclusively, renewed and removed is each
//! backend's business (an `O_EXCL` create, an SFTP exclusive open, a WebDAV
//! `If-None-Match: *` PUT); what a lease says and when it is stale is
//! decided here, once.

use std::io;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::ReplicaError;

/// The owner part of a lease this process takes for `device`.
pub fn owner(device: &str) -> String {
    format!("{device} {} {}", std::process::id(), this_host())
}

/// The lease file's content: expiry (Unix seconds, `ttl` after `now`)
/// and owner.
pub fn record(owner: &str, ttl: Duration, now: SystemTime) -> String {
    let expires = unix_secs(now + ttl);
    format!("{expires} {owner}\n")
}

/// Whether `record` (a lease file's content) is ours.
pub fn held_by(record: &str, owner: &str) -> bool {
    record.trim_end().ends_with(owner)
}

/// Reads another agent's lease: `Ok` when it is stale (expired by `now`,
/// or its holder was a process on this host that no longer runs) and may
/// be taken over, else [`ReplicaError::Busy`] naming the holder.
///
/// The expiry is the holder's clock plus its TTL, read by ours: a reader
/// whose clock is ahead of the holder's by more than the TTL takes a live
/// lease for an expired one, and one behind waits longer than the TTL for
/// a crashed holder's lease.
pub fn check_stale(record: &str, now: SystemTime) -> Result<(), ReplicaError> {
    let expires: u64 = record
        .split_whitespace()
        .next()
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    if expires <= unix_secs(now) || holder_is_gone(record) {
        return Ok(());
    }
    let who = record.split_whitespace().nth(1).unwrap_or("another agent");
    // The record comes from the remote: an absurd expiry is shown as is.
    let until = UNIX_EPOCH
        .checked_add(Duration::from_secs(expires))
        .map_or_else(|| expires.to_string(), crate::timefmt::rfc3339);
    Err(ReplicaError::Busy(format!(
        "{who} is writing to the remote (its lease runs until {until} at the latest)"
    )))
}

/// The lease file as a backend stores it, for [`acquire`].
pub(crate) trait LeaseFile {
    /// Creates the lease file holding this agent's record, only where
    /// there is none, with the record in it from its first moment (a file
    /// created empty and written after could be read empty, taken for
    /// stale and taken over). `Ok(false)`: a lease file is there.
    fn create(&self) -> Result<bool, ReplicaError>;

    /// The lease file's record, and its version where the store names one
    /// (an ETag); `None` when there is none.
    fn read(&self) -> Result<Option<(String, Option<String>)>, ReplicaError>;

    /// Removes the stale lease file read as `version`: only that version
    /// where the store can tell (another agent may have taken it over
    /// since); a failure is the next `create`'s to find.
    fn remove(&self, version: Option<&str>);
}

/// Takes the lease through `file` for `owner` (see [`owner`]): creates it,
/// or, where another record is there, takes it over once it is stale
/// (expired, or its holder's process is gone), or when it is this very
/// process's (left behind when a connection died before it could be
/// removed, it must not lock the agent out of its own remote). A live
/// lease of another agent is [`ReplicaError::Busy`]; losing the race of
/// two takeovers is [`lost_race`]. `now` is the time a record's expiry is
/// read against.
pub(crate) fn acquire(
    file: &dyn LeaseFile,
    owner: &str,
    now: SystemTime,
) -> Result<(), ReplicaError> {
    for _ in 0..2 {
        if file.create()? {
            return Ok(());
        }
        let Some((holder, version)) = file.read()? else {
            // Released between the two requests: try again.
            continue;
        };
        if !held_by(&holder, owner) {
            check_stale(&holder, now)?;
        }
        file.remove(version.as_deref());
    }
    Err(lost_race())
}

/// The error when two takeovers raced and the other agent won.
pub fn lost_race() -> ReplicaError {
    ReplicaError::Busy("another agent took the lease first".into())
}

/// The error when renewing finds someone else's lease.
pub fn taken_over() -> ReplicaError {
    ReplicaError::Busy("the lease was taken over by another agent".into())
}

fn unix_secs(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// This host's name as the lease records it (one word).
fn this_host() -> String {
    gethostname::gethostname()
        .to_string_lossy()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join("_")
}

/// Whether a lease was taken by a process on this host that no longer
/// runs: an agent that crashed. Its lease is stale at once; otherwise the
/// restarted agent would be locked out of its own remote until the lease
/// expired. A holder on another host, or a lease without a host, is trusted
/// until it expires.
fn holder_is_gone(record: &str) -> bool {
    // Read from the end: a device name may contain spaces.
    let mut fields = record.split_whitespace().rev();
    let (Some(host), Some(pid)) = (
        fields.next(),
        fields.next().and_then(|p| p.parse::<i32>().ok()),
    ) else {
        return false;
    };
    if pid <= 0 || host != this_host() {
        return false;
    }
    #[cfg(unix)]
    {
        // SAFETY: signal 0 sends nothing; it only asks whether `pid` exists.
        let rc = unsafe { libc::kill(pid, 0) };
        rc != 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
    }
    #[cfg(not(unix))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_lease_is_busy_and_an_expired_or_orphaned_one_is_stale() {
        let mine = owner("laptop");
        let now = SystemTime::now();
        let live = record(&mine, Duration::from_secs(60), now);
        assert!(held_by(&live, &mine));
        let busy = check_stale(&live, now).unwrap_err();
        assert!(busy.to_string().contains("laptop"), "{busy}");
        check_stale(&record(&mine, Duration::ZERO, now), now).unwrap();
        // A reader whose clock is past the expiry takes the lease as stale.
        check_stale(&live, now + Duration::from_secs(61)).unwrap();
        // A process id that cannot exist on this host: the holder is gone.
        let orphan = format!("{} laptop 999999999 {}\n", u64::MAX, this_host());
        check_stale(&orphan, now).unwrap();
        let elsewhere = format!("{} laptop 1 some-other-host\n", u64::MAX);
        assert!(check_stale(&elsewhere, now).is_err());
    }
}
