//! Manifests: one generation of a replicated directory, as a value.
//!
//! ```text
//!   Manifest { format: 1, entries: sorted by path bytes, unique }
//!     "etc"              Dir     { mode }
//!     "etc/app.conf"     File    { mode, size, mtime, hash, chunks: [(hash, len), ...] }
//!     "etc/current"      Symlink { target }            (stored as a link, never followed)
//!     "var/empty"        Dir     { mode }              (empty directories are kept)
//! ```
//!
//! The encoding is Haven's one encoding (`haven_core::codec`, postcard), and canonical:
//! [`Manifest::decode`] refuses bytes that do not re-encode to themselves, so the digest
//! (BLAKE3 of the encoding) names exactly one tree. A manifest from a peer is untrusted:
//! decode checks size, order, every path, that every parent is a directory (so no entry
//! can be reached through a symlink), and every file's chunk list, before anything uses it.
//!
//! Directories carry no mtime: it changes whenever anything inside changes, so it would
//! make every apply look like a change of its own.

use std::collections::HashSet;

use serde::Deserialize;
use serde::Serialize;

use crate::hash::Hash;
use crate::limits::CHUNK_BYTES_MAX;
use crate::limits::ENTRIES_MAX;
use crate::limits::FILE_BYTES_MAX;
use crate::limits::MANIFEST_BYTES_MAX;
use crate::limits::SYMLINK_TARGET_BYTES_MAX;
use crate::path::show;
use crate::path::PathError;
use crate::path::RelPath;

/// The encoding's version; a node refuses a manifest of a format it does not know.
pub const MANIFEST_FORMAT: u8 = 1;

/// Permission bits kept: rwx for owner, group, others, and setuid, setgid, sticky, as
/// `rsync -a` keeps them. Owners are not replicated: files belong to the Haven service.
pub const MODE_BITS: u32 = 0o7777;

/// One generation of a directory tree.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    format: u8,
    entries: Vec<Entry>,
}

/// One path in a manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub path: RelPath,
    pub kind: Kind,
}

/// What a path is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    Dir {
        mode: u32,
    },
    File(FileMeta),
    /// The link's target bytes, exactly as `readlink` returns them.
    Symlink {
        target: Vec<u8>,
    },
}

/// A regular file: its metadata, its whole-content hash, and its content as chunks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMeta {
    pub mode: u32,
    pub size: u64,
    pub mtime: Mtime,
    pub hash: Hash,
    pub chunks: Vec<ChunkRef>,
}

/// Modification time: seconds and nanoseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mtime {
    pub seconds: i64,
    pub nanoseconds: u32,
}

/// One chunk of a file: the BLAKE3 hash of its bytes (its name in every node's store) and
/// its length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChunkRef {
    pub hash: Hash,
    pub len: u32,
}

/// Why a manifest is refused. Each names the rule and, where there is one, the path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest of {0} bytes is larger than the limit of {MANIFEST_BYTES_MAX}")]
    TooLarge(usize),
    #[error("manifest cannot be decoded: {0}")]
    Undecodable(String),
    #[error("manifest encoding is not canonical (it does not re-encode to the same bytes)")]
    NotCanonical,
    #[error("manifest format {0} is not known to this node (it knows {MANIFEST_FORMAT})")]
    UnknownFormat(u8),
    #[error("manifest has more than {ENTRIES_MAX} entries")]
    TooManyEntries,
    #[error("manifest path refused: {0}")]
    Path(#[from] PathError),
    #[error("{0}: out of order or repeated (entries must be sorted by path and unique)")]
    Order(String),
    #[error(
        "{0}: its parent is not a directory in the manifest (an entry must not be reached through a file or a symlink)"
    )]
    NoParentDir(String),
    #[error("{0}: mode {1:#o} has bits beyond {MODE_BITS:#o}")]
    Mode(String, u32),
    #[error("{0}: larger than the file size limit of {FILE_BYTES_MAX} bytes")]
    FileTooLarge(String),
    #[error("{0}: chunk lengths do not add up to the size, or a chunk is empty or over {CHUNK_BYTES_MAX} bytes")]
    Chunks(String),
    #[error("{0}: symlink target is empty, contains NUL, or is longer than {SYMLINK_TARGET_BYTES_MAX} bytes")]
    SymlinkTarget(String),
    #[error("delta is from generation {expected}, this node has {found}; fetch the whole manifest")]
    DeltaBase { expected: Hash, found: Hash },
    #[error("delta does not produce generation {expected} (it produces {found}); fetch the whole manifest")]
    DeltaTarget { expected: Hash, found: Hash },
}

