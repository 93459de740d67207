//! The git replica against real repositories over `file://`, with plain
//! `git` as the other writer.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::GitPairSettings;
use super::replica::GitReplica;
use crate::fsops::Expect;
use crate::model::{BaseEntry, BaseTree, ContentHash, Entry, RelPath, Scope};
use crate::remote::{Replica, ReplicaError, RootState};
use crate::tracker::ignore::IgnoreRules;

/// Plain git, as a person runs it, with an identity of its own.
fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Person")
        .env("GIT_AUTHOR_EMAIL", "person@example.org")
        .env("GIT_COMMITTER_NAME", "Person")
        .env("GIT_COMMITTER_EMAIL", "person@example.org")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim_end().to_owned()
}

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    /// An empty bare repository whose HEAD names `main`.
    fn new() -> Fixture {
        let dir = tempfile::TempDir::new().unwrap();
        git(
            dir.path(),
            &["init", "--bare", "-q", "-b", "main", "remote.git"],
        );
        Fixture { dir }
    }

    fn url(&self) -> String {
        format!("file://{}", self.dir.path().join("remote.git").display())
    }

    fn bare(&self) -> PathBuf {
        self.dir.path().join("remote.git")
    }

    fn replica(&self, device: &str, settings: GitPairSettings) -> GitReplica {
        let mirror = self.dir.path().join(format!("state-{device}/mirror.git"));
        GitReplica::new(&self.url(), mirror, settings, device)
    }

    /// A checkout of the remote's `main`, as a person has it.
    fn clone(&self, name: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        git(
            self.dir.path(),
            &["clone", "-q", &self.url(), path.to_str().unwrap()],
        );
        path
    }
}

fn rel(s: &str) -> RelPath {
    RelPath::new(s).unwrap()
}

fn no_ignores() -> (tempfile::TempDir, IgnoreRules) {
    let dir = tempfile::TempDir::new().unwrap();
    let rules = IgnoreRules::load(dir.path(), &[]).unwrap();
    (dir, rules)
}

fn write(
    replica: &GitReplica,
    path: &str,
    content: &[u8],
    expect: Expect,
) -> Result<(), ReplicaError> {
    let hash = ContentHash::of_bytes(content);
    replica
        .write(&rel(path), &mut &content[..], &hash, 1_000, None, &expect)
        .map(|_| ())
}

fn listed_version(replica: &GitReplica, path: &str) -> Expect {
    let (_d, ignore) = no_ignores();
    let listing = replica
        .list(&Scope::Full, &BaseTree::new(), &ignore)
        .unwrap();
    let side = &listing.tree[&rel(path)];
    crate::engine::executor::expect_of(Some(side))
}

#[test]
fn a_batch_becomes_one_commit_on_main_and_records_stay_out_of_the_tree() {
    let fixture = Fixture::new();
    let replica = fixture.replica("alpha", GitPairSettings::default());
    assert_eq!(replica.root_state().unwrap(), RootState::Unmarked);
    replica.mark_root().unwrap();
    assert_eq!(replica.root_state().unwrap(), RootState::Ready);
    let (_d, ignore) = no_ignores();
    let listing = replica
        .list(&Scope::Full, &BaseTree::new(), &ignore)
        .unwrap();
    assert!(listing.tree.is_empty());

    write(&replica, "notes/a.md", b"alpha\n", Expect::Absent).unwrap();
    write(&replica, "b.md", b"beta\n", Expect::Absent).unwrap();
    // Nothing is on the remote before the flush.
    let bare = fixture.bare();
    assert!(git(&bare, &["for-each-ref", "refs/heads"]).is_empty());
    replica.flush().unwrap();

    assert_eq!(git(&bare, &["rev-list", "--count", "main"]), "1");
    assert_eq!(
        git(&bare, &["log", "-1", "--format=%s|%an|%ae", "main"]),
        "alpha: 2 added|alpha|alpha@prism-sync.invalid"
    );
    assert_eq!(git(&bare, &["show", "main:notes/a.md"]), "alpha");
    assert_eq!(
        git(&bare, &["ls-tree", "-r", "--name-only", "main"]),
        "b.md\nnotes/a.md"
    );
    // The records are in a ref of their own.
    assert!(
        git(
            &bare,
            &["ls-tree", "-r", "--name-only", "refs/prism-sync/records"]
        )
        .contains("root")
    );

    // The listing shows blob ids as versions, and the hashes of the content.
    let listing = replica
        .list(&Scope::Full, &BaseTree::new(), &ignore)
        .unwrap();
    let a = &listing.tree[&rel("notes/a.md")];
    assert_eq!(
        a.version.as_ref().map(ToString::to_string),
        Some(git(&bare, &["rev-parse", "main:notes/a.md"]))
    );
    assert_eq!(
        a.entry.file().unwrap().hash,
        ContentHash::of_bytes(b"alpha\n")
    );
    assert!(listing.tree[&rel("notes")].entry.is_dir());
}

