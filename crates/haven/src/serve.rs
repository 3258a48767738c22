//! `haven serve`: run one node from a config file and/or flags.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use haven_core::config::NodeConfigFile;
use haven_server::RunOptions;

/// Which node: its config file, and the flags that name it.
#[derive(clap::Args, Debug)]
pub struct NodeArgs {
    /// The node's TOML config file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// This node's id (1..=1000000), unique in the cluster.
    #[arg(long)]
    node_id: Option<u64>,
    /// Where the node keeps its log, snapshots, pid and address files.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

/// Every key of the config file is also a flag; flags win.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// IP:PORT for the HTTP API.
    #[arg(long)]
    client_addr: Option<String>,
    /// IP:PORT for node-to-node traffic.
    #[arg(long)]
    peer_addr: Option<String>,
    /// This node is a new cluster's first voter: it starts the cluster on a data dir prepared
    /// by `haven init`, and refuses to start on an empty one (it lost its data; join instead).
    /// Ignored on an initialised data dir.
    #[arg(long)]
    bootstrap: bool,
    /// Client URL of any member of the cluster to join (ignored on an initialised data dir).
    #[arg(long)]
    join: Option<String>,
    /// Join as a learner (read replica) and stay one.
    #[arg(long)]
    learner: bool,
    /// Ping (heartbeat) interval in milliseconds.
    #[arg(long)]
    ping_interval_ms: Option<u64>,
    /// Missed pings before followers elect a new leader (2-20).
    #[arg(long)]
    failed_pings: Option<u64>,
    /// Log entries between snapshots.
    #[arg(long)]
    snapshot_threshold: Option<u64>,
    /// Revisions of change history kept for watchers.
    #[arg(long)]
    history_revisions: Option<u64>,
    /// Fault tests only (docs/nemesis.md): crash-sim | crash-sim-ack-before-fsync | stale-reads.
    /// Refused unless HAVEN_UNSAFE_TEST_MODE=1.
    #[arg(long, hide = true)]
    unsafe_test_mode: Option<String>,
    /// Clock-skew tests only: this node's wall clock reads this many ms ahead (negative:
    /// behind). Refused unless HAVEN_UNSAFE_TEST_MODE=1.
    #[arg(long, hide = true, allow_hyphen_values = true)]
    unsafe_test_clock_offset_ms: Option<i64>,
    /// Fingerprint of the member named by --join (`haven fingerprint --dir` on it).
    #[arg(long)]
    join_fingerprint: Option<String>,
    /// Admin or one-time join token for --join (prefer --join-token-file: flags are visible in `ps`).
    #[arg(long)]
    join_token: Option<String>,
    /// File holding the join token.
    #[arg(long)]
    join_token_file: Option<PathBuf>,
    /// INSECURE: accept whatever key the --join member presents instead of checking --join-fingerprint.
    #[arg(long)]
    join_trust_first_use: bool,
    /// INSECURE: plaintext client and peer ports, loopback only, for development.
    #[arg(long)]
    insecure_dev: bool,
    /// Certificate (PEM) for the client port instead of the node's own.
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// PKCS#8 private key (PEM) for --tls-cert.
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// The only directory secret files (smtp.password_file) may be read from [default: /etc/haven].
    #[arg(long)]
    secrets_dir: Option<PathBuf>,
}

impl ServeArgs {
    fn overrides(&self) -> NodeConfigFile {
        NodeConfigFile {
            node_id: self.node.node_id,
            data_dir: self.node.data_dir.clone(),
            client_addr: self.client_addr.clone(),
            peer_addr: self.peer_addr.clone(),
            bootstrap: self.bootstrap.then_some(true),
            join: self.join.clone(),
            learner: self.learner.then_some(true),
            ping_interval_ms: self.ping_interval_ms,
            failed_pings: self.failed_pings,
            snapshot_threshold: self.snapshot_threshold,
            history_revisions: self.history_revisions,
            join_fingerprint: self.join_fingerprint.clone(),
            join_token: self.join_token.clone(),
            join_token_file: self.join_token_file.clone(),
            join_trust_first_use: self.join_trust_first_use.then_some(true),
            insecure_dev: self.insecure_dev.then_some(true),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            secrets_dir: self.secrets_dir.clone(),
        }
    }
}

