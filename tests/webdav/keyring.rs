//! Where a WebDAV password lives, end to end: `prism-syncctl password set`
//! puts it into a real Secret Service (gnome-keyring on a private D-Bus
//! bus, see `secret_service`) and `prism-syncd` logs in with it from there;
//! without a session bus the same command writes the owner-only
//! credentials file and the agent reads it, logging the missing store at
//! debug level only. A password given with a `/sync/start` request goes
//! the same way, into the store, and the running agent logs in with it. In
//! every case the password appears in no file under the config and state
//! dirs and in no output.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::apache::{Apache, Share};
use crate::files::{put, text};
use crate::secret_service::SecretService;

/// A config dir with one pair on the Basic-auth share, a state dir and a
/// local folder, all below one HOME of the test's own.
struct Setup {
    home: PathBuf,
    local: PathBuf,
    config: PathBuf,
    account: String,
}

impl Setup {
    fn new(server: &Apache, name: &str) -> Setup {
        let home = server.scratch(name);
        let local = home.join("local");
        let config_dir = home.join("config");
        fs::create_dir_all(&local).unwrap();
        fs::create_dir_all(&config_dir).unwrap();
        let config = config_dir.join("config.toml");
        fs::write(
            &config,
            format!(
                "[[pair]]\nname = \"p\"\nlocal = \"{}\"\nremote = \"{}\"\nusername = \"{}\"\n",
                local.display(),
                server.url(Share::Auth, ""),
                Apache::USER,
            ),
        )
        .unwrap();
        let account = format!("webdav://{}@127.0.0.1:{}", Apache::USER, server.port());
        Setup {
            home,
            local,
            config,
            account,
        }
    }

    fn config_dir(&self) -> PathBuf {
        self.config.parent().unwrap().to_path_buf()
    }

    fn state(&self) -> PathBuf {
        self.home.join("state")
    }

    /// A command with this HOME, none of the caller's prism or password
    /// variables, and the session bus of `keys` (or none at all).
    fn command(&self, program: &str, keys: Option<&SecretService>) -> Command {
        let mut command = Command::new(program);
        command
            .env("HOME", &self.home)
            .env("RUST_LOG", "prism_sync=debug")
            .env_remove("PRISM_SYNC_WEBDAV_PASSWORD")
            .env_remove("PRISM_SYNC_CONFIG")
            .env_remove("PRISM_SYNC_STATE_DIR")
            .env_remove("PRISM_SYNC_SOCKET");
        match keys {
            Some(keys) => {
                command.env("DBUS_SESSION_BUS_ADDRESS", keys.address());
            }
            None => {
                // zbus falls back to $XDG_RUNTIME_DIR/bus: point it at an
                // empty folder so no bus of the machine is found either.
                let run = self.home.join("run");
                fs::create_dir_all(&run).unwrap();
                command
                    .env_remove("DBUS_SESSION_BUS_ADDRESS")
                    .env("XDG_RUNTIME_DIR", run);
            }
        }
        command
    }

    /// `prism-syncctl --json password ARGS… PAIR --config FILE`, with `stdin`.
    fn password(&self, keys: Option<&SecretService>, args: &[&str], stdin: &str) -> Output {
        let mut child = self
            .command(env!("CARGO_BIN_EXE_prism-syncctl"), keys)
            .arg("--json")
            .arg("password")
            .args(args)
            .arg("p")
            .arg("--config")
            .arg(&self.config)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run prism-syncctl");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    fn once(&self, keys: Option<&SecretService>) -> Output {
        self.command(env!("CARGO_BIN_EXE_prism-syncd"), keys)
            .arg("--config")
            .arg(&self.config)
            .arg("--state-dir")
            .arg(self.state())
            .arg("--once")
            .output()
            .expect("run prism-syncd --once")
    }

    /// Fails if `password` is in any file below the config or state dir.
    fn assert_nowhere_on_disk(&self, password: &str) {
        let mut checked = 0;
        for dir in [self.config_dir(), self.state()] {
            for file in files_below(&dir) {
                let bytes = fs::read(&file).unwrap();
                assert!(
                    !bytes
                        .windows(password.len())
                        .any(|w| w == password.as_bytes()),
                    "{} holds the password",
                    file.display()
                );
                checked += 1;
            }
        }
        assert!(checked >= 2, "the config and the journal were checked");
    }
}

fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            found.extend(files_below(&entry.path()));
        } else if kind.is_file() {
            found.push(entry.path());
        }
    }
    found
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(out)))
}

fn assert_not_shown(out: &Output, password: &str) {
    let shown = text(out);
    assert!(!shown.contains(password), "{shown}");
}

