//! An in-process transport for tests: nodes in one process, links that can be cut.
//!
//! Messages still go through the frame codec, so what a test exercises is what crosses a
//! real socket.

use std::collections::HashMap;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::RwLock;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;

use crate::frame;
use crate::PeerEnvelope;
use crate::PeerHandler;
use crate::PeerResponse;
use crate::Transport;
use crate::TransportError;

/// A switchboard of handlers by address.
#[derive(Default)]
pub struct InProcessNetwork {
    handlers: RwLock<HashMap<String, Arc<dyn PeerHandler>>>,
    cut: RwLock<HashSet<String>>,
}

impl InProcessNetwork {
    pub fn new() -> Arc<InProcessNetwork> {
        Arc::new(InProcessNetwork::default())
    }

    pub fn register(&self, addr: &str, handler: Arc<dyn PeerHandler>) {
        self.handlers.write().unwrap_or_else(|e| e.into_inner()).insert(addr.to_string(), handler);
    }

    /// Makes `addr` unreachable (true) or reachable again (false).
    pub fn set_cut(&self, addr: &str, cut: bool) {
        let mut set = self.cut.write().unwrap_or_else(|e| e.into_inner());
        if cut {
            set.insert(addr.to_string());
        } else {
            set.remove(addr);
        }
    }
}

impl Transport for InProcessNetwork {
    fn call<'a>(
        &'a self,
        addr: &'a str,
        request: PeerEnvelope,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<PeerResponse, TransportError>> {
        async move {
            let unreachable = |reason: &str| TransportError::Unreachable { addr: addr.into(), reason: reason.into() };
            if self.cut.read().unwrap_or_else(|e| e.into_inner()).contains(addr) {
                return Err(unreachable("link cut"));
            }
            let handler = self.handlers.read().unwrap_or_else(|e| e.into_inner()).get(addr).cloned();
            let handler = handler.ok_or_else(|| unreachable("no node at this address"))?;
            let bad = |e: frame::FrameError| TransportError::BadAnswer { addr: addr.into(), reason: e.to_string() };
            let bytes = frame::encode(&request).map_err(bad)?;
            let request: PeerEnvelope = frame::decode(&bytes[4..]).map_err(bad)?;
            let response = tokio::time::timeout(timeout, handler.handle(request, None))
                .await
                .map_err(|_| TransportError::NoAnswer { addr: addr.into(), reason: "timed out".into() })?;
            let bytes = frame::encode(&response).map_err(bad)?;
            frame::decode(&bytes[4..]).map_err(bad)
        }
        .boxed()
    }
}
