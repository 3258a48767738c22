//! One holder at a time, judged from what the role's processes wrote themselves.
//!
//! The test role of issue 17 appends `NODE EPOCH START` to a shared file when it starts
//! and `NODE EPOCH STOP` when it stops (on SIGTERM, before it exits). Appends of a short
//! line to one file are atomic and ordered, so the file is the order in which copies of the
//! role began and ended, whichever node they ran on. From it:
//!
//! - **No overlap.** A START while another copy has started and not stopped: two nodes
//!   (or two epochs) ran the role at once. A copy that never wrote STOP (killed with
//!   SIGKILL, its machine lost) counts as running until the end of the file: the file
//!   cannot prove it ended, so a later START is an overlap.
//! - **Epochs only increase.** Every START carries an epoch above every earlier START's:
//!   no placement is reused or goes back, and a node never restarts an old epoch.
//! - **Stops match.** A STOP names the copy that is running (same node and epoch).
//! - **Lines parse.** Anything else (a torn line, a typo) is reported, never skipped.
//!
//! ```text
//!   1 1 START   ─┐
//!   1 1 STOP    ─┘ holder 1, epoch 1
//!   2 2 START   ─┐
//!   3 3 START    │ ◀── overlap: node 2 (epoch 2) still running
//!   2 2 STOP    ─┘ ◀── (and this STOP no longer names the running copy)
//! ```
//!
//! Pure: it reads text it is given. No input makes it panic.

use std::fmt;

use serde::Serialize;

/// One copy of the role: the node it ran on and its epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RoleCopy {
    pub node: u64,
    pub epoch: u64,
}

impl fmt::Display for RoleCopy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node {} epoch {}", self.node, self.epoch)
    }
}

/// A broken rule, with the line (1-based) where it shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum HolderProblem {
    /// `started` began while `running` had not stopped.
    Overlap { line: usize, running: RoleCopy, started: RoleCopy },
    /// `started`'s epoch is not above `highest`, the highest epoch started before.
    EpochNotIncreasing { line: usize, started: RoleCopy, highest: u64 },
    /// A STOP of a copy that is not the one running (`running`: what is, if any).
    UnmatchedStop { line: usize, stopped: RoleCopy, running: Option<RoleCopy> },
    /// Not `NODE EPOCH START|STOP`.
    Malformed { line: usize, text: String },
}

impl fmt::Display for HolderProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HolderProblem::Overlap { line, running, started } => {
                write!(f, "line {line}: {started} started while {running} was still running: two holders at once")
            }
            HolderProblem::EpochNotIncreasing { line, started, highest } => {
                write!(f, "line {line}: {started} started, but epoch {highest} had already been started")
            }
            HolderProblem::UnmatchedStop { line, stopped, running: Some(running) } => {
                write!(f, "line {line}: {stopped} stopped, but the copy running was {running}")
            }
            HolderProblem::UnmatchedStop { line, stopped, running: None } => {
                write!(f, "line {line}: {stopped} stopped, but no copy was running")
            }
            HolderProblem::Malformed { line, text } => {
                write!(f, "line {line}: {text:?} is not `NODE EPOCH START` or `NODE EPOCH STOP`")
            }
        }
    }
}

/// Problems reported at most: one broken rule tends to break the following lines too;
/// the first hundred say what happened, and the report stays small.
pub const HOLDER_PROBLEMS_MAX: usize = 100;

/// What the file shows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HolderReport {
    pub starts: usize,
    pub stops: usize,
    /// The copy still running at the end of the file (the current holder), if any.
    pub running_at_end: Option<RoleCopy>,
    /// At most [`HOLDER_PROBLEMS_MAX`]; `problems_total` counts them all.
    pub problems: Vec<HolderProblem>,
    pub problems_total: usize,
}

impl HolderReport {
    /// True only when every line parsed, no two copies overlapped, epochs only increased
    /// and every STOP matched.
    pub fn passed(&self) -> bool {
        self.problems_total == 0
    }

    fn problem(&mut self, problem: HolderProblem) {
        self.problems_total += 1;
        if self.problems.len() < HOLDER_PROBLEMS_MAX {
            self.problems.push(problem);
        }
    }
}

enum Event {
    Start,
    Stop,
}

fn parse(line: &str) -> Option<(RoleCopy, Event)> {
    let mut words = line.split_whitespace();
    let node = words.next()?.parse().ok()?;
    let epoch = words.next()?.parse().ok()?;
    let event = match words.next()? {
        "START" => Event::Start,
        "STOP" => Event::Stop,
        _ => return None,
    };
    words.next().is_none().then_some((RoleCopy { node, epoch }, event))
}

