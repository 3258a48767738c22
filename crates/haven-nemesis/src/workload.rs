//! The workload: concurrent clients that record every operation, and one watcher per node.
//!
//! Each client issues one operation at a time, over plain HTTP (not the retrying client
//! library: the checkers need each request's exact fate), and records it in the shared
//! [`HistoryRecorder`] before sending and after the answer:
//!
//! | answer                                   | recorded as                         |
//! |------------------------------------------|-------------------------------------|
//! | 200                                      | ok (reads: the value seen)          |
//! | 404 `not_found` to a read                | ok, key absent                      |
//! | 409 `compare_failed` to a CAS            | compare failed (an observation)     |
//! | other 4xx, 503 `no_leader`, refused connect | failed: certainly not applied     |
//! | timeout, reset, 503 `outcome_unknown`, 5xx | unknown: may apply at any time    |
//!
//! Register operations use at most [`KEYS_MAX`](crate::config::KEYS_MAX) keys `k/NN` with
//! values unique in the run. A CAS reads the key first and then writes with
//! `prev_revision` = the mod_revision it saw; since every value is written once, "the key is
//! still at that revision" is exactly "the key still holds the value read", so it is
//! recorded as the checker's value-based CAS. Set adds write fresh keys `set/<unique>`, for
//! the lost-write checker. Some clients are pinned to each node (so a paused or isolated
//! leader still has readers), the rest pick a node per operation.
//!
//! Every committed write (200, and 409 `compare_failed`: a failed compare is a log entry
//! too) carries the `Haven-Ack` stamp of the leader that acknowledged it; each client keeps
//! the stamps with the op id and the window the op was in flight, for
//! `haven_check::primaries`.
//!
//! Each client writes with a token of its own (an operator token the harness creates at
//! the start) and a request id per write. In histories with shared request ids every
//! client numbers its writes `r1`, `r2`, ..., so each id is used by every client for a
//! different request: they must be independent requests (issue 11), and the lost-write
//! and linearizability checkers find any write acknowledged but not made. A client never
//! reuses its own ids, so a `409 request_id_reused` is counted and reported as an anomaly.
//!
//! A configurer applies a random valid HA configuration every few seconds (every key of
//! `haven_core::strategies`, with the failure detection, the node entries and the hook
//! kept to what a run needs: a detection fast enough for the failover bound, data nodes
//! that may all lead, no alerts or hooks that reach outside), so snapshots, restarts and
//! snapshot installs carry changing configurations (issue 10).

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use haven_check::primaries::Ack;
use haven_check::primaries::AckRecord;
use haven_check::HistoryRecorder;
use haven_check::OkResult;
use haven_check::OpKind;
use haven_check::WatchEvent;
use haven_check::WatcherLog;
use rand::Rng;
use rand::SeedableRng;
use serde_json::Value;
use tokio::sync::watch;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::api::http_client;
use crate::api::Access;
use crate::config::CLIENT_REQUEST_TIMEOUT;
use crate::config::CONFIG_CHANGE_PAUSE_MS_MAX;
use crate::config::CONFIG_CHANGE_PAUSE_MS_MIN;
use crate::config::WATCH_IDLE_TIMEOUT;
use crate::config::WATCH_RECONNECT_PAUSE;
use crate::config::WEIGHT_CAS;
use crate::config::WEIGHT_DELETE;
use crate::config::WEIGHT_READ;
use crate::config::WEIGHT_SET_ADD;
use crate::config::WEIGHT_TOTAL;
use crate::config::WEIGHT_WRITE;

/// Prefix of the lost-write checker's set elements.
pub const SET_PREFIX: &str = "set/";

/// Prefix of the register keys.
pub const KEY_PREFIX: &str = "k/";

/// The rate limiter refills this often.
const RATE_TICK: Duration = Duration::from_millis(10);

/// First pause of a client after a refused connection; doubled up to the maximum while
/// the node stays down. A restart takes a few hundred milliseconds.
const CLIENT_BACKOFF_MIN: Duration = Duration::from_millis(50);
const CLIENT_BACKOFF_MAX: Duration = Duration::from_millis(800);

/// Client id of the harness's own final reads (after every workload client).
pub const FINAL_READER: u64 = 1_000_000;

/// Response header with the acknowledging leader's stamp (`node=N term=T index=I mono_ns=M`).
pub const ACK_HEADER: &str = "haven-ack";

