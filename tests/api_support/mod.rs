//! Shared by the API tests: an in-memory [`Control`] (the test double of the
//! daemon, not of any I/O), a real server on a real socket in a temporary
//! directory, and a raw frame client that speaks the wire format by hand so
//! the tests check the bytes, not just our own client's view of them.

// Each test crate that includes this module uses a different part of it.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;

use prism_sync::api::auth::{self, Grant, TokenKeys};
use prism_sync::api::wire::*;
use prism_sync::api::{self, ApiError, Control, ServeError};
use serde_json::{Value, json};

/// What the test double remembers; tests read it to see what the daemon
/// would have been asked.
#[derive(Default)]
pub struct State {
    pub pairs: Vec<PairInfo>,
    pub paused: Vec<Option<String>>,
    pub syncs: Vec<SyncStatus>,
    pub conflicts: Vec<ConflictInfo>,
    pub changes: Vec<Change>,
    pub confirmed: Vec<String>,
    pub last_changes_query: Option<ChangesQuery>,
    pub last_resolve: Option<ResolveRequest>,
    /// `(pair, username)` of every password the double was asked to keep,
    /// in order, with how many syncs had started by then.
    pub stored_credentials: Vec<(String, String, usize)>,
    /// Every token issued, and who started each sync and resolved each
    /// conflict (`(id, token)`).
    pub tokens: Vec<TokenInfo>,
    pub started_by: Vec<(String, Option<String>)>,
    pub resolved_by: Vec<(String, Option<String>)>,
}

pub struct MemControl {
    pub state: Mutex<State>,
    pub keys: Arc<TokenKeys>,
    /// The event log `GET /events` streams from (it finds no events: the
    /// double's state changes only when a test changes it).
    pub events: Arc<api::events::EventLog>,
}

fn conflict(id: &str, path: &str, remote_deleted: bool) -> ConflictInfo {
    ConflictInfo {
        conflict_id: id.into(),
        file_path: path.into(),
        local_version: Version {
            hash: Some("abc123".into()),
            modified_at: Some("2025-02-09T12:00:00.000Z".into()),
        },
        remote_version: if remote_deleted {
            Version::default()
        } else {
            Version {
                hash: Some("def456".into()),
                modified_at: Some("2025-02-09T13:00:00.000Z".into()),
            }
        },
        status: ConflictStatus::Unresolved,
        pair: "notes".into(),
        kind: if remote_deleted {
            "local_modified_remote_deleted".into()
        } else {
            "both_modified".into()
        },
        detected_at: "2025-02-09T13:05:00.000Z".into(),
        copy_path: (!remote_deleted).then(|| format!("{path}.conflict-20250209-130500-nas")),
        strategy: None,
        note: None,
        resolved_at: None,
    }
}

fn change(kind: ChangeKind, path: &str, timestamp: &str, pair: &str) -> Change {
    Change {
        kind,
        path: path.into(),
        timestamp: timestamp.into(),
        pair: pair.into(),
        from_path: (kind == ChangeKind::Moved).then(|| "old_docs/page.md".into()),
        origin_side: Side::Local,
        origin_device: Some("laptop".into()),
        origin_at: Some(timestamp.into()),
        sync_id: Some("sync-1".into()),
        hash: (kind != ChangeKind::Deleted).then(|| "abc123".into()),
        size: (kind != ChangeKind::Deleted).then_some(42),
    }
}

