//! The remote lease during a long run: it is renewed in the background, and
//! a run whose lease another agent took over stops writing and fails with
//! a clear error instead of carrying on beside that agent. A run that finds
//! the lease held waits for it without failing, and a run with nothing to
//! write never asks for it.
//!
//! Real journal, real folders on both sides, the engine as the agent builds
//! it; the "other agent" is this test writing its own lease record.

// Tests take locks with `lock().unwrap()`: a lock poisoned in a test is a
// failed test. The agent's own rule (`prism_sync::locks`) does not apply.
#![allow(clippy::disallowed_methods)]

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prism_sync::engine::{EngineSettings, PairEngine, SyncReport, SyncRequest};
use prism_sync::journal::{Journal, SyncStatus};
use prism_sync::model::{Scope, Strategy};
use prism_sync::remote::LocalFolder;
use prism_sync::tracker::ignore::{IgnoreRules, METADATA_DIR};

/// Enough small files that copying them with one transfer at a time takes
/// far longer than the renewal interval of these tests (10 ms), even on a
/// fast disk: each file is still created, flushed and renamed in.
const FILES: usize = 1_500;

struct Setup {
    _dir: tempfile::TempDir,
    local: std::path::PathBuf,
    remote: std::path::PathBuf,
    journal: Arc<Mutex<Journal>>,
    engine: PairEngine,
}

fn setup(lease_ttl: Duration) -> Setup {
    setup_with(FILES, lease_ttl)
}

fn setup_with(files: usize, lease_ttl: Duration) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("local");
    let remote = dir.path().join("remote");
    let trash = dir.path().join("trash");
    for d in [&local, &remote, &trash] {
        fs::create_dir_all(d).unwrap();
    }
    for i in 0..files {
        let folder = local.join(format!("d{:02}", i % 20));
        fs::create_dir_all(&folder).unwrap();
        fs::write(folder.join(format!("f{i:04}.txt")), format!("file {i}\n")).unwrap();
    }
    let journal = Journal::open(&dir.path().join("journal.db")).unwrap();
    let pair = journal
        .upsert_pair(
            "lease",
            &local.display().to_string(),
            &format!("file://{}", remote.display()),
        )
        .unwrap();
    let settings = EngineSettings {
        pair_name: "lease".to_owned(),
        ignore_patterns: Vec::new(),
        device: "this-device".to_owned(),
        parallel_transfers: 1,
        strategy: Strategy::Manual,
        local_root: local.clone(),
        lease_ttl,
        trash_retention: Duration::from_secs(30 * 24 * 3600),
        clock: prism_sync::clock::Clock::system(),
    };
    let journal = Arc::new(Mutex::new(journal));
    let engine = PairEngine::new(
        pair,
        Box::new(LocalFolder::local(local.clone(), trash)),
        Box::new(LocalFolder::remote(remote.clone())),
        journal.clone(),
        settings,
        IgnoreRules::load(&local, &[]).unwrap(),
    );
    Setup {
        _dir: dir,
        local,
        remote,
        journal,
        engine,
    }
}

fn full_sync(engine: &PairEngine) -> SyncReport {
    engine.sync(&SyncRequest {
        scope: Scope::Full,
        trigger: "test".to_owned(),
        sync_id: None,
        confirmed: false,
        poll_only: false,
    })
}

/// Runs `watch` on a thread beside a full sync, until the sync returns.
fn sync_while(engine: &PairEngine, watch: impl FnOnce(&AtomicBool) + Send) -> SyncReport {
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| watch(&done));
        let report = full_sync(engine);
        done.store(true, Ordering::Relaxed);
        report
    })
}

fn lease_file(remote: &Path) -> std::path::PathBuf {
    remote.join(METADATA_DIR).join("lease")
}

