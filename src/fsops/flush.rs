//! Making a batch of written files and folders durable before the next step
//! depends on them: staged files before any of them is renamed in, and the
//! folders a batch touched before the journal records the batch.
//!
//! Two ways give the same guarantee at very different prices. Flushing each
//! path (`fsync`) costs a journal commit and a disk-cache flush per path;
//! concurrent flushes share some of that, yet ten thousand small files still
//! spend most of a first sync there. One `syncfs` makes the whole file system
//! durable with one commit and one cache flush, but it also waits for every
//! other program's unwritten data on that file system, which next to a build
//! or a large copy can take seconds per batch. So a batch is flushed with
//! `syncfs` only where that is both cheap and sound:
//!
//! - on Linux 5.17 or later, whose `syncfs` reports write-back errors (since
//!   5.8) and what the file system's own sync answers (since 5.17; before,
//!   a file system shut down after an I/O error could answer success);
//! - on file systems mounted as ext4 or XFS, whose `syncfs` commits their
//!   journal and flushes the disk cache (a FUSE file system such as sshfs
//!   answers `syncfs` without asking its server, where `fsync` does ask;
//!   ext2's driver flushes no cache);
//! - while little waits to be written on the whole machine: `Dirty` plus
//!   `Writeback` in /proc/meminfo (this batch's own data included) is at
//!   most [`MAX_UNWRITTEN`], so a batch of large files, whose flushes cost
//!   little next to their data, is flushed file by file;
//! - for at least [`WHOLE_FILE_SYSTEM_MIN_PATHS`] paths.
//!
//! Everywhere else each path is flushed on its own, many at once.
//!
//! A `syncfs` reports a write-back error of the file system once, to
//! whichever caller asks first: another program, or another of our threads
//! flushing folders. So after it, each file is asked for its own error
//! (`sync_file_range`, which waits for the file's write-back and reports
//! its error without another commit or cache flush). Folder entries are
//! file-system metadata: ext4 and XFS shut the whole file system down when
//! its journal cannot be written, and every later `syncfs` fails.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

/// How many paths are flushed at once when each is flushed on its own. A
/// flush mostly waits for the disk, and the file system commits concurrent
/// flushes together, so many at once cost little more than one; beyond a
/// few dozen nothing more is gained.
const PARALLEL_FSYNCS: usize = 32;

/// Below this many paths, flushing each costs about what one `syncfs` does,
/// without depending on what other programs have left unwritten.
const WHOLE_FILE_SYSTEM_MIN_PATHS: usize = 4;

/// The most unwritten data a `syncfs` may wait for: a fraction of a
/// second on any disk worth syncing to.
const MAX_UNWRITTEN: u64 = 32 << 20;

/// Flushes `files` (data and metadata) and `folders` (their entries) to
/// disk. Returns every path that could not be flushed, in order, by its
/// index in `files` followed by `folders` (the first folder's index is
/// `files.len()`).
pub fn flush_all(files: &[&Path], folders: &[&Path]) -> Vec<(usize, io::Error)> {
    #[cfg(target_os = "linux")]
    if files.len() + folders.len() >= WHOLE_FILE_SYSTEM_MIN_PATHS
        && let Some(failed) = whole_file_system::flush(files, folders)
    {
        return failed;
    }
    let indexed: Vec<(usize, &Path)> = files.iter().chain(folders).copied().enumerate().collect();
    each_path(&indexed)
}

/// Flushes every path on its own, [`PARALLEL_FSYNCS`] at once; failures
/// carry the index given with the path and come back sorted by it.
fn each_path(paths: &[(usize, &Path)]) -> Vec<(usize, io::Error)> {
    crate::parallel::map(paths.to_vec(), PARALLEL_FSYNCS, |(index, path)| {
        open_to_flush(path)
            .and_then(|file| file.sync_all())
            .err()
            .map(|error| (index, error))
    })
    .into_iter()
    .flatten()
    .collect()
}

/// Opens a file or folder to flush it: read-only (`fsync` needs no more),
/// and without waiting, so a path that has become a named pipe fails
/// instead of blocking until some program writes to it.
fn open_to_flush(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NONBLOCK);
    options.open(path)
}

#[cfg(target_os = "linux")]
mod whole_file_system {
    use std::collections::HashMap;
    use std::fs::File;
    use std::io;
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::io::AsRawFd;
    use std::path::Path;
    use std::sync::{Mutex, OnceLock};

