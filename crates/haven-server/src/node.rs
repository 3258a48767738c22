//! The node: one Raft member and everything it does for clients and peers.
//!
//! Writes: the leader proposes; a follower forwards once to the leader over the peer
//! link. Every write carries a request id (the client's, or one made here), so after a
//! leader change the node can retry it safely: the state machine applies an id at most
//! once. Only when the deadline passes with the outcome still open does the client get
//! "outcome unknown".
//!
//! Reads: linearizable by default. The leader confirms its leadership with a quorum
//! (ReadIndex); a follower asks the leader for that index and waits until it has applied
//! that far. Never a lease.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use haven_core::admin::AuditChange;
use haven_core::admin::AuditEntry;
use haven_core::auth::Role;
use haven_core::clock::ClockSample;
use haven_core::config::NodeConfig;
use haven_core::identity::boot_hex;
use haven_core::identity::BootVerdict;
use haven_core::kv::Command;
use haven_core::kv::CommandResult;
use haven_core::kv::Request;
use haven_core::limits::APPEND_ENTRIES_MAX;
use haven_core::limits::NODE_ID_MAX;
use haven_core::limits::VOTERS_MAX;
use haven_net::raft_network::SNAPSHOT_CHUNK_TIMEOUT;
use haven_net::snapshot::SnapshotAssembler;
use haven_net::AckStamp;
use haven_net::Acked;
use haven_net::JoinMember;
use haven_net::JoinRequest;
use haven_net::JoinResponse;
use haven_net::LocalPeer;
use haven_net::PeerNetworkFactory;
use haven_net::PeerRequest;
use haven_net::PeerResponse;
use haven_net::PingInfo;
use haven_net::RemoteError;
use haven_net::RemoveResponse;
use haven_net::SwitchoverResponse;
use haven_net::Transport;
use haven_store::identity::new_random_id;
use haven_store::log_store::SyncMode;
use haven_store::HavenNode;
use haven_store::LogStore;
use haven_store::NodeId;
use haven_store::NodeIdentity;
use haven_store::Raft;
use haven_store::StateMachine;
use haven_store::StoredMembership;
use haven_tls::PinSet;
use openraft::async_runtime::WatchReceiver as _;
use openraft::errors::ChangeMembershipError;
use openraft::errors::ClientWriteError;
use openraft::errors::LinearizableReadError;
use openraft::errors::RaftError;
use openraft::ChangeMembers;
use openraft::Instant as _;
use openraft::ReadPolicy;
use openraft::ServerState;
use tokio::sync::Semaphore;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::run::TestHooks;

/// How long the node keeps trying to get a write committed (following leader changes,
/// retrying with the same request id) before it answers "outcome unknown". A failover
/// takes well under a second; 5 s rides out several.
pub const WRITE_DEADLINE: Duration = Duration::from_secs(5);

/// How long a linearizable read may wait for a leader to confirm its leadership.
pub const READ_DEADLINE: Duration = Duration::from_secs(5);

/// Pause between attempts while there is no leader: short, because elections are fast.
pub const RETRY_PAUSE: Duration = Duration::from_millis(20);

/// Longest data-dir incarnation a join may name (they are random ids of 32 hex digits).
pub const INCARNATION_CHARS_MAX: usize = 64;

/// How long a join may take: adding a learner waits until it has caught up, which for a
/// large database includes sending a snapshot.
pub const JOIN_DEADLINE: Duration = Duration::from_secs(120);

/// A learner within this many entries of the leader's log counts as caught up: it will
/// hold the rest after one more replication round.
pub const PROMOTION_LAG_ENTRIES_MAX: u64 = APPEND_ENTRIES_MAX;

/// How long a switchover may take before it is reported as failed: the target needs one
/// replication round and one election (a few pings).
pub const SWITCHOVER_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a stopping process waits for each member to note that it stopped: a stop
/// must not hang on a dead member; one that misses the note accepts the restarted process
/// after the boot lease instead.
const LEAVING_TIMEOUT: Duration = Duration::from_millis(500);

/// How long a stopping leader waits for a successor to take over before stopping anyway.
pub const HANDOVER_TIMEOUT: Duration = Duration::from_secs(3);

/// What the node knows about a peer from probing it.
#[derive(Debug, Clone, Default)]
pub struct Probe {
    pub last_ok: Option<Instant>,
    pub info: Option<PingInfo>,
    pub last_error: Option<String>,
    /// The member's clock against this node's, from the last answer precise enough to
    /// tell (`haven_core::clock`), and when it was taken.
    pub clock: Option<(ClockSample, Instant)>,
}

/// The members' clocks as this node measures them (`haven_core::clock`).
#[derive(Debug, Clone, Default)]
pub struct ClockView {
    /// The cluster's time minus this node's wall clock: the median of the readings.
    pub cluster_offset_ms: i64,
    /// How far off the cluster's time each member's clock is (this node's included), and
    /// how uncertain that is (half the round trip of the ping that measured it).
    pub skews: BTreeMap<NodeId, (i64, u64)>,
}

pub struct Node {
    pub config: NodeConfig,
    pub node_id: NodeId,
    pub incarnation: String,
    /// The URL clients use to reach this node, and the address peers use.
    pub client_url: String,
    pub peer_addr: String,
    /// This node's TLS key fingerprint (empty on `--insecure-dev`).
    pub fingerprint: String,
    /// The peer keys trusted now: every node of the latest membership (appended, not
    /// necessarily committed) plus those learned when joining.
    pub pins: PinSet,
    pub raft: Raft,
    pub state: StateMachine,
    pub local: Arc<LocalPeer>,
    pub transport: Arc<dyn Transport>,
    pub watchers: Arc<Semaphore>,
    /// Watch streams this node serves at once (`crate::fd_budget`).
    pub watchers_max: usize,
    /// Watch streams per token: a share of `watchers_max` (`crate::token_slots`).
    pub token_watchers: Arc<crate::token_slots::TokenSlots>,
    /// Requests in progress per token (`crate::token_slots::REQUESTS_PER_TOKEN_MAX`).
    pub token_requests: Arc<crate::token_slots::TokenSlots>,
    /// Seed 002's hook script and alert e-mail.
    pub alerts: crate::alerts::Alerter,
    /// What `GET /metrics` exports (`crate::metrics`).
    pub prometheus: crate::metrics::Metrics,
    /// See `crate::auth::AUTH_CATCH_UPS_MAX`.
    pub(crate) auth_catch_up: Semaphore,
    /// Requests refused for their credential since start (shown in status).
    pub auth_failures: std::sync::atomic::AtomicU64,
    /// When this node last heard from a leader it accepted (an AppendEntries it took, a read
    /// barrier that completed): how fresh its token table is (`crate::auth`).
    pub(crate) leader_heard: Mutex<Option<Instant>>,
    /// What comparing this replica's state with the others found (`crate::replica_check`).
    pub replica_check: Mutex<crate::replica_check::ReplicaCheck>,
    db: Arc<redb::Database>,
    probes: Mutex<BTreeMap<NodeId, Probe>>,
    pub(crate) assembler: tokio::sync::Mutex<SnapshotAssembler>,
    /// Set while a join is under way or when it failed, for status.
    pub join_status: Mutex<Option<String>>,
    /// The members (id and key) learned while joining, trusted until our own membership
    /// lists them: the leader replicates to a joiner before the joiner holds any membership.
    pub join_pins: Mutex<Vec<JoinMember>>,
    /// Set when an operator turned maintenance off on a node without a leader: elections
    /// resume here before the replicated flag (which needs a leader to change) follows.
    pub(crate) maintenance_override: std::sync::atomic::AtomicBool,
    /// Whether elections are enabled now (what was last given to openraft). Off at start.
    pub(crate) elections_enabled: std::sync::atomic::AtomicBool,
    /// The first round of peer probes since this process started has completed: until
    /// then this node does not campaign, so a peer can tell it first that it was removed or
    /// recovered away (`haven_core::ha::elections`).
    pub(crate) started_checks_done: std::sync::atomic::AtomicBool,
    /// The HA loop's own observations (see `crate::ha`).
    pub(crate) ha: Mutex<crate::ha::HaRuntime>,
    /// Set once a teardown detached this node (also recorded in the data dir).
    pub(crate) detached: Mutex<Option<crate::ha::Detached>>,
    /// The term this node leads and since when, as `Node::is_reachable` first saw it.
    leading_since: Mutex<Option<(u64, Instant)>>,
    /// Set when this node must stop for good (removed, recovered away): `run` ends with
    /// [`crate::Expelled`] and the process exits with [`crate::EXIT_EXPELLED`].
    pub(crate) expelled: tokio::sync::watch::Sender<Option<haven_net::Expulsion>>,
    /// Probes this node's ping targets (seed 002), from the replicated configuration.
    pub targets: crate::targets::TargetProber,
    /// Set when an operator asked this node to restart (`POST /v1/restart`, recovery):
    /// `run` stops gracefully and tells its caller to start the process again.
    pub(crate) restart_requested: tokio::sync::watch::Sender<bool>,
    /// Membership changes run one at a time on the leader: Raft allows one change in
    /// flight, and joins arriving together would otherwise refuse each other.
    membership_changes: tokio::sync::Mutex<()>,
    /// Test-only deviations (default: none).
    test_hooks: TestHooks,
    /// [`ClockView::cluster_offset_ms`] as of the last probe round: read on every request,
    /// recomputed twice a second.
    cluster_offset_ms: std::sync::atomic::AtomicI64,
    /// The highest durability mark for this data dir a member has told this process of
    /// (`haven_core::durability`; 0: none): a log that ends below it lost entries this node
    /// acknowledged (storage that went back in time).
    durable_mark_heard: std::sync::atomic::AtomicU64,
}

