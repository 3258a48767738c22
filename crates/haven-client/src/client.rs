//! The client: one retry loop over the endpoint list, and the API calls built on it.
//!
//! ```text
//!   put/get/list/... ──▶ execute (rounds over endpoints, back-off, deadline)
//!                              └─▶ transport::exchange (one request, one endpoint)
//! ```
//!
//! Endpoint choice: a call starts at the endpoint that answered last (for writes: at the
//! leader, when a server named it in `Haven-Leader` and it is one of the configured
//! endpoints), and moves to the next endpoint on a connection failure, a timeout, or an
//! answer that says "not here, not now" (503, 429). After a full round without an answer it
//! sleeps a full-jitter back-off. Each call is bounded by `max_attempts` requests and by
//! its `deadline`.
//!
//! Writes carry a `request_id`, generated once per call and reused by every retry, so the
//! server applies a retried write at most once and answers with the first result. That is
//! what makes retrying a write after a timeout safe; only when the attempts run out after a
//! request may have been delivered does the caller get [`Error::OutcomeUnknown`].

use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::Rng;
use rand::SeedableRng;
use reqwest::header::HeaderMap;
use reqwest::Method;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use crate::backoff::BackoffIter;
use crate::config::normalize_endpoint;
use crate::config::ClientConfig;
use crate::error::classify_response;
use crate::error::Error;
use crate::path::kv_path;
use crate::transport::build_http_client;
use crate::transport::exchange;
use crate::transport::Answer;
use crate::transport::Request;
use crate::transport::HEADER_CLUSTER_ID;
use crate::transport::HEADER_LEADER;
use crate::types::ack_from_headers;
use crate::types::Consistency;
use crate::types::CreatedToken;
use crate::types::DeleteResult;
use crate::types::HealthAnswer;
use crate::types::KvEntry;
use crate::types::ListPage;
use crate::types::Member;
use crate::types::Members;
use crate::types::PutResult;
use crate::types::RemoveMemberResult;
use crate::types::RevokedToken;
use crate::types::Status;
use crate::types::SwitchoverResult;
use crate::types::TokenInfo;
use crate::types::TokenList;
use crate::watch::WatchStream;

/// The HA control routes (configuration, audit, teardown, restart, recovery).
mod admin;

pub use admin::ConnectionEnd;
pub use admin::HeldConnection;
pub use admin::AUDIT_PAGES_MAX;

/// Options of a write (`put` and `delete`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// Compare-and-set: apply only if the key's mod_revision is this (0: must not exist).
    pub prev_revision: Option<u64>,
    /// Idempotency key; a random one is generated when `None`. Every retry of the call
    /// sends the same id, so the write applies at most once.
    pub request_id: Option<String>,
}

/// The options of `put`; the same as every write's.
pub type PutOptions = WriteOptions;

/// Pages `list_all` reads at most: with the default page size that is ten million keys,
/// far more than a configuration store holds, and it stops a server that keeps saying
/// `more` from looping the client forever.
pub const LIST_ALL_PAGES_MAX: usize = 100_000;

/// Query parameters of a request, in order.
type Query = Vec<(&'static str, String)>;

/// Marks "no leader known" in [`Inner::leader`].
const NO_INDEX: usize = usize::MAX;

/// How a call may be retried.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// Safe to send any number of times.
    Read,
    /// Changes state; `request_id` makes retries apply at most once. Without one, a
    /// request that may have been delivered is never sent again.
    Write { request_id: Option<String> },
    /// Changes state, but sending it twice does what sending it once does (a draft edit,
    /// a draft discard): retried like a read, sent to the leader first like a write.
    Idempotent,
}

/// Async client of a Haven cluster. Cheap to clone; clones share the endpoint memory.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: ClientConfig,
    http: reqwest::Client,
    /// Server keys trusted now (fingerprint mode); grows with members learned from status.
    pins: Option<haven_tls::PinSet>,
    /// Index of the endpoint that answered last: calls start there.
    preferred: AtomicUsize,
    /// Index of the endpoint a server named as leader, or [`NO_INDEX`].
    leader: AtomicUsize,
    /// Source of the back-off jitter (seeded by `jitter_seed` when given).
    jitter: Mutex<StdRng>,
    /// The cluster this client talks to (`ClientConfig::cluster_id`, else the first a
    /// node names); answers from any other are refused.
    cluster_id: Mutex<Option<String>>,
}

