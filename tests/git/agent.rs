//! Devices converging through a bare repository over `file://`, commits
//! made with plain git reaching them, two agents pushing at once, a
//! conflict with a person's commit, an unreachable remote and a branch
//! that is not there.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::files::{put, text, tree};

/// Plain git as a person runs it, with an identity and no config of the
/// machine's.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Person")
        .env("GIT_AUTHOR_EMAIL", "person@example.org")
        .env("GIT_COMMITTER_NAME", "Person")
        .env("GIT_COMMITTER_EMAIL", "person@example.org")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).trim_end().to_owned()
}

/// A bare repository (HEAD naming `main`), empty.
pub struct Repo {
    dir: tempfile::TempDir,
}

impl Repo {
    pub fn new() -> Repo {
        let dir = tempfile::tempdir().unwrap();
        git(
            dir.path(),
            &["init", "--bare", "-q", "-b", "main", "notes.git"],
        );
        Repo { dir }
    }

    pub fn bare(&self) -> PathBuf {
        self.dir.path().join("notes.git")
    }

    pub fn remote(&self) -> String {
        format!("git+file://{}", self.bare().display())
    }

    /// A person's checkout of `main`.
    fn checkout(&self, name: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        let url = format!("file://{}", self.bare().display());
        git(
            self.dir.path(),
            &["clone", "-q", &url, path.to_str().unwrap()],
        );
        path
    }

    /// The files of `main` as `path → content`.
    fn files(&self) -> Vec<(String, String)> {
        let bare = self.bare();
        git(&bare, &["ls-tree", "-r", "--name-only", "main"])
            .lines()
            .map(|p| (p.to_owned(), git(&bare, &["show", &format!("main:{p}")])))
            .collect()
    }
}

/// One device: a home, a local folder and a config whose pair is the
/// repository.
pub struct Device {
    pub name: String,
    pub home: tempfile::TempDir,
    pub local: PathBuf,
    config: PathBuf,
}

impl Device {
    /// A device whose agent polls the remote every second.
    pub fn polling_each_second(name: &str, remote: &str) -> Device {
        let device = Device::new(name, remote, "");
        let config = fs::read_to_string(&device.config).unwrap();
        fs::write(
            &device.config,
            config.replace("[agent]\n", "[agent]\nremote_poll_secs = 1\n"),
        )
        .unwrap();
        device
    }

