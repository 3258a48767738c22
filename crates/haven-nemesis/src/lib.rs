//! haven-nemesis: real `haven` processes, real faults, checked histories.
//!
//! ```text
//!   clients (pinned + floating) ──HTTP──▶ node 1 ─┐
//!   watchers (one per node)     ──HTTP──▶ node 2 ─┼─ peer links (veth mesh + link proxies)
//!   monitor (status, 10/s)      ──HTTP──▶ node 3 ─┘
//!        │                                   ▲
//!        ▼ history                           │ kill -9, SIGSTOP, partitions, one-way,
//!   haven-check: linearizable? lost writes?  │ delay, loss, power cut (schedule)
//!   watch order? replicas equal? one primary?
//! ```
//!
//! One *history* ([`run_history`]): start three nodes with crash-simulation storage
//! (`haven serve --unsafe-test-mode`, so `kill -9` loses unsynced bytes like a power cut),
//! run the workload while the schedule injects and heals faults, stop the clients, heal
//! everything, wait for a primary, read the final state, check that every node holds the
//! same state at the same applied index, and judge the history with the checkers (one
//! primary at a time is judged from the stamps the leaders put on every acknowledged write,
//! `haven_check::primaries`). A correct build must pass; a mutant build must be flagged.
//!
//! The network mode is reported with every history: network namespaces when root (the
//! harness's client links are never cut), otherwise everything on 127.0.0.1 with process
//! faults only. Every random choice of the harness comes from the seed in the report.

pub mod api;
pub mod cluster;
pub mod config;
pub mod monitor;
pub mod netns;
pub mod proxy;
pub mod report;
pub mod workload;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context;
use haven_check::check_linearizable;
use haven_check::check_no_lost_writes;
use haven_check::check_watchers;
use haven_check::primaries::check_primaries;
use haven_check::primaries::LeaderRule;
use haven_check::CheckBudget;
use haven_check::History;
use haven_check::HistoryRecorder;
use haven_check::LinResult;
use haven_check::OpKind;
use haven_check::Outcome;
use rand::Rng;
use rand::SeedableRng;

pub use crate::config::Fault;
pub use crate::config::HistoryConfig;
pub use crate::config::NetChoice;
pub use crate::config::NetMode;
pub use crate::config::NodeMode;
pub use crate::config::Schedule;
pub use crate::config::Step;
pub use crate::config::Target;
pub use crate::report::HistoryReport;
pub use crate::report::Summary;

use crate::cluster::Cluster;
use crate::config::*;
use crate::monitor::Monitor;
use crate::netns::Namespaces;
use crate::proxy::DirectionFaults;
use crate::proxy::LinkProxies;
use crate::report::FaultRecord;
use crate::report::OpCounts;
use crate::workload::Clock;
use crate::workload::Operation;
use crate::workload::Workload;
use crate::workload::WorkloadShape;

/// Longest wait for the monitor to name a primary before a fault that targets it.
const PRIMARY_LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Attempts at each final read, listing and convergence step before giving up.
const FINAL_ATTEMPTS: usize = 5;

/// Timeout of one of the harness's own requests after the run.
const FINAL_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Change history each node keeps for watchers: enough for every revision of the run at the
/// highest rate, so the committed log can be read from revision 0 at the end.
fn history_revisions(config: &HistoryConfig, schedule: &Schedule) -> u64 {
    let seconds = schedule.duration().as_secs() + 60;
    (u64::from(config.rate_ops_per_second) * seconds * 2).clamp(100_000, 10_000_000)
}

/// The leader-id rule of the Raft type configuration the nodes run: openraft's default
/// `leader_id_adv` orders leaders by `(term, node)` and lets a higher node win a term another
/// node already won; `leader_id_std` allows one leader per term.
pub fn leader_rule() -> LeaderRule {
    let leader_id = std::any::type_name::<openraft::alias::LeaderIdOf<haven_store::TypeConfig>>();
    if leader_id.contains("leader_id_adv") {
        LeaderRule::TermAndNode
    } else {
        LeaderRule::OnePerTerm
    }
}

