//! The cluster-wide HA configuration (seed 002's HA Configuration panel and its advanced
//! table), its validation, and the draft-then-apply workflow.
//!
//! ```text
//!   operator ── Draft { base_version, { "nodes.2.priority": 50, "hook_script": unset } }
//!                  │
//!   replicated ── Versioned<HaConfig> { version, value } (current)
//!                  │
//!                  ▼ apply_draft(current, draft, members)
//!        empty draft? ─────────────────────────── NothingToApply
//!        base_version != version? ─────────────── Stale { base, current }
//!        each key known? each value of its type?  ┐
//!        validate(): every rule, all at once  ────┴ Invalid([key, value, rule]...)
//!        same as current? ─────────────────────── NothingToApply ("No configuration changes to apply")
//!        ──▶ Applied { config, changes (diff), restart (which nodes, why) }
//!   the shell writes `config` through Raft as version + 1, compare-and-set on `version`
//! ```
//!
//! Node-local settings (its own address, the peer's address and key fingerprint, the data
//! directory) stay in the node's own `haven.toml` (`crate::config`); seed 002's
//! HAServerRole is not stored: primary is whoever Raft elected, standalone is a topology.
//! Keys are addressed as dotted paths: `failback`, `smtp.port`, `nodes.2.priority`,
//! `nodes.2.ping_targets` (a whole list), `nodes.2` (a whole node entry).

use std::collections::BTreeMap;
use std::collections::BTreeSet;

use serde::Deserialize;
use serde::Serialize;
use serde_json::Map;
use serde_json::Value;

use crate::config::ConfigError;
use crate::config::Timing;
use crate::config::FAILED_PINGS_MAX;
use crate::config::FAILED_PINGS_MIN;
use crate::config::PING_INTERVAL_MS_MAX;
use crate::config::PING_INTERVAL_MS_MIN;
use crate::ha::detection::human_ms;
use crate::ha::detection::Detection;
use crate::ha::detection::Profile;
use crate::ha::failback::Policy;
use crate::ha::status::vote_tolerance;
use crate::ha::status::write_tolerance;
use crate::ha::syntax::check_absolute_path;
use crate::ha::syntax::check_email;
use crate::ha::syntax::parse_host;
use crate::ha::syntax::Host;
use crate::ha::NodeRole;
use crate::limits::NODE_ID_MAX;

/// Seed 002's HAFileSyncInterval: "an integer between 5 and 30. Default is 5." Below 5 s
/// the sync would scan watched directories constantly; beyond 30 s a failover loses too
/// much recent file work.
pub const FILE_SYNC_INTERVAL_S_DEFAULT: u64 = 5;
pub const FILE_SYNC_INTERVAL_S_MIN: u64 = 5;
pub const FILE_SYNC_INTERVAL_S_MAX: u64 = 30;

/// Seed 002: "files are also synced every 1000 changes regardless of this timer". The
/// seed gives no range. At least 1 (0 would mean "never by count" and hide a typo); at
/// most 10,000, because one batch of changes becomes one manifest update in the Raft log
/// and a larger one would hold up other writes; the interval already bounds latency.
pub const FILE_SYNC_CHANGE_COUNT_DEFAULT: u64 = 1_000;
pub const FILE_SYNC_CHANGE_COUNT_MIN: u64 = 1;
pub const FILE_SYNC_CHANGE_COUNT_MAX: u64 = 10_000;

/// How long a returning preferred node must have been healthy, and the current primary
/// must have led, before failback moves leadership. One minute outlasts a reboot loop's
/// up-time and a burst of packet loss; at least 1 s (0 would fail back on the first
/// heartbeat); at most a day (longer is "failback = false").
pub const STABILISATION_DELAY_S_DEFAULT: u64 = 60;
pub const STABILISATION_DELAY_S_MIN: u64 = 1;
pub const STABILISATION_DELAY_S_MAX: u64 = 86_400;

/// How long a node that lost the primary role is passed over by failback. Five minutes:
/// a node that fails twice within that is not stable enough to be preferred. 0 turns
/// anti-flap off; at most a day.
pub const ANTI_FLAP_DELAY_S_DEFAULT: u64 = 300;
pub const ANTI_FLAP_DELAY_S_MAX: u64 = 86_400;

/// Priorities: 0 = never primary; a data node's default is 100, which leaves room above
/// and below for the few nodes an operator ranks. 1000 is far more levels than 7 voters
/// need and keeps the number typeable.
pub const PRIORITY_DEFAULT: u64 = 100;
pub const PRIORITY_MAX: u64 = 1_000;

/// Seed 002: HAPingMonitor1, HAPingMonitor2, HAPingMonitor3: up to three per node.
pub const PING_TARGETS_MAX: usize = 3;

/// How long a hook script may run before it is killed. Seed 002's scripts update DNS or
/// send mail: 30 s is plenty; at most 10 minutes so a hung script cannot pile up behind
/// the next HA event.
pub const HOOK_TIMEOUT_S_DEFAULT: u64 = 30;
pub const HOOK_TIMEOUT_S_MIN: u64 = 1;
pub const HOOK_TIMEOUT_S_MAX: u64 = 600;

/// SMTP submission port (RFC 6409) with STARTTLS: what a modern relay expects.
pub const SMTP_PORT_DEFAULT: u64 = 587;
pub const SMTP_PORT_MIN: u64 = 1;
pub const SMTP_PORT_MAX: u64 = 65_535;

/// Edits in one draft. The whole configuration of 7 nodes has fewer than 50 keys; 256
/// leaves room for drafts that set every key explicitly while bounding the work of one
/// apply (each edit is type-checked on its own).
pub const DRAFT_CHANGES_MAX: usize = 256;

/// The cluster-wide HA configuration, as stored in the replicated store and written in
/// TOML or JSON. Every key is optional; unknown keys are refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HaConfig {
    /// Sets the ping interval and failed pings at once; exclusive with the two below.
    pub profile: Option<Profile>,
    /// Seed 002: the secondary pings the primary every 15 s. Unset: the `fast` value.
    pub ping_interval_ms: Option<u64>,
    /// Seed 002's HAPingIterations, 2-20. Unset: the `fast` value.
    pub failed_pings: Option<u64>,
    /// Seed 004's "force execution on highest priority server". Off by default: after a
    /// failover the primary role stays where it is (the least disruptive choice).
    pub failback: bool,
    pub stabilisation_delay_s: u64,
    pub anti_flap_delay_s: u64,
    /// Seed 002's HAFileSyncInterval.
    pub file_sync_interval_s: u64,
    pub file_sync_change_count: u64,
    /// Seed 002's HAAdminAlertScript: run as `script EVENT ARG2 ARG3`. An absolute path
    /// on every node (the script itself is a file the operator installs).
    pub hook_script: Option<String>,
    pub hook_timeout_s: u64,
    /// Seed 002's HAAlertEmail.
    pub alert_email: Option<String>,
    pub smtp: SmtpConfig,
    /// Per-node settings by node id; a member without an entry gets the defaults.
    pub nodes: BTreeMap<u64, NodeHaConfig>,
}

impl Default for HaConfig {
    fn default() -> HaConfig {
        HaConfig {
            profile: None,
            ping_interval_ms: None,
            failed_pings: None,
            failback: false,
            stabilisation_delay_s: STABILISATION_DELAY_S_DEFAULT,
            anti_flap_delay_s: ANTI_FLAP_DELAY_S_DEFAULT,
            file_sync_interval_s: FILE_SYNC_INTERVAL_S_DEFAULT,
            file_sync_change_count: FILE_SYNC_CHANGE_COUNT_DEFAULT,
            hook_script: None,
            hook_timeout_s: HOOK_TIMEOUT_S_DEFAULT,
            alert_email: None,
            smtp: SmtpConfig::default(),
            nodes: BTreeMap::new(),
        }
    }
}

/// One node's HA settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeHaConfig {
    pub role: NodeRole,
    /// 0 = never primary. Unset: [`PRIORITY_DEFAULT`] for a data node, 0 for a witness.
    pub priority: Option<u64>,
    /// Seed 002's additional ping targets: IP addresses or host names, at most 3.
    pub ping_targets: Vec<String>,
}

/// How alert e-mail is sent. The password is not stored here (the configuration is
/// replicated and shown): `password_file` names a file on each node that holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmtpConfig {
    pub host: Option<String>,
    pub port: u64,
    /// The sender address of alerts.
    pub from: Option<String>,
    pub starttls: bool,
    pub username: Option<String>,
    pub password_file: Option<String>,
}

impl Default for SmtpConfig {
    fn default() -> SmtpConfig {
        SmtpConfig {
            host: None,
            port: SMTP_PORT_DEFAULT,
            from: None,
            starttls: true,
            username: None,
            password_file: None,
        }
    }
}