impl Client {
    /// A client for the cluster `config` describes; the configuration is validated.
    pub fn new(config: ClientConfig) -> Result<Client, Error> {
        let config = config.validate()?;
        let pinned = config.cluster_id.clone();
        let (http, pins) = build_http_client(&config)?;
        let jitter = match config.jitter_seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        Ok(Client {
            inner: Arc::new(Inner {
                config,
                http,
                pins,
                preferred: AtomicUsize::new(0),
                leader: AtomicUsize::new(NO_INDEX),
                jitter: Mutex::new(jitter),
                cluster_id: Mutex::new(pinned),
            }),
        })
    }

    /// A client with default limits for a comma-separated endpoint list.
    pub fn from_endpoints(endpoints: &str) -> Result<Client, Error> {
        Client::new(ClientConfig::from_endpoints_str(endpoints)?)
    }

    /// The validated configuration (endpoints normalised).
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// The endpoint a write would be sent to first: the known leader, else the endpoint
    /// that answered last.
    pub fn preferred_write_endpoint(&self) -> &str {
        &self.inner.config.endpoints[self.start_index(true)]
    }

    // ---- KV -------------------------------------------------------------------------

    /// Writes `value` under `key`. With `prev_revision`, only if the key is at that
    /// revision ([`Error::CompareFailed`] otherwise).
    pub async fn put(&self, key: &str, value: &[u8], options: WriteOptions) -> Result<PutResult, Error> {
        let (query, request_id) = write_query(&options)?;
        let request = Request {
            method: Method::PUT,
            path: kv_path(key)?,
            query,
            body: Some(Bytes::copy_from_slice(value)),
            streaming: false,
        };
        let answer = self.execute(&request, &Kind::Write { request_id: Some(request_id) }).await?;
        let mut result: PutResult = decode(&answer)?;
        result.ack = ack_from_headers(&answer.headers);
        Ok(result)
    }

    /// Deletes `key`; deleting an absent key succeeds with `deleted: false`.
    pub async fn delete(&self, key: &str, options: WriteOptions) -> Result<DeleteResult, Error> {
        let (query, request_id) = write_query(&options)?;
        let request = Request { method: Method::DELETE, path: kv_path(key)?, query, body: None, streaming: false };
        let answer = self.execute(&request, &Kind::Write { request_id: Some(request_id) }).await?;
        let mut result: DeleteResult = decode(&answer)?;
        result.ack = ack_from_headers(&answer.headers);
        Ok(result)
    }

