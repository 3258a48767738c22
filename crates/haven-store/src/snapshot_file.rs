//! The snapshot image: the bytes of `snapshot.bin`, of a snapshot sent to a peer, and of one
//! received, with checksums that are checked at each of those places.
//!
//! ```text
//!   version 2 (written since checksums exist)
//!   0        magic "HAVENSNP"
//!   8        format version, u32 LE (2)
//!   12       block size b, u32 LE
//!   16       meta length m, u32 LE
//!   20       meta: the encoded SnapshotMeta (last log id, membership)
//!   20+m     data length d, u64 LE
//!   28+m     BLAKE3 of bytes 0..28+m: the header hash
//!   H=60+m   data: the encoded state (`Applied`), hashed in blocks of b bytes
//!   H+d      BLAKE3 of each block, in order (32 bytes each)
//!   end-32   BLAKE3 of the header hash and every block hash: the trailer
//!
//!   version 1 (before): postcard of (meta, data), no checksum. It starts with an
//!   Option tag (0 or 1), never with 'H', so the two cannot be mistaken for each other.
//! ```
//!
//! The hashes are computed once, when the snapshot is built from the in-memory state, and
//! travel with it: the file on disk, the image a leader sends and the image a follower
//! installs are the same bytes, so a follower checks what the builder hashed, end to end.
//! Block hashes let an error name the damaged megabyte; the trailer covers the block
//! hashes themselves. A version 1 file is read as before (it has nothing to check) and
//! rewritten as version 2 when the node opens it.

use std::io;
use std::io::Write;
use std::ops::Range;
use std::path::Path;
use std::path::PathBuf;

use serde::Deserialize;
use serde::Serialize;

use crate::integrity::byte_range;
use crate::integrity::hash;
use crate::integrity::CorruptData;
use crate::integrity::HASH_BYTES;
use crate::SnapshotMeta;

/// The snapshot's file name in the data dir.
pub const SNAPSHOT_FILE: &str = "snapshot.bin";

const MAGIC: &[u8; 8] = b"HAVENSNP";

/// The format written now.
pub const FORMAT_VERSION: u32 = 2;

/// Data is hashed (and written to disk, each piece flushed before the next) in blocks of
/// this size: a damaged block is named to the megabyte, the hash table costs 32 bytes per
/// MiB, and the log, which shares the disk, never waits behind more than a megabyte of dirty
/// snapshot pages (with ext4's ordered journal a log commit can have to flush them first).
pub const SNAPSHOT_BLOCK_BYTES: usize = 1 << 20;

/// Largest encoded meta accepted: a membership of at most 7 voters and their learners is a
/// few KiB; anything near this is damage, not a cluster.
const META_BYTES_MAX: u32 = 1 << 20;

/// Fixed header bytes before the meta (magic, version, block size, meta length).
const HEADER_FIXED_BEFORE_META: usize = 20;

/// A snapshot image whose checksums have been verified (or that was just built).
#[derive(Clone)]
pub struct SnapshotImage {
    bytes: Vec<u8>,
    meta: SnapshotMeta,
    data: Range<usize>,
}

impl std::fmt::Debug for SnapshotImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotImage")
            .field("meta", &self.meta)
            .field("bytes", &self.bytes.len())
            .field("data_bytes", &self.data.len())
            .finish()
    }
}

/// The version 1 file: meta and data, no checksum. (The data, the encoded state, carries
/// its own format marker: `crate::state_machine::decode_applied`.)
#[derive(Serialize, Deserialize)]
struct SnapshotFileV1 {
    meta: SnapshotMeta,
    #[serde(with = "haven_core::kv::byte_string")]
    data: Vec<u8>,
}

fn encode_error(error: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("encode snapshot: {error}"))
}

