//! The status monitor: every node's `/v1/status`, ten times a second, for the whole run.
//!
//! Each node is polled by its own task, so a paused or slow node never holds up the view
//! of the others. Every sample keeps when its request left and when the answer came back:
//! the state it reports held at some instant in between.
//!
//! From the samples the harness judges failover time, and reports polled primary claims
//! for information. (Dual primaries are judged from the leaders' acknowledgement stamps,
//! `haven_check::primaries`: a polled claim says nothing about what a node acknowledged,
//! and sampling can miss a short overlap.)
//!
//! - **Overlapping primary claims** (information only). A primary is a node in state
//!   `leader` that has heard from a quorum within the election timeout
//!   (`leader_has_quorum`). A node's *primary span* runs from the answer of the first sample
//!   of a run of consecutive "primary" samples to the request of the last one: the stretch
//!   in which it certainly kept saying so. Spans of two different nodes that overlap by at
//!   least one monitor interval are reported; a single sample, or a hand-over seen from both
//!   sides a few milliseconds apart, is not.
//! - **Failover time.** After a fault that takes the primary away, the time until an answer
//!   arrives from another node saying it is primary (any node, after a power cut).

use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::api;
use crate::config::MONITOR_INTERVAL;
use crate::workload::Clock;

/// One node's answer.
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

/// One status request to one node.
#[derive(Debug, Clone)]
pub struct Sample {
    pub node: usize,
    pub sent: Duration,
    pub received: Duration,
    /// `None`: no answer in time.
    pub view: Option<NodeView>,
}

impl Sample {
    fn is_primary(&self) -> bool {
        self.view.as_ref().is_some_and(NodeView::is_primary)
    }
}

/// A dual-primary incident.
#[derive(Debug, Clone)]
pub struct DualPrimary {
    pub from: Duration,
    pub to: Duration,
    pub nodes: (usize, usize),
}

impl std::fmt::Display for DualPrimary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "nodes {} and {} both primary from {:.1?} to {:.1?}",
            self.nodes.0 + 1,
            self.nodes.1 + 1,
            self.from,
            self.to
        )
    }
}

/// The running monitor.
pub struct Monitor {
    samples: Arc<Mutex<Vec<Sample>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Monitor {
    /// Polls every node in `urls` with `http` (whose timeout bounds each request).
    pub fn start(urls: Vec<String>, clock: Clock, http: reqwest::Client) -> Monitor {
        let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
        let tasks = urls
            .into_iter()
            .enumerate()
            .map(|(node, url)| {
                let samples = samples.clone();
                let http = http.clone();
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(MONITOR_INTERVAL);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    loop {
                        tick.tick().await;
                        let sent = clock.elapsed();
                        let view = view(&http, &url).await;
                        let received = clock.elapsed();
                        samples.lock().unwrap_or_else(|e| e.into_inner()).push(Sample { node, sent, received, view });
                    }
                })
            })
            .collect();
        Monitor { samples, tasks }
    }

    /// A copy of every sample so far, in arrival order.
    pub fn samples(&self) -> Vec<Sample> {
        self.samples.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The node that most recently said it is primary, if it said so within the last second.
    pub fn current_primary(&self, now: Duration) -> Option<usize> {
        let samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        samples
            .iter()
            .rev()
            .take_while(|sample| now.saturating_sub(sample.received) < Duration::from_secs(1))
            .find(|sample| sample.is_primary())
            .map(|sample| sample.node)
    }

    pub fn stop(self) -> Vec<Sample> {
        for task in &self.tasks {
            task.abort();
        }
        self.samples()
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

/// Every node's primary spans (see the module docs), as `(node, from, to)`.
fn primary_spans(samples: &[Sample]) -> Vec<(usize, Duration, Duration)> {
    let mut spans = Vec::new();
    let nodes = samples.iter().map(|s| s.node + 1).max().unwrap_or(0);
    for node in 0..nodes {
        let mut mine: Vec<&Sample> = samples.iter().filter(|s| s.node == node).collect();
        mine.sort_by_key(|s| s.sent);
        let mut run: Option<(Duration, Duration)> = None;
        for sample in mine {
            match (&mut run, sample.is_primary()) {
                (Some((_, to)), true) => *to = sample.sent,
                (None, true) => run = Some((sample.received, sample.sent)),
                (Some((from, to)), false) => {
                    if to > from {
                        spans.push((node, *from, *to));
                    }
                    run = None;
                }
                (None, false) => {}
            }
        }
        if let Some((from, to)) = run {
            if to > from {
                spans.push((node, from, to));
            }
        }
    }
    spans
}

/// Dual-primary incidents: primary spans of two different nodes that overlap by at least
/// one monitor interval.
pub fn dual_primaries(samples: &[Sample]) -> Vec<DualPrimary> {
    let spans = primary_spans(samples);
    let mut incidents = Vec::new();
    for (i, a) in spans.iter().enumerate() {
        for b in &spans[i + 1..] {
            if a.0 == b.0 {
                continue;
            }
            let (from, to) = (a.1.max(b.1), a.2.min(b.2));
            if to >= from + MONITOR_INTERVAL {
                incidents.push(DualPrimary { from, to, nodes: (a.0.min(b.0), a.0.max(b.0)) });
            }
        }
    }
    incidents
}

/// Time from `since` until an answer from a primary other than `old` (any primary when
/// `old` is `None`) arrived, for requests sent at or after `since`.
pub fn new_primary_after(samples: &[Sample], since: Duration, old: Option<usize>) -> Option<Duration> {
    samples
        .iter()
        .filter(|sample| sample.sent >= since && sample.is_primary() && Some(sample.node) != old)
        .map(|sample| sample.received - since)
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(node: usize, at_ms: u64, primary: bool) -> Sample {
        let view = NodeView { term: 1, is_leader: primary, has_quorum: primary, leader: None, applied_index: 0 };
        Sample {
            node,
            sent: Duration::from_millis(at_ms),
            received: Duration::from_millis(at_ms + 5),
            view: Some(view),
        }
    }

    #[test]
    fn a_hand_over_is_not_a_dual_primary_but_a_sustained_overlap_is() {
        // Node 0 hands over to node 1 at about 200 ms; each is seen primary once around it.
        let handover = vec![
            sample(0, 0, true),
            sample(0, 100, true),
            sample(0, 200, false),
            sample(1, 195, true),
            sample(1, 300, true),
        ];
        assert!(dual_primaries(&handover).is_empty());
        // Both keep claiming it for 300 ms.
        let split: Vec<Sample> =
            (0..5).flat_map(|i| [sample(0, i * 100, true), sample(1, i * 100 + 3, true)]).collect();
        let incidents = dual_primaries(&split);
        assert_eq!(incidents.len(), 1, "{incidents:?}");
        assert_eq!(incidents[0].nodes, (0, 1));
    }

    #[test]
    fn failover_time_is_measured_to_the_first_other_primary() {
        let samples = vec![sample(0, 0, true), sample(1, 100, false), sample(0, 300, true), sample(2, 400, true)];
        let since = Duration::from_millis(50);
        assert_eq!(new_primary_after(&samples, since, Some(0)), Some(Duration::from_millis(355)));
        assert_eq!(new_primary_after(&samples, since, None), Some(Duration::from_millis(255)));
        assert_eq!(new_primary_after(&samples[..3], since, Some(0)), None);
    }
}
