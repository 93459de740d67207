//! A WebDAV share as a replica: `webdav://host[:port]/path` (plain HTTP,
//! meant for loopback and trusted networks) and `webdavs://…` (HTTPS), over
//! `reqwest`'s blocking client with rustls.
//!
//! It owns the HTTP conversation with one share: the lazily built client
//! (one per replica, so keep-alive connections are reused by every thread),
//! Basic auth with a password from `secrets` (never from the config, never
//! in an error), certificate checks (the system's roots plus a per-pair
//! `ca_file`), the listing (see below; every href must lie on the share's
//! origin and below its path, is percent-decoded and passes through
//! [`RelPath`], and an answer is read with a size cap, see
//! [`MAX_LISTING_BYTES`]) and the careful writes:
//! PUT to a `.prism-tmp-*` name beside the target, check the target against
//! the caller's `Expect`, MOVE the old version to
//! `.prism-sync/trash/STAMP/path`, then MOVE the upload in with
//! `Overwrite: F`, which never replaces. The check compares the ETag the
//! caller's `Expect` carries (the listed version token, which the journal's
//! base keeps across restarts) with the one the server has now; where that
//! is a strong ETag the destructive steps carry it in `If-Match`, and creations carry
//! `If-None-Match: *`; a 412 answer means someone else changed the path, and
//! it is re-planned, never forced. Weak ETags (`W/"…"`, which Apache gives
//! for a file changed within the last second) are never used in `If-Match`:
//! size and modification time are compared instead. The lease is a
//! `.prism-sync/lease` created with `If-None-Match: *`.
//!
//! It does not hash on the server (WebDAV cannot): the version token is the
//! ETag without its weakness mark when there is one, else
//! `SIZE:MTIME_SECS`, and a file listed with a strong ETag whose token
//! equals the base's reuses the base's hash; anything else is downloaded
//! and hashed, and so is a file listed with a weak ETag (changed within the
//! last second: another same-sized write in that second would look the
//! same). A file uploaded while its ETag was weak is recorded with the
//! opaque part of that tag, which is its strong ETag once it settles, so it
//! is not downloaded again. RACE: another client's write of the same size
//! in the same file-system timestamp tick as ours (Apache's tag is size and
//! mtime) would look like ours; the fallback token has the same blind spot
//! for a whole second.
//! WebDAV cannot set a file's modification time, so a remote file carries
//! the time of its upload. It gives no file ids: renames on the server are
//! seen as delete + create (reconcile's content matching still finds them).
//! Redirects are never followed.
//!
//! PROPFINDs accept gzip (`Accept-Encoding: gzip`; a listing is text that
//! shrinks about tenfold, where the server compresses: Apache with
//! mod_deflate, Nextcloud behind most web servers); the cap applies to what
//! the answer decodes to. Nothing else asks for it: downloads keep the
//! file's own bytes and ranges, and uploads are never compressed (servers
//! store `Content-Encoding: gzip` bodies verbatim).
//!
//! A listing asks for the whole tree with one PROPFIND `Depth: infinity`
//! while the server takes those (Apache with `DavDepthInfinity on`,
//! `rclone serve webdav`), else lists folder by folder with `Depth: 1`, up
//! to `parallel_requests` PROPFINDs (and GETs of files to hash) at once;
//! the result is sorted, so it does not depend on the order answers came
//! in. The first refusal (Apache's default 403), an answer that breaks off,
//! times out or exceeds the cap (a big tree is legitimate) makes the
//! listing fall back to the walk, and this replica never asks again. Some
//! servers answer `Depth: infinity` as `Depth: 1` without saying so
//! (SabreDAV, so Nextcloud, by default): an answer is taken whole only if
//! it holds an entry below its first level (every marked share has
//! `.prism-sync/root`); otherwise each folder in it is listed again with
//! `Depth: 1`, and finding anything there ends the use of infinity.
//! ASSUMPTION: a server that answers below the first level gives the whole
//! tree, not some arbitrary depth of it.
//!
//! Some servers ignore conditional headers (`rclone serve webdav` answers a
//! PUT with `If-None-Match: *` over an existing file, or with an `If-Match`
//! naming another version, by writing it). The first lease taken on a
//! replica therefore probes the server once: it writes a temporary
//! file in `.prism-sync/`, then writes it again with `If-None-Match: *`, which
//! must fail with 412. A server that passes is used as described above. On
//! one that does not, every step still re-checks the path right before it
//! writes (stat and compare with the caller's `Expect`; a path expected
//! empty is checked by the `Overwrite: F` of the move itself), the final
//! MOVE still carries `Overwrite: F` (which such servers do honour), and the
//! lease, the one place that relied on `If-None-Match: *` alone, is taken by
//! uploading the record to a temporary name and moving it to
//! `.prism-sync/lease` with `Overwrite: F`; it is renewed and released
//! after reading it back and finding it still ours. On every server the
//! record is created, renewed and removed under a claim
//! ([`super::claims`]): Apache checks `If-None-Match: *` and writes in two
//! steps too, so agents creating the record at once could all be told yes,
//! each record replacing the one before.
//! RACE: on such a server a write by a client that does not take the lease
//! between a check and the next step is not refused; with `Overwrite: F`
//! the upload is not placed over it and the path is re-planned, but a
//! replaced version can go to the trash with the old one (kept, not lost).
//! RACE: Apache's mod_dav checks `Overwrite: F` and renames in two steps,
//! so of writers creating one new file at the same moment all can succeed,
//! the last one's version replacing the others' (not trashed). Among
//! agents the lease prevents it; a writer that does not take the lease
//! can meet it. The replaced agent's version is still on its own side.

// Public so the fuzz tests (`tests/fuzz/`) can feed it answers directly.
pub mod url;
pub mod xml;

use std::collections::{HashMap, HashSet};
use std::io::{self, BufReader, Read};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::blocking::{Body, Client, RequestBuilder, Response};
use reqwest::{Method, Url};

use super::Opened;
use super::claims::{CLAIMS_DIR, Claim, ClaimFolder, Sightings, Wait};
use super::error_chain;
use super::kit::{self, Entries, PathStore, careful, walk};
use super::layout::{METADATA_DIR, TrashBatches, temp_name_for};
use super::{Capabilities, Lease, Listing, Replica, ReplicaError, RootState, StagedWrite};
use crate::config::is_loopback_host;
use crate::fsops::Expect;
use crate::locks::LockExt;
use crate::model::{BaseTree, ContentHash, Entry, FileMeta, Mode, RelPath, Scope, SideEntry};
use crate::percent::{self, Plus};
use crate::secrets::{self, Account, Secret};
use crate::tracker::ignore::IgnoreRules;

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a request without a body upload may wait for its answer, and
/// each read of an answer's body may wait for bytes, unless the pair sets
/// `timeout_secs`.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The read and write chunk size of transfers.
const CHUNK: usize = 256 * 1024;

/// The largest PROPFIND answer read: about 150 000 entries of one folder.
/// A larger answer is refused instead of exhausting memory.
pub const MAX_LISTING_BYTES: u64 = 64 * 1024 * 1024;

/// The properties a listing asks for (servers send less than `allprop`).
const PROPFIND_BODY: &str = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n\
<D:propfind xmlns:D=\"DAV:\"><D:prop><D:resourcetype/><D:getcontentlength/>\
<D:getlastmodified/><D:getetag/></D:prop></D:propfind>\n";

/// How to reach and log in to one share.
#[derive(Clone, Debug)]
pub struct WebdavTarget {
    /// HTTPS (`webdavs://`) or plain HTTP (`webdav://`).
    pub tls: bool,
    pub host: String,
    /// `None`: 443 for HTTPS, 80 for HTTP.
    pub port: Option<u16>,
    /// The share's path on the server, as written in the URL.
    pub path: String,
    /// The Basic-auth user; `None`: no login.
    pub username: Option<String>,
    /// PEM CA certificates trusted besides the system's.
    pub ca_file: Option<PathBuf>,
    /// Whether a password may go over plain HTTP to a non-loopback host.
    pub allow_insecure_http_auth: bool,
    /// Where the credentials file is looked for (see `secrets`).
    pub config_dir: Option<PathBuf>,
    /// How long a server may stay silent before a request fails (see
    /// [`DEFAULT_REQUEST_TIMEOUT`]).
    pub timeout: Duration,
    /// How many requests a listing runs at once (the agent's
    /// `parallel_transfers`); at least one.
    pub parallel_requests: usize,
}

impl WebdavTarget {
    fn port(&self) -> u16 {
        self.port.unwrap_or(if self.tls { 443 } else { 80 })
    }
}

/// Why a request failed. The messages say what to do and never contain a
/// secret.
#[derive(Debug, thiserror::Error)]
pub enum WebdavError {
    #[error("cannot reach {server}: {message}")]
    Unreachable { server: String, message: String },
    #[error(
        "the TLS certificate of {server} is not trusted ({message}); if the server uses a \
         private CA, name its certificate with `ca_file` for the pair"
    )]
    Certificate { server: String, message: String },
    #[error(
        "{server} refused the login{user} (401 Unauthorized){found}; check `username` for the \
         pair and {how}"
    )]
    Unauthorized {
        server: String,
        user: String,
        found: &'static str,
        /// How to store the password (`secrets::how_to_store`).
        how: String,
    },
    #[error(
        "{server} does not allow {method} of {path} (403 Forbidden); check the account's \
         permissions on the share"
    )]
    Forbidden {
        server: String,
        method: String,
        path: String,
    },
    #[error(
        "the server {server} is out of space (507 Insufficient Storage); free space on it or \
         raise the account's quota"
    )]
    OutOfSpace { server: String },
    #[error(
        "{server} failed with {status} {reason} on {method} of {path}: the server has a \
         problem or is overloaded; nothing was replaced, and the path is tried again on the \
         next sync (check the server's log if it persists)"
    )]
    ServerFailed {
        server: String,
        method: String,
        path: String,
        status: u16,
        reason: &'static str,
    },
    #[error("{server} answered {status} to {method} of {path}")]
    Status {
        server: String,
        method: String,
        path: String,
        status: u16,
    },
    #[error("{server} sent a bad answer to PROPFIND of {path}: {message}")]
    BadAnswer {
        server: String,
        path: String,
        message: String,
    },
    #[error(
        "refusing to send the password for {server} over plain HTTP, where anyone on the \
         network can read it; use webdavs://, or set allow_insecure_http_auth = true for the \
         pair if the network is trusted"
    )]
    Insecure { server: String },
    #[error("cannot use the CA file {file}: {message}")]
    CaFile { file: String, message: String },
    #[error("cannot set up the HTTP client: {0}")]
    Client(String),
    #[error("{0}")]
    Secret(#[from] secrets::SecretError),
}

impl WebdavError {
    /// Errors about the server as a whole rather than one path.
    fn is_global(&self) -> bool {
        !matches!(
            self,
            WebdavError::Forbidden { .. }
                | WebdavError::Status { .. }
                | WebdavError::ServerFailed { .. }
        )
    }

