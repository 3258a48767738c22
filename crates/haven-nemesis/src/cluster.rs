//! Real `haven` processes: start, `kill -9`, SIGSTOP/SIGCONT, restart on the same data dir.
//!
//! In namespace mode each node runs under `ip netns exec` (which execs, so the child's pid
//! is the node's) and listens on fixed ports inside its namespace; in local mode nodes bind
//! port 0 on 127.0.0.1 once and keep those ports across restarts (the membership records
//! them). Every node runs with `--unsafe-test-mode`, so its redb file loses unsynced bytes
//! when it is killed. Dropping the [`Cluster`] kills every node.
//!
//! Nodes run as in production otherwise: TLS on both ports with pinned key fingerprints
//! (the harness generates each node's key before its first start, so it trusts exactly
//! those), and the cluster's first admin token (written by node 1) for every request.

use std::fs::OpenOptions;
use std::net::IpAddr;
use std::path::Path;
use std::path::PathBuf;
use std::process::Child;
use std::process::Command;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

use crate::api;
use crate::api::Access;
use crate::config::NetMode;
use crate::config::NodeMode;
use crate::config::CLUSTER_FORM_TIMEOUT;
use crate::config::NODES;
use crate::config::NODE_START_TIMEOUT;
use crate::config::STATUS_TIMEOUT;
use crate::netns::client_port;
use crate::netns::peer_port;
use crate::netns::Namespaces;

/// Where the bootstrapping node writes the cluster's first admin token (haven-server's
/// `ADMIN_TOKEN_FILE`).
const ADMIN_TOKEN_FILE: &str = "admin.token";

/// Environment variable whose value, when set, becomes the nodes' `HAVEN_LOG` filter (for
/// debugging a failed history with more detail).
pub const NODE_LOG_ENV: &str = "NEMESIS_HAVEN_LOG";

/// How often a start polls for the node's address file.
const START_POLL: Duration = Duration::from_millis(20);

/// One node process and how to start it again.
#[derive(Debug)]
pub struct NodeProcess {
    /// 1-based Raft node id.
    pub id: u64,
    /// Base URL the harness uses for this node's HTTP API.
    pub url: String,
    data_dir: PathBuf,
    log_path: PathBuf,
    client_addr: String,
    peer_addr: String,
    /// `--bootstrap` (on the data dir `haven init` prepared) or `--join=...`: ignored by an
    /// initialised data dir, so restarts keep them.
    entry_args: Vec<String>,
    child: Option<Child>,
    paused: bool,
}

impl NodeProcess {
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|child| child.id() as i32)
    }
}

/// The cluster's processes.
pub struct Cluster {
    pub nodes: Vec<NodeProcess>,
    pub net: NetMode,
    /// TLS trust and the admin token, for every client of the harness.
    pub access: Access,
    namespaces: Option<Arc<Namespaces>>,
    haven_bin: PathBuf,
    mode: NodeMode,
    history_revisions: u64,
}

