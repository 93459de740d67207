//! The `conflicts` table: one row per conflict in the shape of the
//! specification's section 5.3, kept until resolved and afterwards as
//! history.
//!
//! A pair and path have at most one unresolved conflict (a unique partial
//! index says so): recording a conflict where one is open updates that row,
//! keeping its id and `detected_at`, so the id the user was shown stays
//! valid while the versions change underneath.

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use super::rows::{RowReader, opt_hex, opt_int};
use super::syncs::next_number;
use super::{Journal, JournalError, PairId, during};
use crate::model::{ContentHash, RelPath, Strategy};
use crate::reconcile::ConflictKind;
use crate::timefmt;

/// Whether the user (or a strategy) has settled a conflict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConflictStatus {
    Unresolved,
    Resolved,
}

impl ConflictStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ConflictStatus::Unresolved => "unresolved",
            ConflictStatus::Resolved => "resolved",
        }
    }

    pub fn parse(text: &str) -> Option<ConflictStatus> {
        [ConflictStatus::Unresolved, ConflictStatus::Resolved]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

/// A conflict to record. A side's fields are all `None` when the path is
/// gone on that side; its hash is `None` for a folder. Times are RFC 3339
/// text from [`crate::timefmt::rfc3339`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewConflict {
    pub pair: PairId,
    pub path: RelPath,
    pub kind: ConflictKind,
    pub base_hash: Option<ContentHash>,
    pub local_hash: Option<ContentHash>,
    pub local_modified_at: Option<String>,
    pub local_size: Option<u64>,
    pub remote_hash: Option<ContentHash>,
    pub remote_modified_at: Option<String>,
    pub remote_size: Option<u64>,
    /// Where the other version was kept (`manual`: the conflict copy).
    pub copy_path: Option<RelPath>,
    pub note: Option<String>,
    pub sync_id: Option<String>,
}

/// A recorded conflict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConflictRow {
    pub id: String,
    pub pair_id: PairId,
    /// The pair's name.
    pub pair: String,
    pub path: RelPath,
    pub kind: ConflictKind,
    pub base_hash: Option<ContentHash>,
    pub local_hash: Option<ContentHash>,
    pub local_modified_at: Option<String>,
    pub local_size: Option<u64>,
    pub remote_hash: Option<ContentHash>,
    pub remote_modified_at: Option<String>,
    pub remote_size: Option<u64>,
    pub copy_path: Option<RelPath>,
    pub status: ConflictStatus,
    /// How it was resolved; `None` while unresolved, or when it was closed
    /// because its pair was removed.
    pub strategy: Option<Strategy>,
    pub note: Option<String>,
    pub sync_id: Option<String>,
    pub detected_at: String,
    pub resolved_at: Option<String>,
}

/// Which conflicts [`Journal::conflicts`] returns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConflictFilter {
    /// A pair's name; a removed pair's history is still found.
    pub pair: Option<String>,
    pub include_resolved: bool,
}

const SELECT_CONFLICTS: &str = "SELECT c.id, c.pair_id, p.name AS pair, c.path, c.kind, \
     c.base_hash, c.local_hash, c.local_modified_at, c.local_size, c.remote_hash, \
     c.remote_modified_at, c.remote_size, c.copy_path, c.status, c.strategy, c.note, c.sync_id, \
     c.detected_at, c.resolved_at FROM conflicts c JOIN pairs p ON p.id = c.pair_id";

