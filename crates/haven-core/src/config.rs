//! A node's own configuration: the `haven.toml` file and the flags that override it.
//!
//! Node-local settings only (identity, addresses, data dir, timing until the cluster-wide
//! HA configuration exists). Parsing and validation are pure: the shell reads the file and
//! passes its text. Every broken rule becomes one line naming the key and what is allowed.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;
use serde::Serialize;

use crate::limits::HISTORY_REVISIONS_DEFAULT;
use crate::limits::HISTORY_REVISIONS_MAX;
use crate::limits::HISTORY_REVISIONS_MIN;
use crate::limits::NODE_ID_MAX;

/// Default ping (heartbeat) interval. 50 ms keeps failure detection well under a second
/// on a LAN while costing a few packets per second per follower.
pub const PING_INTERVAL_MS_DEFAULT: u64 = 50;
/// Range of the ping interval: below 10 ms timers and scheduling noise dominate; above a
/// minute a failover would take longer than any user waits (seed 002 uses 15 s).
pub const PING_INTERVAL_MS_MIN: u64 = 10;
pub const PING_INTERVAL_MS_MAX: u64 = 60_000;
/// Missed pings before a follower starts an election; seed 002's range is 2-20. Four
/// (200 ms at the default interval) keeps the failover gap well under a second even though
/// openraft waits out the leader's lease first (see `Timing::expected_detection_ms`), while a
/// primary must still be silent for half a second before anyone campaigns.
pub const FAILED_PINGS_DEFAULT: u64 = 4;
pub const FAILED_PINGS_MIN: u64 = 2;
pub const FAILED_PINGS_MAX: u64 = 20;
/// Log entries since the last snapshot that trigger a new one. 10,000 bounds restart replay
/// to well under a second while keeping snapshot work rare.
pub const SNAPSHOT_THRESHOLD_DEFAULT: u64 = 10_000;
/// Tests force snapshots with small thresholds; below 10 a node would snapshot constantly.
pub const SNAPSHOT_THRESHOLD_MIN: u64 = 10;
pub const SNAPSHOT_THRESHOLD_MAX: u64 = 100_000_000;

/// The configuration file as written: every key optional, unknown keys refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfigFile {
    pub node_id: Option<u64>,
    pub data_dir: Option<PathBuf>,
    pub client_addr: Option<String>,
    pub peer_addr: Option<String>,
    pub bootstrap: Option<bool>,
    pub join: Option<String>,
    pub learner: Option<bool>,
    pub ping_interval_ms: Option<u64>,
    pub failed_pings: Option<u64>,
    pub snapshot_threshold: Option<u64>,
    pub history_revisions: Option<u64>,
    /// Fingerprint of the member named by `join`, checked before anything is sent to it.
    pub join_fingerprint: Option<String>,
    /// Admin or one-time join token presented when joining (or a file holding it).
    pub join_token: Option<String>,
    pub join_token_file: Option<PathBuf>,
    /// Accept whatever key the `join` member presents (trust on first use). Insecure.
    pub join_trust_first_use: Option<bool>,
    /// Plaintext on loopback, for development only.
    pub insecure_dev: Option<bool>,
    /// A certificate and key (PEM) for the client port instead of the node's own.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// The only directory secret files the HA configuration names (`smtp.password_file`)
    /// may be read from; default [`crate::secret_file::SECRETS_DIR_DEFAULT`].
    pub secrets_dir: Option<PathBuf>,
}

impl NodeConfigFile {
    /// Parses the text of a `haven.toml`. The error is one line naming the problem.
    pub fn parse(text: &str) -> Result<NodeConfigFile, ConfigError> {
        toml::from_str(text).map_err(|error| {
            let line = error
                .span()
                .map(|span| text.as_bytes()[..span.start.min(text.len())].iter().filter(|b| **b == b'\n').count() + 1);
            // toml's own message spans several lines with a source excerpt; keep the first.
            let message = error.message().lines().next().unwrap_or("invalid TOML").to_string();
            ConfigError::Syntax { line, message }
        })
    }

