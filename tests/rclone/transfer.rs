//! A transfer through the rcd that is killed mid-way: the read continues
//! at its offset through a new rcd, and the bytes are the file's.

use std::io::Read;
use std::time::Duration;

use prism_sync::model::{BaseTree, ContentHash, Entry, RelPath, Scope};
use prism_sync::remote::rclone::{RclonePairSettings, RcloneReplica};
use prism_sync::remote::{Replica, Source};
use prism_sync::tracker::ignore::IgnoreRules;

use crate::agent::Disk;

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