impl MemControl {
    /// Two pairs, one finished sync with one conflict, a resolved
    /// delete-versus-modify conflict, and a short change log.
    pub fn with_fixture() -> MemControl {
        let page = conflict("conflict-5678", "docs/page.md", false);
        let mut gone = conflict("conflict-9", "docs/gone.md", true);
        gone.status = ConflictStatus::Resolved;
        gone.strategy = Some(Strategy::KeepLocal);
        gone.resolved_at = Some("2025-02-09T14:00:00.000Z".into());
        let state = State {
            pairs: vec![
                PairInfo {
                    name: "notes".into(),
                    local: "/home/u/notes".into(),
                    remote: "sftp://nas.example/notes".into(),
                    conflict: Strategy::Manual,
                    ignore: vec!["*.tmp".into()],
                    write_guarantee: WriteGuarantee::Conditional,
                },
                PairInfo {
                    name: "photos".into(),
                    local: "/home/u/photos".into(),
                    remote: "file:///mnt/nas/photos".into(),
                    conflict: Strategy::KeepLocal,
                    ignore: vec![],
                    write_guarantee: WriteGuarantee::Conditional,
                },
            ],
            syncs: vec![SyncStatus {
                status: SyncState::CompletedWithConflicts,
                last_synced_at: Some("2025-02-09T13:05:01.000Z".into()),
                conflicts: vec![page.clone()],
                sync_id: "sync-1".into(),
                pair: "notes".into(),
                started_at: "2025-02-09T13:04:00.000Z".into(),
                finished_at: Some("2025-02-09T13:05:01.000Z".into()),
                counts: SyncCounts {
                    uploaded: 3,
                    downloaded: 2,
                    conflicts: 1,
                    bytes_up: 4096,
                    bytes_down: 100,
                    ..SyncCounts::default()
                },
                error: None,
            }],
            conflicts: vec![page, gone],
            changes: vec![
                change(
                    ChangeKind::Modified,
                    "docs/page.md",
                    "2025-02-09T12:00:00.000Z",
                    "notes",
                ),
                change(
                    ChangeKind::Moved,
                    "docs/page2.md",
                    "2025-02-09T11:45:00.000Z",
                    "notes",
                ),
                change(
                    ChangeKind::Deleted,
                    "old_docs/obsolete.md",
                    "2025-02-09T11:30:00.000Z",
                    "notes",
                ),
                change(
                    ChangeKind::Created,
                    "2025/beach.jpg",
                    "2025-02-08T10:00:00.000Z",
                    "photos",
                ),
            ],
            ..State::default()
        };
        MemControl {
            state: Mutex::new(state),
            keys: Arc::new(TokenKeys::from_secret(&[42; 32])),
            events: Arc::new(api::events::EventLog::default()),
        }
    }

    fn known_pair(state: &State, name: &str) -> Result<(), ApiError> {
        if state.pairs.iter().any(|p| p.name == name) {
            Ok(())
        } else {
            Err(ApiError::not_found(format!("no pair named {name:?}")))
        }
    }
}

impl Control for MemControl {
    fn events(&self) -> Option<Arc<api::events::EventLog>> {
        Some(self.events.clone())
    }

    fn status(&self) -> AgentStatus {
        let state = self.state.lock().unwrap();
        let pairs = state
            .pairs
            .iter()
            .map(|p| PairStatus {
                name: p.name.clone(),
                local: p.local.clone(),
                remote: p.remote.clone(),
                state: if p.name == "notes" {
                    PairState::Syncing
                } else {
                    PairState::Idle
                },
                state_detail: if p.name == "notes" {
                    "syncing 1 file".into()
                } else {
                    String::new()
                },
                last_sync: state
                    .syncs
                    .iter()
                    .find(|s| s.pair == p.name)
                    .map(|s| LastSync {
                        sync_id: s.sync_id.clone(),
                        status: s.status,
                        finished_at: s.finished_at.clone(),
                    }),
                pending: 2,
                unresolved_conflicts: state
                    .conflicts
                    .iter()
                    .filter(|c| c.pair == p.name && c.status == ConflictStatus::Unresolved)
                    .count() as u64,
                transfers: if p.name == "notes" {
                    vec![Transfer {
                        path: "docs/big.pdf".into(),
                        direction: Direction::Upload,
                        bytes_done: 1024,
                        bytes_total: 4096,
                    }]
                } else {
                    vec![]
                },
                problems: vec![],
                watcher: "ok".into(),
                write_guarantee: p.write_guarantee,
                remote_transport: None,
            })
            .collect();
        AgentStatus::new(
            AgentInfo {
                version: "0.1.0".into(),
                device: "laptop".into(),
                pid: std::process::id(),
                started_at: "2025-02-09T10:00:00.000Z".into(),
                state_dir: Some("/home/u/.local/share/prism-sync".into()),
                socket: Some("/run/user/1000/prism-sync/prism-syncd.sock".into()),
            },
            pairs,
        )
    }

