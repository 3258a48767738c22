//! Accepting connections under bounds, with TLS. Every connection cap of a listener lives
//! here: handshakes, established connections (in total and per source address), the time to
//! the first request, and which connection gives way when the table is full.
//!
//! ```text
//!   accept ──▶ handshake (bounded: the OLDEST handshaking connection is dropped when
//!      │                 HANDSHAKES_MAX are in flight; HANDSHAKE_TIMEOUT each)
//!      ▼
//!   established table: per source address at most `per_source_max`, in total at most
//!      │   `established_max`; when either is full, the connection of that scope that has
//!      │   been quiet longest (no byte either way for `evict_idle_min`) is closed to make
//!      │   room; only when every one is busy is the newcomer refused
//!      ▼
//!   serve ── must send its first bytes within `first_request_timeout`, or is closed
//! ```
//!
//! Unauthenticated load must not starve anyone (Consul's CVE-2020-7219 was a connection
//! flood): a flood of idle or half-open connections, even from many addresses, cannot keep
//! a legitimate client out, because a new connection always gets a slot from one that is
//! doing nothing, and idle newcomers are closed within seconds. Refusals and evictions are
//! logged through the rate-limited helper (`crate::log_limit`), never a line per connection.

use std::collections::HashMap;
use std::collections::VecDeque;
use std::net::IpAddr;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::LazyLock;
use std::sync::Mutex;
use std::task::Context;
use std::task::Poll;
use std::time::Duration;
use std::time::Instant;

use tokio::io::AsyncRead;
use tokio::io::AsyncWrite;
use tokio::io::ReadBuf;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::AbortHandle;

use crate::log_limit::Level;
use crate::log_limit::RateLimitedLog;
use crate::log_limit::LOG_INTERVAL;

/// Anything a connection handler can read and write.
pub trait AsyncStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> AsyncStream for T {}
pub type BoxedStream = Box<dyn AsyncStream>;

/// Bounds for one listener.
#[derive(Debug, Clone, Copy)]
pub struct AcceptLimits {
    /// Which listener, for logs.
    pub name: &'static str,
    /// Connections allowed in the TLS handshake at once.
    pub handshakes_max: usize,
    /// Established (authenticated at the TLS layer) connections at once.
    pub established_max: usize,
    /// Established connections from one source address at once.
    pub per_source_max: usize,
    /// Time a connection gets to complete its handshake.
    pub handshake_timeout: Duration,
    /// Time an established connection gets to send its first bytes (its first request).
    pub first_request_timeout: Duration,
    /// A connection quiet (no byte either way) for at least this long may be closed to make
    /// room for a new one when the table is full.
    pub evict_idle_min: Duration,
}

/// Client port: a handshake costs one ECDSA signature; 128 in flight keeps a 2-core node
/// responsive. Established connections: agents of a fleet keep one each; 4096 covers a
/// large fleet per node, and each costs one task and small buffers. Per source: 256 lets a
/// NAT gateway in front of many agents through, while one address alone cannot take more
/// than a sixteenth of the table. A client sends its request right after the handshake: 3 s
/// is generous on any network and closes idle floods quickly. A keep-alive connection quiet
/// for a second can give way (its client reconnects; `haven-client` retries).
pub const CLIENT_LIMITS: AcceptLimits = AcceptLimits {
    name: "client",
    handshakes_max: 128,
    established_max: 4096,
    per_source_max: 256,
    handshake_timeout: Duration::from_secs(3),
    first_request_timeout: Duration::from_secs(3),
    evict_idle_min: Duration::from_secs(1),
};

/// Peer port: at most 7 voters plus learners, each with a few connections (replication,
/// heartbeats, votes, forwarded writes, probes); 256 established leaves ample room while
/// bounding a flood. A member keeps at most `IDLE_CONNECTIONS_PER_PEER` (16) idle plus a few
/// busy ones: 64 per address. Handshakes are bounded separately so strangers cannot use up
/// the slots members need: a stranger never gets past the handshake (mutual TLS, pinned).
/// A member's pooled connection may wait a while for its first request (one made too late
/// for the request it was opened for is kept for the next): 10 s.
pub const PEER_LIMITS: AcceptLimits = AcceptLimits {
    name: "peer",
    handshakes_max: 64,
    established_max: 256,
    per_source_max: 64,
    handshake_timeout: Duration::from_secs(3),
    first_request_timeout: Duration::from_secs(10),
    evict_idle_min: Duration::from_secs(1),
};

