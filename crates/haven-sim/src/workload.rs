//! The clients: a few concurrent clients doing reads, writes, compare-and-swaps and
//! deletes on a handful of keys, through the same Raft calls `haven-server` makes, each
//! operation recorded for `haven-check`'s linearizability checker.
//!
//! ```text
//!   client ── pick a node ──▶ write: raft.client_write  (ForwardToLeader: follow the hint)
//!                              read, on the leader:  ensure_linearizable(ReadIndex), read local
//!                              read, on a follower:  ReadIndex from the leader over the
//!                                                    simulated network, wait to apply, read local
//!          ◀── ok / compare failed / failed (certainly no effect) / unknown (may apply later)
//! ```
//!
//! Clients reach nodes directly (the simulated faults are between nodes, as in the
//! nemesis, where client links are never cut); a paused node makes its clients wait.
//!
//! Each client first creates its own token and makes its KV writes with it, as a real
//! client does, so request ids are scoped to it (issue 11). In odd seeds the clients number
//! their requests alike (`r1`, `r2`, ... each), so every id is used by every client for a
//! different request: the state machine must treat them as independent requests, and the
//! checkers must find every acknowledged write. Now and then a client applies a random
//! valid HA configuration (every key, every detection profile: `haven_core::strategies`),
//! so snapshots, installs and restarts carry a non-default configuration (issue 10).
//! CAS is revision-based in Haven (`prev_revision`) and value-based in the checker; as in
//! the nemesis, every written value is unique, so "the key is at the revision I read" is
//! exactly "the key holds the value I read".

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use haven_check::HistoryRecorder;
use haven_check::OkResult;
use haven_check::OpKind;
use haven_core::auth::Access;
use haven_core::auth::Role;
use haven_core::kv::Command;
use openraft::errors::ClientWriteError;
use openraft::errors::LinearizableReadError;
use openraft::errors::RaftError;
use openraft::ReadPolicy;

use crate::invariants::Checker;
use crate::network::Net;
use crate::network::Reply;
use crate::network::Rpc;
use crate::rng::SimRng;
use crate::trace;
use crate::trace::Trace;
use crate::types::CommandResult;
use crate::types::LogId;
use crate::types::NodeId;
use crate::types::Request;

/// Concurrent clients, each with one operation in flight.
pub const CLIENTS: u64 = 4;
/// Keys in play: few, so each key's history is long and contended.
pub const KEYS: [&str; 3] = ["k0", "k1", "k2"];
/// Operation mix, in percent (the rest are deletes). Reads are the largest share because
/// a stale read is the cheapest symptom of a second primary.
const READ_PERCENT: u64 = 45;
const WRITE_PERCENT: u64 = 30;
const CAS_PERCENT: u64 = 15;
/// Configuration changes: rare, as an operator's are (about one a second across clients),
/// yet several per run, between snapshots and restarts.
const CONFIG_PERCENT: u64 = 1;
const _: () = assert!(READ_PERCENT + WRITE_PERCENT + CAS_PERCENT + CONFIG_PERCENT < 100, "deletes need a share");
/// Pause between a client's operations: up to 40 ms, about 100 operations a second in all.
const THINK_MS_MAX: u64 = 40;
/// How long a client waits for an answer before it calls the outcome unknown. Longer than
/// a failover under the slowest profile simulated (`lan`: about 1.6 s).
pub const CLIENT_TIMEOUT: Duration = Duration::from_millis(2_500);
/// After an operation that found no leader or a refused connection, a client backs off
/// for 50-800 ms (the nemesis's range) instead of hammering a cluster in an election.
const BACKOFF_MS_MIN: u64 = 50;
const BACKOFF_MS_MAX: u64 = 800;
/// Redirects a write may follow (ForwardToLeader hints) before it gives up.
const FORWARDS_MAX: usize = 2;
/// Client ids of the driver's own operations after the faults.
pub const LIVENESS_CLIENT: u64 = 1_000;
pub const FINAL_READ_CLIENT: u64 = 1_001;

/// Everything a client needs; shared by all clients and the driver.
pub struct Clients {
    pub net: Arc<Net>,
    pub recorder: Arc<HistoryRecorder>,
    pub checker: Arc<Checker>,
    pub trace: Arc<Trace>,
    /// The nodes clients may contact (the cluster's members, kept by the driver).
    pub targets: std::sync::Mutex<Vec<NodeId>>,
    pub stop: AtomicBool,
    /// Mutant: reads are served from local state without a read barrier.
    pub stale_reads: bool,
    pub start: tokio::time::Instant,
    /// Every client numbers its requests `r1`, `r2`, ... (see [`shares_request_ids`]).
    pub shared_request_ids: bool,
}

