//! The careful steps of a path-addressed store, written once: each checks
//! the path against the caller's `Expect` first, keeps whatever it
//! replaces or removes in the trash, and never moves anything over
//! something else. A path found other than expected is
//! [`ReplicaError::Changed`]: re-planned, never forced.

use std::time::SystemTime;

use super::{PathStore, trash_dir};
use crate::fsops::Expect;
use crate::model::RelPath;
use crate::remote::{ReplicaError, trash_suffix};
use crate::timefmt;

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
/// `.prism-sync/trash/STAMP/PATH` without replacing anything there;
/// returns its name below the trash folder (`STAMP/PATH`, perhaps with a
/// suffix). A step refused or failed on a path that is no longer what
/// `expect` says (someone else moved, removed or replaced it since the
/// check) is a change to re-plan.
pub(crate) fn trash<S: PathStore>(
    store: &S,
    path: &RelPath,
    node: &S::Node,
    expect: &Expect,
) -> Result<RelPath, ReplicaError> {
    let stamp = timefmt::conflict_stamp(SystemTime::now());
    let batch = format!("{}/{}", trash_dir(), &stamp[..13]);
    let base = format!("{batch}/{path}");
    let moved = (|| {
        if let Some((parent, _)) = base.rsplit_once('/') {
            store.mkdir_all(parent, true)?;
        }
        let mut dest = base.clone();
        for _ in 0..TRASH_TRIES {
            let condition = S::condition(node, expect);
            if store.move_noreplace(path.as_str(), &dest, S::is_dir(node), condition)? {
                return Ok(Some(dest));
            }
            // Refused: a taken trash name is retried with a suffix; a
            // source that changed is the caller's to re-plan.
            if store.stat(&dest)?.is_none() {
                return Ok(None);
            }
            dest = format!("{base}.{}", trash_suffix());
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

/// The second half of a write: checks `path` against `expect`, moves what
/// is there to the trash, lets the backend `prepare` the staged upload at
/// `temp` (its final times and mode), and moves it in without replacing.
/// Returns what is at `path` now and the trash name of the version it
/// replaced.
pub(crate) fn commit<S: PathStore>(
    store: &S,
    temp: &str,
    path: &RelPath,
    expect: &Expect,
    prepare: impl FnOnce() -> Result<(), ReplicaError>,
) -> Result<(S::Node, Option<RelPath>), ReplicaError> {
    let found = check(store, path, expect)?;
    // With a condition the store refuses the move if the target changed
    // since the check; without one, RACE: a write between the check and
    // the move goes to the trash with it: kept, not lost.
    let trash_name = match &found {
        Some(node) => Some(trash(store, path, node, expect)?),
        None => None,
    };
    prepare()?;
    // A file that appeared at the target since the check refuses the
    // move, and the path is re-planned.
    if !store.move_noreplace(temp, path.as_str(), false, None)? {
        return Err(changed(path));
    }
    let now = store.stat(path.as_str())?.ok_or_else(|| changed(path))?;
    Ok((now, trash_name))
}
