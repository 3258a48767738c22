//! The identity of a data dir: which node it belongs to and its random incarnation.
//!
//! The incarnation is created once, when the data dir is initialised, and never changes.
//! The cluster records it with the member; a node that comes back with a different one has
//! lost its log (a wiped or replaced disk) and must not vote as that member, because a voter
//! that forgot what it acknowledged can let a minority elect a leader that lacks acknowledged
//! writes.

use std::sync::Arc;

use redb::ReadableDatabase;
use redb::TableDefinition;
use serde::Deserialize;
use serde::Serialize;

use crate::io_error;
use crate::NodeId;

pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
pub(crate) const IDENTITY_KEY: &str = "identity";
/// Under its own key, so the identity record keeps the encoding existing data dirs hold.
pub(crate) const BOOTSTRAP_INTENT_KEY: &str = "bootstrap_intent";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeIdentity {
    pub node_id: NodeId,
    pub incarnation: String,
    /// Set once the node belongs to a cluster (bootstrapped it or was admitted).
    pub cluster_id: Option<String>,
}

impl NodeIdentity {
    /// Loads the identity, creating it (with a fresh incarnation) on first use. Refuses a
    /// data dir that belongs to another node id.
    pub fn load_or_create(db: &Arc<redb::Database>, node_id: NodeId) -> std::io::Result<NodeIdentity> {
        if let Some(identity) = Self::load(db)? {
            if identity.node_id != node_id {
                return Err(std::io::Error::other(format!(
                    "this data dir belongs to node {} but the configuration says node_id = {node_id}; \
                     use the right data dir or node_id",
                    identity.node_id
                )));
            }
            return Ok(identity);
        }
        let identity = NodeIdentity { node_id, incarnation: new_random_id(), cluster_id: None };
        identity.save(db)?;
        Ok(identity)
    }

    pub fn load(db: &Arc<redb::Database>) -> std::io::Result<Option<NodeIdentity>> {
        let txn = db.begin_read().map_err(|e| io_error("read identity", e))?;
        let table = match txn.open_table(META) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(error) => return Err(io_error("read identity", error)),
        };
        crate::stored::get_meta(&table, IDENTITY_KEY, std::path::Path::new(crate::DATABASE_FILE))
    }

    /// Writes the identity durably.
    pub fn save(&self, db: &Arc<redb::Database>) -> std::io::Result<()> {
        let txn = db.begin_write().map_err(|e| io_error("write identity", e))?;
        {
            let mut table = txn.open_table(META).map_err(|e| io_error("write identity", e))?;
            crate::stored::put_meta(&mut table, IDENTITY_KEY, self).map_err(|e| io_error("write identity", e))?;
        }
        txn.commit().map_err(|e| io_error("commit identity", e))
    }
}

/// The operator's one-time decision that this data dir starts a new cluster (`haven init`).
///
/// A node bootstraps only on a data dir that holds this record, and the record is cleared
/// once the new cluster has its first admin token: a data dir that lost everything (a wiped
/// or replaced disk) holds no such record, so its node cannot silently start a second
/// cluster at the address of a member of the first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootstrapIntent {
    pub node_id: NodeId,
    /// When `haven init` ran (ms since the Unix epoch), for messages.
    pub prepared_ms: u64,
}

impl BootstrapIntent {
    pub fn load(db: &Arc<redb::Database>) -> std::io::Result<Option<BootstrapIntent>> {
        crate::stored::read_meta(db, BOOTSTRAP_INTENT_KEY, std::path::Path::new(crate::DATABASE_FILE))
    }

    /// Writes the intent durably.
    pub fn save(&self, db: &Arc<redb::Database>) -> std::io::Result<()> {
        write_meta_record(db, BOOTSTRAP_INTENT_KEY, self, "write bootstrap intent")
    }

