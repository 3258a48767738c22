//! Running a node from start to graceful stop.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use haven_core::config::NodeConfig;
use haven_net::accept::accept_loop;
use haven_net::tcp::TcpTransport;
use haven_net::JoinRequest;
use haven_net::JoinResponse;
use haven_net::Transport;
use haven_store::log_store::SyncMode;
use haven_tls::NodeIdentityKey;
use haven_tls::PinSet;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::files;
use crate::node::JOIN_DEADLINE;
use crate::peer::NodePeerHandler;
use crate::Node;

/// Longest pause between join attempts while the member we join through is unreachable.
pub const JOIN_RETRY_PAUSE_MAX: Duration = Duration::from_secs(5);

/// How long open requests (watch streams among them) get to finish after a stop signal.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

pub struct RunOptions {
    pub config: NodeConfig,
    /// Bound by the caller, so tests can bind port 0 and read the port back.
    pub client_listener: TcpListener,
    pub peer_listener: TcpListener,
    pub sync: SyncMode,
    /// Test-only deviations; the default changes nothing.
    pub test_hooks: TestHooks,
    /// Told once the node serves: its store is open, both ports accept (joining or not
    /// yet), and `haven.pid`/`addr.json` are written. The binary tells systemd
    /// (`READY=1`); not waiting for a leader, so each machine's unit starts on its own.
    pub serving: Option<tokio::sync::oneshot::Sender<()>>,
}

// ---- test-only modes (fault tests; see docs/nemesis.md) ---------------------------------

/// Environment variable that must be `1` for `--unsafe-test-mode` to be accepted, so the
/// flag can never be switched on by a stray config line alone.
pub const UNSAFE_TEST_MODE_ENV: &str = "HAVEN_UNSAFE_TEST_MODE";

/// Test-only deviations a node can run with. The default is a real node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TestHooks {
    /// Where redb keeps its bytes: `CrashSim` keeps unsynced writes in process memory, so
    /// `kill -9` loses them as a power cut would.
    pub backend: haven_store::DatabaseBackend,
    /// Mutant: linearizable reads skip the ReadIndex and serve local state.
    pub skip_read_index: bool,
    /// Damage the first snapshot chunk this node sends (the receiver must refuse it).
    pub damage_snapshot_chunk: Option<haven_net::raft_network::ChunkDamage>,
    /// Once the key [`DIVERGE_KEY`] exists, change its value in this replica's memory only
    /// (the replicas' comparison must find it).
    pub diverge_state: bool,
    /// Added to this node's wall clock (ms): a skewed clock without touching the system's
    /// (`--unsafe-test-clock-offset-ms`).
    pub clock_offset_ms: i64,
}

/// The key the `diverge-state` test hook changes.
pub const DIVERGE_KEY: &str = "test/diverge";

/// The names `haven serve --unsafe-test-mode` accepts, with what each one does.
pub const UNSAFE_TEST_MODES: &[(&str, &str)] = &[
    ("crash-sim", "crash-simulation storage, otherwise a correct node"),
    ("crash-sim-ack-before-fsync", "MUTANT: crash-simulation storage and log writes acknowledged without fsync"),
    ("stale-reads", "MUTANT: crash-simulation storage and reads served without a ReadIndex"),
    ("damage-snapshot-chunk", "the first snapshot chunk this node sends is damaged after its checksum (in transit)"),
    ("damage-snapshot-image", "the first snapshot chunk this node sends is damaged before its checksum (in memory)"),
    ("diverge-state", "once the key test/diverge exists, its value is changed in this replica's memory only"),
];

