//! The load generator, the same for both systems.
//!
//! `concurrency` workers run in a closed loop (send, wait for the answer, send the next)
//! for a warm-up and then a measured window. Each request picks a random key of the
//! workload and a value; worker `i` talks to member `(first + i) mod 3` for the whole run,
//! where the caller passes the leader as `first`: at concurrency 1 both systems are driven
//! through their leader, and at higher concurrency the load is spread evenly with writes to
//! followers forwarded (Haven) or proposed through them (etcd) alike. Latency is measured
//! per successful request in the measured window.

use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use crate::api::Connection;
use crate::api::Workload;

/// Requests before this much time has passed are not measured (connections being opened,
/// caches and the Raft pipeline warming up).
pub const WARMUP: Duration = Duration::from_secs(1);

/// Timeout of one benchmark request: far above any healthy latency, so it only ends
/// requests that would otherwise hang the closed loop.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// After an error a worker pauses this long so a failing member is not hammered.
const ERROR_PAUSE: Duration = Duration::from_millis(1);

/// Concurrency used to pre-populate the keys before the read phase.
const POPULATE_CONCURRENCY: usize = 64;

/// What the workers do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Put,
    /// A linearizable read of an existing key.
    Get,
}

impl Op {
    pub fn label(self) -> &'static str {
        match self {
            Op::Put => "put",
            Op::Get => "linearizable get",
        }
    }
}

/// The outcome of one measured phase.
#[derive(Debug, Clone)]
pub struct LoadResult {
    pub op: Op,
    pub concurrency: usize,
    pub ops: usize,
    pub errors: usize,
    pub seconds: f64,
    /// Sorted latencies of successful requests, in microseconds.
    latencies_us: Vec<u32>,
}

impl LoadResult {
    /// A result with nothing measured (a placeholder until a phase ends).
    pub fn empty(op: Op, concurrency: usize) -> LoadResult {
        LoadResult { op, concurrency, ops: 0, errors: 0, seconds: 0.0, latencies_us: Vec::new() }
    }

    pub fn ops_per_second(&self) -> f64 {
        if self.seconds > 0.0 {
            self.ops as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// The `q`-quantile (0..=1, nearest rank) in milliseconds; `None` without samples.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        quantile(&self.latencies_us, q).map(|us| us as f64 / 1000.0)
    }

    pub fn p50_ms(&self) -> Option<f64> {
        self.quantile_ms(0.50)
    }

    pub fn p99_ms(&self) -> Option<f64> {
        self.quantile_ms(0.99)
    }
}

/// Nearest-rank quantile of sorted samples.
fn quantile(sorted: &[u32], q: f64) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// One worker's tally.
struct WorkerTally {
    latencies_us: Vec<u32>,
    errors: usize,
}

/// Runs `op` with `concurrency` workers for [`WARMUP`] plus `measure`; worker `i` uses
/// endpoint `first_endpoint + i` (modulo the endpoint count).
pub async fn run(
    connection: Arc<Connection>,
    workload: Arc<Workload>,
    op: Op,
    concurrency: usize,
    first_endpoint: usize,
    measure: Duration,
    seed: u64,
) -> LoadResult {
    let start = Instant::now();
    let measure_from = start + WARMUP;
    let until = measure_from + measure;
    let workers: Vec<_> = (0..concurrency)
        .map(|worker| {
            let connection = connection.clone();
            let workload = workload.clone();
            tokio::spawn(async move {
                use rand::Rng as _;
                use rand::SeedableRng as _;
                let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ (worker as u64).wrapping_mul(0x9E37_79B9));
                let mut tally = WorkerTally { latencies_us: Vec::new(), errors: 0 };
                let endpoint = first_endpoint + worker;
                loop {
                    let sent = Instant::now();
                    if sent >= until {
                        break;
                    }
                    let key = rng.random_range(0..workload.key_count());
                    let outcome = match op {
                        Op::Put => {
                            let value = rng.random_range(0..workload.value_count());
                            connection.put(&workload, endpoint, key, value).await
                        }
                        Op::Get => connection.get(&workload, endpoint, key).await,
                    };
                    let latency = sent.elapsed();
                    let measured = sent >= measure_from;
                    match outcome {
                        Ok(()) if measured => tally.latencies_us.push(latency.as_micros().min(u32::MAX as u128) as u32),
                        Ok(()) => {}
                        Err(_) => {
                            if measured {
                                tally.errors += 1;
                            }
                            tokio::time::sleep(ERROR_PAUSE).await;
                        }
                    }
                }
                tally
            })
        })
        .collect();
    let mut latencies_us = Vec::new();
    let mut errors = 0;
    for tally in futures::future::join_all(workers).await {
        match tally {
            Ok(tally) => {
                latencies_us.extend(tally.latencies_us);
                errors += tally.errors;
            }
            // A worker that panicked measured nothing useful; count it as one error.
            Err(_) => errors += 1,
        }
    }
    latencies_us.sort_unstable();
    LoadResult {
        op,
        concurrency,
        ops: latencies_us.len(),
        errors,
        // Requests started in the window may finish a little after it; the window is the
        // honest denominator for a closed loop.
        seconds: measure.as_secs_f64(),
        latencies_us,
    }
}

/// Writes every key once (so reads find them); returns the number of failed writes after
/// retries.
pub async fn populate(connection: Arc<Connection>, workload: Arc<Workload>) -> usize {
    /// Attempts per key before it is counted as failed.
    const ATTEMPTS: usize = 5;
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..POPULATE_CONCURRENCY)
        .map(|worker| {
            let (connection, workload, next) = (connection.clone(), workload.clone(), next.clone());
            tokio::spawn(async move {
                let mut failed = 0;
                loop {
                    let key = next.fetch_add(1, Ordering::Relaxed);
                    if key >= workload.key_count() {
                        return failed;
                    }
                    let mut done = false;
                    for attempt in 0..ATTEMPTS {
                        if connection.put(&workload, worker + attempt, key, key).await.is_ok() {
                            done = true;
                            break;
                        }
                        tokio::time::sleep(ERROR_PAUSE * 10).await;
                    }
                    failed += usize::from(!done);
                }
            })
        })
        .collect();
    futures::future::join_all(workers).await.into_iter().map(|r| r.unwrap_or(1)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles() {
        let samples: Vec<u32> = (1..=100).collect();
        assert_eq!(quantile(&samples, 0.5), Some(50));
        assert_eq!(quantile(&samples, 0.99), Some(99));
        assert_eq!(quantile(&samples, 1.0), Some(100));
        assert_eq!(quantile(&samples, 0.0), Some(1));
        assert_eq!(quantile(&[], 0.5), None);
        assert_eq!(quantile(&[7], 0.99), Some(7));
    }
}
