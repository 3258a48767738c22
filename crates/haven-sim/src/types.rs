//! The simulation's openraft type configuration.
//!
//! The same requests, results, node ids and leader ids as Haven's own `TypeConfig`
//! (`haven-store`): `Request`/`CommandResult` from `haven_core::kv`, `u64` node ids, and
//! openraft's default leader id `(term, node)`, under which two nodes may lead in one
//! term one after the other (see `docs/simulation.md`). Only the runtime differs
//! ([`SimRuntime`]) and the node address, which an in-process network does not need.

pub use haven_core::kv::CommandResult;
pub use haven_core::kv::Request;

use crate::runtime::SimRuntime;
use crate::storage::Applied;
use crate::storage::StateMachine;

openraft::declare_raft_types!(
    /// Haven's Raft types on the simulation runtime.
    pub SimTypes:
        D = Request,
        R = CommandResult,
        NodeId = u64,
        Node = openraft::EmptyNode,
        AsyncRuntime = SimRuntime,
);

pub type NodeId = u64;
pub type Raft = openraft::Raft<SimTypes, StateMachine>;
pub type LogId = openraft::alias::LogIdOf<SimTypes>;
pub type Vote = openraft::alias::VoteOf<SimTypes>;
pub type Entry = openraft::alias::EntryOf<SimTypes>;
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<SimTypes>;
/// Snapshots travel in-process as the applied state itself: nothing to encode.
pub type Snapshot = openraft::alias::SnapshotOf<SimTypes, Applied>;
pub type StoredMembership = openraft::alias::StoredMembershipOf<SimTypes>;

/// A leader id as `(term, node)`: the order openraft's `leader_id_adv` uses.
pub fn leader_of(log_id: &LogId) -> (u64, NodeId) {
    (log_id.leader_id.term, log_id.leader_id.node_id)
}
