//! `haven teardown` and `haven recover`: ending a cluster on purpose, and starting again
//! from a survivor after a majority is lost for good.
//!
//! ```text
//!   teardown ──▶ (asks, unless --yes) POST /v1/teardown on the primary (followed there
//!               once from another node): the primary continues alone with all data, the
//!               others are detached
//!   recover  ──▶ POST /v1/recover on ONE node: the first endpoint that answered and is not
//!               confirmed down; it becomes a new one-voter cluster (after a quorum loss,
//!               or a detached node: --standalone). --dry-run: the table and the verdict
//! ```

use std::process::ExitCode;
use std::time::Duration;
use std::time::Instant;

use haven_client::Error;
use haven_client::RecoverRequest;
use haven_client::RecoverResult;
use haven_client::TeardownResult;

use super::annotate;
use super::explain;
use super::failure::Failure;
use super::failure::Kind;
use super::finish;
use super::output::print_json;
use super::output::print_line;
use super::output::table;
use super::session::Probed;
use super::ClientOpts;

/// `haven teardown`.
#[derive(clap::Args, Debug, Clone)]
pub struct TeardownArgs {
    /// Tear down even when the cluster is not stable (members that are down or cut off
    /// learn they were detached only when they reach the primary again).
    #[arg(long)]
    pub force: bool,
    /// Do not ask for confirmation (needed when there is no terminal to ask on).
    #[arg(long, short = 'y')]
    pub yes: bool,
    #[command(flatten)]
    pub client: ClientOpts,
}

