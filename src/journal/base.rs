//! The `base` table (what both sides last agreed on), the `blobs` table (the
//! base content of small text files, for three-way merges) and [`Step`], the
//! unit in which the engine records progress.
//!
//! Paths in `base` are compared as bytes (SQLite's BINARY collation), which
//! is the order of [`RelPath`] in a [`BaseTree`]; subtree queries use the
//! range in [`below`] so they are answered from the primary key.

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use super::changes::{self, NewChange};
use super::lineage;
use super::rows::{Col, RowReader, below, int, kind_str};
use super::trashed::{self, TrashedVersion};
use super::{Journal, JournalError, PairId, during};
use crate::model::{
    BaseEntry, BaseTree, ContentHash, Entry, FileId, FileMeta, Mode, RelPath, VersionToken,
};
use crate::timefmt;

/// Everything one finished action changes in the journal, applied
/// atomically by [`Journal::commit`]: base edits (in order), the change
/// rows that describe them, and base content for later merges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Step {
    pub base: Vec<BaseEdit>,
    pub changes: Vec<NewChange>,
    pub blobs: Vec<(ContentHash, Vec<u8>)>,
    /// The versions the action moved to a trash.
    pub trashed: Vec<TrashedVersion>,
}

/// One edit of a pair's base.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BaseEdit {
    /// Sets the entry at a path, replacing what was there.
    Put(RelPath, BaseEntry),
    /// Removes that one path (not what lies below it).
    Remove(RelPath),
    /// Removes a path and everything below it.
    RemoveTree(RelPath),
    /// Renames the rows of a subtree from `from` to `to`, replacing any rows
    /// at and below `to`. Refused when one lies inside the other.
    MoveTree { from: RelPath, to: RelPath },
}

/// The query [`decode_base`] reads, as a literal for `concat!`.
macro_rules! select_base {
    () => {
        "SELECT pair_id, path, kind, hash, size, mtime_ns, local_id, remote_id, remote_version, \
         mode FROM base "
    };
}

const SELECT_BASE: &str = concat!(select_base!(), "WHERE pair_id = ?1");

/// The columns of [`select_base!`] by position (see [`Col`]).
mod column {
    use super::Col;
    pub const PATH: Col<'static> = Col::At(1, "path");
    pub const KIND: Col<'static> = Col::At(2, "kind");
    pub const HASH: Col<'static> = Col::At(3, "hash");
    pub const SIZE: Col<'static> = Col::At(4, "size");
    pub const MTIME_NS: Col<'static> = Col::At(5, "mtime_ns");
    pub const LOCAL_ID: Col<'static> = Col::At(6, "local_id");
    pub const REMOTE_ID: Col<'static> = Col::At(7, "remote_id");
    pub const REMOTE_VERSION: Col<'static> = Col::At(8, "remote_version");
    pub const MODE: Col<'static> = Col::At(9, "mode");
}

/// The base rows of one root and everything below it. An exact lookup and
/// a range, each a search of the primary key: `path = ?2 OR <range>` next
/// to `pair_id = ?1` would make SQLite read all of the pair's rows. The
/// `*_BELOW` statements are tested for that too.
pub(super) const SELECT_BASE_WITHIN: &str = concat!(
    select_base!(),
    "WHERE pair_id = ?1 AND path = ?2 UNION ALL ",
    select_base!(),
    "WHERE pair_id = ?1 AND ",
    below!("path", "?2")
);

pub(super) const DELETE_BELOW: &str = concat!(
    "DELETE FROM base WHERE pair_id = ?1 AND ",
    below!("path", "?2")
);

/// Renames the rows below `?2` to lie below `?3`. `substr` and `length`
/// both count characters, so the suffix after `?2` is cut exactly.
pub(super) const MOVE_BELOW: &str = concat!(
    "UPDATE base SET path = ?3 || substr(path, length(?2) + 1) WHERE pair_id = ?1 AND ",
    below!("path", "?2")
);

impl Journal {
    /// The whole base of a pair.
    pub fn load_base(&self, pair: PairId) -> Result<BaseTree, JournalError> {
        during("load the base", || {
            let mut rows = Vec::new();
            self.read_base(SELECT_BASE, params![pair.0], &mut rows)?;
            Ok(rows.into_iter().collect())
        })
    }