/// Runs one history and judges it. `Err` only when the harness itself could not run (no
/// namespaces, the cluster never formed); everything the nodes do wrong is in the report.
pub async fn run_history(config: HistoryConfig) -> anyhow::Result<HistoryReport> {
    config.validate()?;
    let wall = Instant::now();
    let say = |message: String| {
        if config.verbose {
            eprintln!("[nemesis {}] {message}", config.label);
        }
    };
    let temp = match &config.work_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
            None
        }
        None => Some(tempfile::Builder::new().prefix("haven-nemesis-").tempdir()?),
    };
    let work_dir: PathBuf = match (&config.work_dir, &temp) {
        (Some(dir), _) => dir.clone(),
        (None, Some(temp)) => temp.path().to_path_buf(),
        (None, None) => anyhow::bail!("no work dir"),
    };

    // Network first; dropped last (locals drop in reverse order), after the processes.
    let net = match config.net {
        NetChoice::Local => NetMode::Local,
        NetChoice::Netns => NetMode::Netns,
        NetChoice::Auto if netns::available() => NetMode::Netns,
        NetChoice::Auto => NetMode::Local,
    };
    let namespaces = match net {
        NetMode::Netns => {
            let swept = netns::sweep_stale();
            if !swept.is_empty() {
                say(format!("swept {} stale namespaces: {}", swept.len(), swept.join(", ")));
            }
            Some(Arc::new(Namespaces::create().context("cannot create network namespaces (needs root and `ip`)")?))
        }
        NetMode::Local => None,
    };
    let proxies = match &namespaces {
        Some(ns) => Some(LinkProxies::start(ns, config.seed).await?),
        None => None,
    };
    say(format!("network mode: {net}"));

    let mut rng = rand::rngs::StdRng::seed_from_u64(config.seed);
    let schedule = config
        .schedule
        .clone()
        .unwrap_or_else(|| Schedule::random(&mut rng, config.random_duration, net, &config.fault_kinds));
    let started = Cluster::start(
        &config.haven_bin,
        config.mode,
        &work_dir,
        namespaces.clone(),
        history_revisions(&config, &schedule),
    )
    .await;
    let mut cluster = match started {
        Ok(cluster) => cluster,
        Err(error) => {
            // Keep the node logs: they say why.
            let kept = temp.map(tempfile::TempDir::keep).unwrap_or(work_dir);
            return Err(error.context(format!("the cluster did not form; node logs in {}", kept.display())));
        }
    };
    let access = cluster.access.clone();
    let http = api::http_client(&access, Some(FINAL_REQUEST_TIMEOUT))?;
    let urls = cluster.urls();
    say(format!(
        "cluster up ({}); {} faults scheduled over {:?}",
        urls.join(" "),
        schedule.steps.len(),
        schedule.duration()
    ));

    let clock = Clock::new();
    let recorder = Arc::new(HistoryRecorder::new());
    let monitor = Monitor::start(urls.clone(), clock, api::http_client(&access, Some(STATUS_TIMEOUT))?);
    let shape = WorkloadShape {
        pinned_clients_per_node: config.pinned_clients_per_node,
        floating_clients: config.floating_clients,
        keys: config.keys,
        rate_ops_per_second: config.rate_ops_per_second,
        seed: config.seed,
        shared_request_ids: config.shared_request_ids,
        config_changes: config.config_changes,
    };
    let mut workload = Workload::start(&urls, &shape, recorder.clone(), clock, &access).await?;
    tokio::time::sleep(schedule.warmup).await;

    // ---- faults ------------------------------------------------------------------------
    let mut faults = Vec::new();
    let mut skipped = Vec::new();
    let mut recovery_problems = Vec::new();
    let faulter = Faulter {
        namespaces: namespaces.as_deref(),
        proxies: proxies.as_ref(),
        work_dir: &work_dir,
        power_cuts: std::cell::Cell::new(0),
    };
    for step in &schedule.steps {
        if step.fault.needs_netns() && proxies.is_none() {
            skipped.push(format!("{} (needs network namespaces; this run is local)", step.fault));
            continue;
        }
        let primary = wait_for_primary(&monitor, clock).await;
        let target = match step.fault {
            Fault::Kill(t) | Fault::Pause(t) | Fault::Isolate(t) | Fault::DropOutgoing(t) | Fault::DropIncoming(t) => {
                Some(pick_target(t, primary, &mut rng))
            }
            _ => None,
        };
        if step.fault == Fault::PowerCut {
            // Every node on this machine writes back at the same instants when it runs as the
            // ack-before-fsync mutant; a cut just after one may find nothing acknowledged
            // since and the mutant escapes having lost nothing (1 run in 3 on a loaded
            // machine: 203 of 203 acknowledged writes present). Mid-period it has a second
            // of acknowledged writes unsynced. For correct nodes the moment is arbitrary.
            tokio::time::sleep(haven_store::log_store::until_writeback_midpoint(std::time::SystemTime::now())).await;
        }
        let injected_at = clock.elapsed();
        faulter.inject(&mut cluster, step.fault, target);
        say(format!(
            "{:>6.1?} inject: {}{}",
            injected_at,
            step.fault,
            target.map(|t| format!(" (node {})", t + 1)).unwrap_or_default()
        ));
        tokio::time::sleep(step.hold).await;
        if let Err(error) = faulter.heal(&mut cluster, step.fault, target).await {
            say(format!("heal failed: {error:#}"));
            recovery_problems.push(format!("after {}: {error:#}", step.fault));
        }
        let healed_at = clock.elapsed();
        // A fault meant for the primary proves failover only if it hit the primary.
        let expects_new_primary = step.fault.removes_primary() && (step.fault == Fault::PowerCut || primary.is_some());
        faults.push((
            FaultRecord {
                description: step.fault.to_string(),
                kind: step.fault.kind(),
                node: target.map(|t| t as u64 + 1),
                injected_at,
                healed_at: Some(healed_at),
                new_primary_after: None,
                expects_new_primary,
            },
            if step.fault == Fault::PowerCut { None } else { target },
        ));
        tokio::time::sleep(step.settle).await;
    }

    // ---- heal, recover, read the final state ---------------------------------------------
    let client_stats = workload.stop_clients().await;
    say(format!("{:>6.1?} clients stopped after {} operations; healing everything", clock.elapsed(), recorder.len()));
    faulter.heal_everything();
    if let Err(error) = cluster.revive_all().await {
        recovery_problems.push(format!("final restart: {error:#}"));
    }
    let stream_http = api::http_client(&access, None)?;
    let final_state = final_phase(&http, &stream_http, &urls, &recorder, clock, config.keys, &workload).await;
    if let Err(problem) = &final_state.recovered {
        recovery_problems.push(problem.clone());
    }
    let (more_stats, watcher_logs) = workload.finish().await;
    let samples = monitor.stop();
    say(format!("{:>6.1?} final state read; checking", clock.elapsed()));

    // ---- judge --------------------------------------------------------------------------
    let history = recorder.snapshot();
    let ops = count_ops(&history);
    let lin = {
        let history = history.clone();
        let budget = CheckBudget::steps(CHECK_STEPS_MAX).with_deadline(Instant::now() + CHECK_DEADLINE);
        tokio::task::spawn_blocking(move || check_linearizable(&history, budget)).await.context("checker crashed")?
    };
    let checker_timed_out = matches!(lin.result, LinResult::TimedOut { .. });
    let (lost_writes, set_passed, acknowledged_adds, set_text) = match &final_state.set {
        Ok((set, source)) => {
            let report = check_no_lost_writes(&history, workload::SET_PREFIX, set);
            (
                Some(report.lost.len()),
                Some(report.passed()),
                report.acknowledged,
                format!("{report} [final read: {source}]"),
            )
        }
        Err(problem) => (None, None, 0, format!("not checked: {problem}")),
    };
    let (watch_passed, watch_text) = match &final_state.committed {
        Ok(committed) => {
            let report = check_watchers(committed, &watcher_logs);
            (Some(report.passed()), report.to_string())
        }
        Err(problem) => (None, format!("not checked: {problem}")),
    };
    // One primary at a time, from the leaders' own stamps on what they acknowledged.
    let primaries = check_primaries(&client_stats.acks, leader_rule());
    let dual_primaries: Vec<String> = primaries.dual_primaries().map(ToString::to_string).collect();
    let mut stamp_problems: Vec<String> = primaries.stamp_problems().map(ToString::to_string).collect();
    if client_stats.unstamped > 0 {
        stamp_problems.push(format!("{} committed writes answered without a Haven-Ack stamp", client_stats.unstamped));
    }
    if client_stats.malformed_stamps > 0 {
        stamp_problems.push(format!("{} Haven-Ack stamps did not parse", client_stats.malformed_stamps));
    }
    // The status monitor's view, for information: polled claims prove nothing either way.
    let monitor_overlaps: Vec<String> = monitor::dual_primaries(&samples).iter().map(ToString::to_string).collect();
    let mut slow_failovers = Vec::new();
    let faults: Vec<FaultRecord> = faults
        .into_iter()
        .map(|(mut record, old)| {
            if record.expects_new_primary {
                record.new_primary_after = monitor::new_primary_after(&samples, record.injected_at, old);
                match record.new_primary_after {
                    Some(after) if after <= NEW_PRIMARY_WITHIN => {}
                    Some(after) => {
                        slow_failovers.push(format!("{}: new primary after {after:.1?}", record.description))
                    }
                    None => slow_failovers.push(format!("{}: no new primary seen", record.description)),
                }
            }
            record
        })
        .collect();

    let mut report = HistoryReport {
        label: config.label.clone(),
        mode: config.mode,
        net,
        seed: config.seed,
        wall_time: wall.elapsed(),
        ops,
        faults,
        skipped_faults: skipped,
        linearizable: Some(lin.passed()),
        linearizability: lin.to_string(),
        checker_timed_out,
        acknowledged_adds,
        lost_writes,
        set_passed,
        set: set_text,
        watch_passed,
        watch: watch_text,
        convergence: final_state.convergence,
        acks: primaries.acks,
        primaries: primaries.to_string(),
        handovers: primaries.handovers(),
        dual_primaries,
        stamp_problems,
        monitor_overlaps,
        slow_failovers,
        recovery_failure: if recovery_problems.is_empty() { None } else { Some(recovery_problems.join("; ")) },
        unexpected_answers: client_stats.unexpected + more_stats.unexpected,
        reused_ids: client_stats.reused_ids + more_stats.reused_ids,
        config_changes: client_stats.config_changes + more_stats.config_changes,
        shared_request_ids: config.shared_request_ids,
        kept_in: None,
    };

    // Keep the evidence when a correct build failed, a mutant escaped, or when asked.
    let keep = config.keep_work_dir || report.passed() == config.mode.is_mutant();
    if keep {
        let _ = std::fs::write(work_dir.join("report.txt"), report.render());
        if let Ok(json) = history.to_json() {
            let _ = std::fs::write(work_dir.join("history.json"), json);
        }
        if let Ok(json) = serde_json::to_string(&client_stats.acks) {
            let _ = std::fs::write(work_dir.join("acks.json"), json);
        }
        let _ = std::fs::write(work_dir.join("node-log-tails.txt"), cluster.log_tails(60));
        if let Ok(json) = serde_json::to_string(&watcher_logs) {
            let _ = std::fs::write(work_dir.join("watchers.json"), json);
        }
        if let Ok(committed) = &final_state.committed {
            if let Ok(json) = serde_json::to_string(committed) {
                let _ = std::fs::write(work_dir.join("committed.json"), json);
            }
        }
        let lines: Vec<String> = samples.iter().map(|s| format!("{:?}", s)).collect();
        let _ = std::fs::write(work_dir.join("monitor.txt"), lines.join("\n"));
        report.kept_in = Some(work_dir.clone());
    }
    drop(cluster);
    drop(proxies);
    drop(namespaces);
    if keep {
        if let Some(temp) = temp {
            let _ = temp.keep();
        }
    }
    say(format!("done in {:.1?}", wall.elapsed()));
    Ok(report)
}

