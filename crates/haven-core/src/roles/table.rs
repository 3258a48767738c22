//! The replicated role table: definitions, where each role is placed and under which
//! epoch, and the cluster-wide epoch counter. A value for the state machine (not yet in
//! `kv.rs`: the server wiring comes with the HA engine), changed only by [`RoleChange`]s.
//!
//! ```text
//!   Define(definition)            ── new or replaced definition (placement kept)
//!   Delete(name)                  ── gone at once if unplaced, else `deleting` until its
//!                                    holder released it or its lease certainly ended
//!   RequestMove(name, to)         ── the operator's `haven roles move`
//!   Place(name, node, epoch, replaces) ── compare-and-set on the role's epoch; the new
//!                                    epoch must exceed every epoch ever given out
//!   Release(name, node, epoch, failed) ── the holder stopped it (check failures: failed)
//!   Vacate(name, epoch)           ── the primary: the holder's lease has certainly ended
//!        │ apply(change, at_ms)
//!        ▼
//!   Ok(events to record: RoleMoved, RoleStopped, RoleFailed) | Err(RoleRefusal)
//! ```
//!
//! The epoch rules make fencing hold whatever order proposals arrive in: epochs only
//! increase, cluster-wide, so a database that remembers the highest epoch it saw refuses
//! every older holder; a placement applies only if the role's epoch is still the one the
//! proposer saw, so two primaries (one deposed) cannot both place it. Every change is
//! deterministic: time comes from the proposing leader's stamp.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::Serialize;

use crate::events::sanitize_arg;
use crate::events::EventKind;
use crate::roles::definition::RoleDefinition;
use crate::roles::definition::ROLES_MAX;

/// Where a role stands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleState {
    /// The node the role is placed on; its lease may still be valid even after the
    /// placement ends (that is what the primary waits out).
    pub holder: Option<u64>,
    /// The epoch of the current (or last) placement; 0 = never placed.
    pub epoch: u64,
    /// When the current placement was made (the leader's clock, ms since the Unix epoch).
    pub since_ms: u64,
    /// The holder before the current placement ended (for RoleMoved's `from`).
    pub last_holder: Option<u64>,
    /// The node whose check failures ended the last placement: the next placement avoids
    /// it when another server can take the role.
    pub failed_on: Option<u64>,
    /// The operator asked to move the role there (`haven roles move`).
    pub requested_move: Option<u64>,
    /// Deleted by the operator; removed once no holder can still run it.
    pub deleting: bool,
}

/// A change to the role table, proposed through Raft.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RoleChange {
    Define(RoleDefinition),
    Delete { name: String },
    RequestMove { name: String, to: u64 },
    Place { name: String, node: u64, epoch: u64, replaces: u64, reason: String },
    Release { name: String, node: u64, epoch: u64, failed: bool, reason: String },
    Vacate { name: String, epoch: u64, reason: String },
}

/// Why a change was refused; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoleRefusal {
    #[error("no role named {name}")]
    UnknownRole { name: String },
    #[error("the role definition breaks {} rule(s): {}", .0.len(), crate::ha::config::join(.0.iter()))]
    Invalid(Vec<crate::ha::config::HaConfigError>),
    #[error("the cluster already has {} roles, the most it may have; delete one first", ROLES_MAX)]
    TooManyRoles,
    #[error("the role {name} is being deleted (its holder is stopping it); define it again once it is gone")]
    BeingDeleted { name: String },
    #[error("the role {name} is now at epoch {current}, not {expected}: another placement came first")]
    StaleEpoch { name: String, current: u64, expected: u64 },
    #[error("epoch {epoch} is not above {last}, the highest epoch given out; epochs only increase")]
    EpochNotIncreasing { epoch: u64, last: u64 },
    #[error("node {node} is not in the server list of the role {name}")]
    NotListed { name: String, node: u64 },
    #[error("the role {name} follows the primary; move the primary with `haven switchover` instead")]
    FollowsPrimary { name: String },
    #[error("the role {name} is not held by node {node} under epoch {epoch}")]
    NotHolder { name: String, node: u64, epoch: u64 },
}

/// All roles of the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleTable {
    roles: BTreeMap<String, (RoleDefinition, RoleState)>,
    /// The highest epoch ever given out, by any role: the next placement gets more.
    last_epoch: u64,
}

impl RoleTable {
    pub fn get(&self, name: &str) -> Option<(&RoleDefinition, &RoleState)> {
        self.roles.get(name).map(|(definition, state)| (definition, state))
    }

