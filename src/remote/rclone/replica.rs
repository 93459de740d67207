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
//!   `.prism-sync/trash/BATCH/PATH` first.
//! - A removal moves the file to the trash; a folder (empty by then) is
//!   removed with `operations/rmdir`.
//! - A file moves with `operations/movefile`; a folder with `sync/move`,
//!   which is one server-side move where the backend has one (`DirMove`
//!   in its features) and a move per file otherwise.
//! - Records (`.prism-sync/NAME`) are uploaded under a hidden name and
//!   moved over the old one.
//!
//! **The careful re-check.** rclone has no conditional write: right before
//! every replace, move or delete the path is stat'ed and its version token
//! compared with the one the plan saw (RACE: a write by someone else
//! between that look and the step is not seen; the step then moves that
//! version to the trash, or replaces it, instead of leaving it in place).
//! The listing says so in status, and [`Capabilities`] has no stronger
//! claim. Backends that allow two files of one name (Google Drive) are
//! looked at again after a commit: a duplicate is a change to re-plan.

use std::io::{Cursor, Read};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use super::daemon::{Rcd, RcdSpec};
use super::listing::{self, Item};
use super::rc::{ErrorKind, RcClient, RcError};
use super::settings::{RclonePairSettings, split_remote};
use crate::fsops::Expect;
use crate::locks::LockExt;
use crate::model::{BaseTree, ContentHash, Entry, FileMeta, Mode, RelPath, Scope, SideEntry};
use crate::remote::{
    Capabilities, Listing, Opened, Problem, Replica, ReplicaError, RootState, StagedWrite,
    trash_suffix,
};
use crate::timefmt;
use crate::tracker::ignore::{IgnoreRules, METADATA_DIR};

/// The largest record read (change logs are split into smaller segments).
const MAX_RECORD_BYTES: u64 = 64 * 1024 * 1024;

/// Staged uploads older than this are leftovers of a crash, removed by
/// [`Replica::purge_trash`].
const STALE_STAGED: Duration = Duration::from_secs(24 * 3600);

/// What the backend behind the remote offers (`operations/fsinfo`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Features {
    /// The hash type listings ask for: the backend's first, unless
    /// computing it means reading the file (`SlowHash`: the local
    /// backend), where the token is modification time and size instead.
    pub hash: Option<String>,
    /// A folder moves in one server-side step.
    pub dir_move: bool,
    /// Two entries may have one name (Google Drive).
    pub duplicates: bool,
    pub case_insensitive: bool,
}

impl Features {
    fn of(info: &Value) -> Features {
        let features = &info["Features"];
        let flag = |name: &str| features[name].as_bool().unwrap_or(false);
        let hash = if flag("SlowHash") {
            None
        } else {
            info["Hashes"]
                .as_array()
                .and_then(|hashes| hashes.first())
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        Features {
            hash,
            dir_move: flag("DirMove"),
            duplicates: flag("DuplicateFiles"),
            case_insensitive: flag("CaseInsensitive"),
        }
    }
}

/// An `rclone:` remote.
pub struct RcloneReplica {
    /// The remote as rclone takes it: `NAME:PATH` or a connection string.
    remote: String,
    /// `rclone:REMOTE`: never a secret (connection strings with one are
    /// refused by the config).
    shown: String,
    settings: RclonePairSettings,
    client: RcClient,
    features: Mutex<Option<Features>>,
    parallel: usize,
}

impl RcloneReplica {
    /// A replica of `remote` through the agent's rclone for `settings`.
    /// Nothing is started yet.
    pub fn new(
        remote: &str,
        settings: &RclonePairSettings,
        parallel: usize,
    ) -> Result<RcloneReplica, ReplicaError> {
        let rcd = Rcd::shared(RcdSpec {
            binary: settings.binary(),
            config: settings.config.clone(),
        });
        let client = RcClient::new(rcd).map_err(|e| ReplicaError::Other(e.to_string()))?;
        Ok(RcloneReplica {
            remote: remote.to_owned(),
            shown: format!("rclone:{remote}"),
            settings: settings.clone(),
            client,
            features: Mutex::new(None),
            parallel: parallel.max(1),
        })
    }