#[test]
fn a_password_set_with_prism_syncctl_is_kept_in_the_secret_store_and_logs_in() {
    let server = Apache::start();
    let keys = SecretService::start();
    let setup = Setup::new(&server, "laptop");
    put(&setup.local, "a.txt", "a\n");

    let set = setup.password(Some(&keys), &["set"], &format!("{}\n", Apache::PASSWORD));
    assert_eq!(set.status.code(), Some(0), "{}", text(&set));
    assert_not_shown(&set, Apache::PASSWORD);
    assert_eq!(
        json(&set),
        serde_json::json!({"account": setup.account,
                           "stored_in": {"place": "secret_store", "service": "prism-sync"}})
    );
    // Read back with libsecret, a client that is not ours.
    assert_eq!(
        keys.lookup(&[("service", "prism-sync"), ("username", &setup.account)])
            .as_deref(),
        Some(Apache::PASSWORD)
    );
    assert!(
        !setup.config_dir().join("webdav-passwords").exists(),
        "no credentials file is written when the secret store took the password"
    );
    let found = setup.password(Some(&keys), &["where"], "");
    assert_eq!(found.status.code(), Some(0), "{}", text(&found));
    assert_eq!(json(&found)["used"]["place"], "secret_store");

    let out = setup.once(Some(&keys));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_not_shown(&out, Apache::PASSWORD);
    assert_eq!(
        fs::read_to_string(server.served(Share::Auth).join("a.txt")).unwrap(),
        "a\n"
    );
    setup.assert_nowhere_on_disk(Apache::PASSWORD);
    assert!(!server.log().contains(Apache::PASSWORD));

    // Removed from the store, the login has no password and is refused:
    // the store really was where it came from.
    let removed = setup.password(Some(&keys), &["remove"], "");
    assert_eq!(removed.status.code(), Some(0), "{}", text(&removed));
    assert_eq!(json(&removed)["removed_from"][0]["place"], "secret_store");
    assert_eq!(
        keys.lookup(&[("service", "prism-sync"), ("username", &setup.account)]),
        None
    );
    put(&setup.local, "b.txt", "b\n");
    let out = setup.once(Some(&keys));
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    let shown = text(&out);
    assert!(shown.contains("401"), "{shown}");
    assert!(
        shown.contains(&format!("prism-syncctl password set {}", setup.account)),
        "the refusal says how to store the password: {shown}"
    );
}

#[test]
fn without_a_session_bus_the_password_goes_to_a_private_file_and_logs_in() {
    let server = Apache::start();
    let setup = Setup::new(&server, "headless");
    put(&setup.local, "a.txt", "a\n");

    let set = setup.password(None, &["set"], &format!("{}\n", Apache::PASSWORD));
    assert_eq!(set.status.code(), Some(0), "{}", text(&set));
    assert_not_shown(&set, Apache::PASSWORD);
    let file = setup.config_dir().join("webdav-passwords");
    assert_eq!(json(&set)["stored_in"]["place"], "file");
    assert_eq!(json(&set)["stored_in"]["path"], file.display().to_string());
    assert!(set.stderr.is_empty(), "{}", text(&set));
    let mode = fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the credentials file is private");
    assert_eq!(
        fs::read_to_string(&file).unwrap(),
        format!(
            "{}@127.0.0.1:{} {}\n",
            Apache::USER,
            server.port(),
            Apache::PASSWORD
        )
    );
    let found = setup.password(None, &["where"], "");
    assert_eq!(json(&found)["used"]["place"], "file", "{}", text(&found));

    let out = setup.once(None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_not_shown(&out, Apache::PASSWORD);
    assert_eq!(
        fs::read_to_string(server.served(Share::Auth).join("a.txt")).unwrap(),
        "a\n"
    );
    // The missing store is not a problem worth more than a debug line.
    let log = String::from_utf8_lossy(&out.stderr);
    let about_store: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("secret store"))
        .collect();
    assert!(!about_store.is_empty(), "{log}");
    assert!(
        about_store.iter().all(|line| line.contains("DEBUG")),
        "{about_store:#?}"
    );
    // Only the credentials file holds it.
    let in_file = files_below(&setup.config_dir());
    assert!(in_file.contains(&file));
    fs::remove_file(&file).unwrap();
    setup.assert_nowhere_on_disk(Apache::PASSWORD);
}

