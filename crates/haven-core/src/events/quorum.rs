//! NoQuorum with its start and end: a stretch without quorum cannot be recorded while it
//! lasts (recording needs a quorum), so the node that saw it remembers when it began and
//! the first leader after it records `NoQuorum { start, end }` and `QuorumRestored`.
//!
//! ```text
//!   observe(quorum: false, t0) ... observe(false, t1) ... observe(true, t2)
//!        │ lost since t0                                  │ back: lasted t2 - t0
//!        ▼                                                ▼
//!      (nothing: a normal election is shorter      ≥ min ──▶ [NoQuorum{t0, t2}, QuorumRestored]
//!       than the minimum)                          < min ──▶ nothing
//! ```

use crate::events::EventKind;

/// A node's memory of when it last lost quorum (its own wall clock, ms since the Unix
/// epoch, so the recorded times read as dates).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuorumWatch {
    lost_since_ms: Option<u64>,
}

impl QuorumWatch {
    /// Takes in whether this node sees a quorum (it leads one, or follows a leader that
    /// does) at `now_ms`. Once a quorum is back after at least `min_ms` without one (the
    /// longest election timeout: a normal election is not an outage), returns the events
    /// to record, with `leader` the node now leading.
    pub fn observe(&mut self, quorum: bool, now_ms: u64, min_ms: u64, leader: u64) -> Vec<EventKind> {
        match (quorum, self.lost_since_ms) {
            (false, None) => {
                self.lost_since_ms = Some(now_ms);
                Vec::new()
            }
            (false, Some(_)) | (true, None) => Vec::new(),
            (true, Some(start_ms)) => {
                self.lost_since_ms = None;
                if now_ms.saturating_sub(start_ms) < min_ms {
                    return Vec::new();
                }
                vec![EventKind::NoQuorum { start_ms, end_ms: now_ms }, EventKind::QuorumRestored { leader }]
            }
        }
    }

    /// When quorum was lost, if it is lost now.
    pub fn lost_since_ms(&self) -> Option<u64> {
        self.lost_since_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (has quorum, now) steps and the events each produces.
    #[test]
    fn quorum_watch_table() {
        let min_ms = 1_000;
        // (name, (has quorum, now) steps, events)
        type Case = (&'static str, Vec<(bool, u64)>, Vec<EventKind>);
        let cases: Vec<Case> = vec![
            ("never lost", vec![(true, 0), (true, 5_000)], vec![]),
            ("an election, shorter than the minimum", vec![(false, 100), (false, 600), (true, 1_099)], vec![]),
            (
                "exactly the minimum",
                vec![(false, 100), (true, 1_100)],
                vec![EventKind::NoQuorum { start_ms: 100, end_ms: 1_100 }, EventKind::QuorumRestored { leader: 2 }],
            ),
            (
                "the start is the first loss, not the last observation",
                vec![(false, 100), (false, 5_000), (false, 9_000), (true, 10_000)],
                vec![EventKind::NoQuorum { start_ms: 100, end_ms: 10_000 }, EventKind::QuorumRestored { leader: 2 }],
            ),
            (
                "two outages, two records",
                vec![(false, 0), (true, 2_000), (true, 3_000), (false, 4_000), (true, 9_000)],
                vec![
                    EventKind::NoQuorum { start_ms: 0, end_ms: 2_000 },
                    EventKind::QuorumRestored { leader: 2 },
                    EventKind::NoQuorum { start_ms: 4_000, end_ms: 9_000 },
                    EventKind::QuorumRestored { leader: 2 },
                ],
            ),
        ];
        for (name, steps, expected) in cases {
            let mut watch = QuorumWatch::default();
            let events: Vec<EventKind> =
                steps.into_iter().flat_map(|(quorum, now_ms)| watch.observe(quorum, now_ms, min_ms, 2)).collect();
            assert_eq!(events, expected, "{name}");
        }
        let mut watch = QuorumWatch::default();
        watch.observe(false, 42, min_ms, 1);
        assert_eq!(watch.lost_since_ms(), Some(42));
    }
}
