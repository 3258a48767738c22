//! The replicas compare their state (docs/architecture.md, "Integrity";
//! `haven_core::replica_check` decides, this is the IO).
//!
//! Every probe round this node asks each member for its state digest after this node's
//! last applied log entry (or the member's own last, which this node looks up in its ring),
//! and judges the comparisons. A node that differs from every replica it could compare with
//! has diverged: it raises `RaiseAlarm`, stops serving reads (503 `diverged`) and says so
//! in health and status until it is rebuilt; it keeps taking part in Raft, whose log is
//! the truth. A node that sees some members differ while others agree with it raises the
//! alarm naming them and goes on.

use haven_core::events::EventKind as AlertEvent;
use haven_core::replica_check::compare;
use haven_core::replica_check::verdict;
use haven_core::replica_check::Comparison;
use haven_core::replica_check::Verdict;
use haven_net::PeerRequest;
use haven_net::PeerResponse;
use haven_store::NodeId;

use crate::error::ApiError;
use crate::Node;

/// The alarm's condition text (seed 002's `RaiseAlarm <condition> <message>`).
pub const ALARM_CONDITION: &str = "replica state diverged";

/// What the comparisons found so far, kept on the node.
#[derive(Debug, Default)]
pub struct ReplicaCheck {
    /// Set once this node found its own state diverged: why. It stays set until a restart.
    pub diverged: Option<String>,
    /// The members last seen to differ from this node while others agree with it.
    pub differing_peers: Vec<NodeId>,
}

impl Node {
    /// Why this node serves no reads, once its state has diverged.
    pub fn diverged(&self) -> Option<String> {
        self.replica_check.lock().unwrap_or_else(|e| e.into_inner()).diverged.clone()
    }

    /// The members whose state differs from this node's while others agree with it.
    pub fn differing_peers(&self) -> Vec<NodeId> {
        self.replica_check.lock().unwrap_or_else(|e| e.into_inner()).differing_peers.clone()
    }

    /// 503 `diverged` once this node's state has diverged: a read here could return a value
    /// that was never written.
    pub fn refuse_reads_if_diverged(&self) -> Result<(), ApiError> {
        match self.diverged() {
            Some(reason) => Err(ApiError::new(axum::http::StatusCode::SERVICE_UNAVAILABLE, "diverged", reason)),
            None => Ok(()),
        }
    }

    /// One round of comparisons with every other member.
    pub async fn compare_replicas(&self) {
        if self.detached().is_some() || self.core_stopped().is_some() {
            return;
        }
        let Some((index, _)) = self.state.digests().last() else { return };
        let membership = self.membership();
        let peers: Vec<_> =
            membership.nodes().filter(|(id, _)| **id != self.node_id).map(|(id, node)| (*id, node.clone())).collect();
        // Within a probe's time (`Node::ask_peer`).
        let asks = peers
            .into_iter()
            .map(|(id, node)| async move { (id, self.ask_peer(id, &node, PeerRequest::StateDigest { index }).await) });
        let answers = futures::future::join_all(asks).await;
        let comparisons: Vec<(NodeId, Comparison)> = {
            let ring = self.state.digests();
            answers
                .into_iter()
                .map(|(id, answer)| match answer {
                    Ok(PeerResponse::StateDigest(answer)) => (id, compare(&ring, answer)),
                    // An older node, a refusal or no answer: nothing to compare.
                    _ => (id, Comparison::Unknown),
                })
                .collect()
        };
        self.judge(verdict(&comparisons));
    }

    fn judge(&self, verdict: Verdict) {
        let alarm = {
            let mut check = self.replica_check.lock().unwrap_or_else(|e| e.into_inner());
            match verdict {
                Verdict::Consistent => {
                    check.differing_peers.clear();
                    None
                }
                Verdict::PeersDiffer { peers } if peers != check.differing_peers => {
                    let text = format!(
                        "the state of node(s) {peers:?} differs from node {} and the others at the same log index: \
                         they have diverged",
                        self.node_id
                    );
                    tracing::error!(?peers, "{text}");
                    check.differing_peers = peers;
                    Some(text)
                }
                Verdict::PeersDiffer { .. } => None,
                Verdict::Diverged { reason } if check.diverged.is_none() => {
                    tracing::error!("{reason}");
                    check.diverged = Some(reason.clone());
                    Some(reason)
                }
                Verdict::Diverged { .. } => None,
            }
        };
        if let Some(text) = alarm {
            self.alerts
                .fire(&self.ha_config(), AlertEvent::RaiseAlarm { condition: ALARM_CONDITION.into(), error: text });
        }
    }
}
