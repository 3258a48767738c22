//! Replicated directories, the library part (issue 18): the pieces a node needs to keep a
//! directory tree identical on every data node, without the server around them.
//!
//! ```text
//!   primary                                         standby
//!   tree ──scan──▶ Manifest (generation) ═══════▶  Manifest
//!          │          (the server commits its        │
//!          ▼           digest through Raft)          ▼ plan: what differs, which chunks lack
//!   ChunkStore ◀──── ChunkSource::fetch_chunk ──── fetch (every chunk hash-checked)
//!                      (peer transport)              ▼
//!                                                 apply: stage, fsync, rename, delete
//!                                                    ▼
//!                                                 verify: re-hash, list differences
//! ```
//!
//! - [`manifest`]: a generation as a value; canonical postcard encoding, BLAKE3 digest,
//!   and the checks that make a manifest from a peer safe to use.
//! - [`scan`]: the primary's tree into a manifest, chunks into the store.
//! - [`chunk`], [`store`]: content-defined chunks, stored once per node by hash.
//! - [`fetch`]: the seam to the peer transport; answers are checked, never trusted.
//! - [`apply`]: a standby's tree to a generation, atomically per file.
//! - [`verify`]: every difference between a tree and a manifest.
//! - [`policy`] (pure), [`watch`] and [`publish`]: when the primary publishes a new
//!   generation.
//! - [`limits`]: every limit, with its reason.
//!
//! Linux only: names are bytes ([`path`]), files are opened with `O_NOFOLLOW`.

pub mod apply;
pub mod chunk;
pub mod error;
pub mod fetch;
pub mod hash;
pub mod limits;
pub mod manifest;
pub mod path;
pub mod policy;
pub mod publish;
pub mod scan;
pub mod store;
pub mod verify;
mod walk;
pub mod watch;
