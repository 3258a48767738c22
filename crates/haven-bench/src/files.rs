//! `haven-bench files`: replicating a directory with haven-files against rsync, on this
//! machine, in one run.
//!
//! ```text
//!   seeded tree (2,000 files, 500 MB, mixed sizes)
//!     ├─ Haven: scan (chunks into the primary's store) ─▶ manifest ─▶ apply on a replica,
//!     │         chunks fetched in process (StoreSource) ─▶ verify
//!     ├─ rsync -a                     (into its own copy)
//!     └─ rsync -a --no-whole-file     (incremental case, into a third copy)
//!   change 1% of the bytes of 20 files (seeded), then the same three again
//! ```
//!
//! This is the library part: two local directories, no cluster. The whole-cluster
//! benchmark (two standbys over the peer transport, into docs/benchmarks.md) comes with
//! the server integration. rsync must be installed (`apt-get install rsync`).

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use std::time::Instant;

use anyhow::bail;
use anyhow::Context;
use haven_files::apply::apply;
use haven_files::apply::Replica;
use haven_files::chunk::chunk_lengths;
use haven_files::fetch::StoreSource;
use haven_files::hash::Hash;
use haven_files::manifest::Manifest;
use haven_files::scan::Scanner;
use haven_files::store::ChunkStore;
use rand::Rng as _;
use rand::RngCore as _;
use rand::SeedableRng as _;

/// Fixed blocks compared with content-defined chunks: the same size as the average chunk.
const FIXED_BLOCK_BYTES: usize = haven_files::limits::CHUNK_BYTES_AVERAGE as usize;

/// Subdirectories the files are spread over (a package repository has many).
const DIRECTORIES: usize = 50;

/// Smallest and largest drawn size before scaling to the total: sizes are log-uniform,
/// so most files are small and a few large, as in a package tree.
const SIZE_DRAW_MIN: f64 = 1024.0;
const SIZE_DRAW_MAX: f64 = 32.0 * 1024.0 * 1024.0;

#[derive(clap::Args, Debug)]
pub struct FilesArgs {
    /// Number of files.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=200_000))]
    files: u64,
    /// Total size of the files, in MB (10^6 bytes).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=20_000))]
    total_mb: u64,
    /// Files of which 1% of the bytes are changed for the incremental case.
    #[arg(long, default_value_t = 20)]
    changed_files: usize,
    /// Where to create the trees (default: the system's temporary directory); needs about
    /// six times the total size.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Seed of sizes, contents and changes.
    #[arg(long, default_value_t = 0x4856_4E46)]
    seed: u64,
}

/// Time and bytes of one replication.
#[derive(Debug, Default, Clone, Copy)]
struct Run {
    time: Duration,
    bytes: u64,
    /// Of `bytes`, the manifest (initial) or the manifest delta (incremental), for Haven.
    manifest_bytes: u64,
    /// Flushing what the run left dirty (rsync does not fsync; Haven's time includes it).
    sync_after: Duration,
}

pub fn main(args: FilesArgs) -> anyhow::Result<()> {
    let rsync_version = rsync_version()?;
    let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let work = tempfile::Builder::new().prefix("haven-bench-files.").tempdir_in(&base)?;
    let at = |name: &str| work.path().join(name);
    let source = at("source");
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    eprintln!("== creating {} files, {} MB in {}", args.files, args.total_mb, source.display());
    let paths = create_tree(&source, args.files as usize, args.total_mb * 1_000_000, &mut rng)?;
    sync_all()?;

    eprintln!("== initial replication");
    let primary_store = ChunkStore::open(&at("haven-primary-store"))?;
    let replica_store = ChunkStore::open(&at("haven-replica-store"))?;
    let replica_root = at("haven-replica");
    fs::create_dir(&replica_root)?;
    let mut scanner = Scanner::new(&source, Manifest::empty());
    let (haven_initial, scan_initial, replica_manifest) =
        haven_run(&mut scanner, None, &primary_store, &replica_root, &replica_store).context("Haven, initial")?;
    let rsync_initial = rsync(&source, &at("rsync"), &[])?;
    rsync(&source, &at("rsync-delta"), &[])?;
    sync_all()?;

    eprintln!("== changing 1% of the bytes of {} files", args.changed_files);
    let chunking = change_files(&paths, args.changed_files, &mut rng)?;
    sync_all()?;

    eprintln!("== incremental replication");
    let (haven_incremental, scan_incremental, _) =
        haven_run(&mut scanner, Some(&replica_manifest), &primary_store, &replica_root, &replica_store)
            .context("Haven, incremental")?;
    let rsync_incremental = rsync(&source, &at("rsync"), &[])?;
    let rsync_delta = rsync(&source, &at("rsync-delta"), &["--no-whole-file"])?;

    // Every copy must equal the source's generation, or the figures mean nothing.
    let idle = Instant::now();
    let final_scan = scanner.scan(&primary_store)?;
    let idle_rescan = idle.elapsed();
    for copy in ["haven-replica", "rsync", "rsync-delta"] {
        let differences = haven_files::verify::verify(&at(copy), &final_scan.manifest)?;
        if !differences.is_empty() {
            bail!("{copy} differs from the source: {} (and {} more)", differences[0], differences.len() - 1);
        }
    }

    let table = Table {
        args: &args,
        rsync_version,
        haven_initial,
        scan_initial,
        rsync_initial,
        haven_incremental,
        scan_incremental,
        rsync_incremental,
        rsync_delta,
        chunking,
        idle_rescan,
        idle_files_read: final_scan.files_read,
    };
    println!("{}", table.render());
    Ok(())
}

