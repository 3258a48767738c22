//! The two parts of the state that grow with what clients write, each with its size in
//! bytes kept as it changes, so the state can be bounded by bytes as well as by count
//! (`crate::limits::KV_BYTES_MAX`, `crate::limits::HISTORY_BYTES_MAX`; issue 13, item 7).
//!
//! ```text
//!   Entries { map: key -> Entry, bytes }     bytes = Σ key + value + RECORD_OVERHEAD_BYTES
//!   History { events: [Event], bytes }       bytes = Σ key + value + RECORD_OVERHEAD_BYTES
//! ```
//!
//! The size is derived, never stored: each encodes exactly as the bare collection it wraps
//! (so snapshots written before read the same) and is recounted when decoded. Reads go
//! through `Deref`; every change goes through the methods here, which keep the count.

use std::ops::Deref;

use imbl::OrdMap;
use imbl::Vector;
use serde::Deserialize;
use serde::Deserializer;
use serde::Serialize;
use serde::Serializer;

use super::Entry;
use super::Event;
use super::EventKind;
use crate::limits::RECORD_OVERHEAD_BYTES;

/// What one stored key costs: its key, its value and the bookkeeping.
pub fn entry_bytes(key: &str, value: &[u8]) -> u64 {
    key.len() as u64 + value.len() as u64 + RECORD_OVERHEAD_BYTES
}

impl Event {
    /// What this event costs in the history.
    pub fn stored_bytes(&self) -> u64 {
        match &self.kind {
            EventKind::Put { value, .. } => entry_bytes(&self.key, value),
            EventKind::Delete => entry_bytes(&self.key, &[]),
        }
    }
}

/// A 64-bit FNV-1a hash of one key and its entry: stable across builds and platforms.
fn entry_hash(key: &str, entry: &Entry) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for byte in bytes {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    };
    feed(&(key.len() as u64).to_le_bytes());
    feed(key.as_bytes());
    feed(&(entry.value.len() as u64).to_le_bytes());
    feed(&entry.value);
    feed(&entry.create_revision.to_le_bytes());
    feed(&entry.mod_revision.to_le_bytes());
    feed(&entry.version.to_le_bytes());
    hash
}

/// The keys and their entries, with their size and a digest of them.
///
/// The digest is the wrapping sum of every entry's hash: it does not depend on the order
/// the entries were written in, only on what is held, and each change updates it in the
/// time it takes to hash the entry it changes (the replicas compare it, `crate::replica_check`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entries {
    map: OrdMap<String, Entry>,
    bytes: u64,
    digest: u64,
}

impl Entries {
    /// Bytes of keys and values held ([`entry_bytes`] each).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The digest of everything held.
    pub fn digest(&self) -> u64 {
        self.digest
    }

    pub fn insert(&mut self, key: String, entry: Entry) {
        let added = entry_bytes(&key, &entry.value);
        let hash = entry_hash(&key, &entry);
        if let Some(old) = self.map.insert(key.clone(), entry) {
            self.bytes -= entry_bytes(&key, &old.value);
            self.digest = self.digest.wrapping_sub(entry_hash(&key, &old));
        }
        self.bytes += added;
        self.digest = self.digest.wrapping_add(hash);
    }

    pub fn remove(&mut self, key: &str) -> Option<Entry> {
        let removed = self.map.remove(key)?;
        self.bytes -= entry_bytes(key, &removed.value);
        self.digest = self.digest.wrapping_sub(entry_hash(key, &removed));
        Some(removed)
    }
}

impl From<OrdMap<String, Entry>> for Entries {
    fn from(map: OrdMap<String, Entry>) -> Self {
        let bytes = map.iter().map(|(key, entry)| entry_bytes(key, &entry.value)).sum();
        let digest = map.iter().fold(0u64, |digest, (key, entry)| digest.wrapping_add(entry_hash(key, entry)));
        Entries { map, bytes, digest }
    }
}

