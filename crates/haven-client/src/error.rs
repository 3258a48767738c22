//! Errors that tell the caller what to do next.
//!
//! Every error answers one question through [`Error::retry_advice`]: back off and try
//! again later, try again now, find out whether a write applied, or do not retry at all.
//! The retry loop in [`crate::Client`] already retries what is safe to retry; what reaches
//! the caller is what the loop could not resolve within its attempts and deadline.
//!
//! Server answers are classified by [`classify_response`] from the status code and the
//! JSON error body `{"error": CODE, "message": TEXT, ...}` of `docs/http-api.md`. A body
//! that is not that shape still yields an error (never a panic): the code becomes
//! `unknown` and the message a printable excerpt of the body.

use std::time::Duration;

use serde::Deserialize;

use crate::admin_types::RuleViolation;

/// What the caller should do after an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAdvice {
    /// The cluster (or this node) is not serving now: retry after a back-off.
    BackOff,
    /// A transient fault on one connection: retrying at once is reasonable.
    RetryNow,
    /// A write may or may not have applied. Retrying with the same `request_id` applies
    /// it at most once; otherwise read the key to find out.
    OutcomeUnknown,
    /// The request itself is wrong or its condition failed: the same request fails again.
    DoNotRetry,
}

/// Errors of the Haven client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A write was sent but no answer says whether it applied: the leader was lost while
    /// it was in flight (`503 outcome_unknown`) or the connection broke after the request
    /// went out, and the retries with the same `request_id` did not get an answer either.
    /// `request_id` is `None` for writes the API gives no idempotency key (membership).
    #[error("the write may or may not have been applied{}; {}: {last_error}",
        request_id.as_ref().map(|id| format!(" (request_id {id})")).unwrap_or_default(),
        if request_id.is_some() { "retry with the same request_id or read the key to find out" } else { "check the cluster's state before retrying" })]
    OutcomeUnknown { request_id: Option<String>, last_error: Box<Error> },

    /// A compare-and-set found the key at another revision (0: the key is absent).
    #[error(
        "compare failed: the key's current revision is {current_revision}; read it again and retry with that revision"
    )]
    CompareFailed { current_revision: u64 },

    /// A watch asked to start before the oldest revision the server still keeps.
    #[error("history before revision {compact_revision} has been compacted; list the keys again and watch from that list's revision")]
    Compacted { compact_revision: u64 },

    /// The key does not exist (`revision` is the cluster revision the read saw).
    #[error("key not found (cluster revision {revision})")]
    NotFound { revision: u64 },

    /// Any other answer of the server that is an error.
    #[error("the server answered {status} {code}: {message}")]
    Api { status: u16, code: String, message: String },

    /// A configuration draft breaks rules (`422 invalid_config`); `errors` holds every
    /// broken rule, not just the first.
    #[error("the server answered 422 {CODE_INVALID_CONFIG}: {message}")]
    InvalidDraft { message: String, errors: Vec<RuleViolation> },

    /// The request must be sent to the primary (`409 not_primary`); `leader_url` names it
    /// when the answering node knows it.
    #[error("the server answered 409 {CODE_NOT_PRIMARY}: {message}")]
    NotPrimary { message: String, leader_url: Option<String> },

    /// Every attempt failed with an error worth retrying; `last_error` says how.
    #[error("no endpoint answered (tried {}): {last_error}", tried.join(", "))]
    Unavailable { tried: Vec<String>, last_error: Box<Error> },

    /// The call's overall deadline passed before any endpoint answered.
    #[error("gave up after {} ms (tried {}): {last_error}", after.as_millis(), tried.join(", "))]
    DeadlineExceeded { after: Duration, tried: Vec<String>, last_error: Box<Error> },

    /// One request did not complete within the request timeout.
    #[error("{endpoint} did not answer within {} ms", after.as_millis())]
    Timeout { endpoint: String, after: Duration },

    /// The TCP connection could not be made: the request was never sent.
    #[error("cannot connect to {endpoint}: {reason}")]
    Unreachable { endpoint: String, reason: String },

    /// The connection failed after it was made (reset, closed mid-response).
    #[error("request to {endpoint} failed: {reason}")]
    Transport { endpoint: String, reason: String },

    /// The server answered something that is not Haven's API (bad JSON, oversized body).
    #[error("unexpected response from {endpoint}: {reason}")]
    InvalidResponse { endpoint: String, reason: String },

    /// The key cannot be sent (empty, too long, control characters, `.`/`..` segments).
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey { key: String, reason: String },

    /// A request the client refuses to send (e.g. an oversized `request_id`).
    #[error("invalid request: {0}")]
    InvalidRequest(String),

    /// The client configuration breaks a rule; the message names it.
    #[error("invalid client configuration: {0}")]
    InvalidConfig(String),

    /// The endpoint belongs to another cluster than the one this client is pinned to (the
    /// first that answered, or the one configured): its answer is not used. `served` is
    /// true when the node answered the request before the client could tell (a node that
    /// does not check the cluster id the client sends); a write may then have applied there.
    #[error(
        "{endpoint} belongs to cluster {found}, not to cluster {expected} that this client talks to; it was not used{}",
        if *served { " (but it answered before the client could tell)" } else { "" }
    )]
    ClusterMismatch { endpoint: String, expected: String, found: String, served: bool },

    /// The TLS handshake failed because the server's key is not one the client trusts.
    #[error(
        "{endpoint} presented the key {}, which is not among the pinned fingerprints \
         (HAVEN_SERVER_FINGERPRINTS / --server-fingerprint); if that node's key changed, `haven fingerprint --dir \
         DATA_DIR` on it prints the one to pin",
        presented.as_deref().unwrap_or("(unknown)")
    )]
    UntrustedServer { endpoint: String, presented: Option<String> },

    /// The endpoint's scheme is not what the node speaks (`http://` to a TLS node, or the
    /// reverse); the reason says which to use.
    #[error("{endpoint}: {reason}")]
    WrongScheme { endpoint: String, reason: String },
}

