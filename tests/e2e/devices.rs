//! Two devices sharing one remote: edits on either reach the other, and
//! simultaneous edits of one file keep both versions on both devices.

use crate::harness::*;

#[test]
fn two_devices_on_one_remote_converge_and_keep_both_versions_of_a_clash() {
    let sandbox = Sandbox::new();
    let remote = sandbox.remote("remote");
    let a = sandbox.device_with("devA", &remote, Settings::fast_poll());
    let b = sandbox.device_with("devB", &remote, Settings::fast_poll());
    let _agent_a = a.start();
    let _agent_b = b.start();

    write(&a.local, "plan.txt", "from A\n");
    wait_for_content(&b.local.join("plan.txt"), "from A\n");
    write(&b.local, "plan.txt", "edited on B\n");
    wait_for_content(&a.local.join("plan.txt"), "edited on B\n");
    write(&b.local, "b-only/notes.md", "B's notes\n");
    wait_for_content(&a.local.join("b-only/notes.md"), "B's notes\n");
    wait_converged(&[&a.local, &remote, &b.local], &a.log);

    // Both devices edit the same file at the same moment.
    write(&a.local, "plan.txt", "A's version\n");
    write(&b.local, "plan.txt", "B's version\n");
    let tree = wait_until(PATIENCE, "both versions are on both devices", || {
        let trees = [tree(&a.local), tree(&remote), tree(&b.local)];
        let mut seen = String::new();
        for (name, t) in ["A", "remote", "B"].iter().zip(&trees) {
            seen.push_str(&format!("{name}:\n{}\n", show(t)));
        }
        let same = trees.windows(2).all(|w| w[0] == w[1]);
        let copies = conflict_copies(&a.local, "plan", ".txt");
        if !same || copies.len() != 1 {
            return Err(seen);
        }
        let mut versions = vec![read(&a.local, "plan.txt"), read(&a.local, &copies[0])];
        versions.sort();
        if versions != ["A's version\n", "B's version\n"] {
            return Err(format!("versions {versions:?}\n{seen}"));
        }
        Ok(trees[0].clone())
    });
    assert!(tree.contains_key("b-only/notes.md"), "{}", show(&tree));
    let conflicts_a = a.ctl_json(&["conflicts"])["conflicts"]
        .as_array()
        .unwrap()
        .len();
    let conflicts_b = b.ctl_json(&["conflicts"])["conflicts"]
        .as_array()
        .unwrap()
        .len();
    assert!(
        conflicts_a + conflicts_b >= 1,
        "the device that found the clash records it as a conflict"
    );
}

/// Two agents on one remote, polling it every second, both writing all the
/// time: each keeps finding the other's lease. Waiting for it is not a
/// failure: no run may be recorded or shown as failed, and both converge.
#[test]
fn two_busy_agents_polling_one_remote_wait_for_each_other_without_failing() {
    let sandbox = Sandbox::new();
    let remote = sandbox.remote("remote");
    let a = sandbox.device_with("devA", &remote, Settings::fast_poll());
    let b = sandbox.device_with("devB", &remote, Settings::fast_poll());
    let _agent_a = a.start();
    let _agent_b = b.start();

    let churn = std::time::Duration::from_secs(20);
    let started = std::time::Instant::now();
    let mut shown_errors = Vec::new();
    let mut round = 0u32;
    while started.elapsed() < churn {
        for (device, own) in [(&a, "from-a"), (&b, "from-b")] {
            write(
                &device.local,
                &format!("{own}/f{}.txt", round % 12),
                &format!("{own} round {round}\n"),
            );
        }
        if round.is_multiple_of(4) {
            for device in [&a, &b] {
                let status = device.pair_status();
                if status["state"] == "error" {
                    shown_errors.push(format!("{}: {}", device.name, status["state_detail"]));
                }
            }
        }
        round += 1;
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    wait_converged(&[&a.local, &remote, &b.local], &a.log);

    let failed = |device: &Device| -> u64 {
        device
            .sql("SELECT count(*) FROM syncs WHERE status = 'failed';")
            .trim()
            .parse()
            .unwrap()
    };
    let errors = |device: &Device| {
        device.sql("SELECT trigger, error FROM syncs WHERE status = 'failed' LIMIT 5;")
    };
    let (failed_a, failed_b) = (failed(&a), failed(&b));
    eprintln!("failed syncs after {round} rounds of churn: devA {failed_a}, devB {failed_b}");
    assert_eq!(
        (failed_a, failed_b),
        (0, 0),
        "waiting for the other agent's lease is not a failed sync\ndevA:\n{}\ndevB:\n{}",
        errors(&a),
        errors(&b)
    );
    assert!(
        shown_errors.is_empty(),
        "status showed errors: {shown_errors:?}"
    );
    for device in [&a, &b] {
        let tree = tree(&device.local);
        assert_eq!(
            tree.keys().filter(|k| k.ends_with(".txt")).count(),
            24,
            "{}",
            show(&tree)
        );
    }
}

/// `--once` against a remote whose lease another agent keeps: it waits a
/// while, then says it did not sync and why, and records no failed sync.
#[test]
fn once_says_it_waited_for_another_device_and_records_no_failure() {
    let sandbox = Sandbox::new();
    let remote = sandbox.remote("remote");
    let device = sandbox.device("laptop", &remote);
    write(&device.local, "a.txt", "a\n");
    let expires = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    write(
        &remote,
        ".prism-sync/lease",
        &format!("{expires} desktop 1 elsewhere\n"),
    );
    let output = device.once_expecting(1);
    let said = stderr(&output);
    assert!(
        said.contains("not synced, waiting for another device: desktop is writing"),
        "{said}"
    );
    assert!(!remote.join("a.txt").exists());
    assert_eq!(
        device
            .sql("SELECT count(*) FROM syncs WHERE status = 'failed';")
            .trim(),
        "0"
    );
}
