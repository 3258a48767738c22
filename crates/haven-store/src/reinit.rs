//! Offline rewrite of a STOPPED node's data dir into a new single-voter cluster that keeps
//! all of the node's data: guided recovery after a permanent loss of quorum (`haven
//! recover`, like etcd's `--force-new-cluster`) and a node detached by a teardown that is
//! started standalone.
//!
//! ```text
//!   snapshot.bin (last applied S) ─┐
//!   raft.redb log (S, L]  ─────────┼─▶ replay with the state machine's own apply ─▶ KvState at L
//!                                  │     move_to_new_cluster(new id)
//!                                  ▼
//!   1. snapshot.bin := { last log id L, membership at L = { node_id: voter }, KvState }
//!      (tmp + fsync + rename + dir fsync: the commit point)
//!   2. one redb transaction: log emptied, last_purged = L, committed = L,
//!      vote = (term of L or of the stored vote, whichever is higher; node_id; not committed),
//!      identity = (same node id, same incarnation, new cluster id)
//! ```
//!
//! **Which entries are kept.** Every entry the node has, up to the LAST one in its log,
//! committed or not (like etcd's `--force-new-cluster`, which keeps the whole log of the
//! member it runs on). After a quorum is lost nobody can tell which of the survivor's
//! uncommitted entries were acknowledged to a client by the old leader (an entry is
//! acknowledged once a majority holds it, and this node may have been part of that
//! majority while the leader died before telling it the commit index). Dropping the tail
//! could lose acknowledged writes; keeping it can only resurrect writes whose clients got
//! no answer, which they must treat as "maybe applied" anyway. Run recovery on the most
//! up-to-date survivor (`haven status` / the last log ids) to lose the least.
//!
//! **How openraft starts from the result** (`StorageHelper::get_initial_state` in
//! openraft 0.10.0-alpha.37): the vote comes from the log store; `committed` is read and
//! raised to the state machine's `last_applied` if lower; `restore_from_snapshot` installs
//! the snapshot only when it is newer than `last_applied` (here they are equal: the state
//! machine loads `snapshot.bin` itself); logs are re-applied only for `last_applied <
//! committed` (here `L == L`: nothing to re-apply, and nothing could be: the log is purged
//! up to `L`); the membership is the last one in the log after `last_applied` or else the
//! state machine's (here: the log is empty, so the new single-voter one); the log state
//! is `(last_purged, last_log_id] = (L, L]`, never inverted. `Engine::startup` then makes
//! the node a follower (the vote is not committed, and `enable_leader_restore` is off on
//! Haven nodes anyway); its election timer fires, it campaigns in `vote.term + 1` (pre-vote
//! and vote both need only itself), and its blank entry lands at index `L + 1` with a
//! higher leader id than `L`'s, so log ids only grow.
//!
//! **Crash safety (the order of writes).**
//! - Before the rename of `snapshot.bin` nothing on disk has changed (the replay runs in
//!   memory; a stray `snapshot.bin.tmp` is ignored and overwritten later): the dir starts
//!   as before.
//! - The rename is the commit point. Between it and the redb commit, the dir holds the new
//!   snapshot and the OLD log, vote, committed id and identity. It starts as the new
//!   cluster: `last_applied` (L) is not behind the log, so nothing is re-applied; the old
//!   entries `<= L` are ignored for membership (only entries after `last_applied` count),
//!   so the effective membership is the new single voter; the old vote only decides which
//!   term the first campaign uses. The cluster id the node serves under is the KV state's
//!   (new); `Node::housekeeping` rewrites the stale identity record from it.
//! - The redb transaction (log reset, vote, committed, identity) is atomic.
//! - The other order would be unsafe: a log purged up to `L` under an old snapshot at
//!   `S < L` cannot be re-applied (openraft refuses to start: "Cannot re-apply logs") and
//!   the entries `(S, L]` would be gone.
//!
//! Re-running after a crash at any point completes the rewrite (the second run finds the
//! snapshot at `L` and nothing after it), so `haven recover` can simply be run again.
//!
//! The redb file is locked while a node has it open, so running this on a live node fails
//! with "cannot open" instead of corrupting it.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::io;
use std::path::Path;
use std::sync::Arc;

use openraft::storage::EntryResponder;
use openraft::storage::RaftStateMachine;
use redb::ReadableDatabase;

use crate::identity::IDENTITY_KEY;
use crate::identity::META;
use crate::io_error;
use crate::log_store::COMMITTED_KEY;
use crate::log_store::LAST_PURGED_KEY;
use crate::log_store::LOG;
use crate::log_store::VOTE_KEY;
use crate::snapshot_file::write_snapshot_file;
use crate::state_machine::image_of;
use crate::state_machine::Applied;
use crate::stored::entry_from_record;
use crate::stored::put_meta;
use crate::stored::read_meta;
use crate::Entry;
use crate::HavenNode;
use crate::LogId;
use crate::Membership;
use crate::NodeId;
use crate::NodeIdentity;
use crate::StateMachine;
use crate::StoredMembership;
use crate::TypeConfig;
use crate::Vote;

