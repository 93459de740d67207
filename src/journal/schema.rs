//! Connection settings and the schema migrations.
//!
//! The schema version lives in `PRAGMA user_version`. `MIGRATIONS[i]` takes
//! a journal from version `i` to `i + 1`; all pending ones run in one
//! transaction together with the version bump, so a failed or interrupted
//! migration leaves the file exactly as it was. A migration is never edited
//! once released: a schema change is a new entry at the end, and
//! `docs/journal.md` describes the latest version.
//!
//! The schema avoids features newer than SQLite 3.31 (no `STRICT` tables, no
//! generated columns) so that an older `sqlite3` CLI on the user's machine can
//! still open the file.

use std::path::Path;

use rusqlite::{Connection, Transaction, TransactionBehavior};

use super::{BUSY_TIMEOUT, JournalError, SqliteError};

/// Every migration, oldest first.
pub(super) const MIGRATIONS: &[&str] = &[V1, V2, V3, V4, V5, V6, V7, V8, V9];

/// Version 1: pairs, base, changes, syncs, conflicts, blobs, counters.
const V1: &str = "
CREATE TABLE pairs (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    local_root  TEXT NOT NULL,
    remote_url  TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    removed_at  TEXT
);

CREATE TABLE base (
    pair_id        INTEGER NOT NULL REFERENCES pairs (id),
    path           TEXT NOT NULL,
    kind           TEXT NOT NULL CHECK (kind IN ('file', 'dir')),
    hash           TEXT CHECK (hash IS NULL OR (length(hash) = 64 AND hash NOT GLOB '*[^0-9a-f]*')),
    size           INTEGER,
    mtime_ns       INTEGER,
    local_id       TEXT,
    remote_id      TEXT,
    remote_version TEXT,
    synced_at      TEXT NOT NULL,
    PRIMARY KEY (pair_id, path),
    CHECK (kind = 'dir' OR (hash IS NOT NULL AND size IS NOT NULL AND mtime_ns IS NOT NULL))
) WITHOUT ROWID;
CREATE INDEX base_hash ON base (hash) WHERE hash IS NOT NULL;

CREATE TABLE syncs (
    id             TEXT PRIMARY KEY,
    pair_id        INTEGER NOT NULL REFERENCES pairs (id),
    trigger        TEXT NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('sync_in_progress', 'completed',
                       'completed_with_conflicts', 'failed', 'interrupted')),
    started_at     TEXT NOT NULL,
    finished_at    TEXT,
    uploaded       INTEGER NOT NULL DEFAULT 0,
    downloaded     INTEGER NOT NULL DEFAULT 0,
    deleted_local  INTEGER NOT NULL DEFAULT 0,
    deleted_remote INTEGER NOT NULL DEFAULT 0,
    moved          INTEGER NOT NULL DEFAULT 0,
    conflicts      INTEGER NOT NULL DEFAULT 0,
    errors         INTEGER NOT NULL DEFAULT 0,
    bytes_up       INTEGER NOT NULL DEFAULT 0,
    bytes_down     INTEGER NOT NULL DEFAULT 0,
    error          TEXT
);
CREATE INDEX syncs_pair ON syncs (pair_id, started_at);
CREATE INDEX syncs_status ON syncs (status);

CREATE TABLE changes (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    pair_id       INTEGER NOT NULL REFERENCES pairs (id),
    at            TEXT NOT NULL,
    type          TEXT NOT NULL CHECK (type IN ('created', 'modified', 'deleted', 'moved')),
    path          TEXT NOT NULL,
    from_path     TEXT,
    kind          TEXT NOT NULL CHECK (kind IN ('file', 'dir')),
    origin_side   TEXT NOT NULL CHECK (origin_side IN ('local', 'remote')),
    origin_device TEXT NOT NULL,
    sync_id       TEXT REFERENCES syncs (id),
    hash          TEXT CHECK (hash IS NULL OR (length(hash) = 64 AND hash NOT GLOB '*[^0-9a-f]*')),
    size          INTEGER,
    CHECK ((type = 'moved') = (from_path IS NOT NULL))
);
CREATE INDEX changes_path ON changes (path);
CREATE INDEX changes_from_path ON changes (from_path) WHERE from_path IS NOT NULL;
CREATE INDEX changes_at ON changes (at);
CREATE INDEX changes_sync ON changes (sync_id) WHERE sync_id IS NOT NULL;
CREATE TRIGGER changes_no_update BEFORE UPDATE ON changes
BEGIN
    SELECT RAISE(ABORT, 'changes is append-only: its rows cannot be updated');
