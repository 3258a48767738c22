//! The transport seam: how a request gets to another node and its answer back.

use std::time::Duration;

use futures::future::BoxFuture;

use crate::PeerEnvelope;
use crate::PeerResponse;

/// Why a request got no answer. The variants tell the caller what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// No connection could be made: the request was certainly not delivered. Back off.
    #[error("peer {addr} unreachable: {reason}")]
    Unreachable { addr: String, reason: String },
    /// The request may have been delivered but no answer came (connection broke, timeout).
    #[error("no answer from peer {addr}: {reason}")]
    NoAnswer { addr: String, reason: String },
    /// The peer answered something that is not a valid response.
    #[error("bad answer from peer {addr}: {reason}")]
    BadAnswer { addr: String, reason: String },
}

impl TransportError {
    /// True when the request certainly did not reach the peer.
    pub fn not_delivered(&self) -> bool {
        matches!(self, TransportError::Unreachable { .. })
    }
}

/// Sends envelopes to peers by address.
pub trait Transport: Send + Sync + 'static {
    /// Sends `request` to the node listening on `addr` and waits at most `timeout` for the
    /// answer.
    fn call<'a>(
        &'a self,
        addr: &'a str,
        request: PeerEnvelope,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<PeerResponse, TransportError>>;
}

/// Receives envelopes: implemented by the server. `peer_fingerprint` is the key the
/// sender proved it holds (mutual TLS), `None` on plaintext links.
pub trait PeerHandler: Send + Sync + 'static {
    fn handle(&self, request: PeerEnvelope, peer_fingerprint: Option<String>) -> BoxFuture<'static, PeerResponse>;
}
