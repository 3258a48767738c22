//! The replicated key-value state machine, as a pure value.
//!
//! Every node applies the same commands in the same (log) order to a `KvState`, so every
//! node holds the same state. `apply` is deterministic: no clock, no randomness, no hash
//! iteration order in anything that is observable.
//!
//! Revisions: one cluster-wide counter that grows by exactly one per successful change
//! (a put, or a delete of a present key), like etcd's. A compare that fails, a delete of an
//! absent key and a retried request change nothing and do not advance it.
//!
//! History: the last `history_revisions` change events, and at most `HISTORY_BYTES_MAX`
//! bytes of them, are kept so a watcher can resume from any revision at or after
//! `compact_revision` with none skipped or repeated.
//!
//! Size: the keys and values together are bounded by `KV_BYTES_MAX`; a put that would go
//! beyond it is refused (`CommandResult::Refused`) and changes nothing. Both sizes are
//! counted as the state changes (`sized`), so the checks are O(1) and deterministic.
//!
//! Tokens: the bearer tokens (hashes only, see `crate::auth`) live here too, so creating
//! and revoking one is a Raft write like any other and every node authenticates against
//! the same table. A request made with a token carries the token's id and the access its
//! route needed; `apply` checks the token again at that point in the log, against the time
//! the leader stamped on the request, so a token revoked or expired while a write was in
//! flight cannot make that write land. Token changes are bookkeeping: they do not advance
//! the KV revision and are not in the watch history.
//!
//! Request ids: a request may carry an id so that a retry applies at most once. The id is
//! the caller's, not the cluster's: the state machine remembers each result under the
//! caller (the token id the request was made with, or the server itself for its own
//! requests) and the id, with a digest of the command. A retry (same caller, id and
//! command) gets the remembered result and changes nothing; the same id with a different
//! command is refused (`RequestIdReused`) and changes nothing; another caller's same id is
//! another request. The last `REQUEST_IDS_REMEMBERED` ids are remembered.
//!
//! Representation: `KvState` is built from persistent data structures (`imbl`'s B-tree map,
//! RRB vector and HAMT, and copy-on-write `Arc`s for the rarely changed parts), so `clone`
//! is O(1) and a snapshot can take a consistent copy of the whole state between two applies
//! and encode it elsewhere while applies go on. They encode exactly like the standard
//! collections they replaced (a map as a map, a sequence as a sequence), and byte values
//! encode as byte strings, which postcard writes exactly like a sequence of `u8`: snapshots
//! and log entries written before read the same.
//!
//! Stored layouts: log entries (`Request`) keep the layout they always had (new commands
//! are appended). The state's layout changed when request ids got their caller and command
//! digest (format 0, [`format_v0`], before that) and when the administrative state began
//! to keep removed members and recovery lineage (format 1, [`format_v1`], before that)
//! and when it began to keep the members' durability marks (format 2, [`format_v2`],
//! before that); older snapshots are read through their layout and converted (the store marks newer
//! snapshots with their format number).

use std::collections::BTreeMap;
use std::sync::Arc;

use imbl::HashMap;
use imbl::Vector;
use serde::Deserialize;
use serde::Serialize;

use crate::admin::AdminRefusal;
use crate::admin::AdminState;
use crate::admin::AuditChange;
use crate::admin::AuditEntry;
use crate::admin::RecoveredFrom;
use crate::admin::Recovery;
use crate::admin::AUTOMATIC_ACTOR;
use crate::auth::permits;
use crate::auth::validate_token_name;
use crate::auth::Access;
use crate::auth::Auth;
use crate::auth::JoinClaim;
use crate::auth::PresentedToken;
use crate::auth::Role;
use crate::auth::TokenRecord;
use crate::auth::SHA256_HEX_CHARS;
use crate::auth::TOKENS_MAX;
use crate::auth::TOKEN_TTL_SECONDS_MAX;
use crate::auth::TOKEN_TTL_SECONDS_MIN;
use crate::durability::DurableMarks;
use crate::durability::MarkEntry;
use crate::durability::DURABLE_MARKS_MAX;
use crate::key::key_has_prefix;
use crate::limits::HISTORY_BYTES_MAX;
use crate::limits::HISTORY_REVISIONS_DEFAULT;
use crate::limits::KV_BYTES_MAX;
use crate::limits::REQUEST_IDS_REMEMBERED;

pub mod format_v0;
pub mod format_v1;
pub mod format_v2;
#[cfg(test)]
mod properties;
mod sized;

pub use sized::entry_bytes;
pub use sized::Entries;
pub use sized::History;

/// A change to the store, as proposed through Raft.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Set `key` to `value`. With `prev_revision`, only if the key's mod_revision equals it
    /// (0 = the key must not exist).
    Put {
        key: String,
        #[serde(with = "byte_string")]
        value: Vec<u8>,
        prev_revision: Option<u64>,
    },
    /// Delete `key`, with the same optional compare.
    Delete {
        key: String,
        prev_revision: Option<u64>,
    },
    /// Records the cluster id; proposed once by the bootstrapping node. Later ones are ignored.
    InitCluster {
        cluster_id: String,
    },
    /// Adds a token. The server drew `id` and the secret; only the secret's hash travels.
    /// The token expires `ttl_ms` after the request's `now_ms` stamp (never when `None`).
    CreateToken {
        id: String,
        name: String,
        role: Role,
        sha256_hex: String,
        ttl_ms: Option<u64>,
    },
    /// Removes a token; requests made with it are refused from this point in the log on.
    RevokeToken {
        id: String,
    },
    /// Spends join token `id` on the node `node_id` with data dir `incarnation`. Only the
    /// first claim wins; the same node may repeat it (a retried or resumed join).
    ConsumeJoinToken {
        id: String,
        node_id: u64,
        incarnation: String,
    },
    /// Changes nothing: commits the check of the request's token at this point in the log
    /// (before a membership change, which is not a state machine command).
    Authorize,
    /// Maintenance mode (Patroni's "pause"): while on, no node starts an election on its
    /// own, so there is no automatic failover or failback; switchover still works.
    SetMaintenance {
        on: bool,
    },
    /// Sets (`Some`, JSON text) or unsets (`None`) keys of the HA configuration draft,
    /// starting a draft on the current version if there is none. All or none apply.
    EditHaDraft {
        edits: Vec<(String, Option<String>)>,
    },
    DiscardHaDraft,
    /// Applies the draft, which must be based on `base_version` (what the operator saw) and
    /// on the current version (nobody applied since).
    ApplyHaDraft {
        base_version: u64,
    },
    /// Seed 002's teardown: `detached` (node id, incarnation) leave the cluster for good;
    /// `keep` continues as the standalone server.
    Teardown {
        keep: u64,
        detached: Vec<(u64, String)>,
    },
    /// Records an action that is not itself a state machine command (a membership change,
    /// a switchover, a failover). Only servers propose it; no client route builds one.
    RecordAudit {
        entry: AuditEntry,
    },
    /// Deletes join token `id` once the node it was claimed for (`node_id`) is admitted:
    /// a join token admits one node, once, and nobody after (not even that node once it
    /// has been removed). Made with the token itself.
    SpendJoinToken {
        id: String,
        node_id: u64,
    },
    /// Applies the draft like [`Command::ApplyHaDraft`], only if it is still the draft the
    /// operator reviewed: its digest (`StoredDraft::digest`) must be `digest`.
    ApplyReviewedDraft {
        base_version: u64,
        digest: String,
    },
    /// Records that member `node_id` with data dir `incarnation` is being removed from the
    /// membership, so it can be told so when it speaks again (proposed just before the
    /// membership change; it changes nothing for a member that stays).
    RecordRemoval {
        node_id: u64,
        incarnation: String,
        fingerprint: String,
    },
    /// Records how far each current member was seen to hold the log on disk (see
    /// `crate::durability`): lists every member; a member's mark never goes down for one
    /// data dir, and members not listed are dropped. Only the leader proposes it.
    RecordDurable {
        marks: Vec<MarkEntry>,
    },
}

impl Command {
    /// Commands the server proposes for itself, never on a client's behalf (the cluster id,
    /// audit records of automatic actions): a leader refuses them from the wire, and no
    /// client route builds them.
    pub fn is_server_only(&self) -> bool {
        match self {
            Command::InitCluster { .. } | Command::RecordAudit { .. } | Command::RecordDurable { .. } => true,
            Command::Put { .. }
            | Command::Delete { .. }
            | Command::CreateToken { .. }
            | Command::RevokeToken { .. }
            | Command::ConsumeJoinToken { .. }
            | Command::Authorize
            | Command::SetMaintenance { .. }
            | Command::EditHaDraft { .. }
            | Command::DiscardHaDraft
            | Command::ApplyHaDraft { .. }
            | Command::ApplyReviewedDraft { .. }
            | Command::Teardown { .. }
            | Command::SpendJoinToken { .. }
            | Command::RecordRemoval { .. } => false,
        }
    }

    /// A short name for logs and refusals (never a key or value).
    pub fn name(&self) -> &'static str {
        match self {
            Command::Put { .. } => "put",
            Command::Delete { .. } => "delete",
            Command::InitCluster { .. } => "init-cluster",
            Command::CreateToken { .. } => "create-token",
            Command::RevokeToken { .. } => "revoke-token",
            Command::ConsumeJoinToken { .. } => "consume-join-token",
            Command::Authorize => "authorize",
            Command::SetMaintenance { .. } => "set-maintenance",
            Command::EditHaDraft { .. } => "edit-draft",
            Command::DiscardHaDraft => "discard-draft",
            Command::ApplyHaDraft { .. } => "apply-draft",
            Command::Teardown { .. } => "teardown",
            Command::RecordAudit { .. } => "record-audit",
            Command::SpendJoinToken { .. } => "spend-join-token",
            Command::ApplyReviewedDraft { .. } => "apply-reviewed-draft",
            Command::RecordRemoval { .. } => "record-removal",
            Command::RecordDurable { .. } => "record-durable",
        }
    }

    /// What the command itself needs, whatever route it came through: `apply` checks the
    /// token against both this and the route's access, so a mislabelled request cannot
    /// borrow a weaker route's classification.
    pub fn required_access(&self) -> Access {
        match self {
            Command::Put { .. } | Command::Delete { .. } => Access::Write,
            Command::ConsumeJoinToken { .. } | Command::SpendJoinToken { .. } => Access::Join,
            Command::Authorize | Command::RecordAudit { .. } | Command::RecordDurable { .. } => Access::Public,
            Command::InitCluster { .. }
            | Command::CreateToken { .. }
            | Command::RevokeToken { .. }
            | Command::SetMaintenance { .. }
            | Command::EditHaDraft { .. }
            | Command::DiscardHaDraft
            | Command::ApplyHaDraft { .. }
            | Command::Teardown { .. }
            | Command::ApplyReviewedDraft { .. }
            | Command::RecordRemoval { .. } => Access::Admin,
        }
    }
}

