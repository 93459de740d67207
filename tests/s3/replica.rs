//! The S3 replica on its own, against both real servers: every operation
//! round trips, replaced and removed versions go to the trash, a
//! conditional overwrite is refused after another writer changed the
//! object, listings of more than one page, large files as multipart
//! uploads, moves as server-side copies, the lease, and a wrong secret.

use std::io::{Cursor, Read};
use std::time::Duration;

use prism_sync::fsops::Expect;
use prism_sync::model::{BaseEntry, BaseTree, ContentHash, RelPath, Scope, SideEntry};
use prism_sync::remote::s3::{
    CredentialSource, Credentials, META_BLAKE3, Metadata, S3Client, S3Replica, Seekable,
};
use prism_sync::remote::{Listing, Replica, ReplicaError, RootState};
use prism_sync::secrets::Secret;
use prism_sync::tracker::ignore::IgnoreRules;

use crate::seaweedfs::Seaweed;
use crate::{Server, both};

pub(crate) fn rel(s: &str) -> RelPath {
    RelPath::new(s).unwrap()
}

fn no_rules() -> IgnoreRules {
    let dir = tempfile::tempdir().unwrap();
    IgnoreRules::load(dir.path(), &[]).unwrap()
}

/// A replica of a fresh prefix, and a raw client of the same prefix (the
/// "other writer").
fn replica(server: Server, test: &str) -> (S3Replica, S3Client) {
    let settings = server.settings(test, |_| {});
    let raw = S3Client::new(settings.clone()).unwrap();
    (S3Replica::new(settings, 4), raw)
}

fn write(replica: &S3Replica, path: &str, data: &[u8], expect: &Expect) -> SideEntry {
    replica
        .write(
            &rel(path),
            &mut &data[..],
            &ContentHash::of_bytes(data),
            1_600_000_000_123_456_789,
            None,
            expect,
        )
        .unwrap()
}

fn expect_of(entry: &SideEntry) -> Expect {
    let meta = entry.entry.file().unwrap();
    Expect::File {
        size: meta.size,
        mtime_ns: meta.mtime_ns,
        mode: None,
        version: entry.version_text().map(String::from),
    }
}

fn list(replica: &S3Replica, cache: &BaseTree) -> Listing {
    replica.list(&Scope::Full, cache, &no_rules()).unwrap()
}

fn base_of(listing: &Listing) -> BaseTree {
    listing
        .tree
        .iter()
        .map(|(path, side)| {
            let mut entry = BaseEntry::new(side.entry);
            entry.remote_version = side.version.clone();
            (path.clone(), entry)
        })
        .collect()
}

pub(crate) fn read(replica: &S3Replica, path: &str) -> Vec<u8> {
    let mut out = Vec::new();
    replica
        .open(&rel(path))
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn raw_put(client: &S3Client, key: &str, data: &[u8], meta: &Metadata) {
    let mut source = Seekable::new(Cursor::new(data.to_vec())).unwrap();
    client
        .put(
            key,
            &mut source,
            data.len() as u64,
            &prism_sync::remote::s3::Condition::None,
            meta,
        )
        .unwrap();
}

/// Everything below the trash, as (path below the batch, content).
fn trashed(client: &S3Client) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for object in client.list(".prism-sync/trash/", None).unwrap().objects {
        let mut bytes = Vec::new();
        client
            .get(&object.key, 0, None)
            .unwrap()
            .read_to_end(&mut bytes)
            .unwrap();
        let below = object.key.splitn(4, '/').nth(3).unwrap().to_owned();
        out.push((below, bytes));
    }
    out.sort();
    out
}

