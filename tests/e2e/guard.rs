//! The mass-deletion guard against the real agent: deleting most of a
//! pair, or losing the whole local folder, waits for
//! `prism-syncctl confirm-deletions` and leaves the remote untouched.

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
