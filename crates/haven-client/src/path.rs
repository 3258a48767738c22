//! Keys in URL paths.
//!
//! Keys contain `/` (`hosts/web-1/ip`) and the server routes `/v1/kv/{*key}`, so the `/`
//! stay as they are and every other byte outside the URL's unreserved set is
//! percent-encoded. Segments `.` and `..` cannot be sent at all: URL parsers (this one
//! included) resolve them, even percent-encoded, so `a/../b` would silently address `b`.

use haven_core::key::validate_key;

use crate::error::Error;

/// The path of `key` under `/v1/kv/`, or why the key cannot be sent.
pub(crate) fn kv_path(key: &str) -> Result<String, Error> {
    let invalid = |reason: String| Error::InvalidKey { key: key.to_string(), reason };
    validate_key(key).map_err(|error| invalid(error.to_string()))?;
    if key.split('/').any(|segment| segment == "." || segment == "..") {
        return Err(invalid("a path segment is `.` or `..`, which URLs cannot carry; rename the key".into()));
    }
    Ok(format!("/v1/kv/{}", encode_keeping_slashes(key)))
}

/// Percent-encodes everything except RFC 3986 unreserved characters and `/`.
fn encode_keeping_slashes(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~' | b'/') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_slashes_and_encodes_the_rest() {
        assert_eq!(kv_path("hosts/web-1/ip").unwrap(), "/v1/kv/hosts/web-1/ip");
        assert_eq!(kv_path("a b?c#d%e&f+g").unwrap(), "/v1/kv/a%20b%3Fc%23d%25e%26f%2Bg");
        assert_eq!(kv_path("ü").unwrap(), "/v1/kv/%C3%BC");
        assert_eq!(kv_path("/lead").unwrap(), "/v1/kv//lead");
        assert_eq!(kv_path("a/.b/..c").unwrap(), "/v1/kv/a/.b/..c");
    }

    /// The encoded path survives URL parsing unchanged: what is sent is what was asked for.
    #[test]
    fn encoded_paths_are_not_rewritten_by_url_parsing() {
        for key in ["a b", "x/%2e%2e/y", "back\\slash", "q?#", "ü/ß", "a//b", "/x"] {
            let path = kv_path(key).unwrap();
            let url = reqwest::Url::parse(&format!("http://h:1{path}")).unwrap();
            assert_eq!(url.path(), path, "{key:?}");
        }
    }

    #[test]
    fn refuses_unsendable_keys() {
        for key in ["", ".", "..", "a/./b", "a/..", "../etc", "a\nb"] {
            assert!(matches!(kv_path(key), Err(Error::InvalidKey { .. })), "{key:?} accepted");
        }
    }
}
