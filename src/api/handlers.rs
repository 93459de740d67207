//! From one request payload to one response envelope: checks the protocol
//! version, routes the method and path to an endpoint, validates the query
//! and body, calls the [`Control`] method on a blocking thread and wraps the
//! answer (or the spec's error object).
//!
//! Handlers hold no state and do no socket I/O; the transports (the local
//! socket in `server`, the HTTP listener in `http`) hand them a method, a
//! path and a body, with the [`Caller`] the transport authenticated. Here
//! the caller is authorized: each endpoint needs a role, and a token
//! limited to some pairs sees only those (others are 404 in single-item
//! requests and left out of lists). They log the method, path and status
//! at debug level, never a body, because a body may carry credentials.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::auth::{self, Caller};
use super::framing::{RequestEnvelope, ResponseEnvelope, Target};
use super::pair_roots::PairRoots;
use super::wire::{self, ErrorBody, Role};
use super::{ApiError, Control, PROTOCOL_VERSION, compatible_version};
use crate::timefmt;

/// Handles one request frame from the local socket, whose owner may do
/// anything. Never fails: every problem becomes an error envelope.
pub async fn handle(control: &Arc<dyn Control>, payload: &[u8]) -> ResponseEnvelope {
    let request = match parse_envelope(payload) {
        Ok(request) => request,
        Err(err) => return error_response(&err),
    };
    let RequestEnvelope {
        method, path, body, ..
    } = request;
    match dispatch(control, &Caller::Owner, None, &method, &path, body).await {
        Ok(body) => ResponseEnvelope {
            protocol: PROTOCOL_VERSION.to_owned(),
            status: 200,
            body,
        },
        Err(err) => error_response(&err),
    }
}

/// Answers one request of `caller`: the body of a 200, or the error. Both
/// transports come here, so they serve the same endpoints the same way.
/// `pair_roots` is where the HTTP transport lets tokens add pairs (`None`:
/// nowhere, and on the socket, whose owner may add any pair).
pub async fn dispatch(
    control: &Arc<dyn Control>,
    caller: &Caller,
    pair_roots: Option<&PairRoots>,
    method: &str,
    path: &str,
    body: Value,
) -> Result<Value, ApiError> {
    use futures_util::FutureExt;
    // A panic while handling one request answers that request with a 500;
    // it must not drop the connection without an answer.
    let handling = route(control, caller, pair_roots, method, path, body);
    let result = std::panic::AssertUnwindSafe(handling)
        .catch_unwind()
        .await
        .unwrap_or_else(|_| {
            tracing::error!(%method, %path, "an API handler panicked");
            Err(
                ApiError::internal("the agent failed while handling this request")
                    .with_details("see the agent's log (RUST_LOG=prism_sync=debug) for the cause"),
            )
        });
    let status = result.as_ref().map_or_else(|err| err.code, |_| 200);
    tracing::debug!(%method, %path, status, by = caller.subject().unwrap_or("socket"), "api request");
    result
}

/// The envelope for an error answer.
pub fn error_response(err: &ApiError) -> ResponseEnvelope {
    ResponseEnvelope {
        protocol: PROTOCOL_VERSION.to_owned(),
        status: err.code,
        body: to_json(&ErrorBody::from(err)),
    }
}

/// Checks the protocol version before the envelope's shape, because
/// another major version may not even share that shape.
fn parse_envelope(payload: &[u8]) -> Result<RequestEnvelope, ApiError> {
    let value: Value = serde_json::from_slice(payload).map_err(|err| {
        ApiError::bad_request("the request is not valid JSON").with_details(err.to_string())
    })?;
    if let Some(version) = value.get("protocol").and_then(Value::as_str)
        && !compatible_version(version)
    {
        return Err(version_error(version));
    }
    serde_json::from_value(value).map_err(|err| {
        ApiError::bad_request("the request is not a valid request envelope")
            .with_details(shape_error(&err))
    })
}

fn version_error(theirs: &str) -> ApiError {
    ApiError::bad_request("Unsupported protocol version").with_details(format!(
        "the request speaks protocol {theirs:?}; this agent speaks {PROTOCOL_VERSION} \
         (any 1.x). Use a prism-syncctl from the same release as prism-syncd."
    ))
}

/// The endpoints, by path shape.
enum Route {
    Status,
    SyncStart,
    SyncStatus(String),
    SyncResolve,
    Conflicts,
    Changes,
    History,
    Restore,
    Pause,
    Resume,
    Pairs,
    Pair(String),
    ConfirmDeletions(String),
    Tokens,
    Token(String),
    Events,
}