    /// The base of `roots`, each with everything below it. Overlapping
    /// roots are fine.
    pub fn load_base_within(
        &self,
        pair: PairId,
        roots: &[RelPath],
    ) -> Result<BaseTree, JournalError> {
        during("load part of the base", || {
            let mut rows = Vec::new();
            for root in roots {
                self.read_base(
                    SELECT_BASE_WITHIN,
                    params![pair.0, root.as_str()],
                    &mut rows,
                )?;
            }
            Ok(rows.into_iter().collect())
        })
    }

    /// How many files and folders the base of a pair holds.
    pub fn base_counts(&self, pair: PairId) -> Result<(u64, u64), JournalError> {
        during("count the base", || {
            let mut stmt = self.conn.prepare_cached(
                "SELECT count(*) FILTER (WHERE kind = 'file'), count(*) FILTER (WHERE kind = 'dir') \
                 FROM base WHERE pair_id = ?1",
            )?;
            let (files, dirs): (i64, i64) =
                stmt.query_row([pair.0], |row| Ok((row.get(0)?, row.get(1)?)))?;
            Ok((files.unsigned_abs(), dirs.unsigned_abs()))
        })
    }

    /// Applies a step in one transaction: either all of it is in the
    /// journal afterwards, or (on any error, or a crash) none of it.
    pub fn commit(&self, pair: PairId, step: &Step) -> Result<(), JournalError> {
        self.commit_batch(pair, std::slice::from_ref(step))
    }