both!(
    every_operation_round_trips_and_old_versions_go_to_the_trash,
    round_trip
);
fn round_trip(server: Server) {
    let (remote, raw) = replica(server, "replica-round-trip");
    // Nothing under the prefix: missing, and no listing reads it as empty.
    assert_eq!(remote.root_state().unwrap(), RootState::Missing);
    assert!(
        remote
            .list(&Scope::Full, &BaseTree::new(), &no_rules())
            .is_err()
    );
    raw_put(&raw, "by-another-tool.txt", b"x", &Metadata::new());
    assert_eq!(remote.root_state().unwrap(), RootState::Unmarked);
    raw.delete("by-another-tool.txt").unwrap();
    remote.mark_root().unwrap();
    remote.mark_root().unwrap();
    assert_eq!(remote.root_state().unwrap(), RootState::Ready);

    remote.mkdir(&rel("docs"), None).unwrap();
    remote.mkdir(&rel("empty"), None).unwrap();
    let a = write(&remote, "docs/a.txt", b"version 1", &Expect::Absent);
    assert!(a.version.is_some());
    assert_eq!(a.entry.file().unwrap().mtime_ns, 1_600_000_000_123_456_789);

    // Nothing known: hashes come from the metadata, not from reading.
    let first = list(&remote, &BaseTree::new());
    let paths: Vec<&str> = first.tree.keys().map(RelPath::as_str).collect();
    assert_eq!(paths, ["docs", "docs/a.txt", "empty"]);
    assert_eq!(first.hashed_files, 0);
    let about_paths: Vec<_> = first.problems.iter().filter(|p| p.path.is_some()).collect();
    assert!(about_paths.is_empty(), "{about_paths:?}");
    let listed = &first.tree[&rel("docs/a.txt")];
    assert_eq!(
        listed.entry.file().unwrap().hash,
        ContentHash::of_bytes(b"version 1")
    );
    assert_eq!(
        listed.entry.file().unwrap().mtime_ns,
        1_600_000_000_123_456_789
    );
    assert_eq!(listed.version, a.version);
    assert_eq!(read(&remote, "docs/a.txt"), b"version 1");

    // Resumed at an offset: the rest of the same version.
    let meta = *listed.entry.file().unwrap();
    let (mut rest, start) = remote.open_at(&rel("docs/a.txt"), 8, &meta).unwrap();
    let mut tail = Vec::new();
    rest.read_to_end(&mut tail).unwrap();
    assert_eq!((start, tail.as_slice()), (8, &b"1"[..]));

    // Replaced with the listed token: the old version is in the trash.
    let a2 = write(&remote, "docs/a.txt", b"version 2", &expect_of(listed));
    assert_ne!(a2.version, a.version);
    assert_eq!(read(&remote, "docs/a.txt"), b"version 2");
    assert_eq!(
        trashed(&raw),
        [("docs/a.txt".to_owned(), b"version 1".to_vec())]
    );
    // An offset read of the old version, named by its listed token, is
    // refused, not spliced.
    assert!(matches!(
        remote.open_version_at(
            &rel("docs/a.txt"),
            8,
            &meta,
            listed.version_text().as_deref()
        ),
        Err(ReplicaError::SourceChanged { .. })
    ));

    // Moves: a file, then a folder, as server-side copies.
    remote
        .rename(&rel("docs/a.txt"), &rel("docs/b.txt"), &expect_of(&a2))
        .unwrap();
    remote
        .rename(&rel("docs"), &rel("moved"), &Expect::Dir)
        .unwrap();
    let after = list(&remote, &base_of(&first));
    let paths: Vec<&str> = after.tree.keys().map(RelPath::as_str).collect();
    assert_eq!(paths, ["empty", "moved", "moved/b.txt"]);
    assert_eq!(read(&remote, "moved/b.txt"), b"version 2");
    // A move onto something that exists is refused.
    let c = write(&remote, "c.txt", b"c", &Expect::Absent);
    assert!(matches!(
        remote.rename(&rel("c.txt"), &rel("moved"), &expect_of(&c)),
        Err(ReplicaError::Changed { .. })
    ));

    // Removal: the file to the trash, the (now empty) folder gone.
    let b = after.tree[&rel("moved/b.txt")].clone();
    remote.remove(&rel("moved/b.txt"), &expect_of(&b)).unwrap();
    remote.remove(&rel("moved"), &Expect::Dir).unwrap();
    remote.remove(&rel("empty"), &Expect::Dir).unwrap();
    let last = list(&remote, &BaseTree::new());
    let paths: Vec<&str> = last.tree.keys().map(RelPath::as_str).collect();
    assert_eq!(paths, ["c.txt"]);
    let trash: Vec<String> = trashed(&raw).into_iter().map(|(p, _)| p).collect();
    assert_eq!(trash, ["docs/a.txt", "moved/b.txt"]);

    // Records beside the lease.
    assert_eq!(remote.read_record("lineage").unwrap(), None);
    remote.write_record("lineage", "one").unwrap();
    remote.write_record("lineage", "two").unwrap();
    assert_eq!(
        remote.read_record("lineage").unwrap().as_deref(),
        Some("two")
    );
    remote.write_record("logs/dev-1", "x").unwrap();
    assert_eq!(remote.list_records("logs").unwrap(), ["dev-1"]);
    remote.remove_record("logs/dev-1").unwrap();
    assert!(remote.list_records("logs").unwrap().is_empty());

    // The trash is purged by age: a batch from long ago goes, this
    // minute's stays.
    raw_put(
        &raw,
        ".prism-sync/trash/20200101-0000/old.txt",
        b"old",
        &Metadata::new(),
    );
    raw_put(
        &raw,
        ".prism-sync/trash/not-a-batch/x",
        b"x",
        &Metadata::new(),
    );
    assert_eq!(remote.purge_trash(Duration::from_secs(3600)).unwrap(), 1);
    let trash: Vec<String> = trashed(&raw).into_iter().map(|(p, _)| p).collect();
    assert_eq!(trash, ["docs/a.txt", "moved/b.txt", "x"]);
}