/// What a request needs of its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Need {
    Role(Role),
    /// The owner of the local socket, for what a token must never do,
    /// whatever its role: minting tokens (a token that could mint tokens
    /// could outlive its own revocation).
    Owner(&'static str),
    /// An admin token valid for every pair: managing tokens.
    UnlimitedAdmin,
    /// An admin token valid for every pair, where `api.pair_roots` lets
    /// tokens add pairs at all: a pair names a folder and a remote, and
    /// could otherwise give the token every file the agent's user can read
    /// or write. Which pairs is for [`PairRoots::check`].
    AddPair,
}

impl Route {
    fn parse(segments: &[String]) -> Option<Route> {
        let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
        Some(match segments.as_slice() {
            ["status"] => Route::Status,
            ["sync", "start"] => Route::SyncStart,
            ["sync", "status", id] => Route::SyncStatus((*id).to_owned()),
            ["sync", "resolve"] => Route::SyncResolve,
            ["conflicts"] => Route::Conflicts,
            ["changes"] => Route::Changes,
            ["history"] => Route::History,
            ["restore"] => Route::Restore,
            ["pause"] => Route::Pause,
            ["resume"] => Route::Resume,
            ["pairs"] => Route::Pairs,
            ["pairs", name] => Route::Pair((*name).to_owned()),
            ["pairs", name, "confirm-deletions"] => Route::ConfirmDeletions((*name).to_owned()),
            ["tokens"] => Route::Tokens,
            ["tokens", id] => Route::Token((*id).to_owned()),
            ["events"] => Route::Events,
            _ => return None,
        })
    }

    /// The query parameters the endpoint understands; others are refused.
    fn query_params(&self) -> &'static [&'static str] {
        match self {
            Route::Conflicts => &["pair", "all"],
            Route::Changes => &["pair", "since", "path", "device", "limit"],
            Route::History => &["pair", "path"],
            Route::Events => &["after", "wait"],
            _ => &[],
        }
    }

    fn allowed_methods(&self) -> &'static str {
        match self {
            Route::Status
            | Route::SyncStatus(_)
            | Route::Conflicts
            | Route::Changes
            | Route::History
            | Route::Events => "GET",
            Route::Pairs | Route::Tokens => "GET, POST",
            Route::Pair(_) | Route::Token(_) => "DELETE",
            Route::SyncStart
            | Route::SyncResolve
            | Route::Restore
            | Route::Pause
            | Route::Resume
            | Route::ConfirmDeletions(_) => "POST",
        }
    }

    /// What `method` on this endpoint needs (the method is one of
    /// [`Route::allowed_methods`]).
    fn need(&self, method: &str) -> Need {
        match (self, method) {
            (
                Route::Status
                | Route::SyncStatus(_)
                | Route::Conflicts
                | Route::Changes
                | Route::History
                | Route::Events,
                _,
            )
            | (Route::Pairs, "GET") => Need::Role(Role::Viewer),
            (
                Route::SyncStart
                | Route::SyncResolve
                | Route::Restore
                | Route::Pause
                | Route::Resume
                | Route::ConfirmDeletions(_),
                _,
            ) => Need::Role(Role::Operator),
            (Route::Pair(_), _) => Need::Role(Role::Admin),
            (Route::Tokens, "POST") => Need::Owner(
                "tokens are issued over the local socket only: run `prism-syncctl token issue` \
                 as the user the agent runs as",
            ),
            (Route::Pairs, _) => Need::AddPair,
            (Route::Tokens | Route::Token(_), _) => Need::UnlimitedAdmin,
        }
    }
}

/// Whether `caller` may do what `need` says; a 403 saying what it lacks.
/// `pair_roots`: as for [`dispatch`].
fn authorize(caller: &Caller, need: Need, pair_roots: Option<&PairRoots>) -> Result<(), ApiError> {
    let Caller::Token(grant) = caller else {
        return Ok(());
    };
    match need {
        Need::AddPair if pair_roots.is_none() => Err(auth::forbidden(
            "this agent lets no token add pairs over HTTP: its owner may set api.pair_roots \
             to the folders tokens may add pairs in, or run `prism-syncctl pair add` on the \
             local socket as the user the agent runs as",
        )),
        Need::AddPair => authorize(caller, Need::UnlimitedAdmin, pair_roots),
        Need::Role(role) if grant.role >= role => Ok(()),
        Need::Role(role) => Err(auth::forbidden(format!(
            "this request needs the {} role; the token has {}",
            role.as_str(),
            grant.role.as_str()
        ))),
        Need::Owner(why) => Err(auth::forbidden(why)),
        Need::UnlimitedAdmin if grant.role == Role::Admin && grant.pairs.is_empty() => Ok(()),
        Need::UnlimitedAdmin => Err(auth::forbidden(format!(
            "this request needs an admin token valid for every pair; the token has the {} role{}",
            grant.role.as_str(),
            if grant.pairs.is_empty() {
                String::new()
            } else {
                format!(" on {}", grant.pairs.join(", "))
            }
        ))),
    }
}

