//! Storage that goes back in time: what each member was seen to hold on disk.
//!
//! ```text
//!   leader, every probe interval: replication progress (openraft counts a follower's
//!     append only once it is flushed there) ──▶ to_record ──▶ Command::RecordDurable
//!                                                              │ (through Raft)
//!   every replica: KvState::durable = { member: (incarnation, index) } ◀┘
//!
//!   any node sending to member m:  envelope.to_durable = durable[m]  (for m's incarnation)
//!   m, on receipt:   its log ends below it ──▶ rewound: no vote, no election, no leadership
//!                                              until its log reaches the mark again
//!   a candidate:     a vote whose voter's last log index is below durable[voter] is not
//!                    counted
//! ```
//!
//! A data dir restored from an older copy (a backup, a VM snapshot reverted) keeps its
//! incarnation, so the wiped-disk check lets it in; but it has forgotten entries it told a
//! leader it held durably, and a quorum may have counted it for them. If it votes with the
//! shorter log it can elect a leader that lacks acknowledged writes. The marks are that
//! knowledge, replicated: any member that applied a mark can tell the rewound node, and any
//! candidate can refuse its vote.
//!
//! What the marks cannot know: entries acknowledged after the last mark the deciding members
//! applied (one probe interval, or longer while they lag), and anything when every member
//! that applied a newer mark is down.
//!
//! Pure: the leader passes what it observed, replicas apply commands, nodes compare numbers.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::Serialize;

/// Members a record may list. A cluster has at most 7 voters and a few learners (read
/// replicas); 256 is far beyond any real membership and bounds what one command can make
/// every replica keep.
pub const DURABLE_MARKS_MAX: usize = 256;

/// A member's durability watermark: the highest log index a leader saw it hold on disk,
/// for its data dir with `incarnation` (a wiped disk starts over with a new incarnation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DurableMark {
    pub incarnation: String,
    pub index: u64,
}

/// The marks of the current members, by node id.
pub type DurableMarks = BTreeMap<u64, DurableMark>;

/// One member's entry in a record: node id, incarnation, index.
pub type MarkEntry = (u64, String, u64);

/// The marks after applying a record that lists every current member: a listed member keeps
/// the higher of its recorded and its listed index (a mark never goes down for one data
/// dir), a new incarnation starts over at its listed index, and members not listed (no
/// longer members) are dropped.
pub fn merged(recorded: &DurableMarks, listed: &[MarkEntry]) -> DurableMarks {
    listed
        .iter()
        .map(|(id, incarnation, index)| {
            let index = match recorded.get(id) {
                Some(old) if old.incarnation == *incarnation => old.index.max(*index),
                _ => *index,
            };
            (*id, DurableMark { incarnation: incarnation.clone(), index })
        })
        .collect()
}

/// How far a member's durable index may run ahead of its recorded mark before a leader
/// records it again. A record is itself a log entry: once the members hold it, their
/// durable indexes are one past the marks it listed. Recording that again would write one
/// entry per probe interval forever on an idle cluster; any other entry (a client's write)
/// moves them further and is recorded.
pub const MARK_RECORD_SLACK: u64 = 1;

/// What a leader observed about one member: its incarnation and the highest log index it is
/// known to hold on disk (`None`: nothing known yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub id: u64,
    pub incarnation: String,
    pub durable_index: Option<u64>,
}

/// The record a leader should propose, if it would change more than the record itself
/// does (see [`MARK_RECORD_SLACK`]): every member listed, each with the higher of its
/// recorded and observed index.
pub fn to_record(recorded: &DurableMarks, observed: &[Observed]) -> Option<Vec<MarkEntry>> {
    let mut advanced = false;
    let listed: Vec<MarkEntry> = observed
        .iter()
        .filter_map(|member| {
            let recorded_index =
                recorded.get(&member.id).filter(|mark| mark.incarnation == member.incarnation).map(|mark| mark.index);
            advanced |= match (recorded_index, member.durable_index) {
                (None, Some(_)) => true,
                (Some(mark), Some(durable)) => durable > mark.saturating_add(MARK_RECORD_SLACK),
                (_, None) => false,
            };
            let index = recorded_index.max(member.durable_index)?;
            Some((member.id, member.incarnation.clone(), index))
        })
        .collect();
    let left = recorded.keys().any(|id| !observed.iter().any(|member| member.id == *id));
    (advanced || left).then_some(listed)
}

/// Whether a node whose log ends at `log_end` (its last log index, the snapshot's included)
/// lost entries it was recorded as holding durably at `mark`.
pub fn rewound(log_end: u64, mark: u64) -> bool {
    log_end < mark
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(incarnation: &str, index: u64) -> DurableMark {
        DurableMark { incarnation: incarnation.into(), index }
    }

    fn observed(id: u64, incarnation: &str, durable_index: Option<u64>) -> Observed {
        Observed { id, incarnation: incarnation.into(), durable_index }
    }

    #[test]
    fn a_mark_never_goes_down_for_one_data_dir_and_starts_over_for_a_new_one() {
        let recorded = DurableMarks::from([(1, mark("a", 100)), (2, mark("b", 90)), (3, mark("c", 80))]);
        let after = merged(&recorded, &[(1, "a".into(), 50), (2, "b2".into(), 5), (4, "d".into(), 7)]);
        assert_eq!(after, DurableMarks::from([(1, mark("a", 100)), (2, mark("b2", 5)), (4, mark("d", 7))]));
    }

    #[test]
    fn a_leader_records_only_what_advances() {
        let recorded = DurableMarks::from([(1, mark("a", 100)), (2, mark("b", 90))]);
        // Nothing new: no record (an idle cluster writes nothing).
        assert_eq!(to_record(&recorded, &[observed(1, "a", Some(100)), observed(2, "b", Some(60))]), None);
        assert_eq!(to_record(&recorded, &[observed(1, "a", None), observed(2, "b", None)]), None);
        // The members holding the last record itself (one entry past the marks): no new
        // record, or an idle cluster would write one every interval.
        assert_eq!(to_record(&recorded, &[observed(1, "a", Some(101)), observed(2, "b", Some(91))]), None);
        // One member advanced: every member is listed, each with its best known index.
        assert_eq!(
            to_record(&recorded, &[observed(1, "a", Some(120)), observed(2, "b", Some(60))]),
            Some(vec![(1, "a".into(), 120), (2, "b".into(), 90)])
        );
        // A member that left is dropped; a new one is added once something is known of it.
        assert_eq!(to_record(&recorded, &[observed(1, "a", Some(100))]), Some(vec![(1, "a".into(), 100)]));
        assert_eq!(
            to_record(&recorded, &[observed(1, "a", None), observed(2, "b", None), observed(3, "c", Some(1))]),
            Some(vec![(1, "a".into(), 100), (2, "b".into(), 90), (3, "c".into(), 1)])
        );
    }

    #[test]
    fn only_a_log_below_the_mark_is_rewound() {
        assert!(rewound(99, 100));
        assert!(!rewound(100, 100));
        assert!(!rewound(500, 100));
    }
}
