//! The optional HTTP transport: the same endpoints as the local socket
//! (`docs/protocol.md`), served by [`handlers::dispatch`] to callers with a
//! bearer token, over plain HTTP on loopback or over TLS (rustls); plus
//! what only HTTP has: `GET /events` as server-sent events and
//! `GET /openapi.json`. `prism-syncd --once` starts no listener.
//!
//! What this file owns is HTTP itself: binding, TLS, connection limits and
//! timeouts, reading a capped body, turning the answer into a response with
//! the right status and headers. It knows no endpoint and decides no
//! permission; `auth` verifies the token and `handlers` authorizes.
//!
//! Hardening: at most [`MAX_CONNECTIONS`] connections at once (more wait
//! in the kernel's backlog); a TLS handshake, a request's headers and its
//! body must each arrive within [`REQUEST_TIMEOUT`]; a client that stops
//! reading an answer is dropped after [`WRITE_STALL_TIMEOUT`], so clients
//! that never read cannot hold every slot; at most [`MAX_STREAMS`] event
//! streams are open at once, [`MAX_STREAMS_PER_TOKEN`] per token, so
//! streams cannot take every slot either; a body over
//! [`MAX_REQUEST_BYTES`] is a 413 and is not read; the token is checked
//! before the body is read. No CORS header is ever sent, so a web page on
//! another origin cannot read the answers.
//!
//! Answers to `GET`s over [`COMPRESS_ABOVE`] bytes are sent gzipped to a
//! client that accepts it (a changes or status listing of a big pair, the
//! OpenAPI document: JSON that shrinks several times). Nothing else is:
//! an answer to a `POST` or `DELETE` is a short acknowledgement, and event
//! streams must reach the client as each event is written. No answer holds
//! a secret (tokens are issued over the local socket only), so compressing
//! beside what a caller sent reveals nothing by its size (BREACH).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{Extensions, HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{self, pki_types};
use tower_http::compression::Predicate;

use super::auth::{self, Caller, TokenKeys};
use super::events::{EventLog, Subscription};
use super::framing::MAX_REQUEST_BYTES;
use super::pair_roots::PairRoots;
use super::stall::StallGuard;
use super::wire::{self, ErrorBody};
use super::{ApiError, Control, handlers, openapi};
use crate::config::api::{ApiConfig, TlsFiles};
use crate::locks::LockExt;

/// How many connections are served at once.
pub const MAX_CONNECTIONS: usize = 64;
/// How long a TLS handshake, a request's headers, or its body may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a write to a client may wait without the client reading a
/// byte before the connection is dropped.
pub const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How many `GET /events` streams may be open at once: each holds a
/// connection, and requests need the rest.
pub const MAX_STREAMS: usize = MAX_CONNECTIONS / 4;
/// How many of them one token may hold.
pub const MAX_STREAMS_PER_TOKEN: usize = 4;
/// How often an open event stream checks that its token is still valid
/// (also before each batch of events).
pub const STREAM_RECHECK: Duration = Duration::from_secs(5);
/// The smallest answer worth compressing.
pub const COMPRESS_ABOVE: u16 = 1024;
/// The largest certificate or key file read (a chain is a few kilobytes).
const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// The listener could not start; the agent stops with exit 78, since the
/// `[api]` table must change before it can.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("api.listen: cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("api.{key}: cannot read {}: {source}", path.display())]
    ReadPem {
        key: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("api.{key}: {} holds no {what} in PEM form", path.display())]
    NoPem {
        key: &'static str,
        path: PathBuf,
        what: &'static str,
    },
    #[error("api.tls_cert: the certificate and key cannot be used together: {0}")]
    Tls(rustls::Error),
}

/// A bound listener, not yet serving.
pub struct Listener {
    tcp: TcpListener,
    tls: Option<TlsAcceptor>,
}

/// Binds `config.listen` and loads the certificate, so every problem shows
/// before the agent reports itself ready. Must be called in a Tokio runtime.
pub async fn bind(config: &ApiConfig) -> Result<Listener, HttpError> {
    let tls = config.tls.as_ref().map(acceptor).transpose()?;
    let tcp = TcpListener::bind(config.listen)
        .await
        .map_err(|source| HttpError::Bind {
            addr: config.listen,
            source,
        })?;
    Ok(Listener { tcp, tls })
}

