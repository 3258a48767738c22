//! Failover gap: how long writes stop when the leader dies (`kill -9`) or freezes
//! (`SIGSTOP`), seen by the same client for both systems.
//!
//! [`WRITERS`] writers write continuously. A writer keeps its member while writes succeed;
//! on any error or timeout it waits [`RETRY_PAUSE`] and moves to the next member
//! (round-robin). For each fault: wait until the cluster is healthy and writes flow, find
//! the leader, signal its process, and note the time right after the signal. The gap is
//! the first acknowledgement of a write *sent after* that instant minus the last
//! acknowledgement received before it. (Only writes sent after the fault count as
//! "after": an answer already on its way from the old leader says nothing about the new
//! one.) Then a killed member is restarted on its data dir and ports; a stopped one gets
//! SIGCONT once the new leader is known.

use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use crate::api::Connection;
use crate::api::Workload;
use crate::cluster::Cluster;
use crate::cluster::FORM_TIMEOUT;

/// Continuous writers; more than members, so at any time some writer is on a live member.
pub const WRITERS: usize = 4;

/// Pause before a writer retries on the next member, as the issue specifies.
pub const RETRY_PAUSE: Duration = Duration::from_millis(5);

/// Timeout of one failover write: a write sent to a frozen or leaderless member is
/// abandoned after this long and retried elsewhere. Well above a healthy write here
/// (a few ms) and well below the gaps measured; it bounds how late the client can notice
/// a new leader (on average by about `FAILOVER_REQUEST_TIMEOUT / WRITERS`).
pub const FAILOVER_REQUEST_TIMEOUT: Duration = Duration::from_millis(100);

/// A gap longer than this is recorded as "no recovery" and the run moves on.
const GAP_LIMIT: Duration = Duration::from_secs(30);

/// Writes must have flowed this recently before a fault is injected.
const FLOWING_WITHIN: Duration = Duration::from_millis(200);

/// Quiet time after the cluster is healthy again, so a restarted member has caught up and
/// the next fault starts from a settled cluster.
const SETTLE: Duration = Duration::from_secs(1);

/// Poll interval while waiting for the first write after the fault.
const WATCH_PAUSE: Duration = Duration::from_millis(2);

/// How the leader is taken out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `kill -9`, then restart on the same data dir.
    Kill,
    /// `SIGSTOP`, then `SIGCONT` once a new leader serves.
    Stop,
}

impl Fault {
    pub fn label(self) -> &'static str {
        match self {
            Fault::Kill => "kill -9 leader",
            Fault::Stop => "SIGSTOP leader",
        }
    }
}

/// Gaps of one fault kind, in order; `None` for a fault after which no write succeeded
/// within [`GAP_LIMIT`].
#[derive(Debug, Clone)]
pub struct Gaps {
    pub fault: Fault,
    pub gaps: Vec<Option<Duration>>,
}

impl Gaps {
    fn sorted(&self) -> Vec<Duration> {
        let mut gaps: Vec<Duration> = self.gaps.iter().map(|gap| gap.unwrap_or(GAP_LIMIT)).collect();
        gaps.sort();
        gaps
    }

    /// Median (the mean of the two middle gaps for an even count).
    pub fn median(&self) -> Option<Duration> {
        let sorted = self.sorted();
        let n = sorted.len();
        match n {
            0 => None,
            _ if n % 2 == 1 => Some(sorted[n / 2]),
            _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2),
        }
    }

    pub fn max(&self) -> Option<Duration> {
        self.sorted().last().copied()
    }

    pub fn unrecovered(&self) -> usize {
        self.gaps.iter().filter(|gap| gap.is_none()).count()
    }
}

/// Acknowledgement times shared by the writers and the fault injector.
#[derive(Default)]
struct AckLog {
    /// Latest acknowledgement so far.
    last_ack: Option<Instant>,
    /// The current fault's instant, while one is being measured.
    fault_at: Option<Instant>,
    /// Latest acknowledgement received no later than `fault_at`.
    last_before: Option<Instant>,
    /// Earliest acknowledgement of a write sent after `fault_at`.
    first_after: Option<Instant>,
}

impl AckLog {
    fn record(&mut self, sent: Instant, acked: Instant) {
        self.last_ack = self.last_ack.max(Some(acked));
        if let Some(fault_at) = self.fault_at {
            if acked <= fault_at {
                self.last_before = self.last_before.max(Some(acked));
            }
            if sent > fault_at && self.first_after.is_none_or(|first| acked < first) {
                self.first_after = Some(acked);
            }
        }
    }
}

/// Injects `count` faults of each kind in `faults` into the cluster's leader while the
/// writers run; returns the gaps per kind.
pub async fn measure(
    cluster: &mut Cluster,
    connection: Arc<Connection>,
    workload: Arc<Workload>,
    faults: &[Fault],
    count: usize,
) -> anyhow::Result<Vec<Gaps>> {
    let log = Arc::new(Mutex::new(AckLog::default()));
    let running = Arc::new(AtomicBool::new(true));
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let (connection, workload, log, running) =
                (connection.clone(), workload.clone(), log.clone(), running.clone());
            tokio::spawn(async move {
                let members = connection.endpoints.len();
                let mut endpoint = writer % members;
                let mut n = writer;
                while running.load(Ordering::Relaxed) {
                    n += WRITERS;
                    let key = n % workload.key_count();
                    let sent = Instant::now();
                    match connection.put(&workload, endpoint, key, n).await {
                        Ok(()) => {
                            let acked = Instant::now();
                            log.lock().unwrap_or_else(|e| e.into_inner()).record(sent, acked);
                        }
                        Err(_) => {
                            tokio::time::sleep(RETRY_PAUSE).await;
                            endpoint = (endpoint + 1) % members;
                        }
                    }
                }
            })
        })
        .collect();
    let result = inject_all(cluster, &log, faults, count).await;
    running.store(false, Ordering::Relaxed);
    for writer in writers {
        let _ = writer.await;
    }
    result
}