/// The sync mode and hooks for `--unsafe-test-mode NAME`; `None` is a real node. Refused
/// unless `HAVEN_UNSAFE_TEST_MODE=1` (`env_confirmed`).
pub fn unsafe_test_mode(name: Option<&str>, env_confirmed: bool) -> anyhow::Result<(SyncMode, TestHooks)> {
    let Some(name) = name else {
        return Ok((SyncMode::Fsync, TestHooks::default()));
    };
    if !env_confirmed {
        anyhow::bail!(
            "--unsafe-test-mode is for fault-injection tests and can lose acknowledged data; set \
             {UNSAFE_TEST_MODE_ENV}=1 to confirm"
        );
    }
    let crash_sim = TestHooks { backend: haven_store::DatabaseBackend::CrashSim, ..TestHooks::default() };
    let damage = |damage| TestHooks { damage_snapshot_chunk: Some(damage), ..TestHooks::default() };
    match name {
        "damage-snapshot-chunk" => Ok((SyncMode::Fsync, damage(haven_net::raft_network::ChunkDamage::AfterChecksum))),
        "damage-snapshot-image" => Ok((SyncMode::Fsync, damage(haven_net::raft_network::ChunkDamage::BeforeChecksum))),
        "diverge-state" => Ok((SyncMode::Fsync, TestHooks { diverge_state: true, ..TestHooks::default() })),
        "crash-sim" => Ok((SyncMode::Fsync, crash_sim)),
        "crash-sim-ack-before-fsync" => Ok((SyncMode::NoSync, crash_sim)),
        "stale-reads" => Ok((SyncMode::Fsync, TestHooks { skip_read_index: true, ..crash_sim })),
        other => {
            let names: Vec<&str> = UNSAFE_TEST_MODES.iter().map(|(name, _)| *name).collect();
            anyhow::bail!("unknown --unsafe-test-mode {other:?}; known: {}", names.join(", "))
        }
    }
}

/// Adds `--unsafe-test-clock-offset-ms` to `hooks`: the node's wall clock reads that many
/// ms ahead (or behind). Refused unless `HAVEN_UNSAFE_TEST_MODE=1` (`env_confirmed`).
pub fn unsafe_test_clock_offset(
    offset_ms: Option<i64>,
    env_confirmed: bool,
    hooks: TestHooks,
) -> anyhow::Result<TestHooks> {
    let Some(clock_offset_ms) = offset_ms else {
        return Ok(hooks);
    };
    if !env_confirmed {
        anyhow::bail!("--unsafe-test-clock-offset-ms is for clock-skew tests; set {UNSAFE_TEST_MODE_ENV}=1 to confirm");
    }
    Ok(TestHooks { clock_offset_ms, ..hooks })
}

/// Longest request head (request line and headers) a client may send; an API request
/// needs a few hundred bytes, so 16 KiB is ample and bounds what a stranger can make us hold.
pub const REQUEST_HEAD_BYTES_MAX: usize = 16 * 1024;

/// A client must send its request head within this long (slow-loris defence).
pub const REQUEST_HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// The node's TLS identity, or none on `--insecure-dev`.
fn load_identity(config: &NodeConfig, addresses: &[std::net::IpAddr]) -> anyhow::Result<Option<NodeIdentityKey>> {
    if config.insecure_dev {
        tracing::warn!("INSECURE DEV MODE: plaintext on loopback, no peer authentication; never use it for real data");
        return Ok(None);
    }
    let (identity, generated) = NodeIdentityKey::load_or_generate(&config.data_dir, addresses)?;
    if generated {
        tracing::info!(fingerprint = identity.fingerprint(), "generated this node's TLS key");
    }
    Ok(Some(identity))
}

/// Runs a node until `shutdown` resolves (then stops gracefully) or it cannot go on
/// (for example its join was refused), which is returned as an error.
/// How `run` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    /// Told to stop (a signal).
    Stopped,
    /// Asked to restart (an operator, a recovery): the caller starts the process again
    /// with the same arguments, so new timing and recovered state take effect.
    Restart,
}

