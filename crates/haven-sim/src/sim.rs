//! One simulated run: a cluster of whole openraft nodes, clients, a fault schedule and the
//! invariant checks, all driven by one seed.
//!
//! ```text
//!   seed ─┬─ openraft's RNG tree (election timeouts)        ┐
//!         ├─ driver stream: profile, cluster size, faults   │ one current-thread tokio
//!         ├─ network stream: delays, losses                 │ runtime, clock paused:
//!         ├─ one stream per disk: fsync latencies           │ time jumps to the next
//!         └─ one stream per client: keys, operations        ┘ timer when all are idle
//!
//!   safety phase (faults)   every 10 ms: observe every node's metrics (leader ids),
//!                           heal faults that are due, maybe inject one more; acks and
//!                           applies are checked as they happen
//!   liveness phase          heal everything, restart the dead; a leader must commit a
//!                           write within 10 s and every member must apply it
//!   judgement               final reads; the history must be linearizable
//! ```

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use haven_check::check_linearizable;
use haven_check::CheckBudget;
use haven_check::HistoryRecorder;
use haven_check::LinResult;
use haven_check::OpKind;
use haven_check::Outcome;
use haven_core::config::Timing;
use haven_core::ha::detection::Profile;
use haven_core::kv::Command;
use haven_core::limits::APPEND_ENTRIES_MAX;
use openraft::async_runtime::WatchReceiver;
use openraft::ChangeMembers;
use openraft::ServerState;

use crate::invariants::Checker;
use crate::invariants::CheckerStats;
use crate::invariants::Violation;
use crate::network::Endpoint;
use crate::network::LinkQuality;
use crate::network::Net;
use crate::network::NetStats;
use crate::network::SimNetworkFactory;
use crate::network::BASE_DELAY_US_MAX;
use crate::network::BASE_DELAY_US_MIN;
use crate::rng::SimRng;
use crate::runtime::NodeClock;
use crate::runtime::SimRuntime;
use crate::runtime::RATE_PPM_EXACT;
use crate::storage::DiskCell;
use crate::storage::LogStore;
use crate::storage::StateMachine;
use crate::storage::SyncMode;
use crate::trace;
use crate::trace::Trace;
use crate::types::NodeId;
use crate::types::Raft;
use crate::workload;
use crate::workload::Clients;
use crate::workload::CLIENTS;
use crate::workload::FINAL_READ_CLIENT;
use crate::workload::KEYS;
use crate::workload::LIVENESS_CLIENT;

/// How often the driver wakes to check invariants and schedule faults: a fifth of the
/// fastest heartbeat (50 ms), so no leadership is shorter than several observations.
pub const STEP: Duration = Duration::from_millis(10);
/// Simulated time with faults, by default: dozens of faults and a few thousand operations.
pub const SAFETY_MS_DEFAULT: u64 = 20_000;
/// After healing, a leader must commit a write within this (the issue's bound). Several
/// times (three at least, checked below) the slowest profile's expected detection, so only
/// a stuck cluster misses it.
pub const LIVENESS_BOUND: Duration = Duration::from_secs(10);
/// After that write commits, every member must apply it within this: 10 s, plus one
/// snapshot timeout, because a snapshot lost in a partition is resent only after Haven's
/// 30 s snapshot timeout (see "Findings" in docs/simulation.md).
pub const CONVERGENCE_BOUND: Duration = Duration::from_millis(10_000 + SNAPSHOT_TIMEOUT_MS);
/// The detection profiles simulated. `wan` and `seed` detect in 8 s and minutes: the
/// liveness bound could not hold, and the protocol is the same, only slower.
const PROFILES: [Profile; 2] = [Profile::Fast, Profile::Lan];
const _: () = assert!(LIVENESS_BOUND.as_millis() as u64 >= 3 * LAN_DETECTION_MS);
/// `Profile::Lan.timing().expected_detection_ms()` (1 s × 1.5 + 1.25 s + 0.1 s), checked
/// in a test: a const fn of haven-core cannot be called here.
const LAN_DETECTION_MS: u64 = 2_850;

/// A new fault every 700 ms on average, or every expected failover time of the profile if
/// that is longer: faults overlap, and the cluster still has time to recover between them.
const FAULT_MEAN_INTERVAL_MS: u64 = 700;
/// Faults active at once, at most: more would keep the cluster down most of the time.
const ACTIVE_FAULTS_MAX: usize = 3;
/// Swarm testing: each seed enables each fault kind with this chance, so some seeds hammer
/// a few kinds and find what a uniform mix dilutes.
const FAULT_KIND_ENABLED_PERCENT: u64 = 70;
/// Initial voters: 3, or 5 in this share of seeds; two spare nodes can join as learners.
const FIVE_VOTERS_PERCENT: u64 = 30;
const SPARE_NODES: u64 = 2;
/// Membership changes keep 3 to 5 voters: a cluster still tolerates a fault while changing.
const VOTERS_MIN: usize = 3;
const VOTERS_MAX: usize = 5;
/// A snapshot every 64 entries (Haven's default is 10,000): snapshots, log purges and
/// snapshot installs on lagging or new nodes happen in every run.
const SNAPSHOT_EVERY_ENTRIES: u64 = 64;
const SNAPSHOT_LOG_KEPT_ENTRIES: u64 = 16;
/// haven-net's `SNAPSHOT_CHUNK_TIMEOUT` (30 s), as `haven-server` configures it.
const SNAPSHOT_TIMEOUT_MS: u64 = 30_000;
/// Clock drift: up to ±10 %, a thousand times worse than real quartz (±100 ppm), so timing
/// assumptions are stressed. Raft's safety must not depend on clocks at all.
const DRIFT_PPM_MIN: u64 = 10_000;
const DRIFT_PPM_MAX: u64 = 100_000;
/// Slow links: 20-250 ms one way (an overloaded WAN), as the nemesis's delay fault.
const SLOW_DELAY_US_MIN: u64 = 20_000;
const SLOW_DELAY_US_MAX: u64 = 250_000;
/// Lossy links: 2-30 % of messages lost.
const LOSS_PPM_MIN: u64 = 20_000;
const LOSS_PPM_MAX: u64 = 300_000;
/// How long a node may take to start from its disk; only a hang takes longer.
const START_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a node's shutdown may take after its disk crashed; it is abandoned after.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a membership change or switchover may run before the driver stops waiting.
const MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the driver waits for clients to finish their last operations: one operation
/// with all its redirects, plus think time.
const CLIENT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Linearizability search budget: deterministic (steps, not seconds); a few seconds of
/// search at most for the histories simulated here.
const LINEARIZABILITY_STEPS_MAX: u64 = 20_000_000;
/// The leader is the target of a crash or pause this often; otherwise any running node.
const LEADER_TARGET_PERCENT: u64 = 40;
/// In a mutant run, this share of faults is the mutant's trigger (as the nemesis runs each
/// mutant with the schedule that exposes it), so a short run is enough to flag it.
const TRIGGER_PERCENT: u64 = 50;

