//! The replicated administrative state: the cluster-wide HA configuration with its draft,
//! the audit log, and the record of teardowns.
//!
//! ```text
//!   haven config draft set K V ──▶ EditHaDraft ──▶ draft (based on version v)
//!   haven config apply         ──▶ ApplyHaDraft{v} ──▶ config v+1, audit "config.apply"
//!   haven teardown             ──▶ Teardown ──▶ generation g, detached (node, incarnation)
//!   every admin command, every automatic action ──▶ AuditRecord{seq, time, who, node, what}
//! ```
//!
//! All of it lives in the state machine, so it is replicated, survives failovers and
//! switchovers, and reads the same on every node. Everything here is deterministic: time
//! comes from the proposing leader's stamp on the request.

use std::collections::BTreeMap;
use std::collections::VecDeque;

use serde::Deserialize;
use serde::Serialize;

use crate::ha::config::apply_draft;
use crate::ha::config::value_from_text;
use crate::ha::config::ApplyError;
use crate::ha::config::Draft;
use crate::ha::config::Edit;
use crate::ha::config::HaConfig;
use crate::ha::config::Versioned;
use crate::ha::config::DRAFT_CHANGES_MAX;
use crate::ha::config::UNSET_SHOWN;

/// Audit records kept. Administrative actions are rare (a busy cluster sees tens a day);
/// 10,000 records keep years of them while bounding every snapshot to a few megabytes
/// (a record is well under 1 KiB). The oldest are dropped first; sequence numbers go on.
pub const AUDIT_RECORDS_MAX: usize = 10_000;

/// Longest text of one audit field (summary, old or new value). Longer text is cut with
/// a marker: a record must stay small whatever a config value holds.
pub const AUDIT_TEXT_BYTES_MAX: usize = 4096;

/// Audit records returned by one read: a page, so an answer stays small.
pub const AUDIT_PAGE_MAX: usize = 1000;

/// The actor of automatic actions (failover, failback, the bootstrap token).
pub const AUTOMATIC_ACTOR: &str = "haven";

/// One change of one value, as the audit log shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditChange {
    pub what: String,
    /// `None` when the value did not exist before (or is not shown, e.g. a secret).
    pub old: Option<String>,
    pub new: Option<String>,
}

impl AuditChange {
    pub fn new(what: impl Into<String>, old: Option<String>, new: Option<String>) -> AuditChange {
        AuditChange { what: what.into(), old: old.map(cut), new: new.map(cut) }
    }
}

/// One administrative or automatic action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// 1, 2, 3, ... across the cluster's life; never reused, even after trimming.
    pub seq: u64,
    /// The proposing leader's clock, ms since the Unix epoch.
    pub at_ms: u64,
    /// The name of the token the request was made with, or [`AUTOMATIC_ACTOR`].
    pub actor: String,
    /// The node that received the request (0 when unknown).
    pub node: u64,
    /// A dotted action name: `config.apply`, `switchover`, `failover`, `token.create`, ...
    pub action: String,
    /// What happened, in words.
    pub summary: String,
    pub changes: Vec<AuditChange>,
}

/// Switchovers the cluster carries out per [`SWITCHOVER_WINDOW_MS`]; more are refused (429).
/// Each one pauses writes briefly and moves the primary: an operator needs one or two at a
/// time (a rolling restart, maintenance), while a write token in a loop could otherwise keep
/// the cluster changing primaries. Counted from the replicated audit log, so the bound holds
/// across leaders; refused and failed attempts do not count.
pub const SWITCHOVERS_PER_WINDOW_MAX: usize = 10;
pub const SWITCHOVER_WINDOW_MS: u64 = 60_000;

/// Actor name shown to callers without the admin role in place of a token's name.
pub const REDACTED_ACTOR: &str = "(a token)";

