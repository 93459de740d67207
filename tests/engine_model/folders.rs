//! Folder-level helpers for the engine model test: reading a replica's tree
//! (paths, kinds, content) without our metadata, collecting every content
//! kept under a folder (for the trashes), finding leftover temporary files,
//! and the random edits a person makes to a folder.
//!
//! The edits (`chmod` among them) are plain `std::fs` calls on real folders, chosen by the
//! test's seeded generator from what the folder holds now. This module does
//! not know about engines, journals or faults.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prism_sync::tracker::ignore::{METADATA_DIR, ROOT_MARKER_FILE, TEMP_PREFIX, is_temp_name};

/// One entry of a tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    Dir,
    File(Vec<u8>),
}

/// A replica's tree: relative path (with `/`) to entry.
pub type Tree = BTreeMap<String, Node>;

/// Reads the tree below `root`, leaving out our metadata at the root (the
/// remote's `.prism-sync/`, the local `.prism-sync-root` marker) and our
/// hidden temporary files, which no person edits and which `temp_files`
/// checks on its own.
pub fn tree(root: &Path) -> Tree {
    let mut out = Tree::new();
    walk(root, "", &mut out);
    out
}

fn walk(dir: &Path, prefix: &str, out: &mut Tree) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry"))
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        if prefix.is_empty() && (name == METADATA_DIR || name == ROOT_MARKER_FILE) {
            continue;
        }
        if is_temp_name(&name) {
            continue;
        }
        let rel = format!("{prefix}{name}");
        let path = entry.path();
        if entry.file_type().expect("file type").is_dir() {
            out.insert(rel.clone(), Node::Dir);
            walk(&path, &format!("{rel}/"), out);
        } else {
            out.insert(rel, Node::File(read_cached(&path)));
        }
    }
}

/// What tells one version of a file from every other on tmpfs: device,
/// inode (tmpfs numbers them in order and does not reuse them), size,
/// mtime and ctime (every write and rename sets it).
type Version = (u64, u64, u64, i64, i64);

thread_local! {
    /// Contents already read, by version: the tree of a folder with
    /// thousands of files is read after every step.
    static READ: std::cell::RefCell<std::collections::HashMap<Version, Vec<u8>>> =
        Default::default();
}

/// Whether [`READ`] may be used: only on tmpfs, where inode numbers are
/// not reused.
static CACHE_READS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Lets tree reads reuse contents read before: the cases' folders are on
/// tmpfs. Clears what this thread read before.
pub fn cache_reads(on: bool) {
    CACHE_READS.store(on, std::sync::atomic::Ordering::Relaxed);
    READ.with(|read| read.borrow_mut().clear());
}

fn read_cached(path: &Path) -> Vec<u8> {
    use std::os::unix::fs::MetadataExt;
    let read = || fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    if !CACHE_READS.load(std::sync::atomic::Ordering::Relaxed) {
        return read();
    }
    let Ok(meta) = fs::symlink_metadata(path) else {
        return read();
    };
    let version = (
        meta.dev(),
        meta.ino(),
        meta.size(),
        meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
        meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
    );
    if let Some(bytes) = READ.with(|r| r.borrow().get(&version).cloned()) {
        return bytes;
    }
    let bytes = read();
    // Read again after reading: a file written in between is not cached.
    let unchanged = fs::symlink_metadata(path).is_ok_and(|after| {
        after.ino() == meta.ino()
            && after.size() == bytes.len() as u64
            && after.ctime_nsec() == meta.ctime_nsec()
            && after.ctime() == meta.ctime()
    });
    if unchanged {
        READ.with(|r| r.borrow_mut().insert(version, bytes.clone()));
    }
    bytes
}

/// The permission bits of every entry of `tree(root)`.
pub fn modes(root: &Path) -> BTreeMap<String, u32> {
    use std::os::unix::fs::PermissionsExt;
    tree(root)
        .into_keys()
        .map(|path| {
            let meta = fs::symlink_metadata(root.join(&path))
                .unwrap_or_else(|e| panic!("cannot look at {path}: {e}"));
            (path, meta.permissions().mode() & 0o777)
        })
        .collect()
}

