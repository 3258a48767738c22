//! The CLI verbs that talk to a running cluster: `status`, `kv`, `members`, `leave`.
//!
//! ```text
//!   main.rs (argument parsing) ──▶ client_cmds ◀── you are here: options → ClientConfig,
//!                                      │            answers → text for people or JSON
//!                                      ▼
//!                                 haven-client (retries, endpoints, typed errors)
//! ```
//!
//! Every command takes the same client options ([`ClientOpts`]): `--endpoints` (or
//! `HAVEN_ENDPOINTS`), `--json` and `--timeout-ms`. Output is for people by default and the
//! server's JSON with `--json`. Every failure becomes one line that says what went wrong
//! and what to do, and a non-zero exit code.

mod cluster;
mod kv;
mod output;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use haven_client::ClientConfig;

pub use cluster::leave;
pub use cluster::members;
pub use cluster::status;
pub use kv::kv;

/// Default `--timeout-ms`: long enough to ride out a leader election (about a second) with
/// retries, short enough that a script notices a dead cluster within seconds.
pub const TIMEOUT_MS_DEFAULT: u64 = 10_000;

/// Largest `--timeout-ms`: an hour; anything longer is a typo, not a wish.
pub const TIMEOUT_MS_MAX: u64 = 3_600_000;

/// Options every client command takes.
#[derive(clap::Args, Debug, Clone)]
pub struct ClientOpts {
    /// Client URLs of the cluster's nodes, comma-separated (`host:port` works too).
    #[arg(long, env = "HAVEN_ENDPOINTS", value_name = "URL,URL")]
    pub endpoints: Option<String>,

    /// Print the server's JSON instead of text for people.
    #[arg(long)]
    pub json: bool,

    /// Give up after this many milliseconds, retries over all endpoints included.
    #[arg(long, value_name = "MS", default_value_t = TIMEOUT_MS_DEFAULT,
          value_parser = clap::value_parser!(u64).range(1..=TIMEOUT_MS_MAX))]
    pub timeout_ms: u64,
}

/// `haven status`.
#[derive(clap::Args, Debug, Clone)]
pub struct StatusArgs {
    #[command(flatten)]
    pub client: ClientOpts,
}

/// `haven kv ...`.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum KvCommand {
    /// Write VALUE under KEY; prints the new revision.
    Put(kv::PutArgs),
    /// Print the value of KEY.
    Get(kv::GetArgs),
    /// Delete KEY.
    Del(kv::DelArgs),
    /// List the keys under PREFIX with their values.
    List(kv::ListArgs),
    /// Print every change under PREFIX until Ctrl-C.
    Watch(kv::WatchArgs),
}

/// `haven members ...`.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum MembersCommand {
    /// Show the members: id, role, client URL, reachability, lag.
    List(cluster::MembersListArgs),
    /// Remove node ID from the cluster.
    Remove(cluster::MembersRemoveArgs),
}

/// `haven leave --data-dir DIR`.
#[derive(clap::Args, Debug, Clone)]
pub struct LeaveArgs {
    /// Data directory of the node to remove (its `addr.json` names the node).
    #[arg(long, value_name = "DIR")]
    pub data_dir: std::path::PathBuf,

    /// Remove it even when the remaining voters might not form a majority.
    #[arg(long)]
    pub force: bool,

    #[command(flatten)]
    pub client: ClientOpts,
}

/// Where the endpoints come from, for the hint when none answers.
const ENDPOINTS_HINT: &str = "check --endpoints or HAVEN_ENDPOINTS (`haven dev --dir DIR` writes them to DIR/env)";

impl ClientOpts {
    /// A client for these options; `first` endpoints (e.g. from a node's `addr.json`) are
    /// tried before the configured ones.
    fn client(&self, first: &[String]) -> anyhow::Result<haven_client::Client> {
        let mut endpoints: Vec<String> = first.to_vec();
        if let Some(list) = self.endpoints.as_deref().filter(|list| !list.trim().is_empty()) {
            endpoints.extend(haven_client::parse_endpoints(list).context("bad --endpoints / HAVEN_ENDPOINTS")?);
        }
        if endpoints.is_empty() {
            anyhow::bail!("no endpoints given; {ENDPOINTS_HINT}");
        }
        let timeout = Duration::from_millis(self.timeout_ms);
        let mut config = ClientConfig::new(endpoints);
        config.deadline = timeout;
        config.request_timeout = timeout.min(haven_client::REQUEST_TIMEOUT_DEFAULT);
        Ok(haven_client::Client::new(config)?)
    }
}

/// Turns a client error into one line: what failed, why, and what to do.
fn explain(action: &str, error: haven_client::Error) -> anyhow::Error {
    anyhow::anyhow!("{action}: {error}{}", hint(&error))
}

/// The advice a person needs beyond the error's own message.
fn hint(error: &haven_client::Error) -> String {
    use haven_client::Error;
    let innermost = match error {
        Error::Unavailable { last_error, .. } | Error::DeadlineExceeded { last_error, .. } => last_error.as_ref(),
        other => other,
    };
    match (error.code(), innermost) {
        (Some("no_leader"), _) => {
            "; the cluster has no leader (an election is running or a majority of voters is down); see `haven status`"
                .into()
        }
        (_, Error::Unreachable { .. }) => format!("; is the cluster running? {ENDPOINTS_HINT}"),
        (_, Error::Timeout { .. }) => "; the cluster may be electing a leader or have lost its majority; see \
                                       `haven status` (reads with --stale need no leader)"
            .into(),
        (_, Error::InvalidResponse { .. }) => "; is that endpoint a haven node of this version?".into(),
        _ => String::new(),
    }
}

