//! A file's versions the pair still holds, and bringing one of them back.
//!
//! The versions are the one both sides last agreed on (the base) and those
//! the syncs moved to a trash, on either side, as the journal recorded them
//! (`journal/trashed.rs`): listing them reads no trash folder. A restore
//! reads the chosen version from the trash that holds it, checks it
//! against its recorded hash, and writes it to the local folder with the
//! careful write every sync uses, so the version there goes to the local
//! trash and nothing is overwritten; the next sync carries the restored
//! file to the remote and every other device as a new change.
//!
//! A remote that keeps old versions by itself (a git remote's history)
//! lists them too ([`Replica::kept_versions`]), named by its own ids (a
//! commit id); restoring one reads it from there.

use std::io;
use std::time::{Duration, SystemTime};

use crate::fsops::Expect;
use crate::journal::{JournalError, TrashedVersion, UNKNOWN_DEVICE};
use crate::locks::LockExt;
use crate::model::{ContentHash, RelPath, Side};
use crate::remote::ReplicaError;
use crate::timefmt;
use crate::tracker::hash::HashingReader;

use super::PairEngine;

/// The name `history` gives the version both sides agree on.
pub const CURRENT: &str = "current";

/// Where a version is held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// The file itself, as both sides last agreed on it.
    Current,
    /// A side's trash.
    Trash(Side),
    /// What the remote keeps by itself: a git remote's history.
    RemoteHistory,
}

/// At most this many versions are listed from what the remote keeps.
pub const KEPT_LIMIT: usize = 200;

impl Place {
    /// As the protocol names it: `current`, `local_trash`, `remote_trash`.
    pub fn as_str(self) -> &'static str {
        match self {
            Place::Current => "current",
            Place::Trash(Side::Local) => "local_trash",
            Place::Trash(Side::Remote) => "remote_trash",
            Place::RemoteHistory => "remote_history",
        }
    }
}

/// One version of a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    /// What `restore --version` takes: [`CURRENT`], the trashed
    /// version's row in the journal, or the remote's id of a version it
    /// keeps (a commit id).
    pub version: String,
    pub hash: ContentHash,
    pub size: u64,
    /// The version's modification time (RFC 3339).
    pub modified_at: String,
    /// The device that made it, as far as the journal knows; `remote` for
    /// a version of the remote no device's log names.
    pub origin_device: String,
    pub place: Place,
    /// When it went to the trash (RFC 3339); `None` for the current one.
    pub trashed_at: Option<String>,
    /// The device whose sync moved it there (this one, or another device
    /// whose trash log on the remote told of it); `None` for the current
    /// one and what the remote keeps by itself.
    pub trashed_by: Option<String>,
}

/// Why a restore was refused; the local file is untouched in every case.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// No such version of that path (a typo, another path's version).
    #[error("{0}")]
    NoSuchVersion(String),
    /// The version was recorded but its trash no longer holds it.
    #[error("{0}")]
    Gone(String),
    /// The request cannot be carried out as it stands.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Replica(#[from] ReplicaError),
    #[error("journal: {0}")]
    Journal(#[from] JournalError),
}

/// Where a version to restore is read from.
enum Source {
    /// A side's trash, under that name (the journal's row `id`).
    Trash { id: i64, side: Side, name: RelPath },
    /// What the remote keeps by itself, under the version's id.
    Kept,
}

/// What a restore did.
#[derive(Debug)]
pub struct Restored {
    pub version: String,
    pub hash: ContentHash,
    pub size: u64,
    /// Where the file it replaced went (its name in the local trash);
    /// `None` when there was no file.
    pub replaced: Option<RelPath>,
    /// Paths to sync now so the restored version reaches the remote.
    pub paths: Vec<RelPath>,
    /// What went wrong after the file was restored (the journal could not
    /// record the version it replaced).
    pub warning: Option<String>,
}

impl PairEngine {
    /// The versions of `path` the pair still holds: the current one first
    /// (when both sides hold the file), then the trashed ones, newest
    /// first, then those the remote keeps by itself, newest first.
    pub fn history(&self, path: &RelPath) -> Result<Vec<Version>, JournalError> {
        let mut versions = self.recorded_versions(path)?;
        // Read from the remote's own store (for git, the mirror); what
        // cannot be read is left out with a warning, the rest is listed.
        match self.remote().kept_versions(path, KEPT_LIMIT) {
            Ok(kept) => versions.extend(kept.into_iter().map(|k| Version {
                version: k.version,
                hash: k.hash,
                size: k.size,
                modified_at: timefmt::rfc3339(timefmt::from_unix_ns(k.time_ns)),
                origin_device: k.author,
                place: Place::RemoteHistory,
                trashed_at: None,
                trashed_by: None,
            })),
            Err(e) => {
                tracing::warn!(pair = %self.name, path = %path, error = %e, "cannot list the versions the remote keeps");
            }
        }
        Ok(versions)
    }