/// Entries handed to the state machine per `apply` call while replaying: bounds the memory
/// a long log needs.
const REPLAY_CHUNK_ENTRIES: usize = 256;

/// What [`reinitialize_as_single_voter`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReinitSummary {
    /// The last log id of the old data (the snapshot's, or the last log entry's): the new
    /// snapshot's last log id. The new cluster's first entry comes right after it.
    pub last_log_id: Option<LogId>,
    /// Log entries after the old snapshot that were replayed into the new snapshot (blank
    /// and membership entries included: they count, but change no KV state).
    pub entries_applied: u64,
    /// The KV revision the new cluster starts from.
    pub revision: u64,
    /// The cluster id the data belonged to (the replicated one, else the identity's).
    pub old_cluster_id: Option<String>,
    pub new_cluster_id: String,
}

/// Rewrites the data dir of a STOPPED node into a new cluster whose only member is
/// `node_id` (a voter), keeping every key, revision, token and the history; see the
/// module docs for which entries are kept, the order of writes and how openraft starts
/// from the result.
///
/// `node` is how the sole member is reached (it becomes the membership's only node; its
/// `learner` flag is cleared). Its `incarnation` must be this data dir's or empty (then
/// the data dir's is used). `history_revisions` is the node's configured history size, as
/// given to [`StateMachine::open`].
///
/// Blocking (file and fsync IO, the replay); from async code call it in
/// `spawn_blocking`. Fails without changing anything on a dir that was never
/// initialised, belongs to another node id, is open in a running node, or whose log does
/// not continue its snapshot.
pub fn reinitialize_as_single_voter(
    data_dir: &Path,
    node_id: NodeId,
    node: HavenNode,
    new_cluster_id: &str,
    history_revisions: u64,
) -> io::Result<ReinitSummary> {
    reinitialize(data_dir, node_id, node, new_cluster_id, history_revisions, None)
}

/// [`reinitialize_as_single_voter`] after a lost majority (`haven recover`): the new
/// cluster also remembers the old cluster's id, the survivor (`node_id`) and the voters
/// the operator confirmed down, so that any old member that later speaks to it is told it
/// was recovered away and stops (`haven_core::admin::RecoveredFrom`).
pub fn reinitialize_after_quorum_loss(
    data_dir: &Path,
    node_id: NodeId,
    node: HavenNode,
    new_cluster_id: &str,
    history_revisions: u64,
    confirmed_down: Vec<NodeId>,
) -> io::Result<ReinitSummary> {
    reinitialize(data_dir, node_id, node, new_cluster_id, history_revisions, Some(confirmed_down))
}

