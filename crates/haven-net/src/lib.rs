//! Node-to-node transport.
//!
//! ```text
//!   openraft ──▶ PeerNetwork (RaftNetworkV2) ─┐
//!   server (forwarded writes, read index,     ├─▶ dyn Transport ──▶ TCP frames / in-process
//!           joins, pings) ────────────────────┘        │
//!                                                       ▼
//!                                     remote PeerHandler (the server) ──▶ openraft
//! ```
//!
//! Everything that crosses between nodes is a `PeerEnvelope` and comes back as a
//! `PeerResponse`. The envelope names sender and receiver with their incarnations and the
//! cluster id, so a wiped node or a node of another cluster is refused before its message
//! reaches Raft. The transport is a trait so the security layer can put mutual TLS under
//! the TCP implementation without touching the rest, and tests can use the in-process one.

pub mod accept;
pub mod frame;
pub mod in_process;
pub mod log_limit;
pub mod message;
pub mod raft_network;
pub mod snapshot;
pub mod tcp;
pub mod transport;

pub use message::*;
pub use raft_network::LocalPeer;
pub use raft_network::PeerNetworkFactory;
pub use transport::PeerHandler;
pub use transport::Transport;
pub use transport::TransportError;
