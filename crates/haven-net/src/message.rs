//! The messages nodes exchange.

use haven_core::auth::Credential;
pub use haven_core::identity::BootId;
use haven_core::kv::CommandResult;
use haven_core::kv::Request;
use haven_store::NodeId;
use haven_store::SnapshotMeta;
use haven_store::TypeConfig;
use haven_store::Vote;
use openraft::raft::AppendEntriesRequest;
use openraft::raft::AppendEntriesResponse;
use openraft::raft::SnapshotResponse;
use openraft::raft::TransferLeaderRequest;
use openraft::raft::TransferLeaderResponse;
use openraft::raft::VoteRequest;
use openraft::raft::VoteResponse;
use serde::Deserialize;
use serde::Serialize;

/// One request from one node to another, with who sent it and whom it was meant for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerEnvelope {
    pub from: NodeId,
    pub from_incarnation: String,
    /// The receiver the sender means. 0 when the sender does not know the id yet.
    pub to: NodeId,
    /// The receiver's incarnation as the sender's membership records it; a receiver whose
    /// data dir has another incarnation refuses (it has lost the log that record vouches for).
    pub to_incarnation: Option<String>,
    /// The sender's cluster id, when it has one.
    pub cluster_id: Option<String>,
    pub body: PeerRequest,
    /// The sending process's boot identity (random per process start): a copy of a
    /// member's data dir started elsewhere is a second process of that member, refused while
    /// the first is heard from (see `haven_core::identity`).
    pub from_boot: BootId,
    /// The receiver's boot as the sender last heard it within the lease: a request meant
    /// for one process of a member is never answered (or its vote counted) by another.
    pub to_boot: Option<BootId>,
    /// The receiver's durability mark as the sender's replicated state records it for the
    /// receiver's data dir (`haven_core::durability`): a receiver whose log ends below it has
    /// lost entries it acknowledged (storage that went back in time) and stops voting.
    pub to_durable: Option<u64>,
}

/// What a node asks of another.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum PeerRequest {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<TypeConfig>),
    PreVote(VoteRequest<TypeConfig>),
    TransferLeader(TransferLeaderRequest<TypeConfig>),
    /// One piece of a snapshot; the last one installs it.
    SnapshotChunk(SnapshotChunk),
    /// A client write received by a follower, for the leader to propose. The leader checks
    /// the client's credential itself and proposes the request as that client's; the
    /// server's own commands (cluster id, bootstrap token, audit records) are never
    /// accepted this way.
    Forward {
        request: Request,
        credential: Credential,
    },
    /// A follower asks the leader for a read index (ReadIndex, Raft thesis §6.4).
    ReadIndex,
    /// A join request received by a follower, for the leader to carry out as the client
    /// whose credential it carries (a join or admin token).
    Join {
        request: JoinRequest,
        credential: Credential,
    },
    /// A member removal received by a follower, for the leader to carry out as the client
    /// whose credential it carries (an admin token).
    RemoveMember {
        node_id: NodeId,
        force: bool,
        credential: Credential,
    },
    /// A switchover received by a follower, for the leader to carry out as the client whose
    /// credential it carries.
    Switchover {
        to: Option<NodeId>,
        credential: Credential,
    },
    /// Liveness and progress probe.
    Ping,
    /// An admin token minted offline from the sender's own data dir by its local root
    /// (`haven tokens break-glass`), for the leader to register and record in the audit
    /// log naming the sender. Whoever controls a member's data dir holds its key already;
    /// this is the one thing a member's key asks for in its own name.
    RegisterBreakGlass(BreakGlassToken),
    /// The receiver's state digest after log entry `index`, or after its own last applied
    /// entry when `index` is not in its reach (`haven_core::replica_check`). Last, so older
    /// nodes' variants keep their numbers.
    StateDigest {
        index: u64,
    },
    /// The sending process stopped (its Raft core is down): its successor, a restart of
    /// the same member, is accepted at once (`haven_core::identity::BootTracker::forget`).
    /// Last, so older nodes' variants keep their numbers.
    Leaving,
}

