//! Haven's TLS identity and trust.
//!
//! ```text
//!   node key (ECDSA P-256) + self-signed certificate     DATA_DIR/node.key (0600), node.crt
//!        │ fingerprint = "sha256:" + hex(SHA-256(SubjectPublicKeyInfo DER))
//!        ▼
//!   PinSet ── shared, updated from the membership ──▶ PinnedServerVerifier (we dial out)
//!                                                   ▶ PinnedClientVerifier (they dial in)
//! ```
//!
//! Trust is by pinned key fingerprint (seed 002's "peer authentication fingerprint"), not by
//! certificate authorities: a certificate is accepted when its public key's fingerprint is in
//! the pin set, its validity dates cover now, and the handshake signature proves the peer
//! holds the private key (a copy of a pinned certificate without its key is useless).
//! TLS 1.3 only, with the ring provider.

pub mod identity;
pub mod verify;

pub use identity::fingerprint;
pub use identity::NodeIdentityKey;
pub use verify::error_chain;
pub use verify::is_certificate_refusal;
pub use verify::CertificateRefused;
pub use verify::PinSet;
pub use verify::PinnedClientVerifier;
pub use verify::PinnedServerVerifier;

use std::sync::Arc;

/// The crypto provider used everywhere: ring (no aws-lc, no OpenSSL). Also installed as
/// the process default, for libraries (reqwest) that look it up themselves.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client configuration that presents `identity` (when given) and accepts servers whose
/// fingerprint is in `pins`. TLS 1.3 only.
pub fn client_config(pins: PinSet, identity: Option<&NodeIdentityKey>) -> Result<rustls::ClientConfig, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsError::Rustls)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedServerVerifier::new(pins)));
    match identity {
        Some(identity) => {
            builder.with_client_auth_cert(identity.cert_chain(), identity.private_key()).map_err(TlsError::Rustls)
        }
        None => Ok(builder.with_no_client_auth()),
    }
}

/// A server configuration presenting `identity`; with `client_pins`, clients must present a
/// certificate whose fingerprint is pinned (mutual TLS). TLS 1.3 only.
pub fn server_config(
    identity: &NodeIdentityKey,
    client_pins: Option<PinSet>,
) -> Result<rustls::ServerConfig, TlsError> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsError::Rustls)?;
    let builder = match client_pins {
        Some(pins) => builder.with_client_cert_verifier(Arc::new(PinnedClientVerifier::new(pins))),
        None => builder.with_no_client_auth(),
    };
    builder.with_single_cert(identity.cert_chain(), identity.private_key()).map_err(TlsError::Rustls)
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS configuration: {0}")]
    Rustls(rustls::Error),
    #[error("key generation: {0}")]
    Generate(String),
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error("invalid certificate: {0}")]
    Certificate(String),
    #[error("invalid fingerprint {0:?}: expected sha256: followed by 64 lowercase hex digits")]
    Fingerprint(String),
}
