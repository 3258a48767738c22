//! Async client of Haven's HTTP API, used by the `haven` CLI, by tests and by agents.
//!
//! ```text
//!   agent / CLI / test
//!         │  Client::put / get / list / watch / status / members ...
//!         ▼
//!   haven-client  ◀── you are here: endpoint list, leader following, request ids,
//!         │            full-jitter back-off, timeouts, typed errors
//!         │  HTTP/JSON (docs/http-api.md, api/openapi.yaml)
//!         ▼
//!   any haven node (forwards writes to the leader)
//! ```
//!
//! A [`Client`] holds a list of endpoints and tries them in turn; it starts with the one
//! that answered last, and sends writes to the leader when a server has named it. Every
//! request has a timeout and every call a bounded number of attempts and a deadline;
//! between full rounds over the endpoints it sleeps a capped exponential back-off with full
//! jitter ([`Backoff`]). Writes carry a `request_id` reused by every retry, so a retried
//! write applies at most once. Errors say what to do next through
//! [`Error::retry_advice`].
//!
//! ```no_run
//! # async fn example() -> Result<(), haven_client::Error> {
//! use haven_client::{Client, Consistency, PutOptions};
//! let client = Client::from_endpoints("127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003")?;
//! let put = client.put("hosts/web-1/ip", b"10.0.0.5", PutOptions::default()).await?;
//! let entry = client.get("hosts/web-1/ip", Consistency::Linearizable).await?;
//! assert_eq!(entry.map(|e| e.mod_revision), Some(put.revision));
//! # Ok(())
//! # }
//! ```

mod admin_types;
mod backoff;
mod client;
mod config;
mod error;
mod ndjson;
mod path;
pub mod rolling;
mod transport;
mod types;
mod watch;

pub use admin_types::ApplyResult;
pub use admin_types::AuditChange;
pub use admin_types::AuditPage;
pub use admin_types::AuditRecord;
pub use admin_types::ConfigChange;
pub use admin_types::ConfigView;
pub use admin_types::DetachedInfo;
pub use admin_types::Draft;
pub use admin_types::DraftEdit;
pub use admin_types::DraftSummary;
pub use admin_types::DraftView;
pub use admin_types::HaSummary;
pub use admin_types::PingTarget;
pub use admin_types::Preview;
pub use admin_types::RecoverRequest;
pub use admin_types::RecoverResult;
pub use admin_types::RestartNeeded;
pub use admin_types::RestartResult;
pub use admin_types::RuleViolation;
pub use admin_types::StorageSizes;
pub use admin_types::Survivor;
pub use admin_types::TeardownResult;
pub use admin_types::HA_STATE_STABLE;
pub use admin_types::ROLE_DATA;
pub use backoff::Backoff;
pub use backoff::BackoffIter;
pub use backoff::BACKOFF_BASE_DEFAULT;
pub use backoff::BACKOFF_CAP_DEFAULT;
pub use client::new_request_id;
pub use client::Client;
pub use client::ConnectionEnd;
pub use client::HeldConnection;
pub use client::PutOptions;
pub use client::WriteOptions;
pub use client::AUDIT_PAGES_MAX;
pub use client::LIST_ALL_PAGES_MAX;
pub use config::normalize_endpoint;
pub use config::parse_endpoints;
pub use config::ClientConfig;
pub use config::CONNECT_TIMEOUT_MAX;
pub use config::DEADLINE_DEFAULT;
pub use config::ENDPOINTS_MAX;
pub use config::MAX_ATTEMPTS_DEFAULT;
pub use config::MAX_ATTEMPTS_LIMIT;
pub use config::REQUEST_TIMEOUT_DEFAULT;
pub use error::classify_response;
pub use error::Error;
pub use error::RetryAdvice;
pub use error::CODE_CLUSTER_MISMATCH;
pub use error::CODE_COMPACTED;
pub use error::CODE_COMPARE_FAILED;
pub use error::CODE_INVALID_CONFIG;
pub use error::CODE_NOT_FOUND;
pub use error::CODE_NOT_PRIMARY;
pub use error::CODE_NOT_STABLE;
pub use error::CODE_NO_LEADER;
pub use error::CODE_OUTCOME_UNKNOWN;
pub use error::CODE_RECOVER_REFUSED;
pub use error::CODE_REQUEST_ID_REUSED;
pub use error::CODE_STALE_DRAFT;
pub use error::CODE_UNAVAILABLE;
pub use error::CODE_UNKNOWN;
pub use ndjson::LineDecoder;
pub use ndjson::LineTooLong;
pub use ndjson::WATCH_LINE_BYTES_MAX;
pub use transport::HEADER_CLUSTER_ID;
pub use transport::HEADER_LEADER;
pub use transport::HEADER_LEADER_ID;
pub use transport::RESPONSE_BODY_BYTES_MAX;
pub use types::Ack;
pub use types::Consistency;
pub use types::CreatedToken;
pub use types::DeleteResult;
pub use types::HealthAnswer;
pub use types::KvEntry;
pub use types::ListPage;
pub use types::Member;
pub use types::Members;
pub use types::PutResult;
pub use types::RemoveMemberResult;
pub use types::RevokedToken;
pub use types::Status;
pub use types::SwitchoverResult;
pub use types::TokenInfo;
pub use types::TokenList;
pub use types::WatchEvent;
pub use types::HEADER_ACK;
pub use watch::WatchStream;
pub use watch::WATCH_IDLE_TIMEOUT;
pub use watch::WATCH_RECONNECTS_WITHOUT_DATA_MAX;

/// Results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
