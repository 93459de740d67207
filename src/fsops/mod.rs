//! The careful local file-system primitives every writer shares: stat with
//! nanosecond mtimes, inode identity and permission bits, staged atomic
//! writes (temporary file in the target's folder, created with its final
//! mode or narrower, fsync, verify, rename without replacing), folders
//! created with their mode, and the trash that every overwritten or deleted
//! version goes to (owner-only folders, each version keeping its mode).
//!
//! This module knows nothing about pairs, plans or the journal. It is used
//! for the local side of every pair and for the `file://` remote, so both
//! follow the same rules: a half-written file is never visible under its
//! real name, and nothing is removed without first being moved to a trash.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::clock::Clock;
use crate::model::{ContentHash, Entry, FileId, Mode, RelPath};
use crate::remote::layout::{self, TrashBatches, temp_name_for};
use crate::timefmt;

#[cfg(unix)]
pub mod beneath;
mod flush;
pub use flush::flush_all;

/// What kind of thing a path is, without following symlinks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatKind {
    File,
    Dir,
    /// Symlinks, sockets, devices: never synced.
    Other,
}

/// The cheap identity of a path: enough to tell "unchanged" without reading.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stat {
    pub kind: StatKind,
    pub size: u64,
    pub mtime_ns: i64,
    pub id: Option<FileId>,
    /// The permission bits (`None` where the platform has none).
    pub mode: Option<Mode>,
}

impl Stat {
    /// The version token of this file: size and mtime. Two stats with the
    /// same token are assumed to hold the same bytes (the stat cache rule).
    pub fn version(&self) -> String {
        format!("{}:{}", self.size, self.mtime_ns)
    }
}

