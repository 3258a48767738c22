//! openraft's network over a `Transport`.

use std::future::Future;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::LazyLock;
use std::sync::Mutex;
use std::sync::MutexGuard;
use std::sync::RwLock;
use std::time::Duration;
use std::time::Instant;

use haven_core::durability::DurableMarks;
use haven_core::identity::BootId;
use haven_core::identity::BootTracker;
use haven_core::limits::SNAPSHOT_CHUNK_BYTES;
use haven_store::HavenNode;
use haven_store::NodeId;
use haven_store::Snapshot;
use haven_store::SnapshotData;
use haven_store::TypeConfig;
use haven_store::Vote;
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
use openraft::OptionalSend;

use crate::log_limit::Level;
use crate::log_limit::RateLimitedLog;
use crate::log_limit::LOG_INTERVAL;
use crate::Expulsion;
use crate::PeerEnvelope;
use crate::PeerRequest;
use crate::PeerResponse;
use crate::SnapshotChunk;
use crate::Transport;
use crate::TransportError;

/// Time allowed for one snapshot chunk to be sent and acknowledged (the last one includes
/// installing the snapshot). openraft's default of 200 ms is far too short for real
/// snapshots; 30 s covers a 4 MiB chunk over a slow WAN link and a large install.
pub const SNAPSHOT_CHUNK_TIMEOUT: Duration = Duration::from_secs(30);

/// Time allowed per MiB of log entries in one AppendEntries, on top of openraft's timeout.
/// openraft gives every append one heartbeat interval (50 ms by default), which suits a
/// heartbeat or a few small writes; a batch of large values (up to 64 x 512 KiB) must also be
/// sent, stored and fsynced by the follower. 100 ms per MiB allows 10 MiB/s for all of that,
/// well below a LAN and a disk, so a follower catching up with large values is never timed
/// out on every batch (which would leave it behind for good, and a cluster that lost another
/// member without a quorum).
pub const APPEND_TIMEOUT_PER_MIB: Duration = Duration::from_millis(100);

/// The bytes a batch of entries carries, roughly: each entry's value and key, or
/// `ENTRY_OVERHEAD_BYTES_MAX` for anything else (membership, bookkeeping).
fn append_payload_bytes(rpc: &AppendEntriesRequest<TypeConfig>) -> usize {
    use haven_core::kv::Command;
    use haven_core::limits::ENTRY_OVERHEAD_BYTES_MAX;
    rpc.entries
        .iter()
        .map(|entry| match &entry.payload {
            openraft::EntryPayload::Normal(request) => match &request.command {
                Command::Put { key, value, .. } => key.len() + value.len() + ENTRY_OVERHEAD_BYTES_MAX,
                _ => ENTRY_OVERHEAD_BYTES_MAX,
            },
            _ => ENTRY_OVERHEAD_BYTES_MAX,
        })
        .sum()
}

/// openraft's timeout for an append, plus [`APPEND_TIMEOUT_PER_MIB`] for what it carries.
pub fn append_timeout(soft_ttl: Duration, rpc: &AppendEntriesRequest<TypeConfig>) -> Duration {
    let mib = append_payload_bytes(rpc).div_ceil(1 << 20) as u32;
    soft_ttl + APPEND_TIMEOUT_PER_MIB * mib
}

/// Who this node is, as stamped on every envelope it sends, and which process of each member
/// it hears (the boot tracker, shared by the peer handler that feeds it and every envelope
/// that names the receiver's boot).
pub struct LocalPeer {
    pub node_id: NodeId,
    pub incarnation: String,
    /// This process's boot identity, drawn at start.
    pub boot: BootId,
    pub cluster_id: RwLock<Option<String>>,
    /// The last expulsion a peer reported (on any request: Raft's, probes, forwards); the
    /// node watches it and acts.
    expelled: tokio::sync::watch::Sender<Option<Expulsion>>,
    boots: Mutex<BootTracker>,
    /// Zero of the tracker's monotonic milliseconds.
    epoch: Instant,
    /// The members' durability marks as this node's replicated state last recorded them
    /// (kept current by the server).
    durable: RwLock<DurableMarks>,
}

impl LocalPeer {
    /// `boot` must be drawn at random for each process start.
    pub fn new(node_id: NodeId, incarnation: String, cluster_id: Option<String>, boot: BootId) -> Arc<LocalPeer> {
        Arc::new(LocalPeer {
            node_id,
            incarnation,
            boot,
            cluster_id: RwLock::new(cluster_id),
            expelled: tokio::sync::watch::channel(None).0,
            boots: Mutex::new(BootTracker::new(node_id, boot)),
            epoch: Instant::now(),
            durable: RwLock::new(DurableMarks::new()),
        })
    }

