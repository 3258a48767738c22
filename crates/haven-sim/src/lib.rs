//! haven-sim: a deterministic simulator of whole Haven nodes (VOPR-style).
//!
//! ```text
//!   seed ──▶ World (sim.rs) ── faults: partitions, one-way links, delay, loss, crashes and
//!              │                power cuts, pauses, clock drift, membership changes,
//!              │                switchovers
//!              ├─ nodes: real openraft `Raft`s running `haven_core::kv::KvState`
//!              │    on SimRuntime (runtime.rs): paused tokio clock, seeded RNG,
//!              │    per-node drifting clocks, a deterministic watch (watch.rs)
//!              ├─ network (network.rs): seeded delay, loss, reordering, cuts
//!              ├─ disks (storage.rs): only what was flushed survives a crash
//!              ├─ clients (workload.rs): reads, writes, CAS, deletes, recorded
//!              └─ checks (invariants.rs): leader ids, acks, divergence, at every step;
//!                 then liveness, then haven-check's linearizability checker
//! ```
//!
//! One seed is one run: every random choice (openraft's election timeouts included) is
//! drawn from it, and time is simulated, so a failing seed reproduces exactly. See
//! `docs/simulation.md`.

pub mod invariants;
pub mod network;
pub mod rng;
pub mod runtime;
pub mod sim;
pub mod storage;
pub mod trace;
pub mod types;
pub mod watch;
pub mod workload;

pub use sim::run_seed;
pub use sim::FaultKind;
pub use sim::Mutant;
pub use sim::SeedReport;
pub use sim::SimOptions;
