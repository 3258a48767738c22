//! Guided recovery after permanent quorum loss (`haven recover`), and a detached node
//! started standalone. The last resort: this node becomes a new one-voter cluster with all
//! its data and a new cluster id; the old members can only come back as new members with
//! wiped data dirs.
//!
//! ```text
//!   POST /v1/recover {confirm_down, dry_run}
//!     refuse if a majority is reachable (nothing to recover: use remove/switchover)
//!     refuse unless this node holds the newest log of every reachable survivor
//!     refuse unless confirm_down names exactly the voters this node cannot reach
//!     write DATA_DIR/recover.json ──▶ restart the process
//!   start: recover.json present ──▶ reinitialize_as_single_voter (offline rewrite)
//!          ──▶ recover.done.json ──▶ Raft elects this node alone ──▶ audit "recover"
//! ```

use std::collections::BTreeSet;
use std::path::Path;

use axum::extract::Extension;
use axum::extract::Request;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use haven_core::admin::AuditChange;
use haven_core::admin::AuditEntry;
use haven_store::identity::new_random_id;
use haven_store::HavenNode;
use haven_store::NodeId;
use serde::Deserialize;
use serde::Serialize;
use serde_json::json;
use std::sync::Arc;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::Node;

/// Written by the recover request, read at the next start, which carries it out.
pub const RECOVER_FILE: &str = "recover.json";
/// Left after the rewrite until the new cluster has recorded the recovery in its audit log.
pub const RECOVER_DONE_FILE: &str = "recover.done.json";

/// What the operator asked for, kept across the restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoverPlan {
    pub new_cluster_id: String,
    pub old_cluster_id: Option<String>,
    pub confirmed_down: Vec<NodeId>,
    /// The name of the token that asked (for the audit record written afterwards).
    pub actor: String,
    /// A detached node started standalone, not a quorum-loss recovery.
    pub standalone: bool,
}

/// Body of `POST /v1/recover`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecoverBody {
    #[serde(default)]
    confirm_down: Vec<NodeId>,
    #[serde(default)]
    standalone: bool,
    #[serde(default)]
    dry_run: bool,
}

/// One voter as this node sees it now.
#[derive(Debug, Clone, Serialize)]
pub struct Survivor {
    pub id: NodeId,
    pub reachable: bool,
    pub last_log_index: Option<u64>,
    pub term: Option<u64>,
}

fn refuse(message: String) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, "recover_refused", message)
}

/// The checks of a quorum-loss recovery, as a pure decision over what this node sees:
/// `voters` with reachability and last log index (this node's own included).
pub fn check_recovery(this: NodeId, survivors: &[Survivor], confirm_down: &[NodeId]) -> Result<(), String> {
    let voters = survivors.len();
    let reachable: Vec<&Survivor> = survivors.iter().filter(|s| s.reachable).collect();
    let majority = voters / 2 + 1;
    if reachable.len() >= majority {
        return Err(format!(
            "{} of {voters} voters are reachable, a majority: the cluster can elect a primary by itself. Recovery is \
             only for a majority lost for good; use `haven members remove` for single dead members",
            reachable.len()
        ));
    }
    let own = survivors.iter().find(|s| s.id == this).and_then(|s| s.last_log_index).unwrap_or(0);
    if let Some(newer) = reachable.iter().find(|s| s.id != this && s.last_log_index.unwrap_or(0) > own) {
        return Err(format!(
            "node {} holds a newer log (last index {}) than this node ({own}); run recover there, or data it holds \
             would be lost",
            newer.id,
            newer.last_log_index.unwrap_or(0)
        ));
    }
    if reachable.iter().any(|s| s.id != this && s.last_log_index.is_none()) {
        return Err("a reachable survivor did not report its last log entry; retry in a second".into());
    }
    let down: BTreeSet<NodeId> = survivors.iter().filter(|s| !s.reachable).map(|s| s.id).collect();
    let confirmed: BTreeSet<NodeId> = confirm_down.iter().copied().collect();
    if down != confirmed {
        return Err(format!(
            "--confirm-down must name exactly the voters this node cannot reach: {down:?} (given {confirmed:?}). \
             Only confirm nodes you know are gone for good: if one comes back with the old cluster, there are two"
        ));
    }
    Ok(())
}

