//! One of reconcile's working trees: content by path, read from the input
//! tree it starts as, and copied only once a move has to change it.
//!
//! Every sync reconciles the whole pair, and most find no move: copying
//! the base and both sides into trees of their own for that would hold
//! each path three more times than the input already does.

use super::{Tree, subtree};
use crate::model::{BaseTree, Entry, RelPath, SideTree};

/// Content by path: an input tree's entries, or a changed copy of them.
pub(super) struct View<'a> {
    source: Source<'a>,
    /// The changed copy, once there is one; `source` is then unused.
    copy: Option<Tree>,
}

#[derive(Clone, Copy)]
enum Source<'a> {
    Base(&'a BaseTree),
    Side(&'a SideTree),
}

impl<'a> View<'a> {
    pub fn of_base(base: &'a BaseTree) -> View<'a> {
        View {
            source: Source::Base(base),
            copy: None,
        }
    }

    pub fn of_side(side: &'a SideTree) -> View<'a> {
        View {
            source: Source::Side(side),
            copy: None,
        }
    }

    /// A view of `tree` itself.
    pub fn of_tree(tree: Tree) -> View<'a> {
        View {
            source: Source::Base(empty_base()),
            copy: Some(tree),
        }
    }

    pub fn get(&self, path: &RelPath) -> Option<&Entry> {
        match (&self.copy, self.source) {
            (Some(copy), _) => copy.get(path),
            (None, Source::Base(base)) => base.get(path).map(|b| &b.entry),
            (None, Source::Side(side)) => side.get(path).map(|s| &s.entry),
        }
    }

    pub fn len(&self) -> usize {
        match (&self.copy, self.source) {
            (Some(copy), _) => copy.len(),
            (None, Source::Base(base)) => base.len(),
            (None, Source::Side(side)) => side.len(),
        }
    }

    pub fn contains_key(&self, path: &RelPath) -> bool {
        self.get(path).is_some()
    }

    /// Every path, in order.
    pub fn keys(&self) -> Box<dyn Iterator<Item = &RelPath> + '_> {
        match (&self.copy, self.source) {
            (Some(copy), _) => Box::new(copy.keys()),
            (None, Source::Base(base)) => Box::new(base.keys()),
            (None, Source::Side(side)) => Box::new(side.keys()),
        }
    }

    /// Whether anything lies at or below `root`.
    pub fn holds_within(&self, root: &RelPath) -> bool {
        match (&self.copy, self.source) {
            (Some(copy), _) => subtree(copy, root).next().is_some(),
            (None, Source::Base(base)) => subtree(base, root).next().is_some(),
            (None, Source::Side(side)) => subtree(side, root).next().is_some(),
        }
    }

    /// A tree of its own with the same content.
    pub fn to_tree(&self) -> Tree {
        match (&self.copy, self.source) {
            (Some(copy), _) => copy.clone(),
            (None, Source::Base(base)) => base
                .iter()
                .map(|(path, b)| (path.clone(), b.entry))
                .collect(),
            (None, Source::Side(side)) => side
                .iter()
                .map(|(path, s)| (path.clone(), s.entry))
                .collect(),
        }
    }

    /// The tree to change: the input's entries are copied the first time.
    pub fn to_mut(&mut self) -> &mut Tree {
        if self.copy.is_none() {
            self.copy = Some(self.to_tree());
        }
        self.copy.get_or_insert_with(Tree::new)
    }
}

/// The source of a view that starts as a tree of its own (never read).
fn empty_base() -> &'static BaseTree {
    static EMPTY: BaseTree = BaseTree::new();
    &EMPTY
}
