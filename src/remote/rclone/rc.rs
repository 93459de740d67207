//! A small client of rclone's remote control: JSON calls (`POST
//! /METHOD`) and reads of a file's bytes through `--rc-serve` (`GET
//! /[FS]/PATH`, ranged), both with the rcd's Basic-auth login, on one
//! keep-alive `reqwest` blocking client per start of the rcd (reqwest
//! speaks HTTP over a Unix socket itself: `ClientBuilder::unix_socket`).
//!
//! What the client learnt from the rcd (its version, the methods it
//! offers) holds for that start only: a restarted rcd may be another
//! binary (the user upgraded rclone), so it is asked again.
//!
//! A call that finds the rcd gone (the connection refused: the request
//! never reached it) starts it again ([`Rcd::restart_after`]) and is sent
//! once more; so is a call that broke off mid-way when asking again
//! changes nothing (a listing, a stat). Any other broken call is an error
//! the caller re-plans from, as it would after any interrupted step.
//!
//! rclone's answers to failed calls are sorted into what a person can act
//! on ([`RcError::kind`]): a file that is not there, a remote missing from
//! the config, an OAuth token that expired, a full drive, an unreachable
//! provider.

use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use super::daemon::{Endpoint, Rcd, StartError};
use crate::locks::LockExt;

/// How long connecting to the rcd may take (it runs on this machine).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The remote-control methods this backend cannot work without.
pub const REQUIRED_METHODS: [&str; 8] = [
    "operations/list",
    "operations/stat",
    "operations/movefile",
    "operations/copyfile",
    "operations/purge",
    "operations/mkdir",
    "operations/rmdir",
    "operations/deletefile",
];

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum RcError {
    #[error(transparent)]
    Start(#[from] StartError),
    /// rclone answered, with an error.
    #[error("rclone: {message}")]
    Answer { status: u16, message: String },
    /// The rcd could not be reached, or the connection broke.
    #[error("rclone rcd: {0}")]
    Transport(String),
}

/// What a failed call means for the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The file or folder is not there.
    NotFound,
    /// The remote's name is not in the rclone config.
    UnknownRemote,
    /// The OAuth token expired or was revoked.
    Login,
    /// The provider asks for fewer requests for now (a rate limit that
    /// outlasted rclone's own pacing): not a failure, the sync goes on
    /// later.
    RateLimited,
    /// The drive is full.
    Quota,
    /// The provider (or the rcd) cannot be reached.
    Offline,
    Other,
}

impl RcError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            RcError::Start(_) => ErrorKind::Other,
            RcError::Transport(_) => ErrorKind::Offline,
            RcError::Answer { status, message } => classify(*status, message),
        }
    }
}

/// Sorts rclone's error text: it passes the provider's message on, so the
/// words are the providers' (Drive, Dropbox, OneDrive, S3, SFTP, WebDAV).
fn classify(status: u16, message: &str) -> ErrorKind {
    let m = message.to_ascii_lowercase();
    let any = |words: &[&str]| words.iter().any(|w| m.contains(w));
    if any(&[
        "didn't find section in config file",
        "not found in config file",
    ]) {
        ErrorKind::UnknownRemote
    } else if any(&[
        "object not found",
        "directory not found",
        "file not found",
        "no such file",
        "does not exist",
        "not found",
    ]) || status == 404
    {
        ErrorKind::NotFound
    } else if any(&[
        "invalid_grant",
        "token expired",
        "token has been expired",
        "cannot fetch token",
        "couldn't fetch token",
        "unauthorized",
        "invalid_client",
    ]) {
        ErrorKind::Login
    } else if any(&[
        // Before the quota words: Google words its rate limits as a
        // "project quota" or a "quota metric" per minute.
        "ratelimitexceeded",
        "rate limit",
        "rate_limit",
        "too many requests",
        "too_many_requests",
        "too_many_write_operations",
        "activitylimitreached",
        "slowdown",
        "reduce your request rate",
        "quota metric",
        "per minute",
    ]) || status == 429
    {
        ErrorKind::RateLimited
    } else if any(&[
        "quota",
        "storage_cap_exceeded",
        "storage_limit_exceeded",
        "insufficient storage",
        "insufficient_space",
        "storage full",
        "no space left",
    ]) {
        ErrorKind::Quota
    } else if any(&[
        "connection refused",
        "no such host",
        "i/o timeout",
        "network is unreachable",
        "connection reset",
        "connection lost",
        "broken pipe",
        "use of closed network connection",
        "handshake failed",
        "tls handshake timeout",
        "dial tcp",
    ]) {
        ErrorKind::Offline
    } else {
        ErrorKind::Other
    }
}

