//! Restarts after snapshots with a non-default HA configuration (issue 10): every
//! snapshot with a detection profile applied was unreadable, so a node that had taken one
//! could never start again, and a follower could not install one.
//!
//! - A node starts on the data dir main at 27b6131 left (profile `lan` and every other key
//!   applied, snapshot format 0), keeps every key, and restarts again on the snapshot it
//!   writes itself.
//! - Three nodes with a snapshot every 10 entries: every HA key applied (explicit timing,
//!   then the `lan` profile), writes, every node killed and restarted, then the issue's
//!   own sequence (`haven restart --rolling`); every acknowledged write is there after each.
//! - A follower that was down while the log was purged catches up by InstallSnapshot of a
//!   state with the `fast` profile applied explicitly, and restarts on it.
//!
//! All fail on 27b6131 (`HAVEN_TEST_BINARY=... cargo test --test restart`): the first node
//! does not start ("decode snapshot: Serde Deserialization Error"), the restarted nodes do
//! not come back, the follower cannot install the snapshot.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use common::*;
use haven_client::Consistency;
use haven_client::WriteOptions;
use serde_json::json;
use serde_json::Value;

/// Entries between snapshots: the smallest the node accepts, so a few dozen writes take
/// several snapshots and purge the log behind them.
const SNAPSHOT_THRESHOLD: &str = "--snapshot-threshold=10";

fn fixture_27b6131() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../haven-store/tests/fixtures/data_dir_27b6131_profile_lan")
}

/// Writes `count` keys `prefix/N` through `client`; returns those acknowledged (a write
/// whose outcome is unknown is not counted, and not required afterwards).
fn write_keys(client: &haven_client::Client, prefix: &str, count: usize) -> BTreeMap<String, Vec<u8>> {
    let mut acknowledged = BTreeMap::new();
    for i in 0..count {
        let key = format!("{prefix}/{i:04}");
        let value = format!("{prefix} value {i}").into_bytes();
        if block_on(client.put(&key, &value, WriteOptions::default())).is_ok() {
            acknowledged.insert(key, value);
        }
    }
    assert!(acknowledged.len() * 10 >= count * 9, "most writes are acknowledged: {} of {count}", acknowledged.len());
    acknowledged
}

/// Every acknowledged write is on node `index`, read from its own state (`stale`: what
/// this node holds, not what the leader answers).
fn assert_holds(cluster: &TestCluster, index: usize, acknowledged: &BTreeMap<String, Vec<u8>>) {
    let client = cluster.client_of(index);
    for (key, value) in acknowledged {
        let entry = block_on(client.get(key, Consistency::Stale)).expect("read");
        assert_eq!(entry.map(|e| e.value).as_ref(), Some(value), "node {}: acknowledged write {key} lost", index + 1);
    }
}

/// The applied HA configuration as node `index` reports it.
fn config_of(cluster: &TestCluster, index: usize) -> (u64, Value) {
    let (status, body) = call(cluster, index, "GET", "/v1/config", None);
    assert_eq!(status, 200, "{body}");
    (body["version"].as_u64().expect("version"), body["config"].clone())
}

/// Waits until node `index` has applied everything the leader committed.
fn wait_caught_up(cluster: &mut TestCluster, index: usize) {
    let leader = cluster.wait_leader(LEADER_TIMEOUT);
    let leader_index = cluster.index_of(leader);
    let target = cluster.status(leader_index).expect("leader status")["commit_index"].as_u64().expect("commit");
    cluster.wait_for(CONDITION_TIMEOUT, "the node to catch up", |c| {
        c.status(index).and_then(|s| s["applied_index"].as_u64()).is_some_and(|applied| applied >= target)
    });
}

