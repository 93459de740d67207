//! A real Secret Service for the tests: a private D-Bus session bus
//! (`dbus-daemon --session --nofork` on a socket in a temporary folder) and
//! `gnome-keyring-daemon --foreground --unlock --components=secrets` on it,
//! its login keyring created and unlocked with a throwaway password and
//! kept in the same temporary folder. Nothing of the machine's or the
//! user's own session is touched: programs that should reach this store
//! get [`SecretService::address`] as `DBUS_SESSION_BUS_ADDRESS`.
//!
//! A missing `dbus-daemon`, `gnome-keyring-daemon` or `secret-tool` fails
//! the test with the package to install; it never skips. Both daemons are
//! killed when the harness is dropped.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TOOLS: [(&str, &str); 4] = [
    ("dbus-daemon", "dbus-daemon"),
    ("dbus-send", "dbus-bin"),
    ("gnome-keyring-daemon", "gnome-keyring"),
    ("secret-tool", "libsecret-tools"),
];

pub struct SecretService {
    dir: tempfile::TempDir,
    address: String,
    bus: Child,
    keyring: Option<Child>,
}

impl SecretService {
    /// Starts the bus and the keyring and waits until the keyring owns
    /// `org.freedesktop.secrets`.
    pub fn start() -> SecretService {
        for (tool, package) in TOOLS {
            assert!(
                on_path(tool),
                "{tool} is missing: install the {package} package (apt-get install {package}) \
                 to run the secret store tests"
            );
        }
        let dir = tempfile::tempdir().expect("a temp dir for the secret service");
        let root = dir.path();
        for sub in ["run", "data", "config"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        set_private(&root.join("run"));
        let socket = root.join("bus");
        let mut bus = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--print-address=1"])
            .arg(format!("--address=unix:path={}", socket.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            // As root it complains that it cannot raise its fd limit; harmless.
            .stderr(Stdio::null())
            .spawn()
            .expect("start dbus-daemon");
        let address = read_line(bus.stdout.as_mut().unwrap());
        assert!(
            address.starts_with("unix:"),
            "dbus-daemon printed no address: {address:?}"
        );
        let mut service = SecretService {
            dir,
            address,
            bus,
            keyring: None,
        };
        let mut keyring = service
            .command("gnome-keyring-daemon")
            .args(["--foreground", "--unlock", "--components=secrets"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start gnome-keyring-daemon");
        // --unlock reads the login keyring's password from stdin until EOF.
        let mut stdin = keyring.stdin.take().unwrap();
        stdin.write_all(b"keyring-test-unlock").unwrap();
        drop(stdin);
        service.keyring = Some(keyring);
        service.wait_for_keyring();
        service
    }

    /// The bus's address, for `DBUS_SESSION_BUS_ADDRESS`.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The secret of the item with these attributes, read with
    /// `secret-tool` (libsecret), a client independent of ours.
    pub fn lookup(&self, attributes: &[(&str, &str)]) -> Option<String> {
        let mut command = self.command("secret-tool");
        command.arg("lookup");
        for (key, value) in attributes {
            command.args([key, value]);
        }
        let out = command.output().expect("run secret-tool");
        out.status
            .success()
            .then(|| String::from_utf8(out.stdout).unwrap())
    }

    /// A command that talks to this bus and no other.
    pub fn command(&self, program: &str) -> Command {
        let root = self.dir.path();
        let mut command = Command::new(program);
        command
            .env("DBUS_SESSION_BUS_ADDRESS", &self.address)
            .env("XDG_RUNTIME_DIR", root.join("run"))
            .env("XDG_DATA_HOME", root.join("data"))
            .env("XDG_CONFIG_HOME", root.join("config"))
            .env("HOME", root);
        command
    }

    fn wait_for_keyring(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let owned = self
                .command("dbus-send")
                .args([
                    "--session",
                    "--print-reply",
                    "--dest=org.freedesktop.DBus",
                    "/org/freedesktop/DBus",
                    "org.freedesktop.DBus.NameHasOwner",
                    "string:org.freedesktop.secrets",
                ])
                .output()
                .expect("run dbus-send");
            if String::from_utf8_lossy(&owned.stdout).contains("boolean true") {
                return;
            }
            if let Some(status) = self.keyring.as_mut().unwrap().try_wait().unwrap() {
                panic!("gnome-keyring-daemon exited at start: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "gnome-keyring-daemon did not take org.freedesktop.secrets on the bus in 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for SecretService {
    fn drop(&mut self) {
        for child in self
            .keyring
            .iter_mut()
            .chain(std::iter::once(&mut self.bus))
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn read_line(from: &mut impl Read) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8];
    while from.read(&mut byte).unwrap_or(0) == 1 && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    String::from_utf8(line).unwrap()
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
}

fn set_private(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
}
