//! The careful steps of a path-addressed store, written once: each checks
//! the path against the caller's `Expect` first, keeps whatever it
//! replaces or removes in the trash, and never moves anything over
//! something else. A path found other than expected is
//! [`ReplicaError::Changed`]: re-planned, never forced.

use std::time::SystemTime;

use super::{PathStore, trash_dir};
use crate::fsops::Expect;
use crate::model::RelPath;
use crate::remote::ReplicaError;

/// How many taken trash names a step tries before it gives up.
const TRASH_TRIES: usize = 8;

fn changed(path: &RelPath) -> ReplicaError {
    ReplicaError::Changed {
        path: path.to_string(),
    }
}

/// What is at `path`, which must be what `expect` describes.
pub(crate) fn check<S: PathStore>(
    store: &S,
    path: &RelPath,
    expect: &Expect,
) -> Result<Option<S::Node>, ReplicaError> {
    let found = store.stat(path.as_str())?;
    let unchanged = match &found {
        None => *expect == Expect::Absent,
        Some(node) => S::matches(node, expect),
    };
    if !unchanged {
        return Err(changed(path));
    }
    Ok(found)
}

/// Moves `node` (at `path`, found matching `expect`) into
/// `.prism-sync/trash/BATCH/PATH` without replacing anything there (a
/// taken name: in a spare batch, see [`crate::remote::layout::TrashBatches`]); returns
/// its name below the trash folder (`BATCH/PATH`). A step refused or
/// failed on a path that is no longer what
/// `expect` says (someone else moved, removed or replaced it since the
/// check) is a change to re-plan.
pub(crate) fn trash<S: PathStore>(
    store: &S,
    path: &RelPath,
    node: &S::Node,
    expect: &Expect,
) -> Result<RelPath, ReplicaError> {
    let now = SystemTime::now();
    let batches = store.trash_batches();
    let mut batch = batches.batch(now);
    let moved = (|| {
        for _ in 0..TRASH_TRIES {
            let dest = format!("{}/{batch}/{path}", trash_dir());
            if let Some((parent, _)) = dest.rsplit_once('/')
                && let Err(error) = store.mkdir_all(parent, true)
            {
                // A file trashed earlier in the batch where this path
                // needs a folder (file `a`, then `a/b`): a spare batch, as
                // for a taken name.
                if error.is_offline() || !file_in_the_way(store, &batch, path)? {
                    return Err(error);
                }
                batch = batches.taken(now, &batch);
                continue;
            }
            let condition = S::condition(node, expect);
            if store.move_noreplace(path.as_str(), &dest, S::is_dir(node), condition)? {
                return Ok(Some(dest));
            }
            // Refused: a taken trash name is retried in a spare batch; a
            // source that changed is the caller's to re-plan.
            if store.stat(&dest)?.is_none() {
                return Ok(None);
            }
            batch = batches.taken(now, &batch);
        }
        Err(ReplicaError::Other(format!(
            "cannot move {path} to the trash: no free name there after {TRASH_TRIES} tries \
             (another agent trashing the same path at the same moment?)"
        )))
    })();
    match moved {
        Ok(Some(dest)) => {
            let name = dest
                .strip_prefix(&format!("{}/", trash_dir()))
                .and_then(|name| RelPath::new(name).ok());
            Ok(name.unwrap_or_else(|| path.clone()))
        }
        Ok(None) => Err(changed(path)),
        Err(error) if error.is_offline() => Err(error),
        Err(error) => match check(store, path, expect) {
            Err(changed @ ReplicaError::Changed { .. }) => Err(changed),
            _ => Err(error),
        },
    }
}

/// Whether a file in the trash batch `batch` takes the name of a folder
/// above `path` there.
fn file_in_the_way<S: PathStore>(
    store: &S,
    batch: &str,
    path: &RelPath,
) -> Result<bool, ReplicaError> {
    // From the top: nothing is below a file.
    for (at, _) in path.as_str().match_indices('/') {
        let folder = format!("{}/{batch}/{}", trash_dir(), &path.as_str()[..at]);
        match store.stat(&folder)? {
            Some(node) if S::is_dir(&node) => {}
            Some(_) => return Ok(true),
            None => return Ok(false),
        }
    }
    Ok(false)
}

