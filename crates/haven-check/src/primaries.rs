//! At most one primary at a time, judged from the leaders' own acknowledgements.
//!
//! Every acknowledged write carries a stamp from the leader that acknowledged it (the
//! server's `Haven-Ack` header): the log id of its entry — the leader id `(term, node)` it
//! was proposed under and its index — and the leader's monotonic clock when it learned the
//! entry was committed. Polling every node's status cannot prove there was one primary: it
//! samples, and a node's claim says nothing about what it acknowledged. The stamps can,
//! because committed entries form one log:
//!
//! - **One index, one leader.** Two acknowledgements at the same log index under two
//!   different leader ids: two primaries committed different entries at one position (a
//!   fork, or acknowledged entries lost and the index reused).
//! - **Log order is leader order.** Index `i1 < i2` acknowledged under leader ids `L1 > L2`
//!   (ordered by term, then node): a deposed leader acknowledged an entry after its
//!   successor had committed later ones, or the log forked.
//! - **One entry, one operation.** The same log id acknowledged for two different
//!   operations (e.g. a leader that came back in its old term and wrote another entry
//!   under a log id it had used before).
//! - **One leader per term**, under [`LeaderRule::OnePerTerm`] (standard Raft). openraft's
//!   default leader id is the pair `(term, node)` (`leader_id_adv`): a node with a higher
//!   id may win an election in a term another node already won, deposing it. Under
//!   [`LeaderRule::TermAndNode`] that is legal and only reported; the two rules above still
//!   catch every conflict between the two leaders.
//! - **Stamps are plausible.** When the caller knows when the operation was sent and when
//!   its answer came (on the same monotonic clock), the stamp's time must lie in between;
//!   otherwise the stamps (or the clock) cannot be trusted and that is reported.
//!
//! Time is deliberately *not* a rule: a leader may learn of a commit, be paused, and answer
//! after its successor has acknowledged newer entries. That acknowledgement is still
//! correct (the entry was committed in its reign), so it is reported as a *late*
//! acknowledgement, for information, with the handovers: each leader's first and last
//! acknowledgement on the monotonic clock.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::fmt;

use serde::Deserialize;
use serde::Serialize;

/// A Raft leader id as openraft's log ids carry it; ordered by term, then node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LeaderId {
    pub term: u64,
    pub node: u64,
}

impl fmt::Display for LeaderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "T{}-N{}", self.term, self.node)
    }
}

/// One acknowledgement stamp (defined once, in `haven_core::ack`).
pub use haven_core::ack::AckStamp as Ack;

/// The leader id a stamp was acknowledged under.
pub trait AckLeader {
    fn leader(&self) -> LeaderId;
}

impl AckLeader for Ack {
    fn leader(&self) -> LeaderId {
        LeaderId { term: self.term, node: self.node }
    }
}

/// A stamp with the operation it acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckRecord {
    /// The operation's id in the history.
    pub op: u64,
    pub ack: Ack,
    /// When the operation was sent and its answer arrived, on the stamps' clock, if known.
    pub window: Option<(u64, u64)>,
}

/// Which leader ids the Raft implementation allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaderRule {
    /// Standard Raft: at most one leader per term.
    OnePerTerm,
    /// openraft's `leader_id_adv`: the leader id is `(term, node)`, totally ordered, so
    /// several leaders may follow one another within a term (each deposing the last).
    TermAndNode,
}

/// What went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ViolationKind {
    /// Two nodes acknowledged writes in one term (only under [`LeaderRule::OnePerTerm`]).
    TwoLeadersInOneTerm,
    /// One log index acknowledged under two leader ids.
    IndexAckedByTwoLeaders,
    /// A lower index acknowledged under a higher leader id than a higher index.
    LogOrderAgainstLeaderOrder,
    /// One log id acknowledged for two different operations.
    EntryAckedTwice,
    /// The stamp's time is outside its operation's send-to-answer window.
    StampOutsideOperation,
}

