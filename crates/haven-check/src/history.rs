//! Operation histories: what clients asked for, when, and what they learned.
//!
//! A client records every operation twice: once when it is *invoked* (before the
//! request leaves) and once when it *completes*. The completion is one of
//!
//! - [`Outcome::Ok`]: the server acknowledged it; reads carry the value they saw.
//! - [`Outcome::Failed`]: the operation definitely did not take effect (a 4xx, or a
//!   CAS answered 409 `compare_failed`).
//! - [`Outcome::Unknown`]: the client cannot tell (timeout, connection reset, 503
//!   `outcome_unknown`). The operation may take effect at any time after it was
//!   invoked — even long after the client gave up — or never.
//!
//! An operation that was invoked but never completed by the end of the run counts as
//! `Unknown`: that is the only safe reading of silence.
//!
//! Times are plain `u64` nanoseconds chosen by the caller (any monotonic clock shared
//! by all clients of one run). This crate never reads a clock itself.

use std::fmt;
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

/// One client operation on one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// Unique within a history; the recorder hands them out in invocation order.
    pub id: u64,
    /// Which client issued it. A client issues one operation at a time.
    pub client: u64,
    pub key: String,
    pub kind: OpKind,
    /// When the request was about to be sent.
    pub invoke_ns: u64,
    pub outcome: Outcome,
}

/// What the operation asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    /// Read the key; the value seen is in [`OkResult::value`].
    Read,
    /// Unconditional put. Checkers assume every written value is unique per run.
    Write { value: String },
    /// Put `value` only if the key currently holds `expected`
    /// (`None` = the key must be absent).
    Cas { expected: Option<String>, value: String },
    /// Remove the key (deleting an absent key is a successful no-op).
    Delete,
}

/// How the operation ended, as far as the client knows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Acknowledged by the server.
    Ok(OkResult),
    /// Definitely did not take effect.
    Failed(Failure),
    /// Timeout, connection loss or 503 `outcome_unknown`: may take effect any time
    /// after `invoke_ns`, or never.
    Unknown,
}

/// The answer to an acknowledged operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OkResult {
    /// When the response arrived.
    pub complete_ns: u64,
    /// Reads: the value seen, `None` = key absent (404). Ignored for other kinds.
    pub value: Option<String>,
    /// The cluster revision from the response, when there was one (for humans and
    /// future checks; the linearizability checker does not rely on it).
    pub revision: Option<u64>,
}

/// The answer to an operation that definitely did not take effect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// When the response arrived.
    pub complete_ns: u64,
    pub reason: FailReason,
}

/// Why an operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailReason {
    /// A CAS answered 409 `compare_failed`: the server saw a value other than
    /// `expected`. This is an observation, and the linearizability checker uses it.
    CompareFailed,
    /// Any other definite refusal (4xx): no effect, nothing observed.
    Rejected,
}

impl OkResult {
    /// Acknowledgement of a write, CAS or delete.
    pub fn done(complete_ns: u64, revision: Option<u64>) -> Self {
        Self { complete_ns, value: None, revision }
    }

    /// Answer to a read that saw `value` (`None` = absent).
    pub fn read(complete_ns: u64, value: Option<String>, revision: Option<u64>) -> Self {
        Self { complete_ns, value, revision }
    }
}

impl Outcome {
    /// When the client learned the outcome; `None` for `Unknown`.
    pub fn complete_ns(&self) -> Option<u64> {
        match self {
            Outcome::Ok(r) => Some(r.complete_ns),
            Outcome::Failed(f) => Some(f.complete_ns),
            Outcome::Unknown => None,
        }
    }
}

fn quote(v: &Option<String>) -> String {
    match v {
        Some(s) => format!("{s:?}"),
        None => "absent".to_string(),
    }
}

impl fmt::Display for OpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpKind::Read => write!(f, "read"),
            OpKind::Write { value } => write!(f, "write {value:?}"),
            OpKind::Cas { expected, value } => {
                write!(f, "cas {} -> {value:?}", quote(expected))
            }
            OpKind::Delete => write!(f, "delete"),
        }
    }
}

