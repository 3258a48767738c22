//! One HTTP exchange with one endpoint, and the one place the HTTP client is built.
//!
//! ```text
//!   Client (retry loop, endpoint choice)  ──▶  transport::exchange  ──▶  reqwest
//! ```
//!
//! Everything about the wire that is not API semantics lives here: the HTTP client's
//! settings, the per-request timeout, the bearer token, the response size limit, and the
//! mapping of transport failures to [`Error`]s that say whether the request could have
//! been delivered. The security issue replaces [`build_http_client`] with a TLS client that
//! pins server certificate fingerprints; nothing else needs to change for that.

use std::time::Duration;

use bytes::Bytes;
use reqwest::header::HeaderMap;
use reqwest::Method;
use reqwest::StatusCode;
use reqwest::Url;

use crate::config::ClientConfig;
use crate::config::CONNECT_TIMEOUT_MAX;
use crate::error::innermost_message;
use crate::error::Error;
use haven_tls::PinSet;

/// Largest response body read into memory. A default list page of maximal values
/// (base64-encoded) fits; anything larger is not a Haven answer, or a page that should be
/// asked for with a smaller `limit`.
pub const RESPONSE_BODY_BYTES_MAX: usize = 128 * 1024 * 1024;

/// The JSON size of one list item with a maximal key and a maximal binary value.
const LIST_ITEM_BYTES_MAX: usize =
    haven_core::limits::KEY_BYTES_MAX + haven_core::limits::VALUE_BYTES_MAX.div_ceil(3) * 4 + 1024;
const _: () = assert!(haven_core::limits::LIST_PAGE_DEFAULT * LIST_ITEM_BYTES_MAX <= RESPONSE_BODY_BYTES_MAX);

/// Response header naming the leader's client URL.
pub const HEADER_LEADER: &str = "haven-leader";
/// Response header naming the leader's node id.
pub const HEADER_LEADER_ID: &str = "haven-leader-id";
/// Response header naming the answering node's cluster; as a request header, the cluster
/// the client means (a node of another cluster refuses with `409 cluster_mismatch`).
pub const HEADER_CLUSTER_ID: &str = "haven-cluster-id";

/// Builds the HTTP client every request goes through, and the set of trusted server keys
/// when the servers are trusted by fingerprint (the client adds members' keys it learns).
pub(crate) fn build_http_client(config: &ClientConfig) -> Result<(reqwest::Client, Option<PinSet>), Error> {
    let invalid = |what: &str, error: &dyn std::fmt::Display| Error::InvalidConfig(format!("{what}: {error}"));
    let (tls, pins) = match &config.ca_file {
        Some(ca_file) => {
            let mut roots = rustls::RootCertStore::empty();
            let der = haven_tls::identity::read_pem_certificates(ca_file).map_err(|e| invalid("CA file", &e))?;
            for cert in der {
                roots.add(rustls::pki_types::CertificateDer::from(cert)).map_err(|e| invalid("CA file", &e))?;
            }
            let tls = rustls::ClientConfig::builder_with_provider(haven_tls::provider())
                .with_protocol_versions(&[&rustls::version::TLS13])
                .map_err(|e| invalid("TLS", &e))?
                .with_root_certificates(roots)
                .with_no_client_auth();
            (tls, None)
        }
        None => {
            let pins = PinSet::new(config.server_fingerprints.iter().cloned());
            let tls = haven_tls::client_config(pins.clone(), None).map_err(|e| invalid("TLS", &e))?;
            (tls, Some(pins))
        }
    };
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .connect_timeout(config.request_timeout.min(CONNECT_TIMEOUT_MAX))
        // The API never redirects (nodes forward writes themselves); following one would
        // resend a write and the token to wherever a response points.
        .redirect(reqwest::redirect::Policy::none())
        // Nodes are reached directly: an HTTP_PROXY meant for the internet must not sit
        // between an agent and its cluster.
        .no_proxy()
        .user_agent(concat!("haven-client/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|error| {
            Error::InvalidConfig(format!("cannot build the HTTP client: {}", innermost_message(&error)))
        })?;
    Ok((http, pins))
}

/// What to send.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub method: Method,
    /// Path below the endpoint's base URL, already percent-encoded (`/v1/kv/a%20b`).
    pub path: String,
    pub query: Vec<(&'static str, String)>,
    pub body: Option<Bytes>,
    /// Keep the body of a successful answer as a stream (watch) instead of reading it.
    pub streaming: bool,
}

