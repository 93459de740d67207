//! The `syncs` table: one row per sync run, from `begin_sync` (status
//! `sync_in_progress`) to `finish_sync`, with what the run did.
//!
//! Sync ids (`sync-17`) and conflict ids (`conflict-4`) come from the
//! `counters` table, so they are short, readable and never reused within a
//! journal, even after rows are deleted by hand.

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use super::rows::{RowReader, int};
use super::{Journal, JournalError, PairId, during};
use crate::timefmt;

/// Where a sync run stands (the specification's `status` values).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SyncStatus {
    InProgress,
    Completed,
    /// Finished, with at least one conflict left for the user.
    CompletedWithConflicts,
    Failed,
    /// The agent stopped (crashed, was killed) while the run was going.
    Interrupted,
}

impl SyncStatus {
    pub const ALL: [SyncStatus; 5] = [
        SyncStatus::InProgress,
        SyncStatus::Completed,
        SyncStatus::CompletedWithConflicts,
        SyncStatus::Failed,
        SyncStatus::Interrupted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SyncStatus::InProgress => "sync_in_progress",
            SyncStatus::Completed => "completed",
            SyncStatus::CompletedWithConflicts => "completed_with_conflicts",
            SyncStatus::Failed => "failed",
            SyncStatus::Interrupted => "interrupted",
        }
    }

    pub fn parse(text: &str) -> Option<SyncStatus> {
        SyncStatus::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// What a sync run did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncCounts {
    pub uploaded: u64,
    pub downloaded: u64,
    pub deleted_local: u64,
    pub deleted_remote: u64,
    pub moved: u64,
    pub conflicts: u64,
    pub errors: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
}

/// A sync run as recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncRun {
    pub id: String,
    pub pair_id: PairId,
    /// The pair's name.
    pub pair: String,
    /// What started the run: `start-up`, `watch`, `poll`, `api`, `schedule`…
    pub trigger: String,
    pub status: SyncStatus,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub counts: SyncCounts,
    /// Why the run failed, for [`SyncStatus::Failed`].
    pub error: Option<String>,
}

const SELECT_SYNCS: &str = "SELECT s.id, s.pair_id, p.name AS pair, s.trigger, s.status, \
     s.started_at, s.finished_at, s.uploaded, s.downloaded, s.deleted_local, s.deleted_remote, \
     s.moved, s.conflicts, s.errors, s.bytes_up, s.bytes_down, s.error \
     FROM syncs s JOIN pairs p ON p.id = s.pair_id";

