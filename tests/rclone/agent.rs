//! Devices converging through one rclone remote (rclone's `crypt` too),
//! old versions in the remote's trash, and a remote name the rclone config
//! does not have.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::apache::{Apache, Share};
use crate::files::{put, text, tree};
use crate::moto::Moto;

/// A folder that rclone's `local` backend serves as the remote `disk`,
/// and an rclone config file defining it.
pub struct Disk {
    pub dir: tempfile::TempDir,
}

impl Disk {
    pub fn new() -> Disk {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("remote")).unwrap();
        fs::write(dir.path().join("rclone.conf"), "[disk]\ntype = local\n").unwrap();
        Disk { dir }
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("rclone.conf")
    }

    pub fn served(&self) -> PathBuf {
        self.dir.path().join("remote")
    }

    pub fn remote(&self) -> String {
        format!("rclone:disk:{}", self.served().display())
    }
}

/// One device: a home, a local folder and a config whose pair is the
/// rclone remote.
pub struct Device {
    pub name: String,
    pub home: tempfile::TempDir,
    pub local: PathBuf,
    config: PathBuf,
    /// The agent's `XDG_RUNTIME_DIR` (`None`: the test's own).
    runtime: Option<PathBuf>,
}

impl Device {
    pub fn new(name: &str, remote: &str, rclone_config: &Path) -> Device {
        let home = tempfile::tempdir().unwrap();
        let local = home.path().join("local");
        fs::create_dir_all(&local).unwrap();
        let config = home.path().join("config.toml");
        fs::write(
            &config,
            format!(
                "[agent]\ndevice = \"{name}\"\n[[pair]]\nname = \"p\"\nlocal = \"{}\"\n\
                 remote = \"{remote}\"\nrclone_config = \"{}\"\n",
                local.display(),
                rclone_config.display(),
            ),
        )
        .unwrap();
        Device {
            name: name.to_owned(),
            home,
            local,
            config,
            runtime: None,
        }
    }

    /// The agent runs with `dir` as its `XDG_RUNTIME_DIR`.
    pub fn with_runtime_dir(mut self, dir: &Path) -> Device {
        self.runtime = Some(dir.to_owned());
        self
    }

    pub fn try_once(&self) -> Output {
        self.once_command()
            .output()
            .expect("run prism-syncd --once")
    }

    /// The pair's rclone is `binary` (the `rclone_binary` key).
    pub fn use_rclone_binary(&self, binary: &Path) {
        let mut config = fs::read_to_string(&self.config).unwrap();
        config.push_str(&format!("rclone_binary = \"{}\"\n", binary.display()));
        fs::write(&self.config, config).unwrap();
    }

    /// The state folder of the agent.
    pub fn state(&self) -> PathBuf {
        self.home.path().join("state")
    }

    /// `prism-syncd --once` for this device, not started yet.
    pub fn once_command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_prism-syncd"));
        command
            .arg("--config")
            .arg(&self.config)
            .arg("--state-dir")
            .arg(self.home.path().join("state"))
            .arg("--device")
            .arg(&self.name)
            .arg("--once")
            .env("HOME", self.home.path())
            .env("RUST_LOG", "debug")
            .env_remove("RCLONE_CONFIG")
            // rclone 1.60's S3 backend fails on it against a plain-HTTP
            // endpoint ("unable to load custom CA bundle"); machines here
            // set it.
            .env_remove("AWS_CA_BUNDLE")
            .env_remove("PRISM_SYNC_CONFIG")
            .env_remove("PRISM_SYNC_STATE_DIR")
            .env_remove("PRISM_SYNC_SOCKET");
        if let Some(runtime) = &self.runtime {
            command.env("XDG_RUNTIME_DIR", runtime);
        }
        command
    }

    /// One sync; a conflict (exit 3) is a finished sync too.
    pub fn once(&self) -> Output {
        let out = self.try_once();
        assert!(
            matches!(out.status.code(), Some(0) | Some(3)),
            "{}: {}",
            self.name,
            text(&out)
        );
        out
    }
}

