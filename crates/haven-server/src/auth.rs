//! Who may call what: the bearer-token check in front of every route, token minting, and
//! the first admin token of a new cluster.
//!
//! ```text
//!   request ──▶ api router ──▶ require (per route and method; the access comes from
//!                                │      api::ROUTES, so no route is left unclassified)
//!                                │  Authorization: Bearer hvn_<id>_<secret>
//!                                │  parse ─▶ look the id up in this node's replicated
//!                                │  token table ─▶ SHA-256, constant-time compare ─▶
//!                                │  expiry (cluster time) ─▶ role permits the access?
//!                                ▼
//!                          handler (gets a `Caller`; writes carry its token id into the
//!                                   Raft log, where `KvState::apply` checks it again)
//! ```
//!
//! Answers: 401 `unauthorized` for a missing, malformed, unknown, revoked or expired token
//! (one message for all, which never repeats the token), 403 `forbidden` for a role too
//! weak, naming the roles that would do. Public routes (`/v1/health*`) need nothing.
//!
//! The check here reads the local replica, which on a follower may be a moment behind a
//! revocation; that is why a write is checked again when it is applied, and why reads
//! check again after their linearizable barrier.

use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;
use std::time::SystemTime;

use axum::extract::Request;
use axum::extract::State;
use axum::http::header::AUTHORIZATION;
use axum::http::header::WWW_AUTHENTICATE;
use axum::http::HeaderMap;
use axum::http::HeaderValue;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::IntoResponse;
use axum::response::Response;
use haven_core::auth::new_token;
use haven_core::auth::parse_token;
use haven_core::auth::permits;
use haven_core::auth::Access;
use haven_core::auth::Credential;
use haven_core::auth::NewToken;
use haven_core::auth::Role;
use haven_core::auth::TOKEN_CHARS;
use haven_core::auth::TOKEN_ID_BYTES;
use haven_core::auth::TOKEN_SECRET_BYTES;
use haven_core::kv::Command;
use haven_core::kv::CommandResult;
use haven_core::kv::KvState;
use haven_core::kv::Request as KvRequest;
use haven_net::log_limit::Level;
use haven_net::log_limit::RateLimitedLog;
use haven_net::log_limit::LOG_INTERVAL;
use rand::TryRngCore as _;
use tokio::sync::watch;

use crate::error::ApiError;
use crate::Node;

/// The first admin token of a new cluster, written by the bootstrapping node (mode 0600).
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// The admin token while it is being registered: written (and fsynced) before the token is
/// proposed, renamed to `ADMIN_TOKEN_FILE` once it is committed. A crash in between leaves
/// this file, and the next start registers the same token instead of losing it; readers of
/// `admin.token` never see a token the cluster does not know yet.
pub const ADMIN_TOKEN_PENDING_FILE: &str = "admin.token.pending";

/// Name of the first admin token in `haven tokens list`.
pub const BOOTSTRAP_TOKEN_NAME: &str = "bootstrap-admin";

/// How often the bootstrap task looks whether this node leads with a committed cluster id.
pub const BOOTSTRAP_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Longest pause between attempts after a failure (a full disk, no quorum yet): long
/// enough that a lasting fault logs a line every few seconds, not ten a second.
pub const BOOTSTRAP_RETRY_PAUSE_MAX: Duration = Duration::from_secs(5);

/// How long the bootstrap task keeps trying: a new single-node cluster elects itself in
/// well under a second; a node that has not led within ten minutes is not a fresh cluster's
/// bootstrapper any more (another node leads; the admin token was made there or by hand).
pub const BOOTSTRAP_DEADLINE: Duration = Duration::from_secs(600);

/// The one answer for every token that does not authenticate. It names no token and says
/// nothing about why, so it cannot leak a secret or tell a guesser what was close.
pub const UNAUTHORIZED_MESSAGE: &str = "this route needs a valid bearer token (`Authorization: Bearer hvn_...`); the \
                                        token is missing, malformed, unknown, revoked or expired";

/// Who made a request, as the route's check found it. Handlers get it as an extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub token_id: String,
    pub role: Role,
    /// What the route needed.
    pub access: Access,
    /// The node the request arrived at, recorded in the audit log.
    pub received_by: u64,
    /// The token as presented: a node that does not lead sends it along with the request
    /// it forwards, and the leader checks it itself (see `Credential`).
    pub credential: Credential,
}

