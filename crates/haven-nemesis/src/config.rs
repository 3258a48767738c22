//! What one history runs: the node build (correct or a mutant), the network mode, the
//! workload's shape and the fault schedule, plus every limit the harness keeps.

use std::path::PathBuf;
use std::time::Duration;

use rand::Rng;

// ---- limits and timings (each with why) ----------------------------------------------------

/// Nodes per cluster: the smallest replica set that survives a failure.
pub const NODES: usize = 3;

/// At most this many register keys, so each key has a long, contended history: anomalies
/// hide in overlaps between operations on one key.
pub const KEYS_MAX: usize = 16;

/// The operation mix, as weights. A CAS is preceded by a read of the same key (it needs the
/// key's current revision), so reads are `READ + CAS` of `TOTAL + CAS` operations.
pub const WEIGHT_READ: u32 = 40;
pub const WEIGHT_WRITE: u32 = 22;
pub const WEIGHT_CAS: u32 = 10;
pub const WEIGHT_DELETE: u32 = 3;
pub const WEIGHT_SET_ADD: u32 = 25;
pub const WEIGHT_TOTAL: u32 = WEIGHT_READ + WEIGHT_WRITE + WEIGHT_CAS + WEIGHT_DELETE + WEIGHT_SET_ADD;

/// The issue asks for at least 30% reads, so that stale reads have a chance to show.
const READ_PERCENT_MIN: u32 = 30;
const _: () = assert!((WEIGHT_READ + WEIGHT_CAS) * 100 >= READ_PERCENT_MIN * (WEIGHT_TOTAL + WEIGHT_CAS));

/// A client gives up on a request after this long and records "unknown". Longer than the
/// server's own write and read deadlines (5 s), so a healthy server always answers first, and
/// longer than a SIGSTOP pause, so a paused node's answer still arrives.
pub const CLIENT_REQUEST_TIMEOUT: Duration = Duration::from_secs(8);

/// Time to establish a TCP connection to a node. A live node on this machine accepts within
/// milliseconds; a killed one refuses at once.
pub const CLIENT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// A new primary must appear within this long after a fault takes the old one away (the
/// issue's bound; generous because CI machines are shared and builds may be debug builds).
pub const NEW_PRIMARY_WITHIN: Duration = Duration::from_secs(10);

/// Node processes get this long to write their address file after a start.
pub const NODE_START_TIMEOUT: Duration = Duration::from_secs(30);

/// A fresh cluster gets this long to elect node 1 and admit the other two as voters.
pub const CLUSTER_FORM_TIMEOUT: Duration = Duration::from_secs(60);

/// After the last fault is healed, the cluster gets this long to have a primary again.
pub const RECOVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// Every node must have applied the same index within this long once the cluster is healthy.
pub const CONVERGENCE_TIMEOUT: Duration = Duration::from_secs(30);

/// Watchers get this long to catch up with the final revision before they are judged.
pub const WATCH_CATCH_UP_TIMEOUT: Duration = Duration::from_secs(15);

/// How often the monitor asks every node for its status.
pub const MONITOR_INTERVAL: Duration = Duration::from_millis(100);

/// Time allowed for one status answer (a paused node simply does not answer). Generous,
/// because a request that gives up during its TLS handshake leaves no pooled connection
/// behind and the next one must start over: on a loaded machine with debug builds, a short
/// limit would never get an answer at all.
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(2);

/// A watch stream that delivers nothing for this long is reconnected (a live one sends a
/// progress line every second).
pub const WATCH_IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Pause between reconnect attempts of a watcher.
pub const WATCH_RECONNECT_PAUSE: Duration = Duration::from_millis(200);

/// SIGSTOP holds a node for this long: well over twice the longest election timeout of the
/// default timing (300 ms, or 600 ms with the older 6-ping default) plus the leader lease
/// openraft waits out first, so the others must elect a new leader while it is frozen.
pub const PAUSE_HOLD: Duration = Duration::from_millis(2000);

/// Budget of the linearizability search (steps over all keys of one history).
pub const CHECK_STEPS_MAX: u64 = 200_000_000;

/// Wall-clock limit of the linearizability search; running out fails the run.
pub const CHECK_DEADLINE: Duration = Duration::from_secs(120);

/// Most operations per second over all clients of a history.
pub const RATE_OPS_PER_SECOND_MAX: u32 = 2000;

