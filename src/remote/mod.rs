//! The adapter trait every side of a pair implements, and the backends.
//!
//! A [`Replica`] is one end of a pair: the local folder, or a remote (another
//! folder, an SFTP server, a WebDAV share). The trait is small: list, read,
//! atomic write, mkdir, rename, remove, plus capabilities with defaults.
//! Transport details (file descriptors, SSH sessions, HTTP pools) stay inside
//! each backend; nothing outside `remote/` sees them.
//!
//! Architecture invariant: a replica never destroys content. `write`
//! replaces and `remove` deletes only when the target still matches what
//! the caller expects, and the replaced or removed version goes to the
//! replica's trash. Paths that come from a backend's listing pass through
//! [`RelPath::new`], so a hostile name cannot address anything outside the
//! root.

pub mod lease;
pub mod local;
pub mod sftp;
pub mod webdav;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{PairConfig, RemoteUrl};
use crate::fsops::Expect;
use crate::model::{BaseTree, ContentHash, RelPath, Scope, SideEntry, SideTree};
use crate::tracker::ignore::IgnoreRules;

pub use local::LocalFolder;
pub use sftp::{SftpReplica, SftpTarget};
pub use webdav::{WebdavReplica, WebdavTarget};

/// What a backend can do beyond the required operations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// Names differing only in case are the same file.
    pub case_insensitive: bool,
    /// Listings carry identities that survive renames.
    pub file_ids: bool,
    /// Each commit costs network round trips: the executor runs a batch's
    /// commits concurrently rather than one by one.
    pub parallel_commits: bool,
}

/// A snapshot of (part of) a replica.
#[derive(Debug, Default)]
pub struct Listing {
    pub tree: SideTree,
    /// Paths that could not be observed this time (unreadable, still being
    /// written): the engine must leave them alone, not treat them as gone.
    pub held: Vec<RelPath>,
    /// Things a person should know about (skipped symlinks, bad names).
    pub problems: Vec<Problem>,
    /// Files whose content had to be read to hash them.
    pub hashed_files: u64,
}

/// A per-path note from a listing or an action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub path: Option<RelPath>,
    pub message: String,
}

/// What the root of a replica looks like before a sync touches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RootState {
    /// The root exists and carries our marker.
    Ready,
    /// The root exists but has no marker (a fresh pair, or an unmounted
    /// disk whose mount point is an empty folder).
    Unmarked,
    /// The root does not exist.
    Missing,
}

/// Why a replica operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    /// The target is not what the plan saw: re-plan, never force.
    #[error("{path} changed since it was scanned; it will be re-planned")]
    Changed { path: String },
    /// The bytes read did not hash to the version the plan expected.
    #[error("{path} changed while it was being copied; it will be copied again")]
    SourceChanged { path: String },
    /// Another agent holds the remote's lease.
    #[error("the remote is busy: {0}")]
    Busy(String),
    /// The remote cannot be reached at all (refused, reset, timed out, a
    /// broken transport): nothing about any path is known, so the whole
    /// run stops and the pair retries later instead of failing each path.
    #[error("{remote} cannot be reached: {reason}")]
    Offline { remote: String, reason: String },
    #[error("cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

impl ReplicaError {
    pub fn io(op: &'static str, path: impl std::fmt::Display, source: std::io::Error) -> Self {
        ReplicaError::Io {
            op,
            path: path.to_string(),
            source,
        }
    }

    /// True for "someone else changed it": the path is re-planned at once
    /// instead of being backed off as a failure.
    pub fn is_change(&self) -> bool {
        matches!(
            self,
            ReplicaError::Changed { .. } | ReplicaError::SourceChanged { .. }
        )
    }

    /// True when the remote as a whole is unreachable, not one path: an
    /// explicit [`ReplicaError::Offline`], or an I/O error whose kind says
    /// the connection itself failed (a backend's transfer stream breaking
    /// mid-file surfaces that way).
    pub fn is_offline(&self) -> bool {
        match self {
            ReplicaError::Offline { .. } => true,
            ReplicaError::Io { source, .. } => is_connection_error(source),
            _ => false,
        }
    }
}

/// Whether an I/O error is about the connection rather than the file.
pub fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused
            | ConnectionReset
            | ConnectionAborted
            | NotConnected
            | BrokenPipe
            | TimedOut
    )
}

/// A file written under a temporary name beside its target, waiting to be
/// committed. `temp` is the backend's handle for it.
#[derive(Debug)]
pub struct StagedWrite {
    pub path: RelPath,
    pub temp: PathBuf,
    pub hash: ContentHash,
    pub size: u64,
}

/// An advisory lock among prism agents writing to one remote. Dropping it
/// releases the lock.
pub trait Lease: Send {
    /// Extends the lease; call before it would expire.
    fn renew(&mut self) -> Result<(), ReplicaError>;
}

