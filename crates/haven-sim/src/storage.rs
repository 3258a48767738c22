//! A simulated disk that forgets what was not synced, and openraft's log store and state
//! machine on top of it.
//!
//! ```text
//!   openraft ── append / save_vote / truncate / purge / save_committed
//!      │            │ applied at once to the volatile image (reads see it)
//!      │            ▼
//!      │        write queue ── flusher task: sleep one fsync latency, take a batch,
//!      │                       apply it to the durable image, then complete each op
//!      │                       in order (IOFlushed / the awaited save)
//!      ▼
//!   crash: volatile := durable, queue dropped, incarnation + 1 (old handles get errors)
//! ```
//!
//! This mirrors `haven-store`'s redb log (one writer, group commit, `IOFlushed` only after
//! the commit) with the disk reduced to two images. The state machine keeps `KvState` in
//! memory and is made durable only by snapshots, which are written synchronously (Haven
//! writes `snapshot.bin` with fsync before it returns); on restart openraft re-applies the
//! log after the snapshot up to the durable committed id, exactly as a real node does.
//!
//! The `AckBeforeFsync` mutant reports appends flushed and votes saved as soon as they are
//! queued: openraft then counts a node towards a quorum for entries a crash will take away.

use std::collections::BTreeMap;
use std::collections::VecDeque;
use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::MutexGuard;
use std::time::Duration;

use futures::Stream;
use futures::TryStreamExt;
use haven_core::kv::KvState;
use haven_core::limits::HISTORY_REVISIONS_MIN;
use haven_core::replica_check::StateDigest;
use openraft::entry::RaftEntry;
use openraft::storage::EntryResponder;
use openraft::storage::IOFlushed;
use openraft::storage::RaftLogStorage;
use openraft::storage::RaftStateMachine;
use openraft::EntryPayload;
use openraft::LogState;
use openraft::OptionalSend;
use openraft::RaftLogReader;
use openraft::RaftSnapshotBuilder;
use tokio::sync::oneshot;
use tokio::sync::Notify;

use crate::rng::SimRng;
use crate::trace::fnv1a;
use crate::types::CommandResult;
use crate::types::Entry;
use crate::types::LogId;
use crate::types::NodeId;
use crate::types::Request;
use crate::types::SimTypes;
use crate::types::Snapshot;
use crate::types::SnapshotMeta;
use crate::types::StoredMembership;
use crate::types::Vote;

/// Most operations one flush takes from the queue, as `haven-store`'s
/// `GROUP_COMMIT_OPS_MAX`: bounds one batch under a flood of appends.
const GROUP_COMMIT_OPS_MAX: usize = 256;

/// An fsync's latency, in microseconds: most take 0.2-4 ms (an SSD's flush)...
const FSYNC_US_MIN: u64 = 200;
const FSYNC_US_MAX: u64 = 4_000;
/// ...and now and then one stalls for up to 60 ms (a busy device), which widens the window
/// in which a crash finds entries written but not yet synced.
const FSYNC_STALL_PERCENT: u64 = 3;
const FSYNC_STALL_US_MAX: u64 = 60_000;

/// Without fsync, written data reaches the disk when the OS writes dirty pages back: within
/// 0.5-5 s here (Linux flushes dirty pages older than 30 s at the latest; sooner under
/// memory pressure). This is the `AckBeforeFsync` mutant's flush latency.
const WRITEBACK_US_MIN: u64 = 500_000;
const WRITEBACK_US_MAX: u64 = 5_000_000;

/// History kept by each simulated `KvState`: the smallest a real node accepts, so
/// snapshots (cloned whole) stay cheap.
const SIM_HISTORY_REVISIONS: u64 = HISTORY_REVISIONS_MIN;

/// How the disk acknowledges writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// Completed only once durable: the correct behaviour.
    Fsync,
    /// Mutant: completed when queued, durable only once the OS writes it back (or never,
    /// if the node crashes first), as Haven's `crash-sim-ack-before-fsync` build.
    AckBeforeFsync,
}

/// The replicated state at one log position (as `haven-store`'s `Applied`).
#[derive(Debug, Clone, Default)]
pub struct Applied {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    pub kv: KvState,
}

impl Applied {
    fn fresh() -> Applied {
        Applied { last_applied: None, membership: StoredMembership::default(), kv: KvState::new(SIM_HISTORY_REVISIONS) }
    }
}