#[test]
fn credentials_in_a_sync_start_request_are_kept_in_the_secret_store_and_used() {
    use prism_sync::api::wire::{Credentials, StartSyncRequest, SyncState};
    use prism_sync::api::{Client, ClientError};
    use std::time::{Duration, Instant};

    let server = Apache::start();
    let keys = SecretService::start();
    let setup = Setup::new(&server, "api");
    put(&setup.local, "a.txt", "a\n");
    let socket = setup.state().join("prism-syncd.sock");
    let log = setup.home.join("agent.log");
    let log_file = fs::File::create(&log).unwrap();
    let agent = setup
        .command(env!("CARGO_BIN_EXE_prism-syncd"), Some(&keys))
        .arg("--config")
        .arg(&setup.config)
        .arg("--state-dir")
        .arg(setup.state())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .expect("start prism-syncd");
    let agent = KillOnDrop(agent);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut client = loop {
        match Client::connect(&socket) {
            Ok(client) => break client,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("the agent does not answer: {e}"),
        }
    };
    let request = |username: &str| StartSyncRequest {
        pair: Some("p".into()),
        credentials: Some(Credentials {
            username: username.into(),
            password: Apache::PASSWORD.into(),
        }),
        ..StartSyncRequest::default()
    };

    // Another user than the pair's is refused and nothing is stored.
    match client.start_sync(&request("mallory")) {
        Err(ClientError::Api(e)) => {
            assert_eq!(e.code, 400, "{e}");
            assert!(!e.to_string().contains(Apache::PASSWORD), "{e}");
        }
        other => panic!("expected a 400, got {other:?}"),
    }
    assert_eq!(
        keys.lookup(&[("service", "prism-sync"), ("username", &setup.account)]),
        None
    );

    let mut started = client.start_sync(&request(Apache::USER)).unwrap();
    assert_eq!(
        keys.lookup(&[("service", "prism-sync"), ("username", &setup.account)])
            .as_deref(),
        Some(Apache::PASSWORD),
        "stored before the answer"
    );
    // The run the request answers with may be the start-up sync that began
    // before the password was there; a later one must log in with it.
    loop {
        let status = client.sync_status(&started.sync_id).unwrap();
        match status.status {
            SyncState::Completed => break,
            SyncState::SyncInProgress => {}
            _ => started = client.start_sync(&StartSyncRequest::default()).unwrap(),
        }
        assert!(
            Instant::now() < deadline,
            "no sync completed: {status:?}\n{}",
            fs::read_to_string(&log).unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        fs::read_to_string(server.served(Share::Auth).join("a.txt")).unwrap(),
        "a\n"
    );
    drop(agent);
    let logged = fs::read_to_string(&log).unwrap();
    assert!(!logged.contains(Apache::PASSWORD), "{logged}");
    assert!(
        !setup.config_dir().join("webdav-passwords").exists(),
        "the secret store took it, no file did"
    );
    setup.assert_nowhere_on_disk(Apache::PASSWORD);
}

/// A child process that is killed when the test ends, even by a panic.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_wrong_password_in_a_sync_start_request_fails_that_sync() {
    use prism_sync::api::Client;
    use prism_sync::api::wire::{Credentials, StartSyncRequest, SyncState, SyncStatus};
    use std::time::{Duration, Instant};

    let server = Apache::start();
    let setup = Setup::new(&server, "wrong");
    put(&setup.local, "a.txt", "a\n");
    let socket = setup.state().join("prism-syncd.sock");
    let log = setup.home.join("agent.log");
    let log_file = fs::File::create(&log).unwrap();
    let agent = setup
        .command(env!("CARGO_BIN_EXE_prism-syncd"), None)
        .arg("--config")
        .arg(&setup.config)
        .arg("--state-dir")
        .arg(setup.state())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .expect("start prism-syncd");
    let _agent = KillOnDrop(agent);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut client = loop {
        match Client::connect(&socket) {
            Ok(client) => break client,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("the agent does not answer: {e}"),
        }
    };
    let mut sync_with = |password: &str| -> SyncStatus {
        let started = client
            .start_sync(&StartSyncRequest {
                pair: Some("p".into()),
                credentials: Some(Credentials {
                    username: Apache::USER.into(),
                    password: password.into(),
                }),
                ..StartSyncRequest::default()
            })
            .unwrap();
        loop {
            let status = client.sync_status(&started.sync_id).unwrap();
            if status.status != SyncState::SyncInProgress {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the sync never ended: {status:?}\n{}",
                fs::read_to_string(&log).unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let wrong = "not-the-password";
    // Wrong from the start, then wrong after the right one logged in (the
    // agent must not keep using the login it had), then right again.
    for (password, expected) in [
        (wrong, SyncState::Failed),
        (Apache::PASSWORD, SyncState::Completed),
        (wrong, SyncState::Failed),
        (Apache::PASSWORD, SyncState::Completed),
    ] {
        let status = sync_with(password);
        assert_eq!(
            status.status,
            expected,
            "{status:?}\n{}",
            fs::read_to_string(&log).unwrap()
        );
        if expected == SyncState::Failed {
            let error = status.error.unwrap_or_default();
            assert!(error.contains("401"), "{error}");
            assert!(!error.contains(wrong), "{error}");
        }
    }
    assert_eq!(
        fs::read_to_string(server.served(Share::Auth).join("a.txt")).unwrap(),
        "a\n"
    );
    let logged = fs::read_to_string(&log).unwrap();
    assert!(!logged.contains(wrong), "{logged}");
}