END;
CREATE TRIGGER changes_no_delete BEFORE DELETE ON changes
BEGIN
    SELECT RAISE(ABORT, 'changes is append-only: its rows cannot be deleted');
END;

CREATE TABLE conflicts (
    id                 TEXT PRIMARY KEY,
    pair_id            INTEGER NOT NULL REFERENCES pairs (id),
    path               TEXT NOT NULL,
    kind               TEXT NOT NULL,
    base_hash          TEXT CHECK (base_hash IS NULL OR (length(base_hash) = 64
                           AND base_hash NOT GLOB '*[^0-9a-f]*')),
    local_hash         TEXT CHECK (local_hash IS NULL OR (length(local_hash) = 64
                           AND local_hash NOT GLOB '*[^0-9a-f]*')),
    local_modified_at  TEXT,
    local_size         INTEGER,
    remote_hash        TEXT CHECK (remote_hash IS NULL OR (length(remote_hash) = 64
                           AND remote_hash NOT GLOB '*[^0-9a-f]*')),
    remote_modified_at TEXT,
    remote_size        INTEGER,
    copy_path          TEXT,
    status             TEXT NOT NULL CHECK (status IN ('unresolved', 'resolved')),
    strategy           TEXT CHECK (strategy IS NULL
                           OR strategy IN ('manual', 'keep_local', 'keep_remote', 'auto_merge')),
    note               TEXT,
    sync_id            TEXT REFERENCES syncs (id),
    detected_at        TEXT NOT NULL,
    resolved_at        TEXT,
    CHECK ((status = 'resolved') = (resolved_at IS NOT NULL))
);
CREATE UNIQUE INDEX conflicts_unresolved ON conflicts (pair_id, path) WHERE status = 'unresolved';
CREATE INDEX conflicts_sync ON conflicts (sync_id) WHERE sync_id IS NOT NULL;

CREATE TABLE blobs (
    hash TEXT PRIMARY KEY CHECK (length(hash) = 64 AND hash NOT GLOB '*[^0-9a-f]*'),
    data BLOB NOT NULL
);

CREATE TABLE counters (
    name TEXT PRIMARY KEY,
    last INTEGER NOT NULL
);
INSERT INTO counters (name, last) VALUES ('sync', 0), ('conflict', 0);
";

/// Version 2: each pair's lineage and generation (see `journal/lineage.rs`):
/// a random name for this journal's copy of the pair, and a count of the
/// transactions that changed its base. Pairs recorded before get a lineage
/// of their own here.
const V2: &str = "
ALTER TABLE pairs ADD COLUMN lineage TEXT NOT NULL DEFAULT '';
ALTER TABLE pairs ADD COLUMN generation INTEGER NOT NULL DEFAULT 0;
UPDATE pairs SET lineage = lower(hex(randomblob(16)));
";

/// Version 3: the permission bits both sides agreed on (`0` to `0o777`),
/// NULL where unknown (rows from before, or where neither side holds
/// modes). A NULL base mode lets the next sync record what the sides have
/// without changing either.
const V3: &str = "
ALTER TABLE base ADD COLUMN mode INTEGER CHECK (mode IS NULL OR (mode >= 0 AND mode <= 511));
";

