//! How values are kept in `raft.redb`: every log entry and every metadata value (vote,
//! committed id, purge point, identity) is a sealed record (`crate::integrity`), and each
//! metadata value is kept twice, so one damaged copy is recovered from the other.
//!
//! ```text
//!   format 2 (this one)                      format 1 (before checksums)
//!   log:  index -> seal(encode(entry))       log:  index -> encode(entry)
//!   meta: key -> seal(encode(value))         meta: key -> encode(value)
//!         key.copy -> the same
//!         "format" -> seal(2)
//! ```
//!
//! Opening a format 1 database upgrades it in one transaction: every entry and value is
//! decoded and written back sealed, so nothing is lost and nothing needs two readers
//! afterwards. The log after the last snapshot is bounded (`snapshot_threshold` entries and
//! their bytes), so the upgrade is a bounded, one-time rewrite.

use std::io;
use std::path::Path;

use redb::ReadableTable;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::identity::META;
use crate::integrity::seal;
use crate::integrity::unseal;
use crate::integrity::CorruptData;
use crate::io_error;
use crate::log_store::LOG;
use crate::Entry;

/// Which format the database is in; absent means format 1.
const FORMAT_KEY: &str = "format";

/// The format written now.
pub const STORE_FORMAT: u32 = 2;

/// The metadata keys of format 1, converted by [`upgrade`]. Kept in one place so a key
/// added later is converted too.
const FORMAT_1_META_KEYS: &[&str] = &[
    crate::log_store::VOTE_KEY,
    crate::log_store::COMMITTED_KEY,
    crate::log_store::LAST_PURGED_KEY,
    crate::identity::IDENTITY_KEY,
];

/// The key of the second copy of a metadata value.
fn copy_key(key: &str) -> String {
    format!("{key}.copy")
}

fn encode<T: Serialize>(value: &T) -> io::Result<Vec<u8>> {
    haven_core::codec::encode(value).map_err(|e| io_error("encode", e))
}

/// Decodes a record whose checksum holds: a failure is not damage but data this version
/// cannot read, which stops the node with what to do about it.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8], file: &Path, what: &str) -> io::Result<T> {
    haven_core::codec::decode(bytes).map_err(|error| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "cannot read the Raft log ({}): {what} does not decode: {error}. {}",
                file.display(),
                crate::state_machine::UNREADABLE_DATA_ADVICE
            ),
        )
    })
}

/// A log entry as stored.
pub(crate) fn entry_record(entry: &Entry) -> io::Result<Vec<u8>> {
    Ok(seal(&encode(entry)?))
}

/// The entry stored at `index`, checked: its seal, its encoding, and that it is the entry
/// for that index.
pub(crate) fn entry_from_record(index: u64, record: &[u8], file: &Path) -> io::Result<Entry> {
    let location = format!("log entry {index}");
    let body = unseal(record).map_err(|problem| CorruptData::new(file, &location, problem).into_io())?;
    let entry: Entry = decode(body, file, &location)?;
    if entry.log_id.index != index {
        return Err(CorruptData::new(file, &location, format!("it holds entry {}", entry.log_id)).into_io());
    }
    Ok(entry)
}

/// A metadata value as stored (for [`put_meta_record`]).
pub(crate) fn meta_record<T: Serialize>(value: &T) -> io::Result<Vec<u8>> {
    Ok(seal(&encode(value)?))
}

/// Writes a [`meta_record`] under `key`, both copies.
pub(crate) fn put_meta_record(table: &mut redb::Table<&str, &[u8]>, key: &str, record: &[u8]) -> redb::Result<()> {
    table.insert(key, record)?;
    table.insert(copy_key(key).as_str(), record)?;
    Ok(())
}

/// Writes `value` under `key`, both copies.
pub(crate) fn put_meta<T: Serialize>(
    table: &mut redb::Table<&str, &[u8]>,
    key: &str,
    value: &T,
) -> Result<(), Box<dyn std::error::Error>> {
    put_meta_record(table, key, &meta_record(value)?)?;
    Ok(())
}

/// Removes `key`, both copies.
pub(crate) fn remove_meta(table: &mut redb::Table<&str, &[u8]>, key: &str) -> redb::Result<()> {
    table.remove(key)?;
    table.remove(copy_key(key).as_str())?;
    Ok(())
}

