//! Watch checker: every watcher sees every committed change of its prefix, in
//! revision order, none skipped, repeated or invented.
//!
//! Input: the authoritative committed change log (every `(revision, key, event)`
//! the cluster committed, e.g. read from a healthy node after the run) and, per
//! watcher, its prefix, its start (`after_revision`) and what it received — change
//! events and progress notifications (`progress R` = "all events up to R have been
//! sent"), in arrival order.
//!
//! **What a pass proves.** For each watcher, the events received are exactly the
//! committed events whose key has the prefix and whose revision lies in
//! `(after_revision, covered]`, in log order, each once and with the committed
//! content; `covered` is the highest revision the watcher saw an event or progress
//! notification for. Events after `covered` may legitimately still be in flight when
//! the run ends, so they are not required.
//!
//! Each watcher's first problem is reported (later ones are usually consequences).

use std::collections::{HashMap, HashSet};
use std::fmt;

use serde::{Deserialize, Serialize};

/// A committed change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchEvent {
    pub revision: u64,
    pub key: String,
    pub kind: EventKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Put { value: String },
    Delete,
}

/// One item of a watch stream, in arrival order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Received {
    Event(WatchEvent),
    /// All events up to `revision` have been sent.
    Progress {
        revision: u64,
    },
}

/// What one watcher asked for and received (across reconnects, if the client
/// resumes with its last seen revision).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct WatcherLog {
    /// A name for reports.
    pub watcher: String,
    pub prefix: String,
    /// Events with revision greater than this are expected.
    pub after_revision: u64,
    pub received: Vec<Received>,
}

impl WatchEvent {
    pub fn put(revision: u64, key: impl Into<String>, value: impl Into<String>) -> Self {
        Self { revision, key: key.into(), kind: EventKind::Put { value: value.into() } }
    }

    pub fn delete(revision: u64, key: impl Into<String>) -> Self {
        Self { revision, key: key.into(), kind: EventKind::Delete }
    }
}

impl fmt::Display for WatchEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            EventKind::Put { value } => {
                write!(f, "rev {} put {:?}={:?}", self.revision, self.key, value)
            }
            EventKind::Delete => write!(f, "rev {} delete {:?}", self.revision, self.key),
        }
    }
}

impl WatcherLog {
    pub fn new(watcher: impl Into<String>, prefix: impl Into<String>, after_revision: u64) -> Self {
        Self { watcher: watcher.into(), prefix: prefix.into(), after_revision, received: Vec::new() }
    }

    /// Record a received change event.
    pub fn event(&mut self, event: WatchEvent) -> &mut Self {
        self.received.push(Received::Event(event));
        self
    }

    /// Record a received progress notification.
    pub fn progress(&mut self, revision: u64) -> &mut Self {
        self.received.push(Received::Progress { revision });
        self
    }
}

/// The kinds of things that go wrong in a watch stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchProblemKind {
    /// A committed event in range was never delivered.
    Skipped,
    /// A committed event was delivered after a later one.
    Reordered,
    /// The same event was delivered twice.
    Repeated,
    /// An event that was never committed (unknown revision/key).
    NotCommitted,
    /// Revision and key were committed, but with another put value or kind.
    WrongContent,
    /// Key outside the watcher's prefix.
    OutsidePrefix,
    /// Revision at or before the watcher's `after_revision`.
    BeforeStart,
}

/// A watcher's first problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchProblem {
    pub watcher: String,
    pub kind: WatchProblemKind,
    /// Position in the watcher's `received` at which it was detected
    /// (`received.len()` if only the end of the stream revealed it).
    pub index: usize,
    /// The revision concerned (the missing one for `Skipped`/`Reordered`).
    pub revision: u64,
    pub detail: String,
}

/// Result of [`check_watchers`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchReport {
    pub watchers_checked: usize,
    pub events_checked: usize,
    /// The authoritative log itself is malformed (nothing else was checked).
    pub log_problem: Option<String>,
    /// At most one per watcher, in input order.
    pub problems: Vec<WatchProblem>,
}

impl WatchReport {
    pub fn passed(&self) -> bool {
        self.log_problem.is_none() && self.problems.is_empty()
    }
}

impl fmt::Display for WatchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(p) = &self.log_problem {
            return write!(f, "watch check FAILED: committed log is malformed: {p}");
        }
        write!(
            f,
            "watch check {}: {} watchers, {} events",
            if self.passed() { "ok" } else { "FAILED" },
            self.watchers_checked,
            self.events_checked
        )?;
        for p in &self.problems {
            write!(f, "\n  watcher {:?}: {:?} at item {}: {}", p.watcher, p.kind, p.index, p.detail)?;
        }
        Ok(())
    }
}

/// The log must be in revision order with each (revision, key) once.
fn validate_log(committed: &[WatchEvent]) -> Result<(), String> {
    let mut seen = HashSet::new();
    let mut last = 0;
    for e in committed {
        if e.revision < last {
            return Err(format!("{e} comes after revision {last}"));
        }
        if !seen.insert((e.revision, e.key.as_str())) {
            return Err(format!("{e} appears twice"));
        }
        last = e.revision;
    }
    Ok(())
}

