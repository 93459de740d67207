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
//! `syncfs` only where that is both cheap and trustworthy:
//!
//! - on Linux 5.8 or later, whose `syncfs` reports write-back errors (before
//!   5.8 it returned success even when data never reached the disk);
//! - on ext4 and XFS, whose `syncfs` commits their journal and flushes the
//!   disk cache (a FUSE file system such as sshfs answers `syncfs` without
//!   asking its server, where `fsync` does ask);
//! - while little waits to be written on the whole machine: `Dirty` plus
//!   `Writeback` in /proc/meminfo (this batch's own data included) is at
//!   most [`MAX_UNWRITTEN`], so a batch of large files, whose flushes cost
//!   little next to their data, is flushed file by file;
//! - for at least [`WHOLE_FILE_SYSTEM_MIN_PATHS`] paths.
//!
//! Everywhere else each path is flushed on its own, many at once.
//!
//! The whole-file-system way looks only at folders: a file is on the file
//! system of the folder it is in (a file the caller just wrote is no mount
//! point), and a file that is gone has nothing left to flush.

use std::fs::File;
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
        // fsync needs no write access: a read-only handle flushes a file's
        // data and a folder's entries.
        File::open(path)
            .and_then(|file| file.sync_all())
            .err()
            .map(|error| (index, error))
    })
    .into_iter()
    .flatten()
    .collect()
}

#[cfg(target_os = "linux")]
mod whole_file_system {
    use std::fs::File;
    use std::io;
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::io::AsRawFd;
    use std::path::Path;
    use std::sync::OnceLock;

    use super::{MAX_UNWRITTEN, each_path};

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

    /// The whole-file-system way, whatever the conditions.
    pub(super) fn by_file_system(files: &[&Path], folders: &[&Path]) -> Vec<(usize, io::Error)> {
        // Each path with the folder that tells its file system: a file's
        // own folder, a folder itself. Few distinct folders: one look each.
        let paths = files
            .iter()
            .map(|file| (*file, file.parent().unwrap_or(file)))
            .chain(folders.iter().map(|folder| (*folder, *folder)));
        let mut devices: Vec<(&Path, io::Result<u64>)> = Vec::new();
        let mut failed = Vec::new();
        let mut by_device: Vec<(u64, Vec<(usize, &Path)>)> = Vec::new();
        for (index, (path, folder)) in paths.enumerate() {
            let known = match devices.iter().position(|(seen, _)| *seen == folder) {
                Some(at) => at,
                None => {
                    let device = std::fs::symlink_metadata(folder).map(|meta| meta.dev());
                    devices.push((folder, device));
                    devices.len() - 1
                }
            };
            match &devices[known].1 {
                Ok(device) => match by_device.iter_mut().find(|(dev, _)| dev == device) {
                    Some((_, members)) => members.push((index, path)),
                    None => by_device.push((*device, vec![(index, path)])),
                },
                Err(e) => failed.push((index, io::Error::new(e.kind(), e.to_string()))),
            }
        }
        for (_, members) in &by_device {
            // Any failure here (an unsupported file system, a path gone
            // since, a write-back error that may be another program's) is
            // settled path by path, which names exactly what failed.
            if !matches!(syncfs_of(members[0].1), Ok(true)) {
                failed.extend(each_path(members));
            }
        }
        failed.sort_by_key(|(index, _)| *index);
        failed
    }

    /// Flushes the whole file system `path` is on: Ok(false) when it is not
    /// one whose `syncfs` is known to commit and flush (see the module's
    /// documentation), and nothing was done.
    pub(super) fn syncfs_of(path: &Path) -> io::Result<bool> {
        let file = File::open(path)?;
        // SAFETY: an all-zero statfs is a valid value for fstatfs to fill.
        let mut info: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: the descriptor is owned by `file` and valid for the call;
        // `info` is a writable statfs.
        if unsafe { libc::fstatfs(file.as_raw_fd(), &mut info) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // f_type's integer type differs between targets; the magic numbers
        // fit every one of them.
        #[allow(clippy::unnecessary_cast)]
        let (kind, known) = (
            info.f_type as i64,
            [libc::EXT4_SUPER_MAGIC as i64, libc::XFS_SUPER_MAGIC as i64],
        );
        if !known.contains(&kind) {
            return Ok(false);
        }
        // SAFETY: as above.
        if unsafe { libc::syncfs(file.as_raw_fd()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(true)
    }

    /// Whether this kernel's `syncfs` returns write-back errors (Linux 5.8).
    fn syncfs_reports_errors() -> bool {
        static ANSWER: OnceLock<bool> = OnceLock::new();
        *ANSWER.get_or_init(|| {
            std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .is_ok_and(|release| kernel_at_least(&release, (5, 8)))
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
    fn syncfs_is_used_only_on_file_systems_known_to_commit_with_it() {
        use whole_file_system::syncfs_of;
        let dir = tempfile::tempdir().unwrap();
        // A tmpfs keeps nothing on a disk: not one of the known kinds.
        assert!(!syncfs_of(Path::new("/dev/shm")).unwrap());
        assert_eq!(
            syncfs_of(&dir.path().join("gone")).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        let kind = std::process::Command::new("stat")
            .args(["-f", "-c", "%T"])
            .arg(dir.path())
            .output()
            .unwrap();
        let kind = String::from_utf8_lossy(&kind.stdout).trim().to_string();
        let known = matches!(kind.as_str(), "ext2/ext3" | "xfs");
        assert_eq!(syncfs_of(dir.path()).unwrap(), known, "{kind}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn kernel_releases_and_unwritten_bytes_are_read() {
        use whole_file_system::{kernel_at_least, unwritten_bytes};
        assert!(kernel_at_least("6.1.0-18-amd64\n", (5, 8)));
        assert!(kernel_at_least("5.8.0", (5, 8)));
        assert!(kernel_at_least("5.10.0-rc1", (5, 8)));
        assert!(!kernel_at_least("5.4.0-150-generic", (5, 8)));
        assert!(!kernel_at_least("4.19.0", (5, 8)));
        assert!(!kernel_at_least("garbage", (5, 8)));

        let meminfo = "MemTotal: 24000000 kB\nDirty:  28 kB\nWriteback:  4 kB\n";
        assert_eq!(unwritten_bytes(meminfo), Some(32 * 1024));
        assert_eq!(unwritten_bytes("Dirty: 28 kB\n"), None);
        let real = fs::read_to_string("/proc/meminfo").unwrap();
        assert!(unwritten_bytes(&real).is_some(), "{real}");
    }
}
