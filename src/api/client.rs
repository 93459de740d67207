//! The blocking control client: one typed method per endpoint, over one
//! local-socket connection that is reused for consecutive requests (and
//! reopened when the agent may have closed it for being idle).
//!
//! The client builds every request target and body itself, so callers
//! (`ctl`) never see paths, query strings or frames. It does not retry a
//! request that may have reached the agent: a failure is reported, not
//! repeated behind the user's back.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use interprocess::local_socket::traits::Stream as _;
use interprocess::local_socket::{ConnectOptions, GenericFilePath, Stream, ToFsName};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::framing::{
    self, FrameError, MAX_RESPONSE_BYTES, RequestEnvelope, ResponseEnvelope, Target,
};
use super::server::IDLE_TIMEOUT;
use super::wire::{self, ErrorBody};
use super::{ApiError, PROTOCOL_VERSION, compatible_version};

/// How long the client waits for one answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "prism-syncd is not running (no agent at {}). Start it with `prism-syncd` or \
         `prism-syncctl service install`.",
        socket.display()
    )]
    NotRunning { socket: PathBuf },
    #[error("cannot connect to the agent at {}: {source}", socket.display())]
    Connect { socket: PathBuf, source: io::Error },
    #[error(
        "the agent at {} did not answer within {} s; it may be stuck, see its log",
        socket.display(),
        after.as_secs()
    )]
    Timeout { socket: PathBuf, after: Duration },
    #[error("lost the connection to the agent at {}: {source}", socket.display())]
    Connection { socket: PathBuf, source: FrameError },
    #[error(
        "the agent speaks protocol {agent} but this prism-syncctl speaks {PROTOCOL_VERSION}; \
         use the prism-syncctl from the same release as the running prism-syncd"
    )]
    VersionMismatch { agent: String },
    #[error("the agent sent an answer this prism-syncctl does not understand: {reason}")]
    BadResponse { reason: String },
    /// The agent answered with the spec's error object.
    #[error("{0}")]
    Api(ApiError),
}

/// A connection to the agent.
#[derive(Debug)]
pub struct Client {
    socket: PathBuf,
    stream: Option<Stream>,
    last_used: Instant,
}

impl Client {
    /// Connects to the agent at `socket`. A missing socket, or one nobody
    /// accepts on, is [`ClientError::NotRunning`].
    pub fn connect(socket: &Path) -> Result<Client, ClientError> {
        let stream = open(socket)?;
        Ok(Client {
            socket: socket.to_owned(),
            stream: Some(stream),
            last_used: Instant::now(),
        })
    }

    /// The socket this client talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `GET /status`.
    pub fn status(&mut self) -> Result<wire::AgentStatus, ClientError> {
        self.call("GET", &["status"], &[], None::<&()>)
    }

    /// `POST /sync/start` (spec 4.1).
    pub fn start_sync(
        &mut self,
        req: &wire::StartSyncRequest,
    ) -> Result<wire::StartSyncResponse, ClientError> {
        self.call("POST", &["sync", "start"], &[], Some(req))
    }

    /// `GET /sync/status/{sync_id}` (spec 4.2).
    pub fn sync_status(&mut self, sync_id: &str) -> Result<wire::SyncStatus, ClientError> {
        self.call("GET", &["sync", "status", sync_id], &[], None::<&()>)
    }

    /// `POST /sync/resolve` (spec 4.3).
    pub fn resolve(
        &mut self,
        req: &wire::ResolveRequest,
    ) -> Result<wire::ResolveResponse, ClientError> {
        self.call("POST", &["sync", "resolve"], &[], Some(req))
    }

    /// `GET /conflicts`: unresolved ones, plus resolved ones with `all`.
    pub fn conflicts(
        &mut self,
        pair: Option<&str>,
        all: bool,
    ) -> Result<wire::ConflictList, ClientError> {
        let mut query = Vec::new();
        push_param(&mut query, "pair", pair);
        if all {
            query.push(("all", "true".to_owned()));
        }
        self.call("GET", &["conflicts"], &query, None::<&()>)
    }

    /// `GET /changes` (spec 6.2). `since` goes as typed: the agent accepts
    /// RFC 3339, a date, or an age such as `2h`.
    pub fn changes(&mut self, query: &wire::ChangesQuery) -> Result<wire::ChangeLog, ClientError> {
        let mut params = Vec::new();
        push_param(&mut params, "pair", query.pair.as_deref());
        push_param(&mut params, "since", query.since.as_deref());
        push_param(&mut params, "path", query.path.as_deref());
        push_param(&mut params, "device", query.device.as_deref());
        params.push(("limit", query.limit.to_string()));
        self.call("GET", &["changes"], &params, None::<&()>)
    }

