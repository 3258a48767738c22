//! `reinitialize_as_single_voter` against real openraft: a three-node cluster of real
//! `Raft`s over the on-disk `LogStore` and `StateMachine`, connected by an in-memory
//! network that calls the other nodes' `Raft` directly (haven-net depends on this crate,
//! so it cannot be used here). Node 1's dir is rewritten after the quorum is gone, and
//! node 1 must come back alone as the leader of a new cluster with all of its data.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::Weak;
use std::time::Duration;
use std::time::Instant;

use haven_core::kv::Command;
use haven_core::kv::CommandResult;
use haven_core::kv::Request;
use haven_store::log_store::SyncMode;
use haven_store::reinitialize_as_single_voter;
use haven_store::HavenNode;
use haven_store::LogId;
use haven_store::LogStore;
use haven_store::NodeId;
use haven_store::NodeIdentity;
use haven_store::Raft;
use haven_store::Snapshot;
use haven_store::SnapshotData;
use haven_store::StateMachine;
use haven_store::TypeConfig;
use haven_store::Vote;
use openraft::async_runtime::WatchReceiver as _;
use openraft::errors::RPCError;
use openraft::errors::ReplicationClosed;
use openraft::errors::StreamingError;
use openraft::errors::Unreachable;
use openraft::network::v2::RaftNetworkV2;
use openraft::network::RPCOption;
use openraft::network::RaftNetworkFactory;
use openraft::raft::AppendEntriesRequest;
use openraft::raft::AppendEntriesResponse;
use openraft::raft::SnapshotResponse;
use openraft::raft::TransferLeaderRequest;
use openraft::raft::TransferLeaderResponse;
use openraft::raft::VoteRequest;
use openraft::raft::VoteResponse;
use openraft::OptionalSend;
use openraft::ServerState;

/// Bound on every wait: generous, for two loaded cores.
const WAIT: Duration = Duration::from_secs(60);
const HISTORY_REVISIONS: u64 = 1000;

// ---------------------------------------------------------------------------------------
// In-memory network: each RPC is a direct call of the target's `Raft`.

#[derive(Clone, Default)]
struct Router {
    rafts: Arc<Mutex<BTreeMap<NodeId, Raft>>>,
}

impl Router {
    fn get(&self, target: NodeId) -> Result<Raft, Unreachable<TypeConfig>> {
        let rafts = self.rafts.lock().unwrap();
        rafts.get(&target).cloned().ok_or_else(|| Unreachable::from_string(format!("node {target} is down")))
    }

    fn remove(&self, id: NodeId) -> Option<Raft> {
        self.rafts.lock().unwrap().remove(&id)
    }
}

impl RaftNetworkFactory<TypeConfig> for Router {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, _node: &HavenNode) -> Connection {
        Connection { target, router: self.clone() }
    }
}

struct Connection {
    target: NodeId,
    router: Router,
}

fn unreachable(error: impl std::fmt::Display) -> RPCError<TypeConfig> {
    RPCError::Unreachable(Unreachable::from_string(error.to_string()))
}

impl RaftNetworkV2<TypeConfig> for Connection {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let raft = self.router.get(self.target).map_err(RPCError::Unreachable)?;
        raft.append_entries(rpc).await.map_err(unreachable)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let raft = self.router.get(self.target).map_err(RPCError::Unreachable)?;
        raft.vote(rpc).await.map_err(unreachable)
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let raft = self.router.get(self.target).map_err(RPCError::Unreachable)?;
        raft.pre_vote(rpc).await.map_err(unreachable)
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        _cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let raft = self.router.get(self.target).map_err(StreamingError::Unreachable)?;
        raft.install_full_snapshot(vote, snapshot)
            .await
            .map_err(|error| StreamingError::Unreachable(Unreachable::from_string(error.to_string())))
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        let raft = self.router.get(self.target).map_err(RPCError::Unreachable)?;
        raft.handle_transfer_leader(req).await.map_err(unreachable)
    }
}