/// One violation, standing for `count` instances of the same kind between the same
/// leaders; `first` and `second` are one witness.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    pub kind: ViolationKind,
    pub first: AckRecord,
    pub second: Option<AckRecord>,
    pub count: usize,
}

impl Violation {
    /// Whether this is evidence of two primaries (everything but implausible stamps).
    pub fn is_dual_primary(&self) -> bool {
        self.kind != ViolationKind::StampOutsideOperation
    }
}

fn seconds(ns: u64) -> String {
    format!("{:.3}s", ns as f64 / 1e9)
}

fn witness(record: &AckRecord) -> String {
    format!(
        "op #{} at {} (index {}, {})",
        record.op,
        record.ack.leader(),
        record.ack.index,
        seconds(record.ack.mono_ns)
    )
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let a = &self.first;
        let times = if self.count > 1 { format!(" ({} times)", self.count) } else { String::new() };
        match (self.kind, &self.second) {
            (ViolationKind::TwoLeadersInOneTerm, Some(b)) => write!(
                f,
                "two leaders in term {}: node {} and node {} both acknowledged writes{times}; e.g. {} and {}",
                a.ack.term,
                a.ack.node,
                b.ack.node,
                witness(a),
                witness(b)
            ),
            (ViolationKind::IndexAckedByTwoLeaders, Some(b)) => write!(
                f,
                "log index {} acknowledged by {} and by {}{times}: two primaries committed different entries at one \
                 position; e.g. {} and {}",
                a.ack.index,
                a.ack.leader(),
                b.ack.leader(),
                witness(a),
                witness(b)
            ),
            (ViolationKind::LogOrderAgainstLeaderOrder, Some(b)) => write!(
                f,
                "{} acknowledged index {} after {} had acknowledged index {}{times}: log order disagrees with leader \
                 order (a deposed leader acknowledging, or a fork); e.g. {} and {}",
                b.ack.leader(),
                b.ack.index,
                a.ack.leader(),
                a.ack.index,
                witness(a),
                witness(b)
            ),
            (ViolationKind::EntryAckedTwice, Some(b)) => write!(
                f,
                "log id {}.{} acknowledged for two operations{times}: op #{} and op #{}",
                a.ack.leader(),
                a.ack.index,
                a.op,
                b.op
            ),
            (ViolationKind::StampOutsideOperation, _) => {
                let window = a.window.map(|(from, to)| format!("{}..{}", seconds(from), seconds(to)));
                write!(
                    f,
                    "stamp outside its operation{times}: op #{} stamped {} by {}, but was in flight {}",
                    a.op,
                    seconds(a.ack.mono_ns),
                    a.ack.leader(),
                    window.unwrap_or_default()
                )
            }
            (kind, None) => write!(f, "{kind:?}{times}: {}", witness(a)),
        }
    }
}

/// One leader's acknowledgements.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reign {
    pub leader: LeaderId,
    pub acks: usize,
    pub first_index: u64,
    pub last_index: u64,
    pub first_mono_ns: u64,
    pub last_mono_ns: u64,
    /// Acknowledgements answered after a later leader's first one (legal: committed in
    /// this reign, answered late), and the latest of them, in ns after that first one.
    pub late_acks: usize,
    pub latest_late_ns: u64,
}

/// The verdict on a set of stamps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrimariesReport {
    pub rule: LeaderRule,
    pub acks: usize,
    /// Every leader that acknowledged something, in leader-id order (= handover order).
    pub reigns: Vec<Reign>,
    pub violations: Vec<Violation>,
    /// Terms in which more than one node acknowledged, legal under
    /// [`LeaderRule::TermAndNode`] (under `OnePerTerm` they are violations).
    pub shared_terms: Vec<u64>,
}

impl PrimariesReport {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    /// The violations that are evidence of two primaries.
    pub fn dual_primaries(&self) -> impl Iterator<Item = &Violation> {
        self.violations.iter().filter(|violation| violation.is_dual_primary())
    }

