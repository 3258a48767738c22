//! Syntax of the values operators type into the HA configuration: IP addresses, host
//! names, e-mail addresses and absolute paths.
//!
//! ```text
//!   "10.0.0.1" | "gw.example.com" ──▶ parse_host ──▶ Host::Ip | Host::Name (normalised)
//!   "ops@example.com"             ──▶ check_email
//!   "/etc/haven/hook.sh"          ──▶ check_absolute_path
//! ```
//!
//! Syntax only: nothing is resolved, connected to or opened (the core has no network and
//! no filesystem). Names are checked against RFC 1123 so a typo is caught when the draft
//! is applied rather than when a failover needs the value.

use std::net::IpAddr;

/// Longest host name: RFC 1035 limits a name to 255 octets on the wire, 253 as text.
pub const HOST_NAME_BYTES_MAX: usize = 253;
/// Longest label of a host name (RFC 1035).
pub const HOST_LABEL_BYTES_MAX: usize = 63;
/// Longest e-mail address: RFC 5321 limits a forward path to 256 octets including the
/// angle brackets, leaving 254 for the address.
pub const EMAIL_BYTES_MAX: usize = 254;
/// Longest local part (before the `@`) of an e-mail address (RFC 5321).
pub const EMAIL_LOCAL_BYTES_MAX: usize = 64;
/// Longest path: Linux's PATH_MAX, so any path accepted here can be opened there.
pub const PATH_BYTES_MAX: usize = 4096;

/// A host as written: an IP address or a host name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Host {
    /// Canonical form: an IPv4-mapped IPv6 address becomes the IPv4 address, so
    /// `::ffff:10.0.0.1` and `10.0.0.1` compare equal.
    Ip(IpAddr),
    /// Lowercase, without a trailing dot: names compare case-insensitively (RFC 4343).
    Name(String),
}

impl Host {
    /// Addresses that always answer or never answer a unicast probe, and so say nothing
    /// about whether this node's network works: loopback, unspecified, multicast,
    /// broadcast, and the name `localhost`.
    pub fn is_special(&self) -> bool {
        match self {
            Host::Ip(IpAddr::V4(ip)) => {
                ip.is_loopback() || ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast()
            }
            Host::Ip(IpAddr::V6(ip)) => ip.is_loopback() || ip.is_unspecified() || ip.is_multicast(),
            Host::Name(name) => name == "localhost" || name.ends_with(".localhost"),
        }
    }
}

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Host::Ip(ip) => write!(f, "{ip}"),
            Host::Name(name) => f.write_str(name),
        }
    }
}

/// Parses an IP address or an RFC 1123 host name (a fully qualified name or a single
/// label). The error says in words what is wrong.
pub fn parse_host(text: &str) -> Result<Host, String> {
    if text.is_empty() {
        return Err("empty; give an IP address or a host name".into());
    }
    if text.trim() != text {
        return Err("has spaces around it".into());
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(Host::Ip(ip.to_canonical()));
    }
    check_host_name(text).map(|()| Host::Name(text.trim_end_matches('.').to_ascii_lowercase()))
}

/// Checks RFC 1123 host-name syntax: dot-separated labels of letters, digits and hyphens,
/// 1-63 bytes each, not starting or ending with a hyphen, 253 bytes in all, one optional
/// trailing dot. A name whose last label is all digits is refused: it was meant as an
/// IPv4 address and is not a valid one (RFC 3696 section 2).
pub fn check_host_name(text: &str) -> Result<(), String> {
    let name = text.strip_suffix('.').unwrap_or(text);
    if name.is_empty() {
        return Err("not a valid IP address or host name: empty name".into());
    }
    if name.len() > HOST_NAME_BYTES_MAX {
        return Err(format!("not a valid host name: longer than {HOST_NAME_BYTES_MAX} bytes"));
    }
    let labels: Vec<&str> = name.split('.').collect();
    for label in &labels {
        if label.is_empty() {
            return Err("not a valid IP address or host name: empty label (two dots in a row?)".into());
        }
        if label.len() > HOST_LABEL_BYTES_MAX {
            return Err(format!("not a valid host name: label `{label}` is longer than {HOST_LABEL_BYTES_MAX} bytes"));
        }
        if let Some(bad) = label.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '-')) {
            return Err(format!(
                "not a valid IP address or host name: `{bad}` is not allowed (letters, digits, hyphens and dots only)"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("not a valid host name: label `{label}` starts or ends with a hyphen"));
        }
    }
    if labels.last().is_some_and(|last| last.bytes().all(|b| b.is_ascii_digit())) {
        return Err("not a valid IP address (each of the four numbers is 0-255) nor a host name".into());
    }
    Ok(())
}

