//! The JSON documents of the HA control routes (`docs/http-api.md`, "HA configuration",
//! "Audit", "Teardown, restart and recovery"), and typed views of the HA fields of
//! `GET /v1/status`.
//!
//! ```text
//!   GET  /v1/config         ──▶ ConfigView
//!   GET|PUT /v1/config/draft ──▶ DraftView { draft, preview: Preview }
//!   POST /v1/config/apply   ──▶ ApplyResult  (422 ──▶ Error::InvalidDraft { errors })
//!   GET  /v1/audit          ──▶ AuditPage { records: [AuditRecord] }
//!   POST /v1/teardown       ──▶ TeardownResult (409 not_primary ──▶ Error::NotPrimary)
//!   POST /v1/restart        ──▶ RestartResult
//!   POST /v1/recover        ──▶ RecoverResult
//! ```
//!
//! Every answer keeps the fields this version does not know in `extra`, so `--json` prints
//! everything the server said. Enumerations the server may grow (HA states, rule kinds,
//! roles) are strings here, so a newer server never makes an older client fail to parse.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::Serialize;
use serde_json::Value;

use crate::types::Member;
use crate::types::Status;

/// Fields beyond the ones a type names, kept for `--json`.
pub type Extra = BTreeMap<String, Value>;

// ---- Configuration ------------------------------------------------------------------

/// Answer to `GET /v1/config`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigView {
    /// The applied configuration's version; 0 = never applied (the defaults).
    pub version: u64,
    /// The applied configuration, every key (defaults filled in).
    pub config: Value,
    /// The failure detection it gives, in words.
    #[serde(default)]
    pub detection: Option<String>,
    /// The draft waiting to be applied, if any.
    #[serde(default)]
    pub draft: Option<DraftSummary>,
    /// Why the answering node needs a restart for the applied configuration to take effect.
    #[serde(default)]
    pub pending_restart: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// The draft as `GET /v1/config` mentions it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DraftSummary {
    /// The configuration version the draft was made from.
    pub base_version: u64,
    /// How many keys it sets or unsets.
    pub changes: u64,
}

/// Answer to `GET /v1/config/draft` and `PUT /v1/config/draft`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DraftView {
    /// The applied configuration's version.
    pub version: u64,
    /// `None` when there is no draft.
    #[serde(default)]
    pub draft: Option<Draft>,
    /// What applying the draft would do (absent without a draft).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview: Option<Preview>,
    /// Set when there is no draft ("there is no draft").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// The draft's edits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Draft {
    /// The configuration version the draft was made from: what `apply` sends back.
    pub base_version: u64,
    /// Dotted key ──▶ new value; `null` = unset (back to the default).
    #[serde(default)]
    pub changes: BTreeMap<String, Value>,
    /// What the draft says, in 16 hex digits: `apply_config_reviewed` applies exactly it.
    #[serde(default)]
    pub digest: Option<String>,
}

/// What applying a draft would do: the changes and restarts when it is valid, every broken
/// rule (or a message) when it is not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preview {
    pub valid: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<ConfigChange>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restart: Vec<RestartNeeded>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<RuleViolation>,
    /// Why the draft cannot be applied when it is not a broken rule (stale, nothing to do).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// One changed key of the configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigChange {
    pub key: String,
    /// `null` when the key had no value (its default applied).
    pub old: Value,
    /// `null` when the key is unset (back to its default).
    pub new: Value,
}

impl std::fmt::Display for ConfigChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use haven_core::ha::config::shown;
        write!(f, "{}: {} -> {}", self.key, shown(&self.old), shown(&self.new))
    }
}

/// A node that must restart for a change to take effect, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartNeeded {
    pub node_id: u64,
    #[serde(default)]
    pub reasons: Vec<String>,
}

/// One broken rule of a draft: the key, its offending value (as JSON text), the kind of
/// rule (`out-of-range`, `invalid`, `duplicate`, `contradiction`, `missing`, `unknown-key`,
/// `wrong-type`) and the rule in words with what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleViolation {
    pub key: String,
    #[serde(default)]
    pub value: String,
    #[serde(default)]
    pub kind: String,
    pub rule: String,
}

