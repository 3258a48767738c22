//! The replicated state as snapshots of format 0 hold it: request ids remembered by id
//! alone, without their caller or a digest of their command (before issue 11).
//!
//! ```text
//!   snapshot.bin without a format marker ──decode──▶ KvStateV0 ──into──▶ KvStateV1 ──into──▶ KvStateV2 ──into──▶ KvState
//!                                                      request ids ──▶ scope Unrecorded
//! ```
//!
//! Every other part is laid out as in format 1 and converts through it (`KvStateV1`).
//! The remembered ids keep their order (oldest first, so they age out as before) under
//! [`RequestScope::Unrecorded`]:
//! a request carrying one of them cannot be told from a retry of the request it was first
//! used for, so it is refused with a clear error instead of being answered with another
//! request's result (the bug) or applied a second time (a retry across the upgrade).
//! They are forgotten once `REQUEST_IDS_REMEMBERED` newer ids have been remembered.
//!
//! Never written any more, except by tests that make old data.

use std::collections::BTreeMap;

use imbl::HashMap;
use imbl::OrdMap;
use imbl::Vector;
use serde::Deserialize;
use serde::Serialize;

use super::format_v1::AdminStateV1;
use super::format_v1::KvStateV1;
use super::CommandResult;
use super::Entry;
use super::Event;
use super::KvState;
use super::Remembered;
use super::RequestFingerprint;
use super::RequestKey;
use super::RequestScope;
use crate::auth::TokenRecord;

/// `KvState` in format 0: the same fields in the same order, with the request ids of the
/// time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvStateV0 {
    pub entries: OrdMap<String, Entry>,
    pub revision: u64,
    pub cluster_id: Option<String>,
    pub history: Vector<Event>,
    pub compact_revision: u64,
    pub history_revisions: u64,
    pub request_results: HashMap<String, CommandResult>,
    pub request_order: Vector<String>,
    pub tokens: BTreeMap<String, TokenRecord>,
    #[serde(default)]
    pub maintenance_since_ms: Option<u64>,
    pub admin: AdminStateV1,
}

impl From<KvStateV0> for KvStateV1 {
    /// Only the request ids change; format 1 then converts like any format-1 state.
    fn from(old: KvStateV0) -> KvStateV1 {
        let mut request_results = HashMap::new();
        let mut request_order = Vector::new();
        for id in old.request_order {
            let Some(result) = old.request_results.get(&id) else { continue };
            let key = RequestKey { scope: RequestScope::Unrecorded, id };
            // Never compared: an unrecorded id is refused whatever the request.
            let remembered = Remembered { fingerprint: RequestFingerprint([0; 16]), result: result.clone() };
            if request_results.insert(key.clone(), remembered).is_none() {
                request_order.push_back(key);
            }
        }
        KvStateV1 {
            entries: old.entries,
            revision: old.revision,
            cluster_id: old.cluster_id,
            history: old.history,
            compact_revision: old.compact_revision,
            history_revisions: old.history_revisions,
            request_results,
            request_order,
            tokens: old.tokens,
            maintenance_since_ms: old.maintenance_since_ms,
            admin: old.admin,
        }
    }
}

impl From<KvStateV0> for KvState {
    fn from(old: KvStateV0) -> KvState {
        KvStateV1::from(old).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::Command;
    use crate::kv::Request;

    fn put(key: &str, value: &str, id: &str) -> Request {
        Request::new(
            Some(id.to_string()),
            Command::Put { key: key.into(), value: value.as_bytes().to_vec(), prev_revision: None },
        )
    }

    /// A format-0 state converts with everything but the request ids unchanged; each old
    /// id is refused for any caller and any request (it cannot be told from a retry),
    /// changes nothing, and ages out like any remembered id.
    #[test]
    fn old_states_convert_and_their_ids_are_refused_not_answered() {
        let old = KvStateV0 {
            entries: OrdMap::from_iter([(
                "a".to_string(),
                Entry { value: b"one".to_vec(), create_revision: 1, mod_revision: 1, version: 1 },
            )]),
            revision: 1,
            cluster_id: Some("c".into()),
            history: Vector::new(),
            compact_revision: 1,
            history_revisions: 10,
            request_results: HashMap::from_iter([(
                "req-42".to_string(),
                CommandResult::Put { revision: 1, prev_mod_revision: 0 },
            )]),
            request_order: Vector::from_iter(["req-42".to_string()]),
            tokens: BTreeMap::new(),
            maintenance_since_ms: Some(5),
            admin: AdminStateV1::from_current(&crate::admin::AdminState::default()),
        };
        let bytes = crate::codec::encode(&old).unwrap();
        let mut state: KvState = crate::codec::decode::<KvStateV0>(&bytes).unwrap().into();
        assert_eq!(state.get("a").map(|e| e.value.as_slice()), Some(&b"one"[..]));
        assert_eq!((state.revision(), state.cluster_id(), state.maintenance_since_ms()), (1, Some("c"), Some(5)));
        let digest = crate::kv::tests::recounted_digest(&state);
        let delete = Request::new(Some("req-42".into()), Command::Delete { key: "a".into(), prev_revision: None });
        for request in [put("b", "two", "req-42"), put("a", "one", "req-42"), delete] {
            match state.apply(&request) {
                CommandResult::RequestIdReused { reason } => {
                    assert!(reason.contains("req-42") && reason.contains("upgraded"), "{reason}")
                }
                other => panic!("expected a refusal, got {other:?}"),
            }
        }
        assert_eq!((crate::kv::tests::recounted_digest(&state), state.revision()), (digest, 1), "nothing was applied");
        assert!(state.get("b").is_none());
        // Aged out by newer ids, the old id is an ordinary new id again.
        for i in 0..crate::limits::REQUEST_IDS_REMEMBERED {
            state.apply(&put("k", "v", &format!("new-{i}")));
        }
        assert!(matches!(state.apply(&put("b", "two", "req-42")), CommandResult::Put { .. }));
    }
}