/// `lstat`, with `None` for a path that does not exist.
pub fn stat(path: &Path) -> io::Result<Option<Stat>> {
    match fs::symlink_metadata(path) {
        Ok(meta) => Ok(Some(stat_of(&meta))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Converts metadata already at hand.
pub fn stat_of(meta: &fs::Metadata) -> Stat {
    let file_type = meta.file_type();
    let kind = if file_type.is_file() {
        StatKind::File
    } else if file_type.is_dir() {
        StatKind::Dir
    } else {
        StatKind::Other
    };
    let mtime_ns = meta.modified().map(timefmt::to_unix_ns).unwrap_or(0);
    Stat {
        kind,
        size: if kind == StatKind::File {
            meta.len()
        } else {
            0
        },
        mtime_ns,
        id: file_id(meta),
        mode: mode_of(meta),
    }
}

/// The permission bits of `meta`, where the platform has them.
#[cfg(unix)]
pub fn mode_of(meta: &fs::Metadata) -> Option<Mode> {
    use std::os::unix::fs::PermissionsExt;
    Some(Mode::from_bits(meta.permissions().mode()))
}

#[cfg(not(unix))]
/// See the Unix version.
pub fn mode_of(_meta: &fs::Metadata) -> Option<Mode> {
    None
}

#[cfg(unix)]
fn file_id(meta: &fs::Metadata) -> Option<FileId> {
    use std::os::unix::fs::MetadataExt;
    Some(FileId::inode(meta.dev(), meta.ino()))
}

#[cfg(not(unix))]
fn file_id(_meta: &fs::Metadata) -> Option<FileId> {
    None
}

/// A file written under a temporary name beside its target, flushed to
/// disk, whose content hash is known. Dropping it removes the temporary.
#[derive(Debug)]
pub struct Staged {
    temp: Option<PathBuf>,
    pub hash: ContentHash,
    pub size: u64,
    /// The temporary file's stat as written, read from its open handle:
    /// what the commit records as the new version. Reading it again after
    /// the rename would cost a look-up and could record the stat of an
    /// edit made in between, which would then read as already synced.
    pub stat: Option<Stat>,
}

impl Staged {
    pub fn temp_path(&self) -> &Path {
        self.temp
            .as_deref()
            .expect("a staged file is consumed only by commit")
    }

    /// Hands the temporary file over to the caller, who must commit or
    /// remove it (see [`Staged::from_parts`]).
    pub fn into_parts(mut self) -> (PathBuf, ContentHash, u64) {
        let temp = self.temp.take().expect("a staged file is consumed once");
        (temp, self.hash, self.size)
    }

    /// A guard for the empty temporary file `temp` just created (see
    /// [`create_temp`]), to be filled by [`fill`].
    pub fn new_temp(temp: PathBuf) -> Staged {
        Staged {
            temp: Some(temp),
            hash: ContentHash([0; 32]),
            size: 0,
            stat: None,
        }
    }

    /// Takes a temporary file back under this guard's care.
    pub fn from_parts(temp: PathBuf, hash: ContentHash, size: u64, stat: Option<Stat>) -> Staged {
        Staged {
            temp: Some(temp),
            hash,
            size,
            stat,
        }
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some(temp) = self.temp.take() {
            let _ = fs::remove_file(temp);
        }
    }
}

/// The temporary name for `target`'s staged write, in the same folder:
/// hidden and recognisable as ours, so scanners ignore it and a crash's
/// leftovers can be swept.
pub fn temp_path_for(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    target.with_file_name(temp_name_for(&name))
}

/// Streams `content` into a temporary file beside `target`. `mtime_ns`,
/// when given, is set on the file so both sides of a pair show the same
/// modification time; `mode` as for [`create_temp`].
///
/// The file is not flushed here: [`flush_all`] flushes a whole batch of
/// staged files at once, before any of them is renamed into place.
pub fn stage(
    target: &Path,
    content: &mut dyn Read,
    mtime_ns: Option<i64>,
    mode: Option<Mode>,
) -> io::Result<Staged> {
    let (file, staged) = create_temp(target, mode)?;
    fill(file, staged, content, mtime_ns)
}

/// Creates the empty temporary file of `target`'s staged write, removed
/// again when the returned guard is dropped. Fails with `NotFound` when
/// `target`'s folder does not exist.
///
/// With a `mode`, the file is created with it (the umask can only narrow
/// that) and then given exactly that mode before a byte is written: it is
/// never, not for a moment, readable by anyone the mode does not allow.
/// Without one it gets the default (`0o666` less the umask).
pub fn create_temp(target: &Path, mode: Option<Mode>) -> io::Result<(File, Staged)> {
    let temp = temp_path_for(target);
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    if let Some(mode) = mode {
        set_create_mode(&mut options, mode);
    }
    let file = options.open(&temp)?;
    if let Some(mode) = mode
        && let Err(e) = set_file_mode(&file, mode)
    {
        let _ = fs::remove_file(&temp);
        return Err(e);
    }
    let staged = Staged {
        temp: Some(temp),
        hash: ContentHash([0; 32]),
        size: 0,
        stat: None,
    };
    Ok((file, staged))
}

/// Streams `content` into a temporary file made by [`create_temp`] (see
/// [`stage`]).
pub fn fill(
    mut file: File,
    mut staged: Staged,
    content: &mut dyn Read,
    mtime_ns: Option<i64>,
) -> io::Result<Staged> {
    let mut hasher = blake3::Hasher::new();
    crate::iobuf::with_buffer(|buffer| -> io::Result<()> {
        loop {
            let n = match content.read(buffer) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            hasher.update(&buffer[..n]);
            file.write_all(&buffer[..n])?;
            staged.size += n as u64;
        }
    })?;
    if let Some(ns) = mtime_ns {
        file.set_modified(timefmt::from_unix_ns(ns))?;
    }
    staged.hash = ContentHash(*hasher.finalize().as_bytes());
    staged.stat = Some(stat_of(&file.metadata()?));
    Ok(staged)
}

/// Makes `options` create a file with `mode` (less the umask).
#[cfg(unix)]
pub fn set_create_mode(options: &mut OpenOptions, mode: Mode) {
    use std::os::unix::fs::OpenOptionsExt;
    options.mode(mode.bits());
}

#[cfg(not(unix))]
/// See the Unix version: elsewhere files have no mode bits.
pub fn set_create_mode(_options: &mut OpenOptions, _mode: Mode) {}

/// Gives an open file exactly `mode`, whatever the umask took away when
/// it was created.
#[cfg(unix)]
pub fn set_file_mode(file: &File, mode: Mode) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(fs::Permissions::from_mode(mode.bits()))
}

#[cfg(not(unix))]
/// See the Unix version.
pub fn set_file_mode(_file: &File, _mode: Mode) -> io::Result<()> {
    Ok(())
}

/// Creates the folder `path` (its parent exists) with exactly `mode`, or
/// the default (`0o777` less the umask) without one. Like [`create_temp`],
/// it is created with that mode (the umask can only narrow it) and then
/// given it exactly. An existing folder is left as it is:
/// `AlreadyExists`.
pub fn create_dir(path: &Path, mode: Option<Mode>) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    #[cfg(unix)]
    if let Some(mode) = mode {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(mode.bits());
    }
    builder.create(path)?;
    match mode {
        Some(mode) => set_path_mode(path, mode, None),
        None => Ok(()),
    }
}

/// Sets the permission bits of `path` (not following a symlink there) to
/// `mode`, keeping its set-ID and sticky bits, which Prism Sync neither
/// syncs nor clears. With `expect`, the path must still match it and have
/// the mode `expect` names, else it is `Changed`.
pub fn set_path_mode(path: &Path, mode: Mode, expect: Option<(&Expect, Mode)>) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = fs::symlink_metadata(path)?;
        if let Some((expect, current)) = expect
            && (!expect.matches(Some(&stat_of(&meta))) || mode_of(&meta) != Some(current))
        {
            return Err(io::Error::other(ModeChanged));
        }
        if meta.file_type().is_symlink() {
            return Err(io::Error::other(ModeChanged));
        }
        let special = meta.permissions().mode() & 0o7000;
        // RACE: the path may be replaced by a symlink between the look
        // above and this call, which follows it; only someone who can
        // write into the synced folder can do that, and the target is
        // then given a mode the plan chose for a file of the same user.
        fs::set_permissions(path, fs::Permissions::from_mode(special | mode.bits()))
    }
    #[cfg(not(unix))]
    {
        let _ = (path, mode, expect);
        Ok(())
    }
}