/// How many files hold each content.
pub type Contents = BTreeMap<Vec<u8>, usize>;

/// How many files of `tree` hold each content.
pub fn contents(tree: &Tree) -> Contents {
    let mut counts = BTreeMap::new();
    for node in tree.values() {
        if let Node::File(bytes) = node {
            *counts.entry(bytes.clone()).or_insert(0) += 1;
        }
    }
    counts
}

/// Every content kept in a file anywhere below `dir` (a trash).
pub fn kept_under(dir: &Path) -> BTreeSet<Vec<u8>> {
    let mut kept = BTreeSet::new();
    if dir.exists() {
        let mut all = Tree::new();
        walk(dir, "/", &mut all);
        for node in all.into_values() {
            if let Node::File(bytes) = node {
                kept.insert(bytes);
            }
        }
    }
    kept
}

/// Our temporary files anywhere below `dir`, metadata and trash included.
pub fn temp_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return found;
    };
    for entry in entries {
        let entry = entry.expect("directory entry");
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
            found.push(path.clone());
        }
        if entry.file_type().expect("file type").is_dir() {
            found.extend(temp_files(&path));
        }
    }
    found
}

/// A short, readable rendering of a content for the step log.
pub fn show(bytes: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(bytes))
}

/// The modification times the test's edits set: strictly increasing, and
/// never before the real clock. Edits made within one file-system time
/// tick with the same size would otherwise look unchanged to the stat
/// cache (the documented "racy clean" limitation of the scanner), which is
/// not what this test is about.
///
/// An edit made on a device whose clock is off is stamped off by as much
/// ([`Clock::skew`]): the times stay strictly increasing per device, not
/// between devices.
#[derive(Clone, Default)]
pub struct Clock {
    last_ns: i64,
    skew_ns: i64,
}

impl Clock {
    /// Takes over the later of two clocks (one lent to a racing edit).
    pub fn catch_up(&mut self, other: &Clock) {
        self.last_ns = self.last_ns.max(other.last_ns);
    }

    /// Stamps the next edits as a clock `secs` ahead (behind when
    /// negative) of the real one would.
    pub fn skew(&mut self, secs: i64) {
        self.skew_ns = secs * 1_000_000_000;
    }

    fn next(&mut self) -> SystemTime {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_nanos() as i64;
        self.last_ns = now.max(self.last_ns + 1_000_000);
        UNIX_EPOCH + Duration::from_nanos((self.last_ns + self.skew_ns) as u64)
    }
}

/// Makes a chain of `depth` nested folders below `deep/`, with a file at
/// its bottom and one halfway: paths hundreds of levels deep. Returns the
/// paths it touched.
pub fn build_deep(root: &Path, depth: usize, clock: &mut Clock) -> Vec<String> {
    let chain = vec!["k"; depth].join("/");
    let bottom = format!("deep/{chain}/bottom.txt");
    let halfway = format!("deep/{}/halfway.txt", vec!["k"; depth / 2].join("/"));
    write_file(root, &bottom, b"at the bottom\n", clock, false);
    write_file(root, &halfway, b"halfway down\n", clock, false);
    vec!["deep".to_owned()]
}

/// Fills the folder `wide/` with `width` small files, each its own
/// content. Returns the paths it touched.
pub fn build_wide(root: &Path, width: usize, clock: &mut Clock) -> Vec<String> {
    for i in 0..width {
        let path = format!("wide/f{i:05}");
        write_file(root, &path, format!("wide {i}\n").as_bytes(), clock, false);
    }
    vec!["wide".to_owned()]
}