/// Longest fault phase of one history.
pub const HISTORY_SECONDS_MAX: u64 = 3600;

/// Log entries between snapshots on the correct nodes (mutants keep Haven's default): at the run's 120-200 operations a second, a
/// snapshot every second or two, so every kill -9 and power cut restarts nodes from a
/// recent snapshot (with the configuration changes in it) and a node that fell behind
/// catches up by InstallSnapshot (issue 10). Haven's default, 10,000, would take none in
/// a CI history.
pub const SNAPSHOT_THRESHOLD: u64 = 200;

/// Pause between two configuration changes of a run, drawn in this range: several per CI
/// history, each between faults and snapshots, and rare enough that the fault schedule,
/// not the configuration, decides when leaders change.
pub const CONFIG_CHANGE_PAUSE_MS_MIN: u64 = 2_000;
pub const CONFIG_CHANGE_PAUSE_MS_MAX: u64 = 6_000;

// ---- what runs ------------------------------------------------------------------------------

/// Whether the clients of a history with `seed` all number their requests alike (odd
/// seeds, the CI history's among them): half the runs check that request ids belong to
/// their caller (issue 11).
pub fn shares_request_ids(seed: u64) -> bool {
    seed % 2 == 1
}

/// Which build of the node runs: the correct one (on crash-simulation storage) or a mutant
/// that a good test suite must flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NodeMode {
    /// Crash-simulation storage, correct node: must pass every check.
    CrashSim,
    /// Mutant: acknowledges log writes before they are fsynced. Must be flagged.
    AckBeforeFsync,
    /// Mutant: serves linearizable reads without a ReadIndex. Must be flagged.
    StaleReads,
}

impl NodeMode {
    pub const MUTANTS: [NodeMode; 2] = [NodeMode::AckBeforeFsync, NodeMode::StaleReads];

    /// The value of `haven serve --unsafe-test-mode`.
    pub fn flag(self) -> &'static str {
        match self {
            NodeMode::CrashSim => "crash-sim",
            NodeMode::AckBeforeFsync => "crash-sim-ack-before-fsync",
            NodeMode::StaleReads => "stale-reads",
        }
    }

    pub fn is_mutant(self) -> bool {
        self != NodeMode::CrashSim
    }

    pub fn parse(name: &str) -> Option<NodeMode> {
        [NodeMode::CrashSim, NodeMode::AckBeforeFsync, NodeMode::StaleReads].into_iter().find(|m| m.flag() == name)
    }
}

impl std::fmt::Display for NodeMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.flag())
    }
}

/// How the harness may fault the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetChoice {
    /// Network namespaces when running as root and `ip netns` works, else local.
    Auto,
    /// Network namespaces or fail.
    Netns,
    /// Everything on 127.0.0.1: no partitions, no link faults.
    Local,
}

/// The network mode that actually ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetMode {
    /// Each node in its own network namespace; full mesh of veth links cut with
    /// `ip link set down`; per-link TCP proxies for delay, loss and one-way faults; the
    /// harness reaches every node over a client link that is never cut.
    Netns,
    /// Every node on 127.0.0.1; only process faults (kill -9, SIGSTOP, power cut).
    Local,
}

impl std::fmt::Display for NetMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NetMode::Netns => "netns (veth mesh + link proxies)",
            NetMode::Local => "local (127.0.0.1, process faults only)",
        })
    }
}

/// Which node a fault hits, decided when it is injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The current primary (the interesting case: clients pinned to it keep talking to it).
    Leader,
    /// Some other node.
    Follower,
}

/// One fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `kill -9`, then restart after the hold.
    Kill(Target),
    /// SIGSTOP, then SIGCONT after the hold.
    Pause(Target),
    /// Cut every link between the target and the other nodes (clients still reach it).
    Isolate(Target),
    /// Everything the target sends to the other nodes is dropped; it still hears them.
    DropOutgoing(Target),
    /// Everything the other nodes send to the target is dropped; it can still send.
    DropIncoming(Target),
    /// Every peer link delays each chunk by this many milliseconds.
    Delay { ms: u64 },
    /// Every peer link loses packets: each chunk is held for a retransmission timeout with
    /// this probability (per mille), and now and then a connection is reset.
    Loss { per_mille: u32 },
    /// `kill -9` of every node at once (a power cut: crash-simulation storage loses all
    /// unsynced bytes), then all restart after the hold.
    PowerCut,
}