impl Journal {
    /// Records the start of a sync run and returns its id (`sync-17`).
    pub fn begin_sync(&self, pair: PairId, trigger: &str) -> Result<String, JournalError> {
        during("record the start of a sync", || {
            let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)?;
            let id = format!("sync-{}", next_number(&tx, "sync")?);
            tx.prepare_cached(
                "INSERT INTO syncs (id, pair_id, trigger, status, started_at) \
                 VALUES (?1, ?2, ?3, 'sync_in_progress', ?4)",
            )?
            .execute(params![id, pair.0, trigger, timefmt::now_rfc3339()])?;
            tx.commit()?;
            Ok(id)
        })
    }

    /// Records the end of a sync run that is in progress.
    pub fn finish_sync(
        &self,
        sync_id: &str,
        status: SyncStatus,
        counts: &SyncCounts,
        error: Option<&str>,
    ) -> Result<(), JournalError> {
        during("record the end of a sync", || {
            let updated = self
                .conn
                .prepare_cached(
                    "UPDATE syncs SET status = ?2, finished_at = ?3, uploaded = ?4, \
                     downloaded = ?5, deleted_local = ?6, deleted_remote = ?7, moved = ?8, \
                     conflicts = ?9, errors = ?10, bytes_up = ?11, bytes_down = ?12, error = ?13 \
                     WHERE id = ?1 AND status = 'sync_in_progress'",
                )?
                .execute(params![
                    sync_id,
                    status.as_str(),
                    timefmt::now_rfc3339(),
                    int(counts.uploaded),
                    int(counts.downloaded),
                    int(counts.deleted_local),
                    int(counts.deleted_remote),
                    int(counts.moved),
                    int(counts.conflicts),
                    int(counts.errors),
                    int(counts.bytes_up),
                    int(counts.bytes_down),
                    error,
                ])?;
            if updated == 1 {
                return Ok(());
            }
            let current: Option<String> = self
                .conn
                .prepare_cached("SELECT status FROM syncs WHERE id = ?1")?
                .query_row([sync_id], |row| row.get(0))
                .optional()?;
            Err(match current {
                None => JournalError::NoSuchSync(sync_id.to_owned()),
                Some(status) => JournalError::SyncNotInProgress {
                    id: sync_id.to_owned(),
                    status,
                },
            })
        })
    }

    /// One sync run.
    pub fn sync_run(&self, sync_id: &str) -> Result<Option<SyncRun>, JournalError> {
        during("read a sync run", || {
            let runs = self.read_syncs(&format!("{SELECT_SYNCS} WHERE s.id = ?1"), [sync_id])?;
            Ok(runs.into_iter().next())
        })
    }

    /// The latest sync runs, newest first, of one pair or of all.
    pub fn recent_syncs(
        &self,
        pair: Option<PairId>,
        limit: usize,
    ) -> Result<Vec<SyncRun>, JournalError> {
        during("list recent syncs", || {
            let limit = int(limit as u64);
            match pair {
                Some(pair) => self.read_syncs(
                    &format!("{SELECT_SYNCS} WHERE s.pair_id = ?1 ORDER BY s.rowid DESC LIMIT ?2"),
                    params![pair.0, limit],
                ),
                None => self.read_syncs(
                    &format!("{SELECT_SYNCS} ORDER BY s.rowid DESC LIMIT ?1"),
                    [limit],
                ),
            }
        })
    }

    /// The pair's latest run that completed (with or without conflicts).
    pub fn last_completed_sync(&self, pair: PairId) -> Result<Option<SyncRun>, JournalError> {
        during("find the last completed sync", || {
            let runs = self.read_syncs(
                &format!(
                    "{SELECT_SYNCS} WHERE s.pair_id = ?1 \
                     AND s.status IN ('completed', 'completed_with_conflicts') \
                     ORDER BY s.rowid DESC LIMIT 1"
                ),
                [pair.0],
            )?;
            Ok(runs.into_iter().next())
        })
    }

    /// Marks every run still `sync_in_progress` as `interrupted`. Called at
    /// start-up, before any new run begins: a run left in progress then is
    /// one the previous agent never finished.
    pub fn mark_interrupted_syncs(&self) -> Result<usize, JournalError> {
        during("mark interrupted syncs", || {
            Ok(self
                .conn
                .prepare_cached(
                    "UPDATE syncs SET status = 'interrupted', finished_at = ?1 \
                     WHERE status = 'sync_in_progress'",
                )?
                .execute([timefmt::now_rfc3339()])?)
        })
    }

    fn read_syncs(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<SyncRun>, JournalError> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        let mut rows = stmt.query(params)?;
        let mut runs = Vec::new();
        while let Some(row) = rows.next()? {
            runs.push(decode_sync(&RowReader::new(row, "syncs", &["id"]))?);
        }
        Ok(runs)
    }
}

/// The next number of the counter `name` (`sync`, `conflict`); part of the
/// caller's transaction, so a rolled-back insert does not use it up.
pub(super) fn next_number(conn: &Connection, name: &str) -> Result<i64, JournalError> {
    Ok(conn
        .prepare_cached("UPDATE counters SET last = last + 1 WHERE name = ?1 RETURNING last")?
        .query_row([name], |row| row.get(0))?)
}

fn decode_sync(row: &RowReader<'_, '_>) -> Result<SyncRun, JournalError> {
    Ok(SyncRun {
        id: row.get("id")?,
        pair_id: PairId(row.get("pair_id")?),
        pair: row.get("pair")?,
        trigger: row.get("trigger")?,
        status: row.parsed("status", SyncStatus::parse, "a sync status")?,
        started_at: row.get("started_at")?,
        finished_at: row.get("finished_at")?,
        counts: SyncCounts {
            uploaded: row.u64("uploaded")?,
            downloaded: row.u64("downloaded")?,
            deleted_local: row.u64("deleted_local")?,
            deleted_remote: row.u64("deleted_remote")?,
            moved: row.u64("moved")?,
            conflicts: row.u64("conflicts")?,
            errors: row.u64("errors")?,
            bytes_up: row.u64("bytes_up")?,
            bytes_down: row.u64("bytes_down")?,
        },
        error: row.get("error")?,
    })
}