/// The oldest rclone this backend is known to work with (Debian
/// bookworm's); an older one is refused before any call that could go
/// wrong on it.
pub const OLDEST_VERSION: (u64, u64) = (1, 60);

/// rclone's version, as `core/version` gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    pub text: String,
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
    /// The start of the rcd that answered ([`Endpoint::generation`]).
    pub generation: u64,
}

/// A client of one (shared) rcd.
pub struct RcClient {
    rcd: Arc<Rcd>,
    /// Built at the first call to each start of the rcd (the generation
    /// of its endpoint), not with the replica: a blocking client cannot be
    /// built on the agent's async threads, where pairs are started; calls
    /// come from the engine's blocking threads.
    http: Mutex<Option<(u64, reqwest::blocking::Client)>>,
    /// Checked once per start of the rcd (the generation it was asked of).
    version: Mutex<Option<Version>>,
    /// How many calls of each method were made (reads as `GET`).
    made: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
}

impl Version {
    /// An error saying what to do when this rclone is older than
    /// [`OLDEST_VERSION`].
    fn refusal(&self) -> Option<String> {
        let (major, minor) = OLDEST_VERSION;
        ((self.major, self.minor) < (major, minor)).then(|| {
            format!(
                "rclone {} is older than {major}.{minor}, the oldest Prism Sync works with; \
                 install a newer rclone (see https://rclone.org/install/) or name one in the \
                 pair's rclone_binary",
                self.text
            )
        })
    }
}

impl RcClient {
    pub fn new(rcd: Arc<Rcd>) -> RcClient {
        RcClient {
            rcd,
            http: Mutex::new(None),
            version: Mutex::new(None),
            made: std::sync::Mutex::new(std::collections::BTreeMap::new()),
        }
    }

    /// The HTTP client for `endpoint`'s start of the rcd (a client holds
    /// the socket it connects through).
    fn http(&self, endpoint: &Endpoint) -> Result<reqwest::blocking::Client, RcError> {
        let mut http = self.http.locked();
        if let Some((generation, client)) = http.as_ref()
            && *generation == endpoint.generation
        {
            return Ok(client.clone());
        }
        let mut builder = reqwest::blocking::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            // A listing of a large drive, or rclone's pacer waiting out a
            // rate limit, may take long: slow is not failed.
            .timeout(None);
        if let Some(socket) = &endpoint.socket {
            builder = builder.unix_socket(socket.as_path());
        }
        let client = builder
            .build()
            .map_err(|e| RcError::Transport(crate::remote::error_chain(&e)))?;
        *http = Some((endpoint.generation, client.clone()));
        Ok(client)
    }

    pub fn rcd(&self) -> &Arc<Rcd> {
        &self.rcd
    }

    /// How many calls of each method this client made so far (reads of a
    /// file's bytes as `GET`): what a step costs, for tests and the log.
    pub fn calls_made(&self) -> std::collections::BTreeMap<String, u64> {
        self.made.locked().clone()
    }

    fn count(&self, method: &str) {
        *self.made.locked().entry(method.to_owned()).or_default() += 1;
    }

    /// The running rcd's version, asked once per start of it; also checks
    /// that it offers every method this backend needs.
    pub fn version(&self) -> Result<Version, RcError> {
        let running = self.rcd.endpoint()?.generation;
        if let Some(version) = self.version.locked().as_ref()
            && version.generation == running
        {
            return Ok(version.clone());
        }
        let (answer, generation) = self.call_at("core/version", &serde_json::json!({}))?;
        let text = answer["version"].as_str().unwrap_or("unknown").to_owned();
        let part = |i: usize| answer["decomposed"][i].as_u64().unwrap_or(0);
        let version = Version {
            text,
            major: part(0),
            minor: part(1),
            patch: part(2),
            generation,
        };
        tracing::debug!(version = %version.text, generation, "rclone rcd answers");
        // A build that does not say its numbers is not refused for them;
        // the methods it lacks are still found below.
        let numbered = answer["decomposed"]
            .as_array()
            .is_some_and(|d| d.len() >= 2);
        if numbered && let Some(message) = version.refusal() {
            return Err(RcError::Answer { status: 0, message });
        }
        let offered = self.call("rc/list", &serde_json::json!({}))?;
        let offered: Vec<&str> = offered["commands"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["Path"].as_str())
            .collect();
        let missing: Vec<&str> = REQUIRED_METHODS
            .iter()
            .copied()
            .filter(|m| !offered.contains(m))
            .collect();
        if !missing.is_empty() {
            return Err(RcError::Answer {
                status: 0,
                message: format!(
                    "rclone {} does not offer {}; install a newer rclone (see \
                     https://rclone.org/install/)",
                    version.text,
                    missing.join(", ")
                ),
            });
        }
        *self.version.locked() = Some(version.clone());
        Ok(version)
    }

