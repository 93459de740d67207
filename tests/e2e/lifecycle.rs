//! The agent's life: one agent per state dir, a clean stop on SIGTERM even
//! in the middle of a sync, and a journal users can audit with `sqlite3`
//! while the agent runs.

use crate::harness::*;

#[test]
fn a_second_agent_on_the_same_state_dir_refuses_to_start() {
    let sandbox = Sandbox::new();
    let remote = sandbox.remote("remote");
    let device = sandbox.device("laptop", &remote);
    let _agent = device.start();

    let mut second = device.clone();
    second.socket = sandbox.path("second.sock");
    let output = second.syncd().output().expect("run a second prism-syncd");
    assert_ne!(output.status.code(), Some(0), "{}", text(&output));
    let message = stderr(&output);
    assert!(
        message.contains("already running") && message.contains(&*device.state.to_string_lossy()),
        "the refusal names the state dir: {message}"
    );
    assert!(!second.socket.exists(), "the refused agent left no socket");
    assert_eq!(
        device.pair_status()["name"],
        PAIR,
        "the first agent still runs"
    );
}

#[test]
fn sigterm_in_the_middle_of_a_sync_stops_cleanly() {
    let sandbox = Sandbox::new();
    let remote = sandbox.remote("remote");
    let device = sandbox.device("laptop", &remote);
    for i in 0..1500 {
        write(
            &device.local,
            &format!("many/d{}/f{i}.txt", i % 10),
            &"x".repeat(8192),
        );
    }
    let agent = device.start();
    wait_until(PATIENCE, "the upload has begun", || {
        let n = tree(&remote).len();
        if n > 20 {
            Ok(())
        } else {
            Err(format!("{n} entries on the remote"))
        }
    });
    let status = agent.stop();
    assert_eq!(status.code(), Some(0), "{}", device.log_text());
    assert!(!device.socket.exists(), "the socket is removed");
    assert_eq!(
        device
            .sql("SELECT count(*) FROM syncs WHERE status = 'sync_in_progress';")
            .trim(),
        "0",
        "no run is left in progress: {}",
        device.sql("SELECT id, status FROM syncs;")
    );

    // The stopped run resumes at the next start and nothing is lost.
    let _agent = device.start();
    device.wait_converged();
}

/// The ```sql blocks of docs/journal.md.
fn audit_queries() -> Vec<String> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/journal.md"))
        .expect("read docs/journal.md");
    let mut queries = Vec::new();
    let mut current: Option<String> = None;
    for line in doc.lines() {
        match (&mut current, line.trim()) {
            (None, "```sql") => current = Some(String::new()),
            (Some(query), "```") => {
                queries.push(std::mem::take(query));
                current = None;
            }
            (Some(query), _) => {
                query.push_str(line);
                query.push('\n');
            }
            (None, _) => {}
        }
    }
    queries
}

#[test]
fn the_documented_audit_queries_run_against_a_live_journal() {
    let sandbox = Sandbox::new();
    let remote = sandbox.remote("remote");
    let device = sandbox.device("laptop", &remote);
    let _agent = device.start();
    write(&device.local, "docs/page.md", "audited\n");
    wait_for_content(&remote.join("docs/page.md"), "audited\n");
    std::fs::rename(
        device.local.join("docs/page.md"),
        device.local.join("docs/moved.md"),
    )
    .unwrap();
    wait_for_content(&remote.join("docs/moved.md"), "audited\n");

    let queries = audit_queries();
    assert!(
        queries.len() >= 5,
        "docs/journal.md has its audit queries: {queries:?}"
    );
    for query in &queries {
        device.sql(query);
    }
    // The remote shows the move before the round that made it records it
    // in the journal; wait for the record, not for the file.
    wait_until(
        std::time::Duration::from_secs(20),
        "the history of docs/page.md shows its creation and its move",
        || {
            let history = device.sql(&queries[0]);
            if history.contains("|created|")
                && history.contains("|moved|docs/page.md|docs/moved.md|")
            {
                Ok(())
            } else {
                Err(history)
            }
        },
    );
    let per_pair = queries
        .iter()
        .find(|q| q.contains("unresolved_conflicts"))
        .expect("the per-pair overview query");
    let overview = device.sql(per_pair);
    assert!(overview.starts_with(&format!("{PAIR}|sync-")), "{overview}");
    assert_eq!(device.pair_status()["name"], PAIR, "the agent still runs");
}

#[test]
fn a_damaged_journal_stops_the_agent_with_one_line_that_says_what_to_do() {
    let sandbox = Sandbox::new();
    let remote = sandbox.remote("remote");
    let device = sandbox.device("laptop", &remote);
    std::fs::create_dir_all(&device.state).unwrap();
    let journal = device.state.join("journal.db");
    std::fs::write(&journal, vec![0x5a; 8192]).unwrap();

    let output = device.syncd().output().expect("run prism-syncd");
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let message = stderr(&output);
    let lines: Vec<&str> = message.lines().collect();
    assert_eq!(lines.len(), 1, "one line, not one per logger:\n{message}");
    assert_eq!(
        message.matches("cannot open the journal").count(),
        1,
        "{message}"
    );
    assert!(
        message.contains(&*journal.to_string_lossy()) && message.contains("move it aside"),
        "{message}"
    );
    // Nothing was changed: the damaged file is still there to look at.
    assert_eq!(std::fs::read(&journal).unwrap(), vec![0x5a; 8192]);
}

#[test]
fn an_idle_pair_shows_nothing_pending_while_it_polls() {
    let sandbox = Sandbox::new();
    let remote = sandbox.remote("remote");
    // A long quiet window and a poll every second: a poll used to wait out
    // the window, counted as one pending change all the while.
    let settings = Settings {
        remote_poll_secs: Some(1),
        debounce_ms: Some(3_000),
        ..Settings::default()
    };
    let device = sandbox.device_with("laptop", &remote, settings);
    write(&device.local, "a.txt", "a\n");
    let _agent = device.start();
    wait_for_content(&remote.join("a.txt"), "a\n");
    wait_until(PATIENCE, "the pair is idle", || {
        let status = device.pair_status();
        (status["state"] == "idle" && status["pending"] == 0)
            .then_some(())
            .ok_or_else(|| format!("{status:#}"))
    });
    let mut seen = Vec::new();
    for _ in 0..30 {
        let status = device.pair_status();
        seen.push(format!("{} {}", status["state"], status["pending"]));
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(seen.iter().all(|s| s.ends_with(" 0")), "{seen:?}");

    // A paused pair synced on request stays paused.
    device.ctl_json(&["pause", PAIR]);
    let started = device.ctl_json(&["sync", "start", PAIR]);
    let id = started["sync_id"].as_str().unwrap().to_owned();
    let output = device.ctl(&["sync", "wait", &id, "--timeout", "20"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let status = device.pair_status();
    assert_eq!(status["state"], "paused", "{status:#}");
}
