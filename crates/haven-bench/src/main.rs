//! `haven-bench`: Haven against etcd on this machine, the same way for both.
//!
//! One after the other it runs a three-member etcd cluster at etcd's defaults, a second one
//! at Haven's timings, and a three-node Haven cluster, all on 127.0.0.1 and all fsyncing
//! before they acknowledge. On each it runs the same load (puts at concurrency 1, 16 and
//! 64, linearizable gets at 64) and the same failover measurement (`kill -9` and `SIGSTOP`
//! of the leader under continuous writes); optionally a long fault-free run on Haven
//! counts leader changes. It prints one table and writes it, with the date, machine,
//! versions and command, to `docs/benchmarks.md`.
//!
//! Every child process is killed when the benchmark ends, fails, panics, or is interrupted.

mod api;
mod auth_timing;
mod cluster;
mod failover;
mod files;
mod load;
mod report;
mod stability;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;

use crate::cluster::Cluster;
use crate::cluster::System;
use crate::cluster::FORM_TIMEOUT;
use crate::failover::Fault;
use crate::load::Op;
use crate::report::LoadResults;
use crate::report::Report;

/// Keys the workload picks from, as the issue specifies.
const KEYS: usize = 10_000;

/// The load phases, in order: puts at rising concurrency, then linearizable gets.
const PHASES: [(Op, usize); 4] = [(Op::Put, 1), (Op::Put, 16), (Op::Put, 64), (Op::Get, 64)];

/// Concurrency of the stability run.
const STABILITY_CONCURRENCY: usize = 64;

/// The fault kinds measured, in order.
const FAULTS: [Fault; 2] = [Fault::Kill, Fault::Stop];

/// Seed of the workload's random keys and values (fixed: both systems see the same requests).
const SEED: u64 = 0x4856_4E42;

#[derive(Parser, Debug)]
#[command(
    name = "haven-bench",
    about = "Benchmark Haven against etcd on this machine",
    args_conflicts_with_subcommands = true
)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// The haven binary to run (build it with `cargo build --release -p haven`).
    #[arg(long, default_value = "target/release/haven")]
    haven_bin: PathBuf,
    /// Measured seconds per load phase (after 1 s of warm-up).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
    seconds: u64,
    /// Faults of each kind (kill -9, SIGSTOP) per cluster.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=100))]
    kills: u64,
    /// Minutes of the fault-free stability run on Haven (0 = skip).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=120))]
    stability_minutes: u64,
    /// Where to write the report (the directory must be inside the repository or exist).
    #[arg(long, default_value = "docs/benchmarks.md")]
    out: PathBuf,
    /// Run one system only (ratios are then left empty; pass `--out` elsewhere to keep the
    /// full report).
    #[arg(long, value_enum)]
    only: Option<Only>,
    /// An extra flag for every `haven serve` (repeatable; for experiments, e.g.
    /// `--haven-arg=--snapshot-threshold=100000`). The default run uses none.
    #[arg(long, allow_hyphen_values = true)]
    haven_arg: Vec<String>,
    /// Keep the members' data dirs and logs (their paths are printed) for debugging.
    #[arg(long)]
    keep_files: bool,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Replicated directories (haven-files) against rsync between two local directories.
    Files(files::FilesArgs),
    /// Answer times of refused tokens: an unknown token id against a known id with a wrong
    /// secret (they should not differ), on a three-node Haven cluster.
    AuthTiming(auth_timing::AuthTimingArgs),
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Only {
    Haven,
    Etcd,
}

