//! The test harness: sandboxes of temporary folders, devices (a local
//! folder, a state dir, a socket and a config file pointing at a shared
//! `file://` remote), the real `prism-syncd` started on them, the real
//! `prism-syncctl` run against it, and snapshots of folder trees.
//!
//! It does not decide what a test checks; it only starts, stops, waits and
//! describes. Every wait polls against a deadline and, when it runs out,
//! fails with what it saw last, so a failure message shows both trees and
//! the agent's log instead of "timed out".

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long a test waits for something the agent should do promptly
/// (a sync after a change, a start-up, a shutdown). Generous, because the
/// machine is shared with other builds; a passing test never waits it out.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// How often waits poll.
const POLL: Duration = Duration::from_millis(25);

/// The name of the one pair every device syncs.
pub const PAIR: &str = "p";

/// Polls `check` until it returns `Ok`, for at most `timeout`. `check`
/// returns `Err(description)` of what it sees while the condition does not
/// hold; the last description is the failure message.
pub fn wait_until<T>(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(value) => return value,
            Err(seen) if Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting until {what}\n{seen}")
            }
            Err(_) => sleep(POLL),
        }
    }
}

/// A temporary folder holding everything one test touches. Its path is
/// short (`/tmp/.tmpXXXXXX`), so socket paths inside it stay well under
/// the 108-byte limit of Unix socket addresses.
pub struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let dir = tempfile::Builder::new()
            .tempdir_in("/tmp")
            .expect("create a temp dir");
        Sandbox { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A fresh remote folder named `name`, addressed as `file://`.
    pub fn remote(&self, name: &str) -> PathBuf {
        let path = self.path(name);
        fs::create_dir_all(&path).expect("create the remote folder");
        path
    }

    /// A device syncing `remote` with default settings.
    pub fn device(&self, name: &str, remote: &Path) -> Device {
        self.device_with(name, remote, Settings::default())
    }

    /// A device with its own local folder, state dir, socket and config
    /// file, syncing the pair [`PAIR`] with `remote`.
    pub fn device_with(&self, name: &str, remote: &Path, settings: Settings) -> Device {
        let home = self.path(name);
        let local = home.join("local");
        fs::create_dir_all(&local).expect("create the local folder");
        let config = home.join("config.toml");
        let mut text = String::from("[agent]\n");
        if let Some(secs) = settings.remote_poll_secs {
            writeln!(text, "remote_poll_secs = {secs}").unwrap();
        }
        if let Some(ms) = settings.debounce_ms {
            writeln!(text, "debounce_ms = {ms}").unwrap();
        }
        writeln!(
            text,
            "[[pair]]\nname = \"{PAIR}\"\nlocal = \"{}\"\nremote = \"file://{}\"\nconflict = \"{}\"",
            local.display(),
            remote.display(),
            settings.conflict
        )
        .unwrap();
        fs::write(&config, text).expect("write the config file");
        Device {
            name: name.to_owned(),
            local,
            remote: remote.to_path_buf(),
            state: home.join("state"),
            socket: home.join("s.sock"),
            config,
            log: home.join("agent.log"),
        }
    }
}

/// What a device's config file says beyond the pair's folders.
#[derive(Clone, Debug)]
pub struct Settings {
    pub conflict: &'static str,
    pub remote_poll_secs: Option<u64>,
    pub debounce_ms: Option<u64>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            conflict: "manual",
            remote_poll_secs: None,
            debounce_ms: None,
        }
    }
}

impl Settings {
    pub fn conflict(strategy: &'static str) -> Settings {
        Settings {
            conflict: strategy,
            ..Settings::default()
        }
    }

    pub fn fast_poll() -> Settings {
        Settings {
            remote_poll_secs: Some(1),
            ..Settings::default()
        }
    }
}

/// One device's folders and files; the agent itself is an [`Agent`].
#[derive(Clone, Debug)]
pub struct Device {
    pub name: String,
    pub local: PathBuf,
    pub remote: PathBuf,
    pub state: PathBuf,
    pub socket: PathBuf,
    pub config: PathBuf,
    /// The agent's stderr, appended to by every start.
    pub log: PathBuf,
}

