//! An idle agent does no work: a `file://` remote is watched like the
//! local folder, so nothing is listed between the safety scans, and a file
//! written straight into the remote folder still arrives at once.

use std::time::Duration;

use crate::harness::*;

/// How many times the agent's log shows so far that a run listed both
/// sides (a debug line of every round).
fn runs(device: &Device) -> usize {
    std::fs::read_to_string(&device.log)
        .unwrap_or_default()
        .lines()
        .filter(|line| line.contains("listed both sides"))
        .count()
}

/// What the pair's status says of its watches.
fn watcher_status(device: &Device) -> String {
    device.pair_status()["watcher"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

/// Waits until the pair's status says its watches see everything.
fn wait_for_watcher_ok(device: &Device) {
    wait_until(PATIENCE, "status says the watches see everything", || {
        let shown = watcher_status(device);
        (shown == "ok")
            .then_some(())
            .ok_or(format!("{shown}\n{}", device.log_text()))
    });
}

/// Waits until nothing was listed for a while, and returns the count.
fn quiet_runs(device: &Device) -> usize {
    let mut last = runs(device);
    let mut quiet_since = std::time::Instant::now();
    wait_until(PATIENCE, "the agent stops syncing", || {
        let now = runs(device);
        if now != last {
            last = now;
            quiet_since = std::time::Instant::now();
        }
        if quiet_since.elapsed() >= Duration::from_millis(1_500) {
            Ok(now)
        } else {
            Err(device.log_text())
        }
    })
}

#[test]
fn an_idle_agent_does_not_list_a_watched_remote_and_still_sees_its_changes() {
    let sandbox = Sandbox::new();
    let remote = sandbox.remote("remote");
    // A poll every second: on a remote that is polled, the idle windows
    // below would hold three or four listings.
    let device = sandbox.device_with("laptop", &remote, Settings::fast_poll());
    write(&device.local, "a.txt", "a\n");
    let _agent = device.start_with_env(&[("RUST_LOG", "prism_sync=debug")]);
    wait_for_content(&remote.join("a.txt"), "a\n");

    // Our own upload raises events on the remote: at most a listing of
    // what we wrote follows, then nothing.
    let settled = quiet_runs(&device);
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        runs(&device),
        settled,
        "an idle agent listed its watched remote\n{}",
        device.log_text()
    );

    // Another program writes into the remote folder: the watch brings it
    // down within a few seconds, without a poll.
    write(&remote, "from-nas/report.txt", "written on the NAS\n");
    wait_until(
        Duration::from_secs(5),
        "the remote's new file arrives",
        || {
            (std::fs::read_to_string(device.local.join("from-nas/report.txt")).ok()
                == Some("written on the NAS\n".to_owned()))
            .then_some(())
            .ok_or_else(|| device.log_text())
        },
    );
    let settled = quiet_runs(&device);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        runs(&device),
        settled,
        "the download kept the agent busy\n{}",
        device.log_text()
    );
    device.wait_converged();
}

#[test]
fn a_remote_folder_that_went_away_is_polled_until_it_is_back_and_then_watched_again() {
    let sandbox = Sandbox::new();
    let remote = sandbox.remote("remote");
    let device = sandbox.device_with("laptop", &remote, Settings::fast_poll());
    write(&device.local, "a.txt", "a\n");
    let _agent = device.start_with_env(&[("RUST_LOG", "prism_sync=debug")]);
    wait_for_content(&remote.join("a.txt"), "a\n");
    let log = || std::fs::read_to_string(&device.log).unwrap_or_default();
    let watches = || log().matches("watching the remote folder").count();
    assert_eq!(watches(), 1, "{}", device.log_text());
    // The first sync has ended (its records written into the remote
    // folder), so nothing of it lands in the folder's place once it moves.
    quiet_runs(&device);

    // A disk unmounted, a folder moved aside: the watch ends with it, and
    // polls look for the folder instead (finding it missing, they hold
    // every deletion).
    let away = sandbox.path("away");
    std::fs::rename(&remote, &away).unwrap();
    wait_until(PATIENCE, "the agent notices the remote went away", || {
        log()
            .contains("the remote folder went away")
            .then_some(())
            .ok_or_else(|| device.log_text())
    });
    std::fs::rename(&away, &remote).unwrap();
    wait_until(PATIENCE, "the remote folder is watched again", || {
        (watches() == 2)
            .then_some(())
            .ok_or_else(|| device.log_text())
    });

    let settled = quiet_runs(&device);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        runs(&device),
        settled,
        "the remote is polled although it is watched again\n{}",
        device.log_text()
    );
    write(&remote, "b.txt", "after the return\n");
    wait_until(
        Duration::from_secs(5),
        "the remote's new file arrives",
        || {
            (std::fs::read_to_string(device.local.join("b.txt")).ok()
                == Some("after the return\n".to_owned()))
            .then_some(())
            .ok_or_else(|| device.log_text())
        },
    );
    assert_eq!(read(&device.local, "a.txt"), "a\n");
}

