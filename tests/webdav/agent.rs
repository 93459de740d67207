//! The real `prism-syncd --once` syncing local folders with a WebDAV share:
//! a full two-way sync with edits on both sides, a conflict, a wrong
//! password, and two devices sharing one share. Each of those test bodies
//! takes the server as a [`Dav`] and runs against Apache and against rclone
//! (which ignores conditional headers). Against Apache only: a folder the
//! server refuses to write (403), and the server stopped in the middle of a
//! large upload.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::apache::{Apache, Share};
use crate::files::{copy_journal, put, text, tree};
use crate::rclone::Rclone;
use crate::server::Dav;

/// One device: a local folder, a state dir and a config file whose pair
/// names the share (with the harness's user when `share` is `Auth`).
struct Device {
    name: String,
    home: PathBuf,
    local: PathBuf,
    config: PathBuf,
}

impl Device {
    fn new(server: &dyn Dav, name: &str, share: Share, below: &str) -> Device {
        let home = server.scratch(name);
        let local = home.join("local");
        fs::create_dir_all(&local).unwrap();
        let username = match share {
            Share::Auth => format!("username = \"{}\"\n", Apache::USER),
            Share::Open => String::new(),
        };
        let config = home.join("config.toml");
        fs::write(
            &config,
            format!(
                "[agent]\ndevice = \"{name}\"\n[[pair]]\nname = \"p\"\nlocal = \"{}\"\nremote = \"{}\"\n{username}",
                local.display(),
                server.url(share, below),
            ),
        )
        .unwrap();
        Device {
            name: name.to_owned(),
            home,
            local,
            config,
        }
    }

    fn state(&self) -> PathBuf {
        self.home.join("state")
    }

    fn once_with(&self, env: &[(&str, &str)]) -> Output {
        let mut command = self.command();
        for (key, value) in env {
            command.env(key, value);
        }
        command.output().expect("run prism-syncd --once")
    }

    /// `prism-syncd --once` for this device, not yet started.
    fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_prism-syncd"));
        command
            .arg("--config")
            .arg(&self.config)
            .arg("--state-dir")
            .arg(self.state())
            .arg("--device")
            .arg(&self.name)
            .arg("--once")
            .env("HOME", &self.home)
            .env("RUST_LOG", "debug")
            .env_remove("PRISM_SYNC_WEBDAV_PASSWORD")
            .env_remove("PRISM_SYNC_CONFIG")
            .env_remove("PRISM_SYNC_STATE_DIR")
            .env_remove("PRISM_SYNC_SOCKET");
        command
    }

    fn once(&self) -> Output {
        self.once_with(&[])
    }
}

/// Writes into a share as if through the server.
fn put_served(server: &dyn Dav, root: &Path, rel: &str, content: &str) {
    put(root, rel, content);
    server.hand_over(root);
}

#[test]
fn a_full_sync_through_the_daemon_converges_with_edits_on_both_sides_and_a_conflict() {
    full_sync(&Apache::start());
}

#[test]
fn a_full_sync_through_the_daemon_converges_with_edits_on_both_sides_and_a_conflict_on_rclone() {
    full_sync(&Rclone::start());
}

fn full_sync(server: &dyn Dav) {
    let served = server.served(Share::Open).join("pair");
    put_served(server, &served, "from-server.txt", "server\n");
    let device = Device::new(server, "laptop", Share::Open, "pair");
    put(&device.local, "a.txt", "local a\n");
    put(&device.local, "sub/b c.txt", "local b\n");

    let out = device.once();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        text(&out),
        server.log()
    );
    let local = tree(&device.local);
    assert_eq!(
        local.keys().collect::<Vec<_>>(),
        ["a.txt", "from-server.txt", "sub/b c.txt"]
    );
    assert_eq!(local, tree(&served));

    // Edits on either side reach the other; replaced versions are kept.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    put(&device.local, "a.txt", "local a, edited\n");
    fs::remove_file(served.join("from-server.txt")).unwrap();
    put_served(server, &served, "sub/new.txt", "made on the server\n");
    let out = device.once();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let local = tree(&device.local);
    assert_eq!(local, tree(&served));
    assert_eq!(local["a.txt"], "local a, edited\n");
    assert!(!local.contains_key("from-server.txt"));
    assert_eq!(local["sub/new.txt"], "made on the server\n");
    let trashed = tree(&served.join(".prism-sync/trash"));
    assert!(
        trashed.values().any(|v| v == "local a\n"),
        "the replaced version is in the server's trash: {trashed:?}"
    );

    // Both sides edit one file: a conflict copy, nothing lost.
    put(&device.local, "sub/b c.txt", "local edit\n");
    put_served(server, &served, "sub/b c.txt", "server edit!\n");
    let out = device.once();
    assert!(
        matches!(out.status.code(), Some(0) | Some(3)),
        "{}",
        text(&out)
    );
    let out = device.once();
    assert!(
        matches!(out.status.code(), Some(0) | Some(3)),
        "{}",
        text(&out)
    );
    let local = tree(&device.local);
    assert_eq!(local, tree(&served));
    let mut versions: Vec<&str> = local
        .iter()
        .filter(|(k, _)| k.starts_with("sub/b c"))
        .map(|(_, v)| v.as_str())
        .collect();
    versions.sort();
    assert_eq!(versions, ["local edit\n", "server edit!\n"], "{local:?}");
}