/// The 404 a caller gets for a pair, sync run or conflict it may not see:
/// the same as for one that does not exist, so a limited token learns
/// nothing about the others.
fn hidden(what: &str) -> ApiError {
    ApiError::not_found(format!("no {what} of that name is visible to this token")).with_details(
        "a token limited to some pairs sees only those; `prism-syncctl token list` shows \
         which pairs each token may see",
    )
}

/// For a caller limited to some pairs, a 404 reads as [`hidden`]'s, so
/// "does not exist" and "not yours" look the same.
fn hide_404(caller: &Caller, err: ApiError, what: &str) -> ApiError {
    if err.code == 404 && caller.pair_limit().is_some() {
        hidden(what)
    } else {
        err
    }
}

/// `merged_file` names a file on the agent's machine, which the agent
/// reads with its user's rights and syncs to the remote: that is for the
/// socket's owner, who could read the file anyway. A token's holder could
/// use it to read the signing key, the journal or `~/.ssh`, so no token
/// may name one.
fn refuse_merged_file_for_tokens(
    caller: &Caller,
    req: &wire::ResolveRequest,
) -> Result<(), ApiError> {
    match (caller, &req.merged_file) {
        (Caller::Token(_), Some(_)) => Err(auth::forbidden(
            "merged_file names a file on the agent's machine and is accepted over the local \
             socket only (`prism-syncctl resolve ID --strategy manual --from FILE`); over HTTP, \
             put the resolved version in place of the conflicted file and resolve with \
             keep_local",
        )),
        _ => Ok(()),
    }
}

/// A pair named in a request, if the caller may see it.
fn visible_pair(caller: &Caller, pair: Option<&str>) -> Result<(), ApiError> {
    match pair {
        Some(name) if !caller.sees_pair(name) => Err(hidden("pair")),
        _ => Ok(()),
    }
}

