//! The state machine: the pure `KvState` in memory, durable through snapshots.
//!
//! On start the last snapshot is loaded and openraft re-applies the log after it, so the
//! state after a restart is exactly the state before it. A snapshot is written to a
//! temporary file, fsynced, renamed over `snapshot.bin`, and the directory fsynced, so a
//! crash leaves either the old snapshot or the new one, never a torn one. Its bytes carry
//! checksums (`crate::snapshot_file`), checked when it is loaded, sent and installed.
//!
//! Building a snapshot never stops applies: `KvState` is made of persistent data structures,
//! so the builder takes an O(1) copy of the state between two applies (under the lock for
//! microseconds) and encodes and writes it on a blocking thread, off the async workers that
//! serve requests and heartbeats.
//!
//! The encoded state (the snapshot's data, also what InstallSnapshot sends) is versioned:
//!
//! ```text
//!   format 3:            "HVNS" 3  Applied (haven_core::codec)
//!   format 2:            "HVNS" 2  Applied with the state of `haven_core::kv::format_v2`, converted
//!   format 1:            "HVNS" 1  Applied with the state of `haven_core::kv::format_v1`, converted
//!   format 0 (no marker): Applied with the state of `haven_core::kv::format_v0`, converted
//! ```
//!
//! Each older format converts through the next one (0 ▶ 1 ▶ 2 ▶ 3): one copy of each
//! conversion, in `haven_core::kv::format_v0` .. `format_v2`.
//!
//! A format-0 snapshot begins with the encoded `Option<LogId>` of its last applied entry,
//! whose first byte is 0 or 1, so it can never be taken for a marked one. Snapshots written
//! by any earlier version keep reading; a newer format than this version knows is refused
//! with a message saying so.

use std::io;
use std::io::Cursor;
use std::path::Path;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::MutexGuard;
use std::time::Instant;

use futures::Stream;
use futures::TryStreamExt;
use haven_core::codec;
use haven_core::codec::DecodeError;
use haven_core::kv::format_v0::KvStateV0;
use haven_core::kv::format_v1::KvStateV1;
use haven_core::kv::format_v2::KvStateV2;
use haven_core::kv::Command;
use haven_core::kv::CommandResult;
use haven_core::kv::KvState;
use haven_core::limits::RECORD_OVERHEAD_BYTES;
use haven_core::replica_check::DigestRing;
use openraft::storage::EntryResponder;
use openraft::storage::RaftStateMachine;
use openraft::EntryPayload;
use openraft::OptionalSend;
use openraft::RaftSnapshotBuilder;
use serde::Deserialize;
use serde::Serialize;
use tokio::sync::watch;

use crate::integrity::byte_range;
use crate::integrity::CorruptData;
use crate::io_error;
use crate::snapshot_file::is_image;
use crate::snapshot_file::read_snapshot_file;
use crate::snapshot_file::snapshot_path;
use crate::snapshot_file::write_snapshot_file;
use crate::snapshot_file::SnapshotImage;
use crate::LogId;
use crate::Snapshot;
use crate::SnapshotData;
use crate::SnapshotMeta;
use crate::StoredMembership;
use crate::TypeConfig;

pub use crate::snapshot_file::SNAPSHOT_FILE;

/// Marks an encoded state of format 1 or later; the format number follows.
const SNAPSHOT_FORMAT_MARKER: &[u8; 4] = b"HVNS";

/// The format this version writes. 1: request ids remembered with their caller and a
/// digest of their command (issue 11). 2: the administrative state keeps removed members
/// and the clusters it was recovered from (issue 14). 3: the members' durability marks
/// (issue 13). Readable: 0 to 3.
pub const SNAPSHOT_FORMAT: u8 = 3;

/// What to do about data this version cannot read, for every such error.
pub const UNREADABLE_DATA_ADVICE: &str = "Nothing was changed; keep this data dir as it is. To bring the node \
    back: if the other members are healthy, move the data dir aside and start the node again with `--join` (it \
    gets every key from them); if the cluster lost its majority, run `haven recover` on a surviving member whose \
    data reads; if this node holds the only copy, restore the data dir from a backup, or run the haven version \
    that wrote it";

