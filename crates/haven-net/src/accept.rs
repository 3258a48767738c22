//! Accepting connections under bounds, with TLS.
//!
//! Unauthenticated load must not starve anyone (Consul's CVE-2020-7219 was a connection
//! flood). Connections still in the TLS handshake are bounded separately from established
//! ones and must finish their handshake quickly; when the handshake bound is full, the
//! OLDEST handshaking connection is dropped, so a flood of idle or half-open connections
//! cannot keep a legitimate client out: a new connection always gets its chance.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use tokio::io::AsyncRead;
use tokio::io::AsyncWrite;
use tokio::net::TcpListener;
use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::Semaphore;
use tokio::task::AbortHandle;

/// Anything a connection handler can read and write.
pub trait AsyncStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> AsyncStream for T {}
pub type BoxedStream = Box<dyn AsyncStream>;

/// Bounds for one listener.
#[derive(Debug, Clone, Copy)]
pub struct AcceptLimits {
    /// Which listener, for logs; the peer port logs every refused handshake.
    pub name: &'static str,
    /// Connections allowed in the TLS handshake at once.
    pub handshakes_max: usize,
    /// Established (authenticated at the TLS layer) connections at once.
    pub established_max: usize,
    /// Time a connection gets to complete its handshake.
    pub handshake_timeout: Duration,
}

/// Client port: a handshake costs one ECDSA signature; 128 in flight keeps a 2-core node
/// responsive. Established connections: agents of a fleet keep one each; 4096 covers a
/// large fleet per node, and each costs one task and small buffers.
pub const CLIENT_LIMITS: AcceptLimits = AcceptLimits {
    name: "client",
    handshakes_max: 128,
    established_max: 4096,
    handshake_timeout: Duration::from_secs(3),
};

/// Peer port: at most 7 voters plus learners, each with a few connections (replication,
/// heartbeats, votes, forwarded writes, probes); 256 established leaves ample room while
/// bounding a flood. Handshakes are bounded separately so strangers cannot use up the
/// slots members need: a stranger never gets past the handshake (mutual TLS, pinned).
pub const PEER_LIMITS: AcceptLimits =
    AcceptLimits { name: "peer", handshakes_max: 64, established_max: 256, handshake_timeout: Duration::from_secs(3) };

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

/// One line per refused handshake on the peer port. Certificate refusals were logged by the
/// verifier itself, with the presented fingerprint; the rest (no certificate at all, not
/// TLS 1.3, garbage) are logged here, where no certificate was presented.
fn log_refused_handshake(listener: &str, remote: SocketAddr, error: &std::io::Error) {
    let rustls_error = error.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>());
    if matches!(rustls_error, Some(rustls::Error::InvalidCertificate(_))) {
        return;
    }
    if listener == "peer" {
        tracing::warn!(%remote, reason = %error, fingerprint = "none", "TLS handshake refused on the peer port");
    } else {
        tracing::debug!(%remote, %error, "TLS handshake failed");
    }
}

/// Accepts connections until `shutdown` resolves; hands each established one (after the
/// TLS handshake, when `tls` is given) to `serve` with a permit that bounds them.
pub async fn accept_loop<S, F>(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: AcceptLimits,
    shutdown: impl std::future::Future<Output = ()>,
    serve: S,
) where
    S: Fn(BoxedStream, Accepted, OwnedSemaphorePermit) -> F + Send + Sync + 'static,
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let serve = Arc::new(serve);
    let established = Arc::new(Semaphore::new(limits.established_max));
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
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        // Reap finished tasks so the set does not grow.
        while tasks.try_join_next().is_some() {}
        let serve = serve.clone();
        let established = established.clone();
        let tls = tls.clone();
        {
            let mut table = handshaking.lock().unwrap_or_else(|e| e.into_inner());
            if table.in_handshake() >= limits.handshakes_max {
                if let Some((_, oldest)) = table.tasks.pop_front() {
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
            let Ok(permit) = established.try_acquire_owned() else {
                tracing::warn!(%remote, limit = limits.established_max, "connection refused: too many connections");
                return;
            };
            serve(stream, Accepted { remote, peer_fingerprint }, permit).await;
        });
        handshaking.lock().unwrap_or_else(|e| e.into_inner()).tasks.push_back((done, handle));
    }
    tasks.abort_all();
}
