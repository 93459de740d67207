//! The vocabulary every stage shares: validated relative paths, content
//! hashes, and the per-path entries that make up a tree snapshot.
//!
//! This module owns the *preconditions* of the rest of the crate. A
//! [`RelPath`] is always normalized and can never escape a sync root, so no
//! callee re-checks it; a [`ContentHash`] is always a full BLAKE3 digest. It
//! does no I/O and knows nothing about SQLite, sockets or remotes.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

mod tokens;

pub use tokens::{FileId, VersionToken};

/// The deepest path Prism Sync syncs, in components. A local path must fit
/// in Linux's `PATH_MAX` of 4,096 bytes, and each level costs at least two
/// (a one-character name and a slash), so no path deeper than 2,048 levels
/// can exist below a local root: a remote that lists deeper folders is
/// broken or hostile (one that serves ever-deeper folders would otherwise
/// be walked without end). Walks stop there and hold the deeper path.
pub const MAX_DEPTH: usize = 2048;

/// The longest path Prism Sync syncs, in bytes, for the same reason: it
/// could not be written below any local root. Bounding it also bounds what
/// a hostile listing can make a walk hold (paths of up to 255-byte names).
pub const MAX_PATH_BYTES: usize = 4096;

/// A path relative to a sync root: `/`-separated UTF-8 components, none
/// empty, `.`, `..`, or containing `/`, NUL or other control characters.
///
/// Paths coming from a remote listing are untrusted; [`RelPath::new`] is the
/// one gate they pass through, so a hostile name can never address anything
/// outside the pair's root.
///
/// The text is shared, not copied, by clones: one sync holds every path in
/// the base, in both sides' listings and in reconcile's working trees, and
/// a clone of a shared path costs a reference count instead of a copy of
/// its bytes (see `tracker::scan`, which reuses the base's paths).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelPath(Arc<str>);

/// Why a string is not a valid [`RelPath`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path is empty")]
    Empty,
    #[error("the path {0:?} is absolute")]
    Absolute(String),
    #[error("the path {0:?} has an empty, `.` or `..` component")]
    BadComponent(String),
    #[error("the path {0:?} contains a control character")]
    ControlCharacter(String),
    #[error("the path {0:?} is not valid UTF-8")]
    NotUtf8(String),
}

/// The longest file name (one path component, in bytes) common file
/// systems accept: `NAME_MAX` on Linux and macOS.
pub const MAX_NAME_BYTES: usize = 255;

/// The most of a device name a conflict copy's name carries.
pub const MAX_COPY_DEVICE_BYTES: usize = 64;

/// The longest extension a conflict copy's name keeps as one.
pub const MAX_COPY_EXTENSION_BYTES: usize = 32;

/// The longest prefix of `text` within `max` bytes that ends on a
/// character boundary.
fn cut_at_char(text: &str, max: usize) -> &str {
    let mut cut = text.len().min(max);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    &text[..cut]
}

impl RelPath {
    /// Validates `s` as a relative path. Backslashes are rejected as control
    /// of the separator is ours alone (a remote name `a\..\b` must not turn
    /// into a traversal on a platform that treats `\` as a separator).
    pub fn new(s: &str) -> Result<RelPath, PathError> {
        if s.is_empty() {
            return Err(PathError::Empty);
        }
        if s.starts_with('/') {
            return Err(PathError::Absolute(s.to_owned()));
        }
        for component in s.split('/') {
            Self::check_component(component, s)?;
        }
        Ok(RelPath(Arc::from(s)))
    }

    /// Converts a file-system path below a root into a `RelPath`.
    pub fn from_fs(relative: &Path) -> Result<RelPath, PathError> {
        let Some(s) = relative.to_str() else {
            return Err(PathError::NotUtf8(relative.to_string_lossy().into_owned()));
        };
        RelPath::new(s)
    }

