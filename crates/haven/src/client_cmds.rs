//! The CLI verbs that talk to a running cluster: `status`, `kv`, `members`, `leave`,
//! `switchover`, `maintenance`, `config`, `audit`, `teardown`, `restart`, `recover`.
//!
//! ```text
//!   main.rs (argument parsing) ──▶ client_cmds ◀── you are here: options → ClientConfig,
//!                                      │            answers → text for people or JSON
//!                                      ▼
//!                                 haven-client (retries, endpoints, typed errors)
//! ```
//!
//! Every command takes the same client options ([`ClientOpts`]): `--endpoints` (or
//! `HAVEN_ENDPOINTS`), `--json` and `--timeout-ms`, and the bearer token from `--token`,
//! `--token-file`, `HAVEN_TOKEN` or `HAVEN_TOKEN_FILE` (first found wins, in that order: a
//! flag beats the environment). Output is for people by default and the server's JSON with
//! `--json`. Every failure becomes one line that says what went wrong and what to do, and a
//! non-zero exit code.

mod audit;
mod cluster;
mod config;
pub(crate) mod failure;
mod kv;
mod lifecycle;
pub(crate) mod output;
mod restart;
pub(crate) mod session;

use std::path::Path;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use failure::Failure;
use failure::Kind;
use haven_client::ClientConfig;

pub use audit::audit;
pub use audit::AuditArgs;
pub use cluster::leave;
pub use cluster::maintenance;
pub use cluster::members;
pub use cluster::status;
pub use cluster::switchover;
pub use cluster::STATUS_EXIT_CODES;
pub use config::config;
pub use config::ConfigCommand;
pub use kv::kv;
pub use lifecycle::recover;
pub use lifecycle::teardown;
pub use lifecycle::RecoverArgs;
pub use lifecycle::TeardownArgs;
pub use restart::restart;
pub use restart::RestartArgs;

/// Default `--timeout-ms`: long enough to ride out a leader election (about a second) with
/// retries, short enough that a script notices a dead cluster within seconds.
pub const TIMEOUT_MS_DEFAULT: u64 = 10_000;

/// Largest `--timeout-ms`: an hour; anything longer is a typo, not a wish.
pub const TIMEOUT_MS_MAX: u64 = 3_600_000;

/// The bearer token, when no `--token` or `--token-file` is given.
pub const TOKEN_ENV: &str = "HAVEN_TOKEN";

/// A file holding the bearer token, when neither flag nor `HAVEN_TOKEN` gives one.
pub const TOKEN_FILE_ENV: &str = "HAVEN_TOKEN_FILE";

/// Largest token file read: a token is 64 characters; a file much bigger than that is the
/// wrong file, and reading it whole would be pointless.
pub const TOKEN_FILE_BYTES_MAX: u64 = 4096;

/// Options every client command takes. `Debug` is derived, so the token would show in a
/// debug dump; nothing prints one.
#[derive(clap::Args, Debug, Clone, Default)]
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

    /// Trusted server key fingerprints, comma-separated (`haven fingerprint` prints a node's).
    /// Other members' keys are learned from a trusted node's status.
    #[arg(long = "server-fingerprint", env = "HAVEN_SERVER_FINGERPRINTS", value_name = "sha256:HEX,...")]
    pub server_fingerprints: Option<String>,

    /// Trust servers whose certificates this CA (PEM) signed, instead of fingerprints.
    #[arg(long, env = "HAVEN_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<std::path::PathBuf>,

    /// Bearer token (`hvn_...`). Visible to other users in `ps`: prefer --token-file.
    /// Falls back to HAVEN_TOKEN, then HAVEN_TOKEN_FILE.
    // No clap `env` here: clap would print the variable's value (the token) in --help, and
    // a flag must beat both variables, which clap's per-argument env cannot express.
    #[arg(long, value_name = "TOKEN", conflicts_with = "token_file")]
    pub token: Option<String>,

    /// File holding the bearer token, e.g. DATA_DIR/admin.token of the bootstrapping node.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

