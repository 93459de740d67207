//! Telling the other devices which changes this device made, and learning
//! from them which changes they made.
//!
//! Every device keeps a log on the remote (`remote/change_log.rs`) of the
//! changes made on it (change rows whose origin side is local), one per
//! journal lineage, so no two agents ever write the same log. A run
//! [`publish`]es the rows its journal committed and the log does not have
//! yet, after the journal committed them, as the lineage record is written
//! (see `lineage.rs`), so a log never names a change the journal might
//! still lose. A round that wrote publishes while its run still holds the
//! remote's lease, so a device holding the lease finds every change made on
//! the remote before it in a log. Rows a crash kept from the log are
//! published at the start of the next run, without the lease (only this
//! device writes its log): the log's head says how far it got.
//!
//! The versions this device's syncs moved to the remote's trash go to its
//! trash log the same way, so another device's `history` lists them and
//! its `restore` can read them back: that device never saw them go.
//!
//! A run that is about to apply changes [`pull`]s the entries the other
//! logs gained since it last read them into the journal, which matches them
//! with the changes it records (`journal/origins.rs`), and records the
//! versions their trash logs name (`journal/trashed.rs`). A log whose head
//! did not move costs one small read; an idle run reads nothing.

use std::time::{Duration, SystemTime};

use crate::journal::{
    ChangeRow, ForeignTrashed, Journal, LogPosition, PairId, RemoteChange, TrashedRow,
    TrashedVersion,
};
use crate::locks::LockExt;
use crate::model::Side;
use crate::remote::Replica;
use crate::remote::change_log::{self, Cursor, LogEntry, LogWriter, TrashedAs};
use crate::timefmt;

use super::SyncError;

/// How many journal rows one append takes at most.
const PUBLISH_BATCH: usize = 1024;

/// This device's logs on the remote, kept open between runs.
#[derive(Debug, Default)]
pub(super) struct LogWriters {
    changes: Option<LogWriter>,
    trash: Option<LogWriter>,
}

/// Appends this device's changes, and the versions it moved to the
/// remote's trash, that its logs on `remote` do not have yet. `writers` are
/// kept between runs (opened at the first call, and again when the pair got
/// a new lineage). Call after the journal committed; under the lease after
/// a round that wrote.
pub(super) fn publish(
    journal: &std::sync::Mutex<Journal>,
    pair: PairId,
    remote: &dyn Replica,
    device: &str,
    retention: Duration,
    writers: &mut LogWriters,
) -> Result<(), SyncError> {
    let (lineage, newest) = {
        let journal = journal.locked();
        (journal.lineage(pair)?.id, journal.last_change_id(pair)?)
    };
    let writer = match &mut writers.changes {
        Some(open) if open.log() == lineage => open,
        slot => slot.insert(LogWriter::open(remote, &lineage, device, newest)?),
    };
    publish_changes(journal, pair, remote, retention, writer)?;
    let trash_log = change_log::trash_log(&lineage);
    let writer = match &mut writers.trash {
        Some(open) if open.log() == trash_log => open,
        // A new trash log starts with every version still recorded: the
        // readers skip those they have.
        slot => slot.insert(LogWriter::open(remote, &trash_log, device, 0)?),
    };
    publish_trashed(journal, pair, remote, retention, writer)
}

fn publish_changes(
    journal: &std::sync::Mutex<Journal>,
    pair: PairId,
    remote: &dyn Replica,
    retention: Duration,
    writer: &mut LogWriter,
) -> Result<(), SyncError> {
    loop {
        let rows = journal
            .locked()
            .local_changes_after(pair, writer.last_id(), PUBLISH_BATCH)?;
        if rows.is_empty() {
            return Ok(());
        }
        let entries: Vec<LogEntry> = rows.iter().map(entry).collect();
        writer.append(remote, &entries, retention, SystemTime::now())?;
        if rows.len() < PUBLISH_BATCH {
            return Ok(());
        }
    }
}

fn publish_trashed(
    journal: &std::sync::Mutex<Journal>,
    pair: PairId,
    remote: &dyn Replica,
    retention: Duration,
    writer: &mut LogWriter,
) -> Result<(), SyncError> {
    loop {
        let rows = journal
            .locked()
            .unpublished_remote_trashed(pair, PUBLISH_BATCH)?;
        if rows.is_empty() {
            return Ok(());
        }
        // Entries are numbered along the log, not by journal row: SQLite
        // hands a purged newest row id out again. A crash between the
        // append and the mark publishes the rows again under new numbers;
        // readers record a version once.
        let entries: Vec<LogEntry> = rows
            .iter()
            .zip(writer.last_id() + 1..)
            .map(|(row, id)| trashed_entry(row, id))
            .collect();
        writer.append(remote, &entries, retention, SystemTime::now())?;
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        journal.locked().mark_trashed_published(&ids)?;
        if rows.len() < PUBLISH_BATCH {
            return Ok(());
        }
    }
}

/// The kind of a trash log's entries.
const TRASHED: &str = "trashed";

