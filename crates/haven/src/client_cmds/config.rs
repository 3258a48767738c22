//! `haven config show|diff|apply` and `haven config draft set|unset|show|discard`: the
//! cluster-wide HA configuration, edited as a draft and applied as one new version
//! (seed 002's "save as draft, then apply").
//!
//! ```text
//!   draft set/unset ──▶ PUT /v1/config/draft ──▶ the draft and its preview
//!   diff            ──▶ GET /v1/config/draft ──▶ changes, broken rules, restarts
//!   apply           ──▶ GET the draft (its base version) ──▶ POST /v1/config/apply
//!                        ├─ 200 applied: new version, changes, nodes to restart
//!                        ├─ 200 not applied: "no configuration changes to apply" (exit 0)
//!                        ├─ 422 invalid_config: every broken rule, one per line (exit 1)
//!                        └─ 409 stale_draft: the server's message (exit 1)
//! ```

use std::process::ExitCode;

use haven_client::ApplyResult;
use haven_client::ConfigView;
use haven_client::DraftEdit;
use haven_client::DraftView;
use haven_client::Error;
use haven_client::Preview;
use haven_client::RestartNeeded;
use haven_client::RuleViolation;
use haven_core::ha::config::UNSET_SHOWN;
use serde_json::Value;

use super::annotate;
use super::explain;
use super::failure::Failure;
use super::failure::Kind;
use super::finish;
use super::output::print_json;
use super::output::print_line;
use super::output::text_on_one_line;
use super::session::ReviewedDraft;
use super::ClientOpts;

/// `haven config ...`.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum ConfigCommand {
    /// Show the applied HA configuration: version, failure detection, every key.
    Show(ConfigShowArgs),
    /// Edit, show or discard the draft (changes wait in it until `haven config apply`).
    #[command(subcommand)]
    Draft(DraftCommand),
    /// Show what applying the draft would do: the changes, every broken rule, restarts.
    Diff(ConfigShowArgs),
    /// Apply the draft as the next configuration version, on every node at once.
    Apply(ConfigApplyArgs),
}

/// `haven config draft ...`.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum DraftCommand {
    /// Set KEY to VALUE in the draft (VALUE is JSON if it parses, else text: `6`, `true`,
    /// `fast`, `["10.0.0.1"]`). Keys are dotted: `failed_pings`, `nodes.2.priority`.
    Set(DraftSetArgs),
    /// Unset KEYs in the draft: back to their defaults once applied.
    Unset(DraftUnsetArgs),
    /// Show the draft's edits and whether it can be applied.
    Show(ConfigShowArgs),
    /// Throw the draft away.
    Discard(ConfigShowArgs),
}

#[derive(clap::Args, Debug, Clone)]
pub struct ConfigShowArgs {
    #[command(flatten)]
    pub client: ClientOpts,
}

#[derive(clap::Args, Debug, Clone)]
pub struct DraftSetArgs {
    /// A dotted key, e.g. `failed_pings`, `profile`, `nodes.2.ping_targets`.
    pub key: String,
    /// Its new value: JSON if it parses (`6`, `true`, `["10.0.0.1"]`), else the text.
    pub value: String,
    #[command(flatten)]
    pub client: ClientOpts,
}

