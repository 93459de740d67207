//! Tests of the journal on real SQLite files in temporary directories.

use std::path::{Path, PathBuf};

use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior, params_from_iter};
use tempfile::TempDir;

use super::*;
use crate::model::{BaseEntry, ContentHash, Entry, FileMeta, RelPath, Side, Strategy};
use crate::reconcile::ConflictKind;

/// The journal's own documentation, whose SQL the tests run.
const DOCS: &str = include_str!("../../docs/journal.md");
const README: &str = include_str!("../../README.md");

fn rel(path: &str) -> RelPath {
    RelPath::new(path).unwrap()
}

fn hash(content: &str) -> ContentHash {
    ContentHash::of_bytes(content.as_bytes())
}

fn file(content: &str) -> BaseEntry {
    BaseEntry::new(Entry::File(FileMeta {
        hash: hash(content),
        size: content.len() as u64,
        mtime_ns: 1_739_116_800_000_000_000,
        mode: None,
    }))
}

fn dir() -> BaseEntry {
    BaseEntry::new(Entry::dir(None))
}

fn change(change_type: ChangeType, path: &str, device: &str) -> NewChange {
    NewChange {
        change_type,
        path: rel(path),
        from_path: None,
        is_dir: false,
        origin_side: Side::Local,
        origin_device: device.to_owned(),
        sync_id: None,
        hash: None,
        size: None,
    }
}

fn conflict(pair: PairId, path: &str, local: &str, remote: &str) -> NewConflict {
    NewConflict {
        pair,
        path: rel(path),
        kind: ConflictKind::BothModified,
        base_hash: Some(hash("base")),
        local_hash: Some(hash(local)),
        local_modified_at: Some("2025-02-09T12:00:00.000Z".to_owned()),
        local_size: Some(local.len() as u64),
        remote_hash: Some(hash(remote)),
        remote_modified_at: Some("2025-02-09T13:00:00.000Z".to_owned()),
        remote_size: Some(remote.len() as u64),
        copy_path: None,
        note: None,
        sync_id: None,
    }
}

/// A journal file in a fresh temporary directory.
fn temp_journal() -> (TempDir, PathBuf, Journal) {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("journal.db");
    let journal = Journal::open(&path).unwrap();
    (dir, path, journal)
}

/// Puts `paths` into the base: a path ending in `/` is a folder.
fn put_all(journal: &Journal, pair: PairId, paths: &[&str]) {
    let base = paths
        .iter()
        .map(|path| match path.strip_suffix('/') {
            Some(dir_path) => BaseEdit::Put(rel(dir_path), dir()),
            None => BaseEdit::Put(rel(path), file(path)),
        })
        .collect();
    journal
        .commit(
            pair,
            &Step {
                base,
                ..Step::default()
            },
        )
        .unwrap();
}

fn base_paths(tree: &crate::model::BaseTree) -> Vec<&str> {
    tree.keys().map(RelPath::as_str).collect()
}

/// A second connection, as a user's `sqlite3` would open it.
fn side_connection(path: &Path) -> Connection {
    Connection::open(path).unwrap()
}

fn count(conn: &Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |row| row.get(0)).unwrap()
}

#[test]
fn an_empty_file_is_migrated_to_the_current_schema() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("journal.db");
    std::fs::File::create(&path).unwrap();

    let journal = Journal::open(&path).unwrap();

    let version: i64 = journal
        .conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .unwrap();
    assert_eq!(version, schema::MIGRATIONS.len() as i64);
    let mode: String = journal
        .conn
        .pragma_query_value(None, "journal_mode", |row| row.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let foreign_keys: bool = journal
        .conn
        .pragma_query_value(None, "foreign_keys", |row| row.get(0))
        .unwrap();
    assert!(foreign_keys);
    // The page cache is bounded below SQLite's 2 MB default (see
    // `schema::configure`).
    let cache_size: i64 = journal
        .conn
        .pragma_query_value(None, "cache_size", |row| row.get(0))
        .unwrap();
    assert_eq!(cache_size, -512, "KiB, as a negative number");
    for table in [
        "pairs",
        "base",
        "changes",
        "syncs",
        "conflicts",
        "blobs",
        "counters",
    ] {
        let sql = format!("SELECT count(*) FROM sqlite_schema WHERE name = '{table}'");
        assert_eq!(count(&journal.conn, &sql), 1, "table {table}");
    }
}

#[test]
fn a_journal_can_be_shared_behind_a_mutex() {
    fn assert_send<T: Send>() {}
    fn assert_error_for_anyhow<T: std::error::Error + Send + Sync + 'static>() {}
    assert_send::<Journal>();
    assert_error_for_anyhow::<JournalError>();
}

#[test]
fn reopening_keeps_the_data() {
    let (_dir, path, journal) = temp_journal();
    let pair = journal
        .upsert_pair("notes", "/home/u/notes", "file:///nas/notes")
        .unwrap();
    put_all(&journal, pair, &["a/", "a/x.md"]);
    let sync_id = journal.begin_sync(pair, "start-up").unwrap();
    journal.checkpoint().unwrap();
    drop(journal);

    let journal = Journal::open(&path).unwrap();

    assert_eq!(journal.pair_by_name("notes").unwrap().unwrap().id, pair);
    assert_eq!(
        base_paths(&journal.load_base(pair).unwrap()),
        ["a", "a/x.md"]
    );
    assert_eq!(journal.sync_run(&sync_id).unwrap().unwrap().pair, "notes");
    assert_ne!(journal.begin_sync(pair, "watch").unwrap(), sync_id);
}

#[test]
fn a_journal_from_a_newer_schema_is_refused_naming_the_file() {
    let (_dir, path, journal) = temp_journal();
    drop(journal);
    side_connection(&path)
        .pragma_update(None, "user_version", 99)
        .unwrap();

    let err = Journal::open(&path).err().unwrap();

    assert!(
        matches!(err, JournalError::TooNew { found: 99, .. }),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("Upgrade Prism Sync"), "{message}");
}

#[test]
fn a_failing_migration_changes_nothing() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("journal.db");
    let conn = Connection::open(&path).unwrap();
    let migrations = ["CREATE TABLE first (x)", "CREATE TABLE broken ("];

    let err = schema::migrate(&conn, &path, &migrations).err().unwrap();

    assert!(
        matches!(err, JournalError::Migrate { from: 0, to: 2, .. }),
        "{err:?}"
    );
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .unwrap();
    assert_eq!(version, 0);
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM sqlite_schema WHERE name = 'first'"
        ),
        0
    );
}

#[test]
fn a_step_whose_move_is_invalid_leaves_nothing_applied() {
    let (_dir, _path, journal) = temp_journal();
    let pair = journal.upsert_pair("notes", "/n", "file:///r").unwrap();
    put_all(&journal, pair, &["a/", "a/x.md"]);
    let step = Step {
        base: vec![
            BaseEdit::Put(rel("b.md"), file("b")),
            BaseEdit::Remove(rel("a/x.md")),
            BaseEdit::MoveTree {
                from: rel("a"),
                to: rel("a/inside"),
            },
        ],
        changes: vec![change(ChangeType::Created, "b.md", "laptop")],
        blobs: vec![(hash("b"), b"b".to_vec())],
        trashed: Vec::new(),
    };

    let err = journal.commit(pair, &step).err().unwrap();

    assert!(
        matches!(err, JournalError::MoveIntoItself { .. }),
        "{err:?}"
    );
    assert_eq!(
        base_paths(&journal.load_base(pair).unwrap()),
        ["a", "a/x.md"]
    );
    assert!(
        journal
            .changes(&ChangeFilter::default())
            .unwrap()
            .is_empty()
    );
    assert_eq!(journal.blob(&hash("b")).unwrap(), None);
}

