//! The kit path-addressed stores are built on: an SFTP server, a WebDAV
//! share, anything that names files by their path below a root and can
//! move one without replacing what is at the destination.
//!
//! A backend implements [`PathStore`], a handful of primitives on paths
//! relative to its root (stat, list a folder, make folders, move without
//! replacing, remove a tree or an empty folder), and gets from here the
//! parts every such backend must do the same way, written once:
//!
//! - the careful steps ([`careful`]): check a path against the caller's
//!   `Expect` (with its version token; where it expects nothing, the move
//!   that never replaces is the check), move the version it replaces or
//!   removes to the trash, move the staged upload in without replacing,
//!   and look again unless the backend set every part of the version
//!   itself;
//! - the trash ([`careful::trash`], [`purge_trash`]): versions under
//!   `.prism-sync/trash/BATCH/PATH`, one batch a minute, a taken name
//!   retried in a batch of its own, batches past the retention removed
//!   whole;
//! - the records listing ([`list_records`]);
//! - the parallel walk of a listing ([`walk`]).
//!
//! Whether a failure is about one path or the whole store is decided in
//! [`walk::Found::hold`] (for a listing, which then ends in
//! `remote::interrupted_listing`) and by [`ReplicaError::is_offline`]; a
//! step that fails on a path that is no longer what the caller expected
//! is a change to re-plan ([`careful::trash`]), never a failure of the
//! path. How the lease is taken is `remote::lease::acquire`'s.
//!
//! Architecture invariant: nothing here knows a protocol; a store never
//! decides what is kept or replaced.

pub(crate) mod careful;
pub(crate) mod walk;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{ReplicaError, RootState};
use crate::fsops::Expect;
use crate::model::RelPath;
use crate::remote::layout::{self, METADATA_DIR};

/// A folder's entries: each name with what the store says about it.
pub(crate) type Entries<N> = Vec<(String, N)>;

/// What a path-addressed store can do, on paths relative to its root
/// (`""` is the root itself, segments joined with `/`). A primitive that
/// cannot reach the store at all fails with an error whose
/// [`ReplicaError::is_offline`] is true.
pub(crate) trait PathStore: Sync {
    /// What the store says about one name.
    type Node;

    /// What is at `path`, not following a symbolic link; `None` when
    /// nothing is.
    fn stat(&self, path: &str) -> Result<Option<Self::Node>, ReplicaError>;

    /// Whether `node` is a folder.
    fn is_dir(node: &Self::Node) -> bool;

    /// Whether `node` is what `expect` describes (kind, size, mtime, and
    /// whatever the store's version token adds).
    fn matches(node: &Self::Node, expect: &Expect) -> bool;

    /// The version a move of `node` (found matching `expect`) may name
    /// so the store refuses it if the path changed since it was looked
    /// at (`If-Match`); `None` where the store has no such condition.
    fn condition<'a>(node: &'a Self::Node, expect: &'a Expect) -> Option<&'a str>;

    /// The names in the folder `dir` with what they are; `None` when there
    /// is no such folder.
    fn list_dir(&self, dir: &str) -> Result<Option<Entries<Self::Node>>, ReplicaError>;

    /// Makes the folder `dir` and its missing parents; `private`: for the
    /// owner only where the store holds modes (the trash).
    fn mkdir_all(&self, dir: &str, private: bool) -> Result<(), ReplicaError>;

    /// Moves `from` (a folder when `dir`) to `to` unless something is at
    /// `to`: never replaces. With `condition`, only while `from` is still
    /// that version. `Ok(false)`: refused, because `to` is taken or `from`
    /// is no longer that version.
    fn move_noreplace(
        &self,
        from: &str,
        to: &str,
        dir: bool,
        condition: Option<&str>,
    ) -> Result<bool, ReplicaError>;

    /// Whether [`PathStore::move_noreplace`] is known to refuse a taken
    /// target by itself, so that a commit expecting nothing at its path
    /// need not look first. A server that might replace is looked at.
    fn refuses_taken_target(&self) -> bool;

    /// Which trash batch a version goes to: one per store, so versions of
    /// a minute share their batches (see [`layout::TrashBatches`]).
    fn trash_batches(&self) -> &layout::TrashBatches;

    /// Removes `path` and everything below it, never following a link.
    fn remove_tree(&self, path: &str) -> Result<(), ReplicaError>;

    /// Removes the folder `node` at `path` if it is empty (or already
    /// gone); `Ok(false)` when something is in it. A store whose folders
    /// can gain content between a look and a removal moves it to the
    /// trash ([`careful::trash`]) rather than deleting what it holds.
    fn remove_empty_dir(&self, path: &RelPath, node: &Self::Node) -> Result<bool, ReplicaError>;
}

/// The trash folder, relative to the root.
pub(crate) fn trash_dir() -> String {
    format!("{METADATA_DIR}/{}", layout::TRASH_DIR)
}

/// Removes the trash batches older than `older_than`; returns how many
/// went. A batch is a folder named after the minute it was made (see
/// [`layout::trash_batch`]); anything else in the trash is not ours to
/// delete.
pub(crate) fn purge_trash<S: PathStore>(
    store: &S,
    older_than: Duration,
) -> Result<usize, ReplicaError> {
    let trash = trash_dir();
    let Some(batches) = store.list_dir(&trash)? else {
        return Ok(0);
    };
    let cutoff = SystemTime::now()
        .checked_sub(older_than)
        .unwrap_or(UNIX_EPOCH);
    let mut purged = 0;
    for (name, node) in batches {
        if S::is_dir(&node) && layout::trash_batch_is_older(&name, cutoff) {
            store.remove_tree(&format!("{trash}/{name}"))?;
            purged += 1;
        }
    }
    Ok(purged)
}

/// The names of the records in the folder `folder` of the metadata folder
/// (`.prism-sync/FOLDER/`), in no particular order; none when the folder
/// does not exist. Temporary files a record write left are not records.
pub(crate) fn list_records<S: PathStore>(
    store: &S,
    folder: &str,
) -> Result<Vec<String>, ReplicaError> {
    let entries = store.list_dir(&format!("{METADATA_DIR}/{folder}"))?;
    Ok(entries
        .unwrap_or_default()
        .into_iter()
        .map(|(name, _)| name)
        .filter(|name| super::is_record_name(name))
        .collect())
}

/// What the root looks like before a sync touches it: missing, a folder
/// with or without our marker (`.prism-sync/root`), or, when something
/// else is there, an error saying that `root` (the root as a person
/// knows it, such as `/srv/notes on nas:22`) is not a folder.
pub(crate) fn root_state<S: PathStore>(store: &S, root: &str) -> Result<RootState, ReplicaError> {
    let opening = |error| match error {
        ReplicaError::Io { source, .. } => ReplicaError::io("open", root, source),
        error => error,
    };
    match store.stat("").map_err(opening)? {
        None => return Ok(RootState::Missing),
        Some(node) if !S::is_dir(&node) => {
            return Err(ReplicaError::Other(format!("{root} is not a folder")));
        }
        Some(_) => {}
    }
    let marker = store
        .stat(&format!("{METADATA_DIR}/root"))
        .map_err(opening)?;
    Ok(if marker.is_some() {
        RootState::Ready
    } else {
        RootState::Unmarked
    })
}
