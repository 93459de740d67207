//! Stage two of reconcile: decide every path of the (rebased) trees, then
//! fix up folders, conflicts and case collisions, and emit the plan in the
//! documented order.
//!
//! Each path is first decided on its own from its base, local and remote
//! entries. Three passes then account for the tree structure: bottom-up, a
//! folder whose deletion or replacement would take something that survives
//! below it is kept instead; top-down, everything below a conflict is left
//! alone; and per case-insensitive side, names that would end up colliding
//! become conflicts. This stage does not detect moves (stage one did).

use std::collections::{BTreeMap, BTreeSet};

use super::moves::Moved;
use super::view::sorted_union;
use super::{
    Action, Conflict, ConflictKind, Plan, Policy, fold, ignores_case, merge_modes, same,
    same_version,
};
use crate::model::{Entry, Mode, RelPath, Side};

/// What happens at one path.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Decision {
    /// Both sides hold the same thing, and keep it; at most the base follows.
    Agreed,
    /// Only one side changed: make side `to` hold what the other side holds.
    Propagate { to: Side },
    /// Both sides changed incompatibly; nothing happens here or below.
    Conflict {
        kind: ConflictKind,
        /// Boxed: rare (case collisions), and a slot per path is held.
        other_path: Option<Box<RelPath>>,
    },
    /// Below a conflict: left alone and not reported on its own.
    Covered,
}

/// One path with everything known about it: the entries are borrowed
/// from the trees, as there is a slot for every path of the pair.
struct Slot<'t> {
    base: Option<&'t Entry>,
    journal: Option<&'t Entry>,
    local: Option<&'t Entry>,
    remote: Option<&'t Entry>,
    decision: Decision,
}

impl Slot<'_> {
    fn current(&self, side: Side) -> Option<Entry> {
        match side {
            Side::Local => self.local.copied(),
            Side::Remote => self.remote.copied(),
        }
    }

    /// The mode this path ends with on both sides, where both end up
    /// holding `after`: the modes of the entries of the same kind, merged
    /// (see `merge_modes`).
    fn final_mode(&self, after: &Entry) -> Option<Mode> {
        let like = |e: Option<&Entry>| {
            e.filter(|e| e.is_dir() == after.is_dir())
                .and_then(|e| e.mode())
        };
        merge_modes(like(self.base), like(self.local), like(self.remote))
    }

    /// What `side` holds here once the plan has run.
    fn after(&self, side: Side) -> Option<Entry> {
        match self.decision {
            Decision::Propagate { to } if to == side => self.current(side.other()),
            Decision::Propagate { .. }
            | Decision::Agreed
            | Decision::Conflict { .. }
            | Decision::Covered => self.current(side),
        }
    }
}

const SIDES: [Side; 2] = [Side::Local, Side::Remote];

/// Every path of the trees with what is known about it, in path order: a
/// sorted list rather than a map, as it is built once in order, never
/// grows, and holds every path of the pair.
type Slots<'t> = Vec<(&'t RelPath, Slot<'t>)>;

/// Where `path` is in `slots`.
fn position(slots: &Slots, path: &RelPath) -> Option<usize> {
    slots.binary_search_by(|(p, _)| (*p).cmp(path)).ok()
}

