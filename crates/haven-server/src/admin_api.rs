//! The administrative routes: HA configuration with draft and apply, the audit log,
//! teardown, recovery and restart (seed 002's panel, as an API).
//!
//! ```text
//!   GET    /v1/config          applied configuration, version, draft (if any)
//!   GET    /v1/config/draft    the draft with its diff, its broken rules, needed restarts
//!   PUT    /v1/config/draft    {"set": {key: value}, "unset": [key]}
//!   DELETE /v1/config/draft    discard
//!   POST   /v1/config/apply    {"base_version": N} ──▶ version N+1, changes, restarts
//!   GET    /v1/audit           ?since=SEQ&limit=N
//!   POST   /v1/teardown        {"force": bool}       (on the primary)
//!   POST   /v1/restart         {"node_id": N}: restart this node's process
//! ```

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::Extension;
use axum::extract::Query;
use axum::extract::Request;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use haven_core::admin::AUDIT_PAGE_MAX;
use haven_core::ha::config::apply_draft;
use haven_core::ha::config::ApplyError;
use haven_core::ha::config::HaConfigError;
use haven_core::ha::config::NodeAddresses;
use haven_core::ha::status::HaState;
use haven_core::kv;
use haven_core::kv::Command;
use haven_core::kv::CommandResult;
use openraft::ChangeMembers;
use serde::Deserialize;
use serde_json::json;
use serde_json::Value;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::Node;

type Shared = Arc<Node>;
type Params = Result<Query<HashMap<String, String>>, QueryRejection>;

/// Largest administrative request body: a draft of every key of a 7-node configuration
/// is a few KiB; 256 KiB refuses anything that is not a configuration.
pub const ADMIN_BODY_BYTES_MAX: usize = 256 * 1024;

/// An admin request's JSON body, at most [`ADMIN_BODY_BYTES_MAX`] bytes; an empty body is
/// `T::default()`. `what` names the request in the errors.
pub(crate) async fn json_body<T: for<'de> Deserialize<'de> + Default>(
    request: Request,
    what: &str,
) -> Result<T, ApiError> {
    let bytes = crate::body::read_limited(request, ADMIN_BODY_BYTES_MAX, || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("a {what} request is at most {ADMIN_BODY_BYTES_MAX} bytes"),
        )
    })
    .await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&bytes).map_err(|error| ApiError::bad_request(format!("invalid {what} request: {error}")))
}

fn params(params: Params, allowed: &[&str]) -> Result<HashMap<String, String>, ApiError> {
    let Query(map) = params.map_err(|error| ApiError::bad_request(format!("invalid query string: {error}")))?;
    if let Some(unknown) = map.keys().find(|key| !allowed.contains(&key.as_str())) {
        return Err(ApiError::bad_request(format!("unknown query parameter {unknown:?}; allowed: {allowed:?}")));
    }
    Ok(map)
}

fn to_value<T: serde::Serialize>(value: &T) -> Result<Value, ApiError> {
    serde_json::to_value(value).map_err(|error| ApiError::internal(error.to_string()))
}

/// The members with the addresses ping targets must not be (host parts of their URLs).
fn member_addresses(node: &Node) -> Vec<NodeAddresses> {
    use crate::ha::host_of as host;
    let membership = node.membership();
    let voters: std::collections::BTreeSet<u64> = membership.voter_ids().collect();
    membership
        .nodes()
        .map(|(id, member)| NodeAddresses {
            id: *id,
            addresses: vec![host(&member.client_url), host(&member.peer_addr)],
            voter: voters.contains(id),
        })
        .collect()
}

fn invalid(errors: &[HaConfigError]) -> ApiError {
    let list: Vec<Value> = errors
        .iter()
        .map(|error| json!({ "key": error.key, "value": error.value, "kind": error.kind, "rule": error.rule }))
        .collect();
    let words: Vec<String> = errors.iter().map(|error| format!("{}: {}", error.key, error.rule)).collect();
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_config",
        format!("the draft breaks {} rule(s): {}", errors.len(), words.join("; ")),
    )
    .with("errors", list)
}