    fn status(&self) -> Option<u16> {
        match self {
            WebdavError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    fn into_replica(self, op: &'static str, path: impl std::fmt::Display) -> ReplicaError {
        // A transport failure says nothing about the path: the pair goes
        // offline and retries as a whole.
        if let WebdavError::Unreachable { server, message } = self {
            return ReplicaError::Offline {
                remote: server,
                reason: message,
            };
        }
        if self.is_global() {
            return ReplicaError::Other(self.to_string());
        }
        // 423 Locked: another client is changing this path at this moment
        // (rclone answers so while it writes or moves it): re-plan it.
        if self.status() == Some(423) {
            return ReplicaError::Changed {
                path: path.to_string(),
            };
        }
        let kind = match &self {
            WebdavError::Forbidden { .. } => io::ErrorKind::PermissionDenied,
            WebdavError::Status { status: 404, .. } => io::ErrorKind::NotFound,
            _ => io::ErrorKind::Other,
        };
        ReplicaError::io(op, path, io::Error::new(kind, self.to_string()))
    }
}

/// A folder on a WebDAV server.
pub struct WebdavReplica {
    shared: Arc<Shared>,
}

/// What the replica and its lease share.
struct Shared {
    target: WebdavTarget,
    /// The share's URL, ending in `/`.
    base: Url,
    /// The share's path, percent-decoded, one entry per segment.
    base_segments: Vec<String>,
    conn: Mutex<Option<Conn>>,
    /// Whether the server honours `If-None-Match`/`If-Match`, found by the
    /// first lease's probe (see the module docs).
    conditional: std::sync::OnceLock<bool>,
    /// Whether a listing still tries `Depth: infinity`: cleared for good
    /// once the server refused one, cut one short, or sent one too large
    /// (see [`Shared::subtree`]).
    infinity: AtomicBool,
    /// When this agent first saw each lease claim: how it tells a stale
    /// one ([`super::claims`]).
    claims_seen: Sightings,
    trash_batches: TrashBatches,
}

/// A ready client and the login it presents.
#[derive(Clone)]
struct Conn {
    client: Client,
    password: Option<Secret>,
}

/// One resource as a PROPFIND answer describes it.
#[derive(Clone, Debug)]
struct RemoteStat {
    collection: bool,
    size: u64,
    mtime_secs: i64,
    etag: Option<String>,
}

impl RemoteStat {
    fn from(response: &xml::PropResponse) -> RemoteStat {
        RemoteStat {
            collection: response.collection,
            size: response.length.unwrap_or(0),
            mtime_secs: response
                .last_modified
                .as_deref()
                .and_then(parse_http_date)
                .unwrap_or(0),
            etag: response.etag.clone(),
        }
    }

    /// The ETag, if it is strong (usable in `If-Match`).
    fn strong_etag(&self) -> Option<&str> {
        self.etag
            .as_deref()
            .filter(|e| !e.starts_with("W/") && e.starts_with('"'))
    }

    fn mtime_ns(&self) -> i64 {
        self.mtime_secs.saturating_mul(1_000_000_000)
    }

    /// The version token: the ETag without its weakness mark, else size
    /// and mtime. A weak ETag's opaque part is what the same version's
    /// strong ETag will be once it settles (Apache marks a tag weak only
    /// while the file is less than a second old), so a file recorded while
    /// its tag was weak is recognised by its strong tag later instead of
    /// being downloaded again on every listing. A listing still never
    /// trusts a weak tag: such a file is always read (see `visit_file`).
    fn version(&self) -> String {
        match self.etag.as_deref().map(opaque) {
            Some(etag) if etag.starts_with('"') => etag.to_owned(),
            _ => format!("{}:{}", self.size, self.mtime_secs),
        }
    }

    fn matches(&self, expect: &Expect) -> bool {
        match expect {
            Expect::Absent => false,
            Expect::Dir => self.collection,
            // WebDAV has no permission bits: a mode is never checked here.
            Expect::File { size, mtime_ns, .. } => {
                !self.collection && self.size == *size && self.mtime_ns() == *mtime_ns
            }
        }
    }

    /// Whether this is the version a listing named `token` (its
    /// [`RemoteStat::version`]). Tags are compared weakly (RFC 9110): tags
    /// that differ in their opaque part are different versions, weak or
    /// not. A `SIZE:MTIME` token says nothing [`RemoteStat::matches`] did
    /// not check, and neither does a server that stopped sending tags.
    fn is_version(&self, token: &str) -> bool {
        !token.starts_with('"')
            || self
                .etag
                .as_deref()
                .is_none_or(|etag| opaque(etag) == token)
    }
}

/// The ETag a careful step on `found` sends as `If-Match`, so the server
/// refuses it if the path changed since the check: the token the caller's
/// expectation carries (the listed ETag, which the check found again), or,
/// for a caller without one, the tag the check saw. Never a weak tag
/// (`If-Match` compares strongly, and a weak one never matches).
fn if_match<'a>(found: &'a RemoteStat, expect: &'a Expect) -> Option<&'a str> {
    let strong = found.strong_etag()?;
    Some(expect.version().filter(|v| *v == strong).unwrap_or(strong))
}

impl WebdavReplica {
    /// A replica for `target`. Nothing is connected yet: the first
    /// operation builds the client, so an agent starts while its server is
    /// away. A URL that cannot be formed is an error now.
    pub fn new(target: WebdavTarget) -> Result<WebdavReplica, ReplicaError> {
        let scheme = if target.tls { "https" } else { "http" };
        let host = if target.host.contains(':') && !target.host.starts_with('[') {
            format!("[{}]", target.host)
        } else {
            target.host.clone()
        };
        let mut path = target.path.clone();
        if !path.starts_with('/') {
            path.insert(0, '/');
        }
        if !path.ends_with('/') {
            path.push('/');
        }
        let base = Url::parse(&format!("{scheme}://{host}:{}{path}", target.port()))
            .map_err(|e| ReplicaError::Other(format!("the WebDAV URL is not valid: {e}")))?;
        let mut base_segments = Vec::new();
        for segment in base.path().split('/').filter(|s| !s.is_empty()) {
            base_segments.push(percent_decode(segment).ok_or_else(|| {
                ReplicaError::Other(format!(
                    "the WebDAV path {:?} is not valid percent-encoded UTF-8",
                    target.path
                ))
            })?);
        }
        Ok(WebdavReplica {
            shared: Arc::new(Shared {
                target,
                base,
                base_segments,
                conn: Mutex::new(None),
                conditional: std::sync::OnceLock::new(),
                infinity: AtomicBool::new(true),
                claims_seen: Sightings::default(),
                trash_batches: TrashBatches::new(),
            }),
        })
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // reqwest's blocking client owns a runtime thread that must not be
        // joined inside an async task; dropping it on a thread of its own
        // is safe wherever the replica goes.
        if let Some(conn) = self.conn.get_mut().ok().and_then(Option::take) {
            let _ = std::thread::Builder::new()
                .name("webdav-close".into())
                .spawn(move || drop(conn));
        }
    }
}

impl Shared {
    fn server(&self) -> String {
        format!("{}:{}", self.target.host, self.target.port())
    }

    /// The client, built on first use.
    fn conn(&self) -> Result<Conn, WebdavError> {
        let mut slot = self.conn.locked();
        if let Some(conn) = slot.as_ref() {
            return Ok(conn.clone());
        }
        let conn = self.connect()?;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    fn connect(&self) -> Result<Conn, WebdavError> {
        let t = &self.target;
        if t.username.is_some()
            && !t.tls
            && !t.allow_insecure_http_auth
            && !is_loopback_host(&t.host)
        {
            return Err(WebdavError::Insecure {
                server: self.server(),
            });
        }
        let password = match &t.username {
            Some(user) => {
                let account = Account::new(url::PASSWORD, user, &t.host, t.port());
                secrets::password(&account, t.config_dir.as_deref())?
            }
            None => None,
        };
        let mut builder = Client::builder()
            .user_agent(concat!("prism-sync/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT)
            // Uploads may take long; each request sets its own limit, and a
            // dead peer is noticed by TCP (see below).
            .timeout(None)
            .tcp_keepalive(Duration::from_secs(30))
            .pool_idle_timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none())
            .https_only(t.tls);
        #[cfg(target_os = "linux")]
        {
            builder = builder.tcp_user_timeout(t.timeout);
        }
        if let Some(file) = &t.ca_file {
            let ca_error = |message: String| WebdavError::CaFile {
                file: file.display().to_string(),
                message,
            };
            let pem = std::fs::read(file).map_err(|e| ca_error(e.to_string()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| ca_error(error_chain(&e)))?;
            if certs.is_empty() {
                return Err(ca_error("it holds no PEM certificate".into()));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder
            .build()
            .map_err(|e| WebdavError::Client(error_chain(&e)))?;
        tracing::debug!(server = %self.server(), "WebDAV client ready");
        Ok(Conn { client, password })
    }

    /// The URL of `rel` (slash-separated, below the share; empty for the
    /// share itself). Collections end in `/`.
    fn url(&self, rel: &str, collection: bool) -> Url {
        let mut url = self.base.clone();
        {
            let mut segments = url.path_segments_mut().expect("an http URL has a path");
            segments.pop_if_empty();
            for segment in rel.split('/').filter(|s| !s.is_empty()) {
                segments.push(segment);
            }
            if collection {
                segments.push("");
            }
        }
        url
    }

    fn request(&self, conn: &Conn, method: &str, url: Url) -> RequestBuilder {
        let method = Method::from_bytes(method.as_bytes()).expect("a valid method");
        let mut builder = conn.client.request(method, url);
        if let Some(user) = &self.target.username {
            builder = builder.basic_auth(user, conn.password.as_ref().map(Secret::expose));
        }
        builder
    }

    /// Sends a request and sorts its answer: a status in `ok` is returned,
    /// login, permission and space problems get their own errors.
    fn send(
        &self,
        builder: RequestBuilder,
        method: &str,
        path: &str,
        ok: &[u16],
    ) -> Result<Response, WebdavError> {
        let response = builder.send().map_err(|e| self.transport_error(&e))?;
        self.check_status(response, method, path, ok)
    }

    fn check_status(
        &self,
        response: Response,
        method: &str,
        path: &str,
        ok: &[u16],
    ) -> Result<Response, WebdavError> {
        let status = response.status().as_u16();
        if ok.contains(&status) {
            return Ok(response);
        }
        let path = if path.is_empty() { "/" } else { path };
        let had_password = self.conn_has_password();
        if status == 401 {
            // The client carries the password it was built with; a refused
            // login drops it, so the next request looks the password up
            // again and one stored meanwhile (`prism-syncctl password set`,
            // credentials in a sync request) is used without a restart.
            *self.conn.locked() = None;
        }
        Err(match status {
            401 => WebdavError::Unauthorized {
                server: self.server(),
                user: self
                    .target
                    .username
                    .as_ref()
                    .map(|u| format!(" of {u}"))
                    .unwrap_or_else(|| " (no username is configured)".into()),
                found: match (&self.target.username, had_password) {
                    (Some(_), false) => " and no password was found",
                    _ => "",
                },
                how: secrets::how_to_store(
                    &Account::new(
                        url::PASSWORD,
                        self.target.username.as_deref().unwrap_or("USER"),
                        &self.target.host,
                        self.target.port(),
                    ),
                    self.target.config_dir.as_deref(),
                ),
            },
            403 => WebdavError::Forbidden {
                server: self.server(),
                method: method.to_owned(),
                path: path.to_owned(),
            },
            507 => WebdavError::OutOfSpace {
                server: self.server(),
            },
            500..=599 => WebdavError::ServerFailed {
                server: self.server(),
                method: method.to_owned(),
                path: path.to_owned(),
                status,
                reason: response
                    .status()
                    .canonical_reason()
                    .unwrap_or("Server Error"),
            },
            status => WebdavError::Status {
                server: self.server(),
                method: method.to_owned(),
                path: path.to_owned(),
                status,
            },
        })
    }

    fn conn_has_password(&self) -> bool {
        self.conn
            .locked()
            .as_ref()
            .is_some_and(|c| c.password.is_some())
    }

    fn transport_error(&self, e: &reqwest::Error) -> WebdavError {
        let message = error_chain(e);
        let lower = message.to_lowercase();
        if lower.contains("certificate") || lower.contains("unknownissuer") {
            WebdavError::Certificate {
                server: self.server(),
                message,
            }
        } else {
            WebdavError::Unreachable {
                server: self.server(),
                message,
            }
        }
    }

    /// PROPFIND of one resource (Depth 0); `None` when nothing is there.
    fn stat(&self, conn: &Conn, rel: &str) -> Result<Option<RemoteStat>, WebdavError> {
        let url = self.url(rel, false);
        let responses = match self.propfind(conn, url, rel, "0") {
            Ok(found) => found,
            Err(e) if e.status() == Some(404) => return Ok(None),
            Err(e) => return Err(e),
        };
        let wanted: Vec<String> = rel
            .split('/')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        for response in &responses {
            if response.found && self.href_segments(&response.href).ok() == Some(wanted.clone()) {
                return Ok(Some(RemoteStat::from(response)));
            }
        }
        Err(WebdavError::BadAnswer {
            server: self.server(),
            path: shown(rel),
            message: "the answer does not describe the resource asked about".into(),
        })
    }

    /// Sends a PROPFIND and parses its multistatus answer, reading at most
    /// [`MAX_LISTING_BYTES`].
    fn propfind(
        &self,
        conn: &Conn,
        url: Url,
        rel: &str,
        depth: &str,
    ) -> Result<Vec<xml::PropResponse>, WebdavError> {
        let response = self.propfind_send(conn, url, rel, depth)?;
        self.read_multistatus(response, rel)
    }

    /// Sends a PROPFIND; the answer is a multistatus still to be read.
    fn propfind_send(
        &self,
        conn: &Conn,
        url: Url,
        rel: &str,
        depth: &str,
    ) -> Result<Response, WebdavError> {
        let builder = self
            .request(conn, "PROPFIND", url)
            .header("Depth", depth)
            .header("Content-Type", "application/xml; charset=utf-8")
            // Listings are text that shrinks about tenfold. Only answers we
            // parse ask for it: a download's bytes and ranges stay the
            // file's own.
            .header("Accept-Encoding", "gzip")
            .timeout(self.target.timeout)
            .body(PROPFIND_BODY);
        self.send(builder, "PROPFIND", &shown(rel), &[207])
    }

    /// Reads and parses a multistatus answer, at most
    /// [`MAX_LISTING_BYTES`] of it.
    fn read_multistatus(
        &self,
        response: Response,
        rel: &str,
    ) -> Result<Vec<xml::PropResponse>, WebdavError> {
        if response
            .content_length()
            .is_some_and(|n| n > MAX_LISTING_BYTES)
        {
            return Err(self.too_large(rel));
        }
        let gzipped = response
            .headers()
            .get(reqwest::header::CONTENT_ENCODING)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
        let mut limited = Limited::decoded(response, gzipped, MAX_LISTING_BYTES);
        let parsed = xml::parse_multistatus(BufReader::with_capacity(64 * 1024, &mut limited));
        if limited.exceeded {
            return Err(self.too_large(rel));
        }
        let broke = limited.broke;
        parsed.map_err(|e| match e {
            // The connection, not the answer: the server is away.
            xml::XmlError::Malformed { message, .. } if broke => WebdavError::Unreachable {
                server: self.server(),
                message,
            },
            e => WebdavError::BadAnswer {
                server: self.server(),
                path: shown(rel),
                message: e.to_string(),
            },
        })
    }

    fn too_large(&self, rel: &str) -> WebdavError {
        WebdavError::BadAnswer {
            server: self.server(),
            path: shown(rel),
            message: format!(
                "the answer is larger than {} MiB; it is refused",
                MAX_LISTING_BYTES / (1024 * 1024)
            ),
        }
    }

    /// Why an href of a listing of `rel` is not followed, for the listing's
    /// problems.
    fn refused_href(&self, href: &str, rel: &str, reason: &str) -> String {
        format!(
            "{} listed {:?} in {}, which {reason}; it is ignored",
            self.server(),
            truncate(href),
            shown(rel)
        )
    }

    /// The children of collection `rel`: names already checked to be plain
    /// names, with what the server says about them. Hrefs that are not
    /// children of `rel` on this share are returned as problems, not
    /// followed.
    fn children(&self, conn: &Conn, rel: &str) -> Result<Children, WebdavError> {
        let responses = self.propfind(conn, self.url(rel, true), rel, "1")?;
        let parent: Vec<&str> = rel.split('/').filter(|s| !s.is_empty()).collect();
        let mut children = Vec::new();
        let mut refused = Vec::new();
        for response in responses {
            if !response.found {
                continue;
            }
            let segments = match self.href_segments(&response.href) {
                Ok(segments) => segments,
                Err(reason) => {
                    refused.push(self.refused_href(&response.href, rel, reason));
                    continue;
                }
            };
            let is_self =
                segments.len() == parent.len() && segments.iter().zip(&parent).all(|(a, b)| a == b);
            if is_self {
                continue;
            }
            let is_child = segments.len() == parent.len() + 1
                && segments.iter().zip(&parent).all(|(a, b)| a == b);
            if !is_child {
                refused.push(format!(
                    "{} listed {:?} in {}, which is not an entry of that folder; it is ignored",
                    self.server(),
                    truncate(&response.href),
                    shown(rel)
                ));
                continue;
            }
            let name = segments.last().expect("a child has a name").clone();
            children.push((name, RemoteStat::from(&response)));
        }
        Ok(Children {
            entries: children,
            refused,
        })
    }

    /// Everything below collection `rel` from one PROPFIND with `Depth:
    /// infinity`, or `None` when the caller must list it folder by folder
    /// instead. Servers may refuse that depth (Apache does unless
    /// `DavDepthInfinity on`: 403 with `DAV:propfind-finite-depth`), and a
    /// large tree may exceed [`MAX_LISTING_BYTES`] or the request's time;
    /// neither is a reason to fail a sync, so both end in `None` and this
    /// replica does not try again (a 5xx only this time). Hrefs are judged
    /// as in [`Shared::children`], and an entry counts only if its parent
    /// is a collection of the same answer, so nothing the server names
    /// outside the listed tree is taken, and a folder can never be entered
    /// that the answer did not list.
    fn subtree(&self, conn: &Conn, rel: &str) -> Result<Option<Subtree>, WebdavError> {
        let response = match self.propfind_send(conn, self.url(rel, true), rel, "infinity") {
            Ok(response) => response,
            Err(e @ WebdavError::Status { status: 404, .. }) => return Err(e),
            Err(e @ (WebdavError::Forbidden { .. } | WebdavError::Status { .. })) => {
                self.no_infinity(&e);
                return Ok(None);
            }
            Err(WebdavError::ServerFailed { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        // The server is there and answered: a body that breaks off, runs
        // out of time or grows past the cap says the tree is too much for
        // one answer, not that the server is away.
        let responses = match self.read_multistatus(response, rel) {
            Ok(responses) => responses,
            Err(e) => {
                self.no_infinity(&e);
                return Ok(None);
            }
        };
        let top: Vec<String> = rel
            .split('/')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        let mut refused = Vec::new();
        let mut accepted = Vec::new();
        let mut collections: HashSet<Vec<String>> = HashSet::from([top.clone()]);
        for response in responses {
            if !response.found {
                continue;
            }
            let segments = match self.href_segments(&response.href) {
                Ok(segments) => segments,
                Err(reason) => {
                    refused.push(self.refused_href(&response.href, rel, reason));
                    continue;
                }
            };
            if segments == top {
                continue;
            }
            if !segments.starts_with(&top) {
                refused.push(format!(
                    "{} listed {:?} in {}, which is not inside that folder; it is ignored",
                    self.server(),
                    truncate(&response.href),
                    shown(rel)
                ));
                continue;
            }
            if response.collection {
                collections.insert(segments.clone());
            }
            let stat = RemoteStat::from(&response);
            accepted.push((segments, stat, response.href));
        }
        let mut folders: HashMap<String, Vec<(String, RemoteStat)>> = HashMap::new();
        let mut deep = false;
        for (mut segments, stat, href) in accepted {
            let name = segments.pop().expect("below the listed folder");
            if !collections.contains(&segments) {
                refused.push(format!(
                    "{} listed {:?} in {}, which is not in a folder of that listing; it is \
                     ignored",
                    self.server(),
                    truncate(&href),
                    shown(rel)
                ));
                continue;
            }
            deep |= segments.len() > top.len();
            folders
                .entry(segments.join("/"))
                .or_default()
                .push((name, stat));
        }
        Ok(Some(Subtree {
            folders,
            refused,
            deep,
        }))
    }

    /// Stops trying `Depth: infinity` on this replica.
    fn no_infinity(&self, why: &WebdavError) {
        if self.infinity.swap(false, Ordering::Relaxed) {
            tracing::info!(
                server = %self.server(),
                "listing folder by folder from now on: a PROPFIND with Depth: infinity \
                 did not work ({why})"
            );
        }
    }

    /// The decoded segments of `href` below the share, or why it is not on
    /// the share. Hrefs may be absolute URLs (then on the share's own
    /// scheme, host and port) or absolute paths; `.`/`..` segments, empty
    /// segments, encoded slashes and invalid UTF-8 are refused outright,
    /// never resolved.
    fn href_segments(&self, href: &str) -> Result<Vec<String>, &'static str> {
        let path = if let Some((scheme, rest)) = href.split_once("://") {
            let expected = if self.target.tls { "https" } else { "http" };
            if !scheme.eq_ignore_ascii_case(expected) {
                return Err("is on another scheme");
            }
            let (authority, path) = match rest.find('/') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, "/"),
            };
            if !self.same_authority(authority) {
                return Err("is on another server");
            }
            path
        } else if href.starts_with('/') {
            href
        } else {
            return Err("is not an absolute path");
        };
        if path.contains(['?', '#']) {
            return Err("carries a query or fragment");
        }
        let mut raw: Vec<&str> = path[1..].split('/').collect();
        if raw.last() == Some(&"") {
            raw.pop();
        }
        let mut segments = Vec::with_capacity(raw.len());
        for segment in raw {
            let decoded = percent_decode(segment).ok_or("is not valid percent-encoded UTF-8")?;
            if decoded.is_empty() || decoded == "." || decoded == ".." {
                return Err("has an empty, `.` or `..` segment");
            }
            if decoded.contains(['/', '\0']) {
                return Err("has an encoded slash or NUL");
            }
            segments.push(decoded);
        }
        let n = self.base_segments.len();
        if segments.len() < n || segments[..n] != self.base_segments[..] {
            return Err("lies outside the share");
        }
        Ok(segments.split_off(n))
    }

    fn same_authority(&self, authority: &str) -> bool {
        if authority.contains('@') {
            return false;
        }
        let host = self.base.host_str().unwrap_or("").to_ascii_lowercase();
        let port = self.target.port();
        let authority = authority.to_ascii_lowercase();
        let default_port = if self.target.tls { 443 } else { 80 };
        authority == format!("{host}:{port}") || (port == default_port && authority == host)
    }

    /// MKCOL of `rel` and its missing parents.
    fn mkcol_all(&self, conn: &Conn, rel: &str) -> Result<(), WebdavError> {
        let segments: Vec<&str> = rel.split('/').filter(|s| !s.is_empty()).collect();
        // Most parents exist: look from the deepest one up.
        let mut existing = segments.len();
        while existing > 0 {
            match self.stat(conn, &segments[..existing].join("/"))? {
                Some(stat) if stat.collection => break,
                Some(_) => {
                    return Err(WebdavError::Status {
                        server: self.server(),
                        method: "MKCOL".into(),
                        path: segments[..existing].join("/"),
                        status: 409,
                    });
                }
                None => existing -= 1,
            }
        }
        for end in existing + 1..=segments.len() {
            let dir = segments[..end].join("/");
            self.mkcol(conn, &dir)?;
        }
        Ok(())
    }

    /// MKCOL of one collection; one that exists already is fine.
    fn mkcol(&self, conn: &Conn, rel: &str) -> Result<(), WebdavError> {
        let builder = self
            .request(conn, "MKCOL", self.url(rel, true))
            .timeout(self.target.timeout);
        match self.send(builder, "MKCOL", rel, &[200, 201, 204]) {
            Ok(_) => Ok(()),
            // 405: something is there (Apache says 400 when it is a file,
            // and 403 when a concurrent MKCOL made it between its own check
            // and its mkdir).
            Err(e)
                if matches!(e.status(), Some(400 | 405))
                    || matches!(e, WebdavError::Forbidden { .. }) =>
            {
                match self.stat(conn, rel)? {
                    Some(stat) if stat.collection => Ok(()),
                    _ => Err(e),
                }
            }
            // 423: another client's MKCOL of it is under way (rclone serve
            // webdav locks the name meanwhile): made once that one ends.
            Err(e) if e.status() == Some(423) => {
                for _ in 0..5 {
                    std::thread::sleep(Duration::from_millis(50));
                    if self.stat(conn, rel)?.is_some_and(|stat| stat.collection) {
                        return Ok(());
                    }
                }
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// Whether the server refuses a PUT with `If-None-Match: *` over an
    /// existing file, probed once per replica on a temporary name of its
    /// own in `.prism-sync/` (the metadata folder must exist): agents that
    /// probe at once must not meet on one file (a server may lock it
    /// while another writes it, and one agent's delete would spoil
    /// another's probe). The answer is remembered.
    fn honours_conditions(&self, conn: &Conn) -> Result<bool, WebdavError> {
        if let Some(known) = self.conditional.get() {
            return Ok(*known);
        }
        let probe = format!("{METADATA_DIR}/{}", temp_name_for("probe"));
        let put = |condition: &[(&'static str, String)]| match self.put_stream(
            conn,
            &probe,
            &mut &b"Prism Sync checks here whether the server honours If-None-Match.\n"[..],
            condition,
            &[200, 201, 204],
        ) {
            Ok(_) => Ok(true),
            Err(PutError::Http(e)) if e.status() == Some(412) => Ok(false),
            Err(PutError::Http(e)) => Err(e),
            Err(PutError::Source(e)) => Err(WebdavError::Unreachable {
                server: self.server(),
                message: e.to_string(),
            }),
        };
        put(&[])?;
        let honoured = !put(&[("If-None-Match", "*".to_owned())])?;
        self.delete(conn, &probe, false, None);
        if !honoured {
            tracing::info!(
                server = %self.server(),
                "the WebDAV server ignores If-None-Match: every write is re-checked right \
                 before it, and the lease is taken with MOVE and Overwrite: F"
            );
        }
        Ok(*self.conditional.get_or_init(|| honoured))
    }

    /// MOVE without replacing: `Overwrite: F`, and `If-Match` when a strong
    /// ETag is given. Returns false on 412 (the destination exists, or the
    /// source is no longer that version).
    fn move_noreplace(
        &self,
        conn: &Conn,
        from: &str,
        to: &str,
        collection: bool,
        if_match: Option<&str>,
    ) -> Result<bool, WebdavError> {
        let mut builder = self
            .request(conn, "MOVE", self.url(from, collection))
            .header("Destination", self.url(to, collection).as_str())
            .header("Overwrite", "F")
            .timeout(self.target.timeout);
        if let Some(etag) = if_match {
            builder = builder.header("If-Match", etag);
        }
        match self.send(builder, "MOVE", from, &[201, 204]) {
            Ok(_) => Ok(true),
            Err(e) if e.status() == Some(412) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// DELETE, conditional on a strong ETag when one is given.
    fn delete(&self, conn: &Conn, rel: &str, collection: bool, if_match: Option<&str>) -> bool {
        let mut builder = self
            .request(conn, "DELETE", self.url(rel, collection))
            .timeout(self.target.timeout);
        if let Some(etag) = if_match {
            builder = builder.header("If-Match", etag);
        }
        self.send(builder, "DELETE", rel, &[200, 204]).is_ok()
    }

    /// PUT of `content` to `rel`, streamed and hashed on the way; the
    /// answer's status must be one of `ok`. Returns the hash and the size.
    fn put_stream(
        &self,
        conn: &Conn,
        rel: &str,
        content: &mut dyn Read,
        headers: &[(&'static str, String)],
        ok: &[u16],
    ) -> Result<(ContentHash, u64), PutError> {
        // The blocking client needs a `'static` body, and `content` is
        // borrowed: the request runs on a scoped thread reading from a
        // channel this thread fills, so the upload streams with a few
        // chunks in memory.
        let (tx, rx) = sync_channel::<io::Result<Vec<u8>>>(4);
        let mut builder = self.request(conn, "PUT", self.url(rel, false));
        for (name, value) in headers {
            builder = builder.header(*name, value);
        }
        std::thread::scope(|scope| {
            let request =
                scope.spawn(move || builder.body(Body::new(ChannelReader::new(rx))).send());
            let mut hasher = blake3::Hasher::new();
            let mut size = 0u64;
            let mut read_error = None;
            loop {
                let mut chunk = vec![0u8; CHUNK];
                match content.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => {
                        chunk.truncate(n);
                        hasher.update(&chunk);
                        size += n as u64;
                        if tx.send(Ok(chunk)).is_err() {
                            // The request ended early; its answer says why.
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let _ = tx.send(Err(io::Error::new(e.kind(), e.to_string())));
                        read_error = Some(e);
                        break;
                    }
                }
            }
            drop(tx);
            let sent = request.join().expect("the upload thread panicked");
            if let Some(e) = read_error {
                return Err(PutError::Source(e));
            }
            let response = sent.map_err(|e| PutError::Http(self.transport_error(&e)))?;
            self.check_status(response, "PUT", rel, ok)
                .map_err(PutError::Http)?;
            Ok((ContentHash(*hasher.finalize().as_bytes()), size))
        })
    }

    /// GET of a small file as text (the lease); `None` when it is not there.
    fn get_small(
        &self,
        conn: &Conn,
        rel: &str,
    ) -> Result<Option<(String, Option<String>)>, WebdavError> {
        let builder = self
            .request(conn, "GET", self.url(rel, false))
            .timeout(self.target.timeout);
        let response = match self.send(builder, "GET", rel, &[200]) {
            Ok(response) => response,
            Err(e) if e.status() == Some(404) => return Ok(None),
            Err(e) => return Err(e),
        };
        let etag = response
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .filter(|e| e.starts_with('"'))
            .map(str::to_owned);
        let mut text = String::new();
        response
            .take(64 * 1024)
            .read_to_string(&mut text)
            .map_err(|e| WebdavError::Unreachable {
                server: self.server(),
                message: e.to_string(),
            })?;
        Ok(Some((text, etag)))
    }
}

/// The share as the kit's store. Requests share the keep-alive client.
impl PathStore for Shared {
    type Node = RemoteStat;

    /// A 5xx answer is asked again once, a moment later: `rclone serve
    /// webdav` answers a PROPFIND of a file another client is moving at
    /// that moment with 500, which says nothing about the path a moment
    /// later (and a careful step that met it would fail the path instead
    /// of finding it changed).
    fn stat(&self, path: &str) -> Result<Option<RemoteStat>, ReplicaError> {
        let conn = self.conn().map_err(|e| e.into_replica("inspect", path))?;
        let found = match Shared::stat(self, &conn, path) {
            Err(WebdavError::ServerFailed { .. }) => {
                std::thread::sleep(Duration::from_millis(50));
                Shared::stat(self, &conn, path)
            }
            found => found,
        };
        found.map_err(|e| e.into_replica("inspect", path))
    }

    fn is_dir(node: &RemoteStat) -> bool {
        node.collection
    }

    /// Size and date, and the listed ETag where the expectation carries
    /// one (see [`RemoteStat::is_version`]).
    fn matches(node: &RemoteStat, expect: &Expect) -> bool {
        node.matches(expect) && expect.version().is_none_or(|v| node.is_version(v))
    }

    fn condition<'a>(node: &'a RemoteStat, expect: &'a Expect) -> Option<&'a str> {
        if_match(node, expect)
    }

    fn list_dir(&self, dir: &str) -> Result<Option<Entries<RemoteStat>>, ReplicaError> {
        let conn = self.conn().map_err(|e| e.into_replica("list", dir))?;
        match self.children(&conn, dir) {
            Ok(children) => {
                for message in children.refused {
                    tracing::warn!("{message}");
                }
                Ok(Some(children.entries))
            }
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e.into_replica("list", dir)),
        }
    }

    fn mkdir_all(&self, dir: &str, _private: bool) -> Result<(), ReplicaError> {
        let conn = self.conn().map_err(|e| e.into_replica("create", dir))?;
        self.mkcol_all(&conn, dir)
            .map_err(|e| e.into_replica("create", dir))
    }

    fn move_noreplace(
        &self,
        from: &str,
        to: &str,
        dir: bool,
        condition: Option<&str>,
    ) -> Result<bool, ReplicaError> {
        let conn = self.conn().map_err(|e| e.into_replica("move", from))?;
        Shared::move_noreplace(self, &conn, from, to, dir, condition)
            .map_err(|e| e.into_replica("move", from))
    }

    /// Every MOVE carries `Overwrite: F`, which even servers that ignore
    /// `If-None-Match: *` honour (see the module's notes).
    fn refuses_taken_target(&self) -> bool {
        true
    }

    fn trash_batches(&self) -> &TrashBatches {
        &self.trash_batches
    }

    fn remove_tree(&self, path: &str) -> Result<(), ReplicaError> {
        let conn = self.conn().map_err(|e| e.into_replica("remove", path))?;
        let builder = self
            .request(&conn, "DELETE", self.url(path, true))
            .timeout(self.target.timeout);
        match self.send(builder, "DELETE", path, &[200, 204]) {
            Ok(_) => Ok(()),
            Err(e) if e.status() == Some(404) => Ok(()),
            Err(e) => Err(e.into_replica("remove", path)),
        }
    }

    /// Folders go to the trash too (never DELETE): a DELETE of a collection
    /// would remove whatever was added inside it since it was looked at.
    fn remove_empty_dir(&self, path: &RelPath, node: &RemoteStat) -> Result<bool, ReplicaError> {
        let empty = self
            .list_dir(path.as_str())?
            .is_none_or(|entries| entries.is_empty());
        if !empty {
            return Ok(false);
        }
        careful::trash(self, path, node, &Expect::Dir)?;
        Ok(true)
    }
}

/// The entries of a collection, and the hrefs of its listing that were
/// refused (as messages).
struct Children {
    entries: Vec<(String, RemoteStat)>,
    refused: Vec<String>,
}

/// A tree as one `Depth: infinity` answer gave it.
struct Subtree {
    /// The entries of each collection of the answer (by its path below the
    /// share, as [`RelPath`] spells it), names already checked to be plain
    /// names.
    folders: HashMap<String, Vec<(String, RemoteStat)>>,
    /// Hrefs of the answer that were refused, as messages.
    refused: Vec<String>,
    /// Whether the answer holds anything below its first level. Some
    /// servers (SabreDAV, so Nextcloud and ownCloud, by default) answer
    /// `Depth: infinity` as if it were `Depth: 1`; an answer without a
    /// deeper entry cannot tell an empty folder from one left out.
    deep: bool,
}

/// Why an upload failed.
enum PutError {
    /// Reading the content failed.
    Source(io::Error),
    Http(WebdavError),
}

/// The body of an upload: chunks from the thread reading the content.
struct ChannelReader {
    rx: Receiver<io::Result<Vec<u8>>>,
    chunk: Vec<u8>,
    pos: usize,
}

impl ChannelReader {
    fn new(rx: Receiver<io::Result<Vec<u8>>>) -> ChannelReader {
        ChannelReader {
            rx,
            chunk: Vec::new(),
            pos: 0,
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.chunk.len() {
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    self.chunk = chunk;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// A reader that stops with an error after `left` bytes, and says so.
struct Limited<R> {
    inner: R,
    left: u64,
    exceeded: bool,
    /// Set when reading the body itself failed (the connection broke or
    /// timed out part-way): the answer is not bad, it never arrived.
    broke: bool,
}

impl Limited<Box<dyn Read>> {
    /// At most `limit` bytes of what `body` decodes to (gunzipped when
    /// `gzipped`): a small gzip that inflates without end stops there.
    fn decoded(body: impl Read + 'static, gzipped: bool, limit: u64) -> Self {
        Limited {
            inner: if gzipped {
                Box::new(flate2::read::GzDecoder::new(body))
            } else {
                Box::new(body)
            },
            left: limit,
            exceeded: false,
            broke: false,
        }
    }
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            // One more byte tells a body of exactly the limit from a longer
            // one.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => {
                    self.exceeded = true;
                    Err(io::Error::other("the answer is too large"))
                }
            };
        }
        let max = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..max]).inspect_err(|e| {
            // A gzip answer that does not decode is a bad answer, not a
            // broken connection.
            self.broke = !matches!(
                e.kind(),
                io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput
            );
        })?;
        self.left -= n as u64;
        Ok(n)
    }
}

/// The body of a download. A read that fails is the connection's fault
/// (the answer was accepted already): it reports `ConnectionAborted`, so
/// the writer classifies it as the server being away and the transfer can
/// be continued with a range, rather than blaming the file.
struct Download {
    response: Response,
    server: String,
}

impl Download {
    fn new(response: Response, shared: &Shared) -> Download {
        Download {
            response,
            server: shared.server(),
        }
    }
}

impl Read for Download {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.response.read(buf).map_err(|e| {
            io::Error::new(
                io::ErrorKind::ConnectionAborted,
                format!("{e} (the connection to {} broke)", self.server),
            )
        })
    }
}

/// `bytes START-END/TOTAL` as three numbers.
fn parse_content_range(value: &str) -> Option<(u64, u64, u64)> {
    let (range, total) = value.trim().strip_prefix("bytes ")?.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    Some((start.parse().ok()?, end.parse().ok()?, total.parse().ok()?))
}

/// An HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`) for `If-Range`.
fn format_http_date(secs: i64) -> Option<String> {
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()?
        .format(&format)
        .ok()
}

/// An ETag without its weakness mark, for weak comparison.
fn opaque(etag: &str) -> &str {
    etag.strip_prefix("W/").unwrap_or(etag)
}

/// A path for messages: `/` for the share itself.
fn shown(rel: &str) -> String {
    if rel.is_empty() {
        "/".to_owned()
    } else {
        rel.to_owned()
    }
}

/// An href for a message, cut to a readable length.
fn truncate(href: &str) -> String {
    let mut cut = href.len().min(200);
    while !href.is_char_boundary(cut) {
        cut -= 1;
    }
    href[..cut].to_owned()
}

/// Percent-decodes one URL segment; `None` if it is not valid UTF-8 or a
/// `%` is not followed by two hex digits.
fn percent_decode(s: &str) -> Option<String> {
    percent::decode_utf8(s, Plus::Literal)
}

/// An HTTP date (`Wed, 25 Nov 2026 10:27:19 GMT`) as Unix seconds.
fn parse_http_date(text: &str) -> Option<i64> {
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    time::PrimitiveDateTime::parse(text.trim(), &format)
        .ok()
        .map(|t| t.assume_utc().unix_timestamp())
}

/// A listing in progress: folders to list and files to hash are jobs, run
/// by up to `parallel_requests` workers at once, each with requests of its
/// own on the shared client (which keeps a keep-alive connection for each).
/// Every worker collects its own [`Listing`]; they are merged and sorted at
/// the end, so the result does not depend on which worker ran what, or
/// when.
struct Walk<'a> {
    shared: &'a Shared,
    conn: &'a Conn,
    cache: &'a BaseTree,
    ignore: &'a IgnoreRules,
    now: i64,
    /// The replica as `describe` names it, for the listing's errors.
    name: String,
}

/// One piece of work of a listing.
enum Job {
    /// List a folder and what is below it: the share (`None`) or the
    /// folder at the path.
    List(Option<RelPath>),
    /// List a folder a `Depth: infinity` answer showed without anything
    /// below its first level, with `Depth: 1`: finding entries in it says
    /// the server cut that answer short.
    Probe(RelPath),
    /// Read a file whose version the base does not know, to hash it.
    Hash(RelPath, RemoteStat),
    /// Look at a path the base knows that the listing of its folder left
    /// out (see [`vanished`]).
    Confirm(RelPath),
}

impl Walk<'_> {
    /// Runs one job; an error is the share's own listing failing.
    fn run_job(&self, job: Job, found: &mut Found) -> Result<(), ReplicaError> {
        self.job(job, found)
            .map_err(|e| e.into_replica("list", &self.name))
    }

    fn job(&self, job: Job, found: &mut Found) -> Result<(), WebdavError> {
        match job {
            Job::List(None) => self.list_folder(None, false, found),
            Job::List(Some(rel)) => self.list_below(rel, false, found),
            Job::Probe(rel) => self.list_below(rel, true, found),
            Job::Hash(rel, stat) => {
                self.hash_file(rel, stat, found);
                Ok(())
            }
            Job::Confirm(rel) => {
                self.confirm_gone(rel, found);
                Ok(())
            }
        }
    }

    /// Looks at a path the listing of its folder left out. Apache's
    /// `mod_dav_fs` leaves symbolic links out of its listings, yet serves
    /// what one points to when asked for it by name: a folder replaced by
    /// a link on the server would otherwise read as deleted with all that
    /// was in it. A path still there is held, with a problem saying why.
    fn confirm_gone(&self, rel: RelPath, found: &mut Found) {
        match self.shared.stat(self.conn, rel.as_str()) {
            Ok(None) => {}
            Ok(Some(_)) => {
                found.out.held.push(rel.clone());
                found.note(
                    Some(rel.clone()),
                    format!(
                        "{} is missing from the server's listing of its folder yet is there when \
                         asked for by name (a symbolic link on the server, which WebDAV servers \
                         leave out of listings); it is left alone on both sides",
                        rel.abbreviated()
                    ),
                );
            }
            Err(e) if e.status() == Some(404) => {}
            Err(e) => hold(found, rel, "look at", e),
        }
    }

    /// Lists the folder at `rel`, recording it only once that worked.
    fn list_below(&self, rel: RelPath, probe: bool, found: &mut Found) -> Result<(), WebdavError> {
        let mut inside = Found::default();
        match self.list_folder(Some(&rel), probe, &mut inside) {
            Ok(()) => {
                found.out.tree.insert(rel, SideEntry::new(Entry::dir(None)));
                found.absorb(inside);
            }
            // Gone since its parent was listed.
            Err(e) if e.status() == Some(404) => {}
            Err(e) => hold(found, rel, "list the folder", e),
        }
        Ok(())
    }

    /// Lists the folder `parent` (or the share): everything below it with
    /// one PROPFIND `Depth: infinity` while the server takes those (not for
    /// a probe), else its entries with one `Depth: 1`, its folders becoming
    /// jobs of their own.
    fn list_folder(
        &self,
        parent: Option<&RelPath>,
        probe: bool,
        found: &mut Found,
    ) -> Result<(), WebdavError> {
        let dir = parent.map(RelPath::as_str).unwrap_or("");
        if !probe
            && self.shared.infinity.load(Ordering::Relaxed)
            && let Some(mut subtree) = self.shared.subtree(self.conn, dir)?
        {
            for message in std::mem::take(&mut subtree.refused) {
                tracing::warn!("{message}");
                found.note(parent.cloned(), message);
            }
            let whole = subtree.deep;
            self.visit_subtree(parent, &mut subtree, whole, found);
            return Ok(());
        }
        let Children { entries, refused } = self.shared.children(self.conn, dir)?;
        if probe && !entries.is_empty() {
            self.shared.no_infinity(&WebdavError::BadAnswer {
                server: self.shared.server(),
                path: shown(dir),
                message: "it left out what is below the first level".into(),
            });
        }
        for message in refused {
            tracing::warn!("{message}");
            found.note(parent.cloned(), message);
        }
        for (name, stat) in entries {
            let Some(rel) = walk::child_path(parent, &name, found) else {
                continue;
            };
            self.visit(rel, stat, found);
        }
        Ok(())
    }

    /// Sorts the entries of the folder `parent` (or the share) of a
    /// `Depth: infinity` answer, and so on down. `whole`: the answer is
    /// known to reach below its first level; otherwise each folder in it
    /// may have been left out and is probed with a listing of its own.
    /// Folders wait on a stack of their own, not the call stack: a hostile
    /// answer may nest thousands deep.
    fn visit_subtree(
        &self,
        parent: Option<&RelPath>,
        subtree: &mut Subtree,
        whole: bool,
        found: &mut Found,
    ) {
        let mut folders = vec![parent.cloned()];
        while let Some(parent) = folders.pop() {
            let key = parent.as_ref().map(RelPath::as_str).unwrap_or("");
            let entries = subtree.folders.remove(key).unwrap_or_default();
            for (name, stat) in entries {
                let Some(rel) = walk::child_path(parent.as_ref(), &name, found) else {
                    continue;
                };
                if self.skip(&rel, &stat) {
                    continue;
                }
                if !stat.collection {
                    self.visit_file(rel, stat, found);
                } else if whole {
                    found
                        .out
                        .tree
                        .insert(rel.clone(), SideEntry::new(Entry::dir(None)));
                    folders.push(Some(rel));
                } else {
                    found.jobs.push(Job::Probe(rel));
                }
            }
        }
    }

    /// Whether an entry is ignored (a stale temporary upload is removed on
    /// the way).
    fn skip(&self, rel: &RelPath, stat: &RemoteStat) -> bool {
        if !self.ignore.is_ignored(rel, stat.collection) {
            return false;
        }
        if !stat.collection && walk::is_stale_temp(rel, stat.mtime_secs, self.now) {
            tracing::info!(path = %rel, "removing a temporary upload left by an interrupted write");
            self.shared
                .delete(self.conn, rel.as_str(), false, stat.strong_etag());
        }
        true
    }

    /// Sorts one entry: skipped, recorded, or a job to do.
    fn visit(&self, rel: RelPath, stat: RemoteStat, found: &mut Found) {
        if self.skip(&rel, &stat) {
            return;
        }
        if stat.collection {
            found.jobs.push(Job::List(Some(rel)));
        } else {
            self.visit_file(rel, stat, found);
        }
    }

    /// Records a file whose version the base knows, else makes reading it
    /// a job.
    fn visit_file(&self, rel: RelPath, stat: RemoteStat, found: &mut Found) {
        // A weak ETag says the file changed within the last moment and may
        // change again in the same second with the same size: its size and
        // date prove nothing, so it is read.
        let weak = stat.etag.as_deref().is_some_and(|e| e.starts_with("W/"));
        let version = stat.version();
        let cached = walk::cached_hash(self.cache, &rel, &version).filter(|_| !weak);
        match cached {
            Some(hash) => insert_file(&mut found.out, rel, &stat, hash),
            None => found.jobs.push(Job::Hash(rel, stat)),
        }
    }

    fn hash_file(&self, rel: RelPath, stat: RemoteStat, found: &mut Found) {
        match self.hash_remote(&rel, &stat) {
            Ok(Some(hash)) => {
                found.out.hashed_files += 1;
                insert_file(&mut found.out, rel, &stat, hash);
            }
            // It changed while it was read: still being written.
            Ok(None) => found.out.held.push(rel),
            Err(e) if e.status() == Some(404) => {}
            Err(e) => hold(found, rel, "read", e),
        }
    }

    /// Downloads and hashes a file; `None` when what came is not the
    /// version the listing saw (its ETag, or its length and date, differ).
    fn hash_remote(
        &self,
        rel: &RelPath,
        stat: &RemoteStat,
    ) -> Result<Option<ContentHash>, WebdavError> {
        let s = self.shared;
        let builder = s
            .request(self.conn, "GET", s.url(rel.as_str(), false))
            .timeout(s.target.timeout);
        let mut response = s.send(builder, "GET", rel.as_str(), &[200])?;
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let same = match (header("etag"), &stat.etag) {
            (Some(now), Some(listed)) => opaque(&now) == opaque(listed),
            _ => {
                header("last-modified").as_deref().and_then(parse_http_date)
                    == Some(stat.mtime_secs)
                    && response.content_length() == Some(stat.size)
            }
        };
        if !same {
            return Ok(None);
        }
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; CHUNK];
        let mut size = 0u64;
        loop {
            let n = response
                .read(&mut buf)
                .map_err(|e| WebdavError::Unreachable {
                    server: s.server(),
                    message: format!("reading {rel}: {e}"),
                })?;
            if n == 0 {
                break;
            }
            size += n as u64;
            hasher.update(&buf[..n]);
        }
        if size != stat.size {
            return Ok(None);
        }
        Ok(Some(ContentHash(*hasher.finalize().as_bytes())))
    }
}

/// The outermost paths of `base` that `listing` left out although it
/// listed their folder (or the folder is the share, or the path is a root
/// of `scope`): what would read as deleted.
fn vanished(listing: &Listing, base: &BaseTree, scope: &Scope) -> Vec<RelPath> {
    let roots: &[RelPath] = match scope {
        Scope::Full => &[],
        Scope::Paths(paths) => paths,
    };
    base.keys()
        .filter(|path| !listing.tree.contains_key(*path))
        .filter(|path| !listing.held.iter().any(|held| path.is_within(held)))
        .filter(|path| match path.parent() {
            None => true,
            Some(parent) => listing.tree.contains_key(&parent) || roots.contains(path),
        })
        .cloned()
        .collect()
}

/// What one job of a walk found.
type Found = walk::Found<Job>;

/// Leaves `rel` alone this time, saying why (see [`walk::Found::hold`]).
fn hold(found: &mut Found, rel: RelPath, op: &'static str, e: WebdavError) {
    let error = e.into_replica(op, &rel);
    found.hold(rel, op, error);
}

fn insert_file(out: &mut Listing, rel: RelPath, stat: &RemoteStat, hash: ContentHash) {
    let entry = SideEntry {
        entry: Entry::File(FileMeta {
            hash,
            size: stat.size,
            mtime_ns: stat.mtime_ns(),
            mode: None,
        }),
        id: None,
        version: Some(stat.version().into()),
    };
    out.tree.insert(rel, entry);
}

impl Replica for WebdavReplica {
    fn forget_login(&self) {
        // The client carries the password it was built with.
        *self.shared.conn.locked() = None;
    }

    fn describe(&self) -> String {
        let t = &self.shared.target;
        let scheme = if t.tls { "webdavs" } else { "webdav" };
        let user = t
            .username
            .as_deref()
            .map(|u| format!("{u}@"))
            .unwrap_or_default();
        format!("{scheme}://{user}{}:{}{}", t.host, t.port(), t.path)
    }

    fn capabilities(&self) -> Capabilities {
        // Every commit is a few requests (check, MOVE to the trash, MOVE
        // in); the client keeps a connection for each concurrent one.
        Capabilities {
            parallel_commits: true,
            ..Capabilities::default()
        }
    }

    fn root_state(&self) -> Result<RootState, ReplicaError> {
        let s = &*self.shared;
        kit::root_state(s, &format!("{} on {}", s.target.path, s.server()))
    }

    fn mark_root(&self) -> Result<(), ReplicaError> {
        let s = &self.shared;
        let conn = s.conn().map_err(|e| e.into_replica("create", "/"))?;
        // The share itself first (its parent must exist on the server).
        if s.stat(&conn, "")
            .map_err(|e| e.into_replica("open", "/"))?
            .is_none()
        {
            s.mkcol(&conn, "")
                .map_err(|e| e.into_replica("create", "/"))?;
        }
        s.mkcol_all(&conn, METADATA_DIR)
            .map_err(|e| e.into_replica("create", METADATA_DIR))?;
        let note = "This folder is kept in sync by Prism Sync. Do not delete this file: \
                    without it the agent treats the folder as missing and refuses to sync \
                    deletions.\n";
        let marker = format!("{METADATA_DIR}/root");
        match s.put_stream(
            &conn,
            &marker,
            &mut note.as_bytes(),
            &[("If-None-Match", "*".to_owned())],
            &[200, 201, 204],
        ) {
            Ok(_) => Ok(()),
            Err(PutError::Http(e)) if e.status() == Some(412) => Ok(()),
            Err(PutError::Http(e)) => Err(e.into_replica("create", &marker)),
            Err(PutError::Source(e)) => Err(ReplicaError::io("create", &marker, e)),
        }
    }

    fn list(
        &self,
        scope: &Scope,
        cache: &BaseTree,
        ignore: &IgnoreRules,
    ) -> Result<Listing, ReplicaError> {
        let s = &self.shared;
        let conn = s
            .conn()
            .map_err(|e| e.into_replica("list", self.describe()))?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let walk = Walk {
            shared: s,
            conn: &conn,
            cache,
            ignore,
            now,
            name: self.describe(),
        };
        let workers = s.target.parallel_requests;
        let mut found = Found::default();
        match scope {
            Scope::Full => found.jobs.push(Job::List(None)),
            Scope::Paths(paths) => {
                'paths: for path in paths {
                    if paths.iter().any(|o| o != path && path.is_within(o)) {
                        continue;
                    }
                    // Only real folders lead to a path.
                    for ancestor in path.ancestors() {
                        match s.stat(&conn, ancestor.as_str()) {
                            Ok(Some(stat)) if stat.collection => {}
                            Ok(_) => continue 'paths,
                            Err(e) => {
                                hold(&mut found, path.clone(), "look at a folder above", e);
                                continue 'paths;
                            }
                        }
                    }
                    match s.stat(&conn, path.as_str()) {
                        Ok(Some(stat)) => walk.visit(path.clone(), stat, &mut found),
                        Ok(None) => {}
                        Err(e) => hold(&mut found, path.clone(), "look at", e),
                    }
                    if found.broken.is_some() {
                        break;
                    }
                }
            }
        }
        let run_job = |job, found: &mut Found| walk.run_job(job, found);
        let listing = walk::run(&walk.name, workers, found, run_job)?;
        // What the base knows and the listing left out is asked for by
        // name before it may read as deleted (see `Walk::confirm_gone`).
        let gone = vanished(&listing, cache, scope);
        if gone.is_empty() {
            return Ok(listing);
        }
        let confirm = Found {
            out: listing,
            jobs: gone.into_iter().map(Job::Confirm).collect(),
            broken: None,
        };
        walk::run(&walk.name, workers, confirm, run_job)
    }

    fn stat(&self, path: &RelPath) -> Result<Expect, ReplicaError> {
        let s = &self.shared;
        let conn = s.conn().map_err(|e| e.into_replica("inspect", path))?;
        let found = s
            .stat(&conn, path.as_str())
            .map_err(|e| e.into_replica("inspect", path))?;
        Ok(match found {
            None => Expect::Absent,
            Some(stat) if stat.collection => Expect::Dir,
            // WebDAV holds no permission bits.
            Some(stat) => Expect::File {
                size: stat.size,
                mtime_ns: stat.mtime_ns(),
                mode: None,
                version: Some(stat.version()),
            },
        })
    }

    fn open(&self, path: &RelPath) -> Result<Box<dyn Read + Send + '_>, ReplicaError> {
        let s = &self.shared;
        let conn = s.conn().map_err(|e| e.into_replica("read", path))?;
        let builder = s
            .request(&conn, "GET", s.url(path.as_str(), false))
            .timeout(s.target.timeout);
        // The bytes are verified against the planned hash by the caller, so
        // a file replaced meanwhile cannot land unnoticed.
        match s.send(builder, "GET", path.as_str(), &[200]) {
            Ok(response) => Ok(Box::new(Download::new(response, s))),
            Err(e) if e.status() == Some(404) => Err(ReplicaError::SourceChanged {
                path: path.to_string(),
            }),
            Err(e) => Err(e.into_replica("read", path)),
        }
    }

    fn open_at(
        &self,
        path: &RelPath,
        offset: u64,
        expected: &FileMeta,
    ) -> Result<Opened<'_>, ReplicaError> {
        self.open_version_at(path, offset, expected, None)
    }

    /// A GET with `Range: bytes=OFFSET-` and `If-Range` naming the listed
    /// version (its strong ETag: the token `version`, or for a caller
    /// without one the tag the file has now, looked up first; else its
    /// date), so a server whose file changed answers with the whole new
    /// file instead of a piece of it.
    /// A 206 must cover exactly the rest of the listed size; a 200 (a
    /// server without ranges) starts over at 0. Either answer must carry
    /// the listed version's ETag or date and size, or it is
    /// [`ReplicaError::SourceChanged`]: two versions are never spliced.
    fn open_version_at(
        &self,
        path: &RelPath,
        offset: u64,
        expected: &FileMeta,
        version: Option<&str>,
    ) -> Result<Opened<'_>, ReplicaError> {
        let s = &self.shared;
        let conn = s.conn().map_err(|e| e.into_replica("read", path))?;
        let mtime_secs = expected.mtime_ns.div_euclid(1_000_000_000);
        let changed = || ReplicaError::SourceChanged {
            path: path.to_string(),
        };
        let listed_etag = match version {
            Some(token) if token.starts_with('"') => Some(token.to_owned()),
            Some(_) => None,
            // Without the listed token a continuation is validated by the
            // file's ETag, taken only while the file still has the listed
            // size and date. RACE: another version of the same size in the
            // same second passes; the hash over the whole file catches it.
            None if offset > 0 => match s.stat(&conn, path.as_str()) {
                Ok(Some(stat))
                    if !stat.collection
                        && stat.size == expected.size
                        && stat.mtime_secs == mtime_secs =>
                {
                    stat.etag
                }
                Ok(_) => return Err(changed()),
                Err(e) if e.status() == Some(404) => return Err(changed()),
                Err(e) => return Err(e.into_replica("read", path)),
            },
            None => None,
        };
        let mut builder = s
            .request(&conn, "GET", s.url(path.as_str(), false))
            .timeout(s.target.timeout);
        if offset > 0 {
            let validator = match listed_etag.as_deref() {
                Some(etag) if etag.starts_with('"') => Some(etag.to_owned()),
                _ => format_http_date(mtime_secs),
            };
            builder = builder.header("Range", format!("bytes={offset}-"));
            if let Some(validator) = validator {
                builder = builder.header("If-Range", validator);
            }
        }
        let response = match s.send(builder, "GET", path.as_str(), &[200, 206]) {
            Ok(response) => response,
            // 416: the file is shorter than what already arrived.
            Err(e) if matches!(e.status(), Some(404) | Some(416)) => return Err(changed()),
            Err(e) => return Err(e.into_replica("read", path)),
        };
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let same_version = match (header("etag"), &listed_etag) {
            (Some(now), Some(listed)) => opaque(&now) == opaque(listed),
            _ => header("last-modified")
                .as_deref()
                .and_then(parse_http_date)
                .is_none_or(|secs| secs == mtime_secs),
        };
        if !same_version {
            return Err(changed());
        }
        let start = if response.status().as_u16() == 206 {
            let range = header("content-range")
                .as_deref()
                .and_then(parse_content_range);
            if range != Some((offset, expected.size.saturating_sub(1), expected.size)) {
                return Err(changed());
            }
            offset
        } else {
            if response
                .content_length()
                .is_some_and(|n| n != expected.size)
            {
                return Err(changed());
            }
            if offset > 0 {
                tracing::debug!(%path, offset, "the server sent the whole file instead of a range");
            }
            0
        };
        Ok((Box::new(Download::new(response, s)), start))
    }

    fn stage(
        &self,
        path: &RelPath,
        content: &mut dyn Read,
        hash: &ContentHash,
        _mtime_ns: i64,
        // WebDAV has no standard place for permission bits: the server
        // decides what a file it stores allows.
        _mode: Option<Mode>,
    ) -> Result<StagedWrite, ReplicaError> {
        let s = &self.shared;
        let conn = s.conn().map_err(|e| e.into_replica("write", path))?;
        // A file cannot exist without its folder; a partial sync may get
        // here before the folder's own action did.
        let parent = path.parent();
        if let Some(parent) = &parent {
            s.mkcol_all(&conn, parent.as_str())
                .map_err(|e| e.into_replica("create the folder of", path))?;
        }
        let name = temp_name_for(path.file_name());
        let temp = match &parent {
            Some(parent) => format!("{parent}/{name}"),
            None => name,
        };
        let (staged_hash, size) = match s.put_stream(
            &conn,
            &temp,
            content,
            &[("If-None-Match", "*".to_owned())],
            &[200, 201, 204],
        ) {
            Ok(done) => done,
            Err(PutError::Source(e)) => {
                s.delete(&conn, &temp, false, None);
                return Err(ReplicaError::io("write", path, e));
            }
            Err(PutError::Http(e)) => {
                s.delete(&conn, &temp, false, None);
                return Err(e.into_replica("write", path));
            }
        };
        if staged_hash != *hash {
            s.delete(&conn, &temp, false, None);
            return Err(ReplicaError::SourceChanged {
                path: path.to_string(),
            });
        }
        Ok(StagedWrite {
            path: path.clone(),
            temp: PathBuf::from(temp),
            hash: staged_hash,
            size,
            written: None,
            _lock: None,
        })
    }

    fn commit_staged(
        &self,
        staged: &StagedWrite,
        expect: &Expect,
    ) -> Result<SideEntry, ReplicaError> {
        self.commit_staged_naming_trash(staged, expect)
            .map(|(entry, _)| entry)
    }

    fn commit_staged_naming_trash(
        &self,
        staged: &StagedWrite,
        expect: &Expect,
    ) -> Result<(SideEntry, Option<RelPath>), ReplicaError> {
        let s = &*self.shared;
        let path = &staged.path;
        let temp = staged.temp.to_string_lossy();
        // `Overwrite: F` on the final MOVE: a file that appeared at the
        // target since the check makes it fail with 412, and the path is
        // re-planned.
        let (now, trash_name) = careful::commit(s, &temp, path, expect, || Ok(None))?;
        let entry = SideEntry {
            entry: Entry::File(FileMeta {
                hash: staged.hash,
                size: now.size,
                mtime_ns: now.mtime_ns(),
                mode: None,
            }),
            id: None,
            version: Some(now.version().into()),
        };
        Ok((entry, trash_name))
    }

    fn discard(&self, staged: StagedWrite) {
        let s = &self.shared;
        if let Ok(conn) = s.conn() {
            s.delete(&conn, &staged.temp.to_string_lossy(), false, None);
        }
    }

    fn mkdir(&self, path: &RelPath, _mode: Option<Mode>) -> Result<SideEntry, ReplicaError> {
        let s = &self.shared;
        let conn = s
            .conn()
            .map_err(|e| e.into_replica("create folder", path))?;
        match s.mkcol(&conn, path.as_str()) {
            Ok(()) => Ok(SideEntry::new(Entry::dir(None))),
            Err(e) => match s.stat(&conn, path.as_str()) {
                Ok(Some(stat)) if !stat.collection => Err(ReplicaError::Changed {
                    path: path.to_string(),
                }),
                _ => Err(e.into_replica("create folder", path)),
            },
        }
    }

    /// `Overwrite: F` never replaces the destination; a folder moves with
    /// everything inside it in one request.
    fn rename(&self, from: &RelPath, to: &RelPath, expect: &Expect) -> Result<(), ReplicaError> {
        careful::rename(&*self.shared, from, to, expect)
    }

    fn remove(&self, path: &RelPath, expect: &Expect) -> Result<(), ReplicaError> {
        self.remove_naming_trash(path, expect).map(|_| ())
    }

    fn remove_naming_trash(
        &self,
        path: &RelPath,
        expect: &Expect,
    ) -> Result<Option<RelPath>, ReplicaError> {
        careful::remove(&*self.shared, path, expect)
    }

    fn open_trashed(&self, name: &RelPath) -> Result<Box<dyn Read + Send + '_>, ReplicaError> {
        let s = &self.shared;
        let conn = s
            .conn()
            .map_err(|e| e.into_replica("read the trashed version", name))?;
        let trashed = format!("{}/{name}", kit::trash_dir());
        let builder = s
            .request(&conn, "GET", s.url(&trashed, false))
            .timeout(s.target.timeout);
        // The caller checks the bytes against the version's recorded hash.
        match s.send(builder, "GET", &trashed, &[200]) {
            Ok(response) => Ok(Box::new(Download::new(response, s))),
            Err(e) if matches!(e.status(), Some(404) | Some(410)) => Err(ReplicaError::io(
                "read the trashed version",
                name,
                std::io::Error::new(std::io::ErrorKind::NotFound, "not in the remote trash"),
            )),
            Err(e) => Err(e.into_replica("read the trashed version", name)),
        }
    }

    fn purge_trash(&self, older_than: Duration) -> Result<usize, ReplicaError> {
        kit::purge_trash(&*self.shared, older_than)
    }

    fn lease(&self, device: &str, ttl: Duration) -> Result<Option<Box<dyn Lease>>, ReplicaError> {
        let s = &self.shared;
        let conn = s.conn().map_err(|e| e.into_replica("lock", "lease"))?;
        s.mkcol_all(&conn, METADATA_DIR)
            .map_err(|e| e.into_replica("create", METADATA_DIR))?;
        let mut lease = WebdavLease {
            shared: self.shared.clone(),
            path: format!("{METADATA_DIR}/lease"),
            owner: super::lease::owner(device),
            ttl,
            held: false,
        };
        lease.acquire()?;
        Ok(Some(Box::new(lease)))
    }

    fn read_record(&self, name: &str) -> Result<Option<String>, ReplicaError> {
        let s = &self.shared;
        let path = format!("{METADATA_DIR}/{name}");
        let conn = s.conn().map_err(|e| e.into_replica("read", &path))?;
        let found = s
            .get_small(&conn, &path)
            .map_err(|e| e.into_replica("read", &path))?;
        Ok(found.map(|(text, _)| text))
    }

    /// One PUT over the old record: a WebDAV server stores the body under
    /// a temporary name and renames it in (Apache's `mod_dav_fs` does), so
    /// a reader sees the old record or the new one.
    fn write_record(&self, name: &str, content: &str) -> Result<(), ReplicaError> {
        let s = &self.shared;
        let path = format!("{METADATA_DIR}/{name}");
        let conn = s.conn().map_err(|e| e.into_replica("write", &path))?;
        if let Some((folder, _)) = path.rsplit_once('/') {
            s.mkcol_all(&conn, folder)
                .map_err(|e| e.into_replica("create", folder))?;
        }
        match s.put_stream(&conn, &path, &mut content.as_bytes(), &[], &[200, 201, 204]) {
            Ok(_) => Ok(()),
            Err(PutError::Http(e)) => Err(e.into_replica("write", &path)),
            Err(PutError::Source(e)) => Err(ReplicaError::io("write", &path, e)),
        }
    }

    fn list_records(&self, folder: &str) -> Result<Vec<String>, ReplicaError> {
        kit::list_records(&*self.shared, folder)
    }

    /// A plain DELETE: records are the agents' own, not versions to keep.
    fn remove_record(&self, name: &str) -> Result<(), ReplicaError> {
        let s = &self.shared;
        let path = format!("{METADATA_DIR}/{name}");
        let conn = s.conn().map_err(|e| e.into_replica("remove", &path))?;
        let builder = s
            .request(&conn, "DELETE", s.url(&path, false))
            .timeout(s.target.timeout);
        match s.send(builder, "DELETE", &path, &[200, 204]) {
            Ok(_) => Ok(()),
            Err(e) if e.status() == Some(404) => Ok(()),
            Err(e) => Err(e.into_replica("remove", &path)),
        }
    }
}

/// A failed request about the lease: 423 Locked means another agent is
/// writing the record at this moment (rclone answers so while it does),
/// which is that agent taking the lease, not a failure.
fn lease_error(e: WebdavError, path: &str) -> ReplicaError {
    if e.status() == Some(423) {
        return super::lease::lost_race();
    }
    e.into_replica("lock", path)
}

/// The advisory lease of a WebDAV remote: `.prism-sync/lease`, created with
/// `If-None-Match: *`, holding `EXPIRES DEVICE ID PID HOST`, as for a remote
/// folder.
struct WebdavLease {
    shared: Arc<Shared>,
    path: String,
    owner: super::lease::Owner,
    ttl: Duration,
    /// Whether the lease was taken (until then there is nothing to
    /// release).
    held: bool,
}

impl WebdavLease {
    fn content(&self) -> String {
        super::lease::record(&self.owner, self.ttl, SystemTime::now())
    }

    fn put(&self, conn: &Conn, condition: (&'static str, String)) -> Result<bool, ReplicaError> {
        let s = &self.shared;
        match s.put_stream(
            conn,
            &self.path,
            &mut self.content().as_bytes(),
            &[condition],
            &[200, 201, 204],
        ) {
            Ok(_) => Ok(true),
            Err(PutError::Http(e)) if e.status() == Some(412) => Ok(false),
            Err(PutError::Http(e)) => Err(lease_error(e, &self.path)),
            Err(PutError::Source(e)) => Err(ReplicaError::io("lock", &self.path, e)),
        }
    }

    /// Creates the lease record only where there is none: with
    /// `If-None-Match: *` on a server that honours it, else by uploading to
    /// a temporary name and moving it in with `Overwrite: F` (see the
    /// module docs). Returns false when a record is there. Called under a
    /// claim ([`super::claims`]): servers check the condition and write in
    /// two steps (Apache's mod_dav and rclone both do), so agents creating
    /// the record at once could all be told yes. `in_time` is the claim's
    /// check, asked again before the move (the upload may have taken long).
    fn create(
        &self,
        conn: &Conn,
        in_time: &dyn Fn() -> Result<(), ReplicaError>,
    ) -> Result<bool, ReplicaError> {
        let s = &self.shared;
        let conditional = s
            .honours_conditions(conn)
            .map_err(|e| e.into_replica("lock", &self.path))?;
        if conditional {
            self.put(conn, ("If-None-Match", "*".to_owned()))
        } else {
            self.move_in(conn, in_time)
        }
    }

    /// `Ok` when there is no lease record, a stale one or our own, else
    /// [`ReplicaError::Busy`] naming the holder.
    fn check_free(&self, conn: &Conn) -> Result<(), ReplicaError> {
        match self
            .shared
            .get_small(conn, &self.path)
            .map_err(|e| lease_error(e, &self.path))?
        {
            Some((text, _)) if !super::lease::held_by(&text, &self.owner) => {
                super::lease::check_stale(&text, SystemTime::now())
            }
            _ => Ok(()),
        }
    }

    /// Waits for a claim of our own to be the only one (see
    /// [`super::claims`]).
    fn claim<'a>(
        &self,
        claims: &'a WebdavClaims<'_>,
        wait: Wait,
    ) -> Result<Claim<'a>, ReplicaError> {
        let seen = &claims.shared.claims_seen;
        Claim::enter(claims, seen, &self.owner, self.ttl, wait, &|| {
            self.check_free(claims.conn)
        })
    }

    /// Uploads the record to a temporary name and moves it to the lease
    /// with `Overwrite: F` if still `in_time`; false when a record is
    /// there.
    fn move_in(
        &self,
        conn: &Conn,
        in_time: &dyn Fn() -> Result<(), ReplicaError>,
    ) -> Result<bool, ReplicaError> {
        let s = &self.shared;
        let temp = format!("{METADATA_DIR}/{}", temp_name_for("lease"));
        if let Err(e) = s.put_stream(
            conn,
            &temp,
            &mut self.content().as_bytes(),
            &[],
            &[200, 201, 204],
        ) {
            s.delete(conn, &temp, false, None);
            return Err(match e {
                PutError::Http(e) => lease_error(e, &self.path),
                PutError::Source(e) => ReplicaError::io("lock", &self.path, e),
            });
        }
        if let Err(late) = in_time() {
            s.delete(conn, &temp, false, None);
            return Err(late);
        }
        let moved = s.move_noreplace(conn, &temp, &self.path, false, None);
        if !matches!(moved, Ok(true)) {
            s.delete(conn, &temp, false, None);
        }
        moved.map_err(|e| lease_error(e, &self.path))
    }

    fn acquire(&mut self) -> Result<(), ReplicaError> {
        let conn = self
            .shared
            .conn()
            .map_err(|e| e.into_replica("lock", &self.path))?;
        // A live lease is busy without a claim (the usual case when
        // another agent writes: one read).
        self.check_free(&conn)?;
        let claims = WebdavClaims {
            shared: &self.shared,
            conn: &conn,
        };
        let claim = self.claim(&claims, Wait::AsTaker)?;
        claim.check_in_time()?;
        // From here a record of ours may be there even when the answer is
        // lost: dropping the lease removes it (only if it is ours).
        self.held = true;
        let in_time = || claim.check_in_time();
        let file = WebdavLeaseFile {
            lease: self,
            conn: &conn,
            in_time: &in_time,
        };
        let taken = super::lease::acquire_in_time(&file, SystemTime::now(), &in_time);
        // Only now: an agent that finds no claim finds the record.
        drop(claim);
        if let Err(ReplicaError::Busy(_)) = &taken {
            // Another agent's record is there: nothing of ours to release.
            self.held = false;
        }
        taken
    }
}

/// The claims folder on the share ([`super::claims`]).
struct WebdavClaims<'a> {
    shared: &'a Shared,
    conn: &'a Conn,
}

impl WebdavClaims<'_> {
    fn folder() -> String {
        format!("{METADATA_DIR}/{CLAIMS_DIR}")
    }
}

