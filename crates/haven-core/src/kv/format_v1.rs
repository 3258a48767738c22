//! The replicated state as snapshots of format 1 hold it (and format 0's administrative
//! part): the administrative state before it kept removed members and the clusters it was
//! recovered from (issue 14).
//!
//! ```text
//!   snapshot.bin "HVNS" 1 ──decode──▶ KvStateV1 ──into──▶ KvStateV2 ──into──▶ KvState
//!                                       admin: AdminStateV1 ──▶ AdminState, nobody removed,
//!                                                               recovered from no cluster
//! ```
//!
//! Every part moves over unchanged: an old cluster has no record of removals or
//! recoveries made before the upgrade, which only means such nodes are not told (as
//! before). Never written any more, except by tests that make old data.

use std::collections::BTreeMap;

use imbl::HashMap;
use imbl::OrdMap;
use imbl::Vector;
use serde::Deserialize;
use serde::Serialize;

use super::format_v2::KvStateV2;
use super::CopyOnWrite;
use super::Entry;
use super::Event;
use super::KvState;
use super::Remembered;
use super::RequestKey;
use crate::admin::AdminState;
use crate::admin::AuditLog;
use crate::admin::DetachedNode;
use crate::admin::StoredDraft;
use crate::auth::TokenRecord;
use crate::ha::config::HaConfig;
use crate::ha::config::Versioned;

/// `AdminState` in formats 0 and 1: the same fields in the same order, without the
/// removed members and the recovery lineage that follow them now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminStateV1 {
    pub ha_config: Versioned<HaConfig>,
    pub draft: Option<StoredDraft>,
    pub audit: AuditLog,
    pub teardown_generation: u64,
    pub detached: Vec<DetachedNode>,
}

impl AdminStateV1 {
    /// The administrative state as formats 0 and 1 wrote it, for tests that make old data.
    pub fn from_current(admin: &AdminState) -> AdminStateV1 {
        AdminStateV1 {
            ha_config: admin.ha_config.clone(),
            draft: admin.draft.clone(),
            audit: admin.audit.clone(),
            teardown_generation: admin.teardown_generation,
            detached: admin.detached.clone(),
        }
    }
}

impl From<AdminStateV1> for AdminState {
    fn from(old: AdminStateV1) -> AdminState {
        AdminState {
            ha_config: old.ha_config,
            draft: old.draft,
            audit: old.audit,
            teardown_generation: old.teardown_generation,
            detached: old.detached,
            removed: Vec::new(),
            recovered_from: Vec::new(),
        }
    }
}

/// `KvState` in format 1: the same fields in the same order, with the administrative state
/// of the time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvStateV1 {
    pub(super) entries: OrdMap<String, Entry>,
    pub(super) revision: u64,
    pub(super) cluster_id: Option<String>,
    pub(super) history: Vector<Event>,
    pub(super) compact_revision: u64,
    pub(super) history_revisions: u64,
    pub(super) request_results: HashMap<RequestKey, Remembered>,
    pub(super) request_order: Vector<RequestKey>,
    pub(super) tokens: BTreeMap<String, TokenRecord>,
    #[serde(default)]
    pub(super) maintenance_since_ms: Option<u64>,
    pub(super) admin: AdminStateV1,
}

impl From<KvStateV1> for KvStateV2 {
    /// Only the administrative state changes; format 2 then converts like any format-2
    /// state.
    fn from(old: KvStateV1) -> KvStateV2 {
        KvStateV2 {
            entries: old.entries.into(),
            revision: old.revision,
            cluster_id: old.cluster_id,
            history: old.history.into(),
            compact_revision: old.compact_revision,
            history_revisions: old.history_revisions,
            request_results: old.request_results,
            request_order: old.request_order,
            tokens: CopyOnWrite(std::sync::Arc::new(old.tokens)),
            maintenance_since_ms: old.maintenance_since_ms,
            admin: CopyOnWrite(std::sync::Arc::new(old.admin.into())),
        }
    }
}

impl From<KvStateV1> for KvState {
    fn from(old: KvStateV1) -> KvState {
        KvStateV2::from(old).into()
    }
}

impl KvStateV1 {
    /// The state as format 1 wrote it, for tests that make old data: the administrative
    /// parts added since are dropped.
    pub fn from_current(state: &KvState) -> KvStateV1 {
        KvStateV1 {
            entries: (*state.entries).clone(),
            revision: state.revision,
            cluster_id: state.cluster_id.clone(),
            history: (*state.history).clone(),
            compact_revision: state.compact_revision,
            history_revisions: state.history_revisions,
            request_results: state.request_results.clone(),
            request_order: state.request_order.clone(),
            tokens: (*state.tokens).clone(),
            maintenance_since_ms: state.maintenance_since_ms,
            admin: AdminStateV1::from_current(state.admin()),
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use serde::de::DeserializeOwned;

    use super::*;
    use crate::kv::Command;
    use crate::kv::Request;

    /// A state with a remembered request id and maintenance on, encoded in an older layout
    /// (`from_current`), checked not to read as the current layout, then decoded through
    /// the old layout and converted: `(state, converted)`.
    pub(in crate::kv) fn converted_from<Old>(from_current: fn(&KvState) -> Old) -> (KvState, KvState)
    where
        Old: Serialize + DeserializeOwned + Into<KvState>,
    {
        let mut state = KvState::new(100);
        let mut request = Request::new(
            Some("r1".into()),
            Command::Put { key: "a".into(), value: b"one".to_vec(), prev_revision: None },
        );
        request.now_ms = 7;
        state.apply(&request);
        state.apply(&Request::new(None, Command::SetMaintenance { on: true }));
        let bytes = crate::codec::encode(&from_current(&state)).unwrap();
        assert!(crate::codec::decode::<KvState>(&bytes).is_err(), "the current layout is longer");
        let converted: KvState = crate::codec::decode::<Old>(&bytes).unwrap().into();
        (state, converted)
    }

    /// A format-1 state (written before issue 14) decodes through its own layout and
    /// converts with every part unchanged and no removals or recoveries; the current layout
    /// does not read it (the decoder must be told the format).
    #[test]
    fn format_1_states_convert_unchanged() {
        let (state, converted) = converted_from(KvStateV1::from_current);
        assert!(converted == state, "every part kept");
        assert!(converted.admin().removed.is_empty() && converted.admin().recovered_from.is_empty());
    }
}
