//! Aggregating repeated log lines: the first of a kind is logged, the repeats within an
//! interval are counted and reported in one line.
//!
//! ```text
//!   event(key, now) ──▶ LogLimiter::admit ──▶ Log { suppressed: n }  (write the line, say
//!                                         │                           n were left out)
//!                                         └──▶ Suppress               (count it)
//!   tick(now) ──────▶ LogLimiter::flush ──▶ [(key, n)] for windows that ended with
//!                                            repeats nobody has reported yet
//! ```
//!
//! Log lines that strangers or a dead peer can make a node repeat (refused handshakes,
//! refused peer requests, failed authentications, an unreachable member, a detached node's
//! refusals) would otherwise let one client write megabytes of log a second. Keys are kinds
//! of events (a reason and, say, a remote address), bounded by `keys_max`: when full, the
//! oldest window is dropped and its repeats are reported by the next flush.
//!
//! Pure: the caller passes the time in (ms on any monotonic clock).

use std::collections::BTreeMap;

/// What to do with one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Write the line; `suppressed` events of this key were left out since the last line.
    Log { suppressed: u64 },
    /// Leave it out (it is counted).
    Suppress,
}

#[derive(Debug, Clone)]
struct Window {
    started_ms: u64,
    suppressed: u64,
}

/// Per key, at most one line per `interval_ms`, plus one summary of the repeats.
#[derive(Debug, Clone)]
pub struct LogLimiter<K> {
    interval_ms: u64,
    keys_max: usize,
    windows: BTreeMap<K, Window>,
    /// Repeats of windows evicted while the table was full, reported by the next flush.
    evicted_suppressed: u64,
}

impl<K: Ord + Clone> LogLimiter<K> {
    /// `keys_max` is at least 1.
    pub fn new(interval_ms: u64, keys_max: usize) -> LogLimiter<K> {
        LogLimiter { interval_ms, keys_max: keys_max.max(1), windows: BTreeMap::new(), evicted_suppressed: 0 }
    }

    pub fn interval_ms(&self) -> u64 {
        self.interval_ms
    }

    /// Decides about one event of kind `key` at `now_ms`.
    pub fn admit(&mut self, key: K, now_ms: u64) -> Admit {
        if let Some(window) = self.windows.get_mut(&key) {
            if now_ms.saturating_sub(window.started_ms) < self.interval_ms {
                window.suppressed += 1;
                return Admit::Suppress;
            }
            let suppressed = window.suppressed;
            *window = Window { started_ms: now_ms, suppressed: 0 };
            return Admit::Log { suppressed };
        }
        if self.windows.len() >= self.keys_max {
            let oldest = self.windows.iter().min_by_key(|(_, window)| window.started_ms).map(|(key, _)| key.clone());
            if let Some(oldest) = oldest {
                if let Some(window) = self.windows.remove(&oldest) {
                    self.evicted_suppressed += window.suppressed;
                }
            }
        }
        self.windows.insert(key, Window { started_ms: now_ms, suppressed: 0 });
        Admit::Log { suppressed: 0 }
    }

    /// The repeats nobody has reported yet of windows that ended by `now_ms`, by key (plus,
    /// with key `None`, those of windows evicted from a full table). Ended windows are
    /// forgotten, so the next event of their kind is logged again at once.
    pub fn flush(&mut self, now_ms: u64) -> Vec<(Option<K>, u64)> {
        let mut report = Vec::new();
        let interval_ms = self.interval_ms;
        self.windows.retain(|key, window| {
            if now_ms.saturating_sub(window.started_ms) < interval_ms {
                return true;
            }
            if window.suppressed > 0 {
                report.push((Some(key.clone()), window.suppressed));
            }
            false
        });
        if self.evicted_suppressed > 0 {
            report.push((None, std::mem::take(&mut self.evicted_suppressed)));
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_is_logged_repeats_are_counted_and_reported_once() {
        let mut limiter = LogLimiter::new(1000, 8);
        assert_eq!(limiter.admit("refused", 0), Admit::Log { suppressed: 0 });
        for at in 1..100 {
            assert_eq!(limiter.admit("refused", at), Admit::Suppress);
        }
        // Another kind is not held back by the first.
        assert_eq!(limiter.admit("other", 50), Admit::Log { suppressed: 0 });
        // The next event after the interval is logged with the count of those left out.
        assert_eq!(limiter.admit("refused", 1000), Admit::Log { suppressed: 99 });
        assert_eq!(limiter.admit("refused", 1001), Admit::Suppress);
        // A flush after the window reports the one repeat, and forgets the window.
        assert_eq!(limiter.flush(1500), vec![]);
        assert_eq!(limiter.flush(2000), vec![(Some("refused"), 1)]);
        assert_eq!(limiter.flush(5000), vec![]);
        assert_eq!(limiter.admit("refused", 5001), Admit::Log { suppressed: 0 });
    }

    /// A flood of events over many keys writes at most one line per key and interval, and
    /// the table stays bounded; the repeats of evicted windows are still reported.
    #[test]
    fn lines_are_bounded_per_interval_and_keys_are_bounded() {
        let mut limiter = LogLimiter::new(1000, 4);
        let mut lines = 0;
        let mut left_out = 0;
        for at in 0..10_000u64 {
            match limiter.admit(at % 3, at / 10) {
                Admit::Log { suppressed } => {
                    lines += 1;
                    left_out += suppressed;
                }
                Admit::Suppress => {}
            }
        }
        // The clock ran 0..=999 ms, within one interval: exactly one line per key.
        assert_eq!(lines, 3);
        assert_eq!(left_out, 0);
        let flushed: u64 = limiter.flush(10_000).iter().map(|(_, n)| n).sum();
        assert_eq!(flushed + lines, 10_000, "every event is either a line or counted in a summary");
        for key in 0..100u64 {
            limiter.admit(key, 20_000);
        }
        assert_eq!(limiter.windows.len(), 4);
        assert_eq!(limiter.admit(0, 20_001), Admit::Log { suppressed: 0 }, "evicted, so new again");
        assert_eq!(limiter.admit(99, 20_001), Admit::Suppress, "among the newest, kept");
    }
}