pub async fn run(options: RunOptions, shutdown: impl Future<Output = ()>) -> anyhow::Result<RunOutcome> {
    let client_addr = options.client_listener.local_addr()?;
    let peer_addr = options.peer_listener.local_addr()?;
    let data_dir = options.config.data_dir.clone();
    // Before anything is read or written there: the data dir must be this user's alone.
    files::secure_data_dir(&data_dir)?;
    if options.test_hooks != TestHooks::default() || options.sync != SyncMode::Fsync {
        tracing::warn!(
            sync = ?options.sync,
            hooks = ?options.test_hooks,
            "UNSAFE TEST MODE: this node simulates crashes and may be a deliberately broken mutant; never use it \
             for real data"
        );
    }
    let fds = crate::fd_budget::establish()?;
    let identity = load_identity(&options.config, &[client_addr.ip(), peer_addr.ip()])?;
    let pins = PinSet::default();
    let (transport, scheme): (Arc<dyn Transport>, &str) = match &identity {
        Some(identity) => {
            (Arc::new(TcpTransport::tls(haven_tls::client_config(pins.clone(), Some(identity))?)), "https")
        }
        None => (Arc::new(TcpTransport::plaintext()), "http"),
    };
    let client_url = format!("{scheme}://{client_addr}");
    let fingerprint = identity.as_ref().map(|identity| identity.fingerprint().to_string()).unwrap_or_default();
    let client_tls = client_port_tls(&options.config, identity.as_ref())?;
    let peer_tls = match &identity {
        Some(identity) => {
            let config = haven_tls::server_config(identity, Some(pins.clone()))?;
            Some((tokio_rustls::TlsAcceptor::from(Arc::new(config)), pins.clone()))
        }
        None => None,
    };
    let diverge_state = options.test_hooks.diverge_state;
    let node = Node::open(
        options.config,
        client_url.clone(),
        peer_addr.to_string(),
        (fingerprint, pins),
        transport,
        options.sync,
        options.test_hooks,
        fds.watchers_max,
    )
    .await?;
    node.sync_pins();
    tracing::info!(
        node_id = node.node_id,
        %client_url,
        %peer_addr,
        incarnation = %node.incarnation,
        fingerprint = %node.fingerprint,
        "node started"
    );

    let (stop, stopped) = watch::channel(false);
    let wait_stop = |mut stopped: watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    let peer_server = tokio::spawn(haven_net::tcp::serve(
        options.peer_listener,
        NodePeerHandler::new(&node),
        peer_tls,
        wait_stop(stopped.clone()),
    ));
    let app = crate::api::router(node.clone());
    let http_server =
        tokio::spawn(serve_http(options.client_listener, client_tls, fds.client, app, wait_stop(stopped.clone())));
    files::write_pid_and_addr(
        &data_dir,
        &files::AddrFile {
            node_id: node.node_id,
            client_url,
            peer_addr: peer_addr.to_string(),
            pid: std::process::id(),
        },
    )?;
    if let Some(serving) = options.serving {
        let _ = serving.send(());
    }

    if diverge_state {
        tokio::spawn(diverge_once_written(node.clone()));
    }
    let background = tokio::spawn(background_loop(node.clone(), stopped.clone()));
    let probes = tokio::spawn(probe_loop(node.clone(), stopped.clone()));
    let ha_loop = tokio::spawn(ha_loop(node.clone(), stopped.clone()));
    let pin_sync = tokio::spawn(follow_membership_pins(node.clone()));
    let membership = tokio::spawn(enter_cluster(node.clone()));
    // A new cluster's first admin token (DATA_DIR/admin.token), once bootstrapped and leading.
    tokio::spawn(crate::auth::ensure_bootstrap_admin_token(node.clone(), stopped.clone()));
    // Admin tokens minted offline (`haven tokens break-glass`) while this node was stopped.
    tokio::spawn(crate::break_glass::register_pending(node.clone(), stopped.clone()));

    let expulsions = tokio::spawn(follow_expulsions(node.clone()));

    let mut restart = node.restart_requested.subscribe();
    let restart_requested = async move {
        let _ = restart.wait_for(|restart| *restart).await;
    };
    // Fail-stop (crate::integrity): a node whose Raft core stopped exits with the reason.
    let core_stopped = {
        let node = node.clone();
        async move {
            let reason = crate::integrity::core_stopped(&node).await;
            tracing::error!(%reason, "the Raft core stopped; this node cannot go on and exits (a restart recovers)");
            anyhow::anyhow!("the Raft core stopped: {reason}. Restart the node once the cause is fixed")
        }
    };
    let mut expelled = node.expelled.subscribe();
    let expelled_wait = async move {
        let _ = expelled.wait_for(Option::is_some).await;
    };
    tokio::pin!(shutdown);
    tokio::pin!(restart_requested);
    tokio::pin!(core_stopped);
    tokio::pin!(expelled_wait);
    let outcome = tokio::select! {
        _ = &mut shutdown => Ok(RunOutcome::Stopped),
        _ = &mut restart_requested => Ok(RunOutcome::Restart),
        error = &mut core_stopped => Err(error),
        _ = &mut expelled_wait => Err(expelled_error(&node)),
        result = membership => match result {
            Ok(Ok(())) => {
                // Joined or bootstrapped; keep serving until told to stop or restart.
                tokio::select! {
                    _ = &mut shutdown => Ok(RunOutcome::Stopped),
                    _ = &mut restart_requested => Ok(RunOutcome::Restart),
                    error = &mut core_stopped => Err(error),
                    _ = &mut expelled_wait => Err(expelled_error(&node)),
                }
            }
            Ok(Err(error)) => Err(error),
            Err(error) => Err(anyhow::anyhow!("join task failed: {error}")),
        },
    };

    tracing::info!("stopping");
    node.record_applied_timing();
    // A node whose core stopped cannot hand anything over; an expelled node hands nothing
    // over: its cluster is not the cluster any more.
    if node.core_stopped().is_none() && node.expelled.borrow().is_none() {
        node.hand_over_leadership().await;
    }
    expulsions.abort();
    let _ = stop.send(true);
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, http_server).await;
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, peer_server).await;
    background.abort();
    probes.abort();
    ha_loop.abort();
    pin_sync.abort();
    if let Err(error) = node.raft.shutdown().await {
        tracing::warn!(%error, "raft did not stop cleanly");
    }
    // Last, once nothing more goes out under this boot: members accept a restart at once.
    node.announce_leaving().await;
    files::remove_pid(&data_dir);
    tracing::info!("stopped");
    outcome
}

