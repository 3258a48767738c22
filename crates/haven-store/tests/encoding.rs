//! The encoding of stored data (issue 10): data written by earlier versions stays
//! readable, and everything written now reads back as it was.

use std::path::Path;
use std::path::PathBuf;

use haven_core::ha::detection::Profile;
use haven_core::kv::Command;
use haven_core::kv::CommandResult;
use haven_core::kv::Request;
use haven_store::state_machine::decode_applied;
use haven_store::state_machine::encode_applied;
use haven_store::StateMachine;

/// The data dir a one-node cluster of main at 27b6131 left after `kill -9`: profile `lan`
/// and every other HA key applied, snapshot format 0 (see `fixtures/make_data_dir.sh`).
/// That version could not read its own snapshot back ("decode snapshot: Serde
/// Deserialization Error").
pub const FIXTURE_27B6131: &str = "data_dir_27b6131_profile_lan";

/// The data dir a one-node cluster of main at f17139a left after `kill -9`, made the same
/// way (`fixtures/make_data_dir.sh`): snapshot format 2, the last before the durability
/// marks of issue 13.
pub const FIXTURE_F17139A: &str = "data_dir_f17139a_format_2";

fn copy_fixture(name: &str, to: &Path) {
    let from = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    for entry in std::fs::read_dir(from).expect("fixture dir") {
        let entry = entry.expect("fixture entry");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy fixture");
    }
}

/// The snapshot written by 27b6131 with a profile applied opens, with every part as that
/// version wrote it: keys, tokens, the HA configuration with the profile, the audit log.
/// Fails on 27b6131 itself (the profile does not decode).
#[test]
fn a_format_0_snapshot_with_a_profile_opens() {
    let dir = tempfile::tempdir().expect("temp dir");
    copy_fixture(FIXTURE_27B6131, dir.path());
    let machine = StateMachine::open(dir.path(), 1000).expect("the old snapshot opens");
    let applied = machine.read().clone();
    // The last snapshot it completed (a newer one was being written when it was killed:
    // `snapshot.bin.tmp`, ignored); the later writes and the draft are in the log.
    assert_eq!(applied.last_applied.map(|id| id.index), Some(79));
    let kv = &applied.kv;
    assert_eq!((kv.revision(), kv.len()), (55, 55));
    for i in 0..55 {
        let entry = kv.get(&format!("fixture/{i:02}")).expect("every key written before the snapshot");
        assert_eq!(entry.value, format!("value {i:02}").into_bytes());
    }
    let config = &kv.admin().ha_config;
    assert_eq!((config.version, config.value.profile), (1, Some(Profile::Lan)));
    assert_eq!(config.value.timing().ping_interval_ms, 100);
    assert!(config.value.failback);
    assert_eq!(config.value.smtp.port, 2525);
    assert_eq!(config.value.node(1).priority, 250);
    assert_eq!(config.value.hook_script.as_deref(), Some("/usr/local/bin/haven-hook"));
    let actions: Vec<String> = kv.admin().audit.since(0, 100).into_iter().map(|record| record.action).collect();
    assert_eq!(
        actions,
        [
            "leader.elected",
            "cluster.init",
            "token.create",
            "config.apply",
            "token.create",
            "maintenance",
            "maintenance"
        ]
    );
    let mut names: Vec<&str> = kv.tokens().map(|token| token.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["bootstrap-admin", "fixture-reader"]);

    // The request ids that version remembered (by id alone) are refused, not answered with
    // another request's result, whoever sends them (issue 11).
    let mut kv = kv.clone();
    let reuse = Request::new(
        Some("fixture-req-10".into()),
        Command::Put { key: "other".into(), value: b"x".to_vec(), prev_revision: None },
    );
    assert!(matches!(kv.apply(&reuse), CommandResult::RequestIdReused { .. }));
    assert!(kv.get("other").is_none());

    // Converted on first use: the state re-encodes in the current format and reads back.
    let bytes = encode_applied(&applied).expect("encode");
    assert_eq!(decode_applied(&bytes).expect("decode"), applied);
}

