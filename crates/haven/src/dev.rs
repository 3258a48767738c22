//! `haven dev`: a local cluster of 1, 3, 5 or 7 nodes on 127.0.0.1, run as child processes.
//!
//! Layout of `DIR` (default `./haven-dev`):
//!
//! ```text
//! DIR/dev.lock           flock held while `haven dev` runs; holds its pid
//! DIR/env                `source` it: HAVEN_ENDPOINTS, HAVEN_SERVER_FINGERPRINTS,
//!                        HAVEN_TOKEN_FILE, PATH with the haven binary (mode 0600);
//!                        written once every node is a healthy voter, removed at start
//! DIR/nN/haven.toml      complete node config; `haven serve --config DIR/nN/haven.toml`
//! DIR/nN/node.key        the node's TLS key (mode 0600) and certificate (node.crt),
//!                        made by `haven dev` before the first start
//! DIR/n1/admin.token     the cluster's first admin token (mode 0600), written by n1 once
//!                        it leads the new cluster
//! DIR/nN/haven.log       the node's stdout and stderr (appended)
//! DIR/nN/haven.pid       written by the node once it serves, removed on clean exit
//! DIR/nN/addr.json       written by the node once it has bound its ports
//! DIR/nN/...             the node's data (data_dir = DIR/nN)
//! ```
//!
//! Ports are chosen once, on the first run, and kept in the `haven.toml` files; a later run
//! on the same `DIR` reads them back and restarts the same cluster with its data.
//!
//! Every node's TLS key is made before any node starts, so all fingerprints are known up
//! front: the joining nodes' configs pin n1's (`join_fingerprint`), and `haven dev` and the
//! CLI pin all of them. Nothing is ever sent without verifying the server's key.
//!
//! Startup: n1 starts first; `haven dev` waits for its `addr.json` and its `admin.token`
//! (the joining nodes present that token, and every check but `/v1/health` needs it). If n1
//! then becomes healthy on its own it is a new (or one-node) cluster: the others are started
//! one at a time, each joining through n1 and waiting until it is a voter. If instead n1
//! reports other members, it is an existing cluster that needs a majority to elect a leader,
//! so all the others are started at once. Either way `haven dev`
//! then waits until every node is a healthy voter.
//!
//! The plain parts (argument checks, port and config planning, config parsing, the env
//! file, reading status answers) are pure functions, tested below; the rest is process and
//! network plumbing.

use std::fmt::Display;
use std::fs;
use std::fs::File;
use std::fs::OpenOptions;
use std::io;
use std::io::Read;
use std::io::Seek;
use std::io::SeekFrom;
use std::io::Write;
use std::net::IpAddr;
use std::net::Ipv4Addr;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::path::PathBuf;
use std::process::ExitCode;
use std::process::ExitStatus;
use std::process::Stdio;
use std::time::Duration;

use anyhow::anyhow;
use anyhow::bail;
use anyhow::Context;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use tokio::process::Child;
use tokio::process::Command;
use tokio::signal::unix::signal;
use tokio::signal::unix::Signal;
use tokio::signal::unix::SignalKind;
use tokio::time::sleep;
use tokio::time::timeout_at;
use tokio::time::Instant;

/// Cluster sizes `haven dev` runs.
const ALLOWED_NODES: [usize; 4] = [1, 3, 5, 7];
/// Cluster size for a new `DIR` when `--nodes` is not given.
const DEFAULT_NODES: usize = 3;
/// How long each startup step (bind, become healthy, become a voter) may take.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a node may take to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between readiness checks.
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Bound on one status or health check (connect, TLS handshake, request, answer).
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the leader is checked while the cluster runs, to report changes.
const LEADER_WATCH_INTERVAL: Duration = Duration::from_secs(1);
/// How long n1 may stay unhealthy on its own before the others are started anyway, when
/// they have run before.
const EXISTING_CLUSTER_GRACE: Duration = Duration::from_secs(3);
/// Log lines shown when a node fails to start.
const LOG_TAIL_LINES: usize = 15;

#[derive(clap::Args, Debug)]
pub struct DevArgs {
    /// Number of nodes: 1, 3, 5 or 7 [default: 3, or as many as DIR already holds].
    #[arg(long, value_name = "1|3|5|7", value_parser = parse_nodes)]
    pub nodes: Option<usize>,

    /// Directory for the nodes' configs, data and logs, and the env file to source.
    #[arg(long, value_name = "DIR", default_value = "./haven-dev")]
    pub dir: PathBuf,
}

/// Runs the dev cluster until Ctrl-C or SIGTERM; see the module documentation.
pub async fn run(args: DevArgs) -> anyhow::Result<ExitCode> {
    // The nodes' data, configs, logs and env file (it holds the token file's path) are this
    // user's alone; the nodes it starts inherit the mask.
    haven_server::files::restrict_umask();
    if let Some(nodes) = args.nodes {
        validate_nodes(nodes).map_err(|message| anyhow!("--nodes {message}"))?;
    }
    fs::create_dir_all(&args.dir)
        .map_err(|error| anyhow!("cannot create {} ({error}); choose another --dir", args.dir.display()))?;
    let dir = fs::canonicalize(&args.dir).with_context(|| format!("cannot resolve {}", args.dir.display()))?;
    if dir.to_str().is_none() {
        bail!("{} is not valid UTF-8; choose another --dir", dir.display());
    }
    let _lock = DirLock::acquire(&dir)?;

    let exe = std::env::current_exe().context("cannot find the path of the running haven binary")?;
    let existing = read_existing(&dir)?;
    let nodes = resolve_node_count(&dir, args.nodes, existing.as_ref().map(Vec::len))?;
    let (plans, fingerprints) = match existing {
        Some(plans) => {
            let fingerprints = load_or_generate_keys(&plans)?;
            (plans, fingerprints)
        }
        None => {
            let ports = pick_free_ports(2 * nodes)?;
            let plans = plan_new(&dir, nodes, &ports)?;
            // Keys first: the joining nodes' configs pin n1's fingerprint.
            let fingerprints = load_or_generate_keys(&plans)?;
            write_configs(&plans, &fingerprints[0])?;
            (plans, fingerprints)
        }
    };
    prepare_if_never_started(&plans)?;
    check_ports_free(&dir, &plans)?;
    // The env file appears only once the cluster has formed, so a script that waits for it
    // (as the README invites) never meets a member that is still joining or a learner. One
    // left by an earlier run would say the cluster is up while it is not yet.
    remove_env_file(&dir)?;

    // Installed before any child exists: from here on Ctrl-C and SIGTERM are ours to handle.
    let mut signals = StopSignals::new()?;
    let mut running: Vec<RunningNode> = Vec::with_capacity(plans.len());
    say(format_args!("starting {} node(s) in {}", plans.len(), dir.display()));
    let started = tokio::select! {
        result = start_cluster(&exe, &plans, &fingerprints, &mut running) => result.map(Some),
        name = signals.recv() => {
            say(format_args!("{name} during startup: stopping"));
            Ok(None)
        }
    };
    let (checker, leader) = match started {
        Ok(Some(started)) => started,
        Ok(None) => {
            stop_all(&mut running, &mut signals).await;
            say("stopped");
            return Ok(ExitCode::SUCCESS);
        }
        Err(error) => {
            stop_all(&mut running, &mut signals).await;
            return Err(error);
        }
    };
    if let Err(error) = write_env_file(&dir, &plans, &fingerprints, &exe) {
        stop_all(&mut running, &mut signals).await;
        return Err(error);
    }
    say(usage(&dir, &running, leader));

    let name = supervise(&checker, &mut running, &mut signals, leader).await;
    say(format_args!("{name}: stopping the nodes"));
    stop_all(&mut running, &mut signals).await;
    report_nodes_run_by_hand(&plans, &running);
    say("stopped");
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------------------------------
// Arguments and planning (pure)
// ---------------------------------------------------------------------------------------

/// clap value parser for `--nodes`.
fn parse_nodes(text: &str) -> Result<usize, String> {
    let nodes: usize = text.trim().parse().map_err(|_| format!("must be 1, 3, 5 or 7, not {text:?}"))?;
    validate_nodes(nodes)?;
    Ok(nodes)
}

fn validate_nodes(nodes: usize) -> Result<(), String> {
    if ALLOWED_NODES.contains(&nodes) {
        Ok(())
    } else {
        // Say the rule that was broken (issue 14: "7" was refused as not odd).
        let why = if nodes == 0 {
            "at least one node"
        } else if nodes.is_multiple_of(2) {
            "an odd number of voters, so a majority can always decide"
        } else {
            "a cluster has at most 7 voters"
        };
        Err(format!("must be 1, 3, 5 or 7, not {nodes} ({why})"))
    }
}

/// How many nodes to run: what was asked for, what `DIR` already holds, or the default.
fn resolve_node_count(dir: &Path, requested: Option<usize>, existing: Option<usize>) -> anyhow::Result<usize> {
    match (requested, existing) {
        (Some(requested), Some(existing)) if requested != existing => bail!(
            "{dir} holds a {existing}-node cluster, not {requested}; run `haven dev --dir {dir}` \
             to restart it, or remove {dir} to start a new {requested}-node cluster",
            dir = dir.display()
        ),
        (_, Some(existing)) => Ok(existing),
        (Some(requested), None) => Ok(requested),
        (None, None) => Ok(DEFAULT_NODES),
    }
}

/// One node of the dev cluster, as its `haven.toml` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NodePlan {
    id: u64,
    /// `DIR/nN`: the node's data dir, which also holds its config, log, pid and addr files.
    data_dir: PathBuf,
    client_addr: SocketAddr,
    peer_addr: SocketAddr,
}

