//! The control API over a real local socket: every endpoint's JSON shape,
//! every kind of bad request, and the socket's life cycle (permissions,
//! stale sockets, a second agent). The daemon is the in-memory test double
//! from `api_support`; sockets, frames and the server are real.

// Tests take locks with `lock().unwrap()`: a lock poisoned in a test is a
// failed test. The agent's own rule (`prism_sync::locks`) does not apply.
#![allow(clippy::disallowed_methods)]

mod api_support;

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use api_support::{TestServer, connect_raw, frame, read_response, request, send_raw};
use prism_sync::api::wire::{ChangesQuery, ConflictStatus, PairSpec, Strategy, SyncState};
use prism_sync::api::{Client, ClientError, ServeError};
use serde_json::{Value, json};

fn keys(value: &Value) -> BTreeSet<&str> {
    value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"))
        .keys()
        .map(String::as_str)
        .collect()
}

fn set<'a>(names: &[&'a str]) -> BTreeSet<&'a str> {
    names.iter().copied().collect()
}

/// The body of a successful answer, after checking the envelope.
fn ok_body(response: Value) -> Value {
    assert_eq!(
        keys(&response),
        set(&["protocol", "status", "body"]),
        "{response}"
    );
    assert_eq!(response["protocol"], "1.0");
    assert_eq!(response["status"], 200, "{response}");
    response["body"].clone()
}

/// Checks an error answer: the envelope's status and the spec's section 9
/// object with the same code as a string. Returns the error object.
fn error_object(response: &Value, status: u16) -> Value {
    assert_eq!(response["protocol"], "1.0", "{response}");
    assert_eq!(response["status"], status, "{response}");
    let body = &response["body"];
    assert_eq!(keys(body), set(&["error"]), "{response}");
    let error = &body["error"];
    assert_eq!(
        keys(error),
        set(&["code", "message", "details"]),
        "{response}"
    );
    assert_eq!(error["code"], status.to_string());
    assert!(!error["message"].as_str().unwrap().is_empty());
    error.clone()
}

/// The server still answers a well-formed request from a new client.
fn still_answers(server: &TestServer) {
    let body = ok_body(request(&server.socket, "GET", "/status", Value::Null));
    assert_eq!(body["agent"]["device"], "laptop");
}

const CONFLICT_KEYS: &[&str] = &[
    "conflict_id",
    "file_path",
    "local_version",
    "remote_version",
    "status",
    "pair",
    "kind",
    "detected_at",
    "copy_path",
    "strategy",
    "note",
    "resolved_at",
];

fn check_conflict_shape(conflict: &Value) {
    assert_eq!(keys(conflict), set(CONFLICT_KEYS), "{conflict}");
    assert_eq!(
        keys(&conflict["local_version"]),
        set(&["hash", "modified_at"])
    );
    assert_eq!(
        keys(&conflict["remote_version"]),
        set(&["hash", "modified_at"])
    );
}

#[test]
fn status_has_the_documented_shape() {
    let server = TestServer::start();
    let body = ok_body(request(&server.socket, "GET", "/status", Value::Null));
    assert_eq!(keys(&body), set(&["protocol", "agent", "pairs"]));
    assert_eq!(body["protocol"], "1.0");
    assert_eq!(
        keys(&body["agent"]),
        set(&[
            "version",
            "device",
            "pid",
            "started_at",
            "state_dir",
            "socket"
        ])
    );
    let notes = &body["pairs"][0];
    assert_eq!(
        keys(notes),
        set(&[
            "name",
            "local",
            "remote",
            "state",
            "state_detail",
            "last_sync",
            "pending",
            "unresolved_conflicts",
            "transfers",
            "problems",
            "watcher",
            "write_guarantee",
            "remote_transport",
        ])
    );
    assert_eq!(notes["state"], "syncing");
    assert_eq!(notes["write_guarantee"], "conditional");
    assert_eq!(notes["remote_transport"], Value::Null);
    assert_eq!(
        notes["last_sync"],
        json!({"sync_id": "sync-1", "status": "completed_with_conflicts",
               "finished_at": "2025-02-09T13:05:01.000Z"})
    );
    assert_eq!(
        notes["transfers"][0],
        json!({"path": "docs/big.pdf", "direction": "upload", "bytes_done": 1024, "bytes_total": 4096})
    );
    assert_eq!(body["pairs"][1]["last_sync"], Value::Null);
}