    /// Values from `overrides` (flags) win over `self` (the file).
    pub fn merge(self, overrides: NodeConfigFile) -> NodeConfigFile {
        NodeConfigFile {
            node_id: overrides.node_id.or(self.node_id),
            data_dir: overrides.data_dir.or(self.data_dir),
            client_addr: overrides.client_addr.or(self.client_addr),
            peer_addr: overrides.peer_addr.or(self.peer_addr),
            bootstrap: overrides.bootstrap.or(self.bootstrap),
            join: overrides.join.or(self.join),
            learner: overrides.learner.or(self.learner),
            ping_interval_ms: overrides.ping_interval_ms.or(self.ping_interval_ms),
            failed_pings: overrides.failed_pings.or(self.failed_pings),
            snapshot_threshold: overrides.snapshot_threshold.or(self.snapshot_threshold),
            history_revisions: overrides.history_revisions.or(self.history_revisions),
            join_fingerprint: overrides.join_fingerprint.or(self.join_fingerprint),
            join_token: overrides.join_token.or(self.join_token),
            join_token_file: overrides.join_token_file.or(self.join_token_file),
            join_trust_first_use: overrides.join_trust_first_use.or(self.join_trust_first_use),
            insecure_dev: overrides.insecure_dev.or(self.insecure_dev),
            tls_cert: overrides.tls_cert.or(self.tls_cert),
            tls_key: overrides.tls_key.or(self.tls_key),
            secrets_dir: overrides.secrets_dir.or(self.secrets_dir),
        }
    }

