//! openraft's own storage conformance suite, run against the on-disk implementation.
//! Every case gets a fresh data dir: the log in redb and the state machine with its
//! snapshot file, exactly as a node uses them.

use haven_store::log_store::SyncMode;
use haven_store::LogStore;
use haven_store::StateMachine;
use haven_store::TypeConfig;
use openraft::testing::log::StoreBuilder;
use openraft::testing::log::Suite;
use openraft::StorageError;

struct OnDisk;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for OnDisk {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = haven_store::open_database(dir.path()).expect("open database");
        let log = LogStore::open(db, &dir.path().join(haven_store::DATABASE_FILE), SyncMode::Fsync).expect("open log");
        let state_machine = StateMachine::open(dir.path(), 1000).expect("open state machine");
        Ok((dir, log, state_machine))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite() -> Result<(), StorageError<TypeConfig>> {
    Suite::test_all(OnDisk).await
}
