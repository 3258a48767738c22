//! Checks of the addresses a node announces about itself (a join request's `client_url` and
//! `peer_addr`): they go into the membership, every member dials them and logs them, and
//! clients learn them from `/v1/status`, so they must be exactly an address and nothing
//! else: no control characters (a newline would forge a log line), no user info, path or
//! query, a port that exists.

use crate::ha::syntax::check_host_name;

/// Longest announced address: a DNS name is at most 253 characters, plus scheme and port.
pub const ENDPOINT_CHARS_MAX: usize = 256;

/// Checks `host:port`: an IPv4 address, a bracketed IPv6 address or a DNS name, and a port
/// 1-65535.
pub fn validate_host_port(text: &str) -> Result<(), String> {
    if text.is_empty() || text.len() > ENDPOINT_CHARS_MAX {
        return Err(format!("must be HOST:PORT of 1-{ENDPOINT_CHARS_MAX} characters"));
    }
    if let Some(bad) = text.chars().find(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!("must not contain {bad:?}"));
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err("must be HOST:PORT, for example 10.0.0.1:7101".into());
    };
    let port_ok =
        !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok_and(|p| p > 0);
    if !port_ok {
        return Err(format!("the port must be 1-65535, not {port:?}"));
    }
    validate_host(host)
}

/// Checks a client URL: `https://HOST:PORT` (`http://` only when `allow_http`, for
/// `--insecure-dev` clusters), optionally with one trailing `/`.
pub fn validate_client_url(text: &str, allow_http: bool) -> Result<(), String> {
    if text.len() > ENDPOINT_CHARS_MAX {
        return Err(format!("must be at most {ENDPOINT_CHARS_MAX} characters"));
    }
    let authority = match (text.strip_prefix("https://"), text.strip_prefix("http://")) {
        (Some(rest), _) => rest,
        (None, Some(rest)) if allow_http => rest,
        (None, Some(_)) => return Err("must use https:// (this cluster speaks TLS)".into()),
        (None, None) => return Err("must be https://HOST:PORT".into()),
    };
    let authority = authority.strip_suffix('/').unwrap_or(authority);
    if authority.contains(['/', '?', '#', '@']) {
        return Err("must be scheme://HOST:PORT only: no user, path, query or fragment".into());
    }
    validate_host_port(authority)
}

/// An IPv4 address, a bracketed IPv6 address, or a host name by the rules the HA
/// configuration checks its hosts with (`ha::syntax::check_host_name`).
fn validate_host(host: &str) -> Result<(), String> {
    if let Some(inner) = host.strip_prefix('[').and_then(|rest| rest.strip_suffix(']')) {
        return inner.parse::<std::net::Ipv6Addr>().map(|_| ()).map_err(|_| format!("{host:?} is not an IPv6 address"));
    }
    if host.parse::<std::net::Ipv4Addr>().is_ok() {
        return Ok(());
    }
    check_host_name(host).map_err(|reason| format!("{host:?}: {reason}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_exactly_addresses() {
        for good in ["10.0.0.1:7101", "[::1]:7101", "node-2.example.com:1", "localhost:65535"] {
            assert_eq!(validate_host_port(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "10.0.0.1",
            "10.0.0.1:0",
            "10.0.0.1:65536",
            "10.0.0.1:+80",
            "10.0.0.1:7101\n2025-01-01 INFO forged",
            "host name:1",
            "[::1:1",
            "::1:7101",
            "-bad.example:1",
            "a..b:1",
            "10.0.0.256:7101",
            &format!("{}:1", "a".repeat(300)),
        ] {
            assert!(validate_host_port(bad).is_err(), "{bad:?}");
        }
        assert_eq!(validate_client_url("https://10.0.0.1:7001", false), Ok(()));
        assert_eq!(validate_client_url("https://10.0.0.1:7001/", false), Ok(()));
        assert_eq!(validate_client_url("http://127.0.0.1:7001", true), Ok(()));
        for bad in [
            "http://10.0.0.1:7001",
            "10.0.0.1:7001",
            "https://user@10.0.0.1:7001",
            "https://10.0.0.1:7001/path",
            "https://10.0.0.1:7001?x",
            "https://10.0.0.1:7001\r\n",
            "https://",
        ] {
            assert!(validate_client_url(bad, false).is_err(), "{bad:?}");
        }
    }
}
