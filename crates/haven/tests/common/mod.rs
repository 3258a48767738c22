//! Real `haven` processes on 127.0.0.1 for multi-process tests.
//!
//! Each node binds port 0 the first time and reports its ports in `addr.json`; restarts
//! reuse them (the cluster's membership records the addresses). Children are killed when
//! the cluster is dropped, and cluster tests in one binary run one at a time (`serial`).

#![allow(dead_code)]

use std::path::Path;
use std::path::PathBuf;
use std::process::Child;
use std::process::Command;
use std::process::ExitStatus;
use std::process::Stdio;
use std::sync::Mutex;
use std::sync::MutexGuard;
use std::time::Duration;
use std::time::Instant;

use serde_json::json;
use serde_json::Value;

/// A new leader must appear within this long (generous: these machines are shared).
pub const LEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest any single test waits for a condition.
pub const CONDITION_TIMEOUT: Duration = Duration::from_secs(30);

static SERIAL: Mutex<()> = Mutex::new(());

/// Runs cluster tests of one test binary one at a time.
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The `haven` binary under test: this build's, or the one `HAVEN_TEST_BINARY` names (to
/// show that a test fails on an older build, as every test of a bug fix must).
pub fn haven_binary() -> PathBuf {
    std::env::var_os("HAVEN_TEST_BINARY").map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_haven")), PathBuf::from)
}

pub struct TestNode {
    pub id: u64,
    pub data_dir: PathBuf,
    pub client_url: String,
    pub client_addr: String,
    pub peer_addr: String,
    pub extra_args: Vec<String>,
    child: Option<Child>,
}

