//! Bringing a node's directory to a target generation: plan, fetch, stage, commit, delete.
//!
//! ```text
//!   plan    walk the tree (lstat), compare with the manifest: what to create, write,
//!           re-link, touch (mode/mtime only), delete; which chunks the store lacks
//!   fetch   the missing chunks from peers, each checked (fetch.rs)
//!   dirs    create missing directories, parents first
//!   stage   every changed file as DIR/.haven-tmp.X next to its place: written from
//!           checked chunks, whole-file hash compared, mode and mtime set
//!   sync    all staged files (and new directories) durable: one syncfs
//!   commit  rename each staged file over its place; one syncfs for the renames
//!   touch   mode and mtime of files whose content is already right
//!   delete  what the generation no longer has, deepest first; one syncfs
//!   modes   directories' modes, deepest first (a read-only directory last)
//! ```
//!
//! The "fsync the file, rename, fsync the directory" of every atomic file write is done
//! for all files at once: one `syncfs` after staging orders every file's data before every
//! rename, one after the renames makes them durable. An fsync per file and directory cost
//! one journal commit each (2,000 files: see the measurement in docs/files.md).
//!
//! A reader never sees a partial file: a file appears under its name only by a rename of
//! a complete, fsynced file. Staging all files before renaming any means that a full disk
//! (or any error while staging) leaves the tree exactly as it was, the staged files
//! removed; applying again when space is back reuses the chunks already fetched. An apply
//! that is stopped (killed, or cancelled through [`Progress`]) leaves each path either as
//! it was or as the target has it, plus `.haven-tmp.` files that the next apply removes;
//! applying again converges.
//!
//! Nothing is written through a symlink: a manifest cannot place an entry under a symlink
//! (decode refuses it), and before anything is created every ancestor on disk is checked
//! to be a real directory (a local symlink where the target has a directory is replaced).
//! One rule cannot be all-or-nothing: where a path changes type (a file becomes a
//! directory), the old one is removed when the new one is created.

use std::collections::HashMap;
use std::collections::HashSet;
use std::fs;
use std::fs::File;
use std::io::Write;
use std::ops::ControlFlow;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;
use std::time::SystemTime;

use crate::error::AtPath;
use crate::error::Error;
use crate::fetch::fetch_chunks;
use crate::fetch::obtain;
use crate::fetch::ChunkSource;
use crate::fetch::FetchReport;
use crate::fetch::PeerId;
use crate::hash::Hash;
use crate::manifest::ChunkRef;
use crate::manifest::Entry;
use crate::manifest::FileMeta;
use crate::manifest::Kind;
use crate::manifest::Manifest;
use crate::manifest::Mtime;
use crate::path::show_path;
use crate::path::RelPath;
use crate::path::TEMP_PREFIX;
use crate::scan::read_stable;
use crate::store::sync_filesystem;
use crate::store::ChunkStore;
use crate::walk::check_root;
use crate::walk::mode_of;
use crate::walk::walk;