    /// Checks every rule and returns the validated configuration, or the first broken
    /// rule as one line naming the key.
    pub fn validate(self) -> Result<NodeConfig, ConfigError> {
        let node_id = self.node_id.ok_or(ConfigError::Missing { key: "node_id" })?;
        if node_id == 0 || node_id > NODE_ID_MAX {
            return Err(ConfigError::OutOfRange {
                key: "node_id",
                value: node_id.to_string(),
                allowed: format!("1..={NODE_ID_MAX}"),
            });
        }
        let data_dir = self.data_dir.ok_or(ConfigError::Missing { key: "data_dir" })?;
        if data_dir.as_os_str().is_empty() {
            return Err(ConfigError::Missing { key: "data_dir" });
        }
        let client_addr = parse_addr("client_addr", self.client_addr.as_deref().unwrap_or("127.0.0.1:7001"))?;
        let peer_addr = parse_addr("peer_addr", self.peer_addr.as_deref().unwrap_or("127.0.0.1:7101"))?;
        if client_addr == peer_addr && client_addr.port() != 0 {
            return Err(ConfigError::Contradiction {
                message: format!("client_addr and peer_addr are both {client_addr}; give them different ports"),
            });
        }
        let bootstrap = self.bootstrap.unwrap_or(false);
        let learner = self.learner.unwrap_or(false);
        let join = match self.join {
            Some(join) if join.trim().is_empty() => None,
            Some(join) => Some(normalize_url("join", &join)?),
            None => None,
        };
        if bootstrap && join.is_some() {
            return Err(ConfigError::Contradiction {
                message:
                    "bootstrap and join are both set; bootstrap starts a new cluster, join enters an existing one: \
                          give one"
                        .into(),
            });
        }
        if bootstrap && learner {
            return Err(ConfigError::Contradiction {
                message: "bootstrap and learner are both set; the bootstrapping node is the first voter".into(),
            });
        }
        let ping_interval_ms = ranged(
            "ping_interval_ms",
            self.ping_interval_ms.unwrap_or(PING_INTERVAL_MS_DEFAULT),
            PING_INTERVAL_MS_MIN,
            PING_INTERVAL_MS_MAX,
        )?;
        let failed_pings = ranged(
            "failed_pings",
            self.failed_pings.unwrap_or(FAILED_PINGS_DEFAULT),
            FAILED_PINGS_MIN,
            FAILED_PINGS_MAX,
        )?;
        let snapshot_threshold = ranged(
            "snapshot_threshold",
            self.snapshot_threshold.unwrap_or(SNAPSHOT_THRESHOLD_DEFAULT),
            SNAPSHOT_THRESHOLD_MIN,
            SNAPSHOT_THRESHOLD_MAX,
        )?;
        let history_revisions = ranged(
            "history_revisions",
            self.history_revisions.unwrap_or(HISTORY_REVISIONS_DEFAULT),
            HISTORY_REVISIONS_MIN,
            HISTORY_REVISIONS_MAX,
        )?;
        let insecure_dev = self.insecure_dev.unwrap_or(false);
        if insecure_dev && !(client_addr.ip().is_loopback() && peer_addr.ip().is_loopback()) {
            return Err(ConfigError::Contradiction {
                message: "insecure_dev serves plaintext and is allowed only on loopback addresses; bind client_addr \
                          and peer_addr to 127.0.0.1, or drop insecure_dev"
                    .into(),
            });
        }
        let join_fingerprint = match self.join_fingerprint {
            Some(text) => Some(parse_fingerprint(&text).ok_or(ConfigError::Invalid {
                key: "join_fingerprint",
                value: text.chars().take(80).collect(),
                reason: "expected sha256: followed by 64 hex digits, as `haven fingerprint` prints".into(),
            })?),
            None => None,
        };
        let join_trust_first_use = self.join_trust_first_use.unwrap_or(false);
        if join.is_some() && !insecure_dev && join_fingerprint.is_none() && !join_trust_first_use {
            return Err(ConfigError::Contradiction {
                message: "join needs join_fingerprint (the member's key fingerprint, from `haven fingerprint` on it) \
                          so this node knows it talks to the real cluster; join_trust_first_use skips the check \
                          insecurely"
                    .into(),
            });
        }
        if self.join_token.is_some() && self.join_token_file.is_some() {
            return Err(ConfigError::Contradiction {
                message: "join_token and join_token_file are both set; give one".into(),
            });
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(ConfigError::Contradiction {
                message: "tls_cert and tls_key go together; give both or neither".into(),
            });
        }
        let secrets_dir = self.secrets_dir.unwrap_or_else(|| PathBuf::from(crate::secret_file::SECRETS_DIR_DEFAULT));
        if !secrets_dir.is_absolute() {
            return Err(ConfigError::Invalid {
                key: "secrets_dir",
                value: secrets_dir.display().to_string(),
                reason: "must be an absolute path".into(),
            });
        }
        Ok(NodeConfig {
            node_id,
            data_dir,
            client_addr,
            peer_addr,
            bootstrap,
            join,
            learner,
            timing: Timing { ping_interval_ms, failed_pings },
            snapshot_threshold,
            history_revisions,
            join_fingerprint,
            join_token: self.join_token,
            join_token_file: self.join_token_file,
            join_trust_first_use,
            insecure_dev,
            tls_cert: self.tls_cert,
            tls_key: self.tls_key,
            secrets_dir,
        })
    }
}

/// Checks a key fingerprint's form (`sha256:` + 64 hex digits) and returns it lowercased.
pub fn parse_fingerprint(text: &str) -> Option<String> {
    let text = text.trim().to_ascii_lowercase();
    let valid =
        text.strip_prefix("sha256:").is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()));
    valid.then_some(text)
}

/// A validated node configuration. Its `Debug` hides the join token.
#[derive(Clone, PartialEq, Eq)]
pub struct NodeConfig {
    pub node_id: u64,
    pub data_dir: PathBuf,
    pub client_addr: SocketAddr,
    pub peer_addr: SocketAddr,
    pub bootstrap: bool,
    /// Client URL of a member to join through.
    pub join: Option<String>,
    pub learner: bool,
    pub timing: Timing,
    pub snapshot_threshold: u64,
    pub history_revisions: u64,
    pub join_fingerprint: Option<String>,
    pub join_token: Option<String>,
    pub join_token_file: Option<PathBuf>,
    pub join_trust_first_use: bool,
    pub insecure_dev: bool,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub secrets_dir: PathBuf,
}

