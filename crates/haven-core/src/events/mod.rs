//! HA and role events: what happened, the positional arguments seed 002's hook script
//! receives for it, the bounded replicated event log, and who delivers each event.
//!
//! ```text
//!   the shell sees something ──▶ EventKind (Failover, RoleMoved, NoQuorum, ...)
//!        │ initial_owner(kind, observed_by, leader)        (delivery::initial_owner)
//!        ▼
//!   EventLog (replicated, bounded): EventRecord { seq, at_ms, node, kind, owner,
//!                                                 deliveries per channel }
//!        │                                   ▲ DeliveryRecord (hook ran, mail sent, ...)
//!        ▼                                   │
//!   due_for(me) ──▶ the owner runs the hook, sends the mail / webhook (rate-limited
//!                   per kind: rate_decision) and records the outcome
//!   OwnerWatch::reassignments (primary) ──▶ an owner that is gone or silent past the
//!                   bound is replaced: at least once, never zero
//! ```
//!
//! Everything here is pure: the log is a value the state machine will hold, and the
//! delivery decisions take the log, the members' health and the time as arguments. The
//! hook arguments of seed 002's six events are the ones `haven_server::alerts` has always
//! passed (it uses this module): `Failover <active host> <standby host>`, and so on.

use serde::Deserialize;
use serde::Serialize;

pub mod delivery;
pub mod log;
pub mod quorum;

/// Longest argument passed to the hook script and put in the mail, and longest text field
/// of an event in the log. Host names are at most 253 bytes and replication errors a line
/// or two; 4 KiB keeps a runaway message out of the log and the mail, far below Linux's
/// 128 KiB per argument (longer ones are cut on a character boundary). NUL bytes cannot
/// travel in argv and become U+FFFD.
pub const ARG_BYTES_MAX: usize = 4096;

/// An HA or role event, with its details. Seed 002's six events come first, with exactly
/// the fields its custom script receives; the others are Haven's (issue 17). Externally
/// tagged (serde's default), so it can be stored in the replicated log (see `codec`).
/// Variants are only ever appended: the position is the stored tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// The standby took over: `"Failover" <active host> <standby host>`, on the new primary.
    Failover {
        active: String,
        standby: String,
    },
    /// A standby stopped answering: `"StandbyOffline" <standby node> <active node>`, on the
    /// primary.
    StandbyOffline {
        standby: String,
        active: String,
    },
    /// Haven's addition, the clear the seed lacks ("The StandbyOffline case does not have a
    /// clear"): `"StandbyOnline" <standby node> <active node>`, on the primary.
    StandbyOnline {
        standby: String,
        active: String,
    },
    /// A role swap (switchover): `"ManualSwitch" <active host> <standby host>`, on the new
    /// primary.
    ManualSwitch {
        active: String,
        standby: String,
    },
    /// Replication error: `"RaiseAlarm" <alarm condition as text> <error message>`.
    RaiseAlarm {
        condition: String,
        error: String,
    },
    /// Replication recovery: `"ClearAlarm" <text containing alarm condition and error message>`.
    ClearAlarm {
        text: String,
    },
    /// A role's start command was started on `node` under `epoch`.
    RoleStarted {
        role: String,
        node: u64,
        epoch: u64,
    },
    /// A role was stopped on `node` (its epoch ended there), and why.
    RoleStopped {
        role: String,
        node: u64,
        epoch: u64,
        reason: String,
    },
    /// A role was placed on `to` under a new `epoch` (`from`: its previous holder).
    RoleMoved {
        role: String,
        from: Option<u64>,
        to: u64,
        epoch: u64,
        reason: String,
    },
    /// A role's check failed its allowed number of times in a row on `node`.
    RoleFailed {
        role: String,
        node: u64,
        epoch: u64,
        reason: String,
    },
    MemberJoined {
        node: u64,
    },
    MemberLeft {
        node: u64,
    },
    /// A new version of the HA configuration was applied.
    ConfigApplied {
        version: u64,
        summary: String,
    },
    /// The cluster had no quorum from `start_ms` to `end_ms` (ms since the Unix epoch, by
    /// the clock of the node that saw it); recorded once a quorum is back.
    NoQuorum {
        start_ms: u64,
        end_ms: u64,
    },
    /// A quorum is back, with `leader` leading.
    QuorumRestored {
        leader: u64,
    },
}