impl Device {
    /// The `prism-syncd` command for this device, without `--once`.
    pub fn syncd(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_prism-syncd"));
        command
            .arg("--config")
            .arg(&self.config)
            .arg("--state-dir")
            .arg(&self.state)
            .arg("--socket")
            .arg(&self.socket)
            .arg("--device")
            .arg(&self.name)
            .env_remove("PRISM_SYNC_CONFIG")
            .env_remove("PRISM_SYNC_STATE_DIR")
            .env_remove("PRISM_SYNC_SOCKET")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null());
        command
    }

    /// Starts the daemon and waits until it answers `status`.
    pub fn start(&self) -> Agent {
        self.start_with_env(&[])
    }

    /// Starts the daemon with extra environment variables (a test hook)
    /// and waits until it answers `status`.
    pub fn start_with_env(&self, env: &[(&str, &str)]) -> Agent {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open the agent log");
        let child = self
            .syncd()
            .envs(env.iter().copied())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log)
            .spawn()
            .expect("start prism-syncd");
        let mut agent = Agent {
            device: self.clone(),
            child: Some(child),
        };
        wait_until(PATIENCE, "the agent answers `status`", || {
            if let Some(status) = agent
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "prism-syncd exited with {status} at start-up\n{}",
                    self.log_text()
                );
            }
            let output = self.ctl(&["--json", "status"]);
            if output.status.success() {
                Ok(())
            } else {
                Err(format!("last answer: {}", text(&output)))
            }
        });
        agent
    }

    /// Runs `prism-syncd --once` and returns its output.
    pub fn once(&self) -> Output {
        self.syncd()
            .arg("--once")
            .output()
            .expect("run prism-syncd --once")
    }

    /// Runs `prism-syncd --once` and checks its exit code.
    pub fn once_expecting(&self, code: i32) -> Output {
        let output = self.once();
        assert_eq!(
            output.status.code(),
            Some(code),
            "prism-syncd --once on {}:\n{}",
            self.name,
            text(&output)
        );
        output
    }

    /// Runs `prism-syncctl --socket S ARGS…`.
    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_prism-syncctl"))
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .env_remove("PRISM_SYNC_SOCKET")
            .output()
            .expect("run prism-syncctl")
    }

    /// Runs `prism-syncctl --json ARGS…`, which must succeed, and parses
    /// its answer.
    pub fn ctl_json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let output = self.ctl(&all);
        assert!(
            output.status.success(),
            "prism-syncctl {}: {}\nagent log:\n{}",
            all.join(" "),
            text(&output),
            self.log_text()
        );
        json(&output)
    }

    /// The status of the pair [`PAIR`].
    pub fn pair_status(&self) -> Value {
        self.ctl_json(&["status"])["pairs"][0].clone()
    }

    /// Waits until the local folder and the remote hold the same files
    /// with the same content, and returns that tree.
    pub fn wait_converged(&self) -> Tree {
        wait_converged(&[&self.local, &self.remote], &self.log)
    }

    pub fn log_text(&self) -> String {
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!(
            "--- {} agent log (last lines) ---\n{}",
            self.name,
            tail.join("\n")
        )
    }

    /// Runs SQL against this device's journal with the `sqlite3` CLI, read
    /// only, as a user auditing it would; returns stdout.
    pub fn sql(&self, query: &str) -> String {
        let output = Command::new("sqlite3")
            .arg("-readonly")
            .arg(self.state.join("journal.db"))
            .arg(query)
            .output()
            .expect("run sqlite3 (install the sqlite3 package)");
        assert!(
            output.status.success() && output.stderr.is_empty(),
            "sqlite3 {query}: {}",
            text(&output)
        );
        String::from_utf8(output.stdout).expect("UTF-8 output")
    }
}

/// A running `prism-syncd`. Dropping it stops it with SIGTERM.
pub struct Agent {
    pub device: Device,
    child: Option<Child>,
}

impl Agent {
    /// Sends SIGTERM and waits for the exit.
    pub fn stop(mut self) -> ExitStatus {
        self.terminate().expect("the agent was running")
    }

    /// Kills the agent with SIGKILL: a crash, as far as it can tell.
    /// The agent's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the agent is running").id()
    }

    pub fn kill9(mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL the agent");
            child.wait().expect("reap the agent");
        }
    }

    fn terminate(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        // SAFETY: kill(2) with a pid we spawned and have not reaped.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + PATIENCE;
        loop {
            match child.try_wait().expect("wait for the agent") {
                Some(status) => return Some(status),
                None if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "prism-syncd did not stop within {PATIENCE:?} of SIGTERM\n{}",
                        self.device.log_text()
                    );
                }
                None => sleep(POLL),
            }
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(mut child) = self.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
            eprintln!("{}", self.device.log_text());
        } else {
            self.terminate();
        }
    }
}

/// A folder's content: relative path → `dir` or `size:hash` of a file.
/// The agent's own metadata (`.prism-sync/`, `.prism-sync-root`) is left
/// out; everything else, temporary files included, is in.
pub type Tree = BTreeMap<String, String>;

pub fn tree(root: &Path) -> Tree {
    let mut tree = Tree::new();
    // Folders wait on a list, not the call stack: some tests make trees
    // thousands of levels deep.
    let mut folders = vec![root.to_path_buf()];
    while let Some(dir) = folders.pop() {
        walk(root, &dir, &mut tree, &mut folders);
    }
    tree
}