/// A node's settings with the defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSettings {
    pub role: NodeRole,
    pub priority: u32,
    pub ping_targets: Vec<String>,
}

/// The addresses a member is known by (IP addresses or host names, with or without a
/// port): its host name, the hosts of its client and peer addresses, other interfaces.
/// Ping targets are checked against them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeAddresses {
    pub id: u64,
    pub addresses: Vec<String>,
    /// A voter (false: a learner). The rule that a topology's tolerance be true counts
    /// the voters that may be the primary.
    pub voter: bool,
}

impl HaConfig {
    /// Parses TOML text; the error is one line naming the problem (types and unknown
    /// keys; the rules are checked by [`HaConfig::validate`]).
    pub fn parse_toml(text: &str) -> Result<HaConfig, ConfigError> {
        toml::from_str(text).map_err(|error| ConfigError::Syntax {
            line: error.span().map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1),
            message: error.message().lines().next().unwrap_or("invalid TOML").to_string(),
        })
    }

    /// The detection timing: the profile's, or the explicit values, each defaulting to
    /// the `fast` profile.
    pub fn timing(&self) -> Timing {
        match self.profile {
            Some(profile) => profile.timing(),
            None => {
                let fast = Profile::Fast.timing();
                Timing {
                    ping_interval_ms: self.ping_interval_ms.unwrap_or(fast.ping_interval_ms),
                    failed_pings: self.failed_pings.unwrap_or(fast.failed_pings),
                }
            }
        }
    }

    /// The timing described (profile named when it came from one, `fast` when all unset).
    pub fn detection(&self) -> Detection {
        let implicit_fast = self.ping_interval_ms.is_none() && self.failed_pings.is_none();
        Detection::new(self.timing(), self.profile.or(implicit_fast.then_some(Profile::Fast)))
    }

    /// A node's settings with defaults filled in (an entry or none).
    pub fn node(&self, id: u64) -> NodeSettings {
        let entry = self.nodes.get(&id).cloned().unwrap_or_default();
        let default_priority = match entry.role {
            NodeRole::Data => PRIORITY_DEFAULT,
            NodeRole::Witness => 0,
        };
        // Clamped so an unvalidated value still converts; validation refuses it anyway.
        let priority = entry.priority.unwrap_or(default_priority).min(PRIORITY_MAX) as u32;
        NodeSettings { role: entry.role, priority, ping_targets: entry.ping_targets }
    }

    pub fn failback_policy(&self) -> Policy {
        Policy {
            failback: self.failback,
            stabilisation_delay_ms: self.stabilisation_delay_s.saturating_mul(1000),
            anti_flap_ms: self.anti_flap_delay_s.saturating_mul(1000),
        }
    }

    /// The same configuration without node entries that only restate the defaults, so
    /// two configurations that mean the same compare equal.
    pub fn normalized(mut self) -> HaConfig {
        self.nodes.retain(|_, node| *node != NodeHaConfig::default());
        self
    }

    /// Every key as a dotted path with the value in effect: like [`HaConfig::flatten`],
    /// but the detection timing and each node's priority show the value they take when
    /// unset (`ping_interval_ms = 50`, not `null`). Keys without a default value (a hook
    /// script, an e-mail address) stay `null`: unset.
    pub fn effective(&self) -> BTreeMap<String, Value> {
        let mut flat = self.flatten();
        let timing = self.timing();
        flat.insert("ping_interval_ms".into(), timing.ping_interval_ms.into());
        flat.insert("failed_pings".into(), timing.failed_pings.into());
        for id in self.nodes.keys() {
            flat.insert(format!("nodes.{id}.priority"), self.node(*id).priority.into());
        }
        flat
    }

    /// Every key as a dotted path with its value (lists are single values).
    pub fn flatten(&self) -> BTreeMap<String, Value> {
        fn walk(prefix: &str, value: &Value, out: &mut BTreeMap<String, Value>) {
            match value {
                Value::Object(map) => {
                    for (key, value) in map {
                        let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
                        walk(&path, value, out);
                    }
                }
                leaf => {
                    out.insert(prefix.to_string(), leaf.clone());
                }
            }
        }
        let mut out = BTreeMap::new();
        walk("", &to_json(self), &mut out);
        out
    }

    /// Checks every rule and names every broken one at once. `members` are the cluster's
    /// members with their addresses; with none given, the rules that need them (node
    /// entries for members only, ping targets not a member's address, someone can be
    /// primary) are skipped.
    pub fn validate(&self, members: &[NodeAddresses]) -> Result<(), Vec<HaConfigError>> {
        let mut errors = Errors::default();
        self.validate_detection(&mut errors);
        self.validate_failback(&mut errors);
        errors.range(
            "file_sync_interval_s",
            self.file_sync_interval_s,
            FILE_SYNC_INTERVAL_S_MIN,
            FILE_SYNC_INTERVAL_S_MAX,
            "seed 002's range",
        );
        errors.range(
            "file_sync_change_count",
            self.file_sync_change_count,
            FILE_SYNC_CHANGE_COUNT_MIN,
            FILE_SYNC_CHANGE_COUNT_MAX,
            "one batch becomes one Raft entry",
        );
        if let Some(path) = &self.hook_script {
            if let Err(why) = check_absolute_path(path) {
                errors.push("hook_script", json_text(path), RuleKind::Invalid, why);
            }
        }
        errors.range("hook_timeout_s", self.hook_timeout_s, HOOK_TIMEOUT_S_MIN, HOOK_TIMEOUT_S_MAX, "seconds");
        self.validate_alerts(&mut errors);
        self.validate_nodes(members, &mut errors);
        errors.finish()
    }

    fn validate_detection(&self, errors: &mut Errors) {
        if let Some(profile) = self.profile {
            let timing = profile.timing();
            if let Some(value) = self.ping_interval_ms {
                errors.push(
                    "ping_interval_ms",
                    value.to_string(),
                    RuleKind::Contradiction,
                    format!(
                        "profile = \"{profile}\" already sets the ping interval ({} ms); unset one of them",
                        timing.ping_interval_ms
                    ),
                );
            }
            if let Some(value) = self.failed_pings {
                errors.push(
                    "failed_pings",
                    value.to_string(),
                    RuleKind::Contradiction,
                    format!(
                        "profile = \"{profile}\" already sets the failed pings ({}); unset one of them",
                        timing.failed_pings
                    ),
                );
            }
        }
        if let Some(value) = self.ping_interval_ms {
            errors.range(
                "ping_interval_ms",
                value,
                PING_INTERVAL_MS_MIN,
                PING_INTERVAL_MS_MAX,
                "below, scheduling noise looks like failure; above, failover takes minutes",
            );
        }
        if let Some(value) = self.failed_pings {
            errors.range("failed_pings", value, FAILED_PINGS_MIN, FAILED_PINGS_MAX, "seed 002's range");
        }
    }

    fn validate_failback(&self, errors: &mut Errors) {
        let delay_ok = errors.range(
            "stabilisation_delay_s",
            self.stabilisation_delay_s,
            STABILISATION_DELAY_S_MIN,
            STABILISATION_DELAY_S_MAX,
            "seconds",
        );
        errors.range("anti_flap_delay_s", self.anti_flap_delay_s, 0, ANTI_FLAP_DELAY_S_MAX, "seconds; 0 = off");
        let timing = self.timing();
        let timing_ok = (PING_INTERVAL_MS_MIN..=PING_INTERVAL_MS_MAX).contains(&timing.ping_interval_ms)
            && (FAILED_PINGS_MIN..=FAILED_PINGS_MAX).contains(&timing.failed_pings);
        let detection_ms = timing.expected_detection_ms();
        if self.failback && delay_ok && timing_ok && self.stabilisation_delay_s.saturating_mul(1000) < detection_ms {
            errors.push(
                "stabilisation_delay_s",
                self.stabilisation_delay_s.to_string(),
                RuleKind::Contradiction,
                format!(
                    "with failback on, the stabilisation delay must be at least the expected failure detection time \
                     ({}), or a node that keeps failing gets the primary role back before its next failure is even \
                     detected; raise it to {} or more",
                    human_ms(detection_ms),
                    detection_ms.div_ceil(1000)
                ),
            );
        }
    }

    fn validate_alerts(&self, errors: &mut Errors) {
        if let Some(email) = &self.alert_email {
            if let Err(why) = check_email(email) {
                errors.push("alert_email", json_text(email), RuleKind::Invalid, why);
            }
            if self.smtp.host.is_none() {
                errors.push(
                    "smtp.host",
                    UNSET_SHOWN,
                    RuleKind::Missing,
                    "alert_email is set, so alerts need an SMTP server to go through",
                );
            }
            if self.smtp.from.is_none() {
                errors.push(
                    "smtp.from",
                    UNSET_SHOWN,
                    RuleKind::Missing,
                    "alert_email is set, so alerts need a sender address",
                );
            }
        }
        if let Some(host) = &self.smtp.host {
            if let Err(why) = parse_host(host) {
                errors.push("smtp.host", json_text(host), RuleKind::Invalid, why);
            }
        }
        errors.range("smtp.port", self.smtp.port, SMTP_PORT_MIN, SMTP_PORT_MAX, "a TCP port");
        if let Some(from) = &self.smtp.from {
            if let Err(why) = check_email(from) {
                errors.push("smtp.from", json_text(from), RuleKind::Invalid, why);
            }
        }
        match (&self.smtp.username, &self.smtp.password_file) {
            (Some(username), None) => errors.push(
                "smtp.username",
                json_text(username),
                RuleKind::Contradiction,
                "a user name needs smtp.password_file too; set both or neither",
            ),
            (None, Some(path)) => errors.push(
                "smtp.password_file",
                json_text(path),
                RuleKind::Contradiction,
                "a password file needs smtp.username too; set both or neither",
            ),
            _ => {}
        }
        if let Some(path) = &self.smtp.password_file {
            if let Err(why) = check_absolute_path(path) {
                errors.push("smtp.password_file", json_text(path), RuleKind::Invalid, why);
            }
        }
        if self.smtp.username.is_some() && !self.smtp.starttls {
            errors.push(
                "smtp.starttls",
                "false",
                RuleKind::Contradiction,
                "a password is never sent over an unencrypted connection: with smtp.username set, smtp.starttls must \
                 be true",
            );
        }
    }

    fn validate_nodes(&self, members: &[NodeAddresses], errors: &mut Errors) {
        let member_ids: BTreeSet<u64> = members.iter().map(|member| member.id).collect();
        let hosts: Vec<(u64, Vec<Host>)> = members
            .iter()
            .map(|member| (member.id, member.addresses.iter().filter_map(|a| host_of(a)).collect()))
            .collect();
        for (&id, node) in &self.nodes {
            let key = format!("nodes.{id}");
            if id == 0 || id > NODE_ID_MAX {
                errors.push(&key, id.to_string(), RuleKind::OutOfRange, format!("node ids are 1-{NODE_ID_MAX}"));
            } else if !member_ids.is_empty() && !member_ids.contains(&id) {
                errors.push(
                    &key,
                    id.to_string(),
                    RuleKind::Invalid,
                    format!("node {id} is not a member of the cluster (members: {})", join(member_ids.iter())),
                );
            }
            if let Some(priority) = node.priority {
                errors.range(&format!("{key}.priority"), priority, 0, PRIORITY_MAX, "0 = never primary");
                if node.role == NodeRole::Witness && priority > 0 {
                    errors.push(
                        format!("{key}.priority"),
                        priority.to_string(),
                        RuleKind::Contradiction,
                        "a witness is never the primary, so its priority can only be 0; unset it",
                    );
                }
            }
            check_ping_targets(id, &node.ping_targets, &hosts, errors);
        }
        if !member_ids.is_empty() {
            let can_lead = member_ids.iter().any(|&id| {
                let node = self.node(id);
                node.role == NodeRole::Data && node.priority > 0
            });
            if !can_lead {
                errors.push(
                    "nodes",
                    join(member_ids.iter()),
                    RuleKind::Contradiction,
                    "no member can be the primary: each is a witness or has priority 0; give a data node a priority \
                     above 0",
                );
            } else {
                self.validate_tolerance(members, errors);
            }
        }
    }

    /// Refuses a configuration under which the voters' promise is false (issue 14): a
    /// majority of voters survives `(voters - 1) / 2` losses, but writes need a voter that
    /// may be the primary among the survivors. One data node with two witnesses is three
    /// voters that "survive any one down", yet losing the data node leaves nobody to write.
    fn validate_tolerance(&self, members: &[NodeAddresses], errors: &mut Errors) {
        let voters: Vec<u64> = members.iter().filter(|member| member.voter).map(|member| member.id).collect();
        let capable: Vec<u64> = voters
            .iter()
            .copied()
            .filter(|&id| {
                let node = self.node(id);
                node.role == NodeRole::Data && node.priority > 0
            })
            .collect();
        let vote_tolerance = vote_tolerance(voters.len());
        let tolerance = write_tolerance(voters.len(), capable.len());
        if capable.is_empty() || tolerance >= vote_tolerance {
            return;
        }
        let others: Vec<u64> = voters.iter().copied().filter(|id| !capable.contains(id)).collect();
        errors.push(
            "nodes",
            join(voters.iter()),
            RuleKind::Contradiction,
            format!(
                "{} voters promise to survive {vote_tolerance} voter(s) down, but only {} of them ({}) may be the \
                 primary: node(s) {} are witnesses or have priority 0, and a majority of voters without a data node \
                 cannot write, so this cluster would survive {tolerance}; make one of node(s) {} a data node with \
                 priority above 0, or remove it",
                voters.len(),
                capable.len(),
                join(capable.iter()),
                join(others.iter()),
                join(others.iter())
            ),
        );
    }
}