/// Vote, log and committed id as one image (the volatile one or the durable one).
#[derive(Debug, Clone, Default)]
struct LogImage {
    vote: Option<Vote>,
    committed: Option<LogId>,
    last_purged: Option<LogId>,
    entries: BTreeMap<u64, Entry>,
}

#[derive(Debug)]
enum WriteOp {
    Append(Vec<Entry>),
    Vote(Vote),
    Committed(Option<LogId>),
    /// Removes every entry from this index on.
    TruncateFrom(u64),
    Purge(LogId),
}

impl LogImage {
    fn apply(&mut self, op: &WriteOp) {
        match op {
            WriteOp::Append(entries) => {
                for entry in entries {
                    self.entries.insert(entry.index(), entry.clone());
                }
            }
            WriteOp::Vote(vote) => self.vote = Some(*vote),
            WriteOp::Committed(committed) => self.committed = *committed,
            WriteOp::TruncateFrom(first_removed) => {
                let _removed = self.entries.split_off(first_removed);
            }
            WriteOp::Purge(log_id) => {
                self.entries = self.entries.split_off(&(log_id.index + 1));
                self.last_purged = Some(*log_id);
            }
        }
    }
}

enum Completion {
    Flushed(IOFlushed<SimTypes>),
    Waiter(oneshot::Sender<io::Result<()>>),
    Nothing,
}

struct Queued {
    op: WriteOp,
    done: Completion,
}

/// A snapshot as kept on the disk.
#[derive(Debug, Clone)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    data: Applied,
}

/// What a crash took away, for the run's statistics.
#[derive(Debug, Clone, Copy, Default)]
pub struct DiskStats {
    pub flushes: u64,
    pub ops_lost_in_crashes: u64,
}

struct Disk {
    /// Bumped by every crash: handles of an earlier incarnation of the node get errors.
    incarnation: u64,
    durable: LogImage,
    volatile: LogImage,
    queue: VecDeque<Queued>,
    /// Durable as soon as it is written (see the module docs).
    snapshot: Option<StoredSnapshot>,
    /// A paused node's disk does not flush (the process is stopped).
    paused: bool,
    rng: SimRng,
    mode: SyncMode,
    stats: DiskStats,
}

/// One node's disk. It outlives the node's incarnations; the simulator holds it.
pub struct DiskCell {
    disk: Mutex<Disk>,
    wake: Notify,
}

fn crashed() -> io::Error {
    io::Error::other("the node crashed: this handle belongs to an earlier incarnation")
}