/// The difference between two generations: what a node needs, once it has the first, to
/// build the second. Sent (and committed) instead of a whole manifest it is a few entries
/// for a few changed files, where the whole manifest of a large tree is hundreds of KiB.
/// Both ends are named by digest, so a delta applied to the wrong base, or one that does
/// not produce its target, is refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestDelta {
    pub base: Hash,
    pub target: Hash,
    /// Entries new or different in the target, in path order.
    pub upserts: Vec<Entry>,
    /// Paths the target no longer has, in path order.
    pub removals: Vec<RelPath>,
}

impl ManifestDelta {
    /// The encoding (`haven_core::codec`).
    pub fn encode(&self) -> Vec<u8> {
        // As for a manifest: nothing in a delta can fail to encode.
        haven_core::codec::encode(self).expect("a manifest delta always encodes")
    }

    /// Decodes a delta from untrusted bytes; its entries are checked when it is applied.
    pub fn decode(bytes: &[u8]) -> Result<ManifestDelta, ManifestError> {
        if bytes.len() > MANIFEST_BYTES_MAX {
            return Err(ManifestError::TooLarge(bytes.len()));
        }
        haven_core::codec::decode(bytes).map_err(|error| ManifestError::Undecodable(error.to_string()))
    }
}

impl Manifest {
    /// A manifest of these entries, sorted; checked like one from a peer.
    pub fn new(mut entries: Vec<Entry>) -> Result<Manifest, ManifestError> {
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        let manifest = Manifest { format: MANIFEST_FORMAT, entries };
        manifest.check()?;
        Ok(manifest)
    }

    /// The empty tree.
    pub fn empty() -> Manifest {
        Manifest { format: MANIFEST_FORMAT, entries: Vec::new() }
    }

    /// Entries in path order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The entry at `path`.
    pub fn get(&self, path: &[u8]) -> Option<&Entry> {
        self.entries.binary_search_by(|entry| entry.path.as_bytes().cmp(path)).ok().map(|at| &self.entries[at])
    }

    /// Regular files in path order.
    pub fn files(&self) -> impl Iterator<Item = (&RelPath, &FileMeta)> {
        self.entries.iter().filter_map(|entry| match &entry.kind {
            Kind::File(file) => Some((&entry.path, file)),
            _ => None,
        })
    }

    /// Every distinct chunk the tree's files use.
    pub fn chunks(&self) -> HashSet<Hash> {
        self.files().flat_map(|(_, file)| file.chunks.iter().map(|chunk| chunk.hash)).collect()
    }