impl ClaimFolder for WebdavClaims<'_> {
    fn put(&self, name: &str) -> Result<(), ReplicaError> {
        let folder = Self::folder();
        let path = format!("{folder}/{name}");
        let put = || {
            self.shared
                .put_stream(self.conn, &path, &mut io::empty(), &[], &[200, 201, 204])
        };
        let put = match put() {
            // The folder is made the first time (no parent: Apache answers
            // 409, rclone 404).
            Err(PutError::Http(e)) if matches!(e.status(), Some(404 | 409)) => {
                self.shared
                    .mkcol_all(self.conn, &folder)
                    .map_err(|e| lease_error(e, &folder))?;
                put()
            }
            put => put,
        };
        match put {
            Ok(_) => Ok(()),
            Err(PutError::Http(e)) => Err(lease_error(e, &path)),
            Err(PutError::Source(e)) => Err(ReplicaError::io("lock", &path, e)),
        }
    }

    fn names(&self) -> Result<Vec<String>, ReplicaError> {
        let folder = Self::folder();
        match self.shared.children(self.conn, &folder) {
            Ok(children) => Ok(children.entries.into_iter().map(|(name, _)| name).collect()),
            Err(e) if e.status() == Some(404) => Ok(Vec::new()),
            Err(e) => Err(e.into_replica("list", &folder)),
        }
    }

    fn remove(&self, name: &str) {
        let path = format!("{}/{name}", Self::folder());
        self.shared.delete(self.conn, &path, false, None);
    }
}