/// Seed 002's rules for ping targets, per node: at most 3; each unique; each a valid IP
/// address or host name (syntax only, not resolved); not the node's own addresses nor its
/// peers'. Loopback, unspecified, multicast and broadcast addresses and `localhost` are
/// the node itself or nobody, so they count as the node's own. (Seed 002 also excludes
/// the default gateway, because its secondary pings the gateway anyway; Haven does not,
/// so the gateway is a good target. Its management tunnel network has no counterpart.)
fn check_ping_targets(id: u64, targets: &[String], members: &[(u64, Vec<Host>)], errors: &mut Errors) {
    let key = format!("nodes.{id}.ping_targets");
    if targets.len() > PING_TARGETS_MAX {
        errors.push(
            &key,
            json_text(targets),
            RuleKind::OutOfRange,
            format!("at most {PING_TARGETS_MAX} ping targets per node (seed 002), {} given", targets.len()),
        );
    }
    let mut seen: Vec<Host> = Vec::new();
    for target in targets {
        let host = match parse_host(target) {
            Ok(host) => host,
            Err(why) => {
                errors.push(
                    &key,
                    json_text(target),
                    RuleKind::Invalid,
                    format!("{why}; a ping target must be a valid IP address or host name (checked, not resolved)"),
                );
                continue;
            }
        };
        if seen.contains(&host) {
            errors.push(&key, json_text(target), RuleKind::Duplicate, "listed twice; each ping target must be unique");
            continue;
        }
        seen.push(host.clone());
        if host.is_special() {
            errors.push(
                &key,
                json_text(target),
                RuleKind::Invalid,
                "a loopback, unspecified, multicast or broadcast address (or localhost) says nothing about this \
                 node's network; give an address on the network, such as the gateway",
            );
            continue;
        }
        for (member, hosts) in members {
            if hosts.contains(&host) {
                let rule = if *member == id {
                    format!("is node {id}'s own address; a node reaching itself proves nothing about its network")
                } else {
                    format!(
                        "is node {member}'s address; ping targets must be independent of the peers, whose silence \
                         they are meant to explain"
                    )
                };
                errors.push(&key, json_text(target), RuleKind::Invalid, rule);
            }
        }
    }
}

/// The host part of an address written with or without a port (`10.0.0.1:7101`,
/// `[2001:db8::1]:7101`, `haven-1:7101`, `haven-1`); `None` if it is neither.
fn host_of(address: &str) -> Option<Host> {
    if let Ok(socket) = address.parse::<std::net::SocketAddr>() {
        return Some(Host::Ip(socket.ip().to_canonical()));
    }
    if let Ok(host) = parse_host(address) {
        return Some(host);
    }
    let (host, port) = address.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    parse_host(host.trim_start_matches('[').trim_end_matches(']')).ok()
}

/// The kind of a broken rule, for scripts; the rule text says it in words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuleKind {
    OutOfRange,
    Invalid,
    Duplicate,
    Contradiction,
    Missing,
    UnknownKey,
    WrongType,
}

/// One broken rule: the key (a dotted path a draft can set), the offending value (as
/// JSON), and the rule in words with what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("`{key}` = {value}: {rule}")]
pub struct HaConfigError {
    pub key: String,
    pub value: String,
    pub kind: RuleKind,
    pub rule: String,
}

/// Every broken rule of a configuration (or a role definition: `roles::definition`),
/// collected so they are all named at once.
#[derive(Default)]
pub(crate) struct Errors(pub(crate) Vec<HaConfigError>);

impl Errors {
    pub(crate) fn push(
        &mut self,
        key: impl Into<String>,
        value: impl Into<String>,
        kind: RuleKind,
        rule: impl Into<String>,
    ) {
        self.0.push(HaConfigError { key: key.into(), value: value.into(), kind, rule: rule.into() });
    }

