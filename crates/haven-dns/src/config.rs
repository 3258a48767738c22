//! The DNS options, their validation, and the settings the shell runs with.
//!
//! ```text
//!   [dns]                     alias = "mgmt.example.internal", ttl_s = 0
//!   [dns.responder]           enabled, mode = "primary-first" | "primary-only", listen
//!   [dns.responder.nodes.2]   listen (this node's own address, e.g. in `haven dev`)
//!   [dns.update]              enabled, server, zone, key_name, key_algorithm, key_secret_file
//!         │
//!         ▼ DnsConfig::validate(): every rule, all at once
//!   Err([HaConfigError { key: "dns.update.zone", value, kind, rule }, ...])
//!   Ok(DnsSettings { responder: Option<ResponderPlan>, update: Option<UpdateSettings> })
//! ```
//!
//! Pure types: nothing here binds, resolves or opens a file (the key's secret is read by
//! [`crate::update::TsigKey::load`] when the updater starts). The errors are the HA
//! configuration's own ([`HaConfigError`] with a dotted key under `dns.`), so the server can
//! add this section to the replicated HA configuration and its draft/apply unchanged. The
//! secret itself is never part of the configuration (which is replicated and shown): only
//! the path of a file on each node that holds it, as for the SMTP password.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::net::SocketAddr;
use std::path::PathBuf;

use haven_core::ha::config::HaConfigError;
use haven_core::ha::config::RuleKind;
use haven_core::ha::config::UNSET_SHOWN;
use haven_core::ha::syntax::check_absolute_path;
use haven_core::ha::syntax::check_host_name;
use haven_core::ha::syntax::HOST_LABEL_BYTES_MAX;
use haven_core::ha::syntax::HOST_NAME_BYTES_MAX;
use haven_core::limits::NODE_ID_MAX;
use hickory_proto::rr::Name;
use serde::Deserialize;
use serde::Serialize;

use crate::answer::AnswerMode;
use crate::answer::Zone;

/// TTL 0 by default (seed 003: "DNS caching disabled"): a client asks again on every
/// connection attempt, so a failover needs no cache to expire.
pub const TTL_S_DEFAULT: u64 = 0;
/// The TTL is how long a client may keep connecting to an old primary after a failover.
/// Five minutes is the most that still deserves the name high availability; anyone who
/// wants longer wants a static record, not this.
pub const TTL_S_MAX: u64 = 300;

/// Where the responder listens unless told otherwise: the DNS port on every IPv4 interface
/// (the cluster's addresses are what it publishes, so there is nothing to hide).
pub const RESPONDER_LISTEN_DEFAULT: &str = "0.0.0.0:53";

/// The DNS port, for an update server given without one.
pub const DNS_PORT: u16 = 53;

/// The cluster-wide DNS options. Every key is optional; unknown keys are refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DnsConfig {
    /// The cluster alias that clients and agents resolve (seed 003's "symbolic name"), for
    /// example `mgmt.example.internal`. Required once the responder or the update is on.
    pub alias: Option<String>,
    /// TTL of every record served or written, in seconds.
    pub ttl_s: u64,
    pub responder: ResponderConfig,
    pub update: UpdateConfig,
}

/// The built-in responder: each data node answers for the alias itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResponderConfig {
    /// Off by default: a DNS server is something an operator turns on knowingly.
    pub enabled: bool,
    pub mode: AnswerMode,
    /// `IP:PORT` every node listens on, unless its entry under `nodes` says otherwise.
    pub listen: String,
    /// Per-node listen addresses, by node id (for nodes sharing a host, as in `haven dev`).
    pub nodes: BTreeMap<u64, NodeResponderConfig>,
}

impl Default for ResponderConfig {
    fn default() -> ResponderConfig {
        ResponderConfig {
            enabled: false,
            mode: AnswerMode::PrimaryFirst,
            listen: RESPONDER_LISTEN_DEFAULT.to_string(),
            nodes: BTreeMap::new(),
        }
    }
}

