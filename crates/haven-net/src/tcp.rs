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
use tokio::sync::Semaphore;

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

/// Inbound peer connections served at once. Members need a handful each; the bound keeps a
/// flood of connections from exhausting memory or file descriptors.
pub const PEER_CONNECTIONS_MAX: usize = 256;

/// Connects to peers over TCP.
#[derive(Default)]
pub struct TcpTransport {
    idle: Mutex<HashMap<String, Vec<TcpStream>>>,
}

impl TcpTransport {
    pub fn new() -> TcpTransport {
        TcpTransport::default()
    }

    fn take_idle(&self, addr: &str) -> Option<TcpStream> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).get_mut(addr).and_then(Vec::pop)
    }

    fn put_idle(&self, addr: &str, stream: TcpStream) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let streams = idle.entry(addr.to_string()).or_default();
        if streams.len() < IDLE_CONNECTIONS_PER_PEER {
            streams.push(stream);
        }
    }

    async fn connect(addr: &str) -> Result<TcpStream, TransportError> {
        let unreachable = |reason: String| TransportError::Unreachable { addr: addr.to_string(), reason };
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| unreachable(format!("connect timed out after {CONNECT_TIMEOUT:?}")))?
            .map_err(|error| unreachable(error.to_string()))?;
        // Small request/response messages: do not let Nagle hold them back.
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    async fn exchange(stream: &mut TcpStream, request: &[u8]) -> Result<PeerResponse, FrameError> {
        use tokio::io::AsyncWriteExt;
        stream.write_all(request).await?;
        let body = frame::read_frame(stream).await?;
        frame::decode(&body)
    }

    async fn call_inner(&self, addr: &str, request: PeerEnvelope) -> Result<PeerResponse, TransportError> {
        let bytes = frame::encode(&request)
            .map_err(|e| TransportError::BadAnswer { addr: addr.into(), reason: e.to_string() })?;
        // A pooled connection may have been closed by the peer since; if the exchange
        // fails on one before any answer, retry once on a fresh connection. Requests are
        // safe to repeat: Raft RPCs are idempotent and writes carry request ids.
        if let Some(mut stream) = self.take_idle(addr) {
            if let Ok(response) = Self::exchange(&mut stream, &bytes).await {
                self.put_idle(addr, stream);
                return Ok(response);
            }
        }
        let mut stream = Self::connect(addr).await?;
        match Self::exchange(&mut stream, &bytes).await {
            Ok(response) => {
                self.put_idle(addr, stream);
                Ok(response)
            }
            Err(FrameError::Decode(reason)) => Err(TransportError::BadAnswer { addr: addr.into(), reason }),
            Err(error) => Err(TransportError::NoAnswer { addr: addr.into(), reason: error.to_string() }),
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
        async move {
            match tokio::time::timeout(timeout, self.call_inner(addr, request)).await {
                Ok(result) => result,
                Err(_) => {
                    Err(TransportError::NoAnswer { addr: addr.into(), reason: format!("timed out after {timeout:?}") })
                }
            }
        }
        .boxed()
    }
}

/// Serves peer requests on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    handler: Arc<dyn PeerHandler>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(PEER_CONNECTIONS_MAX));
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, remote) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: pause instead of spinning.
                tracing::warn!(%error, "peer accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%remote, limit = PEER_CONNECTIONS_MAX, "peer connection refused: too many connections");
            continue;
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _ = stream.set_nodelay(true);
            serve_connection(stream, handler).await;
        });
    }
}

async fn serve_connection(mut stream: TcpStream, handler: Arc<dyn PeerHandler>) {
    loop {
        let body = match frame::read_frame(&mut stream).await {
            Ok(body) => body,
            Err(FrameError::Closed) => return,
            Err(error) => {
                tracing::debug!(%error, "peer connection dropped");
                return;
            }
        };
        let response = match frame::decode::<PeerEnvelope>(&body) {
            Ok(request) => handler.handle(request).await,
            Err(error) => PeerResponse::Refused(format!("undecodable request: {error}")),
        };
        if let Err(error) = frame::write_frame(&mut stream, &response).await {
            tracing::debug!(%error, "peer connection dropped while answering");
            return;
        }
    }
}
