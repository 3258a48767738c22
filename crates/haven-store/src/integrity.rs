//! Checksums over what Haven stores, and the error that names corrupt data.
//!
//! ```text
//!   sealed record (log entries, vote, committed id, purge point, identity):
//!     [version 1][BLAKE3 of body: 32 bytes][body: the encoded value]
//!   snapshot.bin: header, data in blocks, the blocks' hashes, a trailer hash
//!     (see crate::snapshot_file)
//! ```
//!
//! The hash is BLAKE3: fast enough to check every byte on every read (well over a GB/s on
//! one core) and cryptographic, so no pattern of damage slips through it the way one can
//! through a 32-bit CRC. Each record is checked where it is read: a log entry when openraft
//! reads it, a snapshot when it is loaded, sent or received. A mismatch is never decoded: the
//! read fails with [`CorruptData`], which names the file and the place, and the node treats
//! the data as lost (docs/architecture.md, "Integrity").

use std::fmt;
use std::io;
use std::path::Path;
use std::path::PathBuf;

/// Bytes of one BLAKE3 hash as stored.
pub const HASH_BYTES: usize = 32;

/// The version byte of a sealed record. A new layout gets a new number; readers refuse the
/// numbers they do not know instead of guessing.
const SEALED_V1: u8 = 1;

/// Bytes a seal adds in front of the body.
pub const SEAL_BYTES: usize = 1 + HASH_BYTES;

/// BLAKE3 of `bytes`.
pub fn hash(bytes: &[u8]) -> [u8; HASH_BYTES] {
    blake3::hash(bytes).into()
}

/// `body` with a version byte and its hash in front.
pub fn seal(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(SEAL_BYTES + body.len());
    out.push(SEALED_V1);
    out.extend_from_slice(&hash(body));
    out.extend_from_slice(body);
    out
}

/// The body of a sealed record, if its hash matches; otherwise what is wrong with it.
pub fn unseal(record: &[u8]) -> Result<&[u8], String> {
    if record.len() < SEAL_BYTES {
        return Err(format!("{} bytes, shorter than a checksummed record ({SEAL_BYTES} bytes at least)", record.len()));
    }
    if record[0] != SEALED_V1 {
        return Err(format!("unknown record version {} (this version writes {SEALED_V1})", record[0]));
    }
    let body = &record[SEAL_BYTES..];
    if record[1..SEAL_BYTES] != hash(body) {
        return Err("checksum mismatch".into());
    }
    Ok(body)
}

/// Data that failed its checksum or cannot be decoded: which file, where in it, what is
/// wrong. Travels inside an `io::Error` of kind `InvalidData` (see [`CorruptData::into_io`]),
/// so openraft and callers pass it on unchanged and [`CorruptData::find`] gets it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorruptData {
    /// The file the data was read from (for data received from a peer: a description of
    /// the transfer instead).
    pub file: PathBuf,
    /// Where in it: a byte range, a log index, a metadata key.
    pub location: String,
    /// What is wrong.
    pub problem: String,
}

impl CorruptData {
    pub fn new(file: &Path, location: impl Into<String>, problem: impl Into<String>) -> CorruptData {
        CorruptData { file: file.to_path_buf(), location: location.into(), problem: problem.into() }
    }

    pub fn into_io(self) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, self)
    }

    /// The `CorruptData` inside `error`, if that is what it carries.
    pub fn find(error: &io::Error) -> Option<&CorruptData> {
        error.get_ref().and_then(|inner| inner.downcast_ref::<CorruptData>())
    }
}

impl fmt::Display for CorruptData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "corrupt data in {} at {}: {}", self.file.display(), self.location, self.problem)
    }
}

impl std::error::Error for CorruptData {}

/// Byte range `start..end` as shown in errors.
pub fn byte_range(start: u64, end: u64) -> String {
    format!("bytes {start}..{end}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_record_opens_and_every_single_byte_change_is_refused() {
        let body = b"a log entry, encoded";
        let record = seal(body);
        assert_eq!(unseal(&record).unwrap(), body);
        for position in 0..record.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut damaged = record.clone();
                damaged[position] ^= flip;
                assert!(unseal(&damaged).is_err(), "a change at byte {position} (xor {flip:#x}) was accepted");
            }
        }
        assert!(unseal(&record[..record.len() - 1]).is_err(), "a shortened record was accepted");
        assert!(unseal(&record[..SEAL_BYTES - 1]).unwrap_err().contains("shorter"));
    }

    #[test]
    fn corrupt_data_survives_the_trip_through_io_error() {
        let error = CorruptData::new(Path::new("/d/raft.redb"), "log entry 7", "checksum mismatch").into_io();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        let found = CorruptData::find(&error).expect("carried");
        assert_eq!(found.location, "log entry 7");
        assert_eq!(error.to_string(), "corrupt data in /d/raft.redb at log entry 7: checksum mismatch");
    }
}
