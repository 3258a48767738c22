//! Break-glass: an admin token minted offline from a stopped node's data dir, for when no
//! valid admin token is left (issue 14). Whoever can read and write a node's data dir
//! (its local root) already holds the node's key and its copy of the data, so this grants
//! nothing they do not have; it only gives them the way back that the API no longer can.
//!
//! ```text
//!   haven tokens break-glass --data-dir DIR   (the node is stopped)
//!        │ mint a token; append {id, name, hash, when, who} to DIR/break-glass.json (0600)
//!        │ print the token once (only its hash is kept)
//!        ▼
//!   the node starts ──▶ once the cluster has a leader and an id: CreateToken (request id
//!        "break-glass-<id>", so a repeat after a crash changes nothing) ──▶ audit
//!        "token.break_glass" (who, when, on which node) ──▶ the entry leaves the file
//! ```

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use haven_core::admin::AuditEntry;
use haven_core::auth::validate_token_name;
use haven_core::auth::Role;
use haven_core::kv::Command;
use haven_core::kv::CommandResult;
use haven_core::kv::Request as KvRequest;
use haven_net::PeerRequest;
use haven_net::PeerResponse;
use haven_net::RemoteError;
use tokio::sync::watch;

use crate::Node;

/// The tokens minted offline and not yet registered, in the node's data dir.
pub const BREAK_GLASS_FILE: &str = "break-glass.json";

/// Name of a break-glass token when none is given.
pub const BREAK_GLASS_TOKEN_NAME: &str = "break-glass";

/// Pending tokens one file holds: break-glass is for emergencies, a handful at most; the
/// bound keeps a script in a loop from growing the file without end.
pub const BREAK_GLASS_PENDING_MAX: usize = 16;

/// How often the node tries to register pending tokens until it can (a leader, an id).
pub const REGISTER_POLL_INTERVAL: Duration = Duration::from_millis(200);

/// One token minted offline: everything but the secret.
pub use haven_net::BreakGlassToken as PendingToken;

/// The pending tokens of `data_dir` (none when the file is absent or unreadable).
pub fn pending(data_dir: &Path) -> Vec<PendingToken> {
    crate::ha::read_json(&data_dir.join(BREAK_GLASS_FILE)).unwrap_or_default()
}

fn write_pending(data_dir: &Path, tokens: &[PendingToken]) -> std::io::Result<()> {
    let path = data_dir.join(BREAK_GLASS_FILE);
    if tokens.is_empty() {
        return match std::fs::remove_file(&path) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
            _ => Ok(()),
        };
    }
    let bytes = serde_json::to_vec_pretty(tokens).map_err(std::io::Error::other)?;
    crate::files::write_atomically(&path, &bytes)?;
    // It holds no secret (hashes only), but it is nobody else's business either.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
}

/// Mints an admin token for the stopped node whose data dir is `data_dir`: records its
/// hash there for the node to register when it starts, and returns the token (shown
/// once). Refused while the node runs, on a dir that is not an initialised node's, and
/// for a bad name.
pub fn mint_offline(data_dir: &Path, name: Option<&str>, minted_by: &str) -> anyhow::Result<String> {
    let name = name.unwrap_or(BREAK_GLASS_TOKEN_NAME);
    validate_token_name(name).map_err(|error| anyhow::anyhow!("--name: {error}"))?;
    if !data_dir.join(haven_store::DATABASE_FILE).is_file() {
        anyhow::bail!(
            "{} is not the data dir of a node that has run (no raft.redb); give the data dir of one of the cluster's \
             nodes",
            data_dir.display()
        );
    }
    if let Some(pid) = crate::files::running_pid(data_dir) {
        anyhow::bail!(
            "the node of {} is running (pid {pid}); stop it first: a break-glass token is registered when the node \
             starts",
            data_dir.display()
        );
    }
    let mut tokens = pending(data_dir);
    if tokens.len() >= BREAK_GLASS_PENDING_MAX {
        anyhow::bail!(
            "{} already holds {BREAK_GLASS_PENDING_MAX} tokens waiting to be registered; start the node first",
            data_dir.join(BREAK_GLASS_FILE).display()
        );
    }
    let made = crate::auth::mint_token().map_err(|error| anyhow::anyhow!("{}", error.message))?;
    tokens.push(PendingToken {
        id: made.id.clone(),
        name: name.to_string(),
        sha256_hex: made.sha256_hex,
        minted_ms: crate::auth::now_ms(),
        minted_by: minted_by.to_string(),
    });
    write_pending(data_dir, &tokens)
        .map_err(|error| anyhow::anyhow!("cannot write {}: {error}", data_dir.join(BREAK_GLASS_FILE).display()))?;
    Ok(made.token)
}

