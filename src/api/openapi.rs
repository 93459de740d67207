//! The OpenAPI 3 document of the HTTP API (`GET /openapi.json`), built from
//! the wire types (their `ToSchema` derives) and one table of endpoints, so
//! a schema cannot drift from the JSON the agent sends. `docs/openapi.json`
//! is a copy that a test keeps current.
//!
//! The table states what `handlers` does; it does not drive it. Every
//! endpoint answers the spec's error object for 400, 401, 403, 404, 405,
//! 408, 409, 410, 413 and 500.

use utoipa::openapi::path::{OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{ComponentsBuilder, ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, HttpMethod, InfoBuilder, OpenApi, OpenApiBuilder, PathItem, PathsBuilder, Ref,
    RefOr, Required, ResponseBuilder, Schema,
};
use utoipa::{PartialSchema, ToSchema};

use super::wire;

/// The statuses every endpoint may answer with the error object.
const ERRORS: &[(&str, &str)] = &[
    ("400", "A malformed path, query or body"),
    (
        "401",
        "No token, or one that is malformed, expired, revoked or forged",
    ),
    (
        "403",
        "The token's role does not allow this request, it names a file on the agent's machine (merged_file), or it adds a pair that reaches files outside api.pair_roots or a server outside api.pair_remotes",
    ),
    (
        "404",
        "No such endpoint, or a pair, sync run or conflict the token cannot see",
    ),
    ("405", "A known path with another method"),
    ("408", "The request did not arrive in time"),
    ("409", "The request contradicts the current state"),
    (
        "410",
        "The version asked for is gone: the trash that held it was purged",
    ),
    ("413", "A body over 1 MiB"),
    ("500", "The agent failed while handling a valid request"),
];

/// The query parameters an endpoint cannot do without (endpoint, name).
const REQUIRED_QUERY: &[(&str, &str)] = &[("/history", "path")];

/// One query parameter: name, schema, description.
type Param = (&'static str, RefOr<Schema>, &'static str);

struct Endpoint {
    method: HttpMethod,
    path: &'static str,
    summary: &'static str,
    role: &'static str,
    query: Vec<Param>,
    body: Option<(&'static str, bool)>,
    answer: &'static str,
    /// More than the role to say about who may call it.
    note: Option<&'static str>,
}

fn string() -> RefOr<Schema> {
    String::schema()
}

/// A string that must not be empty (an empty path names no file).
fn non_empty_string() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .into()
}

/// `since`: an age, a date, or an RFC 3339 time (empty: no limit).
fn since() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(
            "^(|[0-9]+[smhd]|[0-9]{4}-[0-9]{2}-[0-9]{2}([Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2}))?)$",
        ))
        .into()
}

fn integer(min: u64, max: u64) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(min as f64))
        .maximum(Some(max as f64))
        .into()
}

