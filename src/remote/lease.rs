//! The lease record every backend writes to `.prism-sync/lease`: one line,
//! `EXPIRES DEVICE ID PID HOST`, and the rules for reading another agent's.
//!
//! ID names one lease of this process (random, 16 hex digits): every pair
//! of one agent has the same device, process and host, so without it two
//! pairs on one remote would each read the other's live lease as their
//! own. It sits before PID so that every reader, older ones included,
//! still finds the device in the second field (for messages) and the
//! process and host at the end (to tell a crashed holder).
//!
//! How the file is created exclusively, renewed and removed is each
//! backend's business (an `O_EXCL` create, an SFTP exclusive open, a WebDAV
//! `If-None-Match: *` PUT); what a lease says and when it is stale is
//! decided here, once.

use std::collections::BTreeSet;
use std::io;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::ReplicaError;
use crate::locks::LockExt;

/// The ids of the leases this process holds (or is taking): a record of
/// this process whose id is not here was left behind.
static LIVE: Mutex<BTreeSet<u64>> = Mutex::new(BTreeSet::new());

/// The owner of one lease this process takes: `DEVICE ID PID HOST`. Its id
/// is live in this process for as long as the value is, so the backends
/// keep it in their lease and drop it after the lease file is removed: a
/// removal that failed (the connection died) leaves a record this process
/// takes back at once (see [`check_stale`]).
#[derive(Debug)]
pub struct Owner {
    id: u64,
    text: String,
    /// The expiry in the last name made for this owner ([`name_record`]).
    last_named: AtomicU64,
}

impl Drop for Owner {
    fn drop(&mut self) {
        LIVE.locked().remove(&self.id);
    }
}

/// What a lease record says, as a file name: `EXPIRES.ID.PID.HOST` (the
/// device left out: its name may hold any character). For stores where
/// reading a file that another agent may be removing at that moment can
/// fail midway, so that a listing alone tells whose it is and whether it
/// is stale ([`record_of_name`]).
///
/// Each name made for one owner is new: where `now + ttl` would repeat an
/// earlier one's expiry (two within a second, or a clock set back), the
/// expiry is a second later than that one's. A reader that ages what it
/// lists by name must never take a new file for one it saw before.
pub fn name_record(owner: &Owner, ttl: Duration, now: SystemTime) -> String {
    let mut fields = owner.text.rsplitn(4, ' ');
    let (host, pid, id) = (fields.next(), fields.next(), fields.next());
    let wanted = unix_secs(now + ttl);
    let newer = |last: u64| wanted.max(last.saturating_add(1));
    let last = owner
        .last_named
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
            Some(newer(last))
        })
        .unwrap_or_else(|last| last);
    let expires = newer(last);
    format!(
        "{expires}.{}.{}.{}",
        id.unwrap_or_default(),
        pid.unwrap_or_default(),
        host.unwrap_or_default()
    )
}

/// The record a [`name_record`] name stands for (with `-` for the device),
/// and its lease id; `None` for any other name.
pub fn record_of_name(name: &str) -> Option<(String, u64)> {
    let mut fields = name.splitn(4, '.');
    let expires: u64 = fields.next()?.parse().ok()?;
    let id_hex = fields.next().filter(|id| id.len() == 16)?;
    let id = u64::from_str_radix(id_hex, 16).ok()?;
    let pid: u32 = fields.next()?.parse().ok()?;
    let host = fields.next().filter(|host| !host.is_empty())?;
    Some((format!("{expires} - {id_hex} {pid} {host}"), id))
}

/// A new owner for a lease this process takes for `device`.
pub fn owner(device: &str) -> Owner {
    let id = {
        let mut live = LIVE.locked();
        let mut id = fastrand::u64(..);
        while !live.insert(id) {
            id = fastrand::u64(..);
        }
        id
    };
    let text = format!("{device} {id:016x} {} {}", std::process::id(), this_host());
    Owner {
        id,
        text,
        last_named: AtomicU64::new(0),
    }
}

/// The lease file's content: expiry (Unix seconds, `ttl` after `now`)
/// and owner.
pub fn record(owner: &Owner, ttl: Duration, now: SystemTime) -> String {
    let expires = unix_secs(now + ttl);
    format!("{expires} {}\n", owner.text)
}

/// Whether `record` (a lease file's content) is this very lease's.
pub fn held_by(record: &str, owner: &Owner) -> bool {
    record
        .trim_end()
        .strip_suffix(&owner.text)
        .is_some_and(|before| before.ends_with(' '))
}

/// Reads another agent's lease: `Ok` when it is stale (expired by `now`,
/// its holder was a process on this host that no longer runs, or it is a
/// lease of this very process that is no longer held, left behind when a
/// connection died before it could be removed) and may be taken over, else
/// [`ReplicaError::Busy`] naming the holder.
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

/// Takes the lease through `file`: creates it, or, where another record is
/// there, takes it over once it is stale (see [`check_stale`]: a lease this
/// process left behind must not lock the agent out of its own remote). A
/// live lease of another agent, or of another pair of this one, is
/// [`ReplicaError::Busy`]; losing the race of two takeovers is
/// [`lost_race`]. `now` is the time a record's expiry is read against.
pub(crate) fn acquire(file: &dyn LeaseFile, now: SystemTime) -> Result<(), ReplicaError> {
    acquire_in_time(file, now, &|| Ok(()))
}