#[test]
fn sync_start_answers_in_the_spec_4_1_shape() {
    let server = TestServer::start();
    // The spec's own request body: the pair is found by its remote URL.
    let body = ok_body(request(
        &server.socket,
        "POST",
        "/sync/start",
        json!({"method": "sftp", "remote_url": "sftp://nas.example/notes/",
               "credentials": {"username": "user", "password": "securepass"}}),
    ));
    assert_eq!(
        body,
        json!({"status": "sync_in_progress", "sync_id": "sync-2",
               "syncs": [{"pair": "notes", "sync_id": "sync-2"}]})
    );
    // The credentials were handed to the daemon for that pair before its
    // sync started (one run, sync-1, existed then).
    assert_eq!(
        server.control.state.lock().unwrap().stored_credentials,
        [("notes".to_owned(), "user".to_owned(), 1)]
    );

    // No body starts every pair; the first run is the spec's `sync_id`.
    let body = ok_body(request(&server.socket, "POST", "/sync/start", Value::Null));
    assert_eq!(body["sync_id"], "sync-3");
    assert_eq!(
        body["syncs"],
        json!([{"pair": "notes", "sync_id": "sync-3"}, {"pair": "photos", "sync_id": "sync-4"}])
    );

    // A method that does not match the URL's scheme selects nothing.
    let response = request(
        &server.socket,
        "POST",
        "/sync/start",
        json!({"method": "webdav", "remote_url": "sftp://nas.example/notes"}),
    );
    error_object(&response, 404);
    assert!(!response.to_string().contains("securepass"));
    // Credentials for pairs none of which logs in with a password, or that
    // the daemon refuses, start nothing and are never echoed.
    for body in [
        json!({"pair": "photos",
               "credentials": {"username": "user", "password": "securepass"}}),
        json!({"pair": "notes",
               "credentials": {"username": "mallory", "password": "securepass"}}),
        // Malformed: serde would quote the value it could not take.
        json!({"pair": "notes", "credentials": "user:securepass"}),
        json!({"pair": "notes",
               "credentials": {"username": "user", "password": ["securepass"]}}),
    ] {
        let response = request(&server.socket, "POST", "/sync/start", body);
        error_object(&response, 400);
        assert!(!response.to_string().contains("securepass"), "{response}");
    }
    let state = server.control.state.lock().unwrap();
    assert_eq!(state.stored_credentials.len(), 1);
    assert_eq!(state.syncs.len(), 4, "the refused requests started no sync");
    drop(state);
    let response = request(
        &server.socket,
        "POST",
        "/sync/start",
        json!({"pair": "nope"}),
    );
    error_object(&response, 404);
}

#[test]
fn sync_status_answers_in_the_spec_4_2_shape() {
    let server = TestServer::start();
    let body = ok_body(request(
        &server.socket,
        "GET",
        "/sync/status/sync-1",
        Value::Null,
    ));
    assert_eq!(
        keys(&body),
        set(&[
            "status",
            "last_synced_at",
            "conflicts",
            "sync_id",
            "pair",
            "started_at",
            "finished_at",
            "counts",
            "error",
        ])
    );
    assert_eq!(body["status"], "completed_with_conflicts");
    assert_eq!(body["last_synced_at"], "2025-02-09T13:05:01.000Z");
    check_conflict_shape(&body["conflicts"][0]);
    assert_eq!(
        keys(&body["counts"]),
        set(&[
            "uploaded",
            "downloaded",
            "deleted_local",
            "deleted_remote",
            "moved",
            "conflicts",
            "errors",
            "bytes_up",
            "bytes_down",
        ])
    );
    let missing = request(&server.socket, "GET", "/sync/status/sync-99", Value::Null);
    error_object(&missing, 404);
}

