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
//! A run that is about to apply changes [`pull`]s the entries the other
//! logs gained since it last read them into the journal, which matches them
//! with the changes it records (`journal/origins.rs`). A log whose head did
//! not move costs one small read; an idle run reads nothing.

use std::time::{Duration, SystemTime};

use crate::journal::{ChangeRow, Journal, LogPosition, PairId, RemoteChange};
use crate::locks::LockExt;
use crate::remote::Replica;
use crate::remote::change_log::{self, Cursor, LogEntry, LogWriter};
use crate::timefmt;

use super::SyncError;

/// How many journal rows one append takes at most.
const PUBLISH_BATCH: usize = 1024;

/// Appends this device's changes that its log on `remote` does not have
/// yet. `writer` is kept between runs (opened at the first call, and again
/// when the pair got a new lineage). Call after the journal committed;
/// under the lease after a round that wrote.
pub(super) fn publish(
    journal: &std::sync::Mutex<Journal>,
    pair: PairId,
    remote: &dyn Replica,
    device: &str,
    retention: Duration,
    writer: &mut Option<LogWriter>,
) -> Result<(), SyncError> {
    let (lineage, newest) = {
        let journal = journal.locked();
        (journal.lineage(pair)?.id, journal.last_change_id(pair)?)
    };
    let writer = match writer {
        Some(open) if open.log() == lineage => open,
        _ => writer.insert(LogWriter::open(remote, &lineage, device, newest)?),
    };
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
    let forget_before = timefmt::rfc3339(
        SystemTime::now()
            .checked_sub(retention)
            .unwrap_or(SystemTime::UNIX_EPOCH),
    );
    for log in change_log::logs(remote)? {
        if log == own {
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
        journal.locked().add_remote_changes(
            pair,
            &log,
            LogPosition {
                segment: read_to.segment,
                last_id: read_to.last_id,
            },
            &changes,
            &forget_before,
        )?;
    }
    Ok(())
}
