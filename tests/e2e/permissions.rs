//! Permission bits travel: a private file or folder stays private on the
//! remote, on other devices and in the trash, `+x` survives, and a `chmod`
//! alone is a change that propagates, in place. Devices whose agents run
//! with different umasks agree on every mode.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Output;

use crate::harness::*;

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("look at {}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// `prism-syncd --once` for `device`, its process running with `umask`.
fn once_with_umask(device: &Device, umask: u32) -> Output {
    let mut command = device.syncd();
    command.arg("--once");
    // SAFETY: umask is async-signal-safe and touches nothing but the
    // child's own file-creation mask.
    unsafe {
        command.pre_exec(move || {
            libc::umask(umask as libc::mode_t);
            Ok(())
        });
    }
    let output = command.output().expect("run prism-syncd --once");
    assert_eq!(
        output.status.code(),
        Some(0),
        "prism-syncd --once on {}:\n{}",
        device.name,
        text(&output)
    );
    output
}

/// The modes below `root` that the test cares about, as `path mode` lines.
fn modes(root: &Path, paths: &[&str]) -> Vec<String> {
    paths
        .iter()
        .map(|p| format!("{p} {:o}", mode(&root.join(p))))
        .collect()
}

/// Every file below `dir` with its mode, by path below the trash batch.
fn trashed_modes(dir: &Path) -> Vec<(String, u32)> {
    let mut found: Vec<(String, u32)> = files_below(dir)
        .into_keys()
        .map(|path| {
            let under = path.split_once('/').map_or(path.as_str(), |(_, u)| u);
            (under.to_owned(), mode(&dir.join(&path)))
        })
        .collect();
    found.sort();
    found
}

/// Every folder at and below `dir` that is not owner-only.
fn wider_folders(dir: &Path) -> Vec<String> {
    let mut wide = Vec::new();
    if mode(dir) & 0o077 != 0 {
        wide.push(format!("{} {:o}", dir.display(), mode(dir)));
    }
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            wide.extend(wider_folders(&entry.path()));
        }
    }
    wide
}

#[test]
fn modes_arrive_exactly_on_the_remote_and_a_device_with_another_umask() {
    let sandbox = Sandbox::new();
    let remote = sandbox.remote("remote");
    let laptop = sandbox.device("laptop", &remote);
    let desktop = sandbox.device("desktop", &remote);
    let a = &laptop.local;

    fs::create_dir(a.join("private")).unwrap();
    chmod(&a.join("private"), 0o700);
    write(a, "private/key.txt", "secret\n");
    chmod(&a.join("private/key.txt"), 0o600);
    write(a, "run.sh", "#!/bin/sh\necho hi\n");
    chmod(&a.join("run.sh"), 0o755);
    write(a, "shared.txt", "for the group\n");
    chmod(&a.join("shared.txt"), 0o640);
    write(a, "open.txt", "for everyone\n");
    chmod(&a.join("open.txt"), 0o644);
    let paths = [
        "open.txt",
        "private",
        "private/key.txt",
        "run.sh",
        "shared.txt",
    ];
    let expected = [
        "open.txt 644",
        "private 700",
        "private/key.txt 600",
        "run.sh 755",
        "shared.txt 640",
    ];

    // The laptop's agent runs with no umask at all: nothing it creates may
    // be wider than its source anyway.
    once_with_umask(&laptop, 0o000);
    assert_eq!(modes(&remote, &paths), expected, "on the remote");

    // The desktop's agent runs with umask 077: a file the laptop made
    // world-readable still arrives exactly as it was made, so the two
    // devices do not disagree (and no mode goes back and forth).
    once_with_umask(&desktop, 0o077);
    assert_eq!(modes(&desktop.local, &paths), expected, "on the desktop");

    // What the desktop's user makes under umask 077 is private, and stays
    // so on the laptop, whose umask would have allowed more.
    write(&desktop.local, "mine.txt", "desktop only\n");
    chmod(&desktop.local.join("mine.txt"), 0o600);
    once_with_umask(&desktop, 0o077);
    once_with_umask(&laptop, 0o000);
    assert_eq!(mode(&a.join("mine.txt")), 0o600);
    assert_eq!(mode(&remote.join("mine.txt")), 0o600);

    // Settled: further runs change nothing, and each base records the
    // modes (the journal's `mode` column).
    let before: Vec<Vec<String>> = [a, &desktop.local, &remote]
        .iter()
        .map(|root| modes(root, &paths))
        .collect();
    once_with_umask(&laptop, 0o000);
    once_with_umask(&desktop, 0o077);
    let after: Vec<Vec<String>> = [a, &desktop.local, &remote]
        .iter()
        .map(|root| modes(root, &paths))
        .collect();
    assert_eq!(before, after);
    for device in [&laptop, &desktop] {
        assert_eq!(
            device.sql("SELECT path || ' ' || printf('%o', mode) FROM base ORDER BY path"),
            "mine.txt 600\nopen.txt 644\nprivate 700\nprivate/key.txt 600\nrun.sh 755\nshared.txt 640\n",
            "{}'s base",
            device.name
        );
    }
}

