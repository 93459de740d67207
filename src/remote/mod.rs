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

pub mod backend;
pub mod change_log;
mod claims;
pub mod crypt;
pub mod git;
mod job_queue;
pub mod journal_record;
mod kit;
pub mod layout;
pub mod lease;
pub mod local;
pub mod rclone;
pub mod registry;
pub mod s3;
pub mod sftp;
pub mod socket_dir;
pub mod webdav;

use std::cell::{Cell, RefCell};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::PairConfig;
use crate::fsops::Expect;
use crate::model::{
    BaseTree, ContentHash, Entry, FileMeta, Mode, RelPath, Scope, SideEntry, SideTree,
};
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
    /// Entries carry permission bits, and writes, folder creations and
    /// [`Replica::set_mode`] set them. A replica without them lists every
    /// mode as `None` and ignores the modes it is given.
    pub modes: bool,
    /// Reading and writing here costs processor time, not waiting for a
    /// network: between two such replicas more transfers at once than the
    /// machine has cores only contend (for the cores, and for the folder
    /// both write into).
    pub local_disk: bool,
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

impl Listing {
    /// Adds the parts a parallel walk's workers collected, in a stable
    /// order (held paths and problems sorted), so the result does not
    /// depend on which worker finished first.
    pub fn merge(mut self, parts: impl IntoIterator<Item = Listing>) -> Listing {
        for part in parts {
            self.tree.extend(part.tree);
            self.held.extend(part.held);
            self.problems.extend(part.problems);
            self.hashed_files += part.hashed_files;
        }
        self.held.sort();
        self.held.dedup();
        self.problems
            .sort_by(|a, b| (&a.path, &a.message).cmp(&(&b.path, &b.message)));
        self
    }
}

/// A per-path note from a listing or an action. `message` is a sentence
/// about `path` that does not repeat it (status shows the path before it);
/// with no `path`, the message itself names what it is about.
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

/// What a listing that broke off part-way because of `cause` is, for
/// every backend: never a listing (what it saw is partial and must not
/// read as deletions); the remote offline when the cause says the
/// connection failed ([`ReplicaError::is_offline`]), so the run stops and
/// the pair retries as a whole; else a failure of this listing, retried
/// with the next sync.
pub(crate) fn interrupted_listing(remote: String, cause: ReplicaError) -> ReplicaError {
    match cause {
        ReplicaError::Offline { .. } => cause,
        cause if cause.is_offline() => ReplicaError::Offline {
            remote,
            reason: format!("the connection broke during the listing: {cause}"),
        },
        cause => ReplicaError::Other(format!(
            "the listing of {remote} was interrupted ({cause}); it will be retried"
        )),
    }
}

/// For the careful steps of every backend: a path checked a moment ago
/// that is gone when it is moved to the trash was removed or replaced by
/// someone else in between, which is a change to re-plan, not a failure of
/// the path.
pub(crate) fn gone_meanwhile(path: &RelPath) -> impl Fn(ReplicaError) -> ReplicaError + '_ {
    move |error| match &error {
        ReplicaError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            ReplicaError::Changed {
                path: path.to_string(),
            }
        }
        _ => error,
    }
}

/// Whether two version tokens (ETags) name the same version: servers
/// differ in whether a listing, a HEAD and a PUT's answer quote them (or
/// mark them weak). The one comparison every replica's re-check and every
/// layer above a replica uses.
pub fn same_etag(a: &str, b: &str) -> bool {
    fn bare(e: &str) -> &str {
        e.trim().trim_start_matches("W/").trim_matches('"')
    }
    bare(a) == bare(b)
}

#[cfg(test)]
#[test]
fn etags_compare_without_their_quotes() {
    assert!(same_etag("\"abc\"", "abc"));
    assert!(same_etag("W/\"abc\"", "\"abc\""));
    assert!(!same_etag("\"abc\"", "\"abd\""));
}

