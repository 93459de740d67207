//! Which device made a change that arrived from the remote.
//!
//! The remote protocols do not say who wrote a file. Every device keeps a
//! log of the changes it made on the remote (`remote/change_log.rs`); the
//! engine reads the other devices' logs and hands their new entries to
//! [`Journal::add_remote_changes`], which keeps them in `remote_changes`
//! together with how far each log was read (`change_log_cursors`), in one
//! transaction, so a log is read once and never skipped.
//!
//! When a change from the remote is recorded, the newest such entry that
//! describes it names its device and time (see [`resolve`]): the same path
//! and content for a created or modified file, the path (or a move away
//! from it) for a deletion, both ends for a move, the path and kind
//! otherwise. That entry and the older ones for the same path are then
//! used up: they describe versions this device has now gone past, so a
//! later hand edit on the remote that brings an old version back is not
//! credited to a device. A change no entry describes (a file put on the
//! remote by hand, or by an agent that keeps no log) keeps the origin
//! device `remote`, as every remote change had before, so older rows and
//! new unknown ones read the same.
//!
//! This module matches and stores; it does not decide what to sync.

use rusqlite::types::Value;
use rusqlite::{
    Connection, OptionalExtension, Transaction, TransactionBehavior, params, params_from_iter,
};

use super::changes::NewChange;
use super::rows::{int, kind_str, opt_hex, opt_int};
use super::{ChangeType, Journal, JournalError, PairId, during};
use crate::model::{ContentHash, RelPath, Side};

/// The origin device recorded for a change from the remote whose device is
/// not known.
pub const UNKNOWN_DEVICE: &str = "remote";

/// Another device's change, as its log on the remote tells it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteChange {
    /// Its id in its log.
    pub entry_id: u64,
    /// When that device recorded it (RFC 3339).
    pub at: String,
    pub device: String,
    /// The kind of change as text: a kind this agent does not know yet
    /// still matches by path.
    pub change_type: String,
    pub path: RelPath,
    pub from_path: Option<RelPath>,
    pub is_dir: bool,
    pub hash: Option<ContentHash>,
    pub size: Option<u64>,
}

/// How far a log on the remote was read: the segment and the id of the
/// newest entry read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogPosition {
    pub segment: u64,
    pub last_id: u64,
}

/// Who made a change, and when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub device: String,
    /// When the device recorded it (RFC 3339).
    pub at: String,
}