/// `CLOCK_MONOTONIC` in nanoseconds: the clock the nodes stamp acknowledgements with. Every
/// process on this machine reads the same one (network namespaces do not change it).
pub fn monotonic_ns() -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    if rc != 0 {
        return 0;
    }
    (now.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(now.tv_nsec as u64)
}

/// The run's clock: nanoseconds since the run began, shared by every client. It is
/// `CLOCK_MONOTONIC`, the nodes' stamp clock, so a stamp converts exactly
/// ([`Clock::from_mono`]) and can be compared with when its operation was sent and answered.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin_ns: u64,
}

impl Clock {
    pub fn new() -> Clock {
        Clock { origin_ns: monotonic_ns() }
    }

    pub fn now_ns(&self) -> u64 {
        monotonic_ns().saturating_sub(self.origin_ns)
    }

    pub fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.now_ns())
    }

    /// A node's `CLOCK_MONOTONIC` stamp on this clock (0 for a stamp from before the run).
    pub fn from_mono(&self, mono_ns: u64) -> u64 {
        mono_ns.saturating_sub(self.origin_ns)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// What a client saw, beyond the history itself.
#[derive(Debug, Clone, Default)]
pub struct ClientStats {
    /// Answers outside the API contract (e.g. 500), recorded as unknown.
    pub unexpected: u64,
    /// Recorder misuse (never expected; reported so it cannot hide).
    pub record_errors: u64,
    /// Requests whose connection was refused (the node is down).
    pub refused: u64,
    /// The stamp of every committed write (200, and 409 `compare_failed`), on the run's
    /// clock, with the window in which its operation was in flight.
    pub acks: Vec<AckRecord>,
    /// Committed writes answered without a `Haven-Ack` header, or with one that does not
    /// parse: the server broke its contract (and the primaries check would be blind).
    pub unstamped: u64,
    pub malformed_stamps: u64,
    /// Writes refused as `409 request_id_reused`: no client reuses its own ids, so each is
    /// the server confusing callers.
    pub reused_ids: u64,
    /// HA configurations the configurer applied.
    pub config_changes: u64,
}

impl ClientStats {
    fn merge(&mut self, other: ClientStats) {
        self.unexpected += other.unexpected;
        self.record_errors += other.record_errors;
        self.refused += other.refused;
        self.acks.extend(other.acks);
        self.unstamped += other.unstamped;
        self.malformed_stamps += other.malformed_stamps;
        self.reused_ids += other.reused_ids;
        self.config_changes += other.config_changes;
    }
}

/// Hands out at most `rate` permits a second, with a burst of a tenth of a second.
struct RateLimiter {
    permits: Arc<Semaphore>,
    refill: JoinHandle<()>,
}

impl RateLimiter {
    fn start(rate_per_second: u32) -> RateLimiter {
        let permits = Arc::new(Semaphore::new(0));
        let burst = (rate_per_second as usize / 10).max(1);
        let per_tick = f64::from(rate_per_second) * RATE_TICK.as_secs_f64();
        let refill = {
            let permits = permits.clone();
            tokio::spawn(async move {
                let mut carry = 0.0f64;
                let mut tick = tokio::time::interval(RATE_TICK);
                loop {
                    tick.tick().await;
                    carry += per_tick;
                    let whole = carry.floor();
                    carry -= whole;
                    let room = burst.saturating_sub(permits.available_permits());
                    permits.add_permits((whole as usize).min(room));
                }
            })
        };
        RateLimiter { permits, refill }
    }
}

impl Drop for RateLimiter {
    fn drop(&mut self) {
        self.refill.abort();
        self.permits.close();
    }
}

/// Everything a client needs.
#[derive(Clone)]
struct ClientContext {
    client: u64,
    /// `Some(node)`: always that node; `None`: a random node per operation.
    pinned: Option<usize>,
    urls: Arc<Vec<String>>,
    keys: usize,
    recorder: Arc<HistoryRecorder>,
    clock: Clock,
    permits: Arc<Semaphore>,
    stop: watch::Receiver<bool>,
    seed: u64,
    shared_request_ids: bool,
}

/// The running workload.
pub struct Workload {
    stop: watch::Sender<bool>,
    clients: Vec<JoinHandle<ClientStats>>,
    watchers: Vec<(Arc<AtomicU64>, JoinHandle<WatcherLog>)>,
    _limiter: RateLimiter,
}

/// The workload's shape.
pub struct WorkloadShape {
    pub pinned_clients_per_node: usize,
    pub floating_clients: usize,
    pub keys: usize,
    pub rate_ops_per_second: u32,
    pub seed: u64,
    pub shared_request_ids: bool,
    pub config_changes: bool,
}

impl Workload {
    /// Creates a token for each client, then starts one watcher per node (from revision
    /// 0), the clients and the configurer.
    pub async fn start(
        urls: &[String],
        shape: &WorkloadShape,
        recorder: Arc<HistoryRecorder>,
        clock: Clock,
        access: &Access,
    ) -> anyhow::Result<Workload> {
        let (stop, stopped) = watch::channel(false);
        let limiter = RateLimiter::start(shape.rate_ops_per_second);
        let urls = Arc::new(urls.to_vec());
        let watchers = urls
            .iter()
            .enumerate()
            .map(|(node, url)| {
                let covered = Arc::new(AtomicU64::new(0));
                let http = http_client(access, None)?;
                let task = tokio::spawn(watch_node(http, node, url.clone(), covered.clone(), stopped.clone()));
                Ok((covered, task))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut clients = Vec::new();
        let placements = (0..urls.len())
            .flat_map(|node| std::iter::repeat_n(Some(node), shape.pinned_clients_per_node))
            .chain(std::iter::repeat_n(None, shape.floating_clients));
        for (client, pinned) in (1u64..).zip(placements) {
            let token =
                crate::api::create_token(access, &urls, &format!("nemesis-client-{client}"), "operator").await?;
            let client_access = Access { tls: access.tls.clone(), token };
            let context = ClientContext {
                client,
                pinned,
                urls: urls.clone(),
                keys: shape.keys,
                recorder: recorder.clone(),
                clock,
                permits: limiter.permits.clone(),
                stop: stopped.clone(),
                seed: shape.seed,
                shared_request_ids: shape.shared_request_ids,
            };
            let http = http_client(&client_access, Some(CLIENT_REQUEST_TIMEOUT))?;
            clients.push(tokio::spawn(run_client(context, http)));
        }
        if shape.config_changes {
            let http = http_client(access, Some(CLIENT_REQUEST_TIMEOUT))?;
            clients.push(tokio::spawn(run_configurer(http, urls.clone(), shape.seed, stopped.clone())));
        }
        Ok(Workload { stop, clients, watchers, _limiter: limiter })
    }

    /// Stops the clients and waits for their last operations (each bounded by the request
    /// timeout). Watchers keep running.
    pub async fn stop_clients(&mut self) -> ClientStats {
        self.stop.send_replace(true);
        let mut total = ClientStats::default();
        for client in self.clients.drain(..) {
            if let Ok(stats) = client.await {
                total.merge(stats);
            }
        }
        total
    }

    /// The highest revision each watcher has been brought to (events or progress).
    pub fn watcher_coverage(&self) -> Vec<u64> {
        self.watchers.iter().map(|(covered, _)| covered.load(Ordering::Relaxed)).collect()
    }

    /// Stops everything and returns the watchers' logs.
    pub async fn finish(mut self) -> (ClientStats, Vec<WatcherLog>) {
        let stats = self.stop_clients().await;
        let mut logs = Vec::new();
        for (_, watcher) in self.watchers.drain(..) {
            if let Ok(log) = watcher.await {
                logs.push(log);
            }
        }
        (stats, logs)
    }
}

/// What an operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Action {
    Read,
    Write,
    Cas,
    Delete,
    SetAdd,
}

fn pick_action(rng: &mut impl Rng) -> Action {
    let mut roll = rng.random_range(0..WEIGHT_TOTAL);
    for (weight, action) in [
        (WEIGHT_READ, Action::Read),
        (WEIGHT_WRITE, Action::Write),
        (WEIGHT_CAS, Action::Cas),
        (WEIGHT_DELETE, Action::Delete),
        (WEIGHT_SET_ADD, Action::SetAdd),
    ] {
        if roll < weight {
            return action;
        }
        roll -= weight;
    }
    Action::Read
}

async fn run_client(mut context: ClientContext, http: reqwest::Client) -> ClientStats {
    let mut rng = rand::rngs::StdRng::seed_from_u64(context.seed ^ context.client.wrapping_mul(0x2545_f491_4f6c_dd1d));
    let mut stats = ClientStats::default();
    let mut sequence = 0u64;
    let mut backoff = CLIENT_BACKOFF_MIN;
    loop {
        let permit = tokio::select! {
            _ = context.stop.wait_for(|stop| *stop) => break,
            permit = context.permits.acquire() => permit,
        };
        match permit {
            Ok(permit) => permit.forget(),
            Err(_) => break, // the limiter is gone: the run is over
        }
        let node = context.pinned.unwrap_or_else(|| rng.random_range(0..context.urls.len()));
        let url = context.urls[node].clone();
        let key = format!("{KEY_PREFIX}{:02}", rng.random_range(0..context.keys));
        sequence += 1;
        let value = format!("c{}-{sequence}", context.client);
        let request_id =
            if context.shared_request_ids { format!("r{sequence}") } else { format!("c{}-{sequence}", context.client) };
        let refused_before = stats.refused;
        let mut op = Operation {
            client: context.client,
            recorder: &context.recorder,
            clock: context.clock,
            http: &http,
            url: &url,
            stats: &mut stats,
        };
        match pick_action(&mut rng) {
            Action::Read => {
                op.read(&key).await;
            }
            Action::Write => op.write(&key, OpKind::Write { value: value.clone() }, &value, None, &request_id).await,
            Action::Cas => {
                // A CAS needs the key's revision: read it (a recorded read), then write
                // conditionally on it.
                if let Some((seen, mod_revision)) = op.read(&key).await {
                    let kind = OpKind::Cas { expected: seen, value: value.clone() };
                    op.write(&key, kind, &value, Some(mod_revision), &request_id).await;
                }
            }
            Action::Delete => op.delete(&key, &request_id).await,
            Action::SetAdd => {
                let element = format!("{SET_PREFIX}c{}-{sequence}", context.client);
                op.write(&element, OpKind::Write { value: value.clone() }, &value, None, &request_id).await;
            }
        }
        // A refused connection means the node is down: back off as a real client would,
        // instead of spending the run's operation budget on a dead node.
        if stats.refused > refused_before {
            tokio::select! {
                _ = context.stop.wait_for(|stop| *stop) => break,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(CLIENT_BACKOFF_MAX);
        } else {
            backoff = CLIENT_BACKOFF_MIN;
        }
    }
    stats
}

/// Applies a random valid HA configuration every few seconds until the run stops (see the
/// module docs) and counts those applied. A change that fails (no leader during a fault, a
/// timeout) is not retried: the configurer is load on the cluster, not a checked client.
async fn run_configurer(
    http: reqwest::Client,
    urls: Arc<Vec<String>>,
    seed: u64,
    mut stop: watch::Receiver<bool>,
) -> ClientStats {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x00c0_f16c_4a9e);
    let mut stats = ClientStats::default();
    loop {
        let pause = Duration::from_millis(rng.random_range(CONFIG_CHANGE_PAUSE_MS_MIN..=CONFIG_CHANGE_PAUSE_MS_MAX));
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => break,
            _ = tokio::time::sleep(pause) => {}
        }
        let url = urls[rng.random_range(0..urls.len())].clone();
        let wanted = random_configuration(&mut rng, urls.len() as u64);
        if apply_configuration(&http, &url, &wanted).await {
            stats.config_changes += 1;
        }
    }
    stats
}

/// The fastest explicit detection the configurer sets: at 40 ms x 3 the election timeout
/// is at least 120 ms, which a loaded CI machine still keeps without spurious elections.
const EXPLICIT_PING_INTERVAL_MS_MIN: u64 = 40;
const EXPLICIT_FAILED_PINGS_MIN: u64 = 3;

/// A random valid HA configuration a run can live with: every key drawn by
/// `haven_core::strategies`, then failure detection set to the `fast` profile (written as
/// a profile: what issue 10 could not read back) or explicit values no slower than it, since
/// a SIGSTOP lasts [`PAUSE_HOLD`](crate::config::PAUSE_HOLD), sized for `fast`, and the others must
/// elect within it (with `lan`, 2.85 s to detect, a run failed on a missed failover), every
/// member a data node that may lead, with no ping targets (one that does not answer
/// withholds a node's candidacy), no alert e-mail or SMTP password file and a hook script
/// that does not exist (nothing leaves the machine, nothing runs).
fn random_configuration(rng: &mut impl Rng, nodes: u64) -> haven_core::ha::config::HaConfig {
    use haven_core::ha::config::NodeHaConfig;
    use haven_core::ha::config::PRIORITY_MAX;
    use haven_core::ha::detection::Profile;
    use haven_core::ha::detection::FAST_FAILED_PINGS;
    use haven_core::ha::detection::FAST_PING_INTERVAL_MS;
    let mut seed = [0u8; 32];
    rng.fill(&mut seed);
    let strategy = haven_core::strategies::ha_config();
    let mut config = haven_core::strategies::draw(&strategy, seed).unwrap_or_default();
    (config.profile, config.ping_interval_ms, config.failed_pings) = if rng.random_bool(0.5) {
        (Some(Profile::Fast), None, None)
    } else {
        let ping_interval_ms = rng.random_range(EXPLICIT_PING_INTERVAL_MS_MIN..=FAST_PING_INTERVAL_MS);
        (None, Some(ping_interval_ms), Some(rng.random_range(EXPLICIT_FAILED_PINGS_MIN..=FAST_FAILED_PINGS)))
    };
    if config.failback {
        let detection_s = config.timing().expected_detection_ms().div_ceil(1000);
        config.stabilisation_delay_s = config.stabilisation_delay_s.max(detection_s);
    }
    config.alert_email = None;
    // A password file must be a private file in the node's secrets dir (refused at draft
    // time otherwise); the nodes of a run have none, so no SMTP login either.
    config.smtp.password_file = None;
    config.smtp.username = None;
    config.hook_script = config.hook_script.map(|_| format!("/nonexistent/haven-nemesis-hook-{}", rng.random::<u16>()));
    config.nodes = (1..=nodes)
        .map(|id| (id, NodeHaConfig { priority: Some(rng.random_range(1..=PRIORITY_MAX)), ..Default::default() }))
        .collect();
    config.normalized()
}

/// Turns the configuration at `url` into `wanted` the way an operator does (discard any
/// leftover draft, edit, apply); true when a new version was applied.
async fn apply_configuration(http: &reqwest::Client, url: &str, wanted: &haven_core::ha::config::HaConfig) -> bool {
    let Some((200, shown)) = crate::api::get_json(http, &format!("{url}/v1/config"), CLIENT_REQUEST_TIMEOUT).await
    else {
        return false;
    };
    let Ok(current) = serde_json::from_value::<haven_core::ha::config::HaConfig>(shown["config"].clone()) else {
        return false;
    };
    let mut set = serde_json::Map::new();
    let mut unset = Vec::new();
    for (key, value) in haven_core::strategies::edits_to(&current, wanted) {
        match value.and_then(|text| serde_json::from_str::<Value>(&text).ok()) {
            Some(value) => {
                set.insert(key, value);
            }
            None => unset.push(key),
        }
    }
    let _ = http.delete(format!("{url}/v1/config/draft")).send().await;
    let edit = http.put(format!("{url}/v1/config/draft")).json(&serde_json::json!({ "set": set, "unset": unset }));
    let Sent::Answered(200, draft, _) = send_json(edit).await else { return false };
    let base_version = draft["draft"]["base_version"].clone();
    let apply = http.post(format!("{url}/v1/config/apply")).json(&serde_json::json!({ "base_version": base_version }));
    matches!(send_json(apply).await, Sent::Answered(200, answer, _) if answer["applied"] == true)
}

/// How a write's answer is recorded.
enum WriteFate {
    Ok(Option<u64>),
    CompareFailed,
    Rejected,
    /// `409 request_id_reused`: not applied (the API says so), but a server fault here,
    /// since no client reuses its own ids.
    ReusedId,
    Unknown {
        unexpected: bool,
    },
}

/// Classifies a write's answer (see the module table).
fn write_fate(status: u16, body: &Value) -> WriteFate {
    let code = body["error"].as_str().unwrap_or_default();
    match status {
        200 => WriteFate::Ok(body["revision"].as_u64()),
        409 if code == "compare_failed" => WriteFate::CompareFailed,
        409 if code == "request_id_reused" => WriteFate::ReusedId,
        409 => WriteFate::Unknown { unexpected: true },
        400..=499 => WriteFate::Rejected,
        // Documented: no leader accepted it, so it was not applied.
        503 if code == "no_leader" => WriteFate::Rejected,
        503 => WriteFate::Unknown { unexpected: false },
        _ => WriteFate::Unknown { unexpected: true },
    }
}

/// One operation's plumbing: who issues it, where it goes, where it is recorded.
pub struct Operation<'a> {
    pub client: u64,
    pub recorder: &'a HistoryRecorder,
    pub clock: Clock,
    pub http: &'a reqwest::Client,
    pub url: &'a str,
    pub stats: &'a mut ClientStats,
}