/// `haven maintenance on|off`.
#[derive(clap::Args, Debug, Clone)]
pub struct MaintenanceArgs {
    /// `on` pauses automatic failover and failback; `off` resumes them.
    #[arg(value_parser = ["on", "off"])]
    pub mode: String,
    #[command(flatten)]
    pub client: ClientOpts,
}

/// `haven switchover`.
#[derive(clap::Args, Debug, Clone)]
pub struct SwitchoverArgs {
    /// The node to hand the primary role to (default: the most caught-up voter).
    #[arg(long)]
    pub to: Option<u64>,
    #[command(flatten)]
    pub client: ClientOpts,
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
    /// A session for one command: the endpoints probed at once, one cluster picked, the
    /// endpoints ordered by what they said and what is remembered of them (see
    /// [`session`]); `first` endpoints (e.g. from a node's `addr.json`) come before the
    /// configured ones.
    pub(crate) async fn connect(&self, first: &[String]) -> anyhow::Result<session::Session> {
        session::connect(self.config(first)?).await
    }

    /// A client for these options, without probing (the endpoints in the order given).
    #[cfg(test)]
    pub(crate) fn client(&self, first: &[String]) -> anyhow::Result<haven_client::Client> {
        haven_client::Client::new(self.config(first)?).map_err(|error| explain("cannot set up the client", error))
    }

    /// The client configuration for these options.
    pub(crate) fn config(&self, first: &[String]) -> anyhow::Result<ClientConfig> {
        let mut endpoints: Vec<String> = first.to_vec();
        if let Some(list) = self.endpoints.as_deref().filter(|list| !list.trim().is_empty()) {
            endpoints.extend(haven_client::parse_endpoints(list).context("bad --endpoints / HAVEN_ENDPOINTS")?);
        }
        if endpoints.is_empty() {
            return Err(Failure::new(Kind::Usage, format!("no endpoints given; {ENDPOINTS_HINT}")).into_error());
        }
        let timeout = Duration::from_millis(self.timeout_ms);
        let mut config = ClientConfig::new(endpoints);
        config.deadline = timeout;
        config.request_timeout = timeout.min(haven_client::REQUEST_TIMEOUT_DEFAULT);
        config.server_fingerprints = self
            .server_fingerprints
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(str::to_string)
            .collect();
        config.ca_file = self.ca_file.clone();
        config.token = resolve_token(
            self.token.as_deref(),
            self.token_file.as_deref(),
            std::env::var(TOKEN_ENV).ok(),
            std::env::var_os(TOKEN_FILE_ENV).map(PathBuf::from),
        )?;
        config.validate().map_err(|error| explain("cannot set up the client", error))
    }
}

/// Milliseconds since the Unix epoch, by this machine's clock.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
}

/// The token to send: `--token`, else `--token-file`, else `HAVEN_TOKEN`, else
/// `HAVEN_TOKEN_FILE`, else none. Empty variables count as unset. Errors name the source
/// and never quote what it held.
fn resolve_token(
    flag: Option<&str>,
    flag_file: Option<&Path>,
    env: Option<String>,
    env_file: Option<PathBuf>,
) -> anyhow::Result<Option<String>> {
    let (token, source) = if let Some(token) = flag {
        (token.trim().to_string(), "--token".to_string())
    } else if let Some(path) = flag_file {
        (read_token_file(path)?, format!("--token-file {}", path.display()))
    } else if let Some(token) = env.filter(|token| !token.trim().is_empty()) {
        (token.trim().to_string(), TOKEN_ENV.to_string())
    } else if let Some(path) = env_file.filter(|path| !path.as_os_str().is_empty()) {
        (read_token_file(&path)?, format!("{TOKEN_FILE_ENV} {}", path.display()))
    } else {
        return Ok(None);
    };
    if let Err(error) = haven_core::auth::parse_token(&token) {
        anyhow::bail!("the token from {source} is {error}");
    }
    Ok(Some(token))
}

