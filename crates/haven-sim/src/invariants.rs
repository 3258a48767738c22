//! The safety invariants, checked as the run goes (not only at its end).
//!
//! | invariant | fed by | violated when |
//! |---|---|---|
//! | one reign per leader id | every node's metrics, every step | a node leads under leader id `(term, node)` again after a restart (a reign restored without an election) |
//! | one primary, from the acks | every acknowledged client write: node, leader id, log index, time | the acking node is not the entry's leader; two acks at one index with different log ids; index order disagrees with leader-id order |
//! | committed entries never diverge | every entry every state machine applies, every snapshot installed | two nodes apply different entries at one index, or reach different `KvState` digests there |
//! | acknowledged writes survive | acks against applied entries | an index is applied with a different entry than the one acknowledged there |
//!
//! Leader ids are openraft's `(term, node)` (Haven uses `leader_id_adv`): two nodes may
//! lead in one term one after the other, each elected by a quorum, so "at most one leader
//! per term" is checked as "at most one leader per leader id, reigning once", and the
//! order checks compare `(term, node)` pairs. Leaderships are also counted per plain term
//! for the summary (`terms_with_two_leaders`).

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::MutexGuard;

use haven_core::replica_check::StateDigest;

use crate::storage::ApplyObserver;
use crate::trace;
use crate::trace::Trace;
use crate::types::leader_of;
use crate::types::LogId;
use crate::types::NodeId;

/// Violations kept per run: the first few say what went wrong; a broken build would
/// otherwise repeat one problem thousands of times.
pub const VIOLATIONS_KEPT_MAX: usize = 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Simulated time, microseconds since the run started.
    pub at_us: u64,
    pub what: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "at {:.3} s: {}", self.at_us as f64 / 1e6, self.what)
    }
}

#[derive(Debug, Clone, Copy)]
struct AppliedRecord {
    log_id: LogId,
    fingerprint: u64,
    digest: StateDigest,
    node: NodeId,
}

#[derive(Debug, Clone)]
struct AckRecord {
    node: NodeId,
    log_id: LogId,
    at_us: u64,
    what: String,
}

#[derive(Default)]
struct CheckerState {
    /// The first entry applied at each index, by any node.
    applied: BTreeMap<u64, AppliedRecord>,
    acks: BTreeMap<u64, AckRecord>,
    /// Leader ids seen leading, with the start (process lifetime) of the node that led.
    reigns: BTreeMap<(u64, NodeId), u64>,
    leaders_by_term: BTreeMap<u64, BTreeSet<NodeId>>,
    violations: Vec<Violation>,
    violations_total: u64,
}

/// Counts for the run's summary.
#[derive(Debug, Clone, Copy, Default)]
pub struct CheckerStats {
    pub acks: u64,
    pub applied_indexes: u64,
    pub leader_ids: u64,
    pub terms_with_two_leaders: u64,
    pub violations: u64,
}

/// The invariant checker of one run. Shared by the state machines, clients and driver.
pub struct Checker {
    state: Mutex<CheckerState>,
    trace: Arc<Trace>,
    reign_check: bool,
}

fn show(log_id: &LogId) -> String {
    log_id.to_string()
}

impl Checker {
    pub fn new(trace: Arc<Trace>, reign_check: bool) -> Arc<Checker> {
        Arc::new(Checker { state: Mutex::new(CheckerState::default()), trace, reign_check })
    }

