//! The decisions of a rolling restart (`haven restart --rolling`), as pure functions of
//! status answers, so they are tested without a cluster.
//!
//! ```text
//!   leader's status ──plan_rolling_restart──▶ [Restart f1, Restart f2, ..., HandOver{leader}, Restart leader]
//!                                              followers by id        only when a data voter
//!                                                                     could take over
//!   before HandOver:  leader's status ──switchover_target──▶ a caught-up data voter (or wait)
//!   after a Restart:  node's status ──restarted_node_ready(commit seen before)──▶ go on / wait
//! ```
//!
//! One node is down at a time, never more: the caller runs the steps in order and stops at
//! the first node that does not come back.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::types::Status;

/// How long a rolling restart waits for one node to come back (stop serving, start, see a
/// leader, catch up) before it stops with an error. A node restarts in about a second (a
/// leader first hands its role over); catching up after a restart is a few batches. A
/// minute is far more than that while still telling an operator promptly that something
/// is wrong.
pub const RESTART_WAIT: Duration = Duration::from_secs(60);

/// Log entries a switchover target may be behind the leader and still count as caught up:
/// one replication batch (`limits::APPEND_ENTRIES_MAX`), the server's own bound for a
/// switchover.
pub const SWITCHOVER_LAG_MAX: u64 = haven_core::limits::APPEND_ENTRIES_MAX;

/// One step of a rolling restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RollingStep {
    /// Restart node `id` and wait until it is back and caught up.
    Restart(u64),
    /// Hand the primary role from `from` to a caught-up data voter ([`switchover_target`]).
    HandOver { from: u64 },
}

/// The steps that restart the members of the cluster `leader_view` describes (the
/// leader's own status: only it knows every member's lag), one at a time: every other
/// member in id order, then, if the leader is to be restarted, a hand-over and the old
/// leader last. `only` restricts the restart to those ids (the rest stay up).
///
/// Refused, with the reason, when there is no leader, when a member is unreachable (a
/// restart would leave the cluster with two members down), or when the leader is to be
/// restarted but no other member could ever take the primary role over.
pub fn plan_rolling_restart(leader_view: &Status, only: Option<&BTreeSet<u64>>) -> Result<Vec<RollingStep>, String> {
    let Some(leader) = leader_view.leader else {
        return Err(format!(
            "node {} knows no leader: a rolling restart needs a healthy cluster (see `haven status`)",
            leader_view.view_of
        ));
    };
    if let Some(unknown) = only.into_iter().flatten().find(|id| !leader_view.members.iter().any(|m| m.id == **id)) {
        return Err(format!("node {unknown} is not a member of the cluster"));
    }
    let mut members = leader_view.members.clone();
    members.sort_by_key(|member| member.id);
    if let Some(down) = members.iter().find(|member| member.reachable == Some(false)) {
        return Err(format!(
            "node {} is unreachable from node {}: restarting another node now would take two down. Bring it back \
             (or remove it) first",
            down.id, leader_view.view_of
        ));
    }
    let selected = |id: u64| only.is_none_or(|only| only.contains(&id));
    let mut steps: Vec<RollingStep> =
        members.iter().filter(|m| m.id != leader && selected(m.id)).map(|m| RollingStep::Restart(m.id)).collect();
    if selected(leader) {
        if !members.iter().any(|member| member.id != leader && member.may_be_primary()) {
            return Err(format!(
                "node {leader} is the primary and no other member can take the role over (a data voter with a \
                 priority above 0); restart it alone with `haven restart --node {leader}` (the cluster has no \
                 primary while it is down)"
            ));
        }
        steps.push(RollingStep::HandOver { from: leader });
        steps.push(RollingStep::Restart(leader));
    }
    Ok(steps)
}