impl SnapshotImage {
    /// Builds an image of `meta` and the data `encode_data` appends to the buffer it is
    /// given (so the data is encoded in place, never copied).
    pub fn build(
        meta: &SnapshotMeta,
        encode_data: impl FnOnce(Vec<u8>) -> io::Result<Vec<u8>>,
    ) -> io::Result<SnapshotImage> {
        let meta_bytes = haven_core::codec::encode(meta).map_err(encode_error)?;
        let meta_len = u32::try_from(meta_bytes.len()).ok().filter(|len| *len <= META_BYTES_MAX).ok_or_else(|| {
            encode_error(format!("the snapshot's metadata is {} bytes, over {META_BYTES_MAX}", meta_bytes.len()))
        })?;
        let mut bytes = Vec::new();
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        bytes.extend_from_slice(&(SNAPSHOT_BLOCK_BYTES as u32).to_le_bytes());
        bytes.extend_from_slice(&meta_len.to_le_bytes());
        bytes.extend_from_slice(&meta_bytes);
        let data_len_at = bytes.len();
        bytes.extend_from_slice(&0u64.to_le_bytes());
        let header_hash_at = bytes.len();
        bytes.extend_from_slice(&[0u8; HASH_BYTES]);
        let data_start = bytes.len();
        let mut bytes = encode_data(bytes)?;
        let data_end = bytes.len();
        let data_len = (data_end - data_start) as u64;
        bytes[data_len_at..header_hash_at].copy_from_slice(&data_len.to_le_bytes());
        let header_hash = hash(&bytes[..header_hash_at]);
        bytes[header_hash_at..data_start].copy_from_slice(&header_hash);
        let block_hashes: Vec<[u8; HASH_BYTES]> =
            bytes[data_start..data_end].chunks(SNAPSHOT_BLOCK_BYTES).map(hash).collect();
        let trailer = trailer_hash(&header_hash, block_hashes.iter().map(|h| &h[..]));
        for block_hash in &block_hashes {
            bytes.extend_from_slice(block_hash);
        }
        bytes.extend_from_slice(&trailer);
        Ok(SnapshotImage { bytes, meta: meta.clone(), data: data_start..data_end })
    }

