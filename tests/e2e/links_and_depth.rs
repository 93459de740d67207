//! Trees a hostile or careless user makes: folders nested about 1,900
//! levels deep, symbolic links inside a `file://` remote pointing out of
//! it, and a synced folder replaced by a link. Nothing may crash, write
//! outside a root, or read a link as a deletion.

use std::ffi::CString;
use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use crate::harness::*;

/// Makes `levels` nested one-letter folders below `root` with `bottom.txt`
/// holding `content` at the bottom, one level at a time relative to the
/// folder above (a whole path that long may exceed what a plain call
/// takes); returns the file's relative path.
fn make_deep_tree(root: &Path, levels: usize, content: &str) -> String {
    let open_dir = |at: libc::c_int, name: &CString| {
        // SAFETY: `name` is NUL-terminated; the result is checked.
        let fd = unsafe {
            libc::openat(
                at,
                name.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        assert!(fd >= 0, "{}", std::io::Error::last_os_error());
        // SAFETY: `fd` was just opened and is owned by nobody else.
        unsafe { OwnedFd::from_raw_fd(fd) }
    };
    let level = CString::new("d").unwrap();
    let mut dir = open_dir(
        libc::AT_FDCWD,
        &CString::new(root.as_os_str().as_encoded_bytes()).unwrap(),
    );
    for _ in 0..levels {
        // SAFETY: as above.
        let made = unsafe { libc::mkdirat(dir.as_raw_fd(), level.as_ptr(), 0o755) };
        assert_eq!(made, 0, "{}", std::io::Error::last_os_error());
        dir = open_dir(dir.as_raw_fd(), &level);
    }
    let name = CString::new("bottom.txt").unwrap();
    // SAFETY: as above.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC,
            0o644,
        )
    };
    assert!(fd >= 0, "{}", std::io::Error::last_os_error());
    // SAFETY: as above.
    let file = fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    std::io::Write::write_all(&mut &file, content.as_bytes()).unwrap();
    format!("{}bottom.txt", "d/".repeat(levels))
}

#[test]
fn a_tree_nineteen_hundred_levels_deep_syncs_through_the_daemon_and_once() {
    // About 3,800 bytes of path, under Linux's 4,096. The agent syncs on
    // threads with 2 MiB stacks: a walk calling down per level overflows
    // them and aborts the agent, at every restart.
    let sandbox = Sandbox::new();
    let remote = sandbox.remote("remote");
    let laptop = sandbox.device("laptop", &remote);
    let desktop = sandbox.device("desktop", &remote);
    let bottom = make_deep_tree(&laptop.local, 1900, "deep down\n");

    let agent = laptop.start();
    wait_for_content(&remote.join(&bottom), "deep down\n");
    wait_until(PATIENCE, "the laptop is idle", || {
        let status = laptop.pair_status();
        if status["state"] == "idle" {
            Ok(status)
        } else {
            Err(status.to_string())
        }
    });
    assert_eq!(
        laptop.pair_status()["problems"],
        serde_json::json!([]),
        "{}",
        laptop.log_text()
    );
    agent.stop();

    // A second device meets the tree on the shared remote, and deletes
    // the file deep down.
    desktop.once_expecting(0);
    assert_eq!(read(&desktop.local, &bottom), "deep down\n");
    fs::remove_file(desktop.local.join(&bottom)).unwrap();
    desktop.once_expecting(0);

    // The laptop's agent starts again on the deep tree and takes the
    // deletion (waited for without naming the 3,800-byte path).
    let agent = laptop.start();
    let gone = laptop.local.join(&bottom);
    wait_until(PATIENCE, "the bottom file is gone on the laptop", || {
        if gone.exists() {
            Err(laptop.log_text())
        } else {
            Ok(())
        }
    });
    assert!(gone.parent().unwrap().is_dir());
    agent.stop();
}