/// One node's responder settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeResponderConfig {
    pub listen: Option<String>,
}

/// RFC 2136 dynamic update of an external DNS server (BIND, Knot, PowerDNS, ...) on
/// failover and switchover, signed with TSIG: what seed 002's `nsupdate` hook script does,
/// built in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpdateConfig {
    pub enabled: bool,
    /// The primary server of the zone: `IP` or `IP:PORT` (port 53 if none). An address,
    /// not a name: the update must not depend on the DNS it is about to change.
    pub server: Option<String>,
    /// The zone the alias is in, for example `example.internal`.
    pub zone: Option<String>,
    /// The TSIG key's name, as the server knows it (`key "NAME" { ... }` in BIND).
    pub key_name: Option<String>,
    pub key_algorithm: KeyAlgorithm,
    /// Absolute path, on every node, of the file holding the key's secret: either the
    /// base64 secret alone or a BIND key clause as `tsig-keygen` writes it.
    pub key_secret_file: Option<String>,
}

/// TSIG algorithms (RFC 8945). HMAC-SHA256 is what RFC 8945 requires every implementation
/// to support and what `tsig-keygen` makes by default; MD5 and SHA-1 are refused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KeyAlgorithm {
    #[default]
    #[serde(rename = "hmac-sha256")]
    HmacSha256,
    #[serde(rename = "hmac-sha384")]
    HmacSha384,
    #[serde(rename = "hmac-sha512")]
    HmacSha512,
}

impl KeyAlgorithm {
    /// The name BIND and RFC 8945 use.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyAlgorithm::HmacSha256 => "hmac-sha256",
            KeyAlgorithm::HmacSha384 => "hmac-sha384",
            KeyAlgorithm::HmacSha512 => "hmac-sha512",
        }
    }

    pub fn from_name(name: &str) -> Option<KeyAlgorithm> {
        [KeyAlgorithm::HmacSha256, KeyAlgorithm::HmacSha384, KeyAlgorithm::HmacSha512]
            .into_iter()
            .find(|algorithm| algorithm.as_str().eq_ignore_ascii_case(name.trim_end_matches('.')))
    }
}

impl std::fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The validated options: what each part runs with, or `None` where it is off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsSettings {
    pub responder: Option<ResponderPlan>,
    pub update: Option<UpdateSettings>,
}

/// The responder's settings for the whole cluster; [`ResponderPlan::for_node`] gives one
/// node's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponderPlan {
    pub zone: Zone,
    pub listen: SocketAddr,
    pub listen_by_node: BTreeMap<u64, SocketAddr>,
}

impl ResponderPlan {
    pub fn for_node(&self, node_id: u64) -> ResponderSettings {
        ResponderSettings {
            zone: self.zone.clone(),
            listen: self.listen_by_node.get(&node_id).copied().unwrap_or(self.listen),
        }
    }
}

/// What one node's responder runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponderSettings {
    pub zone: Zone,
    pub listen: SocketAddr,
}

/// What the dynamic updater runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateSettings {
    pub server: SocketAddr,
    pub zone: Name,
    pub alias: Name,
    pub ttl_s: u32,
    pub key_name: Name,
    pub key_algorithm: KeyAlgorithm,
    pub key_secret_file: PathBuf,
}

impl DnsConfig {
    /// Checks every rule and names every broken one at once (keys under `dns.`); on
    /// success returns what the responder and the updater run with.
    pub fn validate(&self) -> Result<DnsSettings, Vec<HaConfigError>> {
        let mut errors = Errors::default();
        let user = if self.responder.enabled {
            Some("dns.responder.enabled")
        } else if self.update.enabled {
            Some("dns.update.enabled")
        } else {
            None
        };
        let alias = errors.optional(
            "dns.alias",
            &self.alias,
            user.map(|user| (user, "the cluster alias, for example \"mgmt.example.internal\"")),
            |text| check_host_name(text).and_then(|()| dns_name(text)),
        );
        if self.ttl_s > TTL_S_MAX {
            errors.push(
                "dns.ttl_s",
                self.ttl_s.to_string(),
                RuleKind::OutOfRange,
                format!("out of range; allowed 0-{TTL_S_MAX} (seconds clients may keep an old primary)"),
            );
        }
        let ttl_s = self.ttl_s.min(TTL_S_MAX) as u32;
        let responder = self.validate_responder(alias.as_ref(), ttl_s, &mut errors);
        let update = self.validate_update(alias.as_ref(), ttl_s, &mut errors);
        if !errors.0.is_empty() {
            return Err(errors.0);
        }
        Ok(DnsSettings { responder, update })
    }