    /// Checks every checksum of a version 2 image and returns it; `origin` names where the
    /// bytes came from in the error (the file, or the peer that sent them).
    pub fn verify(bytes: Vec<u8>, origin: &Path) -> Result<SnapshotImage, CorruptData> {
        let corrupt = |location: String, problem: String| CorruptData::new(origin, location, problem);
        let total = bytes.len() as u64;
        if bytes.len() < HEADER_FIXED_BEFORE_META || &bytes[..MAGIC.len()] != MAGIC {
            return Err(corrupt(byte_range(0, 8), "not a Haven snapshot (the magic number is wrong)".into()));
        }
        let field = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap_or_default());
        let version = field(8);
        let meta_len = field(16) as usize;
        let header_hash_at = HEADER_FIXED_BEFORE_META + meta_len + 8;
        let data_start = header_hash_at + HASH_BYTES;
        if meta_len > META_BYTES_MAX as usize || data_start > bytes.len() {
            return Err(corrupt(
                byte_range(0, data_start.min(bytes.len()) as u64),
                format!("the header is damaged or the file is cut short ({total} bytes)"),
            ));
        }
        let header_hash: [u8; HASH_BYTES] = bytes[header_hash_at..data_start].try_into().unwrap_or_default();
        if hash(&bytes[..header_hash_at]) != header_hash {
            return Err(corrupt(byte_range(0, data_start as u64), "header checksum mismatch".into()));
        }
        if version != FORMAT_VERSION {
            return Err(corrupt(
                byte_range(8, 12),
                format!("snapshot format version {version}; this version of Haven reads versions 1 and 2"),
            ));
        }
        let block_bytes = field(12) as usize;
        if block_bytes == 0 {
            return Err(corrupt(byte_range(12, 16), "block size 0".into()));
        }
        let data_len = u64::from_le_bytes(bytes[header_hash_at - 8..header_hash_at].try_into().unwrap_or_default());
        let blocks = data_len.div_ceil(block_bytes as u64);
        let expected = (data_start as u64)
            .checked_add(data_len)
            .and_then(|end| end.checked_add(blocks.checked_mul(HASH_BYTES as u64)?))
            .and_then(|end| end.checked_add(HASH_BYTES as u64));
        if expected != Some(total) {
            return Err(corrupt(
                format!("byte {total} (the end)"),
                format!(
                    "the file is {total} bytes but its header describes {} (cut short or extended)",
                    expected.map_or_else(|| "an impossible size".to_string(), |bytes| format!("{bytes} bytes"))
                ),
            ));
        }
        let data_end = data_start + data_len as usize;
        let table_end = bytes.len() - HASH_BYTES;
        let table = &bytes[data_end..table_end];
        let trailer: [u8; HASH_BYTES] = bytes[table_end..].try_into().unwrap_or_default();
        if trailer_hash(&header_hash, table.chunks(HASH_BYTES)) != trailer {
            return Err(corrupt(
                byte_range(data_end as u64, total),
                "checksum table mismatch (the block checksums or the trailer are damaged)".into(),
            ));
        }
        for (index, (block, expected)) in
            bytes[data_start..data_end].chunks(block_bytes).zip(table.chunks(HASH_BYTES)).enumerate()
        {
            if hash(block) != expected {
                let start = (data_start + index * block_bytes) as u64;
                return Err(corrupt(
                    byte_range(start, start + block.len() as u64),
                    format!("checksum mismatch in data block {index}"),
                ));
            }
        }
        let meta: SnapshotMeta = haven_core::codec::decode(
            &bytes[HEADER_FIXED_BEFORE_META..HEADER_FIXED_BEFORE_META + meta_len],
        )
        .map_err(|error| {
            corrupt(
                byte_range(HEADER_FIXED_BEFORE_META as u64, (HEADER_FIXED_BEFORE_META + meta_len) as u64),
                format!("the metadata does not decode: {error}"),
            )
        })?;
        Ok(SnapshotImage { bytes, meta, data: data_start..data_end })
    }

    /// An image from the bytes of a snapshot in either format: version 2 is verified (a
    /// mismatch is [`CorruptData`]), version 1 (an old node's file, which carries no checksum)
    /// is decoded and rebuilt as version 2. A version 1 file that does not decode cannot be
    /// told from damage; it is refused as data this version cannot read.
    pub fn from_any_version(bytes: Vec<u8>, origin: &Path) -> io::Result<SnapshotImage> {
        if bytes.first().is_some_and(|first| *first == MAGIC[0]) {
            return SnapshotImage::verify(bytes, origin).map_err(CorruptData::into_io);
        }
        let file: SnapshotFileV1 = haven_core::codec::decode(&bytes)
            .map_err(|error| crate::state_machine::unreadable(origin, "its header (format version 1)", &error))?;
        SnapshotImage::from_legacy_transfer(&file.meta, &file.data)
    }

    /// An image built around the bytes of an old node's snapshot transfer: the encoded state
    /// alone (before version 2, the data of a transfer was the encoded state, not a file).
    pub fn from_legacy_transfer(meta: &SnapshotMeta, data: &[u8]) -> io::Result<SnapshotImage> {
        SnapshotImage::build(meta, |mut buffer| {
            buffer.extend_from_slice(data);
            Ok(buffer)
        })
    }

    pub fn meta(&self) -> &SnapshotMeta {
        &self.meta
    }

    /// The encoded state.
    pub fn data(&self) -> &[u8] {
        &self.bytes[self.data.clone()]
    }

    /// Where the encoded state starts in the image (for errors that name an offset).
    pub fn data_offset(&self) -> u64 {
        self.data.start as u64
    }

    /// The whole image, as written to disk and sent to peers.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

/// Does `bytes` start like a version 2 image? (A version 1 transfer is the bare encoded
/// state, which starts with an Option tag, 0 or 1.)
pub fn is_image(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC)
}

