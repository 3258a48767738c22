//! Which files a node may read as a secret it sends elsewhere (today: `smtp.password_file`,
//! sent as the SMTP AUTH password to a host an admin chooses).
//!
//! Without these rules an admin token reads any small file of every node (its private key,
//! a token file) by naming it as the password and pointing `smtp.host` at itself. So a
//! secret file must lie in the node's secrets directory (`secrets_dir` in `haven.toml`,
//! default [`SECRETS_DIR_DEFAULT`]), be a regular file of the service user that no one else
//! can read, and not look like a key or a Haven token. The decisions are pure (paths,
//! owner, mode and bytes in; a reason out); `haven-server::alerts` does the IO.

use std::path::Component;
use std::path::Path;

use crate::auth::TOKEN_PREFIX;

/// Where secret files live unless `secrets_dir` says otherwise: the package's config dir.
pub const SECRETS_DIR_DEFAULT: &str = "/etc/haven";

/// Largest secret file: a password is a few dozen bytes; 4 KiB bounds the read and refuses
/// whatever else someone points at.
pub const SECRET_FILE_BYTES_MAX: u64 = 4096;

/// `path` (absolute, already resolved: no symlinks, no `..`) lies strictly inside
/// `secrets_dir` (resolved too).
pub fn check_inside(path: &Path, secrets_dir: &Path) -> Result<(), String> {
    let plain =
        |p: &Path| p.is_absolute() && p.components().all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if !plain(path) || !plain(secrets_dir) {
        return Err("must be an absolute path without `..`".into());
    }
    if path == secrets_dir || !path.starts_with(secrets_dir) {
        return Err(format!(
            "is outside the secrets directory {} (secrets_dir in haven.toml): put the file there",
            secrets_dir.display()
        ));
    }
    Ok(())
}

/// What the file system says about a secret file (from `fstat` of the opened file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecretFileMeta {
    pub is_regular: bool,
    pub owner: u32,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    pub len: u64,
}

/// The file is a regular file of `service_user` that group and others cannot touch, and
/// small enough to be a password.
pub fn check_meta(meta: SecretFileMeta, service_user: u32) -> Result<(), String> {
    if !meta.is_regular {
        return Err("is not a regular file".into());
    }
    if meta.owner != service_user {
        return Err(format!(
            "belongs to user id {}, not to the user the node runs as ({service_user}): `chown` it",
            meta.owner
        ));
    }
    if meta.mode & 0o077 != 0 {
        return Err(format!("has mode {:o}, readable or writable by group or others: `chmod 600` it", meta.mode));
    }
    if meta.len > SECRET_FILE_BYTES_MAX {
        return Err(format!("is larger than {SECRET_FILE_BYTES_MAX} bytes: not a password"));
    }
    Ok(())
}

/// The content is a password, not a key or certificate (PEM) and not a Haven token (a
/// node's `admin.token` copied there would be sent to the mail server).
pub fn check_content(bytes: &[u8]) -> Result<(), String> {
    let contains = |needle: &[u8]| bytes.windows(needle.len()).any(|window| window == needle);
    if contains(b"-----BEGIN") {
        return Err("holds a PEM block (a key or certificate), not a password".into());
    }
    if contains(TOKEN_PREFIX.as_bytes()) {
        return Err(format!("holds a Haven token ({TOKEN_PREFIX}...), not a password"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_files_strictly_inside_the_secrets_dir() {
        let dir = Path::new("/etc/haven");
        assert_eq!(check_inside(Path::new("/etc/haven/smtp.pw"), dir), Ok(()));
        assert_eq!(check_inside(Path::new("/etc/haven/sub/smtp.pw"), dir), Ok(()));
        for outside in ["/etc/haven", "/etc/havenx/pw", "/var/lib/haven/node.key", "/etc/passwd"] {
            let error = check_inside(Path::new(outside), dir).unwrap_err();
            assert!(error.contains("outside the secrets directory /etc/haven"), "{outside}: {error}");
        }
        for unresolved in ["/etc/haven/../passwd", "etc/haven/pw"] {
            assert!(check_inside(Path::new(unresolved), dir).is_err(), "{unresolved}");
        }
    }

    #[test]
    fn only_private_small_regular_files_of_the_service_user() {
        let good = SecretFileMeta { is_regular: true, owner: 100, mode: 0o600, len: 12 };
        assert_eq!(check_meta(good, 100), Ok(()));
        assert_eq!(check_meta(SecretFileMeta { mode: 0o400, ..good }, 100), Ok(()));
        let cases = [
            (SecretFileMeta { is_regular: false, ..good }, "not a regular file"),
            (SecretFileMeta { owner: 0, ..good }, "belongs to user id 0"),
            (SecretFileMeta { mode: 0o640, ..good }, "chmod 600"),
            (SecretFileMeta { mode: 0o604, ..good }, "chmod 600"),
            (SecretFileMeta { len: SECRET_FILE_BYTES_MAX + 1, ..good }, "not a password"),
        ];
        for (meta, expected) in cases {
            let error = check_meta(meta, 100).unwrap_err();
            assert!(error.contains(expected), "{meta:?}: {error}");
        }
    }

    #[test]
    fn keys_certificates_and_tokens_are_not_passwords() {
        assert_eq!(check_content(b"s3cret-Pa55\n"), Ok(()));
        let key = b"-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----\n";
        assert!(check_content(key).unwrap_err().contains("PEM"));
        assert!(check_content(b"-----BEGIN CERTIFICATE-----\n").unwrap_err().contains("PEM"));
        let token = b"hvn_abababababababab_0123456789012345678901234567890123456789012\n";
        assert!(check_content(token).unwrap_err().contains("Haven token"));
    }
}
