//! A role's definition (seed 004's role with its ordered server list, issue 17's
//! commands and check) and its validation, every broken rule named at once in the words
//! of the HA configuration's validation (`ha::config`).
//!
//! ```text
//!   RoleDefinition { name, servers [n2, n1, n3], start, stop, check?, check_interval_ms,
//!                    check_failures, failback, follow_primary }
//!        │ validate(members)
//!        ▼
//!   Ok | [ `servers` = 9: node 9 is not a member ..., `start` = "bin/x": must be an
//!          absolute path ..., `check_interval_ms` = 5: out of range; allowed ... ]
//! ```
//!
//! Syntax only: whether a program exists and is executable is checked on the node that
//! runs it, when it runs it (the core has no filesystem), and reported in the role's
//! state and events.

use serde::Deserialize;
use serde::Serialize;

use crate::events::ARG_BYTES_MAX;
use crate::ha::config::join;
use crate::ha::config::json_text;
use crate::ha::config::Errors;
use crate::ha::config::HaConfigError;
use crate::ha::config::RuleKind;
use crate::ha::syntax::check_absolute_path;
use crate::ha::NodeRole;

/// Longest role name. The name travels in `HAVEN_ROLE`, in URLs (`/v1/roles/NAME`) and
/// in file names on every node, so it is a DNS-label-like word: 63 bytes of `a-z`, `0-9`
/// and `-`.
pub const ROLE_NAME_BYTES_MAX: usize = 63;

/// Roles in a cluster. Each is a supervised process tree and a check timer on its holder
/// and a lease renewed every second; a management server and its helpers are a handful,
/// 64 bounds the work of every placement round and the size of the replicated table.
pub const ROLES_MAX: usize = 64;

/// Servers in one role's list. Every one must be a member, and a cluster has at most 7
/// voters; 32 leaves room for learners while keeping a definition small.
pub const ROLE_SERVERS_MAX: usize = 32;

/// Arguments of one command. Commands are programs with a few flags; 32 bounds the
/// definition (each argument is at most [`ARG_BYTES_MAX`]).
pub const COMMAND_ARGS_MAX: usize = 32;

/// How often the check command runs on the holder. At most every second (a check is a
/// process start; faster would load the holder and turn a slow check into a failure);
/// at least once an hour. Ten seconds finds a dead service well before an operator would.
pub const CHECK_INTERVAL_MS_DEFAULT: u64 = 10_000;
pub const CHECK_INTERVAL_MS_MIN: u64 = 1_000;
pub const CHECK_INTERVAL_MS_MAX: u64 = 3_600_000;

/// Consecutive check failures that move the role to the next server. Three: one failure
/// is noise (a slow answer), three in a row is a service that is down. 1-20, seed 002's
/// range for failed pings.
pub const CHECK_FAILURES_DEFAULT: u64 = 3;
pub const CHECK_FAILURES_MIN: u64 = 1;
pub const CHECK_FAILURES_MAX: u64 = 20;

/// Longest a check may run before it counts as failed and is killed: its interval (a
/// check still running when the next is due has failed), and never more than a minute.
pub const CHECK_TIMEOUT_MS_MAX: u64 = 60_000;

/// How long one check may run.
pub fn check_timeout_ms(check_interval_ms: u64) -> u64 {
    check_interval_ms.min(CHECK_TIMEOUT_MS_MAX)
}

/// A program and its arguments, run directly (no shell): each argument is one argv entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandLine {
    /// An absolute path to an executable, on every node that may hold the role.
    pub program: String,
    #[serde(default)]
    pub args: Vec<String>,
}

impl CommandLine {
    pub fn new(program: impl Into<String>, args: &[&str]) -> CommandLine {
        CommandLine { program: program.into(), args: args.iter().map(|arg| arg.to_string()).collect() }
    }
}

/// A role: a service Haven runs on exactly one node at a time (seed 004).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleDefinition {
    pub name: String,
    /// Data nodes in order of preference: the role runs on the first healthy one
    /// (seed 004's server list, "in the order that they are picked if a failover
    /// occurs"). Empty for a follow-primary role.
    #[serde(default)]
    pub servers: Vec<u64>,
    /// Runs the service and keeps running while it does (Haven supervises it).
    pub start: CommandLine,
    /// Asks the service to stop, before Haven signals its processes.
    pub stop: CommandLine,
    /// Exits 0 when the service works; run on the holder every `check_interval_ms`.
    #[serde(default)]
    pub check: Option<CommandLine>,
    #[serde(default = "default_check_interval_ms")]
    pub check_interval_ms: u64,
    #[serde(default = "default_check_failures")]
    pub check_failures: u64,
    /// Seed 004's "force execution on highest priority server": move back to a
    /// higher-listed server once it has been healthy for the stabilisation delay. Off by
    /// default: the role stays where it is (the least disruptive choice).
    #[serde(default)]
    pub failback: bool,
    /// Run on the current primary, whichever data node that is (the management server
    /// that needs the leader's database).
    #[serde(default)]
    pub follow_primary: bool,
}