impl EventKind {
    /// The event's name: the script's first parameter, `HAVEN_EVENT`, and the name rate
    /// limits are counted by.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Failover { .. } => "Failover",
            EventKind::StandbyOffline { .. } => "StandbyOffline",
            EventKind::StandbyOnline { .. } => "StandbyOnline",
            EventKind::ManualSwitch { .. } => "ManualSwitch",
            EventKind::RaiseAlarm { .. } => "RaiseAlarm",
            EventKind::ClearAlarm { .. } => "ClearAlarm",
            EventKind::RoleStarted { .. } => "RoleStarted",
            EventKind::RoleStopped { .. } => "RoleStopped",
            EventKind::RoleMoved { .. } => "RoleMoved",
            EventKind::RoleFailed { .. } => "RoleFailed",
            EventKind::MemberJoined { .. } => "MemberJoined",
            EventKind::MemberLeft { .. } => "MemberLeft",
            EventKind::ConfigApplied { .. } => "ConfigApplied",
            EventKind::NoQuorum { .. } => "NoQuorum",
            EventKind::QuorumRestored { .. } => "QuorumRestored",
        }
    }

    /// The hook script's parameters, the event name first: exactly seed 002's for its six
    /// events; for Haven's own events the subject first (role, node), then the rest (see
    /// `docs/roles.md`). Not yet cut to [`ARG_BYTES_MAX`]: see [`sanitize_arg`].
    pub fn args(&self) -> Vec<String> {
        let name = self.name().to_string();
        let none = || "none".to_string();
        match self {
            EventKind::Failover { active, standby } | EventKind::ManualSwitch { active, standby } => {
                vec![name, active.clone(), standby.clone()]
            }
            EventKind::StandbyOffline { standby, active } | EventKind::StandbyOnline { standby, active } => {
                vec![name, standby.clone(), active.clone()]
            }
            EventKind::RaiseAlarm { condition, error } => vec![name, condition.clone(), error.clone()],
            EventKind::ClearAlarm { text } => vec![name, text.clone()],
            EventKind::RoleStarted { role, node, epoch } => {
                vec![name, role.clone(), node.to_string(), epoch.to_string()]
            }
            EventKind::RoleStopped { role, node, epoch, reason }
            | EventKind::RoleFailed { role, node, epoch, reason } => {
                vec![name, role.clone(), node.to_string(), epoch.to_string(), reason.clone()]
            }
            EventKind::RoleMoved { role, from, to, epoch, reason } => vec![
                name,
                role.clone(),
                to.to_string(),
                from.map_or_else(none, |from| from.to_string()),
                epoch.to_string(),
                reason.clone(),
            ],
            EventKind::MemberJoined { node } | EventKind::MemberLeft { node } => vec![name, node.to_string()],
            EventKind::ConfigApplied { version, summary } => vec![name, version.to_string(), summary.clone()],
            EventKind::NoQuorum { start_ms, end_ms } => {
                vec![name, start_ms.to_string(), end_ms.to_string(), end_ms.saturating_sub(*start_ms).to_string()]
            }
            EventKind::QuorumRestored { leader } => vec![name, leader.to_string()],
        }
    }

    /// The role an event is about, if any (for `HAVEN_ROLE` beside the arguments).
    pub fn role(&self) -> Option<&str> {
        match self {
            EventKind::RoleStarted { role, .. }
            | EventKind::RoleStopped { role, .. }
            | EventKind::RoleMoved { role, .. }
            | EventKind::RoleFailed { role, .. } => Some(role),
            _ => None,
        }
    }

    /// The same event with every text field as it can travel in argv and be kept in the
    /// log: see [`sanitize_arg`]. Applied before an event is recorded, so the log holds
    /// exactly what the script receives.
    pub fn sanitized(self) -> EventKind {
        let s = |text: String| sanitize_arg(&text);
        match self {
            EventKind::Failover { active, standby } => EventKind::Failover { active: s(active), standby: s(standby) },
            EventKind::StandbyOffline { standby, active } => {
                EventKind::StandbyOffline { standby: s(standby), active: s(active) }
            }
            EventKind::StandbyOnline { standby, active } => {
                EventKind::StandbyOnline { standby: s(standby), active: s(active) }
            }
            EventKind::ManualSwitch { active, standby } => {
                EventKind::ManualSwitch { active: s(active), standby: s(standby) }
            }
            EventKind::RaiseAlarm { condition, error } => {
                EventKind::RaiseAlarm { condition: s(condition), error: s(error) }
            }
            EventKind::ClearAlarm { text } => EventKind::ClearAlarm { text: s(text) },
            EventKind::RoleStarted { role, node, epoch } => EventKind::RoleStarted { role: s(role), node, epoch },
            EventKind::RoleStopped { role, node, epoch, reason } => {
                EventKind::RoleStopped { role: s(role), node, epoch, reason: s(reason) }
            }
            EventKind::RoleMoved { role, from, to, epoch, reason } => {
                EventKind::RoleMoved { role: s(role), from, to, epoch, reason: s(reason) }
            }
            EventKind::RoleFailed { role, node, epoch, reason } => {
                EventKind::RoleFailed { role: s(role), node, epoch, reason: s(reason) }
            }
            EventKind::ConfigApplied { version, summary } => EventKind::ConfigApplied { version, summary: s(summary) },
            kind @ (EventKind::MemberJoined { .. }
            | EventKind::MemberLeft { .. }
            | EventKind::NoQuorum { .. }
            | EventKind::QuorumRestored { .. }) => kind,
        }
    }
}

