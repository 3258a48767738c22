//! Scanning the primary's directory into a manifest, storing its chunks as it goes.
//!
//! ```text
//!   tree ──walk (lstat, sorted)──▶ for each file: unchanged since the last scan? reuse
//!                                                  else read, chunk, hash, store chunks
//!        ──▶ Manifest (+ problems) ──▶ store.sync() ──▶ ready to publish
//! ```
//!
//! A file that changes while it is read is read again, up to [`READ_ATTEMPTS_MAX`] times;
//! still changing, it is left for the next generation. Such a file, and anything that
//! cannot be read (permission denied), keeps the entry it had in the previous generation
//! (or is absent if it had none) and is reported: a standby never deletes a file just
//! because the primary could not read it this time.

use std::collections::HashMap;
use std::collections::HashSet;
use std::fs;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::path::PathBuf;
use std::time::SystemTime;

use crate::chunk::Chunker;
use crate::error::Error;
use crate::hash::Hash;
use crate::limits::FILE_BYTES_MAX;
use crate::limits::RACY_WINDOW_NS;
use crate::limits::READ_ATTEMPTS_MAX;
use crate::limits::SYMLINK_TARGET_BYTES_MAX;
use crate::manifest::ChunkRef;
use crate::manifest::Entry;
use crate::manifest::FileMeta;
use crate::manifest::Kind;
use crate::manifest::Manifest;
use crate::manifest::Mtime;
use crate::path::show_path;
use crate::path::RelPath;
use crate::store::ChunkStore;
use crate::walk::check_root;
use crate::walk::mode_of;
use crate::walk::walk;

/// Scans one replicated directory, remembering what it saw so the next scan reads only
/// files whose size or times changed.
pub struct Scanner {
    root: PathBuf,
    previous: Manifest,
    cache: HashMap<RelPath, (Stat, FileMeta)>,
}

/// The result of one scan.
#[derive(Debug)]
pub struct ScanReport {
    pub manifest: Manifest,
    /// One line per path that was not (or not newly) scanned, and why.
    pub problems: Vec<String>,
    /// Files read and bytes read (files unchanged since the last scan are not read).
    pub files_read: usize,
    pub bytes_read: u64,
}

