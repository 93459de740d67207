//! The JSON bodies of the control API, exactly as users script against them.
//!
//! Where the spec gives a shape (4.1 start, 4.2 status, 4.3 resolve, 5.3
//! conflict, 6.2 change log, 9 error) these types keep its field names and
//! add fields beside them; nothing is renamed. Optional fields serialize as
//! `null` rather than disappearing, so every key is always present. The
//! daemon builds these values by hand from its own types: core types are
//! never made serializable, and nothing in this file does I/O.

use std::fmt;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiError, PROTOCOL_VERSION};

/// How many changes `GET /changes` returns when the request names no limit.
pub const DEFAULT_CHANGES_LIMIT: u32 = 100;
/// The largest `limit` `GET /changes` accepts.
pub const MAX_CHANGES_LIMIT: u32 = 100_000;

// ---------------------------------------------------------------- status

/// `GET /status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AgentStatus {
    /// The protocol version the agent speaks; set by [`AgentStatus::new`].
    pub protocol: String,
    pub agent: AgentInfo,
    pub pairs: Vec<PairStatus>,
}

impl AgentStatus {
    pub fn new(agent: AgentInfo, pairs: Vec<PairStatus>) -> AgentStatus {
        AgentStatus {
            protocol: PROTOCOL_VERSION.to_owned(),
            agent,
            pairs,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AgentInfo {
    pub version: String,
    /// The device name used in conflict-copy names and the change log.
    pub device: String,
    pub pid: u32,
    pub started_at: String,
    /// Where the agent keeps its journal; `null` for an HTTP client.
    pub state_dir: Option<String>,
    /// The local socket's path; `null` for an HTTP client.
    pub socket: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PairStatus {
    pub name: String,
    pub local: String,
    pub remote: String,
    pub state: PairState,
    /// One sentence a person can act on, e.g. "offline, retrying in 8 s:
    /// connection refused", or why the mass-deletion guard stopped the pair
    /// and how to confirm.
    pub state_detail: String,
    pub last_sync: Option<LastSync>,
    /// Changes seen but not yet synced.
    pub pending: u64,
    pub unresolved_conflicts: u64,
    pub transfers: Vec<Transfer>,
    pub problems: Vec<Problem>,
    /// `"ok"`, or a sentence saying what is wrong with the file watcher
    /// (for example the inotify watch limit) and what to do.
    pub watcher: String,
    /// What the remote promises about a replace or delete racing another
    /// writer.
    pub write_guarantee: WriteGuarantee,
    /// How the agent reaches the remote where a process of its own stands
    /// between: for an rclone remote, rclone's version and where its rcd
    /// listens (`"rclone v1.75.2, rcd on unix socket PATH"` or `"rclone
    /// v1.60.1, rcd on tcp 127.0.0.1:PORT"`). `null` for other remotes and
    /// while no rcd runs.
    #[serde(default)]
    pub remote_transport: Option<String>,
}

/// How safely the remote replaces and deletes a file another writer may
/// be changing at the same moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WriteGuarantee {
    /// Each replace and delete is conditional on the version it was planned
    /// from: a change made elsewhere in between always stays in place.
    Conditional,
    /// The remote cannot make a write conditional (rclone remotes): the
    /// file is looked at again right before each replace, move and delete,
    /// and a change made elsewhere in that moment can go to the trash (or
    /// be replaced, or where the backend cannot move a file, as on S3, be
    /// removed) instead of staying in place.
    Rechecked,
}

impl WriteGuarantee {
    pub fn as_str(self) -> &'static str {
        match self {
            WriteGuarantee::Conditional => "conditional",
            WriteGuarantee::Rechecked => "rechecked",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PairState {
    Idle,
    Scanning,
    Syncing,
    Paused,
    Offline,
    WaitingForConfirmation,
    Error,
}

impl PairState {
    pub fn as_str(self) -> &'static str {
        match self {
            PairState::Idle => "idle",
            PairState::Scanning => "scanning",
            PairState::Syncing => "syncing",
            PairState::Paused => "paused",
            PairState::Offline => "offline",
            PairState::WaitingForConfirmation => "waiting_for_confirmation",
            PairState::Error => "error",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LastSync {
    pub sync_id: String,
    pub status: SyncState,
    pub finished_at: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Transfer {
    pub path: String,
    pub direction: Direction,
    pub bytes_done: u64,
    pub bytes_total: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Upload,
    Download,
}

/// A path that keeps failing; it is retried with back-off and never stalls
/// the rest of the pair.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

// ---------------------------------------------------------------- sync

/// `POST /sync/start` (spec 4.1). With no `pair`, `remote_url` and `method`
/// select the pairs whose remote matches; with none of them, every pair.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(default)]
pub struct StartSyncRequest {
    pub pair: Option<String>,
    /// A remote URL scheme such as `sftp`, `webdav` or `file`.
    pub method: Option<String>,
    pub remote_url: Option<String>,
    /// A password for the selected pairs' remote: stored where logins look
    /// for it (the OS secret store, else the owner-only credentials file)
    /// before the sync starts. `username` must be the user the pairs log in
    /// as. Never logged nor echoed.
    pub credentials: Option<Credentials>,
}

/// A user name and password. Its `Debug` output hides the password, so it
/// cannot leak into a log by accident.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// One sync run [`super::Control::start_sync`] started (or found running).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SyncStarted {
    pub pair: String,
    pub sync_id: String,
}

/// The answer to `POST /sync/start` (spec 4.1): `status` and `sync_id`
/// describe the first run; `syncs` lists every run started.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StartSyncResponse {
    pub status: SyncState,
    pub sync_id: String,
    pub syncs: Vec<SyncStarted>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SyncState {
    SyncInProgress,
    Completed,
    CompletedWithConflicts,
    Failed,
    Interrupted,
}

impl SyncState {
    pub fn as_str(self) -> &'static str {
        match self {
            SyncState::SyncInProgress => "sync_in_progress",
            SyncState::Completed => "completed",
            SyncState::CompletedWithConflicts => "completed_with_conflicts",
            SyncState::Failed => "failed",
            SyncState::Interrupted => "interrupted",
        }
    }
}

/// `GET /sync/status/{sync_id}` (spec 4.2 plus the run's details).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SyncStatus {
    pub status: SyncState,
    /// When the pair last finished a sync: this run's end once it is done.
    pub last_synced_at: Option<String>,
    /// Conflicts this run found (spec 5.3 objects).
    pub conflicts: Vec<ConflictInfo>,
    pub sync_id: String,
    pub pair: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub counts: SyncCounts,
    /// Why the run failed or was interrupted.
    pub error: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SyncCounts {
    pub uploaded: u64,
    pub downloaded: u64,
    pub deleted_local: u64,
    pub deleted_remote: u64,
    pub moved: u64,
    pub conflicts: u64,
    pub errors: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
}

// ---------------------------------------------------------------- conflicts

/// A conflict (spec 5.3 plus where it came from and how it ended).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ConflictInfo {
    pub conflict_id: String,
    pub file_path: String,
    pub local_version: Version,
    pub remote_version: Version,
    pub status: ConflictStatus,
    pub pair: String,
    /// Why it is a conflict, e.g. `both_modified` or
    /// `local_deleted_remote_modified`.
    pub kind: String,
    pub detected_at: String,
    /// Where the other version was kept (`name.conflict-…`), if anywhere.
    pub copy_path: Option<String>,
    /// The strategy that resolved it, or that will be tried.
    pub strategy: Option<Strategy>,
    pub note: Option<String>,
    pub resolved_at: Option<String>,
}

/// One side of a conflict; both fields are `null` for a deleted side.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Version {
    pub hash: Option<String>,
    pub modified_at: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConflictStatus {
    Unresolved,
    Resolved,
}

/// `GET /conflicts`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ConflictList {
    pub conflicts: Vec<ConflictInfo>,
}

/// The spec's conflict resolution strategies (5.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    KeepLocal,
    KeepRemote,
    AutoMerge,
    Manual,
}

impl Strategy {
    pub const ALL: [Strategy; 4] = [
        Strategy::KeepLocal,
        Strategy::KeepRemote,
        Strategy::AutoMerge,
        Strategy::Manual,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::KeepLocal => "keep_local",
            Strategy::KeepRemote => "keep_remote",
            Strategy::AutoMerge => "auto_merge",
            Strategy::Manual => "manual",
        }
    }
}

/// `POST /sync/resolve` (spec 4.3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ResolveRequest {
    pub conflict_id: String,
    pub resolution_strategy: Strategy,
    /// With `manual` only, over the local socket only: an absolute path
    /// whose content (a regular file of at most 64 MiB) becomes the
    /// resolved version on both sides. A token's request naming one is a
    /// 403.
    #[serde(default)]
    pub merged_file: Option<String>,
}

impl ResolveRequest {
    /// Checks what the daemon is promised: `merged_file` is absolute and
    /// comes only with `manual`.
    pub fn validate(&self) -> Result<(), ApiError> {
        let Some(file) = &self.merged_file else {
            return Ok(());
        };
        if self.resolution_strategy != Strategy::Manual {
            return Err(
                ApiError::bad_request("merged_file is only allowed with manual").with_details(
                    format!(
                        "resolution_strategy is {}; drop merged_file or use manual",
                        self.resolution_strategy.as_str()
                    ),
                ),
            );
        }
        if !std::path::Path::new(file).is_absolute() {
            return Err(
                ApiError::bad_request("merged_file must be an absolute path")
                    .with_details(format!("got {file:?}")),
            );
        }
        Ok(())
    }
}

/// The answer to `POST /sync/resolve` (spec 4.3). `status` stays
/// `unresolved` when `auto_merge` could not merge cleanly and fell back to
/// keeping both versions; `note` says so.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ResolveResponse {
    pub status: ConflictStatus,
    pub resolved_at: Option<String>,
    pub note: Option<String>,
}