/// A deliberately broken build, to prove the checks catch what they claim to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mutant {
    /// The correct system.
    None,
    /// The disk reports writes durable when they are only queued (Haven's
    /// `crash-sim-ack-before-fsync`): a power cut then loses acknowledged writes.
    AckBeforeFsync,
    /// The network answers "success" for append-entries it lost: an isolated leader
    /// commits alone, and two primaries acknowledge different writes at one index.
    ForgedAppendAcks,
    /// Reads skip the read barrier (Haven's `stale-reads`): a deposed or lagging node
    /// serves old values.
    StaleReads,
    /// openraft's default `enable_leader_restore: true`: a restarted leader resumes its
    /// term without an election (the nemesis's log-fork finding, fixed in Haven).
    LeaderRestore,
}

impl Mutant {
    pub const ALL: [Mutant; 5] =
        [Mutant::None, Mutant::AckBeforeFsync, Mutant::ForgedAppendAcks, Mutant::StaleReads, Mutant::LeaderRestore];

    pub fn name(self) -> &'static str {
        match self {
            Mutant::None => "none",
            Mutant::AckBeforeFsync => "ack-before-fsync",
            Mutant::ForgedAppendAcks => "forged-append-acks",
            Mutant::StaleReads => "stale-reads",
            Mutant::LeaderRestore => "leader-restore",
        }
    }
}

impl std::str::FromStr for Mutant {
    type Err = String;
    fn from_str(name: &str) -> Result<Mutant, String> {
        Mutant::ALL.into_iter().find(|mutant| mutant.name() == name).ok_or_else(|| {
            let names: Vec<&str> = Mutant::ALL.iter().map(|mutant| mutant.name()).collect();
            format!("unknown mutant `{name}`; choose one of {}", names.join(", "))
        })
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct SimOptions {
    pub seed: u64,
    pub mutant: Mutant,
    /// Simulated milliseconds of the safety phase.
    pub safety_ms: u64,
    /// Print every trace line as it happens.
    pub print_trace: bool,
    /// Check that no leader id reigns twice (see `invariants`). Off only to let a run go on
    /// to the damage a restored reign does (the `leader-restore` mutant's log fork).
    pub reign_check: bool,
}

impl SimOptions {
    pub fn new(seed: u64) -> SimOptions {
        SimOptions { seed, mutant: Mutant::None, safety_ms: SAFETY_MS_DEFAULT, print_trace: false, reign_check: true }
    }

    /// The command that reruns exactly this run.
    pub fn reproduce_command(&self) -> String {
        let mut command = format!("cargo run --release -p haven-sim -- --seed {}", self.seed);
        if self.mutant != Mutant::None {
            command.push_str(&format!(" --mutant {}", self.mutant.name()));
        }
        if self.safety_ms != SAFETY_MS_DEFAULT {
            command.push_str(&format!(" --safety-ms {}", self.safety_ms));
        }
        if !self.reign_check {
            command.push_str(" --no-reign-check");
        }
        command
    }
}

/// The kinds of fault, as counted in reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    IsolateLeader,
    IsolateMinority,
    MajoritiesRing,
    OneWay,
    Delay,
    Loss,
    Crash,
    PowerCut,
    Pause,
    ClockDrift,
    AddLearner,
    Promote,
    RemoveVoter,
    Switchover,
}

impl FaultKind {
    pub const ALL: [FaultKind; 14] = [
        FaultKind::IsolateLeader,
        FaultKind::IsolateMinority,
        FaultKind::MajoritiesRing,
        FaultKind::OneWay,
        FaultKind::Delay,
        FaultKind::Loss,
        FaultKind::Crash,
        FaultKind::PowerCut,
        FaultKind::Pause,
        FaultKind::ClockDrift,
        FaultKind::AddLearner,
        FaultKind::Promote,
        FaultKind::RemoveVoter,
        FaultKind::Switchover,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::IsolateLeader => "isolate-leader",
            FaultKind::IsolateMinority => "isolate-minority",
            FaultKind::MajoritiesRing => "majorities-ring",
            FaultKind::OneWay => "one-way",
            FaultKind::Delay => "delay",
            FaultKind::Loss => "loss",
            FaultKind::Crash => "crash",
            FaultKind::PowerCut => "power-cut",
            FaultKind::Pause => "pause",
            FaultKind::ClockDrift => "clock-drift",
            FaultKind::AddLearner => "add-learner",
            FaultKind::Promote => "promote",
            FaultKind::RemoveVoter => "remove-voter",
            FaultKind::Switchover => "switchover",
        }
    }

    /// How long the fault lasts before it heals, in simulated ms (membership changes and
    /// switchovers are one-off actions).
    fn duration_ms(self) -> (u64, u64) {
        match self {
            FaultKind::IsolateLeader | FaultKind::IsolateMinority | FaultKind::MajoritiesRing => (300, 3_000),
            FaultKind::OneWay => (300, 3_000),
            FaultKind::Delay | FaultKind::Loss => (500, 4_000),
            FaultKind::Crash => (100, 3_000),
            FaultKind::PowerCut => (100, 2_000),
            FaultKind::Pause => (200, 3_000),
            FaultKind::ClockDrift => (1_000, 6_000),
            FaultKind::AddLearner | FaultKind::Promote | FaultKind::RemoveVoter | FaultKind::Switchover => (0, 0),
        }
    }
}

