//! A `git+URL` remote: the [`Replica`] over a [`Mirror`].
//!
//! How the trait maps onto git:
//!
//! - The remote side is the tree of the branch tip (below `path`, when
//!   the pair names one); a file's version token is its blob id. A listing
//!   is one `ls-remote` (a fetch only when the tip moved) and one
//!   `ls-tree -r` of the tip; hashes come from the base where the blob id
//!   is the base's token, else from reading the blob once
//!   (`cat-file --batch`), remembered by blob id.
//! - Steps do not touch the remote one by one. `stage` writes the blob
//!   into the mirror (`hash-object -w`); `commit_staged`, `rename` and
//!   `remove` check what the step expects against the tip plus the steps
//!   before it (the blob id the listing carried) and note the edit;
//!   [`Replica::flush`], which the engine calls before it records a batch,
//!   turns the edits into one commit (a private index: `read-tree`,
//!   `update-index`, `write-tree`, `commit-tree`) and pushes it without
//!   force. The journal is never ahead of the remote: a batch is recorded
//!   only after its push went through. A crash before that leaves
//!   unreachable blobs in the mirror and nothing on the remote.
//! - A refused push means someone else pushed: the tip is fetched again.
//!   When the other commits touched none of the paths of the batch, the
//!   batch is committed again on the new tip (every step's expectation
//!   still holds there); otherwise the batch is dropped and the error is
//!   [`ReplicaError::Changed`] (naming the path in the pair): nothing of
//!   the batch is recorded, and the run plans again at once from the new
//!   tip, where a path both sides changed is a conflict like on any
//!   remote. Never a force push, never a merge commit. So no lease
//!   is needed: the push is the compare-and-swap.
//! - Deletions and replacements need no trash: the history keeps every
//!   version.
//! - Git holds no empty folders. `mkdir` succeeds without a commit, and a
//!   folder the base knows stays listed while nothing is below it, so an
//!   empty folder is neither deleted on this device nor carried to others.
//! - Symbolic links and submodules in the tree are not synced: they are
//!   held (left alone) with a problem saying so.
//! - Executable files stay executable when replaced; new files are
//!   `100644`.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Mutex;

use super::command::GitError;
use super::mirror::{DEFAULT_BRANCH, Mirror, Pushed, RECORDS_REF, REMOTE_RECORDS_REF, TIP_REF};
use super::settings::GitPairSettings;
use super::view::{Blob, View, changed, within};
use crate::fsops::Expect;
use crate::locks::LockExt;
use crate::model::{BaseTree, ContentHash, Entry, FileMeta, Mode, RelPath, Scope, SideEntry};
use crate::remote::{KeptVersion, Listing, Replica, ReplicaError, RootState, StagedWrite};
use crate::tracker::ignore::IgnoreRules;

/// How many times a push refused because the remote moved is tried again
/// on the new tip before the batch is given up (and re-planned).
const PUSH_ATTEMPTS: usize = 5;

/// Past this many loose objects (every staged blob is one), the mirror is
/// packed when the agent purges trash: git's own `gc.auto` is off for
/// every call, so no gc starts in the middle of a sync.
const LOOSE_OBJECTS_LIMIT: u64 = 6700;

/// Leftovers of a crash (private indexes, staged content) older than this
/// are removed; younger ones may belong to a write in progress.
const STALE_LEFTOVER: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// The largest record read.
const MAX_RECORD_BYTES: usize = 64 * 1024 * 1024;