#[test]
fn a_wrong_password_is_refused_clearly_and_never_written_anywhere() {
    wrong_password(&Apache::start());
}

#[test]
fn a_wrong_password_is_refused_clearly_and_never_written_anywhere_on_rclone() {
    wrong_password(&Rclone::start());
}

fn wrong_password(server: &dyn Dav) {
    const PASSWORD: &str = "Wr0ng-Pa55-Prism-7781";
    let device = Device::new(server, "laptop", Share::Auth, "");
    put(&device.local, "a.txt", "a\n");
    let out = device.once_with(&[("PRISM_SYNC_WEBDAV_PASSWORD", PASSWORD)]);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    let shown = text(&out);
    assert!(shown.contains("401"), "{shown}");
    assert!(shown.contains("PRISM_SYNC_WEBDAV_PASSWORD"), "{shown}");
    assert!(!shown.contains(PASSWORD), "{shown}");
    assert!(!shown.contains(&PASSWORD[..10]), "{shown}");
    let mut checked = 0;
    for entry in fs::read_dir(device.state()).unwrap().flatten() {
        if entry.file_type().unwrap().is_file() {
            let bytes = fs::read(entry.path()).unwrap();
            assert!(
                !bytes
                    .windows(PASSWORD.len())
                    .any(|w| w == PASSWORD.as_bytes()),
                "{} holds the password",
                entry.path().display()
            );
            checked += 1;
        }
    }
    assert!(checked > 0, "the journal was written");
    assert!(!server.log().contains(PASSWORD));

    // The right password syncs.
    let out = device.once_with(&[("PRISM_SYNC_WEBDAV_PASSWORD", Apache::PASSWORD)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        fs::read_to_string(server.served(Share::Auth).join("a.txt")).unwrap(),
        "a\n"
    );
}

#[test]
fn two_devices_on_one_share_converge_and_keep_both_versions_of_a_clash() {
    two_devices(&Apache::start());
}

#[test]
fn two_devices_on_one_share_converge_and_keep_both_versions_of_a_clash_on_rclone() {
    two_devices(&Rclone::start());
}

fn two_devices(server: &dyn Dav) {
    let served = server.served(Share::Open).join("shared");
    let a = Device::new(server, "devA", Share::Open, "shared");
    let b = Device::new(server, "devB", Share::Open, "shared");
    put(&a.local, "plan.txt", "from A\n");
    put(&b.local, "b-only/notes.md", "B's notes\n");
    for device in [&a, &b, &a] {
        let out = device.once();
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    }
    assert_eq!(tree(&a.local), tree(&b.local));
    assert_eq!(tree(&a.local), tree(&served));
    assert_eq!(tree(&b.local)["plan.txt"], "from A\n");

    put(&a.local, "plan.txt", "A's version\n");
    put(&b.local, "plan.txt", "B's version\n");
    for device in [&a, &b, &a, &b] {
        let out = device.once();
        assert!(
            matches!(out.status.code(), Some(0) | Some(3)),
            "{}",
            text(&out)
        );
    }
    let trees = [tree(&a.local), tree(&served), tree(&b.local)];
    assert_eq!(trees[0], trees[1], "A and the server agree");
    assert_eq!(trees[1], trees[2], "B and the server agree");
    let mut versions: Vec<&str> = trees[0]
        .iter()
        .filter(|(k, _)| k.starts_with("plan"))
        .map(|(_, v)| v.as_str())
        .collect();
    versions.sort();
    assert_eq!(
        versions,
        ["A's version\n", "B's version\n"],
        "{:?}",
        trees[0]
    );
    assert_eq!(trees[0]["b-only/notes.md"], "B's notes\n");
}

#[test]
fn a_restored_journal_keeps_a_revert_made_on_another_device_as_a_conflict() {
    let server = Apache::start();
    let served = server.served(Share::Open).join("shared");
    let a = Device::new(&server, "devA", Share::Open, "shared");
    let b = Device::new(&server, "devB", Share::Open, "shared");
    let run = |device: &Device, code: i32| {
        let out = device.once();
        assert_eq!(out.status.code(), Some(code), "{}", text(&out));
        out
    };
    put(&a.local, "plan.txt", "version 1\n");
    run(&a, 0);
    run(&b, 0);
    let backup = a.home.join("backup");
    copy_journal(&a.state(), &backup);
    put(&a.local, "plan.txt", "version 2, later\n");
    run(&a, 0);
    run(&b, 0);
    put(&b.local, "plan.txt", "version 1\n");
    run(&b, 0);
    assert_eq!(tree(&served)["plan.txt"], "version 1\n");

    copy_journal(&backup, &a.state());
    let out = run(&a, 3);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("older than the remote"),
        "{}",
        text(&out)
    );
    let local = tree(&a.local);
    let mut versions: Vec<&str> = local.values().map(String::as_str).collect();
    versions.sort();
    assert_eq!(versions, ["version 1\n", "version 2, later\n"], "{local:?}");
    assert_eq!(local, tree(&served));
}