/// How errors name a snapshot that arrived from a peer (it has no file yet).
const RECEIVED_SNAPSHOT: &str = "the snapshot received from the leader";

/// The replicated state at one log position.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    pub kv: KvState,
}

/// `Applied` with the state in the layout of an older format, `K` (public for tests that
/// make old data).
#[derive(Serialize, Deserialize)]
pub struct AppliedAs<K> {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    pub kv: K,
}

impl<K: Into<KvState>> AppliedAs<K> {
    /// The same position, with the state converted to the current layout.
    fn converted(self) -> Applied {
        Applied { last_applied: self.last_applied, membership: self.membership, kv: self.kv.into() }
    }
}

/// `Applied` in snapshot format 0.
type AppliedV0 = AppliedAs<KvStateV0>;

/// `Applied` in snapshot format 1.
pub type AppliedV1 = AppliedAs<KvStateV1>;

/// `Applied` in snapshot format 2.
pub type AppliedV2 = AppliedAs<KvStateV2>;

/// Encodes the state as snapshot data of the current format.
pub fn encode_applied(applied: &Applied) -> io::Result<Vec<u8>> {
    encode_applied_after(Vec::new(), applied)
}

/// [`encode_applied`], appended to `buffer`.
fn encode_applied_after(mut buffer: Vec<u8>, applied: &Applied) -> io::Result<Vec<u8>> {
    buffer.extend_from_slice(SNAPSHOT_FORMAT_MARKER);
    buffer.push(SNAPSHOT_FORMAT);
    codec::encode_after(buffer, applied).map_err(|e| io_error("encode snapshot", e))
}

/// Decodes snapshot data of any format this version reads.
pub fn decode_applied(bytes: &[u8]) -> Result<Applied, DecodeError> {
    let refused = |problem: String| DecodeError { path: String::new(), problem };
    match bytes.strip_prefix(SNAPSHOT_FORMAT_MARKER) {
        None => Ok(codec::decode::<AppliedV0>(bytes)?.converted()),
        Some([1, rest @ ..]) => Ok(codec::decode::<AppliedV1>(rest)?.converted()),
        Some([2, rest @ ..]) => Ok(codec::decode::<AppliedV2>(rest)?.converted()),
        Some([SNAPSHOT_FORMAT, rest @ ..]) => codec::decode(rest),
        Some([format, ..]) => Err(refused(format!(
            "the snapshot has format {format}, newer than this version of haven reads ({SNAPSHOT_FORMAT}); run the \
             version that wrote it, or a newer one"
        ))),
        Some([]) => Err(refused("the snapshot ends right after its format marker".into())),
    }
}

/// What one log entry counts for the log's byte bound: its key and value, plus the
/// bookkeeping every entry carries (a good enough measure of its encoded size: the value
/// dominates any entry that matters for the bound).
fn entry_bytes(entry: &crate::Entry) -> u64 {
    match &entry.payload {
        EntryPayload::Normal(request) => match &request.command {
            Command::Put { key, value, .. } => haven_core::kv::entry_bytes(key, value),
            Command::Delete { key, .. } => haven_core::kv::entry_bytes(key, &[]),
            _ => RECORD_OVERHEAD_BYTES,
        },
        EntryPayload::Blank | EntryPayload::Membership(_) => RECORD_OVERHEAD_BYTES,
    }
}

struct Shared {
    /// Read through [`StateMachine::read`] only. A parking_lot lock because its reads may
    /// nest while a writer waits (`read_recursive`): a handler that holds a read in a
    /// temporary while calling a helper that reads again is easy to write and hard to
    /// see, and with std's lock (new readers queue behind a waiting writer) it deadlocks
    /// the handler and the apply for good.
    state: parking_lot::RwLock<Applied>,
    /// The cluster revision after each applied batch; watchers wait on it.
    revision: watch::Sender<u64>,
    snapshot_dir: PathBuf,
    history_revisions: u64,
    /// Bytes of log entries applied since the state was last copied for a snapshot (or
    /// installed from one): the log a restart would replay (see
    /// `haven_core::limits::LOG_BYTES_SINCE_SNAPSHOT_MAX`).
    log_bytes_since_snapshot: AtomicU64,
    /// The state's digest after each of the last applied entries, for the replicas to
    /// compare (`haven_core::replica_check`).
    digests: Mutex<DigestRing>,
}