impl AuditRecord {
    /// The record as a caller without the admin role sees it: tokens are admin business
    /// (`GET /v1/tokens` is admin-only), so a token action says only what kind it was, and
    /// no actor is named by its token's name; automatic actions keep their actor.
    pub fn for_non_admin(&self) -> AuditRecord {
        let mut record = self.clone();
        if record.action.starts_with("token.") {
            record.summary = format!("{} (details are shown to admin tokens only)", record.action);
            record.changes.clear();
        }
        if record.actor != AUTOMATIC_ACTOR {
            record.actor = REDACTED_ACTOR.to_string();
        }
        record
    }
}

/// What an action contributes to its record; the state machine adds seq, time, actor, node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub action: String,
    pub summary: String,
    pub changes: Vec<AuditChange>,
}

impl AuditEntry {
    pub fn new(action: impl Into<String>, summary: impl Into<String>) -> AuditEntry {
        AuditEntry { action: action.into(), summary: cut(summary.into()), changes: Vec::new() }
    }

    pub fn with_change(mut self, change: AuditChange) -> AuditEntry {
        self.changes.push(change);
        self
    }
}

/// The bounded audit log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditLog {
    records: VecDeque<AuditRecord>,
    last_seq: u64,
}

impl AuditLog {
    pub fn append(&mut self, at_ms: u64, actor: &str, node: u64, entry: AuditEntry) -> u64 {
        self.last_seq += 1;
        self.records.push_back(AuditRecord {
            seq: self.last_seq,
            at_ms,
            actor: actor.to_string(),
            node,
            action: entry.action,
            summary: entry.summary,
            changes: entry.changes,
        });
        while self.records.len() > AUDIT_RECORDS_MAX {
            self.records.pop_front();
        }
        self.last_seq
    }

    /// Records with `seq > after`, oldest first, at most `limit`.
    pub fn since(&self, after: u64, limit: usize) -> Vec<AuditRecord> {
        self.records.iter().filter(|record| record.seq > after).take(limit).cloned().collect()
    }

    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Switchovers carried out (requested and not failed) at or after `since_ms`, by the
    /// record times: what [`SWITCHOVERS_PER_WINDOW_MAX`] counts.
    pub fn switchovers_since(&self, since_ms: u64) -> usize {
        let recent = || self.records.iter().rev().take_while(|record| record.at_ms >= since_ms);
        let requested = recent().filter(|record| record.action == "switchover").count();
        let failed = recent().filter(|record| record.action == "switchover.failed").count();
        requested.saturating_sub(failed)
    }

    pub fn last(&self) -> Option<&AuditRecord> {
        self.records.back()
    }
}

/// A draft as stored: values as JSON text, because the store's binary encoding cannot
/// carry free-form JSON values. `None` = unset (back to the default).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredDraft {
    pub base_version: u64,
    pub changes: BTreeMap<String, Option<String>>,
}

/// Hex digits of a draft digest: 64 bits tell one draft from another as surely as an
/// operator needs (it detects edits, it does not guard against forgery: only admins edit),
/// and stay short enough to copy from `haven config diff`.
pub const DRAFT_DIGEST_HEX_CHARS: usize = 16;

impl StoredDraft {
    /// What the draft says, in [`DRAFT_DIGEST_HEX_CHARS`] hex digits: the SHA-256 of its
    /// base version and edits. `haven config diff` shows it and `apply` may require it, so
    /// a draft changed by someone else after it was reviewed is refused instead of applied
    /// unseen (issue 14: alice reviewed one change, bob added another, alice's apply
    /// applied both).
    pub fn digest(&self) -> String {
        let canonical = serde_json::json!({ "base_version": self.base_version, "changes": self.changes });
        let hash = ring::digest::digest(&ring::digest::SHA256, canonical.to_string().as_bytes());
        let mut text = crate::auth::hex(hash.as_ref());
        text.truncate(DRAFT_DIGEST_HEX_CHARS);
        text
    }

    /// The draft in the form the HA core works with.
    pub fn to_draft(&self) -> Draft {
        let mut draft = Draft::new(self.base_version);
        for (key, value) in &self.changes {
            let edit = match value {
                Some(json) => Edit::Set(value_from_text(json)),
                None => Edit::Unset,
            };
            draft.changes.insert(key.clone(), edit);
        }
        draft
    }
}