/// Every file below `dir`, its content as text.
fn contents_below(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.file_type().unwrap().is_dir() {
                stack.push(entry.path());
            } else {
                found.push(fs::read_to_string(entry.path()).unwrap());
            }
        }
    }
    found.sort();
    found
}

/// Two devices through `remote`: files, an edit, a deletion and a folder
/// move reach the other one; `served` is the remote's folder on disk,
/// where it holds the files as they are (not through rclone's `crypt`).
fn converge(remote: &str, rclone_config: &Path, served: Option<&Path>) {
    let alpha = Device::new("alpha", remote, rclone_config);
    let beta = Device::new("beta", remote, rclone_config);
    converge_devices(&alpha, &beta, served);
}

/// [`converge`] with two devices set up by the caller.
fn converge_devices(alpha: &Device, beta: &Device, served: Option<&Path>) {
    put(&alpha.local, "a.md", "alpha a\n");
    put(&alpha.local, "docs/b c.md", "alpha b\n");
    alpha.once();
    put(&beta.local, "from-beta.md", "beta\n");
    beta.once();
    alpha.once();
    assert_eq!(tree(&alpha.local), tree(&beta.local));
    assert_eq!(
        tree(&alpha.local).keys().collect::<Vec<_>>(),
        ["a.md", "docs/b c.md", "from-beta.md"]
    );
    if let Some(served) = served {
        assert_eq!(tree(served), tree(&alpha.local));
    }

    std::thread::sleep(std::time::Duration::from_millis(1100));
    put(&alpha.local, "a.md", "alpha a, edited\n");
    fs::remove_file(beta.local.join("from-beta.md")).unwrap();
    alpha.once();
    beta.once();
    fs::rename(alpha.local.join("docs"), alpha.local.join("moved")).unwrap();
    alpha.once();
    beta.once();
    alpha.once();
    let converged = tree(&alpha.local);
    assert_eq!(converged, tree(&beta.local));
    assert_eq!(
        converged.keys().collect::<Vec<_>>(),
        ["a.md", "moved/b c.md"]
    );
    let Some(served) = served else {
        return;
    };
    assert_eq!(tree(served), converged);
    // The replaced and the deleted version are in the remote's trash.
    let trashed = contents_below(&served.join(".prism-sync/trash"));
    assert!(
        trashed.contains(&"alpha a\n".to_owned()) && trashed.contains(&"beta\n".to_owned()),
        "{trashed:?}"
    );
    // No upload stayed staged, on the remote or in the agents' spools.
    assert!(contents_below(&served.join(".prism-sync/staging")).is_empty());
    for device in [alpha, beta] {
        let spool = device.home.path().join("state/rclone-spool");
        assert!(spool.is_dir(), "uploads wait in the state dir");
        assert!(contents_below(&spool).is_empty());
    }
}

#[test]
fn two_devices_converge_through_rclones_local_backend() {
    let disk = Disk::new();
    converge(&disk.remote(), &disk.config(), Some(&disk.served()));
}

