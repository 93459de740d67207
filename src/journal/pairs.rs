//! The `pairs` table: which local folder syncs with which remote.
//!
//! A removed pair keeps its row (with `removed_at` set) because the change
//! log, sync runs and conflicts refer to it and are history the user may
//! still audit; only its base is forgotten. Adding a pair with the same name
//! again revives that row, so its history reads as one story.

use std::time::SystemTime;

use rusqlite::{OptionalExtension, Transaction, TransactionBehavior, params};

use super::rows::RowReader;
use super::{Journal, JournalError, during};
use crate::timefmt;

/// The journal's key for a pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PairId(pub i64);

/// A pair that is currently configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PairRow {
    pub id: PairId,
    pub name: String,
    pub local_root: String,
    pub remote_url: String,
}

impl Journal {
    /// Records the pair `name`, or updates its root and URL. When either
    /// changed, the stored base no longer describes these two sides, so it
    /// is forgotten: the next sync re-discovers both sides (identical files
    /// converge, differing ones become conflicts) instead of reading
    /// "everything in the base is gone" as deletions. When the remote
    /// changed, the versions recorded in its trash are forgotten too.
    pub fn upsert_pair(
        &self,
        name: &str,
        local_root: &str,
        remote_url: &str,
    ) -> Result<PairId, JournalError> {
        during("record a pair", || {
            let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)?;
            let existing = tx
                .prepare_cached(
                    "SELECT id, local_root, remote_url, removed_at FROM pairs WHERE name = ?1",
                )?
                .query_row([name], |row| {
                    Ok((
                        PairId(row.get(0)?),
                        row.get::<_, String>(1)? != local_root,
                        row.get::<_, String>(2)? != remote_url,
                        row.get::<_, Option<String>>(3)?.is_some(),
                    ))
                })
                .optional()?;
            let id = match existing {
                None => PairId(
                    tx.prepare_cached(
                        "INSERT INTO pairs (name, local_root, remote_url, created_at, lineage) \
                     VALUES (?1, ?2, ?3, ?4, lower(hex(randomblob(16)))) RETURNING id",
                    )?
                    .query_row(
                        params![name, local_root, remote_url, timefmt::now_rfc3339()],
                        |row| row.get(0),
                    )?,
                ),
                Some((id, local_moved, remote_moved, removed)) => {
                    let unchanged = !local_moved && !remote_moved;
                    if !unchanged {
                        tracing::warn!(
                            "pair {name} now joins {local_root} with {remote_url}; its base is \
                             forgotten and both sides will be compared afresh"
                        );
                        tx.prepare_cached("DELETE FROM base WHERE pair_id = ?1")?
                            .execute([id.0])?;
                    }
                    // The versions recorded in the old remote's trash are
                    // not in the new remote's: `history` must not list
                    // them, nor `restore` look for them there. The local
                    // trash is the agent's own (in its data dir) and stays.
                    if remote_moved {
                        tx.prepare_cached(
                            "DELETE FROM trashed_versions WHERE pair_id = ?1 AND side = 'remote'",
                        )?
                        .execute([id.0])?;
                        // The new remote's logs are read from their start:
                        // the versions its trash logs name are recorded
                        // again there (and no cursor of the old remote's
                        // logs keeps them from being read).
                        tx.prepare_cached("DELETE FROM change_log_cursors WHERE pair_id = ?1")?
                            .execute([id.0])?;
                    }
                    if removed || !unchanged {
                        tx.prepare_cached(
                            "UPDATE pairs SET local_root = ?2, remote_url = ?3, removed_at = NULL \
                             WHERE id = ?1",
                        )?
                        .execute(params![id.0, local_root, remote_url])?;
                    }
                    id
                }
            };
            tx.commit()?;
            Ok(id)
        })
    }

    /// The configured pairs, by name.
    pub fn pairs(&self) -> Result<Vec<PairRow>, JournalError> {
        during("list the pairs", || {
            let mut stmt = self.conn.prepare_cached(
                "SELECT id, name, local_root, remote_url FROM pairs \
                 WHERE removed_at IS NULL ORDER BY name",
            )?;
            let mut rows = stmt.query([])?;
            let mut pairs = Vec::new();
            while let Some(row) = rows.next()? {
                pairs.push(decode_pair(&RowReader::new(row, "pairs", &["id"]))?);
            }
            Ok(pairs)
        })
    }

    /// The configured pair called `name`, if any. There are only a handful
    /// of pairs, so this filters [`Journal::pairs`].
    pub fn pair_by_name(&self, name: &str) -> Result<Option<PairRow>, JournalError> {
        Ok(self.pairs()?.into_iter().find(|pair| pair.name == name))
    }

    /// Stops tracking the pair `name`: forgets its base and closes its
    /// unresolved conflicts (resolved with the note "pair removed"), but
    /// keeps its changes, sync runs and conflicts as history. Returns false
    /// when no such pair is configured.
    pub fn remove_pair(&self, name: &str) -> Result<bool, JournalError> {
        during("remove a pair", || {
            let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)?;
            let id: Option<i64> = tx
                .prepare_cached("SELECT id FROM pairs WHERE name = ?1 AND removed_at IS NULL")?
                .query_row([name], |row| row.get(0))
                .optional()?;
            let Some(id) = id else {
                return Ok(false);
            };
            let now = timefmt::now_rfc3339();
            tx.prepare_cached("DELETE FROM base WHERE pair_id = ?1")?
                .execute([id])?;
            tx.prepare_cached(
                "UPDATE conflicts SET status = 'resolved', note = 'pair removed', resolved_at = ?2 \
                 WHERE pair_id = ?1 AND status = 'unresolved'",
            )?
            .execute(params![id, now])?;
            tx.prepare_cached("UPDATE pairs SET removed_at = ?2 WHERE id = ?1")?
                .execute(params![id, now])?;
            tx.commit()?;
            Ok(true)
        })
    }

    /// When the user last let the held deletions of `pair` go ahead, if
    /// ever; the mass-deletion guard weighs only deletions after it.
    pub fn deletions_confirmed_at(&self, pair: PairId) -> Result<Option<SystemTime>, JournalError> {
        during("read when deletions were confirmed", || {
            let text: Option<String> = self
                .conn
                .prepare_cached("SELECT deletions_confirmed_at FROM pairs WHERE id = ?1")?
                .query_row([pair.0], |row| row.get(0))
                .optional()?
                .flatten();
            text.map(|text| {
                timefmt::parse(&text).ok_or_else(|| JournalError::CorruptRow {
                    table: "pairs",
                    row: format!("id = {}", pair.0),
                    problem: format!("deletions_confirmed_at {text:?} is not a timestamp"),
                })
            })
            .transpose()
        })
    }

    /// Records that the user let the held deletions of `pair` go ahead
    /// and a sync carried them out, finishing at `at`.
    pub fn confirm_deletions(&self, pair: PairId, at: SystemTime) -> Result<(), JournalError> {
        during("record confirmed deletions", || {
            self.conn
                .prepare_cached("UPDATE pairs SET deletions_confirmed_at = ?2 WHERE id = ?1")?
                .execute(params![pair.0, timefmt::rfc3339(at)])?;
            Ok(())
        })
    }

    /// The id of the pair called `name`, removed or not: history filters
    /// must still find a removed pair's rows.
    pub(super) fn pair_id_for_history(&self, name: &str) -> Result<PairId, JournalError> {
        self.conn
            .prepare_cached("SELECT id FROM pairs WHERE name = ?1")?
            .query_row([name], |row| row.get(0))
            .optional()?
            .map(PairId)
            .ok_or_else(|| JournalError::NoSuchPair(name.to_owned()))
    }
}

fn decode_pair(row: &RowReader<'_, '_>) -> Result<PairRow, JournalError> {
    Ok(PairRow {
        id: PairId(row.get("id")?),
        name: row.get("name")?,
        local_root: row.get("local_root")?,
        remote_url: row.get("remote_url")?,
    })
}
