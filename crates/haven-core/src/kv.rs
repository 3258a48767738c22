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
//! History: the last `history_revisions` change events are kept so a watcher can resume
//! from any revision at or after `compact_revision` with none skipped or repeated.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::collections::VecDeque;

use serde::Deserialize;
use serde::Serialize;

use crate::key::key_has_prefix;
use crate::limits::HISTORY_REVISIONS_DEFAULT;
use crate::limits::REQUEST_IDS_REMEMBERED;

/// A change to the store, as proposed through Raft.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Set `key` to `value`. With `prev_revision`, only if the key's mod_revision equals it
    /// (0 = the key must not exist).
    Put { key: String, value: Vec<u8>, prev_revision: Option<u64> },
    /// Delete `key`, with the same optional compare.
    Delete { key: String, prev_revision: Option<u64> },
    /// Records the cluster id; proposed once by the bootstrapping node. Later ones are ignored.
    InitCluster { cluster_id: String },
}

/// A command with its idempotency key, as stored in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Client- or server-chosen id: a retried request with the same id applies at most once.
    pub request_id: Option<String>,
    pub command: Command,
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
}

impl Default for CommandResult {
    fn default() -> Self {
        CommandResult::Ok { revision: 0 }
    }
}

/// One key's current value and its revisions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
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
    Put { value: Vec<u8>, create_revision: u64, version: u64 },
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
    entries: BTreeMap<String, Entry>,
    revision: u64,
    cluster_id: Option<String>,
    /// Events with revisions `compact_revision + 1 ..= revision`, contiguous.
    history: VecDeque<Event>,
    /// Watchers may resume from any `after_revision >= compact_revision`.
    compact_revision: u64,
    history_revisions: u64,
    /// Results of recent requests by id, for at-most-once retries; `request_order` evicts
    /// the oldest first so the memory is bounded.
    request_results: HashMap<String, CommandResult>,
    request_order: VecDeque<String>,
}

impl Default for KvState {
    fn default() -> Self {
        Self::new(HISTORY_REVISIONS_DEFAULT)
    }
}

impl KvState {
    pub fn new(history_revisions: u64) -> Self {
        KvState {
            entries: BTreeMap::new(),
            revision: 0,
            cluster_id: None,
            history: VecDeque::new(),
            compact_revision: 0,
            history_revisions: history_revisions.max(1),
            request_results: HashMap::new(),
            request_order: VecDeque::new(),
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

    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.get(key)
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
        if after_revision < self.compact_revision {
            return Err(HistoryError::Compacted { compact_revision: self.compact_revision });
        }
        let mut events = Vec::new();
        let mut scanned = after_revision;
        // The history is contiguous: revision r sits at index r - compact_revision - 1.
        let first_index = (after_revision - self.compact_revision) as usize;
        for event in self.history.iter().skip(first_index) {
            if events.len() == limit {
                break;
            }
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

    /// Applies one request. Deterministic: the same requests in the same order give the
    /// same state on every node.
    pub fn apply(&mut self, request: &Request) -> CommandResult {
        if let Some(id) = &request.request_id {
            if let Some(result) = self.request_results.get(id) {
                return result.clone();
            }
        }
        let result = self.apply_command(&request.command);
        if let Some(id) = &request.request_id {
            self.remember(id.clone(), result.clone());
        }
        result
    }

    fn apply_command(&mut self, command: &Command) -> CommandResult {
        match command {
            Command::Put { key, value, prev_revision } => {
                let current = self.entries.get(key).map_or(0, |entry| entry.mod_revision);
                if let Some(expected) = prev_revision {
                    if *expected != current {
                        return CommandResult::CompareFailed { current_revision: current };
                    }
                }
                self.revision += 1;
                let revision = self.revision;
                let entry = match self.entries.get(key) {
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
        }
    }

    fn record(&mut self, event: Event) {
        debug_assert_eq!(event.revision, self.compact_revision + self.history.len() as u64 + 1);
        self.history.push_back(event);
        self.trim_history();
    }

    fn trim_history(&mut self) {
        while self.history.len() as u64 > self.history_revisions {
            if let Some(dropped) = self.history.pop_front() {
                self.compact_revision = dropped.revision;
            }
        }
    }

    fn remember(&mut self, id: String, result: CommandResult) {
        if self.request_results.insert(id.clone(), result).is_none() {
            self.request_order.push_back(id);
        }
        while self.request_order.len() > REQUEST_IDS_REMEMBERED {
            if let Some(oldest) = self.request_order.pop_front() {
                self.request_results.remove(&oldest);
            }
        }
    }

    /// A digest of the user-visible state (keys, values, revisions), identical on every
    /// node that applied the same log prefix. Used to compare replicas.
    pub fn digest(&self) -> u64 {
        // FNV-1a: stable across builds and platforms, unlike std's hasher.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        let mut feed = |bytes: &[u8]| {
            for byte in bytes {
                hash ^= u64::from(*byte);
                hash = hash.wrapping_mul(0x0100_0000_01b3);
            }
        };
        feed(&self.revision.to_le_bytes());
        for (key, entry) in &self.entries {
            feed(&(key.len() as u64).to_le_bytes());
            feed(key.as_bytes());
            feed(&(entry.value.len() as u64).to_le_bytes());
            feed(&entry.value);
            feed(&entry.create_revision.to_le_bytes());
            feed(&entry.mod_revision.to_le_bytes());
            feed(&entry.version.to_le_bytes());
        }
        hash
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, value: &str) -> Request {
        Request {
            request_id: None,
            command: Command::Put { key: key.into(), value: value.as_bytes().to_vec(), prev_revision: None },
        }
    }

    fn cas(key: &str, value: &str, prev: u64) -> Request {
        Request {
            request_id: None,
            command: Command::Put { key: key.into(), value: value.as_bytes().to_vec(), prev_revision: Some(prev) },
        }
    }

    fn del(key: &str) -> Request {
        Request { request_id: None, command: Command::Delete { key: key.into(), prev_revision: None } }
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
        let guarded_delete =
            Request { request_id: None, command: Command::Delete { key: "k".into(), prev_revision: Some(1) } };
        assert_eq!(state.apply(&guarded_delete), CommandResult::CompareFailed { current_revision: 2 });
        assert_eq!(state.get("k").unwrap().value, b"2");
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
        assert!(!state.request_results.contains_key("id-0"), "the oldest id is forgotten first");
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
        let init = |id: &str| Request { request_id: None, command: Command::InitCluster { cluster_id: id.into() } };
        state.apply(&init("first"));
        state.apply(&init("second"));
        assert_eq!(state.cluster_id(), Some("first"));
        assert_eq!(state.revision(), 0, "bookkeeping is not a user-visible change");
    }

    #[test]
    fn digest_depends_on_content_only() {
        let mut a = KvState::default();
        let mut b = KvState::new(5);
        for state in [&mut a, &mut b] {
            state.apply(&put("x", "1"));
            state.apply(&put("y", "2"));
        }
        assert_eq!(a.digest(), b.digest());
        b.apply(&put("y", "3"));
        assert_ne!(a.digest(), b.digest());
    }
}