#[test]
fn a_chmod_alone_propagates_in_place_and_the_trash_keeps_narrow_modes() {
    let sandbox = Sandbox::new();
    let remote = sandbox.remote("remote");
    let laptop = sandbox.device_with("laptop", &remote, Settings::fast_poll());
    let desktop = sandbox.device("desktop", &remote);
    let a = &laptop.local;
    write(a, "notes.txt", "notes\n");
    chmod(&a.join("notes.txt"), 0o644);
    write(a, "tool", "#!/bin/sh\n");
    chmod(&a.join("tool"), 0o644);
    fs::create_dir(a.join("vault")).unwrap();
    write(a, "vault/diary.txt", "dear diary\n");
    chmod(&a.join("vault/diary.txt"), 0o600);
    chmod(&a.join("vault"), 0o700);
    let agent = laptop.start();
    laptop.wait_converged();
    wait_until(
        PATIENCE,
        "the remote has the laptop's modes",
        || match mode(&remote.join("vault/diary.txt")) {
            0o600 => Ok(()),
            other => Err(format!("{other:o}")),
        },
    );
    let inode = fs::metadata(remote.join("notes.txt")).unwrap().ino();

    // A chmod on the laptop alone reaches the remote (the watcher sees
    // it), by changing the mode in place: the same file, nothing trashed.
    chmod(&a.join("notes.txt"), 0o600);
    wait_until(PATIENCE, "the remote's notes.txt is 600", || {
        match mode(&remote.join("notes.txt")) {
            0o600 => Ok(()),
            other => Err(format!("{other:o}")),
        }
    });
    assert_eq!(fs::metadata(remote.join("notes.txt")).unwrap().ino(), inode);
    assert!(
        trashed(&remote_trash(&remote), "notes.txt").is_empty(),
        "a chmod is not a new version"
    );

    // `+x` given on the remote comes down with the poll.
    chmod(&remote.join("tool"), 0o755);
    wait_until(PATIENCE, "the laptop's tool is executable", || {
        match mode(&a.join("tool")) {
            0o755 => Ok(()),
            other => Err(format!("{other:o}")),
        }
    });

    // A private file edited, then deleted: both old versions go to the
    // remote's trash as private as they were, in owner-only folders.
    write(a, "vault/diary.txt", "dear diary, again\n");
    wait_for_content(&remote.join("vault/diary.txt"), "dear diary, again\n");
    assert_eq!(mode(&remote.join("vault/diary.txt")), 0o600);
    fs::remove_file(a.join("vault/diary.txt")).unwrap();
    wait_for_absence(&remote.join("vault/diary.txt"));
    let remote_trash = remote_trash(&remote);
    assert_eq!(
        sorted(trashed(&remote_trash, "vault/diary.txt")),
        ["dear diary\n", "dear diary, again\n"]
    );
    let kept = trashed_modes(&remote_trash);
    assert!(
        kept.len() == 2 && kept.iter().all(|(_, mode)| *mode == 0o600),
        "{kept:?}"
    );
    assert_eq!(wider_folders(&remote_trash), Vec::<String>::new());
    assert_eq!(agent.stop().code(), Some(0));

    // The desktop gets the narrowed and the executable file; when the
    // laptop's edit of a private file replaces its copy, its own trash
    // keeps the old version private too.
    write(a, "vault/plans.txt", "v1\n");
    chmod(&a.join("vault/plans.txt"), 0o600);
    laptop.once_expecting(0);
    desktop.once_expecting(0);
    assert_eq!(
        modes(
            &desktop.local,
            &["notes.txt", "tool", "vault", "vault/plans.txt"]
        ),
        [
            "notes.txt 600",
            "tool 755",
            "vault 700",
            "vault/plans.txt 600"
        ]
    );
    write(a, "vault/plans.txt", "v2\n");
    laptop.once_expecting(0);
    desktop.once_expecting(0);
    assert_eq!(read(&desktop.local, "vault/plans.txt"), "v2\n");
    assert_eq!(mode(&desktop.local.join("vault/plans.txt")), 0o600);
    let desktop_trash = local_trash(&desktop);
    assert_eq!(
        trashed_modes(&desktop_trash),
        [("vault/plans.txt".to_owned(), 0o600)]
    );
    assert_eq!(wider_folders(&desktop_trash), Vec::<String>::new());
}