/// Scan on the primary, then apply on the replica with chunks fetched in process; returns
/// the whole run (bytes: chunks fetched plus the manifest, or its delta from the replica's
/// `previous` generation), the scan's share of the time, and the replica's new generation.
fn haven_run(
    scanner: &mut Scanner,
    previous: Option<&Manifest>,
    primary_store: &ChunkStore,
    replica_root: &Path,
    replica_store: &ChunkStore,
) -> anyhow::Result<(Run, Duration, Manifest)> {
    let start = Instant::now();
    let report = scanner.scan(primary_store)?;
    let scanned = start.elapsed();
    if !report.problems.is_empty() {
        bail!("scan problems: {:?}", report.problems);
    }
    // What would travel: the encoded manifest (or its delta), decoded and checked on the
    // replica.
    let (manifest, manifest_bytes) = match previous {
        None => {
            let encoded = report.manifest.encode();
            (Manifest::decode(&encoded)?, encoded.len() as u64)
        }
        Some(previous) => {
            let encoded = previous.delta_to(&report.manifest).encode();
            let delta = haven_files::manifest::ManifestDelta::decode(&encoded)?;
            (previous.apply_delta(&delta)?, encoded.len() as u64)
        }
    };
    let source = StoreSource::new(vec![(1, primary_store)]);
    let replica = Replica { root: replica_root, store: replica_store };
    let applied = apply(replica, &manifest, &source, &[1], &mut ())?;
    let time = start.elapsed();
    let sync = Instant::now();
    sync_all()?;
    let run = Run { time, bytes: applied.fetched.bytes + manifest_bytes, manifest_bytes, sync_after: sync.elapsed() };
    Ok((run, scanned, manifest))
}

/// `rsync -a --stats [extra] source/ target/`: time, bytes sent, then a timed `sync`.
fn rsync(source: &Path, target: &Path, extra: &[&str]) -> anyhow::Result<Run> {
    let start = Instant::now();
    let output = Command::new("rsync")
        .args(["-a", "--stats"])
        .args(extra)
        .arg(format!("{}/", source.display()))
        .arg(format!("{}/", target.display()))
        .output()
        .context("running rsync")?;
    let time = start.elapsed();
    if !output.status.success() {
        bail!("rsync failed: {}", String::from_utf8_lossy(&output.stderr).trim());
    }
    let stats = String::from_utf8_lossy(&output.stdout);
    let bytes = stats
        .lines()
        .find_map(|line| line.strip_prefix("Total bytes sent: "))
        .map(|number| number.replace(',', ""))
        .and_then(|number| number.trim().parse().ok())
        .context("rsync --stats printed no \"Total bytes sent\"")?;
    let sync = Instant::now();
    sync_all()?;
    Ok(Run { time, bytes, manifest_bytes: 0, sync_after: sync.elapsed() })
}

fn rsync_version() -> anyhow::Result<String> {
    let output = Command::new("rsync").arg("--version").output().map_err(|error| {
        anyhow::anyhow!("rsync is needed for the comparison ({error}); install it: apt-get install rsync")
    })?;
    Ok(String::from_utf8_lossy(&output.stdout).lines().next().unwrap_or("rsync").to_string())
}

fn sync_all() -> anyhow::Result<()> {
    let status = Command::new("sync").status()?;
    anyhow::ensure!(status.success(), "sync failed");
    Ok(())
}