    /// Checks `min..=max`; true if in range.
    pub(crate) fn range(&mut self, key: &str, value: u64, min: u64, max: u64, why: &str) -> bool {
        let ok = (min..=max).contains(&value);
        if !ok {
            self.push(
                key,
                value.to_string(),
                RuleKind::OutOfRange,
                format!("out of range; allowed {min}-{max} ({why})"),
            );
        }
        ok
    }

    pub(crate) fn finish(self) -> Result<(), Vec<HaConfigError>> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self.0)
        }
    }
}

fn to_json<T: Serialize>(value: &T) -> Value {
    // Serializing plain structs, strings and maps with integer keys cannot fail.
    serde_json::to_value(value).unwrap_or(Value::Null)
}

pub(crate) fn json_text<T: Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

pub(crate) fn join<T: ToString>(items: impl Iterator<Item = T>) -> String {
    items.map(|item| item.to_string()).collect::<Vec<_>>().join(", ")
}

// ---------------------------------------------------------------------------------------
// Draft and apply.

/// A configuration with the version it was stored at; every apply increments it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versioned<T> {
    pub version: u64,
    pub value: T,
}

/// One edit of a draft: a new value, or back to the default. In JSON, `null` is
/// [`Edit::Unset`]; `Set(Value::Null)` means the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Edit {
    Unset,
    Set(Value),
}

/// How an unset key (or an edit that unsets it) is shown to an operator: in refusals,
/// in `haven config diff` and in the audit log's record of draft edits.
pub const UNSET_SHOWN: &str = "(unset)";

/// A JSON value as an operator reads it: `null` is [`UNSET_SHOWN`].
pub fn shown(value: &Value) -> String {
    if value.is_null() {
        UNSET_SHOWN.to_string()
    } else {
        value.to_string()
    }
}

impl std::fmt::Display for Edit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Edit::Set(value) => f.write_str(&shown(value)),
            Edit::Unset => f.write_str(UNSET_SHOWN),
        }
    }
}

/// Edits made against one version of the configuration (seed 002's "save as draft").
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Draft {
    pub base_version: u64,
    pub changes: BTreeMap<String, Edit>,
}

impl Draft {
    pub fn new(base_version: u64) -> Draft {
        Draft { base_version, changes: BTreeMap::new() }
    }

    pub fn set(mut self, key: &str, value: impl Into<Value>) -> Draft {
        self.changes.insert(key.to_string(), Edit::Set(value.into()));
        self
    }

    pub fn unset(mut self, key: &str) -> Draft {
        self.changes.insert(key.to_string(), Edit::Unset);
        self
    }
}

/// A value typed on a command line: JSON if it parses (`true`, `50`, `["10.0.0.1"]`),
/// otherwise the text as a string (`fast`, `10.0.0.1`, `/etc/haven/hook.sh`).
pub fn value_from_text(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

/// One changed key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub key: String,
    /// `null` when the key was unset.
    pub old: Value,
    pub new: Value,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} -> {}", self.key, shown(&self.old), shown(&self.new))
    }
}

/// A node that must restart for the change to take effect, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Restart {
    pub node_id: u64,
    pub reasons: Vec<String>,
}

/// The result of a successful apply: the shell stores `config` at version + 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Applied {
    pub config: HaConfig,
    pub changes: Vec<Change>,
    pub restart: Vec<Restart>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    #[error(
        "the draft was made from configuration version {base}, but the configuration is now at version {current}; \
         show the configuration again and redo the draft"
    )]
    Stale { base: u64, current: u64 },
    #[error("the draft breaks {} rule(s): {}", .0.len(), join(.0.iter()))]
    Invalid(Vec<HaConfigError>),
    /// Seed 002: "No Configuration Changes To Apply".
    #[error("no configuration changes to apply")]
    NothingToApply,
}

/// Applies a draft to the current configuration: see the module picture.
pub fn apply_draft(
    current: &Versioned<HaConfig>,
    draft: &Draft,
    members: &[NodeAddresses],
) -> Result<Applied, ApplyError> {
    if draft.changes.is_empty() {
        return Err(ApplyError::NothingToApply);
    }
    if draft.base_version != current.version {
        return Err(ApplyError::Stale { base: draft.base_version, current: current.version });
    }
    let mut errors = Errors::default();
    if draft.changes.len() > DRAFT_CHANGES_MAX {
        errors.push(
            "draft",
            draft.changes.len().to_string(),
            RuleKind::OutOfRange,
            format!("at most {DRAFT_CHANGES_MAX} changes in one draft; apply it in parts"),
        );
        return Err(ApplyError::Invalid(errors.0));
    }
    let base = to_json(&current.value);
    let template = template();
    let mut merged = base.clone();
    for (key, edit) in &draft.changes {
        let path = match check_key(key, &template) {
            Ok(path) => path,
            Err(rule) => {
                errors.push(key, edit.to_string(), RuleKind::UnknownKey, rule);
                continue;
            }
        };
        // Each edit is type-checked on its own, so every wrong type is named, not just
        // the first one serde meets.
        let mut alone = base.clone();
        apply_edit(&mut alone, &path, edit);
        if serde_json::from_value::<HaConfig>(alone).is_err() {
            errors.push(key, edit.to_string(), RuleKind::WrongType, expected_type(&path, &template));
            continue;
        }
        apply_edit(&mut merged, &path, edit);
    }
    let config = match serde_json::from_value::<HaConfig>(merged) {
        Ok(config) => config.normalized(),
        Err(_) => {
            // Edits fine alone but not together (a whole `nodes.2` and a bad `nodes.2.x`).
            errors.push(
                "draft",
                "(edits combined)",
                RuleKind::WrongType,
                "the edits are each fine alone but not together (a whole section and a key inside it); set the \
                 keys one by one",
            );
            return Err(ApplyError::Invalid(errors.0));
        }
    };
    if let Err(broken) = config.validate(members) {
        errors.0.extend(broken);
    }
    if !errors.0.is_empty() {
        return Err(ApplyError::Invalid(errors.0));
    }
    if config == current.value.clone().normalized() {
        return Err(ApplyError::NothingToApply);
    }
    let changes = diff(&current.value, &config);
    let restart = restarts(&current.value, &config, members);
    Ok(Applied { config, changes, restart })
}

/// What changed between two configurations, key by key (dotted paths, sorted).
pub fn diff(old: &HaConfig, new: &HaConfig) -> Vec<Change> {
    // Values in effect on both sides, and every node entry on both sides (a new entry's
    // untouched fields are its defaults, not a change from nothing: no `null -> []`).
    let (mut old, mut new) = (old.clone().normalized(), new.clone().normalized());
    let ids: BTreeSet<u64> = old.nodes.keys().chain(new.nodes.keys()).copied().collect();
    for id in ids {
        old.nodes.entry(id).or_default();
        new.nodes.entry(id).or_default();
    }
    let (old, new) = (old.effective(), new.effective());
    let keys: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    keys.into_iter()
        .filter_map(|key| {
            let before = old.get(key).cloned().unwrap_or(Value::Null);
            let after = new.get(key).cloned().unwrap_or(Value::Null);
            (before != after).then(|| Change { key: key.clone(), old: before, new: after })
        })
        .collect()
}

/// Why a node running with the timing `running` must restart for `config` to take full
/// effect: the one rule behind both the `restart` list of an apply and each node's own
/// `pending_restart` in its status, so the two always agree (issue 14: an apply said
/// "must restart" that no node then reported, and `--pending-only` restarted nothing).
///
/// Only the detection timing needs a restart: openraft fixes its timeouts when a node
/// starts. Everything else, roles and priorities included, is read live from the applied
/// configuration (a witness refuses client writes and hands over from the moment the
/// change is applied). A future setting that needs a restart must be added here, and the
/// node must compare it with what it started with.
pub fn restart_reasons(running: &Timing, config: &HaConfig) -> Vec<String> {
    let wanted = config.timing();
    if wanted == *running {
        return Vec::new();
    }
    vec![format!(
        "failure detection changed (a ping every {} ms x {} -> {}); Raft's timeouts are set when a node starts",
        running.ping_interval_ms,
        running.failed_pings,
        config.detection().describe()
    )]
}

/// Which nodes must restart when `new` replaces `old`: those whose running timing (the
/// old configuration's) differs, by [`restart_reasons`]. Members are those given, or the
/// configured nodes if none are.
fn restarts(old: &HaConfig, new: &HaConfig, members: &[NodeAddresses]) -> Vec<Restart> {
    let ids: BTreeSet<u64> = if members.is_empty() {
        old.nodes.keys().chain(new.nodes.keys()).copied().collect()
    } else {
        members.iter().map(|member| member.id).collect()
    };
    let reasons = restart_reasons(&old.timing(), new);
    if reasons.is_empty() {
        return Vec::new();
    }
    ids.into_iter().map(|node_id| Restart { node_id, reasons: reasons.clone() }).collect()
}

