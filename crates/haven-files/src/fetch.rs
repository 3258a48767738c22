//! Getting the chunks a node lacks from its peers, checking every byte.
//!
//! ```text
//!   missing chunks ──▶ FETCHES_IN_FLIGHT workers ──▶ ChunkSource::fetch_chunk(peer, chunk)
//!                          │  length and BLAKE3 hash match?  no ──▶ next peer (reported)
//!                          └─ yes ──▶ ChunkStore (then, and only then, usable by apply)
//! ```
//!
//! A peer's answer is never trusted: a chunk whose length or hash is wrong is dropped,
//! reported, and asked of the next peer, so a corrupt or hostile peer can delay an apply
//! but never put wrong bytes into the store, let alone into the tree.

use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::Mutex;

use crate::error::Error;
use crate::hash::Hash;
use crate::limits::FETCHES_IN_FLIGHT;
use crate::manifest::ChunkRef;
use crate::store::ChunkStore;
use crate::store::ReadError;

/// A node id, as Haven's membership names nodes.
pub type PeerId = u64;

/// Where chunks come from. The server implements it over its authenticated peer
/// transport; tests and the benchmark use [`StoreSource`].
///
/// ### To ensure correctness:
/// - Return what the peer sent, or an error; never panic. The caller checks length and
///   hash, so an implementation need not (but it should stop reading a response longer
///   than `chunk.len`, to bound memory).
/// - Be callable from several threads at once (up to [`FETCHES_IN_FLIGHT`]).
pub trait ChunkSource: Sync {
    fn fetch_chunk(&self, peer: PeerId, chunk: &ChunkRef) -> Result<Vec<u8>, FetchError>;
}

/// Why a peer did not deliver a chunk.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("peer {0} does not have it")]
    NotFound(PeerId),
    #[error("peer {0} unreachable: {1}")]
    Unreachable(PeerId, String),
}

/// What a fetch did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FetchReport {
    /// Chunks received, checked and stored, and their bytes.
    pub chunks: usize,
    pub bytes: u64,
    /// Answers refused because their length or hash was wrong, one line each.
    pub rejected: Vec<String>,
}

/// Fetches every chunk of `wanted` (distinct) into `store`, asking `peers` in turn, and
/// calls `on_chunk` with each chunk's size as it is stored (returning `false` stops the
/// fetch with [`Error::Cancelled`]).
pub fn fetch_chunks(
    store: &ChunkStore,
    source: &dyn ChunkSource,
    peers: &[PeerId],
    wanted: &[ChunkRef],
    on_chunk: &mut dyn FnMut(u64) -> bool,
) -> Result<FetchReport, Error> {
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let rejected = Mutex::new(Vec::new());
    let (done, results) = mpsc::channel::<Result<u64, Error>>();
    let mut report = FetchReport::default();
    let mut failure = None;
    std::thread::scope(|scope| {
        for _ in 0..FETCHES_IN_FLIGHT.min(wanted.len()) {
            let done = done.clone();
            let (next, stop, rejected) = (&next, &stop, &rejected);
            scope.spawn(move || loop {
                let at = next.fetch_add(1, Ordering::Relaxed);
                if at >= wanted.len() || stop.load(Ordering::Relaxed) {
                    return;
                }
                // Start at a different peer for each chunk, to spread the load.
                let result = fetch_one(store, source, peers, at, &wanted[at], rejected);
                if done.send(result).is_err() {
                    return;
                }
            });
        }
        drop(done);
        for result in results {
            match result {
                Ok(bytes) if failure.is_none() => {
                    report.chunks += 1;
                    report.bytes += bytes;
                    if !on_chunk(bytes) {
                        failure = Some(Error::Cancelled);
                        stop.store(true, Ordering::Relaxed);
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    failure.get_or_insert(error);
                    stop.store(true, Ordering::Relaxed);
                }
            }
        }
    });
    report.rejected = rejected.into_inner().unwrap_or_else(|poisoned| poisoned.into_inner());
    match failure {
        Some(error) => Err(error),
        None => Ok(report),
    }
}

/// One chunk from the first peer (starting at `start`) that delivers it intact.
fn fetch_one(
    store: &ChunkStore,
    source: &dyn ChunkSource,
    peers: &[PeerId],
    start: usize,
    chunk: &ChunkRef,
    rejected: &Mutex<Vec<String>>,
) -> Result<u64, Error> {
    let mut attempts = Vec::new();
    for offset in 0..peers.len() {
        let peer = peers[(start + offset) % peers.len()];
        match source.fetch_chunk(peer, chunk) {
            Ok(bytes) if bytes.len() == chunk.len as usize && Hash::of(&bytes) == chunk.hash => {
                store.insert_hashed(&chunk.hash, &bytes)?;
                return Ok(bytes.len() as u64);
            }
            Ok(bytes) => {
                let line = format!(
                    "peer {peer} sent {} bytes that are not chunk {} ({} bytes); asked another peer",
                    bytes.len(),
                    chunk.hash,
                    chunk.len
                );
                attempts.push(format!("peer {peer}: wrong content"));
                if let Ok(mut rejected) = rejected.lock() {
                    rejected.push(line);
                }
            }
            Err(error) => attempts.push(error.to_string()),
        }
    }
    if peers.is_empty() {
        attempts.push("no peer to ask".to_string());
    }
    Err(Error::ChunkUnavailable { hash: chunk.hash, len: chunk.len, attempts: attempts.join("; ") })
}

/// A chunk from the store, or (missing or damaged there) from the peers.
pub(crate) fn obtain(
    store: &ChunkStore,
    source: &dyn ChunkSource,
    peers: &[PeerId],
    chunk: &ChunkRef,
) -> Result<Vec<u8>, Error> {
    match store.read(chunk) {
        Ok(bytes) => Ok(bytes),
        Err(ReadError::Failed(error)) => Err(error),
        Err(ReadError::Missing(_) | ReadError::Corrupt(_)) => {
            let rejected = Mutex::new(Vec::new());
            fetch_one(store, source, peers, 0, chunk, &rejected)?;
            match store.read(chunk) {
                Ok(bytes) => Ok(bytes),
                Err(ReadError::Failed(error)) => Err(error),
                Err(other) => Err(Error::ChunkUnavailable {
                    hash: chunk.hash,
                    len: chunk.len,
                    attempts: format!("stored but unreadable: {other}"),
                }),
            }
        }
    }
}

/// Peers' stores in this process: the in-process transport of tests and the benchmark.
pub struct StoreSource<'a> {
    peers: Vec<(PeerId, &'a ChunkStore)>,
}

impl<'a> StoreSource<'a> {
    pub fn new(peers: Vec<(PeerId, &'a ChunkStore)>) -> StoreSource<'a> {
        StoreSource { peers }
    }
}

impl ChunkSource for StoreSource<'_> {
    fn fetch_chunk(&self, peer: PeerId, chunk: &ChunkRef) -> Result<Vec<u8>, FetchError> {
        let Some((_, store)) = self.peers.iter().find(|(id, _)| *id == peer) else {
            return Err(FetchError::Unreachable(peer, "not in this process".to_string()));
        };
        // A serving node checks what it sends, so its own damaged chunk is not passed on.
        store.read(chunk).map_err(|_| FetchError::NotFound(peer))
    }
}