    fn lock(&self) -> MutexGuard<'_, CheckerState> {
        // Maps of plain records: consistent after a panic elsewhere.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn violate(&self, state: &mut CheckerState, what: String) {
        trace!(self.trace, "VIOLATION {what}");
        state.violations_total += 1;
        if state.violations.len() < VIOLATIONS_KEPT_MAX {
            state.violations.push(Violation { at_us: self.trace.now_us(), what });
        }
    }

    /// Records a violation found outside this module (liveness, linearizability).
    pub fn report(&self, what: String) {
        let mut state = self.lock();
        self.violate(&mut state, what);
    }

    pub fn violations(&self) -> Vec<Violation> {
        self.lock().violations.clone()
    }

    pub fn stats(&self) -> CheckerStats {
        let state = self.lock();
        CheckerStats {
            acks: state.acks.len() as u64,
            applied_indexes: state.applied.len() as u64,
            leader_ids: state.reigns.len() as u64,
            terms_with_two_leaders: state.leaders_by_term.values().filter(|leaders| leaders.len() > 1).count() as u64,
            violations: state.violations_total,
        }
    }

    /// `node`, in its `start`-th process lifetime, reports itself leader in `term`.
    pub fn observe_leader(&self, node: NodeId, start: u64, term: u64) {
        let mut state = self.lock();
        match state.reigns.get(&(term, node)).copied() {
            None => {
                state.reigns.insert((term, node), start);
                state.leaders_by_term.entry(term).or_default().insert(node);
                trace!(self.trace, "leader T{term}-N{node} (start {start})");
            }
            Some(earlier) if earlier != start => {
                // Recorded once per start, so the report is not repeated every step.
                state.reigns.insert((term, node), start);
                trace!(self.trace, "leader T{term}-N{node} again (start {start})");
                if !self.reign_check {
                    return;
                }
                self.violate(
                    &mut state,
                    format!(
                        "node {node} leads again as T{term}-N{node} after a restart (start {earlier} -> {start}): \
                         a leader id reigned twice without an election"
                    ),
                );
            }
            Some(_) => {}
        }
    }

    /// `node` acknowledged a client write committed at `log_id`.
    pub fn on_ack(&self, node: NodeId, log_id: &LogId, what: String) {
        let mut state = self.lock();
        let at_us = self.trace.now_us();
        let index = log_id.index;
        let leader = leader_of(log_id);
        trace!(self.trace, "ack node {node} {} {what}", show(log_id));
        if leader.1 != node {
            self.violate(
                &mut state,
                format!("node {node} acknowledged {what} at {}, an entry of another leader", show(log_id)),
            );
        }
        if let Some(other) = state.acks.get(&index).cloned() {
            if other.log_id != *log_id {
                self.violate(
                    &mut state,
                    format!(
                        "two primaries: log index {index} acknowledged as {} by node {} ({}, at {} us) and as {} by \
                         node {node} ({what})",
                        show(&other.log_id),
                        other.node,
                        other.what,
                        other.at_us,
                        show(log_id)
                    ),
                );
            }
        }
        let before = state.acks.range(..index).next_back().map(|(_, ack)| ack.clone());
        let after = state.acks.range(index + 1..).next().map(|(_, ack)| ack.clone());
        for (earlier, later) in [(before.as_ref(), None), (None, after.as_ref())] {
            let problem = match (earlier, later) {
                (Some(earlier), None) if leader_of(&earlier.log_id) > leader => Some(earlier),
                (None, Some(later)) if leader_of(&later.log_id) < leader => Some(later),
                _ => None,
            };
            if let Some(other) = problem {
                self.violate(
                    &mut state,
                    format!(
                        "two primaries: acknowledged log order disagrees with leader order: {} (node {}, {}) vs {} \
                         (node {node}, {what})",
                        show(&other.log_id),
                        other.node,
                        other.what,
                        show(log_id)
                    ),
                );
            }
        }
        if let Some(applied) = state.applied.get(&index).copied() {
            if applied.log_id != *log_id {
                self.violate(
                    &mut state,
                    format!(
                        "acknowledged write lost: node {node} acknowledged {what} at {}, but node {} applied {} there",
                        show(log_id),
                        applied.node,
                        show(&applied.log_id)
                    ),
                );
            }
        }
        state.acks.insert(index, AckRecord { node, log_id: *log_id, at_us, what });
    }
}

impl ApplyObserver for Checker {
    fn applied(&self, node: NodeId, log_id: &LogId, payload_fingerprint: u64, state_digest: StateDigest) {
        let mut state = self.lock();
        let index = log_id.index;
        match state.applied.get(&index).copied() {
            None => {
                state.applied.insert(
                    index,
                    AppliedRecord { log_id: *log_id, fingerprint: payload_fingerprint, digest: state_digest, node },
                );
                if let Some(ack) = state.acks.get(&index).cloned() {
                    if ack.log_id != *log_id {
                        self.violate(
                            &mut state,
                            format!(
                                "acknowledged write lost: node {} acknowledged {} at {}, but node {node} applied {} there",
                                ack.node,
                                ack.what,
                                show(&ack.log_id),
                                show(log_id)
                            ),
                        );
                    }
                }
            }
            Some(first) if first.log_id != *log_id || first.fingerprint != payload_fingerprint => self.violate(
                &mut state,
                format!(
                    "committed entries diverge at index {index}: node {} applied {} but node {node} applied {}{}",
                    first.node,
                    show(&first.log_id),
                    show(log_id),
                    if first.log_id == *log_id { " with a different payload under the same log id" } else { "" }
                ),
            ),
            Some(first) if first.digest != state_digest => self.violate(
                &mut state,
                format!(
                    "replicas diverge: after applying {} node {} has state {}, node {node} {}",
                    show(log_id),
                    first.node,
                    first.digest,
                    state_digest
                ),
            ),
            Some(_) => {}
        }
    }

    fn installed(&self, node: NodeId, last_log_id: Option<&LogId>, state_digest: StateDigest) {
        let Some(log_id) = last_log_id else { return };
        let mut state = self.lock();
        trace!(self.trace, "node {node} installed a snapshot up to {}", show(log_id));
        if let Some(first) = state.applied.get(&log_id.index).copied() {
            if first.log_id != *log_id || first.digest != state_digest {
                self.violate(
                    &mut state,
                    format!(
                        "snapshot diverges: node {node} installed a snapshot at {} ({state_digest}), \
                         node {} applied {} ({})",
                        show(log_id),
                        first.node,
                        show(&first.log_id),
                        first.digest
                    ),
                );
            }
        }
    }
}
