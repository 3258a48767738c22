//! The content store of one node: every chunk once, named by its BLAKE3 hash.
//!
//! ```text
//!   STORE_DIR/chunks/ab/ab12...ef   one file per chunk, whatever number of paths use it
//!   STORE_DIR/tmp/                  chunks being written (emptied when the store opens)
//! ```
//!
//! A chunk is written to `tmp/` and renamed into place, so a chunk file under `chunks/`
//! is never partial while the node runs. Chunks are not fsynced one by one: every read
//! checks the hash, a chunk damaged by a crash or by the disk is removed and fetched again,
//! and [`ChunkStore::sync`] makes the whole store durable in one call before the primary
//! commits a generation that needs it.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;

use crate::error::AtPath;
use crate::error::Error;
use crate::hash::Hash;
use crate::manifest::ChunkRef;

/// A node's chunk store.
pub struct ChunkStore {
    chunks: PathBuf,
    tmp: PathBuf,
    next_tmp: AtomicU64,
}

/// Why a chunk cannot be read from the store.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("chunk {0} is not in the store")]
    Missing(Hash),
    #[error("chunk {0} in the store was damaged and has been removed")]
    Corrupt(Hash),
    #[error(transparent)]
    Failed(#[from] Error),
}

impl ChunkStore {
    /// Opens (creating) the store in `dir`; leftovers of interrupted writes are removed.
    pub fn open(dir: &Path) -> Result<ChunkStore, Error> {
        let chunks = dir.join("chunks");
        let tmp = dir.join("tmp");
        for prefix in 0..=255u8 {
            let sub = chunks.join(format!("{prefix:02x}"));
            fs::create_dir_all(&sub).at(&sub)?;
        }
        if tmp.exists() {
            fs::remove_dir_all(&tmp).at(&tmp)?;
        }
        fs::create_dir_all(&tmp).at(&tmp)?;
        Ok(ChunkStore { chunks, tmp, next_tmp: AtomicU64::new(0) })
    }

    fn path(&self, hash: &Hash) -> PathBuf {
        let hex = hash.to_hex();
        self.chunks.join(&hex[..2]).join(hex)
    }

    /// Whether the chunk is present with the right length (its content is checked on read).
    pub fn contains(&self, chunk: &ChunkRef) -> bool {
        fs::metadata(self.path(&chunk.hash)).is_ok_and(|meta| meta.len() == u64::from(chunk.len))
    }

    /// Stores `bytes` and returns their hash.
    pub fn insert(&self, bytes: &[u8]) -> Result<Hash, Error> {
        let hash = Hash::of(bytes);
        self.insert_hashed(&hash, bytes)?;
        Ok(hash)
    }

    /// Stores `bytes` whose hash the caller has just computed from these very bytes.
    pub(crate) fn insert_hashed(&self, hash: &Hash, bytes: &[u8]) -> Result<(), Error> {
        let path = self.path(hash);
        if fs::metadata(&path).is_ok_and(|meta| meta.len() == bytes.len() as u64) {
            return Ok(());
        }
        let tmp = self.tmp.join(format!("{}.{}", hash.to_hex(), self.next_tmp.fetch_add(1, Ordering::Relaxed)));
        let written = fs::write(&tmp, bytes).and_then(|()| fs::rename(&tmp, &path));
        if let Err(error) = written {
            let _ = fs::remove_file(&tmp);
            return Err(Error::io(&path, error));
        }
        Ok(())
    }