fn reinitialize(
    data_dir: &Path,
    node_id: NodeId,
    mut node: HavenNode,
    new_cluster_id: &str,
    history_revisions: u64,
    confirmed_down: Option<Vec<NodeId>>,
) -> io::Result<ReinitSummary> {
    if new_cluster_id.trim().is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "the new cluster id must not be empty"));
    }
    // `open_database` creates a missing dir and database; a recovery must never do that.
    let db_path = data_dir.join(crate::DATABASE_FILE);
    if !db_path.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "{} is not an initialised Haven data dir: {} does not exist",
                data_dir.display(),
                db_path.display()
            ),
        ));
    }
    let db = crate::open_database(data_dir)?;
    let not_initialised = || {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "the data dir {} was never initialised (no cluster state: no snapshot and no log); there is nothing \
                 to recover",
                data_dir.display()
            ),
        )
    };
    let mut identity = NodeIdentity::load(&db)?.ok_or_else(not_initialised)?;
    if identity.node_id != node_id {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("this data dir belongs to node {} but node {node_id} was given", identity.node_id),
        ));
    }
    if node.incarnation.is_empty() {
        node.incarnation = identity.incarnation.clone();
    } else if node.incarnation != identity.incarnation {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "node {node_id}'s address record names incarnation {}, but this data dir is incarnation {}",
                node.incarnation, identity.incarnation
            ),
        ));
    }
    node.learner = false;

    // The state exactly as the node would load it, then the log replayed through the
    // state machine's own apply.
    let machine = StateMachine::open(data_dir, history_revisions)?;
    let snapshot_last = machine.read().last_applied;
    let last_purged = read_meta::<LogId>(&db, LAST_PURGED_KEY, &db_path)?;
    let (entries_applied, last_in_log) = replay_log(&db, &db_path, &machine, snapshot_last)?;
    let last = std::cmp::max(snapshot_last, last_in_log).ok_or_else(not_initialised)?;
    if last_purged.is_some_and(|purged| purged > last) {
        return Err(io::Error::other(format!(
            "the log is purged up to {} but the data only reaches {last}: the dir is inconsistent",
            last_purged.map(|p| p.to_string()).unwrap_or_default()
        )));
    }

    let mut applied = machine.read().clone();
    drop(machine);
    let old_cluster_id = applied.kv.cluster_id().map(str::to_string).or_else(|| identity.cluster_id.clone());
    let recovered = confirmed_down.map(|confirmed_down| recovery_record(&applied, node_id, confirmed_down));
    applied.kv.move_to_new_cluster(new_cluster_id, recovered);
    let membership = Membership::new(vec![BTreeSet::from([node_id])], BTreeMap::from([(node_id, node)]))
        .map_err(|e| io_error("build the membership", e))?;
    applied.last_applied = Some(last);
    applied.membership = StoredMembership::new(Some(last), membership);
    let revision = applied.kv.revision();

    // 1. The commit point: the new snapshot, atomically; only if it reads back as it is,
    //    so the rewrite can never leave a dir that does not start (issue 10).
    let image = image_of(&applied)?;
    check_reads_back(&applied, image.data())?;
    write_snapshot_file(data_dir, &image)?;

    // 2. One redb transaction: the log starts after the snapshot, the vote lets this node
    //    campaign in a higher term than any it has seen, the identity names the new cluster.
    let stored_vote = read_meta::<Vote>(&db, VOTE_KEY, &db_path)?;
    let term = std::cmp::max(last.leader_id.term, stored_vote.map_or(0, |vote| vote.leader_id().term));
    let vote = Vote::new(term, node_id);
    identity.cluster_id = Some(new_cluster_id.to_string());
    reset_log(&db, last, &vote, &identity)?;

    // 3. Success is reported only for a dir that opens as the new cluster.
    check_rewritten_dir_opens(&db, &db_path, data_dir, history_revisions, &applied, &vote, &identity)?;
    drop(db);

    tracing::info!(
        %last, entries_applied, revision, old_cluster_id = ?old_cluster_id, new_cluster_id,
        "data dir rewritten into a new single-voter cluster"
    );
    Ok(ReinitSummary {
        last_log_id: Some(last),
        entries_applied,
        revision,
        old_cluster_id,
        new_cluster_id: new_cluster_id.to_string(),
    })
}

/// What a new cluster made by survivor `node_id` after a lost majority remembers of the old
/// one: who confirmed what down, and the old members' keys (so they can be told they were
/// recovered away when they speak again).
pub fn recovery_record(applied: &Applied, node_id: NodeId, confirmed_down: Vec<NodeId>) -> haven_core::admin::Recovery {
    haven_core::admin::Recovery {
        survivor: node_id,
        confirmed_down,
        old_members: applied
            .membership
            .membership()
            .nodes()
            .filter(|(id, _)| **id != node_id)
            .map(|(id, member)| haven_core::admin::OldMember { node_id: *id, fingerprint: member.fingerprint.clone() })
            .collect(),
    }
}

/// Refuses to write snapshot `data` unless it decodes to `applied`: a state the encoding
/// cannot carry must fail here, with nothing changed, not at the next start.
pub fn check_reads_back(applied: &Applied, data: &[u8]) -> io::Result<()> {
    match crate::state_machine::decode_applied(data) {
        Ok(back) if back == *applied => Ok(()),
        Ok(_) => Err(io::Error::other(
            "the rewritten state does not read back as it was (a value the snapshot encoding cannot carry); nothing \
             was changed: report this as a bug and keep the data dir",
        )),
        Err(error) => Err(io::Error::other(format!(
            "the rewritten state does not decode ({error}); nothing was changed: report this as a bug and keep the \
             data dir"
        ))),
    }
}

/// Opens the rewritten dir as a node would (the snapshot through `StateMachine::open`, the
/// log store's records) and checks it holds what was written.
fn check_rewritten_dir_opens(
    db: &Arc<redb::Database>,
    db_path: &Path,
    data_dir: &Path,
    history_revisions: u64,
    applied: &Applied,
    vote: &Vote,
    identity: &NodeIdentity,
) -> io::Result<()> {
    let failed = |what: String| {
        io::Error::other(format!(
            "the data dir {} was rewritten but does not open as the new cluster: {what}. Do not start the node from \
             it; restore the data dir from a backup or report this as a bug",
            data_dir.display()
        ))
    };
    let machine = StateMachine::open(data_dir, history_revisions).map_err(|error| failed(error.to_string()))?;
    if *machine.read() != *applied {
        return Err(failed("the snapshot holds another state than the one written".into()));
    }
    let last = applied.last_applied;
    if read_meta::<LogId>(db, LAST_PURGED_KEY, db_path)? != last
        || read_meta::<Option<LogId>>(db, COMMITTED_KEY, db_path)? != Some(last)
        || read_meta::<Vote>(db, VOTE_KEY, db_path)?.as_ref() != Some(vote)
        || NodeIdentity::load(db)?.as_ref() != Some(identity)
    {
        return Err(failed("the log store does not hold the records written".into()));
    }
    Ok(())
}