impl NodePlan {
    fn name(&self) -> String {
        format!("n{}", self.id)
    }

    fn config_path(&self) -> PathBuf {
        self.data_dir.join("haven.toml")
    }

    fn log_path(&self) -> PathBuf {
        self.data_dir.join("haven.log")
    }

    fn pid_path(&self) -> PathBuf {
        self.data_dir.join("haven.pid")
    }

    fn addr_path(&self) -> PathBuf {
        self.data_dir.join("addr.json")
    }

    /// Where the bootstrapping node (n1) writes the cluster's first admin token.
    fn admin_token_path(&self) -> PathBuf {
        self.data_dir.join(haven_server::auth::ADMIN_TOKEN_FILE)
    }

    fn client_url(&self) -> String {
        format!("https://{}", self.client_addr)
    }
}

/// Plans a new cluster of `nodes` nodes under `dir`; `ports` holds two free ports per node
/// (client, peer, client, peer, ...).
fn plan_new(dir: &Path, nodes: usize, ports: &[u16]) -> anyhow::Result<Vec<NodePlan>> {
    if ports.len() != 2 * nodes {
        bail!("internal: {} ports for {nodes} nodes", ports.len());
    }
    let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
    Ok((0..nodes)
        .map(|index| NodePlan {
            id: index as u64 + 1,
            data_dir: dir.join(format!("n{}", index + 1)),
            client_addr: SocketAddr::new(localhost, ports[2 * index]),
            peer_addr: SocketAddr::new(localhost, ports[2 * index + 1]),
        })
        .collect())
}

/// The complete `haven.toml` of `node`; `first` is n1, which bootstraps and which the
/// others join through, verifying its key against `first_fingerprint` and presenting the
/// admin token it writes.
fn render_config(node: &NodePlan, first: &NodePlan, first_fingerprint: &str) -> anyhow::Result<String> {
    let utf8 = |path: &Path| -> anyhow::Result<String> {
        path.to_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("{} is not valid UTF-8; choose another --dir", path.display()))
    };
    let data_dir = utf8(&node.data_dir)?;
    let mut text = format!(
        "# Node {name} of a `haven dev` cluster. Run it by hand with:\n\
         #   haven serve --config {config}\n\
         node_id = {id}\n\
         data_dir = {data_dir}\n\
         client_addr = \"{client}\"\n\
         peer_addr = \"{peer}\"\n",
        name = node.name(),
        config = node.config_path().display(),
        id = node.id,
        data_dir = toml_string(&data_dir),
        client = node.client_addr,
        peer = node.peer_addr,
    );
    if node.id == first.id {
        text.push_str(
            "# The cluster's first voter: starts the new cluster on the data dir `haven dev` \
             prepared with `haven init`,\n# and refuses to start if that data is lost (it never \
             starts a second cluster); does nothing\n# on a node that already has data.\nbootstrap = true\n",
        );
    } else {
        text.push_str(&format!(
            "# Asks n1 to add this node (as a learner, promoted to voter once caught up);\n\
             # does nothing on a node that already has data.\n\
             join = {join}\n\
             # n1's TLS key: the join is refused if n1 presents another.\n\
             join_fingerprint = {fingerprint}\n\
             # The admin token n1 writes once the new cluster has a leader.\n\
             join_token_file = {token_file}\n",
            join = toml_string(&first.client_url()),
            fingerprint = toml_string(first_fingerprint),
            token_file = toml_string(&utf8(&first.admin_token_path())?),
        ));
    }
    Ok(text)
}

