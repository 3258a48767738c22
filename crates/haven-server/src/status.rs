//! The cluster as this node sees it: `GET /v1/status`.

use std::collections::BTreeSet;

use haven_core::identity::boot_hex;
use haven_store::NodeId;
use serde::Serialize;

use crate::Node;

#[derive(Debug, Clone, Serialize)]
pub struct MemberStatus {
    pub id: NodeId,
    pub client_url: String,
    pub peer_addr: String,
    /// The member's TLS key fingerprint: clients that trust this node learn the others'.
    pub fingerprint: String,
    pub voter: bool,
    /// `data` or `witness`, from the HA configuration.
    pub role: haven_core::ha::NodeRole,
    /// 0 = never primary.
    pub priority: u32,
    pub leader: bool,
    pub reachable: bool,
    /// Highest log index known to be on that member (from the leader's replication state
    /// or the member's own answer to a probe).
    pub matched_index: Option<u64>,
    /// Entries it is behind this node's commit index.
    pub lag: Option<u64>,
    pub last_error: Option<String>,
    /// The boot identity of the member's process this node hears (16 hex digits), while it
    /// is heard within the boot lease (`haven_core::identity`).
    pub boot: Option<String>,
    /// How far the member's wall clock is off the cluster's time (the median of this node's
    /// readings; positive: ahead), in ms, and how uncertain that is (`haven_core::clock`).
    /// Null without a fresh reading.
    pub clock_skew_ms: Option<i64>,
    pub clock_uncertainty_ms: Option<u64>,
    /// The highest log index the replicated state records this member's data dir as
    /// holding on disk (`haven_core::durability`); null until a leader recorded one.
    pub durable_mark: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub cluster_id: Option<String>,
    pub node_id: NodeId,
    /// This process's boot identity: new at every start.
    pub boot: String,
    /// Whose view this is: always this node; status is never relayed.
    pub view_of: NodeId,
    pub state: String,
    pub leader: Option<NodeId>,
    pub leader_url: Option<String>,
    pub term: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub last_log_index: u64,
    pub revision: u64,
    pub voters: usize,
    /// The leader has heard from a quorum within the election timeout.
    pub leader_has_quorum: bool,
    pub member: bool,
    /// Maintenance mode: no automatic failover or failback (switchover still works).
    pub maintenance: bool,
    pub joining: Option<String>,
    pub warnings: Vec<String>,
    pub members: Vec<MemberStatus>,
    /// The HA status (seed 002's "stable"), computed by the pure core from this view.
    pub ha: haven_core::ha::status::HaStatus,
    /// The applied HA configuration's version (0 = never applied: defaults).
    pub config_version: u64,
    /// Failovers (unplanned leader changes, from the audit log) in the last hour.
    pub failovers_last_hour: usize,
    /// Why this node needs a restart for the applied configuration to take effect.
    pub pending_restart: Option<String>,
    /// Set when a teardown detached this node: it serves no cluster and keeps its data
    /// read-only.
    pub detached: Option<crate::ha::Detached>,
    /// This node's ping targets and whether they answer (seed 002).
    pub ping_targets: Vec<crate::targets::TargetStatus>,
    /// Set while silent ping targets withhold this node's candidacy.
    pub candidacy_withheld: Option<String>,
    /// The last failback / hand-off decision of this node (as leader).
    pub failback: Option<String>,
    /// The latest alerts this node fired (hook and e-mail outcomes), newest last.
    pub alerts: Vec<crate::alerts::AlertOutcome>,
    /// Set once this node's Raft core stopped (a storage error): why. The node serves
    /// nothing and is exiting.
    pub core_stopped: Option<String>,
    /// Set once this node's state differs from every other replica's at the same log
    /// index: why. It serves no reads until rebuilt (docs/architecture.md, "Integrity").
    pub diverged: Option<String>,
    /// What this node stores, each size with its byte bound.
    pub storage: crate::storage_size::StorageSizes,
}