/// The error `run` ends with when a member told this node it was removed or recovered
/// away.
fn expelled_error(node: &Node) -> anyhow::Error {
    match node.expelled.borrow().as_ref() {
        Some(expulsion) => anyhow::Error::new(crate::Expelled::new(expulsion, &node.config.data_dir)),
        None => anyhow::anyhow!("stopped"),
    }
}

/// Hands every expulsion a peer reports (on any request) to the node.
async fn follow_expulsions(node: Arc<Node>) {
    let mut reports = node.local.expulsions();
    loop {
        let report = reports.borrow_and_update().clone();
        if let Some(expulsion) = report {
            node.on_expelled(expulsion);
        }
        if reports.changed().await.is_err() {
            return;
        }
    }
}

/// The client port's TLS: the operator's certificate when configured, else the node's own.
fn client_port_tls(
    config: &NodeConfig,
    identity: Option<&NodeIdentityKey>,
) -> anyhow::Result<Option<tokio_rustls::TlsAcceptor>> {
    let identity = match (&config.tls_cert, &config.tls_key, identity) {
        (Some(cert), Some(key), _) => NodeIdentityKey::from_pem_files(cert, key)?,
        (_, _, Some(identity)) => identity.clone(),
        (_, _, None) => return Ok(None),
    };
    let config = haven_tls::server_config(&identity, None)?;
    Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
}

/// Serves the HTTP API on `listener` (TLS when `tls` is given) under the client-port
/// connection bounds `limits` (from the descriptor budget, `crate::fd_budget`), until
/// `shutdown` resolves.
pub async fn serve_http(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: haven_net::accept::AcceptLimits,
    app: axum::Router,
    shutdown: impl Future<Output = ()>,
) {
    accept_loop(listener, tls, limits, shutdown, move |stream, accepted, slot| {
        let remote = crate::auth::ClientAddr(accepted.remote);
        let app = tower::ServiceBuilder::new()
            .map_request(move |request: hyper::Request<hyper::body::Incoming>| {
                let mut request = request.map(axum::body::Body::new);
                request.extensions_mut().insert(remote);
                request
            })
            .service(app.clone());
        let service = hyper_util::service::TowerToHyperService::new(app);
        async move {
            let _slot = slot;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(REQUEST_HEAD_TIMEOUT)
                .max_buf_size(REQUEST_HEAD_BYTES_MAX);
            if let Err(error) = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service).await {
                tracing::debug!(%error, "client connection ended with an error");
            }
        }
    })
    .await;
}

