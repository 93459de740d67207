//! Running `git` for the mirror: one environment for every call, bounded
//! time, and errors that say what failed.
//!
//! Every call runs with the mirror as `GIT_DIR`, without a terminal prompt
//! (`GIT_TERMINAL_PROMPT=0`, stdin closed), in the C locale (messages are
//! matched), and with `-c` settings that keep a user's or system's config
//! from changing what plumbing does here: no hooks of the user's (a global
//! `core.hooksPath` would otherwise run their pre-push hooks on our
//! pushes), no commit signing (it would wait for a pinentry), no automatic
//! gc, no CRLF conversion. Everything else in the user's config is left
//! alone on purpose: `core.sshCommand`, `url.*.insteadOf` and credential
//! helpers are how their remotes work.
//!
//! Each call has a deadline. The child runs in a session of its own (no
//! controlling terminal: nothing it starts can prompt there), so a
//! deadline ends the `ssh` or `git-remote-https` it started too.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Plumbing on the mirror only: it never waits for a network.
pub const LOCAL: Duration = Duration::from_secs(120);
/// `ls-remote`, `fetch`, `push`: a large first fetch over a slow link may
/// take long, a server that stops answering may not.
pub const NETWORK: Duration = Duration::from_secs(900);

/// Settings every call runs with (see the module comment).
const OVERRIDES: &[&str] = &[
    "commit.gpgSign=false",
    "tag.gpgSign=false",
    "push.gpgSign=false",
    "gc.auto=0",
    "maintenance.auto=false",
    "core.autocrlf=false",
    "core.safecrlf=false",
    "core.fsmonitor=false",
    "core.quotePath=false",
    "color.ui=false",
    "fetch.recurseSubmodules=false",
    "push.recurseSubmodules=no",
    "credential.interactive=false",
    // HTTP: a transfer slower than 1 KB/s for a minute has stalled.
    "http.lowSpeedLimit=1000",
    "http.lowSpeedTime=60",
];

/// Variables a calling shell (or a git hook that started the agent) may
/// have set that would point plumbing at another repository or index.
const CLEARED: &[&str] = &[
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_NAMESPACE",
    "GIT_COMMON_DIR",
    "GIT_PREFIX",
    "GIT_QUARANTINE_PATH",
    "GIT_CONFIG_PARAMETERS",
    "GIT_CONFIG_COUNT",
];

/// Why a call failed.
#[derive(Debug)]
pub enum GitError {
    /// `git` could not be started at all.
    Spawn(std::io::Error),
    /// It ran past its deadline and was ended.
    TimedOut { what: String, after: Duration },
    /// It ended with a failure; `stderr` is what it said.
    Failed {
        what: String,
        status: ExitStatus,
        stderr: String,
        /// What it wrote to stdout (a push's `--porcelain` report).
        stdout: String,
    },
    /// Reading its output or writing its input failed.
    Io(std::io::Error),
}

impl std::fmt::Display for GitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GitError::Spawn(e) => write!(f, "cannot run git (is it installed?): {e}"),
            GitError::TimedOut { what, after } => {
                write!(f, "`{what}` did not finish within {} s", after.as_secs())
            }
            GitError::Failed {
                what,
                stderr,
                stdout,
                ..
            } => {
                // A push's porcelain report says per ref why it failed.
                let refused: Vec<&str> = stdout.lines().filter(|l| l.starts_with('!')).collect();
                let mut said = last_lines(stderr);
                if !refused.is_empty() {
                    said = format!("{}; {said}", refused.join("; ").replace('\t', " "));
                }
                if said.is_empty() {
                    write!(f, "`{what}` failed")
                } else {
                    write!(f, "`{what}` failed: {said}")
                }
            }
            GitError::Io(e) => write!(f, "cannot talk to git: {e}"),
        }
    }
}

impl GitError {
    /// What git wrote to stderr, if it ran and failed.
    pub fn stderr(&self) -> &str {
        match self {
            GitError::Failed { stderr, .. } => stderr,
            _ => "",
        }
    }

    /// What git wrote to stdout before it failed.
    pub fn stdout(&self) -> &str {
        match self {
            GitError::Failed { stdout, .. } => stdout,
            _ => "",
        }
    }
}

