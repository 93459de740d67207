//! The real `prism-syncd --once` syncing local folders with the sshd's
//! folder: a full two-way sync, hostile names on the server, a wrong
//! password, and two devices sharing one SFTP folder.

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Output};

use crate::files::{copy_journal, put, text, tree};
use crate::sshd::Sshd;

/// One device: a local folder, a state dir, a config file naming the
/// harness's known_hosts (and key, unless `key` is false), and a HOME of
/// its own so nothing of the real user's ~/.ssh is used.
struct Device {
    name: String,
    home: PathBuf,
    local: PathBuf,
    config: PathBuf,
}

impl Device {
    fn new(server: &Sshd, name: &str, below: &str, key: bool) -> Device {
        let home = server.scratch(name);
        let local = home.join("local");
        fs::create_dir_all(&local).unwrap();
        let known_hosts = home.join("known_hosts");
        server.write_known_hosts(&known_hosts);
        let identity = if key {
            format!("identity_file = \"{}\"\n", server.client_key().display())
        } else {
            String::new()
        };
        let config = home.join("config.toml");
        fs::write(
            &config,
            format!(
                "[agent]\ndevice = \"{name}\"\n[[pair]]\nname = \"p\"\nlocal = \"{}\"\nremote = \"{}\"\nknown_hosts = \"{}\"\n{identity}",
                local.display(),
                server.url(below),
                known_hosts.display(),
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
            .env_remove("SSH_AUTH_SOCK")
            .env_remove("PRISM_SYNC_SFTP_PASSWORD")
            .env_remove("PRISM_SYNC_CONFIG")
            .env_remove("PRISM_SYNC_STATE_DIR")
            .env_remove("PRISM_SYNC_SOCKET");
        for (key, value) in env {
            command.env(key, value);
        }
        command.output().expect("run prism-syncd --once")
    }

    fn once(&self) -> Output {
        self.once_with(&[])
    }
}

#[test]
fn a_full_sync_through_the_daemon_converges_and_skips_hostile_names_on_the_server() {
    let server = Sshd::start();
    let served = server.served().join("pair");
    let outside = server.scratch("outside");
    put(&outside, "secret.txt", "outside the root\n");
    put(&served, "from-server.txt", "server\n");
    put(&served, "bad\nname.txt", "newline\n");
    std::os::unix::fs::symlink(&outside, served.join("escape")).unwrap();
    let device = Device::new(&server, "laptop", "pair", true);
    put(&device.local, "a.txt", "local a\n");
    put(&device.local, "sub/b.txt", "local b\n");

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
        ["a.txt", "from-server.txt", "sub/b.txt"],
        "hostile names stay on the server: {local:?}"
    );
    let mut on_server = tree(&served);
    assert_eq!(
        on_server.remove("bad\nname.txt").as_deref(),
        Some("newline\n")
    );
    assert_eq!(local, on_server);
    assert_eq!(
        tree(&outside).len(),
        1,
        "nothing outside the root is touched"
    );

    // Edits on either side reach the other; replaced versions are kept.
    put(&device.local, "a.txt", "local a, edited\n");
    fs::remove_file(served.join("from-server.txt")).unwrap();
    put(&served, "sub/new.txt", "made on the server\n");
    let out = device.once();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let local = tree(&device.local);
    let mut on_server = tree(&served);
    on_server.remove("bad\nname.txt");
    assert_eq!(local, on_server);
    assert_eq!(local["a.txt"], "local a, edited\n");
    assert!(!local.contains_key("from-server.txt"));
    assert_eq!(local["sub/new.txt"], "made on the server\n");
    let trashed = tree(&served.join(".prism-sync/trash"));
    assert!(
        trashed.values().any(|v| v == "local a\n"),
        "the replaced version is in the server's trash: {trashed:?}"
    );
    assert_eq!(
        fs::read_to_string(outside.join("secret.txt")).unwrap(),
        "outside the root\n"
    );
}

#[test]
fn a_wrong_password_is_refused_clearly_and_never_written_anywhere() {
    const PASSWORD: &str = "Wr0ng-Pa55-Prism-7781";
    let server = Sshd::start();
    let device = Device::new(&server, "laptop", "pair", false);
    put(&device.local, "a.txt", "a\n");
    let out = device.once_with(&[("PRISM_SYNC_SFTP_PASSWORD", PASSWORD)]);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    let shown = text(&out);
    assert!(shown.contains("cannot log in"), "{shown}");
    assert!(shown.contains("a password"), "{shown}");
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
    assert!(
        !fs::read_to_string(&device.config)
            .unwrap()
            .contains(PASSWORD)
    );
    assert!(
        server.log().contains("Failed password"),
        "the server saw a password attempt:\n{}",
        server.log()
    );
}

#[test]
fn two_devices_on_one_sftp_folder_converge_and_keep_both_versions_of_a_clash() {
    let server = Sshd::start();
    let served = server.served().join("shared");
    let a = Device::new(&server, "devA", "shared", true);
    let b = Device::new(&server, "devB", "shared", true);
    put(&a.local, "plan.txt", "from A\n");
    put(&b.local, "b-only/notes.md", "B's notes\n");
    for device in [&a, &b, &a] {
        let out = device.once();
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    }
    assert_eq!(tree(&a.local), tree(&b.local));
    assert_eq!(tree(&a.local), tree(&served));
    assert_eq!(tree(&b.local)["plan.txt"], "from A\n");

    // Both edit the same file before either syncs.
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
    let server = Sshd::start();
    let served = server.served().join("shared");
    let a = Device::new(&server, "devA", "shared", true);
    let b = Device::new(&server, "devB", "shared", true);
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

#[test]
fn two_devices_converge_through_an_encrypted_sftp_folder_that_rclone_reads() {
    let server = Sshd::start();
    let served = server.served().join("vault");
    let devices = ["devA", "devB"].map(|name| {
        let device = Device::new(&server, name, "vault", true);
        let mut config = fs::read_to_string(&device.config).unwrap();
        config.push_str("encryption = \"crypt\"\n");
        fs::write(&device.config, config).unwrap();
        device
    });
    let [a, b] = &devices;
    let password = [("PRISM_SYNC_CRYPT_PASSWORD", "sftp crypt password")];
    put(&a.local, "diary/today.txt", "a private day\n");
    put(&b.local, "Fotos/Übersicht.md", "B's index\n");
    fs::write(a.local.join("big.bin"), vec![3u8; 200_000]).unwrap();
    for device in [a, b, a] {
        let out = device.once_with(&password);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    }
    assert_eq!(tree(&a.local), tree(&b.local));
    assert_eq!(tree(&b.local)["diary/today.txt"], "a private day\n");

    // Both edit the same file: a conflict, settled with both versions,
    // the conflict copy encrypted like any file.
    put(&a.local, "diary/today.txt", "A's day\n");
    put(&b.local, "diary/today.txt", "B's day\n");
    for device in [a, b, a, b] {
        let out = device.once_with(&password);
        assert!(
            matches!(out.status.code(), Some(0) | Some(3)),
            "{}",
            text(&out)
        );
    }
    assert_eq!(tree(&a.local), tree(&b.local));
    let mut days: Vec<String> = tree(&a.local)
        .into_iter()
        .filter(|(k, _)| k.starts_with("diary/"))
        .map(|(_, v)| v)
        .collect();
    days.sort();
    assert_eq!(days, ["A's day\n", "B's day\n"]);

    // The server holds only ciphertext...
    let names = tree(&served).into_keys().collect::<Vec<_>>();
    assert_eq!(names.len(), tree(&a.local).len());
    for name in names {
        crate::crypt_names::assert_encrypted_name(&name);
        let content = String::from_utf8_lossy(&fs::read(served.join(&name)).unwrap()).into_owned();
        assert!(
            content.starts_with("RCLONE\0\0")
                && !content.contains("day")
                && !content.contains("index"),
            "{name}"
        );
    }
    // ...which rclone decrypts to the same tree.
    let obscured = Command::new("rclone")
        .args(["obscure", password[0].1])
        .output()
        .unwrap();
    let back = server.scratch("rclone-back");
    let out = Command::new("rclone")
        .env("RCLONE_CONFIG", back.with_extension("conf"))
        .env("RCLONE_CONFIG_X_TYPE", "crypt")
        .env("RCLONE_CONFIG_X_REMOTE", &served)
        .env(
            "RCLONE_CONFIG_X_PASSWORD",
            String::from_utf8(obscured.stdout).unwrap().trim(),
        )
        .args(["copy", "--exclude", "/.prism-sync/**", "X:"])
        .arg(&back)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(tree(&back), tree(&a.local));
}