/// A `git+URL` remote.
pub struct GitReplica {
    pub(super) mirror: Mirror,
    pub(super) settings: GitPairSettings,
    pub(super) device: String,
    /// The branch, once resolved (configured, or the remote's default).
    pub(super) branch: Mutex<Option<String>>,
    pub(super) view: Mutex<View>,
    /// Content hashes of blobs read before, by blob id.
    pub(super) hashes: Mutex<HashMap<String, ContentHash>>,
    /// Sizes of blobs, by blob id (see `listing`).
    pub(super) sizes: Mutex<HashMap<String, u64>>,
    /// Record writes go one at a time.
    pub(super) records: Mutex<()>,
    /// The tip `root_state` just fetched, for the listing that follows it
    /// (a sync looks at the root, then lists): one `ls-remote` for both.
    pub(super) checked: Mutex<Option<(std::time::Instant, Option<String>)>>,
    /// The change marker of the latest `refresh` (see `marker_of`): what
    /// the mirror's refs were brought to.
    pub(super) refreshed: Mutex<Option<String>>,
    /// Where staged content is written before it becomes a blob.
    pub(super) staging: PathBuf,
}

impl GitReplica {
    /// A replica of `url` (after `git+`) whose mirror is `git_dir`. Nothing
    /// is contacted or created yet.
    pub fn new(url: &str, git_dir: PathBuf, settings: GitPairSettings, device: &str) -> GitReplica {
        let staging = git_dir.join("prism-staging");
        GitReplica {
            mirror: Mirror::new(git_dir, url.to_owned()),
            settings,
            device: device.to_owned(),
            branch: Mutex::new(None),
            view: Mutex::new(View::default()),
            hashes: Mutex::new(HashMap::new()),
            sizes: Mutex::new(HashMap::new()),
            records: Mutex::new(()),
            checked: Mutex::new(None),
            refreshed: Mutex::new(None),
            staging,
        }
    }

    /// The replica of a configured pair, its mirror in `state_dir`.
    pub fn for_pair(
        pair: &str,
        url: &str,
        settings: &GitPairSettings,
        state_dir: &std::path::Path,
        device: &str,
    ) -> GitReplica {
        GitReplica::new(
            url,
            mirror_dir(state_dir, pair, url),
            settings.clone(),
            device,
        )
    }

    /// The repository path of `rel` (below the synced folder).
    pub(super) fn repo_path(&self, rel: &str) -> String {
        match &self.settings.path {
            Some(prefix) => format!("{prefix}/{rel}"),
            None => rel.to_owned(),
        }
    }