impl DiskCell {
    pub fn new(rng: SimRng, mode: SyncMode) -> Arc<DiskCell> {
        Arc::new(DiskCell {
            disk: Mutex::new(Disk {
                incarnation: 0,
                durable: LogImage::default(),
                volatile: LogImage::default(),
                queue: VecDeque::new(),
                snapshot: None,
                paused: false,
                rng,
                mode,
                stats: DiskStats::default(),
            }),
            wake: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Disk> {
        // Every update under this lock is a single assignment or a whole-image swap.
        self.disk.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Locks the disk for a handle of `incarnation`, or fails if the node crashed since.
    fn lock_for(&self, incarnation: u64) -> io::Result<MutexGuard<'_, Disk>> {
        let disk = self.lock();
        if disk.incarnation == incarnation {
            Ok(disk)
        } else {
            Err(crashed())
        }
    }

    pub fn incarnation(&self) -> u64 {
        self.lock().incarnation
    }

    pub fn stats(&self) -> DiskStats {
        self.lock().stats
    }

    /// Power loss: everything not yet flushed is gone, and so is every handle to the old
    /// incarnation. Returns the new incarnation.
    pub fn crash(&self) -> u64 {
        let mut disk = self.lock();
        disk.incarnation += 1;
        disk.volatile = disk.durable.clone();
        disk.stats.ops_lost_in_crashes += disk.queue.len() as u64;
        // Dropping the completions: nobody is left to hear about them.
        disk.queue.clear();
        disk.incarnation
    }

    pub fn set_paused(&self, paused: bool) {
        self.lock().paused = paused;
        if !paused {
            self.wake.notify_one();
        }
    }

    fn submit(&self, mut disk: MutexGuard<'_, Disk>, op: WriteOp, done: Completion) {
        disk.volatile.apply(&op);
        let done = match (disk.mode, done) {
            (SyncMode::AckBeforeFsync, Completion::Flushed(callback)) => {
                callback.io_completed(Ok(()));
                Completion::Nothing
            }
            (SyncMode::AckBeforeFsync, Completion::Waiter(waiter)) => {
                let _ = waiter.send(Ok(()));
                Completion::Nothing
            }
            (_, done) => done,
        };
        disk.queue.push_back(Queued { op, done });
        drop(disk);
        self.wake.notify_one();
    }

    async fn submit_and_wait(&self, incarnation: u64, op: WriteOp) -> io::Result<()> {
        let disk = self.lock_for(incarnation)?;
        let (done, wait) = oneshot::channel();
        self.submit(disk, op, Completion::Waiter(done));
        wait.await.map_err(|_| crashed())?
    }

    /// The disk's writer: one flush at a time, each after an fsync's latency. Runs until
    /// the node of `incarnation` crashes.
    pub async fn run_flusher(self: Arc<Self>, incarnation: u64) {
        loop {
            let latency = {
                let mut disk = self.lock();
                if disk.incarnation != incarnation {
                    return;
                }
                if disk.queue.is_empty() || disk.paused {
                    None
                } else if disk.mode == SyncMode::AckBeforeFsync {
                    Some(Duration::from_micros(disk.rng.range(WRITEBACK_US_MIN, WRITEBACK_US_MAX)))
                } else {
                    let stall = disk.rng.chance_percent(FSYNC_STALL_PERCENT);
                    let max = if stall { FSYNC_STALL_US_MAX } else { FSYNC_US_MAX };
                    Some(Duration::from_micros(disk.rng.range(FSYNC_US_MIN, max)))
                }
            };
            let Some(latency) = latency else {
                self.wake.notified().await;
                continue;
            };
            // Disk latency is the machine's, not the node's clock: the simulation's time.
            tokio::time::sleep(latency).await;
            let batch: Vec<Queued> = {
                let mut disk = self.lock();
                if disk.incarnation != incarnation {
                    return;
                }
                if disk.paused {
                    continue;
                }
                let take = disk.queue.len().min(GROUP_COMMIT_OPS_MAX);
                let batch: Vec<Queued> = disk.queue.drain(..take).collect();
                for queued in &batch {
                    disk.durable.apply(&queued.op);
                }
                disk.stats.flushes += 1;
                batch
            };
            for queued in batch {
                match queued.done {
                    Completion::Flushed(callback) => callback.io_completed(Ok(())),
                    Completion::Waiter(waiter) => {
                        let _ = waiter.send(Ok(()));
                    }
                    Completion::Nothing => {}
                }
            }
        }
    }

    /// The state machine a node of the current incarnation starts from: the last snapshot.
    fn snapshot_state(&self) -> Applied {
        match &self.lock().snapshot {
            Some(snapshot) => snapshot.data.clone(),
            None => Applied::fresh(),
        }
    }
}

/// openraft's log storage over a [`DiskCell`], for one incarnation of a node.
#[derive(Clone)]
pub struct LogStore {
    cell: Arc<DiskCell>,
    incarnation: u64,
}

impl LogStore {
    pub fn open(cell: Arc<DiskCell>) -> LogStore {
        let incarnation = cell.incarnation();
        LogStore { cell, incarnation }
    }
}

impl RaftLogReader<SimTypes> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let disk = self.cell.lock_for(self.incarnation)?;
        Ok(disk.volatile.entries.range(range).map(|(_, entry)| entry.clone()).collect())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(self.cell.lock_for(self.incarnation)?.volatile.vote)
    }
}

impl RaftLogStorage<SimTypes> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<SimTypes>, io::Error> {
        let disk = self.cell.lock_for(self.incarnation)?;
        let last_purged = disk.volatile.last_purged;
        let last = disk.volatile.entries.values().next_back().map(|entry| entry.log_id());
        Ok(LogState { last_purged_log_id: last_purged, last_log_id: last.or(last_purged) })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        self.cell.submit_and_wait(self.incarnation, WriteOp::Vote(*vote)).await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // Not awaited, as in haven-store: the committed id only shortens re-applying the
        // log after a restart, and openraft tolerates an older one.
        let disk = self.cell.lock_for(self.incarnation)?;
        self.cell.submit(disk, WriteOp::Committed(committed), Completion::Nothing);
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.cell.lock_for(self.incarnation)?.volatile.committed)
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<SimTypes>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let disk = self.cell.lock_for(self.incarnation)?;
        let entries: Vec<Entry> = entries.into_iter().collect();
        self.cell.submit(disk, WriteOp::Append(entries), Completion::Flushed(callback));
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let first_removed = last_log_id.map_or(0, |log_id| log_id.index + 1);
        self.cell.submit_and_wait(self.incarnation, WriteOp::TruncateFrom(first_removed)).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        self.cell.submit_and_wait(self.incarnation, WriteOp::Purge(log_id)).await
    }
}