/// Writes `count` files of log-uniform sizes scaled to `total` bytes; returns their paths.
fn create_tree(root: &Path, count: usize, total: u64, rng: &mut rand::rngs::StdRng) -> anyhow::Result<Vec<PathBuf>> {
    let (low, high) = (SIZE_DRAW_MIN.ln(), SIZE_DRAW_MAX.ln());
    let draws: Vec<f64> = (0..count).map(|_| rng.random_range(low..high).exp()).collect();
    let scale = total as f64 / draws.iter().sum::<f64>();
    let mut sizes: Vec<u64> = draws.iter().map(|draw| (draw * scale) as u64).collect();
    // Rounding leaves a few bytes over; the first file takes them, so the total is exact.
    sizes[0] += total - sizes.iter().sum::<u64>();
    let mut paths = Vec::with_capacity(count);
    let mut buffer = Vec::new();
    for (index, size) in sizes.into_iter().enumerate() {
        let path = root.join(format!("pkg{:02}/file{index:05}.bin", index % DIRECTORIES));
        fs::create_dir_all(path.parent().context("file has a parent")?)?;
        buffer.resize(size as usize, 0);
        rng.fill_bytes(&mut buffer);
        fs::write(&path, &buffer)?;
        paths.push(path);
    }
    Ok(paths)
}

/// Bytes a changed file costs under each chunking: (content-defined, fixed blocks).
#[derive(Debug, Default, Clone, Copy)]
struct Chunking {
    files: usize,
    changed_bytes: u64,
    overwrite: (u64, u64),
    insert: (u64, u64),
}

/// Overwrites 1% of each of `count` seeded files in place (contiguous, at a random
/// offset), and measures what a 1% overwrite and a 1% insertion would cost to send under
/// content-defined chunks and under fixed blocks.
fn change_files(paths: &[PathBuf], count: usize, rng: &mut rand::rngs::StdRng) -> anyhow::Result<Chunking> {
    let mut chunking = Chunking::default();
    let mut chosen: Vec<usize> = (0..paths.len()).collect();
    for index in 0..count.min(paths.len()) {
        let pick = rng.random_range(index..paths.len());
        chosen.swap(index, pick);
    }
    for &index in chosen.iter().take(count) {
        let old = fs::read(&paths[index])?;
        let len = (old.len() / 100).max(1).min(old.len());
        let offset = rng.random_range(0..=old.len() - len);
        let mut patch = vec![0u8; len];
        rng.fill_bytes(&mut patch);
        let mut overwritten = old.clone();
        overwritten[offset..offset + len].copy_from_slice(&patch);
        let mut inserted = old.clone();
        inserted.splice(offset..offset, patch.iter().copied());
        chunking.files += 1;
        chunking.changed_bytes += len as u64;
        chunking.overwrite.0 += new_bytes(&cdc(&old), &cdc(&overwritten));
        chunking.overwrite.1 += new_bytes(&fixed(&old), &fixed(&overwritten));
        chunking.insert.0 += new_bytes(&cdc(&old), &cdc(&inserted));
        chunking.insert.1 += new_bytes(&fixed(&old), &fixed(&inserted));
        fs::OpenOptions::new().write(true).open(&paths[index])?.write_all_at(&patch, offset as u64)?;
    }
    Ok(chunking)
}

fn cdc(bytes: &[u8]) -> Vec<(Hash, u64)> {
    let mut offset = 0;
    chunk_lengths(bytes)
        .into_iter()
        .map(|len| {
            let piece = (Hash::of(&bytes[offset..offset + len]), len as u64);
            offset += len;
            piece
        })
        .collect()
}

fn fixed(bytes: &[u8]) -> Vec<(Hash, u64)> {
    bytes.chunks(FIXED_BLOCK_BYTES).map(|block| (Hash::of(block), block.len() as u64)).collect()
}

/// Bytes of the pieces of `new` that `old` does not have (what would be sent).
fn new_bytes(old: &[(Hash, u64)], new: &[(Hash, u64)]) -> u64 {
    let known: std::collections::HashSet<Hash> = old.iter().map(|(hash, _)| *hash).collect();
    let mut sent = std::collections::HashSet::new();
    new.iter().filter(|(hash, _)| !known.contains(hash) && sent.insert(*hash)).map(|(_, len)| len).sum()
}

struct Table<'a> {
    args: &'a FilesArgs,
    rsync_version: String,
    haven_initial: Run,
    scan_initial: Duration,
    rsync_initial: Run,
    haven_incremental: Run,
    scan_incremental: Duration,
    rsync_incremental: Run,
    rsync_delta: Run,
    chunking: Chunking,
    idle_rescan: Duration,
    idle_files_read: usize,
}

