//! The mass-deletion guard: the checks that stop a sync before it turns an
//! unmounted disk, an emptied folder or a broken remote listing into
//! deletions on the other side.
//!
//! Pure decisions over counts, the plan and the record of recent deletions;
//! the clock is passed in. The engine asks, and waits for `prism-syncctl
//! confirm-deletions PAIR` when a check trips.
//!
//! Deletions are weighed over a window of time as well as per sync: a
//! script that deletes most of a folder one file at a time makes many small
//! syncs, each harmless alone. The record is the journal's change log, so
//! the window holds across the rounds of a run, across runs and across a
//! restart of the agent; it starts afresh where the user last confirmed.

use std::fmt;
use std::time::{Duration, SystemTime};

use crate::journal::DeletedFiles;
use crate::model::{Entry, Side, SideTree};
use crate::reconcile::{Action, Plan};

/// A side that once held this many files and now holds none is treated as
/// missing rather than emptied, unless the user confirms.
pub const EMPTIED_MIN_FILES: u64 = 4;
/// Deleting more than half of a pair's files, and at least this many,
/// within [`DELETION_WINDOW`] (in one sync or in many) waits for
/// confirmation.
pub const MASS_DELETION_MIN_FILES: u64 = 10;
/// How far back deletions count: long enough for a slow script or a user
/// emptying a folder by hand, short enough that ordinary tidying spread
/// over a day is never held.
pub const DELETION_WINDOW: Duration = Duration::from_secs(10 * 60);

/// Why a sync stopped before doing anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GuardTrip {
    /// The root folder is gone (an unmounted disk, a renamed folder).
    RootMissing { side: Side },
    /// The root exists but our marker vanished: likely an empty mount point.
    MarkerMissing { side: Side },
    /// The side lists no files at all where the base had many.
    SideEmptied { side: Side, base_files: u64 },
    /// The plan's `deletions`, with the `earlier` ones of the window,
    /// delete more than half of the `base_files` the pair held when the
    /// window began.
    MassDeletion {
        deletions: u64,
        earlier: u64,
        base_files: u64,
    },
}

