//! The real `prism-syncd --once` syncing two local folders (two devices)
//! through one S3 prefix, on both servers: files, folders, edits,
//! deletions, a folder move and a conflict converge; replaced versions
//! are kept in the bucket's trash, where `history` lists them and
//! `restore` brings one back; a wrong secret is one clear error that
//! never shows the secret.

use std::fs;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Output};

use prism_sync::remote::s3::{S3Client, S3Error, S3Settings};

use crate::files::{put, text, tree};
use crate::{Server, both};

/// One device: a home (with no `~/.aws`), a local folder and a config
/// whose pair names the prefix.
struct Device {
    name: String,
    home: tempfile::TempDir,
    local: PathBuf,
    config: PathBuf,
    key_id: String,
    secret: String,
}

impl Device {
    fn new(name: &str, settings: &S3Settings) -> Device {
        let home = tempfile::tempdir().unwrap();
        let local = home.path().join("local");
        fs::create_dir_all(&local).unwrap();
        let config = home.path().join("config.toml");
        fs::write(
            &config,
            format!(
                "[agent]\ndevice = \"{name}\"\n[[pair]]\nname = \"p\"\nlocal = \"{}\"\n\
                 remote = \"s3://{}/{}\"\nendpoint = \"{}\"\nregion = \"{}\"\n",
                local.display(),
                settings.bucket,
                settings.prefix.trim_end_matches('/'),
                settings.endpoint.as_deref().unwrap(),
                settings.region,
            ),
        )
        .unwrap();
        let credentials = settings.credentials.explicit.clone().unwrap();
        Device {
            name: name.to_owned(),
            home,
            local,
            config,
            key_id: credentials.access_key_id,
            secret: credentials.secret_access_key.expose().to_owned(),
        }
    }

    /// A command of ours with no AWS credentials in its environment and no
    /// secret store (no D-Bus), so stored secrets go to the 0600 file.
    fn bare(&self, program: &str) -> Command {
        let run = self.home.path().join("run");
        fs::create_dir_all(&run).unwrap();
        let mut command = Command::new(program);
        command
            .env("HOME", self.home.path())
            .env("XDG_RUNTIME_DIR", run)
            .env_remove("DBUS_SESSION_BUS_ADDRESS")
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_SHARED_CREDENTIALS_FILE")
            .env_remove("AWS_CONFIG_FILE")
            .env_remove("PRISM_SYNC_S3_SECRET_ACCESS_KEY")
            .env_remove("PRISM_SYNC_CONFIG")
            .env_remove("PRISM_SYNC_STATE_DIR")
            .env_remove("PRISM_SYNC_SOCKET");
        command
    }

    fn once_with_secret(&self, secret: &str) -> Output {
        Command::new(env!("CARGO_BIN_EXE_prism-syncd"))
            .arg("--config")
            .arg(&self.config)
            .arg("--state-dir")
            .arg(self.home.path().join("state"))
            .arg("--device")
            .arg(&self.name)
            .arg("--once")
            .env("HOME", self.home.path())
            .env("RUST_LOG", "debug")
            .env("AWS_ACCESS_KEY_ID", &self.key_id)
            .env("AWS_SECRET_ACCESS_KEY", secret)
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_SHARED_CREDENTIALS_FILE")
            .env_remove("AWS_CONFIG_FILE")
            .env_remove("PRISM_SYNC_CONFIG")
            .env_remove("PRISM_SYNC_STATE_DIR")
            .env_remove("PRISM_SYNC_SOCKET")
            .output()
            .expect("run prism-syncd --once")
    }

    /// One sync; a conflict (exit 3) is a finished sync too.
    fn once(&self) -> Output {
        let out = self.once_with_secret(&self.secret);
        assert!(
            matches!(out.status.code(), Some(0) | Some(3)),
            "{}: {}",
            self.name,
            text(&out)
        );
        out
    }
}

/// Every object's content below `below` (relative to the prefix). A
/// running agent's lease and staged uploads come and go: one gone between
/// the listing and its read is left out.
fn objects(client: &S3Client, below: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for object in client.list(below, None).unwrap().objects {
        let mut content = String::new();
        match client.get(&object.key, 0, None) {
            Ok(mut body) => {
                body.read_to_string(&mut content).unwrap();
            }
            Err(S3Error::NoSuchKey { .. }) => continue,
            Err(e) => panic!("{}: {e}", object.key),
        }
        out.push((object.key, content));
    }
    out
}

