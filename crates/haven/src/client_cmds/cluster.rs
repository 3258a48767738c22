//! `haven status`, `haven members list|remove`, `haven leave`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use haven_client::Client;
use haven_client::Status;
use serde::Deserialize;

use super::explain;
use super::failure;
use super::finish;
use super::output::print_json;
use super::output::print_line;
use super::output::table;
use super::output::text_on_one_line;
use super::ClientOpts;
use super::LeaveArgs;
use super::MaintenanceArgs;
use super::MembersCommand;
use super::StatusArgs;
use super::SwitchoverArgs;

#[derive(clap::Args, Debug, Clone)]
pub struct MembersListArgs {
    #[command(flatten)]
    pub client: ClientOpts,
}

#[derive(clap::Args, Debug, Clone)]
pub struct MembersRemoveArgs {
    /// Node id to remove.
    pub id: u64,
    /// Remove it even when the remaining voters might not form a majority.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub client: ClientOpts,
}

/// The file a node writes into its data directory to say who it is and where it listens.
pub const ADDR_FILE: &str = "addr.json";

/// Largest `addr.json` read: it holds four short fields; anything bigger is not that file.
const ADDR_FILE_BYTES_MAX: u64 = 64 * 1024;

/// What `leave` needs from `addr.json` (`peer_addr` and `pid` are not needed).
#[derive(Debug, Deserialize, PartialEq, Eq)]
struct AddrFile {
    node_id: u64,
    client_url: String,
}

/// The exit codes of `haven status`, for its `--help`.
pub const STATUS_EXIT_CODES: &str = "\
Exit codes (from the HA state of the best view: the leader's own when it answers):
  0  stable: every member reachable and caught up, a primary with a quorum, and the loss
     of a node survived
  1  another error (the message says which; the other failures of `haven --help` too)
  2  bad command line
  3  degraded: quorum kept, but a member is unreachable or lagging, or the cluster survives
     no loss at all (two voters, a pair without a witness)
  4  no-quorum: no working leader (none known, or the named leader does not answer)
  5  failing-over: no primary right now (an election or a hand-off is running)
  6  maintenance: automatic failover and failback are off
  7  standalone: one node, nothing to fail over to
  8  the node did not report an HA state this version knows
  11 no node answered";

/// Exit code of `haven status` for each HA state (see [`STATUS_EXIT_CODES`]).
fn status_exit_code(state: Option<&str>) -> u8 {
    match state {
        Some("stable") => 0,
        Some("degraded") => 3,
        Some("no-quorum") => 4,
        Some("failing-over") => 5,
        Some("maintenance") => 6,
        Some("standalone") => 7,
        _ => 8,
    }
}

/// Exit code for a view with no working leader.
const EXIT_NO_WORKING_LEADER: u8 = 4;

/// Runs `haven status`: exits 0 only when the HA state is stable (see [`STATUS_EXIT_CODES`]).
pub async fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    finish(status_inner(args).await)
}

async fn status_inner(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let session = args.client.connect(&[]).await?;
    let client = &session.client;
    let view = best_status(client).await?;
    let status = &view.status;
    let (code, problem) = status_outcome(&view);
    if args.client.json {
        print_json(status)?;
    } else {
        let mut lines = describe_status(status);
        if let (true, Some(problem)) = (view.leader_silent, &problem) {
            // The viewing node has not noticed yet; the line must not say "stable" while
            // the exit code says there is no working leader (issue 14).
            if let Some(line) = lines.iter_mut().find(|line| line.starts_with("HA ")) {
                *line = format!("HA no working leader (as this client finds it): {problem}");
            }
        }
        for line in lines {
            print_line(&line)?;
        }
    }
    for warning in &status.warnings {
        eprintln!("warning: {warning}");
    }
    if let Some(problem) = problem {
        eprintln!("{} {problem}", severity(code));
    }
    Ok(ExitCode::from(code))
}

/// How the line about a state that is not stable starts: informational states are not
/// errors (issue 14: "error: ... standalone").
fn severity(code: u8) -> &'static str {
    match code {
        6 | 7 => "note:",
        3 => "warning:",
        _ => "error:",
    }
}

/// The HA state in words, as the end of "the cluster ...".
fn state_in_words(state: &str) -> String {
    match state {
        "degraded" => "is degraded".into(),
        "no-quorum" => "has no quorum".into(),
        "failing-over" => "is failing over".into(),
        "maintenance" => "is in maintenance mode".into(),
        "standalone" => "is one standalone node".into(),
        "stable" => "is stable".into(),
        other => format!("is in state {other}"),
    }
}

