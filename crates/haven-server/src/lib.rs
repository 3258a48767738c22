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
pub mod bootstrap;
pub mod break_glass;
pub mod error;
pub mod fd_budget;
pub mod files;
pub mod ha;
pub mod integrity;
pub mod metrics;
pub mod node;
pub mod peer;
pub mod process;
pub mod recover;
pub mod replica_check;
pub mod role_process;
pub mod run;
pub mod status;
pub mod storage_size;
pub mod targets;
pub mod token_slots;

/// The file a node writes when a member told it that it was removed or recovered away:
/// the node stops, and refuses to start again on this data dir.
pub const EXPELLED_FILE: &str = "expelled.json";

/// Exit status of `haven serve` for a node that must not serve again with its data dir
/// (removed, or recovered away): sysexits' `EX_CONFIG`, so a supervisor can be told not
/// to restart it (systemd: `RestartPreventExitStatus=78`).
pub const EXIT_EXPELLED: u8 = 78;

/// The expulsion recorded in `data_dir`, if any.
pub fn expelled_record(data_dir: &std::path::Path) -> Option<haven_net::Expulsion> {
    ha::read_json(&data_dir.join(EXPELLED_FILE))
}

/// A node that is no longer a member and must not serve with its data dir; the message
/// says why and how to come back. `haven serve` exits with [`EXIT_EXPELLED`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expelled {
    pub message: String,
}

impl Expelled {
    pub fn new(expulsion: &haven_net::Expulsion, data_dir: &std::path::Path) -> Expelled {
        Expelled {
            message: format!(
                "{} (told by node {}; recorded in {}, which keeps this node from starting on that data dir again)",
                expulsion.message,
                expulsion.by,
                data_dir.join(EXPELLED_FILE).display()
            ),
        }
    }
}

impl std::fmt::Display for Expelled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Expelled {}

pub use node::Node;
pub use run::run;
pub use run::RunOptions;
pub use run::RunOutcome;