impl Listener {
    /// The address it listens on (with the port the system chose for `:0`).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// Serves until `shutdown` completes, then drops the open connections.
    /// `pair_roots`: where admin tokens may add pairs (`None`: nowhere).
    pub async fn serve(
        self,
        control: Arc<dyn Control>,
        keys: Arc<TokenKeys>,
        pair_roots: Option<PairRoots>,
        shutdown: impl Future<Output = ()>,
    ) {
        let addr = self.local_addr().map(|a| a.to_string()).unwrap_or_default();
        tracing::info!(listen = %addr, tls = self.tls.is_some(), "HTTP API listening");
        let app = Router::new()
            .fallback(answer)
            .with_state(Arc::new(Shared {
                control,
                keys,
                pair_roots,
                streams: Mutex::new(HashMap::new()),
            }))
            .layer(compression());
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let mut connections = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            let slot = tokio::select! {
                () = &mut shutdown => break,
                slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            };
            let accepted = tokio::select! {
                () = &mut shutdown => break,
                accepted = self.tcp.accept() => accepted,
            };
            match accepted {
                Ok((stream, _peer)) => {
                    let app = app.clone();
                    let tls = self.tls.clone();
                    connections.spawn(async move {
                        serve_connection(stream, tls, app).await;
                        drop(slot);
                    });
                }
                Err(err) => {
                    tracing::warn!(error = %err, "cannot accept an HTTP connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            while connections.try_join_next().is_some() {}
        }
        connections.shutdown().await;
    }
}

struct Shared {
    control: Arc<dyn Control>,
    keys: Arc<TokenKeys>,
    pair_roots: Option<PairRoots>,
    /// The open event streams, by token id.
    streams: Mutex<HashMap<String, usize>>,
}

/// One open event stream, counted in [`Shared::streams`] until dropped.
struct StreamSlot {
    shared: Arc<Shared>,
    token: String,
}

impl StreamSlot {
    /// A slot for one more stream of `token`, or a 429 when the agent or
    /// the token has as many open as it allows.
    fn take(shared: &Arc<Shared>, token: &str) -> Result<StreamSlot, ApiError> {
        let mut streams = shared.streams.locked();
        let open: usize = streams.values().sum();
        let mine = streams.get(token).copied().unwrap_or(0);
        let full = if open >= MAX_STREAMS {
            Some(format!(
                "the agent serves at most {MAX_STREAMS} event streams at once"
            ))
        } else if mine >= MAX_STREAMS_PER_TOKEN {
            Some(format!(
                "this token has {mine} event streams open, the most one token may; close one"
            ))
        } else {
            None
        };
        if let Some(why) = full {
            return Err(
                ApiError::new(429, "Too many event streams").with_details(format!(
                    "{why}, and reconnect with Last-Event-ID to miss nothing"
                )),
            );
        }
        *streams.entry(token.to_owned()).or_default() += 1;
        Ok(StreamSlot {
            shared: shared.clone(),
            token: token.to_owned(),
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut streams = self.shared.streams.locked();
        if let Some(open) = streams.get_mut(&self.token) {
            *open -= 1;
            if *open == 0 {
                streams.remove(&self.token);
            }
        }
    }
}

async fn serve_connection(stream: TcpStream, tls: Option<TlsAcceptor>, app: Router) {
    let stream = StallGuard::new(stream, WRITE_STALL_TIMEOUT);
    let service = TowerToHyperService::new(app);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(REQUEST_TIMEOUT)
        .max_buf_size(64 * 1024);
    let result = match tls {
        None => http.serve_connection(TokioIo::new(stream), service).await,
        Some(acceptor) => {
            match tokio::time::timeout(REQUEST_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => http.serve_connection(TokioIo::new(stream), service).await,
                Ok(Err(err)) => {
                    tracing::debug!(error = %err, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            }
        }
    };
    if let Err(err) = result {
        tracing::debug!(error = %err, "HTTP connection ended with an error");
    }
}

/// Every request: authenticate, read the body, dispatch, answer.
/// Marks an answer that may be sent compressed (see the module's doc).
#[derive(Clone, Copy)]
struct Compressible;

/// gzip for answers marked [`Compressible`] over [`COMPRESS_ABOVE`] bytes.
fn compression() -> tower_http::compression::CompressionLayer<impl Predicate> {
    use tower_http::compression::predicate::SizeAbove;
    let marked = |_: StatusCode, _: axum::http::Version, _: &HeaderMap, ext: &Extensions| {
        ext.get::<Compressible>().is_some()
    };
    tower_http::compression::CompressionLayer::new()
        .gzip(true)
        .compress_when(SizeAbove::new(COMPRESS_ABOVE).and(marked))
}

async fn answer(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let had_token = headers.contains_key(header::AUTHORIZATION);
    // The document describes the API and holds nothing of the agent's
    // state, so it is served without a token (clients read it to learn
    // how to authenticate).
    if method == Method::GET && uri.path() == "/openapi.json" {
        let mut response = (StatusCode::OK, openapi::json()).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response.extensions_mut().insert(Compressible);
        return response;
    }
    if method == Method::GET && uri.path() == "/events" {
        return match event_stream(&shared, headers, &uri).await {
            Ok(response) => response,
            Err(err) => error_response(&err, had_token),
        };
    }
    let result = async {
        let caller = authenticate(&shared, &headers).await?;
        let body = read_body(&headers, body).await?;
        let target = uri
            .path_and_query()
            .map_or_else(|| uri.path().to_owned(), |pq| pq.as_str().to_owned());
        handlers::dispatch(
            &shared.control,
            &caller,
            shared.pair_roots.as_ref(),
            method.as_str(),
            &target,
            body,
        )
        .await
    }
    .await;
    match result {
        Ok(body) => {
            let mut response = json_response(StatusCode::OK, &body);
            if method == Method::GET {
                response.extensions_mut().insert(Compressible);
            }
            response
        }
        Err(err) => {
            let mut response = error_response(&err, had_token);
            if err.code == 405
                && let Some(allowed) = handlers::allowed_methods_over_http(uri.path())
            {
                response
                    .headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static(allowed));
            }
            response
        }
    }
}

/// `GET /events` as server-sent events: each event with its `id`, its
/// type as the SSE `event` and its JSON as `data`, from after
/// `Last-Event-ID` (or `?after=`) on; a comment every 15 s keeps proxies
/// from closing a quiet stream. Events of pairs the token may not see are
/// left out. The token is checked again before each batch of events and
/// at least every [`STREAM_RECHECK`]: the stream ends once it is revoked
/// or expired, as any other request would be refused.
async fn event_stream(
    shared: &Arc<Shared>,
    headers: HeaderMap,
    uri: &Uri,
) -> Result<Response, ApiError> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let caller = authenticate(shared, &headers).await?;
    handlers::may_read_events(&caller)?;
    let slot = StreamSlot::take(shared, caller.subject().unwrap_or_default())?;
    let log = handlers::event_log(&shared.control)?;
    let from_query = uri.query().and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("after="))
            .map(str::to_owned)
    });
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or(from_query);
    let after = match resume {
        Some(text) => text.trim().parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!("Last-Event-ID must be an event id, not {text:?}"))
        })?,
        None => log.last_id(),
    };
    let subscription = log.subscribe(shared.control.clone());
    let stream = StreamState {
        shared: shared.clone(),
        headers,
        log,
        _subscription: subscription,
        _slot: slot,
        caller,
        after,
        queue: VecDeque::new(),
    };
    let stream = futures_util::stream::unfold(stream, |mut stream| async move {
        loop {
            if let Some(event) = stream.queue.pop_front() {
                let sse = Event::default()
                    .id(event.id.to_string())
                    .event(event.kind.clone())
                    .data(serde_json::to_string(&event).expect("an event is JSON"));
                return Some((Ok::<_, std::convert::Infallible>(sse), stream));
            }
            let events = stream.log.after(stream.after, STREAM_RECHECK).await;
            if authenticate(&stream.shared, &stream.headers).await.is_err() {
                tracing::debug!(
                    by = stream.caller.subject().unwrap_or_default(),
                    "an event stream ended: its token was revoked or expired"
                );
                return None;
            }
            // Past hidden events too, or they would be fetched again.
            stream.after = events.last().map_or(stream.after, |e| e.id);
            let caller = &stream.caller;
            stream.queue.extend(
                events
                    .into_iter()
                    .filter(|e| e.pair.as_deref().is_none_or(|p| caller.sees_pair(p))),
            );
        }
    });
    let mut response = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// What one `GET /events` stream holds between events.
