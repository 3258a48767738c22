//! The peer handler: checks who is asking and whether its role lets it ask that, then
//! hands the request to Raft or the node.
//!
//! ```text
//!   envelope ──▶ refusal(): this node or the sender detached? meant for this node and this
//!      │         data dir? same cluster? the sender a member (or, while this node joins, a
//!      │         member it learned) whose recorded key is the connection's and whose
//!      │         incarnation is the recorded one? Raft messages in the sender's own name?
//!      │         forwarded writes naming a caller, never a server command? the sender's
//!      │         live process, and this process the one it meant (boot identities)?
//!      ▼
//!   Raft RPCs ─────────────────────────▶ openraft
//!   Forward, Join, RemoveMember,  ─────▶ the leader only: the client's credential is
//!   Switchover                           checked here, against this node's token table,
//!                                        and the request is carried out as that client's
//!   ReadIndex, Ping ───────────────────▶ the node
//! ```
//!
//! A peer may only send what its role in the protocol needs: holding a member's key lets a
//! node speak as that member, and nothing more. A follower forwards its clients' requests
//! with their credentials and vouches for nothing itself, so a member (or an impostor that
//! joined with a join token) cannot make the leader act beyond what a client credential it
//! actually holds allows. Every refusal is logged (rate-limited, see `haven_net::log_limit`),
//! and a refusal that a member's key earned by claiming what it is not is also recorded in
//! the audit log.

use std::sync::Arc;
use std::sync::LazyLock;
use std::sync::Weak;

use futures::future::BoxFuture;
use futures::FutureExt;
use haven_core::admin::AuditEntry;
use haven_core::auth::Access;
use haven_core::auth::Credential;
use haven_core::identity::boot_hex;
use haven_core::identity::BootVerdict;
use haven_core::kv::Request;
use haven_net::log_limit::escaped;
use haven_net::log_limit::Level;
use haven_net::log_limit::RateLimitedLog;
use haven_net::log_limit::LOG_INTERVAL;
use haven_net::Acked;
use haven_net::Expulsion;
use haven_net::ExpulsionKind;
use haven_net::PeerEnvelope;
use haven_net::PeerHandler;
use haven_net::PeerRequest;
use haven_net::PeerResponse;
use haven_net::RemoteError;
use haven_store::NodeId;
use haven_store::Snapshot;
use openraft::raft::AppendEntriesResponse;

use crate::auth::Caller;
use crate::Node;

/// How often at most one sender's refusals are recorded in the audit log: the log line
/// says it at once; the audit log is for people to review and must not fill up with a
/// flood (it keeps `AUDIT_RECORDS_MAX` records).
pub const REFUSAL_AUDIT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// Refused peer requests, one line per sender and interval.
static REFUSALS: LazyLock<RateLimitedLog<String>> =
    LazyLock::new(|| RateLimitedLog::new("peer request refused", Level::Warn, LOG_INTERVAL));

/// Refusals recorded in the audit log, one record per member key and interval.
static REFUSAL_AUDITS: LazyLock<RateLimitedLog<String>> = LazyLock::new(|| {
    RateLimitedLog::new("peer refusal not recorded in the audit log again", Level::Info, REFUSAL_AUDIT_INTERVAL)
});

/// Serves peer requests for one node. Holds the node weakly so a stopped node is freed.
pub struct NodePeerHandler {
    node: Weak<Node>,
}

impl NodePeerHandler {
    pub fn new(node: &Arc<Node>) -> Arc<NodePeerHandler> {
        Arc::new(NodePeerHandler { node: Arc::downgrade(node) })
    }
}

impl PeerHandler for NodePeerHandler {
    fn handle(&self, request: PeerEnvelope, peer_fingerprint: Option<String>) -> BoxFuture<'static, PeerResponse> {
        let node = self.node.upgrade();
        async move {
            match node {
                Some(node) => handle(&node, request, peer_fingerprint).await,
                None => PeerResponse::Refused("node is stopping".into()),
            }
        }
        .boxed()
    }
}

/// Why an envelope must not be served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// A short, fixed name of the rule that refused it (log lines are aggregated by it).
    pub kind: &'static str,
    pub reason: String,
    /// The sender presented a key this node trusts and claimed to be, or asked for, what
    /// that key does not allow (another member's id, a non-member, a request without its
    /// client's authority): recorded in the audit log as well as logged.
    pub violation: bool,
}