impl TestNode {
    /// A node on `data_dir` that binds port 0 the first time it starts.
    fn unstarted(id: u64, data_dir: PathBuf, extra_args: Vec<String>) -> TestNode {
        TestNode {
            id,
            data_dir,
            client_url: String::new(),
            client_addr: "127.0.0.1:0".into(),
            peer_addr: "127.0.0.1:0".into(),
            extra_args,
            child: None,
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|child| child.id())
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The exit code of the node's process once it has exited by itself (`None` while it
    /// runs or when it was never started or was killed by the harness).
    pub fn exit_code(&mut self) -> Option<i32> {
        self.child.as_mut().and_then(|child| child.try_wait().ok().flatten()).and_then(|status| status.code())
    }

    pub fn log_path(&self) -> PathBuf {
        self.data_dir.with_extension("log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

pub struct TestCluster {
    pub dir: tempfile::TempDir,
    pub nodes: Vec<TestNode>,
    pub common_args: Vec<String>,
    /// Every node's key fingerprint (keys are generated before the nodes start), trusted by
    /// the harness's clients.
    pub pins: haven_tls::PinSet,
    /// The bootstrap admin token (node 1's `admin.token`).
    pub admin_token: String,
}

impl TestCluster {
    /// A cluster of no nodes yet, in a fresh temp dir.
    fn empty(common_args: &[&str]) -> TestCluster {
        TestCluster {
            dir: tempfile::tempdir().expect("temp dir"),
            nodes: Vec::new(),
            common_args: common_args.iter().map(|s| s.to_string()).collect(),
            pins: haven_tls::PinSet::default(),
            admin_token: String::new(),
        }
    }

    /// Generates the node key in `data_dir` (for 127.0.0.1) before the node starts, and
    /// trusts it (a dir that holds a key already, a copy of another node's, keeps it).
    fn generate_trusted_key(&mut self, data_dir: &std::path::Path) {
        let loopback = [std::net::IpAddr::from([127, 0, 0, 1])];
        let (key, _) = haven_tls::NodeIdentityKey::load_or_generate(data_dir, &loopback).expect("node key");
        self.pins.insert(key.fingerprint().to_string());
    }

    /// Starts `count` nodes: node 1 bootstraps, the others join through it and become
    /// voters. `common_args` are given to every node (e.g. a small snapshot threshold).
    pub fn start(count: u64, common_args: &[&str]) -> TestCluster {
        TestCluster::start_with(count, common_args, &[])
    }

    /// [`TestCluster::start`], giving `node_args[i]` to node `i + 1` besides the common
    /// arguments (e.g. a test hook for one node).
    pub fn start_with(count: u64, common_args: &[&str], node_args: &[&[&str]]) -> TestCluster {
        let own = |id: u64| node_args.get(id as usize - 1).copied().unwrap_or_default();
        let mut cluster = TestCluster::empty(common_args);
        init_node(&cluster.dir.path().join("n1"), 1);
        let first: Vec<&str> = ["--bootstrap"].iter().chain(own(1)).copied().collect();
        cluster.add_node(1, &first);
        let token_path = cluster.nodes[0].data_dir.join("admin.token");
        cluster.wait_for(CONDITION_TIMEOUT, "node 1 to write admin.token", |_| token_path.exists());
        cluster.admin_token = std::fs::read_to_string(&token_path).expect("admin.token").trim().to_string();
        cluster.wait_for(CONDITION_TIMEOUT, "node 1 to lead", |c| c.leader_of(0) == Some(1));
        for id in 2..=count {
            let join = cluster.join_args();
            let args: Vec<&str> = join.iter().map(String::as_str).chain(own(id).iter().copied()).collect();
            cluster.add_node(id, &args);
        }
        cluster.wait_for(CONDITION_TIMEOUT, "all nodes to be voters", |c| c.voter_count(0) == count as usize);
        cluster
    }

    /// Starts nodes on copies of existing data dirs (`(node id, dir)`, e.g. a fixture
    /// written by an older version): no bootstrap, no join; the admin token is the first
    /// dir's `admin.token`. Returns once every node has bound its ports.
    pub fn start_on(dirs: &[(u64, &std::path::Path)], common_args: &[&str]) -> TestCluster {
        let mut cluster = TestCluster::empty(common_args);
        for (id, source) in dirs {
            let data_dir = cluster.dir.path().join(format!("n{id}"));
            copy_dir(source, &data_dir);
            // A checkout does not keep the key's mode; a node keeps its key private.
            use std::os::unix::fs::PermissionsExt;
            let key = data_dir.join("node.key");
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("key mode");
            let identity = haven_tls::NodeIdentityKey::load(&data_dir).expect("key").expect("a node key");
            cluster.pins.insert(identity.fingerprint().to_string());
            if cluster.admin_token.is_empty() {
                let token = std::fs::read_to_string(data_dir.join("admin.token")).expect("admin.token");
                cluster.admin_token = token.trim().to_string();
            }
            let mut node = TestNode::unstarted(*id, data_dir, Vec::new());
            spawn(&mut node, &cluster.common_args);
            cluster.nodes.push(node);
        }
        cluster
    }

    /// The flags a new node needs to join through node 1: its URL, its key fingerprint and
    /// the admin token (as a file).
    pub fn join_args(&self) -> Vec<String> {
        let first = &self.nodes[0];
        let fingerprint = haven_tls::NodeIdentityKey::load(&first.data_dir).expect("key").expect("node 1 key");
        vec![
            format!("--join={}", first.client_url),
            format!("--join-fingerprint={}", fingerprint.fingerprint()),
            format!("--join-token-file={}", first.data_dir.join("admin.token").display()),
        ]
    }

    /// Starts a new node process with a fresh data dir and waits for its addr.json. Its key
    /// is generated first, so the harness trusts it from the start.
    pub fn add_node(&mut self, id: u64, args: &[&str]) -> usize {
        let data_dir = self.dir.path().join(format!("n{id}"));
        self.add_node_with_dir(id, data_dir, args)
    }

    /// Starts a node process as node `id` on `data_dir` (new, or a copy of another node's)
    /// with fresh ports, and waits for its addr.json. A key the dir lacks is generated first,
    /// so the harness trusts it from the start.
    pub fn add_node_with_dir(&mut self, id: u64, data_dir: PathBuf, args: &[&str]) -> usize {
        self.generate_trusted_key(&data_dir);
        let mut node = TestNode::unstarted(id, data_dir, args.iter().map(|s| s.to_string()).collect());
        spawn(&mut node, &self.common_args);
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    pub fn index_of(&self, id: u64) -> usize {
        self.nodes.iter().position(|node| node.id == id).expect("node id")
    }

    /// `kill -9` of the node at `index`.
    pub fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.nodes[index].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for a clean exit; returns the exit status.
    pub fn stop(&mut self, index: usize) -> Option<ExitStatus> {
        let mut child = self.nodes[index].child.take()?;
        terminate(&mut child)
    }

    pub fn signal(&self, index: usize, signal: i32) {
        if let Some(pid) = self.nodes[index].pid() {
            unsafe { libc::kill(pid as i32, signal) };
        }
    }

    /// Starts the node at `index` again on its data dir and addresses.
    pub fn restart(&mut self, index: usize) {
        self.kill(index);
        let common = self.common_args.clone();
        spawn(&mut self.nodes[index], &common);
    }

    pub fn endpoints(&self) -> String {
        self.nodes.iter().map(|node| node.client_url.clone()).collect::<Vec<_>>().join(",")
    }

    pub fn status(&self, index: usize) -> Option<Value> {
        self.get_json(&format!("{}/v1/status", self.nodes[index].client_url))
    }

    /// GET a JSON document over pinned TLS with the admin token; `None` on any failure.
    pub fn get_json(&self, url: &str) -> Option<Value> {
        serde_json::from_str(&https_get(url, &self.pins, Some(&self.admin_token))?).ok()
    }

    /// The leader as node `index` sees it.
    pub fn leader_of(&self, index: usize) -> Option<u64> {
        self.status(index)?.get("leader")?.as_u64()
    }

    pub fn voter_count(&self, index: usize) -> usize {
        self.status(index)
            .and_then(|status| status["members"].as_array().map(|m| m.iter().filter(|m| m["voter"] == true).count()))
            .unwrap_or(0)
    }

    /// The leader agreed on by every running node that answers, once there is one.
    pub fn wait_leader(&mut self, timeout: Duration) -> u64 {
        let mut leader = None;
        self.wait_for(timeout, "a leader all running nodes agree on", |cluster| {
            let views: Vec<Option<u64>> = (0..cluster.nodes.len())
                .filter(|i| cluster.nodes[*i].child.is_some())
                .map(|i| cluster.leader_of(i))
                .collect();
            let first = views.first().cloned().flatten();
            let agreed = first.is_some() && views.iter().all(|view| *view == first);
            // The leader must be one of the running nodes.
            let running = first.is_some_and(|id| cluster.nodes.iter().any(|n| n.id == id && n.child.is_some()));
            if agreed && running {
                leader = first;
            }
            agreed && running
        });
        leader.expect("leader")
    }

    /// Polls `condition` every 50 ms until it holds; panics with the nodes' logs after
    /// `timeout`.
    pub fn wait_for(&mut self, timeout: Duration, what: &str, mut condition: impl FnMut(&mut TestCluster) -> bool) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if condition(self) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.dump_logs();
        panic!("timed out after {timeout:?} waiting for {what}");
    }

    pub fn dump_logs(&self) {
        for node in &self.nodes {
            let log = node.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("---- node {} log (last 40 lines) ----", node.id);
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
    }

    /// A client for all nodes, trusting their keys, with the admin token.
    pub fn client(&self) -> haven_client::Client {
        self.client_for(&self.endpoints(), Some(&self.admin_token))
    }

    /// A client that talks only to the node at `index`.
    pub fn client_of(&self, index: usize) -> haven_client::Client {
        self.client_for(&self.nodes[index].client_url, Some(&self.admin_token))
    }

    /// A client for `endpoints` with `token` (or none).
    pub fn client_for(&self, endpoints: &str, token: Option<&str>) -> haven_client::Client {
        let mut config = haven_client::ClientConfig::from_endpoints_str(endpoints).expect("endpoints");
        config.server_fingerprints = self.pins.pins().into_iter().collect();
        config.token = token.map(str::to_string);
        haven_client::Client::new(config).expect("client")
    }

    /// Runs the `haven` CLI against this cluster (all endpoints, pinned keys, node 1's admin
    /// token file) with extra environment `env`.
    pub fn cli(&self, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
        self.cli_command(args, env).output().expect("run haven")
    }

    /// The command [`TestCluster::cli`] runs, to spawn it with other stdio.
    pub fn cli_command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let fingerprints: Vec<String> = self.pins.pins().into_iter().collect();
        let mut command = Command::new(haven_binary());
        command
            .args(args)
            .env("HAVEN_ENDPOINTS", self.endpoints())
            .env("HAVEN_SERVER_FINGERPRINTS", fingerprints.join(","))
            .env("HAVEN_TOKEN_FILE", self.nodes[0].data_dir.join("admin.token"))
            // The CLI's memory of this cluster, kept with the cluster (never the user's).
            .env("HAVEN_CLI_STATE", self.dir.path().join("cli-state.json"))
            .env_remove("HAVEN_TOKEN");
        for (name, value) in env {
            command.env(name, value);
        }
        command
    }

    /// Wipes the data dir of the (stopped) node at `index` and starts it again with `args`
    /// (for example the join flags; with `--bootstrap` it is `haven init`ed first): a new
    /// member with a new key, which the harness trusts.
    pub fn wipe_and_start(&mut self, index: usize, args: &[String]) {
        self.kill(index);
        let data_dir = self.nodes[index].data_dir.clone();
        let _ = std::fs::remove_dir_all(&data_dir);
        self.generate_trusted_key(&data_dir);
        if args.iter().any(|arg| arg == "--bootstrap") {
            // A wiped node starts a new cluster only once `haven init` prepared it (issue 13):
            // bootstrapping anew at its old address is an operator's deliberate act now.
            init_node(&data_dir, self.nodes[index].id);
        }
        self.nodes[index].extra_args = args.to_vec();
        self.restart(index);
    }

    /// A raw HTTP client (reqwest) that trusts the cluster's keys, for tests that send
    /// exactly the bytes they mean.
    pub fn http(&self) -> reqwest::Client {
        let tls = haven_tls::client_config(self.pins.clone(), None).expect("tls");
        reqwest::Client::builder().use_preconfigured_tls(tls).build().expect("http client")
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for index in 0..self.nodes.len() {
            // SIGCONT first: a stopped process cannot be reaped until it runs.
            self.signal(index, libc::SIGCONT);
            self.kill(index);
        }
    }
}

/// The `haven` binary under test as every test runs it: the harness's log filter, no stdin.
pub fn haven_command() -> Command {
    let mut command = Command::new(haven_binary());
    // The nodes log with the filter they ship with (what an operator's log holds); a CLI
    // run this way remembers nothing (never in the user's ~/.local/state).
    command.env_remove("HAVEN_LOG").env("HAVEN_CLI_STATE", "none").stdin(Stdio::null());
    command
}

/// Sends `command`'s stdout and stderr to the end of the file `log`.
pub fn log_to(command: &mut Command, log: &Path) {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("log file");
    command.stdout(log.try_clone().expect("log")).stderr(log);
}

/// `haven serve` for `node` with its data dir and addresses, as the harness starts it.
pub fn serve_command(node: &TestNode, common_args: &[String]) -> Command {
    let mut command = haven_command();
    command
        .arg("serve")
        .arg(format!("--node-id={}", node.id))
        .arg(format!("--data-dir={}", node.data_dir.display()))
        .arg(format!("--client-addr={}", node.client_addr))
        .arg(format!("--peer-addr={}", node.peer_addr))
        .args(common_args)
        .args(&node.extra_args);
    // Test hooks (`--unsafe-test-...`) need the confirmation; nothing else is changed by it.
    if node.extra_args.iter().chain(common_args).any(|arg| arg.starts_with("--unsafe-test")) {
        command.env("HAVEN_UNSAFE_TEST_MODE", "1");
    }
    command
}

/// Waits up to [`CONDITION_TIMEOUT`] for `condition`, failing with the log at `log` if
/// `child` exits first or the time runs out.
pub fn wait_until(what: &str, log: &Path, child: &mut Child, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + CONDITION_TIMEOUT;
    while !condition() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("exited ({status}) before {what}:\n{}", std::fs::read_to_string(log).unwrap_or_default());
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits at most `timeout` for `child` to exit; its status, or `None` while it still runs.
pub fn wait_exit_within(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGTERM, and the exit status once `child` exits (SIGKILL if it has not within
/// [`CONDITION_TIMEOUT`]).
pub fn terminate(child: &mut Child) -> Option<ExitStatus> {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    if let Some(status) = wait_exit_within(child, CONDITION_TIMEOUT) {
        return Some(status);
    }
    let _ = child.kill();
    child.wait().ok()
}

/// A child process stopped as [`terminate`] does when dropped, also when the test panics:
/// a failed test leaves no process behind (a `haven dev` left running holds its nodes).
pub struct StopOnDrop(pub Child);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        terminate(&mut self.0);
    }
}

fn spawn(node: &mut TestNode, common_args: &[String]) {
    let _ = std::fs::remove_file(node.data_dir.join("addr.json"));
    let mut command = serve_command(node, common_args);
    log_to(&mut command, &node.log_path());
    let child = command.spawn().expect("spawn haven");
    let pid = child.id();
    node.child = Some(child);
    // Wait for this process's addr.json, then pin the addresses for restarts.
    let deadline = Instant::now() + CONDITION_TIMEOUT;
    loop {
        if let Ok(text) = std::fs::read_to_string(node.data_dir.join("addr.json")) {
            if let Ok(addr) = serde_json::from_str::<Value>(&text) {
                if addr["pid"].as_u64() == Some(pid as u64) {
                    node.client_url = addr["client_url"].as_str().unwrap_or_default().to_string();
                    node.client_addr =
                        node.client_url.trim_start_matches("https://").trim_start_matches("http://").to_string();
                    node.peer_addr = addr["peer_addr"].as_str().unwrap_or_default().to_string();
                    return;
                }
            }
        }
        if !node.is_running() {
            panic!("node {} exited at start:\n{}", node.id, node.log());
        }
        assert!(Instant::now() < deadline, "node {} wrote no addr.json:\n{}", node.id, node.log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---- HTTP calls with the admin token (shared by the HA and restart tests) ---------------

/// One API call with `token` and a JSON body (or none); returns the status and the JSON
/// body (status 0 and `transport_error` when no answer came).
pub fn call_as(
    cluster: &TestCluster,
    index: usize,
    method: &str,
    path: &str,
    body: Option<Value>,
    token: &str,
) -> (u16, Value) {
    call_with(cluster, index, method, path, token, |request| match body {
        Some(body) => request.json(&body),
        None => request,
    })
}

/// [`call_as`] with a raw body (a KV value is sent as it is, not as JSON).
pub fn call_raw(
    cluster: &TestCluster,
    index: usize,
    method: &str,
    path: &str,
    body: &str,
    token: &str,
) -> (u16, Value) {
    let body = body.to_string();
    call_with(cluster, index, method, path, token, |request| request.body(body))
}

fn call_with(
    cluster: &TestCluster,
    index: usize,
    method: &str,
    path: &str,
    token: &str,
    with_body: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
) -> (u16, Value) {
    let http = cluster.http();
    let url = format!("{}{path}", cluster.nodes[index].client_url);
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let request = with_body(http.request(method, url).bearer_auth(token).timeout(Duration::from_secs(30)));
    block_on(async move {
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let body = response.json::<Value>().await.unwrap_or(Value::Null);
                (status, body)
            }
            Err(error) => (0, json!({ "transport_error": error.to_string() })),
        }
    })
}

pub fn call(cluster: &TestCluster, index: usize, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    call_as(cluster, index, method, path, body, &cluster.admin_token.clone())
}

/// Sets draft keys and applies them; returns the new version.
pub fn apply_config(cluster: &TestCluster, index: usize, set: Value) -> u64 {
    apply_draft(cluster, index, json!({ "set": set }))["version"].as_u64().expect("version")
}

/// Edits the draft with `edit` (`{"set": {...}, "unset": [...]}`) and applies it on the
/// version it was based on; returns the apply's answer.
pub fn apply_draft(cluster: &TestCluster, index: usize, edit: Value) -> Value {
    let (status, body) = call(cluster, index, "PUT", "/v1/config/draft", Some(edit));
    assert_eq!(status, 200, "draft edit: {body}");
    let base = body["draft"]["base_version"].as_u64().expect("base version");
    let (status, body) = call(cluster, index, "POST", "/v1/config/apply", Some(json!({ "base_version": base })));
    assert_eq!(status, 200, "apply: {body}");
    assert_eq!(body["applied"], true, "{body}");
    body
}

/// This machine's first global-scope IPv4 address (`ip -o -4 addr show scope global`).
pub fn own_network_address() -> Option<String> {
    let output =
        std::process::Command::new("ip").args(["-o", "-4", "addr", "show", "scope", "global"]).output().ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    let field = text.split_whitespace().skip_while(|word| *word != "inet").nth(1)?;
    field.split('/').next().map(str::to_string)
}

/// A blocking TLS connection to `addr` that trusts only `pins` (for tests that write and
/// read exactly the bytes they mean), reads bounded by `read_timeout`.
pub fn pinned_tls(
    addr: &str,
    pins: &haven_tls::PinSet,
    read_timeout: Duration,
) -> Result<rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>, String> {
    pinned_tls_from(None, addr, pins, read_timeout)
}

/// [`pinned_tls`] from the local address `source` (any of 127.0.0.0/8 reaches a node on
/// 127.0.0.1, so a test can open more connections than the per-source cap allows one
/// address), or the system's choice for `None`.
pub fn pinned_tls_from(
    source: Option<std::net::IpAddr>,
    addr: &str,
    pins: &haven_tls::PinSet,
    read_timeout: Duration,
) -> Result<rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>, String> {
    let addr: std::net::SocketAddr = addr.parse().map_err(|error| format!("address {addr}: {error}"))?;
    let connect = async {
        let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
        if let Some(source) = source {
            socket.bind(std::net::SocketAddr::new(source, 0))?;
        }
        let stream = socket.connect(addr).await?.into_std()?;
        stream.set_nonblocking(false)?;
        Ok::<_, std::io::Error>(stream)
    };
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_io().build().map_err(|error| error.to_string())?;
    let socket = runtime.block_on(connect).map_err(|error| format!("connect {addr} from {source:?}: {error}"))?;
    socket.set_read_timeout(Some(read_timeout)).map_err(|error| error.to_string())?;
    let config = std::sync::Arc::new(haven_tls::client_config(pins.clone(), None).map_err(|error| error.to_string())?);
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("server name");
    let connection = rustls::ClientConnection::new(config, name).map_err(|error| error.to_string())?;
    Ok(rustls::StreamOwned::new(connection, socket))
}

/// A minimal blocking HTTPS GET over pinned TLS (status checks must not depend on the
/// client under test); `None` on any failure.
pub fn https_get(url: &str, pins: &haven_tls::PinSet, token: Option<&str>) -> Option<String> {
    use std::io::Read;
    use std::io::Write;
    let rest = url.strip_prefix("https://")?;
    let (host, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}"))).unwrap_or((rest, "/".into()));
    let addr: std::net::SocketAddr = host.parse().ok()?;
    let mut socket = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    socket.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let config = std::sync::Arc::new(haven_tls::client_config(pins.clone(), None).ok()?);
    let name = rustls::pki_types::ServerName::try_from("localhost").ok()?;
    let mut connection = rustls::ClientConnection::new(config, name).ok()?;
    let mut tls = rustls::Stream::new(&mut connection, &mut socket);
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(tls, "GET {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n").ok()?;
    let mut response = Vec::new();
    // The server may close without close_notify; what arrived is complete (Connection: close).
    let _ = tls.read_to_end(&mut response);
    let response = String::from_utf8(response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        return Some(dechunk(body));
    }
    Some(body.to_string())
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else { break };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// Tears the cluster down from its primary (at `primary`) and waits until one of the
/// other nodes knows it was detached (generation 1); that node's index.
pub fn teardown_from(cluster: &mut TestCluster, primary: usize) -> usize {
    let (code, body) = call(cluster, primary, "POST", "/v1/teardown", Some(serde_json::json!({})));
    assert_eq!(code, 200, "{body}");
    let detached = (0..cluster.nodes.len()).find(|index| *index != primary).expect("a detached node");
    cluster.wait_for(CONDITION_TIMEOUT, "the node to know it is detached", |c| {
        c.status(detached).is_some_and(|s| s["detached"]["generation"] == 1)
    });
    detached
}

/// The audit records node `index` serves (the first page).
pub fn audit(cluster: &TestCluster, index: usize) -> Vec<Value> {
    let (status, body) = call(cluster, index, "GET", "/v1/audit", None);
    assert_eq!(status, 200, "audit: {body}");
    body["records"].as_array().cloned().unwrap_or_default()
}

/// `haven init`: prepares `data_dir` so node `id` starts a new cluster at its first start.
pub fn init_node(data_dir: &std::path::Path, id: u64) {
    let output = haven_command()
        .arg("init")
        .arg(format!("--node-id={id}"))
        .arg(format!("--data-dir={}", data_dir.display()))
        .output()
        .expect("run haven init");
    assert!(output.status.success(), "haven init: {}", String::from_utf8_lossy(&output.stderr));
}

/// Copies a (stopped) node's data dir, as a backup or a cloned VM would hold it.
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("create copy");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}

/// Runs a future to completion on a fresh runtime (tests are plain `#[test]`s so the
/// cluster's blocking helpers never block an async worker).
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(future)
}