/// A command with its idempotency key, its caller and its time, as stored in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Client- or server-chosen id: a retried request with the same id applies at most once.
    pub request_id: Option<String>,
    pub command: Command,
    /// The token the request was made with; `None` for the server's own requests (cluster
    /// id, the bootstrap admin token), which no client can send.
    pub auth: Option<Auth>,
    /// The proposing leader's wall clock (ms since the Unix epoch), stamped just before the
    /// proposal. Token expiry and creation times are decided from it, never from a replica's
    /// own clock, so every replica decides the same.
    pub now_ms: u64,
    /// The node that received the request from its client (0 = not recorded), for the
    /// audit log.
    pub received_by: u64,
}

impl Request {
    /// A request with no token and no time stamp yet (the leader stamps it).
    pub fn new(request_id: Option<String>, command: Command) -> Request {
        Request { request_id, command, auth: None, now_ms: 0, received_by: 0 }
    }

    /// The same request, made with `token_id` through a route that needs `access`.
    pub fn with_auth(mut self, token_id: &str, access: Access) -> Request {
        self.auth = Some(Auth { token_id: token_id.to_string(), access });
        self
    }
}

impl std::fmt::Display for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Values are never printed: they may hold secrets.
        match &self.command {
            Command::Put { key, value, prev_revision } => {
                write!(f, "put {key:?} ({} bytes, prev_revision {prev_revision:?})", value.len())
            }
            Command::Delete { key, prev_revision } => write!(f, "delete {key:?} (prev_revision {prev_revision:?})"),
            Command::InitCluster { cluster_id } => write!(f, "init cluster {cluster_id}"),
            // Hashes are not printed either: they are no secret, but nobody needs them.
            Command::CreateToken { id, name, role, ttl_ms, .. } => {
                write!(f, "create token {id} ({name:?}, role {role}, ttl_ms {ttl_ms:?})")
            }
            Command::RevokeToken { id } => write!(f, "revoke token {id}"),
            Command::ConsumeJoinToken { id, node_id, .. } => write!(f, "consume join token {id} for node {node_id}"),
            Command::SpendJoinToken { id, node_id } => write!(f, "spend join token {id} on admitted node {node_id}"),
            Command::Authorize => write!(f, "authorize"),
            Command::SetMaintenance { on } => write!(f, "maintenance {}", if *on { "on" } else { "off" }),
            Command::EditHaDraft { edits } => {
                write!(f, "draft edit {:?}", edits.iter().map(|(key, _)| key.as_str()).collect::<Vec<_>>())
            }
            Command::DiscardHaDraft => write!(f, "draft discard"),
            Command::ApplyHaDraft { base_version } => write!(f, "config apply (draft based on {base_version})"),
            Command::Teardown { keep, detached } => {
                write!(
                    f,
                    "teardown keeping node {keep}, detaching {:?}",
                    detached.iter().map(|d| d.0).collect::<Vec<_>>()
                )
            }
            Command::RecordAudit { entry } => write!(f, "audit {}", entry.action),
            Command::RecordRemoval { node_id, .. } => write!(f, "record removal of node {node_id}"),
            Command::ApplyReviewedDraft { base_version, digest } => {
                write!(f, "config apply (draft {digest} based on {base_version})")
            }
            Command::RecordDurable { marks } => write!(f, "durable marks of {} members", marks.len()),
        }?;
        match &self.auth {
            Some(auth) => write!(f, " by token {} ({} access)", auth.token_id, auth.access),
            None => Ok(()),
        }
    }
}

/// What applying a command did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResult {
    /// The put happened; the store is now at `revision`. `prev_mod_revision` is 0 when the
    /// key did not exist.
    Put { revision: u64, prev_mod_revision: u64 },
    /// The delete ran; `deleted` is false when the key was absent (nothing changed).
    Delete { revision: u64, deleted: bool },
    /// The compare failed; nothing changed. `current_revision` is the key's mod_revision
    /// (0 when absent).
    CompareFailed { current_revision: u64 },
    /// Cluster bookkeeping; no user-visible change.
    Ok { revision: u64 },
    /// The request's token does not (or no longer) allow it: unknown or revoked, expired at
    /// the request's time stamp, or a role too weak. Nothing changed. `reason` names the
    /// token by id only.
    Unauthorized { reason: String },
    /// The command cannot apply (the token table is full, an id is taken, a field breaks a
    /// rule the API should have caught). Nothing changed.
    Refused { reason: String },
    /// The token was added.
    TokenCreated { created_ms: u64, expires_ms: Option<u64> },
    /// The revocation ran; `revoked` is false when no such token existed.
    TokenRevoked { revoked: bool },
    /// The HA configuration is now at `version`.
    HaConfigApplied { version: u64 },
    /// The teardown is recorded as `generation`.
    TornDown { generation: u64 },
    /// The audit record got sequence number `seq`.
    Audited { seq: u64 },
    /// The request id was used before by the same caller for a different request (or by a
    /// version that did not record callers); nothing was applied. `reason` names the id.
    RequestIdReused { reason: String },
}

impl Default for CommandResult {
    fn default() -> Self {
        CommandResult::Ok { revision: 0 }
    }
}

/// One key's current value and its revisions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    #[serde(with = "byte_string")]
    pub value: Vec<u8>,
    /// Revision of the put that created this incarnation of the key.
    pub create_revision: u64,
    /// Revision of the last put to the key.
    pub mod_revision: u64,
    /// Number of puts since the key was created (1 after the first).
    pub version: u64,
}

/// One change in the history, as watchers see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub revision: u64,
    pub key: String,
    pub kind: EventKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    Put {
        #[serde(with = "byte_string")]
        value: Vec<u8>,
        create_revision: u64,
        version: u64,
    },
    Delete,
}

/// Why a watch cannot start where asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryError {
    /// The history before `compact_revision` (inclusive) has been dropped.
    Compacted { compact_revision: u64 },
}

/// The whole replicated state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvState {
    entries: Entries,
    revision: u64,
    cluster_id: Option<String>,
    /// Events with revisions `compact_revision + 1 ..= revision`, contiguous.
    history: History,
    /// Watchers may resume from any `after_revision >= compact_revision`.
    compact_revision: u64,
    history_revisions: u64,
    /// Results of recent requests by caller and id, for at-most-once retries;
    /// `request_order` evicts the oldest first so the memory is bounded.
    request_results: HashMap<RequestKey, Remembered>,
    request_order: Vector<RequestKey>,
    /// Bearer tokens by id (hashes only), at most `TOKENS_MAX`.
    tokens: CopyOnWrite<BTreeMap<String, TokenRecord>>,
    /// Maintenance mode: on since this time (the proposing leader's clock), or off.
    #[serde(default)]
    maintenance_since_ms: Option<u64>,
    /// HA configuration, draft, audit log, teardowns.
    admin: CopyOnWrite<AdminState>,
    /// How far each member was seen to hold the log on disk (`crate::durability`). Last:
    /// snapshot format 3 added it (`format_v2`: the layout before).
    durable: CopyOnWrite<DurableMarks>,
}

impl Default for KvState {
    fn default() -> Self {
        Self::new(HISTORY_REVISIONS_DEFAULT)
    }
}

impl KvState {
    pub fn new(history_revisions: u64) -> Self {
        KvState {
            entries: Entries::default(),
            revision: 0,
            cluster_id: None,
            history: History::default(),
            compact_revision: 0,
            history_revisions: history_revisions.max(1),
            request_results: HashMap::new(),
            request_order: Vector::new(),
            tokens: CopyOnWrite::default(),
            maintenance_since_ms: None,
            admin: CopyOnWrite::default(),
            durable: CopyOnWrite::default(),
        }
    }

    /// Changes how much history is kept (a node-local setting; applied on load).
    pub fn set_history_revisions(&mut self, history_revisions: u64) {
        self.history_revisions = history_revisions.max(1);
        self.trim_history();
    }

    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn compact_revision(&self) -> u64 {
        self.compact_revision
    }

    pub fn cluster_id(&self) -> Option<&str> {
        self.cluster_id.as_deref()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes of keys and values held (bounded by `KV_BYTES_MAX`).
    pub fn kv_bytes(&self) -> u64 {
        self.entries.bytes()
    }

    /// What replicas compare (`crate::replica_check`): the revision and an order-free
    /// digest of every key's entry, kept up to date by each change (O(1) to read).
    pub fn replica_digest(&self) -> crate::replica_check::StateDigest {
        crate::replica_check::StateDigest { revision: self.revision, entries: self.entries.digest() }
    }

    /// Bytes of change history kept (bounded by `HISTORY_BYTES_MAX`).
    pub fn history_bytes(&self) -> u64 {
        self.history.bytes()
    }

    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.get(key)
    }

    /// Every token, by id.
    pub fn tokens(&self) -> impl Iterator<Item = &TokenRecord> {
        self.tokens.values()
    }

    pub fn token(&self, id: &str) -> Option<&TokenRecord> {
        self.tokens.get(id)
    }

    /// The record of a presented token when it is known, its secret matches (compared in
    /// constant time) and it has not expired at `now_ms`. Which of these failed is not
    /// told apart on purpose: the caller answers one "unauthorized" for all of them.
    pub fn authenticate(&self, presented: &PresentedToken<'_>, now_ms: u64) -> Option<&TokenRecord> {
        let record = self.tokens.get(presented.id);
        // An unknown id is hashed and compared like a known one, so the work (and the time
        // it takes) does not tell a guesser which ids exist.
        let stored = record.map_or(crate::auth::UNKNOWN_TOKEN_SHA256_HEX, |record| record.sha256_hex.as_str());
        let secret_matches = presented.hashes_to(stored);
        let record = record?;
        (secret_matches && !record.expired_at(now_ms)).then_some(record)
    }

    /// Is token `token_id` still good for `access` at `now_ms`? The apply-time check, also
    /// used by long-running reads (watches) to notice a revocation.
    pub fn check_token(&self, token_id: &str, access: Access, now_ms: u64) -> Result<Role, String> {
        let Some(record) = self.tokens.get(token_id) else {
            return Err(format!("token {token_id} is unknown or was revoked"));
        };
        if record.expired_at(now_ms) {
            return Err(format!("token {token_id} has expired"));
        }
        if !permits(record.role, access) {
            return Err(format!("token {token_id} has role {}, which does not allow {access} access", record.role));
        }
        Ok(record.role)
    }

