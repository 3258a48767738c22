//! The bounded, replicated event log: what happened, who owns its delivery, and what
//! became of each delivery.
//!
//! ```text
//!   append(at_ms, node, kind, owner, channels) ──▶ EventRecord { seq, ..., deliveries: [] }
//!   record_delivery(seq, DeliveryRecord { channel, node, at_ms, outcome })
//!   reassign(seq, from, to)              (compare-and-set on the owner)
//!   oldest records dropped beyond EVENTS_KEPT_MAX; one dropped while a channel was still
//!   pending is counted in `dropped_undelivered` (shown, never silent)
//! ```
//!
//! A value for the state machine: every method is deterministic (time comes in the
//! arguments, stamped by the proposing leader), and every type here is stored with the
//! replicated state's encoding (`codec`), so nothing is untagged or skipped.

use std::collections::VecDeque;

use serde::Deserialize;
use serde::Serialize;

use crate::events::sanitize_arg;
use crate::events::EventKind;

/// Events kept. HA and role events are rare (a bad day has tens); 1,000 keep weeks of
/// them. Each text field is at most `ARG_BYTES_MAX` (4 KiB), so even a log of maximal
/// events stays around 12 MiB in a snapshot; typical events are under 200 bytes. The
/// oldest are dropped first; sequence numbers go on.
pub const EVENTS_KEPT_MAX: usize = 1_000;

/// Delivery records kept per event, all channels together. Each channel needs at most
/// `delivery::DELIVERY_ATTEMPTS_MAX` (5) records before it is finished, three channels
/// 15; 32 leaves room for a late record from a replaced owner and bounds a record from a
/// node that keeps reporting.
pub const DELIVERY_RECORDS_PER_EVENT_MAX: usize = 32;

/// Events returned by one read: a page, so an answer stays small.
pub const EVENTS_PAGE_MAX: usize = 1_000;

/// How an event reaches people and programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Channel {
    /// Seed 002's HA custom script.
    Hook,
    /// Seed 002's alert e-mail.
    Mail,
    /// A POST of the event as JSON (issue 17).
    Webhook,
}

impl Channel {
    pub const ALL: [Channel; 3] = [Channel::Hook, Channel::Mail, Channel::Webhook];

    pub fn name(self) -> &'static str {
        match self {
            Channel::Hook => "hook",
            Channel::Mail => "mail",
            Channel::Webhook => "webhook",
        }
    }

    /// Whether sends on this channel are rate-limited per kind. The hook is not: the
    /// operator's script decides what to do with every event (it may only log them).
    pub fn rate_limited(self) -> bool {
        matches!(self, Channel::Mail | Channel::Webhook)
    }
}

/// What one delivery attempt came to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeliveryOutcome {
    /// Delivered: the hook ran (whatever its exit code: the script got the event), the
    /// relay accepted the mail, the webhook answered 2xx. `detail` says how.
    Done { detail: String },
    /// Not delivered this time (script missing, relay down, HTTP 5xx); retried by the
    /// owner until `DELIVERY_ATTEMPTS_MAX` attempts failed.
    Failed { error: String },
    /// Not sent: the rate limit for its kind on this channel (mail, webhook); counted in
    /// the next message of that kind that is sent.
    Suppressed,
}

/// One delivery attempt on one channel, by one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    pub channel: Channel,
    pub node: u64,
    /// When the outcome was known, ms since the Unix epoch (the recording node's clock).
    pub at_ms: u64,
    pub outcome: DeliveryOutcome,
}

/// Where one channel of one event stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelState {
    /// The channel was not configured when the event was recorded.
    NotWanted,
    /// Still to be delivered; `failures` attempts failed so far (the last at
    /// `last_failure_ms`).
    Pending { failures: u32, last_failure_ms: Option<u64> },
    /// Done, suppressed, or out of attempts.
    Finished,
}

/// One event in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    /// 1, 2, 3, ... across the cluster's life; never reused, even after trimming. Scripts
    /// get it as `HAVEN_EVENT_SEQ` to tell a repeated delivery from a new event.
    pub seq: u64,
    /// The proposing leader's clock, ms since the Unix epoch.
    pub at_ms: u64,
    /// The node that saw it happen.
    pub node: u64,
    pub kind: EventKind,
    /// The one node that delivers it (`delivery::initial_owner`, then replaced only by
    /// `delivery::OwnerWatch`).
    pub owner: u64,
    /// The channels configured when it was recorded: each must end finished.
    pub channels: Vec<Channel>,
    pub deliveries: Vec<DeliveryRecord>,
    /// How many times the owner was replaced.
    pub reassignments: u32,
}