both!(
    two_devices_converge_through_one_prefix,
    two_devices_converge
);
fn two_devices_converge(server: Server) {
    let settings = server.settings("agents", |_| {});
    let raw = S3Client::new(settings.clone()).unwrap();
    let laptop = Device::new("laptop", &settings);
    let desktop = Device::new("desktop", &settings);

    put(&laptop.local, "a.txt", "laptop a\n");
    put(&laptop.local, "docs/b c.txt", "laptop b\n");
    fs::create_dir_all(laptop.local.join("empty")).unwrap();
    laptop.once();
    put(&desktop.local, "from-desktop.txt", "desktop\n");
    desktop.once();
    laptop.once();
    assert_eq!(tree(&laptop.local), tree(&desktop.local));
    assert_eq!(
        tree(&laptop.local).keys().collect::<Vec<_>>(),
        ["a.txt", "docs/b c.txt", "from-desktop.txt"]
    );
    assert!(desktop.local.join("empty").is_dir(), "empty folders travel");
    // The bucket holds the files under their paths, and a marker for
    // each folder the agent made.
    let stored: Vec<String> = objects(&raw, "")
        .into_iter()
        .map(|(k, _)| k)
        .filter(|k| !k.starts_with(".prism-sync/"))
        .collect();
    assert_eq!(
        stored,
        [
            "a.txt",
            "docs/",
            "docs/b c.txt",
            "empty/",
            "from-desktop.txt"
        ]
    );

    // Edits, a deletion and a folder move reach the other device; the
    // replaced and deleted versions are kept in the bucket's trash.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    put(&laptop.local, "a.txt", "laptop a, edited\n");
    fs::remove_file(desktop.local.join("from-desktop.txt")).unwrap();
    laptop.once();
    desktop.once();
    fs::rename(laptop.local.join("docs"), laptop.local.join("moved")).unwrap();
    laptop.once();
    desktop.once();
    laptop.once();
    let converged = tree(&laptop.local);
    assert_eq!(converged, tree(&desktop.local));
    assert_eq!(
        converged.keys().collect::<Vec<_>>(),
        ["a.txt", "moved/b c.txt"]
    );
    assert_eq!(converged["a.txt"], "laptop a, edited\n");
    let trash: Vec<String> = objects(&raw, ".prism-sync/trash/")
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    assert!(trash.contains(&"laptop a\n".to_owned()), "{trash:?}");
    assert!(trash.contains(&"desktop\n".to_owned()), "{trash:?}");

    // Both edit one file: a conflict copy, nothing lost.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    put(&laptop.local, "a.txt", "laptop's edit\n");
    put(&desktop.local, "a.txt", "desktop's edit\n");
    laptop.once();
    desktop.once();
    laptop.once();
    let converged = tree(&laptop.local);
    assert_eq!(converged, tree(&desktop.local));
    let mut versions: Vec<&str> = converged
        .iter()
        .filter(|(k, _)| k.starts_with("a"))
        .map(|(_, v)| v.as_str())
        .collect();
    versions.sort();
    assert_eq!(
        versions,
        ["desktop's edit\n", "laptop's edit\n"],
        "{converged:?}"
    );
}

#[test]
fn a_wrong_secret_stops_the_sync_with_one_clear_error_that_never_shows_it() {
    const WRONG: &str = "Wr0ng-S3-Secret-Prism-9917";
    let settings = Server::Seaweed.settings("agents-wrong", |_| {});
    let device = Device::new("laptop", &settings);
    put(&device.local, "a.txt", "a\n");
    let out = device.once_with_secret(WRONG);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    let shown = text(&out);
    assert!(shown.contains("SignatureDoesNotMatch"), "{shown}");
    assert!(!shown.contains(WRONG), "{shown}");
    for entry in fs::read_dir(device.home.path().join("state"))
        .unwrap()
        .flatten()
    {
        if entry.file_type().unwrap().is_file() {
            let bytes = fs::read(entry.path()).unwrap();
            assert!(
                !bytes.windows(WRONG.len()).any(|w| w == WRONG.as_bytes()),
                "{} holds the secret",
                entry.path().display()
            );
        }
    }
}

