//! The pure three-way decision: base × local × remote → a [`Plan`].
//!
//! Architecture invariant: nothing in this module touches `std::fs`, the
//! journal, a remote, the clock, randomness or `async`. Three snapshots and a
//! [`Policy`] go in; actions and conflicts come out, in a documented,
//! deterministic order. That is what lets it be tested by a scenario table
//! and a random model.
//!
//! What the engine may rely on:
//! - no action ever destroys the last copy of any content: a path modified
//!   on one side is never deleted or overwritten on the other side without
//!   being a [`Conflict`];
//! - no action is emitted for a conflicted path or anything below it;
//! - a folder is deleted only when nothing below it survives on that side;
//! - the order of `Plan::actions` is: moves (outermost first, in the order
//!   they must run), folder creations (parents first), copies (by path),
//!   deletions (deepest first), base-only updates (by path).

use crate::model::{BaseTree, Entry, FileMeta, RelPath, Side, SideTree};

/// What reconcile needs to know about the two file systems.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// Two names differing only in case are the same file on the local side.
    pub local_case_insensitive: bool,
    /// Two names differing only in case are the same file on the remote.
    pub remote_case_insensitive: bool,
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
    /// Create the folder `path` on `side`.
    Mkdir { side: Side, path: RelPath },
    /// Copy the file at `path` from the other side onto `to`. `source` is
    /// the version the plan saw on the other side (the executor verifies the
    /// bytes it copies hash to it); `replaces` is what the plan saw at `path`
    /// on `to` (`None`: nothing may be there), which the executor re-checks
    /// before replacing anything.
    Copy {
        to: Side,
        path: RelPath,
        source: FileMeta,
        replaces: Option<Entry>,
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
