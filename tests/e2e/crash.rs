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