impl Error {
    /// What the caller should do; see [`RetryAdvice`].
    pub fn retry_advice(&self) -> RetryAdvice {
        match self {
            Error::OutcomeUnknown { .. } => RetryAdvice::OutcomeUnknown,
            Error::CompareFailed { .. }
            | Error::Compacted { .. }
            | Error::NotFound { .. }
            | Error::InvalidResponse { .. }
            | Error::InvalidKey { .. }
            | Error::InvalidRequest(_)
            | Error::InvalidConfig(_)
            | Error::InvalidDraft { .. }
            | Error::NotPrimary { .. } => RetryAdvice::DoNotRetry,
            Error::Api { status, .. } => match *status {
                429 => RetryAdvice::BackOff,
                500..=599 => RetryAdvice::BackOff,
                _ => RetryAdvice::DoNotRetry,
            },
            Error::ClusterMismatch { .. } | Error::UntrustedServer { .. } | Error::WrongScheme { .. } => {
                RetryAdvice::DoNotRetry
            }
            Error::Unavailable { .. } | Error::DeadlineExceeded { .. } | Error::Timeout { .. } => RetryAdvice::BackOff,
            // Nobody listens there: retrying at once would spin.
            Error::Unreachable { .. } => RetryAdvice::BackOff,
            Error::Transport { .. } => RetryAdvice::RetryNow,
        }
    }

    /// The server's error code (`no_leader`, `compare_failed`, ...) when the server
    /// answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Api { code, .. } => Some(code),
            Error::CompareFailed { .. } => Some(CODE_COMPARE_FAILED),
            Error::Compacted { .. } => Some(CODE_COMPACTED),
            Error::NotFound { .. } => Some(CODE_NOT_FOUND),
            Error::InvalidDraft { .. } => Some(CODE_INVALID_CONFIG),
            Error::NotPrimary { .. } => Some(CODE_NOT_PRIMARY),
            Error::ClusterMismatch { .. } => Some(CODE_CLUSTER_MISMATCH),
            Error::OutcomeUnknown { last_error, .. }
            | Error::Unavailable { last_error, .. }
            | Error::DeadlineExceeded { last_error, .. } => last_error.code(),
            _ => None,
        }
    }

    /// Should the client's own retry loop send this request again (to the next endpoint)?
    /// True for answers that say "not here, not now"; false for answers about the request.
    pub(crate) fn is_retryable(&self) -> bool {
        match self {
            Error::Api { status, code, .. } => {
                // A 5xx without Haven's error body comes from something in between (a
                // proxy, a node restarting): another endpoint may well answer.
                *status == 503 || *status == 429 || ((500..=599).contains(status) && code == CODE_UNKNOWN)
            }
            Error::Timeout { .. } | Error::Unreachable { .. } | Error::Transport { .. } => true,
            // Not this endpoint: another of the list may be right.
            Error::ClusterMismatch { .. } | Error::UntrustedServer { .. } | Error::WrongScheme { .. } => true,
            _ => false,
        }
    }

    /// Could the request have reached the server? Only a failed connect proves it did not.
    pub(crate) fn may_have_been_delivered(&self) -> bool {
        match self {
            Error::Unreachable { .. } | Error::UntrustedServer { .. } | Error::WrongScheme { .. } => false,
            Error::ClusterMismatch { served, .. } => *served,
            // `no_leader` and `unavailable` are refusals before anything was proposed.
            Error::Api { status: 503, code, .. } if code != CODE_UNKNOWN => code == CODE_OUTCOME_UNKNOWN,
            // A 5xx from something in between (a proxy) may have passed the request on.
            Error::Api { status, code, .. } => (500..=599).contains(status) && code == CODE_UNKNOWN,
            _ => true,
        }
    }
}