/// A folder on the server the account may not write to (the harness's
/// `locked` folder): Apache answers 403 Forbidden, the agent
/// names the path and the refusal, syncs everything else, and the file
/// goes up once the folder is writable again.
#[test]
fn a_folder_the_server_refuses_is_a_clear_per_path_error_and_the_rest_syncs() {
    let server = Apache::start();
    let served = server.served(Share::Open).join("pair");
    put_served(&server, &served, "readme.txt", "hello\n");
    let locked = served.join("locked");
    fs::create_dir(&locked).unwrap();
    server.hand_over(&locked);
    let device = Device::new(&server, "laptop", Share::Open, "pair");
    put(&device.local, "locked/x.txt", "refused\n");
    put(&device.local, "ok.txt", "fine\n");

    let out = device.once();
    let shown = text(&out);
    assert_ne!(out.status.code(), Some(0), "{shown}");
    assert!(shown.contains("locked/x.txt"), "{shown}");
    assert!(shown.contains("403 Forbidden"), "{shown}");
    assert!(shown.contains("permissions"), "{shown}");
    assert_eq!(tree(&served)["ok.txt"], "fine\n", "the rest was synced");
    assert_eq!(tree(&device.local)["readme.txt"], "hello\n");
    assert_eq!(
        fs::read_to_string(device.local.join("locked/x.txt")).unwrap(),
        "refused\n",
        "nothing is lost locally"
    );
    assert!(!locked.join("x.txt").exists());

    // Once the folder may be written (here: renamed away from the
    // harness's read-only name), the file goes up.
    fs::rename(&locked, served.join("open")).unwrap();
    fs::rename(device.local.join("locked"), device.local.join("open")).unwrap();
    let out = device.once();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(tree(&device.local), tree(&served));
    assert_eq!(tree(&served)["open/x.txt"], "refused\n");
}

/// Apache is stopped while a large file is being uploaded: that sync
/// fails, nothing partial appears under the file's real name, and after a
/// restart the next sync uploads it whole.
#[test]
fn a_server_gone_mid_upload_leaves_nothing_half_written_and_the_next_sync_converges() {
    let mut server = Apache::start();
    let served = server.served(Share::Open).join("pair");
    let device = Device::new(&server, "laptop", Share::Open, "pair");
    let big: Vec<u8> = (0..160u32 << 20).map(|i| (i % 251) as u8).collect();
    fs::write(device.local.join("big.bin"), &big).unwrap();
    put(&device.local, "small.txt", "small\n");

    let child = device
        .command()
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the upload is under way: a staged file on the server
    // that has some bytes but not all.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let uploading = || {
        fs::read_dir(&served)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                let len = e.metadata().map(|m| m.len()).unwrap_or(0);
                e.file_name().to_string_lossy().starts_with('.')
                    && len > 0
                    && len < big.len() as u64
            })
    };
    while !uploading() {
        assert!(
            std::time::Instant::now() < deadline,
            "the upload never started: {:?}",
            fs::read_dir(&served).map(|d| d.count())
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    server.stop();
    let out = child.wait_with_output().unwrap();
    let shown = text(&out);
    assert_ne!(out.status.code(), Some(0), "{shown}");
    assert!(
        shown.contains("127.0.0.1") && shown.contains("cannot be reached"),
        "{shown}"
    );
    if let Ok(there) = fs::read(served.join("big.bin")) {
        assert!(there == big, "big.bin on the server is not whole");
    }

    server.restart();
    let out = device.once();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(fs::read(served.join("big.bin")).unwrap() == big);
    assert!(fs::read(device.local.join("big.bin")).unwrap() == big);
    assert_eq!(
        fs::read_to_string(served.join("small.txt")).unwrap(),
        "small\n"
    );
    // Only our own temporaries may be left (removed once stale); nothing
    // else appeared on either side.
    let names = |dir: &Path| -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| {
                n != ".prism-sync" && n != ".prism-sync-root" && !n.starts_with(".prism-tmp-")
            })
            .collect();
        names.sort();
        names
    };
    assert_eq!(names(&served), ["big.bin", "small.txt"]);
    assert_eq!(names(&device.local), ["big.bin", "small.txt"]);
}