impl Node {
    /// Opens the data dir and starts the Raft member (not yet initialised on a new dir).
    /// `watchers_max` comes from the descriptor budget (`crate::fd_budget`).
    #[allow(clippy::too_many_arguments)] // each is a separate input of the node; run() is the one caller
    pub async fn open(
        config: NodeConfig,
        client_url: String,
        peer_addr: String,
        tls: (String, PinSet),
        transport: Arc<dyn Transport>,
        sync: SyncMode,
        test_hooks: TestHooks,
        watchers_max: usize,
    ) -> anyhow::Result<Arc<Node>> {
        let (fingerprint, pins) = tls;
        let mut config = config;
        // openraft's timeouts are fixed at start: a timing applied cluster-wide takes effect
        // here, at the next start after it was applied. One line says the timing this run
        // uses and where it comes from (a line from the node config before this one showed
        // the timing the HA configuration had replaced, issue 14 item 21).
        let mut timing_from = "the node config".to_string();
        if let Some(recorded) = crate::ha::recorded_timing(&config.data_dir) {
            config.timing = haven_core::config::Timing {
                ping_interval_ms: recorded.ping_interval_ms,
                failed_pings: recorded.failed_pings,
            };
            timing_from = format!("HA configuration version {}", recorded.version);
        }
        let (election_min, election_max) = config.timing.election_timeout_ms();
        tracing::info!(
            ping_interval_ms = config.timing.ping_interval_ms,
            failed_pings = config.timing.failed_pings,
            election_timeout_ms = format!("{election_min}-{election_max}"),
            expected_detection_ms = config.timing.expected_detection_ms(),
            from = %timing_from,
            "failure detection"
        );
        // A recovery asked for before the restart is carried out now, before the store opens.
        let sole_member = HavenNode {
            client_url: client_url.clone(),
            peer_addr: peer_addr.clone(),
            incarnation: String::new(),
            fingerprint: fingerprint.clone(),
            learner: false,
        };
        crate::recover::carry_out_pending(&config.data_dir, config.node_id, sole_member, config.history_revisions)?;
        // A node told it was removed or recovered away never serves again with this dir.
        if let Some(expulsion) = crate::expelled_record(&config.data_dir) {
            return Err(anyhow::Error::new(crate::Expelled::new(&expulsion, &config.data_dir)));
        }
        let detached = crate::ha::recorded_detachment(&config.data_dir);
        let (db, identity, log, state) = open_storage(&config, test_hooks.backend, sync)
            .map_err(|error| crate::integrity::explain_storage_error(config.node_id, &config.data_dir, error))?;
        let cluster_id = identity.cluster_id.clone().or_else(|| state.read().kv.cluster_id().map(str::to_string));
        // A new boot identity for every process start (see `haven_core::identity`).
        let local = LocalPeer::new(config.node_id, identity.incarnation.clone(), cluster_id, rand::random());
        local.boots().set_lease_ms(haven_core::identity::boot_lease_ms(&config.timing));
        let mut network = PeerNetworkFactory::new(transport.clone(), local.clone());
        if let Some(damage) = test_hooks.damage_snapshot_chunk {
            network = network.damage_first_snapshot_chunk(damage);
        }
        let raft_config = raft_config(&config)?;
        let raft = Raft::new(config.node_id, Arc::new(raft_config), network, log, state.clone())
            .await
            .map_err(|error| anyhow::anyhow!("cannot start Raft: {error}"))?;
        // No campaign before the first look at the peers (`Node::apply_elections` turns
        // elections on once the election rule allows them).
        raft.runtime_config().elect(false);
        let alerts = crate::alerts::Alerter::with_secrets_dir(config.node_id, config.secrets_dir.clone());
        let prometheus = crate::metrics::Metrics::new(alerts.runs());
        Ok(Arc::new(Node {
            node_id: config.node_id,
            incarnation: identity.incarnation,
            client_url,
            peer_addr,
            fingerprint,
            pins,
            raft,
            state,
            local,
            transport,
            watchers: Arc::new(Semaphore::new(watchers_max)),
            watchers_max,
            token_watchers: crate::token_slots::TokenSlots::new(watchers_max / crate::token_slots::WATCHER_SHARES),
            token_requests: crate::token_slots::TokenSlots::new(crate::token_slots::REQUESTS_PER_TOKEN_MAX),
            auth_catch_up: Semaphore::new(crate::auth::AUTH_CATCH_UPS_MAX),
            leader_heard: Mutex::new(None),
            auth_failures: std::sync::atomic::AtomicU64::new(0),
            replica_check: Mutex::default(),
            alerts,
            prometheus,
            db,
            probes: Mutex::new(BTreeMap::new()),
            assembler: tokio::sync::Mutex::new(SnapshotAssembler::default()),
            join_status: Mutex::new(None),
            join_pins: Mutex::new(Vec::new()),
            membership_changes: tokio::sync::Mutex::new(()),
            maintenance_override: std::sync::atomic::AtomicBool::new(false),
            elections_enabled: std::sync::atomic::AtomicBool::new(false),
            started_checks_done: std::sync::atomic::AtomicBool::new(false),
            ha: Mutex::new(crate::ha::HaRuntime::new()),
            restart_requested: tokio::sync::watch::channel(false).0,
            detached: Mutex::new(detached),
            expelled: tokio::sync::watch::channel(None).0,
            leading_since: Mutex::new(None),
            targets: crate::targets::TargetProber::start(
                Vec::new(),
                Duration::from_millis(haven_core::ha::gating::target_probe_interval_ms(&config.timing)),
            ),
            test_hooks,
            cluster_offset_ms: std::sync::atomic::AtomicI64::new(0),
            durable_mark_heard: std::sync::atomic::AtomicU64::new(0),
            config,
        }))
    }

    /// A copy of openraft's current metrics (cheap: the membership is shared).
    pub fn metrics(&self) -> openraft::RaftMetrics<haven_store::TypeConfig> {
        self.raft.metrics().borrow_watched().clone()
    }

    pub fn this_node(&self) -> HavenNode {
        HavenNode {
            client_url: self.client_url.clone(),
            peer_addr: self.peer_addr.clone(),
            incarnation: self.incarnation.clone(),
            fingerprint: self.fingerprint.clone(),
            learner: self.config.learner,
        }
    }

    /// Trusts exactly the keys of the latest membership, plus those learned while joining
    /// (before this node holds a membership of its own), plus the keys of nodes that are no
    /// longer members but may still connect, only to be told so (the peer handler answers
    /// them with their expulsion and nothing else).
    pub fn sync_pins(&self) {
        let mut pins = self.member_keys();
        pins.extend(self.state.read().kv.admin().expelled_keys());
        self.pins.replace(pins);
    }

    /// The keys of the latest membership, those learned while joining, and this node's
    /// own: the keys a peer request may be served for.
    pub fn member_keys(&self) -> Vec<String> {
        let membership = self.membership();
        let mut keys: Vec<String> = membership
            .nodes()
            .map(|(_, node)| node.fingerprint.clone())
            .filter(|fingerprint| !fingerprint.is_empty())
            .collect();
        let joined = self.join_pins.lock().unwrap_or_else(|e| e.into_inner());
        keys.extend(joined.iter().map(|member| member.fingerprint.clone()).filter(|f| !f.is_empty()));
        drop(joined);
        if !self.fingerprint.is_empty() {
            keys.push(self.fingerprint.clone());
        }
        keys
    }

    pub fn membership(&self) -> Arc<StoredMembership> {
        // Only the shared membership: borrow instead of cloning the whole metrics.
        self.raft.metrics().borrow_watched().membership_config.clone()
    }

    /// The key recorded for peer `node_id` and its data dir's incarnation (`None` when not
    /// known): from the latest membership, or, before this node holds one, from the member
    /// list it learned while joining (no incarnation then).
    pub fn peer_record(&self, node_id: NodeId) -> Option<(String, Option<String>)> {
        if let Some(member) = self.membership().get_node(&node_id) {
            return Some((member.fingerprint.clone(), Some(member.incarnation.clone())));
        }
        let joined = self.join_pins.lock().unwrap_or_else(|e| e.into_inner());
        joined.iter().find(|member| member.id == node_id).map(|member| (member.fingerprint.clone(), None))
    }

    /// The leader this node believes in, with how to reach it.
    pub fn leader(&self) -> Option<(NodeId, HavenNode)> {
        // On every request: borrow instead of cloning the whole metrics.
        let receiver = self.raft.metrics();
        let metrics = receiver.borrow_watched();
        let leader = metrics.current_leader?;
        let node = metrics.membership_config.get_node(&leader).cloned()?;
        Some((leader, node))
    }

    /// Is this node the primary in the sense: the leader, having heard from a
    /// majority within the shortest election timeout? A lone voter is its own majority.
    pub fn leader_has_quorum(&self, metrics: &openraft::RaftMetrics<haven_store::TypeConfig>) -> bool {
        if metrics.state != ServerState::Leader {
            return false;
        }
        let (election_timeout_min, _) = self.config.timing.election_timeout_ms();
        self.is_sole_voter(metrics)
            || metrics
                .last_quorum_acked
                .as_ref()
                .is_some_and(|at| at.elapsed() < Duration::from_millis(election_timeout_min))
    }

    /// Is this node the only voter (its own majority) in `metrics`' membership?
    fn is_sole_voter(&self, metrics: &openraft::RaftMetrics<haven_store::TypeConfig>) -> bool {
        let mut voters = metrics.membership_config.voter_ids();
        voters.next() == Some(self.node_id) && voters.next().is_none()
    }

