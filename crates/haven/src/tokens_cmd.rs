//! `haven tokens create|list|revoke`: bearer tokens, for admins.
//!
//! ```text
//!   haven tokens create --role reader --ttl 1h ──▶ POST /v1/tokens ──▶ prints the token once
//!   haven tokens list                          ──▶ GET /v1/tokens  (ids, names, roles; no secrets)
//!   haven tokens revoke ID                     ──▶ DELETE /v1/tokens/{id}
//! ```
//!
//! `create` prints the token alone on stdout (so `haven tokens create ... > FILE` stores
//! it) and what it is on stderr. The server shows a secret exactly once; it cannot be
//! listed or read again, only revoked and replaced.

use std::process::ExitCode;

use haven_core::auth::validate_ttl_seconds;

use crate::client_cmds::explain;
use crate::client_cmds::failure::Failure;
use crate::client_cmds::failure::Kind;
use crate::client_cmds::finish;
use crate::client_cmds::output::print_json;
use crate::client_cmds::output::print_line;
use crate::client_cmds::output::table;
use crate::client_cmds::ClientOpts;

/// The roles `--role` accepts (`haven_core::auth::Role`).
const ROLES: [&str; 4] = ["admin", "operator", "reader", "join"];

/// `haven tokens ...`.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum TokensCommand {
    /// Create a token and print it; it is shown only this once.
    Create(CreateArgs),
    /// List the tokens: id, name, role, creation, expiry, use (never their secrets).
    List(ListArgs),
    /// Revoke token ID: requests made with it are refused from now on, even writes in flight.
    Revoke(RevokeArgs),
    /// Mint an admin token offline from a STOPPED node's data dir (when no admin token is
    /// left): it is registered, and recorded in the audit log, when the node starts.
    BreakGlass(BreakGlassArgs),
}

#[derive(clap::Args, Debug, Clone)]
pub struct BreakGlassArgs {
    /// The data dir of one of the cluster's nodes, stopped (run as a user who can write it).
    #[arg(long, value_name = "DIR")]
    pub data_dir: std::path::PathBuf,
    /// A label for people; default `break-glass`.
    #[arg(long)]
    pub name: Option<String>,
    /// Write the token to FILE (created with mode 0600; must not exist) instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<std::path::PathBuf>,
}

