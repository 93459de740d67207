//! The `changes` table: an append-only log of what happened to each path
//! (created, modified, deleted, moved), on which side it started, on which
//! device, and which sync run carried it across.
//!
//! Rows are only ever inserted, by [`Journal::commit`] as part of a step.
//! Triggers abort any `UPDATE` or `DELETE`, including one typed into
//! `sqlite3`. There is deliberately no pruning: the log is the audit trail,
//! a row costs about 200 bytes, and a million changes is a few hundred
//! megabytes; should that ever matter, pruning will be a new, explicit,
//! documented migration rather than a quiet delete.

use std::time::SystemTime;

use rusqlite::types::Value;
use rusqlite::{Connection, params, params_from_iter};

use super::rows::{RowReader, below, int, kind_str, opt_hex, opt_int, within};
use super::{Journal, JournalError, PairId, during, origins};
use crate::model::{ContentHash, RelPath, Side};
use crate::timefmt;

/// What happened to a path (the specification's section 6.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChangeType {
    Created,
    Modified,
    Deleted,
    /// Moved or renamed; the row's `from_path` says from where.
    Moved,
}

impl ChangeType {
    pub const ALL: [ChangeType; 4] = [
        ChangeType::Created,
        ChangeType::Modified,
        ChangeType::Deleted,
        ChangeType::Moved,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ChangeType::Created => "created",
            ChangeType::Modified => "modified",
            ChangeType::Deleted => "deleted",
            ChangeType::Moved => "moved",
        }
    }

    pub fn parse(text: &str) -> Option<ChangeType> {
        ChangeType::ALL.into_iter().find(|t| t.as_str() == text)
    }
}

/// A change to record. Its time is the time of the commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewChange {
    pub change_type: ChangeType,
    pub path: RelPath,
    /// Where a move came from; set exactly for [`ChangeType::Moved`].
    pub from_path: Option<RelPath>,
    pub is_dir: bool,
    /// The side on which the change was first seen.
    pub origin_side: Side,
    /// The device that made it, as far as this agent knows.
    pub origin_device: String,
    /// The sync run that carried the change to the other side.
    pub sync_id: Option<String>,
    /// The file's content after the change; `None` for folders and deletions.
    pub hash: Option<ContentHash>,
    pub size: Option<u64>,
}

/// A recorded change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangeRow {
    pub id: i64,
    /// The pair's name.
    pub pair: String,
    pub at: String,
    pub change_type: ChangeType,
    pub path: RelPath,
    pub from_path: Option<RelPath>,
    pub is_dir: bool,
    pub origin_side: Side,
    pub origin_device: String,
    /// When the origin device made the change, where known: the time of
    /// the row for a change made here, the time in the origin device's log
    /// for one from another device.
    pub origin_at: Option<String>,
    pub sync_id: Option<String>,
    pub hash: Option<ContentHash>,
    pub size: Option<u64>,
}

/// Files a pair's syncs deleted in one recorded batch, on either side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeletedFiles {
    /// When the batch was recorded.
    pub at: SystemTime,
    pub files: u64,
}

/// Which changes [`Journal::changes`] returns. Every field narrows; the
/// default is the whole log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChangeFilter {
    /// A pair's name; a removed pair's history is still found.
    pub pair: Option<String>,
    /// Only changes at or after this time: RFC 3339, or a date (midnight UTC).
    pub since: Option<String>,
    /// Only changes to this path or below it, component-wise (`docs` matches
    /// `docs` and `docs/a`, not `docs2`); a move matches by either end.
    pub path_prefix: Option<RelPath>,
    /// Only changes made by this device (`origin_device`).
    pub device: Option<String>,
    /// At most this many: the most recent ones.
    pub limit: Option<usize>,
}

impl Journal {
    /// The changes that pass `filter`, oldest first.
    pub fn changes(&self, filter: &ChangeFilter) -> Result<Vec<ChangeRow>, JournalError> {
        during("read the change log", || {
            let pair = match &filter.pair {
                Some(name) => Some(self.pair_id_for_history(name)?),
                None => None,
            };
            let since = match &filter.since {
                Some(text) => Some(normalize_timestamp(text)?),
                None => None,
            };
            let limit = filter.limit.map_or(-1, |n| int(n as u64));
            let values = [
                pair.map_or(Value::Null, |p| Value::Integer(p.0)),
                since.map_or(Value::Null, Value::Text),
                filter
                    .path_prefix
                    .as_ref()
                    .map_or(Value::Null, |p| Value::Text(p.as_str().to_owned())),
                filter
                    .device
                    .as_ref()
                    .map_or(Value::Null, |d| Value::Text(d.clone())),
                Value::Integer(limit),
            ];
            let mut stmt = self.conn.prepare_cached(&select_changes(filter))?;
            let mut rows = stmt.query(params_from_iter(values))?;
            let mut changes = Vec::new();
            while let Some(row) = rows.next()? {
                changes.push(decode_change(&RowReader::new(row, "changes", &["id"]))?);
            }
            changes.reverse();
            Ok(changes)
        })
    }
}

