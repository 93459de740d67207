//! The WebDAV replica on its own, against the real Apache: what is specific
//! to WebDAV (strong and weak ETags, ranges, Depth, Basic auth, HTTPS with a
//! private CA). What every backend must do is in the conformance suite
//! (`tests/conformance.rs`).

use std::fs;
use std::io::Read;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use prism_sync::fsops::Expect;
use prism_sync::model::{BaseEntry, BaseTree, ContentHash, RelPath, Scope, SideEntry};
use prism_sync::remote::{Listing, Replica, RootState, WebdavReplica, WebdavTarget};
use prism_sync::tracker::ignore::IgnoreRules;

use crate::apache::{Apache, Share};
use crate::files::contents_below;

pub fn rel(s: &str) -> RelPath {
    RelPath::new(s).unwrap()
}

pub fn target(port: u16, path: &str) -> WebdavTarget {
    WebdavTarget {
        tls: false,
        host: "127.0.0.1".into(),
        port: Some(port),
        path: path.into(),
        username: None,
        ca_file: None,
        allow_insecure_http_auth: false,
        config_dir: None,
        timeout: prism_sync::remote::webdav::DEFAULT_REQUEST_TIMEOUT,
        parallel_requests: 4,
    }
}

fn replica(server: &Apache, below: &str) -> WebdavReplica {
    WebdavReplica::new(target(server.port(), &format!("/open/{below}"))).unwrap()
}

pub fn no_rules() -> IgnoreRules {
    let dir = tempfile::tempdir().unwrap();
    IgnoreRules::load(dir.path(), &[]).unwrap()
}

fn write(replica: &WebdavReplica, path: &str, text: &str, expect: &Expect) -> SideEntry {
    replica
        .write(
            &rel(path),
            &mut text.as_bytes(),
            &ContentHash::of_bytes(text.as_bytes()),
            1_600_000_000_123_456_789,
            None,
            expect,
        )
        .unwrap()
}

