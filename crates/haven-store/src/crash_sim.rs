//! Crash simulation for fault tests: a redb storage backend that loses unsynced writes.
//!
//! ```text
//!   redb ── write/set_len ──▶ overlay (process memory)  ── read sees overlay over the file
//!        ── sync_data ──────▶ overlay written to the file, fsync, overlay cleared
//!   kill -9 ─────────────────▶ overlay gone: the file holds exactly what was last synced
//! ```
//!
//! `kill -9` of a process that writes through the page cache loses nothing: the kernel still
//! holds the written pages and writes them back later. So a test that kills a node cannot
//! tell a store that fsyncs before acknowledging from one that does not. A power cut can,
//! and this backend turns `kill -9` into a power cut for the redb file: every byte written
//! since the last `sync_data` lives only in this process, and dies with it.
//!
//! Used only through `haven serve --unsafe-test-mode` (refused unless
//! `HAVEN_UNSAFE_TEST_MODE=1`); real nodes always use redb's file backend.
//!
//! What it does not simulate: torn or reordered writes inside one sync (the overlay is
//! written in full, then fsynced), and files other than `raft.redb` (the state machine's
//! `snapshot.bin` is written through the page cache and fsynced before its rename, so a
//! kill cannot test a missing fsync there).

use std::collections::BTreeMap;
use std::fs::File;
use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::RwLock;

/// The overlay keeps whole pages of this size: redb's default page size, so a page write
/// touches one overlay page.
const OVERLAY_PAGE_BYTES: u64 = 4096;

/// Most unsynced bytes the overlay holds before writes fail. A node that acknowledges
/// without syncing (the mutant this backend exists for) keeps its whole log here; 1 GiB is
/// far more than any test run writes, and failing loudly beats exhausting the machine.
pub const OVERLAY_BYTES_MAX: u64 = 1 << 30;

/// Where a node's redb database keeps its bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DatabaseBackend {
    /// redb's file backend: the only choice for real nodes.
    #[default]
    File,
    /// [`CrashSimBackend`]: unsynced writes stay in process memory, so `kill -9` loses them.
    CrashSim,
}

/// Opens (or creates) the redb database at `path` on the crash-simulation backend.
pub fn open_database(path: &Path) -> io::Result<redb::Database> {
    let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
    let backend = CrashSimBackend::new(file)?;
    redb::Database::builder()
        .create_with_backend(backend)
        .map_err(|error| io::Error::other(format!("cannot open {} (crash simulation): {error}", path.display())))
}

/// A redb [`redb::StorageBackend`] over a file that keeps every write since the last
/// `sync_data` in memory. Reads see the overlay over the file, so the process observes its
/// own writes; the file itself only ever holds synced states.
#[derive(Debug)]
pub struct CrashSimBackend {
    file: File,
    state: RwLock<Overlay>,
}

#[derive(Debug)]
struct Overlay {
    /// The storage length redb sees.
    len: u64,
    /// File bytes at or beyond this offset are stale: the storage was shrunk below it since
    /// the last sync, so they read as zeros. Never above `len`.
    file_valid_len: u64,
    /// Written pages by page index. Bytes of a page at or beyond `len` are zero.
    pages: BTreeMap<u64, Box<[u8]>>,
}

impl CrashSimBackend {
    pub fn new(file: File) -> io::Result<CrashSimBackend> {
        let len = file.metadata()?.len();
        Ok(CrashSimBackend { file, state: RwLock::new(Overlay { len, file_valid_len: len, pages: BTreeMap::new() }) })
    }

    /// Unsynced bytes held in memory (whole pages).
    pub fn unsynced_bytes(&self) -> u64 {
        self.read_state().pages.len() as u64 * OVERLAY_PAGE_BYTES
    }

    fn read_state(&self) -> std::sync::RwLockReadGuard<'_, Overlay> {
        // Every update below leaves the overlay consistent between statements that can
        // panic, so a poisoned lock still guards valid data.
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_state(&self) -> std::sync::RwLockWriteGuard<'_, Overlay> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Fills `out` with the file's bytes at `offset`, zeros at and beyond `file_valid_len`.
    fn read_file(&self, file_valid_len: u64, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let from_file = file_valid_len.saturating_sub(offset).min(out.len() as u64) as usize;
        if from_file > 0 {
            self.file.read_exact_at(&mut out[..from_file], offset)?;
        }
        out[from_file..].fill(0);
        Ok(())
    }
}

fn out_of_range(offset: u64, len: usize, storage_len: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("read of {len} bytes at {offset} beyond the end of the storage ({storage_len} bytes)"),
    )
}

