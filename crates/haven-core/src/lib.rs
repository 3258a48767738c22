//! The pure core of Haven: decisions without IO.
//!
//! ```text
//!   haven (CLI) ── haven-server (IO shell: sockets, disk, timers)
//!                        │ calls
//!                        ▼
//!                  haven-core  ◀── you are here: limits, key rules, the KV state
//!                                  machine, tokens and roles, node configuration
//!                                  validation, the one binary encoding (codec)
//! ```
//!
//! Nothing here touches a socket, a file, a clock or an async runtime: every function
//! takes its inputs (including time, where it matters) as arguments and returns a decision,
//! so the decisions are tested directly and the simulator can drive them.

pub mod ack;
pub mod admin;
pub mod auth;
pub mod clock;
pub mod codec;
pub mod config;
pub mod durability;
pub mod endpoint;
pub mod events;
pub mod ha;
pub mod hook_file;
pub mod identity;
pub mod key;
pub mod kv;
pub mod limits;
pub mod log_limit;
pub mod replica_check;
pub mod roles;
pub mod secret_file;
#[cfg(any(test, feature = "strategies"))]
pub mod strategies;
