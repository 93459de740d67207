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
//!   [`ReplicaError::Changed`]: nothing is recorded, and the next sync plans
//!   from the new tip, where a path both sides changed is a conflict like
//!   on any remote. Never a force push, never a merge commit. So no lease
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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::sync::Mutex;

use super::command::GitError;
use super::mirror::{DEFAULT_BRANCH, Mirror, Pushed, RECORDS_REF, REMOTE_RECORDS_REF, TIP_REF};
use super::settings::GitPairSettings;
use crate::fsops::Expect;
use crate::locks::LockExt;
use crate::model::{BaseTree, ContentHash, Entry, FileMeta, Mode, RelPath, Scope, SideEntry};
use crate::remote::{Listing, Problem, Replica, ReplicaError, RootState, StagedWrite};
use crate::tracker::ignore::{IgnoreRules, METADATA_DIR};

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

/// How long the remote's state `root_state` fetched stands for the
/// listing after it.
const CHECK_REUSE: std::time::Duration = std::time::Duration::from_secs(2);

/// The largest record read.
const MAX_RECORD_BYTES: usize = 64 * 1024 * 1024;

/// A file in the tree: its mode (`100644`, `100755`), blob id and size.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Blob {
    mode: String,
    oid: String,
    size: u64,
}

/// The tip as listed, and the steps done on it since.
#[derive(Default)]
struct View {
    /// The commit the view is built on; `None`: the branch does not exist
    /// yet (an empty repository).
    tip: Option<String>,
    /// Files below the synced folder, by path relative to it.
    files: BTreeMap<String, Blob>,
    /// Entries that are not synced (links, submodules): they occupy their
    /// name.
    others: BTreeSet<String>,
    /// The tip's commit time: the modification time of a version whose
    /// own time is not known.
    time_ns: i64,
    /// Edits not pushed yet: a blob, or `None` for a removal.
    pending: BTreeMap<String, Option<Blob>>,
    /// Moves of the pending batch (from, to, whether a folder), for the
    /// commit message.
    moves: Vec<(String, String, bool)>,
    /// What the tree holds that is not synced, for every listing of it.
    problems: Vec<Problem>,
}

impl View {
    fn current(&self, path: &str) -> Option<&Blob> {
        match self.pending.get(path) {
            Some(edit) => edit.as_ref(),
            None => self.files.get(path),
        }
    }

    /// The current files strictly below `dir`.
    fn below(&self, dir: &str) -> Vec<(String, Blob)> {
        let prefix = format!("{dir}/");
        let mut found: BTreeMap<String, Blob> = self
            .files
            .range(prefix.clone()..)
            .take_while(|(p, _)| p.starts_with(&prefix))
            .map(|(p, b)| (p.clone(), b.clone()))
            .collect();
        for (path, edit) in self
            .pending
            .range(prefix.clone()..)
            .take_while(|(p, _)| p.starts_with(&prefix))
        {
            match edit {
                Some(blob) => found.insert(path.clone(), blob.clone()),
                None => found.remove(path),
            };
        }
        found.into_iter().collect()
    }

    fn has_other_at_or_below(&self, path: &str) -> bool {
        let prefix = format!("{path}/");
        self.others.contains(path)
            || self
                .others
                .range(prefix.clone()..)
                .next()
                .is_some_and(|p| p.starts_with(&prefix))
    }

    /// Whether a file (or link) holds the name of a folder above `path`.
    fn blocked_above(&self, path: &RelPath) -> bool {
        path.ancestors()
            .any(|a| self.current(a.as_str()).is_some() || self.others.contains(a.as_str()))
    }

    fn occupied(&self, path: &str) -> bool {
        self.current(path).is_some()
            || self.has_other_at_or_below(path)
            || !self.below(path).is_empty()
    }