both!(
    a_conditional_overwrite_is_refused_after_another_writer_changed_the_object,
    overwrite_refused
);
fn overwrite_refused(server: Server) {
    let (remote, raw) = replica(server, "replica-overwrite");
    remote.mark_root().unwrap();
    write(&remote, "a.txt", b"mine", &Expect::Absent);
    let listed = list(&remote, &BaseTree::new()).tree[&rel("a.txt")].clone();

    // Someone else replaces it after the listing.
    raw_put(&raw, "a.txt", b"theirs", &Metadata::new());
    let refused = remote.write(
        &rel("a.txt"),
        &mut &b"mine, edited"[..],
        &ContentHash::of_bytes(b"mine, edited"),
        0,
        None,
        &expect_of(&listed),
    );
    assert!(
        matches!(refused, Err(ReplicaError::Changed { .. })),
        "{refused:?}"
    );
    assert_eq!(read(&remote, "a.txt"), b"theirs");
    // Nor is it removed or moved.
    assert!(matches!(
        remote.remove(&rel("a.txt"), &expect_of(&listed)),
        Err(ReplicaError::Changed { .. })
    ));
    assert!(matches!(
        remote.rename(&rel("a.txt"), &rel("b.txt"), &expect_of(&listed)),
        Err(ReplicaError::Changed { .. })
    ));
    assert_eq!(read(&remote, "a.txt"), b"theirs");

    // A new file where someone else just created one is refused too.
    raw_put(&raw, "new.txt", b"theirs", &Metadata::new());
    let refused = remote.write(
        &rel("new.txt"),
        &mut &b"mine"[..],
        &ContentHash::of_bytes(b"mine"),
        0,
        None,
        &Expect::Absent,
    );
    assert!(
        matches!(refused, Err(ReplicaError::Changed { .. })),
        "{refused:?}"
    );
    assert_eq!(read(&remote, "new.txt"), b"theirs");

    // An object written by another tool (no metadata) is read to hash it.
    let listing = list(&remote, &BaseTree::new());
    assert_eq!(listing.hashed_files, 2);
    assert_eq!(
        listing.tree[&rel("new.txt")].entry.file().unwrap().hash,
        ContentHash::of_bytes(b"theirs")
    );
}