/// Apache is stopped while a large file is being downloaded: that sync
/// fails as offline and keeps what arrived in a hidden partial file; after
/// a restart the next sync asks only for the rest (`Range`, answered 206
/// with fewer bytes than the file has) and the file arrives whole.
#[test]
fn a_server_gone_mid_download_is_resumed_with_a_range_by_the_next_sync() {
    const SIZE: usize = 192 << 20;
    let mut server = Apache::start();
    let served = server.served(Share::Open).join("pair");
    let big: Vec<u8> = (0..SIZE as u32)
        .map(|i| (i % 251) as u8 ^ (i >> 20) as u8)
        .collect();
    fs::create_dir_all(&served).unwrap();
    fs::write(served.join("big.bin"), &big).unwrap();
    server.hand_over(&served);
    let device = Device::new(&server, "laptop", Share::Open, "pair");

    let child = device
        .command()
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let before = download_under_way(&device.local);
    let partial = || started_partial(&device.local);
    server.stop();
    let out = child.wait_with_output().unwrap();
    let shown = text(&out);
    assert_ne!(out.status.code(), Some(0), "{shown}");
    assert!(
        shown.contains("127.0.0.1") && shown.contains("cannot be reached"),
        "{shown}"
    );
    assert!(!device.local.join("big.bin").exists(), "{shown}");
    let (name, kept) = partial().expect("the partial download is kept");
    assert!(name == before.0 && kept >= before.1 && kept < SIZE as u64);

    server.restart();
    let out = device.once();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(fs::read(device.local.join("big.bin")).unwrap() == big);
    assert_eq!(partials(&device.local), [], "the partial became the file");
    assert!(
        text(&out).contains(&format!("resuming download of big.bin at {kept} bytes")),
        "{}",
        text(&out)
    );
    // The server sent only the rest, for the version listed (its ETag in
    // `If-Range`; Apache's log escapes the quotes).
    let log = server.access_log();
    let resumed: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("GET /open/pair/big.bin 206 "))
        .collect();
    let rest = SIZE as u64 - kept;
    let expected = format!("GET /open/pair/big.bin 206 {rest} range=bytes={kept}- if-range=\\\"");
    assert!(
        resumed.len() == 1 && resumed[0].starts_with(&expected),
        "expected one `{expected}…`:\n{log}"
    );
}

