//! How a command fails: one line for people on stderr, one JSON object for scripts on
//! stdout (with `--json`), and an exit code that says what kind of failure it was.
//!
//! ```text
//!   haven_client::Error ──kind_of──▶ Kind (exit code) + code (the server's, or the kind's)
//!   explain(action, error) ──▶ anyhow::Error holding a Failure
//!   main: Failure found ──▶ exit code; --json: {"error", "message", "exit_code", ...}
//! ```
//!
//! The codes are distinct and documented (`haven --help`), so a script can tell a missing
//! key (10) from an unreachable cluster (11) (issue 14: both exited 1).

use haven_client::Error;
use serde_json::Map;
use serde_json::Value;

/// The exit codes, for `haven --help` and the docs.
pub const EXIT_CODES: &str = "\
Exit codes:
  0   done
  1   another error (the message says which)
  2   bad command line
  3-8 `haven status` only: the HA state (see `haven status --help`)
  10  not found: a key, a member or a token
  11  unreachable: no endpoint answered in time, or the cluster has no leader
  12  refused: the cluster refused it (authorization, a safety rule), or the endpoints
      belong to two clusters
  13  conflict: the state is not what the request expected (a compare failed, the draft
      changed, a request id was used for another request)
  14  outcome unknown: a write may or may not have been applied (retry with its
      --request-id, or read to find out)
  15  invalid: the request breaks a rule (a bad key or value, an invalid draft)
With --json, a failure is one JSON object on stdout: {\"error\": CODE, \"message\": TEXT,
\"exit_code\": N, ...} (the server's error code and fields when the server answered).";

/// What kind of failure, as an exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Error = 1,
    Usage = 2,
    NotFound = 10,
    Unreachable = 11,
    Refused = 12,
    Conflict = 13,
    OutcomeUnknown = 14,
    Invalid = 15,
}

impl Kind {
    pub fn exit_code(self) -> u8 {
        self as u8
    }

    /// The JSON error code when the server gave none.
    pub fn code(self) -> &'static str {
        match self {
            Kind::Error => "error",
            Kind::Usage => "usage",
            Kind::NotFound => "not_found",
            Kind::Unreachable => "unreachable",
            Kind::Refused => "refused",
            Kind::Conflict => "conflict",
            Kind::OutcomeUnknown => "outcome_unknown",
            Kind::Invalid => "invalid",
        }
    }
}

/// A failed command: what kind, the code for scripts, the line for people, and the fields
/// a script may want (the server's `current_revision`, `errors`, ...).
#[derive(Debug, Clone)]
pub struct Failure {
    pub kind: Kind,
    pub code: String,
    pub message: String,
    pub details: Map<String, Value>,
}

impl Failure {
    pub fn new(kind: Kind, message: impl Into<String>) -> Failure {
        Failure { kind, code: kind.code().to_string(), message: message.into(), details: Map::new() }
    }

    /// The same failure with the JSON code `code`.
    pub fn code(mut self, code: impl Into<String>) -> Failure {
        self.code = code.into();
        self
    }