    /// Records an expulsion a peer reported (the first one of a kind is kept: a removed or
    /// recovered-away node stops at the first).
    pub fn report_expulsion(&self, expulsion: Expulsion) {
        self.expelled.send_if_modified(|current| {
            if current.is_none() {
                *current = Some(expulsion);
                true
            } else {
                false
            }
        });
    }

    /// Follows reported expulsions.
    pub fn expulsions(&self) -> tokio::sync::watch::Receiver<Option<Expulsion>> {
        self.expelled.subscribe()
    }

    pub fn cluster_id(&self) -> Option<String> {
        self.cluster_id.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set_cluster_id(&self, cluster_id: &str) {
        *self.cluster_id.write().unwrap_or_else(|e| e.into_inner()) = Some(cluster_id.to_string());
    }

    /// Milliseconds of the monotonic clock the boot tracker runs on.
    pub fn monotonic_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The boot tracker, to feed it (envelopes and probe answers from members) and read it.
    pub fn boots(&self) -> MutexGuard<'_, BootTracker> {
        self.boots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps the members' durability marks as the replicated state records them.
    pub fn set_durable_marks(&self, marks: &DurableMarks) {
        let mut current = self.durable.write().unwrap_or_else(|e| e.into_inner());
        if *current != *marks {
            *current = marks.clone();
        }
    }

    /// Member `id`'s durability mark for the data dir with `incarnation`, if recorded.
    pub fn durable_mark(&self, id: NodeId, incarnation: &str) -> Option<u64> {
        let marks = self.durable.read().unwrap_or_else(|e| e.into_inner());
        marks.get(&id).filter(|mark| mark.incarnation == incarnation).map(|mark| mark.index)
    }

    /// An envelope to the member `to` as `node` records it.
    pub fn envelope(&self, to: NodeId, node: Option<&HavenNode>, body: PeerRequest) -> PeerEnvelope {
        let to_boot = self.boots().live_boot(to, self.monotonic_ms());
        let to_durable = node.and_then(|node| self.durable_mark(to, &node.incarnation));
        PeerEnvelope {
            from: self.node_id,
            from_incarnation: self.incarnation.clone(),
            to,
            to_incarnation: node.map(|node| node.incarnation.clone()).filter(|incarnation| !incarnation.is_empty()),
            cluster_id: self.cluster_id(),
            body,
            from_boot: self.boot,
            to_boot,
            to_durable,
        }
    }
}

/// Creates one `PeerNetwork` per target for openraft.
pub struct PeerNetworkFactory {
    transport: Arc<dyn Transport>,
    local: Arc<LocalPeer>,
    chunk_damage: Option<Arc<ChunkDamageHook>>,
}

impl PeerNetworkFactory {
    pub fn new(transport: Arc<dyn Transport>, local: Arc<LocalPeer>) -> PeerNetworkFactory {
        PeerNetworkFactory { transport, local, chunk_damage: None }
    }

    /// TEST ONLY (fault tests, `--unsafe-test-mode`): damage the first snapshot chunk this
    /// node sends, once, as `damage` says.
    pub fn damage_first_snapshot_chunk(mut self, damage: ChunkDamage) -> PeerNetworkFactory {
        self.chunk_damage = Some(Arc::new(ChunkDamageHook { damage, used: AtomicBool::new(false) }));
        self
    }
}

impl RaftNetworkFactory<TypeConfig> for PeerNetworkFactory {
    type Network = PeerNetwork;

    async fn new_client(&mut self, target: NodeId, node: &HavenNode) -> PeerNetwork {
        PeerNetwork {
            target,
            node: node.clone(),
            transport: self.transport.clone(),
            local: self.local.clone(),
            chunk_damage: self.chunk_damage.clone(),
        }
    }
}

/// Where a test hook damages a snapshot chunk it sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkDamage {
    /// After the chunk's checksum was computed: damage in transit, which the receiver's
    /// per-chunk check catches.
    AfterChecksum,
    /// Before it: damage in the sender's memory, which only the image's own checksums
    /// (computed when the snapshot was built) can catch.
    BeforeChecksum,
}

/// A [`ChunkDamage`] that fires once per process.
pub struct ChunkDamageHook {
    damage: ChunkDamage,
    used: AtomicBool,
}

impl ChunkDamageHook {
    fn take(&self) -> Option<ChunkDamage> {
        (!self.used.swap(true, Ordering::AcqRel)).then_some(self.damage)
    }
}

/// Flips one bit in the middle of a chunk.
fn damage_chunk(data: &mut [u8]) {
    let middle = data.len() / 2;
    if let Some(byte) = data.get_mut(middle) {
        *byte ^= 0x20;
    }
}

/// openraft's view of one peer.
pub struct PeerNetwork {
    target: NodeId,
    node: HavenNode,
    transport: Arc<dyn Transport>,
    local: Arc<LocalPeer>,
    chunk_damage: Option<Arc<ChunkDamageHook>>,
}

