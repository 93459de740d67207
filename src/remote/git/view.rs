//! The remote side as the replica sees it between two listings: the
//! files of the listed tip, and the steps of the batch not pushed yet.
//! Every step checks what it expects against this (the tip plus the
//! batch so far); `flush` turns the pending edits into one commit.

use std::collections::{BTreeMap, BTreeSet};

use crate::fsops::Expect;
use crate::model::RelPath;
use crate::remote::{Problem, ReplicaError};

/// A file in the tree: its mode (`100644`, `100755`), blob id and size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Blob {
    pub(super) mode: String,
    pub(super) oid: String,
    pub(super) size: u64,
}

/// The tip as listed, and the steps done on it since.
#[derive(Default)]
pub(super) struct View {
    /// The commit the view is built on; `None`: the branch does not exist
    /// yet (an empty repository).
    pub(super) tip: Option<String>,
    /// Files below the synced folder, by path relative to it.
    pub(super) files: BTreeMap<String, Blob>,
    /// Entries that are not synced (links, submodules): they occupy their
    /// name.
    pub(super) others: BTreeSet<String>,
    /// The tip's commit time: the modification time of a version whose
    /// own time is not known. `None` until first needed (see
    /// `GitReplica::tip_time`).
    pub(super) time_ns: Option<i64>,
    /// Edits not pushed yet: a blob, or `None` for a removal.
    pub(super) pending: BTreeMap<String, Option<Blob>>,
    /// Moves of the pending batch (from, to, whether a folder), for the
    /// commit message.
    pub(super) moves: Vec<(String, String, bool)>,
    /// What the tree holds that is not synced, for every listing of it.
    pub(super) problems: Vec<Problem>,
}

impl View {
    pub(super) fn current(&self, path: &str) -> Option<&Blob> {
        match self.pending.get(path) {
            Some(edit) => edit.as_ref(),
            None => self.files.get(path),
        }
    }

    /// The current files strictly below `dir`.
    pub(super) fn below(&self, dir: &str) -> Vec<(String, Blob)> {
        let prefix = format!("{dir}/");
        let mut found: BTreeMap<String, Blob> = self
            .files
            .range(prefix.clone()..)
            .take_while(|(p, _)| p.starts_with(&prefix))
            .map(|(p, b)| (p.clone(), b.clone()))
            .collect();
        for (path, edit) in self
            .pending
            .range(prefix.clone()..)
            .take_while(|(p, _)| p.starts_with(&prefix))
        {
            match edit {
                Some(blob) => found.insert(path.clone(), blob.clone()),
                None => found.remove(path),
            };
        }
        found.into_iter().collect()
    }

    pub(super) fn has_other_at_or_below(&self, path: &str) -> bool {
        let prefix = format!("{path}/");
        self.others.contains(path)
            || self
                .others
                .range(prefix.clone()..)
                .next()
                .is_some_and(|p| p.starts_with(&prefix))
    }

    /// Whether a file (or link) holds the name of a folder above `path`.
    pub(super) fn blocked_above(&self, path: &RelPath) -> bool {
        path.ancestors()
            .any(|a| self.current(a.as_str()).is_some() || self.others.contains(a.as_str()))
    }

    pub(super) fn occupied(&self, path: &str) -> bool {
        self.current(path).is_some()
            || self.has_other_at_or_below(path)
            || !self.below(path).is_empty()
    }

    /// Checks that `path` is what a step expects.
    pub(super) fn check(&self, path: &RelPath, expect: &Expect) -> Result<(), ReplicaError> {
        let p = path.as_str();
        if self.blocked_above(path) {
            return Err(changed(path));
        }
        let ok = match expect {
            Expect::Absent => !self.occupied(p),
            Expect::File { size, version, .. } => match self.current(p) {
                Some(blob) => match version {
                    Some(version) => blob.oid == *version,
                    None => blob.size == *size,
                },
                None => false,
            },
            Expect::Dir => self.current(p).is_none() && !self.has_other_at_or_below(p),
        };
        if ok { Ok(()) } else { Err(changed(path)) }
    }

    /// Notes an edit, dropping it when it brings back what the tip has.
    pub(super) fn set(&mut self, path: &str, edit: Option<Blob>) {
        if self.files.get(path) == edit.as_ref() {
            self.pending.remove(path);
        } else {
            self.pending.insert(path.to_owned(), edit);
        }
    }

    /// `alpha: 3 modified, 1 added, docs/ → notes/`.
    pub(super) fn summary(&self, device: &str) -> String {
        let (mut added, mut modified, mut deleted) = (0, 0, 0);
        for (path, edit) in &self.pending {
            let moved = self
                .moves
                .iter()
                .any(|(from, to, _)| within(path, from) || within(path, to));
            if moved {
                continue;
            }
            match (self.files.contains_key(path), edit) {
                (false, Some(_)) => added += 1,
                (true, Some(_)) => modified += 1,
                (true, None) => deleted += 1,
                (false, None) => {}
            }
        }
        let mut parts: Vec<String> = [
            (modified, "modified"),
            (added, "added"),
            (deleted, "deleted"),
        ]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
        for (from, to, folder) in &self.moves {
            let slash = if *folder { "/" } else { "" };
            parts.push(format!("{from}{slash} → {to}{slash}"));
        }
        if parts.is_empty() {
            parts.push("no changes".into());
        }
        format!("{device}: {}", parts.join(", "))
    }
}

pub(super) fn within(path: &str, dir: &str) -> bool {
    path == dir || path.strip_prefix(dir).is_some_and(|r| r.starts_with('/'))
}

pub(super) fn changed(path: impl std::fmt::Display) -> ReplicaError {
    ReplicaError::Changed {
        path: path.to_string(),
    }
}