#[test]
fn a_long_run_keeps_renewing_its_lease() {
    let s = setup(Duration::from_millis(30));
    let lease = lease_file(&s.remote);
    // A renewal writes a new record beside the lease and renames it over:
    // every renewal shows as a new inode under the lease's name.
    let inodes = Mutex::new(Vec::<u64>::new());
    let report = sync_while(&s.engine, |done| {
        while !done.load(Ordering::Relaxed) {
            if let Ok(meta) = fs::metadata(&lease)
                && fs::read_to_string(&lease).is_ok_and(|r| r.contains("this-device"))
            {
                let mut seen = inodes.lock().unwrap();
                if seen.last() != Some(&meta.ino()) {
                    seen.push(meta.ino());
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    });
    assert_eq!(report.status, SyncStatus::Completed, "{:?}", report.error);
    assert_eq!(report.counts.uploaded, FILES as u64);
    let seen = inodes.into_inner().unwrap();
    assert!(
        seen.len() >= 2,
        "the lease was never renewed during the run: {seen:?}"
    );
    assert!(!lease.exists(), "the lease is released when the run ends");
}

#[test]
fn a_run_whose_lease_was_taken_over_stops_and_says_why() {
    let s = setup(Duration::from_millis(30));
    let lease = lease_file(&s.remote);
    // Another agent's record, valid for an hour: what a renewal finds once
    // that agent decided this one's lease was stale.
    let expires = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let theirs = format!("{expires} other-device 1 elsewhere\n");
    let started = Instant::now();
    let report = sync_while(&s.engine, |done| {
        while !done.load(Ordering::Relaxed) {
            if fs::read_to_string(&lease).is_ok_and(|r| r.contains("this-device")) {
                fs::write(&lease, &theirs).unwrap();
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    });
    assert_eq!(
        report.status,
        SyncStatus::Failed,
        "the run went on for {:?} without noticing",
        started.elapsed()
    );
    let error = report.error.unwrap_or_default();
    assert!(error.contains("taken over"), "{error}");
    assert!(
        report.counts.uploaded < FILES as u64,
        "the run stopped writing once the lease was gone"
    );
    assert_eq!(
        fs::read_to_string(&lease).unwrap(),
        theirs,
        "the other agent's lease is left alone"
    );
    // What was copied before the stop is whole and recorded; the rest is
    // still only local, waiting for the next run.
    for entry in walk(&s.remote) {
        let rel = entry.strip_prefix(&s.remote).unwrap();
        if rel.starts_with(METADATA_DIR) || entry.is_dir() {
            continue;
        }
        assert_eq!(
            fs::read(&entry).unwrap(),
            fs::read(s.local.join(rel)).unwrap(),
            "{}",
            rel.display()
        );
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        }
        out.push(path);
    }
    out
}

/// Another agent's lease, valid for an hour, as that agent writes it.
fn hold_lease_as_another_agent(remote: &Path) -> String {
    let expires = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let theirs = format!("{expires} other-device 1 elsewhere\n");
    let lease = lease_file(remote);
    fs::create_dir_all(lease.parent().unwrap()).unwrap();
    fs::write(lease, &theirs).unwrap();
    theirs
}

fn failed_rows(s: &Setup) -> usize {
    s.journal
        .lock()
        .unwrap()
        .recent_syncs(None, 100)
        .unwrap()
        .iter()
        .filter(|run| run.status == SyncStatus::Failed)
        .count()
}

#[test]
fn a_run_with_nothing_to_write_does_not_need_the_lease() {
    let s = setup_with(3, Duration::from_secs(60));
    assert_eq!(full_sync(&s.engine).status, SyncStatus::Completed);
    let theirs = hold_lease_as_another_agent(&s.remote);
    let started = Instant::now();
    let report = full_sync(&s.engine);
    assert_eq!(report.status, SyncStatus::Completed, "{:?}", report.error);
    assert!(report.waiting.is_none(), "{:?}", report.waiting);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "it did not wait: {:?}",
        started.elapsed()
    );
    assert_eq!(fs::read_to_string(lease_file(&s.remote)).unwrap(), theirs);
}

#[test]
fn a_run_that_finds_the_lease_held_waits_for_it_and_then_writes() {
    let s = setup_with(3, Duration::from_secs(60));
    hold_lease_as_another_agent(&s.remote);
    let lease = lease_file(&s.remote);
    let report = sync_while(&s.engine, |_| {
        std::thread::sleep(Duration::from_millis(500));
        assert!(
            s.engine
                .waiting_for_lease()
                .is_some_and(|holder| holder.contains("other-device")),
            "while it waits, the engine says for whom"
        );
        fs::remove_file(&lease).unwrap();
    });
    assert_eq!(report.status, SyncStatus::Completed, "{:?}", report.error);
    assert!(report.waiting.is_none());
    assert_eq!(report.counts.uploaded, 3);
    assert!(s.engine.waiting_for_lease().is_none());
    assert_eq!(failed_rows(&s), 0);
}

#[test]
fn a_run_that_waits_in_vain_is_not_a_failure() {
    let s = setup_with(3, Duration::from_secs(60));
    let theirs = hold_lease_as_another_agent(&s.remote);
    let report = full_sync(&s.engine);
    let holder = report.waiting.expect("the run says it waited");
    assert!(holder.contains("other-device"), "{holder}");
    assert!(report.error.is_none(), "{:?}", report.error);
    assert!(
        report.sync_id.is_empty(),
        "no row for a run that did nothing"
    );
    assert_eq!(report.counts.uploaded, 0);
    assert_eq!(failed_rows(&s), 0);
    assert_eq!(fs::read_to_string(lease_file(&s.remote)).unwrap(), theirs);
    assert!(
        fs::read_dir(&s.remote).unwrap().all(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with(".prism")),
        "nothing was written"
    );
}

#[test]
fn a_confirmation_does_not_carry_over_a_wait_for_the_lease() {
    // The user confirms while another agent holds the lease; while this run
    // waits, the local side empties (an unmounted disk leaves an empty
    // mount point). The plan made after the wait is checked again: the
    // emptied side stops the run instead of being confirmed by accident.
    let s = setup_with(6, Duration::from_secs(60));
    assert_eq!(full_sync(&s.engine).counts.uploaded, 6);
    let files = walk(&s.local)
        .into_iter()
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "txt"))
        .collect::<Vec<_>>();
    assert_eq!(files.len(), 6);
    fs::remove_file(&files[0]).unwrap();
    hold_lease_as_another_agent(&s.remote);
    let lease = lease_file(&s.remote);
    let report = std::thread::scope(|scope| {
        scope.spawn(|| {
            std::thread::sleep(Duration::from_millis(500));
            for file in &files[1..] {
                fs::remove_file(file).unwrap();
            }
            fs::remove_file(&lease).unwrap();
        });
        s.engine.sync(&SyncRequest {
            scope: Scope::Full,
            trigger: "test".to_owned(),
            sync_id: None,
            confirmed: true,
            poll_only: false,
        })
    });
    assert!(report.guard.is_some(), "{report:?}");
    let on_remote = walk(&s.remote)
        .into_iter()
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "txt"))
        .filter(|p| !p.to_string_lossy().contains(METADATA_DIR))
        .count();
    assert_eq!(on_remote, 6, "nothing was deleted on the remote");
}
