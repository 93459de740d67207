//! Reaching a path below a root without ever following a symbolic link.
//!
//! A folder that is the local side of a pair, or a `file://` remote, may
//! hold symbolic links: a synced folder moved to another disk and linked
//! back, or a link to anywhere on the machine. Prism Sync never writes,
//! reads, renames or deletes through one: a path whose folders are not all
//! real folders below the root is refused with [`BelowSymlink`]. The
//! folder holding a path is opened relative to the root, with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` where the kernel has it
//! (Linux 5.6), else one `openat(O_NOFOLLOW)` per folder; the operation
//! then runs relative to that open folder, so a link swapped in on the way
//! after the check is not followed either. The root itself may be a link
//! (the user chose it).
//!
//! This module knows nothing of pairs or plans; `LocalFolder` uses it for
//! every operation.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
#[cfg(target_os = "linux")]
use std::sync::atomic::{AtomicBool, Ordering};

use super::{Stat, StatKind, set_file_mode};
use crate::model::{FileId, Mode, RelPath};

/// The mode to create a file or folder with: `mode`, which the umask can
/// only narrow (it is then set exactly on the open file, so nothing is
/// ever wider than `mode`, not even for a moment), or `default`.
fn created_mode(mode: Option<Mode>, default: libc::c_uint) -> libc::c_uint {
    mode.map_or(default, |mode| mode.bits() as libc::c_uint)
}

/// The error of an operation that would have gone through a symbolic link.
#[derive(Debug, thiserror::Error)]
#[error(
    "it is a symbolic link or lies below one; Prism Sync never follows links, so it is left alone"
)]
pub struct BelowSymlink(pub String);

fn below_symlink(rel: &str) -> io::Error {
    io::Error::other(BelowSymlink(rel.to_owned()))
}

/// A path below a root, reached without following a link: its folder,
/// open, and its name in that folder.
#[derive(Debug)]
pub struct At {
    dir: OwnedFd,
    name: CString,
    /// The whole path, for messages and for the callers that flush or
    /// sweep by path.
    path: PathBuf,
    /// The relative path, for messages.
    rel: String,
}

impl At {
    /// Opens the folder of `rel` below `root`. Fails with [`BelowSymlink`]
    /// when a folder on the way is a symbolic link, `NotFound` when one is
    /// missing, `NotADirectory` when one is a file.
    pub fn resolve(root: &Path, rel: &RelPath) -> io::Result<At> {
        let (folder, name) = match rel.as_str().rsplit_once('/') {
            Some((folder, name)) => (Some(folder), name),
            None => (None, rel.as_str()),
        };
        let dir = open_folder(root, folder, rel.as_str())?;
        Ok(At {
            dir,
            name: c_string(name.as_bytes())?,
            path: rel.to_fs(root),
            rel: rel.as_str().to_owned(),
        })
    }