/// The config file (if any) with the flags' values on top, validated.
fn load_config(
    path: Option<&std::path::Path>,
    overrides: NodeConfigFile,
) -> anyhow::Result<haven_core::config::NodeConfig> {
    let file = match path {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            NodeConfigFile::parse(&text).with_context(|| format!("in {}", path.display()))?
        }
        None => NodeConfigFile::default(),
    };
    Ok(file.merge(overrides).validate()?)
}

/// `haven init`: the one-time step that makes a node the first member of a new cluster
/// (node_id and data_dir from the config file or the flags).
#[derive(clap::Args, Debug)]
pub struct InitArgs {
    #[command(flatten)]
    node: NodeArgs,
}

/// Prepares the (stopped) node's data dir to start a new cluster at its next `haven serve`.
pub fn init(args: InitArgs) -> anyhow::Result<ExitCode> {
    // The data dir and the record it gets are the node's user's alone, as `serve` makes them.
    haven_server::files::restrict_umask();
    let overrides =
        NodeConfigFile { node_id: args.node.node_id, data_dir: args.node.data_dir.clone(), ..Default::default() };
    let config = load_config(args.node.config.as_deref(), overrides)?;
    if config.join.is_some() {
        anyhow::bail!(
            "join is set: this node enters an existing cluster; `haven init` is only for a new cluster's first node"
        );
    }
    haven_server::bootstrap::prepare_new_cluster(config.node_id, &config.data_dir)?;
    println!(
        "node {} in {} will start a new cluster at its next start (haven serve); its first admin token will be written \
         to {}",
        config.node_id,
        config.data_dir.display(),
        config.data_dir.join(haven_server::auth::ADMIN_TOKEN_FILE).display()
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    // Everything the node creates (database, snapshots, keys, pid and address files) is its
    // user's alone.
    haven_server::files::restrict_umask();
    let mut config = load_config(args.node.config.as_deref(), args.overrides())?;
    let unsafe_confirmed = std::env::var(haven_server::run::UNSAFE_TEST_MODE_ENV).is_ok_and(|value| value == "1");
    let (sync, test_hooks) = haven_server::run::unsafe_test_mode(args.unsafe_test_mode.as_deref(), unsafe_confirmed)?;
    let test_hooks =
        haven_server::run::unsafe_test_clock_offset(args.unsafe_test_clock_offset_ms, unsafe_confirmed, test_hooks)?;
    if config.data_dir.is_relative() {
        config.data_dir = std::env::current_dir()?.join(&config.data_dir);
    }
    init_logging();
    let client_listener = tokio::net::TcpListener::bind(config.client_addr)
        .await
        .with_context(|| format!("cannot listen on client_addr {}", config.client_addr))?;
    let peer_listener = tokio::net::TcpListener::bind(config.peer_addr)
        .await
        .with_context(|| format!("cannot listen on peer_addr {}", config.peer_addr))?;
    let bound = (client_listener.local_addr()?, peer_listener.local_addr()?);
    let (serving, serving_told) = tokio::sync::oneshot::channel();
    let ready_status = format!("serving: node {}, clients on {}, peers on {}", config.node_id, bound.0, bound.1);
    tokio::spawn(async move {
        if serving_told.await.is_ok() {
            crate::service::ready(&ready_status);
        }
    });
    let options = RunOptions { config, client_listener, peer_listener, sync, test_hooks, serving: Some(serving) };
    let shutdown = async {
        stop_signal().await;
        crate::service::stopping();
    };
    match haven_server::run(options, shutdown).await {
        Ok(haven_server::RunOutcome::Stopped) => Ok(ExitCode::SUCCESS),
        Ok(haven_server::RunOutcome::Restart) => {
            crate::service::reloading();
            restart_process(bound)
        }
        // Removed or recovered away: a distinct status, so a supervisor can be told not to
        // restart it (systemd: RestartPreventExitStatus=78).
        Err(error) => match error.downcast_ref::<haven_server::Expelled>() {
            Some(expelled) => {
                eprintln!("error: {expelled}");
                Ok(ExitCode::from(haven_server::EXIT_EXPELLED))
            }
            None => Err(error),
        },
    }
}

/// Replaces this process with a fresh start of the same binary and arguments (same pid,
/// so supervisors and pid files stay right), on the addresses it had bound: a port given
/// as 0 must not become a new port, the membership records the old one. Returns only if
/// the exec failed.
fn restart_process(bound: (std::net::SocketAddr, std::net::SocketAddr)) -> anyhow::Result<ExitCode> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().context("cannot find this program to restart it")?;
    let args = restart_args(std::env::args_os().skip(1).collect(), bound);
    tracing::info!(exe = %exe.display(), "restarting");
    let error = std::process::Command::new(&exe).args(&args).exec();
    Err(anyhow::anyhow!("cannot restart {}: {error}", exe.display()))
}

