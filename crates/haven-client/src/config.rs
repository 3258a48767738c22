//! What a [`crate::Client`] needs to know: where the cluster is, how long to wait, how
//! often to retry, and the bearer token.
//!
//! Endpoints are parsed and normalised here once (`host:port` becomes `http://host:port`,
//! trailing slashes go), so the rest of the crate compares them as plain strings, e.g. to
//! recognise the leader URL a server advertises in `Haven-Leader`.

use std::fmt;
use std::time::Duration;

use reqwest::Url;

use crate::backoff::Backoff;
use crate::error::Error;

/// Default time one HTTP request may take. A linearizable read or a write needs a round
/// trip to the leader and a quorum fsync (milliseconds on a LAN); 5 s leaves room for a
/// slow disk while still moving on to the next endpoint before an operator gives up.
pub const REQUEST_TIMEOUT_DEFAULT: Duration = Duration::from_secs(5);

/// Longest TCP connect. A node that does not accept within 2 s is down or blackholed;
/// waiting longer only delays trying the next endpoint. Kept separate from the request
/// timeout so a refused or hung connect is known not to have delivered a write.
pub const CONNECT_TIMEOUT_MAX: Duration = Duration::from_secs(2);

/// Default number of HTTP requests one call may make over all endpoints and rounds:
/// enough for three rounds over a 3-node cluster plus an election.
pub const MAX_ATTEMPTS_DEFAULT: u32 = 10;

/// Default total time one call may take, retries and back-off included. An election
/// after a leader crash takes about a second or two; 30 s rides out several.
pub const DEADLINE_DEFAULT: Duration = Duration::from_secs(30);

/// Most endpoints a client accepts: a cluster has at most 7 voters plus learners; a list
/// far longer than that is a mistake (and every round would take forever).
pub const ENDPOINTS_MAX: usize = 64;

/// Most attempts a call may be configured with: every retry loop is bounded.
pub const MAX_ATTEMPTS_LIMIT: u32 = 1000;

/// Configuration of a [`crate::Client`]. `Debug` does not print the token.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// Base URLs of the cluster's nodes, normalised (`http://127.0.0.1:7001`).
    pub endpoints: Vec<String>,
    /// Longest time one HTTP request may take (for a watch: until the response headers).
    pub request_timeout: Duration,
    /// Most HTTP requests one call makes before it gives up.
    pub max_attempts: u32,
    /// Longest time one call takes, retries and back-off included.
    pub deadline: Duration,
    /// Sleeps between full rounds over the endpoints.
    pub backoff: Backoff,
    /// Sent as `Authorization: Bearer <token>` on every request.
    pub token: Option<String>,
    /// `sha256:` fingerprints of server keys to trust for `https://` endpoints (any match
    /// is accepted). The client also learns the other members' keys from `/v1/status` of a
    /// node it already trusts, so a failover to a node not listed here still verifies.
    pub server_fingerprints: Vec<String>,
    /// Instead of fingerprints: a CA certificate (PEM) that signed the servers' certificates.
    pub ca_file: Option<std::path::PathBuf>,
    /// The cluster to talk to: answers from nodes of any other are refused
    /// ([`crate::Error::ClusterMismatch`]). `None`: the first cluster a node names.
    pub cluster_id: Option<String>,
    /// Seed of the back-off jitter, for tests and the simulator; `None` seeds from the OS.
    /// Request ids never come from this seed: two clients with the same seed must still
    /// send different ids, or the server would deduplicate one's write into the other's.
    pub jitter_seed: Option<u64>,
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("endpoints", &self.endpoints)
            .field("request_timeout", &self.request_timeout)
            .field("max_attempts", &self.max_attempts)
            .field("deadline", &self.deadline)
            .field("backoff", &self.backoff)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("server_fingerprints", &self.server_fingerprints)
            .field("ca_file", &self.ca_file)
            .field("cluster_id", &self.cluster_id)
            .field("jitter_seed", &self.jitter_seed)
            .finish()
    }
}

impl ClientConfig {
    /// A configuration with the default limits for already-parsed `endpoints`.
    pub fn new(endpoints: Vec<String>) -> Self {
        ClientConfig {
            endpoints,
            request_timeout: REQUEST_TIMEOUT_DEFAULT,
            max_attempts: MAX_ATTEMPTS_DEFAULT,
            deadline: DEADLINE_DEFAULT,
            backoff: Backoff::default(),
            token: None,
            server_fingerprints: Vec::new(),
            ca_file: None,
            cluster_id: None,
            jitter_seed: None,
        }
    }