#[test]
fn a_secret_stored_with_password_set_logs_the_pair_in_and_stays_off_the_config() {
    const SECRET: &str = crate::seaweedfs::Seaweed::SECRET_KEY;
    let settings = Server::Seaweed.settings("agents-stored", |_| {});
    let device = Device::new("laptop", &settings);
    let mut config = fs::read_to_string(&device.config).unwrap();
    config.push_str(&format!("access_key_id = \"{}\"\n", device.key_id));
    fs::write(&device.config, config).unwrap();
    put(&device.local, "a.txt", "a\n");

    // Nothing stored yet: one line that says how to store it.
    let out = device
        .bare(env!("CARGO_BIN_EXE_prism-syncd"))
        .arg("--config")
        .arg(&device.config)
        .arg("--state-dir")
        .arg(device.home.path().join("state"))
        .arg("--once")
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("password set"), "{}", text(&out));

    let mut child = device
        .bare(env!("CARGO_BIN_EXE_prism-syncctl"))
        .args(["password", "set", "p", "--config"])
        .arg(&device.config)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{SECRET}\n").as_bytes())
        .unwrap();
    let stored = child.wait_with_output().unwrap();
    assert_eq!(stored.status.code(), Some(0), "{}", text(&stored));
    let file = device.home.path().join("s3-secrets");
    assert!(file.exists(), "{}", text(&stored));
    assert!(!fs::read_to_string(&device.config).unwrap().contains(SECRET));

    let out = device
        .bare(env!("CARGO_BIN_EXE_prism-syncd"))
        .arg("--config")
        .arg(&device.config)
        .arg("--state-dir")
        .arg(device.home.path().join("state"))
        .arg("--once")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!text(&out).contains(SECRET));
    let raw = S3Client::new(settings).unwrap();
    let names: Vec<String> = objects(&raw, "").into_iter().map(|(k, _)| k).collect();
    assert!(names.contains(&"a.txt".to_owned()), "{names:?}");
}

#[test]
fn an_endpoint_nobody_answers_is_offline_not_a_failure_of_each_path() {
    let mut settings = Server::Moto.settings("agents-offline", |_| {});
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    settings.endpoint = Some(format!("http://127.0.0.1:{port}"));
    let device = Device::new("laptop", &settings);
    put(&device.local, "a.txt", "a\n");
    let out = device.once_with_secret(&device.secret);
    let shown = text(&out);
    assert_ne!(out.status.code(), Some(0), "{shown}");
    assert!(shown.contains("cannot be reached"), "{shown}");
    assert!(!shown.contains("a.txt: "), "no per-path failure: {shown}");
}

/// A running agent, killed when dropped.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Device {
    /// Starts the daemon (logging to `agent.log` in the home), killed when
    /// the returned value drops.
    fn start(&self) -> Running {
        let log = fs::File::create(self.home.path().join("agent.log")).unwrap();
        Running(
            self.bare(env!("CARGO_BIN_EXE_prism-syncd"))
                .arg("--config")
                .arg(&self.config)
                .arg("--state-dir")
                .arg(self.home.path().join("state"))
                .arg("--socket")
                .arg(self.socket())
                .env("AWS_ACCESS_KEY_ID", &self.key_id)
                .env("AWS_SECRET_ACCESS_KEY", &self.secret)
                .stdin(std::process::Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap(),
        )
    }

    fn socket(&self) -> PathBuf {
        self.home.path().join("agent.sock")
    }

    /// `prism-syncctl --socket S ARGS…` against the running daemon.
    fn ctl(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_prism-syncctl"))
            .arg("--socket")
            .arg(self.socket())
            .args(args)
            .env_remove("PRISM_SYNC_SOCKET")
            .output()
            .unwrap()
    }

    fn log(&self) -> String {
        fs::read_to_string(self.home.path().join("agent.log")).unwrap_or_default()
    }
}