/// Reads `key`: the first copy whose seal holds. Both copies damaged is [`CorruptData`].
pub(crate) fn get_meta<T: DeserializeOwned>(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
    file: &Path,
) -> io::Result<Option<T>> {
    let location = format!("metadata `{key}`");
    let read = |name: &str| -> io::Result<Option<Vec<u8>>> {
        Ok(table.get(name).map_err(|e| io_error("read metadata", e))?.map(|value| value.value().to_vec()))
    };
    let (first, second) = (read(key)?, read(&copy_key(key))?);
    if first.is_none() && second.is_none() {
        return Ok(None);
    }
    let mut problems = Vec::new();
    for record in [first, second].into_iter().flatten() {
        match unseal(&record) {
            Ok(body) => return decode(body, file, &location).map(Some),
            Err(problem) => problems.push(problem),
        }
    }
    Err(CorruptData::new(file, location, format!("both copies are damaged ({})", problems.join("; "))).into_io())
}

/// Reads `key` in a read transaction of its own.
pub(crate) fn read_meta<T: DeserializeOwned>(db: &redb::Database, key: &str, file: &Path) -> io::Result<Option<T>> {
    use redb::ReadableDatabase;
    let txn = db.begin_read().map_err(|e| io_error("read metadata", e))?;
    let table = match txn.open_table(META) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(error) => return Err(io_error("read metadata", error)),
    };
    get_meta(&table, key, file)
}