/// The meaningful part of git's stderr, on one line: its `fatal:` and
/// `error:` lines (hints and progress left out), else its last line.
fn last_lines(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("hint:"))
        .collect();
    let important: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("fatal:") || l.starts_with("error:") || l.starts_with('!'))
        .collect();
    if important.is_empty() {
        lines.last().copied().unwrap_or_default().to_owned()
    } else {
        important.join("; ")
    }
}

/// The `git` of one mirror.
#[derive(Clone, Debug)]
pub struct Git {
    git_dir: PathBuf,
}

/// One call being built.
pub struct Call {
    command: Command,
    what: String,
    input: Option<Vec<u8>>,
    deadline: Duration,
}

impl Git {
    pub fn new(git_dir: PathBuf) -> Git {
        Git { git_dir }
    }

    pub fn git_dir(&self) -> &Path {
        &self.git_dir
    }

    /// A call of `git ARGS` on the mirror with the local deadline.
    pub fn call<I, S>(&self, args: I) -> Call
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<std::ffi::OsString> =
            args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        // Named by the subcommand only: arguments may hold a URL.
        let what = format!(
            "git {}",
            args.first()
                .map(|a| a.to_string_lossy().into_owned())
                .unwrap_or_default()
        );
        let mut command = Command::new("git");
        for setting in OVERRIDES {
            command.arg("-c").arg(setting);
        }
        let hooks = self.git_dir.join("prism-no-hooks");
        command
            .arg("-c")
            .arg(format!("core.hooksPath={}", hooks.display()));
        command.args(&args);
        for name in CLEARED {
            command.env_remove(name);
        }
        command
            .env("GIT_DIR", &self.git_dir)
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_ASKPASS", "")
            .env("SSH_ASKPASS_REQUIRE", "never")
            .env("GCM_INTERACTIVE", "never")
            .env("LC_ALL", "C")
            .env("LANG", "C")
            .env("LANGUAGE", "")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: setsid(2) is async-signal-safe and touches no memory of
        // the parent; it runs in the child between fork and exec.
        unsafe {
            command.pre_exec(|| {
                // A session of its own: no controlling terminal, so an ssh
                // started by `prism-syncd --once` in a terminal cannot ask
                // there (it would stop the whole group in the background),
                // and a process group the deadline can end as a whole.
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Call {
            command,
            what,
            input: None,
            deadline: LOCAL,
        }
    }
}

impl Call {
    /// Sets an environment variable for this call.
    pub fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> Call {
        self.command.env(key, value);
        self
    }

    /// Adds one more argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Call {
        self.command.arg(arg);
        self
    }

    /// Gives the call `input` on stdin.
    pub fn input(mut self, input: Vec<u8>) -> Call {
        self.input = Some(input);
        self.command.stdin(Stdio::piped());
        self
    }

    /// The network deadline instead of the local one.
    pub fn network(mut self) -> Call {
        self.deadline = NETWORK;
        self
    }

    /// Runs to the end; returns stdout.
    pub fn run(self) -> Result<Vec<u8>, GitError> {
        let Call {
            mut command,
            what,
            input,
            deadline,
        } = self;
        let mut child = command.spawn().map_err(GitError::Spawn)?;
        let stdin = child.stdin.take();
        let writer = std::thread::spawn(move || -> std::io::Result<()> {
            if let (Some(mut stdin), Some(input)) = (stdin, input) {
                stdin.write_all(&input)?;
            }
            Ok(())
        });
        let stdout = drain(child.stdout.take());
        let stderr = drain(child.stderr.take());
        let status = wait_within(child, deadline).map_err(|e| match e {
            Waited::TimedOut => GitError::TimedOut {
                what: what.clone(),
                after: deadline,
            },
            Waited::Io(e) => GitError::Io(e),
        })?;
        let stdout = stdout.join().unwrap_or_default();
        let stderr = String::from_utf8_lossy(&stderr.join().unwrap_or_default()).into_owned();
        let written = writer.join().unwrap_or(Ok(()));
        if !status.success() {
            return Err(GitError::Failed {
                what,
                status,
                stderr,
                stdout: String::from_utf8_lossy(&stdout).into_owned(),
            });
        }
        written.map_err(GitError::Io)?;
        Ok(stdout)
    }

    /// Runs to the end; returns stdout as text without its final newline.
    pub fn text(self) -> Result<String, GitError> {
        let out = self.run()?;
        Ok(String::from_utf8_lossy(&out).trim_end().to_owned())
    }

    /// Starts the call and hands over its stdout to be read as a stream
    /// (a blob's content); the child is waited for when the stream ends
    /// or is dropped.
    pub fn stream(mut self) -> Result<Streamed, GitError> {
        self.command.stderr(Stdio::null());
        let mut child = self.command.spawn().map_err(GitError::Spawn)?;
        if let (Some(mut stdin), Some(input)) = (child.stdin.take(), self.input) {
            // Written beside the reading: git answers while it reads.
            std::thread::spawn(move || {
                let _ = stdin.write_all(&input);
            });
        }
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| GitError::Io(std::io::Error::other("no stdout")))?;
        Ok(Streamed {
            child,
            stdout,
            what: self.what,
        })
    }
}

