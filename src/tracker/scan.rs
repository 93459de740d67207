//! The scanner: a snapshot of a pair's local folder as a [`SideTree`].
//!
//! This module owns turning the file system into facts: which paths exist,
//! whether each is a folder or a file, and each file's hash, size, mtime and
//! inode. It reuses a hash from the base when size, mtime and inode say the
//! file is unchanged (also across a rename), so a rescan of an unchanged tree
//! reads no file. What it cannot state as a fact it *holds* (a file being
//! written, a folder it may not read) instead of reporting it absent, so
//! nothing is ever deleted because it was merely unreadable. It does not
//! decide what to sync, write anything, or follow symbolic links.

use std::fs::{self, DirEntry, File, Metadata};
use std::io;
use std::path::{Path, PathBuf};

use crate::model::{
    BaseEntry, BaseTree, ContentHash, Entry, FileId, FileMeta, RelPath, Scope, SideEntry, SideTree,
    map_from_list,
};
use crate::parallel;
use crate::tracker::hash::HashingReader;
use crate::tracker::ignore::{IgnoreRules, is_temp_name};

/// What to scan, and what is known from the last sync.
pub struct ScanRequest<'a> {
    /// The pair's local root folder.
    pub root: &'a Path,
    pub scope: &'a Scope,
    pub ignore: &'a IgnoreRules,
    /// The base: hashes in it are reused for files whose size, mtime and
    /// inode are unchanged.
    pub cache: &'a BaseTree,
    /// What the base says about a file as this folder saw it (see
    /// [`CacheView`]): [`local_view`] for the pair's local folder.
    pub view: CacheView,
}

/// What the base says about a file as the scanned folder saw it: the
/// identity it had there and its size and mtime there (with the agreed
/// hash), or `None` for a folder. The base keeps the local side's in its
/// entry and `local_id`; a folder that is a pair's remote has its own
/// identity and version token. Read through this, the base serves as
/// either side's stat cache without a copy of it being made.
pub type CacheView = for<'b> fn(&'b BaseEntry) -> Option<(Option<&'b FileId>, FileMeta)>;

/// The local side's view of the base.
pub fn local_view(base: &BaseEntry) -> Option<(Option<&FileId>, FileMeta)> {
    match &base.entry {
        Entry::File(meta) => Some((base.local_id.as_ref(), *meta)),
        Entry::Dir(_) => None,
    }
}

/// The result of a scan.
#[derive(Debug)]
pub struct ScanOutcome {
    /// Every path in scope that is synced and could be read.
    pub tree: SideTree,
    /// Paths in scope whose state is unknown this round: files that changed
    /// while being read and paths that could not be read. A held folder
    /// stands for its whole subtree. None of them is in `tree`, and none of
    /// them may be treated as deleted; the engine retries them later.
    pub held: Vec<RelPath>,
    /// Things the user should know about: unreadable paths, symbolic links
    /// and special files that are skipped, names that cannot be synced.
    pub problems: Vec<ScanProblem>,
    /// Files read to hash them (zero when the stat cache covered everything).
    pub hashed_files: u64,
    pub hashed_bytes: u64,
    /// Directory entries looked at.
    pub visited: u64,
    /// Our own temporary files seen on the way (`.prism-tmp-*`): a crash
    /// may have left them; the owner of the folder decides when they are
    /// stale.
    pub temp_files: Vec<PathBuf>,
}

/// One thing about one path that the user should know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanProblem {
    /// `None` when the name itself cannot be a [`RelPath`]; the message then
    /// names it. Otherwise the message does not repeat the path.
    pub path: Option<RelPath>,
    pub message: String,
}

/// A scan that could not look at the pair at all. Per-path trouble is a
/// [`ScanProblem`] instead.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error(
        "the local folder {0} does not exist; if it lives on a removable or network disk, mount it, otherwise fix the pair's `local` path"
    )]
    RootMissing(PathBuf),
    #[error("the local path {0} is not a folder; fix the pair's `local` path")]
    RootNotDir(PathBuf),
    #[error("cannot {operation} the local folder {path}: {source}; check its permissions")]
    Io {
        path: PathBuf,
        operation: &'static str,
        source: io::Error,
    },
}

/// Scans `req.scope` below `req.root`.
///
/// Paths named in a [`Scope::Paths`] that do not exist simply contribute
/// nothing: their absence is the information.
pub fn scan(req: &ScanRequest) -> Result<ScanOutcome, ScanError> {
    let root_io = |operation, source| ScanError::Io {
        path: req.root.to_path_buf(),
        operation,
        source,
    };
    let root_meta = match fs::metadata(req.root) {
        Ok(meta) => meta,
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            return Err(ScanError::RootMissing(req.root.to_path_buf()));
        }
        Err(err) => return Err(root_io("look at", err)),
    };
    if !root_meta.is_dir() {
        return Err(ScanError::RootNotDir(req.root.to_path_buf()));
    }

    let mut scanner = Scanner::new(req);
    match req.scope {
        Scope::Full => {
            let children = list_dir(req.root).map_err(|err| root_io("list", err))?;
            scanner.walk(Folder {
                path: None,
                children: children.into_iter(),
            });
        }
        Scope::Paths(paths) => {
            for path in outermost(paths) {
                scanner.visit_scoped_path(path);
            }
        }
    }
    scanner.hash_pending();
    let mut out = scanner.out;
    out.tree = map_from_list(scanner.found);
    Ok(out)
}