/// An admin token minted offline: everything but the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakGlassToken {
    pub id: String,
    pub name: String,
    pub sha256_hex: String,
    /// When it was minted (ms since the Unix epoch, the minting machine's clock).
    pub minted_ms: u64,
    /// Who minted it (`user@host` as far as that machine knows).
    pub minted_by: String,
}

/// The answer to a switchover: who led, who leads now, how long the hand-over took.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchoverResponse {
    pub from: NodeId,
    pub to: NodeId,
    pub elapsed_ms: u64,
}

/// A piece of a snapshot. Snapshots are sent in chunks of at most `SNAPSHOT_CHUNK_BYTES`
/// so the frame limit does not limit the size of the database. The whole snapshot is an
/// image with checksums of its own (`haven_store::snapshot_file`), checked when the last
/// chunk arrives; each chunk carries the BLAKE3 of its data too, so a damaged chunk is
/// refused as soon as it arrives, naming its offset.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotChunk {
    pub vote: Vote,
    pub meta: SnapshotMeta,
    pub offset: u64,
    pub total_bytes: u64,
    /// BLAKE3 of `data`.
    pub data_hash: [u8; 32],
    pub data: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    pub node_id: NodeId,
    pub client_url: String,
    pub peer_addr: String,
    pub incarnation: String,
    /// The joiner's TLS key fingerprint, recorded in the membership so peers accept it.
    pub fingerprint: String,
    /// Stay a learner (a read replica) instead of becoming a voter.
    pub learner: bool,
    /// Only check and describe the cluster (id, members' keys); change nothing. The joiner
    /// does this first, so it trusts the members' keys before they start replicating to it.
    #[serde(default)]
    pub dry_run: bool,
}

/// The answer to a join: the cluster and its members' keys, which the joiner pins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinResponse {
    pub cluster_id: String,
    /// The joiner is a voter already (otherwise a learner, promoted once caught up unless it
    /// asked to stay one).
    pub voter: bool,
    pub members: Vec<JoinMember>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinMember {
    pub id: NodeId,
    pub client_url: String,
    pub peer_addr: String,
    pub fingerprint: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoveResponse {
    pub removed: NodeId,
    pub warning: Option<String>,
}

/// What a probed node reports about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PingInfo {
    pub node_id: NodeId,
    pub term: u64,
    pub leader: Option<NodeId>,
    pub last_log_index: u64,
    pub applied_index: u64,
    /// The answering process's boot identity.
    pub boot: BootId,
    /// The answering node's wall clock (ms since the Unix epoch) when it answered: the
    /// prober estimates the clock offset from it (`haven_core::clock`).
    pub wall_ms: u64,
}

// The acknowledgement stamp and its header are defined once, in the pure core. Every
// process on one machine reads the same monotonic clock, so stamps of different nodes
// compare there (the nemesis relies on this; across machines only the log id is meaningful).
pub use haven_core::ack::AckStamp;
pub use haven_core::ack::ACK_HEADER;

/// A write the leader committed: what applying it did, and its acknowledgement stamp.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acked {
    pub result: CommandResult,
    pub ack: AckStamp,
}

/// An application-level failure at the remote node, classified so the caller knows what
/// to do with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum RemoteError {
    /// The receiver is not the leader; `leader` is whom it believes leads. Nothing was
    /// proposed, so the request may be sent again.
    #[error("node is not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    /// The request was proposed but leadership was lost before it committed: it may or may
    /// not take effect.
    #[error("the leader changed while the request was in flight; its outcome is unknown")]
    OutcomeUnknown,
    /// The request is wrong and repeating it will not help.
    #[error("{code}: {message}")]
    Rejected { status: u16, code: String, message: String },
    /// The receiver cannot serve now (shutting down, not initialised).
    #[error("unavailable: {0}")]
    Unavailable(String),
}