impl Fault {
    /// Whether the fault needs the network namespaces (and their proxies).
    pub fn needs_netns(self) -> bool {
        matches!(
            self,
            Fault::Isolate(_)
                | Fault::DropOutgoing(_)
                | Fault::DropIncoming(_)
                | Fault::Delay { .. }
                | Fault::Loss { .. }
        )
    }

    /// Faults after which a new primary must appear within [`NEW_PRIMARY_WITHIN`].
    pub fn removes_primary(self) -> bool {
        matches!(self, Fault::Kill(Target::Leader) | Fault::Pause(Target::Leader) | Fault::Isolate(Target::Leader))
            || self == Fault::PowerCut
    }

    /// A short name for summaries.
    pub fn kind(self) -> &'static str {
        match self {
            Fault::Kill(_) => "kill -9",
            Fault::Pause(_) => "sigstop",
            Fault::Isolate(_) => "partition",
            Fault::DropOutgoing(_) | Fault::DropIncoming(_) => "one-way",
            Fault::Delay { .. } => "delay",
            Fault::Loss { .. } => "loss",
            Fault::PowerCut => "power cut",
        }
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let who = |t: &Target| match t {
            Target::Leader => "leader",
            Target::Follower => "follower",
        };
        match self {
            Fault::Kill(t) => write!(f, "kill -9 the {} and restart it", who(t)),
            Fault::Pause(t) => write!(f, "SIGSTOP the {}, then SIGCONT", who(t)),
            Fault::Isolate(t) => write!(f, "partition the {} from the other nodes", who(t)),
            Fault::DropOutgoing(t) => write!(f, "drop everything the {} sends to its peers", who(t)),
            Fault::DropIncoming(t) => write!(f, "drop everything the peers send to the {}", who(t)),
            Fault::Delay { ms } => write!(f, "delay every peer link by {ms} ms"),
            Fault::Loss { per_mille } => write!(f, "lose {per_mille}‰ of the chunks on every peer link"),
            Fault::PowerCut => write!(f, "power cut: kill -9 every node at once, restart all"),
        }
    }
}

/// Every [`Fault::kind`], for choosing which ones a random schedule may draw.
pub const ALL_FAULT_KINDS: [&str; 7] = ["kill -9", "sigstop", "partition", "one-way", "delay", "loss", "power cut"];

/// The kinds that need network namespaces.
const NETWORK_FAULT_KINDS: [&str; 4] = ["partition", "one-way", "delay", "loss"];

/// A fault, how long it lasts, and how long the cluster then gets to settle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub fault: Fault,
    pub hold: Duration,
    pub settle: Duration,
}

/// The fault schedule of one history: a warm-up with no faults, then the steps in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    pub warmup: Duration,
    pub steps: Vec<Step>,
}

impl Schedule {
    /// CI's correct run: kill -9 of the leader, SIGSTOP of the leader, a partition of the
    /// leader, and a power cut; about 30 s of faults.
    pub fn ci() -> Schedule {
        Schedule {
            warmup: Duration::from_secs(3),
            steps: vec![
                Step {
                    fault: Fault::Kill(Target::Leader),
                    hold: Duration::from_secs(2),
                    settle: Duration::from_secs(3),
                },
                Step { fault: Fault::Pause(Target::Leader), hold: PAUSE_HOLD, settle: Duration::from_secs(3) },
                Step {
                    fault: Fault::Isolate(Target::Leader),
                    hold: Duration::from_secs(3),
                    settle: Duration::from_secs(3),
                },
                Step { fault: Fault::PowerCut, hold: Duration::from_secs(1), settle: Duration::from_secs(3) },
            ],
        }
    }

    /// For the ack-before-fsync mutant: a burst of acknowledged writes, then a power cut.
    /// Nothing the mutant acknowledged since its last sync survives, so the lost-write
    /// checker must fire.
    pub fn power_cut() -> Schedule {
        Schedule {
            warmup: Duration::from_secs(4),
            steps: vec![Step { fault: Fault::PowerCut, hold: Duration::from_secs(1), settle: Duration::from_secs(3) }],
        }
    }