/// Decides every path and returns the whole plan, moves included.
///
/// A path that all three trees (and the journal) hold in the same version
/// is *quiet*: it is agreed, and nothing is emitted for it. Most paths of
/// most syncs are quiet, so they get no slot, only a place in a sorted
/// list of their own, which the folder pass counts as alive on both
/// sides. Where a side ignores case every path gets a slot: the collision
/// pass weighs every name that exists there.
pub(super) fn decide_paths(mut moved: Moved, policy: Policy) -> Plan {
    let moves = std::mem::take(&mut moved.actions);
    let journal = moved.journal();
    let mut trees = vec![&moved.base, &moved.local, &moved.remote];
    if !std::ptr::eq(journal, &moved.base) {
        trees.push(journal);
    }
    let slot_for_every_path = SIDES.into_iter().any(|side| ignores_case(policy, side));
    let entries = |path: &RelPath| {
        (
            moved.base.get(path),
            journal.get(path),
            moved.local.get(path),
            moved.remote.get(path),
        )
    };
    // A quiet path is in the base: there are at most as many as it has.
    let mut quiet: Vec<&RelPath> = Vec::with_capacity(moved.base.size_hint());
    let mut busy: Vec<&RelPath> = Vec::new();
    for path in sorted_union(trees.iter().map(|tree| tree.keys()).collect()) {
        let (base, journal, local, remote) = entries(path);
        if !slot_for_every_path && is_quiet(base, journal, local, remote) {
            quiet.push(path);
        } else {
            busy.push(path);
        }
    }
    quiet.shrink_to_fit();
    let mut slots: Slots = busy
        .into_iter()
        .map(|path| {
            let (base, journal, local, remote) = entries(path);
            let slot = Slot {
                base,
                journal,
                local,
                remote,
                decision: decide(base, local, remote),
            };
            (path, slot)
        })
        .collect();

    keep_folders_that_survive(&mut slots, &quiet);
    cover_below_conflicts(&mut slots);
    for side in SIDES {
        if ignores_case(policy, side) {
            resolve_case_collisions(&mut slots, side);
            cover_below_conflicts(&mut slots);
        }
    }
    emit(moves, &slots, policy)
}

/// True when the base, the journal and both sides hold the same version
/// (content and mode): the path is agreed, its mode merges to the one it
/// has, and the journal already records it, so nothing is emitted for it.
/// Below a conflict it would be covered, which emits nothing either.
fn is_quiet(
    base: Option<&Entry>,
    journal: Option<&Entry>,
    local: Option<&Entry>,
    remote: Option<&Entry>,
) -> bool {
    local.is_some()
        && same_version(local, remote)
        && same_version(local, base)
        && same_version(local, journal)
}

/// The decision for one path on its own.
fn decide(base: Option<&Entry>, local: Option<&Entry>, remote: Option<&Entry>) -> Decision {
    // Both sides hold the same thing: whatever the base says, they agree.
    if same(local, remote) {
        return Decision::Agreed;
    }
    // The sides differ. If one of them still holds the base, only the other
    // one changed, and its change wins (a deletion included: deletion-only
    // changes may be overwritten, and a deleted base version is not lost
    // content, both sides having had it).
    if same(base, local) {
        return Decision::Propagate { to: Side::Local };
    }
    if same(base, remote) {
        return Decision::Propagate { to: Side::Remote };
    }
    // Both sides changed, differently. Whatever involves a folder and a file
    // is a type change; the rest are file-against-file cases.
    let kind = match (base, local, remote) {
        (Some(Entry::Dir(_)), _, Some(Entry::File(_)))
        | (Some(Entry::Dir(_)), Some(Entry::File(_)), _)
        | (Some(Entry::File(_)), Some(Entry::Dir(_)), _)
        | (Some(Entry::File(_)), _, Some(Entry::Dir(_)))
        | (None, Some(Entry::Dir(_)), Some(Entry::File(_)))
        | (None, Some(Entry::File(_)), Some(Entry::Dir(_))) => ConflictKind::TypeChanged,
        (None, Some(Entry::File(_)), Some(Entry::File(_))) => ConflictKind::BothCreated,
        (Some(Entry::File(_)), Some(Entry::File(_)), Some(Entry::File(_))) => {
            ConflictKind::BothModified
        }
        (Some(Entry::File(_)), None, Some(Entry::File(_))) => {
            ConflictKind::LocalDeletedRemoteModified
        }
        (Some(Entry::File(_)), Some(Entry::File(_)), None) => {
            ConflictKind::LocalModifiedRemoteDeleted
        }
        // Three pairwise different values out of "absent" and "folder", or
        // two sides that are equal, cannot get here: the checks above took
        // them. They are listed so that no case hides behind a wildcard.
        (None | Some(Entry::Dir(_)), None | Some(Entry::Dir(_)), None | Some(Entry::Dir(_)))
        | (None, None, Some(Entry::File(_)))
        | (None, Some(Entry::File(_)), None)
        | (Some(Entry::File(_)), None, None) => ConflictKind::BothModified,
    };
    Decision::Conflict {
        kind,
        other_path: None,
    }
}

