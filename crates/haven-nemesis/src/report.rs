//! What one history found, and the summary over many.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::NetMode;
use crate::config::NodeMode;
use crate::config::NEW_PRIMARY_WITHIN;

/// Operation counts of one history.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpCounts {
    pub total: u64,
    pub reads: u64,
    pub writes: u64,
    pub cas: u64,
    pub deletes: u64,
    pub set_adds: u64,
    pub ok: u64,
    pub failed: u64,
    pub unknown: u64,
}

impl OpCounts {
    pub fn add(&mut self, other: &OpCounts) {
        self.total += other.total;
        self.reads += other.reads;
        self.writes += other.writes;
        self.cas += other.cas;
        self.deletes += other.deletes;
        self.set_adds += other.set_adds;
        self.ok += other.ok;
        self.failed += other.failed;
        self.unknown += other.unknown;
    }
}

/// One injected fault.
#[derive(Debug, Clone)]
pub struct FaultRecord {
    pub description: String,
    pub kind: &'static str,
    /// 1-based id of the node it hit, when it hit one.
    pub node: Option<u64>,
    pub injected_at: Duration,
    pub healed_at: Option<Duration>,
    /// For faults that take the primary away: time until another node was primary.
    pub new_primary_after: Option<Duration>,
    pub expects_new_primary: bool,
}

/// Everything one history found.
#[derive(Debug, Clone)]
pub struct HistoryReport {
    pub label: String,
    pub mode: NodeMode,
    pub net: NetMode,
    pub seed: u64,
    pub wall_time: Duration,
    pub ops: OpCounts,
    pub faults: Vec<FaultRecord>,
    /// Scheduled faults this network mode could not inject.
    pub skipped_faults: Vec<String>,
    /// `None` when the check could not run (e.g. the cluster never recovered).
    pub linearizable: Option<bool>,
    pub linearizability: String,
    pub checker_timed_out: bool,
    pub acknowledged_adds: usize,
    /// Acknowledged set adds missing from the final read (`None`: not checked).
    pub lost_writes: Option<usize>,
    pub set_passed: Option<bool>,
    pub set: String,
    pub watch_passed: Option<bool>,
    pub watch: String,
    /// `Err(problem)` when the replicas differ or never converged.
    pub convergence: Result<String, String>,
    /// Acknowledgement stamps checked (`haven_check::primaries`), the checker's verdict,
    /// and each leader's acknowledgements (term, node, index range, first and last time).
    pub acks: usize,
    pub primaries: String,
    pub handovers: Vec<String>,
    /// Evidence of two primaries, from the stamps: must be empty.
    pub dual_primaries: Vec<String>,
    /// Stamps missing, malformed, or outside their operation: must be empty.
    pub stamp_problems: Vec<String>,
    /// Sustained overlaps of two nodes' polled "primary" status: information only.
    pub monitor_overlaps: Vec<String>,
    pub slow_failovers: Vec<String>,
    /// The cluster did not come back after the faults were healed.
    pub recovery_failure: Option<String>,
    /// Answers outside the API contract (counted, not judged).
    pub unexpected_answers: u64,
    /// Writes refused as reusing a request id, though no client reuses its own: must be 0.
    pub reused_ids: u64,
    /// HA configurations applied during the run.
    pub config_changes: u64,
    /// Whether every client numbered its requests alike (ids shared across clients).
    pub shared_request_ids: bool,
    /// Where the history, report and node logs were kept.
    pub kept_in: Option<PathBuf>,
}

impl HistoryReport {
    /// Every property that failed, one line each. Empty = the history passed.
    pub fn anomalies(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(failure) = &self.recovery_failure {
            out.push(format!("no recovery: {failure}"));
        }
        match self.linearizable {
            Some(true) => {}
            Some(false) if self.checker_timed_out => {
                out.push("linearizability checker ran out of time (fails the run)".into())
            }
            Some(false) => out.push("not linearizable".into()),
            None => out.push("linearizability not checked".into()),
        }
        match (self.lost_writes, self.set_passed) {
            (Some(lost), _) if lost > 0 => out.push(format!("{lost} acknowledged writes lost")),
            (_, Some(false)) => out.push("set check failed (unexpected or duplicate elements)".into()),
            (None, _) | (_, None) => out.push("lost writes not checked".into()),
            _ => {}
        }
        match self.watch_passed {
            Some(true) => {}
            Some(false) => out.push("watch order violated".into()),
            None => out.push("watchers not checked".into()),
        }
        if let Err(problem) = &self.convergence {
            out.push(format!("replicas differ: {problem}"));
        }
        for dual in &self.dual_primaries {
            out.push(format!("dual primary: {dual}"));
        }
        for problem in &self.stamp_problems {
            out.push(format!("ack stamps: {problem}"));
        }
        for slow in &self.slow_failovers {
            out.push(format!("slow failover: {slow}"));
        }
        if self.reused_ids > 0 {
            out.push(format!(
                "{} writes refused as reusing a request id, though each client's ids are its own",
                self.reused_ids
            ));
        }
        out
    }