impl EventRecord {
    pub fn channel_state(&self, channel: Channel) -> ChannelState {
        if !self.channels.contains(&channel) {
            return ChannelState::NotWanted;
        }
        let mut failures = 0u32;
        let mut last_failure_ms = None;
        for record in self.deliveries.iter().filter(|record| record.channel == channel) {
            match record.outcome {
                DeliveryOutcome::Done { .. } | DeliveryOutcome::Suppressed => return ChannelState::Finished,
                DeliveryOutcome::Failed { .. } => {
                    failures = failures.saturating_add(1);
                    last_failure_ms = Some(record.at_ms);
                }
            }
        }
        if failures >= crate::events::delivery::DELIVERY_ATTEMPTS_MAX {
            return ChannelState::Finished;
        }
        ChannelState::Pending { failures, last_failure_ms }
    }

    /// Whether any configured channel still waits for delivery.
    pub fn pending(&self) -> bool {
        Channel::ALL.iter().any(|&channel| matches!(self.channel_state(channel), ChannelState::Pending { .. }))
    }

    /// Whether `channel` was delivered (the hook ran, the mail or webhook was accepted).
    pub fn delivered(&self, channel: Channel) -> bool {
        self.deliveries
            .iter()
            .any(|record| record.channel == channel && matches!(record.outcome, DeliveryOutcome::Done { .. }))
    }

    pub fn suppressed(&self, channel: Channel) -> bool {
        self.deliveries.iter().any(|record| record.channel == channel && record.outcome == DeliveryOutcome::Suppressed)
    }
}

/// Why the log refused a change. The state machine answers it to the proposer; nothing
/// in the log changes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventLogError {
    #[error("event {seq} is not in the log (the oldest kept is {oldest}, the newest {newest})")]
    UnknownEvent { seq: u64, oldest: u64, newest: u64 },
    #[error(
        "event {seq} already has {} delivery records; no more are kept (the owner keeps reporting: look at its log)",
        DELIVERY_RECORDS_PER_EVENT_MAX
    )]
    DeliveriesFull { seq: u64 },
    #[error("event {seq} is owned by node {owner}, not node {expected}: another reassignment came first")]
    OwnerChanged { seq: u64, owner: u64, expected: u64 },
    #[error("event {seq}: node {node} is already its owner")]
    SameOwner { seq: u64, node: u64 },
}

/// The bounded event log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventLog {
    records: VecDeque<EventRecord>,
    last_seq: u64,
    /// Events dropped from the full log while a channel was still pending: shown in
    /// status, so a delivery that can no longer happen is never silent.
    dropped_undelivered: u64,
}

impl EventLog {
    /// Appends an event (its text sanitized as argv needs it) and returns its sequence
    /// number; drops the oldest beyond [`EVENTS_KEPT_MAX`].
    pub fn append(&mut self, at_ms: u64, node: u64, kind: EventKind, owner: u64, channels: &[Channel]) -> u64 {
        self.last_seq += 1;
        let mut channels: Vec<Channel> = channels.to_vec();
        channels.sort();
        channels.dedup();
        self.records.push_back(EventRecord {
            seq: self.last_seq,
            at_ms,
            node,
            kind: kind.sanitized(),
            owner,
            channels,
            deliveries: Vec::new(),
            reassignments: 0,
        });
        while self.records.len() > EVENTS_KEPT_MAX {
            if let Some(dropped) = self.records.pop_front() {
                if dropped.pending() {
                    self.dropped_undelivered += 1;
                }
            }
        }
        assert!(self.records.len() <= EVENTS_KEPT_MAX);
        self.last_seq
    }

    fn position(&self, seq: u64) -> Result<usize, EventLogError> {
        let oldest = self.records.front().map_or(self.last_seq + 1, |record| record.seq);
        // Sequence numbers are contiguous in the log, so the position is arithmetic.
        let unknown = || EventLogError::UnknownEvent { seq, oldest, newest: self.last_seq };
        if seq < oldest || seq > self.last_seq {
            return Err(unknown());
        }
        let index = usize::try_from(seq - oldest).map_err(|_| unknown())?;
        match self.records.get(index) {
            Some(record) if record.seq == seq => Ok(index),
            _ => Err(unknown()),
        }
    }

    pub fn get(&self, seq: u64) -> Option<&EventRecord> {
        self.position(seq).ok().map(|index| &self.records[index])
    }

