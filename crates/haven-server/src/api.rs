//! The HTTP API under `/v1/` (contract: `api/openapi.yaml`, `docs/http-api.md`).
//!
//! Handlers are thin: parse and check the request, call the node, shape the answer.
//! Every rejection is JSON `{"error", "message"}`, including the ones axum would answer
//! in plain text (bad query strings, unknown routes, wrong methods, oversized bodies).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
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
use axum::routing::MethodRouter;
use axum::Json;
use axum::Router;
use base64::Engine;
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
use haven_core::limits::WATCHERS_PER_NODE_MAX;
use haven_net::JoinRequest;
use serde_json::json;
use serde_json::Value;

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

/// Every route with its methods: the router is built from it and the OpenAPI test and the
/// (coming) authorization inventory check against it.
pub const ROUTES: &[(&str, &[&str])] = &[
    ("/v1/kv/{key}", &["get", "put", "delete"]),
    ("/v1/kv", &["get"]),
    ("/v1/watch", &["get"]),
    ("/v1/status", &["get"]),
    ("/v1/health", &["get"]),
    ("/v1/health/primary", &["get"]),
    ("/v1/members", &["get"]),
    ("/v1/members/join", &["post"]),
    ("/v1/members/{id}", &["delete"]),
];

type Shared = Arc<Node>;
type Params = Result<Query<HashMap<String, String>>, QueryRejection>;

pub fn router(node: Arc<Node>) -> Router {
    // Axum spells the key wildcard `{*key}`; the inventory and the OpenAPI file say `{key}`.
    let table: Vec<(&str, MethodRouter<Shared>)> = vec![
        ("/v1/kv/{*key}", get(kv_get).put(kv_put).delete(kv_delete)),
        ("/v1/kv", get(kv_list)),
        ("/v1/watch", get(watch)),
        ("/v1/status", get(get_status)),
        ("/v1/health", get(health)),
        ("/v1/health/primary", get(health_primary)),
        ("/v1/members", get(members_list)),
        ("/v1/members/join", post(members_join)),
        ("/v1/members/{id}", delete(members_remove)),
    ];
    let mut router = Router::new();
    for (path, methods) in table {
        // A route outside the inventory is a programming error: it would escape the
        // OpenAPI check and the authorization inventory.
        assert!(
            ROUTES.iter().any(|(known, _)| *known == path.replace("{*key}", "{key}")),
            "route {path} is not in ROUTES"
        );
        router = router.route(path, methods);
    }
    router
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(node.clone(), leader_headers))
        .with_state(node)
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
async fn leader_headers(State(node): State<Shared>, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    if let Some((id, leader)) = node.leader() {
        let headers = response.headers_mut();
        if let Ok(value) = HeaderValue::from_str(&leader.client_url) {
            headers.insert("haven-leader", value);
        }
        headers.insert("haven-leader-id", HeaderValue::from(id));
    }
    response
}

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

async fn kv_get(State(node): State<Shared>, Path(key): Path<String>, params: Params) -> Result<Response, ApiError> {
    let params = QueryParams::parse(params, &["consistency", "raw"])?;
    check_key(&key)?;
    let raw = params.flag("raw")?;
    if !params.stale()? {
        node.read_barrier().await?;
    }
    let state = node.state.read();
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
    axum::body::to_bytes(request.into_body(), REQUEST_BODY_BYTES_MAX).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body exceeds {REQUEST_BODY_BYTES_MAX} bytes"),
        )
    })
}

async fn kv_put(
    State(node): State<Shared>,
    Path(key): Path<String>,
    params: Params,
    request: Request,
) -> Result<Json<Value>, ApiError> {
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
    let result = node.write(kv::Request { request_id: params.request_id()?, command }).await?;
    match result {
        CommandResult::Put { revision, prev_mod_revision } => {
            Ok(Json(json!({ "key": key, "revision": revision, "prev_mod_revision": prev_mod_revision })))
        }
        other => Err(command_failure(&key, other)),
    }
}

async fn kv_delete(
    State(node): State<Shared>,
    Path(key): Path<String>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    let params = QueryParams::parse(params, &["prev_revision", "request_id"])?;
    check_key(&key)?;
    let command = Command::Delete { key: key.clone(), prev_revision: params.number("prev_revision")? };
    let result = node.write(kv::Request { request_id: params.request_id()?, command }).await?;
    match result {
        CommandResult::Delete { revision, deleted } => {
            Ok(Json(json!({ "key": key, "revision": revision, "deleted": deleted })))
        }
        other => Err(command_failure(&key, other)),
    }
}

