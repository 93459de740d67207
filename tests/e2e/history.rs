//! `prism-syncctl history` and `restore`: every version of a file the pair
//! still holds (the current one, and those the syncs moved to either
//! side's trash), with who made each; and a trashed version brought back
//! as a new change that reaches the remote and the other devices, with
//! the version it replaced kept in the trash.

use std::fs;

use prism_sync::model::ContentHash;
use serde_json::Value;

use crate::harness::*;

const FILE: &str = "notes.txt";
const V1: &str = "first draft\n";
const V2: &str = "second draft, written on B\n";
const V3: &str = "third draft, back on A\n";

fn hash(content: &str) -> String {
    ContentHash::of_bytes(content.as_bytes()).to_hex()
}

/// `(where, hash, origin_device)` of each version `history --json` lists.
fn listed(history: &Value) -> Vec<(String, String, String)> {
    history["versions"]
        .as_array()
        .expect("a list of versions")
        .iter()
        .map(|v| {
            (
                v["where"].as_str().unwrap().to_owned(),
                v["hash"].as_str().unwrap().to_owned(),
                v["origin_device"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The `version` of the listed version with content `content`.
fn version_of(history: &Value, content: &str) -> String {
    history["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["hash"] == hash(content) && v["where"] != "current")
        .unwrap_or_else(|| panic!("no trashed version {content:?} in {history}"))["version"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn history_lists_each_version_with_its_device_and_restore_brings_one_back_everywhere() {
    let sandbox = Sandbox::new();
    let remote = sandbox.remote("remote");
    let a = sandbox.device("devA", &remote);
    let b = sandbox.device("devB", &remote);
    // Three edits across two devices: A writes v1, B v2, A v3.
    write(&a.local, FILE, V1);
    a.once_expecting(0);
    b.once_expecting(0);
    write(&b.local, FILE, V2);
    b.once_expecting(0);
    a.once_expecting(0);
    assert_eq!(read(&a.local, FILE), V2);
    write(&a.local, FILE, V3);
    a.once_expecting(0);
    assert_eq!(read(&remote, FILE), V3);

    let agent = a.start();
    let file = a.local.join(FILE);
    let file = file.to_str().unwrap();
    let history = a.ctl_json(&["history", file]);
    assert_eq!(history["pair"], PAIR);
    assert_eq!(history["path"], FILE);
    assert_eq!(
        listed(&history),
        [
            ("current".into(), hash(V3), "devA".into()),
            // B's v2, replaced on the remote by A's upload of v3.
            ("remote_trash".into(), hash(V2), "devB".into()),
            // A's v1, replaced in A's folder by the download of v2.
            ("local_trash".into(), hash(V1), "devA".into()),
            // A's v1 again, replaced on the remote by B's upload of v2:
            // B's trash log told A of it.
            ("remote_trash".into(), hash(V1), "devA".into()),
        ],
        "{history}"
    );
    let first = &history["versions"][2];
    assert_eq!(first["size"], V1.len());
    assert!(first["modified_at"].as_str().unwrap().ends_with('Z'));
    assert!(first["trashed_at"].is_string());
    // The same by the path in the pair, and in words.
    let by_pair = a.ctl_json(&["history", FILE, "--pair", PAIR]);
    assert_eq!(by_pair, history);
    let words = text(&a.ctl(&["history", file]));
    assert!(
        words.contains("remote trash") && words.contains("devB"),
        "{words}"
    );

    // B's v2 comes back from the remote trash.
    let v2 = version_of(&history, V2);
    let restored = a.ctl_json(&["restore", file, "--version", &v2]);
    assert_eq!(restored["status"], "restored", "{restored}");
    assert_eq!(restored["hash"], hash(V2));
    assert_eq!(read(&a.local, FILE), V2);
    wait_for_content(&remote.join(FILE), V2);
    // Nothing was overwritten: v3 is in A's trash and the remote's.
    assert!(
        trashed(&local_trash(&a), FILE).contains(&V3.to_owned()),
        "{:?}",
        files_below(&local_trash(&a))
    );
    wait_until(PATIENCE, "v3 in the remote trash", || {
        if trashed(&remote_trash(&remote), FILE).contains(&V3.to_owned()) {
            Ok(())
        } else {
            Err(format!("{:?}", files_below(&remote_trash(&remote))))
        }
    });
    // The restored version is a new change: the other device gets it.
    drop(agent);
    b.once_expecting(0);
    assert_eq!(read(&b.local, FILE), V2);

    // The v3 it replaced is listed in turn, and can be restored.
    let agent = a.start();
    let history = a.ctl_json(&["history", file]);
    let places = listed(&history);
    assert_eq!(places[0], ("current".into(), hash(V2), "devA".into()));
    assert!(
        places
            .iter()
            .any(|p| *p == ("local_trash".into(), hash(V3), "devA".into())),
        "{history}"
    );
    drop(agent);
}

#[test]
fn restore_refuses_a_version_that_is_gone_or_unknown_and_changes_nothing() {
    let sandbox = Sandbox::new();
    let remote = sandbox.remote("remote");
    let a = sandbox.device("devA", &remote);
    write(&a.local, FILE, V1);
    a.once_expecting(0);
    // The remote changes v1 into v2 by hand; A's download trashes its v1.
    write(&remote, FILE, V2);
    a.once_expecting(0);
    assert_eq!(read(&a.local, FILE), V2);

    let _agent = a.start();
    let file = a.local.join(FILE);
    let file = file.to_str().unwrap();
    let history = a.ctl_json(&["history", file]);
    assert_eq!(
        listed(&history),
        [
            ("current".into(), hash(V2), "remote".into()),
            ("local_trash".into(), hash(V1), "devA".into()),
        ],
        "{history}"
    );
    let v1 = version_of(&history, V1);

    // Unknown versions, and the current one, are refused by name.
    for bad in ["9999", "current", "x"] {
        let output = a.ctl(&["restore", file, "--version", bad]);
        assert!(!output.status.success(), "{}", text(&output));
    }
    let output = a.ctl(&["restore", file, "--version", "9999"]);
    assert!(
        stderr(&output).contains("has no version"),
        "{}",
        text(&output)
    );

    // The trash was purged: a clear refusal, and the file is untouched.
    fs::remove_dir_all(local_trash(&a)).unwrap();
    let output = a.ctl(&["--json", "restore", file, "--version", &v1]);
    assert!(!output.status.success(), "{}", text(&output));
    let answer = text(&output);
    assert!(
        answer.contains("no longer in the local trash") && answer.contains("410"),
        "{answer}"
    );
    assert_eq!(read(&a.local, FILE), V2);
    assert_eq!(read(&remote, FILE), V2);
}

#[test]
fn a_deleted_file_is_restored_from_the_remote_trash_into_its_folder() {
    let sandbox = Sandbox::new();
    let remote = sandbox.remote("remote");
    let a = sandbox.device("devA", &remote);
    let doomed = "docs/old/doomed.txt";
    write(&a.local, doomed, V1);
    a.once_expecting(0);
    fs::remove_dir_all(a.local.join("docs")).unwrap();
    a.once_expecting(0);
    assert!(!remote.join(doomed).exists());

    let _agent = a.start();
    let history = a.ctl_json(&["history", doomed, "--pair", PAIR]);
    assert_eq!(
        listed(&history),
        [("remote_trash".into(), hash(V1), "devA".into())],
        "no current version, the deleted one in the remote's trash: {history}"
    );
    let version = version_of(&history, V1);
    let restored = a.ctl_json(&["restore", doomed, "--pair", PAIR, "--version", &version]);
    assert!(restored.get("replaced").is_none(), "{restored}");
    assert_eq!(read(&a.local, doomed), V1);
    wait_for_content(&remote.join(doomed), V1);
}

/// Runs `sql` on the journal of a running agent (waiting out its locks).
fn write_journal(device: &Device, sql: &str) {
    let output = std::process::Command::new("sqlite3")
        .args(["-cmd", ".timeout 10000"])
        .arg(device.state.join("journal.db"))
        .arg(sql)
        .output()
        .expect("run sqlite3 (install the sqlite3 package)");
    assert!(
        output.status.success() && output.stderr.is_empty(),
        "sqlite3 {sql}: {}",
        text(&output)
    );
}

#[test]
fn a_restore_the_journal_cannot_record_still_succeeds_with_a_warning_and_reaches_the_remote() {
    let sandbox = Sandbox::new();
    let remote = sandbox.remote("remote");
    let a = sandbox.device("devA", &remote);
    write(&a.local, FILE, V1);
    a.once_expecting(0);
    write(&remote, FILE, V2);
    a.once_expecting(0);
    assert_eq!(read(&a.local, FILE), V2);

    let _agent = a.start();
    let history = a.ctl_json(&["history", FILE, "--pair", PAIR]);
    let v1 = version_of(&history, V1);
    // The journal refuses to record versions trashed in the local folder
    // (as a full disk or a damaged journal would), after the restore has
    // moved the file it replaces there.
    write_journal(
        &a,
        "CREATE TRIGGER refuse_local_trash BEFORE INSERT ON trashed_versions \
         WHEN NEW.side = 'local' BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
    );
    let output = a.ctl(&["--json", "restore", FILE, "--pair", PAIR, "--version", &v1]);
    assert!(output.status.success(), "{}", text(&output));
    let restored = json(&output);
    assert_eq!(restored["status"], "restored", "{restored}");
    let warning = restored["warning"].as_str().unwrap_or_default();
    assert!(
        warning.contains("could not record") && warning.contains("injected failure"),
        "{restored}"
    );
    assert_eq!(read(&a.local, FILE), V1);
    // Still a change to sync: the remote gets it, and V2 is in the trash.
    wait_for_content(&remote.join(FILE), V1);
    assert!(trashed(&local_trash(&a), FILE).contains(&V2.to_owned()));
    write_journal(&a, "DROP TRIGGER refuse_local_trash;");
}

#[test]
fn versions_another_device_trashed_on_the_remote_are_listed_and_restored() {
    let sandbox = Sandbox::new();
    let remote = sandbox.remote("remote");
    let a = sandbox.device("devA", &remote);
    let b = sandbox.device("devB", &remote);
    write(&a.local, FILE, V1);
    a.once_expecting(0);
    b.once_expecting(0);
    // B edits twice while A is away: its second upload moves its first
    // edit to the remote's trash, a version A never saw.
    write(&b.local, FILE, V2);
    b.once_expecting(0);
    write(&b.local, FILE, V3);
    b.once_expecting(0);
    a.once_expecting(0);
    assert_eq!(read(&a.local, FILE), V3);

    let _agent = a.start();
    let history = a.ctl_json(&["history", FILE, "--pair", PAIR]);
    let places = listed(&history);
    assert_eq!(places[0], ("current".into(), hash(V3), "devB".into()));
    for expected in [
        ("remote_trash".to_owned(), hash(V2), "devB".to_owned()),
        ("remote_trash".to_owned(), hash(V1), "devA".to_owned()),
        ("local_trash".to_owned(), hash(V1), "devA".to_owned()),
    ] {
        assert!(places.contains(&expected), "{expected:?} in {history}");
    }
    let by_b = history["versions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["where"] == "remote_trash")
        .all(|v| v["trashed_by"] == "devB");
    assert!(by_b, "B's syncs trashed both remote versions: {history}");

    // A brings back B's first edit from the remote's trash.
    let v2 = version_of(&history, V2);
    let restored = a.ctl_json(&["restore", FILE, "--pair", PAIR, "--version", &v2]);
    assert_eq!(restored["status"], "restored", "{restored}");
    assert_eq!(read(&a.local, FILE), V2);
    wait_for_content(&remote.join(FILE), V2);
}
