//! The control API: the [`Control`] trait the daemon implements, the JSON
//! shapes users script against ([`wire`]), the length-prefixed framing on the
//! local socket ([`framing`]), the request router and its authorization
//! ([`handlers`]), bearer tokens ([`auth`]), which pairs a token may add
//! ([`pair_roots`]), the two transports (the socket server in [`server`],
//! the optional HTTP listener in [`http`], with [`stall`] timing out its
//! writes) and the blocking client ([`client`]).
//!
//! Architecture invariant: only this module knows the wire format. The
//! daemon builds [`wire`] values and never sees frames, paths or query
//! strings; `ctl` calls typed [`client::Client`] methods and never builds a
//! request by hand. Nothing here touches the journal, a remote or the sync
//! engine: every answer comes from a [`Control`] method.

pub mod auth;
pub mod client;
pub mod events;
pub mod framing;
pub mod handlers;
pub mod http;
pub mod openapi;
pub mod pair_roots;
pub mod server;
mod stall;
pub mod wire;

use std::path::PathBuf;

pub use client::{Client, ClientError};
pub use server::{Bound, ServeError, bind, serve};

/// The protocol version this build speaks, sent in every request and every
/// response. A different major version is refused; minor versions only add
/// fields and endpoints (see `docs/protocol.md`).
pub const PROTOCOL_VERSION: &str = "1.0";

/// What the daemon offers the API. Every method is called on a blocking
/// thread (`spawn_blocking`), so implementations may touch SQLite or take
/// locks; they should still return promptly, because `prism-syncctl` waits.
pub trait Control: Send + Sync + 'static {
    /// The agent and every pair, as `GET /status` shows them.
    fn status(&self) -> wire::AgentStatus;
    /// Starts a sync of `pair`, or of every pair when `None`. A pair that is
    /// already syncing answers with the run in progress. `by` is the token
    /// that asked (recorded with the run), `None` for the socket's owner.
    fn start_sync(
        &self,
        pair: Option<&str>,
        by: Option<&str>,
    ) -> Result<Vec<wire::SyncStarted>, ApiError>;
    /// One sync run, running or finished.
    fn sync_status(&self, sync_id: &str) -> Result<wire::SyncStatus, ApiError>;
    /// Unresolved conflicts of `pair` (all pairs when `None`), plus resolved
    /// ones when `include_resolved`.
    fn conflicts(
        &self,
        pair: Option<&str>,
        include_resolved: bool,
    ) -> Result<Vec<wire::ConflictInfo>, ApiError>;
    /// One conflict, resolved or not.
    fn conflict(&self, conflict_id: &str) -> Result<wire::ConflictInfo, ApiError>;
    /// Applies a strategy to one conflict. The request is already checked:
    /// `merged_file` is absolute and only present with `manual`. `by` is the
    /// token that asked (recorded with the resolution), `None` for the
    /// socket's owner.
    fn resolve(
        &self,
        req: &wire::ResolveRequest,
        by: Option<&str>,
    ) -> Result<wire::ResolveResponse, ApiError>;
    /// The change log, newest first, at most `query.limit` entries.
    fn changes(&self, query: &wire::ChangesQuery) -> Result<wire::ChangeLog, ApiError>;
    /// Stops syncing `pair` (every pair when `None`) until resumed.
    fn pause(&self, pair: Option<&str>) -> Result<(), ApiError>;
    /// Undoes [`Control::pause`].
    fn resume(&self, pair: Option<&str>) -> Result<(), ApiError>;
    /// Adds a pair and starts watching it.
    fn pair_add(&self, spec: &wire::PairSpec) -> Result<wire::PairInfo, ApiError>;
    /// Every configured pair.
    fn pair_list(&self) -> Result<Vec<wire::PairInfo>, ApiError>;
    /// Stops syncing a pair and forgets it; files on both sides stay.
    fn pair_remove(&self, name: &str) -> Result<(), ApiError>;
    /// Lets a pair that the mass-deletion guard stopped apply its deletions.
    fn confirm_deletions(&self, pair: &str) -> Result<(), ApiError>;
    /// The versions of one file the pair still holds (`GET /history`).
    fn history(&self, query: &wire::HistoryQuery) -> Result<wire::History, ApiError> {
        let _ = query;
        Err(ApiError::not_found("this agent keeps no file history"))
    }
    /// Brings a trashed version of a file back (`POST /restore`); the file
    /// it replaces goes to the trash. `by` is the token that asked, recorded
    /// with the restored version (`None` for the local socket's owner).
    fn restore(
        &self,
        req: &wire::RestoreRequest,
        by: Option<&str>,
    ) -> Result<wire::RestoreResponse, ApiError> {
        let _ = (req, by);
        Err(ApiError::not_found("this agent cannot restore versions"))
    }
    /// Keeps the password of `credentials` for `pair`'s remote where logins
    /// look for it (see `secrets`), so the pair's next login uses it.
    /// `Ok(false)`: the pair's remote takes no password (a `file://`
    /// remote, or WebDAV without a `username`). A username that is not the
    /// one the pair logs in as is a 400.
    fn store_credentials(
        &self,
        pair: &str,
        credentials: &wire::Credentials,
    ) -> Result<bool, ApiError>;
    /// The other pairs that log in with the same account (user, host and
    /// port) as `pair`, and so use the password stored for it.
    fn pairs_sharing_login(&self, pair: &str) -> Result<Vec<String>, ApiError>;
    /// Signs a new token for the HTTP API and records what it grants; the
    /// token is in the answer and nowhere else. Pairs must exist.
    fn issue_token(&self, req: &wire::TokenRequest) -> Result<wire::IssuedToken, ApiError>;
    /// Every token issued, revoked ones included; never the tokens.
    fn tokens(&self) -> Result<Vec<wire::TokenInfo>, ApiError>;
    /// One token's record, to check a presented token against; `None` if
    /// no token has that id.
    fn token(&self, id: &str) -> Result<Option<wire::TokenInfo>, ApiError>;
    /// Revokes a token at once; answers with its record.
    fn revoke_token(&self, id: &str) -> Result<wire::TokenInfo, ApiError>;
    /// The agent's event stream; `None` where there is none (`GET /events`
    /// is then a 404).
    fn events(&self) -> Option<std::sync::Arc<events::EventLog>> {
        None
    }
}

