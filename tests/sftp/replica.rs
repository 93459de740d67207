//! The SFTP replica on its own, against the real sshd: what is specific to
//! SFTP (host keys, sessions, symbolic links and modes on the server, mtimes
//! in seconds). What every backend must do is in the conformance suite
//! (`tests/conformance.rs`).

use std::fs;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use prism_sync::fsops::Expect;
use prism_sync::model::{BaseEntry, BaseTree, ContentHash, RelPath, Scope};
use prism_sync::remote::{Replica, SftpReplica, SftpTarget};
use prism_sync::tracker::ignore::IgnoreRules;

use crate::files::contents_below;
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
    replica_sized(server, below, known_hosts, 4)
}

/// A replica that opens at most `sessions` SSH sessions at once.
fn replica_sized(server: &Sshd, below: &str, known_hosts: &Path, sessions: usize) -> SftpReplica {
    SftpReplica::new(SftpTarget {
        user: Some(server.user.clone()),
        host: "127.0.0.1".into(),
        port: server.port(),
        path: server.served().join(below).display().to_string(),
        known_hosts: Some(known_hosts.to_path_buf()),
        identity_file: Some(server.client_key()),
        config_dir: None,
        sessions,
        compression: false,
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
            None,
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

/// What the conformance suite cannot say for every backend: SFTP keeps
/// the source's mtime (in seconds), and a version names size and mtime.
#[test]
fn a_written_file_keeps_its_mtime_in_seconds_and_its_version_names_size_and_mtime() {
    let server = Sshd::start();
    let served = server.served().join("root");
    let remote = replica(&server, "root");
    remote.mark_root().unwrap();
    let a = write(&remote, "a.txt", "one\n", &Expect::Absent);
    assert_eq!(fs::read_to_string(served.join("a.txt")).unwrap(), "one\n");
    assert_eq!(
        fs::metadata(served.join("a.txt")).unwrap().mtime(),
        1_600_000_000
    );
    assert!(
        a.version_text()
            .as_deref()
            .unwrap()
            .starts_with("4:1600000000:"),
        "{a:?}"
    );
    let listing = remote
        .list(&Scope::Full, &BaseTree::new(), &no_rules())
        .unwrap();
    assert_eq!(listing.tree[&rel("a.txt")].version, a.version);
}

/// Two agents upload same-sized versions with the same mtime (edits made
/// in the same second): size and mtime look the same, the version token
/// (its atime nonce) does not, and a step planned from the listing of the
/// first refuses the second, even in an agent restarted since it listed
/// (a replica of its own, which remembers nothing of the listing).
#[test]
fn a_same_size_same_second_upload_by_another_agent_is_a_change() {
    let server = Sshd::start();
    let served = server.served().join("twins");
    let first = replica(&server, "twins");
    first.mark_root().unwrap();
    write(&first, "f.txt", "version 1\n", &Expect::Absent);
    let listed = first
        .list(&Scope::Full, &BaseTree::new(), &no_rules())
        .unwrap()
        .tree[&rel("f.txt")]
        .clone();
    let other = replica(&server, "twins");
    let seen_by_other = Expect::of_version(Some(&listed.entry), listed.version_text().as_deref());
    let theirs = write(&other, "f.txt", "version 2\n", &seen_by_other);
    assert_eq!(theirs.entry.file().unwrap().size, 10);
    assert_eq!(
        theirs.entry.file().unwrap().mtime_ns,
        listed.entry.file().unwrap().mtime_ns
    );
    assert_ne!(theirs.version, listed.version);

    let restarted = replica(&server, "twins");
    let planned = Expect::of_version(Some(&listed.entry), listed.version_text().as_deref());
    let refused = restarted
        .write(
            &rel("f.txt"),
            &mut &b"version 3\n"[..],
            &ContentHash::of_bytes(b"version 3\n"),
            1_600_000_000_123_456_789,
            None,
            &planned,
        )
        .unwrap_err();
    assert!(refused.is_change(), "{refused}");
    assert!(
        restarted
            .remove(&rel("f.txt"), &planned)
            .unwrap_err()
            .is_change()
    );
    assert_eq!(
        fs::read_to_string(served.join("f.txt")).unwrap(),
        "version 2\n"
    );
    // Nothing staged is left beside it.
    let mut names: Vec<_> = fs::read_dir(&served)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, [".prism-sync", "f.txt"]);
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
fn symlinks_on_the_server_are_held_with_a_problem_never_followed() {
    let server = Sshd::start();
    let served = server.served().join("root");
    let remote = replica(&server, "root");
    remote.mark_root().unwrap();
    let outside = server.scratch("outside");
    fs::write(outside.join("secret.txt"), "outside the root\n").unwrap();
    fs::write(served.join("ok.txt"), "fine\n").unwrap();
    std::os::unix::fs::symlink(&outside, served.join("escape")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", served.join("passwd.txt")).unwrap();

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
    let skipped = |path: &str| {
        listing.problems.iter().any(|p| {
            p.path.as_ref().is_some_and(|p| p.as_str() == path)
                && p.message.starts_with("a symbolic link")
        })
    };
    assert!(skipped("escape"), "{problems:?}");
    assert!(skipped("passwd.txt"), "{problems:?}");
    // Held, as on a local folder: a folder replaced by a link on the
    // server must not read as deleted.
    assert_eq!(listing.held, [rel("escape"), rel("passwd.txt")]);
    assert_eq!(listing.hashed_files, 1, "only ok.txt was read");
    // A scope reaching through the symbolic link finds nothing there, and
    // holds the link.
    let through = remote
        .list(
            &Scope::Paths(vec![rel("escape/secret.txt")]),
            &BaseTree::new(),
            &no_rules(),
        )
        .unwrap();
    assert!(through.tree.is_empty(), "{through:?}");
    assert_eq!(through.held, [rel("escape")]);
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

/// How many SSH logins the server accepted so far: one per session.
fn logins(server: &Sshd) -> usize {
    server.log().matches("Accepted publickey").count()
}

/// Holds every reader at its first read until it is opened, counting the
/// readers waiting there.
struct Gate {
    state: Mutex<(usize, bool)>,
    changed: Condvar,
}

impl Gate {
    fn new() -> Gate {
        Gate {
            state: Mutex::new((0, false)),
            changed: Condvar::new(),
        }
    }

    /// Waits (at most 10 s) until `n` readers arrived; returns how many did.
    fn wait_for(&self, n: usize) -> usize {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut state = self.state.lock().unwrap();
        while state.0 < n && Instant::now() < deadline {
            state = self
                .changed
                .wait_timeout(state, Duration::from_millis(50))
                .unwrap()
                .0;
        }
        state.0
    }

    fn open(&self) {
        self.state.lock().unwrap().1 = true;
        self.changed.notify_all();
    }
}

struct GatedReader<'a> {
    gate: &'a Gate,
    data: &'a [u8],
    arrived: bool,
}

impl Read for GatedReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if !self.arrived {
            self.arrived = true;
            let mut state = self.gate.state.lock().unwrap();
            state.0 += 1;
            self.gate.changed.notify_all();
            while !state.1 {
                state = self.gate.changed.wait(state).unwrap();
            }
        }
        self.data.read(buf)
    }
}

#[test]
fn parallel_uploads_each_get_a_session_of_their_own_up_to_the_pool_size() {
    let server = Sshd::start();
    let known_hosts = server.scratch("client").join("known_hosts");
    server.write_known_hosts(&known_hosts);
    let remote = replica_sized(&server, "root", &known_hosts, 4);
    remote.mark_root().unwrap();
    assert_eq!(logins(&server), 1, "{}", server.log());
    let gate = Gate::new();
    let contents: Vec<String> = (0..6).map(|i| format!("file {i}\n")).collect();
    std::thread::scope(|scope| {
        let uploads: Vec<_> = contents
            .iter()
            .enumerate()
            .map(|(i, text)| {
                let (remote, gate) = (&remote, &gate);
                scope.spawn(move || {
                    let mut reader = GatedReader {
                        gate,
                        data: text.as_bytes(),
                        arrived: false,
                    };
                    remote.write(
                        &rel(&format!("f{i}.txt")),
                        &mut reader,
                        &ContentHash::of_bytes(text.as_bytes()),
                        0,
                        None,
                        &Expect::Absent,
                    )
                })
            })
            .collect();
        // Four uploads stream at once, each holding a session; the other
        // two wait for one instead of sharing it or opening a fifth.
        let arrived = gate.wait_for(4);
        std::thread::sleep(Duration::from_millis(300));
        let arrived_late = gate.wait_for(5);
        let sessions = logins(&server);
        gate.open();
        for upload in uploads {
            upload.join().unwrap().unwrap();
        }
        assert_eq!((arrived, arrived_late), (4, 4), "uploads streaming at once");
        assert_eq!(sessions, 4, "sessions open while they streamed");
    });
    assert_eq!(logins(&server), 4, "the sessions are reused, not remade");
    for (i, text) in contents.iter().enumerate() {
        let path = server.served().join(format!("root/f{i}.txt"));
        assert_eq!(&fs::read_to_string(path).unwrap(), text);
    }
}

#[test]
fn a_listing_on_many_sessions_equals_one_on_a_single_session() {
    let server = Sshd::start();
    let served = server.served().join("root");
    let known_hosts = server.scratch("client").join("known_hosts");
    server.write_known_hosts(&known_hosts);
    let single = replica_sized(&server, "root", &known_hosts, 1);
    single.mark_root().unwrap();
    for d in 0..12 {
        let dir = served.join(format!("d{d:02}/sub"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..8 {
            fs::write(dir.join(format!("f{f}.txt")), format!("{d} {f}\n")).unwrap();
            fs::write(dir.parent().unwrap().join(format!("g{f}.txt")), "g\n").unwrap();
        }
        // Hostile entries deep in the tree are still caught by every worker.
        fs::write(dir.join("bad\nname.txt"), "x").unwrap();
        std::os::unix::fs::symlink("/etc", dir.join("escape")).unwrap();
    }
    let ignore = no_rules();
    let before = logins(&server);
    let one = single
        .list(&Scope::Full, &BaseTree::new(), &ignore)
        .unwrap();
    assert_eq!(logins(&server), before, "a pool of one reuses its session");
    let many = replica_sized(&server, "root", &known_hosts, 4);
    let before = logins(&server);
    let four = many.list(&Scope::Full, &BaseTree::new(), &ignore).unwrap();
    // Sessions are made on threads of their own, and one may log in only
    // after the listing ended without it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while logins(&server) - before < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let used = logins(&server) - before;
    assert!(
        (2..=4).contains(&used),
        "{used} sessions opened for the listing"
    );

    assert_eq!(one.tree.len(), 12 * (2 + 8 + 8), "{one:?}");
    assert_eq!(one.tree, four.tree);
    assert_eq!(one.problems, four.problems);
    assert_eq!(one.held, four.held);
    assert_eq!(one.hashed_files, four.hashed_files);
    assert_eq!(one.problems.len(), 24, "{:?}", one.problems);
    // The order is the paths' order, whichever worker found what.
    let paths: Vec<_> = four.problems.iter().map(|p| p.path.clone()).collect();
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(paths, sorted);
    // A scoped listing walks below its folders the same way.
    let scoped = many
        .list(&Scope::Paths(vec![rel("d03")]), &base_of(&four), &ignore)
        .unwrap();
    assert_eq!(scoped.tree.len(), 2 + 8 + 8, "{scoped:?}");
    assert_eq!(scoped.hashed_files, 0);
}

/// Seventy folders (three batches of the pipelined listing) of three
/// files each, one of them with 250 files (three pages of names), one
/// folder inside another and a hostile name: every way a folder can end.
fn batched_tree(served: &Path) {
    for d in 0..70 {
        let dir = served.join(format!("d{d:02}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..3 {
            fs::write(dir.join(format!("f{f}.txt")), format!("{d} {f}\n")).unwrap();
        }
    }
    for f in 0..250 {
        fs::write(served.join(format!("d07/many{f:03}")), "m").unwrap();
    }
    fs::create_dir_all(served.join("d08/inner/empty")).unwrap();
    fs::write(served.join("d09/bad\nname.txt"), "x").unwrap();
}

#[test]
fn folders_listed_in_batches_equal_folders_listed_one_at_a_time() {
    // One server lets a session open the second channel the batched
    // listing speaks on; the other allows one channel, so its folders are
    // listed one at a time on libssh2's.
    let batched = Sshd::start();
    let single = Sshd::start_one_channel_per_connection();
    let ignore = no_rules();
    let mut listings = Vec::new();
    for server in [&batched, &single] {
        batched_tree(&server.served().join("root"));
        let replica = replica(server, "root");
        replica.mark_root().unwrap();
        listings.push(
            replica
                .list(&Scope::Full, &BaseTree::new(), &ignore)
                .unwrap(),
        );
    }
    assert!(
        single.log().contains("no more sessions"),
        "the second server refused a second channel:\n{}",
        single.log()
    );
    // The first server's connections that listed opened a second channel.
    let second_channels = |server: &Sshd| {
        let log = server.log();
        let lines = log.lines();
        lines
            .filter(|l| l.contains("Starting session: subsystem 'sftp'") && l.ends_with(" id 1"))
            .count()
    };
    assert!(second_channels(&batched) >= 1, "{}", batched.log());
    assert_eq!(second_channels(&single), 0);
    let (many, one) = (&listings[0], &listings[1]);
    assert_eq!(many.tree.len(), 70 * 4 + 250 + 2);
    assert!(many.tree.contains_key(&rel("d07/many249")));
    assert!(many.tree.contains_key(&rel("d08/inner/empty")));
    // The trees were written a moment apart: their times differ.
    let shape = |listing: &prism_sync::remote::Listing| -> Vec<String> {
        let entries = listing.tree.iter();
        entries
            .map(|(path, side)| format!("{path} {:?}", side.entry.file().map(|f| f.hash)))
            .collect()
    };
    assert!(shape(many) == shape(one), "the listings differ");
    assert_eq!(many.problems, one.problems);
    assert_eq!(many.problems.len(), 1, "{:?}", many.problems);
    assert_eq!(many.held, one.held);
}

/// A relay to the server on a port of its own that holds every
/// connection but the first for `delay` before passing it on, as a busy
/// server's handshakes take their time. Returns the relay's port.
fn slow_relay(server_port: u16, delay: Duration) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for (n, client) in listener.incoming().enumerate() {
            let Ok(client) = client else { return };
            std::thread::spawn(move || {
                if n > 0 {
                    std::thread::sleep(delay);
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", server_port)) else {
                    return;
                };
                let (mut up_from, mut up_to) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut up_from, &mut up_to);
                    let _ = up_to.shutdown(Shutdown::Write);
                });
                let (mut down_from, mut down_to) = (server, client);
                let _ = std::io::copy(&mut down_from, &mut down_to);
                let _ = down_to.shutdown(Shutdown::Write);
            });
        }
    });
    port
}