    /// Notes that a leader was heard from just now.
    pub(crate) fn heard_from_leader(&self) {
        *self.leader_heard.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    /// How long ago this node last knew its replica was current: a leader when it last heard
    /// from a majority (at once when it is the only voter), a follower when it last heard
    /// from its leader. `None`: never.
    pub fn token_table_age(&self) -> Option<Duration> {
        // On every authenticated request: borrow instead of cloning the whole metrics.
        let receiver = self.raft.metrics();
        let metrics = receiver.borrow_watched();
        if metrics.state == ServerState::Leader {
            if self.is_sole_voter(&metrics) {
                return Some(Duration::ZERO);
            }
            // None: elected a moment ago, by a majority that has not acknowledged anything
            // since; the votes themselves were that majority's word.
            return Some(metrics.last_quorum_acked.as_ref().map_or(Duration::ZERO, |at| at.elapsed()));
        }
        drop(metrics);
        self.leader_heard.lock().unwrap_or_else(|e| e.into_inner()).map(|at| at.elapsed())
    }

    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow_watched().state == ServerState::Leader
    }

    pub fn cluster_id(&self) -> Option<String> {
        self.state.read().kv.cluster_id().map(str::to_string).or_else(|| self.local.cluster_id())
    }

    // ---- writes -------------------------------------------------------------------

    /// Commits `request`, made by `caller`, through the leader, following leader changes
    /// until `WRITE_DEADLINE`. A node that does not lead forwards the request with the
    /// caller's credential, which the leader checks itself. (The server's own commands are
    /// proposed with [`Node::propose_as_leader`] on the leader only: they never travel.)
    pub async fn write(&self, caller: &Caller, request: Request) -> Result<CommandResult, ApiError> {
        self.write_acked(caller, request).await.map(|acked| acked.result)
    }

    /// [`Node::write`], with the stamp of the leader that acknowledged it: the entry's log
    /// id and the leader's monotonic clock when it learned the entry was committed (the
    /// `Haven-Ack` header of the KV writes; the nemesis counts primaries from these).
    pub async fn write_acked(&self, caller: &Caller, request: Request) -> Result<Acked, ApiError> {
        let mut request = caller.stamp(request);
        if let Some(refusal) = self.detached_write_refusal() {
            return Err(refusal);
        }
        if request.request_id.is_none() {
            request.request_id = Some(format!("srv-{}", new_random_id()));
        }
        let deadline = Instant::now() + WRITE_DEADLINE;
        // Whether some attempt may have reached a leader's log; if so the final answer
        // is "outcome unknown", never "not applied".
        let mut maybe_applied = false;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let attempt = match self.leader() {
                Some((leader, _)) if leader == self.node_id => {
                    match tokio::time::timeout(remaining, self.propose_as_leader(request.clone())).await {
                        Ok(result) => result,
                        Err(_) => Err(RemoteError::OutcomeUnknown),
                    }
                }
                Some((leader, node)) => self
                    .forward(
                        leader,
                        &node,
                        PeerRequest::Forward { request: request.clone(), credential: caller.credential.clone() },
                        remaining,
                    )
                    .await
                    .and_then(|response| match response {
                        PeerResponse::Forward(result) => result,
                        _ => Err(RemoteError::OutcomeUnknown),
                    }),
                None => Err(RemoteError::NotLeader { leader: None }),
            };
            match attempt {
                // Committed, but as a refusal that applied nothing: every route answers it
                // the same way, whatever command it carried.
                Ok(Acked { result: CommandResult::RequestIdReused { reason }, .. }) => {
                    return Err(ApiError::request_id_reused(reason))
                }
                Ok(result) => return Ok(result),
                Err(RemoteError::Rejected { status, code, message }) => {
                    return Err(RemoteError::Rejected { status, code, message }.into())
                }
                Err(RemoteError::OutcomeUnknown) => maybe_applied = true,
                Err(RemoteError::NotLeader { .. }) | Err(RemoteError::Unavailable(_)) => {}
            }
            // Told meanwhile (or by the applied log) that this node was detached: say so now
            // instead of retrying into "may or may not have been applied".
            if let Some(refusal) = self.detached_write_refusal().filter(|_| !maybe_applied) {
                return Err(refusal);
            }
            if Instant::now() + RETRY_PAUSE >= deadline {
                return Err(if maybe_applied {
                    ApiError::outcome_unknown("no leader committed it within the write deadline")
                } else {
                    ApiError::no_leader()
                });
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// Proposes `request` on this node, which must be the leader. Called for local writes,
    /// for the server's own commands and for writes forwarded by followers once their
    /// credential checked out here (they are never forwarded again).
    ///
    /// The request is stamped with the cluster's time as this leader reads it (its clock
    /// corrected by the median of the members' readings, see [`Node::cluster_now_ms`]) at
    /// the last moment before it enters the log: the state machine decides token expiry from
    /// the stamp, never from a replica's own clock, so every replica decides alike, and a
    /// leader with a skewed clock stamps the others' time.
    ///
    /// The answer carries the acknowledgement stamp: the committed entry's log id (the
    /// leader id it was proposed under, and its index) and `CLOCK_MONOTONIC` read as soon as
    /// the commit result arrived.
    pub async fn propose_as_leader(&self, mut request: Request) -> Result<Acked, RemoteError> {
        if matches!(request.command, Command::Put { .. } | Command::Delete { .. }) {
            // A witness (or priority-0 node) leads only to hand over; the caller retries
            // and reaches the data node once it has taken over.
            if let Some(reason) = self.witness_refusal() {
                return Err(RemoteError::Unavailable(reason));
            }
        }
        request.now_ms = self.cluster_now_ms();
        let proposed = Instant::now();
        match self.raft.client_write(request).await {
            Ok(response) => {
                let mono_ns = monotonic_ns();
                self.prometheus.proposal_committed(proposed.elapsed());
                let log_id = response.log_id;
                let ack = AckStamp {
                    node: log_id.leader_id.node_id,
                    term: log_id.leader_id.term,
                    index: log_id.index,
                    mono_ns,
                };
                Ok(Acked { result: response.data, ack })
            }
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(to))) => {
                Err(RemoteError::NotLeader { leader: to.leader_id })
            }
            // Appended here but replaced by another leader's log: it may still commit
            // elsewhere. The request id makes a retry safe.
            Err(RaftError::APIError(ClientWriteError::LogEntryDiscarded(_))) => Err(RemoteError::OutcomeUnknown),
            Err(RaftError::APIError(other)) => Err(RemoteError::Unavailable(other.to_string())),
            Err(RaftError::Fatal(fatal)) => Err(RemoteError::Unavailable(format!("raft stopped: {fatal}"))),
        }
    }

    /// On the leader: commits `command` made by `caller` (never forwarded). A token that no
    /// longer allows it at its point in the log is a 401.
    pub async fn commit_as_leader(&self, caller: &Caller, command: Command) -> Result<CommandResult, RemoteError> {
        let acked = self.propose_as_leader(caller.stamp(Request::new(None, command))).await?;
        match acked.result {
            CommandResult::Unauthorized { reason } => Err(crate::auth::revoked_in_flight(reason).into()),
            result => Ok(result),
        }
    }

    /// On the leader: commits `command` (an authorization check that changes nothing, or
    /// the spending of a join token) for `caller`, for actions that are not state machine
    /// commands themselves (membership changes): the token is checked at a point in the log
    /// after every revocation this leader had committed.
    async fn authorize_as_leader(&self, caller: &Caller, command: Command) -> Result<(), RemoteError> {
        match self.commit_as_leader(caller, command).await? {
            CommandResult::Ok { .. } => Ok(()),
            other => Err(unexpected_result("an authorization", other)),
        }
    }

    /// On the leader: records an administrative action made by `caller` that is not itself
    /// a state machine command. Best effort: the action already happened, so a failure here
    /// is logged, not turned into an error for it.
    pub async fn record_audit_for(&self, caller: &Caller, entry: AuditEntry) {
        let action = entry.action.clone();
        match self.commit_as_leader(caller, Command::RecordAudit { entry }).await {
            Ok(CommandResult::Audited { .. }) => {}
            Ok(other) => tracing::warn!(%action, ?other, "audit record refused"),
            Err(error) => tracing::warn!(%action, %error, "audit record not written"),
        }
    }

    /// Refuses a join token already spent on another node (or the same node id with another
    /// data dir), as seen by this node's replica.
    fn check_join_token_unspent(&self, caller: &Caller, join: &JoinRequest) -> Result<(), RemoteError> {
        if caller.role != Role::Join {
            return Ok(());
        }
        let state = self.state.read();
        let spent_on = state.kv.token(&caller.token_id).and_then(|record| record.used_by.clone());
        match spent_on {
            Some(claim) if claim.node_id != join.node_id || claim.incarnation != join.incarnation => {
                Err(RemoteError::Rejected {
                    status: 401,
                    code: "unauthorized".into(),
                    message: format!(
                        "join token {} was already used by node {}; a join token admits one node",
                        caller.token_id, claim.node_id
                    ),
                })
            }
            _ => Ok(()),
        }
    }

    /// Sends a request to the leader over the peer link. A request that certainly did not
    /// arrive reports `NotLeader` (safe to retry anywhere); one that may have arrived,
    /// `OutcomeUnknown`.
    pub(crate) async fn forward(
        &self,
        leader: NodeId,
        node: &HavenNode,
        body: PeerRequest,
        timeout: Duration,
    ) -> Result<PeerResponse, RemoteError> {
        let envelope = self.local.envelope(leader, Some(node), body);
        match self.transport.call(&node.peer_addr, envelope, timeout).await {
            Ok(PeerResponse::Refused(reason)) => Err(RemoteError::Unavailable(reason)),
            // Nothing was served: the leader says this node is no longer a member.
            Ok(PeerResponse::Expelled(expulsion)) => {
                let rejected = RemoteError::Rejected {
                    status: 409,
                    code: expulsion.code().to_string(),
                    message: expulsion.message.clone(),
                };
                self.local.report_expulsion(expulsion);
                Err(rejected)
            }
            Ok(response) => Ok(response),
            Err(error) if error.not_delivered() => Err(RemoteError::NotLeader { leader: None }),
            Err(_) => Err(RemoteError::OutcomeUnknown),
        }
    }