/// Operation counts from the history.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpStats {
    pub reads: u64,
    pub writes: u64,
    pub cas: u64,
    pub deletes: u64,
    pub ok: u64,
    pub failed: u64,
    pub unknown: u64,
}

/// What one run found.
#[derive(Debug, Clone)]
pub struct SeedReport {
    pub options: SimOptions,
    pub profile: &'static str,
    pub initial_voters: u64,
    /// Hash of the whole event trace: equal for two runs of one seed.
    pub trace_hash: u64,
    pub trace_events: u64,
    pub steps: u64,
    pub simulated_ms: u64,
    pub faults: BTreeMap<&'static str, u64>,
    pub ops: OpStats,
    pub net: NetStats,
    pub checker: CheckerStats,
    pub flushes: u64,
    pub ops_lost_in_crashes: u64,
    /// Time from healing to the first committed write.
    pub recovery_ms: Option<u64>,
    /// Time from that write to its application on every member.
    pub convergence_ms: Option<u64>,
    pub linearizability: String,
    pub violations: Vec<Violation>,
    /// The last trace lines, for a failed run.
    pub trace_tail: Vec<String>,
}

impl SeedReport {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    /// One line: seed, verdict, what ran.
    pub fn summary_line(&self) -> String {
        let faults: u64 = self.faults.values().sum();
        format!(
            "seed {} [{}] {}: {} voters, {} profile, {} steps, {} faults, {} ops ({} ok, {} unknown), {} acks, \
             recovery {}, convergence {}, trace {:016x}",
            self.options.seed,
            self.options.mutant.name(),
            if self.passed() { "ok" } else { "VIOLATED" },
            self.initial_voters,
            self.profile,
            self.steps,
            faults,
            self.ops.reads + self.ops.writes + self.ops.cas + self.ops.deletes,
            self.ops.ok,
            self.ops.unknown,
            self.checker.acks,
            self.recovery_ms.map_or("none".to_string(), |ms| format!("{ms} ms")),
            self.convergence_ms.map_or("none".to_string(), |ms| format!("{ms} ms")),
            self.trace_hash,
        )
    }

    /// The full account of a failed run: violations, the last trace lines, how to rerun.
    pub fn failure_text(&self) -> String {
        let mut text = String::new();
        text.push_str(&format!("seed {} violated the invariants:\n", self.options.seed));
        for violation in &self.violations {
            text.push_str(&format!("  {violation}\n"));
        }
        text.push_str(&format!("linearizability: {}\n", self.linearizability));
        text.push_str("last trace lines:\n");
        for line in &self.trace_tail {
            text.push_str(&format!("  {line}\n"));
        }
        text.push_str(&format!("reproduce with: {}\n", self.options.reproduce_command()));
        text
    }
}

/// Runs one seed to the end and reports.
pub fn run_seed(options: &SimOptions) -> anyhow::Result<SeedReport> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build()?;
    let mut root = SimRng::new(options.seed);
    let openraft_seed = root.next_u64();
    let report = runtime.block_on(SimRuntime::seeded(openraft_seed, World::run(options.clone(), root)));
    Ok(report)
}

struct Running {
    raft: Raft,
    flusher: tokio::task::JoinHandle<()>,
    /// Counts the node's starts: a leader id seen again under another start reigned twice.
    start: u64,
}

struct SimNode {
    disk: Arc<DiskCell>,
    clock: Arc<NodeClock>,
    running: Option<Running>,
    starts: u64,
    /// Ever started (a member or joining).
    started: bool,
    /// Removed from the cluster and stopped; may join again later with a wiped disk.
    retired: bool,
}

enum Undo {
    Links(u64),
    Restart(Vec<NodeId>),
    Resume(NodeId),
    ClockRate(NodeId),
}

struct ActiveFault {
    kind: FaultKind,
    heal_at: tokio::time::Instant,
    undo: Undo,
}

/// A membership change or switchover running in the background.
struct MembershipOutcome {
    what: String,
    /// The node to retire once the change committed.
    removed: Option<NodeId>,
    ok: bool,
}

/// The cluster as the newest leader sees it.
#[derive(Debug, Clone, Default)]
struct View {
    leader: Option<NodeId>,
    term: u64,
    voters: Vec<NodeId>,
    learners: Vec<NodeId>,
}

struct World {
    options: SimOptions,
    rng: SimRng,
    disk_rng: SimRng,
    trace: Arc<Trace>,
    net: Arc<Net>,
    checker: Arc<Checker>,
    clients: Arc<Clients>,
    config: Arc<openraft::Config>,
    profile: Profile,
    initial_voters: u64,
    nodes: BTreeMap<NodeId, SimNode>,
    active: Vec<ActiveFault>,
    next_fault_id: u64,
    enabled: Vec<FaultKind>,
    /// The fault that exposes the mutant under test, if any.
    trigger: Option<FaultKind>,
    faults: BTreeMap<&'static str, u64>,
    membership_task: Option<tokio::task::JoinHandle<MembershipOutcome>>,
    view: View,
    observed: BTreeMap<NodeId, (ServerState, u64, Option<NodeId>)>,
    /// Node lifetimes whose Raft stopped by itself, already reported.
    stopped: BTreeSet<(NodeId, u64)>,
    steps: u64,
    client_tasks: Vec<tokio::task::JoinHandle<()>>,
    sync_mode: SyncMode,
    /// Time from healing to the first committed write, once the liveness phase found it.
    recovery: Option<Duration>,
    /// Time from that write to its application on every member.
    convergence: Option<Duration>,
}

/// Haven's openraft configuration (as `haven-server`'s `raft_config`), with the snapshot
/// interval shortened so snapshots happen in every run.
pub fn raft_config(timing: Timing, mutant: Mutant) -> anyhow::Result<openraft::Config> {
    let (election_min, election_max) = timing.election_timeout_ms();
    let config = openraft::Config {
        cluster_name: "haven-sim".into(),
        heartbeat_interval: timing.heartbeat_interval_ms(),
        election_timeout_min: election_min,
        election_timeout_max: election_max,
        install_snapshot_timeout: SNAPSHOT_TIMEOUT_MS,
        max_payload_entries: APPEND_ENTRIES_MAX,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(SNAPSHOT_EVERY_ENTRIES),
        max_in_snapshot_log_to_keep: SNAPSHOT_LOG_KEPT_ENTRIES,
        enable_pre_vote: Some(true),
        enable_leader_restore: Some(mutant == Mutant::LeaderRestore),
        ..Default::default()
    };
    Ok(config.validate()?)
}