#[test]
fn conflicts_are_spec_5_3_objects() {
    let server = TestServer::start();
    let body = ok_body(request(&server.socket, "GET", "/conflicts", Value::Null));
    assert_eq!(keys(&body), set(&["conflicts"]));
    let conflicts = body["conflicts"].as_array().unwrap();
    assert_eq!(
        conflicts.len(),
        1,
        "resolved conflicts are hidden by default"
    );
    check_conflict_shape(&conflicts[0]);
    assert_eq!(conflicts[0]["conflict_id"], "conflict-5678");
    assert_eq!(conflicts[0]["status"], "unresolved");
    assert_eq!(
        conflicts[0]["local_version"],
        json!({"hash": "abc123", "modified_at": "2025-02-09T12:00:00.000Z"})
    );

    let body = ok_body(request(
        &server.socket,
        "GET",
        "/conflicts?pair=notes&all=true",
        Value::Null,
    ));
    let conflicts = body["conflicts"].as_array().unwrap();
    assert_eq!(conflicts.len(), 2);
    let gone = &conflicts[1];
    check_conflict_shape(gone);
    assert_eq!(gone["status"], "resolved");
    assert_eq!(gone["strategy"], "keep_local");
    assert_eq!(
        gone["remote_version"],
        json!({"hash": null, "modified_at": null})
    );

    error_object(
        &request(&server.socket, "GET", "/conflicts?all=maybe", Value::Null),
        400,
    );
}

#[test]
fn resolve_answers_in_the_spec_4_3_shape() {
    let server = TestServer::start();
    let body = ok_body(request(
        &server.socket,
        "POST",
        "/sync/resolve",
        json!({"conflict_id": "conflict-5678", "resolution_strategy": "keep_local"}),
    ));
    assert_eq!(
        body,
        json!({"status": "resolved", "resolved_at": "2025-02-09T17:00:00.000Z", "note": null})
    );
    // Resolving it again contradicts the state: the spec's 409.
    let again = request(
        &server.socket,
        "POST",
        "/sync/resolve",
        json!({"conflict_id": "conflict-5678", "resolution_strategy": "keep_local"}),
    );
    let error = error_object(&again, 409);
    assert_eq!(error["message"], "Conflict already resolved");

    let bad = [
        json!({"conflict_id": "conflict-5678", "resolution_strategy": "coin_toss"}),
        json!({"resolution_strategy": "keep_local"}),
        json!({"conflict_id": "conflict-5678", "resolution_strategy": "manual", "merged_file": "rel.md"}),
        json!({"conflict_id": "conflict-5678", "resolution_strategy": "keep_remote", "merged_file": "/m.md"}),
    ];
    for body in bad {
        error_object(
            &request(&server.socket, "POST", "/sync/resolve", body.clone()),
            400,
        );
    }
    error_object(
        &request(&server.socket, "POST", "/sync/resolve", Value::Null),
        400,
    );
    // Which conflict comes first: an unknown one is a 404, whatever else
    // the request says.
    error_object(
        &request(
            &server.socket,
            "POST",
            "/sync/resolve",
            json!({"conflict_id": "c", "resolution_strategy": "manual", "merged_file": "rel.md"}),
        ),
        404,
    );
}

#[test]
fn changes_answer_in_the_spec_6_2_shape() {
    let server = TestServer::start();
    let body = ok_body(request(&server.socket, "GET", "/changes", Value::Null));
    assert_eq!(keys(&body), set(&["changes"]));
    let first = &body["changes"][0];
    assert_eq!(
        keys(first),
        set(&[
            "type",
            "path",
            "timestamp",
            "pair",
            "from_path",
            "origin_side",
            "origin_device",
            "origin_at",
            "sync_id",
            "hash",
            "size",
        ])
    );
    assert_eq!(first["type"], "modified");
    assert_eq!(first["path"], "docs/page.md");
    assert_eq!(first["timestamp"], "2025-02-09T12:00:00.000Z");
    assert_eq!(body["changes"][1]["from_path"], "old_docs/page.md");
    assert_eq!(
        server.control.state.lock().unwrap().last_changes_query,
        Some(ChangesQuery {
            pair: None,
            since: None,
            path: None,
            device: None,
            limit: 100
        })
    );

    // `since` reaches the daemon normalized, so it compares as text.
    let body = ok_body(request(
        &server.socket,
        "GET",
        "/changes?pair=notes&since=2025-02-09T12%3A30%3A00%2B01%3A00&path=docs%2F&device=laptop&limit=5",
        Value::Null,
    ));
    assert_eq!(body["changes"].as_array().unwrap().len(), 2);
    let query = server
        .control
        .state
        .lock()
        .unwrap()
        .last_changes_query
        .clone();
    assert_eq!(
        query,
        Some(ChangesQuery {
            pair: Some("notes".into()),
            since: Some("2025-02-09T11:30:00.000Z".into()),
            path: Some("docs/".into()),
            device: Some("laptop".into()),
            limit: 5
        })
    );
    let error = error_object(
        &request(&server.socket, "GET", "/changes?since=someday", Value::Null),
        400,
    );
    assert!(error["details"].as_str().unwrap().contains("RFC 3339"));
}

