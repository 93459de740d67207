//! The SFTP replica on its own, against the real sshd: round trips of every
//! operation, host-key refusal, and hostile names on the server.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use prism_sync::fsops::Expect;
use prism_sync::model::{BaseEntry, BaseTree, ContentHash, RelPath, Scope};
use prism_sync::remote::{Replica, RootState, SftpReplica, SftpTarget};
use prism_sync::tracker::ignore::IgnoreRules;

use crate::sshd::Sshd;

fn rel(s: &str) -> RelPath {
    RelPath::new(s).unwrap()
}

/// A replica of `served/below` that trusts the server and logs in with the
/// harness's key.
fn replica(server: &Sshd, below: &str) -> SftpReplica {
    let known_hosts = server.scratch("client").join("known_hosts");
    server.write_known_hosts(&known_hosts);
    replica_with(server, below, &known_hosts)
}

fn replica_with(server: &Sshd, below: &str, known_hosts: &Path) -> SftpReplica {
    SftpReplica::new(SftpTarget {
        user: Some(server.user.clone()),
        host: "127.0.0.1".into(),
        port: server.port(),
        path: server.served().join(below).display().to_string(),
        known_hosts: Some(known_hosts.to_path_buf()),
        identity_file: Some(server.client_key()),
        config_dir: None,
    })
}

fn no_rules() -> IgnoreRules {
    let dir = tempfile::tempdir().unwrap();
    IgnoreRules::load(dir.path(), &[]).unwrap()
}

fn write(
    replica: &SftpReplica,
    path: &str,
    text: &str,
    expect: &Expect,
) -> prism_sync::model::SideEntry {
    replica
        .write(
            &rel(path),
            &mut text.as_bytes(),
            &ContentHash::of_bytes(text.as_bytes()),
            1_600_000_000_123_456_789,
            expect,
        )
        .unwrap()
}