/// The data dir written by 27b6131: the node starts, holds every key the old version
/// acknowledged (some in the old snapshot, some in the log after it) and its whole HA
/// configuration, refuses the request ids it remembered without their caller, takes new
/// snapshots in the current format, and restarts on them.
#[test]
fn a_node_starts_on_data_written_before_the_fix() {
    let _serial = serial();
    let fixture = fixture_27b6131();
    let mut cluster = TestCluster::start_on(&[(1, fixture.as_path())], &[SNAPSHOT_THRESHOLD]);
    assert_eq!(cluster.wait_leader(LEADER_TIMEOUT), 1);
    let mut expected: BTreeMap<String, Vec<u8>> =
        (0..64).map(|i| (format!("fixture/{i:02}"), format!("value {i:02}").into_bytes())).collect();
    assert_holds(&cluster, 0, &expected);
    let (version, config) = config_of(&cluster, 0);
    assert_eq!((version, &config["profile"], &config["smtp"]["port"]), (1, &json!("lan"), &json!(2525)), "{config}");
    assert_eq!(config["nodes"]["1"]["priority"], 250, "{config}");
    let (status, draft) = call(&cluster, 0, "GET", "/v1/config/draft", None);
    assert_eq!((status, &draft["draft"]["changes"]["hook_timeout_s"]), (200, &json!(50)), "{draft}");

    // An id the old version remembered cannot be told from a retry: refused, not answered.
    let (status, body) =
        call_raw(&cluster, 0, "PUT", "/v1/kv/other?request_id=fixture-req-07", "x", &cluster.admin_token);
    assert_eq!((status, body["error"].as_str()), (409, Some("request_id_reused")), "{body}");

    // New snapshots (every 10 entries) in the current format, then a kill -9 and a start
    // on them.
    expected.extend(write_keys(&cluster.client_of(0), "after", 40));
    let snapshot = std::fs::read(cluster.nodes[0].data_dir.join("snapshot.bin")).expect("snapshot");
    let current = [b"HVNS".as_slice(), &[haven_store::state_machine::SNAPSHOT_FORMAT]].concat();
    assert!(snapshot.windows(5).any(|w| w == current), "a snapshot in the current format was written");
    cluster.restart(0);
    assert_eq!(cluster.wait_leader(LEADER_TIMEOUT), 1);
    assert_holds(&cluster, 0, &expected);
    assert_eq!(config_of(&cluster, 0).1, config);
}

/// Every HA key that can be set: first with an explicit timing, then with the `lan`
/// profile instead. Node 3 becomes a witness (priority 0) whose ping targets do not
/// answer, which only withholds its own candidacy; the hook script and the SMTP server do
/// not exist, which only makes their runs fail.
fn every_key(timing: Value, smtp_password_file: &std::path::Path) -> Value {
    let mut set = json!({
        "failback": true,
        "stabilisation_delay_s": 120,
        "anti_flap_delay_s": 30,
        "file_sync_interval_s": 7,
        "file_sync_change_count": 250,
        "hook_script": "/nonexistent/haven-hook",
        "hook_timeout_s": 12,
        "alert_email": "ops@example.invalid",
        "smtp.host": "smtp.example.invalid",
        "smtp.port": 2525,
        "smtp.from": "haven@example.invalid",
        "smtp.starttls": true,
        "smtp.username": "haven",
        "smtp.password_file": smtp_password_file,
        "nodes.1.priority": 300,
        "nodes.2.priority": 200,
        "nodes.3.role": "witness",
        "nodes.3.priority": 0,
        "nodes.3.ping_targets": ["192.0.2.1", "gateway.example.invalid"],
    });
    set.as_object_mut().expect("object").extend(timing.as_object().expect("object").clone());
    set
}

