//! Stage one of reconcile: find each side's renames and replay them on the
//! other side where that is safe.
//!
//! A move found here is only an optimisation over what the path-wise stage
//! would do anyway (copy the new name, delete the old one): it saves a
//! transfer and keeps a folder rename one rename. So whenever a move is in
//! doubt (both sides moved the source differently, the destination is taken,
//! the other side deleted the source) it is simply not replayed, and the
//! path-wise stage, which never loses content, handles both names. This
//! stage does not decide conflicts and does not look at content beyond
//! matching a moved file or folder to its source.

use std::collections::{BTreeMap, BTreeSet};

use super::view::View;
use super::{Input, Policy, fold, ignores_case, subtree};
use crate::model::{
    BaseEntry, BaseTree, ContentHash, Entry, FileId, Mode, RelPath, Side, SideTree,
};
use crate::reconcile::Action;

/// The trees after every replayable move, for the path-wise stage. Each
/// reads from the input until a move changes it (see [`View`]).
pub(super) struct Moved<'a> {
    /// The moves (with the folder creations they need), in execution order.
    pub actions: Vec<Action>,
    /// What both sides agreed on, seen at the places the sides now use.
    pub base: View<'a>,
    /// The base as the engine holds it once `actions` have run, where it
    /// differs from `base` (see [`Moved::journal`]); `None` while it does
    /// not, which is every sync without moves: a whole second copy of the
    /// base is made only once it is needed.
    journal: Option<View<'a>>,
    pub local: View<'a>,
    pub remote: View<'a>,
}

/// A rename one side made: `from` in the base's coordinates, `to` in the
/// side's own. Both are kept current as other moves rebase the trees.
#[derive(Clone, Debug)]
struct Candidate {
    side: Side,
    from: RelPath,
    to: RelPath,
    is_dir: bool,
}

/// What to do with one candidate, given the trees as they are now.
enum Verdict {
    Replay,
    /// Replayable once the destination's missing parent folders exist.
    NeedsParents,
    /// The other side made the same move (the index of its candidate).
    Converged(usize),
    /// The other side moved the same source elsewhere (likewise).
    Diverged(usize),
    /// Not replayable as things stand; dropped once nothing else can move.
    Drop,
}

/// Detects both sides' moves and replays them, returning the rebased trees.
pub(super) fn replay_moves<'a>(input: &Input<'a>) -> Moved<'a> {
    let mut pending = detect(input.base, input.local, Side::Local);
    pending.extend(detect(input.base, input.remote, Side::Remote));
    // Outer moves first: replaying them rebases the sources of the moves
    // nested inside, which could not be found on the other side before.
    pending
        .sort_by(|a, b| (a.from.depth(), &a.from, a.side).cmp(&(b.from.depth(), &b.from, b.side)));

    let mut moved = Moved {
        actions: Vec::new(),
        journal: None,
        base: View::of_base(input.base),
        local: View::of_side(input.local),
        remote: View::of_side(input.remote),
    };

    // Each round settles at least one candidate or ends the loop. Replaying a
    // move can make another one possible (an outer rename makes a nested
    // source reachable, or creates a destination's parent), so a candidate
    // that cannot be replayed now is only dropped once nothing else can
    // happen; and one that merely lacks parent folders waits while any
    // other move can go first, because that move may be what brings the
    // parent (creating it by hand would then take its name).
    while !pending.is_empty() {
        let verdicts: Vec<Verdict> = (0..pending.len())
            .map(|i| moved.verdict(&pending, i, input.policy))
            .collect();
        let progress = verdicts.iter().position(|v| {
            matches!(
                v,
                Verdict::Replay | Verdict::Converged(_) | Verdict::Diverged(_)
            )
        });
        let waiting = verdicts
            .iter()
            .position(|v| matches!(v, Verdict::NeedsParents));
        match (progress.map(|i| (i, &verdicts[i])), waiting) {
            (Some((i, Verdict::Converged(j))), _) => {
                let candidate = pending[i].clone();
                remove_pair(&mut pending, i, *j);
                moved.converge(&candidate, &mut pending);
            }
            (Some((i, Verdict::Diverged(j))), _) => remove_pair(&mut pending, i, *j),
            (Some((i, _)), _) => {
                let candidate = pending.remove(i);
                moved.replay(&candidate, &mut pending);
            }
            (None, Some(i)) => {
                let candidate = pending.remove(i);
                moved.create_parents(&candidate, input.policy);
                moved.replay(&candidate, &mut pending);
            }
            (None, None) => break,
        }
    }
    moved
}