/// The state of one scan in progress.
struct Scanner<'r, 'a> {
    req: &'r ScanRequest<'a>,
    out: ScanOutcome,
    /// The base's files that have an identity on this side, sorted by it
    /// (in base order where two share one), built on the first cache
    /// miss, to recognise a renamed file without reading it. References
    /// into the base, 8 bytes a file: a map holding every file's metadata
    /// again was a scan's largest allocation once one file had changed.
    cache_by_id: Option<Vec<&'a BaseEntry>>,
    /// Files the stat cache did not cover, waiting to be read (see
    /// [`HASH_CHUNK`]).
    to_hash: Vec<HashJob>,
    /// What goes into `out.tree`, in the order found. The map is built
    /// from it at the end (see [`map_from_list`]): a `BTreeMap` built by
    /// inserting keys in ascending order leaves its nodes about half full,
    /// one built from a sorted list fills them, which is most of a tree's
    /// size.
    found: Vec<(RelPath, SideEntry)>,
}

/// Files the stat cache does not cover are read this many at a time, on
/// [`parallel::disk_workers`] threads: a first scan of many small files
/// mostly waits for opens and reads, and one thread did nothing else. The
/// chunk bounds what a scan of millions of new files holds in memory.
const HASH_CHUNK: usize = 512;

/// A folder whose entries are being visited: its path (`None` for the
/// root) and the entries not yet visited.
struct Folder {
    path: Option<RelPath>,
    children: std::vec::IntoIter<DirEntry>,
}

/// A file to read for its hash: where it is and what it looked like.
struct HashJob {
    rel: RelPath,
    abs: PathBuf,
    before: Metadata,
}

/// What reading a file for its hash found.
enum Hashed {
    /// The file did not change while it was read.
    Stable(ContentHash),
    /// The file changed (or was replaced) while it was read.
    Changing,
    /// The file is gone.
    Vanished,
}

impl<'r, 'a> Scanner<'r, 'a> {
    fn new(req: &'r ScanRequest<'a>) -> Scanner<'r, 'a> {
        Scanner {
            req,
            out: ScanOutcome {
                tree: SideTree::new(),
                held: Vec::new(),
                problems: Vec::new(),
                hashed_files: 0,
                hashed_bytes: 0,
                visited: 0,
                temp_files: Vec::new(),
            },
            cache_by_id: None,
            to_hash: Vec::new(),
            // A full scan finds about what the base holds: room for that
            // (and some new paths) from the start spares the copies, and
            // the unused half, of growing the list.
            found: Vec::with_capacity(match req.scope {
                Scope::Full => req.cache.len() + req.cache.len() / 8,
                Scope::Paths(_) => 0,
            }),
        }
    }

    /// Looks at one path of a `Scope::Paths` and everything below it.
    fn visit_scoped_path(&mut self, path: &RelPath) {
        // The path is in the synced tree only if every ancestor is a real
        // folder: below a file or nothing, it does not exist as far as
        // syncing is concerned. Below a symbolic link it is not known
        // (whatever the link points to is not ours to look at), so the
        // link is held, as in a full scan, never read as a deletion.
        for ancestor in path.ancestors() {
            match fs::symlink_metadata(ancestor.to_fs(self.req.root)) {
                Ok(meta) if meta.is_dir() => {}
                Ok(meta) if meta.is_file() => return,
                Ok(meta) => {
                    self.out.visited += 1;
                    return self.hold_unsyncable(ancestor, &meta);
                }
                Err(err) if is_vanished(&err) => return,
                Err(err) => return self.hold(path.clone(), "look at a folder above", &err),
            }
        }
        let abs = path.to_fs(self.req.root);
        match fs::symlink_metadata(&abs) {
            Ok(meta) => {
                let known = self.req.cache.get(path);
                if let Some(folder) = self.visit(path.clone(), known, &abs, &meta) {
                    self.walk(folder);
                }
            }
            Err(err) if is_vanished(&err) => {}
            Err(err) => self.hold(path.clone(), "look at", &err),
        }
    }

    /// Visits `start`'s entries and everything below them, depth first.
    /// Folders wait on a stack of their own, not the call stack: a tree may
    /// be thousands of levels deep, and a thread's stack (2 MiB for the
    /// agent's sync threads) holds far fewer nested calls.
    fn walk(&mut self, start: Folder) {
        let mut open = vec![start];
        while let Some(folder) = open.last_mut() {
            let Some(child) = folder.children.next() else {
                open.pop();
                continue;
            };
            let parent = folder.path.clone();
            if let Some(below) = self.visit_entry(parent.as_ref(), child) {
                open.push(below);
            }
        }
    }