/// Every key a draft may address, with one node entry standing for all.
fn template() -> Value {
    let mut config = HaConfig::default();
    config.nodes.insert(1, NodeHaConfig::default());
    to_json(&config)
}

/// Checks a dotted key against the template; returns its segments.
fn check_key(key: &str, template: &Value) -> Result<Vec<String>, String> {
    let segments: Vec<String> = key.split('.').map(str::to_string).collect();
    let mut cursor = template;
    for (index, segment) in segments.iter().enumerate() {
        let Value::Object(map) = cursor else {
            return Err(format!("`{}` has no sub-keys", segments[..index].join(".")));
        };
        let lookup = if index == 1 && segments[0] == "nodes" {
            let canonical = segment.parse::<u64>().ok().filter(|id| id.to_string() == *segment);
            if canonical.is_none() {
                return Err(format!("`{segment}` is not a node id; write nodes.<id>, such as nodes.2.priority"));
            }
            "1"
        } else {
            segment.as_str()
        };
        cursor = map.get(lookup).ok_or_else(|| {
            let known = join(map.keys());
            if index == 0 {
                format!("no such key; the keys are {known}")
            } else {
                format!("no such key under `{}`; its keys are {known}", segments[..index].join("."))
            }
        })?;
    }
    Ok(segments)
}

fn apply_edit(root: &mut Value, path: &[String], edit: &Edit) {
    let Some((last, parents)) = path.split_last() else { return };
    match edit {
        Edit::Unset | Edit::Set(Value::Null) => {
            let mut cursor = root;
            for segment in parents {
                match cursor.get_mut(segment) {
                    Some(next) => cursor = next,
                    None => return,
                }
            }
            if let Value::Object(map) = cursor {
                map.remove(last);
            }
        }
        Edit::Set(value) => {
            let mut cursor = root;
            for segment in parents {
                cursor = object(cursor).entry(segment.clone()).or_insert_with(|| Value::Object(Map::new()));
            }
            object(cursor).insert(last.clone(), value.clone());
        }
    }
}

/// The value as an object, replacing a `null` (an unset optional section) by `{}`.
fn object(value: &mut Value) -> &mut Map<String, Value> {
    if !value.is_object() {
        *value = Value::Object(Map::new());
    }
    match value {
        Value::Object(map) => map,
        _ => unreachable!("just made an object"),
    }
}

