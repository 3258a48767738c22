//! What the node does about damaged or failing storage (docs/architecture.md, "Integrity").
//!
//! The store checks every record it reads (`haven_store::integrity`); here the node turns a
//! failed check into an answer an operator can act on: which file, where, what is wrong,
//! and what to do.
//!
//! Fail-stop: openraft stops its core on any storage error (a full disk on a log append,
//! no file descriptors for a snapshot, a record that fails its checksum). A node whose core
//! has stopped can neither commit, read linearizably nor lead, so it must not look alive:
//! from that moment health answers 503 and status says why ([`Node::core_stopped`]), and
//! `run` ends with the reason, so the process exits non-zero and a supervisor restarts it
//! (a restart recovers once the cause is gone: the log and snapshot are durable and
//! checked again at start).

use std::io;
use std::path::Path;

use haven_store::CorruptData;
use haven_store::NodeId;
use openraft::async_runtime::WatchReceiver as _;

use crate::Node;

impl Node {
    /// Why this node's Raft core has stopped, once it has (`None` while it runs).
    pub fn core_stopped(&self) -> Option<String> {
        self.raft.metrics().borrow_watched().running_state.as_ref().err().map(|fatal| fatal.to_string())
    }
}

/// Resolves once the node's Raft core has stopped, with the reason.
pub async fn core_stopped(node: &Node) -> String {
    let mut metrics = node.raft.metrics();
    loop {
        if let Some(reason) = node.core_stopped() {
            return reason;
        }
        if metrics.changed().await.is_err() {
            return "the Raft core task ended".into();
        }
    }
}

/// `error` from opening the data dir, with the remedy when the data is damaged.
pub fn explain_storage_error(node_id: NodeId, data_dir: &Path, error: io::Error) -> anyhow::Error {
    match CorruptData::find(&error) {
        Some(corrupt) => anyhow::anyhow!(
            "{corrupt}. This node's copy of the data cannot be trusted, so it does not start: it must neither serve \
             nor send it. To rebuild node {node_id} from the cluster: remove it (`haven members remove {node_id}` on \
             a healthy member), move {dir} aside, and start it again with --join. If it was the only node, restore \
             {dir} from a backup.",
            dir = data_dir.display()
        ),
        None => anyhow::anyhow!("cannot open the data dir {}: {error}", data_dir.display()),
    }
}
