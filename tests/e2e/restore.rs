//! A journal restored from a backup: its base is older than what this
//! device already agreed on with the remote, so it must not be trusted. A
//! revert made on another device meanwhile must become a conflict with
//! both versions kept, never be overwritten silently; and devices that
//! simply take turns, or a device whose journal was deleted, must never be
//! mistaken for a restored journal.

use std::fs;
use std::path::{Path, PathBuf};

use crate::harness::*;

const FILE: &str = "plan.txt";
const OLD: &str = "version 1\n";
const NEW: &str = "version 2, written later\n";

/// What the agent says when it finds a restored journal (status and log).
const NOTICE: &str = "older than the remote";

/// The journal's files (the database and, if a run left them, its
/// write-ahead log and index), copied to `to` with the agent stopped.
fn copy_journal(state: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(state).unwrap().flatten() {
        let name = entry.file_name();
        if name.to_string_lossy().starts_with("journal.db") {
            fs::copy(entry.path(), to.join(&name)).unwrap();
        }
    }
}

/// Deletes the journal's files, with the agent stopped.
fn delete_journal(state: &Path) {
    for entry in fs::read_dir(state).unwrap().flatten() {
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with("journal.db")
        {
            fs::remove_file(entry.path()).unwrap();
        }
    }
}

/// Puts back the journal copied to `from`, as restoring a backup does:
/// what the agent wrote since is gone.
fn restore_journal(from: &Path, state: &Path) {
    delete_journal(state);
    copy_journal(from, state);
}

fn backup_dir(sandbox: &Sandbox) -> PathBuf {
    sandbox.path("journal-backup")
}

#[test]
fn a_restored_journal_turns_a_revert_on_another_device_into_a_conflict_with_both_versions_kept() {
    let sandbox = Sandbox::new();
    let remote = sandbox.remote("remote");
    let a = sandbox.device("devA", &remote);
    let b = sandbox.device("devB", &remote);
    write(&a.local, FILE, OLD);
    write(&a.local, "same.txt", "the same everywhere\n");
    a.once_expecting(0);
    b.once_expecting(0);
    assert_eq!(read(&b.local, FILE), OLD);

    // A's journal is backed up while its base says version 1.
    copy_journal(&a.state, &backup_dir(&sandbox));

    // Version 2 reaches every device.
    write(&a.local, FILE, NEW);
    a.once_expecting(0);
    b.once_expecting(0);
    assert_eq!(read(&b.local, FILE), NEW);
    assert_eq!(read(&remote, FILE), NEW);

    // B reverts to version 1: content equal to A's old base.
    write(&b.local, FILE, OLD);
    b.once_expecting(0);
    assert_eq!(read(&remote, FILE), OLD);

    // A's journal is restored from the backup; its folder is not.
    restore_journal(&backup_dir(&sandbox), &a.state);
    let agent = a.start();
    let copy = wait_until(PATIENCE, "the clash is a conflict on A", || {
        let copies = conflict_copies(&a.local, "plan", ".txt");
        match copies.as_slice() {
            [copy] => Ok(copy.clone()),
            _ => Err(format!(
                "A:\n{}\nremote:\n{}\n{}",
                show(&tree(&a.local)),
                show(&tree(&remote)),
                a.log_text()
            )),
        }
    });
    // Neither version was overwritten: A keeps its own, B's revert sits
    // beside it, and the remote ends up with both.
    assert_eq!(read(&a.local, FILE), NEW);
    assert_eq!(read(&a.local, &copy), OLD);
    wait_converged(&[&a.local, &remote], &a.log);
    let conflicts = a.ctl_json(&["conflicts"])["conflicts"].clone();
    let conflicts = conflicts.as_array().unwrap();
    assert_eq!(
        conflicts.len(),
        1,
        "only the file that differs: {conflicts:?}"
    );
    assert_eq!(conflicts[0]["file_path"], FILE);
    // The file both sides agree on just gets a fresh base.
    assert_eq!(read(&a.local, "same.txt"), "the same everywhere\n");

    // The run reports when it ends, a moment after its last file landed.
    wait_until(
        PATIENCE,
        "status says why the pair was re-discovered",
        || {
            let status = a.pair_status();
            let problems = status["problems"].to_string();
            if problems.contains(NOTICE) && problems.contains("restored from a backup") {
                Ok(())
            } else {
                Err(status.to_string())
            }
        },
    );
    drop(agent);
    assert!(
        fs::read_to_string(&a.log).unwrap().contains(NOTICE),
        "{}",
        a.log_text()
    );

    // B takes the conflict copy, and the next runs of A find nothing
    // stale any more.
    b.once_expecting(0);
    assert_eq!(read(&b.local, &copy), OLD);
    let before = fs::read_to_string(&a.log).unwrap().matches(NOTICE).count();
    a.once_expecting(3);
    let after = fs::read_to_string(&a.log).unwrap().matches(NOTICE).count();
    assert_eq!(
        before,
        after,
        "re-discovered once, not again:\n{}",
        a.log_text()
    );
}