    /// Up to `limit` entries whose keys start with `prefix`, strictly after `after` when
    /// given, in key order; the flag says whether more follow.
    pub fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> (Vec<(&String, &Entry)>, bool) {
        use std::ops::Bound;
        let start = match after {
            Some(after) if after >= prefix => Bound::Excluded(after.to_string()),
            _ => Bound::Included(prefix.to_string()),
        };
        let mut items = Vec::new();
        let mut more = false;
        for (key, entry) in self.entries.range((start, Bound::Unbounded)) {
            if !key_has_prefix(key, prefix) {
                break;
            }
            if items.len() == limit {
                more = true;
                break;
            }
            items.push((key, entry));
        }
        (items, more)
    }

    /// Events after `after_revision` for keys under `prefix`, at most `limit` of them
    /// (the scan stops at `limit` matching events), plus the revision up to which the
    /// history was scanned (so a watcher can report progress even when nothing matched).
    pub fn events_after(
        &self,
        after_revision: u64,
        prefix: &str,
        limit: usize,
    ) -> Result<(Vec<Event>, u64), HistoryError> {
        self.check_resumable(after_revision)?;
        let mut events = Vec::new();
        let mut scanned = after_revision;
        // The history is contiguous: revision r sits at index r - compact_revision - 1.
        let first_index = usize::try_from(after_revision - self.compact_revision).unwrap_or(usize::MAX);
        // A focus reads consecutive elements in O(1) each and starts at `first_index` in
        // O(log n); `iter().skip` would walk the skipped part.
        let mut focus = self.history.focus();
        for index in first_index..self.history.len() {
            if events.len() == limit {
                break;
            }
            let Some(event) = focus.get(index) else { break };
            scanned = event.revision;
            if key_has_prefix(&event.key, prefix) {
                events.push(event.clone());
            }
        }
        if events.len() < limit {
            // Everything up to the current revision has been looked at.
            scanned = scanned.max(self.revision);
        }
        Ok((events, scanned))
    }

    /// Can a watcher resume after `after_revision`, or has that history been compacted?
    pub fn check_resumable(&self, after_revision: u64) -> Result<(), HistoryError> {
        if after_revision < self.compact_revision {
            return Err(HistoryError::Compacted { compact_revision: self.compact_revision });
        }
        Ok(())
    }

    /// Applies one request. Deterministic: the same requests in the same order give the
    /// same state on every node.
    ///
    /// A request made with a token is checked first, against both the route's access and
    /// the command's own: a refused request changes nothing and is not remembered under
    /// its request id (a retry with a valid token may still apply).
    pub fn apply(&mut self, request: &Request) -> CommandResult {
        if let Some(auth) = &request.auth {
            for access in [auth.access, request.command.required_access()] {
                if let Err(reason) = self.check_token(&auth.token_id, access, request.now_ms) {
                    return CommandResult::Unauthorized { reason };
                }
            }
        }
        let remember_as = match &request.request_id {
            Some(id) => {
                let key = RequestKey::of(request, id);
                let fingerprint = RequestFingerprint::of(&request.command);
                if let Some(earlier) = self.recall(&key, &fingerprint) {
                    return earlier;
                }
                Some((key, fingerprint))
            }
            None => None,
        };
        // Named before applying: a revocation may remove the caller's own token.
        let actor = match &request.auth {
            Some(auth) => self.tokens.get(&auth.token_id).map_or_else(|| auth.token_id.clone(), |t| t.name.clone()),
            None => AUTOMATIC_ACTOR.to_string(),
        };
        let (result, audit) = self.apply_audited(&request.command, request.now_ms, request.auth.as_ref());
        let result = match audit {
            Some(entry) => {
                let seq = self.admin.audit.append(request.now_ms, &actor, request.received_by, entry);
                match result {
                    CommandResult::Ok { .. } if matches!(request.command, Command::RecordAudit { .. }) => {
                        CommandResult::Audited { seq }
                    }
                    result => result,
                }
            }
            None => result,
        };
        if let Some((key, fingerprint)) = remember_as {
            self.remember(key, fingerprint, result.clone());
        }
        result
    }

    /// What a request with `key` and `fingerprint` gets without being applied: the
    /// remembered result of a retry, or a refusal of a reused id. `None`: a new request.
    fn recall(&self, key: &RequestKey, fingerprint: &RequestFingerprint) -> Option<CommandResult> {
        let caller = match &key.scope {
            RequestScope::Server => "this cluster's servers".to_string(),
            RequestScope::Token(token_id) => format!("token {token_id}"),
            RequestScope::Unrecorded => "an unrecorded caller".to_string(),
        };
        if let Some(earlier) = self.request_results.get(key) {
            if earlier.fingerprint == *fingerprint {
                return Some(earlier.result.clone());
            }
            return Some(CommandResult::RequestIdReused {
                reason: format!(
                    "request id {:?} was already used by {caller} for a different request; nothing was applied. A \
                     retry must repeat the request exactly; a new request needs a new id (a random 128-bit one)",
                    key.id
                ),
            });
        }
        let unrecorded = RequestKey { scope: RequestScope::Unrecorded, id: key.id.clone() };
        if self.request_results.contains_key(&unrecorded) {
            return Some(CommandResult::RequestIdReused {
                reason: format!(
                    "request id {:?} was used before this cluster was upgraded, when ids were remembered without \
                     their caller and request, so this request cannot be told from a retry of that one; nothing was \
                     applied. If it is a retry, the first attempt was applied (read the key to check); otherwise \
                     send it with a new id",
                    key.id
                ),
            });
        }
        None
    }

    fn apply_command(&mut self, command: &Command, now_ms: u64, auth: Option<&Auth>) -> CommandResult {
        match command {
            Command::Put { key, value, prev_revision } => {
                let old = self.entries.get(key);
                let current = old.map_or(0, |entry| entry.mod_revision);
                if let Some(expected) = prev_revision {
                    if *expected != current {
                        return CommandResult::CompareFailed { current_revision: current };
                    }
                }
                let replaced = old.map_or(0, |old| entry_bytes(key, &old.value));
                if let Err(reason) = put_fits(self.entries.bytes(), replaced, entry_bytes(key, value)) {
                    return CommandResult::Refused { reason };
                }
                self.revision += 1;
                let revision = self.revision;
                let entry = match old {
                    Some(old) => Entry {
                        value: value.clone(),
                        create_revision: old.create_revision,
                        mod_revision: revision,
                        version: old.version + 1,
                    },
                    None => {
                        Entry { value: value.clone(), create_revision: revision, mod_revision: revision, version: 1 }
                    }
                };
                let kind = EventKind::Put {
                    value: value.clone(),
                    create_revision: entry.create_revision,
                    version: entry.version,
                };
                self.entries.insert(key.clone(), entry);
                self.record(Event { revision, key: key.clone(), kind });
                CommandResult::Put { revision, prev_mod_revision: current }
            }
            Command::Delete { key, prev_revision } => {
                let current = self.entries.get(key).map_or(0, |entry| entry.mod_revision);
                if let Some(expected) = prev_revision {
                    if *expected != current {
                        return CommandResult::CompareFailed { current_revision: current };
                    }
                }
                if self.entries.remove(key).is_none() {
                    return CommandResult::Delete { revision: self.revision, deleted: false };
                }
                self.revision += 1;
                let revision = self.revision;
                self.record(Event { revision, key: key.clone(), kind: EventKind::Delete });
                CommandResult::Delete { revision, deleted: true }
            }
            Command::InitCluster { cluster_id } => {
                if self.cluster_id.is_none() {
                    self.cluster_id = Some(cluster_id.clone());
                }
                CommandResult::Ok { revision: self.revision }
            }
            Command::CreateToken { id, name, role, sha256_hex, ttl_ms } => {
                self.create_token(id, name, *role, sha256_hex, *ttl_ms, now_ms)
            }
            Command::RevokeToken { id } => {
                if let Some(reason) = self.last_admin_token(id, now_ms) {
                    return CommandResult::Refused { reason };
                }
                CommandResult::TokenRevoked { revoked: self.tokens.remove(id).is_some() }
            }
            Command::ConsumeJoinToken { id, node_id, incarnation } => {
                // A caller spends its own token, never someone else's.
                if auth.is_some_and(|auth| auth.token_id != *id) {
                    return CommandResult::Unauthorized { reason: format!("token {id} is not the caller's token") };
                }
                let Some(record) = self.tokens.get_mut(id) else {
                    return CommandResult::Unauthorized { reason: format!("token {id} is unknown or was revoked") };
                };
                if record.role != Role::Join {
                    return CommandResult::Unauthorized { reason: format!("token {id} is not a join token") };
                }
                if record.expired_at(now_ms) {
                    return CommandResult::Unauthorized { reason: format!("token {id} has expired") };
                }
                let claim = JoinClaim { node_id: *node_id, incarnation: incarnation.clone() };
                match &record.used_by {
                    Some(used_by) if *used_by != claim => CommandResult::Unauthorized {
                        reason: format!(
                            "join token {id} was already used by node {}; a join token admits one node",
                            used_by.node_id
                        ),
                    },
                    _ => {
                        record.used_by = Some(claim);
                        CommandResult::Ok { revision: self.revision }
                    }
                }
            }
            Command::SpendJoinToken { id, node_id } => {
                // A caller spends its own token, never someone else's.
                if auth.is_some_and(|auth| auth.token_id != *id) {
                    return CommandResult::Unauthorized { reason: format!("token {id} is not the caller's token") };
                }
                let claimed_by = self.tokens.get(id).filter(|record| record.role == Role::Join).map(|r| &r.used_by);
                match claimed_by {
                    Some(Some(claim)) if claim.node_id == *node_id => {
                        self.tokens.remove(id);
                        CommandResult::Ok { revision: self.revision }
                    }
                    Some(_) => CommandResult::Refused {
                        reason: format!("join token {id} was not claimed by node {node_id}; nothing was spent"),
                    },
                    None => CommandResult::Unauthorized { reason: format!("token {id} is unknown or was revoked") },
                }
            }
            Command::Authorize => CommandResult::Ok { revision: self.revision },
            Command::SetMaintenance { on } => {
                self.maintenance_since_ms = on.then_some(self.maintenance_since_ms.unwrap_or(now_ms));
                CommandResult::Ok { revision: self.revision }
            }
            Command::RecordDurable { marks } => {
                if marks.len() > DURABLE_MARKS_MAX {
                    return CommandResult::Refused {
                        reason: format!("a durability record lists at most {DURABLE_MARKS_MAX} members"),
                    };
                }
                *self.durable = crate::durability::merged(&self.durable, marks);
                CommandResult::Ok { revision: self.revision }
            }
            // Applied by `apply_audited` itself (they exist for their audit records); routed
            // there should anything call this with one.
            Command::EditHaDraft { .. }
            | Command::DiscardHaDraft
            | Command::ApplyHaDraft { .. }
            | Command::ApplyReviewedDraft { .. }
            | Command::Teardown { .. }
            | Command::RecordAudit { .. } => self.apply_audited(command, now_ms, auth).0,
            Command::RecordRemoval { node_id, incarnation, fingerprint } => {
                self.admin.record_removal(*node_id, incarnation, fingerprint);
                CommandResult::Ok { revision: self.revision }
            }
        }
    }

