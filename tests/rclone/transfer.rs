//! A transfer through the rcd that is killed mid-way: the read continues
//! at its offset through a new rcd, and the bytes are the file's; an
//! upload is done by the next sync, through a new rcd, leaving nothing
//! staged.

use std::io::Read;
use std::time::Duration;

use prism_sync::model::{BaseTree, ContentHash, Entry, RelPath, Scope};
use prism_sync::remote::rclone::{RclonePairSettings, RcloneReplica};
use prism_sync::remote::{Replica, Source};
use prism_sync::tracker::ignore::IgnoreRules;

use crate::agent::{Device, Disk};

#[test]
fn a_read_whose_rcd_is_killed_mid_transfer_continues_through_a_new_one() {
    let disk = Disk::new();
    let content: Vec<u8> = (0..48u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(disk.served().join("big.bin"), &content).unwrap();
    let settings = RclonePairSettings {
        config: Some(disk.config()),
        binary: None,
    };
    let replica =
        RcloneReplica::new(&format!("disk:{}", disk.served().display()), &settings, 2).unwrap();
    let ignore_dir = tempfile::tempdir().unwrap();
    let ignore = IgnoreRules::load(ignore_dir.path(), &[]).unwrap();
    let listing = replica
        .list(&Scope::Full, &BaseTree::new(), &ignore)
        .unwrap();
    let path = RelPath::new("big.bin").unwrap();
    let Entry::File(meta) = listing.tree[&path].entry else {
        panic!("not a file");
    };
    assert_eq!(meta.hash, ContentHash::of_bytes(&content));

    let progress = |_: u64| {};
    let pauses = [Duration::from_millis(50), Duration::from_millis(200)];
    let source = Source::new(&replica, &path, meta, &progress).with_reconnect_pauses(&pauses);
    let (mut reader, start) = source.reader(0).unwrap();
    assert_eq!(start, 0);
    let mut read = vec![0u8; 1 << 20];
    reader.read_exact(&mut read).unwrap();
    let pid = replica.rcd().pid().expect("the rcd runs");
    // SAFETY: the rcd this test's replica started.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    reader.read_to_end(&mut read).unwrap();
    assert_eq!(ContentHash::of_bytes(&read), meta.hash);
    let new_pid = replica.rcd().pid().expect("a new rcd runs");
    assert_ne!(new_pid, pid);
    // Continued, not started over.
    assert!(
        source.fetched() < content.len() as u64 * 3 / 2,
        "{} bytes fetched for {}",
        source.fetched(),
        content.len()
    );
}

/// The children of `pid` that run rclone.
fn rclone_children(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // `PID (COMM) STATE PPID ...`; COMM may hold spaces.
        let Some((comm, rest)) = stat.split_once(") ") else {
            continue;
        };
        let parent = rest.split(' ').nth(1).and_then(|p| p.parse::<u32>().ok());
        if parent == Some(pid) && comm.ends_with("(rclone") {
            found.push(child);
        }
    }
    found
}

/// The names in the remote's staging folder.
fn staged(disk: &Disk) -> Vec<String> {
    std::fs::read_dir(disk.served().join(".prism-sync/staging"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn an_upload_whose_rcd_is_killed_is_done_by_the_next_sync_and_leaves_nothing_behind() {
    let disk = Disk::new();
    // rclone sends 4 MiB a second: the upload runs for seconds.
    let binary = disk.dir.path().join("slow-rclone");
    std::fs::write(&binary, "#!/bin/sh\nexec rclone \"$@\" --bwlimit 4M\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let device = Device::new("alpha", &disk.remote(), &disk.config());
    device.use_rclone_binary(&binary);
    let content: Vec<u8> = (0..24u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(device.local.join("big.bin"), &content).unwrap();
    std::fs::write(device.local.join("small.txt"), "small").unwrap();

    // Its log goes to a file: a pipe nobody reads yet would stop it.
    let log_path = device.home.path().join("first-sync.log");
    let log_file = std::fs::File::create(&log_path).unwrap();
    let mut agent = device
        .once_command()
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .unwrap();
    // Killed once part of the file is on the remote.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let rcd = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the upload never started"
        );
        assert!(agent.try_wait().unwrap().is_none(), "the sync ended first");
        let partial = staged(&disk).iter().any(|name| {
            std::fs::metadata(disk.served().join(".prism-sync/staging").join(name))
                .is_ok_and(|meta| meta.len() >= 1 << 20 && meta.len() < content.len() as u64)
        });
        let rcds = rclone_children(agent.id());
        if partial && rcds.len() == 1 {
            break rcds[0];
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // SAFETY: the rcd of the agent this test started.
    unsafe { libc::kill(rcd as libc::pid_t, libc::SIGKILL) };
    agent.wait().unwrap();
    let log = std::fs::read_to_string(&log_path).unwrap();
    // Not a failure of the file: the remote was away for a moment (the
    // call that started the upload broke, or the job was gone with its
    // rcd when it was looked at).
    assert!(
        log.contains("the replica is offline pair=p path=big.bin"),
        "{log}"
    );
    assert_eq!(
        staged(&disk),
        Vec::<String>::new(),
        "the partial upload is removed: {log}"
    );
    assert!(!disk.served().join("big.bin").exists(), "{log}");

    // The next sync starts an rcd of its own and does the upload.
    device.once();
    assert_eq!(
        std::fs::read(disk.served().join("big.bin")).unwrap(),
        content
    );
    assert_eq!(
        std::fs::read(disk.served().join("small.txt")).unwrap(),
        b"small"
    );
    assert_eq!(
        std::fs::read(device.local.join("big.bin")).unwrap(),
        content
    );
    assert_eq!(staged(&disk), Vec::<String>::new());
    let spooled: Vec<_> = std::fs::read_dir(device.state().join("rclone-spool"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(spooled.is_empty(), "{spooled:?}");
}