/// What a step on a file must find, with the version token it was listed
/// with, as the engine plans (the journal's base keeps the token).
fn expect_of(entry: &SideEntry) -> Expect {
    assert!(entry.entry.file().is_some());
    Expect::of_version(Some(&entry.entry), entry.version_text().as_deref())
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

/// Waits until the server gives strong ETags for what was just written
/// (Apache's are weak for a second after a change).
fn let_etags_settle() {
    std::thread::sleep(Duration::from_millis(1100));
}

/// What the conformance suite cannot say for every backend: a file whose
/// folder is missing gets it made, and a settled file's version is its
/// strong ETag.
#[test]
fn a_file_whose_folders_are_missing_gets_them_and_a_settled_version_is_a_strong_etag() {
    let server = Apache::start();
    let served = server.served(Share::Open).join("root");
    let remote = replica(&server, "root");
    remote.mark_root().unwrap();
    let bee = write(&remote, "dir/deep/b c#?.txt", "bee\n", &Expect::Absent);
    assert!(bee.version.is_some());
    assert_eq!(
        fs::read_to_string(served.join("dir/deep/b c#?.txt")).unwrap(),
        "bee\n"
    );
    let_etags_settle();
    let listing = remote
        .list(&Scope::Full, &BaseTree::new(), &no_rules())
        .unwrap();
    assert_eq!(
        listing.tree.keys().map(|p| p.as_str()).collect::<Vec<_>>(),
        ["dir", "dir/deep", "dir/deep/b c#?.txt"]
    );
    assert!(
        listing.tree[&rel("dir/deep/b c#?.txt")]
            .version_text()
            .unwrap()
            .starts_with('"'),
        "a settled file's version is its strong ETag: {listing:?}"
    );
}

#[test]
fn strong_etags_catch_a_same_size_same_second_edit_and_weak_ones_are_never_sent() {
    let server = Apache::start();
    let served = server.served(Share::Open).join("etags");
    let remote = replica(&server, "etags");
    remote.mark_root().unwrap();
    let ignore = no_rules();

    // Weak: a file listed right after it changed has a weak ETag; the
    // version is its opaque part, and a write over it still succeeds
    // (Apache refuses a weak ETag in If-Match with 412, so it must not be
    // sent).
    write(&remote, "weak.txt", "fresh\n", &Expect::Absent);
    let listing = remote
        .list(&Scope::Full, &BaseTree::new(), &ignore)
        .unwrap();
    let weak = &listing.tree[&rel("weak.txt")];
    let version = weak.version_text().unwrap();
    assert!(
        version.starts_with('"'),
        "the version is the weak ETag without its mark: {version}"
    );
    write(&remote, "weak.txt", "newer\n", &expect_of(weak));
    assert_eq!(
        fs::read_to_string(served.join("weak.txt")).unwrap(),
        "newer\n"
    );

    // Strong: an edit of the same size within the same second looks the
    // same by size and date, but its ETag differs: it is a change.
    write(&remote, "strong.txt", "first\n", &Expect::Absent);
    let_etags_settle();
    let listing = remote
        .list(&Scope::Full, &BaseTree::new(), &ignore)
        .unwrap();
    let seen = listing.tree[&rel("strong.txt")].clone();
    assert!(seen.version_text().as_deref().unwrap().starts_with('"'));
    let file = served.join("strong.txt");
    let mtime = fs::metadata(&file).unwrap().modified().unwrap();
    fs::write(&file, "other\n").unwrap();
    // Same second, another microsecond.
    let secs = mtime
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let nudged =
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(777_777);
    fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(nudged)
        .unwrap();
    server.hand_over(&file);
    // Checked by the token the expectation carries, not by anything this
    // replica remembers: an agent restarted since the listing (a replica
    // of its own) refuses it too.
    let restarted = replica(&server, "etags");
    let refused = restarted
        .write(
            &rel("strong.txt"),
            &mut &b"mine\n"[..],
            &ContentHash::of_bytes(b"mine\n"),
            0,
            None,
            &expect_of(&seen),
        )
        .unwrap_err();
    assert!(refused.is_change(), "{refused}");
    assert_eq!(fs::read_to_string(&file).unwrap(), "other\n");
}

#[test]
fn a_file_recorded_while_its_etag_was_weak_is_not_downloaded_again_once_it_settled() {
    let server = Apache::start();
    let remote = replica(&server, "settle");
    remote.mark_root().unwrap();
    let ignore = no_rules();

    // Uploaded: the version the upload reports (its ETag is weak for a
    // second) matches the strong ETag the file has later.
    let uploaded = write(&remote, "up.txt", "uploaded\n", &Expect::Absent);
    let mut base: BaseTree = [(rel("up.txt"), {
        let mut entry = BaseEntry::new(uploaded.entry);
        entry.remote_version = uploaded.version.clone();
        entry
    })]
    .into_iter()
    .collect();
    // Listed while weak: read (a weak tag proves nothing), and recorded.
    write(&remote, "listed.txt", "listed\n", &Expect::Absent);
    let fresh = remote.list(&Scope::Full, &base, &ignore).unwrap();
    assert_eq!(
        fresh.hashed_files, 2,
        "weak tags are always read: {fresh:?}"
    );
    base.extend(
        base_of(&fresh)
            .into_iter()
            .filter(|(p, _)| p.as_str() == "listed.txt"),
    );

    let_etags_settle();
    let settled = remote.list(&Scope::Full, &base, &ignore).unwrap();
    assert_eq!(
        settled.hashed_files, 0,
        "nothing is downloaded once the tags settled: {settled:?}"
    );
    for path in ["up.txt", "listed.txt"] {
        assert_eq!(
            settled.tree[&rel(path)].version,
            base[&rel(path)].remote_version
        );
    }

    // A change of the same size after that is still seen.
    let served = server.served(Share::Open).join("settle");
    fs::write(served.join("up.txt"), "UPLOADED\n").unwrap();
    server.hand_over(&served.join("up.txt"));
    let_etags_settle();
    let changed = remote.list(&Scope::Full, &base, &ignore).unwrap();
    assert_eq!(changed.hashed_files, 1, "{changed:?}");
    assert_eq!(
        changed.tree[&rel("up.txt")].entry.file().unwrap().hash,
        ContentHash::of_bytes(b"UPLOADED\n")
    );
}

fn credentials(server: &Apache, name: &str, password: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = server.scratch(name);
    let file = dir.join("webdav-passwords");
    fs::write(
        &file,
        format!("{}@127.0.0.1:{} {password}\n", Apache::USER, server.port()),
    )
    .unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
    dir
}

fn auth_replica(server: &Apache, config_dir: PathBuf) -> WebdavReplica {
    WebdavReplica::new(WebdavTarget {
        username: Some(Apache::USER.into()),
        config_dir: Some(config_dir),
        ..target(server.port(), "/auth/")
    })
    .unwrap()
}

#[test]
fn basic_auth_logs_in_with_the_stored_password_and_a_wrong_one_is_refused_unsaid() {
    let server = Apache::start();
    let good = auth_replica(&server, credentials(&server, "good", Apache::PASSWORD));
    good.mark_root().unwrap();
    write(&good, "x.txt", "x\n", &Expect::Absent);
    assert_eq!(
        fs::read_to_string(server.served(Share::Auth).join("x.txt")).unwrap(),
        "x\n"
    );

    let wrong_password = "wrong-password-XYZZY";
    let bad = auth_replica(&server, credentials(&server, "bad", wrong_password));
    let err = bad
        .list(&Scope::Full, &BaseTree::new(), &no_rules())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("401") && err.contains("username") && err.contains("webdav-passwords"),
        "{err}"
    );
    assert!(!err.contains(wrong_password), "{err}");
    assert!(!bad.describe().contains(wrong_password));

    let none = auth_replica(&server, server.scratch("none"));
    let err = none.root_state().unwrap_err().to_string();
    assert!(err.contains("no password was found"), "{err}");

    // Plain HTTP to another machine never carries the password.
    let remote_host = WebdavReplica::new(WebdavTarget {
        host: "nas.example.invalid".into(),
        username: Some(Apache::USER.into()),
        config_dir: Some(credentials(&server, "far", Apache::PASSWORD)),
        ..target(80, "/dav/")
    })
    .unwrap();
    let err = remote_host.root_state().unwrap_err().to_string();
    assert!(
        err.contains("plain HTTP") && err.contains("allow_insecure_http_auth"),
        "{err}"
    );
}

