//! The HTTP API under `/v1/` (contract: `api/openapi.yaml`, `docs/http-api.md`).
//!
//! Handlers are thin: parse and check the request, call the node, shape the answer.
//! Every rejection is JSON `{"error", "message"}`, including the ones axum would answer
//! in plain text (bad query strings, unknown routes, wrong methods, oversized bodies).
//!
//! Default deny: every route and method is classified in [`ROUTES`] with the [`Access`] it
//! needs, the router wraps each handler in the token check for exactly that access
//! (`crate::auth::require`), and building the router panics when a handler has no
//! classification or a classification no handler.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::Extension;
use axum::extract::Path;
use axum::extract::Query;
use axum::extract::Request;
use axum::extract::State;
use axum::http::HeaderValue;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::IntoResponse;
use axum::response::Response;
use axum::routing::delete;
use axum::routing::get;
use axum::routing::post;
use axum::routing::put;
use axum::routing::MethodRouter;
use axum::Json;
use axum::Router;
use base64::Engine;
use haven_core::auth::is_token_id;
use haven_core::auth::validate_token_name;
use haven_core::auth::validate_ttl_seconds;
use haven_core::auth::Access;
use haven_core::auth::Role;
use haven_core::key::validate_key;
use haven_core::key::KeyError;
use haven_core::kv;
use haven_core::kv::Command;
use haven_core::kv::CommandResult;
use haven_core::kv::EventKind;
use haven_core::kv::HistoryError;
use haven_core::limits::LIST_PAGE_DEFAULT;
use haven_core::limits::LIST_PAGE_MAX;
use haven_core::limits::REQUEST_BODY_BYTES_MAX;
use haven_core::limits::REQUEST_ID_BYTES_MAX;
use haven_core::limits::VALUE_BYTES_MAX;
use haven_net::JoinRequest;
use serde_json::json;
use serde_json::Value;

use crate::admin_api;
use crate::auth::Caller;
use crate::auth::Guard;
use crate::error::ApiError;
use crate::status::status;
use crate::Node;

/// Events sent to one watcher per read of the history; bounds the time the state lock is
/// held and the size of one burst.
pub const WATCH_BATCH_EVENTS: usize = 512;

/// Lines buffered per watcher before the sender waits for the client to read.
pub const WATCH_BUFFER_LINES: usize = 64;

/// A watcher that has received nothing gets a progress line this often, so it knows the
/// stream is alive and how far it has been brought.
pub const WATCH_PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// Every route, each method with the access it needs: the router is built from it, the
/// OpenAPI test compares it with `api/openapi.yaml`, and the authorization tests drive
/// every entry with missing, revoked and too-weak tokens.
///
/// | access        | roles allowed                    |
/// |---------------|----------------------------------|
/// | `Public`      | anyone, no token                 |
/// | `Read`        | admin, operator, reader          |
/// | `ReadMembers` | admin, operator, reader, join    |
/// | `Write`       | admin, operator                  |
/// | `Join`        | admin, join (one-time)           |
/// | `Admin`       | admin                            |
pub const ROUTES: &[(&str, &[(&str, Access)])] = &[
    ("/v1/kv/{key}", &[("get", Access::Read), ("put", Access::Write), ("delete", Access::Write)]),
    ("/v1/kv", &[("get", Access::Read)]),
    ("/v1/watch", &[("get", Access::Read)]),
    ("/v1/status", &[("get", Access::Read)]),
    ("/v1/health", &[("get", Access::Public)]),
    ("/v1/health/primary", &[("get", Access::Public)]),
    ("/v1/members", &[("get", Access::ReadMembers)]),
    ("/v1/members/join", &[("post", Access::Join)]),
    ("/v1/members/{id}", &[("delete", Access::Admin)]),
    ("/v1/switchover", &[("post", Access::Write)]),
    ("/v1/maintenance", &[("post", Access::Admin)]),
    ("/v1/tokens", &[("get", Access::Admin), ("post", Access::Admin)]),
    ("/v1/tokens/{id}", &[("delete", Access::Admin)]),
    ("/v1/config", &[("get", Access::Read)]),
    ("/v1/config/draft", &[("get", Access::Read), ("put", Access::Admin), ("delete", Access::Admin)]),
    ("/v1/config/apply", &[("post", Access::Admin)]),
    ("/v1/audit", &[("get", Access::Read)]),
    ("/v1/teardown", &[("post", Access::Admin)]),
    ("/v1/restart", &[("post", Access::Admin)]),
    ("/v1/recover", &[("post", Access::Admin)]),
    ("/metrics", &[("get", Access::Read)]),
];

