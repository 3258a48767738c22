//! haven-check: operation histories and the checkers that judge them.
//!
//! A fault-injection run records what every client did ([`HistoryRecorder`]) and,
//! after the run, asks three questions:
//!
//! 1. [`check_linearizable`]: does each key behave like a single register that
//!    changes atomically at some instant between a request and its response?
//!    (Wing-Gong-Lowe search with Porcupine-style memoization, per key.)
//! 2. [`check_no_lost_writes`]: is every acknowledged add still in the final read
//!    of a set, and nothing invented? (Jepsen's `set-full`, final read only.)
//! 3. [`check_watchers`]: did every watcher see every committed change of its
//!    prefix, in order, once?
//! 4. [`check_holders`]: did a role run on one node at a time, with epochs that only
//!    increase? (From the `NODE EPOCH START/STOP` lines its copies wrote.)
//!
//! Every report has `passed()`, which is true only when the property was proven. A
//! checker that runs out of budget, or is given malformed input, fails.
//!
//! Pure library: no IO, no async runtime, no clock — times are `u64` nanoseconds
//! supplied by the caller. (The only exception is the optional wall-clock deadline
//! of [`CheckBudget`], which the caller opts into.) No input makes it panic.

pub mod history;
pub mod holders;
pub mod linearizable;
pub mod primaries;
pub mod set;
pub mod watch;

pub use history::{FailReason, Failure, History, HistoryRecorder, OkResult, Op, OpKind, Outcome, RecordError};
pub use holders::{check_holders, HolderProblem, HolderReport, RoleCopy};
pub use linearizable::{check_linearizable, BudgetExhausted, CheckBudget, LinFailure, LinReport, LinResult};
pub use set::{check_no_lost_writes, SetElement, SetReport};
pub use watch::{
    check_watchers, EventKind, Received, WatchEvent, WatchProblem, WatchProblemKind, WatchReport, WatcherLog,
};