    pub fn new(name: &str, remote: &str, extra: &str) -> Device {
        let home = tempfile::tempdir().unwrap();
        let local = home.path().join("local");
        fs::create_dir_all(&local).unwrap();
        let config = home.path().join("config.toml");
        fs::write(
            &config,
            format!(
                "[agent]\ndevice = \"{name}\"\n[[pair]]\nname = \"p\"\nlocal = \"{}\"\n\
                 remote = \"{remote}\"\n{extra}",
                local.display(),
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

    pub fn command(&self) -> Command {
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
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env_remove("PRISM_SYNC_CONFIG")
            .env_remove("PRISM_SYNC_STATE_DIR")
            .env_remove("PRISM_SYNC_SOCKET");
        command
    }

    pub fn try_once(&self) -> Output {
        self.command().output().expect("run prism-syncd --once")
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

#[test]
fn two_devices_converge_through_a_bare_repository_one_commit_per_batch() {
    let repo = Repo::new();
    let alpha = Device::new("alpha", &repo.remote(), "");
    let beta = Device::new("beta", &repo.remote(), "");

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
    assert_eq!(
        repo.files(),
        [
            ("a.md".to_owned(), "alpha a".to_owned()),
            ("docs/b c.md".to_owned(), "alpha b".to_owned()),
            ("from-beta.md".to_owned(), "beta".to_owned()),
        ]
    );
    let bare = repo.bare();
    assert_eq!(
        git(&bare, &["log", "--format=%an: %s", "main"]),
        "beta: beta: 1 added\nalpha: alpha: 2 added"
    );

    // An edit, a deletion and a folder move reach the other device; the
    // old versions stay in the history.
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
    assert_eq!(
        git(&bare, &["log", "-1", "--format=%s", "main"]),
        "alpha: docs/ → moved/"
    );
    let history = git(&bare, &["log", "-p", "--format=%s", "main"]);
    assert!(
        history.contains("-alpha a\n") && history.contains("-beta\n"),
        "{history}"
    );
    assert_eq!(
        git(&bare, &["rev-list", "--merges", "--count", "main"]),
        "0"
    );
    // The agents' records are out of the user's tree.
    assert!(!git(&bare, &["ls-tree", "-r", "--name-only", "main"]).contains(".prism-sync"));
}

#[test]
fn a_commit_pushed_with_plain_git_reaches_both_devices() {
    let repo = Repo::new();
    let alpha = Device::new("alpha", &repo.remote(), "");
    let beta = Device::new("beta", &repo.remote(), "");
    put(&alpha.local, "a.md", "alpha\n");
    alpha.once();
    beta.once();

    let checkout = repo.checkout("person");
    put(&checkout, "by-hand/notes.md", "written by hand\n");
    put(&checkout, "a.md", "edited by hand\n");
    git(&checkout, &["add", "-A"]);
    git(&checkout, &["commit", "-qm", "by hand"]);
    git(&checkout, &["push", "-q", "origin", "main"]);

    alpha.once();
    beta.once();
    for device in [&alpha, &beta] {
        let files = tree(&device.local);
        assert_eq!(
            files["by-hand/notes.md"], "written by hand\n",
            "{}",
            device.name
        );
        assert_eq!(files["a.md"], "edited by hand\n", "{}", device.name);
    }
}

#[test]
fn two_agents_pushing_at_once_both_converge_and_nothing_is_lost() {
    let repo = Repo::new();
    let alpha = Device::new("alpha", &repo.remote(), "");
    let beta = Device::new("beta", &repo.remote(), "");
    put(&alpha.local, "start.md", "start\n");
    alpha.once();
    beta.once();
    for n in 0..20 {
        put(
            &alpha.local,
            &format!("alpha/{n}.md"),
            &format!("alpha {n}\n"),
        );
        put(&beta.local, &format!("beta/{n}.md"), &format!("beta {n}\n"));
    }
    // The server takes its time over each push, so both agents push on
    // the same tip: the second to reach the ref loses the server's
    // compare-and-swap on it and commits again on the other's commit.
    let hook = slow_pushes(&repo);
    let (a, b) = (spawn(&alpha), spawn(&beta));
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    for out in [&a, &b] {
        assert_eq!(out.status.code(), Some(0), "{}", text(out));
    }
    let logs = format!("{}{}", text(&a), text(&b));
    assert!(
        logs.contains("the remote moved on"),
        "no push was refused: {logs}"
    );
    fs::remove_file(&hook).unwrap();
    for _ in 0..2 {
        alpha.once();
        beta.once();
    }
    let converged = tree(&alpha.local);
    assert_eq!(converged, tree(&beta.local));
    assert_eq!(converged.len(), 41, "{converged:?}");
    assert_eq!(repo.files().len(), 41);
    assert_eq!(
        git(&repo.bare(), &["rev-list", "--merges", "--count", "main"]),
        "0"
    );
}

/// Starts a sync of `device` without waiting for it.
fn spawn(device: &Device) -> std::process::Child {
    device
        .command()
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Makes every push to `repo` take two seconds, so agents started
/// together push on the same tip and one loses the race.
fn slow_pushes(repo: &Repo) -> PathBuf {
    let hook = repo.bare().join("hooks/pre-receive");
    fs::write(&hook, "#!/bin/sh\nsleep 2\n").unwrap();
    fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    hook
}

#[test]
fn a_refused_push_that_clashes_is_re_planned_in_the_same_run() {
    let repo = Repo::new();
    let alpha = Device::new("alpha", &repo.remote(), "");
    let beta = Device::new("beta", &repo.remote(), "");
    put(&alpha.local, "shared.md", "first\n");
    alpha.once();
    beta.once();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    put(&alpha.local, "shared.md", "alpha's edit\n");
    put(&alpha.local, "alpha.md", "alpha\n");
    put(&beta.local, "shared.md", "beta's edit\n");
    put(&beta.local, "beta.md", "beta\n");
    let hook = slow_pushes(&repo);
    let (a, b) = (spawn(&alpha), spawn(&beta));
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let logs = format!("{}{}", text(&a), text(&b));
    assert!(
        logs.contains("another commit changed a path of this batch"),
        "the pushes did not clash: {logs}"
    );
    // The loser planned again from the winner's commit in the same run:
    // a conflict, not a failed sync that waits for a retry.
    for out in [&a, &b] {
        assert!(
            matches!(out.status.code(), Some(0) | Some(3)),
            "{}",
            text(out)
        );
    }
    assert!(
        [&a, &b].iter().any(|out| out.status.code() == Some(3)),
        "{logs}"
    );
    // Both edits are on the remote after these two runs alone, the
    // loser's beside the winner's as a conflict copy.
    let remote = repo.files();
    let mut shared: Vec<&str> = remote
        .iter()
        .filter(|(path, _)| path.starts_with("shared"))
        .map(|(_, content)| content.as_str())
        .collect();
    shared.sort();
    assert_eq!(shared, ["alpha's edit", "beta's edit"], "{remote:?}");
    assert_eq!(remote.len(), 4, "{remote:?}");
    fs::remove_file(&hook).unwrap();
    alpha.once();
    beta.once();
    assert_eq!(tree(&alpha.local), tree(&beta.local));
    assert_eq!(tree(&alpha.local).len(), 4);
}

#[test]
fn a_conflict_with_a_plain_git_commit_keeps_both_versions() {
    let repo = Repo::new();
    let alpha = Device::new("alpha", &repo.remote(), "");
    put(&alpha.local, "a.md", "first\n");
    alpha.once();
    let checkout = repo.checkout("person");
    put(&checkout, "a.md", "the person's edit\n");
    git(&checkout, &["commit", "-qam", "theirs"]);
    git(&checkout, &["push", "-q", "origin", "main"]);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    put(&alpha.local, "a.md", "alpha's edit\n");
    alpha.once();
    alpha.once();
    let local = tree(&alpha.local);
    let mut versions: Vec<&str> = local.values().map(String::as_str).collect();
    versions.sort();
    assert_eq!(
        versions,
        ["alpha's edit\n", "the person's edit\n"],
        "{local:?}"
    );
    // The remote holds both too: the conflict copy is a commit like any.
    let mut remote: Vec<String> = repo.files().into_iter().map(|(_, v)| v).collect();
    remote.sort();
    assert_eq!(remote, ["alpha's edit", "the person's edit"]);
}

#[test]
fn a_folder_that_is_a_git_checkout_syncs_its_files_but_never_its_git_folder() {
    let repo = Repo::new();
    let alpha = Device::new("alpha", &repo.remote(), "");
    git(&alpha.local, &["init", "-q"]);
    put(&alpha.local, "code.rs", "fn main() {}\n");
    alpha.once();
    let stored = git(&repo.bare(), &["ls-tree", "-r", "--name-only", "main"]);
    assert_eq!(stored, "code.rs");
}

#[test]
fn an_unreachable_remote_is_offline_not_a_failure_of_each_path() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let device = Device::new(
        "alpha",
        &format!("git+http://127.0.0.1:{port}/notes.git"),
        "",
    );
    put(&device.local, "a.md", "a\n");
    let out = device.try_once();
    let shown = text(&out);
    assert_ne!(out.status.code(), Some(0), "{shown}");
    assert!(shown.contains("cannot be reached"), "{shown}");
    assert!(!shown.contains("a.md: "), "no per-path failure: {shown}");
}

#[test]
fn a_branch_the_repository_lacks_is_one_clear_error() {
    let repo = Repo::new();
    let alpha = Device::new("alpha", &repo.remote(), "");
    put(&alpha.local, "a.md", "a\n");
    alpha.once();
    let beta = Device::new("beta", &repo.remote(), "branch = \"mian\"\n");
    let out = beta.try_once();
    let shown = text(&out);
    assert_ne!(out.status.code(), Some(0), "{shown}");
    assert!(
        shown.contains("has no branch \\\"mian\\\"") || shown.contains("has no branch \"mian\""),
        "{shown}"
    );
    assert!(tree(&beta.local).is_empty());
}

#[test]
fn auto_merge_merges_a_plain_git_commit_with_a_local_edit_of_other_lines() {
    let repo = Repo::new();
    let alpha = Device::new("alpha", &repo.remote(), "conflict = \"auto_merge\"\n");
    put(&alpha.local, "list.md", "one\ntwo\nthree\nfour\nfive\n");
    alpha.once();
    let checkout = repo.checkout("person");
    put(&checkout, "list.md", "one\ntwo\nthree\nfour\nFIVE\n");
    git(&checkout, &["commit", "-qam", "theirs"]);
    git(&checkout, &["push", "-q", "origin", "main"]);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    put(&alpha.local, "list.md", "ONE\ntwo\nthree\nfour\nfive\n");
    alpha.once();
    alpha.once();
    let merged = "ONE\ntwo\nthree\nfour\nFIVE\n";
    assert_eq!(tree(&alpha.local)["list.md"], merged);
    assert_eq!(
        git(&repo.bare(), &["show", "main:list.md"]),
        merged.trim_end()
    );
    assert_eq!(
        git(&repo.bare(), &["rev-list", "--merges", "--count", "main"]),
        "0"
    );
}

/// The agent of `device` running (not `--once`), stopped when dropped.
pub struct Running(std::process::Child);

impl Running {
    /// Stops the agent as a service manager does (SIGTERM) and waits for
    /// it to end.
    pub fn stop(mut self) {
        // SAFETY: kill(2) on our own child, not yet waited for.
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGTERM);
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while self.0.try_wait().unwrap().is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "the agent did not stop on SIGTERM"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Device {
    fn socket(&self) -> PathBuf {
        self.home.path().join("s.sock")
    }

    pub fn start(&self) -> Running {
        self.start_with_env(&[])
    }

    /// [`Device::start`] with more environment for the agent (and so for
    /// the git it runs).
    pub fn start_with_env(&self, env: &[(&str, &Path)]) -> Running {
        let child = Command::new(env!("CARGO_BIN_EXE_prism-syncd"))
            .envs(env.iter().copied())
            .arg("--config")
            .arg(&self.config)
            .arg("--state-dir")
            .arg(self.home.path().join("state"))
            .arg("--socket")
            .arg(self.socket())
            .arg("--device")
            .arg(&self.name)
            .env("HOME", self.home.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env_remove("PRISM_SYNC_CONFIG")
            .env_remove("PRISM_SYNC_STATE_DIR")
            .env_remove("PRISM_SYNC_SOCKET")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let running = Running(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !self.ctl(&["status"]).status.success() {
            assert!(
                std::time::Instant::now() < deadline,
                "the agent never answered"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        running
    }

    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_prism-syncctl"))
            .arg("--socket")
            .arg(self.socket())
            .args(args)
            .env_remove("PRISM_SYNC_SOCKET")
            .output()
            .unwrap()
    }

    pub fn ctl_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.ctl(&all);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

#[test]
fn history_lists_the_commits_that_left_a_version_and_restore_brings_one_back() {
    let repo = Repo::new();
    let alpha = Device::new("alpha", &repo.remote(), "");
    put(&alpha.local, "a.md", "first\n");
    alpha.once();
    let checkout = repo.checkout("person");
    put(&checkout, "a.md", "second, by hand\n");
    git(&checkout, &["commit", "-qam", "by hand"]);
    git(&checkout, &["push", "-q", "origin", "main"]);
    alpha.once();
    assert_eq!(tree(&alpha.local)["a.md"], "second, by hand\n");
    let bare = repo.bare();
    let commits = git(&bare, &["log", "--format=%H", "main", "--", "a.md"]);
    let commits: Vec<&str> = commits.lines().collect();

    let _agent = alpha.start();
    let file = alpha.local.join("a.md");
    let history = alpha.ctl_json(&["history", file.to_str().unwrap()]);
    let listed: Vec<(String, String, String)> = history["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["where"].as_str().unwrap().to_owned(),
                v["version"].as_str().unwrap().to_owned(),
                v["origin_device"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(listed[0].0, "current");
    // After the current one and the local trash (the download of the
    // person's version replaced alpha's there), each commit of the file.
    let kept: Vec<&(String, String, String)> = listed
        .iter()
        .filter(|(place, _, _)| place == "remote_history")
        .collect();
    assert_eq!(
        kept,
        [
            &("remote_history".into(), commits[0].into(), "Person".into()),
            &("remote_history".into(), commits[1].into(), "alpha".into()),
        ],
        "{history}"
    );
    assert_eq!(
        listed.last().unwrap().0,
        "remote_history",
        "the history comes last: {history}"
    );

    let restored = alpha.ctl_json(&["restore", file.to_str().unwrap(), "--version", commits[1]]);
    assert_eq!(restored["status"], "restored", "{restored}");
    assert_eq!(tree(&alpha.local)["a.md"], "first\n");
    // A new change: it is committed on top, the history keeps the rest.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while git(&bare, &["show", "main:a.md"]) != "first" {
        assert!(
            std::time::Instant::now() < deadline,
            "the restore never reached the remote"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(
        git(&bare, &["rev-list", "--count", "main"]),
        "3",
        "a new commit, nothing rewritten"
    );
    // An id that is no commit of the file is refused; nothing changes.
    let refused = alpha.ctl(&["restore", file.to_str().unwrap(), "--version", "HEAD"]);
    assert!(!refused.status.success(), "{}", text(&refused));
    assert_eq!(tree(&alpha.local)["a.md"], "first\n");
}

/// Waits up to 20 s for `done`.
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The git commands an agent ran, from its `GIT_TRACE` file.
fn traced_commands(trace: &Path) -> Vec<String> {
    fs::read_to_string(trace)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            line.split_once("trace: built-in: git ")
                .map(|(_, c)| c.to_owned())
        })
        .collect()
}

#[test]
fn an_idle_agent_polls_with_one_ls_remote_and_still_sees_what_is_pushed() {
    let repo = Repo::new();
    let alpha = Device::polling_each_second("alpha", &repo.remote());
    for i in 0..20 {
        put(
            &alpha.local,
            &format!("notes/{i}.md"),
            &format!("note {i}\n"),
        );
    }
    let trace = alpha.home.path().join("git-trace");
    let _agent = alpha.start_with_env(&[("GIT_TRACE", &trace)]);
    wait_for("the first sync to reach the repository", || {
        Command::new("git")
            .args(["ls-tree", "-r", "--name-only", "main"])
            .current_dir(repo.bare())
            .output()
            .is_ok_and(|out| out.stdout.iter().filter(|&&b| b == b'\n').count() == 20)
    });
    // The poll after the initial push lists once and finds nothing to do;
    // the polls after it only ask whether the tip moved.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let before = traced_commands(&trace).len();
    std::thread::sleep(std::time::Duration::from_millis(3500));
    let idle: Vec<String> = traced_commands(&trace).split_off(before);
    let asked = idle.iter().filter(|c| c.starts_with("ls-remote")).count();
    assert!(asked >= 2, "the agent did not poll: {idle:?}");
    assert_eq!(
        // `upload-pack` is the repository's side of `ls-remote` over file://.
        idle.iter()
            .filter(|c| !c.starts_with("ls-remote") && !c.starts_with("upload-pack"))
            .count(),
        0,
        "an idle poll did more than ask for the tip: {idle:?}"
    );

    // A person's commit still arrives, and a local edit after it still
    // leaves: the quiet polls hid nothing.
    let checkout = repo.checkout("person");
    put(&checkout, "notes/0.md", "note 0, by hand\n");
    git(&checkout, &["commit", "-qam", "by hand"]);
    git(&checkout, &["push", "-q", "origin", "main"]);
    wait_for("the person's commit to arrive", || {
        fs::read_to_string(alpha.local.join("notes/0.md")).unwrap() == "note 0, by hand\n"
    });
    put(&alpha.local, "notes/1.md", "note 1, edited\n");
    wait_for("the local edit to be pushed", || {
        repo.files()
            .contains(&("notes/1.md".to_owned(), "note 1, edited".to_owned()))
    });
}

/// An agent whose polls come each second, started on `repo` with `files`
/// in its local folder; returns once they are all in the repository.
fn started_polling_each_second(repo: &Repo, files: &[(&str, &str)]) -> (Device, Running) {
    let alpha = Device::polling_each_second("alpha", &repo.remote());
    for (path, content) in files {
        put(&alpha.local, path, content);
    }
    let agent = alpha.start();
    (alpha, agent)
}

impl Repo {
    /// Whether `main` holds `path` with `content` (false while there is
    /// no `main` yet).
    fn holds(&self, path: &str, content: &str) -> bool {
        Command::new("git")
            .args(["show", &format!("main:{path}")])
            .current_dir(self.bare())
            .output()
            .is_ok_and(|out| out.status.success() && out.stdout == content.as_bytes())
    }
}

#[test]
fn a_folder_the_ignore_rules_let_in_while_running_is_still_seen_by_the_polls() {
    let repo = Repo::new();
    let (alpha, _agent) = started_polling_each_second(
        &repo,
        &[
            (".prismignore", "build/\n"),
            ("a.md", "a\n"),
            ("build/out.txt", "first\n"),
        ],
    );
    wait_for("the first sync", || repo.holds("a.md", "a\n"));
    // The folder the watch left out at its start is synced from now on.
    put(&alpha.local, ".prismignore", "# nothing ignored\n");
    wait_for("the folder let in to arrive", || {
        repo.holds("build/out.txt", "first\n")
    });
    // Quiet polls follow; the watch still has no eye on `build/`, so
    // only a look at the folder finds the edit.
    std::thread::sleep(std::time::Duration::from_secs(3));
    put(&alpha.local, "build/out.txt", "second\n");
    wait_for("the edit in the folder let in to arrive", || {
        repo.holds("build/out.txt", "second\n")
    });
}

/// A `git` for the agent that, once `trigger` exists, answers the next
/// fetch of a branch with `old` though the repository advertised its
/// newer tip: as if someone reset the branch right after the agent's
/// `ls-remote` and pushed the newer commit again right after its fetch.
fn git_racing_a_reset(dir: &Path, bare: &Path, trigger: &Path) -> PathBuf {
    let real = String::from_utf8(Command::new("which").arg("git").output().unwrap().stdout)
        .unwrap()
        .trim()
        .to_owned();
    let bin = dir.join("bin");
    fs::create_dir_all(&bin).unwrap();
    let script = format!(
        "#!/bin/sh\n\
         case \" $* \" in\n\
         *\" fetch \"*\"+refs/heads/\"*)\n\
           if [ -f '{trigger}' ]; then\n\
             old=$(cat '{trigger}'); rm -f '{trigger}'\n\
             new=$(env -u GIT_DIR '{real}' -C '{bare}' rev-parse refs/heads/main)\n\
             env -u GIT_DIR '{real}' -C '{bare}' update-ref refs/heads/main \"$old\"\n\
             '{real}' \"$@\"; rc=$?\n\
             env -u GIT_DIR '{real}' -C '{bare}' update-ref refs/heads/main \"$new\"\n\
             exit $rc\n\
           fi;;\n\
         esac\n\
         exec '{real}' \"$@\"\n",
        trigger = trigger.display(),
        bare = bare.display(),
    );
    let path = bin.join("git");
    fs::write(&path, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

#[test]
fn a_branch_reset_between_ls_remote_and_fetch_does_not_hide_the_tip_it_returns_to() {
    let repo = Repo::new();
    let alpha = Device::polling_each_second("alpha", &repo.remote());
    put(&alpha.local, "a.md", "a\n");
    let trigger = alpha.home.path().join("race");
    let bin = git_racing_a_reset(alpha.home.path(), &repo.bare(), &trigger);
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let _agent = alpha.start_with_env(&[("PATH", Path::new(&path))]);
    wait_for("the first sync", || repo.holds("a.md", "a\n"));
    let synced = git(&repo.bare(), &["rev-parse", "main"]);
    std::thread::sleep(std::time::Duration::from_secs(2));

    // A person's commit, which the agent's next fetch does not get: it
    // lists the commit it already has and finds nothing to do.
    fs::write(&trigger, &synced).unwrap();
    let checkout = repo.checkout("person");
    put(&checkout, "a.md", "a, by hand\n");
    git(&checkout, &["commit", "-qam", "by hand"]);
    git(&checkout, &["push", "-q", "origin", "main"]);
    wait_for("the agent to fetch", || !trigger.exists());
    // The branch is at the person's commit again: the next polls must see
    // that it is not what the agent listed.
    wait_for("the person's commit to arrive", || {
        fs::read_to_string(alpha.local.join("a.md")).unwrap() == "a, by hand\n"
    });
}