fn remove_pair(pending: &mut Vec<Candidate>, i: usize, j: usize) {
    pending.remove(i.max(j));
    pending.remove(i.min(j));
}

impl<'a> Moved<'a> {
    /// The base as the engine holds it once `actions` have run. It differs
    /// from `base` where both sides made the same move (nothing runs for
    /// that, so the path-wise stage must emit the base updates) and where
    /// a move needed folders created.
    pub fn journal(&self) -> &View<'a> {
        self.journal.as_ref().unwrap_or(&self.base)
    }

    /// The journal's view, to change it apart from `base`.
    fn journal_mut(&mut self) -> &mut View<'a> {
        self.journal.get_or_insert_with(|| self.base.clone())
    }

    fn tree(&self, side: Side) -> &View<'a> {
        match side {
            Side::Local => &self.local,
            Side::Remote => &self.remote,
        }
    }

    fn tree_mut(&mut self, side: Side) -> &mut View<'a> {
        match side {
            Side::Local => &mut self.local,
            Side::Remote => &mut self.remote,
        }
    }

    fn verdict(&self, pending: &[Candidate], i: usize, policy: Policy) -> Verdict {
        let candidate = &pending[i];
        let other_side = candidate.side.other();
        if let Some(j) = pending
            .iter()
            .position(|o| o.side == other_side && o.from == candidate.from)
        {
            return if pending[j].to == candidate.to {
                Verdict::Converged(j)
            } else {
                Verdict::Diverged(j)
            };
        }

        // The move is still what it was when detected: the source is gone
        // on the moving side and the destination is new there. On the other
        // side the source is still there (whatever happened to its content)
        // and the destination is free.
        let own = self.tree(candidate.side);
        let other = self.tree(other_side);
        let kind_matches = |e: Option<&Entry>| e.is_some_and(|e| e.is_dir() == candidate.is_dir);
        let still_valid = kind_matches(self.base.get(&candidate.from))
            && kind_matches(own.get(&candidate.to))
            && kind_matches(other.get(&candidate.from))
            && !own.contains_key(&candidate.from)
            && !self.base.contains_key(&candidate.to)
            && !other.contains_key(&candidate.to);
        if !still_valid {
            return Verdict::Drop;
        }
        // On a case-insensitive side the destination may be another name
        // for the source itself (`readme` → `README`), but a missing parent
        // folder may not be another name for anything, the source included:
        // it could not be created, or the source would move into itself.
        let insensitive = ignores_case(policy, other_side);
        if insensitive && taken_ignoring_case(other, &candidate.to, Some(&candidate.from)) {
            return Verdict::Drop;
        }
        let mut needs_parents = false;
        for ancestor in candidate.to.ancestors() {
            match other.get(&ancestor) {
                Some(Entry::Dir(_)) => {}
                Some(Entry::File(_)) => return Verdict::Drop,
                None if insensitive && taken_ignoring_case(other, &ancestor, None) => {
                    return Verdict::Drop;
                }
                None => needs_parents = true,
            }
        }
        if needs_parents {
            Verdict::NeedsParents
        } else {
            Verdict::Replay
        }
    }

    /// Replays `candidate` on the other side and rebases everything that
    /// still refers to the old place.
    fn replay(&mut self, candidate: &Candidate, pending: &mut [Candidate]) {
        let target = candidate.side.other();
        let (from, to) = (&candidate.from, &candidate.to);
        self.actions.push(Action::Move {
            side: target,
            from: from.clone(),
            to: to.clone(),
        });
        self.tree_mut(target).rebase(from, to);
        self.base.rebase(from, to);
        if let Some(journal) = &mut self.journal {
            journal.rebase(from, to);
        }
        for other in pending.iter_mut() {
            if let Some(new_from) = other.from.rebase(from, to) {
                other.from = new_from;
            }
            // Destinations are in their own side's coordinates, so only the
            // side that just moved sees them change.
            if other.side == target
                && let Some(new_to) = other.to.rebase(from, to)
            {
                other.to = new_to;
            }
        }
    }

    /// Both sides made the same move: only the base follows, and the
    /// path-wise stage records that in the journal.
    fn converge(&mut self, candidate: &Candidate, pending: &mut [Candidate]) {
        let (from, to) = (&candidate.from, &candidate.to);
        self.journal_mut();
        self.base.rebase(from, to);
        for other in pending.iter_mut() {
            if let Some(new_from) = other.from.rebase(from, to) {
                other.from = new_from;
            }
        }
    }

    /// Creates on the other side the folders the destination needs. They
    /// exist on the moving side, so they would be created anyway.
    fn create_parents(&mut self, candidate: &Candidate, policy: Policy) {
        let target = candidate.side.other();
        for ancestor in candidate.to.ancestors() {
            if self.tree(target).contains_key(&ancestor) {
                continue;
            }
            // With the mode the moving side's folder has. (One its owner
            // cannot write into is made writable first, and given its mode
            // by the path-wise stage once the move is done.)
            let mode = self
                .tree(candidate.side)
                .get(&ancestor)
                .and_then(Entry::mode);
            self.actions.push(Action::Mkdir {
                side: target,
                path: ancestor.clone(),
                mode,
            });
            let created = if policy.holds_modes(target) {
                Entry::dir(mode.map(Mode::fillable))
            } else {
                Entry::dir(None)
            };
            self.tree_mut(target).insert(ancestor.clone(), created);
            // As the engine records a folder creation (see `executor`).
            self.journal_mut()
                .insert(ancestor, Entry::dir(created.mode().or(mode)));
        }
    }
}