    fn check_component(component: &str, whole: &str) -> Result<(), PathError> {
        if component.is_empty() || component == "." || component == ".." {
            return Err(PathError::BadComponent(whole.to_owned()));
        }
        if component.chars().any(|c| c.is_control() || c == '\\') {
            return Err(PathError::ControlCharacter(whole.to_owned()));
        }
        Ok(())
    }

    /// Appends one validated component.
    pub fn join(&self, name: &str) -> Result<RelPath, PathError> {
        if name.contains('/') {
            return Err(PathError::BadComponent(format!("{}/{name}", self.0)));
        }
        Self::check_component(name, name)?;
        Ok(RelPath(format!("{}/{name}", self.0).into()))
    }

    /// A single-component path from a directory entry name.
    pub fn from_name(name: &str) -> Result<RelPath, PathError> {
        if name.contains('/') {
            return Err(PathError::BadComponent(name.to_owned()));
        }
        RelPath::new(name)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The last component.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }

    /// The containing folder, or `None` for a top-level entry.
    pub fn parent(&self) -> Option<RelPath> {
        self.0.rfind('/').map(|i| RelPath(Arc::from(&self.0[..i])))
    }

    /// All proper ancestors, nearest last (`a`, `a/b` for `a/b/c`).
    pub fn ancestors(&self) -> impl Iterator<Item = RelPath> + '_ {
        self.0
            .match_indices('/')
            .map(|(i, _)| RelPath(Arc::from(&self.0[..i])))
    }

    /// Number of components.
    pub fn depth(&self) -> usize {
        self.0.split('/').count()
    }

    /// True when the path is deeper or longer than any path Prism Sync
    /// syncs (see [`MAX_DEPTH`]). Such a path is never listed into: a
    /// listing holds it with a problem (see [`RelPath::too_deep_message`]).
    pub fn too_deep(&self) -> bool {
        self.0.len() > MAX_PATH_BYTES || self.depth() > MAX_DEPTH
    }

    /// The problem a listing reports for a [`RelPath::too_deep`] path.
    pub fn too_deep_message(&self) -> String {
        format!(
            "more than {MAX_DEPTH} folder levels deep or longer than {MAX_PATH_BYTES} bytes; \
             it is not synced and is left alone on both sides (move it higher up to sync it)"
        )
    }

    /// The path for a message: whole when short, else its first and last
    /// components around the number of levels left out.
    pub fn abbreviated(&self) -> String {
        const KEEP: usize = 3;
        let depth = self.depth();
        if depth <= 2 * KEEP + 1 && self.0.len() <= 200 {
            return self.0.to_string();
        }
        let parts: Vec<&str> = self.0.split('/').collect();
        format!(
            "{}/…({} levels)…/{}",
            parts[..KEEP].join("/"),
            depth - KEEP - 1,
            parts[depth - 1]
        )
    }

    /// True when `self` is `dir` or lies below it (component-wise, so
    /// `ab/c` is not below `a`).
    pub fn is_within(&self, dir: &RelPath) -> bool {
        self.0 == dir.0
            || (self.0.len() > dir.0.len()
                && self.0.starts_with(&*dir.0)
                && self.0.as_bytes()[dir.0.len()] == b'/')
    }

    /// Rewrites the prefix `from` to `to`: `a/x` under a move `a → b` becomes
    /// `b/x`. Returns `None` when `self` is not within `from`.
    pub fn rebase(&self, from: &RelPath, to: &RelPath) -> Option<RelPath> {
        if !self.is_within(from) {
            return None;
        }
        Some(RelPath(
            format!("{}{}", to.0, &self.0[from.0.len()..]).into(),
        ))
    }

    /// The sibling name for a conflict copy:
    /// `notes/a.md` → `notes/a.conflict-20250209-120000-laptop.md`. An
    /// `attempt` after the first is added to the device (`laptop-2`), for
    /// a name that is taken.
    ///
    /// The name stays within [`MAX_NAME_BYTES`]: the stem is shortened (at
    /// a character boundary) so the stamp, the device and the extension
    /// survive. A device name is cut to [`MAX_COPY_DEVICE_BYTES`], and an
    /// "extension" longer than [`MAX_COPY_EXTENSION_BYTES`] is taken as
    /// part of the stem, so there is always room for a good part of it.
    pub fn conflict_copy(&self, stamp: &str, device: &str, attempt: u32) -> RelPath {
        let name = self.file_name();
        let device: String = device
            .chars()
            .map(|c| {
                if c.is_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let device = cut_at_char(&device, MAX_COPY_DEVICE_BYTES);
        let attempt = match attempt {
            0 | 1 => String::new(),
            n => format!("-{n}"),
        };
        let (stem, extension) = match name.rfind('.') {
            Some(dot) if dot > 0 && name.len() - dot <= MAX_COPY_EXTENSION_BYTES => {
                name.split_at(dot)
            }
            _ => (name, ""),
        };
        let tail = format!(".conflict-{stamp}-{device}{attempt}{extension}");
        let stem = cut_at_char(stem, MAX_NAME_BYTES.saturating_sub(tail.len()));
        let new_name = format!("{stem}{tail}");
        match self.parent() {
            Some(parent) => RelPath(format!("{}/{new_name}", parent.0).into()),
            None => RelPath(new_name.into()),
        }
    }

    /// The path on disk below `root`.
    pub fn to_fs(&self, root: &Path) -> PathBuf {
        let mut path = root.to_path_buf();
        path.extend(self.0.split('/'));
        path
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// A BLAKE3 digest of a file's content.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentHash(pub [u8; 32]);

impl ContentHash {
    pub fn of_bytes(bytes: &[u8]) -> ContentHash {
        ContentHash(*blake3::hash(bytes).as_bytes())
    }

    pub fn to_hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }

    pub fn from_hex(s: &str) -> Option<ContentHash> {
        blake3::Hash::from_hex(s)
            .ok()
            .map(|h| ContentHash(*h.as_bytes()))
    }

    /// The first 12 hex digits: enough for people to tell versions apart.
    pub fn short(&self) -> String {
        self.to_hex()[..12].to_owned()
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.short())
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// The permission bits a path carries: read, write and execute for its
/// owner, group and others (`0o777` at most).
///
/// Set-user-ID, set-group-ID and sticky are deliberately not part of it:
/// a synced file is written by the agent's user on another machine, and
/// a set-ID bit there would run with that user's rights a file someone
/// else could write; set-group-ID and sticky on a folder mean something
/// only together with its group and the other users of that machine,
/// which Prism Sync does not sync. A replica keeps the ones its own
/// entries already have where it changes only the mode.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mode(u16);

impl Mode {
    /// What a file made without a known mode gets, before the umask.
    pub const DEFAULT_FILE: Mode = Mode(0o666);
    /// What a folder made without a known mode gets, before the umask.
    pub const DEFAULT_DIR: Mode = Mode(0o777);

    /// The rwx bits of `bits`; anything above them is dropped.
    pub fn from_bits(bits: u32) -> Mode {
        Mode((bits & 0o777) as u16)
    }

    pub fn bits(self) -> u32 {
        u32::from(self.0)
    }

    /// The bits both allow: never wider than either.
    pub fn narrowest(self, other: Mode) -> Mode {
        Mode(self.0 & other.0)
    }

    /// What a folder with this mode is created with: its owner may always
    /// put its contents in; a narrower mode is set once they are there.
    /// Only the owner gains, who could `chmod` it anyway.
    pub fn fillable(self) -> Mode {
        Mode(self.0 | 0o700)
    }

    /// True when `self` allows nothing `other` does not.
    pub fn is_within(self, other: Mode) -> bool {
        self.0 & !other.0 == 0
    }
}

impl fmt::Debug for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0o{:03o}", self.0)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:03o}", self.0)
    }
}