    fn validate_responder(&self, alias: Option<&Name>, ttl_s: u32, errors: &mut Errors) -> Option<ResponderPlan> {
        let config = &self.responder;
        let listen = check_listen("dns.responder.listen", &config.listen, errors);
        let mut listen_by_node = BTreeMap::new();
        for (&id, node) in &config.nodes {
            let key = format!("dns.responder.nodes.{id}");
            if id == 0 || id > NODE_ID_MAX {
                errors.push(&key, id.to_string(), RuleKind::OutOfRange, format!("node ids are 1-{NODE_ID_MAX}"));
            }
            if let Some(text) = &node.listen {
                if let Some(addr) = check_listen(&format!("{key}.listen"), text, errors) {
                    listen_by_node.insert(id, addr);
                }
            }
        }
        if !config.enabled {
            return None;
        }
        Some(ResponderPlan {
            zone: Zone { alias: alias?.clone(), mode: config.mode, ttl_s },
            listen: listen?,
            listen_by_node,
        })
    }

    fn validate_update(&self, alias: Option<&Name>, ttl_s: u32, errors: &mut Errors) -> Option<UpdateSettings> {
        let config = &self.update;
        let needs = |what| config.enabled.then_some(("dns.update.enabled", what));
        let server = errors.optional(
            "dns.update.server",
            &config.server,
            needs("the zone's primary server, for example \"192.0.2.53\""),
            parse_server,
        );
        let zone = errors.optional(
            "dns.update.zone",
            &config.zone,
            needs("the zone the alias is in, for example \"example.internal\""),
            |text| check_host_name(text).and_then(|()| dns_name(text)),
        );
        let key_name = errors.optional(
            "dns.update.key_name",
            &config.key_name,
            needs("the TSIG key's name as the DNS server knows it"),
            |text| check_key_name(text).and_then(|()| dns_name(text)),
        );
        let key_secret_file = errors.optional(
            "dns.update.key_secret_file",
            &config.key_secret_file,
            needs("the absolute path of the file holding the key's secret"),
            |text| check_absolute_path(text).map(|()| PathBuf::from(text)),
        );
        let alias_in_zone = match (&zone, alias) {
            (Some(zone), Some(alias)) if !zone.zone_of(alias) => {
                errors.push(
                    "dns.update.zone",
                    json_text(config.zone.as_deref().unwrap_or_default()),
                    RuleKind::Contradiction,
                    format!(
                        "the alias {alias} is not in this zone; give the zone that contains it (the alias itself or a \
                         parent of it)"
                    ),
                );
                false
            }
            _ => true,
        };
        if !config.enabled || !alias_in_zone {
            return None;
        }
        Some(UpdateSettings {
            server: server?,
            zone: zone?,
            alias: alias?.clone(),
            ttl_s,
            key_name: key_name?,
            key_algorithm: config.key_algorithm,
            key_secret_file: key_secret_file?,
        })
    }
}

