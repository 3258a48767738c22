//! proptest strategies for the replicated values: every command, request, result and the
//! state reached by applying them, with the parts of the state exercised (keys, revisions
//! and history, remembered request ids, tokens, maintenance, the HA configuration with
//! every key set to valid values and every detection profile, drafts and reviewed applies,
//! teardowns, removed members, the audit log, and the cluster id and recovery lineage the
//! offline `move_to_new_cluster` writes).
//!
//! Shared by the encoding tests of every crate that stores or sends these values (the
//! store's snapshot and log round trips, the peer frames), so a new command or state part
//! is generated in one place. Only for tests: behind the `strategies` feature.
//!
//! States are built through `KvState::apply`, as a node builds them, so each one is a
//! state a cluster can really hold.

use std::collections::BTreeMap;

use proptest::collection::btree_map;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::RngAlgorithm;
use proptest::test_runner::TestRng;
use proptest::test_runner::TestRunner;

use crate::admin::AuditChange;
use crate::admin::AuditEntry;
use crate::admin::OldMember;
use crate::admin::Recovery;
use crate::auth::Access;
use crate::auth::Auth;
use crate::auth::Role;
use crate::config::FAILED_PINGS_MAX;
use crate::config::FAILED_PINGS_MIN;
use crate::config::PING_INTERVAL_MS_MAX;
use crate::config::PING_INTERVAL_MS_MIN;
use crate::ha::config::*;
use crate::ha::detection::Profile;
use crate::ha::NodeRole;
use crate::kv::Command;
use crate::kv::CommandResult;
use crate::kv::KvState;
use crate::kv::Request;

/// Text of any characters (control characters, NUL and non-ASCII included), short.
pub fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![".{0,12}", "[a-z/]{1,8}", Just(String::new())]
}

/// A key: small alphabet, so commands meet the same keys.
pub fn key() -> impl Strategy<Value = String> {
    "[a-c]{1,2}(/[a-c]{1,2})?"
}

pub fn value() -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..24)
}

/// A token id: 16 lowercase hex digits (valid, so creations apply).
pub fn token_id() -> impl Strategy<Value = String> {
    "[0-9a-f]{16}"
}

pub fn role() -> impl Strategy<Value = Role> {
    prop::sample::select(Role::ALL.to_vec())
}

pub fn access() -> impl Strategy<Value = Access> {
    prop::sample::select(vec![
        Access::Public,
        Access::Read,
        Access::ReadMembers,
        Access::Write,
        Access::Join,
        Access::Admin,
    ])
}

pub fn audit_entry() -> impl Strategy<Value = AuditEntry> {
    (any_text(), any_text(), vec((any_text(), option::of(any_text()), option::of(any_text())), 0..3)).prop_map(
        |(action, summary, changes)| {
            changes.into_iter().fold(AuditEntry::new(action, summary), |entry, (what, old, new)| {
                entry.with_change(AuditChange::new(what, old, new))
            })
        },
    )
}

/// Every command, with arbitrary fields (most of them break a rule and are refused when
/// applied, which is fine for encoding; [`state`] builds applied states).
pub fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        (key(), value(), option::of(0u64..10)).prop_map(|(key, value, prev_revision)| Command::Put {
            key,
            value,
            prev_revision
        }),
        (key(), option::of(0u64..10)).prop_map(|(key, prev_revision)| Command::Delete { key, prev_revision }),
        any_text().prop_map(|cluster_id| Command::InitCluster { cluster_id }),
        (token_id(), any_text(), role(), "[0-9a-f]{64}", option::of(any::<u64>())).prop_map(
            |(id, name, role, sha256_hex, ttl_ms)| Command::CreateToken { id, name, role, sha256_hex, ttl_ms }
        ),
        token_id().prop_map(|id| Command::RevokeToken { id }),
        (token_id(), any::<u64>(), any_text()).prop_map(|(id, node_id, incarnation)| Command::ConsumeJoinToken {
            id,
            node_id,
            incarnation
        }),
        Just(Command::Authorize),
        any::<bool>().prop_map(|on| Command::SetMaintenance { on }),
        vec((any_text(), option::of(any_text())), 0..4).prop_map(|edits| Command::EditHaDraft { edits }),
        Just(Command::DiscardHaDraft),
        any::<u64>().prop_map(|base_version| Command::ApplyHaDraft { base_version }),
        (any::<u64>(), vec((any::<u64>(), any_text()), 0..3))
            .prop_map(|(keep, detached)| Command::Teardown { keep, detached }),
        audit_entry().prop_map(|entry| Command::RecordAudit { entry }),
        (token_id(), any::<u64>()).prop_map(|(id, node_id)| Command::SpendJoinToken { id, node_id }),
        (any::<u64>(), any_text())
            .prop_map(|(base_version, digest)| Command::ApplyReviewedDraft { base_version, digest }),
        (any::<u64>(), any_text(), any_text()).prop_map(|(node_id, incarnation, fingerprint)| {
            Command::RecordRemoval { node_id, incarnation, fingerprint }
        }),
    ]
}

