//! HA control: the IO shell around the pure decisions of `haven_core::ha`.
//!
//! ```text
//!   every HA_TICK (background loop)
//!     observe   leader changes (who lost the primary role, when), member health
//!     gate      ping targets ──▶ may_campaign ──┐
//!     maintain  replicated flag ────────────────┴──▶ openraft elections on/off
//!     lead      (leader with quorum only)
//!               new term ──▶ audit "failover" / "leader.elected"
//!               failback::decide ──▶ transfer leadership (witness hand-off, failback)
//!     detach    a teardown that names this node ──▶ detached: no elections, no peers
//! ```
//!
//! Nothing here can make a second primary: leadership only moves through Raft's own
//! transfer (the target must win an election), elections are only ever *withheld*, and a
//! witness or priority-0 leader refuses client writes so it never acts as the primary.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use crate::alerts::AlertEvent;
use haven_core::admin::AuditChange;
use haven_core::admin::AuditEntry;
use haven_core::ha::config::HaConfig;
use haven_core::ha::config::NodeSettings;
use haven_core::ha::failback;
use haven_core::ha::failback::Candidate;
use haven_core::ha::failback::Decision;
use haven_core::ha::failback::FailoverCounter;
use haven_core::ha::gating::target_window_ms;
use haven_core::ha::gating::Gate;
use haven_core::ha::MemberKind;
use haven_core::ha::NodeRole;
use haven_core::kv::Command;
use haven_core::kv::Request;
use haven_store::NodeId;
use openraft::ServerState;
use serde::Deserialize;
use serde::Serialize;

use crate::Node;

/// How often the HA decisions run. A tenth of a second keeps a witness hand-off and the
/// reaction to ping targets prompt, and costs only reads of in-memory state.
pub const HA_TICK: Duration = Duration::from_millis(100);

/// After asking openraft to transfer leadership, wait this long before asking again: a
/// transfer needs one replication round and one election.
pub const TRANSFER_RETRY: Duration = Duration::from_secs(2);

/// A member within this many entries of the leader's last entry counts as caught up for
/// failback and hand-off (one append batch: it will hold the rest after one more round).
pub const HANDOFF_LAG_ENTRIES_MAX: u64 = haven_core::limits::APPEND_ENTRIES_MAX;

/// A new primary hears from its members within a few heartbeats; alerting "offline" before
/// that would page someone at every election.
pub const OFFLINE_ALERT_GRACE_MS: u64 = 5_000;

/// Window over which failovers are counted for status (seed 002 users think per hour).
pub const FAILOVER_WINDOW_MS: u64 = 3_600_000;

/// How long a node named by a teardown keeps helping the remaining node commit the
/// membership change that removes it before it detaches anyway.
pub const TEARDOWN_GRACE: Duration = Duration::from_secs(10);

/// The file that marks a node detached by a teardown (it survives restarts).
pub const DETACHED_FILE: &str = "detached.json";

/// The file recording the detection timing of the last applied HA configuration, read at
/// start: openraft's timeouts are fixed when a node starts.
pub const TIMING_FILE: &str = "ha-timing.json";

/// What a detached node records about its detachment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Detached {
    pub generation: u64,
    pub cluster_id: Option<String>,
    /// The node that continues the cluster as a standalone server.
    pub kept: Option<NodeId>,
}

/// The timing of the applied HA configuration, as recorded for the next start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedTiming {
    pub version: u64,
    pub ping_interval_ms: u64,
    pub failed_pings: u64,
}

/// What the HA loop remembers between ticks (this node's own observations).
pub struct HaRuntime {
    /// Zero of the core's monotonic milliseconds.
    epoch: Instant,
    healthy_since_ms: BTreeMap<NodeId, u64>,
    last_lost_primary_ms: BTreeMap<NodeId, u64>,
    observed_leader: Option<(NodeId, u64)>,
    /// The leader before the current one, as this node saw it.
    previous_leader: Option<NodeId>,
    leader_since_ms: u64,
    /// The term whose start this node (as its leader) has recorded in the audit log.
    recorded_term: u64,
    last_transfer: Option<Instant>,
    /// When this node first applied a teardown that detaches it.
    teardown_seen: Option<Instant>,
    /// Members this node, as primary, has alerted about as offline / lagging / with a
    /// skewed clock.
    offline_alerted: BTreeSet<NodeId>,
    lag_alerted: BTreeSet<NodeId>,
    clock_alerted: BTreeSet<NodeId>,
    /// The last failback / hand-off decision, for status.
    pub last_decision: Option<String>,
    pub gate: Gate,
    /// Leader changes this node has seen (failovers are counted from the audit log).
    pub leader_changes: FailoverCounter,
    /// The last two distinct leaders this node saw that may be the primary (data, priority
    /// above 0), older first: when this node leads after a witness bridged a failover, the
    /// lost primary is the one before itself.
    primaries: (Option<NodeId>, Option<NodeId>),
}

