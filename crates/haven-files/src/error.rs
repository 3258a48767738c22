//! The library's errors: each says in one line what went wrong, where, and what to do.

use std::io;
use std::path::Path;

use crate::hash::Hash;
use crate::limits::ENTRIES_MAX;
use crate::manifest::ManifestError;
use crate::path::show_path;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("disk full at {path}: no file of this generation was put in place; apply again once space is free")]
    DiskFull { path: String },
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("chunk {hash} ({len} bytes) could not be fetched: {attempts}")]
    ChunkUnavailable { hash: Hash, len: u32, attempts: String },
    #[error("{path}: {what}; refusing to write through it")]
    Unsafe { path: String, what: String },
    #[error(
        "{root}: more than {ENTRIES_MAX} entries; no generation published (split the directory or raise the limit)"
    )]
    TooManyEntries { root: String },
    #[error("{path}: written content does not match the manifest (hash {found}, expected {expected}); the store is corrupt or was changed while writing")]
    WrittenContentDiffers { path: String, expected: Hash, found: Hash },
    #[error("apply cancelled; apply again to finish")]
    Cancelled,
}

impl Error {
    /// An IO error at `path`; "no space" and "quota exceeded" become [`Error::DiskFull`] so a
    /// caller can tell "wait for space" from a fault.
    pub fn io(path: &Path, source: io::Error) -> Error {
        if is_disk_full(&source) {
            return Error::DiskFull { path: show_path(path) };
        }
        Error::Io { path: show_path(path), source }
    }

    /// Whether waiting for free space and applying again can succeed.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, Error::DiskFull { .. })
    }
}

pub(crate) fn is_disk_full(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

/// Adds the path to an IO result.
pub(crate) trait AtPath<T> {
    fn at(self, path: &Path) -> Result<T, Error>;
}

impl<T> AtPath<T> for io::Result<T> {
    fn at(self, path: &Path) -> Result<T, Error> {
        self.map_err(|source| Error::io(path, source))
    }
}