/// Moves `path` (which must match `expect`) to the trash; returns its
/// name there, `None` for a folder (which the store removes only while it
/// is empty: a plan removes what is in it first, each checked, so a
/// folder that still holds something holds what the plan did not see, and
/// is kept and re-planned) or when nothing was expected and nothing is
/// there.
pub(crate) fn remove<S: PathStore>(
    store: &S,
    path: &RelPath,
    expect: &Expect,
) -> Result<Option<RelPath>, ReplicaError> {
    let Some(node) = check(store, path, expect)? else {
        return Ok(None);
    };
    if S::is_dir(&node) {
        return match store.remove_empty_dir(path, &node)? {
            true => Ok(None),
            false => Err(changed(path)),
        };
    }
    trash(store, path, &node, expect).map(Some)
}

/// Renames `from` (which must match `expect`) to `to`, which must not
/// exist: a folder moves with everything in it.
pub(crate) fn rename<S: PathStore>(
    store: &S,
    from: &RelPath,
    to: &RelPath,
    expect: &Expect,
) -> Result<(), ReplicaError> {
    let Some(node) = check(store, from, expect)? else {
        // Nothing was expected there, and nothing is: nothing to move.
        return Err(changed(from));
    };
    let condition = S::condition(&node, expect);
    if store.move_noreplace(from.as_str(), to.as_str(), S::is_dir(&node), condition)? {
        return Ok(());
    }
    // Refused: whichever of the two is not what the plan saw.
    let path = match store.stat(to.as_str()) {
        Ok(Some(_)) => to,
        _ => from,
    };
    Err(changed(path))
}

