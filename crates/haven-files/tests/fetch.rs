//! A corrupted chunk served by a peer is detected by its hash, fetched again from another
//! peer, and never written into place (issue 18).

mod common;

use std::fs;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;

use common::*;
use haven_files::apply::apply;
use haven_files::apply::Replica;
use haven_files::error::Error;
use haven_files::fetch::ChunkSource;
use haven_files::fetch::FetchError;
use haven_files::fetch::PeerId;
use haven_files::fetch::StoreSource;
use haven_files::manifest::ChunkRef;

/// Peers in this process; the listed ones flip a bit in every chunk they serve.
struct Corrupting<'a> {
    inner: StoreSource<'a>,
    corrupt: Vec<PeerId>,
    served_corrupt: AtomicUsize,
}

impl ChunkSource for Corrupting<'_> {
    fn fetch_chunk(&self, peer: PeerId, chunk: &ChunkRef) -> Result<Vec<u8>, FetchError> {
        let mut bytes = self.inner.fetch_chunk(peer, chunk)?;
        if self.corrupt.contains(&peer) {
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0x40;
            self.served_corrupt.fetch_add(1, Ordering::Relaxed);
        }
        Ok(bytes)
    }
}

fn setup() -> (Cluster, haven_files::manifest::Manifest, tempfile::TempDir, haven_files::store::ChunkStore) {
    let mut cluster = Cluster::new();
    write(&cluster.path("pkg.tar"), &noise(2 * 1024 * 1024, 9));
    write(&cluster.path("conf"), b"small");
    let manifest = cluster.scan();
    // A second peer with the same content (a standby that applied this generation).
    let other = tempfile::tempdir().unwrap();
    let other_store = haven_files::store::ChunkStore::open(other.path()).unwrap();
    for chunk in manifest.files().flat_map(|(_, file)| file.chunks.clone()) {
        other_store.insert(&cluster.primary.store.read(&chunk).unwrap()).unwrap();
    }
    (cluster, manifest, other, other_store)
}

#[test]
fn a_corrupt_chunk_from_one_peer_is_refetched_from_another() {
    let (cluster, manifest, _other, other_store) = setup();
    let source = Corrupting {
        inner: StoreSource::new(vec![(1, &cluster.primary.store), (2, &other_store)]),
        corrupt: vec![1],
        served_corrupt: AtomicUsize::new(0),
    };
    let replica = Replica { root: &cluster.replica.root, store: &cluster.replica.store };
    let report = apply(replica, &manifest, &source, &[1, 2], &mut ()).unwrap();
    assert!(source.served_corrupt.load(Ordering::Relaxed) > 0, "peer 1 was never asked");
    assert_eq!(report.fetched.rejected.len(), source.served_corrupt.load(Ordering::Relaxed));
    assert!(report.fetched.rejected[0].contains("peer 1 sent"), "{:?}", report.fetched.rejected);
    assert_same_tree(&cluster.primary.root, &cluster.replica.root);
}

#[test]
fn when_every_peer_serves_corrupt_chunks_nothing_is_written() {
    let (cluster, manifest, _other, other_store) = setup();
    let source = Corrupting {
        inner: StoreSource::new(vec![(1, &cluster.primary.store), (2, &other_store)]),
        corrupt: vec![1, 2],
        served_corrupt: AtomicUsize::new(0),
    };
    let replica = Replica { root: &cluster.replica.root, store: &cluster.replica.store };
    let error = apply(replica, &manifest, &source, &[1, 2], &mut ()).unwrap_err();
    assert!(matches!(error, Error::ChunkUnavailable { .. }), "{error}");
    // Fetch workers start at different peers, so the order of the two attempts varies.
    for attempt in ["peer 1: wrong content", "peer 2: wrong content"] {
        assert!(error.to_string().contains(attempt), "{error}");
    }
    // Nothing under the tree (not even a staged file), nothing corrupt in the store.
    assert_eq!(fs::read_dir(&cluster.replica.root).unwrap().count(), 0);
    for chunk in manifest.files().flat_map(|(_, file)| file.chunks.clone()) {
        assert!(!cluster.replica.store.contains(&chunk) || cluster.replica.store.read(&chunk).is_ok());
    }
}

#[test]
fn a_chunk_damaged_in_the_local_store_is_fetched_again_not_written() {
    let (cluster, manifest, _other, _) = setup();
    let source = StoreSource::new(vec![(1, &cluster.primary.store)]);
    let replica = Replica { root: &cluster.replica.root, store: &cluster.replica.store };
    // The replica has every chunk, but one is damaged on its disk.
    for chunk in manifest.files().flat_map(|(_, file)| file.chunks.clone()) {
        cluster.replica.store.insert(&cluster.primary.store.read(&chunk).unwrap()).unwrap();
    }
    let (_, file) = manifest.files().find(|(path, _)| path.as_bytes() == b"pkg.tar").unwrap();
    let damaged = cluster.replica.store.chunk_file(&file.chunks[1].hash);
    let mut bytes = fs::read(&damaged).unwrap();
    bytes[0] ^= 1;
    fs::write(&damaged, bytes).unwrap();
    apply(replica, &manifest, &source, &[1], &mut ()).unwrap();
    assert_same_tree(&cluster.primary.root, &cluster.replica.root);
}
