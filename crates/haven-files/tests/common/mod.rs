//! Helpers shared by the integration tests: a primary and replicas in temporary
//! directories, and a tree snapshot taken with plain `std::fs` (independent of the
//! library's own walk, so a bug there cannot hide itself).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::path::PathBuf;

use haven_files::apply::apply;
use haven_files::apply::ApplyReport;
use haven_files::apply::Replica;
use haven_files::fetch::StoreSource;
use haven_files::manifest::Manifest;
use haven_files::scan::Scanner;
use haven_files::store::ChunkStore;

/// What a path is on disk, as the tests compare trees: type, mode, content, link target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir { mode: u32 },
    File { mode: u32, content: Vec<u8> },
    Link { target: Vec<u8> },
}

impl Node {
    /// One short line (content as length and hash), for assertion messages.
    pub fn short(&self) -> String {
        match self {
            Node::Dir { mode } => format!("dir {mode:o}"),
            Node::File { mode, content } => {
                format!("file {mode:o}, {} bytes, {:?}", content.len(), haven_files::hash::Hash::of(content))
            }
            Node::Link { target } => format!("link to {}", String::from_utf8_lossy(target)),
        }
    }
}

/// Every path under `root` (relative, as bytes), not following symlinks.
pub fn snapshot(root: &Path) -> BTreeMap<Vec<u8>, Node> {
    let mut tree = BTreeMap::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        for entry in fs::read_dir(root.join(&relative)).unwrap() {
            let entry = entry.unwrap();
            let path = relative.join(entry.file_name());
            let meta = fs::symlink_metadata(entry.path()).unwrap();
            let mode = meta.permissions().mode() & 0o7777;
            let node = if meta.file_type().is_symlink() {
                Node::Link { target: fs::read_link(entry.path()).unwrap().as_os_str().as_bytes().to_vec() }
            } else if meta.is_dir() {
                pending.push(path.clone());
                Node::Dir { mode }
            } else {
                Node::File { mode, content: fs::read(entry.path()).unwrap() }
            };
            tree.insert(path.as_os_str().as_bytes().to_vec(), node);
        }
    }
    tree
}

/// Asserts two trees are equal, naming the first difference.
pub fn assert_same_tree(primary: &Path, replica: &Path) {
    let (a, b) = (snapshot(primary), snapshot(replica));
    for (path, node) in &a {
        match b.get(path) {
            None => panic!("{} missing on the replica", String::from_utf8_lossy(path)),
            Some(other) if other != node => {
                panic!("{} differs: primary {}, replica {}", String::from_utf8_lossy(path), node.short(), other.short())
            }
            Some(_) => {}
        }
    }
    for path in b.keys() {
        assert!(a.contains_key(path), "{} on the replica only", String::from_utf8_lossy(path));
    }
}

/// A node: its replicated directory and its chunk store.
pub struct Side {
    pub root: PathBuf,
    pub store: ChunkStore,
}

pub struct Cluster {
    _dir: tempfile::TempDir,
    pub primary: Side,
    pub replica: Side,
    pub scanner: Scanner,
}

impl Cluster {
    pub fn new() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let node = |name: &str| {
            let root = dir.path().join(name).join("tree");
            fs::create_dir_all(&root).unwrap();
            let store = ChunkStore::open(&dir.path().join(name).join("store")).unwrap();
            Side { root, store }
        };
        let primary = node("primary");
        let replica = node("replica");
        let scanner = Scanner::new(&primary.root, Manifest::empty());
        Cluster { _dir: dir, primary, replica, scanner }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.primary.root.join(name)
    }

    pub fn scan(&mut self) -> Manifest {
        let report = self.scanner.scan(&self.primary.store).unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        report.manifest
    }

    pub fn apply(&self, manifest: &Manifest) -> ApplyReport {
        let source = StoreSource::new(vec![(1, &self.primary.store)]);
        let replica = Replica { root: &self.replica.root, store: &self.replica.store };
        apply(replica, manifest, &source, &[1], &mut ()).unwrap()
    }

    /// Scans the primary, applies the generation on the replica, checks both trees equal.
    pub fn replicate(&mut self) -> (Manifest, ApplyReport) {
        let manifest = self.scan();
        let report = self.apply(&manifest);
        assert_same_tree(&self.primary.root, &self.replica.root);
        let differences = haven_files::verify::verify(&self.replica.root, &manifest).unwrap();
        assert!(differences.is_empty(), "{differences:?}");
        (manifest, report)
    }
}

pub fn write(path: &Path, content: &[u8]) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(path, content).unwrap();
}

pub fn bytes_name(root: &Path, name: &[u8]) -> PathBuf {
    root.join(OsStr::from_bytes(name))
}

pub fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Deterministic pseudo-random bytes (xorshift), so tests need no RNG crate.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}
