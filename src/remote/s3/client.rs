//! The S3 conversation: one signed request at a time, retried where that
//! is safe, with answers turned into values or [`S3Error`]s.
//!
//! An [`S3Client`] serves one bucket and prefix. Every key it is given is
//! relative to the prefix and checked ([`keys::check_relative`]); every
//! key it lists comes back relative to the prefix, or as a
//! [`KeyProblem`]. The client is `Send + Sync`: the HTTP connections are
//! pooled and shared by every thread that uses it.

use std::collections::{BTreeMap, HashSet};
use std::io::{self, Read};
use std::time::{Duration, SystemTime};

use reqwest::blocking::{Body, Client, Response};
use reqwest::header::HeaderMap;
use reqwest::{Method, Url};
use time::OffsetDateTime;

use super::body::{self, Pumped, UploadSource};
use super::credentials::{self, CredentialSource, Credentials, Environment};
use super::error::{S3Error, credential_hint, shown_message};
use super::keys::{self, Listed};
use super::retry::{RetryPolicy, is_retryable_status, parse_retry_after};
use super::sign::{self, Signer, UNSIGNED_PAYLOAD};
use super::xml::{self, Element};
use crate::percent::{self, Plus};
use crate::remote::error_chain;

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// The default wait for an answer (and for each read of one's body).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The largest XML answer read: a page of 1,000 keys of 1,024 bytes each,
/// URL-encoded, is about 4 MiB.
pub const MAX_ANSWER_BYTES: u64 = 16 * 1024 * 1024;

/// The most entries (objects and refused keys) one listing collects; past
/// that it is an error rather than an ever-growing allocation.
pub const MAX_LISTED: usize = 5_000_000;

/// A listing gives up after this many pages in a row without a key: a
/// server that keeps saying "more" while sending nothing.
const MAX_EMPTY_PAGES: u32 = 100;

/// The user-metadata key that holds a file's plaintext BLAKE3 (hex).
pub const META_BLAKE3: &str = "prism-blake3";

/// The user-metadata key reserved for a file's permission bits (octal).
pub const META_MODE: &str = "prism-mode";

/// User metadata (`x-amz-meta-NAME`), names without the prefix, in lower
/// case; values are ASCII.
pub type Metadata = BTreeMap<String, String>;

/// The default region.
pub const DEFAULT_REGION: &str = "us-east-1";

/// Where a bucket is and how to log in.
#[derive(Clone, Debug)]
pub struct S3Settings {
    pub bucket: String,
    /// The folder inside the bucket (`a/b`, or empty for the whole bucket).
    pub prefix: String,
    /// Another S3 service's URL (`http://127.0.0.1:8333`): path-style
    /// addressing there. `None`: AWS, virtual-host style.
    pub endpoint: Option<String>,
    pub region: String,
    pub credentials: CredentialSource,
    /// How long a server may stay silent before a request fails (uploads
    /// are bounded by TCP instead: see the module docs).
    pub timeout: Duration,
    pub retry: RetryPolicy,
}

impl S3Settings {
    /// A bucket and prefix with the default region, timeout and retries,
    /// and credentials from the environment or `~/.aws`.
    pub fn new(bucket: &str, prefix: &str) -> S3Settings {
        S3Settings {
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
            endpoint: None,
            region: DEFAULT_REGION.to_owned(),
            credentials: CredentialSource::default(),
            timeout: DEFAULT_TIMEOUT,
            retry: RetryPolicy::default(),
        }
    }
}

/// What a conditional write requires of the key it writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Condition {
    /// Nothing: write whatever is there (only for servers that ignore
    /// conditions, after a re-check; and for probes).
    None,
    /// The key must not exist (`If-None-Match: *`).
    Absent,
    /// The key must hold this version (`If-Match: ETAG`).
    Matches(String),
}

impl Condition {
    fn header(&self) -> Option<(String, String)> {
        match self {
            Condition::None => None,
            Condition::Absent => Some(("if-none-match".into(), "*".into())),
            Condition::Matches(etag) => Some(("if-match".into(), etag.clone())),
        }
    }
}

/// Which conditional requests a server honours (see
/// [`S3Client::probe_conditions`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConditionSupport {
    /// `If-None-Match: *` on PUT: a new key is never written over another.
    pub create: bool,
    /// `If-Match` on PUT: a replacement never lands on an unseen version.
    pub replace: bool,
    /// `x-amz-copy-source-if-match` on CopyObject.
    pub copy: bool,
    /// `If-None-Match: *` on CopyObject: a copy never lands on a key
    /// someone else just wrote.
    pub copy_create: bool,
    /// `If-Match` on DELETE: a removal never takes an unseen version.
    pub delete: bool,
}

impl ConditionSupport {
    /// Every condition holds: no re-check is needed before a write.
    pub fn all(&self) -> bool {
        self.create && self.replace && self.copy && self.copy_create && self.delete
    }

    /// What the server ignores, as a status line can say it.
    pub fn ignored(&self) -> Vec<&'static str> {
        [
            (self.create, "If-None-Match on PUT"),
            (self.replace, "If-Match on PUT"),
            (self.copy, "x-amz-copy-source-if-match on copies"),
            (self.copy_create, "If-None-Match on copies"),
            (self.delete, "If-Match on DELETE"),
        ]
        .into_iter()
        .filter(|(honoured, _)| !honoured)
        .map(|(_, what)| what)
        .collect()
    }
}