#[test]
fn a_plain_git_commit_is_listed_and_a_replacement_checks_the_blob_it_expects() {
    let fixture = Fixture::new();
    let replica = fixture.replica("alpha", GitPairSettings::default());
    replica.root_state().unwrap();
    let (_d, ignore) = no_ignores();
    replica
        .list(&Scope::Full, &BaseTree::new(), &ignore)
        .unwrap();
    write(&replica, "a.md", b"one\n", Expect::Absent).unwrap();
    replica.flush().unwrap();
    let listed = listed_version(&replica, "a.md");

    let checkout = fixture.clone("person");
    std::fs::write(checkout.join("a.md"), "two\n").unwrap();
    std::fs::write(checkout.join("c.md"), "new\n").unwrap();
    git(&checkout, &["add", "-A"]);
    git(&checkout, &["commit", "-qm", "by hand"]);
    git(&checkout, &["push", "-q", "origin", "main"]);

    // The listing made before the person's commit no longer holds.
    let listing = replica
        .list(&Scope::Full, &BaseTree::new(), &ignore)
        .unwrap();
    assert_eq!(
        listing.tree[&rel("c.md")].entry.file().unwrap().hash,
        ContentHash::of_bytes(b"new\n")
    );
    assert!(matches!(
        write(&replica, "a.md", b"three\n", listed),
        Err(ReplicaError::Changed { .. })
    ));
    let fresh = listed_version(&replica, "a.md");
    write(&replica, "a.md", b"three\n", fresh).unwrap();
    replica.flush().unwrap();
    assert_eq!(git(&fixture.bare(), &["show", "main:a.md"]), "three");
    assert_eq!(
        git(&fixture.bare(), &["log", "-1", "--format=%s", "main"]),
        "alpha: 1 modified"
    );
}

#[test]
fn a_refused_push_commits_again_on_the_new_tip_when_the_paths_differ_and_never_merges() {
    let fixture = Fixture::new();
    let replica = fixture.replica("alpha", GitPairSettings::default());
    let (_d, ignore) = no_ignores();
    replica
        .list(&Scope::Full, &BaseTree::new(), &ignore)
        .unwrap();
    write(&replica, "a.md", b"one\n", Expect::Absent).unwrap();
    replica.flush().unwrap();
    replica
        .list(&Scope::Full, &BaseTree::new(), &ignore)
        .unwrap();

    // Someone pushes between our listing and our flush.
    let checkout = fixture.clone("person");
    std::fs::write(checkout.join("theirs.md"), "theirs\n").unwrap();
    git(&checkout, &["add", "-A"]);
    git(&checkout, &["commit", "-qm", "theirs"]);
    git(&checkout, &["push", "-q", "origin", "main"]);

    write(&replica, "ours.md", b"ours\n", Expect::Absent).unwrap();
    replica.flush().unwrap();
    let bare = fixture.bare();
    assert_eq!(
        git(&bare, &["ls-tree", "-r", "--name-only", "main"]),
        "a.md\nours.md\ntheirs.md"
    );
    // A straight line: ours on top of theirs, no merge commit.
    assert_eq!(
        git(&bare, &["rev-list", "--count", "--merges", "main"]),
        "0"
    );
    assert_eq!(
        git(&bare, &["log", "--format=%s", "main"]),
        "alpha: 1 added\ntheirs\nalpha: 1 added"
    );
    // The view follows: their file is there for the next steps.
    let listing = replica
        .list(&Scope::Full, &BaseTree::new(), &ignore)
        .unwrap();
    assert!(listing.tree.contains_key(&rel("theirs.md")));
}

