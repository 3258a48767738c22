//! What the server tells the responder about the cluster: the view.
//!
//! ```text
//!   server (Raft metrics, health checks) ──▶ DnsView { members, primary, partitioned }
//!                                                 │ Responder::publish
//!                                                 ▼
//!                                      every later query is answered from it
//! ```
//!
//! The server pushes a new view whenever the primary, a member's health or the membership
//! changes; the responder never asks. A view says `partitioned` when this node cannot
//! vouch for who the primary is (it has lost quorum, or has not yet heard from the
//! cluster): such a node must not advertise anyone, least of all itself, so the responder
//! stops answering for the alias and resolvers ask another node's responder.

use std::net::IpAddr;

use serde::Deserialize;
use serde::Serialize;

/// The cluster as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsView {
    /// Every member that may serve clients (data nodes; a witness holds no data and is
    /// left out by the server).
    pub members: Vec<MemberView>,
    /// The primary's node id, when this node knows one.
    pub primary: Option<u64>,
    /// True when this node has lost quorum or has no current knowledge of the primary.
    pub partitioned: bool,
}

/// One member: its id, the addresses clients reach it at, whether it is healthy, and the
/// ports it serves clients and agents on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView {
    pub id: u64,
    pub addresses: Vec<IpAddr>,
    pub healthy: bool,
    pub client_port: u16,
    pub agent_port: u16,
}

impl DnsView {
    /// The view a responder starts with, before the server has said anything: it knows
    /// nothing, so it answers for no one.
    pub fn unknown() -> DnsView {
        DnsView { members: Vec::new(), primary: None, partitioned: true }
    }

    /// The member with this id.
    pub fn member(&self, id: u64) -> Option<&MemberView> {
        self.members.iter().find(|member| member.id == id)
    }

    /// The primary, if known and healthy.
    pub fn healthy_primary(&self) -> Option<&MemberView> {
        self.primary.and_then(|id| self.member(id)).filter(|member| member.healthy)
    }
}