// ---------------------------------------------------------------------------------------
// Nodes over real data dirs, opened the way the server opens them.

fn raft_config() -> Arc<openraft::Config> {
    let config = openraft::Config {
        cluster_name: "haven-reinit-test".into(),
        heartbeat_interval: 50,
        election_timeout_min: 300,
        election_timeout_max: 600,
        // As on Haven nodes.
        enable_pre_vote: Some(true),
        enable_leader_restore: Some(false),
        // Snapshots only when the test asks, and the log they cover purged at once, so
        // node 1 has a snapshot, a purged prefix and entries after it.
        snapshot_policy: openraft::SnapshotPolicy::Never,
        max_in_snapshot_log_to_keep: 0,
        ..Default::default()
    };
    Arc::new(config.validate().expect("valid raft config"))
}

fn haven_node(id: NodeId, incarnation: &str) -> HavenNode {
    HavenNode {
        client_url: format!("https://node{id}.test"),
        peer_addr: format!("node{id}.test:7000"),
        incarnation: incarnation.to_string(),
        fingerprint: String::new(),
        learner: false,
    }
}

struct Running {
    raft: Raft,
    state: StateMachine,
    incarnation: String,
    dir: std::path::PathBuf,
    /// Becomes dead once every user of the redb database (openraft's tasks, the log
    /// writer thread) has let go of it, i.e. once the file is closed and unlocked.
    db: Weak<redb::Database>,
}

async fn start(id: NodeId, dir: &Path, router: &Router) -> Running {
    let db = haven_store::open_database(dir).expect("open database");
    let identity = NodeIdentity::load_or_create(&db, id).expect("identity");
    let weak = Arc::downgrade(&db);
    let log = LogStore::open(db, &dir.join(haven_store::DATABASE_FILE), SyncMode::Fsync).expect("open log");
    let state = StateMachine::open(dir, HISTORY_REVISIONS).expect("open state machine");
    let raft = Raft::new(id, raft_config(), router.clone(), log, state.clone()).await.expect("start raft");
    router.rafts.lock().unwrap().insert(id, raft.clone());
    Running { raft, state, incarnation: identity.incarnation, dir: dir.to_path_buf(), db: weak }
}