#[test]
fn a_listing_is_not_held_by_sessions_still_connecting() {
    let server = Sshd::start();
    let served = server.served().join("root");
    for d in 0..20 {
        let dir = served.join(format!("d{d:02}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..5 {
            fs::write(dir.join(format!("f{f}.txt")), format!("{d} {f}\n")).unwrap();
        }
    }
    // Every session after the first takes 5 s to come up: a listing on
    // four sessions goes on with the one it has meanwhile.
    let delay = Duration::from_secs(5);
    let port = slow_relay(server.port(), delay);
    let known_hosts = server.scratch("client").join("known_hosts");
    let line = format!("[127.0.0.1]:{port} {}\n", server.host_key_line());
    fs::write(&known_hosts, line).unwrap();
    let remote = SftpReplica::new(SftpTarget {
        user: Some(server.user.clone()),
        host: "127.0.0.1".into(),
        port,
        path: served.display().to_string(),
        known_hosts: Some(known_hosts),
        identity_file: Some(server.client_key()),
        config_dir: None,
        sessions: 4,
        compression: false,
    });
    remote.mark_root().unwrap();
    let started = Instant::now();
    let listing = remote
        .list(&Scope::Full, &BaseTree::new(), &no_rules())
        .unwrap();
    let took = started.elapsed();
    assert_eq!(listing.tree.len(), 20 * (1 + 5), "{listing:?}");
    assert_eq!(listing.hashed_files, 100);
    assert!(
        took < delay,
        "the listing waited {took:?} for sessions still connecting"
    );
}

#[test]
fn the_lease_is_renewed_while_every_pooled_session_is_busy() {
    // One pooled session, held by a download for its whole length: a
    // renewal that waited for it would let the lease expire under a long
    // transfer (and here, on the same thread, would wait for itself).
    let server = Sshd::start();
    let known_hosts = server.scratch("client").join("known_hosts");
    server.write_known_hosts(&known_hosts);
    let remote = replica_sized(&server, "root", &known_hosts, 1);
    remote.mark_root().unwrap();
    write(&remote, "big.bin", "contents\n", &Expect::Absent);
    let mut lease = remote
        .lease("laptop", Duration::from_secs(60))
        .unwrap()
        .expect("SFTP remotes take a lease");
    let lease_file = server.served().join("root/.prism-sync/lease");

    let stamp = |path: &Path| {
        let meta = fs::metadata(path).unwrap();
        (meta.mtime(), meta.mtime_nsec())
    };
    let before = stamp(&lease_file);
    let mut reading = remote.open(&rel("big.bin")).unwrap();
    let mut first = [0u8; 4];
    reading.read_exact(&mut first).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    lease.renew().expect("renewed on a session of its own");
    assert_ne!(stamp(&lease_file), before, "the lease file was rewritten");
    assert!(
        fs::read_to_string(&lease_file).unwrap().contains("laptop"),
        "still ours"
    );
    let mut rest = String::new();
    reading.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "ents\n");
    drop(reading);
    drop(lease);
    assert!(!lease_file.exists(), "released");
}