fn walk(root: &Path, dir: &Path, tree: &mut Tree, folders: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let rel = path
            .strip_prefix(root)
            .expect("below the root")
            .to_string_lossy()
            .into_owned();
        if rel == ".prism-sync" || rel == ".prism-sync-root" {
            continue;
        }
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            tree.insert(rel, "dir".to_owned());
            folders.push(path);
        } else if let Ok(bytes) = fs::read(&path) {
            let hash = blake3::hash(&bytes).to_hex();
            tree.insert(rel, format!("{}:{}", bytes.len(), &hash[..16]));
        }
    }
}

/// A tree as lines, for failure messages.
pub fn show(tree: &Tree) -> String {
    if tree.is_empty() {
        return "  (empty)".to_owned();
    }
    tree.iter()
        .map(|(path, what)| format!("  {path}  {what}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Waits until every folder in `roots` holds the same tree; the failure
/// message lists each tree and the log at `log`.
pub fn wait_converged(roots: &[&Path], log: &Path) -> Tree {
    wait_until(PATIENCE, "the folders hold the same files", || {
        let trees: Vec<Tree> = roots.iter().map(|r| tree(r)).collect();
        if trees.windows(2).all(|w| w[0] == w[1]) {
            return Ok(trees.into_iter().next().unwrap_or_default());
        }
        let mut seen = String::new();
        for (root, tree) in roots.iter().zip(&trees) {
            writeln!(seen, "{}:\n{}", root.display(), show(tree)).unwrap();
        }
        let log = fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        writeln!(seen, "log tail:").unwrap();
        for line in tail.into_iter().rev() {
            writeln!(seen, "{line}").unwrap();
        }
        Err(seen)
    })
}

/// Waits until `path` holds exactly `content`.
pub fn wait_for_content(path: &Path, content: &str) {
    wait_until(
        PATIENCE,
        &format!("{} holds {content:?}", path.display()),
        || match fs::read_to_string(path) {
            Ok(found) if found == content => Ok(()),
            found => Err(format!("found {found:?}")),
        },
    )
}

/// Waits until `path` does not exist.
pub fn wait_for_absence(path: &Path) {
    wait_until(PATIENCE, &format!("{} is gone", path.display()), || {
        if path.exists() {
            Err(format!("{} still exists", path.display()))
        } else {
            Ok(())
        }
    })
}

/// Writes `content` to `root/rel`, creating parent folders.
pub fn write(root: &Path, rel: &str, content: &str) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().expect("a parent")).expect("create parents");
    fs::write(&path, content).expect("write a file");
}

pub fn read(root: &Path, rel: &str) -> String {
    fs::read_to_string(root.join(rel))
        .unwrap_or_else(|e| panic!("read {}: {e}", root.join(rel).display()))
}

/// Every file below `dir` (relative path → content), for trash checks.
pub fn files_below(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn go(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                go(root, &path, out);
            } else if let Ok(bytes) = fs::read(&path) {
                let rel = path.strip_prefix(root).expect("below the root");
                out.insert(rel.to_string_lossy().into_owned(), bytes);
            }
        }
    }
    let mut out = BTreeMap::new();
    go(dir, dir, &mut out);
    out
}

/// The contents the trash at `dir` holds for the file named `name`
/// (trash entries are `STAMP/relative/path`, maybe with a `.N` suffix).
pub fn trashed(dir: &Path, rel: &str) -> Vec<String> {
    files_below(dir)
        .into_iter()
        .filter(|(path, _)| {
            path.split_once('/').is_some_and(|(_, under)| {
                under == rel
                    || under
                        .strip_prefix(rel)
                        .and_then(|s| s.strip_prefix('.'))
                        .is_some_and(|n| n.chars().all(|c| c.is_ascii_digit()))
            })
        })
        .map(|(_, bytes)| String::from_utf8_lossy(&bytes).into_owned())
        .collect()
}

pub fn sorted(mut items: Vec<String>) -> Vec<String> {
    items.sort();
    items
}

/// The remote folder's trash.
pub fn remote_trash(remote: &Path) -> PathBuf {
    remote.join(".prism-sync").join("trash")
}

/// A device's local trash for the pair [`PAIR`].
pub fn local_trash(device: &Device) -> PathBuf {
    device.state.join("trash").join(PAIR)
}

/// Stdout and stderr of a finished command, for messages.
pub fn text(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Parses a command's stdout as JSON.
pub fn json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", text(output)))
}

/// The names in `dir` that match a conflict copy of `stem…ext`.
pub fn conflict_copies(dir: &Path, stem: &str, ext: &str) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&format!("{stem}.conflict-")) && n.ends_with(ext))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}