#[test]
fn https_needs_the_private_ca_named_in_ca_file() {
    let server = Apache::start();
    let tls_target = |ca_file: Option<PathBuf>| WebdavTarget {
        tls: true,
        ca_file,
        ..target(server.tls_port(), "/open/")
    };
    let untrusted = WebdavReplica::new(tls_target(None)).unwrap();
    let err = untrusted.root_state().unwrap_err().to_string();
    assert!(
        err.contains("certificate") && err.contains("ca_file"),
        "{err}"
    );
    let trusted = WebdavReplica::new(tls_target(Some(server.ca_file()))).unwrap();
    assert_eq!(trusted.root_state().unwrap(), RootState::Unmarked);
    trusted.mark_root().unwrap();
    write(&trusted, "secure.txt", "tls\n", &Expect::Absent);
    assert_eq!(
        fs::read_to_string(server.served(Share::Open).join("secure.txt")).unwrap(),
        "tls\n"
    );
}

/// `open_at` asks for the rest of the listed version only: a `Range` the
/// server answers with exactly those bytes. When the file changed since
/// it was listed (same size; only the ETag surely tells), the
/// server's answer to `If-Range` is the whole new file, and that is refused
/// as another version rather than spliced onto the bytes of the old one.
#[test]
fn open_at_reads_the_rest_of_the_listed_version_and_refuses_a_changed_file() {
    let server = Apache::start();
    let remote = replica(&server, "root");
    remote.mark_root().unwrap();
    let old = "0123456789abcdefghij".repeat(100);
    write(&remote, "f.txt", &old, &Expect::Absent);
    let_etags_settle();
    let listing = remote
        .list(&Scope::Full, &BaseTree::new(), &no_rules())
        .unwrap();
    let meta = *listing.tree[&rel("f.txt")].entry.file().unwrap();

    let (mut reader, start) = remote.open_at(&rel("f.txt"), 1500, &meta).unwrap();
    assert_eq!(start, 1500);
    let mut rest = String::new();
    reader.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, old[1500..]);
    drop(reader);
    // Apache logs a request once it is over, which may be a moment after
    // its last byte arrived here.
    let ranged = |log: &str| {
        log.lines()
            .any(|l| l.starts_with("GET /open/root/f.txt 206 500 range=bytes=1500-"))
    };
    let logged = Instant::now();
    while !ranged(&server.access_log()) && logged.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(ranged(&server.access_log()), "{}", server.access_log());

    // Another version of the same size, written on the server directly.
    let new = "ABCDEFGHIJ0123456789".repeat(100);
    fs::write(server.served(Share::Open).join("root/f.txt"), &new).unwrap();
    let err = remote
        .open_at(&rel("f.txt"), 1500, &meta)
        .err()
        .expect("a changed file is not continued");
    assert!(err.is_change(), "{err}");
}

