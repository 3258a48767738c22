//! A new cluster is created once, by an explicit step: `haven init`.
//!
//! ```text
//!   haven init (node stopped) ── checks the data dir holds no cluster ──▶ BootstrapIntent
//!   haven serve ── uninitialised + intent ──▶ bootstrap (single voter) ──▶ first admin token
//!                                                        ──▶ intent cleared
//!              ── uninitialised, bootstrap = true, no intent ──▶ refuse to start (it lost
//!                                                                its data: join instead)
//!              ── initialised ──▶ carry on (bootstrap and join are ignored)
//! ```
//!
//! Before, `bootstrap = true` created a new cluster whenever the data dir was empty, so a
//! node whose disk was wiped (the first node of `haven dev`, a replaced disk) silently
//! started a second cluster at the address of a member of the first: clients got 401 from
//! it, and the new cluster's admin token replaced the real one's. The intent is kept in the
//! data dir it is about, so a wipe removes it too.

use std::path::Path;

use haven_core::config::NodeConfig;
use haven_store::identity::holds_raft_state;
use haven_store::BootstrapIntent;
use haven_store::NodeId;
use haven_store::NodeIdentity;

use crate::auth::ADMIN_TOKEN_FILE;

/// What a node does about entering a cluster at start, from what its data dir holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// Already a member (or admitted as one): nothing to do.
    Member,
    /// Start the new cluster `haven init` prepared.
    Bootstrap,
    /// Join through the configured member.
    Join,
    /// Neither: wait to be added (a node started without bootstrap or join).
    Wait,
    /// Refuse to start: the reason, for the operator.
    Refuse(String),
}

/// The decision at start: `initialized` (openraft has a vote or log), `intent` (prepared by
/// `haven init`), and the configuration's `bootstrap` and `join`.
pub fn entry(config: &NodeConfig, initialized: bool, intent: Option<&BootstrapIntent>) -> Entry {
    if initialized {
        return Entry::Member;
    }
    match (intent, config.join.is_some(), config.bootstrap) {
        (Some(_), true, _) => Entry::Refuse(format!(
            "the data dir {} was prepared by `haven init` to start a new cluster, but join is set; remove join to \
             start the new cluster, or remove the data dir to join the existing one",
            config.data_dir.display()
        )),
        (Some(_), false, _) => Entry::Bootstrap,
        (None, true, _) => Entry::Join,
        (None, false, true) => Entry::Refuse(not_prepared_message(config.node_id, &config.data_dir)),
        (None, false, false) => Entry::Wait,
    }
}

/// Why a node with `bootstrap = true` and an empty data dir does not start a cluster.
pub fn not_prepared_message(node_id: NodeId, data_dir: &Path) -> String {
    format!(
        "refusing to start a new cluster: bootstrap = true, but the data dir {dir} holds no cluster and was not \
         prepared with `haven init`. A cluster is created once. If this is its very first start, run `haven init \
         --node-id {node_id} --data-dir {dir}` (or `haven init --config FILE`) and start it again. If this node was a \
         member and lost its data (a wiped or replaced disk, a new machine), do not bootstrap: remove its old record \
         on a live member (`haven members remove {node_id}`) and start it with join = the URL of a live member",
        dir = data_dir.display()
    )
}