fn rpc_error(error: TransportError) -> RPCError<TypeConfig> {
    if error.not_delivered() {
        RPCError::Unreachable(Unreachable::new(&error))
    } else {
        RPCError::Network(NetworkError::new(&error))
    }
}

fn remote_failed(what: &str, reason: String) -> RPCError<TypeConfig> {
    // The peer answered but could not act (shutting down, refused our envelope): treat it
    // as unreachable so openraft backs off instead of hammering it.
    // The reason is the peer's text, and openraft logs it: escaped, so it cannot forge a line.
    RPCError::Unreachable(Unreachable::from_string(format!(
        "{what} refused by peer: {}",
        crate::log_limit::escaped(&reason)
    )))
}

fn unexpected(what: &str) -> RPCError<TypeConfig> {
    RPCError::Network(NetworkError::from_string(format!("peer sent an unexpected answer to {what}")))
}

/// Failed calls to a member (unreachable, or refused by it): one line per member and
/// `LOG_INTERVAL`, then a count of the rest. openraft retries a dead member's heartbeat every
/// 50 ms and warns about each failure, about 17 lines a second (issue 12), and, once the log
/// has an entry the member lacks, its replication stream's every retry (two lines a second);
/// `haven serve`'s default log filter leaves those warnings out
/// ([`OPENRAFT_FAILED_CALL_LOG_TARGETS`]), and this line says the same once per interval.
static FAILED_CALLS: LazyLock<RateLimitedLog<String>> =
    LazyLock::new(|| RateLimitedLog::new("call to a member failed", Level::Warn, LOG_INTERVAL));

/// The tracing targets of openraft's warnings for every failed call to a member (a
/// heartbeat; a replication stream's append and the progress update after it), which a
/// node's default log filter raises to `error` (see [`FAILED_CALLS`]).
pub const OPENRAFT_FAILED_CALL_LOG_TARGETS: [&str; 3] =
    ["openraft::core::heartbeat", "openraft::replication", "openraft::engine::handler::replication_handler"];

impl PeerNetwork {
    async fn call(&self, body: PeerRequest, timeout: Duration) -> Result<PeerResponse, RPCError<TypeConfig>> {
        let result = self.call_unlogged(body, timeout).await;
        if let Err(error) = &result {
            if let Some(suppressed) = FAILED_CALLS.admit(format!("member {} at {}", self.target, self.node.peer_addr)) {
                tracing::warn!(
                    member = self.target,
                    peer = %self.node.peer_addr,
                    %error,
                    suppressed,
                    "call to a member failed"
                );
            }
        }
        result
    }

    async fn call_unlogged(&self, body: PeerRequest, timeout: Duration) -> Result<PeerResponse, RPCError<TypeConfig>> {
        let envelope = self.local.envelope(self.target, Some(&self.node), body);
        let response = self.transport.call(&self.node.peer_addr, envelope, timeout).await.map_err(rpc_error)?;
        match response {
            PeerResponse::Refused(reason) => Err(remote_failed("request", reason)),
            PeerResponse::Expelled(expulsion) => {
                let reason = expulsion.message.clone();
                self.local.report_expulsion(expulsion);
                Err(remote_failed("request", reason))
            }
            response => Ok(response),
        }
    }

    /// A granted vote whose voter's log ends below the durability mark this node's state
    /// records for it is not counted: the voter lost entries it acknowledged (its storage
    /// went back in time), and a quorum that counts it may lack acknowledged writes. Such a
    /// voter refuses votes itself once it learns its mark; this covers a voter that has not.
    fn refuse_rewound_voter(
        &self,
        response: VoteResponse<TypeConfig>,
        what: &str,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        if !response.vote_granted {
            return Ok(response);
        }
        let Some(mark) = self.local.durable_mark(self.target, &self.node.incarnation) else {
            return Ok(response);
        };
        let log_end = response.last_log_id.as_ref().map_or(0, |log_id| log_id.index());
        if haven_core::durability::rewound(log_end, mark) {
            return Err(remote_failed(
                what,
                format!(
                    "node {}'s log ends at {log_end}, below the {mark} it was recorded as holding durably (its storage \
                     went back in time); its vote is not counted",
                    self.target
                ),
            ));
        }
        Ok(response)
    }