    /// A configuration from a comma-separated list such as
    /// `http://10.0.0.1:7001,10.0.0.2:7001` (see [`parse_endpoints`]).
    pub fn from_endpoints_str(endpoints: &str) -> Result<Self, Error> {
        Ok(ClientConfig::new(parse_endpoints(endpoints)?))
    }

    /// Checks every rule; a client is only built from a configuration that passes.
    pub fn validate(mut self) -> Result<Self, Error> {
        if self.endpoints.is_empty() {
            return Err(Error::InvalidConfig("no endpoints given; give at least one node's client URL".into()));
        }
        if self.endpoints.len() > ENDPOINTS_MAX {
            return Err(Error::InvalidConfig(format!(
                "{} endpoints given; at most {ENDPOINTS_MAX} are accepted",
                self.endpoints.len()
            )));
        }
        self.endpoints = self.endpoints.iter().map(|e| normalize_endpoint(e)).collect::<Result<_, _>>()?;
        dedup_in_order(&mut self.endpoints);
        if self.request_timeout.is_zero() {
            return Err(Error::InvalidConfig("request_timeout is zero; give a positive timeout".into()));
        }
        if self.deadline.is_zero() {
            return Err(Error::InvalidConfig("deadline is zero; give a positive deadline".into()));
        }
        if self.max_attempts == 0 || self.max_attempts > MAX_ATTEMPTS_LIMIT {
            return Err(Error::InvalidConfig(format!(
                "max_attempts is {}; give 1 to {MAX_ATTEMPTS_LIMIT}",
                self.max_attempts
            )));
        }
        if self.backoff.base > self.backoff.cap {
            return Err(Error::InvalidConfig(format!(
                "back-off base {:?} is larger than its cap {:?}",
                self.backoff.base, self.backoff.cap
            )));
        }
        for fingerprint in &mut self.server_fingerprints {
            *fingerprint = haven_core::config::parse_fingerprint(fingerprint).ok_or_else(|| {
                Error::InvalidConfig(format!(
                    "server fingerprint {fingerprint:?} is malformed: expected sha256: followed by 64 hex digits, as \
                     `haven fingerprint` prints"
                ))
            })?;
        }
        let tls = self.endpoints.iter().any(|endpoint| endpoint.starts_with("https://"));
        if tls && self.server_fingerprints.is_empty() && self.ca_file.is_none() {
            return Err(Error::InvalidConfig(
                "https endpoints need the servers' key fingerprints (HAVEN_SERVER_FINGERPRINTS or \
                 --server-fingerprint; `haven fingerprint --dir DATA_DIR` on a node prints its own) or a CA file"
                    .into(),
            ));
        }
        if let Some(token) = &self.token {
            // A header value cannot hold these; refuse now instead of failing every request.
            if token.is_empty() || token.bytes().any(|b| b.is_ascii_control() || b == b' ') {
                return Err(Error::InvalidConfig("the token is empty or contains spaces or control characters".into()));
            }
        }
        Ok(self)
    }
}

/// Parses a comma-separated endpoint list. Blank items are skipped, duplicates removed
/// (first one wins, so the order the operator gave is kept).
pub fn parse_endpoints(list: &str) -> Result<Vec<String>, Error> {
    let mut endpoints = list
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(normalize_endpoint)
        .collect::<Result<Vec<_>, _>>()?;
    dedup_in_order(&mut endpoints);
    if endpoints.is_empty() {
        return Err(Error::InvalidConfig(format!(
            "no endpoints in {list:?}; give URLs like http://127.0.0.1:7001, separated by commas"
        )));
    }
    if endpoints.len() > ENDPOINTS_MAX {
        return Err(Error::InvalidConfig(format!(
            "{} endpoints given; at most {ENDPOINTS_MAX} are accepted",
            endpoints.len()
        )));
    }
    Ok(endpoints)
}