#[test]
fn a_step_whose_last_change_violates_a_constraint_leaves_nothing_applied() {
    let (_dir, _path, journal) = temp_journal();
    let pair = journal.upsert_pair("notes", "/n", "file:///r").unwrap();
    let mut orphan = change(ChangeType::Created, "c.md", "laptop");
    orphan.sync_id = Some("sync-999".to_owned());
    let step = Step {
        base: vec![BaseEdit::Put(rel("c.md"), file("c"))],
        changes: vec![change(ChangeType::Created, "c.md", "laptop"), orphan],
        blobs: vec![],
        trashed: Vec::new(),
    };

    let err = journal.commit(pair, &step).err().unwrap();

    assert!(
        matches!(
            err,
            JournalError::Sql {
                operation: "record a step",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(journal.load_base(pair).unwrap().is_empty());
    assert!(
        journal
            .changes(&ChangeFilter::default())
            .unwrap()
            .is_empty()
    );
}

#[test]
fn move_tree_rebases_a_subtree_but_not_siblings_sharing_a_prefix() {
    let (_dir, _path, journal) = temp_journal();
    let pair = journal.upsert_pair("notes", "/n", "file:///r").unwrap();
    let other = journal.upsert_pair("other", "/o", "file:///o").unwrap();
    put_all(
        &journal,
        pair,
        &[
            "a/", "a/x.md", "a/y/", "a/y/z.md", "ab/", "ab/c.md", "a.txt", "b/", "b/old.md",
        ],
    );
    put_all(&journal, other, &["a/", "a/x.md"]);

    journal
        .commit(
            pair,
            &Step {
                base: vec![BaseEdit::MoveTree {
                    from: rel("a"),
                    to: rel("b"),
                }],
                ..Step::default()
            },
        )
        .unwrap();

    let tree = journal.load_base(pair).unwrap();
    assert_eq!(
        base_paths(&tree),
        ["a.txt", "ab", "ab/c.md", "b", "b/x.md", "b/y", "b/y/z.md"]
    );
    // The rows keep their content; only the path changed.
    assert_eq!(tree[&rel("b/x.md")], file("a/x.md"));
    assert_eq!(
        base_paths(&journal.load_base(other).unwrap()),
        ["a", "a/x.md"]
    );
}

#[test]
fn remove_and_remove_tree_are_component_wise() {
    let (_dir, _path, journal) = temp_journal();
    let pair = journal.upsert_pair("notes", "/n", "file:///r").unwrap();
    put_all(
        &journal,
        pair,
        &["a/", "a/x.md", "ab/", "ab/c.md", "a-b.md", "d/", "d/e.md"],
    );

    journal
        .commit(
            pair,
            &Step {
                base: vec![BaseEdit::RemoveTree(rel("a")), BaseEdit::Remove(rel("d"))],
                ..Step::default()
            },
        )
        .unwrap();

    assert_eq!(
        base_paths(&journal.load_base(pair).unwrap()),
        ["a-b.md", "ab", "ab/c.md", "d/e.md"]
    );
    assert_eq!(journal.base_counts(pair).unwrap(), (3, 1));
}

#[test]
fn load_base_within_returns_each_root_and_what_lies_below_it() {
    let (_dir, _path, journal) = temp_journal();
    let pair = journal.upsert_pair("notes", "/n", "file:///r").unwrap();
    put_all(
        &journal,
        pair,
        &[
            "a/", "a/x.md", "a/y/", "a/y/z.md", "ab/", "ab/c.md", "a.txt", "a-b.md",
        ],
    );

    let within = |roots: &[&str]| {
        let roots: Vec<RelPath> = roots.iter().map(|r| rel(r)).collect();
        let tree = journal.load_base_within(pair, &roots).unwrap();
        base_paths(&tree)
            .into_iter()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };

    assert_eq!(within(&["a"]), ["a", "a/x.md", "a/y", "a/y/z.md"]);
    assert_eq!(
        within(&["a/y", "ab", "a/y/z.md"]),
        ["a/y", "a/y/z.md", "ab", "ab/c.md"]
    );
    assert_eq!(within(&["a.txt"]), ["a.txt"]);
    assert!(within(&["missing"]).is_empty());
    assert!(within(&[]).is_empty());
}

/// The `EXPLAIN QUERY PLAN` lines of `sql`.
fn query_plan(conn: &Connection, sql: &str) -> Vec<String> {
    let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
    let nulls = vec![Value::Null; stmt.parameter_count()];
    let mut rows = stmt.query(params_from_iter(nulls)).unwrap();
    let mut lines = Vec::new();
    while let Some(row) = rows.next().unwrap() {
        lines.push(row.get::<_, String>(3).unwrap());
    }
    lines
}

#[test]
fn subtree_queries_search_the_path_index_instead_of_scanning() {
    let journal = Journal::open_in_memory().unwrap();
    let by_prefix = ChangeFilter {
        path_prefix: Some(rel("docs")),
        ..ChangeFilter::default()
    };

    for sql in [
        base::SELECT_BASE_WITHIN.to_owned(),
        base::DELETE_BELOW.to_owned(),
        base::MOVE_BELOW.to_owned(),
        changes::select_changes(&by_prefix),
    ] {
        let plan = query_plan(&journal.conn, &sql);
        // Every search of `base` or `changes` must constrain the path, not
        // just the pair; the join to `pairs` is a key lookup.
        let searches: Vec<&String> = plan
            .iter()
            .filter(|line| line.starts_with("SEARCH base") || line.starts_with("SEARCH c "))
            .collect();
        assert!(!searches.is_empty(), "{sql}\n{plan:#?}");
        assert!(
            searches
                .iter()
                .all(|line| line.contains("path>? AND ") || line.contains("path=?)")),
            "{sql}\n{plan:#?}"
        );
        assert!(
            plan.iter().all(|line| !line.starts_with("SCAN")),
            "{sql}\n{plan:#?}"
        );
    }
}

#[test]
fn a_second_conflict_on_an_unresolved_path_updates_the_first() {
    let (_dir, _path, journal) = temp_journal();
    let notes = journal.upsert_pair("notes", "/n", "file:///r").unwrap();
    let other = journal.upsert_pair("other", "/o", "file:///o").unwrap();

    let first = journal
        .record_conflict(&conflict(notes, "docs/page.md", "l1", "r1"))
        .unwrap();
    let detected_at = journal.conflict(&first).unwrap().unwrap().detected_at;
    let again = journal
        .record_conflict(&conflict(notes, "docs/page.md", "l2", "r2"))
        .unwrap();
    let elsewhere = journal
        .record_conflict(&conflict(other, "docs/page.md", "l", "r"))
        .unwrap();

    assert_eq!(again, first);
    assert_ne!(elsewhere, first);
    let row = journal.conflict(&first).unwrap().unwrap();
    assert_eq!(row.local_hash, Some(hash("l2")));
    assert_eq!(row.remote_hash, Some(hash("r2")));
    assert_eq!(row.detected_at, detected_at);
    assert_eq!(
        (row.pair.as_str(), row.status),
        ("notes", ConflictStatus::Unresolved)
    );

    let resolved_at = journal
        .resolve_conflict(&first, Strategy::KeepLocal, Some("kept my edit"))
        .unwrap();
    let after = journal
        .record_conflict(&conflict(notes, "docs/page.md", "l3", "r3"))
        .unwrap();

    assert_ne!(after, first);
    let row = journal.conflict(&first).unwrap().unwrap();
    assert_eq!(row.status, ConflictStatus::Resolved);
    assert_eq!(row.strategy, Some(Strategy::KeepLocal));
    assert_eq!(row.note.as_deref(), Some("kept my edit"));
    assert_eq!(row.resolved_at.as_deref(), Some(resolved_at.as_str()));
    let unresolved = journal.conflicts(&ConflictFilter::default()).unwrap();
    let ids: Vec<&str> = unresolved.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, [elsewhere.as_str(), after.as_str()]);
    let notes_all = journal
        .conflicts(&ConflictFilter {
            pair: Some("notes".to_owned()),
            include_resolved: true,
        })
        .unwrap();
    let ids: Vec<&str> = notes_all.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, [first.as_str(), after.as_str()]);
    assert!(matches!(
        journal.resolve_conflict(&first, Strategy::Manual, None),
        Err(JournalError::AlreadyResolved { .. })
    ));
    assert!(matches!(
        journal.resolve_conflict("conflict-404", Strategy::Manual, None),
        Err(JournalError::NoSuchConflict(_))
    ));
}

#[test]
fn change_filters_select_by_pair_time_and_path_component_wise() {
    let (_dir, path, journal) = temp_journal();
    let notes = journal.upsert_pair("notes", "/n", "file:///r").unwrap();
    let other = journal.upsert_pair("other", "/o", "file:///o").unwrap();
    let mut moved = change(ChangeType::Moved, "archive/old.md", "laptop");
    moved.from_path = Some(rel("docs/old.md"));
    let step = |changes| Step {
        changes,
        ..Step::default()
    };
    journal
        .commit(
            notes,
            &step(vec![
                change(ChangeType::Created, "docs/page.md", "laptop"),
                change(ChangeType::Created, "docs", "laptop"),
                change(ChangeType::Created, "docs2/x.md", "laptop"),
                change(ChangeType::Created, "docs.md", "laptop"),
                moved,
            ]),
        )
        .unwrap();
    journal
        .commit(
            other,
            &step(vec![change(ChangeType::Modified, "docs/page.md", "desk")]),
        )
        .unwrap();
    // Backdate the first five rows (as if written last year) by rewriting
    // them outside the append-only guard, which a test may do.
    let side = side_connection(&path);
    side.execute_batch(
        "DROP TRIGGER changes_no_update;
         UPDATE changes SET at = '2024-01-01T00:00:00.000Z' WHERE id <= 5;",
    )
    .unwrap();

    let paths = |filter: ChangeFilter| {
        journal
            .changes(&filter)
            .unwrap()
            .into_iter()
            .map(|c| format!("{}:{}", c.pair, c.path))
            .collect::<Vec<_>>()
    };

    assert_eq!(
        paths(ChangeFilter {
            path_prefix: Some(rel("docs")),
            ..ChangeFilter::default()
        }),
        [
            "notes:docs/page.md",
            "notes:docs",
            "notes:archive/old.md",
            "other:docs/page.md"
        ]
    );
    assert_eq!(
        paths(ChangeFilter {
            pair: Some("notes".to_owned()),
            path_prefix: Some(rel("docs/page.md")),
            ..ChangeFilter::default()
        }),
        ["notes:docs/page.md"]
    );
    assert_eq!(
        paths(ChangeFilter {
            since: Some("2025-01-01".to_owned()),
            ..ChangeFilter::default()
        }),
        ["other:docs/page.md"]
    );
    assert_eq!(
        paths(ChangeFilter {
            pair: Some("notes".to_owned()),
            limit: Some(2),
            ..ChangeFilter::default()
        }),
        ["notes:docs.md", "notes:archive/old.md"]
    );
    let rows = journal.changes(&ChangeFilter::default()).unwrap();
    assert_eq!(rows[4].change_type, ChangeType::Moved);
    assert_eq!(rows[4].from_path, Some(rel("docs/old.md")));
    assert_eq!(rows[5].origin_device, "desk");
    assert!(matches!(
        journal.changes(&ChangeFilter {
            pair: Some("nope".to_owned()),
            ..ChangeFilter::default()
        }),
        Err(JournalError::NoSuchPair(_))
    ));
    assert!(matches!(
        journal.changes(&ChangeFilter {
            since: Some("last week".to_owned()),
            ..ChangeFilter::default()
        }),
        Err(JournalError::BadTimestamp { .. })
    ));
}

#[test]
fn the_change_log_rejects_update_and_delete() {
    let (_dir, path, journal) = temp_journal();
    let pair = journal.upsert_pair("notes", "/n", "file:///r").unwrap();
    journal
        .commit(
            pair,
            &Step {
                changes: vec![change(ChangeType::Created, "a.md", "laptop")],
                ..Step::default()
            },
        )
        .unwrap();
    let side = side_connection(&path);

    let update = side
        .execute("UPDATE changes SET path = 'b.md'", [])
        .unwrap_err();
    let delete = side.execute("DELETE FROM changes", []).unwrap_err();

    assert!(update.to_string().contains("append-only"), "{update}");
    assert!(delete.to_string().contains("append-only"), "{delete}");
    assert_eq!(journal.changes(&ChangeFilter::default()).unwrap().len(), 1);
}

#[test]
fn a_reader_is_not_blocked_by_an_open_write_transaction() {
    let (_dir, path, journal) = temp_journal();
    let pair = journal.upsert_pair("notes", "/n", "file:///r").unwrap();
    put_all(&journal, pair, &["a.md"]);
    let reader = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    reader.busy_timeout(std::time::Duration::ZERO).unwrap();

    let tx = Transaction::new_unchecked(&journal.conn, TransactionBehavior::Immediate).unwrap();
    tx.execute(
        "INSERT INTO base (pair_id, path, kind, synced_at) VALUES (?1, 'b', 'dir', 'now')",
        [pair.0],
    )
    .unwrap();

    // The reader sees the last committed state at once, without "busy".
    assert_eq!(count(&reader, "SELECT count(*) FROM base"), 1);
    tx.commit().unwrap();
    assert_eq!(count(&reader, "SELECT count(*) FROM base"), 2);
}

#[test]
fn a_damaged_row_is_an_error_naming_the_table_and_row() {
    let (_dir, path, journal) = temp_journal();
    let pair = journal.upsert_pair("notes", "/n", "file:///r").unwrap();
    journal
        .commit(
            pair,
            &Step {
                changes: vec![change(ChangeType::Created, "a.md", "laptop")],
                ..Step::default()
            },
        )
        .unwrap();
    let side = side_connection(&path);
    side.execute_batch(
        "INSERT INTO base (pair_id, path, kind, synced_at) VALUES (1, '../escape', 'dir', 'now');
         PRAGMA ignore_check_constraints = ON;
         DROP TRIGGER changes_no_update;
         UPDATE changes SET hash = 'not-hex' WHERE id = 1;",
    )
    .unwrap();

    let base_err = journal.load_base(pair).err().unwrap();
    let changes_err = journal.changes(&ChangeFilter::default()).err().unwrap();

    assert!(
        matches!(&base_err, JournalError::CorruptRow { table: "base", row, .. } if row.contains("'../escape'")),
        "{base_err:?}"
    );
    assert!(
        matches!(&changes_err, JournalError::CorruptRow { table: "changes", row, problem } if row == "(id = 1)" && problem.contains("not-hex")),
        "{changes_err:?}"
    );
    assert!(base_err.to_string().contains("sqlite3"), "{base_err}");
}

#[test]
fn a_sync_run_goes_from_in_progress_to_finished_once() {
    let (_dir, _path, journal) = temp_journal();
    let notes = journal.upsert_pair("notes", "/n", "file:///r").unwrap();
    let photos = journal.upsert_pair("photos", "/p", "file:///p").unwrap();

    let first = journal.begin_sync(notes, "start-up").unwrap();
    let second = journal.begin_sync(photos, "poll").unwrap();
    let third = journal.begin_sync(notes, "watch").unwrap();
    assert_eq!(
        [first.as_str(), second.as_str(), third.as_str()],
        ["sync-1", "sync-2", "sync-3"]
    );
    let run = journal.sync_run(&first).unwrap().unwrap();
    assert_eq!(
        (run.status, run.trigger.as_str(), run.finished_at),
        (SyncStatus::InProgress, "start-up", None)
    );

    let counts = SyncCounts {
        uploaded: 2,
        bytes_up: 4096,
        ..SyncCounts::default()
    };
    journal
        .finish_sync(&first, SyncStatus::Completed, &counts, None)
        .unwrap();
    journal
        .finish_sync(
            &second,
            SyncStatus::Failed,
            &SyncCounts::default(),
            Some("remote unreachable"),
        )
        .unwrap();

    let run = journal.sync_run(&first).unwrap().unwrap();
    assert_eq!((run.status, run.counts), (SyncStatus::Completed, counts));
    assert!(run.finished_at.is_some());
    assert_eq!(
        journal.sync_run(&second).unwrap().unwrap().error.as_deref(),
        Some("remote unreachable")
    );
    assert!(matches!(
        journal.finish_sync(&first, SyncStatus::Failed, &counts, None),
        Err(JournalError::SyncNotInProgress { .. })
    ));
    assert!(matches!(
        journal.finish_sync("sync-404", SyncStatus::Failed, &counts, None),
        Err(JournalError::NoSuchSync(_))
    ));
    assert_eq!(
        journal.last_completed_sync(notes).unwrap().unwrap().id,
        first
    );
    assert_eq!(journal.last_completed_sync(photos).unwrap(), None);
    let recent: Vec<String> = journal
        .recent_syncs(None, 2)
        .unwrap()
        .into_iter()
        .map(|run| run.id)
        .collect();
    assert_eq!(recent, [third.clone(), second]);
    assert_eq!(journal.recent_syncs(Some(notes), 10).unwrap().len(), 2);

    assert_eq!(journal.mark_interrupted_syncs().unwrap(), 1);
    assert_eq!(
        journal.sync_run(&third).unwrap().unwrap().status,
        SyncStatus::Interrupted
    );
    assert_eq!(journal.mark_interrupted_syncs().unwrap(), 0);
}

#[test]
fn removing_a_pair_forgets_its_base_but_keeps_its_history() {
    let (_dir, _path, journal) = temp_journal();
    let pair = journal.upsert_pair("notes", "/n", "file:///r").unwrap();
    put_all(&journal, pair, &["a.md"]);
    let sync_id = journal.begin_sync(pair, "api").unwrap();
    journal
        .commit(
            pair,
            &Step {
                changes: vec![change(ChangeType::Created, "a.md", "laptop")],
                ..Step::default()
            },
        )
        .unwrap();
    let conflict_id = journal
        .record_conflict(&conflict(pair, "b.md", "l", "r"))
        .unwrap();

    assert!(journal.remove_pair("notes").unwrap());
    assert!(!journal.remove_pair("notes").unwrap());

    assert!(journal.pairs().unwrap().is_empty());
    assert_eq!(journal.pair_by_name("notes").unwrap(), None);
    assert!(journal.load_base(pair).unwrap().is_empty());
    assert!(journal.sync_run(&sync_id).unwrap().is_some());
    let history = ChangeFilter {
        pair: Some("notes".to_owned()),
        ..ChangeFilter::default()
    };
    assert_eq!(journal.changes(&history).unwrap().len(), 1);
    let closed = journal.conflict(&conflict_id).unwrap().unwrap();
    assert_eq!(closed.status, ConflictStatus::Resolved);
    assert_eq!(
        (closed.strategy, closed.note.as_deref()),
        (None, Some("pair removed"))
    );

    // Adding it again revives the same pair, with an empty base.
    assert_eq!(
        journal.upsert_pair("notes", "/n", "file:///r").unwrap(),
        pair
    );
    assert_eq!(journal.pairs().unwrap().len(), 1);
}

#[test]
fn a_pair_pointed_at_another_folder_forgets_its_base() {
    let (_dir, _path, journal) = temp_journal();
    let pair = journal.upsert_pair("notes", "/n", "file:///r").unwrap();
    put_all(&journal, pair, &["a.md"]);

    assert_eq!(
        journal.upsert_pair("notes", "/n", "file:///r").unwrap(),
        pair
    );
    assert_eq!(journal.load_base(pair).unwrap().len(), 1);

    assert_eq!(
        journal
            .upsert_pair("notes", "/elsewhere", "file:///r")
            .unwrap(),
        pair
    );
    assert!(journal.load_base(pair).unwrap().is_empty());
    assert_eq!(
        journal.pair_by_name("notes").unwrap().unwrap().local_root,
        "/elsewhere"
    );
}

#[test]
fn blobs_are_kept_while_a_base_row_or_an_open_conflict_needs_them() {
    let (_dir, _path, journal) = temp_journal();
    let pair = journal.upsert_pair("notes", "/n", "file:///r").unwrap();
    let blob = |content: &str| (hash(content), content.as_bytes().to_vec());
    journal
        .commit(
            pair,
            &Step {
                base: vec![BaseEdit::Put(rel("a.md"), file("in base"))],
                blobs: vec![blob("in base"), blob("base"), blob("orphan")],
                ..Step::default()
            },
        )
        .unwrap();
    let conflict_id = journal
        .record_conflict(&conflict(pair, "b.md", "l", "r"))
        .unwrap();

    assert_eq!(journal.gc_blobs().unwrap(), 1);
    assert_eq!(
        journal.blob(&hash("in base")).unwrap(),
        Some(b"in base".to_vec())
    );
    assert_eq!(journal.blob(&hash("base")).unwrap(), Some(b"base".to_vec()));
    assert_eq!(journal.blob(&hash("orphan")).unwrap(), None);

    journal
        .resolve_conflict(&conflict_id, Strategy::KeepRemote, None)
        .unwrap();
    assert_eq!(journal.gc_blobs().unwrap(), 1);
    assert_eq!(journal.blob(&hash("base")).unwrap(), None);

    let wrong = Step {
        blobs: vec![(hash("one"), b"two".to_vec())],
        ..Step::default()
    };
    assert!(matches!(
        journal.commit(pair, &wrong),
        Err(JournalError::BlobHashMismatch { .. })
    ));
}

/// A journal with a little of everything the audit queries look for: two
/// pairs, a completed sync with changes to `docs/page.md`, a deletion by
/// `laptop`, a failed sync, a sync in progress and an unresolved conflict.
fn populated() -> (TempDir, Journal) {
    let (temp, _path, journal) = temp_journal();
    let notes = journal
        .upsert_pair("notes", "/home/u/notes", "file:///nas/notes")
        .unwrap();
    let photos = journal
        .upsert_pair("photos", "/home/u/photos", "sftp://nas/photos")
        .unwrap();

    let first = journal.begin_sync(notes, "start-up").unwrap();
    let mut created = change(ChangeType::Created, "docs/page.md", "laptop");
    created.sync_id = Some(first.clone());
    created.hash = Some(hash("v1"));
    created.size = Some(2);
    journal
        .commit(
            notes,
            &Step {
                base: vec![
                    BaseEdit::Put(rel("docs"), dir()),
                    BaseEdit::Put(rel("docs/page.md"), file("v1")),
                    BaseEdit::Put(rel("old.md"), file("old")),
                ],
                changes: vec![created],
                blobs: vec![(hash("v1"), b"v1".to_vec())],
                trashed: Vec::new(),
            },
        )
        .unwrap();
    let counts = SyncCounts {
        uploaded: 1,
        bytes_up: 2,
        ..SyncCounts::default()
    };
    journal
        .finish_sync(&first, SyncStatus::Completed, &counts, None)
        .unwrap();

    let second = journal.begin_sync(notes, "watch").unwrap();
    let mut modified = change(ChangeType::Modified, "docs/page.md", "desktop");
    modified.origin_side = Side::Remote;
    modified.sync_id = Some(second.clone());
    let mut deleted = change(ChangeType::Deleted, "old.md", "laptop");
    deleted.sync_id = Some(second.clone());
    let mut moved = change(ChangeType::Moved, "docs/guide/page.md", "laptop");
    moved.from_path = Some(rel("docs/page.md"));
    moved.sync_id = Some(second.clone());
    journal
        .commit(
            notes,
            &Step {
                base: vec![
                    BaseEdit::Remove(rel("old.md")),
                    BaseEdit::MoveTree {
                        from: rel("docs/page.md"),
                        to: rel("docs/guide/page.md"),
                    },
                ],
                changes: vec![modified, deleted, moved],
                blobs: vec![],
                // The modification replaced v1 on the local side.
                trashed: vec![TrashedVersion {
                    path: rel("docs/page.md"),
                    side: Side::Local,
                    trash_name: rel("20250209-1300/docs/page.md"),
                    hash: hash("v1"),
                    size: 2,
                    mtime_ns: 1_739_116_800_000_000_000,
                    trashed_by: "laptop".to_owned(),
                }],
            },
        )
        .unwrap();
    let mut open = conflict(notes, "docs/todo.md", "mine", "theirs");
    open.sync_id = Some(second.clone());
    open.copy_path = Some(rel("docs/todo.conflict-20250209-130000-desktop.md"));
    journal.record_conflict(&open).unwrap();
    journal
        .finish_sync(
            &second,
            SyncStatus::CompletedWithConflicts,
            &SyncCounts::default(),
            None,
        )
        .unwrap();

    let failed = journal.begin_sync(photos, "poll").unwrap();
    journal
        .finish_sync(
            &failed,
            SyncStatus::Failed,
            &SyncCounts::default(),
            Some("cannot reach sftp://nas/photos: connection refused"),
        )
        .unwrap();
    journal.begin_sync(photos, "api").unwrap();
    (temp, journal)
}

/// The fenced ```sql blocks of a markdown text.
fn sql_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match &mut current {
            None if line.trim() == "```sql" => current = Some(String::new()),
            Some(block) if line.trim() == "```" => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
            None => {}
        }
    }
    blocks
}