impl Cluster {
    /// Prepares node 1 with `haven init` and starts it with `--bootstrap`, the others with
    /// `--join` through it, and waits
    /// until all are voters.
    pub async fn start(
        haven_bin: &Path,
        mode: NodeMode,
        work_dir: &Path,
        namespaces: Option<Arc<Namespaces>>,
        history_revisions: u64,
    ) -> anyhow::Result<Cluster> {
        let net = if namespaces.is_some() { NetMode::Netns } else { NetMode::Local };
        let pins = haven_tls::PinSet::default();
        let tls = haven_tls::client_config(pins.clone(), None)?;
        let mut cluster = Cluster {
            nodes: Vec::new(),
            net,
            access: Access { tls, token: String::new() },
            namespaces,
            haven_bin: haven_bin.to_path_buf(),
            mode,
            history_revisions,
        };
        for index in 0..NODES {
            let (url, client_addr, peer_addr, address) = match &cluster.namespaces {
                Some(ns) => (
                    ns.client_url(index),
                    format!("0.0.0.0:{}", client_port(index)),
                    format!("0.0.0.0:{}", peer_port(index)),
                    IpAddr::from(ns.client_ip(index)),
                ),
                None => {
                    (String::new(), "127.0.0.1:0".to_string(), "127.0.0.1:0".to_string(), IpAddr::from([127, 0, 0, 1]))
                }
            };
            let data_dir = work_dir.join(format!("n{}", index + 1));
            // The key first, so the harness trusts this node from its first answer.
            let (key, _) = haven_tls::NodeIdentityKey::load_or_generate(&data_dir, &[address])?;
            pins.insert(key.fingerprint().to_string());
            let entry_args = if index == 0 {
                // The one-time step that lets node 1 start the new cluster.
                init_first_node(haven_bin, &data_dir)?;
                vec!["--bootstrap".to_string()]
            } else {
                let first = &cluster.nodes[0];
                let through = match &cluster.namespaces {
                    // Node 1's end of the mesh link towards this node.
                    Some(ns) => format!("https://{}:{}", ns.mesh_ip(0, index), client_port(0)),
                    None => first.url.clone(),
                };
                let first_key = haven_tls::NodeIdentityKey::load(&first.data_dir)?
                    .ok_or_else(|| anyhow::anyhow!("node 1 has no key in {}", first.data_dir.display()))?;
                vec![
                    format!("--join={through}"),
                    format!("--join-fingerprint={}", first_key.fingerprint()),
                    format!("--join-token-file={}", first.data_dir.join(ADMIN_TOKEN_FILE).display()),
                ]
            };
            cluster.nodes.push(NodeProcess {
                id: index as u64 + 1,
                url,
                data_dir,
                log_path: work_dir.join(format!("n{}.log", index + 1)),
                client_addr,
                peer_addr,
                entry_args,
                child: None,
                paused: false,
            });
            cluster.spawn(index).await?;
            if index == 0 {
                let token_path = cluster.nodes[0].data_dir.join(ADMIN_TOKEN_FILE);
                wait_until(CLUSTER_FORM_TIMEOUT, "node 1 to write its admin token", || async { token_path.exists() })
                    .await?;
                let token = std::fs::read_to_string(&token_path)
                    .with_context(|| format!("cannot read {}", token_path.display()))?;
                cluster.access.token = token.trim().to_string();
            }
        }
        let http = api::http_client(&cluster.access, Some(STATUS_TIMEOUT))?;
        let url = cluster.nodes[0].url.clone();
        wait_until(CLUSTER_FORM_TIMEOUT, "all nodes to be voters", || async {
            api::status(&http, &url).await.is_some_and(|status| {
                let members = status["members"].as_array().cloned().unwrap_or_default();
                members.iter().filter(|m| m["voter"] == true).count() == NODES
            })
        })
        .await?;
        Ok(cluster)
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|node| node.url.clone()).collect()
    }

    /// Starts node `index` on its data dir and waits for its address file.
    async fn spawn(&mut self, index: usize) -> anyhow::Result<()> {
        let node = &mut self.nodes[index];
        let _ = std::fs::remove_file(node.data_dir.join("addr.json"));
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log_path)
            .with_context(|| format!("cannot open {}", node.log_path.display()))?;
        let mut command = match &self.namespaces {
            Some(ns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", ns.name(index)]).arg(&self.haven_bin);
                command
            }
            None => Command::new(&self.haven_bin),
        };
        // Correct nodes snapshot often (see SNAPSHOT_THRESHOLD); mutants keep Haven's
        // default, as their schedules were tuned with it: a snapshot every 200 entries
        // makes most of what the ack-before-fsync mutant left unsynced durable through the
        // snapshot, and the mutant escaped one CI run in three.
        let snapshot_threshold =
            (!self.mode.is_mutant()).then(|| format!("--snapshot-threshold={}", crate::config::SNAPSHOT_THRESHOLD));
        command
            .arg("serve")
            .arg(format!("--node-id={}", node.id))
            .arg(format!("--data-dir={}", node.data_dir.display()))
            .arg(format!("--client-addr={}", node.client_addr))
            .arg(format!("--peer-addr={}", node.peer_addr))
            .arg(format!("--history-revisions={}", self.history_revisions))
            .arg(format!("--unsafe-test-mode={}", self.mode.flag()))
            .args(snapshot_threshold)
            .args(&node.entry_args)
            .env("HAVEN_UNSAFE_TEST_MODE", "1")
            .env("HAVEN_LOG", std::env::var(NODE_LOG_ENV).unwrap_or_else(|_| "info,openraft=warn".to_string()))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = command.spawn().with_context(|| format!("cannot start {}", self.haven_bin.display()))?;
        let pid = child.id();
        node.child = Some(child);
        node.paused = false;
        let deadline = tokio::time::Instant::now() + NODE_START_TIMEOUT;
        loop {
            if let Some(addr) = read_addr_file(&node.data_dir) {
                if addr["pid"].as_u64() == Some(u64::from(pid)) {
                    if self.namespaces.is_none() {
                        // Local mode: keep the ports chosen at first start for every restart.
                        let client_url = addr["client_url"].as_str().unwrap_or_default().to_string();
                        node.client_addr = client_url.split("://").last().unwrap_or_default().to_string();
                        node.peer_addr = addr["peer_addr"].as_str().unwrap_or_default().to_string();
                        node.url = client_url;
                    }
                    return Ok(());
                }
            }
            if !node.is_running() {
                anyhow::bail!("node {} exited at start; see {}", node.id, node.log_path.display());
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "node {} wrote no address file within {NODE_START_TIMEOUT:?}; see {}",
                node.id,
                node.log_path.display()
            );
            tokio::time::sleep(START_POLL).await;
        }
    }

    /// `kill -9` of node `index` (also when it is paused).
    pub fn kill(&mut self, index: usize) {
        let node = &mut self.nodes[index];
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        node.paused = false;
    }

    /// `kill -9` of every node as close to the same instant as possible: signals first, then
    /// reaping.
    pub fn kill_all(&mut self) {
        for node in &self.nodes {
            if let Some(pid) = node.pid() {
                // SAFETY: a plain signal to our own child.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        for index in 0..self.nodes.len() {
            self.kill(index);
        }
    }

    /// Starts node `index` again if it is not running.
    pub async fn restart(&mut self, index: usize) -> anyhow::Result<()> {
        if self.nodes[index].is_running() {
            return Ok(());
        }
        self.kill(index);
        self.spawn(index).await
    }

    pub fn pause(&mut self, index: usize) {
        if let Some(pid) = self.nodes[index].pid() {
            // SAFETY: a plain signal to our own child.
            unsafe { libc::kill(pid, libc::SIGSTOP) };
            self.nodes[index].paused = true;
        }
    }

    pub fn resume(&mut self, index: usize) {
        if let Some(pid) = self.nodes[index].pid() {
            // SAFETY: a plain signal to our own child.
            unsafe { libc::kill(pid, libc::SIGCONT) };
        }
        self.nodes[index].paused = false;
    }

    /// Resumes paused nodes and restarts dead ones.
    pub async fn revive_all(&mut self) -> anyhow::Result<()> {
        for index in 0..self.nodes.len() {
            if self.nodes[index].paused {
                self.resume(index);
            }
        }
        for index in 0..self.nodes.len() {
            self.restart(index).await?;
        }
        Ok(())
    }

    /// Copies the files node `index` restarts from (while it is down) into `to`.
    pub fn copy_durable_state(&self, index: usize, to: &Path) {
        let from = &self.nodes[index].data_dir;
        if std::fs::create_dir_all(to).is_err() {
            return;
        }
        for name in ["raft.redb", "snapshot.bin"] {
            let _ = std::fs::copy(from.join(name), to.join(name));
        }
    }

    /// The last lines of every node's log, for a failure report.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for node in &self.nodes {
            let text = std::fs::read_to_string(&node.log_path).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(lines).collect();
            out.push_str(&format!("---- node {} ({}) ----\n", node.id, node.log_path.display()));
            for line in tail.into_iter().rev() {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for index in 0..self.nodes.len() {
            // SIGCONT first: a stopped process is killed but not reaped until it runs.
            self.resume(index);
            self.kill(index);
        }
    }
}

fn read_addr_file(data_dir: &Path) -> Option<Value> {
    let text = std::fs::read_to_string(data_dir.join("addr.json")).ok()?;
    serde_json::from_str(&text).ok()
}

/// Polls `condition` every 50 ms until it holds or `timeout` passes.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut condition: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition().await {
            return Ok(());
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `haven init` for node 1: a new cluster is created only on a data dir prepared for it.
fn init_first_node(haven_bin: &Path, data_dir: &Path) -> anyhow::Result<()> {
    let output = std::process::Command::new(haven_bin)
        .arg("init")
        .arg("--node-id=1")
        .arg(format!("--data-dir={}", data_dir.display()))
        .output()
        .with_context(|| format!("cannot run {} init", haven_bin.display()))?;
    if !output.status.success() {
        anyhow::bail!("haven init failed: {}", String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(())
}