#[test]
fn modes_are_set_exactly_changed_in_place_and_kept_in_the_trash() {
    use prism_sync::model::{Entry, Mode};
    use std::os::unix::fs::PermissionsExt;
    let server = Sshd::start();
    let served = server.served().join("root");
    let remote = replica(&server, "root");
    remote.mark_root().unwrap();
    assert!(remote.capabilities().modes);
    let mode_at = |rel: &str| fs::symlink_metadata(served.join(rel)).unwrap().mode() & 0o7777;
    let bits = |b: u32| Some(Mode::from_bits(b));
    let put = |path: &str, text: &str, mode: u32, expect: &Expect| {
        remote
            .write(
                &rel(path),
                &mut text.as_bytes(),
                &ContentHash::of_bytes(text.as_bytes()),
                1_600_000_000_000_000_000,
                bits(mode),
                expect,
            )
            .unwrap()
    };

    // Folders and files get exactly their mode: narrower than the server's
    // default, and wider than its umask would leave (0o666, 0o777).
    remote.mkdir(&rel("vault"), bits(0o700)).unwrap();
    remote.mkdir(&rel("team"), bits(0o777)).unwrap();
    let key = put("vault/key", "secret\n", 0o600, &Expect::Absent);
    put("team/board", "shared\n", 0o666, &Expect::Absent);
    put("run.sh", "#!/bin/sh\n", 0o755, &Expect::Absent);
    assert_eq!(
        [
            mode_at("vault"),
            mode_at("team"),
            mode_at("vault/key"),
            mode_at("team/board"),
            mode_at("run.sh")
        ],
        [0o700, 0o777, 0o600, 0o666, 0o755]
    );
    assert_eq!(key.entry.mode(), bits(0o600));
    let listing = remote
        .list(&Scope::Full, &BaseTree::new(), &no_rules())
        .unwrap();
    let listed = |p: &str| listing.tree[&rel(p)].entry.mode().map(Mode::bits);
    assert_eq!(
        [listed("vault"), listed("vault/key"), listed("run.sh")],
        [Some(0o700), Some(0o600), Some(0o755)]
    );

    // A mode alone changes in place (the same file, nothing trashed), and
    // the set-group-ID bit someone gave a folder on the server stays.
    let ino = fs::metadata(served.join("run.sh")).unwrap().ino();
    let listed_run = listing.tree[&rel("run.sh")].entry;
    remote
        .set_mode(&rel("run.sh"), &listed_run, Mode::from_bits(0o700))
        .unwrap();
    assert_eq!(mode_at("run.sh"), 0o700);
    assert_eq!(fs::metadata(served.join("run.sh")).unwrap().ino(), ino);
    fs::set_permissions(served.join("team"), fs::Permissions::from_mode(0o2777)).unwrap();
    remote
        .set_mode(
            &rel("team"),
            &Entry::dir(bits(0o777)),
            Mode::from_bits(0o770),
        )
        .unwrap();
    assert_eq!(mode_at("team"), 0o2770);
    // One that changed since it was listed is refused, and stays.
    let stale = remote
        .set_mode(&rel("run.sh"), &listed_run, Mode::from_bits(0o777))
        .unwrap_err();
    assert!(stale.is_change(), "{stale}");
    assert_eq!(mode_at("run.sh"), 0o700);
    // So is a replacement of a file whose mode changed since the listing.
    let listed_key = listing.tree[&rel("vault/key")].entry;
    fs::set_permissions(served.join("vault/key"), fs::Permissions::from_mode(0o400)).unwrap();
    let err = remote
        .write(
            &rel("vault/key"),
            &mut &b"new\n"[..],
            &ContentHash::of_bytes(b"new\n"),
            0,
            bits(0o600),
            &Expect::of(Some(&listed_key)),
        )
        .unwrap_err();
    assert!(err.is_change(), "{err}");
    fs::set_permissions(served.join("vault/key"), fs::Permissions::from_mode(0o600)).unwrap();

    // A replaced private file goes to the trash as private as it was, in
    // folders only their owner can open.
    put(
        "vault/key",
        "rotated\n",
        0o600,
        &Expect::of(Some(&listed_key)),
    );
    let trash = served.join(".prism-sync/trash");
    assert_eq!(contents_below(&trash), ["secret\n"]);
    let mut below = vec![trash.clone()];
    while let Some(dir) = below.pop() {
        for entry in fs::read_dir(&dir).unwrap().flatten() {
            let mode = entry.metadata().unwrap().mode() & 0o777;
            if entry.file_type().unwrap().is_dir() {
                assert_eq!(mode, 0o700, "{}", entry.path().display());
                below.push(entry.path());
            } else {
                assert_eq!(mode, 0o600, "{}", entry.path().display());
            }
        }
    }
}

