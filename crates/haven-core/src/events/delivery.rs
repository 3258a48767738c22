//! Who delivers each event, when an owner is replaced, and the per-kind rate limit of
//! mail and webhook.
//!
//! ```text
//!   initial_owner(kind, observed_by, leader) ── the node the seed names: the new primary
//!        │                                      for Failover, the primary for
//!        │                                      StandbyOffline, the seeing node for alarms
//!        ▼
//!   owner: due_for(log, me, now) ──▶ Due { seq, channel, attempt, Deliver{suppressed_before}
//!                                                                | Suppress (rate limit) }
//!   primary: OwnerWatch::observe(log, now) each tick, then
//!            reassignments(log, members, me, hook timeout, now) ──▶ Reassign { seq, from, to }
//!              owner not a member or not healthy ─────────▶ at once
//!              owner healthy but silent past the bound ───▶ after the bound
//!              owner healthy and reporting ───────────────▶ never (one deliverer)
//! ```
//!
//! At least once, never zero: an event stays pending until a delivery record finishes
//! it, and a pending event whose owner is gone or silent gets a new owner; the new owner
//! is a healthy member, the primary first. Never two in a healthy cluster: an owner that
//! is healthy and records progress within the bound is never replaced. Across a
//! reassignment both the slow owner and the new one may deliver: scripts get
//! `HAVEN_EVENT_SEQ` to tell a repeat from a new event.
//!
//! The rate limit is a function of the log, not of a node's memory: the decision for an
//! event depends only on the events before it, so every owner (and a replacement after a
//! failover) decides the same, and the suppressed count travels with the log.

use std::collections::BTreeMap;

use crate::events::log::Channel;
use crate::events::log::ChannelState;
use crate::events::log::EventLog;
use crate::events::log::EventRecord;
use crate::events::EventKind;

/// Attempts per channel before an event's delivery on it is given up (and shown as
/// failed in the log). A relay down for the whole back-off below (about two minutes) is
/// an outage the operator learns of by other means; retrying forever would pile up work.
pub const DELIVERY_ATTEMPTS_MAX: u32 = 5;

/// Wait before the first retry of a failed delivery; doubled after each further failure
/// (5, 10, 20, 40 s), up to [`DELIVERY_RETRY_MAX_MS`]. Long enough for a relay to restart.
pub const DELIVERY_RETRY_BASE_MS: u64 = 5_000;
pub const DELIVERY_RETRY_MAX_MS: u64 = 60_000;

/// Longest a mail delivery may take: one whole SMTP exchange (`haven_server::alerts`
/// times each send out after this).
pub const MAIL_SEND_TIMEOUT_MS: u64 = 60_000;

/// Longest a webhook POST may take, connection and answer together. A webhook receiver
/// answers in milliseconds; 30 s rides out a loaded one.
pub const WEBHOOK_TIMEOUT_MS: u64 = 30_000;

/// Beyond a channel's own timeout and the longest retry wait, how long an owner with
/// pending deliveries may record nothing before it is replaced: the time to commit its
/// record through Raft and a hook queued behind another (hooks run one at a time).
pub const DELIVERY_SLACK_MS: u64 = 30_000;

/// The rate limit of mail and webhook, per event kind: at most
/// [`RATE_LIMIT_SENDS_MAX`] sends in [`RATE_LIMIT_WINDOW_MS`]. A link that flaps every
/// few seconds makes a StandbyOffline/StandbyOnline pair each time; six mails of a kind in
/// ten minutes tell the operator it flaps, thousands would bury the news (and the relay).
pub const RATE_LIMIT_WINDOW_MS: u64 = 600_000;
pub const RATE_LIMIT_SENDS_MAX: usize = 6;