#[test]
fn devices_taking_turns_many_times_never_look_restored() {
    let sandbox = Sandbox::new();
    let remote = sandbox.remote("remote");
    let a = sandbox.device("devA", &remote);
    let b = sandbox.device("devB", &remote);
    write(&a.local, FILE, "start\n");
    a.once_expecting(0);
    b.once_expecting(0);
    let lineage = |device: &Device| device.sql("SELECT lineage FROM pairs");
    let (lineage_a, lineage_b) = (lineage(&a), lineage(&b));
    for turn in 0..12 {
        // Each writes on its own turn, and some turns only read what the
        // other wrote, so the remote's records move on between any two
        // runs of one device.
        let (writer, reader) = if turn % 3 == 0 { (&b, &a) } else { (&a, &b) };
        write(
            &writer.local,
            FILE,
            &format!("turn {turn} by {}\n", writer.name),
        );
        write(
            &writer.local,
            &format!("{}/{turn}.txt", writer.name),
            "new\n",
        );
        writer.once_expecting(0);
        reader.once_expecting(0);
        assert_eq!(
            read(&reader.local, FILE),
            format!("turn {turn} by {}\n", writer.name)
        );
    }
    a.once_expecting(0);
    wait_converged(&[&a.local, &remote, &b.local], &a.log);
    for device in [&a, &b] {
        let log = fs::read_to_string(&device.log).unwrap_or_default();
        assert!(!log.contains(NOTICE), "{}", device.log_text());
        assert_eq!(device.sql("SELECT count(*) FROM conflicts"), "0\n");
    }
    assert_eq!(lineage(&a), lineage_a, "A's journal was never started over");
    assert_eq!(lineage(&b), lineage_b, "B's journal was never started over");
    // Each journal keeps its own record on the remote, at its generation.
    for device in [&a, &b] {
        let record = remote
            .join(".prism-sync/journals")
            .join(lineage(device).trim());
        let generation = device.sql("SELECT generation FROM pairs");
        assert_eq!(
            fs::read_to_string(&record).unwrap(),
            format!("{} {}\n", generation.trim(), device.name)
        );
    }
}

#[test]
fn a_deleted_journal_starts_afresh_as_a_new_device_would() {
    let sandbox = Sandbox::new();
    let remote = sandbox.remote("remote");
    let a = sandbox.device("devA", &remote);
    write(&a.local, FILE, OLD);
    write(&a.local, "docs/notes.md", "notes\n");
    a.once_expecting(0);
    let old_lineage = a.sql("SELECT lineage FROM pairs");

    delete_journal(&a.state);
    let output = a.once_expecting(0);
    assert!(!stderr(&output).contains(NOTICE), "{}", text(&output));
    assert_eq!(a.sql("SELECT count(*) FROM conflicts"), "0\n");
    assert_ne!(a.sql("SELECT lineage FROM pairs"), old_lineage);
    // The fresh journal learned both sides: an edit now goes through.
    write(&a.local, FILE, NEW);
    a.once_expecting(0);
    assert_eq!(read(&remote, FILE), NEW);
}

#[test]
fn re_discovery_keeps_both_versions_whatever_the_pairs_strategy() {
    // With `keep_remote` (or `keep_local`) a conflict normally replaces the
    // losing side. A restored journal cannot tell which side is newer, so
    // the re-discovery keeps both, as `manual` does.
    let sandbox = Sandbox::new();
    let remote = sandbox.remote("remote");
    let a = sandbox.device_with("devA", &remote, Settings::conflict("keep_remote"));
    let b = sandbox.device_with("devB", &remote, Settings::conflict("keep_remote"));
    write(&a.local, FILE, OLD);
    a.once_expecting(0);
    b.once_expecting(0);
    copy_journal(&a.state, &backup_dir(&sandbox));
    write(&a.local, FILE, NEW);
    a.once_expecting(0);
    b.once_expecting(0);
    write(&b.local, FILE, OLD);
    b.once_expecting(0);
    assert_eq!(read(&remote, FILE), OLD);

    restore_journal(&backup_dir(&sandbox), &a.state);
    a.once_expecting(3);
    let copies = conflict_copies(&a.local, "plan", ".txt");
    assert_eq!(copies.len(), 1, "{}", show(&tree(&a.local)));
    assert_eq!(read(&a.local, FILE), NEW, "A's newer version is kept");
    assert_eq!(read(&a.local, &copies[0]), OLD);
}