    /// The agent's rcd (tests end it behind the replica's back).
    pub fn rcd(&self) -> &Arc<Rcd> {
        self.client.rcd()
    }

    /// The backend's features, asked once (with rclone's version).
    pub fn features(&self) -> Result<Features, ReplicaError> {
        if let Some(known) = self.features.locked().as_ref() {
            return Ok(known.clone());
        }
        self.client
            .version()
            .map_err(|e| self.error(e, "reach", ""))?;
        let info = self
            .client
            .call("operations/fsinfo", &json!({ "fs": self.remote }))
            .map_err(|e| self.error(e, "reach", ""))?;
        let features = Features::of(&info);
        tracing::debug!(remote = %self.shown, ?features, "rclone remote features");
        *self.features.locked() = Some(features.clone());
        Ok(features)
    }

    /// `remote` as a remote of its own, one folder down.
    fn sub_fs(&self, rel: &str) -> String {
        if self.remote.ends_with([':', '/']) {
            format!("{}{rel}", self.remote)
        } else {
            format!("{}/{rel}", self.remote)
        }
    }

    /// A failed call as the engine needs it, in words a person can act on.
    fn error(&self, e: RcError, op: &'static str, path: &str) -> ReplicaError {
        let name = split_remote(&self.remote).map_or(self.remote.as_str(), |(name, _)| name);
        match e.kind() {
            ErrorKind::NotFound => ReplicaError::io(
                op,
                path,
                std::io::Error::new(std::io::ErrorKind::NotFound, e.to_string()),
            ),
            ErrorKind::UnknownRemote => ReplicaError::Other(format!(
                "the rclone remote {name:?} is not in the rclone config ({}); add it with \
                 `rclone config`, or correct the name in the pair's remote",
                self.config_file()
            )),
            ErrorKind::Login => ReplicaError::Other(format!(
                "{}: the provider refused the login ({e}); if its token expired or was revoked, \
                 run `rclone config reconnect {name}:` once",
                self.shown
            )),
            ErrorKind::Quota => ReplicaError::Other(format!(
                "cannot {op} {path}: {} is full (the provider's storage quota is exceeded): {e}",
                self.shown
            )),
            ErrorKind::Offline => ReplicaError::Offline {
                remote: self.shown.clone(),
                reason: e.to_string(),
            },
            ErrorKind::Other => match e {
                RcError::Start(start) => ReplicaError::Other(start.to_string()),
                e => ReplicaError::Other(format!("cannot {op} {path} on {}: {e}", self.shown)),
            },
        }
    }

    /// The rclone config file a remote name was looked up in, as rclone
    /// itself says (`rclone config file`).
    fn config_file(&self) -> String {
        if let Some(config) = &self.settings.config {
            return config.display().to_string();
        }
        std::process::Command::new(self.settings.binary())
            .args(["config", "file"])
            .stdin(std::process::Stdio::null())
            .output()
            .ok()
            .and_then(|out| {
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .map(|l| l.trim().to_owned())
            })
            .unwrap_or_else(|| "rclone's default config file".to_owned())
    }

    fn call(
        &self,
        method: &str,
        params: Value,
        op: &'static str,
        path: &str,
    ) -> Result<Value, ReplicaError> {
        self.client
            .call(method, &params)
            .map_err(|e| self.error(e, op, path))
    }