    /// Why token `id` must not be revoked: it is the last admin token that is valid at
    /// `now_ms`, and without one nobody can administer the cluster again (issue 14). Decided
    /// here, in the log's order, so two revocations racing each other cannot both pass.
    fn last_admin_token(&self, id: &str, now_ms: u64) -> Option<String> {
        let token = self.tokens.get(id)?;
        if token.role != Role::Admin || token.expired_at(now_ms) {
            return None;
        }
        let others =
            self.tokens.values().any(|other| other.id != id && other.role == Role::Admin && !other.expired_at(now_ms));
        (!others).then(|| {
            format!(
                "token {id} ({:?}) is the last valid admin token: without it nobody could administer the cluster \
                 again. Create another admin token first (`haven tokens create --role admin`), then revoke this one",
                token.name
            )
        })
    }

    /// How far each member was seen to hold the log on disk, by node id.
    pub fn durable(&self) -> &DurableMarks {
        &self.durable
    }

    /// Since when (the leader's clock, ms since the epoch) maintenance mode is on, if it is.
    pub fn maintenance_since_ms(&self) -> Option<u64> {
        self.maintenance_since_ms
    }

    /// Applies `command` and says what the audit log records of it (administrative commands
    /// that changed something; nothing for data writes).
    fn apply_audited(
        &mut self,
        command: &Command,
        now_ms: u64,
        auth: Option<&Auth>,
    ) -> (CommandResult, Option<AuditEntry>) {
        let refused = |refusal: AdminRefusal| (CommandResult::Refused { reason: refusal.to_string() }, None);
        let ok = |revision: u64, entry: AuditEntry| (CommandResult::Ok { revision }, Some(entry));
        match command {
            // Each edit is recorded with its author, so a shared draft says who put what in it.
            Command::EditHaDraft { edits } => match self.admin.edit_draft(edits) {
                Ok(entry) => ok(self.revision, entry),
                Err(refusal) => refused(refusal),
            },
            Command::DiscardHaDraft => match self.admin.draft.take() {
                Some(draft) => ok(
                    self.revision,
                    AuditEntry::new("config.discard", format!("draft of {} change(s) discarded", draft.changes.len())),
                ),
                None => (CommandResult::Ok { revision: self.revision }, None),
            },
            Command::ApplyHaDraft { base_version } => match self.admin.apply_draft(*base_version, None) {
                Ok((version, entry)) => (CommandResult::HaConfigApplied { version }, Some(entry)),
                Err(refusal) => refused(refusal),
            },
            Command::ApplyReviewedDraft { base_version, digest } => {
                match self.admin.apply_draft(*base_version, Some(digest)) {
                    Ok((version, entry)) => (CommandResult::HaConfigApplied { version }, Some(entry)),
                    Err(refusal) => refused(refusal),
                }
            }
            Command::Teardown { keep, detached } => {
                let generation = self.admin.teardown(detached);
                let ids: Vec<String> = detached.iter().map(|(id, _)| id.to_string()).collect();
                let entry = AuditEntry::new(
                    "teardown",
                    format!(
                        "teardown generation {generation}: node {keep} continues standalone; detached: {}",
                        ids.join(", ")
                    ),
                );
                (CommandResult::TornDown { generation }, Some(entry))
            }
            Command::RecordAudit { entry } => (CommandResult::Ok { revision: self.revision }, Some(entry.clone())),
            Command::SetMaintenance { on } => {
                let was = self.maintenance_since_ms.is_some();
                let result = self.apply_command(command, now_ms, auth);
                let entry = (was != *on).then(|| {
                    AuditEntry::new("maintenance", format!("maintenance mode {}", if *on { "on" } else { "off" }))
                        .with_change(AuditChange::new("maintenance", Some(was.to_string()), Some(on.to_string())))
                });
                (result, entry)
            }
            Command::CreateToken { id, name, role, .. } => {
                let result = self.apply_command(command, now_ms, auth);
                let entry = matches!(result, CommandResult::TokenCreated { .. })
                    .then(|| AuditEntry::new("token.create", format!("token {id} ({name:?}, role {role}) created")));
                (result, entry)
            }
            Command::RevokeToken { id } => {
                let name = self.tokens.get(id).map(|token| token.name.clone());
                let result = self.apply_command(command, now_ms, auth);
                let entry = matches!(result, CommandResult::TokenRevoked { revoked: true }).then(|| {
                    AuditEntry::new("token.revoke", format!("token {id} ({:?}) revoked", name.unwrap_or_default()))
                });
                (result, entry)
            }
            Command::InitCluster { cluster_id } => {
                let first = self.cluster_id.is_none();
                let result = self.apply_command(command, now_ms, auth);
                (result, first.then(|| AuditEntry::new("cluster.init", format!("cluster {cluster_id} created"))))
            }
            Command::Put { .. }
            | Command::Delete { .. }
            | Command::ConsumeJoinToken { .. }
            | Command::SpendJoinToken { .. }
            | Command::Authorize
            | Command::RecordRemoval { .. }
            | Command::RecordDurable { .. } => (self.apply_command(command, now_ms, auth), None),
        }
    }

    /// Guided recovery (`haven recover`) and a detached node started standalone: the data
    /// stays, the cluster id is new, so no member of the old cluster can mistake this one
    /// for its own. Not a command: only the offline rewrite of a stopped node calls it.
    /// The old cluster's detached members are forgotten (this node may be one of them);
    /// the cluster id check keeps every old member out anyway.
    ///
    /// `recovered`: after a lost majority (not a detached node started standalone), the
    /// survivor's id and the voters confirmed down; the old cluster id is remembered so its
    /// members are told they were recovered away when they meet this cluster.
    pub fn move_to_new_cluster(&mut self, cluster_id: &str, recovered: Option<Recovery>) {
        if let (Some(recovery), Some(old)) = (recovered, self.cluster_id.clone()) {
            if old != cluster_id && self.admin.recovered_from(&old).is_none() {
                self.admin.recovered_from.push(RecoveredFrom {
                    cluster_id: old,
                    survivor: recovery.survivor,
                    confirmed_down: recovery.confirmed_down,
                    old_members: recovery.old_members,
                });
            }
        }
        self.cluster_id = Some(cluster_id.to_string());
        self.admin.detached.clear();
    }

    /// The administrative state: HA configuration, draft, audit log, teardowns.
    pub fn admin(&self) -> &AdminState {
        &self.admin
    }

    /// Adds a token after checking every rule again: the API checks them first, but the
    /// state machine must never hold a record that breaks them, whoever proposed it.
    fn create_token(
        &mut self,
        id: &str,
        name: &str,
        role: Role,
        sha256_hex: &str,
        ttl_ms: Option<u64>,
        now_ms: u64,
    ) -> CommandResult {
        let refuse = |reason: String| CommandResult::Refused { reason };
        if !crate::auth::is_token_id(id) {
            return refuse("a token id must be 16 lowercase hex digits".into());
        }
        if let Err(reason) = validate_token_name(name) {
            return refuse(reason);
        }
        if sha256_hex.len() != SHA256_HEX_CHARS || !sha256_hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return refuse("a token hash must be 64 hex digits".into());
        }
        let ttl_range_ms = TOKEN_TTL_SECONDS_MIN * 1000..=TOKEN_TTL_SECONDS_MAX * 1000;
        if ttl_ms.is_some_and(|ttl_ms| !ttl_range_ms.contains(&ttl_ms)) {
            return refuse(format!("a token TTL must be {TOKEN_TTL_SECONDS_MIN}-{TOKEN_TTL_SECONDS_MAX} seconds"));
        }
        if self.tokens.contains_key(id) {
            return refuse(format!("token id {id} is taken; create the token again"));
        }
        if self.tokens.len() >= TOKENS_MAX {
            // Expired tokens are dead weight: they make room before a creation is refused.
            self.tokens.retain(|_, record| !record.expired_at(now_ms));
            if self.tokens.len() >= TOKENS_MAX {
                return refuse(format!("the cluster holds {TOKENS_MAX} tokens already; revoke unused ones first"));
            }
        }
        let expires_ms = ttl_ms.map(|ttl_ms| now_ms.saturating_add(ttl_ms));
        let record = TokenRecord {
            id: id.to_string(),
            name: name.to_string(),
            role,
            sha256_hex: sha256_hex.to_ascii_lowercase(),
            created_ms: now_ms,
            expires_ms,
            used_by: None,
        };
        self.tokens.insert(id.to_string(), record);
        CommandResult::TokenCreated { created_ms: now_ms, expires_ms }
    }

    fn record(&mut self, event: Event) {
        debug_assert_eq!(event.revision, self.compact_revision + self.history.len() as u64 + 1);
        self.history.push_back(event);
        self.trim_history();
    }

    fn trim_history(&mut self) {
        // The newest event always stays (a watcher at the current revision resumes from it),
        // even when it alone is over the byte bound (it cannot be: a value is at most
        // VALUE_BYTES_MAX).
        while self.history.len() as u64 > self.history_revisions
            || (self.history.bytes() > HISTORY_BYTES_MAX && self.history.len() > 1)
        {
            if let Some(dropped) = self.history.pop_front() {
                self.compact_revision = dropped.revision;
            }
        }
    }

    fn remember(&mut self, key: RequestKey, fingerprint: RequestFingerprint, result: CommandResult) {
        if self.request_results.insert(key.clone(), Remembered { fingerprint, result }).is_none() {
            self.request_order.push_back(key);
        }
        while self.request_order.len() > REQUEST_IDS_REMEMBERED {
            if let Some(oldest) = self.request_order.pop_front() {
                self.request_results.remove(&oldest);
            }
        }
    }
}

/// How a refusal for a full store begins (the API answers it with 507).
pub const STORE_FULL: &str = "the store is full";

/// Whether a put that replaces `replaced` bytes with `added` in a store of `held` bytes
/// stays within `KV_BYTES_MAX`. A put that does not grow the store always fits, so a full
/// store can still be changed and cleaned up.
fn put_fits(held: u64, replaced: u64, added: u64) -> Result<(), String> {
    let after = held - replaced + added;
    if after <= KV_BYTES_MAX || added <= replaced {
        return Ok(());
    }
    Err(format!(
        "{STORE_FULL}: this put would bring the keys and values to {after} bytes, over the limit of {KV_BYTES_MAX} \
         (KV_BYTES_MAX); nothing was changed. Delete keys you no longer need, or keep large payloads in a \
         replicated directory"
    ))
}