impl std::fmt::Debug for NodeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeConfig")
            .field("node_id", &self.node_id)
            .field("data_dir", &self.data_dir)
            .field("client_addr", &self.client_addr)
            .field("peer_addr", &self.peer_addr)
            .field("bootstrap", &self.bootstrap)
            .field("join", &self.join)
            .field("learner", &self.learner)
            .field("join_token", &self.join_token.as_ref().map(|_| "<hidden>"))
            .field("insecure_dev", &self.insecure_dev)
            .finish_non_exhaustive()
    }
}

/// Failure detection in the operator's terms (seed 002: a ping interval and a number of
/// failed pings) and what they mean as Raft timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub ping_interval_ms: u64,
    pub failed_pings: u64,
}

impl Timing {
    /// Raft heartbeat interval: one ping.
    pub fn heartbeat_interval_ms(&self) -> u64 {
        self.ping_interval_ms
    }

    /// Election timeout range: a follower waits `failed_pings` intervals, randomised up to
    /// one and a half times that so two followers rarely campaign at the same moment.
    pub fn election_timeout_ms(&self) -> (u64, u64) {
        let min = self.ping_interval_ms * self.failed_pings;
        (min, min + min / 2)
    }

    /// The expected time from a leader's death to a new leader. openraft (0.10) lets a
    /// follower campaign only after the leader's lease, which it sets to the longest
    /// election timeout, has run out since the last heartbeat, and then after its own
    /// randomised timeout (on average halfway); then one round trip of votes (about a ping).
    /// Measured by the benchmark (`docs/benchmarks.md`).
    pub fn expected_detection_ms(&self) -> u64 {
        let (min, max) = self.election_timeout_ms();
        max + (min + max) / 2 + self.ping_interval_ms
    }
}

/// One broken rule, as one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("config syntax error{}: {message}", line.map(|l| format!(" on line {l}")).unwrap_or_default())]
    Syntax { line: Option<usize>, message: String },
    #[error("config key `{key}` is required")]
    Missing { key: &'static str },
    #[error("config key `{key}` = {value} is out of range; allowed: {allowed}")]
    OutOfRange { key: &'static str, value: String, allowed: String },
    #[error("config key `{key}` = {value:?} is invalid: {reason}")]
    Invalid { key: &'static str, value: String, reason: String },
    #[error("config contradiction: {message}")]
    Contradiction { message: String },
}

fn ranged(key: &'static str, value: u64, min: u64, max: u64) -> Result<u64, ConfigError> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(ConfigError::OutOfRange { key, value: value.to_string(), allowed: format!("{min}..={max}") })
    }
}

fn parse_addr(key: &'static str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| ConfigError::Invalid {
        key,
        value: value.to_string(),
        reason: "expected IP:PORT, for example 127.0.0.1:7001".into(),
    })
}