/// openraft's state machine. Cheap to clone; clones share the state.
#[derive(Clone)]
pub struct StateMachine {
    shared: Arc<Shared>,
}

impl StateMachine {
    /// Loads the last snapshot in `data_dir`, if any.
    /// A damaged or undecodable `snapshot.bin` is an `InvalidData` error carrying
    /// [`CorruptData`] (file, byte range, problem). A version 1 file (no checksums) is
    /// rewritten as version 2 here, once it decoded.
    pub fn open(data_dir: &Path, history_revisions: u64) -> io::Result<StateMachine> {
        let snapshot_dir = data_dir.to_path_buf();
        let path = snapshot_dir.join(SNAPSHOT_FILE);
        let mut state = match read_snapshot_file(&snapshot_dir)? {
            Some(read) => {
                let applied = applied_from_image(&read.image, &path)?;
                if read.was_version_1 {
                    write_snapshot_file(&snapshot_dir, &read.image)?;
                    tracing::info!(
                        file = %snapshot_path(&snapshot_dir).display(),
                        "snapshot rewritten in format version 2 (with checksums)"
                    );
                }
                applied
            }
            None => Applied::default(),
        };
        state.kv.set_history_revisions(history_revisions);
        let (revision, _) = watch::channel(state.kv.revision());
        let mut digests = DigestRing::default();
        if let Some(last_applied) = state.last_applied {
            digests.record(last_applied.index(), state.kv.replica_digest());
        }
        Ok(StateMachine {
            shared: Arc::new(Shared {
                state: parking_lot::RwLock::new(state),
                revision,
                snapshot_dir,
                history_revisions,
                log_bytes_since_snapshot: AtomicU64::new(0),
                digests: Mutex::new(digests),
            }),
        })
    }

    /// Bytes of log entries applied since the last snapshot was taken or installed
    /// (counted as [`entry_bytes`] each).
    pub fn log_bytes_since_snapshot(&self) -> u64 {
        self.shared.log_bytes_since_snapshot.load(Ordering::Relaxed)
    }

    /// The state's digests after the last applied entries.
    pub fn digests(&self) -> MutexGuard<'_, DigestRing> {
        self.shared.digests.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// TEST HOOK (`--unsafe-test-mode diverge-state`): changes `key`'s value in this
    /// replica's memory only, as a bug or undetected memory damage would, so that the
    /// replicas' comparison has something to find. Never called by a real node.
    pub fn diverge_for_test(&self, key: &str) {
        let mut state = self.shared.state.write();
        let mut value = state.kv.get(key).map(|entry| entry.value.clone()).unwrap_or_default();
        value.push(b'!');
        let command = Command::Put { key: key.to_string(), value, prev_revision: None };
        state.kv.apply(&haven_core::kv::Request::new(None, command));
        tracing::warn!(key, "TEST HOOK: changed a value in this replica's state only");
    }

    /// The size of `snapshot.bin`, if there is one.
    pub fn snapshot_file_bytes(&self) -> Option<u64> {
        std::fs::metadata(snapshot_path(&self.shared.snapshot_dir)).ok().map(|metadata| metadata.len())
    }

    /// Read access to the current state. Hold it briefly: applies wait for it. Reads may
    /// nest (a helper that reads again while its caller holds a read), even while an apply
    /// waits: the apply goes once the last reader lets go.
    pub fn read(&self) -> parking_lot::RwLockReadGuard<'_, Applied> {
        self.shared.state.read_recursive()
    }

    /// A receiver that changes whenever the cluster revision advances.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.revision.subscribe()
    }

    fn publish_revision(&self, revision: u64) {
        self.shared.revision.send_if_modified(|current| {
            let changed = *current != revision;
            *current = revision;
            changed
        });
    }
}