#[test]
fn every_audit_query_in_the_docs_runs_and_finds_rows() {
    let (_dir, journal) = populated();
    let queries = sql_blocks(DOCS);
    assert!(
        queries.len() >= 5,
        "found only {} sql blocks",
        queries.len()
    );

    for sql in &queries {
        let mut stmt = journal
            .conn
            .prepare(sql)
            .unwrap_or_else(|err| panic!("{err}\n{sql}"));
        let mut rows = stmt.query([]).unwrap();
        assert!(rows.next().unwrap().is_some(), "no rows from\n{sql}");
    }
}

#[test]
fn the_readme_quotes_only_audit_queries_the_docs_test() {
    let tested = sql_blocks(DOCS);
    let quoted = sql_blocks(README);
    assert!(
        quoted.len() >= 3,
        "the README shows {} audit queries",
        quoted.len()
    );
    for sql in quoted {
        assert!(
            tested.contains(&sql),
            "this README query is not in docs/journal.md, so no test runs it:\n{sql}"
        );
    }
}

#[test]
fn the_schema_reference_in_the_docs_lists_every_column() {
    let journal = Journal::open_in_memory().unwrap();
    // In the "Tables" section each table is a `### `name`` heading followed
    // by a markdown table whose first cell is a `column`.
    let section = DOCS
        .split("\n## ")
        .find(|section| section.starts_with("Tables"))
        .expect("docs/journal.md has a Tables section");
    let mut documented: Vec<(String, Vec<String>)> = Vec::new();
    for line in section.lines() {
        if let Some(heading) = line.strip_prefix("### ") {
            documented.push((heading.trim_matches('`').to_owned(), Vec::new()));
        } else if let Some(cell) = line.strip_prefix("| `") {
            let column = cell.split('`').next().unwrap().to_owned();
            documented
                .last_mut()
                .expect("a column before any table")
                .1
                .push(column);
        }
    }

    let mut stmt = journal
        .conn
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
        .unwrap();
    let mut tables: Vec<String> = stmt
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut documented_tables: Vec<String> = documented.iter().map(|(t, _)| t.clone()).collect();
    tables.sort();
    documented_tables.sort();
    assert_eq!(documented_tables, tables);
    for (table, columns) in &documented {
        let mut stmt = journal
            .conn
            .prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))
            .unwrap();
        let actual: Vec<String> = stmt
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(columns, &actual, "columns of {table}");
    }
}

