//! The TCP transport: framed request/response over pooled connections.
//!
//! One request at a time per connection; concurrency comes from several connections per
//! peer (openraft runs one replication stream per follower, plus votes and forwarded
//! writes). Idle connections are kept for reuse up to `IDLE_CONNECTIONS_PER_PEER`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::net::TcpListener;
use tokio::net::TcpStream;

use crate::accept::accept_loop;
use crate::accept::Accepted;
use crate::accept::BoxedStream;
use crate::accept::PEER_LIMITS;
use crate::frame;
use crate::frame::FrameError;
use crate::PeerEnvelope;
use crate::PeerHandler;
use crate::PeerResponse;
use crate::Transport;
use crate::TransportError;

/// Idle connections kept per peer: enough for the replication stream, votes and a few
/// concurrent forwarded writes without reconnecting; more are closed after use.
pub const IDLE_CONNECTIONS_PER_PEER: usize = 16;

/// Time allowed to establish a connection. A peer on a LAN answers within milliseconds;
/// a longer wait only delays trying the next thing.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// How often an idle peer connection re-checks that its peer is still a member, so the
/// connections of a removed member close promptly.
pub const MEMBERSHIP_RECHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Connects to peers over TCP, with mutual TLS unless built with `plaintext` (tests and
/// `--insecure-dev` on loopback only).
pub struct TcpTransport {
    idle: Mutex<HashMap<String, Vec<BoxedStream>>>,
    tls: Option<tokio_rustls::TlsConnector>,
}

impl TcpTransport {
    /// Mutual TLS: present this node's certificate, accept only pinned peers.
    pub fn tls(config: rustls::ClientConfig) -> TcpTransport {
        TcpTransport { idle: Mutex::default(), tls: Some(tokio_rustls::TlsConnector::from(Arc::new(config))) }
    }

    /// Plaintext: only for in-process tests and `--insecure-dev` on loopback.
    pub fn plaintext() -> TcpTransport {
        TcpTransport { idle: Mutex::default(), tls: None }
    }

    fn take_idle(&self, addr: &str) -> Option<BoxedStream> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).get_mut(addr).and_then(Vec::pop)
    }

    fn put_idle(&self, addr: &str, stream: BoxedStream) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let streams = idle.entry(addr.to_string()).or_default();
        if streams.len() < IDLE_CONNECTIONS_PER_PEER {
            streams.push(stream);
        }
    }

    async fn connect(&self, addr: &str) -> Result<BoxedStream, TransportError> {
        let unreachable = |reason: String| TransportError::Unreachable { addr: addr.to_string(), reason };
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| unreachable(format!("connect timed out after {CONNECT_TIMEOUT:?}")))?
            .map_err(|error| unreachable(error.to_string()))?;
        // Small request/response messages: do not let Nagle hold them back.
        let _ = stream.set_nodelay(true);
        let Some(connector) = &self.tls else {
            return Ok(Box::new(stream));
        };
        // The name is not used for trust (the pinned key is); any valid name will do.
        let name = rustls::pki_types::ServerName::try_from("haven-peer").map_err(|e| unreachable(e.to_string()))?;
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, stream))
            .await
            .map_err(|_| unreachable(format!("TLS handshake timed out after {CONNECT_TIMEOUT:?}")))?
            .map_err(|error| unreachable(format!("TLS handshake failed: {error}")))?;
        Ok(Box::new(stream))
    }

    async fn exchange(stream: &mut BoxedStream, request: &[u8]) -> Result<PeerResponse, FrameError> {
        use tokio::io::AsyncWriteExt;
        stream.write_all(request).await?;
        let body = frame::read_frame(stream).await?;
        frame::decode(&body)
    }

    /// Sends `request` and waits for the answer until `deadline`. Connecting (TCP and the
    /// TLS handshake) has its own bound, `CONNECT_TIMEOUT`: openraft gives heartbeats a few
    /// tens of milliseconds, and a handshake on a loaded machine can take longer; a
    /// connection made too late for this request is kept for the next one instead of being
    /// thrown away, so the link heals instead of failing forever.
    async fn call_inner(
        &self,
        addr: &str,
        request: PeerEnvelope,
        deadline: tokio::time::Instant,
    ) -> Result<PeerResponse, TransportError> {
        let bytes = frame::encode(&request)
            .map_err(|e| TransportError::BadAnswer { addr: addr.into(), reason: e.to_string() })?;
        let timed_out = || TransportError::NoAnswer { addr: addr.into(), reason: "timed out".into() };
        // A pooled connection may have been closed by the peer since; if the exchange
        // fails on one before any answer, retry once on a fresh connection. Requests are
        // safe to repeat: Raft RPCs are idempotent and writes carry request ids.
        if let Some(mut stream) = self.take_idle(addr) {
            match tokio::time::timeout_at(deadline, Self::exchange(&mut stream, &bytes)).await {
                Ok(Ok(response)) => {
                    self.put_idle(addr, stream);
                    return Ok(response);
                }
                Ok(Err(_)) => {}
                Err(_) => return Err(timed_out()),
            }
        }
        // Under TLS 1.3 a server that rejects our certificate says so only after the
        // client's handshake completed: the first exchange on a new connection is what
        // proves the link, which is why a link counts as up only once a request answered.
        let mut stream = self.connect(addr).await?;
        if tokio::time::Instant::now() >= deadline {
            self.put_idle(addr, stream);
            return Err(TransportError::Unreachable {
                addr: addr.into(),
                reason: "connected after this request's deadline; the connection is kept for the next".into(),
            });
        }
        match tokio::time::timeout_at(deadline, Self::exchange(&mut stream, &bytes)).await {
            Ok(Ok(response)) => {
                self.put_idle(addr, stream);
                Ok(response)
            }
            Ok(Err(FrameError::Decode(reason))) => Err(TransportError::BadAnswer { addr: addr.into(), reason }),
            Ok(Err(error)) => Err(TransportError::NoAnswer { addr: addr.into(), reason: error.to_string() }),
            Err(_) => Err(timed_out()),
        }
    }
}