/// Reads a token file: one token, surrounding whitespace ignored.
fn read_token_file(path: &Path) -> anyhow::Result<String> {
    use std::io::Read as _;
    let fail = |what: &str| anyhow::anyhow!("cannot read the token file {}: {what}", path.display());
    let file = std::fs::File::open(path).map_err(|error| fail(&error.to_string()))?;
    let mut bytes = Vec::new();
    file.take(TOKEN_FILE_BYTES_MAX + 1).read_to_end(&mut bytes).map_err(|error| fail(&error.to_string()))?;
    if bytes.len() as u64 > TOKEN_FILE_BYTES_MAX {
        return Err(fail(&format!("it is larger than {TOKEN_FILE_BYTES_MAX} bytes; a token file holds one token")));
    }
    let text = String::from_utf8(bytes).map_err(|_| fail("it does not hold text"))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(fail("it is empty"));
    }
    Ok(token.to_string())
}

/// Where tokens come from, for the hint on a 401.
const TOKEN_HINT: &str = "give a valid token with --token-file FILE or HAVEN_TOKEN_FILE (or --token, HAVEN_TOKEN); a \
                          new cluster's first admin token is in DATA_DIR/admin.token on the node that bootstrapped it";

/// Turns a client error into one line (what failed, why, and what to do), with the kind
/// of failure (its exit code) and the fields a script may want (see [`failure`]).
pub(crate) fn explain(action: &str, error: haven_client::Error) -> anyhow::Error {
    let (kind, code) = failure::kind_of(&error);
    let mut failure = Failure::new(kind, format!("{action}: {error}{}", hint(&error))).code(code);
    failure.details = failure::details_of(&error);
    failure.into_error()
}

/// Adds `hint` to the message of the failure inside `error` (its kind and fields stay).
pub(crate) fn annotate(error: anyhow::Error, hint: &str) -> anyhow::Error {
    if hint.is_empty() {
        return error;
    }
    match failure::find(&error).cloned() {
        Some(mut failure) => {
            failure.message.push_str(hint);
            failure.into_error()
        }
        None => anyhow::anyhow!("{error:#}{hint}"),
    }
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
        (Some("unauthorized"), _) => format!("; {TOKEN_HINT}"),
        (Some("forbidden"), _) => "; use a token with a stronger role (an admin creates one with `haven tokens create \
                                   --role ROLE`)"
            .into(),
        // The server's refusal of an edited draft says this already.
        (Some("stale_draft"), Error::Api { message, .. }) if message.contains("haven config diff") => String::new(),
        (Some("stale_draft"), _) => "; review the draft again (`haven config diff`) and apply what you see".into(),
        (Some("not_stable"), _) => "; see `haven status`, or repeat with --force".into(),
        (Some("request_id_reused"), _) => "; a request id names one write: this one was used for a different write, \
                                           so use a new id (or none) for this one"
            .into(),
        (_, Error::ClusterMismatch { .. }) => "; HAVEN_ENDPOINTS / --endpoints name nodes of two clusters: give the \
                                              endpoints of one"
            .into(),
        _ => String::new(),
    }
}