impl Journal {
    /// How far the log `log` of `pair`'s remote was read; `None` before
    /// the first read.
    pub fn log_position(
        &self,
        pair: PairId,
        log: &str,
    ) -> Result<Option<LogPosition>, JournalError> {
        during("read how far a change log was read", || {
            let found: Option<(i64, i64)> = self
                .conn
                .prepare_cached(
                    "SELECT segment, last_id FROM change_log_cursors \
                     WHERE pair_id = ?1 AND log = ?2",
                )?
                .query_row(params![pair.0, log], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()?;
            Ok(found.map(|(segment, last_id)| LogPosition {
                segment: segment.unsigned_abs(),
                last_id: last_id.unsigned_abs(),
            }))
        })
    }

    /// Keeps the entries read from `log` and that it was read up to
    /// `position`, in one transaction; forgets entries recorded before
    /// `forget_before` (RFC 3339) that were never applied here: the
    /// versions they describe are past the trash retention.
    pub fn add_remote_changes(
        &self,
        pair: PairId,
        log: &str,
        position: LogPosition,
        changes: &[RemoteChange],
        forget_before: &str,
    ) -> Result<(), JournalError> {
        during("record other devices' changes", || {
            let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)?;
            for change in changes {
                tx.prepare_cached(
                    "INSERT INTO remote_changes (pair_id, log, entry_id, at, device, type, path, \
                     from_path, kind, hash, size) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                )?
                .execute(params![
                    pair.0,
                    log,
                    int(change.entry_id),
                    change.at,
                    change.device,
                    change.change_type,
                    change.path.as_str(),
                    change.from_path.as_ref().map(RelPath::as_str),
                    kind_str(change.is_dir),
                    opt_hex(change.hash.as_ref()),
                    opt_int(change.size),
                ])?;
            }
            set_log_position(&tx, pair, log, position)?;
            tx.prepare_cached("DELETE FROM remote_changes WHERE pair_id = ?1 AND at < ?2")?
                .execute(params![pair.0, forget_before])?;
            tx.commit()?;
            Ok(())
        })
    }

    /// Which device made the version `hash` of `path`, if known: another
    /// device's change read from the remote and not applied yet, else the
    /// newest change in this journal that produced it (made here, or
    /// applied from a device that could be named).
    pub fn origin_of(
        &self,
        pair: PairId,
        path: &RelPath,
        hash: &ContentHash,
    ) -> Result<Option<Origin>, JournalError> {
        during("find the device that made a version", || {
            origin_in(&self.conn, pair, path, hash)
        })
    }
}

/// Records how far the log `log` on the remote was read.
pub(super) fn set_log_position(
    conn: &Connection,
    pair: PairId,
    log: &str,
    position: LogPosition,
) -> Result<(), JournalError> {
    conn.prepare_cached(
        "INSERT INTO change_log_cursors (pair_id, log, segment, last_id) \
         VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (pair_id, log) DO UPDATE SET segment = ?3, last_id = ?4",
    )?
    .execute(params![
        pair.0,
        log,
        int(position.segment),
        int(position.last_id)
    ])?;
    Ok(())
}

/// [`Journal::origin_of`] on a connection that may be inside a step's
/// transaction.
pub(super) fn origin_in(
    conn: &Connection,
    pair: PairId,
    path: &RelPath,
    hash: &ContentHash,
) -> Result<Option<Origin>, JournalError> {
    let pending = conn
        .prepare_cached(
            "SELECT device, at FROM remote_changes \
                     WHERE pair_id = ?1 AND path = ?2 AND hash = ?3 AND type <> 'deleted' \
                     ORDER BY id DESC LIMIT 1",
        )?
        .query_row(params![pair.0, path.as_str(), hash.to_hex()], origin)
        .optional()?;
    if pending.is_some() {
        return Ok(pending);
    }
    Ok(conn
        .prepare_cached(
            "SELECT origin_device, coalesce(origin_at, at) FROM changes \
                     WHERE pair_id = ?1 AND path = ?2 AND hash = ?3 AND type <> 'deleted' \
                     AND NOT (origin_side = 'remote' AND origin_device = ?4) \
                     ORDER BY id DESC LIMIT 1",
        )?
        .query_row(
            params![pair.0, path.as_str(), hash.to_hex(), UNKNOWN_DEVICE],
            origin,
        )
        .optional()?)
}

fn origin(row: &rusqlite::Row<'_>) -> rusqlite::Result<Origin> {
    Ok(Origin {
        device: row.get(0)?,
        at: row.get(1)?,
    })
}

/// The origin of `change`, about to be recorded: a change made here is
/// this device's, made now; a change from the remote is the newest
/// unapplied entry of another device's log that describes it, which is
/// then used up with the older entries for the same paths. `None`: not
/// known. Part of the transaction that records the change.
pub(super) fn resolve(
    conn: &Connection,
    pair: PairId,
    at: &str,
    change: &NewChange,
) -> Result<Option<Origin>, JournalError> {
    if change.origin_side == Side::Local {
        return Ok(Some(Origin {
            device: change.origin_device.clone(),
            at: at.to_owned(),
        }));
    }
    let path = change.path.as_str();
    let (sql, key): (&str, Option<String>) = match (change.change_type, &change.hash) {
        (ChangeType::Deleted, _) => (
            "SELECT id, device, at FROM remote_changes WHERE pair_id = ?1 \
             AND ((path = ?2 AND type = 'deleted') OR from_path = ?2) \
             ORDER BY id DESC LIMIT 1",
            None,
        ),
        (ChangeType::Moved, _) => (
            "SELECT id, device, at FROM remote_changes WHERE pair_id = ?1 \
             AND path = ?2 AND from_path = ?3 ORDER BY id DESC LIMIT 1",
            change.from_path.as_ref().map(|p| p.as_str().to_owned()),
        ),
        // New content: whatever change made it there (a move seen as a
        // creation, a modification seen as a creation by a device that did
        // not have the file).
        (ChangeType::Created | ChangeType::Modified, Some(hash)) => (
            "SELECT id, device, at FROM remote_changes WHERE pair_id = ?1 \
             AND path = ?2 AND hash = ?3 AND type <> 'deleted' ORDER BY id DESC LIMIT 1",
            Some(hash.to_hex()),
        ),
        // A folder, or any other kind of change: the same kind at the path.
        (change_type, _) => (
            "SELECT id, device, at FROM remote_changes WHERE pair_id = ?1 \
             AND path = ?2 AND type = ?3 ORDER BY id DESC LIMIT 1",
            Some(change_type.as_str().to_owned()),
        ),
    };
    let mut values = vec![Value::Integer(pair.0), Value::Text(path.to_owned())];
    values.extend(key.map(Value::Text));
    let found: Option<(i64, String, String)> = conn
        .prepare_cached(sql)?
        .query_row(params_from_iter(values), |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })
        .optional()?;
    let Some((id, device, at)) = found else {
        return Ok(None);
    };
    for used in std::iter::once(path).chain(change.from_path.as_ref().map(RelPath::as_str)) {
        conn.prepare_cached(
            "DELETE FROM remote_changes WHERE pair_id = ?1 AND id <= ?2 \
             AND (path = ?3 OR from_path = ?3)",
        )?
        .execute(params![pair.0, id, used])?;
    }
    Ok(Some(Origin { device, at }))
}
