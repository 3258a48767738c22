//! Wall clocks of the members: how far each one is off, and the cluster's time.
//!
//! ```text
//!   prober                                   member p
//!     sent_ms (own wall clock) ── ping ──▶
//!                               ◀── wall_ms ── (p's wall clock when it answered)
//!     received_ms
//!   sample: offset_p = wall_ms - (sent_ms + received_ms) / 2, uncertain by ± rtt / 2
//!
//!   cluster offset = median of { 0 (this node) } ∪ { offset_p of members with a fresh sample }
//!   cluster time   = own wall clock + cluster offset
//!   skew of p      = offset_p - cluster offset  (of this node: - cluster offset)
//! ```
//!
//! Token creation and expiry are decided on cluster time (the leader stamps it on every
//! proposal, and every node checks tokens at its door against it). While a majority of the
//! members' clocks agree, the median is one of theirs, so one skewed node (leader or not)
//! neither expires valid tokens nor stretches short ones: its cluster time is corrected by
//! its peers' readings. With only two members (or one reachable peer) the median cannot
//! tell who is wrong and a node keeps its own clock.
//!
//! Nothing here reads a clock: callers pass wall-clock milliseconds.

/// Skew beyond which a member's clock raises an alarm and a status warning. Token lifetimes
/// are whole seconds (at least one, see `auth::TOKEN_TTL_SECONDS_MIN`) and NTP keeps clocks
/// within milliseconds; a second off means the member is not synchronised at all.
pub const CLOCK_SKEW_MAX_MS: u64 = 1_000;

/// Samples whose round trip took longer than this are too uncertain (± half the round trip)
/// to judge a skew of `CLOCK_SKEW_MAX_MS`, and are not used.
pub const CLOCK_SAMPLE_RTT_MAX_MS: u64 = CLOCK_SKEW_MAX_MS / 2;

/// A sample older than this (by the monotonic clock) is stale: the member stopped answering,
/// and its clock may have been stepped since.
pub const CLOCK_SAMPLE_FRESH_MS: u64 = 10_000;

const _: () = assert!(CLOCK_SAMPLE_RTT_MAX_MS / 2 < CLOCK_SKEW_MAX_MS);

/// One reading of a member's clock against this node's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockSample {
    /// The member's wall clock minus this node's, in ms.
    pub offset_ms: i64,
    /// The round trip of the ping that carried it; the offset is uncertain by half of it.
    pub rtt_ms: u64,
}

impl ClockSample {
    /// The sample from a ping sent at `sent_ms` and answered at `received_ms` (this node's
    /// wall clock), whose answer says the member's wall clock read `remote_ms`. `None` when
    /// the round trip was too long to tell, or this node's clock went backwards meanwhile.
    pub fn from_ping(sent_ms: u64, remote_ms: u64, received_ms: u64) -> Option<ClockSample> {
        let rtt_ms = received_ms.checked_sub(sent_ms)?;
        if rtt_ms > CLOCK_SAMPLE_RTT_MAX_MS {
            return None;
        }
        let midpoint = sent_ms + rtt_ms / 2;
        let offset_ms = i128::from(remote_ms) - i128::from(midpoint);
        Some(ClockSample { offset_ms: offset_ms.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64, rtt_ms })
    }
}

/// The cluster's time as an offset from this node's own clock: the median of this node's
/// offset (0) and the members' `offsets`. With an even count the middle value closer to 0
/// wins (a node keeps its own clock when the others are split).
pub fn cluster_offset_ms(offsets: &[i64]) -> i64 {
    let mut all: Vec<i64> = Vec::with_capacity(offsets.len() + 1);
    all.push(0);
    all.extend_from_slice(offsets);
    all.sort_unstable();
    let middle = all.len() / 2;
    if all.len() % 2 == 1 {
        return all[middle];
    }
    let (low, high) = (all[middle - 1], all[middle]);
    if low.unsigned_abs() <= high.unsigned_abs() {
        low
    } else {
        high
    }
}

/// `wall_ms` moved by `offset_ms`, without wrapping.
pub fn shifted(wall_ms: u64, offset_ms: i64) -> u64 {
    if offset_ms >= 0 {
        wall_ms.saturating_add(offset_ms.unsigned_abs())
    } else {
        wall_ms.saturating_sub(offset_ms.unsigned_abs())
    }
}

/// Whether a clock `skew_ms` off the cluster's, measured with `uncertainty_ms`, is certainly
/// beyond [`CLOCK_SKEW_MAX_MS`].
pub fn skew_exceeds_bound(skew_ms: i64, uncertainty_ms: u64) -> bool {
    skew_ms.unsigned_abs().saturating_sub(uncertainty_ms) > CLOCK_SKEW_MAX_MS
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR_MS: i64 = 3_600_000;

    #[test]
    fn a_ping_sample_takes_the_midpoint_of_the_round_trip() {
        let sample = ClockSample::from_ping(1_000, 6_050, 1_100).unwrap();
        assert_eq!(sample, ClockSample { offset_ms: 5_000, rtt_ms: 100 });
        let behind = ClockSample::from_ping(10_000, 4_000, 10_010).unwrap();
        assert_eq!(behind.offset_ms, -6_005);
        assert_eq!(ClockSample::from_ping(1_000, 0, 1_000 + CLOCK_SAMPLE_RTT_MAX_MS + 1), None, "too uncertain");
        assert_eq!(ClockSample::from_ping(1_000, 0, 999), None, "own clock stepped back");
    }

    /// The issue's case: a leader five hours ahead. From its own view both peers are five
    /// hours behind, so the median moves its cluster time back to theirs.
    #[test]
    fn one_skewed_node_is_outvoted_whichever_node_it_is() {
        assert_eq!(cluster_offset_ms(&[-5 * HOUR_MS, -5 * HOUR_MS + 3]), -5 * HOUR_MS + 3);
        // Seen from a correct node: the skewed peer does not move the median.
        assert_eq!(cluster_offset_ms(&[5 * HOUR_MS, 2]), 2);
        assert_eq!(cluster_offset_ms(&[5 * HOUR_MS, -3, 4, -HOUR_MS]), 0);
    }

    #[test]
    fn alone_or_split_a_node_keeps_its_own_clock() {
        assert_eq!(cluster_offset_ms(&[]), 0);
        assert_eq!(cluster_offset_ms(&[5 * HOUR_MS]), 0);
        assert_eq!(cluster_offset_ms(&[-5 * HOUR_MS]), 0);
        // Four members: the two middle readings are 0 and 10; 0 is closer.
        assert_eq!(cluster_offset_ms(&[10, 20, -30]), 0);
        assert_eq!(cluster_offset_ms(&[-10, 20, 30]), 0);
        assert_eq!(cluster_offset_ms(&[15, 20, 30]), 15);
    }

    #[test]
    fn shifting_never_wraps() {
        assert_eq!(shifted(1_000, -400), 600);
        assert_eq!(shifted(1_000, -4_000), 0);
        assert_eq!(shifted(u64::MAX - 1, 10), u64::MAX);
        assert_eq!(shifted(1_000, i64::MIN), 0);
    }

    #[test]
    fn the_bound_allows_for_the_measurement_uncertainty() {
        let bound = CLOCK_SKEW_MAX_MS as i64;
        assert!(!skew_exceeds_bound(bound, 0));
        assert!(skew_exceeds_bound(bound + 1, 0));
        assert!(!skew_exceeds_bound(-(bound + 40), 50), "within the bound once the uncertainty is allowed for");
        assert!(skew_exceeds_bound(-5 * HOUR_MS, 200));
    }
}