impl std::fmt::Display for RuleViolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}` = {}: {}", self.key, self.value, self.rule)
    }
}

/// Body of `PUT /v1/config/draft`: keys to set (to JSON values) and keys to unset.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DraftEdit {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unset: Vec<String>,
}

impl DraftEdit {
    /// Sets `key` to `value`.
    pub fn set(mut self, key: impl Into<String>, value: impl Into<Value>) -> DraftEdit {
        self.set.insert(key.into(), value.into());
        self
    }

    /// Sets `key` to a value typed on a command line: JSON when it parses (`true`, `50`,
    /// `["10.0.0.1"]`), otherwise the text as a string (`fast`, `10.0.0.1`).
    pub fn set_text(self, key: impl Into<String>, text: &str) -> DraftEdit {
        self.set(key, haven_core::ha::config::value_from_text(text))
    }

    /// Unsets `key` (back to its default).
    pub fn unset(mut self, key: impl Into<String>) -> DraftEdit {
        self.unset.push(key.into());
        self
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.unset.is_empty()
    }
}

/// Answer to `POST /v1/config/apply` (200): applied as `version`, or nothing to apply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApplyResult {
    /// False when there was nothing to apply (no draft, or a draft that changes nothing).
    pub applied: bool,
    /// The configuration's version now.
    pub version: u64,
    #[serde(default)]
    pub changes: Vec<ConfigChange>,
    /// The nodes that must restart for the new configuration to take full effect.
    #[serde(default)]
    pub restart: Vec<RestartNeeded>,
    /// "no configuration changes to apply" when `applied` is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

// ---- Audit --------------------------------------------------------------------------

/// Answer to `GET /v1/audit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditPage {
    /// Oldest first, each with `seq` greater than the `since` asked for.
    pub records: Vec<AuditRecord>,
    /// The newest record's sequence number (0: none yet).
    pub last_seq: u64,
}

/// One administrative or automatic action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// 1, 2, 3, ... across the cluster's life; never reused.
    pub seq: u64,
    /// The proposing leader's clock, ms since the Unix epoch.
    pub at_ms: u64,
    /// The name of the token the request was made with, or `haven` for automatic actions.
    pub actor: String,
    /// The node that received the request (0 when unknown).
    pub node: u64,
    /// A dotted action name: `config.apply`, `switchover`, `failover`, `token.create`, ...
    pub action: String,
    pub summary: String,
    #[serde(default)]
    pub changes: Vec<AuditChange>,
}

/// One changed value of an audit record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditChange {
    pub what: String,
    /// `None` when it did not exist before (or is not shown).
    #[serde(default)]
    pub old: Option<String>,
    #[serde(default)]
    pub new: Option<String>,
}

impl std::fmt::Display for AuditChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |value: &Option<String>| value.clone().unwrap_or_else(|| "(none)".into());
        write!(f, "{}: {} -> {}", self.what, show(&self.old), show(&self.new))
    }
}

// ---- Teardown, restart, recovery ------------------------------------------------------

/// Answer to `POST /v1/teardown`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeardownResult {
    /// How many teardowns the cluster has been through, this one included.
    pub generation: u64,
    /// The node that continues alone with all the data (the primary that answered).
    pub standalone: u64,
    /// The members detached: they serve no cluster until started standalone or wiped.
    pub detached: Vec<u64>,
    #[serde(default, deserialize_with = "optional_string_or_number")]
    pub cluster_id: Option<String>,
}

/// Answer to `POST /v1/restart`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartResult {
    /// The node that restarts its process.
    pub restarting: u64,
}

/// Body of `POST /v1/recover`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoverRequest {
    /// The voters the operator knows are gone for good: exactly those the answering node
    /// cannot reach.
    #[serde(default)]
    pub confirm_down: Vec<u64>,
    /// Start a node detached by a teardown as a cluster of its own.
    #[serde(default)]
    pub standalone: bool,
    /// Check and answer, change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// Answer to `POST /v1/recover`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoverResult {
    /// Every voter as the answering node sees it.
    #[serde(default)]
    pub survivors: Vec<Survivor>,
    /// The answering node: the one that becomes the new one-voter cluster.
    pub this_node: u64,
    /// The new cluster's id (`None` on a dry run).
    #[serde(default)]
    pub new_cluster_id: Option<String>,
    /// The node restarts now to carry the recovery out (false on a dry run).
    #[serde(default)]
    pub restarting: bool,
    /// Dry run: why a recovery on the answering node would be refused, or `None` when it
    /// would go ahead.
    #[serde(default)]
    pub would_refuse: Option<String>,
    /// Dry run: the voters a recovery on the answering node must confirm down (those it
    /// cannot reach).
    #[serde(default)]
    pub confirm_down: Vec<u64>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// One voter as the recovering node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Survivor {
    pub id: u64,
    pub reachable: bool,
    /// Its last log index, when it answered (always for the answering node itself).
    #[serde(default)]
    pub last_log_index: Option<u64>,
    /// Its Raft term, when it answered.
    #[serde(default, alias = "last_log_term")]
    pub term: Option<u64>,
}

