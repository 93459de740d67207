//! Each conflict strategy on a file edited differently on both sides, and
//! deletion against modification both ways: what the files, the trashes,
//! `prism-syncctl conflicts` and `resolve` show, and that the pair
//! converges afterwards with nothing lost.
//!
//! The clash is made while no agent runs (`--once` syncs the base, both
//! sides are edited, `--once` finds the conflict); a daemon is started
//! afterwards only to list and resolve.

use prism_sync::api::client::{Client, ClientError};
use prism_sync::api::wire::{ResolveRequest, Strategy as WireStrategy};
use serde_json::Value;

use crate::harness::*;

const PAGE: &str = "docs/page.md";
const BASE: &str = "one\ntwo\nthree\nfour\nfive\nsix\nseven\n";
const LOCAL: &str = "one\ntwo\nthree\nfour (edited on the laptop)\nfive\nsix\nseven\n";
const REMOTE: &str = "one\ntwo\nthree\nfour (edited on the NAS, longer)\nfive\nsix\nseven\n";

fn hash(text: &str) -> String {
    blake3::hash(text.as_bytes()).to_hex().to_string()
}

/// A device using `strategy` whose page was synced once and then edited
/// to `local` locally and `remote` on the remote (`None`: deleted).
fn diverged(
    sandbox: &Sandbox,
    strategy: &'static str,
    local: Option<&str>,
    remote: Option<&str>,
) -> Device {
    let remote_dir = sandbox.remote("remote");
    let device = sandbox.device_with("laptop", &remote_dir, Settings::conflict(strategy));
    write(&device.local, PAGE, BASE);
    write(&device.local, "other.txt", "untouched\n");
    device.once_expecting(0);
    assert_eq!(read(&remote_dir, PAGE), BASE);
    for (root, content) in [(&device.local, local), (&remote_dir, remote)] {
        match content {
            Some(text) => write(root, PAGE, text),
            None => std::fs::remove_file(root.join(PAGE)).unwrap(),
        }
    }
    device
}

/// The one conflict copy of the page in `root`, relative to it.
fn page_copy(root: &std::path::Path) -> String {
    let copies = conflict_copies(&root.join("docs"), "page", ".md");
    assert_eq!(
        copies.len(),
        1,
        "one conflict copy in {}: {copies:?}",
        root.display()
    );
    format!("docs/{}", copies[0])
}

/// Checks the specification's 5.3 shape and returns the conflict.
fn only_conflict(device: &Device, args: &[&str]) -> Value {
    let mut all = vec!["conflicts"];
    all.extend_from_slice(args);
    let list = device.ctl_json(&all);
    let conflicts = list["conflicts"].as_array().expect("a conflicts array");
    assert_eq!(conflicts.len(), 1, "{list:#}");
    let conflict = conflicts[0].clone();
    assert!(
        conflict["conflict_id"]
            .as_str()
            .unwrap()
            .starts_with("conflict-"),
        "{conflict:#}"
    );
    assert_eq!(conflict["file_path"], PAGE);
    for side in ["local_version", "remote_version"] {
        let version = conflict[side].as_object().expect("a version object");
        assert!(
            version.contains_key("hash") && version.contains_key("modified_at"),
            "{conflict:#}"
        );
    }
    assert!(conflict["status"] == "unresolved" || conflict["status"] == "resolved");
    conflict
}

