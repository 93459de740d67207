//! The control API over the HTTP listener: every role against every
//! endpoint (one table), tokens limited to some pairs, forged, expired and
//! revoked tokens, and HTTP's own errors. The daemon is the in-memory test
//! double from `api_support`; the listener, the token checks and the
//! client (reqwest) are real.

// Tests take locks with `lock().unwrap()`: a lock poisoned in a test is a
// failed test. The agent's own rule (`prism_sync::locks`) does not apply.
#![allow(clippy::disallowed_methods)]

mod api_support;

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use api_support::MemControl;
use prism_sync::api::auth::{Grant, TokenKeys};
use prism_sync::api::pair_roots::PairRoots;
use prism_sync::api::wire::{Role, TokenInfo, TokenRequest};
use prism_sync::api::{Control, http};
use prism_sync::config::api::ApiConfig;
use prism_sync::remote::backend::{Reach, RemoteUrl};
use serde_json::{Value, json};

/// The HTTP listener on a free loopback port, serving the test double on
/// its own runtime; dropping it stops the listener.
struct HttpServer {
    base: String,
    control: Arc<MemControl>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HttpServer {
    fn start() -> HttpServer {
        HttpServer::start_with(None)
    }

    /// A listener that lets admin tokens add pairs inside `pair_roots`.
    fn start_with(pair_roots: Option<PairRoots>) -> HttpServer {
        let control = Arc::new(MemControl::with_fixture());
        let served: Arc<dyn Control> = control.clone();
        let keys = control.keys.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let config = ApiConfig {
                    listen: "127.0.0.1:0".parse().unwrap(),
                    tls: None,
                    pair_roots: Vec::new(),
                    pair_remotes: Vec::new(),
                };
                let listener = http::bind(&config).await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                listener
                    .serve(served, keys, pair_roots, async {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        let addr = addr_rx.recv().unwrap();
        HttpServer {
            base: format!("http://{addr}"),
            control,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// A token as `prism-syncctl token issue` would get it.
    fn token(&self, role: Role, pairs: &[&str]) -> String {
        self.control
            .issue_token(&TokenRequest {
                role,
                pairs: pairs.iter().map(|p| (*p).to_owned()).collect(),
                ttl_secs: None,
                name: None,
            })
            .unwrap()
            .token
    }

    /// Sends a request with `token` (none when `None`); returns the status,
    /// the parsed body and the `WWW-Authenticate` header.
    fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> (u16, Value, Option<String>) {
        let client = reqwest::blocking::Client::new();
        let mut request = client.request(method.parse().unwrap(), format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = request.send().expect("the listener answers");
        let status = response.status().as_u16();
        let challenge = response
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_owned());
        assert!(
            response
                .headers()
                .get("access-control-allow-origin")
                .is_none(),
            "CORS stays off"
        );
        let text = response.text().unwrap();
        let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
        (status, body, challenge)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The spec's section 9 object with `status` as its code.
fn assert_error(status: u16, body: &Value, expected: u16, context: &str) {
    assert_eq!(status, expected, "{context}: {body}");
    assert_eq!(
        body["error"]["code"],
        expected.to_string(),
        "{context}: {body}"
    );
    assert!(body["error"]["message"].is_string(), "{context}: {body}");
    assert!(body["error"]["details"].is_string(), "{context}: {body}");
}

/// Every endpoint with a request that succeeds for a caller allowed to
/// make it, and the least role that is.
fn endpoints() -> Vec<(&'static str, &'static str, Option<Value>, Option<Role>)> {
    use Role::*;
    vec![
        ("GET", "/status", None, Some(Viewer)),
        ("GET", "/sync/status/sync-1", None, Some(Viewer)),
        ("GET", "/conflicts?all=true", None, Some(Viewer)),
        ("GET", "/changes?limit=5", None, Some(Viewer)),
        ("GET", "/pairs", None, Some(Viewer)),
        (
            "POST",
            "/sync/start",
            Some(json!({"pair": "notes"})),
            Some(Operator),
        ),
        (
            "POST",
            "/sync/resolve",
            Some(json!({"conflict_id": "conflict-5678", "resolution_strategy": "keep_local"})),
            Some(Operator),
        ),
        (
            "POST",
            "/pause",
            Some(json!({"pair": "notes"})),
            Some(Operator),
        ),
        ("POST", "/resume", None, Some(Operator)),
        (
            "POST",
            "/pairs/notes/confirm-deletions",
            None,
            Some(Operator),
        ),
        // A pair names any folder and remote: without api.pair_roots, the
        // local socket's only.
        (
            "POST",
            "/pairs",
            Some(json!({"name": "music", "local": "/home/u/music", "remote": "file:///mnt/music"})),
            None,
        ),
        ("DELETE", "/pairs/photos", None, Some(Admin)),
        ("GET", "/tokens", None, Some(Admin)),
        // Tokens are minted over the local socket only: no role may.
        ("POST", "/tokens", Some(json!({"role": "viewer"})), None),
    ]
}

#[test]
fn every_role_against_every_endpoint() {
    for (method, path, body, least) in endpoints() {
        for role in [
            None,
            Some(Role::Viewer),
            Some(Role::Operator),
            Some(Role::Admin),
        ] {
            // A fresh double each time: a resolve or a removal succeeds once.
            let server = HttpServer::start();
            let token = role.map(|r| server.token(r, &[]));
            let (status, answer, challenge) =
                server.send(method, path, body.clone(), token.as_deref());
            let context = format!("{method} {path} as {role:?}");
            match (role, least) {
                (None, _) => {
                    assert_error(status, &answer, 401, &context);
                    assert_eq!(challenge.as_deref(), Some(r#"Bearer realm="prism-sync""#));
                }
                (Some(role), Some(least)) if role >= least => {
                    assert_eq!(status, 200, "{context}: {answer}");
                    assert!(!answer["error"].is_object(), "{context}: {answer}");
                }
                (Some(_), _) => {
                    assert_error(status, &answer, 403, &context);
                    assert_eq!(
                        challenge.as_deref(),
                        Some(r#"Bearer realm="prism-sync", error="insufficient_scope""#),
                        "{context}"
                    );
                }
            }
        }
    }
}

#[test]
fn a_token_limited_to_a_pair_sees_and_acts_on_that_pair_only() {
    let server = HttpServer::start();
    let photos = server.token(Role::Admin, &["photos"]);
    let token = Some(photos.as_str());
    let (_, status, _) = server.send("GET", "/status", None, token);
    let names: Vec<&str> = status["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["photos"]);
    let (_, pairs, _) = server.send("GET", "/pairs", None, token);
    assert_eq!(pairs["pairs"].as_array().unwrap().len(), 1);
    let (_, conflicts, _) = server.send("GET", "/conflicts?all=true", None, token);
    assert_eq!(
        conflicts["conflicts"],
        json!([]),
        "the conflicts are notes'"
    );
    let (_, changes, _) = server.send("GET", "/changes", None, token);
    let pairs: Vec<&str> = changes["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["pair"].as_str().unwrap())
        .collect();
    assert_eq!(pairs, ["photos"]);

    // Single items of another pair are 404, whether they exist or not.
    for (method, path, body) in [
        ("GET", "/sync/status/sync-1", None),
        ("GET", "/sync/status/sync-999", None),
        ("GET", "/conflicts?pair=notes", None),
        ("GET", "/changes?pair=notes", None),
        ("POST", "/sync/start", Some(json!({"pair": "notes"}))),
        (
            "POST",
            "/sync/resolve",
            Some(json!({"conflict_id": "conflict-5678", "resolution_strategy": "keep_local"})),
        ),
        ("POST", "/pause", Some(json!({"pair": "notes"}))),
        ("POST", "/pairs/notes/confirm-deletions", None),
        ("DELETE", "/pairs/notes", None),
    ] {
        let (status, answer, _) = server.send(method, path, body, token);
        assert_error(status, &answer, 404, &format!("{method} {path}"));
    }
    // Adding pairs and managing tokens need an admin of every pair.
    for (method, path, body) in [
        (
            "POST",
            "/pairs",
            Some(json!({"name": "music", "local": "/m", "remote": "file:///mnt/m"})),
        ),
        ("GET", "/tokens", None),
    ] {
        let (status, answer, _) = server.send(method, path, body, token);
        assert_error(status, &answer, 403, &format!("{method} {path}"));
    }
    // "Every pair" means every pair the token may see.
    let (status, started, _) = server.send("POST", "/sync/start", Some(json!({})), token);
    assert_eq!(status, 200, "{started}");
    assert_eq!(
        started["syncs"],
        json!([{"pair": "photos", "sync_id": "sync-2"}])
    );
    server.send("POST", "/pause", None, token);
    assert_eq!(
        server.control.state.lock().unwrap().paused,
        [Some("photos".to_owned())]
    );
    let state = server.control.state.lock().unwrap();
    assert_eq!(state.pairs.len(), 2, "nothing of notes was touched");
    assert!(state.last_resolve.is_none());
    assert!(state.confirmed.is_empty());
}

#[test]
fn the_token_that_starts_a_sync_or_resolves_a_conflict_is_recorded() {
    let server = HttpServer::start();
    let issued = server
        .control
        .issue_token(&TokenRequest {
            role: Role::Operator,
            pairs: vec![],
            ttl_secs: None,
            name: Some("dashboard".into()),
        })
        .unwrap();
    let token = Some(issued.token.as_str());
    server.send("POST", "/sync/start", Some(json!({"pair": "notes"})), token);
    server.send(
        "POST",
        "/sync/resolve",
        Some(json!({"conflict_id": "conflict-5678", "resolution_strategy": "keep_local"})),
        token,
    );
    let state = server.control.state.lock().unwrap();
    assert_eq!(
        state.started_by,
        [("sync-2".to_owned(), Some(issued.id.clone()))]
    );
    assert_eq!(
        state.resolved_by,
        [("conflict-5678".to_owned(), Some(issued.id))]
    );
}

/// Base64url without padding, as JWTs use it.
fn b64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |n, b| n << 8 | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

fn unb64(text: &str) -> Vec<u8> {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let values: Vec<u32> = text
        .bytes()
        .map(|c| ABC.iter().position(|a| *a == c).unwrap() as u32)
        .collect();
    let mut out = Vec::new();
    for chunk in values.chunks(4) {
        let n = chunk.iter().fold(0u32, |n, v| n << 6 | v) << (6 * (4 - chunk.len()));
        for i in 0..chunk.len() - 1 {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

/// The token's header and claims, decoded.
fn parts(token: &str) -> (Value, Value, String) {
    let mut it = token.split('.');
    let header = serde_json::from_slice(&unb64(it.next().unwrap())).unwrap();
    let claims = serde_json::from_slice(&unb64(it.next().unwrap())).unwrap();
    (header, claims, it.next().unwrap().to_owned())
}

fn join(header: &Value, claims: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    )
}

#[test]
fn forged_expired_and_revoked_tokens_are_401() {
    let server = HttpServer::start();
    let viewer = server.token(Role::Viewer, &[]);
    let (status, _, _) = server.send("GET", "/status", None, Some(&viewer));
    assert_eq!(status, 200, "the genuine token works");
    let (header, claims, signature) = parts(&viewer);
    assert_eq!(header["alg"], "HS256");

    let mut admin_claims = claims.clone();
    admin_claims["role"] = json!("admin");
    let mut tampered_signature = signature.clone();
    tampered_signature.replace_range(
        ..2,
        if signature.starts_with("AA") {
            "BB"
        } else {
            "AA"
        },
    );
    let mut later = claims.clone();
    later["exp"] = json!(claims["exp"].as_u64().unwrap() + 3600);

    // The same claims under another key, another algorithm with the same
    // secret, and one the agent recorded but that has expired.
    let id = claims["sub"].as_str().unwrap().to_owned();
    let other_agent = TokenKeys::from_secret(&[1; 32]).sign(
        &Grant {
            id: id.clone(),
            role: Role::Viewer,
            pairs: vec![],
        },
        SystemTime::now(),
        SystemTime::now() + Duration::from_secs(600),
    );
    let hs512 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS512),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(&[42; 32]),
    )
    .unwrap();
    let expired_id = "tok-00000000000000ee";
    server.control.state.lock().unwrap().tokens.push(TokenInfo {
        id: expired_id.into(),
        name: None,
        role: Role::Viewer,
        pairs: vec![],
        issued_at: "2025-02-09T16:00:00.000Z".into(),
        expires_at: "2025-02-09T17:00:00.000Z".into(),
        revoked_at: None,
    });
    let past = SystemTime::now() - Duration::from_secs(7200);
    let expired = server.control.keys.sign(
        &Grant {
            id: expired_id.into(),
            role: Role::Viewer,
            pairs: vec![],
        },
        past,
        past + Duration::from_secs(3600),
    );

    let forgeries = [
        (
            "a tampered signature",
            join(&header, &claims, &tampered_signature),
        ),
        (
            "a changed role claim",
            join(&header, &admin_claims, &signature),
        ),
        ("a later expiry", join(&header, &later, &signature)),
        (
            "alg none",
            join(&json!({"alg": "none", "typ": "JWT"}), &claims, ""),
        ),
        (
            "alg none, admin",
            join(&json!({"alg": "none"}), &admin_claims, ""),
        ),
        ("another algorithm", hs512),
        ("another agent's key", other_agent),
        ("an expired token", expired),
        ("not a JWT", "hello".to_owned()),
    ];
    for (what, token) in &forgeries {
        let (status, body, challenge) = server.send("GET", "/status", None, Some(token));
        assert_error(status, &body, 401, what);
        assert_eq!(
            challenge.as_deref(),
            Some(r#"Bearer realm="prism-sync", error="invalid_token""#),
            "{what}"
        );
    }

    server.control.revoke_token(&id).unwrap();
    let (status, body, _) = server.send("GET", "/status", None, Some(&viewer));
    assert_error(status, &body, 401, "a revoked token");
    assert!(
        body["error"]["details"]
            .as_str()
            .unwrap()
            .contains("revoked")
    );
}

#[test]
fn http_errors_carry_the_spec_error_object() {
    let server = HttpServer::start();
    let admin = server.token(Role::Admin, &[]);
    let token = Some(admin.as_str());
    let (status, body, _) = server.send("GET", "/no/such/endpoint", None, token);
    assert_error(status, &body, 404, "unknown endpoint");
    let (status, body, _) = server.send("GET", "/sync/start", None, token);
    assert_error(status, &body, 405, "wrong method");
    let (status, body, _) = server.send("GET", "/changes?colour=red", None, token);
    assert_error(status, &body, 400, "unknown parameter");

    let client = reqwest::blocking::Client::new();
    let response = client
        .post(format!("{}/sync/start", server.base))
        .bearer_auth(&admin)
        .body("{not json")
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);

    // The listener refuses an oversized body by its Content-Length and
    // closes without reading it; a client still writing the body may see
    // its write fail before it reads the answer. So the request goes over a
    // plain socket that announces 2 MiB, sends none of it and reads the 413.
    let address = server.base.trim_start_matches("http://");
    let mut socket = std::net::TcpStream::connect(address).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        socket,
        "POST /sync/start HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {admin}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        2 * 1024 * 1024
    )
    .unwrap();
    let mut answer = String::new();
    socket.read_to_string(&mut answer).unwrap();
    let status_line = answer.lines().next().unwrap_or_default();
    assert!(status_line.starts_with("HTTP/1.1 413"), "{answer}");
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    let body: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("{answer}"));
    assert_eq!(body["error"]["code"], "413");
}

#[test]
fn credentials_given_to_sync_start_are_never_echoed() {
    let server = HttpServer::start();
    let operator = server.token(Role::Operator, &[]);
    for username in ["user", "mallory"] {
        let (_, body, _) = server.send(
            "POST",
            "/sync/start",
            Some(json!({"pair": "notes", "credentials": {"username": username, "password": "hunter2"}})),
            Some(&operator),
        );
        assert!(!body.to_string().contains("hunter2"), "{body}");
    }
    let (_, body, _) = server.send(
        "POST",
        "/sync/start",
        Some(json!({"credentials": {"username": "user", "password": 12345}})),
        Some(&operator),
    );
    assert!(!body.to_string().contains("12345"), "{body}");
}

#[test]
fn the_openapi_document_is_served_without_a_token_and_names_every_endpoint() {
    let server = HttpServer::start();
    let response = reqwest::blocking::get(format!("{}/openapi.json", server.base)).unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let document: Value = serde_json::from_str(&response.text().unwrap()).unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    for (method, path, _, least) in endpoints() {
        let path = path.split('?').next().unwrap();
        let templated = match path {
            "/sync/status/sync-1" => "/sync/status/{sync_id}",
            "/pairs/photos" => "/pairs/{name}",
            "/pairs/notes/confirm-deletions" => "/pairs/{name}/confirm-deletions",
            other => other,
        };
        let operation = &document["paths"][templated][method.to_lowercase()];
        // POST /tokens belongs to the socket: not an HTTP operation. POST
        // /pairs is an admin's where api.pair_roots allows it (this server
        // has none, so no role may).
        let over_http = least.is_some() || (method, templated) == ("POST", "/pairs");
        assert_eq!(operation.is_object(), over_http, "{method} {templated}");
    }
}

#[test]
fn a_405_says_what_is_allowed_and_an_age_before_1970_means_everything() {
    let server = HttpServer::start();
    let admin = server.token(Role::Admin, &[]);
    let client = reqwest::blocking::Client::new();
    let response = client
        .delete(format!("{}/status", server.base))
        .bearer_auth(&admin)
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 405);
    assert_eq!(response.headers()["allow"], "GET");
    // Formatting a time 27,000 years ago once panicked the request.
    let (status, body, _) = server.send("GET", "/changes?since=10000000d", None, Some(&admin));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["changes"].as_array().unwrap().len(), 4);
    // Every body is an object; `null` is not "no body".
    let (status, body, _) = server.send("POST", "/pause", Some(Value::Null), Some(&admin));
    assert_error(status, &body, 400, "a null body");
}

#[test]
fn a_client_that_stops_sending_its_headers_is_disconnected() {
    use std::io::{Read, Write};
    let server = HttpServer::start();
    let addr = server.base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(http::REQUEST_TIMEOUT + Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET /status HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let started = std::time::Instant::now();
    let mut answer = Vec::new();
    // The server closes the connection (after a 408 at most); a read that
    // times out instead would fail here.
    stream
        .read_to_end(&mut answer)
        .expect("the connection is closed, not left open");
    let waited = started.elapsed();
    assert!(
        waited >= http::REQUEST_TIMEOUT - Duration::from_secs(1),
        "closed after {waited:?}"
    );
    assert!(
        !String::from_utf8_lossy(&answer).contains("200 OK"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
}

#[test]
fn a_token_may_not_name_a_merged_file_nor_learn_where_the_agent_keeps_its_state() {
    let server = HttpServer::start();
    for role in [Role::Operator, Role::Admin] {
        let token = server.token(role, &[]);
        // The signing key would be synced to the remote, and with the
        // journal it would sign tokens of any role.
        let (status, body, challenge) = server.send(
            "POST",
            "/sync/resolve",
            Some(json!({
                "conflict_id": "conflict-5678",
                "resolution_strategy": "manual",
                "merged_file": "/home/u/.local/share/prism-sync/api-token.key",
            })),
            Some(&token),
        );
        assert_error(status, &body, 403, &format!("merged_file as {role:?}"));
        assert_eq!(
            challenge.as_deref(),
            Some(r#"Bearer realm="prism-sync", error="insufficient_scope""#)
        );
        assert!(server.control.state.lock().unwrap().last_resolve.is_none());

        let (status, body, _) = server.send("GET", "/status", None, Some(&token));
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["agent"]["state_dir"], Value::Null, "{body}");
        assert_eq!(body["agent"]["socket"], Value::Null, "{body}");
        assert!(!body.to_string().contains("prism-sync/"), "{body}");
    }
    // Manual without a file (keep both versions) is still a token's to ask.
    let operator = server.token(Role::Operator, &[]);
    let (status, body, _) = server.send(
        "POST",
        "/sync/resolve",
        Some(json!({"conflict_id": "conflict-5678", "resolution_strategy": "manual"})),
        Some(&operator),
    );
    assert_eq!(status, 200, "{body}");
}

#[test]
fn clients_that_never_read_their_answers_cannot_hold_every_connection() {
    use std::io::Write;
    let server = HttpServer::start();
    let addr = server.base.trim_start_matches("http://").to_owned();
    // Each asks for the OpenAPI document (no token needed) and reads none
    // of it; with a small receive window the answer fills the buffers.
    // (hyper's header timeout for the next request already frees a slot
    // whose answer it queued whole; a streamed answer, an event stream,
    // is freed by the agent's write timeout.)
    let hogs: Vec<std::net::TcpStream> = (0..http::MAX_CONNECTIONS)
        .map(|_| {
            let mut stream = small_window_connection(&addr);
            stream
                .write_all(b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            stream
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let started = std::time::Instant::now();
    let client = reqwest::blocking::Client::builder()
        .timeout(http::WRITE_STALL_TIMEOUT + Duration::from_secs(20))
        .build()
        .unwrap();
    let response = client
        .get(format!("{}/openapi.json", server.base))
        .send()
        .expect("a slot frees once the stalled writes time out");
    assert_eq!(response.status().as_u16(), 200);
    assert!(
        started.elapsed() < http::WRITE_STALL_TIMEOUT + Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    drop(hogs);
}

#[test]
fn event_streams_are_limited_per_token_and_in_all() {
    let server = HttpServer::start();
    let client = reqwest::blocking::Client::new();
    let open = |token: &str| {
        client
            .get(format!("{}/events", server.base))
            .bearer_auth(token)
            .send()
            .unwrap()
    };
    let per_token = http::MAX_STREAMS_PER_TOKEN;
    let tokens: Vec<String> = (0..=http::MAX_STREAMS / per_token)
        .map(|_| server.token(Role::Viewer, &[]))
        .collect();
    let mut streams = Vec::new();
    for token in &tokens[..http::MAX_STREAMS / per_token] {
        for _ in 0..per_token {
            let response = open(token);
            assert_eq!(response.status().as_u16(), 200);
            streams.push(response);
        }
    }
    let refused = |response: reqwest::blocking::Response, context: &str| {
        let status = response.status().as_u16();
        let body: Value = serde_json::from_str(&response.text().unwrap()).unwrap();
        assert_error(status, &body, 429, context);
    };
    refused(open(&tokens[0]), "one stream more than a token may hold");
    let last = tokens.last().unwrap();
    refused(open(last), "one stream more than the agent serves");
    // A closed stream gives its place back (once the agent notices).
    drop(streams.pop());
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    loop {
        let response = open(last);
        if response.status().as_u16() == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the place stays taken"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A TCP connection to `addr` (IPv4) whose receive buffer is as small as
/// the system allows, so an answer it does not read stays unsent.
fn small_window_connection(addr: &str) -> std::net::TcpStream {
    use std::os::fd::FromRawFd;
    let addr: std::net::SocketAddrV4 = addr.parse().unwrap();
    // SAFETY: plain socket calls on a descriptor this function owns; the
    // structures passed are initialized and their sizes given.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let size: libc::c_int = 1;
        let set = libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        assert_eq!(set, 0, "SO_RCVBUF: {}", std::io::Error::last_os_error());
        let sockaddr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: addr.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*addr.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        let connected = libc::connect(
            fd,
            (&sockaddr as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(connected, 0, "connect: {}", std::io::Error::last_os_error());
        std::net::TcpStream::from_raw_fd(fd)
    }
}

#[test]
fn a_limited_token_may_not_change_the_password_a_hidden_pair_logs_in_with() {
    let server = HttpServer::start();
    {
        let mut state = server.control.state.lock().unwrap();
        let mut backup = state.pairs[0].clone();
        backup.name = "backup".into();
        // The same account as notes (sftp://nas.example/notes).
        backup.remote = "sftp://nas.example/backup".into();
        state.pairs.push(backup);
    }
    let body =
        json!({"pair": "backup", "credentials": {"username": "user", "password": "hunter2"}});
    let backup_only = server.token(Role::Operator, &["backup"]);
    let (status, answer, _) = server.send(
        "POST",
        "/sync/start",
        Some(body.clone()),
        Some(&backup_only),
    );
    assert_error(status, &answer, 403, "a password notes uses too");
    assert!(!answer.to_string().contains("notes"), "{answer}");
    assert!(
        server
            .control
            .state
            .lock()
            .unwrap()
            .stored_credentials
            .is_empty()
    );

    // A token that sees every pair using the account may.
    let both = server.token(Role::Operator, &["backup", "notes"]);
    let (status, answer, _) = server.send("POST", "/sync/start", Some(body), Some(&both));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        server.control.state.lock().unwrap().stored_credentials,
        [("backup".to_owned(), "user".to_owned(), 1)]
    );
}

/// The names of the pairs `GET /pairs` lists.
fn pair_names(server: &HttpServer, token: &str) -> Vec<String> {
    let (status, answer, _) = server.send("GET", "/pairs", None, Some(token));
    assert_eq!(status, 200, "{answer}");
    answer["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn without_pair_roots_no_token_adds_a_pair_and_the_answer_says_how_to_allow_it() {
    let server = HttpServer::start();
    for role in [Role::Viewer, Role::Operator, Role::Admin] {
        let token = server.token(role, &[]);
        let body = json!({"name": "music", "local": "/srv/music", "remote": "sftp://nas/m"});
        let (status, answer, _) = server.send("POST", "/pairs", Some(body), Some(&token));
        assert_error(status, &answer, 403, &format!("{role:?}"));
        let details = answer["error"]["details"].as_str().unwrap();
        assert!(details.contains("api.pair_roots"), "{details}");
        assert!(details.contains("prism-syncctl pair add"), "{details}");
    }
    assert_eq!(server.control.state.lock().unwrap().pairs.len(), 2);
}

#[test]
fn an_admin_adds_pairs_inside_the_pair_roots_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = |rel: &str| dir.path().join(rel);
    let text = |rel: &str| path(rel).to_str().unwrap().to_owned();
    // The agent's state dir lies inside the root.
    for folder in ["shared/state", "outside"] {
        std::fs::create_dir_all(path(folder)).unwrap();
    }
    std::os::unix::fs::symlink(path("outside"), path("shared/escape")).unwrap();
    // Network remotes on nas below /m only.
    let allowed = match RemoteUrl::parse("sftp://nas/m").unwrap().reach() {
        Reach::Server(place) => place,
        other => panic!("{other:?}"),
    };
    let roots = PairRoots::new(
        vec![path("shared")],
        vec![path("shared/state")],
        vec![allowed],
    );
    let server = HttpServer::start_with(roots);
    let admin = server.token(Role::Admin, &[]);
    let viewer = server.token(Role::Viewer, &[]);
    let add = |name: &str, local: String, remote: &str, token: &str| {
        let body = json!({"name": name, "local": local, "remote": remote});
        server.send("POST", "/pairs", Some(body), Some(token))
    };

    // Refused: each says which rule, and nothing is added.
    let operator = server.token(Role::Operator, &[]);
    let limited_admin = server.token(Role::Admin, &["notes"]);
    for (context, (status, answer, challenge), says) in [
        (
            "operator",
            add("music", text("shared/music"), "sftp://nas/m", &operator),
            "admin token valid for every pair",
        ),
        (
            "admin limited to a pair",
            add(
                "music",
                text("shared/music"),
                "sftp://nas/m",
                &limited_admin,
            ),
            "valid for every pair",
        ),
        (
            "outside the roots",
            add("music", text("outside/music"), "sftp://nas/m", &admin),
            "not inside any folder of api.pair_roots",
        ),
        (
            "through a symbolic link",
            add("music", text("shared/escape/music"), "sftp://nas/m", &admin),
            "symbolic link",
        ),
        (
            "a file remote outside the roots",
            add(
                "music",
                text("shared/music"),
                &format!("file://{}", text("outside/m")),
                &admin,
            ),
            "the remote's folder",
        ),
        (
            "the state dir",
            add("music", text("shared/state/music"), "sftp://nas/m", &admin),
            "the agent's own files",
        ),
        (
            "a server not in api.pair_remotes",
            add(
                "music",
                text("shared/music"),
                "sftp://build-server/home/me/.ssh",
                &admin,
            ),
            "api.pair_remotes",
        ),
        (
            "a folder of the server outside api.pair_remotes",
            add("music", text("shared/music"), "sftp://nas/m2", &admin),
            "api.pair_remotes",
        ),
        (
            "a git server not in api.pair_remotes",
            add(
                "music",
                text("shared/music"),
                "git+ssh://git@github.com/me/private.git",
                &admin,
            ),
            "api.pair_remotes",
        ),
        (
            "an rclone remote",
            add("music", text("shared/music"), "rclone::local:/home", &admin),
            "local socket",
        ),
    ] {
        assert_error(status, &answer, 403, context);
        assert_eq!(
            challenge.as_deref(),
            Some(r#"Bearer realm="prism-sync", error="insufficient_scope""#),
            "{context}"
        );
        let details = answer["error"]["details"].as_str().unwrap();
        assert!(details.contains(says), "{context}: {details}");
        for remote in ["build-server", "github", "nas/m"] {
            assert!(!details.contains(remote), "{context}: {details}");
        }
        assert_eq!(
            pair_names(&server, &viewer),
            ["notes", "photos"],
            "{context}"
        );
    }

    // A remote with a secret in it is refused without the secret.
    let (status, answer, _) = add(
        "music",
        text("shared/music"),
        "rclone::sftp,host=nas,pass=hunter2:music",
        &admin,
    );
    assert_error(status, &answer, 400, "a secret in an rclone remote");
    assert!(!answer.to_string().contains("hunter2"), "{answer}");
    for remote in ["me:hunter2@nas/backup", "file://me:hunter2@nas/x"] {
        let (status, answer, _) = add("music", text("shared/music"), remote, &admin);
        assert_error(status, &answer, 400, remote);
        assert!(!answer.to_string().contains("hunter2"), "{answer}");
    }

    // Inside the roots, with a network remote of api.pair_remotes or a
    // folder remote inside the roots too, an admin of every pair may.
    let (status, answer, _) = add("music", text("shared/music"), "sftp://nas/m", &admin);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["name"], "music");
    let (status, answer, _) = add(
        "films",
        text("shared/films"),
        &format!("file://{}", text("shared/films-backup")),
        &admin,
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        pair_names(&server, &viewer),
        ["notes", "photos", "music", "films"]
    );

    // Removing a pair stays the admin's.
    let (status, answer, _) = server.send("DELETE", "/pairs/music", None, Some(&operator));
    assert_error(status, &answer, 403, "an operator removes a pair");
    let (status, answer, _) = server.send("DELETE", "/pairs/music", None, Some(&admin));
    assert_eq!(status, 200, "{answer}");
}

/// Answers to GETs over a kilobyte go gzipped to a client that asks; an
/// answer to a POST and a small one never do.
#[test]
fn large_get_answers_are_gzipped_when_asked_and_posts_never_are() {
    use std::io::Read as _;
    let server = HttpServer::start();
    let admin = server.token(Role::Admin, &[]);
    let client = reqwest::blocking::Client::new();
    let get = |path: &str, encoding: Option<&str>| {
        let mut request = client
            .get(format!("{}{path}", server.base))
            .bearer_auth(&admin);
        if let Some(encoding) = encoding {
            request = request.header("accept-encoding", encoding);
        }
        request.send().unwrap()
    };
    let plain = get("/openapi.json", None);
    assert!(plain.headers().get("content-encoding").is_none());
    let plain = plain.bytes().unwrap();
    let zipped = get("/openapi.json", Some("gzip"));
    assert_eq!(zipped.status().as_u16(), 200);
    assert_eq!(zipped.headers()["content-encoding"], "gzip");
    assert!(
        zipped.headers()["vary"]
            .to_str()
            .unwrap()
            .to_ascii_lowercase()
            .contains("accept-encoding")
    );
    let zipped = zipped.bytes().unwrap();
    assert!(
        zipped.len() * 3 < plain.len(),
        "{} vs {}",
        zipped.len(),
        plain.len()
    );
    let mut unzipped = Vec::new();
    flate2::read::GzDecoder::new(&zipped[..])
        .read_to_end(&mut unzipped)
        .unwrap();
    assert_eq!(unzipped, plain);
    // Not asked, or not gzip: plain.
    let other = get("/openapi.json", Some("br"));
    assert!(other.headers().get("content-encoding").is_none());

    // A small answer stays as it is.
    let small = get("/conflicts?all=true", Some("gzip"));
    assert_eq!(small.status().as_u16(), 200);
    assert!(small.headers().get("content-encoding").is_none());

    // An answer to a POST is not compressed.
    let started = client
        .post(format!("{}/sync/start", server.base))
        .bearer_auth(&admin)
        .header("accept-encoding", "gzip")
        .header("content-type", "application/json")
        .body(json!({"pair": "notes"}).to_string())
        .send()
        .unwrap();
    assert!(started.headers().get("content-encoding").is_none());
    let started: Value = serde_json::from_slice(&started.bytes().unwrap()).unwrap();
    assert!(started.is_object(), "{started}");
}