/// A listen address: `IP:PORT` with a port other than 0 (clients must know where to ask).
fn check_listen(key: &str, text: &str, errors: &mut Errors) -> Option<SocketAddr> {
    match text.parse::<SocketAddr>() {
        Ok(addr) if addr.port() == 0 => {
            errors.push(key, json_text(text), RuleKind::Invalid, "port 0 picks a random port that no client can know");
            None
        }
        Ok(addr) if addr.ip().is_multicast() => {
            errors.push(key, json_text(text), RuleKind::Invalid, "a multicast address cannot be listened on");
            None
        }
        Ok(addr) => Some(addr),
        Err(_) => {
            errors.push(
                key,
                json_text(text),
                RuleKind::Invalid,
                "expected IP:PORT, for example 0.0.0.0:53 or [::]:53 or 127.0.0.1:5353",
            );
            None
        }
    }
}

/// The update server: `IP`, `IP:PORT` or `[IPv6]:PORT`; port 53 when none is given.
fn parse_server(text: &str) -> Result<SocketAddr, String> {
    let addr = if let Ok(addr) = text.parse::<SocketAddr>() {
        addr
    } else if let Ok(ip) = text.parse::<IpAddr>() {
        SocketAddr::new(ip, DNS_PORT)
    } else if check_host_name(text.rsplit_once(':').map_or(text, |(host, _)| host)).is_ok() {
        return Err("a host name; give the server's IP address, because the update must not depend on resolving a \
                    name through the DNS it is about to change"
            .into());
    } else {
        return Err("expected IP or IP:PORT, for example 192.0.2.53 or 192.0.2.53:53 or [2001:db8::53]:53".into());
    };
    if addr.port() == 0 {
        return Err("port 0 is not a port a DNS server listens on".into());
    }
    if addr.ip().is_unspecified() || addr.ip().is_multicast() {
        return Err("an unspecified or multicast address is not a server".into());
    }
    Ok(addr)
}

/// A TSIG key name: a domain name whose labels may also hold underscores (BIND accepts key
/// names such as `haven_update`), 63 bytes a label, 253 in all.
fn check_key_name(text: &str) -> Result<(), String> {
    let name = text.strip_suffix('.').unwrap_or(text);
    if name.is_empty() {
        return Err("empty; give the key's name as the DNS server knows it".into());
    }
    if name.len() > HOST_NAME_BYTES_MAX {
        return Err(format!("longer than {HOST_NAME_BYTES_MAX} bytes"));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("empty label (two dots in a row?)".into());
        }
        if label.len() > HOST_LABEL_BYTES_MAX {
            return Err(format!("label `{label}` is longer than {HOST_LABEL_BYTES_MAX} bytes"));
        }
        if let Some(bad) = label.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_')) {
            return Err(format!("`{bad}` is not allowed in a key name (letters, digits, hyphens, underscores, dots)"));
        }
    }
    Ok(())
}

/// A checked name as a fully qualified, lowercase DNS name.
fn dns_name(text: &str) -> Result<Name, String> {
    let mut name = Name::from_ascii(text).map_err(|error| format!("not a valid DNS name: {error}"))?;
    name.set_fqdn(true);
    Ok(name.to_lowercase())
}

/// The broken rules found so far.
#[derive(Default)]
struct Errors(Vec<HaConfigError>);

impl Errors {
    fn push(&mut self, key: impl Into<String>, value: impl Into<String>, kind: RuleKind, rule: impl Into<String>) {
        self.0.push(HaConfigError { key: key.into(), value: value.into(), kind, rule: rule.into() });
    }

    /// An optional value: parsed when set (an error names the key and the value), and
    /// reported missing when unset while `needed_by` = (the switch that is on, what it
    /// needs) says something requires it.
    fn optional<T>(
        &mut self,
        key: &str,
        value: &Option<String>,
        needed_by: Option<(&str, &str)>,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        match (value, needed_by) {
            (None, Some((switch, what))) => {
                self.push(key, UNSET_SHOWN, RuleKind::Missing, format!("{switch} is on, so it needs {what}"));
                None
            }
            (None, None) => None,
            (Some(text), _) => parse(text).map_err(|why| self.push(key, json_text(text), RuleKind::Invalid, why)).ok(),
        }
    }
}