#[test]
fn a_refused_push_whose_paths_someone_else_changed_is_dropped_for_a_new_plan() {
    let fixture = Fixture::new();
    let replica = fixture.replica("alpha", GitPairSettings::default());
    let (_d, ignore) = no_ignores();
    replica
        .list(&Scope::Full, &BaseTree::new(), &ignore)
        .unwrap();
    write(&replica, "a.md", b"one\n", Expect::Absent).unwrap();
    replica.flush().unwrap();
    let listed = listed_version(&replica, "a.md");

    let checkout = fixture.clone("person");
    std::fs::write(checkout.join("a.md"), "theirs\n").unwrap();
    git(&checkout, &["commit", "-qam", "theirs"]);
    git(&checkout, &["push", "-q", "origin", "main"]);

    write(&replica, "a.md", b"ours\n", listed).unwrap();
    let error = replica.flush().unwrap_err();
    assert!(
        matches!(error, ReplicaError::Changed { ref path } if path == "a.md"),
        "{error}"
    );
    let bare = fixture.bare();
    assert_eq!(git(&bare, &["show", "main:a.md"]), "theirs");
    // Nothing half-done: the next flush has nothing to push.
    replica.flush().unwrap();
    assert_eq!(git(&bare, &["rev-list", "--count", "main"]), "2");
}

#[test]
fn moves_and_removals_are_one_commit_and_deleted_versions_stay_in_the_history() {
    let fixture = Fixture::new();
    let replica = fixture.replica("alpha", GitPairSettings::default());
    let (_d, ignore) = no_ignores();
    replica
        .list(&Scope::Full, &BaseTree::new(), &ignore)
        .unwrap();
    write(&replica, "docs/a.md", b"a\n", Expect::Absent).unwrap();
    write(&replica, "docs/b.md", b"b\n", Expect::Absent).unwrap();
    write(&replica, "gone.md", b"gone\n", Expect::Absent).unwrap();
    replica.flush().unwrap();
    let gone = listed_version(&replica, "gone.md");
    replica
        .rename(&rel("docs"), &rel("notes"), &Expect::Dir)
        .unwrap();
    replica.remove(&rel("gone.md"), &gone).unwrap();
    replica.flush().unwrap();
    let bare = fixture.bare();
    assert_eq!(
        git(&bare, &["ls-tree", "-r", "--name-only", "main"]),
        "notes/a.md\nnotes/b.md"
    );
    assert_eq!(
        git(&bare, &["log", "-1", "--format=%s", "main"]),
        "alpha: 1 deleted, docs/ → notes/"
    );
    assert_eq!(git(&bare, &["show", "main~1:gone.md"]), "gone");
}

#[test]
fn a_branch_the_remote_lacks_is_a_clear_error_and_the_default_branch_is_followed() {
    let fixture = Fixture::new();
    let first = fixture.replica("alpha", GitPairSettings::default());
    let (_d, ignore) = no_ignores();
    first.list(&Scope::Full, &BaseTree::new(), &ignore).unwrap();
    write(&first, "a.md", b"a\n", Expect::Absent).unwrap();
    first.flush().unwrap();

    let wrong = fixture.replica(
        "beta",
        GitPairSettings {
            branch: Some("mian".into()),
            ..GitPairSettings::default()
        },
    );
    let message = wrong
        .list(&Scope::Full, &BaseTree::new(), &ignore)
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("no branch \"mian\"") && message.contains("main"),
        "{message}"
    );
}

#[test]
fn a_subfolder_is_synced_alone_and_the_rest_of_the_tree_is_kept() {
    let fixture = Fixture::new();
    let checkout = fixture.clone("person");
    std::fs::create_dir_all(checkout.join("journal")).unwrap();
    std::fs::write(checkout.join("README"), "top\n").unwrap();
    std::fs::write(checkout.join("journal/day.md"), "day\n").unwrap();
    git(&checkout, &["add", "-A"]);
    git(&checkout, &["commit", "-qm", "start"]);
    git(&checkout, &["push", "-q", "origin", "main"]);

    let replica = fixture.replica(
        "alpha",
        GitPairSettings {
            path: Some(rel("journal")),
            ..GitPairSettings::default()
        },
    );
    let (_d, ignore) = no_ignores();
    let listing = replica
        .list(&Scope::Full, &BaseTree::new(), &ignore)
        .unwrap();
    assert_eq!(
        listing.tree.keys().map(RelPath::as_str).collect::<Vec<_>>(),
        ["day.md"]
    );
    write(&replica, "night.md", b"night\n", Expect::Absent).unwrap();
    replica.flush().unwrap();
    assert_eq!(
        git(&fixture.bare(), &["ls-tree", "-r", "--name-only", "main"]),
        "README\njournal/day.md\njournal/night.md"
    );

    // A push refused for a clash names the path in the pair, the one the
    // engine plans again, not the repository's.
    let day = listed_version(&replica, "day.md");
    std::fs::write(checkout.join("journal/day.md"), "theirs\n").unwrap();
    git(&checkout, &["commit", "-qam", "theirs"]);
    git(&checkout, &["pull", "-q", "--rebase", "origin", "main"]);
    git(&checkout, &["push", "-q", "origin", "main"]);
    write(&replica, "day.md", b"ours\n", day).unwrap();
    let error = replica.flush().unwrap_err();
    assert!(
        matches!(error, ReplicaError::Changed { ref path } if path == "day.md"),
        "{error}"
    );
}