/// Whether the clients of `seed` all use the same request ids (odd seeds): half the runs
/// check that ids are scoped to their caller.
pub fn shares_request_ids(seed: u64) -> bool {
    seed % 2 == 1
}

/// A proposal's fate as the client sees it.
pub enum Proposed {
    Done {
        node: NodeId,
        log_id: LogId,
        result: CommandResult,
    },
    /// Certainly not applied: refused before it entered a log.
    Rejected(String),
    /// May be applied at any time, or never.
    Unknown(String),
}

impl Clients {
    fn now_ns(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn pick_target(&self, rng: &mut SimRng) -> Option<NodeId> {
        let targets = self.targets.lock().unwrap_or_else(|e| e.into_inner());
        rng.pick(&targets).copied()
    }

    /// Proposes `request` at `node`, following leader hints; never retries an unknown.
    pub async fn propose(&self, mut node: NodeId, request: Request) -> Proposed {
        for _ in 0..=FORWARDS_MAX {
            let Some(endpoint) = self.net.endpoint(node) else {
                return Proposed::Rejected(format!("node {node} refused the connection"));
            };
            let raft = endpoint.raft.clone();
            let clock = endpoint.clock.clone();
            let attempt = tokio::time::timeout(CLIENT_TIMEOUT, async {
                self.net.wait_running(node).await;
                clock.scope(raft.client_write(request.clone())).await
            })
            .await;
            match attempt {
                Err(_) => return Proposed::Unknown(format!("no answer from node {node} in time")),
                Ok(Ok(response)) => return Proposed::Done { node, log_id: response.log_id, result: response.data },
                Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward)))) => match forward.leader_id {
                    Some(leader) if leader != node => node = leader,
                    _ => return Proposed::Rejected("no leader known".into()),
                },
                Ok(Err(error)) => return Proposed::Unknown(error.to_string()),
            }
        }
        Proposed::Rejected("too many redirects".into())
    }

    /// A linearizable read of `key` at `node`: the value and its mod_revision, if present.
    pub async fn read(&self, node: NodeId, key: &str) -> Result<Option<(String, u64)>, String> {
        let endpoint = self.net.endpoint(node).ok_or_else(|| format!("node {node} refused the connection"))?;
        tokio::time::timeout(CLIENT_TIMEOUT, async {
            self.net.wait_running(node).await;
            if !self.stale_reads {
                let barrier = endpoint.clock.scope(endpoint.raft.ensure_linearizable(ReadPolicy::ReadIndex)).await;
                match barrier {
                    Ok(_) => {}
                    Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(forward))) => {
                        let leader = forward.leader_id.ok_or("no leader known")?;
                        let remaining = CLIENT_TIMEOUT;
                        let index = match self.net.call(node, leader, Rpc::ReadIndex, remaining).await {
                            Ok(Reply::ReadIndex(Ok(index))) => index,
                            Ok(Reply::ReadIndex(Err(error))) => return Err(error),
                            Ok(_) => return Err("unexpected reply to read-index".to_string()),
                            Err(error) => return Err(error.to_string()),
                        };
                        endpoint
                            .clock
                            .scope(
                                endpoint.raft.wait(Some(remaining)).applied_index_at_least(Some(index), "read index"),
                            )
                            .await
                            .map_err(|error| error.to_string())?;
                    }
                    Err(error) => return Err(error.to_string()),
                }
            }
            Ok(endpoint.state_machine.read(|applied| {
                applied
                    .kv
                    .get(key)
                    .map(|entry| (String::from_utf8_lossy(&entry.value).into_owned(), entry.mod_revision))
            }))
        })
        .await
        .map_err(|_| format!("no answer from node {node} in time"))?
    }

    /// A read recorded in the history (`client` is a client id or the driver's).
    pub async fn recorded_read(&self, client: u64, node: NodeId, key: &str) -> Option<Option<(String, u64)>> {
        let id = self.recorder.invoke(client, key, OpKind::Read, self.now_ns());
        let result = self.read(node, key).await;
        let now = self.now_ns();
        // Recording cannot fail here: the id is fresh and `now` is not before the invoke.
        match result {
            Ok(seen) => {
                let value = seen.as_ref().map(|(value, _)| value.clone());
                let _ = self.recorder.ok(id, OkResult::read(now, value, seen.as_ref().map(|(_, rev)| *rev)));
                trace!(self.trace, "client {client} read {key} at node {node}: {seen:?}");
                Some(seen)
            }
            Err(reason) => {
                let _ = self.recorder.fail(id, now);
                trace!(self.trace, "client {client} read {key} at node {node} failed: {reason}");
                None
            }
        }
    }

    /// A write, CAS or delete recorded in the history; acknowledged ones are fed to the
    /// checker's primary invariants. The log id when it was acknowledged.
    pub async fn recorded_write(
        &self,
        client: u64,
        node: NodeId,
        key: &str,
        kind: OpKind,
        request: Request,
    ) -> Option<LogId> {
        let id = self.recorder.invoke(client, key, kind.clone(), self.now_ns());
        let proposed = self.propose(node, request).await;
        let now = self.now_ns();
        match proposed {
            Proposed::Done { node, log_id, result } => {
                self.checker.on_ack(node, &log_id, format!("client {client} {kind} on {key}"));
                match result {
                    CommandResult::CompareFailed { .. } => {
                        let _ = self.recorder.compare_failed(id, now);
                    }
                    CommandResult::Put { revision, .. } | CommandResult::Delete { revision, .. } => {
                        let _ = self.recorder.ok(id, OkResult::done(now, Some(revision)));
                    }
                    other => {
                        // Tokens are never revoked and a client never reuses its own ids:
                        // `Unauthorized` or `RequestIdReused` here means ids leaked across
                        // callers (issue 11), or a bug in the simulator.
                        self.checker.report(format!("unexpected result {other:?} for client {client} {kind}"));
                        let _ = self.recorder.unknown(id);
                    }
                }
                Some(log_id)
            }
            Proposed::Rejected(reason) => {
                let _ = self.recorder.fail(id, now);
                trace!(self.trace, "client {client} {kind} on {key} rejected: {reason}");
                None
            }
            Proposed::Unknown(reason) => {
                let _ = self.recorder.unknown(id);
                trace!(self.trace, "client {client} {kind} on {key} unknown: {reason}");
                None
            }
        }
    }
}