/// The node that delivers an event when it is recorded: the node seed 002 runs the
/// script on (the new primary for Failover and ManualSwitch, the primary for
/// StandbyOffline), the node that saw an alarm, the holder for its role's start, stop and
/// failure; the leader for everything the cluster decided.
pub fn initial_owner(kind: &EventKind, observed_by: u64, leader: Option<u64>) -> u64 {
    let leader = leader.unwrap_or(observed_by);
    match kind {
        EventKind::RaiseAlarm { .. } | EventKind::ClearAlarm { .. } => observed_by,
        EventKind::RoleStarted { node, .. }
        | EventKind::RoleStopped { node, .. }
        | EventKind::RoleFailed { node, .. } => *node,
        EventKind::Failover { .. }
        | EventKind::StandbyOffline { .. }
        | EventKind::StandbyOnline { .. }
        | EventKind::ManualSwitch { .. }
        | EventKind::RoleMoved { .. }
        | EventKind::MemberJoined { .. }
        | EventKind::MemberLeft { .. }
        | EventKind::ConfigApplied { .. }
        | EventKind::NoQuorum { .. }
        | EventKind::QuorumRestored { .. } => leader,
    }
}

/// How long to wait after `failures` failed attempts before the next one.
pub fn retry_delay_ms(failures: u32) -> u64 {
    if failures == 0 {
        return 0;
    }
    let doublings = (failures - 1).min(16);
    DELIVERY_RETRY_BASE_MS.saturating_mul(1 << doublings).min(DELIVERY_RETRY_MAX_MS)
}

/// How long an owner with pending work on `channel` may record nothing before the
/// primary replaces it: the channel's own timeout, the longest retry wait and the slack.
pub fn silence_bound_ms(channel: Channel, hook_timeout_ms: u64) -> u64 {
    let run_ms = match channel {
        Channel::Hook => hook_timeout_ms,
        Channel::Mail => MAIL_SEND_TIMEOUT_MS,
        Channel::Webhook => WEBHOOK_TIMEOUT_MS,
    };
    run_ms.saturating_add(DELIVERY_RETRY_MAX_MS).saturating_add(DELIVERY_SLACK_MS)
}

/// Whether to send a rate-limited message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateDecision {
    /// Send it, saying that this many earlier events of its kind were not sent.
    Deliver { suppressed_before: u64 },
    /// Do not send it; record it as suppressed.
    Suppress,
}

/// The rate-limit decision for event `seq` on `channel`: from the events of the same
/// kind before it (an earlier one not suppressed counts as a send, delivered or not, so
/// the decision does not depend on how far other deliveries got). `None` if `seq` is not
/// in the log.
pub fn rate_decision(log: &EventLog, seq: u64, channel: Channel) -> Option<RateDecision> {
    let event = log.get(seq)?;
    if !channel.rate_limited() {
        return Some(RateDecision::Deliver { suppressed_before: 0 });
    }
    let name = event.kind.name();
    let earlier: Vec<&EventRecord> = log
        .records()
        .filter(|other| other.seq < seq && other.kind.name() == name && other.channels.contains(&channel))
        .collect();
    // A clock that went back (another leader's) puts an earlier event in the window.
    let sends_in_window = earlier
        .iter()
        .filter(|other| !other.suppressed(channel) && event.at_ms.saturating_sub(other.at_ms) < RATE_LIMIT_WINDOW_MS)
        .count();
    if sends_in_window >= RATE_LIMIT_SENDS_MAX {
        return Some(RateDecision::Suppress);
    }
    let last_sent = earlier.iter().filter(|other| !other.suppressed(channel)).map(|other| other.seq).max();
    let suppressed_before = earlier
        .iter()
        .filter(|other| other.suppressed(channel) && last_sent.is_none_or(|last| other.seq > last))
        .count() as u64;
    Some(RateDecision::Deliver { suppressed_before })
}

/// The sentence added to a message that follows suppressed ones.
pub fn suppressed_note(kind_name: &str, suppressed_before: u64) -> Option<String> {
    (suppressed_before > 0).then(|| {
        format!(
            "{suppressed_before} earlier {kind_name} event(s) were not sent (at most {RATE_LIMIT_SENDS_MAX} per {} \
             minutes); all are in `haven events`",
            RATE_LIMIT_WINDOW_MS / 60_000
        )
    })
}

/// One delivery the owner should make now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    pub seq: u64,
    pub channel: Channel,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub action: RateDecision,
}

