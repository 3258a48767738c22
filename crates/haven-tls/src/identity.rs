//! A node's key pair and self-signed certificate, and key fingerprints.

use std::io::Write;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;
use std::time::SystemTime;

use base64::Engine;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::PrivatePkcs8KeyDer;

use crate::TlsError;

pub const KEY_FILE: &str = "node.key";
pub const CERT_FILE: &str = "node.crt";

/// How long a generated certificate is valid. The trust is in the pinned key, not in the
/// certificate's dates, so a long validity avoids surprise expiry; ten years.
pub const CERT_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// A node's TLS identity: its certificate and private key.
#[derive(Clone)]
pub struct NodeIdentityKey {
    cert_der: Vec<u8>,
    key_der: Vec<u8>,
    fingerprint: String,
}

impl std::fmt::Debug for NodeIdentityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("NodeIdentityKey").field("fingerprint", &self.fingerprint).finish()
    }
}

impl NodeIdentityKey {
    /// Generates an ECDSA P-256 key and a self-signed certificate naming `localhost`,
    /// 127.0.0.1 and `addresses`, valid from `not_before` for `validity`.
    pub fn generate_with_validity(
        addresses: &[IpAddr],
        not_before: SystemTime,
        validity: Duration,
    ) -> Result<Self, TlsError> {
        let generate = |e: rcgen::Error| TlsError::Generate(e.to_string());
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(generate)?;
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).map_err(generate)?;
        let mut ips: Vec<IpAddr> = vec![IpAddr::from([127, 0, 0, 1])];
        ips.extend(addresses.iter().filter(|ip| !ip.is_unspecified()));
        ips.dedup();
        for ip in ips {
            params.subject_alt_names.push(rcgen::SanType::IpAddress(ip));
        }
        params.distinguished_name.push(rcgen::DnType::CommonName, "haven node");
        params.not_before = not_before.into();
        params.not_after = (not_before + validity).into();
        let cert = params.self_signed(&key).map_err(generate)?;
        Self::from_der(cert.der().to_vec(), key.serialize_der())
    }

    pub fn generate(addresses: &[IpAddr]) -> Result<Self, TlsError> {
        // Backdated a day so a peer whose clock is slightly behind accepts it at once.
        let not_before = SystemTime::now() - Duration::from_secs(24 * 3600);
        Self::generate_with_validity(addresses, not_before, CERT_VALIDITY)
    }

    pub fn from_der(cert_der: Vec<u8>, key_der: Vec<u8>) -> Result<Self, TlsError> {
        let fingerprint = fingerprint(&cert_der)?;
        Ok(NodeIdentityKey { cert_der, key_der, fingerprint })
    }

    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// curl's `--pinnedpubkey` form: `sha256//BASE64`.
    pub fn curl_pin(&self) -> Result<String, TlsError> {
        curl_pin(&self.cert_der)
    }

    pub fn cert_chain(&self) -> Vec<CertificateDer<'static>> {
        vec![CertificateDer::from(self.cert_der.clone())]
    }

    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }

    pub fn cert_pem(&self) -> String {
        pem("CERTIFICATE", &self.cert_der)
    }

    /// Writes `node.key` (mode 0600, created with that mode) and `node.crt` into `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), TlsError> {
        std::fs::create_dir_all(dir).map_err(|e| file_error(dir, e))?;
        let key_path = dir.join(KEY_FILE);
        write_private(&key_path, pem("PRIVATE KEY", &self.key_der).as_bytes())?;
        let cert_path = dir.join(CERT_FILE);
        std::fs::write(&cert_path, self.cert_pem()).map_err(|e| file_error(&cert_path, e))
    }

    /// Loads an operator-provided certificate and PKCS#8 key (PEM files).
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        Self::from_der(read_pem(cert, "CERTIFICATE")?, read_pem(key, "PRIVATE KEY")?)
    }

    /// Loads `node.key` and `node.crt` from `dir`; `None` when neither exists.
    pub fn load(dir: &Path) -> Result<Option<Self>, TlsError> {
        let key_path = dir.join(KEY_FILE);
        let cert_path = dir.join(CERT_FILE);
        if !key_path.exists() && !cert_path.exists() {
            return Ok(None);
        }
        let cert_der = read_pem(&cert_path, "CERTIFICATE")?;
        let key_der = read_pem(&key_path, "PRIVATE KEY")?;
        Self::from_der(cert_der, key_der).map(Some)
    }

    /// Loads the identity in `dir`, generating and saving one first if there is none.
    /// The flag says whether it was generated.
    pub fn load_or_generate(dir: &Path, addresses: &[IpAddr]) -> Result<(Self, bool), TlsError> {
        if let Some(identity) = Self::load(dir)? {
            return Ok((identity, false));
        }
        let identity = Self::generate(addresses)?;
        identity.save(dir)?;
        Ok((identity, true))
    }
}