/// A node detached by a teardown: it may never act as a member of this cluster again.
/// Keyed by incarnation, so the same node id wiped and joined anew is a new member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DetachedNode {
    pub node_id: u64,
    pub incarnation: String,
    pub generation: u64,
}

/// A member removed from the membership (`haven members remove`, `haven leave`), by data
/// dir incarnation: when it speaks to the cluster again it is told it was removed and
/// stops, instead of pre-voting forever (issue 14, like etcd's "permanently removed").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemovedMember {
    pub node_id: u64,
    pub incarnation: String,
    /// Its TLS key: members keep accepting connections made with it, only to tell it that
    /// it was removed (every other request is refused).
    pub fingerprint: String,
}

/// Removed members remembered: a cluster sees a handful of removals in its life; 1,000
/// bounds the state while covering any realistic history (the oldest are forgotten first,
/// and a forgotten one only goes back to pre-voting unanswered).
pub const REMOVED_MEMBERS_MAX: usize = 1_000;

/// A cluster this one was recovered from (`haven recover` after a lost majority): its old
/// members are told, when they speak to any member of this one, that they were recovered
/// away, so they stop instead of forming the old cluster again beside this one (issue 14).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveredFrom {
    /// The old cluster's id.
    pub cluster_id: String,
    /// The node that recovered (the new cluster's first member).
    pub survivor: u64,
    /// The old voters the operator confirmed down.
    pub confirmed_down: Vec<u64>,
    /// The old cluster's other members and their TLS keys: members of this cluster accept
    /// connections made with them, only to tell them they were recovered away.
    pub old_members: Vec<OldMember>,
}

/// A member of a cluster that was recovered from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OldMember {
    pub node_id: u64,
    pub fingerprint: String,
}

/// What a recovery after a lost majority keeps of the old cluster
/// (`KvState::move_to_new_cluster`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    pub survivor: u64,
    pub confirmed_down: Vec<u64>,
    pub old_members: Vec<OldMember>,
}

/// The administrative part of the replicated state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminState {
    pub ha_config: Versioned<HaConfig>,
    pub draft: Option<StoredDraft>,
    pub audit: AuditLog,
    /// How many teardowns this cluster has been through.
    pub teardown_generation: u64,
    pub detached: Vec<DetachedNode>,
    /// Members removed from the membership, oldest first, at most [`REMOVED_MEMBERS_MAX`].
    pub removed: Vec<RemovedMember>,
    /// The clusters this one was recovered from, oldest first.
    pub recovered_from: Vec<RecoveredFrom>,
}

impl Default for AdminState {
    fn default() -> AdminState {
        AdminState {
            ha_config: Versioned { version: 0, value: HaConfig::default() },
            draft: None,
            audit: AuditLog::default(),
            teardown_generation: 0,
            detached: Vec::new(),
            removed: Vec::new(),
            recovered_from: Vec::new(),
        }
    }
}

/// Why an HA configuration command was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminRefusal {
    Apply(ApplyError),
    NoDraft,
    DraftFull,
    BadValue(String),
    /// The draft was edited after the operator reviewed it (its digest differs).
    ChangedSinceReview {
        reviewed: String,
        now: String,
    },
}

impl std::fmt::Display for AdminRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdminRefusal::Apply(error) => write!(f, "{error}"),
            AdminRefusal::NoDraft => f.write_str("there is no draft; make one with `haven config draft set KEY VALUE`"),
            AdminRefusal::DraftFull => {
                write!(f, "the draft holds {DRAFT_CHANGES_MAX} changes already; apply or discard it first")
            }
            AdminRefusal::BadValue(reason) => f.write_str(reason),
            AdminRefusal::ChangedSinceReview { reviewed, now } => write!(
                f,
                "the draft changed since you reviewed it (you reviewed digest {reviewed}, it is now {now}; `haven \
                 audit` shows who edited it): review it again with `haven config diff` and apply what you see"
            ),
        }
    }
}

