//! Network namespaces: one per node, a full mesh of veth links between them, and one
//! client link per node from the harness (root namespace) that is never cut.
//!
//! ```text
//!   root namespace (harness, clients)
//!      │ c0: 10.77.R.{1,2}/30     │ c0: 10.77.R.{5,6}/30     │ c0: 10.77.R.{9,10}/30
//!   ┌──┴───────┐   m2 ── m1   ┌──┴───────┐   m3 ── m2   ┌──┴───────┐
//!   │ ns n1    │──────────────│ ns n2    │──────────────│ ns n3    │
//!   └──────────┘              └──────────┘              └──────────┘
//!        └───────────────── m3 ── m1 (10.77.R.64+/30 per link) ────┘
//! ```
//!
//! Every address lives on a veth inside this machine; the only root-namespace addresses
//! are the harness ends of the client links. Nodes listen on `0.0.0.0` inside their own
//! namespace. Node `i`'s peers reach it at `0.0.0.0:PEER_PORT_i`, which inside namespace `j`
//! is the loopback, where the harness runs the link proxy `j → i` (see `proxy.rs`); the
//! proxy forwards over the veth `m<i>` of namespace `j`. A partition sets veths down.
//!
//! Names carry the harness's pid, so a sweep at start removes namespaces whose harness is
//! gone, and [`Namespaces`]'s `Drop` removes its own even when the run fails.

use std::fs::File;
use std::net::Ipv4Addr;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::os::fd::FromRawFd;
use std::os::fd::OwnedFd;
use std::process::Command;
use std::sync::atomic::AtomicU32;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context;

use crate::config::NODES;

/// Every namespace this harness creates starts with this; the sweep removes stale ones.
pub const NETNS_PREFIX: &str = "hvnem-";

/// Port of node `i`'s HTTP API inside its namespace (free: nothing else lives there).
pub fn client_port(node: usize) -> u16 {
    7200 + node as u16
}

/// Port of node `i`'s peer listener inside its namespace; in every other node's namespace
/// the link proxy towards node `i` listens on the same port on the loopback.
pub fn peer_port(node: usize) -> u16 {
    7100 + node as u16
}

/// Distinguishes several harness runs inside one process (cargo runs tests in threads).
static RUN_COUNTER: AtomicU32 = AtomicU32::new(0);

