//! High availability decisions: failure detection, candidacy gating, failback and witness
//! hand-off, the HA status, and the cluster-wide HA configuration with draft and apply.
//!
//! ```text
//!   haven-server (IO shell): timers, target probes, Raft metrics, the replicated config
//!        │ facts + now_ms                                         ▲ decisions
//!        ▼                                                        │
//!   config     draft + current version ──▶ apply_draft ──▶ new config, diff, restarts
//!   detection  profile | ping interval × failed pings ──▶ Raft heartbeat, election timeouts
//!   gating     ping-target probes ──▶ may campaign | withheld (own network at fault)
//!   failback   members, leader, priorities ──▶ stay | transfer leadership to node N
//!   status     what this node sees ──▶ stable | degraded | no-quorum | failing-over | ...
//! ```
//!
//! Safety comes from Raft alone: a write is committed by a majority, a leader without a
//! quorum acknowledges nothing, and leadership moves only through Raft's own transfer.
//! Nothing here can create a second primary. These functions only choose *who* should
//! lead (failback, hand-off), *whether* a node may stand for election at all (gating), and
//! *how fast* failures are detected; each takes time as `now_ms` from the shell and
//! returns a decision, so the tests below feed facts and assert decisions.

use serde::Deserialize;
use serde::Serialize;

pub mod config;
pub mod detection;
pub mod elections;
pub mod failback;
pub mod gating;
pub mod leadership;
pub mod status;
pub mod syntax;

/// What a node holds. Seed 002's roles (standalone / primary / secondary) are not stored:
/// who is primary is whoever Raft elected, and standalone is a topology (one voter).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    /// Holds the replicated files and roles; may be the primary.
    #[default]
    Data,
    /// A voter that holds the Raft log but no files and no roles; never the primary. It
    /// lets a pair survive the loss of either node or a partition between them.
    Witness,
}

impl NodeRole {
    pub fn name(self) -> &'static str {
        match self {
            NodeRole::Data => "data",
            NodeRole::Witness => "witness",
        }
    }
}

impl std::fmt::Display for NodeRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether a member votes in Raft. Learners replicate but neither vote nor lead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberKind {
    Voter,
    Learner,
}

impl MemberKind {
    pub fn name(self) -> &'static str {
        match self {
            MemberKind::Voter => "voter",
            MemberKind::Learner => "learner",
        }
    }
}

impl std::fmt::Display for MemberKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// "node 1", "nodes 1, 2 and 3": node lists in reasons read as words.
pub(crate) fn nodes_in_words(ids: &[u64]) -> String {
    match ids {
        [] => "no node".to_string(),
        [one] => format!("node {one}"),
        [init @ .., last] => {
            let init: Vec<String> = init.iter().map(u64::to_string).collect();
            format!("nodes {} and {last}", init.join(", "))
        }
    }
}

/// The name a hook script (seed 002's HAAdminAlertScript) gets for member `id`: its host,
/// as seed 002 passes hosts, unless another member shares that host (several nodes on one
/// machine, as `haven dev` runs them: every argument was `127.0.0.1`, issue 14); then the
/// node's name, `n<id>` (`haven dev`'s names), so the script can tell them apart.
/// `hosts` holds every member's id and host.
pub fn hook_host(id: u64, hosts: &[(u64, String)]) -> String {
    let Some((_, host)) = hosts.iter().find(|(member, _)| *member == id) else {
        return format!("n{id}");
    };
    let shared = hosts.iter().any(|(other, other_host)| *other != id && other_host == host);
    if shared {
        format!("n{id}")
    } else {
        host.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_hosts_tell_members_apart() {
        let spread = [(1, "10.0.0.1".to_string()), (2, "10.0.0.2".to_string())];
        assert_eq!(hook_host(2, &spread), "10.0.0.2");
        let one_machine = [(1, "127.0.0.1".to_string()), (2, "127.0.0.1".to_string()), (3, "10.0.0.3".to_string())];
        assert_eq!(hook_host(1, &one_machine), "n1");
        assert_eq!(hook_host(2, &one_machine), "n2");
        assert_eq!(hook_host(3, &one_machine), "10.0.0.3");
        assert_eq!(hook_host(9, &one_machine), "n9", "not a member (any more)");
    }

    #[test]
    fn node_lists_read_as_words() {
        assert_eq!(nodes_in_words(&[]), "no node");
        assert_eq!(nodes_in_words(&[3]), "node 3");
        assert_eq!(nodes_in_words(&[1, 2]), "nodes 1 and 2");
        assert_eq!(nodes_in_words(&[1, 2, 5]), "nodes 1, 2 and 5");
    }

    #[test]
    fn roles_and_kinds_serialize_in_lowercase() {
        assert_eq!(serde_json::to_string(&NodeRole::Witness).unwrap(), "\"witness\"");
        assert_eq!(serde_json::from_str::<NodeRole>("\"data\"").unwrap(), NodeRole::Data);
        assert_eq!(serde_json::to_string(&MemberKind::Learner).unwrap(), "\"learner\"");
        assert_eq!(NodeRole::default(), NodeRole::Data);
    }
}