impl Operation<'_> {
    fn note(&mut self, result: Result<(), haven_check::RecordError>) {
        if result.is_err() {
            self.stats.record_errors += 1;
        }
    }

    /// A linearizable read; on success returns the value seen and its mod_revision (0 when
    /// the key is absent).
    pub async fn read(&mut self, key: &str) -> Option<(Option<String>, u64)> {
        let recorder = self.recorder;
        let id = recorder.invoke(self.client, key, OpKind::Read, self.clock.now_ns());
        let answer = send_json(self.http.get(format!("{}/v1/kv/{key}", self.url))).await;
        let now = self.clock.now_ns();
        match answer {
            Sent::Answered(200, body, _) => match (body["value"].as_str(), body["mod_revision"].as_u64()) {
                (Some(value), Some(mod_revision)) => {
                    let result =
                        recorder.ok(id, OkResult::read(now, Some(value.to_string()), body["revision"].as_u64()));
                    self.note(result);
                    Some((Some(value.to_string()), mod_revision))
                }
                _ => {
                    self.stats.unexpected += 1;
                    let result = recorder.unknown(id);
                    self.note(result);
                    None
                }
            },
            Sent::Answered(404, body, _) if body["error"] == "not_found" => {
                let result = recorder.ok(id, OkResult::read(now, None, body["revision"].as_u64()));
                self.note(result);
                Some((None, 0))
            }
            Sent::Answered(status, _, _) => {
                if status < 400 || status == 500 {
                    self.stats.unexpected += 1;
                }
                // A read that failed observed nothing.
                let result = recorder.fail(id, now);
                self.note(result);
                None
            }
            Sent::Refused => {
                self.stats.refused += 1;
                let result = recorder.fail(id, now);
                self.note(result);
                None
            }
            Sent::Lost => {
                let result = recorder.unknown(id);
                self.note(result);
                None
            }
        }
    }

    /// A put (plain or CAS with `prev_revision`).
    async fn write(&mut self, key: &str, kind: OpKind, value: &str, prev_revision: Option<u64>, request_id: &str) {
        let invoked = self.clock.now_ns();
        let id = self.recorder.invoke(self.client, key, kind, invoked);
        let condition = prev_revision.map(|revision| format!("&prev_revision={revision}")).unwrap_or_default();
        let url = format!("{}/v1/kv/{key}?request_id={request_id}{condition}", self.url);
        let answer = send_json(self.http.put(url).body(value.to_string())).await;
        self.finish_write(id, invoked, answer);
    }

    async fn delete(&mut self, key: &str, request_id: &str) {
        let invoked = self.clock.now_ns();
        let id = self.recorder.invoke(self.client, key, OpKind::Delete, invoked);
        let url = format!("{}/v1/kv/{key}?request_id={request_id}", self.url);
        let answer = send_json(self.http.delete(url)).await;
        self.finish_write(id, invoked, answer);
    }

    /// Keeps the stamp of a committed write (see [`ClientStats::acks`]).
    fn stamp(&mut self, op: u64, window: (u64, u64), header: Option<String>) {
        match header.as_deref().map(Ack::parse) {
            Some(Ok(ack)) => {
                let ack = Ack { mono_ns: self.clock.from_mono(ack.mono_ns), ..ack };
                self.stats.acks.push(AckRecord { op, ack, window: Some(window) });
            }
            Some(Err(_)) => self.stats.malformed_stamps += 1,
            None => self.stats.unstamped += 1,
        }
    }

    fn finish_write(&mut self, id: u64, invoked: u64, answer: Sent) {
        let recorder = self.recorder;
        let now = self.clock.now_ns();
        let result = match answer {
            Sent::Answered(status, body, ack) => match write_fate(status, &body) {
                WriteFate::Ok(revision) => {
                    self.stamp(id, (invoked, now), ack);
                    recorder.ok(id, OkResult::done(now, revision))
                }
                WriteFate::CompareFailed => {
                    self.stamp(id, (invoked, now), ack);
                    recorder.compare_failed(id, now)
                }
                WriteFate::Rejected => recorder.fail(id, now),
                WriteFate::ReusedId => {
                    self.stats.reused_ids += 1;
                    recorder.fail(id, now)
                }
                WriteFate::Unknown { unexpected } => {
                    if unexpected {
                        self.stats.unexpected += 1;
                    }
                    recorder.unknown(id)
                }
            },
            Sent::Refused => {
                self.stats.refused += 1;
                recorder.fail(id, now)
            }
            Sent::Lost => recorder.unknown(id),
        };
        self.note(result);
    }
}

