//! The HA control routes: configuration draft and apply, the audit log, teardown, restart
//! and recovery.
//!
//! ```text
//!   ha_config / config_draft / audit ........ reads: any endpoint, retried
//!   edit_config_draft / discard_config_draft  idempotent: retried, leader first
//!   apply_config / teardown ................. writes without request id: never resent
//!                                             once they may have arrived
//!   teardown ──409 not_primary{leader_url}──▶ status (learn members' keys)
//!            ──▶ once more, to leader_url, if it is a member's client URL
//!   restart_node / recover .................. one request to one named node: they act
//!                                             on the node that receives them
//! ```

use serde_json::json;

use super::decode;
use super::simple_get;
use super::Client;
use super::Kind;
use crate::admin_types::ApplyResult;
use crate::admin_types::AuditPage;
use crate::admin_types::ConfigView;
use crate::admin_types::DraftEdit;
use crate::admin_types::DraftView;
use crate::admin_types::RecoverRequest;
use crate::admin_types::RecoverResult;
use crate::admin_types::RestartResult;
use crate::admin_types::TeardownResult;
use crate::config::normalize_endpoint;
use crate::error::Error;
use crate::transport::Answer;
use crate::transport::Body;
use crate::transport::Request;

/// Audit pages `audit_all` reads at most. The cluster keeps 10,000 records and a page
/// holds up to 1,000, so 1,000 pages is far beyond any real log; it stops a faulty server
/// from looping the client forever.
pub const AUDIT_PAGES_MAX: usize = 1000;

/// The prefix `hold_connection` watches: it starts with a control character, which no key
/// may contain, so the stream carries only the server's progress lines.
const HOLD_PREFIX: &str = "\u{1}haven-hold";

impl Client {
    // ---- HA configuration -----------------------------------------------------------

    /// The applied HA configuration with its version, and whether a draft waits.
    pub async fn ha_config(&self) -> Result<ConfigView, Error> {
        decode(&self.execute(&simple_get("/v1/config"), &Kind::Read).await?)
    }

    /// The draft (if any) with what applying it would do: changes, every broken rule,
    /// restarts.
    pub async fn config_draft(&self) -> Result<DraftView, Error> {
        decode(&self.execute(&simple_get("/v1/config/draft"), &Kind::Read).await?)
    }

    /// Sets and unsets keys of the draft (starting one on the current version if there is
    /// none); answers like [`Client::config_draft`]. Retried safely: setting the same
    /// values twice gives the same draft.
    pub async fn edit_config_draft(&self, edit: &DraftEdit) -> Result<DraftView, Error> {
        if edit.is_empty() {
            return Err(Error::InvalidRequest("a draft edit sets or unsets at least one key".into()));
        }
        let request = json_request(reqwest::Method::PUT, "/v1/config/draft", &json!(edit))?;
        decode(&self.execute(&request, &Kind::Idempotent).await?)
    }

    /// Discards the draft; discarding when there is none succeeds.
    pub async fn discard_config_draft(&self) -> Result<(), Error> {
        let request = Request {
            method: reqwest::Method::DELETE,
            path: "/v1/config/draft".into(),
            query: Vec::new(),
            body: None,
            streaming: false,
        };
        self.execute(&request, &Kind::Idempotent).await.map(|_| ())
    }

    /// Applies the draft. `base_version` is the version the draft was shown with (from
    /// [`Client::config_draft`]): if the configuration or the draft's base moved since, the
    /// server refuses with `409 stale_draft`. A draft that breaks rules is refused with
    /// [`Error::InvalidDraft`], which lists every broken rule. Nothing to apply is not an
    /// error: `applied` is false and `message` says so.
    ///
    /// Never resent once it may have been delivered (a resend after a lost answer would
    /// find no draft and say "nothing to apply"): a lost answer gives
    /// [`Error::OutcomeUnknown`]; read the configuration's version to find out.
    pub async fn apply_config(&self, base_version: Option<u64>) -> Result<ApplyResult, Error> {
        self.apply_config_reviewed(base_version, None).await
    }

    /// [`Client::apply_config`] of exactly the draft that was reviewed: with `digest` (the
    /// draft's, from [`Client::config_draft`]), a draft someone edited since is refused
    /// with `409 stale_draft` (checked again at the apply's place in the log).
    pub async fn apply_config_reviewed(
        &self,
        base_version: Option<u64>,
        digest: Option<&str>,
    ) -> Result<ApplyResult, Error> {
        let mut body = json!({});
        if let Some(base_version) = base_version {
            body["base_version"] = base_version.into();
        }
        if let Some(digest) = digest {
            body["digest"] = digest.into();
        }
        let request = json_request(reqwest::Method::POST, "/v1/config/apply", &body)?;
        decode(&self.execute(&request, &Kind::Write { request_id: None }).await?)
    }

