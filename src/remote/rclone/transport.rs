//! Where an `rclone rcd` listens, chosen anew for every start from the
//! version of the binary that is about to run (the user may have
//! upgraded rclone since the last start).
//!
//! rclone 1.61 moved its remote control onto `lib/http`, which listens on
//! a Unix socket when the address is `unix:///PATH` (with `--rc-serve`
//! reads through it too). There the rcd gets a socket in a fresh 0700
//! folder of ours, which keeps every other user out whatever rclone does
//! with the login (1.61 to 1.68 skip it on Unix sockets; the random login
//! is still handed over, in depth). An older rclone (Debian bookworm's
//! 1.60.1) listens on a free port of 127.0.0.1 behind its random login.

use std::io::Read;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The first rclone whose rcd listens on a Unix socket.
pub const UNIX_SOCKET_SINCE: (u64, u64) = (1, 61);

/// The longest socket path the kernel takes (`sun_path` is 108 bytes,
/// one of them the closing NUL).
const SUN_PATH_MAX: usize = 107;

/// How long `rclone version` may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// The beginning of every socket folder's name.
const DIR_PREFIX: &str = "prism-sync-rcd-";

/// How old a socket folder whose socket nobody listens on must be before
/// it is taken for one an agent killed outright left behind (well past
/// the time an rcd may take to start listening).
const STALE_DIR_AGE: Duration = Duration::from_secs(120);

/// The version a binary reports with `rclone version`: `v1.75.2`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BinaryVersion {
    pub text: String,
    /// `None` where the text has no `MAJOR.MINOR` (a private build).
    pub numbers: Option<(u64, u64)>,
}

impl BinaryVersion {
    /// The first line of `rclone version`'s output: `rclone v1.60.1-DEV`.
    pub fn parse(output: &str) -> BinaryVersion {
        let line = output.lines().next().unwrap_or("").trim();
        let text = line
            .strip_prefix("rclone ")
            .unwrap_or(line)
            .trim()
            .to_owned();
        let mut parts = text.trim_start_matches('v').split(['.', '-']);
        let mut number = || parts.next().and_then(|p| p.parse::<u64>().ok());
        let numbers = number().zip(number());
        BinaryVersion { text, numbers }
    }

    /// Whether its rcd can listen on a Unix socket. A build that does
    /// not say its numbers keeps to TCP, which every rclone offers.
    pub fn offers_unix_socket(&self) -> bool {
        self.numbers.is_some_and(|n| n >= UNIX_SOCKET_SINCE)
    }
}

/// Runs `binary version`; `Err(NotFound)` where there is no such binary.
pub fn probe_version(binary: &Path) -> std::io::Result<BinaryVersion> {
    let mut child = Command::new(binary)
        .arg("version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let deadline = Instant::now() + PROBE_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "`rclone version` did not answer within {} s",
                    PROBE_TIMEOUT.as_secs()
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut output = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        stdout.read_to_string(&mut output)?;
    }
    if !status.success() {
        return Err(std::io::Error::other(format!(
            "`rclone version` failed ({status})"
        )));
    }
    Ok(BinaryVersion::parse(&output))
}

/// A fresh 0700 folder holding the rcd's socket; removed (with whatever
/// is in it) when dropped, that is when the rcd stopped.
#[derive(Debug)]
pub struct SocketDir {
    dir: PathBuf,
    socket: PathBuf,
}

impl SocketDir {
    /// A new folder in the user's runtime dir (`$XDG_RUNTIME_DIR`), else
    /// in the system's temporary folder; `None` where neither can hold a
    /// socket path short enough for the kernel (TCP is used then).
    pub fn create(suffix: &str) -> std::io::Result<Option<SocketDir>> {
        let runtime = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|dir| dir.is_absolute() && dir.is_dir());
        let bases: Vec<PathBuf> = runtime.into_iter().chain([std::env::temp_dir()]).collect();
        SocketDir::create_in(&bases, suffix)
    }

    /// [`SocketDir::create`] in the first of `bases` where it can be made.
    fn create_in(bases: &[PathBuf], suffix: &str) -> std::io::Result<Option<SocketDir>> {
        let mut failed = None;
        for base in bases {
            let dir = base.join(format!("{DIR_PREFIX}{suffix}"));
            let socket = dir.join("rc.sock");
            if socket.as_os_str().len() > SUN_PATH_MAX {
                continue;
            }
            sweep_stale(base, STALE_DIR_AGE);
            // `create`, not `create_all`: a folder someone else made
            // under this name is never taken over. One that cannot be
            // made in the runtime dir is made in the temporary folder.
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => return Ok(Some(SocketDir { dir, socket })),
                Err(e) => failed = Some(e),
            }
        }
        failed.map_or(Ok(None), Err)
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// rclone's address for it.
    pub fn rc_addr(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// Whether the rcd accepts connections on it yet.
    pub fn accepts(&self) -> bool {
        std::os::unix::net::UnixStream::connect(&self.socket).is_ok()
    }
}

