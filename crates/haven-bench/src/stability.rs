//! Stability: leader changes during a long fault-free run under load.
//!
//! The load generator runs at the given concurrency while a poller asks the members for
//! their status every [`POLL_INTERVAL`] (the first member that answers, in order). Every
//! change of the term or of the leader it reports counts; a stable cluster keeps both for
//! the whole run.

use std::sync::Arc;
use std::time::Duration;

use crate::api::Connection;
use crate::api::Workload;
use crate::load;
use crate::load::LoadResult;
use crate::load::Op;

/// Status poll interval, as the issue specifies.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// What the stability phase saw.
#[derive(Debug, Clone)]
pub struct Stability {
    pub minutes: u64,
    pub load: LoadResult,
    /// Term changes seen (a new election each, successful or not).
    pub term_changes: u64,
    /// Changes of the leader id seen (including to or from "no leader").
    pub leader_changes: u64,
    pub first_term: Option<u64>,
    pub last_term: Option<u64>,
    /// Polls no member answered.
    pub unanswered_polls: u64,
}

/// Runs puts at `concurrency` for `minutes` (worker `i` on endpoint `first_endpoint + i`)
/// and watches leader and term meanwhile.
pub async fn run(
    load_connection: Arc<Connection>,
    control: &Connection,
    workload: Arc<Workload>,
    concurrency: usize,
    first_endpoint: usize,
    minutes: u64,
    seed: u64,
) -> Stability {
    let measure = Duration::from_secs(minutes * 60);
    let mut load = Box::pin(load::run(load_connection, workload, Op::Put, concurrency, first_endpoint, measure, seed));
    let mut ticker = tokio::time::interval(POLL_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen: Option<(u64, Option<u64>)> = None;
    let mut stability = Stability {
        minutes,
        load: LoadResult::empty(Op::Put, concurrency),
        term_changes: 0,
        leader_changes: 0,
        first_term: None,
        last_term: None,
        unanswered_polls: 0,
    };
    loop {
        tokio::select! {
            result = &mut load => {
                stability.load = result;
                return stability;
            }
            _ = ticker.tick() => {
                let mut status = None;
                for endpoint in 0..control.endpoints.len() {
                    status = control.status(endpoint).await;
                    if status.is_some() {
                        break;
                    }
                }
                let Some(status) = status else {
                    stability.unanswered_polls += 1;
                    continue;
                };
                if let Some((term, leader)) = seen {
                    stability.term_changes += u64::from(status.term != term);
                    stability.leader_changes += u64::from(status.leader != leader);
                }
                stability.first_term.get_or_insert(status.term);
                stability.last_term = Some(status.term);
                seen = Some((status.term, status.leader));
            }
        }
    }
}