/// What a file is: its content hash, size, modification time and mode.
/// Two files are the same version exactly when their hashes are equal;
/// size and mtime are carried for the executor (to preserve mtime, to
/// re-check cheaply) and for people (conflict metadata).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct FileMeta {
    pub hash: ContentHash,
    pub size: u64,
    /// Nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// `None` where the side cannot hold permission bits (WebDAV), or
    /// where the base predates them.
    pub mode: Option<Mode>,
}

/// What a folder is beyond being one: its mode (`None` as for a file).
/// A struct, not a bare mode, so that a backend keeping more metadata
/// (object stores carry the mode in an object's metadata) extends it in
/// one place.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct DirMeta {
    pub mode: Option<Mode>,
}

/// What one path holds, the same on every side: a folder or a file, with
/// its mode.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Entry {
    Dir(DirMeta),
    File(FileMeta),
}

impl Entry {
    /// A folder with `mode`.
    pub fn dir(mode: Option<Mode>) -> Entry {
        Entry::Dir(DirMeta { mode })
    }

    pub fn is_dir(&self) -> bool {
        matches!(self, Entry::Dir(_))
    }

    pub fn file(&self) -> Option<&FileMeta> {
        match self {
            Entry::File(meta) => Some(meta),
            Entry::Dir(_) => None,
        }
    }