/// How long after its answer has been handed to the connection a node asking for its own
/// restart waits: the stop aborts every open connection, so the answer must be on the wire
/// first (issue 14: `POST /v1/recover` on a loaded host was answered by a dropped
/// connection). Short against a restart.
pub const RESTART_AFTER_ANSWER: Duration = Duration::from_millis(300);

/// `answer` as the JSON response of a request that restarts this node (`/v1/restart`,
/// `/v1/recover`): the restart is asked for only once the response body has been written
/// out (or the connection dropped), then [`RESTART_AFTER_ANSWER`] later, never before.
pub fn answer_then_restart(node: Arc<Node>, answer: &serde_json::Value) -> axum::response::Response {
    /// Asks for the restart when dropped: hyper drops the body once it has written it (or
    /// the connection ended), so the restart follows the answer whatever happens.
    struct RestartWhenDropped(Arc<Node>);
    impl Drop for RestartWhenDropped {
        fn drop(&mut self) {
            let node = self.0.clone();
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    runtime.spawn(async move {
                        tokio::time::sleep(RESTART_AFTER_ANSWER).await;
                        node.restart_requested.send_replace(true);
                    });
                }
                Err(_) => {
                    node.restart_requested.send_replace(true);
                }
            }
        }
    }
    use futures::StreamExt;
    let guard = RestartWhenDropped(node);
    let bytes = bytes::Bytes::from(answer.to_string());
    let body = futures::stream::iter([Ok::<_, std::convert::Infallible>(bytes)]).map(move |chunk| {
        let _held_until_the_body_is_dropped = &guard;
        chunk
    });
    axum::response::Response::builder()
        .header(axum::http::header::CONTENT_TYPE, "application/json")
        .body(axum::body::Body::from_stream(body))
        .unwrap_or_else(|_| axum::response::Response::new(axum::body::Body::empty()))
}