    /// Reads `key`; `None` when it does not exist.
    pub async fn get(&self, key: &str, consistency: Consistency) -> Result<Option<KvEntry>, Error> {
        let request = Request {
            method: Method::GET,
            path: kv_path(key)?,
            query: vec![("consistency", consistency.as_query().to_string())],
            body: None,
            streaming: false,
        };
        match self.execute(&request, &Kind::Read).await {
            Ok(answer) => decode(&answer).map(Some),
            Err(Error::NotFound { .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// One page of the keys under `prefix` (in key order) that come after `after`.
    /// `limit` defaults to the server's page size.
    pub async fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: Option<usize>,
        consistency: Consistency,
    ) -> Result<ListPage, Error> {
        let mut query = vec![("prefix", prefix.to_string()), ("consistency", consistency.as_query().to_string())];
        if let Some(after) = after {
            query.push(("after", after.to_string()));
        }
        if let Some(limit) = limit {
            query.push(("limit", limit.to_string()));
        }
        let request = Request { method: Method::GET, path: "/v1/kv".into(), query, body: None, streaming: false };
        decode(&self.execute(&request, &Kind::Read).await?)
    }

    /// Every key under `prefix`, read page by page with linearizable reads.
    ///
    /// The pages are separate reads, so a key written while paging may or may not be seen.
    /// The returned `revision` is that of the first page: watching from it replays every
    /// change made while paging, which is the list-then-watch pattern's guarantee.
    pub async fn list_all(&self, prefix: &str) -> Result<ListPage, Error> {
        let mut items: Vec<KvEntry> = Vec::new();
        let mut first_revision = None;
        for _ in 0..LIST_ALL_PAGES_MAX {
            let after = items.last().map(|entry| entry.key.clone());
            let page = self.list(prefix, after.as_deref(), None, Consistency::Linearizable).await?;
            first_revision.get_or_insert(page.revision);
            // Each page must move forward, or a faulty server could loop us forever.
            if let (Some(after), Some(first)) = (&after, page.items.first()) {
                if first.key.as_str() <= after.as_str() {
                    return Err(Error::InvalidResponse {
                        endpoint: self.preferred_endpoint().to_string(),
                        reason: format!("a list page after {after:?} started at {:?}", first.key),
                    });
                }
            }
            let page_was_empty = page.items.is_empty();
            items.extend(page.items);
            if !page.more || page_was_empty {
                return Ok(ListPage { items, revision: first_revision.unwrap_or(page.revision), more: false });
            }
        }
        Err(Error::InvalidResponse {
            endpoint: self.preferred_endpoint().to_string(),
            reason: format!("the list did not end after {LIST_ALL_PAGES_MAX} pages"),
        })
    }

    /// Watches the keys under `prefix`: every change after `after_revision`, in revision
    /// order, with progress events. `None` starts at the current revision (read first, so
    /// the stream has a resume point from its start).
    ///
    /// The stream reconnects by itself (to any endpoint) when its connection breaks or
    /// goes silent, resuming after the last revision it saw, so it neither skips nor
    /// repeats events. It ends with an error only when it cannot resume: the history was
    /// compacted ([`Error::Compacted`]) or no endpoint answered within the call limits.
    pub async fn watch(&self, prefix: &str, after_revision: Option<u64>) -> Result<WatchStream, Error> {
        let after_revision = match after_revision {
            Some(revision) => revision,
            // A stale read: any node can answer, as any node can serve the watch.
            None => self.list(prefix, None, Some(1), Consistency::Stale).await?.revision,
        };
        let connection = self.open_watch(prefix, after_revision).await?;
        Ok(WatchStream::new(self.clone(), prefix.to_string(), after_revision, connection))
    }

    /// Opens one watch connection (retrying over endpoints like every call).
    pub(crate) async fn open_watch(&self, prefix: &str, after_revision: u64) -> Result<Answer, Error> {
        let request = Request {
            method: Method::GET,
            path: "/v1/watch".into(),
            query: vec![("prefix", prefix.to_string()), ("after_revision", after_revision.to_string())],
            body: None,
            streaming: true,
        };
        self.execute(&request, &Kind::Read).await
    }

    // ---- Cluster --------------------------------------------------------------------

    /// The cluster as the first node that answers sees it.
    pub async fn status(&self) -> Result<Status, Error> {
        let status: Status = decode(&self.execute(&simple_get("/v1/status"), &Kind::Read).await?)?;
        self.learn_member_keys(&status);
        Ok(status)
    }

    /// Trusts the keys of the members a trusted node reports, so a failover to a node
    /// whose key was not configured still verifies.
    fn learn_member_keys(&self, status: &Status) {
        if let Some(pins) = &self.inner.pins {
            for member in &status.members {
                if let Some(fingerprint) = member.fingerprint.as_deref().and_then(haven_core::config::parse_fingerprint)
                {
                    pins.insert(fingerprint);
                }
            }
        }
    }

    /// The cluster as `endpoint` sees it: one request, no retries, no other endpoint.
    pub async fn status_of(&self, endpoint: &str) -> Result<Status, Error> {
        let endpoint = normalize_endpoint(endpoint)?;
        decode(&self.execute_once(&endpoint, &simple_get("/v1/status")).await?)
    }

    /// The members of the cluster.
    pub async fn members(&self) -> Result<Vec<Member>, Error> {
        let members: Members = decode(&self.execute(&simple_get("/v1/members"), &Kind::Read).await?)?;
        Ok(members.members)
    }

    /// Removes node `id`. The server refuses (409 `quorum_at_risk`) when the remaining
    /// voters could not form a majority of the reachable ones, unless `force`.
    ///
    /// A removal carries no request id, so it is never resent once it may have been
    /// delivered: a lost answer gives [`Error::OutcomeUnknown`]; check `members()`.
    pub async fn remove_member(&self, id: u64, force: bool) -> Result<RemoveMemberResult, Error> {
        let query = if force { vec![("force", "1".to_string())] } else { Vec::new() };
        let request =
            Request { method: Method::DELETE, path: format!("/v1/members/{id}"), query, body: None, streaming: false };
        match self.execute(&request, &Kind::Write { request_id: None }).await {
            Ok(answer) => decode(&answer),
            // `NotFound` speaks of keys; here the member is what is missing.
            Err(Error::NotFound { .. }) => Err(Error::Api {
                status: 404,
                code: crate::error::CODE_NOT_FOUND.to_string(),
                message: format!("node {id} is not a member of the cluster"),
            }),
            Err(error) => Err(error),
        }
    }

    /// Hands the primary role to `to` (or the most caught-up voter). Never resent once it
    /// may have been delivered: a second switchover would move the role again.
    pub async fn switchover(&self, to: Option<u64>) -> Result<SwitchoverResult, Error> {
        let body = serde_json::to_vec(&serde_json::json!({ "to": to }))
            .map_err(|e| Error::InvalidRequest(format!("cannot encode the request: {e}")))?;
        let request = Request {
            method: Method::POST,
            path: "/v1/switchover".into(),
            query: Vec::new(),
            body: Some(Bytes::from(body)),
            streaming: false,
        };
        decode(&self.execute(&request, &Kind::Write { request_id: None }).await?)
    }

    /// Turns maintenance mode on or off (admin). Setting it twice is harmless, so it is
    /// retried like a write with a request id.
    pub async fn set_maintenance(&self, on: bool) -> Result<(), Error> {
        let body = serde_json::to_vec(&serde_json::json!({ "on": on }))
            .map_err(|e| Error::InvalidRequest(format!("cannot encode the request: {e}")))?;
        let request = Request {
            method: Method::POST,
            path: "/v1/maintenance".into(),
            query: Vec::new(),
            body: Some(Bytes::from(body)),
            streaming: false,
        };
        self.execute(&request, &Kind::Write { request_id: Some(new_request_id()) }).await.map(|_| ())
    }

    // ---- Tokens (admin) --------------------------------------------------------------

    /// Creates a token with `role` (`admin`, `operator`, `reader`, `join`), named `name`
    /// (the role's name when `None`), expiring after `ttl_seconds` (never when `None`).
    /// The answer holds the secret, which the server never shows again.
    ///
    /// Never resent once it may have been delivered: a retry would mint a second token.
    /// A lost answer gives [`Error::OutcomeUnknown`]; list the tokens and revoke an orphan.
    pub async fn create_token(
        &self,
        role: &str,
        name: Option<&str>,
        ttl_seconds: Option<u64>,
    ) -> Result<CreatedToken, Error> {
        let mut body = serde_json::json!({ "role": role });
        if let Some(name) = name {
            body["name"] = name.into();
        }
        if let Some(ttl_seconds) = ttl_seconds {
            body["ttl_seconds"] = ttl_seconds.into();
        }
        let request = Request {
            method: Method::POST,
            path: "/v1/tokens".into(),
            query: Vec::new(),
            body: Some(Bytes::from(body.to_string())),
            streaming: false,
        };
        decode(&self.execute(&request, &Kind::Write { request_id: None }).await?)
    }

    /// Every token (ids, names, roles, times; never secrets), oldest first.
    pub async fn list_tokens(&self) -> Result<Vec<TokenInfo>, Error> {
        let list: TokenList = decode(&self.execute(&simple_get("/v1/tokens"), &Kind::Read).await?)?;
        Ok(list.tokens)
    }

    /// Revokes token `id` (16 hex digits). Retried safely: the request id makes a repeat
    /// answer like the first.
    pub async fn revoke_token(&self, id: &str) -> Result<RevokedToken, Error> {
        if !haven_core::auth::is_token_id(id) {
            // Not quoted: a whole token pasted by mistake must not end up in a message.
            return Err(Error::InvalidRequest(
                "a token id is 16 lowercase hex digits (the part after `hvn_`; see `haven tokens list`)".into(),
            ));
        }
        let request = Request {
            method: Method::DELETE,
            path: format!("/v1/tokens/{id}"),
            query: Vec::new(),
            body: None,
            streaming: false,
        };
        match self.execute(&request, &Kind::Write { request_id: Some(new_request_id()) }).await {
            Ok(answer) => decode(&answer),
            // `NotFound` speaks of keys; here the token is what is missing.
            Err(Error::NotFound { .. }) => Err(Error::Api {
                status: 404,
                code: crate::error::CODE_NOT_FOUND.to_string(),
                message: format!("no token has id {id}; `haven tokens list` shows the tokens"),
            }),
            Err(error) => Err(error),
        }
    }

    /// Whether `endpoint` serves (has a leader and has applied its commit): `Ok(false)` for
    /// its 503, an error when it cannot be asked.
    pub async fn health(&self, endpoint: &str) -> Result<bool, Error> {
        self.probe(endpoint, "/v1/health").await
    }

    /// Whether `endpoint` is the leader with a quorum.
    pub async fn health_primary(&self, endpoint: &str) -> Result<bool, Error> {
        self.probe(endpoint, "/v1/health/primary").await
    }

    async fn probe(&self, endpoint: &str, path: &str) -> Result<bool, Error> {
        let endpoint = normalize_endpoint(endpoint)?;
        match self.execute_once(&endpoint, &simple_get(path)).await {
            Ok(_) => Ok(true),
            Err(Error::Api { status: 503, .. }) => Ok(false),
            Err(error) => Err(error),
        }
    }

    // ---- The retry loop -------------------------------------------------------------

    /// Sends `request` until an endpoint gives a definitive answer, within the limits.
    async fn execute(&self, request: &Request, kind: &Kind) -> Result<Answer, Error> {
        let config = &self.inner.config;
        let endpoints = &config.endpoints;
        let started = Instant::now();
        let deadline = started + config.deadline;
        let is_write = matches!(kind, Kind::Write { .. } | Kind::Idempotent);
        let mut sleeps = self.backoff_iter();
        let mut attempts = 0u32;
        let mut tried: Vec<String> = Vec::new();
        let mut last_error: Option<Error> = None;
        let mut maybe_delivered = false;
        let give_up = |deadline_passed: bool, tried: Vec<String>, last_error: Option<Error>, maybe_delivered| {
            let last_error = Box::new(
                last_error.unwrap_or_else(|| Error::Timeout { endpoint: endpoints[0].clone(), after: config.deadline }),
            );
            let error = if deadline_passed {
                Error::DeadlineExceeded { after: started.elapsed(), tried, last_error }
            } else {
                Error::Unavailable { tried, last_error }
            };
            match kind {
                Kind::Write { request_id } if maybe_delivered => {
                    Error::OutcomeUnknown { request_id: request_id.clone(), last_error: Box::new(error) }
                }
                _ => error,
            }
        };
        loop {
            let start = self.start_index(is_write);
            for offset in 0..endpoints.len() {
                if attempts >= config.max_attempts {
                    return Err(give_up(false, tried, last_error, maybe_delivered));
                }
                let remaining = deadline.saturating_duration_since(Instant::now());
                if remaining.is_zero() {
                    return Err(give_up(true, tried, last_error, maybe_delivered));
                }
                attempts += 1;
                let index = (start + offset) % endpoints.len();
                let endpoint = &endpoints[index];
                if !tried.contains(endpoint) {
                    tried.push(endpoint.clone());
                }
                let timeout = config.request_timeout.min(remaining);
                let error = match self.send(endpoint, request, kind, timeout).await {
                    Ok(answer) => {
                        self.inner.preferred.store(index, Ordering::Relaxed);
                        return Ok(answer);
                    }
                    Err(error) => error,
                };
                tracing::debug!(%endpoint, attempt = attempts, %error, "haven request failed");
                if !error.is_retryable() {
                    // An answer about the request itself: this node serves, stay with it.
                    self.inner.preferred.store(index, Ordering::Relaxed);
                    return Err(error);
                }
                if matches!(error, Error::Unreachable { .. } | Error::Timeout { .. }) {
                    // A leader hint that does not answer is worse than none.
                    let _ = self.inner.leader.compare_exchange(index, NO_INDEX, Ordering::Relaxed, Ordering::Relaxed);
                }
                if let Kind::Write { request_id } = kind {
                    if error.may_have_been_delivered() {
                        maybe_delivered = true;
                        if request_id.is_none() {
                            // Resending could apply it twice; the caller must look first.
                            return Err(Error::OutcomeUnknown { request_id: None, last_error: Box::new(error) });
                        }
                    }
                }
                last_error = Some(error);
            }
            // A full round without an answer: wait before the next one.
            let remaining = deadline.saturating_duration_since(Instant::now());
            let sleep = sleeps.next().unwrap_or_default().min(remaining);
            tokio::time::sleep(sleep).await;
        }
    }

    /// One request to one endpoint, without retries (`status_of`, `health`).
    async fn execute_once(&self, endpoint: &str, request: &Request) -> Result<Answer, Error> {
        let timeout = self.inner.config.request_timeout;
        self.send(endpoint, request, &Kind::Read, timeout).await
    }

    /// One exchange; a non-2xx answer becomes its error. Every answer's leader header is
    /// remembered.
    ///
    /// The cluster id: the client sends the one it is pinned to (a node of another cluster
    /// refuses before doing anything), and the first answer that names one pins it. An
    /// answer from another cluster is never used (issue 14: a CLI given the endpoints of
    /// two clusters read and wrote whichever answered first).
    async fn send(&self, endpoint: &str, request: &Request, kind: &Kind, timeout: Duration) -> Result<Answer, Error> {
        let mut request = request.clone();
        if let Kind::Write { request_id: Some(request_id) } = kind {
            request.query.push(("request_id", request_id.clone()));
        }
        let token = self.inner.config.token.as_deref();
        let pinned = self.cluster_id();
        let answer = match exchange(&self.inner.http, token, pinned.as_deref(), endpoint, &request, timeout).await {
            Ok(answer) => answer,
            Err(Error::UntrustedServer { endpoint, .. }) => {
                let presented = self.inner.pins.as_ref().and_then(|pins| pins.last_presented());
                return Err(Error::UntrustedServer { endpoint, presented });
            }
            Err(error) => return Err(error),
        };
        let answered_by = answer.headers.get(HEADER_CLUSTER_ID).and_then(|value| value.to_str().ok());
        match (answered_by, pinned) {
            (Some(found), Some(expected)) if found != expected => {
                return Err(Error::ClusterMismatch {
                    endpoint: endpoint.to_string(),
                    expected,
                    found: found.to_string(),
                    served: answer.status.is_success(),
                });
            }
            (Some(found), None) => {
                let mut pin = self.inner.cluster_id.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                pin.get_or_insert_with(|| found.to_string());
            }
            _ => {}
        }
        self.observe_leader(&answer.headers);
        if answer.status.is_success() {
            Ok(answer)
        } else {
            match classify_response(answer.status.as_u16(), answer.bytes()) {
                Error::ClusterMismatch { expected, found, served, .. } => {
                    Err(Error::ClusterMismatch { endpoint: endpoint.to_string(), expected, found, served })
                }
                error => Err(error),
            }
        }
    }

    /// The cluster this client is pinned to: the configured one, else the first a node
    /// named in an answer.
    pub fn cluster_id(&self) -> Option<String> {
        self.inner.cluster_id.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// What `endpoint` says about itself on `/v1/health` (no token needed): whether it
    /// serves, its node id, the leader it knows, its cluster. One request, no retries; the
    /// answer of a node that does not serve (503) is read too.
    pub async fn health_of(&self, endpoint: &str) -> Result<HealthAnswer, Error> {
        let endpoint = normalize_endpoint(endpoint)?;
        let timeout = self.inner.config.request_timeout;
        let answer = exchange(&self.inner.http, None, None, &endpoint, &simple_get("/v1/health"), timeout)
            .await
            .map_err(|error| match error {
                Error::UntrustedServer { endpoint, .. } => Error::UntrustedServer {
                    endpoint,
                    presented: self.inner.pins.as_ref().and_then(|pins| pins.last_presented()),
                },
                error => error,
            })?;
        if !answer.status.is_success() && answer.status.as_u16() != 503 {
            return Err(classify_response(answer.status.as_u16(), answer.bytes()));
        }
        decode(&answer)
    }

    /// Remembers the leader a server named, if it is one of our endpoints. A URL outside
    /// the configured list is not followed: it may not be reachable from here, and the
    /// token would go to an address the operator never gave. (The server forwards writes
    /// itself, so following the leader only saves a hop.)
    fn observe_leader(&self, headers: &HeaderMap) {
        let Some(leader) = headers.get(HEADER_LEADER).and_then(|value| value.to_str().ok()) else {
            return;
        };
        let Ok(leader) = normalize_endpoint(leader) else {
            return;
        };
        if let Some(index) = self.inner.config.endpoints.iter().position(|endpoint| *endpoint == leader) {
            self.inner.leader.store(index, Ordering::Relaxed);
        }
    }

    fn start_index(&self, is_write: bool) -> usize {
        let count = self.inner.config.endpoints.len();
        let leader = self.inner.leader.load(Ordering::Relaxed);
        let index = if is_write && leader != NO_INDEX { leader } else { self.inner.preferred.load(Ordering::Relaxed) };
        index % count
    }

    fn preferred_endpoint(&self) -> &str {
        &self.inner.config.endpoints[self.start_index(false)]
    }

    /// Moves calls off `endpoint` after its watch connection broke, so the reconnect does
    /// not start at a node that just failed.
    pub(crate) fn demote(&self, endpoint: &str) {
        let endpoints = &self.inner.config.endpoints;
        if let Some(index) = endpoints.iter().position(|e| e == endpoint) {
            let next = (index + 1) % endpoints.len();
            let _ = self.inner.preferred.compare_exchange(index, next, Ordering::Relaxed, Ordering::Relaxed);
            let _ = self.inner.leader.compare_exchange(index, NO_INDEX, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    /// A fresh back-off sequence for one call.
    pub(crate) fn backoff_iter(&self) -> BackoffIter<StdRng> {
        // A poisoned lock only means another thread panicked mid-draw; the rng is fine.
        let mut jitter = self.inner.jitter.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        self.inner.config.backoff.iter_with_rng(StdRng::from_rng(&mut *jitter))
    }
}

fn simple_get(path: &str) -> Request {
    Request { method: Method::GET, path: path.to_string(), query: Vec::new(), body: None, streaming: false }
}

/// The query of a write and its request id (the caller's, or a fresh random one).
fn write_query(options: &WriteOptions) -> Result<(Query, String), Error> {
    let request_id = match &options.request_id {
        Some(id) => {
            if id.is_empty() || id.len() > haven_core::limits::REQUEST_ID_BYTES_MAX {
                return Err(Error::InvalidRequest(format!(
                    "request_id must be 1 to {} bytes, not {}",
                    haven_core::limits::REQUEST_ID_BYTES_MAX,
                    id.len()
                )));
            }
            id.clone()
        }
        None => new_request_id(),
    };
    let mut query = Vec::new();
    if let Some(prev_revision) = options.prev_revision {
        query.push(("prev_revision", prev_revision.to_string()));
    }
    Ok((query, request_id))
}

/// 128 random bits from the OS-seeded thread rng, as 32 hex digits: collisions between
/// clients are as unlikely as for UUIDv4s, and the id stays far below the server's limit.
pub fn new_request_id() -> String {
    format!("{:032x}", rand::rng().random::<u128>())
}

fn decode<T: DeserializeOwned>(answer: &Answer) -> Result<T, Error> {
    serde_json::from_slice(answer.bytes()).map_err(|error| Error::InvalidResponse {
        endpoint: answer.endpoint.clone(),
        reason: format!("the body is not the expected JSON ({error})"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_32_hex_digits_and_differ() {
        let a = new_request_id();
        let b = new_request_id();
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn write_query_reuses_the_callers_id_and_checks_its_length() {
        let options = WriteOptions { prev_revision: Some(0), request_id: Some("mine".into()) };
        let (query, id) = write_query(&options).unwrap();
        assert_eq!(id, "mine");
        assert_eq!(query, [("prev_revision", "0".to_string())]);
        let too_long = WriteOptions { prev_revision: None, request_id: Some("x".repeat(129)) };
        assert!(matches!(write_query(&too_long), Err(Error::InvalidRequest(_))));
    }

    #[tokio::test]
    async fn leader_hints_are_followed_only_to_configured_endpoints() {
        let client = Client::from_endpoints("http://a:1,http://b:2").unwrap();
        assert_eq!(client.preferred_write_endpoint(), "http://a:1");
        let mut headers = HeaderMap::new();
        headers.insert(HEADER_LEADER, "http://elsewhere:9".parse().unwrap());
        client.observe_leader(&headers);
        assert_eq!(client.preferred_write_endpoint(), "http://a:1");
        headers.insert(HEADER_LEADER, "http://b:2/".parse().unwrap());
        client.observe_leader(&headers);
        assert_eq!(client.preferred_write_endpoint(), "http://b:2");
        // Reads still start where the last answer came from.
        assert_eq!(client.preferred_endpoint(), "http://a:1");
        client.demote("http://b:2");
        assert_eq!(client.preferred_write_endpoint(), "http://a:1");
    }
}