impl redb::StorageBackend for CrashSimBackend {
    fn len(&self) -> io::Result<u64> {
        Ok(self.read_state().len)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let state = self.read_state();
        let end = offset.checked_add(out.len() as u64).ok_or_else(|| out_of_range(offset, out.len(), state.len))?;
        if end > state.len {
            return Err(out_of_range(offset, out.len(), state.len));
        }
        let mut done = 0usize;
        while done < out.len() {
            let position = offset + done as u64;
            let page = position / OVERLAY_PAGE_BYTES;
            let within = (position % OVERLAY_PAGE_BYTES) as usize;
            let take = (OVERLAY_PAGE_BYTES as usize - within).min(out.len() - done);
            let target = &mut out[done..done + take];
            match state.pages.get(&page) {
                Some(bytes) => target.copy_from_slice(&bytes[within..within + take]),
                None => self.read_file(state.file_valid_len, position, target)?,
            }
            done += take;
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut state = self.write_state();
        if len < state.len {
            // Drop whole pages past the end and zero the tail of the last one, so that a
            // later extension reads zeros as the trait requires.
            let first_gone = len.div_ceil(OVERLAY_PAGE_BYTES);
            state.pages.split_off(&first_gone);
            // A whole last page (tail 0) was dropped above; a partial one is zeroed past `len`.
            let tail = (len % OVERLAY_PAGE_BYTES) as usize;
            if let Some(bytes) = state.pages.get_mut(&(len / OVERLAY_PAGE_BYTES)) {
                bytes[tail..].fill(0);
            }
            state.file_valid_len = state.file_valid_len.min(len);
        }
        state.len = len;
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut state = self.write_state();
        let file_len = self.file.metadata()?.len();
        if file_len > state.file_valid_len {
            // Cut stale bytes first so the extension below reads as zeros on disk too.
            self.file.set_len(state.file_valid_len)?;
        }
        self.file.set_len(state.len)?;
        for (page, bytes) in &state.pages {
            let start = page * OVERLAY_PAGE_BYTES;
            let keep = state.len.saturating_sub(start).min(OVERLAY_PAGE_BYTES) as usize;
            self.file.write_all_at(&bytes[..keep], start)?;
        }
        self.file.sync_data()?;
        state.pages.clear();
        state.file_valid_len = state.len;
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut state = self.write_state();
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "write beyond the largest offset"))?;
        let new_pages = (offset / OVERLAY_PAGE_BYTES..end.div_ceil(OVERLAY_PAGE_BYTES))
            .filter(|page| !state.pages.contains_key(page))
            .count() as u64;
        if (state.pages.len() as u64 + new_pages) * OVERLAY_PAGE_BYTES > OVERLAY_BYTES_MAX {
            return Err(io::Error::other(format!(
                "crash simulation: more than {OVERLAY_BYTES_MAX} unsynced bytes; the store never syncs"
            )));
        }
        let mut done = 0usize;
        while done < data.len() {
            let position = offset + done as u64;
            let page = position / OVERLAY_PAGE_BYTES;
            let within = (position % OVERLAY_PAGE_BYTES) as usize;
            let take = (OVERLAY_PAGE_BYTES as usize - within).min(data.len() - done);
            if !state.pages.contains_key(&page) {
                let mut bytes = vec![0u8; OVERLAY_PAGE_BYTES as usize].into_boxed_slice();
                // Only bytes below the current length come from the file; the rest are zero.
                let page_start = page * OVERLAY_PAGE_BYTES;
                let readable = state.len.saturating_sub(page_start).min(OVERLAY_PAGE_BYTES) as usize;
                self.read_file(state.file_valid_len, page_start, &mut bytes[..readable])?;
                state.pages.insert(page, bytes);
            }
            if let Some(bytes) = state.pages.get_mut(&page) {
                bytes[within..within + take].copy_from_slice(&data[done..done + take]);
            }
            done += take;
        }
        state.len = state.len.max(end);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use redb::ReadableDatabase;
    use redb::StorageBackend;
    use redb::TableDefinition;

    use super::*;