fn default_check_interval_ms() -> u64 {
    CHECK_INTERVAL_MS_DEFAULT
}

fn default_check_failures() -> u64 {
    CHECK_FAILURES_DEFAULT
}

/// What validation needs to know about a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoleMember {
    pub id: u64,
    pub role: NodeRole,
}

impl RoleDefinition {
    /// A role on `servers` with the default check settings, no check, no failback.
    pub fn new(name: &str, servers: &[u64], start: CommandLine, stop: CommandLine) -> RoleDefinition {
        RoleDefinition {
            name: name.to_string(),
            servers: servers.to_vec(),
            start,
            stop,
            check: None,
            check_interval_ms: CHECK_INTERVAL_MS_DEFAULT,
            check_failures: CHECK_FAILURES_DEFAULT,
            failback: false,
            follow_primary: false,
        }
    }

    /// Where `node` stands in the server list (0 = preferred), if listed.
    pub fn rank_of(&self, node: u64) -> Option<usize> {
        self.servers.iter().position(|&server| server == node)
    }

    /// Checks every rule and names every broken one at once. With `members` empty, the
    /// rules that need them (servers are members, no witness) are skipped: the state
    /// machine re-checks the syntax at apply, the API checks the members before proposing.
    pub fn validate(&self, members: &[RoleMember]) -> Result<(), Vec<HaConfigError>> {
        let mut errors = Errors::default();
        if let Err(why) = check_role_name(&self.name) {
            errors.push("name", json_text(&self.name), RuleKind::Invalid, why);
        }
        self.validate_servers(members, &mut errors);
        check_command("start", &self.start, &mut errors);
        check_command("stop", &self.stop, &mut errors);
        if let Some(check) = &self.check {
            check_command("check", check, &mut errors);
        }
        errors.range(
            "check_interval_ms",
            self.check_interval_ms,
            CHECK_INTERVAL_MS_MIN,
            CHECK_INTERVAL_MS_MAX,
            "milliseconds between checks",
        );
        errors.range(
            "check_failures",
            self.check_failures,
            CHECK_FAILURES_MIN,
            CHECK_FAILURES_MAX,
            "consecutive failures that move the role",
        );
        if self.failback && self.follow_primary {
            errors.push(
                "failback",
                "true",
                RuleKind::Contradiction,
                "a follow-primary role moves with the primary, and the HA configuration's failback decides where the \
                 primary goes; unset failback or follow_primary",
            );
        }
        errors.finish()
    }

    fn validate_servers(&self, members: &[RoleMember], errors: &mut Errors) {
        let value = json_text(&self.servers);
        if self.follow_primary {
            if !self.servers.is_empty() {
                errors.push(
                    "servers",
                    value,
                    RuleKind::Contradiction,
                    "a follow-primary role runs on whichever data node is the primary; leave the server list empty",
                );
            }
            return;
        }
        if self.servers.is_empty() {
            errors.push(
                "servers",
                value.clone(),
                RuleKind::Missing,
                "list at least one data node, in order of preference (or make the role follow the primary)",
            );
        }
        if self.servers.len() > ROLE_SERVERS_MAX {
            errors.push(
                "servers",
                value.clone(),
                RuleKind::OutOfRange,
                format!("at most {ROLE_SERVERS_MAX} servers, {} given", self.servers.len()),
            );
            // Each server is not looked at: the list of errors stays bounded too.
            return;
        }
        for (index, &server) in self.servers.iter().enumerate() {
            if self.servers[..index].contains(&server) {
                errors.push("servers", value.clone(), RuleKind::Duplicate, format!("node {server} is listed twice"));
                continue;
            }
            if members.is_empty() {
                continue;
            }
            match members.iter().find(|member| member.id == server) {
                None => errors.push(
                    "servers",
                    value.clone(),
                    RuleKind::Invalid,
                    format!(
                        "node {server} is not a member of the cluster (members: {})",
                        join(members.iter().map(|member| member.id))
                    ),
                ),
                Some(member) if member.role == NodeRole::Witness => errors.push(
                    "servers",
                    value.clone(),
                    RuleKind::Invalid,
                    format!("node {server} is a witness: witnesses hold no roles; list data nodes only"),
                ),
                Some(_) => {}
            }
        }
    }
}