/// Checks the syntax of a plain e-mail address `local@domain` (RFC 5321/5322 dot-atom;
/// no display names, no quoted local parts, no IP literals: an alert recipient is a
/// mailbox an operator reads, and the simple form is what every mail server accepts).
pub fn check_email(text: &str) -> Result<(), String> {
    if text.len() > EMAIL_BYTES_MAX {
        return Err(format!("not a valid e-mail address: longer than {EMAIL_BYTES_MAX} bytes"));
    }
    let Some((local, domain)) = text.rsplit_once('@') else {
        return Err("not a valid e-mail address: expected name@domain".into());
    };
    if local.is_empty() || local.len() > EMAIL_LOCAL_BYTES_MAX {
        return Err(format!("not a valid e-mail address: the part before @ must be 1-{EMAIL_LOCAL_BYTES_MAX} bytes"));
    }
    const ATEXT_SYMBOLS: &str = "!#$%&'*+-/=?^_`{|}~";
    let atext = |c: char| c.is_ascii_alphanumeric() || ATEXT_SYMBOLS.contains(c);
    if local.split('.').any(|atom| atom.is_empty() || !atom.chars().all(atext)) {
        return Err("not a valid e-mail address: the part before @ has a character or dot that is not allowed".into());
    }
    check_host_name(domain).map_err(|why| format!("not a valid e-mail address: the domain is {why}"))
}

/// Checks that a path is absolute and names a file: starts with `/`, no `..` component
/// (the path is shown to operators and must mean what it says), no NUL, not ending in `/`.
pub fn check_absolute_path(text: &str) -> Result<(), String> {
    if !text.starts_with('/') {
        return Err("must be an absolute path (starting with /)".into());
    }
    if text.len() > PATH_BYTES_MAX {
        return Err(format!("longer than {PATH_BYTES_MAX} bytes"));
    }
    if text.contains('\0') {
        return Err("contains a NUL byte".into());
    }
    if text.ends_with('/') {
        return Err("names a directory; give the path of the file".into());
    }
    if text.split('/').any(|component| component == "..") {
        return Err("contains `..`; give the path without it".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_parse_and_normalise() {
        let cases: &[(&str, Option<&str>)] = &[
            ("10.0.0.1", Some("10.0.0.1")),
            ("::ffff:10.0.0.1", Some("10.0.0.1")),
            ("2001:db8::1", Some("2001:db8::1")),
            ("GW.Example.COM.", Some("gw.example.com")),
            ("router", Some("router")),
            ("a-b.c1.example", Some("a-b.c1.example")),
            ("", None),
            (" 10.0.0.1", None),
            ("10.0.0.256", None),
            ("999.1.1.1", None),
            ("1.2.3", None),
            ("-bad.example", None),
            ("bad-.example", None),
            ("a..b", None),
            ("under_score.example", None),
            ("[::1]", None),
            ("fe80::1%eth0", None),
            ("http://x", None),
        ];
        for (text, expected) in cases {
            let parsed = parse_host(text).map(|host| host.to_string());
            assert_eq!(parsed.as_deref().ok(), *expected, "{text:?} -> {parsed:?}");
        }
        assert!(parse_host(&format!("{}.example", "a".repeat(64))).is_err(), "label over 63 bytes");
        let long = vec!["abcdefghi"; 26].join(".");
        assert!(long.len() > HOST_NAME_BYTES_MAX && parse_host(&long).is_err(), "name over 253 bytes");
    }

    #[test]
    fn special_hosts_are_recognised() {
        for text in ["127.0.0.1", "127.8.0.1", "::1", "0.0.0.0", "::", "224.0.0.1", "255.255.255.255", "localhost"] {
            assert!(parse_host(text).unwrap().is_special(), "{text}");
        }
        for text in ["10.0.0.1", "192.168.1.1", "gw.example.com", "2001:db8::1"] {
            assert!(!parse_host(text).unwrap().is_special(), "{text}");
        }
    }

    #[test]
    fn emails_are_checked_for_syntax() {
        for good in ["ops@example.com", "first.last+ha@mail.example.org", "root@localhost"] {
            assert_eq!(check_email(good), Ok(()), "{good}");
        }
        for bad in ["", "ops", "@example.com", "ops@", "a..b@example.com", ".a@example.com", "Ops <ops@x.com>", "o@-x"]
        {
            assert!(check_email(bad).is_err(), "{bad}");
        }
        assert!(check_email(&format!("{}@example.com", "a".repeat(65))).is_err());
    }

    #[test]
    fn paths_must_be_absolute_files() {
        assert_eq!(check_absolute_path("/etc/haven/hook.sh"), Ok(()));
        for bad in ["hook.sh", "./hook.sh", "/etc/haven/", "/etc/../tmp/x", "/a\0b", ""] {
            assert!(check_absolute_path(bad).is_err(), "{bad:?}");
        }
        assert!(check_absolute_path(&format!("/{}", "a".repeat(PATH_BYTES_MAX))).is_err());
    }
}
