//! The git remote over SSH, through the loopback OpenSSH server of the
//! SFTP tests: one device reaches it through a host alias of its own ssh
//! config (named by `core.sshCommand` in its git config, as a person sets
//! it up), the other through `GIT_SSH_COMMAND` with the test key and
//! known_hosts. Both converge; nothing of Prism Sync knows about keys.

use std::fs;

use crate::agent::{Device, git};
use crate::files::{put, tree};
use crate::sshd::Sshd;

#[test]
fn two_devices_converge_over_ssh_with_their_own_ssh_setups() {
    let server = Sshd::start();
    let bare = bare_repository(&server);
    let known_hosts = server.scratch("client").join("known_hosts");
    server.write_known_hosts(&known_hosts);
    let key = server.client_key();

    // Alpha: a host alias in an ssh config, which its git config uses.
    let alpha = Device::new("alpha", &format!("git+notes-server:{}", bare.display()), "");
    let ssh_config = alpha.home.path().join("ssh_config");
    fs::write(
        &ssh_config,
        format!(
            "Host notes-server\n  HostName 127.0.0.1\n  Port {}\n  User {}\n  IdentityFile {}\n  \
             IdentitiesOnly yes\n  UserKnownHostsFile {}\n  BatchMode yes\n",
            server.port(),
            server.user,
            key.display(),
            known_hosts.display()
        ),
    )
    .unwrap();
    fs::write(
        alpha.home.path().join(".gitconfig"),
        format!("[core]\n\tsshCommand = ssh -F {}\n", ssh_config.display()),
    )
    .unwrap();

    // Beta: an ssh:// URL and GIT_SSH_COMMAND.
    let beta = Device::new(
        "beta",
        &format!(
            "git+ssh://{}@127.0.0.1:{}{}",
            server.user,
            server.port(),
            bare.display()
        ),
        "",
    );
    let beta_ssh = format!(
        "ssh -i {} -o IdentitiesOnly=yes -o UserKnownHostsFile={} -o BatchMode=yes",
        key.display(),
        known_hosts.display()
    );
    let beta_once = || {
        let out = beta
            .command()
            .env("GIT_SSH_COMMAND", &beta_ssh)
            .output()
            .unwrap();
        assert!(
            matches!(out.status.code(), Some(0) | Some(3)),
            "{}",
            crate::files::text(&out)
        );
    };

    put(&alpha.local, "a.md", "alpha\n");
    alpha.once();
    put(&beta.local, "b.md", "beta\n");
    beta_once();
    alpha.once();
    assert_eq!(tree(&alpha.local), tree(&beta.local));
    assert_eq!(
        tree(&alpha.local).keys().collect::<Vec<_>>(),
        ["a.md", "b.md"]
    );
    assert_eq!(git(&bare, &["log", "--format=%an", "main"]), "beta\nalpha");
}

/// A person's plain `ssh`: first on PATH, reading an ssh config of the
/// test's (its key, known_hosts and the host alias `notes-server`), as
/// `~/.ssh/config` would (ssh finds that file through the password
/// database, not `HOME`, so the test cannot put one there). It notes each
/// run, and the mode and path of the folder of any `ControlPath` it is
/// given.
struct PlainSsh {
    dir: tempfile::TempDir,
    /// The user's runtime dir, short enough to hold socket folders.
    runtime: tempfile::TempDir,
}

