//! `haven restart [--node ID] [--rolling]`: restart node processes in place (how a new
//! failure-detection timing takes effect), one at a time.
//!
//! ```text
//!   one node:  hold a connection to it ──▶ POST /v1/restart ──▶ the held connection ends
//!              (the old process stopped serving) ──▶ poll its status until it sees a
//!              leader and has applied the leader's commit index from before the restart
//!   --rolling: leader's status ──plan──▶ followers by id, each as above, the cluster
//!              healthy before each; then a switchover to a caught-up data voter and the
//!              old primary last. Stops at the first node that does not come back.
//! ```
//!
//! Every node is reached at the client URL the cluster's status gives it, so the machine
//! running this must reach them all, and only when that URL is one of the endpoints this
//! CLI was configured with (`HAVEN_ENDPOINTS` / `--endpoints`): the admin token goes only
//! where its holder sent it, never to an address a member merely advertises (a member
//! admitted with a join token could otherwise name itself and collect the token).

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::time::Duration;

use haven_client::rolling::plan_rolling_restart;
use haven_client::rolling::restarted_node_ready;
use haven_client::rolling::switchover_target;
use haven_client::rolling::RollingStep;
use haven_client::rolling::RESTART_WAIT;
use haven_client::Client;
use haven_client::ConnectionEnd;
use haven_client::Error;
use haven_client::Status;
use tokio::time::Instant;

use super::explain;
use super::finish;
use super::output::print_json;
use super::output::print_line;
use super::ClientOpts;

/// How often a restarting node's status is asked for.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// `haven restart`.
#[derive(clap::Args, Debug, Clone)]
pub struct RestartArgs {
    /// The node to restart, by id (its client URL comes from the cluster's status).
    /// Default: the node at the first endpoint.
    #[arg(long, value_name = "ID", conflicts_with = "rolling")]
    pub node: Option<u64>,
    /// Restart every member, one at a time: the followers by id, then the primary after
    /// handing its role to a caught-up data voter. Waits for each node to be back and
    /// caught up before the next; stops at the first that is not.
    #[arg(long)]
    pub rolling: bool,
    /// With --rolling: restart only the nodes that report a pending restart.
    #[arg(long, requires = "rolling")]
    pub pending_only: bool,
    /// Send the restart and return; do not wait for the node to come back.
    #[arg(long, conflicts_with = "rolling")]
    pub no_wait: bool,
    #[command(flatten)]
    pub client: ClientOpts,
}

/// Runs `haven restart`.
pub async fn restart(args: RestartArgs) -> anyhow::Result<ExitCode> {
    finish(restart_inner(args).await)
}