#[test]
fn two_devices_converge_through_the_current_rclone_on_its_private_socket() {
    let disk = Disk::new();
    let runtime = tempfile::tempdir().unwrap();
    let binary = crate::rclone_current::current_rclone();
    let device = |name: &str| {
        let device =
            Device::new(name, &disk.remote(), &disk.config()).with_runtime_dir(runtime.path());
        device.use_rclone_binary(&binary);
        device
    };
    let (alpha, beta) = (device("alpha"), device("beta"));
    converge_devices(&alpha, &beta, Some(&disk.served()));

    put(&beta.local, "last.md", "last\n");
    let out = beta.once();
    let log = text(&out);
    let socket = format!(
        "transport=unix socket {}/prism-sync-rcd-",
        runtime.path().display()
    );
    assert!(
        log.contains(&socket) && log.contains(crate::rclone_current::VERSION),
        "the log does not say which rclone listens where:\n{log}"
    );
    assert_eq!(
        fs::read_to_string(disk.served().join("last.md")).unwrap(),
        "last\n"
    );
    // Each agent's rcd ended with it, and its socket's folder with the rcd.
    let left: Vec<_> = fs::read_dir(runtime.path()).unwrap().flatten().collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn two_devices_converge_through_rclones_webdav_backend_on_apache() {
    let apache = Apache::start();
    let scratch = tempfile::tempdir().unwrap();
    let config = scratch.path().join("rclone.conf");
    fs::write(
        &config,
        format!(
            "[dav]\ntype = webdav\nurl = http://127.0.0.1:{}/open/\nvendor = other\n",
            apache.port()
        ),
    )
    .unwrap();
    let served = apache.served(Share::Open).join("notes");
    converge("rclone:dav:notes", &config, Some(&served));
}

#[test]
fn two_devices_converge_through_a_connection_string_that_holds_a_url() {
    // The URL's "//" must survive the reads, which go through the rcd's
    // HTTP serving of `[REMOTE:PATH]/FILE`; no remote of the (empty)
    // rclone config is involved.
    let apache = Apache::start();
    let scratch = tempfile::tempdir().unwrap();
    let config = scratch.path().join("rclone.conf");
    fs::write(&config, "").unwrap();
    let remote = format!(
        "rclone::webdav,url='http://127.0.0.1:{}/open/',vendor=other:notes",
        apache.port()
    );
    let served = apache.served(Share::Open).join("notes");
    converge(&remote, &config, Some(&served));
    assert!(
        fs::read_to_string(&config).unwrap().is_empty(),
        "the connection string was written to the rclone config"
    );
}

#[test]
fn a_connection_string_the_server_refuses_says_where_its_login_belongs() {
    let apache = Apache::start();
    let scratch = tempfile::tempdir().unwrap();
    let config = scratch.path().join("rclone.conf");
    fs::write(&config, "").unwrap();
    let remote = format!(
        "rclone::webdav,url='http://127.0.0.1:{}/auth/',vendor=other,user=nobody:notes",
        apache.port()
    );
    let device = Device::new("alpha", &remote, &config);
    put(&device.local, "a.md", "a\n");
    let out = device.try_once();
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    let all = text(&out);
    assert!(
        all.contains("refused the login")
            && all.contains("define the remote with `rclone config`")
            && !all.contains("rclone config reconnect"),
        "{all}"
    );
}

#[test]
fn rclones_messages_about_a_connection_string_name_it_as_written() {
    let disk = Disk::new();
    let device = Device::new("alpha", "rclone::nosuchbackend,opt=1:notes", &disk.config());
    put(&device.local, "a.md", "a\n");
    let out = device.try_once();
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    let all = text(&out);
    let said = all
        .lines()
        .find(|line| line.starts_with("p: cannot reach"))
        .unwrap_or_else(|| panic!("{all}"));
    assert!(
        said.contains("rclone::nosuchbackend,opt=1:notes")
            && said.contains("didn't find backend")
            && !said.contains("prism_sync_"),
        "{said}"
    );
}

/// An rclone config in `dir` whose remote `bucket` is `moto`'s S3.
fn moto_config(dir: &Path, moto: &Moto) -> PathBuf {
    let config = dir.join("rclone.conf");
    fs::write(
        &config,
        format!(
            "[bucket]\ntype = s3\nprovider = Other\nendpoint = {}\n\
             access_key_id = MOTOKEY\nsecret_access_key = moto-secret\n",
            moto.endpoint()
        ),
    )
    .unwrap();
    config
}

#[test]
fn two_devices_converge_through_rclones_s3_backend_on_moto() {
    let moto = Moto::shared();
    moto.make_bucket("rclone-notes");
    let scratch = tempfile::tempdir().unwrap();
    let config = moto_config(scratch.path(), moto);
    converge("rclone:bucket:rclone-notes/notes", &config, None);
    // The remote's trash holds the replaced and the deleted version.
    let listed = Command::new("rclone")
        .args(["--config"])
        .arg(&config)
        .args(["cat", "bucket:rclone-notes/notes/.prism-sync/trash"])
        .env_remove("AWS_CA_BUNDLE")
        .output()
        .unwrap();
    let trashed = String::from_utf8_lossy(&listed.stdout);
    assert!(
        trashed.contains("alpha a\n") && trashed.contains("beta\n"),
        "{trashed}\n{}",
        text(&listed)
    );
}

#[test]
fn two_devices_converge_through_rclones_crypt_backend_over_local() {
    let disk = Disk::new();
    let obscured = Command::new("rclone")
        .args(["obscure", "a test passphrase"])
        .output()
        .expect("run rclone obscure");
    assert!(obscured.status.success(), "{}", text(&obscured));
    let password = String::from_utf8(obscured.stdout).unwrap();
    fs::write(
        disk.config(),
        format!(
            "[disk]\ntype = local\n\n[secret]\ntype = crypt\nremote = disk:{}\n\
             password = {}\n",
            disk.served().display(),
            password.trim()
        ),
    )
    .unwrap();
    converge("rclone:secret:notes", &disk.config(), None);
    // What reached the disk is encrypted: no name nor content in plain.
    let mut files = 0;
    let mut stack = vec![disk.served()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            assert!(
                !["a.md", "moved", "b c.md", ".prism-sync"].contains(&name.as_str()),
                "{name} is in plain on the disk"
            );
            if entry.file_type().unwrap().is_dir() {
                stack.push(entry.path());
            } else {
                files += 1;
                let bytes = fs::read(entry.path()).unwrap();
                assert!(!bytes.windows(5).any(|w| w == b"alpha"), "{name}");
            }
        }
    }
    assert!(files > 0);
}