    /// Checks that `path` is what a step expects.
    fn check(&self, path: &RelPath, expect: &Expect) -> Result<(), ReplicaError> {
        let p = path.as_str();
        if self.blocked_above(path) {
            return Err(changed(path));
        }
        let ok = match expect {
            Expect::Absent => !self.occupied(p),
            Expect::File { size, version, .. } => match self.current(p) {
                Some(blob) => match version {
                    Some(version) => blob.oid == *version,
                    None => blob.size == *size,
                },
                None => false,
            },
            Expect::Dir => self.current(p).is_none() && !self.has_other_at_or_below(p),
        };
        if ok { Ok(()) } else { Err(changed(path)) }
    }

    /// Notes an edit, dropping it when it brings back what the tip has.
    fn set(&mut self, path: &str, edit: Option<Blob>) {
        if self.files.get(path) == edit.as_ref() {
            self.pending.remove(path);
        } else {
            self.pending.insert(path.to_owned(), edit);
        }
    }

    /// `alpha: 3 modified, 1 added, docs/ → notes/`.
    fn summary(&self, device: &str) -> String {
        let (mut added, mut modified, mut deleted) = (0, 0, 0);
        for (path, edit) in &self.pending {
            let moved = self
                .moves
                .iter()
                .any(|(from, to, _)| within(path, from) || within(path, to));
            if moved {
                continue;
            }
            match (self.files.contains_key(path), edit) {
                (false, Some(_)) => added += 1,
                (true, Some(_)) => modified += 1,
                (true, None) => deleted += 1,
                (false, None) => {}
            }
        }
        let mut parts: Vec<String> = [
            (modified, "modified"),
            (added, "added"),
            (deleted, "deleted"),
        ]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
        for (from, to, folder) in &self.moves {
            let slash = if *folder { "/" } else { "" };
            parts.push(format!("{from}{slash} → {to}{slash}"));
        }
        if parts.is_empty() {
            parts.push("no changes".into());
        }
        format!("{device}: {}", parts.join(", "))
    }
}

fn within(path: &str, dir: &str) -> bool {
    path == dir || path.strip_prefix(dir).is_some_and(|r| r.starts_with('/'))
}

fn changed(path: impl std::fmt::Display) -> ReplicaError {
    ReplicaError::Changed {
        path: path.to_string(),
    }
}