/// Version 4: when the user last confirmed a pair's held deletions, so
/// the mass-deletion guard's window starts there, also after a restart.
const V4: &str = "
ALTER TABLE pairs ADD COLUMN deletions_confirmed_at TEXT;
";

/// Version 5: which device made each change, across devices (see
/// `journal/origins.rs`): when the origin device made a change
/// (`changes.origin_at`; NULL in older rows and where it is not known), the
/// other devices' changes read from their logs on the remote and not yet
/// applied here, and how far each of those logs was read.
const V5: &str = "
ALTER TABLE changes ADD COLUMN origin_at TEXT;

CREATE TABLE remote_changes (
    id         INTEGER PRIMARY KEY,
    pair_id    INTEGER NOT NULL REFERENCES pairs (id),
    log        TEXT NOT NULL,
    entry_id   INTEGER NOT NULL,
    at         TEXT NOT NULL,
    device     TEXT NOT NULL,
    type       TEXT NOT NULL,
    path       TEXT NOT NULL,
    from_path  TEXT,
    kind       TEXT NOT NULL CHECK (kind IN ('file', 'dir')),
    hash       TEXT CHECK (hash IS NULL OR (length(hash) = 64 AND hash NOT GLOB '*[^0-9a-f]*')),
    size       INTEGER
);
CREATE INDEX remote_changes_path ON remote_changes (pair_id, path);
CREATE INDEX remote_changes_from_path ON remote_changes (pair_id, from_path)
    WHERE from_path IS NOT NULL;
CREATE INDEX remote_changes_at ON remote_changes (at);

CREATE TABLE change_log_cursors (
    pair_id  INTEGER NOT NULL REFERENCES pairs (id),
    log      TEXT NOT NULL,
    segment  INTEGER NOT NULL,
    last_id  INTEGER NOT NULL,
    PRIMARY KEY (pair_id, log)
) WITHOUT ROWID;
";

/// Version 6: the versions syncs moved to a trash (see
/// `journal/trashed.rs`), so `history` lists them and `restore` finds them
/// without looking through trash folders.
const V6: &str = "
CREATE TABLE trashed_versions (
    id            INTEGER PRIMARY KEY,
    pair_id       INTEGER NOT NULL REFERENCES pairs (id),
    path          TEXT NOT NULL,
    side          TEXT NOT NULL CHECK (side IN ('local', 'remote')),
    trash_name    TEXT NOT NULL,
    hash          TEXT NOT NULL CHECK (length(hash) = 64 AND hash NOT GLOB '*[^0-9a-f]*'),
    size          INTEGER NOT NULL,
    mtime_ns      INTEGER NOT NULL,
    origin_device TEXT NOT NULL,
    origin_at     TEXT,
    trashed_by    TEXT NOT NULL,
    trashed_at    TEXT NOT NULL
);
CREATE INDEX trashed_versions_path ON trashed_versions (pair_id, path);
CREATE INDEX trashed_versions_at ON trashed_versions (pair_id, side, trashed_at);
";

/// Version 7: the HTTP API's bearer tokens and who used them. A token
/// itself is never stored, only what it grants (`api_tokens`); revoking one
/// sets `revoked_at`, and the agent refuses a token whose row is missing or
/// revoked. `syncs.started_by` and `conflicts.resolved_by` name the token
/// (its id, the JWT's `sub`) that started a run or resolved a conflict over
/// HTTP; NULL where the agent itself or the owner of the local socket did.
const V7: &str = "
CREATE TABLE api_tokens (
    id          TEXT PRIMARY KEY,
    name        TEXT,
    role        TEXT NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    pairs       TEXT NOT NULL DEFAULT '[]',
    issued_at   TEXT NOT NULL,
    expires_at  TEXT NOT NULL,
    revoked_at  TEXT
);

ALTER TABLE syncs ADD COLUMN started_by TEXT;
ALTER TABLE conflicts ADD COLUMN resolved_by TEXT;
";