/// What node `me` should deliver at `now_ms` (its own wall clock, like the delivery
/// records' times), oldest first: the pending channels of the events it owns whose retry
/// wait is over. The shell leaves out what it is already delivering.
pub fn due_for(log: &EventLog, me: u64, now_ms: u64) -> Vec<Due> {
    let mut due = Vec::new();
    for event in log.records().filter(|event| event.owner == me) {
        for channel in Channel::ALL {
            let ChannelState::Pending { failures, last_failure_ms } = event.channel_state(channel) else {
                continue;
            };
            let ready_at_ms = last_failure_ms.map_or(0, |at_ms| at_ms.saturating_add(retry_delay_ms(failures)));
            if now_ms < ready_at_ms {
                continue;
            }
            // A retry is never suppressed: the decision was made on its first attempt.
            let action = if failures > 0 {
                RateDecision::Deliver { suppressed_before: 0 }
            } else {
                rate_decision(log, event.seq, channel).unwrap_or(RateDecision::Deliver { suppressed_before: 0 })
            };
            due.push(Due { seq: event.seq, channel, attempt: failures + 1, action });
        }
    }
    due
}

/// What the primary knows about a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberHealth {
    pub id: u64,
    /// Reachable and answering now.
    pub healthy: bool,
}

/// A new owner for an event: the shell proposes `EventLog::reassign(seq, from, to)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reassign {
    pub seq: u64,
    pub from: u64,
    pub to: u64,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Progress {
    /// Delivery records of this owner on this channel, last seen.
    records: usize,
    /// When the primary (by its monotonic clock) last saw that count change, or first saw
    /// the owner with pending work.
    since_ms: u64,
}

/// The primary's watch over owners with pending deliveries, per owner and channel (an
/// owner works through a channel one delivery at a time, so progress on any event of it
/// shows it is alive and working). Kept in the primary's memory on its monotonic clock; a
/// new primary starts watching afresh, so every owner gets a whole bound from the
/// takeover. Bounded by the members times the channels.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnerWatch {
    progress: BTreeMap<(u64, Channel), Progress>,
}

impl OwnerWatch {
    /// Takes in the log at `now_ms` (the primary's monotonic clock).
    pub fn observe(&mut self, log: &EventLog, now_ms: u64) {
        let mut working: BTreeMap<(u64, Channel), usize> = BTreeMap::new();
        for event in log.records() {
            for channel in Channel::ALL {
                if matches!(event.channel_state(channel), ChannelState::Pending { .. }) {
                    working.entry((event.owner, channel)).or_insert(0);
                }
            }
        }
        for event in log.records() {
            for record in &event.deliveries {
                if let Some(count) = working.get_mut(&(record.node, record.channel)) {
                    *count += 1;
                }
            }
        }
        self.progress.retain(|key, _| working.contains_key(key));
        for (key, records) in working {
            let progress = self.progress.entry(key).or_insert(Progress { records, since_ms: now_ms });
            if progress.records != records {
                *progress = Progress { records, since_ms: now_ms };
            }
        }
    }

