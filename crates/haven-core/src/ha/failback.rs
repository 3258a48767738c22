//! Where leadership should go when Raft's election chose a node that should not keep it:
//! witness (and priority-0) hand-off, and failback to the preferred node; plus the
//! failovers-per-hour counter.
//!
//! ```text
//!   Situation { members (role, voter?, priority, healthy since, caught up, last lost primary),
//!               leader, leader_since_ms, maintenance, now_ms }   Policy { failback, delays }
//!        │ decide()
//!        ▼
//!   leader is a witness or has priority 0 ─▶ TransferTo(best caught-up data node)   (always)
//!   maintenance on ────────────────────────▶ Stay
//!   failback off ──────────────────────────▶ Stay
//!   a higher-priority node, healthy and caught up for the stabilisation delay,
//!   not within anti-flap of losing the primary role ─▶ TransferTo(it)
//!   otherwise ─────────────────────────────▶ Stay
//! ```
//!
//! The shell carries out `TransferTo` with Raft's leadership transfer, which is safe by
//! construction (the target must be caught up to win). Elections themselves stay Raft's:
//! this module never starts one, it only asks a working leader to hand over.
//!
//! **Maintenance and the witness hand-off.** Maintenance means "no automatic failover or
//! failback". The hand-off from a witness is neither: it is a safety action, because a
//! witness holds no files and no roles and must never remain the primary (DESIGN.md), and
//! a priority-0 node has been declared unfit by the operator. So the hand-off happens in
//! maintenance too; failback does not.
//!
//! **Anti-flap.** A node that lost the primary role less than `anti_flap_ms` ago is not
//! chosen by failback, so a node that keeps crashing is not handed leadership each time it
//! comes back. For the hand-off, such a node is taken only when no other fit node is
//! caught up, because leaving a witness in charge is worse than a flapping primary.
//!
//! Ties between equal priorities go to the lowest node id; failback never moves leadership
//! between equal priorities (that would be churn for nothing).
//!
//! The failback rule itself ([`failback_step`]: the best steady contender, after the
//! stabilisation delay, passing over a flapping one) is shared with the operator's roles
//! (`roles::placement`), so a role fails back exactly as the primary does.

use std::collections::VecDeque;

use crate::ha::MemberKind;
use crate::ha::NodeRole;

/// What the shell knows about one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: u64,
    pub role: NodeRole,
    pub kind: MemberKind,
    /// 0 = never primary; higher is preferred.
    pub priority: u32,
    /// `Some(t)`: healthy without interruption since `t`; `None`: not healthy now. The
    /// shell resets `t` whenever the node is seen down, so the stabilisation delay
    /// measures an unbroken stretch of health.
    pub healthy_since_ms: Option<u64>,
    /// Within the lag threshold of the leader's log.
    pub caught_up: bool,
    /// When it last stopped being the primary (by failure or by transfer).
    pub last_lost_primary_ms: Option<u64>,
}

impl Candidate {
    /// A data voter with priority above 0: may be the primary.
    pub fn may_be_primary(&self) -> bool {
        self.role == NodeRole::Data && self.kind == MemberKind::Voter && self.priority > 0
    }

    fn ready(&self) -> bool {
        self.may_be_primary() && self.healthy_since_ms.is_some() && self.caught_up
    }

    fn flapping(&self, now_ms: u64, anti_flap_ms: u64) -> bool {
        flapping(self.last_lost_primary_ms, now_ms, anti_flap_ms)
    }
}

/// Whether something that lost its place at `last_lost_ms` is still within the anti-flap
/// delay at `now_ms`.
pub fn flapping(last_lost_ms: Option<u64>, now_ms: u64, anti_flap_ms: u64) -> bool {
    last_lost_ms.is_some_and(|lost_ms| now_ms.saturating_sub(lost_ms) < anti_flap_ms)
}

/// A node that outranks the current holder of a place (the primary role, or a role in
/// `roles::placement`) and is ready to take it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Contender {
    pub id: u64,
    /// Higher is preferred.
    pub rank: u32,
    /// Healthy without interruption since then.
    pub healthy_since_ms: u64,
    /// When it last lost the place.
    pub last_lost_ms: Option<u64>,
}

/// Where failback stands for one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailbackStep {
    /// Nobody outranks the holder.
    NoneBetter,
    /// The best contender lost the place `lost_ago_ms` ago: passed over for the anti-flap
    /// delay, and no steady contender outranks the holder.
    Flapping { id: u64, lost_ago_ms: u64 },
    /// The best steady contender may take over in `remaining_ms`.
    Waiting { id: u64, remaining_ms: u64 },
    /// The best steady contender takes over now.
    Move { id: u64 },
}