/// An error and its causes, as one line: an HTTP client's own message
/// stops at the outermost error, which rarely says what went wrong.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
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
    /// The staged file's stat, where the replica read it from the open
    /// file while writing (a local folder): the commit records it as the
    /// new version without looking again.
    pub written: Option<crate::fsops::Stat>,
    /// For a continued partial download: the open file, holding an
    /// exclusive lock on it until the write is committed or discarded, so
    /// no other agent continues (or truncates) the same partial meanwhile.
    pub(crate) _lock: Option<std::fs::File>,
}

/// An advisory lock among prism agents writing to one remote. Dropping it
/// releases the lock.
pub trait Lease: Send {
    /// Extends the lease; call before it would expire.
    fn renew(&mut self) -> Result<(), ReplicaError>;
}

/// One end of a pair.
/// A version of a file a replica keeps by itself (see
/// [`Replica::kept_versions`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeptVersion {
    /// What [`Replica::open_kept`] takes: for git, the commit's id.
    pub version: String,
    pub hash: ContentHash,
    pub size: u64,
    /// When it was made (for git, the commit time), in nanoseconds.
    pub time_ns: i64,
    /// Who made it (for git, the commit's author).
    pub author: String,
}

pub trait Replica: Send + Sync {
    /// A description for status and errors; never contains a secret.
    fn describe(&self) -> String;

    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }

    /// Whether writes cannot be made conditional on the version they
    /// replace: the backend looks again right before each replace, move
    /// and removal, and a change another writer makes in that moment can
    /// go to the trash (or be replaced) instead of staying in place
    /// (rclone remotes). Status shows it for every pair, so it is known
    /// without a look at the remote (unlike [`Replica::capabilities`],
    /// which may probe it).
    fn rechecked_writes(&self) -> bool {
        false
    }

    /// How the agent reaches the remote where a process of its own stands
    /// between (an rclone remote: rclone's version and where its rcd
    /// listens), for status; `None` for the rest, and while none runs.
    /// Starts and asks nothing.
    fn transport(&self) -> Option<String> {
        None
    }

    /// The folder on this machine that holds this replica's files under
    /// the names the engine uses, if there is one (a `file://` remote):
    /// the agent watches it for changes rather than listing it at every
    /// poll. `None`, the default, for a replica reached over a network or
    /// one whose stored names are not the engine's (an encrypted remote).
    /// Answered without a look at the folder.
    fn watch_root(&self) -> Option<&Path> {
        None
    }

    /// A cheap token for the whole replica's state, asked without a
    /// listing: it changes whenever anything in the replica may have
    /// changed (git: the branch tip and the records ref of one
    /// `ls-remote`). A poll that finds the token its last quiet run saw
    /// need not list at all. `None`, the default, for a backend with no
    /// such token: every poll lists.
    fn change_marker(&self) -> Result<Option<String>, ReplicaError> {
        Ok(None)
    }

    /// The [`Replica::change_marker`] of the state the latest listing
    /// showed, without a look at the replica; `None` when not known.
    fn listed_marker(&self) -> Option<String> {
        None
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

    /// What `path` holds now, as the expectation a following `write`,
    /// `rename` or `remove` of it is checked against: `Absent`, `Dir`, or
    /// the file's size, mtime and mode. A link or a special file is
    /// described as a file, which those steps then refuse as changed: no
    /// step acts on it. For a caller that has no listing of the path (a
    /// user's resolution of a conflict); a sync plans from its listing.
    fn stat(&self, path: &RelPath) -> Result<Expect, ReplicaError>;

    /// Streams a file's content.
    fn open(&self, path: &RelPath) -> Result<Box<dyn Read + Send + '_>, ReplicaError>;

    /// Streams the content of the version `expected` of a file from byte
    /// `offset` on, to continue a transfer that broke off. Returns the
    /// reader and the offset it really starts at: `offset`, or 0 where the
    /// backend could only start from the beginning (a server that ignores
    /// ranges). A backend that can tell the file is no longer `expected`
    /// answers [`ReplicaError::SourceChanged`] instead of continuing with
    /// another version's bytes; the caller's hash check over the whole file
    /// catches what it cannot tell.
    ///
    /// The default opens the file and skips `offset` bytes: right for a
    /// local file, where reading is cheap; network backends seek or ask
    /// for a range instead.
    fn open_at(
        &self,
        path: &RelPath,
        offset: u64,
        expected: &FileMeta,
    ) -> Result<Opened<'_>, ReplicaError> {
        let _ = expected;
        let mut reader = self.open(path)?;
        let skipped = std::io::copy(&mut (&mut reader).take(offset), &mut std::io::sink())
            .map_err(|e| ReplicaError::io("read", path, e))?;
        if skipped < offset {
            // Shorter than what already arrived: not the version expected.
            return Err(ReplicaError::SourceChanged {
                path: path.to_string(),
            });
        }
        Ok((reader, offset))
    }

    /// [`Replica::open_at`] for the version whose token a listing of this
    /// replica gave (`SideEntry::version`), where the caller has it: a
    /// backend that keeps version tokens judges "still that version" by
    /// the token instead of by `expected`'s hash, which need not be the
    /// hash it stores (an encrypting layer asks with its plaintext's). The
    /// default ignores the token.
    fn open_version_at(
        &self,
        path: &RelPath,
        offset: u64,
        expected: &FileMeta,
        version: Option<&str>,
    ) -> Result<Opened<'_>, ReplicaError> {
        let _ = version;
        self.open_at(path, offset, expected)
    }

    /// Writes `content` to `path` atomically. The current entry at `path`
    /// must match `expect` (then it goes to the trash); the bytes written
    /// must hash to `hash`, else nothing is replaced. `mtime_ns` and `mode`
    /// are kept where the backend can hold them. Returns what is there now.
    fn write(
        &self,
        path: &RelPath,
        content: &mut dyn Read,
        hash: &ContentHash,
        mtime_ns: i64,
        mode: Option<Mode>,
        expect: &Expect,
    ) -> Result<SideEntry, ReplicaError> {
        let staged = self.stage(path, content, hash, mtime_ns, mode)?;
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
    ///
    /// With a `mode` (and [`Capabilities::modes`]), the temporary file is
    /// created with that mode or narrower and has exactly that mode before
    /// its first byte is written: never wider, not for a moment. Without
    /// one it gets the backend's default for a new file.
    fn stage(
        &self,
        path: &RelPath,
        content: &mut dyn Read,
        hash: &ContentHash,
        mtime_ns: i64,
        mode: Option<Mode>,
    ) -> Result<StagedWrite, ReplicaError>;

    /// Stages a copy of `source` as [`Replica::stage`] does. A backend that
    /// keeps partial transfers continues the one an earlier, broken attempt
    /// at the same version left, reading `source` from where it stopped;
    /// the default stages from the first byte.
    fn stage_from(
        &self,
        path: &RelPath,
        source: &Source<'_>,
        mtime_ns: i64,
        mode: Option<Mode>,
    ) -> Result<StagedWrite, ReplicaError> {
        let (mut reader, _) = source.reader(0)?;
        self.stage(path, &mut reader, &source.meta.hash, mtime_ns, mode)
    }

    /// Makes staged files durable, as cheaply as the backend can for many
    /// at once. Called before any of them is committed, on the run's
    /// flushing thread (see `flush`).
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

    /// [`Replica::commit_staged`], also telling where the replaced version
    /// went: its name in this replica's trash (see [`Replica::open_trashed`]),
    /// so the journal can list it without looking through the trash. `None`
    /// when nothing was replaced, or the backend keeps no trash it can name
    /// (the default).
    fn commit_staged_naming_trash(
        &self,
        staged: &StagedWrite,
        expect: &Expect,
    ) -> Result<(SideEntry, Option<RelPath>), ReplicaError> {
        self.commit_staged(staged, expect)
            .map(|entry| (entry, None))
    }

    /// [`Replica::write`], also telling where the replaced version went
    /// (see [`Replica::commit_staged_naming_trash`]).
    fn write_naming_trash(
        &self,
        path: &RelPath,
        content: &mut dyn Read,
        hash: &ContentHash,
        mtime_ns: i64,
        mode: Option<Mode>,
        expect: &Expect,
    ) -> Result<(SideEntry, Option<RelPath>), ReplicaError> {
        let staged = self.stage(path, content, hash, mtime_ns, mode)?;
        let committed = self
            .sync_staged(&[&staged])
            .and_then(|()| self.commit_staged_naming_trash(&staged, expect));
        if committed.is_err() {
            self.discard(staged);
        }
        committed
    }

    /// Removes a staged file that will not be committed.
    fn discard(&self, staged: StagedWrite);

    /// Creates a folder (its parent exists) with `mode` where the backend
    /// holds modes (created with it or narrower, then given exactly it), or
    /// the backend's default. An existing folder is fine, and keeps its
    /// mode.
    fn mkdir(&self, path: &RelPath, mode: Option<Mode>) -> Result<SideEntry, ReplicaError>;

    /// Changes only the permission bits of `path`, which must still be
    /// `expected` (kind, size and mtime, and its mode), to `mode`; set-ID
    /// and sticky bits the entry has are kept. Reconcile plans this only
    /// where the listing showed a mode, so a backend without
    /// [`Capabilities::modes`] is never asked.
    fn set_mode(&self, path: &RelPath, expected: &Entry, mode: Mode) -> Result<(), ReplicaError> {
        let _ = (expected, mode);
        Err(ReplicaError::Other(format!(
            "{path}: {} holds no permission bits",
            self.describe()
        )))
    }

    /// Renames `from` (which must match `expect`) to `to` (which must not
    /// exist).
    fn rename(&self, from: &RelPath, to: &RelPath, expect: &Expect) -> Result<(), ReplicaError>;

    /// Moves `path` (which must match `expect`) to the trash. A folder
    /// must be empty: a plan removes what is in it first, each checked, so
    /// a folder that still holds something holds what the plan did not see
    /// and is refused as [`ReplicaError::Changed`].
    fn remove(&self, path: &RelPath, expect: &Expect) -> Result<(), ReplicaError>;

    /// [`Replica::remove`], also telling where the removed version went:
    /// its name in this replica's trash, `None` for a folder (a plan removes
    /// one only once it is empty) or where the backend cannot name it (the
    /// default).
    fn remove_naming_trash(
        &self,
        path: &RelPath,
        expect: &Expect,
    ) -> Result<Option<RelPath>, ReplicaError> {
        self.remove(path, expect).map(|()| None)
    }

    /// Streams a version this replica put in its trash, by the name a
    /// `*_naming_trash` call returned. A version that is no longer there
    /// (its trash batch was purged) is an [`ReplicaError::Io`] of kind
    /// `NotFound`. The caller checks the bytes against the hash it
    /// recorded: a trash is not trusted to still hold the same bytes.
    fn open_trashed(&self, name: &RelPath) -> Result<Box<dyn Read + Send + '_>, ReplicaError> {
        Err(ReplicaError::Other(format!(
            "{}: {name}: this side keeps no trash that can be read back",
            self.describe()
        )))
    }

    /// The versions of `path` this side keeps by itself, newest first, at
    /// most `limit` of them: a git remote's history (each commit that
    /// left a version of the file there). Default: none.
    fn kept_versions(
        &self,
        _path: &RelPath,
        _limit: usize,
    ) -> Result<Vec<KeptVersion>, ReplicaError> {
        Ok(Vec::new())
    }

    /// Reads the version `version` of `path` that [`Self::kept_versions`]
    /// listed. A version this side does not keep is an
    /// [`ReplicaError::Io`] of kind `NotFound`.
    fn open_kept(
        &self,
        path: &RelPath,
        version: &str,
    ) -> Result<Box<dyn Read + Send + '_>, ReplicaError> {
        Err(ReplicaError::io(
            "read",
            format!("{path} at {version}"),
            std::io::Error::from(std::io::ErrorKind::NotFound),
        ))
    }

    /// Makes every change done so far durable (flushes the folders whose
    /// entries changed). The engine calls it before recording a batch of
    /// finished actions in the journal, so the journal is never ahead of
    /// the replicas. It runs on the run's recording thread, at the same
    /// time as `sync_staged` (on the flushing thread) and the commits of
    /// later batches: when it returns, every change done before it was
    /// called must be durable, whichever thread flushed it.
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

    /// Reads the record `name`, a small text file the agents keep for
    /// themselves in the replica's metadata folder (`.prism-sync/NAME`,
    /// beside the lease; see [`journal_record`]); `None` when there is
    /// none. A replica that keeps no records (the local side of a pair)
    /// has none.
    fn read_record(&self, _name: &str) -> Result<Option<String>, ReplicaError> {
        Ok(None)
    }

    /// Creates or replaces the record `name` with `content`, whole: a
    /// reader finds the old content or the new one, never a mix (a backend
    /// that cannot replace in one step may, after a crash half-way, have
    /// none). Records are the agents' bookkeeping, not synced files: the
    /// old content does not go to the trash. A replica that keeps no
    /// records ignores this.
    fn write_record(&self, _name: &str, _content: &str) -> Result<(), ReplicaError> {
        Ok(())
    }

    /// Forgets the login of every open connection, because a new password
    /// was just given: the next request logs in again and looks the
    /// password up afresh, so a wrong one fails that request instead of
    /// hiding behind a connection the old one opened. Connections in use
    /// finish what they do. Backends without a login do nothing.
    fn forget_login(&self) {}

    /// The names of the records in the folder `folder` of the metadata
    /// folder (`.prism-sync/FOLDER/`), in no particular order; none when
    /// the folder does not exist. Temporary files a record write left
    /// behind are not records and are not listed.
    fn list_records(&self, _folder: &str) -> Result<Vec<String>, ReplicaError> {
        Ok(Vec::new())
    }

    /// Removes the record `name`; a record that is not there is fine.
    /// Like records themselves, a removed one does not go to the trash.
    fn remove_record(&self, _name: &str) -> Result<(), ReplicaError> {
        Ok(())
    }
}

