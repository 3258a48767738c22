//! The simulator's fast set: a few seeds of the correct system, one seed twice for
//! determinism, and each mutant flagged. Short safety phases keep the whole file well
//! under a minute in a debug build (openraft validates its state on every access there,
//! which makes a simulated second cost about half a real one); the long runs are
//! `cargo run --release -p haven-sim -- --seeds 1000` (docs/simulation.md).

use haven_sim::run_seed;
use haven_sim::Mutant;
use haven_sim::SeedReport;
use haven_sim::SimOptions;

/// Seeds of the correct system run by `cargo test`. Each has faults of every kind its
/// swarm draw enabled, a liveness phase and a linearizability check.
const FAST_SEEDS: u64 = 4;
/// Simulated seconds of faults per fast seed: several faults at the `fast` profile.
const FAST_SAFETY_MS: u64 = 3_000;
/// Seeds a mutant test may try before it must have been flagged. Mutant runs draw the
/// mutant's trigger fault for half their faults, and stop at the first violation.
const MUTANT_SEEDS_MAX: u64 = 8;
const MUTANT_SAFETY_MS: u64 = 4_000;

fn options(seed: u64, mutant: Mutant, safety_ms: u64) -> SimOptions {
    SimOptions { mutant, safety_ms, ..SimOptions::new(seed) }
}

fn run(options: &SimOptions) -> SeedReport {
    match run_seed(options) {
        Ok(report) => report,
        Err(error) => panic!("the simulation could not run: {error}; rerun: {}", options.reproduce_command()),
    }
}

/// Safety and liveness of the correct system (every invariant of `invariants.rs`, the
/// liveness bound, linearizability) over `seeds`.
fn hold_every_invariant(seeds: std::ops::Range<u64>) {
    for seed in seeds {
        let report = run(&options(seed, Mutant::None, FAST_SAFETY_MS));
        println!("{}", report.summary_line());
        assert!(report.passed(), "{}", report.failure_text());
        assert!(report.recovery_ms.is_some(), "seed {seed}: no write committed after healing");
        assert!(report.checker.acks > 0, "seed {seed}: the workload acknowledged nothing");
    }
}

// The fast seeds in two tests, so the test harness runs them on two threads.
#[test]
fn fast_seeds_first_half_hold_every_invariant() {
    hold_every_invariant(0..FAST_SEEDS / 2);
}

#[test]
fn fast_seeds_second_half_hold_every_invariant() {
    hold_every_invariant(FAST_SEEDS / 2..FAST_SEEDS);
}

/// Determinism: one seed, run twice, gives the same trace (every message, fault, client
/// operation and leader change at the same simulated microsecond).
#[test]
fn one_seed_gives_one_trace() {
    // Seed 15 draws the `fast` profile, two partitions and a power cut in 2.5 s.
    let options = options(15, Mutant::None, 2_500);
    let first = run(&options);
    let second = run(&options);
    assert!(first.trace_events > 1_000, "a trace this short proves little: {}", first.summary_line());
    assert_eq!(first.trace_hash, second.trace_hash, "{}\n{}", first.summary_line(), second.summary_line());
    assert_eq!(first.trace_events, second.trace_events);
    assert_eq!(first.summary_line(), second.summary_line());
}

/// Runs `mutant` over the first seeds until one is flagged; returns that report.
fn first_flagged(mutant: Mutant, reign_check: bool) -> SeedReport {
    let mut tried = Vec::new();
    for seed in 0..MUTANT_SEEDS_MAX {
        let options = SimOptions { reign_check, ..options(seed, mutant, MUTANT_SAFETY_MS) };
        let report = run(&options);
        if !report.passed() {
            println!("{}\n  first violation: {}", report.summary_line(), report.violations[0]);
            return report;
        }
        tried.push(report.summary_line());
    }
    panic!("mutant {} escaped {MUTANT_SEEDS_MAX} seeds:\n{}", mutant.name(), tried.join("\n"));
}

/// Teeth: a disk that acknowledges before it syncs loses acknowledged, committed entries
/// in a power cut; the replicas then diverge (or the cluster cannot recover).
#[test]
fn ack_before_fsync_is_flagged() {
    first_flagged(Mutant::AckBeforeFsync, true);
}

/// Teeth: a network that forges append acknowledgements lets an isolated leader commit
/// alone: two primaries, diverging replicas.
#[test]
fn forged_append_acks_are_flagged() {
    let report = first_flagged(Mutant::ForgedAppendAcks, true);
    let text = report.violations.iter().map(|v| v.what.clone()).collect::<Vec<_>>().join("\n");
    assert!(text.contains("diverge") || text.contains("primar") || text.contains("liveness"), "{text}");
}

/// Teeth: reads without a read barrier are caught by the linearizability checker.
#[test]
fn stale_reads_are_flagged() {
    let report = first_flagged(Mutant::StaleReads, true);
    assert!(report.linearizability.starts_with("NOT linearizable"), "{}", report.linearizability);
}

/// Teeth: openraft's leader restore (off in Haven) lets a restarted leader reign again
/// under its old leader id; the reign check flags it at once.
#[test]
fn leader_restore_is_flagged() {
    let report = first_flagged(Mutant::LeaderRestore, true);
    assert!(report.violations[0].what.contains("reigned twice"), "{}", report.violations[0]);
}