    pub(super) fn author(&self) -> (String, String) {
        let name = self
            .settings
            .author_name
            .clone()
            .unwrap_or_else(|| self.device.clone());
        let email = self.settings.author_email.clone().unwrap_or_else(|| {
            let local: String = self
                .device
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || "._-".contains(c) {
                        c
                    } else {
                        '-'
                    }
                })
                .collect();
            format!("{local}@prism-sync.invalid")
        });
        (name, email)
    }

    /// Asks the remote what moved and fetches what did; resolves the
    /// branch the first time. Returns the tip and the records commit.
    pub(super) fn refresh(&self) -> Result<(Option<String>, Option<String>), ReplicaError> {
        self.mirror.ensure()?;
        let seen = self.mirror.advertised()?;
        let mut have = self.mirror.local_refs()?;
        if let Some(oid) = seen.heads.values().chain(&seen.records).next() {
            // The mirror's refs are in its object format: one as long as
            // the remote's ids says the formats match without asking.
            let same_format = have.values().next().is_some_and(|h| h.len() == oid.len());
            if !same_format && self.mirror.match_format(oid)? {
                have.clear();
            }
        }
        let branch = self.resolve_branch(&seen)?;
        let tip = self.mirror.follow(
            &format!("refs/heads/{branch}"),
            TIP_REF,
            seen.heads.get(&branch).map(String::as_str),
            have.remove(TIP_REF),
        )?;
        let records = self.mirror.follow(
            REMOTE_RECORDS_REF,
            RECORDS_REF,
            seen.records.as_deref(),
            have.remove(RECORDS_REF),
        )?;
        // From what was fetched, not from what `ls-remote` showed: a ref
        // reset between the two would otherwise vouch for commits that
        // were never listed.
        *self.refreshed.locked() = Some(marker_of(tip.as_deref(), records.as_deref()));
        Ok((tip, records))
    }

    pub(super) fn resolve_branch(
        &self,
        seen: &super::mirror::Advertised,
    ) -> Result<String, ReplicaError> {
        let mut slot = self.branch.locked();
        if let Some(branch) = slot.as_ref() {
            return Ok(branch.clone());
        }
        let shown = self.mirror.shown();
        let branches = || {
            seen.heads
                .keys()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let branch = match &self.settings.branch {
            Some(branch) if seen.heads.contains_key(branch) || seen.heads.is_empty() => {
                branch.clone()
            }
            Some(branch) => {
                return Err(ReplicaError::Other(format!(
                    "{shown} has no branch {branch:?} (it has {}); set the pair's `branch` to \
                     one of them, or create {branch:?} there",
                    branches()
                )));
            }
            None => match &seen.head {
                Some(head) if seen.heads.contains_key(head) => head.clone(),
                _ if seen.heads.is_empty() => DEFAULT_BRANCH.to_owned(),
                _ => {
                    return Err(ReplicaError::Other(format!(
                        "{shown} names no default branch; set the pair's `branch` to one of \
                         {}",
                        branches()
                    )));
                }
            },
        };
        *slot = Some(branch.clone());
        Ok(branch)
    }

    pub(super) fn branch(&self) -> Result<String, ReplicaError> {
        self.branch
            .locked()
            .clone()
            .ok_or_else(|| ReplicaError::Other("the git remote was not listed yet".into()))
    }

    /// Builds one commit on `parent` with `edits` (repository paths), in
    /// a private index that is removed afterwards.
    pub(super) fn build_commit(
        &self,
        parent: Option<&str>,
        edits: &[(String, Option<Blob>)],
        message: &str,
    ) -> Result<String, ReplicaError> {
        let git = &self.mirror.git;
        let index = git
            .git_dir()
            .join(format!("prism-index-{:016x}", fastrand::u64(..)));
        let result = (|| {
            let read = match parent {
                Some(parent) => git.call(["read-tree", parent]),
                None => git.call(["read-tree", "--empty"]),
            };
            read.env("GIT_INDEX_FILE", &index).run()?;
            let oid_len = match git
                .call(["rev-parse", "--show-object-format"])
                .text()?
                .as_str()
            {
                "sha256" => 64,
                _ => 40,
            };
            let mut info = Vec::new();
            for (path, edit) in edits {
                match edit {
                    Some(blob) => write!(info, "{} {}\t{path}\0", blob.mode, blob.oid),
                    // Mode 0 removes the path; the id is all zeros, as
                    // long as the repository's ids are.
                    None => write!(info, "0 {}\t{path}\0", "0".repeat(oid_len)),
                }
                .map_err(GitError::Io)?;
            }
            git.call(["update-index", "--replace", "-z", "--index-info"])
                .env("GIT_INDEX_FILE", &index)
                .input(info)
                .run()?;
            let tree = git
                .call(["write-tree"])
                .env("GIT_INDEX_FILE", &index)
                .text()?;
            let (name, email) = self.author();
            let mut args = vec!["commit-tree".to_owned(), tree];
            if let Some(parent) = parent {
                args.push("-p".into());
                args.push(parent.to_owned());
            }
            args.push("-m".into());
            args.push(message.to_owned());
            git.call(args)
                .env("GIT_AUTHOR_NAME", &name)
                .env("GIT_AUTHOR_EMAIL", &email)
                .env("GIT_COMMITTER_NAME", &name)
                .env("GIT_COMMITTER_EMAIL", &email)
                .text()
        })();
        let _ = std::fs::remove_file(&index);
        result.map_err(|e| self.mirror.local_error(e))
    }

    /// Pushes `edits` as one commit on the remote `remote_ref` whose
    /// mirror copy is `local_ref`, starting from `parent`; after a refusal
    /// `again` is told the new parent and says whether the edits still
    /// apply there. Returns the commit pushed.
    pub(super) fn push_edits(
        &self,
        parent: Option<String>,
        edits: &[(String, Option<Blob>)],
        message: &str,
        (remote_ref, local_ref): (&str, &str),
        mut again: impl FnMut(Option<&str>, Option<&str>) -> Result<(), ReplicaError>,
    ) -> Result<String, ReplicaError> {
        let mut parent = parent;
        for _ in 0..PUSH_ATTEMPTS {
            let commit = self.build_commit(parent.as_deref(), edits, message)?;
            match self.mirror.push(&commit, remote_ref)? {
                Pushed::Done => {
                    self.mirror
                        .git
                        .call(["update-ref", local_ref, &commit])
                        .run()
                        .map_err(|e| self.mirror.local_error(e))?;
                    return Ok(commit);
                }
                Pushed::Rejected(said) => {
                    tracing::info!(remote = %self.mirror.shown(), "the remote moved on; fetching it to commit again on its tip");
                    self.mirror.fetch(remote_ref, local_ref)?;
                    let newer = self.mirror.local_ref(local_ref)?;
                    if newer == parent {
                        // Refused, yet nothing moved: not a race, and
                        // trying again would be refused again.
                        return Err(ReplicaError::Other(format!(
                            "{} refused the push: {said}",
                            self.mirror.shown()
                        )));
                    }
                    again(parent.as_deref(), newer.as_deref())?;
                    parent = newer;
                }
            }
        }
        Err(ReplicaError::Busy(format!(
            "{} moved on {PUSH_ATTEMPTS} times while a commit was pushed",
            self.mirror.shown()
        )))
    }

    /// The repository paths that differ between two commits.
    pub(super) fn changed_between(
        &self,
        old: Option<&str>,
        new: Option<&str>,
    ) -> Result<Vec<String>, ReplicaError> {
        let Some(new) = new else {
            return Ok(Vec::new());
        };
        let out = match old {
            Some(old) => self
                .mirror
                .git
                .call([
                    "diff-tree",
                    "-r",
                    "-z",
                    "--name-only",
                    "--no-renames",
                    old,
                    new,
                ])
                .run(),
            None => self
                .mirror
                .git
                .call(["ls-tree", "-r", "-z", "--name-only", "--full-tree", new])
                .run(),
        }
        .map_err(|e| self.mirror.local_error(e))?;
        Ok(out
            .split(|b| *b == 0)
            .filter(|r| !r.is_empty())
            .map(|r| String::from_utf8_lossy(r).into_owned())
            .collect())
    }
}