both!(a_listing_of_more_than_one_page_is_whole, paged);
fn paged(server: Server) {
    let (remote, raw) = replica(server, "replica-paged");
    let count = 1_234;
    let keys: Vec<String> = (0..count).map(|i| format!("d{}/f{i:05}", i % 7)).collect();
    let hash = ContentHash::of_bytes(b"x");
    let mut meta = Metadata::new();
    meta.insert(META_BLAKE3.into(), hash.to_hex());
    prism_sync::parallel::map(keys.clone(), 8, |key| raw_put(&raw, &key, b"x", &meta));

    let listing = list(&remote, &BaseTree::new());
    assert_eq!(listing.tree.len(), count + 7);
    assert_eq!(listing.hashed_files, 0);
    for key in &keys {
        assert_eq!(listing.tree[&rel(key)].entry.file().unwrap().hash, hash);
    }
    // With the base, nothing is looked at again.
    let again = list(&remote, &base_of(&listing));
    assert_eq!(again.tree, listing.tree);
    // A scoped listing holds that folder only.
    let scoped = remote
        .list(
            &Scope::Paths(vec![rel("d3")]),
            &BaseTree::new(),
            &no_rules(),
        )
        .unwrap();
    assert!(scoped.tree.keys().all(|p| p.is_within(&rel("d3"))));
    assert_eq!(scoped.tree.len(), 1 + count / 7);
}

both!(
    a_large_file_goes_up_in_parts_and_commits_on_condition,
    multipart
);
fn multipart(server: Server) {
    let (remote, _raw) = replica(server, "replica-multipart");
    let data: Vec<u8> = (0..(8 * 1024 * 1024 + 4321))
        .map(|i: u32| (i % 251) as u8)
        .collect();
    let written = write(&remote, "big.bin", &data, &Expect::Absent);
    assert_eq!(read(&remote, "big.bin"), data);
    let listed = list(&remote, &BaseTree::new()).tree[&rel("big.bin")].clone();
    assert_eq!(listed.version, written.version);
    assert_eq!(
        listed.entry.file().unwrap().hash,
        ContentHash::of_bytes(&data)
    );

    // A staged large file whose bytes are not the planned ones stages
    // nothing.
    let wrong = remote.stage(
        &rel("other.bin"),
        &mut &data[..],
        &ContentHash::of_bytes(b"something else"),
        0,
        None,
    );
    assert!(matches!(wrong, Err(ReplicaError::SourceChanged { .. })));

    // Staged, then the object changes: the completion is refused.
    let mut changed = data.clone();
    changed[0] ^= 1;
    let staged = remote
        .stage(
            &rel("big.bin"),
            &mut &changed[..],
            &ContentHash::of_bytes(&changed),
            0,
            None,
        )
        .unwrap();
    // Staged is not visible: a crash now leaves nothing under the key.
    assert_eq!(read(&remote, "big.bin"), data);
    write(&remote, "big.bin", b"small now", &expect_of(&listed));
    let refused = remote.commit_staged(&staged, &expect_of(&listed));
    assert!(
        matches!(refused, Err(ReplicaError::Changed { .. })),
        "{refused:?}"
    );
    remote.discard(staged);
    assert_eq!(read(&remote, "big.bin"), b"small now");

    // A new large file staged and never committed (the agent killed
    // between the two) is nowhere in a listing.
    let orphan = remote
        .stage(
            &rel("orphan.bin"),
            &mut &data[..],
            &ContentHash::of_bytes(&data),
            0,
            None,
        )
        .unwrap();
    let paths: Vec<String> = list(&remote, &BaseTree::new())
        .tree
        .keys()
        .map(|p| p.as_str().to_owned())
        .collect();
    assert_eq!(paths, ["big.bin"]);
    // Dropped without a discard, as by an agent killed at this point.
    drop(orphan);
}

both!(
    hostile_layouts_are_problems_not_entries,
    file_and_folder_of_one_name
);
fn file_and_folder_of_one_name(server: Server) {
    let (remote, raw) = replica(server, "replica-both");
    raw_put(&raw, "x", b"file", &Metadata::new());
    raw_put(&raw, "x/y", b"inside", &Metadata::new());
    raw_put(
        &raw,
        ".prism-sync/trash/20200101-0000/z",
        b"old",
        &Metadata::new(),
    );
    raw_put(&raw, "ok", b"ok", &Metadata::new());
    let listing = list(&remote, &BaseTree::new());
    let paths: Vec<&str> = listing.tree.keys().map(RelPath::as_str).collect();
    assert_eq!(paths, ["ok"]);
    assert_eq!(listing.held, [rel("x")]);
    let about_paths: Vec<_> = listing
        .problems
        .iter()
        .filter(|p| p.path.is_some())
        .collect();
    assert_eq!(about_paths.len(), 1, "{:?}", listing.problems);
    assert!(about_paths[0].message.contains("both a file and a folder"));
}