/// Whether an entry that vanished and one that appeared with its identity
/// can be one entry: folders by kind (what they hold is checked apart),
/// files only with the same content.
fn same_identity(gone: &Entry, new: &Entry) -> bool {
    match (gone, new) {
        (Entry::Dir { .. }, Entry::Dir { .. }) => true,
        (Entry::File(gone), Entry::File(new)) => gone.hash == new.hash,
        _ => false,
    }
}

fn record(
    found: &mut BTreeMap<RelPath, RelPath>,
    claimed: &mut BTreeSet<RelPath>,
    from: &RelPath,
    to: &RelPath,
) {
    found.insert(from.clone(), to.clone());
    claimed.insert(to.clone());
}

/// The pairing of vanished and appeared files with one content: the only
/// one of each; else, when one side is unique, the only candidate on the
/// other side in the same folder (copies of one file elsewhere in the tree
/// must not hide a rename within a folder, such as a change of case).
fn unique_pair<'a>(
    froms: &[&'a RelPath],
    tos: &[&'a RelPath],
) -> Option<(&'a RelPath, &'a RelPath)> {
    let same_folder = |a: &RelPath, b: &RelPath| a.parent() == b.parent();
    match (froms, tos) {
        ([from], [to]) => Some((from, to)),
        ([from], _) => {
            let mut near = tos.iter().filter(|to| same_folder(from, to));
            match (near.next(), near.next()) {
                (Some(to), None) => Some((from, to)),
                _ => None,
            }
        }
        (_, [to]) => {
            let mut near = froms.iter().filter(|from| same_folder(from, to));
            match (near.next(), near.next()) {
                (Some(from), None) => Some((from, to)),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Whether a case-insensitive `tree` already holds a different name for
/// `path`, not counting what lies within `except`.
fn taken_ignoring_case(tree: &View<'_>, path: &RelPath, except: Option<&RelPath>) -> bool {
    let key = fold(path);
    tree.keys()
        .any(|p| p != path && !except.is_some_and(|e| p.is_within(e)) && fold(p) == key)
}

/// The moves `side` made since the base, outermost only: a folder rename
/// is one move, not one per file.
fn detect(base: &BaseTree, tree: &SideTree, side: Side) -> Vec<Candidate> {
    let gone: BTreeMap<&RelPath, &BaseEntry> = base
        .iter()
        .filter(|(path, _)| !tree.contains_key(*path))
        .collect();
    let new: BTreeMap<&RelPath, &Entry> = tree
        .iter()
        .filter(|(path, _)| !base.contains_key(*path))
        .map(|(path, e)| (path, &e.entry))
        .collect();
    let mut found: BTreeMap<RelPath, RelPath> = BTreeMap::new();
    let mut claimed: BTreeSet<RelPath> = BTreeSet::new();

    // By identity: the side still knows the entry, under a new name. An
    // identity that is not unique on either end (hard links) proves nothing.
    // A file's identity must be confirmed by its content: file systems hand
    // a deleted file's inode to the next file created, so a deletion and an
    // unrelated new file can share one. Taken for a rename, the new file
    // would replace the old one's content under the new name, and the
    // deleted version would sit in the trash under a name it never had. A
    // file renamed and edited is a new file and a deletion instead, which
    // transfers the same bytes.
    let mut gone_by_id: BTreeMap<&FileId, Vec<&RelPath>> = BTreeMap::new();
    for (path, entry) in &gone {
        let id = match side {
            Side::Local => entry.local_id.as_ref(),
            Side::Remote => entry.remote_id.as_ref(),
        };
        if let Some(id) = id {
            gone_by_id.entry(id).or_default().push(path);
        }
    }
    let mut new_by_id: BTreeMap<&FileId, Vec<&RelPath>> = BTreeMap::new();
    for (path, entry) in tree.iter().filter(|(path, _)| new.contains_key(path)) {
        if let Some(id) = &entry.id {
            new_by_id.entry(id).or_default().push(path);
        }
    }
    // A folder's identity must be confirmed by what it holds, for the same
    // reason: the base had nothing below it, or something it had below it
    // is at the same place below the new name (edited or not: a folder
    // moved and its one file edited is still a move). A folder deleted and
    // a new one made elsewhere share no name below them.
    let holds_its_own = |from: &RelPath, to: &RelPath| {
        let mut below = subtree(base, from)
            .filter(|(path, _)| *path != from)
            .peekable();
        below.peek().is_none()
            || below.any(|(path, _)| {
                path.rebase(from, to)
                    .is_some_and(|moved| tree.contains_key(&moved))
            })
    };
    for (id, froms) in &gone_by_id {
        if let ([from], Some([to])) = (froms.as_slice(), new_by_id.get(id).map(Vec::as_slice))
            && same_identity(&gone[from].entry, new[to])
            && (!new[to].is_dir() || holds_its_own(from, to))
        {
            record(&mut found, &mut claimed, from, to);
        }
    }

    // Files by content: a file that vanished and a non-empty file that
    // appeared with the same hash, each the only one of its kind. Empty
    // files all look alike, so they never pair.
    let mut gone_by_hash: BTreeMap<ContentHash, Vec<&RelPath>> = BTreeMap::new();
    for (path, entry) in &gone {
        if let (Entry::File(meta), false) = (entry.entry, found.contains_key(*path)) {
            gone_by_hash.entry(meta.hash).or_default().push(path);
        }
    }
    let mut new_by_hash: BTreeMap<ContentHash, Vec<&RelPath>> = BTreeMap::new();
    for (path, entry) in &new {
        if let (Entry::File(meta), false) = (entry, claimed.contains(*path))
            && meta.size > 0
        {
            new_by_hash.entry(meta.hash).or_default().push(path);
        }
    }
    for (hash, froms) in &gone_by_hash {
        let Some(tos) = new_by_hash.get(hash) else {
            continue;
        };
        if let Some((from, to)) = unique_pair(froms, tos) {
            record(&mut found, &mut claimed, from, to);
        }
    }

    // Folders by content: every file the base had below the old folder is
    // below the new one at the same relative path with the same content. A
    // folder without files proves nothing; an ambiguous pairing either way
    // is dropped.
    let new_dirs: Vec<&RelPath> = new
        .iter()
        .filter(|(path, entry)| entry.is_dir() && !claimed.contains(**path))
        .map(|(path, _)| *path)
        .collect();
    let mut pairs: Vec<(&RelPath, &RelPath)> = Vec::new();
    for (from, entry) in &gone {
        if !entry.entry.is_dir() || found.contains_key(*from) {
            continue;
        }
        let files: Vec<(&RelPath, ContentHash)> = subtree(base, from)
            .filter_map(|(path, e)| e.entry.file().map(|meta| (path, meta.hash)))
            .collect();
        if files.is_empty() {
            continue;
        }
        for to in &new_dirs {
            let all_there = files.iter().all(|(path, hash)| {
                path.rebase(from, to)
                    .and_then(|moved| tree.get(&moved))
                    .and_then(|e| e.entry.file())
                    .is_some_and(|meta| meta.hash == *hash)
            });
            if all_there {
                pairs.push((*from, *to));
            }
        }
    }
    for (from, to) in &pairs {
        let unique = pairs.iter().filter(|(f, _)| f == from).count() == 1
            && pairs.iter().filter(|(_, t)| t == to).count() == 1;
        if unique {
            record(&mut found, &mut claimed, from, to);
        }
    }

    // A move that merely follows its nearest moved ancestor is part of it.
    let follows_ancestor = |from: &RelPath, to: &RelPath| {
        let ancestors: Vec<RelPath> = from.ancestors().collect();
        ancestors
            .iter()
            .rev()
            .find_map(|ancestor| found.get(ancestor).map(|dest| (ancestor, dest)))
            .is_some_and(|(ancestor, dest)| from.rebase(ancestor, dest).as_ref() == Some(to))
    };
    found
        .iter()
        .filter(|(from, to)| !follows_ancestor(from, to))
        .map(|(from, to)| Candidate {
            side,
            from: from.clone(),
            to: to.clone(),
            is_dir: gone[from].entry.is_dir(),
        })
        .collect()
}
