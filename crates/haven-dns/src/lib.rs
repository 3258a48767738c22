//! The cluster alias in DNS (issue 19; seeds 000 and 003): agents and clients resolve one
//! name, on every attempt, and reach the primary.
//!
//! ```text
//!            view (members, health, primary, partitioned)      primary changed
//!   server ─────────────────────────┬──────────────────────  ─────────┬──────────
//!                                   ▼                                  ▼
//!              responder: this node answers for the alias   update: RFC 2136 + TSIG
//!              (A/AAAA primary first or only, SRV, TTL 0;    to an external DNS server
//!               SERVFAIL when partitioned)                   (BIND, Knot): alias = primary
//! ```
//!
//! - [`config`]: the options (`dns.*`), validated with the HA configuration's errors.
//! - [`view`]: what the server tells the responder.
//! - [`answer`]: the answers, a pure function of the zone, the view and the question.
//! - [`responder`]: the UDP/TCP shell around it (hickory-server).
//! - [`update`]: dynamic update with TSIG, its errors (alarms) and the retrying follower.
//!
//! Nothing here decides who the primary is: the server does, and pushes it in.
//!
//! Wiring it into the server (not done yet):
//! - configuration: [`DnsConfig`] becomes the `dns` section of the replicated HA
//!   configuration; [`DnsConfig::validate`] already reports [`HaConfigError`]s with keys
//!   under `dns.`; a change restarts the responder and the follower with the new settings.
//! - responder, on each data node: [`Responder::start`] with
//!   `settings.responder.for_node(id)`; [`Responder::publish`] a [`DnsView`] whenever the
//!   leader, its quorum, a member's health or the membership changes (`partitioned` = this
//!   node cannot vouch for a primary: the same leader-has-quorum rule as `/v1/health/primary`).
//! - update: one [`UpdateFollower`] per node; `follow(own addresses)` when this node becomes
//!   the primary, `stop()` when it stops being it; watch [`UpdateFollower::status`]: raise
//!   `RaiseAlarm` ([`update::ALARM_CONDITION`]) on `Failing`, clear it on `Done`.
//! - logging: add [`responder::LOG_DIRECTIVES`] to the default filter.
//!
//! [`HaConfigError`]: haven_core::ha::config::HaConfigError

pub mod answer;
pub mod config;
pub mod responder;
pub mod update;
pub mod view;

pub use answer::AnswerMode;
pub use answer::Zone;
pub use config::DnsConfig;
pub use config::DnsSettings;
pub use config::KeyAlgorithm;
pub use config::ResponderSettings;
pub use config::UpdateSettings;
pub use responder::Responder;
pub use update::DynamicUpdater;
pub use update::UpdateError;
pub use update::UpdateFollower;
pub use update::UpdateStatus;
pub use view::DnsView;
pub use view::MemberView;
