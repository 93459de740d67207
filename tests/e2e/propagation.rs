//! Changes travel without anyone asking: the watcher carries local edits,
//! deletions and folder moves to the remote; the watch on the `file://`
//! remote (the remote poll, where it cannot be watched) and
//! `prism-syncctl sync start` bring remote changes down.

use std::os::unix::fs::MetadataExt;

use crate::harness::*;

#[test]
fn local_changes_reach_the_remote_through_the_watcher() {
    let sandbox = Sandbox::new();
    let remote = sandbox.remote("remote");
    let device = sandbox.device("laptop", &remote);
    let agent = device.start();
    let local = &device.local;

    write(local, "notes.txt", "first draft\n");
    wait_for_content(&remote.join("notes.txt"), "first draft\n");

    write(local, "notes.txt", "second draft\n");
    wait_for_content(&remote.join("notes.txt"), "second draft\n");

    write(local, "docs/a.md", "alpha\n");
    write(local, "docs/sub/b.md", "beta\n");
    wait_for_content(&remote.join("docs/sub/b.md"), "beta\n");
    wait_for_content(&remote.join("docs/a.md"), "alpha\n");
    let inode_before = std::fs::metadata(remote.join("docs/sub/b.md"))
        .unwrap()
        .ino();

    std::fs::rename(local.join("docs"), local.join("archive")).unwrap();
    wait_for_absence(&remote.join("docs"));
    let tree = device.wait_converged();
    assert!(
        tree.contains_key("archive/sub/b.md") && !tree.keys().any(|p| p.starts_with("docs")),
        "{}",
        show(&tree)
    );
    assert_eq!(read(&remote, "archive/a.md"), "alpha\n");
    assert_eq!(read(&remote, "archive/sub/b.md"), "beta\n");
    assert_eq!(
        std::fs::metadata(remote.join("archive/sub/b.md"))
            .unwrap()
            .ino(),
        inode_before,
        "the folder move must be a rename on the remote, not a copy"
    );
    // The journal records the move once the rename on the remote is done:
    // the trees can agree a moment before the record is there.
    let log = wait_until(PATIENCE, "the move is in the journal", || {
        let log = device.ctl_json(&["changes", "--path", "archive"]);
        if log["changes"].as_array().is_some_and(|c| !c.is_empty()) {
            Ok(log)
        } else {
            Err(format!("{log:#}"))
        }
    });
    let changes = log["changes"].as_array().unwrap();
    let moves: Vec<_> = changes.iter().filter(|c| c["type"] == "moved").collect();
    assert_eq!(moves.len(), 1, "one move for the folder: {log:#}");
    assert_eq!(moves[0]["path"], "archive");
    assert_eq!(moves[0]["from_path"], "docs");
    assert!(
        changes.iter().all(|c| c["type"] == "moved"),
        "nothing but the move happened below archive: {log:#}"
    );

    std::fs::remove_file(local.join("notes.txt")).unwrap();
    wait_for_absence(&remote.join("notes.txt"));
    // The trash keeps the overwritten first draft and the deleted second.
    assert_eq!(
        sorted(trashed(&remote_trash(&remote), "notes.txt")),
        ["first draft\n", "second draft\n"],
        "the overwritten and the deleted version are in the remote trash"
    );
    device.wait_converged();
    wait_until(PATIENCE, "the pair is idle with nothing pending", || {
        let status = device.pair_status();
        if status["state"] == "idle" && status["pending"] == 0 {
            Ok(())
        } else {
            Err(format!("{status:#}"))
        }
    });
    assert_eq!(agent.stop().code(), Some(0));
}

#[test]
fn remote_changes_arrive_through_the_poll() {
    let sandbox = Sandbox::new();
    let remote = sandbox.remote("remote");
    let device = sandbox.device_with("laptop", &remote, Settings::fast_poll());
    let _agent = device.start();

    // The remote is a plain folder that another program writes to: the
    // watch on it notices (or the poll, where it cannot be watched).
    write(&remote, "from-nas/report.txt", "written on the NAS\n");
    wait_for_content(
        &device.local.join("from-nas/report.txt"),
        "written on the NAS\n",
    );
    write(&remote, "from-nas/report.txt", "edited on the NAS\n");
    wait_for_content(
        &device.local.join("from-nas/report.txt"),
        "edited on the NAS\n",
    );
    std::fs::remove_file(remote.join("from-nas/report.txt")).unwrap();
    wait_for_absence(&device.local.join("from-nas/report.txt"));
    assert_eq!(
        sorted(trashed(&local_trash(&device), "from-nas/report.txt")),
        ["edited on the NAS\n", "written on the NAS\n"],
        "the local version deleted because of the remote is in the local trash"
    );
    device.wait_converged();
}

#[test]
fn sync_start_and_wait_bring_remote_changes_down() {
    let sandbox = Sandbox::new();
    let remote = sandbox.remote("remote");
    // The watch on the remote may bring the file down first; the explicit
    // sync must complete all the same and leave it in place.
    let device = sandbox.device("laptop", &remote);
    let _agent = device.start();
    write(&remote, "shared.txt", "from elsewhere\n");

    let started = device.ctl_json(&["sync", "start", PAIR]);
    assert_eq!(started["status"], "sync_in_progress", "{started:#}");
    let id = started["sync_id"].as_str().unwrap();
    let waited = device.ctl(&["--json", "sync", "wait", id, "--timeout", "20"]);
    assert_eq!(waited.status.code(), Some(0), "{}", text(&waited));
    let status = json(&waited);
    assert_eq!(status["status"], "completed", "{status:#}");
    assert_eq!(status["sync_id"], id);
    assert!(status["last_synced_at"].is_string(), "{status:#}");
    assert!(
        status["conflicts"].as_array().unwrap().is_empty(),
        "{status:#}"
    );
    assert_eq!(read(&device.local, "shared.txt"), "from elsewhere\n");
}

#[test]
fn a_paused_pair_holds_changes_until_resumed_and_stays_idle_meanwhile() {
    let sandbox = Sandbox::new();
    let remote = sandbox.remote("remote");
    let device = sandbox.device("laptop", &remote);
    let agent = device.start();
    let local = &device.local;
    write(local, "before.txt", "synced\n");
    wait_for_content(&remote.join("before.txt"), "synced\n");

    device.ctl(&["pause", PAIR]);
    wait_until(PATIENCE, "the pair reports paused", || {
        let state = device.pair_status()["state"].clone();
        if state == "paused" {
            Ok(())
        } else {
            Err(format!("state {state}"))
        }
    });
    write(local, "during.txt", "held back\n");
    // A paused agent must not spin on the change it may not sync: sample its
    // CPU time over a second of pause.
    let cpu_before = cpu_ticks(agent.pid());
    std::thread::sleep(std::time::Duration::from_secs(1));
    let cpu_used = cpu_ticks(agent.pid()) - cpu_before;
    assert!(
        !remote.join("during.txt").exists(),
        "a paused pair synced a change"
    );
    assert!(
        cpu_used < 20,
        "the paused agent used {cpu_used} clock ticks in one second"
    );

    device.ctl(&["resume", PAIR]);
    wait_for_content(&remote.join("during.txt"), "held back\n");
}

/// User plus system CPU time of a process, in clock ticks (`/proc/PID/stat`).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}
