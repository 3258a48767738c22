//! The HA status (seed 002's "stable"), computed from what one node knows, and the
//! topology the membership forms.
//!
//! ```text
//!   HaView { node_id, maintenance, members (role, voter?, reachable, lag, leader?), ... }
//!        │ compute()
//!        ▼
//!   HaStatus { state, reasons (in words, naming nodes), view_of, topology, survives, primary }
//!
//!   state, first that applies:
//!     no-quorum     this node does not reach a majority of the voters (or leads without one)
//!     maintenance   the operator switched automatic failover and failback off
//!     standalone    one node: nothing to fail over to
//!     failing-over  no primary: no leader known, a witness leads, or the leader lost quorum
//!     degraded      quorum kept, but a member is unreachable or lagging (named), or the
//!                   topology survives no loss at all (two voters, a pair without a witness)
//!     stable        every member reachable and caught up, and the loss of any one node
//!                   survived
//! ```
//!
//! The status is a view: each node computes it from its own knowledge, and `view_of` says
//! whose. Only the leader knows every follower's progress; a member whose lag is unknown
//! here is not called lagging, and the stable reason says whose view it is.
//! Every state carries at least one reason; states worse than stable also list every
//! unreachable or lagging member, so `maintenance` does not hide a dead node.

use serde::Serialize;

use crate::ha::nodes_in_words;
use crate::ha::MemberKind;
use crate::ha::NodeRole;

/// Entries behind the leader beyond which a member is "lagging". At openraft's batch of 64
/// entries per message (`limits::APPEND_ENTRIES_MAX`) that is about 16 round trips: more
/// than a healthy follower falls behind in a burst of writes, far less than what a stalled
/// one accumulates in seconds at full write rate.
pub const LAG_THRESHOLD_ENTRIES_DEFAULT: u64 = 1_000;

/// One member as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    pub id: u64,
    pub role: NodeRole,
    pub kind: MemberKind,
    /// Heard from recently by this node (this node itself counts as reachable).
    pub reachable: bool,
    /// Log entries behind the leader's last entry; `None` if this node does not know.
    pub lag_entries: Option<u64>,
    /// This node believes the member is the current leader.
    pub is_leader: bool,
    /// A data node with priority above 0: it may be the primary. Witnesses and
    /// priority-0 nodes vote but never serve writes, so they add no tolerance of their own.
    pub may_be_primary: bool,
}

/// Everything the status is computed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaView {
    /// Whose view this is.
    pub node_id: u64,
    pub maintenance: bool,
    pub members: Vec<MemberView>,
    /// The leader heard from a majority within its lease (on the leader: its own check;
    /// elsewhere: what the leader last reported).
    pub leader_has_quorum: bool,
    /// See [`LAG_THRESHOLD_ENTRIES_DEFAULT`].
    pub lag_threshold_entries: u64,
    /// Set when this node's ping targets are silent (see `gating`): the reason is shown.
    pub candidacy_withheld: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HaState {
    Stable,
    Degraded,
    NoQuorum,
    FailingOver,
    Maintenance,
    Standalone,
}

impl HaState {
    pub const ALL: [HaState; 6] = [
        HaState::Stable,
        HaState::Degraded,
        HaState::NoQuorum,
        HaState::FailingOver,
        HaState::Maintenance,
        HaState::Standalone,
    ];

    pub fn name(self) -> &'static str {
        match self {
            HaState::Stable => "stable",
            HaState::Degraded => "degraded",
            HaState::NoQuorum => "no-quorum",
            HaState::FailingOver => "failing-over",
            HaState::Maintenance => "maintenance",
            HaState::Standalone => "standalone",
        }
    }
}

impl std::fmt::Display for HaState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HaStatus {
    pub state: HaState,
    /// Why, in words, naming nodes; never empty.
    pub reasons: Vec<String>,
    /// The node whose knowledge this is.
    pub view_of: u64,
    pub topology: Topology,
    /// What the topology survives, in words.
    pub survives: String,
    /// The primary: a data voter that leads and has a quorum, as this node sees it.
    pub primary: Option<u64>,
}