    /// For the stale-reads mutant: the leader is partitioned and paused while clients pinned
    /// to it keep reading.
    pub fn stale_leader() -> Schedule {
        Schedule {
            warmup: Duration::from_secs(3),
            steps: vec![
                Step {
                    fault: Fault::Isolate(Target::Leader),
                    hold: Duration::from_secs(4),
                    settle: Duration::from_secs(3),
                },
                Step { fault: Fault::Pause(Target::Leader), hold: PAUSE_HOLD, settle: Duration::from_secs(3) },
                Step {
                    fault: Fault::Kill(Target::Leader),
                    hold: Duration::from_secs(2),
                    settle: Duration::from_secs(3),
                },
            ],
        }
    }

    /// A random schedule filling about `duration`, drawn from `rng` (so a seed reproduces
    /// it). Ends with a power cut, so every history tests durability. Network faults only
    /// when `net` can inject them; only kinds in `kinds` (see [`Fault::kind`]; all when
    /// empty).
    pub fn random(rng: &mut impl Rng, duration: Duration, net: NetMode, kinds: &[String]) -> Schedule {
        let allowed = |fault: Fault| {
            (net == NetMode::Netns || !fault.needs_netns())
                && (kinds.is_empty() || kinds.iter().any(|k| k == fault.kind()))
        };
        // Nothing drawable (e.g. only network faults without namespaces): power cuts only.
        let only_power_cuts = !kinds.is_empty()
            && !kinds.iter().any(|kind| {
                ALL_FAULT_KINDS.contains(&kind.as_str())
                    && (net == NetMode::Netns || !NETWORK_FAULT_KINDS.contains(&kind.as_str()))
            });
        let mut steps = Vec::new();
        let warmup = Duration::from_secs(3);
        let mut planned = warmup;
        let power_cut = Step { fault: Fault::PowerCut, hold: Duration::from_secs(1), settle: Duration::from_secs(4) };
        let reserve = power_cut.hold + power_cut.settle;
        while planned + reserve < duration {
            let target = if rng.random_bool(0.7) { Target::Leader } else { Target::Follower };
            let fault = loop {
                if only_power_cuts {
                    break Fault::PowerCut;
                }
                let fault = match rng.random_range(0..100u32) {
                    0..20 => Fault::Kill(target),
                    20..38 => Fault::Pause(target),
                    38..58 => Fault::Isolate(target),
                    58..66 => Fault::DropOutgoing(target),
                    66..74 => Fault::DropIncoming(target),
                    74..84 => Fault::Delay { ms: rng.random_range(20..=250) },
                    84..94 => Fault::Loss { per_mille: rng.random_range(20..=200) },
                    _ => Fault::PowerCut,
                };
                if allowed(fault) {
                    break fault;
                }
            };
            let hold = match fault {
                Fault::Pause(_) => PAUSE_HOLD + Duration::from_millis(rng.random_range(0..=1500)),
                Fault::PowerCut => Duration::from_secs(1),
                _ => Duration::from_millis(rng.random_range(1500..=6000)),
            };
            let settle = Duration::from_millis(rng.random_range(2000..=4000));
            planned += hold + settle;
            steps.push(Step { fault, hold, settle });
        }
        steps.push(power_cut);
        Schedule { warmup, steps }
    }

    /// Warm-up plus every hold and settle.
    pub fn duration(&self) -> Duration {
        self.warmup + self.steps.iter().map(|s| s.hold + s.settle).sum::<Duration>()
    }
}

/// Everything one history needs.
#[derive(Debug, Clone)]
pub struct HistoryConfig {
    /// A short name for reports ("ci", "long-3", ...).
    pub label: String,
    /// The `haven` binary to run.
    pub haven_bin: PathBuf,
    pub mode: NodeMode,
    pub net: NetChoice,
    /// Drives every random choice of the harness (the nodes' own timing is theirs).
    pub seed: u64,
    /// `None`: a random schedule of `random_duration`, drawn once the network mode is known.
    pub schedule: Option<Schedule>,
    pub random_duration: Duration,
    /// Fault kinds a random schedule may draw ([`ALL_FAULT_KINDS`]); empty = all.
    pub fault_kinds: Vec<String>,
    /// Operations per second over all clients (a bound, not a target under faults).
    pub rate_ops_per_second: u32,
    /// Clients that always talk to the same node, per node.
    pub pinned_clients_per_node: usize,
    /// Clients that pick a node at random for each operation.
    pub floating_clients: usize,
    /// Register keys (at most [`KEYS_MAX`]).
    pub keys: usize,
    /// Every client numbers its requests alike (`r1`, `r2`, ...), so every request id is
    /// used by every client, each with its own token, for different requests (issue 11);
    /// otherwise ids are unique in the run. Default: odd seeds.
    pub shared_request_ids: bool,
    /// Apply a random valid HA configuration every few seconds during the run (default:
    /// the correct nodes' histories, not the mutants').
    pub config_changes: bool,
    /// Where data dirs, logs and the history go; a new temporary directory when `None`.
    /// Kept when the history fails (or when `keep_work_dir`).
    pub work_dir: Option<PathBuf>,
    pub keep_work_dir: bool,
    /// Print progress to stderr.
    pub verbose: bool,
}

