//! Haven's Raft types and durable storage.
//!
//! ```text
//!   openraft (consensus) ──▶ LogStore      redb file `raft.redb`: log entries, vote,
//!                                           committed id, node identity. One writer
//!                                           thread group-commits with fsync.
//!                        ──▶ StateMachine   the pure `KvState` in memory, made durable by
//!                                           snapshots (`snapshot.bin`, written atomically)
//!                                           plus the log since the snapshot.
//! ```
//!
//! A log append is reported flushed to openraft (`IOFlushed`) only after the redb
//! transaction holding it committed with `Durability::Immediate`, so a write is
//! acknowledged only once a quorum has it on disk.

pub mod crash_sim;
pub mod identity;
pub mod log_store;
pub mod reinit;
pub mod state_machine;
pub mod types;

pub use crash_sim::DatabaseBackend;
pub use identity::NodeIdentity;
pub use log_store::LogStore;
pub use reinit::reinitialize_as_single_voter;
pub use reinit::ReinitSummary;
pub use state_machine::StateMachine;
pub use types::*;

/// Opens (or creates) the node's redb database under `data_dir`.
pub fn open_database(data_dir: &std::path::Path) -> std::io::Result<std::sync::Arc<redb::Database>> {
    std::fs::create_dir_all(data_dir)?;
    let path = data_dir.join("raft.redb");
    let db = redb::Database::create(&path)
        .map_err(|error| std::io::Error::other(format!("cannot open {}: {error}", path.display())))?;
    Ok(std::sync::Arc::new(db))
}

/// Opens the node's database like [`open_database`], on the chosen backend. Only fault
/// tests choose [`DatabaseBackend::CrashSim`] (see [`crash_sim`]).
pub fn open_database_with_backend(
    data_dir: &std::path::Path,
    backend: DatabaseBackend,
) -> std::io::Result<std::sync::Arc<redb::Database>> {
    match backend {
        DatabaseBackend::File => open_database(data_dir),
        DatabaseBackend::CrashSim => {
            std::fs::create_dir_all(data_dir)?;
            Ok(std::sync::Arc::new(crash_sim::open_database(&data_dir.join("raft.redb"))?))
        }
    }
}

pub(crate) fn io_error(context: &str, error: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(format!("{context}: {error}"))
}