/// The member to hand the primary role over to, from the leader's view: a reachable data
/// voter with a priority above 0, other than `from`, at most [`SWITCHOVER_LAG_MAX`]
/// entries behind; the highest priority first, then the least lag, then the lowest id.
/// `None` when no member qualifies now (wait and ask again: a restarted member catches up).
pub fn switchover_target(leader_view: &Status, from: u64) -> Option<u64> {
    leader_view
        .members
        .iter()
        .filter(|member| member.id != from && member.may_be_primary() && member.reachable != Some(false))
        .filter_map(|member| member.lag.filter(|lag| *lag <= SWITCHOVER_LAG_MAX).map(|lag| (member, lag)))
        .min_by_key(|(member, lag)| (std::cmp::Reverse(member.priority().unwrap_or(u64::MAX)), *lag, member.id))
        .map(|(member, _)| member.id)
}

/// Whether a restarted node is back, from its own status: it knows a leader and has
/// applied at least `commit_before`, the leader's commit index seen before the restart.
/// `Err` says what it is still waiting for.
pub fn restarted_node_ready(own_view: &Status, commit_before: u64) -> Result<(), String> {
    if own_view.leader.is_none() {
        return Err(format!("node {} knows no leader yet", own_view.view_of));
    }
    if own_view.applied_index < commit_before {
        return Err(format!(
            "node {} has applied {} of the {commit_before} entries committed before its restart",
            own_view.view_of, own_view.applied_index
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::types::Member;

    fn member(id: u64, voter: bool, role: &str, priority: u64, lag: Option<u64>, reachable: bool) -> Member {
        Member {
            id,
            client_url: format!("http://127.0.0.1:700{id}"),
            peer_addr: format!("127.0.0.1:710{id}"),
            fingerprint: None,
            voter,
            reachable: Some(reachable),
            matched_index: None,
            lag,
            extra: [("role".to_string(), json!(role)), ("priority".to_string(), json!(priority))].into(),
        }
    }

    fn view(leader: Option<u64>, members: Vec<Member>) -> Status {
        Status {
            cluster_id: Some("c".into()),
            node_id: leader.unwrap_or(1),
            view_of: leader.unwrap_or(1),
            leader,
            leader_url: None,
            term: 3,
            commit_index: 100,
            applied_index: 100,
            revision: 50,
            voters: members.iter().filter(|m| m.voter).count() as u64,
            warnings: Vec::new(),
            members,
            extra: Default::default(),
        }
    }

    fn three(leader: u64) -> Status {
        view(
            Some(leader),
            vec![
                member(3, true, "data", 100, Some(0), true),
                member(1, true, "data", 100, Some(0), true),
                member(2, true, "data", 100, Some(0), true),
            ],
        )
    }

    #[test]
    fn followers_go_first_in_id_order_and_the_leader_last_after_a_hand_over() {
        use RollingStep::*;
        assert_eq!(
            plan_rolling_restart(&three(2), None).unwrap(),
            [Restart(1), Restart(3), HandOver { from: 2 }, Restart(2)]
        );
        assert_eq!(
            plan_rolling_restart(&three(1), None).unwrap(),
            [Restart(2), Restart(3), HandOver { from: 1 }, Restart(1)]
        );
        // Learners and witnesses are restarted like any follower.
        let mut mixed = three(1);
        mixed.members.push(member(5, false, "data", 100, Some(0), true));
        mixed.members.push(member(4, true, "witness", 0, Some(0), true));
        assert_eq!(
            plan_rolling_restart(&mixed, None).unwrap(),
            [Restart(2), Restart(3), Restart(4), Restart(5), HandOver { from: 1 }, Restart(1)]
        );
    }

    #[test]
    fn a_selection_restarts_only_those_and_hands_over_only_when_the_leader_is_in_it() {
        use RollingStep::*;
        let only: BTreeSet<u64> = [3].into();
        assert_eq!(plan_rolling_restart(&three(1), Some(&only)).unwrap(), [Restart(3)]);
        let only: BTreeSet<u64> = [1, 2].into();
        assert_eq!(
            plan_rolling_restart(&three(1), Some(&only)).unwrap(),
            [Restart(2), HandOver { from: 1 }, Restart(1)]
        );
        let only: BTreeSet<u64> = [9].into();
        assert!(plan_rolling_restart(&three(1), Some(&only)).unwrap_err().contains("node 9 is not a member"));
    }

    #[test]
    fn the_plan_is_refused_without_a_leader_with_a_member_down_or_without_a_possible_successor() {
        assert!(plan_rolling_restart(&view(None, three(1).members), None).unwrap_err().contains("knows no leader"));
        let mut down = three(1);
        down.members[0].reachable = Some(false);
        assert!(plan_rolling_restart(&down, None).unwrap_err().starts_with("node 3 is unreachable"));
        // A pair with a witness: the witness may not be primary, so the data node leading
        // cannot hand over... unless the other data node exists.
        let pair = view(
            Some(1),
            vec![member(1, true, "data", 100, Some(0), true), member(2, true, "witness", 0, Some(0), true)],
        );
        let error = plan_rolling_restart(&pair, None).unwrap_err();
        assert!(error.contains("no other member can take the role over"), "{error}");
        // Restarting only the witness needs no successor.
        let only: BTreeSet<u64> = [2].into();
        assert_eq!(plan_rolling_restart(&pair, Some(&only)).unwrap(), [RollingStep::Restart(2)]);
        // A one-node cluster cannot restart "rolling".
        let alone = view(Some(1), vec![member(1, true, "data", 100, Some(0), true)]);
        assert!(plan_rolling_restart(&alone, None).is_err());
        // Priority 0 data voters and learners are no successors either.
        let no_successor = view(
            Some(1),
            vec![
                member(1, true, "data", 100, Some(0), true),
                member(2, true, "data", 0, Some(0), true),
                member(3, false, "data", 100, Some(0), true),
            ],
        );
        assert!(plan_rolling_restart(&no_successor, None).is_err());
    }

    #[test]
    fn the_switchover_target_is_a_caught_up_data_voter() {
        let mut cluster = three(1);
        assert_eq!(switchover_target(&cluster, 1), Some(2), "lowest id among equals");
        cluster.members[0].extra.insert("priority".into(), json!(200)); // node 3
        assert_eq!(switchover_target(&cluster, 1), Some(3), "highest priority first");
        cluster.members[0].lag = Some(SWITCHOVER_LAG_MAX + 1);
        assert_eq!(switchover_target(&cluster, 1), Some(2), "too far behind");
        cluster.members[2].lag = None; // node 2: lag unknown
        assert_eq!(switchover_target(&cluster, 1), None, "nobody known to be caught up: wait");
        cluster.members[2].lag = Some(3);
        cluster.members[2].reachable = Some(false);
        assert_eq!(switchover_target(&cluster, 1), None, "unreachable");
        let pair = view(
            Some(1),
            vec![member(1, true, "data", 100, Some(0), true), member(2, true, "witness", 0, Some(0), true)],
        );
        assert_eq!(switchover_target(&pair, 1), None, "a witness is never the target");
        // An older server without roles: every voter counts as data.
        let mut old = three(1);
        for member in &mut old.members {
            member.extra.clear();
        }
        assert_eq!(switchover_target(&old, 1), Some(2));
    }

    #[test]
    fn a_restarted_node_is_ready_once_it_sees_a_leader_and_caught_up() {
        let mut own = three(1);
        own.view_of = 3;
        own.applied_index = 99;
        assert!(restarted_node_ready(&own, 100).unwrap_err().contains("applied 99 of the 100"));
        own.applied_index = 100;
        assert_eq!(restarted_node_ready(&own, 100), Ok(()));
        own.leader = None;
        assert!(restarted_node_ready(&own, 100).unwrap_err().contains("knows no leader"));
    }
}