/// The access `method` (lower case) on `path` (as written in [`ROUTES`]) needs, if the
/// route is classified.
pub fn access_of(path: &str, method: &str) -> Option<Access> {
    let (_, methods) = ROUTES.iter().find(|(known, _)| *known == path)?;
    methods.iter().find(|(known, _)| *known == method).map(|(_, access)| *access)
}

type Shared = Arc<Node>;
type Params = Result<Query<HashMap<String, String>>, QueryRejection>;

pub fn router(node: Arc<Node>) -> Router {
    // One row per route and method, in the inventory's spelling (`{key}`).
    let table: Vec<(&str, &str, MethodRouter<Shared>)> = vec![
        ("/v1/kv/{key}", "get", get(kv_get)),
        ("/v1/kv/{key}", "put", put(kv_put)),
        ("/v1/kv/{key}", "delete", delete(kv_delete)),
        ("/v1/kv", "get", get(kv_list)),
        ("/v1/watch", "get", get(watch)),
        ("/v1/status", "get", get(get_status)),
        ("/v1/health", "get", get(health)),
        ("/v1/health/primary", "get", get(health_primary)),
        ("/v1/members", "get", get(members_list)),
        ("/v1/members/join", "post", post(members_join)),
        ("/v1/members/{id}", "delete", delete(members_remove)),
        ("/v1/switchover", "post", post(switchover)),
        ("/v1/maintenance", "post", post(maintenance)),
        ("/v1/tokens", "get", get(tokens_list)),
        ("/v1/tokens", "post", post(tokens_create)),
        ("/v1/tokens/{id}", "delete", delete(tokens_revoke)),
        ("/v1/config", "get", get(admin_api::config_show)),
        ("/v1/config/draft", "get", get(admin_api::draft_show)),
        ("/v1/config/draft", "put", put(admin_api::draft_edit)),
        ("/v1/config/draft", "delete", delete(admin_api::draft_discard)),
        ("/v1/config/apply", "post", post(admin_api::config_apply)),
        ("/v1/audit", "get", get(admin_api::audit)),
        ("/v1/teardown", "post", post(admin_api::teardown)),
        ("/v1/restart", "post", post(admin_api::restart)),
        ("/v1/recover", "post", post(crate::recover::recover)),
        ("/metrics", "get", get(metrics)),
    ];
    // Default deny, checked both ways when the router is built: a handler without a
    // classification, or a classification without a handler, is a programming error.
    for (path, methods) in ROUTES {
        for (method, _) in *methods {
            assert!(
                table.iter().any(|(p, m, _)| p == path && m == method),
                "ROUTES lists {method} {path} but the router has no handler for it"
            );
        }
    }
    let mut paths: BTreeMap<&str, MethodRouter<Shared>> = BTreeMap::new();
    for (path, method, handler) in table {
        let access = access_of(path, method)
            .unwrap_or_else(|| panic!("{method} {path} is not classified in ROUTES: every route needs an Access"));
        let guard = Guard { node: node.clone(), access };
        let guarded = handler.route_layer(axum::middleware::from_fn_with_state(guard, crate::auth::require));
        let merged = match paths.remove(path) {
            Some(existing) => existing.merge(guarded),
            None => guarded,
        };
        paths.insert(path, merged);
    }
    let mut router = Router::new();
    for (path, methods) in paths {
        router = router.route(&path.replace(INVENTORY_KEY, AXUM_KEY), methods);
    }
    router
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(json_errors))
        .layer(axum::middleware::from_fn_with_state(node.clone(), leader_headers))
        .layer(axum::middleware::from_fn_with_state(node.clone(), crate::metrics::count_requests))
        .with_state(node)
}

/// The key segment as the inventory and the OpenAPI file spell it, and as axum does (a
/// wildcard: keys hold slashes).
const INVENTORY_KEY: &str = "{key}";
const AXUM_KEY: &str = "{*key}";

/// The inventory's path (`ROUTES`) of the route axum matched as `matched`, without
/// allocating: the metrics label every request with it.
pub fn inventory_path(matched: &str) -> Option<&'static str> {
    ROUTES.iter().map(|(path, _)| *path).find(|path| match path.split_once(INVENTORY_KEY) {
        Some((before, after)) => {
            matched.strip_prefix(before).and_then(|rest| rest.strip_prefix(AXUM_KEY)) == Some(after)
        }
        None => *path == matched,
    })
}

/// Longest plain-text rejection carried into the JSON error's message.
const REJECTION_TEXT_BYTES_MAX: usize = 1024;