/// A stamped request with a unique id (so a duplicate proposal applies at most once).
pub fn request(request_id: String, command: Command, now_ms: u64) -> Request {
    let mut request = Request::new(Some(request_id), command);
    request.now_ms = now_ms;
    request
}

impl Clients {
    /// Proposes a request the server makes for itself (no token) until it is acknowledged
    /// or the run stops, resending the same request (same id) after an unknown outcome.
    /// Acknowledgements feed the primary invariants; the result is returned.
    async fn propose_until_done(&self, client: u64, rng: &mut SimRng, request: Request) -> Option<CommandResult> {
        while !self.stop.load(Ordering::Relaxed) {
            if let Some(node) = self.pick_target(rng) {
                if let Proposed::Done { node, log_id, result } = self.propose(node, request.clone()).await {
                    self.checker.on_ack(node, &log_id, format!("client {client} {request}"));
                    return Some(result);
                }
            }
            tokio::time::sleep(Duration::from_millis(rng.range(BACKOFF_MS_MIN, BACKOFF_MS_MAX))).await;
        }
        None
    }

    /// Creates client `client`'s operator token (as the server does for `haven tokens
    /// create`, with an id made of the client's number so every client's differs) and
    /// returns its id; `None` if the run stopped first.
    async fn create_token(&self, client: u64, rng: &mut SimRng) -> Option<String> {
        let made =
            haven_core::auth::new_token(client.to_be_bytes(), [client as u8; haven_core::auth::TOKEN_SECRET_BYTES]);
        let command = Command::CreateToken {
            id: made.id.clone(),
            name: format!("sim-client-{client}"),
            role: Role::Operator,
            sha256_hex: made.sha256_hex,
            ttl_ms: None,
        };
        let now_ms = self.start.elapsed().as_millis() as u64;
        match self.propose_until_done(client, rng, request(format!("token-c{client}"), command, now_ms)).await {
            Some(CommandResult::TokenCreated { .. }) => Some(made.id),
            Some(other) => {
                self.checker.report(format!("client {client}'s token was not created: {other:?}"));
                None
            }
            None => None,
        }
    }

