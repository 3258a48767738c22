//! Properties of the state machine over generated histories (see `crate::strategies`).
//!
//! - Issue 10: every state a cluster can hold, every request and every result reads back
//!   from the binary encoding as it was.
//! - Issue 11: whatever ids any number of callers choose, colliding or not, every write
//!   acknowledged to a caller is in the final state (or was followed by an acknowledged
//!   change of its key), no two different writes are acknowledged with one revision, and
//!   a retry gets the answer of the request it retries.

use std::collections::BTreeMap;

use proptest::prelude::*;

use crate::codec;
use crate::kv::Command;
use crate::kv::CommandResult;
use crate::kv::KvState;
use crate::kv::Request;
use crate::strategies;
use crate::strategies::Step;

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// decode(encode(state)) == state for states built from every kind of step.
    #[test]
    fn every_state_reads_back_as_it_was(
        history_revisions in 1u64..20,
        steps in proptest::collection::vec(strategies::step(), 0..60),
    ) {
        let (state, _) = strategies::apply_steps(history_revisions, &steps);
        let bytes = codec::encode(&state).unwrap();
        let back: KvState = codec::decode(&bytes).unwrap();
        prop_assert_eq!(&back, &state);
        // The generator reaches what it claims: the last configuration asked for is the
        // one applied (every key, the profile included).
        if let Some(config) = strategies::configured(&steps).last() {
            prop_assert_eq!(&state.admin().ha_config.value, config);
        }
        // A recovery away from a cluster id is remembered (the lineage is in the state).
        let mut cluster_id: Option<&String> = None;
        for step in &steps {
            match step {
                Step::RecordRemoval { node_id, incarnation } => {
                    prop_assert!(state.admin().was_removed(*node_id, incarnation), "{:?}", step);
                }
                Step::MoveToNewCluster { cluster_id: new, recovery } => {
                    if let (Some(_), Some(old)) = (recovery, cluster_id.filter(|old| *old != new)) {
                        prop_assert!(state.admin().recovered_from(old).is_some(), "{:?}", step);
                    }
                    cluster_id = Some(new);
                }
                _ => {}
            }
        }
    }

    #[test]
    fn every_request_and_result_reads_back_as_it_was(
        request in strategies::request(),
        result in strategies::command_result(),
    ) {
        prop_assert_eq!(codec::decode::<Request>(&codec::encode(&request).unwrap()).unwrap(), request);
        prop_assert_eq!(codec::decode::<CommandResult>(&codec::encode(&result).unwrap()).unwrap(), result);
    }

    /// Random callers (the server and three tokens) with ids from a pool of four send
    /// puts, compare-and-sets and deletes, and resend earlier requests as retries.
    #[test]
    fn no_acknowledged_write_is_missing_whatever_the_ids(moves in proptest::collection::vec(move_(), 1..120)) {
        check_acknowledged_writes(&moves)?;
    }
}

/// A client's move: a new write, or the resend of an earlier one (by index, modulo).
#[derive(Debug, Clone)]
enum Move {
    Write { caller: usize, id: Option<u8>, command: Command },
    Retry(usize),
}

fn move_() -> impl Strategy<Value = Move> {
    let command = prop_oneof![
        3 => (strategies::key(), strategies::value(), proptest::option::of(0u64..8))
            .prop_map(|(key, value, prev_revision)| Command::Put { key, value, prev_revision }),
        1 => (strategies::key(), proptest::option::of(0u64..8))
            .prop_map(|(key, prev_revision)| Command::Delete { key, prev_revision }),
    ];
    prop_oneof![
        4 => (0usize..4, proptest::option::weighted(0.9, 0u8..4), command)
            .prop_map(|(caller, id, command)| Move::Write { caller, id, command }),
        1 => any::<usize>().prop_map(Move::Retry),
    ]
}

fn check_acknowledged_writes(moves: &[Move]) -> Result<(), TestCaseError> {
    // Three operator tokens, created by the server, then the moves.
    let mut steps: Vec<Step> =
        (0..3).map(|index| Step::CreateToken { index, role: crate::auth::Role::Operator, ttl_s: None }).collect();
    let mut sent: Vec<(usize, Option<u8>, Command)> = Vec::new();
    for one in moves {
        let (caller, id, command) = match one {
            Move::Write { caller, id, command } => (*caller, *id, command.clone()),
            // Only requests with an id are safe to resend.
            Move::Retry(n) => match sent.iter().filter(|(_, id, _)| id.is_some()).nth(n % sent.len().max(1)) {
                Some(earlier) => earlier.clone(),
                None => continue,
            },
        };
        sent.push((caller, id, command.clone()));
        steps.push(Step::Write { caller, id, command });
    }
    let (state, results) = strategies::apply_steps(100, &steps);
    let results = &results[3..];

    // What each acknowledged change claims: revision -> (key, value; None = deleted).
    let mut claims: BTreeMap<u64, (String, Option<Vec<u8>>)> = BTreeMap::new();
    // The first answer to each (caller, id, command): a retry must get the same.
    let mut first_answers: BTreeMap<(usize, u8, Vec<u8>), CommandResult> = BTreeMap::new();
    for ((caller, id, command), result) in sent.iter().zip(results) {
        if let Some(id) = id {
            let digest = codec::encode(command).unwrap();
            let first = first_answers.entry((*caller, *id, digest)).or_insert_with(|| result.clone());
            prop_assert_eq!(result, &*first, "a retry of {:?} by caller {} with id {}", command, caller, id);
        }
        let claim = match (command, result) {
            (Command::Put { key, value, .. }, CommandResult::Put { revision, .. }) => {
                Some((*revision, (key.clone(), Some(value.clone()))))
            }
            (Command::Delete { key, .. }, CommandResult::Delete { revision, deleted: true }) => {
                Some((*revision, (key.clone(), None)))
            }
            (_, CommandResult::Put { .. } | CommandResult::Delete { deleted: true, .. }) => {
                prop_assert!(false, "{:?} was answered {:?}: an answer for another kind of request", command, result);
                None
            }
            _ => None,
        };
        if let Some((revision, change)) = claim {
            let earlier = claims.entry(revision).or_insert_with(|| change.clone());
            prop_assert_eq!(&*earlier, &change, "two different writes acknowledged as revision {}", revision);
        }
    }
    // Every key is as its last acknowledged change left it, and nothing else changed.
    let mut expected: BTreeMap<String, (u64, Vec<u8>)> = BTreeMap::new();
    for (revision, (key, value)) in &claims {
        match value {
            Some(value) => expected.insert(key.clone(), (*revision, value.clone())),
            None => expected.remove(key),
        };
    }
    let actual: BTreeMap<String, (u64, Vec<u8>)> = state
        .list("", None, usize::MAX)
        .0
        .into_iter()
        .map(|(key, entry)| (key.clone(), (entry.mod_revision, entry.value.clone())))
        .collect();
    prop_assert_eq!(actual, expected, "the final state is what the acknowledged writes made");
    prop_assert_eq!(state.revision(), claims.len() as u64, "every change was acknowledged once");
    Ok(())
}
