//! Encrypted remotes end to end: the real `prism-syncd` on two devices
//! syncing through a `file://` remote with `encryption = "crypt"`, the
//! remote folder checked to hold only ciphertext, and the real `rclone`
//! reading and writing the same folder as a crypt remote.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use crate::harness::*;

const PASSWORD: &str = "correct horse battery staple";

/// A device of the pair with encryption on (the pair's table is the last
/// in the config file, so the keys are appended to it).
fn encrypted_device(sandbox: &Sandbox, name: &str, remote: &Path) -> Device {
    let device = sandbox.device(name, remote);
    let mut config = fs::read_to_string(&device.config).unwrap();
    config.push_str("encryption = \"crypt\"\n");
    fs::write(&device.config, config).unwrap();
    device
}

/// `prism-syncd --once` with the crypt password in the environment.
fn once_with(device: &Device, password: Option<&str>) -> Output {
    let mut command = device.syncd();
    command
        .arg("--once")
        .env_remove("PRISM_SYNC_CRYPT_PASSWORD2");
    match password {
        Some(p) => command.env("PRISM_SYNC_CRYPT_PASSWORD", p),
        None => command.env_remove("PRISM_SYNC_CRYPT_PASSWORD"),
    };
    command.output().expect("run prism-syncd --once")
}

fn synced(device: &Device) {
    let out = once_with(device, Some(PASSWORD));
    assert!(out.status.success(), "{}: {}", device.name, text(&out));
}

fn rclone(remote: &Path, args: &[&str]) -> Output {
    let obscured = Command::new("rclone")
        .args(["obscure", PASSWORD])
        .output()
        .expect("run rclone obscure");
    let out = Command::new("rclone")
        .env("RCLONE_CONFIG", remote.with_extension("rclone.conf"))
        .env("RCLONE_CONFIG_X_TYPE", "crypt")
        .env("RCLONE_CONFIG_X_REMOTE", remote)
        .env(
            "RCLONE_CONFIG_X_PASSWORD",
            String::from_utf8(obscured.stdout).unwrap().trim(),
        )
        // The agents' own folder is not part of the synced tree.
        .args([
            "--exclude",
            "/.prism-sync/**",
            "--exclude",
            "/.prism-sync-root",
        ])
        .args(args)
        .output()
        .expect("run rclone");
    assert!(out.status.success(), "rclone {args:?}: {}", text(&out));
    out
}

/// Every name and content below `remote`, outside the agents' own
/// metadata folder.
fn remote_files(remote: &Path) -> Vec<(String, Vec<u8>)> {
    files_below(remote)
        .into_iter()
        .filter(|(name, _)| !name.starts_with(".prism-sync"))
        .collect()
}

