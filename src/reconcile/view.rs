//! One of reconcile's working trees: content by path, read from the input
//! tree it starts as, with what replayed moves changed kept beside it.
//!
//! Every sync reconciles the whole pair, and a move changes a few paths
//! of it: copying the base and both sides into trees of their own for
//! that would hold each path several more times than the input already
//! does, for every sync with a rename in it.

use std::collections::BTreeSet;

use super::{Tree, subtree};
use crate::model::{BaseTree, Entry, RelPath, SideTree};

/// Content by path: an input tree's entries, less what was taken away,
/// with what was put in.
#[derive(Clone)]
pub(super) struct View<'a> {
    source: Source<'a>,
    /// Paths of `source` that are no longer here.
    removed: BTreeSet<RelPath>,
    /// Entries put here since; they stand over `source`'s.
    added: Tree,
}

#[derive(Clone, Copy)]
enum Source<'a> {
    Base(&'a BaseTree),
    Side(&'a SideTree),
}

impl<'a> View<'a> {
    pub fn of_base(base: &'a BaseTree) -> View<'a> {
        View::of(Source::Base(base))
    }

    pub fn of_side(side: &'a SideTree) -> View<'a> {
        View::of(Source::Side(side))
    }

    fn of(source: Source<'a>) -> View<'a> {
        View {
            source,
            removed: BTreeSet::new(),
            added: Tree::new(),
        }
    }

    fn in_source(&self, path: &RelPath) -> Option<&'a Entry> {
        match self.source {
            Source::Base(base) => base.get(path).map(|b| &b.entry),
            Source::Side(side) => side.get(path).map(|s| &s.entry),
        }
    }

    pub fn get(&self, path: &RelPath) -> Option<&Entry> {
        if let Some(entry) = self.added.get(path) {
            return Some(entry);
        }
        if self.removed.contains(path) {
            return None;
        }
        self.in_source(path)
    }

    pub fn contains_key(&self, path: &RelPath) -> bool {
        self.get(path).is_some()
    }

    /// Every path, once each, in path order.
    pub fn keys(&self) -> Box<dyn Iterator<Item = &RelPath> + '_> {
        let source: Box<dyn Iterator<Item = &RelPath>> = match self.source {
            Source::Base(base) => Box::new(base.keys()),
            Source::Side(side) => Box::new(side.keys()),
        };
        if self.removed.is_empty() && self.added.is_empty() {
            return source;
        }
        let kept =
            source.filter(|path| !self.removed.contains(*path) && !self.added.contains_key(*path));
        Box::new(sorted_union(vec![
            Box::new(kept),
            Box::new(self.added.keys()),
        ]))
    }

    /// At least as many as there are paths (for the room to make for
    /// them).
    pub fn size_hint(&self) -> usize {
        let source = match self.source {
            Source::Base(base) => base.len(),
            Source::Side(side) => side.len(),
        };
        source + self.added.len()
    }

    /// Puts `entry` at `path`, replacing what was there.
    pub fn insert(&mut self, path: RelPath, entry: Entry) {
        self.removed.remove(&path);
        self.added.insert(path, entry);
    }

    fn remove(&mut self, path: &RelPath) {
        self.added.remove(path);
        if self.in_source(path).is_some() {
            self.removed.insert(path.clone());
        }
    }

    /// `root` and everything below it, in path order.
    fn within(&self, root: &RelPath) -> Vec<(RelPath, Entry)> {
        let mut found: Vec<(RelPath, Entry)> = match self.source {
            Source::Base(base) => subtree(base, root)
                .map(|(path, b)| (path.clone(), b.entry))
                .collect(),
            Source::Side(side) => subtree(side, root)
                .map(|(path, s)| (path.clone(), s.entry))
                .collect(),
        };
        found.retain(|(path, _)| !self.removed.contains(path) && !self.added.contains_key(path));
        found.extend(subtree(&self.added, root).map(|(path, entry)| (path.clone(), *entry)));
        found.sort_by(|a, b| a.0.cmp(&b.0));
        found
    }

    /// Moves `from` and everything below it to `to`, one path at a time
    /// in path order (a moved path replaces what was at its new place).
    pub fn rebase(&mut self, from: &RelPath, to: &RelPath) {
        for (path, _) in self.within(from) {
            let current = self.get(&path).copied();
            self.remove(&path);
            if let (Some(entry), Some(new_path)) = (current, path.rebase(from, to)) {
                self.insert(new_path, entry);
            }
        }
    }
}

/// The paths of `runs`, each in path order, merged into one run in path
/// order with each path once: the union of trees walked side by side,
/// without a list of every path to sort.
pub(super) fn sorted_union<'a>(
    runs: Vec<Box<dyn Iterator<Item = &'a RelPath> + 'a>>,
) -> impl Iterator<Item = &'a RelPath> + 'a {
    let mut runs: Vec<_> = runs.into_iter().map(Iterator::peekable).collect();
    std::iter::from_fn(move || {
        let next = runs
            .iter_mut()
            .filter_map(|run| run.peek().copied())
            .min()?;
        for run in &mut runs {
            run.next_if(|path| *path == next);
        }
        Some(next)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_union_of_sorted_runs_is_sorted_and_has_each_path_once() {
        let paths = |text: &str| -> Vec<RelPath> {
            text.split_whitespace()
                .map(|p| RelPath::new(p).unwrap())
                .collect()
        };
        let (a, b, c) = (paths("a a/x b d"), paths("a a/x c"), paths(""));
        let runs: Vec<Box<dyn Iterator<Item = &RelPath>>> =
            vec![Box::new(a.iter()), Box::new(b.iter()), Box::new(c.iter())];
        let union: Vec<&str> = sorted_union(runs).map(RelPath::as_str).collect();
        assert_eq!(union, ["a", "a/x", "b", "c", "d"]);
    }
}
