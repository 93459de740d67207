//! `prism-syncctl` as a user runs it: the real binary against a real server
//! started in this process (with the in-memory daemon double), checking
//! stdout, stderr and exit codes.

// Tests take locks with `lock().unwrap()`: a lock poisoned in a test is a
// failed test. The agent's own rule (`prism_sync::locks`) does not apply.
#![allow(clippy::disallowed_methods)]

mod api_support;

use std::path::Path;
use std::process::{Command, Output};

use api_support::TestServer;
use prism_sync::api::wire::Strategy;
use serde_json::{Value, json};

fn ctl(socket: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_prism-syncctl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .env_remove("PRISM_SYNC_SOCKET")
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

/// Runs a command that must succeed and returns its stdout as JSON.
fn ctl_json(socket: &Path, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let output = ctl(socket, &all);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    serde_json::from_str(&stdout(&output)).unwrap()
}

#[test]
fn json_status_prints_the_agent_status() {
    let server = TestServer::start();
    let status = ctl_json(&server.socket, &["status"]);
    assert_eq!(status["protocol"], "1.0");
    assert_eq!(status["agent"]["device"], "laptop");
    assert_eq!(status["pairs"][0]["name"], "notes");
    assert_eq!(status["pairs"][0]["transfers"][0]["bytes_total"], 4096);
}

#[test]
fn status_prints_a_readable_table() {
    let server = TestServer::start();
    let output = ctl(&server.socket, &["status"]);
    assert_eq!(output.status.code(), Some(0));
    let text = stdout(&output);
    assert!(text.starts_with("prism-syncd 0.1.0 on laptop"), "{text}");
    assert!(
        text.contains("PAIR    STATE    PENDING  CONFLICTS  LAST SYNC"),
        "{text}"
    );
    assert!(
        text.contains("notes   syncing  2        1          sync-1 completed_with_conflicts"),
        "{text}"
    );
    assert!(
        text.contains("upload   docs/big.pdf  1.0 KiB / 4.0 KiB (25%)"),
        "{text}"
    );
}

#[test]
fn conflicts_lists_spec_objects_or_a_table() {
    let server = TestServer::start();
    let body = ctl_json(&server.socket, &["conflicts"]);
    assert_eq!(body["conflicts"].as_array().unwrap().len(), 1);
    assert_eq!(body["conflicts"][0]["conflict_id"], "conflict-5678");
    assert_eq!(body["conflicts"][0]["remote_version"]["hash"], "def456");
    let all = ctl_json(&server.socket, &["conflicts", "--all", "--pair", "notes"]);
    assert_eq!(all["conflicts"].as_array().unwrap().len(), 2);

    let output = ctl(&server.socket, &["conflicts"]);
    let text = stdout(&output);
    assert!(
        text.contains("ID             PAIR   PATH          KIND"),
        "{text}"
    );
    assert!(
        text.contains("conflict-5678  notes  docs/page.md  both_modified"),
        "{text}"
    );
    assert!(
        text.contains("prism-syncctl resolve ID --strategy"),
        "{text}"
    );
}

#[test]
fn resolve_prints_the_spec_4_3_answer() {
    let server = TestServer::start();
    let body = ctl_json(
        &server.socket,
        &["resolve", "conflict-5678", "--strategy", "keep_remote"],
    );
    assert_eq!(
        body,
        json!({"status": "resolved", "resolved_at": "2025-02-09T17:00:00.000Z", "note": null})
    );
    let output = ctl(&server.socket, &["conflicts"]);
    assert_eq!(stdout(&output), "No unresolved conflicts.\n");

    // Resolving it again: the agent's 409 as the spec's error object, exit 1.
    let output = ctl(
        &server.socket,
        &[
            "--json",
            "resolve",
            "conflict-5678",
            "--strategy",
            "keep_remote",
        ],
    );
    assert_eq!(output.status.code(), Some(1));
    let error: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(error["error"]["code"], "409");
    assert_eq!(error["error"]["message"], "Conflict already resolved");
}

#[test]
fn resolve_from_a_file_sends_its_absolute_path() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("merged.md"), "merged text").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_prism-syncctl"))
        .current_dir(dir.path())
        .arg("--socket")
        .arg(&server.socket)
        .args([
            "resolve",
            "conflict-5678",
            "--strategy",
            "manual",
            "--from",
            "merged.md",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        stdout(&output)
            .starts_with("Resolved conflict-5678 with manual at 2025-02-09T17:00:00.000Z"),
        "{}",
        stdout(&output)
    );
    let seen = server
        .control
        .state
        .lock()
        .unwrap()
        .last_resolve
        .clone()
        .unwrap();
    assert_eq!(seen.resolution_strategy, Strategy::Manual);
    let merged = dir.path().join("merged.md");
    assert_eq!(seen.merged_file.as_deref(), Some(merged.to_str().unwrap()));
}

#[test]
fn resolve_usage_errors_exit_2_without_asking_the_agent() {
    let server = TestServer::start();
    let output = ctl(
        &server.socket,
        &[
            "resolve",
            "conflict-5678",
            "--strategy",
            "keep_local",
            "--from",
            "/etc/hostname",
        ],
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("--from goes only with --strategy manual"),
        "{}",
        stderr(&output)
    );
    let output = ctl(
        &server.socket,
        &["resolve", "conflict-5678", "--strategy", "coin_toss"],
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("keep_local"),
        "{}",
        stderr(&output)
    );
    assert_eq!(server.control.state.lock().unwrap().last_resolve, None);
}