/// The failback rule, shared by the primary role ([`decide`]) and the operator's roles:
/// the best contender (highest rank, then lowest id) that is not within the anti-flap
/// delay takes the place once it has been healthy, and the holder has held the place, for
/// the stabilisation delay. `contenders` are only those that outrank the holder and are
/// ready; the failback flag and maintenance are the caller's to check.
pub fn failback_step(contenders: &[Contender], holder_since_ms: u64, now_ms: u64, policy: &Policy) -> FailbackStep {
    let best = |steady_only: bool| {
        contenders
            .iter()
            .filter(|contender| !steady_only || !flapping(contender.last_lost_ms, now_ms, policy.anti_flap_ms))
            .max_by(|a, b| a.rank.cmp(&b.rank).then(b.id.cmp(&a.id)))
    };
    let Some(target) = best(true) else {
        return match best(false) {
            Some(flapper) => FailbackStep::Flapping {
                id: flapper.id,
                lost_ago_ms: now_ms.saturating_sub(flapper.last_lost_ms.unwrap_or(now_ms)),
            },
            None => FailbackStep::NoneBetter,
        };
    };
    // Both must have settled: the holder's tenure (no ping-pong right after a move) and
    // the target's health (it must have stayed up, not just come up).
    let settled_since_ms = holder_since_ms.max(target.healthy_since_ms);
    let ready_at_ms = settled_since_ms.saturating_add(policy.stabilisation_delay_ms);
    if now_ms < ready_at_ms {
        return FailbackStep::Waiting { id: target.id, remaining_ms: ready_at_ms - now_ms };
    }
    FailbackStep::Move { id: target.id }
}

/// The cluster-wide failback settings (from `ha::config::HaConfig::failback_policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub failback: bool,
    /// How long the current leader must have led, and the preferred node must have been
    /// healthy, before failback moves leadership.
    pub stabilisation_delay_ms: u64,
    /// How long a node that lost the primary role is passed over by failback.
    pub anti_flap_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Situation<'a> {
    pub members: &'a [Candidate],
    pub leader: Option<u64>,
    /// When the current leader took over.
    pub leader_since_ms: u64,
    pub maintenance: bool,
    pub now_ms: u64,
}

/// The decision, with the reason in words (for the log, the audit trail and the status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Stay(String),
    TransferTo(u64, String),
}

/// The best of `candidates`: highest priority, then lowest id.
fn best<'a>(candidates: impl Iterator<Item = &'a Candidate>) -> Option<&'a Candidate> {
    candidates.max_by(|a, b| a.priority.cmp(&b.priority).then(b.id.cmp(&a.id)))
}

/// Decides whether leadership should move, and to whom. See the module docs.
pub fn decide(situation: &Situation<'_>, policy: &Policy) -> Decision {
    let now_ms = situation.now_ms;
    let Some(leader_id) = situation.leader else {
        return Decision::Stay("no leader: the election decides".into());
    };
    let Some(leader) = situation.members.iter().find(|member| member.id == leader_id) else {
        return Decision::Stay(format!("leader node {leader_id} is not in the member list; waiting for membership"));
    };
    let others = || situation.members.iter().filter(move |member| member.id != leader_id);

    if !leader.may_be_primary() {
        let what = match leader.role {
            NodeRole::Witness => format!("witness node {leader_id} must not remain the primary"),
            NodeRole::Data => format!("node {leader_id} has priority 0 and must not remain the primary"),
        };
        let ready = || others().filter(|member| member.ready());
        let target =
            best(ready().filter(|member| !member.flapping(now_ms, policy.anti_flap_ms))).or_else(|| best(ready()));
        return match target {
            Some(target) => Decision::TransferTo(
                target.id,
                format!(
                    "{what}; node {} (priority {}) is the best healthy, caught-up data node{}",
                    target.id,
                    target.priority,
                    if situation.maintenance { " (a safety hand-off, done in maintenance too)" } else { "" }
                ),
            ),
            None => Decision::Stay(format!(
                "{what}, but no data node with priority above 0 is healthy and caught up yet; it keeps leading until \
                 one is"
            )),
        };
    }
    if situation.maintenance {
        return Decision::Stay("maintenance mode is on: no failback".into());
    }
    if !policy.failback {
        return Decision::Stay(format!("failback is off: node {leader_id} stays primary"));
    }
    let contenders: Vec<Contender> = others()
        .filter(|member| member.ready() && member.priority > leader.priority)
        .map(|member| Contender {
            id: member.id,
            rank: member.priority,
            healthy_since_ms: member.healthy_since_ms.unwrap_or(now_ms),
            last_lost_ms: member.last_lost_primary_ms,
        })
        .collect();
    let priority_of = |id: u64| contenders.iter().find(|contender| contender.id == id).map_or(0, |c| c.rank);
    match failback_step(&contenders, situation.leader_since_ms, now_ms, policy) {
        FailbackStep::NoneBetter => Decision::Stay(format!(
            "node {leader_id} (priority {}) is the preferred primary among healthy, caught-up nodes",
            leader.priority
        )),
        FailbackStep::Flapping { id, lost_ago_ms } => Decision::Stay(format!(
            "node {id} lost the primary role {lost_ago_ms} ms ago; failback passes it over for {} ms",
            policy.anti_flap_ms
        )),
        FailbackStep::Waiting { id, remaining_ms } => {
            Decision::Stay(format!("failback to node {id} waits for stabilisation: {remaining_ms} ms more"))
        }
        FailbackStep::Move { id } => Decision::TransferTo(
            id,
            format!(
                "failback: node {id} (priority {}) has been healthy and caught up for the stabilisation delay and \
                 outranks primary node {leader_id} (priority {})",
                priority_of(id),
                leader.priority
            ),
        ),
    }
}

