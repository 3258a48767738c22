//! A Haven node: storage, consensus, transport and the HTTP API wired together.
//!
//! ```text
//!   HTTP client port ──▶ api (axum) ──┐
//!                                     ├──▶ Node: writes (propose or forward), reads
//!   peer port ─────────▶ peer handler ┘        (ReadIndex), membership, status
//!                                                 │
//!                         openraft ◀──────────────┘──▶ haven-store (redb log, snapshots)
//! ```
//!
//! `run` is the whole server: the caller binds the listeners (tests bind port 0) and
//! decides when to stop.

pub mod admin_api;
pub mod alerts;
pub mod api;
pub mod auth;
pub mod body;
pub mod error;
pub mod fd_budget;
pub mod files;
pub mod ha;
pub mod integrity;
pub mod node;
pub mod peer;
pub mod process;
pub mod recover;
pub mod role_process;
pub mod run;
pub mod status;
pub mod storage_size;
pub mod targets;
pub mod token_slots;

pub use node::Node;
pub use run::run;
pub use run::RunOptions;
pub use run::RunOutcome;