/// Lays out the same small tree (an empty folder, nesting three deep) in a
/// folder of the open share, owned by the server.
fn lay_out_tree(server: &Apache, name: &str) {
    let root = server.served(Share::Open).join(name);
    for (path, text) in [
        ("top.txt", "top\n"),
        ("a/1.txt", "one\n"),
        ("a/b/2.txt", "two\n"),
        ("a/b/c/3.txt", "three\n"),
        ("d/4.txt", "four\n"),
    ] {
        let file = root.join(path);
        fs::create_dir_all(file.parent().unwrap()).unwrap();
        fs::write(file, text).unwrap();
    }
    fs::create_dir_all(root.join("e")).unwrap();
    server.hand_over(&root);
}

/// The PROPFINDs below `/open/NAME/` among `requests`, without the
/// method.
fn propfinds(requests: &[String], name: &str) -> Vec<String> {
    let prefix = format!("PROPFIND /open/{name}/");
    requests
        .iter()
        .filter_map(|r| r.strip_prefix(&prefix))
        .map(str::to_owned)
        .collect()
}

/// What a listing says about each path: kind, size and hash.
fn summary(listing: &Listing) -> Vec<String> {
    listing
        .tree
        .iter()
        .map(|(path, side)| match side.entry.file() {
            Some(meta) => format!("{path} {} {:?}", meta.size, meta.hash),
            None => format!("{path}/"),
        })
        .collect()
}

#[test]
fn a_listing_is_one_propfind_where_apache_allows_depth_infinity_else_one_per_folder() {
    let server = Apache::start();
    let names = ["deep-tree", "flat-tree"];
    for name in names {
        lay_out_tree(&server, name);
        replica(&server, name).mark_root().unwrap();
    }
    let_etags_settle();
    let mut summaries = Vec::new();
    for name in names {
        let remote = replica(&server, name);
        let before = server.requests().len();
        let first = remote
            .list(&Scope::Full, &BaseTree::new(), &no_rules())
            .unwrap();
        assert!(
            first.held.is_empty() && first.problems.is_empty(),
            "{first:?}"
        );
        assert_eq!(first.hashed_files, 5);
        let middle = server.requests().len();
        let again = remote
            .list(&Scope::Full, &base_of(&first), &no_rules())
            .unwrap();
        assert_eq!(summary(&again), summary(&first));
        assert_eq!(again.hashed_files, 0);
        let requests = server.requests();
        let (first_requests, again_requests) = (&requests[before..middle], &requests[middle..]);
        if name == "deep-tree" {
            assert_eq!(propfinds(first_requests, name), [" infinity 207"]);
            assert_eq!(propfinds(again_requests, name), [" infinity 207"]);
        } else {
            // Refused once, then never asked again: one Depth 1 for the
            // share and each of its five folders (`.prism-sync` is not
            // walked).
            let mut first = propfinds(first_requests, name);
            first.sort();
            assert_eq!(
                first,
                [
                    " 1 207",
                    " infinity 403",
                    "a/ 1 207",
                    "a/b/ 1 207",
                    "a/b/c/ 1 207",
                    "d/ 1 207",
                    "e/ 1 207"
                ]
            );
            let mut again = propfinds(again_requests, name);
            again.sort();
            assert_eq!(
                again,
                first[..1]
                    .iter()
                    .chain(&first[2..])
                    .cloned()
                    .collect::<Vec<_>>()
            );
        }
        summaries.push(summary(&first));
    }
    assert_eq!(summaries[0], summaries[1]);
    assert_eq!(summaries[0].len(), 10, "{:#?}", summaries[0]);
}