/// Every error answer in the one JSON shape, including the plain-text rejections axum's
/// extractors produce before a handler runs (an undecodable path, for one; found by the
/// HTTP fuzzer).
async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json") || value.starts_with("application/x-ndjson"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, REJECTION_TEXT_BYTES_MAX).await.unwrap_or_default();
    let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
        "too_large"
    } else if status.is_client_error() {
        "bad_request"
    } else {
        "internal"
    };
    let mut converted = ApiError::new(status, code, String::from_utf8_lossy(&text).trim().to_string()).into_response();
    for (name, value) in parts.headers.iter() {
        if name != axum::http::header::CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH {
            converted.headers_mut().insert(name.clone(), value.clone());
        }
    }
    converted
}

async fn no_route(request: Request) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no_route", format!("no route {}; see api/openapi.yaml", request.uri().path()))
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} is not allowed on {}", request.method(), request.uri().path()),
    )
}

/// Adds `Haven-Leader` (URL) and `Haven-Leader-Id` to every response.
///
/// Also the cluster: every response names this node's (`Haven-Cluster-Id`), and a request
/// that names another cluster is refused before anything is done (`409 cluster_mismatch`),
/// so a client that was given the endpoints of two clusters cannot mix them (issue 14).
async fn leader_headers(State(node): State<Shared>, request: Request, next: Next) -> Response {
    let ours = node.cluster_id();
    let asked = request.headers().get(CLUSTER_ID_HEADER).and_then(|value| value.to_str().ok()).map(str::to_string);
    let mut response = match (&asked, &ours) {
        (Some(asked), Some(ours)) if asked != ours => ApiError::new(
            StatusCode::CONFLICT,
            "cluster_mismatch",
            format!(
                "this node belongs to cluster {ours}, not to cluster {}; nothing was done. Use the endpoints of one \
                 cluster",
                asked.escape_debug()
            ),
        )
        .with("cluster_id", ours.clone())
        .with("expected", asked.clone())
        .into_response(),
        _ => next.run(request).await,
    };
    let headers = response.headers_mut();
    if let Some(value) = ours.as_deref().and_then(|ours| HeaderValue::from_str(ours).ok()) {
        headers.insert(CLUSTER_ID_HEADER, value);
    }
    if let Some((id, leader)) = node.leader() {
        if let Ok(value) = HeaderValue::from_str(&leader.client_url) {
            headers.insert("haven-leader", value);
        }
        headers.insert("haven-leader-id", HeaderValue::from(id));
    }
    response
}

/// Names the answering node's cluster on every response; on a request, the cluster the
/// client means.
pub const CLUSTER_ID_HEADER: &str = "haven-cluster-id";

// ---- query parsing --------------------------------------------------------------------

/// Query parameters, checked against the names a route accepts, so a typo is an error and
/// not a silently ignored option.
struct QueryParams(HashMap<String, String>);

impl QueryParams {
    fn parse(params: Params, allowed: &[&str]) -> Result<QueryParams, ApiError> {
        let Query(map) =
            params.map_err(|rejection| ApiError::bad_request(format!("invalid query string: {rejection}")))?;
        if let Some(unknown) = map.keys().find(|name| !allowed.contains(&name.as_str())) {
            return Err(ApiError::bad_request(format!(
                "unknown query parameter `{unknown}`; allowed: {}",
                allowed.join(", ")
            )));
        }
        Ok(QueryParams(map))
    }

    fn string(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    fn number(&self, name: &str) -> Result<Option<u64>, ApiError> {
        self.string(name)
            .map(|text| {
                text.parse::<u64>()
                    .map_err(|_| ApiError::bad_request(format!("`{name}` must be a non-negative integer")))
            })
            .transpose()
    }

    fn flag(&self, name: &str) -> Result<bool, ApiError> {
        match self.string(name) {
            None | Some("0") | Some("false") => Ok(false),
            Some("") | Some("1") | Some("true") => Ok(true),
            Some(_) => Err(ApiError::bad_request(format!("`{name}` must be 1, true, 0 or false"))),
        }
    }

    fn stale(&self) -> Result<bool, ApiError> {
        match self.string("consistency") {
            None | Some("linearizable") => Ok(false),
            Some("stale") => Ok(true),
            Some(_) => Err(ApiError::bad_request("`consistency` must be linearizable or stale")),
        }
    }

    fn request_id(&self) -> Result<Option<String>, ApiError> {
        match self.string("request_id") {
            None => Ok(None),
            Some(id) if id.is_empty() || id.len() > REQUEST_ID_BYTES_MAX => {
                Err(ApiError::bad_request(format!("`request_id` must be 1-{REQUEST_ID_BYTES_MAX} bytes")))
            }
            Some(id) => Ok(Some(id.to_string())),
        }
    }
}

fn check_key(key: &str) -> Result<(), ApiError> {
    validate_key(key).map_err(|error| match error {
        KeyError::TooLong { .. } => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "key_too_large", error.to_string()),
        _ => ApiError::new(StatusCode::BAD_REQUEST, "invalid_key", error.to_string()),
    })
}

