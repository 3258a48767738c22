//! `haven audit`: who did what, when, on which node (the replicated audit log).

use std::process::ExitCode;

use haven_client::AuditRecord;

use super::explain;
use super::finish;
use super::output::format_rfc3339;
use super::output::print_json;
use super::output::print_line;
use super::output::table;
use super::output::text_on_one_line;
use super::ClientOpts;

/// `haven audit`.
#[derive(clap::Args, Debug, Clone)]
pub struct AuditArgs {
    /// Show the records after this sequence number (default: all the cluster keeps).
    #[arg(long, value_name = "SEQ", default_value_t = 0)]
    pub since: u64,
    #[command(flatten)]
    pub client: ClientOpts,
}

/// Runs `haven audit`.
pub async fn audit(args: AuditArgs) -> anyhow::Result<ExitCode> {
    finish(audit_inner(args).await)
}

async fn audit_inner(args: AuditArgs) -> anyhow::Result<ExitCode> {
    let session = args.client.connect(&[]).await?;
    let client = &session.client;
    let page = client.audit_all(args.since).await.map_err(|error| explain("cannot read the audit log", error))?;
    if args.client.json {
        print_json(&page)?;
    } else if page.records.is_empty() {
        print_line(&format!("no audit records after seq {} (the newest is seq {})", args.since, page.last_seq))?;
    } else {
        for line in audit_table(&page.records) {
            print_line(&line)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One row per record; changes as `what: old -> new`, separated by `; `.
fn audit_table(records: &[AuditRecord]) -> Vec<String> {
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|record| {
            let changes: Vec<String> =
                record.changes.iter().map(|change| text_on_one_line(&change.to_string())).collect();
            vec![
                record.seq.to_string(),
                format_rfc3339(record.at_ms),
                text_on_one_line(&record.actor),
                if record.node == 0 { "-".into() } else { record.node.to_string() },
                text_on_one_line(&record.action),
                text_on_one_line(&record.summary),
                if changes.is_empty() { "-".into() } else { changes.join("; ") },
            ]
        })
        .collect();
    table(&["SEQ", "TIME (UTC)", "ACTOR", "NODE", "ACTION", "SUMMARY", "CHANGES"], &rows)
}

#[cfg(test)]
mod tests {
    use haven_client::AuditChange;

    use super::*;

    #[test]
    fn the_table_shows_time_actor_node_action_and_changes() {
        let records = [
            AuditRecord {
                seq: 7,
                at_ms: 1_700_000_000_000,
                actor: "alice".into(),
                node: 2,
                action: "config.apply".into(),
                summary: "HA configuration version 1 (2 change(s))".into(),
                changes: vec![
                    AuditChange { what: "failed_pings".into(), old: None, new: Some("6".into()) },
                    AuditChange { what: "failback".into(), old: Some("false".into()), new: Some("true".into()) },
                ],
            },
            AuditRecord {
                seq: 8,
                at_ms: 1_700_000_001_000,
                actor: "haven".into(),
                node: 0,
                action: "failover".into(),
                summary: "node 3 took over\nafter node 1 was lost".into(),
                changes: Vec::new(),
            },
        ];
        assert_eq!(
            audit_table(&records),
            [
                "SEQ  TIME (UTC)            ACTOR  NODE  ACTION        SUMMARY                                    CHANGES",
                "7    2023-11-14T22:13:20Z  alice  2     config.apply  HA configuration version 1 (2 change(s))   \
                 failed_pings: (none) -> 6; failback: false -> true",
                "8    2023-11-14T22:13:21Z  haven  -     failover      \"node 3 took over\\nafter node 1 was lost\"  -",
            ]
        );
    }
}