impl GitReplica {
    /// Packs the mirror's loose objects when there are more than
    /// `loose_limit` (unreachable ones, such as blobs of batches that were
    /// never pushed, go after git's two weeks), and removes what a crash
    /// left in it.
    pub(super) fn maintain(&self, loose_limit: u64) -> Result<(), ReplicaError> {
        self.mirror.ensure()?;
        let git_dir = self.mirror.git.git_dir().to_path_buf();
        let leftovers = std::fs::read_dir(&git_dir)
            .into_iter()
            .flatten()
            .chain(std::fs::read_dir(&self.staging).into_iter().flatten())
            .flatten()
            .filter(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                name.starts_with("prism-index-") || e.path().starts_with(&self.staging)
            });
        for entry in leftovers {
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > STALE_LEFTOVER);
            if old {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let counted = self
            .mirror
            .git
            .call(["count-objects", "-v"])
            .text()
            .map_err(|e| self.mirror.local_error(e))?;
        let loose: u64 = counted
            .lines()
            .find_map(|l| l.strip_prefix("count: "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
        if loose > loose_limit {
            self.mirror
                .git
                .call(["gc", "--quiet", "--prune=2.weeks.ago"])
                .run()
                .map_err(|e| self.mirror.local_error(e))?;
        }
        Ok(())
    }
}

/// The mirror of a pair's remote: one per pair and URL, so a pair whose
/// URL changes starts a fresh one.
pub fn mirror_dir(state_dir: &std::path::Path, pair: &str, url: &str) -> PathBuf {
    let key = blake3::hash(format!("{pair}\0{url}").as_bytes()).to_hex();
    state_dir.join("git").join(format!("{}.git", &key[..24]))
}

/// Removes the mirrors in `state_dir` that belong to none of `pairs`: a
/// pair that was removed, or whose URL changed, leaves its mirror behind.
/// A mirror holds nothing the remote lacks that anything depends on (a
/// batch is recorded only once its push went through), so removing it
/// loses nothing; a pair that comes back fetches again. Returns what was
/// removed; only folders named as [`mirror_dir`] names them are touched.
pub fn remove_stale_mirrors(
    state_dir: &std::path::Path,
    pairs: &[crate::config::PairConfig],
) -> Vec<PathBuf> {
    let keep: Vec<PathBuf> = pairs
        .iter()
        .filter_map(|pair| {
            let git = pair.remote.url().get::<super::settings::GitUrl>()?;
            Some(mirror_dir(state_dir, &pair.name, &git.url))
        })
        .collect();
    remove_mirrors_but(&state_dir.join("git"), &keep)
}

/// Removes the mirrors in `dir` that `keep` does not name.
pub(super) fn remove_mirrors_but(dir: &std::path::Path, keep: &[PathBuf]) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let is_mirror = entry.file_name().to_str().is_some_and(|name| {
            name.strip_suffix(".git")
                .is_some_and(|key| key.len() == 24 && key.bytes().all(|b| b.is_ascii_hexdigit()))
        });
        // Not followed if it is a link: only the agent's own folders go.
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if !is_mirror || !is_dir || keep.contains(&path) {
            continue;
        }
        match std::fs::remove_dir_all(&path) {
            Ok(()) => {
                tracing::info!(mirror = %path.display(), "removed the git mirror of a pair that is gone");
                removed.push(path);
            }
            Err(e) => {
                tracing::warn!(mirror = %path.display(), error = %e, "cannot remove the git mirror of a pair that is gone");
            }
        }
    }
    removed
}