    use super::{MAX_UNWRITTEN, each_path, open_to_flush};
    use crate::locks::LockExt;

    /// Flushes `files` and `folders` with one `syncfs` per file system
    /// they are on, or returns None when that way is not safe or not cheap
    /// now (see the module's documentation) and each path should be
    /// flushed instead. Indexes as in [`super::flush_all`].
    pub(super) fn flush(files: &[&Path], folders: &[&Path]) -> Option<Vec<(usize, io::Error)>> {
        if !syncfs_reports_errors()
            || unwritten_bytes(&std::fs::read_to_string("/proc/meminfo").ok()?)? > MAX_UNWRITTEN
        {
            return None;
        }
        Some(by_file_system(files, folders))
    }

    /// One file system a batch has paths on.
    struct FileSystem<'p> {
        device: u64,
        /// A folder on it, open: what `syncfs` is called on.
        handle: File,
        /// (index, path, is a file)
        members: Vec<(usize, &'p Path, bool)>,
    }

    /// The whole-file-system way, whatever the conditions.
    pub(super) fn by_file_system(files: &[&Path], folders: &[&Path]) -> Vec<(usize, io::Error)> {
        // A file is on the file system of the folder it is in (a file the
        // caller just wrote is no mount point); a folder on its own. Each
        // distinct folder is opened once, and the file system is told by
        // that open folder, so a symbolic link on the way is followed
        // exactly as the flush follows it.
        let paths = files
            .iter()
            .map(|file| (*file, file.parent().unwrap_or(file), true))
            .chain(folders.iter().map(|folder| (*folder, *folder, false)));
        let mut systems: Vec<FileSystem<'_>> = Vec::new();
        let mut system_of: HashMap<&Path, io::Result<usize>> = HashMap::new();
        let mut failed = Vec::new();
        for (index, (path, folder, is_file)) in paths.enumerate() {
            let system = system_of
                .entry(folder)
                .or_insert_with(|| open_file_system(folder, &mut systems));
            match system {
                Ok(at) => systems[*at].members.push((index, path, is_file)),
                Err(e) => failed.push((index, io::Error::new(e.kind(), e.to_string()))),
            }
        }
        for system in &systems {
            let as_paths = || -> Vec<(usize, &Path)> {
                system
                    .members
                    .iter()
                    .map(|&(index, path, _)| (index, path))
                    .collect()
            };
            // An unknown kind of file system, or a failed `syncfs` (whose
            // error may be another program's): settled path by path, which
            // names exactly what failed.
            if !commits_with_syncfs(system.device, &system.handle)
                || syncfs(&system.handle).is_err()
            {
                failed.extend(each_path(&as_paths()));
                continue;
            }
            for &(index, path, is_file) in &system.members {
                if !is_file {
                    continue;
                }
                if let Err(e) = file_written(path) {
                    failed.push((index, e));
                }
            }
        }
        failed.sort_by_key(|(index, _)| *index);
        failed
    }

    /// Opens `folder` and finds its file system among `systems` (adding
    /// it if new); returns its position.
    fn open_file_system(folder: &Path, systems: &mut Vec<FileSystem<'_>>) -> io::Result<usize> {
        let handle = open_to_flush(folder)?;
        let device = handle.metadata()?.dev();
        if let Some(at) = systems.iter().position(|s| s.device == device) {
            return Ok(at);
        }
        systems.push(FileSystem {
            device,
            handle,
            members: Vec::new(),
        });
        Ok(systems.len() - 1)
    }