// ---------------------------------------------------------------- history

/// `GET /history?pair=&path=`: the versions of one file. `path` is a file
/// inside a pair's local folder, absolute, or relative to `pair`'s folder
/// when `pair` is given.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryQuery {
    pub pair: Option<String>,
    pub path: String,
}

/// The versions of a file the pair still holds: the current one first,
/// then the trashed ones, newest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct History {
    pub pair: String,
    /// The file's path in the pair.
    pub path: String,
    pub versions: Vec<VersionInfo>,
}

/// One version of a file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VersionInfo {
    /// What `POST /restore` takes: `current`, or the trashed version's
    /// number.
    pub version: String,
    /// BLAKE3, lowercase hex.
    pub hash: String,
    pub size: u64,
    pub modified_at: String,
    /// The device that made it; `remote` where no device's log names it.
    pub origin_device: String,
    /// `current`, `local_trash` or `remote_trash`.
    #[serde(rename = "where")]
    pub place: String,
    /// When it went to the trash; absent for the current version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trashed_at: Option<String>,
    /// The device whose sync moved it to the trash (another device's, for
    /// a version it trashed on the remote); absent for the current version
    /// and for what the remote keeps by itself (`remote_history`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trashed_by: Option<String>,
}

/// `POST /restore`: brings a trashed version of a file back as a new
/// change. `path` as in [`HistoryQuery`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RestoreRequest {
    #[serde(default)]
    pub pair: Option<String>,
    #[schema(min_length = 1)]
    pub path: String,
    #[schema(min_length = 1)]
    pub version: String,
}