/// Whether this process may create network namespaces (root, and `ip netns` works).
pub fn available() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    root && Command::new("ip").args(["netns", "list"]).output().is_ok_and(|out| out.status.success())
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("ip").args(args).output().with_context(|| format!("cannot run ip {}", args.join(" ")))?;
    anyhow::ensure!(
        output.status.success(),
        "ip {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}

fn ip_output(args: &[&str]) -> String {
    Command::new("ip")
        .args(args)
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .unwrap_or_default()
}

/// Whether the process exists and is not a zombie (a killed harness whose parent has not
/// reaped it yet is gone for our purposes).
fn pid_alive(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the command name, which is in parentheses and may hold spaces.
    let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
    !matches!(state, Some("Z") | Some("X") | None)
}

/// Kills every process inside `name` and deletes it.
fn remove_namespace(name: &str) {
    for pid in ip_output(&["netns", "pids", name]).split_whitespace() {
        if let Ok(pid) = pid.parse::<i32>() {
            // SAFETY: plain signals to processes living in our own test namespace.
            unsafe {
                libc::kill(pid, libc::SIGCONT);
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
    let _ = ip(&["netns", "del", name]);
}

/// Removes namespaces left behind by harness processes that no longer exist. Returns their
/// names.
pub fn sweep_stale() -> Vec<String> {
    let mut swept = Vec::new();
    for line in ip_output(&["netns", "list"]).lines() {
        let Some(name) = line.split_whitespace().next() else { continue };
        let Some(rest) = name.strip_prefix(NETNS_PREFIX) else { continue };
        let owner = rest.split('-').next().and_then(|pid| pid.parse::<i32>().ok());
        if owner.is_some_and(pid_alive) {
            continue;
        }
        remove_namespace(name);
        swept.push(name.to_string());
    }
    swept
}

/// The namespaces, links and addresses of one run.
#[derive(Debug)]
pub struct Namespaces {
    names: Vec<String>,
    /// Harness ends of the client links, deleted explicitly in case a namespace outlives us.
    root_links: Vec<String>,
    /// Third octet of every address of this run.
    subnet: u8,
}

/// Index of the mesh link between nodes `a` and `b` (0-based, `a != b`).
fn mesh_index(a: usize, b: usize) -> usize {
    let (low, high) = (a.min(b), a.max(b));
    // Pairs (0,1), (0,2), (1,2), ... in order.
    (0..low).map(|i| NODES - 1 - i).sum::<usize>() + (high - low - 1)
}

impl Namespaces {
    /// Creates one namespace per node with the client links and the full mesh.
    pub fn create() -> anyhow::Result<Namespaces> {
        let pid = std::process::id();
        let run = RUN_COUNTER.fetch_add(1, Ordering::Relaxed);
        let subnet = pick_subnet(pid, run)?;
        let mut namespaces = Namespaces { names: Vec::new(), root_links: Vec::new(), subnet };
        // From here on, Drop cleans up whatever was created if a step fails.
        for node in 0..NODES {
            let name = format!("{NETNS_PREFIX}{pid}-{run}-n{}", node + 1);
            ip(&["netns", "add", &name])?;
            namespaces.names.push(name.clone());
            ip(&["-n", &name, "link", "set", "lo", "up"])?;
            // Interface names are at most 15 bytes.
            let root_link = format!("hn{}r{run}c{}", pid % 100_000, node + 1);
            ip(&["link", "add", &root_link, "type", "veth", "peer", "name", "c0", "netns", &name])?;
            namespaces.root_links.push(root_link.clone());
            ip(&["addr", "add", &format!("{}/30", namespaces.client_root_ip(node)), "dev", &root_link])?;
            ip(&["link", "set", &root_link, "up"])?;
            ip(&["-n", &name, "addr", "add", &format!("{}/30", namespaces.client_ip(node)), "dev", "c0"])?;
            ip(&["-n", &name, "link", "set", "c0", "up"])?;
        }
        for a in 0..NODES {
            for b in a + 1..NODES {
                let (name_a, name_b) = (namespaces.names[a].clone(), namespaces.names[b].clone());
                let (link_a, link_b) = (mesh_link_name(b), mesh_link_name(a));
                ip(&[
                    "link", "add", &link_a, "netns", &name_a, "type", "veth", "peer", "name", &link_b, "netns", &name_b,
                ])?;
                ip(&["-n", &name_a, "addr", "add", &format!("{}/30", namespaces.mesh_ip(a, b)), "dev", &link_a])?;
                ip(&["-n", &name_b, "addr", "add", &format!("{}/30", namespaces.mesh_ip(b, a)), "dev", &link_b])?;
                ip(&["-n", &name_a, "link", "set", &link_a, "up"])?;
                ip(&["-n", &name_b, "link", "set", &link_b, "up"])?;
            }
        }
        Ok(namespaces)
    }

    pub fn name(&self, node: usize) -> &str {
        &self.names[node]
    }

    /// Node `node`'s address on its client link (where the harness reaches it).
    pub fn client_ip(&self, node: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.subnet, (4 * node + 2) as u8)
    }

    fn client_root_ip(&self, node: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.subnet, (4 * node + 1) as u8)
    }

    /// Node `node`'s address on the mesh link towards `other`.
    pub fn mesh_ip(&self, node: usize, other: usize) -> Ipv4Addr {
        let base = 64 + 4 * mesh_index(node, other);
        let end = if node < other { 1 } else { 2 };
        Ipv4Addr::new(10, 77, self.subnet, (base + end) as u8)
    }

    /// The HTTPS URL of node `node` as the harness (root namespace) reaches it.
    pub fn client_url(&self, node: usize) -> String {
        format!("https://{}:{}", self.client_ip(node), client_port(node))
    }

    /// Where, inside namespace `from`, the proxy towards `to` connects: `to`'s peer port on
    /// its end of their mesh link.
    pub fn peer_target(&self, from: usize, to: usize) -> SocketAddr {
        SocketAddr::new(self.mesh_ip(to, from).into(), peer_port(to))
    }

    /// Sets the mesh link between `a` and `b` down (both ends) or up.
    pub fn set_link(&self, a: usize, b: usize, up: bool) -> anyhow::Result<()> {
        let state = if up { "up" } else { "down" };
        ip(&["-n", &self.names[a], "link", "set", &mesh_link_name(b), state])?;
        ip(&["-n", &self.names[b], "link", "set", &mesh_link_name(a), state])
    }

    /// A thread that lives inside node `node`'s namespace and makes sockets there.
    pub fn handle(&self, node: usize) -> anyhow::Result<NamespaceHandle> {
        let path = format!("/run/netns/{}", self.names[node]);
        let file = File::open(&path).with_context(|| format!("cannot open {path}"))?;
        let (jobs, receiver) = std::sync::mpsc::channel::<Job>();
        let (entered, entered_result) = std::sync::mpsc::channel();
        std::thread::Builder::new().name(format!("nemesis-netns-n{}", node + 1)).spawn(move || {
            // SAFETY: setns on a valid namespace fd affects only this thread, which from here
            // on only creates sockets for the proxies.
            let result = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            let ok = result == 0;
            let _ = entered.send(if ok { Ok(()) } else { Err(std::io::Error::last_os_error()) });
            if ok {
                while let Ok(job) = receiver.recv() {
                    job();
                }
            }
        })?;
        entered_result.recv().map_err(|_| anyhow::anyhow!("the namespace thread vanished"))??;
        Ok(NamespaceHandle { jobs: Arc::new(Mutex::new(jobs)) })
    }
}

fn mesh_link_name(other: usize) -> String {
    format!("m{}", other + 1)
}

/// Picks a third octet for 10.77.x.0/24 that no root-namespace address uses yet (other
/// harness runs on this machine use their own).
fn pick_subnet(pid: u32, run: u32) -> anyhow::Result<u8> {
    let used = ip_output(&["-4", "-o", "addr", "show"]);
    let start = (pid.wrapping_mul(7).wrapping_add(run)) % 250;
    for step in 0..250 {
        let octet = ((start + step) % 250 + 1) as u8;
        if !used.contains(&format!("10.77.{octet}.")) {
            return Ok(octet);
        }
    }
    anyhow::bail!("every 10.77.x.0/24 is in use on this machine")
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in &self.names {
            remove_namespace(name);
        }
        for link in &self.root_links {
            // Usually gone with its peer; an error here only means it already is.
            let _ = Command::new("ip").args(["link", "del", link]).output();
        }
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// A thread inside a namespace: sockets keep the namespace they were created in, so what
/// it creates connects and listens there, while the async work stays on ordinary threads.
/// The thread ends when the last handle is dropped.
#[derive(Debug, Clone)]
pub struct NamespaceHandle {
    jobs: Arc<Mutex<std::sync::mpsc::Sender<Job>>>,
}

impl NamespaceHandle {
    /// Runs `work` on the namespace's thread.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
    ) -> std::io::Result<T> {
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = done.send(work());
        });
        self.jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(job)
            .map_err(|_| std::io::Error::other("the namespace thread has stopped"))?;
        result.await.map_err(|_| std::io::Error::other("the namespace thread dropped a job"))?
    }

    /// A listening socket inside the namespace (on the calling runtime).
    pub async fn listen(&self, addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
        let listener = self
            .run(move || {
                let listener = std::net::TcpListener::bind(addr)?;
                listener.set_nonblocking(true)?;
                Ok(listener)
            })
            .await?;
        tokio::net::TcpListener::from_std(listener)
    }

    /// A connection made from inside the namespace. Only the socket is made on the
    /// namespace's thread; the connect itself is asynchronous.
    pub async fn connect(&self, addr: SocketAddr, timeout: Duration) -> std::io::Result<tokio::net::TcpStream> {
        let socket = self
            .run(|| {
                // SAFETY: socket(2) with constant arguments; the result is checked below.
                let fd = unsafe {
                    libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0)
                };
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // SAFETY: `fd` is a fresh socket that nothing else owns.
                Ok(unsafe { OwnedFd::from_raw_fd(fd) })
            })
            .await?;
        let socket = tokio::net::TcpSocket::from_std_stream(std::net::TcpStream::from(socket));
        socket.set_nodelay(true)?;
        tokio::time::timeout(timeout, socket.connect(addr))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, format!("connect to {addr} timed out")))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mesh_links_are_numbered_once_per_pair() {
        let mut seen = std::collections::BTreeSet::new();
        for a in 0..NODES {
            for b in 0..NODES {
                if a != b {
                    assert_eq!(mesh_index(a, b), mesh_index(b, a));
                    seen.insert(mesh_index(a, b));
                }
            }
        }
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), (0..NODES * (NODES - 1) / 2).collect::<Vec<_>>());
    }
}