    fn backend(path: &Path) -> CrashSimBackend {
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path).unwrap();
        CrashSimBackend::new(file).unwrap()
    }

    fn read_all(backend: &CrashSimBackend) -> Vec<u8> {
        let mut out = vec![0u8; backend.len().unwrap() as usize];
        backend.read(0, &mut out).unwrap();
        out
    }

    /// A write that was never synced is gone after a "power cut" (dropping the backend
    /// without a sync), while the process itself saw it.
    #[test]
    fn unsynced_writes_are_lost_and_synced_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let first = backend(&path);
        first.write(0, b"durable").unwrap();
        first.sync_data().unwrap();
        first.write(0, b"volatile and longer").unwrap();
        assert_eq!(read_all(&first), b"volatile and longer");
        assert!(first.unsynced_bytes() > 0);
        drop(first);

        let second = backend(&path);
        assert_eq!(read_all(&second), b"durable", "the unsynced write must not survive");
        second.write(0, b"volatile and longer").unwrap();
        second.sync_data().unwrap();
        assert_eq!(second.unsynced_bytes(), 0);
        drop(second);
        assert_eq!(read_all(&backend(&path)), b"volatile and longer");
        assert_eq!(std::fs::read(&path).unwrap(), b"volatile and longer");
    }

    /// Writes spanning pages, shrinking and growing: reads always see the bytes a plain file
    /// would hold, with zeros after an extension.
    #[test]
    fn behaves_like_a_file_across_pages_and_resizes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let sim = backend(&path);
        let page = OVERLAY_PAGE_BYTES as usize;
        let data: Vec<u8> = (0..3 * page + 100).map(|i| (i % 251) as u8 + 1).collect();
        sim.write(10, &data).unwrap();
        sim.sync_data().unwrap();
        let mut expected = vec![0u8; 10];
        expected.extend_from_slice(&data);
        assert_eq!(read_all(&sim), expected);

        // Shrink into the middle of a page (unsynced), then grow: the cut bytes read as zero,
        // even though the file still holds them.
        sim.set_len(page as u64 + 7).unwrap();
        sim.set_len(2 * page as u64).unwrap();
        expected.truncate(page + 7);
        expected.resize(2 * page, 0);
        assert_eq!(read_all(&sim), expected);
        let mut beyond = [0u8; 1];
        assert!(sim.read(2 * page as u64, &mut beyond).is_err(), "reads past the end fail");

        sim.write(page as u64 + 20, b"xyz").unwrap();
        expected[page + 20..page + 23].copy_from_slice(b"xyz");
        assert_eq!(read_all(&sim), expected);
        sim.sync_data().unwrap();
        drop(sim);
        assert_eq!(std::fs::read(&path).unwrap(), expected);
    }

    /// Random writes, resizes, syncs and crashes against a model of what a disk that loses
    /// everything unsynced would hold: the backend must read exactly the model, always.
    #[test]
    fn matches_a_model_disk_under_random_operations() {
        use rand::Rng;
        use rand::SeedableRng;
        let page = OVERLAY_PAGE_BYTES as usize;
        for seed in 0..40u64 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("db");
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut sim = backend(&path);
            let mut current: Vec<u8> = Vec::new();
            let mut durable: Vec<u8> = Vec::new();
            for step in 0..300 {
                match rng.random_range(0..100) {
                    0..50 => {
                        let offset = rng.random_range(0..4 * page);
                        let len = rng.random_range(1..2 * page);
                        let byte = rng.random::<u8>() | 1;
                        let data = vec![byte; len];
                        sim.write(offset as u64, &data).unwrap();
                        if current.len() < offset + len {
                            current.resize(offset + len, 0);
                        }
                        current[offset..offset + len].copy_from_slice(&data);
                    }
                    50..65 => {
                        let len = rng.random_range(0..5 * page);
                        sim.set_len(len as u64).unwrap();
                        current.resize(len, 0);
                    }
                    65..85 => {
                        sim.sync_data().unwrap();
                        durable = current.clone();
                    }
                    _ => {
                        // Power cut: the process and its overlay are gone.
                        drop(sim);
                        sim = backend(&path);
                        current = durable.clone();
                    }
                }
                assert_eq!(sim.len().unwrap(), current.len() as u64, "seed {seed} step {step}: length");
                assert_eq!(read_all(&sim), current, "seed {seed} step {step}: contents");
            }
        }
    }

    const TABLE: TableDefinition<u64, u64> = TableDefinition::new("t");

    fn commit(db: &redb::Database, key: u64, durability: redb::Durability) {
        let mut txn = db.begin_write().unwrap();
        txn.set_durability(durability).unwrap();
        txn.open_table(TABLE).unwrap().insert(key, key).unwrap();
        txn.commit().unwrap();
    }

    fn keys(db: &redb::Database) -> Vec<u64> {
        let txn = db.begin_read().unwrap();
        let table = txn.open_table(TABLE).unwrap();
        redb::ReadableTable::iter(&table).unwrap().map(|item| item.unwrap().0.value()).collect()
    }

    /// Through redb: a commit without fsync (`Durability::None`) is visible to the process
    /// but lost when the process dies without closing the database, like after a power cut;
    /// a durable commit survives.
    #[test]
    fn redb_loses_non_durable_commits_on_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft.redb");
        let db = open_database(&path).unwrap();
        commit(&db, 1, redb::Durability::Immediate);
        commit(&db, 2, redb::Durability::None);
        assert_eq!(keys(&db), vec![1, 2]);
        // A crash: no drop, no close, no final sync.
        std::mem::forget(db);

        let db = open_database(&path).unwrap();
        assert_eq!(keys(&db), vec![1], "the unsynced commit must be lost");
        commit(&db, 3, redb::Durability::Immediate);
        std::mem::forget(db);
        assert_eq!(keys(&open_database(&path).unwrap()), vec![1, 3]);
    }
}
