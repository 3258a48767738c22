//! What a node that starts leading a term records in the audit log, and which alert it
//! fires: a failover, a planned take-over, or a witness that leads without being the
//! primary.
//!
//! ```text
//!   NewTerm { me, may I be primary?, term, previous leader (and whether it could be
//!             primary), last primary before me, the planned move naming me (if any) }
//!        │ record()
//!        ▼
//!   I may not be primary (witness, priority 0) ── "leader.elected": not the primary; no alert
//!   planned switchover / failback ─────────────── "primary.taken", ManualSwitch alert
//!   planned hand-off from a witness ───────────── "failover" from the last primary (the
//!                                                 witness only bridged it, whether or not
//!                                                 this node saw it lead), Failover alert
//!   unplanned, after a primary ────────────────── "failover", Failover alert
//!   unplanned, after a witness that bridged ───── "failover" from the last primary
//!   otherwise (first leader, restart) ─────────── "leader.elected"
//! ```
//!
//! The audit log names the primary only when it is one: a witness that wins an election
//! (it held the newest log) leads until a data node has caught up, acknowledges no client
//! write meanwhile, and is recorded as leading, never as the primary (issue 14).

use crate::admin::AuditChange;
use crate::admin::AuditEntry;

/// A term this node has just started leading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTerm {
    pub me: u64,
    /// This node is a data node with priority above 0.
    pub may_be_primary: bool,
    pub term: u64,
    /// The leader before this one as this node saw it, and whether it could be primary.
    pub previous_leader: Option<(u64, bool)>,
    /// The last leader this node saw that could be primary, other than itself.
    pub last_primary: Option<u64>,
    /// The action of the planned move (switchover, failback, handoff) that named this node
    /// as the next primary, if the last audit record is one.
    pub planned: Option<String>,
}

/// Which of seed 002's alerts the new leader fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaderAlert {
    /// An unplanned change of primary: `standby` is the primary that was lost.
    Failover { standby: u64 },
    /// A planned change: `standby` is the former primary.
    ManualSwitch { standby: u64 },
}

/// The audit record and the alert for a new term; see the module picture.
pub fn record(new: &NewTerm) -> (AuditEntry, Option<LeaderAlert>) {
    let me = new.me;
    let term = new.term;
    if !new.may_be_primary {
        return (
            AuditEntry::new(
                "leader.elected",
                format!(
                    "node {me} leads term {term} but may not be the primary (a witness or priority 0): it acknowledges \
                     no client write and hands leadership to a data node once one has caught up"
                ),
            ),
            None,
        );
    }
    let failover = |from: u64, how: &str| {
        let entry =
            AuditEntry::new("failover", format!("node {me} became the primary in term {term}; node {from} {how}"))
                .with_change(AuditChange::new("primary", Some(from.to_string()), Some(me.to_string())));
        (entry, Some(LeaderAlert::Failover { standby: from }))
    };
    let previous = new.previous_leader.filter(|(id, _)| *id != me);
    let last_primary = new.last_primary.filter(|id| *id != me);
    match (new.planned.as_deref(), previous) {
        // A hand-off (only a witness hands off) completes a failover the witness only
        // bridged, whether or not this node saw the witness lead: it may have caught up
        // and been handed leadership before it ever observed the witness's term.
        (Some("handoff"), _) => match last_primary {
            Some(lost) => failover(lost, "had been lost; a witness led meanwhile and handed over"),
            None => (taken(me, term), None),
        },
        (Some(_), Some((former, true))) => (taken(me, term), Some(LeaderAlert::ManualSwitch { standby: former })),
        (Some(_), _) => (taken(me, term), None),
        (None, Some((lost, true))) => failover(lost, "had stopped leading"),
        (None, Some((_, false))) => match last_primary {
            Some(lost) => failover(lost, "had been lost; a witness led meanwhile"),
            None => (elected(me, term), None),
        },
        (None, None) => (elected(me, term), None),
    }
}

fn taken(me: u64, term: u64) -> AuditEntry {
    AuditEntry::new("primary.taken", format!("node {me} took over as planned in term {term}"))
}

fn elected(me: u64, term: u64) -> AuditEntry {
    AuditEntry::new("leader.elected", format!("node {me} leads term {term}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn term(me: u64, may_be_primary: bool) -> NewTerm {
        NewTerm { me, may_be_primary, term: 7, previous_leader: None, last_primary: None, planned: None }
    }

    /// Who is recorded as primary, and which alert fires, for every way a term starts.
    #[test]
    fn the_audit_names_a_primary_only_when_there_is_one() {
        // (name, new term, action, primary change (old, new), alert)
        type Case = (&'static str, NewTerm, &'static str, Option<(&'static str, &'static str)>, Option<LeaderAlert>);
        let cases: Vec<Case> = vec![
            ("first leader", term(1, true), "leader.elected", None, None),
            (
                "failover from a data primary",
                NewTerm { previous_leader: Some((1, true)), last_primary: Some(1), ..term(2, true) },
                "failover",
                Some(("1", "2")),
                Some(LeaderAlert::Failover { standby: 1 }),
            ),
            (
                "a witness wins the election after the primary died: not a primary, no alert",
                NewTerm { previous_leader: Some((1, true)), last_primary: Some(1), ..term(3, false) },
                "leader.elected",
                None,
                None,
            ),
            (
                "the data node takes over from the witness: the failover from node 1 completes",
                NewTerm {
                    previous_leader: Some((3, false)),
                    last_primary: Some(1),
                    planned: Some("handoff".into()),
                    ..term(2, true)
                },
                "failover",
                Some(("1", "2")),
                Some(LeaderAlert::Failover { standby: 1 }),
            ),
            (
                "the hand-off reaches a data node that never saw the witness lead",
                NewTerm {
                    previous_leader: Some((1, true)),
                    last_primary: Some(1),
                    planned: Some("handoff".into()),
                    ..term(2, true)
                },
                "failover",
                Some(("1", "2")),
                Some(LeaderAlert::Failover { standby: 1 }),
            ),
            (
                "planned switchover",
                NewTerm {
                    previous_leader: Some((1, true)),
                    last_primary: Some(1),
                    planned: Some("switchover".into()),
                    ..term(2, true)
                },
                "primary.taken",
                None,
                Some(LeaderAlert::ManualSwitch { standby: 1 }),
            ),
            (
                "unplanned, after a witness that led and died",
                NewTerm { previous_leader: Some((3, false)), last_primary: Some(1), ..term(2, true) },
                "failover",
                Some(("1", "2")),
                Some(LeaderAlert::Failover { standby: 1 }),
            ),
            (
                "re-elected itself after a restart",
                NewTerm { previous_leader: Some((1, true)), last_primary: Some(1), ..term(1, true) },
                "leader.elected",
                None,
                None,
            ),
        ];
        for (name, new, action, primary, alert) in cases {
            let (entry, fired) = record(&new);
            assert_eq!(entry.action, action, "{name}: {entry:?}");
            let change = entry.changes.iter().find(|change| change.what == "primary");
            assert_eq!(
                change.map(|change| (change.old.as_deref().unwrap_or(""), change.new.as_deref().unwrap_or(""))),
                primary,
                "{name}"
            );
            assert_eq!(fired, alert, "{name}");
            if !new.may_be_primary {
                assert!(entry.summary.contains("may not be the primary"), "{name}: {}", entry.summary);
            }
        }
    }
}