#[test]
fn two_agents_converge_through_an_encrypted_remote_that_rclone_reads() {
    let sandbox = Sandbox::new();
    let remote = sandbox.remote("remote");
    let laptop = encrypted_device(&sandbox, "laptop", &remote);
    let desktop = encrypted_device(&sandbox, "desktop", &remote);
    let secret_line = "the secret plan, line after line\n".repeat(3000);
    write(&laptop.local, "notes/plan.txt", &secret_line);
    write(&laptop.local, "notes/empty.txt", "");
    write(&laptop.local, "Ünïcödé/名前.md", "unicode secret\n");
    fs::write(laptop.local.join("chunk.bin"), vec![7u8; 64 * 1024]).unwrap();
    synced(&laptop);

    for (name, bytes) in remote_files(&remote) {
        crate::crypt_names::assert_encrypted_name(&name);
        let content = String::from_utf8_lossy(&bytes);
        assert!(
            !content.contains("secret") && !content.contains("the secret plan"),
            "plain content on the remote: {name}"
        );
    }
    // Records (the change log) are ciphertext too.
    for (name, bytes) in files_below(&remote.join(".prism-sync")) {
        let content = String::from_utf8_lossy(&bytes);
        assert!(!content.contains("plan.txt"), "a plain path in {name}");
    }

    synced(&desktop);
    assert_eq!(tree(&desktop.local), tree(&laptop.local));

    write(
        &desktop.local,
        "notes/plan.txt",
        "rewritten on the desktop\n",
    );
    fs::remove_file(desktop.local.join("notes/empty.txt")).unwrap();
    write(&desktop.local, "new/from desktop.txt", "hello\n");
    synced(&desktop);
    synced(&laptop);
    assert_eq!(tree(&laptop.local), tree(&desktop.local));
    assert_eq!(
        read(&laptop.local, "notes/plan.txt"),
        "rewritten on the desktop\n"
    );
    assert!(!laptop.local.join("notes/empty.txt").exists());

    // The replaced and deleted versions are in the remote's trash, still
    // encrypted, and rclone reads them there.
    let batches: Vec<_> = fs::read_dir(remote_trash(&remote))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let mut recovered = Vec::new();
    for (i, batch) in batches.iter().enumerate() {
        let out = sandbox.path(&format!("trash-{i}"));
        rclone(batch, &["copy", "X:", out.to_str().unwrap()]);
        recovered.extend(files_below(&out));
    }
    recovered.sort();
    let trash_listing: Vec<(String, usize)> = files_below(&remote_trash(&remote))
        .into_iter()
        .map(|(name, bytes)| (name, bytes.len()))
        .collect();
    assert_eq!(
        recovered,
        [
            ("notes/empty.txt".to_owned(), Vec::new()),
            (
                "notes/plan.txt".to_owned(),
                secret_line.clone().into_bytes()
            )
        ],
        "the remote's trash holds {trash_listing:?}"
    );

    // rclone, with nothing but the password, reads every file back...
    let back = sandbox.path("rclone-copy");
    rclone(&remote, &["copy", "X:", back.to_str().unwrap()]);
    assert_eq!(tree(&back), tree(&laptop.local));
    // ...and what it writes, the agents sync down.
    let mut rcat = Command::new("rclone");
    let obscured = Command::new("rclone")
        .args(["obscure", PASSWORD])
        .output()
        .unwrap();
    let mut child = rcat
        .env("RCLONE_CONFIG", remote.with_extension("rclone.conf"))
        .env("RCLONE_CONFIG_X_TYPE", "crypt")
        .env("RCLONE_CONFIG_X_REMOTE", &remote)
        .env(
            "RCLONE_CONFIG_X_PASSWORD",
            String::from_utf8(obscured.stdout).unwrap().trim(),
        )
        .args(["rcat", "X:notes/from rclone.txt"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"written by rclone\n")
        .unwrap();
    assert!(child.wait().unwrap().success());
    synced(&laptop);
    assert_eq!(
        read(&laptop.local, "notes/from rclone.txt"),
        "written by rclone\n"
    );
}

/// A file saved several times within a minute leaves a version per save
/// in the remote's trash, each under its own encrypted path (a batch of
/// its own when the minute's batch holds one already), so rclone reads
/// every one of them back.
#[test]
fn every_version_trashed_within_one_minute_is_read_back_by_rclone() {
    let sandbox = Sandbox::new();
    let remote = sandbox.remote("remote");
    let laptop = encrypted_device(&sandbox, "laptop", &remote);
    let saves = [
        "draft 1\n",
        "draft 2, longer\n",
        "draft 3, longer still\n",
        "final\n",
    ];
    for save in saves {
        write(&laptop.local, "notes/plan.txt", save);
        synced(&laptop);
    }
    let mut recovered = Vec::new();
    for (i, batch) in fs::read_dir(remote_trash(&remote)).unwrap().enumerate() {
        let out = sandbox.path(&format!("trash-{i}"));
        rclone(
            &batch.unwrap().path(),
            &["copy", "X:", out.to_str().unwrap()],
        );
        recovered.extend(files_below(&out));
    }
    recovered.sort();
    let mut expected: Vec<(String, Vec<u8>)> = saves[..saves.len() - 1]
        .iter()
        .map(|save| ("notes/plan.txt".to_owned(), save.as_bytes().to_vec()))
        .collect();
    expected.sort();
    assert_eq!(
        recovered,
        expected,
        "the remote's trash holds {:?}",
        files_below(&remote_trash(&remote))
            .keys()
            .collect::<Vec<_>>()
    );
}

#[test]
fn a_wrong_or_missing_password_is_one_clear_line_and_changes_nothing() {
    let sandbox = Sandbox::new();
    let remote = sandbox.remote("remote");
    let laptop = encrypted_device(&sandbox, "laptop", &remote);
    write(&laptop.local, "a.txt", "from the laptop\n");
    synced(&laptop);

    let desktop = encrypted_device(&sandbox, "desktop", &remote);
    write(&desktop.local, "b.txt", "from the desktop\n");
    let remote_before = tree(&remote);
    let local_before = tree(&desktop.local);
    for (password, expected) in [
        (Some("not the password"), "wrong crypt password"),
        (None, "password set --crypt p"),
    ] {
        let out = once_with(&desktop, password);
        assert!(!out.status.success(), "{}", text(&out));
        let said = text(&out);
        assert!(said.contains(expected), "{said}");
        assert!(
            !said.contains(PASSWORD) && !said.contains("not the password"),
            "{said}"
        );
        assert_eq!(
            tree(&remote),
            remote_before,
            "nothing was written to the remote"
        );
        assert_eq!(
            tree(&desktop.local),
            local_before,
            "nothing was written locally"
        );
    }
}

#[test]
fn encryption_is_not_turned_on_over_a_plain_remote() {
    let sandbox = Sandbox::new();
    let remote = sandbox.remote("remote");
    let plain = sandbox.device("plain", &remote);
    write(&plain.local, "a.txt", "plain\n");
    plain.once_expecting(0);
    let encrypted = encrypted_device(&sandbox, "encrypted", &remote);
    write(&encrypted.local, "b.txt", "would be encrypted\n");
    let remote_before = tree(&remote);
    let out = once_with(&encrypted, Some(PASSWORD));
    assert!(!out.status.success());
    assert!(text(&out).contains("not encrypted"), "{}", text(&out));
    assert_eq!(tree(&remote), remote_before);
    assert!(!encrypted.local.join("a.txt").exists());
}

/// `command` with no secret store reachable (no session bus), so
/// passwords go to and come from the credentials file.
fn without_secret_store(command: &mut Command, home: &Path) {
    let run = home.join("run");
    fs::create_dir_all(&run).unwrap();
    command
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .env("XDG_RUNTIME_DIR", run)
        .env_remove("PRISM_SYNC_CRYPT_PASSWORD")
        .env_remove("PRISM_SYNC_CRYPT_PASSWORD2");
}

fn password_command(device: &Device, args: &[&str], stdin: &str) -> Output {
    use std::io::Write;
    let mut command = Command::new(env!("CARGO_BIN_EXE_prism-syncctl"));
    without_secret_store(&mut command, device.config.parent().unwrap());
    let mut child = command
        .arg("password")
        .args(args)
        .arg("--config")
        .arg(&device.config)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A command refused before it reads stdin has closed it: a broken
    // pipe here is that, and its answer says why.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    child.wait_with_output().unwrap()
}

#[test]
fn the_crypt_password_and_salt_are_kept_by_prism_syncctl_and_nowhere_else() {
    let sandbox = Sandbox::new();
    let remote = sandbox.remote("remote");
    let device = encrypted_device(&sandbox, "laptop", &remote);
    write(&device.local, "a.txt", "private\n");
    let salt = "pepper and salt";
    for (args, secret) in [
        (&["set", "--crypt", "p"][..], PASSWORD),
        (&["set", "--crypt", "--password2", "p"][..], salt),
    ] {
        let out = password_command(&device, args, &format!("{secret}\n"));
        assert!(out.status.success(), "{}", text(&out));
        assert!(text(&out).contains("crypt-passwords"), "{}", text(&out));
        assert!(!text(&out).contains(secret));
    }
    let out = password_command(&device, &["where", "--crypt", "p"], "");
    assert!(
        out.status.success() && text(&out).contains("crypt://p"),
        "{}",
        text(&out)
    );
    let out = password_command(&device, &["set", "--crypt", "nope"], "x\n");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    let mut once = device.syncd();
    without_secret_store(&mut once, device.config.parent().unwrap());
    let out = once.arg("--once").output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains(PASSWORD) && !text(&out).contains(salt));

    // Written with the salt: rclone needs both to read it.
    let back = sandbox.path("back");
    let obscure = |s: &str| {
        let out = Command::new("rclone")
            .args(["obscure", s])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let out = Command::new("rclone")
        .env("RCLONE_CONFIG", sandbox.path("rclone.conf"))
        .env("RCLONE_CONFIG_X_TYPE", "crypt")
        .env("RCLONE_CONFIG_X_REMOTE", &remote)
        .env("RCLONE_CONFIG_X_PASSWORD", obscure(PASSWORD))
        .env("RCLONE_CONFIG_X_PASSWORD2", obscure(salt))
        .args(["copy", "--exclude", "/.prism-sync/**", "X:"])
        .arg(&back)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(read(&back, "a.txt"), "private\n");

    // The secrets are in the owner-only credentials file and nowhere else.
    let credentials = device.config.parent().unwrap().join("crypt-passwords");
    for (name, bytes) in files_below(device.config.parent().unwrap())
        .into_iter()
        .chain(files_below(&remote))
    {
        let content = String::from_utf8_lossy(&bytes);
        if name == "crypt-passwords" {
            continue;
        }
        assert!(
            !content.contains(PASSWORD) && !content.contains(salt),
            "{name} holds a secret"
        );
    }
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(&credentials).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[test]
fn a_name_too_long_once_encrypted_is_reported_and_the_rest_syncs() {
    let sandbox = Sandbox::new();
    let remote = sandbox.remote("remote");
    let device = encrypted_device(&sandbox, "laptop", &remote);
    let long = format!("{}.txt", "n".repeat(150));
    write(&device.local, &long, "kept locally\n");
    write(&device.local, "short.txt", "synced\n");
    let out = once_with(&device, Some(PASSWORD));
    let said = text(&out);
    assert!(said.contains("too long to be encrypted"), "{said}");
    let back = sandbox.path("back");
    rclone(&remote, &["copy", "X:", back.to_str().unwrap()]);
    assert_eq!(read(&back, "short.txt"), "synced\n");
    assert!(!back.join(&long).exists());
    assert_eq!(read(&device.local, &long), "kept locally\n");
}

/// A version another device trashed on an encrypted remote is listed by
/// `history` (the trash log names it as the encrypting layer reported it)
/// and restored through the layer, decrypted and checked.
#[test]
fn a_version_another_device_trashed_through_the_encryption_is_listed_and_restored() {
    let sandbox = Sandbox::new();
    let remote = sandbox.remote("remote");
    let a = encrypted_device(&sandbox, "devA", &remote);
    let b = encrypted_device(&sandbox, "devB", &remote);
    write(&a.local, "notes.txt", "first\n");
    synced(&a);
    synced(&b);
    write(&b.local, "notes.txt", "second, from B\n");
    synced(&b);
    write(&b.local, "notes.txt", "third, from B\n");
    synced(&b);
    synced(&a);
    assert_eq!(read(&a.local, "notes.txt"), "third, from B\n");

    let _agent = a.start_with_env(&[("PRISM_SYNC_CRYPT_PASSWORD", PASSWORD)]);
    let history = a.ctl_json(&["history", "notes.txt", "--pair", PAIR]);
    let second = prism_sync::model::ContentHash::of_bytes(b"second, from B\n").to_hex();
    let listed = history["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["where"] == "remote_trash" && v["hash"] == second.as_str())
        .unwrap_or_else(|| panic!("B's second version in the remote trash: {history}"));
    assert_eq!(listed["trashed_by"], "devB", "{history}");
    let version = listed["version"].as_str().unwrap().to_owned();
    let restored = a.ctl_json(&[
        "restore",
        "notes.txt",
        "--pair",
        PAIR,
        "--version",
        &version,
    ]);
    assert_eq!(restored["status"], "restored", "{restored}");
    assert_eq!(read(&a.local, "notes.txt"), "second, from B\n");
}