/// The error for a snapshot this version cannot read (its checksums hold, so it is not
/// damage): which file, what failed, what to do.
pub(crate) fn unreadable(path: &Path, what: &str, error: &dyn std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "cannot read the snapshot {}: {what} does not decode: {error}. {UNREADABLE_DATA_ADVICE}",
            path.display()
        ),
    )
}

/// The state held in a verified image. Its checksums passed, so a failure here is not
/// damage on disk but data this version cannot read.
pub(crate) fn applied_from_image(image: &SnapshotImage, origin: &Path) -> io::Result<Applied> {
    decode_applied(image.data()).map_err(|error| {
        let start = image.data_offset();
        let place = format!("the state in it ({})", byte_range(start, start + image.data().len() as u64));
        unreadable(origin, &place, &error)
    })
}

/// A snapshot image of `applied`, its state encoded in place.
pub(crate) fn image_of(applied: &Applied) -> io::Result<SnapshotImage> {
    let meta = SnapshotMeta { last_log_id: applied.last_applied, last_membership: applied.membership.clone() };
    SnapshotImage::build(&meta, |buffer| encode_applied_after(buffer, applied))
}

/// Builds one snapshot from the copy of the state taken when it was created.
pub struct SnapshotBuilder {
    applied: Option<Applied>,
    snapshot_dir: PathBuf,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let applied = self.applied.take().ok_or_else(|| io::Error::other("this snapshot builder was used already"))?;
        let dir = self.snapshot_dir.clone();
        // Encoding tens of megabytes takes milliseconds of CPU: not on an async worker.
        let (image, encode_ms, write_ms) = tokio::task::spawn_blocking(move || -> io::Result<_> {
            let started = Instant::now();
            let image = image_of(&applied)?;
            // Dropped here, not on an async worker: the parts that applies have replaced since
            // the copy was taken are freed now.
            drop(applied);
            let encoded = Instant::now();
            write_snapshot_file(&dir, &image)?;
            Ok((image, (encoded - started).as_millis(), encoded.elapsed().as_millis()))
        })
        .await
        .map_err(|e| io_error("snapshot task", e))??;
        tracing::info!(
            last_log_id = ?image.meta().last_log_id,
            bytes = image.bytes().len(),
            encode_ms,
            write_ms,
            "snapshot written"
        );
        let meta = image.meta().clone();
        Ok(Snapshot { meta, snapshot: Cursor::new(image.into_bytes()) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let state = self.read();
        Ok((state.last_applied, state.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let mut revision = None;
        while let Some((entry, responder)) = entries.try_next().await? {
            self.shared.log_bytes_since_snapshot.fetch_add(entry_bytes(&entry), Ordering::Relaxed);
            let result = {
                let mut state = self.shared.state.write();
                state.last_applied = Some(entry.log_id);
                let result = match &entry.payload {
                    EntryPayload::Blank => CommandResult::Ok { revision: state.kv.revision() },
                    EntryPayload::Normal(request) => state.kv.apply(request),
                    EntryPayload::Membership(membership) => {
                        state.membership = StoredMembership::new(Some(entry.log_id), membership.clone());
                        CommandResult::Ok { revision: state.kv.revision() }
                    }
                };
                revision = Some(state.kv.revision());
                self.digests().record(entry.log_id.index(), state.kv.replica_digest());
                result
            };
            if let Some(responder) = responder {
                responder.send(result);
            }
        }
        if let Some(revision) = revision {
            self.publish_revision(revision);
        }
        Ok(())
    }

    /// Called by openraft between two applies: the copy is the state at one log position.
    /// O(1): the persistent structures share everything with the live state until an apply
    /// changes it.
    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.shared.log_bytes_since_snapshot.store(0, Ordering::Relaxed);
        SnapshotBuilder { applied: Some(self.read().clone()), snapshot_dir: self.shared.snapshot_dir.clone() }
    }

    /// `snapshot` is a version 2 image (verified again here: the peer layer checked it on
    /// receipt, before openraft saw it) or, from a node of an older version, the bare
    /// encoded state, which is wrapped in an image.
    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: SnapshotData) -> Result<(), io::Error> {
        let bytes = snapshot.into_inner();
        let dir = self.shared.snapshot_dir.clone();
        let history_revisions = self.shared.history_revisions;
        let meta_given = meta.clone();
        let mut applied = tokio::task::spawn_blocking(move || -> io::Result<Applied> {
            let origin = Path::new(RECEIVED_SNAPSHOT);
            let image = if is_image(&bytes) {
                let image = SnapshotImage::verify(bytes, origin).map_err(CorruptData::into_io)?;
                if image.meta() != &meta_given {
                    return Err(CorruptData::new(
                        origin,
                        "the header",
                        format!("the image holds {:?}, the transfer announced {:?}", image.meta(), meta_given),
                    )
                    .into_io());
                }
                image
            } else {
                SnapshotImage::from_legacy_transfer(&meta_given, &bytes)?
            };
            let mut applied = applied_from_image(&image, origin).map_err(|error| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "cannot install the snapshot {meta_given} sent by the leader: {error}. Nothing was changed; the \
                         leader and this node may run versions that do not share a snapshot format"
                    ),
                )
            })?;
            applied.kv.set_history_revisions(history_revisions);
            write_snapshot_file(&dir, &image)?;
            Ok(applied)
        })
        .await
        .map_err(|e| io_error("snapshot task", e))??;
        let revision = applied.kv.revision();
        applied.last_applied = meta.last_log_id;
        applied.membership = meta.last_membership.clone();
        let replaced = {
            let mut state = self.shared.state.write();
            if let Some(last_applied) = meta.last_log_id {
                self.digests().record(last_applied.index(), applied.kv.replica_digest());
            }
            std::mem::replace(&mut *state, applied)
        };
        // Freed outside the lock and off the async workers: it may be large.
        tokio::task::spawn_blocking(move || drop(replaced));
        self.shared.log_bytes_since_snapshot.store(0, Ordering::Relaxed);
        tracing::info!(last_log_id = ?meta.last_log_id, revision, "snapshot installed");
        self.publish_revision(revision);
        Ok(())
    }

    /// The snapshot on disk, verified before it is sent anywhere: a damaged one is an error
    /// (which stops this node's Raft core; see docs/architecture.md, "Integrity"), never a
    /// transfer.
    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        let dir = self.shared.snapshot_dir.clone();
        let read = tokio::task::spawn_blocking(move || read_snapshot_file(&dir))
            .await
            .map_err(|e| io_error("snapshot task", e))??;
        Ok(read.map(|read| {
            let meta = read.image.meta().clone();
            Snapshot { meta, snapshot: Cursor::new(read.image.into_bytes()) }
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A reader that reads again while an apply waits for the lock must not deadlock. The
    /// status handler held a read guard in a temporary of its struct literal while calling
    /// helpers that read again; with a lock that makes new readers queue behind a waiting
    /// writer, the handler waited for the apply and the apply for the handler, forever: a
    /// node that stopped logging and answering (ha_control::ten_primary_kills, one run in
    /// three on the loaded CI machine, stacks taken with gdb).
    #[test]
    fn a_second_read_while_an_apply_waits_does_not_deadlock() {
        let dir = tempfile::tempdir().unwrap();
        let machine = StateMachine::open(dir.path(), 16).unwrap();
        let (done, finished) = std::sync::mpsc::channel();
        let reader = {
            let machine = machine.clone();
            std::thread::spawn(move || {
                let first = machine.read();
                // Long enough for the writer below to queue behind `first`.
                std::thread::sleep(Duration::from_millis(300));
                let second = machine.read();
                assert_eq!(first.last_applied, second.last_applied);
                drop((first, second));
                done.send(()).unwrap();
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        let writer = {
            let machine = machine.clone();
            std::thread::spawn(move || machine.diverge_for_test("k"))
        };
        assert!(
            finished.recv_timeout(Duration::from_secs(20)).is_ok(),
            "a second read while an apply waited deadlocked the reader and the apply"
        );
        reader.join().unwrap();
        writer.join().unwrap();
        assert!(machine.read().kv.get("k").is_some(), "the waiting write was made once the readers let go");
    }
}