#[test]
fn an_empty_folder_the_base_knows_stays_listed_and_the_base_s_hash_is_reused() {
    let fixture = Fixture::new();
    let replica = fixture.replica("alpha", GitPairSettings::default());
    let (_d, ignore) = no_ignores();
    replica
        .list(&Scope::Full, &BaseTree::new(), &ignore)
        .unwrap();
    write(&replica, "a.md", b"a\n", Expect::Absent).unwrap();
    replica.mkdir(&rel("empty"), None).unwrap();
    replica.flush().unwrap();
    let listing = replica
        .list(&Scope::Full, &BaseTree::new(), &ignore)
        .unwrap();
    let a = listing.tree[&rel("a.md")].clone();
    let mut base = BaseTree::new();
    let mut meta = *a.entry.file().unwrap();
    meta.mtime_ns = 42;
    base.insert(
        rel("a.md"),
        BaseEntry {
            remote_version: a.version.clone(),
            ..BaseEntry::new(Entry::File(meta))
        },
    );
    base.insert(rel("empty"), BaseEntry::new(Entry::dir(None)));
    let listing = replica.list(&Scope::Full, &base, &ignore).unwrap();
    assert!(listing.tree[&rel("empty")].entry.is_dir());
    assert_eq!(
        listing.tree[&rel("a.md")].entry.file().unwrap().mtime_ns,
        42
    );
    assert_eq!(listing.hashed_files, 0);
}

/// Sizes come from the base or from memory where the blob id is known,
/// not from the tree, and the tip's time is read when first needed: a file
/// a person changed to another length has a new blob id, and both a fresh
/// replica and one that listed the tip before see its new size, hash,
/// version and the new tip's time.
#[test]
fn sizes_and_times_follow_the_tip_whoever_changed_the_file() {
    let fixture = Fixture::new();
    let replica = fixture.replica("alpha", GitPairSettings::default());
    let (_d, ignore) = no_ignores();
    replica.root_state().unwrap();
    replica
        .list(&Scope::Full, &BaseTree::new(), &ignore)
        .unwrap();
    write(&replica, "a.md", b"one\n", Expect::Absent).unwrap();
    replica.flush().unwrap();
    let listing = replica
        .list(&Scope::Full, &BaseTree::new(), &ignore)
        .unwrap();
    let mut base = BaseTree::new();
    let a = &listing.tree[&rel("a.md")];
    base.insert(
        rel("a.md"),
        BaseEntry {
            remote_version: a.version.clone(),
            ..BaseEntry::new(a.entry)
        },
    );

    let checkout = fixture.clone("person");
    std::fs::write(checkout.join("a.md"), "a much longer line\n").unwrap();
    std::fs::write(checkout.join("b.md"), "bee\n").unwrap();
    git(&checkout, &["add", "-A"]);
    // Committed at a time of its own: the new files carry the new tip's
    // time, not the one a replica read for the tip before.
    let committed = Command::new("git")
        .args(["commit", "-qm", "by hand"])
        .current_dir(&checkout)
        .env("GIT_AUTHOR_NAME", "Person")
        .env("GIT_AUTHOR_EMAIL", "person@example.org")
        .env("GIT_COMMITTER_NAME", "Person")
        .env("GIT_COMMITTER_EMAIL", "person@example.org")
        .env("GIT_COMMITTER_DATE", "@981173106 +0000")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .status()
        .unwrap();
    assert!(committed.success());
    git(&checkout, &["push", "-q", "origin", "main"]);

    // A replica that knew the old blob, and one that knows nothing (a
    // process started afresh, its own mirror).
    let fresh = fixture.replica("beta", GitPairSettings::default());
    fresh.root_state().unwrap();
    for replica in [&replica, &fresh] {
        let listing = replica.list(&Scope::Full, &base, &ignore).unwrap();
        let a = listing.tree[&rel("a.md")].entry.file().unwrap();
        assert_eq!(
            (a.size, a.hash),
            (19, ContentHash::of_bytes(b"a much longer line\n"))
        );
        let b = listing.tree[&rel("b.md")].entry.file().unwrap();
        assert_eq!((b.size, b.hash), (4, ContentHash::of_bytes(b"bee\n")));
        assert_eq!(b.mtime_ns, 981_173_106 * 1_000_000_000);
        assert!(matches!(
            replica.stat(&rel("a.md")).unwrap(),
            Expect::File {
                size: 19,
                mtime_ns: 981_173_106_000_000_000,
                ..
            }
        ));
        assert_eq!(listing.hashed_files, 2);
    }
}

