//! "No acknowledged write lost": a set checker in the manner of Jepsen's `set-full`.
//!
//! The harness *adds* elements to a set by writing unique keys under a prefix
//! (`set/<unique>` = value, via a plain write or a create-only CAS), and after the
//! run — once the cluster has healed — lists every key under that prefix. Then:
//!
//! - every add the server acknowledged must be in the final read, with its value
//!   (otherwise it is **lost**: the store broke its durability promise);
//! - adds with an unknown outcome may or may not be there (those present are
//!   counted as **recovered**);
//! - an add that definitely failed must not be there, and nothing that was never
//!   attempted may appear (**unexpected**);
//! - the listing must not return a key twice.
//!
//! A pass proves that the final state contains every acknowledged add and nothing
//! invented. It says nothing about intermediate reads (use the linearizability
//! checker for those). Elements must be written once and never deleted; keys the
//! history uses otherwise are reported as **ambiguous** and fail the check, since
//! their absence could not be judged.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::history::{FailReason, History, OpKind, Outcome};

/// One element of the set: a key, its value, and the ops that tried to add it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetElement {
    pub key: String,
    pub value: String,
    pub op_ids: Vec<u64>,
}

/// Result of [`check_no_lost_writes`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetReport {
    pub prefix: String,
    /// Elements some add of which was acknowledged.
    pub acknowledged: usize,
    /// Elements whose adds all had unknown outcomes (or 409 on create-only: some
    /// earlier attempt may have created it).
    pub unknown: usize,
    /// Elements whose adds were all definitely rejected.
    pub failed: usize,
    /// Acknowledged elements found in the final read.
    pub present_acknowledged: usize,
    /// Unknown elements found in the final read.
    pub recovered_unknown: usize,
    /// Unknown elements not in the final read (fine: they never took effect).
    pub absent_unknown: usize,
    /// Acknowledged but missing from the final read, or present with another value.
    pub lost: Vec<SetElement>,
    /// In the final read but never attempted, outside the prefix, or with a value
    /// that no add wrote.
    pub unexpected: Vec<(String, String)>,
    /// Definitely rejected, yet present.
    pub failed_present: Vec<SetElement>,
    /// Keys the final read returned more than once.
    pub duplicates: Vec<String>,
    /// Keys the history used in a way this checker cannot judge (several values,
    /// deletes, CAS against a value).
    pub ambiguous: Vec<String>,
}

impl SetReport {
    /// True only when nothing was lost, invented or ambiguous.
    pub fn passed(&self) -> bool {
        self.lost.is_empty()
            && self.unexpected.is_empty()
            && self.failed_present.is_empty()
            && self.duplicates.is_empty()
            && self.ambiguous.is_empty()
    }
}

fn list<T>(f: &mut fmt::Formatter<'_>, what: &str, items: &[T], show: impl Fn(&T) -> String) -> fmt::Result {
    if items.is_empty() {
        return Ok(());
    }
    write!(f, "\n  {what} ({}):", items.len())?;
    for item in items.iter().take(10) {
        write!(f, " {}", show(item))?;
    }
    if items.len() > 10 {
        write!(f, " ...")?;
    }
    Ok(())
}