    /// The current version and the trashed ones, as the journal has them.
    fn recorded_versions(&self, path: &RelPath) -> Result<Vec<Version>, JournalError> {
        let journal = self.journal.locked();
        let mut versions = Vec::new();
        let base = journal.load_base_within(self.pair, std::slice::from_ref(path))?;
        if let Some(meta) = base.get(path).and_then(|b| b.entry.file()) {
            let origin = journal.origin_of(self.pair, path, &meta.hash)?;
            versions.push(Version {
                version: CURRENT.to_owned(),
                hash: meta.hash,
                size: meta.size,
                modified_at: timefmt::rfc3339(timefmt::from_unix_ns(meta.mtime_ns)),
                origin_device: origin.map_or_else(|| UNKNOWN_DEVICE.to_owned(), |o| o.device),
                place: Place::Current,
                trashed_at: None,
                trashed_by: None,
            });
        }
        for row in journal.trashed_versions(self.pair, path)? {
            versions.push(Version {
                version: row.id.to_string(),
                hash: row.hash,
                size: row.size,
                modified_at: timefmt::rfc3339(timefmt::from_unix_ns(row.mtime_ns)),
                origin_device: row.origin_device,
                place: Place::Trash(row.side),
                trashed_at: Some(row.trashed_at),
                trashed_by: Some(row.trashed_by),
            });
        }
        Ok(versions)
    }

    /// Writes the version `version` of `path` (trashed, or kept by the
    /// remote) to the local folder;
    /// the file there goes to the local trash (and is recorded there, so
    /// it can be restored in turn). `by` is the token that asked (`None`:
    /// the local socket's owner), recorded with the restored version. The
    /// caller syncs the returned paths.
    pub fn restore(
        &self,
        path: &RelPath,
        version: &str,
        by: Option<&str>,
    ) -> Result<Restored, RestoreError> {
        let not_found = || {
            RestoreError::NoSuchVersion(format!(
                "{path} has no version {version:?} in pair {}; `prism-syncctl history` lists the \
                 versions it still holds",
                self.name
            ))
        };
        if version == CURRENT {
            return Err(RestoreError::Invalid(format!(
                "version {CURRENT} is the file as it is; choose a trashed version to restore"
            )));
        }
        // A number is a trashed version's row; anything else may be the
        // id of a version the remote keeps (a commit id).
        let (source, hash, size) = match version.parse::<i64>() {
            Ok(id) => {
                let row = self
                    .journal
                    .locked()
                    .trashed_version(id)?
                    .filter(|row| row.pair_id == self.pair && row.path == *path)
                    .ok_or_else(not_found)?;
                let source = Source::Trash {
                    id,
                    side: row.side,
                    name: row.trash_name,
                };
                (source, row.hash, row.size)
            }
            Err(_) => {
                let kept = self
                    .remote()
                    .kept_versions(path, KEPT_LIMIT)?
                    .into_iter()
                    .find(|k| k.version == version)
                    .ok_or_else(not_found)?;
                (Source::Kept, kept.hash, kept.size)
            }
        };
        let (held_in, why) = match &source {
            Source::Trash { side, .. } => (
                format!("the {side} trash"),
                " (trashed versions are purged after the retention)",
            ),
            Source::Kept => ("the remote's history".to_owned(), ""),
        };
        let gone = || {
            RestoreError::Gone(format!(
                "version {version} of {path} is no longer in {held_in}{why}; nothing was changed"
            ))
        };
        let current = self.local_file(path)?;
        if current
            .as_ref()
            .is_some_and(|(current, _)| *current == hash)
        {
            return Err(RestoreError::Invalid(format!(
                "{path} already holds version {version}; nothing was changed"
            )));
        }
        let opened = match &source {
            Source::Trash {
                side: Side::Local,
                name,
                ..
            } => self.local().open_trashed(name),
            Source::Trash {
                side: Side::Remote,
                name,
                ..
            } => self.remote().open_trashed(name),
            Source::Kept => self.remote().open_kept(path, version),
        };
        let mut reader = match opened {
            Ok(reader) => reader,
            Err(ReplicaError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                return Err(gone());
            }
            Err(e) => return Err(e.into()),
        };
        let expect = match &current {
            Some((_, expect)) => expect.clone(),
            None => Expect::Absent,
        };
        let mode = match &expect {
            Expect::File { mode, .. } => *mode,
            Expect::Absent | Expect::Dir => None,
        };
        let now = timefmt::to_unix_ns(self.settings.clock.now());
        let written = self
            .local()
            .write_naming_trash(path, &mut reader, &hash, now, mode, &expect);
        let (_, replaced) = match written {
            Ok(written) => written,
            // The bytes in the trash do not hash to the recorded version.
            Err(ReplicaError::SourceChanged { .. }) => {
                return Err(RestoreError::Gone(format!(
                    "the copy of version {version} of {path} in {held_in} no longer holds that \
                     version (its content changed); nothing was changed"
                )));
            }
            Err(ReplicaError::Changed { .. }) => {
                return Err(RestoreError::Invalid(format!(
                    "{path} changed while it was being restored; nothing was replaced, try again"
                )));
            }
            Err(e) => return Err(e.into()),
        };
        let replaced_version = match (&current, &replaced) {
            (Some((hash, Expect::File { size, mtime_ns, .. })), Some(trash_name)) => {
                Some(TrashedVersion {
                    path: path.clone(),
                    side: Side::Local,
                    trash_name: trash_name.clone(),
                    hash: *hash,
                    size: *size,
                    mtime_ns: *mtime_ns,
                    trashed_by: self.settings.device.clone(),
                })
            }
            _ => None,
        };
        // The file is restored from here on, whatever the journal says:
        // failing now would leave it unsynced and tell the user nothing
        // happened.
        // A version the remote keeps itself has no row to mark restored.
        let restored_row = match &source {
            Source::Trash { id, .. } => Some(*id),
            Source::Kept => None,
        };
        let recorded = self.journal.locked().record_restore(
            self.pair,
            restored_row,
            by,
            replaced_version.as_slice(),
        );
        let warning = recorded.err().map(|e| {
            tracing::warn!(path = %path, error = %e, "cannot record a restore in the journal");
            match &replaced {
                Some(trash_name) => format!(
                    "the version it replaced is in the local trash as {trash_name}, but the \
                     journal could not record it, so `history` does not list it: {e}"
                ),
                None => format!("the journal could not record who restored it: {e}"),
            }
        });
        Ok(Restored {
            version: version.to_owned(),
            hash,
            size,
            replaced,
            paths: vec![path.clone()],
            warning,
        })
    }

