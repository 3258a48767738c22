//! Capped exponential back-off with full jitter, as an `Iterator<Item = Duration>`.
//!
//! The retry loop in [`crate::Client`] sleeps `next()` between full rounds over the
//! endpoint list. With *full* jitter the sleep is drawn uniformly from
//! `[0, min(cap, base * 2^attempt)]`: when a leader dies, every agent of a fleet notices at
//! once, and spreading their retries over the whole window (rather than around its top, as
//! "equal jitter" would) is what keeps them from arriving at the new leader in waves.
//!
//! The iterator never ends; the caller bounds the number of attempts and the total time.
//! The random source is a parameter so tests (and the simulator) get a fixed sequence.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::Rng;
use rand::SeedableRng;

/// Parameters of the back-off: the first window and the largest one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Upper bound of the first sleep; doubles after each round.
    pub base: Duration,
    /// No sleep is ever longer than this.
    pub cap: Duration,
}

/// Default first window: an election on a LAN settles within a few hundred milliseconds,
/// so the first retries come quickly.
pub const BACKOFF_BASE_DEFAULT: Duration = Duration::from_millis(50);

/// Default largest window: long enough that a fleet of agents does not hammer a cluster
/// that is down, short enough that they return within seconds once it is back.
pub const BACKOFF_CAP_DEFAULT: Duration = Duration::from_secs(2);

impl Default for Backoff {
    fn default() -> Self {
        Backoff { base: BACKOFF_BASE_DEFAULT, cap: BACKOFF_CAP_DEFAULT }
    }
}

impl Backoff {
    /// An iterator of sleeps seeded from the operating system.
    pub fn iter(&self) -> BackoffIter<StdRng> {
        self.iter_with_rng(StdRng::from_os_rng())
    }

    /// An iterator of sleeps drawn from `rng`: the same seed gives the same sequence.
    pub fn iter_with_rng<R: Rng>(&self, rng: R) -> BackoffIter<R> {
        BackoffIter { base: self.base, cap: self.cap, attempt: 0, rng }
    }

    /// The window the sleep after `attempt` failed rounds is drawn from (upper bound,
    /// inclusive): `min(cap, base * 2^attempt)`, without overflow for any `attempt`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }
}

/// The sleeps of one retry loop; see the module docs.
#[derive(Debug, Clone)]
pub struct BackoffIter<R> {
    base: Duration,
    cap: Duration,
    attempt: u32,
    rng: R,
}

impl<R: Rng> Iterator for BackoffIter<R> {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let ceiling = Backoff { base: self.base, cap: self.cap }.ceiling(self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        // Durations beyond u64 nanoseconds (584 years) are clamped, not wrapped.
        let ceiling_nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        let sleep_nanos = self.rng.random_range(0..=ceiling_nanos);
        Some(Duration::from_nanos(sleep_nanos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backoff(base_ms: u64, cap_ms: u64) -> Backoff {
        Backoff { base: Duration::from_millis(base_ms), cap: Duration::from_millis(cap_ms) }
    }

    #[test]
    fn ceiling_doubles_then_stays_at_the_cap() {
        let b = backoff(10, 1000);
        let ceilings: Vec<u64> = (0..10).map(|a| b.ceiling(a).as_millis() as u64).collect();
        assert_eq!(ceilings, [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000]);
    }

    #[test]
    fn ceiling_does_not_overflow_for_huge_attempts() {
        let b = backoff(10, 1000);
        assert_eq!(b.ceiling(31), Duration::from_millis(1000));
        assert_eq!(b.ceiling(32), Duration::from_millis(1000));
        assert_eq!(b.ceiling(u32::MAX), Duration::from_millis(1000));
        let huge = Backoff { base: Duration::MAX, cap: Duration::MAX };
        assert_eq!(huge.ceiling(u32::MAX), Duration::MAX);
        // The iterator clamps durations beyond u64 nanoseconds instead of panicking.
        let mut iter = huge.iter_with_rng(StdRng::seed_from_u64(1));
        assert!(iter.next().is_some());
    }

    /// Full jitter: every sleep lies in [0, ceiling(attempt)], never above the cap.
    #[test]
    fn every_sleep_is_within_its_window() {
        let b = backoff(10, 500);
        for seed in 0..50 {
            for (attempt, sleep) in b.iter_with_rng(StdRng::seed_from_u64(seed)).take(40).enumerate() {
                assert!(sleep <= b.ceiling(attempt as u32), "seed {seed} attempt {attempt}: {sleep:?}");
                assert!(sleep <= b.cap);
            }
        }
    }

    /// The jitter spreads over the whole window (not just its top): over many draws at the
    /// capped window both the lower and the upper quarter are hit.
    #[test]
    fn jitter_covers_the_window() {
        let b = backoff(1000, 1000);
        let sleeps: Vec<Duration> = b.iter_with_rng(StdRng::seed_from_u64(7)).take(200).collect();
        assert!(sleeps.iter().any(|s| *s < Duration::from_millis(250)));
        assert!(sleeps.iter().any(|s| *s > Duration::from_millis(750)));
        let distinct: std::collections::BTreeSet<_> = sleeps.iter().collect();
        assert!(distinct.len() > 150, "draws are not random: {} distinct", distinct.len());
    }

    #[test]
    fn same_seed_same_sequence() {
        let b = backoff(10, 1000);
        let first: Vec<_> = b.iter_with_rng(StdRng::seed_from_u64(42)).take(20).collect();
        let second: Vec<_> = b.iter_with_rng(StdRng::seed_from_u64(42)).take(20).collect();
        let other: Vec<_> = b.iter_with_rng(StdRng::seed_from_u64(43)).take(20).collect();
        assert_eq!(first, second);
        assert_ne!(first, other);
    }

    #[test]
    fn zero_base_never_sleeps() {
        let b = backoff(0, 1000);
        assert!(b.iter_with_rng(StdRng::seed_from_u64(0)).take(10).all(|s| s.is_zero()));
    }
}
