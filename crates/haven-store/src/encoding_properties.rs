//! Issue 10: everything the store writes reads back as it was, through the very functions
//! that write and read it: snapshot images (written to `snapshot.bin`, sent by
//! InstallSnapshot, rewritten by `haven recover`) of states built from every kind of step
//! (`haven_core::strategies`), and every kind of log entry and metadata record of
//! `raft.redb`.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::path::Path;

use crate::integrity::unseal;
use crate::snapshot_file::SnapshotImage;
use crate::state_machine::applied_from_image;
use crate::state_machine::image_of;
use crate::state_machine::Applied;
use crate::stored::decode;
use crate::stored::entry_from_record;
use crate::stored::entry_record;
use crate::stored::meta_record;
use crate::Entry;
use crate::HavenNode;
use crate::LogId;
use crate::Membership;
use crate::StoredMembership;
use crate::Vote;
use haven_core::strategies;
use openraft::vote::RaftLeaderId;
use openraft::EntryPayload;
use proptest::prelude::*;

fn log_id() -> impl Strategy<Value = LogId> {
    (0u64..1000, 1u64..8, 0u64..1_000_000).prop_map(|(term, node, index)| {
        let leader = <crate::TypeConfig as openraft::RaftTypeConfig>::LeaderId::new(term, node);
        LogId::new(leader.to_committed(), index)
    })
}

fn node() -> impl Strategy<Value = HavenNode> {
    (strategies::any_text(), strategies::any_text(), "[0-9a-f]{32}", strategies::any_text(), any::<bool>()).prop_map(
        |(client_url, peer_addr, incarnation, fingerprint, learner)| HavenNode {
            client_url,
            peer_addr,
            incarnation,
            fingerprint,
            learner,
        },
    )
}

/// A membership: voters 1..=voters, learners after them, one or two configs (joint).
fn membership() -> impl Strategy<Value = Membership> {
    (1u64..=5, 0u64..3, any::<bool>(), proptest::collection::vec(node(), 8)).prop_map(
        |(voters, learners, joint, nodes)| {
            let ids = 1..=voters + learners;
            let nodes: BTreeMap<u64, HavenNode> = ids.clone().zip(nodes).collect();
            let first: BTreeSet<u64> = (1..=voters).collect();
            let mut configs = vec![first.clone()];
            if joint {
                configs.push(first.into_iter().skip(1).collect::<BTreeSet<_>>());
                configs.retain(|config| !config.is_empty());
            }
            Membership::new(configs, nodes).expect("a valid membership")
        },
    )
}

fn stored_membership() -> impl Strategy<Value = StoredMembership> {
    (proptest::option::of(log_id()), membership()).prop_map(|(id, membership)| StoredMembership::new(id, membership))
}

fn entry() -> impl Strategy<Value = Entry> {
    let payload = prop_oneof![
        Just(EntryPayload::Blank),
        strategies::request().prop_map(EntryPayload::Normal),
        membership().prop_map(EntryPayload::Membership),
    ];
    (log_id(), payload).prop_map(|(log_id, payload)| Entry { log_id, payload })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// The snapshot: decode(encode(state)) == state through the functions every
    /// snapshot goes through (written, loaded, sent by InstallSnapshot, rewritten by
    /// `haven recover`), for states built from every kind of step: keys, revisions and
    /// history, request ids of several callers, tokens, maintenance, the HA
    /// configuration with every key and every profile, drafts, teardowns, audit.
    #[test]
    fn every_snapshot_reads_back_as_it_was(
        last_applied in proptest::option::of(log_id()),
        membership in stored_membership(),
        history_revisions in 1u64..20,
        steps in proptest::collection::vec(strategies::step(), 0..60),
    ) {
        let (kv, _) = strategies::apply_steps(history_revisions, &steps);
        let applied = Applied { last_applied, membership, kv };
        let image = image_of(&applied).expect("encode");
        let origin = Path::new("snapshot.bin");
        let read = SnapshotImage::verify(image.into_bytes(), origin).expect("the image verifies");
        prop_assert_eq!(read.meta().last_log_id, last_applied);
        prop_assert_eq!(&read.meta().last_membership, &applied.membership);
        prop_assert_eq!(applied_from_image(&read, origin).expect("decode"), applied);
    }

    /// Each kind of log entry (blank, every request, membership) and the other records
    /// of `raft.redb` read back as they were, through the log store's own functions.
    #[test]
    fn every_log_record_reads_back_as_it_was(
        entry in entry(),
        vote in (0u64..1000, 1u64..8, any::<bool>()),
        committed in proptest::option::of(log_id()),
    ) {
        let file = Path::new("raft.redb");
        let record = entry_record(&entry).expect("encode");
        prop_assert_eq!(entry_from_record(entry.log_id.index, &record, file).expect("decode"), entry);
        let vote_value = if vote.2 { Vote::new_committed(vote.0, vote.1) } else { Vote::new(vote.0, vote.1) };
        let record = meta_record(&vote_value).expect("encode");
        prop_assert_eq!(decode::<Vote>(unseal(&record).expect("sealed"), file, "vote").expect("decode"), vote_value);
        let record = meta_record(&committed).expect("encode");
        let back: Option<LogId> = decode(unseal(&record).expect("sealed"), file, "committed").expect("decode");
        prop_assert_eq!(back, committed);
    }
}