/// Brings a database to [`STORE_FORMAT`] in one transaction (see the module docs); a new
/// database is simply marked. A format 1 value that does not decode stops the upgrade with
/// the key or index named, and changes nothing.
pub(crate) fn upgrade(db: &redb::Database, file: &Path) -> io::Result<()> {
    let context = |e: &dyn std::fmt::Display| io_error(&format!("upgrade {}", file.display()), e);
    let txn = db.begin_write().map_err(|e| context(&e))?;
    let upgraded = {
        let mut meta = txn.open_table(META).map_err(|e| context(&e))?;
        let format: Option<u32> = get_meta(&meta, FORMAT_KEY, file)?;
        match format {
            Some(STORE_FORMAT) => false,
            Some(other) => {
                return Err(io::Error::other(format!(
                    "{} is in storage format {other}; this version of Haven reads formats 1 and {STORE_FORMAT}. Run \
                     the newer version that wrote it",
                    file.display()
                )))
            }
            None => {
                let mut log = txn.open_table(LOG).map_err(|e| context(&e))?;
                let mut entries = Vec::new();
                for item in log.iter().map_err(|e| context(&e))? {
                    let (index, value) = item.map_err(|e| context(&e))?;
                    let entry: Entry = decode(value.value(), file, &format!("log entry {} (format 1)", index.value()))?;
                    entries.push((index.value(), entry));
                }
                let converted = entries.len();
                for (index, entry) in entries {
                    log.insert(index, entry_record(&entry)?.as_slice()).map_err(|e| context(&e))?;
                }
                for key in FORMAT_1_META_KEYS {
                    let old = meta.get(*key).map_err(|e| context(&e))?.map(|value| value.value().to_vec());
                    if let Some(bytes) = old {
                        // Sealed as they are: the bytes are the value's encoding.
                        put_meta_record(&mut meta, key, &seal(&bytes)).map_err(|e| context(&e))?;
                    }
                }
                put_meta(&mut meta, FORMAT_KEY, &STORE_FORMAT).map_err(|e| context(&e))?;
                tracing::info!(file = %file.display(), entries = converted, "storage upgraded to format 2 (checksums)");
                true
            }
        }
    };
    if upgraded {
        txn.commit().map_err(|e| context(&e))?;
    } else {
        txn.abort().map_err(|e| context(&e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use haven_core::kv::Command;
    use haven_core::kv::Request;
    use openraft::storage::RaftLogStorage;
    use openraft::EntryPayload;
    use openraft::RaftLogReader;
    use rand::Rng;
    use rand::SeedableRng;
    use redb::ReadableDatabase;

    use super::*;
    use crate::log_store::SyncMode;
    use crate::log_store::COMMITTED_KEY;
    use crate::log_store::LAST_PURGED_KEY;
    use crate::log_store::VOTE_KEY;
    use crate::LogId;
    use crate::LogStore;
    use crate::NodeIdentity;
    use crate::Vote;

    fn log_id(term: u64, index: u64) -> LogId {
        openraft::testing::log_id::<crate::TypeConfig>(term, 1, index)
    }

    fn entry(index: u64, value_bytes: usize) -> Entry {
        let command = Command::Put {
            key: format!("key/{index}"),
            value: (0..value_bytes).map(|i| (i + index as usize) as u8).collect(),
            prev_revision: None,
        };
        Entry { log_id: log_id(2, index), payload: EntryPayload::Normal(Request::new(None, command)) }
    }

    fn identity() -> NodeIdentity {
        NodeIdentity { node_id: 1, incarnation: "0123456789abcdef".into(), cluster_id: Some("c".into()) }
    }

    fn vote() -> Vote {
        Vote::new(2, 1)
    }

    fn db_file(dir: &Path) -> PathBuf {
        dir.join(crate::DATABASE_FILE)
    }

    /// The database opened directly, once the last log store's writer thread let go of it.
    fn raw(dir: &Path) -> redb::Database {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match redb::Database::create(db_file(dir)) {
                Err(redb::DatabaseError::DatabaseAlreadyOpen) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                }
                result => return result.unwrap(),
            }
        }
    }

    /// Writes a database of format 1, the way Haven wrote it before checksums: bare
    /// postcard values, one copy each, no format key.
    fn write_format_1(dir: &Path, entries: &[Entry]) {
        let db = redb::Database::create(db_file(dir)).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut log = txn.open_table(LOG).unwrap();
            for entry in entries {
                log.insert(entry.log_id.index, haven_core::codec::encode(entry).unwrap().as_slice()).unwrap();
            }
            let mut meta = txn.open_table(META).unwrap();
            let mut put = |key: &str, bytes: Vec<u8>| {
                meta.insert(key, bytes.as_slice()).unwrap();
            };
            put(VOTE_KEY, haven_core::codec::encode(&vote()).unwrap());
            put(COMMITTED_KEY, haven_core::codec::encode(&Some(log_id(2, 3))).unwrap());
            put(LAST_PURGED_KEY, haven_core::codec::encode(&log_id(1, 0)).unwrap());
            put(crate::identity::IDENTITY_KEY, haven_core::codec::encode(&identity()).unwrap());
        }
        txn.commit().unwrap();
    }

    /// Everything a node reads from raft.redb, through the log store as openraft reads it.
    async fn read_back(dir: &Path) -> io::Result<(Vec<Entry>, Option<Vote>, Option<LogId>, Option<NodeIdentity>)> {
        let db = crate::open_database(dir)?;
        let identity = NodeIdentity::load(&db)?;
        let mut log = LogStore::open(db, &db_file(dir), SyncMode::Fsync)?;
        let state = log.get_log_state().await?;
        let entries = log.try_get_log_entries(0..u64::MAX).await?;
        assert_eq!(state.last_log_id, entries.last().map(|entry| entry.log_id).or(state.last_purged_log_id));
        Ok((entries, log.read_vote().await?, log.read_committed().await?, identity))
    }

    #[tokio::test]
    async fn format_1_databases_are_upgraded_and_read_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let entries: Vec<Entry> = (1..=5).map(|index| entry(index, 100)).collect();
        write_format_1(dir.path(), &entries);
        let (read, vote_read, committed, identity_read) = read_back(dir.path()).await.unwrap();
        assert_eq!(read, entries);
        assert_eq!(vote_read, Some(vote()));
        assert_eq!(committed, Some(log_id(2, 3)));
        assert_eq!(identity_read, Some(identity()));
        // Stored sealed now, both copies of each value.
        let db = raw(dir.path());
        let txn = db.begin_read().unwrap();
        let log = txn.open_table(LOG).unwrap();
        for index in 1..=5u64 {
            assert!(unseal(log.get(index).unwrap().unwrap().value()).is_ok());
        }
        let meta = txn.open_table(META).unwrap();
        for key in FORMAT_1_META_KEYS {
            assert!(unseal(meta.get(copy_key(key).as_str()).unwrap().unwrap().value()).is_ok(), "{key}");
        }
    }

    /// Overwrites the record of `key` in `table` with `damage` applied (through redb, so
    /// redb's own page checksums still hold: only Haven's checksum can notice).
    fn damage_record<K: redb::Key + 'static>(
        dir: &Path,
        table: redb::TableDefinition<K, &[u8]>,
        key: K::SelfType<'_>,
        damage: impl FnOnce(&mut Vec<u8>),
    ) {
        let db = raw(dir);
        let txn = db.begin_write().unwrap();
        {
            let mut table = txn.open_table(table).unwrap();
            let mut record = table.get(&key).unwrap().unwrap().value().to_vec();
            damage(&mut record);
            table.insert(key, record.as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }

    #[tokio::test]
    async fn a_damaged_entry_is_refused_with_its_file_and_index() {
        let dir = tempfile::tempdir().unwrap();
        write_format_1(dir.path(), &(1..=5).map(|index| entry(index, 100)).collect::<Vec<_>>());
        read_back(dir.path()).await.unwrap();
        damage_record(dir.path(), LOG, 3, |record| {
            let last = record.len() - 1;
            record[last] ^= 0x10;
        });
        let error = read_back(dir.path()).await.unwrap_err();
        let corrupt = CorruptData::find(&error).unwrap_or_else(|| panic!("no CorruptData in {error}"));
        assert_eq!(corrupt.file, db_file(dir.path()));
        assert_eq!(corrupt.location, "log entry 3");
        // The last entry is read on its own for the log state: damage there is found too.
        damage_record(dir.path(), LOG, 5, |record| record[3] ^= 1);
        let db = crate::open_database(dir.path()).unwrap();
        let mut log = LogStore::open(db, &db_file(dir.path()), SyncMode::Fsync).unwrap();
        let error = log.get_log_state().await.unwrap_err();
        assert_eq!(CorruptData::find(&error).map(|c| c.location.as_str()), Some("log entry 5"));
    }

    #[tokio::test]
    async fn one_damaged_copy_of_a_metadata_value_is_survived_and_two_are_named() {
        let dir = tempfile::tempdir().unwrap();
        write_format_1(dir.path(), &[entry(1, 10)]);
        read_back(dir.path()).await.unwrap();
        damage_record(dir.path(), META, VOTE_KEY, |record| record[5] ^= 0xff);
        assert_eq!(read_back(dir.path()).await.unwrap().1, Some(vote()));
        damage_record(dir.path(), META, copy_key(VOTE_KEY).as_str(), |record| record[7] ^= 0xff);
        let error = read_back(dir.path()).await.unwrap_err();
        let corrupt = CorruptData::find(&error).expect("CorruptData");
        assert_eq!(corrupt.location, "metadata `vote`");
        assert!(corrupt.problem.contains("both copies"), "{}", corrupt.problem);
    }

    /// Flips: for each, one byte of a real `raft.redb` (written by the log store's records:
    /// entries with values of a few bytes to a few KiB, every metadata value) is changed at a
    /// random offset. Opening it and reading everything back must either succeed with exactly
    /// what was written, or fail with an error that names the file: never a panic, never a
    /// different value. `HAVEN_FLIPS` sets the count (the long run: `HAVEN_FLIPS=1000 cargo
    /// test -p haven-store --lib random_byte_flips`).
    #[tokio::test]
    async fn random_byte_flips_in_raft_redb_are_refused_or_harmless() {
        let flips: u64 = std::env::var("HAVEN_FLIPS").ok().and_then(|n| n.parse().ok()).unwrap_or(150);
        let pristine_dir = tempfile::tempdir().unwrap();
        let entries: Vec<Entry> = (1..=120).map(|index| entry(index, (index as usize * 37) % 3000)).collect();
        write_format_1(pristine_dir.path(), &entries);
        let expected = read_back(pristine_dir.path()).await.unwrap();
        // Closed cleanly, as a stopped node leaves it.
        drop(raw(pristine_dir.path()));
        let pristine = std::fs::read(db_file(pristine_dir.path())).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x4a7e);
        let mut outcomes: BTreeMap<&str, u64> = BTreeMap::new();
        for flip in 0..flips {
            let dir = tempfile::tempdir().unwrap();
            let mut bytes = pristine.clone();
            let offset = rng.random_range(0..bytes.len());
            bytes[offset] ^= rng.random_range(1..=255u8);
            std::fs::write(db_file(dir.path()), &bytes).unwrap();
            let outcome = match read_back(dir.path()).await {
                Ok(read) => {
                    assert!(read == expected, "flip {flip} at offset {offset}: read different data without an error");
                    "harmless"
                }
                Err(error) => {
                    let text = error.to_string();
                    assert!(text.contains(crate::DATABASE_FILE), "flip {flip} at offset {offset}: {text}");
                    if CorruptData::find(&error).is_some() {
                        "refused as corrupt"
                    } else {
                        "refused (other error)"
                    }
                }
            };
            *outcomes.entry(outcome).or_default() += 1;
        }
        eprintln!("{flips} flips of a {}-byte raft.redb: {outcomes:?}", pristine.len());
    }
}