    fn start_sync(
        &self,
        pair: Option<&str>,
        by: Option<&str>,
    ) -> Result<Vec<SyncStarted>, ApiError> {
        if pair == Some("explode") {
            panic!("the test double was asked to panic");
        }
        let mut state = self.state.lock().unwrap();
        let names: Vec<String> = match pair {
            Some(name) => {
                Self::known_pair(&state, name)?;
                vec![name.to_owned()]
            }
            None => state.pairs.iter().map(|p| p.name.clone()).collect(),
        };
        let mut started = Vec::new();
        for name in names {
            let sync_id = format!("sync-{}", state.syncs.len() + 1);
            state.syncs.push(SyncStatus {
                status: SyncState::SyncInProgress,
                last_synced_at: None,
                conflicts: vec![],
                sync_id: sync_id.clone(),
                pair: name.clone(),
                started_at: "2025-02-09T16:00:00.000Z".into(),
                finished_at: None,
                counts: SyncCounts::default(),
                error: None,
            });
            state
                .started_by
                .push((sync_id.clone(), by.map(str::to_owned)));
            started.push(SyncStarted {
                pair: name,
                sync_id,
            });
        }
        Ok(started)
    }

    fn sync_status(&self, sync_id: &str) -> Result<SyncStatus, ApiError> {
        let state = self.state.lock().unwrap();
        state
            .syncs
            .iter()
            .find(|s| s.sync_id == sync_id)
            .cloned()
            .ok_or_else(|| ApiError::not_found(format!("no sync run {sync_id:?}")))
    }

    fn conflicts(
        &self,
        pair: Option<&str>,
        include_resolved: bool,
    ) -> Result<Vec<ConflictInfo>, ApiError> {
        let state = self.state.lock().unwrap();
        if let Some(pair) = pair {
            Self::known_pair(&state, pair)?;
        }
        Ok(state
            .conflicts
            .iter()
            .filter(|c| pair.is_none_or(|p| c.pair == p))
            .filter(|c| include_resolved || c.status == ConflictStatus::Unresolved)
            .cloned()
            .collect())
    }

    fn conflict(&self, conflict_id: &str) -> Result<ConflictInfo, ApiError> {
        let state = self.state.lock().unwrap();
        state
            .conflicts
            .iter()
            .find(|c| c.conflict_id == conflict_id)
            .cloned()
            .ok_or_else(|| ApiError::not_found(format!("no conflict {conflict_id:?}")))
    }

    fn resolve(&self, req: &ResolveRequest, by: Option<&str>) -> Result<ResolveResponse, ApiError> {
        let mut state = self.state.lock().unwrap();
        state.last_resolve = Some(req.clone());
        state
            .resolved_by
            .push((req.conflict_id.clone(), by.map(str::to_owned)));
        let conflict = state
            .conflicts
            .iter_mut()
            .find(|c| c.conflict_id == req.conflict_id)
            .ok_or_else(|| ApiError::not_found(format!("no conflict {:?}", req.conflict_id)))?;
        if conflict.status == ConflictStatus::Resolved {
            return Err(ApiError::conflict("Conflict already resolved")
                .with_details(format!("{} was resolved before", req.conflict_id)));
        }
        conflict.status = ConflictStatus::Resolved;
        conflict.strategy = Some(req.resolution_strategy);
        conflict.resolved_at = Some("2025-02-09T17:00:00.000Z".into());
        Ok(ResolveResponse {
            status: ConflictStatus::Resolved,
            resolved_at: conflict.resolved_at.clone(),
            note: None,
        })
    }

    fn changes(&self, query: &ChangesQuery) -> Result<ChangeLog, ApiError> {
        let mut state = self.state.lock().unwrap();
        state.last_changes_query = Some(query.clone());
        let changes = state
            .changes
            .iter()
            .filter(|c| query.pair.as_ref().is_none_or(|p| c.pair == *p))
            .filter(|c| query.since.as_ref().is_none_or(|t| c.timestamp >= *t))
            .filter(|c| {
                query
                    .path
                    .as_ref()
                    .is_none_or(|p| c.path.starts_with(p.as_str()))
            })
            .filter(|c| {
                query
                    .device
                    .as_ref()
                    .is_none_or(|d| c.origin_device.as_ref() == Some(d))
            })
            .take(query.limit as usize)
            .cloned()
            .collect();
        Ok(ChangeLog { changes })
    }