both!(the_lease_is_exclusive_and_renewable, lease);
fn lease(server: Server) {
    let (remote, _raw) = replica(server, "replica-lease");
    let mut held = remote
        .lease("laptop", Duration::from_secs(60))
        .unwrap()
        .unwrap();
    let busy = remote.lease("desktop", Duration::from_secs(60));
    assert!(
        matches!(busy, Err(ReplicaError::Busy(_))),
        "{:?}",
        busy.err()
    );
    held.renew().unwrap();
    drop(held);
    let again = remote.lease("desktop", Duration::from_secs(60)).unwrap();
    assert!(again.is_some());
}

#[test]
fn a_wrong_secret_is_one_clear_error_without_the_secret() {
    let wrong = "replica-wrong-secret-never-shown";
    let settings = Server::Seaweed.settings("replica-wrong-secret", |s| {
        s.credentials = CredentialSource::explicit(Credentials {
            access_key_id: Seaweed::ACCESS_KEY.into(),
            secret_access_key: Secret::new(wrong.into()),
            session_token: None,
            origin: "the test".into(),
        });
    });
    let remote = S3Replica::new(settings, 4);
    let started = std::time::Instant::now();
    let error = remote.root_state().unwrap_err();
    let message = error.to_string();
    assert!(message.contains("SignatureDoesNotMatch"), "{message}");
    assert!(!message.contains(wrong));
    assert!(!error.is_offline(), "not retried as an outage: {message}");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(!remote.describe().contains(wrong));
}

both!(
    a_copy_in_ranged_parts_keeps_bytes_and_metadata_and_checks_the_version,
    copy_in_parts
);
fn copy_in_parts(server: Server) {
    let (_remote, raw) = replica(server, "replica-part-copy");
    let data: Vec<u8> = (0..(11 * 1024 * 1024 + 77))
        .map(|i: u32| (i % 253) as u8)
        .collect();
    let mut meta = Metadata::new();
    meta.insert(META_BLAKE3.into(), ContentHash::of_bytes(&data).to_hex());
    raw_put(&raw, "big", &data, &meta);
    let head = raw.head("big").unwrap().unwrap();
    raw.copy_in_parts(
        "big",
        "copy",
        (&head.etag, head.size),
        5 * 1024 * 1024,
        &prism_sync::remote::s3::Condition::None,
    )
    .unwrap();
    let mut copied = Vec::new();
    raw.get("copy", 0, None)
        .unwrap()
        .read_to_end(&mut copied)
        .unwrap();
    assert!(copied == data, "the copy holds the same bytes");
    assert_eq!(
        raw.head("copy").unwrap().unwrap().metadata.get(META_BLAKE3),
        meta.get(META_BLAKE3)
    );
    // Another version than the one named is not copied.
    let refused = raw.copy_in_parts(
        "big",
        "copy2",
        ("\"0123456789abcdef0123456789abcdef\"", head.size),
        5 * 1024 * 1024,
        &prism_sync::remote::s3::Condition::None,
    );
    assert!(
        matches!(
            refused,
            Err(prism_sync::remote::s3::S3Error::PreconditionFailed { .. })
        ),
        "{refused:?}"
    );
    assert!(raw.head("copy2").unwrap().is_none());
}