impl World {
    async fn run(options: SimOptions, mut root: SimRng) -> SeedReport {
        let trace = Arc::new(Trace::new(options.print_trace));
        let mut rng = root.fork(1);
        let net_rng = root.fork(2);
        let disk_rng = root.fork(3);
        let mut client_rng = root.fork(4);
        let profile = *rng.pick(&PROFILES).unwrap_or(&Profile::Fast);
        let initial_voters = if rng.chance_percent(FIVE_VOTERS_PERCENT) { 5 } else { 3 };
        let mut enabled: Vec<FaultKind> =
            FaultKind::ALL.into_iter().filter(|_| rng.chance_percent(FAULT_KIND_ENABLED_PERCENT)).collect();
        if enabled.is_empty() {
            enabled.push(FaultKind::Crash);
        }
        // Each mutant needs its trigger among the faults, or the run proves nothing.
        let trigger = match options.mutant {
            Mutant::None => None,
            Mutant::AckBeforeFsync => Some(FaultKind::PowerCut),
            Mutant::ForgedAppendAcks | Mutant::StaleReads => Some(FaultKind::IsolateLeader),
            Mutant::LeaderRestore => Some(FaultKind::Crash),
        };
        if let Some(trigger) = trigger {
            if !enabled.contains(&trigger) {
                enabled.push(trigger);
            }
        }
        let config = match raft_config(profile.timing(), options.mutant) {
            Ok(config) => Arc::new(config),
            Err(error) => {
                let checker = Checker::new(trace.clone(), options.reign_check);
                checker.report(format!("invalid raft configuration: {error}"));
                return empty_report(&options, &trace, &checker, profile, initial_voters);
            }
        };
        let net = Net::new(net_rng, trace.clone(), options.mutant == Mutant::ForgedAppendAcks);
        let checker = Checker::new(trace.clone(), options.reign_check);
        let clients = Arc::new(Clients {
            net: net.clone(),
            recorder: Arc::new(HistoryRecorder::new()),
            checker: checker.clone(),
            trace: trace.clone(),
            targets: std::sync::Mutex::new(Vec::new()),
            stop: std::sync::atomic::AtomicBool::new(false),
            stale_reads: options.mutant == Mutant::StaleReads,
            start: tokio::time::Instant::now(),
            shared_request_ids: workload::shares_request_ids(options.seed),
        });
        let sync_mode =
            if options.mutant == Mutant::AckBeforeFsync { SyncMode::AckBeforeFsync } else { SyncMode::Fsync };
        trace!(
            trace,
            "seed {} mutant {} profile {} voters {initial_voters} faults {:?}",
            options.seed,
            options.mutant.name(),
            profile.name(),
            enabled.iter().map(|kind| kind.name()).collect::<Vec<_>>()
        );
        let mut world = World {
            options,
            rng,
            disk_rng,
            trace,
            net,
            checker,
            clients,
            config,
            profile,
            initial_voters,
            nodes: BTreeMap::new(),
            active: Vec::new(),
            next_fault_id: 0,
            enabled,
            trigger,
            faults: BTreeMap::new(),
            membership_task: None,
            view: View::default(),
            observed: BTreeMap::new(),
            stopped: BTreeSet::new(),
            steps: 0,
            client_tasks: Vec::new(),
            sync_mode,
            recovery: None,
            convergence: None,
        };
        for id in 1..=initial_voters + SPARE_NODES {
            let disk = DiskCell::new(world.disk_rng.fork(id), sync_mode);
            world.nodes.insert(
                id,
                SimNode { disk, clock: NodeClock::new(), running: None, starts: 0, started: false, retired: false },
            );
        }
        for id in 1..=initial_voters {
            world.start_node(id).await;
        }
        world.initialize().await;
        for client in 0..CLIENTS {
            let rng = client_rng.fork(client);
            let clients = world.clients.clone();
            world.client_tasks.push(crate::runtime::spawn(workload::run_client(clients, client, rng)));
        }
        world.safety_phase().await;
        // A run that already failed stops there, like the VOPR: the first violation is
        // the one to debug, and the trace tail ends right at it.
        if world.checker.violations().is_empty() {
            world.liveness_phase().await;
        }
        world.finish().await
    }

    fn now_ms(&self) -> u64 {
        self.trace.now_us() / 1000
    }

    async fn initialize(&mut self) {
        let members: BTreeMap<NodeId, openraft::EmptyNode> =
            (1..=self.initial_voters).map(|id| (id, openraft::EmptyNode {})).collect();
        let Some(endpoint) = self.net.endpoint(1) else {
            self.checker.report("node 1 did not start".into());
            return;
        };
        if let Err(error) = endpoint.clock.scope(endpoint.raft.initialize(members)).await {
            self.checker.report(format!("initialize failed: {error}"));
        }
    }

    /// Starts (or restarts) a node on its disk, as `haven serve` does after a crash.
    async fn start_node(&mut self, id: NodeId) {
        let Some(node) = self.nodes.get_mut(&id) else { return };
        if node.running.is_some() {
            return;
        }
        node.starts += 1;
        node.started = true;
        node.retired = false;
        let start = node.starts;
        let disk = node.disk.clone();
        let clock = node.clock.clone();
        let incarnation = disk.incarnation();
        let state_machine = StateMachine::open(id, disk.clone(), self.checker.clone());
        let factory = SimNetworkFactory::new(self.net.clone(), id);
        // The disk first: starting may already wait for a write to be flushed.
        let flusher = crate::runtime::spawn(clock.scope(disk.clone().run_flusher(incarnation)));
        let log_store = LogStore::open(disk.clone());
        let created = tokio::time::timeout(
            START_TIMEOUT,
            clock.scope(Raft::new(id, self.config.clone(), factory, log_store, state_machine.clone())),
        )
        .await;
        let raft = match created {
            Ok(Ok(raft)) => raft,
            Ok(Err(fatal)) => {
                // A node must always come back from its own disk.
                self.checker.report(format!("node {id} cannot restart from its disk: {fatal}"));
                flusher.abort();
                return;
            }
            Err(_) => {
                self.checker.report(format!("node {id} did not start within {} s", START_TIMEOUT.as_secs()));
                flusher.abort();
                return;
            }
        };
        self.net.set_endpoint(id, Some(Endpoint { raft: raft.clone(), state_machine, clock }));
        if let Some(node) = self.nodes.get_mut(&id) {
            node.running = Some(Running { raft, flusher, start });
        }
        trace!(self.trace, "node {id} started (start {start}, disk incarnation {incarnation})");
        self.update_targets();
    }