/// Turns `host:port` or `https://host:port/` into `https://host:port`. Without a scheme,
/// `https` is meant: nodes serve TLS unless started with `--insecure-dev`.
pub fn normalize_endpoint(endpoint: &str) -> Result<String, Error> {
    let endpoint = endpoint.trim();
    let with_scheme = if endpoint.contains("://") { endpoint.to_string() } else { format!("https://{endpoint}") };
    let url = Url::parse(&with_scheme)
        .map_err(|error| Error::InvalidConfig(format!("endpoint {endpoint:?} is not a URL: {error}")))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(Error::InvalidConfig(format!(
            "endpoint {endpoint:?} uses {}://; give https:// (or http:// for --insecure-dev nodes)",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(Error::InvalidConfig(format!("endpoint {endpoint:?} has no host")));
    }
    if !url.username().is_empty() || url.password().is_some() || url.query().is_some() || url.fragment().is_some() {
        return Err(Error::InvalidConfig(format!(
            "endpoint {endpoint:?} has user info, a query or a fragment; give scheme://host:port only"
        )));
    }
    // Keep a path prefix (a node behind a reverse proxy), without its trailing slash.
    let mut normalized = url.as_str().to_string();
    while normalized.ends_with('/') {
        normalized.pop();
    }
    Ok(normalized)
}

fn dedup_in_order(endpoints: &mut Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    endpoints.retain(|endpoint| seen.insert(endpoint.clone()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls_and_bare_host_ports() {
        let endpoints = parse_endpoints("http://127.0.0.1:7001, 127.0.0.1:7002 ,localhost:7003/").unwrap();
        // Without a scheme, https is meant: nodes serve TLS unless started --insecure-dev.
        assert_eq!(endpoints, ["http://127.0.0.1:7001", "https://127.0.0.1:7002", "https://localhost:7003"]);
    }

    #[test]
    fn normalises_case_trailing_slashes_and_duplicates() {
        let endpoints = parse_endpoints("HTTP://Node-1:7001/,http://node-1:7001,,[::1]:7002").unwrap();
        assert_eq!(endpoints, ["http://node-1:7001", "https://[::1]:7002"]);
        assert_eq!(normalize_endpoint("http://proxy/haven/").unwrap(), "http://proxy/haven");
        assert_eq!(normalize_endpoint("http://host").unwrap(), "http://host");
    }

    #[test]
    fn refuses_what_cannot_be_an_endpoint() {
        for bad in ["", " , ", "ftp://a", "http://", "http://u:p@a:1", "a:1?x=1", "a:99999"] {
            assert!(
                matches!(parse_endpoints(bad), Err(Error::InvalidConfig(_))),
                "{bad:?} was accepted: {:?}",
                parse_endpoints(bad)
            );
        }
        let too_many: Vec<String> = (0..=ENDPOINTS_MAX).map(|i| format!("h{i}:1")).collect();
        assert!(parse_endpoints(&too_many.join(",")).is_err());
    }

    #[test]
    fn validate_checks_every_rule() {
        let good = ClientConfig::from_endpoints_str("http://a:1").unwrap();
        assert!(good.clone().validate().is_ok());
        // https needs something to trust: fingerprints or a CA.
        let tls = ClientConfig::from_endpoints_str("a:1").unwrap();
        assert!(tls.clone().validate().is_err());
        let mut pinned = tls.clone();
        pinned.server_fingerprints = vec![format!("sha256:{}", "AB".repeat(32))];
        assert_eq!(pinned.validate().unwrap().server_fingerprints, [format!("sha256:{}", "ab".repeat(32))]);
        let mut malformed = tls;
        malformed.server_fingerprints = vec!["sha256:12".into()];
        assert!(malformed.validate().is_err());
        let mut c = good.clone();
        c.endpoints.clear();
        assert!(c.validate().is_err());
        let mut c = good.clone();
        c.request_timeout = Duration::ZERO;
        assert!(c.validate().is_err());
        let mut c = good.clone();
        c.max_attempts = 0;
        assert!(c.validate().is_err());
        let mut c = good.clone();
        c.backoff = Backoff { base: Duration::from_secs(3), cap: Duration::from_secs(1) };
        assert!(c.validate().is_err());
        let mut c = good.clone();
        c.token = Some("two words".into());
        assert!(c.validate().is_err());
        let mut c = good;
        c.endpoints = vec!["http://b:2/".into(), "http://b:2".into()];
        assert_eq!(c.validate().unwrap().endpoints, ["http://b:2"]);
    }

    #[test]
    fn debug_does_not_print_the_token() {
        let mut c = ClientConfig::from_endpoints_str("a:1").unwrap();
        c.token = Some("s3cret".into());
        let printed = format!("{c:?}");
        assert!(!printed.contains("s3cret"), "{printed}");
        assert!(printed.contains("<redacted>"));
    }
}
