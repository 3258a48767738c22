//! The Raft log, vote and committed id in redb, with group commit.
//!
//! ```text
//!   openraft ── append/save_vote/truncate/purge ──▶ queue ──▶ writer thread
//!                 │ entries visible at once                   one redb transaction per
//!                 ▼ (pending map)                             batch, fsync, then every
//!               readers ◀── redb + pending ──────────────────  callback in order
//! ```
//!
//! Entries and metadata are stored sealed (a checksum each, `crate::stored`) and checked on
//! every read: a damaged entry is an error naming the file and the index, never an entry.
//!
//! The writer is a plain OS thread: an fsync that takes 500 ms blocks it alone, never the
//! async workers that send heartbeats. Operations are applied in the order they were
//! queued, so a vote saved after an append is never on disk before it.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::Bound;
use std::ops::RangeBounds;
use std::path::Path;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use std::time::SystemTime;
use std::time::UNIX_EPOCH;

use openraft::entry::RaftEntry;
use openraft::storage::IOFlushed;
use openraft::storage::RaftLogStorage;
use openraft::LogState;
use openraft::OptionalSend;
use openraft::RaftLogReader;
use redb::ReadableDatabase;
use redb::ReadableTable;
use redb::TableDefinition;
use tokio::sync::oneshot;

use crate::identity::META;
use crate::io_error;
use crate::stored::entry_from_record;
use crate::stored::entry_record;
use crate::stored::meta_record;
use crate::stored::put_meta_record;
use crate::stored::read_meta;
use crate::Entry;
use crate::LogId;
use crate::TypeConfig;
use crate::Vote;

pub(crate) const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
pub(crate) const VOTE_KEY: &str = "vote";
pub(crate) const COMMITTED_KEY: &str = "committed";
pub(crate) const LAST_PURGED_KEY: &str = "last_purged";

/// Most operations one group commit takes from the queue: bounds the size of one redb
/// transaction (and the latency of the first caller in it) under a flood of appends.
const GROUP_COMMIT_OPS_MAX: usize = 256;

/// How writes reach the disk. `Fsync` is the only mode for real nodes; `NoSync` exists for
/// the mutant build that proves the fault tests catch an acknowledgement before fsync: it
/// acknowledges each write at once and makes it durable at the next writeback boundary (see
/// [`NO_SYNC_WRITEBACK`]), as an OS writing dirty pages back would.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    Fsync,
    NoSync,
}

/// How often the `NoSync` mutant's "OS" writes back: at every multiple of this period on the
/// machine's clock, the same instants for every node of a test cluster on one machine.
///
/// A mutant that never synced lost the cluster's own membership in a power cut and left a
/// cluster that could not form again, which hid what the checkers must see: acknowledged
/// entries lost, and the next leader acknowledging others at the same log indexes. One that
/// synced a fixed lag after each node's own first unsynced write lost little: each node
/// synced at its own moments, and a new leader usually had the entries from whichever node
/// synced last. With shared boundaries every node loses the same writes, everything
/// acknowledged since the last boundary (up to 2 s; the simulator draws 0.5-5 s of
/// writeback). A power cut that lands before the first acknowledgement after a boundary
/// loses nothing, and on a loaded machine acknowledgements can stall for a good part of a
/// period: the nemesis cuts the power mid-period ([`until_writeback_midpoint`]).
pub const NO_SYNC_WRITEBACK: Duration = Duration::from_secs(2);

/// The writeback period `now` falls in (periods counted from the UNIX epoch).
fn writeback_period(now: SystemTime) -> u128 {
    now.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() / NO_SYNC_WRITEBACK.as_millis()
}

/// How long from `now` until the middle of a writeback period: a power cut then finds the
/// `NoSync` mutant with half a period of acknowledged writes not yet written back. Just after
/// a boundary it may find none (nothing acknowledged since), and the mutant loses nothing.
pub fn until_writeback_midpoint(now: SystemTime) -> Duration {
    let period_ms = NO_SYNC_WRITEBACK.as_millis();
    let phase_ms = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() % period_ms;
    let wait_ms = (period_ms / 2 + period_ms - phase_ms) % period_ms;
    Duration::from_millis(u64::try_from(wait_ms).unwrap_or(u64::MAX))
}