#[test]
fn pause_resume_and_pairs_endpoints() {
    let server = TestServer::start();
    let socket = &server.socket;
    assert_eq!(
        ok_body(request(socket, "POST", "/pause", json!({"pair": "notes"}))),
        json!({"status": "paused", "pair": "notes"})
    );
    assert_eq!(
        ok_body(request(socket, "POST", "/pause", Value::Null)),
        json!({"status": "paused", "pair": null})
    );
    assert_eq!(
        ok_body(request(socket, "POST", "/resume", json!({}))),
        json!({"status": "resumed", "pair": null})
    );
    error_object(
        &request(socket, "POST", "/pause", json!({"pair": "nope"})),
        404,
    );

    let added = ok_body(request(
        socket,
        "POST",
        "/pairs",
        json!({"name": "my docs", "local": "/home/u/docs", "remote": "file:///srv/docs",
               "conflict": "auto_merge", "ignore": ["*.bak"]}),
    ));
    assert_eq!(
        added,
        json!({"name": "my docs", "local": "/home/u/docs", "remote": "file:///srv/docs",
               "conflict": "auto_merge", "ignore": ["*.bak"],
               "write_guarantee": "conditional"})
    );
    error_object(
        &request(
            socket,
            "POST",
            "/pairs",
            json!({"name": "x", "local": "docs", "remote": "file:///x"}),
        ),
        400,
    );
    let list = ok_body(request(socket, "GET", "/pairs", Value::Null));
    assert_eq!(keys(&list), set(&["pairs"]));
    assert_eq!(list["pairs"].as_array().unwrap().len(), 3);
    assert_eq!(
        ok_body(request(socket, "DELETE", "/pairs/my%20docs", Value::Null)),
        json!({"status": "removed", "pair": "my docs"})
    );
    assert_eq!(
        ok_body(request(
            socket,
            "POST",
            "/pairs/notes/confirm-deletions",
            Value::Null
        )),
        json!({"status": "confirmed", "pair": "notes"})
    );
    assert_eq!(server.control.state.lock().unwrap().confirmed, ["notes"]);
    error_object(&request(socket, "DELETE", "/pairs/nope", Value::Null), 404);
}

#[test]
fn typed_client_round_trips_every_endpoint() {
    let server = TestServer::start();
    let mut client = Client::connect(&server.socket).unwrap();
    assert_eq!(client.status().unwrap().pairs.len(), 2);
    let started = client.start_sync(&Default::default()).unwrap();
    assert_eq!(started.status, SyncState::SyncInProgress);
    assert_eq!(client.sync_status(&started.sync_id).unwrap().pair, "notes");
    assert_eq!(client.conflicts(None, true).unwrap().conflicts.len(), 2);
    let resolved = client
        .resolve(&prism_sync::api::wire::ResolveRequest {
            conflict_id: "conflict-5678".into(),
            resolution_strategy: Strategy::AutoMerge,
            merged_file: None,
        })
        .unwrap();
    assert_eq!(resolved.status, ConflictStatus::Resolved);
    let log = client
        .changes(&ChangesQuery {
            pair: Some("photos".into()),
            since: Some("2025-02-08".into()),
            path: None,
            device: None,
            limit: 10,
        })
        .unwrap();
    assert_eq!(log.changes.len(), 1);
    assert_eq!(log.changes[0].path, "2025/beach.jpg");
    assert_eq!(client.pause(Some("notes")).unwrap().status, "paused");
    assert_eq!(client.resume(None).unwrap().status, "resumed");
    let spec = PairSpec {
        name: "a b/c".into(),
        local: "/home/u/abc".into(),
        remote: "file:///srv/abc".into(),
        conflict: None,
        ignore: vec![],
    };
    assert_eq!(client.pair_add(&spec).unwrap().conflict, Strategy::Manual);
    assert_eq!(client.pair_list().unwrap().pairs.len(), 3);
    assert_eq!(
        client.pair_remove("a b/c").unwrap().pair.as_deref(),
        Some("a b/c")
    );
    assert_eq!(
        client.confirm_deletions("photos").unwrap().status,
        "confirmed"
    );
    match client.sync_status("sync-404") {
        Err(ClientError::Api(err)) => assert_eq!(err.code, 404),
        other => panic!("expected a 404, got {other:?}"),
    }
}

