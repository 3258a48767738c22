//! `nemesis-dump-log DIR [FROM [TO]]`: prints the Raft vote, committed id and log entries
//! of a node's data dir, one entry a line, to compare nodes after a failed history (for
//! example the durable state each node restarted from after a power cut, which a failed
//! history keeps in `power-cut-K/nI/`).
//!
//! Opens a copy, never a live node's dir: opening writes to the database.

use std::process::ExitCode;

use openraft::entry::RaftEntry;
use openraft::storage::RaftLogStorage;
use openraft::RaftLogReader;

/// Longest payload text printed per entry.
const PAYLOAD_CHARS_MAX: usize = 200;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(dir) = args.first() else {
        eprintln!("usage: nemesis-dump-log DIR [FROM [TO]]  (DIR holds raft.redb; use a copy)");
        return ExitCode::from(2);
    };
    let bound = |i: usize, default: u64| args.get(i).map_or(Ok(default), |text| text.parse::<u64>());
    let (Ok(from), Ok(to)) = (bound(1, 0), bound(2, u64::MAX)) else {
        eprintln!("error: FROM and TO must be log indexes");
        return ExitCode::from(2);
    };
    match dump(std::path::Path::new(dir), from, to).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn dump(dir: &std::path::Path, from: u64, to: u64) -> std::io::Result<()> {
    let db = haven_store::open_database(dir)?;
    let file = dir.join(haven_store::DATABASE_FILE);
    let mut log = haven_store::LogStore::open(db, &file, haven_store::log_store::SyncMode::Fsync)?;
    println!("vote {:?}", log.read_vote().await?);
    println!("committed {:?}", log.read_committed().await?);
    println!("state {:?}", log.get_log_state().await?);
    for entry in log.try_get_log_entries(from..to).await? {
        let payload: String = format!("{:?}", entry.payload).chars().take(PAYLOAD_CHARS_MAX).collect();
        println!("{} {payload}", entry.log_id());
    }
    Ok(())
}