/// `haven recover` on a node whose data has a profile applied (issue 10: the rewrite
/// wrote a snapshot the node could never read again, after reporting success). On the
/// fixture written by 27b6131 the rewrite replays the log after its snapshot, writes the
/// current format, and the dir opens with everything in it, under the new cluster id.
#[test]
fn a_recovery_rewrites_a_dir_that_opens() {
    let dir = tempfile::tempdir().expect("temp dir");
    copy_fixture(FIXTURE_27B6131, dir.path());
    let node = haven_store::HavenNode {
        client_url: "https://127.0.0.1:1".into(),
        peer_addr: "127.0.0.1:2".into(),
        incarnation: String::new(),
        fingerprint: String::new(),
        learner: false,
    };
    let summary = haven_store::reinitialize_as_single_voter(dir.path(), 1, node, "recovered", 1000).expect("rewrite");
    assert_eq!(summary.revision, 64, "the write after the old snapshot was replayed from the log");
    let bytes = std::fs::read(dir.path().join("snapshot.bin")).expect("snapshot");
    let current = [b"HVNS".as_slice(), &[haven_store::state_machine::SNAPSHOT_FORMAT]].concat();
    assert!(bytes.windows(5).any(|w| w == current), "written in the current format");
    let machine = StateMachine::open(dir.path(), 1000).expect("the rewritten dir opens");
    let kv = &machine.read().kv;
    assert_eq!((kv.cluster_id(), kv.len()), (Some("recovered"), 64));
    assert_eq!(kv.get("fixture/63").map(|e| e.value.clone()), Some(b"value 63".to_vec()));
    assert_eq!(kv.admin().ha_config.value.profile, Some(Profile::Lan));
    let draft = kv.admin().draft.as_ref().expect("the pending draft, from the log");
    assert_eq!(draft.changes.get("hook_timeout_s"), Some(&Some("50".to_string())));
}

/// Snapshot data of format 1 (written before issue 14 added removed members and recovery
/// lineage to the administrative state) decodes, with every part as it was written.
#[test]
fn format_1_snapshot_data_decodes() {
    let applied = applied_with_a_put();
    let bytes = old_format_data(1, &applied, haven_core::kv::format_v1::KvStateV1::from_current(&applied.kv));
    let decoded = decode_applied(&bytes).expect("format 1 decodes");
    assert!(decoded == applied, "every part kept");
    assert_eq!(encode_applied(&applied).expect("encode")[4], haven_store::state_machine::SNAPSHOT_FORMAT);
}

/// A state holding one write with a request id.
fn applied_with_a_put() -> haven_store::state_machine::Applied {
    let mut applied = haven_store::state_machine::Applied::default();
    let put =
        Request::new(Some("r".into()), Command::Put { key: "k".into(), value: b"v".to_vec(), prev_revision: None });
    applied.kv.apply(&put);
    applied
}

/// `applied` as snapshot data of the older `format`, its state `kv` in that format's layout.
fn old_format_data<K: serde::Serialize>(format: u8, applied: &haven_store::state_machine::Applied, kv: K) -> Vec<u8> {
    let old = haven_store::state_machine::AppliedAs {
        last_applied: applied.last_applied,
        membership: applied.membership.clone(),
        kv,
    };
    haven_core::codec::encode_after([b"HVNS".as_slice(), &[format]].concat(), &old).expect("encode")
}

/// A snapshot this version cannot read stops the node with a message that names the
/// file, says what failed and what to do, and changes nothing.
#[test]
fn an_unreadable_snapshot_names_the_file_and_what_to_do() {
    let dir = tempfile::tempdir().expect("temp dir");
    copy_fixture(FIXTURE_27B6131, dir.path());
    let path = dir.path().join("snapshot.bin");
    let mut bytes = std::fs::read(&path).expect("snapshot");
    // Cut the state short: the header still reads, the state does not.
    bytes.truncate(bytes.len() - 100);
    std::fs::write(&path, &bytes).expect("write");
    let error = StateMachine::open(dir.path(), 1000).err().expect("must fail").to_string();
    assert!(error.contains(&path.display().to_string()), "{error}");
    assert!(error.contains("does not decode") && error.contains("ends early"), "{error}");
    assert!(error.contains("haven recover") && error.contains("backup") && error.contains("--join"), "{error}");
    assert_eq!(std::fs::read(&path).expect("snapshot"), bytes, "nothing was changed");

    // A format newer than this version reads is refused as such.
    let applied = haven_store::state_machine::Applied::default();
    let mut newer = encode_applied(&applied).expect("encode");
    newer[4] = haven_store::state_machine::SNAPSHOT_FORMAT + 1;
    let error = decode_applied(&newer).unwrap_err().to_string();
    assert!(error.contains("newer than this version"), "{error}");
}