/// Told of every entry a state machine applies and every snapshot it installs, so the
/// simulator can compare replicas at the moment they apply (see `invariants`).
pub trait ApplyObserver: Send + Sync {
    /// `node` applied `log_id`, whose payload has `payload_fingerprint`, and its `KvState`
    /// then has `state_digest`.
    fn applied(&self, node: NodeId, log_id: &LogId, payload_fingerprint: u64, state_digest: StateDigest);
    /// `node` replaced its state with a snapshot up to `last_log_id`.
    fn installed(&self, node: NodeId, last_log_id: Option<&LogId>, state_digest: StateDigest);
}

/// A stable fingerprint of an entry's payload, equal on every node for the same entry.
pub fn payload_fingerprint(payload: &EntryPayload<Request, NodeId, openraft::EmptyNode>) -> u64 {
    // Debug of requests and memberships lists maps in key order (BTreeMap), so the text
    // is the same on every node and every run.
    fnv1a(format!("{payload:?}").as_bytes())
}

/// openraft's state machine: `KvState` in memory, snapshots on the [`DiskCell`].
#[derive(Clone)]
pub struct StateMachine {
    node: NodeId,
    state: Arc<Mutex<Applied>>,
    cell: Arc<DiskCell>,
    incarnation: u64,
    observer: Arc<dyn ApplyObserver>,
}

impl StateMachine {
    /// The state machine of the node's current incarnation, from its last snapshot.
    pub fn open(node: NodeId, cell: Arc<DiskCell>, observer: Arc<dyn ApplyObserver>) -> StateMachine {
        let state = cell.snapshot_state();
        let incarnation = cell.incarnation();
        StateMachine { node, state: Arc::new(Mutex::new(state)), cell, incarnation, observer }
    }

    fn lock(&self) -> MutexGuard<'_, Applied> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A copy of the applied state (for reads and checks).
    pub fn read<T>(&self, f: impl FnOnce(&Applied) -> T) -> T {
        f(&self.lock())
    }
}

impl RaftSnapshotBuilder<SimTypes> for StateMachine {
    type SnapshotData = Applied;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let data = self.lock().clone();
        let meta = SnapshotMeta { last_log_id: data.last_applied, last_membership: data.membership.clone() };
        self.cell.lock_for(self.incarnation)?.snapshot =
            Some(StoredSnapshot { meta: meta.clone(), data: data.clone() });
        Ok(Snapshot { meta, snapshot: data })
    }
}

impl RaftStateMachine<SimTypes> for StateMachine {
    type SnapshotData = Applied;
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let state = self.lock();
        Ok((state.last_applied, state.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<SimTypes>, io::Error>> + Unpin + OptionalSend,
    {
        while let Some((entry, responder)) = entries.try_next().await? {
            let (result, digest) = {
                let mut state = self.lock();
                state.last_applied = Some(entry.log_id);
                let result = match &entry.payload {
                    EntryPayload::Blank => CommandResult::Ok { revision: state.kv.revision() },
                    EntryPayload::Normal(request) => state.kv.apply(request),
                    EntryPayload::Membership(membership) => {
                        state.membership = StoredMembership::new(Some(entry.log_id), membership.clone());
                        CommandResult::Ok { revision: state.kv.revision() }
                    }
                };
                (result, state.kv.replica_digest())
            };
            self.observer.applied(self.node, &entry.log_id, payload_fingerprint(&entry.payload), digest);
            if let Some(responder) = responder {
                responder.send(result);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: Applied) -> Result<(), io::Error> {
        let mut applied = snapshot;
        applied.last_applied = meta.last_log_id;
        applied.membership = meta.last_membership.clone();
        self.cell.lock_for(self.incarnation)?.snapshot =
            Some(StoredSnapshot { meta: meta.clone(), data: applied.clone() });
        let digest = applied.kv.replica_digest();
        *self.lock() = applied;
        self.observer.installed(self.node, meta.last_log_id.as_ref(), digest);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        let disk = self.cell.lock_for(self.incarnation)?;
        Ok(disk.snapshot.as_ref().map(|stored| Snapshot { meta: stored.meta.clone(), snapshot: stored.data.clone() }))
    }
}
