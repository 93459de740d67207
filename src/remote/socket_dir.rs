//! A fresh private folder for the Unix sockets of a helper the agent
//! starts (rclone's rcd, an ssh connection master): made with `create`
//! (0700, never one someone else made), in the user's runtime dir, else in
//! the system's temporary folder, with a path short enough for a socket.
//!
//! The folder holds a lock file the agent keeps locked while it lives: a
//! folder whose lock is free and whose sockets nobody listens on is one
//! an agent killed outright left behind, and the next agent to make one
//! removes it. A live agent's folder is kept even while it holds no
//! socket (an ssh master that timed out is started again in it).

use std::fs::File;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The longest socket path the kernel takes (`sun_path` is 108 bytes,
/// one of them the closing NUL; BSDs take 104).
pub const SUN_PATH_MAX: usize = 107;

/// Every folder's name begins with this, then its purpose and a `-`
/// (`prism-sync-ssh-…`): a sweep looks at the folders of one purpose
/// only, never at other folders whose names begin alike.
const PREFIX: &str = "prism-sync-";

/// The lock file the living agent holds.
const LOCK: &str = "agent.lock";

/// How old a folder must be before it is taken for one a killed agent
/// left behind: one made right now may not be locked yet.
const STALE_DIR_AGE: Duration = Duration::from_secs(120);

/// A fresh 0700 folder for sockets; removed (with whatever is in it) when
/// dropped.
#[derive(Debug)]
pub struct SocketDir {
    dir: PathBuf,
    /// Locked while the folder is in use (see the module comment).
    _lock: File,
}

impl SocketDir {
    /// A new folder for `purpose` (`rcd`, `ssh`) whose sockets' names may
    /// be `longest_name` bytes long; `None` where neither the runtime dir
    /// nor the temporary folder can hold such a path.
    pub fn create(purpose: &str, longest_name: usize) -> std::io::Result<Option<SocketDir>> {
        let runtime = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|dir| dir.is_absolute() && dir.is_dir());
        let bases: Vec<PathBuf> = runtime.into_iter().chain([std::env::temp_dir()]).collect();
        SocketDir::create_in(&bases, purpose, longest_name)
    }

    /// [`SocketDir::create`] in the first of `bases` where it can be made.
    fn create_in(
        bases: &[PathBuf],
        purpose: &str,
        longest_name: usize,
    ) -> std::io::Result<Option<SocketDir>> {
        let mut failed = None;
        for base in bases {
            let named = format!("{PREFIX}{purpose}-");
            let dir = base.join(format!("{named}{}", random_hex(8)?));
            // The folder, a slash, the name.
            if dir.as_os_str().len() + 1 + longest_name > SUN_PATH_MAX {
                continue;
            }
            sweep_stale(base, &named, STALE_DIR_AGE);
            // `create`, not `create_all`: a folder someone else made
            // under this name is never taken over. One that cannot be
            // made in the runtime dir is made in the temporary folder.
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => match lock(&dir.join(LOCK)) {
                    Ok(lock) => return Ok(Some(SocketDir { dir, _lock: lock })),
                    Err(e) => {
                        let _ = std::fs::remove_dir_all(&dir);
                        failed = Some(e);
                    }
                },
                Err(e) => failed = Some(e),
            }
        }
        failed.map_or(Ok(None), Err)
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for SocketDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot remove a socket folder");
        }
    }
}

/// Creates `path` and takes its lock (the descriptor is closed on exec:
/// the helpers started do not hold it).
fn lock(path: &Path) -> std::io::Result<File> {
    let file = File::options().write(true).create_new(true).open(path)?;
    // SAFETY: flock(2) on a descriptor this function owns.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(file)
}

/// Whether the agent that made `dir` still runs: its lock is held.
fn locked_by_a_living_agent(dir: &Path) -> bool {
    let Ok(file) = File::open(dir.join(LOCK)) else {
        return false;
    };
    // SAFETY: flock(2) on a descriptor owned here; closing it releases a
    // lock taken by this probe.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) != 0 }
}