struct StreamState {
    shared: Arc<Shared>,
    /// The request's headers, to check its token again.
    headers: HeaderMap,
    log: Arc<EventLog>,
    /// Keeps the log finding events while the stream is open.
    _subscription: Subscription,
    /// Counts the stream against the limits until it ends.
    _slot: StreamSlot,
    caller: Caller,
    /// The id of the last event fetched (shown or hidden).
    after: u64,
    queue: VecDeque<wire::Event>,
}

async fn authenticate(shared: &Shared, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let authorization = match headers.get(header::AUTHORIZATION) {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| auth::unauthorized("the Authorization header is not text"))?
                .to_owned(),
        ),
    };
    let keys = shared.keys.clone();
    let control = shared.control.clone();
    // The journal lookup may wait on SQLite: off the event loop.
    tokio::task::spawn_blocking(move || {
        auth::authenticate(&keys, authorization.as_deref(), |id| control.token(id))
            .map(Caller::Token)
    })
    .await
    .map_err(|_| ApiError::internal("the agent failed while checking the token"))?
}

/// The body as JSON: none is `null`; more than [`MAX_REQUEST_BYTES`] is a
/// 413 (refused by its `Content-Length` before a byte is read).
async fn read_body(headers: &HeaderMap, body: Body) -> Result<Value, ApiError> {
    let too_large = || {
        ApiError::new(413, "Request too large").with_details(format!(
            "the agent accepts request bodies of at most {MAX_REQUEST_BYTES} bytes"
        ))
    };
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|len| len > MAX_REQUEST_BYTES as u64) {
        return Err(too_large());
    }
    let bytes = tokio::time::timeout(
        REQUEST_TIMEOUT,
        axum::body::to_bytes(body, MAX_REQUEST_BYTES),
    )
    .await
    .map_err(|_| {
        ApiError::new(408, "Request timed out").with_details(format!(
            "the request body did not arrive in full within {REQUEST_TIMEOUT:?}"
        ))
    })?
    // The only error a client can still be told about is the limit.
    .map_err(|_| too_large())?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    let body: Value = serde_json::from_slice(&bytes).map_err(|err| {
        ApiError::bad_request("the request body is not valid JSON").with_details(err.to_string())
    })?;
    // Every endpoint's body is an object; no body at all stands for "no
    // fields", a `null` or a list does not.
    if !body.is_object() {
        return Err(
            ApiError::bad_request("the request body must be a JSON object").with_details(
                "send an object such as {\"pair\": \"notes\"}, or no body for no fields",
            ),
        );
    }
    Ok(body)
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The spec's error object with the error's status; a 401 or 403 also says
/// how to authenticate (RFC 6750 section 3).
fn error_response(err: &ApiError, had_token: bool) -> Response {
    let status = StatusCode::from_u16(err.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::to_value(ErrorBody::from(err)).expect("an error body is JSON");
    let mut response = json_response(status, &body);
    let challenge = match err.code {
        401 if had_token => Some(r#"Bearer realm="prism-sync", error="invalid_token""#),
        401 => Some(r#"Bearer realm="prism-sync""#),
        403 => Some(r#"Bearer realm="prism-sync", error="insufficient_scope""#),
        _ => None,
    };
    if let Some(challenge) = challenge {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        );
    }
    response
}

/// A TLS acceptor for the certificate chain and key, with the ring
/// provider (the one reqwest already links) and rustls' safe defaults
/// (TLS 1.2 and 1.3).
fn acceptor(files: &TlsFiles) -> Result<TlsAcceptor, HttpError> {
    use pki_types::pem::PemObject;
    let cert_pem = read_pem("tls_cert", &files.cert)?;
    let key_pem = read_pem("tls_key", &files.key)?;
    let chain: Vec<pki_types::CertificateDer<'static>> =
        pki_types::CertificateDer::pem_slice_iter(&cert_pem)
            .filter_map(Result::ok)
            .collect();
    if chain.is_empty() {
        return Err(HttpError::NoPem {
            key: "tls_cert",
            path: files.cert.clone(),
            what: "certificate",
        });
    }
    let key = pki_types::PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| HttpError::NoPem {
        key: "tls_key",
        path: files.key.clone(),
        what: "private key",
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(HttpError::Tls)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(HttpError::Tls)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn read_pem(key: &'static str, path: &Path) -> Result<Vec<u8>, HttpError> {
    use std::io::Read;
    let fail = |source| HttpError::ReadPem {
        key,
        path: path.to_owned(),
        source,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .map_err(fail)?
        .take(MAX_PEM_BYTES)
        .read_to_end(&mut bytes)
        .map_err(fail)?;
    Ok(bytes)
}