/// [`acquire`] for an agent whose writes must each start in time
/// (under a claim, [`super::claims::Claim::check_in_time`]): `in_time` is
/// asked before every create and remove, since a takeover makes up to four
/// requests and an agent that took too long may find its claim taken for
/// stale and the record another's by then.
pub(crate) fn acquire_in_time(
    file: &dyn LeaseFile,
    now: SystemTime,
    in_time: &dyn Fn() -> Result<(), ReplicaError>,
) -> Result<(), ReplicaError> {
    for _ in 0..2 {
        in_time()?;
        if file.create()? {
            return Ok(());
        }
        let Some((holder, version)) = file.read()? else {
            // Released between the two requests: try again.
            continue;
        };
        check_stale(&holder, now)?;
        in_time()?;
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
/// runs (an agent that crashed), or by this very process and is no longer
/// held by it (its release was lost). Such a lease is stale at once;
/// otherwise the agent would be locked out of its own remote until the
/// lease expired. A holder on another host, or a lease without a host, is
/// trusted until it expires.
pub(crate) fn holder_is_gone(record: &str) -> bool {
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
    if u32::try_from(pid).is_ok_and(|pid| pid == std::process::id()) {
        // Every record this process writes carries the id of its lease.
        let id = fields
            .next()
            .and_then(|id| u64::from_str_radix(id, 16).ok());
        return !id.is_some_and(|id| LIVE.locked().contains(&id));
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

    #[test]
    fn a_record_as_a_name_reads_back_as_the_same_record() {
        let now = SystemTime::now();
        let mine = owner("my laptop");
        let name = name_record(&mine, Duration::from_secs(60), now);
        let (record, id) = record_of_name(&name).unwrap();
        assert_eq!(id, mine.id);
        assert!(check_stale(&record, now).is_err(), "{record}");
        let other = owner("my laptop");
        let (expired, _) = record_of_name(&name_record(&other, Duration::ZERO, now)).unwrap();
        check_stale(&expired, now).unwrap();
        // One owner's names never repeat, even made at the same time.
        let again = name_record(&mine, Duration::from_secs(60), now);
        assert_ne!(again, name);
        assert_eq!(record_of_name(&again).unwrap().1, mine.id);
        drop(mine);
        check_stale(&record, now).unwrap();
        for other in [
            "",
            "lease",
            ".upload-1234",
            "1.2.3.host",
            "1.0123456789abcdef.x.host",
        ] {
            assert_eq!(record_of_name(other), None, "{other}");
        }
    }

    #[test]
    fn a_lease_of_this_process_is_busy_while_it_is_held_and_stale_once_it_is_not() {
        let now = SystemTime::now();
        let (first, second) = (owner("laptop"), owner("laptop"));
        let held = record(&first, Duration::from_secs(60), now);
        assert!(held_by(&held, &first));
        assert!(!held_by(&held, &second), "one lease is not another's");
        let busy = check_stale(&held, now).unwrap_err();
        assert!(busy.to_string().contains("laptop"), "{busy}");
        // Its holder dropped it but the record stayed (its removal was lost).
        drop(first);
        check_stale(&held, now).unwrap();
        // A record of this process without an id (not one it writes).
        let bare = format!(
            "{} laptop {} {}\n",
            u64::MAX,
            std::process::id(),
            this_host()
        );
        check_stale(&bare, now).unwrap();
    }

    #[test]
    fn the_record_keeps_the_device_second_and_the_process_and_host_last() {
        let mine = owner("my laptop");
        let line = record(&mine, Duration::from_secs(60), UNIX_EPOCH);
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields[..3], ["60", "my", "laptop"]);
        assert_eq!(fields[3].len(), 16, "{line}");
        assert_eq!(fields[4], std::process::id().to_string());
        assert_eq!(fields[5], this_host());
    }

    /// A lease file holding a stale record of another agent, that logs
    /// the writes made to it.
    struct StaleThere(Mutex<Vec<&'static str>>);

    impl LeaseFile for StaleThere {
        fn create(&self) -> Result<bool, ReplicaError> {
            self.0.locked().push("create");
            Ok(false)
        }

        fn read(&self) -> Result<Option<(String, Option<String>)>, ReplicaError> {
            Ok(Some(("1 laptop 1 some-other-host\n".to_owned(), None)))
        }

        fn remove(&self, _version: Option<&str>) {
            self.0.locked().push("remove");
        }
    }

    #[test]
    fn a_takeover_that_runs_out_of_time_writes_nothing_more() {
        let file = StaleThere(Mutex::new(Vec::new()));
        let asked = std::sync::atomic::AtomicUsize::new(0);
        // In time for the first create only: the stale record is read too
        // late to remove (another agent may have taken our claim for stale
        // and the lease by now).
        let in_time = || match asked.fetch_add(1, Ordering::SeqCst) {
            0 => Ok(()),
            _ => Err(lost_race()),
        };
        let taken = acquire_in_time(&file, SystemTime::now(), &in_time);
        assert!(matches!(taken, Err(ReplicaError::Busy(_))), "{taken:?}");
        assert_eq!(*file.0.locked(), ["create"]);
    }
}
