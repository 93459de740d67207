//! Notices a change of the local folder's `.prismignore` that no watch
//! event reported: the folder is not watched (it could not be, or its
//! watch was lost), or the watch's queue overflowed and the event was
//! among those lost. The pair's scheduler asks at every wake-up, before
//! it syncs (one `lstat`, through [`LocalWatch`]), so rules the user
//! changed are followed by the next sync either way, never only after a
//! restart.
//!
//! [`LocalWatch`]: super::local_watch::LocalWatch

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::tracker::ignore::PRISMIGNORE_FILE;

/// What `.prismignore` looked like when it was last looked at.
pub struct IgnoreFile {
    root: PathBuf,
    path: PathBuf,
    /// `None` while the folder was not there when the rules were loaded
    /// (they are none): its first look once it is there is a change.
    seen: Option<Option<Stamp>>,
}

/// Enough of a file's metadata to tell a rewrite: an edit in place moves
/// the times, an editor's save-by-rename the inode too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    inode: u64,
}

impl IgnoreFile {
    /// The file of the folder `root` as it is now, right after its rules
    /// were loaded.
    pub fn new(root: &Path) -> IgnoreFile {
        let path = root.join(PRISMIGNORE_FILE);
        let seen = root.is_dir().then(|| stamp(&path));
        IgnoreFile {
            root: root.to_owned(),
            path,
            seen,
        }
    }

    /// Whether the file appeared, went away or was rewritten since the
    /// last look. While the folder itself is not there (its disk not
    /// mounted) nothing changed: the rules it had stay in force, so the
    /// sync that finds it back does not run with none.
    pub fn changed(&mut self) -> bool {
        if !self.root.is_dir() {
            return false;
        }
        let now = stamp(&self.path);
        let changed = self.seen != Some(now);
        self.seen = Some(now);
        changed
    }
}

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    Some(Stamp {
        len: meta.len(),
        mtime: (meta.mtime(), meta.mtime_nsec()),
        ctime: (meta.ctime(), meta.ctime_nsec()),
        inode: meta.ino(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_rewritten_or_removed_file_is_a_change_once() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(PRISMIGNORE_FILE);
        let mut ignore = IgnoreFile::new(dir.path());
        assert!(!ignore.changed(), "no file, as before");

        std::fs::write(&file, "build/\n").unwrap();
        assert!(ignore.changed());
        assert!(!ignore.changed(), "said once");

        // Saved by an editor: a new file renamed over the old one, same size.
        let saved = dir.path().join("saved");
        std::fs::write(&saved, "cache/\n").unwrap();
        std::fs::rename(&saved, &file).unwrap();
        assert!(ignore.changed());

        // Rewritten in place, same size.
        let before = std::fs::metadata(&file).unwrap().modified().unwrap();
        std::fs::write(&file, "temp/\n").unwrap();
        let after = std::fs::metadata(&file).unwrap().modified().unwrap();
        assert_eq!(ignore.changed(), after != before);

        std::fs::remove_file(&file).unwrap();
        assert!(ignore.changed());
        assert!(!ignore.changed());
    }

    #[test]
    fn a_folder_that_is_not_there_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("disk");
        // Not mounted when the rules were loaded: none.
        let mut ignore = IgnoreFile::new(&root);
        assert!(!ignore.changed());
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join(PRISMIGNORE_FILE), "secret/\n").unwrap();
        assert!(ignore.changed(), "mounted: its rules are loaded");
        assert!(!ignore.changed());
        // Unmounted, then mounted again as it was.
        std::fs::rename(&root, dir.path().join("away")).unwrap();
        assert!(!ignore.changed(), "the rules stay while the folder is away");
        std::fs::rename(dir.path().join("away"), &root).unwrap();
        assert!(!ignore.changed());
    }
}