// ---- KV -------------------------------------------------------------------------------

fn entry_json(key: &str, entry: &kv::Entry, revision: u64) -> Value {
    let mut object = json!({
        "key": key,
        "create_revision": entry.create_revision,
        "mod_revision": entry.mod_revision,
        "version": entry.version,
        "revision": revision,
    });
    put_value(&mut object, &entry.value);
    object
}

/// Values travel as text when they are UTF-8 and as base64 otherwise.
fn put_value(object: &mut Value, value: &[u8]) {
    let Some(map) = object.as_object_mut() else { return };
    match std::str::from_utf8(value) {
        Ok(text) => map.insert("value".into(), Value::String(text.into())),
        Err(_) => {
            map.insert("value_base64".into(), Value::String(base64::engine::general_purpose::STANDARD.encode(value)))
        }
    };
}

async fn kv_get(
    State(node): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(key): Path<String>,
    params: Params,
) -> Result<Response, ApiError> {
    let params = QueryParams::parse(params, &["consistency", "raw"])?;
    check_key(&key)?;
    let raw = params.flag("raw")?;
    node.refuse_reads_if_diverged()?;
    if !params.stale()? {
        node.read_barrier().await?;
    }
    let state = node.state.read();
    caller.recheck(&state.kv, node.cluster_now_ms())?;
    let revision = state.kv.revision();
    let Some(entry) = state.kv.get(&key) else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("key {key:?} does not exist"))
            .with("revision", revision));
    };
    if raw {
        let mut response = Response::new(Body::from(entry.value.clone()));
        let headers = response.headers_mut();
        headers.insert("content-type", HeaderValue::from_static("application/octet-stream"));
        headers.insert("haven-revision", HeaderValue::from(revision));
        headers.insert("haven-mod-revision", HeaderValue::from(entry.mod_revision));
        return Ok(response);
    }
    Ok(Json(entry_json(&key, entry, revision)).into_response())
}

/// Reads a request body up to `REQUEST_BODY_BYTES_MAX`, answering 413 beyond it.
async fn read_body(request: Request) -> Result<Bytes, ApiError> {
    crate::body::read_limited(request, REQUEST_BODY_BYTES_MAX, || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body exceeds {REQUEST_BODY_BYTES_MAX} bytes"),
        )
    })
    .await
}

async fn kv_put(
    State(node): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(key): Path<String>,
    params: Params,
    request: Request,
) -> Result<Response, ApiError> {
    let params = QueryParams::parse(params, &["prev_revision", "request_id"])?;
    check_key(&key)?;
    let value = read_body(request).await?;
    if value.len() > VALUE_BYTES_MAX {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "value_too_large",
            format!("the value is {} bytes; the limit is {VALUE_BYTES_MAX} bytes", value.len()),
        ));
    }
    let command =
        Command::Put { key: key.clone(), value: value.to_vec(), prev_revision: params.number("prev_revision")? };
    let acked = node.write_acked(&caller, kv::Request::new(params.request_id()?, command)).await?;
    let ack = ack_header(&acked);
    Ok(match acked.result {
        CommandResult::Put { revision, prev_mod_revision } => {
            (ack, Json(json!({ "key": key, "revision": revision, "prev_mod_revision": prev_mod_revision })))
                .into_response()
        }
        // Committed all the same (a failed compare is an entry in the log): stamped too.
        other => (ack, command_failure(&key, other)).into_response(),
    })
}

async fn kv_delete(
    State(node): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(key): Path<String>,
    params: Params,
) -> Result<Response, ApiError> {
    let params = QueryParams::parse(params, &["prev_revision", "request_id"])?;
    check_key(&key)?;
    let command = Command::Delete { key: key.clone(), prev_revision: params.number("prev_revision")? };
    let acked = node.write_acked(&caller, kv::Request::new(params.request_id()?, command)).await?;
    let ack = ack_header(&acked);
    Ok(match acked.result {
        CommandResult::Delete { revision, deleted } => {
            (ack, Json(json!({ "key": key, "revision": revision, "deleted": deleted }))).into_response()
        }
        other => (ack, command_failure(&key, other)).into_response(),
    })
}