fn trailer_hash<'a>(header_hash: &[u8; HASH_BYTES], block_hashes: impl Iterator<Item = &'a [u8]>) -> [u8; HASH_BYTES] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(header_hash);
    for block_hash in block_hashes {
        hasher.update(block_hash);
    }
    hasher.finalize().into()
}

/// The path of the snapshot file in `dir`.
pub fn snapshot_path(dir: &Path) -> PathBuf {
    dir.join(SNAPSHOT_FILE)
}

/// What [`read_snapshot_file`] found.
#[derive(Debug)]
pub struct ReadSnapshot {
    pub image: SnapshotImage,
    /// The file was version 1 (no checksums); the image is its version 2 rebuild.
    pub was_version_1: bool,
}

/// Reads and verifies `snapshot.bin` in `dir`: `None` when there is none. A damaged file
/// is an `InvalidData` error carrying [`CorruptData`]; other IO errors name the file too.
pub fn read_snapshot_file(dir: &Path) -> io::Result<Option<ReadSnapshot>> {
    let path = snapshot_path(dir);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(io::Error::new(error.kind(), format!("cannot read {}: {error}", path.display()))),
    };
    let was_version_1 = !is_image(&bytes);
    let image = SnapshotImage::from_any_version(bytes, &path)?;
    Ok(Some(ReadSnapshot { image, was_version_1 }))
}