both!(
    a_read_at_an_offset_judges_the_version_by_its_etag_not_by_the_hash_asked_with,
    offset_reads_by_version
);
fn offset_reads_by_version(server: Server) {
    let (remote, raw) = replica(server, "replica-offset-version");
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 241) as u8).collect();
    let written = write(&remote, "f.bin", &data, &Expect::Absent);
    let meta = *written.entry.file().unwrap();

    // Asked with a hash the object's metadata does not hold (an encrypting
    // layer asks with its plaintext's): the same version, so it continues.
    let other_hash = prism_sync::model::FileMeta {
        hash: ContentHash::of_bytes(b"the plaintext of it"),
        ..meta
    };
    for version in [None, written.version_text().as_deref()] {
        let (mut rest, start) = remote
            .open_version_at(&rel("f.bin"), 70_000, &other_hash, version)
            .unwrap();
        let mut tail = Vec::new();
        rest.read_to_end(&mut tail).unwrap();
        assert_eq!(start, 70_000);
        assert!(tail == data[70_000..], "the rest of the same version");
    }

    // Another tool replaces it with as many bytes and no metadata: asked
    // by the listed token, the read is refused rather than spliced.
    let mut theirs = data.clone();
    theirs[80_000] ^= 0xff;
    raw_put(&raw, "f.bin", &theirs, &Metadata::new());
    let refused = remote.open_version_at(
        &rel("f.bin"),
        70_000,
        &meta,
        written.version_text().as_deref(),
    );
    assert!(
        matches!(refused, Err(ReplicaError::SourceChanged { .. })),
        "{:?}",
        refused.err()
    );
    // Shorter now, asked without a token: refused by its size.
    raw_put(&raw, "f.bin", &data[..90_000], &Metadata::new());
    let refused = remote.open_version_at(&rel("f.bin"), 70_000, &meta, None);
    assert!(
        matches!(refused, Err(ReplicaError::SourceChanged { .. })),
        "{:?}",
        refused.err()
    );
}

both!(
    a_replaced_or_removed_version_is_named_in_the_trash_and_read_back_by_that_name,
    trash_names
);
fn trash_names(server: Server) {
    let (remote, _raw) = replica(server, "replica-trash-names");
    remote.mark_root().unwrap();
    let v1 = write(&remote, "docs/note.txt", b"v1\n", &Expect::Absent);
    let v2 = b"v2, longer\n";
    let (written, replaced) = remote
        .write_naming_trash(
            &rel("docs/note.txt"),
            &mut &v2[..],
            &ContentHash::of_bytes(v2),
            1_600_000_000_123_456_789,
            None,
            &expect_of(&v1),
        )
        .unwrap();
    let replaced = replaced.expect("the replaced version's name in the trash");
    assert!(replaced.as_str().ends_with("/docs/note.txt"), "{replaced}");
    assert_eq!(read_all(remote.open_trashed(&replaced).unwrap()), b"v1\n");

    // Removed within the same minute: a name of its own.
    let removed = remote
        .remove_naming_trash(&rel("docs/note.txt"), &expect_of(&written))
        .unwrap()
        .expect("the removed version's name in the trash");
    assert_ne!(removed, replaced);
    assert_eq!(read_all(remote.open_trashed(&removed).unwrap()), v2);
    assert_eq!(read_all(remote.open_trashed(&replaced).unwrap()), b"v1\n");
    // A new file replaces nothing, and a folder leaves nothing to name.
    let (_, none) = remote
        .write_naming_trash(
            &rel("new.txt"),
            &mut &b"n"[..],
            &ContentHash::of_bytes(b"n"),
            0,
            None,
            &Expect::Absent,
        )
        .unwrap();
    assert_eq!(none, None);
    assert_eq!(
        remote
            .remove_naming_trash(&rel("docs"), &Expect::Dir)
            .unwrap(),
        None
    );

    // A version whose batch was purged is not found, and says so.
    let purged = remote
        .open_trashed(&rel("20000101-0000/docs/note.txt"))
        .err()
        .expect("nothing there");
    assert!(
        matches!(&purged, ReplicaError::Io { source, .. }
            if source.kind() == std::io::ErrorKind::NotFound),
        "{purged}"
    );
}

fn read_all(mut reader: Box<dyn Read + Send + '_>) -> Vec<u8> {
    let mut out = Vec::new();
    reader.read_to_end(&mut out).unwrap();
    out
}

