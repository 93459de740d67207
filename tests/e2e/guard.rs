//! The mass-deletion guard against the real agent: deleting most of a
//! pair, at once or one file at a time, or losing the whole local folder,
//! waits for `prism-syncctl confirm-deletions` and leaves the remote
//! untouched; deleting a few files now and then is never held.

use std::time::Duration;

use serde_json::Value;

use crate::harness::*;

fn waiting_for_confirmation(device: &Device) -> Value {
    wait_until(PATIENCE, "the pair waits for confirmation", || {
        let status = device.pair_status();
        if status["state"] == "waiting_for_confirmation" {
            Ok(status)
        } else {
            Err(format!("{status:#}"))
        }
    })
}

fn files(root: &std::path::Path) -> usize {
    tree(root).values().filter(|v| *v != "dir").count()
}

#[test]
fn deleting_most_files_waits_for_confirmation() {
    let sandbox = Sandbox::new();
    let remote = sandbox.remote("remote");
    // A longer debounce keeps the twenty deletions in one batch.
    let settings = Settings {
        debounce_ms: Some(400),
        ..Settings::default()
    };
    let device = sandbox.device_with("laptop", &remote, settings);
    for i in 0..30 {
        write(
            &device.local,
            &format!("f{i:02}.txt"),
            &format!("file {i}\n"),
        );
    }
    let _agent = device.start();
    let before = device.wait_converged();
    assert_eq!(files(&remote), 30);

    for i in 0..20 {
        std::fs::remove_file(device.local.join(format!("f{i:02}.txt"))).unwrap();
    }
    let status = waiting_for_confirmation(&device);
    let detail = status["state_detail"].as_str().unwrap();
    assert!(
        detail.contains("confirm-deletions") && detail.contains("20"),
        "the detail says what is held back and how to confirm: {detail}"
    );
    assert_eq!(tree(&remote), before, "the remote is untouched");

    let answer = device.ctl_json(&["confirm-deletions", PAIR]);
    assert_eq!(answer["status"], "confirmed", "{answer:#}");
    let after = device.wait_converged();
    assert_eq!(files(&remote), 10, "{}", show(&after));
    let trash = files_below(&remote_trash(&remote));
    assert_eq!(
        trash.len(),
        20,
        "the deleted files are in the remote trash: {:?}",
        trash.keys()
    );
    wait_until(PATIENCE, "the pair is idle again", || {
        let status = device.pair_status();
        if status["state"] == "idle" {
            Ok(())
        } else {
            Err(format!("{status:#}"))
        }
    });
}

#[test]
fn a_vanished_local_folder_is_not_synced_as_deletions() {
    let sandbox = Sandbox::new();
    let remote = sandbox.remote("remote");
    let device = sandbox.device("laptop", &remote);
    for i in 0..10 {
        write(
            &device.local,
            &format!("docs/f{i}.txt"),
            &format!("file {i}\n"),
        );
    }
    let _agent = device.start();
    let before = device.wait_converged();

    // An unmounted disk: the folder and its marker are gone.
    std::fs::remove_dir_all(&device.local).unwrap();
    let status = waiting_for_confirmation(&device);
    let detail = status["state_detail"].as_str().unwrap();
    assert!(
        detail.contains("missing") && detail.contains("confirm-deletions"),
        "{detail}"
    );
    assert_eq!(tree(&remote), before, "the remote is untouched");
    assert!(files_below(&remote_trash(&remote)).is_empty());
}

fn name(i: usize) -> String {
    format!("f{i:03}.txt")
}

/// Deletes `range` of the files made by [`make_files`], one every
/// `pause`, as a slow script would; fails if the pair is held meanwhile
/// and `must_not_hold` is set.
fn delete_slowly(
    device: &Device,
    range: std::ops::Range<usize>,
    pause: Duration,
    must_not_hold: bool,
) {
    for i in range {
        std::fs::remove_file(device.local.join(name(i))).unwrap();
        std::thread::sleep(pause);
        if must_not_hold && i % 3 == 0 {
            let status = device.pair_status();
            assert_ne!(status["state"], "waiting_for_confirmation", "{status:#}");
        }
    }
}

fn make_files(device: &Device, count: usize) {
    for i in 0..count {
        write(&device.local, &name(i), &format!("file {i}\n"));
    }
}

/// Every file of `range` that is still on the remote.
fn still_on_remote(remote: &std::path::Path, range: std::ops::Range<usize>) -> usize {
    range.filter(|&i| remote.join(name(i)).exists()).count()
}