/// Waits up to a minute for `check` to hold.
fn wait_until(what: &str, device: &Device, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !check() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within a minute\n{}",
            device.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

both!(
    a_version_in_the_bucket_trash_is_listed_and_restored,
    history_and_restore
);
fn history_and_restore(server: Server) {
    let settings = server.settings("agents-history", |_| {});
    let raw = S3Client::new(settings.clone()).unwrap();
    let device = Device::new("laptop", &settings);
    let on_s3 = |key: &str| objects(&raw, "").into_iter().find(|(k, _)| k == key);
    put(&device.local, "notes.txt", "first\n");
    device.once();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    put(&device.local, "notes.txt", "second, longer\n");
    device.once();
    assert_eq!(on_s3("notes.txt").unwrap().1, "second, longer\n");

    let _agent = device.start();
    let file = device.local.join("notes.txt");
    let file = file.to_str().unwrap();
    let mut history = serde_json::Value::Null;
    wait_until("the agent answers history", &device, || {
        let out = device.ctl(&["--json", "history", file]);
        if out.status.success() {
            history = serde_json::from_slice(&out.stdout).unwrap();
        }
        out.status.success()
    });
    let first = history["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["where"] == "remote_trash")
        .unwrap_or_else(|| panic!("no version in the bucket's trash: {history}"));
    assert_eq!(first["hash"], blake3::hash(b"first\n").to_hex().as_str());

    let version = first["version"].as_str().unwrap();
    let out = device.ctl(&["restore", file, "--version", version]);
    assert!(out.status.success(), "{}\n{}", text(&out), device.log());
    assert_eq!(
        fs::read_to_string(device.local.join("notes.txt")).unwrap(),
        "first\n"
    );
    wait_until("the restored version reaches the bucket", &device, || {
        on_s3("notes.txt").is_some_and(|(_, text)| text == "first\n")
    });
    wait_until(
        "the replaced version is in the bucket's trash",
        &device,
        || {
            objects(&raw, ".prism-sync/trash/")
                .iter()
                .any(|(_, text)| text == "second, longer\n")
        },
    );
}

#[test]
fn status_says_which_conditions_a_server_ignores() {
    // moto ignores `x-amz-copy-source-if-match`.
    let settings = Server::Moto.settings("agents-status", |_| {});
    let device = Device::new("laptop", &settings);
    put(&device.local, "a.txt", "a\n");
    let _agent = device.start();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut last = String::new();
    loop {
        let out = device.ctl(&["--json", "status"]);
        if out.status.success() {
            let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let problems = status["pairs"][0]["problems"].to_string();
            if problems.contains("ignores x-amz-copy-source-if-match") {
                assert!(!problems.contains(&device.secret), "{problems}");
                return;
            }
            last = status.to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "status never named the ignored condition: {last}\n{}",
            device.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

both!(
    two_devices_converge_through_an_encrypted_prefix,
    two_devices_converge_encrypted
);
fn two_devices_converge_encrypted(server: Server) {
    let settings = server.settings("vault", |_| {});
    let raw = S3Client::new(settings.clone()).unwrap();
    let devices = ["laptop", "desktop"].map(|name| {
        let device = Device::new(name, &settings);
        let mut config = fs::read_to_string(&device.config).unwrap();
        config.push_str("encryption = \"crypt\"\n");
        fs::write(&device.config, config).unwrap();
        // The crypt password in the owner-only credentials file beside
        // the config.
        let file = device.home.path().join("crypt-passwords");
        fs::write(&file, "p an s3 crypt password\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
        device
    });
    let [laptop, desktop] = &devices;
    put(&laptop.local, "plans/q1.txt", "a private plan\n");
    put(&desktop.local, "Ünïcödé.md", "desktop notes\n");
    fs::write(laptop.local.join("big.bin"), vec![9u8; 300_000]).unwrap();
    laptop.once();
    desktop.once();
    laptop.once();
    assert_eq!(tree(&laptop.local), tree(&desktop.local));
    assert_eq!(tree(&desktop.local)["plans/q1.txt"], "a private plan\n");

    std::thread::sleep(std::time::Duration::from_millis(1100));
    put(&laptop.local, "plans/q1.txt", "laptop's plan\n");
    put(&desktop.local, "plans/q1.txt", "desktop's plan\n");
    laptop.once();
    desktop.once();
    laptop.once();
    let converged = tree(&laptop.local);
    assert_eq!(converged, tree(&desktop.local));
    let mut plans: Vec<&str> = converged
        .iter()
        .filter(|(k, _)| k.starts_with("plans/"))
        .map(|(_, v)| v.as_str())
        .collect();
    plans.sort();
    assert_eq!(plans, ["desktop's plan\n", "laptop's plan\n"]);

    // Every object is a crypt file under an encrypted key.
    let mut files = 0;
    for object in raw.list("", None).unwrap().objects {
        if object.key.starts_with(".prism-sync/") || object.key.ends_with('/') {
            continue;
        }
        crate::crypt_names::assert_encrypted_name(&object.key);
        let mut bytes = Vec::new();
        raw.get(&object.key, 0, None)
            .unwrap()
            .read_to_end(&mut bytes)
            .unwrap();
        assert!(bytes.starts_with(b"RCLONE\0\0"), "{}", object.key);
        assert!(!String::from_utf8_lossy(&bytes).contains("plan"));
        files += 1;
    }
    assert_eq!(files, converged.len());
}