    /// Power loss on one node: what it had not synced is gone.
    async fn crash_node(&mut self, id: NodeId) {
        let Some(node) = self.nodes.get_mut(&id) else { return };
        let Some(running) = node.running.take() else { return };
        self.net.set_endpoint(id, None);
        self.net.set_paused(id, false);
        node.disk.set_paused(false);
        let incarnation = node.disk.crash();
        running.flusher.abort();
        let clock = node.clock.clone();
        let _ = tokio::time::timeout(SHUTDOWN_TIMEOUT, clock.scope(running.raft.shutdown())).await;
        trace!(self.trace, "node {id} crashed (disk incarnation now {incarnation})");
    }

    fn update_targets(&self) {
        let targets: Vec<NodeId> =
            self.nodes.iter().filter(|(_, node)| node.started && !node.retired).map(|(id, _)| *id).collect();
        *self.clients.targets.lock().unwrap_or_else(|e| e.into_inner()) = targets;
    }

    fn running_nodes(&self) -> Vec<NodeId> {
        self.nodes.iter().filter(|(_, node)| node.running.is_some()).map(|(id, _)| *id).collect()
    }

    /// Members as the newest leader sees them, or every started node before any leader.
    fn members(&self) -> Vec<NodeId> {
        if self.view.voters.is_empty() {
            self.nodes.iter().filter(|(_, node)| node.started && !node.retired).map(|(id, _)| *id).collect()
        } else {
            let mut members: Vec<NodeId> = self.view.voters.iter().chain(&self.view.learners).copied().collect();
            members.sort_unstable();
            members
        }
    }

    /// Reads every running node's metrics: leader ids for the checker, the view, the trace.
    fn observe(&mut self) {
        let mut newest: Option<View> = None;
        for (id, node) in &self.nodes {
            let Some(running) = &node.running else { continue };
            let metrics = running.raft.metrics();
            let metrics = metrics.borrow_watched();
            let summary = (metrics.state, metrics.current_term, metrics.current_leader);
            if self.observed.get(id) != Some(&summary) {
                trace!(
                    self.trace,
                    "node {id} is {:?} in term {} (leader {:?}, applied {})",
                    metrics.state,
                    metrics.current_term,
                    metrics.current_leader,
                    metrics.last_applied.map_or("-".to_string(), |log_id| log_id.to_string())
                );
                self.observed.insert(*id, summary);
            }
            if let Err(fatal) = &metrics.running_state {
                // A running node whose Raft stopped on its own: a panic or a storage error
                // (a crash is not one: a crashed node is no longer running here).
                if !self.stopped.contains(&(*id, running.start)) {
                    self.stopped.insert((*id, running.start));
                    self.checker.report(format!("node {id}'s Raft stopped: {fatal}"));
                }
            }
            if metrics.state == ServerState::Leader {
                self.checker.observe_leader(*id, running.start, metrics.current_term);
                if newest.as_ref().is_none_or(|view| metrics.current_term > view.term) {
                    let membership = metrics.membership_config.membership();
                    newest = Some(View {
                        leader: Some(*id),
                        term: metrics.current_term,
                        voters: membership.voter_ids().collect(),
                        learners: membership.learner_ids().collect(),
                    });
                }
            }
        }
        match newest {
            Some(view) => self.view = view,
            None => self.view.leader = None,
        }
    }

    async fn safety_phase(&mut self) {
        let end = tokio::time::Instant::now() + Duration::from_millis(self.options.safety_ms);
        let interval_ms = FAULT_MEAN_INTERVAL_MS.max(self.profile.timing().expected_detection_ms());
        let fault_chance_ppm = STEP.as_millis() as u64 * 1_000_000 / interval_ms;
        while tokio::time::Instant::now() < end && self.checker.violations().is_empty() {
            tokio::time::sleep(STEP).await;
            self.steps += 1;
            self.observe();
            self.collect_membership_outcome().await;
            self.heal_due().await;
            if self.active.len() < ACTIVE_FAULTS_MAX && self.rng.chance_ppm(fault_chance_ppm) {
                self.inject().await;
            }
        }
    }

    async fn heal_due(&mut self) {
        let now = tokio::time::Instant::now();
        let mut index = 0;
        while index < self.active.len() {
            if self.active[index].heal_at <= now {
                let fault = self.active.remove(index);
                self.heal(fault).await;
            } else {
                index += 1;
            }
        }
    }

    async fn heal(&mut self, fault: ActiveFault) {
        trace!(self.trace, "heal {}", fault.kind.name());
        match fault.undo {
            Undo::Links(id) => self.net.heal(id),
            Undo::Restart(nodes) => {
                for id in nodes {
                    let retired = self.nodes.get(&id).is_none_or(|node| node.retired);
                    if !retired {
                        self.start_node(id).await;
                    }
                }
            }
            Undo::Resume(id) => {
                self.net.set_paused(id, false);
                if let Some(node) = self.nodes.get(&id) {
                    node.disk.set_paused(false);
                }
            }
            Undo::ClockRate(id) => {
                if let Some(node) = self.nodes.get(&id) {
                    node.clock.set_rate_ppm(RATE_PPM_EXACT);
                }
            }
        }
    }

    /// A running node: the leader with [`LEADER_TARGET_PERCENT`], else any.
    fn pick_target(&mut self) -> Option<NodeId> {
        let running = self.running_nodes();
        if let Some(leader) = self.view.leader {
            if running.contains(&leader) && self.rng.chance_percent(LEADER_TARGET_PERCENT) {
                return Some(leader);
            }
        }
        self.rng.pick(&running).copied()
    }