    /// Total bytes of the files.
    pub fn file_bytes(&self) -> u64 {
        self.files().map(|(_, file)| file.size).sum()
    }

    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        // Only sequences of unknown length or refusing values fail to encode; a manifest
        // has neither.
        haven_core::codec::encode(self).expect("a manifest always encodes")
    }

    /// The generation's name: BLAKE3 of the canonical encoding.
    pub fn digest(&self) -> Hash {
        Hash::of(&self.encode())
    }

    /// Decodes and checks a manifest from untrusted bytes.
    pub fn decode(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        if bytes.len() > MANIFEST_BYTES_MAX {
            return Err(ManifestError::TooLarge(bytes.len()));
        }
        let manifest: Manifest =
            haven_core::codec::decode(bytes).map_err(|error| ManifestError::Undecodable(error.to_string()))?;
        if manifest.format != MANIFEST_FORMAT {
            return Err(ManifestError::UnknownFormat(manifest.format));
        }
        manifest.check()?;
        // Over-long varints decode to the same values; refusing them keeps one digest per tree.
        if manifest.encode() != bytes {
            return Err(ManifestError::NotCanonical);
        }
        Ok(manifest)
    }

    /// What turns this generation into `target`.
    pub fn delta_to(&self, target: &Manifest) -> ManifestDelta {
        let mut upserts = Vec::new();
        let mut removals = Vec::new();
        let (mut old, mut new) = (self.entries.iter().peekable(), target.entries.iter().peekable());
        loop {
            match (old.peek(), new.peek()) {
                (None, None) => break,
                (Some(a), Some(b)) if a.path == b.path => {
                    if a.kind != b.kind {
                        upserts.push((*b).clone());
                    }
                    old.next();
                    new.next();
                }
                (Some(a), Some(b)) if a.path < b.path => {
                    removals.push(a.path.clone());
                    old.next();
                }
                (Some(a), None) => {
                    removals.push(a.path.clone());
                    old.next();
                }
                (_, Some(b)) => {
                    upserts.push((*b).clone());
                    new.next();
                }
            }
        }
        ManifestDelta { base: self.digest(), target: target.digest(), upserts, removals }
    }

    /// The generation `delta` leads to from this one, checked like any manifest from a
    /// peer, and refused unless this is its base and the result its target.
    pub fn apply_delta(&self, delta: &ManifestDelta) -> Result<Manifest, ManifestError> {
        let found = self.digest();
        if found != delta.base {
            return Err(ManifestError::DeltaBase { expected: delta.base, found });
        }
        if self.entries.len() + delta.upserts.len() > ENTRIES_MAX + delta.removals.len() {
            return Err(ManifestError::TooManyEntries);
        }
        let removed: HashSet<&RelPath> = delta.removals.iter().collect();
        let mut entries: std::collections::BTreeMap<&RelPath, &Kind> = self
            .entries
            .iter()
            .filter(|entry| !removed.contains(&entry.path))
            .map(|entry| (&entry.path, &entry.kind))
            .collect();
        for entry in &delta.upserts {
            entries.insert(&entry.path, &entry.kind);
        }
        let entries =
            entries.into_iter().map(|(path, kind)| Entry { path: path.clone(), kind: kind.clone() }).collect();
        let manifest = Manifest::new(entries)?;
        let produced = manifest.digest();
        if produced != delta.target {
            return Err(ManifestError::DeltaTarget { expected: delta.target, found: produced });
        }
        Ok(manifest)
    }

    /// Every rule a manifest must satisfy before any of it is used.
    fn check(&self) -> Result<(), ManifestError> {
        if self.entries.len() > ENTRIES_MAX {
            return Err(ManifestError::TooManyEntries);
        }
        let mut directories: HashSet<&[u8]> = HashSet::new();
        let mut previous: Option<&RelPath> = None;
        for entry in &self.entries {
            let path = &entry.path;
            path.check()?;
            let shown = || path.to_string();
            if previous.is_some_and(|previous| previous >= path) {
                return Err(ManifestError::Order(shown()));
            }
            previous = Some(path);
            // Parents sort before their children, so the parent has been seen by now.
            if let Some(parent) = path.parent() {
                if !directories.contains(parent) {
                    return Err(ManifestError::NoParentDir(shown()));
                }
            }
            match &entry.kind {
                Kind::Dir { mode } => {
                    check_mode(path, *mode)?;
                    directories.insert(path.as_bytes());
                }
                Kind::File(file) => {
                    check_mode(path, file.mode)?;
                    if file.size > FILE_BYTES_MAX {
                        return Err(ManifestError::FileTooLarge(shown()));
                    }
                    let mut total: u64 = 0;
                    for chunk in &file.chunks {
                        if chunk.len == 0 || chunk.len > CHUNK_BYTES_MAX {
                            return Err(ManifestError::Chunks(shown()));
                        }
                        total += u64::from(chunk.len);
                    }
                    if total != file.size {
                        return Err(ManifestError::Chunks(shown()));
                    }
                }
                Kind::Symlink { target } => {
                    if target.is_empty() || target.len() > SYMLINK_TARGET_BYTES_MAX || target.contains(&0) {
                        return Err(ManifestError::SymlinkTarget(shown()));
                    }
                }
            }
        }
        Ok(())
    }
}

fn check_mode(path: &RelPath, mode: u32) -> Result<(), ManifestError> {
    if mode & !MODE_BITS != 0 {
        return Err(ManifestError::Mode(path.to_string(), mode));
    }
    Ok(())
}