#[test]
fn a_tree_nineteen_hundred_levels_deep_is_written_listed_trashed_and_purged() {
    // About 3,800 bytes of path below the served folder: every level is
    // made, listed and removed in a loop, not a call per level (a test
    // thread has a 2 MiB stack, as the agent's sync threads do).
    let server = Sshd::start();
    let served = server.served().join("root");
    let remote = replica(&server, "root");
    remote.mark_root().unwrap();
    let deep = format!("{}x.txt", "d/".repeat(1900));
    let written = write(&remote, &deep, "deep\n", &Expect::Absent);
    assert_eq!(fs::read_to_string(served.join(&deep)).unwrap(), "deep\n");

    let listing = remote
        .list(&Scope::Full, &BaseTree::new(), &no_rules())
        .unwrap();
    assert_eq!(listing.tree.len(), 1901);
    assert!(listing.held.is_empty() && listing.problems.is_empty());

    remote
        .remove(&rel(&deep), &Expect::of(Some(&written.entry)))
        .unwrap();
    let trash = served.join(".prism-sync/trash");
    let batch = fs::read_dir(&trash)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert_eq!(
        fs::read_to_string(batch.join(&deep)).unwrap(),
        "deep\n",
        "the removed version is kept"
    );
    // Aged, then purged with everything below it.
    fs::rename(&batch, trash.join("20000101-0000")).unwrap();
    assert_eq!(remote.purge_trash(Duration::from_secs(3600)).unwrap(), 1);
    assert_eq!(fs::read_dir(&trash).unwrap().count(), 0);
}