impl AdminState {
    /// Records a member's removal (its id, data dir incarnation and key).
    pub fn record_removal(&mut self, node_id: u64, incarnation: &str, fingerprint: &str) {
        if self.was_removed(node_id, incarnation) {
            return;
        }
        self.removed.push(RemovedMember {
            node_id,
            incarnation: incarnation.to_string(),
            fingerprint: fingerprint.to_string(),
        });
        if self.removed.len() > REMOVED_MEMBERS_MAX {
            self.removed.remove(0);
        }
    }

    /// Whether this member (id and incarnation) was removed from this cluster.
    pub fn was_removed(&self, node_id: u64, incarnation: &str) -> bool {
        self.removed.iter().any(|removed| removed.node_id == node_id && removed.incarnation == incarnation)
    }

    /// The keys of nodes that are no longer members but are still to be told so when they
    /// connect: removed and detached members, and the members of clusters this one was
    /// recovered from.
    pub fn expelled_keys(&self) -> Vec<String> {
        let removed = self.removed.iter().map(|removed| removed.fingerprint.clone());
        let recovered =
            self.recovered_from.iter().flat_map(|from| from.old_members.iter().map(|m| m.fingerprint.clone()));
        removed.chain(recovered).filter(|key| !key.is_empty()).collect()
    }

    /// The recovery that replaced the cluster `cluster_id`, if this cluster came from it.
    pub fn recovered_from(&self, cluster_id: &str) -> Option<&RecoveredFrom> {
        self.recovered_from.iter().find(|from| from.cluster_id == cluster_id)
    }

    pub fn is_detached(&self, node_id: u64, incarnation: &str) -> Option<u64> {
        self.detached
            .iter()
            .find(|detached| detached.node_id == node_id && detached.incarnation == incarnation)
            .map(|detached| detached.generation)
    }

    /// Adds edits (key, JSON value or `None` to unset) to the draft, starting a draft on
    /// the current version if there is none; all or none. Keys and values are checked at
    /// apply (all rules at once), not here, so an operator can build a draft in any order.
    /// Returns the audit record of the edit (who made it is added by the state machine).
    pub fn edit_draft(&mut self, edits: &[(String, Option<String>)]) -> Result<AuditEntry, AdminRefusal> {
        let before = self.draft.clone();
        self.edit_draft_unaudited(edits)?;
        let draft = self.draft.as_ref().map(StoredDraft::digest).unwrap_or_default();
        let mut entry = AuditEntry::new(
            "config.draft",
            format!(
                "draft edited: {} (draft digest now {draft})",
                edits.iter().map(|(key, _)| key.as_str()).collect::<Vec<_>>().join(", ")
            ),
        );
        let shown = |value: &Option<String>| value.clone().unwrap_or_else(|| UNSET_SHOWN.to_string());
        for (key, value) in edits {
            let old = before.as_ref().and_then(|draft| draft.changes.get(key)).map(shown);
            entry = entry.with_change(AuditChange::new(format!("draft {key}"), old, Some(shown(value))));
        }
        Ok(entry)
    }

    fn edit_draft_unaudited(&mut self, edits: &[(String, Option<String>)]) -> Result<(), AdminRefusal> {
        for (key, value_json) in edits {
            if let Some(json) = value_json {
                serde_json::from_str::<serde_json::Value>(json)
                    .map_err(|error| AdminRefusal::BadValue(format!("value for {key} is not JSON: {error}")))?;
            }
        }
        let version = self.ha_config.version;
        let mut draft =
            self.draft.clone().unwrap_or_else(|| StoredDraft { base_version: version, changes: BTreeMap::new() });
        for (key, value_json) in edits {
            draft.changes.insert(key.clone(), value_json.clone());
        }
        if draft.changes.len() > DRAFT_CHANGES_MAX {
            return Err(AdminRefusal::DraftFull);
        }
        self.draft = Some(draft);
        Ok(())
    }