/// How long from `now` until the boundary that ends writeback period `period` (zero once
/// it has passed: a writer busy across a boundary writes back at once).
fn until_writeback_after(period: u128, now: SystemTime) -> Duration {
    let boundary_ms = (period + 1) * NO_SYNC_WRITEBACK.as_millis();
    let now_ms = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
    Duration::from_millis(u64::try_from(boundary_ms.saturating_sub(now_ms)).unwrap_or(u64::MAX))
}

/// Each op carries its records already encoded and sealed (`crate::stored`).
enum WriteOp {
    Append { entries: Vec<(u64, LogId, Vec<u8>)>, callback: IOFlushed<TypeConfig> },
    SaveVote { record: Vec<u8>, done: oneshot::Sender<io::Result<()>> },
    SaveCommitted { record: Vec<u8> },
    TruncateAfter { first_removed: u64, done: oneshot::Sender<io::Result<()>> },
    Purge { upto: u64, record: Vec<u8>, done: oneshot::Sender<io::Result<()>> },
}

/// Entries handed to the writer but not yet committed, readable meanwhile.
type Pending = Arc<Mutex<BTreeMap<u64, Entry>>>;

/// openraft's log storage over redb. Cheap to clone; clones share the writer.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<redb::Database>,
    /// The database file, for errors that name it.
    file: Arc<PathBuf>,
    pending: Pending,
    queue: mpsc::Sender<WriteOp>,
    last_purged: Arc<Mutex<Option<LogId>>>,
}

impl LogStore {
    /// Opens the log in `db` (opened from `file` by [`crate::open_database`], which brought
    /// it to the current storage format) and starts its writer thread.
    pub fn open(db: Arc<redb::Database>, file: &Path, sync: SyncMode) -> io::Result<LogStore> {
        // Create the tables so readers never see "table does not exist".
        let txn = db.begin_write().map_err(|e| io_error("open log", e))?;
        txn.open_table(LOG).map_err(|e| io_error("open log", e))?;
        txn.open_table(META).map_err(|e| io_error("open log", e))?;
        txn.commit().map_err(|e| io_error("open log", e))?;

        let file = Arc::new(file.to_path_buf());
        let last_purged = read_meta::<LogId>(&db, LAST_PURGED_KEY, &file)?;
        let pending: Pending = Arc::default();
        let (queue, receiver) = mpsc::channel();
        let writer_db = db.clone();
        let writer_pending = pending.clone();
        std::thread::Builder::new()
            .name("haven-log-writer".into())
            .spawn(move || run_writer(writer_db, writer_pending, receiver, sync))
            .map_err(|e| io_error("start log writer", e))?;
        Ok(LogStore { db, file, pending, queue, last_purged: Arc::new(Mutex::new(last_purged)) })
    }

