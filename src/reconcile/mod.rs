//! The pure three-way decision: base × local × remote → a [`Plan`].
//!
//! Architecture invariant: nothing in this module touches `std::fs`, the
//! journal, a remote, the clock, randomness or `async`. Three snapshots and a
//! [`Policy`] go in; actions and conflicts come out, in a documented,
//! deterministic order. That is what lets it be tested by a scenario table
//! and a random model. It does not resolve conflicts (the engine applies a
//! strategy) and it does not re-check anything on disk (the executor does).
//!
//! [`reconcile`] runs in two stages:
//! 1. `moves`: each side's renames are detected against the base (by the
//!    side's identities, else by unique content) and replayed on the other
//!    side where that is safe. The base and the other side are then rebased,
//!    so that everything after sees a moved folder at its new place.
//! 2. `paths`: every path of the union is decided on its own (agreed,
//!    propagate one side's change, or conflict); then folders are fixed up
//!    bottom-up (a folder that still holds something survives), everything
//!    below a conflict is left alone, and names that would collide on a
//!    case-insensitive side become conflicts.
//!
//! What the engine may rely on:
//! - no action ever destroys the last copy of any content: a path modified
//!   on one side is never deleted or overwritten on the other side without
//!   being a [`Conflict`];
//! - no action but a move is emitted for a conflicted path or anything below
//!   it (a move carries a conflicted file to its new name unchanged, and the
//!   conflict is reported at that new name);
//! - a folder is deleted only when nothing below it survives on that side,
//!   and every folder a copy or a folder creation needs exists by then;
//! - only the outermost conflicted path is reported: a conflict covers its
//!   whole subtree.
//!
//! The order of `Plan::actions` is the order of execution:
//! 1. moves, outermost first, each preceded by the creation of any missing
//!    parent folder of its destination;
//! 2. deletions that make room for something created at the same path (a
//!    file replaced by a folder or the reverse, with everything below the old
//!    folder; on a case-insensitive side also a name that only changes case),
//!    deepest first;
//! 3. folder creations, parents first (by depth, then path, then side);
//! 4. copies, by path, then side;
//! 5. all other deletions, deepest first (by depth descending, then path);
//! 6. mode changes, by path, then side (last, so that a folder made
//!    read-only still takes what is put in or taken out of it first);
//! 7. base-only updates, by path.
//!
//! Permission bits (see [`Mode`]) are decided apart from content, on every
//! path both sides end up holding as the same kind of entry: where the
//! sides' modes differ, the one that changed since the base wins; where
//! both changed, differently, each keeps only the bits both allow (the
//! narrower of the two: a mode-only disagreement never widens access and
//! never costs a conflict copy of identical bytes). A side that cannot hold
//! modes (`None`) takes no part. A copy or folder creation carries the
//! decided mode, so a `chmod` on the receiving side survives an edit on
//! the sending one; a mode-only change is a [`Action::SetMode`], never a
//! transfer.
//!
//! How each action changes the base, which the engine commits per finished
//! action: a move carries the base entries below `from` to `to`; a folder
//! creation records a folder with its mode; a copy records `source` with
//! the mode the source side has (or, where it has none, the copy's); a mode
//! change records the entry with its new mode; a deletion forgets the path;
//! a base update sets what it says. Reconcile emits exactly the base
//! updates needed on top of those, so that applying the whole plan leaves a
//! base on which the next reconcile plans nothing but the same conflicts.
//!
//! Reconcile assumes each tree is well formed: the parent of every entry is
//! a folder entry of the same tree, except for the ancestors of the scope's
//! roots, which lie outside the scope and are assumed to exist on both sides.

mod moves;
mod paths;
mod view;

#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use crate::model::{BaseTree, Entry, FileMeta, Mode, RelPath, Side, SideTree};

/// What reconcile needs to know about the two file systems.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// Two names differing only in case are the same file on the local side.
    pub local_case_insensitive: bool,
    /// Two names differing only in case are the same file on the remote.
    pub remote_case_insensitive: bool,
    /// The local side holds permission bits.
    pub local_modes: bool,
    /// The remote holds permission bits (not WebDAV).
    pub remote_modes: bool,
}

