//! `haven-nemesis`: the long fault-injection run.
//!
//! ```sh
//! cargo build --release -p haven -p haven-nemesis
//! sudo target/release/haven-nemesis --haven-bin target/release/haven --minutes 30 --mutants all
//! ```
//!
//! Runs each chosen mutant once (each must be flagged), then correct histories with random
//! fault schedules until the time is up, and prints the summary. Exits 0 only when every
//! correct history passed and every mutant was flagged.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use std::time::Instant;

use clap::Parser;
use haven_nemesis::config::ALL_FAULT_KINDS;
use haven_nemesis::config::HISTORY_SECONDS_MAX;
use haven_nemesis::config::KEYS_MAX;
use haven_nemesis::HistoryConfig;
use haven_nemesis::NetChoice;
use haven_nemesis::NodeMode;
use haven_nemesis::Summary;

/// Longest run the command accepts (a week): a bound, not a suggestion.
const MINUTES_MAX: u64 = 7 * 24 * 60;

#[derive(Parser, Debug)]
#[command(name = "haven-nemesis", about = "Real haven processes, real faults, checked histories")]
struct Args {
    /// The haven binary to test (build it with --release for long runs).
    #[arg(long)]
    haven_bin: PathBuf,
    /// Total time for the correct histories, in minutes (at least one history runs).
    #[arg(long, default_value_t = 5)]
    minutes: u64,
    /// Fault phase of each correct history, in seconds.
    #[arg(long, default_value_t = 60)]
    history_seconds: u64,
    /// Mutants to run first, each of which must be flagged: all, none, or a comma-separated
    /// list of crash-sim-ack-before-fsync, stale-reads.
    #[arg(long, default_value = "all")]
    mutants: String,
    /// Seed of the first history (the next ones add 1); printed with every report.
    #[arg(long)]
    seed: Option<u64>,
    /// auto (namespaces when root), netns, or local.
    #[arg(long, default_value = "auto")]
    net: String,
    /// Operations per second over all clients.
    #[arg(long, default_value_t = 200)]
    rate: u32,
    /// Register keys (at most 16).
    #[arg(long, default_value_t = KEYS_MAX)]
    keys: usize,
    /// Keep every history's directory (failed ones are always kept).
    #[arg(long)]
    keep: bool,
    /// Less progress output.
    #[arg(long)]
    quiet: bool,
    /// Fault kinds random schedules may draw, comma-separated: kill, sigstop, partition,
    /// one-way, delay, loss, power-cut (default: all). Every history still ends with a
    /// power cut.
    #[arg(long)]
    faults: Option<String>,
    /// Run exactly CI's histories instead (the correct one, then the chosen mutants, each
    /// with its short fixed schedule).
    #[arg(long)]
    ci: bool,
}

fn parse_mutants(text: &str) -> Result<Vec<NodeMode>, String> {
    match text {
        "all" => Ok(NodeMode::MUTANTS.to_vec()),
        "none" | "" => Ok(Vec::new()),
        list => list
            .split(',')
            .map(|name| match NodeMode::parse(name.trim()) {
                Some(mode) if mode.is_mutant() => Ok(mode),
                _ => Err(format!("unknown mutant {name:?}; known: crash-sim-ack-before-fsync, stale-reads")),
            })
            .collect(),
    }
}

/// `kill,power-cut` → the [`haven_nemesis::Fault::kind`] names.
fn parse_fault_kinds(text: &str) -> Result<Vec<String>, String> {
    text.split(',')
        .map(|name| {
            let kind = match name.trim() {
                "kill" => "kill -9",
                "power-cut" => "power cut",
                other => other,
            };
            if ALL_FAULT_KINDS.contains(&kind) {
                Ok(kind.to_string())
            } else {
                Err(format!("unknown fault {name:?}; known: kill, sigstop, partition, one-way, delay, loss, power-cut"))
            }
        })
        .collect()
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mutants = match parse_mutants(&args.mutants) {
        Ok(mutants) => mutants,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    let net = match args.net.as_str() {
        "auto" => NetChoice::Auto,
        "netns" => NetChoice::Netns,
        "local" => NetChoice::Local,
        other => {
            eprintln!("error: unknown --net {other:?}; use auto, netns or local");
            return ExitCode::from(2);
        }
    };
    if args.minutes > MINUTES_MAX || args.history_seconds == 0 || args.history_seconds > HISTORY_SECONDS_MAX {
        eprintln!("error: --minutes must be at most {MINUTES_MAX} and --history-seconds 1..={HISTORY_SECONDS_MAX}");
        return ExitCode::from(2);
    }
    let fault_kinds = match args.faults.as_deref().map(parse_fault_kinds).transpose() {
        Ok(kinds) => kinds.unwrap_or_default(),
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(2);
        }
    };
    let first_seed = args.seed.unwrap_or_else(|| rand::random::<u32>() as u64);
    eprintln!("[nemesis] first seed {first_seed}; mutants: {mutants:?}; {} minutes of correct histories", args.minutes);
    let configure = |mode: NodeMode, seed: u64| {
        let mut config = if mode.is_mutant() || args.ci {
            // Each mutant gets the schedule that exposes it (see HistoryConfig::ci).
            HistoryConfig {
                label: format!("{mode}-seed{seed}"),
                seed,
                shared_request_ids: haven_nemesis::config::shares_request_ids(seed),
                ..HistoryConfig::ci(&args.haven_bin, mode)
            }
        } else {
            HistoryConfig::long(&args.haven_bin, mode, seed, args.history_seconds)
        };
        config.net = net;
        config.rate_ops_per_second = args.rate;
        config.keys = args.keys;
        config.keep_work_dir = args.keep;
        config.fault_kinds = fault_kinds.clone();
        config.verbose = !args.quiet;
        config
    };
    let mut summary = Summary::default();
    let mut seed = first_seed;
    let mut harness_errors = 0;
    let mut run = |config: HistoryConfig, summary: &mut Summary| {
        // Ctrl-C drops the running history, whose guards kill the nodes and remove the
        // namespaces, before the process exits.
        let outcome = runtime.block_on(async {
            tokio::select! {
                outcome = haven_nemesis::run_history(config) => Some(outcome),
                _ = tokio::signal::ctrl_c() => None,
            }
        });
        match outcome {
            Some(Ok(report)) => {
                println!("{}", report.render());
                summary.add(&report);
            }
            Some(Err(error)) => {
                eprintln!("error: the harness could not run a history: {error:#}");
                harness_errors += 1;
            }
            None => {
                eprintln!("interrupted; the nodes and namespaces of the running history were removed");
                std::process::exit(130);
            }
        }
    };
    if args.ci {
        run(configure(NodeMode::CrashSim, seed), &mut summary);
    }
    for mode in mutants {
        run(configure(mode, seed), &mut summary);
        seed += 1;
    }
    let budget = Duration::from_secs(args.minutes * 60);
    let started = Instant::now();
    // At least one correct history; more while another one still fits in the budget.
    let mut more = !args.ci;
    while more {
        run(configure(NodeMode::CrashSim, seed), &mut summary);
        seed += 1;
        more = started.elapsed() + Duration::from_secs(args.history_seconds) <= budget;
    }
    println!("{}", summary.render());
    if harness_errors > 0 {
        println!("harness errors: {harness_errors} (histories that could not run)");
    }
    if summary.passed() && harness_errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