/// `haven init`: prepares `data_dir` (of the STOPPED node `node_id`) to start a new cluster
/// at its next start. Refuses a data dir that holds any trace of a cluster: Raft state, a
/// snapshot, a cluster id, or an admin token (which would belong to the cluster this node
/// was part of). Running it again before the first start is harmless.
pub fn prepare_new_cluster(node_id: NodeId, data_dir: &Path) -> anyhow::Result<BootstrapIntent> {
    let admin_token = data_dir.join(ADMIN_TOKEN_FILE);
    if admin_token.exists() {
        anyhow::bail!(
            "{} exists: this data dir belonged to a cluster (its first admin token is there). If the node lost its \
             data, join it to its cluster again instead of starting a new one; to start a new cluster anyway, move \
             that file away first (it may be the only admin token of the existing cluster)",
            admin_token.display()
        );
    }
    let snapshot = data_dir.join(haven_store::state_machine::SNAPSHOT_FILE);
    if snapshot.exists() {
        anyhow::bail!("{} exists: this data dir already holds a cluster's data; `haven serve` it", snapshot.display());
    }
    let db = haven_store::open_database(data_dir)
        .map_err(|error| anyhow::anyhow!("{error} (is the node running? `haven init` needs it stopped)"))?;
    let identity = NodeIdentity::load_or_create(&db, node_id)?;
    if let Some(cluster_id) = &identity.cluster_id {
        anyhow::bail!("the data dir {} belongs to cluster {cluster_id} already; `haven serve` it", data_dir.display());
    }
    if holds_raft_state(&db)? {
        anyhow::bail!(
            "the data dir {} already holds Raft state (it bootstrapped or joined a cluster); `haven serve` it",
            data_dir.display()
        );
    }
    if let Some(intent) = BootstrapIntent::load(&db)? {
        return Ok(intent);
    }
    let intent = BootstrapIntent { node_id, prepared_ms: crate::auth::now_ms() };
    intent.save(&db)?;
    Ok(intent)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(bootstrap: bool, join: Option<&str>) -> NodeConfig {
        haven_core::config::NodeConfigFile {
            node_id: Some(1),
            data_dir: Some("/var/lib/haven".into()),
            bootstrap: Some(bootstrap),
            join: join.map(str::to_string),
            join_trust_first_use: Some(true),
            ..Default::default()
        }
        .validate()
        .unwrap()
    }

    const INTENT: BootstrapIntent = BootstrapIntent { node_id: 1, prepared_ms: 0 };

    #[test]
    fn an_empty_data_dir_bootstraps_only_when_prepared() {
        assert_eq!(entry(&config(true, None), false, Some(&INTENT)), Entry::Bootstrap);
        assert_eq!(entry(&config(false, None), false, Some(&INTENT)), Entry::Bootstrap, "the intent is explicit");
        let Entry::Refuse(reason) = entry(&config(true, None), false, None) else {
            panic!("a wiped node bootstrapped")
        };
        assert!(reason.contains("haven init --node-id 1") && reason.contains("haven members remove 1"), "{reason}");
        assert_eq!(entry(&config(false, None), false, None), Entry::Wait);
    }

    #[test]
    fn an_initialised_data_dir_ignores_bootstrap_and_join() {
        assert_eq!(entry(&config(true, None), true, None), Entry::Member);
        assert_eq!(entry(&config(true, None), true, Some(&INTENT)), Entry::Member);
        assert_eq!(entry(&config(false, Some("https://127.0.0.1:7001")), true, None), Entry::Member);
    }

    #[test]
    fn join_goes_ahead_unless_the_dir_was_prepared_for_a_new_cluster() {
        assert_eq!(entry(&config(false, Some("https://127.0.0.1:7001")), false, None), Entry::Join);
        assert!(matches!(
            entry(&config(false, Some("https://127.0.0.1:7001")), false, Some(&INTENT)),
            Entry::Refuse(_)
        ));
    }

    #[test]
    fn init_prepares_an_empty_dir_once_and_refuses_one_with_a_cluster_s_admin_token() {
        let dir = tempfile::tempdir().unwrap();
        let first = prepare_new_cluster(3, dir.path()).unwrap();
        assert_eq!(first.node_id, 3);
        assert_eq!(prepare_new_cluster(3, dir.path()).unwrap(), first, "running it again changes nothing");
        let error = prepare_new_cluster(4, dir.path()).unwrap_err().to_string();
        assert!(error.contains("belongs to node 3"), "{error}");

        let wiped = tempfile::tempdir().unwrap();
        std::fs::write(wiped.path().join(ADMIN_TOKEN_FILE), "hvn_x\n").unwrap();
        let error = prepare_new_cluster(1, wiped.path()).unwrap_err().to_string();
        assert!(error.contains("admin token"), "{error}");
        assert_eq!(std::fs::read_to_string(wiped.path().join(ADMIN_TOKEN_FILE)).unwrap(), "hvn_x\n");
    }
}