impl Refusal {
    fn plain(kind: &'static str, reason: String) -> Option<Refusal> {
        Some(Refusal { kind, reason, violation: false })
    }

    fn violation(kind: &'static str, reason: String) -> Option<Refusal> {
        Some(Refusal { kind, reason, violation: true })
    }
}

/// Whether the sender is no longer a member of this node's cluster, as this node knows
/// for certain (never a guess: a lagging member that has not seen a newer membership must
/// not expel anyone):
///
/// - detached by a teardown this node has applied (its id and incarnation are recorded);
/// - left behind by a recovery: it speaks for a cluster this one was recovered from;
/// - removed: its id and incarnation were recorded as removed before the membership
///   change, and the membership without it is committed here.
pub fn expulsion(node: &Node, envelope: &PeerEnvelope) -> Option<Expulsion> {
    if node.detached().is_some() {
        // A detached node serves no cluster and speaks for none.
        return None;
    }
    let ours = node.cluster_id();
    let from = envelope.from;
    let state = node.state.read();
    let admin = state.kv.admin();
    let cluster = ours.as_deref().unwrap_or("(unknown)");
    // Detached: said only once the membership change that removed the sender is committed
    // here, so the sender (which helps commit it until then) may stop at once.
    let committed_without_sender = || {
        let metrics = node.metrics();
        let membership = &metrics.membership_config;
        let committed = metrics.local_committed.as_ref().map(|log_id| log_id.index());
        membership.get_node(&from).is_none() && membership.log_id().as_ref().map(|log_id| log_id.index()) <= committed
    };
    if let Some(generation) = admin.is_detached(from, &envelope.from_incarnation) {
        if !committed_without_sender() {
            // Still helping to commit the change that removes it.
            return None;
        }
        let kept = node.leader().map(|(id, _)| id);
        return Some(Expulsion {
            kind: ExpulsionKind::Detached { generation, kept },
            cluster_id: ours.clone(),
            by: node.node_id,
            message: format!(
                "node {from} was detached from cluster {cluster} by teardown generation {generation}{}: it serves no \
                 cluster now; its data is kept read-only. Start it as a cluster of its own (`haven recover \
                 --standalone`) or wipe its data dir and join it as a new member",
                kept.map(|kept| format!("; node {kept} continues the cluster alone")).unwrap_or_default()
            ),
        });
    }
    if let (Some(theirs), Some(ours)) = (&envelope.cluster_id, &ours) {
        if theirs != ours {
            let recovered = admin.recovered_from(theirs)?;
            let down: Vec<String> = recovered.confirmed_down.iter().map(u64::to_string).collect();
            return Some(Expulsion {
                kind: ExpulsionKind::RecoveredAway {
                    new_cluster_id: ours.clone(),
                    survivor: recovered.survivor,
                    confirmed_down: recovered.confirmed_down.clone(),
                },
                cluster_id: Some(theirs.clone()),
                by: node.node_id,
                message: format!(
                    "node {from} belongs to cluster {theirs}, which lost its majority and was recovered as cluster \
                     {ours} on node {} (`haven recover`; confirmed down: node(s) {}). Node {from} must never serve \
                     the old cluster again: its data dir is kept, but to come back it must be wiped and join cluster \
                     {ours} as a new member",
                    recovered.survivor,
                    if down.is_empty() { "none".to_string() } else { down.join(", ") }
                ),
            });
        }
    }
    let same_cluster = envelope.cluster_id.is_none() || envelope.cluster_id == ours;
    if same_cluster && admin.was_removed(from, &envelope.from_incarnation) && committed_without_sender() {
        return Some(Expulsion {
            kind: ExpulsionKind::Removed,
            cluster_id: ours.clone(),
            by: node.node_id,
            message: format!(
                "node {from} was removed from cluster {cluster} (`haven members remove` or `haven leave`); it is no \
                 longer a member and never will be again with this data dir. To bring it back, wipe its data dir and \
                 join it as a new member"
            ),
        });
    }
    None
}