    /// Applies a random valid HA configuration through a draft, as an operator would:
    /// refusals (a draft someone else changed meanwhile, nothing to change) are answers
    /// too; anything else is a bug.
    async fn change_configuration(&self, client: u64, sequence: u64, rng: &mut SimRng, node: NodeId) {
        let mut seed = [0u8; 32];
        for chunk in seed.chunks_mut(8) {
            chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
        }
        let Some(wanted) = haven_core::strategies::draw(&haven_core::strategies::ha_config(), seed) else { return };
        let Some(endpoint) = self.net.endpoint(node) else { return };
        let current = endpoint.state_machine.read(|applied| applied.kv.admin().ha_config.clone());
        let edits = haven_core::strategies::edits_to(&current.value, &wanted);
        let now_ms = self.start.elapsed().as_millis() as u64;
        let edit = request(format!("cfg-c{client}-{sequence}-edit"), Command::EditHaDraft { edits }, now_ms);
        match self.propose_until_done(client, rng, edit).await {
            Some(CommandResult::Ok { .. } | CommandResult::Refused { .. }) => {}
            Some(other) => return self.checker.report(format!("unexpected result {other:?} for a draft edit")),
            None => return,
        }
        let apply = Command::ApplyHaDraft { base_version: current.version };
        let apply = request(format!("cfg-c{client}-{sequence}-apply"), apply, now_ms);
        match self.propose_until_done(client, rng, apply).await {
            Some(CommandResult::HaConfigApplied { version }) => {
                trace!(self.trace, "client {client} applied HA configuration version {version}")
            }
            Some(CommandResult::Refused { .. }) | None => {}
            Some(other) => self.checker.report(format!("unexpected result {other:?} for a configuration apply")),
        }
    }
}

/// One client's loop, until the driver sets `stop`.
pub async fn run_client(clients: Arc<Clients>, client: u64, mut rng: SimRng) {
    let Some(token) = clients.create_token(client, &mut rng).await else { return };
    let mut sequence = 0u64;
    // What this client last read of each key: (value, mod_revision); CAS compares with it.
    let mut last_seen: BTreeMap<&'static str, Option<(String, u64)>> = BTreeMap::new();
    let mut answered = true;
    while !clients.stop.load(Ordering::Relaxed) {
        let pause_ms = if answered { rng.range(0, THINK_MS_MAX) } else { rng.range(BACKOFF_MS_MIN, BACKOFF_MS_MAX) };
        tokio::time::sleep(Duration::from_millis(pause_ms)).await;
        if clients.stop.load(Ordering::Relaxed) {
            break;
        }
        let Some(node) = clients.pick_target(&mut rng) else { continue };
        let key = KEYS[rng.below(KEYS.len() as u64) as usize];
        let dice = rng.below(100);
        sequence += 1;
        let value = format!("c{client}-{sequence}");
        let request_id =
            if clients.shared_request_ids { format!("r{sequence}") } else { format!("c{client}-{sequence}") };
        let now_ms = clients.start.elapsed().as_millis() as u64;
        // KV writes are made with the client's token, so its ids are its own.
        let request = |command: Command| request(request_id.clone(), command, now_ms).with_auth(&token, Access::Write);
        answered = true;
        if dice < READ_PERCENT {
            match clients.recorded_read(client, node, key).await {
                Some(seen) => {
                    last_seen.insert(key, seen);
                }
                None => answered = false,
            }
        } else if dice < READ_PERCENT + WRITE_PERCENT {
            let command = Command::Put { key: key.into(), value: value.clone().into_bytes(), prev_revision: None };
            let kind = OpKind::Write { value };
            answered = clients.recorded_write(client, node, key, kind, request(command)).await.is_some();
        } else if dice < READ_PERCENT + WRITE_PERCENT + CAS_PERCENT {
            let seen = last_seen.get(key).cloned().flatten();
            let expected = seen.as_ref().map(|(value, _)| value.clone());
            // 0 = the key must be absent, which is what "expected: none" means.
            let prev_revision = seen.as_ref().map_or(0, |(_, revision)| *revision);
            let command =
                Command::Put { key: key.into(), value: value.clone().into_bytes(), prev_revision: Some(prev_revision) };
            let kind = OpKind::Cas { expected, value };
            answered = clients.recorded_write(client, node, key, kind, request(command)).await.is_some();
        } else if dice < READ_PERCENT + WRITE_PERCENT + CAS_PERCENT + CONFIG_PERCENT {
            clients.change_configuration(client, sequence, &mut rng, node).await;
        } else {
            let command = Command::Delete { key: key.into(), prev_revision: None };
            answered = clients.recorded_write(client, node, key, OpKind::Delete, request(command)).await.is_some();
        }
    }
}