    async fn send_snapshot(
        &self,
        vote: Vote,
        snapshot: Snapshot,
    ) -> Result<SnapshotResponse<TypeConfig>, RPCError<TypeConfig>> {
        let data = snapshot.snapshot.into_inner();
        let total_bytes = data.len() as u64;
        let mut offset = 0usize;
        loop {
            let end = (offset + SNAPSHOT_CHUNK_BYTES).min(data.len());
            let mut chunk_data = data[offset..end].to_vec();
            let damage = self.chunk_damage.as_ref().and_then(|damage| damage.take());
            if damage == Some(ChunkDamage::BeforeChecksum) {
                damage_chunk(&mut chunk_data);
            }
            let data_hash = haven_store::integrity::hash(&chunk_data);
            if damage == Some(ChunkDamage::AfterChecksum) {
                damage_chunk(&mut chunk_data);
            }
            if damage.is_some() {
                tracing::warn!(
                    target = self.target,
                    offset,
                    ?damage,
                    "TEST HOOK: damaged a snapshot chunk on its way out"
                );
            }
            let chunk = SnapshotChunk {
                vote,
                meta: snapshot.meta.clone(),
                offset: offset as u64,
                total_bytes,
                data_hash,
                data: chunk_data,
            };
            let response = self.call(PeerRequest::SnapshotChunk(chunk), SNAPSHOT_CHUNK_TIMEOUT).await?;
            let PeerResponse::Snapshot(result) = response else {
                return Err(unexpected("snapshot-chunk"));
            };
            match result.map_err(|reason| remote_failed("snapshot", reason))? {
                Some(done) => return Ok(done),
                None if end == data.len() => return Err(unexpected("the last snapshot chunk")),
                None => offset = end,
            }
        }
    }
}

impl RaftNetworkV2<TypeConfig> for PeerNetwork {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let timeout = append_timeout(option.soft_ttl(), &rpc);
        match self.call(PeerRequest::AppendEntries(rpc), timeout).await? {
            PeerResponse::AppendEntries(result) => result.map_err(|reason| remote_failed("append-entries", reason)),
            _ => Err(unexpected("append-entries")),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.call(PeerRequest::Vote(rpc), option.soft_ttl()).await? {
            PeerResponse::Vote(result) => {
                self.refuse_rewound_voter(result.map_err(|reason| remote_failed("vote", reason))?, "vote")
            }
            _ => Err(unexpected("vote")),
        }
    }

    /// A real pre-vote round trip: the default implementation grants every pre-vote, which
    /// would let a partitioned node that comes back disrupt a healthy leader.
    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.call(PeerRequest::PreVote(rpc), option.soft_ttl()).await? {
            PeerResponse::Vote(result) => {
                self.refuse_rewound_voter(result.map_err(|reason| remote_failed("pre-vote", reason))?, "pre-vote")
            }
            _ => Err(unexpected("pre-vote")),
        }
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            result = self.send_snapshot(vote, snapshot) => result.map_err(|error| match error {
                RPCError::Unreachable(e) => StreamingError::Unreachable(e),
                RPCError::Network(e) => StreamingError::Network(e),
                RPCError::Timeout(e) => StreamingError::Timeout(e),
                RPCError::RemoteError(e) => StreamingError::Network(NetworkError::from_string(e.to_string())),
            }),
        }
    }

    /// A real leadership hand-over: the default implementation reports the target as
    /// unreachable, so a switchover would never happen.
    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.call(PeerRequest::TransferLeader(req), option.soft_ttl()).await? {
            PeerResponse::TransferLeader(result) => result.map_err(|reason| remote_failed("transfer-leader", reason)),
            _ => Err(unexpected("transfer-leader")),
        }
    }
}

#[cfg(test)]
mod tests {
    use haven_core::kv::Command;
    use haven_core::kv::Request;
    use haven_core::limits::APPEND_ENTRIES_MAX;
    use haven_core::limits::VALUE_BYTES_MAX;
    use haven_store::Entry;
    use openraft::EntryPayload;

    use super::*;

    fn append_of(values: usize, value_bytes: usize) -> AppendEntriesRequest<TypeConfig> {
        let entries = (0..values as u64)
            .map(|index| {
                let command = Command::Put { key: "k".into(), value: vec![0; value_bytes], prev_revision: None };
                Entry {
                    log_id: openraft::testing::log_id::<TypeConfig>(1, 1, index),
                    payload: EntryPayload::Normal(Request::new(None, command)),
                }
            })
            .collect();
        AppendEntriesRequest { vote: Vote::new(1, 1), prev_log_id: None, entries, leader_commit: None }
    }

    /// A heartbeat keeps openraft's timeout; a full batch of the largest values gets time for
    /// its 32 MiB.
    #[test]
    fn append_timeouts_grow_with_what_the_append_carries() {
        let soft = Duration::from_millis(37);
        assert_eq!(append_timeout(soft, &append_of(0, 0)), soft);
        assert_eq!(append_timeout(soft, &append_of(3, 10)), soft + APPEND_TIMEOUT_PER_MIB);
        let full = append_timeout(soft, &append_of(APPEND_ENTRIES_MAX as usize, VALUE_BYTES_MAX));
        assert!(full >= soft + APPEND_TIMEOUT_PER_MIB * 32, "{full:?}");
    }
}
