//! An `rclone:NAME:PATH` remote: the [`Replica`] over the agent's rcd.
//!
//! How files map onto rclone's operations:
//!
//! - The listing is one recursive `operations/list` ([`super::listing`]).
//! - A read is a GET through `--rc-serve`, ranged where a transfer
//!   continues.
//! - A write is uploaded to `.prism-sync/staging/` (checked against the
//!   caller's BLAKE3 while it streams) and moved into place server-side
//!   with `operations/movefile`; the version it replaces is moved to
//!   `.prism-sync/trash/BATCH/PATH` first (a batch tagged for this
//!   replica: a move replaces what is at its destination).
//! - A removal moves the file to the trash; a folder (empty by then) is
//!   removed with `operations/rmdir`.
//! - A file moves with `operations/movefile`; a folder with `sync/move`,
//!   which is one server-side move where the backend has one (`DirMove`
//!   in its features) and a move per file otherwise.
//! - Where the backend has no `Move` (S3), rclone's move is a copy and a
//!   removal in one call; a move of a file others write (to the trash, a
//!   rename) is then `operations/copyfile`, a re-check of the source, and
//!   `operations/deletefile` only if it is still the planned version
//!   ([`Remote::move_rechecked`]).
//! - Records (`.prism-sync/NAME`) are uploaded under a hidden name and
//!   moved over the old one; the lease is one of them ([`super::lease`]).
//!
//! **The careful re-check.** rclone has no conditional write: right before
//! every replace, move or delete the path is looked at and its version
//! token compared with the one the plan saw (RACE: a write by someone else
//! between that look and the step is not seen; the step then moves that
//! version to the trash, or replaces it, instead of leaving it in place).
//! The look is a stat, or for a batch of uploads the listing of their
//! folder taken right before the batch's commits, at most a second old
//! ([`super::looks`] argues why that is as good). Where a move is a copy
//! and a removal, the source is looked at again after the copy, so the
//! race is that moment too, not the copy's length.
//! [`Replica::rechecked_writes`] declares it, and the log says so
//! once per pair. Backends that allow two files of one name (Google Drive) are
//! looked at again after a commit: a duplicate is a change to re-plan.

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::json;

use super::calls::{Remote, changed, name_of, staged_at_ns, staged_name, staging_dir};
use super::lease::RcloneLease;
use super::listing;
use super::rc::ErrorKind;
use super::settings::RclonePairSettings;
use crate::fsops::Expect;
use crate::locks::LockExt;
use crate::model::{BaseTree, ContentHash, Entry, FileMeta, Mode, RelPath, Scope, SideEntry};
use crate::remote::{
    Capabilities, Lease, Listing, Opened, Replica, ReplicaError, RootState, Source, StagedWrite,
    layout,
};
use crate::timefmt;
use crate::tracker::ignore::{IgnoreRules, METADATA_DIR};

/// Staged uploads staged longer ago than this (by their names, see
/// `calls::staged_name_at`) are leftovers of a crash, removed by
/// [`Replica::purge_trash`].
const STALE_STAGED: Duration = Duration::from_secs(24 * 3600);

/// An `rclone:` remote.
pub struct RcloneReplica {
    inner: Arc<Remote>,
}

impl RcloneReplica {
    /// A replica of `remote` through the agent's rclone for `settings`;
    /// uploads wait in a private folder of the system's temporary folder
    /// ([`RcloneReplica::for_agent`] keeps them in the state dir).
    /// Nothing is started yet.
    pub fn new(
        remote: &str,
        settings: &RclonePairSettings,
        parallel: usize,
    ) -> Result<RcloneReplica, ReplicaError> {
        RcloneReplica::with_flags(remote, settings, parallel, &[])
    }

    /// The replica an agent uses: uploads wait in `STATE/rclone-spool/`.
    pub fn for_agent(
        remote: &str,
        settings: &RclonePairSettings,
        parallel: usize,
        state_dir: &std::path::Path,
    ) -> Result<RcloneReplica, ReplicaError> {
        let spool = state_dir.join("rclone-spool");
        let inner = Remote::new(remote, settings, parallel, &[], spool)?;
        Ok(RcloneReplica {
            inner: Arc::new(inner),
        })
    }