#[test]
fn folders_made_by_several_writers_at_once_are_made_without_an_error() {
    // mod_dav_fs answers 403 when a concurrent MKCOL made the folder
    // between its own check and its mkdir (EEXIST); parallel commits that
    // trash two files of one folder make the same trash folder at once.
    let server = Apache::start();
    let remote = replica(&server, "");
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                for i in 0..40 {
                    remote.mkdir(&rel(&format!("race{i}")), None).unwrap();
                }
            });
        }
    });
}

#[test]
fn a_folder_replaced_by_a_link_on_the_server_never_reads_as_deleted() {
    // Apache's mod_dav_fs leaves a link out of the listing of its folder
    // but serves what it points to when asked by name: a WebDAV client
    // cannot see the link itself. Nothing below it may read as deleted.
    let server = Apache::start();
    for name in ["flat-tree", "deep-tree"] {
        lay_out_tree(&server, name);
        let remote = replica(&server, name);
        remote.mark_root().unwrap();
        let_etags_settle();
        let first = remote
            .list(&Scope::Full, &BaseTree::new(), &no_rules())
            .unwrap();
        let root = server.served(Share::Open).join(name);
        let moved = server.served(Share::Open).join(format!("{name}-a-moved"));
        fs::rename(root.join("a"), &moved).unwrap();
        std::os::unix::fs::symlink(&moved, root.join("a")).unwrap();
        let again = remote
            .list(&Scope::Full, &base_of(&first), &no_rules())
            .unwrap();
        let kept: Vec<&RelPath> = first
            .tree
            .keys()
            .filter(|path| !again.tree.contains_key(*path))
            .filter(|path| !again.held.iter().any(|held| path.is_within(held)))
            .collect();
        assert!(
            kept.is_empty(),
            "{name}: {kept:?} read as deleted: {again:?}"
        );
        // Apache leaves the link out of its listing but serves it by
        // name: held, with a problem saying why.
        assert_eq!(again.held, [rel("a")], "{name}: {again:?}");
        assert!(
            again
                .problems
                .iter()
                .any(|p| p.path == Some(rel("a")) && p.message.contains("symbolic link")),
            "{name}: {:?}",
            again.problems
        );
        // A folder really deleted on the server still reads as deleted.
        fs::remove_dir_all(root.join("d")).unwrap();
        let after = remote
            .list(&Scope::Full, &base_of(&first), &no_rules())
            .unwrap();
        assert!(!after.tree.keys().any(|p| p.is_within(&rel("d"))));
        assert_eq!(after.held, [rel("a")], "{name}: {after:?}");
    }
}

fn read_all(mut reader: Box<dyn Read + Send + '_>) -> String {
    let mut text = String::new();
    reader.read_to_string(&mut text).unwrap();
    text
}

#[test]
fn a_replaced_or_removed_version_is_named_in_the_trash_and_read_back_by_that_name() {
    let server = Apache::start();
    let remote = replica(&server, "named");
    remote.mark_root().unwrap();
    let first = write(&remote, "docs/note.txt", "v1\n", &Expect::Absent);
    let_etags_settle();
    let v2 = "v2, longer\n";
    let (second, replaced) = remote
        .write_naming_trash(
            &rel("docs/note.txt"),
            &mut v2.as_bytes(),
            &ContentHash::of_bytes(v2.as_bytes()),
            1_600_000_000_123_456_789,
            None,
            &expect_of(&first),
        )
        .unwrap();
    let replaced = replaced.expect("the replaced version's name in the trash");
    assert!(replaced.as_str().ends_with("/docs/note.txt"), "{replaced}");
    assert_eq!(read_all(remote.open_trashed(&replaced).unwrap()), "v1\n");

    // Removed within the same minute: a name of its own.
    let_etags_settle();
    let removed = remote
        .remove_naming_trash(&rel("docs/note.txt"), &expect_of(&second))
        .unwrap()
        .expect("the removed version's name in the trash");
    assert_ne!(removed, replaced);
    assert_eq!(read_all(remote.open_trashed(&removed).unwrap()), v2);

    // A version whose batch was purged is not found, and says so.
    let purged = remote
        .open_trashed(&rel("20000101-0000/docs/note.txt"))
        .err()
        .expect("nothing there");
    assert!(
        matches!(&purged, prism_sync::remote::ReplicaError::Io { source, .. }
            if source.kind() == std::io::ErrorKind::NotFound),
        "{purged}"
    );
}

