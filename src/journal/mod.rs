//! The SQLite journal: the base state both sides agreed on, an append-only
//! change log, sync runs, conflicts and the stored base content of small
//! text files. It is the agent's only durable state and the one module that
//! talks SQL; no `rusqlite` type leaves it.
//!
//! The journal is for people too: users audit it with the `sqlite3` CLI while
//! the agent runs, so tables and columns have plain names, timestamps are
//! RFC 3339 text (see [`crate::timefmt`]), hashes are lowercase hex, and the
//! schema is documented in `docs/journal.md` (whose queries the tests run).
//!
//! What it guarantees: a [`Step`] is applied in one transaction, so a crash
//! at any instant leaves either the whole step or none of it; a file written
//! by a newer schema is refused, never downgraded; a damaged row (say, edited
//! by hand) is reported as [`JournalError::CorruptRow`] naming the table and
//! row, never a panic. What it does not do: decide anything. It stores what
//! the engine tells it and answers queries; it never touches the file system
//! outside its own database file, and it holds no locks beyond SQLite's.

mod base;
mod changes;
mod conflicts;
mod lineage;
mod origins;
mod pairs;
mod rows;
mod schema;
mod syncs;
#[cfg(test)]
mod tests;
mod tokens;
mod trashed;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::Connection;

use crate::model::{ContentHash, RelPath};

pub use base::{BaseEdit, Step};
pub use changes::{ChangeFilter, ChangeRow, ChangeType, DeletedFiles, NewChange};
pub use conflicts::{ConflictFilter, ConflictRow, ConflictStatus, NewConflict};
pub use lineage::Lineage;
pub use origins::{LogPosition, Origin, RemoteChange, UNKNOWN_DEVICE};
pub use pairs::{PairId, PairRow};
pub use syncs::{SyncCounts, SyncRun, SyncStatus};
pub use tokens::TokenRow;
pub use trashed::{ForeignTrashed, TrashedRow, TrashedVersion};

/// An open journal. It owns one SQLite connection, which is not `Sync`:
/// callers share a `Journal` behind a `Mutex`.
pub struct Journal {
    conn: Connection,
}

/// What went wrong with the journal, with what the user can do about it.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error(
        "cannot open the journal {}: {source}; check that the state directory exists and is \
         writable and that the file is a Prism Sync journal. If the file is damaged, move it \
         aside (to journal.db.broken, say) and start again: a new journal is made, and the next \
         sync compares both sides afresh (differing files become conflicts, nothing is \
         deleted)",
        path.display()
    )]
    Open { path: PathBuf, source: SqliteError },
    #[error(
        "the journal {} has schema version {found}, but this Prism Sync understands versions up \
         to {supported}: a newer Prism Sync wrote it. Upgrade Prism Sync, or move the file aside \
         to start a new journal",
        path.display()
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error(
        "cannot migrate the journal {} from schema version {from} to {to}: {source}; nothing was \
         changed",
        path.display()
    )]
    Migrate {
        path: PathBuf,
        from: i64,
        to: i64,
        source: SqliteError,
    },
    #[error("cannot {operation} in the journal: {source}")]
    Sql {
        operation: &'static str,
        source: SqliteError,
    },
    #[error(
        "the journal's {table} row {row} is damaged: {problem}; correct or delete that row with \
         sqlite3, or move the journal aside to rebuild it"
    )]
    CorruptRow {
        table: &'static str,
        row: String,
        problem: String,
    },
    #[error("there is no pair named {0:?} in the journal")]
    NoSuchPair(String),
    #[error("there is no sync run {0:?} in the journal")]
    NoSuchSync(String),
    #[error("sync run {id} is already {status}; only a sync in progress can be finished")]
    SyncNotInProgress { id: String, status: String },
    #[error("there is no conflict {0:?} in the journal")]
    NoSuchConflict(String),
    #[error("conflict {id} was already resolved at {resolved_at}")]
    AlreadyResolved { id: String, resolved_at: String },
    #[error("cannot move {from} to {to} in the base: one lies inside the other")]
    MoveIntoItself { from: RelPath, to: RelPath },
    #[error("the blob given for {hash} does not hash to it")]
    BlobHashMismatch { hash: ContentHash },
    #[error(
        "{value:?} is not a timestamp; give RFC 3339 such as 2025-02-09T16:00:00Z or a date such \
         as 2025-02-09"
    )]
    BadTimestamp { value: String },
}

/// An error reported by SQLite. Opaque, so that `rusqlite` stays private to
/// this module; its message is SQLite's own.
#[derive(Debug)]
pub struct SqliteError(rusqlite::Error);

impl fmt::Display for SqliteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for SqliteError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// Inside the journal a bare SQLite error gets a generic operation; the
/// public method it surfaces from names the real one through [`during`].
impl From<rusqlite::Error> for JournalError {
    fn from(source: rusqlite::Error) -> JournalError {
        JournalError::Sql {
            operation: "use the journal",
            source: SqliteError(source),
        }
    }
}

/// Runs `body`, labelling any SQLite error with `operation` ("load the base").
fn during<T>(
    operation: &'static str,
    body: impl FnOnce() -> Result<T, JournalError>,
) -> Result<T, JournalError> {
    body().map_err(|err| match err {
        JournalError::Sql { source, .. } => JournalError::Sql { operation, source },
        other => other,
    })
}

/// How long a statement waits for a lock held by another connection (a user
/// writing with `sqlite3`, a checkpoint) before giving up with "busy".
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

impl Journal {
    /// Opens the journal at `path`, creating the file if it does not exist
    /// (the caller creates the state directory) and migrating it to the
    /// current schema.
    pub fn open(path: &Path) -> Result<Journal, JournalError> {
        Journal::set_up(Connection::open(path), path)
    }

    /// A journal that lives in memory only, for tests.
    pub fn open_in_memory() -> Result<Journal, JournalError> {
        Journal::set_up(Connection::open_in_memory(), Path::new(":memory:"))
    }

    fn set_up(opened: rusqlite::Result<Connection>, path: &Path) -> Result<Journal, JournalError> {
        let open_error = |source| JournalError::Open {
            path: path.to_owned(),
            source: SqliteError(source),
        };
        let conn = opened.map_err(open_error)?;
        schema::configure(&conn).map_err(open_error)?;
        schema::migrate(&conn, path, schema::MIGRATIONS)?;
        Ok(Journal { conn })
    }

    /// Folds the write-ahead log back into the database file and truncates
    /// it, so that a stopped agent leaves a single self-contained file.
    /// Called at clean shutdown; a reader that holds the log open (a user's
    /// `sqlite3`) only makes it partial, which is harmless.
    pub fn checkpoint(&self) -> Result<(), JournalError> {
        during("checkpoint the write-ahead log", || {
            let busy: i64 = self
                .conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| row.get(0))?;
            if busy != 0 {
                tracing::debug!("journal checkpoint was partial: another connection is reading");
            }
            Ok(())
        })
    }
}