    /// The last entry removed from the front of the log (covered by the snapshot), if any.
    pub fn last_purged(&self) -> Option<LogId> {
        *self.last_purged.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn submit(&self, op: WriteOp) -> io::Result<()> {
        self.queue.send(op).map_err(|_| io::Error::other("the log writer thread has stopped"))
    }

    async fn submit_and_wait(&self, make: impl FnOnce(oneshot::Sender<io::Result<()>>) -> WriteOp) -> io::Result<()> {
        let (done, wait) = oneshot::channel();
        self.submit(make(done))?;
        wait.await.map_err(|_| io::Error::other("the log writer thread has stopped"))?
    }

    fn last_in_db(&self) -> io::Result<Option<LogId>> {
        let txn = self.db.begin_read().map_err(|e| io_error("read log", e))?;
        let table = txn.open_table(LOG).map_err(|e| io_error("read log", e))?;
        let Some((index, value)) = table.last().map_err(|e| io_error("read log", e))? else {
            return Ok(None);
        };
        let entry = entry_from_record(index.value(), value.value(), &self.file)?;
        Ok(Some(entry.log_id()))
    }
}

fn run_writer(db: Arc<redb::Database>, pending: Pending, receiver: mpsc::Receiver<WriteOp>, sync: SyncMode) {
    // NoSync only: the writeback period of the oldest commit not yet durable. Its writes
    // become durable at the boundary that ends that period: by an empty durable commit when
    // the writer is idle then, or with the first batch written after it.
    let mut unsynced_in: Option<u128> = None;
    loop {
        let first = match unsynced_in {
            None => receiver.recv().ok(),
            Some(period) => match receiver.recv_timeout(until_writeback_after(period, SystemTime::now())) {
                Ok(op) => Some(op),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    // Idle at the boundary: the "OS" writes the dirty pages back now.
                    if let Err(error) = sync_now(&db) {
                        tracing::error!(%error, "log sync failed");
                    }
                    unsynced_in = None;
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => None,
            },
        };
        let Some(first) = first else { break };
        let mut batch = vec![first];
        while batch.len() < GROUP_COMMIT_OPS_MAX {
            match receiver.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let now = writeback_period(SystemTime::now());
        let durable = sync == SyncMode::Fsync || unsynced_in.is_some_and(|period| now > period);
        let result = write_batch(&db, &batch, durable);
        if result.is_ok() && sync == SyncMode::NoSync {
            // The period the commit ended in: what it wrote is in the "page cache" from then.
            unsynced_in =
                if durable { None } else { unsynced_in.or_else(|| Some(writeback_period(SystemTime::now()))) };
        }
        if let Err(error) = &result {
            tracing::error!(%error, "log write failed; the node cannot make progress");
        }
        for op in batch {
            let outcome = result.clone().map_err(io::Error::other);
            match op {
                WriteOp::Append { entries, callback } => {
                    if outcome.is_ok() {
                        let mut pending = pending.lock().unwrap_or_else(|e| e.into_inner());
                        for (index, log_id, _) in &entries {
                            // Only if still the same entry: a truncate and re-append may
                            // have replaced it while this batch was being written.
                            if pending.get(index).is_some_and(|entry| entry.log_id() == *log_id) {
                                pending.remove(index);
                            }
                        }
                    }
                    callback.io_completed(outcome);
                }
                WriteOp::SaveVote { done, .. } | WriteOp::TruncateAfter { done, .. } | WriteOp::Purge { done, .. } => {
                    let _ = done.send(outcome);
                }
                WriteOp::SaveCommitted { .. } => {}
            }
        }
    }
}

/// Writes `batch` in one transaction; `durable`: committed with fsync (and with it every
/// earlier commit that was not).
fn write_batch(db: &redb::Database, batch: &[WriteOp], durable: bool) -> Result<(), String> {
    write_batch_inner(db, batch, durable).map_err(|error| error.to_string())
}

/// The `NoSync` mutant's delayed writeback: an empty durable commit makes every earlier
/// unsynced one durable.
fn sync_now(db: &redb::Database) -> Result<(), String> {
    write_batch(db, &[], true)
}

fn write_batch_inner(db: &redb::Database, batch: &[WriteOp], durable: bool) -> Result<(), Box<dyn std::error::Error>> {
    let mut txn = db.begin_write()?;
    if !durable {
        txn.set_durability(redb::Durability::None)?;
    }
    {
        let mut log = txn.open_table(LOG)?;
        let mut meta = txn.open_table(META)?;
        for op in batch {
            match op {
                WriteOp::Append { entries, .. } => {
                    for (index, _, bytes) in entries {
                        log.insert(*index, bytes.as_slice())?;
                    }
                }
                WriteOp::SaveVote { record, .. } => put_meta_record(&mut meta, VOTE_KEY, record)?,
                WriteOp::SaveCommitted { record } => put_meta_record(&mut meta, COMMITTED_KEY, record)?,
                WriteOp::TruncateAfter { first_removed, .. } => {
                    log.retain_in(*first_removed.., |_, _| false)?;
                }
                WriteOp::Purge { upto, record, .. } => {
                    log.retain_in(..=*upto, |_, _| false)?;
                    put_meta_record(&mut meta, LAST_PURGED_KEY, record)?;
                }
            }
        }
    }
    txn.commit()?;
    Ok(())
}

fn range_to_bounds<RB: RangeBounds<u64>>(range: &RB) -> (Bound<u64>, Bound<u64>) {
    (range.start_bound().cloned(), range.end_bound().cloned())
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let bounds = range_to_bounds(&range);
        // Snapshot the pending entries first: an entry leaves `pending` only after it is
        // committed to redb, so reading redb second cannot miss it.
        let pending: BTreeMap<u64, Entry> = {
            let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            pending.range(bounds).map(|(index, entry)| (*index, entry.clone())).collect()
        };
        // The common case on a leader: replication reads entries just appended. When the
        // first one asked for is still pending, so is every later one (the writer commits in
        // queue order, and a truncation waits for the writer), so redb has none of them:
        // skip the read transaction and the hop to a blocking thread.
        let first = match bounds.0 {
            Bound::Included(index) => Some(index),
            Bound::Excluded(index) => index.checked_add(1),
            Bound::Unbounded => Some(0),
        };
        if first.is_some_and(|first| pending.contains_key(&first)) {
            return Ok(pending.into_values().collect());
        }
        let mut entries = BTreeMap::new();
        let db = self.db.clone();
        let file = self.file.clone();
        let stored = tokio::task::spawn_blocking(move || -> io::Result<Vec<(u64, Entry)>> {
            let txn = db.begin_read().map_err(|e| io_error("read log", e))?;
            let table = txn.open_table(LOG).map_err(|e| io_error("read log", e))?;
            let mut out = Vec::new();
            for item in table.range::<u64>(bounds).map_err(|e| io_error("read log", e))? {
                let (index, value) = item.map_err(|e| io_error("read log", e))?;
                let index = index.value();
                out.push((index, entry_from_record(index, value.value(), &file)?));
            }
            Ok(out)
        })
        .await
        .map_err(|e| io_error("read log task", e))??;
        entries.extend(stored);
        entries.extend(pending);
        Ok(entries.into_values().collect())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        read_meta(&self.db, VOTE_KEY, &self.file)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last_purged = *self.last_purged.lock().unwrap_or_else(|e| e.into_inner());
        let last_pending = {
            let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            pending.values().next_back().map(|entry| entry.log_id())
        };
        let last = match last_pending {
            Some(last) => Some(last),
            None => self.last_in_db()?,
        };
        Ok(LogState { last_purged_log_id: last_purged, last_log_id: last.or(last_purged) })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let record = meta_record(vote)?;
        self.submit_and_wait(|done| WriteOp::SaveVote { record, done }).await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // Not awaited: the committed id only speeds up re-applying the log on restart,
        // and openraft tolerates an older value.
        self.submit(WriteOp::SaveCommitted { record: meta_record(&committed)? })
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(read_meta::<Option<LogId>>(&self.db, COMMITTED_KEY, &self.file)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut encoded = Vec::new();
        {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            for entry in entries {
                let log_id = entry.log_id();
                encoded.push((log_id.index(), log_id, entry_record(&entry)?));
                pending.insert(log_id.index(), entry);
            }
        }
        self.submit(WriteOp::Append { entries: encoded, callback })
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let first_removed = last_log_id.map_or(0, |log_id| log_id.index() + 1);
        {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            pending.retain(|index, _| *index < first_removed);
        }
        self.submit_and_wait(|done| WriteOp::TruncateAfter { first_removed, done }).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let upto = log_id.index();
        {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            pending.retain(|index, _| *index > upto);
        }
        let record = meta_record(&log_id)?;
        self.submit_and_wait(|done| WriteOp::Purge { upto, record, done }).await?;
        *self.last_purged.lock().unwrap_or_else(|e| e.into_inner()) = Some(log_id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `NoSync` writeback falls on the shared boundaries: a write waits for the end of
    /// the period it was made in, and one whose boundary has already passed is written
    /// back at once.
    #[test]
    fn writeback_waits_for_the_end_of_the_period_of_the_write() {
        let period_ms = NO_SYNC_WRITEBACK.as_millis() as u64;
        let at = |ms: u64| UNIX_EPOCH + Duration::from_millis(ms);
        let start = 1_000 * period_ms;
        let period = writeback_period(at(start + 300));
        assert_eq!(period, writeback_period(at(start)), "one period from its start");
        assert_eq!(until_writeback_after(period, at(start + 300)), Duration::from_millis(period_ms - 300));
        assert_eq!(until_writeback_after(period, at(start + period_ms)), Duration::ZERO, "at the boundary");
        assert_eq!(until_writeback_after(period, at(start + 3 * period_ms)), Duration::ZERO, "long past it");
        assert_eq!(writeback_period(at(start + period_ms)), period + 1);
        let half = Duration::from_millis(period_ms / 2);
        assert_eq!(until_writeback_midpoint(at(start)), half, "from a boundary");
        assert_eq!(until_writeback_midpoint(at(start + period_ms / 2)), Duration::ZERO, "at the midpoint");
        assert_eq!(
            until_writeback_midpoint(at(start + period_ms / 2 + 1)),
            NO_SYNC_WRITEBACK - Duration::from_millis(1)
        );
    }
}