pub fn auth() -> impl Strategy<Value = Auth> {
    (token_id(), access()).prop_map(|(token_id, access)| Auth { token_id, access })
}

/// Every request: any command, with or without an id and a token.
pub fn request() -> impl Strategy<Value = Request> {
    (option::of("[a-z0-9-]{1,12}"), command(), option::of(auth()), any::<u64>(), any::<u64>()).prop_map(
        |(request_id, command, auth, now_ms, received_by)| Request { request_id, command, auth, now_ms, received_by },
    )
}

/// Every result.
pub fn command_result() -> impl Strategy<Value = CommandResult> {
    prop_oneof![
        (any::<u64>(), any::<u64>())
            .prop_map(|(revision, prev_mod_revision)| CommandResult::Put { revision, prev_mod_revision }),
        (any::<u64>(), any::<bool>()).prop_map(|(revision, deleted)| CommandResult::Delete { revision, deleted }),
        any::<u64>().prop_map(|current_revision| CommandResult::CompareFailed { current_revision }),
        any::<u64>().prop_map(|revision| CommandResult::Ok { revision }),
        any_text().prop_map(|reason| CommandResult::Unauthorized { reason }),
        any_text().prop_map(|reason| CommandResult::Refused { reason }),
        (any::<u64>(), option::of(any::<u64>()))
            .prop_map(|(created_ms, expires_ms)| CommandResult::TokenCreated { created_ms, expires_ms }),
        any::<bool>().prop_map(|revoked| CommandResult::TokenRevoked { revoked }),
        any::<u64>().prop_map(|version| CommandResult::HaConfigApplied { version }),
        any::<u64>().prop_map(|generation| CommandResult::TornDown { generation }),
        any::<u64>().prop_map(|seq| CommandResult::Audited { seq }),
        any_text().prop_map(|reason| CommandResult::RequestIdReused { reason }),
    ]
}

// ---- a valid HA configuration, every key ---------------------------------------------

fn absolute_path() -> impl Strategy<Value = String> {
    "(/[^/\u{0}]{1,8}){1,3}".prop_filter("no `..` component", |path| !path.split('/').any(|c| c == ".."))
}

fn host_name() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9-]{0,6}[a-z0-9](\\.[a-z][a-z0-9]{0,5}){0,2}"
        .prop_filter("not the node itself", |name| name != "localhost" && !name.ends_with(".localhost"))
}

fn email() -> impl Strategy<Value = String> {
    ("[a-z0-9!#+_-]{1,10}", host_name()).prop_map(|(local, domain)| format!("{local}@{domain}"))
}

/// A ping target: a documentation address (never a member's) or a host name.
fn ping_target() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u8..=254, 1u8..=254).prop_map(|(c, d)| format!("198.51.{c}.{d}")),
        (1u16..0xffff).prop_map(|tail| format!("2001:db8::{tail:x}")),
        host_name(),
    ]
}

fn node_config() -> impl Strategy<Value = NodeHaConfig> {
    (any::<bool>(), option::of(0u64..=PRIORITY_MAX), vec(ping_target(), 0..=PING_TARGETS_MAX)).prop_map(
        |(witness, priority, targets)| {
            // Each target once (host names compare without case).
            let mut seen = Vec::new();
            let mut ping_targets = Vec::new();
            for target in targets {
                let host = crate::ha::syntax::parse_host(&target).ok();
                if !seen.contains(&host) {
                    seen.push(host);
                    ping_targets.push(target);
                }
            }
            let role = if witness { NodeRole::Witness } else { NodeRole::Data };
            // A witness's priority can only be 0 (or unset).
            let priority = if witness { priority.map(|_| 0) } else { priority };
            NodeHaConfig { role, priority, ping_targets }
        },
    )
}