async fn route(
    control: &Arc<dyn Control>,
    caller: &Caller,
    pair_roots: Option<&PairRoots>,
    method: &str,
    path: &str,
    body: Value,
) -> Result<Value, ApiError> {
    let target = Target::parse(path)
        .map_err(|err| ApiError::bad_request("malformed request path").with_details(err))?;
    let route = Route::parse(&target.segments).ok_or_else(|| {
        ApiError::not_found("Unknown endpoint").with_details(format!(
            "{path} is not an endpoint of this agent; see docs/protocol.md"
        ))
    })?;
    if !route
        .allowed_methods()
        .split(", ")
        .any(|allowed| allowed == method)
    {
        return Err(
            ApiError::new(405, "Method not allowed").with_details(format!(
                "{} does not accept {method}; allowed: {}",
                path.split('?').next().unwrap_or_default(),
                route.allowed_methods()
            )),
        );
    }
    authorize(caller, route.need(method), pair_roots)?;
    let query = Query::new(&target, route.query_params())?;
    let limit = caller.pair_limit().map(<[String]>::to_vec);
    let by = caller.subject().map(str::to_owned);
    match (route, method) {
        (Route::Status, "GET") => {
            let mut status = call(control, |c| Ok(c.status())).await?;
            status.pairs.retain(|p| caller.sees_pair(&p.name));
            if let Caller::Token(_) = caller {
                // Where the agent keeps its journal and signing key is the
                // socket owner's business, not a remote client's.
                status.agent.state_dir = None;
                status.agent.socket = None;
            }
            Ok(to_json(&status))
        }
        (Route::SyncStart, "POST") => {
            let req: wire::StartSyncRequest = parse_body(body)?;
            visible_pair(caller, req.pair.as_deref())?;
            Ok(to_json(&start_sync(control, req, limit, by).await?))
        }
        (Route::SyncStatus(id), "GET") => {
            let status = call(control, move |c| c.sync_status(&id))
                .await
                .map_err(|err| hide_404(caller, err, "sync run"))?;
            if !caller.sees_pair(&status.pair) {
                return Err(hidden("sync run"));
            }
            Ok(to_json(&status))
        }
        (Route::SyncResolve, "POST") => {
            let req: wire::ResolveRequest = parse_body(body)?;
            refuse_merged_file_for_tokens(caller, &req)?;
            // Which conflict first: an unknown one is a 404 whatever else
            // the request says.
            let id = req.conflict_id.clone();
            let conflict = call(control, move |c| c.conflict(&id))
                .await
                .map_err(|err| hide_404(caller, err, "conflict"))?;
            if !caller.sees_pair(&conflict.pair) {
                return Err(hidden("conflict"));
            }
            req.validate()?;
            Ok(to_json(
                &call(control, move |c| c.resolve(&req, by.as_deref())).await?,
            ))
        }
        (Route::Conflicts, "GET") => {
            let pair = query.get("pair").map(str::to_owned);
            visible_pair(caller, pair.as_deref())?;
            let all = query.flag("all")?;
            let mut conflicts = call(control, move |c| c.conflicts(pair.as_deref(), all)).await?;
            conflicts.retain(|c| caller.sees_pair(&c.pair));
            Ok(to_json(&wire::ConflictList { conflicts }))
        }
        (Route::Changes, "GET") => {
            let query = changes_query(&query, SystemTime::now())?;
            visible_pair(caller, query.pair.as_deref())?;
            Ok(to_json(&changes(control, query, limit).await?))
        }
        (Route::History, "GET") => {
            let path = query
                .get("path")
                .ok_or_else(|| ApiError::bad_request("history needs path=FILE"))?;
            let query = wire::HistoryQuery {
                pair: query.get("pair").map(str::to_owned),
                path: path.to_owned(),
            };
            Ok(to_json(&file_history(control, caller, query).await?))
        }
        (Route::Restore, "POST") => {
            let mut req: wire::RestoreRequest = parse_body(body)?;
            // Which pair first (the file's history names it), so a token
            // limited to other pairs cannot act on this one.
            let query = wire::HistoryQuery {
                pair: req.pair.clone(),
                path: req.path.clone(),
            };
            let history = file_history(control, caller, query).await?;
            req.pair = Some(history.pair);
            Ok(to_json(
                &call(control, move |c| c.restore(&req, by.as_deref())).await?,
            ))
        }
        (Route::Pause, "POST") => {
            let wire::PairSelector { pair } = parse_body(body)?;
            visible_pair(caller, pair.as_deref())?;
            for_each_pair(control, pair.clone(), limit, |c, p| c.pause(p)).await?;
            Ok(ack("paused", pair))
        }
        (Route::Resume, "POST") => {
            let wire::PairSelector { pair } = parse_body(body)?;
            visible_pair(caller, pair.as_deref())?;
            for_each_pair(control, pair.clone(), limit, |c, p| c.resume(p)).await?;
            Ok(ack("resumed", pair))
        }
        (Route::Pairs, "GET") => {
            let mut pairs = call(control, |c| c.pair_list()).await?;
            pairs.retain(|p| caller.sees_pair(&p.name));
            Ok(to_json(&wire::PairList { pairs }))
        }
        (Route::Pairs, "POST") => {
            let spec: wire::PairSpec = parse_body(body)?;
            if !Path::new(&spec.local).is_absolute() {
                return Err(ApiError::bad_request("local must be an absolute path")
                    .with_details(format!("got {:?}", spec.local)));
            }
            if let Caller::Token(_) = caller {
                // `authorize` let no token through without roots.
                let roots = pair_roots.ok_or_else(|| {
                    ApiError::internal("a token reached POST /pairs without api.pair_roots")
                })?;
                let (local, remote) = (spec.local.clone(), spec.remote.clone());
                // Resolving reads the file system: off the event loop.
                let roots = roots.clone();
                tokio::task::spawn_blocking(move || roots.check(&local, &remote))
                    .await
                    .map_err(|_| {
                        ApiError::internal("the agent failed while checking the pair")
                    })??;
            }
            Ok(to_json(&call(control, move |c| c.pair_add(&spec)).await?))
        }
        (Route::Pair(name), "DELETE") => {
            visible_pair(caller, Some(&name))?;
            let arg = name.clone();
            call(control, move |c| c.pair_remove(&arg)).await?;
            Ok(ack("removed", Some(name)))
        }
        (Route::ConfirmDeletions(name), "POST") => {
            visible_pair(caller, Some(&name))?;
            let arg = name.clone();
            call(control, move |c| c.confirm_deletions(&arg)).await?;
            Ok(ack("confirmed", Some(name)))
        }
        (Route::Tokens, "POST") => {
            let req: wire::TokenRequest = parse_body(body)?;
            Ok(to_json(&call(control, move |c| c.issue_token(&req)).await?))
        }
        (Route::Tokens, _) => {
            let tokens = call(control, |c| c.tokens()).await?;
            Ok(to_json(&wire::TokenList { tokens }))
        }
        (Route::Token(id), _) => Ok(to_json(&call(control, move |c| c.revoke_token(&id)).await?)),
        (Route::Events, _) => {
            let after = query
                .get("after")
                .map(|text| {
                    text.parse::<u64>().map_err(|_| {
                        ApiError::bad_request(format!("after must be an event id, not {text:?}"))
                    })
                })
                .transpose()?;
            let wait = match query.get("wait") {
                None => MAX_EVENTS_WAIT,
                Some(text) => text
                    .parse::<u64>()
                    .ok()
                    .map(Duration::from_secs)
                    .filter(|wait| *wait <= MAX_EVENTS_WAIT)
                    .ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "wait must be 0 to {} seconds, not {text:?}",
                            MAX_EVENTS_WAIT.as_secs()
                        ))
                    })?,
            };
            let log = event_log(control)?;
            let _listening = log.subscribe(Arc::clone(control));
            let after = after.unwrap_or_else(|| log.last_id());
            let events = log.after(after, wait).await;
            let last_id = events.last().map_or(after, |e| e.id);
            let events = events
                .into_iter()
                .filter(|e| e.pair.as_deref().is_none_or(|p| caller.sees_pair(p)))
                .collect();
            Ok(to_json(&wire::EventList { events, last_id }))
        }
        (route, _) => unreachable!(
            "{} was checked against the allowed methods {}",
            method,
            route.allowed_methods()
        ),
    }
}

