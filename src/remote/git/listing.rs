//! The listing of a git remote: the tree of the branch tip (one
//! `ls-tree -r`) turned into a side tree, hashes from the base where the
//! blob is the base's version token, else read once (`cat-file --batch`)
//! and remembered by blob id.
//!
//! Sizes are not asked of `ls-tree` (`-l`): that opens every blob, and a
//! mirror's blobs are mostly loose objects (each staged write is one), so
//! on 10,000 files it cost ten times the rest of the listing. A blob id
//! names its content, so a size known for that id (from the base, from a
//! write staged here, from a listing before) is its size; the others are
//! asked for at once (`cat-file --batch-check`).

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Read};

use super::replica::GitReplica;
use super::view::{Blob, View};
use crate::locks::LockExt;
use crate::model::{BaseTree, ContentHash, Entry, FileMeta, RelPath, Scope, SideEntry};
use crate::remote::{Listing, Problem, ReplicaError};
use crate::tracker::ignore::{IgnoreRules, METADATA_DIR};

/// How long the remote's state `root_state` fetched stands for the
/// listing after it.
const CHECK_REUSE: std::time::Duration = std::time::Duration::from_secs(2);

impl GitReplica {
    /// Reads the tree of `tip` (below `path`) into `view`, unless the view
    /// already shows that tip. Pending edits go either way: a listing
    /// starts a new plan.
    pub(super) fn load(&self, view: &mut View, tip: Option<String>) -> Result<(), ReplicaError> {
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
            let mut args = vec![
                "ls-tree".to_owned(),
                "-r".into(),
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
                let (mode, kind, oid) = (
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
                            size: 0,
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
        let sizes = self.blob_sizes(loaded.files.values().map(|b| b.oid.as_str()))?;
        for blob in loaded.files.values_mut() {
            blob.size = sizes[&blob.oid];
        }
        loaded.problems = problems;
        *view = loaded;
        // What the new tip does not hold is forgotten: an agent that runs
        // for months would otherwise keep every blob id it ever saw.
        let held: std::collections::HashSet<&str> =
            view.files.values().map(|b| b.oid.as_str()).collect();
        self.sizes
            .locked()
            .retain(|oid, _| held.contains(oid.as_str()));
        self.hashes
            .locked()
            .retain(|oid, _| held.contains(oid.as_str()));
        Ok(())
    }

    /// The sizes of the blobs `oids`: known ones from memory, the others
    /// asked for in one `cat-file --batch-check` and remembered.
    fn blob_sizes<'a>(
        &self,
        oids: impl Iterator<Item = &'a str>,
    ) -> Result<HashMap<String, u64>, ReplicaError> {
        let mut found = HashMap::new();
        let mut unknown = Vec::new();
        {
            let sizes = self.sizes.locked();
            for oid in oids {
                match sizes.get(oid) {
                    Some(size) => {
                        found.insert(oid.to_owned(), *size);
                    }
                    None => unknown.push(oid),
                }
            }
        }
        unknown.sort_unstable();
        unknown.dedup();
        if unknown.is_empty() {
            return Ok(found);
        }
        let mut input = unknown.join("\n");
        input.push('\n');
        let out = self
            .mirror
            .git
            .call(["cat-file", "--batch-check"])
            .input(input.into_bytes())
            .text()
            .map_err(|e| self.mirror.local_error(e))?;
        let broken =
            |what: &str| ReplicaError::Other(format!("reading blob sizes of the mirror: {what}"));
        let mut sizes = self.sizes.locked();
        for line in out.lines() {
            // `OID blob SIZE`, or `OID missing`.
            let mut fields = line.split_whitespace();
            let (Some(oid), Some("blob"), Some(size)) =
                (fields.next(), fields.next(), fields.next())
            else {
                return Err(broken(line));
            };
            let size: u64 = size.parse().map_err(|_| broken(line))?;
            sizes.insert(oid.to_owned(), size);
            found.insert(oid.to_owned(), size);
        }
        match unknown.iter().find(|oid| !found.contains_key(**oid)) {
            Some(oid) => Err(broken(&format!("no answer for {oid}"))),
            None => Ok(found),
        }
    }

    /// Remembers the sizes the base knows for the blobs that are its
    /// remote versions.
    fn learn_sizes(&self, cache: &BaseTree) {
        let mut sizes = self.sizes.locked();
        for base in cache.values() {
            if let (Some(version), Some(file)) = (&base.remote_version, base.entry.file()) {
                sizes
                    .entry(version.as_str().into_owned())
                    .or_insert(file.size);
            }
        }
    }

    /// The tip's commit time in nanoseconds, read when first asked for:
    /// a listing whose files all come from the base needs none.
    pub(super) fn tip_time(&self, view: &mut View) -> Result<i64, ReplicaError> {
        if let Some(time_ns) = view.time_ns {
            return Ok(time_ns);
        }
        let time_ns = match &view.tip {
            Some(tip) => {
                // `cat-file`, not `show`: a user's `log.showSignature` would
                // put a signature check before `show`'s answer.
                let commit = self
                    .mirror
                    .git
                    .call(["cat-file", "commit", tip])
                    .text()
                    .map_err(|e| self.mirror.local_error(e))?;
                committer_time(&commit).unwrap_or(0) * 1_000_000_000
            }
            None => 0,
        };
        view.time_ns = Some(time_ns);
        Ok(time_ns)
    }

    /// Hashes of the blobs in `oids` not yet known, reading each once.
    pub(super) fn hash_blobs(
        &self,
        oids: &[String],
    ) -> Result<HashMap<String, ContentHash>, ReplicaError> {
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

    /// The listing of `scope` (what `Replica::list` answers).
    pub(super) fn listing(
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
        // Only a tip not loaded yet needs sizes: an unchanged one keeps
        // its view, sizes and all.
        if view.tip != tip {
            self.learn_sizes(cache);
        }
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
                    if base
                        .remote_version
                        .as_ref()
                        .is_some_and(|v| *v == *blob.oid)
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
        let time_ns = if from_base.len() < files.len() {
            self.tip_time(&mut view)?
        } else {
            0
        };
        for (rel, blob) in files {
            let meta = match from_base.remove(&rel) {
                Some(meta) => meta,
                None => FileMeta {
                    hash: hashes[&blob.oid],
                    size: blob.size,
                    mtime_ns: time_ns,
                    mode: None,
                },
            };
            out.tree.insert(
                rel,
                SideEntry {
                    entry: Entry::File(meta),
                    id: None,
                    version: Some(blob.oid.into()),
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