    // ---- Audit ----------------------------------------------------------------------

    /// One page of the audit log: the records after sequence number `since`, oldest first,
    /// at most `limit` (the server's page size, 1,000, when `None`).
    pub async fn audit(&self, since: u64, limit: Option<usize>) -> Result<AuditPage, Error> {
        let mut request = simple_get("/v1/audit");
        request.query.push(("since", since.to_string()));
        if let Some(limit) = limit {
            request.query.push(("limit", limit.to_string()));
        }
        decode(&self.execute(&request, &Kind::Read).await?)
    }

    /// Every audit record after `since`, read page by page.
    pub async fn audit_all(&self, since: u64) -> Result<AuditPage, Error> {
        let mut records = Vec::new();
        let mut after = since;
        for _ in 0..AUDIT_PAGES_MAX {
            let page = self.audit(after, None).await?;
            let Some(last) = page.records.last().map(|record| record.seq) else {
                return Ok(AuditPage { records, last_seq: page.last_seq });
            };
            if last <= after {
                return Err(Error::InvalidResponse {
                    endpoint: self.preferred_endpoint().to_string(),
                    reason: format!("an audit page after seq {after} ended at seq {last}"),
                });
            }
            records.extend(page.records);
            if last >= page.last_seq {
                return Ok(AuditPage { records, last_seq: page.last_seq });
            }
            after = last;
        }
        Err(Error::InvalidResponse {
            endpoint: self.preferred_endpoint().to_string(),
            reason: format!("the audit log did not end after {AUDIT_PAGES_MAX} pages"),
        })
    }

    // ---- Teardown, restart, recovery ------------------------------------------------

    /// Seed 002's teardown: the primary continues alone with all the data, every other
    /// member is detached. Refused with `409 not_stable` when the cluster is not stable,
    /// unless `force` (the message says what may be lost).
    ///
    /// The route must reach the primary. When the endpoint that answers is not the
    /// primary ([`Error::NotPrimary`]), the call is sent once more, to the primary's URL
    /// from that answer, provided the cluster's status lists that URL as a member's: the
    /// status also teaches the client that member's key, so TLS verifies it. Never
    /// resent once it may have been delivered.
    pub async fn teardown(&self, force: bool) -> Result<TeardownResult, Error> {
        let request = json_request(reqwest::Method::POST, "/v1/teardown", &json!({ "force": force }))?;
        let kind = Kind::Write { request_id: None };
        match self.execute(&request, &kind).await {
            Ok(answer) => decode(&answer),
            Err(Error::NotPrimary { message, leader_url: Some(url) }) => {
                let Some(primary) = self.member_endpoint(&url).await? else {
                    return Err(Error::NotPrimary { message, leader_url: Some(url) });
                };
                decode(&self.execute_at(&primary, &request, &kind).await?)
            }
            Err(error) => Err(error),
        }
    }

    /// Restarts the process of node `node_id`, at `endpoint` (admin); it comes back on the
    /// same addresses with the same data. The node checks that it is `node_id` (400
    /// `bad_request` otherwise), so a stale address or a load balancer cannot restart
    /// another node. One request to that node only. A lost answer gives
    /// [`Error::OutcomeUnknown`] (the node may be restarting already).
    pub async fn restart_node(&self, endpoint: &str, node_id: u64) -> Result<RestartResult, Error> {
        let endpoint = normalize_endpoint(endpoint)?;
        let request = json_request(reqwest::Method::POST, "/v1/restart", &json!({ "node_id": node_id }))?;
        decode(&self.execute_at(&endpoint, &request, &Kind::Write { request_id: None }).await?)
    }

    /// Guided recovery after permanent quorum loss, or the standalone start of a detached
    /// node, carried out by the node at `endpoint` (it becomes a new one-voter cluster with
    /// all its data). One request to that node only; refused with `409 recover_refused`
    /// and the reason. With `dry_run`, checks and answers without changing anything.
    pub async fn recover(&self, endpoint: &str, request: &RecoverRequest) -> Result<RecoverResult, Error> {
        let endpoint = normalize_endpoint(endpoint)?;
        let body = json_request(reqwest::Method::POST, "/v1/recover", &json!(request))?;
        let kind = if request.dry_run { Kind::Read } else { Kind::Write { request_id: None } };
        decode(&self.execute_at(&endpoint, &body, &kind).await?)
    }

