//! Changes: a step that finds something other than what it expects
//! changes nothing (`ReplicaError::Changed`); every version a step
//! replaces or removes is kept in the trash; a move never replaces.

use std::time::Duration;

use prism_sync::fsops::Expect;
use prism_sync::remote::ReplicaError;

use crate::{Case, create, expect_of, list, paths, read, rel, write};

conformance!(
    a_step_on_something_changed_meanwhile_is_refused_and_loses_nothing,
    every_replaced_or_removed_version_is_kept_in_the_trash,
    a_trashed_file_where_a_later_version_needs_a_folder_is_no_obstacle,
    files_and_folders_move_without_ever_replacing,
);

fn assert_changed(result: Result<impl std::fmt::Debug, ReplicaError>, what: &str) {
    match result {
        Err(ReplicaError::Changed { .. }) => {}
        other => panic!("{what}: expected Changed, got {other:?}"),
    }
}

fn a_step_on_something_changed_meanwhile_is_refused_and_loses_nothing(case: &Case) {
    let replica = case.marked();
    let outside = case.outside();
    let mine = create(&*replica, "f.txt", "mine, version 1");
    let listed = list(&*replica).tree[&rel("f.txt")].clone();

    // Someone else writes another version of the same size.
    outside.put("f.txt", "theirs, version");
    assert_changed(
        write(&*replica, "f.txt", "mine, version 2", &expect_of(&mine)),
        "a replacement",
    );
    assert_changed(
        write(&*replica, "f.txt", "mine, version 2", &expect_of(&listed)),
        "a replacement planned from a listing",
    );
    assert_changed(
        replica.remove(&rel("f.txt"), &expect_of(&listed)),
        "a removal",
    );
    assert_changed(
        replica.rename(&rel("f.txt"), &rel("g.txt"), &expect_of(&listed)),
        "a move",
    );
    assert_eq!(outside.read("f.txt").as_deref(), Some("theirs, version"));
    assert_eq!(outside.read("g.txt"), None);

    // Someone else made what was planned as new.
    outside.put("new.txt", "theirs");
    assert_changed(
        write(&*replica, "new.txt", "mine", &Expect::Absent),
        "a creation",
    );
    assert_eq!(outside.read("new.txt").as_deref(), Some("theirs"));
    // ... or removed what was planned as there.
    let gone = create(&*replica, "gone.txt", "soon gone");
    outside.remove("gone.txt");
    assert_changed(
        write(&*replica, "gone.txt", "mine again", &expect_of(&gone)),
        "a replacement of a removed file",
    );
    assert_eq!(outside.read("gone.txt"), None);
    assert!(
        outside.trashed().is_empty(),
        "nothing refused went to the trash: {:?}",
        outside.trashed()
    );
}

fn every_replaced_or_removed_version_is_kept_in_the_trash(case: &Case) {
    let replica = case.marked();
    let outside = case.outside();
    // Replaced within one minute, several times over.
    let mut seen = create(&*replica, "f.txt", "version 1");
    for version in ["version 2", "version 3"] {
        seen = write(&*replica, "f.txt", version, &expect_of(&seen)).unwrap();
    }
    replica.remove(&rel("f.txt"), &expect_of(&seen)).unwrap();
    assert_eq!(outside.read("f.txt"), None);
    // A folder goes once what is in it went, each checked: one that
    // still holds something holds what the plan did not see, and stays.
    replica.mkdir(&rel("d"), None).unwrap();
    replica.mkdir(&rel("d/e"), None).unwrap();
    let deep = create(&*replica, "d/e/deep.txt", "deep in a folder");
    assert_changed(
        replica.remove(&rel("d"), &Expect::Dir),
        "a folder not empty",
    );
    assert_eq!(
        outside.read("d/e/deep.txt").as_deref(),
        Some("deep in a folder")
    );
    replica
        .remove(&rel("d/e/deep.txt"), &expect_of(&deep))
        .unwrap();
    replica.remove(&rel("d/e"), &Expect::Dir).unwrap();
    replica.remove(&rel("d"), &Expect::Dir).unwrap();
    assert_eq!(outside.names(""), [".prism-sync"]);
    assert!(paths(&list(&*replica)).is_empty());

    assert_eq!(
        outside.trashed(),
        ["deep in a folder", "version 1", "version 2", "version 3"]
    );
}