#[test]
fn changes_prints_the_spec_6_2_log_or_a_table() {
    let server = TestServer::start();
    let body = ctl_json(
        &server.socket,
        &[
            "changes",
            "--pair",
            "notes",
            "--since",
            "2025-02-09",
            "--path",
            "docs",
            "--device",
            "laptop",
            "--limit",
            "1",
        ],
    );
    assert_eq!(
        body["changes"],
        json!([{"type": "modified", "path": "docs/page.md", "timestamp": "2025-02-09T12:00:00.000Z",
                "pair": "notes", "from_path": null, "origin_side": "local",
                "origin_device": "laptop", "origin_at": "2025-02-09T12:00:00.000Z",
                "sync_id": "sync-1", "hash": "abc123", "size": 42}])
    );
    let query = server
        .control
        .state
        .lock()
        .unwrap()
        .last_changes_query
        .clone()
        .unwrap();
    assert_eq!(query.since.as_deref(), Some("2025-02-09T00:00:00.000Z"));
    assert_eq!(query.device.as_deref(), Some("laptop"));
    assert_eq!(query.limit, 1);

    let text = stdout(&ctl(&server.socket, &["changes", "--pair", "notes"]));
    assert!(
        text.contains("TIME                      TYPE      PAIR   PATH"),
        "{text}"
    );
    assert!(
        text.contains("moved     notes  old_docs/page.md -> docs/page2.md  local (laptop)"),
        "{text}"
    );
}

#[test]
fn sync_start_and_wait() {
    let server = TestServer::start();
    let output = ctl(&server.socket, &["sync", "start", "notes"]);
    assert_eq!(stdout(&output), "Started sync-2 for pair notes\n");
    let body = ctl_json(&server.socket, &["sync", "start", "photos"]);
    assert_eq!(body["status"], "sync_in_progress");
    assert_eq!(body["sync_id"], "sync-3");

    // sync-1 completed with conflicts: exit 3.
    let output = ctl(&server.socket, &["sync", "wait", "sync-1"]);
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert!(stdout(&output).starts_with("sync-1 (pair notes): completed_with_conflicts"));
    // sync-2 never finishes in the double: the timeout's exit 5.
    let output = ctl(
        &server.socket,
        &["sync", "wait", "sync-2", "--timeout", "1"],
    );
    assert_eq!(output.status.code(), Some(5));
    assert!(
        stderr(&output).contains("sync-2 is still in progress"),
        "{}",
        stderr(&output)
    );
    // An unknown run is the agent's 404: a sentence on stderr, exit 1.
    let output = ctl(&server.socket, &["sync", "status", "sync-404"]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(stderr(&output), "prism-syncctl: no sync run \"sync-404\"\n");
}

#[test]
fn pairs_pause_and_confirm() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("docs");
    let output = ctl(
        &server.socket,
        &[
            "pair",
            "add",
            "docs",
            "--local",
            local.to_str().unwrap(),
            "--remote",
            "file:///srv/docs",
            "--conflict",
            "auto_merge",
            "--ignore",
            "*.bak",
            "--ignore",
            "build/",
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        stdout(&output).starts_with("Added pair docs:"),
        "{}",
        stdout(&output)
    );
    let list = ctl_json(&server.socket, &["pair", "list"]);
    assert_eq!(list["pairs"][2]["ignore"], json!(["*.bak", "build/"]));
    assert_eq!(
        stdout(&ctl(&server.socket, &["pause"])),
        "Paused all pairs\n"
    );
    assert_eq!(
        stdout(&ctl(&server.socket, &["resume", "notes"])),
        "Resumed pair notes\n"
    );
    let output = ctl(&server.socket, &["confirm-deletions", "photos"]);
    assert!(stdout(&output).starts_with("Confirmed the deletions of pair photos"));
    let output = ctl(&server.socket, &["pair", "remove", "docs"]);
    assert!(stdout(&output).starts_with("Removed pair docs"));
}

#[test]
fn not_running_has_its_own_message_and_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("prism-syncd.sock");
    let output = ctl(&socket, &["status"]);
    assert_eq!(output.status.code(), Some(4));
    assert_eq!(
        stderr(&output),
        format!(
            "prism-syncctl: prism-syncd is not running (no agent at {}). Start it with \
             `prism-syncd` or `prism-syncctl service install`.\n",
            socket.display()
        )
    );
    assert_eq!(stdout(&output), "");

    let output = ctl(&socket, &["--json", "conflicts"]);
    assert_eq!(output.status.code(), Some(4));
    let error: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(error["error"]["code"], "503");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("prism-syncd is not running"),
        "{error}"
    );
}

#[test]
fn socket_comes_from_the_environment_by_default() {
    let server = TestServer::start();
    let output = Command::new(env!("CARGO_BIN_EXE_prism-syncctl"))
        .args(["--json", "pair", "list"])
        .env("PRISM_SYNC_SOCKET", &server.socket)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let list: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(list["pairs"][0]["name"], "notes");
}