    /// Both directions of every link between `group` and the other started nodes.
    fn links_around(&self, group: &[NodeId]) -> BTreeSet<(NodeId, NodeId)> {
        let mut links = BTreeSet::new();
        for (other, node) in &self.nodes {
            if !node.started || group.contains(other) {
                continue;
            }
            for inside in group {
                links.insert((*inside, *other));
                links.insert((*other, *inside));
            }
        }
        links
    }

    async fn inject(&mut self) {
        let kind = match self.trigger {
            Some(trigger) if self.rng.chance_percent(TRIGGER_PERCENT) => trigger,
            _ => match self.rng.pick(&self.enabled).copied() {
                Some(kind) => kind,
                None => return,
            },
        };
        let fault_id = self.next_fault_id;
        self.next_fault_id += 1;
        let undo = match kind {
            FaultKind::IsolateLeader => {
                let Some(target) = self.view.leader.or_else(|| self.rng.pick(&self.running_nodes()).copied()) else {
                    return;
                };
                self.net.cut(fault_id, self.links_around(&[target]));
                trace!(self.trace, "fault {}: node {target} isolated", kind.name());
                Some(Undo::Links(fault_id))
            }
            FaultKind::IsolateMinority => {
                let mut members = self.members();
                self.rng.shuffle(&mut members);
                let size = self.rng.range(1, (members.len() as u64).saturating_sub(1) / 2) as usize;
                let minority: Vec<NodeId> = members.into_iter().take(size.max(1)).collect();
                self.net.cut(fault_id, self.links_around(&minority));
                trace!(self.trace, "fault {}: {minority:?} cut from the rest", kind.name());
                Some(Undo::Links(fault_id))
            }
            FaultKind::MajoritiesRing => {
                let mut ring = self.members();
                self.rng.shuffle(&mut ring);
                let n = ring.len();
                let mut links = BTreeSet::new();
                for i in 0..n {
                    for j in 0..n {
                        let distance = (i + n - j) % n;
                        let distance = distance.min(n - distance);
                        // Neighbours only; with three nodes, a line (each end sees two).
                        let cut = distance > 1 || (n <= 3 && ((i == 0 && j == n - 1) || (j == 0 && i == n - 1)));
                        if i != j && cut {
                            links.insert((ring[i], ring[j]));
                        }
                    }
                }
                trace!(self.trace, "fault {}: ring {ring:?}", kind.name());
                self.net.cut(fault_id, links);
                Some(Undo::Links(fault_id))
            }
            FaultKind::OneWay => {
                let members = self.members();
                let Some(node) = self.rng.pick(&members).copied() else { return };
                let outbound = self.rng.chance_percent(50);
                let links: BTreeSet<(NodeId, NodeId)> = members
                    .iter()
                    .filter(|other| **other != node)
                    .map(|other| if outbound { (node, *other) } else { (*other, node) })
                    .collect();
                trace!(
                    self.trace,
                    "fault {}: node {node} {}",
                    kind.name(),
                    if outbound { "cannot send" } else { "cannot receive" }
                );
                self.net.cut(fault_id, links);
                Some(Undo::Links(fault_id))
            }
            FaultKind::Delay => {
                let delay_us_max = self.rng.range(SLOW_DELAY_US_MIN, SLOW_DELAY_US_MAX);
                let quality = LinkQuality { delay_us_min: SLOW_DELAY_US_MIN / 2, delay_us_max, loss_ppm: 0 };
                trace!(self.trace, "fault {}: links take up to {delay_us_max} us", kind.name());
                self.net.degrade(fault_id, quality);
                Some(Undo::Links(fault_id))
            }
            FaultKind::Loss => {
                let loss_ppm = self.rng.range(LOSS_PPM_MIN, LOSS_PPM_MAX);
                let quality =
                    LinkQuality { delay_us_min: BASE_DELAY_US_MIN, delay_us_max: BASE_DELAY_US_MAX, loss_ppm };
                trace!(self.trace, "fault {}: {loss_ppm} ppm of messages lost", kind.name());
                self.net.degrade(fault_id, quality);
                Some(Undo::Links(fault_id))
            }
            FaultKind::Crash => {
                let Some(target) = self.pick_target() else { return };
                trace!(self.trace, "fault {}: node {target}", kind.name());
                self.crash_node(target).await;
                Some(Undo::Restart(vec![target]))
            }
            FaultKind::PowerCut => {
                let mut victims = self.running_nodes();
                if self.rng.chance_percent(50) {
                    // A majority of the members rather than every node.
                    let mut members = self.members();
                    self.rng.shuffle(&mut members);
                    members.truncate(members.len() / 2 + 1);
                    victims.retain(|id| members.contains(id));
                }
                if victims.is_empty() {
                    return;
                }
                trace!(self.trace, "fault {}: nodes {victims:?}", kind.name());
                for id in &victims {
                    self.crash_node(*id).await;
                }
                Some(Undo::Restart(victims))
            }
            FaultKind::Pause => {
                let Some(target) = self.pick_target() else { return };
                if self.net.is_paused(target) {
                    return;
                }
                trace!(self.trace, "fault {}: node {target}", kind.name());
                self.net.set_paused(target, true);
                if let Some(node) = self.nodes.get(&target) {
                    node.disk.set_paused(true);
                }
                Some(Undo::Resume(target))
            }
            FaultKind::ClockDrift => {
                let running = self.running_nodes();
                let Some(target) = self.rng.pick(&running).copied() else { return };
                let drift = self.rng.range(DRIFT_PPM_MIN, DRIFT_PPM_MAX);
                let rate = if self.rng.chance_percent(50) { RATE_PPM_EXACT + drift } else { RATE_PPM_EXACT - drift };
                trace!(self.trace, "fault {}: node {target} clock at {rate} ppm", kind.name());
                if let Some(node) = self.nodes.get(&target) {
                    node.clock.set_rate_ppm(rate);
                }
                Some(Undo::ClockRate(target))
            }
            FaultKind::AddLearner | FaultKind::Promote | FaultKind::RemoveVoter | FaultKind::Switchover => {
                if !self.start_membership_change(kind).await {
                    return;
                }
                None
            }
        };
        *self.faults.entry(kind.name()).or_default() += 1;
        if let Some(undo) = undo {
            let (low, high) = kind.duration_ms();
            let heal_at = tokio::time::Instant::now() + Duration::from_millis(self.rng.range(low, high));
            self.active.push(ActiveFault { kind, heal_at, undo });
        }
    }