    /// Which pending events need a new owner, decided by the primary `me` (see the
    /// module picture). Call after [`OwnerWatch::observe`] with the same log.
    pub fn reassignments(
        &self,
        log: &EventLog,
        members: &[MemberHealth],
        me: u64,
        hook_timeout_ms: u64,
        now_ms: u64,
    ) -> Vec<Reassign> {
        let mut out = Vec::new();
        for event in log.records().filter(|event| event.pending()) {
            let owner = event.owner;
            let why = match members.iter().find(|member| member.id == owner) {
                None => Some(format!("its owner node {owner} is not a member")),
                Some(member) if !member.healthy => Some(format!("its owner node {owner} is not healthy")),
                Some(_) => Channel::ALL
                    .into_iter()
                    .filter(|&channel| matches!(event.channel_state(channel), ChannelState::Pending { .. }))
                    .find_map(|channel| {
                        let progress = self.progress.get(&(owner, channel))?;
                        let bound_ms = silence_bound_ms(channel, hook_timeout_ms);
                        let silent_ms = now_ms.saturating_sub(progress.since_ms);
                        (silent_ms >= bound_ms).then(|| {
                            format!(
                                "its owner node {owner} recorded no {} delivery for {silent_ms} ms (bound {bound_ms} \
                                 ms)",
                                channel.name()
                            )
                        })
                    }),
            };
            let Some(why) = why else { continue };
            let healthy = |id: u64| members.iter().any(|member| member.id == id && member.healthy);
            let to = if me != owner && healthy(me) {
                Some(me)
            } else {
                members.iter().filter(|member| member.healthy && member.id != owner).map(|member| member.id).min()
            };
            if let Some(to) = to {
                out.push(Reassign {
                    seq: event.seq,
                    from: owner,
                    to,
                    reason: format!("event {} ({}): {why}; node {to} delivers it", event.seq, event.kind.name()),
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::log::DeliveryOutcome;
    use crate::events::log::DeliveryRecord;

    const HOOK_TIMEOUT_MS: u64 = 30_000;

    fn failover() -> EventKind {
        EventKind::Failover { active: "n2".into(), standby: "n1".into() }
    }

    fn offline() -> EventKind {
        EventKind::StandbyOffline { standby: "n3".into(), active: "n1".into() }
    }

    fn record(channel: Channel, node: u64, at_ms: u64, outcome: DeliveryOutcome) -> DeliveryRecord {
        DeliveryRecord { channel, node, at_ms, outcome }
    }

    fn done() -> DeliveryOutcome {
        DeliveryOutcome::Done { detail: "ok".into() }
    }

    fn healthy(ids: &[u64]) -> Vec<MemberHealth> {
        ids.iter().map(|&id| MemberHealth { id, healthy: true }).collect()
    }

    /// Ownership: the node seed 002 names for its events, the seeing node for alarms, the
    /// holder for its role's start/stop/failure, the leader for the rest.
    #[test]
    fn initial_owner_table() {
        let role_started = EventKind::RoleStarted { role: "r".into(), node: 3, epoch: 1 };
        let role_failed = EventKind::RoleFailed { role: "r".into(), node: 3, epoch: 1, reason: "x".into() };
        let role_stopped = EventKind::RoleStopped { role: "r".into(), node: 3, epoch: 1, reason: "x".into() };
        let role_moved = EventKind::RoleMoved { role: "r".into(), from: Some(3), to: 1, epoch: 2, reason: "x".into() };
        // (kind, observed by, leader, owner)
        let cases: Vec<(EventKind, u64, Option<u64>, u64)> = vec![
            (failover(), 2, Some(2), 2),
            (EventKind::ManualSwitch { active: "a".into(), standby: "b".into() }, 2, Some(2), 2),
            (offline(), 1, Some(1), 1),
            (EventKind::StandbyOnline { standby: "n3".into(), active: "n1".into() }, 1, Some(1), 1),
            (EventKind::RaiseAlarm { condition: "c".into(), error: "e".into() }, 2, Some(1), 2),
            (EventKind::ClearAlarm { text: "t".into() }, 2, Some(1), 2),
            (role_started, 1, Some(1), 3),
            (role_failed, 1, Some(1), 3),
            (role_stopped, 1, Some(1), 3),
            (role_moved, 3, Some(1), 1),
            (EventKind::MemberJoined { node: 4 }, 4, Some(1), 1),
            (EventKind::MemberLeft { node: 4 }, 2, Some(1), 1),
            (EventKind::ConfigApplied { version: 2, summary: "s".into() }, 2, Some(1), 1),
            (EventKind::NoQuorum { start_ms: 1, end_ms: 2 }, 2, Some(1), 1),
            (EventKind::QuorumRestored { leader: 1 }, 2, None, 2),
        ];
        for (kind, observed_by, leader, owner) in cases {
            assert_eq!(initial_owner(&kind, observed_by, leader), owner, "{kind:?}");
        }
    }

    #[test]
    fn retry_delays_double_up_to_the_cap() {
        let delays: Vec<u64> = (0..8).map(retry_delay_ms).collect();
        assert_eq!(delays, vec![0, 5_000, 10_000, 20_000, 40_000, 60_000, 60_000, 60_000]);
        assert_eq!(retry_delay_ms(u32::MAX), DELIVERY_RETRY_MAX_MS);
    }

    /// What the owner delivers, and when: only its own events, only pending channels,
    /// retries after the back-off, nothing once finished.
    #[test]
    fn due_for_table() {
        let mut log = EventLog::default();
        let mine = log.append(1_000, 2, failover(), 2, &[Channel::Hook, Channel::Mail]);
        let theirs = log.append(1_000, 1, offline(), 1, &[Channel::Hook]);
        let seqs = |due: &[Due]| due.iter().map(|due| (due.seq, due.channel, due.attempt)).collect::<Vec<_>>();
        assert_eq!(seqs(&due_for(&log, 2, 1_000)), vec![(mine, Channel::Hook, 1), (mine, Channel::Mail, 1)]);
        assert_eq!(seqs(&due_for(&log, 1, 1_000)), vec![(theirs, Channel::Hook, 1)]);
        assert_eq!(seqs(&due_for(&log, 3, 1_000)), vec![]);
        log.record_delivery(mine, record(Channel::Hook, 2, 1_100, done())).unwrap();
        log.record_delivery(mine, record(Channel::Mail, 2, 2_000, DeliveryOutcome::Failed { error: "x".into() }))
            .unwrap();
        assert_eq!(seqs(&due_for(&log, 2, 2_000 + DELIVERY_RETRY_BASE_MS - 1)), vec![], "waiting to retry");
        assert_eq!(seqs(&due_for(&log, 2, 2_000 + DELIVERY_RETRY_BASE_MS)), vec![(mine, Channel::Mail, 2)]);
        log.record_delivery(mine, record(Channel::Mail, 2, 9_000, done())).unwrap();
        assert_eq!(seqs(&due_for(&log, 2, u64::MAX)), vec![]);
        // A reassigned event is due at its new owner, not the old one.
        log.reassign(theirs, 1, 2).unwrap();
        assert_eq!(seqs(&due_for(&log, 1, 1_000)), vec![]);
        assert_eq!(seqs(&due_for(&log, 2, 1_000)), vec![(theirs, Channel::Hook, 1)]);
    }

    /// Re-delivery decisions: facts and time in, exact reassignments out.
    #[test]
    fn reassignment_table() {
        let hook_bound = silence_bound_ms(Channel::Hook, HOOK_TIMEOUT_MS);
        let mut log = EventLog::default();
        let by_two = log.append(0, 2, failover(), 2, &[Channel::Hook]);
        let mut watch = OwnerWatch::default();
        watch.observe(&log, 1_000);
        let decide = |watch: &OwnerWatch, log: &EventLog, members: &[MemberHealth], me: u64, now_ms: u64| {
            watch
                .reassignments(log, members, me, HOOK_TIMEOUT_MS, now_ms)
                .into_iter()
                .map(|r| (r.seq, r.from, r.to))
                .collect::<Vec<_>>()
        };
        // Healthy owner within the bound: nobody else delivers.
        assert_eq!(decide(&watch, &log, &healthy(&[1, 2, 3]), 1, 1_000 + hook_bound - 1), vec![]);
        // Exactly at the bound: the primary takes over.
        assert_eq!(decide(&watch, &log, &healthy(&[1, 2, 3]), 1, 1_000 + hook_bound), vec![(by_two, 2, 1)]);
        // Owner unhealthy or gone: at once.
        let sick = [MemberHealth { id: 1, healthy: true }, MemberHealth { id: 2, healthy: false }];
        assert_eq!(decide(&watch, &log, &sick, 1, 1_000), vec![(by_two, 2, 1)]);
        assert_eq!(decide(&watch, &log, &healthy(&[1, 3]), 1, 1_000), vec![(by_two, 2, 1)]);
        // The primary itself silent: the lowest healthy other member.
        let mut own = EventLog::default();
        let seq = own.append(0, 1, failover(), 1, &[Channel::Hook]);
        let mut watch_own = OwnerWatch::default();
        watch_own.observe(&own, 0);
        assert_eq!(decide(&watch_own, &own, &healthy(&[1, 2, 3]), 1, hook_bound), vec![(seq, 1, 2)]);
        // Nobody healthy to take it: it stays (pending, never dropped).
        let alone = [MemberHealth { id: 1, healthy: true }, MemberHealth { id: 2, healthy: false }];
        assert_eq!(decide(&watch_own, &own, &alone, 1, hook_bound), vec![]);
        // Progress resets the bound: a delivery record on another event of the same owner.
        let second = log.append(0, 2, offline(), 2, &[Channel::Hook]);
        log.record_delivery(by_two, record(Channel::Hook, 2, 0, done())).unwrap();
        watch.observe(&log, 1_000 + hook_bound - 10);
        assert_eq!(decide(&watch, &log, &healthy(&[1, 2, 3]), 1, 1_000 + hook_bound + 10), vec![]);
        assert_eq!(decide(&watch, &log, &healthy(&[1, 2, 3]), 1, 1_000 + 2 * hook_bound - 10), vec![(second, 2, 1)]);
        // Finished events are never reassigned.
        log.record_delivery(second, record(Channel::Hook, 2, 0, done())).unwrap();
        watch.observe(&log, 0);
        assert_eq!(decide(&watch, &log, &[], 1, u64::MAX), vec![]);
    }

    /// A healthy cluster where every owner reports within the bound: over a long run with
    /// events arriving and being delivered, no event ever gets a second deliverer.
    #[test]
    fn a_healthy_cluster_never_reassigns() {
        let members = healthy(&[1, 2, 3]);
        let mut log = EventLog::default();
        let mut watch = OwnerWatch::default();
        let step_ms = 7_000;
        for tick in 0..2_000u64 {
            let now_ms = tick * step_ms;
            let owner = 1 + tick % 3;
            log.append(now_ms, owner, EventKind::ClearAlarm { text: tick.to_string() }, owner, &Channel::ALL);
            // Each owner delivers what is due within one step (well inside every bound).
            for node in [1, 2, 3] {
                for due in due_for(&log, node, now_ms) {
                    let outcome = match due.action {
                        RateDecision::Deliver { .. } => done(),
                        RateDecision::Suppress => DeliveryOutcome::Suppressed,
                    };
                    log.record_delivery(due.seq, record(due.channel, node, now_ms, outcome)).unwrap();
                }
            }
            watch.observe(&log, now_ms);
            assert_eq!(watch.reassignments(&log, &members, 1, HOOK_TIMEOUT_MS, now_ms), vec![], "tick {tick}");
        }
        assert!(log.records().all(|event| !event.pending()));
    }

    /// At least once: whatever owners die, as long as one member is healthy every pending
    /// event ends with a healthy owner.
    #[test]
    fn every_pending_event_gets_a_living_owner() {
        let mut log = EventLog::default();
        for owner in [1, 2, 3, 2, 3] {
            log.append(0, owner, failover(), owner, &[Channel::Hook]);
        }
        let members = [
            MemberHealth { id: 1, healthy: true },
            MemberHealth { id: 2, healthy: false },
            MemberHealth { id: 3, healthy: false },
        ];
        let mut watch = OwnerWatch::default();
        watch.observe(&log, 0);
        for reassign in watch.reassignments(&log, &members, 1, HOOK_TIMEOUT_MS, 0) {
            log.reassign(reassign.seq, reassign.from, reassign.to).unwrap();
        }
        assert!(log.records().all(|event| event.owner == 1), "{:?}", log.records().collect::<Vec<_>>());
        assert_eq!(due_for(&log, 1, 0).len(), 5);
    }

    /// The rate limit per kind and channel: six sends in ten minutes, then suppressed,
    /// with the count in the next message sent; the hook is never limited; kinds are
    /// counted apart.
    #[test]
    fn rate_limit_table() {
        let mut log = EventLog::default();
        let minute = 60_000;
        let mut seqs = Vec::new();
        // Ten StandbyOffline events a minute apart, one Failover among them.
        for index in 0..10u64 {
            seqs.push(log.append(index * minute, 1, offline(), 1, &[Channel::Hook, Channel::Mail]));
        }
        let failover_seq = log.append(5 * minute, 1, failover(), 1, &[Channel::Mail]);
        let mut decisions = Vec::new();
        for &seq in &seqs {
            let decision = rate_decision(&log, seq, Channel::Mail).unwrap();
            let outcome = match decision {
                RateDecision::Deliver { .. } => done(),
                RateDecision::Suppress => DeliveryOutcome::Suppressed,
            };
            log.record_delivery(seq, record(Channel::Mail, 1, 0, outcome)).unwrap();
            decisions.push(decision);
            assert_eq!(rate_decision(&log, seq, Channel::Hook), Some(RateDecision::Deliver { suppressed_before: 0 }));
        }
        let deliver = |n| RateDecision::Deliver { suppressed_before: n };
        // Minutes 0-5 sent; 6-9 see six sends within the last ten minutes... until minute
        // 10 would let the first one out of the window (not reached here).
        assert_eq!(
            decisions,
            vec![
                deliver(0),
                deliver(0),
                deliver(0),
                deliver(0),
                deliver(0),
                deliver(0),
                RateDecision::Suppress,
                RateDecision::Suppress,
                RateDecision::Suppress,
                RateDecision::Suppress,
            ]
        );
        assert_eq!(rate_decision(&log, failover_seq, Channel::Mail), Some(deliver(0)), "another kind");
        // At minute 10 the event of minute 0 leaves the window: sent, with the count.
        let later = log.append(10 * minute, 1, offline(), 1, &[Channel::Mail]);
        assert_eq!(rate_decision(&log, later, Channel::Mail), Some(deliver(4)));
        assert_eq!(
            suppressed_note("StandbyOffline", 4).unwrap(),
            "4 earlier StandbyOffline event(s) were not sent (at most 6 per 10 minutes); all are in `haven events`"
        );
        assert_eq!(suppressed_note("StandbyOffline", 0), None);
        // After it is sent, the count starts again from zero.
        log.record_delivery(later, record(Channel::Mail, 1, 0, done())).unwrap();
        let next = log.append(17 * minute, 1, offline(), 1, &[Channel::Mail]);
        assert_eq!(rate_decision(&log, next, Channel::Mail), Some(deliver(0)));
        assert_eq!(rate_decision(&log, 9_999, Channel::Mail), None);
    }

    /// A flapping link over a day: the mails sent stay within the limit in every window,
    /// and every suppressed event is counted in a later mail (or is among the last).
    #[test]
    fn a_flapping_link_sends_a_bounded_number_of_mails() {
        let mut log = EventLog::default();
        let mut sent_at = Vec::new();
        let mut reported = 0u64;
        let mut suppressed = 0u64;
        for index in 0..8_640u64 {
            let at_ms = index * 10_000;
            let kind = if index % 2 == 0 {
                offline()
            } else {
                EventKind::StandbyOnline { standby: "n3".into(), active: "n1".into() }
            };
            let seq = log.append(at_ms, 1, kind, 1, &[Channel::Mail]);
            let decision = rate_decision(&log, seq, Channel::Mail).unwrap();
            let outcome = match decision {
                RateDecision::Deliver { suppressed_before } => {
                    sent_at.push(at_ms);
                    reported += suppressed_before;
                    done()
                }
                RateDecision::Suppress => {
                    suppressed += 1;
                    DeliveryOutcome::Suppressed
                }
            };
            log.record_delivery(seq, record(Channel::Mail, 1, at_ms, outcome)).unwrap();
        }
        // Two kinds, six per ten minutes each, over 24 hours: at most 2 * 6 * 144.
        assert!(sent_at.len() <= 2 * RATE_LIMIT_SENDS_MAX * 144, "{} mails", sent_at.len());
        assert!(sent_at.len() < 8_640 / 4, "most flaps are suppressed");
        for (index, &at_ms) in sent_at.iter().enumerate() {
            let in_window = sent_at[..=index].iter().filter(|&&t| at_ms - t < RATE_LIMIT_WINDOW_MS).count();
            assert!(in_window <= 2 * RATE_LIMIT_SENDS_MAX);
        }
        // Every suppression is reported later, except those after the last mail of a kind.
        assert!(suppressed - reported <= 2 * 60, "suppressed {suppressed}, reported {reported}");
    }
}