/// The lease file on the share, for [`super::lease::acquire`].
struct WebdavLeaseFile<'a> {
    lease: &'a WebdavLease,
    conn: &'a Conn,
    /// The claim's check ([`Claim::check_in_time`]), asked before a
    /// staged record is moved in.
    in_time: &'a dyn Fn() -> Result<(), ReplicaError>,
}

impl super::lease::LeaseFile for WebdavLeaseFile<'_> {
    fn create(&self) -> Result<bool, ReplicaError> {
        self.lease.create(self.conn, self.in_time)
    }

    fn read(&self) -> Result<Option<(String, Option<String>)>, ReplicaError> {
        let path = &self.lease.path;
        self.lease
            .shared
            .get_small(self.conn, path)
            .map_err(|e| e.into_replica("lock", path))
    }

    /// Only the version read (its ETag), unless someone else renewed or
    /// took it over meanwhile.
    fn remove(&self, version: Option<&str>) {
        let s = &self.lease.shared;
        s.delete(self.conn, &self.lease.path, false, version);
    }
}

impl Lease for WebdavLease {
    fn renew(&mut self) -> Result<(), ReplicaError> {
        let s = &self.shared;
        let conn = s.conn().map_err(|e| e.into_replica("renew", &self.path))?;
        let claims = WebdavClaims {
            shared: s,
            conn: &conn,
        };
        let claim = self.claim(&claims, Wait::AsHolder)?;
        let current = s
            .get_small(&conn, &self.path)
            .map_err(|e| e.into_replica("renew", &self.path))?;
        let Some((text, etag)) = current.filter(|(t, _)| super::lease::held_by(t, &self.owner))
        else {
            return Err(super::lease::taken_over());
        };
        let _ = text;
        claim.check_in_time()?;
        // Replaced only if it is still the version just read.
        let renewed = match etag {
            Some(etag) => self.put(&conn, ("If-Match", etag))?,
            None => self.put(&conn, ("If-Match", "*".to_owned()))?,
        };
        if renewed {
            Ok(())
        } else {
            Err(super::lease::taken_over())
        }
    }
}