    /// The chunk's bytes, checked against its hash and length. A damaged chunk is removed,
    /// so the next plan fetches it again.
    pub fn read(&self, chunk: &ChunkRef) -> Result<Vec<u8>, ReadError> {
        let path = self.path(&chunk.hash);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Err(ReadError::Missing(chunk.hash)),
            Err(error) => return Err(ReadError::Failed(Error::io(&path, error))),
        };
        if bytes.len() != chunk.len as usize || Hash::of(&bytes) != chunk.hash {
            fs::remove_file(&path).at(&path)?;
            return Err(ReadError::Corrupt(chunk.hash));
        }
        Ok(bytes)
    }

    /// Removes every chunk not in `keep` (the chunks of the generations still needed: the
    /// current one, and on the primary the one being published). Returns how many went.
    pub fn retain(&self, keep: &HashSet<Hash>) -> Result<usize, Error> {
        let mut removed = 0;
        for prefix in fs::read_dir(&self.chunks).at(&self.chunks)? {
            let prefix = prefix.at(&self.chunks)?.path();
            for chunk in fs::read_dir(&prefix).at(&prefix)? {
                let chunk = chunk.at(&prefix)?.path();
                let kept = chunk
                    .file_name()
                    .and_then(|name| name.to_str())
                    .and_then(parse_hex)
                    .is_some_and(|hash| keep.contains(&hash));
                if !kept {
                    fs::remove_file(&chunk).at(&chunk)?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    /// Makes everything written to the store durable: one `syncfs` of its file system
    /// instead of an fsync per chunk.
    pub fn sync(&self) -> Result<(), Error> {
        sync_filesystem(&self.chunks)
    }

    /// The file holding a chunk (for tests that damage the store on purpose).
    pub fn chunk_file(&self, hash: &Hash) -> PathBuf {
        self.path(hash)
    }
}

/// Makes everything written to the file system holding `path` durable (`syncfs`): data,
/// new names, renames and removals, in one call. One call for thousands of files costs one
/// journal commit where an fsync per file costs one each (measured in docs/files.md).
pub(crate) fn sync_filesystem(path: &Path) -> Result<(), Error> {
    let dir = fs::File::open(path).at(path)?;
    // SAFETY: syncfs takes a file descriptor that `dir` keeps open for the call.
    if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
        return Err(Error::io(path, io::Error::last_os_error()));
    }
    Ok(())
}

fn parse_hex(hex: &str) -> Option<Hash> {
    if hex.len() != 64 {
        return None;
    }
    let mut bytes = [0u8; 32];
    for (at, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * at..2 * at + 2)?, 16).ok()?;
    }
    Some(Hash(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_is_stored_once_and_read_back_checked() {
        let dir = tempfile::tempdir().unwrap();
        let store = ChunkStore::open(dir.path()).unwrap();
        let hash = store.insert(b"content").unwrap();
        assert_eq!(store.insert(b"content").unwrap(), hash);
        let chunk = ChunkRef { hash, len: 7 };
        assert!(store.contains(&chunk));
        assert_eq!(store.read(&chunk).unwrap(), b"content");
        let files: usize = fs::read_dir(dir.path().join("chunks"))
            .unwrap()
            .map(|d| fs::read_dir(d.unwrap().path()).unwrap().count())
            .sum();
        assert_eq!(files, 1);
    }

    #[test]
    fn a_damaged_chunk_is_detected_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = ChunkStore::open(dir.path()).unwrap();
        let hash = store.insert(b"content").unwrap();
        let chunk = ChunkRef { hash, len: 7 };
        fs::write(store.chunk_file(&hash), b"CONTENT").unwrap();
        assert!(matches!(store.read(&chunk), Err(ReadError::Corrupt(_))));
        assert!(!store.contains(&chunk));
        assert!(matches!(store.read(&chunk), Err(ReadError::Missing(_))));
    }

    #[test]
    fn retain_removes_exactly_the_unreferenced_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let store = ChunkStore::open(dir.path()).unwrap();
        let keep = store.insert(b"keep").unwrap();
        let drop = store.insert(b"drop").unwrap();
        assert_eq!(store.retain(&HashSet::from([keep])).unwrap(), 1);
        assert!(store.contains(&ChunkRef { hash: keep, len: 4 }));
        assert!(!store.contains(&ChunkRef { hash: drop, len: 4 }));
        assert_eq!(parse_hex(&keep.to_hex()), Some(keep));
    }
}