impl Caller {
    /// `request`, carrying this caller into the Raft log for the apply-time check.
    pub fn stamp(&self, request: KvRequest) -> KvRequest {
        let mut request = request.with_auth(&self.token_id, self.access);
        request.received_by = self.received_by;
        request
    }

    /// Checks the token again against `kv` (after a read barrier: the state that the read
    /// is about to serve) at `now_ms` (the cluster's time, `Node::cluster_now_ms`), so a read
    /// never serves a token revoked or expired before it.
    pub fn recheck(&self, kv: &KvState, now_ms: u64) -> Result<(), ApiError> {
        kv.check_token(&self.token_id, self.access, now_ms).map(|_| ()).map_err(revoked_in_flight)
    }

    /// A linearizable read barrier, then this caller's token checked again against the
    /// caught-up replica: a token revoked before the barrier is refused, even on a node
    /// whose door check ran a moment behind the revocation.
    pub async fn read_barrier(&self, node: &Node) -> Result<(), ApiError> {
        node.read_barrier().await?;
        self.recheck(&node.state.read().kv, node.cluster_now_ms())
    }
}

/// 401 for a token that stopped being valid between the check at the door and the apply.
pub fn revoked_in_flight(reason: String) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", format!("{reason}; nothing was changed"))
}

/// The system's wall clock in ms since the Unix epoch. A clock before 1970 reads as 0
/// (nothing expires). Token decisions use the cluster's time instead
/// (`Node::cluster_now_ms`: this clock corrected by the members' readings).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
}

/// What the per-route middleware needs: the node (for its token table) and the access the
/// route and method were classified with.
#[derive(Clone)]
pub struct Guard {
    pub node: Arc<Node>,
    pub access: Access,
}

/// The per-route middleware: lets the request through with a [`Caller`] extension, or
/// answers 401/403.
pub async fn require(State(guard): State<Guard>, mut request: Request, next: Next) -> Response {
    if guard.access == Access::Public {
        return next.run(request).await;
    }
    let source = match request.extensions().get::<ClientAddr>() {
        Some(ClientAddr(remote)) => format!("client {}", remote.ip()),
        None => "client".to_string(),
    };
    let Some(credential) = bearer_token(request.headers()).map(Credential::new) else {
        log_failed_authentication(&source, &unauthorized());
        return error_response(unauthorized());
    };
    match authenticate(&guard.node, &credential, guard.access, &source).await {
        Ok(mut caller) => {
            let Some(_slot) = guard.node.token_requests.try_take(&caller.token_id) else {
                return error_response(ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_requests",
                    format!(
                        "token {} has {} requests in progress on this node already, the most one token may; retry \
                         when some have finished",
                        caller.token_id,
                        guard.node.token_requests.max()
                    ),
                ));
            };
            caller.received_by = guard.node.node_id;
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(error) => error_response(error),
    }
}

/// Checks `credential` for `access` against this node's replica. A token that does not
/// authenticate here may have been created a moment ago and not have reached this replica
/// yet (a new member, a follower a few entries behind, a leader that has not applied its
/// last commits): the node then catches up with the leader once (a read barrier) and checks
/// again. Every well-formed token that fails gets that same catch-up, whether its id is
/// unknown or its secret wrong, so the answer's timing does not tell which. Bounded by
/// `AUTH_CATCH_UPS_MAX`, so made-up tokens cannot make every node chase the leader.
///
/// Used for the client port's requests and, on the leader, for the credentials that
/// followers forward with their clients' requests. `source` (a client address, a
/// forwarding member) names the sender in the log line of a failure, which is rate-limited
/// and counted.
pub async fn authenticate(
    node: &Node,
    credential: &Credential,
    access: Access,
    source: &str,
) -> Result<Caller, ApiError> {
    let result = authenticate_with_catch_up(node, credential, access).await;
    if let Err(error) = &result {
        node.auth_failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        log_failed_authentication(source, error);
    }
    result
}

