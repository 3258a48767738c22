//! Relative paths inside a replicated directory, kept byte-exact.
//!
//! Linux names are bytes, not text. A package tree may hold a name that is not UTF-8 (an
//! archive unpacked from another locale) or that contains a newline; refusing it would
//! leave that file missing on the new primary after a failover. So names are replicated
//! exactly as the primary has them, and only shown escaped (`\n`, `\xff`) so every message
//! stays on one line. What is refused is what could escape the directory or cannot exist
//! on Linux: absolute paths, empty, `.` and `..` components, NUL bytes, over-long names.
//!
//! Names starting with [`TEMP_PREFIX`] are reserved for files being applied.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::path::PathBuf;

use serde::Deserialize;
use serde::Serialize;

use crate::limits::DEPTH_MAX;
use crate::limits::NAME_BYTES_MAX;
use crate::limits::PATH_BYTES_MAX;

/// Prefix of the temporary files an apply writes next to their final place. A name with
/// this prefix on the primary is not replicated (it is skipped and reported), so a
/// leftover from an interrupted apply can always be told from real content and removed.
pub const TEMP_PREFIX: &[u8] = b".haven-tmp.";

/// A path relative to the replicated directory: components joined by `/`, checked by
/// [`RelPath::check`] wherever it comes from outside (a scan builds only valid ones).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RelPath(Vec<u8>);

/// Why a relative path is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("empty path")]
    Empty,
    #[error("{0}: absolute path (paths must be relative to the replicated directory)")]
    Absolute(String),
    #[error("{0}: empty, `.` or `..` component (a path must not leave or alias its directory)")]
    BadComponent(String),
    #[error("{0}: contains a NUL byte")]
    Nul(String),
    #[error("{0}: a name is longer than {NAME_BYTES_MAX} bytes")]
    NameTooLong(String),
    #[error("{0}: longer than {PATH_BYTES_MAX} bytes")]
    TooLong(String),
    #[error("{0}: nested deeper than {DEPTH_MAX} levels")]
    TooDeep(String),
    #[error("{0}: names starting with `.haven-tmp.` are reserved for files being applied")]
    Reserved(String),
}

impl RelPath {
    /// A checked path from its bytes.
    pub fn new(bytes: Vec<u8>) -> Result<RelPath, PathError> {
        let path = RelPath(bytes);
        path.check()?;
        Ok(path)
    }

    /// Checks every rule; the error shows the path escaped.
    pub fn check(&self) -> Result<(), PathError> {
        let bytes = &self.0;
        let shown = || show(bytes);
        if bytes.is_empty() {
            return Err(PathError::Empty);
        }
        if bytes[0] == b'/' {
            return Err(PathError::Absolute(shown()));
        }
        if bytes.contains(&0) {
            return Err(PathError::Nul(shown()));
        }
        if bytes.len() > PATH_BYTES_MAX {
            return Err(PathError::TooLong(shown()));
        }
        let mut depth = 0;
        for name in bytes.split(|byte| *byte == b'/') {
            depth += 1;
            if name.is_empty() || name == b"." || name == b".." {
                return Err(PathError::BadComponent(shown()));
            }
            if name.len() > NAME_BYTES_MAX {
                return Err(PathError::NameTooLong(shown()));
            }
            if name.starts_with(TEMP_PREFIX) {
                return Err(PathError::Reserved(shown()));
            }
        }
        if depth > DEPTH_MAX {
            return Err(PathError::TooDeep(shown()));
        }
        Ok(())
    }

    /// The path's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The parent path, or `None` at the top level.
    pub fn parent(&self) -> Option<&[u8]> {
        self.0.iter().rposition(|byte| *byte == b'/').map(|end| &self.0[..end])
    }

    /// The last component.
    pub fn name(&self) -> &[u8] {
        match self.0.iter().rposition(|byte| *byte == b'/') {
            Some(end) => &self.0[end + 1..],
            None => &self.0,
        }
    }

    /// Components from the top: `a`, `a/b`, `a/b/c` for `a/b/c`, each a prefix of the path.
    pub fn ancestors(&self) -> impl Iterator<Item = &[u8]> {
        self.0.iter().enumerate().filter(|(_, byte)| **byte == b'/').map(|(at, _)| &self.0[..at])
    }

    /// Number of components.
    pub fn depth(&self) -> usize {
        1 + self.0.iter().filter(|byte| **byte == b'/').count()
    }

