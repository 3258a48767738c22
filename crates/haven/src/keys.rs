//! `haven keygen` and `haven fingerprint`: a node's TLS identity.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use haven_tls::NodeIdentityKey;

#[derive(clap::Args, Debug)]
pub struct KeygenArgs {
    /// Directory for node.key (mode 0600) and node.crt: the node's data dir.
    #[arg(long)]
    dir: PathBuf,
    /// IP addresses the certificate names besides 127.0.0.1 and localhost (repeatable).
    #[arg(long = "addr")]
    addresses: Vec<IpAddr>,
}

#[derive(clap::Args, Debug)]
pub struct FingerprintArgs {
    /// Directory holding node.crt.
    #[arg(long)]
    dir: PathBuf,
    /// Print curl's --pinnedpubkey form (sha256//BASE64) instead.
    #[arg(long)]
    curl: bool,
}

pub fn keygen(args: KeygenArgs) -> anyhow::Result<ExitCode> {
    // The dir is the node's data dir: created private, like `haven serve` would.
    haven_server::files::restrict_umask();
    haven_server::files::secure_data_dir(&args.dir)?;
    if NodeIdentityKey::load(&args.dir)?.is_some() {
        anyhow::bail!(
            "{} already holds a node key; a node's key is its identity in the cluster, so it is never replaced. Use \
             `haven fingerprint --dir {}` to show it",
            args.dir.display(),
            args.dir.display()
        );
    }
    let identity = NodeIdentityKey::generate(&args.addresses).context("cannot generate a key")?;
    identity.save(&args.dir)?;
    println!("{}", identity.fingerprint());
    Ok(ExitCode::SUCCESS)
}

pub fn fingerprint(args: FingerprintArgs) -> anyhow::Result<ExitCode> {
    let identity = NodeIdentityKey::load(&args.dir)?.ok_or_else(|| {
        anyhow::anyhow!(
            "{} holds no node key; create one with `haven keygen --dir {}`",
            args.dir.display(),
            args.dir.display()
        )
    })?;
    if args.curl {
        println!("{}", identity.curl_pin()?);
    } else {
        println!("{}", identity.fingerprint());
    }
    Ok(ExitCode::SUCCESS)
}