/// What a restore did. The restored file is in the local folder; the sync
/// that carries it to the remote is started at once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RestoreResponse {
    /// `restored`.
    pub status: String,
    pub pair: String,
    pub path: String,
    pub version: String,
    pub hash: String,
    pub size: u64,
    /// Where the file it replaced went: its name in the local trash;
    /// absent when there was no file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaced: Option<String>,
    /// What went wrong after the file was restored, which did not undo it
    /// (the journal could not record the replaced version); absent when
    /// nothing did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

// ---------------------------------------------------------------- changes

/// `GET /changes?pair=&since=&path=&device=&limit=`, as the daemon receives it:
/// `since` is already normalized to the journal's RFC 3339 form
/// (`2025-02-09T16:00:00.000Z`), so it compares as text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ChangesQuery {
    pub pair: Option<String>,
    pub since: Option<String>,
    /// Only paths equal to this or below it.
    pub path: Option<String>,
    /// Only changes made by this device (`origin_device`).
    #[serde(default)]
    pub device: Option<String>,
    pub limit: u32,
}

/// The change log (spec 6.2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ChangeLog {
    pub changes: Vec<Change>,
}

/// One change-log entry (spec 6.2 plus its origin).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Change {
    #[serde(rename = "type")]
    pub kind: ChangeKind,
    pub path: String,
    pub timestamp: String,
    pub pair: String,
    /// The old path of a move.
    pub from_path: Option<String>,
    pub origin_side: Side,
    /// The device that made the change; `remote` for a change from the
    /// remote whose device is not known.
    pub origin_device: Option<String>,
    /// When the origin device made it, where known.
    #[serde(default)]
    pub origin_at: Option<String>,
    /// The sync run that carried the change to the other side.
    pub sync_id: Option<String>,
    pub hash: Option<String>,
    pub size: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    Created,
    Modified,
    Deleted,
    Moved,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Created => "created",
            ChangeKind::Modified => "modified",
            ChangeKind::Deleted => "deleted",
            ChangeKind::Moved => "moved",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Local,
    Remote,
}