/// `haven recover`.
#[derive(clap::Args, Debug, Clone)]
pub struct RecoverArgs {
    /// The voters you know are gone for good, comma-separated: exactly those the node
    /// cannot reach (`--dry-run` shows them). If one comes back while it can reach no member
    /// of the new cluster, there are two clusters.
    #[arg(
        long,
        value_name = "ID,ID",
        value_delimiter = ',',
        required_unless_present_any = ["standalone", "dry_run"],
        conflicts_with = "standalone"
    )]
    pub confirm_down: Vec<u64>,
    /// Start a node detached by a teardown as a cluster of its own (no --confirm-down).
    #[arg(long)]
    pub standalone: bool,
    /// Show each voter's reachability and log, whether recovery would be allowed on the
    /// node, and what to confirm; change nothing.
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
    let session = args.client.connect(&[]).await?;
    let client = &session.client;
    if !args.yes {
        confirm_teardown(client).await?;
    }
    let result = client.teardown(args.force).await;
    let result = match result {
        Ok(result) => result,
        // Nothing to do is not a failure (issue 14: it was "repeat with --force", then
        // "already standalone").
        Err(Error::Api { code, message, .. }) if code == "already_standalone" => {
            if args.client.json {
                print_json(&serde_json::json!({ "already_standalone": true, "message": message }))?;
            } else {
                print_line(&format!("{message}; nothing done"))?;
            }
            return Ok(ExitCode::SUCCESS);
        }
        Err(error @ Error::NotPrimary { .. }) => {
            let hint = match &error {
                Error::NotPrimary { leader_url: Some(url), .. } => format!(
                    "; that address is not a member the cluster reports, so it was not followed: give it with \
                     --endpoints {url}"
                ),
                _ => String::new(),
            };
            return Err(annotate(explain("cannot tear down", error), &hint));
        }
        Err(error @ Error::OutcomeUnknown { .. }) => {
            return Err(annotate(
                explain("cannot tell whether the teardown happened", error),
                "; `haven status` on the primary shows whether it stands alone now",
            ))
        }
        Err(error) => return Err(explain("cannot tear down", error)),
    };
    if args.client.json {
        print_json(&result)?;
    } else {
        for line in describe_teardown(&result) {
            print_line(&line)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Asks on the terminal before ending the cluster; without a terminal, `--yes` is needed.
async fn confirm_teardown(client: &haven_client::Client) -> anyhow::Result<()> {
    use std::io::BufRead as _;
    use std::io::IsTerminal as _;
    use std::io::Write as _;
    if !std::io::stdin().is_terminal() {
        return Err(Failure::new(
            Kind::Usage,
            "teardown ends the cluster: the primary continues alone and every other member is detached for good. \
             Give --yes to confirm (there is no terminal to ask on)",
        )
        .into_error());
    }
    let status = client.status().await.map_err(|error| explain("cannot get the cluster status", error))?;
    let others: Vec<String> =
        status.members.iter().filter(|member| Some(member.id) != status.leader).map(|m| m.id.to_string()).collect();
    let mut stderr = std::io::stderr();
    let _ = write!(
        stderr,
        "Tear down cluster {}: node {} continues alone with all the data, node(s) {} are detached for good. Type yes \
         to go on: ",
        status.cluster_id.as_deref().unwrap_or("(unknown)"),
        status.leader.map_or_else(|| "(no primary now)".to_string(), |id| id.to_string()),
        if others.is_empty() { "(none)".to_string() } else { others.join(", ") }
    );
    let _ = stderr.flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|error| anyhow::anyhow!("cannot read the answer: {error}"))?;
    if answer.trim() != "yes" {
        return Err(Failure::new(Kind::Refused, "not torn down: the answer was not `yes`")
            .code("not_confirmed")
            .into_error());
    }
    Ok(())
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

/// The endpoint to recover through: the first that answered and is not a node confirmed
/// down (issue 14: the first endpoint of the list was used, which was node 1, confirmed
/// down). A detached node's start (`--standalone`) uses the first that answered.
fn recovering_endpoint(probes: &[Probed], confirm_down: &[u64]) -> Option<(String, u64)> {
    probes.iter().find_map(|probe| {
        let node = probe.answer.as_ref()?.node_id;
        (!confirm_down.contains(&node)).then(|| (probe.endpoint.clone(), node))
    })
}

async fn recover_inner(args: RecoverArgs) -> anyhow::Result<ExitCode> {
    let session = args.client.connect(&[]).await?;
    let client = &session.client;
    // The node that recovers is the one asked: one node, never retried elsewhere.
    let Some((endpoint, node)) = recovering_endpoint(&session.probes, &args.confirm_down) else {
        let tried: Vec<String> = session.probes.iter().map(|probe| probe.endpoint.clone()).collect();
        return Err(Failure::new(
            Kind::Unreachable,
            format!(
                "no endpoint that answered is a survivor (tried {}; nodes confirmed down are never asked): give the \
                 survivor's client URL with --endpoints",
                tried.join(", ")
            ),
        )
        .into_error());
    };
    let survivor_key =
        client.status_of(&endpoint).await.ok().and_then(|status| {
            status.members.iter().find(|member| member.id == node).and_then(|m| m.fingerprint.clone())
        });
    let request =
        RecoverRequest { confirm_down: args.confirm_down.clone(), standalone: args.standalone, dry_run: args.dry_run };
    let result = client.recover(&endpoint, &request).await.map_err(|error| match error {
        error @ Error::OutcomeUnknown { .. } => annotate(
            explain(&format!("cannot tell whether {endpoint} started the recovery"), error),
            &format!("; `haven status --endpoints {endpoint}` shows whether it leads a new cluster"),
        ),
        error => explain(&format!("node {node} ({endpoint}) refuses to recover"), error),
    })?;
    // Success is the node back and leading the new cluster, never just the node's promise
    // to restart: a rewrite that cannot start must not read as a recovery (issue 10).
    if let (false, Some(new_cluster_id)) = (request.dry_run, result.new_cluster_id.clone()) {
        wait_for_recovered(client, &endpoint, result.this_node, &new_cluster_id).await?;
        // These endpoints now mean the new cluster.
        session.memory.update(|memory| {
            memory.cluster_id = Some(new_cluster_id);
            memory.last_good = Some(endpoint.clone());
        });
    }
    if args.client.json {
        print_json(&result)?;
    } else {
        for line in describe_recover(&result, &request, &endpoint, survivor_key.as_deref()) {
            print_line(&line)?;
        }
    }
    match (&result.would_refuse, args.dry_run) {
        (Some(why), true) => Err(Failure::new(Kind::Refused, format!("node {node} would refuse to recover: {why}"))
            .code(haven_client::CODE_RECOVER_REFUSED)
            .into_error()),
        _ => Ok(ExitCode::SUCCESS),
    }
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
        // The health answer (no token, no cluster pin): the client is still pinned to the
        // old cluster, which the recovered node no longer belongs to.
        match client.health_of(endpoint).await {
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

fn describe_recover(
    result: &RecoverResult,
    request: &RecoverRequest,
    endpoint: &str,
    survivor_key: Option<&str>,
) -> Vec<String> {
    let what = if request.standalone { "start as a cluster of its own" } else { "become a new one-voter cluster" };
    let down: Vec<String> = result.confirm_down.iter().map(u64::to_string).collect();
    let mut lines = match (request.dry_run, &result.would_refuse) {
        (true, Some(why)) => vec![format!("dry run: node {} ({endpoint}) would refuse: {why}", result.this_node)],
        (true, None) if request.standalone => {
            vec![format!(
                "dry run: the checks pass; node {} ({endpoint}) would {what} with all its data",
                result.this_node
            )]
        }
        (true, None) => vec![format!(
            "dry run: the checks pass; node {} ({endpoint}) would {what} with all its data: `haven recover \
             --confirm-down {} --endpoints {endpoint}`",
            result.this_node,
            down.join(",")
        )],
        (false, _) => vec![format!(
            "node {} ({endpoint}) restarted to {what}{} with all its data",
            result.this_node,
            result.new_cluster_id.as_deref().map(|id| format!(" (cluster {id})")).unwrap_or_default()
        )],
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
        // Printed after `wait_for_recovered`: the node answered as the new cluster's leader.
        lines.push(String::new());
        lines.push(format!("it is back and leads the new cluster (`haven status --endpoints {endpoint}`)."));
    }
    if !request.dry_run && !request.standalone {
        let old: Vec<String> = request.confirm_down.iter().map(u64::to_string).collect();
        lines.push(format!(
            "The old members (node(s) {}) must not serve the old cluster again: one that starts and reaches node {} is \
             told it was recovered away and stops (exit status 78). To bring one back, wipe its data dir and join it \
             to this cluster as a new member: haven serve --node-id ID --data-dir DIR --join {endpoint} \
             --join-fingerprint {} --join-token-file FILE",
            old.join(", "),
            result.this_node,
            survivor_key.unwrap_or("FINGERPRINT")
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use haven_client::HealthAnswer;
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
            would_refuse: None,
            confirm_down: vec![1],
            extra: Default::default(),
        };
        let request = RecoverRequest { confirm_down: vec![], standalone: false, dry_run: true };
        assert_eq!(
            describe_recover(&result, &request, "https://b:2", None),
            [
                "dry run: the checks pass; node 2 (https://b:2) would become a new one-voter cluster with all its data: \
                 `haven recover --confirm-down 1 --endpoints https://b:2`",
                "",
                "VOTER  REACHABLE        LAST LOG INDEX  TERM",
                "1      no               -               -",
                "2      yes (this node)  40              3",
            ]
        );
        let refused = RecoverResult { would_refuse: Some("2 of 3 voters are reachable".into()), ..result.clone() };
        assert!(describe_recover(&refused, &request, "https://b:2", None)[0].contains("would refuse: 2 of 3"));
        let done = RecoverResult { new_cluster_id: Some("c2".into()), restarting: true, ..result };
        let request = RecoverRequest { confirm_down: vec![1, 3], standalone: false, dry_run: false };
        let lines = describe_recover(&done, &request, "https://b:2", Some("sha256:ab"));
        let rejoin = lines.last().unwrap();
        assert!(
            rejoin.contains("node(s) 1, 3") && rejoin.contains("--join https://b:2 --join-fingerprint sha256:ab"),
            "{rejoin}"
        );
    }

    /// Recovery goes to a survivor, never to a node confirmed down (issue 14: the tour's
    /// `recover --confirm-down 1,3` was sent to node 1).
    #[test]
    fn recovery_is_sent_to_a_survivor() {
        let probe = |endpoint: &str, node_id: Option<u64>| Probed {
            endpoint: endpoint.into(),
            answer: node_id.map(|node_id| HealthAnswer {
                ok: false,
                node_id,
                leader: None,
                cluster_id: None,
                reason: None,
            }),
            error: None,
        };
        let probes = [probe("https://a:1", Some(1)), probe("https://b:2", Some(2)), probe("https://c:3", None)];
        assert_eq!(recovering_endpoint(&probes, &[1, 3]), Some(("https://b:2".into(), 2)));
        assert_eq!(recovering_endpoint(&probes, &[]), Some(("https://a:1".into(), 1)));
        assert_eq!(recovering_endpoint(&probes, &[1, 2]), None);
    }
}