/// What came back.
#[derive(Debug)]
pub(crate) struct Answer {
    pub endpoint: String,
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Body,
}

#[derive(Debug)]
pub(crate) enum Body {
    Buffered(Bytes),
    /// Only for a successful answer to a streaming request.
    Streaming(reqwest::Response),
}

impl Answer {
    pub fn bytes(&self) -> &[u8] {
        match &self.body {
            Body::Buffered(bytes) => bytes,
            Body::Streaming(_) => &[],
        }
    }
}

/// Sends `request` to `endpoint` once. `timeout` bounds everything up to the end of the
/// body (for a streaming answer: up to the headers).
pub(crate) async fn exchange(
    http: &reqwest::Client,
    token: Option<&str>,
    cluster_id: Option<&str>,
    endpoint: &str,
    request: &Request,
    timeout: Duration,
) -> Result<Answer, Error> {
    let mut url = Url::parse(&format!("{endpoint}{}", request.path)).map_err(|error| {
        Error::InvalidRequest(format!("cannot form a URL from {endpoint:?} and {:?}: {error}", request.path))
    })?;
    if !request.query.is_empty() {
        let mut pairs = url.query_pairs_mut();
        for (name, value) in &request.query {
            pairs.append_pair(name, value);
        }
    }
    let mut builder = http.request(request.method.clone(), url);
    if let Some(token) = token {
        builder = builder.bearer_auth(token);
    }
    if let Some(cluster_id) = cluster_id {
        builder = builder.header(HEADER_CLUSTER_ID, cluster_id);
    }
    if let Some(body) = &request.body {
        builder = builder.header(reqwest::header::CONTENT_TYPE, "application/octet-stream").body(body.clone());
    }
    let work = async {
        let response = builder.send().await.map_err(|error| transport_error(endpoint, &error))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = if request.streaming && status.is_success() {
            Body::Streaming(response)
        } else {
            Body::Buffered(read_body(endpoint, response).await?)
        };
        Ok(Answer { endpoint: endpoint.to_string(), status, headers, body })
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(result) => result,
        Err(_elapsed) => Err(Error::Timeout { endpoint: endpoint.to_string(), after: timeout }),
    }
}

/// Reads a whole body, refusing more than [`RESPONSE_BODY_BYTES_MAX`].
async fn read_body(endpoint: &str, mut response: reqwest::Response) -> Result<Bytes, Error> {
    let too_large = || Error::InvalidResponse {
        endpoint: endpoint.to_string(),
        reason: format!("the response is larger than {RESPONSE_BODY_BYTES_MAX} bytes; ask for a smaller page"),
    };
    if response.content_length().is_some_and(|length| length > RESPONSE_BODY_BYTES_MAX as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|error| transport_error(endpoint, &error))? {
        if body.len() + chunk.len() > RESPONSE_BODY_BYTES_MAX {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(body))
}

/// Sorts a reqwest failure by what it says about delivery: a failed connect never sent
/// anything; anything later may have. A TLS handshake refused for the server's key, and a
/// scheme the node does not speak, are named as such (issue 14: they used to read
/// "ApplicationVerificationFailure; is the cluster running?" and "invalid HTTP version
/// parsed"); the client fills in the key the server presented.
pub(crate) fn transport_error(endpoint: &str, error: &reqwest::Error) -> Error {
    let reason = innermost_message(error);
    let chain = haven_tls::error_chain(error);
    let endpoint = endpoint.to_string();
    if haven_tls::is_certificate_refusal(error) {
        return Error::UntrustedServer { endpoint, presented: None };
    }
    if endpoint.starts_with("http://") && chain.contains("invalid HTTP version") {
        let https = endpoint.replacen("http://", "https://", 1);
        return Error::WrongScheme {
            endpoint,
            reason: format!("the node speaks HTTPS (it answered with TLS); use {https}"),
        };
    }
    if endpoint.starts_with("https://") && (chain.contains("InvalidContentType") || chain.contains("corrupt message")) {
        let http = endpoint.replacen("https://", "http://", 1);
        return Error::WrongScheme {
            endpoint,
            reason: format!("the node does not speak TLS (a node started with --insecure-dev?); use {http}"),
        };
    }
    if error.is_connect() {
        Error::Unreachable { endpoint, reason }
    } else {
        Error::Transport { endpoint, reason }
    }
}