async fn authenticate_with_catch_up(node: &Node, credential: &Credential, access: Access) -> Result<Caller, ApiError> {
    let check = || authorize_credential(&node.state.read().kv, credential, access, node.cluster_now_ms());
    let age = node.token_table_age();
    if age.is_none_or(|age| age > TOKEN_TRUST_WITHOUT_LEADER) {
        return authenticate_on_a_stale_replica(node, age, check).await;
    }
    let caller = check();
    let retry =
        caller.as_ref().is_err_and(|error| error.status == StatusCode::UNAUTHORIZED) && credential.presented().is_ok();
    if !retry {
        return caller;
    }
    let Ok(_permit) = node.auth_catch_up.try_acquire() else {
        return caller;
    };
    match node.read_barrier().await {
        Ok(()) => check(),
        Err(_) => caller,
    }
}

/// How long a node that has not heard from its leader (a follower cut off from it, a
/// leader cut off from its majority) still trusts its own token table. A revocation
/// committed elsewhere in the meantime would not be in it; beyond this bound the node
/// first catches up with the leader (a read barrier), and when it cannot, it honours
/// admin tokens only (the operator must still be able to see the node's status, restart
/// and recover it; every other token gets 503 `stale_tokens`). Heartbeats come every
/// ping (50 ms by default), so 10 s is never reached by a node in touch with its leader.
pub const TOKEN_TRUST_WITHOUT_LEADER: Duration = Duration::from_secs(10);

/// How long a node past [`TOKEN_TRUST_WITHOUT_LEADER`] tries to catch up before it answers
/// from what it has: a leader that answers at all answers a read index within milliseconds.
pub const STALE_CATCH_UP_TIMEOUT: Duration = Duration::from_secs(1);

async fn authenticate_on_a_stale_replica(
    node: &Node,
    age: Option<Duration>,
    check: impl Fn() -> Result<Caller, ApiError>,
) -> Result<Caller, ApiError> {
    // None when no leader is known, and one short attempt on a node that did hear from one
    // long ago: a cut-off node must still answer its admin at once, not after a full read
    // deadline per request. A node that never heard from a leader since it started (new,
    // restarted, catching up from a snapshot) waits the whole read deadline, as any node
    // catching up with a token does.
    // Admin tokens are honoured either way: no need to wait for the leader first.
    let first = check();
    if first.as_ref().is_ok_and(|caller| caller.role == Role::Admin) {
        return first;
    }
    let timeout = if age.is_some() { STALE_CATCH_UP_TIMEOUT } else { crate::node::READ_DEADLINE };
    let caught_up = match node.auth_catch_up.try_acquire() {
        Ok(_permit) if node.leader().is_some() => {
            matches!(tokio::time::timeout(timeout, node.read_barrier()).await, Ok(Ok(())))
        }
        _ => false,
    };
    let caller = check()?;
    if caught_up || caller.role == Role::Admin {
        return Ok(caller);
    }
    let since = age.map_or("since it started".to_string(), |age| format!("for {} s", age.as_secs()));
    Err(ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "stale_tokens",
        format!(
            "this node has not heard from a leader {since} (more than {} s), so it cannot tell whether token {} is \
             still valid; ask another node",
            TOKEN_TRUST_WITHOUT_LEADER.as_secs(),
            caller.token_id
        ),
    ))
}

/// The remote address of a client-port connection, put on each of its requests by the
/// server (`crate::run::serve_http`) so failures can name it.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub std::net::SocketAddr);

/// Failed authentications, one line per source and answer per interval (a guesser or a
/// misconfigured agent would otherwise write a line per request).
static AUTH_FAILURES: std::sync::LazyLock<RateLimitedLog<String>> =
    std::sync::LazyLock::new(|| RateLimitedLog::new("authentication failed", Level::Warn, LOG_INTERVAL));

fn log_failed_authentication(source: &str, error: &ApiError) {
    let key = format!("{} from {source}", error.status.as_u16());
    if let Some(suppressed) = AUTH_FAILURES.admit(key) {
        // The message names the token by id at most (never its secret).
        tracing::warn!(source, status = error.status.as_u16(), reason = %error.message, suppressed, "authentication failed");
    }
}

/// Requests that may wait for a read barrier at once because their token did not
/// authenticate here: enough for clients racing a token's creation, too few to turn a flood
/// of made-up tokens into a flood of leader round trips.
pub const AUTH_CATCH_UPS_MAX: usize = 16;

