//! Prometheus metrics: `GET /metrics`, in the Prometheus text format (version 0.0.4),
//! readable with the reader role and above (docs/metrics.md lists them all).
//!
//! ```text
//!   moved as things happen                    filled at each scrape
//!   ─────────────────────                     ─────────────────────
//!   api: every request ──▶ http_requests      crate::status::status(node) ──▶ term, commit,
//!   ha: new leader seen ──▶ leader_changes      applied and last log index, leader, HA
//!   Node::propose_as_leader ──▶ proposals       state, replication lag, storage sizes,
//!   alerts: hook / mail done ──▶ alert_runs     failovers in the last hour
//! ```
//!
//! The gauges that mirror state are read from the same view `GET /v1/status` answers with,
//! so the two never disagree and nothing here computes them a second time.
//!
//! Every label set is bounded, so no client can grow the series a node keeps or exports:
//! routes are the router's templates (`/v1/kv/{key}`, never the raw path; anything
//! unmatched is [`UNMATCHED_ROUTE`]), methods are the standard ones or `other`, status codes
//! are three digits, members are the current membership (cleared at every scrape, so a
//! removed member disappears), HA states and alert channels and outcomes are fixed lists.

use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use axum::extract::MatchedPath;
use axum::extract::Request;
use axum::extract::State;
use axum::http::HeaderValue;
use axum::http::Method;
use axum::middleware::Next;
use axum::response::IntoResponse;
use axum::response::Response;
use haven_core::ha::status::HaState;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::exponential_buckets;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::alerts::HookResult;
use crate::alerts::MailResult;
use crate::error::ApiError;
use crate::Node;

/// `Content-Type` of the answer: the Prometheus text format, version 0.0.4.
pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The route label of a request no route matched (unknown paths): one fixed value, so
/// probing random paths adds no series.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Upper bounds of the proposal latency buckets, in seconds: 1 ms doubling to about 8 s.
/// A commit on a healthy cluster takes a round trip and an fsync (a few ms); the top
/// buckets catch a leader waiting on a slow disk or a lost quorum, and beyond 8 s the write
/// deadline is near anyway.
pub const PROPOSAL_BUCKET_FIRST_SECONDS: f64 = 0.001;
pub const PROPOSAL_BUCKET_FACTOR: f64 = 2.0;
pub const PROPOSAL_BUCKETS: u16 = 14;

/// HTTP requests by route template, method and status (bounded: see the module doc).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub route: &'static str,
    pub method: &'static str,
    pub status: u16,
}

/// One replication peer, by member id (bounded by the membership).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MemberLabels {
    pub member: u64,
}

/// One of the HA states (a fixed list: `HaState::ALL`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HaStateLabels {
    pub state: &'static str,
}

/// One stored thing whose size is exported (a fixed list: `StorageSizes`' fields).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreLabels {
    pub store: &'static str,
}

/// One alert channel and how a run ended (two fixed lists: `hook`/`mail`, `ok`/`failed`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlertRunLabels {
    pub channel: &'static str,
    pub outcome: &'static str,
}

/// Finished hook runs and mail sends, counted by the alerter as each ends
/// (`crate::alerts`). Cheap to clone: every clone counts into the same series.
#[derive(Clone, Debug, Default)]
pub struct AlertRuns(Family<AlertRunLabels, Counter>);

impl AlertRuns {
    /// Every channel and outcome at 0, so the series exist before the first alert (a
    /// family with no series is not exported at all, and `rate()` needs a starting point).
    fn start_at_zero(&self) {
        for channel in ["hook", "mail"] {
            for outcome in ["ok", "failed"] {
                let _ = self.0.get_or_create(&AlertRunLabels { channel, outcome });
            }
        }
    }

    /// Counts a hook's result once it is final (a run, a failure to start, a drop).
    pub fn hook(&self, result: &HookResult) {
        let outcome = match result {
            HookResult::NotConfigured | HookResult::Queued | HookResult::Running => return,
            HookResult::Exited { code: 0, .. } => "ok",
            _ => "failed",
        };
        self.0.get_or_create(&AlertRunLabels { channel: "hook", outcome }).inc();
    }

    /// Counts a mail's result once it is final (sent, failed, dropped).
    pub fn mail(&self, result: &MailResult) {
        let outcome = match result {
            MailResult::NotConfigured | MailResult::Queued | MailResult::Sending => return,
            MailResult::Sent { .. } => "ok",
            MailResult::Failed { .. } | MailResult::Dropped { .. } => "failed",
        };
        self.0.get_or_create(&AlertRunLabels { channel: "mail", outcome }).inc();
    }
}

/// The gauges that mirror the node's state, set at each scrape.
#[derive(Default)]
struct StateGauges {
    term: Gauge,
    commit_index: Gauge,
    applied_index: Gauge,
    last_log_index: Gauge,
    is_leader: Gauge,
    leader_id: Gauge,
    voters: Gauge,
    replication_lag: Family<MemberLabels, Gauge>,
    ha_state: Family<HaStateLabels, Gauge>,
    failovers_last_hour: Gauge,
    storage_bytes: Family<StoreLabels, Gauge>,
    storage_bytes_max: Family<StoreLabels, Gauge>,
}

