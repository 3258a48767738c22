//! The replicated state as snapshots of format 2 hold it (and, converted, formats 0 and 1):
//! the state before it kept the members' durability marks (issue 13, rewound storage).
//!
//! ```text
//!   snapshot.bin "HVNS" 2 ──decode──▶ KvStateV2 ──into──▶ KvState, no durability marks
//!   formats 0 and 1 ──▶ KvStateV1 ──into──▶ KvStateV2 ──into──▶ KvState
//! ```
//!
//! Every part moves over unchanged; a cluster upgraded from format 2 has recorded no marks,
//! so no member is held to one until the leader records them (within one housekeeping
//! round of the upgrade, `crate::durability`). Never written any more, except by tests
//! that make old data.

use std::collections::BTreeMap;

use imbl::HashMap;
use imbl::Vector;
use serde::Deserialize;
use serde::Serialize;

use super::CopyOnWrite;
use super::Entries;
use super::History;
use super::KvState;
use super::Remembered;
use super::RequestKey;
use crate::admin::AdminState;
use crate::auth::TokenRecord;

/// `KvState` in format 2: the same fields in the same order, without the durability marks
/// that follow them now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvStateV2 {
    pub(super) entries: Entries,
    pub(super) revision: u64,
    pub(super) cluster_id: Option<String>,
    pub(super) history: History,
    pub(super) compact_revision: u64,
    pub(super) history_revisions: u64,
    pub(super) request_results: HashMap<RequestKey, Remembered>,
    pub(super) request_order: Vector<RequestKey>,
    pub(super) tokens: CopyOnWrite<BTreeMap<String, TokenRecord>>,
    #[serde(default)]
    pub(super) maintenance_since_ms: Option<u64>,
    pub(super) admin: CopyOnWrite<AdminState>,
}

impl From<KvStateV2> for KvState {
    fn from(old: KvStateV2) -> KvState {
        KvState {
            entries: old.entries,
            revision: old.revision,
            cluster_id: old.cluster_id,
            history: old.history,
            compact_revision: old.compact_revision,
            history_revisions: old.history_revisions,
            request_results: old.request_results,
            request_order: old.request_order,
            tokens: old.tokens,
            maintenance_since_ms: old.maintenance_since_ms,
            admin: old.admin,
            durable: CopyOnWrite::default(),
        }
    }
}

impl KvStateV2 {
    /// The state as format 2 wrote it, for tests that make old data: the durability marks
    /// are dropped.
    pub fn from_current(state: &KvState) -> KvStateV2 {
        KvStateV2 {
            entries: state.entries.clone(),
            revision: state.revision,
            cluster_id: state.cluster_id.clone(),
            history: state.history.clone(),
            compact_revision: state.compact_revision,
            history_revisions: state.history_revisions,
            request_results: state.request_results.clone(),
            request_order: state.request_order.clone(),
            tokens: state.tokens.clone(),
            maintenance_since_ms: state.maintenance_since_ms,
            admin: state.admin.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::format_v1::tests::converted_from;

    /// A format-2 state (written before issue 13's durability marks) decodes through its
    /// own layout and converts with every part unchanged and no marks; the current layout
    /// does not read it (the decoder must be told the format).
    #[test]
    fn format_2_states_convert_unchanged() {
        let (state, converted) = converted_from(KvStateV2::from_current);
        assert!(converted == state, "every part kept");
        assert!(converted.durable().is_empty());
    }
}