#[derive(clap::Args, Debug, Clone)]
pub struct DraftUnsetArgs {
    /// Dotted keys to return to their defaults.
    #[arg(required = true, num_args = 1..)]
    pub keys: Vec<String>,
    #[command(flatten)]
    pub client: ClientOpts,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ConfigApplyArgs {
    /// Apply only if the draft is based on this configuration version (default: the base
    /// version of the draft that was reviewed).
    #[arg(long, value_name = "N")]
    pub base_version: Option<u64>,
    /// Apply only the draft with this digest (`haven config diff` prints it; default: the
    /// digest the last `haven config diff` with these endpoints showed). A draft someone
    /// changed since is refused.
    #[arg(long, value_name = "DIGEST")]
    pub digest: Option<String>,
    #[command(flatten)]
    pub client: ClientOpts,
}

/// Runs `haven config ...`.
pub async fn config(command: ConfigCommand) -> anyhow::Result<ExitCode> {
    finish(match command {
        ConfigCommand::Show(args) => show(args).await,
        ConfigCommand::Diff(args) => diff(args).await,
        ConfigCommand::Apply(args) => apply(args).await,
        ConfigCommand::Draft(DraftCommand::Set(args)) => {
            let edit = DraftEdit::default().set_text(&args.key, &args.value);
            edit_draft(&args.client, &edit).await
        }
        ConfigCommand::Draft(DraftCommand::Unset(args)) => {
            let edit = args.keys.iter().fold(DraftEdit::default(), |edit, key| edit.unset(key));
            edit_draft(&args.client, &edit).await
        }
        ConfigCommand::Draft(DraftCommand::Show(args)) => draft_show(args).await,
        ConfigCommand::Draft(DraftCommand::Discard(args)) => discard(args).await,
    })
}

async fn show(args: ConfigShowArgs) -> anyhow::Result<ExitCode> {
    let session = args.client.connect(&[]).await?;
    let client = &session.client;
    let view = client.ha_config().await.map_err(|error| explain("cannot read the HA configuration", error))?;
    if args.client.json {
        print_json(&view)?;
    } else {
        for line in describe_config(&view) {
            print_line(&line)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn edit_draft(opts: &ClientOpts, edit: &DraftEdit) -> anyhow::Result<ExitCode> {
    let session = opts.connect(&[]).await?;
    let client = &session.client;
    let view = client.edit_config_draft(edit).await.map_err(|error| explain("cannot edit the draft", error))?;
    if opts.json {
        print_json(&view)?;
    } else {
        for line in describe_draft(&view) {
            print_line(&line)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn draft_show(args: ConfigShowArgs) -> anyhow::Result<ExitCode> {
    let session = args.client.connect(&[]).await?;
    let client = &session.client;
    let view = client.config_draft().await.map_err(|error| explain("cannot read the draft", error))?;
    if args.client.json {
        print_json(&view)?;
    } else {
        for line in describe_draft(&view) {
            print_line(&line)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn diff(args: ConfigShowArgs) -> anyhow::Result<ExitCode> {
    let session = args.client.connect(&[]).await?;
    let client = &session.client;
    let view = client.config_draft().await.map_err(|error| explain("cannot read the draft", error))?;
    if args.client.json {
        print_json(&view)?;
    } else {
        for line in describe_diff(&view) {
            print_line(&line)?;
        }
    }
    let (Some(draft), Some(preview)) = (&view.draft, &view.preview) else {
        return Ok(ExitCode::SUCCESS);
    };
    // What `haven config apply` applies next with these endpoints: exactly this draft.
    if let Some(digest) = draft.digest.clone().filter(|_| preview.valid) {
        let base_version = draft.base_version;
        session.memory.update(|memory| memory.reviewed_draft = Some(ReviewedDraft { digest, base_version }));
    }
    // `haven config diff && haven config apply` must stop at a draft that cannot apply
    // (issue 14: this exited 0).
    Ok(match (preview.valid, preview.errors.is_empty()) {
        (true, _) => ExitCode::SUCCESS,
        (false, false) => ExitCode::from(Kind::Invalid.exit_code()),
        (false, true) => ExitCode::from(Kind::Conflict.exit_code()),
    })
}

async fn discard(args: ConfigShowArgs) -> anyhow::Result<ExitCode> {
    let session = args.client.connect(&[]).await?;
    let client = &session.client;
    client.discard_config_draft().await.map_err(|error| explain("cannot discard the draft", error))?;
    if args.client.json {
        print_json(&serde_json::json!({ "discarded": true }))?;
    } else {
        print_line("draft discarded (if there was one); the applied configuration is unchanged")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// What `apply` prints when there is nothing to apply (seed 002's wording).
const NOTHING_TO_APPLY: &str = "no configuration changes to apply";

async fn apply(args: ConfigApplyArgs) -> anyhow::Result<ExitCode> {
    let session = args.client.connect(&[]).await?;
    let client = &session.client;
    let view = client.config_draft().await.map_err(|error| explain("cannot read the draft", error))?;
    let Some(draft) = view.draft else {
        let nothing = ApplyResult {
            applied: false,
            version: view.version,
            changes: Vec::new(),
            restart: Vec::new(),
            message: Some(NOTHING_TO_APPLY.into()),
            extra: Default::default(),
        };
        print_apply(&nothing, args.client.json)?;
        return Ok(ExitCode::SUCCESS);
    };
    // The draft that was reviewed, and nothing else: several admins share one draft
    // (issue 14: alice applied bob's edit unseen).
    let reviewed = session.memory.load().reviewed_draft;
    let digest = match (&args.digest, &reviewed) {
        (Some(digest), _) => digest.clone(),
        (None, Some(reviewed)) => reviewed.digest.clone(),
        (None, None) => {
            return Err(Failure::new(
                Kind::Usage,
                format!(
                    "apply applies the draft you reviewed: run `haven config diff` first (it shows the draft and its \
                     digest{}), or give --digest",
                    draft.digest.as_deref().map(|digest| format!(", now {digest}")).unwrap_or_default()
                ),
            )
            .into_error())
        }
    };
    let base_version =
        args.base_version.or(reviewed.map(|reviewed| reviewed.base_version)).or(Some(draft.base_version));
    match client.apply_config_reviewed(base_version, Some(&digest)).await {
        Ok(result) => {
            session.memory.update(|memory| memory.reviewed_draft = None);
            print_apply(&result, args.client.json)?;
            Ok(ExitCode::SUCCESS)
        }
        Err(Error::InvalidDraft { message, errors }) => {
            if !args.client.json {
                for line in describe_broken_rules(&message, &errors) {
                    eprintln!("{line}");
                }
            }
            let failure = Failure::new(Kind::Invalid, format!("cannot apply the draft: {message}"))
                .code(haven_client::CODE_INVALID_CONFIG)
                .with("applied", false)
                .with("errors", serde_json::to_value(&errors).unwrap_or_default());
            Err(failure.into_error())
        }
        Err(error @ Error::OutcomeUnknown { .. }) => Err(annotate(
            explain("cannot tell whether the draft was applied", error),
            &format!(
                "; `haven config show` tells whether the configuration moved past version {}",
                base_version.unwrap_or_default()
            ),
        )),
        Err(error) => Err(explain("cannot apply the draft", error)),
    }
}

fn print_apply(result: &ApplyResult, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(result);
    }
    for line in describe_apply(result) {
        print_line(&line)?;
    }
    Ok(())
}

// ---- Text for people ---------------------------------------------------------------

/// A value as the configuration holds it, on one line: JSON text, `(unset)` for null.
fn show_value(value: &Value) -> String {
    text_on_one_line(&haven_core::ha::config::shown(value))
}

/// Every leaf of a JSON object as `dotted.key = value`, in key order.
fn flatten(prefix: &str, value: &Value, out: &mut Vec<(String, Value)>) {
    match value {
        Value::Object(map) if !map.is_empty() || prefix.is_empty() => {
            for (key, value) in map {
                let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
                flatten(&path, value, out);
            }
        }
        leaf => out.push((prefix.to_string(), leaf.clone())),
    }
}

fn describe_config(view: &ConfigView) -> Vec<String> {
    let mut lines = vec![format!(
        "HA configuration version {}{}",
        view.version,
        if view.version == 0 { " (never applied: the defaults)" } else { "" }
    )];
    if let Some(detection) = &view.detection {
        lines.push(format!("detection: {}", text_on_one_line(detection)));
    }
    if let Some(draft) = &view.draft {
        lines.push(format!(
            "draft: {} change(s) based on version {} (`haven config diff` shows what applying it would do)",
            draft.changes, draft.base_version
        ));
    }
    if let Some(pending) = &view.pending_restart {
        lines.push(format!("pending restart of the answering node: {}", text_on_one_line(pending)));
    }
    lines.push(String::new());
    let mut keys = Vec::new();
    flatten("", &view.config, &mut keys);
    // Unset keys show the value they take (issue 14: "(default)" without the value).
    let effective = serde_json::from_value::<haven_core::ha::config::HaConfig>(view.config.clone())
        .map(|config| config.effective())
        .unwrap_or_default();
    lines.extend(keys.iter().map(|(key, value)| match (value, effective.get(key)) {
        (Value::Null, Some(Value::Null) | None) => format!("{key} = {UNSET_SHOWN}"),
        (Value::Null, Some(effective)) => format!("{key} = {} (default)", show_value(effective)),
        (value, _) => format!("{key} = {}", show_value(value)),
    }));
    lines
}

fn describe_draft(view: &DraftView) -> Vec<String> {
    let Some(draft) = &view.draft else {
        return vec![format!(
            "there is no draft (the configuration is at version {}); make one with `haven config draft set KEY VALUE`",
            view.version
        )];
    };
    let mut lines = vec![format!(
        "draft based on version {} (the configuration is at version {}), {} edit(s):",
        draft.base_version,
        view.version,
        draft.changes.len()
    )];
    for (key, value) in &draft.changes {
        match value {
            Value::Null => lines.push(format!("  unset {key} (back to the default)")),
            value => lines.push(format!("  {key} = {}", show_value(value))),
        }
    }
    lines.push(match &view.preview {
        Some(preview) if preview.valid => format!(
            "valid: applying it makes {} change(s){}; `haven config diff` shows them, `haven config apply` applies",
            preview.changes.len(),
            match preview.restart.len() {
                0 => String::new(),
                n => format!(" and needs {n} node(s) restarted"),
            }
        ),
        Some(preview) if !preview.errors.is_empty() => {
            format!("invalid: it breaks {} rule(s); `haven config diff` lists them", preview.errors.len())
        }
        Some(Preview { message: Some(message), .. }) => format!("cannot be applied: {}", text_on_one_line(message)),
        _ => "(no preview)".into(),
    });
    lines
}

fn describe_diff(view: &DraftView) -> Vec<String> {
    let (Some(draft), Some(preview)) = (&view.draft, &view.preview) else {
        return vec![format!(
            "{NOTHING_TO_APPLY}: there is no draft (the configuration is at version {})",
            view.version
        )];
    };
    let mut lines = Vec::new();
    if !preview.valid {
        if !preview.errors.is_empty() {
            lines.push(format!(
                "the draft (based on version {}) breaks {} rule(s); it cannot be applied until every one is fixed:",
                draft.base_version,
                preview.errors.len()
            ));
            lines.extend(preview.errors.iter().map(|error| format!("  {}", rule_line(error))));
        } else {
            let message = preview.message.as_deref().unwrap_or("it cannot be applied");
            lines.push(format!("the draft (based on version {}): {}", draft.base_version, text_on_one_line(message)));
        }
        return lines;
    }
    lines.push(format!(
        "applying the draft (based on version {}) makes version {} with {} change(s):",
        draft.base_version,
        view.version + 1,
        preview.changes.len()
    ));
    lines.extend(preview.changes.iter().map(|change| format!("  {}", text_on_one_line(&change.to_string()))));
    lines.extend(describe_restarts(&preview.restart));
    if let Some(digest) = &draft.digest {
        lines.push(format!(
            "draft digest {digest}: `haven config apply` applies exactly this draft (or `--digest {digest}`), and \
             refuses it if anyone changes it first"
        ));
    }
    lines
}

fn describe_apply(result: &ApplyResult) -> Vec<String> {
    if !result.applied {
        return vec![result.message.clone().unwrap_or_else(|| NOTHING_TO_APPLY.into())];
    }
    let mut lines =
        vec![format!("applied: HA configuration version {} ({} change(s))", result.version, result.changes.len())];
    lines.extend(result.changes.iter().map(|change| format!("  {}", text_on_one_line(&change.to_string()))));
    lines.extend(describe_restarts(&result.restart));
    if !result.restart.is_empty() {
        lines.push("restart them one at a time with `haven restart --rolling --pending-only`".into());
    }
    lines
}

fn describe_restarts(restart: &[RestartNeeded]) -> Vec<String> {
    if restart.is_empty() {
        return vec!["no node needs a restart".into()];
    }
    let mut lines = vec![format!("{} node(s) must restart for it to take full effect:", restart.len())];
    for need in restart {
        let reasons: Vec<String> = need.reasons.iter().map(|reason| text_on_one_line(reason)).collect();
        lines.push(format!("  node {}: {}", need.node_id, reasons.join("; ")));
    }
    lines
}

fn rule_line(error: &RuleViolation) -> String {
    text_on_one_line(&error.to_string())
}

/// A refused apply: the headline, then every broken rule on its own line.
fn describe_broken_rules(message: &str, errors: &[RuleViolation]) -> Vec<String> {
    if errors.is_empty() {
        return vec![format!("error: cannot apply the draft: {}", text_on_one_line(message))];
    }
    let mut lines =
        vec![format!("error: cannot apply the draft, it breaks {} rule(s) (nothing was changed):", errors.len())];
    lines.extend(errors.iter().map(|error| format!("  {}", rule_line(error))));
    lines.push("fix them with `haven config draft set KEY VALUE` or `haven config draft unset KEY`".into());
    lines
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_configuration_shows_every_key_dotted() {
        let view: ConfigView = serde_json::from_value(json!({
            "version": 2,
            "config": {"failback": false, "failed_pings": 6, "hook_script": null,
                       "nodes": {"2": {"priority": 500, "ping_targets": ["10.0.0.1"], "role": "data"}},
                       "smtp": {"port": 25}},
            "detection": "a ping every 500 ms",
            "draft": {"base_version": 2, "changes": 1},
            "pending_restart": null,
        }))
        .unwrap();
        assert_eq!(
            describe_config(&view),
            [
                "HA configuration version 2",
                "detection: a ping every 500 ms",
                "draft: 1 change(s) based on version 2 (`haven config diff` shows what applying it would do)",
                "",
                "failback = false",
                "failed_pings = 6",
                "hook_script = (unset)",
                "nodes.2.ping_targets = [\"10.0.0.1\"]",
                "nodes.2.priority = 500",
                "nodes.2.role = \"data\"",
                "smtp.port = 25",
            ]
        );
    }

    fn draft_view(preview: Value) -> DraftView {
        serde_json::from_value(json!({
            "version": 3,
            "draft": {"base_version": 3, "changes": {"failed_pings": 6, "hook_script": null}},
            "preview": preview,
        }))
        .unwrap()
    }

    #[test]
    fn a_valid_draft_shows_its_changes_and_restarts() {
        let view = draft_view(json!({"valid": true,
            "changes": [{"key": "failed_pings", "old": null, "new": 6}],
            "restart": [{"node_id": 1, "reasons": ["failure detection timing"]},
                        {"node_id": 2, "reasons": ["failure detection timing"]}]}));
        assert_eq!(
            describe_draft(&view),
            [
                "draft based on version 3 (the configuration is at version 3), 2 edit(s):",
                "  failed_pings = 6",
                "  unset hook_script (back to the default)",
                "valid: applying it makes 1 change(s) and needs 2 node(s) restarted; `haven config diff` shows \
                 them, `haven config apply` applies",
            ]
        );
        assert_eq!(
            describe_diff(&view),
            [
                "applying the draft (based on version 3) makes version 4 with 1 change(s):",
                "  failed_pings: (unset) -> 6",
                "2 node(s) must restart for it to take full effect:",
                "  node 1: failure detection timing",
                "  node 2: failure detection timing",
            ]
        );
    }

    #[test]
    fn an_invalid_draft_lists_every_broken_rule() {
        let view = draft_view(json!({"valid": false, "errors": [
            {"key": "failed_pings", "value": "50", "kind": "out-of-range", "rule": "out of range; allowed 2-20"},
            {"key": "nodes.2.ping_targets", "value": "[\"x\",\"x\"]", "kind": "duplicate", "rule": "x is listed twice"}]}));
        assert_eq!(
            describe_draft(&view).last().unwrap(),
            "invalid: it breaks 2 rule(s); `haven config diff` lists them"
        );
        assert_eq!(
            describe_diff(&view),
            [
                "the draft (based on version 3) breaks 2 rule(s); it cannot be applied until every one is fixed:",
                "  `failed_pings` = 50: out of range; allowed 2-20",
                "  `nodes.2.ping_targets` = [\"x\",\"x\"]: x is listed twice",
            ]
        );
        let errors = view.preview.unwrap().errors;
        let lines = describe_broken_rules("the draft breaks 2 rule(s): ...", &errors);
        assert_eq!(lines.len(), 4, "a headline, one line per rule, the way out: {lines:?}");
        assert!(lines[0].starts_with("error: cannot apply the draft, it breaks 2 rule(s)"));
        assert_eq!(lines[2], "  `nodes.2.ping_targets` = [\"x\",\"x\"]: x is listed twice");
        let stale = draft_view(json!({"valid": false, "message": "made from version 1, now 2"}));
        assert_eq!(describe_diff(&stale), ["the draft (based on version 3): made from version 1, now 2"]);
    }

    #[test]
    fn no_draft_and_nothing_to_apply_are_plain_messages() {
        let none: DraftView =
            serde_json::from_value(json!({"version": 1, "draft": null, "message": "there is no draft"})).unwrap();
        assert!(describe_draft(&none)[0].starts_with("there is no draft (the configuration is at version 1)"));
        assert!(describe_diff(&none)[0].starts_with("no configuration changes to apply"));
        let nothing: ApplyResult = serde_json::from_value(
            json!({"applied": false, "version": 1, "message": "no configuration changes to apply"}),
        )
        .unwrap();
        assert_eq!(describe_apply(&nothing), ["no configuration changes to apply"]);
        let applied: ApplyResult = serde_json::from_value(json!({"applied": true, "version": 2,
            "changes": [{"key": "failback", "old": false, "new": true}], "restart": []}))
        .unwrap();
        assert_eq!(
            describe_apply(&applied),
            [
                "applied: HA configuration version 2 (1 change(s))",
                "  failback: false -> true",
                "no node needs a restart"
            ]
        );
    }
}