/// Stops the node and waits until its database file is closed.
async fn stop(id: NodeId, node: Running, router: &Router) {
    router.remove(id);
    node.raft.shutdown().await.expect("shutdown");
    let Running { raft, state, db, dir, .. } = node;
    drop(raft);
    drop(state);
    let deadline = Instant::now() + WAIT;
    while db.strong_count() > 0 {
        assert!(Instant::now() < deadline, "node {id}'s database is still open {WAIT:?} after shutdown");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The last holder (the log writer thread) may still be inside the database's drop,
    // which releases the file lock last: wait until the file can be opened again.
    loop {
        match haven_store::open_database(&dir) {
            Ok(_) => break,
            Err(error) => {
                assert!(Instant::now() < deadline, "node {id}'s database stays locked: {error}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

async fn wait_leader(raft: &Raft, id: NodeId) {
    raft.wait(Some(WAIT))
        .metrics(|m| m.state == ServerState::Leader && m.current_leader == Some(id), format!("node {id} leads"))
        .await
        .expect("leader in time");
}

/// Writes through whoever leads, retrying across leader changes (the request id makes a
/// retry apply at most once).
async fn write(router: &Router, request: Request) -> (LogId, CommandResult) {
    let deadline = Instant::now() + WAIT;
    loop {
        let rafts: Vec<Raft> = router.rafts.lock().unwrap().values().cloned().collect();
        for raft in rafts {
            let is_leader = raft.metrics().borrow_watched().state == ServerState::Leader;
            if is_leader {
                if let Ok(response) = raft.client_write(request.clone()).await {
                    return (response.log_id, response.data);
                }
            }
        }
        assert!(Instant::now() < deadline, "no leader took {request} within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn put(key: &str, value: &str) -> Request {
    Request::new(
        Some(format!("put-{key}-{value}")),
        Command::Put { key: key.to_string(), value: value.as_bytes().to_vec(), prev_revision: None },
    )
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// Starts `dir` alone as node `id` and checks it leads a one-voter cluster `cluster_id`
/// with exactly `expected` and that a new write follows the old revisions.
async fn check_new_cluster(
    id: NodeId,
    dir: &Path,
    expected: &haven_core::kv::KvState,
    cluster_id: &str,
    old_last: LogId,
    new_key: &str,
) {
    let router = Router::default();
    let started = Instant::now();
    let node = start(id, dir, &router).await;
    wait_leader(&node.raft, id).await;
    eprintln!("{}: node {id} leads alone after {:?}", dir.display(), started.elapsed());

    let metrics = node.raft.metrics().borrow_watched().clone();
    let voters: Vec<NodeId> = metrics.membership_config.voter_ids().collect();
    assert_eq!(voters, vec![id], "exactly one voter");
    let members: Vec<NodeId> = metrics.membership_config.nodes().map(|(id, _)| *id).collect();
    assert_eq!(members, vec![id], "no other node (not even a learner)");
    let member = metrics.membership_config.get_node(&id).unwrap();
    assert!(!member.learner);
    assert_eq!(member, &haven_node(id, &node.incarnation));
    assert!(metrics.current_term > old_last.leader_id.term, "campaigned in a newer term");

    let old_revision = expected.revision();
    {
        let state = node.state.read();
        assert_eq!(state.kv.cluster_id(), Some(cluster_id));
        assert_eq!(state.kv.revision(), old_revision);
        let mut whole = expected.clone();
        whole.move_to_new_cluster(cluster_id, None);
        assert!(state.kv == whole, "the whole state (history, tokens, request ids) is kept");
        assert_eq!(state.kv.len(), expected.len());
        let (keys, _) = expected.list("", None, usize::MAX);
        for (key, entry) in keys {
            assert_eq!(state.kv.get(key), Some(entry), "key {key}: same value and revisions");
        }
    }

    let (log_id, result) = write(&router, put(new_key, "after")).await;
    assert_eq!(result, CommandResult::Put { revision: old_revision + 1, prev_mod_revision: 0 });
    assert!(log_id > old_last && log_id.index > old_last.index, "new entries come after the old ones");
    stop(id, node, &router).await;

    // And once more from disk: the new cluster's own log replays on top of the snapshot.
    let node = start(id, dir, &router).await;
    wait_leader(&node.raft, id).await;
    {
        let state = node.state.read();
        assert_eq!(state.kv.revision(), old_revision + 1);
        assert_eq!(state.kv.get(new_key).map(|e| e.value.as_slice()), Some(&b"after"[..]));
        assert_eq!(state.kv.cluster_id(), Some(cluster_id));
    }
    stop(id, node, &router).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_survivor_becomes_a_single_voter_cluster_with_all_its_data() {
    let started = Instant::now();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let dir = |id: NodeId| dirs[id as usize - 1].path();
    let router = Router::default();
    let mut nodes = BTreeMap::new();
    for id in 1..=3 {
        nodes.insert(id, start(id, dir(id), &router).await);
    }
    let members: BTreeMap<NodeId, HavenNode> =
        nodes.iter().map(|(id, node)| (*id, haven_node(*id, &node.incarnation))).collect();
    nodes[&1].raft.initialize(members).await.expect("initialize");

    // The cluster id, as the bootstrapping server records it, then data.
    let init = Request::new(Some("init".into()), Command::InitCluster { cluster_id: "old-cluster".into() });
    write(&router, init).await;
    for i in 0..10 {
        write(&router, put(&format!("before/{i}"), &format!("v{i}"))).await;
    }

    // Node 1 snapshots (and purges) what it has applied so far.
    let (applied, _) = write(&router, put("before/last", "x")).await;
    nodes[&1].raft.wait(Some(WAIT)).applied_index_at_least(Some(applied.index), "node 1 applied").await.unwrap();
    nodes[&1].raft.trigger().snapshot().await.unwrap();
    nodes[&1]
        .raft
        .wait(Some(WAIT))
        .metrics(|m| m.snapshot.is_some_and(|s| s.index >= applied.index), "node 1 snapshot")
        .await
        .unwrap();
    nodes[&1]
        .raft
        .wait(Some(WAIT))
        .metrics(|m| m.purged.is_some_and(|p| p.index >= applied.index), "node 1 purged its log")
        .await
        .unwrap();
    let snapshot_index = nodes[&1].raft.metrics().borrow_watched().snapshot.unwrap().index;

    // More after the snapshot: new keys, an overwrite, a delete.
    for i in 0..10 {
        write(&router, put(&format!("after/{i}"), &format!("w{i}"))).await;
    }
    write(&router, put("before/0", "overwritten")).await;
    let delete = Command::Delete { key: "before/1".into(), prev_revision: None };
    let (last_committed, _) = write(&router, Request::new(Some("delete".into()), delete)).await;
    nodes[&1].raft.wait(Some(WAIT)).applied_index_at_least(Some(last_committed.index), "node 1 applied").await.unwrap();

    // Every node holds the committed log (node 2 has no snapshot: it is rewritten from its
    // whole log below).
    for id in [2, 3] {
        let want = Some(last_committed.index);
        nodes[&id].raft.wait(Some(WAIT)).metrics(|m| m.last_log_index >= want, "replicated").await.unwrap();
    }
    let committed_state = nodes[&1].state.read().kv.clone();

    // Quorum lost: nodes 2 and 3 are gone for good. Node 1, made leader first, takes one
    // more write into its log that can never commit in the old cluster.
    let leader = nodes[&1].raft.metrics().borrow_watched().current_leader.unwrap();
    if leader != 1 {
        nodes[&leader].raft.trigger().transfer_leader(1).await.unwrap();
    }
    wait_leader(&nodes[&1].raft, 1).await;
    for id in [2, 3] {
        let node = nodes.remove(&id).unwrap();
        stop(id, node, &router).await;
    }
    let node1 = nodes.remove(&1).unwrap();
    let before_uncommitted = node1.raft.metrics().borrow_watched().last_log_index.unwrap();
    let pending = tokio::spawn({
        let raft = node1.raft.clone();
        async move { raft.client_write(put("uncommitted", "tail")).await }
    });
    node1
        .raft
        .wait(Some(WAIT))
        .metrics(|m| m.last_log_index == Some(before_uncommitted + 1), "uncommitted entry appended")
        .await
        .unwrap();
    let mut expected = node1.state.read().kv.clone();
    let old_last_applied = node1.state.read().last_applied.unwrap();
    let result = expected.apply(&put("uncommitted", "tail"));
    assert_eq!(result, CommandResult::Put { revision: expected.revision(), prev_mod_revision: 0 });
    stop(1, node1, &router).await;
    assert!(pending.await.unwrap().is_err(), "the uncommitted write never committed in the old cluster");
    eprintln!("old cluster run took {:?}", started.elapsed());

    // A copy of the stopped dir, for the crash-window check below.
    let crashed = tempfile::tempdir().unwrap();
    copy_dir(dir(1), crashed.path());

    let rewrite_started = Instant::now();
    let summary = reinitialize_as_single_voter(dir(1), 1, haven_node(1, ""), "new-cluster", HISTORY_REVISIONS)
        .expect("reinitialize");
    eprintln!("rewrite took {:?}: {summary:?}", rewrite_started.elapsed());
    let last = summary.last_log_id.expect("a last log id");
    assert_eq!(last.index, before_uncommitted + 1, "the whole log is kept, up to the uncommitted tail");
    assert!(last > old_last_applied);
    assert_eq!(summary.entries_applied, last.index - snapshot_index, "every entry after the snapshot");
    assert!(summary.entries_applied > 10);
    assert_eq!(summary.revision, expected.revision());
    assert_eq!(summary.old_cluster_id.as_deref(), Some("old-cluster"));
    assert_eq!(summary.new_cluster_id, "new-cluster");
    let identity = {
        let db = haven_store::open_database(dir(1)).unwrap();
        NodeIdentity::load(&db).unwrap().unwrap()
    };
    assert_eq!(identity.cluster_id.as_deref(), Some("new-cluster"));
    assert_eq!(identity.node_id, 1);

    check_new_cluster(1, dir(1), &expected, "new-cluster", last, "new/1").await;

    // A crash between the new snapshot's rename and the redb commit leaves the new
    // snapshot over the old log, vote and identity: that dir must start as the new cluster.
    std::fs::copy(dir(1).join("snapshot.bin"), crashed.path().join("snapshot.bin")).unwrap();
    check_new_cluster(1, crashed.path(), &expected, "new-cluster", last, "new/2").await;
    // Running the rewrite again (what an operator does after a crash) finishes the job.
    let again = reinitialize_as_single_voter(crashed.path(), 1, haven_node(1, ""), "new-cluster-2", HISTORY_REVISIONS)
        .expect("re-run");
    assert_eq!(again.old_cluster_id.as_deref(), Some("new-cluster"));
    assert_eq!(again.revision, expected.revision() + 1);

    // A follower, rewritten from its whole log (it never snapshotted): the committed data.
    let summary = reinitialize_as_single_voter(dir(2), 2, haven_node(2, ""), "cluster-of-2", HISTORY_REVISIONS)
        .expect("reinitialize node 2");
    eprintln!("node 2: {summary:?}");
    let last = summary.last_log_id.unwrap();
    assert!(last >= last_committed);
    assert_eq!(summary.entries_applied, last.index + 1, "the whole log, from index 0");
    assert_eq!(summary.revision, committed_state.revision());
    check_new_cluster(2, dir(2), &committed_state, "cluster-of-2", last, "new/3").await;
    eprintln!("whole test took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_dirs_it_cannot_rewrite() {
    let node = haven_node(1, "");
    let reinit = |dir: &Path, id: NodeId| reinitialize_as_single_voter(dir, id, node.clone(), "new", HISTORY_REVISIONS);

    // An empty dir: clear error, nothing created.
    let empty = tempfile::tempdir().unwrap();
    let error = reinit(empty.path(), 1).unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::NotFound);
    assert!(error.to_string().contains("not an initialised Haven data dir"), "{error}");
    assert_eq!(std::fs::read_dir(empty.path()).unwrap().count(), 0, "nothing was created");
    // A missing dir.
    let error = reinit(&empty.path().join("missing"), 1).unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::NotFound);
    assert!(!empty.path().join("missing").exists());

    // A node that started once but never joined or bootstrapped a cluster.
    let fresh = tempfile::tempdir().unwrap();
    let router = Router::default();
    let running = start(1, fresh.path(), &router).await;
    // While it runs, its database is locked.
    let error = reinit(fresh.path(), 1).unwrap_err();
    assert!(error.to_string().contains("cannot open"), "{error}");
    stop(1, running, &router).await;
    let error = reinit(fresh.path(), 1).unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::NotFound);
    assert!(error.to_string().contains("never initialised"), "{error}");

    // A dir of another node, or an address record of another incarnation.
    let error = reinit(fresh.path(), 2).unwrap_err();
    assert!(error.to_string().contains("belongs to node 1"), "{error}");
    let error =
        reinitialize_as_single_voter(fresh.path(), 1, haven_node(1, "other"), "new", HISTORY_REVISIONS).unwrap_err();
    assert!(error.to_string().contains("incarnation"), "{error}");
    let error = reinitialize_as_single_voter(fresh.path(), 1, node.clone(), " ", HISTORY_REVISIONS).unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
}