    /// Applies the draft made from `base_version` (the version the operator saw). The
    /// state machine checks the rules that need no member addresses; the server checks the
    /// rest (ping targets against members' addresses) before proposing.
    ///
    /// `reviewed`: the digest of the draft the operator reviewed; a draft that says
    /// anything else now is refused as [`AdminRefusal::ChangedSinceReview`].
    pub fn apply_draft(
        &mut self,
        base_version: u64,
        reviewed: Option<&str>,
    ) -> Result<(u64, AuditEntry), AdminRefusal> {
        let Some(stored) = &self.draft else {
            return Err(AdminRefusal::NoDraft);
        };
        if let Some(reviewed) = reviewed {
            let now = stored.digest();
            if now != reviewed {
                return Err(AdminRefusal::ChangedSinceReview { reviewed: reviewed.to_string(), now });
            }
        }
        let mut draft = stored.to_draft();
        // The operator applies what they saw: a draft re-based meanwhile is stale too.
        if base_version != draft.base_version {
            return Err(AdminRefusal::Apply(ApplyError::Stale { base: base_version, current: draft.base_version }));
        }
        draft.base_version = stored.base_version;
        let applied = apply_draft(&self.ha_config, &draft, &[]).map_err(AdminRefusal::Apply)?;
        let version = self.ha_config.version + 1;
        let mut entry = AuditEntry::new(
            "config.apply",
            format!("HA configuration version {version} ({} change(s))", applied.changes.len()),
        );
        for change in &applied.changes {
            entry = entry.with_change(AuditChange::new(
                change.key.clone(),
                (!change.old.is_null()).then(|| change.old.to_string()),
                (!change.new.is_null()).then(|| change.new.to_string()),
            ));
        }
        self.ha_config = Versioned { version, value: applied.config };
        self.draft = None;
        Ok((version, entry))
    }

    /// Records a teardown: `detached` nodes leave for good; returns the new generation.
    pub fn teardown(&mut self, detached: &[(u64, String)]) -> u64 {
        self.teardown_generation += 1;
        let generation = self.teardown_generation;
        for (node_id, incarnation) in detached {
            if self.is_detached(*node_id, incarnation).is_none() {
                self.detached.push(DetachedNode { node_id: *node_id, incarnation: incarnation.clone(), generation });
            }
        }
        generation
    }
}

