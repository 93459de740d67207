//! The versions a sync moved to a trash (`trashed_versions`): which file,
//! which content, which side's trash and under what name there, and which
//! device made that version. `prism-syncctl history` lists them without
//! looking through trash folders, and `restore` reads one back by its row.
//!
//! A row is recorded in the same transaction as the step whose replace or
//! removal trashed the version. It says where the version went, not that
//! it is still there: a trash batch past the retention is purged, and
//! [`Journal::forget_trashed_before`] drops the rows it held.

use rusqlite::{Connection, OptionalExtension, params};

use super::origins::{LogPosition, UNKNOWN_DEVICE, origin_in, set_log_position};
use super::rows::{RowReader, int};
use super::{Journal, JournalError, PairId, during};
use crate::model::{ContentHash, RelPath, Side};

/// A version the engine just moved to a side's trash, as a [`super::Step`]
/// records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrashedVersion {
    pub path: RelPath,
    /// Whose trash holds it.
    pub side: Side,
    /// Its name below that side's trash folder, as the replica reported it
    /// (`20250209-1600/docs/page.md`).
    pub trash_name: RelPath,
    pub hash: ContentHash,
    pub size: u64,
    pub mtime_ns: i64,
    /// The device that moved it to the trash (this one). A version of the
    /// local folder no change row names was made here, so it is credited
    /// to this device too; one of the remote no row names, to `remote`.
    pub trashed_by: String,
}

/// A version another device moved to the remote's trash, as its trash
/// log on the remote tells it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForeignTrashed {
    /// `trashed_by` is the device that trashed it.
    pub version: TrashedVersion,
    /// When it did (its clock, RFC 3339).
    pub trashed_at: String,
}

/// A recorded trashed version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrashedRow {
    /// The row's id: the version's name in `history` and `restore`.
    pub id: i64,
    pub pair_id: PairId,
    pub path: RelPath,
    pub side: Side,
    pub trash_name: RelPath,
    pub hash: ContentHash,
    pub size: u64,
    pub mtime_ns: i64,
    /// The device that made this version, as far as it is known.
    pub origin_device: String,
    /// When that device made it (its clock), where known.
    pub origin_at: Option<String>,
    pub trashed_by: String,
    /// When the version went to the trash (RFC 3339).
    pub trashed_at: String,
}

const SELECT_TRASHED: &str = "SELECT id, pair_id, path, side, trash_name, hash, size, mtime_ns, \
     origin_device, origin_at, trashed_by, trashed_at FROM trashed_versions";

impl Journal {
    /// The versions of `path` the pair's syncs (and, on the remote, other
    /// devices') moved to a trash, newest first.
    pub fn trashed_versions(
        &self,
        pair: PairId,
        path: &RelPath,
    ) -> Result<Vec<TrashedRow>, JournalError> {
        during("read the trashed versions", || {
            let mut stmt = self.conn.prepare_cached(&format!(
                "{SELECT_TRASHED} WHERE pair_id = ?1 AND path = ?2 \
                 ORDER BY trashed_at DESC, id DESC"
            ))?;
            let mut rows = stmt.query(params![pair.0, path.as_str()])?;
            let mut found = Vec::new();
            while let Some(row) = rows.next()? {
                found.push(decode(&RowReader::new(row, "trashed_versions", &["id"]))?);
            }
            Ok(found)
        })
    }

    /// The versions this device's syncs moved to the remote's trash that
    /// its trash log on the remote does not have yet, oldest first, at most
    /// `limit`. Rows read from other devices' trash logs are not among
    /// them.
    pub fn unpublished_remote_trashed(
        &self,
        pair: PairId,
        limit: usize,
    ) -> Result<Vec<TrashedRow>, JournalError> {
        during("read the versions to publish as trashed", || {
            let mut stmt = self.conn.prepare_cached(&format!(
                "{SELECT_TRASHED} WHERE pair_id = ?1 AND side = 'remote' AND log IS NULL \
                 AND published = 0 ORDER BY id LIMIT ?2"
            ))?;
            let mut rows = stmt.query(params![pair.0, int(limit as u64)])?;
            let mut found = Vec::new();
            while let Some(row) = rows.next()? {
                found.push(decode(&RowReader::new(row, "trashed_versions", &["id"]))?);
            }
            Ok(found)
        })
    }