    /// The permission bits, where the side has them.
    pub fn mode(&self) -> Option<Mode> {
        match self {
            Entry::Dir(meta) => meta.mode,
            Entry::File(meta) => meta.mode,
        }
    }

    /// The same entry with other permission bits.
    pub fn with_mode(self, mode: Option<Mode>) -> Entry {
        match self {
            Entry::Dir(_) => Entry::Dir(DirMeta { mode }),
            Entry::File(meta) => Entry::File(FileMeta { mode, ..meta }),
        }
    }

    /// Same content: both folders, or both files with the same hash.
    /// Modes are not content (see [`Entry::same_version`]).
    pub fn same_content(&self, other: &Entry) -> bool {
        match (self, other) {
            (Entry::Dir(_), Entry::Dir(_)) => true,
            (Entry::File(a), Entry::File(b)) => a.hash == b.hash,
            _ => false,
        }
    }

    /// Same content and the same mode, where an unknown mode equals only
    /// an unknown one: what a base must record for nothing to be pending.
    pub fn same_version(&self, other: &Entry) -> bool {
        self.same_content(other) && self.mode() == other.mode()
    }
}

/// One path as seen on one side right now.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SideEntry {
    pub entry: Entry,
    /// Identity on this side, if the side has one.
    pub id: Option<FileId>,
    /// The remote's version token (an ETag, or size+mtime); `None` on the
    /// local side, whose cheap identity is size, mtime and inode.
    pub version: Option<VersionToken>,
}

impl SideEntry {
    pub fn new(entry: Entry) -> SideEntry {
        SideEntry {
            entry,
            id: None,
            version: None,
        }
    }

    /// The version token's text, where the side gave one.
    pub fn version_text(&self) -> Option<std::borrow::Cow<'_, str>> {
        self.version.as_ref().map(VersionToken::as_str)
    }
}

/// One path as both sides last agreed on it (the *base*).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct BaseEntry {
    pub entry: Entry,
    pub local_id: Option<FileId>,
    pub remote_id: Option<FileId>,
    /// The remote's version token at that time (an ETag, or size+mtime):
    /// what a conditional write on the remote must still find there.
    pub remote_version: Option<VersionToken>,
}

impl BaseEntry {
    pub fn new(entry: Entry) -> BaseEntry {
        BaseEntry {
            entry,
            local_id: None,
            remote_id: None,
            remote_version: None,
        }
    }
}

/// A snapshot of one side, sorted by path.
pub type SideTree = BTreeMap<RelPath, SideEntry>;

/// The base snapshot, sorted by path.
pub type BaseTree = BTreeMap<RelPath, BaseEntry>;

