//! What agents sharing a remote keep there for each other: the lease
//! (one holder at a time) and records.

use std::sync::Barrier;
use std::time::Duration;

use prism_sync::remote::{Lease, Replica, ReplicaError};

use crate::Case;

conformance!(
    one_agent_at_a_time_holds_the_lease,
    a_lease_this_process_left_behind_is_taken_back_at_once,
    two_pairs_of_one_agent_on_one_remote_do_not_both_hold_the_lease,
    records_and_change_logs_are_replaced_whole_listed_and_removed
);

/// How many agents race for the lease, and how many times.
const AGENTS: usize = 4;
const RACES: usize = 5;

/// Lets every agent ask for the lease at once; returns the one that holds
/// it (there must be exactly one) and what the others were told.
fn race(agents: &[Box<dyn Replica>]) -> ((usize, Box<dyn Lease>), Vec<String>) {
    let start = Barrier::new(agents.len());
    let results: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = agents
            .iter()
            .enumerate()
            .map(|(i, agent)| {
                let start = &start;
                scope.spawn(move || {
                    start.wait();
                    agent.lease(&format!("agent-{i}"), Duration::from_secs(60))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut held = Vec::new();
    let mut busy = Vec::new();
    for (i, result) in results.into_iter().enumerate() {
        match result {
            Ok(Some(lease)) => held.push((i, lease)),
            Err(ReplicaError::Busy(message)) => busy.push(message),
            Ok(None) => panic!("agent-{i}: the backend has no lease"),
            Err(e) => panic!("agent-{i}: {e}"),
        }
    }
    assert_eq!(held.len(), 1, "exactly one holds it; busy: {busy:?}");
    (held.pop().unwrap(), busy)
}

fn one_agent_at_a_time_holds_the_lease(case: &Case) {
    case.marked();
    let agents: Vec<_> = (0..AGENTS).map(|_| case.replica()).collect();
    for _ in 1..RACES {
        let (_, lease) = race(&agents);
        drop(lease);
    }
    let ((holder, mut lease), busy) = race(&agents);
    // Each names an agent (whose record it found, maybe one that lost the
    // race in the end).
    for message in &busy {
        assert!(
            message.contains("agent-") || message.contains("another agent"),
            "{message}"
        );
    }
    lease.renew().unwrap();
    let other = (holder + 1) % AGENTS;
    assert!(matches!(
        agents[other].lease("late", Duration::from_secs(60)),
        Err(ReplicaError::Busy(_))
    ));
    // Released when dropped: the next one takes it.
    drop(lease);
    let next = agents[other]
        .lease("dies", Duration::from_secs(2))
        .unwrap()
        .unwrap();
    // An agent that died holding it (never released) holds it until it
    // expires (the record counts whole seconds: in more than one second,
    // at most two); then another takes it over.
    std::mem::forget(next);
    match agents[holder].lease("again", Duration::from_secs(60)) {
        Err(ReplicaError::Busy(message)) => assert!(message.contains("dies"), "{message}"),
        other => panic!("a live lease is held: {:?}", other.map(|l| l.is_some())),
    }
    std::thread::sleep(Duration::from_millis(2200));
    let taken = agents[holder]
        .lease("again", Duration::from_secs(60))
        .unwrap();
    assert!(taken.is_some(), "an expired lease is taken over");
    // Nothing an agent staged (a record on its way, a probe) is left.
    let left = case.outside().names(".prism-sync");
    assert!(left.contains(&"lease".to_owned()), "{left:?}");
    assert!(
        left.iter().all(|name| !name.starts_with(".prism-tmp")),
        "{left:?}"
    );
}

/// A lease whose release was lost (the connection died before it could
/// be removed) is this very process's, and no longer held by it: the
/// agent that left it takes it back at once instead of being locked out of
/// its own remote until it expires. (Another agent, a process of its own,
/// waits for it to expire: `remote::lease`'s unit tests.)
fn a_lease_this_process_left_behind_is_taken_back_at_once(case: &Case) {
    case.marked();
    let outside = case.outside();
    let left = case
        .replica()
        .lease("laptop", Duration::from_secs(60))
        .unwrap()
        .unwrap();
    let record = outside
        .read(".prism-sync/lease")
        .expect("the lease is there");
    // Released, but the removal never reached the server.
    drop(left);
    outside.put(".prism-sync/lease", &record);
    let again = case
        .replica()
        .lease("laptop", Duration::from_secs(60))
        .unwrap();
    assert!(again.is_some(), "the lease this process left is taken back");
    drop(again);
    assert!(
        !outside.names(".prism-sync").contains(&"lease".to_owned()),
        "released again when dropped"
    );
}

/// Two pairs of one agent syncing to one remote have the same device,
/// process and host: still only one holds the lease, and letting it go
/// never removes the other's.
fn two_pairs_of_one_agent_on_one_remote_do_not_both_hold_the_lease(case: &Case) {
    case.marked();
    let (first, second, third) = (case.replica(), case.replica(), case.replica());
    let held = first
        .lease("laptop", Duration::from_secs(60))
        .unwrap()
        .unwrap();
    match second.lease("laptop", Duration::from_secs(60)) {
        Err(ReplicaError::Busy(message)) => assert!(message.contains("laptop"), "{message}"),
        other => panic!("a live lease is held: {:?}", other.map(|l| l.is_some())),
    }
    drop(held);
    let mut taken = second
        .lease("laptop", Duration::from_secs(60))
        .unwrap()
        .expect("released when dropped: the other pair takes it");
    assert!(matches!(
        first.lease("laptop", Duration::from_secs(60)),
        Err(ReplicaError::Busy(_))
    ));
    assert!(matches!(
        third.lease("laptop", Duration::from_secs(60)),
        Err(ReplicaError::Busy(_))
    ));
    taken.renew().unwrap();
    assert!(
        case.outside()
            .names(".prism-sync")
            .contains(&"lease".to_owned()),
        "the holder's lease stays while it holds it"
    );
}

fn records_and_change_logs_are_replaced_whole_listed_and_removed(case: &Case) {
    let replica = case.marked();
    let metadata = case.outside().metadata();
    crate::records::check_records_round_trip(&*replica, &metadata);
    let name = "journals/0123456789abcdef0123456789abcdef";
    // Another agent reads what one wrote.
    assert_eq!(
        case.replica().read_record(name).unwrap().as_deref(),
        Some("9\n")
    );
    let mut names = replica.list_records("journals").unwrap();
    names.sort();
    assert_eq!(
        names,
        [
            "0123456789abcdef0123456789abcdef",
            "fedcba9876543210fedcba9876543210"
        ]
    );
    assert!(
        case.outside().trashed().is_empty(),
        "records never go to the trash"
    );
    assert!(
        crate::paths(&crate::list(&*replica)).is_empty(),
        "records are not synced files"
    );
    replica.remove_record(name).unwrap();
    replica.remove_record(name).unwrap();
    assert_eq!(replica.read_record(name).unwrap(), None);
    assert_eq!(
        replica.list_records("journals").unwrap(),
        ["fedcba9876543210fedcba9876543210"]
    );
    assert!(replica.list_records("nothing-here").unwrap().is_empty());

    crate::records::check_change_log_round_trip(&*replica, &metadata);
}
