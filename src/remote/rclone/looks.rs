//! What a batch of commits was checked against: one listing per folder
//! the batch writes to, taken right before its commits, instead of a stat
//! per file.
//!
//! **Why a folder's listing is as good as a stat here.** rclone has no
//! conditional write, so no check closes the gap between looking and
//! acting; a stat only makes it one round trip wide. The listing makes it
//! at most [`FRESH_FOR`] wide: it is asked for when the batch is handed
//! over for its commits (`sync_staged`), each commit uses its path's entry
//! once, and a commit that comes later than that stats its path as before.
//! Within the window the guarantee is the one the stat gives: a file
//! another writer put at a path before the listing is seen (the commit
//! fails as a change and the path is planned again); one that lands after
//! it is taken to the trash by the replacing commit (it moves whatever is
//! there), and for a new file, as with the stat, rclone's move may replace
//! it. Other Prism Sync agents do not write meanwhile: commits happen
//! under the remote's lease. On SFTP a stat of a path where nothing is
//! lists its parent folder anyway, so a batch of new files in one folder
//! took one listing per file; now it takes one.
//!
//! A staged upload is listed too (its folder, once per batch): a
//! server-side move keeps a file's size, modification time, hash and ID,
//! so what the staged file was listed with is the version the commit puts
//! in place, and the commit needs no stat after the move. That is also
//! the version of *our* bytes, where a stat after the move would name
//! whatever another writer put there in between as ours.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::listing::Item;

/// How long a batch's listing stands in for a stat right before a step.
pub const FRESH_FOR: Duration = Duration::from_secs(1);

/// How long a staged upload's listed version is kept for its commit.
const STAGED_FOR: Duration = Duration::from_secs(600);

/// The listings of the batches being committed.
#[derive(Default)]
pub struct Looks {
    /// A path a batch writes (its key, see [`key`]) → what the listing of
    /// its folder showed there (`None`: nothing), and when the listing was
    /// asked for.
    paths: HashMap<String, (Instant, Option<Item>)>,
    /// A staged upload's hidden name → how it was listed, and when.
    staged: HashMap<String, (Instant, Item)>,
}

impl Looks {
    /// Forgets what is too old to be used (the commits of a batch that
    /// failed never take theirs).
    pub fn prune(&mut self, now: Instant) {
        self.paths
            .retain(|_, (taken, _)| now.duration_since(*taken) < FRESH_FOR);
        self.staged
            .retain(|_, (taken, _)| now.duration_since(*taken) < STAGED_FOR);
    }

    /// Notes what the listing asked for at `taken` showed at `path`.
    pub fn note_path(&mut self, key: String, taken: Instant, found: Option<Item>) {
        self.paths.insert(key, (taken, found));
    }

    /// What the batch's listing showed at the path of `key`, once, if it
    /// was asked for less than [`FRESH_FOR`] ago; `None` when the caller
    /// must stat the path itself.
    pub fn take_path(&mut self, key: &str) -> Option<Option<Item>> {
        let (taken, found) = self.paths.remove(key)?;
        (taken.elapsed() < FRESH_FOR).then_some(found)
    }

    /// Notes how the staged upload `name` was listed.
    pub fn note_staged(&mut self, name: String, taken: Instant, item: Item) {
        self.staged.insert(name, (taken, item));
    }

    /// How the staged upload `name` was listed, once.
    pub fn take_staged(&mut self, name: &str) -> Option<Item> {
        self.staged.remove(name).map(|(_, item)| item)
    }
}

/// The key of `path` among a folder's entries: on a backend whose names
/// ignore case, a name that differs only in case is the same entry.
pub fn key(path: &str, case_insensitive: bool) -> String {
    let path = path.trim_matches('/');
    if case_insensitive {
        path.to_lowercase()
    } else {
        path.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(path: &str) -> Item {
        Item {
            path: path.into(),
            is_dir: false,
            size: 1,
            mtime_ns: 0,
            token: "t".into(),
        }
    }

    #[test]
    fn a_look_serves_one_commit_and_only_while_it_is_fresh() {
        let mut looks = Looks::default();
        let now = Instant::now();
        looks.note_path(key("a/x", false), now, Some(item("a/x")));
        looks.note_path(key("a/y", false), now, None);
        assert_eq!(looks.take_path("a/x"), Some(Some(item("a/x"))));
        assert_eq!(looks.take_path("a/x"), None, "used once");
        assert_eq!(looks.take_path("a/y"), Some(None));
        assert_eq!(looks.take_path("a/z"), None, "never listed");
        // Older than the window: the commit stats instead.
        let old = now - FRESH_FOR - Duration::from_millis(1);
        looks.note_path(key("a/old", false), old, None);
        assert_eq!(looks.take_path("a/old"), None);
        looks.note_path(key("a/pruned", false), old, None);
        looks.prune(Instant::now());
        assert!(looks.paths.is_empty());
        looks.note_staged(".upload-1".into(), old, item(".upload-1"));
        assert_eq!(looks.take_staged(".upload-1"), Some(item(".upload-1")));
        assert_eq!(key("/Notes/A.md", true), "notes/a.md");
        assert_eq!(key("Notes/A.md", false), "Notes/A.md");
    }
}