/// File `a` trashed, then `a/b` in the same minute: where the trash batch
/// holds the file `a`, `a/b` cannot go below it, and goes to a batch of
/// its own (as a taken name does) instead of failing until the minute
/// changes. Both versions are read back by the names the removals gave.
fn a_trashed_file_where_a_later_version_needs_a_folder_is_no_obstacle(case: &Case) {
    let replica = case.marked();
    let file = create(&*replica, "a", "the file a");
    let first = replica
        .remove_naming_trash(&rel("a"), &expect_of(&file))
        .unwrap();
    replica.mkdir(&rel("a"), None).unwrap();
    let inside = create(&*replica, "a/b", "the file a/b");
    let second = replica
        .remove_naming_trash(&rel("a/b"), &expect_of(&inside))
        .unwrap();
    for (name, content) in [(first, "the file a"), (second, "the file a/b")] {
        let name = name.expect("a file's removal names its version in the trash");
        let mut kept = String::new();
        std::io::Read::read_to_string(&mut replica.open_trashed(&name).unwrap(), &mut kept)
            .unwrap();
        assert_eq!(kept, content, "{name}");
    }
    assert_eq!(case.outside().trashed(), ["the file a", "the file a/b"]);
}

fn files_and_folders_move_without_ever_replacing(case: &Case) {
    let replica = case.marked();
    let outside = case.outside();
    let a = create(&*replica, "a.txt", "a");
    let b = create(&*replica, "b.txt", "b");
    replica.mkdir(&rel("d"), None).unwrap();
    create(&*replica, "d/inner.txt", "inner");
    replica.mkdir(&rel("other"), None).unwrap();

    // A file to a free name, also into another folder, to an odd name.
    replica
        .rename(&rel("a.txt"), &rel("c.txt"), &expect_of(&a))
        .unwrap();
    replica
        .rename(&rel("c.txt"), &rel("other/é #1.txt"), &expect_of(&a))
        .unwrap();
    assert_eq!(read(&*replica, "other/é #1.txt"), "a");
    // Onto a file that is there: refused, both kept.
    assert_changed(
        replica.rename(&rel("b.txt"), &rel("other/é #1.txt"), &expect_of(&b)),
        "a move onto a file",
    );
    assert_eq!(outside.read("b.txt").as_deref(), Some("b"));
    assert_eq!(outside.read("other/é #1.txt").as_deref(), Some("a"));
    // A folder with its content, in one step.
    replica
        .rename(&rel("d"), &rel("moved"), &Expect::Dir)
        .unwrap();
    assert_eq!(outside.read("moved/inner.txt").as_deref(), Some("inner"));
    // Onto a folder that is there: refused, both kept.
    replica.mkdir(&rel("d2"), None).unwrap();
    create(&*replica, "d2/x.txt", "x");
    assert_changed(
        replica.rename(&rel("d2"), &rel("moved"), &Expect::Dir),
        "a folder move onto a folder",
    );
    assert_changed(
        replica.rename(&rel("b.txt"), &rel("moved"), &expect_of(&b)),
        "a file move onto a folder",
    );
    // What is not there does not move.
    assert_changed(
        replica.rename(&rel("nothing.txt"), &rel("n.txt"), &expect_of(&b)),
        "a move of nothing",
    );

    let listing = list(&*replica);
    assert_eq!(
        paths(&listing),
        [
            "b.txt",
            "d2",
            "d2/x.txt",
            "moved",
            "moved/inner.txt",
            "other",
            "other/é #1.txt"
        ]
    );
    assert!(outside.trashed().is_empty(), "a move trashes nothing");
}

conformance!(of_agents_creating_one_file_at_once_one_wins_and_the_rest_are_refused);