/// The second half of a write: checks `path` against `expect` (where it
/// expects nothing, the move that never replaces checks it), moves what
/// is there to the trash, lets the backend `prepare` the staged upload at
/// `temp` (its final times and mode), and moves it in without replacing.
/// Returns what is at `path` now and the trash name of the version it
/// replaced. `prepare` returns what the upload is once moved in where the
/// backend knows it without asking (it set every field of its version
/// token itself): the look after the move is then left out.
pub(crate) fn commit<S: PathStore>(
    store: &S,
    temp: &str,
    path: &RelPath,
    expect: &Expect,
    prepare: impl FnOnce() -> Result<Option<S::Node>, ReplicaError>,
) -> Result<(S::Node, Option<RelPath>), ReplicaError> {
    // Where nothing is expected the move that never replaces is the
    // check, made in the same step as the move: a look first would only
    // cost a round trip.
    let found = match expect {
        Expect::Absent if store.refuses_taken_target() => None,
        _ => check(store, path, expect)?,
    };
    // With a condition the store refuses the move if the target changed
    // since the check; without one, RACE: a write between the check and
    // the move goes to the trash with it: kept, not lost.
    let trash_name = match &found {
        Some(node) => Some(trash(store, path, node, expect)?),
        None => None,
    };
    let known = prepare()?;
    // A file that appeared at the target since the check refuses the
    // move, and the path is re-planned.
    if !store.move_noreplace(temp, path.as_str(), false, None)? {
        return Err(changed(path));
    }
    let now = match known {
        Some(node) => node,
        None => store.stat(path.as_str())?.ok_or_else(|| changed(path))?,
    };
    Ok((now, trash_name))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use super::*;
    use crate::locks::LockExt;
    use crate::model::Entry;
    use crate::remote::kit::{Entries, purge_trash};
    use crate::remote::layout;

    /// A store in memory: each path is a folder or a file's content.
    #[derive(Default)]
    struct Memory {
        paths: Mutex<BTreeMap<String, Option<String>>>,
        /// Removes this path right before the next move of it, as someone
        /// else would between a check and the move; the move then fails
        /// as a missing source does.
        vanish_before_move: Mutex<Option<String>>,
        batches: layout::TrashBatches,
    }

    impl Memory {
        fn put(&self, path: &str, content: Option<&str>) {
            self.paths
                .locked()
                .insert(path.to_owned(), content.map(str::to_owned));
        }

        fn paths(&self) -> Vec<String> {
            self.paths.locked().keys().cloned().collect()
        }
    }

    impl PathStore for Memory {
        type Node = Option<String>;

        fn stat(&self, path: &str) -> Result<Option<Self::Node>, ReplicaError> {
            Ok(self.paths.locked().get(path).cloned())
        }

        fn is_dir(node: &Self::Node) -> bool {
            node.is_none()
        }

        fn matches(node: &Self::Node, expect: &Expect) -> bool {
            match (node, expect) {
                (None, Expect::Dir) => true,
                (Some(text), Expect::File { size, .. }) => text.len() as u64 == *size,
                _ => false,
            }
        }

        fn condition<'a>(_: &'a Self::Node, _: &'a Expect) -> Option<&'a str> {
            None
        }

        fn list_dir(&self, dir: &str) -> Result<Option<Entries<Self::Node>>, ReplicaError> {
            let paths = self.paths.locked();
            if !matches!(paths.get(dir), Some(None)) {
                return Ok(None);
            }
            let prefix = format!("{dir}/");
            Ok(Some(
                paths
                    .iter()
                    .filter_map(|(p, n)| Some((p.strip_prefix(&prefix)?, n)))
                    .filter(|(name, _)| !name.contains('/'))
                    .map(|(name, n)| (name.to_owned(), n.clone()))
                    .collect(),
            ))
        }

        fn mkdir_all(&self, dir: &str, _private: bool) -> Result<(), ReplicaError> {
            let mut at = String::new();
            for segment in dir.split('/') {
                if !at.is_empty() {
                    at.push('/');
                }
                at.push_str(segment);
                self.paths.locked().entry(at.clone()).or_insert(None);
            }
            Ok(())
        }

        fn move_noreplace(
            &self,
            from: &str,
            to: &str,
            _dir: bool,
            _condition: Option<&str>,
        ) -> Result<bool, ReplicaError> {
            if self.vanish_before_move.locked().as_deref() == Some(from) {
                self.paths.locked().remove(from);
            }
            let mut paths = self.paths.locked();
            if paths.contains_key(to) {
                return Ok(false);
            }
            let Some(node) = paths.remove(from) else {
                return Err(ReplicaError::io(
                    "move",
                    from,
                    std::io::Error::from(std::io::ErrorKind::NotFound),
                ));
            };
            let below: Vec<String> = paths
                .keys()
                .filter(|p| p.starts_with(&format!("{from}/")))
                .cloned()
                .collect();
            for path in below {
                let node = paths.remove(&path).unwrap();
                paths.insert(format!("{to}{}", &path[from.len()..]), node);
            }
            paths.insert(to.to_owned(), node);
            Ok(true)
        }

        fn refuses_taken_target(&self) -> bool {
            true
        }

        fn trash_batches(&self) -> &layout::TrashBatches {
            &self.batches
        }

        fn remove_tree(&self, path: &str) -> Result<(), ReplicaError> {
            self.paths
                .locked()
                .retain(|p, _| p != path && !p.starts_with(&format!("{path}/")));
            Ok(())
        }

        fn remove_empty_dir(&self, path: &RelPath, _: &Self::Node) -> Result<bool, ReplicaError> {
            let prefix = format!("{path}/");
            let mut paths = self.paths.locked();
            if paths.keys().any(|p| p.starts_with(&prefix)) {
                return Ok(false);
            }
            paths.remove(path.as_str());
            Ok(true)
        }
    }

    fn rel(path: &str) -> RelPath {
        RelPath::new(path).unwrap()
    }

    fn file(text: &str) -> Expect {
        let meta = crate::model::FileMeta {
            hash: crate::model::ContentHash::of_bytes(text.as_bytes()),
            size: text.len() as u64,
            mtime_ns: 0,
            mode: None,
        };
        Expect::of(Some(&Entry::File(meta)))
    }

    #[test]
    fn a_commit_keeps_every_replaced_version_under_a_name_of_its_own() {
        let store = Memory::default();
        store.put("f.txt", Some("one"));
        let mut names = Vec::new();
        for (old, new) in [("one", "two"), ("two", "six")] {
            store.put(".prism-tmp-x-f.txt", Some(new));
            let (now, trashed) = commit(
                &store,
                ".prism-tmp-x-f.txt",
                &rel("f.txt"),
                &file(old),
                || Ok(None),
            )
            .unwrap();
            assert_eq!(now.as_deref(), Some(new));
            names.push(trashed.unwrap());
        }
        // Both within the same minute: the second name has a suffix.
        assert_ne!(names[0], names[1]);
        for (name, text) in names.iter().zip(["one", "two"]) {
            let at = format!("{}/{name}", trash_dir());
            assert_eq!(store.stat(&at).unwrap(), Some(Some(text.to_owned())));
        }
        // A file that appeared where a new one was planned is not replaced.
        store.put("g.txt", Some("theirs"));
        store.put(".prism-tmp-y-g.txt", Some("mine"));
        let refused = commit(
            &store,
            ".prism-tmp-y-g.txt",
            &rel("g.txt"),
            &Expect::Absent,
            || Ok(None),
        );
        assert!(matches!(refused, Err(ReplicaError::Changed { .. })));
        assert_eq!(
            store.stat("g.txt").unwrap(),
            Some(Some("theirs".to_owned()))
        );
    }

    #[test]
    fn paths_replaced_twice_in_a_minute_share_one_spare_batch() {
        let store = Memory::default();
        let paths: Vec<String> = (0..20).map(|i| format!("d/f{i}.txt")).collect();
        for path in &paths {
            store.put(path, Some("one"));
        }
        let mut batches_of_round = Vec::new();
        for (old, new) in [("one", "two"), ("two", "six")] {
            let mut batches = std::collections::BTreeSet::new();
            for path in &paths {
                store.put(".prism-tmp-x", Some(new));
                let (_, trashed) =
                    commit(&store, ".prism-tmp-x", &rel(path), &file(old), || Ok(None)).unwrap();
                let trashed = trashed.unwrap();
                let (batch, below) = trashed.as_str().split_once('/').unwrap();
                assert_eq!(below, path);
                batches.insert(batch.to_owned());
            }
            batches_of_round.push(batches);
        }
        // The second round finds every name of the minute's batch taken:
        // its versions go to one spare batch, not one each (two where the
        // minute turned during the test).
        assert!(batches_of_round[1].len() <= 2, "{batches_of_round:?}");
        assert!(batches_of_round[1].is_disjoint(&batches_of_round[0]));
        for (path, old) in paths.iter().zip(std::iter::repeat("one")) {
            let kept = batches_of_round[0].iter().any(|b| {
                store.stat(&format!("{}/{b}/{path}", trash_dir())).unwrap()
                    == Some(Some(old.to_owned()))
            });
            assert!(kept, "{path}: the first version is kept");
        }
    }

    #[test]
    fn a_path_gone_between_its_check_and_its_trash_move_is_a_change_not_a_failure() {
        let store = Memory::default();
        store.put("f.txt", Some("one"));
        *store.vanish_before_move.locked() = Some("f.txt".to_owned());
        let removed = remove(&store, &rel("f.txt"), &file("one"));
        assert!(
            matches!(removed, Err(ReplicaError::Changed { .. })),
            "{removed:?}"
        );
    }

    #[test]
    fn a_folder_goes_only_empty_and_a_move_never_replaces() {
        let store = Memory::default();
        store.put("d", None);
        store.put("d/f.txt", Some("one"));
        store.put("e.txt", Some("two"));
        let kept = remove(&store, &rel("d"), &Expect::Dir);
        assert!(matches!(kept, Err(ReplicaError::Changed { .. })));
        let refused = rename(&store, &rel("d/f.txt"), &rel("e.txt"), &file("one"));
        assert!(matches!(refused, Err(ReplicaError::Changed { path }) if path == "e.txt"));
        rename(&store, &rel("d"), &rel("moved"), &Expect::Dir).unwrap();
        assert_eq!(store.paths(), ["e.txt", "moved", "moved/f.txt"]);
        remove(&store, &rel("moved/f.txt"), &file("one")).unwrap();
        assert_eq!(remove(&store, &rel("moved"), &Expect::Dir).unwrap(), None);
        assert!(store.stat("moved").unwrap().is_none());
    }

    #[test]
    fn the_purge_removes_whole_batches_older_than_the_retention_and_nothing_else() {
        let store = Memory::default();
        store
            .mkdir_all(&format!("{}/20000101-0000/d", trash_dir()), true)
            .unwrap();
        store.put(
            &format!("{}/20000101-0000/d/f.txt", trash_dir()),
            Some("old"),
        );
        store.put(&format!("{}/not-a-batch", trash_dir()), None);
        store.put("f.txt", Some("one"));
        store.put(".prism-tmp-x-f.txt", Some("two"));
        commit(
            &store,
            ".prism-tmp-x-f.txt",
            &rel("f.txt"),
            &file("one"),
            || Ok(None),
        )
        .unwrap();
        let day = std::time::Duration::from_secs(86_400);
        assert_eq!(purge_trash(&store, day).unwrap(), 1);
        let left = store.list_dir(&trash_dir()).unwrap().unwrap();
        assert_eq!(left.len(), 2, "{left:?}");
        assert!(left.iter().any(|(name, _)| name == "not-a-batch"));
    }
}