    /// The violations that make the stamps themselves untrustworthy.
    pub fn stamp_problems(&self) -> impl Iterator<Item = &Violation> {
        self.violations.iter().filter(|violation| !violation.is_dual_primary())
    }

    /// Acknowledgements answered after a later leader's first one.
    pub fn late_acks(&self) -> usize {
        self.reigns.iter().map(|reign| reign.late_acks).sum()
    }

    /// One line per leader: `T3-N1: 480 acks, index 5..500, 0.012s..3.100s`.
    pub fn handovers(&self) -> Vec<String> {
        self.reigns
            .iter()
            .map(|reign| {
                let late = if reign.late_acks > 0 {
                    format!(
                        "; {} answered after the next leader's first ack (latest {:.1} ms after)",
                        reign.late_acks,
                        reign.latest_late_ns as f64 / 1e6
                    )
                } else {
                    String::new()
                };
                format!(
                    "{}: {} acks, index {}..{}, {}..{}{late}",
                    reign.leader,
                    reign.acks,
                    reign.first_index,
                    reign.last_index,
                    seconds(reign.first_mono_ns),
                    seconds(reign.last_mono_ns)
                )
            })
            .collect()
    }
}

impl fmt::Display for PrimariesReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dual = self.dual_primaries().count();
        let stamps = self.stamp_problems().count();
        write!(
            f,
            "{} acknowledgements from {} leaders: {}",
            self.acks,
            self.reigns.len(),
            if self.passed() { "one primary at a time".to_string() } else { format!("{dual} dual-primary violations") }
        )?;
        if stamps > 0 {
            write!(f, ", {stamps} implausible stamps")?;
        }
        if !self.shared_terms.is_empty() {
            write!(f, "; terms with two leaders in turn (legal for (term, node) leader ids): {:?}", self.shared_terms)?;
        }
        let late = self.late_acks();
        if late > 0 {
            write!(f, "; {late} late acknowledgements (committed before a handover, answered after it)")?;
        }
        Ok(())
    }
}

/// Judges `records` under `rule` (see the module docs). Order of `records` does not matter.
pub fn check_primaries(records: &[AckRecord], rule: LeaderRule) -> PrimariesReport {
    let mut found: BTreeMap<(ViolationKind, LeaderId, Option<LeaderId>), Violation> = BTreeMap::new();
    let mut note = |kind: ViolationKind, first: &AckRecord, second: Option<&AckRecord>| {
        let key = (kind, first.ack.leader(), second.map(|record| record.ack.leader()));
        found.entry(key).and_modify(|violation| violation.count += 1).or_insert(Violation {
            kind,
            first: *first,
            second: second.copied(),
            count: 1,
        });
    };

    // Plausible stamps.
    for record in records {
        if let Some((from, to)) = record.window {
            if record.ack.mono_ns < from || record.ack.mono_ns > to {
                note(ViolationKind::StampOutsideOperation, record, None);
            }
        }
    }

    // One index, one leader; one entry, one operation.
    let mut by_index: BTreeMap<u64, Vec<&AckRecord>> = BTreeMap::new();
    for record in records {
        by_index.entry(record.ack.index).or_default().push(record);
    }
    for group in by_index.values_mut() {
        group.sort_by_key(|record| (record.ack.leader(), record.op));
        group.dedup_by_key(|record| (record.ack.leader(), record.op));
        for (i, a) in group.iter().enumerate() {
            for b in &group[i + 1..] {
                if a.ack.leader() != b.ack.leader() {
                    note(ViolationKind::IndexAckedByTwoLeaders, a, Some(b));
                } else if a.op != b.op {
                    note(ViolationKind::EntryAckedTwice, a, Some(b));
                }
            }
        }
    }

    // Log order is leader order: walking up the log, no acknowledgement may come from a
    // leader lower than one already seen at a lower index.
    let mut highest: Option<&AckRecord> = None;
    for group in by_index.values() {
        if let Some(top) = highest {
            for record in group.iter().filter(|record| record.ack.leader() < top.ack.leader()) {
                note(ViolationKind::LogOrderAgainstLeaderOrder, top, Some(record));
            }
        }
        // Groups are sorted by leader: the last one is this index's highest.
        if let Some(record) = group.last() {
            if highest.is_none_or(|top| record.ack.leader() > top.ack.leader()) {
                highest = Some(record);
            }
        }
    }

    // Leaders per term.
    let mut by_term: BTreeMap<u64, BTreeMap<u64, &AckRecord>> = BTreeMap::new();
    for record in records {
        let first = by_term.entry(record.ack.term).or_default().entry(record.ack.node).or_insert(record);
        if (record.ack.mono_ns, record.op) < (first.ack.mono_ns, first.op) {
            *first = record;
        }
    }
    let mut shared_terms = Vec::new();
    for (term, nodes) in &by_term {
        if nodes.len() < 2 {
            continue;
        }
        match rule {
            LeaderRule::TermAndNode => shared_terms.push(*term),
            LeaderRule::OnePerTerm => {
                let firsts: Vec<&&AckRecord> = nodes.values().collect();
                for (i, a) in firsts.iter().enumerate() {
                    for b in &firsts[i + 1..] {
                        note(ViolationKind::TwoLeadersInOneTerm, a, Some(b));
                    }
                }
            }
        }
    }

    PrimariesReport {
        rule,
        acks: records.len(),
        reigns: reigns(records),
        violations: found.into_values().collect(),
        shared_terms,
    }
}