/// Bottom-up: a folder that one side deleted (or replaced by a file) stays
/// on the other side when something below it survives there. A deleted
/// folder is then recreated on the deleting side; a folder replaced by a
/// file becomes a type-change conflict.
fn keep_folders_that_survive(slots: &mut Slots, quiet: &[&RelPath]) {
    // For each side, how many of the slots from each position on hold
    // something there after the plan (one more at the end, zero): what
    // survives below a folder is then a difference of two counts, without
    // a list of what survives. Reverse path order visits everything below
    // a folder before it, so the counts past a folder are final when it
    // is visited.
    let mut alive_from: [Vec<u32>; 2] = [vec![0; slots.len() + 1], vec![0; slots.len() + 1]];
    for i in (0..slots.len()).rev() {
        let (path, slot) = &slots[i];
        if let Decision::Propagate { to } = slot.decision
            && slot.current(to).is_some_and(|e| e.is_dir())
        {
            let below = below(slots, path);
            let counts = &alive_from[index(to)];
            // Quiet paths stay on both sides. Below a folder one side lacks
            // there are none where every folder is listed, but a side that
            // lists no folders (an object store) may hold one there.
            if counts[below.start] > counts[below.end] || any_quiet_below(quiet, path) {
                let slot = &mut slots[i].1;
                slot.decision = match slot.current(to.other()) {
                    None => Decision::Propagate { to: to.other() },
                    Some(_) => Decision::Conflict {
                        kind: ConflictKind::TypeChanged,
                        other_path: None,
                    },
                };
            }
        }
        for side in SIDES {
            let here = u32::from(slots[i].1.after(side).is_some());
            let counts = &mut alive_from[index(side)];
            counts[i] = counts[i + 1] + here;
        }
    }
}

fn index(side: Side) -> usize {
    match side {
        Side::Local => 0,
        Side::Remote => 1,
    }
}

/// The positions of the slots strictly below `dir`. Those are the paths
/// that start with `dir/`: one run of the slots, before everything from
/// `dir0` on (`0` follows `/`).
fn below(slots: &Slots, dir: &RelPath) -> std::ops::Range<usize> {
    let (below, past) = (format!("{dir}/"), format!("{dir}0"));
    let start = slots.partition_point(|(path, _)| path.as_str() < below.as_str());
    let end = slots.partition_point(|(path, _)| path.as_str() < past.as_str());
    start..end.max(start)
}

/// True when a quiet path lies strictly below `dir` (see [`below`]).
fn any_quiet_below(quiet: &[&RelPath], dir: &RelPath) -> bool {
    let (below, past) = (format!("{dir}/"), format!("{dir}0"));
    let start = quiet.partition_point(|path| path.as_str() < below.as_str());
    quiet
        .get(start)
        .is_some_and(|path| path.as_str() < past.as_str())
}

/// Top-down: everything below a conflicted path is covered by it.
fn cover_below_conflicts(slots: &mut Slots) {
    let mut conflicted: BTreeSet<RelPath> = BTreeSet::new();
    for (path, slot) in slots.iter_mut() {
        if !conflicted.is_empty() && path.ancestors().any(|a| conflicted.contains(&a)) {
            slot.decision = Decision::Covered;
        } else if matches!(slot.decision, Decision::Conflict { .. }) {
            conflicted.insert(path.clone());
        }
    }
}

