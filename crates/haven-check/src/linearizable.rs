//! Linearizability of per-key register histories.
//!
//! **What a pass proves.** For every key there is a total order of the operations
//! that (a) respects real time — if `a` completed before `b` was invoked, `a` comes
//! first — and (b) is a legal run of a single register: every acknowledged read
//! returns the value of the latest write/CAS/delete before it (absent at the start),
//! every acknowledged CAS found its expected value, and every CAS answered 409 found
//! something else. Linearizability is compositional (Herlihy & Wing), so checking
//! each key alone is exactly as strong as checking the whole store at once, and far
//! cheaper.
//!
//! **Unknown and failed operations.** An operation with an unknown outcome may take
//! effect at any point after its invocation, or never: it has no return event, so
//! the search may place it anywhere after its call or leave it out. Unknown reads
//! observed nothing and are dropped. Operations that definitely failed are dropped,
//! except a CAS answered 409, which is kept as an observation "the key did not hold
//! `expected`" inside its call/return window.
//!
//! **Search.** Wing & Gong's algorithm with Lowe's memoization, as in Porcupine
//! (`checker.go`): call and return events sorted by time in a doubly linked list;
//! the search repeatedly tries to linearize a pending call (lifting it and its
//! return out of the list), backtracks when it meets the return of an operation it
//! has not linearized, and skips any (linearized-set, register-state) configuration
//! it has already explored. The search is exponential in the worst case, so it runs
//! under a [`CheckBudget`]; running out of budget is reported as
//! [`LinResult::TimedOut`], which is a failure — a checker that gave up proved
//! nothing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::time::Instant;

use crate::history::{FailReason, History, Op, OpKind, Outcome};

/// How much work the checker may do before giving up (and failing the run).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckBudget {
    /// Search steps over all keys together. Deterministic: the same history and
    /// budget always give the same answer.
    pub max_steps: u64,
    /// Optional wall-clock limit, checked every few thousand steps. Makes the
    /// answer depend on machine speed; use it as a safety net only.
    pub deadline: Option<Instant>,
}

impl CheckBudget {
    /// A few seconds of search on ordinary hardware.
    pub const DEFAULT_MAX_STEPS: u64 = 20_000_000;

    pub fn steps(max_steps: u64) -> Self {
        Self { max_steps, deadline: None }
    }

    pub fn with_deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }
}

impl Default for CheckBudget {
    fn default() -> Self {
        Self::steps(Self::DEFAULT_MAX_STEPS)
    }
}

/// Which limit stopped the search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetExhausted {
    Steps,
    Deadline,
}

/// Result of [`check_linearizable`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinReport {
    pub result: LinResult,
    /// Keys whose search finished (all of them when the history passed).
    pub keys_checked: usize,
    /// Operations that took part in a finished search.
    pub ops_checked: usize,
    /// Search steps spent.
    pub steps: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinResult {
    /// Every key's history is linearizable.
    Linearizable,
    /// Some key's history is not; the first such key in key order.
    NotLinearizable(LinFailure),
    /// The budget ran out while checking `key`. Callers must treat this as a failure.
    TimedOut { key: String, exhausted: BudgetExhausted },
    /// The history itself is malformed (e.g. an op completing before its invocation).
    InvalidHistory { reason: String },
}

/// Where the search got stuck on a non-linearizable key, for a human to debug.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinFailure {
    pub key: String,
    /// Op ids of the longest linearizable prefix the search found, in order.
    pub longest_prefix: Vec<u64>,
    /// The register's value after that prefix (`None` = absent).
    pub state_after_prefix: Option<String>,
    /// The op that had to take effect next (its return came) but could not.
    pub stuck_op: u64,
    /// Other ops outside the prefix invoked before `stuck_op` returned: the
    /// alternatives the search also could not place.
    pub concurrent: Vec<u64>,
    /// Multi-line explanation naming the ops above.
    pub explanation: String,
}

impl LinReport {
    /// True only when linearizability was proven. A timeout or malformed history fails.
    pub fn passed(&self) -> bool {
        matches!(self.result, LinResult::Linearizable)
    }

    /// The key that failed or timed out, if any.
    pub fn failing_key(&self) -> Option<&str> {
        match &self.result {
            LinResult::NotLinearizable(f) => Some(&f.key),
            LinResult::TimedOut { key, .. } => Some(key),
            LinResult::Linearizable | LinResult::InvalidHistory { .. } => None,
        }
    }
}

impl fmt::Display for LinReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.result {
            LinResult::Linearizable => {
                write!(f, "linearizable: {} keys, {} ops, {} steps", self.keys_checked, self.ops_checked, self.steps)
            }
            LinResult::NotLinearizable(x) => write!(f, "NOT linearizable: {}", x.explanation),
            LinResult::TimedOut { key, exhausted } => write!(
                f,
                "linearizability check TIMED OUT ({exhausted:?} budget) on key {key:?} after {} \
                 steps; nothing was proven, treat as failure",
                self.steps
            ),
            LinResult::InvalidHistory { reason } => write!(f, "invalid history: {reason}"),
        }
    }
}

