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

use haven_core::limits::HISTORY_BYTES_MAX;
use haven_core::limits::KV_BYTES_MAX;
use haven_core::limits::LOG_BYTES_SINCE_SNAPSHOT_MAX;
use haven_core::limits::SNAPSHOT_BYTES_MAX;
use serde::Serialize;

use crate::Node;

/// The sizes in status, each with its bound.
#[derive(Debug, Clone, Serialize)]
pub struct StorageSizes {
    pub kv_bytes: u64,
    pub kv_bytes_max: u64,
    pub history_bytes: u64,
    pub history_bytes_max: u64,
    /// Events in the history (also bounded by the node's `history_revisions`).
    pub history_events: u64,
    pub log_bytes_since_snapshot: u64,
    pub log_bytes_since_snapshot_max: u64,
    /// `snapshot.bin`, when there is one.
    pub snapshot_bytes: Option<u64>,
    pub snapshot_bytes_max: u64,
}

impl Node {
    /// This node's sizes now.
    pub fn storage_sizes(&self) -> StorageSizes {
        let (kv_bytes, history_bytes, history_events) = {
            let state = self.state.read();
            let kv = &state.kv;
            (kv.kv_bytes(), kv.history_bytes(), kv.revision() - kv.compact_revision())
        };
        StorageSizes {
            kv_bytes,
            kv_bytes_max: KV_BYTES_MAX,
            history_bytes,
            history_bytes_max: HISTORY_BYTES_MAX,
            history_events,
            log_bytes_since_snapshot: self.state.log_bytes_since_snapshot(),
            log_bytes_since_snapshot_max: LOG_BYTES_SINCE_SNAPSHOT_MAX,
            snapshot_bytes: self.state.snapshot_file_bytes(),
            snapshot_bytes_max: SNAPSHOT_BYTES_MAX,
        }
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