/// `POST /v1/recover`.
pub async fn recover(
    State(node): State<Arc<Node>>,
    Extension(caller): Extension<Caller>,
    request: Request,
) -> Result<axum::response::Response, ApiError> {
    let body: RecoverBody = crate::admin_api::json_body(request, "recover").await?;
    let actor = {
        let state = node.state.read();
        state.kv.token(&caller.token_id).map_or_else(|| caller.token_id.clone(), |token| token.name.clone())
    };
    let survivors = survivors(&node);
    if body.standalone {
        let Some(detachment) = node.detachment() else {
            return Err(refuse(
                "--standalone is for a node detached by a teardown; this node is a cluster member (use \
                 --confirm-down after a quorum loss)"
                    .into(),
            ));
        };
        if !body.dry_run && node.detached().is_none() {
            // The teardown naming it is applied here; it leaves now rather than at the end
            // of the grace period.
            node.mark_detached(detachment);
        }
    } else {
        if node.detachment().is_some() {
            return Err(refuse("this node is detached: start it standalone with --standalone".into()));
        }
        // The voters a recovery here would have to confirm down: those this node cannot reach.
        let needed: Vec<NodeId> = survivors.iter().filter(|s| !s.reachable).map(|s| s.id).collect();
        if body.dry_run {
            // The way to decide what to confirm (issue 14): every voter's reachability and
            // log, whether a recovery here would be refused and why, and what to confirm;
            // never refused itself. Without a confirmation, the needed one is assumed.
            let confirm = if body.confirm_down.is_empty() { needed.clone() } else { body.confirm_down.clone() };
            let verdict = check_recovery(node.node_id, &survivors, &confirm).err();
            return Ok(Json(json!({
                "survivors": survivors,
                "this_node": node.node_id,
                "new_cluster_id": null,
                "restarting": false,
                "would_refuse": verdict,
                "confirm_down": needed,
            }))
            .into_response());
        }
        check_recovery(node.node_id, &survivors, &body.confirm_down).map_err(refuse)?;
    }
    let plan = RecoverPlan {
        new_cluster_id: new_random_id(),
        old_cluster_id: node.cluster_id(),
        confirmed_down: body.confirm_down.clone(),
        actor,
        standalone: body.standalone,
    };
    // The restart rewrites this state into a snapshot: make sure it reads back before
    // promising anything, so a recovery never leaves a node that cannot start (issue 10).
    check_rewrite_reads_back(&node, &plan).await?;
    if !body.dry_run {
        crate::ha::write_json(&node.config.data_dir.join(RECOVER_FILE), &plan)
            .map_err(|error| ApiError::internal(format!("cannot record the recovery plan: {error}")))?;
        tracing::warn!(new_cluster_id = %plan.new_cluster_id, confirmed_down = ?plan.confirmed_down, "recovery: restarting as a new one-voter cluster");
    }
    let answer = json!({
        "survivors": survivors,
        "this_node": node.node_id,
        "new_cluster_id": if body.dry_run { None } else { Some(plan.new_cluster_id) },
        "restarting": !body.dry_run,
    });
    if body.dry_run {
        return Ok(Json(answer).into_response());
    }
    // After the answer has left: a restart that beat it (the old code) left the operator
    // with a dropped connection, not knowing whether the recovery started.
    Ok(crate::run::answer_then_restart(node, &answer))
}

/// Encodes the state as the rewrite will (under the new cluster id) and checks it decodes
/// to the same state. On a blocking thread: the state may be tens of megabytes.
async fn check_rewrite_reads_back(node: &Node, plan: &RecoverPlan) -> Result<(), ApiError> {
    let mut applied = node.state.read().clone();
    let new_cluster_id = plan.new_cluster_id.clone();
    let recovery = (!plan.standalone)
        .then(|| haven_store::reinit::recovery_record(&applied, node.node_id, plan.confirmed_down.clone()));
    tokio::task::spawn_blocking(move || {
        applied.kv.move_to_new_cluster(&new_cluster_id, recovery);
        let data = haven_store::state_machine::encode_applied(&applied)?;
        haven_store::reinit::check_reads_back(&applied, &data)
    })
    .await
    .map_err(|error| ApiError::internal(format!("the recovery check did not finish: {error}")))?
    .map_err(|error| ApiError::internal(format!("cannot recover this node: {error}")))
}

/// Every voter with what this node knows of it now (its own log included).
fn survivors(node: &Node) -> Vec<Survivor> {
    let metrics = node.metrics();
    metrics
        .membership_config
        .voter_ids()
        .map(|id| {
            if id == node.node_id {
                return Survivor {
                    id,
                    reachable: true,
                    last_log_index: Some(metrics.last_log_index.unwrap_or(0)),
                    term: Some(metrics.current_term),
                };
            }
            let reachable = node.is_reachable(id);
            let info = node.probe(id).info.filter(|_| reachable);
            Survivor {
                id,
                reachable,
                last_log_index: info.as_ref().map(|info| info.last_log_index),
                term: info.as_ref().map(|info| info.term),
            }
        })
        .collect()
}

