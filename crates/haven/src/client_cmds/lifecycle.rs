//! `haven teardown` and `haven recover`: ending a cluster on purpose, and starting again
//! from a survivor after a majority is lost for good.
//!
//! ```text
//!   teardown ──▶ POST /v1/teardown on the primary (followed there once from another node)
//!               the primary continues alone with all data; the others are detached
//!   recover  ──▶ POST /v1/recover on the FIRST endpoint only: that node becomes a new
//!               one-voter cluster (after a quorum loss, or a detached node: --standalone)
//! ```

use std::process::ExitCode;
use std::time::Duration;
use std::time::Instant;

use haven_client::Error;
use haven_client::RecoverRequest;
use haven_client::RecoverResult;
use haven_client::TeardownResult;

use super::explain;
use super::finish;
use super::output::print_json;
use super::output::print_line;
use super::output::table;
use super::ClientOpts;

/// `haven teardown`.
#[derive(clap::Args, Debug, Clone)]
pub struct TeardownArgs {
    /// Tear down even when the cluster is not stable (members that are down or cut off
    /// learn they were detached only when they reach the primary again).
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub client: ClientOpts,
}

/// `haven recover`.
#[derive(clap::Args, Debug, Clone)]
pub struct RecoverArgs {
    /// The voters you know are gone for good, comma-separated: exactly those the node
    /// cannot reach. If one comes back with the old cluster, there are two clusters.
    #[arg(
        long,
        value_name = "ID,ID",
        value_delimiter = ',',
        required_unless_present = "standalone",
        conflicts_with = "standalone"
    )]
    pub confirm_down: Vec<u64>,
    /// Start a node detached by a teardown as a cluster of its own (no --confirm-down).
    #[arg(long)]
    pub standalone: bool,
    /// Check and show what would happen; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub client: ClientOpts,
}

/// Runs `haven teardown`.
pub async fn teardown(args: TeardownArgs) -> anyhow::Result<ExitCode> {
    finish(teardown_inner(args).await)
}