/// One step of an apply, reported as it happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step<'a> {
    /// A chunk was fetched from a peer and stored.
    Fetched { bytes: u64 },
    /// A chunk was written into a staged file.
    Wrote { path: &'a RelPath, bytes: u64 },
    /// A staged file or symlink was renamed into place.
    Committed { path: &'a RelPath },
    /// A path the generation no longer has was removed.
    Deleted { path: &'a RelPath },
}

/// Watches an apply and may stop it: a server reports progress and stops an apply on
/// shutdown or when a newer generation arrives; tests stop it at every step to check that
/// any stop point leaves a valid tree. `()` watches nothing.
pub trait Progress {
    /// Called after each step; [`ControlFlow::Break`] stops the apply where it is, as a
    /// kill would (staged files stay until the next apply removes them).
    fn step(&mut self, step: Step<'_>) -> ControlFlow<()>;
}

impl Progress for () {
    fn step(&mut self, _: Step<'_>) -> ControlFlow<()> {
        ControlFlow::Continue(())
    }
}

impl<F: FnMut(Step<'_>) -> ControlFlow<()>> Progress for F {
    fn step(&mut self, step: Step<'_>) -> ControlFlow<()> {
        self(step)
    }
}

/// Where a generation is applied: the directory and this node's chunk store.
#[derive(Clone, Copy)]
pub struct Replica<'a> {
    pub root: &'a Path,
    pub store: &'a ChunkStore,
}

/// What an apply must do, computed from the tree on disk and the target manifest.
#[derive(Debug, Default)]
pub struct Plan {
    /// Indexes into the target's entries.
    dirs: Vec<usize>,
    writes: Vec<usize>,
    links: Vec<usize>,
    touches: Vec<usize>,
    /// Paths on disk the target does not have, deepest first.
    deletions: Vec<RelPath>,
    /// Leftovers of an interrupted apply.
    temps: Vec<PathBuf>,
    /// Distinct chunks the writes need that the store lacks.
    missing: Vec<ChunkRef>,
}

impl Plan {
    /// Whether the tree already is the target.
    pub fn is_empty(&self) -> bool {
        self.changes() == 0 && self.temps.is_empty()
    }

    /// Paths to create, write, re-link, touch or delete: how far behind the tree is.
    pub fn changes(&self) -> usize {
        self.dirs.len() + self.writes.len() + self.links.len() + self.touches.len() + self.deletions.len()
    }

    /// Chunks to fetch before the tree can be brought up to date.
    pub fn missing_chunks(&self) -> &[ChunkRef] {
        &self.missing
    }

    /// Bytes to fetch.
    pub fn missing_bytes(&self) -> u64 {
        self.missing.iter().map(|chunk| u64::from(chunk.len)).sum()
    }
}

/// What an apply did.
#[derive(Debug, Default)]
pub struct ApplyReport {
    pub fetched: FetchReport,
    pub files_written: usize,
    pub bytes_written: u64,
    pub links_written: usize,
    pub touched: usize,
    pub deleted: usize,
}

/// Compares the tree under `root` with `target`. Files are compared by size and mtime
/// (an apply sets both before a file is renamed into place); a file whose size matches
/// but mtime does not is read and hashed.
pub fn plan(replica: Replica<'_>, target: &Manifest) -> Result<Plan, Error> {
    check_root(replica.root)?;
    let listing = walk(replica.root)?;
    if let Some((_, why)) = listing.skipped.first() {
        return Err(Error::Unsafe { path: why.clone(), what: "cannot be listed".to_string() });
    }
    let local: HashMap<&[u8], &fs::Metadata> =
        listing.found.iter().map(|found| (found.path.as_bytes(), &found.meta)).collect();
    let mut plan = Plan { temps: listing.temps.clone(), ..Plan::default() };
    for (at, entry) in target.entries().iter().enumerate() {
        let on_disk = local.get(entry.path.as_bytes()).copied();
        match &entry.kind {
            Kind::Dir { .. } => {
                if !on_disk.is_some_and(|meta| meta.is_dir()) {
                    plan.dirs.push(at);
                }
            }
            Kind::File(file) => match on_disk.filter(|meta| meta.is_file()) {
                None => plan.writes.push(at),
                Some(meta) => match compare_file(&entry.path.under(replica.root), meta, file)? {
                    FileState::Same => {}
                    FileState::MetadataDiffers => plan.touches.push(at),
                    FileState::ContentDiffers => plan.writes.push(at),
                },
            },
            Kind::Symlink { target: link } => {
                let same = on_disk.is_some_and(|meta| meta.file_type().is_symlink())
                    && fs::read_link(entry.path.under(replica.root))
                        .is_ok_and(|found| found.as_os_str().as_bytes() == link.as_slice());
                if !same {
                    plan.links.push(at);
                }
            }
        }
    }
    for found in listing.found.iter().rev() {
        if target.get(found.path.as_bytes()).is_none() {
            plan.deletions.push(found.path.clone());
        }
    }
    let mut seen = HashSet::new();
    for &at in &plan.writes {
        if let Kind::File(file) = &target.entries()[at].kind {
            for chunk in &file.chunks {
                if seen.insert(chunk.hash) && !replica.store.contains(chunk) {
                    plan.missing.push(*chunk);
                }
            }
        }
    }
    Ok(plan)
}

enum FileState {
    Same,
    MetadataDiffers,
    ContentDiffers,
}

fn compare_file(path: &Path, meta: &fs::Metadata, file: &FileMeta) -> Result<FileState, Error> {
    if meta.size() != file.size {
        return Ok(FileState::ContentDiffers);
    }
    let same_mtime = meta.mtime() == file.mtime.seconds && meta.mtime_nsec() == i64::from(file.mtime.nanoseconds);
    if same_mtime {
        return Ok(if mode_of(meta) == file.mode { FileState::Same } else { FileState::MetadataDiffers });
    }
    // Same size, other mtime: the content decides whether it must be rewritten.
    match read_stable(path, None).at(path)? {
        Some(read) if read.hash == file.hash => Ok(FileState::MetadataDiffers),
        _ => Ok(FileState::ContentDiffers),
    }
}

/// Brings the tree under `replica.root` to `target`, fetching missing chunks from `peers`
/// through `source`. See the module documentation for the order and what a stop leaves.
pub fn apply(
    replica: Replica<'_>,
    target: &Manifest,
    source: &dyn ChunkSource,
    peers: &[PeerId],
    progress: &mut dyn Progress,
) -> Result<ApplyReport, Error> {
    let plan = plan(replica, target)?;
    let mut report = ApplyReport::default();
    for temp in &plan.temps {
        remove_any(temp)?;
    }
    report.fetched = fetch_chunks(replica.store, source, peers, &plan.missing, &mut |bytes| {
        progress.step(Step::Fetched { bytes }).is_continue()
    })?;
    let entries = target.entries();
    for &at in &plan.dirs {
        create_dir(replica.root, &entries[at].path)?;
    }
    let mut staging = Staging { staged: Vec::new() };
    let staged = stage_all(replica, &plan, entries, source, peers, progress, &mut staging, &mut report);
    // Every staged file's data (and every new directory) on disk before any rename.
    let staged = staged.and_then(|()| match staging.staged.is_empty() && plan.dirs.is_empty() {
        true => Ok(()),
        false => sync_filesystem(replica.root),
    });
    if let Err(error) = staged {
        // Cancelled: leave the staged files as a kill would. Failed (disk full, IO): remove
        // them, so the space is free and the tree is exactly as it was.
        if !matches!(error, Error::Cancelled) {
            staging.remove_all();
        }
        return Err(error);
    }
    commit(replica.root, &staging.staged, entries, progress)?;
    for &at in &plan.touches {
        if let Kind::File(file) = &entries[at].kind {
            check_ancestors(replica.root, &entries[at].path)?;
            let path = entries[at].path.under(replica.root);
            let handle = open_no_follow(&path)?;
            handle.set_permissions(fs::Permissions::from_mode(file.mode)).at(&path)?;
            handle.set_modified(system_time(file.mtime)).at(&path)?;
            report.touched += 1;
        }
    }
    for path in &plan.deletions {
        // An ancestor replaced by a file or symlink during commit took this path with it;
        // looking further would follow that symlink out of the tree.
        if check_ancestors(replica.root, path).is_err() {
            continue;
        }
        remove_any(&path.under(replica.root))?;
        report.deleted += 1;
        if progress.step(Step::Deleted { path }).is_break() {
            return Err(Error::Cancelled);
        }
    }
    if !plan.deletions.is_empty() {
        sync_filesystem(replica.root)?;
    }
    for entry in entries.iter().rev() {
        if let Kind::Dir { mode } = entry.kind {
            let path = entry.path.under(replica.root);
            let meta = fs::symlink_metadata(&path).at(&path)?;
            if mode_of(&meta) != mode {
                fs::set_permissions(&path, fs::Permissions::from_mode(mode)).at(&path)?;
            }
        }
    }
    Ok(report)
}

/// Staged files and symlinks: (temporary path, index of the target entry).
struct Staging {
    staged: Vec<(PathBuf, usize)>,
}

impl Staging {
    fn remove_all(&mut self) {
        for (temp, _) in self.staged.drain(..) {
            // Best effort: whatever cannot be removed now goes at the next apply's start.
            let _ = fs::remove_file(&temp);
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn stage_all(
    replica: Replica<'_>,
    plan: &Plan,
    entries: &[Entry],
    source: &dyn ChunkSource,
    peers: &[PeerId],
    progress: &mut dyn Progress,
    staging: &mut Staging,
    report: &mut ApplyReport,
) -> Result<(), Error> {
    let mut writable_checked = HashSet::new();
    for &at in &plan.writes {
        let entry = &entries[at];
        let Kind::File(file) = &entry.kind else { continue };
        let temp = prepare_temp(replica.root, &entry.path, &mut writable_checked)?;
        staging.staged.push((temp.clone(), at));
        let mut out = File::options()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&temp)
            .at(&temp)?;
        let mut whole = blake3::Hasher::new();
        for chunk in &file.chunks {
            let bytes = obtain(replica.store, source, peers, chunk)?;
            whole.update(&bytes);
            out.write_all(&bytes).at(&temp)?;
            report.bytes_written += bytes.len() as u64;
            if progress.step(Step::Wrote { path: &entry.path, bytes: bytes.len() as u64 }).is_break() {
                return Err(Error::Cancelled);
            }
        }
        let written: Hash = whole.finalize().into();
        if written != file.hash {
            return Err(Error::WrittenContentDiffers {
                path: entry.path.to_string(),
                expected: file.hash,
                found: written,
            });
        }
        out.set_permissions(fs::Permissions::from_mode(file.mode)).at(&temp)?;
        out.set_modified(system_time(file.mtime)).at(&temp)?;
        report.files_written += 1;
    }
    for &at in &plan.links {
        let entry = &entries[at];
        let Kind::Symlink { target } = &entry.kind else { continue };
        let temp = prepare_temp(replica.root, &entry.path, &mut writable_checked)?;
        staging.staged.push((temp.clone(), at));
        std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(target), &temp).at(&temp)?;
        report.links_written += 1;
    }
    Ok(())
}

/// Renames every staged file into place, in path order, then makes the renames durable.
fn commit(
    root: &Path,
    staged: &[(PathBuf, usize)],
    entries: &[Entry],
    progress: &mut dyn Progress,
) -> Result<(), Error> {
    for (temp, at) in staged {
        let path = &entries[*at].path;
        let place = path.under(root);
        check_ancestors(root, path)?;
        // A directory where the target has a file or symlink: the type changes here.
        if fs::symlink_metadata(&place).is_ok_and(|meta| meta.is_dir()) {
            fs::remove_dir_all(&place).at(&place)?;
        }
        fs::rename(temp, &place).at(&place)?;
        if progress.step(Step::Committed { path }).is_break() {
            return Err(Error::Cancelled);
        }
    }
    if !staged.is_empty() {
        sync_filesystem(root)?;
    }
    Ok(())
}

/// The staging name of `path` in its own directory, after checking the way there and
/// making sure the directory accepts new files (the final modes are set at the end).
fn prepare_temp(root: &Path, path: &RelPath, writable_checked: &mut HashSet<PathBuf>) -> Result<PathBuf, Error> {
    check_ancestors(root, path)?;
    let parent = parent_dir(root, path);
    if writable_checked.insert(parent.clone()) {
        let meta = fs::symlink_metadata(&parent).at(&parent)?;
        if meta.mode() & 0o300 != 0o300 {
            fs::set_permissions(&parent, fs::Permissions::from_mode(meta.mode() | 0o700)).at(&parent)?;
        }
    }
    // One staging name per final name (a short hash of it keeps the name under NAME_MAX).
    let mut name = TEMP_PREFIX.to_vec();
    name.extend_from_slice(&Hash::of(path.name()).to_hex().as_bytes()[..16]);
    let temp = parent.join(std::ffi::OsStr::from_bytes(&name));
    if fs::symlink_metadata(&temp).is_ok() {
        remove_any(&temp)?;
    }
    Ok(temp)
}

/// Creates a directory whose parents exist; something else in its place is removed.
fn create_dir(root: &Path, path: &RelPath) -> Result<(), Error> {
    check_ancestors(root, path)?;
    let place = path.under(root);
    if let Ok(meta) = fs::symlink_metadata(&place) {
        if meta.is_dir() {
            return Ok(());
        }
        // A file or a symlink where the target has a directory: removing a symlink removes
        // the link, never what it points to.
        fs::remove_file(&place).at(&place)?;
    }
    // Made durable with the staged files, before any rename.
    fs::DirBuilder::new().mode(0o700).create(&place).at(&place)
}

/// Refuses to go on if any ancestor of `path` on disk is not a real directory: writing
/// there would follow a symlink out of the tree.
fn check_ancestors(root: &Path, path: &RelPath) -> Result<(), Error> {
    for ancestor in path.ancestors() {
        let on_disk = root.join(std::ffi::OsStr::from_bytes(ancestor));
        let meta = fs::symlink_metadata(&on_disk).at(&on_disk)?;
        if !meta.is_dir() {
            let what = if meta.file_type().is_symlink() { "a symlink" } else { "not a directory" };
            return Err(Error::Unsafe { path: show_path(&on_disk), what: format!("{what} on the way to {path}") });
        }
    }
    Ok(())
}

fn parent_dir(root: &Path, path: &RelPath) -> PathBuf {
    match path.parent() {
        Some(parent) => root.join(std::ffi::OsStr::from_bytes(parent)),
        None => root.to_path_buf(),
    }
}

/// Removes a file, symlink or directory tree (never following a symlink); absent is fine.
fn remove_any(path: &Path) -> Result<(), Error> {
    let result = match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(error) => Err(error),
    };
    match result {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(Error::io(path, error)),
        _ => Ok(()),
    }
}

fn open_no_follow(path: &Path) -> Result<File, Error> {
    File::options().read(true).custom_flags(libc::O_NOFOLLOW).open(path).at(path)
}

fn system_time(mtime: Mtime) -> SystemTime {
    let nanos = Duration::from_nanos(u64::from(mtime.nanoseconds));
    if mtime.seconds >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(mtime.seconds as u64) + nanos
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(mtime.seconds.unsigned_abs()) + nanos
    }
}