async fn restart_inner(args: RestartArgs) -> anyhow::Result<ExitCode> {
    let session = args.client.connect(&[]).await?;
    let client = &session.client;
    let progress = Progress { json: args.client.json };
    if args.rolling {
        rolling(client, args.pending_only, &progress).await?;
    } else {
        single(client, &args, &progress).await?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Progress lines: text for people, one JSON object per step with `--json`.
struct Progress {
    json: bool,
}

impl Progress {
    fn say(&self, text: &str, json: serde_json::Value) -> anyhow::Result<()> {
        if self.json {
            print_json(&json)
        } else {
            print_line(text)
        }
    }

    /// Commentary that is not a step's result: text mode only, so `--json` stays parseable.
    fn note(&self, text: &str) -> anyhow::Result<()> {
        if self.json {
            Ok(())
        } else {
            print_line(text)
        }
    }
}

/// Restarts one node: `--node ID` or the first endpoint.
async fn single(client: &Client, args: &RestartArgs, progress: &Progress) -> anyhow::Result<()> {
    let view = client.status().await.map_err(|error| explain("cannot get the cluster status", error))?;
    let (id, url) = match args.node {
        Some(id) => (id, member_url(client, &view, id)?),
        None => {
            let endpoint = client.config().endpoints[0].clone();
            let own = client
                .status_of(&endpoint)
                .await
                .map_err(|error| explain(&format!("cannot reach the node to restart at {endpoint}"), error))?;
            (own.node_id, endpoint)
        }
    };
    if args.no_wait {
        let answer = client
            .restart_node(&url, id)
            .await
            .map_err(|error| explain(&format!("cannot restart node {id}"), error))?;
        return progress.say(
            &format!("node {} ({url}) is restarting", answer.restarting),
            serde_json::json!({ "restarting": answer.restarting }),
        );
    }
    // The commit index to catch up to: the leader's, when its view can be had.
    let commit_before = match leader_view(client).await {
        Ok(leader) => leader.commit_index,
        Err(_) => view.commit_index,
    };
    progress.note(&format!("restarting node {id} ({url}) ..."))?;
    let took = restart_and_wait(client, id, &url, commit_before, progress).await?;
    progress.say(
        &format!(
            "node {id} is back after {} ms (it sees a leader and has applied index {commit_before})",
            took.as_millis()
        ),
        serde_json::json!({ "restarted": id, "back_after_ms": took.as_millis() as u64 }),
    )
}

/// The restart of every (or every pending) member, one at a time.
async fn rolling(client: &Client, pending_only: bool, progress: &Progress) -> anyhow::Result<()> {
    let view = leader_view(client).await?;
    let only = if pending_only { Some(pending_nodes(client, &view).await?) } else { None };
    if only.as_ref().is_some_and(BTreeSet::is_empty) {
        return progress
            .say("no node reports a pending restart; nothing to do", serde_json::json!({ "restarted": [] }));
    }
    let steps =
        plan_rolling_restart(&view, only.as_ref()).map_err(|reason| anyhow::anyhow!("cannot restart: {reason}"))?;
    progress.note(&describe_plan(&steps))?;
    let mut restarted = Vec::new();
    for step in steps {
        match step {
            RollingStep::Restart(id) => {
                let mut healthy = wait_healthy(client, id).await?;
                if healthy.leader == Some(id) {
                    // Leadership moved to this node since the plan was made: hand it on first.
                    hand_over(client, id, progress).await?;
                    healthy = wait_healthy(client, id).await?;
                }
                let url = member_url(client, &healthy, id)?;
                progress.note(&format!("restarting node {id} ({url}) ..."))?;
                let took = restart_and_wait(client, id, &url, healthy.commit_index, progress).await?;
                progress.say(
                    &format!("node {id} is back after {} ms and caught up", took.as_millis()),
                    serde_json::json!({ "step": "restart", "node": id, "back_after_ms": took.as_millis() as u64 }),
                )?;
                restarted.push(id);
            }
            RollingStep::HandOver { from } => hand_over(client, from, progress).await?,
        }
    }
    let ids: Vec<String> = restarted.iter().map(u64::to_string).collect();
    progress.say(
        &format!("rolling restart done: restarted node(s) {}, one at a time", ids.join(", ")),
        serde_json::json!({ "restarted": restarted }),
    )
}

fn describe_plan(steps: &[RollingStep]) -> String {
    let parts: Vec<String> = steps
        .iter()
        .map(|step| match step {
            RollingStep::Restart(id) => format!("restart node {id}"),
            RollingStep::HandOver { from } => {
                format!("hand the primary role from node {from} to a caught-up data voter")
            }
        })
        .collect();
    format!("rolling restart, one node at a time: {}", parts.join(", then "))
}

/// Hands the primary role from `from` to a caught-up data voter, waiting (bounded) for one.
async fn hand_over(client: &Client, from: u64, progress: &Progress) -> anyhow::Result<()> {
    let deadline = Instant::now() + RESTART_WAIT;
    let target = loop {
        let view = leader_view(client).await?;
        if view.leader != Some(from) {
            progress.note(&format!("node {from} no longer leads; no hand-over needed"))?;
            return Ok(());
        }
        if let Some(target) = switchover_target(&view, from) {
            break target;
        }
        if Instant::now() >= deadline {
            anyhow::bail!(
                "no data voter caught up enough to take the primary role over from node {from} within {} s; node \
                 {from} was not restarted (see `haven status`)",
                RESTART_WAIT.as_secs()
            );
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    };
    progress.note(&format!("handing the primary role from node {from} to node {target} ..."))?;
    let result = client
        .switchover(Some(target))
        .await
        .map_err(|error| explain(&format!("cannot hand the primary role from node {from} to node {target}"), error))?;
    progress.say(
        &format!("node {} is the primary now (was node {}; took {} ms)", result.to, result.from, result.elapsed_ms),
        serde_json::json!({ "step": "switchover", "from": result.from, "to": result.to, "elapsed_ms": result.elapsed_ms }),
    )
}

/// Restarts node `id` at `url` and waits until it is back: its old process stopped
/// serving (the held connection ended), and it answers its status, sees a leader and has
/// applied `commit_before`. All within [`RESTART_WAIT`]; an error otherwise.
async fn restart_and_wait(
    client: &Client,
    id: u64,
    url: &str,
    commit_before: u64,
    progress: &Progress,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let deadline = started + RESTART_WAIT;
    let wait = RESTART_WAIT.as_secs();
    let held = client
        .hold_connection(url)
        .await
        .map_err(|error| explain(&format!("cannot reach node {id} at {url}"), error))?;
    match client.restart_node(url, id).await {
        Ok(answer) if answer.restarting != id => {
            anyhow::bail!(
                "{url} is node {}, not node {id}; it restarts now, but check the cluster's URLs",
                answer.restarting
            )
        }
        Ok(_) => {}
        Err(Error::OutcomeUnknown { .. }) => {
            progress.note(&format!("the answer of node {id} was lost; watching whether it restarts"))?;
        }
        Err(error) => return Err(explain(&format!("cannot restart node {id}"), error)),
    }
    match tokio::time::timeout_at(deadline, held.closed()).await {
        Err(_) => anyhow::bail!(
            "node {id} still serves from its old process {wait} s after the restart request (a leader hands its role \
             over first); see its log. No other node is restarted"
        ),
        Ok(ConnectionEnd::ErrorLine(line)) => anyhow::bail!(
            "node {id} ended the connection held to follow its restart with an error ({line}); cannot tell whether it \
             restarted, so no other node is restarted"
        ),
        Ok(ConnectionEnd::Closed) => {}
    }
    let mut waiting_for = "it does not answer yet".to_string();
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(remaining, client.status_of(url)).await {
            Ok(Ok(status)) => match restarted_node_ready(&status, commit_before) {
                Ok(()) => return Ok(started.elapsed()),
                Err(why) => waiting_for = why,
            },
            Ok(Err(error)) => waiting_for = format!("it does not answer: {error}"),
            Err(_) => {}
        }
        if Instant::now() + POLL_INTERVAL >= deadline {
            anyhow::bail!(
                "node {id} did not come back within {wait} s of its restart ({waiting_for}); stopping here, no other \
                 node is restarted while it is down. See its log"
            );
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// The leader's own status (only the leader knows every member's lag): asked at the
/// leader's client URL from the first answer, whose members' keys the client now trusts.
async fn leader_view(client: &Client) -> anyhow::Result<Status> {
    let first = client.status().await.map_err(|error| explain("cannot get the cluster status", error))?;
    let Some(leader) = first.leader else {
        anyhow::bail!("node {} knows no leader; see `haven status`", first.view_of);
    };
    if first.view_of == leader {
        return Ok(first);
    }
    let url = member_url(client, &first, leader)?;
    let view = client
        .status_of(&url)
        .await
        .map_err(|error| explain(&format!("cannot get the status of the leader, node {leader}, at {url}"), error))?;
    if view.leader != Some(view.view_of) {
        anyhow::bail!("node {leader} at {url} does not lead (any more); an election may be running, retry in a moment");
    }
    Ok(view)
}

/// The leader's view once every member is reachable again (bounded by [`RESTART_WAIT`]):
/// no node is restarted while another is down.
async fn wait_healthy(client: &Client, next: u64) -> anyhow::Result<Status> {
    let deadline = Instant::now() + RESTART_WAIT;
    loop {
        let problem = match leader_view(client).await {
            Ok(view) => match view.members.iter().find(|member| member.reachable == Some(false)) {
                None => return Ok(view),
                Some(down) => format!("node {} is unreachable from the leader", down.id),
            },
            Err(error) => format!("{error:#}"),
        };
        if Instant::now() >= deadline {
            anyhow::bail!("not restarting node {next}: {problem} (waited {} s)", RESTART_WAIT.as_secs());
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// The members whose own status reports a pending restart.
async fn pending_nodes(client: &Client, view: &Status) -> anyhow::Result<BTreeSet<u64>> {
    let mut pending = BTreeSet::new();
    for member in &view.members {
        let url = member_url(client, view, member.id)?;
        let own = client.status_of(&url).await.map_err(|error| {
            explain(&format!("cannot ask node {} at {url} whether it needs a restart", member.id), error)
        })?;
        if own.pending_restart().is_some() {
            pending.insert(member.id);
        }
    }
    Ok(pending)
}

/// Node `id`'s client URL from a status, normalised, if it is one of the endpoints the
/// client was configured with (see the module documentation).
fn member_url(client: &Client, status: &Status, id: u64) -> anyhow::Result<String> {
    configured_member_url(&client.config().endpoints, status, id)
}

fn configured_member_url(endpoints: &[String], status: &Status, id: u64) -> anyhow::Result<String> {
    let member = status
        .members
        .iter()
        .find(|member| member.id == id)
        .ok_or_else(|| anyhow::anyhow!("node {id} is not a member of the cluster (see `haven members list`)"))?;
    let url = haven_client::normalize_endpoint(&member.client_url)
        .map_err(|error| anyhow::anyhow!("node {id} has a bad client URL {:?}: {error}", member.client_url))?;
    let configured =
        endpoints.iter().any(|endpoint| haven_client::normalize_endpoint(endpoint).is_ok_and(|e| e == url));
    if !configured {
        anyhow::bail!(
            "node {id} gives its client URL as {url}, which is not one of your endpoints ({}); haven sends your token \
             only to endpoints you configured. If {url} really is node {id}, add it to HAVEN_ENDPOINTS or --endpoints",
            endpoints.join(",")
        );
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_is_said_in_order() {
        let steps = [RollingStep::Restart(2), RollingStep::HandOver { from: 1 }, RollingStep::Restart(1)];
        assert_eq!(
            describe_plan(&steps),
            "rolling restart, one node at a time: restart node 2, then hand the primary role from node 1 to a \
             caught-up data voter, then restart node 1"
        );
    }

    /// The token goes only to configured endpoints: a member that advertises any other
    /// URL (an impostor admitted with a join token naming itself) gets nothing.
    #[test]
    fn only_configured_endpoints_are_restarted_at() {
        let status: Status = serde_json::from_value(serde_json::json!({
            "node_id": 1, "view_of": 1, "leader": 1, "term": 2, "commit_index": 9, "applied_index": 9,
            "revision": 3, "voters": 2,
            "members": [
                { "id": 1, "client_url": "https://10.0.0.1:7001", "peer_addr": "10.0.0.1:7101", "voter": true },
                { "id": 2, "client_url": "https://203.0.113.9:7001/", "peer_addr": "203.0.113.9:7101", "voter": true },
            ],
        }))
        .unwrap();
        let endpoints = vec!["https://10.0.0.1:7001".to_string(), "https://10.0.0.2:7001".to_string()];
        assert_eq!(configured_member_url(&endpoints, &status, 1).unwrap(), "https://10.0.0.1:7001");
        let error = configured_member_url(&endpoints, &status, 2).unwrap_err().to_string();
        assert!(error.contains("https://203.0.113.9:7001, which is not one of your endpoints"), "{error}");
        assert!(error.contains("add it to HAVEN_ENDPOINTS or --endpoints"), "{error}");
        assert!(configured_member_url(&endpoints, &status, 3).unwrap_err().to_string().contains("not a member"));
    }
}