    /// What is at `path` (`""`: the root); `None` when nothing is.
    fn stat_item(&self, path: &str) -> Result<Option<Item>, ReplicaError> {
        let features = self.features()?;
        let answer = self.call(
            "operations/stat",
            json!({
                "fs": self.remote,
                "remote": path,
                "opt": { "showHash": features.hash.is_some(), "hashTypes": features.hash.as_slice(), "noMimeType": true },
            }),
            "look at",
            path,
        );
        let answer = match answer {
            Ok(answer) => answer,
            // The folder above is not there either.
            Err(ReplicaError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        if answer["item"].is_null() {
            return Ok(None);
        }
        Ok(listing::item(&answer["item"], features.hash.as_deref()))
    }

    /// The entries directly in the folder `path`; `None` when it is not
    /// there.
    fn children(&self, path: &str) -> Result<Option<Vec<Item>>, ReplicaError> {
        self.list_below(path, false)
    }

    fn list_below(&self, path: &str, recurse: bool) -> Result<Option<Vec<Item>>, ReplicaError> {
        let features = self.features()?;
        let answer = self.call(
            "operations/list",
            json!({
                "fs": self.remote,
                "remote": path,
                "opt": {
                    "recurse": recurse,
                    "showHash": features.hash.is_some(),
                    "hashTypes": features.hash.as_slice(),
                    "noMimeType": true,
                },
            }),
            "list",
            path,
        );
        let answer = match answer {
            Ok(answer) => answer,
            Err(ReplicaError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let hash = features.hash.as_deref();
        Ok(Some(
            answer["list"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| listing::item(v, hash))
                .collect(),
        ))
    }

    /// Moves the file `from` to `to` (made with its folders, replaced if
    /// there) server-side where the backend can.
    fn move_file(&self, from: &str, to: &str) -> Result<(), ReplicaError> {
        self.call(
            "operations/movefile",
            json!({
                "srcFs": self.remote, "srcRemote": from,
                "dstFs": self.remote, "dstRemote": to,
            }),
            "move",
            from,
        )
        .map(|_| ())
    }

    /// The re-check before a step acts on the file `path`: it must still
    /// be the version `expect` names (its token, or else its size and
    /// modification time).
    fn recheck(&self, path: &RelPath, expect: &Expect) -> Result<(), ReplicaError> {
        let Expect::File {
            size,
            mtime_ns,
            version,
            ..
        } = expect
        else {
            return Err(changed(path));
        };
        match self.stat_item(path.as_str())? {
            Some(item)
                if !item.is_dir
                    && match version {
                        Some(version) => *version == item.token,
                        None => item.size == *size && item.mtime_ns == *mtime_ns,
                    } =>
            {
                Ok(())
            }
            _ => Err(changed(path)),
        }
    }

    /// Moves the (re-checked) file `path` to this batch's trash folder;
    /// returns its name there.
    fn trash(&self, path: &RelPath) -> Result<RelPath, ReplicaError> {
        let stamp = timefmt::conflict_stamp(SystemTime::now());
        let mut name = format!("{}/{}", &stamp[..13], path.as_str());
        // A version trashed earlier in the same minute keeps its name.
        if self
            .stat_item(&format!("{METADATA_DIR}/trash/{name}"))?
            .is_some()
        {
            name = format!("{name}.{}", trash_suffix());
        }
        self.move_file(path.as_str(), &format!("{METADATA_DIR}/trash/{name}"))
            .map_err(crate::remote::gone_meanwhile(path))?;
        RelPath::new(&name).map_err(|e| ReplicaError::Other(format!("{name}: {e}")))
    }

    /// Uploads `content` to the hidden name `name` in the folder `dir`;
    /// its BLAKE3 and size.
    fn upload(
        &self,
        dir: &str,
        name: &str,
        content: &mut dyn Read,
        what: &str,
    ) -> Result<(ContentHash, u64), ReplicaError> {
        let mut hasher = blake3::Hasher::new();
        let mut size = 0u64;
        self.client
            .upload(&self.remote, dir, name, content, &mut |chunk| {
                hasher.update(chunk);
                size += chunk.len() as u64;
            })
            .map_err(|e| self.error(e, "upload", what))?;
        Ok((ContentHash(*hasher.finalize().as_bytes()), size))
    }

    fn delete_file(&self, path: &str) -> Result<(), ReplicaError> {
        match self.call(
            "operations/deletefile",
            json!({ "fs": self.remote, "remote": path }),
            "remove",
            path,
        ) {
            Ok(_) => Ok(()),
            Err(ReplicaError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// After a commit on a backend that allows two files of one name: the
    /// name must be there once.
    fn check_unique(&self, path: &RelPath) -> Result<(), ReplicaError> {
        let parent = path
            .parent()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default();
        let children = self.children(&parent)?.unwrap_or_default();
        let count = children
            .iter()
            .filter(|c| c.path.trim_matches('/') == path.as_str())
            .count();
        if count > 1 {
            tracing::warn!(path = %path, "the remote holds this name twice after the commit");
            return Err(changed(path));
        }
        Ok(())
    }
}

fn changed(path: impl std::fmt::Display) -> ReplicaError {
    ReplicaError::Changed {
        path: path.to_string(),
    }
}

fn staging_dir() -> String {
    format!("{METADATA_DIR}/staging")
}

/// A fresh hidden name for an upload.
fn staged_name() -> String {
    format!(
        ".upload-{:016x}{:08x}",
        fastrand::u64(..),
        fastrand::u32(..)
    )
}

impl listing::Source for RcloneReplica {
    fn items_below(&self, path: &str) -> Result<Vec<Item>, ReplicaError> {
        match self.list_below(path, true)? {
            Some(items) => Ok(items),
            None if path.is_empty() => Err(ReplicaError::Other(format!(
                "{} is not there (its folder is missing)",
                self.shown
            ))),
            // Gone since it was stat'ed: nothing below it.
            None => Ok(Vec::new()),
        }
    }

    fn item(&self, path: &str) -> Result<Option<Item>, ReplicaError> {
        self.stat_item(path)
    }

    fn read(&self, path: &RelPath) -> Result<Box<dyn Read + Send + '_>, ReplicaError> {
        self.open(path)
    }
}

impl Replica for RcloneReplica {
    fn describe(&self) -> String {
        self.shown.clone()
    }

    fn capabilities(&self) -> Capabilities {
        let known = self.features.locked().clone().unwrap_or_default();
        Capabilities {
            // Every commit is a few calls (stat, trash move, move).
            parallel_commits: true,
            case_insensitive: known.case_insensitive,
            ..Capabilities::default()
        }
    }

    fn root_state(&self) -> Result<RootState, ReplicaError> {
        if self.stat_item(&format!("{METADATA_DIR}/root"))?.is_some() {
            return Ok(RootState::Ready);
        }
        Ok(match self.children("")? {
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
        self.features()?;
        let mut listing = listing::list(self, scope, cache, ignore, self.parallel)?;
        listing.problems.push(Problem {
            path: None,
            message: format!(
                "{} cannot make a write conditional (rclone has none): each replace, move and \
                 removal re-checks the file just before it acts, so a change another writer \
                 makes in that moment can go to the trash instead of being kept in place",
                self.shown
            ),
        });
        Ok(listing)
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
        // The caller checks the bytes against the planned hash.
        match self.client.read(&self.remote, path.as_str(), 0) {
            Ok((response, _)) => Ok(Box::new(response)),
            Err(e) if e.kind() == ErrorKind::NotFound => Err(ReplicaError::SourceChanged {
                path: path.to_string(),
            }),
            Err(e) => Err(self.error(e, "read", path.as_str())),
        }
    }

    /// From an offset: a stat that must show the expected size, then a
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
        match self.stat_item(path.as_str())? {
            Some(item) if !item.is_dir && item.size == expected.size => {}
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
        // rclone's upload stamps the time of the upload; the listing shows
        // that one.
        _mtime_ns: i64,
        // No permission bits.
        _mode: Option<Mode>,
    ) -> Result<StagedWrite, ReplicaError> {
        let name = staged_name();
        let temp = format!("{}/{name}", staging_dir());
        let (written, size) = self.upload(&staging_dir(), &name, content, path.as_str())?;
        if written != *hash {
            let _ = self.delete_file(&temp);
            return Err(ReplicaError::SourceChanged {
                path: path.to_string(),
            });
        }
        Ok(StagedWrite {
            path: path.clone(),
            temp: PathBuf::from(temp),
            hash: *hash,
            size,
            written: None,
            _lock: None,
        })
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
        let trashed = match expect {
            Expect::Absent => {
                if self.stat_item(path.as_str())?.is_some() {
                    return Err(changed(path));
                }
                None
            }
            Expect::File { .. } => {
                self.recheck(path, expect)?;
                Some(self.trash(path)?)
            }
            Expect::Dir => {
                self.remove(path, &Expect::Dir)?;
                None
            }
        };
        let temp = staged.temp.to_string_lossy();
        self.move_file(&temp, path.as_str())?;
        if features.duplicates {
            self.check_unique(path)?;
        }
        let item = self
            .stat_item(path.as_str())?
            .filter(|item| !item.is_dir)
            .ok_or_else(|| changed(path))?;
        let entry = SideEntry {
            entry: Entry::File(FileMeta {
                hash: staged.hash,
                size: item.size,
                mtime_ns: item.mtime_ns,
                mode: None,
            }),
            id: None,
            version: Some(item.token),
        };
        Ok((entry, trashed))
    }

    fn discard(&self, staged: StagedWrite) {
        let _ = self.delete_file(&staged.temp.to_string_lossy());
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
                self.move_file(from.as_str(), to.as_str())
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
                self.trash(path).map(Some)
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
        let cutoff = timefmt::conflict_stamp(now.checked_sub(older_than).unwrap_or(now));
        let mut purged = 0;
        for batch in self.children(&trash)?.unwrap_or_default() {
            let name = batch.path.rsplit('/').next().unwrap_or_default();
            // Batch names sort as time; anything else is not ours.
            let is_batch = batch.is_dir && name.len() == 13 && name.as_bytes()[8] == b'-';
            if is_batch && name < &cutoff[..13] {
                self.call(
                    "operations/purge",
                    json!({ "fs": self.remote, "remote": batch.path }),
                    "purge",
                    &batch.path,
                )?;
                purged += 1;
            }
        }
        // Uploads a crash left staged.
        let stale = timefmt::to_unix_ns(now.checked_sub(STALE_STAGED).unwrap_or(now));
        for staged in self.children(&staging_dir())?.unwrap_or_default() {
            if !staged.is_dir && staged.mtime_ns < stale {
                self.delete_file(&staged.path)?;
            }
        }
        Ok(purged)
    }

    fn read_record(&self, name: &str) -> Result<Option<String>, ReplicaError> {
        let path = format!("{METADATA_DIR}/{name}");
        let response = match self.client.read(&self.remote, &path, 0) {
            Ok((response, _)) => response,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.error(e, "read", &path)),
        };
        let mut bytes = Vec::new();
        response
            .take(MAX_RECORD_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| ReplicaError::io("read", &path, e))?;
        if bytes.len() as u64 > MAX_RECORD_BYTES {
            return Err(ReplicaError::Other(format!(
                "{path} is larger than {MAX_RECORD_BYTES} bytes; it is not a record Prism Sync \
                 wrote"
            )));
        }
        String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| ReplicaError::Other(format!("{path} is not UTF-8 text")))
    }

    /// Uploaded under a hidden name beside it, then moved over it: a
    /// reader finds the old record or the new one.
    fn write_record(&self, name: &str, content: &str) -> Result<(), ReplicaError> {
        let path = format!("{METADATA_DIR}/{name}");
        let dir = path.rsplit_once('/').map_or("", |(dir, _)| dir).to_owned();
        let temp_name = staged_name();
        let temp = format!("{dir}/{temp_name}");
        self.upload(
            &dir,
            &temp_name,
            &mut Cursor::new(content.as_bytes()),
            &path,
        )?;
        let moved = self.move_file(&temp, &path);
        if moved.is_err() {
            let _ = self.delete_file(&temp);
        }
        moved
    }

    fn list_records(&self, folder: &str) -> Result<Vec<String>, ReplicaError> {
        let below = format!("{METADATA_DIR}/{}", folder.trim_end_matches('/'));
        Ok(self
            .children(&below)?
            .unwrap_or_default()
            .into_iter()
            .filter(|item| !item.is_dir)
            .filter_map(|item| {
                let name = item.path.rsplit('/').next()?.to_owned();
                crate::remote::is_record_name(&name).then_some(name)
            })
            .collect())
    }

    fn remove_record(&self, name: &str) -> Result<(), ReplicaError> {
        self.delete_file(&format!("{METADATA_DIR}/{name}"))
    }
}
