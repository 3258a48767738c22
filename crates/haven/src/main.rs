//! `haven`: one binary for serving a node, running a local cluster and talking to a cluster.
//!
//! Thin on purpose: argument parsing here, the work in `haven-server` and `haven-client`.

mod cli_docs;
mod client_cmds;
mod dev;
mod keys;
mod serve;
mod service;
mod tokens_cmd;

use std::process::ExitCode;

use clap::CommandFactory;
use clap::Parser;
use clap::Subcommand;

#[derive(Parser, Debug)]
#[command(name = "haven", version, about = "Haven: a highly available management database",
          after_help = client_cmds::failure::EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run one node.
    Serve(serve::ServeArgs),
    /// Prepare a stopped node's data dir to start a new cluster (once, before its first start).
    Init(serve::InitArgs),
    /// Run a local cluster of 1, 3, 5 or 7 nodes on 127.0.0.1 as child processes.
    Dev(dev::DevArgs),
    /// Show the cluster's status and HA state; exits 0 only when the HA state is stable.
    #[command(after_help = client_cmds::STATUS_EXIT_CODES)]
    Status(client_cmds::StatusArgs),
    /// Read and write keys.
    #[command(subcommand)]
    Kv(client_cmds::KvCommand),
    /// List or remove cluster members.
    #[command(subcommand)]
    Members(client_cmds::MembersCommand),
    /// Create a node's TLS key and certificate; prints its fingerprint.
    Keygen(keys::KeygenArgs),
    /// Print the fingerprint of a node's TLS key.
    Fingerprint(keys::FingerprintArgs),
    /// Pause (on) or resume (off) automatic failover and failback.
    Maintenance(client_cmds::MaintenanceArgs),
    /// Hand the primary role to another voter (seed 002's "swap roles").
    Switchover(client_cmds::SwitchoverArgs),
    /// Remove the node whose data dir is given from its cluster.
    Leave(client_cmds::LeaveArgs),
    /// Create, list or revoke bearer tokens (admin).
    #[command(subcommand)]
    Tokens(tokens_cmd::TokensCommand),
    /// Show the HA configuration; edit it as a draft, check it, apply it (admin writes).
    #[command(subcommand)]
    Config(client_cmds::ConfigCommand),
    /// Show the audit log: who did what, when, on which node.
    Audit(client_cmds::AuditArgs),
    /// End the cluster: the primary continues alone with all data, the others are detached.
    Teardown(client_cmds::TeardownArgs),
    /// Restart a node's process in place, or every node one at a time (--rolling).
    Restart(client_cmds::RestartArgs),
    /// After a majority is lost for good: make the node at the first endpoint a new
    /// one-voter cluster with all its data (or start a detached node, --standalone).
    Recover(client_cmds::RecoverArgs),
    /// Print a shell completion script (a packaging step; see deploy/build-deb).
    #[command(hide = true)]
    Completions(cli_docs::CompletionsArgs),
    /// Write the man pages into a directory (a packaging step; see deploy/build-deb).
    #[command(hide = true)]
    Man(cli_docs::ManArgs),
}

fn main() -> ExitCode {
    // A role's guard process is this binary too (haven_server::role_process): it must
    // start before anything else, in particular before any thread.
    haven_server::role_process::run_guard_if_requested();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            // Under systemd the reason a node stops on an error goes to its status line too.
            Command::Serve(args) => serve::run(args).await.inspect_err(|error| service::failed(&format!("{error:#}"))),
            Command::Init(args) => serve::init(args),
            Command::Dev(args) => dev::run(args).await,
            Command::Status(args) => client_cmds::status(args).await,
            Command::Kv(command) => client_cmds::kv(command).await,
            Command::Members(command) => client_cmds::members(command).await,
            Command::Leave(args) => client_cmds::leave(args).await,
            Command::Switchover(args) => client_cmds::switchover(args).await,
            Command::Maintenance(args) => client_cmds::maintenance(args).await,
            Command::Tokens(command) => tokens_cmd::tokens(command).await,
            Command::Config(command) => client_cmds::config(command).await,
            Command::Audit(args) => client_cmds::audit(args).await,
            Command::Teardown(args) => client_cmds::teardown(args).await,
            Command::Restart(args) => client_cmds::restart(args).await,
            Command::Recover(args) => client_cmds::recover(args).await,
            Command::Keygen(args) => keys::keygen(args),
            Command::Fingerprint(args) => keys::fingerprint(args),
            Command::Completions(args) => cli_docs::completions(args, Cli::command()),
            Command::Man(args) => cli_docs::man_pages(args, Cli::command()),
        }
    });
    match result {
        Ok(code) => code,
        Err(error) => {
            // One clear line: the chain of causes, outermost first; with --json, one JSON
            // object on stdout as well. The exit code says what kind of failure it was.
            let message = format!("{error:#}");
            let failure = client_cmds::failure::find(&error)
                .cloned()
                .unwrap_or_else(|| client_cmds::failure::Failure::new(client_cmds::failure::Kind::Error, &message));
            if json_requested() {
                let _ = client_cmds::output::print_json(&failure.to_json(&message));
            }
            eprintln!("error: {message}");
            ExitCode::from(failure.kind.exit_code())
        }
    }
}

/// Whether `--json` is on the command line (before any `--`): a failure then prints as
/// one JSON object on stdout, as the command's answer would have.
fn json_requested() -> bool {
    std::env::args().skip(1).take_while(|arg| arg != "--").any(|arg| arg == "--json")
}