    // ---- reads --------------------------------------------------------------------

    /// Returns once this node's state machine reflects every write acknowledged before
    /// the call (linearizable read barrier).
    pub async fn read_barrier(&self) -> Result<(), ApiError> {
        if self.test_hooks.skip_read_index {
            // Mutant (`--unsafe-test-mode stale-reads`): serve whatever this node has applied.
            return Ok(());
        }
        let deadline = Instant::now() + READ_DEADLINE;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let done = match self.leader() {
                Some((leader, _)) if leader == self.node_id => {
                    matches!(
                        tokio::time::timeout(remaining, self.raft.ensure_linearizable(ReadPolicy::ReadIndex)).await,
                        Ok(Ok(_))
                    )
                }
                Some((leader, node)) => match self.forward(leader, &node, PeerRequest::ReadIndex, remaining).await {
                    Ok(PeerResponse::ReadIndex(Ok(index))) => {
                        let remaining = deadline.saturating_duration_since(Instant::now());
                        self.raft.wait(Some(remaining)).applied_index_at_least(Some(index), "read index").await.is_ok()
                    }
                    _ => false,
                },
                None => false,
            };
            if done {
                self.heard_from_leader();
                return Ok(());
            }
            if Instant::now() + RETRY_PAUSE >= deadline {
                return Err(ApiError::no_leader());
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// On the leader: confirms leadership with a quorum and returns the index a reader
    /// must have applied.
    pub async fn read_index_as_leader(&self) -> Result<u64, RemoteError> {
        match self.raft.get_read_linearizer(ReadPolicy::ReadIndex).await {
            Ok(linearizer) => Ok(linearizer.read_log_id().index()),
            Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(to))) => {
                Err(RemoteError::NotLeader { leader: to.leader_id })
            }
            Err(RaftError::APIError(LinearizableReadError::QuorumNotEnough(error))) => {
                Err(RemoteError::Unavailable(error.to_string()))
            }
            Err(RaftError::Fatal(fatal)) => Err(RemoteError::Unavailable(format!("raft stopped: {fatal}"))),
        }
    }

    // ---- membership ---------------------------------------------------------------

    /// Admits a node (carried out by the leader) for `caller`, a join or admin token.
    pub async fn join(&self, caller: &Caller, request: JoinRequest) -> Result<JoinResponse, ApiError> {
        self.validate_join(&request)?;
        let deadline = Instant::now() + JOIN_DEADLINE;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let attempt = match self.leader() {
                Some((leader, _)) if leader == self.node_id => self.join_as_leader(caller, request.clone()).await,
                Some((leader, node)) => {
                    let body = PeerRequest::Join { request: request.clone(), credential: caller.credential.clone() };
                    match self.forward(leader, &node, body, remaining).await {
                        Ok(PeerResponse::Join(result)) => result,
                        Ok(_) => Err(RemoteError::Unavailable("unexpected answer to join".into())),
                        Err(error) => Err(error),
                    }
                }
                None => Err(RemoteError::NotLeader { leader: None }),
            };
            match attempt {
                Ok(response) => return Ok(response),
                Err(RemoteError::Rejected { status, code, message }) => {
                    return Err(RemoteError::Rejected { status, code, message }.into())
                }
                Err(_) if Instant::now() + RETRY_PAUSE < deadline => tokio::time::sleep(RETRY_PAUSE * 5).await,
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// Checks every field of a join request (before anything is spent or changed): the
    /// addresses must be exactly addresses (they go into the membership, every member dials
    /// and logs them), the key must be a well-formed fingerprint (none only in an
    /// `--insecure-dev` cluster, which has no keys at all).
    pub fn validate_join(&self, request: &JoinRequest) -> Result<(), ApiError> {
        use haven_core::endpoint::validate_client_url;
        use haven_core::endpoint::validate_host_port;
        let insecure = self.fingerprint.is_empty();
        if request.node_id == 0 || request.node_id > NODE_ID_MAX {
            return Err(ApiError::bad_request(format!("node_id must be 1..={NODE_ID_MAX}")));
        }
        let incarnation_ok = (1..=INCARNATION_CHARS_MAX).contains(&request.incarnation.len())
            && request.incarnation.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !incarnation_ok {
            return Err(ApiError::bad_request(format!(
                "incarnation must be 1-{INCARNATION_CHARS_MAX} letters, digits, `-`, `_` or `.`"
            )));
        }
        validate_client_url(&request.client_url, insecure)
            .map_err(|reason| ApiError::bad_request(format!("client_url {reason}")))?;
        validate_host_port(&request.peer_addr)
            .map_err(|reason| ApiError::bad_request(format!("peer_addr {reason}")))?;
        let fingerprint_ok = if insecure {
            request.fingerprint.is_empty()
        } else {
            haven_core::config::parse_fingerprint(&request.fingerprint).as_deref() == Some(request.fingerprint.as_str())
        };
        if !fingerprint_ok {
            return Err(ApiError::bad_request(if insecure {
                "fingerprint must be empty: this --insecure-dev cluster has no keys".to_string()
            } else {
                "fingerprint is required: `sha256:` followed by 64 lowercase hex digits (`haven fingerprint`)"
                    .to_string()
            }));
        }
        Ok(())
    }

    /// On the leader: admits the joiner for `caller`. With a join token, the token is spent
    /// on this node through Raft first (so of two joins racing with one token exactly one
    /// gets in; the same node may repeat its join); with an admin token, the token is checked
    /// once more at a committed point. The dry run (the joiner's preview) changes nothing
    /// and spends nothing, but is refused when the join itself would be.
    ///
    /// A join token is deleted once its node is admitted (`Command::SpendJoinToken`): it
    /// admits one node once, and nobody after, not even that node once it has been removed.
    /// The node is bound to the key it names: a member with another key is refused.
    pub async fn join_as_leader(&self, caller: &Caller, request: JoinRequest) -> Result<JoinResponse, RemoteError> {
        self.validate_join(&request).map_err(RemoteError::from)?;
        let Some(cluster_id) = self.cluster_id() else {
            return Err(RemoteError::Unavailable("the cluster id is not committed yet; retry".into()));
        };
        if request.dry_run {
            self.check_join_token_unspent(caller, &request)?;
        } else {
            let command = match caller.role {
                Role::Join => Command::ConsumeJoinToken {
                    id: caller.token_id.clone(),
                    node_id: request.node_id,
                    incarnation: request.incarnation.clone(),
                },
                _ => Command::Authorize,
            };
            self.authorize_as_leader(caller, command).await?;
        }
        let _one_change_at_a_time = self.membership_changes.lock().await;
        let membership = self.membership();
        match membership.get_node(&request.node_id) {
            Some(existing) if existing.incarnation != request.incarnation => {
                // A wiped disk and a second node configured with a live member's id look
                // alike here; the address and whether the member is heard from tell them
                // apart.
                let (code, message) = haven_core::identity::id_conflict(
                    request.node_id,
                    &recorded_member(existing, self.member_heard_ms_ago(request.node_id)),
                    &request.incarnation,
                    Some(&haven_core::identity::Addresses {
                        client_url: &request.client_url,
                        peer_addr: &request.peer_addr,
                    }),
                );
                return Err(RemoteError::Rejected { status: 409, code: code.into(), message });
            }
            Some(existing) if existing.fingerprint != request.fingerprint => {
                return Err(RemoteError::Rejected {
                    status: 409,
                    code: "conflict".into(),
                    message: format!(
                        "node {} is already a member with key {}, not {}: a member keeps the key it joined with",
                        request.node_id, existing.fingerprint, request.fingerprint
                    ),
                });
            }
            Some(_) => {}
            None if request.dry_run => {}
            None => {
                let node = HavenNode {
                    client_url: request.client_url.clone(),
                    peer_addr: request.peer_addr.clone(),
                    incarnation: request.incarnation.clone(),
                    fingerprint: request.fingerprint.clone(),
                    learner: request.learner,
                };
                tracing::info!(node_id = request.node_id, %node, fingerprint = %node.fingerprint, "adding learner");
                // Not blocking: the joiner pins our keys from this answer, then catches up;
                // the leader promotes it once it has (see `promote_caught_up_learners`).
                self.raft.add_learner(request.node_id, node, false).await.map_err(membership_error)?;
                let joiner = request.node_id;
                let kind = if request.learner { "learner" } else { "voter (promoted once caught up)" };
                let entry = AuditEntry::new("member.add", format!("node {joiner} joined as a {kind}"))
                    .with_change(AuditChange::new(format!("member {joiner}"), None, Some(kind.to_string())));
                self.record_audit_for(caller, entry).await;
            }
        }
        if !request.dry_run && caller.role == Role::Join {
            // Admitted (now or by an earlier attempt whose answer was lost): the token is
            // spent for good. A failure here is answered as one, so the joiner repeats the
            // join and the repeat spends it.
            let spend = Command::SpendJoinToken { id: caller.token_id.clone(), node_id: request.node_id };
            self.authorize_as_leader(caller, spend).await?;
        }
        let membership = self.membership();
        let voter = membership.voter_ids().any(|id| id == request.node_id);
        let members = membership
            .nodes()
            .map(|(id, node)| JoinMember {
                id: *id,
                client_url: node.client_url.clone(),
                peer_addr: node.peer_addr.clone(),
                fingerprint: node.fingerprint.clone(),
            })
            .collect();
        Ok(JoinResponse { cluster_id, voter, members })
    }

    /// On the leader: promotes learners that have caught up and did not ask to stay
    /// learners, while there are fewer than `VOTERS_MAX` voters. Driven by the membership
    /// itself, so a promotion interrupted by a leader change is finished by the next leader.
    pub async fn promote_caught_up_learners(&self) {
        if !self.is_leader() {
            return;
        }
        let metrics = self.metrics();
        let voters = metrics.membership_config.voter_ids().count();
        if voters >= VOTERS_MAX {
            return;
        }
        let last_log_index = metrics.last_log_index.unwrap_or(0);
        let matched = metrics.replication.clone().unwrap_or_default();
        let candidate = metrics.membership_config.membership().learner_ids().find(|id| {
            let wants_vote = metrics.membership_config.get_node(id).is_some_and(|node| !node.learner);
            let caught_up = matched
                .get(id)
                .cloned()
                .flatten()
                .is_some_and(|log_id| log_id.index() + PROMOTION_LAG_ENTRIES_MAX >= last_log_index);
            wants_vote && caught_up
        });
        let Some(node_id) = candidate else { return };
        let _one_change_at_a_time = self.membership_changes.lock().await;
        tracing::info!(node_id, "promoting caught-up learner to voter");
        if let Err(error) =
            self.raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([node_id])), true).await
        {
            tracing::warn!(node_id, %error, "promotion failed; will retry");
        }
    }