#[test]
fn a_pair_gets_a_lineage_of_its_own_and_base_changes_advance_its_generation() {
    let (_dir, _path, journal) = temp_journal();
    let notes = journal.upsert_pair("notes", "/n", "file:///nas/n").unwrap();
    let photos = journal
        .upsert_pair("photos", "/p", "file:///nas/p")
        .unwrap();
    let first = journal.lineage(notes).unwrap();
    assert_eq!(first.generation, 0);
    assert_eq!(first.id.len(), 32);
    assert_ne!(first.id, journal.lineage(photos).unwrap().id);

    put_all(&journal, notes, &["a/", "a/x.md"]);
    put_all(&journal, notes, &["b.md"]);
    // A batch of several steps is one transaction: one generation.
    let steps = [
        Step {
            base: vec![BaseEdit::Remove(rel("b.md"))],
            ..Step::default()
        },
        Step {
            base: vec![BaseEdit::RemoveTree(rel("a"))],
            ..Step::default()
        },
    ];
    journal.commit_batch(notes, &steps).unwrap();
    // Change rows alone leave the base, and the generation, as they were.
    let log_only = Step {
        changes: vec![change(ChangeType::Modified, "c.md", "laptop")],
        ..Step::default()
    };
    journal.commit(notes, &log_only).unwrap();

    let now = journal.lineage(notes).unwrap();
    assert_eq!(now.id, first.id);
    assert_eq!(now.generation, 3);
    assert_eq!(journal.lineage(photos).unwrap().generation, 0);
}

