//! Staged bodies held in memory are bounded: staging waits for room in
//! the replica's byte budget, which a commit or a discard gives back, and
//! a file larger than the whole budget still goes through.

use std::sync::mpsc;
use std::time::Duration;

use prism_sync::fsops::Expect;
use prism_sync::model::ContentHash;
use prism_sync::remote::Replica;
use prism_sync::remote::s3::S3Replica;

use crate::replica::{read, rel};
use crate::{Server, both};

fn bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

both!(
    staging_waits_for_room_in_the_memory_budget_until_a_commit_gives_it_back,
    budget
);
fn budget(server: Server) {
    let settings = server.settings("memory-budget", |_| {});
    let remote = S3Replica::new(settings, 4).with_memory_budget(10_000);
    let (a, b) = (bytes(6_000, 1), bytes(6_000, 2));
    let staged_a = remote
        .stage(&rel("a"), &mut &a[..], &ContentHash::of_bytes(&a), 0, None)
        .unwrap();
    assert_eq!(remote.staged_in_memory(), 6_000);

    std::thread::scope(|scope| {
        let (done, staged) = mpsc::channel();
        let remote = &remote;
        let b = &b;
        scope.spawn(move || {
            let staged_b = remote
                .stage(&rel("b"), &mut &b[..], &ContentHash::of_bytes(b), 0, None)
                .unwrap();
            done.send(staged_b).unwrap();
        });
        assert!(
            staged.recv_timeout(Duration::from_millis(500)).is_err(),
            "a second body of 6,000 bytes waits beside 6,000 of 10,000"
        );
        remote.commit_staged(&staged_a, &Expect::Absent).unwrap();
        let staged_b = staged.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(
            remote.staged_in_memory(),
            6_000,
            "a's bytes were given back"
        );
        remote.discard(staged_b);
        assert_eq!(
            remote.staged_in_memory(),
            0,
            "a discard gives them back too"
        );
    });
    assert_eq!(read(&remote, "a"), a);

    // Larger than the whole budget: it waits for nothing else and goes.
    let large = bytes(25_000, 3);
    remote
        .write(
            &rel("large"),
            &mut &large[..],
            &ContentHash::of_bytes(&large),
            0,
            None,
            &Expect::Absent,
        )
        .unwrap();
    assert_eq!(read(&remote, "large"), large);
    assert_eq!(remote.staged_in_memory(), 0);
}