    /// Removes a member (carried out by the leader) for `caller`, an admin token.
    pub async fn remove_member(
        &self,
        caller: &Caller,
        node_id: NodeId,
        force: bool,
    ) -> Result<RemoveResponse, ApiError> {
        match self.leader() {
            Some((leader, _)) if leader == self.node_id => Ok(self.remove_as_leader(caller, node_id, force).await?),
            Some((leader, node)) => {
                let body = PeerRequest::RemoveMember { node_id, force, credential: caller.credential.clone() };
                match self.forward(leader, &node, body, WRITE_DEADLINE).await? {
                    PeerResponse::RemoveMember(result) => Ok(result?),
                    _ => Err(ApiError::internal("unexpected answer to remove-member")),
                }
            }
            None => Err(ApiError::no_leader()),
        }
    }

    /// On the leader: removes `node_id` for `caller`, whose token is checked once more at a
    /// committed point first, and records it in the audit log.
    pub async fn remove_as_leader(
        &self,
        caller: &Caller,
        node_id: NodeId,
        force: bool,
    ) -> Result<RemoveResponse, RemoteError> {
        self.authorize_as_leader(caller, Command::Authorize).await?;
        let _one_change_at_a_time = self.membership_changes.lock().await;
        let membership = self.membership();
        if membership.get_node(&node_id).is_none() {
            return Err(RemoteError::Rejected {
                status: 404,
                code: "not_found".into(),
                message: format!("node {node_id} is not a member; `haven members list` shows the members"),
            });
        }
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let mut warning = None;
        let change = if voters.contains(&node_id) {
            let remaining: Vec<NodeId> = voters.iter().copied().filter(|id| *id != node_id).collect();
            if remaining.is_empty() {
                return Err(RemoteError::Rejected {
                    status: 409,
                    code: "conflict".into(),
                    message: format!("node {node_id} is the last voter; a cluster cannot remove its last voter"),
                });
            }
            let reachable: Vec<NodeId> = remaining.iter().copied().filter(|id| self.is_reachable(*id)).collect();
            let majority = remaining.len() / 2 + 1;
            if reachable.len() < majority {
                let risk = format!(
                    "after removing node {node_id} the voters would be {remaining:?}, of which only {reachable:?} \
                     are reachable; {majority} are needed to commit anything"
                );
                if !force {
                    return Err(RemoteError::Rejected {
                        status: 409,
                        code: "quorum_at_risk".into(),
                        message: format!("{risk}. Bring the unreachable nodes back, or repeat with --force"),
                    });
                }
                tracing::warn!("forced removal: {risk}");
                warning = Some(format!("forced: {risk}"));
            }
            ChangeMembers::RemoveVoters(BTreeSet::from([node_id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([node_id]))
        };
        // Recorded first (id, data dir, key), so the removed node is told it was removed
        // when it speaks again instead of pre-voting forever (its key stays accepted for
        // that answer only); harmless if the change then fails, since only a node missing
        // from the committed membership is told.
        if let Some(member) = membership.get_node(&node_id) {
            let record = Command::RecordRemoval {
                node_id,
                incarnation: member.incarnation.clone(),
                fingerprint: member.fingerprint.clone(),
            };
            match self.commit_as_leader(caller, record).await? {
                CommandResult::Ok { .. } => {}
                other => return Err(unexpected_result("a removal record", other)),
            }
        }
        tracing::info!(node_id, force, "removing member");
        self.raft.change_membership(change, false).await.map_err(membership_error)?;
        let entry =
            AuditEntry::new("member.remove", format!("node {node_id} removed{}", if force { " (forced)" } else { "" }))
                .with_change(AuditChange::new(format!("member {node_id}"), Some("member".into()), None));
        self.record_audit_for(caller, entry).await;
        Ok(RemoveResponse { removed: node_id, warning })
    }

    // ---- maintenance ----------------------------------------------------------------

    // ---- expulsion ------------------------------------------------------------------

    /// The teardown that detaches this node, if any: recorded (`Node::detached`), or
    /// applied here and naming it while it still helps commit the membership change that
    /// removes it.
    pub fn detachment(&self) -> Option<crate::ha::Detached> {
        self.detached().or_else(|| {
            let generation = self.state.read().kv.admin().is_detached(self.node_id, &self.incarnation)?;
            Some(crate::ha::Detached { generation, cluster_id: self.cluster_id(), kept: None })
        })
    }

    /// Why this node refuses client writes as detached: from the moment it applied the
    /// teardown that names it, or was told by a member (issue 14: writes used to hang until
    /// the grace period ended, about 10 s, and then said "may or may not have been applied").
    pub fn detached_write_refusal(&self) -> Option<ApiError> {
        let detached = self.detachment()?;
        Some(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "detached",
            format!(
                "node {} was detached by teardown generation {}; its data is read-only. Start it standalone \
                 (`haven recover --standalone`) or wipe it and join as a new member",
                self.node_id, detached.generation
            ),
        ))
    }

    /// Acts on what a member said. Detached: a member only says so once the membership
    /// change that removed this node is committed, so it detaches at once (no grace
    /// period). Removed or recovered away: it records that durably and stops for good
    /// (`run` ends, the process exits with [`crate::EXIT_EXPELLED`]).
    pub fn on_expelled(&self, expulsion: haven_net::Expulsion) {
        match &expulsion.kind {
            haven_net::ExpulsionKind::Detached { generation, kept } => {
                tracing::warn!(message = %expulsion.message, by = expulsion.by, "told this node was detached");
                self.mark_detached(crate::ha::Detached {
                    generation: *generation,
                    cluster_id: expulsion.cluster_id.clone(),
                    kept: *kept,
                });
            }
            haven_net::ExpulsionKind::Removed | haven_net::ExpulsionKind::RecoveredAway { .. } => {
                // Durably first: a restart must not serve the old cluster either.
                let path = self.config.data_dir.join(crate::EXPELLED_FILE);
                if let Err(error) = crate::ha::write_json(&path, &expulsion) {
                    tracing::error!(%error, path = %path.display(), "cannot record that this node was expelled");
                }
                tracing::error!(message = %expulsion.message, by = expulsion.by, "this node is no longer a member: stopping");
                self.elections_enabled.store(false, std::sync::atomic::Ordering::Relaxed);
                self.raft.runtime_config().elect(false);
                self.expelled.send_replace(Some(expulsion));
            }
        }
    }

    /// Is maintenance mode on (as this node has applied it)?
    pub fn maintenance(&self) -> bool {
        self.state.read().kv.maintenance_since_ms().is_some()
    }

    /// Follows the replicated maintenance flag (and the other reasons to withhold
    /// elections, see `Node::apply_elections`): while it is on, this node starts no
    /// election on its own (no automatic failover); a switchover's hand-over still elects
    /// its target.
    pub fn apply_maintenance(&self) {
        self.apply_elections();
    }

    /// `maintenance off` needs a leader to commit; if there is none (the primary died while
    /// automatic failover was paused), this node resumes elections and campaigns first.
    pub async fn resume_elections_locally_if_leaderless(&self) {
        // A leader this node cannot reach counts as gone: with elections paused, followers
        // keep naming a dead primary.
        let leader_alive = self.leader().is_some_and(|(id, _)| self.is_reachable(id));
        if leader_alive || !self.maintenance() {
            return;
        }
        if let Some((log_end, mark)) = self.rewound() {
            // It would lead without entries it acknowledged; another member must.
            tracing::warn!(
                log_end,
                mark,
                "maintenance off requested, but this node's storage went back in time: not campaigning"
            );
            return;
        }
        tracing::warn!("maintenance off requested without a leader: resuming elections on this node");
        self.maintenance_override.store(true, std::sync::atomic::Ordering::Relaxed);
        self.apply_maintenance();
        if let Err(error) = self.raft.trigger().elect(true).await {
            tracing::warn!(%error, "could not start an election");
        }
    }

    // ---- switchover ---------------------------------------------------------------

    /// Hands the primary role to `to` (or the most caught-up voter), carried out by the
    /// leader (seed 002's "swap roles").
    pub async fn switchover(&self, caller: &Caller, to: Option<NodeId>) -> Result<SwitchoverResponse, ApiError> {
        match self.leader() {
            Some((leader, _)) if leader == self.node_id => Ok(self.switchover_as_leader(caller, to).await?),
            Some((leader, node)) => {
                let body = PeerRequest::Switchover { to, credential: caller.credential.clone() };
                match self.forward(leader, &node, body, SWITCHOVER_TIMEOUT * 2).await? {
                    PeerResponse::Switchover(result) => Ok(result?),
                    _ => Err(ApiError::internal("unexpected answer to switchover")),
                }
            }
            None => Err(ApiError::no_leader()),
        }
    }

    /// On the leader: checks the target, asks openraft to transfer leadership (the leader
    /// stops proposing and the target campaigns as soon as it holds the leader's last
    /// entry), and confirms the target leads within `SWITCHOVER_TIMEOUT`. If it does not,
    /// this node keeps (or regains) the role and the answer says why.
    ///
    /// Made by `caller`: the request is recorded in the audit log first, with the caller's
    /// name (the node that takes over reads it and knows the change was planned, not a
    /// failover); a refusal is recorded after it.
    pub async fn switchover_as_leader(
        &self,
        caller: &Caller,
        to: Option<NodeId>,
    ) -> Result<SwitchoverResponse, RemoteError> {
        if to == Some(self.node_id) {
            // Already where it was asked to be: nothing to do, nothing to record (issue 14:
            // this was an error with two audit records).
            return Ok(SwitchoverResponse { from: self.node_id, to: self.node_id, elapsed_ms: 0 });
        }
        let window_start = crate::auth::now_ms().saturating_sub(haven_core::admin::SWITCHOVER_WINDOW_MS);
        let recent = self.state.read().kv.admin().audit.switchovers_since(window_start);
        if recent >= haven_core::admin::SWITCHOVERS_PER_WINDOW_MAX {
            return Err(RemoteError::Rejected {
                status: 429,
                code: "too_many_switchovers".into(),
                message: format!(
                    "{recent} switchovers in the last {} s, the most the cluster carries out; retry in a minute",
                    haven_core::admin::SWITCHOVER_WINDOW_MS / 1000
                ),
            });
        }
        let target = to.map_or_else(|| "the most caught-up voter".to_string(), |to| format!("node {to}"));
        let entry = AuditEntry::new("switchover", format!("switchover to {target} requested"))
            .with_change(AuditChange::new("primary", Some(self.node_id.to_string()), to.map(|to| to.to_string())));
        match self.commit_as_leader(caller, Command::RecordAudit { entry }).await? {
            CommandResult::Audited { .. } => {}
            other => return Err(unexpected_result("an audit record", other)),
        }
        let result = self.carry_out_switchover(to).await;
        if let Err(error) = &result {
            let message = match error {
                RemoteError::Rejected { message, .. } => message.clone(),
                other => other.to_string(),
            };
            self.record_audit_for(caller, AuditEntry::new("switchover.failed", message)).await;
        }
        result
    }

    async fn carry_out_switchover(&self, to: Option<NodeId>) -> Result<SwitchoverResponse, RemoteError> {
        let refuse = |message: String| RemoteError::Rejected { status: 409, code: "conflict".into(), message };
        let metrics = self.metrics();
        let last_log_index = metrics.last_log_index.unwrap_or(0);
        let matched = metrics.replication.clone().unwrap_or_default();
        let lag = |id: &NodeId| {
            matched
                .get(id)
                .cloned()
                .flatten()
                .map_or(last_log_index, |log_id| last_log_index.saturating_sub(log_id.index()))
        };
        let voters: BTreeSet<NodeId> = metrics.membership_config.voter_ids().collect();
        let target = match to {
            Some(target) if target == self.node_id => {
                return Err(refuse(format!("node {target} is already the primary")));
            }
            Some(target) => {
                if metrics.membership_config.get_node(&target).is_none() {
                    return Err(RemoteError::Rejected {
                        status: 404,
                        code: "not_found".into(),
                        message: format!("node {target} is not a member"),
                    });
                }
                if !voters.contains(&target) {
                    return Err(refuse(format!("node {target} is a learner; only voters can become primary")));
                }
                let settings = self.settings_of(target);
                if settings.role == haven_core::ha::NodeRole::Witness {
                    return Err(refuse(format!("node {target} is a witness; a witness is never the primary")));
                }
                if settings.priority == 0 {
                    return Err(refuse(format!("node {target} has priority 0; it is never the primary")));
                }
                if !self.is_reachable(target) {
                    return Err(refuse(format!("node {target} is unreachable from the primary; it cannot take over")));
                }
                if lag(&target) > PROMOTION_LAG_ENTRIES_MAX {
                    return Err(refuse(format!(
                        "node {target} is {} entries behind (at most {PROMOTION_LAG_ENTRIES_MAX} allowed); wait for it \
                         to catch up",
                        lag(&target)
                    )));
                }
                target
            }
            None => voters
                .iter()
                .copied()
                .filter(|id| *id != self.node_id && self.is_reachable(*id) && lag(id) <= PROMOTION_LAG_ENTRIES_MAX)
                .filter(|id| self.settings_of(*id).role == haven_core::ha::NodeRole::Data)
                .filter(|id| self.settings_of(*id).priority > 0)
                .min_by_key(|id| (lag(id), std::cmp::Reverse(self.settings_of(*id).priority), *id))
                .ok_or_else(|| {
                    refuse(
                        "no other data voter with priority above 0 is reachable and caught up; nothing to switch to"
                            .into(),
                    )
                })?,
        };
        let started = Instant::now();
        tracing::info!(target, "switchover requested: handing leadership over");
        self.raft.trigger().transfer_leader(target).await.map_err(|e| RemoteError::Unavailable(e.to_string()))?;
        let took_over = self
            .raft
            .wait(Some(SWITCHOVER_TIMEOUT))
            .metrics(|m| m.current_leader == Some(target), "switchover target leads")
            .await;
        match took_over {
            Ok(_) => {
                let elapsed_ms = started.elapsed().as_millis() as u64;
                tracing::info!(from = self.node_id, to = target, elapsed_ms, "switchover done");
                Ok(SwitchoverResponse { from: self.node_id, to: target, elapsed_ms })
            }
            Err(_) => {
                let leader = self.metrics().current_leader;
                tracing::warn!(target, ?leader, "switchover target did not take over in time");
                Err(RemoteError::Rejected {
                    status: 504,
                    code: "switchover_timeout".into(),
                    message: format!(
                        "node {target} did not take over within {SWITCHOVER_TIMEOUT:?}; the leader is {leader:?}. \
                         Check its health and retry"
                    ),
                })
            }
        }
    }

    // ---- health and probes --------------------------------------------------------

    pub fn ping_info(&self) -> PingInfo {
        let metrics = self.metrics();
        PingInfo {
            node_id: self.node_id,
            term: metrics.current_term,
            leader: metrics.current_leader,
            last_log_index: metrics.last_log_index.unwrap_or(0),
            applied_index: metrics.last_applied.as_ref().map_or(0, |log_id| log_id.index()),
            boot: self.local.boot,
            wall_ms: self.wall_ms(),
        }
    }

    /// The `haven init` record that this data dir starts a new cluster, while it is there
    /// (until the new cluster has its first admin token). A read error counts as none: the
    /// node then does not bootstrap, and says so.
    pub fn bootstrap_intent(&self) -> Option<haven_store::BootstrapIntent> {
        haven_store::BootstrapIntent::load(&self.db).unwrap_or_else(|error| {
            tracing::warn!(%error, "cannot read the bootstrap intent");
            None
        })
    }

    /// Clears the `haven init` record: the new cluster exists and has its admin token.
    pub fn clear_bootstrap_intent(&self) -> std::io::Result<()> {
        haven_store::BootstrapIntent::clear(&self.db)
    }

    /// This node's wall clock, ms since the Unix epoch (shifted by a clock-skew test's
    /// offset).
    pub fn wall_ms(&self) -> u64 {
        haven_core::clock::shifted(crate::auth::now_ms(), self.test_hooks.clock_offset_ms)
    }

    /// The members' clocks from fresh probe readings: the cluster's time (the median) and
    /// each member's skew from it.
    pub fn clock_view(&self) -> ClockView {
        let fresh = Duration::from_millis(haven_core::clock::CLOCK_SAMPLE_FRESH_MS);
        let membership = self.membership();
        let samples: Vec<(NodeId, ClockSample)> = {
            let probes = self.probes.lock().unwrap_or_else(|e| e.into_inner());
            membership
                .nodes()
                .filter(|(id, _)| **id != self.node_id)
                .filter_map(|(id, _)| {
                    let (sample, at) = probes.get(id)?.clock?;
                    (at.elapsed() < fresh).then_some((*id, sample))
                })
                .collect()
        };
        let offsets: Vec<i64> = samples.iter().map(|(_, sample)| sample.offset_ms).collect();
        let cluster_offset_ms = haven_core::clock::cluster_offset_ms(&offsets);
        let mut skews: BTreeMap<NodeId, (i64, u64)> = samples
            .iter()
            .map(|(id, sample)| (*id, (sample.offset_ms.saturating_sub(cluster_offset_ms), sample.rtt_ms / 2)))
            .collect();
        // This node's own reading is exact; the median it is compared with is as uncertain
        // as the least precise reading.
        let own_uncertainty = samples.iter().map(|(_, sample)| sample.rtt_ms / 2).max().unwrap_or(0);
        skews.insert(self.node_id, (cluster_offset_ms.saturating_neg(), own_uncertainty));
        ClockView { cluster_offset_ms, skews }
    }

    /// The cluster's time (ms since the Unix epoch): this node's clock corrected by the
    /// median of the members' readings. Token creation and expiry are decided on it, so
    /// one skewed node neither expires valid tokens nor stretches short ones.
    pub fn cluster_now_ms(&self) -> u64 {
        haven_core::clock::shifted(self.wall_ms(), self.cluster_offset_ms.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// How long ago `node_id` was last heard from (a peer request from its live process, a
    /// probe answer, a heartbeat acknowledgement), if since this process started.
    pub fn member_heard_ms_ago(&self, node_id: NodeId) -> Option<u64> {
        let as_ms = |at: Instant| u64::try_from(at.elapsed().as_millis()).unwrap_or(u64::MAX);
        let now_ms = self.local.monotonic_ms();
        let request = self.local.boots().heard_ms_ago(node_id, now_ms);
        let probe = self.probe(node_id).last_ok.map(as_ms);
        let heartbeat = self
            .metrics()
            .heartbeat
            .as_ref()
            .and_then(|heartbeats| heartbeats.get(&node_id).cloned().flatten())
            .map(|at| u64::try_from(at.elapsed().as_millis()).unwrap_or(u64::MAX));
        [request, probe, heartbeat].into_iter().flatten().min()
    }

    /// Raises an alarm (and logs an error) for every second live process of one member the
    /// boot tracker has proven since the last call.
    pub fn alarm_duplicate_processes(&self) {
        let proven = self.local.boots().take_new_duplicates();
        for duplicate in proven {
            let error = format!(
                "node {} heard node {} as boot {} and, at the same time, another process claiming to be node {} (boot \
                 {}); the second is refused while the first is heard from. A copy of node {}'s data dir runs \
                 elsewhere: stop it (it must never run next to the original)",
                self.node_id,
                duplicate.member,
                boot_hex(duplicate.live_boot),
                duplicate.member,
                boot_hex(duplicate.boot),
                duplicate.member
            );
            tracing::error!(member = duplicate.member, boot = %boot_hex(duplicate.boot), "{error}");
            self.alert(crate::alerts::AlertEvent::RaiseAlarm {
                condition: format!("two processes run as node {}", duplicate.member),
                error,
            });
        }
    }

    /// Has this node heard from `node_id` recently? As leader: a heartbeat acknowledged in
    /// its own term; otherwise: an answer to its probes; within the window of the timing
    /// this node runs (`haven_core::ha::detection::reachable`).
    pub fn is_reachable(&self, node_id: NodeId) -> bool {
        if node_id == self.node_id {
            return true;
        }
        use haven_core::ha::detection;
        let ms_ago = |at: Instant| u64::try_from(at.elapsed().as_millis()).unwrap_or(u64::MAX);
        let (leading_term, heartbeat_ms_ago) = {
            let receiver = self.raft.metrics();
            let metrics = receiver.borrow_watched();
            let acked = metrics
                .heartbeat
                .as_ref()
                .and_then(|heartbeats| heartbeats.get(&node_id).cloned().flatten())
                .map(|at| u64::try_from(at.elapsed().as_millis()).unwrap_or(u64::MAX));
            ((metrics.state == ServerState::Leader).then_some(metrics.current_term), acked)
        };
        // Since when this node leads its term, as first seen here (the HA loop asks every
        // tick, so at most a tick late: later only makes older probe answers not count).
        let leading_for_ms = leading_term.map(|term| {
            let mut seen = self.leading_since.lock().unwrap_or_else(|e| e.into_inner());
            match *seen {
                Some((seen_term, since)) if seen_term == term => ms_ago(since),
                _ => {
                    *seen = Some((term, Instant::now()));
                    0
                }
            }
        });
        let heard = detection::Heard {
            leading_for_ms,
            heartbeat_ms_ago,
            probe_ms_ago: self.probe(node_id).last_ok.map(ms_ago),
        };
        detection::reachable(heard, detection::reachable_within_ms(&self.config.timing))
    }

    /// How often this node probes its peers, for the timing it runs.
    pub fn probe_interval(&self) -> Duration {
        Duration::from_millis(haven_core::ha::detection::peer_probe_interval_ms(&self.config.timing))
    }

    pub fn probe(&self, node_id: NodeId) -> Probe {
        self.probes.lock().unwrap_or_else(|e| e.into_inner()).get(&node_id).cloned().unwrap_or_default()
    }

    /// Probes every other member once.
    /// Asks member `id` at `node` a background question (a probe, a state digest): the
    /// answer, or an error once the probe timeout of this node's timing has passed. The
    /// transport lets a connection attempt outlive the request's deadline (up to
    /// `haven_net::tcp::CONNECT_TIMEOUT`, 500 ms) so that the connection is kept for the
    /// next request and the link heals on a loaded host; the call goes on in the background
    /// for that, but the round does not wait for it. Waiting stretched the round past
    /// `reachable_within_ms` (default timing: 200 ms probes, a 500 ms window), and every
    /// member was shown unreachable part of the time while one member did not answer.
    pub(crate) async fn ask_peer(
        &self,
        id: NodeId,
        node: &HavenNode,
        request: PeerRequest,
    ) -> Result<PeerResponse, haven_net::TransportError> {
        let timeout = Duration::from_millis(haven_core::ha::detection::peer_probe_timeout_ms(&self.config.timing));
        let envelope = self.local.envelope(id, Some(node), request);
        let (transport, addr) = (self.transport.clone(), node.peer_addr.clone());
        let call = tokio::spawn(async move { transport.call(&addr, envelope, timeout).await });
        let no_answer = |reason: String| haven_net::TransportError::NoAnswer { addr: node.peer_addr.clone(), reason };
        match tokio::time::timeout(timeout, call).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(error)) => Err(no_answer(format!("the call failed: {error}"))),
            Err(_) => Err(no_answer(format!("no answer within the probe timeout ({} ms)", timeout.as_millis()))),
        }
    }

    pub async fn probe_peers(&self) {
        if self.detached().is_some() {
            // It belongs to no cluster: nobody to probe, and every answer would be a refusal.
            return;
        }
        let membership = self.membership();
        let peers: Vec<(NodeId, HavenNode)> =
            membership.nodes().filter(|(id, _)| **id != self.node_id).map(|(id, node)| (*id, node.clone())).collect();
        let probes = peers.into_iter().map(|(id, node)| async move {
            let sent_ms = self.wall_ms();
            let result = self.ask_peer(id, &node, PeerRequest::Ping).await;
            let clock = match &result {
                Ok(PeerResponse::Ping(info)) => ClockSample::from_ping(sent_ms, info.wall_ms, self.wall_ms()),
                _ => None,
            };
            (id, (result, clock))
        });
        let results = futures::future::join_all(probes).await;
        let members: BTreeSet<NodeId> = membership.nodes().map(|(id, _)| *id).collect();
        self.local.boots().retain_members(|id| members.contains(&id));
        // An answer proves its process alive like a request does; one from another process
        // than the member's live one (a copy at the member's address) counts for nothing.
        let now_ms = self.local.monotonic_ms();
        let verdicts: Vec<Option<BootVerdict>> = results
            .iter()
            .map(|(id, (result, _))| match result {
                Ok(PeerResponse::Ping(info)) => Some(self.local.boots().observe(*id, info.boot, now_ms)),
                _ => None,
            })
            .collect();
        self.alarm_duplicate_processes();
        let mut table = self.probes.lock().unwrap_or_else(|e| e.into_inner());
        table.retain(|id, _| members.contains(id));
        for ((id, (result, clock)), verdict) in results.into_iter().zip(verdicts) {
            let probe = table.entry(id).or_default();
            if let (Some(sample), None | Some(BootVerdict::Accept)) = (clock, &verdict) {
                probe.clock = Some((sample, Instant::now()));
            }
            match result {
                Ok(PeerResponse::Ping(info)) if matches!(verdict, Some(BootVerdict::Refuse { .. })) => {
                    probe.last_error = Some(format!(
                        "answered by another process of node {id} (boot {}) than the one heard from",
                        boot_hex(info.boot)
                    ));
                }
                Ok(PeerResponse::Ping(info)) => {
                    probe.last_ok = Some(Instant::now());
                    probe.info = Some(info);
                    probe.last_error = None;
                }
                Ok(PeerResponse::Refused(reason)) => {
                    let error = format!("refused: {reason}");
                    if probe.last_error.as_deref() != Some(error.as_str()) {
                        // Once per change: a refusal repeats at every probe.
                        tracing::warn!(peer = id, %reason, "peer refuses this node");
                    }
                    probe.last_error = Some(error);
                }
                Ok(PeerResponse::Expelled(expulsion)) => {
                    probe.last_error = Some(format!("refused: {}", expulsion.message));
                    self.local.report_expulsion(expulsion);
                }
                Ok(_) => probe.last_error = Some("unexpected answer".into()),
                Err(error) => probe.last_error = Some(error.to_string()),
            }
        }
        drop(table);
        let cluster_offset_ms = self.clock_view().cluster_offset_ms;
        self.cluster_offset_ms.store(cluster_offset_ms, std::sync::atomic::Ordering::Relaxed);
    }

    // ---- storage that went back in time (haven_core::durability) -------------------------

    /// A member says (`PeerEnvelope::to_durable`) that this data dir was recorded as
    /// holding the log durably up to `mark`. If this node's log ends below it, its storage
    /// went back in time: it stops voting and campaigning until it has caught up.
    pub fn note_durable_mark(&self, mark: u64) {
        let before = self.durable_mark_heard.fetch_max(mark, std::sync::atomic::Ordering::Relaxed);
        if mark > before {
            if let Some((log_end, mark)) = self.rewound() {
                tracing::error!(
                    log_end,
                    mark,
                    "this node's log ends at {log_end}, but the cluster recorded it as holding {mark} durably: its                      storage went back in time (a restored backup or reverted VM snapshot?). It neither votes nor                      campaigns until it has caught up from the leader"
                );
                self.apply_elections();
            }
        }
    }

    /// `Some((log_end, mark))` while this node's log ends below the highest durability mark
    /// a member told this process of.
    pub fn rewound(&self) -> Option<(u64, u64)> {
        let mark = self.durable_mark_heard.load(std::sync::atomic::Ordering::Relaxed);
        let log_end = self.raft.metrics().borrow_watched().last_log_index.unwrap_or(0);
        haven_core::durability::rewound(log_end, mark).then_some((log_end, mark))
    }

    /// The leader records how far each member holds the log on disk (openraft counts a
    /// follower's entries as matched only once they are flushed there), when that moved.
    async fn record_durable_marks(&self) {
        let recorded = self.state.read().kv.durable().clone();
        self.local.set_durable_marks(&recorded);
        if !self.is_leader() {
            return;
        }
        let metrics = self.metrics();
        let Some(matched) = metrics.replication.as_ref() else {
            return;
        };
        let observed: Vec<haven_core::durability::Observed> = self
            .membership()
            .nodes()
            .map(|(id, node)| haven_core::durability::Observed {
                id: *id,
                incarnation: node.incarnation.clone(),
                durable_index: matched.get(id).cloned().flatten().map(|log_id| log_id.index()),
            })
            .collect();
        if let Some(marks) = haven_core::durability::to_record(&recorded, &observed) {
            if let Err(error) = self.propose_as_leader(Request::new(None, Command::RecordDurable { marks })).await {
                tracing::debug!(%error, "could not record the durability marks yet");
            }
        }
    }

    /// Tells every member this process stopped (call after the Raft core stopped: nothing
    /// goes out under this boot after it), so they accept its successor, a restart, at once
    /// rather than after the boot lease. Best effort: a member that misses it accepts the
    /// successor when the lease runs out.
    pub async fn announce_leaving(&self) {
        let membership = self.membership();
        let farewells = membership.nodes().filter(|(id, _)| **id != self.node_id).map(|(id, node)| {
            let envelope = self.local.envelope(*id, Some(node), PeerRequest::Leaving);
            async move {
                if let Err(error) = self.transport.call(&node.peer_addr, envelope, LEAVING_TIMEOUT).await {
                    tracing::debug!(member = id, %error, "could not say this process stopped");
                }
            }
        });
        futures::future::join_all(farewells).await;
    }

    /// Keeps derived state in step: proposes the cluster id when this node leads a
    /// cluster that has none yet, and records the cluster id durably once known.
    pub async fn housekeeping(&self, recorded_cluster_id: &mut Option<String>) {
        self.record_durable_marks().await;
        let committed_id = self.state.read().kv.cluster_id().map(str::to_string);
        match committed_id {
            None if self.is_leader() => {
                let cluster_id = self.local.cluster_id().unwrap_or_else(new_random_id);
                let request = Request::new(None, Command::InitCluster { cluster_id });
                if let Err(error) = self.propose_as_leader(request).await {
                    tracing::debug!(%error, "could not record the cluster id yet");
                }
            }
            Some(cluster_id) if recorded_cluster_id.as_deref() != Some(cluster_id.as_str()) => {
                self.local.set_cluster_id(&cluster_id);
                let identity = NodeIdentity {
                    node_id: self.node_id,
                    incarnation: self.incarnation.clone(),
                    cluster_id: Some(cluster_id.clone()),
                };
                match identity.save(&self.db) {
                    Ok(()) => {
                        tracing::info!(%cluster_id, "member of cluster");
                        *recorded_cluster_id = Some(cluster_id);
                    }
                    Err(error) => tracing::warn!(%error, "cannot record the cluster id"),
                }
            }
            _ => {}
        }
    }

    /// Before stopping: if this node leads, hand leadership to a caught-up voter so the
    /// cluster does not wait an election timeout.
    pub async fn hand_over_leadership(&self) {
        if !self.is_leader() {
            return;
        }
        let target = {
            let metrics = self.metrics();
            let matched = metrics.replication.clone().unwrap_or_default();
            let matched_index = |id: &NodeId| matched.get(id).cloned().flatten().map(|log_id| log_id.index());
            // The most caught-up reachable voter: it can win the election at once.
            // Data nodes first (a witness would only have to hand over again), then the
            // most caught-up.
            metrics.membership_config.voter_ids().filter(|id| *id != self.node_id && self.is_reachable(*id)).max_by_key(
                |id| {
                    let settings = self.settings_of(*id);
                    (settings.role == haven_core::ha::NodeRole::Data && settings.priority > 0, matched_index(id))
                },
            )
        };
        let Some(target) = target else {
            tracing::info!("stopping leader: no reachable voter to hand over to");
            return;
        };
        tracing::info!(target, "stopping leader: handing leadership over");
        if let Err(error) = self.raft.trigger().transfer_leader(target).await {
            tracing::warn!(%error, "leadership hand-over failed");
            return;
        }
        let handed = self
            .raft
            .wait(Some(HANDOVER_TIMEOUT))
            .metrics(|metrics| metrics.current_leader != Some(self.node_id), "leadership handed over")
            .await;
        match handed {
            Ok(metrics) => tracing::info!(leader = ?metrics.current_leader, "leadership handed over"),
            Err(error) => tracing::warn!(%error, "no successor took over in time; stopping anyway"),
        }
    }
}

/// The node's storage, opened and checked: the redb file (pages, format, every record read
/// from it), the snapshot (its checksums) and that the log continues the snapshot.
fn open_storage(
    config: &NodeConfig,
    backend: haven_store::DatabaseBackend,
    sync: SyncMode,
) -> std::io::Result<(Arc<redb::Database>, NodeIdentity, LogStore, StateMachine)> {
    let db = haven_store::open_database_with_backend(&config.data_dir, backend)?;
    let identity = NodeIdentity::load_or_create(&db, config.node_id)?;
    let log = LogStore::open(db.clone(), &config.data_dir.join(haven_store::DATABASE_FILE), sync)?;
    let state = StateMachine::open(&config.data_dir, config.history_revisions)?;
    haven_store::check_log_continues_snapshot(&config.data_dir, &log, &state)?;
    Ok((db, identity, log, state))
}

/// `CLOCK_MONOTONIC` in nanoseconds: the clock of acknowledgement stamps, shared by every
/// process on this machine (unlike `Instant`, whose value cannot be sent elsewhere).
fn monotonic_ns() -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    if rc != 0 {
        return 0;
    }
    (now.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(now.tv_nsec as u64)
}

/// A command result that the caller did not expect (a programming error, or a request id
/// reused for another command).
fn unexpected_result(what: &str, result: CommandResult) -> RemoteError {
    RemoteError::Rejected {
        status: 500,
        code: "internal".into(),
        message: format!("unexpected answer to {what}: {result:?}"),
    }
}

fn membership_error(
    error: RaftError<haven_store::TypeConfig, ClientWriteError<haven_store::TypeConfig>>,
) -> RemoteError {
    match error {
        RaftError::APIError(ClientWriteError::ForwardToLeader(to)) => RemoteError::NotLeader { leader: to.leader_id },
        RaftError::APIError(ClientWriteError::LogEntryDiscarded(_)) => RemoteError::OutcomeUnknown,
        // Another change still in progress: transient, the caller retries.
        RaftError::APIError(ClientWriteError::ChangeMembershipError(ChangeMembershipError::InProgress(error))) => {
            RemoteError::Unavailable(error.to_string())
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(error)) => {
            RemoteError::Rejected { status: 409, code: "conflict".into(), message: error.to_string() }
        }
        RaftError::APIError(other) => RemoteError::Unavailable(other.to_string()),
        RaftError::Fatal(fatal) => RemoteError::Unavailable(format!("raft stopped: {fatal}")),
    }
}

/// A member's record, as the identity checks (`haven_core::identity::id_conflict`) take it.
pub(crate) fn recorded_member(node: &HavenNode, heard_ms_ago: Option<u64>) -> haven_core::identity::Recorded<'_> {
    haven_core::identity::Recorded {
        incarnation: &node.incarnation,
        addresses: haven_core::identity::Addresses { client_url: &node.client_url, peer_addr: &node.peer_addr },
        heard_ms_ago,
    }
}