/// The shape of the membership (DESIGN.md, "Topologies").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Topology {
    /// One data voter and nothing else.
    Standalone,
    /// 3, 5 or 7 data voters (learners beside them add read capacity, not tolerance).
    ReplicaSet { voters: usize },
    /// Two data voters and one witness voter.
    PairWithWitness,
    /// One data voter and one data learner: no automatic failover.
    PairWithoutWitness,
    /// Anything else (an even number of voters, several witnesses, ...), or a named shape
    /// whose voters cannot keep their promise because too few of them may be the primary.
    /// `primary_capable` counts the voters that may be the primary (data, priority above 0).
    Other { data_voters: usize, witness_voters: usize, learners: usize, primary_capable: usize },
}

/// Members counted by role and kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemberCounts {
    pub data_voters: usize,
    pub witness_voters: usize,
    pub data_learners: usize,
    pub witness_learners: usize,
    /// Voters that may be the primary (data nodes with priority above 0).
    pub primary_capable_voters: usize,
}

impl MemberCounts {
    /// Counts members given as (role, kind, may be the primary).
    pub fn of(members: impl IntoIterator<Item = (NodeRole, MemberKind, bool)>) -> MemberCounts {
        let mut counts = MemberCounts::default();
        for (role, kind, may_be_primary) in members {
            match (role, kind) {
                (NodeRole::Data, MemberKind::Voter) => counts.data_voters += 1,
                (NodeRole::Witness, MemberKind::Voter) => counts.witness_voters += 1,
                (NodeRole::Data, MemberKind::Learner) => counts.data_learners += 1,
                (NodeRole::Witness, MemberKind::Learner) => counts.witness_learners += 1,
            }
            if kind == MemberKind::Voter && role == NodeRole::Data && may_be_primary {
                counts.primary_capable_voters += 1;
            }
        }
        counts
    }

    pub fn voters(&self) -> usize {
        self.data_voters + self.witness_voters
    }

    pub fn learners(&self) -> usize {
        self.data_learners + self.witness_learners
    }

    /// [`vote_tolerance`] of these voters.
    pub fn vote_tolerance(&self) -> usize {
        vote_tolerance(self.voters())
    }

    /// [`write_tolerance`] of these voters.
    pub fn fault_tolerance(&self) -> usize {
        write_tolerance(self.voters(), self.primary_capable_voters)
    }
}

/// Voters that may be down with a majority of `voters` left: (voters - 1) / 2.
pub fn vote_tolerance(voters: usize) -> usize {
    voters.saturating_sub(1) / 2
}

/// Voters that may be down with writes continuing: a majority must be left **and** a
/// voter that may be the primary among them (`primary_capable` of the `voters` may be).
/// With one data node and two witnesses a majority survives the data node's loss, but
/// nobody can serve writes: tolerance 0. The status and the configuration check
/// (`ha::config`) both judge by this.
pub fn write_tolerance(voters: usize, primary_capable: usize) -> usize {
    vote_tolerance(voters).min(primary_capable.saturating_sub(1))
}

impl Topology {
    pub fn of(members: &[MemberView]) -> Topology {
        Topology::from_counts(MemberCounts::of(
            members.iter().map(|member| (member.role, member.kind, member.may_be_primary)),
        ))
    }

    /// The shape of the membership. A named shape is only given when its promise holds:
    /// three data voters of which two have priority 0 are not a replica set that survives a
    /// loss, they are "other" with tolerance 0.
    pub fn from_counts(counts: MemberCounts) -> Topology {
        let MemberCounts { data_voters, witness_voters, data_learners, witness_learners, primary_capable_voters } =
            counts;
        let other = Topology::Other {
            data_voters,
            witness_voters,
            learners: counts.learners(),
            primary_capable: primary_capable_voters,
        };
        if counts.fault_tolerance() < counts.vote_tolerance() || primary_capable_voters == 0 {
            return other;
        }
        match (data_voters, witness_voters, data_learners, witness_learners) {
            (1, 0, 0, 0) => Topology::Standalone,
            (1, 0, 1, 0) => Topology::PairWithoutWitness,
            (2, 1, _, _) => Topology::PairWithWitness,
            (3 | 5 | 7, 0, _, _) => Topology::ReplicaSet { voters: data_voters },
            _ => other,
        }
    }

    pub fn voters(&self) -> usize {
        match *self {
            Topology::Standalone | Topology::PairWithoutWitness => 1,
            Topology::ReplicaSet { voters } => voters,
            Topology::PairWithWitness => 3,
            Topology::Other { data_voters, witness_voters, .. } => data_voters + witness_voters,
        }
    }

