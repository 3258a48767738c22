//! The holder's count of consecutive check failures (seed 004: "when the primary server
//! fails, the role automatically switches to the next server on the list").
//!
//! ```text
//!   check ok ──────────────▶ Passing (count back to 0)
//!   check failed, n < N ───▶ Failing { n of N }
//!   check failed, n = N ───▶ Failed: the holder stops the role and releases it as
//!                             failed (event RoleFailed); the primary places it on the
//!                             next server (event RoleMoved)
//! ```

/// What the last check result means for the role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckVerdict {
    Passing,
    /// Failed `consecutive` times in a row, fewer than the `allowed` failures.
    Failing {
        consecutive: u64,
        allowed: u64,
    },
    /// Failed `allowed` times in a row: move the role.
    Failed {
        reason: String,
    },
}

/// Consecutive failures of one role's check on its holder (one placement: a new epoch
/// starts a new counter).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckCounter {
    consecutive_failures: u64,
}

impl CheckCounter {
    /// Takes in one check result (`detail`: its exit code or timeout, for the reason);
    /// `allowed` is the role's `check_failures`.
    pub fn record(&mut self, passed: bool, detail: &str, allowed: u64) -> CheckVerdict {
        if passed {
            self.consecutive_failures = 0;
            return CheckVerdict::Passing;
        }
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        if self.consecutive_failures >= allowed.max(1) {
            return CheckVerdict::Failed {
                reason: format!("the check failed {} time(s) in a row; the last: {detail}", self.consecutive_failures),
            };
        }
        CheckVerdict::Failing { consecutive: self.consecutive_failures, allowed }
    }

    pub fn consecutive_failures(&self) -> u64 {
        self.consecutive_failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sequence of results and the verdict after each, with 3 allowed failures.
    #[test]
    fn consecutive_failures_table() {
        let failing = |consecutive| CheckVerdict::Failing { consecutive, allowed: 3 };
        let mut counter = CheckCounter::default();
        let results = [false, false, true, false, false, false];
        let verdicts: Vec<CheckVerdict> =
            results.iter().map(|&passed| counter.record(passed, "exit code 1", 3)).collect();
        assert_eq!(verdicts[..5], [failing(1), failing(2), CheckVerdict::Passing, failing(1), failing(2)]);
        assert_eq!(
            verdicts[5],
            CheckVerdict::Failed { reason: "the check failed 3 time(s) in a row; the last: exit code 1".into() }
        );
        // One allowed failure: the first failure moves the role.
        let mut strict = CheckCounter::default();
        assert!(matches!(strict.record(false, "timed out", 1), CheckVerdict::Failed { .. }));
        assert_eq!(strict.consecutive_failures(), 1);
    }
}