fn command_failure(key: &str, result: CommandResult) -> ApiError {
    match result {
        CommandResult::CompareFailed { current_revision } => ApiError::new(
            StatusCode::CONFLICT,
            "compare_failed",
            format!("key {key:?} is at mod_revision {current_revision} (0 = absent), not the expected one"),
        )
        .with("current_revision", current_revision),
        // A retried request id that first belonged to another kind of command.
        other => ApiError::new(StatusCode::CONFLICT, "conflict", format!("request id already used for {other:?}")),
    }
}

async fn kv_list(State(node): State<Shared>, params: Params) -> Result<Json<Value>, ApiError> {
    let params = QueryParams::parse(params, &["prefix", "limit", "after", "consistency"])?;
    let prefix = params.string("prefix").unwrap_or("").to_string();
    let limit = params.number("limit")?.map_or(LIST_PAGE_DEFAULT, |limit| limit as usize);
    if limit == 0 || limit > LIST_PAGE_MAX {
        return Err(ApiError::bad_request(format!("`limit` must be 1..={LIST_PAGE_MAX}")));
    }
    if !params.stale()? {
        node.read_barrier().await?;
    }
    let state = node.state.read();
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

async fn watch(State(node): State<Shared>, params: Params) -> Result<Response, ApiError> {
    let params = QueryParams::parse(params, &["prefix", "after_revision"])?;
    let prefix = params.string("prefix").unwrap_or("").to_string();
    let Ok(permit) = node.watchers.clone().try_acquire_owned() else {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_watchers",
            format!("this node serves {WATCHERS_PER_NODE_MAX} watchers already; use another node or retry later"),
        ));
    };
    let start = {
        let state = node.state.read();
        let start = params.number("after_revision")?.unwrap_or(state.kv.revision());
        if let Err(HistoryError::Compacted { compact_revision }) = state.kv.events_after(start, &prefix, 0) {
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
        let _permit = permit;
        stream_events(node, prefix, start, sender).await;
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
/// away. Progress lines report how far the stream has looked when nothing matched.
async fn stream_events(
    node: Arc<Node>,
    prefix: String,
    mut next: u64,
    sender: tokio::sync::mpsc::Sender<Result<Bytes, Infallible>>,
) {
    let mut changes = node.state.subscribe();
    let mut last_sent = tokio::time::Instant::now();
    loop {
        let batch = node.state.read().kv.events_after(next, &prefix, WATCH_BATCH_EVENTS);
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

async fn health(State(node): State<Shared>) -> Response {
    let status = status(&node);
    let serving = status.leader.is_some() && status.member;
    let code = if serving { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let reason = if serving {
        "serving"
    } else if !status.member {
        "not a member of a cluster"
    } else {
        "no leader"
    };
    (code, Json(json!({ "ok": serving, "node_id": status.node_id, "leader": status.leader, "reason": reason })))
        .into_response()
}

async fn health_primary(State(node): State<Shared>) -> Response {
    let status = status(&node);
    let primary = status.leader == Some(status.node_id) && status.leader_has_quorum;
    let code = if primary { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, Json(json!({ "primary": primary, "node_id": status.node_id, "leader": status.leader }))).into_response()
}

async fn members_list(State(node): State<Shared>, params: Params) -> Result<Json<Value>, ApiError> {
    QueryParams::parse(params, &[])?;
    Ok(Json(json!({ "members": status(&node).members })))
}

async fn members_join(State(node): State<Shared>, request: Request) -> Result<Json<Value>, ApiError> {
    let body = read_body(request).await?;
    let join: JoinRequest = serde_json::from_slice(&body)
        .map_err(|error| ApiError::bad_request(format!("invalid join request: {error}")))?;
    let response = node.join(join).await?;
    Ok(Json(json!({ "cluster_id": response.cluster_id, "voter": response.voter })))
}

async fn members_remove(
    State(node): State<Shared>,
    Path(id): Path<String>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    let params = QueryParams::parse(params, &["force"])?;
    let id: u64 = id.parse().map_err(|_| ApiError::bad_request("the member id must be a positive integer"))?;
    let response = node.remove_member(id, params.flag("force")?).await?;
    Ok(Json(json!({ "removed": response.removed, "warning": response.warning })))
}