/// Reads the `problems` of the pair's status, as `(path, message)`.
fn problems(device: &Device) -> Vec<(String, String)> {
    device.pair_status()["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .map(|p| {
            (
                p["path"].as_str().unwrap_or_default().to_owned(),
                p["message"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn sync_count(device: &Device) -> u64 {
    device
        .sql("SELECT count(*) FROM syncs")
        .trim()
        .parse()
        .expect("a count")
}

#[test]
fn a_link_inside_a_remote_folder_is_never_written_through_and_the_local_folder_is_kept() {
    // The remote holds `shared` as a link to a folder outside it, which
    // has a `notes.txt` of its own; the laptop has a real folder `shared`
    // with its own `notes.txt` and `todo.txt`.
    let sandbox = Sandbox::new();
    let remote = sandbox.remote("remote");
    let outside = sandbox.remote("outside");
    write(&outside, "notes.txt", "the outside folder's own notes\n");
    std::os::unix::fs::symlink(&outside, remote.join("shared")).unwrap();
    let laptop = sandbox.device("laptop", &remote);
    write(&laptop.local, "shared/notes.txt", "the laptop's notes\n");
    write(&laptop.local, "shared/todo.txt", "the laptop's list\n");
    write(&laptop.local, "plain.txt", "synced as usual\n");
    let outside_before = tree(&outside);

    for _ in 0..2 {
        let out = laptop.once();
        assert_eq!(tree(&outside), outside_before, "{}", text(&out));
        assert!(
            text(&out).contains("errors 0"),
            "nothing is tried through the link: {}",
            text(&out)
        );
    }
    assert_eq!(read(&remote, "plain.txt"), "synced as usual\n");
    assert_eq!(
        read(&laptop.local, "shared/notes.txt"),
        "the laptop's notes\n"
    );
    assert_eq!(
        read(&laptop.local, "shared/todo.txt"),
        "the laptop's list\n"
    );
    assert!(
        tree(&local_trash(&laptop)).is_empty(),
        "nothing was trashed locally"
    );

    // The daemon holds the path with a problem, and does not loop.
    let agent = laptop.start();
    let seen = wait_until(PATIENCE, "status says why `shared` is left alone", || {
        let found = problems(&laptop);
        if found
            .iter()
            .any(|(path, message)| path == "shared" && message.contains("symbolic link"))
        {
            Ok(found)
        } else {
            Err(format!("{found:?}"))
        }
    });
    let status = laptop.ctl(&["status"]);
    assert!(
        text(&status).contains("shared: a symbolic link"),
        "{}",
        text(&status)
    );
    let before = sync_count(&laptop);
    std::thread::sleep(Duration::from_secs(2));
    let after = sync_count(&laptop);
    assert!(after <= before + 1, "{before} → {after} syncs: {seen:?}");
    assert_eq!(tree(&outside), outside_before);
    assert_eq!(
        read(&laptop.local, "shared/notes.txt"),
        "the laptop's notes\n"
    );
    agent.stop();
}

#[test]
fn a_synced_folder_replaced_by_a_link_is_held_on_either_side_never_deleted() {
    let sandbox = Sandbox::new();
    let remote = sandbox.remote("remote");
    let other_disk = sandbox.remote("other-disk");
    let laptop = sandbox.device("laptop", &remote);
    write(&laptop.local, "photos/2024/beach.jpg", "beach\n");
    write(&laptop.local, "photos/cat.jpg", "cat\n");
    write(&laptop.local, "music/song.mp3", "song\n");
    laptop.once_expecting(0);
    assert_eq!(read(&remote, "photos/cat.jpg"), "cat\n");

    // The laptop's photos move to another disk and are linked back.
    fs::rename(laptop.local.join("photos"), other_disk.join("photos")).unwrap();
    std::os::unix::fs::symlink(other_disk.join("photos"), laptop.local.join("photos")).unwrap();
    // The remote's music is moved away the same way.
    let music_elsewhere = sandbox.path("music-elsewhere");
    fs::rename(remote.join("music"), &music_elsewhere).unwrap();
    std::os::unix::fs::symlink(&music_elsewhere, remote.join("music")).unwrap();

    let out = laptop.once_expecting(0);
    assert!(text(&out).contains("deleted 0"), "{}", text(&out));
    assert_eq!(read(&remote, "photos/cat.jpg"), "cat\n");
    assert_eq!(read(&remote, "photos/2024/beach.jpg"), "beach\n");
    assert_eq!(read(&laptop.local, "music/song.mp3"), "song\n");
    assert_eq!(read(&music_elsewhere, "song.mp3"), "song\n");
    assert!(tree(&remote_trash(&remote)).is_empty());
    assert!(tree(&local_trash(&laptop)).is_empty());

    let agent = laptop.start();
    wait_until(PATIENCE, "status says why both are left alone", || {
        let found = problems(&laptop);
        let says = |path: &str| {
            found
                .iter()
                .any(|(p, message)| p == path && message.contains("a symbolic link"))
        };
        if says("photos") && says("music") {
            Ok(())
        } else {
            Err(format!("{found:?}"))
        }
    });
    // A change inside the linked folder is not synced either way.
    write(&other_disk, "photos/dog.jpg", "dog\n");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!remote.join("photos/dog.jpg").exists());
    assert_eq!(read(&remote, "photos/cat.jpg"), "cat\n");
    agent.stop();
}