impl Table<'_> {
    fn render(&self) -> String {
        let seconds = |run: &Run| format!("{:.2} s", run.time.as_secs_f64());
        let with_sync = |run: &Run| format!("{:.2} s", (run.time + run.sync_after).as_secs_f64());
        let mb = |bytes: u64| format!("{:.2} MB", bytes as f64 / 1e6);
        let kb = |bytes: u64| format!("{:.1} kB", bytes as f64 / 1e3);
        let ratio = |a: f64, b: f64| if b > 0.0 { format!("{:.2}", a / b) } else { "—".to_string() };
        let time_ratio = |a: &Run, b: &Run| ratio(a.time.as_secs_f64(), b.time.as_secs_f64());
        let synced_ratio =
            |a: &Run, b: &Run| ratio((a.time + a.sync_after).as_secs_f64(), (b.time + b.sync_after).as_secs_f64());
        let bytes_ratio = |a: &Run, b: &Run| ratio(a.bytes as f64, b.bytes as f64);
        let (h0, r0, h1, r1, d1) = (
            &self.haven_initial,
            &self.rsync_initial,
            &self.haven_incremental,
            &self.rsync_incremental,
            &self.rsync_delta,
        );
        let c = &self.chunking;
        let mut out = String::new();
        out += &format!(
            "{} files, {} MB (seed {:#x}); then 1% of the bytes of {} files changed. {}.\n\n",
            self.args.files, self.args.total_mb, self.args.seed, c.files, self.rsync_version
        );
        out += "| run | Haven | rsync -a | rsync -a --no-whole-file | Haven / rsync -a | Haven / --no-whole-file |\n";
        out += "|---|---|---|---|---|---|\n";
        out += &format!("| initial: time | {} | {} | — | {} | — |\n", seconds(h0), seconds(r0), time_ratio(h0, r0));
        out += &format!(
            "| initial: time with data on disk (+ sync) | {} | {} | — | {} | — |\n",
            with_sync(h0),
            with_sync(r0),
            synced_ratio(h0, r0)
        );
        out += &format!(
            "| initial: bytes sent | {} | {} | — | {} | — |\n",
            mb(h0.bytes),
            mb(r0.bytes),
            bytes_ratio(h0, r0)
        );
        out += &format!(
            "| incremental: time | {} | {} | {} | {} | {} |\n",
            seconds(h1),
            seconds(r1),
            seconds(d1),
            time_ratio(h1, r1),
            time_ratio(h1, d1)
        );
        out += &format!(
            "| incremental: time with data on disk (+ sync) | {} | {} | {} | {} | {} |\n",
            with_sync(h1),
            with_sync(r1),
            with_sync(d1),
            synced_ratio(h1, r1),
            synced_ratio(h1, d1)
        );
        out += &format!(
            "| incremental: bytes sent | {} | {} | {} | {} | {} |\n\n",
            mb(h1.bytes),
            mb(r1.bytes),
            mb(d1.bytes),
            bytes_ratio(h1, r1),
            bytes_ratio(h1, d1)
        );
        out += &format!(
            "Haven's time includes making its data durable (a syncfs of the primary's store, one after \
             staging and one after the renames on the replica); its scan (read, chunk, hash, store, syncfs) \
             took {:.2} s of the initial run and {:.2} s of the incremental one. Haven's bytes are chunks \
             fetched plus the manifest ({}) initially, plus the manifest delta ({}) incrementally. A rescan \
             of the unchanged tree took {:.1} ms ({} files read: those changed within the racy window).\n\n",
            self.scan_initial.as_secs_f64(),
            self.scan_incremental.as_secs_f64(),
            kb(h0.manifest_bytes),
            kb(h1.manifest_bytes),
            self.idle_rescan.as_secs_f64() * 1e3,
            self.idle_files_read
        );
        out += &format!(
            "Chunking of the {} changed files ({} changed bytes), bytes to send:\n\n",
            c.files,
            mb(c.changed_bytes)
        );
        out += &format!(
            "| change | content-defined (FastCDC, 64 KiB average) | fixed {} KiB blocks |\n",
            FIXED_BLOCK_BYTES / 1024
        );
        out += "|---|---|---|\n";
        out += &format!("| overwrite 1% in place | {} | {} |\n", mb(c.overwrite.0), mb(c.overwrite.1));
        out += &format!("| insert 1% | {} | {} |\n", mb(c.insert.0), mb(c.insert.1));
        out
    }
}
