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
#[cfg(test)]
mod encoding_properties;
pub mod identity;
pub mod integrity;
pub mod log_store;
pub mod reinit;
pub mod snapshot_file;
pub mod state_machine;
pub(crate) mod stored;
pub mod types;

pub use crash_sim::DatabaseBackend;
pub use identity::BootstrapIntent;
pub use identity::NodeIdentity;
pub use integrity::CorruptData;
pub use log_store::LogStore;
pub use reinit::reinitialize_as_single_voter;
pub use reinit::ReinitSummary;
pub use state_machine::StateMachine;
pub use types::*;

/// The redb database's file name in the data dir.
pub const DATABASE_FILE: &str = "raft.redb";

/// Opens (or creates) the node's redb database under `data_dir`, checked and in the current
/// storage format (see [`open_database_with_backend`]).
pub fn open_database(data_dir: &std::path::Path) -> std::io::Result<std::sync::Arc<redb::Database>> {
    open_database_with_backend(data_dir, DatabaseBackend::File)
}

/// Opens the node's database like [`open_database`], on the chosen backend. Only fault
/// tests choose [`DatabaseBackend::CrashSim`] (see [`crash_sim`]).
///
/// Every open checks the whole file: redb verifies the checksum of every page it holds
/// (the log's and metadata's pages included), so a file damaged outside redb is refused here
/// with its name instead of panicking later on a read ("entered unreachable code"). Then
/// the database is brought to the current storage format ([`stored`]). A damaged file is an
/// `InvalidData` error carrying [`CorruptData`].
pub fn open_database_with_backend(
    data_dir: &std::path::Path,
    backend: DatabaseBackend,
) -> std::io::Result<std::sync::Arc<redb::Database>> {
    std::fs::create_dir_all(data_dir)?;
    let path = data_dir.join(DATABASE_FILE);
    let corrupt = |problem: String| CorruptData::new(&path, "the redb page structure", problem).into_io();
    // redb may panic on a file damaged outside it; that panic becomes an error naming the file.
    let opened = std::panic::catch_unwind(|| match backend {
        DatabaseBackend::File => redb::Database::create(&path).map_err(|error| match error {
            redb::DatabaseError::Storage(redb::StorageError::Corrupted(problem)) => {
                corrupt(format!("redb's page checksums fail: {problem}"))
            }
            error => std::io::Error::other(format!("cannot open {}: {error}", path.display())),
        }),
        DatabaseBackend::CrashSim => crash_sim::open_database(&path),
    });
    let mut db = match opened {
        Ok(result) => result?,
        Err(panic) => return Err(corrupt(format!("redb failed while opening it: {}", panic_message(&panic)))),
    };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| db.check_integrity())) {
        Ok(Ok(true)) => {}
        Ok(Ok(false)) => {
            // The pages failed their checksums and redb repaired the file, which can mean
            // going back to the transaction before the last one: this node may have lost
            // what it last wrote. Its log is re-checked entry by entry by the caller.
            tracing::error!(
                file = %path.display(),
                "raft.redb failed redb's page checksums and was repaired by redb; its last transaction may be lost"
            );
        }
        Ok(Err(redb::DatabaseError::Storage(redb::StorageError::Corrupted(problem)))) => {
            return Err(corrupt(format!("redb's page checksums fail: {problem}")))
        }
        Ok(Err(error)) => {
            return Err(std::io::Error::other(format!("cannot check {}: {error}", path.display())));
        }
        Err(panic) => return Err(corrupt(format!("redb failed while checking it: {}", panic_message(&panic)))),
    }
    stored::upgrade(&db, &path)?;
    Ok(std::sync::Arc::new(db))
}

/// Refuses a start that openraft could not make: the log is purged up to an entry the
/// snapshot does not reach (`snapshot.bin` missing, or replaced by an older one), so the
/// entries in between exist nowhere on this node. openraft would stop with "Cannot re-apply
/// logs: need logs from index 0"; this names the files instead.
pub fn check_log_continues_snapshot(
    data_dir: &std::path::Path,
    log: &LogStore,
    state: &StateMachine,
) -> std::io::Result<()> {
    let Some(purged) = log.last_purged() else {
        return Ok(());
    };
    let applied = state.read().last_applied;
    if applied >= Some(purged) {
        return Ok(());
    }
    let snapshot = snapshot_file::snapshot_path(data_dir);
    let problem = match applied {
        None => format!(
            "missing, but the log in {} is purged up to entry {purged}: the state up to that entry was only in the snapshot",
            data_dir.join(DATABASE_FILE).display()
        ),
        Some(applied) => format!(
            "it ends at entry {applied}, but the log in {} is purged up to entry {purged}: the entries between are gone",
            data_dir.join(DATABASE_FILE).display()
        ),
    };
    Err(CorruptData::new(&snapshot, "the whole file", problem).into_io())
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|text| text.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into())
}

pub(crate) fn io_error(context: &str, error: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(format!("{context}: {error}"))
}