    /// Marks the rows `ids` as in this device's trash log.
    pub fn mark_trashed_published(&self, ids: &[i64]) -> Result<(), JournalError> {
        during("record which trashed versions were published", || {
            let tx = rusqlite::Transaction::new_unchecked(
                &self.conn,
                rusqlite::TransactionBehavior::Immediate,
            )?;
            for id in ids {
                tx.prepare_cached("UPDATE trashed_versions SET published = 1 WHERE id = ?1")?
                    .execute([id])?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    /// Records the versions another device's trash log `log` told of, and
    /// how far it was read, in one transaction. A version already recorded
    /// (the same trash name and content: a log read again from its start)
    /// is not recorded twice.
    pub fn add_foreign_trashed(
        &self,
        pair: PairId,
        log: &str,
        position: LogPosition,
        versions: &[ForeignTrashed],
    ) -> Result<(), JournalError> {
        during("record versions other devices trashed", || {
            let tx = rusqlite::Transaction::new_unchecked(
                &self.conn,
                rusqlite::TransactionBehavior::Immediate,
            )?;
            for foreign in versions {
                let known = tx
                    .prepare_cached(
                        "SELECT 1 FROM trashed_versions WHERE pair_id = ?1 AND side = ?2 \
                         AND trash_name = ?3 AND hash = ?4",
                    )?
                    .exists(params![
                        pair.0,
                        foreign.version.side.as_str(),
                        foreign.version.trash_name.as_str(),
                        foreign.version.hash.to_hex()
                    ])?;
                if !known {
                    insert_from(&tx, pair, &foreign.trashed_at, &foreign.version, Some(log))?;
                }
            }
            set_log_position(&tx, pair, log, position)?;
            tx.commit()?;
            Ok(())
        })
    }

    /// The trashed version with row id `id`, if the journal has it.
    pub fn trashed_version(&self, id: i64) -> Result<Option<TrashedRow>, JournalError> {
        during("read a trashed version", || {
            let mut stmt = self
                .conn
                .prepare_cached(&format!("{SELECT_TRASHED} WHERE id = ?1"))?;
            let row = stmt
                .query_row([id], |row| {
                    Ok(decode(&RowReader::new(row, "trashed_versions", &["id"])))
                })
                .optional()?;
            row.transpose()
        })
    }

    /// Records that the trashed version `restored` was written back into
    /// the local folder, asked for by the token `by` (`None`: the local
    /// socket's owner), with the version the restore moved to the trash in
    /// its place, in one transaction.
    pub fn record_restore(
        &self,
        pair: PairId,
        restored: Option<i64>,
        by: Option<&str>,
        replaced: &[TrashedVersion],
    ) -> Result<(), JournalError> {
        during("record a restore", || {
            let tx = rusqlite::Transaction::new_unchecked(
                &self.conn,
                rusqlite::TransactionBehavior::Immediate,
            )?;
            let now = crate::timefmt::now_rfc3339();
            for version in replaced {
                insert(&tx, pair, &now, version)?;
            }
            if let Some(restored) = restored {
                tx.prepare_cached(
                    "UPDATE trashed_versions SET restored_at = ?3, restored_by = ?4 \
                     WHERE id = ?1 AND pair_id = ?2",
                )?
                .execute(params![restored, pair.0, now, by])?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    /// Records versions moved to a trash outside a sync's steps (a
    /// resolution's writes and removals), in one transaction.
    pub fn record_trashed(
        &self,
        pair: PairId,
        versions: &[TrashedVersion],
    ) -> Result<(), JournalError> {
        during("record a trashed version", || {
            let tx = rusqlite::Transaction::new_unchecked(
                &self.conn,
                rusqlite::TransactionBehavior::Immediate,
            )?;
            let now = crate::timefmt::now_rfc3339();
            for version in versions {
                insert(&tx, pair, &now, version)?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    /// Forgets the versions `side` trashed before `before` (RFC 3339): its
    /// trash batches that old were purged. Returns how many rows went.
    pub fn forget_trashed_before(
        &self,
        pair: PairId,
        side: Side,
        before: &str,
    ) -> Result<usize, JournalError> {
        during("forget purged trashed versions", || {
            Ok(self
                .conn
                .prepare_cached(
                    "DELETE FROM trashed_versions WHERE pair_id = ?1 AND side = ?2 \
                     AND trashed_at < ?3",
                )?
                .execute(params![pair.0, side.as_str(), before])?)
        })
    }
}

/// Records one trashed version with the device that made it; part of a
/// step's transaction, before the step's own change rows, so the version
/// that replaced it is not taken for it.
pub(super) fn insert(
    conn: &Connection,
    pair: PairId,
    at: &str,
    version: &TrashedVersion,
) -> Result<(), JournalError> {
    insert_from(conn, pair, at, version, None)
}

/// Records one trashed version, read from the trash log `log` of another
/// device or (`None`) trashed by this one.
fn insert_from(
    conn: &Connection,
    pair: PairId,
    at: &str,
    version: &TrashedVersion,
    log: Option<&str>,
) -> Result<(), JournalError> {
    let origin = origin_in(conn, pair, &version.path, &version.hash)?;
    let (origin_device, origin_at) = match origin {
        Some(origin) => (origin.device, Some(origin.at)),
        // Recorded, but as a change from the remote by no device known.
        None if arrived_from_remote(conn, pair, version)? => (UNKNOWN_DEVICE.to_owned(), None),
        None => match version.side {
            Side::Local => (version.trashed_by.clone(), None),
            Side::Remote => (UNKNOWN_DEVICE.to_owned(), None),
        },
    };
    conn.prepare_cached(
        "INSERT INTO trashed_versions (pair_id, path, side, trash_name, hash, size, mtime_ns, \
         origin_device, origin_at, trashed_by, trashed_at, log) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?
    .execute(params![
        pair.0,
        version.path.as_str(),
        version.side.as_str(),
        version.trash_name.as_str(),
        version.hash.to_hex(),
        int(version.size),
        version.mtime_ns,
        origin_device,
        origin_at,
        version.trashed_by,
        at,
        log,
    ])?;
    Ok(())
}

/// Whether the change log holds the version at all: [`origin_in`] passes
/// over the changes from the remote that no device's log named.
fn arrived_from_remote(
    conn: &Connection,
    pair: PairId,
    version: &TrashedVersion,
) -> Result<bool, JournalError> {
    Ok(conn
        .prepare_cached(
            "SELECT 1 FROM changes WHERE pair_id = ?1 AND path = ?2 AND hash = ?3 \
             AND type <> 'deleted' LIMIT 1",
        )?
        .query_row(
            params![pair.0, version.path.as_str(), version.hash.to_hex()],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

fn decode(row: &RowReader<'_, '_>) -> Result<TrashedRow, JournalError> {
    Ok(TrashedRow {
        id: row.get("id")?,
        pair_id: PairId(row.get("pair_id")?),
        path: row.path("path")?,
        side: row.side("side")?,
        trash_name: row.path("trash_name")?,
        hash: row.hash("hash")?,
        size: row.u64("size")?,
        mtime_ns: row.get("mtime_ns")?,
        origin_device: row.get("origin_device")?,
        origin_at: row.get("origin_at")?,
        trashed_by: row.get("trashed_by")?,
        trashed_at: row.get("trashed_at")?,
    })
}