    /// Visits one entry of the folder `parent`; returns it when it is a
    /// folder to descend into.
    fn visit_entry(&mut self, parent: Option<&RelPath>, child: DirEntry) -> Option<Folder> {
        let abs = child.path();
        let name = child.file_name();
        let rel = name.to_str().and_then(|name| match parent {
            Some(parent) => parent.join(name).ok(),
            None => RelPath::from_name(name).ok(),
        });
        let Some(rel) = rel else {
            self.out.problems.push(ScanProblem {
                path: None,
                message: format!(
                    "{} is not synced: its name is not valid UTF-8 or contains a control character or backslash; rename it to sync it",
                    abs.to_string_lossy()
                ),
            });
            return None;
        };
        // A path the base knows is held once for the whole sync: the
        // listing shares the base's copy (see `RelPath`), so the base and
        // both sides' trees do not each keep the path's bytes.
        let (rel, known) = match self.req.cache.get_key_value(&rel) {
            Some((path, base)) => (path.clone(), Some(base)),
            None => (rel, None),
        };
        // `DirEntry::metadata` does not follow symbolic links.
        match child.metadata() {
            Ok(meta) => self.visit(rel, known, &abs, &meta),
            Err(err) if is_vanished(&err) => None,
            Err(err) => {
                self.hold(rel, "look at", &err);
                None
            }
        }
    }

    /// Records one path; returns it when it is a folder to descend into.
    /// `known` is what the base holds at `rel`.
    fn visit(
        &mut self,
        rel: RelPath,
        known: Option<&'a BaseEntry>,
        abs: &Path,
        meta: &Metadata,
    ) -> Option<Folder> {
        self.out.visited += 1;
        let file_type = meta.file_type();
        if self.req.ignore.is_ignored(&rel, file_type.is_dir()) {
            if file_type.is_file() && is_temp_name(rel.file_name()) {
                self.out.temp_files.push(abs.to_path_buf());
            }
            return None;
        }
        if rel.too_deep() {
            self.out.problems.push(ScanProblem {
                message: rel.too_deep_message(),
                path: Some(rel.clone()),
            });
            self.out.held.push(rel);
            return None;
        }
        if file_type.is_dir() {
            return self.visit_dir(rel, abs, meta);
        }
        if file_type.is_file() {
            self.visit_file(rel, known, abs, meta);
        } else {
            self.hold_unsyncable(rel, meta);
        }
        None
    }

    fn visit_dir(&mut self, rel: RelPath, abs: &Path, meta: &Metadata) -> Option<Folder> {
        let listed = list_dir(abs).and_then(|children| {
            // The folder may have been swapped for a symbolic link between
            // the look and the listing, which then listed what the link
            // points to: only the folder that was looked at counts.
            let again = fs::symlink_metadata(abs)?;
            Ok((children, again))
        });
        match listed {
            Ok((children, again)) if again.is_dir() && file_id(&again) == file_id(meta) => {
                let entry = SideEntry {
                    entry: Entry::dir(crate::fsops::mode_of(meta)),
                    id: file_id(meta),
                    version: None,
                };
                self.found.push((rel.clone(), entry));
                Some(Folder {
                    path: Some(rel),
                    children: children.into_iter(),
                })
            }
            Ok((_, again)) if again.is_dir() => {
                // Replaced by another folder meanwhile: the next round
                // looks at the new one.
                self.out.held.push(rel);
                None
            }
            Ok((_, again)) => {
                self.hold_unsyncable(rel, &again);
                None
            }
            Err(err) if is_vanished(&err) => None,
            Err(err) => {
                self.hold(rel, "list the folder", &err);
                None
            }
        }
    }

    fn visit_file(
        &mut self,
        rel: RelPath,
        known: Option<&'a BaseEntry>,
        abs: &Path,
        before: &Metadata,
    ) {
        let id = file_id(before);
        match self.cached_hash(known, &id, before.len(), mtime_ns(before)) {
            Some(hash) => self.insert_file(rel, before, id, hash),
            None => {
                self.to_hash.push(HashJob {
                    rel,
                    abs: abs.to_path_buf(),
                    before: before.clone(),
                });
                if self.to_hash.len() >= HASH_CHUNK {
                    self.hash_pending();
                }
            }
        }
    }

    /// Reads the files waiting for their hash, several at once, and records
    /// what each read found in the order they were found.
    fn hash_pending(&mut self) {
        let jobs = std::mem::take(&mut self.to_hash);
        let read = parallel::map(jobs, parallel::disk_workers(), |job| {
            let hashed = hash_if_stable(&job.abs, &job.before);
            (job, hashed)
        });
        for (job, hashed) in read {
            match hashed {
                Ok((hashed, bytes_read)) => {
                    if let Some(bytes) = bytes_read {
                        self.out.hashed_files += 1;
                        self.out.hashed_bytes += bytes;
                    }
                    match hashed {
                        Hashed::Stable(hash) => {
                            let id = file_id(&job.before);
                            self.insert_file(job.rel, &job.before, id, hash)
                        }
                        Hashed::Changing => self.out.held.push(job.rel),
                        Hashed::Vanished => {}
                    }
                }
                Err(err) => self.hold(job.rel, "read", &err),
            }
        }
    }