#[test]
fn an_unreachable_remote_is_offline() {
    let dir = tempfile::TempDir::new().unwrap();
    // A port nobody listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let replica = GitReplica::new(
        &format!("http://127.0.0.1:{port}/notes.git"),
        dir.path().join("mirror.git"),
        GitPairSettings::default(),
        "alpha",
    );
    let error = replica.root_state().unwrap_err();
    assert!(error.is_offline(), "{error}");
}

#[test]
fn tidying_the_mirror_packs_its_loose_objects_and_keeps_every_version() {
    let fixture = Fixture::new();
    let replica = fixture.replica("alpha", GitPairSettings::default());
    let (_d, ignore) = no_ignores();
    replica
        .list(&Scope::Full, &BaseTree::new(), &ignore)
        .unwrap();
    write(&replica, "a.md", b"a\n", Expect::Absent).unwrap();
    write(&replica, "b.md", b"b\n", Expect::Absent).unwrap();
    replica.flush().unwrap();
    let mirror = fixture.dir.path().join("state-alpha/mirror.git");
    let loose = |dir: &Path| {
        git(dir, &["count-objects", "-v"])
            .lines()
            .find_map(|l| l.strip_prefix("count: ").map(str::to_owned))
            .unwrap()
    };
    assert_ne!(loose(&mirror), "0");
    replica.maintain(0).unwrap();
    assert_eq!(loose(&mirror), "0");
    let listing = replica
        .list(&Scope::Full, &BaseTree::new(), &ignore)
        .unwrap();
    assert_eq!(listing.tree.len(), 2);
    let mut read = String::new();
    replica
        .open(&rel("b.md"))
        .unwrap()
        .read_to_string(&mut read)
        .unwrap();
    assert_eq!(read, "b\n");
}

#[test]
fn a_push_a_server_hook_declines_is_one_clear_error_not_an_outage_and_leaves_nothing_behind() {
    let fixture = Fixture::new();
    let hook = fixture.bare().join("hooks/pre-receive");
    std::fs::write(&hook, "#!/bin/sh\necho 'main is protected' >&2\nexit 1\n").unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let replica = fixture.replica("alpha", GitPairSettings::default());
    let (_d, ignore) = no_ignores();
    replica
        .list(&Scope::Full, &BaseTree::new(), &ignore)
        .unwrap();
    write(&replica, "a.md", b"a\n", Expect::Absent).unwrap();
    let error = replica.flush().unwrap_err();
    let message = error.to_string();
    assert!(!error.is_offline() && !error.is_change(), "{message}");
    assert!(
        message.contains("refused the push") && message.contains("declined"),
        "{message}"
    );
    assert!(git(&fixture.bare(), &["for-each-ref", "refs/heads"]).is_empty());
    replica.flush().unwrap();
}

#[test]
fn links_and_names_that_are_not_utf8_are_problems_left_alone() {
    use std::os::unix::ffi::OsStrExt;
    let fixture = Fixture::new();
    let checkout = fixture.clone("person");
    std::fs::write(checkout.join("real.md"), "real\n").unwrap();
    std::os::unix::fs::symlink("real.md", checkout.join("link.md")).unwrap();
    std::fs::write(
        checkout.join(std::ffi::OsStr::from_bytes(b"bad\xff.md")),
        "bad\n",
    )
    .unwrap();
    git(&checkout, &["add", "-A"]);
    git(&checkout, &["commit", "-qm", "odd entries"]);
    git(&checkout, &["push", "-q", "origin", "main"]);
    let when: i64 = git(&fixture.bare(), &["log", "-1", "--format=%ct", "main"])
        .parse()
        .unwrap();

    let replica = fixture.replica("alpha", GitPairSettings::default());
    let (_d, ignore) = no_ignores();
    let listing = replica
        .list(&Scope::Full, &BaseTree::new(), &ignore)
        .unwrap();
    assert_eq!(
        listing.tree.keys().map(RelPath::as_str).collect::<Vec<_>>(),
        ["real.md"]
    );
    // A version nobody timed carries the commit's time.
    assert_eq!(
        listing.tree[&rel("real.md")].entry.file().unwrap().mtime_ns,
        when * 1_000_000_000
    );
    assert_eq!(listing.held, [rel("link.md")]);
    let messages: Vec<&str> = listing
        .problems
        .iter()
        .map(|p| p.message.as_str())
        .collect();
    assert!(
        messages.iter().any(|m| m.contains("symbolic link")),
        "{messages:?}"
    );
    assert!(
        messages.iter().any(|m| m.contains("not UTF-8")),
        "{messages:?}"
    );
    // Every listing says so, not only the one that read the tree.
    let again = replica
        .list(&Scope::Full, &BaseTree::new(), &ignore)
        .unwrap();
    assert_eq!(again.problems, listing.problems);
    assert_eq!(again.held, listing.held);
    // The link's name is taken: nothing is written over it.
    assert!(matches!(
        write(&replica, "link.md", b"x\n", Expect::Absent),
        Err(ReplicaError::Changed { .. })
    ));
}