fn base_of(listing: &prism_sync::remote::Listing) -> BaseTree {
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

fn files_below(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                stack.push(path);
            } else {
                out.push(fs::read_to_string(&path).unwrap_or_default());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn every_operation_round_trips_and_replaced_versions_go_to_the_server_trash() {
    let server = Sshd::start();
    let served = server.served().join("root");
    let remote = replica(&server, "root");
    assert_eq!(remote.root_state().unwrap(), RootState::Missing);
    remote.mark_root().unwrap();
    assert_eq!(remote.root_state().unwrap(), RootState::Ready);

    // Writes land under their name with the source's mtime (in seconds).
    let a = write(&remote, "a.txt", "one\n", &Expect::Absent);
    assert_eq!(fs::read_to_string(served.join("a.txt")).unwrap(), "one\n");
    assert_eq!(
        fs::metadata(served.join("a.txt")).unwrap().mtime(),
        1_600_000_000
    );
    assert!(
        a.version.as_deref().unwrap().starts_with("4:1600000000:"),
        "{a:?}"
    );
    remote.mkdir(&rel("dir")).unwrap();
    remote.mkdir(&rel("dir")).unwrap();
    write(&remote, "dir/b.txt", "bee\n", &Expect::Absent);

    // A listing hashes what it has not seen; with the base it reads nothing.
    let ignore = no_rules();
    let listing = remote
        .list(&Scope::Full, &BaseTree::new(), &ignore)
        .unwrap();
    let paths: Vec<&str> = listing.tree.keys().map(|p| p.as_str()).collect();
    assert_eq!(paths, ["a.txt", "dir", "dir/b.txt"], "{listing:?}");
    assert_eq!(listing.hashed_files, 2);
    assert_eq!(
        listing.tree[&rel("a.txt")].entry.file().unwrap().hash,
        ContentHash::of_bytes(b"one\n")
    );
    let base = base_of(&listing);
    let again = remote.list(&Scope::Full, &base, &ignore).unwrap();
    assert_eq!(again.hashed_files, 0, "unchanged files are not downloaded");
    let scoped = remote
        .list(&Scope::Paths(vec![rel("dir")]), &base, &ignore)
        .unwrap();
    assert_eq!(scoped.tree.len(), 2, "{scoped:?}");

    let mut content = String::new();
    remote
        .open(&rel("dir/b.txt"))
        .unwrap()
        .read_to_string(&mut content)
        .unwrap();
    assert_eq!(content, "bee\n");

    // A replacement checks the expectation and keeps the old version.
    let expect_a = Expect::File {
        size: 4,
        mtime_ns: 1_600_000_000_000_000_000,
    };
    write(&remote, "a.txt", "two!\n", &expect_a);
    assert_eq!(fs::read_to_string(served.join("a.txt")).unwrap(), "two!\n");
    let trash = served.join(".prism-sync/trash");
    assert_eq!(files_below(&trash), ["one\n"]);
    let stale = remote
        .write(
            &rel("a.txt"),
            &mut &b"three"[..],
            &ContentHash::of_bytes(b"three"),
            0,
            &expect_a,
        )
        .unwrap_err();
    assert!(stale.is_change(), "{stale}");
    assert_eq!(fs::read_to_string(served.join("a.txt")).unwrap(), "two!\n");
    // Bytes that do not hash as promised replace nothing.
    let wrong = remote
        .write(
            &rel("new.txt"),
            &mut &b"abc"[..],
            &ContentHash::of_bytes(b"xyz"),
            0,
            &Expect::Absent,
        )
        .unwrap_err();
    assert!(wrong.is_change(), "{wrong}");
    assert!(!served.join("new.txt").exists());

    // A folder moves in one rename; an existing target is never replaced.
    remote
        .rename(&rel("dir"), &rel("moved"), &Expect::Dir)
        .unwrap();
    assert_eq!(
        fs::read_to_string(served.join("moved/b.txt")).unwrap(),
        "bee\n"
    );
    write(&remote, "c.txt", "sea\n", &Expect::Absent);
    let clash = remote
        .rename(
            &rel("c.txt"),
            &rel("a.txt"),
            &Expect::File {
                size: 4,
                mtime_ns: 1_600_000_000_000_000_000,
            },
        )
        .unwrap_err();
    assert!(clash.is_change(), "{clash}");
    assert_eq!(fs::read_to_string(served.join("a.txt")).unwrap(), "two!\n");
    assert_eq!(fs::read_to_string(served.join("c.txt")).unwrap(), "sea\n");

    // Removing moves to the trash; an emptied folder simply goes.
    remote
        .remove(
            &rel("moved/b.txt"),
            &Expect::File {
                size: 4,
                mtime_ns: 1_600_000_000_000_000_000,
            },
        )
        .unwrap();
    remote.remove(&rel("moved"), &Expect::Dir).unwrap();
    assert!(!served.join("moved").exists());
    assert_eq!(files_below(&trash), ["bee\n", "one\n"]);
    // Purging removes only batches older than the retention.
    fs::create_dir_all(trash.join("20000101-0000/old")).unwrap();
    fs::write(trash.join("20000101-0000/old/x.txt"), "ancient\n").unwrap();
    assert_eq!(remote.purge_trash(Duration::from_secs(3600)).unwrap(), 1);
    assert!(!trash.join("20000101-0000").exists());
    assert_eq!(files_below(&trash), ["bee\n", "one\n"]);

    // The lease is exclusive until dropped.
    let held = remote.lease("laptop", Duration::from_secs(60)).unwrap();
    let other = replica(&server, "root");
    let busy = other
        .lease("desktop", Duration::from_secs(60))
        .err()
        .unwrap();
    assert!(busy.to_string().contains("laptop"), "{busy}");
    drop(held);
    let mut lease = other
        .lease("desktop", Duration::from_secs(60))
        .unwrap()
        .unwrap();
    lease.renew().unwrap();
    assert!(
        fs::read_to_string(served.join(".prism-sync/lease"))
            .unwrap()
            .contains("desktop")
    );
    drop(lease);
    assert!(!served.join(".prism-sync/lease").exists());
}

use std::io::Read;

#[test]
fn an_unknown_host_key_is_refused_with_its_fingerprint_and_the_command_to_trust_it() {
    let server = Sshd::start();
    let known_hosts = server.scratch("client").join("empty_known_hosts");
    fs::write(&known_hosts, "").unwrap();
    let remote = replica_with(&server, "", &known_hosts);
    let err = remote.root_state().unwrap_err().to_string();
    let command = format!(
        "ssh-keyscan -p {} 127.0.0.1 >> {}",
        server.port(),
        known_hosts.display()
    );
    assert!(err.contains(&server.fingerprint()), "{err}");
    assert!(err.contains(&command), "{err}");
    // A known_hosts file that does not exist is the same: nothing trusted.
    let missing = server.scratch("client").join("no_such_file");
    let err = replica_with(&server, "", &missing)
        .root_state()
        .unwrap_err();
    assert!(err.to_string().contains("is not known"), "{err}");
}

#[test]
fn a_changed_host_key_is_refused_loudly_and_nothing_is_written() {
    let server = Sshd::start();
    let client = server.scratch("client");
    let other_key = client.join("other_host_key");
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other_key)
        .status()
        .unwrap();
    assert!(status.success());
    let other = fs::read_to_string(other_key.with_extension("pub")).unwrap();
    let known_hosts = client.join("known_hosts");
    fs::write(
        &known_hosts,
        format!("[127.0.0.1]:{} {}\n", server.port(), other.trim()),
    )
    .unwrap();
    let remote = replica_with(&server, "root", &known_hosts);
    let err = remote.mark_root().unwrap_err().to_string();
    assert!(err.contains("CHANGED"), "{err}");
    assert!(err.contains(&server.fingerprint()), "{err}");
    assert!(err.contains("ssh-keygen -R"), "{err}");
    assert!(!server.served().join("root").exists());
}

#[test]
fn hostile_names_and_symlinks_on_the_server_are_skipped_with_a_note_never_followed() {
    let server = Sshd::start();
    let served = server.served().join("root");
    let remote = replica(&server, "root");
    remote.mark_root().unwrap();
    let outside = server.scratch("outside");
    fs::write(outside.join("secret.txt"), "outside the root\n").unwrap();
    fs::write(served.join("ok.txt"), "fine\n").unwrap();
    fs::write(served.join("bad\nname.txt"), "newline\n").unwrap();
    fs::write(served.join("back\\slash.txt"), "backslash\n").unwrap();
    std::os::unix::fs::symlink(&outside, served.join("escape")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", served.join("passwd.txt")).unwrap();
    {
        use std::os::unix::ffi::OsStrExt;
        let name = std::ffi::OsStr::from_bytes(b"latin1-\xe9.txt");
        fs::write(served.join(name), "not utf-8\n").unwrap();
    }

    let listing = remote
        .list(&Scope::Full, &BaseTree::new(), &no_rules())
        .unwrap();
    let paths: Vec<&str> = listing.tree.keys().map(|p| p.as_str()).collect();
    assert_eq!(paths, ["ok.txt"], "{listing:?}");
    let problems: Vec<&str> = listing
        .problems
        .iter()
        .map(|p| p.message.as_str())
        .collect();
    let has = |text: &str| problems.iter().any(|p| p.contains(text));
    assert!(has("escape: symbolic links are not synced"), "{problems:?}");
    assert!(
        has("passwd.txt: symbolic links are not synced"),
        "{problems:?}"
    );
    assert!(has("bad\\nname.txt"), "{problems:?}");
    assert!(has("back\\\\slash.txt"), "{problems:?}");
    assert!(has("latin1-"), "{problems:?}");
    assert_eq!(listing.hashed_files, 1, "only ok.txt was read");
    // A scope reaching through the symbolic link finds nothing there.
    let through = remote
        .list(
            &Scope::Paths(vec![rel("escape/secret.txt")]),
            &BaseTree::new(),
            &no_rules(),
        )
        .unwrap();
    assert!(through.tree.is_empty(), "{through:?}");
    // Writing or removing through the link is refused: what is there is
    // not what a plan could expect.
    let err = remote.remove(&rel("escape"), &Expect::Dir).unwrap_err();
    assert!(err.is_change(), "{err}");
    assert_eq!(
        fs::read_to_string(outside.join("secret.txt")).unwrap(),
        "outside the root\n"
    );
}

#[test]
fn after_the_server_goes_away_and_comes_back_the_next_call_reconnects() {
    let mut server = Sshd::start();
    let remote = replica(&server, "root");
    remote.mark_root().unwrap();
    write(&remote, "a.txt", "one\n", &Expect::Absent);
    let ignore = no_rules();
    assert_eq!(
        remote
            .list(&Scope::Full, &BaseTree::new(), &ignore)
            .unwrap()
            .tree
            .len(),
        1
    );
    server.stop();
    let err = remote
        .list(&Scope::Full, &BaseTree::new(), &ignore)
        .unwrap_err();
    assert!(err.to_string().contains("127.0.0.1"), "{err}");
    server.restart();
    let listing = remote
        .list(&Scope::Full, &BaseTree::new(), &ignore)
        .unwrap();
    assert_eq!(listing.tree.len(), 1, "{listing:?}");
    write(&remote, "b.txt", "two\n", &Expect::Absent);
    assert!(server.served().join("root/b.txt").exists());
}