fn endpoints() -> Vec<Endpoint> {
    use HttpMethod::{Delete, Get, Post};
    let endpoint = |method, path, summary, role, body, answer| Endpoint {
        method,
        path,
        summary,
        role,
        query: Vec::new(),
        body,
        answer,
        note: None,
    };
    vec![
        endpoint(
            Get,
            "/status",
            "The agent and every pair",
            "viewer",
            None,
            "AgentStatus",
        ),
        endpoint(
            Post,
            "/sync/start",
            "Start a sync (spec 4.1)",
            "operator",
            Some(("StartSyncRequest", false)),
            "StartSyncResponse",
        ),
        endpoint(
            Get,
            "/sync/status/{sync_id}",
            "One sync run (spec 4.2)",
            "viewer",
            None,
            "SyncStatus",
        ),
        endpoint(
            Post,
            "/sync/resolve",
            "Resolve a conflict (spec 4.3)",
            "operator",
            Some(("ResolveRequest", true)),
            "ResolveResponse",
        ),
        Endpoint {
            query: vec![
                ("pair", string(), "Only this pair's conflicts"),
                ("all", bool::schema(), "Resolved ones too"),
            ],
            ..endpoint(
                Get,
                "/conflicts",
                "Conflicts (spec 5.3)",
                "viewer",
                None,
                "ConflictList",
            )
        },
        Endpoint {
            query: vec![
                ("pair", string(), "Only this pair's changes"),
                (
                    "since",
                    since(),
                    "An RFC 3339 time, a date or an age (90s, 15m, 2h, 7d)",
                ),
                ("path", string(), "Only this path and below"),
                ("device", string(), "Only changes made by this device"),
                (
                    "limit",
                    integer(1, u64::from(wire::MAX_CHANGES_LIMIT)),
                    "At most this many",
                ),
            ],
            ..endpoint(
                Get,
                "/changes",
                "The change log (spec 6.2)",
                "viewer",
                None,
                "ChangeLog",
            )
        },
        Endpoint {
            query: vec![
                ("pair", string(), "The pair whose folder holds the file"),
                (
                    "path",
                    non_empty_string(),
                    "The file: inside a pair's folder, absolute, or relative to the pair's folder",
                ),
            ],
            ..endpoint(
                Get,
                "/history",
                "The versions of a file the pair still holds",
                "viewer",
                None,
                "History",
            )
        },
        endpoint(
            Post,
            "/restore",
            "Bring a version of a file back as a new change",
            "operator",
            Some(("RestoreRequest", true)),
            "RestoreResponse",
        ),
        endpoint(
            Post,
            "/pause",
            "Pause a pair, or every pair",
            "operator",
            Some(("PairSelector", false)),
            "Ack",
        ),
        endpoint(
            Post,
            "/resume",
            "Resume a pair, or every pair",
            "operator",
            Some(("PairSelector", false)),
            "Ack",
        ),
        endpoint(
            Get,
            "/pairs",
            "The configured pairs",
            "viewer",
            None,
            "PairList",
        ),
        Endpoint {
            note: Some(
                "The token must be valid for every pair, and the agent's api.pair_roots must \
                 hold the pair's local folder (and a file:// or git+file:// remote's folder); \
                 a network remote must lie at or below an entry of api.pair_remotes (none: \
                 network remotes are refused); rclone: remotes are refused. See \
                 docs/protocol.md.",
            ),
            ..endpoint(
                Post,
                "/pairs",
                "Add a pair",
                "admin",
                Some(("PairSpec", true)),
                "PairInfo",
            )
        },
        endpoint(
            Delete,
            "/pairs/{name}",
            "Remove a pair",
            "admin",
            None,
            "Ack",
        ),
        endpoint(
            Post,
            "/pairs/{name}/confirm-deletions",
            "Let held deletions go ahead",
            "operator",
            None,
            "Ack",
        ),
        endpoint(
            Get,
            "/tokens",
            "The tokens issued",
            "admin",
            None,
            "TokenList",
        ),
        endpoint(
            Delete,
            "/tokens/{id}",
            "Revoke a token",
            "admin",
            None,
            "TokenInfo",
        ),
        Endpoint {
            query: vec![("after", integer(0, u64::MAX >> 11), "Events after this id")],
            ..endpoint(
                Get,
                "/events",
                "What happens, as server-sent events (text/event-stream of Event)",
                "viewer",
                None,
                "Event",
            )
        },
    ]
}

/// Adds `T` and every schema it refers to.
fn with<T: ToSchema>(components: ComponentsBuilder) -> ComponentsBuilder {
    let mut nested = Vec::new();
    T::schemas(&mut nested);
    components.schema_from::<T>().schemas_from_iter(nested)
}

fn json_of(schema: &str) -> utoipa::openapi::Content {
    ContentBuilder::new()
        .schema(Some(Ref::from_schema_name(schema)))
        .build()
}