async fn teardown_inner(args: TeardownArgs) -> anyhow::Result<ExitCode> {
    let client = args.client.client(&[])?;
    let result = client.teardown(args.force).await.map_err(|error| match error {
        Error::NotPrimary { message, leader_url } => anyhow::anyhow!(
            "cannot tear down: {message}{}",
            leader_url.map_or_else(String::new, |url| format!(
                "; that address is not a member the cluster reports, so it was not followed: give it with \
                 --endpoints {url}"
            ))
        ),
        error if error.code() == Some(haven_client::CODE_NOT_STABLE) => match error {
            Error::Api { message, .. } => anyhow::anyhow!("cannot tear down: {message}"),
            other => explain("cannot tear down", other),
        },
        error @ Error::OutcomeUnknown { .. } => anyhow::anyhow!(
            "{}; `haven status` on the primary shows whether it stands alone now",
            explain("cannot tell whether the teardown happened", error)
        ),
        error => explain("cannot tear down", error),
    })?;
    if args.client.json {
        print_json(&result)?;
    } else {
        for line in describe_teardown(&result) {
            print_line(&line)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn describe_teardown(result: &TeardownResult) -> Vec<String> {
    let ids: Vec<String> = result.detached.iter().map(u64::to_string).collect();
    vec![
        format!(
            "teardown generation {}: node {} continues alone{} with all the data",
            result.generation,
            result.standalone,
            result.cluster_id.as_deref().map(|id| format!(" as cluster {id}")).unwrap_or_default()
        ),
        format!(
            "detached: node(s) {}. They serve no cluster now; start one as a cluster of its own with `haven recover \
             --standalone --endpoints ITS_URL`, or wipe its data dir and join it as a new member",
            ids.join(", ")
        ),
    ]
}

/// How long `haven recover` waits for the node to come back as the new cluster's leader
/// before it says the recovery failed. The rewrite replays the log since the last snapshot
/// (at most `snapshot_threshold` entries, well under a second) and the node elects itself
/// alone (one election timeout, 270 s at most with the slowest profile, `seed`); a minute
/// covers every profile but `seed`, whose operators are told to wait longer.
pub const RECOVER_COMEBACK_TIMEOUT: Duration = Duration::from_secs(60);

/// Between two status polls while waiting for the recovered node.
const RECOVER_POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Runs `haven recover`.
pub async fn recover(args: RecoverArgs) -> anyhow::Result<ExitCode> {
    finish(recover_inner(args).await)
}

async fn recover_inner(args: RecoverArgs) -> anyhow::Result<ExitCode> {
    let client = args.client.client(&[])?;
    // The node that recovers is the one asked: never another endpoint of the list.
    let endpoint = client.config().endpoints[0].clone();
    let request =
        RecoverRequest { confirm_down: args.confirm_down.clone(), standalone: args.standalone, dry_run: args.dry_run };
    let result = client.recover(&endpoint, &request).await.map_err(|error| match error {
        Error::Api { status: 409, message, .. } => anyhow::anyhow!("{endpoint} refuses to recover: {message}"),
        error @ Error::OutcomeUnknown { .. } => anyhow::anyhow!(
            "{}; `haven status --endpoints {endpoint}` shows whether it leads a new cluster",
            explain(&format!("cannot tell whether {endpoint} started the recovery"), error)
        ),
        error => explain(&format!("cannot recover through {endpoint}"), error),
    })?;
    // Success is the node back and leading the new cluster, never just the node's promise
    // to restart: a rewrite that cannot start must not read as a recovery (issue 10).
    if let (false, Some(new_cluster_id)) = (request.dry_run, result.new_cluster_id.as_deref()) {
        wait_for_recovered(&client, &endpoint, result.this_node, new_cluster_id).await?;
    }
    if args.client.json {
        print_json(&result)?;
    } else {
        for line in describe_recover(&result, &request, &endpoint) {
            print_line(&line)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Polls `endpoint` until it answers as the leader of `new_cluster_id`, for at most
/// [`RECOVER_COMEBACK_TIMEOUT`].
async fn wait_for_recovered(
    client: &haven_client::Client,
    endpoint: &str,
    node_id: u64,
    new_cluster_id: &str,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + RECOVER_COMEBACK_TIMEOUT;
    let mut last = String::from("no answer yet");
    while Instant::now() < deadline {
        tokio::time::sleep(RECOVER_POLL_INTERVAL).await;
        match client.status_of(endpoint).await {
            Ok(status) if status.cluster_id.as_deref() == Some(new_cluster_id) && status.leader == Some(node_id) => {
                return Ok(())
            }
            Ok(status) => {
                last = format!(
                    "it answers as cluster {} with leader {:?}",
                    status.cluster_id.as_deref().unwrap_or("(none)"),
                    status.leader
                )
            }
            Err(error) => last = error.to_string(),
        }
    }
    anyhow::bail!(
        "node {node_id} ({endpoint}) was asked to restart as cluster {new_cluster_id} but is not leading it after {} s \
         ({last}). Its log says why (a recovery that cannot be carried out stops the node with the reason and changes \
         nothing); with the `seed` detection profile the first election alone can take minutes: check again with \
         `haven status --endpoints {endpoint}`",
        RECOVER_COMEBACK_TIMEOUT.as_secs()
    )
}

fn describe_recover(result: &RecoverResult, request: &RecoverRequest, endpoint: &str) -> Vec<String> {
    let what = if request.standalone { "run as a cluster of its own" } else { "become a new one-voter cluster" };
    let mut lines = if request.dry_run {
        vec![format!("dry run: the checks pass; node {} ({endpoint}) would {what} with all its data", result.this_node)]
    } else {
        vec![format!(
            "node {} ({endpoint}) restarted to {what}{} with all its data",
            result.this_node,
            result.new_cluster_id.as_deref().map(|id| format!(" (cluster {id})")).unwrap_or_default()
        )]
    };
    if !result.survivors.is_empty() {
        lines.push(String::new());
        let rows: Vec<Vec<String>> = result
            .survivors
            .iter()
            .map(|survivor| {
                let number = |value: Option<u64>| value.map_or_else(|| "-".to_string(), |value| value.to_string());
                vec![
                    survivor.id.to_string(),
                    match (survivor.reachable, survivor.id == result.this_node) {
                        (_, true) => "yes (this node)".into(),
                        (true, false) => "yes".into(),
                        (false, false) => "no".into(),
                    },
                    number(survivor.last_log_index),
                    number(survivor.term),
                ]
            })
            .collect();
        lines.extend(table(&["VOTER", "REACHABLE", "LAST LOG INDEX", "TERM"], &rows));
    }
    if !request.dry_run {
        lines.push(String::new());
        lines.push(format!(
            "it is back and leads the new cluster (`haven status --endpoints {endpoint}`). The other old members can \
             only come back as new members, with wiped data dirs"
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use haven_client::Survivor;

    use super::*;

    #[test]
    fn teardown_and_recovery_say_what_happened() {
        let torn = TeardownResult { generation: 1, standalone: 2, detached: vec![1, 3], cluster_id: Some("c1".into()) };
        let lines = describe_teardown(&torn);
        assert_eq!(lines[0], "teardown generation 1: node 2 continues alone as cluster c1 with all the data");
        assert!(lines[1].starts_with("detached: node(s) 1, 3."), "{}", lines[1]);

        let result = RecoverResult {
            survivors: vec![
                Survivor { id: 1, reachable: false, last_log_index: None, term: None },
                Survivor { id: 2, reachable: true, last_log_index: Some(40), term: Some(3) },
            ],
            this_node: 2,
            new_cluster_id: None,
            restarting: false,
            extra: Default::default(),
        };
        let request = RecoverRequest { confirm_down: vec![1], standalone: false, dry_run: true };
        assert_eq!(
            describe_recover(&result, &request, "https://b:2"),
            [
                "dry run: the checks pass; node 2 (https://b:2) would become a new one-voter cluster with all its data",
                "",
                "VOTER  REACHABLE        LAST LOG INDEX  TERM",
                "1      no               -               -",
                "2      yes (this node)  40              3",
            ]
        );
    }
}