#[test]
fn several_requests_share_one_connection() {
    let server = TestServer::start();
    let mut stream = connect_raw(&server.socket);
    for path in ["/status", "/pairs", "/conflicts"] {
        let envelope = json!({"protocol": "1.0", "method": "GET", "path": path, "body": null});
        stream
            .write_all(&frame(envelope.to_string().as_bytes()))
            .unwrap();
        ok_body(read_response(&mut stream));
    }
    // A request error (not a framing error) keeps the connection usable.
    let bad = json!({"protocol": "1.0", "method": "GET", "path": "/nowhere", "body": null});
    stream
        .write_all(&frame(bad.to_string().as_bytes()))
        .unwrap();
    error_object(&read_response(&mut stream), 404);
    let envelope = json!({"protocol": "1.0", "method": "GET", "path": "/status", "body": null});
    stream
        .write_all(&frame(envelope.to_string().as_bytes()))
        .unwrap();
    ok_body(read_response(&mut stream));
}

#[test]
fn malformed_json_gets_an_error_object() {
    let server = TestServer::start();
    let error = error_object(
        &send_raw(&server.socket, &frame(b"{\"protocol\": \"1.0\", ")),
        400,
    );
    assert!(
        error["details"].as_str().unwrap().contains("EOF"),
        "{error}"
    );
    error_object(&send_raw(&server.socket, &frame(b"[1, 2, 3]")), 400);
    error_object(&send_raw(&server.socket, &frame(&[0xff, 0xfe])), 400);
    still_answers(&server);
}

#[test]
fn truncated_frame_gets_an_error_object() {
    let server = TestServer::start();
    let mut stream = connect_raw(&server.socket);
    let whole = frame(br#"{"protocol":"1.0","method":"GET","path":"/status","body":null}"#);
    stream.write_all(&whole[..20]).unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let error = error_object(&read_response(&mut stream), 400);
    assert_eq!(error["message"], "Truncated request frame");

    // A connection that ends inside the length prefix.
    let mut stream = connect_raw(&server.socket);
    stream.write_all(&[0, 0]).unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    error_object(&read_response(&mut stream), 400);
    still_answers(&server);
}

#[test]
fn oversized_request_is_refused_without_being_read() {
    let server = TestServer::start();
    let mut stream = connect_raw(&server.socket);
    // Only the prefix is sent: the server must answer without waiting for
    // the 2 MiB it announces.
    stream
        .write_all(&(2u32 * 1024 * 1024).to_be_bytes())
        .unwrap();
    let started = Instant::now();
    let error = error_object(&read_response(&mut stream), 413);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        error["details"].as_str().unwrap().contains("2097152"),
        "{error}"
    );
    still_answers(&server);
}

#[test]
fn unknown_path_and_wrong_method_get_error_objects() {
    let server = TestServer::start();
    let error = error_object(
        &request(&server.socket, "GET", "/sync/everything", Value::Null),
        404,
    );
    assert!(
        error["details"]
            .as_str()
            .unwrap()
            .contains("/sync/everything")
    );
    let error = error_object(
        &request(&server.socket, "DELETE", "/status", Value::Null),
        405,
    );
    assert!(
        error["details"].as_str().unwrap().contains("allowed: GET"),
        "{error}"
    );
    let error = error_object(
        &request(&server.socket, "GET", "/sync/start", Value::Null),
        405,
    );
    assert!(error["details"].as_str().unwrap().contains("POST"));
    error_object(
        &request(&server.socket, "GET", "/status?verbose=1", Value::Null),
        400,
    );
    error_object(&request(&server.socket, "GET", "status", Value::Null), 400);
    still_answers(&server);
}