/// openraft's configuration from the node's: timing in the operator's terms, pre-vote on,
/// snapshot sizes and timeouts that fit real snapshots.
pub fn raft_config(config: &NodeConfig) -> anyhow::Result<openraft::Config> {
    let (election_min, election_max) = config.timing.election_timeout_ms();
    let raft_config = openraft::Config {
        cluster_name: "haven".into(),
        heartbeat_interval: config.timing.heartbeat_interval_ms(),
        election_timeout_min: election_min,
        election_timeout_max: election_max,
        install_snapshot_timeout: SNAPSHOT_CHUNK_TIMEOUT.as_millis() as u64,
        max_payload_entries: APPEND_ENTRIES_MAX,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(config.snapshot_threshold),
        // Keep a tenth of a snapshot interval of log after each snapshot, so a follower that
        // is briefly behind catches up from the log instead of needing a whole snapshot.
        max_in_snapshot_log_to_keep: config.snapshot_threshold / 10,
        // A node that was partitioned away must not disrupt a healthy leader when it
        // returns: it first asks whether it could win (Raft thesis §9.6).
        enable_pre_vote: Some(true),
        // A restarted leader must not resume its old term without an election: a follower
        // may hold an entry the leader sent before its own fsync and then lost in a crash,
        // and a restored leader would write a different entry under the same log id,
        // forking the replicas (found by the nemesis with power cuts; docs/nemesis.md).
        enable_leader_restore: Some(false),
        ..Default::default()
    };
    raft_config.validate().map_err(|error| anyhow::anyhow!("invalid raft timing: {error}"))
}