/// What became of a request.
enum Sent {
    /// A complete answer: status, JSON body (`Null` when the body is not JSON) and the
    /// `Haven-Ack` header, if any.
    Answered(u16, Value, Option<String>),
    /// The connection could not be made: the request never left.
    Refused,
    /// Sent, but no complete answer (timeout, reset, truncated body).
    Lost,
}

async fn send_json(request: reqwest::RequestBuilder) -> Sent {
    match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            let ack = response.headers().get(ACK_HEADER).and_then(|value| value.to_str().ok()).map(str::to_string);
            match response.bytes().await {
                Ok(bytes) => Sent::Answered(status, serde_json::from_slice(&bytes).unwrap_or(Value::Null), ack),
                Err(_) => Sent::Lost,
            }
        }
        Err(error) if error.is_connect() => Sent::Refused,
        Err(_) => Sent::Lost,
    }
}

/// Follows the watch stream of node `node` from revision 0, resuming after disconnects
/// from the last revision it was brought to.
async fn watch_node(
    http: reqwest::Client,
    node: usize,
    url: String,
    covered: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) -> WatcherLog {
    let mut log = WatcherLog::new(format!("watcher on node {}", node + 1), "", 0);
    'connect: while !*stop.borrow() {
        let after = covered.load(Ordering::Relaxed);
        let request = http.get(format!("{url}/v1/watch?prefix=&after_revision={after}")).send();
        let response = tokio::select! {
            _ = stop.wait_for(|stop| *stop) => break 'connect,
            response = tokio::time::timeout(WATCH_IDLE_TIMEOUT, request) => response,
        };
        if let Ok(Ok(response)) = response {
            if response.status().as_u16() == 200 {
                let mut stream = response.bytes_stream();
                let mut pending: Vec<u8> = Vec::new();
                loop {
                    let next = tokio::select! {
                        _ = stop.wait_for(|stop| *stop) => break 'connect,
                        next = tokio::time::timeout(WATCH_IDLE_TIMEOUT, stream.next()) => next,
                    };
                    let Ok(Some(Ok(bytes))) = next else { break };
                    pending.extend_from_slice(&bytes);
                    while let Some(end) = pending.iter().position(|byte| *byte == b'\n') {
                        let line: Vec<u8> = pending.drain(..=end).collect();
                        if !record_watch_line(&line, &mut log, &covered) {
                            // An error line (e.g. compacted): the stream is over.
                            continue 'connect;
                        }
                    }
                }
            }
        }
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => break 'connect,
            _ = tokio::time::sleep(WATCH_RECONNECT_PAUSE) => {}
        }
    }
    log
}