    fn syncfs(handle: &File) -> io::Result<()> {
        // SAFETY: the descriptor is owned by `handle` and valid for the call.
        if unsafe { libc::syncfs(handle.as_raw_fd()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// After the `syncfs` of its file system: an error if the file's data
    /// did not reach the disk.
    fn file_written(path: &Path) -> io::Result<()> {
        let file = open_to_flush(path)?;
        let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
            | libc::SYNC_FILE_RANGE_WRITE
            | libc::SYNC_FILE_RANGE_WAIT_AFTER;
        // SAFETY: the descriptor is owned by `file` and valid for the call;
        // offset 0 and length 0 mean the whole file.
        if unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, flags) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Whether the file system on `device`, open as `handle`, is mounted as
    /// ext4 or XFS, whose `syncfs` commits the journal and flushes the disk
    /// cache: by /proc/self/mountinfo (read once per device number), and
    /// by the file system's magic number each time, since a device number
    /// is reused when a disk is swapped for another.
    pub(super) fn commits_with_syncfs(device: u64, handle: &File) -> bool {
        static KNOWN: OnceLock<Mutex<HashMap<u64, bool>>> = OnceLock::new();
        let known = KNOWN.get_or_init(|| Mutex::new(HashMap::new()));
        let cached = known.locked().get(&device).copied();
        let mounted_as_known = cached.unwrap_or_else(|| {
            let answer = std::fs::read_to_string("/proc/self/mountinfo").is_ok_and(|mountinfo| {
                matches!(
                    mount_kind(&mountinfo, libc::major(device), libc::minor(device)),
                    Some("ext4" | "xfs")
                )
            });
            known.locked().insert(device, answer);
            answer
        });
        mounted_as_known && has_known_magic(handle)
    }

    /// Whether `handle` is on a file system with ext4's or XFS's magic
    /// number.
    fn has_known_magic(handle: &File) -> bool {
        // SAFETY: an all-zero statfs is a valid value for fstatfs to fill.
        let mut info: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: the descriptor is owned by `handle` and valid for the
        // call; `info` is a writable statfs.
        if unsafe { libc::fstatfs(handle.as_raw_fd(), &mut info) } != 0 {
            return false;
        }
        // f_type's integer type differs between targets; the magic numbers
        // fit every one of them.
        #[allow(clippy::unnecessary_cast)]
        let (kind, known) = (
            info.f_type as i64,
            [libc::EXT4_SUPER_MAGIC as i64, libc::XFS_SUPER_MAGIC as i64],
        );
        known.contains(&kind)
    }

    /// The file system type /proc/self/mountinfo gives for the device
    /// `major:minor` (its third field; the type follows the " - ").
    pub(super) fn mount_kind(mountinfo: &str, major: u32, minor: u32) -> Option<&str> {
        let device = format!("{major}:{minor}");
        mountinfo.lines().find_map(|line| {
            let (mount, about) = line.split_once(" - ")?;
            (mount.split(' ').nth(2)? == device).then(|| about.split(' ').next())?
        })
    }

    /// Whether this kernel's `syncfs` returns write-back errors and the
    /// file system's own answer (Linux 5.17).
    fn syncfs_reports_errors() -> bool {
        static ANSWER: OnceLock<bool> = OnceLock::new();
        *ANSWER.get_or_init(|| {
            std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .is_ok_and(|release| kernel_at_least(&release, (5, 17)))
        })
    }

    /// Whether a kernel release such as "6.1.0-18-amd64" is at least
    /// `(major, minor)`.
    pub(super) fn kernel_at_least(release: &str, wanted: (u32, u32)) -> bool {
        let mut numbers = release
            .trim()
            .split(|c: char| !c.is_ascii_digit())
            .map(|n| n.parse::<u32>().ok());
        match (numbers.next().flatten(), numbers.next().flatten()) {
            (Some(major), Some(minor)) => (major, minor) >= wanted,
            _ => false,
        }
    }

    /// Bytes waiting to be written to any disk, from /proc/meminfo's
    /// `Dirty` and `Writeback` lines; None when either is missing.
    pub(super) fn unwritten_bytes(meminfo: &str) -> Option<u64> {
        let kib = |key: &str| -> Option<u64> {
            let line = meminfo.lines().find(|l| l.starts_with(key))?;
            line[key.len()..].split_whitespace().next()?.parse().ok()
        };
        Some((kib("Dirty:")? + kib("Writeback:")?) * 1024)
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::PathBuf;

    use super::*;

    fn files_in(dir: &Path, count: usize) -> Vec<PathBuf> {
        fs::create_dir_all(dir).unwrap();
        (0..count)
            .map(|i| {
                let path = dir.join(format!("f{i}"));
                fs::write(&path, format!("{i}")).unwrap();
                path
            })
            .collect()
    }

    /// Both ways name the paths that could not be flushed: a folder that is
    /// gone, and the files in it.
    #[test]
    fn flushing_many_names_every_path_that_could_not_be_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let kept = files_in(&dir.path().join("kept"), 60);
        let gone = files_in(&dir.path().join("gone"), 40);
        let files: Vec<&Path> = kept.iter().chain(&gone).map(PathBuf::as_path).collect();
        let kept_folder = dir.path().join("kept");
        let gone_folder = dir.path().join("gone");
        let folders = [kept_folder.as_path(), gone_folder.as_path(), dir.path()];
        let indexed: Vec<(usize, &Path)> =
            files.iter().chain(&folders).copied().enumerate().collect();
        assert!(flush_all(&files, &folders).is_empty(), "files and folders");
        assert!(each_path(&indexed).is_empty(), "files and folders");
        assert!(flush_all(&[], &[]).is_empty());

        #[cfg(target_os = "linux")]
        assert!(whole_file_system::by_file_system(&files, &folders).is_empty());

        fs::remove_dir_all(&gone_folder).unwrap();
        let expected: Vec<usize> = (60..100).chain([101]).collect();
        let mut ways = vec![flush_all(&files, &folders), each_path(&indexed)];
        #[cfg(target_os = "linux")]
        ways.push(whole_file_system::by_file_system(&files, &folders));
        for failed in ways {
            let indexes: Vec<usize> = failed.iter().map(|(i, _)| *i).collect();
            assert_eq!(indexes, expected);
            assert!(
                failed
                    .iter()
                    .all(|(_, e)| e.kind() == io::ErrorKind::NotFound)
            );
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn syncfs_is_used_only_on_file_systems_mounted_as_ext4_or_xfs() {
        use std::os::unix::fs::MetadataExt;
        use whole_file_system::{commits_with_syncfs, mount_kind};
        let mountinfo = "\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard
23 22 0:21 / /dev/shm rw,nosuid shared:2 - tmpfs tmpfs rw
24 22 8:17 / /mnt/old rw - ext2 /dev/sdb1 rw
25 22 0:45 / /mnt/box rw - fuse.sshfs box: rw,user_id=0
26 22 8:33 / /mnt/my\\040disk rw,relatime shared:9 master:3 - xfs /dev/sdc1 rw
";
        assert_eq!(mount_kind(mountinfo, 254, 0), Some("ext4"));
        assert_eq!(mount_kind(mountinfo, 8, 17), Some("ext2"));
        assert_eq!(mount_kind(mountinfo, 0, 45), Some("fuse.sshfs"));
        assert_eq!(mount_kind(mountinfo, 8, 33), Some("xfs"));
        assert_eq!(mount_kind(mountinfo, 8, 1), None);

        // A tmpfs keeps nothing on a disk.
        let shm = File::open("/dev/shm").unwrap();
        assert!(!commits_with_syncfs(shm.metadata().unwrap().dev(), &shm));
        let dir = tempfile::tempdir().unwrap();
        let kind = std::process::Command::new("findmnt")
            .args(["-n", "-o", "FSTYPE", "--target"])
            .arg(dir.path())
            .output()
            .unwrap();
        let kind = String::from_utf8_lossy(&kind.stdout).trim().to_string();
        let here = File::open(dir.path()).unwrap();
        assert_eq!(
            commits_with_syncfs(here.metadata().unwrap().dev(), &here),
            matches!(kind.as_str(), "ext4" | "xfs"),
            "{kind}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_named_pipe_fails_to_flush_instead_of_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let pipe = dir.path().join("pipe");
        let status = std::process::Command::new("mkfifo")
            .arg(&pipe)
            .status()
            .unwrap();
        assert!(status.success());
        // Opening it without O_NONBLOCK would wait for a writer forever.
        let failed = each_path(&[(0, pipe.as_path())]);
        assert_eq!(failed.len(), 1, "fsync of a pipe is refused");
        assert_eq!(failed[0].1.raw_os_error(), Some(libc::EINVAL));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn kernel_releases_and_unwritten_bytes_are_read() {
        use whole_file_system::{kernel_at_least, unwritten_bytes};
        assert!(kernel_at_least("6.1.0-18-amd64\n", (5, 17)));
        assert!(kernel_at_least("5.17.0", (5, 17)));
        assert!(kernel_at_least("5.19.0-rc1", (5, 17)));
        assert!(!kernel_at_least("5.15.0-150-generic", (5, 17)));
        assert!(!kernel_at_least("4.19.0", (5, 17)));
        assert!(!kernel_at_least("garbage", (5, 17)));

        let meminfo = "MemTotal: 24000000 kB\nDirty:  28 kB\nWriteback:  4 kB\n";
        assert_eq!(unwritten_bytes(meminfo), Some(32 * 1024));
        assert_eq!(unwritten_bytes("Dirty: 28 kB\n"), None);
        let real = fs::read_to_string("/proc/meminfo").unwrap();
        assert!(unwritten_bytes(&real).is_some(), "{real}");
    }
}