/// Whose request id it is: ids are chosen by callers, so two callers may pick the same
/// one and still make two different requests.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RequestScope {
    /// The servers' own requests (no token: the cluster id, the bootstrap token, audit
    /// records). Their ids are random, drawn by the server.
    Server,
    /// Requests made with this token (by id).
    Token(String),
    /// Remembered by a version that did not record the caller or the command (snapshot
    /// format 0): such an id can be told neither from a retry nor from a new request.
    Unrecorded,
}

/// A remembered request id, with its caller.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RequestKey {
    pub scope: RequestScope,
    pub id: String,
}

impl RequestKey {
    /// The key `request` is remembered under: its token's id, or the server scope for a
    /// request without a token (which only a server can propose).
    pub fn of(request: &Request, id: &str) -> RequestKey {
        let scope = match &request.auth {
            Some(auth) => RequestScope::Token(auth.token_id.clone()),
            None => RequestScope::Server,
        };
        RequestKey { scope, id: id.to_string() }
    }
}

/// A digest of a command: its kind, key, value and conditions (every field), so a retry
/// can be told from a different request under the same id. The first 128 bits of the
/// SHA-256 of the command's encoding: far beyond any chance of two different commands of
/// one caller and one id agreeing, at half the memory of the whole digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RequestFingerprint(pub [u8; 16]);

impl RequestFingerprint {
    pub fn of(command: &Command) -> RequestFingerprint {
        // Encoding a command cannot fail (strings, bytes, numbers, sequences of known
        // length); were it to, every command would get the same digest of nothing and a
        // reused id would be taken for a retry, so say so loudly in tests.
        let digest = crate::codec::sha256(command);
        debug_assert!(digest.is_ok(), "a command failed to encode: {digest:?}");
        let digest = digest.unwrap_or_default();
        let mut first = [0u8; 16];
        first.copy_from_slice(&digest[..16]);
        RequestFingerprint(first)
    }
}

/// What the state machine remembers of a request with an id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remembered {
    pub fingerprint: RequestFingerprint,
    pub result: CommandResult,
}

/// A value shared between clones of the state until one of them changes it: `Deref` reads
/// the shared value, `DerefMut` first copies it if another clone still holds it
/// (`Arc::make_mut`). For the parts that change rarely (tokens, the administrative state),
/// so a snapshot's copy of the state costs one reference count each. Encodes as the value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct CopyOnWrite<T>(Arc<T>);

impl<T> std::ops::Deref for CopyOnWrite<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: Clone> std::ops::DerefMut for CopyOnWrite<T> {
    fn deref_mut(&mut self) -> &mut T {
        Arc::make_mut(&mut self.0)
    }
}

impl<T: Serialize> Serialize for CopyOnWrite<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        T::serialize(&self.0, serializer)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for CopyOnWrite<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::deserialize(deserializer).map(|value| CopyOnWrite(Arc::new(value)))
    }
}

/// `#[serde(with = "byte_string")]` for `Vec<u8>` fields: encodes them as one byte string
/// instead of a sequence of single bytes. Postcard writes both the same way (a varint length,
/// then the bytes), so nothing stored changes, but a value is copied at once instead of
/// byte by byte. JSON writes both as an array of numbers; either form reads back.
/// (`haven-store` uses it for the encoded state in a snapshot file.)
pub mod byte_string {
    use std::fmt;