/// The committed change log of a healthy node: its watch stream from revision 0 until it
/// has been brought to `until_revision`.
pub async fn committed_log(
    http: &reqwest::Client,
    url: &str,
    until_revision: u64,
    timeout: Duration,
) -> Result<Vec<WatchEvent>, String> {
    let mut log = WatcherLog::new("committed log", "", 0);
    let covered = AtomicU64::new(0);
    let read = async {
        let response = http
            .get(format!("{url}/v1/watch?prefix=&after_revision=0"))
            .send()
            .await
            .map_err(|error| format!("{url}: watch from 0 failed: {error}"))?;
        if response.status().as_u16() != 200 {
            return Err(format!("{url}: watch from 0 answered {}", response.status()));
        }
        let mut stream = response.bytes_stream();
        let mut pending: Vec<u8> = Vec::new();
        while covered.load(Ordering::Relaxed) < until_revision {
            match stream.next().await {
                Some(Ok(bytes)) => pending.extend_from_slice(&bytes),
                Some(Err(error)) => return Err(format!("{url}: watch stream broke: {error}")),
                None => return Err(format!("{url}: watch stream ended early")),
            }
            while let Some(end) = pending.iter().position(|byte| *byte == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                if !record_watch_line(&line, &mut log, &covered) {
                    return Err(format!("{url}: watch stream reported {}", String::from_utf8_lossy(&line).trim()));
                }
            }
        }
        Ok(())
    };
    tokio::time::timeout(timeout, read).await.map_err(|_| {
        format!("{url}: the committed log did not reach revision {until_revision} within {timeout:?}")
    })??;
    Ok(log
        .received
        .into_iter()
        .filter_map(|item| match item {
            haven_check::Received::Event(event) => Some(event),
            haven_check::Received::Progress { .. } => None,
        })
        .collect())
}