/// A role name: 1-63 bytes of `a-z`, `0-9` and `-`, starting and ending with a letter or
/// digit (it is used in environment variables, URLs and file names as it is).
pub fn check_role_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty; give the role a name such as mgmt-server".into());
    }
    if name.len() > ROLE_NAME_BYTES_MAX {
        return Err(format!("longer than {ROLE_NAME_BYTES_MAX} bytes"));
    }
    if !name.bytes().all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-') {
        return Err("may hold only a-z, 0-9 and -, such as mgmt-server".into());
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err("must start and end with a letter or a digit".into());
    }
    Ok(())
}

fn check_command(key: &str, command: &CommandLine, errors: &mut Errors) {
    if let Err(why) = check_absolute_path(&command.program) {
        errors.push(
            format!("{key}.program"),
            json_text(&command.program),
            RuleKind::Invalid,
            format!("{why}; give the absolute path of an executable (it is run directly, without a shell)"),
        );
    }
    if command.args.len() > COMMAND_ARGS_MAX {
        errors.push(
            format!("{key}.args"),
            command.args.len().to_string(),
            RuleKind::OutOfRange,
            format!("at most {COMMAND_ARGS_MAX} arguments"),
        );
    }
    for arg in &command.args {
        if arg.len() > ARG_BYTES_MAX {
            errors.push(
                format!("{key}.args"),
                format!("({} bytes)", arg.len()),
                RuleKind::OutOfRange,
                format!("an argument is at most {ARG_BYTES_MAX} bytes"),
            );
        }
        if arg.contains('\0') {
            errors.push(
                format!("{key}.args"),
                json_text(arg),
                RuleKind::Invalid,
                "contains a NUL byte, which cannot travel in argv",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members() -> Vec<RoleMember> {
        vec![
            RoleMember { id: 1, role: NodeRole::Data },
            RoleMember { id: 2, role: NodeRole::Data },
            RoleMember { id: 3, role: NodeRole::Witness },
        ]
    }

    fn role() -> RoleDefinition {
        RoleDefinition::new(
            "mgmt-server",
            &[2, 1],
            CommandLine::new("/opt/mgmt/start", &["--port", "8443"]),
            CommandLine::new("/opt/mgmt/stop", &[]),
        )
    }

    #[test]
    fn a_good_role_passes() {
        assert_eq!(role().validate(&members()), Ok(()));
        let follower = RoleDefinition { servers: vec![], follow_primary: true, ..role() };
        assert_eq!(follower.validate(&members()), Ok(()));
    }

    /// Each broken rule alone: its key, its kind, words of its explanation.
    #[test]
    fn broken_rules_table() {
        type Case = (&'static str, RoleDefinition, &'static str, RuleKind, &'static str);
        let long_arg = "x".repeat(ARG_BYTES_MAX + 1);
        let cases: Vec<Case> = vec![
            ("empty name", RoleDefinition { name: "".into(), ..role() }, "name", RuleKind::Invalid, "empty"),
            ("upper case", RoleDefinition { name: "Mgmt".into(), ..role() }, "name", RuleKind::Invalid, "a-z"),
            ("dash at the end", RoleDefinition { name: "mgmt-".into(), ..role() }, "name", RuleKind::Invalid, "end"),
            ("long name", RoleDefinition { name: "a".repeat(64), ..role() }, "name", RuleKind::Invalid, "63"),
            (
                "unknown node",
                RoleDefinition { servers: vec![2, 9], ..role() },
                "servers",
                RuleKind::Invalid,
                "node 9 is not a member",
            ),
            (
                "witness listed",
                RoleDefinition { servers: vec![3, 1], ..role() },
                "servers",
                RuleKind::Invalid,
                "node 3 is a witness",
            ),
            (
                "empty list",
                RoleDefinition { servers: vec![], ..role() },
                "servers",
                RuleKind::Missing,
                "at least one data node",
            ),
            (
                "listed twice",
                RoleDefinition { servers: vec![1, 2, 1], ..role() },
                "servers",
                RuleKind::Duplicate,
                "node 1 is listed twice",
            ),
            (
                "too many servers",
                RoleDefinition { servers: (1..=ROLE_SERVERS_MAX as u64 + 1).collect(), ..role() },
                "servers",
                RuleKind::OutOfRange,
                "at most 32",
            ),
            (
                "relative start",
                RoleDefinition { start: CommandLine::new("opt/mgmt/start", &[]), ..role() },
                "start.program",
                RuleKind::Invalid,
                "absolute path",
            ),
            (
                "stop with ..",
                RoleDefinition { stop: CommandLine::new("/opt/../stop", &[]), ..role() },
                "stop.program",
                RuleKind::Invalid,
                "..",
            ),
            (
                "check a directory",
                RoleDefinition { check: Some(CommandLine::new("/opt/mgmt/", &[])), ..role() },
                "check.program",
                RuleKind::Invalid,
                "directory",
            ),
            (
                "too many arguments",
                RoleDefinition { start: CommandLine { program: "/x".into(), args: vec!["a".into(); 33] }, ..role() },
                "start.args",
                RuleKind::OutOfRange,
                "at most 32",
            ),
            (
                "long argument",
                RoleDefinition { start: CommandLine { program: "/x".into(), args: vec![long_arg] }, ..role() },
                "start.args",
                RuleKind::OutOfRange,
                "4096",
            ),
            (
                "NUL in an argument",
                RoleDefinition { stop: CommandLine { program: "/x".into(), args: vec!["a\0b".into()] }, ..role() },
                "stop.args",
                RuleKind::Invalid,
                "NUL",
            ),
            (
                "interval too short",
                RoleDefinition { check_interval_ms: 999, ..role() },
                "check_interval_ms",
                RuleKind::OutOfRange,
                "allowed 1000-3600000",
            ),
            (
                "interval too long",
                RoleDefinition { check_interval_ms: 3_600_001, ..role() },
                "check_interval_ms",
                RuleKind::OutOfRange,
                "allowed",
            ),
            (
                "no failures allowed",
                RoleDefinition { check_failures: 0, ..role() },
                "check_failures",
                RuleKind::OutOfRange,
                "allowed 1-20",
            ),
            (
                "too many failures",
                RoleDefinition { check_failures: 21, ..role() },
                "check_failures",
                RuleKind::OutOfRange,
                "allowed 1-20",
            ),
            (
                "follow-primary with servers",
                RoleDefinition { follow_primary: true, ..role() },
                "servers",
                RuleKind::Contradiction,
                "leave the server list empty",
            ),
            (
                "follow-primary with failback",
                RoleDefinition { follow_primary: true, failback: true, servers: vec![], ..role() },
                "failback",
                RuleKind::Contradiction,
                "moves with the primary",
            ),
        ];
        for (name, definition, key, kind, words) in cases {
            let errors = definition.validate(&members()).expect_err(name);
            assert_eq!(errors.len(), 1, "{name}: {errors:?}");
            assert_eq!((errors[0].key.as_str(), errors[0].kind), (key, kind), "{name}: {errors:?}");
            assert!(errors[0].rule.contains(words), "{name}: {words:?} missing from {}", errors[0].rule);
        }
    }

    /// All broken rules at once, in one answer.
    #[test]
    fn every_broken_rule_is_named_at_once() {
        let broken = RoleDefinition {
            name: "Bad Name".into(),
            servers: vec![3, 9],
            start: CommandLine::new("start", &[]),
            stop: CommandLine::new("stop", &[]),
            check: Some(CommandLine::new("check", &[])),
            check_interval_ms: 1,
            check_failures: 0,
            failback: false,
            follow_primary: false,
        };
        let errors = broken.validate(&members()).unwrap_err();
        let keys: Vec<&str> = errors.iter().map(|error| error.key.as_str()).collect();
        assert_eq!(
            keys,
            vec![
                "name",
                "servers",
                "servers",
                "start.program",
                "stop.program",
                "check.program",
                "check_interval_ms",
                "check_failures"
            ]
        );
        // One line per rule, naming the value.
        assert_eq!(
            errors[2].to_string(),
            "`servers` = [3,9]: node 9 is not a member of the cluster (members: 1, 2, 3)"
        );
    }

    /// Without members, only the syntax is checked (the state machine's re-check).
    #[test]
    fn without_members_membership_rules_are_skipped() {
        let definition = RoleDefinition { servers: vec![3, 9], ..role() };
        assert_eq!(definition.validate(&[]), Ok(()));
        assert!(RoleDefinition { servers: vec![9, 9], ..role() }.validate(&[]).is_err());
    }

    #[test]
    fn definitions_read_from_json_with_defaults_and_round_trip_through_the_codec() {
        let json = r#"{"name":"mgmt","servers":[2,1],"start":{"program":"/s"},"stop":{"program":"/t","args":["now"]}}"#;
        let definition: RoleDefinition = serde_json::from_str(json).unwrap();
        assert_eq!(definition.check_interval_ms, CHECK_INTERVAL_MS_DEFAULT);
        assert_eq!(definition.check_failures, CHECK_FAILURES_DEFAULT);
        assert!(!definition.failback && !definition.follow_primary && definition.check.is_none());
        assert!(serde_json::from_str::<RoleDefinition>(
            r#"{"name":"x","start":{"program":"/s"},"stop":{"program":"/t"},"bogus":1}"#
        )
        .is_err());
        let bytes = crate::codec::encode(&definition).unwrap();
        assert_eq!(crate::codec::decode::<RoleDefinition>(&bytes).unwrap(), definition);
        assert_eq!(definition.rank_of(1), Some(1));
        assert_eq!(definition.rank_of(3), None);
        assert_eq!(check_timeout_ms(10_000), 10_000);
        assert_eq!(check_timeout_ms(600_000), CHECK_TIMEOUT_MS_MAX);
    }
}