#[test]
fn deleting_most_files_one_by_one_waits_for_confirmation() {
    let sandbox = Sandbox::new();
    let remote = sandbox.remote("remote");
    let device = sandbox.device("laptop", &remote);
    make_files(&device, 100);
    let _agent = device.start();
    device.wait_converged();
    assert_eq!(files(&remote), 100);

    // 60 of 100, one every 150 ms: many small syncs, none of them large.
    delete_slowly(&device, 0..60, Duration::from_millis(150), false);
    let status = waiting_for_confirmation(&device);
    let detail = status["state_detail"].as_str().unwrap();
    assert!(
        detail.contains("confirm-deletions") && detail.contains("deleted in the last 10 minutes"),
        "the detail says what is held back and how to confirm: {detail}"
    );
    // No more than half went before the guard held the rest back, and the
    // rest stays on the remote until the user confirms.
    let held = still_on_remote(&remote, 0..60);
    assert!(
        held >= 10,
        "only {held} of the deleted files are still on the remote"
    );
    let before = tree(&remote);
    let failed = || device.sql("SELECT count(*) FROM syncs WHERE status = 'failed'");
    let failed_before = failed();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(tree(&remote), before, "nothing more is deleted while held");
    assert_eq!(
        failed(),
        failed_before,
        "waiting for an answer is not a sync failing again and again"
    );
    assert_eq!(device.pair_status()["state"], "waiting_for_confirmation");

    let answer = device.ctl_json(&["confirm-deletions", PAIR]);
    assert_eq!(answer["status"], "confirmed", "{answer:#}");
    let after = device.wait_converged();
    assert_eq!(files(&remote), 40, "{}", show(&after));
    assert_eq!(files_below(&remote_trash(&remote)).len(), 60);
    wait_until(PATIENCE, "the pair is idle again", || {
        let status = device.pair_status();
        if status["state"] == "idle" {
            Ok(())
        } else {
            Err(format!("{status:#}"))
        }
    });
    // What was confirmed is settled: a later deletion is not held for it.
    std::fs::remove_file(device.local.join(name(60))).unwrap();
    wait_for_absence(&remote.join(name(60)));
}

#[test]
fn deleting_a_few_files_now_and_then_is_not_held() {
    let sandbox = Sandbox::new();
    let remote = sandbox.remote("remote");
    let device = sandbox.device("laptop", &remote);
    make_files(&device, 40);
    let _agent = device.start();
    device.wait_converged();

    // 15 of 40 over several seconds, while new files come and go.
    for round in 0..5 {
        write(&device.local, &format!("new-{round}.txt"), "new\n");
        delete_slowly(
            &device,
            round * 3..round * 3 + 3,
            Duration::from_millis(300),
            true,
        );
    }
    let after = device.wait_converged();
    assert_eq!(files(&remote), 30, "{}", show(&after));
    assert_eq!(still_on_remote(&remote, 0..15), 0);
    assert_ne!(device.pair_status()["state"], "waiting_for_confirmation");
}

#[test]
fn a_slow_deleter_is_caught_across_a_restart_of_the_agent() {
    let sandbox = Sandbox::new();
    let remote = sandbox.remote("remote");
    let device = sandbox.device("laptop", &remote);
    make_files(&device, 100);
    let agent = device.start();
    device.wait_converged();
    delete_slowly(&device, 0..30, Duration::from_millis(50), true);
    device.wait_converged();
    assert_eq!(files(&remote), 70);
    agent.stop();

    // The deletions before the restart are in the journal: they still count.
    let _agent = device.start();
    delete_slowly(&device, 30..60, Duration::from_millis(150), false);
    waiting_for_confirmation(&device);
    assert!(
        still_on_remote(&remote, 30..60) >= 10,
        "the guard held the rest back"
    );
}

/// Confirmed deletions that meet another device's lease wait for it, with
/// status saying so, and then go ahead without a second confirmation.
#[test]
fn confirmed_deletions_wait_for_another_device_and_stay_confirmed() {
    let sandbox = Sandbox::new();
    let remote = sandbox.remote("remote");
    let settings = Settings {
        debounce_ms: Some(400),
        ..Settings::default()
    };
    let device = sandbox.device_with("laptop", &remote, settings);
    make_files(&device, 30);
    let _agent = device.start();
    device.wait_converged();
    for i in 0..20 {
        std::fs::remove_file(device.local.join(name(i))).unwrap();
    }
    waiting_for_confirmation(&device);

    let expires = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let lease = remote.join(".prism-sync/lease");
    std::fs::write(&lease, format!("{expires} desktop 1 elsewhere\n")).unwrap();
    let answer = device.ctl_json(&["confirm-deletions", PAIR]);
    assert_eq!(answer["status"], "confirmed", "{answer:#}");
    wait_until(PATIENCE, "status says whom the pair waits for", || {
        let status = device.pair_status();
        let detail = status["state_detail"].as_str().unwrap_or_default();
        if status["state"] == "syncing" && detail.contains("waiting for another device: desktop") {
            Ok(())
        } else {
            Err(format!("{status:#}"))
        }
    });
    // The run gives up waiting after a while; the scheduler tries again,
    // still confirmed.
    wait_until(PATIENCE, "the scheduler tries again later", || {
        let status = device.pair_status();
        let detail = status["state_detail"].as_str().unwrap_or_default();
        if detail.contains("waiting for another device: desktop")
            && detail.contains("trying again in")
        {
            Ok(())
        } else {
            Err(format!("{status:#}"))
        }
    });
    assert_eq!(
        files(&remote),
        30,
        "nothing is deleted under another's lease"
    );

    std::fs::remove_file(&lease).unwrap();
    let after = device.wait_converged();
    assert_eq!(files(&remote), 10, "{}", show(&after));
    assert_eq!(
        device
            .sql("SELECT count(*) FROM syncs WHERE status = 'failed' AND error LIKE '%busy%';")
            .trim(),
        "0"
    );
}
