//! A folder on a local file system as a replica: the local side of every
//! pair, and the `file://` remote (a NAS mount, a USB disk, a second folder).
//!
//! Both roles share every rule of `fsops` (staged writes, no-replace
//! renames, trash before delete). They differ only in where their marker and
//! trash live and which base fields serve as their stat cache: the local side
//! keeps its trash under the agent's state dir; a remote folder keeps it in
//! `.prism-sync/trash/` inside itself, where every agent sharing it can
//! reach it, beside the advisory lease file.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{Capabilities, Lease, Listing, Problem, Replica, ReplicaError, RootState};
use crate::fsops::{self, Expect, StatKind, Trash};
use crate::model::{
    BaseEntry, BaseTree, ContentHash, Entry, FileMeta, RelPath, Scope, Side, SideEntry,
};
use crate::tracker::ignore::{IgnoreRules, METADATA_DIR, ROOT_MARKER_FILE, TEMP_PREFIX};
use crate::tracker::scan::{ScanRequest, scan};

/// A folder on a mounted file system.
pub struct LocalFolder {
    root: PathBuf,
    side: Side,
    trash: Trash,
    case_insensitive: OnceLock<bool>,
}

impl LocalFolder {
    /// The local side of a pair; its trash lives under the state dir.
    pub fn local(root: PathBuf, trash: PathBuf) -> LocalFolder {
        LocalFolder {
            root,
            side: Side::Local,
            trash: Trash::new(trash),
            case_insensitive: OnceLock::new(),
        }
    }

    /// A `file://` remote; its trash lives in `.prism-sync/trash/`.
    pub fn remote(root: PathBuf) -> LocalFolder {
        let trash = Trash::new(root.join(METADATA_DIR).join("trash"));
        LocalFolder {
            root,
            side: Side::Remote,
            trash,
            case_insensitive: OnceLock::new(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn trash(&self) -> &Trash {
        &self.trash
    }

    fn marker(&self) -> PathBuf {
        match self.side {
            Side::Local => self.root.join(ROOT_MARKER_FILE),
            Side::Remote => self.root.join(METADATA_DIR).join("root"),
        }
    }

    fn check(&self, path: &RelPath, expect: &Expect) -> Result<PathBuf, ReplicaError> {
        let full = path.to_fs(&self.root);
        let found = fsops::stat(&full).map_err(|e| ReplicaError::io("inspect", path, e))?;
        if !expect.matches(found.as_ref()) {
            return Err(ReplicaError::Changed {
                path: path.to_string(),
            });
        }
        Ok(full)
    }

    /// The base as this side's stat cache: the local side compares the
    /// base's size, mtime and local id; a remote folder its own version
    /// token and remote id.
    fn cache_view(&self, base: &BaseTree) -> BaseTree {
        match self.side {
            Side::Local => base.clone(),
            Side::Remote => base
                .iter()
                .map(|(path, b)| {
                    let entry = match (
                        &b.entry,
                        b.remote_version.as_deref().and_then(parse_version),
                    ) {
                        (Entry::File(meta), Some((size, mtime_ns))) => Entry::File(FileMeta {
                            hash: meta.hash,
                            size,
                            mtime_ns,
                        }),
                        (entry, _) => *entry,
                    };
                    let view = BaseEntry {
                        entry,
                        local_id: b.remote_id.clone(),
                        remote_id: None,
                        remote_version: None,
                    };
                    (path.clone(), view)
                })
                .collect(),
        }
    }

    fn probe_case_insensitive(&self) -> bool {
        let probe = self.root.join(format!("{}CaseProbe", TEMP_PREFIX));
        if fs::write(&probe, b"").is_err() {
            return false;
        }
        let lower = self.root.join(format!("{}caseprobe", TEMP_PREFIX));
        let insensitive = lower.exists();
        let _ = fs::remove_file(&probe);
        insensitive
    }
}

fn parse_version(version: &str) -> Option<(u64, i64)> {
    let (size, mtime) = version.split_once(':')?;
    Some((size.parse().ok()?, mtime.parse().ok()?))
}

fn side_entry(stat: &fsops::Stat, hash: Option<ContentHash>) -> SideEntry {
    let entry = match (stat.kind, hash) {
        (StatKind::File, Some(hash)) => Entry::File(FileMeta {
            hash,
            size: stat.size,
            mtime_ns: stat.mtime_ns,
        }),
        _ => Entry::Dir,
    };
    let version = (stat.kind == StatKind::File).then(|| stat.version());
    SideEntry {
        entry,
        id: stat.id.clone(),
        version,
    }
}

impl Replica for LocalFolder {
    fn describe(&self) -> String {
        match self.side {
            Side::Local => self.root.display().to_string(),
            Side::Remote => format!("file://{}", self.root.display()),
        }
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            case_insensitive: *self
                .case_insensitive
                .get_or_init(|| self.probe_case_insensitive()),
            file_ids: cfg!(unix),
        }
    }

    fn root_state(&self) -> Result<RootState, ReplicaError> {
        match fs::metadata(&self.root) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(ReplicaError::Other(format!(
                    "{} is not a folder",
                    self.root.display()
                )));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(RootState::Missing),
            Err(e) => return Err(ReplicaError::io("open", self.root.display(), e)),
        }
        Ok(if self.marker().exists() {
            RootState::Ready
        } else {
            RootState::Unmarked
        })
    }

    fn mark_root(&self) -> Result<(), ReplicaError> {
        let marker = self.marker();
        let parent = marker.parent().unwrap_or(&self.root);
        fs::create_dir_all(parent).map_err(|e| ReplicaError::io("create", parent.display(), e))?;
        if !marker.exists() {
            let note = "This folder is kept in sync by Prism Sync. Do not delete this file: \
                        without it the agent treats the folder as missing (an unmounted disk) \
                        and refuses to sync deletions.\n";
            fs::write(&marker, note)
                .map_err(|e| ReplicaError::io("create", marker.display(), e))?;
        }
        Ok(())
    }

    fn list(
        &self,
        scope: &Scope,
        cache: &BaseTree,
        ignore: &IgnoreRules,
    ) -> Result<Listing, ReplicaError> {
        let cache = self.cache_view(cache);
        let request = ScanRequest {
            root: &self.root,
            scope,
            ignore,
            cache: &cache,
        };
        let outcome = scan(&request).map_err(|e| ReplicaError::Other(e.to_string()))?;
        let mut tree = outcome.tree;
        for entry in tree.values_mut() {
            if let Entry::File(meta) = &entry.entry {
                entry.version = Some(format!("{}:{}", meta.size, meta.mtime_ns));
            }
        }
        Ok(Listing {
            tree,
            held: outcome.held,
            problems: outcome
                .problems
                .into_iter()
                .map(|p| Problem {
                    path: p.path,
                    message: p.message,
                })
                .collect(),
            hashed_files: outcome.hashed_files,
        })
    }

    fn open(&self, path: &RelPath) -> Result<Box<dyn Read + Send + '_>, ReplicaError> {
        let full = path.to_fs(&self.root);
        let file = fs::File::open(&full).map_err(|e| ReplicaError::io("read", path, e))?;
        Ok(Box::new(file))
    }

