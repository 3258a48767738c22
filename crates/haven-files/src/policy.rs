//! When the primary scans and publishes: seed 002's "sync every 5-30 s, or every 1000
//! changes regardless of this timer", as a pure state machine. Time comes in as an
//! argument; nothing here reads a clock, sleeps or touches the disk.
//!
//! ```text
//!   noticed(now, paths) ──┐
//!   overflowed()        ──┼──▶ PublishState ──decide(now)──▶ Scan(reason) | WaitUntil(t)
//!   watching(bool)      ──┤
//!   scanning(now)       ──┘ (the caller starts a scan: pending changes are taken)
//! ```
//!
//! The first change starts the interval; the change threshold (distinct paths) cuts it
//! short. Notifications alone are unreliable (inotify's watch limit, queue overflows), so
//! the tree is also rescanned in full every [`FULL_RESCAN_INTERVAL`], at once after an
//! overflow, and every interval while the watcher is not working. An idle directory thus
//! wakes the primary once per [`FULL_RESCAN_INTERVAL`], for a scan that only `lstat`s
//! unchanged files.

use std::collections::HashSet;
use std::time::Duration;
use std::time::Instant;

use haven_core::ha::config::FILE_SYNC_CHANGE_COUNT_DEFAULT;
use haven_core::ha::config::FILE_SYNC_INTERVAL_S_DEFAULT;

/// A full rescan while notifications seem to work: they miss changes only in rare cases
/// that report nothing (a watch that could not be added reports an error, and an overflow
/// is flagged), so five minutes bounds that rare delay while an idle tree of thousands of
/// files costs a few milliseconds of `lstat` per five minutes.
pub const FULL_RESCAN_INTERVAL: Duration = Duration::from_secs(300);

/// The publish parameters (validated as HA configuration, `haven_core::ha::config`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Longest time from a change to the scan that publishes it.
    pub interval: Duration,
    /// Distinct changed paths that trigger a scan before the interval ends.
    pub change_threshold: usize,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            interval: Duration::from_secs(FILE_SYNC_INTERVAL_S_DEFAULT),
            change_threshold: FILE_SYNC_CHANGE_COUNT_DEFAULT as usize,
        }
    }
}

/// Why a scan is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// No scan yet since this node started publishing.
    Start,
    /// The interval has passed since the first unpublished change.
    Interval,
    /// The change threshold was reached.
    Threshold,
    /// Periodic full rescan.
    Rescan,
    /// Notifications were lost (queue overflow or watcher error).
    Overflow,
}

/// What to do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Scan(Reason),
    /// Nothing is due before this instant (unless a change or an overflow comes first).
    WaitUntil(Instant),
}

/// What has been noticed since the last scan.
#[derive(Debug, Clone)]
pub struct PublishState {
    policy: Policy,
    last_scan: Option<Instant>,
    first_change: Option<Instant>,
    /// Distinct changed paths, kept only up to the threshold (enough to decide).
    changed: HashSet<Vec<u8>>,
    overflow: bool,
    watching: bool,
}

impl PublishState {
    pub fn new(policy: Policy) -> PublishState {
        PublishState {
            policy,
            last_scan: None,
            first_change: None,
            changed: HashSet::new(),
            overflow: false,
            watching: true,
        }
    }

    /// New parameters (a configuration change); pending changes are kept.
    pub fn set_policy(&mut self, policy: Policy) {
        self.policy = policy;
    }