/// The methods `path` accepts over HTTP, for a 405's `Allow` header;
/// `None` for a path that is no endpoint. Issuing tokens is not among
/// them: it belongs to the local socket.
pub fn allowed_methods_over_http(path: &str) -> Option<&'static str> {
    let target = Target::parse(path).ok()?;
    Route::parse(&target.segments).map(|route| match route {
        Route::Tokens => "GET",
        route => route.allowed_methods(),
    })
}

/// How long `GET /events` over the socket waits for an event before it
/// answers with none (below the client's 60 s patience).
pub const MAX_EVENTS_WAIT: Duration = Duration::from_secs(25);

/// The agent's event stream, or a 404 where there is none.
pub fn event_log(control: &Arc<dyn Control>) -> Result<Arc<super::events::EventLog>, ApiError> {
    control
        .events()
        .ok_or_else(|| ApiError::not_found("this agent has no event stream"))
}

/// Whether `caller` may read the event stream (any role may).
pub fn may_read_events(caller: &Caller) -> Result<(), ApiError> {
    authorize(caller, Route::Events.need("GET"), None)
}

/// Runs `action` on `pair`, or, with no pair, on every pair for a caller
/// that may see them all (`None` goes to the daemon) and on each pair of
/// `limit` for one that may not.
async fn for_each_pair(
    control: &Arc<dyn Control>,
    pair: Option<String>,
    limit: Option<Vec<String>>,
    action: fn(&dyn Control, Option<&str>) -> Result<(), ApiError>,
) -> Result<(), ApiError> {
    call(control, move |c| match (pair, limit) {
        (Some(pair), _) => action(c, Some(&pair)),
        (None, None) => action(c, None),
        (None, Some(pairs)) => {
            let configured: Vec<String> = c.pair_list()?.into_iter().map(|p| p.name).collect();
            for pair in pairs.iter().filter(|p| configured.contains(p)) {
                action(c, Some(pair))?;
            }
            Ok(())
        }
    })
    .await
}

/// The history of the file a request names, among the pairs `caller` may
/// see. A token limited to some pairs that names none has only its own
/// pairs searched, so neither how many other pairs there are nor which
/// folders they hold changes its answer: a relative path needs a pair
/// unless the token has exactly one, and an absolute path outside its
/// pairs is outside "any pair".
async fn file_history(
    control: &Arc<dyn Control>,
    caller: &Caller,
    query: wire::HistoryQuery,
) -> Result<wire::History, ApiError> {
    visible_pair(caller, query.pair.as_deref())?;
    let Some(limit) = caller
        .pair_limit()
        .filter(|_| query.pair.is_none())
        .map(<[String]>::to_vec)
    else {
        let history = call(control, move |c| c.history(&query))
            .await
            .map_err(|err| hide_404(caller, err, "pair"))?;
        if !caller.sees_pair(&history.pair) {
            return Err(hidden("pair"));
        }
        return Ok(history);
    };
    call(control, move |c| {
        let configured: Vec<String> = c.pair_list()?.into_iter().map(|p| p.name).collect();
        let mine: Vec<&String> = limit.iter().filter(|p| configured.contains(p)).collect();
        let in_pair = |pair: &String| wire::HistoryQuery {
            pair: Some(pair.clone()),
            path: query.path.clone(),
        };
        if !Path::new(&query.path).is_absolute() {
            let [only] = mine.as_slice() else {
                return Err(ApiError::bad_request(format!(
                    "{:?} is relative: give the file's absolute path, or name its pair",
                    query.path
                )));
            };
            return c.history(&in_pair(only));
        }
        let mut found = Vec::new();
        for pair in mine {
            match c.history(&in_pair(pair)) {
                Ok(history) => found.push(history),
                // Not inside this pair's folder.
                Err(err) if err.code == 400 || err.code == 404 => {}
                Err(err) => return Err(err),
            }
        }
        // The innermost folder, should one pair lie inside another.
        found
            .into_iter()
            .min_by_key(|history| history.path.len())
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "{:?} is not a file inside the folder of any pair",
                    query.path
                ))
            })
    })
    .await
}