/// The map of `entries`, whose keys are unique, in any order.
///
/// Collecting a list into a `BTreeMap` fills its nodes (inserting keys one
/// by one in ascending order leaves them half empty), but holds the whole
/// list until the whole map is built: twice a tree's size at once, the
/// largest moment of a sync that lists a side while the base and the other
/// side are held. The map is built here from the largest keys down, a
/// part at a time, each part a quarter of what the map already holds and
/// given back as it is taken: the list and the map never both hold much
/// more than the entries. Each part is merged into the map in one pass,
/// so the entries move about five times in all.
pub fn map_from_list<K: Ord, V>(mut entries: Vec<(K, V)>) -> BTreeMap<K, V> {
    const SMALLEST_PART: usize = 4096;
    entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut map = BTreeMap::new();
    while !entries.is_empty() {
        let take = (map.len() / 4).max(SMALLEST_PART).min(entries.len());
        let part = entries.split_off(entries.len() - take);
        entries.shrink_to_fit();
        let mut lower: BTreeMap<K, V> = part.into_iter().collect();
        lower.append(&mut map);
        map = lower;
    }
    map
}

/// What a scan or a sync looks at: the whole pair, or some paths (each
/// with everything below it) that a watcher or a user named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    Full,
    Paths(Vec<RelPath>),
}

impl Scope {
    /// True when `path` is inside the scope.
    pub fn contains(&self, path: &RelPath) -> bool {
        match self {
            Scope::Full => true,
            Scope::Paths(roots) => roots.iter().any(|root| path.is_within(root)),
        }
    }
}

/// The two ends of a pair.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub enum Side {
    Local,
    Remote,
}