/// The `Haven-Ack` header of a committed KV write: which leader acknowledged it, as which
/// log entry, and when on its monotonic clock (docs/http-api.md).
fn ack_header(acked: &haven_net::Acked) -> [(&'static str, HeaderValue); 1] {
    let value = HeaderValue::try_from(acked.ack.to_string()).unwrap_or_else(|_| HeaderValue::from_static(""));
    [(haven_net::ACK_HEADER, value)]
}

fn command_failure(key: &str, result: CommandResult) -> ApiError {
    match result {
        CommandResult::Unauthorized { reason } => crate::auth::revoked_in_flight(reason),
        CommandResult::CompareFailed { current_revision } => ApiError::new(
            StatusCode::CONFLICT,
            "compare_failed",
            format!("key {key:?} is at mod_revision {current_revision} (0 = absent), not the expected one"),
        )
        .with("current_revision", current_revision),
        CommandResult::Refused { reason } if reason.starts_with(kv::STORE_FULL) => {
            ApiError::new(StatusCode::INSUFFICIENT_STORAGE, "store_full", reason)
        }
        // Not an answer a put or delete gets (a reused id is answered in `Node::write_acked`).
        other => ApiError::internal(format!("unexpected answer to a write of key {key:?}: {other:?}")),
    }
}

async fn kv_list(
    State(node): State<Shared>,
    Extension(caller): Extension<Caller>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    let params = QueryParams::parse(params, &["prefix", "limit", "after", "consistency"])?;
    let prefix = params.string("prefix").unwrap_or("").to_string();
    let limit = params.number("limit")?.map_or(LIST_PAGE_DEFAULT, |limit| limit as usize);
    if limit == 0 || limit > LIST_PAGE_MAX {
        return Err(ApiError::bad_request(format!("`limit` must be 1..={LIST_PAGE_MAX}")));
    }
    node.refuse_reads_if_diverged()?;
    if !params.stale()? {
        node.read_barrier().await?;
    }
    let state = node.state.read();
    caller.recheck(&state.kv, node.cluster_now_ms())?;
    let revision = state.kv.revision();
    let (items, more) = state.kv.list(&prefix, params.string("after"), limit);
    let items: Vec<Value> = items.into_iter().map(|(key, entry)| entry_json(key, entry, revision)).collect();
    Ok(Json(json!({ "items": items, "revision": revision, "more": more })))
}

// ---- watch ----------------------------------------------------------------------------

fn event_json(event: &kv::Event) -> Value {
    match &event.kind {
        EventKind::Put { value, create_revision, version } => {
            let mut object = json!({
                "type": "put",
                "key": event.key,
                "revision": event.revision,
                "create_revision": create_revision,
                "version": version,
            });
            put_value(&mut object, value);
            object
        }
        EventKind::Delete => json!({ "type": "delete", "key": event.key, "revision": event.revision }),
    }
}

fn line(value: &Value) -> Bytes {
    let mut bytes = value.to_string().into_bytes();
    bytes.push(b'\n');
    Bytes::from(bytes)
}

async fn watch(
    State(node): State<Shared>,
    Extension(caller): Extension<Caller>,
    params: Params,
) -> Result<Response, ApiError> {
    let params = QueryParams::parse(params, &["prefix", "after_revision"])?;
    node.refuse_reads_if_diverged()?;
    let prefix = params.string("prefix").unwrap_or("").to_string();
    let Some(token_slot) = node.token_watchers.try_take(&caller.token_id) else {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_watchers",
            format!(
                "token {} holds {} watchers on this node already, the most one token may (a share of the node's {}); \
                 close some, or give other clients their own tokens",
                caller.token_id,
                node.token_watchers.max(),
                node.watchers_max
            ),
        )
        .with("max_per_token", node.token_watchers.max()));
    };
    let Ok(permit) = node.watchers.clone().try_acquire_owned() else {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_watchers",
            format!("this node serves {} watchers already; use another node or retry later", node.watchers_max),
        ));
    };
    let start = {
        let state = node.state.read();
        let start = params.number("after_revision")?.unwrap_or(state.kv.revision());
        if let Err(HistoryError::Compacted { compact_revision }) = state.kv.check_resumable(start) {
            return Err(ApiError::new(
                StatusCode::GONE,
                "compacted",
                format!("history before revision {compact_revision} is compacted; list the keys and watch from the list's revision"),
            )
            .with("compact_revision", compact_revision));
        }
        start
    };
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Bytes, Infallible>>(WATCH_BUFFER_LINES);
    tokio::spawn(async move {
        let _permits = (permit, token_slot);
        stream_events(node, caller, prefix, start, sender).await;
    });
    let body = Body::from_stream(tokio_stream_from(receiver));
    let mut response = Response::new(body);
    response.headers_mut().insert("content-type", HeaderValue::from_static("application/x-ndjson"));
    Ok(response)
}