async fn inject_all(
    cluster: &mut Cluster,
    log: &Mutex<AckLog>,
    faults: &[Fault],
    count: usize,
) -> anyhow::Result<Vec<Gaps>> {
    let mut all = Vec::new();
    for fault in faults {
        let mut gaps = Gaps { fault: *fault, gaps: Vec::new() };
        for round in 1..=count {
            let gap = inject(cluster, log, *fault).await?;
            eprintln!(
                "    {} {round}/{count}: gap {}",
                fault.label(),
                gap.map(|g| format!("{} ms", g.as_millis())).unwrap_or_else(|| "none (no recovery)".into())
            );
            gaps.gaps.push(gap);
        }
        all.push(gaps);
    }
    Ok(all)
}

fn lock(log: &Mutex<AckLog>) -> std::sync::MutexGuard<'_, AckLog> {
    log.lock().unwrap_or_else(|e| e.into_inner())
}

/// One fault: returns the gap, or `None` when writes did not resume within [`GAP_LIMIT`].
async fn inject(cluster: &mut Cluster, log: &Mutex<AckLog>, fault: Fault) -> anyhow::Result<Option<Duration>> {
    let leader = cluster.wait_healthy(FORM_TIMEOUT).await?;
    tokio::time::sleep(SETTLE).await;
    let deadline = Instant::now() + FORM_TIMEOUT;
    while lock(log).last_ack.is_none_or(|at| at.elapsed() > FLOWING_WITHIN) {
        anyhow::ensure!(Instant::now() < deadline, "writes do not flow on a healthy cluster");
        tokio::time::sleep(WATCH_PAUSE).await;
    }
    // The leader may have changed during the settle pause; ask again.
    let leader = cluster.agreed_leader().await.unwrap_or(leader);
    match fault {
        Fault::Kill => cluster.members[leader].signal(libc::SIGKILL),
        Fault::Stop => cluster.members[leader].signal(libc::SIGSTOP),
    }
    {
        let mut log = lock(log);
        let now = Instant::now();
        log.fault_at = Some(now);
        log.last_before = log.last_ack;
        log.first_after = None;
    }
    let fault_at = lock(log).fault_at.unwrap_or_else(Instant::now);
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    eprintln!(
        "    {} {} (pid {}) at unix time {}.{:03}",
        fault.label(),
        cluster.members[leader].name,
        cluster.members[leader].pid().unwrap_or(0),
        since_epoch.as_secs(),
        since_epoch.subsec_millis()
    );
    let gap = loop {
        let (first_after, last_before) = {
            let log = lock(log);
            (log.first_after, log.last_before)
        };
        if let (Some(first), Some(last)) = (first_after, last_before) {
            break Some(first.saturating_duration_since(last));
        }
        if fault_at.elapsed() > GAP_LIMIT {
            break None;
        }
        tokio::time::sleep(WATCH_PAUSE).await;
    };
    lock(log).fault_at = None;
    match fault {
        Fault::Kill => cluster.restart(leader).await?,
        Fault::Stop => {
            // The new leader serves already (a write after the stop was acknowledged);
            // wait until the others name it, then let the old leader run again.
            let deadline = Instant::now() + FORM_TIMEOUT;
            while cluster.leader_among_others(leader).await.is_none() && Instant::now() < deadline {
                tokio::time::sleep(WATCH_PAUSE).await;
            }
            cluster.members[leader].signal(libc::SIGCONT);
        }
    }
    Ok(gap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_writes_sent_after_the_fault_end_the_gap() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut log = AckLog::default();
        log.record(at(0), at(5));
        log.fault_at = Some(at(10));
        log.last_before = log.last_ack;
        log.record(at(8), at(11)); // sent before the fault: neither before nor after
        log.record(at(9), at(10)); // acknowledged at the fault instant: before
        assert_eq!(log.first_after, None);
        log.record(at(300), at(320));
        log.record(at(200), at(400));
        assert_eq!(log.last_before, Some(at(10)));
        assert_eq!(log.first_after, Some(at(320)));
    }

    #[test]
    fn median_and_max_count_unrecovered_as_the_limit() {
        let ms = |v: u64| Some(Duration::from_millis(v));
        let gaps = Gaps { fault: Fault::Kill, gaps: vec![ms(300), ms(100), ms(200), None] };
        assert_eq!(gaps.median(), ms(250));
        let odd = Gaps { fault: Fault::Stop, gaps: vec![ms(300), ms(100), ms(200)] };
        assert_eq!(odd.median(), ms(200));
        assert_eq!(gaps.max(), Some(GAP_LIMIT));
        assert_eq!(gaps.unrecovered(), 1);
    }
}
