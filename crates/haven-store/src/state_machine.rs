//! The state machine: the pure `KvState` in memory, durable through snapshots.
//!
//! On start the last snapshot is loaded and openraft re-applies the log after it, so the
//! state after a restart is exactly the state before it. A snapshot is written to a
//! temporary file, fsynced, renamed over `snapshot.bin`, and the directory fsynced, so a
//! crash leaves either the old snapshot or the new one, never a torn one.
//!
//! Building a snapshot never stops applies: `KvState` is made of persistent data structures,
//! so the builder takes an O(1) copy of the state between two applies (under the lock for
//! microseconds) and encodes and writes it on a blocking thread, off the async workers that
//! serve requests and heartbeats.
//!
//! The encoded state (the snapshot's data, also what InstallSnapshot sends) is versioned:
//!
//! ```text
//!   format 1 and later:  "HVNS" format-number  Applied (haven_core::codec)
//!   format 0 (no marker): Applied with the state of `haven_core::kv::format_v0`, converted
//! ```
//!
//! A format-0 snapshot begins with the encoded `Option<LogId>` of its last applied entry,
//! whose first byte is 0 or 1, so it can never be taken for a marked one. Snapshots written
//! by any earlier version keep reading; a newer format than this version knows is refused
//! with a message saying so.

use std::io;
use std::io::Cursor;
use std::io::Write;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::RwLock;
use std::sync::RwLockReadGuard;
use std::time::Instant;

use futures::Stream;
use futures::TryStreamExt;
use haven_core::codec;
use haven_core::codec::DecodeError;
use haven_core::kv::format_v0::KvStateV0;
use haven_core::kv::CommandResult;
use haven_core::kv::KvState;
use openraft::storage::EntryResponder;
use openraft::storage::RaftStateMachine;
use openraft::EntryPayload;
use openraft::OptionalSend;
use openraft::RaftSnapshotBuilder;
use serde::Deserialize;
use serde::Serialize;
use tokio::sync::watch;

use crate::io_error;
use crate::LogId;
use crate::Snapshot;
use crate::SnapshotData;
use crate::SnapshotMeta;
use crate::StoredMembership;
use crate::TypeConfig;

pub const SNAPSHOT_FILE: &str = "snapshot.bin";

/// Marks an encoded state of format 1 or later; the format number follows.
const SNAPSHOT_FORMAT_MARKER: &[u8; 4] = b"HVNS";

/// The format this version writes. 1: request ids remembered with their caller and a
/// digest of their command (issue 11). Readable: 0 and 1.
pub const SNAPSHOT_FORMAT: u8 = 1;

/// What to do about data this version cannot read, for every such error.
pub const UNREADABLE_DATA_ADVICE: &str = "Nothing was changed; keep this data dir as it is. To bring the node \
    back: if the other members are healthy, move the data dir aside and start the node again with `--join` (it \
    gets every key from them); if the cluster lost its majority, run `haven recover` on a surviving member whose \
    data reads; if this node holds the only copy, restore the data dir from a backup, or run the haven version \
    that wrote it";

/// The replicated state at one log position.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    pub kv: KvState,
}

/// `Applied` in snapshot format 0.
#[derive(Deserialize)]
struct AppliedV0 {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    kv: KvStateV0,
}

/// Encodes the state as snapshot data of the current format.
pub fn encode_applied(applied: &Applied) -> io::Result<Vec<u8>> {
    let mut prefix = SNAPSHOT_FORMAT_MARKER.to_vec();
    prefix.push(SNAPSHOT_FORMAT);
    codec::encode_after(prefix, applied).map_err(|e| io_error("encode snapshot", e))
}

/// Decodes snapshot data of any format this version reads.
pub fn decode_applied(bytes: &[u8]) -> Result<Applied, DecodeError> {
    let refused = |problem: String| DecodeError { path: String::new(), problem };
    match bytes.strip_prefix(SNAPSHOT_FORMAT_MARKER) {
        None => {
            let old: AppliedV0 = codec::decode(bytes)?;
            Ok(Applied { last_applied: old.last_applied, membership: old.membership, kv: old.kv.into() })
        }
        Some([SNAPSHOT_FORMAT, rest @ ..]) => codec::decode(rest),
        Some([format, ..]) => Err(refused(format!(
            "the snapshot has format {format}, newer than this version of haven reads ({SNAPSHOT_FORMAT}); run the \
             version that wrote it, or a newer one"
        ))),
        Some([]) => Err(refused("the snapshot ends right after its format marker".into())),
    }
}

/// A snapshot as stored on disk: its metadata and the encoded `Applied`.
#[derive(Serialize, Deserialize)]
pub(crate) struct SnapshotFile {
    pub(crate) meta: SnapshotMeta,
    /// Postcard writes a byte string exactly like a sequence of `u8`; decoding it as one
    /// copies it at once instead of byte by byte.
    #[serde(with = "haven_core::kv::byte_string")]
    pub(crate) data: Vec<u8>,
}

/// Writes of a snapshot file go to disk in pieces of this size, each flushed before the
/// next (see [`write_snapshot_file`]).
const SNAPSHOT_WRITE_CHUNK_BYTES: usize = 1 << 20;

struct Shared {
    state: RwLock<Applied>,
    /// The cluster revision after each applied batch; watchers wait on it.
    revision: watch::Sender<u64>,
    snapshot_dir: PathBuf,
    history_revisions: u64,
}

/// openraft's state machine. Cheap to clone; clones share the state.
#[derive(Clone)]
pub struct StateMachine {
    shared: Arc<Shared>,
}