#[test]
fn a_folder_the_ignore_rules_let_in_is_watched_on_both_sides_from_then_on() {
    let sandbox = Sandbox::new();
    let remote = sandbox.remote("remote");
    // A poll every second: a pair whose watches do not follow the new rules
    // lists both sides at each one.
    let device = sandbox.device_with("laptop", &remote, Settings::fast_poll());
    write(&device.local, ".prismignore", "build/\n");
    write(&device.local, "a.txt", "a\n");
    write(&device.local, "build/deep/out.txt", "first\n");
    let _agent = device.start_with_env(&[("RUST_LOG", "prism_sync=debug")]);
    wait_for_content(&remote.join("a.txt"), "a\n");

    write(&device.local, ".prismignore", "# nothing ignored\n");
    wait_for_content(&remote.join("build/deep/out.txt"), "first\n");

    // Both watches follow the new rules: the agent goes quiet again...
    let settled = quiet_runs(&device);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        runs(&device),
        settled,
        "the agent keeps listing after .prismignore changed\n{}",
        device.log_text()
    );
    // ...and edits in the folders they let in travel on their events.
    write(&device.local, "build/deep/out.txt", "second\n");
    wait_for_content(&remote.join("build/deep/out.txt"), "second\n");
    write(&remote, "build/deep/from-nas.txt", "written on the NAS\n");
    wait_for_content(
        &device.local.join("build/deep/from-nas.txt"),
        "written on the NAS\n",
    );
}

#[test]
fn status_stops_naming_an_unwatched_folder_once_the_rules_exclude_it() {
    let sandbox = Sandbox::new();
    let remote = sandbox.remote("remote");
    let device = sandbox.device("laptop", &remote);
    write(&device.local, "a.txt", "a\n");
    crate::unwatchable::make_unwatchable_folder(&device.local);
    let _agent = device.start();
    wait_for_content(&remote.join("a.txt"), "a\n");
    wait_until(PATIENCE, "status names the unwatched folder", || {
        let shown = watcher_status(&device);
        shown
            .contains("cannot be watched")
            .then_some(())
            .ok_or(shown)
    });

    // Rules that exclude it: every folder is watched again, and status
    // must say so rather than keep the old sentence.
    write(&device.local, ".prismignore", "long/\n");
    wait_for_watcher_ok(&device);
}

#[test]
fn a_local_folder_missing_at_the_start_is_watched_once_it_is_there() {
    let sandbox = Sandbox::new();
    let remote = sandbox.remote("remote");
    let device = sandbox.device("laptop", &remote);
    // A folder on a disk mounted after the agent started (a new pair's
    // first sync may make it itself).
    std::fs::remove_dir(&device.local).unwrap();
    let _agent = device.start();
    std::fs::create_dir_all(&device.local).unwrap();
    write(&device.local, "a.txt", "a\n");
    let started = device.ctl_json(&["sync", "start", PAIR]);
    let id = started["sync_id"].as_str().unwrap().to_owned();
    device.ctl(&["sync", "wait", &id, "--timeout", "20"]);
    wait_for_content(&remote.join("a.txt"), "a\n");
    // The watch started after a sync found the folder there: status says
    // so (it said "does not exist yet" for good before).
    wait_for_watcher_ok(&device);
    write(&device.local, "b.txt", "b\n");
    wait_for_content(&remote.join("b.txt"), "b\n");
}

#[test]
fn the_prismignore_of_a_local_folder_that_appears_after_the_start_is_followed() {
    let sandbox = Sandbox::new();
    let remote = sandbox.remote("remote");
    let device = sandbox.device("laptop", &remote);
    write(&device.local, "a.txt", "a\n");
    let agent = device.start();
    wait_for_content(&remote.join("a.txt"), "a\n");
    drop(agent);
    // The folder's disk is not there when the agent starts, and is mounted
    // after, with rules that now ignore its secrets: no watch saw the file
    // change, and the rules the agent started with (none) must not be the
    // ones it syncs by.
    let disk = device.local.with_extension("unmounted");
    std::fs::rename(&device.local, &disk).unwrap();
    let _agent = device.start();
    write(&disk, ".prismignore", "secret/\n");
    write(&disk, "secret/key.txt", "do not upload\n");
    write(&disk, "b.txt", "b\n");
    std::fs::rename(&disk, &device.local).unwrap();
    let started = device.ctl_json(&["sync", "start", PAIR]);
    let id = started["sync_id"].as_str().unwrap().to_owned();
    device.ctl(&["sync", "wait", &id, "--timeout", "20"]);
    wait_for_content(&remote.join("b.txt"), "b\n");
    assert!(
        !remote.join("secret").exists(),
        "an ignored folder was uploaded\n{}",
        device.log_text()
    );
}

#[test]
fn a_prismignore_that_does_not_load_is_reported_until_it_does() {
    let sandbox = Sandbox::new();
    let remote = sandbox.remote("remote");
    let device = sandbox.device("laptop", &remote);
    write(&device.local, "a.txt", "a\n");
    let _agent = device.start();
    wait_for_content(&remote.join("a.txt"), "a\n");

    // A reversed character range: the rules before it stay in force.
    write(&device.local, ".prismignore", "notes/\n[z-a]\n");
    let shows_it = |status: &serde_json::Value| {
        status["problems"]
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p["path"] == ".prismignore"))
    };
    wait_until(PATIENCE, "status names .prismignore", || {
        let status = device.pair_status();
        shows_it(&status).then_some(()).ok_or(format!("{status:#}"))
    });
    // A full run afterwards must not drop it: the file still does not load.
    let started = device.ctl_json(&["sync", "start", PAIR]);
    let id = started["sync_id"].as_str().unwrap().to_owned();
    let output = device.ctl(&["sync", "wait", &id, "--timeout", "20"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let status = device.pair_status();
    assert!(shows_it(&status), "{status:#}");

    write(&device.local, ".prismignore", "notes/\n");
    wait_until(PATIENCE, "the problem is gone once the file loads", || {
        let status = device.pair_status();
        (!shows_it(&status))
            .then_some(())
            .ok_or(format!("{status:#}"))
    });
}