impl std::fmt::Debug for Manifest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.entries.iter().map(|entry| (show(entry.path.as_bytes()), &entry.kind))).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(bytes: &[u8]) -> RelPath {
        RelPath::new(bytes.to_vec()).unwrap()
    }

    fn dir(name: &[u8]) -> Entry {
        Entry { path: path(name), kind: Kind::Dir { mode: 0o755 } }
    }

    fn file(name: &[u8], content: &[u8]) -> Entry {
        let chunks = if content.is_empty() {
            vec![]
        } else {
            vec![ChunkRef { hash: Hash::of(content), len: content.len() as u32 }]
        };
        Entry {
            path: path(name),
            kind: Kind::File(FileMeta {
                mode: 0o644,
                size: content.len() as u64,
                mtime: Mtime { seconds: 1, nanoseconds: 2 },
                hash: Hash::of(content),
                chunks,
            }),
        }
    }

    fn link(name: &[u8], target: &[u8]) -> Entry {
        Entry { path: path(name), kind: Kind::Symlink { target: target.to_vec() } }
    }

    /// Builds the bytes a hostile peer could send: any entries, in the given order.
    fn raw(entries: Vec<Entry>) -> Vec<u8> {
        haven_core::codec::encode(&Manifest { format: MANIFEST_FORMAT, entries }).unwrap()
    }

    #[test]
    fn encoding_round_trips_and_the_digest_names_the_tree() {
        let manifest = Manifest::new(vec![
            file(b"d/f", b"x"),
            dir(b"d"),
            link(b"l", b"../outside"),
            dir(b"empty"),
            file(b"caf\xe9\n", b""),
        ])
        .unwrap();
        let bytes = manifest.encode();
        let decoded = Manifest::decode(&bytes).unwrap();
        assert_eq!(decoded, manifest);
        assert_eq!(decoded.digest(), manifest.digest());
        let other = Manifest::new(vec![dir(b"d"), file(b"d/f", b"y")]).unwrap();
        assert_ne!(other.digest(), manifest.digest());
        // Sorted by bytes: "caf\xe9\n" < "d" < "d/f" < "empty" < "l".
        let order: Vec<&[u8]> = manifest.entries().iter().map(|entry| entry.path.as_bytes()).collect();
        assert_eq!(order, vec![&b"caf\xe9\n"[..], b"d", b"d/f", b"empty", b"l"]);
    }

    #[test]
    fn hostile_manifests_are_refused_with_the_rule_named() {
        let refuse = |entries: Vec<Entry>| Manifest::decode(&raw(entries)).unwrap_err();
        // Traversal through a symlink: "l" is a link, "l/passwd" would be written through it.
        assert!(matches!(refuse(vec![link(b"l", b"/etc"), file(b"l/passwd", b"x")]), ManifestError::NoParentDir(_)));
        // Through a file, or with no parent at all.
        assert!(matches!(refuse(vec![file(b"f", b"x"), file(b"f/g", b"x")]), ManifestError::NoParentDir(_)));
        assert!(matches!(refuse(vec![file(b"a/b", b"x")]), ManifestError::NoParentDir(_)));
        // `..`, absolute, reserved names (built without RelPath::new, as a peer could).
        let unchecked = |bytes: &[u8]| RelPath::from_disk(bytes.to_vec());
        let hostile = |bytes: &[u8]| Entry { path: unchecked(bytes), kind: Kind::Dir { mode: 0o755 } };
        assert!(matches!(refuse(vec![hostile(b"..")]), ManifestError::Path(PathError::BadComponent(_))));
        assert!(matches!(refuse(vec![hostile(b"/etc")]), ManifestError::Path(PathError::Absolute(_))));
        assert!(matches!(refuse(vec![hostile(b".haven-tmp.x")]), ManifestError::Path(PathError::Reserved(_))));
        // Order and duplicates.
        assert!(matches!(refuse(vec![dir(b"b"), dir(b"a")]), ManifestError::Order(_)));
        assert!(matches!(refuse(vec![dir(b"a"), dir(b"a")]), ManifestError::Order(_)));
        // Chunks that do not add up, empty or oversized chunks.
        let mut lying = file(b"f", b"abc");
        if let Kind::File(meta) = &mut lying.kind {
            meta.size = 1_000;
        }
        assert!(matches!(refuse(vec![lying]), ManifestError::Chunks(_)));
        let mut oversized = file(b"f", b"abc");
        if let Kind::File(meta) = &mut oversized.kind {
            meta.chunks = vec![ChunkRef { hash: Hash::of(b""), len: CHUNK_BYTES_MAX + 1 }];
            meta.size = u64::from(CHUNK_BYTES_MAX) + 1;
        }
        assert!(matches!(refuse(vec![oversized]), ManifestError::Chunks(_)));
        let mut huge = file(b"f", b"");
        if let Kind::File(meta) = &mut huge.kind {
            meta.size = FILE_BYTES_MAX + 1;
        }
        assert!(matches!(refuse(vec![huge]), ManifestError::FileTooLarge(_)));
        // Modes, link targets, format, size, garbage, trailing bytes.
        let mut setuid_plus = dir(b"d");
        setuid_plus.kind = Kind::Dir { mode: 0o17777 };
        assert!(matches!(refuse(vec![setuid_plus]), ManifestError::Mode(..)));
        assert!(matches!(refuse(vec![link(b"l", b"")]), ManifestError::SymlinkTarget(_)));
        assert!(matches!(refuse(vec![link(b"l", b"a\0b")]), ManifestError::SymlinkTarget(_)));
        let mut future = raw(vec![]);
        future[0] = 2;
        assert_eq!(Manifest::decode(&future).unwrap_err(), ManifestError::UnknownFormat(2));
        assert!(matches!(Manifest::decode(&vec![0; MANIFEST_BYTES_MAX + 1]).unwrap_err(), ManifestError::TooLarge(_)));
        assert!(matches!(Manifest::decode(&[1, 0xff, 0xff]).unwrap_err(), ManifestError::Undecodable(_)));
        let mut trailing = raw(vec![dir(b"d")]);
        trailing.push(0);
        assert!(
            matches!(Manifest::decode(&trailing).unwrap_err(), ManifestError::Undecodable(why) if why.contains("left over"))
        );
    }

    #[test]
    fn an_overlong_varint_is_refused_so_one_tree_has_one_digest() {
        // Format 1, then the entry count 0 as a two-byte varint (0x80 0x00) instead of 0x00.
        assert_eq!(Manifest::decode(&[1, 0x80, 0x00]).unwrap_err(), ManifestError::NotCanonical);
        assert_eq!(Manifest::decode(&[1, 0x00]).unwrap(), Manifest::empty());
    }

    #[test]
    fn a_delta_rebuilds_the_target_and_only_from_its_base() {
        let old = Manifest::new(vec![dir(b"d"), file(b"d/a", b"1"), file(b"d/b", b"2"), link(b"l", b"d/a")]).unwrap();
        let new = Manifest::new(vec![dir(b"d"), file(b"d/a", b"1"), file(b"d/c", b"3"), link(b"l", b"d/c")]).unwrap();
        let delta = old.delta_to(&new);
        assert_eq!(delta.removals, vec![path(b"d/b")]);
        assert_eq!(delta.upserts.iter().map(|e| e.path.clone()).collect::<Vec<_>>(), vec![path(b"d/c"), path(b"l")]);
        let decoded = ManifestDelta::decode(&delta.encode()).unwrap();
        assert_eq!(old.apply_delta(&decoded).unwrap(), new);
        assert!(matches!(new.apply_delta(&delta), Err(ManifestError::DeltaBase { .. })));
        // A delta whose entries do not produce the named target is refused.
        let mut lying = delta.clone();
        lying.removals.clear();
        assert!(matches!(old.apply_delta(&lying), Err(ManifestError::DeltaTarget { .. })));
        // And one whose result breaks a rule is refused for that rule.
        let mut hostile = delta;
        hostile.upserts.push(file(b"l/escape", b"x"));
        assert!(matches!(old.apply_delta(&hostile), Err(ManifestError::NoParentDir(_))));
        assert!(old.delta_to(&old).upserts.is_empty());
    }

    #[test]
    fn a_manifest_with_too_many_entries_is_refused() {
        let entries: Vec<Entry> = (0..=ENTRIES_MAX).map(|n| dir(format!("d{n:07}").as_bytes())).collect();
        assert_eq!(Manifest::decode(&raw(entries)).unwrap_err(), ManifestError::TooManyEntries);
    }
}