/// Write, fsync, rename, fsync the directory: the snapshot is either wholly there or not.
/// Written a block at a time, each flushed before the next (see [`SNAPSHOT_BLOCK_BYTES`]).
pub fn write_snapshot_file(dir: &Path, image: &SnapshotImage) -> io::Result<()> {
    let path = snapshot_path(dir);
    let tmp = dir.join(format!("{SNAPSHOT_FILE}.tmp"));
    let context = |what: &str, error: io::Error| {
        io::Error::new(error.kind(), format!("cannot {what} {}: {error}", tmp.display()))
    };
    {
        let mut out = std::fs::File::create(&tmp).map_err(|e| context("create", e))?;
        for piece in image.bytes().chunks(SNAPSHOT_BLOCK_BYTES) {
            out.write_all(piece).map_err(|e| context("write", e))?;
            out.sync_data().map_err(|e| context("sync", e))?;
        }
        out.sync_all().map_err(|e| context("sync", e))?;
    }
    std::fs::rename(&tmp, &path).map_err(|error| {
        io::Error::new(error.kind(), format!("cannot rename {} to {}: {error}", tmp.display(), path.display()))
    })?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::collections::BTreeSet;

    use super::*;
    use crate::HavenNode;
    use crate::LogId;
    use crate::Membership;
    use crate::StoredMembership;

    fn meta() -> SnapshotMeta {
        let node = HavenNode { client_url: "https://n1".into(), peer_addr: "n1:1".into(), ..Default::default() };
        let membership = Membership::new(vec![BTreeSet::from([1])], BTreeMap::from([(1, node)])).unwrap();
        let last: LogId = openraft::testing::log_id::<crate::TypeConfig>(3, 1, 42);
        SnapshotMeta { last_log_id: Some(last), last_membership: StoredMembership::new(Some(last), membership) }
    }

    fn image_of(data: &[u8]) -> SnapshotImage {
        SnapshotImage::build(&meta(), |mut buffer| {
            buffer.extend_from_slice(data);
            Ok(buffer)
        })
        .unwrap()
    }

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn an_image_round_trips_through_verify() {
        for len in [0, 1, SNAPSHOT_BLOCK_BYTES - 1, SNAPSHOT_BLOCK_BYTES, 2 * SNAPSHOT_BLOCK_BYTES + 17] {
            let image = image_of(&data(len));
            let again = SnapshotImage::verify(image.bytes().to_vec(), Path::new("x")).unwrap();
            assert_eq!(again.data(), &data(len)[..], "len {len}");
            assert_eq!(again.meta(), &meta());
        }
    }

    /// Every byte of a small image, changed: refused, and the error names a range that
    /// holds the changed byte.
    #[test]
    fn every_changed_byte_is_refused_with_its_place() {
        let image = image_of(&data(3000));
        for position in 0..image.bytes().len() {
            let mut damaged = image.bytes().to_vec();
            damaged[position] ^= 0x5a;
            let error = SnapshotImage::verify(damaged, Path::new("/d/snapshot.bin"))
                .expect_err(&format!("a change at byte {position} was accepted"));
            assert_eq!(error.file, Path::new("/d/snapshot.bin"));
            if let Some(range) = error.location.strip_prefix("bytes ") {
                let (start, end) = range.split_once("..").unwrap();
                let (start, end): (usize, usize) = (start.parse().unwrap(), end.parse().unwrap());
                assert!((start..end).contains(&position), "byte {position} reported as {}", error.location);
            }
        }
    }

    /// A damaged megabyte is named to the megabyte in a larger image.
    #[test]
    fn a_damaged_block_is_named() {
        let image = image_of(&data(3 * SNAPSHOT_BLOCK_BYTES));
        let target = image.data_offset() as usize + SNAPSHOT_BLOCK_BYTES + 12345;
        let mut damaged = image.bytes().to_vec();
        damaged[target] ^= 1;
        let error = SnapshotImage::verify(damaged, Path::new("s")).unwrap_err();
        let start = image.data_offset() + SNAPSHOT_BLOCK_BYTES as u64;
        assert_eq!(error.location, byte_range(start, start + SNAPSHOT_BLOCK_BYTES as u64));
        assert!(error.problem.contains("block 1"), "{}", error.problem);
    }

    #[test]
    fn cut_short_and_extended_files_are_refused() {
        let image = image_of(&data(5000));
        let mut short = image.bytes().to_vec();
        short.pop();
        assert!(SnapshotImage::verify(short, Path::new("s")).unwrap_err().problem.contains("cut short"));
        let mut long = image.bytes().to_vec();
        long.push(0);
        assert!(SnapshotImage::verify(long, Path::new("s")).is_err());
        assert!(SnapshotImage::verify(Vec::new(), Path::new("s")).is_err());
    }

    /// A version 1 file (what Haven wrote before checksums) still reads, and the same bytes
    /// with the first byte changed to 'H' are not mistaken for version 2.
    #[test]
    fn version_1_files_still_read() {
        let v1 = haven_core::codec::encode(&SnapshotFileV1 { meta: meta(), data: data(777) }).unwrap();
        assert!(!is_image(&v1));
        let image = SnapshotImage::from_any_version(v1, Path::new("s")).unwrap();
        assert_eq!(image.data(), &data(777)[..]);
        assert_eq!(image.meta(), &meta());
        assert!(is_image(image.bytes()));
        // A version 2 image whose magic was damaged is refused, not read as version 1.
        let mut damaged = image_of(&data(100)).into_bytes();
        for first in [0u8, 1] {
            damaged[0] = first;
            assert!(SnapshotImage::from_any_version(damaged.clone(), Path::new("s")).is_err());
        }
    }

    #[test]
    fn files_are_written_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_snapshot_file(dir.path()).unwrap().is_none());
        let image = image_of(&data(SNAPSHOT_BLOCK_BYTES + 5));
        write_snapshot_file(dir.path(), &image).unwrap();
        let read = read_snapshot_file(dir.path()).unwrap().unwrap();
        assert!(!read.was_version_1);
        assert_eq!(read.image.bytes(), image.bytes());
        let mut bytes = std::fs::read(snapshot_path(dir.path())).unwrap();
        bytes[100] ^= 4;
        std::fs::write(snapshot_path(dir.path()), bytes).unwrap();
        let error = read_snapshot_file(dir.path()).unwrap_err();
        let corrupt = CorruptData::find(&error).expect("carries CorruptData");
        assert_eq!(corrupt.file, snapshot_path(dir.path()));
    }
}