/// Register states are interned values; 0 is "absent".
type State = usize;
const ABSENT: State = 0;

/// An op reduced to what the register model needs.
#[derive(Debug, Clone, Copy)]
enum Action {
    Read {
        saw: State,
    },
    Write {
        value: State,
    },
    Cas {
        expected: State,
        value: State,
    },
    /// Unknown-outcome CAS: if placed where the key holds `expected` it writes,
    /// elsewhere it is a no-op (which is the same as not happening).
    MaybeCas {
        expected: State,
        value: State,
    },
    /// CAS answered 409: only legal where the key does not hold `expected`.
    CasMismatch {
        expected: State,
    },
    Delete,
}

/// The sequential register: the new state, or `None` if the op cannot happen here.
fn apply(state: State, action: Action) -> Option<State> {
    match action {
        Action::Read { saw } => (state == saw).then_some(state),
        Action::Write { value } => Some(value),
        Action::Cas { expected, value } => (state == expected).then_some(value),
        Action::MaybeCas { expected, value } => Some(if state == expected { value } else { state }),
        Action::CasMismatch { expected } => (state != expected).then_some(state),
        Action::Delete => Some(ABSENT),
    }
}

struct KeyOp<'h> {
    op: &'h Op,
    action: Action,
    call: u64,
    /// `None`: unknown outcome, returns "at infinity".
    ret: Option<u64>,
}

#[derive(Default)]
struct Interner<'h> {
    ids: HashMap<&'h str, State>,
    names: Vec<&'h str>,
}

impl<'h> Interner<'h> {
    fn id(&mut self, v: Option<&'h str>) -> State {
        let Some(v) = v else { return ABSENT };
        if let Some(&id) = self.ids.get(v) {
            return id;
        }
        self.names.push(v);
        let id = self.names.len(); // 1-based: 0 is ABSENT
        self.ids.insert(v, id);
        id
    }

    fn name(&self, id: State) -> Option<String> {
        id.checked_sub(1).and_then(|i| self.names.get(i)).map(|s| s.to_string())
    }
}

/// Turn one op into a model action, or `None` when it carries no information.
fn reduce<'h>(op: &'h Op, values: &mut Interner<'h>) -> Option<KeyOp<'h>> {
    let (action, ret) = match (&op.kind, &op.outcome) {
        (OpKind::Cas { expected, .. }, Outcome::Failed(f)) if f.reason == FailReason::CompareFailed => {
            let expected = values.id(expected.as_deref());
            (Action::CasMismatch { expected }, Some(f.complete_ns))
        }
        // Definitely no effect, nothing observed.
        (_, Outcome::Failed(_)) => return None,
        // An unanswered read observed nothing.
        (OpKind::Read, Outcome::Unknown) => return None,
        (OpKind::Read, Outcome::Ok(r)) => {
            let saw = values.id(r.value.as_deref());
            (Action::Read { saw }, Some(r.complete_ns))
        }
        (OpKind::Write { value }, outcome) => {
            let value = values.id(Some(value));
            (Action::Write { value }, outcome.complete_ns())
        }
        (OpKind::Cas { expected, value }, outcome) => {
            let expected = values.id(expected.as_deref());
            let value = values.id(Some(value));
            match outcome {
                Outcome::Unknown => (Action::MaybeCas { expected, value }, None),
                _ => (Action::Cas { expected, value }, outcome.complete_ns()),
            }
        }
        (OpKind::Delete, outcome) => (Action::Delete, outcome.complete_ns()),
    };
    Some(KeyOp { op, action, call: op.invoke_ns, ret })
}

