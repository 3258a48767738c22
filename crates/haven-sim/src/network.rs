//! The simulated network: every node-to-node RPC goes through [`Net::call`], which decides
//! from the seed whether the request and its reply arrive, and when.
//!
//! ```text
//!   node A's openraft ── RaftNetworkV2 (SimNetwork) ──▶ Net::call(A, B, rpc, ttl)
//!        │ A paused? hold until it resumes (a stopped process sends nothing)
//!        │ link A→B cut, or the packet lost?  the request vanishes; A times out
//!        ▼ otherwise: a delivery task sleeps one link delay...
//!   B paused? held until B resumes (then handled late, like a SIGCONT'd process)
//!   B down?   "connection refused" comes back
//!   B's Raft handles it on B's clock ── the reply takes the same way back (B→A may be cut)
//! ```
//!
//! Each message draws its own delay, so messages on one link overtake each other
//! (reordering). A request that was delivered still takes effect when its reply is lost
//! or arrives after the caller gave up, as on a real network.
//!
//! The `ForgedAppendAcks` mutant answers "success" for every append-entries request the
//! network lost, as a proxy that acknowledges on behalf of an unreachable peer would: an
//! isolated leader then believes a quorum holds its entries.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::MutexGuard;
use std::time::Duration;

use openraft::errors::NetworkError;
use openraft::errors::RPCError;
use openraft::errors::ReplicationClosed;
use openraft::errors::StreamingError;
use openraft::errors::Unreachable;
use openraft::network::v2::RaftNetworkV2;
use openraft::network::RPCOption;
use openraft::network::RaftNetworkFactory;
use openraft::raft::AppendEntriesRequest;
use openraft::raft::AppendEntriesResponse;
use openraft::raft::SnapshotResponse;
use openraft::raft::TransferLeaderRequest;
use openraft::raft::TransferLeaderResponse;
use openraft::raft::VoteRequest;
use openraft::raft::VoteResponse;
use openraft::AsyncRuntime;
use openraft::OptionalSend;
use openraft::ReadPolicy;
use tokio::sync::oneshot;
use tokio::sync::Notify;

use crate::rng::SimRng;
use crate::runtime::NodeClock;
use crate::runtime::SimRuntime;
use crate::storage::Applied;
use crate::storage::StateMachine;
use crate::trace;
use crate::trace::Trace;
use crate::types::NodeId;
use crate::types::Raft;
use crate::types::SimTypes;
use crate::types::Snapshot;
use crate::types::Vote;

/// A healthy link: 0.1-2 ms one way, as on one LAN.
pub const BASE_DELAY_US_MIN: u64 = 100;
pub const BASE_DELAY_US_MAX: u64 = 2_000;
/// One message in fifty takes up to five times the current maximum delay, so that messages
/// on one link overtake each other now and then even on a healthy network.
const DELAY_SPIKE_PERCENT: u64 = 2;
const DELAY_SPIKE_FACTOR: u64 = 5;

/// How the links currently behave (the worst of all active degradations).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkQuality {
    pub delay_us_min: u64,
    pub delay_us_max: u64,
    pub loss_ppm: u64,
}

impl LinkQuality {
    pub const HEALTHY: LinkQuality =
        LinkQuality { delay_us_min: BASE_DELAY_US_MIN, delay_us_max: BASE_DELAY_US_MAX, loss_ppm: 0 };

    fn worst(self, other: LinkQuality) -> LinkQuality {
        LinkQuality {
            delay_us_min: self.delay_us_min.max(other.delay_us_min),
            delay_us_max: self.delay_us_max.max(other.delay_us_max),
            loss_ppm: self.loss_ppm.max(other.loss_ppm),
        }
    }
}

/// What a running node offers the network and the clients.
#[derive(Clone)]
pub struct Endpoint {
    pub raft: Raft,
    pub state_machine: StateMachine,
    pub clock: Arc<NodeClock>,
}