/// Commits `command` made by `caller` through the leader.
async fn propose(node: &Node, caller: &Caller, command: Command) -> Result<CommandResult, ApiError> {
    node.write(caller, kv::Request::new(None, command)).await
}

fn refused_or_unauthorized(result: CommandResult, what: &str) -> ApiError {
    match result {
        CommandResult::Unauthorized { reason } => crate::auth::revoked_in_flight(reason),
        CommandResult::Refused { reason } => ApiError::new(StatusCode::CONFLICT, "conflict", reason),
        other => ApiError::internal(format!("unexpected answer to {what}: {other:?}")),
    }
}

pub async fn config_show(
    State(node): State<Shared>,
    Extension(caller): Extension<Caller>,
    query: Params,
) -> Result<Json<Value>, ApiError> {
    params(query, &[])?;
    caller.read_barrier(&node).await?;
    let (config, draft) = {
        let state = node.state.read();
        let admin = state.kv.admin();
        (admin.ha_config.clone(), admin.draft.clone())
    };
    Ok(Json(json!({
        "version": config.version,
        "config": to_value(&config.value)?,
        "detection": config.value.detection().describe(),
        "draft": draft.map(|draft| json!({ "base_version": draft.base_version, "changes": draft.changes.len() })),
        "pending_restart": node.pending_restart(),
    })))
}

/// The draft, what applying it would change, every rule it breaks and who must restart.
pub async fn draft_show(
    State(node): State<Shared>,
    Extension(caller): Extension<Caller>,
    query: Params,
) -> Result<Json<Value>, ApiError> {
    params(query, &[])?;
    caller.read_barrier(&node).await?;
    let (current, stored) = {
        let state = node.state.read();
        let admin = state.kv.admin();
        (admin.ha_config.clone(), admin.draft.clone())
    };
    let Some(stored) = stored else {
        return Ok(Json(json!({ "version": current.version, "draft": null, "message": "there is no draft" })));
    };
    let edits: BTreeMap<&String, Value> = stored
        .changes
        .iter()
        .map(|(key, value)| (key, value.as_deref().map_or(Value::Null, haven_core::ha::config::value_from_text)))
        .collect();
    let preview = match apply_draft(&current, &stored.to_draft(), &member_addresses(&node)) {
        Ok(applied) => json!({ "valid": true, "changes": applied.changes, "restart": applied.restart }),
        Err(ApplyError::Invalid(errors)) => json!({ "valid": false, "errors": errors.iter().map(|e| json!({
            "key": e.key, "value": e.value, "kind": e.kind, "rule": e.rule })).collect::<Vec<_>>() }),
        Err(error) => json!({ "valid": false, "message": error.to_string() }),
    };
    Ok(Json(json!({
        "version": current.version,
        "draft": { "base_version": stored.base_version, "changes": edits, "digest": stored.digest() },
        "preview": preview,
    })))
}

/// Body of `PUT /v1/config/draft`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DraftEdit {
    #[serde(default)]
    set: BTreeMap<String, Value>,
    #[serde(default)]
    unset: Vec<String>,
}

pub async fn draft_edit(
    State(node): State<Shared>,
    Extension(caller): Extension<Caller>,
    request: Request,
) -> Result<Json<Value>, ApiError> {
    let body: DraftEdit = json_body(request, "draft").await?;
    if body.set.is_empty() && body.unset.is_empty() {
        return Err(ApiError::bad_request("nothing to edit: give \"set\": {key: value} or \"unset\": [key]"));
    }
    check_named_secret_files(&node, &body.set).await?;
    if let Some(script) = body.set.get("hook_script").and_then(Value::as_str) {
        check_hook_here(script).await?;
    }
    let mut edits: Vec<(String, Option<String>)> =
        body.set.iter().map(|(key, value)| (key.clone(), Some(value.to_string()))).collect();
    edits.extend(body.unset.iter().map(|key| (key.clone(), None)));
    let command = Command::EditHaDraft { edits };
    match propose(&node, &caller, command).await? {
        CommandResult::Ok { .. } => draft_show(State(node), Extension(caller), Ok(Query(HashMap::new()))).await,
        other => Err(refused_or_unauthorized(other, "a draft edit")),
    }
}

