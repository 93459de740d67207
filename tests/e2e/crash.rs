//! A crash in the middle of a large sync: `kill -9` while files are being
//! uploaded, then a restart. Nothing may be lost or half-written under a
//! real name, the journal must be intact, the run must read as
//! `interrupted`, and the pair must converge.

use std::time::Duration;

use crate::harness::*;

/// Enough files that the upload takes about a second on this machine, so
/// the test can catch it half-way.
const SMALL_FILES: usize = 2000;
const SMALL_SIZE: usize = 32 * 1024;
const BIG_FILES: usize = 3;
const BIG_SIZE: usize = 8 * 1024 * 1024;

fn make_files(root: &std::path::Path) {
    let mut rng = fastrand::Rng::with_seed(7);
    let mut write_random = |rel: String, size: usize| {
        let mut bytes = vec![0u8; size];
        rng.fill(&mut bytes);
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    };
    for i in 0..SMALL_FILES {
        write_random(format!("bulk/d{:02}/f{i:04}.bin", i % 20), SMALL_SIZE);
    }
    for i in 0..BIG_FILES {
        write_random(format!("big/video{i}.bin"), BIG_SIZE);
    }
}

fn file_count(tree: &Tree) -> usize {
    tree.values().filter(|v| *v != "dir").count()
}

fn is_temp(path: &str) -> bool {
    path.rsplit('/')
        .next()
        .unwrap_or(path)
        .starts_with(".prism-tmp-")
}

#[test]
fn kill_9_during_a_large_sync_loses_nothing_and_the_restart_converges() {
    let sandbox = Sandbox::new();
    let remote = sandbox.remote("remote");
    let device = sandbox.device("laptop", &remote);
    make_files(&device.local);
    let expected = tree(&device.local);
    let total = file_count(&expected);

    let agent = device.start();
    let seen = wait_until(Duration::from_secs(30), "the upload is under way", || {
        let now = tree(&remote);
        let done = now
            .keys()
            .filter(|p| !is_temp(p))
            .filter(|p| now[*p] != "dir")
            .count();
        if done >= 20 && done < total {
            return Ok(done);
        }
        if done == total {
            panic!("the sync finished before the test could interrupt it; make it larger");
        }
        Err(format!("{done} of {total} files on the remote"))
    });
    agent.kill9();

    // Whatever reached the remote under a real name is complete.
    let partial = tree(&remote);
    for (path, what) in &partial {
        if is_temp(path) || what == "dir" {
            continue;
        }
        assert_eq!(
            expected.get(path),
            Some(what),
            "{path} on the remote is not what was written locally"
        );
    }
    assert!(file_count(&partial) >= seen && file_count(&partial) <= total + BIG_FILES + 8);
    assert_eq!(device.sql("PRAGMA integrity_check;").trim(), "ok");
    let killed = device.sql("SELECT id FROM syncs WHERE status = 'sync_in_progress';");
    let killed: Vec<&str> = killed.lines().collect();
    assert_eq!(killed.len(), 1, "one run was in progress: {killed:?}");

    let _agent = device.start();
    // The staged files of the writes the crash cut short stay on the remote
    // as hidden `.prism-tmp-*` files (never under a real name) until a
    // listing sweeps them once they are an hour old, so they are left out
    // of the comparison.
    let real_files = |root: &std::path::Path| {
        let mut t = tree(root);
        t.retain(|path, _| !is_temp(path));
        t
    };
    wait_until(PATIENCE, "both sides hold every file, intact", || {
        let (local, remote) = (real_files(&device.local), real_files(&remote));
        if local == expected && remote == expected {
            return Ok(());
        }
        let missing = expected
            .keys()
            .filter(|p| remote.get(*p) != expected.get(*p))
            .count();
        Err(format!(
            "{missing} files missing or different on the remote; local equal: {}\n{}",
            local == expected,
            device.log_text()
        ))
    });
    assert!(
        !tree(&device.local).keys().any(|p| is_temp(p)),
        "no temporary file is left locally"
    );
    let status = device.ctl_json(&["sync", "status", killed[0]]);
    assert_eq!(status["status"], "interrupted", "{status:#}");
    assert_eq!(device.sql("PRAGMA integrity_check;").trim(), "ok");
}

/// A sync that panics while it holds the journal lock (a bug, injected with
/// the `PRISM_SYNC_TEST_PANIC_RECORDING` test hook, inside the journal's
/// transaction) fails that one run, says so, and nothing else: the other
/// pair keeps syncing, the control socket keeps answering, and the pair
/// that crashed keeps being scheduled and converges.
#[test]
fn a_sync_that_panics_holding_the_journal_fails_alone() {
    let sandbox = Sandbox::new();
    let remote_p = sandbox.remote("remote-p");
    let remote_q = sandbox.remote("remote-q");
    let device = sandbox.device_with("laptop", &remote_p, Settings::fast_poll());
    let local_q = sandbox.path("laptop").join("local-q");
    std::fs::create_dir_all(&local_q).unwrap();
    let mut config = std::fs::read_to_string(&device.config).unwrap();
    config.push_str(&format!(
        "[[pair]]\nname = \"q\"\nlocal = \"{}\"\nremote = \"file://{}\"\n",
        local_q.display(),
        remote_q.display()
    ));
    std::fs::write(&device.config, config).unwrap();
    let _agent = device.start_with_env(&[("PRISM_SYNC_TEST_PANIC_RECORDING", "boom.txt")]);
    let pair_status = |name: &str| {
        device.ctl_json(&["status"])["pairs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .cloned()
            .unwrap()
    };

    write(&device.local, "boom.txt", "recorded by a crashing sync\n");
    // The status shows it until the next poll; the journal keeps it.
    let rows = wait_until(PATIENCE, "the crashed run is recorded", || {
        let rows = device.sql(
            "SELECT s.status, s.error FROM syncs s JOIN pairs p ON p.id = s.pair_id \
             WHERE p.name = 'p' AND s.error LIKE '%internal error%';",
        );
        if rows.is_empty() {
            Err(device.log_text())
        } else {
            Ok(rows)
        }
    });
    assert!(
        rows.starts_with("failed|") && rows.contains("injected panic while recording boom.txt"),
        "the crashed run is recorded as failed, with why: {rows:?}"
    );

    // The journal lock the panic held is usable: the other pair syncs.
    write(&local_q, "after.txt", "pair q carries on\n");
    wait_for_content(&remote_q.join("after.txt"), "pair q carries on\n");
    // And the pair that crashed keeps being scheduled.
    write(&device.local, "later.txt", "pair p carries on\n");
    wait_for_content(&remote_p.join("later.txt"), "pair p carries on\n");
    let converged = device.wait_converged();
    assert!(converged.contains_key("boom.txt"), "{}", show(&converged));
    wait_until(PATIENCE, "both pairs are idle", || {
        let (p, q) = (pair_status(PAIR), pair_status("q"));
        if p["state"] == "idle" && q["state"] == "idle" {
            Ok(())
        } else {
            Err(format!("{p:#}\n{q:#}"))
        }
    });
    // The crashed batch was rolled back; the next full sync finds both
    // sides agreeing and records the file.
    wait_until(PATIENCE, "a later sync records boom.txt", || {
        let recorded = device.sql(
            "SELECT count(*) FROM base b JOIN pairs p ON p.id = b.pair_id \
             WHERE p.name = 'p' AND b.path = 'boom.txt';",
        );
        if recorded.trim() == "1" {
            Ok(())
        } else {
            Err(device.log_text())
        }
    });
}
