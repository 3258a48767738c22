//! `haven completions SHELL` and `haven man DIR`: shell completions and man pages generated
//! from the clap definitions, so they never drift from the real flags. Hidden from
//! `--help`: they are build steps (`deploy/build-deb` runs them and the Debian package
//! installs the output), not something an operator runs on a node.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

#[derive(clap::Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to print a completion script for.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

#[derive(clap::Args, Debug)]
pub struct ManArgs {
    /// Directory for haven.1 and one page per subcommand (haven-kv-put.1, ...); created if
    /// missing.
    dir: PathBuf,
}

/// Prints the completion script for `args.shell` to stdout.
pub fn completions(args: CompletionsArgs, mut command: clap::Command) -> anyhow::Result<ExitCode> {
    let name = command.get_name().to_string();
    // Generated into memory first: clap_complete panics on a failed write (a closed pipe),
    // this way a write error is an error line.
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, name, &mut script);
    std::io::stdout().write_all(&script).context("cannot write the completion script")?;
    Ok(ExitCode::SUCCESS)
}

/// Writes the man pages into `args.dir` and prints how many.
pub fn man_pages(args: ManArgs, command: clap::Command) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.dir).with_context(|| format!("cannot create {}", args.dir.display()))?;
    let pages = page_count(&command.clone().disable_help_subcommand(true));
    clap_mangen::generate_to(command, &args.dir)
        .with_context(|| format!("cannot write man pages into {}", args.dir.display()))?;
    println!("{pages} man pages in {}", args.dir.display());
    Ok(ExitCode::SUCCESS)
}

/// One page for the command and one for each visible subcommand, as `clap_mangen` writes.
fn page_count(command: &clap::Command) -> usize {
    1 + command.get_subcommands().filter(|sub| !sub.is_hide_set()).map(page_count).sum::<usize>()
}