/// A draft that names a secret file (`smtp.password_file`, as a key or inside `smtp`) is
/// refused at once when this node would refuse to read that file at send time (outside its
/// `secrets_dir`, not a private file of its user, a key or a token): the admin learns it
/// now, not from an alert that never arrives. Each node checks again when it sends.
async fn check_named_secret_files(node: &Shared, set: &BTreeMap<String, Value>) -> Result<(), ApiError> {
    let named = set
        .get("smtp.password_file")
        .or_else(|| set.get("smtp").and_then(|smtp| smtp.get("password_file")))
        .and_then(Value::as_str);
    let Some(path) = named else { return Ok(()) };
    let (path, secrets_dir) = (path.to_string(), node.config.secrets_dir.clone());
    tokio::task::spawn_blocking(move || crate::alerts::read_password_file(&path, &secrets_dir).map(drop))
        .await
        .map_err(|error| ApiError::internal(format!("checking smtp.password_file: {error}")))?
        .map_err(ApiError::bad_request)
}

/// A draft that names a `hook_script`, or applies one, is refused at once (400, with the
/// reason) when this node would refuse to run that file: a symlink on its path, a directory
/// or file that someone other than root or the node's user owns or that group or others
/// can write, not an executable regular file (see `alerts::open_hook_script`). The admin
/// learns it now, not from a failover whose hook never ran; each node checks again right
/// before it runs the hook, since the file can change meanwhile.
async fn check_hook_here(script: &str) -> Result<(), ApiError> {
    let script = script.to_string();
    tokio::task::spawn_blocking(move || crate::alerts::check_hook_script(&script))
        .await
        .map_err(|error| ApiError::internal(format!("checking hook_script: {error}")))?
        .map_err(ApiError::bad_request)
}

pub async fn draft_discard(
    State(node): State<Shared>,
    Extension(caller): Extension<Caller>,
    query: Params,
) -> Result<Json<Value>, ApiError> {
    params(query, &[])?;
    match propose(&node, &caller, Command::DiscardHaDraft).await? {
        CommandResult::Ok { .. } => Ok(Json(json!({ "discarded": true }))),
        other => Err(refused_or_unauthorized(other, "a draft discard")),
    }
}

/// Body of `POST /v1/config/apply`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplyBody {
    /// The version the operator's draft was made from (`haven config draft show`).
    #[serde(default)]
    base_version: Option<u64>,
    /// The digest of the draft the operator reviewed (`haven config diff` shows it): a
    /// draft that says anything else now is refused (`409 stale_draft`).
    #[serde(default)]
    digest: Option<String>,
}