/// Each leader's acknowledgements, in leader order, with the late ones counted.
fn reigns(records: &[AckRecord]) -> Vec<Reign> {
    let mut reigns: BTreeMap<LeaderId, Reign> = BTreeMap::new();
    for record in records {
        let ack = &record.ack;
        let reign = reigns.entry(ack.leader()).or_insert(Reign {
            leader: ack.leader(),
            acks: 0,
            first_index: ack.index,
            last_index: ack.index,
            first_mono_ns: ack.mono_ns,
            last_mono_ns: ack.mono_ns,
            late_acks: 0,
            latest_late_ns: 0,
        });
        reign.acks += 1;
        reign.first_index = reign.first_index.min(ack.index);
        reign.last_index = reign.last_index.max(ack.index);
        reign.first_mono_ns = reign.first_mono_ns.min(ack.mono_ns);
        reign.last_mono_ns = reign.last_mono_ns.max(ack.mono_ns);
    }
    // The earliest first acknowledgement of any later leader, per leader.
    let mut successor_start: BTreeMap<LeaderId, u64> = BTreeMap::new();
    let mut earliest_later = u64::MAX;
    for reign in reigns.values().rev() {
        successor_start.insert(reign.leader, earliest_later);
        earliest_later = earliest_later.min(reign.first_mono_ns);
    }
    let mut late: BTreeMap<LeaderId, (usize, u64)> = BTreeMap::new();
    let leaders: BTreeSet<LeaderId> = reigns.keys().copied().collect();
    for record in records {
        let leader = record.ack.leader();
        let start = successor_start.get(&leader).copied().unwrap_or(u64::MAX);
        if leaders.contains(&leader) && record.ack.mono_ns > start {
            let entry = late.entry(leader).or_default();
            entry.0 += 1;
            entry.1 = entry.1.max(record.ack.mono_ns - start);
        }
    }
    reigns
        .into_values()
        .map(|mut reign| {
            if let Some((count, latest)) = late.get(&reign.leader) {
                reign.late_acks = *count;
                reign.latest_late_ns = *latest;
            }
            reign
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: u64 = 1_000_000;

    fn rec(op: u64, node: u64, term: u64, index: u64, mono_ms: u64) -> AckRecord {
        AckRecord { op, ack: Ack { node, term, index, mono_ns: mono_ms * MS }, window: None }
    }

    fn kinds(report: &PrimariesReport) -> Vec<ViolationKind> {
        report.violations.iter().map(|violation| violation.kind).collect()
    }

    /// Node 1 leads term 2, node 3 takes over in term 4; node 1 answers one write late.
    fn good() -> Vec<AckRecord> {
        vec![
            rec(0, 1, 2, 3, 10),
            rec(1, 1, 2, 4, 12),
            rec(2, 1, 2, 6, 15),
            rec(3, 3, 4, 8, 900),
            rec(4, 1, 2, 7, 905), // committed in term 2, answered after node 3's first ack
            rec(5, 3, 4, 9, 910),
            rec(6, 3, 4, 10, 950),
        ]
    }

    #[test]
    fn a_clean_handover_passes_under_both_rules() {
        for rule in [LeaderRule::OnePerTerm, LeaderRule::TermAndNode] {
            let report = check_primaries(&good(), rule);
            assert!(report.passed(), "{report}: {:?}", report.violations);
            assert_eq!(report.acks, 7);
            let leaders: Vec<String> = report.reigns.iter().map(|reign| reign.leader.to_string()).collect();
            assert_eq!(leaders, ["T2-N1", "T4-N3"]);
            let first = &report.reigns[0];
            assert_eq!((first.acks, first.first_index, first.last_index), (4, 3, 7));
            assert_eq!((first.first_mono_ns, first.last_mono_ns), (10 * MS, 905 * MS));
            assert_eq!((first.late_acks, first.latest_late_ns), (1, 5 * MS));
            assert_eq!(report.late_acks(), 1);
            assert!(report.handovers()[1].starts_with("T4-N3: 3 acks, index 8..10, 0.900s..0.950s"));
            assert!(report.to_string().contains("7 acknowledgements from 2 leaders: one primary at a time"));
        }
        let empty = check_primaries(&[], LeaderRule::OnePerTerm);
        assert!(empty.passed() && empty.reigns.is_empty());
    }

    #[test]
    fn two_nodes_acknowledging_in_one_term_are_flagged_under_one_leader_per_term() {
        // Node 2 wins term 2 after node 1 (legal for openraft's (term, node) leader ids).
        let mut stamps = good();
        stamps.push(rec(7, 2, 2, 11, 40));
        stamps.retain(|record| record.ack.term == 2);
        let strict = check_primaries(&stamps, LeaderRule::OnePerTerm);
        assert_eq!(kinds(&strict), [ViolationKind::TwoLeadersInOneTerm]);
        assert!(strict.violations[0].to_string().starts_with("two leaders in term 2: node 1 and node 2"));
        let adv = check_primaries(&stamps, LeaderRule::TermAndNode);
        assert!(adv.passed(), "{:?}", adv.violations);
        assert_eq!(adv.shared_terms, [2]);
        // But not if their acknowledgements interleave in the log.
        stamps.push(rec(8, 1, 2, 12, 41));
        let interleaved = check_primaries(&stamps, LeaderRule::TermAndNode);
        assert_eq!(kinds(&interleaved), [ViolationKind::LogOrderAgainstLeaderOrder]);
    }

    #[test]
    fn one_index_acknowledged_by_two_leaders_is_flagged() {
        // Acknowledged entries lost (ack before fsync), the index reused in the next term.
        let mut stamps = good();
        stamps.push(rec(7, 3, 4, 6, 960));
        for rule in [LeaderRule::OnePerTerm, LeaderRule::TermAndNode] {
            let report = check_primaries(&stamps, rule);
            assert!(kinds(&report).contains(&ViolationKind::IndexAckedByTwoLeaders), "{:?}", report.violations);
            assert_eq!(report.dual_primaries().count(), report.violations.len());
            let text = report.violations[0].to_string();
            assert!(text.starts_with("log index 6 acknowledged by T2-N1 and by T4-N3"), "{text}");
        }
    }

    #[test]
    fn log_order_against_term_order_is_flagged() {
        // Node 1, deposed in term 4, acknowledges index 12 after node 3 committed 8..10.
        let mut stamps = good();
        stamps.push(rec(7, 1, 2, 12, 1000));
        let report = check_primaries(&stamps, LeaderRule::OnePerTerm);
        assert_eq!(kinds(&report), [ViolationKind::LogOrderAgainstLeaderOrder]);
        let violation = &report.violations[0];
        // The witness is the higher leader's first acknowledgement.
        assert_eq!((violation.first.ack.index, violation.second.map(|b| b.ack.index)), (8, Some(12)));
        assert!(violation.to_string().starts_with("T2-N1 acknowledged index 12 after T4-N3 had acknowledged index 8"));
        // The same without any time information: the log alone decides.
        let timeless: Vec<AckRecord> =
            stamps.iter().map(|r| AckRecord { ack: Ack { mono_ns: 0, ..r.ack }, ..*r }).collect();
        assert_eq!(
            kinds(&check_primaries(&timeless, LeaderRule::TermAndNode)),
            [ViolationKind::LogOrderAgainstLeaderOrder]
        );
        // Several such acknowledgements between the same two leaders are one violation.
        stamps.push(rec(8, 1, 2, 13, 1001));
        let report = check_primaries(&stamps, LeaderRule::OnePerTerm);
        assert_eq!(report.violations.len(), 1);
        assert_eq!(report.violations[0].count, 2);
    }

    #[test]
    fn one_entry_acknowledged_for_two_operations_is_flagged() {
        // A leader back in its old term writes another entry under a log id it used.
        let mut stamps = good();
        stamps.push(rec(7, 3, 4, 9, 990));
        let report = check_primaries(&stamps, LeaderRule::TermAndNode);
        assert_eq!(kinds(&report), [ViolationKind::EntryAckedTwice]);
        assert!(report.violations[0].to_string().contains("op #5 and op #7"));
        // The same operation recorded twice is not a second acknowledgement.
        let mut doubled = good();
        doubled.push(good()[2]);
        assert!(check_primaries(&doubled, LeaderRule::TermAndNode).passed());
    }

    #[test]
    fn stamps_outside_their_operation_are_flagged_but_not_as_dual_primaries() {
        let mut stamps = good();
        stamps[0].window = Some((5 * MS, 11 * MS)); // inside
        stamps[1].window = Some((13 * MS, 20 * MS)); // stamped before it was sent
        let report = check_primaries(&stamps, LeaderRule::TermAndNode);
        assert_eq!(kinds(&report), [ViolationKind::StampOutsideOperation]);
        assert_eq!(report.dual_primaries().count(), 0);
        assert_eq!(report.stamp_problems().count(), 1);
        assert!(!report.passed());
        assert!(report.to_string().contains("1 implausible stamps"), "{report}");
    }

    #[test]
    fn headers_parse_strictly_and_round_trip() {
        let ack = Ack::parse("node=2 term=7 index=1234 mono_ns=5678").unwrap();
        assert_eq!(ack, Ack { node: 2, term: 7, index: 1234, mono_ns: 5678 });
        assert_eq!(Ack::parse(&ack.to_string()), Ok(ack));
        assert_eq!(Ack::parse(" mono_ns=5678 index=1234 term=7  node=2 "), Ok(ack));
        for bad in [
            "",
            "node=2 term=7 index=1234",
            "node=2 term=7 index=-1 mono_ns=1",
            "node=2 term=7 index=1 mono_ns=1 node=2",
            "node=2 term=7 index=1 mono_ns=1 leader=2",
            "node:2 term=7 index=1 mono_ns=1",
        ] {
            assert!(Ack::parse(bad).is_err(), "{bad:?}");
        }
    }

    /// A legal run: reigns in increasing leader order, each acknowledging increasing
    /// indexes above the last reign's (with gaps for entries nobody was answered for), at
    /// times that may overlap the next reign's (late answers). `same_term` allows a leader
    /// to follow another within one term (a higher node), as openraft's leader ids do.
    fn legal(same_term: bool) -> impl Strategy<Value = Vec<AckRecord>> {
        let reign = (0u64..3, 1u64..6, proptest::collection::vec((1u64..4, 0u64..2_000, 0u64..50), 0..12));
        (proptest::collection::vec(reign, 1..8), any::<u64>()).prop_map(move |(reigns, shuffle)| {
            let mut records = Vec::new();
            let (mut term, mut node, mut index, mut start, mut op) = (1u64, 0u64, 0u64, 0u64, 0u64);
            for (step, next_node, acks) in reigns {
                let step = if same_term { step } else { step.max(1) };
                if step == 0 && next_node <= node {
                    // Same term needs a higher node; otherwise move to the next term.
                    term += 1;
                } else {
                    term += step;
                }
                node = next_node;
                start += 100 * MS;
                let mut mono = start;
                for (gap, jitter_ms, slack_ms) in acks {
                    index += gap;
                    mono += jitter_ms * 1000;
                    let ack = Ack { node, term, index, mono_ns: mono + jitter_ms * MS };
                    let window = Some((ack.mono_ns.saturating_sub(slack_ms * MS + 1), ack.mono_ns + slack_ms * MS));
                    records.push(AckRecord { op, ack, window });
                    op += 1;
                }
            }
            // Arrival order means nothing.
            let len = records.len().max(1) as u64;
            records.rotate_left((shuffle % len) as usize);
            if shuffle & 1 == 1 {
                records.reverse();
            }
            records
        })
    }

    proptest! {
        #[test]
        fn legal_sequences_pass(records in legal(false)) {
            for rule in [LeaderRule::OnePerTerm, LeaderRule::TermAndNode] {
                let report = check_primaries(&records, rule);
                prop_assert!(report.passed(), "{:?}", report.violations);
                prop_assert_eq!(report.reigns.iter().map(|r| r.acks).sum::<usize>(), records.len());
            }
        }

        #[test]
        fn legal_sequences_with_leaders_sharing_terms_pass_under_term_and_node(records in legal(true)) {
            let report = check_primaries(&records, LeaderRule::TermAndNode);
            prop_assert!(report.passed(), "{:?}", report.violations);
        }

        #[test]
        fn moving_one_ack_across_a_handover_is_flagged(records in legal(true), pick in any::<usize>(), up in any::<bool>()) {
            let leaders: BTreeSet<LeaderId> = records.iter().map(|r| r.ack.leader()).collect();
            prop_assume!(leaders.len() >= 2);
            let lowest = *leaders.first().unwrap();
            let highest = *leaders.last().unwrap();
            let mut records = records;
            if up {
                // An early leader acknowledges above everything: after its successors.
                let top = records.iter().map(|r| r.ack.index).max().unwrap();
                let early: Vec<usize> = (0..records.len()).filter(|&i| records[i].ack.leader() == lowest).collect();
                records[early[pick % early.len()]].ack.index = top + 1;
            } else {
                // A late leader acknowledges at an index an earlier leader acknowledged.
                let taken: Vec<u64> =
                    records.iter().filter(|r| r.ack.leader() == lowest).map(|r| r.ack.index).collect();
                let late: Vec<usize> = (0..records.len()).filter(|&i| records[i].ack.leader() == highest).collect();
                records[late[pick % late.len()]].ack.index = taken[pick % taken.len()];
            }
            let report = check_primaries(&records, LeaderRule::TermAndNode);
            prop_assert!(report.dual_primaries().count() > 0, "not flagged: {:?}", records);
        }
    }
}