    use serde::de::SeqAccess;
    use serde::de::Visitor;
    use serde::Deserializer;
    use serde::Serializer;

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        deserializer.deserialize_byte_buf(ByteStringVisitor)
    }

    struct ByteStringVisitor;

    impl<'de> Visitor<'de> for ByteStringVisitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a byte string or a sequence of bytes")
        }

        fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<Vec<u8>, E> {
            Ok(bytes.to_vec())
        }

        fn visit_byte_buf<E: serde::de::Error>(self, bytes: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(bytes)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            // Bounded like serde's own `Vec` visitor: never trust a length hint blindly.
            let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
            while let Some(byte) = seq.next_element::<u8>()? {
                bytes.push(byte);
            }
            Ok(bytes)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replica_check::StateDigest;

    /// The replica digest recounted from every entry held, not read from the running one:
    /// what a test compares when it asks whether anything changed.
    pub(super) fn recounted_digest(state: &KvState) -> StateDigest {
        StateDigest { revision: state.revision, entries: Entries::from(imbl::OrdMap::clone(&state.entries)).digest() }
    }

    fn put(key: &str, value: &str) -> Request {
        Request::new(None, Command::Put { key: key.into(), value: value.as_bytes().to_vec(), prev_revision: None })
    }

    fn cas(key: &str, value: &str, prev: u64) -> Request {
        Request::new(
            None,
            Command::Put { key: key.into(), value: value.as_bytes().to_vec(), prev_revision: Some(prev) },
        )
    }

    fn del(key: &str) -> Request {
        Request::new(None, Command::Delete { key: key.into(), prev_revision: None })
    }

    #[test]
    fn revision_grows_by_one_per_change() {
        let mut state = KvState::default();
        assert_eq!(state.apply(&put("a", "1")), CommandResult::Put { revision: 1, prev_mod_revision: 0 });
        assert_eq!(state.apply(&put("b", "1")), CommandResult::Put { revision: 2, prev_mod_revision: 0 });
        assert_eq!(state.apply(&put("a", "2")), CommandResult::Put { revision: 3, prev_mod_revision: 1 });
        let a = state.get("a").unwrap();
        assert_eq!((a.create_revision, a.mod_revision, a.version), (1, 3, 2));
        assert_eq!(state.apply(&del("a")), CommandResult::Delete { revision: 4, deleted: true });
        // Deleting an absent key changes nothing and does not advance the revision.
        assert_eq!(state.apply(&del("a")), CommandResult::Delete { revision: 4, deleted: false });
        assert_eq!(state.revision(), 4);
        // Re-created key starts a new incarnation.
        state.apply(&put("a", "3"));
        let a = state.get("a").unwrap();
        assert_eq!((a.create_revision, a.mod_revision, a.version), (5, 5, 1));
    }

    #[test]
    fn compare_and_swap() {
        let mut state = KvState::default();
        // 0 = must not exist.
        assert_eq!(state.apply(&cas("k", "1", 0)), CommandResult::Put { revision: 1, prev_mod_revision: 0 });
        assert_eq!(state.apply(&cas("k", "2", 0)), CommandResult::CompareFailed { current_revision: 1 });
        assert_eq!(state.apply(&cas("k", "2", 7)), CommandResult::CompareFailed { current_revision: 1 });
        assert_eq!(state.revision(), 1, "a failed compare changes nothing");
        assert_eq!(state.apply(&cas("k", "2", 1)), CommandResult::Put { revision: 2, prev_mod_revision: 1 });
        let guarded_delete = Request::new(None, Command::Delete { key: "k".into(), prev_revision: Some(1) });
        assert_eq!(state.apply(&guarded_delete), CommandResult::CompareFailed { current_revision: 2 });
        assert_eq!(state.get("k").unwrap().value, b"2");
    }

    /// The state as it was encoded before it was built from persistent structures: the
    /// standard collections and plain byte vectors.
    mod legacy {
        use std::collections::BTreeMap;
        use std::collections::HashMap;
        use std::collections::VecDeque;

        use serde::Deserialize;
        use serde::Serialize;

        use crate::admin::AdminState;
        use crate::auth::TokenRecord;
        use crate::kv::Remembered;
        use crate::kv::RequestKey;

        #[derive(Serialize, Deserialize)]
        pub struct Entry {
            pub value: Vec<u8>,
            pub create_revision: u64,
            pub mod_revision: u64,
            pub version: u64,
        }

        #[derive(Serialize, Deserialize)]
        pub enum EventKind {
            Put { value: Vec<u8>, create_revision: u64, version: u64 },
            Delete,
        }

        #[derive(Serialize, Deserialize)]
        pub struct Event {
            pub revision: u64,
            pub key: String,
            pub kind: EventKind,
        }

        #[derive(Serialize, Deserialize)]
        pub struct KvState {
            pub entries: BTreeMap<String, Entry>,
            pub revision: u64,
            pub cluster_id: Option<String>,
            pub history: VecDeque<Event>,
            pub compact_revision: u64,
            pub history_revisions: u64,
            pub request_results: HashMap<RequestKey, Remembered>,
            pub request_order: VecDeque<RequestKey>,
            pub tokens: BTreeMap<String, TokenRecord>,
            #[serde(default)]
            pub maintenance_since_ms: Option<u64>,
            pub admin: AdminState,
            pub durable: BTreeMap<u64, crate::durability::DurableMark>,
        }

        /// `Command::Put` is variant 0, so this encodes like it.
        #[derive(Serialize, Deserialize)]
        pub enum Command {
            Put { key: String, value: Vec<u8>, prev_revision: Option<u64> },
        }
    }

    /// Snapshots and log entries written before the state was built from persistent
    /// structures read the same, and the state encodes to the very same bytes.
    #[test]
    fn the_encoding_is_that_of_the_standard_collections() {
        let mut state = KvState::new(3);
        create(&mut state, 1, Role::Admin, None);
        let mut with_id = put("a", "1");
        with_id.request_id = Some("r1".into());
        for request in [with_id, put("b", "2"), put("a", "\u{0}\u{ff}3"), del("b"), put("c", "")] {
            state.apply(&request);
        }
        state.apply(&Request::new(None, Command::SetMaintenance { on: true }));
        assert_eq!(state.compact_revision(), 2, "the history was trimmed");

        let bytes = crate::codec::encode(&state).unwrap();
        let old: legacy::KvState = crate::codec::decode(&bytes).unwrap();
        assert_eq!(crate::codec::encode(&old).unwrap(), bytes, "one request id: no hash order involved");
        assert_eq!(old.entries["a"].value, "\u{0}\u{ff}3".as_bytes());
        // Revisions 1-5 with 3 kept: the oldest kept event is revision 3, the second put of "a".
        assert_eq!(old.history[0].revision, 3);
        assert!(
            matches!(&old.history[0].kind, legacy::EventKind::Put { value, .. } if value == "\u{0}\u{ff}3".as_bytes())
        );
        let back: KvState = crate::codec::decode(&bytes).unwrap();
        assert_eq!(back, state);
        // (No JSON comparison of the whole state any more: remembered request ids are keyed
        // by caller and id, which JSON maps cannot hold, and the state is never JSON.)

        let value = vec![7u8; 300];
        let command = Command::Put { key: "k".into(), value: value.clone(), prev_revision: Some(3) };
        let old_command = legacy::Command::Put { key: "k".into(), value, prev_revision: Some(3) };
        assert_eq!(crate::codec::encode(&command).unwrap(), crate::codec::encode(&old_command).unwrap());
        let json = serde_json::to_string(&old_command).unwrap();
        assert_eq!(serde_json::to_string(&command).unwrap(), json);
        assert_eq!(serde_json::from_str::<Command>(&json).unwrap(), command, "a JSON array of bytes reads back");
    }

    /// A clone is a snapshot: changes to either side after it never show on the other.
    #[test]
    fn a_clone_is_independent_of_later_applies() {
        let mut state = KvState::new(2000);
        // A reader token: the last admin token could not be revoked.
        let admin = create(&mut state, 1, Role::Reader, None);
        for i in 0..500 {
            let mut request = put(&format!("k{i:03}"), &i.to_string());
            request.request_id = Some(format!("id-{i}"));
            state.apply(&request);
        }
        let copy = state.clone();
        let (digest, revision) = (recounted_digest(&copy), copy.revision());
        for i in 0..500 {
            state.apply(&put(&format!("k{i:03}"), "changed"));
        }
        state.apply(&del("k000"));
        state.apply(&Request::new(None, Command::RevokeToken { id: admin.id.clone() }));
        state.apply(&Request::new(None, Command::SetMaintenance { on: true }));
        assert_eq!((recounted_digest(&copy), copy.revision()), (digest, revision));
        assert_eq!(copy.get("k000").map(|e| e.value.as_slice()), Some(&b"0"[..]));
        assert!(copy.token(&admin.id).is_some() && state.token(&admin.id).is_none());
        assert_eq!(copy.maintenance_since_ms(), None);
        assert_eq!(copy.events_after(0, "", usize::MAX).unwrap().0.len(), 500);
        assert_eq!(state.events_after(0, "", usize::MAX).unwrap().0.len(), 1001);
        assert_ne!(recounted_digest(&state), digest);
    }

    #[test]
    fn retried_request_applies_once() {
        let mut state = KvState::default();
        let mut request = put("k", "1");
        request.request_id = Some("r1".into());
        let first = state.apply(&request);
        state.apply(&put("k", "2"));
        // The retry returns the first result and does not overwrite the later put.
        assert_eq!(state.apply(&request), first);
        assert_eq!(state.get("k").unwrap().value, b"2");
        assert_eq!(state.revision(), 2);
    }

    fn with_id(mut request: Request, id: &str) -> Request {
        request.request_id = Some(id.to_string());
        request
    }

    fn reused(result: CommandResult) -> String {
        match result {
            CommandResult::RequestIdReused { reason } => reason,
            other => panic!("expected RequestIdReused, got {other:?}"),
        }
    }

    /// Issue 11, first sequence: one token sends `put a` and then `put b` under the same
    /// id. The second is refused, names the id, and writes nothing; a real retry of the
    /// first still gets the first's result.
    #[test]
    fn a_reused_id_with_another_command_is_refused_and_applies_nothing() {
        let mut state = KvState::default();
        let operator = create(&mut state, 1, Role::Operator, None);
        let as_operator = |request: Request| stamped(with_id(request, "req-42"), &operator.id, Access::Write, T0);
        let first = state.apply(&as_operator(put("a", "one")));
        assert_eq!(first, CommandResult::Put { revision: 1, prev_mod_revision: 0 });
        let digest = recounted_digest(&state);
        let reason = reused(state.apply(&as_operator(put("b", "two"))));
        assert!(reason.contains("\"req-42\"") && reason.contains("different request"), "{reason}");
        assert_eq!((recounted_digest(&state), state.revision()), (digest, 1), "nothing was applied");
        assert!(state.get("b").is_none());
        // The same key with another value, or another condition, is another request too.
        reused(state.apply(&as_operator(put("a", "uno"))));
        reused(state.apply(&as_operator(cas("a", "one", 0))));
        reused(state.apply(&as_operator(del("a"))));
        // The retry of the first request: its own result, describing its own key.
        assert_eq!(state.apply(&as_operator(put("a", "one"))), first);
        assert_eq!(state.revision(), 1);
    }

    /// Issue 11, second sequence: the same id from another token is another request, and
    /// so is the same id from the servers themselves.
    #[test]
    fn the_same_id_from_another_caller_is_an_independent_request() {
        let mut state = KvState::default();
        let alice = create(&mut state, 1, Role::Operator, None);
        let bob = create(&mut state, 2, Role::Operator, None);
        let by = |token: &str, key: &str| stamped(with_id(put(key, "v"), "req-42"), token, Access::Write, T0);
        assert!(matches!(state.apply(&by(&alice.id, "a")), CommandResult::Put { revision: 1, .. }));
        assert!(matches!(state.apply(&by(&bob.id, "c")), CommandResult::Put { revision: 2, .. }));
        assert!(matches!(state.apply(&with_id(put("s", "v"), "req-42")), CommandResult::Put { revision: 3, .. }));
        assert!(state.get("a").is_some() && state.get("c").is_some() && state.get("s").is_some());
        // Each caller's retry still finds its own result.
        assert_eq!(state.apply(&by(&bob.id, "c")), CommandResult::Put { revision: 2, prev_mod_revision: 0 });
        assert_eq!(state.revision(), 3);
    }

    /// Issue 11, third sequence: across kinds of command. A revocation under an id that
    /// the same token used for a put is refused as a reused id (it was answered with the
    /// put's result, which the API turned into a 500), and one under an id another token
    /// used is revoked (it was answered 404 for a token that exists).
    #[test]
    fn a_reused_id_across_kinds_of_command_is_refused_or_independent() {
        let mut state = KvState::default();
        let admin = create(&mut state, 1, Role::Admin, None);
        let operator = create(&mut state, 2, Role::Operator, None);
        let victim = create(&mut state, 3, Role::Reader, None);
        let revoke = |token: &str| {
            stamped(
                with_id(Request::new(None, Command::RevokeToken { id: victim.id.clone() }), "0"),
                token,
                Access::Admin,
                T0,
            )
        };
        state.apply(&stamped(with_id(put("a", "v"), "0"), &admin.id, Access::Write, T0));
        let reason = reused(state.apply(&revoke(&admin.id)));
        assert!(reason.contains("\"0\""), "{reason}");
        assert!(state.token(&victim.id).is_some(), "nothing was revoked");
        // The operator put under "0" too; the admin's own "0" is taken, so it uses "1"...
        state.apply(&stamped(with_id(put("b", "v"), "1"), &operator.id, Access::Write, T0));
        let mut revoke_1 = revoke(&admin.id);
        revoke_1.request_id = Some("1".into());
        assert_eq!(state.apply(&revoke_1), CommandResult::TokenRevoked { revoked: true });
        assert!(state.token(&victim.id).is_none());
    }

    #[test]
    fn remembered_request_ids_are_bounded() {
        let mut state = KvState::new(10);
        for i in 0..(REQUEST_IDS_REMEMBERED + 5) {
            let mut request = put("k", "v");
            request.request_id = Some(format!("id-{i}"));
            state.apply(&request);
        }
        assert_eq!(state.request_results.len(), REQUEST_IDS_REMEMBERED);
        assert_eq!(state.request_order.len(), REQUEST_IDS_REMEMBERED);
        let oldest = RequestKey { scope: RequestScope::Server, id: "id-0".into() };
        assert!(!state.request_results.contains_key(&oldest), "the oldest id is forgotten first");
    }

    /// The history is bounded by bytes too: large values trim it long before the revision
    /// count would, the newest event always stays, and the kept events stay contiguous.
    #[test]
    fn history_is_bounded_by_bytes() {
        let mut state = KvState::new(HISTORY_REVISIONS_DEFAULT);
        let value = vec![7u8; 300 * 1024];
        let puts = 300;
        for _ in 0..puts {
            let request =
                Request::new(None, Command::Put { key: "k".into(), value: value.clone(), prev_revision: None });
            state.apply(&request);
        }
        let event_bytes = entry_bytes("k", &value);
        assert!(state.history_bytes() <= HISTORY_BYTES_MAX, "{}", state.history_bytes());
        assert!(state.history_bytes() > HISTORY_BYTES_MAX - event_bytes, "trimmed more than needed");
        let kept = state.history.len() as u64;
        assert_eq!(kept, HISTORY_BYTES_MAX / event_bytes);
        assert_eq!(state.compact_revision(), puts - kept);
        assert_eq!(state.history.back().map(|event| event.revision), Some(puts));
        assert_eq!(state.kv_bytes(), event_bytes, "one key");
        let (events, _) = state.events_after(state.compact_revision(), "", 1000).unwrap();
        assert_eq!(events.len() as u64, kept);
        assert!(state.events_after(state.compact_revision() - 1, "", 1).is_err());
    }

    /// The store's byte bound: a put that grows the store past `KV_BYTES_MAX` is refused
    /// naming the limit; one that does not grow it always fits (a full store can still be
    /// changed and cleaned up). Checked on the decision itself: filling 1 GiB in a unit test
    /// would cost 1 GiB of memory.
    #[test]
    fn the_store_is_bounded_by_bytes() {
        assert_eq!(put_fits(0, 0, 1000), Ok(()));
        assert_eq!(put_fits(KV_BYTES_MAX - 1000, 0, 1000), Ok(()));
        let refused = put_fits(KV_BYTES_MAX - 1000, 0, 1001).unwrap_err();
        assert!(refused.starts_with(STORE_FULL) && refused.contains("KV_BYTES_MAX"), "{refused}");
        assert!(put_fits(KV_BYTES_MAX, 500, 501).is_err());
        assert_eq!(put_fits(KV_BYTES_MAX + 10, 500, 500), Ok(()), "a same-size put into a full store");
        assert_eq!(put_fits(KV_BYTES_MAX + 10, 500, 100), Ok(()), "a shrinking put into a full store");
        // apply counts what it holds: puts, replacements and deletes.
        let mut state = KvState::default();
        state.apply(&put("a", "12345"));
        state.apply(&put("b", "1"));
        state.apply(&put("a", "1234567890"));
        assert_eq!(state.kv_bytes(), entry_bytes("a", b"1234567890") + entry_bytes("b", b"1"));
        state.apply(&Request::new(None, Command::Delete { key: "a".into(), prev_revision: None }));
        assert_eq!(state.kv_bytes(), entry_bytes("b", b"1"));
    }

    #[test]
    fn list_pages_by_prefix() {
        let mut state = KvState::default();
        for key in ["a/1", "a/2", "a/3", "b/1", "a"] {
            state.apply(&put(key, "v"));
        }
        let (items, more) = state.list("a/", None, 2);
        assert_eq!(items.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["a/1", "a/2"]);
        assert!(more);
        let (items, more) = state.list("a/", Some("a/2"), 2);
        assert_eq!(items.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["a/3"]);
        assert!(!more);
        let (items, _) = state.list("", None, 100);
        assert_eq!(items.len(), 5);
    }

    #[test]
    fn history_resumes_without_gaps_and_compacts() {
        let mut state = KvState::new(3);
        for i in 0..5 {
            state.apply(&put(&format!("k{}", i % 2), "v"));
        }
        // Revisions 1..=5; only 3..=5 kept.
        assert_eq!(state.compact_revision(), 2);
        assert_eq!(state.events_after(1, "", 100), Err(HistoryError::Compacted { compact_revision: 2 }));
        let (events, scanned) = state.events_after(2, "", 100).unwrap();
        assert_eq!(events.iter().map(|e| e.revision).collect::<Vec<_>>(), [3, 4, 5]);
        assert_eq!(scanned, 5);
        let (events, scanned) = state.events_after(3, "k1", 100).unwrap();
        assert_eq!(events.iter().map(|e| e.revision).collect::<Vec<_>>(), [4]);
        assert_eq!(scanned, 5);
        let (events, scanned) = state.events_after(2, "", 1).unwrap();
        assert_eq!(events.iter().map(|e| e.revision).collect::<Vec<_>>(), [3]);
        assert_eq!(scanned, 3, "with a full batch the scan stops at the last event returned");
        let (events, scanned) = state.events_after(5, "", 100).unwrap();
        assert!(events.is_empty());
        assert_eq!(scanned, 5);
    }

    #[test]
    fn cluster_id_is_set_once() {
        let mut state = KvState::default();
        let init = |id: &str| Request::new(None, Command::InitCluster { cluster_id: id.into() });
        state.apply(&init("first"));
        state.apply(&init("second"));
        assert_eq!(state.cluster_id(), Some("first"));
        assert_eq!(state.revision(), 0, "bookkeeping is not a user-visible change");
    }

    #[test]
    fn maintenance_keeps_its_start_time_and_turns_off() {
        let mut state = KvState::default();
        let set = |on: bool, now_ms: u64| {
            let mut request = Request::new(None, Command::SetMaintenance { on });
            request.now_ms = now_ms;
            request
        };
        assert_eq!(state.maintenance_since_ms(), None);
        state.apply(&set(true, 1000));
        state.apply(&set(true, 2000));
        assert_eq!(state.maintenance_since_ms(), Some(1000), "turning it on again keeps the first time");
        state.apply(&set(false, 3000));
        assert_eq!(state.maintenance_since_ms(), None);
        assert_eq!(state.revision(), 0, "not a user-visible change");
        assert_eq!(Command::SetMaintenance { on: true }.required_access(), Access::Admin);
    }

    // ---- tokens ---------------------------------------------------------------------

    const T0: u64 = 1_700_000_000_000;

    /// Creates a token through `apply` as the server would (no caller: the bootstrap path)
    /// and returns its text.
    fn create(state: &mut KvState, seed: u8, role: Role, ttl_ms: Option<u64>) -> crate::auth::NewToken {
        let made = crate::auth::new_token([seed; 8], [seed; 32]);
        let mut request = Request::new(
            None,
            Command::CreateToken {
                id: made.id.clone(),
                name: format!("t{seed}"),
                role,
                sha256_hex: made.sha256_hex.clone(),
                ttl_ms,
            },
        );
        request.now_ms = T0;
        assert_eq!(
            state.apply(&request),
            CommandResult::TokenCreated { created_ms: T0, expires_ms: ttl_ms.map(|t| T0 + t) }
        );
        made
    }

    fn stamped(request: Request, token_id: &str, access: Access, now_ms: u64) -> Request {
        let mut request = request.with_auth(token_id, access);
        request.now_ms = now_ms;
        request
    }

    fn unauthorized(result: CommandResult) -> String {
        match result {
            CommandResult::Unauthorized { reason } => reason,
            other => panic!("expected Unauthorized, got {other:?}"),
        }
    }

    /// Every administrative command that changed something leaves one audit record naming
    /// the token's name (or "haven"), the receiving node, the time and what changed; data
    /// writes and refused commands leave none.
    #[test]
    fn admin_commands_are_audited_with_who_when_and_where() {
        let mut state = KvState::default();
        let admin = create(&mut state, 1, Role::Admin, None);
        let audit = |state: &KvState| state.admin().audit.since(0, usize::MAX);
        assert_eq!(audit(&state).len(), 1);
        assert_eq!((audit(&state)[0].actor.as_str(), audit(&state)[0].action.as_str()), ("haven", "token.create"));

        let mut on =
            stamped(Request::new(None, Command::SetMaintenance { on: true }), &admin.id, Access::Admin, T0 + 5);
        on.received_by = 3;
        assert_eq!(state.apply(&on), CommandResult::Ok { revision: 0 });
        let record = audit(&state).pop().unwrap();
        assert_eq!((record.actor.as_str(), record.node, record.at_ms), ("t1", 3, T0 + 5));
        assert_eq!(record.changes[0].old.as_deref(), Some("false"));
        assert_eq!(record.changes[0].new.as_deref(), Some("true"));
        // Maintenance on again changes nothing: no record.
        state.apply(&on);
        state.apply(&put("k", "v"));
        assert_eq!(audit(&state).len(), 2, "no-ops and data writes are not audited");

        let edit = Command::EditHaDraft { edits: vec![("failback".into(), Some("true".into()))] };
        state.apply(&stamped(Request::new(None, edit), &admin.id, Access::Admin, T0 + 6));
        let apply = Command::ApplyHaDraft { base_version: 0 };
        assert_eq!(
            state.apply(&stamped(Request::new(None, apply.clone()), &admin.id, Access::Admin, T0 + 7)),
            CommandResult::HaConfigApplied { version: 1 }
        );
        let record = audit(&state).pop().unwrap();
        assert_eq!(record.action, "config.apply");
        assert_eq!(record.changes[0].what, "failback");
        // Applying again: refused (no draft), not audited.
        assert!(matches!(
            state.apply(&stamped(Request::new(None, apply), &admin.id, Access::Admin, T0 + 8)),
            CommandResult::Refused { .. }
        ));
        let recorded = Command::RecordAudit { entry: AuditEntry::new("failover", "node 2 leads term 9") };
        let seq = match state.apply(&Request::new(None, recorded)) {
            CommandResult::Audited { seq } => seq,
            other => panic!("expected Audited, got {other:?}"),
        };
        assert_eq!(audit(&state).pop().map(|r| (r.seq, r.actor)), Some((seq, "haven".to_string())));
        // A reader's token cannot change the configuration, and nothing is recorded.
        let reader = create(&mut state, 2, Role::Reader, None);
        let before = audit(&state).len();
        let edit = Command::EditHaDraft { edits: vec![("failback".into(), Some("false".into()))] };
        assert!(matches!(
            state.apply(&stamped(Request::new(None, edit), &reader.id, Access::Admin, T0 + 9)),
            CommandResult::Unauthorized { .. }
        ));
        assert_eq!(audit(&state).len(), before);
    }

    #[test]
    fn tokens_authenticate_by_hash_and_are_not_kv_changes() {
        let mut state = KvState::default();
        let admin = create(&mut state, 1, Role::Admin, None);
        assert_eq!(state.revision(), 0, "token changes are bookkeeping, not revisions");
        assert!(state.events_after(0, "", 10).unwrap().0.is_empty(), "nor watch events");
        let presented = crate::auth::parse_token(&admin.token).unwrap();
        assert_eq!(state.authenticate(&presented, T0).map(|r| r.role), Some(Role::Admin));
        let record = state.token(&admin.id).unwrap();
        assert_ne!(record.sha256_hex, admin.token, "only the hash is kept");
        assert!(!format!("{state:?}").contains(&admin.token), "the secret is nowhere in the state");
        let forged = crate::auth::new_token([1; 8], [9; 32]);
        assert!(state.authenticate(&crate::auth::parse_token(&forged.token).unwrap(), T0).is_none());
    }

    /// Issue 14: the last valid admin token cannot be revoked (nobody could administer the
    /// cluster again); with a second one, either may go; an expired admin token does not
    /// count as a way back.
    #[test]
    fn the_last_valid_admin_token_cannot_be_revoked() {
        let mut state = KvState::default();
        let first = create(&mut state, 1, Role::Admin, None);
        let reader = create(&mut state, 2, Role::Reader, None);
        let revoke = |id: &str, now_ms: u64| {
            let mut request = Request::new(None, Command::RevokeToken { id: id.to_string() });
            request.now_ms = now_ms;
            request
        };
        match state.apply(&revoke(&first.id, T0 + 1)) {
            CommandResult::Refused { reason } => {
                assert!(reason.contains("last valid admin token") && reason.contains("haven tokens create"), "{reason}")
            }
            other => panic!("the last admin token was revoked: {other:?}"),
        }
        assert!(state.token(&first.id).is_some(), "still there");
        assert_eq!(state.apply(&revoke(&reader.id, T0 + 1)), CommandResult::TokenRevoked { revoked: true });
        // An admin token that expires does not count once it has expired.
        let short = create(&mut state, 3, Role::Admin, Some(1_000));
        assert!(matches!(state.apply(&revoke(&first.id, T0 + 2_000)), CommandResult::Refused { .. }));
        let second = create(&mut state, 4, Role::Admin, None);
        assert_eq!(state.apply(&revoke(&first.id, T0 + 2_000)), CommandResult::TokenRevoked { revoked: true });
        assert!(matches!(state.apply(&revoke(&second.id, T0 + 2_000)), CommandResult::Refused { .. }));
        // The expired one may go whenever.
        assert_eq!(state.apply(&revoke(&short.id, T0 + 2_000)), CommandResult::TokenRevoked { revoked: true });
    }

    /// The in-flight case: a write is accepted at the HTTP layer with a valid token,
    /// the token is revoked, then the write reaches the state machine. It must change nothing.
    #[test]
    fn a_write_is_checked_again_when_applied() {
        let mut state = KvState::default();
        let operator = create(&mut state, 2, Role::Operator, None);
        let write = |key: &str| stamped(put(key, "v"), &operator.id, Access::Write, T0 + 5);
        assert!(matches!(state.apply(&write("before")), CommandResult::Put { revision: 1, .. }));
        let revoke = Request::new(None, Command::RevokeToken { id: operator.id.clone() });
        assert_eq!(state.apply(&revoke), CommandResult::TokenRevoked { revoked: true });
        assert_eq!(state.apply(&revoke), CommandResult::TokenRevoked { revoked: false });
        let digest = recounted_digest(&state);
        let reason = unauthorized(state.apply(&write("in-flight")));
        assert!(reason.contains("revoked") && reason.contains(&operator.id), "{reason}");
        assert_eq!((state.revision(), recounted_digest(&state)), (1, digest), "nothing changed");
        assert!(state.get("in-flight").is_none());
    }

    #[test]
    fn expiry_is_decided_by_the_leaders_stamp() {
        let mut state = KvState::default();
        let operator = create(&mut state, 3, Role::Operator, Some(60_000));
        let at = |now_ms| stamped(put("k", "v"), &operator.id, Access::Write, now_ms);
        assert!(matches!(state.apply(&at(T0 + 59_999)), CommandResult::Put { .. }));
        let reason = unauthorized(state.apply(&at(T0 + 60_000)));
        assert!(reason.contains("expired"), "{reason}");
        assert_eq!(state.revision(), 1);
    }

    #[test]
    fn a_weak_role_cannot_write_whatever_the_route_said() {
        let mut state = KvState::default();
        let reader = create(&mut state, 4, Role::Reader, None);
        // Labelled as a read, but a put needs write access: the command's own need counts.
        let mislabelled = stamped(put("k", "v"), &reader.id, Access::Read, T0);
        let reason = unauthorized(state.apply(&mislabelled));
        assert!(reason.contains("role reader"), "{reason}");
        let operator = create(&mut state, 5, Role::Operator, None);
        let revoke_as_operator = stamped(
            Request::new(None, Command::RevokeToken { id: reader.id.clone() }),
            &operator.id,
            Access::Admin,
            T0,
        );
        unauthorized(state.apply(&revoke_as_operator));
        assert!(state.token(&reader.id).is_some(), "an operator cannot revoke tokens");
        assert_eq!(state.revision(), 0);
    }

    #[test]
    fn a_refused_request_is_not_remembered_under_its_id() {
        let mut state = KvState::default();
        let reader = create(&mut state, 6, Role::Reader, None);
        let operator = create(&mut state, 7, Role::Operator, None);
        let mut request = stamped(put("k", "v"), &reader.id, Access::Write, T0);
        request.request_id = Some("r1".into());
        unauthorized(state.apply(&request));
        let mut retry = stamped(put("k", "v"), &operator.id, Access::Write, T0);
        retry.request_id = Some("r1".into());
        assert!(matches!(state.apply(&retry), CommandResult::Put { revision: 1, .. }));
    }

    #[test]
    fn a_join_token_admits_one_node() {
        let mut state = KvState::default();
        let join = create(&mut state, 8, Role::Join, Some(600_000));
        let consume = |node_id: u64, incarnation: &str| {
            stamped(
                Request::new(
                    None,
                    Command::ConsumeJoinToken { id: join.id.clone(), node_id, incarnation: incarnation.into() },
                ),
                &join.id,
                Access::Join,
                T0 + 1,
            )
        };
        assert_eq!(state.apply(&consume(4, "inc-a")), CommandResult::Ok { revision: 0 });
        assert!(state.token(&join.id).unwrap().used());
        // The same node repeating its join (lost answer, restart before promotion): fine.
        assert_eq!(state.apply(&consume(4, "inc-a")), CommandResult::Ok { revision: 0 });
        // Another node, or the same id with a wiped disk: refused.
        let reason = unauthorized(state.apply(&consume(5, "inc-b")));
        assert!(reason.contains("already used by node 4"), "{reason}");
        unauthorized(state.apply(&consume(4, "inc-c")));
        assert_eq!(state.token(&join.id).unwrap().used_by.as_ref().map(|c| c.node_id), Some(4));
        // Expired: refused even for a first use.
        let late = create(&mut state, 9, Role::Join, Some(1000));
        let mut request =
            Request::new(None, Command::ConsumeJoinToken { id: late.id.clone(), node_id: 6, incarnation: "x".into() })
                .with_auth(&late.id, Access::Join);
        request.now_ms = T0 + 1000;
        unauthorized(state.apply(&request));
        // A token that is not a join token cannot be consumed, and nobody spends another's.
        let operator = create(&mut state, 10, Role::Operator, None);
        let other = Request::new(
            None,
            Command::ConsumeJoinToken { id: operator.id.clone(), node_id: 6, incarnation: "x".into() },
        );
        unauthorized(state.apply(&other));
        let fresh = create(&mut state, 11, Role::Join, None);
        let theft = stamped(
            Request::new(None, Command::ConsumeJoinToken { id: fresh.id.clone(), node_id: 6, incarnation: "x".into() }),
            &join.id,
            Access::Join,
            T0,
        );
        unauthorized(state.apply(&theft));
        assert!(!state.token(&fresh.id).unwrap().used());
    }

    /// A join token is deleted once its node is admitted: it admits nobody after, not even
    /// the same node id and data dir once that node has been removed.
    #[test]
    fn an_admitted_join_spends_the_token_for_good() {
        let mut state = KvState::default();
        let join = create(&mut state, 8, Role::Join, Some(600_000));
        let with_join_token = |command: Command| stamped(Request::new(None, command), &join.id, Access::Join, T0 + 1);
        let consume = Command::ConsumeJoinToken { id: join.id.clone(), node_id: 4, incarnation: "inc-a".into() };
        let spend = |node_id: u64| Command::SpendJoinToken { id: join.id.clone(), node_id };
        // Not claimed yet, or claimed by another node: nothing is spent.
        assert!(matches!(state.apply(&with_join_token(spend(4))), CommandResult::Refused { .. }));
        assert_eq!(state.apply(&with_join_token(consume.clone())), CommandResult::Ok { revision: 0 });
        assert!(matches!(state.apply(&with_join_token(spend(5))), CommandResult::Refused { .. }));
        // Another caller cannot spend it.
        let other = create(&mut state, 9, Role::Join, None);
        let theft = stamped(Request::new(None, spend(4)), &other.id, Access::Join, T0 + 1);
        unauthorized(state.apply(&theft));
        assert!(state.token(&join.id).is_some());
        // Its node admitted: spent, and then useless, even for the same claim.
        assert_eq!(state.apply(&with_join_token(spend(4))), CommandResult::Ok { revision: 0 });
        assert!(state.token(&join.id).is_none());
        unauthorized(state.apply(&with_join_token(consume)));
    }

    #[test]
    fn token_creation_checks_its_rules_and_bounds_the_table() {
        let mut state = KvState::default();
        let made = crate::auth::new_token([1; 8], [1; 32]);
        let create_with = |id: &str, name: &str, hash: &str, ttl_ms: Option<u64>| {
            Request::new(
                None,
                Command::CreateToken {
                    id: id.into(),
                    name: name.into(),
                    role: Role::Reader,
                    sha256_hex: hash.into(),
                    ttl_ms,
                },
            )
        };
        for bad in [
            create_with("xyz", "n", &made.sha256_hex, None),
            create_with(&made.id, "bad name", &made.sha256_hex, None),
            create_with(&made.id, "n", "0123", None),
            create_with(&made.id, "n", &made.sha256_hex, Some(0)),
            create_with(&made.id, "n", &made.sha256_hex, Some(u64::MAX)),
        ] {
            assert!(matches!(state.apply(&bad), CommandResult::Refused { .. }), "{bad}");
        }
        assert_eq!(state.tokens().count(), 0);
        assert!(matches!(
            state.apply(&create_with(&made.id, "n", &made.sha256_hex, None)),
            CommandResult::TokenCreated { .. }
        ));
        assert!(matches!(
            state.apply(&create_with(&made.id, "n", &made.sha256_hex, None)),
            CommandResult::Refused { .. }
        ));

        // Fill the table with short-lived tokens; once they have expired they make room.
        let mut full = KvState::default();
        for i in 0..TOKENS_MAX as u64 {
            let mut request = create_with(&format!("{i:016x}"), "n", &made.sha256_hex, Some(1000));
            request.now_ms = T0;
            assert!(matches!(full.apply(&request), CommandResult::TokenCreated { .. }));
        }
        let mut one_more = create_with("ffffffffffffffff", "n", &made.sha256_hex, None);
        one_more.now_ms = T0 + 999;
        assert!(matches!(full.apply(&one_more), CommandResult::Refused { .. }), "full while none has expired");
        one_more.now_ms = T0 + 1000;
        assert!(matches!(full.apply(&one_more), CommandResult::TokenCreated { .. }));
        assert_eq!(full.tokens().count(), 1, "the expired ones were dropped");
    }

    #[test]
    fn requests_print_without_secrets_or_hashes() {
        let made = crate::auth::new_token([1; 8], [1; 32]);
        let request = Request::new(
            None,
            Command::CreateToken {
                id: made.id.clone(),
                name: "ci".into(),
                role: Role::Operator,
                sha256_hex: made.sha256_hex.clone(),
                ttl_ms: None,
            },
        )
        .with_auth("00000000000000aa", Access::Admin);
        let printed = request.to_string();
        assert!(printed.contains(&made.id) && printed.contains("by token 00000000000000aa"), "{printed}");
        assert!(!printed.contains(&made.sha256_hex), "{printed}");
    }

    #[test]
    fn digest_depends_on_content_only() {
        let mut a = KvState::default();
        let mut b = KvState::new(5);
        for state in [&mut a, &mut b] {
            state.apply(&put("x", "1"));
            state.apply(&put("y", "2"));
        }
        assert_eq!(a.replica_digest(), b.replica_digest());
        b.apply(&put("y", "3"));
        assert_ne!(a.replica_digest(), b.replica_digest());
    }

    /// Durability marks (issue 13, rewound storage) are replicated bookkeeping: merged per
    /// data dir, never lowered, members not listed dropped, no revision, nothing audited,
    /// bounded, and only the server proposes them.
    #[test]
    fn durable_marks_merge_and_never_go_down() {
        use crate::durability::DurableMark;
        let mut state = KvState::default();
        state.apply(&put("a", "1"));
        let record = |marks: Vec<(u64, &str, u64)>| {
            Request::new(
                None,
                Command::RecordDurable {
                    marks: marks.into_iter().map(|(id, inc, index)| (id, inc.into(), index)).collect(),
                },
            )
        };
        let audited = state.admin().audit.since(0, usize::MAX).len();
        assert_eq!(state.apply(&record(vec![(1, "a", 10), (2, "b", 8)])), CommandResult::Ok { revision: 1 });
        assert_eq!(state.apply(&record(vec![(1, "a", 4), (2, "b2", 3)])), CommandResult::Ok { revision: 1 });
        assert_eq!(
            state.durable().iter().map(|(id, mark)| (*id, mark.clone())).collect::<Vec<_>>(),
            vec![
                (1, DurableMark { incarnation: "a".into(), index: 10 }),
                (2, DurableMark { incarnation: "b2".into(), index: 3 })
            ]
        );
        state.apply(&record(vec![(1, "a", 11)]));
        assert_eq!(state.durable().len(), 1, "node 2 left");
        assert_eq!(state.revision(), 1);
        assert_eq!(state.admin().audit.since(0, usize::MAX).len(), audited, "nothing audited");
        let too_many: Vec<(u64, &str, u64)> =
            (0..crate::durability::DURABLE_MARKS_MAX as u64 + 1).map(|id| (id, "x", 1)).collect();
        assert!(matches!(state.apply(&record(too_many)), CommandResult::Refused { .. }));
        assert_eq!(state.durable().len(), 1);
        assert!(Command::RecordDurable { marks: Vec::new() }.is_server_only());
    }
}