/// Whether a name found in a records folder is a record, not a temporary
/// file a record write made (or left behind after a crash).
pub fn is_record_name(name: &str) -> bool {
    !name.starts_with('.') && !name.is_empty()
}

/// A reader from [`Replica::open_at`] and the offset it starts at.
pub type Opened<'a> = (Box<dyn Read + Send + 'a>, u64);

/// How many times a read that broke on a connection error is continued
/// (by opening the source again at the position reached) before the
/// transfer gives up; and the pause before each try, so a server that is
/// restarting or a link that is re-establishing has a moment.
const RECONNECTS: [Duration; 2] = [Duration::from_secs(1), Duration::from_secs(3)];

/// One version of a file on a replica, as a copy reads it: it can be
/// (re)opened at any offset, so a destination can continue a partial
/// transfer, and a read that breaks on a connection error continues where
/// it stopped instead of starting over. Backend-neutral: it only uses
/// [`Replica::open_at`].
pub struct Source<'a> {
    replica: &'a dyn Replica,
    path: &'a RelPath,
    /// The version the copy is for (as listed): its hash gates the commit.
    pub meta: FileMeta,
    /// That version's token, where the listing gave one: a reader that
    /// continues at an offset asks for this version by it (see
    /// [`Replica::open_version_at`]).
    version: Option<String>,
    /// Told how many bytes of the file count as done: where a reader
    /// starts (a reader that starts over sets it back), then its position
    /// after each read.
    progress: &'a dyn Fn(u64),
    /// Bytes really read from the replica.
    fetched: Cell<u64>,
    /// Why the last reopen after a connection error failed: more precise
    /// than the I/O error the writer sees (offline, or another version).
    failure: RefCell<Option<ReplicaError>>,
    pauses: &'a [Duration],
    /// Whether the run wants to stop (the agent stopping, the pair paused,
    /// the lease lost): a destination whose transfer runs somewhere it can
    /// stop (an rclone job) asks while it waits.
    cancelled: Option<&'a dyn Fn() -> bool>,
}