    /// Removes the intent durably (the new cluster exists and has its admin token).
    pub fn clear(db: &Arc<redb::Database>) -> std::io::Result<()> {
        let txn = db.begin_write().map_err(|e| io_error("clear bootstrap intent", e))?;
        {
            let mut table = txn.open_table(META).map_err(|e| io_error("clear bootstrap intent", e))?;
            crate::stored::remove_meta(&mut table, BOOTSTRAP_INTENT_KEY)
                .map_err(|e| io_error("clear bootstrap intent", e))?;
        }
        txn.commit().map_err(|e| io_error("commit bootstrap intent", e))
    }
}

/// Whether the data dir holds Raft state: a vote, log entries, or a purged log. A node
/// that bootstrapped or was admitted always has a vote.
pub fn holds_raft_state(db: &Arc<redb::Database>) -> std::io::Result<bool> {
    let txn = db.begin_read().map_err(|e| io_error("read raft state", e))?;
    let meta = match txn.open_table(META) {
        Ok(table) => Some(table),
        Err(redb::TableError::TableDoesNotExist(_)) => None,
        Err(error) => return Err(io_error("read raft state", error)),
    };
    if let Some(meta) = meta {
        for key in [crate::log_store::VOTE_KEY, crate::log_store::LAST_PURGED_KEY] {
            if meta.get(key).map_err(|e| io_error("read raft state", e))?.is_some() {
                return Ok(true);
            }
        }
    }
    match txn.open_table(crate::log_store::LOG) {
        Ok(log) => Ok(redb::ReadableTableMetadata::len(&log).map_err(|e| io_error("read raft state", e))? > 0),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(false),
        Err(error) => Err(io_error("read raft state", error)),
    }
}

fn write_meta_record<T: Serialize>(db: &Arc<redb::Database>, key: &str, value: &T, what: &str) -> std::io::Result<()> {
    let txn = db.begin_write().map_err(|e| io_error(what, e))?;
    {
        let mut table = txn.open_table(META).map_err(|e| io_error(what, e))?;
        crate::stored::put_meta(&mut table, key, value).map_err(|e| io_error(what, e))?;
    }
    txn.commit().map_err(|e| io_error(what, e))
}

/// 128 random bits as hex: unique enough to tell two data dirs (or clusters) apart.
pub fn new_random_id() -> String {
    let bits: u128 = rand::random();
    format!("{bits:032x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_created_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::open_database(dir.path()).unwrap();
        let first = NodeIdentity::load_or_create(&db, 3).unwrap();
        let again = NodeIdentity::load_or_create(&db, 3).unwrap();
        assert_eq!(first, again);
        assert_eq!(first.incarnation.len(), 32);
        let error = NodeIdentity::load_or_create(&db, 4).unwrap_err().to_string();
        assert!(error.contains("belongs to node 3"), "{error}");
    }

    #[test]
    fn a_bootstrap_intent_is_kept_until_cleared_and_raft_state_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::open_database(dir.path()).unwrap();
        assert_eq!(BootstrapIntent::load(&db).unwrap(), None);
        assert!(!holds_raft_state(&db).unwrap());
        NodeIdentity::load_or_create(&db, 1).unwrap();
        let intent = BootstrapIntent { node_id: 1, prepared_ms: 42 };
        intent.save(&db).unwrap();
        assert_eq!(BootstrapIntent::load(&db).unwrap(), Some(intent));
        assert!(!holds_raft_state(&db).unwrap(), "the intent and the identity are no raft state");
        BootstrapIntent::clear(&db).unwrap();
        assert_eq!(BootstrapIntent::load(&db).unwrap(), None);
        assert_eq!(NodeIdentity::load(&db).unwrap().map(|i| i.node_id), Some(1), "the identity stays");
    }

    #[test]
    fn a_wiped_dir_gets_a_new_incarnation() {
        let first = {
            let dir = tempfile::tempdir().unwrap();
            let db = crate::open_database(dir.path()).unwrap();
            NodeIdentity::load_or_create(&db, 1).unwrap()
        };
        let dir = tempfile::tempdir().unwrap();
        let db = crate::open_database(dir.path()).unwrap();
        assert_ne!(first.incarnation, NodeIdentity::load_or_create(&db, 1).unwrap().incarnation);
    }
}