/// This node's metric families and the registry that exports them.
pub struct Metrics {
    /// Scrapes run one at a time: each sets the state gauges, then encodes them.
    registry: Mutex<Registry>,
    state: StateGauges,
    http_requests: Family<HttpLabels, Counter>,
    leader_changes: Counter,
    proposal_seconds: Histogram,
}

impl Metrics {
    /// Registers every family; `alert_runs` are the alerter's counters.
    pub fn new(alert_runs: AlertRuns) -> Metrics {
        alert_runs.start_at_zero();
        let mut registry = Registry::with_prefix("haven");
        let state = StateGauges::default();
        let http_requests = Family::<HttpLabels, Counter>::default();
        let leader_changes = Counter::default();
        let proposal_seconds = Histogram::new(exponential_buckets(
            PROPOSAL_BUCKET_FIRST_SECONDS,
            PROPOSAL_BUCKET_FACTOR,
            PROPOSAL_BUCKETS,
        ));
        registry.register("raft_term", "The Raft term this node is in", state.term.clone());
        registry.register(
            "raft_commit_index",
            "Highest log index this node knows to be committed",
            state.commit_index.clone(),
        );
        registry.register(
            "raft_applied_index",
            "Highest log index applied to this node's state machine",
            state.applied_index.clone(),
        );
        registry.register("raft_last_log_index", "Highest log index in this node's log", state.last_log_index.clone());
        registry.register("raft_is_leader", "1 while this node is the Raft leader, else 0", state.is_leader.clone());
        registry.register(
            "raft_leader_id",
            "The member id of the leader this node follows (0: it knows of none)",
            state.leader_id.clone(),
        );
        registry.register("raft_voters", "Voters in this node's membership", state.voters.clone());
        registry.register(
            "replication_lag_entries",
            "Log entries a member is behind this node's commit index, as this node sees it (the leader from its \
             replication state, a follower from probing the member)",
            state.replication_lag.clone(),
        );
        registry.register(
            "ha_status",
            "1 for the HA state this node sees (GET /v1/status's ha.state), 0 for the others",
            state.ha_state.clone(),
        );
        registry.register(
            "failovers_last_hour",
            "Failovers (unplanned leader changes, from the audit log) in the last hour",
            state.failovers_last_hour.clone(),
        );
        registry.register("storage_bytes", "Bytes this node stores, by store", state.storage_bytes.clone());
        registry.register("storage_max_bytes", "The bound on each store's bytes", state.storage_bytes_max.clone());
        registry.register(
            "http_requests",
            "HTTP requests answered, by route template, method and status code",
            http_requests.clone(),
        );
        registry.register(
            "leader_changes",
            "Times this node saw the leader it knew replaced or lost (since the process started)",
            leader_changes.clone(),
        );
        registry.register(
            "proposal_duration_seconds",
            "Time from proposing an entry on the leader to its commit and apply (committed proposals only)",
            proposal_seconds.clone(),
        );
        registry.register(
            "alert_runs",
            "Finished HA alert hook runs and mail sends, by channel (hook, mail) and outcome (ok, failed)",
            alert_runs.0,
        );
        Metrics { registry: Mutex::new(registry), state, http_requests, leader_changes, proposal_seconds }
    }

    /// This node saw the leader it knew replaced or lost (`crate::ha`).
    pub fn leader_changed(&self) {
        self.leader_changes.inc();
    }

    /// A proposal committed after `elapsed` (`Node::propose_as_leader`).
    pub fn proposal_committed(&self, elapsed: Duration) {
        self.proposal_seconds.observe(elapsed.as_secs_f64());
    }

    /// The whole exposition, with the state gauges set from `node`'s status view first.
    fn render(&self, node: &Node) -> Result<String, std::fmt::Error> {
        let status = crate::status::status(node);
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        let gauges = &self.state;
        gauges.term.set(gauge_value(status.term));
        gauges.commit_index.set(gauge_value(status.commit_index));
        gauges.applied_index.set(gauge_value(status.applied_index));
        gauges.last_log_index.set(gauge_value(status.last_log_index));
        gauges.is_leader.set(i64::from(status.leader == Some(node.node_id)));
        gauges.leader_id.set(gauge_value(status.leader.unwrap_or(0)));
        gauges.voters.set(gauge_value(status.voters as u64));
        gauges.replication_lag.clear();
        for member in &status.members {
            if let Some(lag) = member.lag {
                gauges.replication_lag.get_or_create(&MemberLabels { member: member.id }).set(gauge_value(lag));
            }
        }
        for state in HaState::ALL {
            gauges
                .ha_state
                .get_or_create(&HaStateLabels { state: state.name() })
                .set(i64::from(status.ha.state == state));
        }
        gauges.failovers_last_hour.set(gauge_value(status.failovers_last_hour as u64));
        let sizes = &status.storage;
        let stores = [
            ("kv", Some(sizes.kv_bytes), sizes.kv_bytes_max),
            ("history", Some(sizes.history_bytes), sizes.history_bytes_max),
            ("log_since_snapshot", Some(sizes.log_bytes_since_snapshot), sizes.log_bytes_since_snapshot_max),
            ("snapshot", sizes.snapshot_bytes, sizes.snapshot_bytes_max),
        ];
        gauges.storage_bytes.clear();
        for (store, bytes, max) in stores {
            if let Some(bytes) = bytes {
                gauges.storage_bytes.get_or_create(&StoreLabels { store }).set(gauge_value(bytes));
            }
            gauges.storage_bytes_max.get_or_create(&StoreLabels { store }).set(gauge_value(max));
        }
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)?;
        Ok(text)
    }
}

