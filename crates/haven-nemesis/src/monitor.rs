//! The status monitor: every node's `/v1/status`, ten times a second, for the whole run.
//!
//! From these rounds the harness judges two things:
//!
//! - **Dual primaries.** A primary is a node in state `leader` that has heard from a quorum
//!   within the election timeout (`leader_has_quorum`). Two different nodes claiming that in
//!   two consecutive rounds (at least one monitor interval of overlap) is counted as one dual
//!   primary incident. One round alone is not: the nodes are asked a few milliseconds apart,
//!   so a hand-over can be seen from both sides without ever overlapping. (Two leaders in
//!   one term are legal here: openraft's leader id is the pair (term, node).)
//! - **Failover time.** After a fault that takes the primary away, the time until another
//!   node is primary (any node, after a power cut).

use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::api;
use crate::config::MONITOR_INTERVAL;
use crate::workload::Clock;

/// One node's answer in one round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    pub term: u64,
    pub is_leader: bool,
    pub has_quorum: bool,
    pub leader: Option<u64>,
    pub applied_index: u64,
}

impl NodeView {
    pub fn is_primary(&self) -> bool {
        self.is_leader && self.has_quorum
    }
}

/// Every node's answer at one moment (`None`: no answer in time).
#[derive(Debug, Clone)]
pub struct Round {
    pub at: Duration,
    pub views: Vec<Option<NodeView>>,
}

impl Round {
    /// Indexes of the nodes claiming to be primary.
    pub fn primaries(&self) -> Vec<usize> {
        self.views.iter().enumerate().filter(|(_, v)| v.as_ref().is_some_and(NodeView::is_primary)).map(|(i, _)| i).collect()
    }
}

/// A dual-primary incident: the rounds in which two nodes both claimed to be primary.
#[derive(Debug, Clone)]
pub struct DualPrimary {
    pub from: Duration,
    pub to: Duration,
    pub nodes: Vec<usize>,
}

impl std::fmt::Display for DualPrimary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<String> = self.nodes.iter().map(|i| (i + 1).to_string()).collect();
        write!(f, "nodes {} all primary from {:.1?} to {:.1?}", ids.join(", "), self.from, self.to)
    }
}

/// The running monitor.
pub struct Monitor {
    rounds: Arc<Mutex<Vec<Round>>>,
    task: JoinHandle<()>,
}

impl Monitor {
    pub fn start(urls: Vec<String>, clock: Clock, http: reqwest::Client) -> Monitor {
        let rounds: Arc<Mutex<Vec<Round>>> = Arc::default();
        let task = {
            let rounds = rounds.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(MONITOR_INTERVAL);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let at = clock.elapsed();
                    let views = futures::future::join_all(urls.iter().map(|url| view(&http, url))).await;
                    rounds.lock().unwrap_or_else(|e| e.into_inner()).push(Round { at, views });
                }
            })
        };
        Monitor { rounds, task }
    }

    /// A copy of every round so far.
    pub fn rounds(&self) -> Vec<Round> {
        self.rounds.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The node most recently seen as primary (within the last second), if any.
    pub fn current_primary(&self, now: Duration) -> Option<usize> {
        let rounds = self.rounds.lock().unwrap_or_else(|e| e.into_inner());
        rounds
            .iter()
            .rev()
            .take_while(|round| now.saturating_sub(round.at) < Duration::from_secs(1))
            .find_map(|round| round.primaries().first().copied())
    }

    pub fn stop(self) -> Vec<Round> {
        self.task.abort();
        self.rounds()
    }
}

async fn view(http: &reqwest::Client, url: &str) -> Option<NodeView> {
    let status = api::status(http, url).await?;
    Some(NodeView {
        term: status["term"].as_u64()?,
        is_leader: status["state"].as_str() == Some("leader"),
        has_quorum: status["leader_has_quorum"] == true,
        leader: status["leader"].as_u64(),
        applied_index: status["applied_index"].as_u64().unwrap_or(0),
    })
}

/// Dual-primary incidents: runs of consecutive rounds with two or more primaries, counted
/// only when the run spans at least two rounds.
pub fn dual_primaries(rounds: &[Round]) -> Vec<DualPrimary> {
    let mut incidents = Vec::new();
    let mut current: Option<(usize, DualPrimary)> = None;
    for round in rounds {
        let primaries = round.primaries();
        if primaries.len() >= 2 {
            match &mut current {
                Some((count, incident)) => {
                    *count += 1;
                    incident.to = round.at;
                    for node in primaries {
                        if !incident.nodes.contains(&node) {
                            incident.nodes.push(node);
                        }
                    }
                }
                None => current = Some((1, DualPrimary { from: round.at, to: round.at, nodes: primaries })),
            }
        } else if let Some((count, incident)) = current.take() {
            if count >= 2 {
                incidents.push(incident);
            }
        }
    }
    if let Some((count, incident)) = current {
        if count >= 2 {
            incidents.push(incident);
        }
    }
    incidents
}

/// Time from `since` until a primary other than `old` (any primary when `old` is `None`)
/// was first seen, if it was.
pub fn new_primary_after(rounds: &[Round], since: Duration, old: Option<usize>) -> Option<Duration> {
    rounds
        .iter()
        .filter(|round| round.at >= since)
        .find(|round| round.primaries().iter().any(|node| Some(*node) != old))
        .map(|round| round.at - since)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(at_ms: u64, primaries: &[usize]) -> Round {
        let views = (0..3)
            .map(|node| {
                Some(NodeView {
                    term: 1,
                    is_leader: primaries.contains(&node),
                    has_quorum: primaries.contains(&node),
                    leader: None,
                    applied_index: 0,
                })
            })
            .collect();
        Round { at: Duration::from_millis(at_ms), views }
    }

    #[test]
    fn one_round_of_overlap_is_not_a_dual_primary_but_two_are() {
        let rounds = vec![round(0, &[0]), round(100, &[0, 1]), round(200, &[1])];
        assert!(dual_primaries(&rounds).is_empty());
        let rounds = vec![round(0, &[0]), round(100, &[0, 1]), round(200, &[0, 1]), round(300, &[1])];
        let incidents = dual_primaries(&rounds);
        assert_eq!(incidents.len(), 1);
        assert_eq!(incidents[0].nodes, vec![0, 1]);
    }

    #[test]
    fn failover_time_is_measured_to_the_first_other_primary() {
        let rounds = vec![round(0, &[0]), round(100, &[0]), round(200, &[]), round(300, &[0]), round(400, &[2])];
        let since = Duration::from_millis(50);
        assert_eq!(new_primary_after(&rounds, since, Some(0)), Some(Duration::from_millis(350)));
        assert_eq!(new_primary_after(&rounds, since, None), Some(Duration::from_millis(50)));
        assert_eq!(new_primary_after(&rounds[..3], since, Some(0)), None);
    }
}