/// At start, before the store is opened: carries out a recovery asked for before the
/// restart. `this_node` is how the sole member is reached (incarnation left empty: the
/// data dir's own is kept).
pub fn carry_out_pending(
    data_dir: &Path,
    node_id: NodeId,
    this_node: HavenNode,
    history_revisions: u64,
) -> anyhow::Result<()> {
    let path = data_dir.join(RECOVER_FILE);
    let Some(plan) = crate::ha::read_json::<RecoverPlan>(&path) else {
        return Ok(());
    };
    let summary = if plan.standalone {
        // A detached node's own cluster: the old cluster goes on elsewhere, nobody was
        // recovered away.
        haven_store::reinit::reinitialize_as_single_voter(
            data_dir,
            node_id,
            this_node,
            &plan.new_cluster_id,
            history_revisions,
        )
    } else {
        haven_store::reinit::reinitialize_after_quorum_loss(
            data_dir,
            node_id,
            this_node,
            &plan.new_cluster_id,
            history_revisions,
            plan.confirmed_down.clone(),
        )
    }
    .map_err(|error| anyhow::anyhow!("recovery failed, nothing changed: {error}"))?;
    tracing::warn!(
        new_cluster_id = %summary.new_cluster_id,
        old_cluster_id = ?summary.old_cluster_id,
        revision = summary.revision,
        entries_applied = summary.entries_applied,
        "recovered: this node is now a one-voter cluster with all its data"
    );
    // Order: the rewrite is done; the detachment no longer applies; the plan becomes the
    // record the new cluster audits once it leads.
    let _ = std::fs::remove_file(data_dir.join(crate::ha::DETACHED_FILE));
    std::fs::rename(&path, data_dir.join(RECOVER_DONE_FILE))?;
    Ok(())
}

impl Node {
    /// As the leader of a recovered cluster: records the recovery in the audit log once.
    pub async fn audit_finished_recovery(&self) {
        let path = self.config.data_dir.join(RECOVER_DONE_FILE);
        let Some(plan) = crate::ha::read_json::<RecoverPlan>(&path) else {
            return;
        };
        if !self.is_leader() {
            return;
        }
        let (action, summary) = if plan.standalone {
            (
                "standalone",
                format!("detached node {} started standalone as cluster {}", self.node_id, plan.new_cluster_id),
            )
        } else {
            (
                "recover",
                format!(
                    "node {} recovered as a one-voter cluster {} after quorum loss (asked by {}); confirmed down: {:?}",
                    self.node_id, plan.new_cluster_id, plan.actor, plan.confirmed_down
                ),
            )
        };
        let entry = AuditEntry::new(action, summary).with_change(AuditChange::new(
            "cluster_id",
            plan.old_cluster_id.clone(),
            Some(plan.new_cluster_id.clone()),
        ));
        if self.record_audit(entry).await {
            let _ = std::fs::remove_file(&path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn survivor(id: NodeId, reachable: bool, last: Option<u64>) -> Survivor {
        Survivor { id, reachable, last_log_index: last, term: None }
    }

    #[test]
    fn recovery_needs_a_lost_majority_the_newest_log_and_exact_confirmation() {
        // 3 voters, only this node (2) left.
        let lone = [survivor(1, false, None), survivor(2, true, Some(40)), survivor(3, false, None)];
        assert_eq!(check_recovery(2, &lone, &[1, 3]), Ok(()));
        assert!(check_recovery(2, &lone, &[1]).unwrap_err().contains("exactly"));
        assert!(check_recovery(2, &lone, &[1, 3, 4]).unwrap_err().contains("exactly"));
        // A majority reachable: nothing to recover.
        let healthy = [survivor(1, true, Some(40)), survivor(2, true, Some(40)), survivor(3, false, None)];
        assert!(check_recovery(2, &healthy, &[3]).unwrap_err().contains("majority"));
        // 5 voters, two survivors: only the one with the newest log may recover.
        let two = [
            survivor(1, false, None),
            survivor(2, true, Some(40)),
            survivor(3, true, Some(45)),
            survivor(4, false, None),
            survivor(5, false, None),
        ];
        assert!(check_recovery(2, &two, &[1, 4, 5]).unwrap_err().contains("node 3 holds a newer log"));
        assert_eq!(check_recovery(3, &two, &[1, 4, 5]), Ok(()));
        // A survivor that did not say how far its log goes: wait.
        let silent = [
            survivor(1, false, None),
            survivor(2, true, Some(40)),
            survivor(3, true, None),
            survivor(4, false, None),
            survivor(5, false, None),
        ];
        assert!(check_recovery(2, &silent, &[1, 4, 5]).is_err());
    }
}