/// Keeps the trusted peer keys equal to the latest membership's, as soon as it changes
/// (a member being added must be reachable at once; a removed one must lose access).
async fn follow_membership_pins(node: Arc<Node>) {
    use openraft::async_runtime::WatchReceiver;
    let mut metrics = node.raft.metrics();
    let mut last = None;
    loop {
        // The membership, and the keys of expelled nodes still to be told (replicated state).
        let current = (node.membership(), node.state.read().kv.admin().expelled_keys());
        if last.as_ref() != Some(&current) {
            node.sync_pins();
            last = Some(current);
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// Runs the HA decisions (`crate::ha`) every `HA_TICK`, until stopped.
async fn ha_loop(node: Arc<Node>, mut stopped: watch::Receiver<bool>) {
    loop {
        node.ha_tick().await;
        tokio::select! {
            _ = tokio::time::sleep(crate::ha::HA_TICK) => {}
            _ = stopped.changed() => return,
        }
    }
}

/// Probes peers and compares replicas every probe interval, until stopped. A loop of its
/// own: the probes are how members hear this process's boot (within the boot lease) and
/// read its clock, so a slow membership change or proposal in the housekeeping loop must
/// not hold them up.
async fn probe_loop(node: Arc<Node>, mut stopped: watch::Receiver<bool>) {
    loop {
        // Side by side: each waits up to a probe timeout for a member that does not
        // answer, and the probe round must stay within `reachable_within_ms` (one after
        // the other, the round took two timeouts and healthy members were shown
        // unreachable while one member was silent).
        tokio::join!(node.probe_peers(), node.compare_replicas());
        node.started_checks_done.store(true, std::sync::atomic::Ordering::Relaxed);
        tokio::select! {
            _ = tokio::time::sleep(node.probe_interval()) => {}
            _ = stopped.changed() => return,
        }
    }
}

/// Keeps derived state in step, until stopped.
async fn background_loop(node: Arc<Node>, mut stopped: watch::Receiver<bool>) {
    let mut recorded_cluster_id = None;
    let mut last_voters = 0;
    loop {
        node.housekeeping(&mut recorded_cluster_id).await;
        node.promote_caught_up_learners().await;
        node.apply_maintenance();
        node.snapshot_when_the_log_is_large().await;
        let voters = node.membership().voter_ids().count();
        if voters != last_voters {
            if voters.is_multiple_of(2) && voters > 0 {
                tracing::warn!(
                    voters,
                    "the cluster has an even number of voters; it tolerates no more failures than one fewer"
                );
            }
            last_voters = voters;
        }
        tokio::select! {
            _ = tokio::time::sleep(node.probe_interval()) => {}
            _ = stopped.changed() => return,
        }
    }
}

/// TEST HOOK `diverge-state`: once [`DIVERGE_KEY`] is applied here, changes it in this
/// replica's memory only.
async fn diverge_once_written(node: Arc<Node>) {
    let mut revisions = node.state.subscribe();
    loop {
        if node.state.read().kv.get(DIVERGE_KEY).is_some() {
            node.state.diverge_for_test(DIVERGE_KEY);
            return;
        }
        if revisions.changed().await.is_err() {
            return;
        }
    }
}

/// Bootstraps or joins as configured (see `crate::bootstrap`). On an initialised data dir
/// this does nothing (a learner that was admitted is promoted by the leader once caught up).
async fn enter_cluster(node: Arc<Node>) -> anyhow::Result<()> {
    let initialized = node.raft.is_initialized().await.map_err(|e| anyhow::anyhow!("raft stopped: {e}"))?;
    let intent = node.bootstrap_intent();
    match crate::bootstrap::entry(&node.config, initialized, intent.as_ref()) {
        crate::bootstrap::Entry::Member | crate::bootstrap::Entry::Wait => Ok(()),
        crate::bootstrap::Entry::Refuse(reason) => Err(anyhow::anyhow!(reason)),
        crate::bootstrap::Entry::Bootstrap => {
            tracing::info!("bootstrapping a new cluster with this node as its only voter (prepared by `haven init`)");
            node.raft
                .initialize(BTreeMap::from([(node.node_id, node.this_node())]))
                .await
                .map_err(|e| anyhow::anyhow!("cannot bootstrap: {e}"))?;
            Ok(())
        }
        crate::bootstrap::Entry::Join => {
            let Some(join_url) = node.config.join.clone() else {
                return Ok(());
            };
            let response = join_through(&node, &join_url).await?;
            *node.join_status.lock().unwrap_or_else(|e| e.into_inner()) = None;
            tracing::info!(cluster_id = %response.cluster_id, voter = response.voter, "admitted to the cluster");
            Ok(())
        }
    }
}

/// The HTTP client for joining: TLS pinned to the member's fingerprint (or, when the
/// operator asked for it, trust on first use), plaintext only on `--insecure-dev`.
fn join_client(config: &NodeConfig) -> anyhow::Result<(reqwest::Client, Option<PinSet>)> {
    haven_tls::provider();
    let builder = reqwest::Client::builder().timeout(JOIN_DEADLINE + Duration::from_secs(10));
    if config.insecure_dev {
        return Ok((builder.build()?, None));
    }
    let pins = match &config.join_fingerprint {
        Some(fingerprint) => PinSet::new([fingerprint.clone()]),
        None => {
            tracing::warn!("join_trust_first_use: accepting whatever key the member presents (insecure)");
            PinSet::trust_first_use()
        }
    };
    let tls = haven_tls::client_config(pins.clone(), None)?;
    Ok((builder.use_preconfigured_tls(tls).build()?, Some(pins)))
}

fn join_token(config: &NodeConfig) -> anyhow::Result<Option<String>> {
    if let Some(token) = &config.join_token {
        return Ok(Some(token.trim().to_string()));
    }
    match &config.join_token_file {
        Some(path) => {
            let token = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("cannot read join_token_file {}: {e}", path.display()))?;
            Ok(Some(token.trim().to_string()))
        }
        None => Ok(None),
    }
}

/// Joins through the member at `join_url`: first a dry run that shows the cluster and its
/// members' keys, which this node pins, then the join itself. A refusal (wrong key, no or
/// used token, a wiped node's old id, another cluster) stops the node with the reason.
async fn join_through(node: &Node, join_url: &str) -> anyhow::Result<JoinResponse> {
    let (client, pins) = join_client(&node.config)?;
    let token = join_token(&node.config)?;
    let mut request = JoinRequest {
        node_id: node.node_id,
        client_url: node.client_url.clone(),
        peer_addr: node.peer_addr.clone(),
        incarnation: node.incarnation.clone(),
        fingerprint: node.fingerprint.clone(),
        learner: node.config.learner,
        dry_run: true,
    };
    let preview = post_join(node, &client, join_url, token.as_deref(), &request).await?;
    if let Some(pins) = &pins {
        if let Some(presented) = pins.last_presented() {
            if node.config.join_fingerprint.is_none() {
                tracing::warn!(fingerprint = %presented, "trusting the member's key on first use");
            }
        }
    }
    if let Some(mine) = node.local.cluster_id() {
        if mine != preview.cluster_id {
            anyhow::bail!(
                "this node belongs to cluster {mine}; it cannot join cluster {}. Wipe its data dir to join as a new \
                 member",
                preview.cluster_id
            );
        }
    }
    // Trust the members (their ids and keys) before they start replicating to us.
    *node.join_pins.lock().unwrap_or_else(|e| e.into_inner()) = preview.members.clone();
    node.sync_pins();
    node.local.set_cluster_id(&preview.cluster_id);
    request.dry_run = false;
    match post_join(node, &client, join_url, token.as_deref(), &request).await {
        Ok(response) => Ok(response),
        Err(error) => {
            // The admission may have happened although this attempt failed: an earlier
            // attempt's answer was lost, the repeat found the join token spent (it is deleted
            // once its node is admitted). The leader replicates to a new member at once, so
            // this node soon sees itself in its own membership.
            let admitted = node
                .raft
                .wait(Some(JOIN_ADMISSION_WAIT))
                .metrics(|metrics| metrics.membership_config.get_node(&node.node_id).is_some(), "admitted")
                .await
                .is_ok();
            if !admitted {
                return Err(error);
            }
            tracing::info!("the join's answer was lost, but this node is a member: admitted");
            Ok(JoinResponse { cluster_id: preview.cluster_id, voter: false, members: preview.members })
        }
    }
}

/// How long a joiner whose join was refused or failed waits to see whether it was admitted
/// all the same (the leader replicates to a new member within a heartbeat or two).
pub const JOIN_ADMISSION_WAIT: Duration = Duration::from_secs(5);

async fn post_join(
    node: &Node,
    client: &reqwest::Client,
    join_url: &str,
    token: Option<&str>,
    request: &JoinRequest,
) -> anyhow::Result<JoinResponse> {
    let url = format!("{join_url}/v1/members/join");
    let mut pause = Duration::from_millis(100);
    loop {
        *node.join_status.lock().unwrap_or_else(|e| e.into_inner()) = Some(format!("joining through {join_url}"));
        let mut post = client.post(&url).json(request);
        if let Some(token) = token {
            post = post.bearer_auth(token);
        }
        match post.send().await {
            Ok(response) if response.status().is_success() => {
                return response.json().await.map_err(|e| anyhow::anyhow!("invalid answer from {url}: {e}"));
            }
            Ok(response) if response.status().is_client_error() => {
                let status = response.status();
                let body: serde_json::Value = response.json().await.unwrap_or_default();
                let message = body.get("message").and_then(|m| m.as_str()).unwrap_or("no reason given");
                anyhow::bail!("the cluster refused to admit node {} ({status}): {message}", node.node_id);
            }
            Ok(response) => tracing::warn!(status = %response.status(), %url, "join not possible yet; retrying"),
            Err(error) if haven_tls::is_certificate_refusal(&error) => {
                anyhow::bail!(
                    "the member at {join_url} did not present the key given as join_fingerprint ({}); check the \
                     fingerprint with `haven fingerprint --dir DATA_DIR` on that member",
                    node.config.join_fingerprint.as_deref().unwrap_or("none")
                );
            }
            Err(error) => {
                tracing::warn!(error = %haven_tls::error_chain(&error), %url, "cannot reach the member to join through; retrying")
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(JOIN_RETRY_PAUSE_MAX);
    }
}