/// What the key at `path` takes, in words, for a value of the wrong type: never a Rust
/// type name (issue 14: "expected u64", "expected struct NodeHaConfig").
fn expected_type(path: &[String], template: &Value) -> String {
    let last = path.last().map(String::as_str).unwrap_or_default();
    let mut cursor = template;
    for (index, segment) in path.iter().enumerate() {
        let lookup = if index == 1 && path[0] == "nodes" { "1" } else { segment.as_str() };
        cursor = cursor.get(lookup).unwrap_or(&Value::Null);
    }
    let what = match (last, cursor) {
        ("profile", _) => format!("one of {}", join(Profile::ALL.iter().map(|profile| profile.name()))),
        ("role", _) => "data or witness".to_string(),
        ("ping_interval_ms" | "failed_pings" | "priority", _) | (_, Value::Number(_)) => {
            "a whole number (0 or more)".to_string()
        }
        (_, Value::Bool(_)) => "true or false".to_string(),
        (_, Value::Array(_)) => "a list of text, such as [\"10.0.0.1\", \"gw.example.com\"]".to_string(),
        (_, Value::Object(map)) => format!("an object with the keys {}", join(map.keys())),
        _ => "text (in quotes in JSON)".to_string(),
    };
    format!("`{}` takes {what}", path.join("."))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Three members: node 1 and 2 data, node 3 (by address) a would-be witness.
    fn members() -> Vec<NodeAddresses> {
        vec![
            NodeAddresses {
                id: 1,
                addresses: vec!["10.0.0.1".into(), "haven-1.example.com".into(), "10.0.0.11:7001".into()],
                voter: true,
            },
            NodeAddresses { id: 2, addresses: vec!["10.0.0.2:7101".into(), "haven-2".into()], voter: true },
            NodeAddresses { id: 3, addresses: vec!["[2001:db8::3]:7101".into(), "haven-3".into()], voter: true },
        ]
    }

    fn with_targets(node: u64, targets: &[&str]) -> HaConfig {
        let mut config = HaConfig::default();
        config.nodes.insert(
            node,
            NodeHaConfig { ping_targets: targets.iter().map(|t| t.to_string()).collect(), ..Default::default() },
        );
        config
    }

    /// The defaults are valid and are seed 002's (file sync 5 s / 1000 changes) and the
    /// issue's (fast profile, failback off).
    #[test]
    fn defaults_are_valid_and_match_the_seed() {
        let config = HaConfig::default();
        assert_eq!(config.validate(&members()), Ok(()));
        assert_eq!(config.validate(&[]), Ok(()));
        assert_eq!((config.file_sync_interval_s, config.file_sync_change_count), (5, 1000));
        assert!(!config.failback);
        assert_eq!(config.timing(), Profile::Fast.timing());
        assert_eq!(config.detection().profile, Some(Profile::Fast));
        assert_eq!(config.node(1), NodeSettings { role: NodeRole::Data, priority: 100, ping_targets: vec![] });
        let policy = config.failback_policy();
        assert_eq!((policy.failback, policy.stabilisation_delay_ms, policy.anti_flap_ms), (false, 60_000, 300_000));
    }

    /// The configuration reads from TOML; unknown keys and wrong types are named.
    #[test]
    fn parses_toml() {
        let text = r#"
            profile = "lan"
            failback = true
            file_sync_interval_s = 10
            hook_script = "/etc/haven/hook.sh"
            alert_email = "ops@example.com"

            [smtp]
            host = "mail.example.com"
            from = "haven@example.com"

            [nodes.1]
            priority = 200
            ping_targets = ["10.0.0.254", "gw.example.com"]

            [nodes.3]
            role = "witness"
        "#;
        let config = HaConfig::parse_toml(text).unwrap();
        assert_eq!(config.validate(&members()), Ok(()));
        assert_eq!(config.timing(), Profile::Lan.timing());
        assert_eq!(config.node(1).priority, 200);
        assert_eq!(u64::from(config.node(2).priority), PRIORITY_DEFAULT);
        assert_eq!(config.node(3), NodeSettings { role: NodeRole::Witness, priority: 0, ping_targets: vec![] });
        assert_eq!(config.smtp.port, SMTP_PORT_DEFAULT);
        let written = toml::to_string(&config).unwrap();
        assert_eq!(HaConfig::parse_toml(&written).unwrap(), config, "round trip through TOML:\n{written}");
        let error = HaConfig::parse_toml("failback = true\nfailbak = false\n").unwrap_err().to_string();
        assert!(error.contains("failbak") && error.contains("line 2"), "{error}");
        let error = HaConfig::parse_toml("profile = \"turbo\"\n").unwrap_err().to_string();
        assert!(error.contains("turbo"), "{error}");
    }

    /// Every rule: a configuration that breaks exactly that rule gets exactly one error,
    /// naming the key and the kind of rule (seed 002's table and the issue's rules).
    #[test]
    fn every_rule() {
        type Case = (&'static str, HaConfig, &'static str, RuleKind);
        let base = HaConfig::default;
        let mut cases: Vec<Case> = Vec::new();
        let mut add = |name, config, key, kind| cases.push((name, config, key, kind));

        // Failure detection.
        add(
            "profile and ping interval",
            HaConfig { profile: Some(Profile::Wan), ping_interval_ms: Some(100), ..base() },
            "ping_interval_ms",
            RuleKind::Contradiction,
        );
        add(
            "profile and failed pings",
            HaConfig { profile: Some(Profile::Seed), failed_pings: Some(5), ..base() },
            "failed_pings",
            RuleKind::Contradiction,
        );
        add(
            "ping interval too short",
            HaConfig { ping_interval_ms: Some(9), ..base() },
            "ping_interval_ms",
            RuleKind::OutOfRange,
        );
        add(
            "ping interval too long",
            HaConfig { ping_interval_ms: Some(60_001), ..base() },
            "ping_interval_ms",
            RuleKind::OutOfRange,
        );
        add(
            "failed pings 1 (seed: 2-20)",
            HaConfig { failed_pings: Some(1), ..base() },
            "failed_pings",
            RuleKind::OutOfRange,
        );
        add(
            "failed pings 21 (seed: 2-20)",
            HaConfig { failed_pings: Some(21), ..base() },
            "failed_pings",
            RuleKind::OutOfRange,
        );
        // Failback.
        add(
            "stabilisation 0",
            HaConfig { stabilisation_delay_s: 0, ..base() },
            "stabilisation_delay_s",
            RuleKind::OutOfRange,
        );
        add(
            "stabilisation over a day",
            HaConfig { stabilisation_delay_s: 86_401, ..base() },
            "stabilisation_delay_s",
            RuleKind::OutOfRange,
        );
        add(
            "anti-flap over a day",
            HaConfig { anti_flap_delay_s: 86_401, ..base() },
            "anti_flap_delay_s",
            RuleKind::OutOfRange,
        );
        add(
            "failback faster than detection (seed profile, 60 s)",
            HaConfig { profile: Some(Profile::Seed), failback: true, ..base() },
            "stabilisation_delay_s",
            RuleKind::Contradiction,
        );
        // File sync (seed 002: 5-30 s, 1000 changes).
        add(
            "file sync 4 s",
            HaConfig { file_sync_interval_s: 4, ..base() },
            "file_sync_interval_s",
            RuleKind::OutOfRange,
        );
        add(
            "file sync 31 s",
            HaConfig { file_sync_interval_s: 31, ..base() },
            "file_sync_interval_s",
            RuleKind::OutOfRange,
        );
        add(
            "change count 0",
            HaConfig { file_sync_change_count: 0, ..base() },
            "file_sync_change_count",
            RuleKind::OutOfRange,
        );
        add(
            "change count 10001",
            HaConfig { file_sync_change_count: 10_001, ..base() },
            "file_sync_change_count",
            RuleKind::OutOfRange,
        );
        // Hook script.
        add(
            "hook script relative",
            HaConfig { hook_script: Some("hook.sh".into()), ..base() },
            "hook_script",
            RuleKind::Invalid,
        );
        add("hook timeout 0", HaConfig { hook_timeout_s: 0, ..base() }, "hook_timeout_s", RuleKind::OutOfRange);
        add("hook timeout 601", HaConfig { hook_timeout_s: 601, ..base() }, "hook_timeout_s", RuleKind::OutOfRange);
        // Alerts and SMTP.
        let smtp = SmtpConfig {
            host: Some("mail.example.com".into()),
            from: Some("haven@example.com".into()),
            ..Default::default()
        };
        let alerting = || HaConfig { alert_email: Some("ops@example.com".into()), smtp: smtp.clone(), ..base() };
        add(
            "alert e-mail syntax",
            HaConfig { alert_email: Some("ops at example".into()), ..alerting() },
            "alert_email",
            RuleKind::Invalid,
        );
        add(
            "alert e-mail without smtp.host",
            HaConfig { smtp: SmtpConfig { host: None, ..smtp.clone() }, ..alerting() },
            "smtp.host",
            RuleKind::Missing,
        );
        add(
            "alert e-mail without smtp.from",
            HaConfig { smtp: SmtpConfig { from: None, ..smtp.clone() }, ..alerting() },
            "smtp.from",
            RuleKind::Missing,
        );
        add(
            "smtp host syntax",
            HaConfig { smtp: SmtpConfig { host: Some("mail server".into()), ..smtp.clone() }, ..base() },
            "smtp.host",
            RuleKind::Invalid,
        );
        add(
            "smtp port 0",
            HaConfig { smtp: SmtpConfig { port: 0, ..smtp.clone() }, ..base() },
            "smtp.port",
            RuleKind::OutOfRange,
        );
        add(
            "smtp port 65536",
            HaConfig { smtp: SmtpConfig { port: 65_536, ..smtp.clone() }, ..base() },
            "smtp.port",
            RuleKind::OutOfRange,
        );
        add(
            "smtp from syntax",
            HaConfig { smtp: SmtpConfig { from: Some("haven".into()), ..smtp.clone() }, ..base() },
            "smtp.from",
            RuleKind::Invalid,
        );
        add(
            "smtp user without password file",
            HaConfig { smtp: SmtpConfig { username: Some("u".into()), ..smtp.clone() }, ..base() },
            "smtp.username",
            RuleKind::Contradiction,
        );
        add(
            "smtp password file without user",
            HaConfig { smtp: SmtpConfig { password_file: Some("/etc/haven/smtp".into()), ..smtp.clone() }, ..base() },
            "smtp.password_file",
            RuleKind::Contradiction,
        );
        add(
            "smtp password file relative",
            HaConfig {
                smtp: SmtpConfig { username: Some("u".into()), password_file: Some("smtp.pw".into()), ..smtp.clone() },
                ..base()
            },
            "smtp.password_file",
            RuleKind::Invalid,
        );
        add(
            "smtp password over plaintext",
            HaConfig {
                smtp: SmtpConfig {
                    username: Some("u".into()),
                    password_file: Some("/etc/haven/smtp.pw".into()),
                    starttls: false,
                    ..smtp.clone()
                },
                ..base()
            },
            "smtp.starttls",
            RuleKind::Contradiction,
        );
        // Nodes, roles and priorities.
        let node = |role, priority| NodeHaConfig { role, priority, ping_targets: vec![] };
        let nodes = |entries: Vec<(u64, NodeHaConfig)>| HaConfig { nodes: entries.into_iter().collect(), ..base() };
        add("entry for a non-member", nodes(vec![(9, node(NodeRole::Data, None))]), "nodes.9", RuleKind::Invalid);
        add("node id 0", nodes(vec![(0, node(NodeRole::Data, None))]), "nodes.0", RuleKind::OutOfRange);
        add(
            "priority above 1000",
            nodes(vec![(2, node(NodeRole::Data, Some(1_001)))]),
            "nodes.2.priority",
            RuleKind::OutOfRange,
        );
        add(
            "witness with a priority",
            nodes(vec![(3, node(NodeRole::Witness, Some(5)))]),
            "nodes.3.priority",
            RuleKind::Contradiction,
        );
        add(
            "nobody can be primary",
            nodes(vec![
                (1, node(NodeRole::Data, Some(0))),
                (2, node(NodeRole::Data, Some(0))),
                (3, node(NodeRole::Witness, None)),
            ]),
            "nodes",
            RuleKind::Contradiction,
        );
        // Issue 14: a topology whose promised tolerance is false.
        add(
            "one data node and two witnesses",
            nodes(vec![(2, node(NodeRole::Witness, None)), (3, node(NodeRole::Witness, None))]),
            "nodes",
            RuleKind::Contradiction,
        );
        add(
            "three data nodes, two of them never primary",
            nodes(vec![(2, node(NodeRole::Data, Some(0))), (3, node(NodeRole::Data, Some(0)))]),
            "nodes",
            RuleKind::Contradiction,
        );
        // Ping targets (seed 002: 0-3, unique, IP or FQDN, not own or peer addresses).
        let targets = "nodes.1.ping_targets";
        add(
            "four targets",
            with_targets(1, &["10.9.0.1", "10.9.0.2", "10.9.0.3", "10.9.0.4"]),
            targets,
            RuleKind::OutOfRange,
        );
        add("duplicate IP", with_targets(1, &["10.9.9.9", "10.9.9.9"]), targets, RuleKind::Duplicate);
        add(
            "duplicate name, case and trailing dot",
            with_targets(1, &["GW.example.com", "gw.example.com."]),
            targets,
            RuleKind::Duplicate,
        );
        add(
            "duplicate IPv4-mapped IPv6",
            with_targets(1, &["::ffff:10.9.9.9", "10.9.9.9"]),
            targets,
            RuleKind::Duplicate,
        );
        add("invalid IPv4", with_targets(1, &["10.0.0.256"]), targets, RuleKind::Invalid);
        add("invalid name", with_targets(1, &["gw_1.example.com"]), targets, RuleKind::Invalid);
        add("empty target", with_targets(1, &[""]), targets, RuleKind::Invalid);
        add("a URL is not a host", with_targets(1, &["http://gw"]), targets, RuleKind::Invalid);
        add("own IP", with_targets(1, &["10.0.0.1"]), targets, RuleKind::Invalid);
        add("own IP written with a port elsewhere", with_targets(1, &["10.0.0.11"]), targets, RuleKind::Invalid);
        add("own host name, other case", with_targets(1, &["HAVEN-1.example.com"]), targets, RuleKind::Invalid);
        add("peer IP", with_targets(1, &["10.0.0.2"]), targets, RuleKind::Invalid);
        add("peer host name", with_targets(1, &["haven-2"]), targets, RuleKind::Invalid);
        add("peer IPv6", with_targets(1, &["2001:db8::3"]), targets, RuleKind::Invalid);
        add("loopback", with_targets(1, &["127.0.0.1"]), targets, RuleKind::Invalid);
        add("localhost", with_targets(1, &["localhost"]), targets, RuleKind::Invalid);
        add("unspecified", with_targets(1, &["0.0.0.0"]), targets, RuleKind::Invalid);

        for (name, config, key, kind) in cases {
            let errors = config.validate(&members()).expect_err(name);
            assert_eq!(errors.len(), 1, "{name}: {errors:#?}");
            assert_eq!((errors[0].key.as_str(), errors[0].kind), (key, kind), "{name}: {errors:#?}");
            let line = errors[0].to_string();
            assert!(line.starts_with(&format!("`{key}` = ")) && !line.contains('\n'), "{name}: {line}");
        }
    }

    /// The edges of every range, and the good forms of every value, pass.
    #[test]
    fn valid_edges_pass() {
        let base = HaConfig::default;
        let alerting = HaConfig {
            alert_email: Some("ops@example.com".into()),
            smtp: SmtpConfig {
                host: Some("10.0.0.25".into()),
                port: 65_535,
                from: Some("haven@example.com".into()),
                username: Some("haven".into()),
                password_file: Some("/etc/haven/smtp.pw".into()),
                starttls: true,
            },
            ..base()
        };
        let witness = NodeHaConfig { role: NodeRole::Witness, priority: Some(0), ping_targets: vec![] };
        let mut good = vec![
            HaConfig { failed_pings: Some(2), ping_interval_ms: Some(10), ..base() },
            HaConfig { failed_pings: Some(20), ping_interval_ms: Some(60_000), ..base() },
            HaConfig { file_sync_interval_s: 5, file_sync_change_count: 1, ..base() },
            HaConfig { file_sync_interval_s: 30, file_sync_change_count: 10_000, ..base() },
            HaConfig { profile: Some(Profile::Seed), failback: true, stabilisation_delay_s: 510, ..base() },
            HaConfig { failback: true, stabilisation_delay_s: 1, anti_flap_delay_s: 0, ..base() },
            HaConfig { hook_script: Some("/opt/haven/hooks/on event.sh".into()), hook_timeout_s: 600, ..base() },
            HaConfig { nodes: [(3, witness)].into_iter().collect(), ..base() },
            with_targets(1, &["10.0.0.254", "gw.example.com", "2001:db8::fe"]),
            {
                // Uniqueness is per node: two nodes may watch the same gateway.
                let mut shared = with_targets(1, &["10.0.0.254"]);
                shared.nodes.insert(2, NodeHaConfig { ping_targets: vec!["10.0.0.254".into()], ..Default::default() });
                shared
            },
            alerting,
        ];
        for profile in Profile::ALL {
            good.push(HaConfig { profile: Some(profile), ..base() });
        }
        for pings in FAILED_PINGS_MIN..=FAILED_PINGS_MAX {
            good.push(HaConfig { failed_pings: Some(pings), ..base() });
        }
        for config in good {
            assert_eq!(config.validate(&members()), Ok(()), "{config:#?}");
        }
    }

    /// Validation names every broken rule at once, in a stable order.
    #[test]
    fn names_every_broken_rule_at_once() {
        let mut config = HaConfig {
            profile: Some(Profile::Wan),
            failed_pings: Some(30),
            file_sync_interval_s: 60,
            hook_script: Some("hook.sh".into()),
            alert_email: Some("ops".into()),
            ..HaConfig::default()
        };
        config.nodes.insert(
            1,
            NodeHaConfig {
                ping_targets: vec!["10.0.0.2".into(), "10.0.0.2".into(), "a..b".into(), "x".into()],
                ..Default::default()
            },
        );
        config.nodes.insert(3, NodeHaConfig { role: NodeRole::Witness, priority: Some(7), ..Default::default() });
        let errors = config.validate(&members()).unwrap_err();
        let found: Vec<(&str, RuleKind)> = errors.iter().map(|error| (error.key.as_str(), error.kind)).collect();
        assert_eq!(
            found,
            vec![
                ("failed_pings", RuleKind::Contradiction),
                ("failed_pings", RuleKind::OutOfRange),
                ("file_sync_interval_s", RuleKind::OutOfRange),
                ("hook_script", RuleKind::Invalid),
                ("alert_email", RuleKind::Invalid),
                ("smtp.host", RuleKind::Missing),
                ("smtp.from", RuleKind::Missing),
                ("nodes.1.ping_targets", RuleKind::OutOfRange),
                ("nodes.1.ping_targets", RuleKind::Invalid),
                ("nodes.1.ping_targets", RuleKind::Duplicate),
                ("nodes.1.ping_targets", RuleKind::Invalid),
                ("nodes.3.priority", RuleKind::Contradiction),
            ],
            "{errors:#?}"
        );
        let peer = &errors[8];
        assert_eq!(peer.value, "\"10.0.0.2\"");
        assert!(peer.rule.contains("node 2's address"), "{peer}");
    }

    /// Without the member list, the rules that need it are skipped, the others kept.
    #[test]
    fn without_members_member_rules_are_skipped() {
        let mut config = with_targets(9, &["10.0.0.2", "127.0.0.1"]);
        config.nodes.insert(1, NodeHaConfig { priority: Some(0), ..Default::default() });
        let errors = config.validate(&[]).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert!(errors[0].rule.contains("loopback"));
    }

    fn current(config: HaConfig) -> Versioned<HaConfig> {
        Versioned { version: 7, value: config }
    }

    /// A draft applies: values set, defaults restored by unset, the diff and no restart
    /// for live settings.
    #[test]
    fn applies_a_draft() {
        let before = HaConfig { hook_script: Some("/etc/haven/hook.sh".into()), ..HaConfig::default() };
        let draft = Draft::new(7)
            .set("failback", true)
            .set("nodes.2.priority", 300)
            .set("nodes.1.ping_targets", json!(["10.0.0.254"]))
            .unset("hook_script");
        let applied = apply_draft(&current(before), &draft, &members()).unwrap();
        assert!(applied.config.failback);
        assert_eq!(applied.config.node(2).priority, 300);
        assert_eq!(applied.config.node(1).ping_targets, vec!["10.0.0.254".to_string()]);
        assert_eq!(applied.config.hook_script, None);
        let changes: Vec<String> = applied.changes.iter().map(Change::to_string).collect();
        assert_eq!(
            changes,
            [
                "failback: false -> true",
                "hook_script: \"/etc/haven/hook.sh\" -> (unset)",
                "nodes.1.ping_targets: [] -> [\"10.0.0.254\"]",
                "nodes.2.priority: 100 -> 300",
            ]
        );
        assert!(applied.restart.is_empty(), "{:?}", applied.restart);
    }

    /// Seed 002's workflow: a draft made from an old version is refused, and applying
    /// nothing new says "no configuration changes to apply".
    #[test]
    fn stale_and_empty_drafts() {
        let now = current(HaConfig::default());
        let stale = apply_draft(&now, &Draft::new(6).set("failback", true), &members()).unwrap_err();
        assert_eq!(stale, ApplyError::Stale { base: 6, current: 7 });
        assert!(stale.to_string().contains("version 6") && stale.to_string().contains("redo the draft"));
        assert_eq!(apply_draft(&now, &Draft::new(7), &members()), Err(ApplyError::NothingToApply));
        let same = Draft::new(7).set("failback", false).set("file_sync_interval_s", 5).unset("hook_script");
        assert_eq!(apply_draft(&now, &same, &members()), Err(ApplyError::NothingToApply));
        let default_entry = Draft::new(7).set("nodes.2", json!({"role": "data"}));
        assert_eq!(apply_draft(&now, &default_entry, &members()), Err(ApplyError::NothingToApply));
        // Applying the same draft again after it went in (version bumped): nothing new.
        let draft = Draft::new(7).set("failback", true);
        let applied = apply_draft(&now, &draft, &members()).unwrap();
        let next = Versioned { version: 8, value: applied.config };
        assert_eq!(
            apply_draft(&next, &Draft { base_version: 8, ..draft }, &members()),
            Err(ApplyError::NothingToApply)
        );
        assert_eq!(ApplyError::NothingToApply.to_string(), "no configuration changes to apply");
    }

    /// Unknown keys, wrong types and broken rules in one draft are all named together.
    #[test]
    fn draft_errors_are_all_named() {
        let draft = Draft::new(7)
            .set("failbak", true)
            .set("failback.now", true)
            .set("nodes.two.priority", 1)
            .set("nodes.02.priority", 1)
            .set("nodes.2.prio", 1)
            .set("smtp.port", "twenty-five")
            .set("profile", "turbo")
            .set("file_sync_interval_s", 3)
            .set("nodes.1.ping_targets", json!(["10.0.0.1"]));
        let Err(ApplyError::Invalid(errors)) = apply_draft(&current(HaConfig::default()), &draft, &members()) else {
            panic!("should be invalid");
        };
        let found: Vec<(&str, RuleKind)> = errors.iter().map(|error| (error.key.as_str(), error.kind)).collect();
        assert_eq!(
            found,
            vec![
                ("failback.now", RuleKind::UnknownKey),
                ("failbak", RuleKind::UnknownKey),
                ("nodes.02.priority", RuleKind::UnknownKey),
                ("nodes.2.prio", RuleKind::UnknownKey),
                ("nodes.two.priority", RuleKind::UnknownKey),
                ("profile", RuleKind::WrongType),
                ("smtp.port", RuleKind::WrongType),
                ("file_sync_interval_s", RuleKind::OutOfRange),
                ("nodes.1.ping_targets", RuleKind::Invalid),
            ],
            "{errors:#?}"
        );
        assert!(errors[0].rule.contains("`failback` has no sub-keys"), "{}", errors[0]);
        assert!(errors[1].rule.contains("failback, failed_pings"), "lists the keys: {}", errors[1]);
        assert!(errors[2].rule.contains("not a node id"), "{}", errors[2]);
        assert_eq!(errors[5].rule, "`profile` takes one of fast, lan, wan, seed", "{}", errors[5]);
        assert_eq!(errors[6].rule, "`smtp.port` takes a whole number (0 or more)", "{}", errors[6]);
        let text = ApplyError::Invalid(errors).to_string();
        assert!(text.starts_with("the draft breaks 9 rule(s): `failback.now`"), "{text}");
    }

    /// Which nodes must restart: all for a detection change; none for a role change, which
    /// takes effect live (issue 14: an apply named node 3 as "must restart" for its new
    /// role, and no node ever reported that restart as pending).
    #[test]
    fn restarts_are_named() {
        let draft = Draft::new(7).set("profile", "wan").set("nodes.3.role", "witness");
        let applied = apply_draft(&current(HaConfig::default()), &draft, &members()).unwrap();
        let restarted: Vec<(u64, usize)> = applied.restart.iter().map(|r| (r.node_id, r.reasons.len())).collect();
        assert_eq!(restarted, vec![(1, 1), (2, 1), (3, 1)]);
        assert!(applied.restart[0].reasons[0].contains("a ping every 50 ms x 4"), "{:?}", applied.restart);
        assert!(applied.restart[0].reasons[0].contains("profile wan"), "{:?}", applied.restart);
        let role_only = Draft::new(7).set("nodes.3.role", "witness");
        let applied = apply_draft(&current(HaConfig::default()), &role_only, &members()).unwrap();
        assert!(applied.restart.is_empty(), "a role change needs no restart: {:?}", applied.restart);
        // The apply's list and each node's own pending restart come from one rule.
        for (set, value) in [("profile", json!("lan")), ("failed_pings", json!(6)), ("failback", json!(true))] {
            let draft = Draft::new(7).set(set, value.clone());
            let applied = apply_draft(&current(HaConfig::default()), &draft, &members()).unwrap();
            let pending: Vec<u64> = members()
                .iter()
                .filter(|_| !restart_reasons(&HaConfig::default().timing(), &applied.config).is_empty())
                .map(|member| member.id)
                .collect();
            let listed: Vec<u64> = applied.restart.iter().map(|restart| restart.node_id).collect();
            assert_eq!(listed, pending, "{set} = {value}");
        }
        // A live setting restarts nobody; switching to the same timing by another route neither.
        let same_timing = Draft::new(7).set("ping_interval_ms", 50).set("failed_pings", 4);
        let applied = apply_draft(&current(HaConfig::default()), &same_timing, &members()).unwrap();
        assert!(applied.restart.is_empty());
    }

    /// Wrong types are named in the operator's words, and a new node entry's untouched
    /// fields are not changes (issue 14: `expected struct NodeHaConfig`, `null -> []`).
    #[test]
    fn wrong_types_and_diffs_read_as_words() {
        let draft = Draft::new(7).set("nodes.2", 5).set("nodes.3.role", "primary").set("failback", "yes");
        let Err(ApplyError::Invalid(errors)) = apply_draft(&current(HaConfig::default()), &draft, &members()) else {
            panic!("should be invalid");
        };
        let rules: Vec<&str> = errors.iter().map(|error| error.rule.as_str()).collect();
        assert_eq!(
            rules,
            [
                "`failback` takes true or false",
                "`nodes.2` takes an object with the keys ping_targets, priority, role",
                "`nodes.3.role` takes data or witness",
            ]
        );
        for error in &errors {
            for internal in ["expected", "struct", "variant", "u64", "invalid type"] {
                assert!(!error.rule.contains(internal), "{internal} in {}", error.rule);
            }
        }
        let witness = Draft::new(7).set("nodes.3.role", "witness");
        let applied = apply_draft(&current(HaConfig::default()), &witness, &members()).unwrap();
        let changes: Vec<String> = applied.changes.iter().map(Change::to_string).collect();
        assert_eq!(changes, ["nodes.3.priority: 100 -> 0", "nodes.3.role: \"data\" -> \"witness\""]);
        let profile = Draft::new(7).set("profile", "lan").set("hook_script", "/etc/haven/hook");
        let applied = apply_draft(&current(HaConfig::default()), &profile, &members()).unwrap();
        let changes: Vec<String> = applied.changes.iter().map(Change::to_string).collect();
        assert_eq!(
            changes,
            [
                "failed_pings: 4 -> 10",
                "hook_script: (unset) -> \"/etc/haven/hook\"",
                "ping_interval_ms: 50 -> 100",
                "profile: (unset) -> \"lan\""
            ]
        );
    }

    /// The tolerance rule counts voters only, and says in words what would be lost.
    #[test]
    fn tolerance_must_be_true() {
        let witnesses = Draft::new(7).set("nodes.2.role", "witness").set("nodes.3.role", "witness");
        let Err(ApplyError::Invalid(errors)) = apply_draft(&current(HaConfig::default()), &witnesses, &members())
        else {
            panic!("one data node with two witnesses must be refused");
        };
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert!(
            errors[0]
                .rule
                .contains("3 voters promise to survive 1 voter(s) down, but only 1 of them (1) may be the primary"),
            "{}",
            errors[0].rule
        );
        // One witness with two data nodes keeps its promise.
        let pair = Draft::new(7).set("nodes.3.role", "witness");
        assert!(apply_draft(&current(HaConfig::default()), &pair, &members()).is_ok());
        // With node 3 a learner, the voters are nodes 1 and 2: a witness at node 2 leaves
        // two voters that survive nothing anyway, which promises nothing false.
        let mut learner = members();
        learner[2].voter = false;
        let one_witness = Draft::new(7).set("nodes.2.role", "witness");
        assert!(apply_draft(&current(HaConfig::default()), &one_witness, &learner).is_ok());
    }

    #[test]
    fn too_many_changes_are_refused() {
        let mut draft = Draft::new(7);
        for index in 0..=DRAFT_CHANGES_MAX {
            draft = draft.set(&format!("nodes.{}.priority", index + 1), 1);
        }
        let Err(ApplyError::Invalid(errors)) = apply_draft(&current(HaConfig::default()), &draft, &[]) else {
            panic!("should be refused");
        };
        assert_eq!(errors[0].key, "draft");
    }

    /// A draft travels as JSON: `null` unsets a key.
    #[test]
    fn drafts_are_json() {
        let draft: Draft =
            serde_json::from_str(r#"{"base_version": 3, "changes": {"failback": true, "hook_script": null}}"#).unwrap();
        assert_eq!(draft, Draft::new(3).set("failback", true).unset("hook_script"));
        assert_eq!(serde_json::to_value(&draft).unwrap()["changes"]["hook_script"], Value::Null);
        assert_eq!(value_from_text("true"), json!(true));
        assert_eq!(value_from_text("50"), json!(50));
        assert_eq!(value_from_text("[\"10.0.0.1\"]"), json!(["10.0.0.1"]));
        assert_eq!(value_from_text("10.0.0.1"), json!("10.0.0.1"));
        assert_eq!(value_from_text("fast"), json!("fast"));
    }

    /// The diff is key by key; an entry that restates the defaults is no change.
    #[test]
    fn diff_is_key_by_key() {
        let old = HaConfig::default();
        let mut new = HaConfig { smtp: SmtpConfig { port: 25, ..Default::default() }, ..HaConfig::default() };
        new.nodes.insert(2, NodeHaConfig::default());
        assert_eq!(diff(&old, &new), vec![Change { key: "smtp.port".into(), old: json!(587), new: json!(25) }]);
        assert!(diff(&old, &old).is_empty());
        let flat = HaConfig::default().flatten();
        assert_eq!(flat["smtp.starttls"], json!(true));
        assert_eq!(flat["file_sync_interval_s"], json!(5));
    }
}