fn json_text(text: &str) -> String {
    // A string always serializes.
    serde_json::to_string(text).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(errors: &[HaConfigError]) -> Vec<(&str, RuleKind)> {
        errors.iter().map(|error| (error.key.as_str(), error.kind)).collect()
    }

    fn full() -> DnsConfig {
        DnsConfig {
            alias: Some("Mgmt.Example.Internal".into()),
            ttl_s: 0,
            responder: ResponderConfig { enabled: true, ..ResponderConfig::default() },
            update: UpdateConfig {
                enabled: true,
                server: Some("192.0.2.53".into()),
                zone: Some("example.internal.".into()),
                key_name: Some("haven_update".into()),
                key_algorithm: KeyAlgorithm::HmacSha256,
                key_secret_file: Some("/etc/haven/dns.key".into()),
            },
        }
    }

    #[test]
    fn off_by_default_and_valid() {
        let settings = DnsConfig::default().validate().unwrap();
        assert_eq!(settings, DnsSettings { responder: None, update: None });
    }

    #[test]
    fn a_full_configuration_gives_normalised_settings() {
        let settings = full().validate().unwrap();
        let responder = settings.responder.unwrap();
        assert_eq!(responder.zone.alias.to_string(), "mgmt.example.internal.");
        assert_eq!(responder.zone.mode, AnswerMode::PrimaryFirst);
        assert_eq!(responder.zone.ttl_s, 0);
        assert_eq!(responder.listen, "0.0.0.0:53".parse().unwrap());
        let update = settings.update.unwrap();
        assert_eq!(update.server, "192.0.2.53:53".parse().unwrap());
        assert_eq!(update.zone.to_string(), "example.internal.");
        assert_eq!(update.alias.to_string(), "mgmt.example.internal.");
        assert_eq!(update.key_name.to_string(), "haven_update.");
        assert_eq!(update.key_secret_file, PathBuf::from("/etc/haven/dns.key"));
    }

    #[test]
    fn per_node_listen_addresses_win() {
        let mut config = full();
        config.responder.nodes.insert(2, NodeResponderConfig { listen: Some("127.0.0.1:5302".into()) });
        let plan = config.validate().unwrap().responder.unwrap();
        assert_eq!(plan.for_node(2).listen, "127.0.0.1:5302".parse().unwrap());
        assert_eq!(plan.for_node(1).listen, "0.0.0.0:53".parse().unwrap());
    }

    #[test]
    fn enabling_without_the_needed_keys_names_each_one() {
        let config = DnsConfig {
            responder: ResponderConfig { enabled: true, ..ResponderConfig::default() },
            update: UpdateConfig { enabled: true, ..UpdateConfig::default() },
            ..DnsConfig::default()
        };
        let errors = config.validate().unwrap_err();
        assert_eq!(
            keys(&errors),
            [
                ("dns.alias", RuleKind::Missing),
                ("dns.update.server", RuleKind::Missing),
                ("dns.update.zone", RuleKind::Missing),
                ("dns.update.key_name", RuleKind::Missing),
                ("dns.update.key_secret_file", RuleKind::Missing),
            ]
        );
        assert!(errors[0].to_string().contains("dns.responder.enabled is on"), "{}", errors[0]);
    }

    #[test]
    fn every_bad_value_is_named_at_once() {
        let mut config = full();
        config.alias = Some("mgmt..example".into());
        config.ttl_s = 301;
        config.responder.listen = "0.0.0.0".into();
        config.responder.nodes.insert(0, NodeResponderConfig { listen: Some("127.0.0.1:0".into()) });
        config.update.server = Some("dns1.example.internal".into());
        config.update.zone = Some("-bad-.internal".into());
        config.update.key_name = Some("key name".into());
        config.update.key_secret_file = Some("dns.key".into());
        let errors = config.validate().unwrap_err();
        assert_eq!(
            keys(&errors),
            [
                ("dns.alias", RuleKind::Invalid),
                ("dns.ttl_s", RuleKind::OutOfRange),
                ("dns.responder.listen", RuleKind::Invalid),
                ("dns.responder.nodes.0", RuleKind::OutOfRange),
                ("dns.responder.nodes.0.listen", RuleKind::Invalid),
                ("dns.update.server", RuleKind::Invalid),
                ("dns.update.zone", RuleKind::Invalid),
                ("dns.update.key_name", RuleKind::Invalid),
                ("dns.update.key_secret_file", RuleKind::Invalid),
            ]
        );
        let server = &errors[5];
        assert!(server.rule.contains("give the server's IP address"), "{server}");
    }

    #[test]
    fn the_alias_must_be_in_the_zone() {
        let mut config = full();
        config.update.zone = Some("other.internal".into());
        let errors = config.validate().unwrap_err();
        assert_eq!(keys(&errors), [("dns.update.zone", RuleKind::Contradiction)]);
        assert!(errors[0].rule.contains("mgmt.example.internal. is not in this zone"), "{}", errors[0]);
        // The alias itself may be the zone (a zone delegated for the alias alone).
        config.update.zone = Some("mgmt.example.internal".into());
        assert!(config.validate().is_ok());
    }

    #[test]
    fn servers_take_ports_and_ipv6() {
        assert_eq!(parse_server("192.0.2.53:5353"), Ok("192.0.2.53:5353".parse().unwrap()));
        assert_eq!(parse_server("2001:db8::53"), Ok("[2001:db8::53]:53".parse().unwrap()));
        assert_eq!(parse_server("[2001:db8::53]:54"), Ok("[2001:db8::53]:54".parse().unwrap()));
        assert!(parse_server("0.0.0.0").is_err());
        assert!(parse_server("192.0.2.53:0").is_err());
        assert!(parse_server("dns1:53").unwrap_err().contains("host name"));
        assert!(parse_server("192.0.2.300").unwrap_err().contains("expected IP"));
    }

    #[test]
    fn disabled_parts_still_get_their_values_checked() {
        // A typo in a part that is off is still a typo: it is caught now, not when the part
        // is turned on during an incident.
        let config = DnsConfig {
            update: UpdateConfig { server: Some("not an address".into()), ..UpdateConfig::default() },
            ..DnsConfig::default()
        };
        assert_eq!(keys(&config.validate().unwrap_err()), [("dns.update.server", RuleKind::Invalid)]);
    }

    #[test]
    fn toml_round_trip_and_unknown_keys() {
        let text = r#"
            alias = "mgmt.example.internal"
            [responder]
            enabled = true
            mode = "primary-only"
            listen = "[::]:53"
            [responder.nodes.3]
            listen = "127.0.0.1:5303"
            [update]
            enabled = true
            server = "192.0.2.53"
            zone = "example.internal"
            key_name = "haven-update"
            key_algorithm = "hmac-sha512"
            key_secret_file = "/etc/haven/dns.key"
        "#;
        let config: DnsConfig = toml::from_str(text).unwrap();
        assert_eq!(config.responder.mode, AnswerMode::PrimaryOnly);
        assert_eq!(config.update.key_algorithm, KeyAlgorithm::HmacSha512);
        let settings = config.validate().unwrap();
        assert_eq!(settings.responder.unwrap().for_node(3).listen, "127.0.0.1:5303".parse().unwrap());
        let json = serde_json::to_value(&config).unwrap();
        assert_eq!(serde_json::from_value::<DnsConfig>(json).unwrap(), config);
        assert!(toml::from_str::<DnsConfig>("alias = \"a.b\"\nttl = 5").is_err());
        assert!(toml::from_str::<DnsConfig>("[update]\nkey_algorithm = \"hmac-md5\"").is_err());
    }

    #[test]
    fn algorithm_names() {
        assert_eq!(KeyAlgorithm::from_name("HMAC-SHA256."), Some(KeyAlgorithm::HmacSha256));
        assert_eq!(KeyAlgorithm::from_name("hmac-sha384"), Some(KeyAlgorithm::HmacSha384));
        assert_eq!(KeyAlgorithm::from_name("hmac-md5.sig-alg.reg.int"), None);
    }
}