struct NodeState {
    endpoint: Option<Endpoint>,
    paused: bool,
    resumed: Arc<Notify>,
}

/// Message counts for the run's summary.
#[derive(Debug, Clone, Copy, Default)]
pub struct NetStats {
    pub sent: u64,
    pub delivered: u64,
    pub lost: u64,
    pub refused: u64,
    pub forged: u64,
}

struct NetState {
    rng: SimRng,
    nodes: BTreeMap<NodeId, NodeState>,
    /// Cut directed links, by the fault that cut them (faults overlap and heal apart).
    cuts: BTreeMap<u64, BTreeSet<(NodeId, NodeId)>>,
    /// Degraded link quality, by the fault that degraded it.
    degradations: BTreeMap<u64, LinkQuality>,
    stats: NetStats,
}

impl NetState {
    fn is_cut(&self, from: NodeId, to: NodeId) -> bool {
        self.cuts.values().any(|links| links.contains(&(from, to)))
    }

    fn quality(&self) -> LinkQuality {
        self.degradations.values().fold(LinkQuality::HEALTHY, |worst, quality| worst.worst(*quality))
    }

    /// The fate of one message on `from → to` right now: lost, or delivered after a delay.
    fn fate(&mut self, from: NodeId, to: NodeId) -> Option<Duration> {
        let quality = self.quality();
        if self.is_cut(from, to) || self.rng.chance_ppm(quality.loss_ppm) {
            self.stats.lost += 1;
            return None;
        }
        let mut delay_us = self.rng.range(quality.delay_us_min, quality.delay_us_max);
        if self.rng.chance_percent(DELAY_SPIKE_PERCENT) {
            delay_us = self.rng.range(delay_us, quality.delay_us_max * DELAY_SPIKE_FACTOR);
        }
        Some(Duration::from_micros(delay_us))
    }
}

/// A request between nodes. `ReadIndex` is Haven's own: a follower asks the leader for
/// the index a linearizable read must wait for (as `haven-server`'s peer protocol does).
pub enum Rpc {
    Append(AppendEntriesRequest<SimTypes>),
    Vote(VoteRequest<SimTypes>),
    PreVote(VoteRequest<SimTypes>),
    TransferLeader(TransferLeaderRequest<SimTypes>),
    Snapshot(Vote, Box<Snapshot>),
    ReadIndex,
}

impl Rpc {
    fn describe(&self) -> String {
        let index = |log_id: Option<&crate::types::LogId>| log_id.map_or("-".to_string(), |l| l.to_string());
        match self {
            Rpc::Append(request) => format!(
                "append vote={} prev={} n={} commit={}",
                request.vote,
                index(request.prev_log_id.as_ref()),
                request.entries.len(),
                index(request.leader_commit.as_ref())
            ),
            Rpc::Vote(request) => format!("vote {request}"),
            Rpc::PreVote(request) => format!("pre-vote {request}"),
            Rpc::TransferLeader(request) => format!("transfer-leader to {}", request.to_node_id()),
            Rpc::Snapshot(vote, snapshot) => {
                format!("snapshot vote={vote} last={}", index(snapshot.meta.last_log_id.as_ref()))
            }
            Rpc::ReadIndex => "read-index".to_string(),
        }
    }
}

pub enum Reply {
    Append(AppendEntriesResponse<SimTypes>),
    Vote(VoteResponse<SimTypes>),
    TransferLeader(TransferLeaderResponse<SimTypes>),
    Snapshot(SnapshotResponse<SimTypes>),
    /// The read index, or why the node could not give one (not the leader, no quorum).
    ReadIndex(Result<u64, String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// Connection refused: the target is down. Certainly not delivered.
    Unreachable,
    /// No answer in time: the request may or may not have taken effect.
    Timeout,
    /// The target's Raft has stopped (it is crashing).
    Remote(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Unreachable => write!(f, "connection refused"),
            CallError::Timeout => write!(f, "timed out"),
            CallError::Remote(reason) => write!(f, "remote failed: {reason}"),
        }
    }
}