/// Why an envelope must not reach Raft or the node, if it must not.
pub fn refusal(node: &Node, envelope: &PeerEnvelope, peer_fingerprint: Option<&str>) -> Option<Refusal> {
    if let Some(detached) = node.detached() {
        return Refusal::plain(
            "this-node-detached",
            format!(
                "detached: node {} left cluster {} by teardown generation {}; it serves no cluster member",
                node.node_id,
                detached.cluster_id.as_deref().unwrap_or("(unknown)"),
                detached.generation
            ),
        );
    }
    let generation = node.state.read().kv.admin().is_detached(envelope.from, &envelope.from_incarnation);
    if let Some(generation) = generation {
        return Refusal::plain(
            "sender-detached",
            format!(
            "detached: node {} was detached by teardown generation {generation}; it can start standalone under a new \
             cluster id, or be wiped and join as a new member",
            envelope.from
        ),
        );
    }
    if envelope.to != 0 && envelope.to != node.node_id {
        return Refusal::plain("misaddressed", format!("this is node {}, not node {}", node.node_id, envelope.to));
    }
    if let Some(expected) = &envelope.to_incarnation {
        if *expected != node.incarnation {
            return Refusal::plain(
                "wrong-incarnation-here",
                format!(
                "incarnation mismatch: node {} expects this data dir to be incarnation {}, but it is {}; the disk was \
                 wiped or replaced, so this node must be removed and join again as a new member",
                envelope.from,
                escaped(expected),
                node.incarnation
            ),
            );
        }
    }
    if let (Some(theirs), Some(ours)) = (&envelope.cluster_id, node.cluster_id()) {
        if *theirs != ours {
            return Refusal::plain(
                "other-cluster",
                format!(
                    "cluster mismatch: node {} belongs to cluster {}, this node to cluster {ours}",
                    envelope.from,
                    escaped(theirs)
                ),
            );
        }
    }
    sender_refusal(node, envelope, peer_fingerprint)
        .or_else(|| body_refusal(envelope))
        .or_else(|| boot_refusal(node, envelope))
}

/// The sender must be a member whose recorded key is the one this connection proved (one
/// member cannot speak for another, and a non-member cannot speak at all), with the data
/// dir the membership records for it.
fn sender_refusal(node: &Node, envelope: &PeerEnvelope, peer_fingerprint: Option<&str>) -> Option<Refusal> {
    let from = envelope.from;
    let Some((recorded_key, recorded_incarnation)) = node.peer_record(from) else {
        return Refusal::violation("not-a-member", format!("node {from} is not a member of this cluster"));
    };
    match peer_fingerprint {
        Some(presented) if presented != recorded_key => {
            return Refusal::violation(
                "wrong-key",
                format!(
                    "node {from} must present key {}, but this connection's key is {presented}",
                    if recorded_key.is_empty() { "(none)" } else { &recorded_key }
                ),
            );
        }
        None if !recorded_key.is_empty() => {
            return Refusal::violation(
                "no-key",
                format!("node {from} must present key {recorded_key}; this connection has none"),
            );
        }
        _ => {}
    }
    match recorded_incarnation {
        Some(recorded) if recorded != envelope.from_incarnation => {
            // Either the member's disk was wiped, or another node is configured with its id
            // (and the member itself may be alive and well): say which, never advise
            // removing a live member.
            let diagnosis = node.membership().get_node(&from).map(|member| {
                let heard_ms_ago = node.local.boots().heard_ms_ago(from, node.local.monotonic_ms());
                haven_core::identity::id_conflict(
                    from,
                    &crate::node::recorded_member(member, heard_ms_ago),
                    &escaped(&envelope.from_incarnation),
                    None,
                )
                .1
            });
            Refusal::plain(
                "stale-incarnation",
                format!(
                    "node {from} has incarnation {}, but the membership records {recorded}: {}",
                    escaped(&envelope.from_incarnation),
                    diagnosis.unwrap_or_else(|| "it must be removed and join again".into())
                ),
            )
        }
        _ => None,
    }
}