/// Applies the draft: every rule checked first (with the members' addresses), then one
/// Raft entry makes it the configuration everywhere at once.
pub async fn config_apply(
    State(node): State<Shared>,
    Extension(caller): Extension<Caller>,
    request: Request,
) -> Result<Json<Value>, ApiError> {
    let body: ApplyBody = json_body(request, "apply").await?;
    caller.read_barrier(&node).await?;
    let (current, stored) = {
        let state = node.state.read();
        let admin = state.kv.admin();
        (admin.ha_config.clone(), admin.draft.clone())
    };
    let Some(stored) = stored else {
        return Ok(Json(
            json!({ "applied": false, "version": current.version, "message": "no configuration changes to apply" }),
        ));
    };
    // The operator applies the draft they saw: one re-based meanwhile is stale too, and one
    // edited since its review (by its digest) as well.
    let base_version = body.base_version.unwrap_or(stored.base_version);
    if base_version != stored.base_version {
        let stale = ApplyError::Stale { base: base_version, current: stored.base_version };
        return Err(ApiError::new(StatusCode::CONFLICT, "stale_draft", stale.to_string()));
    }
    if let Some(reviewed) = &body.digest {
        let now = stored.digest();
        if *reviewed != now {
            let refusal = haven_core::admin::AdminRefusal::ChangedSinceReview { reviewed: reviewed.clone(), now };
            return Err(ApiError::new(StatusCode::CONFLICT, "stale_draft", refusal.to_string()));
        }
    }
    let draft = stored.to_draft();
    let applied = match apply_draft(&current, &draft, &member_addresses(&node)) {
        Ok(applied) => applied,
        Err(ApplyError::NothingToApply) => {
            return Ok(Json(
                json!({ "applied": false, "version": current.version, "message": "no configuration changes to apply" }),
            ));
        }
        Err(ApplyError::Invalid(errors)) => return Err(invalid(&errors)),
        Err(stale @ ApplyError::Stale { .. }) => {
            return Err(ApiError::new(StatusCode::CONFLICT, "stale_draft", stale.to_string()));
        }
    };
    // Checked again here: the draft may have been edited through another node, or the
    // file changed since.
    if let Some(script) =
        applied.config.hook_script.as_deref().filter(|_| applied.config.hook_script != current.value.hook_script)
    {
        check_hook_here(script).await?;
    }
    // The digest is checked again where it counts: in the log, at the apply's place in it.
    let command = match body.digest {
        Some(digest) => Command::ApplyReviewedDraft { base_version, digest },
        None => Command::ApplyHaDraft { base_version },
    };
    match propose(&node, &caller, command).await? {
        CommandResult::HaConfigApplied { version } => Ok(Json(json!({
            "applied": true,
            "version": version,
            "changes": applied.changes,
            "restart": applied.restart,
        }))),
        CommandResult::Refused { reason } if reason.contains("version") || reason.contains("changed since") => {
            Err(ApiError::new(StatusCode::CONFLICT, "stale_draft", reason))
        }
        other => Err(refused_or_unauthorized(other, "a configuration apply")),
    }
}

pub async fn audit(
    State(node): State<Shared>,
    Extension(caller): Extension<Caller>,
    query: Params,
) -> Result<Json<Value>, ApiError> {
    let query = params(query, &["since", "limit"])?;
    let number = |name: &str, default: u64| -> Result<u64, ApiError> {
        query.get(name).map_or(Ok(default), |text| {
            text.parse().map_err(|_| ApiError::bad_request(format!("{name} must be a non-negative integer")))
        })
    };
    let since = number("since", 0)?;
    let limit = number("limit", AUDIT_PAGE_MAX as u64)?.min(AUDIT_PAGE_MAX as u64) as usize;
    caller.read_barrier(&node).await?;
    let state = node.state.read();
    let log = &state.kv.admin().audit;
    let mut records = log.since(since, limit);
    if caller.role != haven_core::auth::Role::Admin {
        records = records.iter().map(haven_core::admin::AuditRecord::for_non_admin).collect();
    }
    Ok(Json(json!({ "records": records, "last_seq": log.last_seq() })))
}

/// Body of `POST /v1/teardown`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeardownBody {
    #[serde(default)]
    force: bool,
}