    /// Calls `method` with `params`; its JSON answer.
    pub fn call(&self, method: &str, params: &Value) -> Result<Value, RcError> {
        self.call_at(method, params).map(|(answer, _)| answer)
    }

    /// [`RcClient::call`], and which start of the rcd answered.
    fn call_at(&self, method: &str, params: &Value) -> Result<(Value, u64), RcError> {
        self.count(method);
        let started = std::time::Instant::now();
        let answer = self.call_once_or_twice(method, params);
        // Where a sync's time goes, call by call (`RUST_LOG=prism_sync::remote::rclone=trace`).
        tracing::trace!(
            method,
            path = params["remote"]
                .as_str()
                .or(params["dstRemote"].as_str())
                .unwrap_or(""),
            ms = started.elapsed().as_secs_f64() * 1000.0,
            ok = answer.is_ok(),
            "rclone call"
        );
        answer
    }

    fn call_once_or_twice(&self, method: &str, params: &Value) -> Result<(Value, u64), RcError> {
        let repeatable = is_repeatable(method);
        let mut endpoint = self.rcd.endpoint()?;
        let mut retried = false;
        loop {
            let sent = self
                .http(&endpoint)?
                .post(format!("{}{method}", endpoint.url))
                .basic_auth(&endpoint.user, Some(endpoint.pass.expose()))
                .header("Content-Type", "application/json")
                .body(params.to_string())
                .send()
                .and_then(|response| {
                    let status = response.status().as_u16();
                    response.bytes().map(|body| (status, body))
                });
            match sent {
                Ok((status, body)) => {
                    return answer(status, &body).map(|a| (a, endpoint.generation));
                }
                Err(e) if !retried && (e.is_connect() || repeatable) => {
                    tracing::debug!(
                        method,
                        error = %crate::remote::error_chain(&e),
                        "the rclone rcd did not answer; starting it again"
                    );
                    retried = true;
                    endpoint = self.rcd.restart_after(endpoint.generation)?;
                }
                Err(e) => return Err(RcError::Transport(crate::remote::error_chain(&e))),
            }
        }
    }

    /// The bytes of `path` in `fs` from `offset` on, and the offset the
    /// answer really starts at (0 where the backend could not seek).
    pub fn read(&self, fs: &str, path: &str, offset: u64) -> Result<(Download, u64), RcError> {
        self.count("GET");
        let started = std::time::Instant::now();
        let answer = self.read_once_or_twice(fs, path, offset);
        tracing::trace!(
            method = "GET",
            path,
            ms = started.elapsed().as_secs_f64() * 1000.0,
            ok = answer.is_ok(),
            "rclone call"
        );
        answer
    }

    fn read_once_or_twice(
        &self,
        fs: &str,
        path: &str,
        offset: u64,
    ) -> Result<(Download, u64), RcError> {
        let mut endpoint = self.rcd.endpoint()?;
        let mut retried = false;
        loop {
            let mut request = self
                .http(&endpoint)?
                .get(serve_url(&endpoint, fs, path))
                .basic_auth(&endpoint.user, Some(endpoint.pass.expose()));
            if offset > 0 {
                request = request.header("Range", format!("bytes={offset}-"));
            }
            match request.send() {
                Ok(response) => {
                    let status = response.status().as_u16();
                    return match status {
                        200 => Ok((Download(response), 0)),
                        206 => Ok((Download(response), offset)),
                        _ => {
                            let body = response.bytes().unwrap_or_default();
                            Err(error_of(status, &body))
                        }
                    };
                }
                Err(e) if !retried => {
                    tracing::debug!(
                        error = %crate::remote::error_chain(&e),
                        "the rclone rcd did not answer; starting it again"
                    );
                    retried = true;
                    endpoint = self.rcd.restart_after(endpoint.generation)?;
                }
                Err(e) => return Err(RcError::Transport(crate::remote::error_chain(&e))),
            }
        }
    }
}

/// Whether sending `method` twice does no more than sending it once.
fn is_repeatable(method: &str) -> bool {
    matches!(
        method,
        "core/version"
            | "rc/list"
            | "rc/noop"
            | "operations/list"
            | "operations/stat"
            | "operations/fsinfo"
            | "operations/mkdir"
            | "operations/about"
    )
}

fn answer(status: u16, body: &[u8]) -> Result<Value, RcError> {
    if status == 200 {
        return serde_json::from_slice(body)
            .map_err(|e| RcError::Transport(format!("an answer that is not JSON: {e}")));
    }
    Err(error_of(status, body))
}

