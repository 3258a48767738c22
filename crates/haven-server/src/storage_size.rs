//! How much the node stores, against the byte bounds that keep memory, log and snapshots
//! finite whatever the values' sizes (issue 13, item 7; docs/architecture.md, "Limits"):
//!
//! ```text
//!   keys + values      ≤ KV_BYTES_MAX               (a growing put beyond: 507 store_full)
//!   watch history      ≤ HISTORY_BYTES_MAX          (oldest events dropped; and ≤ the revision count)
//!   log since snapshot ≤ LOG_BYTES_SINCE_SNAPSHOT_MAX (a snapshot is taken; and ≤ snapshot_threshold entries)
//!   snapshot.bin       ≈ keys + values + history + request ids + tokens + audit ≤ SNAPSHOT_BYTES_MAX / 2
//! ```
//!
//! Status shows each size with its bound (`storage` in `GET /v1/status`).

use haven_core::limits::LOG_BYTES_SINCE_SNAPSHOT_MAX;

use crate::Node;

/// The sizes in status, each with its bound (the wire type, shared with the client).
pub use haven_core::limits::StorageSizes;

impl Node {
    /// This node's sizes now.
    pub fn storage_sizes(&self) -> StorageSizes {
        let (kv_bytes, history_bytes, history_events) = {
            let state = self.state.read();
            let kv = &state.kv;
            (kv.kv_bytes(), kv.history_bytes(), kv.revision() - kv.compact_revision())
        };
        StorageSizes::new(
            kv_bytes,
            history_bytes,
            history_events,
            self.state.log_bytes_since_snapshot(),
            self.state.snapshot_file_bytes(),
        )
    }

    /// Takes a snapshot when the log since the last one holds more than
    /// [`LOG_BYTES_SINCE_SNAPSHOT_MAX`] bytes, whatever its entry count: openraft's policy
    /// counts entries only, and 10,000 entries of 512 KiB would be 5 GiB to replay. The
    /// count restarts when the snapshot's copy of the state is taken, so one snapshot is
    /// asked for per bound's worth of log.
    pub async fn snapshot_when_the_log_is_large(&self) {
        let bytes = self.state.log_bytes_since_snapshot();
        if bytes <= LOG_BYTES_SINCE_SNAPSHOT_MAX {
            return;
        }
        tracing::info!(log_bytes_since_snapshot = bytes, "the log since the last snapshot is large: taking a snapshot");
        if let Err(error) = self.raft.trigger().snapshot().await {
            tracing::warn!(%error, "cannot take a snapshot");
        }
    }
}
