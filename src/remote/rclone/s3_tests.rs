//! Moves on a backend where rclone's move is a server-side copy and a
//! removal: rclone's `s3` backend (both rclone versions) against a real
//! moto server on the loopback, started by each test (`moto_server` on
//! `PATH`, as `.ci/run` installs it).

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{RclonePairSettings, RcloneReplica};
use crate::fsops::Expect;
use crate::locks::LockExt;
use crate::model::{ContentHash, RelPath};
use crate::remote::{Replica, ReplicaError};

const BUCKET: &str = "moves";

/// A moto server of the test's own, and an rclone config that names it
/// `s3`.
struct Moto {
    server: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Moto {
    fn start() -> Moto {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start moto_server ({e}): install it with `pip install \
                     'moto[server]'` (in a venv whose bin is on PATH) to run the S3 tests"
                )
            });
        let mut moto = Moto {
            server,
            port,
            dir: tempfile::tempdir().unwrap(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                moto.server.try_wait().unwrap().is_none(),
                "moto_server exited"
            );
            assert!(
                Instant::now() < deadline,
                "moto_server did not listen in 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // moto takes unsigned requests.
        let made = reqwest::blocking::Client::new()
            .put(moto.url(""))
            .send()
            .unwrap();
        assert!(made.status().is_success(), "{}", made.status());
        std::fs::write(
            moto.dir.path().join("rclone.conf"),
            format!(
                "[s3]\ntype = s3\nprovider = Other\nendpoint = http://127.0.0.1:{port}\n\
                 access_key_id = KEY\nsecret_access_key = secret\n"
            ),
        )
        .unwrap();
        moto
    }

    /// The address of `key` in the bucket.
    fn url(&self, key: &str) -> String {
        format!("http://127.0.0.1:{}/{BUCKET}/{key}", self.port)
    }

    fn rclone(&self, args: &[&str]) -> Command {
        rclone_on(&self.dir.path().join("rclone.conf"), args)
    }

    /// Writes a file below `folder` of the bucket as another S3 client
    /// would, from anywhere.
    fn writer(&self, folder: &str) -> impl Fn(&str, &[u8]) + Send + Sync + 'static {
        let config = self.dir.path().join("rclone.conf");
        let folder = folder.to_owned();
        move |path, content| put_with(&config, &format!("{folder}/{path}"), content)
    }

    /// A replica of the folder `folder` of the bucket through `rclone`
    /// (with `AWS_CA_BUNDLE` cleared, see `without_ca_bundle`).
    fn replica(&self, rclone: PathBuf, folder: &str) -> RcloneReplica {
        let binary =
            super::tests::without_ca_bundle(self.dir.path(), &format!("rclone-{folder}"), &rclone);
        let settings = RclonePairSettings {
            config: Some(self.dir.path().join("rclone.conf")),
            binary: Some(binary),
        };
        let flags = ["--low-level-retries", "1"];
        let replica =
            RcloneReplica::with_flags(&format!("s3:{BUCKET}/{folder}"), &settings, 4, &flags)
                .unwrap();
        replica.mark_root().unwrap();
        let features = replica.features().unwrap();
        assert!(!features.moves && features.server_copy, "{features:?}");
        replica
    }

    /// The object `key`; `None` when there is none.
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        let key = format!("s3:{BUCKET}/{key}");
        // `cat` of nothing prints nothing; `lsf` of a file names it.
        let listed = self.rclone(&["lsf", &key]).output().unwrap();
        if listed.stdout.is_empty() {
            return None;
        }
        let out = self.rclone(&["cat", &key]).output().unwrap();
        assert!(out.status.success(), "rclone cat {key}");
        Some(out.stdout)
    }
}

/// An rclone command (Debian's) on `config`: another S3 client.
fn rclone_on(config: &std::path::Path, args: &[&str]) -> Command {
    let mut command = Command::new(super::tests::debian_rclone());
    command
        .env_remove("AWS_CA_BUNDLE")
        .arg("--config")
        .arg(config)
        .args(args);
    command
}