#[derive(clap::Args, Debug, Clone)]
pub struct CreateArgs {
    /// admin: everything. operator: reads and KV writes. reader: reads. join: joining one
    /// node, once (`haven serve --join URL --join-token-file FILE`).
    #[arg(long, value_parser = ROLES)]
    pub role: String,
    /// A label for people (letters, digits, `.`, `_`, `-`, `@`; at most 64); default: the role.
    #[arg(long)]
    pub name: Option<String>,
    /// Lifetime: a number with a unit, `30s`, `10m`, `1h`, `2d` (a bare number is seconds).
    /// Without it the token does not expire.
    #[arg(long, value_name = "DURATION", value_parser = parse_ttl)]
    pub ttl: Option<u64>,
    #[command(flatten)]
    pub client: ClientOpts,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ListArgs {
    #[command(flatten)]
    pub client: ClientOpts,
}

#[derive(clap::Args, Debug, Clone)]
pub struct RevokeArgs {
    /// The token's id (16 hex digits; the ID column of `haven tokens list`) or its name.
    /// Revoking a token that is not there (any more) is not an error.
    #[arg(value_name = "ID|NAME")]
    pub id: String,
    #[command(flatten)]
    pub client: ClientOpts,
}

/// Runs `haven tokens ...`.
pub async fn tokens(command: TokensCommand) -> anyhow::Result<ExitCode> {
    finish(match command {
        TokensCommand::Create(args) => create(args).await,
        TokensCommand::List(args) => list(args).await,
        TokensCommand::Revoke(args) => revoke(args).await,
        TokensCommand::BreakGlass(args) => break_glass(&args),
    })
}

/// `haven tokens break-glass`: mints an admin token into a stopped node's data dir.
fn break_glass(args: &BreakGlassArgs) -> anyhow::Result<ExitCode> {
    if let Some(path) = args.out.as_ref().filter(|path| path.exists()) {
        anyhow::bail!("{} exists; remove it first (it is never overwritten)", path.display());
    }
    let minted_by = format!("{}@{}", whoami(), hostname());
    let token = haven_server::break_glass::mint_offline(&args.data_dir, args.name.as_deref(), &minted_by)?;
    match &args.out {
        Some(path) => haven_tls::identity::write_private(path, format!("{token}\n").as_bytes())
            .map_err(|error| anyhow::anyhow!("cannot write {} ({error}); the token was not shown", path.display()))?,
        None => print_line(&token)?,
    }
    eprintln!(
        "minted a break-glass admin token into {}; start that node: it registers the token once the cluster has a \
         leader, and records it in the audit log (`haven audit`). Shown only this once",
        args.data_dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The user running this, for the audit record (the name from the environment, else the uid).
fn whoami() -> String {
    std::env::var("USER")
        .ok()
        .filter(|user| !user.is_empty())
        // SAFETY: getuid has no preconditions.
        .unwrap_or_else(|| format!("uid {}", unsafe { libc::getuid() }))
}

/// This machine's host name, or `localhost` when it cannot be read.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

async fn create(args: CreateArgs) -> anyhow::Result<ExitCode> {
    let session = args.client.connect(&[]).await?;
    let client = &session.client;
    let created = client
        .create_token(&args.role, args.name.as_deref(), args.ttl)
        .await
        .map_err(|error| explain("cannot create the token", error))?;
    if args.client.json {
        print_json(&created)?;
    } else {
        print_line(&created.token)?;
        eprintln!("{}", describe_created(&created));
    }
    Ok(ExitCode::SUCCESS)
}

async fn list(args: ListArgs) -> anyhow::Result<ExitCode> {
    let session = args.client.connect(&[]).await?;
    let client = &session.client;
    let tokens = client.list_tokens().await.map_err(|error| explain("cannot list the tokens", error))?;
    if args.client.json {
        print_json(&haven_client::TokenList { tokens })?;
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = tokens
        .iter()
        .map(|token| {
            let expires = match token.expires_ms {
                None => "never".to_string(),
                Some(ms) if token.expired => format!("{} (expired)", format_utc(ms)),
                Some(ms) => format_utc(ms),
            };
            let used = match (token.used, token.used_by_node) {
                (true, Some(node)) => format!("by node {node}"),
                (true, None) => "yes".to_string(),
                (false, _) => "-".to_string(),
            };
            vec![token.id.clone(), token.name.clone(), token.role.clone(), format_utc(token.created_ms), expires, used]
        })
        .collect();
    for line in table(&["ID", "NAME", "ROLE", "CREATED", "EXPIRES", "USED"], &rows) {
        print_line(&line)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The line after a new token: what it is, once (issue 14: the name repeated the role).
fn describe_created(created: &haven_client::CreatedToken) -> String {
    let expires =
        created.expires_ms.map_or_else(|| "never expires".to_string(), |ms| format!("expires {}", format_utc(ms)));
    let named = if created.name == created.role { String::new() } else { format!(" named {:?}", created.name) };
    format!(
        "created {} token {}{named}; it {expires}. It is shown only this once: store it now",
        created.role, created.id
    )
}

async fn revoke(args: RevokeArgs) -> anyhow::Result<ExitCode> {
    if args.id.starts_with(haven_core::auth::TOKEN_PREFIX) {
        // Not echoed: a whole token pasted by mistake must not end up in a message.
        return Err(Failure::new(
            Kind::Invalid,
            "that looks like a whole token; give its id (the 16 hex digits after `hvn_`) or its name (`haven tokens list`)",
        )
        .into_error());
    }
    let session = args.client.connect(&[]).await?;
    let client = &session.client;
    let nothing = |what: String| -> anyhow::Result<ExitCode> {
        if args.client.json {
            print_json(&serde_json::json!({ "revoked": false, "message": what }))?;
        } else {
            print_line(&format!("{what}; nothing to revoke"))?;
        }
        Ok(ExitCode::SUCCESS)
    };
    let id = if haven_core::auth::is_token_id(&args.id) {
        args.id.clone()
    } else {
        let tokens = client.list_tokens().await.map_err(|error| explain("cannot list the tokens", error))?;
        let named: Vec<&haven_client::TokenInfo> = tokens.iter().filter(|token| token.name == args.id).collect();
        match named.as_slice() {
            [] => return nothing(format!("no token is named {:?}", args.id)),
            [one] => one.id.clone(),
            several => {
                let ids: Vec<&str> = several.iter().map(|token| token.id.as_str()).collect();
                return Err(Failure::new(
                    Kind::Invalid,
                    format!(
                        "{} tokens are named {:?} ({}); revoke one by its id",
                        several.len(),
                        args.id,
                        ids.join(", ")
                    ),
                )
                .into_error());
            }
        }
    };
    let revoked = match client.revoke_token(&id).await {
        Ok(revoked) => revoked,
        // Revoking what is not there is done already (issue 14: a repeat was an error).
        Err(haven_client::Error::Api { status: 404, .. }) => {
            return nothing(format!("token {id} does not exist (revoked already?)"))
        }
        Err(error) => return Err(explain("cannot revoke the token", error)),
    };
    if args.client.json {
        print_json(&revoked)?;
    } else {
        print_line(&format!("revoked token {}", revoked.id))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Parses `30s`, `10m`, `1h`, `2d` or a bare number of seconds into seconds, within the
/// server's TTL bounds.
fn parse_ttl(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let unit_seconds: u64 = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 60 * 60,
        "d" => 24 * 60 * 60,
        _ => return Err("give a number with a unit: 30s, 10m, 1h or 2d".into()),
    };
    let number: u64 = number.parse().map_err(|_| "give a number with a unit: 30s, 10m, 1h or 2d".to_string())?;
    let seconds = number.checked_mul(unit_seconds).ok_or("that is far too long")?;
    validate_ttl_seconds(seconds)?;
    Ok(seconds)
}

/// `YYYY-MM-DD HH:MM:SSZ` (UTC) for ms since the Unix epoch: RFC 3339 with a space, as
/// the token table has always shown it.
fn format_utc(ms: u64) -> String {
    crate::client_cmds::output::format_rfc3339(ms).replacen('T', " ", 1)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(subcommand)]
        command: TokensCommand,
    }

    fn parse(args: &[&str]) -> Result<TokensCommand, clap::Error> {
        Cli::try_parse_from(std::iter::once("tokens").chain(args.iter().copied())).map(|cli| cli.command)
    }

    #[test]
    fn the_clap_definitions_are_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn commands_parse() {
        let TokensCommand::Create(create) =
            parse(&["create", "--role", "reader", "--name", "ci", "--ttl", "10m", "--json"]).unwrap()
        else {
            panic!()
        };
        assert_eq!((create.role.as_str(), create.name.as_deref(), create.ttl), ("reader", Some("ci"), Some(600)));
        assert!(create.client.json);
        assert!(parse(&["create", "--role", "root"]).is_err());
        assert!(parse(&["create"]).is_err(), "a role is required");
        assert!(matches!(parse(&["list"]).unwrap(), TokensCommand::List(_)));
        let TokensCommand::Revoke(revoke) = parse(&["revoke", "0123456789abcdef"]).unwrap() else { panic!() };
        assert_eq!(revoke.id, "0123456789abcdef");
    }

    #[test]
    fn ttls_parse_with_units_and_bounds() {
        assert_eq!(parse_ttl("30s"), Ok(30));
        assert_eq!(parse_ttl("10m"), Ok(600));
        assert_eq!(parse_ttl("1h"), Ok(3600));
        assert_eq!(parse_ttl("2d"), Ok(172_800));
        assert_eq!(parse_ttl("45"), Ok(45));
        for bad in ["", "m", "0s", "1w", "-1h", "1.5h", "99999999999999999999d", "3651d", "10 m"] {
            assert!(parse_ttl(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn times_print_in_utc() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00Z");
        assert_eq!(format_utc(951_782_400_000), "2000-02-29 00:00:00Z");
        assert_eq!(format_utc(1_700_000_000_123), "2023-11-14 22:13:20Z");
    }
}