/// Removes the socket folders of ours in `base` that an agent killed
/// outright left behind (its rcd ended with it, by its parent-death
/// signal, but nobody removed the folder): older than `age`, and nobody
/// listens on the socket in them. Another user's folders are not ours to
/// look into (0700), and a running rcd's socket accepts.
fn sweep_stale(base: &Path, age: Duration) {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: getuid(2) cannot fail.
    let uid = unsafe { libc::getuid() };
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(DIR_PREFIX) {
            continue;
        }
        let Ok(meta) = entry.path().symlink_metadata() else {
            continue;
        };
        let old = meta
            .modified()
            .ok()
            .and_then(|at| at.elapsed().ok())
            .is_some_and(|elapsed| elapsed >= age);
        if !meta.is_dir() || meta.uid() != uid || !old {
            continue;
        }
        let socket = entry.path().join("rc.sock");
        let dead = match std::os::unix::net::UnixStream::connect(&socket) {
            Ok(_) => false,
            Err(e) => matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
            ),
        };
        if dead {
            tracing::debug!(dir = %entry.path().display(), "removing a socket folder an earlier rclone rcd left behind");
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

impl Drop for SocketDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot remove the rclone rcd's socket folder");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_rclone_version_and_decide_the_socket() {
        let v = BinaryVersion::parse("rclone v1.60.1-DEV\n- os/version: debian 12.11\n");
        assert_eq!(v.text, "v1.60.1-DEV");
        assert_eq!(v.numbers, Some((1, 60)));
        assert!(!v.offers_unix_socket());
        let v = BinaryVersion::parse("rclone v1.75.2\n- os/version: debian 12.11\n");
        assert_eq!(v.numbers, Some((1, 75)));
        assert!(v.offers_unix_socket());
        assert!(BinaryVersion::parse("rclone v1.61.0\n").offers_unix_socket());
        assert!(BinaryVersion::parse("rclone v2.0.0\n").offers_unix_socket());
        let private = BinaryVersion::parse("rclone private-build\n");
        assert_eq!(private.numbers, None);
        assert!(!private.offers_unix_socket());
    }

    #[test]
    fn a_socket_folder_is_private_fresh_and_removed_when_dropped() {
        let dir = SocketDir::create("unit-test-0700").unwrap().unwrap();
        let folder = dir.socket().parent().unwrap().to_owned();
        let mode = std::fs::metadata(&folder).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o700
        );
        assert!(dir.socket().as_os_str().len() <= SUN_PATH_MAX);
        assert!(
            SocketDir::create("unit-test-0700").is_err(),
            "a folder already there is never taken over"
        );
        std::fs::write(dir.socket(), b"left behind").unwrap();
        drop(dir);
        assert!(!folder.exists());
    }

    #[test]
    fn a_socket_folder_goes_where_it_can_be_made_and_its_path_fits() {
        let temp = tempfile::tempdir().unwrap();
        let long = temp.path().join("x".repeat(SUN_PATH_MAX));
        // /proc takes no folders; a base too long for a socket path is
        // passed over.
        let bases = [PathBuf::from("/proc"), long, temp.path().to_owned()];
        let dir = SocketDir::create_in(&bases, "fallback").unwrap().unwrap();
        assert!(dir.socket().starts_with(temp.path()), "{dir:?}");
        let too_long = [temp.path().join("x".repeat(SUN_PATH_MAX))];
        assert!(SocketDir::create_in(&too_long, "none").unwrap().is_none());
    }

    #[test]
    fn socket_folders_a_killed_agent_left_are_swept_and_live_ones_kept() {
        let base = tempfile::tempdir().unwrap();
        let folder = |name: &str| {
            let dir = base.path().join(format!("{DIR_PREFIX}{name}"));
            std::fs::DirBuilder::new().mode(0o700).create(&dir).unwrap();
            dir
        };
        // Its rcd was killed: the socket is there, nobody listens.
        let dead = folder("dead");
        drop(std::os::unix::net::UnixListener::bind(dead.join("rc.sock")).unwrap());
        // Killed before its rcd listened.
        let empty = folder("empty");
        // A running rcd's.
        let live = folder("live");
        let _listener = std::os::unix::net::UnixListener::bind(live.join("rc.sock")).unwrap();
        let other = base.path().join("something-else");
        std::fs::create_dir(&other).unwrap();

        // Too young: one starting right now may not listen yet.
        sweep_stale(base.path(), Duration::from_secs(3600));
        assert!(dead.exists() && empty.exists() && live.exists());
        sweep_stale(base.path(), Duration::ZERO);
        assert!(!dead.exists() && !empty.exists());
        assert!(live.exists() && other.exists());
    }
}