/// The arguments without any address flags, then the bound addresses.
fn restart_args(
    args: Vec<std::ffi::OsString>,
    (client, peer): (std::net::SocketAddr, std::net::SocketAddr),
) -> Vec<std::ffi::OsString> {
    const ADDRESS_FLAGS: [&str; 2] = ["--client-addr", "--peer-addr"];
    let mut kept = Vec::new();
    let mut skip_value = false;
    for arg in args {
        if std::mem::take(&mut skip_value) {
            continue;
        }
        let text = arg.to_string_lossy();
        if ADDRESS_FLAGS.iter().any(|flag| text == *flag) {
            skip_value = true;
            continue;
        }
        if ADDRESS_FLAGS.iter().any(|flag| text.starts_with(&format!("{flag}="))) {
            continue;
        }
        kept.push(arg);
    }
    kept.push(format!("--client-addr={client}").into());
    kept.push(format!("--peer-addr={peer}").into());
    kept
}

/// Resolves on SIGTERM or SIGINT.
async fn stop_signal() {
    use tokio::signal::unix::signal;
    use tokio::signal::unix::SignalKind;
    let (Ok(mut terminate), Ok(mut interrupt)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        // Without signal handlers the node can only be killed; keep serving.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
}

/// Logs to stderr; `HAVEN_LOG` takes a tracing filter (default `info`, openraft quieter,
/// and without openraft's warning for every failed heartbeat or replication retry, which
/// haven-net's rate-limited "call to a member failed" line replaces).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HAVEN_LOG").unwrap_or_else(|_| {
        let quiet: Vec<String> = haven_net::raft_network::OPENRAFT_FAILED_CALL_LOG_TARGETS
            .iter()
            .map(|target| format!(",{target}=error"))
            .collect();
        tracing_subscriber::EnvFilter::new(format!("info,openraft=warn{}", quiet.concat()))
    });
    use std::io::IsTerminal;
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    // The journal stamps each line itself.
    let _ = if crate::service::stderr_is_journal() { logs.without_time().try_init() } else { logs.try_init() };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restart_keeps_the_bound_addresses() {
        let args: Vec<std::ffi::OsString> =
            ["serve", "--client-addr=127.0.0.1:0", "--node-id=2", "--peer-addr", "127.0.0.1:0", "--bootstrap"]
                .into_iter()
                .map(Into::into)
                .collect();
        let bound = ("127.0.0.1:7001".parse().unwrap(), "127.0.0.1:7101".parse().unwrap());
        let args: Vec<String> = restart_args(args, bound).into_iter().map(|a| a.into_string().unwrap()).collect();
        assert_eq!(
            args,
            ["serve", "--node-id=2", "--bootstrap", "--client-addr=127.0.0.1:7001", "--peer-addr=127.0.0.1:7101"]
        );
    }
}
