//! Replicas compare their state (issue 13, item 1; etcd's hash-KV corruption check).
//!
//! Checksums catch damage to what is stored or sent; they cannot catch a replica that
//! applied the same log to a different result (a bug, memory corruption, damage that
//! passed a check). So every node remembers the digest of its state after each of its
//! last [`DIGESTS_KEPT`] applied log entries, and asks its peers for theirs at the same log
//! index: the same index must give the same digest on every replica.
//!
//! ```text
//!   node A ── StateDigest { index: A's last applied } ──▶ node B
//!          ◀── B's (index, digest): at that index if B has it, else at B's own last ──
//!   A looks the index up in its own ring: Same, Different, or Unknown (not in reach)
//!   verdict(A's comparisons): a node that differs from a peer and agrees with none
//!   is the divergent one: it raises RaiseAlarm and stops serving reads
//! ```
//!
//! With three replicas and one diverged, the diverged one differs from both others and
//! agrees with neither, so it stops; the two others each see one difference and one
//! agreement and go on, alarming about the one. With two replicas that differ neither can
//! tell which is right, so both stop serving reads (writes go on: the log is the truth and
//! a rebuilt replica replays it).

use std::collections::VecDeque;

use serde::Deserialize;
use serde::Serialize;

/// Digests a node remembers, one per applied log entry: the window within which two
/// replicas can be compared. 4096 entries is about 0.7 s of writes at the highest rate
/// measured (5,596 puts/s at concurrency 64, docs/benchmarks.md), far more than a healthy
/// follower lags behind the peer that asks it; 24 bytes each (index and digest), 96 KiB.
pub const DIGESTS_KEPT: usize = 4096;

/// What the replicas compare: the revision and the digest of every key's entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateDigest {
    pub revision: u64,
    pub entries: u64,
}

impl std::fmt::Display for StateDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "revision {} digest {:016x}", self.revision, self.entries)
    }
}

/// The digests after the last applied entries, by log index.
#[derive(Debug, Clone, Default)]
pub struct DigestRing {
    digests: VecDeque<(u64, StateDigest)>,
}

impl DigestRing {
    /// Records the digest after applying `index`. Indexes only grow; a lower one (a
    /// snapshot installed behind, which openraft does not do) restarts the ring.
    pub fn record(&mut self, index: u64, digest: StateDigest) {
        if self.digests.back().is_some_and(|(last, _)| *last >= index) {
            self.digests.clear();
        }
        self.digests.push_back((index, digest));
        while self.digests.len() > DIGESTS_KEPT {
            self.digests.pop_front();
        }
    }

    /// The digest after `index`, if it is in reach.
    pub fn at(&self, index: u64) -> Option<StateDigest> {
        let position = self.digests.binary_search_by_key(&index, |(at, _)| *at).ok()?;
        Some(self.digests[position].1)
    }

    /// The last recorded index and digest.
    pub fn last(&self) -> Option<(u64, StateDigest)> {
        self.digests.back().copied()
    }

    /// `at_index` if in reach, else the last one: what a node answers when asked.
    pub fn answer(&self, at_index: u64) -> Option<(u64, StateDigest)> {
        self.at(at_index).map(|digest| (at_index, digest)).or_else(|| self.last())
    }
}

/// How this node's state compares with one peer's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Comparison {
    /// The same digest at the same log index.
    Same { index: u64 },
    /// Different digests at the same log index.
    Different { index: u64, ours: StateDigest, theirs: StateDigest },
    /// No common index in reach (or the peer did not answer).
    Unknown,
}

/// Compares a peer's answer `(index, digest)` with this node's ring.
pub fn compare(ours: &DigestRing, theirs: Option<(u64, StateDigest)>) -> Comparison {
    let Some((index, theirs)) = theirs else { return Comparison::Unknown };
    match ours.at(index) {
        Some(ours) if ours == theirs => Comparison::Same { index },
        Some(ours) => Comparison::Different { index, ours, theirs },
        None => Comparison::Unknown,
    }
}