impl HaRuntime {
    pub fn new() -> HaRuntime {
        HaRuntime {
            epoch: Instant::now(),
            healthy_since_ms: BTreeMap::new(),
            last_lost_primary_ms: BTreeMap::new(),
            observed_leader: None,
            previous_leader: None,
            leader_since_ms: 0,
            recorded_term: 0,
            last_transfer: None,
            teardown_seen: None,
            offline_alerted: BTreeSet::new(),
            lag_alerted: BTreeSet::new(),
            clock_alerted: BTreeSet::new(),
            last_decision: None,
            gate: Gate::Allowed,
            leader_changes: FailoverCounter::new(FAILOVER_WINDOW_MS),
            primaries: (None, None),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

impl Default for HaRuntime {
    fn default() -> HaRuntime {
        HaRuntime::new()
    }
}

impl Node {
    /// The applied cluster-wide HA configuration.
    pub fn ha_config(&self) -> HaConfig {
        self.state.read().kv.admin().ha_config.value.clone()
    }

    /// A member's HA settings (role, priority, ping targets) from the applied configuration.
    pub fn settings_of(&self, node_id: NodeId) -> NodeSettings {
        self.state.read().kv.admin().ha_config.value.node(node_id)
    }

    /// Can this node be the primary (a data node with priority above 0)?
    pub fn may_be_primary(&self) -> bool {
        let settings = self.settings_of(self.node_id);
        settings.role == NodeRole::Data && settings.priority > 0
    }

    /// Why this node, leading, must not acknowledge a client write: a witness or a
    /// priority-0 node leads only until a data node has caught up and taken over.
    pub fn witness_refusal(&self) -> Option<String> {
        if self.may_be_primary() {
            return None;
        }
        let settings = self.settings_of(self.node_id);
        let what = match settings.role {
            NodeRole::Witness => "a witness",
            NodeRole::Data => "a priority-0 node",
        };
        let catching_up = self.ha.lock().unwrap_or_else(|e| e.into_inner()).last_decision.clone();
        Some(format!(
            "node {} is {what}: it leads only until a data node has caught up and takes over, and acknowledges no \
             client writes meanwhile ({}); retry shortly",
            self.node_id,
            catching_up.unwrap_or_else(|| "handing over".into())
        ))
    }

    /// Elections on or off, by the pure rule `haven_core::ha::elections::may_campaign`:
    /// off until the first probe round is done, off while maintenance mode is on and a
    /// leader is known (unless overridden locally to recover a leaderless cluster), off
    /// while the ping targets withhold candidacy, and for good once detached.
    pub fn apply_elections(&self) {
        use haven_core::ha::elections;
        let maintenance = self.maintenance();
        if !maintenance {
            self.maintenance_override.store(false, Ordering::Relaxed);
        }
        let gate_withheld = match &self.ha.lock().unwrap_or_else(|e| e.into_inner()).gate {
            haven_core::ha::gating::Gate::Allowed => None,
            haven_core::ha::gating::Gate::Withheld { reason } => Some(reason.clone()),
        };
        let facts = elections::ElectionFacts {
            started_checks_done: self.started_checks_done.load(Ordering::Relaxed),
            detached: self.detached().is_some() || self.expelled.borrow().is_some(),
            gate_withheld,
            maintenance,
            maintenance_override: self.maintenance_override.load(Ordering::Relaxed),
            leader_known: self.leader().is_some(),
            rewound: self.rewound(),
        };
        let decision = elections::may_campaign(&facts);
        let enable = decision.is_allowed();
        if self.elections_enabled.swap(enable, Ordering::Relaxed) != enable {
            self.raft.runtime_config().elect(enable);
            match decision {
                elections::Campaign::Allowed => tracing::info!(maintenance, "elections on"),
                elections::Campaign::Withheld(reason) => tracing::info!(%reason, "elections off"),
            }
        }
    }

    /// This node's detachment by a teardown, if any.
    pub fn detached(&self) -> Option<Detached> {
        self.detached.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Marks this node detached, durably first, then in memory.
    pub fn mark_detached(&self, detached: Detached) {
        if self.detached().is_some() {
            return;
        }
        if let Err(error) = write_json(&self.config.data_dir.join(DETACHED_FILE), &detached) {
            tracing::error!(%error, "cannot record the detachment; it holds until this process stops");
        }
        tracing::warn!(
            generation = detached.generation,
            kept = ?detached.kept,
            "this node was detached by a teardown: it no longer serves the cluster; its data is kept read-only"
        );
        *self.detached.lock().unwrap_or_else(|e| e.into_inner()) = Some(detached);
        self.apply_elections();
    }

    /// Failovers (unplanned leader changes recorded in the audit log) in the last hour, by
    /// the cluster's time (which the leaders that recorded them stamped).
    pub fn failovers_last_hour(&self) -> usize {
        let now = self.cluster_now_ms();
        let state = self.state.read();
        state
            .kv
            .admin()
            .audit
            .since(0, usize::MAX)
            .iter()
            .filter(|record| record.action == "failover" && now.saturating_sub(record.at_ms) <= FAILOVER_WINDOW_MS)
            .count()
    }

    /// The detection timing the applied configuration asks for, when it differs from the
    /// one this process started with: the node needs a restart (Patroni's "pending restart").
    pub fn pending_restart(&self) -> Option<String> {
        let (version, config) = {
            let state = self.state.read();
            let config = &state.kv.admin().ha_config;
            (config.version, config.value.clone())
        };
        // The same rule that made the apply name the nodes to restart.
        let reasons = haven_core::ha::config::restart_reasons(&self.config.timing, &config);
        (version > 0 && !reasons.is_empty()).then(|| {
            format!(
                "configuration version {version}: {}; this node keeps its old timing until it restarts (`haven \
                 restart --rolling --pending-only`)",
                reasons.join("; ")
            )
        })
    }

    /// One round of the HA loop; see the module picture.
    pub async fn ha_tick(&self) {
        let metrics = self.metrics();
        let config = self.ha_config();
        let (version, teardown) = {
            let state = self.state.read();
            let admin = state.kv.admin();
            (admin.ha_config.version, admin.is_detached(self.node_id, &self.incarnation))
        };
        if let Some(generation) = teardown {
            // Detached once the membership without this node has reached it (it must help
            // commit that change first), once a member says that change is committed
            // (`Node::on_expelled`), or after a grace period. Client writes are refused
            // from the start (`Node::detached_write_refusal`).
            let still_member = metrics.membership_config.get_node(&self.node_id).is_some();
            let first_seen =
                *self.ha.lock().unwrap_or_else(|e| e.into_inner()).teardown_seen.get_or_insert_with(Instant::now);
            if !still_member || first_seen.elapsed() >= TEARDOWN_GRACE {
                let kept = metrics.current_leader.filter(|leader| *leader != self.node_id);
                self.mark_detached(Detached { generation, cluster_id: self.cluster_id(), kept });
            }
        }
        self.record_timing(version, &config);
        let targets = config.node(self.node_id).ping_targets;
        if self.targets.targets() != targets {
            self.targets.set_targets(targets.clone());
        }
        let window_ms = target_window_ms(&config.timing());
        let (now_ms, decision_input) = {
            let mut ha = self.ha.lock().unwrap_or_else(|e| e.into_inner());
            let now_ms = ha.now_ms();
            ha.gate =
                if targets.is_empty() { Gate::Allowed } else { self.targets.gate(ha.epoch, Instant::now(), window_ms) };
            let current = metrics.current_leader.map(|leader| (leader, metrics.current_term));
            if current != ha.observed_leader {
                if let Some((old, _)) = ha.observed_leader {
                    if current.map(|(leader, _)| leader) != Some(old) {
                        ha.last_lost_primary_ms.insert(old, now_ms);
                        ha.previous_leader = Some(old);
                        ha.leader_changes.record(now_ms);
                        self.prometheus.leader_changed();
                    }
                }
                if let Some((leader, _)) = current {
                    let settings = config.node(leader);
                    if settings.role == NodeRole::Data && settings.priority > 0 && ha.primaries.1 != Some(leader) {
                        // The primary before any witness that may bridge the next failover.
                        ha.primaries = (ha.primaries.1, Some(leader));
                    }
                }
                ha.observed_leader = current;
                ha.leader_since_ms = now_ms;
            }
            if metrics.state != ServerState::Leader {
                // Only the leader decides failback; a follower shows no stale decision.
                ha.last_decision = None;
            }
            for (id, _) in metrics.membership_config.nodes() {
                if self.is_reachable(*id) {
                    ha.healthy_since_ms.entry(*id).or_insert(now_ms);
                } else {
                    ha.healthy_since_ms.remove(id);
                }
            }
            let last_primary = [ha.primaries.1, ha.primaries.0].into_iter().flatten().find(|id| *id != self.node_id);
            (now_ms, (ha.leader_since_ms, ha.recorded_term, ha.previous_leader, last_primary, ha.last_transfer))
        };
        self.apply_elections();
        if metrics.state != ServerState::Leader || !self.leader_has_quorum(&metrics) || self.detached().is_some() {
            return;
        }
        let (leader_since_ms, recorded_term, previous_leader, last_primary, last_transfer) = decision_input;
        if recorded_term != metrics.current_term {
            self.record_leadership(metrics.current_term, previous_leader, last_primary, &config).await;
        }
        self.audit_finished_recovery().await;
        self.alert_clock_skews();
        let candidates = self.candidates(&config, &metrics);
        if now_ms.saturating_sub(leader_since_ms) >= OFFLINE_ALERT_GRACE_MS {
            self.alert_member_changes(&candidates);
        }
        let situation = failback::Situation {
            members: &candidates,
            leader: Some(self.node_id),
            leader_since_ms,
            maintenance: self.maintenance(),
            now_ms,
        };
        let decision = failback::decide(&situation, &config.failback_policy());
        let reason = match &decision {
            Decision::Stay(reason) | Decision::TransferTo(_, reason) => reason.clone(),
        };
        self.ha.lock().unwrap_or_else(|e| e.into_inner()).last_decision = Some(reason.clone());
        let Decision::TransferTo(target, reason) = decision else {
            return;
        };
        if last_transfer.is_some_and(|at| at.elapsed() < TRANSFER_RETRY) {
            return;
        }
        self.ha.lock().unwrap_or_else(|e| e.into_inner()).last_transfer = Some(Instant::now());
        let action = if self.may_be_primary() { "failback" } else { "handoff" };
        tracing::info!(target, %reason, action, "moving the primary role");
        let entry = AuditEntry::new(action, reason).with_change(AuditChange::new(
            "primary",
            Some(self.node_id.to_string()),
            Some(target.to_string()),
        ));
        self.record_audit(entry).await;
        if let Err(error) = self.raft.trigger().transfer_leader(target).await {
            tracing::warn!(%error, target, "leadership transfer failed");
        }
    }

    /// How hook scripts and alert mails name member `id` (`haven_core::ha::hook_host`).
    pub fn hook_host(&self, id: NodeId) -> String {
        let hosts: Vec<(NodeId, String)> =
            self.membership().nodes().map(|(member, node)| (*member, host_of(&node.client_url))).collect();
        haven_core::ha::hook_host(id, &hosts)
    }

    /// Fires an alert (seed 002's hook script and e-mail) under the applied configuration.
    pub fn alert(&self, event: AlertEvent) {
        tracing::info!(event = event.name(), args = ?event.args(), "HA alert");
        self.alerts.fire(&self.ha_config(), event);
    }

    /// As the primary: a member going offline or coming back (seed 002's StandbyOffline,
    /// and the clear it lacks), and a member falling behind or catching up (RaiseAlarm /
    /// ClearAlarm), each once per transition.
    fn alert_member_changes(&self, candidates: &[Candidate]) {
        let host = |id: NodeId| self.hook_host(id);
        let me = host(self.node_id);
        let mut events = Vec::new();
        {
            let mut ha = self.ha.lock().unwrap_or_else(|e| e.into_inner());
            for member in candidates.iter().filter(|member| member.id != self.node_id) {
                let offline = member.healthy_since_ms.is_none();
                if offline && ha.offline_alerted.insert(member.id) {
                    events.push(AlertEvent::StandbyOffline { standby: host(member.id), active: me.clone() });
                } else if !offline && ha.offline_alerted.remove(&member.id) {
                    events.push(AlertEvent::StandbyOnline { standby: host(member.id), active: me.clone() });
                }
                let lagging = !offline && !member.caught_up;
                if lagging && ha.lag_alerted.insert(member.id) {
                    events.push(AlertEvent::RaiseAlarm {
                        condition: format!("replication to node {} lagging", member.id),
                        error: format!(
                            "node {} is more than {HANDOFF_LAG_ENTRIES_MAX} entries behind the primary",
                            member.id
                        ),
                    });
                } else if !lagging && !offline && ha.lag_alerted.remove(&member.id) {
                    events
                        .push(AlertEvent::ClearAlarm { text: format!("replication to node {} caught up", member.id) });
                }
            }
        }
        for event in events {
            self.alert(event);
        }
    }

    /// As the primary: a member's clock (this node's included) going beyond the skew bound
    /// or coming back (RaiseAlarm / ClearAlarm), each once per transition. Readings are the
    /// primary's own probes, so one node raises the alarm, however many see the skew.
    fn alert_clock_skews(&self) {
        let clock = self.clock_view();
        let mut events = Vec::new();
        {
            let mut ha = self.ha.lock().unwrap_or_else(|e| e.into_inner());
            for (id, (skew_ms, uncertainty_ms)) in &clock.skews {
                let beyond = haven_core::clock::skew_exceeds_bound(*skew_ms, *uncertainty_ms);
                if beyond && ha.clock_alerted.insert(*id) {
                    events.push(AlertEvent::RaiseAlarm {
                        condition: format!("clock of node {id} skewed"),
                        error: crate::status::clock_skew_warning(*id, *skew_ms, *uncertainty_ms),
                    });
                } else if !beyond && ha.clock_alerted.remove(id) {
                    events.push(AlertEvent::ClearAlarm { text: format!("clock of node {id} back within the bound") });
                }
            }
            // Members without a fresh reading (gone, unreachable) keep their alarm until a
            // reading clears it.
        }
        for event in events {
            self.alert(event);
        }
    }

    /// What failback needs to know about each member.
    fn candidates(
        &self,
        config: &HaConfig,
        metrics: &openraft::RaftMetrics<haven_store::TypeConfig>,
    ) -> Vec<Candidate> {
        let last_log_index = metrics.last_log_index.unwrap_or(0);
        let replication = metrics.replication.clone().unwrap_or_default();
        let voters: Vec<NodeId> = metrics.membership_config.voter_ids().collect();
        let ha = self.ha.lock().unwrap_or_else(|e| e.into_inner());
        metrics
            .membership_config
            .nodes()
            .map(|(id, _)| {
                let settings = config.node(*id);
                let matched = if *id == self.node_id {
                    Some(last_log_index)
                } else {
                    replication.get(id).cloned().flatten().map(|log_id| log_id.index())
                };
                Candidate {
                    id: *id,
                    role: settings.role,
                    kind: if voters.contains(id) { MemberKind::Voter } else { MemberKind::Learner },
                    priority: settings.priority,
                    healthy_since_ms: ha.healthy_since_ms.get(id).copied(),
                    caught_up: matched
                        .is_some_and(|matched| last_log_index.saturating_sub(matched) <= HANDOFF_LAG_ENTRIES_MAX),
                    last_lost_primary_ms: ha.last_lost_primary_ms.get(id).copied(),
                }
            })
            .collect()
    }

    /// As the new leader of `term`: records how leadership came here and fires the alert,
    /// as `haven_core::ha::leadership::record` decides (a witness is never recorded as the
    /// primary). A planned move (switchover, failback, hand-off) was recorded by the node
    /// that made it, naming this node.
    async fn record_leadership(
        &self,
        term: u64,
        previous_leader: Option<NodeId>,
        last_primary: Option<NodeId>,
        config: &HaConfig,
    ) {
        use haven_core::ha::leadership;
        let planned = {
            let state = self.state.read();
            state.kv.admin().audit.last().and_then(|record| {
                // A switchover to "the most caught-up voter" names no target.
                let names_me = matches!(record.action.as_str(), "switchover" | "failback" | "handoff")
                    && record.changes.iter().any(|change| {
                        change.what == "primary"
                            && change.new.as_deref().is_none_or(|new| new == self.node_id.to_string().as_str())
                    });
                names_me.then(|| record.action.clone())
            })
        };
        let may_be_primary = |id: NodeId| {
            let settings = config.node(id);
            settings.role == NodeRole::Data && settings.priority > 0
        };
        let new_term = leadership::NewTerm {
            me: self.node_id,
            may_be_primary: may_be_primary(self.node_id),
            term,
            previous_leader: previous_leader.map(|id| (id, may_be_primary(id))),
            last_primary,
            planned,
        };
        let (entry, alert) = leadership::record(&new_term);
        let host = |id: NodeId| self.hook_host(id);
        let me = host(self.node_id);
        match alert {
            Some(leadership::LeaderAlert::ManualSwitch { standby }) => {
                self.alert(AlertEvent::ManualSwitch { active: me, standby: host(standby) })
            }
            Some(leadership::LeaderAlert::Failover { standby }) => {
                self.alert(AlertEvent::Failover { active: me, standby: host(standby) })
            }
            None => {}
        }
        if self.record_audit(entry).await {
            self.ha.lock().unwrap_or_else(|e| e.into_inner()).recorded_term = term;
        }
    }

    /// Appends an automatic action to the audit log (as the leader); true once committed.
    pub async fn record_audit(&self, entry: AuditEntry) -> bool {
        let mut request = Request::new(None, Command::RecordAudit { entry });
        request.received_by = self.node_id;
        match self.propose_as_leader(request).await {
            Ok(_) => true,
            Err(error) => {
                tracing::debug!(%error, "could not record an audit entry yet");
                false
            }
        }
    }

    /// Records the applied configuration's timing for the next start now (before a
    /// restart or a stop, so a configuration applied since the last HA tick is not missed).
    pub fn record_applied_timing(&self) {
        let (version, config) = {
            let state = self.state.read();
            let config = &state.kv.admin().ha_config;
            (config.version, config.value.clone())
        };
        self.record_timing(version, &config);
    }

    /// Records the timing of a newly applied configuration for the next start.
    fn record_timing(&self, version: u64, config: &HaConfig) {
        if version == 0 {
            return;
        }
        let path = self.config.data_dir.join(TIMING_FILE);
        let timing = config.timing();
        let recorded =
            RecordedTiming { version, ping_interval_ms: timing.ping_interval_ms, failed_pings: timing.failed_pings };
        if read_json::<RecordedTiming>(&path).as_ref() == Some(&recorded) {
            return;
        }
        if let Err(error) = write_json(&path, &recorded) {
            tracing::warn!(%error, "cannot record the configured timing for the next start");
        }
    }
}

/// The host part of a URL or `host:port` address (what seed 002's hook scripts call a
/// host: an IP address or a name).
pub fn host_of(address: &str) -> String {
    let rest = address.split("://").nth(1).unwrap_or(address);
    let authority = rest.split('/').next().unwrap_or(rest);
    match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6).to_string(),
        None => authority.rsplit_once(':').map_or(authority, |(host, _)| host).to_string(),
    }
}

/// The detection timing recorded by the last applied configuration, if any.
pub fn recorded_timing(data_dir: &Path) -> Option<RecordedTiming> {
    read_json(&data_dir.join(TIMING_FILE))
}

/// The detachment recorded in `data_dir`, if any.
pub fn recorded_detachment(data_dir: &Path) -> Option<Detached> {
    read_json(&data_dir.join(DETACHED_FILE))
}

/// A small JSON record in the data dir, if present and readable (unreadable: logged, `None`).
pub(crate) fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Option<T> {
    let bytes = std::fs::read(path).ok()?;
    match serde_json::from_slice(&bytes) {
        Ok(value) => Some(value),
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "ignoring an unreadable file");
            None
        }
    }
}

/// Writes a small JSON record atomically (tmp, fsync, rename).
pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    crate::files::write_atomically(path, &bytes)
}