/// Resolves `id` with `args` and checks the 4.3 answer.
fn resolve(device: &Device, id: &str, args: &[&str]) -> Value {
    let mut all = vec!["resolve", id];
    all.extend_from_slice(args);
    let answer = device.ctl_json(&all);
    assert_eq!(answer["status"], "resolved", "{answer:#}");
    assert!(
        answer["resolved_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{answer:#}"
    );
    answer
}

/// After a manual conflict: the local version under the real name and the
/// remote one in a copy, on both sides.
fn assert_both_versions_kept(device: &Device) -> String {
    let tree = device.wait_converged();
    let copy = page_copy(&device.local);
    // The copy is named after where its version came from, not after the
    // device that found the conflict.
    assert!(copy.ends_with("-remote.md"), "{copy}");
    assert_eq!(read(&device.local, PAGE), LOCAL, "{}", show(&tree));
    assert_eq!(read(&device.local, &copy), REMOTE, "{}", show(&tree));
    copy
}

#[test]
fn manual_keeps_both_and_resolving_keep_local_trashes_the_copy() {
    let sandbox = Sandbox::new();
    let device = diverged(&sandbox, "manual", Some(LOCAL), Some(REMOTE));
    device.once_expecting(3);
    let copy = assert_both_versions_kept(&device);

    let _agent = device.start();
    let conflict = only_conflict(&device, &[]);
    assert_eq!(conflict["status"], "unresolved");
    assert_eq!(conflict["kind"], "both_modified");
    assert_eq!(conflict["local_version"]["hash"], hash(LOCAL));
    assert_eq!(conflict["remote_version"]["hash"], hash(REMOTE));
    assert!(conflict["local_version"]["modified_at"].is_string());
    assert_eq!(conflict["copy_path"], copy.as_str());
    let status = device.pair_status();
    assert_eq!(status["unresolved_conflicts"], 1, "{status:#}");

    resolve(
        &device,
        conflict["conflict_id"].as_str().unwrap(),
        &["--strategy", "keep_local"],
    );
    wait_for_absence(&device.remote.join(&copy));
    let tree = device.wait_converged();
    assert_eq!(read(&device.remote, PAGE), LOCAL, "{}", show(&tree));
    assert!(!tree.contains_key(&copy), "{}", show(&tree));
    assert_eq!(trashed(&remote_trash(&device.remote), &copy), [REMOTE]);
    // Both removals of the copy are in its history: the resolution's
    // here, and the sync's on the remote.
    // The sync records its step just after the remote file is gone: wait
    // for the record, not only for the file.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let history = loop {
        let history = device.ctl_json(&["history", &copy, "--pair", PAIR]);
        let recorded = history["versions"]
            .as_array()
            .is_some_and(|v| v.iter().any(|v| v["where"] == "remote_trash"));
        if recorded || std::time::Instant::now() > deadline {
            break history;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let mut places: Vec<(&str, &str, &str)> = history["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["where"].as_str().unwrap(),
                v["hash"].as_str().unwrap(),
                v["origin_device"].as_str().unwrap(),
            )
        })
        .collect();
    places.sort();
    let remote_hash = hash(REMOTE);
    assert_eq!(
        places,
        [
            ("local_trash", remote_hash.as_str(), "remote"),
            ("remote_trash", remote_hash.as_str(), "remote"),
        ],
        "the remote's version, made by no device known: {history}"
    );
    assert!(
        device.ctl_json(&["conflicts"])["conflicts"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let resolved = only_conflict(&device, &["--all"]);
    assert_eq!(resolved["status"], "resolved");
    assert_eq!(resolved["strategy"], "keep_local");
}

#[test]
fn manual_resolved_with_keep_remote_restores_the_remote_version() {
    let sandbox = Sandbox::new();
    let device = diverged(&sandbox, "manual", Some(LOCAL), Some(REMOTE));
    device.once_expecting(3);
    let copy = assert_both_versions_kept(&device);
    let _agent = device.start();
    let conflict = only_conflict(&device, &[]);
    resolve(
        &device,
        conflict["conflict_id"].as_str().unwrap(),
        &["--strategy", "keep_remote"],
    );
    wait_for_content(&device.remote.join(PAGE), REMOTE);
    let tree = device.wait_converged();
    assert_eq!(read(&device.local, PAGE), REMOTE);
    assert!(!tree.contains_key(&copy), "{}", show(&tree));
    // The local version it replaced is in the remote trash.
    assert!(trashed(&remote_trash(&device.remote), PAGE).contains(&LOCAL.to_owned()));
}

#[test]
fn manual_resolved_from_a_file_puts_that_file_on_both_sides() {
    let sandbox = Sandbox::new();
    let device = diverged(&sandbox, "manual", Some(LOCAL), Some(REMOTE));
    device.once_expecting(3);
    let copy = assert_both_versions_kept(&device);
    let merged = sandbox.path("merged.md");
    let merged_text = "one\ntwo\nthree\nfour (edited by hand)\nfive\nsix\nseven\n";
    std::fs::write(&merged, merged_text).unwrap();
    let _agent = device.start();
    let conflict = only_conflict(&device, &[]);
    resolve(
        &device,
        conflict["conflict_id"].as_str().unwrap(),
        &["--strategy", "manual", "--from", merged.to_str().unwrap()],
    );
    wait_for_content(&device.remote.join(PAGE), merged_text);
    wait_for_absence(&device.remote.join(&copy));
    let tree = device.wait_converged();
    assert_eq!(read(&device.local, PAGE), merged_text, "{}", show(&tree));
}

#[test]
fn keep_local_overwrites_the_remote_and_trashes_its_version() {
    let sandbox = Sandbox::new();
    let device = diverged(&sandbox, "keep_local", Some(LOCAL), Some(REMOTE));
    device.once_expecting(0);
    let tree = device.wait_converged();
    assert_eq!(read(&device.remote, PAGE), LOCAL, "{}", show(&tree));
    assert!(conflict_copies(&device.local.join("docs"), "page", ".md").is_empty());
    assert!(trashed(&remote_trash(&device.remote), PAGE).contains(&REMOTE.to_owned()));
    let _agent = device.start();
    assert!(
        device.ctl_json(&["conflicts"])["conflicts"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let conflict = only_conflict(&device, &["--all"]);
    assert_eq!(conflict["status"], "resolved");
    assert_eq!(conflict["strategy"], "keep_local");
}

#[test]
fn keep_remote_overwrites_the_local_file_and_trashes_its_version() {
    let sandbox = Sandbox::new();
    let device = diverged(&sandbox, "keep_remote", Some(LOCAL), Some(REMOTE));
    device.once_expecting(0);
    let tree = device.wait_converged();
    assert_eq!(read(&device.local, PAGE), REMOTE, "{}", show(&tree));
    assert!(conflict_copies(&device.local.join("docs"), "page", ".md").is_empty());
    assert!(trashed(&local_trash(&device), PAGE).contains(&LOCAL.to_owned()));
    let _agent = device.start();
    let conflict = only_conflict(&device, &["--all"]);
    assert_eq!(conflict["strategy"], "keep_remote");
}

#[test]
fn auto_merge_merges_edits_of_different_lines() {
    let sandbox = Sandbox::new();
    let local = BASE.replace("one\n", "ONE (laptop)\n");
    let remote = BASE.replace("seven\n", "SEVEN (nas)\n");
    let device = diverged(&sandbox, "auto_merge", Some(&local), Some(&remote));
    device.once_expecting(0);
    let merged = BASE
        .replace("one\n", "ONE (laptop)\n")
        .replace("seven\n", "SEVEN (nas)\n");
    let tree = device.wait_converged();
    assert_eq!(read(&device.local, PAGE), merged, "{}", show(&tree));
    assert!(conflict_copies(&device.local.join("docs"), "page", ".md").is_empty());
    let _agent = device.start();
    let conflict = only_conflict(&device, &["--all"]);
    assert_eq!(conflict["status"], "resolved");
    assert_eq!(conflict["strategy"], "auto_merge");
}

#[test]
fn auto_merge_of_overlapping_edits_falls_back_to_manual() {
    let sandbox = Sandbox::new();
    let device = diverged(&sandbox, "auto_merge", Some(LOCAL), Some(REMOTE));
    device.once_expecting(3);
    let copy = assert_both_versions_kept(&device);
    let _agent = device.start();
    let conflict = only_conflict(&device, &[]);
    assert_eq!(conflict["status"], "unresolved");
    let note = conflict["note"].as_str().unwrap_or_default();
    assert!(note.contains("fell back to manual"), "{conflict:#}");
    let id = conflict["conflict_id"].as_str().unwrap();

    // Merging again cannot succeed: the agent says so and keeps both.
    let refused = device.ctl(&["--json", "resolve", id, "--strategy", "auto_merge"]);
    assert_ne!(refused.status.code(), Some(0), "{}", text(&refused));
    let body = json(&refused);
    let refusal = if body["error"].is_object() {
        body["error"]["message"].to_string() + &body["error"]["details"].to_string()
    } else {
        assert_eq!(body["status"], "unresolved", "{body:#}");
        body["note"].to_string()
    };
    assert!(
        refusal.contains("manual"),
        "the refusal says what to do: {body:#}"
    );
    assert_eq!(read(&device.local, &copy), REMOTE);

    let merged = sandbox.path("merged.md");
    std::fs::write(&merged, "merged by hand\n").unwrap();
    resolve(
        &device,
        id,
        &["--strategy", "manual", "--from", merged.to_str().unwrap()],
    );
    wait_for_content(&device.remote.join(PAGE), "merged by hand\n");
    wait_for_absence(&device.remote.join(&copy));
    device.wait_converged();
}

#[test]
fn a_local_deletion_does_not_beat_a_remote_edit() {
    let sandbox = Sandbox::new();
    let device = diverged(&sandbox, "manual", None, Some(REMOTE));
    device.once_expecting(3);
    let tree = device.wait_converged();
    assert_eq!(read(&device.local, PAGE), REMOTE, "{}", show(&tree));
    assert_eq!(read(&device.local, "other.txt"), "untouched\n");
    let _agent = device.start();
    let conflict = only_conflict(&device, &[]);
    assert_eq!(conflict["kind"], "local_deleted_remote_modified");
    assert_eq!(conflict["local_version"]["hash"], Value::Null);
    assert_eq!(conflict["remote_version"]["hash"], hash(REMOTE));
}

#[test]
fn a_remote_deletion_does_not_beat_a_local_edit() {
    let sandbox = Sandbox::new();
    let device = diverged(&sandbox, "manual", Some(LOCAL), None);
    device.once_expecting(3);
    let tree = device.wait_converged();
    assert_eq!(read(&device.remote, PAGE), LOCAL, "{}", show(&tree));
    let _agent = device.start();
    let conflict = only_conflict(&device, &[]);
    assert_eq!(conflict["kind"], "local_modified_remote_deleted");
    assert_eq!(conflict["remote_version"]["hash"], Value::Null);
    assert_eq!(conflict["local_version"]["hash"], hash(LOCAL));
}

#[test]
fn a_conflict_on_a_name_near_the_length_limit_keeps_both_versions() {
    let sandbox = Sandbox::new();
    let remote_dir = sandbox.remote("remote");
    let device = sandbox.device_with("laptop", &remote_dir, Settings::conflict("manual"));
    // 250 bytes: no room for `.conflict-STAMP-DEVICE` without shortening.
    let stem = "ü".repeat(123);
    let name = format!("docs/{stem}.txt");
    assert_eq!(name.len() - "docs/".len(), 250);
    write(&device.local, &name, BASE);
    device.once_expecting(0);
    write(&device.local, &name, LOCAL);
    write(&remote_dir, &name, REMOTE);
    device.once_expecting(3);

    let tree = device.wait_converged();
    let copies: Vec<&String> = tree
        .keys()
        .filter(|path| path.contains(".conflict-"))
        .collect();
    assert_eq!(copies.len(), 1, "{}", show(&tree));
    let copy = copies[0].strip_prefix("docs/").unwrap();
    assert!(copy.len() <= 255, "{copy}");
    assert!(copy.starts_with(&stem[..100]), "{copy}");
    assert!(copy.ends_with("-remote.txt"), "{copy}");
    assert_eq!(read(&device.local, &name), LOCAL, "{}", show(&tree));
    assert_eq!(
        read(&device.local, &format!("docs/{copy}")),
        REMOTE,
        "{}",
        show(&tree)
    );
    // Nothing is left failing: another run finds nothing to do but the
    // conflict that waits for the user.
    let again = text(&device.once_expecting(3));
    assert!(
        again.contains("(nothing to do)") && again.contains("errors 0"),
        "{again}"
    );
}

#[test]
fn resolving_a_conflict_whose_folder_became_a_file_is_refused_clearly() {
    let sandbox = Sandbox::new();
    let device = diverged(&sandbox, "manual", Some(LOCAL), Some(REMOTE));
    device.once_expecting(3);
    assert_both_versions_kept(&device);
    for i in 0..6 {
        write(&device.local, &format!("more/{i}.txt"), "more\n");
    }
    let _agent = device.start();
    let conflict = only_conflict(&device, &[]);
    let id = conflict["conflict_id"].as_str().unwrap().to_owned();
    // The user replaces the folder with a file; the agent carries it over.
    std::fs::remove_dir_all(device.local.join("docs")).unwrap();
    write(&device.local, "docs", "now a file\n");
    wait_for_content(&device.remote.join("docs"), "now a file\n");

    for strategy in ["keep_remote", "keep_local", "auto_merge"] {
        let output = device.ctl(&["resolve", &id, "--strategy", strategy]);
        let said = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{}", text(&output));
        assert!(
            said.contains("docs is no longer a folder here") && !said.contains("Not a directory"),
            "{said}"
        );
    }
    assert_eq!(read(&device.local, "docs"), "now a file\n");
    // Acknowledging it still works.
    resolve(&device, &id, &["--strategy", "manual"]);
    device.wait_converged();
}

#[test]
fn a_merged_file_that_is_no_regular_file_or_too_large_is_refused_and_the_pair_keeps_working() {
    let sandbox = Sandbox::new();
    let device = diverged(&sandbox, "manual", Some(LOCAL), Some(REMOTE));
    device.once_expecting(3);
    let copy = assert_both_versions_kept(&device);
    // A FIFO no one writes to would block the pair's loop for good, and
    // /dev/zero would fill the memory.
    let fifo = sandbox.path("merged.fifo");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success());
    let large = sandbox.path("large.md");
    std::fs::File::create(&large)
        .unwrap()
        .set_len(64 * 1024 * 1024 + 1)
        .unwrap();
    let folder = sandbox.path("a-folder");
    std::fs::create_dir_all(&folder).unwrap();
    let _agent = device.start();
    let conflict = only_conflict(&device, &[]);
    let id = conflict["conflict_id"].as_str().unwrap();
    // Over the socket as a client other than `prism-syncctl` (which
    // checks the name itself) would send it; the agent must check what it
    // opens, since the name may change between the two looks.
    let mut client = Client::connect(&device.socket).unwrap();
    for (from, why) in [
        (fifo.as_path(), "not a regular file"),
        (std::path::Path::new("/dev/zero"), "not a regular file"),
        (folder.as_path(), "not a regular file"),
        (large.as_path(), "larger than 64 MiB"),
    ] {
        let from = from.to_str().unwrap();
        let refused = client.resolve(&ResolveRequest {
            conflict_id: id.to_owned(),
            resolution_strategy: WireStrategy::Manual,
            merged_file: Some(from.to_owned()),
        });
        let Err(ClientError::Api(error)) = refused else {
            panic!("{from}: {refused:?}");
        };
        assert_eq!(error.code, 400, "{from}: {error:?}");
        assert!(
            error.message.contains(from) && error.message.contains(why),
            "{from}: {error:?}"
        );
    }
    assert_eq!(read(&device.local, PAGE), LOCAL);
    assert_eq!(read(&device.local, &copy), REMOTE);
    // The pair still answers, and a regular file still resolves.
    let merged = sandbox.path("merged.md");
    std::fs::write(&merged, "merged by hand\n").unwrap();
    resolve(
        &device,
        id,
        &["--strategy", "manual", "--from", merged.to_str().unwrap()],
    );
    wait_for_content(&device.remote.join(PAGE), "merged by hand\n");
}