/// Version 8: who brought a trashed version back. `restored_at` is when a
/// restore last wrote the version into the local folder, `restored_by` the
/// token that asked for it over HTTP (NULL for the local socket's owner),
/// as `conflicts.resolved_by` names the token that resolved a conflict.
const V8: &str = "
ALTER TABLE trashed_versions ADD COLUMN restored_at TEXT;
ALTER TABLE trashed_versions ADD COLUMN restored_by TEXT;
";

/// Version 9: versions another device moved to the remote's trash, as its
/// trash log on the remote told them (`engine/change_log.rs`). `log` names
/// that log; NULL for the versions this device's own syncs trashed, the
/// ones it publishes in its own trash log, `published` once it did (row
/// ids are not a cursor: SQLite hands a purged newest id out again). The
/// index finds a version by its trash name, so a log's entries are
/// matched against what is recorded without a scan each.
const V9: &str = "
ALTER TABLE trashed_versions ADD COLUMN log TEXT;
ALTER TABLE trashed_versions ADD COLUMN published INTEGER NOT NULL DEFAULT 0;
CREATE INDEX trashed_versions_name ON trashed_versions (pair_id, side, trash_name);
CREATE INDEX trashed_versions_unpublished ON trashed_versions (pair_id, id)
    WHERE published = 0 AND log IS NULL AND side = 'remote';
";

/// The page cache of the journal's connection, in KiB.
const CACHE_KIB: i64 = 512;

/// Per-connection settings. WAL lets `sqlite3` read while the agent writes;
/// `synchronous = FULL` makes a committed step survive power loss (see
/// `docs/journal.md`, "Crash safety"); foreign keys keep history rows
/// pointing at real pairs and syncs.
pub(super) fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // Enough room for every statement the journal prepares, so none is
    // re-parsed on the hot path of `commit`.
    conn.set_prepared_statement_cache_capacity(64);
    let mode: String =
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
    if mode != "wal" && mode != "memory" {
        tracing::warn!(
            "the journal could not switch to WAL mode (it is in {mode} mode, perhaps on a network \
             file system); readers such as sqlite3 will block the agent while they read"
        );
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", true)?;
    // SQLite's default page cache (2 MB) filled as the base was read in
    // path order, which visits each page once: the cache held what would
    // not be read again, a tenth of a 10,000-file sync's memory. Writes
    // touch the right edge of the trees and a few pages more.
    conn.pragma_update(None, "cache_size", -CACHE_KIB)?;
    Ok(())
}

/// Brings the journal at `path` up to `migrations.len()`, or refuses a
/// journal from a newer schema.
pub(super) fn migrate(
    conn: &Connection,
    path: &Path,
    migrations: &[&str],
) -> Result<(), JournalError> {
    let supported = migrations.len() as i64;
    let fail = |from: i64, source| JournalError::Migrate {
        path: path.to_owned(),
        from,
        to: supported,
        source: SqliteError(source),
    };
    // IMMEDIATE: two agents starting at once must not both migrate.
    let tx =
        Transaction::new_unchecked(conn, TransactionBehavior::Immediate).map_err(|e| fail(0, e))?;
    let found: i64 = tx
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(|e| fail(0, e))?;
    if found > supported {
        return Err(JournalError::TooNew {
            path: path.to_owned(),
            found,
            supported,
        });
    }
    if found < 0 {
        return Err(JournalError::CorruptRow {
            table: "database header",
            row: "user_version".to_owned(),
            problem: format!("the schema version {found} is negative"),
        });
    }
    if found == supported {
        return Ok(());
    }
    for migration in &migrations[found as usize..] {
        tx.execute_batch(migration).map_err(|e| fail(found, e))?;
    }
    tx.pragma_update(None, "user_version", supported)
        .map_err(|e| fail(found, e))?;
    tx.commit().map_err(|e| fail(found, e))?;
    tracing::info!(
        "journal {} migrated from schema version {found} to {supported}",
        path.display()
    );
    Ok(())
}