/// Cuts `text` to [`AUDIT_TEXT_BYTES_MAX`] on a character boundary.
fn cut(mut text: String) -> String {
    if text.len() > AUDIT_TEXT_BYTES_MAX {
        let mut end = AUDIT_TEXT_BYTES_MAX;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("… (cut)");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switchovers_count_within_the_window_without_failed_ones() {
        let mut log = AuditLog::default();
        log.append(1_000, "a", 1, AuditEntry::new("switchover", "old"));
        log.append(70_000, "a", 1, AuditEntry::new("switchover", "s1"));
        log.append(71_000, "a", 1, AuditEntry::new("switchover", "s2"));
        log.append(71_500, "a", 1, AuditEntry::new("switchover.failed", "unreachable"));
        log.append(72_000, "a", 1, AuditEntry::new("config.apply", "x"));
        log.append(73_000, "a", 1, AuditEntry::new("switchover", "s3"));
        assert_eq!(log.switchovers_since(73_000 - SWITCHOVER_WINDOW_MS), 2);
        assert_eq!(log.switchovers_since(0), 3);
        assert_eq!(log.switchovers_since(80_000), 0);
    }

    /// Readers see that token actions happened, never a token's id, name or role.
    #[test]
    fn non_admins_see_no_token_details() {
        let mut log = AuditLog::default();
        log.append(
            1,
            "alice",
            1,
            AuditEntry::new("token.create", "token 0123456789abcdef (\"ci\", role admin) created"),
        );
        log.append(2, AUTOMATIC_ACTOR, 1, AuditEntry::new("failover", "node 2 took over"));
        let records: Vec<AuditRecord> = log.since(0, 10).iter().map(AuditRecord::for_non_admin).collect();
        let text = format!("{records:?}");
        for secret in ["0123456789abcdef", "\"ci\"", "role admin", "alice"] {
            assert!(!text.contains(secret), "{secret} shown: {text}");
        }
        assert_eq!(records[0].action, "token.create");
        assert_eq!((records[1].actor.as_str(), records[1].summary.as_str()), (AUTOMATIC_ACTOR, "node 2 took over"));
    }

    fn edit(key: &str, value: Option<&str>) -> Vec<(String, Option<String>)> {
        vec![(key.to_string(), value.map(str::to_string))]
    }

    #[test]
    fn audit_log_is_bounded_and_keeps_sequence_numbers() {
        let mut log = AuditLog::default();
        for i in 0..(AUDIT_RECORDS_MAX + 5) {
            log.append(i as u64, "alice", 1, AuditEntry::new("test", format!("action {i}")));
        }
        assert_eq!(log.last_seq(), (AUDIT_RECORDS_MAX + 5) as u64);
        let all = log.since(0, usize::MAX);
        assert_eq!(all.len(), AUDIT_RECORDS_MAX);
        assert_eq!(all[0].seq, 6, "the oldest records are dropped first");
        let tail = log.since(log.last_seq() - 2, 10);
        assert_eq!(tail.iter().map(|r| r.seq).collect::<Vec<_>>(), [log.last_seq() - 1, log.last_seq()]);
    }

    #[test]
    fn long_audit_text_is_cut_on_a_character_boundary() {
        let entry = AuditEntry::new("x", "é".repeat(AUDIT_TEXT_BYTES_MAX));
        assert!(entry.summary.len() <= AUDIT_TEXT_BYTES_MAX + "… (cut)".len());
        assert!(entry.summary.ends_with("(cut)"));
    }

    #[test]
    fn draft_then_apply_bumps_the_version_and_clears_the_draft() {
        let mut admin = AdminState::default();
        admin.edit_draft(&edit("failback", Some("true"))).unwrap();
        admin.edit_draft(&edit("failed_pings", Some("6"))).unwrap();
        let (version, entry) = admin.apply_draft(0, None).unwrap();
        assert_eq!(version, 1);
        assert_eq!(admin.ha_config.version, 1);
        assert!(admin.ha_config.value.failback);
        assert_eq!(admin.ha_config.value.failed_pings, Some(6));
        assert!(admin.draft.is_none());
        assert_eq!(entry.action, "config.apply");
        assert_eq!(entry.changes.len(), 2);
        assert!(entry.changes.iter().any(|c| c.what == "failback" && c.new.as_deref() == Some("true")));
    }

    /// Issue 14: edits are audited with their author (the state machine adds who), and an
    /// apply of a reviewed draft refuses a draft edited since the review.
    #[test]
    fn a_draft_changed_after_review_is_refused() {
        let mut admin = AdminState::default();
        let entry = admin.edit_draft(&edit("failback", Some("true"))).unwrap();
        assert_eq!(entry.action, "config.draft");
        assert_eq!(entry.changes, [AuditChange::new("draft failback", None, Some("true".into()))]);
        let reviewed = admin.draft.as_ref().unwrap().digest();
        assert_eq!(reviewed.len(), DRAFT_DIGEST_HEX_CHARS);
        // Someone else adds an edit after the review.
        let entry = admin.edit_draft(&edit("failed_pings", Some("6"))).unwrap();
        assert!(entry.summary.contains("failed_pings"), "{}", entry.summary);
        match admin.apply_draft(0, Some(&reviewed)) {
            Err(refusal @ AdminRefusal::ChangedSinceReview { .. }) => {
                assert!(refusal.to_string().contains(&format!("you reviewed digest {reviewed}")), "{refusal}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert_eq!(admin.ha_config.version, 0, "nothing applied");
        // Reviewing again and applying what was reviewed works.
        let reviewed = admin.draft.as_ref().unwrap().digest();
        let (version, entry) = admin.apply_draft(0, Some(&reviewed)).unwrap();
        assert_eq!((version, entry.changes.len()), (1, 2));
        // The same edits give the same digest (a retried edit changes nothing).
        let mut a = AdminState::default();
        let mut b = AdminState::default();
        a.edit_draft(&edit("failback", Some("true"))).unwrap();
        b.edit_draft(&edit("failback", Some("true"))).unwrap();
        b.edit_draft(&edit("failback", Some("true"))).unwrap();
        assert_eq!(a.draft.unwrap().digest(), b.draft.unwrap().digest());
    }

    #[test]
    fn stale_draft_is_refused() {
        let mut admin = AdminState::default();
        admin.edit_draft(&edit("failback", Some("true"))).unwrap();
        admin.apply_draft(0, None).unwrap();
        // Someone else's draft made from version 0 while this one was applied.
        admin.draft =
            Some(StoredDraft { base_version: 0, changes: [("failback".into(), Some("false".into()))].into() });
        match admin.apply_draft(0, None) {
            Err(AdminRefusal::Apply(ApplyError::Stale { base: 0, current: 1 })) => {}
            other => panic!("expected a stale refusal, got {other:?}"),
        }
        assert_eq!(admin.ha_config.version, 1, "nothing changed");
        // An operator who saw a different base than the draft's is refused too.
        let mut admin = AdminState::default();
        admin.edit_draft(&edit("failback", Some("true"))).unwrap();
        assert!(matches!(admin.apply_draft(3, None), Err(AdminRefusal::Apply(ApplyError::Stale { .. }))));
    }

    #[test]
    fn invalid_draft_names_every_broken_rule_and_changes_nothing() {
        let mut admin = AdminState::default();
        admin.edit_draft(&edit("failed_pings", Some("50"))).unwrap();
        admin.edit_draft(&edit("file_sync_interval_s", Some("1"))).unwrap();
        admin.edit_draft(&edit("no_such_key", Some("1"))).unwrap();
        match admin.apply_draft(0, None) {
            Err(AdminRefusal::Apply(ApplyError::Invalid(errors))) => {
                let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
                assert!(keys.contains(&"failed_pings"), "{keys:?}");
                assert!(keys.contains(&"file_sync_interval_s"), "{keys:?}");
                assert!(keys.contains(&"no_such_key"), "{keys:?}");
            }
            other => panic!("expected invalid, got {other:?}"),
        }
        assert_eq!(admin.ha_config.version, 0);
        assert!(admin.draft.is_some(), "the draft stays for the operator to mend");
    }

    #[test]
    fn nothing_to_apply_and_no_draft_are_clear() {
        let mut admin = AdminState::default();
        assert_eq!(admin.apply_draft(0, None), Err(AdminRefusal::NoDraft));
        admin.edit_draft(&edit("failback", Some("false"))).unwrap();
        assert_eq!(admin.apply_draft(0, None), Err(AdminRefusal::Apply(ApplyError::NothingToApply)));
        assert!(admin.edit_draft(&edit("failback", Some("{not json"))).is_err());
    }

    #[test]
    fn removals_are_remembered_by_incarnation_and_bounded() {
        let mut admin = AdminState::default();
        admin.record_removal(3, "inc-a", "sha256:a");
        admin.record_removal(3, "inc-a", "sha256:a");
        assert_eq!(admin.removed.len(), 1, "recorded once");
        assert_eq!(admin.expelled_keys(), ["sha256:a"]);
        assert!(admin.was_removed(3, "inc-a"));
        assert!(!admin.was_removed(3, "inc-b"), "the same id with a wiped data dir is a new member");
        for i in 0..REMOVED_MEMBERS_MAX as u64 {
            admin.record_removal(10 + i, "x", "");
        }
        assert_eq!(admin.removed.len(), REMOVED_MEMBERS_MAX);
        assert!(!admin.was_removed(3, "inc-a"), "the oldest is forgotten first");
        assert!(admin.expelled_keys().is_empty(), "no key kept for the forgotten one; blank keys are not keys");
    }

    #[test]
    fn teardown_generations_grow_and_detach_by_incarnation() {
        let mut admin = AdminState::default();
        let first = admin.teardown(&[(2, "inc-a".into()), (3, "inc-b".into())]);
        assert_eq!(first, 1);
        assert_eq!(admin.is_detached(2, "inc-a"), Some(1));
        assert_eq!(admin.is_detached(2, "inc-new"), None, "a wiped node is a new member");
        let second = admin.teardown(&[(4, "inc-c".into())]);
        assert_eq!(second, 2);
        assert_eq!(admin.is_detached(4, "inc-c"), Some(2));
    }
}