/// Writes `content` at `key` of the bucket through rclone's CLI.
fn put_with(config: &std::path::Path, key: &str, content: &[u8]) {
    use std::io::Write;
    let mut rcat = rclone_on(config, &["rcat", &format!("s3:{BUCKET}/{key}")])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    rcat.stdin.take().unwrap().write_all(content).unwrap();
    assert!(rcat.wait().unwrap().success(), "rclone rcat {key}");
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

/// Both rclone versions: Debian's 1.60 and a current one.
fn rclones() -> [(&'static str, PathBuf); 2] {
    [
        ("debian", super::tests::debian_rclone()),
        ("current", super::tests::current_rclone()),
    ]
}

fn rel(s: &str) -> RelPath {
    RelPath::new(s).unwrap()
}

/// Writes `content` at `path` where nothing is; the version written.
fn create(replica: &RcloneReplica, path: &str, content: &[u8]) -> Expect {
    let hash = ContentHash::of_bytes(content);
    replica
        .write(
            &rel(path),
            &mut &content[..],
            &hash,
            1_000,
            None,
            &Expect::Absent,
        )
        .unwrap();
    replica.stat(&rel(path)).unwrap()
}

/// What the trash of `replica` holds.
fn trashed(replica: &RcloneReplica) -> Vec<Vec<u8>> {
    let below = ".prism-sync/trash";
    let mut found: Vec<Vec<u8>> = replica
        .list_below(below, true)
        .unwrap()
        .unwrap_or_default()
        .into_iter()
        .filter(|item| !item.is_dir)
        .map(|item| {
            let name = item.path.trim_start_matches(below).trim_start_matches('/');
            let mut bytes = Vec::new();
            replica
                .open_trashed(&rel(name))
                .unwrap()
                .read_to_end(&mut bytes)
                .unwrap();
            bytes
        })
        .collect();
    found.sort();
    found
}

#[test]
fn a_trash_move_on_s3_is_a_copy_a_recheck_and_a_removal_of_the_source() {
    let moto = Moto::start();
    for (name, rclone) in rclones() {
        let replica = moto.replica(rclone, name);
        let expect = create(&replica, "a.md", b"old\n");
        let before = replica.client.calls_made();
        let trashed_as = replica
            .remove_naming_trash(&rel("a.md"), &expect)
            .unwrap()
            .expect("the file went to the trash");
        let calls: Vec<(String, u64)> = replica
            .client
            .calls_made()
            .into_iter()
            .map(|(method, n)| {
                let earlier = before.get(&method).copied().unwrap_or(0);
                (method, n - earlier)
            })
            .filter(|(_, n)| *n > 0)
            .collect();
        let count = |method: &str, n: u64| (method.to_owned(), n);
        // A look before the copy, and one after it.
        assert_eq!(
            calls,
            [
                count("operations/copyfile", 1),
                count("operations/deletefile", 1),
                count("operations/stat", 2),
            ],
            "{name}"
        );
        assert_eq!(moto.get(&format!("{name}/a.md")), None, "{name}");
        let mut bytes = Vec::new();
        replica
            .open_trashed(&trashed_as)
            .unwrap()
            .read_to_end(&mut bytes)
            .unwrap();
        assert_eq!(bytes, b"old\n", "{name}");
    }
}

#[test]
fn a_version_written_while_a_trash_move_copies_on_s3_is_kept_and_the_step_re_planned() {
    let moto = Moto::start();
    for (name, rclone) in rclones() {
        let replica = moto.replica(rclone, name);
        // Another S3 client writes each file right after the copy of the
        // planned version: a removal, a replacing commit and a rename.
        let theirs = |path: &str| format!("theirs: {path}\n").into_bytes();
        let write = moto.writer(name);
        *replica.after_copy.locked() = Some(Box::new(move |path| write(path, &theirs(path))));

        let expect = create(&replica, "removed.md", b"planned removed\n");
        let removed = replica.remove(&rel("removed.md"), &expect);

        let expect = create(&replica, "replaced.md", b"planned replaced\n");
        let ours = b"ours\n";
        let staged = replica
            .stage(
                &rel("replaced.md"),
                &mut &ours[..],
                &ContentHash::of_bytes(ours),
                1_000,
                None,
            )
            .unwrap();
        let replaced = replica.commit_staged(&staged, &expect);
        replica.discard(staged);

        let expect = create(&replica, "renamed.md", b"planned renamed\n");
        let renamed = replica.rename(&rel("renamed.md"), &rel("moved.md"), &expect);

        for outcome in [removed, replaced.map(|_| ()), renamed] {
            assert!(
                matches!(outcome, Err(ReplicaError::Changed { .. })),
                "{name}: {outcome:?}"
            );
        }
        for path in ["removed.md", "replaced.md", "renamed.md"] {
            assert_eq!(
                moto.get(&format!("{name}/{path}")),
                Some(format!("theirs: {path}\n").into_bytes()),
                "{name}: the other writer's version stays"
            );
        }
        // The planned versions are kept: in the trash, and where the
        // rename copied one.
        assert_eq!(
            trashed(&replica),
            [
                b"planned removed\n".to_vec(),
                b"planned replaced\n".to_vec()
            ],
            "{name}"
        );
        assert_eq!(
            moto.get(&format!("{name}/moved.md")).as_deref(),
            Some(&b"planned renamed\n"[..]),
            "{name}"
        );
    }
}