/// The same over an encrypted share: the partial holds plaintext, and the
/// next sync asks the server only for the rest of the ciphertext, from the
/// chunk that holds the first missing byte.
#[test]
fn an_encrypted_download_cut_off_is_resumed_from_its_chunk_by_the_next_sync() {
    const SIZE: usize = 64 << 20;
    const CHUNK: u64 = 64 * 1024;
    let mut server = Apache::start();
    let served = server.served(Share::Open).join("vault");
    let password = [("PRISM_SYNC_CRYPT_PASSWORD", "resume me")];
    let [laptop, desktop] = ["laptop", "desktop"].map(|name| {
        let device = Device::new(&server, name, Share::Open, "vault");
        let mut config = fs::read_to_string(&device.config).unwrap();
        config.push_str("encryption = \"crypt\"\n");
        fs::write(&device.config, config).unwrap();
        device
    });
    let big: Vec<u8> = (0..SIZE as u32)
        .map(|i| (i % 253) as u8 ^ (i >> 19) as u8)
        .collect();
    fs::write(laptop.local.join("big.bin"), &big).unwrap();
    let out = laptop.once_with(&password);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stored: Vec<String> = tree(&served).into_keys().collect();
    let [encrypted] = stored.as_slice() else {
        panic!("one encrypted file on the share: {stored:?}")
    };

    let child = desktop
        .command()
        .envs(password)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    download_under_way(&desktop.local);
    server.stop();
    let out = child.wait_with_output().unwrap();
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    let (_, kept) = started_partial(&desktop.local).expect("the partial download is kept");
    assert!(kept < SIZE as u64, "{kept}");
    let log_before = server.access_log().len();

    server.restart();
    let out = desktop.once_with(&password);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(fs::read(desktop.local.join("big.bin")).unwrap() == big);
    assert_eq!(partials(&desktop.local), [], "the partial became the file");
    // The transfer asked only for the rest: once the lease is taken (the
    // listing before it reads a file it has never seen to hash it), every
    // read of the file is ranged, the body's from the chunk that holds byte
    // `kept` (after the 32-byte header, each chunk 16 bytes longer than its
    // plaintext).
    let log = server.access_log();
    let after_lease = log[log_before..]
        .split_once("PUT /open/vault/.prism-sync/lease 201")
        .map(|(_, rest)| rest)
        .expect("the lease was taken");
    let transfer: Vec<&str> = after_lease
        .lines()
        .filter(|l| l.starts_with(&format!("GET /open/vault/{encrypted} ")))
        .collect();
    let chunk_start = 32 + kept / CHUNK * (CHUNK + 16);
    assert!(
        !transfer.is_empty() && transfer.iter().all(|l| l.contains(" 206 ")),
        "every read of the transfer is ranged: {transfer:#?}"
    );
    assert!(
        transfer
            .iter()
            .any(|l| l.contains(&format!("range=bytes={chunk_start}-"))),
        "a read from byte {chunk_start} of the ciphertext: {transfer:#?}"
    );
}

/// Waits until a download into `dir` is under way: a partial file with
/// some bytes (the caller checks it does not have all); its name and size.
fn download_under_way(dir: &Path) -> (String, u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Some(found) = started_partial(dir) {
            return found;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the download never started: {:?}",
            fs::read_dir(dir).map(|d| d.count())
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// A partial download in `dir` that has some bytes.
fn started_partial(dir: &Path) -> Option<(String, u64)> {
    partials(dir).into_iter().find(|(_, len)| *len > 0)
}

/// Partial downloads in `dir`, with their sizes.
fn partials(dir: &Path) -> Vec<(String, u64)> {
    fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let len = e.metadata().ok()?.len();
            name.starts_with(".prism-tmp-part-").then_some((name, len))
        })
        .collect()
}

#[test]
fn two_devices_converge_through_an_encrypted_share() {
    let server = Apache::start();
    let served = server.served(Share::Open).join("vault");
    let devices = ["devA", "devB"].map(|name| {
        let device = Device::new(&server, name, Share::Open, "vault");
        let mut config = fs::read_to_string(&device.config).unwrap();
        config.push_str("encryption = \"crypt\"\n");
        fs::write(&device.config, config).unwrap();
        device
    });
    let [a, b] = &devices;
    let password = [("PRISM_SYNC_CRYPT_PASSWORD", "webdav crypt password")];
    put(&a.local, "plans/q1.txt", "a private plan\n");
    put(&b.local, "Ünïcödé.md", "B's notes\n");
    fs::write(a.local.join("big.bin"), vec![5u8; 300_000]).unwrap();
    for device in [a, b, a] {
        let out = device.once_with(&password);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    }
    assert_eq!(tree(&a.local), tree(&b.local));

    put(&a.local, "plans/q1.txt", "A's plan\n");
    put(&b.local, "plans/q1.txt", "B's plan\n");
    for device in [a, b, a, b] {
        let out = device.once_with(&password);
        assert!(
            matches!(out.status.code(), Some(0) | Some(3)),
            "{}",
            text(&out)
        );
    }
    let local = tree(&a.local);
    assert_eq!(local, tree(&b.local));
    let mut plans: Vec<&str> = local
        .iter()
        .filter(|(k, _)| k.starts_with("plans/"))
        .map(|(_, v)| v.as_str())
        .collect();
    plans.sort();
    assert_eq!(plans, ["A's plan\n", "B's plan\n"]);

    // The share holds one crypt file under an encrypted name per file.
    let names: Vec<String> = tree(&served).into_keys().collect();
    assert_eq!(names.len(), local.len(), "{names:?}");
    for name in names {
        crate::crypt_names::assert_encrypted_name(&name);
        let bytes = fs::read(served.join(&name)).unwrap();
        assert!(bytes.starts_with(b"RCLONE\0\0"), "{name}");
        assert!(!String::from_utf8_lossy(&bytes).contains("plan"), "{name}");
    }
}