    pub fn passed(&self) -> bool {
        self.anomalies().is_empty()
    }

    /// A multi-line report for people.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let verdict = match (self.mode.is_mutant(), self.passed()) {
            (false, true) => "PASSED",
            (false, false) => "FAILED",
            (true, false) => "FLAGGED (mutant caught)",
            (true, true) => "NOT FLAGGED (mutant escaped)",
        };
        let _ = writeln!(out, "history {} [{}] {verdict}", self.label, self.mode);
        let _ = writeln!(out, "  network mode      {}", self.net);
        let _ = writeln!(out, "  seed              {}", self.seed);
        let _ = writeln!(out, "  wall time         {:.1?}", self.wall_time);
        let o = &self.ops;
        let _ = writeln!(
            out,
            "  operations        {} (reads {}, writes {}, cas {}, deletes {}, set adds {}; ok {}, failed {}, unknown {})",
            o.total, o.reads, o.writes, o.cas, o.deletes, o.set_adds, o.ok, o.failed, o.unknown
        );
        let ids = if self.shared_request_ids { "shared by every client (r1, r2, ...)" } else { "unique" };
        let _ = writeln!(out, "  request ids       {ids}; {} refused as reused", self.reused_ids);
        let _ = writeln!(out, "  config changes    {} HA configurations applied", self.config_changes);
        let _ = writeln!(out, "  faults injected   {}", self.faults.len());
        for fault in &self.faults {
            let node = fault.node.map(|n| format!(" (node {n})")).unwrap_or_default();
            let primary = match (fault.expects_new_primary, fault.new_primary_after) {
                (true, Some(after)) => format!("; new primary after {after:.1?}"),
                (true, None) => "; NO new primary".to_string(),
                (false, _) => String::new(),
            };
            let _ = writeln!(out, "    at {:>6.1?}: {}{node}{primary}", fault.injected_at, fault.description);
        }
        for skipped in &self.skipped_faults {
            let _ = writeln!(out, "    skipped: {skipped}");
        }
        let _ = writeln!(out, "  linearizability   {}", self.linearizability);
        let _ = writeln!(out, "  lost writes       {}", self.set);
        let _ = writeln!(out, "  watch order       {}", self.watch);
        let _ = writeln!(
            out,
            "  replicas          {}",
            match &self.convergence {
                Ok(summary) => summary.clone(),
                Err(problem) => format!("DIFFER: {problem}"),
            }
        );
        let _ = writeln!(out, "  primaries         {}", self.primaries);
        for reign in &self.handovers {
            let _ = writeln!(out, "                      {reign}");
        }
        let _ = writeln!(out, "  dual primaries    {} (from acknowledgement stamps)", self.dual_primaries.len());
        let _ = writeln!(
            out,
            "  status monitor    {} sustained overlaps of polled primary claims (information only)",
            self.monitor_overlaps.len()
        );
        for overlap in &self.monitor_overlaps {
            let _ = writeln!(out, "                      {overlap}");
        }
        if let Some(failure) = &self.recovery_failure {
            let _ = writeln!(out, "  recovery          FAILED: {failure}");
        }
        if self.unexpected_answers > 0 {
            let _ = writeln!(
                out,
                "  unexpected answers {} (outside the API contract; recorded as unknown)",
                self.unexpected_answers
            );
        }
        let anomalies = self.anomalies();
        if !anomalies.is_empty() {
            let _ = writeln!(out, "  anomalies:");
            for anomaly in anomalies {
                let _ = writeln!(out, "    - {anomaly}");
            }
        }
        if let Some(dir) = &self.kept_in {
            let _ = writeln!(out, "  kept in           {}", dir.display());
        }
        out
    }
}