pub fn status(node: &Node) -> Status {
    let metrics = node.metrics();
    let membership = metrics.membership_config.clone();
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    let commit_index = metrics.local_committed.as_ref().map_or(0, |log_id| log_id.index());
    let replication = metrics.replication.clone().unwrap_or_default();
    let leader_has_quorum = node.leader_has_quorum(&metrics);
    let config = node.ha_config();
    let boot_now_ms = node.local.monotonic_ms();
    let (live_boots, contenders) = {
        let boots = node.local.boots();
        let live: Vec<(NodeId, Option<u64>)> =
            membership.nodes().map(|(id, _)| (*id, boots.live_boot(*id, boot_now_ms))).collect();
        (live, boots.recent_contenders(boot_now_ms))
    };
    let clock = node.clock_view();
    let durable_marks = node.state.read().kv.durable().clone();
    let mut members = Vec::new();
    for (id, member) in membership.nodes() {
        let settings = config.node(*id);
        let probe = node.probe(*id);
        let matched_index = if *id == node.node_id {
            metrics.last_log_index
        } else if let Some(matched) = replication.get(id) {
            matched.as_ref().map(|log_id| log_id.index())
        } else {
            probe.info.as_ref().map(|info| info.last_log_index)
        };
        let reachable = node.is_reachable(*id);
        members.push(MemberStatus {
            id: *id,
            client_url: member.client_url.clone(),
            peer_addr: member.peer_addr.clone(),
            fingerprint: member.fingerprint.clone(),
            voter: voters.contains(id),
            role: settings.role,
            priority: settings.priority,
            leader: metrics.current_leader == Some(*id),
            reachable,
            matched_index,
            lag: matched_index.map(|matched| commit_index.saturating_sub(matched)),
            last_error: if reachable { None } else { probe.last_error },
            boot: if *id == node.node_id {
                Some(boot_hex(node.local.boot))
            } else {
                live_boots.iter().find(|(member, _)| member == id).and_then(|(_, boot)| boot.map(boot_hex))
            },
            clock_skew_ms: clock.skews.get(id).map(|(skew, _)| *skew),
            clock_uncertainty_ms: clock.skews.get(id).map(|(_, uncertainty)| *uncertainty),
            durable_mark: durable_marks
                .get(id)
                .filter(|mark| mark.incarnation == member.incarnation)
                .map(|mark| mark.index),
        });
    }
    let mut warnings = Vec::new();
    if voters.len().is_multiple_of(2) && !voters.is_empty() {
        warnings.push(format!(
            "the cluster has {} voters; an even number tolerates no more failures than one voter fewer. Add or \
             remove a voter (or use a witness)",
            voters.len()
        ));
    }
    if let Some((log_end, mark)) = node.rewound() {
        warnings.push(format!(
            "this node's log ends at {log_end}, below the {mark} the cluster recorded it as holding durably: its \
             storage went back in time (a restored backup or reverted VM snapshot?); it neither votes nor campaigns \
             until it has caught up"
        ));
    }
    if node.maintenance() {
        warnings.push("maintenance mode is on: no automatic failover or failback (switchover still works)".into());
    }
    for contender in &contenders {
        let ago_s = boot_now_ms.saturating_sub(contender.last_refused_ms) / 1000;
        warnings.push(if contender.proven {
            format!(
                "node {}: a second process (boot {}) claims to be node {} while boot {} is alive (refused {ago_s} s \
                 ago): a copy of its data dir runs elsewhere; stop it",
                contender.member,
                boot_hex(contender.boot),
                contender.member,
                boot_hex(contender.live_boot)
            )
        } else {
            format!(
                "node {}: a new process (boot {}) is refused while boot {} may still be alive (refused {ago_s} s ago); \
                 after a restart this clears within seconds",
                contender.member,
                boot_hex(contender.boot),
                boot_hex(contender.live_boot)
            )
        });
    }
    for (id, (skew_ms, uncertainty_ms)) in &clock.skews {
        if haven_core::clock::skew_exceeds_bound(*skew_ms, *uncertainty_ms) {
            warnings.push(clock_skew_warning(*id, *skew_ms, *uncertainty_ms));
        }
    }
    for member in &members {
        if !member.reachable {
            warnings.push(format!("node {} is unreachable from node {}", member.id, node.node_id));
        }
    }
    let leader_url = metrics.current_leader.and_then(|id| membership.get_node(&id)).map(|node| node.client_url.clone());
    let (gate, failback) = {
        let ha = node.ha.lock().unwrap_or_else(|e| e.into_inner());
        (ha.gate.clone(), ha.last_decision.clone())
    };
    let candidacy_withheld = match gate {
        haven_core::ha::gating::Gate::Allowed => None,
        haven_core::ha::gating::Gate::Withheld { reason } => Some(reason),
    };
    // Detached, or about to be (a teardown naming it applied here).
    let detached = node.detachment();
    let core_stopped = node.core_stopped();
    // A detached node follows no leader, whatever its last vote says; a node whose core
    // stopped follows nobody any more.
    let leader = metrics.current_leader.filter(|_| detached.is_none() && core_stopped.is_none());
    if let Some(reason) = &core_stopped {
        warnings.insert(0, format!("this node's Raft core stopped and the node is exiting: {reason}"));
        for member in members.iter_mut() {
            member.leader = false;
        }
    }
    let diverged = node.diverged();
    if let Some(reason) = &diverged {
        warnings.insert(0, format!("this node's state has diverged and it serves no reads: {reason}"));
    }
    let differing = node.differing_peers();
    if !differing.is_empty() {
        warnings.push(format!(
            "the state of node(s) {differing:?} differs from this node's and the others' at the same log index: they \
             have diverged (docs/architecture.md, \"Integrity\")"
        ));
    }
    let pending_restart = node.pending_restart();
    if let Some(detached) = &detached {
        warnings.push(format!(
            "this node was detached by teardown generation {}: it serves no cluster; its data is read-only. Start it \
             standalone (`haven recover --standalone`) or wipe it and join as a new member",
            detached.generation
        ));
    }
    if let Some(pending) = &pending_restart {
        warnings.push(format!("pending restart: {pending}"));
    }
    let mut ha = ha_status(node, &members, leader_has_quorum, candidacy_withheld.clone());
    if detached.is_some() {
        ha.reasons.insert(0, "detached by a teardown".into());
    }
    if core_stopped.is_some() {
        ha.reasons.insert(0, "this node's Raft core stopped".into());
    }
    if diverged.is_some() {
        ha.reasons.insert(0, "this node's state has diverged".into());
    }
    // One short read of the replicated state for both fields, so they come from the same
    // applied entry and no guard lives on in the struct literal's temporaries while the
    // calls below read the state again.
    let (revision, config_version) = {
        let state = node.state.read();
        (state.kv.revision(), state.kv.admin().ha_config.version)
    };
    Status {
        cluster_id: node.cluster_id(),
        node_id: node.node_id,
        boot: boot_hex(node.local.boot),
        view_of: node.node_id,
        state: format!("{:?}", metrics.state).to_lowercase(),
        leader,
        leader_url: leader_url.filter(|_| leader.is_some()),
        term: metrics.current_term,
        commit_index,
        applied_index: metrics.last_applied.as_ref().map_or(0, |log_id| log_id.index()),
        last_log_index: metrics.last_log_index.unwrap_or(0),
        revision,
        voters: voters.len(),
        leader_has_quorum,
        member: membership.get_node(&node.node_id).is_some(),
        maintenance: node.maintenance(),
        joining: node.join_status.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        warnings,
        members,
        ha,
        config_version,
        failovers_last_hour: node.failovers_last_hour(),
        pending_restart,
        detached,
        ping_targets: node.targets.snapshot(std::time::Instant::now()),
        candidacy_withheld,
        failback,
        alerts: node.alerts.recent().into_iter().rev().take(STATUS_ALERTS_MAX).rev().collect(),
        core_stopped,
        diverged,
        storage: node.storage_sizes(),
    }
}

