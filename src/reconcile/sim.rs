//! A tiny in-memory executor for the tests: applies a [`Plan`] to two side
//! trees and a base the way the engine is meant to, and refuses (with a
//! message naming the action) whatever the real executor would refuse: a
//! missing source, a destination that is taken (ignoring case on a
//! case-insensitive side), a missing parent folder, a folder deleted while
//! not empty, or an entry that is not what the plan expected.

use std::collections::BTreeSet;

use super::{
    Action, Input, Plan, Policy, fold, ignores_case, rebase_tree, reconcile, same, subtree,
};
use crate::model::{
    BaseEntry, BaseTree, ContentHash, Entry, FileId, FileMeta, Mode, RelPath, Side, SideEntry,
    SideTree,
};

/// Version `n` of a file: content `vN`, or empty for 0. The mtime is `n`,
/// so that equal versions are equal entries.
pub(super) fn file(n: u8) -> Entry {
    let content = if n == 0 {
        String::new()
    } else {
        format!("v{n}")
    };
    Entry::File(FileMeta {
        hash: ContentHash::of_bytes(content.as_bytes()),
        size: content.len() as u64,
        mtime_ns: i64::from(n),
        mode: None,
    })
}

/// The `n` of [`file`] for an entry, for messages and descriptions.
pub(super) fn version(entry: &Entry) -> String {
    match entry {
        Entry::Dir(_) => "/".to_owned(),
        Entry::File(meta) => (0..=20u8)
            .find(|n| file(*n).same_content(entry))
            .map_or_else(|| meta.hash.short(), |n| n.to_string()),
    }
}

/// Both sides and the base, as the engine would hold them.
#[derive(Clone, Debug)]
pub(super) struct World {
    pub base: BaseTree,
    pub local: SideTree,
    pub remote: SideTree,
    pub policy: Policy,
    next_id: u64,
}

impl World {
    pub fn new(base: BaseTree, local: SideTree, remote: SideTree, policy: Policy) -> World {
        World {
            base,
            local,
            remote,
            policy,
            next_id: 0,
        }
    }

    pub fn side(&self, side: Side) -> &SideTree {
        match side {
            Side::Local => &self.local,
            Side::Remote => &self.remote,
        }
    }

    fn side_mut(&mut self, side: Side) -> &mut SideTree {
        match side {
            Side::Local => &mut self.local,
            Side::Remote => &mut self.remote,
        }
    }

    /// The plan for this world. The only place the tests call [`reconcile`].
    pub fn reconcile(&self) -> Plan {
        reconcile(Input {
            base: &self.base,
            local: &self.local,
            remote: &self.remote,
            policy: self.policy,
        })
    }

    /// Applies `plan` and checks what every plan must guarantee; returns
    /// the world afterwards.
    ///
    /// - every action runs (the executor would refuse none of them);
    /// - nothing but a move touches a conflicted path or what is below it;
    /// - afterwards both sides hold the same thing everywhere else, and a
    ///   case-insensitive side holds no two names that differ only in case;
    /// - every file version a side had that differs from the base at its
    ///   path (or at the path it was moved from) is still on some side:
    ///   only base versions may go;
    /// - reconcile is deterministic, and reconciling the result again plans
    ///   nothing and reports the same conflicts (with a case-insensitive
    ///   side, after at most one more pass, itself checked the same way).
    pub fn check_plan(&self, plan: &Plan) -> Result<World, String> {
        // On a case-insensitive side a first pass can leave one step for the
        // next: a move it had to drop because a name collided only in case
        // is found again once the colliding entry is gone (the proptest
        // model's persisted cases show two). Both passes are safe; the
        // second must then finish the job. Case-sensitive sides must settle
        // in one pass.
        let extra_passes =
            u32::from(self.policy.local_case_insensitive || self.policy.remote_case_insensitive);
        self.check_plan_within(plan, extra_passes)
    }