/// Why an envelope from an admitted sender must not reach Raft because of which process sent
/// it or which process it was meant for (see `haven_core::identity`): a second live process
/// of one member (a copied data dir started elsewhere) is refused while the first is heard
/// from, and a request meant for another process of this member than this one (the one the
/// sender last heard, now restarted or a copy) is not answered here.
fn boot_refusal(node: &Node, envelope: &PeerEnvelope) -> Option<Refusal> {
    let from = envelope.from;
    let member = from == node.node_id || node.membership().get_node(&from).is_some();
    if member {
        let now_ms = node.local.monotonic_ms();
        let (verdict, lease_ms) = {
            let mut boots = node.local.boots();
            (boots.observe(from, envelope.from_boot, now_ms), boots.lease_ms())
        };
        node.alarm_duplicate_processes();
        if let BootVerdict::Refuse { live_boot, heard_ms_ago } = verdict {
            return Refusal::plain(
                "duplicate-process",
                if from == node.node_id {
                    format!(
                        "{DUPLICATE_PROCESS}: this process (boot {}) is node {from}, and another process (boot {}) \
                         claims to be node {from} too: a copy of node {from}'s data dir runs elsewhere. Stop the \
                         copy; it is refused",
                        boot_hex(live_boot),
                        boot_hex(envelope.from_boot)
                    )
                } else {
                    format!(
                        "{DUPLICATE_PROCESS}: node {from} runs as boot {} (heard from {heard_ms_ago} ms ago), and this \
                         request comes from another process claiming to be node {from} (boot {}). If node {from} was \
                         just restarted this clears within {lease_ms} ms; otherwise a copy of its data dir runs \
                         elsewhere: stop it",
                        boot_hex(live_boot),
                        boot_hex(envelope.from_boot)
                    )
                },
            );
        }
    }
    let lease_ms = node.local.boots().lease_ms();
    match envelope.to_boot {
        Some(expected) if expected != node.local.boot => Refusal::plain(
            "wrong-process",
            format!(
                "wrong process: this is node {} as boot {}, but node {from} last heard node {} as boot {} and meant \
                 that process (restarted since, or another copy of this node runs); requests reach this process once \
                 node {from} has not heard the other for {lease_ms} ms",
                node.node_id,
                boot_hex(node.local.boot),
                node.node_id,
                boot_hex(expected)
            ),
        ),
        _ => None,
    }
}

/// How a refusal of a second process of one member begins (the copy logs and shows it).
pub const DUPLICATE_PROCESS: &str = "duplicate process";

/// What the sender asks must be its own to ask: Raft messages in its own name (a leader's
/// entries and votes name their leader or candidate), forwarded writes naming the caller
/// whose credential comes with them, and never one of the server's own commands.
fn body_refusal(envelope: &PeerEnvelope) -> Option<Refusal> {
    let from = envelope.from;
    let named = match &envelope.body {
        PeerRequest::AppendEntries(rpc) => Some(rpc.vote.leader_id.node_id),
        PeerRequest::Vote(rpc) | PeerRequest::PreVote(rpc) => Some(rpc.vote.leader_id.node_id),
        PeerRequest::TransferLeader(rpc) => Some(rpc.from_leader().leader_id.node_id),
        PeerRequest::SnapshotChunk(chunk) => Some(chunk.vote.leader_id.node_id),
        PeerRequest::Forward { request, credential } => return forward_refusal(request, credential),
        PeerRequest::ReadIndex
        | PeerRequest::Join { .. }
        | PeerRequest::RemoveMember { .. }
        | PeerRequest::Switchover { .. }
        | PeerRequest::Ping
        | PeerRequest::RegisterBreakGlass(_)
        | PeerRequest::StateDigest { .. }
        | PeerRequest::Leaving => None,
    };
    match named {
        Some(named) if named != from => Refusal::violation(
            "impersonation",
            format!("node {from} sent a {} message in the name of node {named}", envelope.body.name()),
        ),
        _ => None,
    }
}

/// A forwarded write must be a client's request, naming the token whose credential comes
/// with it: a request without a caller is one of the server's own, which it proposes
/// itself and never accepts from the wire.
fn forward_refusal(request: &Request, credential: &Credential) -> Option<Refusal> {
    if request.command.is_server_only() {
        return Refusal::violation(
            "server-command",
            format!(
                "a forwarded {} is one of the server's own commands, which no peer may ask for",
                request.command.name()
            ),
        );
    }
    let Some(auth) = &request.auth else {
        return Refusal::violation(
            "no-caller",
            format!(
                "a forwarded {} carries no caller; only client requests are forwarded, with their credential",
                request.command.name()
            ),
        );
    };
    match credential.presented() {
        Ok(presented) if presented.id == auth.token_id => None,
        _ => Refusal::violation(
            "credential-mismatch",
            format!(
                "a forwarded {} names token {} but does not carry that token",
                request.command.name(),
                escaped(&auth.token_id)
            ),
        ),
    }
}

