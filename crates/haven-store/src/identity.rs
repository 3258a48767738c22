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