/// The error [`set_path_mode`] wraps when the path is not what was
/// expected.
#[derive(Debug, thiserror::Error)]
#[error("changed since it was scanned")]
pub struct ModeChanged;

/// True for the error of [`set_path_mode`] that means "changed".
pub fn is_mode_changed(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<ModeChanged>())
}

/// Takes an exclusive advisory lock on `file` without waiting: false when
/// another open file (in this or another process) holds one. Released when
/// the file is closed.
#[cfg(unix)]
pub fn try_lock_exclusive(file: &File) -> std::io::Result<bool> {
    use std::os::unix::io::AsRawFd;
    // SAFETY: the descriptor is owned by `file` and valid for the call.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(err)
    }
}

#[cfg(not(unix))]
/// See the Unix version.
pub fn try_lock_exclusive(file: &File) -> std::io::Result<bool> {
    match file.try_lock() {
        Ok(()) => Ok(true),
        Err(std::fs::TryLockError::WouldBlock) => Ok(false),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

/// Why a commit did not happen. Nothing was lost in either case.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// The target is not what the plan saw any more: someone changed it.
    #[error("{path} changed since it was scanned; the write was not done and will be re-planned")]
    Changed { path: PathBuf },
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// What a destructive step expects to find at its target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Nothing may be there.
    Absent,
    /// A file with exactly this size and mtime, and this mode where one is
    /// given (a `chmod` since the scan is a change like any other). Where
    /// the listing carried the backend's own version token (an ETag),
    /// `version` holds it: a backend with tokens checks that (a
    /// conditional request), the others keep checking size and mtime.
    File {
        size: u64,
        mtime_ns: i64,
        mode: Option<Mode>,
        version: Option<String>,
    },
    /// A folder.
    Dir,
}

impl Expect {
    /// What a step must find where a listing showed `entry` (`None`:
    /// nothing), without a version token.
    pub fn of(entry: Option<&Entry>) -> Expect {
        Expect::of_version(entry, None)
    }

    /// What a step must find where a listing showed `entry` with the
    /// backend's version token `version` (kept for a file only).
    pub fn of_version(entry: Option<&Entry>, version: Option<&str>) -> Expect {
        match entry {
            None => Expect::Absent,
            Some(Entry::Dir(_)) => Expect::Dir,
            Some(Entry::File(meta)) => Expect::File {
                size: meta.size,
                mtime_ns: meta.mtime_ns,
                mode: meta.mode,
                version: version.map(str::to_owned),
            },
        }
    }

    /// The version token a file expectation carries, if any.
    pub fn version(&self) -> Option<&str> {
        match self {
            Expect::File { version, .. } => version.as_deref(),
            Expect::Absent | Expect::Dir => None,
        }
    }

    /// True when `found` is what was expected. A stat has no version
    /// token: size, mtime and mode decide.
    pub fn matches(&self, found: Option<&Stat>) -> bool {
        match (self, found) {
            (Expect::Absent, None) => true,
            (
                Expect::File {
                    size,
                    mtime_ns,
                    mode,
                    ..
                },
                Some(stat),
            ) => {
                stat.kind == StatKind::File
                    && stat.size == *size
                    && stat.mtime_ns == *mtime_ns
                    && (mode.is_none() || stat.mode.is_none() || *mode == stat.mode)
            }
            (Expect::Dir, Some(stat)) => stat.kind == StatKind::Dir,
            _ => false,
        }
    }
}

/// Puts a staged file in place of `target`. The current version, if any,
/// must match `expect`; it goes to `trash` first, and the staged file is
/// renamed in without replacing anything, so a file that appears in the
/// meantime is never clobbered. The file's data is already on disk; the
/// caller flushes the folder entry (see `sync_dir`), typically once for a
/// whole batch of files.
pub fn commit(
    staged: Staged,
    target: &Path,
    expect: &Expect,
    trash: &Trash,
    rel: &RelPath,
) -> Result<Committed, CommitError> {
    // Nothing may be there: the rename below refuses to replace anything,
    // so looking first would only cost a look-up.
    let current = match expect {
        Expect::Absent => None,
        _ => stat(target)?,
    };
    if !expect.matches(current.as_ref()) {
        return Err(CommitError::Changed {
            path: target.to_path_buf(),
        });
    }
    let trashed = match current {
        // RACE: the user may write `target` between the check above and
        // this rename. Their version then lands in the trash instead of
        // being replaced in place; it is kept, not lost.
        Some(_) => Some(trash.put(target, rel)?),
        None => None,
    };
    let mut staged = staged;
    let temp = staged.temp.take().expect("staged files are committed once");
    if let Err(e) = rename_noreplace(&temp, target) {
        let _ = fs::remove_file(&temp);
        // The old version went to the trash but the new one could not take
        // its place: put the old one back, so the path does not read as
        // deleted at the next sync. If something appeared there meanwhile,
        // the old version stays in the trash.
        if let Some(trashed) = &trashed {
            let _ = rename_noreplace(trashed, target);
        }
        // AlreadyExists: a file appeared at the target. NotFound: the
        // folder (with the staged file in it) was moved or deleted meanwhile.
        return Err(
            if matches!(
                e.kind(),
                io::ErrorKind::AlreadyExists | io::ErrorKind::NotFound
            ) {
                CommitError::Changed {
                    path: target.to_path_buf(),
                }
            } else {
                CommitError::Io(e)
            },
        );
    }
    let stat = match staged.stat.take() {
        Some(stat) => stat,
        None => stat(target)?
            .ok_or_else(|| io::Error::other("the file vanished right after it was written"))?,
    };
    Ok(Committed { stat, trashed })
}

/// [`commit`] for a target reached below a replica's root without
/// following a symbolic link (see [`beneath`]): the current version is
/// looked at, trashed and replaced in the folder that was opened, never
/// through a link swapped in on the way. The staged file lies beside the
/// target, as [`Staged::new_temp`] made it.
#[cfg(unix)]
pub fn commit_at(
    staged: Staged,
    target: &beneath::At,
    expect: &Expect,
    trash: &Trash,
    rel: &RelPath,
) -> Result<Committed, CommitError> {
    let current = match expect {
        Expect::Absent => None,
        _ => target.stat()?,
    };
    if !expect.matches(current.as_ref()) {
        return Err(CommitError::Changed {
            path: target.path().to_path_buf(),
        });
    }
    let trashed = match current {
        // RACE: as in `commit`, the user's write in between lands in the
        // trash, kept.
        Some(_) => Some(trash.put_at(target, rel)?),
        None => None,
    };
    let mut staged = staged;
    let temp_path = staged.temp.take().expect("staged files are committed once");
    let temp_name = temp_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let renamed = target
        .sibling(&temp_name)
        .and_then(|temp| temp.rename_noreplace(target));
    if let Err(e) = renamed {
        let _ = target
            .sibling(&temp_name)
            .and_then(|temp| temp.unlink_file());
        // The old version went to the trash but the new one could not take
        // its place: put the old one back (see `commit`).
        if let Some(trashed) = &trashed {
            let _ = rename_noreplace(trashed, target.path());
        }
        return Err(
            if matches!(
                e.kind(),
                io::ErrorKind::AlreadyExists | io::ErrorKind::NotFound
            ) {
                CommitError::Changed {
                    path: target.path().to_path_buf(),
                }
            } else {
                CommitError::Io(e)
            },
        );
    }
    let stat = match staged.stat.take() {
        Some(stat) => stat,
        None => target
            .stat()?
            .ok_or_else(|| io::Error::other("the file vanished right after it was written"))?,
    };
    Ok(Committed { stat, trashed })
}

/// What a commit did: the new file's stat, and where the version it
/// replaced went.
#[derive(Debug)]
pub struct Committed {
    pub stat: Stat,
    pub trashed: Option<PathBuf>,
}

/// Renames `from` to `to`, failing with `AlreadyExists` rather than
/// replacing anything at `to`.
pub fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        let from = CString::new(from.as_os_str().as_bytes())?;
        let to = CString::new(to.as_os_str().as_bytes())?;
        beneath::rename_noreplace(libc::AT_FDCWD, &from, libc::AT_FDCWD, &to)
    }
    #[cfg(not(unix))]
    {
        // RACE: no atomic no-replace rename here; a file created at `to`
        // between this check and the rename would be replaced.
        if fs::symlink_metadata(to).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} already exists", to.display()),
            ));
        }
        fs::rename(from, to)
    }
}