/// An error answer: an HTTP-style status code and the spec's section 9
/// object (`{"error":{"code":"409","message":…,"details":…}}` on the wire).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message} ({code}){}", details.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
pub struct ApiError {
    pub code: u16,
    pub message: String,
    pub details: Option<String>,
}

impl ApiError {
    pub fn new(code: u16, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            details: None,
        }
    }

    /// The request is malformed or names something invalid (400).
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, message)
    }

    /// The pair, sync run or conflict does not exist (404).
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(404, message)
    }

    /// The request contradicts the current state (409), for example a pair
    /// name that is taken or a conflict that is already resolved.
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(409, message)
    }

    /// The agent failed while handling a valid request (500).
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(500, message)
    }

    /// Adds the spec's `details` sentence.
    pub fn with_details(mut self, details: impl Into<String>) -> ApiError {
        self.details = Some(details.into());
        self
    }
}

/// Where the agent listens unless told otherwise: `PRISM_SYNC_SOCKET`, else
/// `prism-syncd.sock` in the user's runtime dir (`$XDG_RUNTIME_DIR/prism-sync`),
/// else in the local data dir. Both binaries call this, so they always agree.
pub fn default_socket_path() -> PathBuf {
    const FILE_NAME: &str = "prism-syncd.sock";
    if let Some(path) = std::env::var_os("PRISM_SYNC_SOCKET").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    match directories::ProjectDirs::from("", "", "prism-sync") {
        Some(dirs) => dirs
            .runtime_dir()
            .unwrap_or_else(|| dirs.data_local_dir())
            .join(FILE_NAME),
        // No home directory at all: fall back to a per-user name in the
        // temporary directory, so two users never share a socket.
        None => std::env::temp_dir().join(format!("prism-syncd-{}.sock", user_id())),
    }
}

#[cfg(unix)]
fn user_id() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

#[cfg(not(unix))]
fn user_id() -> String {
    std::env::var("USERNAME").unwrap_or_default()
}

/// The major part of a `major.minor` version string, if it has one.
fn major_version(version: &str) -> Option<&str> {
    let major = version.split('.').next()?;
    (!major.is_empty() && major.bytes().all(|b| b.is_ascii_digit())).then_some(major)
}

/// Whether a peer speaking `version` understands this build.
pub fn compatible_version(version: &str) -> bool {
    major_version(version).is_some() && major_version(version) == major_version(PROTOCOL_VERSION)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_compatible_only_within_a_major() {
        assert!(compatible_version("1.0"));
        assert!(compatible_version("1.7"));
        assert!(compatible_version("1"));
        assert!(!compatible_version("2.0"));
        assert!(!compatible_version("0.9"));
        assert!(!compatible_version(""));
        assert!(!compatible_version("one.zero"));
    }

    #[test]
    fn api_error_displays_code_message_and_details() {
        let err = ApiError::conflict("Conflict detected").with_details("docs/page.md");
        assert_eq!(err.to_string(), "Conflict detected (409): docs/page.md");
        assert_eq!(ApiError::not_found("no pair").to_string(), "no pair (404)");
    }
}