#[test]
fn a_listing_right_after_the_root_check_asks_the_remote_once_and_the_next_asks_again() {
    let fixture = Fixture::new();
    let replica = fixture.replica("alpha", GitPairSettings::default());
    let (_d, ignore) = no_ignores();
    replica.root_state().unwrap();
    replica
        .list(&Scope::Full, &BaseTree::new(), &ignore)
        .unwrap();
    write(&replica, "a.md", b"a\n", Expect::Absent).unwrap();
    replica.flush().unwrap();

    replica.root_state().unwrap();
    // The repository goes away: the listing stands on the root check's
    // answer, and only the one after it finds out.
    let away = fixture.dir.path().join("away.git");
    std::fs::rename(fixture.bare(), &away).unwrap();
    let listing = replica
        .list(&Scope::Full, &BaseTree::new(), &ignore)
        .unwrap();
    assert!(listing.tree.contains_key(&rel("a.md")));
    assert!(
        replica
            .list(&Scope::Full, &BaseTree::new(), &ignore)
            .is_err()
    );
}

#[test]
fn a_repository_with_sha256_object_names_is_synced_like_any() {
    let dir = tempfile::TempDir::new().unwrap();
    git(
        dir.path(),
        &[
            "init",
            "--bare",
            "-q",
            "--object-format=sha256",
            "-b",
            "main",
            "r.git",
        ],
    );
    let url = format!("file://{}", dir.path().join("r.git").display());
    let checkout = dir.path().join("person");
    git(
        dir.path(),
        &["clone", "-q", &url, checkout.to_str().unwrap()],
    );
    std::fs::write(checkout.join("a.md"), "a\n").unwrap();
    std::fs::write(checkout.join("gone.md"), "gone\n").unwrap();
    git(&checkout, &["add", "-A"]);
    git(&checkout, &["commit", "-qm", "start"]);
    git(&checkout, &["push", "-q", "origin", "main"]);

    let replica = GitReplica::new(
        &url,
        dir.path().join("mirror.git"),
        GitPairSettings::default(),
        "alpha",
    );
    let (_d, ignore) = no_ignores();
    let listing = replica
        .list(&Scope::Full, &BaseTree::new(), &ignore)
        .unwrap();
    assert_eq!(
        listing.tree[&rel("a.md")]
            .version
            .as_ref()
            .unwrap()
            .to_string()
            .len(),
        64
    );
    let gone = &listing.tree[&rel("gone.md")];
    let gone = crate::engine::executor::expect_of(Some(gone));
    write(&replica, "b.md", b"b\n", Expect::Absent).unwrap();
    replica.remove(&rel("gone.md"), &gone).unwrap();
    replica.flush().unwrap();
    let bare = dir.path().join("r.git");
    assert_eq!(
        git(&bare, &["ls-tree", "-r", "--name-only", "main"]),
        "a.md\nb.md"
    );
}