/// A TOML basic string holding `text`.
fn toml_string(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for character in text.chars() {
        match character {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\n' => quoted.push_str("\\n"),
            '\t' => quoted.push_str("\\t"),
            '\r' => quoted.push_str("\\r"),
            c if c.is_control() => quoted.push_str(&format!("\\u{:04X}", c as u32)),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// Reads back the parts of a node's `haven.toml` that `haven dev` needs; other keys are the
/// server's business and are left alone.
fn parse_config(text: &str, expected_id: u64, expected_dir: &Path) -> Result<NodePlan, String> {
    let table: toml::Table =
        toml::from_str(text).map_err(|error| format!("is not valid TOML ({})", error.message()))?;
    let id = match table.get("node_id") {
        Some(toml::Value::Integer(id)) => *id,
        Some(_) => return Err("has a node_id that is not a number".to_string()),
        None => return Err("has no node_id".to_string()),
    };
    if u64::try_from(id).ok() != Some(expected_id) {
        return Err(format!("has node_id = {id}, expected {expected_id}"));
    }
    let string = |key: &str| -> Result<&str, String> {
        match table.get(key) {
            Some(toml::Value::String(value)) => Ok(value.as_str()),
            Some(_) => Err(format!("has a {key} that is not a string")),
            None => Err(format!("has no {key}")),
        }
    };
    let address = |key: &str| -> Result<SocketAddr, String> {
        let value = string(key)?;
        value.parse().map_err(|_| format!("has {key} = {value:?}, which is not an IP:PORT address"))
    };
    let data_dir = PathBuf::from(string("data_dir")?);
    if data_dir != expected_dir {
        return Err(format!(
            "has data_dir = {:?}, not {:?} (was the directory moved?)",
            data_dir.display().to_string(),
            expected_dir.display().to_string()
        ));
    }
    Ok(NodePlan { id: expected_id, data_dir, client_addr: address("client_addr")?, peer_addr: address("peer_addr")? })
}

/// The node ids `names` (entries of `DIR` that have a `haven.toml`) describe, if they are
/// exactly n1..nK.
fn node_ids_in(dir: &Path, names: &[String]) -> anyhow::Result<usize> {
    let mut ids: Vec<u64> = names
        .iter()
        .filter_map(|name| name.strip_prefix('n'))
        .filter(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        .filter_map(|digits| digits.parse().ok())
        .collect();
    ids.sort_unstable();
    let count = ids.len();
    let contiguous = ids.iter().enumerate().all(|(index, id)| *id == index as u64 + 1);
    if !contiguous || validate_nodes(count).is_err() {
        let list: Vec<String> = ids.iter().map(|id| format!("n{id}")).collect();
        bail!(
            "{dir} holds configs for {} ({count} node(s)), not a 1, 3, 5 or 7-node cluster n1..nN; \
             remove {dir} to start over",
            list.join(", "),
            dir = dir.display()
        );
    }
    Ok(count)
}

/// The cluster `dir` already holds, if any.
fn read_existing(dir: &Path) -> anyhow::Result<Option<Vec<NodePlan>>> {
    let entries = fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if name.starts_with('n') && entry.path().join("haven.toml").is_file() {
            names.push(name);
        }
    }
    if names.is_empty() {
        return Ok(None);
    }
    let count = node_ids_in(dir, &names)?;
    let mut plans = Vec::with_capacity(count);
    for id in 1..=count as u64 {
        let data_dir = dir.join(format!("n{id}"));
        let path = data_dir.join("haven.toml");
        let text = fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let plan = parse_config(&text, id, &data_dir).map_err(|problem| {
            anyhow!("{} {problem}; fix it, or remove {} to start a new cluster", path.display(), dir.display())
        })?;
        plans.push(plan);
    }
    Ok(Some(plans))
}

/// The `(name, value)` pairs `DIR/env` exports besides PATH: everything the CLI needs to
/// reach the dev cluster (`fingerprints` are the nodes' keys, in node order). Add new
/// variables here.
fn env_vars(nodes: &[NodePlan], fingerprints: &[String]) -> Vec<(&'static str, String)> {
    let endpoints: Vec<String> = nodes.iter().map(NodePlan::client_url).collect();
    let mut vars =
        vec![("HAVEN_ENDPOINTS", endpoints.join(",")), ("HAVEN_SERVER_FINGERPRINTS", fingerprints.join(","))];
    if let Some(first) = nodes.first() {
        vars.push(("HAVEN_TOKEN_FILE", first.admin_token_path().to_string_lossy().into_owned()));
        // What the CLI remembers about this cluster (last good endpoint, cluster id, the
        // reviewed draft) lives beside the env file: per env file.
        if let Some(dir) = first.data_dir.parent() {
            vars.push(("HAVEN_CLI_STATE", dir.join("cli-state.json").to_string_lossy().into_owned()));
        }
    }
    vars
}

/// The text of `DIR/env`: `vars` exported, and `bin_dir` (where the haven binary is) put
/// first on PATH.
fn render_env(vars: &[(&str, String)], bin_dir: &Path) -> String {
    let mut text = String::from("# Written by `haven dev`. Source it to point the haven CLI at the dev cluster.\n");
    for (name, value) in vars {
        text.push_str(&format!("export {name}={}\n", shell_quote(value)));
    }
    text.push_str(&format!("export PATH={}\":$PATH\"\n", shell_quote(&bin_dir.to_string_lossy())));
    text
}

/// `text` as it can be typed into a shell: as is when that is safe, else quoted.
fn shell_word(text: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "/._-+:,=@%".contains(c);
    if !text.is_empty() && text.chars().all(safe) {
        text.to_string()
    } else {
        shell_quote(text)
    }
}

/// `text` as one single-quoted POSIX shell word.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

// ---------------------------------------------------------------------------------------
// Files, lock and ports
// ---------------------------------------------------------------------------------------

/// An exclusive `flock` on `DIR/dev.lock`, held until dropped (the process exits).
struct DirLock {
    _file: File,
}

impl DirLock {
    fn acquire(dir: &Path) -> anyhow::Result<DirLock> {
        let path = dir.join("dev.lock");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        // SAFETY: flock on a descriptor this function owns; no memory is involved.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let error = io::Error::last_os_error();
            if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let pid = if holder.is_empty() { "unknown" } else { holder };
                bail!(
                    "{} is in use by another haven dev (pid {pid}); stop it first (Ctrl-C in its \
                     terminal), or use another --dir",
                    dir.display()
                );
            }
            return Err(error).with_context(|| format!("cannot lock {}", path.display()));
        }
        let written = file
            .set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(format!("{}\n", std::process::id()).as_bytes()));
        written.with_context(|| format!("cannot write {}", path.display()))?;
        Ok(DirLock { _file: file })
    }
}

/// `count` distinct free ports on 127.0.0.1, found by binding port 0.
fn pick_free_ports(count: usize) -> anyhow::Result<Vec<u16>> {
    // All listeners stay open until every port is known, so the ports are distinct.
    let listeners = (0..count)
        .map(|_| std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .collect::<io::Result<Vec<_>>>()
        .context("cannot find free ports on 127.0.0.1")?;
    listeners
        .iter()
        .map(|listener| Ok(listener.local_addr()?.port()))
        .collect::<io::Result<Vec<u16>>>()
        .context("cannot find free ports on 127.0.0.1")
}

/// Makes every node's data dir and TLS key (`node.key`, `node.crt`), or loads the key it
/// already has (the node loads the same one); returns the fingerprints in node order.
fn load_or_generate_keys(plans: &[NodePlan]) -> anyhow::Result<Vec<String>> {
    let localhost = [IpAddr::V4(Ipv4Addr::LOCALHOST)];
    plans
        .iter()
        .map(|plan| {
            fs::create_dir_all(&plan.data_dir).with_context(|| format!("cannot create {}", plan.data_dir.display()))?;
            let (key, _generated) =
                haven_tls::NodeIdentityKey::load_or_generate(&plan.data_dir, &localhost).map_err(|error| {
                    anyhow!(
                        "cannot make or read the TLS key of node {} in {} ({error}); remove {} to start over",
                        plan.name(),
                        plan.data_dir.display(),
                        plan.data_dir.parent().unwrap_or(&plan.data_dir).display()
                    )
                })?;
            Ok(key.fingerprint().to_string())
        })
        .collect()
}

/// Writes every node's data dir and `haven.toml`; `first_fingerprint` is n1's key.
fn write_configs(plans: &[NodePlan], first_fingerprint: &str) -> anyhow::Result<()> {
    let Some(first) = plans.first() else {
        bail!("internal: no nodes planned");
    };
    for plan in plans {
        fs::create_dir_all(&plan.data_dir).with_context(|| format!("cannot create {}", plan.data_dir.display()))?;
        write_file_atomically(&plan.config_path(), &render_config(plan, first, first_fingerprint)?, 0o600)?;
    }
    Ok(())
}

/// Removes `DIR/env` if it is there.
fn remove_env_file(dir: &Path) -> anyhow::Result<()> {
    match fs::remove_file(dir.join("env")) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => {
            Err(error).with_context(|| format!("cannot remove the old {}", dir.join("env").display()))
        }
        _ => Ok(()),
    }
}