/// What identifies a file's content on disk without reading it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Stat {
    device: u64,
    inode: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stat {
    fn of(meta: &fs::Metadata) -> Stat {
        Stat {
            device: meta.dev(),
            inode: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    fn ctime_ns(&self) -> i128 {
        i128::from(self.ctime.0) * 1_000_000_000 + i128::from(self.ctime.1)
    }
}

/// What a scan could not do, one line each.
#[derive(Default)]
struct Problems {
    /// Paths whose previous entries stand in for them, and why.
    kept: Vec<RelPath>,
    kept_why: Vec<String>,
    /// Paths not replicated at all (refused names, sockets, ...).
    others: Vec<String>,
}

impl Problems {
    fn keep_previous(&mut self, path: RelPath, why: String) {
        self.kept.push(path);
        self.kept_why.push(format!("{why} (its previous generation, if any, is kept)"));
    }
}

/// A file read to its end while it did not change.
pub(crate) struct ReadFile {
    pub size: u64,
    pub hash: Hash,
    pub chunks: Vec<ChunkRef>,
    meta: fs::Metadata,
}

impl Scanner {
    /// A scanner for `root`. `previous` is the last generation of this directory this node
    /// has (published or applied), or the empty manifest; its entries stand in for paths
    /// that cannot be read.
    pub fn new(root: &Path, previous: Manifest) -> Scanner {
        Scanner { root: root.to_path_buf(), previous, cache: HashMap::new() }
    }

    /// Scans the tree, stores every chunk in `store`, syncs the store, and returns the
    /// manifest of what is there now.
    pub fn scan(&mut self, store: &ChunkStore) -> Result<ScanReport, Error> {
        check_root(&self.root)?;
        let started_ns = now_ns();
        let listing = walk(&self.root)?;
        let mut entries = Vec::with_capacity(listing.found.len());
        let mut problems = Problems::default();
        for (path, why) in listing.skipped {
            match path {
                Some(path) => problems.keep_previous(path, why),
                None => problems.others.push(why),
            }
        }
        problems.others.extend(
            listing
                .temps
                .iter()
                .map(|temp| format!("{}: name reserved for files being applied; not replicated", show_path(temp))),
        );
        let mut cache = HashMap::new();
        let (mut files_read, mut bytes_read) = (0, 0);
        for found in listing.found {
            let on_disk = found.path.under(&self.root);
            let file_type = found.meta.file_type();
            let kind = if file_type.is_dir() {
                Kind::Dir { mode: mode_of(&found.meta) }
            } else if file_type.is_symlink() {
                let target = match fs::read_link(&on_disk) {
                    Ok(target) => target.into_os_string().into_vec(),
                    Err(error) => {
                        problems.keep_previous(found.path, format!("{}: {error}", show_path(&on_disk)));
                        continue;
                    }
                };
                if target.len() > SYMLINK_TARGET_BYTES_MAX {
                    problems.others.push(format!("{}: symlink target too long; not replicated", show_path(&on_disk)));
                    continue;
                }
                Kind::Symlink { target }
            } else if file_type.is_file() {
                if found.meta.size() > FILE_BYTES_MAX {
                    let why = format!("{}: larger than {FILE_BYTES_MAX} bytes", show_path(&on_disk));
                    problems.keep_previous(found.path, why);
                    continue;
                }
                let stat = Stat::of(&found.meta);
                let reusable = self.cache.get(&found.path).filter(|(cached, _)| {
                    *cached == stat && cached.ctime_ns() < i128::from(started_ns) - i128::from(RACY_WINDOW_NS)
                });
                let file = match reusable {
                    Some((_, file)) => FileMeta { mode: mode_of(&found.meta), ..file.clone() },
                    None => match read_stable(&on_disk, Some(store)) {
                        Ok(Some(read)) => {
                            files_read += 1;
                            bytes_read += read.size;
                            FileMeta {
                                mode: mode_of(&read.meta),
                                size: read.size,
                                mtime: Mtime { seconds: read.meta.mtime(), nanoseconds: read.meta.mtime_nsec() as u32 },
                                hash: read.hash,
                                chunks: read.chunks,
                            }
                        }
                        Ok(None) => {
                            let why = format!(
                                "{}: changed while being read ({READ_ATTEMPTS_MAX} times); left for the next generation",
                                show_path(&on_disk)
                            );
                            problems.keep_previous(found.path, why);
                            continue;
                        }
                        Err(error) => {
                            problems.keep_previous(found.path, format!("{}: {error}", show_path(&on_disk)));
                            continue;
                        }
                    },
                };
                cache.insert(found.path.clone(), (stat, file.clone()));
                Kind::File(file)
            } else {
                problems.others.push(format!(
                    "{}: not a file, directory or symlink (a socket, pipe or device); not replicated",
                    show_path(&on_disk)
                ));
                continue;
            };
            entries.push(Entry { path: found.path, kind });
        }
        let present: HashSet<&[u8]> = entries.iter().map(|entry| entry.path.as_bytes()).collect();
        let carried: Vec<Entry> =
            problems.kept.iter().flat_map(|path| self.previous_at_or_under(path, &present)).collect();
        entries.extend(carried);
        let manifest = Manifest::new(entries)?;
        store.sync()?;
        self.previous = manifest.clone();
        self.cache = cache;
        let mut lines = problems.others;
        lines.extend(problems.kept_why);
        Ok(ScanReport { manifest, problems: lines, files_read, bytes_read })
    }

    /// The previous generation's entries at `path` and below it that `entries` lacks.
    fn previous_at_or_under(&self, path: &RelPath, present: &HashSet<&[u8]>) -> Vec<Entry> {
        let prefix = path.as_bytes();
        let under = |candidate: &[u8]| {
            candidate == prefix || (candidate.starts_with(prefix) && candidate.get(prefix.len()) == Some(&b'/'))
        };
        self.previous
            .entries()
            .iter()
            .filter(|entry| under(entry.path.as_bytes()) && !present.contains(entry.path.as_bytes()))
            .cloned()
            .collect()
    }
}

/// Reads a regular file to its end, chunking and hashing it (and storing the chunks if a
/// store is given), until one read sees no change from start to end. `None` if it kept
/// changing.
pub(crate) fn read_stable(path: &Path, store: Option<&ChunkStore>) -> io::Result<Option<ReadFile>> {
    for _ in 0..READ_ATTEMPTS_MAX {
        // O_NOFOLLOW: the path was a regular file when listed; if it has since become a
        // symlink, it is not followed. O_NONBLOCK: if it has become a FIFO, open does not hang.
        let file = File::options().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path)?;
        let before = file.metadata()?;
        if !before.is_file() {
            return Ok(None);
        }
        let mut chunker = Chunker::new(&file);
        let mut whole = blake3::Hasher::new();
        let mut chunks = Vec::new();
        let mut size: u64 = 0;
        while let Some(chunk) = chunker.next_chunk()? {
            let hash = Hash::of(chunk);
            if let Some(store) = store {
                store.insert_hashed(&hash, chunk).map_err(io::Error::other)?;
            }
            whole.update(chunk);
            size += chunk.len() as u64;
            chunks.push(ChunkRef { hash, len: chunk.len() as u32 });
            if size > FILE_BYTES_MAX {
                break;
            }
        }
        let after = file.metadata()?;
        // Replaced by a rename while read: the path names another file now.
        let still_there = fs::symlink_metadata(path).is_ok_and(|now| now.ino() == before.ino());
        if Stat::of(&before) == Stat::of(&after) && size == before.size() && still_there {
            return Ok(Some(ReadFile { size, hash: whole.finalize().into(), chunks, meta: before }));
        }
    }
    Ok(None)
}

fn now_ns() -> i64 {
    match SystemTime::now().duration_since(SystemTime::UNIX_EPOCH) {
        Ok(since) => i64::try_from(since.as_nanos()).unwrap_or(i64::MAX),
        Err(_) => 0,
    }
}