#[test]
fn stat_answers_from_the_listed_tip_and_the_batch_not_pushed_yet() {
    let fixture = Fixture::new();
    let checkout = fixture.clone("person");
    std::fs::create_dir_all(checkout.join("docs")).unwrap();
    std::fs::write(checkout.join("docs/a.md"), "a\n").unwrap();
    std::fs::write(checkout.join("gone.md"), "gone\n").unwrap();
    git(&checkout, &["add", "-A"]);
    git(&checkout, &["commit", "-qm", "start"]);
    git(&checkout, &["push", "-q", "origin", "main"]);
    let blob = git(&checkout, &["rev-parse", "HEAD:docs/a.md"]);

    let replica = fixture.replica("alpha", GitPairSettings::default());
    let (_d, ignore) = no_ignores();
    replica
        .list(&Scope::Full, &BaseTree::new(), &ignore)
        .unwrap();
    match replica.stat(&rel("docs/a.md")).unwrap() {
        Expect::File { size, version, .. } => {
            assert_eq!(size, 2);
            assert_eq!(version.as_deref(), Some(blob.as_str()), "the blob id");
        }
        other => panic!("not a file: {other:?}"),
    }
    assert_eq!(replica.stat(&rel("docs")).unwrap(), Expect::Dir);
    assert_eq!(replica.stat(&rel("absent.md")).unwrap(), Expect::Absent);
    assert_eq!(
        replica.stat(&rel("docs/a.md/below")).unwrap(),
        Expect::Absent
    );

    // Edits of the batch count before they are pushed: a new file, a
    // removal, and a folder whose only file moved out of it.
    write(&replica, "new.md", b"new!\n", Expect::Absent).unwrap();
    let gone = replica.stat(&rel("gone.md")).unwrap();
    replica.remove(&rel("gone.md"), &gone).unwrap();
    let a = replica.stat(&rel("docs/a.md")).unwrap();
    replica.rename(&rel("docs/a.md"), &rel("a.md"), &a).unwrap();
    match replica.stat(&rel("new.md")).unwrap() {
        Expect::File { size, version, .. } => {
            assert_eq!(size, 5);
            let staged = version.unwrap();
            assert_eq!(staged.len(), blob.len(), "a blob id: {staged}");
            assert_ne!(staged, blob);
        }
        other => panic!("not a file: {other:?}"),
    }
    assert_eq!(replica.stat(&rel("gone.md")).unwrap(), Expect::Absent);
    assert_eq!(replica.stat(&rel("docs")).unwrap(), Expect::Absent);
    assert!(matches!(
        replica.stat(&rel("a.md")).unwrap(),
        Expect::File { version: Some(ref v), .. } if *v == blob
    ));
    // Still nothing on the remote.
    assert_eq!(
        git(&fixture.bare(), &["ls-tree", "-r", "--name-only", "main"]),
        "docs/a.md\ngone.md"
    );
    replica.flush().unwrap();
    assert_eq!(
        git(&fixture.bare(), &["ls-tree", "-r", "--name-only", "main"]),
        "a.md\nnew.md"
    );
    assert!(matches!(
        replica.stat(&rel("new.md")).unwrap(),
        Expect::File { size: 5, .. }
    ));
}

#[test]
fn mirrors_of_pairs_that_are_gone_are_removed_and_nothing_else() {
    let state = tempfile::TempDir::new().unwrap();
    let kept = super::replica::mirror_dir(state.path(), "notes", "file:///srv/notes.git");
    let gone = super::replica::mirror_dir(state.path(), "old", "file:///srv/old.git");
    let moved = super::replica::mirror_dir(state.path(), "notes", "file:///srv/before.git");
    for mirror in [&kept, &gone, &moved] {
        std::fs::create_dir_all(mirror.join("objects")).unwrap();
        std::fs::write(mirror.join("HEAD"), "ref: refs/heads/main\n").unwrap();
    }
    let dir = state.path().join("git");
    std::fs::create_dir_all(dir.join("mine.git")).unwrap();
    std::fs::write(dir.join("notes.txt"), "not a mirror\n").unwrap();

    let mut removed = super::replica::remove_mirrors_but(&dir, std::slice::from_ref(&kept));
    removed.sort();
    let mut expected = vec![gone.clone(), moved.clone()];
    expected.sort();
    assert_eq!(removed, expected);
    assert!(kept.join("HEAD").exists());
    assert!(!gone.exists() && !moved.exists());
    assert!(dir.join("mine.git").is_dir() && dir.join("notes.txt").is_file());
    // No mirrors at all: nothing to do.
    assert!(super::replica::remove_mirrors_but(&state.path().join("none"), &[]).is_empty());
}