    /// `GET /history`: the versions of one file.
    pub fn history(&mut self, query: &wire::HistoryQuery) -> Result<wire::History, ClientError> {
        let mut params = Vec::new();
        push_param(&mut params, "pair", query.pair.as_deref());
        params.push(("path", query.path.clone()));
        self.call("GET", &["history"], &params, None::<&()>)
    }

    /// `POST /restore`: brings a trashed version of a file back.
    pub fn restore(
        &mut self,
        req: &wire::RestoreRequest,
    ) -> Result<wire::RestoreResponse, ClientError> {
        self.call("POST", &["restore"], &[], Some(req))
    }

    /// `POST /pause`; `None` pauses every pair.
    pub fn pause(&mut self, pair: Option<&str>) -> Result<wire::Ack, ClientError> {
        self.call("POST", &["pause"], &[], Some(&selector(pair)))
    }

    /// `POST /resume`; `None` resumes every pair.
    pub fn resume(&mut self, pair: Option<&str>) -> Result<wire::Ack, ClientError> {
        self.call("POST", &["resume"], &[], Some(&selector(pair)))
    }

    /// `POST /pairs`.
    pub fn pair_add(&mut self, spec: &wire::PairSpec) -> Result<wire::PairInfo, ClientError> {
        self.call("POST", &["pairs"], &[], Some(spec))
    }

    /// `GET /pairs`.
    pub fn pair_list(&mut self) -> Result<wire::PairList, ClientError> {
        self.call("GET", &["pairs"], &[], None::<&()>)
    }

    /// `DELETE /pairs/{name}`.
    pub fn pair_remove(&mut self, name: &str) -> Result<wire::Ack, ClientError> {
        self.call("DELETE", &["pairs", name], &[], None::<&()>)
    }

    /// `POST /pairs/{name}/confirm-deletions`.
    pub fn confirm_deletions(&mut self, pair: &str) -> Result<wire::Ack, ClientError> {
        self.call(
            "POST",
            &["pairs", pair, "confirm-deletions"],
            &[],
            None::<&()>,
        )
    }

    /// `POST /tokens`: a new bearer token for the HTTP API.
    pub fn issue_token(
        &mut self,
        req: &wire::TokenRequest,
    ) -> Result<wire::IssuedToken, ClientError> {
        self.call("POST", &["tokens"], &[], Some(req))
    }

    /// `GET /tokens`.
    pub fn tokens(&mut self) -> Result<wire::TokenList, ClientError> {
        self.call("GET", &["tokens"], &[], None::<&()>)
    }

    /// `DELETE /tokens/{id}`.
    pub fn revoke_token(&mut self, id: &str) -> Result<wire::TokenInfo, ClientError> {
        self.call("DELETE", &["tokens", id], &[], None::<&()>)
    }

    /// `GET /events`: the events after `after` (from now when `None`),
    /// waiting up to 25 s for one.
    pub fn events(&mut self, after: Option<u64>) -> Result<wire::EventList, ClientError> {
        let mut query = Vec::new();
        push_param(
            &mut query,
            "after",
            after.map(|id| id.to_string()).as_deref(),
        );
        self.call("GET", &["events"], &query, None::<&()>)
    }

    /// Sends one request and decodes the answer.
    fn call<T: DeserializeOwned>(
        &mut self,
        method: &str,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<&impl Serialize>,
    ) -> Result<T, ClientError> {
        let target = Target {
            segments: segments.iter().map(|s| (*s).to_owned()).collect(),
            query: query
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        };
        let body = match body {
            Some(body) => serde_json::to_value(body).map_err(|err| ClientError::BadResponse {
                reason: format!("cannot encode the request: {err}"),
            })?,
            None => Value::Null,
        };
        let request = RequestEnvelope {
            protocol: PROTOCOL_VERSION.to_owned(),
            method: method.to_owned(),
            path: target.render(),
            body,
        };
        let payload = self.exchange(&request)?;
        decode(&payload)
    }