impl HistoryConfig {
    /// CI's short history for `mode`: the schedule that best exposes it.
    pub fn ci(haven_bin: impl Into<PathBuf>, mode: NodeMode) -> HistoryConfig {
        let schedule = match mode {
            NodeMode::CrashSim => Schedule::ci(),
            NodeMode::AckBeforeFsync => Schedule::power_cut(),
            NodeMode::StaleReads => Schedule::stale_leader(),
        };
        HistoryConfig {
            label: format!("ci-{mode}"),
            haven_bin: haven_bin.into(),
            mode,
            net: NetChoice::Auto,
            seed: 1,
            schedule: Some(schedule),
            random_duration: Duration::ZERO,
            fault_kinds: Vec::new(),
            rate_ops_per_second: 120,
            pinned_clients_per_node: 2,
            floating_clients: 2,
            keys: 8,
            shared_request_ids: shares_request_ids(1),
            // For the correct nodes' history; a mutant's schedule is tuned to expose it.
            config_changes: !mode.is_mutant(),
            work_dir: None,
            keep_work_dir: false,
            verbose: true,
        }
    }

    /// One history of the long run: a random schedule of about `seconds`.
    pub fn long(haven_bin: impl Into<PathBuf>, mode: NodeMode, seed: u64, seconds: u64) -> HistoryConfig {
        HistoryConfig {
            label: format!("{mode}-seed{seed}"),
            schedule: None,
            random_duration: Duration::from_secs(seconds.min(HISTORY_SECONDS_MAX)),
            rate_ops_per_second: 200,
            keys: KEYS_MAX,
            seed,
            shared_request_ids: shares_request_ids(seed),
            ..HistoryConfig::ci(haven_bin, mode)
        }
    }

    /// Refuses settings outside the harness's limits.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!((1..=KEYS_MAX).contains(&self.keys), "keys must be 1..={KEYS_MAX}");
        anyhow::ensure!(
            (1..=RATE_OPS_PER_SECOND_MAX).contains(&self.rate_ops_per_second),
            "rate must be 1..={RATE_OPS_PER_SECOND_MAX} operations per second"
        );
        anyhow::ensure!(self.pinned_clients_per_node >= 1, "each node needs at least one pinned client");
        anyhow::ensure!(self.haven_bin.is_file(), "no haven binary at {}", self.haven_bin.display());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn random_schedules_fit_their_duration_and_end_with_a_power_cut() {
        for seed in 0..50 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let schedule = Schedule::random(&mut rng, Duration::from_secs(60), NetMode::Local, &[]);
            assert!(schedule.duration() <= Duration::from_secs(60 + 15), "{schedule:?}");
            assert_eq!(schedule.steps.last().map(|s| s.fault), Some(Fault::PowerCut));
            assert!(schedule.steps.iter().all(|s| !s.fault.needs_netns()), "local mode has no network faults");
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let loss_only = Schedule::random(&mut rng, Duration::from_secs(60), NetMode::Netns, &["loss".to_string()]);
        assert!(
            loss_only.steps.iter().all(|s| matches!(s.fault, Fault::Loss { .. } | Fault::PowerCut)),
            "{loss_only:?}"
        );
        let impossible = Schedule::random(&mut rng, Duration::from_secs(30), NetMode::Local, &["delay".to_string()]);
        assert!(impossible.steps.iter().all(|s| s.fault == Fault::PowerCut), "{impossible:?}");
    }

    #[test]
    fn modes_round_trip_through_their_flags() {
        for mode in [NodeMode::CrashSim, NodeMode::AckBeforeFsync, NodeMode::StaleReads] {
            assert_eq!(NodeMode::parse(mode.flag()), Some(mode));
        }
        assert_eq!(NodeMode::parse("nope"), None);
    }
}