    /// Records a delivery attempt's outcome (from the owner, or from a replaced owner
    /// that finished late: both are facts).
    pub fn record_delivery(&mut self, seq: u64, mut record: DeliveryRecord) -> Result<(), EventLogError> {
        let index = self.position(seq)?;
        let event = &mut self.records[index];
        if event.deliveries.len() >= DELIVERY_RECORDS_PER_EVENT_MAX {
            return Err(EventLogError::DeliveriesFull { seq });
        }
        match &mut record.outcome {
            DeliveryOutcome::Done { detail: text } | DeliveryOutcome::Failed { error: text } => {
                *text = sanitize_arg(text);
            }
            DeliveryOutcome::Suppressed => {}
        }
        event.deliveries.push(record);
        Ok(())
    }

    /// Gives the event a new owner, if its owner is still `from` (compare-and-set, so two
    /// primaries' decisions cannot both apply).
    pub fn reassign(&mut self, seq: u64, from: u64, to: u64) -> Result<(), EventLogError> {
        let index = self.position(seq)?;
        let event = &mut self.records[index];
        if event.owner != from {
            return Err(EventLogError::OwnerChanged { seq, owner: event.owner, expected: from });
        }
        if to == from {
            return Err(EventLogError::SameOwner { seq, node: to });
        }
        event.owner = to;
        event.reassignments = event.reassignments.saturating_add(1);
        Ok(())
    }

    /// Records with `seq > after`, oldest first, at most `limit` (and [`EVENTS_PAGE_MAX`]).
    pub fn since(&self, after: u64, limit: usize) -> Vec<EventRecord> {
        let limit = limit.min(EVENTS_PAGE_MAX);
        self.records.iter().filter(|record| record.seq > after).take(limit).cloned().collect()
    }