impl std::error::Error for CallError {}

/// The simulated network. One per run; shared by every node, client and the driver.
pub struct Net {
    state: Mutex<NetState>,
    trace: Arc<Trace>,
    forge_append_acks: bool,
}

impl Net {
    pub fn new(rng: SimRng, trace: Arc<Trace>, forge_append_acks: bool) -> Arc<Net> {
        Arc::new(Net {
            state: Mutex::new(NetState {
                rng,
                nodes: BTreeMap::new(),
                cuts: BTreeMap::new(),
                degradations: BTreeMap::new(),
                stats: NetStats::default(),
            }),
            trace,
            forge_append_acks,
        })
    }

    fn lock(&self) -> MutexGuard<'_, NetState> {
        // Plain maps and counters: consistent even after a panic elsewhere.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn stats(&self) -> NetStats {
        self.lock().stats
    }

    /// Sets (or, with `None`, clears: the node crashed or stopped) what `node` serves.
    pub fn set_endpoint(&self, node: NodeId, endpoint: Option<Endpoint>) {
        let mut state = self.lock();
        let entry = state.nodes.entry(node).or_insert_with(|| NodeState {
            endpoint: None,
            paused: false,
            resumed: Arc::new(Notify::new()),
        });
        entry.endpoint = endpoint;
    }

    pub fn endpoint(&self, node: NodeId) -> Option<Endpoint> {
        self.lock().nodes.get(&node).and_then(|n| n.endpoint.clone())
    }

    pub fn set_paused(&self, node: NodeId, paused: bool) {
        let resumed = {
            let mut state = self.lock();
            let Some(entry) = state.nodes.get_mut(&node) else { return };
            entry.paused = paused;
            entry.resumed.clone()
        };
        if !paused {
            resumed.notify_waiters();
        }
    }

    pub fn is_paused(&self, node: NodeId) -> bool {
        self.lock().nodes.get(&node).is_some_and(|n| n.paused)
    }

    /// Waits while `node` is paused.
    pub async fn wait_running(&self, node: NodeId) {
        loop {
            let resumed = {
                let state = self.lock();
                match state.nodes.get(&node) {
                    Some(entry) if entry.paused => entry.resumed.clone(),
                    _ => return,
                }
            };
            let notified = resumed.notified();
            tokio::pin!(notified);
            // Registered before the second look, so a resume in between is not missed.
            notified.as_mut().enable();
            if !self.is_paused(node) {
                return;
            }
            notified.await;
        }
    }

    pub fn cut(&self, fault: u64, links: BTreeSet<(NodeId, NodeId)>) {
        self.lock().cuts.insert(fault, links);
    }

    pub fn degrade(&self, fault: u64, quality: LinkQuality) {
        self.lock().degradations.insert(fault, quality);
    }

    /// Undoes whatever fault `fault` did to the links.
    pub fn heal(&self, fault: u64) {
        let mut state = self.lock();
        state.cuts.remove(&fault);
        state.degradations.remove(&fault);
    }

    pub fn heal_all(&self) {
        let mut state = self.lock();
        state.cuts.clear();
        state.degradations.clear();
    }

    pub fn is_cut(&self, from: NodeId, to: NodeId) -> bool {
        self.lock().is_cut(from, to)
    }

    /// Sends `rpc` from `from` to `to` and waits at most `timeout` for the reply.
    pub async fn call(
        self: &Arc<Self>,
        from: NodeId,
        to: NodeId,
        rpc: Rpc,
        timeout: Duration,
    ) -> Result<Reply, CallError> {
        self.wait_running(from).await;
        let deadline = tokio::time::Instant::now() + timeout;
        let description = rpc.describe();
        let is_append = matches!(rpc, Rpc::Append(_));
        let fate = {
            let mut state = self.lock();
            state.stats.sent += 1;
            state.fate(from, to)
        };
        let Some(delay) = fate else {
            if self.forge_append_acks && is_append {
                self.lock().stats.forged += 1;
                trace!(self.trace, "net {from}->{to} {description}: lost; FORGED success");
                tokio::time::sleep(Duration::from_micros(BASE_DELAY_US_MAX)).await;
                return Ok(Reply::Append(AppendEntriesResponse::Success));
            }
            trace!(self.trace, "net {from}->{to} {description}: lost");
            tokio::time::sleep_until(deadline).await;
            return Err(CallError::Timeout);
        };
        trace!(self.trace, "net {from}->{to} {description}: sent, {}us", delay.as_micros());
        let (reply_tx, reply_rx) = oneshot::channel();
        let net = self.clone();
        crate::runtime::spawn(async move { net.deliver(from, to, rpc, delay, reply_tx).await });
        match tokio::time::timeout_at(deadline, reply_rx).await {
            Ok(Ok(reply)) => reply,
            // The request or its reply was lost on the way: silence until the deadline.
            Ok(Err(_)) => {
                tokio::time::sleep_until(deadline).await;
                Err(CallError::Timeout)
            }
            Err(_) => Err(CallError::Timeout),
        }
    }

    async fn deliver(
        self: Arc<Self>,
        from: NodeId,
        to: NodeId,
        rpc: Rpc,
        delay: Duration,
        reply_tx: oneshot::Sender<Result<Reply, CallError>>,
    ) {
        tokio::time::sleep(delay).await;
        if self.is_cut(from, to) {
            self.lock().stats.lost += 1;
            trace!(self.trace, "net {from}->{to}: cut in flight");
            return;
        }
        // A stopped process reads its socket only once it runs again.
        self.wait_running(to).await;
        let result = match self.endpoint(to) {
            None => {
                self.lock().stats.refused += 1;
                Err(CallError::Unreachable)
            }
            Some(endpoint) => {
                self.lock().stats.delivered += 1;
                let clock = endpoint.clock.clone();
                clock.scope(handle(endpoint, rpc)).await
            }
        };
        let fate = self.lock().fate(to, from);
        let Some(delay) = fate else {
            trace!(self.trace, "net {to}->{from}: reply lost");
            return;
        };
        trace!(
            self.trace,
            "net {to}->{from}: reply {}, {}us",
            if result.is_ok() { "ok" } else { "error" },
            delay.as_micros()
        );
        tokio::time::sleep(delay).await;
        if self.is_cut(to, from) {
            self.lock().stats.lost += 1;
            return;
        }
        self.wait_running(from).await;
        let _ = reply_tx.send(result);
    }
}