    fn check_plan_within(&self, plan: &Plan, extra_passes: u32) -> Result<World, String> {
        if self.reconcile() != *plan {
            return Err("reconcile is not deterministic".into());
        }
        let conflicted: Vec<&RelPath> = plan.conflicts.iter().map(|c| &c.path).collect();
        let in_conflict = |path: &RelPath| conflicted.iter().any(|c| path.is_within(c));
        for action in &plan.actions {
            if !matches!(action, Action::Move { .. }) && in_conflict(action.path()) {
                return Err(format!("{action:?} touches a conflicted path"));
            }
        }

        let mut after = self.clone();
        after.apply(plan)?;

        let paths: BTreeSet<&RelPath> = after.local.keys().chain(after.remote.keys()).collect();
        for path in paths.into_iter().filter(|p| !in_conflict(p)) {
            let local = after.local.get(path).map(|e| e.entry);
            let remote = after.remote.get(path).map(|e| e.entry);
            if !same(local.as_ref(), remote.as_ref()) {
                return Err(format!(
                    "{path} differs: local {local:?}, remote {remote:?}"
                ));
            }
            if let (Some(l), Some(r)) =
                (local.and_then(|e| e.mode()), remote.and_then(|e| e.mode()))
                && l != r
            {
                return Err(format!("{path} has mode {l:?} locally, {r:?} remotely"));
            }
            if let Some(mode) = local.or(remote).and_then(|e| e.mode())
                && !self.allowed_before(path, mode)
            {
                return Err(format!("{path} was widened to {mode:?}"));
            }
        }
        for side in [Side::Local, Side::Remote] {
            let had_clash = has_case_clash(self.side(side));
            if ignores_case(self.policy, side) && !had_clash && has_case_clash(after.side(side)) {
                return Err(format!("two names differ only in case on the {side} side"));
            }
        }

        let hashes_after: BTreeSet<ContentHash> = after
            .local
            .values()
            .chain(after.remote.values())
            .filter_map(|e| e.entry.file().map(|meta| meta.hash))
            .collect();
        for side in [Side::Local, Side::Remote] {
            // A base version may also sit at a new name because the side
            // moved it there: any version of a base file the side no longer
            // has at its base path counts as a base version.
            let moved_base_versions: BTreeSet<ContentHash> = self
                .base
                .iter()
                .filter(|(path, _)| !self.side(side).contains_key(*path))
                .filter_map(|(_, b)| b.entry.file().map(|meta| meta.hash))
                .collect();
            for (path, entry) in self.side(side) {
                let Entry::File(meta) = entry.entry else {
                    continue;
                };
                let is_base = moved_base_versions.contains(&meta.hash)
                    || self
                        .base
                        .get(path)
                        .is_some_and(|b| b.entry.same_content(&entry.entry));
                if !is_base && !hashes_after.contains(&meta.hash) {
                    return Err(format!(
                        "version {} of {path} on the {side} side is lost",
                        version(&entry.entry)
                    ));
                }
            }
        }

        after.refresh_base_ids();
        let again = after.reconcile();
        if !again.actions.is_empty() && extra_passes > 0 {
            return after.check_plan_within(&again, extra_passes - 1);
        }
        if !again.actions.is_empty() {
            return Err(format!(
                "a second reconcile still plans {:?}",
                again.actions
            ));
        }
        let paths_again: Vec<&RelPath> = again.conflicts.iter().map(|c| &c.path).collect();
        if paths_again != conflicted {
            return Err(format!(
                "a second reconcile reports conflicts at {paths_again:?}, not {conflicted:?}"
            ));
        }
        Ok(after)
    }

    /// Whether `mode` at `path` allows nothing that neither side allowed
    /// there before. Only paths both sides had are judged: a path new on
    /// one side may be a move, whose other end had its mode elsewhere.
    fn allowed_before(&self, path: &RelPath, mode: Mode) -> bool {
        let (Some(local), Some(remote)) = (self.local.get(path), self.remote.get(path)) else {
            return true;
        };
        let union = [local.entry.mode(), remote.entry.mode()]
            .into_iter()
            .flatten()
            .fold(0, |bits, m| bits | m.bits());
        union == 0 || mode.is_within(Mode::from_bits(union))
    }

    /// Whether a copy's `mode` is one a side or the base had at `path`,
    /// or both sides' narrowest, as the rule says.
    fn merged_from(&self, path: &RelPath, mode: Mode, source: Mode) -> bool {
        let had = |tree: &SideTree| tree.get(path).and_then(|e| e.entry.mode());
        let others = [had(&self.local), had(&self.remote)];
        mode == source
            || others.contains(&Some(mode))
            || others
                .iter()
                .flatten()
                .any(|other| source.narrowest(*other) == mode)
    }

    /// A fresh identity, as a new inode or remote file id would be.
    fn fresh(&mut self, side: Side) -> Option<FileId> {
        self.next_id += 1;
        Some(FileId::new(&format!("sim-{side}-{}", self.next_id)))
    }

    /// Applies every action in order; the first one that the real executor
    /// would refuse is an error.
    pub fn apply(&mut self, plan: &Plan) -> Result<(), String> {
        for action in &plan.actions {
            self.apply_one(action)
                .map_err(|why| format!("{action:?}: {why}"))?;
        }
        Ok(())
    }