/// `haven init` for n1 of a cluster no node of which has ever served: the one-time step that
/// lets n1 start the new cluster. Once any node has served (written addr.json) or n1 holds
/// an admin token, nothing is prepared again: an n1 that lost its data then refuses to start
/// instead of starting a second cluster.
fn prepare_if_never_started(plans: &[NodePlan]) -> anyhow::Result<()> {
    let Some(first) = plans.first() else {
        bail!("internal: no nodes planned");
    };
    let ever_served = plans.iter().any(|plan| plan.addr_path().exists());
    if ever_served || first.admin_token_path().exists() {
        return Ok(());
    }
    haven_server::bootstrap::prepare_new_cluster(first.id, &first.data_dir)
        .with_context(|| format!("cannot prepare node {} to start the new cluster", first.name()))?;
    Ok(())
}

/// Writes `DIR/env` (mode 0600), atomically: a reader sees all of it or none.
fn write_env_file(dir: &Path, plans: &[NodePlan], fingerprints: &[String], exe: &Path) -> anyhow::Result<()> {
    let bin_dir =
        exe.parent().ok_or_else(|| anyhow!("cannot tell which directory the haven binary {} is in", exe.display()))?;
    write_file_atomically(&dir.join("env"), &render_env(&env_vars(plans, fingerprints), bin_dir), 0o600)
}

/// Writes `text` to `path` through a temporary file and a rename, with permissions `mode`.
fn write_file_atomically(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    let result = (|| -> io::Result<()> {
        let _ = fs::remove_file(&temporary);
        let mut file = OpenOptions::new().write(true).create_new(true).mode(mode).open(&temporary)?;
        // The mode given to open is filtered by the umask; set it exactly.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        fs::rename(&temporary, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    result.with_context(|| format!("cannot write {}", path.display()))
}

/// Fails with a clear line if a port of the cluster is taken, e.g. by a node still running
/// from an earlier run.
fn check_ports_free(dir: &Path, plans: &[NodePlan]) -> anyhow::Result<()> {
    for plan in plans {
        for (what, addr) in [("client", plan.client_addr), ("peer", plan.peer_addr)] {
            let Err(error) = std::net::TcpListener::bind(addr) else {
                continue;
            };
            if let Some(pid) = read_pid(&plan.pid_path()).filter(|pid| process_alive(*pid)) {
                bail!(
                    "node {} is still running (pid {pid}, its {what} address {addr} is in use); \
                     stop it first: kill {pid}",
                    plan.name()
                );
            }
            bail!(
                "the {what} address {addr} of node {} is in use ({error}); stop what uses it, \
                 or remove {} to start a new cluster on new ports",
                plan.name(),
                dir.display()
            );
        }
    }
    Ok(())
}

fn read_pid(path: &Path) -> Option<u32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Whether a process with this pid exists (it may belong to another user).
fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// The lines `path` gained after byte `from`, at most the last `lines` of them.
fn log_tail(path: &Path, from: u64, lines: usize) -> Vec<String> {
    const WINDOW: u64 = 64 * 1024;
    let mut text = Vec::new();
    let read = File::open(path).and_then(|mut file| {
        let length = file.metadata()?.len();
        file.seek(SeekFrom::Start(from.max(length.saturating_sub(WINDOW))))?;
        file.take(WINDOW).read_to_end(&mut text)
    });
    if read.is_err() {
        return Vec::new();
    }
    let text = String::from_utf8_lossy(&text);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].iter().map(|line| line.to_string()).collect()
}

// ---------------------------------------------------------------------------------------
// Child processes
// ---------------------------------------------------------------------------------------

/// A node started by this `haven dev`.
struct RunningNode {
    plan: NodePlan,
    /// `None` once the process has exited and been reaped.
    child: Option<Child>,
    pid: u32,
    /// Length of the log file when the node was started, to show only this run's lines.
    log_start: u64,
}

impl RunningNode {
    /// The error for a node that exited before it was ready, after showing its last log lines.
    fn exited_early(&self, status: ExitStatus) -> anyhow::Error {
        self.show_log_tail();
        if let Some(why) = expelled_advice(&self.plan) {
            return anyhow!("node {} exited ({status}) before it was ready: {why}", self.plan.name());
        }
        anyhow!(
            "node {} exited ({status}) before it was ready; see {}",
            self.plan.name(),
            self.plan.log_path().display()
        )
    }

    /// The error for a node that did not reach a startup step in time.
    fn too_slow(&self, what: &str) -> anyhow::Error {
        self.show_log_tail();
        anyhow!(
            "node {} {what} within {} s; see {}",
            self.plan.name(),
            START_TIMEOUT.as_secs(),
            self.plan.log_path().display()
        )
    }

    fn show_log_tail(&self) {
        let lines = log_tail(&self.plan.log_path(), self.log_start, LOG_TAIL_LINES);
        if lines.is_empty() {
            return;
        }
        complain(format_args!("last lines of {}:", self.plan.log_path().display()));
        for line in lines {
            complain(format_args!("  | {line}"));
        }
    }

    /// Removes the node's `haven.pid` if it still names this (exited and reaped) process: a
    /// node removes it on a clean exit, not when it is killed. A node restarted by hand has
    /// written its own pid there, which stays.
    fn remove_stale_pid_file(&self) {
        let path = self.plan.pid_path();
        if self.child.is_none() && read_pid(&path) == Some(self.pid) {
            let _ = fs::remove_file(&path);
        }
    }

    /// Fails if the node has exited.
    fn check_alive(&mut self) -> anyhow::Result<()> {
        let Some(child) = self.child.as_mut() else {
            bail!("node {} is not running", self.plan.name());
        };
        match child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => {
                self.child = None;
                self.remove_stale_pid_file();
                Err(self.exited_early(status))
            }
            Err(error) => Err(anyhow!("cannot check on node {} (pid {}): {error}", self.plan.name(), self.pid)),
        }
    }
}

/// Starts `haven serve --config DIR/nN/haven.toml` with its output appended to its log.
///
/// Must be called from the task `run` runs in: `block_on` runs it on the main thread, which
/// lives as long as the process, and PR_SET_PDEATHSIG fires when the thread that forked the
/// child exits, not only when the process does.
fn spawn_node(exe: &Path, plan: &NodePlan) -> anyhow::Result<RunningNode> {
    let log_path = plan.log_path();
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let log_start = log.metadata().map(|metadata| metadata.len()).unwrap_or(0);
    let log_for_stderr = log.try_clone().with_context(|| format!("cannot open {}", log_path.display()))?;
    let mut command = Command::new(exe);
    command
        .arg("serve")
        .arg("--config")
        .arg(plan.config_path())
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_for_stderr)
        .kill_on_drop(true);
    let parent = libc::pid_t::try_from(std::process::id()).unwrap_or(0);
    // SAFETY: the hook only makes async-signal-safe system calls and does not allocate.
    unsafe {
        command.pre_exec(move || prepare_child(parent));
    }
    let child = command.spawn().with_context(|| format!("cannot start node {} ({})", plan.name(), exe.display()))?;
    let pid = child.id().unwrap_or(0);
    Ok(RunningNode { plan: plan.clone(), child: Some(child), pid, log_start })
}

