//! The mass-deletion guard: the checks that stop a sync before it turns an
//! unmounted disk, an emptied folder or a broken remote listing into
//! deletions on the other side.
//!
//! Pure decisions over counts and the plan; the engine asks, and waits for
//! `prism-syncctl confirm-deletions PAIR` when a check trips.

use std::fmt;

use crate::model::{Entry, Side, SideTree};
use crate::reconcile::{Action, Plan};

/// A side that once held this many files and now holds none is treated as
/// missing rather than emptied, unless the user confirms.
pub const EMPTIED_MIN_FILES: u64 = 4;
/// A batch deleting more than half of a pair's files, and at least this
/// many, waits for confirmation.
pub const MASS_DELETION_MIN_FILES: u64 = 10;

/// Why a sync stopped before doing anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GuardTrip {
    /// The root folder is gone (an unmounted disk, a renamed folder).
    RootMissing { side: Side },
    /// The root exists but our marker vanished: likely an empty mount point.
    MarkerMissing { side: Side },
    /// The side lists no files at all where the base had many.
    SideEmptied { side: Side, base_files: u64 },
    /// The plan deletes more than half of the pair's files.
    MassDeletion { deletions: u64, base_files: u64 },
}

impl fmt::Display for GuardTrip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GuardTrip::RootMissing { side } => write!(
                f,
                "the {side} folder is missing (an unmounted disk?); nothing was synced"
            ),
            GuardTrip::MarkerMissing { side } => write!(
                f,
                "the {side} folder lost its Prism Sync marker (an empty mount point?); nothing was synced"
            ),
            GuardTrip::SideEmptied { side, base_files } => write!(
                f,
                "the {side} folder is empty but held {base_files} synced files; syncing would delete them on the other side"
            ),
            GuardTrip::MassDeletion {
                deletions,
                base_files,
            } => write!(
                f,
                "this sync would delete {deletions} of {base_files} files"
            ),
        }
    }
}

/// Trips when a full listing of `side` holds no file while the base held
/// at least [`EMPTIED_MIN_FILES`].
pub fn check_emptied(side: Side, tree: &SideTree, base_files: u64) -> Option<GuardTrip> {
    let has_files = tree.values().any(|e| matches!(e.entry, Entry::File(_)));
    (!has_files && base_files >= EMPTIED_MIN_FILES)
        .then_some(GuardTrip::SideEmptied { side, base_files })
}

/// Trips when the plan deletes more than half of the pair's files.
pub fn check_plan(plan: &Plan, base_files: u64) -> Option<GuardTrip> {
    let deletions = plan
        .actions
        .iter()
        .filter(|a| {
            matches!(
                a,
                Action::Delete {
                    expected: Entry::File(_),
                    ..
                }
            )
        })
        .count() as u64;
    (deletions >= MASS_DELETION_MIN_FILES && deletions * 2 > base_files).then_some(
        GuardTrip::MassDeletion {
            deletions,
            base_files,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ContentHash, FileMeta, RelPath, SideEntry};

    fn file() -> Entry {
        Entry::File(FileMeta {
            hash: ContentHash::of_bytes(b"x"),
            size: 1,
            mtime_ns: 0,
            mode: None,
        })
    }

    fn deletes(n: usize) -> Plan {
        Plan {
            actions: (0..n)
                .map(|i| Action::Delete {
                    side: Side::Remote,
                    path: RelPath::new(&format!("f{i}")).unwrap(),
                    expected: file(),
                })
                .collect(),
            conflicts: Vec::new(),
        }
    }

    #[test]
    fn deleting_more_than_half_trips() {
        assert_eq!(
            check_plan(&deletes(11), 20),
            Some(GuardTrip::MassDeletion {
                deletions: 11,
                base_files: 20
            })
        );
        assert_eq!(check_plan(&deletes(10), 20), None);
        assert_eq!(check_plan(&deletes(9), 9), None, "small batches pass");
    }

    #[test]
    fn an_empty_side_trips_only_when_it_held_files() {
        let empty = SideTree::new();
        assert!(check_emptied(Side::Local, &empty, 100).is_some());
        assert!(check_emptied(Side::Local, &empty, 1).is_none());
        let mut one = SideTree::new();
        one.insert(RelPath::new("a").unwrap(), SideEntry::new(file()));
        assert!(check_emptied(Side::Local, &one, 100).is_none());
    }
}