/// Logs a refusal (rate-limited per sender) and, for a violation by a trusted key on the
/// leader, records it in the audit log (rate-limited per key).
fn report_refusal(node: &Arc<Node>, envelope: &PeerEnvelope, peer_fingerprint: Option<&str>, refusal: &Refusal) {
    let fingerprint = peer_fingerprint.unwrap_or("none");
    let key = format!("{} by node {} with key {fingerprint}", refusal.kind, envelope.from);
    if let Some(suppressed) = REFUSALS.admit(key) {
        tracing::warn!(
            from = envelope.from,
            request = envelope.body.name(),
            fingerprint,
            kind = refusal.kind,
            reason = %refusal.reason,
            suppressed,
            "peer request refused"
        );
    }
    let Some(presented) = peer_fingerprint else { return };
    if !refusal.violation || !node.is_leader() || REFUSAL_AUDITS.admit(presented.to_string()).is_none() {
        return;
    }
    let owner = node.membership().nodes().find(|(_, member)| member.fingerprint == presented).map(|(id, _)| *id);
    let holder = owner.map_or_else(|| "a key learned while joining".to_string(), |id| format!("node {id}'s key"));
    let entry = AuditEntry::new(
        "peer.refused",
        format!(
            "a peer with {holder} ({presented}) sent a {} as node {}: {}",
            envelope.body.name(),
            envelope.from,
            refusal.reason
        ),
    );
    let node = node.clone();
    // Not on the answer's path: the refusal is answered at once.
    tokio::spawn(async move {
        node.record_audit(entry).await;
    });
}