impl Journal {
    /// The files the syncs of `pair` deleted (on either side) at or after
    /// `since`, per recorded batch, oldest first: what the mass-deletion
    /// guard weighs besides the plan in front of it. Folders are not
    /// counted; their files are, one by one.
    pub fn deleted_files_since(
        &self,
        pair: PairId,
        since: SystemTime,
    ) -> Result<Vec<DeletedFiles>, JournalError> {
        during("count recent deletions", || {
            let mut stmt = self.conn.prepare_cached(
                "SELECT at, count(*) AS files FROM changes \
                 WHERE at >= ?2 AND pair_id = ?1 AND type = 'deleted' AND kind = 'file' \
                 GROUP BY at ORDER BY at",
            )?;
            let mut rows = stmt.query(params![pair.0, timefmt::rfc3339(since)])?;
            let mut batches = Vec::new();
            while let Some(row) = rows.next()? {
                let row = RowReader::new(row, "changes", &["at"]);
                let at: String = row.get("at")?;
                batches.push(DeletedFiles {
                    at: timefmt::parse(&at).ok_or_else(|| row.corrupt("at is not a timestamp"))?,
                    files: row.get::<i64>("files")?.max(0) as u64,
                });
            }
            Ok(batches)
        })
    }

    /// The id of `pair`'s newest change; 0 when it has none.
    pub fn last_change_id(&self, pair: PairId) -> Result<u64, JournalError> {
        during("read the change log", || {
            let id: Option<i64> = self
                .conn
                .prepare_cached("SELECT max(id) FROM changes WHERE pair_id = ?1")?
                .query_row([pair.0], |row| row.get(0))?;
            Ok(id.unwrap_or(0).unsigned_abs())
        })
    }

    /// The changes of `pair` made on this device (origin side local) after
    /// the change `after`, oldest first, at most `limit`: what this device
    /// tells the others through its log on the remote.
    pub fn local_changes_after(
        &self,
        pair: PairId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<ChangeRow>, JournalError> {
        during("read the change log", || {
            let mut stmt = self.conn.prepare_cached(
                "SELECT c.id, p.name AS pair, c.at, c.type, c.path, c.from_path, c.kind, \
                 c.origin_side, c.origin_device, c.origin_at, c.sync_id, c.hash, c.size \
                 FROM changes c JOIN pairs p ON p.id = c.pair_id \
                 WHERE c.pair_id = ?1 AND c.id > ?2 AND c.origin_side = 'local' \
                 ORDER BY c.id LIMIT ?3",
            )?;
            let mut rows = stmt.query(params![pair.0, int(after), int(limit as u64)])?;
            let mut changes = Vec::new();
            while let Some(row) = rows.next()? {
                changes.push(decode_change(&RowReader::new(row, "changes", &["id"]))?);
            }
            Ok(changes)
        })
    }
}

/// The query for `filter`. Each filter has a fixed parameter number (pair
/// `?1`, since `?2`, path prefix `?3`, device `?4`, limit `?5`; the last
/// is always there, so every variant binds all five), so only the text varies
/// with which filters are set, and each variant is prepared once.
pub(super) fn select_changes(filter: &ChangeFilter) -> String {
    let mut sql = String::from(
        "SELECT c.id, p.name AS pair, c.at, c.type, c.path, c.from_path, c.kind, \
         c.origin_side, c.origin_device, c.origin_at, c.sync_id, c.hash, c.size \
         FROM changes c JOIN pairs p ON p.id = c.pair_id WHERE 1 = 1",
    );
    if filter.pair.is_some() {
        sql.push_str(" AND c.pair_id = ?1");
    }
    if filter.since.is_some() {
        sql.push_str(" AND c.at >= ?2");
    }
    if filter.path_prefix.is_some() {
        sql.push_str(concat!(
            " AND (",
            within!("c.path", "?3"),
            " OR ",
            within!("c.from_path", "?3"),
            ")"
        ));
    }
    if filter.device.is_some() {
        sql.push_str(" AND c.origin_device = ?4");
    }
    // The newest rows are taken; the caller puts them back in order.
    sql.push_str(" ORDER BY c.id DESC LIMIT ?5");
    sql
}

/// Appends one change row, naming its origin device where it can be
/// found (see `journal/origins.rs`); part of a step's transaction.
pub(super) fn insert(
    conn: &Connection,
    pair: PairId,
    at: &str,
    change: &NewChange,
) -> Result<(), JournalError> {
    let origin = origins::resolve(conn, pair, at, change)?;
    let (origin_device, origin_at) = match &origin {
        Some(origin) => (origin.device.as_str(), Some(origin.at.as_str())),
        None => (change.origin_device.as_str(), None),
    };
    conn.prepare_cached(
        "INSERT INTO changes (pair_id, at, type, path, from_path, kind, origin_side, \
         origin_device, sync_id, hash, size, origin_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?
    .execute(params![
        pair.0,
        at,
        change.change_type.as_str(),
        change.path.as_str(),
        change.from_path.as_ref().map(RelPath::as_str),
        kind_str(change.is_dir),
        change.origin_side.as_str(),
        origin_device,
        change.sync_id,
        opt_hex(change.hash.as_ref()),
        opt_int(change.size),
        origin_at,
    ])?;
    Ok(())
}

/// A user's timestamp in the journal's form, so text comparison is time
/// comparison.
fn normalize_timestamp(text: &str) -> Result<String, JournalError> {
    timefmt::parse(text)
        .map(timefmt::rfc3339)
        .ok_or_else(|| JournalError::BadTimestamp {
            value: text.to_owned(),
        })
}

fn decode_change(row: &RowReader<'_, '_>) -> Result<ChangeRow, JournalError> {
    Ok(ChangeRow {
        id: row.get("id")?,
        pair: row.get("pair")?,
        at: row.get("at")?,
        change_type: row.parsed("type", ChangeType::parse, "a change type")?,
        path: row.path("path")?,
        from_path: row.opt_path("from_path")?,
        is_dir: row.is_dir("kind")?,
        origin_side: row.side("origin_side")?,
        origin_device: row.get("origin_device")?,
        origin_at: row.get("origin_at")?,
        sync_id: row.get("sync_id")?,
        hash: row.opt_hash("hash")?,
        size: row.opt_u64("size")?,
    })
}