    fn insert_file(
        &mut self,
        rel: RelPath,
        meta: &Metadata,
        id: Option<FileId>,
        hash: ContentHash,
    ) {
        let entry = SideEntry {
            entry: Entry::File(FileMeta {
                hash,
                size: meta.len(),
                mtime_ns: mtime_ns(meta),
                mode: crate::fsops::mode_of(meta),
            }),
            id,
            version: None,
        };
        self.found.push((rel, entry));
    }

    /// The base's hash for a file that size, mtime and inode say is
    /// unchanged: at the same path (`known`, what the base holds there),
    /// or at another path it was renamed from.
    ///
    /// RACE: a file rewritten in place with the same size within the same
    /// mtime tick as the write the base saw (ext4 ticks are milliseconds)
    /// looks unchanged, and keeps its old hash until its next change. Git
    /// calls this the "racy clean" case; closing it needs the time the base
    /// was recorded, which the base does not carry.
    fn cached_hash(
        &mut self,
        known: Option<&'a BaseEntry>,
        id: &Option<FileId>,
        size: u64,
        mtime_ns: i64,
    ) -> Option<ContentHash> {
        let unchanged = |meta: &FileMeta| meta.size == size && meta.mtime_ns == mtime_ns;
        let (cache, view) = (self.req.cache, self.req.view);
        if let Some((known_id, meta)) = known.and_then(view)
            && known_id == id.as_ref()
            && unchanged(&meta)
        {
            return Some(meta.hash);
        }
        let id = id.as_ref()?;
        let id_of = |base: &'a BaseEntry| view(base).and_then(|(id, _)| id);
        let by_id = self.cache_by_id.get_or_insert_with(|| {
            let with_id = || cache.values().filter(|base| id_of(base).is_some());
            let mut by_id: Vec<&'a BaseEntry> = Vec::with_capacity(with_id().count());
            by_id.extend(with_id());
            by_id.sort_by(|a, b| id_of(a).cmp(&id_of(b)));
            by_id
        });
        // The last of the files with that identity (hard links share one).
        let past = by_id.partition_point(|base| id_of(base) <= Some(id));
        let (found_id, meta) = view(by_id.get(past.checked_sub(1)?)?)?;
        (found_id == Some(id) && unchanged(&meta)).then_some(meta.hash)
    }

    /// Records a path that could not be read: held, with a problem saying why.
    fn hold(&mut self, rel: RelPath, operation: &str, err: &io::Error) {
        self.out.problems.push(ScanProblem {
            path: Some(rel.clone()),
            message: format!(
                "cannot {operation} {rel}: {err}; it is left alone on both sides until it can be read (check its permissions)"
            ),
        });
        self.out.held.push(rel);
    }

    /// Records a symbolic link or a special file: never synced, and held
    /// with a problem saying why. Held, not skipped: a synced folder moved
    /// to another disk and linked back, or a file replaced by a link, must
    /// not read as deleted (absence means deletion), and nothing is ever
    /// written through the link to where it points.
    fn hold_unsyncable(&mut self, rel: RelPath, meta: &Metadata) {
        let message = if meta.file_type().is_symlink() {
            SYMLINK_MESSAGE.to_owned()
        } else {
            SPECIAL_FILE_MESSAGE.to_owned()
        };
        self.out.problems.push(ScanProblem {
            message,
            path: Some(rel.clone()),
        });
        self.out.held.push(rel);
    }
}

/// The problem of a symbolic link, which every replica holds (see
/// `Scanner::hold_unsyncable`).
pub const SYMLINK_MESSAGE: &str = "a symbolic link: links are not synced and never followed, so \
     it and whatever it points to are left alone on both sides (replace it with the real folder \
     or file to sync it)";

/// The problem of a fifo, socket or device, which every replica holds.
pub const SPECIAL_FILE_MESSAGE: &str =
    "a special file (a fifo, socket or device): it is not synced and is left alone on both sides";

/// Hashes the file at `abs` and checks that it is still what `before`
/// described, so a file being written is never recorded half-done. Also
/// returns how many bytes were read, when the file was read through.
fn hash_if_stable(abs: &Path, before: &Metadata) -> io::Result<(Hashed, Option<u64>)> {
    let file = match open_regular_file(abs) {
        Ok(file) => file,
        Err(err) if is_vanished(&err) => return Ok((Hashed::Vanished, None)),
        // The path was swapped for a symbolic link since we looked.
        Err(err) if is_symlink_refused(&err) => return Ok((Hashed::Changing, None)),
        Err(err) => return Err(err),
    };
    let opened = file.metadata()?;
    let (hash, n_bytes) = HashingReader::new(file).drain()?;
    let after = match fs::symlink_metadata(abs) {
        Ok(after) => after,
        Err(err) if is_vanished(&err) => return Ok((Hashed::Vanished, Some(n_bytes))),
        Err(err) => return Err(err),
    };
    let stable =
        file_id(&opened) == file_id(before) && same_stat(before, &after) && n_bytes == before.len();
    let hashed = if stable {
        Hashed::Stable(hash)
    } else {
        Hashed::Changing
    };
    Ok((hashed, Some(n_bytes)))
}