/// What is known about an accepted connection.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub remote: SocketAddr,
    /// The fingerprint of the client certificate, under mutual TLS.
    pub peer_fingerprint: Option<String>,
}

/// Connections in the handshake, oldest first. An entry's flag is set once its handshake
/// is over (either way); such entries are skipped and dropped lazily.
#[derive(Default)]
struct Handshaking {
    tasks: VecDeque<(Arc<AtomicBool>, AbortHandle)>,
}

impl Handshaking {
    fn in_handshake(&mut self) -> usize {
        self.tasks.retain(|(done, _)| !done.load(Ordering::Acquire));
        self.tasks.len()
    }
}

/// Refused handshakes, per listener, address and reason (a stranger hammering the peer port
/// wrote 24 MB of log in 10 s when each was a line).
static HANDSHAKE_REFUSALS: LazyLock<RateLimitedLog<String>> =
    LazyLock::new(|| RateLimitedLog::new("TLS handshake refused", Level::Warn, LOG_INTERVAL));

/// Connections refused or closed to keep the bounds, per listener and address.
static CONNECTION_LIMITS: LazyLock<RateLimitedLog<String>> =
    LazyLock::new(|| RateLimitedLog::new("connection limit reached", Level::Warn, LOG_INTERVAL));

/// One line (rate-limited) per refused handshake on the peer port, with the reason and the
/// presented fingerprint when there was one; client-port handshake failures are routine
/// (scanners, health checkers speaking plain HTTP) and logged at debug.
fn log_refused_handshake(listener: &str, remote: SocketAddr, error: &std::io::Error) {
    if listener != "peer" {
        tracing::debug!(%remote, %error, "TLS handshake failed");
        return;
    }
    let rustls_error = error.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>());
    let refused = rustls_error.and_then(haven_tls::CertificateRefused::of);
    let (reason, fingerprint) = match refused {
        Some(refused) => (refused.reason.to_string(), refused.fingerprint.clone().unwrap_or_else(|| "none".into())),
        None => (error.to_string(), "none".to_string()),
    };
    let key = format!("{listener} port, {} with key {fingerprint}: {reason}", remote.ip());
    if let Some(suppressed) = HANDSHAKE_REFUSALS.admit(key) {
        tracing::warn!(%remote, %reason, %fingerprint, suppressed, "TLS handshake refused on the peer port");
    }
}

/// Activity of one established connection, shared between its stream and the table.
struct Activity {
    /// Milliseconds since the table's epoch of the last byte read or written.
    last_active_ms: AtomicU64,
    /// Whether the other side has sent anything yet.
    has_read: AtomicBool,
    /// Set (and notified) when the table closes the connection to make room.
    evicted: Notify,
}

struct Entry {
    source: IpAddr,
    activity: Arc<Activity>,
}

/// The established connections of one listener.
struct ConnectionTable {
    limits: AcceptLimits,
    epoch: Instant,
    next_id: u64,
    entries: HashMap<u64, Entry>,
    per_source: HashMap<IpAddr, usize>,
}

/// Why a connection could not get a slot.
enum NoRoom {
    PerSource,
    Total,
}