/// Runs in the child between fork and exec.
fn prepare_child(parent: libc::pid_t) -> io::Result<()> {
    // Own process group: Ctrl-C in the terminal reaches only `haven dev`, which then stops the
    // nodes itself.
    // SAFETY: plain system calls without pointers.
    if unsafe { libc::setpgid(0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    #[cfg(target_os = "linux")]
    {
        // Die with `haven dev`, even when it is killed with SIGKILL.
        // SAFETY: as above.
        if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // `haven dev` may have died before the prctl took effect.
        // SAFETY: as above.
        if unsafe { libc::getppid() } != parent {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = parent;
    Ok(())
}

/// SIGINT, SIGTERM and SIGHUP: each asks `haven dev` to stop the cluster.
struct StopSignals {
    interrupt: Signal,
    terminate: Signal,
    hangup: Signal,
}

impl StopSignals {
    fn new() -> anyhow::Result<StopSignals> {
        let install = |kind: SignalKind| signal(kind).context("cannot install signal handlers");
        Ok(StopSignals {
            interrupt: install(SignalKind::interrupt())?,
            terminate: install(SignalKind::terminate())?,
            hangup: install(SignalKind::hangup())?,
        })
    }

    /// Waits for the next stop signal and names it.
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "interrupted",
            _ = self.terminate.recv() => "terminated",
            _ = self.hangup.recv() => "hung up",
        }
    }
}

/// Starts the cluster and waits until every node is a healthy voter; returns the checker
/// for the running cluster and the leader.
async fn start_cluster(
    exe: &Path,
    plans: &[NodePlan],
    fingerprints: &[String],
    running: &mut Vec<RunningNode>,
) -> anyhow::Result<(Checker, Option<u64>)> {
    let Some(first) = plans.first() else {
        bail!("internal: no nodes planned");
    };
    // A node told it was removed or recovered away refuses to start: say which, and why.
    if let Some((plan, why)) = plans.iter().find_map(|plan| expelled_advice(plan).map(|why| (plan, why))) {
        bail!("node {} is no longer a member of this cluster: {why}", plan.name());
    }
    // Nodes that have served before (a node writes addr.json once it has bound its ports)
    // have most likely joined already.
    let others_ran_before = plans[1..].iter().any(|plan| plan.addr_path().exists());
    running.push(spawn_node(exe, first)?);
    let started = Instant::now();
    let deadline = started + START_TIMEOUT;
    wait_bound(&mut running[0], deadline).await?;
    let token = wait_admin_token(&mut running[0], deadline, others_ran_before).await?;
    let checker = Checker::new(plans, fingerprints, token)?;

    // Healthy on its own: a new (or one-node) cluster. Reports other members: an existing
    // cluster, which needs a majority of its nodes up before n1 can be healthy.
    let existing = loop {
        running[0].check_alive()?;
        if checker.healthy(first).await {
            break false;
        }
        if let Some(view) = checker.view(first).await? {
            if view.members.len() > 1 {
                break true;
            }
        }
        if others_ran_before && started.elapsed() >= EXISTING_CLUSTER_GRACE {
            break true;
        }
        if Instant::now() >= deadline {
            return Err(running[0].too_slow("did not become healthy"));
        }
        sleep(POLL_INTERVAL).await;
    };

    if existing {
        for plan in &plans[1..] {
            running.push(spawn_node(exe, plan)?);
        }
        let deadline = Instant::now() + START_TIMEOUT;
        for node in running.iter_mut().skip(1) {
            wait_bound(node, deadline).await?;
        }
    } else {
        // One at a time: each joins through n1 and becomes a voter before the next joins.
        for plan in &plans[1..] {
            running.push(spawn_node(exe, plan)?);
            let deadline = Instant::now() + START_TIMEOUT;
            let index = running.len() - 1;
            wait_bound(&mut running[index], deadline).await?;
            loop {
                running[index].check_alive()?;
                let view = checker.view(first).await?;
                if view.is_some_and(|view| view.is_voter(plan.id)) {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(running[index].too_slow("did not become a voter"));
                }
                sleep(POLL_INTERVAL).await;
            }
        }
    }
    let leader = wait_formed(&checker, running).await?;
    Ok((checker, leader))
}

/// Waits until the node has bound its ports (its `addr.json` names its pid).
async fn wait_bound(node: &mut RunningNode, deadline: Instant) -> anyhow::Result<()> {
    loop {
        node.check_alive()?;
        let addr_file = fs::read_to_string(node.plan.addr_path()).ok();
        let written_pid = addr_file
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
            .and_then(|value| value.get("pid").and_then(serde_json::Value::as_u64));
        if written_pid == Some(u64::from(node.pid)) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(node.too_slow("did not start serving"));
        }
        sleep(POLL_INTERVAL).await;
    }
}

/// Waits until n1 has written the cluster's first admin token (once it leads a new
/// cluster; at once when the file is there from an earlier run) and returns it.
/// `ran_before`: the cluster has run before, so n1 will not write the file again.
async fn wait_admin_token(node: &mut RunningNode, deadline: Instant, ran_before: bool) -> anyhow::Result<String> {
    let path = node.plan.admin_token_path();
    loop {
        node.check_alive()?;
        match fs::read_to_string(&path) {
            Ok(text) if !text.trim().is_empty() => return Ok(text.trim().to_string()),
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => bail!("cannot read {} ({error})", path.display()),
        }
        if Instant::now() >= deadline {
            let error = node.too_slow(&format!("did not write {}", path.display()));
            if !ran_before {
                return Err(error);
            }
            bail!(
                "{error}; n1 writes it only when it starts a new cluster: if it was removed, put a \
                 valid admin token back into it, or remove {} to start over",
                node.plan.data_dir.parent().unwrap_or(&node.plan.data_dir).display()
            );
        }
        sleep(POLL_INTERVAL).await;
    }
}

/// Waits until there is a leader, every node is a voter and every node is healthy.
async fn wait_formed(checker: &Checker, running: &mut [RunningNode]) -> anyhow::Result<Option<u64>> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        for node in running.iter_mut() {
            node.check_alive()?;
        }
        let problem = formation_problem(checker, running).await?;
        let Some((index, problem)) = problem else {
            let view = checker.view(&running[0].plan).await?;
            return Ok(view.and_then(|view| view.leader));
        };
        if Instant::now() >= deadline {
            return Err(running[index].too_slow(&problem));
        }
        sleep(POLL_INTERVAL).await;
    }
}

/// What still keeps the cluster from being formed, and the node it concerns.
async fn formation_problem(checker: &Checker, running: &[RunningNode]) -> anyhow::Result<Option<(usize, String)>> {
    let view = checker.view(&running[0].plan).await?;
    let Some(view) = view.filter(|view| view.leader.is_some()) else {
        return Ok(Some((0, "saw no leader elected".to_string())));
    };
    for (index, node) in running.iter().enumerate() {
        if !view.is_voter(node.plan.id) {
            return Ok(Some((index, "did not become a voter".to_string())));
        }
        if !checker.healthy(&node.plan).await {
            return Ok(Some((index, "did not become healthy".to_string())));
        }
    }
    Ok(None)
}

