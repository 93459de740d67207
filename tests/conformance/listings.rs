//! Listings and the plain steps: a listing reads only the files its base
//! does not know, a scoped one only its scope; folders are made once,
//! never over a file; bytes that do not hash as promised replace nothing;
//! old trash is purged, recent trash kept.

use std::time::Duration;

use prism_sync::fsops::Expect;
use prism_sync::model::{BaseTree, ContentHash, Scope};

use crate::{Case, base_of, create, list, no_rules, path_problems, paths, rel};

conformance!(
    a_listing_reads_only_what_its_base_does_not_know,
    bytes_that_do_not_hash_as_promised_replace_nothing,
    old_trash_is_purged_and_recent_trash_kept,
);

fn a_listing_reads_only_what_its_base_does_not_know(case: &Case) {
    let replica = case.marked();
    create(&*replica, "a.txt", "one\n");
    replica.mkdir(&rel("dir"), None).unwrap();
    replica.mkdir(&rel("dir"), None).unwrap();
    let on_a_file = replica.mkdir(&rel("a.txt"), None).unwrap_err();
    assert!(on_a_file.is_change(), "{on_a_file}");
    replica.mkdir(&rel("dir/deep"), None).unwrap();
    create(&*replica, "dir/deep/b.txt", "bee\n");
    create(&*replica, "dir/c.txt", "sea\n");
    // A version token may be weak for a moment after a write (Apache's
    // ETags are, for a second), and a file whose version is weak is read
    // again.
    std::thread::sleep(Duration::from_millis(1100));

    let listing = list(&*replica);
    assert_eq!(
        paths(&listing),
        ["a.txt", "dir", "dir/c.txt", "dir/deep", "dir/deep/b.txt"]
    );
    assert!(path_problems(&listing).is_empty(), "{:?}", listing.problems);
    // Without a base every file is read, unless its hash is kept with it
    // (as many times as the backend's layers each read it).
    let unknown = 3 * case.backend.reads_to_hash_a_new_file();
    assert_eq!(listing.hashed_files, unknown);
    assert_eq!(
        listing.tree[&rel("a.txt")].entry.file().unwrap().hash,
        ContentHash::of_bytes(b"one\n")
    );
    let ignore = no_rules();
    let base = base_of(&listing);
    let again = replica.list(&Scope::Full, &base, &ignore).unwrap();
    assert_eq!(again.hashed_files, 0, "unchanged files are not read again");
    assert_eq!(again.tree, listing.tree);

    let scoped = replica
        .list(&Scope::Paths(vec![rel("dir/deep")]), &base, &ignore)
        .unwrap();
    assert_eq!(paths(&scoped), ["dir/deep", "dir/deep/b.txt"]);
    assert_eq!(scoped.hashed_files, 0);
    let nothing = replica
        .list(
            &Scope::Paths(vec![rel("no/such/path")]),
            &BaseTree::new(),
            &ignore,
        )
        .unwrap();
    assert!(nothing.tree.is_empty(), "{nothing:?}");
}

fn bytes_that_do_not_hash_as_promised_replace_nothing(case: &Case) {
    let replica = case.marked();
    let outside = case.outside();
    let promised = ContentHash::of_bytes(b"what was listed");
    let new = replica.write(
        &rel("new.txt"),
        &mut &b"something else"[..],
        &promised,
        crate::MTIME_NS,
        None,
        &Expect::Absent,
    );
    assert!(new.unwrap_err().is_change());
    assert_eq!(outside.read("new.txt"), None);
    let old = create(&*replica, "old.txt", "old");
    let replaced = replica.write(
        &rel("old.txt"),
        &mut &b"something else"[..],
        &promised,
        crate::MTIME_NS,
        None,
        &crate::expect_of(&old),
    );
    assert!(replaced.unwrap_err().is_change());
    assert_eq!(outside.read("old.txt").as_deref(), Some("old"));
    assert!(outside.trashed().is_empty());
    // Nothing staged is left beside the targets.
    assert_eq!(outside.names(""), [".prism-sync", "old.txt"]);
}

fn old_trash_is_purged_and_recent_trash_kept(case: &Case) {
    let replica = case.marked();
    let outside = case.outside();
    let a = create(&*replica, "a.txt", "recent");
    replica
        .remove(&rel("a.txt"), &crate::expect_of(&a))
        .unwrap();
    assert_eq!(replica.purge_trash(Duration::from_secs(3600)).unwrap(), 0);
    assert_eq!(outside.trashed(), ["recent"]);
    // A batch from long ago, as trash batches are named.
    outside.put(".prism-sync/trash/20000101-0000/sub/old.txt", "old");
    assert_eq!(outside.trashed(), ["old", "recent"]);
    assert_eq!(replica.purge_trash(Duration::from_secs(3600)).unwrap(), 1);
    assert_eq!(outside.trashed(), ["recent"]);
}