/// What status says (and the alarm, see `crate::ha`) about a member whose clock is off the
/// cluster's time by more than `CLOCK_SKEW_MAX_MS`.
pub fn clock_skew_warning(id: NodeId, skew_ms: i64, uncertainty_ms: u64) -> String {
    let direction = if skew_ms > 0 { "ahead of" } else { "behind" };
    format!(
        "node {id}'s clock is {} ms (± {uncertainty_ms}) {direction} the cluster's time, beyond the {} ms bound: fix its \
         time synchronisation (NTP). Token times follow the cluster's median clock meanwhile",
        skew_ms.unsigned_abs(),
        haven_core::clock::CLOCK_SKEW_MAX_MS
    )
}

/// Alerts shown in status: the latest few say whether the hook and the mail work; the
/// node's log has them all.
pub const STATUS_ALERTS_MAX: usize = 8;

/// The HA status from this node's view. A follower cannot see the leader's quorum; it
/// takes a leader it hears from as having one (a leader without quorum stops being heard
/// as soon as it steps down or is partitioned away, and then this view says so).
fn ha_status(
    node: &Node,
    members: &[MemberStatus],
    leader_has_quorum: bool,
    candidacy_withheld: Option<String>,
) -> haven_core::ha::status::HaStatus {
    use haven_core::ha::status::HaView;
    use haven_core::ha::status::MemberView;
    use haven_core::ha::status::LAG_THRESHOLD_ENTRIES_DEFAULT;
    use haven_core::ha::MemberKind;
    let leader = members.iter().find(|member| member.leader);
    let quorum = match leader {
        Some(leader) if leader.id == node.node_id => leader_has_quorum,
        Some(leader) => leader.reachable,
        None => false,
    };
    let view = HaView {
        node_id: node.node_id,
        maintenance: node.maintenance(),
        members: members
            .iter()
            .map(|member| MemberView {
                id: member.id,
                role: member.role,
                kind: if member.voter { MemberKind::Voter } else { MemberKind::Learner },
                reachable: member.reachable,
                lag_entries: member.lag,
                is_leader: member.leader,
                may_be_primary: member.role == haven_core::ha::NodeRole::Data && member.priority > 0,
            })
            .collect(),
        leader_has_quorum: quorum,
        lag_threshold_entries: LAG_THRESHOLD_ENTRIES_DEFAULT,
        candidacy_withheld,
    };
    haven_core::ha::status::compute(&view)
}