    /// How many voters may be down with writes continuing ([`write_tolerance`]): for a
    /// named shape, whose voters may all be the primary, [`vote_tolerance`].
    pub fn fault_tolerance(&self) -> usize {
        match *self {
            Topology::Other { primary_capable, .. } => write_tolerance(self.voters(), primary_capable),
            _ => vote_tolerance(self.voters()),
        }
    }

    /// Whether losing the primary leads to a new one without an operator.
    pub fn automatic_failover(&self) -> bool {
        match *self {
            Topology::Standalone | Topology::PairWithoutWitness => false,
            Topology::ReplicaSet { .. } | Topology::PairWithWitness => true,
            Topology::Other { .. } => self.fault_tolerance() >= 1,
        }
    }

    /// What it survives, in words (DESIGN.md's table).
    pub fn survives(&self) -> String {
        match *self {
            Topology::Standalone => {
                "nothing: the only node is a single point of failure; add two data nodes, or one and a witness, for \
                 automatic failover"
                    .into()
            }
            Topology::ReplicaSet { voters } => format!(
                "any {} of its {voters} nodes down, and any partition that keeps {} of them together",
                self.fault_tolerance(),
                voters / 2 + 1
            ),
            Topology::PairWithWitness => {
                "any one of the three nodes down, and any partition: the side with two of the three carries on".into()
            }
            Topology::PairWithoutWitness => {
                "the learner's loss only; if the voter is lost, writes stop until the learner is promoted by hand (no \
                 automatic failover; add a witness for it)"
                    .into()
            }
            Topology::Other { primary_capable, .. } => {
                let voters = self.voters();
                let tolerance = self.fault_tolerance();
                let vote_tolerance = vote_tolerance(voters);
                let mut text = match tolerance {
                    0 if voters == 0 => "nothing: there are no voters".to_string(),
                    0 if primary_capable == 0 => {
                        "nothing: no voter may be the primary (each is a witness or has priority 0), so nothing can \
                         be written"
                            .to_string()
                    }
                    0 if primary_capable == 1 && vote_tolerance > 0 => format!(
                        "nothing: only 1 of the {voters} voters may be the primary (witnesses and priority-0 nodes \
                         never serve writes), and losing it stops writes"
                    ),
                    0 => "nothing: losing any voter stops writes".to_string(),
                    1 => "any 1 voter down".to_string(),
                    n => format!("any {n} voters down"),
                };
                if tolerance > 0 && tolerance < vote_tolerance {
                    text.push_str(&format!(
                        " (only {primary_capable} of the {voters} voters may be the primary, so not the {vote_tolerance} \
                         a majority alone would allow)"
                    ));
                }
                if voters > 0 && voters.is_multiple_of(2) {
                    text.push_str(&format!(
                        "; {voters} voters survive no more than {} would, so add or remove one",
                        voters - 1
                    ));
                }
                text
            }
        }
    }
}

impl std::fmt::Display for Topology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Topology::Standalone => f.write_str("standalone"),
            Topology::ReplicaSet { voters } => write!(f, "replica set of {voters}"),
            Topology::PairWithWitness => f.write_str("pair + witness"),
            Topology::PairWithoutWitness => f.write_str("pair without witness"),
            Topology::Other { data_voters, witness_voters, learners, primary_capable } => {
                write!(f, "other ({data_voters} data voters, {witness_voters} witnesses, {learners} learners")?;
                if *primary_capable < *data_voters {
                    write!(f, "; {primary_capable} may be primary")?;
                }
                f.write_str(")")
            }
        }
    }
}

fn describe(member: &MemberView) -> String {
    format!("node {} ({} {})", member.id, member.role, member.kind)
}