    /// Writes a request frame and reads the response frame, reopening the
    /// connection first if the agent may have closed it as idle.
    fn exchange(&mut self, request: &RequestEnvelope) -> Result<Vec<u8>, ClientError> {
        let stale = self.last_used.elapsed() >= IDLE_TIMEOUT / 2;
        let mut stream = match self.stream.take() {
            Some(stream) if !stale => stream,
            _ => open(&self.socket)?,
        };
        let frame = framing::encode_frame(
            &serde_json::to_vec(request).expect("a request envelope always serializes"),
        );
        // A write can fail because the agent refused the request early and
        // closed (413); its answer is still waiting to be read, so a failed
        // write falls through to the read.
        let _ = stream.write_all(&frame).and_then(|()| stream.flush());
        let response = framing::read_frame_blocking(&mut stream, MAX_RESPONSE_BYTES);
        let payload = response.map_err(|source| match source {
            FrameError::Io(err) if err.kind() == io::ErrorKind::TimedOut => ClientError::Timeout {
                socket: self.socket.clone(),
                after: REQUEST_TIMEOUT,
            },
            source => ClientError::Connection {
                socket: self.socket.clone(),
                source,
            },
        })?;
        self.stream = Some(stream);
        self.last_used = Instant::now();
        Ok(payload)
    }
}

fn open(socket: &Path) -> Result<Stream, ClientError> {
    let connect_error = |source: io::Error| match source.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => ClientError::NotRunning {
            socket: socket.to_owned(),
        },
        _ => ClientError::Connect {
            socket: socket.to_owned(),
            source,
        },
    };
    let name = socket
        .to_fs_name::<GenericFilePath>()
        .map_err(connect_error)?;
    let stream = ConnectOptions::new()
        .name(name)
        .connect_sync()
        .map_err(connect_error)?;
    stream
        .set_recv_timeout(Some(REQUEST_TIMEOUT))
        .and_then(|()| stream.set_send_timeout(Some(REQUEST_TIMEOUT)))
        .map_err(connect_error)?;
    Ok(stream)
}

/// Checks the protocol version first, because a different major version
/// may not even share the envelope's shape.
fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, ClientError> {
    let bad = |reason: String| ClientError::BadResponse { reason };
    let value: Value =
        serde_json::from_slice(payload).map_err(|err| bad(format!("not JSON: {err}")))?;
    let version = value
        .get("protocol")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("no protocol version in the response".to_owned()))?;
    if !compatible_version(version) {
        return Err(ClientError::VersionMismatch {
            agent: version.to_owned(),
        });
    }
    let envelope: ResponseEnvelope =
        serde_json::from_value(value).map_err(|err| bad(format!("bad envelope: {err}")))?;
    if (200..300).contains(&envelope.status) {
        return serde_json::from_value(envelope.body).map_err(|err| bad(err.to_string()));
    }
    let error: ErrorBody = serde_json::from_value(envelope.body).map_err(|err| {
        bad(format!(
            "status {} without an error object: {err}",
            envelope.status
        ))
    })?;
    Err(ClientError::Api(error.into_api_error()))
}

fn push_param(params: &mut Vec<(&'static str, String)>, key: &'static str, value: Option<&str>) {
    if let Some(value) = value {
        params.push((key, value.to_owned()));
    }
}

fn selector(pair: Option<&str>) -> wire::PairSelector {
    wire::PairSelector {
        pair: pair.map(str::to_owned),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_refuses_another_major_version() {
        let payload = br#"{"protocol":"2.0","status":200,"body":{"whatever":true}}"#;
        let err = decode::<wire::Ack>(payload).unwrap_err();
        assert!(matches!(&err, ClientError::VersionMismatch { agent } if agent == "2.0"));
        assert!(err.to_string().contains("speaks protocol 2.0"), "{err}");
    }

    #[test]
    fn decode_turns_error_objects_into_api_errors() {
        let payload = br#"{"protocol":"1.3","status":404,
            "body":{"error":{"code":"404","message":"no such sync","details":null}}}"#;
        match decode::<wire::Ack>(payload) {
            Err(ClientError::Api(err)) => assert_eq!(err, ApiError::not_found("no such sync")),
            other => panic!("expected an API error, got {other:?}"),
        }
    }

    #[test]
    fn connecting_to_a_missing_socket_says_the_agent_is_not_running() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("prism-syncd.sock");
        let err = Client::connect(&socket).unwrap_err();
        assert!(matches!(err, ClientError::NotRunning { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!(
                "prism-syncd is not running (no agent at {}). Start it with `prism-syncd` \
                 or `prism-syncctl service install`.",
                socket.display()
            )
        );
    }
}