/// Error codes of `docs/http-api.md` the client acts on.
pub const CODE_NOT_FOUND: &str = "not_found";
pub const CODE_COMPARE_FAILED: &str = "compare_failed";
pub const CODE_COMPACTED: &str = "compacted";
pub const CODE_OUTCOME_UNKNOWN: &str = "outcome_unknown";
pub const CODE_NO_LEADER: &str = "no_leader";
pub const CODE_UNAVAILABLE: &str = "unavailable";
/// A configuration draft breaks rules (422); the body lists them in `errors`.
pub const CODE_INVALID_CONFIG: &str = "invalid_config";
/// The route must be used on the primary (409); the body names it in `leader_url`.
pub const CODE_NOT_PRIMARY: &str = "not_primary";
/// The draft was made from an older configuration version (409); show it again.
pub const CODE_STALE_DRAFT: &str = "stale_draft";
/// A teardown without `force` on a cluster that is not stable (409); the message says
/// what may be lost.
pub const CODE_NOT_STABLE: &str = "not_stable";
/// A recovery the node refuses (409); the message says why and what to do instead.
pub const CODE_RECOVER_REFUSED: &str = "recover_refused";
/// The token used the `request_id` before for a different request (409); nothing was
/// applied. Send the request with a new id.
pub const CODE_REQUEST_ID_REUSED: &str = "request_id_reused";
/// The node belongs to another cluster than the request named (409); try another endpoint.
pub const CODE_CLUSTER_MISMATCH: &str = "cluster_mismatch";
/// Used when the server's error body has no code we can read.
pub const CODE_UNKNOWN: &str = "unknown";

/// Longest excerpt of an unparsable body quoted in an error message: enough to recognise
/// a proxy's error page, short enough to keep the message on one line.
pub const BODY_EXCERPT_CHARS_MAX: usize = 200;

/// The error body of the API. Every field is optional so a partial body still classifies.
#[derive(Debug, Default, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    current_revision: Option<u64>,
    #[serde(default)]
    compact_revision: Option<u64>,
    #[serde(default)]
    revision: Option<u64>,
    /// With `invalid_config`: every broken rule.
    #[serde(default)]
    errors: Option<Vec<RuleViolation>>,
    /// With `not_primary`: the primary's client URL, when known.
    #[serde(default)]
    leader_url: Option<String>,
    /// With `cluster_mismatch`: the answering node's cluster, and the one asked for.
    #[serde(default)]
    cluster_id: Option<String>,
    #[serde(default)]
    expected: Option<String>,
}

/// Turns a non-2xx answer into an [`Error`].
pub fn classify_response(status: u16, body: &[u8]) -> Error {
    let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
    let Some(parsed) = parsed.filter(|b| b.error.is_some()) else {
        return Error::Api { status, code: CODE_UNKNOWN.to_string(), message: body_excerpt(body) };
    };
    let code = parsed.error.unwrap_or_default();
    let message = parsed.message.unwrap_or_default();
    match (status, code.as_str()) {
        (409, CODE_COMPARE_FAILED) => match parsed.current_revision {
            Some(current_revision) => Error::CompareFailed { current_revision },
            None => Error::Api { status, code, message },
        },
        (410, CODE_COMPACTED) => match parsed.compact_revision {
            Some(compact_revision) => Error::Compacted { compact_revision },
            None => Error::Api { status, code, message },
        },
        // A missing key says at which revision it was missing; any other missing thing (a
        // member, a token) keeps the server's message.
        (404, CODE_NOT_FOUND) if parsed.revision.is_some() => {
            Error::NotFound { revision: parsed.revision.unwrap_or(0) }
        }
        (409, CODE_CLUSTER_MISMATCH) => Error::ClusterMismatch {
            endpoint: String::new(),
            expected: parsed.expected.unwrap_or_default(),
            found: parsed.cluster_id.unwrap_or_default(),
            served: false,
        },
        (422, CODE_INVALID_CONFIG) => Error::InvalidDraft { message, errors: parsed.errors.unwrap_or_default() },
        (409, CODE_NOT_PRIMARY) => Error::NotPrimary { message, leader_url: parsed.leader_url },
        _ => Error::Api { status, code, message },
    }
}