/// What a HEAD finds at a key, against the version a step is about to act
/// on (see [`S3Client::version_of`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Version {
    /// Still that version.
    Same(ObjectHead),
    /// Another version is there now.
    Other,
    /// Nothing is there.
    Gone,
}

/// One object of a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Relative to the client's prefix; ends in `/` for a folder marker.
    pub key: String,
    pub size: u64,
    /// As the server sent it, with its quotes.
    pub etag: String,
    pub last_modified: Option<SystemTime>,
}

impl ObjectInfo {
    /// A zero-byte `name/` object that stands for a folder.
    pub fn is_folder_marker(&self) -> bool {
        self.key.ends_with('/')
    }
}

/// A listed key that was refused, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyProblem {
    /// The key as it can be shown (escaped, cut).
    pub key: String,
    pub reason: String,
}

/// A whole listing: the usable objects, sorted by key, and the refused
/// ones.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectList {
    pub objects: Vec<ObjectInfo>,
    pub problems: Vec<KeyProblem>,
    /// How many pages the server sent.
    pub pages: u32,
}

/// What a HEAD tells of an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectHead {
    pub size: u64,
    pub etag: String,
    pub last_modified: Option<SystemTime>,
    pub metadata: Metadata,
}

/// A download in progress.
pub struct ObjectReader {
    response: Response,
    /// The version being read.
    pub etag: String,
    /// Where the bytes start: the range asked for, or 0 where the server
    /// sent the whole object instead.
    pub start: u64,
    /// How many bytes this answer carries, where the server said.
    pub len: Option<u64>,
}

/// A read that fails is the connection's fault (the answer was accepted
/// already): it reports `ConnectionAborted`, so the reader of a transfer
/// continues it at its offset with a ranged GET instead of blaming the
/// file.
impl Read for ObjectReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.response.read(buf).map_err(|e| {
            io::Error::new(
                io::ErrorKind::ConnectionAborted,
                format!("{} (the connection broke)", error_chain(&e)),
            )
        })
    }
}

/// A multipart upload that is still open on the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingUpload {
    /// Relative to the client's prefix.
    pub key: String,
    pub upload_id: String,
    pub initiated: Option<SystemTime>,
}

/// A client of one bucket and prefix.
pub struct S3Client {
    http: Client,
    /// The scheme and authority requests go to.
    base: Url,
    /// `/BUCKET` with path-style addressing, empty with virtual hosts.
    bucket_path: String,
    bucket: String,
    /// Empty, or ending in `/`.
    prefix: String,
    region: String,
    credentials: Credentials,
    timeout: Duration,
    retry: RetryPolicy,
    /// For messages: `s3://BUCKET on ENDPOINT`.
    shown: String,
}

/// The body of a request.
pub(super) enum Payload<'a> {
    Empty,
    /// A small body, signed with its hash.
    Small(Vec<u8>),
    /// `len` bytes streamed from `source`, unsigned; `offset` is where in
    /// the source they start (for a retry).
    Stream {
        source: &'a mut dyn UploadSource,
        offset: u64,
        len: u64,
    },
}

/// One request to make.
pub(super) struct Call<'a> {
    pub method: Method,
    /// The operation's name for messages.
    pub op: &'static str,
    /// The full key, or empty for the bucket.
    pub key: String,
    pub query: Vec<(String, String)>,
    /// Lower-case names.
    pub headers: Vec<(String, String)>,
    pub payload: Payload<'a>,
}

