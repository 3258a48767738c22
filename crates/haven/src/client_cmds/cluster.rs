//! `haven status`, `haven members list|remove`, `haven leave`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use haven_client::Client;
use haven_client::Status;
use serde::Deserialize;

use super::explain;
use super::finish;
use super::output::print_json;
use super::output::print_line;
use super::output::table;
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

/// Runs `haven status`: exits non-zero when the cluster has no leader.
pub async fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    finish(status_inner(args).await)
}

async fn status_inner(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let client = args.client.client(&[])?;
    let view = best_status(&client).await?;
    let status = &view.status;
    if args.client.json {
        print_json(status)?;
    } else {
        for line in describe_status(status) {
            print_line(&line)?;
        }
    }
    for warning in &status.warnings {
        eprintln!("warning: {warning}");
    }
    if let Some(problem) = leader_problem(&view) {
        eprintln!("error: {problem}");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `haven members ...`.
pub async fn members(command: MembersCommand) -> anyhow::Result<ExitCode> {
    finish(match command {
        MembersCommand::List(args) => members_list(args).await,
        MembersCommand::Remove(args) => {
            let client = args.client.client(&[])?;
            remove(&client, args.id, args.force, args.client.json).await
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
    let client = args.client.client(&[own_url])?;
    remove(&client, addr.node_id, args.force, args.client.json).await
}

async fn members_list(args: MembersListArgs) -> anyhow::Result<ExitCode> {
    let client = args.client.client(&[])?;
    if args.client.json {
        let members = client.members().await.map_err(|error| explain("cannot list the members", error))?;
        print_json(&haven_client::Members { members })?;
    } else {
        // The status knows the leader, which the role column needs.
        let view = best_status(&client).await?;
        for line in member_table(&view.status) {
            print_line(&line)?;
        }
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
    let client = args.client.client(&[])?;
    let target = args.to.map_or_else(|| "the most caught-up voter".to_string(), |id| format!("node {id}"));
    let result =
        client.switchover(args.to).await.map_err(|error| explain(&format!("cannot switch over to {target}"), error))?;
    if args.client.json {
        print_json(&result)?;
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
    let client = args.client.client(&[])?;
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
    if let Some(ha) = status.extra.get("ha") {
        let state = ha["state"].as_str().unwrap_or("unknown");
        let topology = ha["topology"]["kind"].as_str().unwrap_or("unknown topology").replace('-', " ");
        lines.push(format!("HA {state}  ({topology}; {})", ha["survives"].as_str().unwrap_or("")));
        for reason in ha["reasons"].as_array().into_iter().flatten().filter_map(|r| r.as_str()) {
            lines.push(format!("  - {reason}"));
        }
    }
    lines.push(String::new());
    lines.extend(member_table(status));
    lines
}

fn member_table(status: &Status) -> Vec<String> {
    let mut members = status.members.clone();
    members.sort_by_key(|member| member.id);
    let rows: Vec<Vec<String>> = members
        .iter()
        .map(|member| {
            let role = if Some(member.id) == status.leader {
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
            vec![member.id.to_string(), role.to_string(), member.client_url.clone(), reachable.to_string(), lag]
        })
        .collect();
    table(&["ID", "ROLE", "CLIENT URL", "REACHABLE", "LAG"], &rows)
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
                "ID  ROLE      CLIENT URL             REACHABLE  LAG",
                "1   leader    http://127.0.0.1:7001  yes        0",
                "2   follower  http://127.0.0.1:7002  no         12",
                "3   learner   http://127.0.0.1:7003  ?          -",
            ]
        );
        assert!(describe_status(&status(None))[0].contains("leader none"));
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
