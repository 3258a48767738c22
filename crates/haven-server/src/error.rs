//! API errors: one JSON shape, `{"error": CODE, "message": TEXT, ...}`, with the status
//! code that tells the client what to do.

use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::response::Response;
use axum::Json;
use haven_net::RemoteError;
use serde_json::json;
use serde_json::Value;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Extra fields merged into the body (`current_revision`, `outcome`, ...).
    pub extra: Vec<(&'static str, Value)>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), extra: Vec::new() }
    }

    pub fn with(mut self, key: &'static str, value: impl Into<Value>) -> ApiError {
        self.extra.push((key, value.into()));
        self
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn no_leader() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_leader",
            "the cluster has no leader right now (election in progress or quorum lost); retry with back-off",
        )
    }

    pub fn outcome_unknown(detail: &str) -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "outcome_unknown",
            format!(
                "the write may or may not have been applied ({detail}); retry with the same request_id to apply it at \
                 most once"
            ),
        )
        .with("outcome", "unknown")
    }

    /// A request id the caller used before for a different request (issue 11): nothing
    /// was applied. Retrying does not help; a new request needs a new id.
    pub fn request_id_reused(reason: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, "request_id_reused", reason)
    }

    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl From<RemoteError> for ApiError {
    fn from(error: RemoteError) -> ApiError {
        match error {
            RemoteError::NotLeader { .. } => ApiError::no_leader(),
            RemoteError::OutcomeUnknown => ApiError::outcome_unknown("the leader changed while it was in flight"),
            RemoteError::Rejected { status, code, message } => ApiError {
                status: StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
                code: static_code(&code),
                message,
                extra: Vec::new(),
            },
            RemoteError::Unavailable(message) => ApiError::unavailable(message),
        }
    }
}

impl From<ApiError> for RemoteError {
    fn from(error: ApiError) -> RemoteError {
        RemoteError::Rejected { status: error.status.as_u16(), code: error.code.to_string(), message: error.message }
    }
}

/// Error codes crossing the peer link come back as strings; map them to the fixed set.
fn static_code(code: &str) -> &'static str {
    const CODES: &[&str] = &[
        "bad_request",
        "unauthorized",
        "forbidden",
        "invalid_key",
        "not_found",
        "compare_failed",
        "incarnation_mismatch",
        "quorum_at_risk",
        "switchover_timeout",
        "conflict",
        "request_id_reused",
        "too_many_switchovers",
        "unavailable",
        "internal",
        "detached",
        "removed",
        "recovered_away",
    ];
    CODES.iter().find(|known| **known == code).copied().unwrap_or("rejected")
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.code, "message": self.message });
        if let Some(object) = body.as_object_mut() {
            for (key, value) in self.extra {
                object.insert(key.to_string(), value);
            }
        }
        (self.status, Json(body)).into_response()
    }
}