impl GuardTrip {
    /// Whether `other` is the same trip, held for the same reason on the
    /// same side, whatever its counts: a guard that keeps tripping while
    /// the user has not answered yet is one event, not one per poll.
    pub fn same_kind(&self, other: &GuardTrip) -> bool {
        use GuardTrip::*;
        match (self, other) {
            (RootMissing { side: a }, RootMissing { side: b })
            | (MarkerMissing { side: a }, MarkerMissing { side: b })
            | (SideEmptied { side: a, .. }, SideEmptied { side: b, .. }) => a == b,
            (MassDeletion { .. }, MassDeletion { .. }) => true,
            _ => false,
        }
    }
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
                earlier: 0,
                base_files,
            } => write!(
                f,
                "this sync would delete {deletions} of {base_files} files"
            ),
            GuardTrip::MassDeletion {
                deletions,
                earlier,
                base_files,
            } => write!(
                f,
                "this sync would delete {deletions} more files after {earlier} deleted in the \
                 last {} minutes: {} of the {base_files} files the pair held",
                DELETION_WINDOW.as_secs() / 60,
                deletions + earlier
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

/// Where the window of deletions that count at `now` begins: at most
/// [`DELETION_WINDOW`] back, and never before the user last confirmed
/// deletions (what they confirmed is settled).
pub fn window_start(now: SystemTime, confirmed_at: Option<SystemTime>) -> SystemTime {
    let start = now.checked_sub(DELETION_WINDOW).unwrap_or(now);
    confirmed_at.map_or(start, |confirmed| start.max(confirmed))
}

/// How many files the plan deletes (on either side).
pub fn planned_deletions(plan: &Plan) -> u64 {
    plan.actions
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
        .count() as u64
}

/// Trips when the plan's deletions, together with those `recent` records
/// from `window_start` on, delete more than half of the files the pair held
/// when the window began (the `base_files` it holds now plus those deleted
/// since), and at least [`MASS_DELETION_MIN_FILES`]. A plan that deletes
/// nothing never trips: there is nothing to hold back.
pub fn check_plan(
    plan: &Plan,
    base_files: u64,
    recent: &[DeletedFiles],
    window_start: SystemTime,
) -> Option<GuardTrip> {
    let deletions = planned_deletions(plan);
    if deletions == 0 {
        return None;
    }
    let earlier: u64 = recent
        .iter()
        .filter(|batch| batch.at >= window_start)
        .map(|batch| batch.files)
        .sum();
    let total = deletions + earlier;
    let held = base_files + earlier;
    (total >= MASS_DELETION_MIN_FILES && total * 2 > held).then_some(GuardTrip::MassDeletion {
        deletions,
        earlier,
        base_files: held,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ContentHash, FileMeta, RelPath, SideEntry};

    #[test]
    fn a_trip_that_repeats_with_other_counts_is_the_same_trip() {
        let mass = |deletions, earlier| GuardTrip::MassDeletion {
            deletions,
            earlier,
            base_files: 876,
        };
        assert!(mass(90, 438).same_kind(&mass(110, 463)));
        let emptied = |side, base_files| GuardTrip::SideEmptied { side, base_files };
        assert!(emptied(Side::Local, 10).same_kind(&emptied(Side::Local, 12)));
        assert!(!emptied(Side::Local, 10).same_kind(&emptied(Side::Remote, 10)));
        assert!(!mass(90, 438).same_kind(&emptied(Side::Local, 10)));
        assert!(
            !GuardTrip::RootMissing { side: Side::Local }
                .same_kind(&GuardTrip::MarkerMissing { side: Side::Local })
        );
    }

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

    /// A fixed "now" for the window tests.
    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_760_000_000)
    }

    fn ago(secs: u64) -> SystemTime {
        now() - Duration::from_secs(secs)
    }

    fn deleted(secs_ago: u64, files: u64) -> DeletedFiles {
        DeletedFiles {
            at: ago(secs_ago),
            files,
        }
    }

    #[test]
    fn deleting_more_than_half_at_once_trips() {
        let start = window_start(now(), None);
        assert_eq!(
            check_plan(&deletes(11), 20, &[], start),
            Some(GuardTrip::MassDeletion {
                deletions: 11,
                earlier: 0,
                base_files: 20
            })
        );
        assert_eq!(check_plan(&deletes(10), 20, &[], start), None);
        assert_eq!(
            check_plan(&deletes(9), 9, &[], start),
            None,
            "small batches pass"
        );
    }

    #[test]
    fn deleting_more_than_half_a_few_at_a_time_trips_once_the_sum_does() {
        let start = window_start(now(), None);
        // 100 files; 7 at a time, every few seconds, as a slow script does.
        let mut recent = Vec::new();
        let mut base_files = 100;
        let mut tripped_at = None;
        for step in 0..10u64 {
            let plan = deletes(7);
            if let Some(trip) = check_plan(&plan, base_files, &recent, start) {
                tripped_at = Some((step, trip));
                break;
            }
            recent.push(deleted(60 - step * 5, 7));
            base_files -= 7;
        }
        let (step, trip) = tripped_at.expect("the sum tripped");
        assert_eq!(step, 7, "49 deletions pass, the 50th to 56th do not");
        assert_eq!(
            trip,
            GuardTrip::MassDeletion {
                deletions: 7,
                earlier: 49,
                base_files: 100
            }
        );
        let said = trip.to_string();
        assert!(
            said.contains("7 more files after 49 deleted in the last 10 minutes")
                && said.contains("56 of the 100 files"),
            "{said}"
        );
    }

    #[test]
    fn deletions_before_the_window_or_before_a_confirmation_do_not_count() {
        let recent = [deleted(11 * 60, 40), deleted(120, 40)];
        // 100 files an hour ago, 80 deleted since: 20 left.
        let open = window_start(now(), None);
        assert!(
            check_plan(&deletes(5), 20, &recent, open).is_some(),
            "the deletion 2 minutes ago counts: 45 of 60"
        );
        let confirmed = window_start(now(), Some(ago(60)));
        assert_eq!(confirmed, ago(60));
        assert_eq!(
            check_plan(&deletes(5), 20, &recent, confirmed),
            None,
            "what the user confirmed is settled"
        );
        assert_eq!(
            window_start(now(), Some(ago(3600))),
            ago(DELETION_WINDOW.as_secs()),
            "an old confirmation does not widen the window"
        );
    }

    #[test]
    fn ordinary_churn_is_never_held() {
        let start = window_start(now(), None);
        // A few files deleted now and then, in a pair of 40.
        let recent: Vec<DeletedFiles> = (0..12).map(|i| deleted(500 - i * 40, 1)).collect();
        assert_eq!(check_plan(&deletes(2), 28, &recent, start), None);
        // A plan that deletes nothing holds nothing back, whatever went before.
        assert_eq!(check_plan(&deletes(0), 10, &[deleted(5, 90)], start), None);
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
