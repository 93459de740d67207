//! The single-instance lock: one agent per state dir, because two agents
//! sharing a journal and a local trash would each trust a base the other is
//! changing.
//!
//! An exclusive `flock` on `STATE_DIR/agent.lock`, held for the life of the
//! process. The kernel releases it when the process dies, however it dies,
//! so a crash never leaves a stale lock behind.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Holds the lock until dropped.
#[derive(Debug)]
pub struct InstanceLock {
    _file: File,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another prism-syncd (pid {pid}) is already running with the state dir {}; stop it first, or give this one its own --state-dir",
        state_dir.display()
    )]
    AlreadyRunning { state_dir: PathBuf, pid: String },
    #[error("cannot lock {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl InstanceLock {
    /// Takes the lock in `state_dir`, or says who holds it.
    pub fn acquire(state_dir: &Path, lock_file: &Path) -> Result<InstanceLock, LockError> {
        let io_error = |source| LockError::Io {
            path: lock_file.to_path_buf(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(lock_file)
            .map_err(io_error)?;
        if !crate::fsops::try_lock_exclusive(&file).map_err(io_error)? {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            return Err(LockError::AlreadyRunning {
                state_dir: state_dir.to_path_buf(),
                pid: pid.trim().to_owned(),
            });
        }
        file.set_len(0).map_err(io_error)?;
        file.seek(SeekFrom::Start(0)).map_err(io_error)?;
        writeln!(file, "{}", std::process::id()).map_err(io_error)?;
        Ok(InstanceLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_state_dir_is_refused_with_the_pid() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("agent.lock");
        let first = InstanceLock::acquire(dir.path(), &file).unwrap();
        let err = InstanceLock::acquire(dir.path(), &file).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains(&std::process::id().to_string()),
            "{message}"
        );
        assert!(message.contains("already running"), "{message}");
        drop(first);
        InstanceLock::acquire(dir.path(), &file).unwrap();
    }
}
