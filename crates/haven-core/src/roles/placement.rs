//! Where a role runs: the primary's decision for one role, from the replicated table, the
//! members' health, its own memory of the role's lease, and the time.
//!
//! ```text
//!   holder none ──────────────── eligible server? ── yes ─▶ Place { node, next epoch }
//!        │                                          └ no ──▶ Unplaced
//!   holder h, not revoked ─ must it move? (deleted, no longer listed, not a member,
//!        │                   a witness, down past the grace, the operator's move,
//!        │                   failback, not the primary for follow-primary)
//!        │                   ├ no ──▶ Keep
//!        │                   └ yes ─▶ Revoke { h }: stop granting h's lease, tell h to stop
//!   holder h, revoked ────── h released it ─▶ (holder none, above)
//!                            lease certainly ended (lease.rs) ─▶ Place elsewhere | Vacate
//!                            otherwise ─▶ Wait { until }
//! ```
//!
//! Eligible: a data node (never a witness), a member, up, and in the role's list (for a
//! follow-primary role: the primary itself). The choice is the first eligible server of
//! the list (seed 004), except that the server whose checks just failed is passed over
//! when another can take it, and so is one within the anti-flap delay of losing it; the
//! operator's `haven roles move` target comes first. Failback uses the same rule as the
//! primary's own failback (`ha::failback::failback_step`): the higher-listed server must
//! have been up, and the holder must have held the role, for the stabilisation delay.
//!
//! A holder reported down is revoked only after [`HOLDER_DOWN_GRACE_MS`]: revoking
//! sooner would not move a dead holder's role any sooner (the wait counts from the last
//! grant, not from the revocation), but would move a role off a holder that missed a
//! few pings. Maintenance blocks failback; a role whose holder is gone is still moved
//! (a role with no running copy is not "no change").

use std::collections::BTreeMap;

use crate::ha::failback::failback_step;
use crate::ha::failback::flapping;
use crate::ha::failback::Contender;
use crate::ha::failback::FailbackStep;
use crate::ha::failback::Policy;
use crate::ha::NodeRole;
use crate::roles::definition::RoleDefinition;
use crate::roles::definition::ROLE_SERVERS_MAX;
use crate::roles::lease::GrantorLease;
use crate::roles::lease::LEASE_DURATION_MS;
use crate::roles::lease::LEASE_RENEW_INTERVAL_MS;
use crate::roles::lease::STOP_BUDGET_MS;
use crate::roles::table::RoleState;

/// How long the primary must have seen a holder down before it revokes the holder's
/// lease. Three seconds outlast a few lost pings (detection marks a node down after
/// about 200 ms by default); it is shorter than the time a cut-off holder keeps its role
/// (checked below), so a holder that is really gone loses nothing by it.
pub const HOLDER_DOWN_GRACE_MS: u64 = 3_000;

// A holder cut off for the grace has not yet begun to stop: it gets a renewal again
// before its lease enters the stop budget.
const _: () = assert!(HOLDER_DOWN_GRACE_MS + LEASE_RENEW_INTERVAL_MS <= LEASE_DURATION_MS - STOP_BUDGET_MS);

/// A member's health as the primary sees it (reachable and answering its probes, and not
/// withholding itself, e.g. because its ping targets are silent), with when that began on
/// the primary's monotonic clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Up { since_ms: u64 },
    Down { since_ms: u64 },
}

/// What the primary knows about one member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerFacts {
    pub id: u64,
    pub role: NodeRole,
    pub health: Health,
}

/// The primary and its surroundings, the same for every role in one round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrimaryView<'a> {
    /// The deciding node: the Raft leader (a follow-primary role's place).
    pub me: u64,
    pub members: &'a [ServerFacts],
    /// When this node became the primary (its monotonic clock).
    pub takeover_ms: u64,
    pub maintenance: bool,
    /// The stabilisation and anti-flap delays of the HA configuration (its `failback`
    /// flag is the primary's; each role has its own).
    pub policy: Policy,
    /// The epoch a placement made now must carry (`RoleTable::next_epoch`).
    pub next_epoch: u64,
    pub now_ms: u64,
}

/// The primary's memory of one role, on its monotonic clock (a new primary starts afresh).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoleMemory {
    epoch: u64,
    holder: Option<u64>,
    /// When this primary first saw the current placement.
    holder_since_ms: u64,
    /// This placement's lease, as granted by this primary.
    pub lease: GrantorLease,
    /// When each server last lost the role (anti-flap); at most [`ROLE_SERVERS_MAX`].
    last_lost_ms: BTreeMap<u64, u64>,
}