#[test]
fn a_new_lineage_forgets_the_base_and_starts_at_generation_zero() {
    let (_dir, _path, journal) = temp_journal();
    let notes = journal.upsert_pair("notes", "/n", "file:///nas/n").unwrap();
    let photos = journal
        .upsert_pair("photos", "/p", "file:///nas/p")
        .unwrap();
    put_all(&journal, notes, &["a/", "a/x.md"]);
    put_all(&journal, photos, &["cat.jpg"]);
    let old = journal.lineage(notes).unwrap();

    let new = journal.start_new_lineage(notes).unwrap();

    assert_ne!(new.id, old.id);
    assert_eq!(new.generation, 0);
    assert_eq!(journal.lineage(notes).unwrap(), new);
    assert!(journal.load_base(notes).unwrap().is_empty());
    assert_eq!(base_paths(&journal.load_base(photos).unwrap()), ["cat.jpg"]);
    // Re-recording the pair as configured keeps the lineage.
    journal.upsert_pair("notes", "/n", "file:///nas/n").unwrap();
    assert_eq!(journal.lineage(notes).unwrap(), new);
}

#[test]
fn pairs_of_a_version_1_journal_each_get_a_lineage_when_migrated() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("journal.db");
    {
        let conn = Connection::open(&path).unwrap();
        schema::migrate(&conn, &path, &schema::MIGRATIONS[..1]).unwrap();
        conn.execute_batch(
            "INSERT INTO pairs (name, local_root, remote_url, created_at) VALUES \
             ('notes', '/n', 'file:///nas/n', '2025-02-09T16:00:00.000Z'), \
             ('photos', '/p', 'file:///nas/p', '2025-02-09T16:00:00.000Z');",
        )
        .unwrap();
    }

    let journal = Journal::open(&path).unwrap();

    let pairs = journal.pairs().unwrap();
    let lineages: Vec<Lineage> = pairs
        .iter()
        .map(|pair| journal.lineage(pair.id).unwrap())
        .collect();
    assert_eq!(lineages.len(), 2);
    assert_ne!(lineages[0].id, lineages[1].id);
    assert!(
        lineages
            .iter()
            .all(|l| l.id.len() == 32 && l.generation == 0)
    );
}