impl<'a> Source<'a> {
    pub fn new(
        replica: &'a dyn Replica,
        path: &'a RelPath,
        meta: FileMeta,
        progress: &'a dyn Fn(u64),
    ) -> Source<'a> {
        Source {
            replica,
            path,
            meta,
            version: None,
            progress,
            fetched: Cell::new(0),
            failure: RefCell::new(None),
            pauses: &RECONNECTS,
            cancelled: None,
        }
    }

    /// The same source, telling a destination that asks whether the run
    /// wants to stop.
    pub fn with_cancel(mut self, cancelled: &'a dyn Fn() -> bool) -> Source<'a> {
        self.cancelled = Some(cancelled);
        self
    }

    /// Whether the run wants to stop (see [`Source::with_cancel`]).
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.is_some_and(|cancelled| cancelled())
    }

    /// Reports `done` bytes of the transfer as done: for a destination
    /// that read the source through [`Source::unreported_reader`] and
    /// learns the transfer's own progress elsewhere (an rclone job's
    /// stats).
    pub fn report(&self, done: u64) {
        (self.progress)(done);
    }

    /// The same source naming its version by the listed token.
    pub fn with_version(mut self, version: Option<String>) -> Source<'a> {
        self.version = version;
        self
    }

    /// The same source with other pauses between reconnects (tests).
    pub fn with_reconnect_pauses(mut self, pauses: &'a [Duration]) -> Source<'a> {
        self.pauses = pauses;
        self
    }

    pub fn path(&self) -> &RelPath {
        self.path
    }

    /// How many bytes were read from the replica so far, over all readers.
    pub fn fetched(&self) -> u64 {
        self.fetched.get()
    }

    /// The error that ended the last reader, when it was a failed reopen;
    /// a writer whose read failed reports this one instead of its own.
    pub fn take_failure(&self) -> Option<ReplicaError> {
        self.failure.borrow_mut().take()
    }

    /// A reader from `offset` on (see [`Replica::open_at`]), and where it
    /// really starts. An offset at the end needs no request: what is
    /// there is checked by its hash.
    pub fn reader(&self, offset: u64) -> Result<(SourceReader<'_, 'a>, u64), ReplicaError> {
        self.reader_reporting(offset, true)
    }

    /// A reader from the first byte that does not report progress: for a
    /// destination that reads its source once before the transfer itself
    /// (an encrypting layer learning the ciphertext's hash), so the
    /// progress shown is the transfer's alone.
    pub fn unreported_reader(&self) -> Result<SourceReader<'_, 'a>, ReplicaError> {
        Ok(self.reader_reporting(0, false)?.0)
    }

    fn reader_reporting(
        &self,
        offset: u64,
        report: bool,
    ) -> Result<(SourceReader<'_, 'a>, u64), ReplicaError> {
        let (inner, start) = if offset >= self.meta.size && offset > 0 {
            (
                Box::new(std::io::empty()) as Box<dyn Read + Send + 'a>,
                offset,
            )
        } else {
            self.replica
                .open_version_at(self.path, offset, &self.meta, self.version.as_deref())?
        };
        if report {
            (self.progress)(start);
        }
        let reader = SourceReader {
            source: self,
            inner: Some(inner),
            pos: start,
            reconnects: 0,
            report,
        };
        Ok((reader, start))
    }
}