/// The exit code and, when not stable, the line `haven status` ends with on stderr.
fn status_outcome(view: &View) -> (u8, Option<String>) {
    if let Some(problem) = leader_problem(view) {
        return (EXIT_NO_WORKING_LEADER, Some(problem));
    }
    let ha = view.status.ha();
    let state = ha.as_ref().map(|ha| ha.state.as_str());
    let code = status_exit_code(state);
    let problem = match (&ha, code) {
        (_, 0) => None,
        (Some(ha), _) => Some(format!(
            "the cluster {} as node {} sees it{}",
            state_in_words(&ha.state),
            view.status.view_of,
            ha.reasons.first().map(|reason| format!(": {reason}")).unwrap_or_default()
        )),
        (None, _) => Some(format!("node {} did not report an HA state", view.status.view_of)),
    };
    (code, problem)
}

/// Runs `haven members ...`.
pub async fn members(command: MembersCommand) -> anyhow::Result<ExitCode> {
    finish(match command {
        MembersCommand::List(args) => members_list(args).await,
        MembersCommand::Remove(args) => {
            let session = args.client.connect(&[]).await?;
            let client = &session.client;
            remove(client, args.id, args.force, args.client.json).await
        }
    })
}

/// Runs `haven leave --data-dir DIR`: removes the node that owns DIR, asking that node
/// first and then the `--endpoints`.
pub async fn leave(args: LeaveArgs) -> anyhow::Result<ExitCode> {
    finish(leave_inner(args).await)
}

async fn leave_inner(args: LeaveArgs) -> anyhow::Result<ExitCode> {
    let addr = read_addr_file(&args.data_dir)?;
    let own_url = haven_client::normalize_endpoint(&addr.client_url)
        .with_context(|| format!("{} names a bad client_url", args.data_dir.join(ADDR_FILE).display()))?;
    let session = args.client.connect(&[own_url]).await?;
    let client = &session.client;
    remove(client, addr.node_id, args.force, args.client.json).await
}