/// rclone's error answer: `{"error": "...", "status": N, ...}`.
fn error_of(status: u16, body: &[u8]) -> RcError {
    let message = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            if text.is_empty() {
                format!("HTTP {status}")
            } else {
                text.chars().take(300).collect()
            }
        });
    RcError::Answer { status, message }
}

/// The `--rc-serve` address of `path` in `fs`.
fn serve_url(endpoint: &Endpoint, fs: &str, path: &str) -> String {
    let encode = crate::remote::s3::sign::encode_path;
    format!("{}%5B{}%5D/{}", endpoint.url, encode(fs), encode(path))
}

/// The bytes of a read. A read that breaks is a broken connection (the
/// rcd died, or was restarted): the caller may continue at its offset.
pub struct Download(reqwest::blocking::Response);

impl Read for Download {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                format!("{e} (the connection to the rclone rcd broke)"),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rclone_answers_are_sorted_into_what_a_person_can_do() {
        let kind = |m: &str| classify(500, m);
        assert_eq!(
            kind("didn't find section in config file"),
            ErrorKind::UnknownRemote
        );
        assert_eq!(kind("object not found"), ErrorKind::NotFound);
        assert_eq!(
            kind("couldn't list: oauth2: cannot fetch token: 400 invalid_grant"),
            ErrorKind::Login
        );
        assert_eq!(
            kind("googleapi: Error 403: The user's Drive storage quota has been exceeded"),
            ErrorKind::Quota
        );
        assert_eq!(
            kind("dial tcp 10.0.0.1:22: connect: connection refused"),
            ErrorKind::Offline
        );
        assert_eq!(kind("something else"), ErrorKind::Other);
    }

    #[test]
    fn an_rclone_older_than_the_oldest_known_to_work_is_refused_saying_what_to_do() {
        let version = |text: &str, major, minor| Version {
            text: text.into(),
            major,
            minor,
            patch: 0,
            generation: 1,
        };
        let message = version("v1.53.3", 1, 53).refusal().unwrap();
        assert!(
            message.contains("v1.53.3")
                && message.contains("1.60")
                && message.contains("rclone_binary"),
            "{message}"
        );
        assert!(version("v0.99", 0, 99).refusal().is_some());
        for (text, major, minor) in [("v1.60.1", 1, 60), ("v1.75.0", 1, 75), ("v2.0.0", 2, 0)] {
            assert_eq!(version(text, major, minor).refusal(), None, "{text}");
        }
    }

    /// Errors as rclone passes them on from the providers' APIs.
    #[test]
    fn providers_words_for_logins_rate_limits_and_full_drives_are_told_apart() {
        let kind = |m: &str| classify(500, m);
        for login in [
            "oauth2: token expired and refresh token is not set",
            "couldn't fetch token - maybe it has expired? - refresh with \"rclone config \
             reconnect gdrive:\": oauth2: cannot fetch token: 400 Bad Request\nResponse: {\n  \
             \"error\": \"invalid_grant\",\n  \"error_description\": \"Token has been expired or \
             revoked.\"\n}",
            "failed to get StartPageToken: Get \"https://www.googleapis.com/drive/v3/changes\": \
             oauth2: cannot fetch token: 401 Unauthorized",
        ] {
            assert_eq!(kind(login), ErrorKind::Login, "{login}");
        }
        for rate in [
            "googleapi: Error 403: User Rate Limit Exceeded. Rate of requests for user exceed \
             configured project quota. You may consider re-evaluating expected per-user traffic \
             to the API and adjust project quota limits accordingly., userRateLimitExceeded",
            "googleapi: Error 403: Rate Limit Exceeded, rateLimitExceeded",
            "googleapi: Error 403: Quota exceeded for quota metric 'Queries' and limit 'Queries \
             per minute per user' of service 'drive.googleapis.com', rateLimitExceeded",
            "too_many_requests/...",
            "too_many_write_operations/",
            "activityLimitReached: The request has been throttled",
            "SlowDown: Please reduce your request rate.\n\tstatus code: 503",
            "429 Too Many Requests",
        ] {
            assert_eq!(kind(rate), ErrorKind::RateLimited, "{rate}");
        }
        assert_eq!(classify(429, "HTTP 429"), ErrorKind::RateLimited);
        for full in [
            "googleapi: Error 403: The user's Drive storage quota has been exceeded., \
             storageQuotaExceeded",
            "upload failed: path/insufficient_space/..",
            "quotaLimitReached: Insufficient Space Available",
            "storage_cap_exceeded (403 Cannot upload files, storage cap exceeded.)",
            "storage_limit_exceeded: Account storage limit reached",
            "QuotaExceeded: The quota has been exceeded",
        ] {
            assert_eq!(kind(full), ErrorKind::Quota, "{full}");
        }
    }
}