/// Carries out faults with whatever the network mode offers.
struct Faulter<'a> {
    namespaces: Option<&'a Namespaces>,
    proxies: Option<&'a LinkProxies>,
    /// Where the durable state each node restarts from after a power cut is copied
    /// (`power-cut-K/nI/`), as evidence when the history fails.
    work_dir: &'a std::path::Path,
    power_cuts: std::cell::Cell<u32>,
}

impl Faulter<'_> {
    fn others(node: usize) -> impl Iterator<Item = usize> {
        (0..NODES).filter(move |other| *other != node)
    }

    fn inject(&self, cluster: &mut Cluster, fault: Fault, target: Option<usize>) {
        let blocked = DirectionFaults { blocked: true, ..DirectionFaults::default() };
        match (fault, target) {
            (Fault::Kill(_), Some(node)) => cluster.kill(node),
            (Fault::Pause(_), Some(node)) => cluster.pause(node),
            (Fault::Isolate(_), Some(node)) => {
                if let Some(ns) = self.namespaces {
                    for other in Self::others(node) {
                        if let Err(error) = ns.set_link(node, other, false) {
                            eprintln!("[nemesis] cannot cut link {}-{}: {error:#}", node + 1, other + 1);
                        }
                    }
                }
            }
            (Fault::DropOutgoing(_), Some(node)) => {
                if let Some(proxies) = self.proxies {
                    Self::others(node).for_each(|other| proxies.set(node, other, blocked));
                }
            }
            (Fault::DropIncoming(_), Some(node)) => {
                if let Some(proxies) = self.proxies {
                    Self::others(node).for_each(|other| proxies.set(other, node, blocked));
                }
            }
            (Fault::Delay { ms }, _) => {
                if let Some(proxies) = self.proxies {
                    proxies.set_all(DirectionFaults { delay_ms: ms, ..DirectionFaults::default() });
                }
            }
            (Fault::Loss { per_mille }, _) => {
                if let Some(proxies) = self.proxies {
                    proxies.set_all(DirectionFaults { loss_per_mille: per_mille, ..DirectionFaults::default() });
                }
            }
            (Fault::PowerCut, _) => cluster.kill_all(),
            // A node fault without a node cannot happen (targets are always picked).
            (_, None) => {}
        }
    }

    async fn heal(&self, cluster: &mut Cluster, fault: Fault, target: Option<usize>) -> anyhow::Result<()> {
        match (fault, target) {
            (Fault::Kill(_), Some(node)) => cluster.restart(node).await,
            (Fault::Pause(_), Some(node)) => {
                cluster.resume(node);
                Ok(())
            }
            (Fault::Isolate(_), Some(node)) => match self.namespaces {
                Some(ns) => Self::others(node).try_for_each(|other| ns.set_link(node, other, true)),
                None => Ok(()),
            },
            (Fault::PowerCut, _) => {
                self.power_cuts.set(self.power_cuts.get() + 1);
                let evidence = self.work_dir.join(format!("power-cut-{}", self.power_cuts.get()));
                for node in 0..NODES {
                    cluster.copy_durable_state(node, &evidence.join(format!("n{}", node + 1)));
                }
                for node in 0..NODES {
                    cluster.restart(node).await?;
                }
                Ok(())
            }
            _ => {
                if let Some(proxies) = self.proxies {
                    proxies.heal();
                }
                Ok(())
            }
        }
    }

    /// Every link up, every proxy transparent.
    fn heal_everything(&self) {
        if let Some(proxies) = self.proxies {
            proxies.heal();
        }
        if let Some(ns) = self.namespaces {
            for a in 0..NODES {
                for b in a + 1..NODES {
                    if let Err(error) = ns.set_link(a, b, true) {
                        eprintln!("[nemesis] cannot restore link {}-{}: {error:#}", a + 1, b + 1);
                    }
                }
            }
        }
    }
}