async fn members_list(args: MembersListArgs) -> anyhow::Result<ExitCode> {
    let session = args.client.connect(&[]).await?;
    let client = &session.client;
    if args.client.json {
        let members = client.members().await.map_err(|error| explain("cannot list the members", error))?;
        print_json(&haven_client::Members { members })?;
        return Ok(ExitCode::SUCCESS);
    }
    // The status knows the leader best; a join token may read the members only (issue 14:
    // the docs grant it `GET /v1/members`, and the table failed with 403).
    let status = match best_status(client).await {
        Ok(view) => view.status,
        Err(error) if failure::find(&error).is_some_and(|failure| failure.code == "forbidden") => {
            let members = client.members().await.map_err(|error| explain("cannot list the members", error))?;
            let leader = members.iter().find(|member| member.is_leader() == Some(true)).map(|member| member.id);
            Status { leader, members, ..Status::default() }
        }
        Err(error) => return Err(error),
    };
    for line in member_table(&status) {
        print_line(&line)?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn remove(client: &Client, id: u64, force: bool, json: bool) -> anyhow::Result<ExitCode> {
    let result = client.remove_member(id, force).await.map_err(|error| {
        let quorum_at_risk = error.code() == Some("quorum_at_risk");
        let error = explain(&format!("cannot remove node {id}"), error);
        if quorum_at_risk {
            anyhow::anyhow!("{error}; bring the other voters back, or pass --force to remove it anyway")
        } else {
            error
        }
    })?;
    if json {
        print_json(&result)?;
    } else {
        print_line(&format!("removed node {}", result.removed))?;
    }
    if let Some(warning) = &result.warning {
        eprintln!("warning: {warning}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `haven switchover [--to ID]`: hand the primary role to another voter.
pub async fn switchover(args: SwitchoverArgs) -> anyhow::Result<ExitCode> {
    finish(switchover_inner(args).await)
}

async fn switchover_inner(args: SwitchoverArgs) -> anyhow::Result<ExitCode> {
    let session = args.client.connect(&[]).await?;
    let client = &session.client;
    let target = args.to.map_or_else(|| "the most caught-up voter".to_string(), |id| format!("node {id}"));
    let result =
        client.switchover(args.to).await.map_err(|error| explain(&format!("cannot switch over to {target}"), error))?;
    if args.client.json {
        print_json(&result)?;
    } else if result.from == result.to {
        print_line(&format!("node {} is the primary already; nothing to do", result.to))?;
    } else {
        print_line(&format!(
            "node {} is the primary now (was node {}; took {} ms)",
            result.to, result.from, result.elapsed_ms
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `haven maintenance on|off`.
pub async fn maintenance(args: MaintenanceArgs) -> anyhow::Result<ExitCode> {
    finish(maintenance_inner(args).await)
}

async fn maintenance_inner(args: MaintenanceArgs) -> anyhow::Result<ExitCode> {
    let on = match args.mode.as_str() {
        "on" => true,
        "off" => false,
        other => anyhow::bail!("maintenance takes on or off, not {other:?}"),
    };
    let session = args.client.connect(&[]).await?;
    let client = &session.client;
    client.set_maintenance(on).await.map_err(|error| explain("cannot set maintenance mode", error))?;
    if args.client.json {
        print_json(&serde_json::json!({ "maintenance": on }))?;
    } else if on {
        print_line("maintenance on: no automatic failover or failback until `haven maintenance off`")?;
    } else {
        print_line("maintenance off: automatic failover is back")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// A view of the cluster, and whether the leader it names failed to answer us.
struct View {
    status: Status,
    /// The named leader is down as far as we can tell: it did not answer its own status
    /// request, or the viewing node reports it unreachable.
    leader_silent: bool,
}

/// The most informative view: the leader's own (only it knows every member's lag), else
/// any view that knows a leader, else the first answer.
async fn best_status(client: &Client) -> anyhow::Result<View> {
    let action = "cannot get the cluster status";
    let first = client.status().await.map_err(|error| explain(action, error))?;
    if first.leader == Some(first.view_of) {
        return Ok(View { status: first, leader_silent: false });
    }
    let endpoints = client.config().endpoints.clone();
    let leader_endpoint = leader_url(&first).and_then(|url| haven_client::normalize_endpoint(&url).ok());
    // Only configured endpoints are asked: the advertised URL may not be reachable from here.
    let mut leader_silent = false;
    if let Some(url) = leader_endpoint.filter(|url| endpoints.contains(url)) {
        match client.status_of(&url).await {
            Ok(view) if view.leader == Some(view.view_of) => return Ok(View { status: view, leader_silent: false }),
            Ok(_) => {}
            Err(_) => leader_silent = true,
        }
    }
    if let Some(leader) = first.leader {
        let reported_unreachable = first.members.iter().any(|m| m.id == leader && m.reachable == Some(false));
        return Ok(View { leader_silent: leader_silent || reported_unreachable, status: first });
    }
    // This node knows no leader; another may (this one could be cut off).
    for endpoint in &endpoints {
        if let Ok(view) = client.status_of(endpoint).await {
            if view.leader.is_some() {
                return Ok(View { status: view, leader_silent: false });
            }
        }
    }
    Ok(View { status: first, leader_silent: false })
}

/// Why the cluster cannot serve writes, if it cannot: the line `haven status` ends with.
fn leader_problem(view: &View) -> Option<String> {
    let status = &view.status;
    match status.leader {
        None => Some(format!(
            "the cluster has no leader as node {} sees it; a majority of voters must be up and reach each other",
            status.view_of
        )),
        Some(leader) if view.leader_silent => Some(format!(
            "node {} still names node {leader} as leader, but node {leader} does not answer; the cluster has no \
             working leader until a majority of voters elects a new one",
            status.view_of
        )),
        Some(_) => None,
    }
}

fn leader_url(status: &Status) -> Option<String> {
    let leader = status.leader?;
    status
        .leader_url
        .clone()
        .or_else(|| status.members.iter().find(|member| member.id == leader).map(|member| member.client_url.clone()))
}

fn describe_status(status: &Status) -> Vec<String> {
    let leader = match (status.leader, leader_url(status)) {
        (Some(id), Some(url)) => format!("{id} ({url})"),
        (Some(id), None) => id.to_string(),
        (None, _) => "none".to_string(),
    };
    let mut lines = vec![
        format!(
            "cluster {}  leader {leader}  term {}  voters {}",
            status.cluster_id.as_deref().unwrap_or("(not formed yet)"),
            status.term,
            status.voters
        ),
        format!(
            "revision {}  commit {}  applied {}  (as node {} sees it)",
            status.revision, status.commit_index, status.applied_index, status.view_of
        ),
    ];
    // The HA status (seed 002's "stable"): state, topology, reasons in words.
    if let Some(ha) = status.ha() {
        let survives =
            if ha.survives.is_empty() { String::new() } else { format!("; {}", text_on_one_line(&ha.survives)) };
        lines.push(format!("HA {}  ({}{survives})", ha.state, ha.topology_kind()));
        for reason in &ha.reasons {
            lines.push(format!("  - {}", text_on_one_line(reason)));
        }
    }
    let mut facts = Vec::new();
    if let Some(version) = status.config_version() {
        facts.push(format!("config version {version}"));
    }
    if let Some(failovers) = status.failovers_last_hour() {
        facts.push(format!("failovers in the last hour {failovers}"));
    }
    if status.maintenance() == Some(true) {
        facts.push("maintenance on".into());
    }
    if !facts.is_empty() {
        lines.push(facts.join("  "));
    }
    let me = status.view_of;
    if let Some(pending) = status.pending_restart() {
        lines.push(format!("pending restart (node {me}): {}", text_on_one_line(&pending)));
    }
    if let Some(detached) = status.detached() {
        lines.push(format!(
            "detached (node {me}): by teardown generation {}{}{}",
            detached.generation,
            detached.cluster_id.map(|id| format!(" of cluster {id}")).unwrap_or_default(),
            detached.kept.map(|kept| format!("; node {kept} continues it")).unwrap_or_default()
        ));
    }
    if let Some(withheld) = status.candidacy_withheld() {
        lines.push(format!("candidacy withheld (node {me}): {}", text_on_one_line(&withheld)));
    }
    if let Some(failback) = status.failback() {
        lines.push(format!("failback (node {me}): {}", text_on_one_line(&failback)));
    }
    if let Some(storage) = status.storage() {
        let mib = |bytes: u64| format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0));
        let snapshot = storage.snapshot_bytes.map_or("none".to_string(), mib);
        lines.push(format!(
            "storage (node {me}): keys and values {} of {}, history {} of {} ({} events), log since snapshot {} of \
             {}, snapshot {snapshot}",
            mib(storage.kv_bytes),
            mib(storage.kv_bytes_max),
            mib(storage.history_bytes),
            mib(storage.history_bytes_max),
            storage.history_events,
            mib(storage.log_bytes_since_snapshot),
            mib(storage.log_bytes_since_snapshot_max),
        ));
    }
    lines.push(String::new());
    lines.extend(member_table(status));
    let targets = status.ping_targets();
    if !targets.is_empty() {
        lines.push(String::new());
        lines.push(format!("ping targets of node {me}:"));
        lines.extend(ping_target_table(&targets));
    }
    lines
}

fn member_table(status: &Status) -> Vec<String> {
    let mut members = status.members.clone();
    members.sort_by_key(|member| member.id);
    let rows: Vec<Vec<String>> = members
        .iter()
        .map(|member| {
            let raft = if Some(member.id) == status.leader {
                "leader"
            } else if member.voter {
                "follower"
            } else {
                "learner"
            };
            let reachable = match member.reachable {
                Some(true) => "yes",
                Some(false) => "no",
                None => "?",
            };
            let lag = member.lag.map_or_else(|| "-".to_string(), |lag| lag.to_string());
            vec![
                member.id.to_string(),
                raft.to_string(),
                member.role().map_or_else(|| "-".to_string(), text_on_one_line),
                member.priority().map_or_else(|| "-".to_string(), |priority| priority.to_string()),
                member.client_url.clone(),
                reachable.to_string(),
                lag,
            ]
        })
        .collect();
    table(&["ID", "RAFT", "ROLE", "PRIORITY", "CLIENT URL", "REACHABLE", "LAG"], &rows)
}

/// The viewing node's ping targets: when each last answered and how fast.
fn ping_target_table(targets: &[haven_client::PingTarget]) -> Vec<String> {
    use haven_core::ha::detection::human_ms;
    let rows: Vec<Vec<String>> = targets
        .iter()
        .map(|target| {
            let rtt = target.last_rtt_us.map_or_else(
                || "-".to_string(),
                |us| if us < 1000 { format!("{us} us") } else { format!("{}.{} ms", us / 1000, us % 1000 / 100) },
            );
            vec![
                text_on_one_line(&target.target),
                target.address.as_deref().map_or_else(|| "-".to_string(), text_on_one_line),
                target.last_ok_ms_ago.map_or_else(|| "never".to_string(), |ms| format!("{} ago", human_ms(ms))),
                rtt,
                target.failed_in_a_row.to_string(),
                target.socket.as_deref().map_or_else(|| "-".to_string(), text_on_one_line),
                target.last_error.as_deref().map_or_else(|| "-".to_string(), text_on_one_line),
            ]
        })
        .collect();
    table(&["TARGET", "ADDRESS", "LAST ANSWER", "RTT", "FAILED IN A ROW", "SOCKET", "LAST ERROR"], &rows)
}

fn read_addr_file(data_dir: &Path) -> anyhow::Result<AddrFile> {
    let path = data_dir.join(ADDR_FILE);
    let hint = || format!("is {} the data dir of a node that has run?", data_dir.display());
    let metadata = std::fs::metadata(&path).with_context(|| format!("cannot read {}; {}", path.display(), hint()))?;
    if metadata.len() > ADDR_FILE_BYTES_MAX {
        anyhow::bail!("{} is {} bytes, more than an addr file can be; {}", path.display(), metadata.len(), hint());
    }
    let text = std::fs::read(&path).with_context(|| format!("cannot read {}; {}", path.display(), hint()))?;
    parse_addr_file(&text).with_context(|| format!("{} is not a node's addr file; {}", path.display(), hint()))
}

fn parse_addr_file(text: &[u8]) -> anyhow::Result<AddrFile> {
    Ok(serde_json::from_slice(text)?)
}

#[cfg(test)]
mod tests {
    use haven_client::Member;

    use super::*;

    fn member(id: u64, voter: bool, reachable: Option<bool>, lag: Option<u64>) -> Member {
        Member {
            id,
            client_url: format!("http://127.0.0.1:700{id}"),
            peer_addr: format!("127.0.0.1:710{id}"),
            fingerprint: None,
            voter,
            reachable,
            matched_index: None,
            lag,
            extra: Default::default(),
        }
    }

    fn status(leader: Option<u64>) -> Status {
        Status {
            cluster_id: Some("c1".into()),
            node_id: 2,
            view_of: 2,
            leader,
            leader_url: None,
            term: 4,
            commit_index: 9,
            applied_index: 9,
            revision: 5,
            voters: 2,
            warnings: Vec::new(),
            extra: Default::default(),
            members: vec![
                member(3, false, None, None),
                member(1, true, Some(true), Some(0)),
                member(2, true, Some(false), Some(12)),
            ],
        }
    }

    #[test]
    fn the_status_shows_roles_reachability_and_lag() {
        assert_eq!(
            describe_status(&status(Some(1))),
            [
                "cluster c1  leader 1 (http://127.0.0.1:7001)  term 4  voters 2",
                "revision 5  commit 9  applied 9  (as node 2 sees it)",
                "",
                "ID  RAFT      ROLE  PRIORITY  CLIENT URL             REACHABLE  LAG",
                "1   leader    -     -         http://127.0.0.1:7001  yes        0",
                "2   follower  -     -         http://127.0.0.1:7002  no         12",
                "3   learner   -     -         http://127.0.0.1:7003  ?          -",
            ]
        );
        assert!(describe_status(&status(None))[0].contains("leader none"));
    }

    /// The HA fields: state and reasons, configuration version, failovers, pending restart,
    /// detachment, withheld candidacy, failback, roles and priorities, ping targets.
    #[test]
    fn the_status_shows_the_ha_fields() {
        let mut view = status(Some(1));
        view.members.truncate(2);
        for (member, (role, priority)) in view.members.iter_mut().zip([("witness", 0), ("data", 100)]) {
            member.extra.insert("role".into(), role.into());
            member.extra.insert("priority".into(), priority.into());
        }
        let extra = serde_json::json!({
            "ha": {"state": "degraded", "reasons": ["node 2 (data voter) is unreachable from node 2"], "view_of": 2,
                   "topology": {"kind": "pair-with-witness"}, "survives": "the loss of any one node", "primary": 1},
            "config_version": 3, "failovers_last_hour": 2, "maintenance": false,
            "pending_restart": "failure detection timing changed",
            "detached": null, "candidacy_withheld": "no ping target answers", "failback": "stays on node 1",
            "ping_targets": [
                {"target": "gw", "address": "10.0.0.1", "last_ok_ms_ago": 1500, "last_rtt_us": 1250,
                 "last_error": null, "failed_in_a_row": 0, "socket": "datagram"},
                {"target": "10.9.9.9", "address": null, "last_ok_ms_ago": null, "last_rtt_us": null,
                 "last_error": "timed out", "failed_in_a_row": 7, "socket": null}],
        });
        view.extra = serde_json::from_value(extra).unwrap();
        assert_eq!(
            describe_status(&view),
            [
                "cluster c1  leader 1 (http://127.0.0.1:7001)  term 4  voters 2",
                "revision 5  commit 9  applied 9  (as node 2 sees it)",
                "HA degraded  (pair with witness; the loss of any one node)",
                "  - node 2 (data voter) is unreachable from node 2",
                "config version 3  failovers in the last hour 2",
                "pending restart (node 2): failure detection timing changed",
                "candidacy withheld (node 2): no ping target answers",
                "failback (node 2): stays on node 1",
                "",
                "ID  RAFT     ROLE     PRIORITY  CLIENT URL             REACHABLE  LAG",
                "1   leader   data     100       http://127.0.0.1:7001  yes        0",
                "3   learner  witness  0         http://127.0.0.1:7003  ?          -",
                "",
                "ping targets of node 2:",
                "TARGET    ADDRESS   LAST ANSWER  RTT     FAILED IN A ROW  SOCKET    LAST ERROR",
                "gw        10.0.0.1  1.5 s ago    1.2 ms  0                datagram  -",
                "10.9.9.9  -         never        -       7                -         timed out",
            ]
        );
        let (code, problem) = status_outcome(&View { status: view.clone(), leader_silent: false });
        assert_eq!(code, 3);
        assert_eq!(
            problem.as_deref(),
            Some("the cluster is degraded as node 2 sees it: node 2 (data voter) is unreachable from node 2")
        );
    }

    #[test]
    fn status_exits_zero_only_when_stable() {
        let with_state = |state: &str| {
            let mut view = status(Some(1));
            view.extra.insert("ha".into(), serde_json::json!({"state": state, "reasons": ["why"]}));
            View { status: view, leader_silent: false }
        };
        assert_eq!(status_outcome(&with_state("stable")), (0, None));
        for (state, code) in
            [("degraded", 3), ("no-quorum", 4), ("failing-over", 5), ("maintenance", 6), ("standalone", 7), ("new", 8)]
        {
            let (got, problem) = status_outcome(&with_state(state));
            assert_eq!(got, code, "{state}");
            let problem = problem.unwrap();
            assert!(problem.contains(&state_in_words(state)), "{problem}");
            assert!(!problem.contains("is maintenance"), "said in words: {problem}");
        }
        // Stable as reported, but the named leader is silent: no working leader.
        let mut silent = with_state("stable");
        silent.leader_silent = true;
        assert_eq!(status_outcome(&silent).0, 4);
        // No leader at all, and a server without an HA state.
        let mut leaderless = with_state("stable");
        leaderless.status.leader = None;
        assert_eq!(status_outcome(&leaderless).0, 4);
        assert_eq!(status_outcome(&View { status: status(Some(1)), leader_silent: false }).0, 8);
        // Every code is documented.
        for code in 0..=8 {
            assert!(STATUS_EXIT_CODES.contains(&format!("\n  {code}  ")), "exit code {code} undocumented");
        }
    }

    #[test]
    fn status_fails_without_a_working_leader() {
        assert_eq!(leader_problem(&View { status: status(Some(1)), leader_silent: false }), None);
        let none = leader_problem(&View { status: status(None), leader_silent: false }).unwrap();
        assert!(none.starts_with("the cluster has no leader as node 2 sees it"), "{none}");
        let silent = leader_problem(&View { status: status(Some(1)), leader_silent: true }).unwrap();
        assert!(silent.starts_with("node 2 still names node 1 as leader, but node 1 does not answer"), "{silent}");
    }

    #[test]
    fn addr_files_parse_and_bad_ones_say_so() {
        let addr = parse_addr_file(
            br#"{"node_id": 1, "client_url": "http://127.0.0.1:7001", "peer_addr": "127.0.0.1:7101", "pid": 1234}"#,
        )
        .unwrap();
        assert_eq!(addr, AddrFile { node_id: 1, client_url: "http://127.0.0.1:7001".into() });
        assert!(parse_addr_file(b"{}").is_err());
        let dir = tempfile::tempdir().unwrap();
        let error = format!("{:#}", read_addr_file(dir.path()).unwrap_err());
        assert!(error.contains("addr.json") && error.contains("data dir of a node"), "{error}");
        std::fs::write(dir.path().join(ADDR_FILE), "garbage").unwrap();
        let error = format!("{:#}", read_addr_file(dir.path()).unwrap_err());
        assert!(error.contains("is not a node's addr file"), "{error}");
    }
}