    fn pause(&self, pair: Option<&str>) -> Result<(), ApiError> {
        let mut state = self.state.lock().unwrap();
        if let Some(pair) = pair {
            Self::known_pair(&state, pair)?;
        }
        state.paused.push(pair.map(str::to_owned));
        Ok(())
    }

    fn resume(&self, pair: Option<&str>) -> Result<(), ApiError> {
        let mut state = self.state.lock().unwrap();
        if let Some(pair) = pair {
            Self::known_pair(&state, pair)?;
        }
        state.paused.retain(|p| p.as_deref() != pair);
        Ok(())
    }

    fn pair_add(&self, spec: &PairSpec) -> Result<PairInfo, ApiError> {
        let mut state = self.state.lock().unwrap();
        if state.pairs.iter().any(|p| p.name == spec.name) {
            return Err(ApiError::conflict(format!(
                "a pair named {:?} exists",
                spec.name
            )));
        }
        let info = PairInfo {
            name: spec.name.clone(),
            local: spec.local.clone(),
            remote: spec.remote.clone(),
            conflict: spec.conflict.unwrap_or(Strategy::Manual),
            ignore: spec.ignore.clone(),
            write_guarantee: WriteGuarantee::Conditional,
        };
        state.pairs.push(info.clone());
        Ok(info)
    }

    fn pair_list(&self) -> Result<Vec<PairInfo>, ApiError> {
        Ok(self.state.lock().unwrap().pairs.clone())
    }

    fn pair_remove(&self, name: &str) -> Result<(), ApiError> {
        let mut state = self.state.lock().unwrap();
        Self::known_pair(&state, name)?;
        state.pairs.retain(|p| p.name != name);
        Ok(())
    }

    fn confirm_deletions(&self, pair: &str) -> Result<(), ApiError> {
        let mut state = self.state.lock().unwrap();
        Self::known_pair(&state, pair)?;
        state.confirmed.push(pair.to_owned());
        Ok(())
    }

    fn store_credentials(&self, pair: &str, credentials: &Credentials) -> Result<bool, ApiError> {
        let mut state = self.state.lock().unwrap();
        Self::known_pair(&state, pair)?;
        let remote = &state.pairs.iter().find(|p| p.name == pair).unwrap().remote;
        if remote.starts_with("file://") {
            return Ok(false);
        }
        if credentials.username == "mallory" {
            return Err(ApiError::bad_request("not the pair's user"));
        }
        let started = state.syncs.len();
        state
            .stored_credentials
            .push((pair.to_owned(), credentials.username.clone(), started));
        Ok(true)
    }

    /// Pairs whose remotes have the same scheme and authority log in
    /// with the same account; `file://` takes no login.
    fn pairs_sharing_login(&self, pair: &str) -> Result<Vec<String>, ApiError> {
        let state = self.state.lock().unwrap();
        Self::known_pair(&state, pair)?;
        let login = |remote: &str| -> Option<(String, String)> {
            let (scheme, rest) = remote.split_once("://")?;
            let authority = rest.split('/').next()?;
            (scheme != "file").then(|| (scheme.to_owned(), authority.to_owned()))
        };
        let remote = &state.pairs.iter().find(|p| p.name == pair).unwrap().remote;
        let Some(mine) = login(remote) else {
            return Ok(Vec::new());
        };
        Ok(state
            .pairs
            .iter()
            .filter(|p| p.name != pair && login(&p.remote).as_ref() == Some(&mine))
            .map(|p| p.name.clone())
            .collect())
    }