fn remote(error: impl std::fmt::Display) -> CallError {
    CallError::Remote(error.to_string())
}

async fn handle(endpoint: Endpoint, rpc: Rpc) -> Result<Reply, CallError> {
    let raft = &endpoint.raft;
    match rpc {
        Rpc::Append(request) => raft.append_entries(request).await.map(Reply::Append).map_err(remote),
        Rpc::Vote(request) => raft.vote(request).await.map(Reply::Vote).map_err(remote),
        Rpc::PreVote(request) => raft.pre_vote(request).await.map(Reply::Vote).map_err(remote),
        Rpc::TransferLeader(request) => {
            raft.handle_transfer_leader(request).await.map(Reply::TransferLeader).map_err(remote)
        }
        Rpc::Snapshot(vote, snapshot) => {
            raft.install_full_snapshot(vote, *snapshot).await.map(Reply::Snapshot).map_err(remote)
        }
        Rpc::ReadIndex => Ok(Reply::ReadIndex(match raft.get_read_linearizer(ReadPolicy::ReadIndex).await {
            Ok(linearizer) => Ok(linearizer.read_log_id().index()),
            Err(error) => Err(error.to_string()),
        })),
    }
}

/// openraft's network factory for one node.
pub struct SimNetworkFactory {
    net: Arc<Net>,
    from: NodeId,
}