fn tokio_stream_from(
    mut receiver: tokio::sync::mpsc::Receiver<Result<Bytes, Infallible>>,
) -> impl futures::Stream<Item = Result<Bytes, Infallible>> {
    futures::stream::poll_fn(move |context| receiver.poll_recv(context))
}

/// Sends every event after `next` under `prefix`, in revision order, until the client goes
/// away. Progress lines report how far the stream has looked when nothing matched. The
/// caller's token is checked again before every batch: a revoked or expired token ends the
/// stream with an `unauthorized` error line instead of streaming on.
async fn stream_events(
    node: Arc<Node>,
    caller: Caller,
    prefix: String,
    mut next: u64,
    sender: tokio::sync::mpsc::Sender<Result<Bytes, Infallible>>,
) {
    let mut changes = node.state.subscribe();
    let mut last_sent = tokio::time::Instant::now();
    loop {
        let batch = {
            let state = node.state.read();
            caller
                .recheck(&state.kv, node.cluster_now_ms())
                .map(|()| state.kv.events_after(next, &prefix, WATCH_BATCH_EVENTS))
        };
        let batch = match batch {
            Ok(batch) => batch,
            Err(error) => {
                let line = line(&json!({ "type": "error", "error": error.code, "message": error.message }));
                let _ = sender.send(Ok(line)).await;
                return;
            }
        };
        let (events, scanned) = match batch {
            Ok(batch) => batch,
            Err(HistoryError::Compacted { compact_revision }) => {
                let _ = sender
                    .send(Ok(line(
                        &json!({ "type": "error", "error": "compacted", "compact_revision": compact_revision }),
                    )))
                    .await;
                return;
            }
        };
        for event in &events {
            if sender.send(Ok(line(&event_json(event)))).await.is_err() {
                return;
            }
        }
        next = scanned;
        if !events.is_empty() {
            last_sent = tokio::time::Instant::now();
            continue;
        }
        let wait = WATCH_PROGRESS_INTERVAL.saturating_sub(last_sent.elapsed());
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = tokio::time::sleep(wait) => {
                if sender.send(Ok(line(&json!({ "type": "progress", "revision": next })))).await.is_err() {
                    return;
                }
                last_sent = tokio::time::Instant::now();
            }
            _ = sender.closed() => return,
        }
    }
}

// ---- cluster --------------------------------------------------------------------------

async fn get_status(State(node): State<Shared>, params: Params) -> Result<Json<Value>, ApiError> {
    QueryParams::parse(params, &[])?;
    Ok(Json(serde_json::to_value(status(&node)).map_err(|e| ApiError::internal(e.to_string()))?))
}

async fn metrics(State(node): State<Shared>, params: Params) -> Result<Response, ApiError> {
    QueryParams::parse(params, &[])?;
    crate::metrics::scrape(&node)
}

// Health checks are polled by load balancers and supervisors: they read openraft's metrics
// only, not the whole status (members, probes, HA evaluation).