impl fmt::Display for SetReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "set {:?}: {}; acknowledged {} (present {}), unknown {} (recovered {}, absent {}), \
             rejected {}",
            self.prefix,
            if self.passed() { "ok" } else { "FAILED" },
            self.acknowledged,
            self.present_acknowledged,
            self.unknown,
            self.recovered_unknown,
            self.absent_unknown,
            self.failed
        )?;
        let element = |e: &SetElement| format!("{:?}={:?} (ops {:?})", e.key, e.value, e.op_ids);
        list(f, "LOST acknowledged", &self.lost, element)?;
        list(f, "unexpected", &self.unexpected, |(k, v)| format!("{k:?}={v:?}"))?;
        list(f, "rejected but present", &self.failed_present, element)?;
        list(f, "listed twice", &self.duplicates, |k| format!("{k:?}"))?;
        list(f, "ambiguous keys", &self.ambiguous, |k| format!("{k:?}"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Status {
    Failed,
    Unknown,
    Acknowledged,
}

#[derive(Default)]
struct Attempts<'h> {
    values: BTreeSet<&'h str>,
    op_ids: Vec<u64>,
    /// Best status over all attempts.
    status: Option<Status>,
    ambiguous: bool,
}

/// Check the final read of the set under `prefix` against the adds in `history`.
///
/// `final_read` is every `(key, value)` the listing returned, in any order.
pub fn check_no_lost_writes(history: &History, prefix: &str, final_read: &[(String, String)]) -> SetReport {
    let mut report = SetReport { prefix: prefix.to_string(), ..SetReport::default() };

    let mut attempts: BTreeMap<&str, Attempts<'_>> = BTreeMap::new();
    for op in history.ops.iter().filter(|op| op.key.starts_with(prefix)) {
        let value = match &op.kind {
            OpKind::Read => continue,
            OpKind::Write { value } => value,
            OpKind::Cas { expected: None, value } => value,
            OpKind::Cas { expected: Some(_), .. } | OpKind::Delete => {
                // A refused delete or CAS changed nothing and cannot confuse us.
                let rejected = matches!(
                    &op.outcome,
                    Outcome::Failed(f) if f.reason == FailReason::Rejected
                );
                if !rejected {
                    attempts.entry(op.key.as_str()).or_default().ambiguous = true;
                }
                continue;
            }
        };
        let status = match &op.outcome {
            Outcome::Ok(_) => Status::Acknowledged,
            Outcome::Unknown => Status::Unknown,
            // 409 on create-only: the key existed — possibly created by an earlier
            // attempt of this same add whose answer was lost.
            Outcome::Failed(f) if f.reason == FailReason::CompareFailed => Status::Unknown,
            Outcome::Failed(_) => Status::Failed,
        };
        let a = attempts.entry(op.key.as_str()).or_default();
        a.values.insert(value.as_str());
        a.op_ids.push(op.id);
        a.status = a.status.max(Some(status));
    }

    // The final read, by key; a listing must not repeat a key.
    let mut found: BTreeMap<&str, &str> = BTreeMap::new();
    let mut duplicates = BTreeSet::new();
    for (k, v) in final_read {
        if found.insert(k.as_str(), v.as_str()).is_some() {
            duplicates.insert(k.clone());
        }
    }
    report.duplicates = duplicates.into_iter().collect();

    for (&key, a) in &attempts {
        if a.ambiguous || a.values.len() > 1 {
            report.ambiguous.push(key.to_string());
            continue;
        }
        let (Some(&value), Some(status)) = (a.values.first(), a.status) else {
            // Only deletes/CAS that were rejected: nothing was added.
            continue;
        };
        let element = || SetElement { key: key.to_string(), value: value.to_string(), op_ids: a.op_ids.clone() };
        let seen = found.get(key).copied();
        if let Some(other) = seen.filter(|&v| v != value) {
            report.unexpected.push((key.to_string(), other.to_string()));
        }
        let present = seen == Some(value);
        match status {
            Status::Acknowledged => {
                report.acknowledged += 1;
                if present {
                    report.present_acknowledged += 1;
                } else {
                    report.lost.push(element());
                }
            }
            Status::Unknown => {
                report.unknown += 1;
                if present {
                    report.recovered_unknown += 1;
                } else {
                    report.absent_unknown += 1;
                }
            }
            Status::Failed => {
                report.failed += 1;
                if present {
                    report.failed_present.push(element());
                }
            }
        }
    }

    for (&key, &value) in &found {
        // Ambiguous keys are already failed; keys with attempts were judged above.
        if !attempts.contains_key(key) {
            report.unexpected.push((key.to_string(), value.to_string()));
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Failure, OkResult, Op};

    fn add(id: u64, key: &str, value: &str, outcome: Outcome) -> Op {
        Op { id, client: 1, key: key.into(), kind: OpKind::Write { value: value.into() }, invoke_ns: id * 10, outcome }
    }

    fn ok(id: u64) -> Outcome {
        Outcome::Ok(OkResult::done(id * 10 + 5, Some(id)))
    }

    fn failed(id: u64, reason: FailReason) -> Outcome {
        Outcome::Failed(Failure { complete_ns: id * 10 + 5, reason })
    }

    fn read(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn good_history() -> History {
        History::new(vec![
            add(1, "set/a", "1", ok(1)),
            add(2, "set/b", "2", ok(2)),
            add(3, "set/c", "3", Outcome::Unknown),
            add(4, "set/d", "4", Outcome::Unknown),
            add(5, "set/e", "5", failed(5, FailReason::Rejected)),
            // Other keys are not part of the set.
            add(6, "other", "x", ok(6)),
        ])
    }

    #[test]
    fn all_acknowledged_present_passes() {
        let r = check_no_lost_writes(&good_history(), "set/", &read(&[("set/a", "1"), ("set/b", "2"), ("set/c", "3")]));
        assert!(r.passed(), "{r}");
        assert_eq!(r.acknowledged, 2);
        assert_eq!(r.present_acknowledged, 2);
        assert_eq!(r.unknown, 2);
        assert_eq!(r.recovered_unknown, 1);
        assert_eq!(r.absent_unknown, 1);
        assert_eq!(r.failed, 1);
    }

    #[test]
    fn lost_acknowledged_write_is_flagged() {
        let r = check_no_lost_writes(&good_history(), "set/", &read(&[("set/a", "1")]));
        assert!(!r.passed());
        assert_eq!(r.lost.len(), 1);
        assert_eq!(r.lost[0].key, "set/b");
        assert_eq!(r.lost[0].op_ids, vec![2]);
        assert!(r.to_string().contains("LOST"), "{r}");
    }

    #[test]
    fn acknowledged_element_with_other_value_is_lost_and_unexpected() {
        let r = check_no_lost_writes(&good_history(), "set/", &read(&[("set/a", "1"), ("set/b", "999")]));
        assert_eq!(r.lost.len(), 1);
        assert_eq!(r.unexpected, read(&[("set/b", "999")]));
    }

    #[test]
    fn never_attempted_element_is_unexpected() {
        let r = check_no_lost_writes(
            &good_history(),
            "set/",
            &read(&[("set/a", "1"), ("set/b", "2"), ("set/zz", "7"), ("other", "x")]),
        );
        assert!(!r.passed());
        assert_eq!(r.unexpected, read(&[("other", "x"), ("set/zz", "7")]));
    }

    #[test]
    fn rejected_add_present_is_flagged() {
        let r = check_no_lost_writes(&good_history(), "set/", &read(&[("set/a", "1"), ("set/b", "2"), ("set/e", "5")]));
        assert!(!r.passed());
        assert_eq!(r.failed_present.len(), 1);
        assert_eq!(r.failed_present[0].key, "set/e");
    }

    #[test]
    fn duplicate_listing_is_flagged() {
        let r = check_no_lost_writes(&good_history(), "set/", &read(&[("set/a", "1"), ("set/b", "2"), ("set/a", "1")]));
        assert_eq!(r.duplicates, vec!["set/a".to_string()]);
        assert!(!r.passed());
    }

    #[test]
    fn retries_of_one_add_count_once() {
        let h = History::new(vec![
            add(1, "set/a", "1", Outcome::Unknown),
            Op {
                id: 2,
                client: 1,
                key: "set/a".into(),
                kind: OpKind::Cas { expected: None, value: "1".into() },
                invoke_ns: 20,
                outcome: failed(2, FailReason::CompareFailed),
            },
            add(3, "set/a", "1", ok(3)),
        ]);
        let r = check_no_lost_writes(&h, "set/", &read(&[("set/a", "1")]));
        assert!(r.passed(), "{r}");
        assert_eq!(r.acknowledged, 1);
        let r = check_no_lost_writes(&h, "set/", &[]);
        assert_eq!(r.lost.len(), 1);
        assert_eq!(r.lost[0].op_ids, vec![1, 2, 3]);
    }

    #[test]
    fn misused_keys_are_ambiguous() {
        let h = History::new(vec![
            add(1, "set/a", "1", ok(1)),
            add(2, "set/a", "2", ok(2)),
            add(3, "set/b", "1", ok(3)),
            Op {
                id: 4,
                client: 1,
                key: "set/b".into(),
                kind: OpKind::Delete,
                invoke_ns: 40,
                outcome: Outcome::Unknown,
            },
        ]);
        let r = check_no_lost_writes(&h, "set/", &read(&[("set/a", "2")]));
        assert_eq!(r.ambiguous, vec!["set/a".to_string(), "set/b".to_string()]);
        assert!(r.unexpected.is_empty(), "{r}");
        assert!(!r.passed());
    }

    #[test]
    fn empty_inputs_pass() {
        let r = check_no_lost_writes(&History::default(), "set/", &[]);
        assert!(r.passed(), "{r}");
    }
}