/// `GET /changes` for a caller limited to some pairs and naming none: each
/// of its pairs' newest `limit` changes, merged newest first, so the answer
/// holds as many as the query asked for, not fewer for the pairs it hides.
async fn changes(
    control: &Arc<dyn Control>,
    query: wire::ChangesQuery,
    limit: Option<Vec<String>>,
) -> Result<wire::ChangeLog, ApiError> {
    let Some(pairs) = limit.filter(|_| query.pair.is_none()) else {
        return call(control, move |c| c.changes(&query)).await;
    };
    call(control, move |c| {
        let configured: Vec<String> = c.pair_list()?.into_iter().map(|p| p.name).collect();
        let mut merged = Vec::new();
        for pair in pairs.iter().filter(|p| configured.contains(p)) {
            let one = wire::ChangesQuery {
                pair: Some(pair.clone()),
                ..query.clone()
            };
            merged.extend(c.changes(&one)?.changes);
        }
        // Newest first; the timestamps are the journal's fixed-width
        // RFC 3339 text, so they sort as text.
        merged.sort_by(|a, b| b.timestamp.cmp(&a.timestamp));
        merged.truncate(query.limit as usize);
        Ok(wire::ChangeLog { changes: merged })
    })
    .await
}

/// Runs a [`Control`] method on a blocking thread: the daemon's methods
/// may wait on SQLite, and must not stall the socket's event loop.
async fn call<T, F>(control: &Arc<dyn Control>, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&dyn Control) -> Result<T, ApiError> + Send + 'static,
{
    let control = Arc::clone(control);
    match tokio::task::spawn_blocking(move || f(control.as_ref())).await {
        Ok(result) => result,
        Err(err) => {
            tracing::error!(error = %err, "an API handler panicked");
            Err(
                ApiError::internal("the agent failed while handling this request")
                    .with_details("see the agent's log (RUST_LOG=prism_sync=debug) for the cause"),
            )
        }
    }
}

/// Serializes a wire value. Wire types are plain data (string keys, no
/// maps keyed by non-strings), so this cannot fail.
fn to_json<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).expect("wire types always serialize to JSON")
}

fn ack(status: &str, pair: Option<String>) -> Value {
    to_json(&wire::Ack {
        status: status.to_owned(),
        pair,
    })
}

/// Deserializes a body; `null` (no body) counts as `{}`, so endpoints whose
/// fields are all optional accept it and the others name the missing field.
fn parse_body<T: DeserializeOwned>(body: Value) -> Result<T, ApiError> {
    let body = match body {
        Value::Null => Value::Object(serde_json::Map::new()),
        other => other,
    };
    serde_json::from_value(body).map_err(|err| {
        ApiError::bad_request("invalid request body").with_details(shape_error(&err))
    })
}

/// What was wrong with a request's shape, without the value that was
/// wrong: serde quotes it ("invalid type: string \"hunter2\", expected …"),
/// and a body may carry credentials, which must never come back in an
/// answer. Missing and unknown field names are kept: they are ours.
fn shape_error(err: &serde_json::Error) -> String {
    let message = err.to_string();
    for (prefix, what) in [
        ("invalid type: ", "wrong type"),
        ("invalid value: ", "wrong value"),
        ("invalid length ", "wrong length"),
    ] {
        if let Some(rest) = message.strip_prefix(prefix) {
            let expected = rest
                .split_once(", expected ")
                .map_or("another value", |(_, expected)| expected);
            return format!("{what}, expected {expected}");
        }
    }
    message
}

/// Query parameters, checked against the names an endpoint knows: an
/// unknown or repeated parameter is an error rather than silently ignored.
struct Query<'t>(Vec<(&'t str, &'t str)>);