async fn handle(node: &Arc<Node>, envelope: PeerEnvelope, peer_fingerprint: Option<String>) -> PeerResponse {
    // A node that is no longer a member is told why (its key is accepted for that alone:
    // `Node::sync_pins`; anything else it asks is refused below as a non-member's).
    if let Some(expulsion) = expulsion(node, &envelope) {
        return PeerResponse::Expelled(expulsion);
    }
    if let Some(refused) = refusal(node, &envelope, peer_fingerprint.as_deref()) {
        report_refusal(node, &envelope, peer_fingerprint.as_deref(), &refused);
        return PeerResponse::Refused(refused.reason);
    }
    let from = envelope.from;
    let from_boot = envelope.from_boot;
    if let Some(mark) = envelope.to_durable {
        node.note_durable_mark(mark);
    }
    let raft = &node.raft;
    if let Some(refused) = rewound_refusal(node, &envelope.body) {
        return refused;
    }
    match envelope.body {
        PeerRequest::AppendEntries(rpc) => {
            let result = raft.append_entries(rpc).await;
            if result.as_ref().is_ok_and(|response| !matches!(response, AppendEntriesResponse::HigherVote(_))) {
                // A leader this node accepts: its token table is as fresh as that leader's.
                node.heard_from_leader();
            }
            PeerResponse::AppendEntries(result.map_err(|e| e.to_string()))
        }
        PeerRequest::Vote(rpc) => PeerResponse::Vote(raft.vote(rpc).await.map_err(|e| e.to_string())),
        PeerRequest::PreVote(rpc) => PeerResponse::Vote(raft.pre_vote(rpc).await.map_err(|e| e.to_string())),
        PeerRequest::TransferLeader(rpc) => {
            PeerResponse::TransferLeader(raft.handle_transfer_leader(rpc).await.map_err(|e| e.to_string()))
        }
        PeerRequest::SnapshotChunk(chunk) => {
            let complete = node.assembler.lock().await.accept(chunk);
            let result = match complete {
                Ok(None) => Ok(None),
                Ok(Some(snapshot)) => {
                    let snapshot_data = Snapshot { meta: snapshot.meta, snapshot: std::io::Cursor::new(snapshot.data) };
                    let installed = raft.install_full_snapshot(snapshot.vote, snapshot_data).await;
                    if installed.is_ok() {
                        // The leader's state up to the snapshot, token table included.
                        node.heard_from_leader();
                    }
                    installed.map(Some).map_err(|e| e.to_string())
                }
                Err(reason) => {
                    tracing::warn!(from = envelope.from, %reason, "snapshot transfer refused");
                    Err(reason)
                }
            };
            PeerResponse::Snapshot(result)
        }
        PeerRequest::Forward { request, credential } => {
            PeerResponse::Forward(forwarded_write(node, from, request, &credential).await)
        }
        PeerRequest::ReadIndex => PeerResponse::ReadIndex(node.read_index_as_leader().await),
        PeerRequest::Join { request, credential } => PeerResponse::Join(
            match leader_caller(node, from, &credential, route_access("/v1/members/join", "post")).await {
                Ok(caller) => node.join_as_leader(&caller, request).await,
                Err(error) => Err(error),
            },
        ),
        PeerRequest::RemoveMember { node_id, force, credential } => PeerResponse::RemoveMember(
            match leader_caller(node, from, &credential, route_access("/v1/members/{id}", "delete")).await {
                Ok(caller) => node.remove_as_leader(&caller, node_id, force).await,
                Err(error) => Err(error),
            },
        ),
        PeerRequest::Switchover { to, credential } => PeerResponse::Switchover(
            match leader_caller(node, from, &credential, route_access("/v1/switchover", "post")).await {
                Ok(caller) => node.switchover_as_leader(&caller, to).await,
                Err(error) => Err(error),
            },
        ),
        PeerRequest::Ping => PeerResponse::Ping(node.ping_info()),
        PeerRequest::RegisterBreakGlass(token) => PeerResponse::RegisterBreakGlass(if node.is_leader() {
            crate::break_glass::register_as_leader(node, from, &token).await
        } else {
            Err(RemoteError::NotLeader { leader: node.leader().map(|(id, _)| id) })
        }),
        PeerRequest::StateDigest { index } => PeerResponse::StateDigest(node.state.digests().answer(index)),
        PeerRequest::Leaving => {
            node.local.boots().forget(from, from_boot);
            tracing::info!(member = from, boot = %boot_hex(from_boot), "member process stopped; its restart is accepted at once");
            PeerResponse::Left
        }
    }
}

/// While this node's storage is behind what it was recorded as holding durably
/// (`Node::rewound`), it grants no vote to a candidate whose log ends below that mark (the
/// candidate could lack acknowledged writes this node once counted for) and takes no
/// leadership hand-over. A candidate holding the mark may still get its vote: that keeps a
/// cluster whose other nodes are intact able to elect, and this node then catches up.
fn rewound_refusal(node: &Node, body: &PeerRequest) -> Option<PeerResponse> {
    // Only these are refused; every other envelope (appends above all) skips the check.
    if !matches!(body, PeerRequest::Vote(_) | PeerRequest::PreVote(_) | PeerRequest::TransferLeader(_)) {
        return None;
    }
    let (log_end, mark) = node.rewound()?;
    let reason = |what: &str| {
        format!(
            "node {} refuses {what}: its log ends at {log_end}, below the {mark} it was recorded as holding durably \
             (its storage went back in time); it votes again once it has caught up",
            node.node_id
        )
    };
    match body {
        PeerRequest::Vote(rpc) | PeerRequest::PreVote(rpc)
            if rpc.last_log_id.as_ref().map_or(0, |log_id| log_id.index()) < mark =>
        {
            Some(PeerResponse::Vote(Err(reason("the vote"))))
        }
        PeerRequest::TransferLeader(_) => Some(PeerResponse::TransferLeader(Err(reason("leadership")))),
        _ => None,
    }
}

/// The access the client route needs that a forwarded action came through (one table:
/// `crate::api::ROUTES`); admin should the table ever lose the route.
fn route_access(path: &str, method: &str) -> Access {
    crate::api::access_of(path, method).unwrap_or(Access::Admin)
}