/// Seed 002's teardown: the primary continues alone with all the data; every other member
/// is recorded as detached (with the teardown's generation) and removed.
pub async fn teardown(
    State(node): State<Shared>,
    Extension(caller): Extension<Caller>,
    request: Request,
) -> Result<Json<Value>, ApiError> {
    let body: TeardownBody = json_body(request, "teardown").await?;
    let metrics = node.metrics();
    if !node.leader_has_quorum(&metrics) {
        let leader = node.leader();
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_primary",
            match &leader {
                Some((id, member)) => format!("run teardown on the primary, node {id} at {}", member.client_url),
                None => "there is no primary; a cluster without one cannot be torn down (see `haven recover`)".into(),
            },
        )
        .with("leader_url", leader.map(|(_, member)| member.client_url)));
    }
    if metrics.membership_config.nodes().all(|(id, _)| *id == node.node_id) {
        // Checked before stability: a standalone node is never "stable", and telling the
        // operator to repeat with --force only to hear this is a dead end (issue 14).
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_standalone",
            format!("node {} is already standalone: there is nothing to tear down", node.node_id),
        ));
    }
    let status = crate::status::status(&node);
    if status.ha.state != HaState::Stable && !body.force {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_stable",
            format!(
                "the cluster is {} ({}). Nothing committed is lost (this node keeps all data), but members that are \
                 down or cut off now will not learn they were detached until they reach this node. Repeat with --force \
                 to tear down anyway",
                status.ha.state.name(),
                status.ha.reasons.join("; ")
            ),
        ));
    }
    let leaving: Vec<(u64, haven_store::HavenNode)> = metrics
        .membership_config
        .nodes()
        .filter(|(id, _)| **id != node.node_id)
        .map(|(id, member)| (*id, member.clone()))
        .collect();
    let detached: Vec<(u64, String)> = leaving.iter().map(|(id, member)| (*id, member.incarnation.clone())).collect();
    if detached.is_empty() {
        return Err(ApiError::new(StatusCode::CONFLICT, "already_standalone", "this node is already standalone"));
    }
    let command = Command::Teardown { keep: node.node_id, detached: detached.clone() };
    let generation = match propose(&node, &caller, command).await? {
        CommandResult::TornDown { generation } => generation,
        other => return Err(refused_or_unauthorized(other, "a teardown")),
    };
    // Their keys stay accepted after they leave the membership, so that one that was down
    // or cut off is told it was detached when it comes back (instead of pre-voting forever).
    for (id, member) in &leaving {
        let command = Command::RecordRemoval {
            node_id: *id,
            incarnation: member.incarnation.clone(),
            fingerprint: member.fingerprint.clone(),
        };
        propose(&node, &caller, command).await?;
    }
    let ids: std::collections::BTreeSet<u64> = detached.iter().map(|(id, _)| *id).collect();
    node.raft.change_membership(ChangeMembers::ReplaceAllVoters([node.node_id].into()), false).await.map_err(
        |error| {
            ApiError::unavailable(format!(
                "teardown recorded but the membership change failed: {error}; run teardown again"
            ))
        },
    )?;
    let remaining: Vec<u64> = node.membership().nodes().map(|(id, _)| *id).filter(|id| ids.contains(id)).collect();
    if !remaining.is_empty() {
        node.raft.change_membership(ChangeMembers::RemoveNodes(remaining.into_iter().collect()), false).await.map_err(
            |error| ApiError::unavailable(format!("teardown recorded but removing learners failed: {error}")),
        )?;
    }
    tracing::warn!(generation, detached = ?ids, "teardown: this node continues standalone");
    Ok(Json(json!({
        "generation": generation,
        "standalone": node.node_id,
        "detached": ids,
        "cluster_id": node.cluster_id(),
    })))
}

/// Body of `POST /v1/restart`: the node to restart, named so a request sent through a load
/// balancer or to a stale address cannot restart another node.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestartBody {
    #[serde(default)]
    node_id: Option<u64>,
}

/// Restarts this node's process (after handing leadership over if it leads): how a new
/// detection timing takes effect. `haven restart --rolling` calls it node by node.
pub async fn restart(State(node): State<Shared>, request: Request) -> Result<axum::response::Response, ApiError> {
    let body: RestartBody = json_body(request, "restart").await?;
    match body.node_id {
        Some(id) if id == node.node_id => {}
        Some(id) => {
            return Err(ApiError::bad_request(format!(
                "this is node {}, not node {id}; send the restart to the node itself",
                node.node_id
            )))
        }
        None => return Err(ApiError::bad_request("name the node to restart: {\"node_id\": N}")),
    }
    tracing::warn!("restart requested through the API");
    node.record_applied_timing();
    let node_id = node.node_id;
    Ok(crate::run::answer_then_restart(node, &json!({ "restarting": node_id })))
}
