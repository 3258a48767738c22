//! Three-member clusters of etcd or Haven as child processes on 127.0.0.1.
//!
//! Every member runs from a data dir inside one temporary directory (under the system temp
//! dir, so both systems write to the same disk). Children die with the benchmark: each
//! [`Member`] SIGCONTs and SIGKILLs its process when dropped (also while unwinding from a
//! panic), and each child gets `PR_SET_PDEATHSIG` so even a `kill -9` of the benchmark
//! takes its clusters down. Members are spawned only from the main task, which runs on the
//! process's main thread (the death signal follows the spawning *thread*).

use std::path::Path;
use std::path::PathBuf;
use std::process::Child;
use std::process::Command;
use std::process::Stdio;
use std::time::Duration;
use std::time::Instant;

use anyhow::bail;
use anyhow::Context;

use crate::api;
use crate::api::Connection;

/// Members per cluster.
pub const MEMBERS: usize = 3;

/// A cluster must form (or re-form after a fault) within this long; generous, the machine
/// is shared.
pub const FORM_TIMEOUT: Duration = Duration::from_secs(60);

/// Status and health queries get this long per answer.
const CONTROL_TIMEOUT: Duration = Duration::from_millis(1000);

/// Pause between polls while waiting for a condition.
const POLL_PAUSE: Duration = Duration::from_millis(50);

/// Lines of a member's log shown when it fails.
const LOG_TAIL_LINES: usize = 30;

/// Where a bootstrapping Haven node writes the cluster's first admin token, in builds that
/// authenticate clients.
const HAVEN_ADMIN_TOKEN_FILE: &str = "admin.token";

/// Timeouts given to etcd; `None` keeps etcd's defaults (heartbeat 100 ms, election 1000 ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EtcdTimings {
    pub heartbeat_ms: u64,
    pub election_ms: u64,
}

/// Haven's defaults expressed as etcd flags: its shortest election timeout (failed pings x
/// interval) as etcd's election timeout, and its ping interval as the heartbeat, lowered
/// where needed to the fifth of the election timeout that etcd insists on.
pub const HAVEN_TIMINGS: EtcdTimings = {
    let ping = haven_core::config::PING_INTERVAL_MS_DEFAULT;
    let election = ping * haven_core::config::FAILED_PINGS_DEFAULT;
    let heartbeat = if ping * ETCD_ELECTION_PER_HEARTBEAT_MIN > election {
        election / ETCD_ELECTION_PER_HEARTBEAT_MIN
    } else {
        ping
    };
    EtcdTimings { heartbeat_ms: heartbeat, election_ms: election }
};

/// etcd refuses an election timeout shorter than five heartbeats.
const ETCD_ELECTION_PER_HEARTBEAT_MIN: u64 = 5;

/// Which system a cluster runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    Etcd(Option<EtcdTimings>),
    Haven,
}

/// One member process and how to start it again.
pub struct Member {
    pub name: String,
    pub client_url: String,
    pub data_dir: PathBuf,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log_path: PathBuf,
    child: Option<Child>,
    /// The id the member reports about itself in status answers.
    pub id: u64,
}