impl Drop for WebdavLease {
    fn drop(&mut self) {
        if !self.held {
            return;
        }
        let s = &self.shared;
        let Ok(conn) = s.conn() else {
            return;
        };
        // Only under a claim still in time, and only our own: a lease
        // taken over since stays its holder's. Without one, an agent may
        // have taken our expired record over between our read and our
        // delete (a server without ETags deletes whatever is there): the
        // record is left to expire instead.
        let claims = WebdavClaims {
            shared: s,
            conn: &conn,
        };
        let Ok(claim) = self.claim(&claims, Wait::Releasing) else {
            return;
        };
        if let Ok(Some((text, etag))) = s.get_small(&conn, &self.path)
            && super::lease::held_by(&text, &self.owner)
            && claim.check_in_time().is_ok()
        {
            s.delete(&conn, &self.path, false, etag.as_deref());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica(path: &str) -> WebdavReplica {
        WebdavReplica::new(WebdavTarget {
            tls: false,
            host: "127.0.0.1".into(),
            port: Some(8080),
            path: path.into(),
            username: None,
            ca_file: None,
            allow_insecure_http_auth: false,
            config_dir: None,
            timeout: DEFAULT_REQUEST_TIMEOUT,
            parallel_requests: 1,
        })
        .unwrap()
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write as _;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn a_gzip_listing_is_capped_by_what_it_decodes_to_and_a_bad_one_is_a_bad_answer() {
        let read_all = |mut limited: Limited<Box<dyn Read>>| {
            let mut out = Vec::new();
            let result = limited.read_to_end(&mut out);
            (result.is_ok(), out, limited.exceeded, limited.broke)
        };
        let text = b"<multistatus>hello</multistatus>".repeat(10);
        let (ok, out, _, _) = read_all(Limited::decoded(io::Cursor::new(gzip(&text)), true, 1024));
        assert!(ok);
        assert_eq!(out, text);
        // 1 MiB of zeros is about a kilobyte of gzip; the cap is on the
        // inflated bytes.
        let bomb = gzip(&vec![0u8; 1024 * 1024]);
        assert!(bomb.len() < 4096);
        let (ok, out, exceeded, _) =
            read_all(Limited::decoded(io::Cursor::new(bomb), true, 64 * 1024));
        assert!(!ok && exceeded && out.len() == 64 * 1024);
        // Not gzip at all: a bad answer, not a broken connection.
        let (ok, _, exceeded, broke) = read_all(Limited::decoded(
            io::Cursor::new(b"<not gzip/>".to_vec()),
            true,
            1024,
        ));
        assert!(!ok && !exceeded && !broke);
        // A plain answer passes as it is.
        let (ok, out, _, _) =
            read_all(Limited::decoded(io::Cursor::new(text.clone()), false, 1024));
        assert!(ok);
        assert_eq!(out, text);
    }

    #[test]
    fn hrefs_must_lie_below_the_share_on_the_same_origin() {
        let r = replica("/dav/my%20share");
        let s = &r.shared;
        assert_eq!(s.href_segments("/dav/my%20share/"), Ok(vec![]));
        assert_eq!(
            s.href_segments("/dav/my share/a%2Bb/c.txt"),
            Ok(vec!["a+b".to_owned(), "c.txt".to_owned()])
        );
        assert_eq!(
            s.href_segments("http://127.0.0.1:8080/dav/my%20share/x"),
            Ok(vec!["x".to_owned()])
        );
        for hostile in [
            "/dav/my%20share/../../etc/passwd",
            "/dav/my%20share/%2e%2e/x",
            "/dav/my%20share/a%2Fb",
            "/dav/other/x",
            "/dav",
            "http://evil.example:8080/dav/my%20share/x",
            "http://127.0.0.1:9999/dav/my%20share/x",
            "https://127.0.0.1:8080/dav/my%20share/x",
            "http://user@127.0.0.1:8080/dav/my%20share/x",
            "relative/x",
            "/dav/my%20share/x?y",
            "/dav/my%20share//x",
            "/dav/my%20share/%ff",
            "/dav/my%20share/%zz",
            "/dav/my%20share/a%+f",
            "/dav/my%20share/a%-1",
        ] {
            assert!(s.href_segments(hostile).is_err(), "{hostile} was accepted");
        }
    }

    #[test]
    fn urls_encode_each_segment_and_collections_end_in_a_slash() {
        let r = replica("/dav");
        let s = &r.shared;
        assert_eq!(
            s.url("a b/c#?.txt", false).as_str(),
            "http://127.0.0.1:8080/dav/a%20b/c%23%3F.txt"
        );
        assert_eq!(s.url("", true).as_str(), "http://127.0.0.1:8080/dav/");
        assert_eq!(s.url("d", true).as_str(), "http://127.0.0.1:8080/dav/d/");
        assert_eq!(r.describe(), "webdav://127.0.0.1:8080/dav");
    }

    #[test]
    fn content_ranges_and_http_dates_round_trip() {
        assert_eq!(
            parse_content_range("bytes 100-199/200"),
            Some((100, 199, 200))
        );
        assert_eq!(parse_content_range("bytes */200"), None);
        assert_eq!(parse_content_range("items 1-2/3"), None);
        let date = format_http_date(784_111_777).unwrap();
        assert_eq!(date, "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(parse_http_date(&date), Some(784_111_777));
    }

    #[test]
    fn versions_are_opaque_etags_and_only_strong_ones_are_sent() {
        let stat = |etag: Option<&str>| RemoteStat {
            collection: false,
            size: 5,
            mtime_secs: 100,
            etag: etag.map(str::to_owned),
        };
        assert_eq!(stat(Some("\"5-abc\"")).version(), "\"5-abc\"");
        assert_eq!(stat(Some("W/\"5-abc\"")).version(), "\"5-abc\"");
        assert_eq!(stat(Some("5-abc")).version(), "5:100");
        assert_eq!(stat(Some("W/\"5-abc\"")).strong_etag(), None);
        assert_eq!(stat(None).version(), "5:100");
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:01:40 GMT"), Some(100));
        assert_eq!(parse_http_date("yesterday"), None);
    }
}