    /// Starts a membership change or switchover at the leader, in the background. False
    /// when it does not apply now (no leader, a change already running, nothing to change).
    async fn start_membership_change(&mut self, kind: FaultKind) -> bool {
        if self.membership_task.is_some() {
            return false;
        }
        let Some(leader) = self.view.leader else { return false };
        let Some(endpoint) = self.net.endpoint(leader) else { return false };
        let voters = self.view.voters.clone();
        let learners = self.view.learners.clone();
        let raft = endpoint.raft.clone();
        let clock = endpoint.clock.clone();
        let task = match kind {
            FaultKind::AddLearner => {
                let candidates: Vec<NodeId> = self
                    .nodes
                    .iter()
                    .filter(|(id, node)| {
                        (!node.started || node.retired) && !voters.contains(id) && !learners.contains(id)
                    })
                    .map(|(id, _)| *id)
                    .collect();
                let Some(id) = self.rng.pick(&candidates).copied() else { return false };
                self.prepare_fresh_node(id).await;
                self.start_node(id).await;
                let what = format!("add learner {id}");
                crate::runtime::spawn(clock.scope(async move {
                    let result =
                        tokio::time::timeout(MEMBERSHIP_TIMEOUT, raft.add_learner(id, openraft::EmptyNode {}, false))
                            .await;
                    MembershipOutcome { what, removed: None, ok: matches!(result, Ok(Ok(_))) }
                }))
            }
            FaultKind::Promote => {
                if voters.len() >= VOTERS_MAX {
                    return false;
                }
                let Some(id) = self.rng.pick(&learners).copied() else { return false };
                let what = format!("promote {id}");
                crate::runtime::spawn(clock.scope(async move {
                    let change = ChangeMembers::AddVoterIds(BTreeSet::from([id]));
                    let result = tokio::time::timeout(MEMBERSHIP_TIMEOUT, raft.change_membership(change, false)).await;
                    MembershipOutcome { what, removed: None, ok: matches!(result, Ok(Ok(_))) }
                }))
            }
            FaultKind::RemoveVoter => {
                if voters.len() <= VOTERS_MIN {
                    return false;
                }
                let Some(id) = self.rng.pick(&voters).copied() else { return false };
                let what = format!("remove voter {id}");
                crate::runtime::spawn(clock.scope(async move {
                    let change = ChangeMembers::RemoveVoters(BTreeSet::from([id]));
                    let result = tokio::time::timeout(MEMBERSHIP_TIMEOUT, raft.change_membership(change, false)).await;
                    let ok = matches!(result, Ok(Ok(_)));
                    MembershipOutcome { what, removed: ok.then_some(id), ok }
                }))
            }
            FaultKind::Switchover => {
                let others: Vec<NodeId> = voters.iter().filter(|id| **id != leader).copied().collect();
                let Some(to) = self.rng.pick(&others).copied() else { return false };
                let what = format!("switchover {leader} -> {to}");
                crate::runtime::spawn(clock.scope(async move {
                    let result = tokio::time::timeout(MEMBERSHIP_TIMEOUT, raft.trigger().transfer_leader(to)).await;
                    MembershipOutcome { what, removed: None, ok: matches!(result, Ok(Ok(_))) }
                }))
            }
            _ => return false,
        };
        trace!(self.trace, "fault {}: started at leader {leader}", kind.name());
        self.membership_task = Some(task);
        true
    }

    /// A node that joins (again) starts from a wiped disk, as Haven requires of a node
    /// that was removed (its old incarnation is refused).
    async fn prepare_fresh_node(&mut self, id: NodeId) {
        self.crash_node(id).await;
        let disk = DiskCell::new(self.disk_rng.fork(id), self.sync_mode);
        if let Some(node) = self.nodes.get_mut(&id) {
            node.disk = disk;
        }
    }

    async fn collect_membership_outcome(&mut self) {
        let finished = self.membership_task.as_ref().is_some_and(|task| task.is_finished());
        if !finished {
            return;
        }
        let Some(task) = self.membership_task.take() else { return };
        let result = task.await;
        self.process_membership_outcome(result).await;
    }

    async fn process_membership_outcome(&mut self, result: Result<MembershipOutcome, tokio::task::JoinError>) {
        match result {
            Ok(outcome) => {
                trace!(self.trace, "{}: {}", outcome.what, if outcome.ok { "done" } else { "failed" });
                if let Some(id) = outcome.removed {
                    self.crash_node(id).await;
                    if let Some(node) = self.nodes.get_mut(&id) {
                        node.retired = true;
                    }
                    self.update_targets();
                }
            }
            Err(error) => self.checker.report(format!("membership task failed: {error}")),
        }
    }

    async fn liveness_phase(&mut self) {
        trace!(self.trace, "liveness phase: healing everything");
        // Let a running membership change finish first, so its outcome is known.
        if let Some(mut task) = self.membership_task.take() {
            match tokio::time::timeout(MEMBERSHIP_TIMEOUT, &mut task).await {
                Ok(result) => self.process_membership_outcome(result).await,
                Err(_) => task.abort(),
            }
        }
        for fault in std::mem::take(&mut self.active) {
            self.heal(fault).await;
        }
        self.net.heal_all();
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            let (started, retired) = self.nodes.get(&id).map_or((false, true), |node| (node.started, node.retired));
            if started && !retired {
                self.start_node(id).await;
            }
        }
        // Clients finish their last operations; the liveness check writes on its own.
        self.clients.stop.store(true, Ordering::Relaxed);
        for task in std::mem::take(&mut self.client_tasks) {
            if tokio::time::timeout(CLIENT_DRAIN_TIMEOUT, task).await.is_err() {
                trace!(self.trace, "a client did not finish in time");
            }
        }