    /// Another name in the same folder (a temporary file beside a target).
    pub fn sibling(&self, name: &str) -> io::Result<At> {
        Ok(At {
            dir: self.dir.try_clone()?,
            name: c_string(name.as_bytes())?,
            path: self.path.with_file_name(name),
            rel: self.rel.clone(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Gives the entry the permission bits `mode`, keeping its set-ID and
    /// sticky bits (Prism Sync neither syncs nor clears them), if it still
    /// matches `expect` with the mode `current`; else the error is
    /// [`super::ModeChanged`]. A symbolic link is never changed nor
    /// followed, not even one swapped in after the look.
    pub fn set_mode(&self, mode: Mode, expect: &super::Expect, current: Mode) -> io::Result<()> {
        let changed = || io::Error::other(super::ModeChanged);
        let raw = self.raw_stat()?.ok_or_else(changed)?;
        let found = stat_of_raw(&raw);
        if raw.st_mode & libc::S_IFMT == libc::S_IFLNK
            || !expect.matches(Some(&found))
            || found.mode != Some(current)
        {
            return Err(changed());
        }
        #[allow(clippy::unnecessary_cast)] // `st_mode`'s type varies by platform
        let bits = (raw.st_mode as u32 & 0o7000) | mode.bits();
        // SAFETY: as in `stat`. With AT_SYMLINK_NOFOLLOW a link there now
        // is refused (EOPNOTSUPP), never followed.
        let rc = unsafe {
            libc::fchmodat(
                self.dir.as_raw_fd(),
                self.name.as_ptr(),
                bits as libc::mode_t,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        check(rc).map_err(|e| match e.raw_os_error() {
            Some(libc::EOPNOTSUPP) => changed(),
            _ => e,
        })
    }

    /// `lstat`, with `None` when nothing is there.
    pub fn stat(&self) -> io::Result<Option<Stat>> {
        Ok(self.raw_stat()?.as_ref().map(stat_of_raw))
    }

    /// `fstatat` without following a link, with `None` when nothing is
    /// there.
    fn raw_stat(&self) -> io::Result<Option<libc::stat>> {
        let mut raw = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: the folder descriptor is open, the name NUL-terminated,
        // and `raw` is written in full when the call succeeds.
        let rc = unsafe {
            libc::fstatat(
                self.dir.as_raw_fd(),
                self.name.as_ptr(),
                raw.as_mut_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if rc != 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::NotFound => Ok(None),
                _ => Err(e),
            };
        }
        // SAFETY: the call succeeded, so `raw` is initialised.
        Ok(Some(unsafe { raw.assume_init() }))
    }

    /// Opens the file for reading; a symbolic link (or a fifo) there is
    /// refused, never followed (or waited on).
    pub fn open_read(&self) -> io::Result<File> {
        self.open(libc::O_RDONLY | libc::O_NONBLOCK, 0)
            .map_err(|e| {
                if e.raw_os_error() == Some(libc::ELOOP) {
                    below_symlink(&self.rel)
                } else {
                    e
                }
            })
    }

    /// Creates the file, which must not exist yet, with exactly `mode`
    /// (see [`created_mode`]), or the default (`0o666` less the umask).
    pub fn create_new(&self, mode: Option<Mode>) -> io::Result<File> {
        let file = self.open(
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
            created_mode(mode, 0o666),
        )?;
        if let Some(mode) = mode
            && let Err(e) = set_file_mode(&file, mode)
        {
            let _ = self.unlink_file();
            return Err(e);
        }
        Ok(file)
    }

    /// Opens the file for reading and writing, creating it if needed, and
    /// gives it exactly `mode` before anything more is written (a file an
    /// earlier attempt left wider is narrowed too).
    pub fn open_or_create(&self, mode: Option<Mode>) -> io::Result<File> {
        let file = self
            .open(libc::O_RDWR | libc::O_CREAT, created_mode(mode, 0o666))
            .map_err(|e| {
                if e.raw_os_error() == Some(libc::ELOOP) {
                    below_symlink(&self.rel)
                } else {
                    e
                }
            })?;
        if let Some(mode) = mode {
            set_file_mode(&file, mode)?;
        }
        Ok(file)
    }

    fn open(&self, flags: libc::c_int, mode: libc::c_uint) -> io::Result<File> {
        let flags = flags | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        // SAFETY: as in `stat`; the result is checked before use.
        let fd = unsafe { libc::openat(self.dir.as_raw_fd(), self.name.as_ptr(), flags, mode) };
        let fd = owned(fd)?;
        Ok(File::from(fd))
    }

    /// Creates the folder with exactly `mode` (see [`created_mode`]), or
    /// the default (`0o777` less the umask). An existing one is
    /// `AlreadyExists` and keeps its mode.
    pub fn mkdir(&self, mode: Option<Mode>) -> io::Result<()> {
        // SAFETY: as in `stat`.
        let rc = unsafe {
            libc::mkdirat(
                self.dir.as_raw_fd(),
                self.name.as_ptr(),
                created_mode(mode, 0o777),
            )
        };
        check(rc)?;
        match mode {
            Some(mode) => set_file_mode(&self.open_folder()?, mode),
            None => Ok(()),
        }
    }

    /// Removes the folder, which must be empty.
    pub fn rmdir(&self) -> io::Result<()> {
        // SAFETY: as in `stat`.
        let rc =
            unsafe { libc::unlinkat(self.dir.as_raw_fd(), self.name.as_ptr(), libc::AT_REMOVEDIR) };
        check(rc)
    }

    /// Opens the folder itself to look at its entries; a symbolic link
    /// there is refused.
    pub fn open_folder(&self) -> io::Result<File> {
        self.open(libc::O_RDONLY | libc::O_DIRECTORY, 0)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ELOOP) => below_symlink(&self.rel),
                _ => e,
            })
    }

    /// Renames `self` to `to`, failing with `AlreadyExists` rather than
    /// replacing anything there.
    pub fn rename_noreplace(&self, to: &At) -> io::Result<()> {
        rename_noreplace(
            self.dir.as_raw_fd(),
            &self.name,
            to.dir.as_raw_fd(),
            &to.name,
        )
    }

    /// Renames `self` to the absolute path `to` (into a trash), without
    /// replacing anything there.
    pub fn rename_out(&self, to: &Path) -> io::Result<()> {
        let to = c_string(to.as_os_str().as_bytes())?;
        rename_noreplace(self.dir.as_raw_fd(), &self.name, libc::AT_FDCWD, &to)
    }
}

impl At {
    /// The entry `name` inside this folder, which is opened (refusing a
    /// symbolic link) to reach it.
    pub fn child(&self, name: &str) -> io::Result<At> {
        let folder = self.open_folder()?;
        Ok(At {
            dir: OwnedFd::from(folder),
            name: c_string(name.as_bytes())?,
            path: self.path.join(name),
            rel: format!("{}/{name}", self.rel),
        })
    }

    /// The names in this folder (without `.` and `..`).
    pub fn names(&self) -> io::Result<Vec<String>> {
        let folder = OwnedFd::from(self.open_folder()?);
        // SAFETY: `fdopendir` takes over the open descriptor (released
        // from `folder`); the stream is closed below, which closes it.
        let stream = unsafe { libc::fdopendir(folder.as_raw_fd()) };
        if stream.is_null() {
            return Err(io::Error::last_os_error());
        }
        std::mem::forget(folder);
        let mut names = Vec::new();
        loop {
            // SAFETY: `stream` is a valid open directory stream.
            let entry = unsafe { libc::readdir(stream) };
            if entry.is_null() {
                break;
            }
            // SAFETY: `readdir` returned a valid entry whose name is
            // NUL-terminated and lives until the next call.
            let name = unsafe { CStr::from_ptr((*entry).d_name.as_ptr()) };
            let name = name.to_string_lossy();
            if name != "." && name != ".." {
                names.push(name.into_owned());
            }
        }
        // SAFETY: `stream` is valid and closed once.
        unsafe { libc::closedir(stream) };
        Ok(names)
    }

    /// Removes the file (never a folder; a symbolic link is removed
    /// itself, not what it points to).
    pub fn unlink_file(&self) -> io::Result<()> {
        // SAFETY: as in `stat`.
        check(unsafe { libc::unlinkat(self.dir.as_raw_fd(), self.name.as_ptr(), 0) })
    }
}

/// Opens `folder` (relative, `None` for the root itself) below `root`.
fn open_folder(root: &Path, folder: Option<&str>, rel: &str) -> io::Result<OwnedFd> {
    let root_c = c_string(root.as_os_str().as_bytes())?;
    // SAFETY: `root_c` is NUL-terminated; the result is checked.
    let root_fd = owned(unsafe {
        libc::open(
            root_c.as_ptr(),
            PATH_FLAGS | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    })?;
    let Some(folder) = folder else {
        return Ok(root_fd);
    };
    #[cfg(target_os = "linux")]
    if let Some(opened) = openat2_beneath(&root_fd, folder) {
        return match opened {
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => Err(below_symlink(rel)),
            opened => opened,
        };
    }
    let mut dir = root_fd;
    for name in folder.split('/') {
        let name = c_string(name.as_bytes())?;
        // SAFETY: as above.
        let fd = unsafe {
            libc::openat(
                dir.as_raw_fd(),
                name.as_ptr(),
                PATH_FLAGS | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        };
        dir = match owned(fd) {
            Ok(fd) => fd,
            // With O_NOFOLLOW a link fails as ELOOP, or (opened as a path
            // only, where it is not a folder) as ENOTDIR: look which.
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Err(below_symlink(rel)),
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
                return Err(if is_symlink_at(dir.as_raw_fd(), &name) {
                    below_symlink(rel)
                } else {
                    e
                });
            }
            Err(e) => return Err(e),
        };
    }
    Ok(dir)
}

/// Opening a folder only to use it as the base of further calls: no read
/// permission is needed for that where the system can say so.
#[cfg(target_os = "linux")]
const PATH_FLAGS: libc::c_int = libc::O_PATH;
#[cfg(not(target_os = "linux"))]
const PATH_FLAGS: libc::c_int = libc::O_RDONLY;

/// Whether the kernel lacks `openat2` (before 5.6, or refused by a
/// sandbox): then every look-up goes one folder at a time.
#[cfg(target_os = "linux")]
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// `openat2` with the kernel's own refusal of links and of escapes; `None`
/// when it is not available (or was interrupted by a concurrent rename,
/// which the per-folder walk does not mind).
#[cfg(target_os = "linux")]
fn openat2_beneath(root: &OwnedFd, folder: &str) -> Option<io::Result<OwnedFd>> {
    #[repr(C)]
    struct OpenHow {
        flags: u64,
        mode: u64,
        resolve: u64,
    }
    if NO_OPENAT2.load(Ordering::Relaxed) {
        return None;
    }
    let Ok(folder) = CString::new(folder) else {
        return Some(Err(io::Error::from(io::ErrorKind::InvalidInput)));
    };
    let how = OpenHow {
        flags: (libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: the descriptor is open, `folder` NUL-terminated, and `how`
    // a valid `struct open_how` of the size passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            folder.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd >= 0 {
        // SAFETY: a descriptor the kernel just gave us, owned by nobody else.
        return Some(Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) }));
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::ENOSYS) | Some(libc::EPERM) | Some(libc::E2BIG) => {
            NO_OPENAT2.store(true, Ordering::Relaxed);
            None
        }
        Some(libc::EAGAIN) => None,
        _ => Some(Err(e)),
    }
}

fn is_symlink_at(dir: RawFd, name: &CStr) -> bool {
    let mut raw = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: as in `At::stat`.
    let rc = unsafe {
        libc::fstatat(
            dir,
            name.as_ptr(),
            raw.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    // SAFETY: the call succeeded, so `raw` is initialised.
    rc == 0 && unsafe { raw.assume_init() }.st_mode & libc::S_IFMT == libc::S_IFLNK
}

/// Renames `from` (in the folder `from_dir`, or `AT_FDCWD`) to `to`,
/// failing with `AlreadyExists` rather than replacing anything there.
pub(super) fn rename_noreplace(
    from_dir: RawFd,
    from: &CStr,
    to_dir: RawFd,
    to: &CStr,
) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: both descriptors are open (or AT_FDCWD) and both names
        // NUL-terminated for the duration of the call.
        let rc = unsafe {
            libc::renameat2(
                from_dir,
                from.as_ptr(),
                to_dir,
                to.as_ptr(),
                libc::RENAME_NOREPLACE,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        // File systems without RENAME_NOREPLACE (some FUSE and network
        // mounts) answer EINVAL; fall back to check-then-rename.
        if err.raw_os_error() != Some(libc::EINVAL) {
            return Err(err);
        }
    }
    // RACE: without an atomic no-replace rename, a file created at `to`
    // between this check and the rename would be replaced. Only file
    // systems lacking RENAME_NOREPLACE take this path.
    let mut raw = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: as above.
    let exists = unsafe {
        libc::fstatat(
            to_dir,
            to.as_ptr(),
            raw.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    } == 0;
    if exists {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "the destination already exists",
        ));
    }
    // SAFETY: as above.
    check(unsafe { libc::renameat(from_dir, from.as_ptr(), to_dir, to.as_ptr()) })
}

/// The [`Stat`] of a raw `struct stat`, exactly as `fsops::stat_of` makes
/// it from `Metadata`.
fn stat_of_raw(raw: &libc::stat) -> Stat {
    let kind = match raw.st_mode & libc::S_IFMT {
        libc::S_IFREG => StatKind::File,
        libc::S_IFDIR => StatKind::Dir,
        _ => StatKind::Other,
    };
    #[allow(clippy::unnecessary_cast)] // `st_mtime_nsec`'s type varies by platform
    let mtime_ns = (raw.st_mtime as i64)
        .saturating_mul(1_000_000_000)
        .saturating_add(raw.st_mtime_nsec as i64);
    Stat {
        kind,
        size: if kind == StatKind::File {
            raw.st_size as u64
        } else {
            0
        },
        mtime_ns,
        #[allow(clippy::unnecessary_cast)] // `st_dev`'s and `st_ino`'s types vary by platform
        id: Some(FileId::inode(raw.st_dev as u64, raw.st_ino as u64)),
        #[allow(clippy::unnecessary_cast)] // `st_mode`'s type varies by platform
        mode: Some(Mode::from_bits(raw.st_mode as u32)),
    }
}

fn c_string(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn owned(fd: libc::c_int) -> io::Result<OwnedFd> {
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor just returned by the kernel, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