    fn issue_token(&self, req: &TokenRequest) -> Result<IssuedToken, ApiError> {
        let mut state = self.state.lock().unwrap();
        for pair in &req.pairs {
            Self::known_pair(&state, pair)?;
        }
        let now = std::time::SystemTime::now();
        let expires = auth::expiry(now, req.ttl_secs)?;
        let grant = Grant {
            id: auth::new_token_id(),
            role: req.role,
            pairs: req.pairs.clone(),
        };
        state.tokens.push(TokenInfo {
            id: grant.id.clone(),
            name: req.name.clone(),
            role: req.role,
            pairs: req.pairs.clone(),
            issued_at: "2025-02-09T16:00:00.000Z".into(),
            expires_at: "2099-01-01T00:00:00.000Z".into(),
            revoked_at: None,
        });
        Ok(IssuedToken {
            token: self.keys.sign(&grant, now, expires),
            id: grant.id,
            role: grant.role,
            pairs: grant.pairs,
            expires_at: "2099-01-01T00:00:00.000Z".into(),
            name: req.name.clone(),
        })
    }

    fn tokens(&self) -> Result<Vec<TokenInfo>, ApiError> {
        Ok(self.state.lock().unwrap().tokens.clone())
    }

    fn token(&self, id: &str) -> Result<Option<TokenInfo>, ApiError> {
        let state = self.state.lock().unwrap();
        Ok(state.tokens.iter().find(|t| t.id == id).cloned())
    }

    fn revoke_token(&self, id: &str) -> Result<TokenInfo, ApiError> {
        let mut state = self.state.lock().unwrap();
        let token = state
            .tokens
            .iter_mut()
            .find(|t| t.id == id)
            .ok_or_else(|| ApiError::not_found(format!("no token {id:?}")))?;
        token
            .revoked_at
            .get_or_insert_with(|| "2025-02-09T18:00:00.000Z".into());
        Ok(token.clone())
    }
}

/// A real server on a real socket, running on its own Tokio runtime in a
/// background thread; dropping it shuts the server down.
pub struct TestServer {
    pub socket: PathBuf,
    pub control: Arc<MemControl>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    _dir: Option<tempfile::TempDir>,
}

impl TestServer {
    /// A server with the fixture, in a fresh temporary directory.
    pub fn start() -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("prism-syncd.sock");
        let mut server = TestServer::start_at(&socket).unwrap();
        server._dir = Some(dir);
        server
    }

    /// A server with the fixture at `socket`, or the bind error.
    pub fn start_at(socket: &Path) -> Result<TestServer, ServeError> {
        let control = Arc::new(MemControl::with_fixture());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (bound_tx, bound_rx) = mpsc::channel();
        let path = socket.to_owned();
        let served: Arc<dyn Control> = control.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                match api::bind(&path) {
                    Ok(bound) => {
                        bound_tx.send(Ok(())).unwrap();
                        bound
                            .serve(served, async {
                                let _ = stopped.await;
                            })
                            .await;
                    }
                    Err(err) => bound_tx.send(Err(err)).unwrap(),
                }
            });
        });
        match bound_rx.recv().unwrap() {
            Ok(()) => Ok(TestServer {
                socket: socket.to_owned(),
                control,
                stop: Some(stop),
                thread: Some(thread),
                _dir: None,
            }),
            Err(err) => {
                thread.join().unwrap();
                Err(err)
            }
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One frame: 4-byte big-endian length, then the bytes.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

/// Reads one response frame and parses it as JSON.
pub fn read_response(stream: &mut UnixStream) -> Value {
    let mut header = [0u8; 4];
    stream.read_exact(&mut header).unwrap();
    let mut payload = vec![0u8; u32::from_be_bytes(header) as usize];
    stream.read_exact(&mut payload).unwrap();
    serde_json::from_slice(&payload).unwrap()
}

pub fn connect_raw(socket: &Path) -> UnixStream {
    let stream = UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    stream
}

/// Sends raw bytes on a fresh connection and returns the response envelope.
pub fn send_raw(socket: &Path, bytes: &[u8]) -> Value {
    let mut stream = connect_raw(socket);
    stream.write_all(bytes).unwrap();
    read_response(&mut stream)
}

/// Sends one well-formed request and returns the response envelope.
pub fn request(socket: &Path, method: &str, path: &str, body: Value) -> Value {
    let envelope = json!({"protocol": "1.0", "method": method, "path": path, "body": body});
    send_raw(socket, &frame(envelope.to_string().as_bytes()))
}