fn trashed_entry(row: &TrashedRow, id: u64) -> LogEntry {
    LogEntry {
        id,
        at: row.trashed_at.clone(),
        device: row.trashed_by.clone(),
        change_type: TRASHED.to_owned(),
        path: row.path.clone(),
        from_path: None,
        is_dir: false,
        hash: Some(row.hash),
        size: Some(row.size),
        trashed: Some(TrashedAs {
            trash_name: row.trash_name.clone(),
            mtime_ns: row.mtime_ns,
        }),
    }
}

/// The version a trash log's entry names; `None` for an entry that names
/// none (a kind a newer agent writes, or a damaged one). Its time is
/// another machine's: written in this journal's form (times are compared
/// as text) and never later than `now` (a time far ahead would keep the
/// version first in `history` and from ever being forgotten).
fn foreign_trashed(entry: LogEntry, now: SystemTime) -> Option<ForeignTrashed> {
    let trashed = entry.trashed?;
    if entry.change_type != TRASHED || entry.is_dir {
        return None;
    }
    let at = timefmt::parse(&entry.at)?.min(now);
    Some(ForeignTrashed {
        version: TrashedVersion {
            path: entry.path,
            side: Side::Remote,
            trash_name: trashed.trash_name,
            hash: entry.hash?,
            size: entry.size?,
            mtime_ns: trashed.mtime_ns,
            trashed_by: entry.device,
        },
        trashed_at: timefmt::rfc3339(at),
    })
}

fn entry(row: &ChangeRow) -> LogEntry {
    LogEntry {
        id: row.id.unsigned_abs(),
        at: row.origin_at.clone().unwrap_or_else(|| row.at.clone()),
        device: row.origin_device.clone(),
        change_type: row.change_type.as_str().to_owned(),
        path: row.path.clone(),
        from_path: row.from_path.clone(),
        is_dir: row.is_dir,
        hash: row.hash,
        size: row.size,
        trashed: None,
    }
}

/// Reads what the other devices' logs on `remote` gained since this
/// journal last read them, and keeps it in the journal for matching. Call
/// under the lease.
pub(super) fn pull(
    journal: &std::sync::Mutex<Journal>,
    pair: PairId,
    remote: &dyn Replica,
    retention: Duration,
) -> Result<(), SyncError> {
    let own = journal.locked().lineage(pair)?.id;
    let own_trash = change_log::trash_log(&own);
    let forget_before = timefmt::rfc3339(
        SystemTime::now()
            .checked_sub(retention)
            .unwrap_or(SystemTime::UNIX_EPOCH),
    );
    // Change logs first: a trashed version's maker is found among the
    // changes they name.
    let mut logs = change_log::logs(remote)?;
    logs.sort_by_key(|log| change_log::is_trash_log(log));
    for log in logs {
        if log == own || log == own_trash {
            continue;
        }
        let Some(head) = change_log::read_head(remote, &log)? else {
            continue;
        };
        let position = journal
            .locked()
            .log_position(pair, &log)?
            .unwrap_or_default();
        let cursor = Cursor {
            segment: position.segment,
            last_id: position.last_id,
        };
        let (entries, read_to) = change_log::read_new(remote, &log, &head, cursor)?;
        if read_to == cursor {
            continue;
        }
        let position = LogPosition {
            segment: read_to.segment,
            last_id: read_to.last_id,
        };
        if change_log::is_trash_log(&log) {
            let now = SystemTime::now();
            let versions: Vec<ForeignTrashed> = entries
                .into_iter()
                .filter_map(|e| foreign_trashed(e, now))
                .collect();
            journal
                .locked()
                .add_foreign_trashed(pair, &log, position, &versions)?;
            continue;
        }
        let changes: Vec<RemoteChange> = entries
            .into_iter()
            .map(|e| RemoteChange {
                entry_id: e.id,
                at: e.at,
                device: e.device,
                change_type: e.change_type,
                path: e.path,
                from_path: e.from_path,
                is_dir: e.is_dir,
                hash: e.hash,
                size: e.size,
            })
            .collect();
        journal
            .locked()
            .add_remote_changes(pair, &log, position, &changes, &forget_before)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ContentHash, RelPath};

    fn trashed_at(at: &str, now: SystemTime) -> Option<String> {
        let entry = LogEntry {
            id: 1,
            at: at.to_owned(),
            device: "desktop".to_owned(),
            change_type: TRASHED.to_owned(),
            path: RelPath::new("a.txt").unwrap(),
            from_path: None,
            is_dir: false,
            hash: Some(ContentHash::of_bytes(b"v1")),
            size: Some(2),
            trashed: Some(TrashedAs {
                trash_name: RelPath::new("20250209-1600/a.txt").unwrap(),
                mtime_ns: 0,
            }),
        };
        foreign_trashed(entry, now).map(|f| f.trashed_at)
    }

    #[test]
    fn another_devices_trash_times_are_written_in_our_form_and_never_ahead_of_us() {
        let now = timefmt::parse("2026-01-01T00:00:00.000Z").unwrap();
        assert_eq!(
            trashed_at("2025-02-09T17:00:00+01:00", now).unwrap(),
            "2025-02-09T16:00:00.000Z"
        );
        assert_eq!(
            trashed_at("9999-01-01T00:00:00Z", now).unwrap(),
            "2026-01-01T00:00:00.000Z"
        );
        assert_eq!(trashed_at("yesterday", now), None);
    }
}