/// A reader of a [`Source`] that continues at its position after a
/// connection error, a few times (see [`RECONNECTS`]).
pub struct SourceReader<'s, 'a> {
    source: &'s Source<'a>,
    inner: Option<Box<dyn Read + Send + 'a>>,
    pos: u64,
    reconnects: usize,
    /// Whether reads are reported to the source's progress.
    report: bool,
}

impl SourceReader<'_, '_> {
    /// Opens the source again at `self.pos`, trying while the pauses
    /// last and the replica stays unreachable.
    fn reopen(&mut self, broke: &std::io::Error) -> Result<(), ReplicaError> {
        let source = self.source;
        // Dropped first: a backend may give the broken connection back to
        // its pool only now, and must not be asked for a second one while
        // a caller still holds the first.
        self.inner = None;
        loop {
            std::thread::sleep(source.pauses[self.reconnects]);
            self.reconnects += 1;
            tracing::info!(
                path = %source.path,
                offset = self.pos,
                error = %broke,
                "the connection broke; reconnecting to continue the transfer"
            );
            match source.replica.open_version_at(
                source.path,
                self.pos,
                &source.meta,
                source.version.as_deref(),
            ) {
                Ok((mut inner, start)) => {
                    // A server that could only start over: skip what
                    // already went by.
                    let skip = self.pos - start.min(self.pos);
                    let skipped = std::io::copy(&mut (&mut inner).take(skip), &mut std::io::sink())
                        .map_err(|e| ReplicaError::io("read", source.path, e))?;
                    if skipped < skip {
                        return Err(ReplicaError::SourceChanged {
                            path: source.path.to_string(),
                        });
                    }
                    self.inner = Some(inner);
                    return Ok(());
                }
                Err(e) if e.is_offline() && self.reconnects < source.pauses.len() => {}
                Err(e) => return Err(e),
            }
        }
    }
}