/// Computes the status from this node's view. See the module picture for the order.
pub fn compute(view: &HaView) -> HaStatus {
    let me = view.node_id;
    let topology = Topology::of(&view.members);
    let status = |state: HaState, reasons: Vec<String>, primary: Option<u64>| {
        let mut reasons = reasons;
        if let Some(why) = &view.candidacy_withheld {
            reasons.push(format!("node {me} withholds its candidacy: {why}"));
        }
        debug_assert!(!reasons.is_empty(), "every status says why");
        HaStatus { state, reasons, view_of: me, topology, survives: topology.survives(), primary }
    };

    let mut members: Vec<&MemberView> = view.members.iter().collect();
    members.sort_by_key(|member| member.id);
    let Some(myself) = members.iter().find(|member| member.id == me) else {
        return status(
            HaState::NoQuorum,
            vec![format!("node {me} is not a member of the cluster, so it has no part in any quorum")],
            None,
        );
    };
    let reachable = |member: &MemberView| member.id == me || member.reachable;

    // Quorum, as this node can tell: voters it reaches, itself included.
    let voters: Vec<&MemberView> = members.iter().copied().filter(|member| member.kind == MemberKind::Voter).collect();
    let majority = voters.len() / 2 + 1;
    let reached = voters.iter().filter(|member| reachable(member)).count();
    let unreached: Vec<u64> = voters.iter().filter(|member| !reachable(member)).map(|member| member.id).collect();

    // Who leads, and whether that makes a primary.
    let leaders: Vec<&MemberView> = members.iter().copied().filter(|member| member.is_leader).collect();
    let no_primary: Option<String> = match leaders.as_slice() {
        [] => Some("no primary: no leader is known, an election is in progress".into()),
        [leader] if leader.role == NodeRole::Witness => Some(format!(
            "no primary: witness node {} leads only until a data node is caught up, then hands leadership over",
            leader.id
        )),
        [leader] if !reachable(leader) => {
            Some(format!("no primary: leader node {} is unreachable from node {me}; a new election follows", leader.id))
        }
        [leader] if !view.leader_has_quorum => Some(format!(
            "no primary: leader node {} has not heard from a majority recently, so it acknowledges nothing",
            leader.id
        )),
        [_] => None,
        several => {
            let ids: Vec<u64> = several.iter().map(|member| member.id).collect();
            Some(format!(
                "no primary: {} each claim to lead (in different terms); the newer term wins",
                nodes_in_words(&ids)
            ))
        }
    };
    let primary = match (leaders.as_slice(), &no_primary) {
        ([leader], None) => Some(leader.id),
        _ => None,
    };

    // Problems with members, for degraded and beside worse states.
    let mut problems = Vec::new();
    for member in &members {
        if !reachable(member) {
            problems.push(format!("{} is unreachable from node {me}", describe(member)));
        } else if let Some(lag) = member.lag_entries.filter(|lag| *lag > view.lag_threshold_entries) {
            problems.push(format!(
                "{} lags {lag} entries behind the leader (threshold {})",
                describe(member),
                view.lag_threshold_entries
            ));
        }
    }

    if reached < majority || (myself.is_leader && !view.leader_has_quorum) {
        let mut reasons = Vec::new();
        if reached < majority {
            reasons.push(format!(
                "node {me} reaches {reached} of {} voters (a majority is {majority}): {} unreachable; nothing can be \
                 written until a majority is back",
                voters.len(),
                nodes_in_words(&unreached)
            ));
        } else {
            reasons.push(format!(
                "node {me} leads but has not heard from a majority recently, so it acknowledges nothing"
            ));
        }
        if topology == Topology::PairWithoutWitness && myself.kind == MemberKind::Learner {
            reasons.push(format!(
                "this pair has no witness, so there is no automatic failover: if the voter is lost for good, promote \
                 node {me} (the learner) by hand"
            ));
        }
        return status(HaState::NoQuorum, reasons, None);
    }
    if view.maintenance {
        // What maintenance is doing now, by the election rule of `ha::elections`: it pauses
        // automatic failover, but a cluster that knows no leader at all still elects one.
        let what = match leaders.as_slice() {
            [] => "maintenance mode is on, but no leader is known: elections go on so the cluster gets one \
                   (maintenance pauses failover, never the first election)"
                .to_string(),
            [leader] if !reachable(leader) => format!(
                "maintenance mode is on: leader node {} is unreachable from node {me}, and no new election follows \
                 until `haven maintenance off` (automatic failover is paused)",
                leader.id
            ),
            [leader] if leader.role == NodeRole::Witness || !leader.may_be_primary => format!(
                "maintenance mode is on: automatic failover and failback are paused; node {} leads only until a \
                 data node has caught up (that hand-off is a safety action and happens in maintenance too)",
                leader.id
            ),
            [leader] => format!(
                "maintenance mode is on: automatic failover and failback are paused, so node {} stays the primary \
                 even if it fails; switchover still works; `haven maintenance off` resumes them",
                leader.id
            ),
            _ => "maintenance mode is on: automatic failover and failback are paused".to_string(),
        };
        let mut reasons = vec![what];
        if leaders.len() > 1 {
            reasons.extend(no_primary);
        }
        reasons.extend(problems);
        return status(HaState::Maintenance, reasons, primary);
    }
    if topology == Topology::Standalone {
        let mut reasons = vec![format!("node {me} is the only node: there is nothing to fail over to")];
        reasons.extend(no_primary);
        return status(HaState::Standalone, reasons, primary);
    }
    if let Some(no_primary) = no_primary {
        let mut reasons = vec![no_primary];
        reasons.extend(problems);
        return status(HaState::FailingOver, reasons, None);
    }
    if !problems.is_empty() {
        let spare = reached - majority;
        problems.push(match spare {
            0 => format!(
                "quorum kept: {reached} of {} voters reachable; losing one more voter stops writes",
                voters.len()
            ),
            n => format!("quorum kept: {reached} of {} voters reachable; {n} more may be lost", voters.len()),
        });
        return status(HaState::Degraded, problems, primary);
    }
    // "Stable" promises that the loss of a node is survived; a cluster that survives none
    // (two voters, a pair without a witness, witnesses without enough data nodes) is not.
    if topology.fault_tolerance() == 0 {
        return status(
            HaState::Degraded,
            vec![format!(
                "every member is reachable, but this {topology} survives {}; add a voter (a data node or a witness) \
                 to survive the loss of one",
                topology.survives()
            )],
            primary,
        );
    }
    let unknown: Vec<u64> = members
        .iter()
        .filter(|member| member.lag_entries.is_none() && !member.is_leader)
        .map(|member| member.id)
        .collect();
    let mut stable = format!("all {} members reachable and caught up, as node {me} sees it", members.len());
    if !unknown.is_empty() {
        stable.push_str(&format!(" (the lag of {} is not known here)", nodes_in_words(&unknown)));
    }
    status(HaState::Stable, vec![stable], primary)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATA: NodeRole = NodeRole::Data;
    const WITNESS: NodeRole = NodeRole::Witness;
    const VOTER: MemberKind = MemberKind::Voter;
    const LEARNER: MemberKind = MemberKind::Learner;

    fn member(id: u64, role: NodeRole, kind: MemberKind) -> MemberView {
        MemberView {
            id,
            role,
            kind,
            reachable: true,
            lag_entries: Some(0),
            is_leader: false,
            may_be_primary: role == NodeRole::Data,
        }
    }

    fn view(node_id: u64, members: Vec<MemberView>) -> HaView {
        HaView {
            node_id,
            maintenance: false,
            members,
            leader_has_quorum: true,
            lag_threshold_entries: LAG_THRESHOLD_ENTRIES_DEFAULT,
            candidacy_withheld: None,
        }
    }

    /// Three data voters, node 1 leads; as seen by node 1.
    fn three() -> HaView {
        let mut members = vec![member(1, DATA, VOTER), member(2, DATA, VOTER), member(3, DATA, VOTER)];
        members[0].is_leader = true;
        view(1, members)
    }

    /// Two data nodes and a witness, node 1 leads.
    fn pair_witness() -> HaView {
        let mut members = vec![member(1, DATA, VOTER), member(2, DATA, VOTER), member(3, WITNESS, VOTER)];
        members[0].is_leader = true;
        view(1, members)
    }

    /// One voter (leads) and one learner.
    fn pair_no_witness(node_id: u64) -> HaView {
        let mut members = vec![member(1, DATA, VOTER), member(2, DATA, LEARNER)];
        members[0].is_leader = true;
        view(node_id, members)
    }

    fn assert_status(name: &str, view: &HaView, state: HaState, primary: Option<u64>, words: &[&str]) {
        let status = compute(view);
        assert_eq!(status.state, state, "{name}: {status:#?}");
        assert_eq!(status.primary, primary, "{name}: {status:#?}");
        assert_eq!(status.view_of, view.node_id, "{name}");
        assert!(!status.reasons.is_empty(), "{name}: every status says why");
        let text = status.reasons.join(" | ");
        for word in words {
            assert!(text.contains(word), "{name}: {word:?} missing from {text}");
        }
    }

    /// Every state, from the views that lead to it (seed 002's "stable" and the rest).
    #[test]
    fn every_state() {
        // (name, view, expected state, expected primary, words in the reasons)
        type Case = (&'static str, HaView, HaState, Option<u64>, Vec<&'static str>);
        let mut cases: Vec<Case> = Vec::new();

        cases.push(("stable replica set", three(), HaState::Stable, Some(1), vec!["all 3 members", "node 1 sees"]));
        cases.push(("stable pair + witness", pair_witness(), HaState::Stable, Some(1), vec!["all 3 members"]));
        let mut follower = three();
        follower.node_id = 2;
        follower.members[2].lag_entries = None;
        cases.push((
            "stable from a follower that does not know node 3's lag",
            follower,
            HaState::Stable,
            Some(1),
            vec!["node 2 sees", "lag of node 3 is not known"],
        ));

        let mut down = three();
        down.members[2].reachable = false;
        cases.push((
            "degraded: a voter down",
            down,
            HaState::Degraded,
            Some(1),
            vec!["node 3 (data voter) is unreachable from node 1", "2 of 3", "losing one more voter stops writes"],
        ));
        let mut lagging = three();
        lagging.members[1].lag_entries = Some(5_000);
        cases.push((
            "degraded: a voter lagging",
            lagging,
            HaState::Degraded,
            Some(1),
            vec!["node 2 (data voter) lags 5000 entries", "threshold 1000", "3 of 3", "1 more may be lost"],
        ));
        let mut at_threshold = three();
        at_threshold.members[1].lag_entries = Some(LAG_THRESHOLD_ENTRIES_DEFAULT);
        cases.push(("stable: lag at the threshold is not lagging", at_threshold, HaState::Stable, Some(1), vec![]));
        let mut witness_down = pair_witness();
        witness_down.members[2].reachable = false;
        cases.push((
            "degraded: the witness down",
            witness_down,
            HaState::Degraded,
            Some(1),
            vec!["node 3 (witness voter) is unreachable"],
        ));
        let mut learner_down = pair_no_witness(1);
        learner_down.members[1].reachable = false;
        cases.push((
            "degraded: the learner of a pair without witness down",
            learner_down,
            HaState::Degraded,
            Some(1),
            vec!["node 2 (data learner) is unreachable", "1 of 1"],
        ));

        let mut isolated = three();
        isolated.node_id = 3;
        isolated.members[0].reachable = false;
        isolated.members[1].reachable = false;
        cases.push((
            "no-quorum: isolated follower",
            isolated,
            HaState::NoQuorum,
            None,
            vec!["node 3 reaches 1 of 3 voters", "majority is 2", "nodes 1 and 2 unreachable"],
        ));
        let mut lonely_leader = three();
        lonely_leader.leader_has_quorum = false;
        cases.push((
            "no-quorum: leader without a quorum",
            lonely_leader,
            HaState::NoQuorum,
            None,
            vec!["node 1 leads but has not heard from a majority"],
        ));
        let mut learner_alone = pair_no_witness(2);
        learner_alone.members[0].reachable = false;
        cases.push((
            "no-quorum: pair without witness, voter lost, as the learner sees it",
            learner_alone,
            HaState::NoQuorum,
            None,
            vec!["node 2 reaches 0 of 1 voters", "promote node 2 (the learner) by hand"],
        ));
        cases.push((
            "no-quorum: not a member",
            view(9, three().members),
            HaState::NoQuorum,
            None,
            vec!["node 9 is not a member"],
        ));
        let mut maintenance_no_quorum = three();
        maintenance_no_quorum.maintenance = true;
        maintenance_no_quorum.members[1].reachable = false;
        maintenance_no_quorum.members[2].reachable = false;
        cases.push((
            "no-quorum outranks maintenance",
            maintenance_no_quorum,
            HaState::NoQuorum,
            None,
            vec!["reaches 1 of 3"],
        ));

        let mut electing = three();
        electing.node_id = 2;
        electing.members[0].is_leader = false;
        electing.members[0].reachable = false;
        cases.push((
            "failing-over: leader gone, election in progress",
            electing,
            HaState::FailingOver,
            None,
            vec!["no leader is known", "node 1 (data voter) is unreachable from node 2"],
        ));
        let mut witness_leads = pair_witness();
        witness_leads.members[0].is_leader = false;
        witness_leads.members[2].is_leader = true;
        witness_leads.members[1].lag_entries = Some(20_000);
        cases.push((
            "failing-over: the witness leads while node 2 catches up",
            witness_leads,
            HaState::FailingOver,
            None,
            vec!["witness node 3 leads only until", "node 2 (data voter) lags 20000"],
        ));
        let mut leader_unreachable = three();
        leader_unreachable.node_id = 2;
        leader_unreachable.members[0].reachable = false;
        cases.push((
            "failing-over: follower lost the leader but reaches a majority",
            leader_unreachable,
            HaState::FailingOver,
            None,
            vec!["leader node 1 is unreachable from node 2"],
        ));
        let mut stale_leader = three();
        stale_leader.node_id = 2;
        stale_leader.leader_has_quorum = false;
        cases.push((
            "failing-over: leader lost its quorum, as a follower sees it",
            stale_leader,
            HaState::FailingOver,
            None,
            vec!["leader node 1 has not heard from a majority"],
        ));
        let mut two_leaders = three();
        two_leaders.node_id = 3;
        two_leaders.members[1].is_leader = true;
        cases.push((
            "failing-over: two leaders in different terms",
            two_leaders,
            HaState::FailingOver,
            None,
            vec!["nodes 1 and 2 each claim to lead"],
        ));

        let mut maintenance = three();
        maintenance.maintenance = true;
        maintenance.members[2].reachable = false;
        cases.push((
            "maintenance, still naming the dead node",
            maintenance,
            HaState::Maintenance,
            Some(1),
            vec![
                "maintenance mode is on",
                "node 1 stays the primary even if it fails",
                "node 3 (data voter) is unreachable",
            ],
        ));
        // Issue 14: what maintenance does, in each situation, by the election rule.
        let mut restarted = three();
        restarted.maintenance = true;
        restarted.members[0].is_leader = false;
        cases.push((
            "maintenance after a restart of every node: no leader known, elections go on",
            restarted,
            HaState::Maintenance,
            None,
            vec!["no leader is known: elections go on"],
        ));
        let mut paused = three();
        paused.maintenance = true;
        paused.node_id = 2;
        paused.members[0].reachable = false;
        let text = compute(&paused).reasons.join(" | ");
        assert!(!text.contains("a new election follows"), "maintenance must not promise an election: {text}");
        cases.push((
            "maintenance with the primary dead: failover paused",
            paused,
            HaState::Maintenance,
            None,
            vec!["leader node 1 is unreachable from node 2, and no new election follows until `haven maintenance off`"],
        ));

        // Issue 14: "stable" means the loss of a node is survived.
        let mut two = view(1, vec![member(1, DATA, VOTER), member(2, DATA, VOTER)]);
        two.members[0].is_leader = true;
        cases.push((
            "two voters, both up: survives nothing",
            two,
            HaState::Degraded,
            Some(1),
            vec!["every member is reachable", "losing any voter stops writes"],
        ));
        cases.push((
            "pair without witness, both up: survives the voter's loss by hand only",
            pair_no_witness(1),
            HaState::Degraded,
            Some(1),
            vec!["every member is reachable", "learner's loss only"],
        ));
        let mut witnesses = view(1, vec![member(1, DATA, VOTER), member(2, WITNESS, VOTER), member(3, WITNESS, VOTER)]);
        witnesses.members[0].is_leader = true;
        cases.push((
            "one data node and two witnesses: a majority survives, writes do not",
            witnesses,
            HaState::Degraded,
            Some(1),
            vec!["only 1 of the 3 voters may be the primary"],
        ));

        let mut alone = view(1, vec![member(1, DATA, VOTER)]);
        alone.members[0].is_leader = true;
        cases.push(("standalone", alone.clone(), HaState::Standalone, Some(1), vec!["only node"]));
        alone.members[0].is_leader = false;
        cases.push((
            "standalone while electing itself",
            alone,
            HaState::Standalone,
            None,
            vec!["only node", "no leader is known"],
        ));

        let mut gated = three();
        gated.node_id = 2;
        gated.candidacy_withheld = Some("none of the 1 ping target answered".into());
        cases.push((
            "stable cluster, this node's ping targets silent",
            gated,
            HaState::Stable,
            Some(1),
            vec!["node 2 withholds its candidacy: none of the 1 ping target"],
        ));

        for (name, view, state, primary, words) in cases {
            assert_status(name, &view, state, primary, &words);
        }
    }

    /// Topology from the membership, and what each survives.
    #[test]
    fn topologies() {
        let counts = |data_voters, witness_voters, data_learners, witness_learners| MemberCounts {
            data_voters,
            witness_voters,
            data_learners,
            witness_learners,
            primary_capable_voters: data_voters,
        };
        let capable = |counts: MemberCounts, primary_capable_voters| MemberCounts { primary_capable_voters, ..counts };
        // (counts, topology, name, fault tolerance, automatic failover, words in survives)
        let table = [
            (counts(1, 0, 0, 0), Topology::Standalone, "standalone", 0, false, "nothing"),
            (counts(3, 0, 0, 0), Topology::ReplicaSet { voters: 3 }, "replica set of 3", 1, true, "any 1 of its 3"),
            (counts(5, 0, 2, 0), Topology::ReplicaSet { voters: 5 }, "replica set of 5", 2, true, "any 2 of its 5"),
            (counts(7, 0, 0, 0), Topology::ReplicaSet { voters: 7 }, "replica set of 7", 3, true, "keeps 4 of them"),
            (counts(2, 1, 0, 0), Topology::PairWithWitness, "pair + witness", 1, true, "any partition"),
            (counts(1, 0, 1, 0), Topology::PairWithoutWitness, "pair without witness", 0, false, "promoted by hand"),
            (
                counts(2, 0, 0, 0),
                Topology::Other { data_voters: 2, witness_voters: 0, learners: 0, primary_capable: 2 },
                "other (2 data voters, 0 witnesses, 0 learners)",
                0,
                false,
                "2 voters survive no more than 1",
            ),
            (
                counts(3, 1, 0, 0),
                Topology::Other { data_voters: 3, witness_voters: 1, learners: 0, primary_capable: 3 },
                "other (3 data voters, 1 witnesses, 0 learners)",
                1,
                true,
                "any 1 voter down; 4 voters",
            ),
            (
                counts(1, 0, 2, 0),
                Topology::Other { data_voters: 1, witness_voters: 0, learners: 2, primary_capable: 1 },
                "other (1 data voters, 0 witnesses, 2 learners)",
                0,
                false,
                "losing any voter stops writes",
            ),
            // Issue 14: tolerance counts the voters that may be the primary.
            (
                counts(1, 2, 0, 0),
                Topology::Other { data_voters: 1, witness_voters: 2, learners: 0, primary_capable: 1 },
                "other (1 data voters, 2 witnesses, 0 learners)",
                0,
                false,
                "only 1 of the 3 voters may be the primary",
            ),
            (
                capable(counts(3, 0, 0, 0), 1),
                Topology::Other { data_voters: 3, witness_voters: 0, learners: 0, primary_capable: 1 },
                "other (3 data voters, 0 witnesses, 0 learners; 1 may be primary)",
                0,
                false,
                "losing it stops writes",
            ),
            (
                capable(counts(3, 0, 0, 0), 2),
                Topology::ReplicaSet { voters: 3 },
                "replica set of 3",
                1,
                true,
                "any 1 of its 3",
            ),
            (
                counts(2, 3, 0, 0),
                Topology::Other { data_voters: 2, witness_voters: 3, learners: 0, primary_capable: 2 },
                "other (2 data voters, 3 witnesses, 0 learners)",
                1,
                true,
                "only 2 of the 5 voters may be the primary, so not the 2",
            ),
            (
                counts(0, 0, 0, 0),
                Topology::Other { data_voters: 0, witness_voters: 0, learners: 0, primary_capable: 0 },
                "other (0 data voters, 0 witnesses, 0 learners)",
                0,
                false,
                "no voters",
            ),
        ];
        for (counts, topology, name, tolerance, automatic, words) in table {
            let derived = Topology::from_counts(counts);
            assert_eq!(derived, topology, "{counts:?}");
            assert_eq!(derived.to_string(), name);
            assert_eq!(derived.fault_tolerance(), tolerance, "{name}");
            assert_eq!(derived.automatic_failover(), automatic, "{name}");
            assert!(derived.survives().contains(words), "{name}: {}", derived.survives());
        }
    }

    /// The status carries the topology and its survival text, and serializes for the API.
    #[test]
    fn status_names_topology_and_serializes() {
        let status = compute(&pair_witness());
        assert_eq!(status.topology, Topology::PairWithWitness);
        assert_eq!(status.survives, Topology::PairWithWitness.survives());
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["state"], "stable");
        assert_eq!(json["topology"]["kind"], "pair-with-witness");
        assert_eq!(json["view_of"], 1);
        let no_quorum = serde_json::to_value(HaState::NoQuorum).unwrap();
        assert_eq!(no_quorum, "no-quorum");
        assert_eq!(HaState::FailingOver.to_string(), "failing-over");
    }
}