/// Issue 10's sequence on three nodes: every key applied, writes across many snapshots,
/// every node killed and started again; then the `lan` profile, more writes, and `haven
/// restart --rolling`. After each restart every node is back with every acknowledged write
/// and the configuration as applied.
#[test]
fn every_node_restarts_after_snapshots_with_every_ha_key_applied() {
    let _serial = serial();
    // smtp.password_file must name a private file in the nodes' secrets dir (issue 12).
    let secrets = tempfile::tempdir().expect("secrets dir");
    let password_file = secrets.path().join("smtp.password");
    std::fs::write(&password_file, "not-a-real-password").expect("password file");
    std::fs::set_permissions(&password_file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("mode");
    let secrets_dir = format!("--secrets-dir={}", secrets.path().display());
    let mut cluster = TestCluster::start(3, &[SNAPSHOT_THRESHOLD, &secrets_dir]);
    cluster.wait_leader(LEADER_TIMEOUT);
    apply_config(&cluster, 0, every_key(json!({ "ping_interval_ms": 60, "failed_pings": 5 }), &password_file));
    let mut acknowledged = write_keys(&cluster.client(), "explicit", 120);
    let applied = config_of(&cluster, 0);
    for index in 0..3 {
        cluster.kill(index);
    }
    for index in 0..3 {
        cluster.restart(index);
    }
    cluster.wait_leader(LEADER_TIMEOUT);
    for index in 0..3 {
        wait_caught_up(&mut cluster, index);
        assert_holds(&cluster, index, &acknowledged);
        assert_eq!(config_of(&cluster, index), applied, "node {}", index + 1);
    }

    // The profile instead of the explicit timing (they contradict each other).
    apply_draft(&cluster, 0, json!({ "set": { "profile": "lan" }, "unset": ["ping_interval_ms", "failed_pings"] }));
    acknowledged.extend(write_keys(&cluster.client(), "profile", 120));
    let applied = config_of(&cluster, 0);
    assert_eq!(applied.1["profile"], "lan");
    let output = cluster.cli(&["restart", "--rolling"], &[]);
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    cluster.wait_leader(LEADER_TIMEOUT);
    for index in 0..3 {
        wait_caught_up(&mut cluster, index);
        assert_holds(&cluster, index, &acknowledged);
        assert_eq!(config_of(&cluster, index), applied, "node {}", index + 1);
        let status = cluster.status(index).expect("status");
        assert!(status["pending_restart"].is_null(), "node {} runs the applied timing: {status}", index + 1);
    }
}

/// A follower down while the others took snapshots and purged their logs catches up by
/// InstallSnapshot of a state with a non-default configuration (the `fast` profile applied
/// explicitly, failback on), then restarts on the snapshot it installed.
#[test]
fn a_lagging_follower_installs_a_snapshot_with_a_non_default_configuration() {
    let _serial = serial();
    let mut cluster = TestCluster::start(3, &[SNAPSHOT_THRESHOLD]);
    let leader = cluster.wait_leader(LEADER_TIMEOUT);
    apply_config(&cluster, 0, json!({ "profile": "fast", "failback": true, "stabilisation_delay_s": 30 }));
    let lagging = (0..3).find(|index| cluster.nodes[*index].id != leader).expect("a follower");
    cluster.kill(lagging);
    let acknowledged = write_keys(&cluster.client(), "lag", 100);
    let applied = config_of(&cluster, cluster.index_of(leader));
    cluster.restart(lagging);
    wait_caught_up(&mut cluster, lagging);
    assert!(cluster.nodes[lagging].log().contains("snapshot installed"), "it caught up through a snapshot");
    assert_holds(&cluster, lagging, &acknowledged);
    assert_eq!(config_of(&cluster, lagging), applied);
    // And it starts again on the snapshot it installed.
    cluster.restart(lagging);
    wait_caught_up(&mut cluster, lagging);
    assert_holds(&cluster, lagging, &acknowledged);
    assert_eq!(config_of(&cluster, lagging).1["profile"], "fast");
}

/// The issue's `haven recover --standalone` with a profile applied: it rewrote the data dir
/// into a snapshot the node could never read, after reporting success. Now the command
/// reports success only once the node leads its new cluster, and it does, with every key.
#[test]
fn recover_standalone_with_a_profile_applied_brings_the_node_back() {
    let _serial = serial();
    let mut cluster = TestCluster::start(3, &[SNAPSHOT_THRESHOLD]);
    let leader = cluster.wait_leader(LEADER_TIMEOUT);
    apply_config(&cluster, 0, json!({ "profile": "lan" }));
    let acknowledged = write_keys(&cluster.client(), "standalone", 60);
    for index in 0..3 {
        wait_caught_up(&mut cluster, index);
    }
    let primary = cluster.index_of(leader);
    let detached = teardown_from(&mut cluster, primary);
    let url = cluster.nodes[detached].client_url.clone();
    let output = cluster.cli(&["recover", "--standalone"], &[("HAVEN_ENDPOINTS", &url)]);
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{text}");
    // On 27b6131 the command said the node "restarts now", and the node never started
    // again (`decode snapshot: Serde Deserialization Error`).
    cluster.wait_for(CONDITION_TIMEOUT, "the recovered node to lead its new cluster", |c| {
        c.status(detached).is_some_and(|s| s["leader"] == s["node_id"])
    });
    assert!(text.contains("is back and leads the new cluster"), "{text}");
    assert_holds(&cluster, detached, &acknowledged);
    assert_eq!(config_of(&cluster, detached).1["profile"], "lan");
}