/// How failure detection is set: a profile (every one), or the two values, each optional.
fn detection() -> impl Strategy<Value = (Option<Profile>, Option<u64>, Option<u64>)> {
    prop_oneof![
        prop::sample::select(Profile::ALL.to_vec()).prop_map(|profile| (Some(profile), None, None)),
        (option::of(PING_INTERVAL_MS_MIN..=PING_INTERVAL_MS_MAX), option::of(FAILED_PINGS_MIN..=FAILED_PINGS_MAX))
            .prop_map(|(ping, failed)| (None, ping, failed)),
    ]
}

/// A valid HA configuration with every key chosen (optional ones set or not), every
/// profile among them. Valid without member addresses, as the state machine checks it.
pub fn ha_config() -> impl Strategy<Value = HaConfig> {
    let smtp = (
        option::of(host_name()),
        SMTP_PORT_MIN..=SMTP_PORT_MAX,
        option::of(email()),
        any::<bool>(),
        option::of(("[a-z0-9._-]{1,10}", absolute_path())),
    )
        .prop_map(|(host, port, from, starttls, login)| SmtpConfig {
            host,
            port,
            from,
            starttls,
            username: login.as_ref().map(|(username, _)| username.clone()),
            password_file: login.map(|(_, path)| path),
        });
    (
        detection(),
        (any::<bool>(), STABILISATION_DELAY_S_MIN..=STABILISATION_DELAY_S_MAX, 0..=ANTI_FLAP_DELAY_S_MAX),
        (FILE_SYNC_INTERVAL_S_MIN..=FILE_SYNC_INTERVAL_S_MAX, FILE_SYNC_CHANGE_COUNT_MIN..=FILE_SYNC_CHANGE_COUNT_MAX),
        (option::of(absolute_path()), HOOK_TIMEOUT_S_MIN..=HOOK_TIMEOUT_S_MAX),
        (option::of(email()), smtp),
        btree_map(1u64..=7, node_config(), 0..4),
    )
        .prop_map(
            |(
                (profile, ping_interval_ms, failed_pings),
                (failback, stabilisation_delay_s, anti_flap_delay_s),
                (file_sync_interval_s, file_sync_change_count),
                (hook_script, hook_timeout_s),
                (alert_email, smtp),
                nodes,
            )| {
                let mut config = HaConfig {
                    profile,
                    ping_interval_ms,
                    failed_pings,
                    failback,
                    stabilisation_delay_s,
                    anti_flap_delay_s,
                    file_sync_interval_s,
                    file_sync_change_count,
                    hook_script,
                    hook_timeout_s,
                    alert_email,
                    smtp,
                    nodes,
                };
                // With failback on, the delay must cover the detection time.
                if config.failback {
                    let detection_s = config.timing().expected_detection_ms().div_ceil(1000);
                    config.stabilisation_delay_s = config.stabilisation_delay_s.max(detection_s);
                }
                // Alerts need a server and a sender.
                if config.smtp.host.is_none() || config.smtp.from.is_none() {
                    config.alert_email = None;
                }
                config.normalized()
            },
        )
        .prop_filter("valid without members", |config| config.validate(&[]).is_ok())
}

/// One value of `strategy` drawn from `seed` alone: for seeded simulations that want the
/// values the property tests generate, reproducibly. `None` if the strategy rejects too
/// many candidates.
pub fn draw<S: Strategy>(strategy: &S, seed: [u8; 32]) -> Option<S::Value> {
    let mut runner =
        TestRunner::new_with_rng(ProptestConfig::default(), TestRng::from_seed(RngAlgorithm::ChaCha, &seed));
    strategy.new_tree(&mut runner).ok().map(|tree| tree.current())
}

/// The draft edits that turn `current` into `wanted`: every key `wanted` has, as `haven
/// config draft set KEY VALUE` would send them (JSON text), and every other key `current`
/// has unset.
pub fn edits_to(current: &HaConfig, wanted: &HaConfig) -> Vec<(String, Option<String>)> {
    let mut edits: BTreeMap<String, Option<String>> = current.flatten().into_keys().map(|key| (key, None)).collect();
    for (key, value) in wanted.flatten() {
        edits.insert(key, (!value.is_null()).then(|| value.to_string()));
    }
    edits.into_iter().collect()
}

// ---- states ----------------------------------------------------------------------------