    /// Records several finished steps in one transaction: all of them or
    /// none. The executor groups steps that finished together, so a sync of
    /// many small files pays for one flush per batch rather than per file;
    /// a crash that loses a batch only makes the next sync find both sides
    /// already agreeing (see `docs/journal.md`, "Crash safety"). A batch
    /// that changes the base advances the pair's generation (see
    /// [`Journal::lineage`]).
    pub fn commit_batch(&self, pair: PairId, steps: &[Step]) -> Result<(), JournalError> {
        during("record a step", || {
            let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)?;
            let now = timefmt::now_rfc3339();
            if steps.iter().any(|step| !step.base.is_empty()) {
                lineage::advance(&tx, pair)?;
            }
            for step in steps {
                for edit in &step.base {
                    apply_edit(&tx, pair, edit, &now)?;
                }
                // Before the changes: the version that replaced one must
                // not be taken for it.
                for version in &step.trashed {
                    trashed::insert(&tx, pair, &now, version)?;
                }
                for change in &step.changes {
                    changes::insert(&tx, pair, &now, change)?;
                    crate::faults::recording(&change.path);
                }
                for (hash, data) in &step.blobs {
                    if ContentHash::of_bytes(data) != *hash {
                        return Err(JournalError::BlobHashMismatch { hash: *hash });
                    }
                    tx.prepare_cached("INSERT OR IGNORE INTO blobs (hash, data) VALUES (?1, ?2)")?
                        .execute(params![hash.to_hex(), data])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
    }

    /// The stored content with this hash, checked against it.
    pub fn blob(&self, hash: &ContentHash) -> Result<Option<Vec<u8>>, JournalError> {
        during("read a stored base version", || {
            let data: Option<Vec<u8>> = self
                .conn
                .prepare_cached("SELECT data FROM blobs WHERE hash = ?1")?
                .query_row([hash.to_hex()], |row| row.get(0))
                .optional()?;
            match data {
                Some(data) if ContentHash::of_bytes(&data) != *hash => {
                    Err(JournalError::CorruptRow {
                        table: "blobs",
                        row: format!("(hash = '{}')", hash.to_hex()),
                        problem: "the data does not hash to the row's hash".to_owned(),
                    })
                }
                data => Ok(data),
            }
        })
    }

    /// Deletes stored content that no base row and no unresolved conflict
    /// refers to (a conflict needs its base version until it is resolved,
    /// for `auto_merge`). Returns how many blobs went.
    pub fn gc_blobs(&self) -> Result<usize, JournalError> {
        during("delete unused stored base versions", || {
            // `NOT IN` with a NULL in the list is never true, hence the
            // `IS NOT NULL` filters.
            Ok(self
                .conn
                .prepare_cached(
                    "DELETE FROM blobs \
                     WHERE hash NOT IN (SELECT hash FROM base WHERE hash IS NOT NULL) \
                     AND hash NOT IN (SELECT base_hash FROM conflicts \
                                      WHERE status = 'unresolved' AND base_hash IS NOT NULL)",
                )?
                .execute([])?)
        })
    }

    /// Appends the rows `sql` selects to `rows`. The caller builds its
    /// tree from them in one go: a `BTreeMap` filled by inserting the rows
    /// one by one in path order (the order they come in) would leave its
    /// nodes about half full, nearly doubling the base's size in memory.
    fn read_base(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        out: &mut Vec<(RelPath, BaseEntry)>,
    ) -> Result<(), JournalError> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        let mut rows = stmt.query(params)?;
        while let Some(row) = rows.next()? {
            let row = RowReader::new(row, "base", &["pair_id", "path"]);
            out.push((row.path(column::PATH)?, decode_base(&row)?));
        }
        Ok(())
    }
}

fn decode_base(row: &RowReader<'_, '_>) -> Result<BaseEntry, JournalError> {
    let mode = row
        .opt_u64(column::MODE)?
        .map(|bits| Mode::from_bits(bits as u32));
    let entry = if row.is_dir(column::KIND)? {
        Entry::dir(mode)
    } else {
        Entry::File(FileMeta {
            hash: row.hash(column::HASH)?,
            size: row.u64(column::SIZE)?,
            mtime_ns: row.get(column::MTIME_NS)?,
            mode,
        })
    };
    Ok(BaseEntry {
        entry,
        local_id: row.opt_text(column::LOCAL_ID)?.map(FileId::new),
        remote_id: row.opt_text(column::REMOTE_ID)?.map(FileId::new),
        remote_version: row.opt_text(column::REMOTE_VERSION)?.map(VersionToken::new),
    })
}

fn apply_edit(
    conn: &Connection,
    pair: PairId,
    edit: &BaseEdit,
    now: &str,
) -> Result<(), JournalError> {
    match edit {
        BaseEdit::Put(path, base) => {
            let file = base.entry.file();
            conn.prepare_cached(
                "INSERT OR REPLACE INTO base (pair_id, path, kind, hash, size, mtime_ns, \
                 local_id, remote_id, remote_version, synced_at, mode) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?
            .execute(params![
                pair.0,
                path.as_str(),
                kind_str(base.entry.is_dir()),
                file.map(|meta| meta.hash.to_hex()),
                file.map(|meta| int(meta.size)),
                file.map(|meta| meta.mtime_ns),
                base.local_id.as_ref().map(FileId::as_str),
                base.remote_id.as_ref().map(FileId::as_str),
                base.remote_version.as_ref().map(VersionToken::as_str),
                now,
                base.entry.mode().map(Mode::bits),
            ])?;
        }
        BaseEdit::Remove(path) => {
            remove_one(conn, pair, path)?;
        }
        BaseEdit::RemoveTree(path) => {
            remove_tree(conn, pair, path)?;
        }
        BaseEdit::MoveTree { from, to } => {
            if from == to {
                return Ok(());
            }
            if to.is_within(from) || from.is_within(to) {
                return Err(JournalError::MoveIntoItself {
                    from: from.clone(),
                    to: to.clone(),
                });
            }
            remove_tree(conn, pair, to)?;
            conn.prepare_cached("UPDATE base SET path = ?3 WHERE pair_id = ?1 AND path = ?2")?
                .execute(params![pair.0, from.as_str(), to.as_str()])?;
            conn.prepare_cached(MOVE_BELOW)?.execute(params![
                pair.0,
                from.as_str(),
                to.as_str()
            ])?;
        }
    }
    Ok(())
}

fn remove_tree(conn: &Connection, pair: PairId, root: &RelPath) -> Result<(), JournalError> {
    remove_one(conn, pair, root)?;
    conn.prepare_cached(DELETE_BELOW)?
        .execute(params![pair.0, root.as_str()])?;
    Ok(())
}

fn remove_one(conn: &Connection, pair: PairId, path: &RelPath) -> Result<(), JournalError> {
    conn.prepare_cached("DELETE FROM base WHERE pair_id = ?1 AND path = ?2")?
        .execute(params![pair.0, path.as_str()])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each position in [`column`] names the column both base queries
    /// select there.
    #[test]
    fn the_base_columns_are_where_the_queries_put_them() {
        let journal = Journal::open_in_memory().unwrap();
        let columns = [
            column::PATH,
            column::KIND,
            column::HASH,
            column::SIZE,
            column::MTIME_NS,
            column::LOCAL_ID,
            column::REMOTE_ID,
            column::REMOTE_VERSION,
            column::MODE,
        ];
        for sql in [SELECT_BASE, SELECT_BASE_WITHIN] {
            let stmt = journal.conn.prepare(sql).unwrap();
            for col in columns {
                let Col::At(index, name) = col else {
                    panic!("{col} is not read by position");
                };
                assert_eq!(stmt.column_name(index).unwrap(), name, "{sql}");
            }
        }
    }
}