impl Transport for TcpTransport {
    fn call<'a>(
        &'a self,
        addr: &'a str,
        request: PeerEnvelope,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<PeerResponse, TransportError>> {
        async move { self.call_inner(addr, request, tokio::time::Instant::now() + timeout).await }.boxed()
    }
}

/// Serves peer requests on `listener` until `shutdown` resolves. With `tls`, peers must
/// present a pinned certificate (mutual TLS), and a connection closes once its peer's key
/// is no longer pinned (the member was removed).
pub async fn serve(
    listener: TcpListener,
    handler: Arc<dyn PeerHandler>,
    tls: Option<(tokio_rustls::TlsAcceptor, haven_tls::PinSet)>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let (acceptor, pins) = match tls {
        Some((acceptor, pins)) => (Some(acceptor), Some(pins)),
        None => (None, None),
    };
    accept_loop(listener, acceptor, PEER_LIMITS, shutdown, move |stream, accepted, slot| {
        let handler = handler.clone();
        let pins = pins.clone();
        async move {
            let _slot = slot;
            serve_connection(stream, accepted, handler, pins).await;
        }
    })
    .await;
}

async fn serve_connection(
    mut stream: BoxedStream,
    accepted: Accepted,
    handler: Arc<dyn PeerHandler>,
    pins: Option<haven_tls::PinSet>,
) {
    let still_member = |pins: &Option<haven_tls::PinSet>| match (pins, &accepted.peer_fingerprint) {
        (Some(pins), Some(fingerprint)) => pins.contains(fingerprint),
        (Some(_), None) => false,
        (None, _) => true,
    };
    let removed = || {
        tracing::info!(remote = %accepted.remote, fingerprint = ?accepted.peer_fingerprint, "closing the connection of a removed member");
    };
    loop {
        // One read of one frame, kept across the membership re-checks: a frame whose bytes
        // take longer than the re-check interval to arrive (a 4 MiB snapshot chunk on a slow
        // link, a TCP stall) must not be dropped half-read, which would lose the frame and
        // the framing with it.
        let body = {
            let read = frame::read_frame(&mut stream);
            tokio::pin!(read);
            loop {
                tokio::select! {
                    body = &mut read => break body,
                    _ = tokio::time::sleep(MEMBERSHIP_RECHECK_INTERVAL) => {
                        if !still_member(&pins) {
                            removed();
                            return;
                        }
                    }
                }
            }
        };
        let body = match body {
            Ok(body) => body,
            Err(FrameError::Closed) => return,
            Err(error) => {
                tracing::debug!(%error, "peer connection dropped");
                return;
            }
        };
        if !still_member(&pins) {
            removed();
            return;
        }
        let response = match frame::decode::<PeerEnvelope>(&body) {
            Ok(request) => handler.handle(request, accepted.peer_fingerprint.clone()).await,
            Err(error) => PeerResponse::Refused(format!("undecodable request: {error}")),
        };
        if let Err(error) = frame::write_frame(&mut stream, &response).await {
            tracing::debug!(%error, "peer connection dropped while answering");
            return;
        }
    }
}