/// The stdout of a running call.
pub struct Streamed {
    child: Child,
    stdout: std::process::ChildStdout,
    what: String,
}

impl Read for Streamed {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.stdout.read(buf)?;
        if n == 0 && !buf.is_empty() {
            let status = self.child.wait()?;
            if !status.success() {
                return Err(std::io::Error::other(format!("`{}` failed", self.what)));
            }
        }
        Ok(n)
    }
}

impl Drop for Streamed {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut out = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut out);
        }
        out
    })
}

enum Waited {
    TimedOut,
    Io(std::io::Error),
}

/// Waits for `child` at most `deadline`; past it, ends its whole process
/// group (git and the transport it started).
fn wait_within(mut child: Child, deadline: Duration) -> Result<ExitStatus, Waited> {
    let pid = child.id() as i32;
    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait());
    });
    match finished.recv_timeout(deadline) {
        Ok(status) => status.map_err(Waited::Io),
        Err(_) => {
            // SAFETY: kill(2) with a negative pid signals the process
            // group the child leads (it started a session of its own); no
            // memory is involved.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
            Err(Waited::TimedOut)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_names_the_subcommand_and_what_git_said() {
        let dir = tempfile::TempDir::new().unwrap();
        let git = Git::new(dir.path().join("absent.git"));
        let error = git.call(["rev-parse", "HEAD"]).run().unwrap_err();
        let message = error.to_string();
        assert!(
            message.starts_with("`git rev-parse` failed: fatal:"),
            "{message}"
        );
    }

    #[test]
    fn git_runs_in_a_session_of_its_own_without_a_terminal() {
        let dir = tempfile::TempDir::new().unwrap();
        let git = Git::new(dir.path().join("m.git"));
        git.call(["init", "--bare", "-q"]).run().unwrap();
        let session = |stat: &str| stat.split(' ').nth(5).unwrap().to_owned();
        let ours = session(&std::fs::read_to_string("/proc/self/stat").unwrap());
        let theirs = git
            .call(["-c", "alias.stat=!cat /proc/$$/stat", "stat"])
            .text()
            .unwrap();
        assert_ne!(session(&theirs), ours);
        // The tty field (7th) is 0: no controlling terminal.
        assert_eq!(theirs.split(' ').nth(6), Some("0"));
    }

    #[test]
    fn input_reaches_git_and_output_comes_back() {
        let dir = tempfile::TempDir::new().unwrap();
        let git = Git::new(dir.path().join("m.git"));
        git.call(["init", "--bare", "-q"]).run().unwrap();
        let oid = git
            .call(["hash-object", "--stdin"])
            .input(b"hello\n".to_vec())
            .text()
            .unwrap();
        assert_eq!(oid, "ce013625030ba8dba906f756967f9e9ca394464a");
    }

    #[test]
    fn the_user_s_hooks_path_and_signing_do_not_apply() {
        let dir = tempfile::TempDir::new().unwrap();
        let git = Git::new(dir.path().join("m.git"));
        git.call(["init", "--bare", "-q"]).run().unwrap();
        let hooks = git
            .call(["config", "--get", "core.hooksPath"])
            .env("GIT_CONFIG_GLOBAL", dir.path().join("nothing"))
            .text()
            .unwrap();
        assert!(hooks.ends_with("prism-no-hooks"), "{hooks}");
        let signing = git
            .call(["config", "--get", "commit.gpgSign"])
            .text()
            .unwrap();
        assert_eq!(signing, "false");
    }
}