/// An argument as it can travel in argv: NUL bytes replaced by U+FFFD, cut to
/// [`ARG_BYTES_MAX`] on a character boundary.
pub fn sanitize_arg(arg: &str) -> String {
    let mut text = arg.replace('\0', "\u{FFFD}");
    if text.len() > ARG_BYTES_MAX {
        let mut end = ARG_BYTES_MAX;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|item| item.to_string()).collect()
    }

    /// Seed 002's table, parameter by parameter, and Haven's own events: the exact
    /// positional arguments of every kind.
    #[test]
    fn hook_arguments_table() {
        let cases: Vec<(EventKind, Vec<&str>)> = vec![
            (
                EventKind::Failover { active: "n2.example".into(), standby: "n1.example".into() },
                vec!["Failover", "n2.example", "n1.example"],
            ),
            (
                EventKind::StandbyOffline { standby: "node 3".into(), active: "node 2".into() },
                vec!["StandbyOffline", "node 3", "node 2"],
            ),
            (
                EventKind::StandbyOnline { standby: "node 3".into(), active: "node 2".into() },
                vec!["StandbyOnline", "node 3", "node 2"],
            ),
            (EventKind::ManualSwitch { active: "a".into(), standby: "b".into() }, vec!["ManualSwitch", "a", "b"]),
            (
                EventKind::RaiseAlarm { condition: "lag".into(), error: "behind".into() },
                vec!["RaiseAlarm", "lag", "behind"],
            ),
            (EventKind::ClearAlarm { text: "caught up".into() }, vec!["ClearAlarm", "caught up"]),
            (EventKind::RoleStarted { role: "mgmt".into(), node: 2, epoch: 7 }, vec!["RoleStarted", "mgmt", "2", "7"]),
            (
                EventKind::RoleStopped { role: "mgmt".into(), node: 2, epoch: 7, reason: "moved".into() },
                vec!["RoleStopped", "mgmt", "2", "7", "moved"],
            ),
            (
                EventKind::RoleMoved { role: "mgmt".into(), from: Some(2), to: 1, epoch: 8, reason: "r".into() },
                vec!["RoleMoved", "mgmt", "1", "2", "8", "r"],
            ),
            (
                EventKind::RoleMoved { role: "mgmt".into(), from: None, to: 1, epoch: 1, reason: "r".into() },
                vec!["RoleMoved", "mgmt", "1", "none", "1", "r"],
            ),
            (
                EventKind::RoleFailed { role: "mgmt".into(), node: 1, epoch: 8, reason: "check".into() },
                vec!["RoleFailed", "mgmt", "1", "8", "check"],
            ),
            (EventKind::MemberJoined { node: 4 }, vec!["MemberJoined", "4"]),
            (EventKind::MemberLeft { node: 4 }, vec!["MemberLeft", "4"]),
            (
                EventKind::ConfigApplied { version: 3, summary: "failback: false -> true".into() },
                vec!["ConfigApplied", "3", "failback: false -> true"],
            ),
            (EventKind::NoQuorum { start_ms: 1_000, end_ms: 4_500 }, vec!["NoQuorum", "1000", "4500", "3500"]),
            (EventKind::QuorumRestored { leader: 3 }, vec!["QuorumRestored", "3"]),
        ];
        for (kind, expected) in cases {
            assert_eq!(kind.args(), strings(&expected), "{kind:?}");
            assert_eq!(kind.args()[0], kind.name());
        }
    }

    #[test]
    fn arguments_are_cut_on_character_boundaries() {
        assert_eq!(sanitize_arg("a\0b"), "a\u{FFFD}b");
        let long = "é".repeat(ARG_BYTES_MAX);
        let cut = sanitize_arg(&long);
        assert!(cut.len() <= ARG_BYTES_MAX && cut.len() >= ARG_BYTES_MAX - 1);
        let event = EventKind::RaiseAlarm { condition: "x\0".into(), error: long }.sanitized();
        assert_eq!(event.args()[1], "x\u{FFFD}");
        assert!(event.args()[2].len() <= ARG_BYTES_MAX);
    }

    /// Every kind survives the replicated store's encoding (an internally tagged enum
    /// would not: see `codec`).
    #[test]
    fn every_kind_round_trips_through_the_codec() {
        let kinds = vec![
            EventKind::Failover { active: "a".into(), standby: "b".into() },
            EventKind::ClearAlarm { text: "t".into() },
            EventKind::RoleMoved { role: "r".into(), from: None, to: 1, epoch: 2, reason: "x".into() },
            EventKind::NoQuorum { start_ms: 1, end_ms: 2 },
            EventKind::QuorumRestored { leader: 3 },
        ];
        for kind in kinds {
            let bytes = crate::codec::encode(&kind).unwrap();
            assert_eq!(crate::codec::decode::<EventKind>(&bytes).unwrap(), kind);
        }
    }
}
