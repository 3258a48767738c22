//! `haven kv put|get|del|list|watch`.

use std::path::PathBuf;
use std::process::ExitCode;

use futures::StreamExt;
use haven_client::Client;
use haven_client::Consistency;
use haven_client::Error;
use haven_client::ListPage;
use haven_client::WatchEvent;
use haven_client::WriteOptions;

use super::annotate;
use super::explain;
use super::failure::Failure;
use super::failure::Kind;
use super::finish;
use super::output::print_bytes;
use super::output::print_json;
use super::output::print_line;
use super::output::value_on_one_line;
use super::ClientOpts;
use super::KvCommand;

#[derive(clap::Args, Debug, Clone)]
pub struct PutArgs {
    /// Key to write, e.g. `hosts/web-1/ip`.
    pub key: String,
    /// Value to store, as text; `-` reads it from stdin (any bytes). Or use --file.
    #[arg(required_unless_present = "file", conflicts_with = "file")]
    pub value: Option<String>,
    /// Read the value from FILE (any bytes, up to the server's limit); `-` is stdin.
    #[arg(long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Write only if the key's mod_revision is N (0: only if the key does not exist).
    #[arg(long, value_name = "N")]
    pub prev_revision: Option<u64>,
    /// Idempotency key: retrying with the same id after an unknown outcome applies the
    /// write at most once (default: a fresh random id).
    #[arg(long, value_name = "ID")]
    pub request_id: Option<String>,
    #[command(flatten)]
    pub client: ClientOpts,
}

#[derive(clap::Args, Debug, Clone)]
pub struct GetArgs {
    /// Key to read.
    pub key: String,
    /// Read from whichever node answers, without asking the leader (may be behind).
    #[arg(long)]
    pub stale: bool,
    /// Print the value's bytes exactly, without a newline.
    #[arg(long, conflicts_with = "json")]
    pub raw: bool,
    #[command(flatten)]
    pub client: ClientOpts,
}