/// One end of a pair.
pub trait Replica: Send + Sync {
    /// A description for status and errors; never contains a secret.
    fn describe(&self) -> String;

    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }

    /// Whether the root exists and carries our marker.
    fn root_state(&self) -> Result<RootState, ReplicaError>;

    /// Creates the root (if needed) and its marker.
    fn mark_root(&self) -> Result<(), ReplicaError>;

    /// Lists `scope`, honouring `ignore`. `cache` is the base: a file whose
    /// identity and version match its base entry reuses the base's hash
    /// instead of being read.
    fn list(
        &self,
        scope: &Scope,
        cache: &BaseTree,
        ignore: &IgnoreRules,
    ) -> Result<Listing, ReplicaError>;

    /// Streams a file's content.
    fn open(&self, path: &RelPath) -> Result<Box<dyn Read + Send + '_>, ReplicaError>;

    /// Writes `content` to `path` atomically. The current entry at `path`
    /// must match `expect` (then it goes to the trash); the bytes written
    /// must hash to `hash`, else nothing is replaced. `mtime_ns` is kept
    /// where the backend can set it. Returns what is there now.
    fn write(
        &self,
        path: &RelPath,
        content: &mut dyn Read,
        hash: &ContentHash,
        mtime_ns: i64,
        expect: &Expect,
    ) -> Result<SideEntry, ReplicaError> {
        let staged = self.stage(path, content, hash, mtime_ns)?;
        let committed = self
            .sync_staged(&[&staged])
            .and_then(|()| self.commit_staged(&staged, expect));
        if committed.is_err() {
            self.discard(staged);
        }
        committed
    }

    /// The first half of a write: streams `content` to a temporary name
    /// beside `path` (never visible under the real name) and checks that
    /// it hashes to `hash`. A mismatch is [`ReplicaError::SourceChanged`].
    fn stage(
        &self,
        path: &RelPath,
        content: &mut dyn Read,
        hash: &ContentHash,
        mtime_ns: i64,
    ) -> Result<StagedWrite, ReplicaError>;

    /// Makes staged files durable, as cheaply as the backend can for many
    /// at once. Called before any of them is committed.
    fn sync_staged(&self, _staged: &[&StagedWrite]) -> Result<(), ReplicaError> {
        Ok(())
    }

    /// The second half of a write: checks that `path` still matches
    /// `expect`, moves the current version to the trash and renames the
    /// staged file in without replacing anything.
    fn commit_staged(
        &self,
        staged: &StagedWrite,
        expect: &Expect,
    ) -> Result<SideEntry, ReplicaError>;

    /// Removes a staged file that will not be committed.
    fn discard(&self, staged: StagedWrite);

    /// Creates a folder (its parent exists). An existing folder is fine.
    fn mkdir(&self, path: &RelPath) -> Result<SideEntry, ReplicaError>;

    /// Renames `from` (which must match `expect`) to `to` (which must not
    /// exist).
    fn rename(&self, from: &RelPath, to: &RelPath, expect: &Expect) -> Result<(), ReplicaError>;

    /// Moves `path` (which must match `expect`) to the trash. A folder goes
    /// with everything still inside it.
    fn remove(&self, path: &RelPath, expect: &Expect) -> Result<(), ReplicaError>;

    /// Makes every change done so far durable (flushes the folders whose
    /// entries changed). The engine calls it before recording a batch of
    /// finished actions in the journal, so the journal is never ahead of
    /// the replicas.
    fn flush(&self) -> Result<(), ReplicaError> {
        Ok(())
    }

    /// Removes trashed versions older than `older_than`; returns how many
    /// batches went.
    fn purge_trash(&self, _older_than: Duration) -> Result<usize, ReplicaError> {
        Ok(0)
    }

    /// Takes the advisory lease among agents, if the backend has one.
    fn lease(&self, _device: &str, _ttl: Duration) -> Result<Option<Box<dyn Lease>>, ReplicaError> {
        Ok(None)
    }
}

/// Opens the backend a pair's remote URL names, with the pair's login
/// settings (`ssh` for SFTP, `webdav` for WebDAV); `config_dir` is where
/// credentials files are looked for, and `parallel_transfers` how many
/// transfers the engine runs at once (an SFTP remote opens as many SSH
/// sessions; a WebDAV remote's listing sends as many PROPFINDs at once). Nothing is connected yet: a remote that is away is an error
/// of the first sync, not of opening.
pub fn open_remote(
    pair: &PairConfig,
    config_dir: Option<&Path>,
    parallel_transfers: usize,
) -> Result<Box<dyn Replica>, ReplicaError> {
    let ssh = &pair.ssh;
    match &pair.remote {
        RemoteUrl::File(root) => Ok(Box::new(LocalFolder::remote(root.clone()))),
        RemoteUrl::Sftp {
            user,
            host,
            port,
            path,
        } => Ok(Box::new(SftpReplica::new(SftpTarget {
            user: user.clone(),
            host: host.clone(),
            port: *port,
            path: path.clone(),
            known_hosts: ssh.known_hosts.clone(),
            identity_file: ssh.identity_file.clone(),
            config_dir: config_dir.map(Path::to_path_buf),
            sessions: parallel_transfers,
            compression: ssh.compression,
        }))),
        RemoteUrl::Webdav {
            tls,
            host,
            port,
            path,
        } => Ok(Box::new(WebdavReplica::new(WebdavTarget {
            tls: *tls,
            host: host.clone(),
            port: *port,
            path: path.clone(),
            username: pair.webdav.username.clone(),
            ca_file: pair.webdav.ca_file.clone(),
            allow_insecure_http_auth: pair.webdav.allow_insecure_http_auth,
            config_dir: config_dir.map(Path::to_path_buf),
            parallel_requests: parallel_transfers,
        })?)),
    }
}