const WORDS: [&str; 4] = ["alpha", "beta", "gamma", "delta"];
/// The modes a person gives with `chmod`: private, group-readable,
/// executable; each leaves its owner able to go on editing (the test's
/// edits run as that owner).
const FILE_MODES: [u32; 4] = [0o600, 0o640, 0o644, 0o755];
const DIR_MODES: [u32; 3] = [0o700, 0o750, 0o755];
/// "e" is also a folder name, so a file and a folder meet at one path.
const FILE_NAMES: [&str; 5] = ["a.txt", "b.txt", "c.md", "notes", "e"];
const DIR_NAMES: [&str; 3] = ["d1", "d2", "e"];
/// Folders nest at most this deep, so trees stay small.
const MAX_DEPTH: usize = 3;

/// Small text from a small alphabet, so that identical edits on two
/// devices and clean three-way merges both happen often; sometimes empty.
fn random_text(rng: &mut fastrand::Rng) -> Vec<u8> {
    let lines = if rng.usize(..8) == 0 {
        0
    } else {
        rng.usize(1..=3)
    };
    let mut text = String::new();
    for _ in 0..lines {
        text.push_str(WORDS[rng.usize(..WORDS.len())]);
        text.push('\n');
    }
    text.into_bytes()
}

/// One edit a person made, for the log and for scoping a partial sync.
pub struct Edit {
    pub description: String,
    /// The paths the edit touched (both ends of a move).
    pub touched: Vec<String>,
}

fn files(tree: &Tree) -> Vec<&String> {
    tree.iter()
        .filter(|(_, n)| matches!(n, Node::File(_)))
        .map(|(p, _)| p)
        .collect()
}

fn dirs(tree: &Tree) -> Vec<&String> {
    tree.iter()
        .filter(|(_, n)| **n == Node::Dir)
        .map(|(p, _)| p)
        .collect()
}

fn pick<'a>(rng: &mut fastrand::Rng, items: &[&'a String]) -> Option<&'a String> {
    (!items.is_empty()).then(|| items[rng.usize(..items.len())])
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

/// A folder to put something in: the root, an existing folder, or a new
/// one below either.
fn random_parent(rng: &mut fastrand::Rng, tree: &Tree) -> String {
    let existing = dirs(tree);
    let base = match rng.usize(..3) {
        0 => String::new(),
        _ => pick(rng, &existing).cloned().unwrap_or_default(),
    };
    let depth = if base.is_empty() {
        0
    } else {
        base.split('/').count()
    };
    if depth < MAX_DEPTH && rng.usize(..3) == 0 {
        join(&base, DIR_NAMES[rng.usize(..DIR_NAMES.len())])
    } else {
        base
    }
}

/// True when `path` can be created as a `kind` entry: no ancestor is a file.
fn placeable(tree: &Tree, path: &str) -> bool {
    let mut prefix = String::new();
    for part in path.split('/') {
        if !prefix.is_empty() {
            if matches!(tree.get(&prefix), Some(Node::File(_))) {
                return false;
            }
            prefix.push('/');
        }
        prefix.push_str(part);
    }
    true
}

fn make_parents(root: &Path, path: &str) {
    if let Some(parent) = root.join(path).parent() {
        fs::create_dir_all(parent).expect("create parent folders");
    }
}

/// Writes `content` to `path` as an editor would: in place, or saved to a
/// side file and renamed over the old one. Sets a fresh modification time.
pub fn write_file(root: &Path, path: &str, content: &[u8], clock: &mut Clock, atomic: bool) {
    make_parents(root, path);
    let target = root.join(path);
    if atomic {
        let side = target.with_file_name(format!(
            "{}.saving",
            target.file_name().expect("a file name").to_string_lossy()
        ));
        fs::write(&side, content).expect("write the side file");
        set_mtime(&side, clock);
        fs::rename(&side, &target).expect("rename the side file in place");
    } else {
        fs::write(&target, content).expect("write a file");
        set_mtime(&target, clock);
    }
}

fn set_mtime(path: &Path, clock: &mut Clock) {
    fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(clock.next()))
        .expect("set the modification time");
}

/// Makes one random edit to the folder at `root`, which holds `tree`, as
/// a person would, or `None` when a few tries found no edit that applies
/// to the tree as it is. A try that finds none changes nothing.
pub fn random_edit(
    rng: &mut fastrand::Rng,
    root: &Path,
    tree: &Tree,
    clock: &mut Clock,
) -> Option<Edit> {
    (0..5).find_map(|_| try_edit(rng, root, tree, clock))
}

