//! What a batch of commits was checked against: one listing per folder
//! the batch writes to, taken right before its commits, instead of a stat
//! per file.
//!
//! **Why a folder's listing is as good as a stat here.** rclone has no
//! conditional write, so no check closes the gap between looking and
//! acting; a stat only makes it one round trip wide. The listing makes it
//! at most [`FRESH_FOR`] wide: the batch's first commit asks for it (the
//! others wait for it), only the commit of the upload it was taken for
//! uses it, once, and a commit that comes later than that stats its path
//! as before.
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
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::listing::Item;
use crate::model::RelPath;

/// How long a batch's listing stands in for a stat right before a step.
pub const FRESH_FOR: Duration = Duration::from_secs(1);

/// How long a staged upload's listed version is kept for its commit.
const STAGED_FOR: Duration = Duration::from_secs(600);

/// A batch of uploads handed over for its commits, not yet listed.
pub struct Batch {
    /// Each upload's hidden name and the path it goes to.
    pub files: Vec<(String, RelPath)>,
    /// Set once the batch's first commit listed its folders.
    pub listed: OnceLock<()>,
    made: Instant,
}

impl Batch {
    pub fn new(files: Vec<(String, RelPath)>) -> Arc<Batch> {
        Arc::new(Batch {
            files,
            listed: OnceLock::new(),
            made: Instant::now(),
        })
    }
}

/// The listings of the batches being committed.
#[derive(Default)]
pub struct Looks {
    /// A staged upload's hidden name → the batch it came in, until its
    /// commit looks.
    pending: HashMap<String, Arc<Batch>>,
    /// A staged upload's hidden name → what the listing of its target's
    /// folder showed at the target (`None`: nothing), and when the
    /// listing was asked for. Keyed by the upload, not the path: no other
    /// step on the same path (a later round's) takes it.
    targets: HashMap<String, (Instant, Option<Item>)>,
    /// A staged upload's hidden name → how it was listed, and when.
    staged: HashMap<String, (Instant, Item)>,
}

impl Looks {
    /// Forgets what is too old to be used (the commits of a batch that
    /// failed never take theirs).
    pub fn prune(&mut self, now: Instant) {
        self.pending
            .retain(|_, batch| now.duration_since(batch.made) < STAGED_FOR);
        self.targets
            .retain(|_, (taken, _)| now.duration_since(*taken) < FRESH_FOR);
        self.staged
            .retain(|_, (taken, _)| now.duration_since(*taken) < STAGED_FOR);
    }

    /// Notes a batch handed over for its commits.
    pub fn note_batch(&mut self, batch: &Arc<Batch>) {
        for (name, _) in &batch.files {
            self.pending.insert(name.clone(), batch.clone());
        }
    }

    /// The batch the staged upload `name` came in, once.
    pub fn take_batch(&mut self, name: &str) -> Option<Arc<Batch>> {
        self.pending.remove(name)
    }

    /// Notes what the listing asked for at `taken` showed at the target
    /// of the staged upload `name`.
    pub fn note_target(&mut self, name: String, taken: Instant, found: Option<Item>) {
        self.targets.insert(name, (taken, found));
    }

    /// What the batch's listing showed at the target of the staged upload
    /// `name`, once, if it was asked for less than [`FRESH_FOR`] ago;
    /// `None` when the caller must stat the path itself.
    pub fn take_target(&mut self, name: &str) -> Option<Option<Item>> {
        let (taken, found) = self.targets.remove(name)?;
        (taken.elapsed() < FRESH_FOR).then_some(found)
    }

    /// Forgets what was noted for the staged upload `name` (discarded).
    pub fn forget(&mut self, name: &str) {
        self.pending.remove(name);
        self.targets.remove(name);
        self.staged.remove(name);
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
            timed: true,
            token: "t".into(),
        }
    }

    #[test]
    fn a_look_serves_one_commit_and_only_while_it_is_fresh() {
        let mut looks = Looks::default();
        let now = Instant::now();
        looks.note_target(".upload-x".into(), now, Some(item("a/x")));
        looks.note_target(".upload-y".into(), now, None);
        assert_eq!(looks.take_target(".upload-x"), Some(Some(item("a/x"))));
        assert_eq!(looks.take_target(".upload-x"), None, "used once");
        assert_eq!(looks.take_target(".upload-y"), Some(None));
        assert_eq!(looks.take_target(".upload-z"), None, "never listed");
        // Older than the window: the commit stats instead.
        let old = now - FRESH_FOR - Duration::from_millis(1);
        looks.note_target(".upload-old".into(), old, None);
        assert_eq!(looks.take_target(".upload-old"), None);
        looks.note_target(".upload-pruned".into(), old, None);
        looks.prune(Instant::now());
        assert!(looks.targets.is_empty());
        looks.note_staged(".upload-1".into(), old, item(".upload-1"));
        assert_eq!(looks.take_staged(".upload-1"), Some(item(".upload-1")));
        assert_eq!(key("/Notes/A.md", true), "notes/a.md");
        assert_eq!(key("Notes/A.md", false), "Notes/A.md");
    }
}