impl RoleMemory {
    /// Takes in the role's replicated state at `now_ms`: a new placement starts a new lease
    /// and tenure; a holder that lost the role is remembered for anti-flap.
    pub fn observe(&mut self, definition: &RoleDefinition, state: &RoleState, now_ms: u64) {
        if (state.epoch, state.holder) == (self.epoch, self.holder) {
            return;
        }
        if let Some(previous) = self.holder.filter(|&previous| state.holder != Some(previous)) {
            self.last_lost_ms.insert(previous, now_ms);
        }
        if state.epoch != self.epoch {
            self.lease = GrantorLease::default();
            self.holder_since_ms = now_ms;
        }
        self.epoch = state.epoch;
        self.holder = state.holder;
        self.last_lost_ms.retain(|node, _| definition.follow_primary || definition.rank_of(*node).is_some());
        while self.last_lost_ms.len() > ROLE_SERVERS_MAX {
            let oldest = self.last_lost_ms.iter().min_by_key(|(_, at_ms)| **at_ms).map(|(node, _)| *node);
            if let Some(node) = oldest {
                self.last_lost_ms.remove(&node);
            }
        }
    }

    pub fn holder_since_ms(&self) -> u64 {
        self.holder_since_ms
    }
}

/// The decision for one role, with the reason in words (for the log, events and status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    Keep {
        reason: String,
    },
    /// Propose `RoleChange::Place { node, epoch, replaces }`. The primary grants the new
    /// holder's lease only once it is committed, so the holder starts after the commit.
    Place {
        node: u64,
        epoch: u64,
        replaces: u64,
        reason: String,
    },
    /// The holder's lease is no longer granted (done by [`decide`]); the holder is told to
    /// stop and release the role.
    Revoke {
        holder: u64,
        epoch: u64,
        reason: String,
    },
    /// Revoked: waiting for the holder's release or the certain end of its lease.
    Wait {
        holder: u64,
        epoch: u64,
        until_ms: u64,
        reason: String,
    },
    /// The holder's lease has certainly ended and no server can take the role: propose
    /// `RoleChange::Vacate`, so the table says nobody holds it.
    Vacate {
        holder: u64,
        epoch: u64,
        reason: String,
    },
    /// Nobody holds it and nobody may: the HA status is not "stable".
    Unplaced {
        reason: String,
    },
}

/// Decides for one role (see the module picture). Revokes the holder's lease in `memory`
/// when it returns [`Placement::Revoke`]; call [`RoleMemory::observe`] first.
pub fn decide(
    definition: &RoleDefinition,
    state: &RoleState,
    memory: &mut RoleMemory,
    view: &PrimaryView<'_>,
) -> Placement {
    let now_ms = view.now_ms;
    let Some(holder) = state.holder else {
        if state.deleting {
            return Placement::Keep { reason: "deleted; nothing runs it".into() };
        }
        return match choose(definition, state, memory, view) {
            Some((node, why)) => Placement::Place { node, epoch: view.next_epoch, replaces: state.epoch, reason: why },
            None => Placement::Unplaced { reason: unplaced_reason(definition, view) },
        };
    };
    let epoch = state.epoch;
    if memory.lease.revoked_at_ms.is_some() {
        let ended_at_ms = memory.lease.certainly_ended_at_ms(view.takeover_ms);
        if now_ms < ended_at_ms {
            return Placement::Wait {
                holder,
                epoch,
                until_ms: ended_at_ms,
                reason: format!(
                    "waiting for node {holder} to release the role or for its lease (epoch {epoch}) to have \
                     certainly ended: {} ms more",
                    ended_at_ms - now_ms
                ),
            };
        }
        let ended = format!("the lease of node {holder} (epoch {epoch}) has certainly ended");
        if state.deleting {
            return Placement::Vacate { holder, epoch, reason: format!("{ended}; the role was deleted") };
        }
        return match choose(definition, state, memory, view) {
            Some((node, why)) => {
                Placement::Place { node, epoch: view.next_epoch, replaces: epoch, reason: format!("{ended}; {why}") }
            }
            None => {
                Placement::Vacate { holder, epoch, reason: format!("{ended}; {}", unplaced_reason(definition, view)) }
            }
        };
    }
    match reason_to_move(definition, state, holder, memory, view) {
        Ok(reason) => Placement::Keep { reason },
        Err(reason) => {
            memory.lease.revoke(now_ms);
            Placement::Revoke { holder, epoch, reason }
        }
    }
}