impl Journal {
    /// Records a conflict and returns its id (`conflict-4`); see the module
    /// docs for a path that already has an unresolved one.
    pub fn record_conflict(&self, conflict: &NewConflict) -> Result<String, JournalError> {
        during("record a conflict", || {
            let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)?;
            let open: Option<String> = tx
                .prepare_cached(
                    "SELECT id FROM conflicts \
                     WHERE pair_id = ?1 AND path = ?2 AND status = 'unresolved'",
                )?
                .query_row(params![conflict.pair.0, conflict.path.as_str()], |row| {
                    row.get(0)
                })
                .optional()?;
            let id = match open {
                Some(id) => id,
                None => {
                    let id = format!("conflict-{}", next_number(&tx, "conflict")?);
                    tx.prepare_cached(
                        "INSERT INTO conflicts (id, pair_id, path, kind, status, detected_at) \
                         VALUES (?1, ?2, ?3, ?4, 'unresolved', ?5)",
                    )?
                    .execute(params![
                        id,
                        conflict.pair.0,
                        conflict.path.as_str(),
                        conflict.kind.as_str(),
                        timefmt::now_rfc3339(),
                    ])?;
                    id
                }
            };
            write_details(&tx, &id, conflict)?;
            tx.commit()?;
            Ok(id)
        })
    }

    /// The conflicts that pass `filter`, oldest first.
    pub fn conflicts(&self, filter: &ConflictFilter) -> Result<Vec<ConflictRow>, JournalError> {
        during("list conflicts", || {
            let pair = match &filter.pair {
                Some(name) => Some(self.pair_id_for_history(name)?.0),
                None => None,
            };
            self.read_conflicts(
                &format!(
                    "{SELECT_CONFLICTS} WHERE (?1 IS NULL OR c.pair_id = ?1) \
                     AND (?2 OR c.status = 'unresolved') ORDER BY c.rowid"
                ),
                params![pair, filter.include_resolved],
            )
        })
    }

    /// One conflict.
    pub fn conflict(&self, id: &str) -> Result<Option<ConflictRow>, JournalError> {
        during("read a conflict", || {
            let rows = self.read_conflicts(&format!("{SELECT_CONFLICTS} WHERE c.id = ?1"), [id])?;
            Ok(rows.into_iter().next())
        })
    }

    /// Marks an unresolved conflict resolved with `strategy`, replacing its
    /// note when one is given. Returns the time of resolution.
    pub fn resolve_conflict(
        &self,
        id: &str,
        strategy: Strategy,
        note: Option<&str>,
    ) -> Result<String, JournalError> {
        during("resolve a conflict", || {
            let now = timefmt::now_rfc3339();
            let updated = self
                .conn
                .prepare_cached(
                    "UPDATE conflicts SET status = 'resolved', strategy = ?2, \
                     note = coalesce(?3, note), resolved_at = ?4 \
                     WHERE id = ?1 AND status = 'unresolved'",
                )?
                .execute(params![id, strategy.as_str(), note, now])?;
            if updated == 1 {
                return Ok(now);
            }
            let resolved_at: Option<Option<String>> = self
                .conn
                .prepare_cached("SELECT resolved_at FROM conflicts WHERE id = ?1")?
                .query_row([id], |row| row.get(0))
                .optional()?;
            Err(match resolved_at {
                None => JournalError::NoSuchConflict(id.to_owned()),
                Some(resolved_at) => JournalError::AlreadyResolved {
                    id: id.to_owned(),
                    resolved_at: resolved_at.unwrap_or_default(),
                },
            })
        })
    }

    fn read_conflicts(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<ConflictRow>, JournalError> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        let mut rows = stmt.query(params)?;
        let mut conflicts = Vec::new();
        while let Some(row) = rows.next()? {
            conflicts.push(decode_conflict(&RowReader::new(row, "conflicts", &["id"]))?);
        }
        Ok(conflicts)
    }
}

/// Sets everything about the versions in conflict; the row's identity, its
/// status and `detected_at` stay.
fn write_details(conn: &Connection, id: &str, c: &NewConflict) -> Result<(), JournalError> {
    conn.prepare_cached(
        "UPDATE conflicts SET kind = ?2, base_hash = ?3, local_hash = ?4, \
         local_modified_at = ?5, local_size = ?6, remote_hash = ?7, remote_modified_at = ?8, \
         remote_size = ?9, copy_path = ?10, note = ?11, sync_id = ?12 WHERE id = ?1",
    )?
    .execute(params![
        id,
        c.kind.as_str(),
        opt_hex(c.base_hash.as_ref()),
        opt_hex(c.local_hash.as_ref()),
        c.local_modified_at,
        opt_int(c.local_size),
        opt_hex(c.remote_hash.as_ref()),
        c.remote_modified_at,
        opt_int(c.remote_size),
        c.copy_path.as_ref().map(RelPath::as_str),
        c.note,
        c.sync_id,
    ])?;
    Ok(())
}

fn decode_conflict(row: &RowReader<'_, '_>) -> Result<ConflictRow, JournalError> {
    Ok(ConflictRow {
        id: row.get("id")?,
        pair_id: PairId(row.get("pair_id")?),
        pair: row.get("pair")?,
        path: row.path("path")?,
        kind: row.parsed("kind", ConflictKind::parse, "a conflict kind")?,
        base_hash: row.opt_hash("base_hash")?,
        local_hash: row.opt_hash("local_hash")?,
        local_modified_at: row.get("local_modified_at")?,
        local_size: row.opt_u64("local_size")?,
        remote_hash: row.opt_hash("remote_hash")?,
        remote_modified_at: row.get("remote_modified_at")?,
        remote_size: row.opt_u64("remote_size")?,
        copy_path: row.opt_path("copy_path")?,
        status: row.parsed(
            "status",
            ConflictStatus::parse,
            "'unresolved' or 'resolved'",
        )?,
        strategy: row.opt_parsed("strategy", Strategy::parse, "a strategy")?,
        note: row.get("note")?,
        sync_id: row.get("sync_id")?,
        detected_at: row.get("detected_at")?,
        resolved_at: row.get("resolved_at")?,
    })
}