/// The scoped paths with those inside another scoped path removed, so no
/// subtree is scanned twice.
fn outermost(paths: &[RelPath]) -> Vec<&RelPath> {
    let mut kept: Vec<&RelPath> = Vec::new();
    for path in paths {
        if paths
            .iter()
            .any(|other| other != path && path.is_within(other))
            || kept.contains(&path)
        {
            continue;
        }
        kept.push(path);
    }
    kept
}

fn list_dir(abs: &Path) -> io::Result<Vec<DirEntry>> {
    fs::read_dir(abs)?.collect()
}

/// Opens a file for reading without following a symbolic link and without
/// blocking: if a fifo was swapped in since we looked, `open` must not hang.
fn open_regular_file(abs: &Path) -> io::Result<File> {
    let mut options = fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    }
    options.open(abs)
}

/// True when `open` refused a symbolic link because of `O_NOFOLLOW`.
fn is_symlink_refused(err: &io::Error) -> bool {
    #[cfg(unix)]
    return err.raw_os_error() == Some(libc::ELOOP);
    #[cfg(not(unix))]
    return false;
}

/// True when an error means the path is simply not there (any more).
fn is_vanished(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

fn same_stat(before: &Metadata, after: &Metadata) -> bool {
    after.file_type() == before.file_type()
        && after.len() == before.len()
        && mtime_ns(after) == mtime_ns(before)
        && file_id(after) == file_id(before)
}

/// The inode as `dev:ino`: it survives renames within the file system.
#[cfg(unix)]
pub(crate) fn file_id(meta: &Metadata) -> Option<FileId> {
    use std::os::unix::fs::MetadataExt;
    Some(FileId::inode(meta.dev(), meta.ino()))
}

#[cfg(not(unix))]
pub(crate) fn file_id(_meta: &Metadata) -> Option<FileId> {
    None
}

/// Modification time in nanoseconds since the Unix epoch.
#[cfg(unix)]
fn mtime_ns(meta: &Metadata) -> i64 {
    use std::os::unix::fs::MetadataExt;
    meta.mtime()
        .saturating_mul(1_000_000_000)
        .saturating_add(meta.mtime_nsec())
}

#[cfg(not(unix))]
fn mtime_ns(meta: &Metadata) -> i64 {
    // Every platform we target records modification times; a zero here
    // would only make the stat cache miss, never hit wrongly, because the
    // base was recorded by this same function.
    meta.modified().map(crate::timefmt::to_unix_ns).unwrap_or(0)
}

#[cfg(all(test, unix))]
pub(crate) mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::io::Write;

    fn rel(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    fn write(root: &Path, path: &str, content: &[u8]) {
        let abs = root.join(path);
        fs::create_dir_all(abs.parent().unwrap()).unwrap();
        fs::write(abs, content).unwrap();
    }

    fn no_rules(root: &Path) -> IgnoreRules {
        IgnoreRules::load(root, &[]).unwrap()
    }

    fn run(root: &Path, scope: &Scope, ignore: &IgnoreRules, cache: &BaseTree) -> ScanOutcome {
        scan(&ScanRequest {
            root,
            scope,
            ignore,
            cache,
            view: local_view,
        })
        .unwrap()
    }

    fn full(root: &Path, cache: &BaseTree) -> ScanOutcome {
        run(root, &Scope::Full, &no_rules(root), cache)
    }

    /// The base a sync would record after agreeing on `tree`.
    fn as_cache(tree: &SideTree) -> BaseTree {
        tree.iter()
            .map(|(path, side)| {
                let mut base = BaseEntry::new(side.entry);
                base.local_id = side.id.clone();
                (path.clone(), base)
            })
            .collect()
    }

    fn paths(tree: &SideTree) -> Vec<&str> {
        tree.keys().map(RelPath::as_str).collect()
    }

    fn file_hash(out: &ScanOutcome, path: &str) -> ContentHash {
        out.tree[&rel(path)].entry.file().unwrap().hash
    }

    fn has_problem(out: &ScanOutcome, path: &str, text: &str) -> bool {
        out.problems
            .iter()
            .any(|p| p.path.as_ref() == Some(&rel(path)) && p.message.contains(text))
    }

    #[test]
    fn scan_finds_files_and_folders_with_their_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "a.txt", b"alpha");
        write(root, "d/b.txt", b"beta");
        fs::create_dir_all(root.join("d/empty")).unwrap();

        let out = full(root, &BaseTree::new());
        assert_eq!(paths(&out.tree), ["a.txt", "d", "d/b.txt", "d/empty"]);
        assert!(out.tree[&rel("d")].entry.is_dir());
        let meta = out.tree[&rel("d/b.txt")].entry.file().copied().unwrap();
        assert_eq!(meta.hash, ContentHash::of_bytes(b"beta"));
        assert_eq!(meta.size, 4);
        let disk = fs::metadata(root.join("d/b.txt")).unwrap();
        assert_eq!(
            meta.mtime_ns,
            crate::timefmt::to_unix_ns(disk.modified().unwrap())
        );
        assert_eq!(out.tree[&rel("d/b.txt")].id, file_id(&disk));
        assert_eq!((out.hashed_files, out.hashed_bytes), (2, 9));
        assert!(out.held.is_empty() && out.problems.is_empty(), "{out:?}");
    }

    #[test]
    fn warm_cache_rescan_of_ten_thousand_files_reads_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for folder_idx in 0..100 {
            fs::create_dir(root.join(format!("f{folder_idx}"))).unwrap();
            for file_idx in 0..100 {
                let path = root.join(format!("f{folder_idx}/{file_idx}.txt"));
                fs::write(path, format!("{folder_idx}/{file_idx}")).unwrap();
            }
        }
        let cold = full(root, &BaseTree::new());
        assert_eq!(cold.hashed_files, 10_000);

        let warm = full(root, &as_cache(&cold.tree));
        assert_eq!(warm.hashed_files, 0);
        assert_eq!(warm.tree, cold.tree);
        assert_eq!(warm.visited, 10_100);
    }

    #[test]
    fn a_rescan_shares_the_paths_the_base_holds() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "d/known.txt", b"known");
        let cache = as_cache(&full(root, &BaseTree::new()).tree);
        write(root, "d/new.txt", b"new");

        let out = full(root, &cache);
        assert_eq!(paths(&out.tree), ["d", "d/known.txt", "d/new.txt"]);
        for path in cache.keys() {
            let (listed, _) = out.tree.get_key_value(path).unwrap();
            assert!(
                std::ptr::eq(listed.as_str(), path.as_str()),
                "{path} is held twice"
            );
        }
    }

    #[test]
    fn changed_file_is_rehashed_and_only_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "same.txt", b"same");
        write(root, "edited.txt", b"v1");
        let first = full(root, &BaseTree::new());

        write(root, "edited.txt", b"version 2");
        let second = full(root, &as_cache(&first.tree));
        assert_eq!(second.hashed_files, 1);
        assert_eq!(
            file_hash(&second, "edited.txt"),
            ContentHash::of_bytes(b"version 2")
        );
        assert_eq!(
            file_hash(&second, "same.txt"),
            file_hash(&first, "same.txt")
        );
    }

    #[test]
    fn renamed_file_keeps_its_hash_without_being_read() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "old.txt", b"content");
        let first = full(root, &BaseTree::new());

        fs::create_dir(root.join("sub")).unwrap();
        fs::rename(root.join("old.txt"), root.join("sub/new.txt")).unwrap();
        let second = full(root, &as_cache(&first.tree));
        assert_eq!(second.hashed_files, 0);
        assert_eq!(paths(&second.tree), ["sub", "sub/new.txt"]);
        assert_eq!(
            file_hash(&second, "sub/new.txt"),
            ContentHash::of_bytes(b"content")
        );
    }

    /// The base's files are looked up by identity in a sorted list: each
    /// of several renamed files finds its own entry, and one that was also
    /// rewritten is read.
    #[test]
    fn renamed_files_among_many_find_their_own_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for i in 0..50 {
            write(
                root,
                &format!("f{i:02}.txt"),
                format!("content {i}").as_bytes(),
            );
        }
        let first = full(root, &BaseTree::new());

        fs::rename(root.join("f07.txt"), root.join("g07.txt")).unwrap();
        fs::rename(root.join("f31.txt"), root.join("g31.txt")).unwrap();
        fs::rename(root.join("f42.txt"), root.join("g42.txt")).unwrap();
        write(root, "g42.txt", b"rewritten after the move");
        let second = full(root, &as_cache(&first.tree));
        assert_eq!(second.hashed_files, 1);
        assert_eq!(
            file_hash(&second, "g07.txt"),
            ContentHash::of_bytes(b"content 7")
        );
        assert_eq!(
            file_hash(&second, "g31.txt"),
            ContentHash::of_bytes(b"content 31")
        );
        assert_eq!(
            file_hash(&second, "g42.txt"),
            ContentHash::of_bytes(b"rewritten after the move")
        );
    }

    #[test]
    fn file_changing_while_read_is_held() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "growing.log", b"start");
        let before = fs::symlink_metadata(root.join("growing.log")).unwrap();
        // Appending after the scanner's first look is what a writer in
        // progress does; the size then differs from the first look.
        let mut file = fs::OpenOptions::new()
            .append(true)
            .open(root.join("growing.log"))
            .unwrap();
        file.write_all(b" and more").unwrap();

        let ignore = no_rules(root);
        let cache = BaseTree::new();
        let req = ScanRequest {
            root,
            scope: &Scope::Full,
            ignore: &ignore,
            cache: &cache,
            view: local_view,
        };
        let mut scanner = Scanner::new(&req);
        scanner.visit(rel("growing.log"), None, &root.join("growing.log"), &before);
        scanner.hash_pending();
        assert_eq!(scanner.out.held, [rel("growing.log")]);
        assert!(
            scanner.found.is_empty(),
            "a file being written is not listed"
        );
        assert!(
            scanner.out.problems.is_empty(),
            "being written is not a problem"
        );
    }

    #[test]
    fn unreadable_paths_are_held_with_a_problem_never_absent() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "secret.txt", b"s");
        write(root, "locked/inner.txt", b"i");
        write(root, "open.txt", b"o");
        fs::set_permissions(root.join("secret.txt"), fs::Permissions::from_mode(0o000)).unwrap();
        fs::set_permissions(root.join("locked"), fs::Permissions::from_mode(0o000)).unwrap();

        let out = full(root, &BaseTree::new());
        fs::set_permissions(root.join("locked"), fs::Permissions::from_mode(0o755)).unwrap();

        assert!(out.tree.contains_key(&rel("open.txt")));
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            // Permission bits do not restrict root (as in CI), so nothing is
            // unreadable here; the held path for files that cannot be
            // stated as facts is covered by `file_changing_while_read_is_held`.
            assert!(out.tree.contains_key(&rel("secret.txt")));
            assert!(out.tree.contains_key(&rel("locked/inner.txt")));
        } else {
            assert_eq!(out.held, [rel("locked"), rel("secret.txt")]);
            assert!(has_problem(&out, "secret.txt", "cannot read secret.txt"));
            assert!(has_problem(&out, "locked", "cannot list the folder locked"));
            assert!(!out.tree.keys().any(|p| p.is_within(&rel("locked"))));
            assert!(!out.tree.contains_key(&rel("secret.txt")));
        }
    }

    #[test]
    fn symlinks_and_special_files_are_held_with_a_problem_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(outside.path(), "elsewhere.txt", b"x");
        write(root, "real.txt", b"r");
        std::os::unix::fs::symlink(root.join("real.txt"), root.join("link.txt")).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("linkdir")).unwrap();
        let fifo = std::ffi::CString::new(root.join("pipe").into_os_string().into_encoded_bytes())
            .unwrap();
        // SAFETY: `fifo` is a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);

        let out = full(root, &BaseTree::new());
        assert_eq!(paths(&out.tree), ["real.txt"]);
        assert!(has_problem(&out, "link.txt", "a symbolic link"));
        assert!(has_problem(&out, "linkdir", "a symbolic link"));
        assert!(has_problem(&out, "pipe", "special file"));
        // Held, not absent: absence would read as a deletion.
        let mut held = out.held.clone();
        held.sort();
        assert_eq!(held, [rel("link.txt"), rel("linkdir"), rel("pipe")]);

        // A scope below a symbolic link does not reach through it either:
        // the link is held.
        let scope = Scope::Paths(vec![rel("linkdir/elsewhere.txt")]);
        let out = run(root, &scope, &no_rules(root), &BaseTree::new());
        assert!(out.tree.is_empty(), "{out:?}");
        assert_eq!(out.held, [rel("linkdir")]);
        assert!(has_problem(&out, "linkdir", "a symbolic link"));
    }

    #[test]
    fn a_synced_folder_replaced_by_a_symbolic_link_is_held_not_absent() {
        // A folder moved to another disk and linked back: what the base
        // knew below it must not read as deleted.
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "photos/a.jpg", b"a");
        write(root, "photos/2024/b.jpg", b"b");
        let first = full(root, &BaseTree::new());
        let moved = elsewhere.path().join("photos");
        fs::rename(root.join("photos"), &moved).unwrap();
        std::os::unix::fs::symlink(&moved, root.join("photos")).unwrap();

        let out = full(root, &as_cache(&first.tree));
        assert!(out.tree.is_empty(), "{out:?}");
        assert_eq!(out.held, [rel("photos")]);
        assert!(has_problem(&out, "photos", "a symbolic link"));
        let scope = Scope::Paths(vec![rel("photos/2024/b.jpg"), rel("photos/a.jpg")]);
        let out = run(root, &scope, &no_rules(root), &as_cache(&first.tree));
        assert!(out.tree.is_empty(), "{out:?}");
        assert_eq!(out.held, [rel("photos"), rel("photos")]);
    }

    /// Makes `levels` nested one-letter folders below `root` with a file
    /// at the bottom, one level at a time relative to the folder above
    /// (a whole path that long may exceed what a plain call takes); returns
    /// the file's relative path.
    pub(crate) fn make_deep_tree(root: &Path, levels: usize) -> String {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        let open_dir = |at: libc::c_int, name: &std::ffi::CStr| {
            // SAFETY: `name` is NUL-terminated; the result is checked.
            let fd = unsafe {
                libc::openat(
                    at,
                    name.as_ptr(),
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
                )
            };
            assert!(fd >= 0, "{}", io::Error::last_os_error());
            // SAFETY: `fd` was just opened and is owned by nobody else.
            unsafe { OwnedFd::from_raw_fd(fd) }
        };
        let root_c = std::ffi::CString::new(root.as_os_str().as_encoded_bytes()).unwrap();
        let mut dir = open_dir(libc::AT_FDCWD, &root_c);
        for _ in 0..levels {
            // SAFETY: as above.
            let made = unsafe { libc::mkdirat(dir.as_raw_fd(), c"d".as_ptr(), 0o755) };
            assert_eq!(made, 0, "{}", io::Error::last_os_error());
            dir = open_dir(dir.as_raw_fd(), c"d");
        }
        // SAFETY: as above.
        let fd = unsafe {
            libc::openat(
                dir.as_raw_fd(),
                c"bottom.txt".as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC,
                0o644,
            )
        };
        assert!(fd >= 0, "{}", io::Error::last_os_error());
        // SAFETY: as above.
        let mut file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        file.write_all(b"deep").unwrap();
        format!("{}bottom.txt", "d/".repeat(levels))
    }

    #[test]
    fn a_tree_nineteen_hundred_levels_deep_is_scanned_without_recursion() {
        // About 3,800 bytes of path: under PATH_MAX, and far deeper than a
        // test thread's 2 MiB stack holds nested calls per level.
        let dir = tempfile::tempdir().unwrap();
        let bottom = make_deep_tree(dir.path(), 1900);
        let out = full(dir.path(), &BaseTree::new());
        assert!(
            out.held.is_empty() && out.problems.is_empty(),
            "{:?}",
            out.problems
        );
        assert_eq!(out.tree.len(), 1901);
        assert_eq!(file_hash(&out, &bottom), ContentHash::of_bytes(b"deep"));
        // A scope deep in the tree is looked at the same way.
        let scope = Scope::Paths(vec![rel("d/".repeat(1000).trim_end_matches('/'))]);
        let out = run(dir.path(), &scope, &no_rules(dir.path()), &BaseTree::new());
        // Folders 1,000 to 1,900 and the file.
        assert_eq!(out.tree.len(), 902);
        assert_eq!(file_hash(&out, &bottom), ContentHash::of_bytes(b"deep"));
    }

    #[test]
    fn ignored_paths_are_left_out_and_not_descended_into() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for path in [
            "keep.txt",
            "notes.md.swp",
            "backup~",
            "debug.log",
            "build/out.o",
            "src/build/deep/x.o",
            "src/main.rs",
            "a/inside.txt",
            "ab/inside.txt",
            ".prism-sync/trash/old.txt",
            ".prism-sync-root",
            "src/.prism-tmp-abc-main.rs",
        ] {
            write(root, path, b"x");
        }
        write(root, ".prismignore", b"build/\n");
        let ignore = IgnoreRules::load(root, &["*.log".into(), "a".into()]).unwrap();

        let out = run(root, &Scope::Full, &ignore, &BaseTree::new());
        assert_eq!(
            paths(&out.tree),
            [
                ".prismignore",
                "ab",
                "ab/inside.txt",
                "keep.txt",
                "src",
                "src/main.rs"
            ]
        );
        // Ignored folders are not read: 11 root entries, 3 in `src` and 1
        // in `ab`; nothing below `build`, `a` or `.prism-sync`.
        assert_eq!(out.visited, 15);
    }

    #[test]
    fn a_scope_of_paths_looks_only_at_those() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for path in ["a/x.txt", "a/y/z.txt", "b/one.txt", "b/two.txt", "c.txt"] {
            write(root, path, path.as_bytes());
        }
        let scope = Scope::Paths(vec![
            rel("a"),
            rel("a/y"),
            rel("b/two.txt"),
            rel("missing/deeper"),
            rel("c.txt/not-a-folder"),
        ]);
        let out = run(root, &scope, &no_rules(root), &BaseTree::new());
        assert_eq!(
            paths(&out.tree),
            ["a", "a/x.txt", "a/y", "a/y/z.txt", "b/two.txt"]
        );
        assert_eq!(out.visited, 5);
        assert!(out.held.is_empty() && out.problems.is_empty(), "{out:?}");
    }

    #[test]
    fn names_that_cannot_be_synced_are_reported() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::write(root.join(std::ffi::OsStr::from_bytes(b"bad\xffname")), b"x").unwrap();
        fs::write(root.join("back\\slash"), b"x").unwrap();
        write(root, "fine.txt", b"x");

        let out = full(root, &BaseTree::new());
        assert_eq!(paths(&out.tree), ["fine.txt"]);
        let messages: BTreeSet<&str> = out.problems.iter().map(|p| p.message.as_str()).collect();
        assert_eq!(messages.len(), 2, "{messages:?}");
        assert!(
            messages.iter().any(|m| m.contains("bad\u{fffd}name")),
            "{messages:?}"
        );
        assert!(
            messages.iter().any(|m| m.contains("back\\slash")),
            "{messages:?}"
        );
        assert!(out.problems.iter().all(|p| p.path.is_none()));
    }

    #[test]
    fn a_missing_root_or_a_file_root_is_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("unmounted");
        let ignore = no_rules(dir.path());
        let cache = BaseTree::new();
        let req = |root| ScanRequest {
            root,
            scope: &Scope::Full,
            ignore: &ignore,
            cache: &cache,
            view: local_view,
        };
        let err = scan(&req(&missing)).unwrap_err();
        assert!(matches!(err, ScanError::RootMissing(_)), "{err:?}");
        assert!(err.to_string().contains("mount it"));

        write(dir.path(), "file", b"x");
        let err = scan(&req(&dir.path().join("file"))).unwrap_err();
        assert!(matches!(err, ScanError::RootNotDir(_)), "{err:?}");
    }
}