/// Ends a command: a closed stdout (`haven kv list | head`) is a normal end, not a failure.
fn finish(result: anyhow::Result<ExitCode>) -> anyhow::Result<ExitCode> {
    match result {
        Err(error) if error.is::<output::StdoutClosed>() => Ok(ExitCode::SUCCESS),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(subcommand)]
        command: Command,
    }

    #[derive(clap::Subcommand, Debug)]
    enum Command {
        Status(StatusArgs),
        #[command(subcommand)]
        Kv(KvCommand),
        #[command(subcommand)]
        Members(MembersCommand),
        Leave(LeaveArgs),
    }

    fn parse(args: &[&str]) -> Result<Command, clap::Error> {
        Cli::try_parse_from(std::iter::once("haven").chain(args.iter().copied())).map(|cli| cli.command)
    }

    #[test]
    fn the_clap_definitions_are_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn kv_commands_parse() {
        let Command::Kv(KvCommand::Put(put)) =
            parse(&["kv", "put", "a/b", "v", "--prev-revision", "0", "--endpoints", "x:1", "--json"]).unwrap()
        else {
            panic!()
        };
        assert_eq!((put.key.as_str(), put.value.as_str(), put.prev_revision), ("a/b", "v", Some(0)));
        assert_eq!((put.client.endpoints.as_deref(), put.client.json), (Some("x:1"), true));
        assert_eq!(put.client.timeout_ms, TIMEOUT_MS_DEFAULT);
        let Command::Kv(KvCommand::Get(get)) = parse(&["kv", "get", "k", "--stale", "--raw"]).unwrap() else {
            panic!()
        };
        assert!(get.stale && get.raw);
        let Command::Kv(KvCommand::List(list)) = parse(&["kv", "list", "p/", "--limit", "5"]).unwrap() else {
            panic!()
        };
        assert_eq!((list.prefix.as_str(), list.limit), ("p/", Some(5)));
        let Command::Kv(KvCommand::Watch(watch)) = parse(&["kv", "watch", "--after-revision", "9"]).unwrap() else {
            panic!()
        };
        assert_eq!((watch.prefix.as_str(), watch.after_revision), ("", Some(9)));
        assert!(matches!(parse(&["kv", "del", "k"]).unwrap(), Command::Kv(KvCommand::Del(_))));
        assert!(parse(&["kv", "list", "--limit", "0"]).is_err());
        assert!(parse(&["kv", "get", "k", "--timeout-ms", "0"]).is_err());
    }

    #[test]
    fn cluster_commands_parse() {
        assert!(matches!(parse(&["status", "--json"]).unwrap(), Command::Status(s) if s.client.json));
        assert!(matches!(parse(&["members", "list"]).unwrap(), Command::Members(MembersCommand::List(_))));
        let Command::Members(MembersCommand::Remove(remove)) = parse(&["members", "remove", "3", "--force"]).unwrap()
        else {
            panic!()
        };
        assert_eq!((remove.id, remove.force), (3, true));
        let Command::Leave(leave) = parse(&["leave", "--data-dir", "/d", "--force"]).unwrap() else { panic!() };
        assert_eq!((leave.data_dir.to_str(), leave.force), (Some("/d"), true));
        assert!(parse(&["leave"]).is_err());
    }

    #[test]
    fn no_endpoints_is_one_clear_line() {
        let opts = ClientOpts { endpoints: None, json: false, timeout_ms: 10 };
        let error = opts.client(&[]).unwrap_err().to_string();
        assert!(error.starts_with("no endpoints given; check --endpoints or HAVEN_ENDPOINTS"), "{error}");
        let opts = ClientOpts { endpoints: Some("https://x:1".into()), json: false, timeout_ms: 10 };
        let error = format!("{:#}", opts.client(&[]).unwrap_err());
        assert!(error.contains("bad --endpoints") && error.contains("http:// only"), "{error}");
        let opts = ClientOpts { endpoints: Some("a:1,b:2".into()), json: false, timeout_ms: 100 };
        let client = opts.client(&["http://c:3".into()]).unwrap();
        assert_eq!(client.config().endpoints, ["http://c:3", "http://a:1", "http://b:2"]);
        assert_eq!(client.config().deadline, Duration::from_millis(100));
        assert_eq!(client.config().request_timeout, Duration::from_millis(100));
    }

    #[test]
    fn errors_carry_advice() {
        use haven_client::Error;
        let refused = Error::Unavailable {
            tried: vec!["http://a:1".into(), "http://b:2".into()],
            last_error: Box::new(Error::Unreachable {
                endpoint: "http://b:2".into(),
                reason: "connection refused".into(),
            }),
        };
        assert_eq!(
            explain("cannot read key \"k\"", refused).to_string(),
            "cannot read key \"k\": no endpoint answered (tried http://a:1, http://b:2): cannot connect to \
             http://b:2: connection refused; is the cluster running? check --endpoints or HAVEN_ENDPOINTS \
             (`haven dev --dir DIR` writes them to DIR/env)"
        );
        let no_leader = Error::Unavailable {
            tried: vec!["http://a:1".into()],
            last_error: Box::new(haven_client::classify_response(503, br#"{"error":"no_leader","message":"m"}"#)),
        };
        assert!(explain("x", no_leader).to_string().contains("the cluster has no leader"));
        let compare = Error::CompareFailed { current_revision: 4 };
        assert_eq!(
            explain("cannot write", compare).to_string(),
            "cannot write: compare failed: the key's current revision is 4; read it again and retry with that revision"
        );
    }
}