    fn apply_one(&mut self, action: &Action) -> Result<(), String> {
        match action {
            Action::Move { side, from, to } => {
                if !self.side(*side).contains_key(from) {
                    return Err("the source is missing".into());
                }
                self.check_free(*side, to, Some(from))?;
                rebase_tree(self.side_mut(*side), from, to);
                rebase_tree(&mut self.base, from, to);
            }
            Action::Mkdir { side, path, mode } => {
                self.check_free(*side, path, None)?;
                let id = self.fresh(*side);
                let created = match self.policy.holds_modes(*side) {
                    true => Entry::dir(mode.map(Mode::fillable)),
                    false => Entry::dir(None),
                };
                let entry = SideEntry {
                    entry: created,
                    id,
                    version: None,
                };
                self.side_mut(*side).insert(path.clone(), entry);
                let base = Entry::dir(created.mode().or(*mode));
                self.base.insert(path.clone(), BaseEntry::new(base));
            }
            Action::Copy {
                to,
                path,
                source,
                replaces,
                mode,
            } => {
                let found = self.side(to.other()).get(path).map(|e| e.entry);
                if !same(found.as_ref(), Some(&Entry::File(*source))) {
                    return Err(format!("the source is {found:?}"));
                }
                match replaces {
                    None => self.check_free(*to, path, None)?,
                    Some(expected) => self.check_is(*to, path, expected)?,
                }
                if let (Some(mode), Some(source_mode)) = (mode, source.mode)
                    && !self.merged_from(path, *mode, source_mode)
                {
                    return Err(format!("the copy's mode {mode:?} is nobody's"));
                }
                let id = self.fresh(*to);
                let written =
                    Entry::File(*source).with_mode(mode.filter(|_| self.policy.holds_modes(*to)));
                let entry = SideEntry {
                    entry: written,
                    id,
                    version: None,
                };
                self.side_mut(*to).insert(path.clone(), entry);
                // As the engine records it: the mode the source side has,
                // else the copy's.
                let base = Entry::File(*source)
                    .with_mode(found.and_then(|e| e.mode()).or(*mode).or(written.mode()));
                self.base.insert(path.clone(), BaseEntry::new(base));
            }
            Action::SetMode {
                side,
                path,
                expected,
                mode,
            } => {
                self.check_is(*side, path, expected)?;
                let found = self.side(*side).get(path).and_then(|e| e.entry.mode());
                if found != expected.mode() {
                    return Err(format!(
                        "expected mode {:?}, found {found:?}",
                        expected.mode()
                    ));
                }
                let entry = self.side_mut(*side).get_mut(path).expect("checked above");
                entry.entry = entry.entry.with_mode(Some(*mode));
                let changed = entry.entry;
                self.base.insert(path.clone(), BaseEntry::new(changed));
            }
            Action::Delete {
                side,
                path,
                expected,
            } => {
                self.check_is(*side, path, expected)?;
                if subtree(self.side(*side), path).any(|(p, _)| p != path) {
                    return Err("the folder is not empty".into());
                }
                self.side_mut(*side).remove(path);
                self.base.remove(path);
            }
            Action::SetBase { path, entry } => match entry {
                Some(entry) => {
                    self.base.insert(path.clone(), BaseEntry::new(*entry));
                }
                None => {
                    self.base.remove(path);
                }
            },
        }
        Ok(())
    }

    /// Nothing may be at `path` (nor, on a case-insensitive side, at a name
    /// that differs only in case, other than what `moving` takes away), and
    /// its parent must be a folder.
    fn check_free(
        &self,
        side: Side,
        path: &RelPath,
        moving: Option<&RelPath>,
    ) -> Result<(), String> {
        let tree = self.side(side);
        if tree.contains_key(path) {
            return Err("the destination is taken".into());
        }
        if ignores_case(self.policy, side) {
            let key = fold(path);
            let clash = tree
                .keys()
                .find(|p| fold(p) == key && !moving.is_some_and(|m| p.is_within(m)));
            if let Some(clash) = clash {
                return Err(format!("the destination collides with {clash}"));
            }
        }
        match path.parent() {
            Some(parent) if !tree.get(&parent).is_some_and(|e| e.entry.is_dir()) => {
                Err("the parent folder is missing".into())
            }
            Some(_) | None => Ok(()),
        }
    }

    fn check_is(&self, side: Side, path: &RelPath, expected: &Entry) -> Result<(), String> {
        let found = self.side(side).get(path).map(|e| e.entry);
        if same(found.as_ref(), Some(expected)) && found.and_then(|e| e.mode()) == expected.mode() {
            Ok(())
        } else {
            Err(format!("expected {expected:?}, found {found:?}"))
        }
    }

    /// Gives the base the identities the sides now have, as the engine
    /// records them after each action.
    pub fn refresh_base_ids(&mut self) {
        for (path, entry) in self.base.iter_mut() {
            entry.local_id = self.local.get(path).and_then(|e| e.id.clone());
            entry.remote_id = self.remote.get(path).and_then(|e| e.id.clone());
        }
    }
}

fn has_case_clash(tree: &SideTree) -> bool {
    let folded: BTreeSet<String> = tree.keys().map(fold).collect();
    folded.len() != tree.len()
}