/// Registers the tokens minted offline for this node, once the cluster can take them,
/// and records each in the audit log. Runs in the background until done or `stopped`.
pub async fn register_pending(node: Arc<Node>, mut stopped: watch::Receiver<bool>) {
    // Read once: the file changes only while the node is stopped (`mint_offline` refuses a
    // running node), so it need not be read again on every attempt.
    let mut tokens = pending(&node.config.data_dir);
    while let Some(token) = tokens.first().cloned() {
        match register(&node, &token).await {
            Ok(true) => {
                tokens.remove(0);
                if let Err(error) = write_pending(&node.config.data_dir, &tokens) {
                    tracing::warn!(%error, "cannot update {BREAK_GLASS_FILE}; the token is registered all the same");
                    return;
                }
                tracing::warn!(id = %token.id, name = %token.name, "break-glass admin token registered");
                continue;
            }
            Ok(false) => {}
            Err(error) => tracing::debug!(%error, "break-glass token not registered yet"),
        }
        tokio::select! {
            _ = tokio::time::sleep(REGISTER_POLL_INTERVAL) => {}
            _ = stopped.changed() => return,
        }
    }
}

/// One attempt: `Ok(true)` once the token and its audit record are committed. The
/// leader registers it (`register_as_leader`); a follower asks the leader to.
async fn register(node: &Node, token: &PendingToken) -> anyhow::Result<bool> {
    if node.cluster_id().is_none() {
        return Ok(false);
    }
    let result = match node.leader() {
        None => return Ok(false),
        Some((leader, _)) if leader == node.node_id => register_as_leader(node, node.node_id, token).await,
        Some((leader, member)) => {
            let body = PeerRequest::RegisterBreakGlass(token.clone());
            match node.forward(leader, &member, body, crate::node::WRITE_DEADLINE).await {
                Ok(PeerResponse::RegisterBreakGlass(result)) => result,
                Ok(_) => Err(RemoteError::Unavailable("unexpected answer to a break-glass registration".into())),
                Err(error) => Err(error),
            }
        }
    };
    result.map(|()| true).map_err(|error| anyhow::anyhow!("{error}"))
}

/// On the leader: registers `token`, minted offline on node `from`, and records it in the
/// audit log. Repeating it changes nothing (request ids derived from the token's id).
pub async fn register_as_leader(node: &Node, from: u64, token: &PendingToken) -> Result<(), RemoteError> {
    let command = Command::CreateToken {
        id: token.id.clone(),
        name: token.name.clone(),
        role: Role::Admin,
        sha256_hex: token.sha256_hex.clone(),
        ttl_ms: None,
    };
    let mut request = KvRequest::new(Some(format!("break-glass-{}", token.id)), command);
    request.received_by = from;
    match node.propose_as_leader(request).await?.result {
        CommandResult::TokenCreated { .. } => {}
        // Committed before, with another answer remembered: the table decides.
        _ if node.state.read().kv.token(&token.id).is_some() => {}
        other => {
            return Err(RemoteError::Rejected {
                status: 409,
                code: "conflict".into(),
                message: format!("the cluster refused the break-glass token: {other:?}"),
            })
        }
    }
    let entry = AuditEntry::new(
        "token.break_glass",
        format!(
            "admin token {} ({:?}) minted offline from node {from}'s data dir by {} at {} (ms since the epoch), \
             registered when node {from} started",
            token.id, token.name, token.minted_by, token.minted_ms
        ),
    );
    let mut audit = KvRequest::new(Some(format!("break-glass-audit-{}", token.id)), Command::RecordAudit { entry });
    audit.received_by = from;
    node.propose_as_leader(audit).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minting_needs_a_stopped_initialised_node_and_keeps_only_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let error = mint_offline(dir.path(), None, "root@host").unwrap_err().to_string();
        assert!(error.contains("not the data dir of a node that has run"), "{error}");
        std::fs::write(dir.path().join("raft.redb"), b"").unwrap();
        let error = mint_offline(dir.path(), Some("no spaces"), "root@host").unwrap_err().to_string();
        assert!(error.starts_with("--name"), "{error}");
        let token = mint_offline(dir.path(), None, "root@host").unwrap();
        let text = std::fs::read_to_string(dir.path().join(BREAK_GLASS_FILE)).unwrap();
        assert!(!text.contains(&token), "the secret is not kept");
        let tokens = pending(dir.path());
        assert_eq!(tokens.len(), 1);
        assert_eq!(tokens[0].sha256_hex, haven_core::auth::token_sha256_hex(&token));
        assert_eq!((tokens[0].name.as_str(), tokens[0].minted_by.as_str()), (BREAK_GLASS_TOKEN_NAME, "root@host"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(BREAK_GLASS_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // A running node (this test process's pid in haven.pid) is refused.
        std::fs::write(dir.path().join("haven.pid"), std::process::id().to_string()).unwrap();
        let error = mint_offline(dir.path(), None, "root@host").unwrap_err().to_string();
        assert!(error.contains("is running"), "{error}");
    }
}
