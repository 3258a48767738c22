//! The cluster alias in DNS (issue 19; seeds 000 and 003): agents and clients resolve one
//! name, on every attempt, and reach the primary.
//!
//! ```text
//!            view (members, health, primary, partitioned)      primary changed
//!   server ─────────────────────────┬──────────────────────  ─────────┬──────────
//!                                   ▼                                  ▼
//!              responder: this node answers for the alias   update: RFC 2136 + TSIG
//!              (A/AAAA primary first or only, SRV, TTL 0;    to an external DNS server
//!               SERVFAIL when partitioned)                   (BIND, AD): alias = primary
//! ```
//!
//! - [`config`]: the options (`dns.*`), validated with the HA configuration's errors.
//! - [`view`]: what the server tells the responder.
//! - [`answer`]: the answers, a pure function of the zone, the view and the question.
//! - [`responder`]: the UDP/TCP shell around it (hickory-server).
//! - `update` (next): dynamic update with TSIG, its errors (alarms) and the retrying follower.
//!
//! Nothing here decides who the primary is: the server does, and pushes it in.

pub mod answer;
pub mod config;
pub mod responder;
pub mod view;

pub use answer::AnswerMode;
pub use answer::Zone;
pub use config::DnsConfig;
pub use config::DnsSettings;
pub use config::KeyAlgorithm;
pub use config::ResponderSettings;
pub use config::UpdateSettings;
pub use responder::Responder;
pub use view::DnsView;
pub use view::MemberView;