fn facts<'a>(view: &PrimaryView<'a>, id: u64) -> Option<&'a ServerFacts> {
    view.members.iter().find(|member| member.id == id)
}

/// A data member that is up.
fn up_data_node(view: &PrimaryView<'_>, id: u64) -> Option<u64> {
    let member = facts(view, id)?;
    match (member.role, member.health) {
        (NodeRole::Data, Health::Up { since_ms }) => Some(since_ms),
        _ => None,
    }
}

/// The server the role should go to now, with the reason, or none.
fn choose(
    definition: &RoleDefinition,
    state: &RoleState,
    memory: &RoleMemory,
    view: &PrimaryView<'_>,
) -> Option<(u64, String)> {
    if definition.follow_primary {
        return up_data_node(view, view.me)
            .map(|_| (view.me, format!("node {} is the primary and the role follows it", view.me)));
    }
    if let Some(to) = state.requested_move.filter(|&to| up_data_node(view, to).is_some()) {
        return Some((to, format!("the operator asked to move the role to node {to}")));
    }
    let eligible: Vec<u64> =
        definition.servers.iter().copied().filter(|&id| up_data_node(view, id).is_some()).collect();
    let failed = |id: u64| state.failed_on == Some(id);
    let flaps = |id: u64| flapping(memory.last_lost_ms.get(&id).copied(), view.now_ms, view.policy.anti_flap_ms);
    let first = |wanted: &dyn Fn(u64) -> bool| eligible.iter().copied().find(|&id| wanted(id));
    if let Some(node) = first(&|id| !failed(id) && !flaps(id)) {
        let skipped = state.failed_on.filter(|&failed_on| definition.rank_of(failed_on) < definition.rank_of(node));
        let why = match skipped {
            Some(failed_on) => format!(
                "node {node} is the next healthy data node of the list after node {failed_on}, whose checks failed"
            ),
            None => format!("node {node} is the first healthy data node of the list {:?}", definition.servers),
        };
        return Some((node, why));
    }
    if let Some(node) = first(&|id| !failed(id)) {
        return Some((node, format!("node {node} lost the role recently, but no other server can take it")));
    }
    first(&|_| true).map(|node| {
        (node, format!("the checks failed on node {node}, but no other server can take the role; trying it again"))
    })
}

fn unplaced_reason(definition: &RoleDefinition, view: &PrimaryView<'_>) -> String {
    if definition.follow_primary {
        return format!(
            "the primary, node {}, is not a healthy data node (a witness leads only to hand over)",
            view.me
        );
    }
    format!("none of the servers {:?} is a healthy data node", definition.servers)
}