/// The branch tip and the records commit as one change marker: equal
/// markers mean the same commits, so the same trees.
fn marker_of(tip: Option<&str>, records: Option<&str>) -> String {
    format!("{} {}", tip.unwrap_or("-"), records.unwrap_or("-"))
}

impl Replica for GitReplica {
    fn describe(&self) -> String {
        match &self.settings.branch {
            Some(branch) => format!("{} ({branch})", self.mirror.shown()),
            None => self.mirror.shown().to_owned(),
        }
    }

    /// One `ls-remote`, and nothing fetched: the branch tip and the
    /// records ref stand for the whole remote (a commit id names its whole
    /// tree). Before the first refresh the branch is not known: `None`.
    fn change_marker(&self) -> Result<Option<String>, ReplicaError> {
        let Some(branch) = self.branch.locked().clone() else {
            return Ok(None);
        };
        let seen = self.mirror.advertised()?;
        Ok(Some(marker_of(
            seen.heads.get(&branch).map(String::as_str),
            seen.records.as_deref(),
        )))
    }

    fn listed_marker(&self) -> Option<String> {
        self.refreshed.locked().clone()
    }

    fn root_state(&self) -> Result<RootState, ReplicaError> {
        let (tip, _) = self.refresh()?;
        *self.checked.locked() = Some((std::time::Instant::now(), tip));
        Ok(match self.record_blob("root")? {
            Some(_) => RootState::Ready,
            None => RootState::Unmarked,
        })
    }

    fn mark_root(&self) -> Result<(), ReplicaError> {
        self.write_record(
            "root",
            "This repository is kept in sync by Prism Sync. Without this record the agent \
             treats the remote as new and refuses to sync deletions.\n",
        )
    }

    fn list(
        &self,
        scope: &Scope,
        cache: &BaseTree,
        ignore: &IgnoreRules,
    ) -> Result<Listing, ReplicaError> {
        self.listing(scope, cache, ignore)
    }