/// Flushes a folder entry change (a rename, a create) to disk.
pub fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(parent) => sync_dir(parent),
        None => Ok(()),
    }
}

/// Flushes a folder's entries.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// How many names a version tries in the trash before giving up: the
/// batch its minute is at (see `layout::TrashBatches`), then new spare
/// batches, whose names only a racing version could take.
const TRASH_TRIES: usize = 8;

/// A folder that keeps every overwritten or deleted version, grouped by
/// the minute it was trashed: `ROOT/20250209-1600/docs/page.md`.
#[derive(Clone, Debug)]
pub struct Trash {
    root: PathBuf,
    /// Names the batch a version goes to.
    clock: Clock,
    /// Which batch of the minute versions go to, shared by the clones.
    batches: Arc<TrashBatches>,
}

impl Trash {
    pub fn new(root: PathBuf) -> Trash {
        Trash {
            root,
            clock: Clock::system(),
            batches: Arc::default(),
        }
    }

    /// Names batches by `clock` instead of the system's.
    pub fn with_clock(self, clock: Clock) -> Trash {
        Trash { clock, ..self }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The name below the trash's root of a version [`Trash::put`] moved to
    /// `trashed`, as the journal keeps it: `20250209-1600/docs/page.md`.
    pub fn name_of(&self, trashed: &Path) -> Option<RelPath> {
        let name = trashed.strip_prefix(&self.root).ok()?.to_str()?;
        RelPath::new(name).ok()
    }

    /// Moves `source` (a file or a whole folder) into the trash under its
    /// relative path; returns where it went. A rename when the trash is on
    /// the same file system; a copy and delete otherwise.
    pub fn put(&self, source: &Path, rel: &RelPath) -> io::Result<PathBuf> {
        self.put_with(
            source,
            rel,
            |dest| rename_noreplace(source, dest),
            || remove_tree(source),
        )
    }

    /// [`Trash::put`] for a path reached without following a symbolic
    /// link (see [`beneath`]): renamed out of the folder that was opened.
    #[cfg(unix)]
    pub fn put_at(&self, source: &beneath::At, rel: &RelPath) -> io::Result<PathBuf> {
        // RACE: when the trash is on another file system the version is
        // copied by path: a folder on the way swapped for a link between
        // the look-up and the copy would have what the link points to
        // copied into the trash. Only a copy: the original is removed from
        // the folder that was opened, and a folder only when empty (the
        // engine trashes files one by one).
        self.put_with(
            source.path(),
            rel,
            |dest| source.rename_out(dest),
            || source.unlink_file().or_else(|_| source.rmdir()),
        )
    }

    /// Moves `source` into the trash with `rename` (to a destination that
    /// must not exist), else by copying (see [`Trash::put`]).
    fn put_with(
        &self,
        source: &Path,
        rel: &RelPath,
        rename: impl Fn(&Path) -> io::Result<()>,
        remove: impl Fn() -> io::Result<()>,
    ) -> io::Result<PathBuf> {
        let now = self.clock.now();
        let mut batch = self.batches.batch(now);
        for attempt in 0..TRASH_TRIES {
            if attempt > 0 {
                // The batch already holds this path, or a file where a
                // folder of `rel` must go (the file `a`, then `a/b` within
                // one minute): the version goes to a spare batch, under
                // its own path (see `layout::TrashBatches`).
                batch = self.batches.taken(now, &batch);
            }
            let dest = rel.to_fs(&self.root.join(&batch));
            match dest.parent().map(create_private_dirs) {
                Some(Err(e))
                    if matches!(
                        e.kind(),
                        io::ErrorKind::AlreadyExists | io::ErrorKind::NotADirectory
                    ) =>
                {
                    continue;
                }
                Some(Err(e)) => return Err(e),
                _ => {}
            }
            match rename(&dest) {
                Ok(()) => return Ok(dest),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                // The trash is on another file system (a folder on a USB
                // disk, the state dir in home): copy to a temporary name
                // beside the destination, then rename it in without
                // replacing an earlier version at that name.
                Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
                    let temp = temp_path_for(&dest);
                    if let Err(e) = copy_tree(source, &temp) {
                        let _ = remove_tree(&temp);
                        return Err(e);
                    }
                    match rename_noreplace(&temp, &dest) {
                        Ok(()) => {
                            remove()?;
                            return Ok(dest);
                        }
                        Err(e) => {
                            let _ = remove_tree(&temp);
                            if e.kind() != io::ErrorKind::AlreadyExists {
                                return Err(e);
                            }
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::other(format!(
            "no free name in the trash for {rel} after {TRASH_TRIES} tries"
        )))
    }

    /// Removes trash batches older than `retention`; returns how many.
    pub fn purge_older_than(&self, retention: Duration, now: SystemTime) -> io::Result<usize> {
        let entries = match fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let cutoff = now.checked_sub(retention).unwrap_or(SystemTime::UNIX_EPOCH);
        let mut purged = 0;
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if layout::trash_batch_is_older(&name, cutoff) {
                remove_tree(&entry.path())?;
                purged += 1;
            }
        }
        Ok(purged)
    }
}

/// Creates `dir` and any missing folder above it readable by their owner
/// only: the trash holds old versions of every synced file, and the
/// folders it makes to hold them must not show their names (nor, for a
/// file whose folder was private, lead to it) to anyone else.
fn create_private_dirs(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Copies a file or folder to another file system, each file and folder
/// no wider than its original at any moment: files are created with their
/// mode, folders owner-only while they are filled and given their own mode
/// once they are. Folders wait on a list of their own, not the call stack:
/// a tree may be thousands of levels deep.
fn copy_tree(source: &Path, dest: &Path) -> io::Result<()> {
    enum Step {
        Copy(PathBuf, PathBuf),
        /// Gives a filled folder its own mode: pushed before the folder's
        /// entries, so it is taken after all of them.
        Seal(PathBuf, Mode),
    }
    let mut pending = vec![Step::Copy(source.to_path_buf(), dest.to_path_buf())];
    while let Some(step) = pending.pop() {
        let (source, dest) = match step {
            Step::Seal(dest, mode) => {
                set_path_mode(&dest, mode, None)?;
                continue;
            }
            Step::Copy(source, dest) => (source, dest),
        };
        let meta = fs::symlink_metadata(&source)?;
        let mode = mode_of(&meta);
        if meta.is_dir() {
            create_dir(&dest, Some(Mode::from_bits(0o700)))?;
            if let Some(mode) = mode {
                pending.push(Step::Seal(dest.clone(), mode));
            }
            for entry in fs::read_dir(&source)? {
                let entry = entry?;
                pending.push(Step::Copy(entry.path(), dest.join(entry.file_name())));
            }
            continue;
        }
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        if let Some(mode) = mode {
            set_create_mode(&mut options, mode);
        }
        let mut out = options.open(&dest)?;
        if let Some(mode) = mode {
            set_file_mode(&out, mode)?;
        }
        io::copy(&mut File::open(&source)?, &mut out)?;
        out.sync_all()?;
    }
    Ok(())
}

fn remove_tree(path: &Path) -> io::Result<()> {
    if fs::symlink_metadata(path)?.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn rel(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    #[test]
    fn a_listed_version_token_is_carried_and_a_stat_is_judged_without_it() {
        let meta = crate::model::FileMeta {
            hash: ContentHash::of_bytes(b"x"),
            size: 1,
            mtime_ns: 5,
            mode: None,
        };
        let entry = Entry::File(meta);
        let expect = Expect::of_version(Some(&entry), Some("\"etag\""));
        assert_eq!(expect.version(), Some("\"etag\""));
        assert_eq!(Expect::of(Some(&entry)).version(), None);
        assert_eq!(
            Expect::of_version(Some(&Entry::dir(None)), Some("e")),
            Expect::Dir
        );
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("x");
        fs::write(&target, "x").unwrap();
        let found = stat(&target).unwrap().unwrap();
        let same = Expect::of_version(
            Some(&Entry::File(crate::model::FileMeta {
                mtime_ns: found.mtime_ns,
                ..meta
            })),
            Some("\"etag\""),
        );
        assert!(same.matches(Some(&found)));
    }

    #[test]
    fn a_staged_file_is_invisible_until_committed() {
        let dir = tempfile::tempdir().unwrap();
        let trash = Trash::new(dir.path().join("trash"));
        let target = dir.path().join("page.md");
        let staged = stage(&target, &mut &b"hello"[..], Some(1_000_000_000), None).unwrap();
        assert!(!target.exists());
        assert_eq!(staged.hash, ContentHash::of_bytes(b"hello"));
        let committed = commit(staged, &target, &Expect::Absent, &trash, &rel("page.md")).unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"hello");
        assert_eq!(committed.stat.mtime_ns, 1_000_000_000);
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| crate::remote::layout::is_temp_name(&n.to_string_lossy()))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn a_replaced_version_goes_to_the_trash() {
        let dir = tempfile::tempdir().unwrap();
        let trash = Trash::new(dir.path().join("trash"));
        let target = dir.path().join("a.txt");
        fs::write(&target, "old").unwrap();
        let old = stat(&target).unwrap().unwrap();
        let staged = stage(&target, &mut &b"new"[..], None, None).unwrap();
        let expect = Expect::File {
            size: old.size,
            mtime_ns: old.mtime_ns,
            mode: old.mode,
            version: None,
        };
        commit(staged, &target, &expect, &trash, &rel("a.txt")).unwrap();
        assert_eq!(fs::read_to_string(&target).unwrap(), "new");
        let trashed: Vec<_> = walk(trash.root());
        assert_eq!(trashed.len(), 1);
        assert_eq!(fs::read_to_string(&trashed[0]).unwrap(), "old");
    }

    #[test]
    fn a_target_changed_since_the_scan_is_not_clobbered() {
        let dir = tempfile::tempdir().unwrap();
        let trash = Trash::new(dir.path().join("trash"));
        let target = dir.path().join("a.txt");
        fs::write(&target, "user's newer edit").unwrap();
        let staged = stage(&target, &mut &b"remote"[..], None, None).unwrap();
        let expect = Expect::File {
            size: 3,
            mtime_ns: 1,
            mode: None,
            version: None,
        };
        let err = commit(staged, &target, &expect, &trash, &rel("a.txt")).unwrap_err();
        assert!(matches!(err, CommitError::Changed { .. }));
        assert_eq!(fs::read_to_string(&target).unwrap(), "user's newer edit");
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "temp file left behind"
        );
    }

    #[test]
    fn a_file_that_appeared_is_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let trash = Trash::new(dir.path().join("trash"));
        let target = dir.path().join("new.txt");
        let staged = stage(&target, &mut &b"ours"[..], None, None).unwrap();
        fs::write(&target, "theirs").unwrap();
        assert!(matches!(
            commit(staged, &target, &Expect::Absent, &trash, &rel("new.txt")),
            Err(CommitError::Changed { .. })
        ));
        assert_eq!(fs::read_to_string(&target).unwrap(), "theirs");
    }

    #[test]
    fn trash_keeps_every_version_of_the_same_path() {
        let dir = tempfile::tempdir().unwrap();
        let trash = Trash::new(dir.path().join("trash"));
        let file = dir.path().join("f");
        for content in ["one", "two", "three"] {
            fs::write(&file, content).unwrap();
            trash.put(&file, &rel("docs/f")).unwrap();
        }
        let mut kept: Vec<String> = walk(trash.root())
            .iter()
            .map(|p| fs::read_to_string(p).unwrap())
            .collect();
        kept.sort();
        assert_eq!(kept, ["one", "three", "two"]);
    }

    #[test]
    fn trash_keeps_a_file_and_then_a_file_below_its_name() {
        // Found by the engine model test: the file `e` was trashed, then
        // `e/e` within the same minute; the trash could not make the folder
        // `e` in its batch and every replace of `e/e` failed.
        let dir = tempfile::tempdir().unwrap();
        let trash = Trash::new(dir.path().join("trash"));
        let file = dir.path().join("f");
        for (content, rel_path) in [("file e", "e"), ("file e/e", "e/e"), ("e/e/x", "e/e/x")] {
            fs::write(&file, content).unwrap();
            trash.put(&file, &rel(rel_path)).unwrap();
        }
        let mut kept: Vec<String> = walk(trash.root())
            .iter()
            .map(|p| fs::read_to_string(p).unwrap())
            .collect();
        kept.sort();
        assert_eq!(kept, ["e/e/x", "file e", "file e/e"]);
    }

    #[test]
    fn a_trash_on_another_file_system_keeps_every_version() {
        // /dev/shm is a tmpfs, the temp dir usually a disk: a rename
        // between them fails with EXDEV and the trash copies instead.
        let source_dir = tempfile::tempdir().unwrap();
        let trash_dir = tempfile::tempdir_in("/dev/shm").unwrap();
        let trash = Trash::new(trash_dir.path().join("trash"));
        let file = source_dir.path().join("f");
        for content in ["one", "two"] {
            fs::write(&file, content).unwrap();
            trash.put(&file, &rel("docs/f")).unwrap();
            assert!(!file.exists());
        }
        let mut kept: Vec<String> = walk(trash.root())
            .iter()
            .map(|p| fs::read_to_string(p).unwrap())
            .collect();
        kept.sort();
        assert_eq!(kept, ["one", "two"]);
    }

    fn mode_at(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
    }

    fn chmod(path: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn a_staged_file_has_its_mode_exactly_before_its_first_byte() {
        let dir = tempfile::tempdir().unwrap();
        for bits in [0o600, 0o640, 0o755, 0o400] {
            let target = dir.path().join(format!("f{bits:o}"));
            let (file, staged) = create_temp(&target, Some(Mode::from_bits(bits))).unwrap();
            assert_eq!(file.metadata().unwrap().len(), 0);
            assert_eq!(mode_at(staged.temp_path()), bits);
            let staged = fill(file, staged, &mut &b"x"[..], None).unwrap();
            assert_eq!(
                staged.stat.as_ref().unwrap().mode,
                Some(Mode::from_bits(bits))
            );
        }
    }

    #[test]
    fn a_folder_is_created_with_its_mode_and_a_mode_change_keeps_set_id_bits() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("shared");
        create_dir(&folder, Some(Mode::from_bits(0o750))).unwrap();
        assert_eq!(mode_at(&folder), 0o750);
        // The group's set-group-ID bit is the user's own business.
        chmod(&folder, 0o2750);
        let stat = stat(&folder).unwrap().unwrap();
        set_path_mode(
            &folder,
            Mode::from_bits(0o700),
            Some((&Expect::Dir, Mode::from_bits(0o750))),
        )
        .unwrap();
        assert_eq!(mode_at(&folder), 0o2700);
        assert_eq!(stat.mode, Some(Mode::from_bits(0o750)));
        // A mode that changed since it was seen is not overwritten.
        let err = set_path_mode(
            &folder,
            Mode::from_bits(0o755),
            Some((&Expect::Dir, Mode::from_bits(0o750))),
        )
        .unwrap_err();
        assert!(is_mode_changed(&err), "{err}");
        assert_eq!(mode_at(&folder), 0o2700);
    }

    #[test]
    fn a_chmod_since_the_scan_is_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let trash = Trash::new(dir.path().join("trash"));
        let target = dir.path().join("a.txt");
        fs::write(&target, "old").unwrap();
        chmod(&target, 0o644);
        let seen = stat(&target).unwrap().unwrap();
        chmod(&target, 0o600);
        let staged = stage(
            &target,
            &mut &b"new"[..],
            None,
            Some(Mode::from_bits(0o644)),
        )
        .unwrap();
        let expect = Expect::File {
            size: seen.size,
            mtime_ns: seen.mtime_ns,
            mode: seen.mode,
            version: None,
        };
        let err = commit(staged, &target, &expect, &trash, &rel("a.txt")).unwrap_err();
        assert!(matches!(err, CommitError::Changed { .. }), "{err}");
        assert_eq!(fs::read_to_string(&target).unwrap(), "old");
        assert_eq!(mode_at(&target), 0o600);
    }

    #[test]
    fn the_trash_keeps_modes_in_owner_only_folders_on_any_file_system() {
        // The trash on the same file system (a rename) and on another (a
        // copy): either way a private file stays private, and the folders
        // the trash makes to hold it show nothing to anyone else.
        let source_dir = tempfile::tempdir().unwrap();
        let same = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir_in("/dev/shm").unwrap();
        for trash_dir in [same.path(), other.path()] {
            let trash = Trash::new(trash_dir.join("trash"));
            let folder = source_dir.path().join("vault");
            fs::create_dir(&folder).unwrap();
            fs::write(folder.join("key"), "k").unwrap();
            chmod(&folder.join("key"), 0o600);
            chmod(&folder, 0o750);
            let kept = trash.put(&folder, &rel("deep/vault")).unwrap();
            assert_eq!(mode_at(&kept), 0o750);
            assert_eq!(mode_at(&kept.join("key")), 0o600);
            let mut above = kept.parent().unwrap();
            while above.starts_with(trash.root()) {
                assert_eq!(mode_at(above), 0o700, "{}", above.display());
                above = above.parent().unwrap();
            }
        }
    }

    #[test]
    fn purge_removes_only_old_batches() {
        let dir = tempfile::tempdir().unwrap();
        let trash = Trash::new(dir.path().to_path_buf());
        fs::create_dir_all(dir.path().join("20200101-0000/x")).unwrap();
        fs::create_dir_all(dir.path().join("not-a-batch")).unwrap();
        let file = dir.path().join("f");
        fs::write(&file, "recent").unwrap();
        trash.put(&file, &rel("f")).unwrap();
        let purged = trash
            .purge_older_than(Duration::from_secs(86_400), SystemTime::now())
            .unwrap();
        assert_eq!(purged, 1);
        assert!(!dir.path().join("20200101-0000").exists());
        assert!(dir.path().join("not-a-batch").exists());
        assert_eq!(walk(dir.path()).len(), 1);
    }

    /// Every file below `dir`.
    pub(crate) fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut files = Vec::new();
        let mut folders = vec![dir.to_path_buf()];
        while let Some(folder) = folders.pop() {
            for entry in fs::read_dir(folder).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    folders.push(path);
                } else {
                    files.push(path);
                }
            }
        }
        files
    }

    #[test]
    fn a_folder_nineteen_hundred_levels_deep_is_trashed_and_purged_on_any_file_system() {
        // Renamed into a trash on the same file system, copied into one on
        // another (a tmpfs), then purged: none of it may recurse per level
        // on a test thread's 2 MiB stack.
        let source_dir = tempfile::tempdir().unwrap();
        let bottom = crate::tracker::scan::tests::make_deep_tree(source_dir.path(), 1900);
        for trash_dir in [
            tempfile::tempdir_in(source_dir.path()).unwrap(),
            tempfile::tempdir_in("/dev/shm").unwrap(),
        ] {
            if !source_dir.path().join("d").exists() {
                crate::tracker::scan::tests::make_deep_tree(source_dir.path(), 1900);
            }
            let trash = Trash::new(trash_dir.path().join("t"));
            let put = trash.put(&source_dir.path().join("d"), &rel("d")).unwrap();
            assert!(!source_dir.path().join("d").exists());
            let kept = put.parent().unwrap().join(&bottom);
            assert_eq!(fs::read(kept).unwrap(), b"deep");
            let later = SystemTime::now() + Duration::from_secs(3 * 86_400);
            assert_eq!(
                trash
                    .purge_older_than(Duration::from_secs(86_400), later)
                    .unwrap(),
                1
            );
            assert_eq!(fs::read_dir(trash.root()).unwrap().count(), 0);
        }
    }
}