/// The long run's totals.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub histories: usize,
    pub ops: OpCounts,
    pub faults: usize,
    pub faults_by_kind: std::collections::BTreeMap<&'static str, usize>,
    /// Anomalies of correct (non-mutant) histories: must be 0.
    pub anomalies: usize,
    /// Acknowledged writes lost in correct histories: must be 0.
    pub lost_writes: usize,
    /// Dual primaries in correct histories, from acknowledgement stamps: must be 0.
    pub dual_primaries: usize,
    /// Acknowledgement stamps checked in correct histories.
    pub acks: usize,
    /// Sustained overlaps of polled primary claims in correct histories (information).
    pub monitor_overlaps: usize,
    pub slowest_failover: Option<Duration>,
    pub net_modes: std::collections::BTreeSet<String>,
    /// Per mutant: whether it was flagged, and why.
    pub mutants: Vec<(NodeMode, bool, String)>,
    pub failed_histories: Vec<String>,
}

impl Summary {
    pub fn add(&mut self, report: &HistoryReport) {
        self.histories += 1;
        self.ops.add(&report.ops);
        self.faults += report.faults.len();
        for fault in &report.faults {
            *self.faults_by_kind.entry(fault.kind).or_default() += 1;
            if fault.expects_new_primary {
                if let Some(after) = fault.new_primary_after {
                    self.slowest_failover = Some(self.slowest_failover.map_or(after, |slowest| slowest.max(after)));
                }
            }
        }
        self.net_modes.insert(report.net.to_string());
        let anomalies = report.anomalies();
        if report.mode.is_mutant() {
            self.mutants.push((report.mode, !anomalies.is_empty(), anomalies.join("; ")));
        } else {
            self.anomalies += anomalies.len();
            self.lost_writes += report.lost_writes.unwrap_or(0);
            self.dual_primaries += report.dual_primaries.len();
            self.acks += report.acks;
            self.monitor_overlaps += report.monitor_overlaps.len();
            if !anomalies.is_empty() {
                self.failed_histories.push(format!("{}: {}", report.label, anomalies.join("; ")));
            }
        }
    }

    /// True when every correct history passed and every mutant was flagged.
    pub fn passed(&self) -> bool {
        self.histories > 0 && self.anomalies == 0 && self.mutants.iter().all(|(_, flagged, _)| *flagged)
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "nemesis summary");
        let _ = writeln!(
            out,
            "  network modes              {}",
            self.net_modes.iter().cloned().collect::<Vec<_>>().join(", ")
        );
        let _ = writeln!(out, "  histories                  {}", self.histories);
        let o = &self.ops;
        let _ = writeln!(
            out,
            "  operations                 {} (reads {}, writes {}, cas {}, deletes {}, set adds {}; ok {}, failed {}, unknown {})",
            o.total, o.reads, o.writes, o.cas, o.deletes, o.set_adds, o.ok, o.failed, o.unknown
        );
        let kinds: Vec<String> = self.faults_by_kind.iter().map(|(kind, n)| format!("{kind} {n}")).collect();
        let _ = writeln!(out, "  faults injected            {} ({})", self.faults, kinds.join(", "));
        let _ = writeln!(out, "  anomalies                  {} (must be 0)", self.anomalies);
        let _ = writeln!(out, "  acknowledged writes lost   {} (must be 0)", self.lost_writes);
        let _ = writeln!(
            out,
            "  dual primaries             {} (must be 0; from {} ack stamps)",
            self.dual_primaries, self.acks
        );
        let _ =
            writeln!(out, "  polled primary overlaps    {} (status monitor; information only)", self.monitor_overlaps);
        if let Some(slowest) = self.slowest_failover {
            let _ = writeln!(out, "  slowest new primary        {slowest:.1?} (limit {NEW_PRIMARY_WITHIN:?})");
        }
        for (mode, flagged, why) in &self.mutants {
            let verdict = if *flagged { "FLAGGED" } else { "NOT FLAGGED" };
            let _ = writeln!(out, "  mutant {mode:<27} {verdict}: {why}");
        }
        for failed in &self.failed_histories {
            let _ = writeln!(out, "  failed: {failed}");
        }
        let _ = writeln!(out, "RESULT: {}", if self.passed() { "PASS" } else { "FAIL" });
        out
    }
}