#[test]
fn stat_says_what_a_path_holds_now_as_the_steps_on_it_check_it() {
    let server = Apache::start();
    let served = server.served(Share::Open).join("stat");
    let remote = replica(&server, "stat");
    remote.mark_root().unwrap();
    remote.mkdir(&rel("d"), None).unwrap();
    let written = write(&remote, "d/f.txt", "abc\n", &Expect::Absent);

    assert_eq!(remote.stat(&rel("missing")).unwrap(), Expect::Absent);
    assert_eq!(remote.stat(&rel("gone/below")).unwrap(), Expect::Absent);
    assert_eq!(remote.stat(&rel("d")).unwrap(), Expect::Dir);
    // WebDAV holds no modes: the file's size and (whole-second) mtime.
    let file = remote.stat(&rel("d/f.txt")).unwrap();
    assert_eq!(file, expect_of(&written));
    assert!(
        matches!(
            file,
            Expect::File {
                size: 4,
                mode: None,
                ..
            }
        ),
        "{file:?}"
    );
    // What it says is what a step on the path checks against.
    remote
        .rename(&rel("d/f.txt"), &rel("d/g.txt"), &file)
        .unwrap();
    let moved = remote.stat(&rel("d/g.txt")).unwrap();
    remote.remove(&rel("d/g.txt"), &moved).unwrap();
    assert_eq!(remote.stat(&rel("d/g.txt")).unwrap(), Expect::Absent);
    assert_eq!(contents_below(&served.join(".prism-sync/trash")), ["abc\n"]);
}

/// Listings are asked for with gzip and arrive compressed where the server
/// compresses (this Apache deflates XML); file contents never are, so a
/// file of a compressible type hashes as its own bytes.
#[test]
fn listings_arrive_gzipped_and_file_contents_never_do() {
    let server = Apache::start();
    lay_out_tree(&server, "zipped");
    let xml = "<note>the same line again and again</note>\n".repeat(200);
    fs::write(server.served(Share::Open).join("zipped/a/notes.xml"), &xml).unwrap();
    let remote = replica(&server, "zipped");
    remote.mark_root().unwrap();
    let_etags_settle();
    let before = server.encodings().len();
    let listing = remote
        .list(&Scope::Full, &BaseTree::new(), &no_rules())
        .unwrap();
    assert!(
        listing.problems.is_empty() && listing.held.is_empty(),
        "{listing:?}"
    );
    assert_eq!(listing.hashed_files, 6);
    let notes = listing.tree[&rel("a/notes.xml")].entry.file().unwrap();
    assert_eq!(notes.hash, ContentHash::of_bytes(xml.as_bytes()));
    assert_eq!(notes.size, xml.len() as u64);

    let encodings = server.encodings();
    let answered = &encodings[before..];
    let propfinds: Vec<&String> = answered
        .iter()
        .filter(|l| l.starts_with("PROPFIND ") && l.contains(" 207 "))
        .collect();
    assert!(!propfinds.is_empty(), "{answered:?}");
    for line in &propfinds {
        assert!(line.contains(" 207 gzip "), "a listing in gzip: {line}");
    }
    let gets: Vec<&String> = answered.iter().filter(|l| l.starts_with("GET ")).collect();
    assert_eq!(gets.len(), 6, "{answered:?}");
    for line in gets {
        assert!(line.contains(" 200 - "), "a file as its own bytes: {line}");
    }
}
