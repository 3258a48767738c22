//! The Raft type configuration shared by every Haven crate.

use std::io::Cursor;

use serde::Deserialize;
use serde::Serialize;

pub use haven_core::kv::CommandResult;
pub use haven_core::kv::Request;

pub type NodeId = u64;

/// What the cluster knows about a member; stored in openraft's membership, so every
/// node knows how to reach every other one and which data dir (incarnation) it expects.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HavenNode {
    /// Base URL of the member's HTTP API.
    pub client_url: String,
    /// `host:port` of the member's peer listener.
    pub peer_addr: String,
    /// Random id of the member's data dir; a different one means the disk was wiped.
    pub incarnation: String,
    /// `sha256:` fingerprint of the member's TLS key: peers accept exactly the keys of the
    /// current membership (empty only on `--insecure-dev` clusters).
    pub fingerprint: String,
    /// Asked to stay a learner (a read replica); otherwise it is promoted to voter once it
    /// has caught up, while there are fewer than 7 voters.
    #[serde(default)]
    pub learner: bool,
}

impl std::fmt::Display for HavenNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (peer {})", self.client_url, self.peer_addr)
    }
}

openraft::declare_raft_types!(
    /// Haven's Raft types: requests are KV commands, nodes are `HavenNode`s.
    pub TypeConfig:
        D = Request,
        R = CommandResult,
        NodeId = NodeId,
        Node = HavenNode,
);

/// Snapshots are passed around as whole byte buffers; the peer layer chunks them.
pub type SnapshotData = Cursor<Vec<u8>>;

pub type Raft = openraft::Raft<TypeConfig, crate::StateMachine>;
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
pub type Entry = openraft::alias::EntryOf<TypeConfig>;
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
pub type Snapshot = openraft::alias::SnapshotOf<TypeConfig, SnapshotData>;
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
pub type Membership = openraft::Membership<NodeId, HavenNode>;