/// Check every watcher against the committed log.
pub fn check_watchers(committed: &[WatchEvent], watchers: &[WatcherLog]) -> WatchReport {
    let mut report = WatchReport::default();
    if let Err(p) = validate_log(committed) {
        report.log_problem = Some(p);
        return report;
    }
    let by_id: HashMap<(u64, &str), &WatchEvent> =
        committed.iter().map(|e| ((e.revision, e.key.as_str()), e)).collect();
    for w in watchers {
        report.watchers_checked += 1;
        report.events_checked += w.received.iter().filter(|r| matches!(r, Received::Event(_))).count();
        if let Err((kind, index, revision, detail)) = check_one(committed, &by_id, w) {
            report.problems.push(WatchProblem { watcher: w.watcher.clone(), kind, index, revision, detail });
        }
    }
    report
}

type Found = (WatchProblemKind, usize, u64, String);

/// A missing event: "reordered" if it still arrives later, else "skipped".
fn missing(w: &WatcherLog, from: usize, gap: &WatchEvent, because: &str) -> Found {
    let later = w.received.iter().skip(from).any(|r| match r {
        Received::Event(e) => e.revision == gap.revision && e.key == gap.key,
        Received::Progress { .. } => false,
    });
    let kind = if later { WatchProblemKind::Reordered } else { WatchProblemKind::Skipped };
    let when = if later { "arrives late" } else { "never arrives" };
    let detail = format!("committed {gap} {when}; {because}");
    (kind, from, gap.revision, detail)
}

