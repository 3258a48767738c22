//! Certificate verifiers that trust pinned key fingerprints.
//!
//! Both directions check, in order: the certificate parses; its key's fingerprint is
//! pinned; its validity dates cover now; and (in the handshake) the signature made with the
//! private key verifies. Every refusal carries its reason and the presented fingerprint
//! ([`CertificateRefused`]), so an operator can tell a stranger from a misconfigured member:
//! the accepting side logs it (rate-limited, `haven_net::accept`), the dialling side gets it
//! in its error.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::RwLock;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::client::danger::ServerCertVerified;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::ServerName;
use rustls::pki_types::UnixTime;
use rustls::server::danger::ClientCertVerified;
use rustls::server::danger::ClientCertVerifier;
use rustls::CertificateError;
use rustls::DigitallySignedStruct;
use rustls::DistinguishedName;
use rustls::SignatureScheme;

use crate::identity::fingerprint;

#[derive(Debug, Default)]
struct PinState {
    pins: BTreeSet<String>,
    /// Trust on first use: accept any key and remember it. Only when an operator asks.
    accept_any: bool,
    last_presented: Option<String>,
}

/// The fingerprints trusted now; shared so the owner can update it (from the membership)
/// while connections use it.
#[derive(Debug, Clone, Default)]
pub struct PinSet {
    state: Arc<RwLock<PinState>>,
}

impl PinSet {
    pub fn new(pins: impl IntoIterator<Item = String>) -> PinSet {
        let set = PinSet::default();
        set.replace(pins);
        set
    }

    /// A set that accepts any key (trust on first use) and records the one presented.
    pub fn trust_first_use() -> PinSet {
        let set = PinSet::default();
        set.write().accept_any = true;
        set
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, PinState> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, PinState> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn replace(&self, pins: impl IntoIterator<Item = String>) {
        self.write().pins = pins.into_iter().collect();
    }

    pub fn insert(&self, pin: String) {
        self.write().pins.insert(pin);
    }

    pub fn contains(&self, pin: &str) -> bool {
        let state = self.read();
        state.accept_any || state.pins.contains(pin)
    }

    pub fn pins(&self) -> BTreeSet<String> {
        self.read().pins.clone()
    }

    /// The fingerprint of the last certificate this set was asked about.
    pub fn last_presented(&self) -> Option<String> {
        self.read().last_presented.clone()
    }

    /// The checks common to both directions (not the signature, which comes later).
    fn check(&self, cert: &CertificateDer<'_>, now: UnixTime) -> Result<String, rustls::Error> {
        let Ok(presented) = fingerprint(cert) else {
            return Err(CertificateRefused::error("unparsable certificate", None));
        };
        self.write().last_presented = Some(presented.clone());
        if !self.contains(&presented) {
            return Err(CertificateRefused::error("key fingerprint not pinned (not a member)", Some(presented)));
        }
        let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert) else {
            return Err(CertificateRefused::error("unparsable certificate", Some(presented)));
        };
        let now_secs = now.as_secs() as i64;
        let validity = parsed.validity();
        if now_secs < validity.not_before.timestamp() {
            return Err(CertificateRefused::error("certificate not valid yet", Some(presented)));
        }
        if now_secs > validity.not_after.timestamp() {
            return Err(CertificateRefused::error("certificate expired", Some(presented)));
        }
        Ok(presented)
    }
}

/// Why a certificate was refused, with the fingerprint of the key it presented (when it
/// parsed): carried inside rustls's error so whoever sees the failed handshake can say it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateRefused {
    pub reason: &'static str,
    pub fingerprint: Option<String>,
}

impl CertificateRefused {
    fn error(reason: &'static str, fingerprint: Option<String>) -> rustls::Error {
        let refused = CertificateRefused { reason, fingerprint };
        rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(refused))))
    }

    /// The refusal inside a failed handshake's error, if a verifier of this crate made it.
    pub fn of(error: &rustls::Error) -> Option<&CertificateRefused> {
        match error {
            rustls::Error::InvalidCertificate(CertificateError::Other(other)) => other.0.downcast_ref(),
            _ => None,
        }
    }
}

impl std::fmt::Display for CertificateRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.fingerprint {
            Some(fingerprint) => write!(f, "{}; the presented key is {fingerprint}", self.reason),
            None => f.write_str(self.reason),
        }
    }
}

impl std::error::Error for CertificateRefused {}

/// Every message of an error's chain of causes, outermost first, joined by `: ` (a failed
/// handshake deep inside an HTTP client's error then reads as the whole story).
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut current = error.source();
    while let Some(source) = current {
        text.push_str(": ");
        text.push_str(&source.to_string());
        current = source.source();
    }
    text
}

/// Whether a failed connection was refused for the peer's certificate (by a verifier of
/// this crate, or rustls's own checks). Judged from the chain's text: an HTTP client wraps
/// rustls's error in I/O errors that do not expose it as a source to downcast.
pub fn is_certificate_refusal(error: &(dyn std::error::Error + 'static)) -> bool {
    let chain = error_chain(error);
    chain.contains("invalid peer certificate") || chain.contains("InvalidCertificate")
}

/// Verifies the handshake signature: proof that the peer holds the private key.
fn verify_signature(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    let provider = crate::provider();
    rustls::crypto::verify_tls13_signature(message, cert, dss, &provider.signature_verification_algorithms).map_err(
        |_| {
            CertificateRefused::error(
                "handshake signature invalid (certificate presented without its private key?)",
                fingerprint(cert).ok(),
            )
        },
    )
}

/// The signature methods both verifier traits share: TLS 1.2 refused (TLS 1.3 only), TLS 1.3
/// signatures checked against the presented certificate's key, the provider's schemes.
macro_rules! handshake_signature_methods {
    () => {
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Err(rustls::Error::PeerIncompatible(rustls::PeerIncompatible::Tls13RequiredForQuic))
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            schemes()
        }
    };
}

fn schemes() -> Vec<SignatureScheme> {
    crate::provider().signature_verification_algorithms.supported_schemes()
}

/// Used when dialling: the server must present a pinned key.
#[derive(Debug)]
pub struct PinnedServerVerifier {
    pins: PinSet,
}

impl PinnedServerVerifier {
    pub fn new(pins: PinSet) -> PinnedServerVerifier {
        PinnedServerVerifier { pins }
    }
}

impl ServerCertVerifier for PinnedServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The name is not checked: the pinned key is the identity (addresses change).
        self.pins.check(end_entity, now).map(|_| ServerCertVerified::assertion())
    }

    handshake_signature_methods!();
}

/// Used when accepting: the client must present a pinned key (mutual TLS).
#[derive(Debug)]
pub struct PinnedClientVerifier {
    pins: PinSet,
}

impl PinnedClientVerifier {
    pub fn new(pins: PinSet) -> PinnedClientVerifier {
        PinnedClientVerifier { pins }
    }
}

impl ClientCertVerifier for PinnedClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.pins.check(end_entity, now).map(|_| ClientCertVerified::assertion())
    }

    handshake_signature_methods!();
}
