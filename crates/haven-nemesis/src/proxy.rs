//! Fault-injecting TCP proxies on every directed peer link (network-namespace mode).
//!
//! ```text
//!   ns j: node j ──▶ 0.0.0.0:PEER_PORT_i = loopback ──▶ proxy j→i ──veth m<i>──▶ ns i: node i
//!                                         bytes j→i: faults[j][i] │ bytes i→j: faults[i][j]
//! ```
//!
//! This kernel has no netem, so delay, loss and one-way faults are made here, at the TCP
//! level: a chunk is held back (delay), held for a retransmission timeout (loss; a TCP
//! connection never loses bytes, it stalls), or held until the fault heals (a blocked
//! direction, as TCP retransmitting into a black hole would). Now and then a lossy link
//! resets a connection. A full partition does not use the proxy: it sets the veth down,
//! so the kernel itself refuses and drops.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use rand::SeedableRng;
use tokio::io::AsyncReadExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::NODES;
use crate::netns::peer_port;
use crate::netns::Namespaces;

/// Bytes read from one side before they are passed on.
const CHUNK_BYTES: usize = 16 * 1024;

/// Worker threads of the proxies' own runtime: one is plenty for three nodes' peer traffic.
const PROXY_THREADS: usize = 1;

/// Time the proxy allows to connect to the real peer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Linux's minimum TCP retransmission timeout: what one lost segment costs.
const RETRANSMIT_TIMEOUT_MIN: Duration = Duration::from_millis(200);

/// Consecutive losses double the stall up to this many times (1.6 s), as TCP backs off.
const RETRANSMIT_DOUBLINGS_MAX: u32 = 3;

/// A lossy link resets a connection with this fraction of its chunk-loss probability.
const RESET_SHARE_OF_LOSS: u32 = 10;

/// What happens to the bytes one node sends to another.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirectionFaults {
    /// Held until the fault heals.
    pub blocked: bool,
    /// Extra latency per chunk.
    pub delay_ms: u64,
    /// Chance per chunk (per mille) of a retransmission stall.
    pub loss_per_mille: u32,
}

/// The proxies of every directed link, and their fault switches.
///
/// They run on their own runtime thread, so a busy harness (hundreds of client requests a
/// second, a checker at the end) never delays peer traffic by accident: the only delay on a
/// link is the one a fault asks for.
pub struct LinkProxies {
    runtime: Option<tokio::runtime::Runtime>,
    /// `faults[from][to]`: bytes sent by node `from` to node `to`.
    faults: Vec<Vec<watch::Sender<DirectionFaults>>>,
    /// Bumped to reset every proxied connection.
    resets: watch::Sender<u64>,
    accept_loops: Vec<JoinHandle<()>>,
    connections: Arc<AtomicU64>,
}

impl LinkProxies {
    /// Starts, inside every namespace `j`, a proxy towards each other node `i` on the
    /// loopback port that node `i` advertises.
    pub async fn start(namespaces: &Namespaces, seed: u64) -> anyhow::Result<LinkProxies> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(PROXY_THREADS)
            .thread_name("nemesis-proxy")
            .on_thread_start(raise_priority)
            .enable_all()
            .build()?;
        let faults: Vec<Vec<watch::Sender<DirectionFaults>>> =
            (0..NODES).map(|_| (0..NODES).map(|_| watch::channel(DirectionFaults::default()).0).collect()).collect();
        let (resets, _) = watch::channel(0u64);
        let connections: Arc<AtomicU64> = Arc::default();
        let mut accept_loops = Vec::new();
        for (from, outgoing) in faults.iter().enumerate() {
            let handle = namespaces.handle(from)?;
            for to in (0..NODES).filter(|to| *to != from) {
                let listen = std::net::SocketAddr::from(([127, 0, 0, 1], peer_port(to)));
                let link = Link {
                    handle: handle.clone(),
                    target: namespaces.peer_target(from, to),
                    forward: outgoing[to].subscribe(),
                    backward: faults[to][from].subscribe(),
                    resets: resets.subscribe(),
                    connections: connections.clone(),
                    seed: seed ^ ((from as u64) << 32 | to as u64),
                };
                // Bound inside the proxy runtime, so its reactor owns the socket.
                let binder = handle.clone();
                let listener = runtime.spawn(async move { binder.listen(listen).await }).await??;
                accept_loops.push(runtime.spawn(accept_loop(listener, link)));
            }
        }
        Ok(LinkProxies { runtime: Some(runtime), faults, resets, accept_loops, connections })
    }

    /// Sets the faults of the bytes `from` sends to `to`.
    pub fn set(&self, from: usize, to: usize, faults: DirectionFaults) {
        self.faults[from][to].send_replace(faults);
    }

    /// Changes the faults of every direction.
    pub fn set_all(&self, faults: DirectionFaults) {
        for from in 0..NODES {
            for to in (0..NODES).filter(|to| *to != from) {
                self.set(from, to, faults);
            }
        }
    }

    /// Removes every fault.
    pub fn heal(&self) {
        self.set_all(DirectionFaults::default());
    }

    /// Resets every proxied connection (as after a link flap).
    pub fn reset_connections(&self) {
        self.resets.send_modify(|generation| *generation += 1);
    }

    /// Connections proxied so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }
}