fn read_all(mut reader: Box<dyn std::io::Read + Send + '_>) -> String {
    let mut text = String::new();
    reader.read_to_string(&mut text).unwrap();
    text
}

#[test]
fn a_replaced_or_removed_version_is_named_in_the_trash_and_read_back_by_that_name() {
    let server = Sshd::start();
    let remote = replica(&server, "root");
    remote.mark_root().unwrap();
    let expect = |text: &str| Expect::File {
        size: text.len() as u64,
        mtime_ns: 1_600_000_000_000_000_000,
        mode: None,
        version: None,
    };
    write(&remote, "docs/note.txt", "v1\n", &Expect::Absent);
    let v2 = "v2, longer\n";
    let (_, replaced) = remote
        .write_naming_trash(
            &rel("docs/note.txt"),
            &mut v2.as_bytes(),
            &ContentHash::of_bytes(v2.as_bytes()),
            1_600_000_000_123_456_789,
            None,
            &expect("v1\n"),
        )
        .unwrap();
    let replaced = replaced.expect("the replaced version's name in the trash");
    assert!(replaced.as_str().ends_with("/docs/note.txt"), "{replaced}");
    assert_eq!(read_all(remote.open_trashed(&replaced).unwrap()), "v1\n");

    // Removed within the same minute: a name of its own.
    let removed = remote
        .remove_naming_trash(&rel("docs/note.txt"), &expect(v2))
        .unwrap()
        .expect("the removed version's name in the trash");
    assert_ne!(removed, replaced);
    assert_eq!(read_all(remote.open_trashed(&removed).unwrap()), v2);
    assert_eq!(read_all(remote.open_trashed(&replaced).unwrap()), "v1\n");

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
    let server = Sshd::start();
    let served = server.served().join("stat");
    let remote = replica(&server, "stat");
    remote.mark_root().unwrap();
    remote.mkdir(&rel("d"), None).unwrap();
    write(&remote, "d/f.txt", "abc\n", &Expect::Absent);
    std::os::unix::fs::symlink(served.join("d/f.txt"), served.join("link")).unwrap();

    assert_eq!(remote.stat(&rel("missing")).unwrap(), Expect::Absent);
    assert_eq!(remote.stat(&rel("gone/below")).unwrap(), Expect::Absent);
    assert_eq!(remote.stat(&rel("d")).unwrap(), Expect::Dir);
    let file = remote.stat(&rel("d/f.txt")).unwrap();
    assert!(
        matches!(
            file,
            Expect::File {
                size: 4,
                mtime_ns: 1_600_000_000_000_000_000,
                mode: Some(_),
                ..
            }
        ),
        "{file:?}"
    );
    // A link is described as a file that no step acts on.
    let link = remote.stat(&rel("link")).unwrap();
    assert!(matches!(link, Expect::File { .. }), "{link:?}");
    assert!(remote.remove(&rel("link"), &link).unwrap_err().is_change());
    assert!(fs::symlink_metadata(served.join("link")).is_ok());
    // What it says is what a step on the path checks against.
    remote
        .rename(&rel("d/f.txt"), &rel("d/g.txt"), &file)
        .unwrap();
    let moved = remote.stat(&rel("d/g.txt")).unwrap();
    remote.remove(&rel("d/g.txt"), &moved).unwrap();
    assert_eq!(remote.stat(&rel("d/g.txt")).unwrap(), Expect::Absent);
    assert_eq!(contents_below(&served.join(".prism-sync/trash")), ["abc\n"]);
}