fn main() -> ExitCode {
    let mut args = Args::parse();
    if let Some(Command::Files(files_args)) = args.command.take_if(|command| matches!(command, Command::Files(_))) {
        return match files::main(files_args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("haven-bench files: {error:#}");
                ExitCode::FAILURE
            }
        };
    }
    // The workspace builds reqwest with rustls but no crypto provider; clients cannot be
    // built until one is installed (plain HTTP needs none, but reqwest insists). An error
    // means another provider was installed first, which serves as well.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("haven-bench: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    // The benchmark runs in the main task so clusters are dropped (children killed) when it
    // ends for any reason, including Ctrl-C and SIGTERM.
    let outcome = runtime.block_on(async {
        tokio::select! {
            result = async {
                match args.command.take() {
                    Some(Command::AuthTiming(timing_args)) => auth_timing::run(timing_args).await,
                    _ => run(args).await,
                }
            } => result,
            signal = stop_signal() => Err(anyhow::anyhow!("interrupted by {signal}")),
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("haven-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves with the signal's name on SIGINT or SIGTERM.
async fn stop_signal() -> &'static str {
    use tokio::signal::unix::signal;
    use tokio::signal::unix::SignalKind;
    let (Ok(mut interrupt), Ok(mut terminate)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
    else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = interrupt.recv() => "SIGINT",
        _ = terminate.recv() => "SIGTERM",
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let with_etcd = args.only != Some(Only::Haven);
    let with_haven = args.only != Some(Only::Etcd);
    let haven_bin = std::path::absolute(&args.haven_bin)?;
    if with_haven && !haven_bin.is_file() {
        anyhow::bail!(
            "no haven binary at {}: build it with `cargo build --release -p haven` or pass --haven-bin",
            haven_bin.display()
        );
    }
    let mut report = Report {
        date: report::date(),
        load_before: report::load_average(),
        machine: report::machine(&std::env::temp_dir()),
        haven_version: report::haven_version(&haven_bin),
        haven_extra_args: args.haven_arg.clone(),
        command: command_line(),
        seconds: args.seconds,
        kills: args.kills as usize,
        phases: PHASES.to_vec(),
        ..Report::default()
    };
    let workload = Arc::new(api::Workload::new(KEYS, SEED));
    let kills = args.kills as usize;
    let measure = std::time::Duration::from_secs(args.seconds);

    if with_etcd {
        cluster::ensure_etcd()?;
        let version = cluster::etcd_version_number(&cluster::etcd_version());
        report.etcd_version = Some(version);
        let foreign = cluster::foreign_etcd_pids();
        if !foreign.is_empty() {
            eprintln!(
                "warning: etcd processes not started by this benchmark are running ({foreign:?}); they share the CPU"
            );
        }
        eprintln!("== etcd {} at its defaults", report.etcd_version.as_deref().unwrap_or("?"));
        let mut etcd = Cluster::start_etcd(None).await?;
        keep(&mut etcd, args.keep_files);
        let (load, failover, api) = exercise(&mut etcd, &workload, measure, kills, true).await?;
        report.etcd_load = load;
        report.etcd_failover = failover;
        report.etcd_api = Some(api);
        drop(etcd);
        eprintln!("== etcd at Haven's timings (failover only)");
        let mut etcd = Cluster::start_etcd(Some(cluster::HAVEN_TIMINGS)).await?;
        keep(&mut etcd, args.keep_files);
        let (_, failover, _) = exercise(&mut etcd, &workload, measure, kills, false).await?;
        report.etcd_fast_failover = failover;
        drop(etcd);
    }
    if with_haven {
        eprintln!("== Haven at its defaults");
        let mut haven = Cluster::start_haven(&haven_bin, &args.haven_arg).await?;
        keep(&mut haven, args.keep_files);
        report.haven_setup = Some(haven.haven_setup());
        let (load, failover, api) = exercise(&mut haven, &workload, measure, kills, true).await?;
        report.haven_load = load;
        report.haven_failover = failover;
        report.haven_api = Some(api);
        drop(haven);
        if args.stability_minutes > 0 {
            eprintln!(
                "== Haven stability: {} min of puts at concurrency {STABILITY_CONCURRENCY}",
                args.stability_minutes
            );
            let mut haven = Cluster::start_haven(&haven_bin, &args.haven_arg).await?;
            keep(&mut haven, args.keep_files);
            let connection = Arc::new(api::haven_connection(
                &haven.client_urls,
                haven.haven_token.as_deref(),
                STABILITY_CONCURRENCY,
                load::REQUEST_TIMEOUT,
            )?);
            let leader = haven.wait_healthy(FORM_TIMEOUT).await?;
            let result = stability::run(
                connection,
                &haven.control,
                workload.clone(),
                STABILITY_CONCURRENCY,
                leader,
                args.stability_minutes,
                SEED,
            )
            .await;
            eprintln!(
                "   {} term changes, {} leader changes, {:.0} ops/s",
                result.term_changes,
                result.leader_changes,
                result.load.ops_per_second()
            );
            report.stability = Some(result);
        }
    }

    report.load_after = report::load_average();
    let table = report.table();
    println!("{table}");
    for miss in report.misses() {
        println!("missed: {miss}");
    }
    report.write(&args.out).with_context(|| format!("cannot write {}", args.out.display()))?;
    eprintln!("wrote {}", args.out.display());
    Ok(())
}

/// Load phases (when `with_load`) and failover measurement on one running cluster; returns
/// the load results, the gaps, and the name of the API used.
async fn exercise(
    cluster: &mut Cluster,
    workload: &Arc<api::Workload>,
    measure: std::time::Duration,
    kills: usize,
    with_load: bool,
) -> anyhow::Result<(LoadResults, Vec<failover::Gaps>, String)> {
    let (system, control_api, urls, token) =
        (cluster.system, cluster.control.api.clone(), cluster.client_urls.clone(), cluster.haven_token.clone());
    let connect = |pool: usize, timeout: std::time::Duration| match (&system, &control_api) {
        (System::Haven, _) => api::haven_connection(&urls, token.as_deref(), pool, timeout),
        (System::Etcd(_), api::Api::EtcdGateway { prefix }) => api::etcd_connection(&urls, prefix, pool, timeout),
        (System::Etcd(_), api::Api::Haven) => anyhow::bail!("an etcd cluster with a Haven connection"),
    };
    let max_concurrency = PHASES.iter().map(|(_, c)| *c).max().unwrap_or(1);
    let connection = Arc::new(connect(max_concurrency, load::REQUEST_TIMEOUT)?);
    let api_name = connection.api.describe();
    let mut results = LoadResults::default();
    if with_load {
        eprintln!("   populating {} keys", workload.key_count());
        let failed = load::populate(connection.clone(), workload.clone()).await;
        anyhow::ensure!(failed == 0, "{failed} keys could not be written while populating");
        for (index, (op, concurrency)) in PHASES.iter().enumerate() {
            // A fresh pool per phase, sized to its concurrency.
            let connection = Arc::new(connect(*concurrency, load::REQUEST_TIMEOUT)?);
            // Start the round-robin at the leader, so both systems are driven alike.
            let leader = cluster.wait_healthy(FORM_TIMEOUT).await?;
            let seed = SEED + index as u64;
            let result = load::run(connection, workload.clone(), *op, *concurrency, leader, measure, seed).await;
            eprintln!(
                "   {} c={}: {:.0} ops/s, p50 {:.2} ms, p99 {:.2} ms, {} errors",
                op.label(),
                concurrency,
                result.ops_per_second(),
                result.p50_ms().unwrap_or(f64::NAN),
                result.p99_ms().unwrap_or(f64::NAN),
                result.errors
            );
            results.0.push(result);
        }
    }
    let mut gaps = Vec::new();
    if kills > 0 {
        let writers = Arc::new(connect(failover::WRITERS, failover::FAILOVER_REQUEST_TIMEOUT)?);
        gaps = failover::measure(cluster, writers, workload.clone(), &FAULTS, kills).await?;
    }
    Ok((results, gaps, api_name))
}

/// With `--keep-files`, keeps the cluster's files and says where they are.
fn keep(cluster: &mut Cluster, wanted: bool) {
    if wanted {
        eprintln!("   keeping data dirs and logs in {}", cluster.keep_files().display());
    }
}

/// The command as a user would type it.
pub(crate) fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut line = "cargo run --release -p haven-bench --".to_string();
    for arg in args {
        line.push(' ');
        line.push_str(&arg);
    }
    line
}
