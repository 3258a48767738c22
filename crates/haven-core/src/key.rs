//! What a key may be.
//!
//! Keys are UTF-8 names that may contain `/` (hierarchies like `hosts/web-1/ip`). They
//! travel in URL paths and in logs, so control characters are refused: they would make
//! log lines and terminal output lie about what was stored.

use crate::limits::KEY_BYTES_MAX;

/// Why a key was refused; the message says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the key is empty; give a non-empty key")]
    Empty,
    #[error("the key is {len} bytes; the limit is {KEY_BYTES_MAX} bytes")]
    TooLong { len: usize },
    #[error("the key contains the control character U+{code:04X} at byte {offset}; keys must be printable")]
    ControlCharacter { code: u32, offset: usize },
}

/// Checks a key against the rules above.
pub fn validate_key(key: &str) -> Result<(), KeyError> {
    if key.is_empty() {
        return Err(KeyError::Empty);
    }
    if key.len() > KEY_BYTES_MAX {
        return Err(KeyError::TooLong { len: key.len() });
    }
    if let Some((offset, ch)) = key.char_indices().find(|(_, ch)| ch.is_control()) {
        return Err(KeyError::ControlCharacter { code: ch as u32, offset });
    }
    Ok(())
}

/// Does `key` fall under `prefix`? An empty prefix matches everything.
pub fn key_has_prefix(key: &str, prefix: &str) -> bool {
    key.starts_with(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_hierarchical_keys() {
        assert_eq!(validate_key("hosts/web-1/ip"), Ok(()));
        assert_eq!(validate_key("/leading/slash"), Ok(()));
        assert_eq!(validate_key("ünïcode"), Ok(()));
    }

    #[test]
    fn refuses_empty_long_and_control() {
        assert_eq!(validate_key(""), Err(KeyError::Empty));
        let long = "k".repeat(KEY_BYTES_MAX + 1);
        assert_eq!(validate_key(&long), Err(KeyError::TooLong { len: KEY_BYTES_MAX + 1 }));
        assert_eq!(validate_key(&"k".repeat(KEY_BYTES_MAX)), Ok(()));
        assert_eq!(validate_key("a\nb"), Err(KeyError::ControlCharacter { code: 10, offset: 1 }));
        assert_eq!(validate_key("a\0"), Err(KeyError::ControlCharacter { code: 0, offset: 1 }));
    }
}