/// Runs until a stop signal, reporting nodes that exit and leader changes; returns the
/// signal's name.
async fn supervise(
    checker: &Checker,
    running: &mut [RunningNode],
    signals: &mut StopSignals,
    leader: Option<u64>,
) -> &'static str {
    enum Event {
        Stop(&'static str),
        Exited(usize, io::Result<ExitStatus>),
        Tick,
    }
    let mut last_leader = leader;
    let mut ticker = tokio::time::interval(LEADER_WATCH_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let event = {
            let mut exits: FuturesUnordered<_> = running
                .iter_mut()
                .enumerate()
                .filter_map(|(index, node)| {
                    let child = node.child.as_mut()?;
                    Some(async move { (index, child.wait().await) })
                })
                .collect();
            tokio::select! {
                name = signals.recv() => Event::Stop(name),
                Some((index, status)) = exits.next() => Event::Exited(index, status),
                _ = ticker.tick() => Event::Tick,
            }
        };
        match event {
            Event::Stop(name) => return name,
            Event::Exited(index, status) => {
                let node = &mut running[index];
                node.child = None;
                node.remove_stale_pid_file();
                let status = match status {
                    Ok(status) => status.to_string(),
                    Err(error) => format!("an unknown status ({error})"),
                };
                match expelled_advice(&node.plan) {
                    // Removed or recovered away: restarting it as it is would be refused (and
                    // must never serve the old cluster): no restart hint.
                    Some(why) => {
                        say(format_args!("node {} (pid {}) exited with {status}: {why}", node.plan.name(), node.pid))
                    }
                    None => say(format_args!(
                        "node {} (pid {}) exited with {status}; the others keep running; restart it \
                         with: haven serve --config {}",
                        node.plan.name(),
                        node.pid,
                        node.plan.config_path().display()
                    )),
                }
            }
            Event::Tick => {
                let live = running.iter().filter(|node| node.child.is_some()).map(|node| &node.plan);
                let Some(view) = checker.any_view(live).await else {
                    continue;
                };
                if view.leader != last_leader {
                    match view.leader {
                        Some(id) => say(format_args!("leader is now n{id}")),
                        None => say("no leader right now (an election is under way, or fewer than a \
                             majority of the voters are running)"),
                    }
                    last_leader = view.leader;
                }
            }
        }
    }
}

/// Why `node` must not be started again as it is, if a member told it that it was removed
/// or recovered away (its `expelled.json`), with how to bring it back in a dev cluster.
fn expelled_advice(node: &NodePlan) -> Option<String> {
    let expulsion = haven_server::expelled_record(&node.data_dir)?;
    let way_back = if node.id == 1 {
        // n1 bootstraps a dev cluster: emptied, it would start a new cluster, not rejoin.
        format!(
            "n1 bootstraps this dev cluster, so it cannot rejoin it; remove {} to start a new dev cluster",
            node.data_dir.parent().unwrap_or(&node.data_dir).display()
        )
    } else {
        format!(
            "to bring {} back as a new member, delete everything in {} except haven.toml and run `haven dev` again (it \
             joins through n1)",
            node.name(),
            node.data_dir.display()
        )
    };
    Some(format!("{}. It is not restarted; {way_back}", expulsion.message))
}