/// On the leader: the client whose credential a follower forwarded, checked here for
/// `access`, with the forwarding member as the node that received the request.
async fn leader_caller(
    node: &Node,
    from: NodeId,
    credential: &Credential,
    access: Access,
) -> Result<Caller, RemoteError> {
    if !node.is_leader() {
        return Err(RemoteError::NotLeader { leader: node.leader().map(|(id, _)| id) });
    }
    let mut caller = crate::auth::authenticate(node, credential, access, &format!("node {from} (forwarded)")).await?;
    caller.received_by = from;
    Ok(caller)
}

/// On the leader: a write a follower received from a client, proposed as that client's once
/// its credential checked out here for the route's access (`apply` checks the command's own
/// access again).
async fn forwarded_write(
    node: &Node,
    from: NodeId,
    mut request: Request,
    credential: &Credential,
) -> Result<Acked, RemoteError> {
    let Some(auth) = request.auth.take() else {
        // `forward_refusal` refused it already; kept so this function stands on its own.
        return Err(RemoteError::Rejected {
            status: 401,
            code: "unauthorized".into(),
            message: "a forwarded request must carry its caller".into(),
        });
    };
    let caller = leader_caller(node, from, credential, auth.access).await?;
    node.propose_as_leader(caller.stamp(request)).await
}

#[cfg(test)]
mod tests {
    use haven_core::auth::Access;
    use haven_core::kv::Command;
    use haven_store::Vote;
    use openraft::raft::AppendEntriesRequest;
    use openraft::raft::TransferLeaderRequest;
    use openraft::raft::VoteRequest;

    use super::*;

    fn from(node: NodeId, body: PeerRequest) -> PeerEnvelope {
        PeerEnvelope {
            from: node,
            from_incarnation: "i".into(),
            to: 0,
            to_incarnation: None,
            cluster_id: None,
            body,
            from_boot: 1,
            to_boot: None,
            to_durable: None,
        }
    }

    /// Raft messages only in the sender's own name: entries and votes name their leader or
    /// candidate, and node 2 cannot send node 1's.
    #[test]
    fn raft_messages_must_name_their_sender() {
        let vote = Vote::new(3, 1);
        let append = || {
            PeerRequest::AppendEntries(AppendEntriesRequest {
                vote,
                prev_log_id: None,
                entries: Vec::new(),
                leader_commit: None,
            })
        };
        let bodies = [
            append(),
            PeerRequest::Vote(VoteRequest::new(vote, None)),
            PeerRequest::PreVote(VoteRequest::new(vote, None)),
            PeerRequest::TransferLeader(TransferLeaderRequest::new(vote, 2, None)),
        ];
        for body in bodies {
            let name = body.name();
            assert_eq!(body_refusal(&from(1, body.clone())), None, "{name} in its own name");
            let refused = body_refusal(&from(2, body)).unwrap_or_else(|| panic!("{name} in node 1's name"));
            assert!(refused.violation && refused.kind == "impersonation", "{name}: {refused:?}");
        }
        assert_eq!(body_refusal(&from(2, PeerRequest::Ping)), None);
    }

    /// A forwarded write must name a caller whose credential it carries, and never be one of
    /// the server's own commands.
    #[test]
    fn forwarded_writes_carry_their_caller() {
        let made = haven_core::auth::new_token([1; 8], [2; 32]);
        let credential = Credential::new(made.token.clone());
        let put = Command::Put { key: "k".into(), value: b"v".to_vec(), prev_revision: None };
        let forward = |request: Request, credential: &Credential| {
            body_refusal(&from(2, PeerRequest::Forward { request, credential: credential.clone() }))
        };
        let good = Request::new(None, put.clone()).with_auth(&made.id, Access::Write);
        assert_eq!(forward(good.clone(), &credential), None);
        let kinds = [
            (forward(Request::new(None, put.clone()), &credential), "no-caller"),
            (forward(good.clone(), &Credential::new("hvn_garbage")), "credential-mismatch"),
            (
                forward(good, &Credential::new(haven_core::auth::new_token([3; 8], [2; 32]).token)),
                "credential-mismatch",
            ),
            (
                forward(
                    Request::new(None, Command::InitCluster { cluster_id: "x".into() })
                        .with_auth(&made.id, Access::Admin),
                    &credential,
                ),
                "server-command",
            ),
        ];
        for (refused, kind) in kinds {
            assert_eq!(refused.map(|r| (r.kind, r.violation)), Some((kind, true)));
        }
    }
}