impl Drop for LinkProxies {
    fn drop(&mut self) {
        for task in &self.accept_loops {
            task.abort();
        }
        self.reset_connections();
        if let Some(runtime) = self.runtime.take() {
            // Dropping a runtime may not block inside another runtime; stop it in the background.
            runtime.shutdown_background();
        }
    }
}

/// Runs the proxy thread at a higher priority than the harness's clients and the machine's
/// other work (when permitted, i.e. as root): on a loaded machine the proxy must not be the
/// slowest hop of a heartbeat, or it injects delay nobody asked for.
fn raise_priority() {
    // SAFETY: gettid and setpriority on the calling thread; failure only leaves the default.
    unsafe {
        let thread = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, thread, PROXY_NICE);
    }
}

/// Nice value of the proxy thread (lower runs first; the default is 0).
const PROXY_NICE: libc::c_int = -10;

/// One directed link's proxy settings.
#[derive(Clone)]
struct Link {
    handle: crate::netns::NamespaceHandle,
    target: std::net::SocketAddr,
    forward: watch::Receiver<DirectionFaults>,
    backward: watch::Receiver<DirectionFaults>,
    resets: watch::Receiver<u64>,
    connections: Arc<AtomicU64>,
    seed: u64,
}

async fn accept_loop(listener: tokio::net::TcpListener, link: Link) {
    loop {
        let Ok((inbound, _)) = listener.accept().await else {
            // Out of descriptors or similar: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let count = link.connections.fetch_add(1, Ordering::Relaxed);
        let link = link.clone();
        tokio::spawn(async move {
            // Connection refused or the link is down: closing the inbound side is what the
            // node would see from a failed connect after it was accepted.
            let Ok(outbound) = link.handle.connect(link.target, CONNECT_TIMEOUT).await else { return };
            let _ = inbound.set_nodelay(true);
            serve(inbound, outbound, link, count).await;
        });
    }
}

/// Pumps both directions until either side closes or the connections are reset.
async fn serve(inbound: TcpStream, outbound: TcpStream, mut link: Link, count: u64) {
    let (in_read, in_write) = inbound.into_split();
    let (out_read, out_write) = outbound.into_split();
    let seed = link.seed.wrapping_add(count.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let forward = pump(in_read, out_write, link.forward.clone(), seed);
    let backward = pump(out_read, in_write, link.backward.clone(), seed.rotate_left(17));
    let generation = *link.resets.borrow_and_update();
    tokio::select! {
        _ = forward => {}
        _ = backward => {}
        _ = link.resets.wait_for(|now| *now != generation) => {}
    }
    // Dropping both halves of both sockets closes them.
}

/// Copies one direction, applying its faults. Returns when either end closes, or when a
/// lossy link decides to reset the connection.
///
/// One task per direction, no queue: peer traffic is request/response (one request at a
/// time per connection), so holding a chunk back delays exactly the message it belongs to,
/// and a healthy link costs one read and one write per chunk.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut faults: watch::Receiver<DirectionFaults>,
    seed: u64,
) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut consecutive_losses = 0u32;
    let mut buffer = vec![0u8; CHUNK_BYTES];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        let now = *faults.borrow_and_update();
        if now.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(now.delay_ms)).await;
        }
        if now.loss_per_mille > 0 {
            if rng.random_range(0..1000 * RESET_SHARE_OF_LOSS) < now.loss_per_mille {
                return; // the connection is reset
            }
            if rng.random_range(0..1000) < now.loss_per_mille {
                tokio::time::sleep(RETRANSMIT_TIMEOUT_MIN * (1 << consecutive_losses.min(RETRANSMIT_DOUBLINGS_MAX)))
                    .await;
                consecutive_losses += 1;
            } else {
                consecutive_losses = 0;
            }
        }
        if now.blocked && faults.wait_for(|now| !now.blocked).await.is_err() {
            return;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}