#[test]
fn a_remote_name_not_in_the_rclone_config_says_where_it_looked() {
    let disk = Disk::new();
    let device = Device::new("alpha", "rclone:gdrive:Notes", &disk.config());
    put(&device.local, "a.md", "a\n");
    let out = device.try_once();
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    let all = text(&out);
    assert!(
        all.contains("\"gdrive\" is not in the rclone config")
            && all.contains(&disk.config().display().to_string()),
        "{all}"
    );
    // Nothing local was touched.
    assert_eq!(
        fs::read_to_string(device.local.join("a.md")).unwrap(),
        "a\n"
    );
}

#[test]
fn an_empty_folder_is_not_taken_for_removed_through_rclones_s3_backend() {
    // S3 keeps no folder without a file in it: an empty folder never shows
    // in a listing, and its absence there is no removal by anyone.
    let moto = Moto::shared();
    moto.make_bucket("rclone-folders");
    let scratch = tempfile::tempdir().unwrap();
    let config = moto_config(scratch.path(), moto);
    let remote = "rclone:bucket:rclone-folders/notes";
    let alpha = Device::new("alpha", remote, &config);
    let beta = Device::new("beta", remote, &config);
    fs::create_dir_all(alpha.local.join("empty/inner")).unwrap();
    put(&alpha.local, "full/a.txt", "a");
    alpha.once();
    alpha.once();
    beta.once();
    alpha.once();
    assert!(
        alpha.local.join("empty/inner").is_dir(),
        "{:?}",
        tree(&alpha.local)
    );
    assert_eq!(tree(&beta.local), tree(&alpha.local));
    // A file the other device removed goes, with the folder it was in.
    fs::remove_file(beta.local.join("full/a.txt")).unwrap();
    beta.once();
    alpha.once();
    assert!(!alpha.local.join("full/a.txt").exists());
    assert!(alpha.local.join("empty/inner").is_dir());
}