// ---------------------------------------------------------------- pairs

/// `POST /pairs`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PairSpec {
    pub name: String,
    /// An absolute path (the client makes it so).
    pub local: String,
    pub remote: String,
    #[serde(default)]
    pub conflict: Option<Strategy>,
    #[serde(default)]
    pub ignore: Vec<String>,
}

/// A configured pair.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PairInfo {
    pub name: String,
    pub local: String,
    pub remote: String,
    pub conflict: Strategy,
    pub ignore: Vec<String>,
    /// What the remote promises about a replace or delete racing another
    /// writer.
    pub write_guarantee: WriteGuarantee,
}

/// `GET /pairs`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PairList {
    pub pairs: Vec<PairInfo>,
}

/// The body of `POST /pause` and `POST /resume`: no pair means every pair.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(default)]
pub struct PairSelector {
    pub pair: Option<String>,
}

/// The answer to requests that only do something: pause, resume, pair
/// removal, deletion confirmation, token revocation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Ack {
    /// `paused`, `resumed`, `removed`, `confirmed` or `revoked`.
    pub status: String,
    /// The pair it applied to; `null` for every pair (and for a token).
    pub pair: Option<String>,
}

// ---------------------------------------------------------------- tokens

/// A role of an HTTP API token. Each includes the one before it: `viewer`
/// reads; `operator` also starts syncs, resolves conflicts, pauses,
/// resumes and confirms held deletions; `admin` also adds and removes
/// pairs and lists and revokes tokens.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Operator, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == text)
    }
}

/// `POST /tokens` (local socket only): a new bearer token for the HTTP API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenRequest {
    pub role: Role,
    /// The pairs the token may see and act on; empty for every pair.
    #[serde(default)]
    pub pairs: Vec<String>,
    /// How long the token is valid, in seconds; the agent's default (30
    /// days) when absent.
    #[serde(default)]
    pub ttl_secs: Option<u64>,
    /// A label for `token list`.
    #[serde(default)]
    pub name: Option<String>,
}

/// The answer to `POST /tokens`: the only time the token is shown.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct IssuedToken {
    /// The JWT to send as `Authorization: Bearer TOKEN`.
    pub token: String,
    pub id: String,
    pub role: Role,
    pub pairs: Vec<String>,
    pub expires_at: String,
    pub name: Option<String>,
}