fn try_edit(rng: &mut fastrand::Rng, root: &Path, tree: &Tree, clock: &mut Clock) -> Option<Edit> {
    let edit = |description: String, touched: Vec<String>| {
        Some(Edit {
            description,
            touched,
        })
    };
    match rng.usize(..11) {
        // Change who may read, write or run an entry, and nothing else.
        10 => {
            use std::os::unix::fs::PermissionsExt;
            let all: Vec<&String> = tree.keys().collect();
            let path = pick(rng, &all)?.clone();
            let modes: &[u32] = match tree.get(&path) {
                Some(Node::Dir) => &DIR_MODES,
                _ => &FILE_MODES,
            };
            let mode = modes[rng.usize(..modes.len())];
            fs::set_permissions(root.join(&path), fs::Permissions::from_mode(mode)).expect("chmod");
            edit(format!("chmod {mode:o} {path}"), vec![path])
        }
        // Create a file (or overwrite one that happens to be there).
        0..=2 => {
            let path = join(
                &random_parent(rng, tree),
                FILE_NAMES[rng.usize(..FILE_NAMES.len())],
            );
            if tree.get(&path) == Some(&Node::Dir) || !placeable(tree, &path) {
                return None;
            }
            let content = random_text(rng);
            write_file(root, &path, &content, clock, rng.bool());
            edit(format!("create {path} = {}", show(&content)), vec![path])
        }
        // Modify a file: overwrite or append.
        3..=4 => {
            let path = pick(rng, &files(tree))?.clone();
            let Some(Node::File(old)) = tree.get(&path) else {
                unreachable!("picked from the files")
            };
            let (content, how) = if rng.bool() {
                let mut appended = old.clone();
                appended.extend_from_slice(&random_text(rng)[..]);
                (appended, "append")
            } else {
                (random_text(rng), "overwrite")
            };
            write_file(root, &path, &content, clock, rng.bool());
            edit(format!("{how} {path} = {}", show(&content)), vec![path])
        }
        5 => {
            let path = pick(rng, &files(tree))?.clone();
            fs::remove_file(root.join(&path)).expect("delete a file");
            edit(format!("delete {path}"), vec![path])
        }
        // Move or rename a file, possibly over another file (as `mv` does).
        6 => {
            let from = pick(rng, &files(tree))?.clone();
            let to = join(
                &random_parent(rng, tree),
                FILE_NAMES[rng.usize(..FILE_NAMES.len())],
            );
            if to == from || tree.get(&to) == Some(&Node::Dir) || !placeable(tree, &to) {
                return None;
            }
            make_parents(root, &to);
            fs::rename(root.join(&from), root.join(&to)).expect("move a file");
            edit(format!("move {from} -> {to}"), vec![from, to])
        }
        7 => {
            let path = random_parent(rng, tree);
            if path.is_empty() || tree.contains_key(&path) || !placeable(tree, &path) {
                return None;
            }
            fs::create_dir_all(root.join(&path)).expect("create a folder");
            edit(format!("mkdir {path}"), vec![path])
        }
        8 => {
            let path = pick(rng, &dirs(tree))?.clone();
            fs::remove_dir_all(root.join(&path)).expect("delete a folder");
            edit(format!("rmdir -r {path}"), vec![path])
        }
        // Rename or move a folder to a free name outside itself.
        _ => {
            let from = pick(rng, &dirs(tree))?.clone();
            let to = join(
                &random_parent(rng, tree),
                DIR_NAMES[rng.usize(..DIR_NAMES.len())],
            );
            let inside = to == from || to.starts_with(&format!("{from}/"));
            if inside || tree.contains_key(&to) || !placeable(tree, &to) {
                return None;
            }
            make_parents(root, &to);
            fs::rename(root.join(&from), root.join(&to)).expect("rename a folder");
            edit(format!("mvdir {from} -> {to}"), vec![from, to])
        }
    }
}