/// Accepts `host:port` or `http(s)://host:port[/]` and returns a URL without a trailing `/`.
pub fn normalize_url(key: &'static str, value: &str) -> Result<String, ConfigError> {
    let value = value.trim().trim_end_matches('/');
    let with_scheme = if value.starts_with("http://") || value.starts_with("https://") {
        value.to_string()
    } else {
        format!("http://{value}")
    };
    let rest = with_scheme.split_once("://").map(|(_, rest)| rest).unwrap_or("");
    let valid = !rest.is_empty()
        && !rest.contains('/')
        && rest.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if valid {
        Ok(with_scheme)
    } else {
        Err(ConfigError::Invalid {
            key,
            value: value.to_string(),
            reason: "expected a member's client URL such as http://10.0.0.1:7001".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> NodeConfigFile {
        NodeConfigFile { node_id: Some(1), data_dir: Some("/tmp/n1".into()), ..Default::default() }
    }

    #[test]
    fn parses_a_full_file() {
        let text = r#"
            node_id = 2
            data_dir = "/var/lib/haven"
            client_addr = "127.0.0.1:7002"
            peer_addr = "127.0.0.1:7102"
            join = "127.0.0.1:7001"
            join_fingerprint = "sha256:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
            ping_interval_ms = 100
            failed_pings = 5
        "#;
        let config = NodeConfigFile::parse(text).unwrap().validate().unwrap();
        assert_eq!(config.node_id, 2);
        assert_eq!(config.join.as_deref(), Some("http://127.0.0.1:7001"));
        assert_eq!(config.timing.election_timeout_ms(), (500, 750));
        assert_eq!(config.timing.expected_detection_ms(), 750 + 625 + 100);
        assert!(!config.bootstrap);
    }

    #[test]
    fn unknown_key_is_named() {
        let error = NodeConfigFile::parse("node_id = 1\nnode_idd = 2\n").unwrap_err();
        let text = error.to_string();
        assert!(text.contains("node_idd") && text.contains("line 2"), "{text}");
        assert!(!text.contains('\n'), "one line: {text}");
    }

    #[test]
    fn wrong_type_is_a_syntax_error() {
        let error = NodeConfigFile::parse("node_id = \"one\"\n").unwrap_err();
        assert!(matches!(error, ConfigError::Syntax { line: Some(1), .. }), "{error}");
    }

    #[test]
    fn ranges_are_checked() {
        let cases: Vec<(NodeConfigFile, &str)> = vec![
            (NodeConfigFile { node_id: Some(0), ..base() }, "node_id"),
            (NodeConfigFile { failed_pings: Some(1), ..base() }, "failed_pings"),
            (NodeConfigFile { failed_pings: Some(21), ..base() }, "failed_pings"),
            (NodeConfigFile { ping_interval_ms: Some(5), ..base() }, "ping_interval_ms"),
            (NodeConfigFile { snapshot_threshold: Some(1), ..base() }, "snapshot_threshold"),
            (NodeConfigFile { history_revisions: Some(99), ..base() }, "history_revisions"),
            (NodeConfigFile { client_addr: Some("nope".into()), ..base() }, "client_addr"),
            (NodeConfigFile { join: Some("http://".into()), ..base() }, "join"),
        ];
        for (file, key) in cases {
            let error = file.validate().unwrap_err().to_string();
            assert!(error.contains(key), "{error} should name {key}");
        }
        for pings in [2, 12, 20] {
            assert!(NodeConfigFile { failed_pings: Some(pings), ..base() }.validate().is_ok());
        }
    }

    #[test]
    fn contradictions_are_refused() {
        let both = NodeConfigFile { bootstrap: Some(true), join: Some("127.0.0.1:1".into()), ..base() };
        assert!(matches!(both.validate(), Err(ConfigError::Contradiction { .. })));
        let learner = NodeConfigFile { bootstrap: Some(true), learner: Some(true), ..base() };
        assert!(matches!(learner.validate(), Err(ConfigError::Contradiction { .. })));
        let same = NodeConfigFile {
            client_addr: Some("127.0.0.1:9000".into()),
            peer_addr: Some("127.0.0.1:9000".into()),
            ..base()
        };
        assert!(matches!(same.validate(), Err(ConfigError::Contradiction { .. })));
        assert_eq!(NodeConfigFile { node_id: None, ..base() }.validate(), Err(ConfigError::Missing { key: "node_id" }));
    }

    #[test]
    fn join_needs_a_fingerprint_unless_told_otherwise() {
        let join = NodeConfigFile { join: Some("127.0.0.1:7001".into()), ..base() };
        assert!(matches!(join.clone().validate(), Err(ConfigError::Contradiction { .. })));
        let tofu = NodeConfigFile { join_trust_first_use: Some(true), ..join.clone() };
        assert!(tofu.validate().is_ok());
        let bad = NodeConfigFile { join_fingerprint: Some("sha256:xyz".into()), ..join.clone() };
        assert!(bad.validate().unwrap_err().to_string().contains("join_fingerprint"));
        let insecure_public =
            NodeConfigFile { insecure_dev: Some(true), client_addr: Some("0.0.0.0:7001".into()), ..base() };
        assert!(insecure_public.validate().unwrap_err().to_string().contains("loopback"));
    }

    #[test]
    fn flags_override_the_file() {
        let file = NodeConfigFile { node_id: Some(1), join: Some("a:1".into()), ..base() };
        let flags = NodeConfigFile { node_id: Some(3), ..Default::default() };
        let merged = file.merge(flags);
        assert_eq!(merged.node_id, Some(3));
        assert_eq!(merged.join.as_deref(), Some("a:1"));
    }
}