/// The whole document.
pub fn document() -> OpenApi {
    let mut paths = PathsBuilder::new();
    for e in endpoints() {
        let mut operation = OperationBuilder::new()
            .summary(Some(e.summary))
            .description(Some(format!(
                "Needs a token with the {} role or above.{}",
                e.role,
                e.note.map(|note| format!(" {note}")).unwrap_or_default()
            )))
            .security(SecurityRequirement::new("bearer", Vec::<String>::new()));
        let mut segment = e.path;
        while let Some(start) = segment.find('{') {
            let end = segment[start..].find('}').expect("balanced braces") + start;
            operation = operation.parameter(
                ParameterBuilder::new()
                    .name(&segment[start + 1..end])
                    .parameter_in(ParameterIn::Path)
                    .required(Required::True)
                    .schema(Some(string())),
            );
            segment = &segment[end + 1..];
        }
        for (name, schema, description) in e.query {
            operation = operation.parameter(
                ParameterBuilder::new()
                    .name(name)
                    .parameter_in(ParameterIn::Query)
                    .required(if REQUIRED_QUERY.contains(&(e.path, name)) {
                        Required::True
                    } else {
                        Required::False
                    })
                    .description(Some(description))
                    .schema(Some(schema)),
            );
        }
        if let Some((schema, required)) = e.body {
            operation = operation.request_body(Some(
                RequestBodyBuilder::new()
                    .content("application/json", json_of(schema))
                    .required(Some(if required {
                        Required::True
                    } else {
                        Required::False
                    }))
                    .build(),
            ));
        }
        let media = if e.path == "/events" {
            "text/event-stream"
        } else {
            "application/json"
        };
        operation = operation.response(
            "200",
            ResponseBuilder::new()
                .description("Success")
                .content(media, json_of(e.answer)),
        );
        let streams = (e.path == "/events").then_some((
            "429",
            "The agent, or this token, has as many event streams open as it allows",
        ));
        for (status, description) in ERRORS.iter().chain(&streams) {
            operation = operation.response(
                *status,
                ResponseBuilder::new()
                    .description(*description)
                    .content("application/json", json_of("ErrorBody")),
            );
        }
        paths = paths.path(e.path, PathItem::new(e.method, operation.build()));
    }
    let mut components = ComponentsBuilder::new().security_scheme(
        "bearer",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT")
                .build(),
        ),
    );
    components = with::<wire::AgentStatus>(components);
    components = with::<wire::StartSyncRequest>(components);
    components = with::<wire::StartSyncResponse>(components);
    components = with::<wire::SyncStatus>(components);
    components = with::<wire::ResolveRequest>(components);
    components = with::<wire::ResolveResponse>(components);
    components = with::<wire::ConflictList>(components);
    components = with::<wire::ChangeLog>(components);
    components = with::<wire::History>(components);
    components = with::<wire::RestoreRequest>(components);
    components = with::<wire::RestoreResponse>(components);
    components = with::<wire::PairSelector>(components);
    components = with::<wire::Ack>(components);
    components = with::<wire::PairList>(components);
    components = with::<wire::PairSpec>(components);
    components = with::<wire::PairInfo>(components);
    components = with::<wire::TokenList>(components);
    components = with::<wire::TokenInfo>(components);
    components = with::<wire::Event>(components);
    components = with::<wire::ErrorBody>(components);
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Prism Sync control API")
                .version(super::PROTOCOL_VERSION)
                .description(Some(
                    "The API of prism-syncd over HTTP; the same endpoints are served on the \
                     local socket. See docs/protocol.md.",
                ))
                .build(),
        )
        .paths(paths.build())
        .components(Some(components.build()))
        .build()
}

/// The document as `GET /openapi.json` serves it and `docs/openapi.json`
/// holds it.
pub fn json() -> String {
    let mut text = document().to_pretty_json().expect("the document is JSON");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    /// `docs/openapi.json` is what this build serves. After changing the
    /// API, refresh it with `PRISM_SYNC_WRITE_OPENAPI=1 cargo test --lib
    /// api::openapi`.
    #[test]
    fn the_checked_in_document_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json");
        let current = super::json();
        if std::env::var_os("PRISM_SYNC_WRITE_OPENAPI").is_some() {
            std::fs::write(path, &current).unwrap();
        }
        let checked_in = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            checked_in == current,
            "docs/openapi.json is stale; refresh it with \
             PRISM_SYNC_WRITE_OPENAPI=1 cargo test --lib api::openapi"
        );
    }

    #[test]
    fn every_error_answer_is_the_error_object() {
        let document: serde_json::Value = serde_json::from_str(&super::json()).unwrap();
        let paths = document["paths"].as_object().unwrap();
        assert!(paths.len() >= 14, "{}", paths.len());
        for (path, item) in paths {
            for (method, operation) in item.as_object().unwrap() {
                for status in ["401", "403", "404"] {
                    let schema = &operation["responses"][status]["content"]["application/json"]["schema"]
                        ["$ref"];
                    assert_eq!(
                        schema, "#/components/schemas/ErrorBody",
                        "{method} {path} {status}"
                    );
                }
            }
        }
        assert!(document["components"]["schemas"]["ConflictInfo"].is_object());
    }
}