    /// Runs `to_trash`, which moves the local file at `path` (as `expect`
    /// found it) to the local trash and returns its name there, and
    /// records that version in the journal, so `history` lists it: for
    /// the writes and removals of a user's conflict resolution, which run
    /// outside a sync's steps. A version that could not be read to hash
    /// it is still trashed, only not listed.
    pub(crate) fn trash_local_recorded(
        &self,
        path: &RelPath,
        expect: &Expect,
        to_trash: impl FnOnce() -> Result<Option<RelPath>, ReplicaError>,
    ) -> Result<(), ReplicaError> {
        let hash = match expect {
            Expect::File { .. } => self
                .local()
                .open(path)
                .and_then(|reader| {
                    HashingReader::new(reader)
                        .drain()
                        .map_err(|e| ReplicaError::io("read", path, e))
                })
                .ok()
                .map(|(hash, _)| hash),
            Expect::Absent | Expect::Dir => None,
        };
        let trash_name = to_trash()?;
        if let (Some(hash), Expect::File { size, mtime_ns, .. }, Some(trash_name)) =
            (hash, expect, trash_name)
        {
            let recorded = self.journal.locked().record_trashed(
                self.pair,
                &[TrashedVersion {
                    path: path.clone(),
                    side: Side::Local,
                    trash_name,
                    hash,
                    size: *size,
                    mtime_ns: *mtime_ns,
                    trashed_by: self.settings.device.clone(),
                }],
            );
            // The version is in the trash either way; only its listing is
            // missing.
            if let Err(e) = recorded {
                tracing::warn!(path = %path, error = %e, "cannot record a trashed version");
            }
        }
        Ok(())
    }

    /// Forgets the versions `side` trashed longer ago than `retention`,
    /// after its trash was purged of them, so `history` lists only what
    /// the trash may still hold. A minute more is kept: trash batches are
    /// named by the minute and purged whole.
    pub fn forget_purged_versions(&self, side: Side, retention: Duration) {
        let cutoff = SystemTime::now()
            .checked_sub(retention + Duration::from_secs(60))
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let forgotten =
            self.journal
                .locked()
                .forget_trashed_before(self.pair, side, &timefmt::rfc3339(cutoff));
        if let Err(e) = forgotten {
            tracing::warn!(pair = %self.name, error = %e, "cannot forget purged trashed versions");
        }
    }

    /// The local file at `path` as it is now: its hash and what a write in
    /// its place must still find. `None` when there is none; a folder there
    /// is refused (a restore replaces a file, never a folder).
    fn local_file(&self, path: &RelPath) -> Result<Option<(ContentHash, Expect)>, RestoreError> {
        let local = self.local();
        let expect = match local.stat(path)? {
            Expect::Absent => return Ok(None),
            Expect::Dir => {
                return Err(RestoreError::Invalid(format!(
                    "{path} is not a file here now; move it aside to restore a version of the file"
                )));
            }
            file @ Expect::File { .. } => file,
        };
        let (hash, _) = HashingReader::new(local.open(path)?)
            .drain()
            .map_err(|e| ReplicaError::io("read", path, e))?;
        // Changed while it was read: the hash may not be this version's.
        // The write would refuse it anyway; say so now.
        if local.stat(path)? != expect {
            return Err(RestoreError::Invalid(format!(
                "{path} changed while it was being restored; nothing was replaced, try again"
            )));
        }
        Ok(Some((hash, expect)))
    }
}