/// Applies every log entry after `snapshot_last` to `machine`, checking that the log
/// continues the snapshot without a gap. Returns how many were applied and the last log
/// id in the log (which may be below the snapshot when a purge was still pending).
fn replay_log(
    db: &redb::Database,
    file: &Path,
    machine: &StateMachine,
    snapshot_last: Option<LogId>,
) -> io::Result<(u64, Option<LogId>)> {
    let txn = db.begin_read().map_err(|e| io_error("read log", e))?;
    let table = match txn.open_table(LOG) {
        Ok(table) => table,
        // The identity was written but the log store never opened: no entries.
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok((0, None)),
        Err(error) => return Err(io_error("read log", error)),
    };
    let mut expected = snapshot_last.map_or(0, |last| last.index + 1);
    let mut applied = 0u64;
    let mut last_in_log = None;
    let mut chunk = Vec::new();
    let from = snapshot_last.map_or(0, |last| last.index);
    for item in table.range(from..).map_err(|e| io_error("read log", e))? {
        let (index, value) = item.map_err(|e| io_error("read log", e))?;
        let index = index.value();
        let entry: Entry = entry_from_record(index, value.value(), file)?;
        last_in_log = Some(entry.log_id);
        if let Some(snapshot_last) = snapshot_last {
            if index == snapshot_last.index {
                if entry.log_id != snapshot_last {
                    return Err(io::Error::other(format!(
                        "the log holds {} where the snapshot ends at {snapshot_last}: the log does not continue \
                         the snapshot",
                        entry.log_id
                    )));
                }
                continue;
            }
        }
        if index != expected {
            return Err(io::Error::other(format!(
                "the log has a gap: expected entry {expected} after {}, found {index}",
                snapshot_last.map_or_else(|| "the start".to_string(), |l| format!("snapshot {l}"))
            )));
        }
        expected += 1;
        chunk.push(entry);
        if chunk.len() == REPLAY_CHUNK_ENTRIES {
            applied += apply_entries(machine, std::mem::take(&mut chunk))?;
        }
    }
    applied += apply_entries(machine, chunk)?;
    Ok((applied, last_in_log))
}

/// Runs `entries` through [`StateMachine`]'s `apply`, as openraft does when it re-applies
/// the log on start (no responders). That `apply` needs no async runtime.
fn apply_entries(machine: &StateMachine, entries: Vec<Entry>) -> io::Result<u64> {
    let count = entries.len() as u64;
    if count == 0 {
        return Ok(0);
    }
    let mut machine = machine.clone();
    let stream = futures::stream::iter(
        entries.into_iter().map(|entry| Ok::<EntryResponder<TypeConfig>, io::Error>((entry, None))),
    );
    futures::executor::block_on(machine.apply(stream))?;
    Ok(count)
}

/// The log store's state after the rewrite, in one durable transaction with the same
/// tables, keys and encodings as [`crate::LogStore`] (purge, save_committed, save_vote)
/// and [`NodeIdentity::save`].
/// The log store's state after the rewrite, in one durable transaction with the same
/// tables, keys and records as [`crate::LogStore`] (purge, save_committed, save_vote)
/// and [`NodeIdentity::save`].
fn reset_log(db: &Arc<redb::Database>, last: LogId, vote: &Vote, identity: &NodeIdentity) -> io::Result<()> {
    let write = |e: &dyn std::fmt::Display| io_error("reset the log", e);
    let txn = db.begin_write().map_err(|e| write(&e))?;
    {
        let mut log = txn.open_table(LOG).map_err(|e| write(&e))?;
        log.retain(|_, _| false).map_err(|e| write(&e))?;
        let mut meta = txn.open_table(META).map_err(|e| write(&e))?;
        put_meta(&mut meta, LAST_PURGED_KEY, &last).map_err(|e| write(&*e))?;
        put_meta(&mut meta, COMMITTED_KEY, &Some(last)).map_err(|e| write(&*e))?;
        put_meta(&mut meta, VOTE_KEY, vote).map_err(|e| write(&*e))?;
        put_meta(&mut meta, IDENTITY_KEY, identity).map_err(|e| write(&*e))?;
    }
    txn.commit().map_err(|e| io_error("commit the log reset", e))
}