#[derive(clap::Args, Debug, Clone)]
pub struct DelArgs {
    /// Key to delete.
    pub key: String,
    /// Delete only if the key's mod_revision is N.
    #[arg(long, value_name = "N")]
    pub prev_revision: Option<u64>,
    /// Idempotency key: retrying with the same id after an unknown outcome applies the
    /// delete at most once (default: a fresh random id).
    #[arg(long, value_name = "ID")]
    pub request_id: Option<String>,
    #[command(flatten)]
    pub client: ClientOpts,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ListArgs {
    /// Key prefix; empty lists every key.
    #[arg(default_value = "")]
    pub prefix: String,
    /// Print at most N keys.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,
    /// Read from whichever node answers, without asking the leader (may be behind).
    #[arg(long)]
    pub stale: bool,
    #[command(flatten)]
    pub client: ClientOpts,
}

#[derive(clap::Args, Debug, Clone)]
pub struct WatchArgs {
    /// Key prefix; empty watches every key.
    #[arg(default_value = "")]
    pub prefix: String,
    /// Print the changes after revision R (default: from now).
    #[arg(long, value_name = "R")]
    pub after_revision: Option<u64>,
    #[command(flatten)]
    pub client: ClientOpts,
}

/// Runs `haven kv ...`.
pub async fn kv(command: KvCommand) -> anyhow::Result<ExitCode> {
    finish(match command {
        KvCommand::Put(args) => put(args).await,
        KvCommand::Get(args) => get(args).await,
        KvCommand::Del(args) => del(args).await,
        KvCommand::List(args) => list(args).await,
        KvCommand::Watch(args) => watch(args).await,
    })
}

/// Reads a value from a file or stdin (`-`), binary-safe, refusing more than the server
/// accepts before sending anything.
fn read_value(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    use std::io::Read as _;
    let limit = haven_core::limits::VALUE_BYTES_MAX as u64;
    let mut bytes = Vec::new();
    let read = if path.as_os_str() == "-" {
        std::io::stdin().lock().take(limit + 1).read_to_end(&mut bytes)
    } else {
        std::fs::File::open(path).and_then(|file| file.take(limit + 1).read_to_end(&mut bytes))
    };
    let source = if path.as_os_str() == "-" { "stdin".to_string() } else { path.display().to_string() };
    read.map_err(|error| {
        Failure::new(Kind::Invalid, format!("cannot read the value from {source}: {error}")).into_error()
    })?;
    if bytes.len() as u64 > limit {
        return Err(Failure::new(
            Kind::Invalid,
            format!("the value from {source} is larger than {limit} bytes, the server's limit for one value"),
        )
        .code("value_too_large")
        .into_error());
    }
    Ok(bytes)
}

/// A write that may or may not have applied: say exactly how to retry it.
fn retry_hint(command: &str, error: &Error) -> String {
    match error {
        Error::OutcomeUnknown { request_id: Some(id), .. } => {
            format!("; retry it safely with `haven kv {command} ... --request-id {id}`")
        }
        _ => String::new(),
    }
}

async fn put(args: PutArgs) -> anyhow::Result<ExitCode> {
    let value = match (&args.file, args.value.as_deref()) {
        (Some(path), _) => read_value(path)?,
        (None, Some("-")) => read_value(std::path::Path::new("-"))?,
        (None, Some(text)) => text.as_bytes().to_vec(),
        (None, None) => return Err(Failure::new(Kind::Usage, "give a VALUE, `-` for stdin, or --file").into_error()),
    };
    let session = args.client.connect(&[]).await?;
    let options = WriteOptions { prev_revision: args.prev_revision, request_id: args.request_id.clone() };
    let result = session.client.put(&args.key, &value, options).await.map_err(|error| {
        let hint = retry_hint("put", &error);
        annotate(explain(&format!("cannot write key {:?}", args.key), error), &hint)
    })?;
    if args.client.json {
        print_json(&result)?;
    } else {
        print_line(&format!("OK revision {}", result.revision))?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn get(args: GetArgs) -> anyhow::Result<ExitCode> {
    let session = args.client.connect(&[]).await?;
    let consistency = if args.stale { Consistency::Stale } else { Consistency::Linearizable };
    let action = || format!("cannot read key {:?}", args.key);
    let entry = session.client.get(&args.key, consistency).await.map_err(|error| explain(&action(), error))?;
    let Some(entry) = entry else {
        // Its own exit code: a missing key is an answer, not a broken cluster.
        return Err(Failure::new(Kind::NotFound, format!("key {:?} not found", args.key))
            .with("key", args.key.clone())
            .into_error());
    };
    if args.client.json {
        print_json(&entry)?;
    } else if args.raw {
        print_bytes(&entry.value)?;
    } else if let Some(text) = entry.value_str() {
        print_line(text)?;
    } else {
        // Binary bytes would garble a terminal; say how to get them.
        print_line(&value_on_one_line(&entry.value))?;
        eprintln!("note: the value is not UTF-8 and is shown as base64; use --raw for its bytes");
    }
    Ok(ExitCode::SUCCESS)
}

async fn del(args: DelArgs) -> anyhow::Result<ExitCode> {
    let session = args.client.connect(&[]).await?;
    let options = WriteOptions { prev_revision: args.prev_revision, request_id: args.request_id.clone() };
    let result = session.client.delete(&args.key, options).await.map_err(|error| {
        let hint = retry_hint("del", &error);
        annotate(explain(&format!("cannot delete key {:?}", args.key), error), &hint)
    })?;
    if args.client.json {
        print_json(&result)?;
    } else if result.deleted {
        print_line(&format!("OK revision {}", result.revision))?;
    } else {
        print_line(&format!("OK revision {} (the key did not exist)", result.revision))?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn list(args: ListArgs) -> anyhow::Result<ExitCode> {
    let session = args.client.connect(&[]).await?;
    let client = &session.client;
    let consistency = if args.stale { Consistency::Stale } else { Consistency::Linearizable };
    let mut remaining = args.limit.unwrap_or(u64::MAX);
    let mut after: Option<String> = None;
    // For --json: every page in one document, at the first page's revision.
    let mut collected = ListPage { items: Vec::new(), revision: 0, more: false };
    let mut first_page = true;
    for _ in 0..haven_client::LIST_ALL_PAGES_MAX {
        let page_size = usize::try_from(remaining).unwrap_or(usize::MAX).min(haven_core::limits::LIST_PAGE_DEFAULT);
        let page = client
            .list(&args.prefix, after.as_deref(), Some(page_size), consistency)
            .await
            .map_err(|error| explain(&format!("cannot list keys under {:?}", args.prefix), error))?;
        if first_page {
            collected.revision = page.revision;
            first_page = false;
        }
        let mut items = page.items;
        // A server that sends more than asked for must not make us print past --limit.
        let server_had_more = items.len() as u64 > remaining;
        items.truncate(usize::try_from(remaining).unwrap_or(usize::MAX));
        let count = items.len() as u64;
        remaining = remaining.saturating_sub(count);
        let more = (page.more || server_had_more) && count > 0;
        after = items.last().map(|entry| entry.key.clone());
        if args.client.json {
            collected.items.extend(items);
        } else {
            for entry in &items {
                print_line(&format!("{}\t{}", entry.key, value_on_one_line(&entry.value)))?;
            }
        }
        if !more {
            break;
        }
        if remaining == 0 {
            collected.more = true;
            if !args.client.json {
                eprintln!("note: more keys follow; raise --limit to see them");
            }
            break;
        }
    }
    if args.client.json {
        print_json(&collected)?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn watch(args: WatchArgs) -> anyhow::Result<ExitCode> {
    let client: Client = args.client.connect(&[]).await?.client;
    let action = || format!("cannot watch keys under {:?}", args.prefix);
    let mut stream =
        client.watch(&args.prefix, args.after_revision).await.map_err(|error| explain(&action(), error))?;
    // The client resumes broken connections itself; an error here means it could not.
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let event = tokio::select! {
            _ = &mut ctrl_c => return Ok(ExitCode::SUCCESS),
            event = stream.next() => event,
        };
        match event {
            None => anyhow::bail!("{}: the stream ended", action()),
            Some(Err(error)) => return Err(explain(&action(), error)),
            Some(Ok(WatchEvent::Progress { .. })) => {}
            Some(Ok(event)) if args.client.json => print_json(&event)?,
            Some(Ok(event)) => print_line(&describe_event(&event))?,
        }
    }
}

/// One line per change: `[11] put hosts/a = 10.0.0.5`, `[12] delete hosts/a`.
fn describe_event(event: &WatchEvent) -> String {
    match event {
        WatchEvent::Put { key, value, revision, .. } => {
            format!("[{revision}] put {key} = {}", value_on_one_line(value))
        }
        WatchEvent::Delete { key, revision } => format!("[{revision}] delete {key}"),
        WatchEvent::Progress { revision } => format!("[{revision}] progress"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_one_line_each() {
        let put =
            WatchEvent::Put { key: "a".into(), value: b"x\ny".to_vec(), revision: 3, create_revision: 3, version: 1 };
        assert_eq!(describe_event(&put), "[3] put a = \"x\\ny\"");
        assert_eq!(describe_event(&WatchEvent::Delete { key: "a".into(), revision: 4 }), "[4] delete a");
    }
}