impl fmt::Display for Op {
    /// One line a human can read: `#12 c3 "k" read [100..250] -> "v5"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{} c{} {:?} {} ", self.id, self.client, self.key, self.kind)?;
        match &self.outcome {
            Outcome::Ok(r) => {
                write!(f, "[{}..{}] ok", self.invoke_ns, r.complete_ns)?;
                if self.kind == OpKind::Read {
                    write!(f, " -> {}", quote(&r.value))?;
                }
                if let Some(rev) = r.revision {
                    write!(f, " rev {rev}")?;
                }
                Ok(())
            }
            Outcome::Failed(x) => {
                let why = match x.reason {
                    FailReason::CompareFailed => "compare failed",
                    FailReason::Rejected => "rejected",
                };
                write!(f, "[{}..{}] {why}", self.invoke_ns, x.complete_ns)
            }
            Outcome::Unknown => write!(f, "[{}..?] unknown", self.invoke_ns),
        }
    }
}

/// A whole run's operations. Order does not matter to the checkers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    pub ops: Vec<Op>,
}

impl History {
    pub fn new(ops: Vec<Op>) -> Self {
        Self { ops }
    }

    pub fn push(&mut self, op: Op) {
        self.ops.push(op);
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Pretty JSON, to save next to a failed run's logs.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string_pretty(self)
    }

    pub fn from_json(s: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(s)
    }
}

/// Misuse of a [`HistoryRecorder`]. Recording never panics; the harness decides
/// whether a misuse is fatal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("no operation with id {0}")]
    NoSuchOp(u64),
    #[error("operation {0} already has an outcome")]
    AlreadyCompleted(u64),
    #[error("operation {id} completes at {complete_ns} ns, before it was invoked at {invoke_ns} ns")]
    CompletesBeforeInvoke { id: u64, invoke_ns: u64, complete_ns: u64 },
}

#[derive(Debug, Default)]
struct Slot {
    op: Option<Op>,
    done: bool,
}

/// Thread-safe recorder shared by all clients of a run.
///
/// `invoke` returns the op id; exactly one of `ok`/`complete`/`fail`/
/// `compare_failed`/`unknown` should follow. Ops left pending when the history is
/// taken count as [`Outcome::Unknown`].
#[derive(Debug, Default)]
pub struct HistoryRecorder {
    // Op ids are indexes into this vector.
    slots: Mutex<Vec<Slot>>,
}

impl HistoryRecorder {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Slot>> {
        // A client thread that panicked mid-record leaves consistent data behind
        // (every write below is a single assignment), so poisoning is ignored.
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Record an invocation; returns the new op's id.
    pub fn invoke(&self, client: u64, key: impl Into<String>, kind: OpKind, invoke_ns: u64) -> u64 {
        let mut slots = self.lock();
        let id = slots.len() as u64;
        slots.push(Slot {
            op: Some(Op { id, client, key: key.into(), kind, invoke_ns, outcome: Outcome::Unknown }),
            done: false,
        });
        id
    }

    fn finish(&self, id: u64, outcome: Outcome) -> Result<(), RecordError> {
        let mut slots = self.lock();
        let slot = usize::try_from(id).ok().and_then(|i| slots.get_mut(i)).ok_or(RecordError::NoSuchOp(id))?;
        if slot.done {
            return Err(RecordError::AlreadyCompleted(id));
        }
        let op = slot.op.as_mut().ok_or(RecordError::NoSuchOp(id))?;
        if let Some(complete_ns) = outcome.complete_ns() {
            if complete_ns < op.invoke_ns {
                return Err(RecordError::CompletesBeforeInvoke { id, invoke_ns: op.invoke_ns, complete_ns });
            }
        }
        op.outcome = outcome;
        slot.done = true;
        Ok(())
    }

    /// The server acknowledged the op.
    pub fn ok(&self, id: u64, result: OkResult) -> Result<(), RecordError> {
        self.finish(id, Outcome::Ok(result))
    }

    /// Shorthand for [`HistoryRecorder::ok`]: `value` is what a read saw.
    pub fn complete(
        &self,
        id: u64,
        complete_ns: u64,
        value: Option<String>,
        revision: Option<u64>,
    ) -> Result<(), RecordError> {
        self.ok(id, OkResult::read(complete_ns, value, revision))
    }

    /// The op definitely did not take effect and observed nothing (4xx).
    pub fn fail(&self, id: u64, complete_ns: u64) -> Result<(), RecordError> {
        self.finish(id, Outcome::Failed(Failure { complete_ns, reason: FailReason::Rejected }))
    }