/// `Ok(why it stays)` or `Err(why it must move)`.
fn reason_to_move(
    definition: &RoleDefinition,
    state: &RoleState,
    holder: u64,
    memory: &RoleMemory,
    view: &PrimaryView<'_>,
) -> Result<String, String> {
    let now_ms = view.now_ms;
    if state.deleting {
        return Err(format!("the role was deleted: node {holder} stops it"));
    }
    let Some(member) = facts(view, holder) else {
        return Err(format!("node {holder} is not a member any more"));
    };
    if member.role == NodeRole::Witness {
        return Err(format!("node {holder} is a witness now, and witnesses hold no roles"));
    }
    if definition.follow_primary && holder != view.me {
        return Err(format!("node {holder} is no longer the primary; node {} is", view.me));
    }
    if !definition.follow_primary && definition.rank_of(holder).is_none() {
        return Err(format!("node {holder} is no longer in the role's server list {:?}", definition.servers));
    }
    if let Health::Down { since_ms } = member.health {
        let down_ms = now_ms.saturating_sub(since_ms);
        if down_ms >= HOLDER_DOWN_GRACE_MS {
            return Err(format!("node {holder} has been down for {down_ms} ms"));
        }
        return Ok(format!(
            "node {holder} is down for {down_ms} ms; its lease is revoked after {HOLDER_DOWN_GRACE_MS} ms"
        ));
    }
    if let Some(to) = state.requested_move.filter(|&to| to != holder) {
        if up_data_node(view, to).is_some() {
            return Err(format!("the operator asked to move the role to node {to}"));
        }
        return Ok(format!("the operator asked to move the role to node {to}, which is not a healthy data node"));
    }
    let holds = format!("node {holder} holds it under epoch {}", state.epoch);
    if !definition.failback || definition.follow_primary {
        return Ok(holds);
    }
    if view.maintenance {
        return Ok(format!("{holds}; maintenance mode is on: no failback"));
    }
    let holder_rank = definition.rank_of(holder).unwrap_or(usize::MAX);
    let count = definition.servers.len();
    let contenders: Vec<Contender> = definition.servers[..holder_rank.min(count)]
        .iter()
        .enumerate()
        .filter_map(|(index, &id)| {
            let healthy_since_ms = up_data_node(view, id)?;
            Some(Contender {
                id,
                rank: u32::try_from(count - index).unwrap_or(u32::MAX),
                healthy_since_ms,
                last_lost_ms: memory.last_lost_ms.get(&id).copied(),
            })
        })
        .collect();
    match failback_step(&contenders, memory.holder_since_ms, now_ms, &view.policy) {
        FailbackStep::NoneBetter => Ok(holds),
        FailbackStep::Flapping { id, lost_ago_ms } => Ok(format!(
            "{holds}; node {id} lost the role {lost_ago_ms} ms ago and failback passes it over for {} ms",
            view.policy.anti_flap_ms
        )),
        FailbackStep::Waiting { id, remaining_ms } => {
            Ok(format!("{holds}; failback to node {id} waits for stabilisation: {remaining_ms} ms more"))
        }
        FailbackStep::Move { id } => {
            Err(format!("failback: node {id} is higher in the list and has been healthy for the stabilisation delay"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::roles::definition::CommandLine;
    use crate::roles::lease::certain_expiry_wait_ms;

    const DELAY_MS: u64 = 60_000;
    const ANTI_FLAP_MS: u64 = 300_000;
    const NOW_MS: u64 = 10_000_000;
    const LONG_AGO: u64 = NOW_MS - 10 * DELAY_MS;

    fn role(servers: &[u64]) -> RoleDefinition {
        RoleDefinition::new("mgmt", servers, CommandLine::new("/s", &[]), CommandLine::new("/t", &[]))
    }

    fn up(id: u64) -> ServerFacts {
        ServerFacts { id, role: NodeRole::Data, health: Health::Up { since_ms: LONG_AGO } }
    }

    fn up_since(id: u64, since_ms: u64) -> ServerFacts {
        ServerFacts { id, role: NodeRole::Data, health: Health::Up { since_ms } }
    }

    fn down(id: u64, since_ms: u64) -> ServerFacts {
        ServerFacts { id, role: NodeRole::Data, health: Health::Down { since_ms } }
    }

    fn witness(id: u64) -> ServerFacts {
        ServerFacts { role: NodeRole::Witness, ..up(id) }
    }

    fn view(members: &[ServerFacts]) -> PrimaryView<'_> {
        PrimaryView {
            me: 1,
            members,
            takeover_ms: 0,
            maintenance: false,
            policy: Policy { failback: false, stabilisation_delay_ms: DELAY_MS, anti_flap_ms: ANTI_FLAP_MS },
            next_epoch: 8,
            now_ms: NOW_MS,
        }
    }

    fn held(holder: u64, epoch: u64) -> RoleState {
        RoleState { holder: Some(holder), epoch, ..RoleState::default() }
    }

    /// A memory that has seen `state` since `since_ms`.
    fn memory(definition: &RoleDefinition, state: &RoleState, since_ms: u64) -> RoleMemory {
        let mut memory = RoleMemory::default();
        memory.observe(definition, state, since_ms);
        memory
    }

    fn short(placement: &Placement) -> (&'static str, Option<u64>) {
        match placement {
            Placement::Keep { .. } => ("keep", None),
            Placement::Place { node, .. } => ("place", Some(*node)),
            Placement::Revoke { holder, .. } => ("revoke", Some(*holder)),
            Placement::Wait { holder, .. } => ("wait", Some(*holder)),
            Placement::Vacate { holder, .. } => ("vacate", Some(*holder)),
            Placement::Unplaced { .. } => ("unplaced", None),
        }
    }

    fn reason(placement: &Placement) -> &str {
        match placement {
            Placement::Keep { reason }
            | Placement::Place { reason, .. }
            | Placement::Revoke { reason, .. }
            | Placement::Wait { reason, .. }
            | Placement::Vacate { reason, .. }
            | Placement::Unplaced { reason } => reason,
        }
    }

    /// Placement of an unheld role: facts in, the exact node out.
    #[test]
    fn first_placement_table() {
        let listed = role(&[2, 1, 3]);
        let failed_on = |node| RoleState { failed_on: Some(node), epoch: 5, ..RoleState::default() };
        let moved_to = |node| RoleState { requested_move: Some(node), ..RoleState::default() };
        // (name, definition, state, members, expected, words)
        type Case =
            (&'static str, RoleDefinition, RoleState, Vec<ServerFacts>, (&'static str, Option<u64>), &'static str);
        let cases: Vec<Case> = vec![
            (
                "first of the list",
                listed.clone(),
                RoleState::default(),
                vec![up(1), up(2), up(3)],
                ("place", Some(2)),
                "first healthy",
            ),
            (
                "first is down",
                listed.clone(),
                RoleState::default(),
                vec![up(1), down(2, 0), up(3)],
                ("place", Some(1)),
                "first healthy",
            ),
            ("first is not a member", listed.clone(), RoleState::default(), vec![up(1), up(3)], ("place", Some(1)), ""),
            ("a witness never", role(&[2, 1]), RoleState::default(), vec![up(1), witness(2)], ("place", Some(1)), ""),
            (
                "unlisted nodes never",
                role(&[2]),
                RoleState::default(),
                vec![up(1), down(2, 0), up(3)],
                ("unplaced", None),
                "none of the servers [2]",
            ),
            (
                "nobody up",
                listed.clone(),
                RoleState::default(),
                vec![down(1, 0), down(2, 0), down(3, 0)],
                ("unplaced", None),
                "healthy data node",
            ),
            (
                "after check failures: the next",
                listed.clone(),
                failed_on(2),
                vec![up(1), up(2), up(3)],
                ("place", Some(1)),
                "after node 2, whose checks failed",
            ),
            (
                "failed on the last: back to the first",
                listed.clone(),
                failed_on(3),
                vec![up(1), up(2), up(3)],
                ("place", Some(2)),
                "first healthy",
            ),
            (
                "failed, nobody else: try it again",
                role(&[2]),
                failed_on(2),
                vec![up(1), up(2)],
                ("place", Some(2)),
                "trying it again",
            ),
            (
                "the operator's move first",
                listed.clone(),
                moved_to(3),
                vec![up(1), up(2), up(3)],
                ("place", Some(3)),
                "operator",
            ),
            (
                "the operator's move to a down node: the list",
                listed.clone(),
                moved_to(3),
                vec![up(1), up(2), down(3, 0)],
                ("place", Some(2)),
                "",
            ),
            (
                "deleted",
                listed.clone(),
                RoleState { deleting: true, ..RoleState::default() },
                vec![up(1)],
                ("keep", None),
                "deleted",
            ),
        ];
        for (name, definition, state, members, expected, words) in cases {
            let mut memory = memory(&definition, &state, 0);
            let placement = decide(&definition, &state, &mut memory, &view(&members));
            assert_eq!(short(&placement), expected, "{name}: {placement:?}");
            assert!(reason(&placement).contains(words), "{name}: {words:?} missing from {placement:?}");
            if let Placement::Place { epoch, replaces, .. } = placement {
                assert_eq!(
                    (epoch, replaces),
                    (8, state.epoch),
                    "{name}: the next epoch, compare-and-set on the current"
                );
            }
        }
    }

    /// Anti-flap: a server that just lost the role is passed over while another can take
    /// it, and taken when none can.
    #[test]
    fn anti_flap_on_placement() {
        let definition = role(&[2, 1]);
        let state = held(2, 3);
        let members = [up(1), up(2)];
        let mut memory = memory(&definition, &state, 0);
        // Node 2 releases the role (at NOW - 1 ms by the primary's clock).
        let released = RoleState { holder: None, last_holder: Some(2), ..state.clone() };
        memory.observe(&definition, &released, NOW_MS - 1);
        let placement = decide(&definition, &released, &mut memory, &view(&members));
        assert_eq!(short(&placement), ("place", Some(1)));
        let only_two = [down(1, 0), up(2)];
        let placement = decide(&definition, &released, &mut memory, &view(&only_two));
        assert_eq!(short(&placement), ("place", Some(2)), "{placement:?}");
        assert!(reason(&placement).contains("lost the role recently"));
        // After the anti-flap delay, node 2 is the first again.
        let later = PrimaryView { now_ms: NOW_MS - 1 + ANTI_FLAP_MS, ..view(&members) };
        assert_eq!(short(&decide(&definition, &released, &mut memory, &later)), ("place", Some(2)));
    }

    /// A held role: keep, or revoke and why.
    #[test]
    fn held_role_table() {
        let listed = role(&[2, 1, 3]);
        let follower = RoleDefinition { servers: vec![], follow_primary: true, ..role(&[]) };
        // (name, definition, state, members, expected, words)
        type Case =
            (&'static str, RoleDefinition, RoleState, Vec<ServerFacts>, (&'static str, Option<u64>), &'static str);
        let cases: Vec<Case> = vec![
            (
                "healthy holder stays",
                listed.clone(),
                held(1, 7),
                vec![up(1), up(2), up(3)],
                ("keep", None),
                "node 1 holds it under epoch 7",
            ),
            (
                "failback off: stays below a healthy first",
                listed.clone(),
                held(3, 7),
                vec![up(1), up(2), up(3)],
                ("keep", None),
                "holds it",
            ),
            (
                "holder down briefly",
                listed.clone(),
                held(3, 7),
                vec![up(1), up(2), down(3, NOW_MS - HOLDER_DOWN_GRACE_MS + 1)],
                ("keep", None),
                "revoked after 3000 ms",
            ),
            (
                "holder down for the grace",
                listed.clone(),
                held(3, 7),
                vec![up(1), up(2), down(3, NOW_MS - HOLDER_DOWN_GRACE_MS)],
                ("revoke", Some(3)),
                "down for 3000 ms",
            ),
            (
                "holder no longer a member",
                listed.clone(),
                held(3, 7),
                vec![up(1), up(2)],
                ("revoke", Some(3)),
                "not a member",
            ),
            (
                "holder now a witness",
                listed.clone(),
                held(3, 7),
                vec![up(1), up(2), witness(3)],
                ("revoke", Some(3)),
                "witness",
            ),
            (
                "holder unlisted",
                role(&[2, 1]),
                held(3, 7),
                vec![up(1), up(2), up(3)],
                ("revoke", Some(3)),
                "no longer in the role's server list",
            ),
            (
                "operator's move",
                listed.clone(),
                RoleState { requested_move: Some(2), ..held(1, 7) },
                vec![up(1), up(2)],
                ("revoke", Some(1)),
                "operator",
            ),
            (
                "operator's move to a down node waits",
                listed.clone(),
                RoleState { requested_move: Some(2), ..held(1, 7) },
                vec![up(1), down(2, 0)],
                ("keep", None),
                "not a healthy data node",
            ),
            (
                "deleted",
                listed.clone(),
                RoleState { deleting: true, ..held(1, 7) },
                vec![up(1)],
                ("revoke", Some(1)),
                "deleted",
            ),
            (
                "follow-primary on the primary",
                follower.clone(),
                held(1, 7),
                vec![up(1), up(2)],
                ("keep", None),
                "holds it",
            ),
            (
                "follow-primary on a deposed primary",
                follower.clone(),
                held(2, 7),
                vec![up(1), up(2)],
                ("revoke", Some(2)),
                "no longer the primary; node 1 is",
            ),
        ];
        for (name, definition, state, members, expected, words) in cases {
            let mut memory = memory(&definition, &state, 0);
            let placement = decide(&definition, &state, &mut memory, &view(&members));
            assert_eq!(short(&placement), expected, "{name}: {placement:?}");
            assert!(reason(&placement).contains(words), "{name}: {words:?} missing from {placement:?}");
            assert_eq!(
                memory.lease.revoked_at_ms.is_some(),
                expected.0 == "revoke",
                "{name}: the lease is revoked exactly when the decision says so"
            );
        }
    }

    /// Failback with the HA failback rules: stabilisation of the higher-listed server and
    /// of the holder's tenure, anti-flap, maintenance, and only with the role's flag.
    #[test]
    fn failback_table() {
        let with_failback = RoleDefinition { failback: true, ..role(&[2, 1, 3]) };
        let state = held(3, 7);
        // (name, definition, members, holder since, maintenance, lost (node, at), expected, words)
        type Case = (
            &'static str,
            RoleDefinition,
            Vec<ServerFacts>,
            u64,
            bool,
            Option<(u64, u64)>,
            (&'static str, Option<u64>),
            &'static str,
        );
        let cases: Vec<Case> = vec![
            (
                "off: stays",
                role(&[2, 1, 3]),
                vec![up(1), up(2), up(3)],
                LONG_AGO,
                false,
                None,
                ("keep", None),
                "holds it",
            ),
            (
                "on, settled: back to the top",
                with_failback.clone(),
                vec![up(1), up(2), up(3)],
                LONG_AGO,
                false,
                None,
                ("revoke", Some(3)),
                "failback: node 2",
            ),
            (
                "on, exactly at the delay",
                with_failback.clone(),
                vec![up(1), up_since(2, NOW_MS - DELAY_MS), up(3)],
                LONG_AGO,
                false,
                None,
                ("revoke", Some(3)),
                "failback: node 2",
            ),
            (
                "first up too recently: it is waited for, not skipped",
                with_failback.clone(),
                vec![up(1), up_since(2, NOW_MS - DELAY_MS + 1), up(3)],
                LONG_AGO,
                false,
                None,
                ("keep", None),
                "failback to node 2 waits for stabilisation: 1 ms more",
            ),
            (
                "only the first is higher and it came up too recently",
                with_failback.clone(),
                vec![down(1, 0), up_since(2, NOW_MS - DELAY_MS / 2), up(3)],
                LONG_AGO,
                false,
                None,
                ("keep", None),
                "waits for stabilisation: 30000 ms more",
            ),
            (
                "holder placed too recently",
                with_failback.clone(),
                vec![up(1), up(2), up(3)],
                NOW_MS - DELAY_MS / 2,
                false,
                None,
                ("keep", None),
                "waits",
            ),
            (
                "maintenance",
                with_failback.clone(),
                vec![up(1), up(2), up(3)],
                LONG_AGO,
                true,
                None,
                ("keep", None),
                "maintenance",
            ),
            (
                "the top lost it recently: the next higher one",
                with_failback.clone(),
                vec![up(1), up(2), up(3)],
                LONG_AGO,
                false,
                Some((2, NOW_MS - 1)),
                ("revoke", Some(3)),
                "failback: node 1",
            ),
            (
                "the only higher one lost it recently",
                with_failback.clone(),
                vec![down(1, 0), up(2), up(3)],
                LONG_AGO,
                false,
                Some((2, NOW_MS - 1)),
                ("keep", None),
                "passes it over",
            ),
            (
                "a higher one that is a witness is never a target",
                RoleDefinition { failback: true, ..role(&[1, 3]) },
                vec![witness(1), up(3)],
                LONG_AGO,
                false,
                None,
                ("keep", None),
                "holds it",
            ),
        ];
        for (name, definition, members, since_ms, maintenance, lost, expected, words) in cases {
            let mut memory = RoleMemory::default();
            if let Some((node, at_ms)) = lost {
                memory.observe(&definition, &held(node, 6), 0);
                memory.observe(&definition, &held(3, 7), at_ms);
                memory.holder_since_ms = since_ms;
            } else {
                memory.observe(&definition, &state, since_ms);
            }
            let view = PrimaryView { maintenance, ..view(&members) };
            let placement = decide(&definition, &state, &mut memory, &view);
            assert_eq!(short(&placement), expected, "{name}: {placement:?}");
            assert!(reason(&placement).contains(words), "{name}: {words:?} missing from {placement:?}");
        }
    }

    /// After a revocation: wait until the lease has certainly ended (from the last grant
    /// or the takeover), then place elsewhere; or vacate if nobody can take it; a release
    /// on the way makes it immediate.
    #[test]
    fn revoked_lease_timeline() {
        let definition = role(&[2, 1]);
        let state = held(2, 7);
        let wait = certain_expiry_wait_ms(LEASE_DURATION_MS);
        let last_grant_ms = NOW_MS - 2_000;
        let down_since = NOW_MS - HOLDER_DOWN_GRACE_MS;
        let members = [up(1), down(2, down_since)];
        let mut memory = memory(&definition, &state, 0);
        memory.lease.grant("mgmt", 2, last_grant_ms).unwrap();
        let at = |now_ms| PrimaryView { now_ms, ..view(&members) };
        assert_eq!(short(&decide(&definition, &state, &mut memory, &at(NOW_MS))), ("revoke", Some(2)));
        assert!(memory.lease.grant("mgmt", 2, NOW_MS + 1).is_err(), "no renewal after the revocation");
        let ended_ms = last_grant_ms + wait;
        let placement = decide(&definition, &state, &mut memory, &at(ended_ms - 1));
        assert_eq!(placement, Placement::Wait {
            holder: 2,
            epoch: 7,
            until_ms: ended_ms,
            reason: "waiting for node 2 to release the role or for its lease (epoch 7) to have certainly ended: 1 ms more".into(),
        });
        let placement = decide(&definition, &state, &mut memory, &at(ended_ms));
        assert_eq!(short(&placement), ("place", Some(1)), "exactly at the certain end");
        assert!(
            matches!(&placement, Placement::Place { epoch: 8, replaces: 7, reason, .. } if reason.contains("certainly ended"))
        );
        // Nobody else can take it: vacate, so the table does not show a holder.
        let nobody = [down(1, 0), down(2, down_since)];
        let placement = decide(&definition, &state, &mut memory, &PrimaryView { now_ms: ended_ms, ..view(&nobody) });
        assert_eq!(short(&placement), ("vacate", Some(2)));
        // A release committed while waiting: placed at once.
        let released = RoleState { holder: None, last_holder: Some(2), ..state.clone() };
        memory.observe(&definition, &released, NOW_MS + 10);
        assert_eq!(short(&decide(&definition, &released, &mut memory, &at(NOW_MS + 10))), ("place", Some(1)));
    }

    /// A new primary that never granted anything counts from its takeover: it cannot
    /// know what the old primary granted, but every such grant came before its takeover.
    #[test]
    fn a_new_primary_waits_from_its_takeover() {
        let definition = role(&[2, 1]);
        let state = held(2, 7);
        let takeover_ms = NOW_MS - 500;
        let members = [up(1), down(2, 0)];
        let mut memory = RoleMemory::default();
        memory.observe(&definition, &state, takeover_ms);
        let view_at = |now_ms| PrimaryView { takeover_ms, now_ms, ..view(&members) };
        assert_eq!(short(&decide(&definition, &state, &mut memory, &view_at(NOW_MS))), ("revoke", Some(2)));
        let ended_ms = takeover_ms + certain_expiry_wait_ms(LEASE_DURATION_MS);
        assert_eq!(short(&decide(&definition, &state, &mut memory, &view_at(ended_ms - 1))), ("wait", Some(2)));
        assert_eq!(short(&decide(&definition, &state, &mut memory, &view_at(ended_ms))), ("place", Some(1)));
    }

    /// A new placement (epoch) starts a new lease and tenure in the memory; the old
    /// holder is remembered as having lost the role.
    #[test]
    fn memory_follows_the_placements() {
        let definition = role(&[2, 1]);
        let mut memory = RoleMemory::default();
        memory.observe(&definition, &held(2, 7), 100);
        memory.lease.grant("mgmt", 2, 150).unwrap();
        memory.lease.revoke(160);
        memory.observe(&definition, &held(2, 7), 200);
        assert_eq!(memory.holder_since_ms(), 100, "the same placement: nothing changes");
        memory.observe(&definition, &held(1, 8), 300);
        assert_eq!(memory.holder_since_ms(), 300);
        assert_eq!(memory.lease, GrantorLease::default(), "a new lease for the new epoch");
        assert_eq!(memory.last_lost_ms.get(&2), Some(&300));
        // A node that leaves the list is forgotten.
        memory.observe(&role(&[1]), &held(1, 9), 400);
        assert!(memory.last_lost_ms.is_empty(), "{:?}", memory.last_lost_ms);
    }

    /// Follow-primary: placed on the primary; while a witness leads, nowhere.
    #[test]
    fn follow_primary_placement() {
        let follower = RoleDefinition { servers: vec![], follow_primary: true, ..role(&[]) };
        let mut memory = RoleMemory::default();
        let members = [up(1), up(2)];
        let placement = decide(&follower, &RoleState::default(), &mut memory, &view(&members));
        assert_eq!(short(&placement), ("place", Some(1)));
        let members = [witness(1), up(2)];
        let placement = decide(&follower, &RoleState::default(), &mut memory, &view(&members));
        assert_eq!(short(&placement), ("unplaced", None));
        assert!(reason(&placement).contains("witness"));
    }
}
