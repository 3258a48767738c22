//! `haven-sim`: runs simulation seeds and prints what they found.
//!
//! ```sh
//! cargo run --release -p haven-sim -- --seed 1234          # one seed, with its summary
//! cargo run --release -p haven-sim -- --seeds 1000         # seeds 0..1000, a summary
//! cargo run --release -p haven-sim -- --seed 7 --trace     # every event of one run
//! cargo run --release -p haven-sim -- --seeds 50 --mutant ack-before-fsync
//! ```
//!
//! Exits non-zero when a correct run violated an invariant, or when a mutant escaped every
//! seed run.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use haven_sim::Mutant;
use haven_sim::SimOptions;

#[derive(Parser, Debug)]
#[command(name = "haven-sim", about = "Deterministic simulation of Haven clusters")]
struct Args {
    /// Run this one seed.
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// Run this many seeds, from --first.
    #[arg(long)]
    seeds: Option<u64>,
    /// The first seed of --seeds.
    #[arg(long, default_value_t = 0)]
    first: u64,
    /// A deliberately broken build: none, ack-before-fsync, forged-append-acks,
    /// stale-reads, leader-restore.
    #[arg(long, default_value = "none")]
    mutant: Mutant,
    /// Simulated milliseconds with faults per seed.
    #[arg(long, default_value_t = haven_sim::sim::SAFETY_MS_DEFAULT)]
    safety_ms: u64,
    /// Do not flag a leader id that reigns again after a restart; lets a run go on to what
    /// such a reign does (see the leader-restore mutant in docs/simulation.md).
    #[arg(long)]
    no_reign_check: bool,
    /// Print every trace event (one seed only).
    #[arg(long)]
    trace: bool,
    /// Print one line per seed.
    #[arg(long)]
    verbose: bool,
}

/// `println!` that does not panic when stdout is closed early (`| head`).
macro_rules! out {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

fn main() -> ExitCode {
    let args = Args::parse();
    let (first, count) = match (args.seed, args.seeds) {
        (Some(seed), _) => (seed, 1),
        (None, Some(count)) => (args.first, count),
        (None, None) => (args.first, 1),
    };
    let started = Instant::now();
    let mut failed = Vec::new();
    let mut faults: BTreeMap<&'static str, u64> = BTreeMap::new();
    let (mut steps, mut simulated_ms, mut ops, mut acks, mut events) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut slowest_recovery_ms = 0u64;
    let mut slowest_convergence_ms = 0u64;
    for seed in first..first.saturating_add(count) {
        let options = SimOptions {
            seed,
            mutant: args.mutant,
            safety_ms: args.safety_ms,
            print_trace: args.trace && count == 1,
            reign_check: !args.no_reign_check,
        };
        let report = match haven_sim::run_seed(&options) {
            Ok(report) => report,
            Err(error) => {
                eprintln!("seed {seed}: the simulation could not run: {error}");
                return ExitCode::FAILURE;
            }
        };
        if count == 1 || args.verbose {
            out!("{}", report.summary_line());
        }
        steps += report.steps;
        simulated_ms += report.simulated_ms;
        events += report.trace_events;
        acks += report.checker.acks;
        ops += report.ops.reads + report.ops.writes + report.ops.cas + report.ops.deletes;
        slowest_recovery_ms = slowest_recovery_ms.max(report.recovery_ms.unwrap_or(0));
        slowest_convergence_ms = slowest_convergence_ms.max(report.convergence_ms.unwrap_or(0));
        for (kind, n) in &report.faults {
            *faults.entry(kind).or_default() += n;
        }
        if !report.passed() {
            if args.mutant == Mutant::None || count == 1 {
                eprintln!("{}", report.failure_text());
            } else {
                out!("seed {seed}: mutant {} flagged: {}", args.mutant.name(), report.violations[0]);
            }
            failed.push(seed);
        }
    }
    let faults_text: Vec<String> = faults.iter().map(|(kind, n)| format!("{kind} {n}")).collect();
    out!(
        "seeds {count} (from {first}), mutant {}, {:.1} s wall, {} simulated s, {steps} steps, {events} events, \
         {ops} ops, {acks} acks, slowest recovery {slowest_recovery_ms} ms, slowest convergence \
         {slowest_convergence_ms} ms",
        args.mutant.name(),
        started.elapsed().as_secs_f64(),
        simulated_ms / 1000,
    );
    out!("faults: {}", faults_text.join(", "));
    if args.mutant == Mutant::None {
        out!("violations: {} seeds {:?}", failed.len(), failed);
        if failed.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    } else {
        out!("mutant {} flagged by {} of {count} seeds {:?}", args.mutant.name(), failed.len(), failed);
        if failed.is_empty() {
            out!("the mutant escaped: the checks missed a broken build");
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        }
    }
}