#[test]
fn a_lineage_edited_into_something_else_than_hex_is_a_damaged_row() {
    let (_dir, path, journal) = temp_journal();
    let notes = journal.upsert_pair("notes", "/n", "file:///nas/n").unwrap();
    side_connection(&path)
        .execute("UPDATE pairs SET lineage = '../../escape'", [])
        .unwrap();

    let err = journal.lineage(notes).err().unwrap();

    assert!(
        matches!(err, JournalError::CorruptRow { table: "pairs", .. }),
        "{err:?}"
    );
}

#[test]
fn a_version_1_journal_keeps_its_base_and_learns_modes() {
    // A journal as the first schema wrote it, with a file and a folder in
    // the base: the migration keeps both, with no mode known yet.
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("journal.db");
    {
        let conn = Connection::open(&path).unwrap();
        schema::migrate(&conn, &path, &schema::MIGRATIONS[..1]).unwrap();
        conn.execute_batch(&format!(
            "INSERT INTO pairs (id, name, local_root, remote_url, created_at) \
             VALUES (1, 'notes', '/n', 'file:///r', '2025-02-09T12:00:00.000Z');
             INSERT INTO base (pair_id, path, kind, hash, size, mtime_ns, synced_at) \
             VALUES (1, 'a.txt', 'file', '{}', 1, 5, 'then'), (1, 'd', 'dir', NULL, NULL, NULL, 'then');",
            hash("a").to_hex()
        ))
        .unwrap();
    }
    let journal = Journal::open(&path).unwrap();
    let pair = journal.upsert_pair("notes", "/n", "file:///r").unwrap();
    let base = journal.load_base(pair).unwrap();
    assert_eq!(base[&rel("a.txt")].entry.mode(), None);
    assert_eq!(base[&rel("d")].entry, Entry::dir(None));

    // Modes are recorded and read back, for files and folders alike.
    let private = Some(crate::model::Mode::from_bits(0o600));
    let mut secret = file("secret");
    secret.entry = secret.entry.with_mode(private);
    let folder = BaseEntry::new(Entry::dir(Some(crate::model::Mode::from_bits(0o700))));
    let step = Step {
        base: vec![
            BaseEdit::Put(rel("secret"), secret.clone()),
            BaseEdit::Put(rel("d"), folder.clone()),
        ],
        ..Step::default()
    };
    journal.commit(pair, &step).unwrap();
    let base = journal.load_base(pair).unwrap();
    assert_eq!(base[&rel("secret")], secret);
    assert_eq!(base[&rel("d")], folder);
    // A mode out of range is refused by the table itself.
    let err = side_connection(&path)
        .execute("UPDATE base SET mode = 4096 WHERE path = 'd'", [])
        .unwrap_err();
    assert!(err.to_string().contains("CHECK"), "{err}");
}

#[test]
fn recent_file_deletions_are_counted_and_survive_a_restart() {
    let (_dir, path, journal) = temp_journal();
    let pair = journal.upsert_pair("p", "/l", "file:///r").unwrap();
    let other = journal.upsert_pair("q", "/l2", "file:///r2").unwrap();
    let before = std::time::SystemTime::now() - std::time::Duration::from_secs(1);
    let deleted = |path: &str, is_dir: bool| Step {
        base: Vec::new(),
        changes: vec![NewChange {
            is_dir,
            ..change(ChangeType::Deleted, path, "laptop")
        }],
        blobs: Vec::new(),
        trashed: Vec::new(),
    };
    let created = Step {
        base: Vec::new(),
        changes: vec![change(ChangeType::Created, "new.md", "laptop")],
        blobs: Vec::new(),
        trashed: Vec::new(),
    };
    journal
        .commit_batch(pair, &[deleted("a", false), deleted("b", false), created])
        .unwrap();
    journal
        .commit_batch(pair, &[deleted("dir", true), deleted("dir/c", false)])
        .unwrap();
    journal.commit_batch(other, &[deleted("x", false)]).unwrap();
    drop(journal);

    let journal = Journal::open(&path).unwrap();
    let batches = journal.deleted_files_since(pair, before).unwrap();
    // Batches recorded within the same millisecond share a row.
    let files: u64 = batches.iter().map(|b| b.files).sum();
    assert_eq!(files, 3, "folders and other pairs are not counted");
    assert!(batches.iter().all(|b| b.at >= before));
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(1);
    assert!(journal.deleted_files_since(pair, later).unwrap().is_empty());
}

#[test]
fn a_confirmation_of_deletions_is_kept_per_pair() {
    let (_dir, path, journal) = temp_journal();
    let pair = journal.upsert_pair("p", "/l", "file:///r").unwrap();
    let other = journal.upsert_pair("q", "/l2", "file:///r2").unwrap();
    assert_eq!(journal.deletions_confirmed_at(pair).unwrap(), None);
    let at = crate::timefmt::parse("2025-02-09T16:00:00.123Z").unwrap();
    journal.confirm_deletions(pair, at).unwrap();
    drop(journal);
    let journal = Journal::open(&path).unwrap();
    assert_eq!(journal.deletions_confirmed_at(pair).unwrap(), Some(at));
    assert_eq!(journal.deletions_confirmed_at(other).unwrap(), None);
}

fn remote_change(entry_id: u64, change_type: &str, path: &str, device: &str) -> RemoteChange {
    RemoteChange {
        entry_id,
        at: format!("2025-02-09T12:00:{entry_id:02}.000Z"),
        device: device.to_owned(),
        change_type: change_type.to_owned(),
        path: rel(path),
        from_path: None,
        is_dir: false,
        hash: None,
        size: None,
    }
}

/// A change from the remote, as the engine hands it to the journal.
fn from_remote(change_type: ChangeType, path: &str, content: Option<&str>) -> NewChange {
    NewChange {
        origin_side: Side::Remote,
        hash: content.map(hash),
        ..change(change_type, path, UNKNOWN_DEVICE)
    }
}

fn record(journal: &Journal, pair: PairId, change: NewChange) -> ChangeRow {
    journal
        .commit(
            pair,
            &Step {
                base: Vec::new(),
                changes: vec![change],
                blobs: Vec::new(),
                trashed: Vec::new(),
            },
        )
        .unwrap();
    journal
        .changes(&ChangeFilter::default())
        .unwrap()
        .pop()
        .unwrap()
}