impl StateMachine {
    /// Loads the last snapshot in `data_dir`, if any.
    pub fn open(data_dir: &Path, history_revisions: u64) -> io::Result<StateMachine> {
        let snapshot_dir = data_dir.to_path_buf();
        let path = snapshot_dir.join(SNAPSHOT_FILE);
        let mut state = match read_snapshot_file(&snapshot_dir)? {
            Some(file) => decode_applied(&file.data).map_err(|error| unreadable(&path, "the state in it", &error))?,
            None => Applied::default(),
        };
        state.kv.set_history_revisions(history_revisions);
        let (revision, _) = watch::channel(state.kv.revision());
        Ok(StateMachine {
            shared: Arc::new(Shared { state: RwLock::new(state), revision, snapshot_dir, history_revisions }),
        })
    }

    /// Read access to the current state. Hold it briefly: applies wait for it.
    pub fn read(&self) -> RwLockReadGuard<'_, Applied> {
        self.shared.state.read().unwrap_or_else(|e| e.into_inner())
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

/// The error for a snapshot file this version cannot read: which file, what failed, what
/// to do.
fn unreadable(path: &Path, what: &str, error: &dyn std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "cannot read the snapshot {}: {what} does not decode: {error}. {UNREADABLE_DATA_ADVICE}",
            path.display()
        ),
    )
}

fn read_snapshot_file(dir: &Path) -> io::Result<Option<SnapshotFile>> {
    let path = dir.join(SNAPSHOT_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(io::Error::new(error.kind(), format!("cannot read {}: {error}", path.display()))),
    };
    let file = codec::decode(&bytes).map_err(|error| unreadable(&path, "its header", &error))?;
    Ok(Some(file))
}

/// Write, fsync, rename, fsync the directory: the snapshot is either wholly there or not.
///
/// The bytes are those of `codec::encode(file)`: the encoded meta, then the data as a
/// varint length and the bytes, written without copying the data into a second buffer.
/// They go out a megabyte at a time, each piece flushed before the next is written: the log
/// shares the disk and its fsync must not wait behind tens of megabytes of dirty snapshot
/// pages (with ext4's ordered journal, a log commit can have to flush them first).
pub(crate) fn write_snapshot_file(dir: &Path, file: &SnapshotFile) -> io::Result<()> {
    let header = codec::encode(&(&file.meta, file.data.len())).map_err(|e| io_error("encode snapshot", e))?;
    let tmp = dir.join(format!("{SNAPSHOT_FILE}.tmp"));
    {
        let mut out = std::fs::File::create(&tmp)?;
        out.write_all(&header)?;
        for chunk in file.data.chunks(SNAPSHOT_WRITE_CHUNK_BYTES) {
            out.write_all(chunk)?;
            out.sync_data()?;
        }
        out.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(SNAPSHOT_FILE))?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
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
        let (file, encode_ms, write_ms) = tokio::task::spawn_blocking(move || -> io::Result<_> {
            let started = Instant::now();
            let meta = SnapshotMeta { last_log_id: applied.last_applied, last_membership: applied.membership.clone() };
            let data = encode_applied(&applied)?;
            // Dropped here, not on an async worker: the parts that applies have replaced since
            // the copy was taken are freed now.
            drop(applied);
            let encoded = Instant::now();
            let file = SnapshotFile { meta, data };
            write_snapshot_file(&dir, &file)?;
            Ok((file, (encoded - started).as_millis(), encoded.elapsed().as_millis()))
        })
        .await
        .map_err(|e| io_error("snapshot task", e))??;
        tracing::info!(
            last_log_id = ?file.meta.last_log_id,
            bytes = file.data.len(),
            encode_ms,
            write_ms,
            "snapshot written"
        );
        Ok(Snapshot { meta: file.meta, snapshot: Cursor::new(file.data) })
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
            let result = {
                let mut state = self.shared.state.write().unwrap_or_else(|e| e.into_inner());
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
        SnapshotBuilder { applied: Some(self.read().clone()), snapshot_dir: self.shared.snapshot_dir.clone() }
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: SnapshotData) -> Result<(), io::Error> {
        let data = snapshot.into_inner();
        let dir = self.shared.snapshot_dir.clone();
        let history_revisions = self.shared.history_revisions;
        let file = SnapshotFile { meta: meta.clone(), data };
        let mut applied = tokio::task::spawn_blocking(move || -> io::Result<Applied> {
            let mut applied = decode_applied(&file.data).map_err(|error| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "cannot install the snapshot {} sent by the leader: it does not decode: {error}. Nothing was \
                         changed; the leader and this node may run versions that do not share a snapshot format",
                        file.meta
                    ),
                )
            })?;
            applied.kv.set_history_revisions(history_revisions);
            write_snapshot_file(&dir, &file)?;
            Ok(applied)
        })
        .await
        .map_err(|e| io_error("snapshot task", e))??;
        let revision = applied.kv.revision();
        applied.last_applied = meta.last_log_id;
        applied.membership = meta.last_membership.clone();
        let replaced = {
            let mut state = self.shared.state.write().unwrap_or_else(|e| e.into_inner());
            std::mem::replace(&mut *state, applied)
        };
        // Freed outside the lock and off the async workers: it may be large.
        tokio::task::spawn_blocking(move || drop(replaced));
        tracing::info!(last_log_id = ?meta.last_log_id, revision, "snapshot installed");
        self.publish_revision(revision);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        let dir = self.shared.snapshot_dir.clone();
        let file = tokio::task::spawn_blocking(move || read_snapshot_file(&dir))
            .await
            .map_err(|e| io_error("snapshot task", e))??;
        Ok(file.map(|file| Snapshot { meta: file.meta, snapshot: Cursor::new(file.data) }))
    }
}