    fn write(
        &self,
        path: &RelPath,
        content: &mut dyn Read,
        hash: &ContentHash,
        mtime_ns: i64,
        expect: &Expect,
    ) -> Result<SideEntry, ReplicaError> {
        let target = path.to_fs(&self.root);
        let staged = fsops::stage(&target, content, Some(mtime_ns))
            .map_err(|e| ReplicaError::io("write", path, e))?;
        if staged.hash != *hash {
            return Err(ReplicaError::SourceChanged {
                path: path.to_string(),
            });
        }
        let stat =
            fsops::commit(staged, &target, expect, &self.trash, path).map_err(|e| match e {
                fsops::CommitError::Changed { .. } => ReplicaError::Changed {
                    path: path.to_string(),
                },
                fsops::CommitError::Io(e) => ReplicaError::io("replace", path, e),
            })?;
        Ok(side_entry(&stat, Some(*hash)))
    }

    fn mkdir(&self, path: &RelPath) -> Result<SideEntry, ReplicaError> {
        let full = path.to_fs(&self.root);
        match fs::create_dir(&full) {
            Ok(()) => fsops::sync_parent(&full).map_err(|e| ReplicaError::io("create", path, e))?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(ReplicaError::io("create folder", path, e)),
        }
        match fsops::stat(&full) {
            Ok(Some(stat)) if stat.kind == StatKind::Dir => Ok(side_entry(&stat, None)),
            Ok(_) => Err(ReplicaError::Changed {
                path: path.to_string(),
            }),
            Err(e) => Err(ReplicaError::io("create folder", path, e)),
        }
    }