impl<'a> Call<'a> {
    pub fn new(method: Method, op: &'static str, key: String) -> Call<'a> {
        Call {
            method,
            op,
            key,
            query: Vec::new(),
            headers: Vec::new(),
            payload: Payload::Empty,
        }
    }

    pub fn query(mut self, name: &str, value: &str) -> Self {
        self.query.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Goes back to the payload's start for a retry; false where the
    /// payload cannot be sent again.
    fn rewind(&mut self) -> bool {
        match &mut self.payload {
            Payload::Empty | Payload::Small(_) => true,
            Payload::Stream { source, offset, .. } => matches!(source.seek_to(*offset), Ok(true)),
        }
    }
}

/// How one attempt ended before an answer arrived.
enum Failure {
    /// The upload's source failed: not the server's doing, not retried.
    Source(io::Error),
    Http(reqwest::Error),
}

/// A successful exchange.
pub(super) enum Answer {
    /// The answer, its body not read yet.
    Open(Response),
    /// The answer's XML document, read whole.
    Document(HeaderMap, Element),
}

impl S3Client {
    /// A client with credentials from the process's environment and home
    /// folder (see [`credentials`]).
    pub fn new(settings: S3Settings) -> Result<S3Client, S3Error> {
        S3Client::with_environment(settings, &Environment::process())
    }

    /// A client with credentials found in `env`.
    pub fn with_environment(
        settings: S3Settings,
        env: &Environment<'_>,
    ) -> Result<S3Client, S3Error> {
        let bucket = settings.bucket.clone();
        if bucket.is_empty()
            || bucket.len() > 255
            || !bucket
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        {
            return Err(S3Error::Settings(format!(
                "{bucket:?} is not a bucket name (letters, digits, `-`, `.` and `_` only)"
            )));
        }
        let prefix = settings.prefix.trim_matches('/');
        let prefix = if prefix.is_empty() {
            String::new()
        } else {
            keys::check_relative(prefix, "")
                .map_err(|reason| S3Error::Settings(format!("the prefix: {reason}")))?;
            format!("{prefix}/")
        };
        let (base, bucket_path, shown_endpoint) = match &settings.endpoint {
            Some(endpoint) => {
                let url = Url::parse(endpoint).map_err(|e| {
                    S3Error::Settings(format!("the endpoint {endpoint:?} is not a URL: {e}"))
                })?;
                if !matches!(url.scheme(), "http" | "https")
                    || url.host_str().is_none()
                    || !url.username().is_empty()
                    || url.password().is_some()
                    || !url.path().trim_end_matches('/').is_empty()
                    || url.query().is_some()
                {
                    return Err(S3Error::Settings(format!(
                        "the endpoint must be http:// or https:// with a host and port only, \
                         like http://127.0.0.1:8333 (got {:?})",
                        url.as_str()
                    )));
                }
                let shown = url.as_str().trim_end_matches('/').to_owned();
                (url, format!("/{bucket}"), shown)
            }
            None if bucket.contains('.') => {
                // A dotted bucket name breaks the wildcard certificate of
                // virtual hosts: path style on the regional endpoint.
                let host = format!("https://s3.{}.amazonaws.com", settings.region);
                let url = Url::parse(&host).map_err(|e| S3Error::Settings(e.to_string()))?;
                (url, format!("/{bucket}"), host)
            }
            None => {
                let host = format!("https://{bucket}.s3.{}.amazonaws.com", settings.region);
                let url = Url::parse(&host).map_err(|e| {
                    S3Error::Settings(format!(
                        "the region {:?} is not usable: {e}",
                        settings.region
                    ))
                })?;
                (url, String::new(), host)
            }
        };
        let credentials = credentials::resolve(&settings.credentials, env)?;
        let mut builder = Client::builder()
            .user_agent(concat!("prism-sync/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT)
            // Uploads may take long; other requests set their own limit,
            // and a dead peer is noticed by TCP (see below).
            .timeout(None)
            .tcp_keepalive(Duration::from_secs(30))
            .pool_idle_timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none());
        #[cfg(target_os = "linux")]
        {
            builder = builder.tcp_user_timeout(settings.timeout);
        }
        let http = builder
            .build()
            .map_err(|e| S3Error::Settings(format!("cannot set up the HTTP client: {e}")))?;
        Ok(S3Client {
            http,
            base,
            bucket_path,
            shown: format!("s3://{bucket} on {shown_endpoint}"),
            bucket,
            prefix,
            region: settings.region,
            credentials,
            timeout: settings.timeout,
            retry: settings.retry,
        })
    }

    /// `s3://BUCKET on ENDPOINT`, for messages; never holds a secret.
    pub fn describe(&self) -> &str {
        &self.shown
    }

    /// The prefix every key lives under (empty, or ending in `/`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The full key of a relative one, checked.
    pub(super) fn full_key(&self, rel: &str) -> Result<String, S3Error> {
        keys::check_relative(rel, &self.prefix).map_err(|reason| S3Error::BadKey {
            key: keys::shown(rel),
            reason,
        })?;
        Ok(format!("{}{rel}", self.prefix))
    }

    /// A full key as messages show it: relative to the prefix.
    pub(super) fn shown_key(&self, full: &str) -> String {
        full.strip_prefix(&self.prefix).unwrap_or(full).to_owned()
    }

    fn url(&self, call: &Call<'_>) -> Url {
        let mut url = self.base.clone();
        let path = if call.key.is_empty() && !self.bucket_path.is_empty() {
            self.bucket_path.clone()
        } else {
            format!("{}/{}", self.bucket_path, sign::encode_path(&call.key))
        };
        url.set_path(&path);
        if !call.query.is_empty() {
            let query = call
                .query
                .iter()
                .map(|(k, v)| {
                    if v.is_empty() {
                        sign::encode_query(k)
                    } else {
                        format!("{}={}", sign::encode_query(k), sign::encode_query(v))
                    }
                })
                .collect::<Vec<_>>()
                .join("&");
            url.set_query(Some(&query));
        }
        url
    }

    /// One attempt: signs and sends `call`.
    fn send_once(&self, call: &mut Call<'_>) -> Result<Response, Failure> {
        let url = self.url(call);
        let host = match (url.host_str(), url.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_owned(),
            (None, _) => String::new(),
        };
        let payload_hash = match &call.payload {
            Payload::Empty => sign::payload_hash(b""),
            Payload::Small(bytes) => sign::payload_hash(bytes),
            Payload::Stream { .. } => UNSIGNED_PAYLOAD.to_owned(),
        };
        let now = OffsetDateTime::now_utc();
        let mut headers = call.headers.clone();
        headers.push(("x-amz-date".into(), sign::amz_date(now)));
        headers.push(("x-amz-content-sha256".into(), payload_hash.clone()));
        if let Some(token) = &self.credentials.session_token {
            headers.push(("x-amz-security-token".into(), token.expose().to_owned()));
        }
        let mut signed = headers.clone();
        signed.push(("host".into(), host));
        let signer = Signer {
            access_key_id: &self.credentials.access_key_id,
            secret_access_key: self.credentials.secret_access_key.expose(),
            region: &self.region,
        };
        let query = call.query.clone();
        let authorization = signer.authorization(
            &sign::Request {
                method: call.method.as_str(),
                path: url.path(),
                query: &query,
                headers: &signed,
                payload_hash: &payload_hash,
            },
            now,
        );
        let mut builder = self.http.request(call.method.clone(), url);
        for (name, value) in &headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        builder = builder.header("authorization", authorization);
        match &mut call.payload {
            Payload::Empty => {
                let builder = builder.timeout(self.timeout);
                let builder = if matches!(call.method, Method::PUT | Method::POST) {
                    builder.body(Vec::new())
                } else {
                    builder
                };
                builder.send().map_err(Failure::Http)
            }
            Payload::Small(bytes) => builder
                .timeout(self.timeout)
                .body(bytes.clone())
                .send()
                .map_err(Failure::Http),
            Payload::Stream { source, len, .. } => {
                let len = *len;
                let (tx, reader) = body::channel();
                std::thread::scope(|scope| {
                    let request =
                        scope.spawn(move || builder.body(Body::sized(reader, len)).send());
                    let pumped = body::pump(&mut **source, len, tx);
                    let sent = request.join().expect("the upload thread panicked");
                    match pumped {
                        Pumped::SourceFailed(e) => Err(Failure::Source(e)),
                        Pumped::Done => sent.map_err(Failure::Http),
                    }
                })
            }
        }
    }

    /// Sends `call`, retrying as [`super::retry`] says, and returns the
    /// successful answer, read as an XML document when `document` is set
    /// (an answer that is a 200 holding an `<Error>`, as a copy or a
    /// multipart completion may send, counts as failed).
    pub(super) fn exchange(&self, call: &mut Call<'_>, document: bool) -> Result<Answer, S3Error> {
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let last = attempt >= self.retry.attempts.max(1);
            let (status, retry_after, code, message) = match self.send_once(call) {
                Err(Failure::Source(source)) => {
                    return Err(S3Error::Source {
                        key: self.shown_key(&call.key),
                        source,
                    });
                }
                Err(Failure::Http(e)) => {
                    let reason = error_chain(&e);
                    let away = e.is_timeout() || e.is_connect();
                    if away || last || !call.rewind() {
                        return Err(S3Error::Offline {
                            endpoint: self.shown.clone(),
                            reason,
                        });
                    }
                    tracing::debug!(op = call.op, attempt, error = %reason, "S3 request broke; retrying");
                    std::thread::sleep(self.retry.delay(attempt, None));
                    continue;
                }
                Ok(response) if response.status().is_success() => {
                    if !document {
                        return Ok(Answer::Open(response));
                    }
                    let headers = response.headers().clone();
                    match read_document(response) {
                        Ok(root) if root.name == "Error" => {
                            let code = root.text_of("Code").unwrap_or_default().to_owned();
                            let message = root.text_of("Message").unwrap_or_default().to_owned();
                            (500, None, code, message)
                        }
                        Ok(root) => return Ok(Answer::Document(headers, root)),
                        Err(ReadFailure::Transport(e)) => {
                            if last || !call.rewind() {
                                return Err(S3Error::Offline {
                                    endpoint: self.shown.clone(),
                                    reason: e.to_string(),
                                });
                            }
                            std::thread::sleep(self.retry.delay(attempt, None));
                            continue;
                        }
                        Err(ReadFailure::Bad(reason)) => {
                            return Err(S3Error::BadAnswer {
                                endpoint: self.shown.clone(),
                                op: call.op,
                                reason,
                            });
                        }
                    }
                }
                Ok(response) => {
                    let status = response.status().as_u16();
                    let retry_after = response
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(parse_retry_after);
                    let (code, message) = if call.method == Method::HEAD {
                        (String::new(), String::new())
                    } else {
                        match read_document(response) {
                            Ok(root) if root.name == "Error" => (
                                root.text_of("Code").unwrap_or_default().to_owned(),
                                root.text_of("Message").unwrap_or_default().to_owned(),
                            ),
                            _ => (String::new(), String::new()),
                        }
                    };
                    (status, retry_after, code, message)
                }
            };
            if is_retryable_status(status, &code) && !last && call.rewind() {
                let wait = self.retry.delay(attempt, retry_after);
                tracing::debug!(
                    op = call.op,
                    status,
                    code,
                    attempt,
                    ?wait,
                    "S3 asked to retry"
                );
                std::thread::sleep(wait);
                continue;
            }
            return Err(self.status_error(call, status, code, message, attempt));
        }
    }

    fn status_error(
        &self,
        call: &Call<'_>,
        status: u16,
        code: String,
        message: String,
        attempts: u32,
    ) -> S3Error {
        let endpoint = self.shown.clone();
        let key = self.shown_key(&call.key);
        if let Some(hint) = credential_hint(&code) {
            return S3Error::Credentials {
                endpoint,
                access_key_id: self.credentials.access_key_id.clone(),
                origin: self.credentials.origin.clone(),
                code,
                hint,
            };
        }
        match (status, code.as_str()) {
            (412, _) => S3Error::PreconditionFailed { endpoint, key },
            (404, "NoSuchBucket") => S3Error::NoSuchBucket {
                endpoint,
                bucket: self.bucket.clone(),
            },
            (404, "NoSuchUpload") => S3Error::NoSuchUpload { endpoint, key },
            (404, _) => S3Error::NoSuchKey { endpoint, key },
            (403, _) => S3Error::AccessDenied {
                endpoint,
                op: call.op,
                key,
                code: if code.is_empty() {
                    "HTTP 403 without an error code: wrong credentials or no permission".into()
                } else {
                    code
                },
            },
            _ if is_retryable_status(status, &code) => S3Error::Unavailable {
                endpoint,
                op: call.op,
                key,
                status,
                code,
                attempts,
            },
            _ => S3Error::Status {
                endpoint,
                op: call.op,
                key,
                status,
                code,
                message: shown_message(&message),
            },
        }
    }

    /// [`S3Client::exchange`] for an answer whose body is not needed.
    fn send(&self, mut call: Call<'_>) -> Result<Response, S3Error> {
        match self.exchange(&mut call, false)? {
            Answer::Open(response) => Ok(response),
            Answer::Document(..) => unreachable!("no document was asked for"),
        }
    }

    /// [`S3Client::exchange`] for an XML answer whose root must be `root`.
    pub(super) fn send_document(
        &self,
        mut call: Call<'_>,
        root: &str,
    ) -> Result<(HeaderMap, Element), S3Error> {
        match self.exchange(&mut call, true)? {
            Answer::Document(headers, element) if element.name == root => Ok((headers, element)),
            Answer::Document(_, element) => Err(S3Error::BadAnswer {
                endpoint: self.shown.clone(),
                op: call.op,
                reason: format!("expected <{root}>, got <{}>", element.name),
            }),
            Answer::Open(_) => unreachable!("a document was asked for"),
        }
    }

    pub(super) fn bad_answer(&self, op: &'static str, reason: impl Into<String>) -> S3Error {
        S3Error::BadAnswer {
            endpoint: self.shown.clone(),
            op,
            reason: reason.into(),
        }
    }

    /// Lists every object below `below` (empty, or a relative folder
    /// ending in `/`), page by page; `page_size` asks for that many keys a
    /// page (`max-keys`; servers may send fewer). Refused keys are
    /// returned as problems, one each; a malformed page is an error.
    pub fn list(&self, below: &str, page_size: Option<u32>) -> Result<ObjectList, S3Error> {
        let prefix = if below.is_empty() {
            self.prefix.clone()
        } else {
            if !below.ends_with('/') {
                return Err(S3Error::BadKey {
                    key: keys::shown(below),
                    reason: "a listing's folder must end in `/`".into(),
                });
            }
            self.full_key(below)?
        };
        let mut list = ObjectList::default();
        let mut seen: HashSet<String> = HashSet::new();
        let mut tokens: HashSet<String> = HashSet::new();
        let mut token: Option<String> = None;
        let mut empty_pages = 0u32;
        loop {
            let mut call = Call::new(Method::GET, "ListObjectsV2", String::new())
                .query("list-type", "2")
                .query("encoding-type", "url")
                .query("prefix", &prefix);
            if let Some(size) = page_size {
                call = call.query("max-keys", &size.to_string());
            }
            if let Some(token) = &token {
                call = call.query("continuation-token", token);
            }
            let (_, page) = self.send_document(call, "ListBucketResult")?;
            list.pages += 1;
            let encoded = page
                .text_of("EncodingType")
                .is_some_and(|e| e.eq_ignore_ascii_case("url"));
            let before = list.objects.len() + list.problems.len();
            for contents in page.all("Contents") {
                let Some(raw) = contents.child("Key").map(|k| k.text.as_str()) else {
                    return Err(self.bad_answer("ListObjectsV2", "an entry without a <Key>"));
                };
                let key = if encoded {
                    match url_decode(raw) {
                        Some(bytes) => bytes,
                        None => {
                            list.problems.push(KeyProblem {
                                key: keys::shown(raw),
                                reason: format!(
                                    "the key {} is not valid URL encoding",
                                    keys::shown(raw)
                                ),
                            });
                            continue;
                        }
                    }
                } else {
                    raw.as_bytes().to_vec()
                };
                let shown = keys::shown(&String::from_utf8_lossy(&key));
                let refuse = |reason: String| KeyProblem {
                    key: shown.clone(),
                    reason,
                };
                let rel = match keys::relative_to_prefix(&key, &self.prefix) {
                    Ok(Listed::Key(rel)) => rel,
                    Ok(Listed::Prefix) => continue,
                    Err(reason) => {
                        list.problems.push(refuse(reason));
                        continue;
                    }
                };
                if !rel.starts_with(below) {
                    list.problems.push(refuse(format!(
                        "the key {shown} is not under the folder {below:?} that was listed"
                    )));
                    continue;
                }
                let Some(size) = contents.text_of("Size").and_then(|s| s.parse::<u64>().ok())
                else {
                    list.problems
                        .push(refuse(format!("the key {shown} has no valid <Size>")));
                    continue;
                };
                if !seen.insert(rel.clone()) {
                    list.problems
                        .push(refuse(format!("the key {shown} is listed twice")));
                    continue;
                }
                list.objects.push(ObjectInfo {
                    key: rel,
                    size,
                    etag: contents.text_of("ETag").unwrap_or_default().to_owned(),
                    last_modified: contents
                        .text_of("LastModified")
                        .and_then(crate::timefmt::parse),
                });
                if list.objects.len() + list.problems.len() > MAX_LISTED {
                    return Err(self.bad_answer(
                        "ListObjectsV2",
                        format!("the listing has more than {MAX_LISTED} entries"),
                    ));
                }
            }
            if list.objects.len() + list.problems.len() == before {
                empty_pages += 1;
            } else {
                empty_pages = 0;
            }
            if page.text_of("IsTruncated") != Some("true") {
                break;
            }
            let Some(next) = page
                .text_of("NextContinuationToken")
                .filter(|t| !t.is_empty())
            else {
                return Err(self.bad_answer(
                    "ListObjectsV2",
                    "a truncated page without a <NextContinuationToken>",
                ));
            };
            if !tokens.insert(next.to_owned()) {
                return Err(self.bad_answer(
                    "ListObjectsV2",
                    "the server repeated a continuation token (the listing would never end)",
                ));
            }
            if empty_pages >= MAX_EMPTY_PAGES {
                return Err(self.bad_answer(
                    "ListObjectsV2",
                    format!("{MAX_EMPTY_PAGES} pages in a row said there is more but held nothing"),
                ));
            }
            token = Some(next.to_owned());
        }
        list.objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(list)
    }

    /// Whether any key lies below `below` (a relative folder ending in
    /// `/`, or empty: the whole prefix): one ListObjectsV2 request for one
    /// key, however many there are.
    pub fn any_below(&self, below: &str) -> Result<bool, S3Error> {
        if !below.is_empty() && !below.ends_with('/') {
            return Err(S3Error::BadKey {
                key: keys::shown(below),
                reason: "a listing's folder must end in `/`".into(),
            });
        }
        let prefix = if below.is_empty() {
            self.prefix.clone()
        } else {
            self.full_key(below)?
        };
        let call = Call::new(Method::GET, "ListObjectsV2", String::new())
            .query("list-type", "2")
            .query("encoding-type", "url")
            .query("prefix", &prefix)
            .query("max-keys", "1");
        let (_, page) = self.send_document(call, "ListBucketResult")?;
        Ok(page.all("Contents").next().is_some())
    }

    /// HEAD of `rel`: its size, version and user metadata; `None` when it
    /// does not exist.
    pub fn head(&self, rel: &str) -> Result<Option<ObjectHead>, S3Error> {
        let key = self.full_key(rel)?;
        let response = match self.send(Call::new(Method::HEAD, "HEAD", key)) {
            Ok(response) => response,
            Err(S3Error::NoSuchKey { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let headers = response.headers();
        let mut metadata = Metadata::new();
        for (name, value) in headers {
            if let Some(meta) = name.as_str().strip_prefix("x-amz-meta-")
                && let Ok(value) = value.to_str()
            {
                metadata.insert(meta.to_owned(), value.to_owned());
            }
        }
        Ok(Some(ObjectHead {
            size: header(headers, "content-length")
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| self.bad_answer("HEAD", "no Content-Length"))?,
            etag: header(headers, "etag").unwrap_or_default(),
            last_modified: header(headers, "last-modified").and_then(|v| parse_http_date(&v)),
            metadata,
        }))
    }

    /// GET of `rel` from byte `from` on; with `if_match`, only that
    /// version (another one is [`S3Error::PreconditionFailed`]).
    pub fn get(
        &self,
        rel: &str,
        from: u64,
        if_match: Option<&str>,
    ) -> Result<ObjectReader, S3Error> {
        let key = self.full_key(rel)?;
        let mut call = Call::new(Method::GET, "GET", key);
        if from > 0 {
            call = call.header("range", &format!("bytes={from}-"));
        }
        if let Some(etag) = if_match {
            call = call.header("if-match", etag);
        }
        let response = self.send(call)?;
        let headers = response.headers();
        let start = if response.status().as_u16() == 206 {
            header(headers, "content-range")
                .and_then(|v| {
                    v.strip_prefix("bytes ")
                        .and_then(|r| r.split('-').next())
                        .and_then(|s| s.parse().ok())
                })
                .unwrap_or(from)
        } else {
            0
        };
        let etag = header(headers, "etag").unwrap_or_default();
        if let Some(expected) = if_match
            && !etag.is_empty()
            && !crate::remote::same_etag(&etag, expected)
        {
            // A server that ignored If-Match: the bytes are another version.
            return Err(S3Error::PreconditionFailed {
                endpoint: self.shown.clone(),
                key: rel.to_owned(),
            });
        }
        Ok(ObjectReader {
            len: response.content_length(),
            etag,
            start,
            response,
        })
    }

    /// PUT of `len` bytes from `source` to `rel`, streamed (the payload is
    /// not hashed for the signature), with `metadata` and `condition`.
    /// Returns the new version's ETag.
    pub fn put(
        &self,
        rel: &str,
        source: &mut dyn UploadSource,
        len: u64,
        condition: &Condition,
        metadata: &Metadata,
    ) -> Result<String, S3Error> {
        let key = self.full_key(rel)?;
        let mut call = Call::new(Method::PUT, "PUT", key);
        call.headers.extend(self.metadata_headers(metadata)?);
        call.headers.extend(condition.header());
        call.payload = Payload::Stream {
            source,
            offset: 0,
            len,
        };
        let response = self.send(call)?;
        Ok(header(response.headers(), "etag").unwrap_or_default())
    }

    /// Makes the zero-byte folder marker `dir/` (`dir` relative, without
    /// the slash); an existing one is fine.
    pub fn make_folder_marker(&self, dir: &str) -> Result<(), S3Error> {
        let key = self.full_key(&format!("{}/", dir.trim_end_matches('/')))?;
        let call = Call::new(Method::PUT, "PUT", key).header("if-none-match", "*");
        match self.send(call) {
            Ok(_) | Err(S3Error::PreconditionFailed { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Server-side copy of `from` to `to`, only while `from` is still the
    /// version `source_etag` when one is given
    /// (`x-amz-copy-source-if-match`); the metadata is kept, or replaced
    /// by `metadata` when one is given. Returns the copy's ETag.
    pub fn copy(
        &self,
        from: &str,
        to: &str,
        source_etag: Option<&str>,
        metadata: Option<&Metadata>,
    ) -> Result<String, S3Error> {
        self.copy_onto(from, to, source_etag, metadata, &Condition::None)
    }

    /// [`S3Client::copy`] on condition `dest` on what is at `to`
    /// (`If-None-Match: *` for a key that must not exist). A failed
    /// condition, on either side, is [`S3Error::PreconditionFailed`]
    /// naming `from`.
    pub fn copy_onto(
        &self,
        from: &str,
        to: &str,
        source_etag: Option<&str>,
        metadata: Option<&Metadata>,
        dest: &Condition,
    ) -> Result<String, S3Error> {
        let key = self.full_key(to)?;
        let mut call = Call::new(Method::PUT, "CopyObject", key)
            .header("x-amz-copy-source", &self.copy_source(from)?);
        if let Some(etag) = source_etag {
            call = call.header("x-amz-copy-source-if-match", etag);
        }
        call.headers.extend(dest.header());
        match metadata {
            Some(metadata) => {
                call = call.header("x-amz-metadata-directive", "REPLACE");
                call.headers.extend(self.metadata_headers(metadata)?);
            }
            None => call = call.header("x-amz-metadata-directive", "COPY"),
        }
        let (_, result) = match self.send_document(call, "CopyObjectResult") {
            // The condition is on the source: name it.
            Err(S3Error::PreconditionFailed { endpoint, .. }) => {
                return Err(S3Error::PreconditionFailed {
                    endpoint,
                    key: from.to_owned(),
                });
            }
            other => other?,
        };
        Ok(result.text_of("ETag").unwrap_or_default().to_owned())
    }

    /// The `x-amz-copy-source` of the relative key `from`.
    pub(super) fn copy_source(&self, from: &str) -> Result<String, S3Error> {
        let source = self.full_key(from)?;
        Ok(format!("/{}/{}", self.bucket, sign::encode_path(&source)))
    }

    /// Deletes `rel`; a key that is not there is fine.
    pub fn delete(&self, rel: &str) -> Result<(), S3Error> {
        let key = self.full_key(rel)?;
        match self.send(Call::new(Method::DELETE, "DELETE", key)) {
            Ok(_) | Err(S3Error::NoSuchKey { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Deletes `rel` only while it is the version `etag` (`If-Match`, which
    /// S3 honours on DELETE; a server that ignores it deletes whatever is
    /// there, so callers on such servers re-check first). A key that is
    /// not there is fine; another version is
    /// [`S3Error::PreconditionFailed`].
    pub fn delete_matching(&self, rel: &str, etag: &str) -> Result<(), S3Error> {
        let key = self.full_key(rel)?;
        let call = Call::new(Method::DELETE, "DELETE", key).header("if-match", etag);
        match self.send(call) {
            Ok(_) | Err(S3Error::NoSuchKey { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// HEADs `rel` and compares what is there with the version `etag`: the
    /// one look every re-check before a step takes.
    pub fn version_of(&self, rel: &str, etag: &str) -> Result<Version, S3Error> {
        Ok(match self.head(rel)? {
            Some(head) if crate::remote::same_etag(&head.etag, etag) => Version::Same(head),
            Some(_) => Version::Other,
            None => Version::Gone,
        })
    }

    /// Which conditional requests the server honours: writes a probe key
    /// (below `rel_dir`, a relative folder ending in `/`) with
    /// `If-None-Match: *` twice, where the second must be refused with
    /// 412; replaces it with `If-Match` naming a version that is not
    /// there, copies it with `x-amz-copy-source-if-match` naming one, and
    /// copies it with `If-None-Match: *` onto a key that exists, all of
    /// which must be refused too; deletes it with `If-Match` naming a
    /// version that is not there, which must be refused and leave it
    /// there; then removes what it wrote. Servers that ignore conditions
    /// (`rclone serve s3`; moto ignores the copy's) answer false for
    /// those.
    pub fn probe_conditions(&self, rel_dir: &str) -> Result<ConditionSupport, S3Error> {
        let rel = format!("{rel_dir}probe-{:016x}", fastrand::u64(..));
        let copy_key = format!("{rel}-copy");
        // A version no object has.
        let wrong = "\"0123456789abcdef0123456789abcdef\"";
        let write = |condition: &Condition| {
            let mut bytes =
                body::Seekable::new(io::Cursor::new(b"probe".to_vec())).map_err(|e| {
                    S3Error::Source {
                        key: rel.clone(),
                        source: e,
                    }
                })?;
            self.put(&rel, &mut bytes, 5, condition, &Metadata::new())
        };
        let refused = |outcome: Result<String, S3Error>| match outcome {
            Ok(_) => Ok(false),
            Err(S3Error::PreconditionFailed { .. }) => Ok(true),
            Err(S3Error::Status { status: 501, .. }) => Ok(false),
            Err(e) => Err(e),
        };
        // Conditions newer servers learnt: a server that does not know one
        // may refuse the request outright.
        let refused_or_unknown = |outcome: Result<String, S3Error>| match refused(outcome) {
            Err(S3Error::Status { status, .. }) if (400..500).contains(&status) => Ok(false),
            other => other,
        };
        let outcome = (|| -> Result<ConditionSupport, S3Error> {
            write(&Condition::Absent)?;
            let create = refused(write(&Condition::Absent))?;
            let replace = refused(write(&Condition::Matches(wrong.into())))?;
            let copy = refused(self.copy(&rel, &copy_key, Some(wrong), None))?;
            // `copy` exists now: a copy onto it must be refused.
            self.copy(&rel, &copy_key, None, None)?;
            let copy_create = refused_or_unknown(self.copy_onto(
                &rel,
                &copy_key,
                None,
                None,
                &Condition::Absent,
            ))?;
            let delete =
                refused_or_unknown(self.delete_matching(&rel, wrong).map(|()| String::new()))?
                    && self.head(&rel)?.is_some();
            Ok(ConditionSupport {
                create,
                replace,
                copy,
                copy_create,
                delete,
            })
        })();
        let cleaned = self.delete(&copy_key).and_then(|()| self.delete(&rel));
        let support = outcome?;
        cleaned?;
        Ok(support)
    }

    /// `x-amz-meta-*` headers for `metadata`, refusing what cannot be a
    /// header.
    pub(super) fn metadata_headers(
        &self,
        metadata: &Metadata,
    ) -> Result<Vec<(String, String)>, S3Error> {
        metadata
            .iter()
            .map(|(name, value)| {
                let ok_name = !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
                let ok_value = value.bytes().all(|b| (0x20..0x7f).contains(&b));
                if ok_name && ok_value {
                    Ok((format!("x-amz-meta-{name}"), value.clone()))
                } else {
                    Err(S3Error::Settings(format!(
                        "the metadata {name:?} cannot be sent: names are lower-case letters, \
                         digits and `-`, values printable ASCII"
                    )))
                }
            })
            .collect()
    }
}

/// Why an answer's body could not be read as a document.
enum ReadFailure {
    /// The connection broke while reading.
    Transport(io::Error),
    Bad(String),
}

/// Reads an answer's XML body, at most [`MAX_ANSWER_BYTES`].
fn read_document(response: Response) -> Result<Element, ReadFailure> {
    let mut bytes = Vec::new();
    response
        .take(MAX_ANSWER_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadFailure::Transport)?;
    if bytes.len() as u64 > MAX_ANSWER_BYTES {
        return Err(ReadFailure::Bad(format!(
            "the answer is larger than {MAX_ANSWER_BYTES} bytes"
        )));
    }
    xml::parse(&bytes[..]).map_err(|e| ReadFailure::Bad(e.to_string()))
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// `Wed, 21 Oct 2015 07:28:00 GMT`.
fn parse_http_date(value: &str) -> Option<SystemTime> {
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    time::PrimitiveDateTime::parse(value.trim(), &format)
        .ok()
        .map(|t| t.assume_utc().into())
}

/// Decodes S3's `encoding-type=url` form (`+` is a space); `None` for a
/// broken escape.
fn url_decode(text: &str) -> Option<Vec<u8>> {
    percent::decode(text, Plus::Space)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_encoded_keys_decode_to_bytes_and_broken_escapes_are_refused() {
        assert_eq!(url_decode("a+b%2Bc%2F%00").unwrap(), b"a b+c/\0");
        assert_eq!(url_decode("%ff").unwrap(), vec![0xff]);
        assert_eq!(url_decode("%4"), None);
        assert_eq!(url_decode("%zz"), None);
    }

    #[test]
    fn http_dates_parse() {
        let t = parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        assert_eq!(
            t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs(),
            1_445_412_480
        );
    }

    #[test]
    fn part_of_the_settings_are_checked_before_any_request() {
        let env = Environment {
            var: &|name| match name {
                "AWS_ACCESS_KEY_ID" => Some("AKID".into()),
                "AWS_SECRET_ACCESS_KEY" => Some("secret".into()),
                _ => None,
            },
            home: None,
        };
        let client = |bucket: &str, prefix: &str, endpoint: Option<&str>| {
            let mut settings = S3Settings::new(bucket, prefix);
            settings.endpoint = endpoint.map(str::to_owned);
            S3Client::with_environment(settings, &env)
        };
        assert!(client("b", "../x", None).is_err());
        assert!(client("b/c", "", None).is_err());
        assert!(client("b", "", Some("ftp://h")).is_err());
        assert!(client("b", "", Some("http://u:p@h:1")).is_err());
        assert!(client("b", "", Some("http://h:1/path")).is_err());
        let aws = client("photos", "/2024/", None).unwrap();
        assert_eq!(aws.prefix(), "2024/");
        assert_eq!(
            aws.describe(),
            "s3://photos on https://photos.s3.us-east-1.amazonaws.com"
        );
        let local = client("b", "", Some("http://127.0.0.1:8333/")).unwrap();
        let call = Call::new(Method::GET, "GET", "a b/c".into()).query("x", "1/2");
        assert_eq!(
            local.url(&call).as_str(),
            "http://127.0.0.1:8333/b/a%20b/c?x=1%2F2"
        );
        assert!(local.full_key("a/../b").is_err());
    }
}