/// One step of building a state; see [`state`].
#[derive(Debug, Clone)]
pub enum Step {
    /// A KV write by caller `caller` (0 = the server, else token number), with an id from
    /// a small pool so ids collide across callers and commands.
    Write {
        caller: usize,
        id: Option<u8>,
        command: Command,
    },
    /// A token (number `index`) created by the server, of `role`, maybe expiring.
    CreateToken {
        index: usize,
        role: Role,
        ttl_s: Option<u64>,
    },
    RevokeToken {
        index: usize,
    },
    /// A join token consumed by a node.
    Consume {
        index: usize,
        node_id: u64,
        incarnation: String,
    },
    Maintenance {
        on: bool,
    },
    /// Apply `config` (every key) through a draft; `reviewed`: applied as `haven config
    /// apply` does after a review, naming the draft's digest.
    Configure {
        config: HaConfig,
        reviewed: bool,
    },
    /// Leave a draft of `edits` pending (arbitrary JSON values: not checked until apply).
    Draft {
        edits: Vec<(String, Option<String>)>,
    },
    DiscardDraft,
    Teardown {
        keep: u64,
        detached: Vec<(u64, String)>,
    },
    Audit {
        entry: AuditEntry,
    },
    /// Member `node_id` with data dir `incarnation` is removed from the membership.
    RecordRemoval {
        node_id: u64,
        incarnation: String,
    },
    /// The offline rewrite of `haven recover` (with `recovery`, after a lost majority) or of
    /// a detached node started standalone: a new cluster id, and the old one's lineage.
    MoveToNewCluster {
        cluster_id: String,
        recovery: Option<Recovery>,
    },
}

/// Tokens a generated state may hold; token `i` has id `format!("{i:016x}")`.
pub const STATE_TOKENS: usize = 4;

fn json_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        any_text().prop_map(|text| serde_json::Value::String(text).to_string()),
        Just("null".to_string()),
        vec(any_text(), 0..3).prop_map(|items| serde_json::json!(items).to_string()),
    ]
}

pub fn step() -> impl Strategy<Value = Step> {
    let write_command = prop_oneof![
        4 => (key(), value(), option::of(0u64..6)).prop_map(|(key, value, prev_revision)| Command::Put { key, value, prev_revision }),
        1 => (key(), option::of(0u64..6)).prop_map(|(key, prev_revision)| Command::Delete { key, prev_revision }),
    ];
    prop_oneof![
        12 => (0..=STATE_TOKENS, option::of(0u8..6), write_command)
            .prop_map(|(caller, id, command)| Step::Write { caller, id, command }),
        2 => (0..STATE_TOKENS, role(), option::of(1u64..100_000))
            .prop_map(|(index, role, ttl_s)| Step::CreateToken { index, role, ttl_s }),
        1 => (0..STATE_TOKENS).prop_map(|index| Step::RevokeToken { index }),
        1 => (0..STATE_TOKENS, 1u64..8, "[0-9a-f]{4}")
            .prop_map(|(index, node_id, incarnation)| Step::Consume { index, node_id, incarnation }),
        1 => any::<bool>().prop_map(|on| Step::Maintenance { on }),
        2 => (ha_config(), any::<bool>()).prop_map(|(config, reviewed)| Step::Configure { config, reviewed }),
        1 => vec(("[a-z_.0-9]{1,12}", option::of(json_text())), 1..4).prop_map(|edits| Step::Draft { edits }),
        1 => Just(Step::DiscardDraft),
        1 => (1u64..8, vec((1u64..8, "[0-9a-f]{4}"), 0..3)).prop_map(|(keep, detached)| Step::Teardown { keep, detached }),
        1 => audit_entry().prop_map(|entry| Step::Audit { entry }),
        1 => (1u64..8, "[0-9a-f]{4}").prop_map(|(node_id, incarnation)| Step::RecordRemoval { node_id, incarnation }),
        1 => ("[0-9a-f]{8}", option::of(recovery()))
            .prop_map(|(cluster_id, recovery)| Step::MoveToNewCluster { cluster_id, recovery }),
    ]
}

/// What a recovery after a lost majority keeps of the old cluster.
fn recovery() -> impl Strategy<Value = Recovery> {
    (1u64..8, vec(1u64..8, 0..3), vec((1u64..8, "[0-9a-f]{4}"), 0..3)).prop_map(
        |(survivor, confirmed_down, old_members)| Recovery {
            survivor,
            confirmed_down,
            old_members: old_members
                .into_iter()
                .map(|(node_id, key)| OldMember { node_id, fingerprint: format!("sha256:{key}") })
                .collect(),
        },
    )
}