/// The decision of [`require`], as a plain function of the token table, the headers, the
/// route's access and the time.
pub fn authorize(kv: &KvState, headers: &HeaderMap, access: Access, now_ms: u64) -> Result<Caller, ApiError> {
    let token = bearer_token(headers).ok_or_else(unauthorized)?;
    authorize_credential(kv, &Credential::new(token), access, now_ms)
}

/// Does `credential` authenticate against `kv` at `now_ms` with a role that allows `access`?
pub fn authorize_credential(
    kv: &KvState,
    credential: &Credential,
    access: Access,
    now_ms: u64,
) -> Result<Caller, ApiError> {
    let presented = credential.presented().map_err(|_| unauthorized())?;
    let record = kv.authenticate(&presented, now_ms).ok_or_else(unauthorized)?;
    if !permits(record.role, access) {
        let roles: Vec<&str> = access.roles().into_iter().map(Role::as_str).collect();
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "this route needs a token with role {}; token {} has role {}",
                roles.join(" or "),
                record.id,
                record.role
            ),
        )
        .with("needed_roles", roles));
    }
    Ok(Caller {
        token_id: record.id.clone(),
        role: record.role,
        access,
        received_by: 0,
        credential: credential.clone(),
    })
}

/// The token of the one `Authorization: Bearer` header, if there is exactly one and it is
/// no longer than a token can be.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let value = value.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim_start();
    (scheme.eq_ignore_ascii_case("bearer") && token.len() <= TOKEN_CHARS).then_some(token)
}

pub fn unauthorized() -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", UNAUTHORIZED_MESSAGE)
}

/// The error as a response; a 401 also says which scheme to use (RFC 6750).
pub fn error_response(error: ApiError) -> Response {
    let status = error.status;
    let mut response = error.into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"haven\""));
    }
    response
}

/// A new token from the operating system's random source. The secret lives only in the
/// returned value; the caller hands it out once and proposes only its hash.
pub fn mint_token() -> Result<NewToken, ApiError> {
    let mut id = [0u8; TOKEN_ID_BYTES];
    let mut secret = [0u8; TOKEN_SECRET_BYTES];
    let mut os = rand::rngs::OsRng;
    os.try_fill_bytes(&mut id)
        .and_then(|()| os.try_fill_bytes(&mut secret))
        .map_err(|error| ApiError::internal(format!("the OS random source failed: {error}")))?;
    Ok(new_token(id, secret))
}

// ---- the first admin token --------------------------------------------------------------