impl fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedToken")
            .field("token", &"<redacted>")
            .field("id", &self.id)
            .field("role", &self.role)
            .field("pairs", &self.pairs)
            .field("expires_at", &self.expires_at)
            .field("name", &self.name)
            .finish()
    }
}

/// What a token grants, as `GET /tokens` lists it (never the token).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenInfo {
    pub id: String,
    pub name: Option<String>,
    pub role: Role,
    pub pairs: Vec<String>,
    pub issued_at: String,
    pub expires_at: String,
    pub revoked_at: Option<String>,
}

/// `GET /tokens`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenList {
    pub tokens: Vec<TokenInfo>,
}

// ---------------------------------------------------------------- events

/// One event of `GET /events`. `type` is one of `pair_added`,
/// `pair_removed`, `pair_state`, `deletions_held`, `sync_started`,
/// `sync_finished`, `transfer`, `conflict_found`, `conflict_resolved`;
/// `data` holds its fields (see `docs/protocol.md`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Event {
    /// Increases by one per event: a jump means events were missed.
    pub id: u64,
    #[serde(rename = "type")]
    pub kind: String,
    pub at: String,
    pub pair: Option<String>,
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

/// The answer to `GET /events` over the socket (a long poll).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EventList {
    pub events: Vec<Event>,
    /// The `after` to ask with next.
    pub last_id: u64,
}

// ---------------------------------------------------------------- errors

/// The spec's section 9 error object: `{"error":{"code":"409",…}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorObject,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorObject {
    /// The HTTP-style status code, as a string.
    pub code: String,
    pub message: String,
    pub details: Option<String>,
}

impl From<&ApiError> for ErrorBody {
    fn from(err: &ApiError) -> ErrorBody {
        ErrorBody {
            error: ErrorObject {
                code: err.code.to_string(),
                message: err.message.clone(),
                details: err.details.clone(),
            },
        }
    }
}

impl ErrorBody {
    /// Back to an [`ApiError`]; a code that is not a number becomes 500.
    pub fn into_api_error(self) -> ApiError {
        ApiError {
            code: self.error.code.parse().unwrap_or(500),
            message: self.error.message,
            details: self.error.details,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_debug_hides_the_password() {
        let creds = Credentials {
            username: "user".into(),
            password: "securepass".into(),
        };
        let shown = format!(
            "{:?}",
            StartSyncRequest {
                credentials: Some(creds),
                ..StartSyncRequest::default()
            }
        );
        assert!(shown.contains("user"), "{shown}");
        assert!(!shown.contains("securepass"), "{shown}");
    }

    #[test]
    fn spec_4_1_request_parses() {
        let req: StartSyncRequest = serde_json::from_str(
            r#"{"method":"sftp","remote_url":"sftp://example.com/prism",
                "credentials":{"username":"user","password":"securepass"}}"#,
        )
        .unwrap();
        assert_eq!(req.pair, None);
        assert_eq!(req.method.as_deref(), Some("sftp"));
        assert_eq!(req.credentials.unwrap().username, "user");
    }

    #[test]
    fn resolve_request_rules() {
        let mut req = ResolveRequest {
            conflict_id: "conflict-1".into(),
            resolution_strategy: Strategy::Manual,
            merged_file: Some("/tmp/merged.md".into()),
        };
        assert_eq!(req.validate(), Ok(()));
        req.merged_file = Some("merged.md".into());
        assert_eq!(req.validate().unwrap_err().code, 400);
        req.merged_file = Some("/tmp/merged.md".into());
        req.resolution_strategy = Strategy::KeepLocal;
        assert_eq!(req.validate().unwrap_err().code, 400);
    }

    #[test]
    fn error_body_has_a_string_code() {
        let body = ErrorBody::from(&ApiError::conflict("Conflict detected").with_details("x"));
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            serde_json::json!({"error":{"code":"409","message":"Conflict detected","details":"x"}})
        );
        assert_eq!(body.into_api_error().code, 409);
    }
}