async fn health(State(node): State<Shared>) -> Response {
    if let Some(reason) = node.core_stopped() {
        let reason = format!("the Raft core stopped (the node is exiting): {reason}");
        let body = json!({ "ok": false, "node_id": node.node_id, "leader": null, "reason": reason });
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    }
    if let Some(reason) = node.diverged() {
        let body = json!({ "ok": false, "node_id": node.node_id, "leader": null, "reason": reason });
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    }
    let metrics = node.metrics();
    let leader = metrics.current_leader;
    let member = metrics.membership_config.get_node(&node.node_id).is_some();
    let serving = leader.is_some() && member;
    let code = if serving { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let reason = if serving {
        "serving"
    } else if !member {
        "not a member of a cluster"
    } else {
        "no leader"
    };
    let cluster_id = node.cluster_id();
    (code, Json(json!({ "ok": serving, "node_id": node.node_id, "leader": leader, "reason": reason, "cluster_id": cluster_id })))
        .into_response()
}

async fn health_primary(State(node): State<Shared>) -> Response {
    let metrics = node.metrics();
    let primary = node.leader_has_quorum(&metrics);
    let code = if primary { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, Json(json!({ "primary": primary, "node_id": node.node_id, "leader": metrics.current_leader })))
        .into_response()
}

async fn members_list(State(node): State<Shared>, params: Params) -> Result<Json<Value>, ApiError> {
    QueryParams::parse(params, &[])?;
    Ok(Json(json!({ "members": status(&node).members })))
}

/// Admits a node, carried out by the leader for the caller (see `Node::join_as_leader`).
async fn members_join(
    State(node): State<Shared>,
    Extension(caller): Extension<Caller>,
    request: Request,
) -> Result<Json<Value>, ApiError> {
    let body = read_body(request).await?;
    let join: JoinRequest = serde_json::from_slice(&body)
        .map_err(|error| ApiError::bad_request(format!("invalid join request: {error}")))?;
    // A malformed request must not spend the token.
    node.validate_join(&join)?;
    let response = node.join(&caller, join).await?;
    Ok(Json(serde_json::to_value(response).map_err(|e| ApiError::internal(e.to_string()))?))
}

async fn members_remove(
    State(node): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    let params = QueryParams::parse(params, &["force"])?;
    let id: u64 = id.parse().map_err(|_| ApiError::bad_request("the member id must be a positive integer"))?;
    let force = params.flag("force")?;
    let response = node.remove_member(&caller, id, force).await?;
    Ok(Json(json!({ "removed": response.removed, "warning": response.warning })))
}

/// Body of `POST /v1/switchover`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SwitchoverBody {
    /// The node to hand the primary role to; absent: the most caught-up voter.
    #[serde(default)]
    to: Option<u64>,
}

async fn switchover(
    State(node): State<Shared>,
    Extension(caller): Extension<Caller>,
    request: Request,
) -> Result<Json<Value>, ApiError> {
    let body = read_body(request).await?;
    let body: SwitchoverBody = if body.iter().all(u8::is_ascii_whitespace) {
        SwitchoverBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|error| ApiError::bad_request(format!("invalid switchover request: {error}")))?
    };
    // Carried out (and recorded in the audit log) by the leader for the caller.
    let response = node.switchover(&caller, body.to).await?;
    Ok(Json(serde_json::to_value(response).map_err(|e| ApiError::internal(e.to_string()))?))
}

/// Body of `POST /v1/maintenance`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct MaintenanceBody {
    on: bool,
}

/// Maintenance mode on or off (Patroni's "pause"). Turning it off works even without a
/// leader: the node that receives the request resumes elections itself first.
async fn maintenance(
    State(node): State<Shared>,
    Extension(caller): Extension<Caller>,
    request: Request,
) -> Result<Json<Value>, ApiError> {
    let body = read_body(request).await?;
    let body: MaintenanceBody = serde_json::from_slice(&body)
        .map_err(|error| ApiError::bad_request(format!("invalid maintenance request: {error}")))?;
    if !body.on {
        node.resume_elections_locally_if_leaderless().await;
    }
    let command = Command::SetMaintenance { on: body.on };
    match node.write(&caller, kv::Request::new(None, command)).await? {
        CommandResult::Ok { .. } => Ok(Json(json!({ "maintenance": body.on }))),
        CommandResult::Unauthorized { reason } => Err(crate::auth::revoked_in_flight(reason)),
        other => Err(ApiError::internal(format!("unexpected answer to maintenance: {other:?}"))),
    }
}

// ---- tokens ---------------------------------------------------------------------------

/// Body of `POST /v1/tokens`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTokenBody {
    /// Defaults to the role's name.
    #[serde(default)]
    name: Option<String>,
    role: String,
    /// Lifetime; absent: the token does not expire (a join token: `JOIN_TOKEN_TTL_SECONDS_DEFAULT`).
    #[serde(default)]
    ttl_seconds: Option<u64>,
}

/// One token as listed: never its secret, never its hash.
fn token_json(record: &haven_core::auth::TokenRecord, now_ms: u64) -> Value {
    json!({
        "id": record.id,
        "name": record.name,
        "role": record.role,
        "created_ms": record.created_ms,
        "expires_ms": record.expires_ms,
        "expired": record.expired_at(now_ms),
        "used": record.used(),
        "used_by_node": record.used_by.as_ref().map(|claim| claim.node_id),
    })
}