#[test]
fn the_history_of_a_file_lists_each_commit_that_left_a_version_and_reads_it_back() {
    let fixture = Fixture::new();
    let replica = fixture.replica("alpha", GitPairSettings::default());
    let (_d, ignore) = no_ignores();
    replica
        .list(&Scope::Full, &BaseTree::new(), &ignore)
        .unwrap();
    assert!(replica.kept_versions(&rel("a.md"), 10).unwrap().is_empty());
    write(&replica, "a.md", b"one\n", Expect::Absent).unwrap();
    replica.flush().unwrap();
    let checkout = fixture.clone("person");
    std::fs::write(checkout.join("a.md"), "two, by hand\n").unwrap();
    std::fs::write(checkout.join("other.md"), "other\n").unwrap();
    git(&checkout, &["add", "-A"]);
    git(&checkout, &["commit", "-qm", "by hand"]);
    git(&checkout, &["rm", "-q", "a.md"]);
    git(&checkout, &["commit", "-qm", "gone"]);
    git(&checkout, &["push", "-q", "origin", "main"]);
    replica
        .list(&Scope::Full, &BaseTree::new(), &ignore)
        .unwrap();

    let kept = replica.kept_versions(&rel("a.md"), 10).unwrap();
    let summary: Vec<(u64, &str)> = kept.iter().map(|k| (k.size, k.author.as_str())).collect();
    assert_eq!(
        summary,
        [(13, "Person"), (4, "alpha")],
        "the deletion leaves none"
    );
    assert_eq!(kept[0].hash, ContentHash::of_bytes(b"two, by hand\n"));
    assert_eq!(kept[0].version, git(&checkout, &["rev-parse", "HEAD~1"]));
    assert!(kept[0].time_ns > 0);
    assert_eq!(replica.kept_versions(&rel("a.md"), 1).unwrap().len(), 1);
    let mut read = String::new();
    replica
        .open_kept(&rel("a.md"), &kept[1].version)
        .unwrap()
        .read_to_string(&mut read)
        .unwrap();
    assert_eq!(read, "one\n");
    // Not a commit id, or a commit without the file: not kept.
    for version in ["HEAD", "--output=/tmp/x", &kept[0].version[..12]] {
        assert!(
            replica.open_kept(&rel("a.md"), version).is_err(),
            "{version}"
        );
    }
    let head = git(&checkout, &["rev-parse", "HEAD"]);
    assert!(replica.open_kept(&rel("a.md"), &head).is_err());
}

#[test]
fn a_record_over_the_limit_is_refused_by_its_size_and_a_missing_one_is_none() {
    let fixture = Fixture::new();
    let replica = fixture.replica("alpha", GitPairSettings::default());
    replica.mark_root().unwrap();
    replica
        .write_record("journal/x", &"x".repeat(4096))
        .unwrap();
    assert_eq!(
        replica
            .record_content("journal/x", 8192)
            .unwrap()
            .unwrap()
            .len(),
        4096
    );
    let refused = replica.record_content("journal/x", 1024).unwrap_err();
    assert!(
        refused.to_string().contains("larger than 1024 bytes"),
        "{refused}"
    );
    assert_eq!(replica.record_content("journal/none", 1024).unwrap(), None);
    assert_eq!(replica.record_blob("journal/none").unwrap(), None);
    assert!(replica.record_blob("journal/x").unwrap().is_some());
}

#[test]
fn blob_ids_the_tip_no_longer_holds_are_forgotten() {
    use crate::locks::LockExt;
    let fixture = Fixture::new();
    let replica = fixture.replica("alpha", GitPairSettings::default());
    replica.mark_root().unwrap();
    let (_d, ignore) = no_ignores();
    replica
        .list(&Scope::Full, &BaseTree::new(), &ignore)
        .unwrap();
    write(&replica, "a.md", b"first\n", Expect::Absent).unwrap();
    replica.flush().unwrap();
    let first = listed_version(&replica, "a.md");
    write(&replica, "a.md", b"second, longer\n", first).unwrap();
    replica.flush().unwrap();
    // Another clone moves the tip, so the next listing loads it anew.
    let checkout = fixture.clone("person");
    std::fs::write(checkout.join("b.md"), "bee\n").unwrap();
    git(&checkout, &["add", "b.md"]);
    git(
        &checkout,
        &[
            "-c",
            "user.name=p",
            "-c",
            "user.email=p@x",
            "commit",
            "-qm",
            "b",
        ],
    );
    git(&checkout, &["push", "-q", "origin", "main"]);
    // What an agent that ran for long has seen: blobs no tip holds now.
    let gone = "0".repeat(40);
    replica.sizes.locked().insert(gone.clone(), 7);
    replica
        .hashes
        .locked()
        .insert(gone.clone(), ContentHash::of_bytes(b"gone"));
    let listing = replica
        .list(&Scope::Full, &BaseTree::new(), &ignore)
        .unwrap();
    assert_eq!(listing.tree.len(), 2);
    let held: std::collections::HashSet<String> = replica
        .view
        .locked()
        .files
        .values()
        .map(|b| b.oid.clone())
        .collect();
    assert!(!replica.sizes.locked().contains_key(&gone));
    assert!(!replica.hashes.locked().contains_key(&gone));
    for oid in replica.sizes.locked().keys() {
        assert!(held.contains(oid), "{oid} is no blob of the tip");
    }
    for oid in replica.hashes.locked().keys() {
        assert!(held.contains(oid), "{oid} is no blob of the tip");
    }
}