/// What each step asks of the server, as its log names the requests: a
/// new file, a replaced file (written with a mode, as the agent writes),
/// and a listing that finds nothing new. Pinned, so that a request more
/// per file shows.
#[test]
fn a_new_file_a_replaced_file_and_a_no_op_listing_take_few_requests() {
    let server = Sshd::start_logging_requests();
    let remote = replica(&server, "counted");
    remote.mark_root().unwrap();
    fs::create_dir_all(server.served().join("counted/d")).unwrap();
    let requests_of = |step: &mut dyn FnMut()| {
        let before = server.requests().len();
        step();
        server.requests()[before..].to_vec()
    };
    // The replica's first commit learns whether the server keeps the times
    // and mode it sets (this one does) by looking at the file after its
    // move; later commits know their version without that look.
    let looked = std::time::Instant::now();
    let first = requests_of(&mut || {
        put_with_mode(&remote, "d/first.txt", "first\n", &Expect::Absent);
    });
    assert_eq!(first.first().map(String::as_str), Some("lstat"));
    assert_eq!(first.last().map(String::as_str), Some("lstat"));
    // The look at `d` before that upload stands for the uploads into it
    // for a second: a step that ends within it starts without a look; one
    // that ends later (a slow machine) may start with one.
    let pinned = |requests: Vec<String>, expected: &[&str]| {
        let looked_again = requests.first().is_some_and(|r| r == "lstat")
            && requests[1..] == *expected
            && looked.elapsed() >= std::time::Duration::from_secs(1);
        assert!(looked_again || requests == *expected, "{requests:?}");
    };

    // A new file: its upload (its folder was looked at just now: there,
    // and no symlink), the times, mode and version nonce, and the move
    // that never replaces (which is the check that nothing is there).
    let mut written = None;
    let new = requests_of(&mut || {
        written = Some(put_with_mode(&remote, "d/f.txt", "one\n", &Expect::Absent));
    });
    pinned(
        new,
        &["open", "write", "fsync", "close", "setstat", "rename"],
    );

    // A replaced file: as a new one, with a look at the version it
    // replaces and that version's move to the trash; the minute's first
    // makes its trash folders (four looks up the path, three mkdirs).
    let mut rewritten = None;
    let replaced = requests_of(&mut || {
        let expect = expect_of(written.as_ref().unwrap());
        rewritten = Some(put_with_mode(&remote, "d/f.txt", "two\n", &expect));
    });
    pinned(
        replaced,
        &[
            "open", "write", "fsync", "close", "lstat", "lstat", "lstat", "lstat", "lstat",
            "mkdir", "mkdir", "mkdir", "rename", "setstat", "rename",
        ],
    );

    // Another version trashed in the same minute: its trash folder is
    // known, and only the move into it asks. A minute that turns between
    // the two starts a batch of its own: then once more.
    let trash = server.served().join("counted/.prism-sync/trash");
    let batches = || fs::read_dir(&trash).unwrap().count();
    let mut same_batch = None;
    for attempt in 0..3 {
        let path = format!("d/g{attempt}.txt");
        let first = put_with_mode(&remote, &path, "one\n", &Expect::Absent);
        let before = batches();
        let requests = requests_of(&mut || {
            put_with_mode(&remote, &path, "two\n", &expect_of(&first));
        });
        if batches() == before {
            same_batch = Some(requests);
            break;
        }
    }
    pinned(
        same_batch.expect("two replaces within one minute"),
        &[
            "open", "write", "fsync", "close", "lstat", "rename", "setstat", "rename",
        ],
    );
    // A new sync (its listing) looks at an upload's folder again, once.
    remote
        .list(&Scope::Full, &BaseTree::new(), &no_rules())
        .unwrap();
    let relisted = std::time::Instant::now();
    let after_listing = requests_of(&mut || {
        put_with_mode(&remote, "d/i.txt", "i\n", &Expect::Absent);
        put_with_mode(&remote, "d/j.txt", "j\n", &Expect::Absent);
    });
    let looks = after_listing.iter().filter(|r| *r == "lstat").count();
    assert_eq!(after_listing[0], "lstat", "{after_listing:?}");
    assert!(
        looks == 1 || looks == 2 && relisted.elapsed() >= std::time::Duration::from_secs(1),
        "{after_listing:?}"
    );
    // An upload folder removed behind the replica's back is made again.
    fs::create_dir_all(server.served().join("counted/m")).unwrap();
    put_with_mode(&remote, "m/k.txt", "k\n", &Expect::Absent);
    fs::remove_dir_all(server.served().join("counted/m")).unwrap();
    put_with_mode(&remote, "m/l.txt", "l\n", &Expect::Absent);
    assert_eq!(
        fs::read_to_string(server.served().join("counted/m/l.txt")).unwrap(),
        "l\n"
    );
    fs::remove_dir_all(server.served().join("counted/m")).unwrap();
    // A trash folder removed behind the replica's back is made again.
    fs::remove_dir_all(&trash).unwrap();
    let first = put_with_mode(&remote, "d/h.txt", "old h\n", &Expect::Absent);
    put_with_mode(&remote, "d/h.txt", "new h\n", &expect_of(&first));
    assert_eq!(contents_below(&trash), ["old h\n"]);

    // The version a commit knew without looking is the one the server has.
    let listing = remote
        .list(&Scope::Full, &BaseTree::new(), &no_rules())
        .unwrap();
    assert_eq!(
        listing.tree[&rel("d/f.txt")].version,
        rewritten.unwrap().version
    );

    // Nothing new: a look at the root, and each folder read once.
    let base = base_of(&listing);
    let no_op = requests_of(&mut || {
        let again = remote.list(&Scope::Full, &base, &no_rules()).unwrap();
        assert_eq!(again.hashed_files, 0);
    });
    assert_eq!(
        sorted(no_op),
        sorted(vec![
            "lstat", "opendir", "readdir", "readdir", "close", "opendir", "readdir", "readdir",
            "close"
        ])
    );

    // A version trashed into a folder the replica never trashed into,
    // below a batch folder it made before the trash was emptied by hand.
    fs::create_dir_all(server.served().join("counted/e")).unwrap();
    let first = put_with_mode(&remote, "e/i.txt", "old i\n", &Expect::Absent);
    fs::remove_dir_all(&trash).unwrap();
    put_with_mode(&remote, "e/i.txt", "new i\n", &expect_of(&first));
    assert_eq!(contents_below(&trash), ["old i\n"]);
}

fn sorted<T: Ord + ToString>(mut items: Vec<T>) -> Vec<String> {
    items.sort();
    items.iter().map(T::to_string).collect()
}

/// Writes `text` at `path` with a mode, as the agent writes.
fn put_with_mode(
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
            1_600_000_000_000_000_000,
            Some(prism_sync::model::Mode::from_bits(0o640)),
            expect,
        )
        .unwrap()
}

fn expect_of(written: &prism_sync::model::SideEntry) -> Expect {
    Expect::of_version(Some(&written.entry), written.version_text().as_deref())
}
