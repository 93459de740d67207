//! One ssh connection for all of a replica's git calls to an ssh remote.
//!
//! Every `ls-remote`, `fetch` and `push` over ssh is a process of its own
//! that would log in anew (a key exchange, an authentication: most of an
//! idle poll's time). Where git would run plain `ssh` itself, our calls
//! run it with OpenSSH's connection sharing added on the command line:
//! `ssh -o ControlMaster=auto -o ControlPath=DIR/%C -o ControlPersist=60`.
//! The first call starts a master that later calls reuse; everything else
//! still comes from the user's ssh config, keys and agent (options given
//! with `-o` come first, and ssh takes the first value it obtains for
//! each option: only these three are ours).
//!
//! Only then: the URL is ssh (`ssh://` or the scp-like `host:path`), and
//! the user has chosen no ssh command of their own (`GIT_SSH_COMMAND`,
//! `GIT_SSH`, or `core.sshCommand`): a command they chose is run exactly
//! as they wrote it, one login per call. Setting either turns sharing off.
//!
//! DIR is a fresh private folder per replica ([`SocketDir`]). The master
//! lives `ControlPersist` seconds past its last call: 60 s outlives the
//! 30 s between two polls of the default interval, so an idle agent keeps
//! one login, and a master whose agent was killed outright goes within a
//! minute. When the replica is dropped (the agent stops), the master is
//! asked to exit (`ssh -O exit`): otherwise an authenticated session to
//! the server would outlive the agent by up to a minute.

use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::command::{Git, GitError};
use crate::remote::socket_dir::SocketDir;

/// How long a master outlives its last call (see the module comment).
pub const CONTROL_PERSIST_SECS: u64 = 60;

/// `%C`, the name ssh gives a socket: 40 hex digits; while it starts
/// listening, ssh binds a temporary name with 17 more characters.
const SOCKET_NAME_MAX: usize = 40 + 17;

/// How long `ssh -O exit` may take: it only talks to the local master.
const EXIT_TIMEOUT: Duration = Duration::from_secs(5);

/// A replica's shared ssh connection: the folder of its master's socket
/// and the command git runs ssh with.
#[derive(Debug)]
pub struct SshSharing {
    dir: SocketDir,
    command: String,
}

impl SshSharing {
    /// Sharing for the calls of `git` to `url`, where git would run plain
    /// `ssh` (see the module comment); `None` where it would not, or where
    /// no folder can be made.
    pub fn for_remote(git: &Git, url: &str) -> Option<SshSharing> {
        if !speaks_ssh(url) {
            return None;
        }
        if let Some(chosen) = users_ssh_command(git) {
            tracing::debug!("ssh connections to the git remote are not shared: {chosen}");
            return None;
        }
        let dir = match SocketDir::create("ssh", SOCKET_NAME_MAX) {
            Ok(Some(dir)) => dir,
            Ok(None) => {
                tracing::debug!(
                    "ssh connections to the git remote are not shared: no folder with a path \
                     short enough for a socket"
                );
                return None;
            }
            Err(e) => {
                tracing::warn!(error = %e, "ssh connections to the git remote are not shared: cannot make a folder for the socket");
                return None;
            }
        };
        let shown = dir.path().to_string_lossy();
        if !plain_path(&shown) {
            tracing::debug!(dir = %shown, "ssh connections to the git remote are not shared: the socket folder's path would need quoting");
            return None;
        }
        let command = format!(
            "ssh -o ControlMaster=auto -o ControlPath={shown}/%C -o ControlPersist={CONTROL_PERSIST_SECS}"
        );
        tracing::debug!(dir = %shown, persist_secs = CONTROL_PERSIST_SECS, "ssh connections to the git remote are shared through one master");
        Some(SshSharing { dir, command })
    }

    /// What `GIT_SSH_COMMAND` is for the calls.
    pub fn command(&self) -> &str {
        &self.command
    }