    pub fn roles(&self) -> impl Iterator<Item = (&RoleDefinition, &RoleState)> + '_ {
        self.roles.values().map(|(definition, state)| (definition, state))
    }

    pub fn last_epoch(&self) -> u64 {
        self.last_epoch
    }

    /// The epoch the next placement must carry.
    pub fn next_epoch(&self) -> u64 {
        self.last_epoch.saturating_add(1)
    }

    /// Applies a change stamped `at_ms` by the proposing leader; returns the events to
    /// record.
    pub fn apply(&mut self, change: RoleChange, at_ms: u64) -> Result<Vec<EventKind>, RoleRefusal> {
        match change {
            RoleChange::Define(definition) => {
                definition.validate(&[]).map_err(RoleRefusal::Invalid)?;
                match self.roles.get_mut(&definition.name) {
                    Some((_, state)) if state.deleting => {
                        return Err(RoleRefusal::BeingDeleted { name: definition.name });
                    }
                    Some((current, _)) => *current = definition,
                    None => {
                        if self.roles.len() >= ROLES_MAX {
                            return Err(RoleRefusal::TooManyRoles);
                        }
                        self.roles.insert(definition.name.clone(), (definition, RoleState::default()));
                    }
                }
                assert!(self.roles.len() <= ROLES_MAX);
                Ok(Vec::new())
            }
            RoleChange::Delete { name } => {
                let (_, state) = self.role_mut(&name)?;
                if state.holder.is_none() {
                    self.roles.remove(&name);
                } else {
                    state.deleting = true;
                    state.requested_move = None;
                }
                Ok(Vec::new())
            }
            RoleChange::RequestMove { name, to } => {
                let (definition, state) = self.role_mut(&name)?;
                if definition.follow_primary {
                    return Err(RoleRefusal::FollowsPrimary { name });
                }
                if definition.rank_of(to).is_none() {
                    return Err(RoleRefusal::NotListed { name, node: to });
                }
                if state.deleting {
                    return Err(RoleRefusal::BeingDeleted { name });
                }
                state.requested_move = Some(to);
                Ok(Vec::new())
            }
            RoleChange::Place { name, node, epoch, replaces, reason } => {
                let last = self.last_epoch;
                let (definition, state) = self.role_mut(&name)?;
                if state.deleting {
                    return Err(RoleRefusal::BeingDeleted { name });
                }
                if state.epoch != replaces {
                    return Err(RoleRefusal::StaleEpoch { name, current: state.epoch, expected: replaces });
                }
                if epoch <= last {
                    return Err(RoleRefusal::EpochNotIncreasing { epoch, last });
                }
                if !definition.follow_primary && definition.rank_of(node).is_none() {
                    return Err(RoleRefusal::NotListed { name, node });
                }
                let from = state.holder.or(state.last_holder);
                *state = RoleState {
                    holder: Some(node),
                    epoch,
                    since_ms: at_ms,
                    last_holder: from,
                    failed_on: None,
                    requested_move: state.requested_move.filter(|&to| to != node),
                    deleting: false,
                };
                self.last_epoch = epoch;
                Ok(vec![EventKind::RoleMoved { role: name, from, to: node, epoch, reason: sanitize_arg(&reason) }])
            }
            RoleChange::Release { name, node, epoch, failed, reason } => {
                let (_, state) = self.role_mut(&name)?;
                if state.holder != Some(node) || state.epoch != epoch {
                    return Err(RoleRefusal::NotHolder { name, node, epoch });
                }
                state.holder = None;
                state.last_holder = Some(node);
                state.failed_on = failed.then_some(node);
                let reason = sanitize_arg(&reason);
                let event = if failed {
                    EventKind::RoleFailed { role: name.clone(), node, epoch, reason }
                } else {
                    EventKind::RoleStopped { role: name.clone(), node, epoch, reason }
                };
                self.remove_if_deleted(&name);
                Ok(vec![event])
            }
            RoleChange::Vacate { name, epoch, reason } => {
                let (_, state) = self.role_mut(&name)?;
                let Some(node) = state.holder.filter(|_| state.epoch == epoch) else {
                    return Err(RoleRefusal::StaleEpoch { name, current: state.epoch, expected: epoch });
                };
                state.holder = None;
                state.last_holder = Some(node);
                self.remove_if_deleted(&name);
                Ok(vec![EventKind::RoleStopped { role: name, node, epoch, reason: sanitize_arg(&reason) }])
            }
        }
    }

    fn role_mut(&mut self, name: &str) -> Result<(&RoleDefinition, &mut RoleState), RoleRefusal> {
        self.roles
            .get_mut(name)
            .map(|(definition, state)| (&*definition, state))
            .ok_or_else(|| RoleRefusal::UnknownRole { name: name.to_string() })
    }

    fn remove_if_deleted(&mut self, name: &str) {
        if self.roles.get(name).is_some_and(|(_, state)| state.deleting && state.holder.is_none()) {
            self.roles.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::roles::definition::CommandLine;

    fn role(name: &str, servers: &[u64]) -> RoleDefinition {
        RoleDefinition::new(name, servers, CommandLine::new("/opt/start", &[]), CommandLine::new("/opt/stop", &[]))
    }

    fn place(name: &str, node: u64, epoch: u64, replaces: u64) -> RoleChange {
        RoleChange::Place { name: name.into(), node, epoch, replaces, reason: "test".into() }
    }

    fn release(name: &str, node: u64, epoch: u64, failed: bool) -> RoleChange {
        RoleChange::Release { name: name.into(), node, epoch, failed, reason: "test".into() }
    }

    /// A sequence of changes and, for each, what it produced: the epochs only increase
    /// across all roles, placements are compare-and-set, releases only from the holder.
    #[test]
    fn role_table_sequence() {
        let mut table = RoleTable::default();
        assert_eq!(table.apply(RoleChange::Define(role("a", &[1, 2])), 10), Ok(vec![]));
        assert_eq!(table.apply(RoleChange::Define(role("b", &[2, 1])), 10), Ok(vec![]));
        assert_eq!(table.next_epoch(), 1);
        assert_eq!(
            table.apply(place("a", 1, 1, 0), 20),
            Ok(vec![EventKind::RoleMoved { role: "a".into(), from: None, to: 1, epoch: 1, reason: "test".into() }])
        );
        // Another role takes the next epoch: one counter for the cluster.
        assert_eq!(table.apply(place("b", 2, 1, 0), 21), Err(RoleRefusal::EpochNotIncreasing { epoch: 1, last: 1 }));
        assert!(table.apply(place("b", 2, 2, 0), 21).is_ok());
        // A second primary that saw epoch 0 for role a loses the race.
        assert_eq!(
            table.apply(place("a", 2, 3, 0), 22),
            Err(RoleRefusal::StaleEpoch { name: "a".into(), current: 1, expected: 0 })
        );
        // Not listed.
        assert_eq!(table.apply(place("a", 5, 3, 1), 22), Err(RoleRefusal::NotListed { name: "a".into(), node: 5 }));
        // Release only by the holder of that epoch.
        assert_eq!(
            table.apply(release("a", 2, 1, false), 23),
            Err(RoleRefusal::NotHolder { name: "a".into(), node: 2, epoch: 1 })
        );
        assert_eq!(
            table.apply(release("a", 1, 1, true), 23),
            Ok(vec![EventKind::RoleFailed { role: "a".into(), node: 1, epoch: 1, reason: "test".into() }])
        );
        let (_, state) = table.get("a").unwrap();
        assert_eq!((state.holder, state.failed_on, state.last_holder), (None, Some(1), Some(1)));
        // The next placement names the previous holder and clears the failure mark.
        assert_eq!(
            table.apply(place("a", 2, 3, 1), 30),
            Ok(vec![EventKind::RoleMoved { role: "a".into(), from: Some(1), to: 2, epoch: 3, reason: "test".into() }])
        );
        let (_, state) = table.get("a").unwrap();
        assert_eq!((state.holder, state.epoch, state.since_ms, state.failed_on), (Some(2), 3, 30, None));
        // Vacate: only for the current epoch; then the role has no holder.
        assert_eq!(
            table.apply(RoleChange::Vacate { name: "a".into(), epoch: 1, reason: "x".into() }, 40),
            Err(RoleRefusal::StaleEpoch { name: "a".into(), current: 3, expected: 1 })
        );
        assert_eq!(
            table.apply(RoleChange::Vacate { name: "a".into(), epoch: 3, reason: "lease ended".into() }, 40),
            Ok(vec![EventKind::RoleStopped { role: "a".into(), node: 2, epoch: 3, reason: "lease ended".into() }])
        );
        assert_eq!(table.get("a").unwrap().1.holder, None);
        assert_eq!(table.last_epoch(), 3);
        // Placing with a holder still recorded (the lease certainly ended): from = it.
        table.apply(place("b", 1, 4, 2), 50).unwrap();
        assert_eq!(table.get("b").unwrap().1.last_holder, Some(2));
    }

    #[test]
    fn deleting_waits_for_the_holder() {
        let mut table = RoleTable::default();
        table.apply(RoleChange::Define(role("a", &[1, 2])), 0).unwrap();
        table.apply(RoleChange::Define(role("idle", &[1])), 0).unwrap();
        table.apply(RoleChange::Delete { name: "idle".into() }, 0).unwrap();
        assert!(table.get("idle").is_none(), "an unplaced role goes at once");
        table.apply(place("a", 1, 1, 0), 0).unwrap();
        table.apply(RoleChange::Delete { name: "a".into() }, 0).unwrap();
        assert!(table.get("a").unwrap().1.deleting);
        assert_eq!(
            table.apply(RoleChange::Define(role("a", &[2])), 0),
            Err(RoleRefusal::BeingDeleted { name: "a".into() })
        );
        assert_eq!(table.apply(place("a", 2, 2, 1), 0), Err(RoleRefusal::BeingDeleted { name: "a".into() }));
        table.apply(release("a", 1, 1, false), 0).unwrap();
        assert!(table.get("a").is_none(), "gone once released");
        table.apply(RoleChange::Define(role("a", &[2])), 0).unwrap();
        assert_eq!(table.next_epoch(), 2, "epochs go on after a delete");
        assert_eq!(
            table.apply(RoleChange::Delete { name: "zzz".into() }, 0),
            Err(RoleRefusal::UnknownRole { name: "zzz".into() })
        );
    }

    #[test]
    fn moves_and_limits() {
        let mut table = RoleTable::default();
        table.apply(RoleChange::Define(role("a", &[1, 2])), 0).unwrap();
        assert_eq!(
            table.apply(RoleChange::RequestMove { name: "a".into(), to: 3 }, 0),
            Err(RoleRefusal::NotListed { name: "a".into(), node: 3 })
        );
        table.apply(RoleChange::RequestMove { name: "a".into(), to: 2 }, 0).unwrap();
        assert_eq!(table.get("a").unwrap().1.requested_move, Some(2));
        table.apply(place("a", 2, 1, 0), 0).unwrap();
        assert_eq!(table.get("a").unwrap().1.requested_move, None, "done once placed there");
        let follower = RoleDefinition { servers: vec![], follow_primary: true, ..role("p", &[]) };
        table.apply(RoleChange::Define(follower), 0).unwrap();
        assert_eq!(
            table.apply(RoleChange::RequestMove { name: "p".into(), to: 1 }, 0),
            Err(RoleRefusal::FollowsPrimary { name: "p".into() })
        );
        table.apply(place("p", 7, 2, 0), 0).expect("a follow-primary role goes to whichever node leads");
        let bad = role("Bad", &[]);
        assert!(
            matches!(table.apply(RoleChange::Define(bad), 0), Err(RoleRefusal::Invalid(errors)) if errors.len() == 2)
        );
        for index in table.roles().count()..ROLES_MAX {
            table.apply(RoleChange::Define(role(&format!("r{index}"), &[1])), 0).unwrap();
        }
        assert_eq!(table.apply(RoleChange::Define(role("one-more", &[1])), 0), Err(RoleRefusal::TooManyRoles));
        // Replacing an existing definition is not a new role.
        table.apply(RoleChange::Define(role("a", &[2, 1])), 0).unwrap();
        assert_eq!(table.get("a").unwrap().0.servers, vec![2, 1]);
        assert_eq!(table.get("a").unwrap().1.holder, Some(2), "the placement is kept");
    }

    #[test]
    fn the_table_round_trips_through_the_codec() {
        let mut table = RoleTable::default();
        table.apply(RoleChange::Define(role("a", &[1, 2])), 0).unwrap();
        table.apply(place("a", 1, 1, 0), 5).unwrap();
        table.apply(RoleChange::RequestMove { name: "a".into(), to: 2 }, 6).unwrap();
        let bytes = crate::codec::encode(&table).unwrap();
        assert_eq!(crate::codec::decode::<RoleTable>(&bytes).unwrap(), table);
        let change = place("a", 2, 2, 1);
        let bytes = crate::codec::encode(&change).unwrap();
        assert_eq!(crate::codec::decode::<RoleChange>(&bytes).unwrap(), change);
    }
}