/// A cluster id may be a string or a number (as in the status); accept both, or null.
fn optional_string_or_number<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Id {
        Text(String),
        Number(u64),
    }
    Ok(Option::<Id>::deserialize(deserializer)?.map(|id| match id {
        Id::Text(text) => text,
        Id::Number(number) => number.to_string(),
    }))
}

// ---- The HA fields of the status -----------------------------------------------------

/// `ha` of `GET /v1/status`: the HA state (seed 002's "stable") as the answering node sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HaSummary {
    /// `stable`, `degraded`, `no-quorum`, `failing-over`, `maintenance` or `standalone`.
    pub state: String,
    /// Why, in words, naming nodes.
    #[serde(default)]
    pub reasons: Vec<String>,
    #[serde(default)]
    pub view_of: Option<u64>,
    /// `{"kind": "replica-set", "voters": 3}` and the like.
    #[serde(default)]
    pub topology: Value,
    /// What the topology survives, in words.
    #[serde(default)]
    pub survives: String,
    /// The primary: a data voter that leads with a quorum.
    #[serde(default)]
    pub primary: Option<u64>,
}

/// The value of `ha.state` when everything is well.
pub const HA_STATE_STABLE: &str = "stable";

impl HaSummary {
    pub fn is_stable(&self) -> bool {
        self.state == HA_STATE_STABLE
    }

    /// The topology's kind in words (`replica set`, `pair with witness`).
    pub fn topology_kind(&self) -> String {
        self.topology["kind"].as_str().unwrap_or("unknown topology").replace('-', " ")
    }
}

/// One ping target of the answering node (`ping_targets` of the status).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PingTarget {
    /// As configured.
    pub target: String,
    /// The address the latest probe used.
    #[serde(default)]
    pub address: Option<String>,
    /// How long ago it last answered; `None` if never.
    #[serde(default)]
    pub last_ok_ms_ago: Option<u64>,
    /// Round trip of its last answer, in microseconds.
    #[serde(default)]
    pub last_rtt_us: Option<u64>,
    /// Why the latest probe failed.
    #[serde(default)]
    pub last_error: Option<String>,
    #[serde(default)]
    pub failed_in_a_row: u64,
    /// `datagram` or `raw`: the ICMP socket the probe used.
    #[serde(default)]
    pub socket: Option<String>,
}

/// `detached` of the status: this node was detached by a teardown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DetachedInfo {
    pub generation: u64,
    #[serde(default, deserialize_with = "optional_string_or_number")]
    pub cluster_id: Option<String>,
    /// The node that continues the cluster alone.
    #[serde(default)]
    pub kept: Option<u64>,
}

/// `storage` of the status: what the node stores, each size in bytes with its bound (the
/// type the server sends, defined once in `haven_core`).
pub use haven_core::limits::StorageSizes;

/// Typed views of the status fields beyond the KV core (kept raw in `extra`, so `--json`
/// prints the server's answer unchanged). Each is `None` (or empty) when the server did
/// not send the field or sent something else.
impl Status {
    fn field<T: for<'de> Deserialize<'de>>(&self, name: &str) -> Option<T> {
        self.extra.get(name).filter(|value| !value.is_null()).and_then(|value| T::deserialize(value).ok())
    }

    /// The HA state as this node sees it.
    pub fn ha(&self) -> Option<HaSummary> {
        self.field("ha")
    }

    /// The applied HA configuration's version.
    pub fn config_version(&self) -> Option<u64> {
        self.field("config_version")
    }

    /// Failovers (unplanned leader changes) in the last hour.
    pub fn failovers_last_hour(&self) -> Option<u64> {
        self.field("failovers_last_hour")
    }

    /// What this node stores, with the bounds.
    pub fn storage(&self) -> Option<StorageSizes> {
        self.field("storage")
    }

    /// Why this node needs a restart, when it does.
    pub fn pending_restart(&self) -> Option<String> {
        self.field("pending_restart")
    }

    /// Set when a teardown detached this node.
    pub fn detached(&self) -> Option<DetachedInfo> {
        self.field("detached")
    }