/// Checks a shared `NODE EPOCH START/STOP` file (see the module docs). Empty lines are
/// ignored (a file ends with a newline).
pub fn check_holders(text: &str) -> HolderReport {
    let mut report = HolderReport::default();
    let mut running: Option<RoleCopy> = None;
    let mut highest: Option<u64> = None;
    for (index, line) in text.lines().enumerate() {
        let line_number = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        let Some((copy, event)) = parse(line) else {
            let text: String = line.chars().take(200).collect();
            report.problem(HolderProblem::Malformed { line: line_number, text });
            continue;
        };
        match event {
            Event::Start => {
                report.starts += 1;
                if let Some(previous) = highest.filter(|&highest| copy.epoch <= highest) {
                    report.problem(HolderProblem::EpochNotIncreasing {
                        line: line_number,
                        started: copy,
                        highest: previous,
                    });
                }
                highest = Some(highest.map_or(copy.epoch, |highest| highest.max(copy.epoch)));
                if let Some(other) = running {
                    report.problem(HolderProblem::Overlap { line: line_number, running: other, started: copy });
                }
                running = Some(copy);
            }
            Event::Stop => {
                report.stops += 1;
                if running == Some(copy) {
                    running = None;
                } else {
                    report.problem(HolderProblem::UnmatchedStop { line: line_number, stopped: copy, running });
                }
            }
        }
    }
    report.running_at_end = running;
    report
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// A correct history: holders one after the other, epochs increasing, the last one
    /// still running.
    #[test]
    fn a_correct_file_passes() {
        let text = "1 1 START\n1 1 STOP\n2 2 START\n2 2 STOP\n2 5 START\n2 5 STOP\n3 6 START\n";
        let report = check_holders(text);
        assert!(report.passed(), "{report:?}");
        assert_eq!((report.starts, report.stops), (4, 3));
        assert_eq!(report.running_at_end, Some(RoleCopy { node: 3, epoch: 6 }));
        assert!(check_holders("").passed());
    }

    /// The issue's hand-made overlapping file is flagged, with the two copies named.
    #[test]
    fn a_hand_made_overlapping_file_fails() {
        let text = "1 1 START\n1 1 STOP\n2 2 START\n3 3 START\n2 2 STOP\n3 3 STOP\n";
        let report = check_holders(text);
        assert!(!report.passed());
        assert_eq!(
            report.problems,
            vec![
                HolderProblem::Overlap {
                    line: 4,
                    running: RoleCopy { node: 2, epoch: 2 },
                    started: RoleCopy { node: 3, epoch: 3 },
                },
                HolderProblem::UnmatchedStop {
                    line: 5,
                    stopped: RoleCopy { node: 2, epoch: 2 },
                    running: Some(RoleCopy { node: 3, epoch: 3 }),
                },
            ]
        );
        assert_eq!(
            report.problems[0].to_string(),
            "line 4: node 3 epoch 3 started while node 2 epoch 2 was still running: two holders at once"
        );
    }

    /// Each rule on its own: (file, the problems' kinds).
    #[test]
    fn broken_rules_table() {
        let cases: &[(&str, &str, &[&str])] = &[
            ("a killed copy (no STOP) then another", "1 1 START\n2 2 START\n", &["overlap"]),
            ("the same node twice", "1 1 START\n1 2 START\n", &["overlap"]),
            ("an epoch going back", "1 5 START\n1 5 STOP\n2 4 START\n2 4 STOP\n", &["epoch"]),
            ("an epoch restarted", "1 5 START\n1 5 STOP\n1 5 START\n", &["epoch"]),
            ("a stop of nothing", "1 1 STOP\n", &["stop"]),
            ("a stop of another epoch", "1 1 START\n1 2 STOP\n", &["stop"]),
            ("a torn line", "1 1 START\n1 1 ST\n", &["malformed"]),
            ("extra words", "1 1 START now\n", &["malformed"]),
            ("not numbers", "n1 e1 START\n", &["malformed"]),
        ];
        for (name, text, kinds) in cases {
            let report = check_holders(text);
            let actual: Vec<&str> = report
                .problems
                .iter()
                .map(|problem| match problem {
                    HolderProblem::Overlap { .. } => "overlap",
                    HolderProblem::EpochNotIncreasing { .. } => "epoch",
                    HolderProblem::UnmatchedStop { .. } => "stop",
                    HolderProblem::Malformed { .. } => "malformed",
                })
                .collect();
            assert_eq!(&actual, kinds, "{name}: {report:?}");
        }
    }

    #[test]
    fn problems_are_bounded() {
        let text = "1 1 STOP\n".repeat(HOLDER_PROBLEMS_MAX + 10);
        let report = check_holders(&text);
        assert_eq!(report.problems.len(), HOLDER_PROBLEMS_MAX);
        assert_eq!(report.problems_total, HOLDER_PROBLEMS_MAX + 10);
    }

    /// Holders one after the other; each `(node, gap)` starts `gap` epochs above the last.
    fn history(holders: &[(u64, u64)]) -> String {
        let mut text = String::new();
        let mut epoch = 0;
        for &(node, gap) in holders {
            epoch += gap;
            text.push_str(&format!("{node} {epoch} START\n{node} {epoch} STOP\n"));
        }
        text
    }

    proptest! {
        /// Any sequential history with increasing epochs passes; moving any STOP after
        /// the next START (an overlap) fails.
        #[test]
        fn sequential_histories_pass_and_any_overlap_fails(
            holders in proptest::collection::vec((1u64..8, 1u64..4), 2..40),
            pick in any::<prop::sample::Index>(),
        ) {
            let text = history(&holders);
            prop_assert!(check_holders(&text).passed());
            // Swap one STOP with the START that follows it.
            let mut lines: Vec<&str> = text.lines().collect();
            let stop = 2 * pick.index(holders.len() - 1) + 1;
            lines.swap(stop, stop + 1);
            let broken = lines.join("\n");
            let report = check_holders(&broken);
            prop_assert!(!report.passed());
            let overlap_found = report.problems.iter().any(|problem| matches!(problem, HolderProblem::Overlap { .. }));
            prop_assert!(overlap_found);
        }
    }
}