/// The leader's clock in generated states: a fixed start, one second per step.
pub const STATE_T0_MS: u64 = 1_700_000_000_000;

/// Applies `steps` to a state keeping `history_revisions` of history, as a cluster would,
/// and returns it with what each step's request got (a move to a new cluster is no
/// request and gets nothing).
pub fn apply_steps(history_revisions: u64, steps: &[Step]) -> (KvState, Vec<CommandResult>) {
    let mut state = KvState::new(history_revisions);
    let token_id = |index: usize| format!("{index:016x}");
    let mut results = Vec::new();
    for (at, step) in steps.iter().enumerate() {
        let now_ms = STATE_T0_MS + at as u64 * 1000;
        let server = |command: Command| Request { now_ms, ..Request::new(None, command) };
        let request = match step {
            Step::MoveToNewCluster { cluster_id, recovery } => {
                state.move_to_new_cluster(cluster_id, recovery.clone());
                continue;
            }
            Step::Write { caller, id, command } => {
                let mut request = server(command.clone());
                request.request_id = id.map(|id| format!("req-{id}"));
                if *caller > 0 {
                    request = request.with_auth(&token_id(*caller - 1), Access::Write);
                }
                request
            }
            Step::CreateToken { index, role, ttl_s } => {
                let made = crate::auth::new_token([*index as u8; 8], [*index as u8; 32]);
                server(Command::CreateToken {
                    id: token_id(*index),
                    name: format!("t{index}"),
                    role: *role,
                    sha256_hex: made.sha256_hex,
                    ttl_ms: ttl_s.map(|ttl_s| ttl_s * 1000),
                })
            }
            Step::RevokeToken { index } => server(Command::RevokeToken { id: token_id(*index) }),
            Step::Consume { index, node_id, incarnation } => server(Command::ConsumeJoinToken {
                id: token_id(*index),
                node_id: *node_id,
                incarnation: incarnation.clone(),
            }),
            Step::Maintenance { on } => server(Command::SetMaintenance { on: *on }),
            Step::Configure { config, reviewed } => {
                let edits = edits_to(&state.admin().ha_config.value, config);
                state.apply(&server(Command::DiscardHaDraft));
                state.apply(&server(Command::EditHaDraft { edits }));
                let base_version = state.admin().ha_config.version;
                match state.admin().draft.as_ref().map(crate::admin::StoredDraft::digest) {
                    Some(digest) if *reviewed => server(Command::ApplyReviewedDraft { base_version, digest }),
                    _ => server(Command::ApplyHaDraft { base_version }),
                }
            }
            Step::Draft { edits } => server(Command::EditHaDraft { edits: edits.clone() }),
            Step::DiscardDraft => server(Command::DiscardHaDraft),
            Step::Teardown { keep, detached } => server(Command::Teardown { keep: *keep, detached: detached.clone() }),
            Step::Audit { entry } => server(Command::RecordAudit { entry: entry.clone() }),
            Step::RecordRemoval { node_id, incarnation } => server(Command::RecordRemoval {
                node_id: *node_id,
                incarnation: incarnation.clone(),
                fingerprint: format!("sha256:{incarnation}"),
            }),
        };
        results.push(state.apply(&request));
    }
    (state, results)
}

/// A state a cluster can hold, built by 0-`steps_max` steps, with a small history so it
/// is trimmed.
pub fn state(steps_max: usize) -> impl Strategy<Value = KvState> {
    (1u64..20, vec(step(), 0..steps_max))
        .prop_map(|(history_revisions, steps)| apply_steps(history_revisions, &steps).0)
}

/// The configuration each `Configure` step of `steps` asked for, in order (tests check
/// that it was applied).
pub fn configured(steps: &[Step]) -> Vec<HaConfig> {
    steps
        .iter()
        .filter_map(|step| match step {
            Step::Configure { config, .. } => Some(config.clone()),
            _ => None,
        })
        .collect()
}

/// Keys and their values as a map (for comparing states in messages).
pub fn entries_of(state: &KvState) -> BTreeMap<String, Vec<u8>> {
    state.list("", None, usize::MAX).0.into_iter().map(|(key, entry)| (key.clone(), entry.value.clone())).collect()
}