impl ConnectionTable {
    fn new(limits: AcceptLimits) -> ConnectionTable {
        ConnectionTable {
            limits,
            epoch: Instant::now(),
            next_id: 0,
            entries: HashMap::new(),
            per_source: HashMap::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The connection (of `source`, or of any source) quiet longest, if quiet long enough.
    fn idlest(&self, source: Option<IpAddr>) -> Option<u64> {
        let now_ms = self.now_ms();
        let idle_min_ms = u64::try_from(self.limits.evict_idle_min.as_millis()).unwrap_or(u64::MAX);
        self.entries
            .iter()
            .filter(|(_, entry)| source.is_none_or(|source| entry.source == source))
            .map(|(id, entry)| (*id, entry.activity.last_active_ms.load(Ordering::Relaxed)))
            .filter(|(_, last_ms)| now_ms.saturating_sub(*last_ms) >= idle_min_ms)
            .min_by_key(|(_, last_ms)| *last_ms)
            .map(|(id, _)| id)
    }

    fn evict(&mut self, id: u64) {
        if let Some(entry) = self.remove(id) {
            entry.activity.evicted.notify_one();
        }
    }

    fn remove(&mut self, id: u64) -> Option<Entry> {
        let entry = self.entries.remove(&id)?;
        if let Some(count) = self.per_source.get_mut(&entry.source) {
            *count -= 1;
            if *count == 0 {
                self.per_source.remove(&entry.source);
            }
        }
        Some(entry)
    }

    /// A slot for a new connection from `source`, making room by closing the idlest
    /// connection of the full scope (its source's, then all) when there is one.
    fn admit(&mut self, source: IpAddr) -> Result<(u64, Arc<Activity>), NoRoom> {
        if self.per_source.get(&source).copied().unwrap_or(0) >= self.limits.per_source_max {
            let idlest = self.idlest(Some(source)).ok_or(NoRoom::PerSource)?;
            self.evict(idlest);
        }
        if self.entries.len() >= self.limits.established_max {
            let idlest = self.idlest(None).ok_or(NoRoom::Total)?;
            self.evict(idlest);
        }
        let activity = Arc::new(Activity {
            last_active_ms: AtomicU64::new(self.now_ms()),
            has_read: AtomicBool::new(false),
            evicted: Notify::new(),
        });
        let id = self.next_id;
        self.next_id += 1;
        self.entries.insert(id, Entry { source, activity: activity.clone() });
        *self.per_source.entry(source).or_default() += 1;
        Ok((id, activity))
    }
}

/// An established connection's place in its listener's table; dropping it frees the place.
pub struct ConnectionSlot {
    table: Arc<Mutex<ConnectionTable>>,
    id: u64,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.table.lock().unwrap_or_else(|e| e.into_inner()).remove(self.id);
    }
}

/// The stream of an established connection, noting when bytes move (for the idle order
/// and the first-request timeout).
struct Tracked {
    inner: BoxedStream,
    activity: Arc<Activity>,
    epoch: Instant,
}

impl Tracked {
    fn touch(&self) {
        let now_ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.activity.last_active_ms.store(now_ms, Ordering::Relaxed);
    }
}

impl AsyncRead for Tracked {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.has_read.store(true, Ordering::Relaxed);
            self.touch();
        }
        result
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(result, Poll::Ready(Ok(written)) if written > 0) {
            self.touch();
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Resolves when the connection must close: it sent nothing within the first-request
/// timeout, or the table closed it to make room.
async fn closed_by_bounds(activity: &Activity, first_request_timeout: Duration) -> &'static str {
    let first_request = async {
        tokio::time::sleep(first_request_timeout).await;
        if activity.has_read.load(Ordering::Relaxed) {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        _ = first_request => "no request within the first-request timeout",
        _ = activity.evicted.notified() => "closed to make room for a new connection (it was the idlest)",
    }
}

/// Accepts connections until `shutdown` resolves; hands each established one (after the
/// TLS handshake, when `tls` is given) to `serve` with its slot in the table of bounds.
pub async fn accept_loop<S, F>(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: AcceptLimits,
    shutdown: impl std::future::Future<Output = ()>,
    serve: S,
) where
    S: Fn(BoxedStream, Accepted, ConnectionSlot) -> F + Send + Sync + 'static,
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let serve = Arc::new(serve);
    let table = Arc::new(Mutex::new(ConnectionTable::new(limits)));
    let handshaking = Arc::new(Mutex::new(Handshaking::default()));
    let mut tasks = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, remote) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: pause instead of spinning.
                if let Some(suppressed) = CONNECTION_LIMITS.admit(format!("{} port: accept failed", limits.name)) {
                    tracing::warn!(listener = limits.name, %error, suppressed, "accept failed");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        // Reap finished tasks so the set does not grow.
        while tasks.try_join_next().is_some() {}
        let serve = serve.clone();
        let table = table.clone();
        let tls = tls.clone();
        {
            let mut handshakes = handshaking.lock().unwrap_or_else(|e| e.into_inner());
            if handshakes.in_handshake() >= limits.handshakes_max {
                if let Some((_, oldest)) = handshakes.tasks.pop_front() {
                    oldest.abort();
                }
            }
        }
        let done = Arc::new(AtomicBool::new(false));
        let done_in_task = done.clone();
        let handle = tasks.spawn(async move {
            let finish_handshake = || done_in_task.store(true, Ordering::Release);
            let (stream, peer_fingerprint): (BoxedStream, Option<String>) = match tls {
                Some(acceptor) => match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(tls_stream)) => {
                        let fingerprint = tls_stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|certs| certs.first())
                            .and_then(|cert| haven_tls::fingerprint(cert).ok());
                        (Box::new(tls_stream), fingerprint)
                    }
                    Ok(Err(error)) => {
                        finish_handshake();
                        log_refused_handshake(limits.name, remote, &error);
                        return;
                    }
                    Err(_) => {
                        finish_handshake();
                        tracing::debug!(%remote, "TLS handshake timed out");
                        return;
                    }
                },
                None => (Box::new(stream), None),
            };
            finish_handshake();
            let admitted = table.lock().unwrap_or_else(|e| e.into_inner()).admit(remote.ip());
            let (id, activity) = match admitted {
                Ok(admitted) => admitted,
                Err(no_room) => {
                    let (scope, limit) = match no_room {
                        NoRoom::PerSource => ("from this address", limits.per_source_max),
                        NoRoom::Total => ("in total", limits.established_max),
                    };
                    let key = format!("{} port, {}: refused, {limit} busy {scope}", limits.name, remote.ip());
                    if let Some(suppressed) = CONNECTION_LIMITS.admit(key) {
                        tracing::warn!(
                            listener = limits.name,
                            %remote,
                            limit,
                            suppressed,
                            "connection refused: {limit} connections {scope}, none idle"
                        );
                    }
                    return;
                }
            };
            let epoch = table.lock().unwrap_or_else(|e| e.into_inner()).epoch;
            let slot = ConnectionSlot { table, id };
            let stream = Box::new(Tracked { inner: stream, activity: activity.clone(), epoch });
            tokio::select! {
                _ = serve(stream, Accepted { remote, peer_fingerprint }, slot) => {}
                why = closed_by_bounds(&activity, limits.first_request_timeout) => {
                    let key = format!("{} port, {}: {why}", limits.name, remote.ip());
                    if let Some(suppressed) = CONNECTION_LIMITS.admit(key) {
                        tracing::info!(listener = limits.name, %remote, suppressed, "connection closed: {why}");
                    }
                }
            }
        });
        handshaking.lock().unwrap_or_else(|e| e.into_inner()).tasks.push_back((done, handle));
    }
    tasks.abort_all();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(established_max: usize, per_source_max: usize) -> AcceptLimits {
        AcceptLimits {
            name: "test",
            handshakes_max: 1,
            established_max,
            per_source_max,
            handshake_timeout: Duration::from_secs(1),
            first_request_timeout: Duration::from_secs(1),
            evict_idle_min: Duration::ZERO,
        }
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    /// A full table makes room by closing the connection quiet longest, of the newcomer's
    /// own address when that address is at its cap; busy connections are never closed.
    #[test]
    fn the_idlest_connection_gives_way() {
        let mut table = ConnectionTable::new(limits(3, 2));
        let (a, activity_a) = table.admit(ip(1)).ok().unwrap();
        let (b, activity_b) = table.admit(ip(1)).ok().unwrap();
        // a is busy now, b quiet since it opened.
        activity_a.last_active_ms.store(1_000_000, Ordering::Relaxed);
        let (c, _) = table.admit(ip(1)).ok().unwrap();
        assert!(table.entries.contains_key(&a) && !table.entries.contains_key(&b), "b, the idlest of ip 1, gave way");
        assert_eq!(table.per_source[&ip(1)], 2);
        // Another address fills the table: the idlest overall (c) gives way.
        let (_, activity_d) = table.admit(ip(2)).ok().unwrap();
        activity_d.last_active_ms.store(1_000_000, Ordering::Relaxed);
        let _ = table.admit(ip(3)).ok().unwrap();
        assert!(!table.entries.contains_key(&c) && table.entries.contains_key(&a));
        assert_eq!(table.entries.len(), 3);
        drop(activity_b);
    }

    /// Nothing is closed that is not quiet for `evict_idle_min`: then the newcomer is refused.
    #[test]
    fn busy_connections_are_not_closed() {
        let mut table =
            ConnectionTable::new(AcceptLimits { evict_idle_min: Duration::from_secs(3600), ..limits(2, 2) });
        assert!(table.admit(ip(1)).is_ok() && table.admit(ip(2)).is_ok());
        assert!(matches!(table.admit(ip(3)), Err(NoRoom::Total)));
        assert!(matches!(table.admit(ip(1)), Err(NoRoom::Total)));
        let mut table =
            ConnectionTable::new(AcceptLimits { evict_idle_min: Duration::from_secs(3600), ..limits(9, 1) });
        assert!(table.admit(ip(1)).is_ok());
        assert!(matches!(table.admit(ip(1)), Err(NoRoom::PerSource)));
        assert!(table.admit(ip(2)).is_ok());
    }
}