/// Ends a command: a closed stdout (`haven kv list | head`) is a normal end, not a failure.
pub(crate) fn finish(result: anyhow::Result<ExitCode>) -> anyhow::Result<ExitCode> {
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
        #[command(subcommand)]
        Config(ConfigCommand),
        Audit(AuditArgs),
        Teardown(TeardownArgs),
        Restart(RestartArgs),
        Recover(RecoverArgs),
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
        assert_eq!((put.key.as_str(), put.value.as_deref(), put.prev_revision), ("a/b", Some("v"), Some(0)));
        assert_eq!((put.client.endpoints.as_deref(), put.client.json), (Some("x:1"), true));
        assert_eq!(put.client.timeout_ms, TIMEOUT_MS_DEFAULT);
        let Command::Kv(KvCommand::Put(put)) =
            parse(&["kv", "put", "k", "--file", "/tmp/v", "--request-id", "r-1"]).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (put.value, put.file.as_deref(), put.request_id.as_deref()),
            (None, Some(Path::new("/tmp/v")), Some("r-1"))
        );
        assert!(parse(&["kv", "put", "k"]).is_err(), "a value, `-` or --file");
        assert!(parse(&["kv", "put", "k", "v", "--file", "f"]).is_err(), "not both");
        let Command::Kv(KvCommand::Del(del)) = parse(&["kv", "del", "k", "--request-id", "r-2"]).unwrap() else {
            panic!()
        };
        assert_eq!(del.request_id.as_deref(), Some("r-2"));
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
    fn ha_control_commands_parse() {
        use config::DraftCommand;
        let Command::Config(ConfigCommand::Draft(DraftCommand::Set(set))) =
            parse(&["config", "draft", "set", "nodes.2.ping_targets", r#"["10.0.0.1"]"#, "--json"]).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (set.key.as_str(), set.value.as_str(), set.client.json),
            ("nodes.2.ping_targets", r#"["10.0.0.1"]"#, true)
        );
        let Command::Config(ConfigCommand::Draft(DraftCommand::Unset(unset))) =
            parse(&["config", "draft", "unset", "a", "b"]).unwrap()
        else {
            panic!()
        };
        assert_eq!(unset.keys, ["a", "b"]);
        assert!(parse(&["config", "draft", "unset"]).is_err(), "a key at least");
        for args in [
            &["config", "show"][..],
            &["config", "diff"],
            &["config", "draft", "show"],
            &["config", "draft", "discard"],
        ] {
            assert!(matches!(parse(args).unwrap(), Command::Config(_)), "{args:?}");
        }
        let Command::Config(ConfigCommand::Apply(apply)) = parse(&["config", "apply", "--base-version", "3"]).unwrap()
        else {
            panic!()
        };
        assert_eq!(apply.base_version, Some(3));
        let Command::Audit(audit) = parse(&["audit", "--since", "7", "--json"]).unwrap() else { panic!() };
        assert_eq!((audit.since, audit.client.json), (7, true));
        let Command::Teardown(teardown) = parse(&["teardown", "--force"]).unwrap() else { panic!() };
        assert!(teardown.force);
        let Command::Restart(restart) = parse(&["restart", "--rolling", "--pending-only"]).unwrap() else { panic!() };
        assert!(restart.rolling && restart.pending_only && restart.node.is_none());
        let Command::Restart(restart) = parse(&["restart", "--node", "2"]).unwrap() else { panic!() };
        assert_eq!((restart.node, restart.rolling), (Some(2), false));
        assert!(parse(&["restart", "--node", "2", "--rolling"]).is_err());
        assert!(parse(&["restart", "--pending-only"]).is_err(), "only with --rolling");
        let Command::Recover(recover) = parse(&["recover", "--confirm-down", "1,3", "--dry-run"]).unwrap() else {
            panic!()
        };
        assert_eq!((recover.confirm_down.as_slice(), recover.dry_run, recover.standalone), (&[1, 3][..], true, false));
        let Command::Recover(recover) = parse(&["recover", "--standalone"]).unwrap() else { panic!() };
        assert!(recover.standalone && recover.confirm_down.is_empty());
        assert!(parse(&["recover"]).is_err(), "--confirm-down or --standalone");
        assert!(parse(&["recover", "--standalone", "--confirm-down", "1"]).is_err());
    }

    #[test]
    fn no_endpoints_is_one_clear_line() {
        let opts = ClientOpts { endpoints: None, timeout_ms: 10, ..ClientOpts::default() };
        let error = opts.client(&[]).unwrap_err().to_string();
        assert!(error.starts_with("no endpoints given; check --endpoints or HAVEN_ENDPOINTS"), "{error}");
        let opts = ClientOpts { endpoints: Some("ftp://x:1".into()), timeout_ms: 10, ..ClientOpts::default() };
        let error = format!("{:#}", opts.client(&[]).unwrap_err());
        assert!(error.contains("bad --endpoints") && error.contains("give https://"), "{error}");
        // https endpoints need a fingerprint to trust (or a CA file).
        let opts = ClientOpts { endpoints: Some("a:1".into()), timeout_ms: 10, ..ClientOpts::default() };
        let error = format!("{:#}", opts.client(&[]).unwrap_err());
        assert!(error.contains("HAVEN_SERVER_FINGERPRINTS"), "{error}");
        let opts =
            ClientOpts { endpoints: Some("http://a:1,http://b:2".into()), timeout_ms: 100, ..ClientOpts::default() };
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
        let unauthorized = haven_client::classify_response(401, br#"{"error":"unauthorized","message":"m"}"#);
        assert!(explain("x", unauthorized).to_string().contains("--token-file FILE or HAVEN_TOKEN_FILE"));
        let forbidden = haven_client::classify_response(403, br#"{"error":"forbidden","message":"m"}"#);
        assert!(explain("x", forbidden).to_string().contains("stronger role"));
    }

    #[test]
    fn token_options_parse() {
        let Command::Status(status) = parse(&["status", "--token-file", "/t"]).unwrap() else { panic!() };
        assert_eq!(status.client.token_file.as_deref(), Some(Path::new("/t")));
        assert!(parse(&["status", "--token", "a", "--token-file", "/t"]).is_err(), "one or the other");
    }

    /// Flag beats environment, a token beats a file at the same level, files are trimmed,
    /// and no error quotes what it read.
    #[test]
    fn tokens_come_from_flags_then_environment() {
        let dir = tempfile::tempdir().unwrap();
        let token = |seed: u8| haven_core::auth::new_token([seed; 8], [seed; 32]).token;
        let (a, b, c, d) = (token(1), token(2), token(3), token(4));
        let file_b = dir.path().join("b");
        std::fs::write(&file_b, format!("\n  {b}\n")).unwrap();
        let file_d = dir.path().join("d");
        std::fs::write(&file_d, &d).unwrap();
        let resolve = |flag: Option<&str>, flag_file: Option<&Path>, env: Option<&str>, env_file: Option<&Path>| {
            resolve_token(flag, flag_file, env.map(str::to_string), env_file.map(Path::to_path_buf)).unwrap()
        };
        assert_eq!(resolve(Some(&a), None, Some(&c), Some(&file_d)), Some(a.clone()));
        assert_eq!(resolve(None, Some(&file_b), Some(&c), Some(&file_d)), Some(b.clone()));
        assert_eq!(resolve(None, None, Some(&c), Some(&file_d)), Some(c.clone()));
        assert_eq!(resolve(None, None, Some(""), Some(&file_d)), Some(d.clone()));
        assert_eq!(resolve(None, None, None, None), None);

        let missing = dir.path().join("missing");
        let error = resolve_token(None, Some(&missing), None, None).unwrap_err().to_string();
        assert!(error.starts_with(&format!("cannot read the token file {}", missing.display())), "{error}");
        let empty = dir.path().join("empty");
        std::fs::write(&empty, " \n").unwrap();
        assert!(resolve_token(None, Some(&empty), None, None).unwrap_err().to_string().contains("it is empty"));
        let big = dir.path().join("big");
        std::fs::write(&big, format!("{a}{}", " ".repeat(TOKEN_FILE_BYTES_MAX as usize))).unwrap();
        let error = resolve_token(None, Some(&big), None, None).unwrap_err().to_string();
        assert!(error.contains("larger than") && !error.contains(&a), "{error}");
        // A near-token (one character short) is refused without being echoed.
        let near = &a[..a.len() - 1];
        let error = resolve_token(Some(near), None, None, None).unwrap_err().to_string();
        assert!(error.starts_with("the token from --token is not a Haven token") && !error.contains(near), "{error}");
    }
}