/// A `git+URL` remote.
pub struct GitReplica {
    mirror: Mirror,
    settings: GitPairSettings,
    device: String,
    /// The branch, once resolved (configured, or the remote's default).
    branch: Mutex<Option<String>>,
    view: Mutex<View>,
    /// Content hashes of blobs read before, by blob id.
    hashes: Mutex<HashMap<String, ContentHash>>,
    /// Record writes go one at a time.
    records: Mutex<()>,
    /// The tip `root_state` just fetched, for the listing that follows it
    /// (a sync looks at the root, then lists): one `ls-remote` for both.
    checked: Mutex<Option<(std::time::Instant, Option<String>)>>,
    /// Where staged content is written before it becomes a blob.
    staging: PathBuf,
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
            records: Mutex::new(()),
            checked: Mutex::new(None),
            staging,
        }
    }

    /// The replica of a configured pair, its mirror in `state_dir`.
    pub fn for_pair(
        pair: &crate::config::PairConfig,
        url: &str,
        state_dir: &std::path::Path,
        device: &str,
    ) -> GitReplica {
        GitReplica::new(
            url,
            mirror_dir(state_dir, &pair.name, url),
            pair.git.clone(),
            device,
        )
    }

    /// The repository path of `rel` (below the synced folder).
    fn repo_path(&self, rel: &str) -> String {
        match &self.settings.path {
            Some(prefix) => format!("{prefix}/{rel}"),
            None => rel.to_owned(),
        }
    }

    fn author(&self) -> (String, String) {
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
    fn refresh(&self) -> Result<(Option<String>, Option<String>), ReplicaError> {
        self.mirror.ensure()?;
        let seen = self.mirror.advertised()?;
        if let Some(oid) = seen.heads.values().chain(&seen.records).next() {
            self.mirror.match_format(oid)?;
        }
        let branch = self.resolve_branch(&seen)?;
        let tip = self.mirror.follow(
            &format!("refs/heads/{branch}"),
            TIP_REF,
            seen.heads.get(&branch).map(String::as_str),
        )?;
        let records =
            self.mirror
                .follow(REMOTE_RECORDS_REF, RECORDS_REF, seen.records.as_deref())?;
        Ok((tip, records))
    }

    fn resolve_branch(&self, seen: &super::mirror::Advertised) -> Result<String, ReplicaError> {
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

    fn branch(&self) -> Result<String, ReplicaError> {
        self.branch
            .locked()
            .clone()
            .ok_or_else(|| ReplicaError::Other("the git remote was not listed yet".into()))
    }

    /// Reads the tree of `tip` (below `path`) into `view`, unless the view
    /// already shows that tip. Pending edits go either way: a listing
    /// starts a new plan.
    fn load(&self, view: &mut View, tip: Option<String>) -> Result<(), ReplicaError> {
        if !view.pending.is_empty() {
            tracing::warn!(
                remote = %self.mirror.shown(),
                edits = view.pending.len(),
                "dropping edits of a batch that was never pushed"
            );
            view.pending.clear();
        }
        view.moves.clear();
        if view.tip == tip && (tip.is_some() || view.files.is_empty()) {
            return Ok(());
        }
        let mut loaded = View {
            tip: tip.clone(),
            ..View::default()
        };
        let mut problems = Vec::new();
        if let Some(tip) = &tip {
            // `cat-file`, not `show`: a user's `log.showSignature` would
            // put a signature check before `show`'s answer.
            let commit = self
                .mirror
                .git
                .call(["cat-file", "commit", tip])
                .text()
                .map_err(|e| self.mirror.local_error(e))?;
            loaded.time_ns = committer_time(&commit).unwrap_or(0) * 1_000_000_000;
            let mut args = vec![
                "ls-tree".to_owned(),
                "-r".into(),
                "-l".into(),
                "-z".into(),
                "--full-tree".into(),
                tip.clone(),
            ];
            let prefix = self.settings.path.as_ref().map(|p| format!("{p}/"));
            if let Some(prefix) = &prefix {
                args.push("--".into());
                args.push(prefix.clone());
            }
            let out = self
                .mirror
                .git
                .call(args)
                .env("GIT_LITERAL_PATHSPECS", "1")
                .run()
                .map_err(|e| self.mirror.local_error(e))?;
            for record in out.split(|b| *b == 0).filter(|r| !r.is_empty()) {
                let Some(tab) = record.iter().position(|b| *b == b'\t') else {
                    continue;
                };
                let meta = String::from_utf8_lossy(&record[..tab]);
                let Ok(path) = std::str::from_utf8(&record[tab + 1..]) else {
                    problems.push(Problem {
                        path: None,
                        message: format!(
                            "the repository has a file whose name is not UTF-8 ({}); it is not \
                             synced",
                            String::from_utf8_lossy(&record[tab + 1..])
                        ),
                    });
                    continue;
                };
                let rel = match &prefix {
                    Some(prefix) => match path.strip_prefix(prefix.as_str()) {
                        Some(rel) => rel,
                        None => continue,
                    },
                    None => path,
                };
                let mut fields = meta.split_whitespace();
                let (mode, kind, oid, size) = (
                    fields.next().unwrap_or_default(),
                    fields.next().unwrap_or_default(),
                    fields.next().unwrap_or_default(),
                    fields.next().unwrap_or_default(),
                );
                if kind == "blob" && (mode == "100644" || mode == "100755") {
                    loaded.files.insert(
                        rel.to_owned(),
                        Blob {
                            mode: mode.to_owned(),
                            oid: oid.to_owned(),
                            size: size.parse().unwrap_or(0),
                        },
                    );
                } else {
                    let what = if mode == "120000" {
                        "a symbolic link"
                    } else {
                        "a submodule"
                    };
                    problems.push(Problem {
                        path: RelPath::new(rel).ok(),
                        message: format!(
                            "is {what} in the repository; Prism Sync leaves it alone (it is not \
                             synced)"
                        ),
                    });
                    loaded.others.insert(rel.to_owned());
                }
            }
        }
        loaded.problems = problems;
        *view = loaded;
        Ok(())
    }

    /// Hashes of the blobs in `oids` not yet known, reading each once.
    fn hash_blobs(&self, oids: &[String]) -> Result<HashMap<String, ContentHash>, ReplicaError> {
        let mut known = HashMap::new();
        let mut unknown = Vec::new();
        {
            let hashes = self.hashes.locked();
            for oid in oids {
                match hashes.get(oid) {
                    Some(hash) => {
                        known.insert(oid.clone(), *hash);
                    }
                    None => unknown.push(oid.clone()),
                }
            }
        }
        unknown.sort();
        unknown.dedup();
        if unknown.is_empty() {
            return Ok(known);
        }
        let mut input = unknown.join("\n");
        input.push('\n');
        let stream = self
            .mirror
            .git
            .call(["cat-file", "--batch"])
            .input(input.into_bytes())
            .stream()
            .map_err(|e| self.mirror.local_error(e))?;
        let mut reader = BufReader::new(stream);
        let broken =
            |what: &str| ReplicaError::Other(format!("reading blobs of the mirror: {what}"));
        for _ in &unknown {
            let mut header = String::new();
            reader
                .read_line(&mut header)
                .map_err(|e| ReplicaError::io("read", "the mirror", e))?;
            let mut fields = header.split_whitespace();
            let (Some(oid), Some("blob"), Some(size)) =
                (fields.next(), fields.next(), fields.next())
            else {
                return Err(broken(header.trim()));
            };
            let size: u64 = size.parse().map_err(|_| broken(header.trim()))?;
            let mut hasher = blake3::Hasher::new();
            let copied = std::io::copy(&mut (&mut reader).take(size), &mut hasher)
                .map_err(|e| ReplicaError::io("read", "the mirror", e))?;
            if copied != size {
                return Err(broken("a blob ended early"));
            }
            let mut newline = [0u8; 1];
            reader
                .read_exact(&mut newline)
                .map_err(|e| ReplicaError::io("read", "the mirror", e))?;
            let hash = ContentHash(*hasher.finalize().as_bytes());
            known.insert(oid.to_owned(), hash);
            self.hashes.locked().insert(oid.to_owned(), hash);
        }
        Ok(known)
    }

    /// Builds one commit on `parent` with `edits` (repository paths), in
    /// a private index that is removed afterwards.
    fn build_commit(
        &self,
        parent: Option<&str>,
        edits: &[(String, Option<Blob>)],
        message: &str,
    ) -> Result<String, ReplicaError> {
        let git = &self.mirror.git;
        let index = git
            .git_dir()
            .join(format!("prism-index-{}", crate::remote::trash_suffix()));
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
    fn push_edits(
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
    fn changed_between(
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

    /// A record's blob, if the records have it.
    fn record_blob(&self, name: &str) -> Result<Option<String>, ReplicaError> {
        let out = self
            .mirror
            .git
            .call([
                "rev-parse",
                "--verify",
                "--quiet",
                &format!("{RECORDS_REF}:{name}"),
            ])
            .text();
        match out {
            Ok(oid) if !oid.is_empty() => Ok(Some(oid)),
            _ => Ok(None),
        }
    }

    /// Writes (`Some`) or removes (`None`) one record in one commit on the
    /// records ref, again on the newer records when another agent pushed
    /// meanwhile (agents write records of their own, so the edit applies).
    fn edit_record(&self, name: &str, content: Option<&str>) -> Result<(), ReplicaError> {
        if name.is_empty()
            || name
                .split('/')
                .any(|s| s.is_empty() || s == "." || s == "..")
        {
            return Err(ReplicaError::Other(format!(
                "{name:?} is not a record name"
            )));
        }
        let _one_at_a_time = self.records.locked();
        self.mirror.ensure()?;
        let blob = match content {
            Some(content) => {
                let oid = self
                    .mirror
                    .git
                    .call(["hash-object", "-w", "--stdin", "--no-filters"])
                    .input(content.as_bytes().to_vec())
                    .text()
                    .map_err(|e| self.mirror.local_error(e))?;
                Some(Blob {
                    mode: "100644".into(),
                    oid,
                    size: content.len() as u64,
                })
            }
            None => {
                if self.record_blob(name)?.is_none() {
                    return Ok(());
                }
                None
            }
        };
        let parent = self.mirror.local_ref(RECORDS_REF)?;
        let verb = if content.is_some() { "write" } else { "remove" };
        let message = format!("{}: {verb} {name}", self.device);
        self.push_edits(
            parent,
            &[(name.to_owned(), blob)],
            &message,
            (REMOTE_RECORDS_REF, RECORDS_REF),
            |_, _| Ok(()),
        )?;
        Ok(())
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

impl Replica for GitReplica {
    fn describe(&self) -> String {
        match &self.settings.branch {
            Some(branch) => format!("{} ({branch})", self.mirror.shown()),
            None => self.mirror.shown().to_owned(),
        }
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
        // A look at the root a moment ago stands for this one; any later
        // listing asks the remote again.
        let checked = self.checked.locked().take();
        let tip = match checked {
            Some((at, tip)) if at.elapsed() < CHECK_REUSE => tip,
            _ => self.refresh()?.0,
        };
        let mut view = self.view.locked();
        let mut out = Listing {
            problems: {
                self.load(&mut view, tip)?;
                view.problems.clone()
            },
            ..Listing::default()
        };
        let roots: Option<&[RelPath]> = match scope {
            Scope::Full => None,
            Scope::Paths(paths) => Some(paths),
        };
        let in_scope =
            |rel: &RelPath| roots.is_none_or(|roots| roots.iter().any(|r| rel.is_within(r)));
        let mut dirs: BTreeSet<RelPath> = BTreeSet::new();
        let mut files: Vec<(RelPath, Blob)> = Vec::new();
        for (path, blob) in &view.files {
            let rel = match RelPath::new(path) {
                Ok(rel) => rel,
                Err(e) => {
                    out.problems.push(Problem {
                        path: None,
                        message: format!(
                            "the file {path:?} in the repository cannot be synced: {e}"
                        ),
                    });
                    continue;
                }
            };
            if rel.as_str().split('/').next() == Some(METADATA_DIR)
                || ignore.is_ignored(&rel, false)
                || !in_scope(&rel)
            {
                continue;
            }
            if rel.too_deep() {
                let first = rel
                    .ancestors()
                    .chain(std::iter::once(rel.clone()))
                    .find(RelPath::too_deep)
                    .unwrap_or_else(|| rel.clone());
                if !out.held.contains(&first) {
                    out.problems.push(Problem {
                        path: Some(first.clone()),
                        message: first.too_deep_message(),
                    });
                    out.held.push(first);
                }
                continue;
            }
            for ancestor in rel.ancestors() {
                if in_scope(&ancestor) {
                    dirs.insert(ancestor);
                }
            }
            files.push((rel, blob.clone()));
        }
        for other in &view.others {
            if let Ok(rel) = RelPath::new(other)
                && in_scope(&rel)
            {
                for ancestor in rel.ancestors() {
                    if in_scope(&ancestor) {
                        dirs.insert(ancestor);
                    }
                }
                out.held.push(rel);
            }
        }
        // Hashes: from the base where the blob is the base's version,
        // else known from before, else read.
        let mut from_base: HashMap<RelPath, FileMeta> = HashMap::new();
        let mut to_read = Vec::new();
        for (rel, blob) in &files {
            match cache.get(rel) {
                Some(base)
                    if base.remote_version.as_deref() == Some(blob.oid.as_str())
                        && base.entry.file().is_some_and(|f| f.size == blob.size) =>
                {
                    if let Some(meta) = base.entry.file() {
                        from_base.insert(
                            rel.clone(),
                            FileMeta {
                                mode: None,
                                ..*meta
                            },
                        );
                    }
                }
                _ => to_read.push(blob.oid.clone()),
            }
        }
        let before = self.hashes.locked().len();
        let hashes = self.hash_blobs(&to_read)?;
        out.hashed_files = (self.hashes.locked().len() - before) as u64;
        for (rel, blob) in files {
            let meta = match from_base.remove(&rel) {
                Some(meta) => meta,
                None => FileMeta {
                    hash: hashes[&blob.oid],
                    size: blob.size,
                    mtime_ns: view.time_ns,
                    mode: None,
                },
            };
            out.tree.insert(
                rel,
                SideEntry {
                    entry: Entry::File(meta),
                    id: None,
                    version: Some(blob.oid),
                },
            );
        }
        // Git holds no empty folders: one the base knows stays while
        // nothing took its name.
        for (path, base) in cache {
            if base.entry.is_dir()
                && in_scope(path)
                && !out.tree.contains_key(path)
                && !dirs.contains(path)
                && !view.blocked_above(path)
                && !view.others.contains(path.as_str())
                && !ignore.is_ignored(path, true)
            {
                dirs.insert(path.clone());
            }
        }
        for dir in dirs {
            if !out.held.iter().any(|h| dir.is_within(h)) && !out.tree.contains_key(&dir) {
                out.tree.insert(dir, SideEntry::new(Entry::dir(None)));
            }
        }
        out.held.sort();
        out.held.dedup();
        Ok(out)
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
        let temp = self.staging.join(format!(
            "{}-{}",
            crate::remote::trash_suffix(),
            fastrand::u64(..)
        ));
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
            version: Some(oid),
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
        let ours: Vec<String> = edits.iter().map(|(p, _)| p.clone()).collect();
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
                    .find(|mine| theirs.iter().any(|t| within(t, mine) || within(mine, t)));
                match hit {
                    Some(path) => {
                        clash = Some(path.clone());
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

    /// A git remote keeps no trash (the history holds old versions): this
    /// is when its mirror is tidied instead.
    fn purge_trash(&self, _older_than: std::time::Duration) -> Result<usize, ReplicaError> {
        self.maintain(LOOSE_OBJECTS_LIMIT)?;
        Ok(0)
    }

    fn read_record(&self, name: &str) -> Result<Option<String>, ReplicaError> {
        self.mirror.ensure()?;
        let Some(oid) = self.record_blob(name)? else {
            return Ok(None);
        };
        let bytes = self
            .mirror
            .git
            .call(["cat-file", "blob", &oid])
            .run()
            .map_err(|e| self.mirror.local_error(e))?;
        if bytes.len() > MAX_RECORD_BYTES {
            return Err(ReplicaError::Other(format!(
                "the record {name} is larger than {MAX_RECORD_BYTES} bytes"
            )));
        }
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

/// The committer time (seconds since the epoch) of a raw commit object.
fn committer_time(commit: &str) -> Option<i64> {
    let line = commit
        .lines()
        .take_while(|l| !l.is_empty())
        .find(|l| l.starts_with("committer "))?;
    // `committer NAME <EMAIL> SECONDS ZONE`
    line.rsplit(' ').nth(1)?.parse().ok()
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