impl<'t> Query<'t> {
    fn new(target: &'t Target, known: &[&str]) -> Result<Query<'t>, ApiError> {
        let mut seen: Vec<(&str, &str)> = Vec::new();
        for (key, value) in &target.query {
            if !known.contains(&key.as_str()) {
                return Err(
                    ApiError::bad_request(format!("unknown query parameter {key:?}")).with_details(
                        if known.is_empty() {
                            "this endpoint takes no query parameters".to_owned()
                        } else {
                            format!("known parameters: {}", known.join(", "))
                        },
                    ),
                );
            }
            if seen.iter().any(|(k, _)| k == key) {
                return Err(ApiError::bad_request(format!(
                    "query parameter {key:?} is given twice"
                )));
            }
            seen.push((key, value));
        }
        Ok(Query(seen))
    }

    fn get(&self, key: &str) -> Option<&'t str> {
        self.0.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    /// A boolean parameter: absent is false; `true`, `1` or a bare `all`
    /// is true.
    fn flag(&self, key: &str) -> Result<bool, ApiError> {
        match self.get(key) {
            None | Some("false" | "0") => Ok(false),
            Some("true" | "1" | "") => Ok(true),
            Some(other) => Err(ApiError::bad_request(format!(
                "{key} must be true or false, not {other:?}"
            ))),
        }
    }
}

fn changes_query(query: &Query<'_>, now: SystemTime) -> Result<wire::ChangesQuery, ApiError> {
    let since = match query.get("since").filter(|t| !t.is_empty()) {
        None => None,
        Some(text) => {
            let at = parse_since(text, now).ok_or_else(|| {
                ApiError::bad_request(format!("cannot read since={text:?}")).with_details(
                    "use an RFC 3339 time (2025-02-09T16:00:00Z), a date (2025-02-09) \
                     or an age such as 90s, 15m, 2h or 7d",
                )
            })?;
            Some(timefmt::rfc3339(at))
        }
    };
    let limit = match query.get("limit") {
        None => wire::DEFAULT_CHANGES_LIMIT,
        Some(text) => text
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=wire::MAX_CHANGES_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "limit must be a number from 1 to {}, not {text:?}",
                    wire::MAX_CHANGES_LIMIT
                ))
            })?,
    };
    Ok(wire::ChangesQuery {
        pair: query.get("pair").map(str::to_owned),
        since,
        // An empty prefix is the whole tree, as no filter is.
        path: query
            .get("path")
            .filter(|p| !p.is_empty())
            .map(str::to_owned),
        device: query.get("device").map(str::to_owned),
        limit,
    })
}

/// A point in time: RFC 3339, a bare date, or an age before `now` (`90s`,
/// `15m`, `2h`, `7d`).
fn parse_since(text: &str, now: SystemTime) -> Option<SystemTime> {
    if let Some(at) = timefmt::parse(text) {
        return Some(at);
    }
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let seconds_per_unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    let age = number.parse::<u64>().ok()?.checked_mul(seconds_per_unit)?;
    // An age that reaches before 1970 means "everything": the journal holds
    // nothing older, and times far before it cannot even be written down
    // (formatting a time 27,000 years ago panicked the request).
    let at = now
        .checked_sub(Duration::from_secs(age))
        .unwrap_or(SystemTime::UNIX_EPOCH);
    Some(at.max(SystemTime::UNIX_EPOCH))
}