async fn tokens_list(
    State(node): State<Shared>,
    Extension(caller): Extension<Caller>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    QueryParams::parse(params, &[])?;
    node.read_barrier().await?;
    let state = node.state.read();
    caller.recheck(&state.kv, node.cluster_now_ms())?;
    let now_ms = node.cluster_now_ms();
    let mut records: Vec<_> = state.kv.tokens().collect();
    records.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
    let tokens: Vec<Value> = records.into_iter().map(|record| token_json(record, now_ms)).collect();
    Ok(Json(json!({ "tokens": tokens })))
}

/// Mints a token and commits its hash. The answer is the only place the secret ever
/// appears; it is not logged, and a lost answer means minting another (no request id: a
/// retry would mint a new secret, so the client never resends this once it may have
/// arrived).
async fn tokens_create(
    State(node): State<Shared>,
    Extension(caller): Extension<Caller>,
    params: Params,
    request: Request,
) -> Result<Json<Value>, ApiError> {
    QueryParams::parse(params, &[])?;
    let body = read_body(request).await?;
    let body: CreateTokenBody = serde_json::from_slice(&body)
        .map_err(|error| ApiError::bad_request(format!("invalid token request: {error}")))?;
    let role: Role = body.role.parse().map_err(ApiError::bad_request)?;
    let name = body.name.unwrap_or_else(|| role.as_str().to_string());
    validate_token_name(&name).map_err(ApiError::bad_request)?;
    if let Some(ttl_seconds) = body.ttl_seconds {
        validate_ttl_seconds(ttl_seconds).map_err(ApiError::bad_request)?;
    }
    // A join token always expires: an hour unless the admin asks for another lifetime.
    let ttl_seconds = match (role, body.ttl_seconds) {
        (Role::Join, None) => Some(haven_core::auth::JOIN_TOKEN_TTL_SECONDS_DEFAULT),
        (_, ttl_seconds) => ttl_seconds,
    };
    let made = crate::auth::mint_token()?;
    let command = Command::CreateToken {
        id: made.id.clone(),
        name: name.clone(),
        role,
        sha256_hex: made.sha256_hex.clone(),
        ttl_ms: ttl_seconds.map(|seconds| seconds * 1000),
    };
    match node.write(&caller, kv::Request::new(None, command)).await? {
        CommandResult::TokenCreated { created_ms, expires_ms } => Ok(Json(json!({
            "token": made.token,
            "id": made.id,
            "name": name,
            "role": role,
            "created_ms": created_ms,
            "expires_ms": expires_ms,
        }))),
        CommandResult::Unauthorized { reason } => Err(crate::auth::revoked_in_flight(reason)),
        CommandResult::Refused { reason } => Err(ApiError::new(StatusCode::CONFLICT, "conflict", reason)),
        other => Err(ApiError::internal(format!("unexpected answer to a token creation: {other:?}"))),
    }
}

async fn tokens_revoke(
    State(node): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    let params = QueryParams::parse(params, &["request_id"])?;
    if !is_token_id(&id) {
        // Not quoted: a whole token pasted here by mistake must not come back in the answer.
        return Err(ApiError::bad_request(
            "a token id is 16 lowercase hex digits (the part after `hvn_`; see `haven tokens list`)",
        ));
    }
    let command = Command::RevokeToken { id: id.clone() };
    match node.write(&caller, kv::Request::new(params.request_id()?, command)).await? {
        CommandResult::TokenRevoked { revoked: true } => Ok(Json(json!({ "id": id, "revoked": true }))),
        CommandResult::TokenRevoked { revoked: false } => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no token has id {id}; `haven tokens list` shows the tokens"),
        )),
        CommandResult::Unauthorized { reason } => Err(crate::auth::revoked_in_flight(reason)),
        // The last valid admin token (decided in the log's order by the state machine).
        CommandResult::Refused { reason } => Err(ApiError::new(StatusCode::CONFLICT, "last_admin_token", reason)),
        other => Err(ApiError::internal(format!("unexpected answer to a token revocation: {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every classified route is a real route of the router and the reverse (the router
    /// asserts both when built; this keeps the inventory free of duplicates too).
    #[test]
    fn the_inventory_has_no_duplicates_and_health_alone_is_public() {
        let mut seen = std::collections::BTreeSet::new();
        for (path, methods) in ROUTES {
            for (method, access) in *methods {
                assert!(seen.insert((*path, *method)), "{method} {path} is listed twice");
                let public = path.starts_with("/v1/health");
                assert_eq!(*access == Access::Public, public, "{method} {path}: only /v1/health* is public");
            }
        }
        assert_eq!(access_of("/v1/tokens", "post"), Some(Access::Admin));
        assert_eq!(access_of("/v1/tokens", "put"), None);
    }
}