impl Deref for Entries {
    type Target = OrdMap<String, Entry>;
    fn deref(&self) -> &Self::Target {
        &self.map
    }
}

impl Serialize for Entries {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.map.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        OrdMap::deserialize(deserializer).map(Entries::from)
    }
}

/// The change events kept for watchers, oldest first, with their size.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    events: Vector<Event>,
    bytes: u64,
}

impl History {
    /// Bytes of the kept events ([`Event::stored_bytes`] each).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn push_back(&mut self, event: Event) {
        self.bytes += event.stored_bytes();
        self.events.push_back(event);
    }

    pub fn pop_front(&mut self) -> Option<Event> {
        let event = self.events.pop_front()?;
        self.bytes -= event.stored_bytes();
        Some(event)
    }
}

impl From<Vector<Event>> for History {
    fn from(events: Vector<Event>) -> Self {
        let bytes = events.iter().map(Event::stored_bytes).sum();
        History { events, bytes }
    }
}

impl Deref for History {
    type Target = Vector<Event>;
    fn deref(&self) -> &Self::Target {
        &self.events
    }
}

impl Serialize for History {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.events.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for History {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Vector::deserialize(deserializer).map(History::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(value: &[u8]) -> Entry {
        Entry { value: value.to_vec(), create_revision: 1, mod_revision: 1, version: 1 }
    }

    /// The running count always equals a recount, through inserts, replacements, removals
    /// and a round trip through the encoding (which stores no count).
    #[test]
    fn the_running_size_equals_a_recount() {
        let mut entries = Entries::default();
        entries.insert("a".into(), entry(b"12345"));
        entries.insert("bb".into(), entry(b"1"));
        entries.insert("a".into(), entry(b"1234567890"));
        assert_eq!(entries.remove("missing"), None);
        assert_eq!(entries.bytes(), Entries::from(entries.map.clone()).bytes());
        assert_eq!(entries.digest(), Entries::from(entries.map.clone()).digest());
        assert_eq!(entries.bytes(), 1 + 10 + 2 + 1 + 2 * RECORD_OVERHEAD_BYTES);
        entries.remove("a");
        assert_eq!(entries.bytes(), 2 + 1 + RECORD_OVERHEAD_BYTES);
        assert_eq!(entries.digest(), Entries::from(entries.map.clone()).digest());
        // The same contents written in another order have the same digest; one changed
        // byte or revision gives another.
        let mut other = Entries::default();
        other.insert("bb".into(), entry(b"1"));
        assert_eq!(other.digest(), entries.digest());
        other.insert("bb".into(), entry(b"2"));
        assert_ne!(other.digest(), entries.digest());
        other.insert("bb".into(), Entry { mod_revision: 2, ..entry(b"1") });
        assert_ne!(other.digest(), entries.digest());
        let decoded: Entries = crate::codec::decode(&crate::codec::encode(&entries).unwrap()).unwrap();
        assert_eq!(decoded, entries);
        // Encoded exactly like the bare map it wraps.
        assert_eq!(crate::codec::encode(&entries).unwrap(), crate::codec::encode(&entries.map).unwrap());

        let mut history = History::default();
        let put = |revision, value: &[u8]| Event {
            revision,
            key: "k".into(),
            kind: EventKind::Put { value: value.to_vec(), create_revision: 1, version: revision },
        };
        history.push_back(put(1, b"abc"));
        history.push_back(Event { revision: 2, key: "k".into(), kind: EventKind::Delete });
        history.push_back(put(3, b"abcdef"));
        assert_eq!(history.bytes(), 3 * (1 + RECORD_OVERHEAD_BYTES) + 3 + 6);
        history.pop_front();
        assert_eq!(history.bytes(), History::from(history.events.clone()).bytes());
        let decoded: History = crate::codec::decode(&crate::codec::encode(&history).unwrap()).unwrap();
        assert_eq!(decoded, history);
        assert_eq!(crate::codec::encode(&history).unwrap(), crate::codec::encode(&history.events).unwrap());
    }
}