    /// From the tip last listed plus the batch so far: what the steps on
    /// `path` check against. A link or submodule reads as a file no step
    /// acts on (it has no blob id the steps would accept).
    fn stat(&self, path: &RelPath) -> Result<Expect, ReplicaError> {
        let mut view = self.view.locked();
        let p = path.as_str();
        if let Some(blob) = view.current(p).cloned() {
            return Ok(Expect::File {
                size: blob.size,
                mtime_ns: self.tip_time(&mut view)?,
                mode: None,
                version: Some(blob.oid),
            });
        }
        if view.others.contains(p) {
            return Ok(Expect::File {
                size: 0,
                mtime_ns: self.tip_time(&mut view)?,
                mode: None,
                version: Some(String::new()),
            });
        }
        if !view.below(p).is_empty() || view.has_other_at_or_below(p) {
            return Ok(Expect::Dir);
        }
        Ok(Expect::Absent)
    }

    fn open(&self, path: &RelPath) -> Result<Box<dyn Read + Send + '_>, ReplicaError> {
        let oid = self
            .view
            .locked()
            .current(path.as_str())
            .map(|b| b.oid.clone())
            .ok_or_else(|| ReplicaError::SourceChanged {
                path: path.to_string(),
            })?;
        let stream = self
            .mirror
            .git
            .call(["cat-file", "blob", &oid])
            .stream()
            .map_err(|e| self.mirror.local_error(e))?;
        Ok(Box::new(stream))
    }

    /// Streams `content` to a file in the mirror while hashing it, then
    /// makes it a blob (`hash-object -w`): nothing is visible yet.
    fn stage(
        &self,
        path: &RelPath,
        content: &mut dyn Read,
        hash: &ContentHash,
        mtime_ns: i64,
        _mode: Option<Mode>,
    ) -> Result<StagedWrite, ReplicaError> {
        self.mirror.ensure()?;
        std::fs::create_dir_all(&self.staging)
            .map_err(|e| ReplicaError::io("create", self.staging.display(), e))?;
        let temp = self.staging.join(format!("{:016x}", fastrand::u64(..)));
        let staged = (|| {
            let mut file = std::fs::File::create(&temp)
                .map_err(|e| ReplicaError::io("create", temp.display(), e))?;
            let mut hasher = blake3::Hasher::new();
            let mut buf = vec![0u8; 256 * 1024];
            let mut size = 0u64;
            loop {
                let n = content
                    .read(&mut buf)
                    .map_err(|e| ReplicaError::io("read", path, e))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                file.write_all(&buf[..n])
                    .map_err(|e| ReplicaError::io("write", temp.display(), e))?;
                size += n as u64;
            }
            if ContentHash(*hasher.finalize().as_bytes()) != *hash {
                return Err(ReplicaError::SourceChanged {
                    path: path.to_string(),
                });
            }
            drop(file);
            let oid = self
                .mirror
                .git
                .call(["hash-object", "-w", "--no-filters", "--"])
                .arg(&temp)
                .text()
                .map_err(|e| self.mirror.local_error(e))?;
            Ok((oid, size))
        })();
        let _ = std::fs::remove_file(&temp);
        let (oid, size) = staged?;
        self.hashes.locked().insert(oid.clone(), *hash);
        self.sizes.locked().insert(oid.clone(), size);
        Ok(StagedWrite {
            path: path.clone(),
            temp: staged_handle(&oid, mtime_ns),
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
        let path = &staged.path;
        let (oid, mtime_ns) = parse_staged_handle(&staged.temp).ok_or_else(|| {
            ReplicaError::Other(format!("{path}: not a write staged in a git mirror"))
        })?;
        let mut view = self.view.locked();
        view.check(path, expect)?;
        if matches!(expect, Expect::Dir) && !view.below(path.as_str()).is_empty() {
            return Err(changed(path));
        }
        let mode = match view.current(path.as_str()) {
            Some(old) if old.mode == "100755" => "100755",
            _ => "100644",
        };
        let blob = Blob {
            mode: mode.to_owned(),
            oid: oid.clone(),
            size: staged.size,
        };
        view.set(path.as_str(), Some(blob));
        Ok(SideEntry {
            entry: Entry::File(FileMeta {
                hash: staged.hash,
                size: staged.size,
                mtime_ns,
                mode: None,
            }),
            id: None,
            version: Some(oid.into()),
        })
    }

    /// The blob stays unreachable in the mirror until git's own gc.
    fn discard(&self, _staged: StagedWrite) {}

    fn mkdir(&self, path: &RelPath, _mode: Option<Mode>) -> Result<SideEntry, ReplicaError> {
        let view = self.view.locked();
        if view.blocked_above(path)
            || view.current(path.as_str()).is_some()
            || view.others.contains(path.as_str())
        {
            return Err(changed(path));
        }
        Ok(SideEntry::new(Entry::dir(None)))
    }

    fn rename(&self, from: &RelPath, to: &RelPath, expect: &Expect) -> Result<(), ReplicaError> {
        let mut view = self.view.locked();
        if view.blocked_above(to) || view.occupied(to.as_str()) {
            return Err(changed(to));
        }
        match expect {
            Expect::Absent => Err(changed(from)),
            Expect::File { .. } => {
                view.check(from, expect)?;
                let blob = view.current(from.as_str()).cloned();
                view.set(from.as_str(), None);
                view.set(to.as_str(), blob);
                view.moves.push((from.to_string(), to.to_string(), false));
                Ok(())
            }
            Expect::Dir => {
                view.check(from, expect)?;
                let inside = view.below(from.as_str());
                for (path, blob) in inside {
                    let rest = &path[from.as_str().len()..];
                    view.set(&path, None);
                    view.set(&format!("{to}{rest}"), Some(blob));
                }
                view.moves.push((from.to_string(), to.to_string(), true));
                Ok(())
            }
        }
    }

    fn remove(&self, path: &RelPath, expect: &Expect) -> Result<(), ReplicaError> {
        let mut view = self.view.locked();
        match expect {
            Expect::Absent => {
                if view.occupied(path.as_str()) {
                    Err(changed(path))
                } else {
                    Ok(())
                }
            }
            Expect::File { .. } => {
                view.check(path, expect)?;
                view.set(path.as_str(), None);
                Ok(())
            }
            Expect::Dir => {
                view.check(path, expect)?;
                if view.below(path.as_str()).is_empty() {
                    Ok(())
                } else {
                    Err(changed(path))
                }
            }
        }
    }

    /// Commits the steps done since the last flush as one commit and
    /// pushes it (see the module comment for a refused push).
    fn flush(&self) -> Result<(), ReplicaError> {
        let mut view = self.view.locked();
        if view.pending.is_empty() {
            view.moves.clear();
            return Ok(());
        }
        let branch = self.branch()?;
        let message = view.summary(&self.device);
        let edits: Vec<(String, Option<Blob>)> = view
            .pending
            .iter()
            .map(|(path, edit)| (self.repo_path(path), edit.clone()))
            .collect();
        // (repository path, path in the pair): the clash is checked on
        // the first, reported as the second, which the engine re-plans.
        let ours: Vec<(String, &String)> = edits
            .iter()
            .zip(view.pending.keys())
            .map(|((repo, _), rel)| (repo.clone(), rel))
            .collect();
        let mut clash: Option<String> = None;
        let mut rebased = false;
        let pushed = self.push_edits(
            view.tip.clone(),
            &edits,
            &message,
            (&format!("refs/heads/{branch}"), TIP_REF),
            |old, new| {
                let theirs = self.changed_between(old, new)?;
                // Ours and theirs clash when one is the other or lies
                // inside it (a file where the other made a folder).
                let hit = ours
                    .iter()
                    .find(|(mine, _)| theirs.iter().any(|t| within(t, mine) || within(mine, t)));
                match hit {
                    Some((_, path)) => {
                        clash = Some((*path).clone());
                        Err(changed(path))
                    }
                    None => {
                        rebased = true;
                        Ok(())
                    }
                }
            },
        );
        match pushed {
            Ok(commit) => {
                let pending = std::mem::take(&mut view.pending);
                view.moves.clear();
                if rebased {
                    // The commit carries others' files too: read its tree.
                    self.load(&mut view, Some(commit))?;
                    return Ok(());
                }
                for (path, edit) in pending {
                    match edit {
                        Some(blob) => view.files.insert(path, blob),
                        None => view.files.remove(&path),
                    };
                }
                view.tip = Some(commit);
                // The new commit's time, read when next asked for.
                view.time_ns = None;
                Ok(())
            }
            Err(e) => {
                // Nothing of the batch is on the remote: it is dropped, and
                // the next listing starts from the remote's tip.
                view.pending.clear();
                view.moves.clear();
                view.tip = None;
                view.files.clear();
                view.others.clear();
                view.problems.clear();
                if let Some(path) = clash {
                    tracing::info!(remote = %self.mirror.shown(), path = %path, "another commit changed a path of this batch; re-planning");
                }
                Err(e)
            }
        }
    }

    /// The commits of the branch that left a version of `path`.
    fn kept_versions(
        &self,
        path: &RelPath,
        limit: usize,
    ) -> Result<Vec<KeptVersion>, ReplicaError> {
        self.history_of(path, limit)
    }

    fn open_kept(
        &self,
        path: &RelPath,
        version: &str,
    ) -> Result<Box<dyn Read + Send + '_>, ReplicaError> {
        self.open_at_commit(path, version)
    }

    /// A git remote keeps no trash (the history holds old versions): this
    /// is when its mirror is tidied instead.
    fn purge_trash(&self, _older_than: std::time::Duration) -> Result<usize, ReplicaError> {
        self.maintain(LOOSE_OBJECTS_LIMIT)?;
        Ok(0)
    }

    fn read_record(&self, name: &str) -> Result<Option<String>, ReplicaError> {
        self.mirror.ensure()?;
        let Some(bytes) = self.record_content(name, MAX_RECORD_BYTES)? else {
            return Ok(None);
        };
        String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| ReplicaError::Other(format!("the record {name} is not UTF-8 text")))
    }

    /// One commit on the records ref: a reader sees the old record or the
    /// new one.
    fn write_record(&self, name: &str, content: &str) -> Result<(), ReplicaError> {
        self.edit_record(name, Some(content))
    }

    fn list_records(&self, folder: &str) -> Result<Vec<String>, ReplicaError> {
        self.mirror.ensure()?;
        let folder = folder.trim_end_matches('/');
        let out = self
            .mirror
            .git
            .call([
                "ls-tree",
                "-z",
                "--name-only",
                &format!("{RECORDS_REF}:{folder}"),
            ])
            .run();
        let Ok(out) = out else {
            // No records, or no such folder in them.
            return Ok(Vec::new());
        };
        Ok(out
            .split(|b| *b == 0)
            .filter(|r| !r.is_empty())
            .map(|r| String::from_utf8_lossy(r).into_owned())
            .filter(|name| crate::remote::is_record_name(name))
            .collect())
    }

    fn remove_record(&self, name: &str) -> Result<(), ReplicaError> {
        self.edit_record(name, None)
    }
}

/// A staged write's handle: the blob and the modification time to report.
fn staged_handle(oid: &str, mtime_ns: i64) -> PathBuf {
    PathBuf::from(format!("git-blob/{oid}/{mtime_ns}"))
}

fn parse_staged_handle(handle: &std::path::Path) -> Option<(String, i64)> {
    let text = handle.to_str()?;
    let rest = text.strip_prefix("git-blob/")?;
    let (oid, mtime) = rest.split_once('/')?;
    Some((oid.to_owned(), mtime.parse().ok()?))
}
