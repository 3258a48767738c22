//! The one rate-limited, aggregating log helper (the decisions are
//! `haven_core::log_limit::LogLimiter`; this adds the clock, a lock and the summary lines).
//!
//! Every log line a stranger, a misbehaving member or a dead peer can make a node repeat
//! goes through one of these: refused handshakes and connections, refused peer requests,
//! failed authentications, unreachable members, a detached node's refusals. The first line
//! of a kind is written as it is; repeats within `interval` are counted, and written as one
//! summary line ("N more like it in the last S s") when the interval is over (at the next
//! event of any kind, or when the owner calls [`RateLimitedLog::flush`] on its tick).

use std::fmt::Display;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use haven_core::log_limit::Admit;
use haven_core::log_limit::LogLimiter;

/// Kinds of events one helper tells apart (for example reason and remote address): far
/// more than a real cluster produces, few enough that the table stays a few KiB.
pub const LOG_KINDS_MAX: usize = 256;

/// The usual interval: a flood costs at most one line per kind and 10 s, which keeps logs
/// readable and small, while an operator watching a new problem sees its first line at once.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Severity of the lines of one helper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
}

pub struct RateLimitedLog<K> {
    /// What the lines are about, for the summary line ("peer request refused").
    what: &'static str,
    level: Level,
    interval: Duration,
    started: Instant,
    state: Mutex<(LogLimiter<K>, u64)>,
}

impl<K: Ord + Clone + Display> RateLimitedLog<K> {
    pub fn new(what: &'static str, level: Level, interval: Duration) -> RateLimitedLog<K> {
        let interval_ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
        RateLimitedLog {
            what,
            level,
            interval,
            started: Instant::now(),
            state: Mutex::new((LogLimiter::new(interval_ms, LOG_KINDS_MAX), 0)),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// One event of kind `key`: `Some(n)` means write its line now (and say that `n` like it
    /// were left out since the last one); `None` means leave it out (it is counted).
    pub fn admit(&self, key: K) -> Option<u64> {
        let now_ms = self.now_ms();
        let (decision, report) = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let (limiter, last_flush_ms) = &mut *state;
            let report = if now_ms.saturating_sub(*last_flush_ms) >= limiter.interval_ms() {
                *last_flush_ms = now_ms;
                limiter.flush(now_ms)
            } else {
                Vec::new()
            };
            (limiter.admit(key, now_ms), report)
        };
        self.report(report);
        match decision {
            Admit::Log { suppressed } => Some(suppressed),
            Admit::Suppress => None,
        }
    }

    /// Writes the summary lines of the intervals that are over.
    pub fn flush(&self) {
        let now_ms = self.now_ms();
        let report = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            state.1 = now_ms;
            state.0.flush(now_ms)
        };
        self.report(report);
    }

    fn report(&self, report: Vec<(Option<K>, u64)>) {
        let seconds = self.interval.as_secs_f64();
        for (key, repeated) in report {
            let kind = key.map_or_else(|| "(various)".to_string(), |key| key.to_string());
            match self.level {
                Level::Warn => {
                    tracing::warn!(kind = %kind, repeated, "{}: {repeated} more like it in the last {seconds} s", self.what)
                }
                Level::Info => {
                    tracing::info!(kind = %kind, repeated, "{}: {repeated} more like it in the last {seconds} s", self.what)
                }
            }
        }
    }
}

/// A value for a log line from text another party chose (a peer's reason, a join body's
/// URL): control characters, quotes and backslashes escaped, and at most
/// `LOGGED_TEXT_CHARS_MAX` characters, so it can neither forge a log line nor flood one.
pub fn escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(LOGGED_TEXT_CHARS_MAX) + 2);
    for (count, c) in text.chars().enumerate() {
        if count == LOGGED_TEXT_CHARS_MAX {
            out.push_str("...");
            break;
        }
        out.extend(c.escape_debug());
    }
    out
}

/// Longest text from another party written into one log line.
pub const LOGGED_TEXT_CHARS_MAX: usize = 256;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_text_cannot_forge_a_line() {
        let forged = "x\n2025-01-01T00:00:00Z  INFO haven: admin token created\r\u{1b}[31m";
        let text = escaped(forged);
        assert!(!text.contains('\n') && !text.contains('\r') && !text.contains('\u{1b}'), "{text}");
        assert!(text.contains("\\n"), "{text}");
        let long = escaped(&"a".repeat(10_000));
        assert_eq!(long.len(), LOGGED_TEXT_CHARS_MAX + 3);
    }

    #[test]
    fn repeats_are_left_out_within_the_interval() {
        let log: RateLimitedLog<&'static str> = RateLimitedLog::new("test", Level::Warn, Duration::from_secs(3600));
        assert_eq!(log.admit("a"), Some(0));
        for _ in 0..1000 {
            assert_eq!(log.admit("a"), None);
        }
        assert_eq!(log.admit("b"), Some(0));
    }
}