    /// [`RcloneReplica::new`] through an rcd started with more of rclone's
    /// global flags. The agent uses rclone's defaults: their low-level
    /// retries ride out a provider's rate limits (and make a server that
    /// is away show as offline only after about a minute).
    pub fn with_flags(
        remote: &str,
        settings: &RclonePairSettings,
        parallel: usize,
        flags: &[&str],
    ) -> Result<RcloneReplica, ReplicaError> {
        // SAFETY: getuid(2) cannot fail.
        let uid = unsafe { libc::getuid() };
        let spool = std::env::temp_dir().join(format!("prism-sync-rclone-{uid}"));
        Ok(RcloneReplica {
            inner: Arc::new(Remote::new(remote, settings, parallel, flags, spool)?),
        })
    }
}

impl RcloneReplica {
    /// Uploads `content` to a fresh name in the staging folder; a large
    /// upload of a transfer's `source` reports its progress there.
    fn stage_watched(
        &self,
        path: &RelPath,
        content: &mut dyn Read,
        hash: &ContentHash,
        mtime_ns: i64,
        source: Option<&Source<'_>>,
    ) -> Result<StagedWrite, ReplicaError> {
        let name = staged_name();
        let temp = format!("{}/{name}", staging_dir());
        let size = self.upload_watched(
            &staging_dir(),
            &name,
            content,
            mtime_ns,
            Some(hash),
            path.as_str(),
            source,
        )?;
        Ok(StagedWrite {
            path: path.clone(),
            temp: PathBuf::from(temp),
            hash: *hash,
            size,
            written: None,
            _lock: None,
        })
    }
}

/// The replica's steps are the remote's calls.
impl std::ops::Deref for RcloneReplica {
    type Target = Remote;

    fn deref(&self) -> &Remote {
        &self.inner
    }
}

impl Replica for RcloneReplica {
    fn describe(&self) -> String {
        self.shown.clone()
    }

    fn capabilities(&self) -> Capabilities {
        let known = self
            .features
            .locked()
            .clone()
            .map(|(_, known)| known)
            .unwrap_or_default();
        Capabilities {
            // Every commit is a few calls (stat, trash move, move).
            parallel_commits: true,
            case_insensitive: known.case_insensitive,
            ..Capabilities::default()
        }
    }

    fn transport(&self) -> Option<String> {
        let endpoint = self.rcd().running_endpoint()?;
        Some(format!(
            "rclone {}, rcd on {}",
            endpoint.version,
            endpoint.transport()
        ))
    }

    fn rechecked_writes(&self) -> bool {
        true
    }

    fn root_state(&self) -> Result<RootState, ReplicaError> {
        if self.stat_file(&format!("{METADATA_DIR}/root"))?.is_some() {
            return Ok(RootState::Ready);
        }
        let features = self.features()?;
        Ok(match self.children("")? {
            // A backend without folders of their own (S3) has no root
            // folder that could stay behind empty: nothing is no root.
            Some(children) if children.is_empty() && !features.empty_dirs => RootState::Missing,
            Some(_) => RootState::Unmarked,
            None => RootState::Missing,
        })
    }

    fn mark_root(&self) -> Result<(), ReplicaError> {
        self.call(
            "operations/mkdir",
            json!({ "fs": self.remote, "remote": "" }),
            "create",
            "the root",
        )?;
        if self.stat_item(&format!("{METADATA_DIR}/root"))?.is_some() {
            return Ok(());
        }
        let note = "This folder is kept in sync by Prism Sync. Do not delete this file: \
                    without it the agent treats the remote as missing and refuses to sync \
                    deletions.\n";
        self.write_record("root", note)
    }

    fn list(
        &self,
        scope: &Scope,
        cache: &BaseTree,
        ignore: &IgnoreRules,
    ) -> Result<Listing, ReplicaError> {
        let features = self.features()?;
        let folders = cache.values().filter(|e| e.entry.is_dir()).count();
        // With the root; nothing known for a tree never synced.
        self.note_folders(if cache.is_empty() { 0 } else { folders + 1 });
        listing::list(
            &*self.inner,
            scope,
            cache,
            ignore,
            self.parallel,
            features.empty_dirs,
        )
    }