/// A printable one-line excerpt of a body, for messages.
pub(crate) fn body_excerpt(body: &[u8]) -> String {
    if body.is_empty() {
        return "(empty body)".to_string();
    }
    let text = String::from_utf8_lossy(body);
    let mut excerpt: String =
        text.chars().take(BODY_EXCERPT_CHARS_MAX).map(|c| if c.is_control() { ' ' } else { c }).collect();
    if text.chars().count() > BODY_EXCERPT_CHARS_MAX {
        excerpt.push('…');
    }
    excerpt.trim().to_string()
}

/// The most specific message of an error chain ("Connection refused (os error 111)"
/// rather than "error sending request for url ...").
pub(crate) fn innermost_message(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(source) = current.source() {
        current = source;
    }
    current.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify(status: u16, body: &str) -> Error {
        classify_response(status, body.as_bytes())
    }

    #[test]
    fn classifies_every_documented_code() {
        assert!(matches!(
            classify(409, r#"{"error":"compare_failed","message":"m","current_revision":7}"#),
            Error::CompareFailed { current_revision: 7 }
        ));
        assert!(matches!(
            classify(410, r#"{"error":"compacted","message":"m","compact_revision":90}"#),
            Error::Compacted { compact_revision: 90 }
        ));
        assert!(matches!(
            classify(404, r#"{"error":"not_found","message":"m","revision":12}"#),
            Error::NotFound { revision: 12 }
        ));
        for (status, code, advice, retryable) in [
            (400, "bad_request", RetryAdvice::DoNotRetry, false),
            (400, "invalid_key", RetryAdvice::DoNotRetry, false),
            (404, "no_route", RetryAdvice::DoNotRetry, false),
            (405, "method_not_allowed", RetryAdvice::DoNotRetry, false),
            (413, "value_too_large", RetryAdvice::DoNotRetry, false),
            (409, "quorum_at_risk", RetryAdvice::DoNotRetry, false),
            (429, "too_many_watchers", RetryAdvice::BackOff, true),
            (503, "no_leader", RetryAdvice::BackOff, true),
            (503, "unavailable", RetryAdvice::BackOff, true),
            (503, "outcome_unknown", RetryAdvice::BackOff, true),
            (500, "internal", RetryAdvice::BackOff, false),
        ] {
            let body = format!(r#"{{"error":"{code}","message":"text","outcome":"unknown"}}"#);
            let error = classify(status, &body);
            match &error {
                Error::Api { status: s, code: c, message } => {
                    assert_eq!((*s, c.as_str(), message.as_str()), (status, code, "text"));
                }
                other => panic!("{status} {code} classified as {other:?}"),
            }
            assert_eq!(error.retry_advice(), advice, "{status} {code}");
            assert_eq!(error.is_retryable(), retryable, "{status} {code}");
            assert_eq!(error.code(), Some(code));
        }
    }

    /// Only `outcome_unknown` among the 503s may have applied a write; a refusal before
    /// proposing (`no_leader`, `unavailable`) and a failed connect did not.
    #[test]
    fn delivery_is_judged_per_answer() {
        assert!(classify(503, r#"{"error":"outcome_unknown","outcome":"unknown"}"#).may_have_been_delivered());
        assert!(!classify(503, r#"{"error":"no_leader"}"#).may_have_been_delivered());
        assert!(!classify(503, r#"{"error":"unavailable"}"#).may_have_been_delivered());
        let refused = Error::Unreachable { endpoint: "http://a".into(), reason: "refused".into() };
        assert!(!refused.may_have_been_delivered());
        let timeout = Error::Timeout { endpoint: "http://a".into(), after: Duration::from_secs(1) };
        assert!(timeout.may_have_been_delivered());
    }

    /// A refused configuration keeps every broken rule; a refusal off the primary keeps
    /// where the primary is.
    #[test]
    fn invalid_config_and_not_primary_keep_their_details() {
        let body = r#"{"error":"invalid_config","message":"the draft breaks 2 rule(s): a; b","errors":[
            {"key":"failed_pings","value":"50","kind":"out-of-range","rule":"out of range; allowed 2-20"},
            {"key":"nodes.2.ping_targets","value":"[\"x\"]","kind":"duplicate","rule":"listed twice"}]}"#;
        let error = classify(422, body);
        let Error::InvalidDraft { errors, message } = &error else { panic!("{error:?}") };
        assert_eq!(message, "the draft breaks 2 rule(s): a; b");
        let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["failed_pings", "nodes.2.ping_targets"]);
        assert_eq!(errors[0].kind, "out-of-range");
        assert_eq!(error.code(), Some("invalid_config"));
        assert_eq!(error.retry_advice(), RetryAdvice::DoNotRetry);
        assert!(!error.is_retryable());
        assert_eq!(error.to_string(), "the server answered 422 invalid_config: the draft breaks 2 rule(s): a; b");
        // Without the list it is still a typed refusal, with no rules to show.
        assert!(matches!(classify(422, r#"{"error":"invalid_config","message":"m"}"#),
            Error::InvalidDraft { errors, .. } if errors.is_empty()));

        let error = classify(409, r#"{"error":"not_primary","message":"run it on node 1","leader_url":"https://a:1"}"#);
        assert!(matches!(&error, Error::NotPrimary { leader_url: Some(url), .. } if url == "https://a:1"));
        assert_eq!((error.code(), error.is_retryable()), (Some("not_primary"), false));
        let error = classify(409, r#"{"error":"not_primary","message":"no primary","leader_url":null}"#);
        assert!(matches!(error, Error::NotPrimary { leader_url: None, .. }));
        // Other 409s and 422s stay plain API errors.
        assert!(matches!(classify(409, r#"{"error":"stale_draft","message":"m"}"#),
            Error::Api { status: 409, ref code, .. } if code == "stale_draft"));
    }

    #[test]
    fn malformed_bodies_still_classify() {
        for body in ["", "not json", "[1,2]", r#"{"message":"no code"}"#, r#"{"error":42}"#, "\u{0}\u{1}"] {
            match classify(502, body) {
                Error::Api { status: 502, code, message } => {
                    assert_eq!(code, CODE_UNKNOWN);
                    assert!(!message.contains('\u{0}'));
                }
                other => panic!("{body:?} classified as {other:?}"),
            }
        }
        // An unknown 500 (a proxy's error page) is worth another endpoint; `internal` is not.
        assert!(classify(500, "<html>oops</html>").is_retryable());
        // A documented code without its documented field stays a plain API error.
        assert!(matches!(classify(409, r#"{"error":"compare_failed"}"#), Error::Api { status: 409, .. }));
        assert!(matches!(classify(410, r#"{"error":"compacted"}"#), Error::Api { status: 410, .. }));
        // Without a revision it is not a key that is missing: the server's message stays.
        assert!(matches!(classify(404, r#"{"error":"not_found","message":"node 9 is not a member"}"#),
            Error::Api { status: 404, ref message, .. } if message == "node 9 is not a member"));
    }

    #[test]
    fn long_bodies_are_cut_to_one_line() {
        let body = format!("line one\nline two {}", "x".repeat(1000));
        let Error::Api { message, .. } = classify(502, &body) else { panic!() };
        assert!(!message.contains('\n'));
        assert!(message.chars().count() <= BODY_EXCERPT_CHARS_MAX + 1);
    }

    #[test]
    fn wrapped_errors_keep_their_advice_and_code() {
        let inner = classify(503, r#"{"error":"no_leader","message":"election in progress"}"#);
        let error =
            Error::Unavailable { tried: vec!["http://a:1".into(), "http://b:2".into()], last_error: Box::new(inner) };
        assert_eq!(error.retry_advice(), RetryAdvice::BackOff);
        assert_eq!(error.code(), Some("no_leader"));
        assert_eq!(
            error.to_string(),
            "no endpoint answered (tried http://a:1, http://b:2): the server answered 503 no_leader: election in progress"
        );
        let unknown = Error::OutcomeUnknown { request_id: Some("r".into()), last_error: Box::new(error) };
        assert!(unknown
            .to_string()
            .starts_with("the write may or may not have been applied (request_id r); retry with"));
        assert_eq!(unknown.retry_advice(), RetryAdvice::OutcomeUnknown);
        assert_eq!(
            Error::Transport { endpoint: "e".into(), reason: "reset".into() }.retry_advice(),
            RetryAdvice::RetryNow
        );
    }
}
