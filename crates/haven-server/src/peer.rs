//! The peer handler: checks who is asking, then hands the request to Raft or the node.

use std::sync::Arc;
use std::sync::Weak;

use futures::future::BoxFuture;
use futures::FutureExt;
use haven_net::PeerEnvelope;
use haven_net::PeerHandler;
use haven_net::PeerRequest;
use haven_net::PeerResponse;
use haven_net::RemoteError;
use haven_store::Snapshot;

use crate::Node;

/// Serves peer requests for one node. Holds the node weakly so a stopped node is freed.
pub struct NodePeerHandler {
    node: Weak<Node>,
}

impl NodePeerHandler {
    pub fn new(node: &Arc<Node>) -> Arc<NodePeerHandler> {
        Arc::new(NodePeerHandler { node: Arc::downgrade(node) })
    }
}

impl PeerHandler for NodePeerHandler {
    fn handle(&self, request: PeerEnvelope, peer_fingerprint: Option<String>) -> BoxFuture<'static, PeerResponse> {
        let node = self.node.upgrade();
        async move {
            match node {
                Some(node) => handle(&node, request, peer_fingerprint).await,
                None => PeerResponse::Refused("node is stopping".into()),
            }
        }
        .boxed()
    }
}

/// Why an envelope must not reach Raft, if it must not.
pub fn refusal(node: &Node, envelope: &PeerEnvelope, peer_fingerprint: Option<&str>) -> Option<String> {
    if let Some(detached) = node.detached() {
        return Some(format!(
            "detached: node {} left cluster {} by teardown generation {}; it serves no cluster member",
            node.node_id,
            detached.cluster_id.as_deref().unwrap_or("(unknown)"),
            detached.generation
        ));
    }
    let generation = node.state.read().kv.admin().is_detached(envelope.from, &envelope.from_incarnation);
    if let Some(generation) = generation {
        return Some(format!(
            "detached: node {} was detached by teardown generation {generation}; it can start standalone under a new \
             cluster id, or be wiped and join as a new member",
            envelope.from
        ));
    }
    if envelope.to != 0 && envelope.to != node.node_id {
        return Some(format!("this is node {}, not node {}", node.node_id, envelope.to));
    }
    if let Some(expected) = &envelope.to_incarnation {
        if *expected != node.incarnation {
            return Some(format!(
                "incarnation mismatch: node {} expects this data dir to be incarnation {expected}, but it is {}; \
                 the disk was wiped or replaced, so this node must be removed and join again as a new member",
                envelope.from, node.incarnation
            ));
        }
    }
    if let (Some(theirs), Some(ours)) = (&envelope.cluster_id, node.cluster_id()) {
        if *theirs != ours {
            return Some(format!(
                "cluster mismatch: node {} belongs to cluster {theirs}, this node to cluster {ours}",
                envelope.from
            ));
        }
    }
    let membership = node.membership();
    if let Some(sender) = membership.get_node(&envelope.from) {
        // The key the sender proved it holds must be the one recorded for the member it
        // claims to be: one member cannot speak for another.
        if let Some(presented) = peer_fingerprint {
            if !sender.fingerprint.is_empty() && sender.fingerprint != presented {
                return Some(format!(
                    "node {} must present key {}, but this connection's key is {presented}",
                    envelope.from, sender.fingerprint
                ));
            }
        }
        if sender.incarnation != envelope.from_incarnation {
            return Some(format!(
                "node {} has incarnation {}, but the membership records {}; it must be removed and join again",
                envelope.from, envelope.from_incarnation, sender.incarnation
            ));
        }
    }
    None
}

async fn handle(node: &Arc<Node>, envelope: PeerEnvelope, peer_fingerprint: Option<String>) -> PeerResponse {
    if let Some(reason) = refusal(node, &envelope, peer_fingerprint.as_deref()) {
        tracing::warn!(
            from = envelope.from,
            request = envelope.body.name(),
            fingerprint = peer_fingerprint.as_deref().unwrap_or("none"),
            %reason,
            "peer request refused"
        );
        return PeerResponse::Refused(reason);
    }
    let raft = &node.raft;
    match envelope.body {
        PeerRequest::AppendEntries(rpc) => {
            PeerResponse::AppendEntries(raft.append_entries(rpc).await.map_err(|e| e.to_string()))
        }
        PeerRequest::Vote(rpc) => PeerResponse::Vote(raft.vote(rpc).await.map_err(|e| e.to_string())),
        PeerRequest::PreVote(rpc) => PeerResponse::Vote(raft.pre_vote(rpc).await.map_err(|e| e.to_string())),
        PeerRequest::TransferLeader(rpc) => {
            PeerResponse::TransferLeader(raft.handle_transfer_leader(rpc).await.map_err(|e| e.to_string()))
        }
        PeerRequest::SnapshotChunk(chunk) => {
            let complete = node.assembler.lock().await.accept(chunk);
            let result = match complete {
                Ok(None) => Ok(None),
                Ok(Some(snapshot)) => {
                    let snapshot_data = Snapshot { meta: snapshot.meta, snapshot: std::io::Cursor::new(snapshot.data) };
                    raft.install_full_snapshot(snapshot.vote, snapshot_data).await.map(Some).map_err(|e| e.to_string())
                }
                Err(reason) => Err(reason),
            };
            PeerResponse::Snapshot(result)
        }
        PeerRequest::Forward(request) => PeerResponse::Forward(node.propose_as_leader(request).await),
        PeerRequest::ReadIndex => PeerResponse::ReadIndex(node.read_index_as_leader().await),
        PeerRequest::Join(request) => PeerResponse::Join(if node.is_leader() {
            node.join_as_leader(request).await
        } else {
            Err(RemoteError::NotLeader { leader: node.leader().map(|(id, _)| id) })
        }),
        PeerRequest::RemoveMember { node_id, force } => PeerResponse::RemoveMember(if node.is_leader() {
            node.remove_as_leader(node_id, force).await
        } else {
            Err(RemoteError::NotLeader { leader: node.leader().map(|(id, _)| id) })
        }),
        PeerRequest::Switchover { to } => PeerResponse::Switchover(if node.is_leader() {
            node.switchover_as_leader(to).await
        } else {
            Err(RemoteError::NotLeader { leader: node.leader().map(|(id, _)| id) })
        }),
        PeerRequest::Ping => PeerResponse::Ping(node.ping_info()),
    }
}