impl Policy {
    /// Whether `side` holds permission bits: only there does a folder
    /// creation make a folder writable first and set its mode after.
    pub fn holds_modes(self, side: Side) -> bool {
        match side {
            Side::Local => self.local_modes,
            Side::Remote => self.remote_modes,
        }
    }
}

/// The outcome of one reconcile pass.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub conflicts: Vec<Conflict>,
}

/// One step that brings the two sides (and the base) closer together.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Rename `from` (a file, or a folder with everything below it) to `to`
    /// on `side`, because the other side already did so.
    Move {
        side: Side,
        from: RelPath,
        to: RelPath,
    },
    /// Create the folder `path` on `side` with `mode` (`None`: the side's
    /// default). A mode its owner cannot write into is created with the
    /// owner's `rwx` added, so what belongs inside can be put there; a
    /// [`Action::SetMode`] later in the plan then sets the mode itself.
    Mkdir {
        side: Side,
        path: RelPath,
        mode: Option<Mode>,
    },
    /// Copy the file at `path` from the other side onto `to`. `source` is
    /// the version the plan saw on the other side (the executor verifies the
    /// bytes it copies hash to it); `replaces` is what the plan saw at `path`
    /// on `to` (`None`: nothing may be there), which the executor re-checks
    /// before replacing anything. `mode` is what the copy is created with
    /// (`None`: the side's default), never wider than the decided mode at
    /// any moment.
    Copy {
        to: Side,
        path: RelPath,
        source: FileMeta,
        replaces: Option<Entry>,
        mode: Option<Mode>,
    },
    /// Change only the permission bits of `path` on `side`, which must
    /// still be `expected` (its mode included), to `mode`. Planned where
    /// both sides hold the same content once the copies have run (on the
    /// side a copy came from, when the other side's mode won): the engine
    /// does it only once they do.
    SetMode {
        side: Side,
        path: RelPath,
        expected: Entry,
        mode: Mode,
    },
    /// Remove `path` from `side`; `expected` is what the plan saw there.
    Delete {
        side: Side,
        path: RelPath,
        expected: Entry,
    },
    /// The sides already agree (or a resolution forgets a path): only the
    /// base changes. `None` removes the base entry.
    SetBase { path: RelPath, entry: Option<Entry> },
}

impl Action {
    /// The path the action is about (the destination for a move).
    pub fn path(&self) -> &RelPath {
        match self {
            Action::Move { to, .. } => to,
            Action::Mkdir { path, .. }
            | Action::Copy { path, .. }
            | Action::SetMode { path, .. }
            | Action::Delete { path, .. }
            | Action::SetBase { path, .. } => path,
        }
    }
}

/// Why both sides changed a path in ways that cannot both be applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConflictKind {
    /// Both sides changed an existing file to different content.
    BothModified,
    /// Both sides created a file at a path the base did not have.
    BothCreated,
    /// The local side deleted what the remote modified.
    LocalDeletedRemoteModified,
    /// The local side modified what the remote deleted.
    LocalModifiedRemoteDeleted,
    /// One side has a folder where the other has a file, and both changed.
    TypeChanged,
    /// Two names that differ only in case cannot both exist on a
    /// case-insensitive side; `other_path` names the one that is kept.
    CaseCollision,
}