/// The window of the failover counter: "failovers per hour".
pub const FAILOVER_WINDOW_MS: u64 = 3_600_000;

/// Failovers remembered at most. A thousand in an hour is one every 3.6 s, a cluster in
/// a loop; beyond that the count saturates rather than grows memory without bound.
pub const FAILOVERS_REMEMBERED_MAX: usize = 1_000;

/// Failovers in a sliding window (an hour by default), for the status, metrics and
/// alerts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailoverCounter {
    window_ms: u64,
    /// Times of failovers, oldest first; at most [`FAILOVERS_REMEMBERED_MAX`].
    times_ms: VecDeque<u64>,
}

impl Default for FailoverCounter {
    fn default() -> FailoverCounter {
        FailoverCounter::new(FAILOVER_WINDOW_MS)
    }
}

impl FailoverCounter {
    pub fn new(window_ms: u64) -> FailoverCounter {
        FailoverCounter { window_ms, times_ms: VecDeque::new() }
    }

    /// Records a failover at `now_ms` and forgets those out of the window.
    pub fn record(&mut self, now_ms: u64) {
        self.forget_before(now_ms);
        if self.times_ms.len() == FAILOVERS_REMEMBERED_MAX {
            self.times_ms.pop_front();
        }
        self.times_ms.push_back(now_ms);
        assert!(self.times_ms.len() <= FAILOVERS_REMEMBERED_MAX);
    }

    /// Failovers within the window ending at `now_ms` (saturates at
    /// [`FAILOVERS_REMEMBERED_MAX`]).
    pub fn count(&self, now_ms: u64) -> usize {
        self.times_ms.iter().filter(|time_ms| now_ms.saturating_sub(**time_ms) < self.window_ms).count()
    }