#[test]
fn a_change_from_the_remote_names_the_device_whose_log_holds_it() {
    let journal = Journal::open_in_memory().unwrap();
    let pair = journal.upsert_pair("notes", "/l", "file:///r").unwrap();
    let mut first = remote_change(1, "created", "a.txt", "laptop");
    first.hash = Some(hash("v1"));
    let mut second = remote_change(2, "modified", "a.txt", "laptop");
    second.hash = Some(hash("v2"));
    let mut moved = remote_change(3, "moved", "new.txt", "desktop");
    moved.from_path = Some(rel("old.txt"));
    let gone = remote_change(4, "deleted", "gone.txt", "desktop");
    let mut folder = remote_change(5, "created", "docs", "desktop");
    folder.is_dir = true;
    let position = LogPosition {
        segment: 0,
        last_id: 5,
    };
    journal
        .add_remote_changes(
            pair,
            "0123456789abcdef0123456789abcdef",
            position,
            &[first, second, moved, gone, folder],
            "2000-01-01T00:00:00.000Z",
        )
        .unwrap();
    assert_eq!(
        journal
            .log_position(pair, "0123456789abcdef0123456789abcdef")
            .unwrap(),
        Some(position)
    );
    assert_eq!(
        journal.origin_of(pair, &rel("a.txt"), &hash("v1")).unwrap(),
        Some(Origin {
            device: "laptop".to_owned(),
            at: "2025-02-09T12:00:01.000Z".to_owned()
        }),
        "not applied yet, and known"
    );

    // The newest version arrives: its entry names the device; the older
    // entry for the path is used up with it.
    let row = record(
        &journal,
        pair,
        from_remote(ChangeType::Created, "a.txt", Some("v2")),
    );
    assert_eq!(row.origin_device, "laptop");
    assert_eq!(row.origin_at.as_deref(), Some("2025-02-09T12:00:02.000Z"));
    // Someone puts v1 back on the remote by hand: not the laptop's doing.
    let row = record(
        &journal,
        pair,
        from_remote(ChangeType::Modified, "a.txt", Some("v1")),
    );
    assert_eq!(
        (row.origin_device.as_str(), row.origin_at),
        ("remote", None)
    );

    let mut move_row = from_remote(ChangeType::Moved, "new.txt", None);
    move_row.from_path = Some(rel("old.txt"));
    assert_eq!(record(&journal, pair, move_row).origin_device, "desktop");
    let row = record(
        &journal,
        pair,
        from_remote(ChangeType::Deleted, "gone.txt", Some("old content")),
    );
    assert_eq!(row.origin_device, "desktop", "a deletion matches by path");
    let mut dir_row = from_remote(ChangeType::Created, "docs", None);
    dir_row.is_dir = true;
    assert_eq!(record(&journal, pair, dir_row).origin_device, "desktop");

    // A change made here is this device's, made when it was recorded.
    let row = record(&journal, pair, change(ChangeType::Created, "b.txt", "me"));
    assert_eq!(row.origin_at.as_deref(), Some(row.at.as_str()));
    let by_desktop = journal
        .changes(&ChangeFilter {
            device: Some("desktop".to_owned()),
            ..ChangeFilter::default()
        })
        .unwrap();
    let paths: Vec<&str> = by_desktop.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(paths, ["new.txt", "gone.txt", "docs"]);
    // What this journal applied answers "who made this version" too.
    assert_eq!(
        journal
            .origin_of(pair, &rel("a.txt"), &hash("v2"))
            .unwrap()
            .map(|o| o.device),
        Some("laptop".to_owned())
    );
    assert_eq!(
        journal.origin_of(pair, &rel("a.txt"), &hash("v1")).unwrap(),
        None,
        "the hand-made version has no known device"
    );
    assert_eq!(
        count(&journal.conn, "SELECT count(*) FROM remote_changes"),
        0,
        "every entry was used up"
    );
}

#[test]
fn entries_never_applied_are_forgotten_after_the_retention() {
    let journal = Journal::open_in_memory().unwrap();
    let pair = journal.upsert_pair("notes", "/l", "file:///r").unwrap();
    let log = "0123456789abcdef0123456789abcdef";
    let old = remote_change(1, "created", "a.txt", "laptop");
    journal
        .add_remote_changes(
            pair,
            log,
            LogPosition {
                segment: 0,
                last_id: 1,
            },
            &[old],
            "2000-01-01T00:00:00.000Z",
        )
        .unwrap();
    journal
        .add_remote_changes(
            pair,
            log,
            LogPosition {
                segment: 1,
                last_id: 1,
            },
            &[],
            "2030-01-01T00:00:00.000Z",
        )
        .unwrap();
    assert_eq!(
        count(&journal.conn, "SELECT count(*) FROM remote_changes"),
        0
    );
}

fn trashed(path: &str, side: Side, content: &str, trash_name: &str) -> TrashedVersion {
    TrashedVersion {
        path: rel(path),
        side,
        trash_name: rel(trash_name),
        hash: hash(content),
        size: content.len() as u64,
        mtime_ns: 1_739_116_800_000_000_000,
        trashed_by: "me".to_owned(),
    }
}