    fn stat(&self, path: &RelPath) -> Result<Expect, ReplicaError> {
        Ok(match self.stat_item(path.as_str())? {
            None => Expect::Absent,
            Some(item) if item.is_dir => Expect::Dir,
            Some(item) => Expect::File {
                size: item.size,
                mtime_ns: item.mtime_ns,
                mode: None,
                version: Some(item.token),
            },
        })
    }

    fn open(&self, path: &RelPath) -> Result<Box<dyn Read + Send + '_>, ReplicaError> {
        self.open_file(path)
    }

    /// From an offset: a stat that must show the expected size and
    /// modification time, then a
    /// ranged GET (the hash over the whole file catches the rest).
    fn open_at(
        &self,
        path: &RelPath,
        offset: u64,
        expected: &FileMeta,
    ) -> Result<Opened<'_>, ReplicaError> {
        if offset == 0 {
            return Ok((self.open(path)?, 0));
        }
        let source_changed = || ReplicaError::SourceChanged {
            path: path.to_string(),
        };
        match self.stat_file(path.as_str())? {
            Some(item)
                if !item.is_dir
                    && item.size == expected.size
                    && item.mtime_ns == expected.mtime_ns => {}
            _ => return Err(source_changed()),
        }
        match self.client.read(&self.remote, path.as_str(), offset) {
            Ok((response, start)) => Ok((Box::new(response), start)),
            Err(e) if e.kind() == ErrorKind::NotFound => Err(source_changed()),
            Err(e) => Err(self.error(e, "read", path.as_str())),
        }
    }

    fn stage(
        &self,
        path: &RelPath,
        content: &mut dyn Read,
        hash: &ContentHash,
        mtime_ns: i64,
        // No permission bits.
        _mode: Option<Mode>,
    ) -> Result<StagedWrite, ReplicaError> {
        self.stage_watched(path, content, hash, mtime_ns, None)
    }

    /// The bytes are read into the spool first (not reported: that is not
    /// the transfer), then rclone's upload reports its own progress and
    /// is stopped when the run is cancelled.
    fn stage_from(
        &self,
        path: &RelPath,
        source: &Source<'_>,
        mtime_ns: i64,
        _mode: Option<Mode>,
    ) -> Result<StagedWrite, ReplicaError> {
        let mut reader = source.unreported_reader()?;
        self.stage_watched(path, &mut reader, &source.meta.hash, mtime_ns, Some(source))
    }

    fn commit_staged(
        &self,
        staged: &StagedWrite,
        expect: &Expect,
    ) -> Result<SideEntry, ReplicaError> {
        self.commit_staged_naming_trash(staged, expect)
            .map(|(entry, _)| entry)
    }

    fn commit_staged_naming_trash(
        &self,
        staged: &StagedWrite,
        expect: &Expect,
    ) -> Result<(SideEntry, Option<RelPath>), ReplicaError> {
        let path = &staged.path;
        let features = self.features()?;
        let temp = staged.temp.to_string_lossy();
        // Where rclone's move is a copy and a removal (any backend without
        // `Move`: a server-side copy on S3, a download and an upload where
        // there is no `Copy` either),
        // agents replacing one file at once each "move" the version they
        // all re-checked to the trash (each copy finds it there), and the
        // last one's move into place would replace a version another put
        // there after that one looked, with nothing of it in the trash.
        // So such a commit knows its upload's token, looks once more
        // right before its move, and checks after it that the file in
        // place is its own (RACE: a version landing between that look
        // and the move is still replaced, the gap any re-check leaves).
        let copies = !features.moves;
        let own_token = match copies {
            true => Some(self.stat_file(&temp)?.ok_or_else(|| changed(path))?.token),
            false => None,
        };
        let trashed = match expect {
            Expect::Absent => {
                if self.look_before_commit(staged)?.is_some() {
                    return Err(changed(path));
                }
                None
            }
            Expect::File { .. } => {
                self.recheck_against(path, expect, self.look_before_commit(staged)?)?;
                let trashed = self.trash(path, expect)?;
                if copies && self.stat_file(path.as_str())?.is_some() {
                    return Err(changed(path));
                }
                Some(trashed)
            }
            Expect::Dir => {
                self.remove(path, &Expect::Dir)?;
                None
            }
        };
        // Another writer's file that landed since the check is not
        // replaced where the backend's move refuses to (SFTP).
        self.move_checked(&temp, path.as_str())
            .map_err(|e| match e {
                ReplicaError::Changed { .. } => changed(path),
                e => e,
            })?;
        if features.duplicates {
            self.check_unique(path)?;
        }
        // The version the move put in place: the staged upload's, as the
        // batch listed it (a server-side move keeps it), else a look.
        let listed = features
            .moves
            .then(|| self.looks.locked().take_staged(&name_of(&temp)))
            .flatten();
        let item = match listed {
            Some(item) => item,
            None => self
                .stat_file(path.as_str())?
                .ok_or_else(|| changed(path))?,
        };
        if own_token.is_some_and(|own| own != item.token) {
            // Another writer's version replaced this one: it is not there
            // to be the base; the local file still has it.
            return Err(changed(path));
        }
        let entry = SideEntry {
            entry: Entry::File(FileMeta {
                hash: staged.hash,
                size: item.size,
                mtime_ns: item.mtime_ns,
                mode: None,
            }),
            id: None,
            version: Some(item.token.into()),
        };
        Ok((entry, trashed))
    }

    /// Nothing to flush: the uploads are on the remote. The batch is
    /// noted: its first commit lists its folders, for the re-checks of
    /// all its commits.
    fn sync_staged(&self, staged: &[&StagedWrite]) -> Result<(), ReplicaError> {
        self.note_batch(staged);
        Ok(())
    }

    fn discard(&self, staged: StagedWrite) {
        let temp = staged.temp.to_string_lossy();
        self.looks.locked().forget(&name_of(&temp));
        let _ = self.delete_file(&temp);
    }

    fn mkdir(&self, path: &RelPath, _mode: Option<Mode>) -> Result<SideEntry, ReplicaError> {
        match self.stat_item(path.as_str())? {
            // A file holds the name: someone made it since the scan.
            Some(item) if !item.is_dir => return Err(changed(path)),
            Some(_) => {}
            None => {
                self.call(
                    "operations/mkdir",
                    json!({ "fs": self.remote, "remote": path.as_str() }),
                    "create",
                    path.as_str(),
                )?;
            }
        }
        Ok(SideEntry::new(Entry::dir(None)))
    }

    fn rename(&self, from: &RelPath, to: &RelPath, expect: &Expect) -> Result<(), ReplicaError> {
        if self.stat_item(to.as_str())?.is_some() {
            return Err(changed(to));
        }
        match expect {
            Expect::Absent => Err(changed(from)),
            Expect::File { .. } => {
                self.recheck(from, expect)?;
                self.move_rechecked(from, to.as_str(), expect)
                    .map_err(crate::remote::gone_meanwhile(from))
            }
            Expect::Dir => {
                match self.stat_item(from.as_str())? {
                    Some(item) if item.is_dir => {}
                    _ => return Err(changed(from)),
                }
                let features = self.features()?;
                if !features.dir_move {
                    tracing::debug!(
                        remote = %self.shown,
                        from = %from,
                        "the backend cannot move a folder in one step; rclone moves it file by file"
                    );
                }
                // RACE: a file added below `from` while it moves may stay
                // behind (the next scan sees it there).
                self.call(
                    "sync/move",
                    json!({
                        "srcFs": self.sub_fs(from.as_str()),
                        "dstFs": self.sub_fs(to.as_str()),
                        "createEmptySrcDirs": true,
                        "deleteEmptySrcDirs": true,
                    }),
                    "move",
                    from.as_str(),
                )?;
                // A file-by-file move leaves the emptied folder itself.
                if self.stat_item(from.as_str())?.is_some() {
                    let _ = self.call(
                        "operations/rmdir",
                        json!({ "fs": self.remote, "remote": from.as_str() }),
                        "remove",
                        from.as_str(),
                    );
                }
                Ok(())
            }
        }
    }

    fn remove(&self, path: &RelPath, expect: &Expect) -> Result<(), ReplicaError> {
        self.remove_naming_trash(path, expect).map(|_| ())
    }

    fn remove_naming_trash(
        &self,
        path: &RelPath,
        expect: &Expect,
    ) -> Result<Option<RelPath>, ReplicaError> {
        match expect {
            Expect::Absent => match self.stat_item(path.as_str())? {
                Some(_) => Err(changed(path)),
                None => Ok(None),
            },
            Expect::File { .. } => {
                self.recheck(path, expect)?;
                self.trash(path, expect).map(Some)
            }
            Expect::Dir => {
                // A plan removes a folder after its content; anything
                // still in it is something the plan did not see.
                match self.children(path.as_str())? {
                    None => Ok(None),
                    Some(children) if !children.is_empty() => Err(changed(path)),
                    Some(_) => {
                        self.call(
                            "operations/rmdir",
                            json!({ "fs": self.remote, "remote": path.as_str() }),
                            "remove",
                            path.as_str(),
                        )?;
                        Ok(None)
                    }
                }
            }
        }
    }

    fn open_trashed(&self, name: &RelPath) -> Result<Box<dyn Read + Send + '_>, ReplicaError> {
        let trashed = format!("{METADATA_DIR}/trash/{}", name.as_str());
        match self.client.read(&self.remote, &trashed, 0) {
            Ok((response, _)) => Ok(Box::new(response)),
            Err(e) if e.kind() == ErrorKind::NotFound => Err(ReplicaError::io(
                "read the trashed version",
                name,
                std::io::Error::new(std::io::ErrorKind::NotFound, "not in the remote trash"),
            )),
            Err(e) => Err(self.error(e, "read the trashed version", name.as_str())),
        }
    }

    fn purge_trash(&self, older_than: Duration) -> Result<usize, ReplicaError> {
        let trash = format!("{METADATA_DIR}/trash");
        let now = SystemTime::now();
        let cutoff = now.checked_sub(older_than).unwrap_or(now);
        let mut purged = 0;
        for batch in self.children(&trash)?.unwrap_or_default() {
            let name = batch.path.rsplit('/').next().unwrap_or_default();
            if batch.is_dir && layout::trash_batch_is_older(name, cutoff) {
                self.call(
                    "operations/purge",
                    json!({ "fs": self.remote, "remote": batch.path }),
                    "purge",
                    &batch.path,
                )?;
                purged += 1;
            }
        }
        // Uploads a crash left staged. Their age is in their names: a
        // staged file has the modification time of the file it uploads
        // (years old for many), and one waiting for its commit while this
        // runs (pairs sync meanwhile, other devices too) must stay.
        let stale = timefmt::to_unix_ns(now.checked_sub(STALE_STAGED).unwrap_or(now));
        for staged in self.children(&staging_dir())?.unwrap_or_default() {
            let staged_at = staged_at_ns(&name_of(&staged.path)).unwrap_or(staged.mtime_ns);
            if !staged.is_dir && staged_at < stale {
                self.delete_file(&staged.path)?;
            }
        }
        Ok(purged)
    }

    fn lease(&self, device: &str, ttl: Duration) -> Result<Option<Box<dyn Lease>>, ReplicaError> {
        let lease = RcloneLease::acquire(self.inner.clone(), device, ttl)?;
        Ok(Some(Box::new(lease)))
    }

    fn read_record(&self, name: &str) -> Result<Option<String>, ReplicaError> {
        self.read_text(name)
    }

    fn write_record(&self, name: &str, content: &str) -> Result<(), ReplicaError> {
        self.write_text(name, content)
    }

    fn list_records(&self, folder: &str) -> Result<Vec<String>, ReplicaError> {
        let mut names = self.list_metadata(folder)?;
        names.retain(|name| crate::remote::is_record_name(name));
        Ok(names)
    }

    fn remove_record(&self, name: &str) -> Result<(), ReplicaError> {
        self.delete_metadata(name)
    }
}