both!(
    an_encrypted_file_is_continued_at_an_offset_past_its_first_chunk,
    encrypted_offset_reads
);
fn encrypted_offset_reads(server: Server) {
    use prism_sync::config::CryptSettings;
    use prism_sync::crypt::NameMode;
    use prism_sync::remote::crypt::CryptReplica;
    let settings = server.settings("replica-encrypted-offset", |_| {});
    let remote = CryptReplica::with_password(
        Box::new(S3Replica::new(settings, 4)),
        CryptSettings {
            filename_encryption: NameMode::Standard,
            directory_name_encryption: true,
        },
        Secret::new("an s3 crypt password".into()),
        None,
    );
    remote.mark_root().unwrap();
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 239) as u8).collect();
    remote
        .write(
            &rel("f.bin"),
            &mut &data[..],
            &ContentHash::of_bytes(&data),
            0,
            None,
            &Expect::Absent,
        )
        .unwrap();
    let listed = list_any(&remote).tree[&rel("f.bin")].clone();
    let meta = *listed.entry.file().unwrap();
    // The plaintext's hash is not the one the object's metadata holds
    // (the ciphertext's): the version is judged by its ETag.
    for offset in [1, 65_536, 70_000, 199_999] {
        let (mut rest, start) = remote
            .open_version_at(
                &rel("f.bin"),
                offset,
                &meta,
                listed.version_text().as_deref(),
            )
            .unwrap();
        let mut tail = Vec::new();
        rest.read_to_end(&mut tail).unwrap();
        assert_eq!(start, offset);
        assert!(tail == data[offset as usize..], "from {offset}");
    }
}

fn list_any(replica: &dyn Replica) -> Listing {
    replica
        .list(&Scope::Full, &BaseTree::new(), &no_rules())
        .unwrap()
}

both!(
    an_encrypted_file_is_never_continued_with_another_versions_bytes,
    encrypted_offset_reads_of_a_replaced_version
);
fn encrypted_offset_reads_of_a_replaced_version(server: Server) {
    use prism_sync::config::CryptSettings;
    use prism_sync::crypt::NameMode;
    use prism_sync::remote::crypt::CryptReplica;
    let settings = server.settings("replica-encrypted-replaced", |_| {});
    let agent = |settings: prism_sync::remote::s3::S3Settings| {
        CryptReplica::with_password(
            Box::new(S3Replica::new(settings, 4)),
            CryptSettings {
                filename_encryption: NameMode::Standard,
                directory_name_encryption: true,
            },
            Secret::new("an s3 crypt password".into()),
            None,
        )
    };
    let (remote, other) = (agent(settings.clone()), agent(settings));
    remote.mark_root().unwrap();
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 239) as u8).collect();
    let write = |replica: &CryptReplica, data: &[u8], expect: &Expect| {
        replica
            .write(
                &rel("f.bin"),
                &mut &data[..],
                &ContentHash::of_bytes(data),
                0,
                None,
                expect,
            )
            .unwrap()
    };
    write(&remote, &data, &Expect::Absent);
    let listed = list_any(&remote).tree[&rel("f.bin")].clone();
    let meta = *listed.entry.file().unwrap();

    // Another agent replaces it with a version of the same size and time:
    // only the ETag tells them apart, in the first chunk as past it.
    let seen_there = list_any(&other).tree[&rel("f.bin")].clone();
    let replaced: Vec<u8> = data.iter().map(|b| b ^ 0x5a).collect();
    write(
        &other,
        &replaced,
        &Expect::of_version(
            Some(&seen_there.entry),
            seen_there.version_text().as_deref(),
        ),
    );
    for offset in [1, 70_000] {
        match remote.open_version_at(
            &rel("f.bin"),
            offset,
            &meta,
            listed.version_text().as_deref(),
        ) {
            Err(e) => assert!(e.is_change(), "from {offset}: {e}"),
            Ok((rest, start)) => {
                let tail = read_all(rest);
                panic!(
                    "continued another version from {start} (its own bytes: {})",
                    tail == replaced[start as usize..]
                );
            }
        }
    }
}