    /// Opens a long-lived request to the node at `endpoint` (a watch that carries only
    /// progress lines) and holds it: [`HeldConnection::closed`] resolves when the serving
    /// process ends it. Opened before a restart, it tells that the old process has stopped
    /// serving, which polling alone cannot (a quick restart can fall between two polls).
    pub async fn hold_connection(&self, endpoint: &str) -> Result<HeldConnection, Error> {
        let endpoint = normalize_endpoint(endpoint)?;
        let request = Request {
            method: reqwest::Method::GET,
            path: "/v1/watch".into(),
            query: vec![("prefix", HOLD_PREFIX.to_string())],
            body: None,
            streaming: true,
        };
        let answer = self.execute_at(&endpoint, &request, &Kind::Read).await?;
        match answer.body {
            Body::Streaming(response) => Ok(HeldConnection { endpoint, response }),
            Body::Buffered(_) => {
                Err(Error::InvalidResponse { endpoint, reason: "a watch answered without a stream".into() })
            }
        }
    }

    /// `url` as a configured-style endpoint if the cluster's status (from a trusted node)
    /// lists it as a member's client URL; the status call also trusts the members' keys.
    async fn member_endpoint(&self, url: &str) -> Result<Option<String>, Error> {
        let Ok(url) = normalize_endpoint(url) else {
            return Ok(None);
        };
        let status = self.status().await?;
        Ok(status
            .members
            .iter()
            .any(|member| normalize_endpoint(&member.client_url).is_ok_and(|member_url| member_url == url))
            .then_some(url))
    }

    /// One request to one endpoint, not retried. For a write, a failure after which the
    /// request may have arrived is [`Error::OutcomeUnknown`]; an answer about the request
    /// itself is returned as it is.
    async fn execute_at(&self, endpoint: &str, request: &Request, kind: &Kind) -> Result<Answer, Error> {
        let timeout = self.inner.config.request_timeout;
        match self.send(endpoint, request, kind, timeout).await {
            Ok(answer) => Ok(answer),
            Err(error)
                if matches!(kind, Kind::Write { .. }) && error.is_retryable() && error.may_have_been_delivered() =>
            {
                let request_id = match kind {
                    Kind::Write { request_id } => request_id.clone(),
                    _ => None,
                };
                Err(Error::OutcomeUnknown { request_id, last_error: Box::new(error) })
            }
            Err(error) => Err(error),
        }
    }
}

/// A request with a JSON body.
fn json_request(method: reqwest::Method, path: &str, body: &serde_json::Value) -> Result<Request, Error> {
    let body = serde_json::to_vec(body)
        .map_err(|error| Error::InvalidRequest(format!("cannot encode the request: {error}")))?;
    Ok(Request { method, path: path.to_string(), query: Vec::new(), body: Some(body.into()), streaming: false })
}

/// How a held connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionEnd {
    /// The connection closed or broke: the serving process let go of it.
    Closed,
    /// The server ended the stream on purpose with an error line (e.g. the token was
    /// revoked): says nothing about the process.
    ErrorLine(String),
}

/// A long-lived request held open to one node; see [`Client::hold_connection`].
#[derive(Debug)]
pub struct HeldConnection {
    endpoint: String,
    response: reqwest::Response,
}

impl HeldConnection {
    /// The node's endpoint.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Resolves when the connection ends. Bound it with a timeout: a node that keeps
    /// serving keeps it open.
    pub async fn closed(mut self) -> ConnectionEnd {
        loop {
            match self.response.chunk().await {
                Ok(Some(chunk)) => {
                    if let Some(line) = error_line(&chunk) {
                        return ConnectionEnd::ErrorLine(line);
                    }
                }
                Ok(None) | Err(_) => return ConnectionEnd::Closed,
            }
        }
    }
}

/// The first `{"type":"error",...}` line of a watch chunk, if any.
fn error_line(chunk: &[u8]) -> Option<String> {
    String::from_utf8_lossy(chunk).lines().find_map(|line| {
        let value: serde_json::Value = serde_json::from_str(line).ok()?;
        (value["type"] == "error").then(|| line.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_lines_are_found_in_watch_chunks() {
        assert_eq!(error_line(b"{\"type\":\"progress\",\"revision\":3}\n"), None);
        let chunk = b"{\"type\":\"progress\",\"revision\":3}\n{\"type\":\"error\",\"error\":\"unauthorized\"}\n";
        assert_eq!(error_line(chunk).as_deref(), Some("{\"type\":\"error\",\"error\":\"unauthorized\"}"));
        assert_eq!(error_line(b"{\"type\":\"pro"), None, "a partial line is not an error");
    }

    #[test]
    fn json_requests_carry_their_body() {
        let request = json_request(reqwest::Method::POST, "/v1/teardown", &json!({"force": true})).unwrap();
        assert_eq!((request.method, request.path.as_str()), (reqwest::Method::POST, "/v1/teardown"));
        assert_eq!(request.body.as_deref(), Some(&br#"{"force":true}"#[..]));
        assert!(request.query.is_empty(), "these routes take no request_id");
    }
}