impl Side {
    pub fn other(self) -> Side {
        match self {
            Side::Local => Side::Remote,
            Side::Remote => Side::Local,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Side::Local => "local",
            Side::Remote => "remote",
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The conflict strategies of the specification's section 5.2.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Strategy {
    /// Keep both versions side by side; the user decides later.
    Manual,
    KeepLocal,
    KeepRemote,
    /// Three-way text merge against the base; falls back to `Manual`.
    AutoMerge,
}

impl Strategy {
    pub const ALL: [Strategy; 4] = [
        Strategy::Manual,
        Strategy::KeepLocal,
        Strategy::KeepRemote,
        Strategy::AutoMerge,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Manual => "manual",
            Strategy::KeepLocal => "keep_local",
            Strategy::KeepRemote => "keep_remote",
            Strategy::AutoMerge => "auto_merge",
        }
    }

    pub fn parse(s: &str) -> Option<Strategy> {
        Strategy::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rel_path_rejects_traversal_and_control_characters() {
        for bad in [
            "", "/etc", "a/../b", "..", "a//b", "a/", "./a", "a\0b", "a\nb", "a\\..\\b",
        ] {
            assert!(RelPath::new(bad).is_err(), "{bad:?} must be rejected");
        }
        assert_eq!(
            RelPath::new("docs/page.md").unwrap().as_str(),
            "docs/page.md"
        );
    }

    #[test]
    fn within_is_component_wise() {
        let a = RelPath::new("a").unwrap();
        assert!(RelPath::new("a/b").unwrap().is_within(&a));
        assert!(a.is_within(&a));
        assert!(!RelPath::new("ab/c").unwrap().is_within(&a));
    }

    #[test]
    fn rebase_moves_a_subtree() {
        let from = RelPath::new("old").unwrap();
        let to = RelPath::new("new/place").unwrap();
        let p = RelPath::new("old/x/y.md").unwrap();
        assert_eq!(p.rebase(&from, &to).unwrap().as_str(), "new/place/x/y.md");
        assert!(
            RelPath::new("older/x")
                .unwrap()
                .rebase(&from, &to)
                .is_none()
        );
    }

    #[test]
    fn conflict_copy_keeps_the_extension() {
        let p = RelPath::new("docs/page.md").unwrap();
        assert_eq!(
            p.conflict_copy("20250209-120000", "my laptop", 1).as_str(),
            "docs/page.conflict-20250209-120000-my_laptop.md"
        );
        let q = RelPath::new("Makefile").unwrap();
        assert_eq!(
            q.conflict_copy("20250209-120000", "pc", 1).as_str(),
            "Makefile.conflict-20250209-120000-pc"
        );
        let dotfile = RelPath::new(".bashrc").unwrap();
        assert_eq!(
            dotfile.conflict_copy("1", "pc", 1).as_str(),
            ".bashrc.conflict-1-pc"
        );
    }

    #[test]
    fn conflict_copies_of_long_names_fit_and_keep_stamp_device_and_extension() {
        let stamp = "20250209-120000";
        let long = format!("dir/{}.pdf", "é".repeat(123)); // 246 + 4 bytes
        let copy = RelPath::new(&long)
            .unwrap()
            .conflict_copy(stamp, "laptop", 3);
        let name = copy.file_name();
        assert_eq!(name.len(), MAX_NAME_BYTES - 1, "{name}");
        assert!(
            name.ends_with(".conflict-20250209-120000-laptop-3.pdf"),
            "{name}"
        );
        assert!(name.starts_with("éé"), "{name}");
        assert_eq!(copy.parent().unwrap().as_str(), "dir");
        RelPath::new(copy.as_str()).unwrap();

        // A long device name is cut; a long "extension" is stem.
        let device = "d".repeat(300);
        let odd = format!("a.{}", "x".repeat(250));
        let copy = RelPath::new(&odd).unwrap().conflict_copy(stamp, &device, 1);
        let name = copy.file_name();
        assert_eq!(name.len(), MAX_NAME_BYTES, "{name}");
        assert!(
            name.ends_with(&format!("-{}", "d".repeat(MAX_COPY_DEVICE_BYTES))),
            "{name}"
        );
        assert!(name.starts_with("a.xxx"), "{name}");

        // Every attempt of every name fits.
        for len in [5, 100, 200, 230, 240, 250, 254, 255] {
            let name = "n".repeat(len - 4) + ".txt";
            for attempt in [1, 2, 20] {
                let copy = RelPath::new(&name)
                    .unwrap()
                    .conflict_copy(stamp, "pc", attempt);
                assert!(copy.as_str().len() <= MAX_NAME_BYTES, "{copy}");
                assert!(copy.as_str().ends_with(".txt"), "{copy}");
            }
        }
    }

    /// A sync holds these once per path, in the base and in both sides'
    /// listings: a field that grows them grows every sync's memory by as
    /// much per path. Change the figures only on purpose.
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn per_path_types_stay_small() {
        use std::mem::size_of;
        assert_eq!(size_of::<RelPath>(), 16, "a shared pointer and a length");
        assert_eq!(size_of::<FileMeta>(), 56);
        assert_eq!(
            size_of::<Entry>(),
            56,
            "a folder fits beside a file's fields"
        );
        assert_eq!(size_of::<Option<Entry>>(), 56);
        assert_eq!(size_of::<SideEntry>(), 96);
        assert_eq!(size_of::<BaseEntry>(), 112);
    }

    #[test]
    fn a_map_from_a_list_holds_every_entry_in_order() {
        for len in [0, 1, 4095, 4096, 4097, 30_000] {
            // Descending, then a run ascending: any order comes out sorted.
            let list: Vec<(u32, u32)> = (0..len / 2)
                .rev()
                .chain(len / 2..len)
                .map(|k| (k, k * 2))
                .collect();
            let map = map_from_list(list);
            assert_eq!(map.len() as u32, len);
            assert!(
                map.iter()
                    .enumerate()
                    .all(|(i, (k, v))| *k == i as u32 && *v == k * 2)
            );
        }
    }

    #[test]
    fn clones_of_a_path_share_its_text() {
        let p = RelPath::new("a/b/c.txt").unwrap();
        let q = p.clone();
        assert!(std::ptr::eq(p.as_str(), q.as_str()));
        assert_eq!(p, RelPath::new("a/b/c.txt").unwrap());
    }

    #[test]
    fn ancestors_are_nearest_last() {
        let p = RelPath::new("a/b/c").unwrap();
        let names: Vec<_> = p.ancestors().map(|a| a.as_str().to_owned()).collect();
        assert_eq!(names, ["a", "a/b"]);
    }
}