    /// Paths reported changed (relative, as bytes) at `now`.
    pub fn noticed<'a>(&mut self, now: Instant, paths: impl IntoIterator<Item = &'a [u8]>) {
        for path in paths {
            self.first_change.get_or_insert(now);
            if self.changed.len() < self.policy.change_threshold {
                self.changed.insert(path.to_vec());
            }
        }
    }

    /// Notifications were lost: only a full scan can tell what changed.
    pub fn overflowed(&mut self) {
        self.overflow = true;
    }

    /// Whether notifications are working (false: the watcher could not start, e.g. the
    /// inotify watch limit; the tree is then rescanned every interval).
    pub fn watching(&mut self, working: bool) {
        self.watching = working;
    }

    /// A scan starts at `now`: everything noticed so far is in it. What is noticed from
    /// now on belongs to the next one.
    pub fn scanning(&mut self, now: Instant) {
        self.last_scan = Some(now);
        self.first_change = None;
        self.changed.clear();
        self.overflow = false;
    }

    /// What to do at `now`.
    pub fn decide(&self, now: Instant) -> Decision {
        let Some(last_scan) = self.last_scan else {
            return Decision::Scan(Reason::Start);
        };
        if self.overflow {
            return Decision::Scan(Reason::Overflow);
        }
        if self.changed.len() >= self.policy.change_threshold {
            return Decision::Scan(Reason::Threshold);
        }
        let publish_at = self.first_change.map(|first| first + self.policy.interval);
        if publish_at.is_some_and(|at| now >= at) {
            return Decision::Scan(Reason::Interval);
        }
        let rescan_every = if self.watching { FULL_RESCAN_INTERVAL } else { self.policy.interval };
        let rescan_at = last_scan + rescan_every;
        if now >= rescan_at {
            return Decision::Scan(Reason::Rescan);
        }
        Decision::WaitUntil(publish_at.map_or(rescan_at, |at| at.min(rescan_at)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn started(policy: Policy) -> (PublishState, Instant) {
        let mut state = PublishState::new(policy);
        let t0 = Instant::now();
        assert_eq!(state.decide(t0), Decision::Scan(Reason::Start));
        state.scanning(t0);
        (state, t0)
    }

    #[test]
    fn an_idle_tree_waits_for_the_periodic_rescan_only() {
        let (mut state, t0) = started(Policy::default());
        assert_eq!(state.decide(t0 + S), Decision::WaitUntil(t0 + FULL_RESCAN_INTERVAL));
        assert_eq!(state.decide(t0 + FULL_RESCAN_INTERVAL), Decision::Scan(Reason::Rescan));
        state.scanning(t0 + FULL_RESCAN_INTERVAL);
        assert_eq!(state.decide(t0 + FULL_RESCAN_INTERVAL + S), Decision::WaitUntil(t0 + 2 * FULL_RESCAN_INTERVAL));
    }

    #[test]
    fn a_change_is_published_one_interval_after_it_was_noticed() {
        let (mut state, t0) = started(Policy { interval: 5 * S, change_threshold: 1000 });
        state.noticed(t0 + 2 * S, [&b"a"[..]]);
        // Later changes do not push the deadline back.
        state.noticed(t0 + 6 * S, [&b"b"[..]]);
        assert_eq!(state.decide(t0 + 6 * S), Decision::WaitUntil(t0 + 7 * S));
        assert_eq!(state.decide(t0 + 7 * S), Decision::Scan(Reason::Interval));
        // Changes noticed after the scan started wait for their own interval.
        state.scanning(t0 + 7 * S);
        state.noticed(t0 + 8 * S, [&b"c"[..]]);
        assert_eq!(state.decide(t0 + 8 * S), Decision::WaitUntil(t0 + 13 * S));
    }

    #[test]
    fn the_change_threshold_publishes_before_the_interval_ends() {
        let (mut state, t0) = started(Policy { interval: 30 * S, change_threshold: 1000 });
        let names: Vec<Vec<u8>> = (0..999).map(|n| format!("f{n}").into_bytes()).collect();
        state.noticed(t0 + S, names.iter().map(Vec::as_slice));
        // The same path again is not a new change.
        state.noticed(t0 + S, [&b"f0"[..], b"f1"]);
        assert_eq!(state.decide(t0 + S), Decision::WaitUntil(t0 + 31 * S));
        state.noticed(t0 + 2 * S, [&b"the-1000th"[..]]);
        assert_eq!(state.decide(t0 + 2 * S), Decision::Scan(Reason::Threshold));
    }

    #[test]
    fn lost_notifications_mean_a_full_scan_now() {
        let (mut state, t0) = started(Policy::default());
        state.overflowed();
        assert_eq!(state.decide(t0 + S), Decision::Scan(Reason::Overflow));
        state.scanning(t0 + S);
        assert_eq!(state.decide(t0 + 2 * S), Decision::WaitUntil(t0 + S + FULL_RESCAN_INTERVAL));
    }

    #[test]
    fn without_a_watcher_the_tree_is_rescanned_every_interval() {
        let (mut state, t0) = started(Policy { interval: 10 * S, change_threshold: 1000 });
        state.watching(false);
        assert_eq!(state.decide(t0 + S), Decision::WaitUntil(t0 + 10 * S));
        assert_eq!(state.decide(t0 + 10 * S), Decision::Scan(Reason::Rescan));
    }

    #[test]
    fn memory_is_bounded_by_the_threshold_whatever_the_burst() {
        let (mut state, t0) = started(Policy { interval: 5 * S, change_threshold: 10 });
        let names: Vec<Vec<u8>> = (0..100_000).map(|n| format!("f{n}").into_bytes()).collect();
        state.noticed(t0, names.iter().map(Vec::as_slice));
        assert_eq!(state.changed.len(), 10);
        assert_eq!(state.decide(t0), Decision::Scan(Reason::Threshold));
    }
}