#[test]
fn another_major_version_is_refused_with_the_versions_the_agent_speaks() {
    let server = TestServer::start();
    let envelope = json!({"protocol": "2.0", "method": "GET", "path": "/status", "body": null});
    let response = send_raw(&server.socket, &frame(envelope.to_string().as_bytes()));
    let error = error_object(&response, 400);
    assert_eq!(error["message"], "Unsupported protocol version");
    let details = error["details"].as_str().unwrap();
    assert!(
        details.contains("\"2.0\"") && details.contains("1.0"),
        "{details}"
    );
    // The version is checked before the rest of the envelope, whose shape
    // another major version may have changed.
    let envelope = json!({"protocol": "2.0", "verb": "GET", "target": "/status"});
    let response = send_raw(&server.socket, &frame(envelope.to_string().as_bytes()));
    assert_eq!(
        error_object(&response, 400)["message"],
        "Unsupported protocol version"
    );
    let envelope = json!({"method": "GET", "path": "/status", "body": null});
    let response = send_raw(&server.socket, &frame(envelope.to_string().as_bytes()));
    let error = error_object(&response, 400);
    assert!(
        error["details"].as_str().unwrap().contains("protocol"),
        "{error}"
    );
    // A newer minor version of the same major is fine.
    let envelope = json!({"protocol": "1.4", "method": "GET", "path": "/status", "body": null});
    ok_body(send_raw(
        &server.socket,
        &frame(envelope.to_string().as_bytes()),
    ));
    still_answers(&server);
}

#[test]
fn a_panicking_control_method_is_a_500_and_the_server_survives() {
    let server = TestServer::start();
    let response = request(
        &server.socket,
        "POST",
        "/sync/start",
        json!({"pair": "explode"}),
    );
    error_object(&response, 500);
    still_answers(&server);
}

#[test]
fn a_stuck_client_does_not_block_others() {
    let server = TestServer::start();
    // One client connects and sends nothing; another sends half a frame.
    let _silent = connect_raw(&server.socket);
    let mut half = connect_raw(&server.socket);
    half.write_all(&frame(br#"{"protocol":"1.0""#)[..10])
        .unwrap();
    let started = Instant::now();
    still_answers(&server);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn socket_is_owner_only_and_its_new_directory_private() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir
        .path()
        .join("run")
        .join("prism-sync")
        .join("prism-syncd.sock");
    let server = TestServer::start_at(&socket).unwrap();
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");
    let parent = std::fs::metadata(socket.parent().unwrap())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(parent & 0o777, 0o700, "directory mode {parent:o}");
    still_answers(&server);
    drop(server);
    assert!(!socket.exists(), "the socket file is removed on shutdown");
}

#[test]
fn stale_socket_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("prism-syncd.sock");
    // A crashed agent leaves its socket file behind with nobody listening.
    drop(UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    let err = Client::connect(&socket).unwrap_err();
    assert!(matches!(err, ClientError::NotRunning { .. }), "{err:?}");

    let server = TestServer::start_at(&socket).unwrap();
    still_answers(&server);
}

#[test]
fn second_agent_on_a_live_socket_fails() {
    let first = TestServer::start();
    let err = TestServer::start_at(&first.socket)
        .err()
        .expect("second bind must fail");
    assert!(matches!(err, ServeError::AlreadyRunning { .. }), "{err:?}");
    assert!(err.to_string().contains("already running"), "{err}");
    still_answers(&first);
}

#[test]
fn a_regular_file_at_the_socket_path_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("prism-syncd.sock");
    std::fs::write(&path, "not a socket").unwrap();
    let err = TestServer::start_at(&path).err().expect("bind must fail");
    assert!(matches!(err, ServeError::NotASocket { .. }), "{err:?}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a socket");
}