/// Gauges hold an `i64`; indexes, terms and sizes beyond it (never in practice) show as the
/// largest value instead of wrapping negative.
fn gauge_value(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The answer to `GET /metrics` (routed in `crate::api`).
pub fn scrape(node: &Node) -> Result<Response, ApiError> {
    let text =
        node.prometheus.render(node).map_err(|error| ApiError::internal(format!("encoding metrics: {error}")))?;
    let mut response = text.into_response();
    response.headers_mut().insert(axum::http::header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    Ok(response)
}

/// The method label: the standard methods by name, anything else (extension methods a
/// client may invent) as `other`.
fn method_label(method: &Method) -> &'static str {
    const KNOWN: [(Method, &str); 7] = [
        (Method::GET, "GET"),
        (Method::HEAD, "HEAD"),
        (Method::POST, "POST"),
        (Method::PUT, "PUT"),
        (Method::DELETE, "DELETE"),
        (Method::PATCH, "PATCH"),
        (Method::OPTIONS, "OPTIONS"),
    ];
    KNOWN.iter().find(|(known, _)| known == method).map_or("other", |(_, label)| label)
}

/// Counts every answered request by route template, method and status (an axum layer on
/// the whole router, so requests refused by the token check count too).
pub async fn count_requests(State(node): State<Arc<Node>>, request: Request, next: Next) -> Response {
    // The inventory's spelling (`{key}`, not axum's `{*key}`), borrowed: nothing is
    // allocated per request.
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .and_then(|path| crate::api::inventory_path(path.as_str()))
        .unwrap_or(UNMATCHED_ROUTE);
    let method = method_label(request.method());
    let response = next.run(request).await;
    let status = response.status().as_u16();
    node.prometheus.http_requests.get_or_create(&HttpLabels { route, method, status }).inc();
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(runs: &AlertRuns, channel: &'static str, outcome: &'static str) -> u64 {
        runs.0.get(&AlertRunLabels { channel, outcome }).map_or(0, |counter| counter.get())
    }

    /// Only final results count, each once, as ok or failed; every series starts at 0.
    #[test]
    fn alert_runs_count_final_results_by_outcome() {
        let runs = AlertRuns::default();
        runs.start_at_zero();
        for (channel, outcome) in [("hook", "ok"), ("hook", "failed"), ("mail", "ok"), ("mail", "failed")] {
            assert!(runs.0.get(&AlertRunLabels { channel, outcome }).is_some(), "{channel} {outcome} starts at 0");
        }
        for pending in [HookResult::NotConfigured, HookResult::Queued, HookResult::Running] {
            runs.hook(&pending);
        }
        for pending in [MailResult::NotConfigured, MailResult::Queued, MailResult::Sending] {
            runs.mail(&pending);
        }
        assert_eq!(
            [("hook", "ok"), ("hook", "failed"), ("mail", "ok"), ("mail", "failed")].map(|(c, o)| count(&runs, c, o)),
            [0; 4]
        );
        let exited = |code| HookResult::Exited { code, duration_ms: 1, stdout: String::new(), stderr: String::new() };
        runs.hook(&exited(0));
        runs.hook(&exited(1));
        runs.hook(&HookResult::TimedOut { timeout_s: 1, stdout: String::new(), stderr: String::new() });
        runs.hook(&HookResult::Dropped { reason: "full".into() });
        runs.mail(&MailResult::Sent { duration_ms: 1, response: "250 ok".into() });
        runs.mail(&MailResult::Failed { error: "refused".into() });
        assert_eq!(count(&runs, "hook", "ok"), 1);
        assert_eq!(count(&runs, "hook", "failed"), 3);
        assert_eq!(count(&runs, "mail", "ok"), 1);
        assert_eq!(count(&runs, "mail", "failed"), 1);
    }

    /// A client's invented method adds no series of its own.
    #[test]
    fn unknown_methods_share_one_label() {
        assert_eq!(method_label(&Method::PUT), "PUT");
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "other");
        assert_eq!(method_label(&Method::from_bytes(b"XYZZY").unwrap()), "other");
    }
}