/// On a case-insensitive `side`, names that would exist there after the
/// plan and differ only in case: the one the side already has wins (else
/// the first in path order); the others become conflicts. Folders are
/// settled before what is below them, so a losing folder takes its
/// contents out of the running.
fn resolve_case_collisions(slots: &mut Slots, side: Side) {
    let mut groups: BTreeMap<String, Vec<RelPath>> = BTreeMap::new();
    for &(path, ref slot) in slots.iter() {
        if slot.after(side).is_some() {
            groups.entry(fold(path)).or_default().push(path.clone());
        }
    }
    let mut losers: BTreeSet<RelPath> = BTreeSet::new();
    for members in groups.values() {
        let standing: Vec<&RelPath> = members
            .iter()
            .filter(|path| !path.ancestors().any(|a| losers.contains(&a)))
            .collect();
        if standing.len() < 2 {
            continue;
        }
        let winner = standing
            .iter()
            .find(|path| position(slots, path).is_some_and(|i| slots[i].1.current(side).is_some()))
            .unwrap_or(&standing[0]);
        for path in standing.iter().filter(|path| *path != winner) {
            losers.insert((*path).clone());
            let Some(i) = position(slots, path) else {
                continue; // grouped paths come from the slots
            };
            let slot = &mut slots[i].1;
            // A path that already conflicts (or lies below a conflict) has
            // no action to withdraw, and keeps its own report.
            if matches!(slot.decision, Decision::Agreed | Decision::Propagate { .. }) {
                slot.decision = Decision::Conflict {
                    kind: ConflictKind::CaseCollision,
                    other_path: Some(Box::new((*winner).clone())),
                };
            }
        }
    }
}