/// Sends SIGTERM to every running node, waits up to STOP_TIMEOUT for them, then kills the
/// stragglers (at once on a second stop signal).
async fn stop_all(running: &mut [RunningNode], signals: &mut StopSignals) {
    for node in running.iter_mut() {
        let Some(child) = node.child.as_mut() else {
            continue;
        };
        // Reaped children have no id; a child not yet waited for keeps its pid.
        if let Some(pid) = child.id().and_then(|pid| libc::pid_t::try_from(pid).ok()) {
            // SAFETY: signals our own, not yet reaped, child.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    let all_stopped = async {
        for node in running.iter_mut() {
            if let Some(child) = node.child.as_mut() {
                let _ = timeout_at(deadline, child.wait()).await;
            }
        }
    };
    tokio::select! {
        () = all_stopped => {}
        name = signals.recv() => say(format_args!("{name} again: killing the nodes")),
    }
    for node in running.iter_mut() {
        let Some(mut child) = node.child.take() else {
            continue;
        };
        if !matches!(child.try_wait(), Ok(Some(_))) {
            say(format_args!("node {} (pid {}) did not stop in time; killing it", node.plan.name(), node.pid));
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
        node.remove_stale_pid_file();
    }
}

/// Mentions nodes of this cluster still running outside `haven dev` (restarted by hand).
fn report_nodes_run_by_hand(plans: &[NodePlan], running: &[RunningNode]) {
    for plan in plans {
        let Some(pid) = read_pid(&plan.pid_path()) else {
            continue;
        };
        let ours = running.iter().any(|node| node.pid == pid);
        if !ours && process_alive(pid) {
            say(format_args!(
                "node {} is still running as pid {pid} (started outside haven dev); stop it \
                 with: kill {pid}",
                plan.name()
            ));
        }
    }
}

/// What to do with the running cluster.
fn usage(dir: &Path, running: &[RunningNode], leader: Option<u64>) -> String {
    let mut text = format!("\nhaven dev: {} node(s) running\n", running.len());
    for node in running {
        let role = if Some(node.plan.id) == leader { "  (leader)" } else { "" };
        text.push_str(&format!(
            "  {}  {}  pid {}  log {}{role}\n",
            node.plan.name(),
            node.plan.client_url(),
            node.pid,
            node.plan.log_path().display()
        ));
    }
    let leader_id = leader.unwrap_or(1);
    let (restart, failover) = match (running.first(), running.get(1)) {
        (_, Some(second)) => (second, "the leader; watch another node take over"),
        (Some(only), None) => (only, "the only node: the cluster is down until it is restarted"),
        (None, None) => return text,
    };
    text.push_str(&format!(
        "\nIn another shell:\n\
         \x20 source {env}   # HAVEN_ENDPOINTS, HAVEN_SERVER_FINGERPRINTS, HAVEN_TOKEN_FILE, PATH\n\
         \x20 haven status\n\
         \x20 haven kv put greeting hello\n\
         \x20 haven kv get greeting\n\
         \x20 kill -9 $(cat {pid})   # {failover}\n\
         Restart a stopped node by hand, e.g.:\n\
         \x20 haven serve --config {config}\n\
         The env file pins the nodes' TLS keys and names the admin token {token} (keep it \
         private).\n\
         Ctrl-C here stops the cluster; `haven dev --dir {dir}` restarts it with its data.\n",
        env = shell_word(&dir.join("env").to_string_lossy()),
        token = shell_word(&dir.join("n1").join(haven_server::auth::ADMIN_TOKEN_FILE).to_string_lossy()),
        pid = shell_word(&dir.join(format!("n{leader_id}/haven.pid")).to_string_lossy()),
        config = shell_word(&restart.plan.config_path().to_string_lossy()),
        dir = shell_word(&dir.to_string_lossy()),
    ));
    text
}

fn say(message: impl Display) {
    let _ = writeln!(io::stdout(), "{message}");
}

fn complain(message: impl Display) {
    let _ = writeln!(io::stderr(), "{message}");
}

// ---------------------------------------------------------------------------------------
// Status and health checks
// ---------------------------------------------------------------------------------------

/// The parts of `GET /v1/status` that `haven dev` uses.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ClusterView {
    leader: Option<u64>,
    /// (id, voter)
    members: Vec<(u64, bool)>,
}

impl ClusterView {
    fn is_voter(&self, id: u64) -> bool {
        self.members.iter().any(|(member, voter)| *member == id && *voter)
    }
}

impl From<&haven_client::Status> for ClusterView {
    fn from(status: &haven_client::Status) -> Self {
        ClusterView {
            leader: status.leader,
            members: status.members.iter().map(|member| (member.id, member.voter)).collect(),
        }
    }
}

/// Asks single nodes of the dev cluster about their state, over TLS with every node's key
/// pinned, presenting the admin token.
struct Checker {
    client: haven_client::Client,
    /// Where the token came from, for the error when a node refuses it.
    token_path: PathBuf,
    /// n1's data dir, where a break-glass token waits to be registered.
    first_data_dir: PathBuf,
}

impl Checker {
    /// `fingerprints` are the nodes' keys; `token` is n1's admin token (never printed).
    fn new(plans: &[NodePlan], fingerprints: &[String], token: String) -> anyhow::Result<Checker> {
        let Some(first) = plans.first() else {
            bail!("internal: no nodes planned");
        };
        let token_path = first.admin_token_path();
        let mut config = haven_client::ClientConfig::new(plans.iter().map(NodePlan::client_url).collect());
        config.server_fingerprints = fingerprints.to_vec();
        config.token = Some(token);
        config.request_timeout = CHECK_TIMEOUT;
        config.deadline = CHECK_TIMEOUT;
        config.max_attempts = 1;
        let client = haven_client::Client::new(config).map_err(|error| {
            anyhow!("cannot set up the checks of the dev cluster ({error}); is {} intact?", token_path.display())
        })?;
        Ok(Checker { client, token_path, first_data_dir: first.data_dir.clone() })
    }

    /// Whether `node` answers `GET /v1/health` with 200.
    async fn healthy(&self, node: &NodePlan) -> bool {
        matches!(self.client.health(&node.client_url()).await, Ok(true))
    }

    /// The cluster as `node` sees it; `None` while it does not answer. Fails when the node
    /// refuses the admin token: waiting would not help.
    async fn view(&self, node: &NodePlan) -> anyhow::Result<Option<ClusterView>> {
        match self.client.status_of(&node.client_url()).await {
            Ok(status) => Ok(Some(ClusterView::from(&status))),
            // A break-glass token waits for the cluster to register it (at n1's start).
            Err(haven_client::Error::Api { status: 401, .. })
                if !haven_server::break_glass::pending(&self.first_data_dir).is_empty() =>
            {
                Ok(None)
            }
            Err(haven_client::Error::Api { status: status @ (401 | 403), .. }) => bail!(
                "node {} refused the admin token in {} ({status}); was it revoked or replaced? Put a \
                 valid admin token into that file, or remove {} to start over",
                node.name(),
                self.token_path.display(),
                node.data_dir.parent().unwrap_or(&node.data_dir).display()
            ),
            Err(_) => Ok(None),
        }
    }

    /// The cluster as the first of `nodes` that answers sees it.
    async fn any_view(&self, nodes: impl IntoIterator<Item = &NodePlan>) -> Option<ClusterView> {
        for node in nodes {
            if let Ok(Some(view)) = self.view(node).await {
                return Some(view);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three_nodes() -> Vec<NodePlan> {
        plan_new(Path::new("/tmp/hd"), 3, &[7001, 7101, 7002, 7102, 7003, 7103]).unwrap()
    }

    /// A well-formed fingerprint per node.
    fn fingerprint(id: u64) -> String {
        format!("sha256:{}", format!("{id:x}").repeat(64))
    }

    fn fingerprints(count: u64) -> Vec<String> {
        (1..=count).map(fingerprint).collect()
    }

    #[test]
    fn node_counts() {
        for good in ["1", "3", "5", "7"] {
            assert!(parse_nodes(good).is_ok(), "{good}");
        }
        for bad in ["0", "2", "4", "6", "9", "-1", "three", ""] {
            let error = parse_nodes(bad).unwrap_err();
            assert!(error.contains("must be 1, 3, 5 or 7"), "{bad}: {error}");
        }
        // Each refusal names the rule it breaks (issue 14: "7 is not odd").
        assert!(parse_nodes("9").unwrap_err().contains("at most 7 voters"));
        assert!(parse_nodes("4").unwrap_err().contains("odd number"));
        assert!(parse_nodes("0").unwrap_err().contains("at least one node"));
    }

    #[test]
    fn node_count_follows_the_dir() {
        let dir = Path::new("/tmp/hd");
        assert_eq!(resolve_node_count(dir, None, None).unwrap(), 3);
        assert_eq!(resolve_node_count(dir, Some(5), None).unwrap(), 5);
        assert_eq!(resolve_node_count(dir, None, Some(1)).unwrap(), 1);
        assert_eq!(resolve_node_count(dir, Some(5), Some(5)).unwrap(), 5);
        let error = resolve_node_count(dir, Some(3), Some(5)).unwrap_err().to_string();
        assert!(error.contains("holds a 5-node cluster, not 3"), "{error}");
        assert!(error.contains("remove /tmp/hd"), "{error}");
    }

    #[test]
    fn plans_assign_ports_and_dirs() {
        let plans = three_nodes();
        assert_eq!(plans.len(), 3);
        assert_eq!(plans[1].id, 2);
        assert_eq!(plans[1].data_dir, Path::new("/tmp/hd/n2"));
        assert_eq!(plans[1].client_addr, "127.0.0.1:7002".parse().unwrap());
        assert_eq!(plans[1].peer_addr, "127.0.0.1:7102".parse().unwrap());
        assert_eq!(plans[1].client_url(), "https://127.0.0.1:7002");
        assert_eq!(plans[0].admin_token_path(), Path::new("/tmp/hd/n1/admin.token"));
        assert_eq!(plans[1].config_path(), Path::new("/tmp/hd/n2/haven.toml"));
        assert!(plan_new(Path::new("/tmp/hd"), 3, &[1, 2]).is_err());
    }

    #[test]
    fn first_node_bootstraps_and_others_join_it() {
        let plans = three_nodes();
        let n1 = render_config(&plans[0], &plans[0], &fingerprint(1)).unwrap();
        let table: toml::Table = toml::from_str(&n1).unwrap();
        assert_eq!(table["node_id"].as_integer(), Some(1));
        assert_eq!(table["data_dir"].as_str(), Some("/tmp/hd/n1"));
        assert_eq!(table["client_addr"].as_str(), Some("127.0.0.1:7001"));
        assert_eq!(table["peer_addr"].as_str(), Some("127.0.0.1:7101"));
        assert_eq!(table["bootstrap"].as_bool(), Some(true));
        assert!(!table.contains_key("join"));
        assert_eq!(table.len(), 5);

        let n2 = render_config(&plans[1], &plans[0], &fingerprint(1)).unwrap();
        let table: toml::Table = toml::from_str(&n2).unwrap();
        assert_eq!(table["node_id"].as_integer(), Some(2));
        assert_eq!(table["join"].as_str(), Some("https://127.0.0.1:7001"));
        assert_eq!(table["join_fingerprint"].as_str(), Some(fingerprint(1).as_str()));
        assert_eq!(table["join_token_file"].as_str(), Some("/tmp/hd/n1/admin.token"));
        assert!(!table.contains_key("bootstrap"));
        assert_eq!(table.len(), 7);
    }

    #[test]
    fn the_server_accepts_the_configs() {
        let plans = three_nodes();
        for plan in &plans {
            let text = render_config(plan, &plans[0], &fingerprint(1)).unwrap();
            let config = haven_core::config::NodeConfigFile::parse(&text).unwrap().validate().unwrap();
            assert_eq!(config.bootstrap, plan.id == 1);
            assert!(!config.insecure_dev);
            if plan.id == 1 {
                assert_eq!(config.join, None);
            } else {
                assert_eq!(config.join.as_deref(), Some("https://127.0.0.1:7001"));
                assert_eq!(config.join_fingerprint, Some(fingerprint(1)));
                assert_eq!(config.join_token_file.as_deref(), Some(Path::new("/tmp/hd/n1/admin.token")));
            }
        }
    }

    #[test]
    fn configs_read_back_as_written() {
        let plans = three_nodes();
        for plan in &plans {
            let text = render_config(plan, &plans[0], &fingerprint(1)).unwrap();
            assert_eq!(parse_config(&text, plan.id, &plan.data_dir).unwrap(), *plan);
        }
        let odd = NodePlan { data_dir: PathBuf::from("/tmp/a \"quoted\" \\ dir/n1"), ..plans[0].clone() };
        let text = render_config(&odd, &odd, &fingerprint(1)).unwrap();
        assert_eq!(parse_config(&text, 1, &odd.data_dir).unwrap(), odd);
        let odd_second = NodePlan { id: 2, data_dir: PathBuf::from("/tmp/a \"quoted\" \\ dir/n2"), ..plans[1].clone() };
        let text = render_config(&odd_second, &odd, &fingerprint(1)).unwrap();
        assert_eq!(parse_config(&text, 2, &odd_second.data_dir).unwrap(), odd_second);
        let table: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(table["join_token_file"].as_str(), Some("/tmp/a \"quoted\" \\ dir/n1/admin.token"));
    }

    #[test]
    fn bad_configs_are_explained() {
        let dir = Path::new("/tmp/hd/n2");
        let good = "node_id = 2\ndata_dir = \"/tmp/hd/n2\"\nclient_addr = \"127.0.0.1:1\"\n\
                    peer_addr = \"127.0.0.1:2\"\nsome_later_key = true\n";
        assert!(parse_config(good, 2, dir).is_ok());
        let cases = [
            ("node_id = ", "not valid TOML"),
            ("data_dir = \"/tmp/hd/n2\"", "has no node_id"),
            (&good.replace("node_id = 2", "node_id = 3"), "node_id = 3, expected 2"),
            (&good.replace("/tmp/hd/n2", "/elsewhere/n2"), "was the directory moved"),
            (&good.replace("127.0.0.1:1", "localhost"), "not an IP:PORT"),
            (&good.replace("peer_addr", "peer"), "has no peer_addr"),
        ];
        for (text, expected) in cases {
            let error = parse_config(text, 2, dir).unwrap_err();
            assert!(error.contains(expected), "{text:?}: {error}");
        }
    }

    #[test]
    fn node_dirs_must_be_n1_to_n_of_an_allowed_size() {
        let dir = Path::new("/tmp/hd");
        let names = |list: &[&str]| list.iter().map(|name| name.to_string()).collect::<Vec<_>>();
        assert_eq!(node_ids_in(dir, &names(&["n1"])).unwrap(), 1);
        assert_eq!(node_ids_in(dir, &names(&["n3", "n1", "n2", "notes"])).unwrap(), 3);
        let error = node_ids_in(dir, &names(&["n1", "n2"])).unwrap_err().to_string();
        assert!(error.contains("n1, n2 (2 node(s))"), "{error}");
        assert!(node_ids_in(dir, &names(&["n1", "n2", "n4"])).is_err());
    }

    #[test]
    fn existing_cluster_is_read_back() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path();
        assert_eq!(read_existing(dir).unwrap(), None);
        let ports = pick_free_ports(6).unwrap();
        let mut distinct = ports.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), 6);
        let plans = plan_new(dir, 3, &ports).unwrap();
        write_configs(&plans, &fingerprint(1)).unwrap();
        assert_eq!(read_existing(dir).unwrap(), Some(plans));
        fs::remove_file(dir.join("n3/haven.toml")).unwrap();
        assert!(read_existing(dir).is_err());
    }

    #[test]
    fn env_file_exports_endpoints_keys_token_file_and_path() {
        let plans = three_nodes();
        let text = render_env(&env_vars(&plans, &fingerprints(3)), Path::new("/opt/it's/bin"));
        let lines: Vec<&str> = text.lines().filter(|line| !line.starts_with('#')).collect();
        let expected_fingerprints =
            format!("export HAVEN_SERVER_FINGERPRINTS='{},{},{}'", fingerprint(1), fingerprint(2), fingerprint(3));
        assert_eq!(
            lines,
            [
                "export HAVEN_ENDPOINTS='https://127.0.0.1:7001,https://127.0.0.1:7002,https://127.0.0.1:7003'",
                expected_fingerprints.as_str(),
                "export HAVEN_TOKEN_FILE='/tmp/hd/n1/admin.token'",
                "export HAVEN_CLI_STATE='/tmp/hd/cli-state.json'",
                r#"export PATH='/opt/it'\''s/bin'":$PATH""#,
            ]
        );
    }

    #[test]
    fn env_file_is_private() {
        let temp = tempfile::tempdir().unwrap();
        let plans = plan_new(temp.path(), 1, &[7001, 7101]).unwrap();
        write_env_file(temp.path(), &plans, &fingerprints(1), Path::new("/usr/bin/haven")).unwrap();
        let metadata = fs::metadata(temp.path().join("env")).unwrap();
        assert_eq!(metadata.permissions().mode() & 0o777, 0o600);
        let text = fs::read_to_string(temp.path().join("env")).unwrap();
        assert!(text.contains("export HAVEN_ENDPOINTS='https://127.0.0.1:7001'\n"), "{text}");
    }

    #[test]
    fn keys_are_made_once_and_kept() {
        let temp = tempfile::tempdir().unwrap();
        let plans = plan_new(temp.path(), 3, &[7001, 7101, 7002, 7102, 7003, 7103]).unwrap();
        let first = load_or_generate_keys(&plans).unwrap();
        assert_eq!(first.len(), 3);
        for (plan, fingerprint) in plans.iter().zip(&first) {
            assert_eq!(haven_core::config::parse_fingerprint(fingerprint).as_ref(), Some(fingerprint));
            let mode = fs::metadata(plan.data_dir.join("node.key")).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            assert!(plan.data_dir.join("node.crt").is_file());
        }
        let mut distinct = first.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), 3);
        assert_eq!(load_or_generate_keys(&plans).unwrap(), first);
    }

    #[test]
    fn second_lock_is_refused_with_the_holders_pid() {
        let temp = tempfile::tempdir().unwrap();
        let held = DirLock::acquire(temp.path()).unwrap();
        let error = DirLock::acquire(temp.path()).err().unwrap().to_string();
        let expected = format!("is in use by another haven dev (pid {})", std::process::id());
        assert!(error.contains(&expected), "{error}");
        drop(held);
        assert!(DirLock::acquire(temp.path()).is_ok());
    }

    #[test]
    fn status_becomes_a_view() {
        let body = r#"{"cluster_id": "c1", "node_id": 1, "view_of": 1, "leader": 2, "term": 3,
            "commit_index": 9, "applied_index": 9, "revision": 4, "voters": 2, "members": [
            {"id": 1, "client_url": "https://127.0.0.1:7001", "peer_addr": "127.0.0.1:7101",
             "voter": true, "reachable": true},
            {"id": 2, "client_url": "https://127.0.0.1:7002", "peer_addr": "127.0.0.1:7102", "voter": true},
            {"id": 3, "client_url": "https://127.0.0.1:7003", "peer_addr": "127.0.0.1:7103", "voter": false}]}"#;
        let status: haven_client::Status = serde_json::from_str(body).unwrap();
        let view = ClusterView::from(&status);
        assert_eq!(view.leader, Some(2));
        assert_eq!(view.members, [(1, true), (2, true), (3, false)]);
        assert!(view.is_voter(2));
        assert!(!view.is_voter(3));
        assert!(!view.is_voter(4));
        let status = haven_client::Status { leader: None, members: Vec::new(), ..status };
        let view = ClusterView::from(&status);
        assert_eq!(view.leader, None);
        assert!(!view.is_voter(1));
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(shell_quote("plain"), "'plain'");
        assert_eq!(shell_quote("a'b"), r"'a'\''b'");
        assert_eq!(shell_quote("$HOME `x`"), "'$HOME `x`'");
        assert_eq!(shell_word("/tmp/haven-dev/n1/haven.toml"), "/tmp/haven-dev/n1/haven.toml");
        assert_eq!(shell_word("/tmp/my dir/env"), "'/tmp/my dir/env'");
        assert_eq!(shell_word(""), "''");
    }
}