/// Gives a new cluster its first admin token, once: when this node was started with
/// `bootstrap`, leads, the cluster id is committed and the cluster holds no token yet, it
/// creates an admin token through Raft and writes it to `DATA_DIR/admin.token` (mode 0600),
/// logging where, never what. Restarts, and clusters that already have tokens, are left
/// alone: deleting `admin.token` later does not mint another one while any token exists.
///
/// Runs in the background until done, `stopped`, or `BOOTSTRAP_DEADLINE`.
pub async fn ensure_bootstrap_admin_token(node: Arc<Node>, mut stopped: watch::Receiver<bool>) {
    // The intent (`haven init`) stays until this is done; `bootstrap` alone covers data
    // dirs bootstrapped before intents existed.
    if !node.config.bootstrap && node.bootstrap_intent().is_none() {
        return;
    }
    let deadline = Instant::now() + BOOTSTRAP_DEADLINE;
    let mut pause = BOOTSTRAP_POLL_INTERVAL;
    let finished = |node: &Node| {
        if node.bootstrap_intent().is_some() {
            if let Err(error) = node.clear_bootstrap_intent() {
                tracing::warn!(%error, "cannot clear the bootstrap intent; the next start clears it");
            }
        }
    };
    while Instant::now() < deadline && !*stopped.borrow() {
        match bootstrap_step(&node).await {
            Ok(Step::Done) => return finished(&node),
            Ok(Step::Written(path)) => {
                tracing::info!("admin token written to {}", path.display());
                return finished(&node);
            }
            Ok(Step::Wait) => pause = BOOTSTRAP_POLL_INTERVAL,
            Err(error) => {
                tracing::warn!(%error, "cannot create the first admin token yet; retrying");
                pause = (pause * 2).min(BOOTSTRAP_RETRY_PAUSE_MAX);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stopped.changed() => return,
        }
    }
    if !*stopped.borrow() {
        tracing::warn!(
            "no admin token was created within {} s (this node did not lead a cluster with a committed id); restart \
             it to try again",
            BOOTSTRAP_DEADLINE.as_secs()
        );
    }
}

enum Step {
    /// Nothing (more) to do.
    Done,
    /// The token is committed and in this file.
    Written(PathBuf),
    /// Not yet: this node does not lead, or the cluster id is not committed.
    Wait,
}

async fn bootstrap_step(node: &Node) -> anyhow::Result<Step> {
    let data_dir = &node.config.data_dir;
    let path = data_dir.join(ADMIN_TOKEN_FILE);
    let pending = data_dir.join(ADMIN_TOKEN_PENDING_FILE);
    if path.exists() {
        // A crash between publishing and removing the pending file leaves the same token
        // twice; the published one is the token.
        if read_pending(&pending).is_some_and(|token| read_pending(&path).as_deref() == Some(token.as_str())) {
            let _ = std::fs::remove_file(&pending);
        }
        return Ok(Step::Done);
    }
    let pending_token = read_pending(&pending);
    let (cluster_id_known, any_token, pending_known) = {
        let state = node.state.read();
        let pending_known = pending_token
            .as_deref()
            .and_then(|token| parse_token(token).ok())
            .is_some_and(|presented| state.kv.token(presented.id).is_some());
        let any_token = state.kv.tokens().next().is_some();
        (state.kv.cluster_id().is_some(), any_token, pending_known)
    };
    if pending_known {
        // Committed before a crash: only the rename is missing.
        publish(&pending, &path)?;
        return Ok(Step::Written(path));
    }
    if any_token {
        // The cluster's tokens are managed by its admins now.
        let _ = std::fs::remove_file(&pending);
        return Ok(Step::Done);
    }
    if !cluster_id_known || !node.is_leader() {
        return Ok(Step::Wait);
    }
    // The local state is current once the barrier returns: decide on it, not on a view
    // from before this node's leadership.
    node.read_barrier().await.map_err(|error| anyhow::anyhow!("{}", error.message))?;
    if node.state.read().kv.tokens().next().is_some() {
        return Ok(Step::Done);
    }
    let token = match pending_token.filter(|token| parse_token(token).is_ok()) {
        Some(token) => token,
        None => {
            let made = mint_token().map_err(|error| anyhow::anyhow!("{}", error.message))?;
            write_secret_file(&pending, &made.token)?;
            made.token
        }
    };
    let presented = parse_token(&token).map_err(|error| anyhow::anyhow!("{error}"))?;
    let command = Command::CreateToken {
        id: presented.id.to_string(),
        name: BOOTSTRAP_TOKEN_NAME.to_string(),
        role: Role::Admin,
        sha256_hex: haven_core::auth::token_sha256_hex(&token),
        ttl_ms: None,
    };
    let request_id = format!("{BOOTSTRAP_TOKEN_NAME}-{}", presented.id);
    // The server's own command: proposed here, as the leader, never forwarded (a leader
    // accepts no server command from the wire). Lost leadership is retried by the caller.
    match node.propose_as_leader(KvRequest::new(Some(request_id), command)).await {
        Ok(acked) => match acked.result {
            CommandResult::TokenCreated { .. } => {
                publish(&pending, &path)?;
                Ok(Step::Written(path))
            }
            other => anyhow::bail!("the cluster refused the admin token: {other:?}"),
        },
        Err(error) => anyhow::bail!("{error}"),
    }
}

/// The pending token, if a previous attempt left one.
fn read_pending(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    Some(text.trim().to_string())
}

/// Writes a secret to a new file with mode 0600 (see `haven_tls::identity::write_private`).
fn write_secret_file(path: &Path, secret: &str) -> anyhow::Result<()> {
    Ok(haven_tls::identity::write_private(path, format!("{secret}\n").as_bytes())?)
}

/// Moves the pending file into place and fsyncs the directory, so the name survives a
/// crash once it is visible. Never replaces an existing `admin.token` (it may be the only
/// admin token of a cluster): the link fails if the name is taken.
fn publish(pending: &Path, path: &Path) -> anyhow::Result<()> {
    std::fs::hard_link(pending, path).map_err(|error| {
        anyhow::anyhow!("cannot publish {} as {} (never replaced): {error}", pending.display(), path.display())
    })?;
    std::fs::remove_file(pending).map_err(|error| anyhow::anyhow!("cannot remove {}: {error}", pending.display()))?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|error| anyhow::anyhow!("cannot sync {}: {error}", dir.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use haven_core::kv::Request as KvRequest;

    use super::*;

    fn state_with(role: Role, ttl_ms: Option<u64>) -> (KvState, NewToken) {
        let mut kv = KvState::default();
        let made = mint_token().unwrap();
        let mut request = KvRequest::new(
            None,
            Command::CreateToken {
                id: made.id.clone(),
                name: "t".into(),
                role,
                sha256_hex: made.sha256_hex.clone(),
                ttl_ms,
            },
        );
        request.now_ms = 1000;
        assert!(matches!(kv.apply(&request), CommandResult::TokenCreated { .. }));
        (kv, made)
    }

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn the_door_lets_in_the_right_roles_only() {
        let (kv, made) = state_with(Role::Reader, Some(10_000));
        let bearer = headers(&format!("Bearer {}", made.token));
        let caller = authorize(&kv, &bearer, Access::Read, 2000).unwrap();
        assert_eq!((caller.role, caller.token_id.as_str()), (Role::Reader, made.id.as_str()));
        // Case-insensitive scheme, as RFC 7235 says.
        assert!(authorize(&kv, &headers(&format!("bearer {}", made.token)), Access::Read, 2000).is_ok());
        let forbidden = authorize(&kv, &bearer, Access::Write, 2000).unwrap_err();
        assert_eq!((forbidden.status, forbidden.code), (StatusCode::FORBIDDEN, "forbidden"));
        assert!(forbidden.message.contains("needs a token with role admin or operator"), "{}", forbidden.message);
        let expired = authorize(&kv, &bearer, Access::Read, 11_000).unwrap_err();
        assert_eq!(expired.status, StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn every_bad_token_gets_the_same_answer_without_the_token() {
        let (kv, made) = state_with(Role::Admin, None);
        let forged = mint_token().unwrap();
        let wrong_secret = format!("{}_{}", &made.token[..20], &forged.token[21..]);
        let cases = [
            HeaderMap::new(),
            headers(&made.token),
            headers(&format!("Basic {}", made.token)),
            headers(&format!("Bearer {}", forged.token)),
            headers(&format!("Bearer {wrong_secret}")),
            headers(&format!("Bearer {}x", made.token)),
            headers("Bearer "),
            headers(&format!("Bearer {}", "a".repeat(10_000))),
        ];
        for case in &cases {
            let error = authorize(&kv, case, Access::Read, 0).unwrap_err();
            assert_eq!(
                (error.status, error.code, error.message.as_str()),
                (StatusCode::UNAUTHORIZED, "unauthorized", UNAUTHORIZED_MESSAGE)
            );
            assert!(!error.message.contains(&made.token[21..]));
        }
        let mut twice = headers(&format!("Bearer {}", made.token));
        twice.append(AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {}", made.token)).unwrap());
        assert!(authorize(&kv, &twice, Access::Read, 0).is_err(), "two Authorization headers are ambiguous");
        let response = error_response(unauthorized());
        assert_eq!(response.headers().get(WWW_AUTHENTICATE).unwrap(), "Bearer realm=\"haven\"");
    }

    #[test]
    fn minted_tokens_differ() {
        let a = mint_token().unwrap();
        let b = mint_token().unwrap();
        assert_ne!(a.token, b.token);
        assert_ne!(a.id, b.id);
        assert!(parse_token(&a.token).is_ok());
    }

    #[test]
    fn secret_files_are_created_0600() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let pending = dir.path().join(ADMIN_TOKEN_PENDING_FILE);
        write_secret_file(&pending, "hvn_x").unwrap();
        let path = dir.path().join(ADMIN_TOKEN_FILE);
        publish(&pending, &path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "hvn_x\n");
        assert!(!pending.exists());
    }
}