    pub fn records(&self) -> impl DoubleEndedIterator<Item = &EventRecord> + '_ {
        self.records.iter()
    }

    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    pub fn dropped_undelivered(&self) -> u64 {
        self.dropped_undelivered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alarm(text: &str) -> EventKind {
        EventKind::ClearAlarm { text: text.into() }
    }

    fn done(channel: Channel, node: u64) -> DeliveryRecord {
        DeliveryRecord { channel, node, at_ms: 5, outcome: DeliveryOutcome::Done { detail: "exit 0".into() } }
    }

    fn failed(channel: Channel, node: u64, at_ms: u64) -> DeliveryRecord {
        DeliveryRecord { channel, node, at_ms, outcome: DeliveryOutcome::Failed { error: "relay down".into() } }
    }

    #[test]
    fn sequence_numbers_go_on_after_trimming_and_undelivered_drops_are_counted() {
        let mut log = EventLog::default();
        for index in 0..EVENTS_KEPT_MAX as u64 {
            let seq = log.append(index, 1, alarm("x"), 1, &[Channel::Hook]);
            assert_eq!(seq, index + 1);
            // Every other event delivered.
            if index % 2 == 0 {
                log.record_delivery(seq, done(Channel::Hook, 1)).unwrap();
            }
        }
        assert_eq!(log.dropped_undelivered(), 0);
        // The next two drop event 1 (delivered) and event 2 (pending).
        log.append(0, 1, alarm("y"), 1, &[]);
        assert_eq!(log.dropped_undelivered(), 0);
        log.append(0, 1, alarm("z"), 1, &[]);
        assert_eq!(log.dropped_undelivered(), 1);
        assert_eq!(log.records().count(), EVENTS_KEPT_MAX);
        assert_eq!(log.last_seq(), EVENTS_KEPT_MAX as u64 + 2);
        assert!(log.get(2).is_none());
        assert_eq!(log.get(3).unwrap().seq, 3);
        assert_eq!(
            log.record_delivery(1, done(Channel::Hook, 1)),
            Err(EventLogError::UnknownEvent { seq: 1, oldest: 3, newest: EVENTS_KEPT_MAX as u64 + 2 })
        );
        assert!(log.record_delivery(EVENTS_KEPT_MAX as u64 + 3, done(Channel::Hook, 1)).is_err());
        assert_eq!(log.since(EVENTS_KEPT_MAX as u64, 10).len(), 2);
        assert_eq!(log.since(0, usize::MAX).len(), EVENTS_PAGE_MAX.min(EVENTS_KEPT_MAX));
    }

    /// Channel states as a table: configured or not, done, suppressed, failures up to the
    /// attempt limit.
    #[test]
    fn channel_states() {
        use crate::events::delivery::DELIVERY_ATTEMPTS_MAX;
        let mut log = EventLog::default();
        let seq = log.append(0, 1, alarm("x"), 1, &[Channel::Mail, Channel::Hook, Channel::Mail]);
        let record = |log: &EventLog| log.get(seq).unwrap().clone();
        assert_eq!(record(&log).channels, vec![Channel::Hook, Channel::Mail], "sorted, once each");
        assert_eq!(record(&log).channel_state(Channel::Webhook), ChannelState::NotWanted);
        assert_eq!(
            record(&log).channel_state(Channel::Hook),
            ChannelState::Pending { failures: 0, last_failure_ms: None }
        );
        log.record_delivery(seq, done(Channel::Hook, 1)).unwrap();
        assert_eq!(record(&log).channel_state(Channel::Hook), ChannelState::Finished);
        assert!(record(&log).delivered(Channel::Hook));
        assert!(record(&log).pending(), "mail still pending");
        for attempt in 1..DELIVERY_ATTEMPTS_MAX {
            log.record_delivery(seq, failed(Channel::Mail, 1, 100 * u64::from(attempt))).unwrap();
            assert_eq!(
                record(&log).channel_state(Channel::Mail),
                ChannelState::Pending { failures: attempt, last_failure_ms: Some(100 * u64::from(attempt)) }
            );
        }
        log.record_delivery(seq, failed(Channel::Mail, 1, 999)).unwrap();
        assert_eq!(record(&log).channel_state(Channel::Mail), ChannelState::Finished, "out of attempts");
        assert!(!record(&log).pending());
        assert!(!record(&log).delivered(Channel::Mail));

        let seq = log.append(0, 1, alarm("y"), 1, &[Channel::Mail]);
        let suppressed =
            DeliveryRecord { channel: Channel::Mail, node: 1, at_ms: 0, outcome: DeliveryOutcome::Suppressed };
        log.record_delivery(seq, suppressed).unwrap();
        assert_eq!(log.get(seq).unwrap().channel_state(Channel::Mail), ChannelState::Finished);
        assert!(log.get(seq).unwrap().suppressed(Channel::Mail));
    }

    #[test]
    fn delivery_records_are_bounded_and_sanitized() {
        let mut log = EventLog::default();
        let seq = log.append(0, 1, alarm("x"), 1, &[Channel::Hook]);
        let noisy = DeliveryRecord {
            channel: Channel::Hook,
            node: 1,
            at_ms: 0,
            outcome: DeliveryOutcome::Failed { error: "a\0".repeat(10_000) },
        };
        for _ in 0..DELIVERY_RECORDS_PER_EVENT_MAX {
            log.record_delivery(seq, noisy.clone()).unwrap();
        }
        assert_eq!(log.record_delivery(seq, noisy), Err(EventLogError::DeliveriesFull { seq }));
        let DeliveryOutcome::Failed { error } = &log.get(seq).unwrap().deliveries[0].outcome else { panic!() };
        assert!(error.len() <= crate::events::ARG_BYTES_MAX && !error.contains('\0'));
    }

    #[test]
    fn reassignment_is_compare_and_set() {
        let mut log = EventLog::default();
        let seq = log.append(0, 1, alarm("x"), 1, &[Channel::Hook]);
        assert_eq!(log.reassign(seq, 2, 3), Err(EventLogError::OwnerChanged { seq, owner: 1, expected: 2 }));
        assert_eq!(log.reassign(seq, 1, 1), Err(EventLogError::SameOwner { seq, node: 1 }));
        log.reassign(seq, 1, 3).unwrap();
        let record = log.get(seq).unwrap();
        assert_eq!((record.owner, record.reassignments), (3, 1));
        // The first of two racing reassignments wins; the second is refused.
        assert!(log.reassign(seq, 1, 2).is_err());
    }

    #[test]
    fn the_log_round_trips_through_the_codec() {
        let mut log = EventLog::default();
        let seq = log.append(7, 2, alarm("x"), 2, &Channel::ALL);
        log.record_delivery(seq, done(Channel::Hook, 2)).unwrap();
        log.record_delivery(seq, failed(Channel::Mail, 2, 9)).unwrap();
        log.reassign(seq, 2, 3).unwrap();
        let bytes = crate::codec::encode(&log).unwrap();
        assert_eq!(crate::codec::decode::<EventLog>(&bytes).unwrap(), log);
    }
}