impl PlainSsh {
    fn new(server: &Sshd) -> PlainSsh {
        let dir = tempfile::tempdir().unwrap();
        let known_hosts = dir.path().join("known_hosts");
        server.write_known_hosts(&known_hosts);
        let config = dir.path().join("ssh_config");
        fs::write(
            &config,
            format!(
                "Host notes-server\n  HostName 127.0.0.1\n  Port {}\n  User {}\n  IdentityFile {}\n  \
                 IdentitiesOnly yes\n  UserKnownHostsFile {}\n  BatchMode yes\n",
                server.port(),
                server.user,
                server.client_key().display(),
                known_hosts.display()
            ),
        )
        .unwrap();
        let real = ["/usr/bin/ssh", "/bin/ssh", "/usr/local/bin/ssh"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("an ssh client");
        let bin = dir.path().join("bin");
        fs::create_dir(&bin).unwrap();
        let script = bin.join("ssh");
        let root = dir.path().display();
        fs::write(
            &script,
            format!(
                "#!/bin/sh\necho run >> {root}/runs\nfor a in \"$@\"; do case \"$a\" in \
                 ControlPath=*) stat -c '%a %n' \"$(dirname \"${{a#ControlPath=}}\")\" \
                 >> {root}/modes;; esac; done\nexec {real} -F {} \"$@\"\n",
                config.display()
            ),
        )
        .unwrap();
        fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        PlainSsh {
            dir,
            runtime: tempfile::tempdir().unwrap(),
        }
    }

    /// PATH with this ssh first.
    fn path(&self) -> String {
        format!(
            "{}:{}",
            self.dir.path().join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }

    /// The agent's command with this ssh first on PATH, the user's runtime
    /// dir a folder of the test's, and no ssh command of the user's.
    fn command(&self, device: &Device) -> std::process::Command {
        let mut command = device.command();
        command
            .env("PATH", self.path())
            .env("XDG_RUNTIME_DIR", self.runtime())
            .env_remove("GIT_SSH_COMMAND")
            .env_remove("GIT_SSH");
        command
    }

    fn runtime(&self) -> std::path::PathBuf {
        self.runtime.path().to_owned()
    }

    fn lines(&self, name: &str) -> Vec<String> {
        fs::read_to_string(self.dir.path().join(name))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Processes whose command line names the runtime dir (an ssh master
    /// started with a ControlPath there).
    fn processes_in_runtime(&self) -> Vec<String> {
        let needle = self.runtime().display().to_string();
        let mut found = Vec::new();
        for entry in fs::read_dir("/proc").unwrap().flatten() {
            let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(&needle) {
                found.push(cmdline);
            }
        }
        found
    }
}

/// An empty bare repository `notes.git` (HEAD naming `main`) on `server`.
fn bare_repository(server: &Sshd) -> std::path::PathBuf {
    git(
        &server.served(),
        &["init", "--bare", "-q", "-b", "main", "notes.git"],
    );
    server.served().join("notes.git")
}

/// Waits (10 s at most) until no ssh master of ours runs, then checks that
/// the runtime folder holds nothing of ours either.
fn assert_no_master_left(ssh: &PlainSsh) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !ssh.processes_in_runtime().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(ssh.processes_in_runtime(), Vec::<String>::new());
    let left: Vec<_> = fs::read_dir(ssh.runtime()).unwrap().flatten().collect();
    assert!(left.is_empty(), "{left:?}");
}

fn logins(server: &Sshd) -> usize {
    server.log().matches("Accepted publickey").count()
}

/// Runs the agent once; returns how long it took and what it said.
fn run_ok(mut command: std::process::Command) -> (std::time::Duration, String) {
    let started = std::time::Instant::now();
    let out = command.output().unwrap();
    let said = crate::files::text(&out);
    assert!(matches!(out.status.code(), Some(0) | Some(3)), "{said}");
    (started.elapsed(), said)
}

#[test]
fn a_sync_over_plain_ssh_logs_in_once_and_leaves_no_master_behind() {
    let server = Sshd::start();
    let bare = bare_repository(&server);
    let ssh = PlainSsh::new(&server);
    let device = Device::new("alpha", &format!("git+notes-server:{}", bare.display()), "");
    put(&device.local, "a.md", "alpha\n");
    put(&device.local, "docs/b.md", "beta\n");

    let before = logins(&server);
    let (took, said) = run_ok(ssh.command(&device));
    assert!(
        said.contains("ssh connections to the git remote are shared"),
        "{said}"
    );
    let runs = ssh.lines("runs").len();
    assert!(runs >= 3, "ls-remote, the branch push, the records: {runs}");
    assert_eq!(logins(&server) - before, 1, "one login for {runs} calls");
    // The master holds none of the calls' pipes: a call waiting for it
    // would have waited out its ControlPersist (60 s).
    assert!(took < std::time::Duration::from_secs(30), "{took:?}");
    let modes = ssh.lines("modes");
    assert_eq!(modes.len(), runs);
    let private_in_runtime = format!("700 {}/prism-sync-ssh-", ssh.runtime().display());
    assert!(
        modes.iter().all(|m| m.starts_with(&private_in_runtime)),
        "{modes:?}"
    );
    assert_eq!(
        git(&bare, &["ls-tree", "-r", "--name-only", "main"]),
        "a.md\ndocs/b.md"
    );

    // The agent stopped: its master was told to exit, its folder is gone.
    assert_no_master_left(&ssh);
}

#[test]
fn a_user_s_own_ssh_command_is_run_as_written_without_sharing() {
    let server = Sshd::start();
    let bare = bare_repository(&server);
    let ssh = PlainSsh::new(&server);
    let device = Device::new("alpha", &format!("git+notes-server:{}", bare.display()), "");
    put(&device.local, "a.md", "alpha\n");

    let before = logins(&server);
    let mut command = ssh.command(&device);
    command.env("GIT_SSH_COMMAND", "ssh");
    let (_, said) = run_ok(command);
    assert!(
        said.contains("ssh connections to the git remote are not shared: GIT_SSH_COMMAND is set"),
        "{said}"
    );
    let runs = ssh.lines("runs").len();
    assert!(runs >= 3, "{runs}");
    assert_eq!(logins(&server) - before, runs, "one login per call");
    assert!(ssh.lines("modes").is_empty(), "no ControlPath was added");
    let made: Vec<_> = fs::read_dir(ssh.runtime()).unwrap().flatten().collect();
    assert!(made.is_empty(), "{made:?}");
    assert_eq!(
        git(&bare, &["ls-tree", "-r", "--name-only", "main"]),
        "a.md"
    );
}

#[test]
fn a_running_agent_s_polls_reuse_one_login_and_stopping_it_ends_the_master() {
    let server = Sshd::start();
    let bare = bare_repository(&server);
    let ssh = PlainSsh::new(&server);
    let device =
        Device::polling_each_second("alpha", &format!("git+notes-server:{}", bare.display()));
    put(&device.local, "a.md", "alpha\n");
    let before = logins(&server);
    let path = ssh.path();
    let runtime = ssh.runtime();
    let agent = device.start_with_env(&[
        ("PATH", std::path::Path::new(&path)),
        ("XDG_RUNTIME_DIR", &runtime),
    ]);
    let wait_for = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "{what}");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    wait_for("a.md pushed", &|| {
        std::process::Command::new("git")
            .args(["show", "main:a.md"])
            .current_dir(&bare)
            .output()
            .is_ok_and(|out| out.status.success())
    });
    // Three more polls, each an `ls-remote`.
    let pushed = ssh.lines("runs").len();
    wait_for("three polls", &|| ssh.lines("runs").len() >= pushed + 3);
    let runs = ssh.lines("runs").len();
    assert_eq!(logins(&server) - before, 1, "one login for {runs} calls");
    let folders: Vec<_> = fs::read_dir(&runtime).unwrap().flatten().collect();
    assert_eq!(folders.len(), 1, "{folders:?}");
    let mode = folders[0].metadata().unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o700
    );
    assert!(!ssh.processes_in_runtime().is_empty(), "a master runs");

    agent.stop();
    assert_no_master_left(&ssh);
}
