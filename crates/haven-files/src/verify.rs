//! Verifying a tree against a manifest: every file re-read and re-hashed, every
//! difference reported (for `haven files verify`, and for tests).

use std::collections::HashMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::error::Error;
use crate::manifest::Kind;
use crate::manifest::Manifest;
use crate::path::show_path;
use crate::path::RelPath;
use crate::scan::read_stable;
use crate::walk::check_root;
use crate::walk::mode_of;
use crate::walk::walk;

/// One way the tree on disk differs from the manifest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Difference {
    #[error("{0}: missing")]
    Missing(RelPath),
    #[error("{0}: not in the generation")]
    Extra(RelPath),
    #[error("{path}: is a {found}, the generation has a {expected}")]
    Kind { path: RelPath, expected: &'static str, found: &'static str },
    #[error("{path}: mode {found:o}, the generation has {expected:o}")]
    Mode { path: RelPath, expected: u32, found: u32 },
    #[error("{0}: content differs")]
    Content(RelPath),
    #[error("{0}: modification time differs")]
    Mtime(RelPath),
    #[error("{0}: symlink target differs")]
    LinkTarget(RelPath),
    #[error("{0}: cannot be read: {1}")]
    Unreadable(String, String),
    #[error("{0}: temporary file of an interrupted apply")]
    Leftover(String),
}

/// Every difference between the tree under `root` and `manifest`, in path order.
pub fn verify(root: &Path, manifest: &Manifest) -> Result<Vec<Difference>, Error> {
    check_root(root)?;
    let listing = walk(root)?;
    let mut differences: Vec<Difference> =
        listing.skipped.into_iter().map(|(_, why)| Difference::Unreadable(why, "not listed".to_string())).collect();
    differences.extend(listing.temps.iter().map(|temp| Difference::Leftover(show_path(temp))));
    let local: HashMap<&RelPath, &fs::Metadata> = listing.found.iter().map(|f| (&f.path, &f.meta)).collect();
    for entry in manifest.entries() {
        let path = &entry.path;
        let Some(meta) = local.get(path) else {
            differences.push(Difference::Missing(path.clone()));
            continue;
        };
        let found = kind_name(meta);
        let expected = match &entry.kind {
            Kind::Dir { .. } => "directory",
            Kind::File(_) => "file",
            Kind::Symlink { .. } => "symlink",
        };
        if found != expected {
            differences.push(Difference::Kind { path: path.clone(), expected, found });
            continue;
        }
        let on_disk = path.under(root);
        match &entry.kind {
            Kind::Dir { mode } => check_mode(&mut differences, path, *mode, meta),
            Kind::File(file) => {
                check_mode(&mut differences, path, file.mode, meta);
                match read_stable(&on_disk, None) {
                    Ok(Some(read)) if read.size == file.size && read.hash == file.hash => {}
                    Ok(Some(_)) => differences.push(Difference::Content(path.clone())),
                    Ok(None) => {
                        differences.push(Difference::Unreadable(path.to_string(), "changing while read".to_string()))
                    }
                    Err(error) => differences.push(Difference::Unreadable(path.to_string(), error.to_string())),
                }
                if meta.mtime() != file.mtime.seconds || meta.mtime_nsec() != i64::from(file.mtime.nanoseconds) {
                    differences.push(Difference::Mtime(path.clone()));
                }
            }
            Kind::Symlink { target } => match fs::read_link(&on_disk) {
                Ok(found) if found.as_os_str().as_bytes() == target.as_slice() => {}
                Ok(_) => differences.push(Difference::LinkTarget(path.clone())),
                Err(error) => differences.push(Difference::Unreadable(path.to_string(), error.to_string())),
            },
        }
    }
    for found in &listing.found {
        if manifest.get(found.path.as_bytes()).is_none() {
            differences.push(Difference::Extra(found.path.clone()));
        }
    }
    Ok(differences)
}

fn check_mode(differences: &mut Vec<Difference>, path: &RelPath, expected: u32, meta: &fs::Metadata) {
    let found = mode_of(meta);
    if found != expected {
        differences.push(Difference::Mode { path: path.clone(), expected, found });
    }
}

fn kind_name(meta: &fs::Metadata) -> &'static str {
    let file_type = meta.file_type();
    if file_type.is_dir() {
        "directory"
    } else if file_type.is_symlink() {
        "symlink"
    } else if file_type.is_file() {
        "file"
    } else {
        "special file"
    }
}
