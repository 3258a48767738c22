//! Running a node from start to graceful stop.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use haven_core::config::NodeConfig;
use haven_net::JoinRequest;
use haven_net::JoinResponse;
use haven_net::Transport;
use haven_store::log_store::SyncMode;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::files;
use crate::node::JOIN_DEADLINE;
use crate::node::PROBE_INTERVAL;
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
    pub transport: Arc<dyn Transport>,
    pub sync: SyncMode,
}

/// Runs a node until `shutdown` resolves (then stops gracefully) or it cannot go on
/// (for example its join was refused), which is returned as an error.
pub async fn run(options: RunOptions, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let client_addr = options.client_listener.local_addr()?;
    let peer_addr = options.peer_listener.local_addr()?;
    let client_url = format!("http://{client_addr}");
    let data_dir = options.config.data_dir.clone();
    let node =
        Node::open(options.config, client_url.clone(), peer_addr.to_string(), options.transport, options.sync).await?;
    tracing::info!(node_id = node.node_id, %client_url, %peer_addr, incarnation = %node.incarnation, "node started");

    let (stop, stopped) = watch::channel(false);
    let wait_stop = |mut stopped: watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    let peer_server = tokio::spawn(haven_net::tcp::serve(
        options.peer_listener,
        NodePeerHandler::new(&node),
        wait_stop(stopped.clone()),
    ));
    let app = crate::api::router(node.clone());
    let http_shutdown = wait_stop(stopped.clone());
    let http_server =
        tokio::spawn(
            async move { axum::serve(options.client_listener, app).with_graceful_shutdown(http_shutdown).await },
        );
    files::write_pid_and_addr(
        &data_dir,
        &files::AddrFile {
            node_id: node.node_id,
            client_url,
            peer_addr: peer_addr.to_string(),
            pid: std::process::id(),
        },
    )?;

    let background = tokio::spawn(background_loop(node.clone(), stopped.clone()));
    let membership = tokio::spawn(enter_cluster(node.clone()));

    tokio::pin!(shutdown);
    let outcome = tokio::select! {
        _ = &mut shutdown => Ok(()),
        result = membership => match result {
            Ok(Ok(())) => {
                // Joined or bootstrapped; keep serving until told to stop.
                shutdown.await;
                Ok(())
            }
            Ok(Err(error)) => Err(error),
            Err(error) => Err(anyhow::anyhow!("join task failed: {error}")),
        },
    };

    tracing::info!("stopping");
    node.hand_over_leadership().await;
    let _ = stop.send(true);
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, http_server).await;
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, peer_server).await;
    background.abort();
    if let Err(error) = node.raft.shutdown().await {
        tracing::warn!(%error, "raft did not stop cleanly");
    }
    files::remove_pid(&data_dir);
    tracing::info!("stopped");
    outcome
}

/// Probes peers and keeps derived state in step, until stopped.
async fn background_loop(node: Arc<Node>, mut stopped: watch::Receiver<bool>) {
    let mut recorded_cluster_id = None;
    let mut last_voters = 0;
    loop {
        node.probe_peers().await;
        node.housekeeping(&mut recorded_cluster_id).await;
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
            _ = tokio::time::sleep(PROBE_INTERVAL) => {}
            _ = stopped.changed() => return,
        }
    }
}

/// Bootstraps or joins as configured. On an initialised data dir this does nothing, except
/// finishing a promotion to voter that a restart interrupted.
async fn enter_cluster(node: Arc<Node>) -> anyhow::Result<()> {
    let initialized = node.raft.is_initialized().await.map_err(|e| anyhow::anyhow!("raft stopped: {e}"))?;
    if node.config.bootstrap && !initialized {
        tracing::info!("bootstrapping a new cluster with this node as its only voter");
        node.raft
            .initialize(BTreeMap::from([(node.node_id, node.this_node())]))
            .await
            .map_err(|e| anyhow::anyhow!("cannot bootstrap: {e}"))?;
        return Ok(());
    }
    let Some(join_url) = node.config.join.clone() else {
        return Ok(());
    };
    if initialized {
        let membership = node.membership();
        let learner_awaiting_promotion = membership.get_node(&node.node_id).is_some()
            && !membership.voter_ids().any(|id| id == node.node_id)
            && !node.config.learner;
        if !learner_awaiting_promotion {
            return Ok(());
        }
    }
    let response = join_through(&node, &join_url).await?;
    node.local.set_cluster_id(&response.cluster_id);
    *node.join_status.lock().unwrap_or_else(|e| e.into_inner()) = None;
    tracing::info!(cluster_id = %response.cluster_id, voter = response.voter, "joined the cluster");
    Ok(())
}

async fn join_through(node: &Node, join_url: &str) -> anyhow::Result<JoinResponse> {
    let request = JoinRequest {
        node_id: node.node_id,
        client_url: node.client_url.clone(),
        peer_addr: node.peer_addr.clone(),
        incarnation: node.incarnation.clone(),
        learner: node.config.learner,
    };
    let client = reqwest::Client::builder()
        .timeout(JOIN_DEADLINE + Duration::from_secs(10))
        .build()
        .map_err(|e| anyhow::anyhow!("cannot build HTTP client: {e}"))?;
    let url = format!("{join_url}/v1/members/join");
    let mut pause = Duration::from_millis(100);
    loop {
        *node.join_status.lock().unwrap_or_else(|e| e.into_inner()) = Some(format!("joining through {join_url}"));
        match client.post(&url).json(&request).send().await {
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
            Err(error) => tracing::warn!(%error, %url, "cannot reach the member to join through; retrying"),
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(JOIN_RETRY_PAUSE_MAX);
    }
}