impl Member {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .with_context(|| format!("cannot open {}", self.log_path.display()))?;
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            use std::os::unix::process::CommandExt as _;
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().with_context(|| format!("cannot start {}", self.program.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// Sends `signal` to the running process.
    pub fn signal(&self, signal: i32) {
        if let Some(pid) = self.pid() {
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe { libc::kill(pid as i32, signal) };
        }
    }

    /// `kill -9` and reap (SIGCONT first: a stopped process is reaped only once it runs).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: as above.
            unsafe { libc::kill(child.id() as i32, libc::SIGCONT) };
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The last lines of the member's log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }

    fn exited(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => !matches!(child.try_wait(), Ok(None)),
            None => true,
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running three-member cluster. Dropping it kills every member and removes the data.
pub struct Cluster {
    pub system: System,
    pub members: Vec<Member>,
    /// For status and health queries.
    pub control: Connection,
    /// Base URLs of the members' client ports.
    pub client_urls: Vec<String>,
    /// Haven's admin token, for builds that require one.
    pub haven_token: Option<String>,
    // Declared last: dropped after the members, so processes are gone before the files.
    dir: tempfile::TempDir,
}

impl Cluster {
    /// Keeps the data dirs and logs after the cluster is dropped (for debugging a run);
    /// returns where they are.
    pub fn keep_files(&mut self) -> PathBuf {
        self.dir.disable_cleanup(true);
        self.dir.path().to_path_buf()
    }
}

/// Picks `count` distinct free TCP ports on 127.0.0.1 (all bound at once so they differ;
/// released right before the members bind them).
fn free_ports(count: usize) -> anyhow::Result<Vec<u16>> {
    let listeners: Vec<std::net::TcpListener> =
        (0..count).map(|_| std::net::TcpListener::bind("127.0.0.1:0")).collect::<Result<_, _>>()?;
    Ok(listeners.iter().map(|l| l.local_addr().map(|a| a.port())).collect::<Result<_, _>>()?)
}

impl Cluster {
    /// Starts three etcd members (`etcd` from PATH) and waits until they agree on a leader.
    pub async fn start_etcd(timings: Option<EtcdTimings>) -> anyhow::Result<Cluster> {
        let dir = tempfile::Builder::new().prefix("haven-bench-etcd-").tempdir()?;
        let ports = free_ports(2 * MEMBERS)?;
        let peer_url = |i: usize| format!("http://127.0.0.1:{}", ports[2 * i + 1]);
        let initial_cluster = (0..MEMBERS).map(|i| format!("m{}={}", i + 1, peer_url(i))).collect::<Vec<_>>().join(",");
        let mut members = Vec::new();
        for i in 0..MEMBERS {
            let name = format!("m{}", i + 1);
            let client_url = format!("http://127.0.0.1:{}", ports[2 * i]);
            let data_dir = dir.path().join(&name);
            let mut args = vec![
                format!("--name={name}"),
                format!("--data-dir={}", data_dir.display()),
                format!("--listen-client-urls={client_url}"),
                format!("--advertise-client-urls={client_url}"),
                format!("--listen-peer-urls={}", peer_url(i)),
                format!("--initial-advertise-peer-urls={}", peer_url(i)),
                format!("--initial-cluster={initial_cluster}"),
                "--initial-cluster-state=new".into(),
                "--initial-cluster-token=haven-bench".into(),
            ];
            if let Some(t) = timings {
                args.push(format!("--heartbeat-interval={}", t.heartbeat_ms));
                args.push(format!("--election-timeout={}", t.election_ms));
            }
            members.push(Member {
                log_path: dir.path().join(format!("{name}.log")),
                name,
                client_url,
                data_dir,
                program: PathBuf::from("etcd"),
                args,
                env: Vec::new(),
                child: None,
                id: 0,
            });
        }
        for member in &mut members {
            member.spawn()?;
        }
        let client_urls: Vec<String> = members.iter().map(|m| m.client_url.clone()).collect();
        // The gateway prefix is known only once a member answers.
        let deadline = Instant::now() + FORM_TIMEOUT;
        let prefix = loop {
            if let Some(prefix) = api::probe_etcd_prefix(&client_urls[0]).await {
                break prefix;
            }
            if Instant::now() > deadline || members.iter_mut().any(Member::exited) {
                bail!("etcd did not start:\n{}", members[0].log_tail());
            }
            tokio::time::sleep(POLL_PAUSE).await;
        };
        let control = api::etcd_connection(&client_urls, &prefix, MEMBERS, CONTROL_TIMEOUT)?;
        let mut cluster =
            Cluster { system: System::Etcd(timings), members, control, client_urls, haven_token: None, dir };
        cluster.learn_ids(deadline).await?;
        cluster.wait_healthy(FORM_TIMEOUT).await?;
        Ok(cluster)
    }

    /// Starts three Haven nodes: node 1 bootstraps, nodes 2 and 3 join through it; waits
    /// until all three are voters and agree on a leader.
    /// `extra_args` go to every node (experiments only; the report records the command).
    pub async fn start_haven(binary: &Path, extra_args: &[String]) -> anyhow::Result<Cluster> {
        let dir = tempfile::Builder::new().prefix("haven-bench-haven-").tempdir()?;
        let ports = free_ports(2 * MEMBERS)?;
        let client_url = |i: usize| format!("http://127.0.0.1:{}", ports[2 * i]);
        let plaintext = haven_plaintext_args(binary);
        let mut members = Vec::new();
        for i in 0..MEMBERS {
            let id = i as u64 + 1;
            let name = format!("n{id}");
            let data_dir = dir.path().join(&name);
            let mut args = vec![
                "serve".to_string(),
                format!("--node-id={id}"),
                format!("--data-dir={}", data_dir.display()),
                format!("--client-addr=127.0.0.1:{}", ports[2 * i]),
                format!("--peer-addr=127.0.0.1:{}", ports[2 * i + 1]),
            ];
            // Both are ignored once the data dir is initialised, so restarts reuse them.
            args.push(if i == 0 { "--bootstrap".to_string() } else { format!("--join={}", client_url(0)) });
            args.extend(plaintext.iter().cloned());
            args.extend(extra_args.iter().cloned());
            members.push(Member {
                log_path: dir.path().join(format!("{name}.log")),
                name,
                client_url: client_url(i),
                data_dir,
                program: binary.to_path_buf(),
                args,
                env: vec![("HAVEN_LOG".into(), "info,openraft=warn".into())],
                child: None,
                id,
            });
        }
        let client_urls: Vec<String> = members.iter().map(|m| m.client_url.clone()).collect();
        let control = api::haven_connection(&client_urls, None, MEMBERS, CONTROL_TIMEOUT)?;
        let mut cluster = Cluster { system: System::Haven, members, control, client_urls, haven_token: None, dir };
        // A new cluster is created only on a data dir prepared by `haven init` (builds from
        // before that step have no such command and bootstrap on the flag alone).
        let init = std::process::Command::new(binary)
            .arg("init")
            .arg("--node-id=1")
            .arg(format!("--data-dir={}", cluster.members[0].data_dir.display()))
            .output()?;
        if !init.status.success() {
            eprintln!("haven init did not run (an older build?): {}", String::from_utf8_lossy(&init.stderr).trim());
        }
        cluster.members[0].spawn()?;
        cluster.wait_bound(0).await?;
        let token_path = cluster.members[0].data_dir.join(HAVEN_ADMIN_TOKEN_FILE);
        let deadline = Instant::now() + FORM_TIMEOUT;
        while cluster.control.status(0).await.and_then(|s| s.leader) != Some(1) {
            if cluster.haven_token.is_none() {
                if let Some(token) = std::fs::read_to_string(&token_path).ok().filter(|t| !t.trim().is_empty()) {
                    let token = token.trim().to_string();
                    cluster.control =
                        api::haven_connection(&cluster.client_urls, Some(&token), MEMBERS, CONTROL_TIMEOUT)?;
                    cluster.haven_token = Some(token);
                }
            }
            cluster.check_deadline(deadline, "node 1 to lead")?;
            tokio::time::sleep(POLL_PAUSE).await;
        }
        if cluster.haven_token.is_some() && haven_serve_help(binary).contains("--join-token-file") {
            for member in &mut cluster.members[1..] {
                member.args.push(format!("--join-token-file={}", token_path.display()));
            }
        }
        for index in 1..MEMBERS {
            cluster.members[index].spawn()?;
            cluster.wait_bound(index).await?;
        }
        let deadline = Instant::now() + FORM_TIMEOUT;
        while cluster.control.status(0).await.and_then(|s| s.voters) != Some(MEMBERS as u64) {
            cluster.check_deadline(deadline, "all nodes to be voters")?;
            tokio::time::sleep(POLL_PAUSE).await;
        }
        cluster.wait_healthy(FORM_TIMEOUT).await?;
        Ok(cluster)
    }

    /// Waits for a Haven node's `addr.json` written by its current process.
    async fn wait_bound(&mut self, index: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + FORM_TIMEOUT;
        let path = self.members[index].data_dir.join("addr.json");
        loop {
            let pid = self.members[index].pid().map(u64::from);
            let written = std::fs::read_to_string(&path)
                .ok()
                .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
                .and_then(|addr| addr.get("pid").and_then(serde_json::Value::as_u64));
            if written.is_some() && written == pid {
                return Ok(());
            }
            self.check_deadline(deadline, "a node to bind its ports")?;
            tokio::time::sleep(POLL_PAUSE).await;
        }
    }

    /// Records each etcd member's own id (Haven's are the node ids given at start).
    async fn learn_ids(&mut self, deadline: Instant) -> anyhow::Result<()> {
        for index in 0..MEMBERS {
            loop {
                if let Some(status) = self.control.status(index).await {
                    self.members[index].id = status.self_id;
                    break;
                }
                self.check_deadline(deadline, "every member to report its id")?;
                tokio::time::sleep(POLL_PAUSE).await;
            }
        }
        Ok(())
    }

    /// Fails with the logs of exited members, or after `deadline`.
    fn check_deadline(&mut self, deadline: Instant, what: &str) -> anyhow::Result<()> {
        let dead: Vec<usize> =
            (0..self.members.len()).filter(|i| self.members[*i].child.is_some() && self.members[*i].exited()).collect();
        if let Some(index) = dead.first() {
            let member = &self.members[*index];
            bail!("{} exited while waiting for {what}:\n{}", member.name, member.log_tail());
        }
        if Instant::now() > deadline {
            let logs: Vec<String> =
                self.members.iter().map(|m| format!("---- {} ----\n{}", m.name, m.log_tail())).collect();
            bail!("timed out waiting for {what}\n{}", logs.join("\n"));
        }
        Ok(())
    }

    /// The leader's member index when every running member answers, all name the same
    /// leader, and that leader is a running member.
    pub async fn agreed_leader(&self) -> Option<usize> {
        let mut agreed = None;
        for index in (0..self.members.len()).filter(|i| self.members[*i].is_running()) {
            let leader = self.control.status(index).await?.leader?;
            if agreed.is_some_and(|id| id != leader) {
                return None;
            }
            agreed = Some(leader);
        }
        let position = self.members.iter().position(|m| Some(m.id) == agreed)?;
        self.members[position].is_running().then_some(position)
    }

    /// The leader as the running members other than `excluded` see it (used while the old
    /// leader is stopped and cannot answer).
    pub async fn leader_among_others(&self, excluded: usize) -> Option<usize> {
        for index in (0..self.members.len()).filter(|i| *i != excluded && self.members[*i].is_running()) {
            if let Some(leader) = self.control.status(index).await.and_then(|s| s.leader) {
                let position = self.members.iter().position(|m| m.id == leader)?;
                if position != excluded {
                    return Some(position);
                }
            }
        }
        None
    }

    /// Waits until every member runs, says it is healthy, and all agree on one leader.
    pub async fn wait_healthy(&mut self, timeout: Duration) -> anyhow::Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(leader) = self.agreed_leader().await {
                let mut healthy = true;
                for index in 0..self.members.len() {
                    healthy &= self.members[index].is_running() && self.control.healthy(index).await;
                }
                if healthy {
                    return Ok(leader);
                }
            }
            self.check_deadline(deadline, "a healthy cluster")?;
            tokio::time::sleep(POLL_PAUSE).await;
        }
    }

    /// How the Haven nodes were set up beyond their ids, addresses and data dirs, for the
    /// report (empty for etcd).
    pub fn haven_setup(&self) -> String {
        if self.system != System::Haven {
            return String::new();
        }
        let flags: Vec<&str> = self.members[0]
            .args
            .iter()
            .map(String::as_str)
            .filter(|arg| {
                !["serve", "--bootstrap"].contains(arg)
                    && !["--node-id=", "--data-dir=", "--client-addr=", "--peer-addr="]
                        .iter()
                        .any(|p| arg.starts_with(p))
            })
            .collect();
        let mut text = if flags.is_empty() {
            "no flags beyond ids, addresses and data dirs (plain HTTP)".to_string()
        } else {
            format!("flags beyond ids, addresses and data dirs: `{}`", flags.join(" "))
        };
        if flags.contains(&"--insecure-dev") {
            text.push_str(" (plain HTTP on loopback, like the etcd members; no TLS on either side)");
        }
        if self.haven_token.is_some() {
            text.push_str("; every request carries the bootstrap admin token as `Authorization: Bearer`");
        }
        text
    }

    /// Starts a killed member again on its data dir and ports.
    pub async fn restart(&mut self, index: usize) -> anyhow::Result<()> {
        self.members[index].kill();
        self.members[index].spawn()?;
        if self.system == System::Haven {
            self.wait_bound(index).await?;
        }
        Ok(())
    }
}

/// Flags that make a Haven node serve plain HTTP on loopback like the etcd members do:
/// `--insecure-dev` where the binary has it (builds with TLS on the client port), nothing
/// for builds that serve plain HTTP anyway.
pub fn haven_plaintext_args(binary: &Path) -> Vec<String> {
    if haven_serve_help(binary).contains("--insecure-dev") {
        vec!["--insecure-dev".into()]
    } else {
        Vec::new()
    }
}

/// `haven serve --help`, to see which flags this build has.
fn haven_serve_help(binary: &Path) -> String {
    Command::new(binary)
        .args(["serve", "--help"])
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .unwrap_or_default()
}

/// Finds `etcd` on PATH; installs Debian's `etcd-server` package when it is missing
/// (running `apt-get update` first if the plain install fails).
pub fn ensure_etcd() -> anyhow::Result<()> {
    if on_path("etcd") {
        return Ok(());
    }
    eprintln!("etcd not found on PATH: installing Debian's etcd-server package");
    let install = || Command::new("apt-get").args(["install", "-y", "etcd-server"]).status();
    if !install().map(|s| s.success()).unwrap_or(false) {
        let updated = Command::new("apt-get").arg("update").status().map(|s| s.success()).unwrap_or(false);
        if !updated || !install().map(|s| s.success()).unwrap_or(false) {
            bail!("could not install etcd-server with apt-get (needs root and network); install etcd and retry");
        }
    }
    if !on_path("etcd") {
        bail!("etcd-server is installed but `etcd` is not on PATH");
    }
    Ok(())
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false)
}

/// `etcd --version`'s first line, e.g. `etcd Version: 3.4.23`.
pub fn etcd_version() -> String {
    Command::new("etcd")
        .arg("--version")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.lines().next().map(|line| line.trim().to_string()))
        .unwrap_or_else(|| "unknown".into())
}

/// The bare version number out of [`etcd_version`]'s line.
pub fn etcd_version_number(line: &str) -> String {
    line.rsplit(' ').next().unwrap_or(line).to_string()
}

/// Processes named `etcd` that are not ours (e.g. a system service the package started):
/// they would compete for the CPU, so the benchmark warns about them.
pub fn foreign_etcd_pids() -> Vec<u32> {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // Field 4 of /proc/PID/stat (after "pid (comm) state") is the parent pid.
            let parent = stat.rsplit(')').next().and_then(|rest| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
            comm.trim() == "etcd" && parent != Some(me)
        })
        .collect()
}