/// Agents that planned the same new file at once: one succeeds, every
/// other one is refused as Changed (its version is still where it came
/// from), and nothing staged is left. (Replacing one file at once is
/// left to the lease: a server without conditional requests cannot refuse
/// a replacement that slips between another agent's check and its move.)
fn of_agents_creating_one_file_at_once_one_wins_and_the_rest_are_refused(case: &Case) {
    const AGENTS: usize = 4;
    const RACES: usize = 5;
    let outside = case.outside();
    let agents: Vec<_> = (0..AGENTS).map(|_| case.marked()).collect();
    for race in 0..RACES {
        let name = format!("f{race}.txt");
        let start = std::sync::Barrier::new(AGENTS);
        let results: Vec<_> = std::thread::scope(|scope| {
            let handles: Vec<_> = agents
                .iter()
                .enumerate()
                .map(|(i, agent)| {
                    let (start, name) = (&start, &name);
                    scope.spawn(move || {
                        let text = format!("by agent {i}");
                        let hash = prism_sync::model::ContentHash::of_bytes(text.as_bytes());
                        let staged = agent
                            .stage(
                                &rel(name),
                                &mut text.as_bytes(),
                                &hash,
                                crate::MTIME_NS,
                                None,
                            )
                            .unwrap();
                        start.wait();
                        let committed = agent.commit_staged(&staged, &Expect::Absent);
                        if committed.is_err() {
                            agent.discard(staged);
                        }
                        committed
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut won = Vec::new();
        for (i, result) in results.into_iter().enumerate() {
            match result {
                Ok(_) => won.push(i),
                Err(ReplicaError::Changed { .. }) => {}
                Err(e) => panic!("agent {i}: {e}"),
            }
        }
        let there = outside.read(&name).unwrap();
        if case.backend.creates_atomically() {
            assert_eq!(won.len(), 1, "{name}: exactly one wins: {won:?}");
            assert_eq!(there, format!("by agent {}", won[0]));
        } else {
            // At least one wins, the others are refused as changed (never
            // a failure), and the version there is a winner's.
            assert!(
                won.iter().any(|i| there == format!("by agent {i}")),
                "{name}: {there} is not a winner's: {won:?}"
            );
        }
    }
    let mut names = outside.names("");
    names.retain(|n| n != ".prism-sync");
    assert_eq!(names.len(), RACES, "nothing staged left: {names:?}");
    assert!(outside.trashed().is_empty(), "nothing was replaced");
}

conformance!(of_agents_replacing_one_file_at_once_none_fails_and_no_version_is_lost);

/// Agents that planned a new version of the file they all listed, at once
/// (as agents that do not take the lease could): each either wins or is
/// refused as Changed, never a failure of the path; and every version that
/// was there, the listed one and each winner's, is the file or in the
/// trash. (How many win depends on the server: without conditional
/// requests, a replacement that slips between another's check and its
/// move is not refused, but what it replaced is kept; and one refused
/// after its move may have been replaced in turn, kept too.)
fn of_agents_replacing_one_file_at_once_none_fails_and_no_version_is_lost(case: &Case) {
    const AGENTS: usize = 4;
    let outside = case.outside();
    let agents: Vec<_> = (0..AGENTS).map(|_| case.marked()).collect();
    create(&*agents[0], "f.txt", "the listed version");
    // A version token may be weak for a moment after a write (Apache's);
    // a settled one is what a conditional request can name.
    std::thread::sleep(Duration::from_millis(1100));
    let listed = list(&*agents[0]).tree[&rel("f.txt")].clone();
    let start = std::sync::Barrier::new(AGENTS);
    let results: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = agents
            .iter()
            .enumerate()
            .map(|(i, agent)| {
                let (start, listed) = (&start, &listed);
                scope.spawn(move || {
                    let text = format!("by agent {i}");
                    let hash = prism_sync::model::ContentHash::of_bytes(text.as_bytes());
                    let staged = agent
                        .stage(
                            &rel("f.txt"),
                            &mut text.as_bytes(),
                            &hash,
                            crate::MTIME_NS,
                            None,
                        )
                        .unwrap();
                    start.wait();
                    let committed = agent.commit_staged(&staged, &expect_of(listed));
                    if committed.is_err() {
                        agent.discard(staged);
                    }
                    committed
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut versions = vec!["the listed version".to_owned()];
    for (i, result) in results.into_iter().enumerate() {
        match result {
            Ok(_) => versions.push(format!("by agent {i}")),
            Err(ReplicaError::Changed { .. }) => {}
            Err(e) => panic!("agent {i}: {e}"),
        }
    }
    // The file itself may be gone: racers that each moved the one before
    // to the trash, each then finding its own move refused.
    let mut kept = outside.trashed();
    kept.extend(outside.read("f.txt"));
    for version in &versions {
        assert!(kept.contains(version), "{version} is lost: {kept:?}");
    }
    let left = outside.names("");
    assert!(
        left.iter().all(|name| !name.starts_with(".prism-tmp")),
        "nothing staged left: {left:?}"
    );
}