/// The primary as the monitor sees it, waiting a little for one to appear.
async fn wait_for_primary(monitor: &Monitor, clock: Clock) -> Option<usize> {
    let deadline = tokio::time::Instant::now() + PRIMARY_LOOKUP_TIMEOUT;
    loop {
        if let Some(primary) = monitor.current_primary(clock.elapsed()) {
            return Some(primary);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(MONITOR_INTERVAL).await;
    }
}

fn pick_target(target: Target, primary: Option<usize>, rng: &mut impl Rng) -> usize {
    match (target, primary) {
        (Target::Leader, Some(primary)) => primary,
        (Target::Follower, Some(primary)) => {
            let others: Vec<usize> = (0..NODES).filter(|node| *node != primary).collect();
            others[rng.random_range(0..others.len())]
        }
        (_, None) => rng.random_range(0..NODES),
    }
}

/// What the harness read once the faults were healed.
struct FinalState {
    recovered: Result<usize, String>,
    /// The final read of the set, and where it came from.
    set: Result<(Vec<(String, String)>, String), String>,
    committed: Result<Vec<haven_check::WatchEvent>, String>,
    convergence: Result<String, String>,
}

/// Waits for a primary, reads every register and the set through it, checks that every
/// node holds the same state at the same applied index, and reads the committed log.
async fn final_phase(
    http: &reqwest::Client,
    stream_http: &reqwest::Client,
    urls: &[String],
    recorder: &HistoryRecorder,
    clock: Clock,
    keys: usize,
    workload: &Workload,
) -> FinalState {
    let primary = wait_for_primary_directly(http, urls).await;
    let Ok(primary) = primary else {
        let problem = primary.err().unwrap_or_default();
        // Still look for lost writes: with no primary, the most advanced node's own state
        // is the best evidence there is (and the run has failed anyway).
        let set = match most_advanced_node(http, urls).await {
            Some(node) => api::list_all(http, &urls[node], workload::SET_PREFIX, true, FINAL_REQUEST_TIMEOUT)
                .await
                .map(|items| (items, format!("node {}'s local state; there was no primary", node + 1))),
            None => Err(problem.clone()),
        };
        return FinalState {
            recovered: Err(problem.clone()),
            set,
            committed: Err(problem.clone()),
            convergence: Err(problem),
        };
    };
    let url = &urls[primary];

    // Final register reads, recorded like any client's: they make lost register writes visible.
    let mut stats = workload::ClientStats::default();
    for key in 0..keys {
        let key = format!("{}{key:02}", workload::KEY_PREFIX);
        for _ in 0..FINAL_ATTEMPTS {
            let mut op = Operation { client: workload::FINAL_READER, recorder, clock, http, url, stats: &mut stats };
            if op.read(&key).await.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    let mut set = Err("not read".to_string());
    for _ in 0..FINAL_ATTEMPTS {
        set = api::list_all(http, url, workload::SET_PREFIX, false, FINAL_REQUEST_TIMEOUT)
            .await
            .map(|items| (items, format!("linearizable listing on primary node {}", primary + 1)));
        if set.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    let (convergence, revision) = converge(http, urls).await;
    let committed = match revision {
        Some(revision) => {
            // Give the watchers the chance to be brought to the end before they are judged.
            let _ = cluster::wait_until(WATCH_CATCH_UP_TIMEOUT, "watchers to catch up", || async {
                workload.watcher_coverage().iter().all(|covered| *covered >= revision)
            })
            .await;
            workload::committed_log(stream_http, url, revision, CONVERGENCE_TIMEOUT).await
        }
        None => Err("the replicas never agreed on a revision".to_string()),
    };
    FinalState { recovered: Ok(primary), set, committed, convergence }
}

/// The answering node with the highest applied index.
async fn most_advanced_node(http: &reqwest::Client, urls: &[String]) -> Option<usize> {
    let mut best: Option<(u64, usize)> = None;
    for (node, url) in urls.iter().enumerate() {
        if let Some(applied) = api::status(http, url).await.and_then(|status| status["applied_index"].as_u64()) {
            if best.is_none_or(|(most, _)| applied > most) {
                best = Some((applied, node));
            }
        }
    }
    best.map(|(_, node)| node)
}

/// A node that is primary, found by asking every node (the monitor may be behind).
async fn wait_for_primary_directly(http: &reqwest::Client, urls: &[String]) -> Result<usize, String> {
    let deadline = tokio::time::Instant::now() + RECOVERY_TIMEOUT;
    loop {
        for (node, url) in urls.iter().enumerate() {
            if let Some(status) = api::status(http, url).await {
                if status["state"] == "leader" && status["leader_has_quorum"] == true {
                    return Ok(node);
                }
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("no primary within {RECOVERY_TIMEOUT:?} after the faults were healed"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until every node reports the same applied index twice in a row, then compares
/// their full local state. Returns the verdict and the cluster revision they agree on.
async fn converge(http: &reqwest::Client, urls: &[String]) -> (Result<String, String>, Option<u64>) {
    let applied = |http: &reqwest::Client| {
        let http = http.clone();
        let urls = urls.to_vec();
        async move {
            let mut views = Vec::new();
            for url in &urls {
                let status = api::status(&http, url).await?;
                views.push((status["applied_index"].as_u64()?, status["revision"].as_u64()?));
            }
            Some(views)
        }
    };
    let deadline = tokio::time::Instant::now() + CONVERGENCE_TIMEOUT;
    let mut previous: Option<Vec<(u64, u64)>> = None;
    let mut last_seen = String::from("no status from every node");
    loop {
        let views = applied(http).await;
        if let Some(views) = &views {
            last_seen = format!("applied index / revision per node: {views:?}");
            let same = views.windows(2).all(|pair| pair[0] == pair[1]);
            if same && previous.as_ref() == Some(views) {
                break;
            }
            // The same log position with different states, twice in a row: the replicas
            // diverged (no later entry can bring them together again).
            let same_index = views.windows(2).all(|pair| pair[0].0 == pair[1].0);
            if same_index && !same && previous.as_ref() == Some(views) {
                return (Err(format!("diverged: the same applied index with different revisions; {last_seen}")), None);
            }
        }
        previous = views;
        if tokio::time::Instant::now() >= deadline {
            return (Err(format!("no common applied index within {CONVERGENCE_TIMEOUT:?}; {last_seen}")), None);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let Some((index, revision)) = previous.as_ref().and_then(|views| views.first().copied()) else {
        return (Err("no status".into()), None);
    };
    let mut listings = Vec::new();
    for url in urls {
        match api::list_all(http, url, "", true, FINAL_REQUEST_TIMEOUT).await {
            Ok(items) => listings.push(items),
            Err(problem) => return (Err(problem), Some(revision)),
        }
    }
    // Nothing may have been applied while the listings were read, or they would not be
    // comparable.
    if applied(http).await.as_ref() != previous.as_ref() {
        return (Err("the applied index moved while the replicas were read".into()), Some(revision));
    }
    for (node, listing) in listings.iter().enumerate().skip(1) {
        if *listing != listings[0] {
            let difference = first_difference(&listings[0], listing);
            return (
                Err(format!("node 1 and node {} differ at applied index {index}: {difference}", node + 1)),
                Some(revision),
            );
        }
    }
    let summary = format!(
        "{} nodes identical at applied index {index}, revision {revision}: {} keys, digest {:016x}",
        urls.len(),
        listings[0].len(),
        digest(&listings[0])
    );
    (Ok(summary), Some(revision))
}

fn first_difference(a: &[(String, String)], b: &[(String, String)]) -> String {
    for (x, y) in a.iter().zip(b) {
        if x != y {
            return format!("{}={:?} vs {}={:?}", x.0, x.1, y.0, y.1);
        }
    }
    format!("{} keys vs {} keys", a.len(), b.len())
}

/// FNV-1a over the listing, for the report (equality is checked on the listings themselves).
fn digest(items: &[(String, String)]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for (key, value) in items {
        for byte in key.bytes().chain([0]).chain(value.bytes()).chain([0]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

fn count_ops(history: &History) -> OpCounts {
    let mut counts = OpCounts::default();
    for op in &history.ops {
        counts.total += 1;
        match &op.kind {
            OpKind::Read => counts.reads += 1,
            OpKind::Write { .. } if op.key.starts_with(workload::SET_PREFIX) => counts.set_adds += 1,
            OpKind::Write { .. } => counts.writes += 1,
            OpKind::Cas { .. } => counts.cas += 1,
            OpKind::Delete => counts.deletes += 1,
        }
        match op.outcome {
            Outcome::Ok(_) => counts.ok += 1,
            Outcome::Failed(_) => counts.failed += 1,
            Outcome::Unknown => counts.unknown += 1,
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Haven runs openraft's default leader ids, `(term, node)`: the primaries checker must
    /// not count two leaders in turn within one term as two primaries.
    #[test]
    fn the_leader_rule_follows_the_raft_type_config() {
        assert_eq!(leader_rule(), LeaderRule::TermAndNode);
    }
}