    /// A CAS answered 409: the key did not hold the expected value.
    pub fn compare_failed(&self, id: u64, complete_ns: u64) -> Result<(), RecordError> {
        self.finish(id, Outcome::Failed(Failure { complete_ns, reason: FailReason::CompareFailed }))
    }

    /// The client cannot tell whether the op took effect.
    pub fn unknown(&self, id: u64) -> Result<(), RecordError> {
        self.finish(id, Outcome::Unknown)
    }

    /// Number of ops invoked so far.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Ops invoked but not yet completed.
    pub fn pending(&self) -> usize {
        self.lock().iter().filter(|s| !s.done).count()
    }

    /// A copy of the history so far; pending ops appear as `Unknown`.
    pub fn snapshot(&self) -> History {
        History::new(self.lock().iter().filter_map(|s| s.op.clone()).collect())
    }

    /// The final history; pending ops appear as `Unknown`.
    pub fn into_history(self) -> History {
        let slots = self.slots.into_inner().unwrap_or_else(|e| e.into_inner());
        History::new(slots.into_iter().filter_map(|s| s.op).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn recorder_assigns_ids_and_marks_pending_unknown() {
        let r = HistoryRecorder::new();
        let a = r.invoke(1, "k", OpKind::Write { value: "a".into() }, 10);
        let b = r.invoke(2, "k", OpKind::Read, 11);
        let c = r.invoke(3, "k", OpKind::Delete, 12);
        assert_eq!((a, b, c), (0, 1, 2));
        r.ok(a, OkResult::done(20, Some(5))).unwrap();
        r.complete(b, 21, Some("a".into()), Some(5)).unwrap();
        assert_eq!(r.pending(), 1);
        let h = r.into_history();
        assert_eq!(h.len(), 3);
        assert_eq!(h.ops[2].outcome, Outcome::Unknown);
        assert_eq!(h.ops[1].outcome.complete_ns(), Some(21));
    }

    #[test]
    fn recorder_rejects_misuse_without_panicking() {
        let r = HistoryRecorder::new();
        let a = r.invoke(1, "k", OpKind::Read, 10);
        assert_eq!(r.fail(99, 11), Err(RecordError::NoSuchOp(99)));
        assert_eq!(r.fail(u64::MAX, 11), Err(RecordError::NoSuchOp(u64::MAX)));
        assert!(matches!(r.fail(a, 9), Err(RecordError::CompletesBeforeInvoke { .. })));
        r.unknown(a).unwrap();
        assert_eq!(r.fail(a, 11), Err(RecordError::AlreadyCompleted(a)));
    }

    #[test]
    fn recorder_is_shared_across_threads() {
        let r = Arc::new(HistoryRecorder::new());
        let handles: Vec<_> = (0..4)
            .map(|c| {
                let r = Arc::clone(&r);
                std::thread::spawn(move || {
                    for i in 0..100u64 {
                        let id = r.invoke(c, "k", OpKind::Read, i * 2);
                        r.complete(id, i * 2 + 1, None, None).unwrap();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let h = r.snapshot();
        assert_eq!(h.len(), 400);
        let mut ids: Vec<u64> = h.ops.iter().map(|o| o.id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 400);
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn history_round_trips_through_json() {
        let r = HistoryRecorder::new();
        let a = r.invoke(1, "k", OpKind::Write { value: "a".into() }, 1);
        let b = r.invoke(2, "k", OpKind::Cas { expected: None, value: "b".into() }, 2);
        let _pending = r.invoke(3, "k", OpKind::Read, 3);
        r.ok(a, OkResult::done(4, Some(1))).unwrap();
        r.compare_failed(b, 5).unwrap();
        let h = r.into_history();
        let json = h.to_json().unwrap();
        assert_eq!(History::from_json(&json).unwrap(), h);
        assert!(json.contains("compare_failed"));
    }

    #[test]
    fn ops_display_for_humans() {
        let op = Op {
            id: 7,
            client: 2,
            key: "k".into(),
            kind: OpKind::Read,
            invoke_ns: 100,
            outcome: Outcome::Ok(OkResult::read(150, Some("v".into()), Some(3))),
        };
        assert_eq!(op.to_string(), r#"#7 c2 "k" read [100..150] ok -> "v" rev 3"#);
    }
}
