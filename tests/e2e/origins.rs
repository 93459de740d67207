//! Which device made a change, across devices: each device logs its
//! changes on the remote, and another device that applies them names that
//! device in its journal; `prism-syncctl changes --device D` filters by it.

use std::fs;

use crate::harness::*;

/// `type path origin_device` of the changes that came from the remote, in
/// the order they were recorded.
fn from_remote(device: &Device) -> Vec<String> {
    device
        .sql(
            "SELECT type || ' ' || coalesce(from_path || '->', '') || path || ' ' || \
             origin_device || ' ' || (origin_at IS NOT NULL) \
             FROM changes WHERE origin_side = 'remote' ORDER BY id",
        )
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_device_names_the_device_that_made_each_change_it_applies() {
    let sandbox = Sandbox::new();
    let remote = sandbox.remote("remote");
    let a = sandbox.device("devA", &remote);
    let b = sandbox.device("devB", &remote);

    write(&a.local, "plan.txt", "one\n");
    write(&a.local, "docs/notes.md", "notes\n");
    write(&a.local, "doomed.txt", "doomed\n");
    write(&a.local, "old-name.txt", "moving\n");
    a.once_expecting(0);
    b.once_expecting(0);
    assert_eq!(
        from_remote(&b),
        [
            "created docs devA 1",
            "created docs/notes.md devA 1",
            "created doomed.txt devA 1",
            "created old-name.txt devA 1",
            "created plan.txt devA 1",
        ],
        "B names A for what A created"
    );

    write(&a.local, "plan.txt", "two\n");
    fs::remove_file(a.local.join("doomed.txt")).unwrap();
    fs::rename(a.local.join("old-name.txt"), a.local.join("new-name.txt")).unwrap();
    a.once_expecting(0);
    b.once_expecting(0);
    assert_eq!(read(&b.local, "plan.txt"), "two\n");
    assert_eq!(read(&b.local, "new-name.txt"), "moving\n");
    let later = from_remote(&b)[5..].to_vec();
    assert_eq!(
        sorted(later),
        [
            "deleted doomed.txt devA 1",
            "modified plan.txt devA 1",
            "moved old-name.txt->new-name.txt devA 1",
        ],
        "B names A for what A modified, deleted and moved"
    );

    // The other way round: A names B.
    write(&b.local, "from-b.txt", "B wrote this\n");
    b.once_expecting(0);
    a.once_expecting(0);
    assert_eq!(from_remote(&a), ["created from-b.txt devB 1"]);

    // A file put on the remote by hand has no device to name.
    fs::write(remote.join("by-hand.txt"), "no agent\n").unwrap();
    b.once_expecting(0);
    assert_eq!(
        from_remote(&b).last().map(String::as_str),
        Some("created by-hand.txt remote 0")
    );

    // `changes --device` filters by the origin device, on any device.
    let _agent = b.start();
    let by_a = b.ctl_json(&["changes", "--device", "devA"]);
    let mut seen: Vec<String> = by_a["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            assert_eq!(c["origin_device"], "devA", "{c:#}");
            assert!(c["origin_at"].is_string(), "{c:#}");
            format!(
                "{} {}",
                c["type"].as_str().unwrap(),
                c["path"].as_str().unwrap()
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            "created docs",
            "created docs/notes.md",
            "created doomed.txt",
            "created old-name.txt",
            "created plan.txt",
            "deleted doomed.txt",
            "modified plan.txt",
            "moved new-name.txt",
        ]
    );
    let by_b = b.ctl_json(&["changes", "--device", "devB"]);
    let by_b: Vec<&str> = by_b["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["path"].as_str().unwrap())
        .collect();
    assert_eq!(by_b, ["from-b.txt"], "B's own change, made on B");
    let plain = text(&b.ctl(&["changes", "--device", "devA", "--path", "doomed.txt"]));
    assert!(plain.contains("remote (devA)"), "{plain}");
}

#[test]
fn a_remote_folder_keeps_records_and_change_logs() {
    let sandbox = Sandbox::new();
    let remote = sandbox.remote("remote");
    let replica = prism_sync::remote::LocalFolder::remote(remote.clone());
    let metadata = remote.join(".prism-sync");
    crate::records::check_records_round_trip(&replica, &metadata);
    crate::records::check_change_log_round_trip(&replica, &metadata);
}

#[test]
fn a_change_log_that_cannot_be_written_is_shown_and_the_files_still_sync() {
    let sandbox = Sandbox::new();
    let remote = sandbox.remote("remote");
    let a = sandbox.device("devA", &remote);
    write(&a.local, "first.txt", "one\n");
    a.once_expecting(0);
    // The logs' folder on the remote is now a file: no log can be written.
    let logs = remote.join(".prism-sync/changes");
    std::fs::remove_dir_all(&logs).unwrap();
    std::fs::write(&logs, "in the way\n").unwrap();

    write(&a.local, "second.txt", "two\n");
    let out = a.once_expecting(0);
    assert_eq!(read(&remote, "second.txt"), "two\n");
    assert!(
        text(&out).contains("cannot update the records on the remote"),
        "{}",
        text(&out)
    );
    assert_eq!(
        a.sql("SELECT count(*) FROM syncs WHERE status = 'failed'")
            .trim(),
        "0"
    );
}