/// `POST /sync/start`. With `method`, `remote_url` or `credentials`, the
/// pairs whose remote matches (and whose name matches `pair`, if given) are
/// started one by one, after the credentials' password is stored for each
/// of them that logs in with one; otherwise `pair` (or every pair) goes
/// straight to the daemon.
async fn start_sync(
    control: &Arc<dyn Control>,
    req: wire::StartSyncRequest,
    limit: Option<Vec<String>>,
    by: Option<String>,
) -> Result<wire::StartSyncResponse, ApiError> {
    let wire::StartSyncRequest {
        pair,
        method,
        remote_url,
        credentials,
    } = req;
    let every_pair = pair.is_none() && limit.is_some();
    let started =
        if method.is_none() && remote_url.is_none() && credentials.is_none() && !every_pair {
            call(control, move |c| {
                c.start_sync(pair.as_deref(), by.as_deref())
            })
            .await?
        } else {
            call(control, move |c| {
                let chosen: Vec<wire::PairInfo> = c
                    .pair_list()?
                    .into_iter()
                    .filter(|p| pair.as_ref().is_none_or(|name| *name == p.name))
                    .filter(|p| limit.as_ref().is_none_or(|pairs| pairs.contains(&p.name)))
                    .filter(|p| {
                        remote_url
                            .as_ref()
                            .is_none_or(|url| same_url(url, &p.remote))
                    })
                    .filter(|p| method.as_ref().is_none_or(|m| has_scheme(&p.remote, m)))
                    .collect();
                if chosen.is_empty() {
                    return Err(ApiError::not_found("no pair matches this sync request")
                        .with_details(format!(
                            "no configured pair has{}{}{}; see `prism-syncctl pair list`",
                            pair.map(|n| format!(" name {n:?}")).unwrap_or_default(),
                            remote_url
                                .map(|u| format!(" remote {u:?}"))
                                .unwrap_or_default(),
                            method.map(|m| format!(" method {m:?}")).unwrap_or_default(),
                        )));
                }
                if let Some(credentials) = &credentials {
                    // A password belongs to an account, not to a pair: a
                    // token limited to some pairs must not change the
                    // password of a pair it cannot see.
                    if let Some(pairs) = &limit {
                        for p in &chosen {
                            let sharing = c.pairs_sharing_login(&p.name)?;
                            if sharing.iter().any(|other| !pairs.contains(other)) {
                                return Err(auth::forbidden(format!(
                                    "pair {:?} logs in with an account that a pair this token \
                                     cannot see uses too; its password can be given over the \
                                     local socket or by a token valid for every pair",
                                    p.name
                                )));
                            }
                        }
                    }
                    // All of them before any sync starts, so no run logs in
                    // with an older password than the one just given.
                    let mut stored = false;
                    for p in &chosen {
                        stored |= c.store_credentials(&p.name, credentials)?;
                    }
                    if !stored {
                        return Err(ApiError::bad_request(
                            "credentials were given, but no selected pair logs in with a password",
                        )
                        .with_details(
                            "credentials apply to sftp:// pairs and to webdav:// pairs with a \
                         `username` in the config",
                        ));
                    }
                }
                let mut started = Vec::new();
                for p in chosen {
                    started.extend(c.start_sync(Some(&p.name), by.as_deref())?);
                }
                Ok(started)
            })
            .await?
        };
    let first = started.first().ok_or_else(|| {
        ApiError::not_found("there are no pairs to sync")
            .with_details("add one with `prism-syncctl pair add NAME --local DIR --remote URL`")
    })?;
    Ok(wire::StartSyncResponse {
        status: wire::SyncState::SyncInProgress,
        sync_id: first.sync_id.clone(),
        syncs: started,
    })
}

fn same_url(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

/// Whether `url` uses the scheme `method` (`sftp`, `webdav`, `file`, …).
fn has_scheme(url: &str, method: &str) -> bool {
    url.split_once("://")
        .is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case(method))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_accepts_times_dates_and_ages() {
        let now = timefmt::parse("2025-02-09T16:00:00Z").unwrap();
        let show = |text: &str| parse_since(text, now).map(timefmt::rfc3339);
        assert_eq!(
            show("2025-02-09T12:00:00+01:00").as_deref(),
            Some("2025-02-09T11:00:00.000Z")
        );
        assert_eq!(
            show("2025-02-08").as_deref(),
            Some("2025-02-08T00:00:00.000Z")
        );
        assert_eq!(show("90s").as_deref(), Some("2025-02-09T15:58:30.000Z"));
        assert_eq!(show("2h").as_deref(), Some("2025-02-09T14:00:00.000Z"));
        assert_eq!(show("7d").as_deref(), Some("2025-02-02T16:00:00.000Z"));
        assert_eq!(
            show("10000000d").as_deref(),
            Some("1970-01-01T00:00:00.000Z")
        );
        assert_eq!(
            show("99999999999999999s").as_deref(),
            Some("1970-01-01T00:00:00.000Z")
        );
        assert_eq!(show("7w"), None);
        assert_eq!(show("yesterday"), None);
        assert_eq!(show("h"), None);
    }

    #[test]
    fn changes_query_checks_parameters() {
        let now = SystemTime::now();
        let parse = |t: &str| {
            let target = Target::parse(t).unwrap();
            changes_query(&Query::new(&target, Route::Changes.query_params())?, now)
        };
        let q = parse("/changes?pair=notes&path=docs&limit=5").unwrap();
        assert_eq!(q.pair.as_deref(), Some("notes"));
        assert_eq!(q.path.as_deref(), Some("docs"));
        assert_eq!(q.limit, 5);
        assert_eq!(
            parse("/changes").unwrap().limit,
            wire::DEFAULT_CHANGES_LIMIT
        );
        for bad in [
            "/changes?limit=0",
            "/changes?limit=x",
            "/changes?colour=red",
        ] {
            assert_eq!(parse(bad).unwrap_err().code, 400, "{bad}");
        }
        assert_eq!(parse("/changes?pair=a&pair=b").unwrap_err().code, 400);
    }
}