impl ConflictKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ConflictKind::BothModified => "both_modified",
            ConflictKind::BothCreated => "both_created",
            ConflictKind::LocalDeletedRemoteModified => "local_deleted_remote_modified",
            ConflictKind::LocalModifiedRemoteDeleted => "local_modified_remote_deleted",
            ConflictKind::TypeChanged => "type_changed",
            ConflictKind::CaseCollision => "case_collision",
        }
    }

    pub fn parse(s: &str) -> Option<ConflictKind> {
        [
            ConflictKind::BothModified,
            ConflictKind::BothCreated,
            ConflictKind::LocalDeletedRemoteModified,
            ConflictKind::LocalModifiedRemoteDeleted,
            ConflictKind::TypeChanged,
            ConflictKind::CaseCollision,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// A path both sides changed incompatibly. Reconcile only reports it; the
/// engine applies a strategy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    pub path: RelPath,
    pub kind: ConflictKind,
    pub base: Option<Entry>,
    pub local: Option<Entry>,
    pub remote: Option<Entry>,
    /// The colliding path, for [`ConflictKind::CaseCollision`].
    pub other_path: Option<RelPath>,
}

/// Input of one reconcile pass. The three trees cover the same scope: the
/// whole pair, or the subtrees a partial sync looks at.
#[derive(Clone, Copy, Debug)]
pub struct Input<'a> {
    pub base: &'a BaseTree,
    pub local: &'a SideTree,
    pub remote: &'a SideTree,
    pub policy: Policy,
}

/// Decides what to do to bring `input.local` and `input.remote` together,
/// given what they last agreed on (`input.base`). Pure and deterministic;
/// the module documentation gives the rules and the order of the result.
pub fn reconcile(input: Input<'_>) -> Plan {
    let moved = moves::replay_moves(&input);
    paths::decide_paths(moved, input.policy)
}

/// A tree reduced to what reconcile compares once moves are known: content
/// by path. Identities only serve move detection.
type Tree = BTreeMap<RelPath, Entry>;

/// Same content, where absence only equals absence.
fn same(a: Option<&Entry>, b: Option<&Entry>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => a.same_content(b),
        (None, Some(_)) | (Some(_), None) => false,
    }
}

/// Same content and mode, where absence only equals absence.
fn same_version(a: Option<&Entry>, b: Option<&Entry>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => a.same_version(b),
        (None, Some(_)) | (Some(_), None) => false,
    }
}

/// The mode a path ends with on both sides, from the modes the base and
/// each side have (each `None` where unknown or of another kind of entry):
/// the side that changed wins; where both changed, differently, only the
/// bits both allow; a side without modes takes no part.
pub fn merge_modes(base: Option<Mode>, local: Option<Mode>, remote: Option<Mode>) -> Option<Mode> {
    match (local, remote) {
        (Some(l), Some(r)) if l == r => Some(l),
        (Some(l), Some(r)) if base == Some(l) => Some(r),
        (Some(l), Some(r)) if base == Some(r) => Some(l),
        (Some(l), Some(r)) => Some(l.narrowest(r)),
        (Some(m), None) | (None, Some(m)) => Some(m),
        (None, None) => base,
    }
}

/// Whether two names that differ only in case are one file on `side`.
fn ignores_case(policy: Policy, side: Side) -> bool {
    match side {
        Side::Local => policy.local_case_insensitive,
        Side::Remote => policy.remote_case_insensitive,
    }
}

/// The key under which a case-insensitive side stores `path`. Unicode
/// lowercasing is close enough to what APFS and NTFS do for the names
/// people actually use; a rarer mismatch only means a missed collision
/// conflict, which the executor's re-check still catches.
fn fold(path: &RelPath) -> String {
    path.as_str().to_lowercase()
}

/// `root` and everything below it, in path order. Everything below `root`
/// starts with `root`'s text, so it lies in one contiguous range of the map
/// together with siblings such as `root-x`, which are filtered out.
fn subtree<'a, V>(
    tree: &'a BTreeMap<RelPath, V>,
    root: &'a RelPath,
) -> impl Iterator<Item = (&'a RelPath, &'a V)> + 'a {
    tree.range(root.clone()..)
        .take_while(move |(path, _)| path.as_str().starts_with(root.as_str()))
        .filter(move |(path, _)| path.is_within(root))
}

/// Moves `from` and everything below it to `to` within one tree.
#[cfg(test)]
fn rebase_tree<V>(tree: &mut BTreeMap<RelPath, V>, from: &RelPath, to: &RelPath) {
    let moving: Vec<RelPath> = subtree(tree, from).map(|(path, _)| path.clone()).collect();
    for path in moving {
        if let (Some(value), Some(new_path)) = (tree.remove(&path), path.rebase(from, to)) {
            tree.insert(new_path, value);
        }
    }
}