    fn forget_before(&mut self, now_ms: u64) {
        while self.times_ms.front().is_some_and(|time_ms| now_ms.saturating_sub(*time_ms) >= self.window_ms) {
            self.times_ms.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DELAY_MS: u64 = 60_000;
    const ANTI_FLAP_MS: u64 = 300_000;
    const NOW_MS: u64 = 10_000_000;

    fn data(id: u64, priority: u32) -> Candidate {
        Candidate {
            id,
            role: NodeRole::Data,
            kind: MemberKind::Voter,
            priority,
            healthy_since_ms: Some(0),
            caught_up: true,
            last_lost_primary_ms: None,
        }
    }

    fn witness(id: u64) -> Candidate {
        Candidate { role: NodeRole::Witness, priority: 0, ..data(id, 0) }
    }

    fn policy(failback: bool) -> Policy {
        Policy { failback, stabilisation_delay_ms: DELAY_MS, anti_flap_ms: ANTI_FLAP_MS }
    }

    fn decide_at(
        members: &[Candidate],
        leader: u64,
        leader_since_ms: u64,
        maintenance: bool,
        failback: bool,
    ) -> Decision {
        let situation = Situation { members, leader: Some(leader), leader_since_ms, maintenance, now_ms: NOW_MS };
        decide(&situation, &policy(failback))
    }

    fn transfer_target(decision: &Decision) -> Option<u64> {
        match decision {
            Decision::TransferTo(id, _) => Some(*id),
            Decision::Stay(_) => None,
        }
    }

    /// Failback: table of who gets leadership back, and when.
    #[test]
    fn failback_table() {
        let long_ago = NOW_MS - 10 * DELAY_MS;
        let just_now = NOW_MS - DELAY_MS / 2;
        let exactly = NOW_MS - DELAY_MS;
        let preferred = |healthy_since_ms| Candidate { healthy_since_ms: Some(healthy_since_ms), ..data(1, 200) };
        // (name, members, leader, leader since, failback, expected target, words in reason)
        type Case = (&'static str, Vec<Candidate>, u64, u64, bool, Option<u64>, &'static str);
        let cases: Vec<Case> = vec![
            ("after stabilisation", vec![preferred(long_ago), data(2, 100)], 2, long_ago, true, Some(1), "failback"),
            ("exactly at the delay", vec![preferred(exactly), data(2, 100)], 2, exactly, true, Some(1), "failback"),
            (
                "preferred node up too recently",
                vec![preferred(just_now), data(2, 100)],
                2,
                long_ago,
                true,
                None,
                "30000 ms more",
            ),
            ("leader elected too recently", vec![preferred(long_ago), data(2, 100)], 2, just_now, true, None, "waits"),
            (
                "failback off (default)",
                vec![preferred(long_ago), data(2, 100)],
                2,
                long_ago,
                false,
                None,
                "failback is off",
            ),
            ("leader already preferred", vec![preferred(long_ago), data(2, 100)], 1, long_ago, true, None, "preferred"),
            ("equal priority: no churn", vec![data(1, 100), data(2, 100)], 2, long_ago, true, None, "preferred"),
            (
                "preferred node lagging",
                vec![Candidate { caught_up: false, ..preferred(long_ago) }, data(2, 100)],
                2,
                long_ago,
                true,
                None,
                "preferred",
            ),
            (
                "preferred node unhealthy",
                vec![Candidate { healthy_since_ms: None, ..preferred(long_ago) }, data(2, 100)],
                2,
                long_ago,
                true,
                None,
                "preferred",
            ),
            (
                "highest priority wins among several",
                vec![data(1, 150), data(2, 100), data(3, 300)],
                2,
                long_ago,
                true,
                Some(3),
                "priority 300",
            ),
            (
                "ties broken by node id",
                vec![data(4, 300), data(2, 100), data(3, 300)],
                2,
                long_ago,
                true,
                Some(3),
                "node 3",
            ),
            (
                "a learner is never a target",
                vec![Candidate { kind: MemberKind::Learner, ..data(1, 500) }, data(2, 100)],
                2,
                long_ago,
                true,
                None,
                "preferred",
            ),
        ];
        for (name, members, leader, since, failback, expected, words) in cases {
            let decision = decide_at(&members, leader, since, false, failback);
            assert_eq!(transfer_target(&decision), expected, "{name}: {decision:?}");
            let (Decision::Stay(reason) | Decision::TransferTo(_, reason)) = &decision;
            assert!(reason.contains(words), "{name}: {words:?} missing from {reason}");
        }
    }

    /// Anti-flap: a node that just lost the primary role is passed over by failback until
    /// the minimum time has passed; a lower-ranked but steady node may still take over.
    #[test]
    fn anti_flap() {
        let long_ago = NOW_MS - 10 * DELAY_MS;
        let flapper = |lost_ms| Candidate { last_lost_primary_ms: Some(lost_ms), ..data(1, 300) };
        let recent = NOW_MS - ANTI_FLAP_MS + 1;
        let decision = decide_at(&[flapper(recent), data(3, 100)], 3, long_ago, false, true);
        assert!(
            matches!(&decision, Decision::Stay(reason) if reason.contains("node 1 lost the primary role")),
            "{decision:?}"
        );
        let decision = decide_at(&[flapper(NOW_MS - ANTI_FLAP_MS), data(3, 100)], 3, long_ago, false, true);
        assert_eq!(transfer_target(&decision), Some(1), "after the minimum time: {decision:?}");
        let decision = decide_at(&[flapper(recent), data(2, 200), data(3, 100)], 3, long_ago, false, true);
        assert_eq!(transfer_target(&decision), Some(2), "the next-best steady node: {decision:?}");
    }

    /// Maintenance blocks failback, but not the witness hand-off.
    #[test]
    fn maintenance_blocks_failback_only() {
        let long_ago = NOW_MS - 10 * DELAY_MS;
        let decision = decide_at(&[data(1, 200), data(2, 100)], 2, long_ago, true, true);
        assert_eq!(decision, Decision::Stay("maintenance mode is on: no failback".into()));
        let decision = decide_at(&[data(1, 200), data(2, 100), witness(3)], 3, NOW_MS, true, false);
        assert_eq!(transfer_target(&decision), Some(1));
        assert!(matches!(&decision, Decision::TransferTo(_, reason) if reason.contains("maintenance too")));
    }

    /// Witness hand-off: as soon as a data node is caught up, regardless of the failback
    /// flag and without the stabilisation delay; until then the witness keeps leading
    /// (it is the only one who can bring the data nodes up to date).
    #[test]
    fn witness_hands_off() {
        let catching_up = Candidate { caught_up: false, ..data(1, 100) };
        let decision = decide_at(
            &[catching_up.clone(), Candidate { healthy_since_ms: None, ..data(2, 100) }, witness(3)],
            3,
            NOW_MS,
            false,
            false,
        );
        assert!(
            matches!(&decision, Decision::Stay(reason) if reason.contains("witness node 3 must not remain")),
            "{decision:?}"
        );
        let caught_up = Candidate { healthy_since_ms: Some(NOW_MS), ..data(1, 100) };
        let decision = decide_at(&[caught_up, data(2, 50), witness(3)], 3, NOW_MS, false, false);
        assert_eq!(transfer_target(&decision), Some(1), "{decision:?}");
        // A flapping data node is taken only when no steady one is caught up.
        let flapping = Candidate { last_lost_primary_ms: Some(NOW_MS - 1), ..data(1, 200) };
        let decision = decide_at(&[flapping.clone(), data(2, 50), witness(3)], 3, NOW_MS, false, false);
        assert_eq!(transfer_target(&decision), Some(2), "{decision:?}");
        let lagging_two = Candidate { caught_up: false, ..data(2, 50) };
        let decision = decide_at(&[flapping, lagging_two, witness(3)], 3, NOW_MS, false, false);
        assert_eq!(transfer_target(&decision), Some(1), "{decision:?}");
        // Never to another witness.
        let decision = decide_at(&[witness(4), witness(3)], 3, NOW_MS, false, false);
        assert!(matches!(decision, Decision::Stay(_)), "{decision:?}");
    }

    /// Priority 0 = never primary: a priority-0 leader hands off like a witness, and a
    /// priority-0 node is never chosen, by hand-off or by failback.
    #[test]
    fn priority_zero_never_chosen() {
        let decision = decide_at(&[data(1, 0), data(2, 10)], 1, NOW_MS, false, false);
        assert_eq!(transfer_target(&decision), Some(2));
        assert!(matches!(&decision, Decision::TransferTo(_, reason) if reason.contains("priority 0")));
        let decision = decide_at(&[data(1, 0), data(2, 0), witness(3)], 3, NOW_MS, false, true);
        assert!(matches!(decision, Decision::Stay(_)), "{decision:?}");
        let decision = decide_at(&[data(1, 0), data(2, 10)], 2, 0, false, true);
        assert!(matches!(decision, Decision::Stay(_)), "{decision:?}");
    }

    #[test]
    fn no_leader_or_unknown_leader_stays() {
        let members = [data(1, 100)];
        let no_leader =
            Situation { members: &members, leader: None, leader_since_ms: 0, maintenance: false, now_ms: 1 };
        assert!(matches!(decide(&no_leader, &policy(true)), Decision::Stay(_)));
        let unknown = Situation { leader: Some(9), ..no_leader };
        assert!(matches!(decide(&unknown, &policy(true)), Decision::Stay(reason) if reason.contains("node 9")));
    }

    /// The failover counter counts within a sliding hour and forgets older failovers.
    #[test]
    fn failovers_per_hour() {
        let mut counter = FailoverCounter::default();
        assert_eq!(counter.count(0), 0);
        counter.record(1_000);
        counter.record(2_000);
        counter.record(FAILOVER_WINDOW_MS);
        assert_eq!(counter.count(FAILOVER_WINDOW_MS), 3);
        assert_eq!(counter.count(FAILOVER_WINDOW_MS + 1_000), 2, "the first left the window");
        assert_eq!(counter.count(FAILOVER_WINDOW_MS + 2_000), 1);
        assert_eq!(counter.count(2 * FAILOVER_WINDOW_MS), 0);
        counter.record(3 * FAILOVER_WINDOW_MS);
        assert_eq!(counter.count(3 * FAILOVER_WINDOW_MS), 1);
    }

    /// The counter is bounded: a failover loop saturates it instead of growing memory.
    #[test]
    fn failover_counter_is_bounded() {
        let mut counter = FailoverCounter::new(u64::MAX);
        for time_ms in 0..(FAILOVERS_REMEMBERED_MAX as u64 + 50) {
            counter.record(time_ms);
        }
        assert_eq!(counter.count(FAILOVERS_REMEMBERED_MAX as u64 + 50), FAILOVERS_REMEMBERED_MAX);
    }
}