/// Snapshot data of format 2 (written before issue 13 added the members' durability marks)
/// decodes with every part as it was written and no marks; the marks round-trip in the
/// current format.
#[test]
fn format_2_snapshot_data_decodes() {
    let mut applied = applied_with_a_put();
    let bytes = old_format_data(2, &applied, haven_core::kv::format_v2::KvStateV2::from_current(&applied.kv));
    let decoded = decode_applied(&bytes).expect("format 2 decodes");
    assert!(decoded == applied, "every part kept");
    assert!(decoded.kv.durable().is_empty());

    let marks = Command::RecordDurable { marks: vec![(1, "a".into(), 7), (2, "b".into(), 5)] };
    applied.kv.apply(&Request::new(None, marks));
    let bytes = encode_applied(&applied).expect("encode");
    assert_eq!(&bytes[..5], b"HVNS\x03", "format 3 is written now");
    let back = decode_applied(&bytes).expect("decode");
    assert_eq!(back, applied);
    assert_eq!(back.kv.durable().get(&2).map(|mark| mark.index), Some(5));
}

/// The data dir main at f17139a wrote (snapshot format 2, made by `fixtures/make_data_dir.sh`
/// with that binary) opens under format 3: every key, token and HA setting as written, no
/// durability marks yet, and the state re-encodes in the current format. Fails if format 2
/// were read with the current layout ("bytes left over" / "ends early").
#[test]
fn a_format_2_data_dir_opens() {
    let dir = tempfile::tempdir().expect("temp dir");
    copy_fixture(FIXTURE_F17139A, dir.path());
    let snapshot = std::fs::read(dir.path().join("snapshot.bin")).expect("snapshot");
    assert!(snapshot.windows(5).any(|w| w == b"HVNS\x02"), "the fixture holds a format-2 snapshot");
    let machine = StateMachine::open(dir.path(), 1000).expect("the format-2 snapshot opens");
    let applied = machine.read().clone();
    let kv = &applied.kv;
    // The last snapshot it completed (a newer one was being written when it was killed);
    // the later writes are in the log.
    assert_eq!(applied.last_applied.map(|id| id.index), Some(79));
    assert_eq!((kv.revision(), kv.len()), (55, 55));
    for i in 0..55 {
        let entry = kv.get(&format!("fixture/{i:02}")).expect("every key written before the snapshot");
        assert_eq!(entry.value, format!("value {i:02}").into_bytes());
    }
    let audited = kv.admin().audit.since(0, 100);
    let drafts = audited.iter().filter(|record| record.action == "config.draft").count();
    assert_eq!((audited.len(), drafts), (23, 16), "the audit log, with the draft edits that version recorded");
    let config = &kv.admin().ha_config;
    assert_eq!((config.version, config.value.profile), (1, Some(Profile::Lan)));
    assert_eq!(config.value.smtp.port, 2525);
    assert_eq!(config.value.node(1).priority, 250);
    let mut names: Vec<&str> = kv.tokens().map(|token| token.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["bootstrap-admin", "fixture-reader"]);
    assert!(kv.durable().is_empty(), "format 2 recorded no durability marks");

    let bytes = encode_applied(&applied).expect("encode");
    assert_eq!(bytes[4], haven_store::state_machine::SNAPSHOT_FORMAT);
    assert_eq!(decode_applied(&bytes).expect("decode"), applied);
}