/// What a round of comparisons says about this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// No difference seen.
    Consistent,
    /// Some peers differ from this node but others agree with it: they are suspect, this
    /// node goes on. `peers` lists the differing ones.
    PeersDiffer { peers: Vec<u64> },
    /// This node differs from every peer it could compare with: its state is the suspect
    /// one. It must stop serving reads.
    Diverged { reason: String },
}

/// The verdict from this node's comparisons with its peers (`(peer id, comparison)`).
pub fn verdict(comparisons: &[(u64, Comparison)]) -> Verdict {
    let agree = comparisons.iter().filter(|(_, c)| matches!(c, Comparison::Same { .. })).count();
    let differing: Vec<(u64, String)> = comparisons
        .iter()
        .filter_map(|(peer, comparison)| match comparison {
            Comparison::Different { index, ours, theirs } => {
                Some((*peer, format!("after log entry {index} node {peer} has {theirs}, this node {ours}")))
            }
            Comparison::Same { .. } | Comparison::Unknown => None,
        })
        .collect();
    if differing.is_empty() {
        return Verdict::Consistent;
    }
    if agree > 0 {
        return Verdict::PeersDiffer { peers: differing.into_iter().map(|(peer, _)| peer).collect() };
    }
    let details: Vec<String> = differing.into_iter().map(|(_, detail)| detail).collect();
    Verdict::Diverged {
        reason: format!(
            "this node's state differs from every replica it could compare with ({}): it has diverged and serves no \
             reads. Rebuild it from the cluster (docs/architecture.md, \"Integrity\")",
            details.join("; ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(entries: u64) -> StateDigest {
        StateDigest { revision: entries, entries }
    }

    #[test]
    fn the_ring_answers_in_reach_and_forgets_beyond() {
        let mut ring = DigestRing::default();
        for index in 1..=(DIGESTS_KEPT as u64 + 10) {
            ring.record(index, digest(index * 7));
        }
        assert_eq!(ring.at(5), None, "beyond reach");
        assert_eq!(ring.at(20), Some(digest(140)));
        assert_eq!(ring.answer(20), Some((20, digest(140))));
        let last = DIGESTS_KEPT as u64 + 10;
        assert_eq!(ring.answer(last + 100), Some((last, digest(last * 7))), "ahead: our last");
        // A snapshot behind restarts it.
        ring.record(3, digest(1));
        assert_eq!(ring.last(), Some((3, digest(1))));
        assert_eq!(ring.at(20), None);
    }

    #[test]
    fn comparisons_need_a_common_index() {
        let mut ring = DigestRing::default();
        ring.record(10, digest(1));
        ring.record(11, digest(2));
        assert_eq!(compare(&ring, Some((11, digest(2)))), Comparison::Same { index: 11 });
        assert_eq!(
            compare(&ring, Some((10, digest(9)))),
            Comparison::Different { index: 10, ours: digest(1), theirs: digest(9) }
        );
        assert_eq!(compare(&ring, Some((12, digest(3)))), Comparison::Unknown);
        assert_eq!(compare(&ring, None), Comparison::Unknown);
    }

    /// The diverged replica of three stops; the two good ones go on and name it; two
    /// replicas that differ both stop; unknowns decide nothing.
    #[test]
    fn the_replica_that_agrees_with_nobody_is_the_diverged_one() {
        let different = Comparison::Different { index: 4, ours: digest(1), theirs: digest(2) };
        let same = Comparison::Same { index: 4 };
        let diverged = verdict(&[(2, different.clone()), (3, different.clone())]);
        assert!(
            matches!(&diverged, Verdict::Diverged { reason } if reason.contains("node 2") && reason.contains("node 3")),
            "{diverged:?}"
        );
        assert_eq!(verdict(&[(1, same.clone()), (3, different.clone())]), Verdict::PeersDiffer { peers: vec![3] });
        assert!(matches!(verdict(&[(2, different.clone())]), Verdict::Diverged { .. }));
        assert!(matches!(verdict(&[(2, different), (3, Comparison::Unknown)]), Verdict::Diverged { .. }));
        assert_eq!(verdict(&[(2, same), (3, Comparison::Unknown)]), Verdict::Consistent);
        assert_eq!(verdict(&[]), Verdict::Consistent);
    }
}