    fn rename(&self, from: &RelPath, to: &RelPath, expect: &Expect) -> Result<(), ReplicaError> {
        let source = self.check(from, expect)?;
        let dest = to.to_fs(&self.root);
        fsops::rename_noreplace(&source, &dest).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                ReplicaError::Changed {
                    path: to.to_string(),
                }
            } else {
                ReplicaError::io("rename", from, e)
            }
        })?;
        fsops::sync_parent(&dest).map_err(|e| ReplicaError::io("rename", to, e))?;
        if source.parent() != dest.parent() {
            fsops::sync_parent(&source).map_err(|e| ReplicaError::io("rename", from, e))?;
        }
        Ok(())
    }

    fn remove(&self, path: &RelPath, expect: &Expect) -> Result<(), ReplicaError> {
        let full = self.check(path, expect)?;
        // RACE: a file created inside a folder between the check and the
        // move goes to the trash with the folder; it is kept, not lost.
        self.trash
            .put(&full, path)
            .map_err(|e| ReplicaError::io("move to the trash", path, e))?;
        fsops::sync_parent(&full).map_err(|e| ReplicaError::io("delete", path, e))?;
        Ok(())
    }

    fn lease(&self, device: &str, ttl: Duration) -> Result<Option<Box<dyn Lease>>, ReplicaError> {
        if self.side == Side::Local {
            return Ok(None);
        }
        let dir = self.root.join(METADATA_DIR);
        fs::create_dir_all(&dir).map_err(|e| ReplicaError::io("create", dir.display(), e))?;
        let lease = FileLease {
            path: dir.join("lease"),
            owner: format!("{device} {} {}", std::process::id(), this_host()),
            ttl,
        };
        lease.acquire()?;
        Ok(Some(Box::new(lease)))
    }
}

/// The advisory lease of a remote folder: a file created exclusively,
/// holding its owner and expiry. An expired lease (its holder crashed) is
/// taken over.
struct FileLease {
    path: PathBuf,
    owner: String,
    ttl: Duration,
}

impl FileLease {
    fn content(&self) -> String {
        let expires = SystemTime::now() + self.ttl;
        let secs = expires
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        format!("{secs} {}\n", self.owner)
    }

    fn acquire(&self) -> Result<(), ReplicaError> {
        for _ in 0..2 {
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&self.path)
            {
                Ok(mut file) => {
                    file.write_all(self.content().as_bytes())
                        .and_then(|()| file.sync_all())
                        .map_err(|e| ReplicaError::io("write", self.path.display(), e))?;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    let holder = fs::read_to_string(&self.path).unwrap_or_default();
                    let expires: u64 = holder
                        .split_whitespace()
                        .next()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                    let now = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or(0);
                    if expires > now && !holder_is_gone(&holder) {
                        let who = holder.split_whitespace().nth(1).unwrap_or("another agent");
                        return Err(ReplicaError::Busy(format!(
                            "{who} is writing to it (lease until {expires}); retrying shortly"
                        )));
                    }
                    // The holder crashed or hung past its lease: take over.
                    let _ = fs::remove_file(&self.path);
                }
                Err(e) => return Err(ReplicaError::io("lock", self.path.display(), e)),
            }
        }
        Err(ReplicaError::Busy(
            "another agent took the lease first".into(),
        ))
    }
}

/// This host's name as the lease records it (one word).
fn this_host() -> String {
    gethostname::gethostname()
        .to_string_lossy()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join("_")
}

/// Whether a lease (`EXPIRES DEVICE PID HOST`) was taken by a process on
/// this host that no longer runs: an agent that crashed. Its lease is stale
/// at once; otherwise the restarted agent would be locked out of its own
/// remote until the lease expired. A holder on another host, or a lease
/// without a host, is trusted until it expires.
fn holder_is_gone(holder: &str) -> bool {
    // Read from the end: a device name may contain spaces.
    let mut fields = holder.split_whitespace().rev();
    let (Some(host), Some(pid)) = (
        fields.next(),
        fields.next().and_then(|p| p.parse::<i32>().ok()),
    ) else {
        return false;
    };
    if pid <= 0 || host != this_host() {
        return false;
    }
    #[cfg(unix)]
    {
        // SAFETY: signal 0 sends nothing; it only asks whether `pid` exists.
        let rc = unsafe { libc::kill(pid, 0) };
        rc != 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
    }
    #[cfg(not(unix))]
    {
        false
    }
}

impl Lease for FileLease {
    fn renew(&mut self) -> Result<(), ReplicaError> {
        let current = fs::read_to_string(&self.path).unwrap_or_default();
        if !current.trim_end().ends_with(&self.owner) {
            return Err(ReplicaError::Busy(
                "the lease was taken over by another agent".into(),
            ));
        }
        let temp = fsops::temp_path_for(&self.path);
        fs::write(&temp, self.content())
            .and_then(|()| fs::rename(&temp, &self.path))
            .map_err(|e| ReplicaError::io("renew", self.path.display(), e))
    }
}

impl Drop for FileLease {
    fn drop(&mut self) {
        let current = fs::read_to_string(&self.path).unwrap_or_default();
        if current.trim_end().ends_with(&self.owner) {
            let _ = fs::remove_file(&self.path);
        }
    }
}