/// `sha256:` + lowercase hex SHA-256 of the certificate's DER SubjectPublicKeyInfo.
pub fn fingerprint(cert_der: &[u8]) -> Result<String, TlsError> {
    let digest = ring::digest::digest(&ring::digest::SHA256, spki(cert_der)?);
    let hex: String = digest.as_ref().iter().map(|byte| format!("{byte:02x}")).collect();
    Ok(format!("sha256:{hex}"))
}

/// curl's pin form of the same key: `sha256//` + base64 of the SPKI SHA-256.
pub fn curl_pin(cert_der: &[u8]) -> Result<String, TlsError> {
    let digest = ring::digest::digest(&ring::digest::SHA256, spki(cert_der)?);
    Ok(format!("sha256//{}", base64::engine::general_purpose::STANDARD.encode(digest.as_ref())))
}

/// Checks a fingerprint's form and returns it normalised (lowercase).
pub fn parse_fingerprint(text: &str) -> Result<String, TlsError> {
    haven_core::config::parse_fingerprint(text).ok_or_else(|| TlsError::Fingerprint(text.chars().take(80).collect()))
}

fn spki(cert_der: &[u8]) -> Result<&[u8], TlsError> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).map_err(|e| TlsError::Certificate(e.to_string()))?;
    Ok(cert.tbs_certificate.subject_pki.raw)
}

fn file_error(path: &Path, error: impl std::fmt::Display) -> TlsError {
    TlsError::File { path: path.display().to_string(), reason: error.to_string() }
}

/// Writes a secret to a new file created with mode 0600 (never wider, not even for an
/// instant: the mode is set by `open`, not by a `chmod` after it), and fsyncs it.
pub fn write_private(path: &Path, contents: &[u8]) -> Result<(), TlsError> {
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| file_error(path, e))?;
    file.write_all(contents).map_err(|e| file_error(path, e))?;
    file.sync_all().map_err(|e| file_error(path, e))
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = body.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap_or_default()).collect();
    format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
}

/// Every certificate in a PEM file (a CA bundle).
pub fn read_pem_certificates(path: &Path) -> Result<Vec<Vec<u8>>, TlsError> {
    let text = std::fs::read_to_string(path).map_err(|e| file_error(path, e))?;
    let mut out = Vec::new();
    let mut rest = text.as_str();
    while let Some(start) = rest.find("-----BEGIN CERTIFICATE-----") {
        let body_start = start + "-----BEGIN CERTIFICATE-----".len();
        let Some(stop) = rest[body_start..].find("-----END CERTIFICATE-----") else { break };
        let body: String = rest[body_start..body_start + stop].chars().filter(|c| !c.is_whitespace()).collect();
        out.push(base64::engine::general_purpose::STANDARD.decode(body).map_err(|e| file_error(path, e))?);
        rest = &rest[body_start + stop..];
    }
    if out.is_empty() {
        return Err(file_error(path, "no CERTIFICATE block"));
    }
    Ok(out)
}

fn read_pem(path: &Path, label: &str) -> Result<Vec<u8>, TlsError> {
    let text = std::fs::read_to_string(path).map_err(|e| file_error(path, e))?;
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin).ok_or_else(|| file_error(path, format!("no {label} block")))? + begin.len();
    let stop = text[start..].find(&end).ok_or_else(|| file_error(path, format!("unterminated {label} block")))? + start;
    let body: String = text[start..stop].chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD.decode(body).map_err(|e| file_error(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_save_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let (generated, fresh) = NodeIdentityKey::load_or_generate(dir.path(), &["10.0.0.1".parse().unwrap()]).unwrap();
        assert!(fresh);
        let (loaded, fresh) = NodeIdentityKey::load_or_generate(dir.path(), &[]).unwrap();
        assert!(!fresh);
        assert_eq!(generated.fingerprint(), loaded.fingerprint());
        assert!(parse_fingerprint(loaded.fingerprint()).is_ok());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(KEY_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the private key is readable by its owner only");
        assert!(loaded.curl_pin().unwrap().starts_with("sha256//"));
    }

    #[test]
    fn fingerprints_differ_per_key_and_parse_strictly() {
        let a = NodeIdentityKey::generate(&[]).unwrap();
        let b = NodeIdentityKey::generate(&[]).unwrap();
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert!(parse_fingerprint("sha256:abc").is_err());
        assert!(parse_fingerprint("md5:0000").is_err());
        assert_eq!(
            parse_fingerprint(&a.fingerprint().to_uppercase().replace("SHA256", "sha256")).unwrap(),
            a.fingerprint()
        );
        assert!(fingerprint(b"not a certificate").is_err());
    }
}