#[test]
fn a_trashed_version_is_recorded_with_the_device_that_made_it() {
    let journal = Journal::open_in_memory().unwrap();
    let pair = journal.upsert_pair("notes", "/l", "file:///r").unwrap();
    let other = journal.upsert_pair("other", "/o", "file:///o").unwrap();
    // v1 came from the remote, made by the laptop; v2 was made here and
    // replaced v1 on the remote in the same step.
    let mut v1 = from_remote(ChangeType::Created, "a.txt", Some("v1"));
    v1.origin_device = "laptop".to_owned();
    v1.origin_side = Side::Local;
    record(&journal, pair, v1);
    let mut v2 = change(ChangeType::Modified, "a.txt", "me");
    v2.hash = Some(hash("v2"));
    journal
        .commit(
            pair,
            &Step {
                base: vec![BaseEdit::Put(rel("a.txt"), file("v2"))],
                changes: vec![v2],
                blobs: Vec::new(),
                trashed: vec![trashed("a.txt", Side::Remote, "v1", "20250209-1600/a.txt")],
            },
        )
        .unwrap();
    // A local version no change names was made here; a remote one no
    // change names is the remote's, and so is one that came from the
    // remote by no device known.
    record(
        &journal,
        pair,
        from_remote(ChangeType::Created, "a.txt", Some("downloaded")),
    );
    journal
        .record_trashed(
            pair,
            &[trashed(
                "a.txt",
                Side::Local,
                "downloaded",
                "20250209-1601/a.txt.2",
            )],
        )
        .unwrap();
    journal
        .commit(
            pair,
            &Step {
                trashed: vec![
                    trashed("a.txt", Side::Local, "hand edit", "20250209-1601/a.txt"),
                    trashed("a.txt", Side::Remote, "unknown", "20250209-1601/a.txt.1"),
                ],
                ..Step::default()
            },
        )
        .unwrap();
    journal
        .commit(
            other,
            &Step {
                trashed: vec![trashed("a.txt", Side::Local, "v1", "x/a.txt")],
                ..Step::default()
            },
        )
        .unwrap();

    let rows = journal.trashed_versions(pair, &rel("a.txt")).unwrap();
    let seen: Vec<(Side, &str, &str)> = rows
        .iter()
        .map(|r| (r.side, r.trash_name.as_str(), r.origin_device.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            (Side::Remote, "20250209-1601/a.txt.1", "remote"),
            (Side::Local, "20250209-1601/a.txt", "me"),
            (Side::Local, "20250209-1601/a.txt.2", "remote"),
            (Side::Remote, "20250209-1600/a.txt", "laptop"),
        ],
        "newest first, each credited to the device that made it"
    );
    let oldest = &rows[3];
    assert_eq!((oldest.hash, oldest.size), (hash("v1"), 2));
    assert_eq!(oldest.trashed_by, "me");
    assert!(oldest.origin_at.is_some());
    assert_eq!(
        journal.trashed_version(oldest.id).unwrap().as_ref(),
        Some(oldest)
    );
    assert_eq!(journal.trashed_version(9999).unwrap(), None);
    assert!(
        journal
            .trashed_versions(pair, &rel("b.txt"))
            .unwrap()
            .is_empty()
    );

    // A purge of the remote trash forgets the remote's rows, not the
    // local side's nor another pair's.
    let gone = journal
        .forget_trashed_before(pair, Side::Remote, "9999-01-01T00:00:00.000Z")
        .unwrap();
    assert_eq!(gone, 2);
    let left = journal.trashed_versions(pair, &rel("a.txt")).unwrap();
    assert_eq!(left.len(), 2);
    assert!(left.iter().all(|row| row.side == Side::Local));
    assert_eq!(
        journal
            .trashed_versions(other, &rel("a.txt"))
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn a_pair_pointed_at_another_remote_forgets_the_versions_in_the_old_remote_trash() {
    let journal = Journal::open_in_memory().unwrap();
    let pair = journal.upsert_pair("notes", "/l", "file:///r").unwrap();
    let record = || {
        journal
            .record_trashed(
                pair,
                &[
                    trashed("a.txt", Side::Local, "v1", "b/a.txt"),
                    trashed("a.txt", Side::Remote, "v2", "b/a.txt"),
                ],
            )
            .unwrap();
    };
    let sides = || -> Vec<Side> {
        let mut sides: Vec<Side> = journal
            .trashed_versions(pair, &rel("a.txt"))
            .unwrap()
            .iter()
            .map(|row| row.side)
            .collect();
        sides.sort_by_key(|side| *side == Side::Remote);
        sides
    };
    record();
    journal.upsert_pair("notes", "/l", "file:///r").unwrap();
    assert_eq!(sides(), [Side::Local, Side::Remote], "nothing moved");
    journal.upsert_pair("notes", "/l", "file:///other").unwrap();
    assert_eq!(sides(), [Side::Local], "the remote moved");
    // The local trash is the agent's own: a moved folder keeps its rows.
    record();
    journal
        .upsert_pair("notes", "/elsewhere", "file:///other")
        .unwrap();
    assert_eq!(sides(), [Side::Local, Side::Local, Side::Remote]);
    journal.upsert_pair("notes", "/l", "file:///r").unwrap();
    assert_eq!(sides(), [Side::Local, Side::Local], "both moved");
}

#[test]
fn a_restore_is_recorded_with_the_version_it_replaced_and_who_asked() {
    let journal = Journal::open_in_memory().unwrap();
    let pair = journal.upsert_pair("notes", "/l", "file:///r").unwrap();
    journal
        .record_trashed(pair, &[trashed("a.txt", Side::Remote, "v1", "b/a.txt")])
        .unwrap();
    let v1 = journal.trashed_versions(pair, &rel("a.txt")).unwrap()[0].id;
    journal
        .record_restore(
            pair,
            Some(v1),
            Some("tok-0123456789abcdef"),
            &[trashed("a.txt", Side::Local, "v2", "c/a.txt")],
        )
        .unwrap();
    let rows = journal.trashed_versions(pair, &rel("a.txt")).unwrap();
    assert_eq!(rows.len(), 2, "the replaced version is listed");
    let (by, at): (Option<String>, Option<String>) = journal
        .conn
        .query_row(
            "SELECT restored_by, restored_at FROM trashed_versions WHERE id = ?1",
            [v1],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap();
    assert_eq!(by.as_deref(), Some("tok-0123456789abcdef"));
    assert!(at.is_some_and(|at| at.ends_with('Z')));
}

#[test]
fn a_trashed_row_edited_by_hand_is_reported_not_trusted() {
    let journal = Journal::open_in_memory().unwrap();
    let pair = journal.upsert_pair("notes", "/l", "file:///r").unwrap();
    journal
        .record_trashed(pair, &[trashed("a.txt", Side::Local, "v1", "b/a.txt")])
        .unwrap();
    journal
        .conn
        .execute(
            "UPDATE trashed_versions SET trash_name = '../../etc/passwd'",
            [],
        )
        .unwrap();
    let err = journal.trashed_versions(pair, &rel("a.txt")).unwrap_err();
    assert!(
        matches!(
            err,
            JournalError::CorruptRow {
                table: "trashed_versions",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn a_remote_version_token_survives_a_restart() {
    let (_dir, path, journal) = temp_journal();
    let pair = journal.upsert_pair("notes", "/n", "s3://b/p").unwrap();
    let mut entry = file("a");
    entry.remote_version = Some("\"9b2cf535f27731c974343645a3985328\"".into());
    journal
        .commit(
            pair,
            &Step {
                base: vec![BaseEdit::Put(rel("a.md"), entry.clone())],
                ..Step::default()
            },
        )
        .unwrap();
    drop(journal);

    let reopened = Journal::open(&path).unwrap();
    assert_eq!(reopened.load_base(pair).unwrap()[&rel("a.md")], entry);
}

#[test]
fn versions_other_devices_trashed_are_recorded_once_and_never_published_as_ours() {
    let journal = Journal::open_in_memory().unwrap();
    let pair = journal.upsert_pair("notes", "/l", "file:///r").unwrap();
    journal
        .record_trashed(
            pair,
            &[
                trashed("a.txt", Side::Remote, "mine", "20250209-1600/a.txt"),
                trashed("a.txt", Side::Local, "local", "20250209-1600/a.txt"),
            ],
        )
        .unwrap();
    let mut theirs = trashed("a.txt", Side::Remote, "theirs", "20250209-1601-abc/a.txt");
    theirs.trashed_by = "desktop".to_owned();
    let foreign = ForeignTrashed {
        version: theirs,
        trashed_at: "2025-02-09T16:01:00.000Z".to_owned(),
    };
    let position = LogPosition {
        segment: 0,
        last_id: 1,
    };
    let log = "0123456789abcdef0123456789abcdef-trash";
    journal
        .add_foreign_trashed(pair, log, position, std::slice::from_ref(&foreign))
        .unwrap();
    // A log read again from its start records nothing twice.
    journal
        .add_foreign_trashed(pair, log, position, std::slice::from_ref(&foreign))
        .unwrap();
    assert_eq!(journal.log_position(pair, log).unwrap(), Some(position));
    let rows = journal.trashed_versions(pair, &rel("a.txt")).unwrap();
    assert_eq!(rows.len(), 3, "{rows:?}");
    let from_desktop: Vec<_> = rows.iter().filter(|r| r.trashed_by == "desktop").collect();
    assert_eq!(from_desktop.len(), 1);
    assert_eq!(from_desktop[0].trashed_at, "2025-02-09T16:01:00.000Z");
    // Only this device's remote trashings are for its own trash log, each
    // once.
    let own = journal.unpublished_remote_trashed(pair, 10).unwrap();
    assert_eq!(own.len(), 1, "{own:?}");
    assert_eq!(own[0].hash, hash("mine"));
    journal.mark_trashed_published(&[own[0].id]).unwrap();
    assert!(
        journal
            .unpublished_remote_trashed(pair, 10)
            .unwrap()
            .is_empty()
    );
    // A row id SQLite hands out again after a purge is still published.
    journal
        .forget_trashed_before(pair, Side::Remote, "2999-01-01T00:00:00.000Z")
        .unwrap();
    journal
        .record_trashed(pair, &[trashed("b.txt", Side::Remote, "later", "x/b.txt")])
        .unwrap();
    let later = journal.unpublished_remote_trashed(pair, 10).unwrap();
    assert_eq!(later.len(), 1, "{later:?}");
    assert_eq!(later[0].hash, hash("later"));
}
