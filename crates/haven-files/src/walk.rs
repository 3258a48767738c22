//! Listing a directory tree without following symlinks: what scan, plan and verify share.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::path::PathBuf;

use crate::error::AtPath;
use crate::error::Error;
use crate::limits::ENTRIES_MAX;
use crate::path::show_path;
use crate::path::RelPath;
use crate::path::TEMP_PREFIX;

/// One path found on disk, with its metadata (`lstat`: a symlink is described, not followed).
pub(crate) struct Found {
    pub path: RelPath,
    pub meta: fs::Metadata,
}

/// Everything under a root.
pub(crate) struct Listing {
    /// Sorted by path bytes, as a manifest is.
    pub found: Vec<Found>,
    /// Temporary files of an interrupted apply (names starting with `.haven-tmp.`).
    pub temps: Vec<PathBuf>,
    /// Paths that could not be listed or are refused, with the reason, one line each.
    pub skipped: Vec<(Option<RelPath>, String)>,
}

/// Lists the tree under `root` (which must be a directory; it may itself be a symlink to
/// one, as an operator may configure). Unreadable subdirectories are reported in
/// `skipped`, not fatal; more than [`ENTRIES_MAX`] entries is.
pub(crate) fn walk(root: &Path) -> Result<Listing, Error> {
    let mut listing = Listing { found: Vec::new(), temps: Vec::new(), skipped: Vec::new() };
    let mut pending: Vec<Option<RelPath>> = vec![None];
    while let Some(dir) = pending.pop() {
        let dir_path = dir.as_ref().map_or_else(|| root.to_path_buf(), |dir| dir.under(root));
        let entries = match fs::read_dir(&dir_path) {
            Ok(entries) => entries,
            Err(error) if dir.is_some() => {
                listing.skipped.push((dir, format!("{}: {error}", show_path(&dir_path))));
                continue;
            }
            Err(error) => return Err(Error::io(&dir_path, error)),
        };
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(error) => {
                    listing.skipped.push((dir.clone(), format!("{}: {error}", show_path(&dir_path))));
                    break;
                }
            };
            let name = entry.file_name();
            if name.as_bytes().starts_with(TEMP_PREFIX) {
                listing.temps.push(entry.path());
                continue;
            }
            let path = RelPath::child(dir.as_ref(), name.as_bytes());
            if let Err(refused) = path.check() {
                listing.skipped.push((None, format!("{refused}; not replicated")));
                continue;
            }
            let meta = match fs::symlink_metadata(entry.path()) {
                Ok(meta) => meta,
                Err(error) => {
                    listing.skipped.push((Some(path), format!("{}: {error}", show_path(&entry.path()))));
                    continue;
                }
            };
            if meta.is_dir() {
                pending.push(Some(path.clone()));
            }
            listing.found.push(Found { path, meta });
            if listing.found.len() > ENTRIES_MAX {
                return Err(Error::TooManyEntries { root: show_path(root) });
            }
        }
    }
    listing.found.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(listing)
}

/// Permission bits of a path as a manifest keeps them.
pub(crate) fn mode_of(meta: &fs::Metadata) -> u32 {
    meta.mode() & crate::manifest::MODE_BITS
}

/// Checks that the root is a directory we can list.
pub(crate) fn check_root(root: &Path) -> Result<(), Error> {
    let meta = fs::metadata(root).at(root)?;
    if !meta.is_dir() {
        return Err(Error::Unsafe { path: show_path(root), what: "not a directory".to_string() });
    }
    Ok(())
}
