//! Every limit of replicated directories, with the reason it has the value it has.
//!
//! A tree that exceeds one of these is reported with the path and the limit named; a
//! manifest from a peer that exceeds one is refused whole before anything is written.

/// Most entries (files, directories, symlinks) in one replicated directory. Seed 000's
/// trees (configuration, `cds`, `dists`) hold thousands of files; 200,000 is well beyond
/// a large package repository and keeps a manifest, which every node holds in memory and
/// receives whole, in the tens of MiB.
pub const ENTRIES_MAX: usize = 200_000;

/// Largest encoded manifest. Bounds the memory a peer can make a node allocate before the
/// manifest is checked; with 64 KiB chunks it still describes more than 100 GiB of content.
pub const MANIFEST_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Longest relative path in bytes. Linux refuses paths over 4096 bytes (`PATH_MAX`); the
/// replicated directory's own location takes up to 1 KiB of that on each node.
pub const PATH_BYTES_MAX: usize = 3072;

/// Longest single name in bytes: Linux's `NAME_MAX`; a longer name cannot be created.
pub const NAME_BYTES_MAX: usize = 255;

/// Deepest nesting (components in a relative path). Package and configuration trees are a
/// few levels deep; 64 stops pathological trees without refusing any real one.
pub const DEPTH_MAX: usize = 64;

/// Largest file. Install images (DVD ISOs, 4-10 GiB) fit; a larger file would dominate the
/// manifest (one chunk reference per 64 KiB) and any transfer.
pub const FILE_BYTES_MAX: u64 = 16 * 1024 * 1024 * 1024;

/// Longest symlink target: Linux's `PATH_MAX` less the terminating NUL.
pub const SYMLINK_TARGET_BYTES_MAX: usize = 4095;

/// Content-defined chunk sizes (FastCDC, normalisation level 1). The average of 64 KiB
/// keeps chunk references at about 0.05% of the content (35 bytes per chunk) while a small
/// edit in a large file costs one or two chunks; `docs/files.md` has the measurement
/// against fixed blocks. The minimum stops a run of tiny chunks; the maximum bounds one
/// chunk in memory and on the wire.
pub const CHUNK_BYTES_MIN: u32 = 16 * 1024;
pub const CHUNK_BYTES_AVERAGE: u32 = 64 * 1024;
pub const CHUNK_BYTES_MAX: u32 = 256 * 1024;

/// How often a file that changes while it is read is read again before it is left for the
/// next generation: a file being written for longer than this is not finished anyway, and
/// its next change notification brings it back.
pub const READ_ATTEMPTS_MAX: usize = 3;

/// Chunk fetches in flight at once. Enough to hide a peer's round trip on a LAN, few
/// enough that a standby catching up does not starve the primary's peer port.
pub const FETCHES_IN_FLIGHT: usize = 8;

/// A file whose status changed less than this before a scan started is hashed again at the
/// next scan even if its size and times look unchanged ("racily clean", as git calls it):
/// a write in the same timestamp tick as the scan would otherwise go unseen.
pub const RACY_WINDOW_NS: i64 = 2_000_000_000;

// The chunker's own bounds (fastcdc asserts them; checked here at compile time).
const _: () = assert!(CHUNK_BYTES_MIN >= fastcdc::v2020::MINIMUM_MIN && CHUNK_BYTES_MIN <= fastcdc::v2020::MINIMUM_MAX);
const _: () =
    assert!(CHUNK_BYTES_AVERAGE >= fastcdc::v2020::AVERAGE_MIN && CHUNK_BYTES_AVERAGE <= fastcdc::v2020::AVERAGE_MAX);
const _: () = assert!(CHUNK_BYTES_MAX >= fastcdc::v2020::MAXIMUM_MIN && CHUNK_BYTES_MAX <= fastcdc::v2020::MAXIMUM_MAX);
const _: () = assert!(CHUNK_BYTES_MIN < CHUNK_BYTES_AVERAGE && CHUNK_BYTES_AVERAGE < CHUNK_BYTES_MAX);
const _: () = assert!(NAME_BYTES_MAX <= PATH_BYTES_MAX);