/// Whether a socket in `dir` accepts connections (a running rcd, or an ssh
/// master that outlives its agent until it times out). A socket that
/// answers with anything but "refused" or "not there" counts as alive.
fn a_socket_listens(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return true;
    };
    entries.flatten().any(|entry| {
        let is_socket = entry.file_type().is_ok_and(|t| t.is_socket());
        is_socket
            && match std::os::unix::net::UnixStream::connect(entry.path()) {
                Ok(_) => true,
                Err(e) => !matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
                ),
            }
    })
}

/// Removes the socket folders of ours in `base` whose names begin with
/// `named` that an agent killed outright left behind: older than `age`,
/// no living agent's lock, no socket anyone listens on. Another user's
/// folders are not ours to look into (0700).
fn sweep_stale(base: &Path, named: &str, age: Duration) {
    // SAFETY: getuid(2) cannot fail.
    let uid = unsafe { libc::getuid() };
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(named) {
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
        let dir = entry.path();
        if !locked_by_a_living_agent(&dir) && !a_socket_listens(&dir) {
            tracing::debug!(dir = %dir.display(), "removing a socket folder an agent killed earlier left behind");
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}

fn random_hex(bytes: usize) -> std::io::Result<String> {
    let mut buf = vec![0u8; bytes];
    getrandom::getrandom(&mut buf).map_err(std::io::Error::other)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn a_socket_folder_is_private_fresh_and_removed_when_dropped() {
        let dir = SocketDir::create("unit-test", 40).unwrap().unwrap();
        let folder = dir.path().to_owned();
        let mode = std::fs::metadata(&folder).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o700
        );
        assert!(folder.as_os_str().len() + 41 <= SUN_PATH_MAX);
        assert!(
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&folder)
                .is_err(),
            "a folder already there is never taken over"
        );
        std::fs::write(folder.join("rc.sock"), b"left behind").unwrap();
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
        let dir = SocketDir::create_in(&bases, "t", 7).unwrap().unwrap();
        assert!(dir.path().starts_with(temp.path()), "{dir:?}");
        let too_long = [temp.path().join("x".repeat(SUN_PATH_MAX - 40))];
        assert!(SocketDir::create_in(&too_long, "t", 40).unwrap().is_none());
    }

    #[test]
    fn socket_folders_a_killed_agent_left_are_swept_and_live_ones_kept() {
        let base = tempfile::tempdir().unwrap();
        let folder = |name: &str| {
            let dir = base.path().join(format!("{PREFIX}{name}"));
            std::fs::DirBuilder::new().mode(0o700).create(&dir).unwrap();
            dir
        };
        // Its rcd was killed: the socket is there, nobody listens.
        let dead = folder("rcd-dead");
        drop(UnixListener::bind(dead.join("rc.sock")).unwrap());
        // Killed before anything listened.
        let empty = folder("ssh-empty");
        // A killed agent's ssh master still running until it times out.
        let master = folder("ssh-master");
        let _master = UnixListener::bind(master.join("0123abcd")).unwrap();
        // A living agent's folder whose master timed out: locked, empty.
        let idle = base.path().join(format!("{PREFIX}ssh-idle"));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&idle)
            .unwrap();
        let _held = lock(&idle.join(LOCK)).unwrap();
        // A killed agent's lock: nobody holds it.
        let released = folder("ssh-released");
        drop(lock(&released.join(LOCK)).unwrap());
        let other = base.path().join("something-else");
        std::fs::create_dir(&other).unwrap();
        // Another part's folder whose name begins alike.
        let alike = folder("rclone-0");

        // Too young: one made right now may not be locked yet.
        sweep_stale(base.path(), "prism-sync-ssh-", Duration::from_secs(3600));
        assert!(empty.exists() && released.exists());
        sweep_stale(base.path(), "prism-sync-ssh-", Duration::ZERO);
        assert!(!empty.exists() && !released.exists());
        assert!(master.exists() && idle.exists() && other.exists());
        assert!(dead.exists(), "an rcd's folder is not the ssh sweep's");
        sweep_stale(base.path(), "prism-sync-rcd-", Duration::ZERO);
        assert!(!dead.exists());
        assert!(alike.exists());
    }
}