        let healed = tokio::time::Instant::now();
        let mut committed = None;
        let mut attempt = 0;
        while healed.elapsed() < LIVENESS_BOUND {
            tokio::time::sleep(STEP * 5).await;
            self.observe();
            let Some(leader) = self.view.leader else { continue };
            attempt += 1;
            let value = format!("liveness-{attempt}");
            let command = Command::Put { key: KEYS[0].into(), value: value.clone().into_bytes(), prev_revision: None };
            let request = workload::request(value.clone(), command, self.now_ms());
            let kind = OpKind::Write { value };
            if let Some(log_id) = self.clients.recorded_write(LIVENESS_CLIENT, leader, KEYS[0], kind, request).await {
                committed = Some((log_id, healed.elapsed()));
                break;
            }
        }
        let Some((log_id, recovery)) = committed else {
            self.checker.report(format!(
                "liveness: no leader committed a write within {} s after every fault healed",
                LIVENESS_BOUND.as_secs()
            ));
            return;
        };
        trace!(self.trace, "liveness: write committed at {log_id} after {} ms", recovery.as_millis());
        self.recovery = Some(recovery);

        // Every member must apply it.
        let converge_start = tokio::time::Instant::now();
        loop {
            self.observe();
            let lagging: Vec<NodeId> = self
                .members()
                .into_iter()
                .filter(|id| {
                    self.nodes.get(id).and_then(|node| node.running.as_ref()).is_none_or(|running| {
                        running
                            .raft
                            .metrics()
                            .borrow_watched()
                            .last_applied
                            .is_none_or(|applied| applied.index < log_id.index)
                    })
                })
                .collect();
            if lagging.is_empty() {
                self.convergence = Some(converge_start.elapsed());
                break;
            }
            if converge_start.elapsed() >= CONVERGENCE_BOUND {
                self.checker.report(format!(
                    "liveness: members {lagging:?} did not apply {log_id} within {} s",
                    CONVERGENCE_BOUND.as_secs()
                ));
                break;
            }
            tokio::time::sleep(STEP * 5).await;
        }

        // One last linearizable read per key anchors the end of every key's history.
        if let Some(leader) = self.view.leader {
            for key in KEYS {
                let _ = self.clients.recorded_read(FINAL_READ_CLIENT, leader, key).await;
            }
        }
    }

    async fn finish(mut self) -> SeedReport {
        let history = self.clients.recorder.snapshot();
        let report = check_linearizable(&history, CheckBudget::steps(LINEARIZABILITY_STEPS_MAX));
        let linearizability = match &report.result {
            LinResult::Linearizable => {
                format!("linearizable ({} ops on {} keys)", report.ops_checked, report.keys_checked)
            }
            LinResult::NotLinearizable(failure) => {
                self.checker.report(format!("history not linearizable on key {:?}", failure.key));
                format!("NOT linearizable: {}", failure.explanation)
            }
            LinResult::TimedOut { key, exhausted } => {
                self.checker.report(format!("linearizability check ran out of budget on key {key:?}"));
                format!("undecided: budget exhausted ({exhausted:?}) on key {key:?}")
            }
            LinResult::InvalidHistory { reason } => {
                self.checker.report(format!("the recorded history is malformed: {reason}"));
                format!("invalid history: {reason}")
            }
        };
        let mut ops = OpStats::default();
        for op in &history.ops {
            match op.kind {
                OpKind::Read => ops.reads += 1,
                OpKind::Write { .. } => ops.writes += 1,
                OpKind::Cas { .. } => ops.cas += 1,
                OpKind::Delete => ops.deletes += 1,
            }
            match op.outcome {
                Outcome::Ok(_) => ops.ok += 1,
                Outcome::Failed(_) => ops.failed += 1,
                Outcome::Unknown => ops.unknown += 1,
            }
        }
        let (mut flushes, mut lost) = (0, 0);
        for node in self.nodes.values() {
            let stats = node.disk.stats();
            flushes += stats.flushes;
            lost += stats.ops_lost_in_crashes;
        }
        // Stop every node so no task outlives the run's checks.
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            self.crash_node(id).await;
        }
        trace!(self.trace, "end: {linearizability}");
        SeedReport {
            options: self.options.clone(),
            profile: self.profile.name(),
            initial_voters: self.initial_voters,
            trace_hash: self.trace.hash(),
            trace_events: self.trace.events(),
            steps: self.steps,
            simulated_ms: self.now_ms(),
            faults: self.faults.clone(),
            ops,
            net: self.net.stats(),
            checker: self.checker.stats(),
            flushes,
            ops_lost_in_crashes: lost,
            recovery_ms: self.recovery.map(|recovery| recovery.as_millis() as u64),
            convergence_ms: self.convergence.map(|convergence| convergence.as_millis() as u64),
            linearizability,
            violations: self.checker.violations(),
            trace_tail: self.trace.tail(),
        }
    }
}

fn empty_report(
    options: &SimOptions,
    trace: &Trace,
    checker: &Checker,
    profile: Profile,
    initial_voters: u64,
) -> SeedReport {
    SeedReport {
        options: options.clone(),
        profile: profile.name(),
        initial_voters,
        trace_hash: trace.hash(),
        trace_events: trace.events(),
        steps: 0,
        simulated_ms: 0,
        faults: BTreeMap::new(),
        ops: OpStats::default(),
        net: NetStats::default(),
        checker: checker.stats(),
        flushes: 0,
        ops_lost_in_crashes: 0,
        recovery_ms: None,
        convergence_ms: None,
        linearizability: "not checked".into(),
        violations: checker.violations(),
        trace_tail: trace.tail(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_liveness_bound_covers_the_slowest_profile_simulated() {
        assert_eq!(Profile::Lan.timing().expected_detection_ms(), LAN_DETECTION_MS);
        for profile in PROFILES {
            assert!(profile.timing().expected_detection_ms() <= LAN_DETECTION_MS);
            raft_config(profile.timing(), Mutant::None).unwrap();
        }
    }

    #[test]
    fn mutant_names_round_trip() {
        for mutant in Mutant::ALL {
            assert_eq!(mutant.name().parse::<Mutant>(), Ok(mutant));
        }
        assert!("nope".parse::<Mutant>().unwrap_err().contains("ack-before-fsync"));
    }
}