    /// This node's ping targets and whether they answer.
    pub fn ping_targets(&self) -> Vec<PingTarget> {
        self.field("ping_targets").unwrap_or_default()
    }

    /// Why silent ping targets withhold this node's candidacy, while they do.
    pub fn candidacy_withheld(&self) -> Option<String> {
        self.field("candidacy_withheld")
    }

    /// The last failback or hand-off decision of this node (as leader).
    pub fn failback(&self) -> Option<String> {
        self.field("failback")
    }

    /// Whether the view says maintenance mode is on.
    pub fn maintenance(&self) -> Option<bool> {
        self.field("maintenance")
    }
}

/// The value of a member's `role` for a node that holds data (and may be primary).
pub const ROLE_DATA: &str = "data";

impl Member {
    /// `data` or `witness`, from the HA configuration.
    pub fn role(&self) -> Option<&str> {
        self.extra.get("role").and_then(Value::as_str)
    }

    /// 0 = never primary.
    pub fn priority(&self) -> Option<u64> {
        self.extra.get("priority").and_then(Value::as_u64)
    }

    /// Whether this node believes the member leads.
    pub fn is_leader(&self) -> Option<bool> {
        self.extra.get("leader").and_then(Value::as_bool)
    }

    /// Why it is unreachable, when it is.
    pub fn last_error(&self) -> Option<&str> {
        self.extra.get("last_error").and_then(Value::as_str)
    }