/// Remove unknown-outcome writes whose value nobody observed.
///
/// Why: each unknown op stays pending until the end of the history, so every one
/// of them doubles the configurations the search may visit; a run with many
/// timeouts would otherwise exhaust any budget. Why it is sound: "it never took
/// effect" is always a legal fate for an unknown op. Conversely, take any
/// linearization that contains such a write `W` of value `w` and delete `W`: the
/// ops between `W` and the next state change saw `w`, so none of them is a read
/// (nobody read `w`) or a successful CAS (nobody expected `w`); an unknown CAS there
/// was a no-op and can be dropped too; and a 409 CAS there would now see the older
/// value, which is why `W` is kept when any 409 CAS could be placed after it.
fn drop_unobserved_unknowns(ops: Vec<KeyOp<'_>>) -> Vec<KeyOp<'_>> {
    let mut observed = HashSet::new();
    let mut last_mismatch_ret: Option<u64> = None;
    for o in &ops {
        match o.action {
            Action::Read { saw } => {
                observed.insert(saw);
            }
            Action::Cas { expected, .. } | Action::MaybeCas { expected, .. } => {
                observed.insert(expected);
            }
            Action::CasMismatch { .. } => {
                last_mismatch_ret = last_mismatch_ret.max(o.ret);
            }
            Action::Write { .. } | Action::Delete => {}
        }
    }
    ops.into_iter()
        .filter(|o| {
            let value = match (o.ret, o.action) {
                (None, Action::Write { value }) | (None, Action::MaybeCas { value, .. }) => value,
                _ => return true,
            };
            observed.contains(&value) || last_mismatch_ret.is_some_and(|r| r >= o.call)
        })
        .collect()
}

/// Counts search steps against the budget.
struct Meter {
    remaining: u64,
    used: u64,
    deadline: Option<Instant>,
}

impl Meter {
    fn tick(&mut self) -> Result<(), BudgetExhausted> {
        if self.remaining == 0 {
            return Err(BudgetExhausted::Steps);
        }
        self.remaining -= 1;
        self.used += 1;
        if let Some(d) = self.deadline {
            // Reading the clock every step would dominate the cost of a step; check every 4096.
            if self.used & 4095 == 0 && Instant::now() >= d {
                return Err(BudgetExhausted::Deadline);
            }
        }
        Ok(())
    }
}

enum Verdict {
    Linearizable,
    /// Indexes into the key's ops.
    Illegal {
        prefix: Vec<usize>,
        state: State,
        stuck: usize,
    },
    OutOfBudget(BudgetExhausted),
}

/// One call or return event.
struct Event {
    time: u64,
    /// Return of an unknown op: after every finite event.
    infinite: bool,
    is_call: bool,
    op: usize,
}

const NIL: usize = usize::MAX;
const HEAD: usize = 0;

/// The event list: node `i + 1` is `events[i]`, node 0 is the head sentinel.
struct EventList {
    events: Vec<Event>,
    next: Vec<usize>,
    prev: Vec<usize>,
    /// For a call node, its return node.
    partner: Vec<usize>,
}

impl EventList {
    fn new(ops: &[KeyOp<'_>]) -> Self {
        let mut events = Vec::with_capacity(ops.len() * 2);
        for (i, o) in ops.iter().enumerate() {
            events.push(Event { time: o.call, infinite: false, is_call: true, op: i });
            events.push(Event { time: o.ret.unwrap_or(u64::MAX), infinite: o.ret.is_none(), is_call: false, op: i });
        }
        // Calls before returns at equal times: ops that touch at an instant are
        // treated as concurrent, which never rejects a linearizable history.
        events.sort_by_key(|e| (e.infinite, e.time, !e.is_call, e.op));
        let m = events.len();
        let next = (0..=m).map(|i| if i < m { i + 1 } else { NIL }).collect();
        let prev = (0..=m).map(|i| i.checked_sub(1).unwrap_or(NIL)).collect();
        let mut return_node = vec![NIL; ops.len()];
        for (i, e) in events.iter().enumerate() {
            if !e.is_call {
                return_node[e.op] = i + 1;
            }
        }
        let mut partner = vec![NIL; m + 1];
        for (i, e) in events.iter().enumerate() {
            if e.is_call {
                partner[i + 1] = return_node[e.op];
            }
        }
        Self { events, next, prev, partner }
    }

    fn event(&self, node: usize) -> &Event {
        &self.events[node - 1]
    }

    fn unlink(&mut self, node: usize) {
        let (p, n) = (self.prev[node], self.next[node]);
        self.next[p] = n;
        if n != NIL {
            self.prev[n] = p;
        }
    }

    fn relink(&mut self, node: usize) {
        let (p, n) = (self.prev[node], self.next[node]);
        self.next[p] = node;
        if n != NIL {
            self.prev[n] = node;
        }
    }

    /// Remove a call and its return (dancing links: the nodes keep their own
    /// pointers so `unlift` in reverse order restores the list exactly).
    fn lift(&mut self, call: usize) {
        self.unlink(call);
        self.unlink(self.partner[call]);
    }

    fn unlift(&mut self, call: usize) {
        self.relink(self.partner[call]);
        self.relink(call);
    }
}

fn bit_set(bits: &mut [u64], i: usize) {
    bits[i / 64] |= 1 << (i % 64);
}

fn bit_clear(bits: &mut [u64], i: usize) {
    bits[i / 64] &= !(1 << (i % 64));
}

type RunLength = Box<[(u64, u64)]>;

/// The linearized set as runs of equal 64-bit words (`(word, repeat)`), trailing
/// zero words left out: an exact, canonical and usually tiny key for the cache of
/// explored configurations. The cache holds one entry per configuration, so its
/// size is what bounds memory (about 100 bytes an entry, at most one per step).
fn compress(bits: &[u64]) -> RunLength {
    let end = bits.iter().rposition(|&w| w != 0).map_or(0, |i| i + 1);
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for &w in &bits[..end] {
        match runs.last_mut() {
            Some((last, n)) if *last == w => *n += 1,
            _ => runs.push((w, 1)),
        }
    }
    runs.into_boxed_slice()
}

/// Wing-Gong-Lowe search over one key's ops.
fn search(ops: &[KeyOp<'_>], meter: &mut Meter) -> Verdict {
    let mut list = EventList::new(ops);
    let mut linearized = vec![0u64; ops.len().div_ceil(64)];
    let mut seen: HashSet<(RunLength, State)> = HashSet::new();
    // Linearized calls, with the state before each, to backtrack.
    let mut calls: Vec<(usize, State)> = Vec::new();
    let mut state = ABSENT;
    let mut best: Option<(Vec<usize>, State, usize)> = None;
    let mut node = list.next[HEAD];
    while list.next[HEAD] != NIL {
        if let Err(e) = meter.tick() {
            return Verdict::OutOfBudget(e);
        }
        if node == NIL {
            // Every call has its return after it, so a walk meets a return first;
            // reaching the end would mean only unknown calls remain.
            return Verdict::Linearizable;
        }
        let ev = list.event(node);
        if ev.is_call {
            let op = ev.op;
            if let Some(new_state) = apply(state, ops[op].action) {
                bit_set(&mut linearized, op);
                if seen.insert((compress(&linearized), new_state)) {
                    calls.push((node, state));
                    state = new_state;
                    list.lift(node);
                    node = list.next[HEAD];
                    continue;
                }
                // Explored before from this exact configuration.
                bit_clear(&mut linearized, op);
            }
            node = list.next[node];
        } else {
            if ev.infinite {
                // The first pending return is an unknown op's: every op that has a
                // return is linearized; the remaining unknown ops never happened
                // (or happen later, which no one observed).
                return Verdict::Linearizable;
            }
            // `ev.op` must take effect before now but was not placed.
            if best.as_ref().is_none_or(|b| calls.len() > b.0.len()) {
                let prefix = calls.iter().map(|&(c, _)| list.event(c).op).collect();
                best = Some((prefix, state, ev.op));
            }
            let Some((call, prev_state)) = calls.pop() else {
                let (prefix, state, stuck) = best.unwrap_or((Vec::new(), ABSENT, ev.op));
                return Verdict::Illegal { prefix, state, stuck };
            };
            state = prev_state;
            bit_clear(&mut linearized, list.event(call).op);
            list.unlift(call);
            node = list.next[call];
        }
    }
    Verdict::Linearizable
}

/// How many ops of the prefix and of the concurrent set to print.
const SHOW: usize = 8;

fn explain(
    key: &str,
    ops: &[KeyOp<'_>],
    values: &Interner<'_>,
    prefix: &[usize],
    state: State,
    stuck: usize,
) -> LinFailure {
    let in_prefix: HashSet<usize> = prefix.iter().copied().collect();
    let stuck_ret = ops[stuck].ret.unwrap_or(u64::MAX);
    let mut concurrent: Vec<usize> =
        (0..ops.len()).filter(|&i| i != stuck && !in_prefix.contains(&i) && ops[i].call <= stuck_ret).collect();
    concurrent.sort_by_key(|&i| (ops[i].call, ops[i].op.id));
    let state_name = values.name(state);
    let shown = match &state_name {
        Some(v) => format!("{v:?}"),
        None => "absent".to_string(),
    };
    let mut text = format!(
        "key {key:?}: no linearization exists. The longest linearizable prefix places {} of {} \
         ops and leaves the key {shown}; then op #{} had to take effect (it completed) but \
         cannot, and neither can any op concurrent with it.",
        prefix.len(),
        ops.len(),
        ops[stuck].op.id
    );
    let skipped = prefix.len().saturating_sub(SHOW);
    text.push_str("\n  end of the prefix:");
    if skipped > 0 {
        text.push_str(&format!("\n    ... {skipped} earlier ops"));
    }
    if prefix.is_empty() {
        text.push_str("\n    (empty)");
    }
    for &i in prefix.iter().skip(skipped) {
        text.push_str(&format!("\n    {}", ops[i].op));
    }
    text.push_str(&format!("\n  stuck on:\n    {}", ops[stuck].op));
    if !concurrent.is_empty() {
        text.push_str("\n  also pending then:");
        for &i in concurrent.iter().take(SHOW) {
            text.push_str(&format!("\n    {}", ops[i].op));
        }
        if concurrent.len() > SHOW {
            text.push_str(&format!("\n    ... {} more", concurrent.len() - SHOW));
        }
    }
    LinFailure {
        key: key.to_string(),
        longest_prefix: prefix.iter().map(|&i| ops[i].op.id).collect(),
        state_after_prefix: state_name,
        stuck_op: ops[stuck].op.id,
        concurrent: concurrent.iter().map(|&i| ops[i].op.id).collect(),
        explanation: text,
    }
}

fn validate(history: &History) -> Result<(), String> {
    let mut ids = HashSet::new();
    for op in &history.ops {
        if !ids.insert(op.id) {
            return Err(format!("op id {} appears more than once", op.id));
        }
        if let Some(c) = op.outcome.complete_ns() {
            if c < op.invoke_ns {
                return Err(format!("op completes before it was invoked: {op}"));
            }
        }
    }
    Ok(())
}

/// Check that every key's sub-history is linearizable for a register.
///
/// Keys are checked in lexicographic order; the report names the first key that
/// fails or exhausts the budget. Only [`LinReport::passed`] means "proven".
pub fn check_linearizable(history: &History, budget: CheckBudget) -> LinReport {
    let mut report = LinReport { result: LinResult::Linearizable, keys_checked: 0, ops_checked: 0, steps: 0 };
    if let Err(reason) = validate(history) {
        report.result = LinResult::InvalidHistory { reason };
        return report;
    }
    let mut by_key: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in &history.ops {
        by_key.entry(op.key.as_str()).or_default().push(op);
    }
    let mut meter = Meter { remaining: budget.max_steps, used: 0, deadline: budget.deadline };
    for (key, key_ops) in by_key {
        let mut values = Interner::default();
        let ops: Vec<KeyOp<'_>> = key_ops.into_iter().filter_map(|op| reduce(op, &mut values)).collect();
        let mut ops = drop_unobserved_unknowns(ops);
        // Index ops by invocation so the linearized set is mostly a run of ones
        // followed by a few stragglers, which `compress` stores in a few words.
        ops.sort_by_key(|o| (o.call, o.op.id));
        let verdict = search(&ops, &mut meter);
        report.steps = meter.used;
        match verdict {
            Verdict::Linearizable => {
                report.keys_checked += 1;
                report.ops_checked += ops.len();
            }
            Verdict::Illegal { prefix, state, stuck } => {
                report.keys_checked += 1;
                report.ops_checked += ops.len();
                let failure = explain(key, &ops, &values, &prefix, state, stuck);
                report.result = LinResult::NotLinearizable(failure);
                return report;
            }
            Verdict::OutOfBudget(exhausted) => {
                report.result = LinResult::TimedOut { key: key.to_string(), exhausted };
                return report;
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Failure, OkResult};
    use proptest::prelude::*;

    fn op(id: u64, key: &str, kind: OpKind, invoke_ns: u64, outcome: Outcome) -> Op {
        Op { id, client: id, key: key.to_string(), kind, invoke_ns, outcome }
    }

    fn ok(complete_ns: u64) -> Outcome {
        Outcome::Ok(OkResult::done(complete_ns, None))
    }

    fn write(id: u64, key: &str, v: &str, inv: u64, done: u64) -> Op {
        let kind = OpKind::Write { value: v.into() };
        op(id, key, kind, inv, ok(done))
    }

    fn write_unknown(id: u64, key: &str, v: &str, inv: u64) -> Op {
        let kind = OpKind::Write { value: v.into() };
        op(id, key, kind, inv, Outcome::Unknown)
    }

    fn read(id: u64, key: &str, saw: Option<&str>, inv: u64, done: u64) -> Op {
        let outcome = Outcome::Ok(OkResult::read(done, saw.map(String::from), None));
        op(id, key, OpKind::Read, inv, outcome)
    }

    fn cas(id: u64, key: &str, exp: Option<&str>, v: &str, inv: u64, outcome: Outcome) -> Op {
        let kind = OpKind::Cas { expected: exp.map(String::from), value: v.into() };
        op(id, key, kind, inv, outcome)
    }

    fn failed(complete_ns: u64, reason: FailReason) -> Outcome {
        Outcome::Failed(Failure { complete_ns, reason })
    }

    fn check(ops: Vec<Op>) -> LinReport {
        check_linearizable(&History::new(ops), CheckBudget::default())
    }

    fn failure(r: &LinReport) -> &LinFailure {
        match &r.result {
            LinResult::NotLinearizable(f) => f,
            other => panic!("expected NotLinearizable, got {other:?}"),
        }
    }

    #[test]
    fn compressed_sets_are_exact_and_canonical() {
        let full = u64::MAX;
        assert_eq!(compress(&[full, full, 5, 0, 0]), compress(&[full, full, 5]));
        assert_eq!(&*compress(&[full, full, 5]), &[(full, 2), (5, 1)]);
        assert_ne!(compress(&[full, 5]), compress(&[full, full, 5]));
        assert_ne!(compress(&[0, 5]), compress(&[5]));
        assert!(compress(&[0, 0]).is_empty());
    }

    #[test]
    fn empty_history_passes() {
        let r = check(vec![]);
        assert!(r.passed(), "{r}");
        assert_eq!(r.keys_checked, 0);
    }

    #[test]
    fn sequential_write_then_read_passes() {
        let r = check(vec![
            read(0, "k", None, 0, 5),
            write(1, "k", "a", 10, 20),
            read(2, "k", Some("a"), 30, 40),
            op(3, "k", OpKind::Delete, 50, ok(60)),
            read(4, "k", None, 70, 80),
        ]);
        assert!(r.passed(), "{r}");
        assert_eq!(r.ops_checked, 5);
    }

    #[test]
    fn concurrent_read_may_see_either_value() {
        for saw in [Some("a"), Some("b")] {
            let r = check(vec![write(0, "k", "a", 0, 10), write(1, "k", "b", 20, 40), read(2, "k", saw, 25, 35)]);
            assert!(r.passed(), "{saw:?}: {r}");
        }
    }

    #[test]
    fn concurrent_reads_must_agree_on_an_order() {
        // Two sequential reads during one write: once the new value is seen the old
        // one cannot come back.
        let r = check(vec![
            write(0, "k", "a", 0, 10),
            write(1, "k", "b", 20, 100),
            read(2, "k", Some("b"), 30, 40),
            read(3, "k", Some("a"), 50, 60),
        ]);
        assert!(!r.passed());
        assert_eq!(failure(&r).stuck_op, 3);
    }

    #[test]
    fn stale_read_is_flagged() {
        let r = check(vec![write(10, "k", "a", 0, 10), write(11, "k", "b", 20, 30), read(12, "k", Some("a"), 40, 50)]);
        assert!(!r.passed());
        let f = failure(&r);
        assert_eq!(f.key, "k");
        assert_eq!(f.stuck_op, 12);
        assert_eq!(f.longest_prefix, vec![10, 11]);
        assert_eq!(f.state_after_prefix.as_deref(), Some("b"));
        assert!(f.explanation.contains("#12"), "{}", f.explanation);
        assert!(r.to_string().contains("NOT linearizable"));
    }

    #[test]
    fn read_of_never_written_value_is_flagged() {
        let r = check(vec![write(0, "k", "a", 0, 10), read(1, "k", Some("zzz"), 20, 30)]);
        assert_eq!(failure(&r).stuck_op, 1);
    }

    #[test]
    fn read_of_absent_after_acknowledged_write_is_flagged() {
        let r = check(vec![write(0, "k", "a", 0, 10), read(1, "k", None, 20, 30)]);
        assert!(!r.passed());
    }

    #[test]
    fn cas_succeeding_against_wrong_value_is_flagged() {
        let r = check(vec![write(0, "k", "a", 0, 10), cas(1, "k", Some("x"), "c", 20, ok(30))]);
        assert_eq!(failure(&r).stuck_op, 1);
        let r = check(vec![write(0, "k", "a", 0, 10), cas(1, "k", None, "c", 20, ok(30))]);
        assert!(!r.passed(), "create-if-absent succeeded on a present key");
    }

    #[test]
    fn correct_cas_chain_passes() {
        let r = check(vec![
            cas(0, "k", None, "a", 0, ok(10)),
            cas(1, "k", Some("a"), "b", 20, ok(30)),
            cas(2, "k", Some("a"), "c", 40, failed(50, FailReason::CompareFailed)),
            read(3, "k", Some("b"), 60, 70),
        ]);
        assert!(r.passed(), "{r}");
    }

    #[test]
    fn cas_compare_failed_when_it_should_have_matched_is_flagged() {
        let r = check(vec![
            write(0, "k", "a", 0, 10),
            cas(1, "k", Some("a"), "b", 20, failed(30, FailReason::CompareFailed)),
        ]);
        assert_eq!(failure(&r).stuck_op, 1);
    }

    #[test]
    fn rejected_write_must_not_be_seen() {
        let rejected = op(1, "k", OpKind::Write { value: "b".into() }, 20, failed(30, FailReason::Rejected));
        let r = check(vec![write(0, "k", "a", 0, 10), rejected.clone(), read(2, "k", Some("a"), 40, 50)]);
        assert!(r.passed(), "{r}");
        let r = check(vec![write(0, "k", "a", 0, 10), rejected, read(2, "k", Some("b"), 40, 50)]);
        assert!(!r.passed());
    }

    #[test]
    fn unknown_write_may_take_effect_much_later() {
        let r = check(vec![
            write_unknown(0, "k", "a", 0),
            read(1, "k", None, 10, 20),
            read(2, "k", None, 1_000, 1_010),
            read(3, "k", Some("a"), 5_000, 5_010),
            read(4, "k", Some("a"), 6_000, 6_010),
        ]);
        assert!(r.passed(), "{r}");
    }

    #[test]
    fn unknown_write_may_never_take_effect() {
        let r = check(vec![
            write(0, "k", "a", 0, 10),
            write_unknown(1, "k", "b", 20),
            read(2, "k", Some("a"), 30, 40),
            cas(3, "k", Some("b"), "c", 50, Outcome::Unknown),
            op(4, "k", OpKind::Read, 60, Outcome::Unknown),
        ]);
        assert!(r.passed(), "{r}");
    }

    #[test]
    fn unknown_write_cannot_take_effect_before_invoke_or_twice() {
        // Seen before it was invoked.
        let r = check(vec![read(0, "k", Some("a"), 0, 10), write_unknown(1, "k", "a", 20)]);
        assert!(!r.passed());
        // Takes effect, then vanishes although nothing else wrote.
        let r = check(vec![write_unknown(0, "k", "a", 0), read(1, "k", Some("a"), 10, 20), read(2, "k", None, 30, 40)]);
        assert!(!r.passed());
    }

    #[test]
    fn unknown_cas_only_applies_where_it_matches() {
        // The unknown CAS expected "x", which never held, so "c" cannot appear.
        let r = check(vec![
            write(0, "k", "a", 0, 10),
            cas(1, "k", Some("x"), "c", 20, Outcome::Unknown),
            read(2, "k", Some("c"), 30, 40),
        ]);
        assert!(!r.passed());
        let r = check(vec![
            write(0, "k", "a", 0, 10),
            cas(1, "k", Some("a"), "c", 20, Outcome::Unknown),
            read(2, "k", Some("c"), 30, 40),
        ]);
        assert!(r.passed(), "{r}");
    }

    #[test]
    fn keys_are_checked_independently_and_failing_key_is_named() {
        let r = check(vec![
            write(0, "a", "1", 0, 10),
            read(1, "a", Some("1"), 20, 30),
            write(2, "b", "1", 0, 10),
            write(3, "b", "2", 20, 30),
            read(4, "b", Some("1"), 40, 50),
            // "c" is fine but comes after the failing key.
            read(5, "c", None, 0, 10),
        ]);
        assert_eq!(r.failing_key(), Some("b"));
        // The same value on another key does not satisfy a read.
        let r = check(vec![write(0, "a", "1", 0, 10), read(1, "b", Some("1"), 20, 30)]);
        assert_eq!(r.failing_key(), Some("b"));
    }

    #[test]
    fn malformed_history_fails() {
        let r = check(vec![write(0, "k", "a", 10, 5)]);
        assert!(matches!(r.result, LinResult::InvalidHistory { .. }));
        assert!(!r.passed());
        let r = check(vec![write(0, "k", "a", 0, 5), write(0, "k", "b", 0, 5)]);
        assert!(!r.passed());
    }

    #[test]
    fn extreme_times_do_not_panic() {
        let r = check(vec![
            write(0, "k", "a", u64::MAX, u64::MAX),
            read(1, "k", Some("a"), u64::MAX, u64::MAX),
            write_unknown(2, "k", "b", u64::MAX),
        ]);
        assert!(r.passed(), "{r}");
    }

    #[test]
    fn many_unobserved_unknown_writes_stay_cheap() {
        // Timeouts during a partition: 60 writes whose fate is unknown and whose
        // values nobody read. Each would double the search space if kept.
        let mut ops = vec![write(0, "k", "a", 0, 10)];
        for i in 1..=60 {
            ops.push(write_unknown(i, "k", &format!("lost{i}"), 10 + i));
        }
        for i in 0..200 {
            ops.push(read(100 + i, "k", Some("a"), 1_000 + 10 * i, 1_005 + 10 * i));
        }
        let r = check_linearizable(&History::new(ops), CheckBudget::steps(10_000));
        assert!(r.passed(), "{r}");
        assert_eq!(r.ops_checked, 201);
    }

    #[test]
    fn unobserved_unknown_write_is_kept_when_a_409_needs_it() {
        // The 409 says the key did not hold "a": only the unknown write explains it.
        let r = check(vec![
            write(0, "k", "a", 0, 10),
            write_unknown(1, "k", "b", 20),
            cas(2, "k", Some("a"), "c", 30, failed(40, FailReason::CompareFailed)),
        ]);
        assert!(r.passed(), "{r}");
        // Without the unknown write it is a violation.
        let r = check(vec![
            write(0, "k", "a", 0, 10),
            cas(2, "k", Some("a"), "c", 30, failed(40, FailReason::CompareFailed)),
        ]);
        assert!(!r.passed());
    }

    fn many_concurrent_writes(n: u64) -> Vec<Op> {
        let mut ops: Vec<Op> = (0..n).map(|i| write(i, "k", &format!("v{i}"), i, 1_000 + i)).collect();
        ops.push(read(n, "k", Some("nope"), 2_000, 2_010));
        ops
    }

    #[test]
    fn exhausted_step_budget_fails_the_run() {
        let h = History::new(many_concurrent_writes(30));
        let r = check_linearizable(&h, CheckBudget::steps(50));
        assert!(
            matches!(
                &r.result,
                LinResult::TimedOut { key, exhausted: BudgetExhausted::Steps } if key == "k"
            ),
            "{r}"
        );
        assert!(!r.passed());
        assert_eq!(r.failing_key(), Some("k"));
        assert!(r.to_string().contains("TIMED OUT"));
        // Zero budget: even a trivial history is not "passed".
        let r = check_linearizable(&History::new(vec![read(0, "k", None, 0, 1)]), CheckBudget::steps(0));
        assert!(!r.passed());
    }

    #[test]
    fn expired_deadline_fails_the_run() {
        let h = History::new(many_concurrent_writes(30));
        let budget = CheckBudget::steps(u64::MAX).with_deadline(Instant::now());
        let r = check_linearizable(&h, budget);
        assert!(matches!(r.result, LinResult::TimedOut { exhausted: BudgetExhausted::Deadline, .. }), "{r}");
    }

    #[test]
    fn memoization_keeps_wide_concurrency_tractable() {
        // 12 mutually concurrent writes followed by a read of the one that must have
        // come last: without the (set, state) cache this is 12! orders; with it,
        // at most 12 * 2^11 configurations.
        let mut ops: Vec<Op> = (0..12).map(|i| write(i, "k", &format!("v{i}"), i, 1_000 + i)).collect();
        ops.push(read(30, "k", Some("v7"), 2_000, 2_010));
        let r = check(ops);
        assert!(r.passed(), "{r}");
    }

    // ---- property tests -------------------------------------------------------

    /// A generated operation: what to do, on which key, and (for unknown writes)
    /// whether it secretly took effect.
    #[derive(Debug, Clone)]
    struct Step {
        key: usize,
        kind: u8,
        applied: bool,
        before: u64,
        after: u64,
    }

    fn steps(max: usize) -> impl Strategy<Value = Vec<Step>> {
        prop::collection::vec(
            (0..3usize, 0..7u8, any::<bool>(), 0..300u64, 0..300u64)
                .prop_map(|(key, kind, applied, before, after)| Step { key, kind, applied, before, after }),
            1..max,
        )
    }

    /// Run the steps against a real register, one per linearization point
    /// `100 * (i + 1)`. With `overlap`, each op's window stretches `before`/`after`
    /// around its point, so ops overlap; without, ops are strictly sequential.
    fn simulate(steps: &[Step], overlap: bool) -> Vec<Op> {
        let mut state: [Option<String>; 3] = Default::default();
        let mut ops = Vec::new();
        for (i, s) in steps.iter().enumerate() {
            let id = i as u64;
            let point = 1_000 + 100 * id;
            let (inv, done) =
                if overlap { (point - s.before.min(999), point + s.after) } else { (point - 10, point + 10) };
            let key = format!("k{}", s.key);
            let cur = &mut state[s.key];
            let fresh = format!("v{i}");
            let o = match s.kind {
                0 => read(id, &key, cur.as_deref(), inv, done),
                1 => {
                    *cur = Some(fresh.clone());
                    write(id, &key, &fresh, inv, done)
                }
                2 => {
                    let o = cas(id, &key, cur.as_deref(), &fresh, inv, ok(done));
                    *cur = Some(fresh);
                    o
                }
                3 => {
                    // Expect something the key does not hold.
                    let exp = if cur.is_some() { None } else { Some("v-none") };
                    cas(id, &key, exp, &fresh, inv, failed(done, FailReason::CompareFailed))
                }
                4 => {
                    *cur = None;
                    op(id, &key, OpKind::Delete, inv, ok(done))
                }
                5 => {
                    if s.applied {
                        *cur = Some(fresh.clone());
                    }
                    write_unknown(id, &key, &fresh, inv)
                }
                _ => op(id, &key, OpKind::Write { value: fresh }, inv, failed(done, FailReason::Rejected)),
            };
            ops.push(o);
        }
        ops
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn sequential_histories_from_a_register_pass(steps in steps(80)) {
            let r = check(simulate(&steps, false));
            prop_assert!(r.passed(), "{}", r);
        }

        #[test]
        fn overlapping_histories_from_a_register_pass(steps in steps(60)) {
            let r = check(simulate(&steps, true));
            prop_assert!(r.passed(), "{}", r);
        }

        #[test]
        fn a_read_of_a_never_written_value_always_fails(
            steps in steps(80),
            pick in any::<prop::sample::Index>(),
            overlap in any::<bool>(),
        ) {
            let mut ops = simulate(&steps, overlap);
            let reads: Vec<usize> = ops
                .iter()
                .enumerate()
                .filter(|(_, o)| o.kind == OpKind::Read)
                .map(|(i, _)| i)
                .collect();
            prop_assume!(!reads.is_empty());
            let target = reads[pick.index(reads.len())];
            let key = ops[target].key.clone();
            if let Outcome::Ok(r) = &mut ops[target].outcome {
                r.value = Some("never-written".into());
            }
            let r = check(ops);
            let flagged = matches!(
                &r.result,
                LinResult::NotLinearizable(f) if f.key == key
            );
            prop_assert!(flagged, "{}", r);
        }

        #[test]
        fn a_stale_read_always_fails(steps in steps(80), pick in any::<prop::sample::Index>()) {
            let mut ops = simulate(&steps, false);
            // (read, older acknowledged write) pairs on one key with an acknowledged
            // mutation in between: in a sequential history the read cannot see it.
            let acked_mutation = |o: &Op| {
                o.kind != OpKind::Read && matches!(o.outcome, Outcome::Ok(_))
            };
            let mut pairs = Vec::new();
            for (r, read_op) in ops.iter().enumerate().filter(|(_, o)| o.kind == OpKind::Read) {
                for (w, write_op) in ops[..r].iter().enumerate() {
                    let OpKind::Write { value } = &write_op.kind else { continue };
                    let overwritten = ops[w + 1..r]
                        .iter()
                        .any(|m| m.key == read_op.key && acked_mutation(m));
                    if write_op.key == read_op.key && acked_mutation(write_op) && overwritten {
                        pairs.push((r, value.clone()));
                    }
                }
            }
            prop_assume!(!pairs.is_empty());
            let (r, value) = pairs[pick.index(pairs.len())].clone();
            let key = ops[r].key.clone();
            if let Outcome::Ok(res) = &mut ops[r].outcome {
                res.value = Some(value);
            }
            let report = check(ops);
            let flagged = matches!(
                &report.result,
                LinResult::NotLinearizable(f) if f.key == key
            );
            prop_assert!(flagged, "{}", report);
        }
    }
}