    /// This path under `root` on disk.
    pub fn under(&self, root: &Path) -> PathBuf {
        root.join(OsStr::from_bytes(&self.0))
    }

    /// `name` inside this directory (unchecked: the caller checks or builds from a scan).
    pub(crate) fn child(parent: Option<&RelPath>, name: &[u8]) -> RelPath {
        match parent {
            None => RelPath(name.to_vec()),
            Some(parent) => {
                let mut bytes = Vec::with_capacity(parent.0.len() + 1 + name.len());
                bytes.extend_from_slice(&parent.0);
                bytes.push(b'/');
                bytes.extend_from_slice(name);
                RelPath(bytes)
            }
        }
    }

    /// Unchecked, for tests that build what a hostile peer could send.
    #[cfg(test)]
    pub(crate) fn from_disk(bytes: Vec<u8>) -> RelPath {
        RelPath(bytes)
    }
}

impl std::fmt::Display for RelPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&show(&self.0))
    }
}

impl std::fmt::Debug for RelPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", show(&self.0))
    }
}

/// Bytes shown on one line: valid UTF-8 as is, except control characters and `\`
/// (escaped like Rust strings), and every invalid byte as `\xNN`.
pub fn show(bytes: &[u8]) -> String {
    let mut shown = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for character in chunk.valid().chars() {
            if character.is_control() || character == '\\' {
                shown.extend(character.escape_default());
            } else {
                shown.push(character);
            }
        }
        for byte in chunk.invalid() {
            shown.push_str(&format!("\\x{byte:02x}"));
        }
    }
    shown
}

/// A path on disk shown on one line.
pub fn show_path(path: &Path) -> String {
    show(path.as_os_str().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(bytes: &[u8]) -> PathError {
        RelPath::new(bytes.to_vec()).unwrap_err()
    }

    #[test]
    fn paths_that_could_leave_the_directory_are_refused() {
        assert!(matches!(refused(b"/etc/passwd"), PathError::Absolute(_)));
        assert!(matches!(refused(b".."), PathError::BadComponent(_)));
        assert!(matches!(refused(b"a/../../etc"), PathError::BadComponent(_)));
        assert!(matches!(refused(b"a/./b"), PathError::BadComponent(_)));
        assert!(matches!(refused(b"a//b"), PathError::BadComponent(_)));
        assert!(matches!(refused(b"a/"), PathError::BadComponent(_)));
        assert!(matches!(refused(b"a\0b"), PathError::Nul(_)));
        assert!(matches!(refused(b""), PathError::Empty));
        assert!(matches!(refused(b"x/.haven-tmp.1"), PathError::Reserved(_)));
        assert!(matches!(refused(&[b'n'; NAME_BYTES_MAX + 1]), PathError::NameTooLong(_)));
        let deep = vec!["d"; DEPTH_MAX + 1].join("/");
        assert!(matches!(refused(deep.as_bytes()), PathError::TooDeep(_)));
        let long = vec!["n".repeat(200); 16].join("/");
        assert!(matches!(refused(long.as_bytes()), PathError::TooLong(_)));
    }

    #[test]
    fn odd_but_valid_names_are_kept_byte_exact() {
        for bytes in [&b"caf\xc3\xa9"[..], b"line\nbreak", b"latin1-\xe9", b"...", b"a/.b", b" "] {
            let path = RelPath::new(bytes.to_vec()).unwrap();
            assert_eq!(path.as_bytes(), bytes);
        }
    }

    #[test]
    fn names_are_shown_on_one_line() {
        assert_eq!(show(b"a\nb"), "a\\nb");
        assert_eq!(show(b"latin1-\xe9"), "latin1-\\xe9");
        assert_eq!(show("café".as_bytes()), "café");
        assert_eq!(show(b"back\\slash"), "back\\\\slash");
    }

    #[test]
    fn parent_name_and_ancestors() {
        let path = RelPath::new(b"a/b/c".to_vec()).unwrap();
        assert_eq!(path.parent(), Some(&b"a/b"[..]));
        assert_eq!(path.name(), b"c");
        assert_eq!(path.ancestors().collect::<Vec<_>>(), vec![&b"a"[..], &b"a/b"[..]]);
        assert_eq!(path.depth(), 3);
        let top = RelPath::new(b"top".to_vec()).unwrap();
        assert_eq!(top.parent(), None);
        assert_eq!(top.ancestors().count(), 0);
    }
}