    /// A voter holding data with a priority above 0: one that may become the primary.
    /// A member without a role or priority (an older server) counts as data with the
    /// default priority.
    pub fn may_be_primary(&self) -> bool {
        self.voter && self.role().is_none_or(|role| role == ROLE_DATA) && self.priority() != Some(0)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn draft_views_parse_with_and_without_a_draft() {
        let none: DraftView =
            serde_json::from_value(json!({"version": 3, "draft": null, "message": "there is no draft"})).unwrap();
        assert_eq!((none.version, none.draft.is_none(), none.preview.is_none()), (3, true, true));
        let valid: DraftView = serde_json::from_value(json!({
            "version": 3,
            "draft": {"base_version": 3, "changes": {"failed_pings": 6, "hook_script": null}},
            "preview": {"valid": true,
                "changes": [{"key": "failed_pings", "old": null, "new": 6}],
                "restart": [{"node_id": 1, "reasons": ["detection timing"]}]},
        }))
        .unwrap();
        let draft = valid.draft.as_ref().unwrap();
        assert_eq!(draft.changes["failed_pings"], json!(6));
        assert_eq!(draft.changes["hook_script"], Value::Null);
        let preview = valid.preview.as_ref().unwrap();
        assert!(preview.valid);
        assert_eq!(preview.changes[0].to_string(), "failed_pings: (unset) -> 6");
        assert_eq!(preview.restart, [RestartNeeded { node_id: 1, reasons: vec!["detection timing".into()] }]);
        let invalid: DraftView = serde_json::from_value(json!({
            "version": 0,
            "draft": {"base_version": 0, "changes": {"failed_pings": 50}},
            "preview": {"valid": false, "errors": [
                {"key": "failed_pings", "value": "50", "kind": "out-of-range", "rule": "out of range; allowed 2-20"},
                {"key": "nodes.9", "value": "{}", "kind": "invalid", "rule": "node 9 is not a member"}]},
        }))
        .unwrap();
        let errors = &invalid.preview.unwrap().errors;
        assert_eq!(errors.len(), 2);
        assert_eq!(errors[0].to_string(), "`failed_pings` = 50: out of range; allowed 2-20");
    }

    #[test]
    fn draft_edits_type_command_line_values() {
        let edit = DraftEdit::default()
            .set_text("failed_pings", "6")
            .set_text("profile", "fast")
            .set_text("nodes.2.ping_targets", r#"["10.0.0.1"]"#)
            .set_text("failback", "true")
            .unset("hook_script");
        assert_eq!(
            serde_json::to_value(&edit).unwrap(),
            json!({"set": {"failed_pings": 6, "profile": "fast", "nodes.2.ping_targets": ["10.0.0.1"],
                           "failback": true}, "unset": ["hook_script"]})
        );
        assert_eq!(serde_json::to_value(DraftEdit::default().unset("a")).unwrap(), json!({"unset": ["a"]}));
        assert!(DraftEdit::default().is_empty());
    }

    #[test]
    fn apply_results_parse_both_outcomes() {
        let applied: ApplyResult = serde_json::from_value(json!({"applied": true, "version": 2,
            "changes": [{"key": "failback", "old": false, "new": true}], "restart": []}))
        .unwrap();
        assert_eq!((applied.applied, applied.version, applied.changes.len()), (true, 2, 1));
        let nothing: ApplyResult = serde_json::from_value(
            json!({"applied": false, "version": 2, "message": "no configuration changes to apply"}),
        )
        .unwrap();
        assert!(!nothing.applied && nothing.changes.is_empty());
        assert_eq!(nothing.message.as_deref(), Some("no configuration changes to apply"));
    }

    #[test]
    fn audit_records_show_their_changes() {
        let page: AuditPage = serde_json::from_value(json!({"records": [{"seq": 4, "at_ms": 1_700_000_000_000u64,
            "actor": "alice", "node": 2, "action": "config.apply", "summary": "HA configuration version 1",
            "changes": [{"what": "failed_pings", "old": null, "new": "6"}]}], "last_seq": 4}))
        .unwrap();
        assert_eq!(page.records[0].changes[0].to_string(), "failed_pings: (none) -> 6");
        assert_eq!(page.last_seq, 4);
    }

    #[test]
    fn recover_answers_take_either_term_spelling() {
        let result: RecoverResult = serde_json::from_value(json!({"survivors": [
            {"id": 1, "reachable": false, "last_log_index": null, "term": null},
            {"id": 2, "reachable": true, "last_log_index": 40, "last_log_term": 3}],
            "this_node": 2, "new_cluster_id": null, "restarting": false}))
        .unwrap();
        assert_eq!(result.survivors[1].term, Some(3));
        assert_eq!(result.survivors[0].last_log_index, None);
        assert_eq!(
            serde_json::to_value(RecoverRequest { confirm_down: vec![1, 3], standalone: false, dry_run: true })
                .unwrap(),
            json!({"confirm_down": [1, 3], "standalone": false, "dry_run": true})
        );
    }

    #[test]
    fn status_fields_read_typed_and_tolerate_absence() {
        let body = json!({"cluster_id": "c", "node_id": 1, "view_of": 1, "leader": 1, "leader_url": null,
            "term": 2, "commit_index": 5, "applied_index": 5, "revision": 3, "voters": 3, "warnings": [],
            "members": [{"id": 1, "client_url": "http://a", "peer_addr": "a:1", "voter": true, "reachable": null,
                         "matched_index": null, "lag": null, "role": "witness", "priority": 0, "leader": true}],
            "ha": {"state": "degraded", "reasons": ["node 3 is unreachable"], "view_of": 1,
                   "topology": {"kind": "replica-set", "voters": 3}, "survives": "one failure", "primary": 1},
            "config_version": 4, "failovers_last_hour": 1, "pending_restart": null,
            "detached": {"generation": 1, "cluster_id": "c", "kept": 2},
            "ping_targets": [{"target": "10.0.0.1", "address": "10.0.0.1", "last_ok_ms_ago": 300,
                "last_rtt_us": 120, "last_error": null, "failed_in_a_row": 0, "socket": "datagram"}],
            "candidacy_withheld": null, "failback": "stays"});
        let status: Status = serde_json::from_value(body.clone()).unwrap();
        let ha = status.ha().unwrap();
        assert!(!ha.is_stable());
        assert_eq!(ha.topology_kind(), "replica set");
        assert_eq!((status.config_version(), status.failovers_last_hour()), (Some(4), Some(1)));
        assert_eq!(status.pending_restart(), None);
        assert_eq!(status.detached().unwrap().kept, Some(2));
        assert_eq!(status.ping_targets()[0].last_rtt_us, Some(120));
        assert_eq!(status.failback().as_deref(), Some("stays"));
        assert_eq!((status.members[0].role(), status.members[0].priority()), (Some("witness"), Some(0)));
        assert!(!status.members[0].may_be_primary());
        // Unchanged for --json.
        assert_eq!(serde_json::to_value(&status).unwrap(), body);
        // An older server's status has none of it.
        let old: Status = serde_json::from_value(json!({"node_id": 1, "view_of": 1, "leader": null, "term": 0,
            "commit_index": 0, "applied_index": 0, "revision": 0, "voters": 0}))
        .unwrap();
        assert!(old.ha().is_none() && old.ping_targets().is_empty() && old.detached().is_none());
    }
}