/// Records one NDJSON line of a watch stream; false when the stream reported an error.
fn record_watch_line(line: &[u8], log: &mut WatcherLog, covered: &AtomicU64) -> bool {
    let Ok(item) = serde_json::from_slice::<Value>(line) else {
        // Not JSON: the stream is corrupt; reconnect from what was covered.
        return false;
    };
    let revision = item["revision"].as_u64().unwrap_or(0);
    let key = item["key"].as_str().unwrap_or_default();
    match item["type"].as_str() {
        Some("put") => {
            let value = match (item["value"].as_str(), item["value_base64"].as_str()) {
                (Some(text), _) => text.to_string(),
                (None, Some(base64)) => format!("base64:{base64}"),
                (None, None) => String::new(),
            };
            log.event(WatchEvent::put(revision, key, value));
            covered.fetch_max(revision, Ordering::Relaxed);
            true
        }
        Some("delete") => {
            log.event(WatchEvent::delete(revision, key));
            covered.fetch_max(revision, Ordering::Relaxed);
            true
        }
        Some("progress") => {
            log.progress(revision);
            covered.fetch_max(revision, Ordering::Relaxed);
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_classified_as_the_api_documents() {
        let body = |code: &str| serde_json::json!({ "error": code });
        assert!(matches!(write_fate(200, &serde_json::json!({ "revision": 7 })), WriteFate::Ok(Some(7))));
        assert!(matches!(write_fate(409, &body("compare_failed")), WriteFate::CompareFailed));
        assert!(matches!(write_fate(409, &body("conflict")), WriteFate::Unknown { unexpected: true }));
        assert!(matches!(write_fate(409, &body("request_id_reused")), WriteFate::ReusedId));
        assert!(matches!(write_fate(413, &body("value_too_large")), WriteFate::Rejected));
        assert!(matches!(write_fate(503, &body("no_leader")), WriteFate::Rejected));
        assert!(matches!(write_fate(503, &body("outcome_unknown")), WriteFate::Unknown { unexpected: false }));
        assert!(matches!(write_fate(500, &body("internal")), WriteFate::Unknown { unexpected: true }));
    }

    #[test]
    fn the_mix_has_every_action_and_enough_reads() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut counts = std::collections::HashMap::new();
        for _ in 0..10_000 {
            *counts.entry(pick_action(&mut rng)).or_insert(0u32) += 1;
        }
        assert_eq!(counts.len(), 5);
        let reads = counts[&Action::Read] + counts[&Action::Cas];
        let total: u32 = counts.values().sum::<u32>() + counts[&Action::Cas];
        assert!(reads * 100 >= 30 * total, "reads {reads} of {total}");
    }

    #[test]
    fn watch_lines_become_events_and_progress() {
        let mut log = WatcherLog::new("w", "", 0);
        let covered = AtomicU64::new(0);
        assert!(record_watch_line(br#"{"type":"put","key":"k/01","value":"v","revision":3}"#, &mut log, &covered));
        assert!(record_watch_line(br#"{"type":"progress","revision":5}"#, &mut log, &covered));
        assert!(record_watch_line(br#"{"type":"delete","key":"k/01","revision":6}"#, &mut log, &covered));
        assert!(!record_watch_line(br#"{"type":"error","error":"compacted"}"#, &mut log, &covered));
        assert!(!record_watch_line(b"garbage", &mut log, &covered));
        assert_eq!(log.received.len(), 3);
        assert_eq!(covered.load(Ordering::Relaxed), 6);
    }
}