/// The answer to a `PeerRequest`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum PeerResponse {
    AppendEntries(Result<AppendEntriesResponse<TypeConfig>, String>),
    Vote(Result<VoteResponse<TypeConfig>, String>),
    TransferLeader(Result<TransferLeaderResponse<TypeConfig>, String>),
    /// `None` while chunks are still arriving; the response of the install after the last.
    Snapshot(Result<Option<SnapshotResponse<TypeConfig>>, String>),
    /// The leader's result of a forwarded write, with its acknowledgement stamp.
    Forward(Result<Acked, RemoteError>),
    /// The leader's read index: apply through this log index, then read.
    ReadIndex(Result<u64, RemoteError>),
    Join(Result<JoinResponse, RemoteError>),
    RemoveMember(Result<RemoveResponse, RemoteError>),
    Switchover(Result<SwitchoverResponse, RemoteError>),
    Ping(PingInfo),
    /// The leader registered the break-glass token (or had already).
    RegisterBreakGlass(Result<(), RemoteError>),
    /// The envelope was refused (wrong incarnation, wrong cluster); the reason says why.
    Refused(String),
    /// The receiver knows the sender is no longer a member of its cluster: detached by a
    /// teardown, removed, or left behind by a recovery. The sender acts on it (see
    /// [`Expulsion`]); the envelope was not served.
    Expelled(Expulsion),
    /// `(index, digest)`, `None` before the receiver has applied anything.
    StateDigest(Option<(u64, haven_core::replica_check::StateDigest)>),
    /// A `Leaving` was noted. Last, so older nodes' variants keep their numbers.
    Left,
}

/// Why a node is no longer a member, as a member of its cluster that knows it says. Only
/// believed from a peer whose key the receiver pinned (a member of its membership).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expulsion {
    pub kind: ExpulsionKind,
    /// The cluster the expelled node belonged to.
    pub cluster_id: Option<String>,
    /// The node that says so.
    pub by: NodeId,
    /// What happened, in words, for the expelled node's log and status.
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExpulsionKind {
    /// Detached by teardown `generation`; `kept` continues the cluster alone. The node
    /// stays up, read-only.
    Detached { generation: u64, kept: Option<NodeId> },
    /// Removed from the membership (`haven members remove`, `haven leave`). The node stops.
    Removed,
    /// Its cluster lost its majority and continued on `survivor` as cluster
    /// `new_cluster_id` (`haven recover`); `confirmed_down` were the voters the operator
    /// confirmed gone. The node stops: it must never form the old cluster again.
    RecoveredAway { new_cluster_id: String, survivor: NodeId, confirmed_down: Vec<NodeId> },
}

impl Expulsion {
    /// The API error code a client sees for a request to an expelled node.
    pub fn code(&self) -> &'static str {
        match self.kind {
            ExpulsionKind::Detached { .. } => "detached",
            ExpulsionKind::Removed => "removed",
            ExpulsionKind::RecoveredAway { .. } => "recovered_away",
        }
    }
}

impl PeerRequest {
    /// A short name for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            PeerRequest::AppendEntries(_) => "append-entries",
            PeerRequest::Vote(_) => "vote",
            PeerRequest::PreVote(_) => "pre-vote",
            PeerRequest::TransferLeader(_) => "transfer-leader",
            PeerRequest::SnapshotChunk(_) => "snapshot-chunk",
            PeerRequest::Forward { .. } => "forward",
            PeerRequest::ReadIndex => "read-index",
            PeerRequest::Join { .. } => "join",
            PeerRequest::RemoveMember { .. } => "remove-member",
            PeerRequest::Switchover { .. } => "switchover",
            PeerRequest::Ping => "ping",
            PeerRequest::RegisterBreakGlass(_) => "register-break-glass",
            PeerRequest::StateDigest { .. } => "state-digest",
            PeerRequest::Leaving => "leaving",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The header format docs/http-api.md promises (clients and the nemesis parse it).
    #[test]
    fn ack_stamps_print_as_the_documented_header() {
        let ack = AckStamp { node: 2, term: 7, index: 1234, mono_ns: 5678 };
        assert_eq!(ack.to_string(), "node=2 term=7 index=1234 mono_ns=5678");
        assert_eq!(ACK_HEADER, "haven-ack");
    }
}