    /// The same failure with one more field for scripts.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Failure {
        self.details.insert(key.to_string(), value.into());
        self
    }

    /// As an error for `anyhow`.
    pub fn into_error(self) -> anyhow::Error {
        anyhow::Error::new(self)
    }

    /// The JSON object `--json` prints.
    pub fn to_json(&self, message: &str) -> Value {
        let mut object = self.details.clone();
        object.insert("error".into(), self.code.clone().into());
        object.insert("message".into(), message.into());
        object.insert("exit_code".into(), self.kind.exit_code().into());
        Value::Object(object)
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// The kind and code of a client error.
pub fn kind_of(error: &Error) -> (Kind, String) {
    let code = |kind: Kind| error.code().map_or_else(|| kind.code().to_string(), str::to_string);
    let kind = match error {
        Error::NotFound { .. } => Kind::NotFound,
        Error::CompareFailed { .. } | Error::Compacted { .. } => Kind::Conflict,
        Error::OutcomeUnknown { .. } => Kind::OutcomeUnknown,
        Error::InvalidDraft { .. } | Error::InvalidKey { .. } | Error::InvalidRequest(_) => Kind::Invalid,
        Error::InvalidConfig(_) => Kind::Usage,
        Error::NotPrimary { .. } | Error::ClusterMismatch { .. } | Error::UntrustedServer { .. } => Kind::Refused,
        Error::WrongScheme { .. } => Kind::Usage,
        Error::Unavailable { last_error, .. } | Error::DeadlineExceeded { last_error, .. } => {
            // Every endpoint of another cluster, or untrusted: refused, not unreachable.
            return match kind_of(last_error) {
                (kind @ (Kind::Refused | Kind::Usage), code) => (kind, code),
                _ => (Kind::Unreachable, code(Kind::Unreachable)),
            };
        }
        Error::Timeout { .. } | Error::Unreachable { .. } | Error::Transport { .. } => Kind::Unreachable,
        Error::InvalidResponse { .. } => Kind::Error,
        Error::Api { status, code: server_code, .. } => match (*status, server_code.as_str()) {
            (404, _) => Kind::NotFound,
            (401 | 403, _) => Kind::Refused,
            (409, "compare_failed" | "stale_draft" | "request_id_reused" | "conflict") => Kind::Conflict,
            (409, _) => Kind::Refused,
            (400 | 413 | 422, _) => Kind::Invalid,
            (503 | 429, _) => Kind::Unreachable,
            _ => Kind::Error,
        },
        _ => Kind::Error,
    };
    (kind, code(kind))
}

/// The fields of a client error a script may want, beside its code and message.
pub fn details_of(error: &Error) -> Map<String, Value> {
    let mut details = Map::new();
    match error {
        Error::CompareFailed { current_revision } => {
            details.insert("current_revision".into(), (*current_revision).into());
        }
        Error::Compacted { compact_revision } => {
            details.insert("compact_revision".into(), (*compact_revision).into());
        }
        Error::NotFound { revision } => {
            details.insert("revision".into(), (*revision).into());
        }
        Error::InvalidDraft { errors, .. } => {
            details.insert("errors".into(), serde_json::to_value(errors).unwrap_or_default());
        }
        Error::OutcomeUnknown { request_id: Some(id), .. } => {
            details.insert("request_id".into(), id.clone().into());
        }
        Error::NotPrimary { leader_url, .. } => {
            details.insert("leader_url".into(), leader_url.clone().into());
        }
        Error::ClusterMismatch { endpoint, expected, found, .. } => {
            details.insert("endpoint".into(), endpoint.clone().into());
            details.insert("expected_cluster_id".into(), expected.clone().into());
            details.insert("cluster_id".into(), found.clone().into());
        }
        Error::UntrustedServer { presented, .. } => {
            details.insert("presented_fingerprint".into(), presented.clone().into());
        }
        _ => {}
    }
    details
}

/// The failure inside `error` (anywhere in its chain), if a command made one.
pub fn find(error: &anyhow::Error) -> Option<&Failure> {
    error.chain().find_map(|cause| cause.downcast_ref::<Failure>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use haven_client::classify_response;

    /// Each kind of failure has its own exit code, and every code is documented.
    #[test]
    fn failures_have_distinct_documented_codes() {
        let api = |status: u16, code: &str| {
            classify_response(status, format!(r#"{{"error":"{code}","message":"m","revision":1}}"#).as_bytes())
        };
        let unreachable = Error::Unavailable {
            tried: vec!["https://a:1".into()],
            last_error: Box::new(Error::Unreachable { endpoint: "https://a:1".into(), reason: "refused".into() }),
        };
        let cases: Vec<(Error, Kind, &str)> = vec![
            (api(404, "not_found"), Kind::NotFound, "not_found"),
            (api(404, "no_route"), Kind::NotFound, "no_route"),
            (unreachable, Kind::Unreachable, "unreachable"),
            (api(503, "no_leader"), Kind::Unreachable, "no_leader"),
            (api(401, "unauthorized"), Kind::Refused, "unauthorized"),
            (api(409, "recover_refused"), Kind::Refused, "recover_refused"),
            (api(409, "last_admin_token"), Kind::Refused, "last_admin_token"),
            (Error::CompareFailed { current_revision: 3 }, Kind::Conflict, "compare_failed"),
            (api(409, "stale_draft"), Kind::Conflict, "stale_draft"),
            (api(409, "request_id_reused"), Kind::Conflict, "request_id_reused"),
            (
                Error::OutcomeUnknown {
                    request_id: Some("r".into()),
                    last_error: Box::new(api(503, "outcome_unknown")),
                },
                Kind::OutcomeUnknown,
                "outcome_unknown",
            ),
            (api(400, "invalid_key"), Kind::Invalid, "invalid_key"),
            (Error::InvalidDraft { message: "m".into(), errors: Vec::new() }, Kind::Invalid, "invalid_config"),
        ];
        for (error, kind, code) in cases {
            assert_eq!(kind_of(&error), (kind, code.to_string()), "{error}");
        }
        for kind in [
            Kind::Error,
            Kind::Usage,
            Kind::NotFound,
            Kind::Unreachable,
            Kind::Refused,
            Kind::Conflict,
            Kind::OutcomeUnknown,
            Kind::Invalid,
        ] {
            assert!(
                EXIT_CODES.contains(&format!("\n  {:<3} ", kind.exit_code())),
                "exit code {} undocumented",
                kind.exit_code()
            );
        }
    }

    #[test]
    fn json_failures_carry_code_message_exit_code_and_fields() {
        let failure = Failure::new(Kind::Conflict, "cannot write").code("compare_failed").with("current_revision", 4);
        let json = failure.to_json("cannot write: compare failed");
        assert_eq!(json["error"], "compare_failed");
        assert_eq!(json["exit_code"], 13);
        assert_eq!(json["current_revision"], 4);
        assert_eq!(json["message"], "cannot write: compare failed");
        let wrapped = failure.into_error().context("outer");
        assert_eq!(find(&wrapped).map(|failure| failure.kind), Some(Kind::Conflict));
    }
}