    /// Asks the master (if one runs) to exit, and removes its socket
    /// whether or not it answered: the next call logs in anew. For a
    /// call that ran past its deadline too, as a master whose connection
    /// silently died (a laptop resumed on another network) would hold
    /// every later call until TCP gives up; it runs in a session of its
    /// own, so ending the call's process group does not end it.
    pub fn end_master(&self) {
        let Ok(entries) = std::fs::read_dir(self.dir.path()) else {
            return;
        };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_socket()) {
                exit_master(&entry.path());
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

impl Drop for SshSharing {
    /// Ends the master; the folder goes after.
    fn drop(&mut self) {
        self.end_master();
    }
}

/// `ssh -O exit` through `socket`, bounded. Without the user's config:
/// a control command only talks to the local master.
fn exit_master(socket: &Path) {
    let spawned = Command::new("ssh")
        .arg("-F")
        .arg("/dev/null")
        .arg("-o")
        .arg(format!("ControlPath={}", socket.display()))
        .args(["-O", "exit", "prism-sync-git"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut child) = spawned else {
        return;
    };
    let deadline = Instant::now() + EXIT_TIMEOUT;
    while let Ok(None) = child.try_wait() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            tracing::debug!(socket = %socket.display(), "the ssh master did not answer `ssh -O exit`; it ends at its ControlPersist");
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Whether `path` goes into the command as it is: git runs the command
/// through the shell, and ssh reads `%`, `~` and spaces in an option, so
/// a folder whose path needs quoting for either is not used.
fn plain_path(path: &str) -> bool {
    path.starts_with('/')
        && path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-".contains(c))
}

/// Whether git reaches `url` (after `git+`) through ssh: an `ssh://`
/// URL, or the scp-like `[user@]host:path` (a `:` before any `/`, as git
/// tells it from a local path).
pub fn speaks_ssh(url: &str) -> bool {
    match url.split_once("://") {
        Some((scheme, _)) => matches!(
            scheme.to_ascii_lowercase().as_str(),
            "ssh" | "git+ssh" | "ssh+git"
        ),
        None => url
            .find(':')
            .is_some_and(|colon| url.find('/').is_none_or(|slash| colon < slash)),
    }
}

/// Which ssh command of their own the user chose, if any (named, never
/// shown: it may hold a path or a key name); `Some` too where git's config
/// cannot be read, as nothing is added then.
fn users_ssh_command(git: &Git) -> Option<&'static str> {
    if std::env::var_os("GIT_SSH_COMMAND").is_some() {
        return Some("GIT_SSH_COMMAND is set");
    }
    if std::env::var_os("GIT_SSH").is_some() {
        return Some("GIT_SSH is set");
    }
    match git.call(["config", "--get", "core.sshCommand"]).run() {
        Ok(_) => Some("core.sshCommand is set in git's config"),
        // Exit 1: the key is not set.
        Err(GitError::Failed { status, .. }) if status.code() == Some(1) => None,
        Err(e) => {
            tracing::debug!(error = %e, "cannot read core.sshCommand");
            Some("git's config cannot be read")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_urls_are_told_from_others_as_git_tells_them() {
        for ssh in [
            "ssh://git@host/me/notes.git",
            "SSH://host:2222/srv/notes.git",
            "git+ssh://host/notes.git",
            "git@host:me/notes.git",
            "host:notes.git",
            "host:/srv/a/b.git",
        ] {
            assert!(speaks_ssh(ssh), "{ssh}");
        }
        for other in [
            "https://host/me/notes.git",
            "file:///srv/notes.git",
            "/srv/notes.git",
            "./dir:with/colon.git",
            "git://host/notes.git",
        ] {
            assert!(!speaks_ssh(other), "{other}");
        }
    }

    #[test]
    fn a_socket_folder_whose_path_needs_quoting_is_not_used() {
        assert!(plain_path("/run/user/1000/prism-sync-ssh-0a1b"));
        assert!(plain_path("/tmp/prism-sync-ssh-0a1b"));
        for quoted in [
            "/home/ada/my tmp/prism-sync-ssh-0a1b",
            "/tmp/it's/prism-sync-ssh-0a1b",
            "/tmp/100%/prism-sync-ssh-0a1b",
            "/tmp/$(reboot)/prism-sync-ssh-0a1b",
            "~/prism-sync-ssh-0a1b",
            "/tmp/caf\u{e9}/prism-sync-ssh-0a1b",
        ] {
            assert!(!plain_path(quoted), "{quoted}");
        }
    }

    #[test]
    fn the_user_s_core_ssh_command_turns_sharing_off() {
        let dir = tempfile::TempDir::new().unwrap();
        let git = Git::new(dir.path().join("m.git"));
        git.call(["init", "--bare", "-q"]).run().unwrap();
        let url = "git@host:notes.git";
        let shared = SshSharing::for_remote(&git, url).expect("plain ssh is shared");
        assert!(
            shared
                .command()
                .starts_with("ssh -o ControlMaster=auto -o ControlPath=/"),
            "{}",
            shared.command()
        );
        git.call(["config", "core.sshCommand", "ssh -i key"])
            .run()
            .unwrap();
        assert!(SshSharing::for_remote(&git, url).is_none());
        assert!(SshSharing::for_remote(&git, "https://host/notes.git").is_none());
    }

    #[test]
    fn a_master_that_does_not_answer_is_left_and_its_socket_removed() {
        let dir = SocketDir::create("ssh-test", SOCKET_NAME_MAX)
            .unwrap()
            .unwrap();
        let socket = dir.path().join("0123456789abcdef0123456789abcdef01234567");
        // Accepts (the backlog) but never answers, as a hung master.
        let _hung = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let sharing = SshSharing {
            dir,
            command: String::new(),
        };
        let started = Instant::now();
        sharing.end_master();
        assert!(started.elapsed() < EXIT_TIMEOUT + Duration::from_secs(5));
        assert!(!socket.exists(), "the next call starts a master of its own");
    }
}