impl SimNetworkFactory {
    pub fn new(net: Arc<Net>, from: NodeId) -> SimNetworkFactory {
        SimNetworkFactory { net, from }
    }
}

impl RaftNetworkFactory<SimTypes> for SimNetworkFactory {
    type Network = SimNetwork;

    async fn new_client(&mut self, target: NodeId, _node: &openraft::EmptyNode) -> SimNetwork {
        SimNetwork { net: self.net.clone(), from: self.from, to: target }
    }
}

/// openraft's view of one peer.
pub struct SimNetwork {
    net: Arc<Net>,
    from: NodeId,
    to: NodeId,
}

fn rpc_error(error: CallError) -> RPCError<SimTypes> {
    match error {
        // Refused or stopped: openraft backs off before trying again.
        CallError::Unreachable | CallError::Remote(_) => RPCError::Unreachable(Unreachable::new(&error)),
        CallError::Timeout => RPCError::Network(NetworkError::new(&error)),
    }
}

fn unexpected(what: &str) -> RPCError<SimTypes> {
    RPCError::Network(NetworkError::from_string(format!("unexpected reply to {what}")))
}

impl SimNetwork {
    async fn call(&self, rpc: Rpc, timeout: Duration) -> Result<Reply, RPCError<SimTypes>> {
        self.net.call(self.from, self.to, rpc, timeout).await.map_err(rpc_error)
    }
}

impl RaftNetworkV2<SimTypes> for SimNetwork {
    type SnapshotData = Applied;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<SimTypes>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<SimTypes>, RPCError<SimTypes>> {
        match self.call(Rpc::Append(rpc), option.hard_ttl()).await? {
            Reply::Append(response) => Ok(response),
            _ => Err(unexpected("append-entries")),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<SimTypes>,
        option: RPCOption,
    ) -> Result<VoteResponse<SimTypes>, RPCError<SimTypes>> {
        match self.call(Rpc::Vote(rpc), option.hard_ttl()).await? {
            Reply::Vote(response) => Ok(response),
            _ => Err(unexpected("vote")),
        }
    }

    /// A real pre-vote round trip, as Haven's network has (the default grants everything).
    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<SimTypes>,
        option: RPCOption,
    ) -> Result<VoteResponse<SimTypes>, RPCError<SimTypes>> {
        match self.call(Rpc::PreVote(rpc), option.hard_ttl()).await? {
            Reply::Vote(response) => Ok(response),
            _ => Err(unexpected("pre-vote")),
        }
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<SimTypes>, StreamingError<SimTypes>> {
        let send = self.call(Rpc::Snapshot(vote, Box::new(snapshot)), option.hard_ttl());
        // openraft's biased select (not `tokio::select!`, whose branch order is random).
        match SimRuntime::select2(cancel, send).await {
            openraft_rt::Select2::First(closed) => Err(StreamingError::Closed(closed)),
            openraft_rt::Select2::Second(Ok(Reply::Snapshot(response))) => Ok(response),
            openraft_rt::Select2::Second(Ok(_)) => {
                Err(StreamingError::Network(NetworkError::from_string("unexpected reply to snapshot".to_string())))
            }
            openraft_rt::Select2::Second(Err(error)) => Err(match error {
                RPCError::Unreachable(e) => StreamingError::Unreachable(e),
                RPCError::Network(e) => StreamingError::Network(e),
                RPCError::Timeout(e) => StreamingError::Timeout(e),
                RPCError::RemoteError(e) => StreamingError::Network(NetworkError::from_string(e.to_string())),
            }),
        }
    }

    /// A real hand-over, as Haven's network has (the default reports the peer unreachable).
    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<SimTypes>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<SimTypes>, RPCError<SimTypes>> {
        match self.call(Rpc::TransferLeader(req), option.hard_ttl()).await? {
            Reply::TransferLeader(response) => Ok(response),
            _ => Err(unexpected("transfer-leader")),
        }
    }
}