fn check_one(committed: &[WatchEvent], by_id: &HashMap<(u64, &str), &WatchEvent>, w: &WatcherLog) -> Result<(), Found> {
    use WatchProblemKind::*;
    // What this watcher must see, in order.
    let expected: Vec<&WatchEvent> =
        committed.iter().filter(|e| e.revision > w.after_revision && e.key.starts_with(&w.prefix)).collect();
    let mut next = 0; // index into `expected` of the next event owed
    let mut last: Option<u64> = None;
    let mut delivered: HashSet<(u64, &str)> = HashSet::new();
    for (i, item) in w.received.iter().enumerate() {
        match item {
            Received::Event(e) => {
                let id = (e.revision, e.key.as_str());
                if !e.key.starts_with(&w.prefix) {
                    let d = format!("{e} is outside prefix {:?}", w.prefix);
                    return Err((OutsidePrefix, i, e.revision, d));
                }
                if e.revision <= w.after_revision {
                    let d = format!("{e} is not after start revision {}", w.after_revision);
                    return Err((BeforeStart, i, e.revision, d));
                }
                if delivered.contains(&id) {
                    return Err((Repeated, i, e.revision, format!("{e} delivered again")));
                }
                let Some(&c) = by_id.get(&id) else {
                    let d = format!("{e} was never committed");
                    return Err((NotCommitted, i, e.revision, d));
                };
                if c.kind != e.kind {
                    let d = format!("received {e} but committed {c}");
                    return Err((WrongContent, i, e.revision, d));
                }
                if let Some(l) = last.filter(|&l| e.revision < l) {
                    let d = format!("committed {e} arrives after revision {l}");
                    return Err((Reordered, i, e.revision, d));
                }
                match expected.get(next) {
                    Some(&owed) if owed.revision == e.revision && owed.key == e.key => next += 1,
                    Some(&owed) => {
                        return Err(missing(w, i, owed, &format!("{e} came instead")));
                    }
                    // Unreachable: `e` is committed, in range and not yet delivered,
                    // so it is still owed. Report rather than panic.
                    None => return Err((Reordered, i, e.revision, format!("{e} out of order"))),
                }
                delivered.insert(id);
                last = Some(e.revision);
            }
            Received::Progress { revision } => {
                if let Some(&owed) = expected.get(next).filter(|o| o.revision <= *revision) {
                    let because = format!("progress {revision} said all was sent");
                    return Err(missing(w, i, owed, &because));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log() -> Vec<WatchEvent> {
        vec![
            WatchEvent::put(1, "a/x", "1"),
            WatchEvent::put(2, "b/y", "2"),
            WatchEvent::put(3, "a/y", "3"),
            WatchEvent::delete(4, "a/x"),
            WatchEvent::put(5, "a/z", "5"),
            WatchEvent::put(6, "b/y", "6"),
        ]
    }

    fn watcher(prefix: &str, after: u64, revs: &[u64]) -> WatcherLog {
        let mut w = WatcherLog::new(format!("w{prefix}{after}"), prefix, after);
        let l = log();
        for r in revs {
            match l.iter().find(|e| e.revision == *r) {
                Some(e) => w.event(e.clone()),
                None => w.event(WatchEvent::put(*r, format!("{prefix}ghost"), "?")),
            };
        }
        w
    }

    fn first_problem(w: WatcherLog) -> WatchProblem {
        let r = check_watchers(&log(), &[w]);
        assert!(!r.passed());
        r.problems.into_iter().next().expect("a problem")
    }

    #[test]
    fn complete_in_order_streams_pass() {
        let mut w3 = watcher("a/", 0, &[1, 3, 4]);
        w3.progress(6);
        let r = check_watchers(
            &log(),
            &[
                watcher("a/", 0, &[1, 3, 4, 5]),
                watcher("b/", 0, &[2, 6]),
                watcher("", 2, &[3, 4, 5, 6]),
                watcher("a/", 3, &[4]),
                // Nothing seen yet is fine: later events may still be in flight.
                watcher("a/", 0, &[]),
                WatcherLog::new("progress only", "a/", 5).progress(6).clone(),
            ],
        );
        assert!(r.passed(), "{r}");
        assert_eq!(r.watchers_checked, 6);
        assert_eq!(r.events_checked, 4 + 2 + 4 + 1);
    }

    #[test]
    fn skipped_event_is_flagged() {
        let p = first_problem(watcher("a/", 0, &[1, 4, 5]));
        assert_eq!(p.kind, WatchProblemKind::Skipped);
        assert_eq!(p.revision, 3);
        assert_eq!(p.index, 1);
    }

    #[test]
    fn skipped_event_revealed_by_progress_is_flagged() {
        let mut w = watcher("a/", 0, &[1, 3, 4]);
        w.progress(5);
        let p = first_problem(w);
        assert_eq!(p.kind, WatchProblemKind::Skipped);
        assert_eq!(p.revision, 5);
        assert!(p.detail.contains("progress 5"), "{}", p.detail);
    }

    #[test]
    fn reordered_events_are_flagged() {
        let p = first_problem(watcher("a/", 0, &[1, 4, 3, 5]));
        assert_eq!(p.kind, WatchProblemKind::Reordered);
        assert_eq!(p.revision, 3);
        assert!(p.detail.contains("arrives late"), "{}", p.detail);
    }

    #[test]
    fn repeated_event_is_flagged() {
        let p = first_problem(watcher("a/", 0, &[1, 3, 3, 4]));
        assert_eq!(p.kind, WatchProblemKind::Repeated);
        assert_eq!(p.index, 2);
        // Repeat after a reconnect that resumed from too early.
        let p = first_problem(watcher("a/", 0, &[1, 3, 4, 3]));
        assert_eq!(p.kind, WatchProblemKind::Repeated);
    }

    #[test]
    fn invented_or_altered_events_are_flagged() {
        let p = first_problem(watcher("a/", 0, &[1, 3, 99]));
        assert_eq!(p.kind, WatchProblemKind::NotCommitted);
        let mut w = watcher("a/", 0, &[1]);
        w.event(WatchEvent::put(3, "a/y", "not-3"));
        assert_eq!(first_problem(w).kind, WatchProblemKind::WrongContent);
        let mut w = watcher("a/", 0, &[1]);
        w.event(WatchEvent::delete(3, "a/y"));
        assert_eq!(first_problem(w).kind, WatchProblemKind::WrongContent);
    }

    #[test]
    fn events_outside_the_request_are_flagged() {
        let p = first_problem(watcher("a/", 0, &[1, 2]));
        assert_eq!(p.kind, WatchProblemKind::OutsidePrefix);
        let p = first_problem(watcher("a/", 3, &[3, 4]));
        assert_eq!(p.kind, WatchProblemKind::BeforeStart);
    }

    #[test]
    fn one_problem_per_watcher_and_names_it() {
        let r = check_watchers(
            &log(),
            &[watcher("a/", 0, &[1, 3, 4, 5]), watcher("b/", 0, &[6]), watcher("a/", 0, &[1, 1, 1])],
        );
        assert_eq!(r.problems.len(), 2);
        assert_eq!(r.problems[0].watcher, "wb/0");
        assert_eq!(r.problems[0].kind, WatchProblemKind::Skipped);
        assert_eq!(r.problems[1].kind, WatchProblemKind::Repeated);
        let text = r.to_string();
        assert!(text.contains("wb/0") && text.contains("Skipped"), "{text}");
    }

    #[test]
    fn malformed_log_fails() {
        let mut l = log();
        l.swap(0, 1);
        let r = check_watchers(&l, &[]);
        assert!(!r.passed());
        let mut l = log();
        l.push(WatchEvent::put(6, "b/y", "6"));
        assert!(check_watchers(&l, &[]).log_problem.is_some());
    }

    #[test]
    fn several_keys_in_one_revision_follow_log_order() {
        let l = vec![WatchEvent::put(1, "a/1", "x"), WatchEvent::put(1, "a/2", "y")];
        let mut good = WatcherLog::new("good", "a/", 0);
        good.event(l[0].clone()).event(l[1].clone());
        let mut swapped = WatcherLog::new("swapped", "a/", 0);
        swapped.event(l[1].clone()).event(l[0].clone());
        let r = check_watchers(&l, &[good, swapped]);
        assert_eq!(r.problems.len(), 1);
        assert_eq!(r.problems[0].watcher, "swapped");
        assert_eq!(r.problems[0].kind, WatchProblemKind::Reordered);
    }
}