/// Turns the decisions into actions and conflicts, in the documented order.
fn emit(moves: Vec<Action>, slots: &Slots, policy: Policy) -> Plan {
    let mut mkdirs = Vec::new();
    let mut copies = Vec::new();
    let mut deletes = Vec::new();
    let mut mode_changes = Vec::new();
    let mut base_updates = Vec::new();
    let mut conflicts = Vec::new();
    for &(path, ref slot) in slots {
        match &slot.decision {
            Decision::Agreed => {
                // The same content on both sides (or nothing): at most the
                // modes differ, and the base follows.
                let agreed = slot.local.map(|e| e.with_mode(slot.final_mode(e)));
                let changes = set_modes(path, slot, agreed.and_then(|e| e.mode()), None);
                let modes_set = !changes.is_empty();
                mode_changes.extend(changes);
                if !modes_set && !same_version(slot.journal, agreed.as_ref()) {
                    base_updates.push(Action::SetBase {
                        path: path.clone(),
                        entry: agreed,
                    });
                }
            }
            Decision::Propagate { to } => {
                let side = *to;
                let delete = |expected: Entry| Action::Delete {
                    side,
                    path: path.clone(),
                    expected,
                };
                let mode = slot
                    .current(side.other())
                    .and_then(|source| slot.final_mode(&source));
                let copy = |source, replaces| Action::Copy {
                    to: side,
                    path: path.clone(),
                    source,
                    replaces,
                    mode,
                };
                let mut mkdir = || {
                    mkdirs.push(Action::Mkdir {
                        side,
                        path: path.clone(),
                        mode,
                    });
                    // A folder its owner cannot write into is made
                    // writable, filled, then given its mode.
                    if let Some(mode) = mode
                        && mode.fillable() != mode
                        && policy.holds_modes(side)
                    {
                        mode_changes.push(Action::SetMode {
                            side,
                            path: path.clone(),
                            expected: Entry::dir(Some(mode.fillable())),
                            mode,
                        });
                    }
                };
                match (slot.current(side), slot.current(side.other())) {
                    (Some(old), None) => deletes.push(delete(old)),
                    (None, Some(Entry::Dir(_))) => mkdir(),
                    (None, Some(Entry::File(source))) => copies.push(copy(source, None)),
                    (Some(old @ Entry::File(_)), Some(Entry::File(source))) => {
                        copies.push(copy(source, Some(old)));
                    }
                    // A type change: the old entry goes first (see the order
                    // of deletions below), so the copy finds nothing there.
                    (Some(old @ Entry::File(_)), Some(Entry::Dir(_))) => {
                        deletes.push(delete(old));
                        mkdir();
                    }
                    (Some(old @ Entry::Dir(_)), Some(Entry::File(source))) => {
                        deletes.push(delete(old));
                        copies.push(copy(source, None));
                    }
                    // Propagation is only decided where the sides differ;
                    // sides that agree need nothing.
                    (Some(Entry::Dir(_)), Some(Entry::Dir(_))) | (None, None) => {}
                }
                // The side the content came from takes the decided mode
                // too, where the other side's `chmod` won.
                mode_changes.extend(set_modes(path, slot, mode, Some(side)));
            }
            Decision::Conflict { kind, other_path } => conflicts.push(Conflict {
                path: path.clone(),
                kind: *kind,
                base: slot.base.copied(),
                local: slot.local.copied(),
                remote: slot.remote.copied(),
                other_path: other_path.as_deref().cloned(),
            }),
            Decision::Covered => {}
        }
    }

    // A deletion makes room when something is created on the same side at
    // the deleted path or at one of its ancestors (compared the way that
    // side compares names); it must run before the creations.
    let mut created: [BTreeSet<String>; 2] = [BTreeSet::new(), BTreeSet::new()];
    for action in mkdirs.iter().chain(&copies) {
        if let Action::Mkdir { side, path, .. } | Action::Copy { to: side, path, .. } = action {
            created[index(*side)].insert(side_key(path, *side, policy));
        }
    }
    let (mut clearing, mut other_deletes): (Vec<Action>, Vec<Action>) =
        deletes.into_iter().partition(|action| {
            let Action::Delete { side, path, .. } = action else {
                return false;
            };
            std::iter::once(path.clone())
                .chain(path.ancestors())
                .any(|p| created[index(*side)].contains(&side_key(&p, *side, policy)))
        });

    let side_of = |action: &Action| match action {
        Action::Move { side, .. }
        | Action::Mkdir { side, .. }
        | Action::Delete { side, .. }
        | Action::SetMode { side, .. } => Some(*side),
        Action::Copy { to, .. } => Some(*to),
        Action::SetBase { .. } => None,
    };
    let deepest_first = |a: &Action, b: &Action| {
        (std::cmp::Reverse(a.path().depth()), a.path(), side_of(a)).cmp(&(
            std::cmp::Reverse(b.path().depth()),
            b.path(),
            side_of(b),
        ))
    };
    clearing.sort_by(deepest_first);
    other_deletes.sort_by(deepest_first);
    mkdirs.sort_by(|a, b| {
        (a.path().depth(), a.path(), side_of(a)).cmp(&(b.path().depth(), b.path(), side_of(b)))
    });
    copies.sort_by(|a, b| (a.path(), side_of(a)).cmp(&(b.path(), side_of(b))));
    mode_changes.sort_by(|a, b| (a.path(), side_of(a)).cmp(&(b.path(), side_of(b))));

    let mut actions = moves;
    actions.extend(clearing);
    actions.extend(mkdirs);
    actions.extend(copies);
    actions.extend(other_deletes);
    actions.extend(mode_changes);
    actions.extend(base_updates);
    Plan { actions, conflicts }
}

/// A mode change for every side but `skip` (which is being given the mode
/// by a copy or folder creation) that holds a mode other than `mode`.
fn set_modes(path: &RelPath, slot: &Slot, mode: Option<Mode>, skip: Option<Side>) -> Vec<Action> {
    let Some(mode) = mode else {
        return Vec::new();
    };
    SIDES
        .into_iter()
        .filter(|side| Some(*side) != skip)
        .filter_map(|side| {
            let expected = slot.current(side)?;
            expected
                .mode()
                .is_some_and(|m| m != mode)
                .then(|| Action::SetMode {
                    side,
                    path: path.clone(),
                    expected,
                    mode,
                })
        })
        .collect()
}

/// How `side` tells names apart.
fn side_key(path: &RelPath, side: Side, policy: Policy) -> String {
    if ignores_case(policy, side) {
        fold(path)
    } else {
        path.as_str().to_owned()
    }
}

/// A sync makes a slot for every path of the pair: a field that grows one
/// grows every sync's memory by as much per path. Change the figure only
/// on purpose.
#[cfg(test)]
#[test]
#[cfg(target_pointer_width = "64")]
fn a_slot_stays_small() {
    assert_eq!(std::mem::size_of::<(&RelPath, Slot)>(), 56);
}