impl Read for SourceReader<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let result = match self.inner.as_mut() {
                Some(inner) => inner.read(buf),
                None => Err(std::io::Error::new(
                    std::io::ErrorKind::NotConnected,
                    "the source could not be opened again",
                )),
            };
            match result {
                Ok(n) => {
                    self.pos += n as u64;
                    let source = self.source;
                    source.fetched.set(source.fetched.get() + n as u64);
                    if self.report {
                        (source.progress)(self.pos);
                    }
                    return Ok(n);
                }
                Err(e)
                    if is_connection_error(&e)
                        && self.inner.is_some()
                        && self.reconnects < self.source.pauses.len() =>
                {
                    if let Err(failed) = self.reopen(&e) {
                        let error = std::io::Error::new(e.kind(), failed.to_string());
                        *self.source.failure.borrow_mut() = Some(failed);
                        return Err(error);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Where an agent keeps what a remote needs besides the pair's settings.
#[derive(Clone, Copy, Debug)]
pub struct RemoteHost<'a> {
    /// Where credentials files are looked for.
    pub config_dir: Option<&'a Path>,
    /// The agent's state dir (a git remote's mirror lives there).
    pub state_dir: &'a Path,
    /// The device name (a git remote's commits carry it).
    pub device: &'a str,
    /// How many transfers the engine runs at once (an SFTP remote opens
    /// as many SSH sessions; a WebDAV remote's listing sends as many
    /// PROPFINDs at once).
    pub parallel_transfers: usize,
}

/// Opens the backend a pair's remote URL names, with the settings its
/// backend took from the pair's keys (see [`backend::Backend::open`]).
/// Nothing is connected yet: a remote that is away is an error of the
/// first sync, not of opening. An encrypted pair's remote is wrapped in
/// [`crypt::CryptReplica`], whatever its backend, which looks its
/// password up at the first sync too.
pub fn open_remote(
    pair: &PairConfig,
    host: RemoteHost<'_>,
) -> Result<Box<dyn Replica>, ReplicaError> {
    let replica = pair.remote.open(pair, host)?;
    Ok(crypt::wrap(replica, pair, host.config_dir))
}
