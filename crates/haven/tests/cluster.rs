//! Multi-process cluster tests with real `haven` processes on 127.0.0.1.
//!
//! Time bounds are generous (a new leader within 10 s); speed is measured by benchmarks.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use common::*;
use haven_client::Consistency;
use haven_client::WriteOptions;

fn put(client: &haven_client::Client, key: &str, value: &str) -> u64 {
    block_on(client.put(key, value.as_bytes(), WriteOptions::default())).expect("put").revision
}

fn get(client: &haven_client::Client, key: &str, consistency: Consistency) -> Option<String> {
    block_on(client.get(key, consistency)).expect("get").map(|entry| String::from_utf8(entry.value).expect("utf-8"))
}

/// A 3-node cluster elects a leader, and a write through any node is readable on every
/// node, linearizably and (after it has applied) from the local copy.
#[test]
fn three_nodes_elect_a_leader_and_replicate_writes() {
    let _serial = serial();
    let mut cluster = TestCluster::start(3, &[]);
    let leader = cluster.wait_leader(LEADER_TIMEOUT);
    assert!((1..=3).contains(&leader));
    for writer in 0..3 {
        let key = format!("from/{writer}");
        put(&cluster.client_of(writer), &key, &format!("value {writer}"));
        for reader in 0..3 {
            assert_eq!(
                get(&cluster.client_of(reader), &key, Consistency::Linearizable).as_deref(),
                Some(format!("value {writer}").as_str()),
                "linearizable read of {key} on node {}",
                reader + 1
            );
        }
    }
    let status = cluster.status(0).expect("status");
    assert_eq!(status["revision"], 3);
    assert!(status["cluster_id"].as_str().is_some_and(|id| id.len() == 32), "{status}");
    assert_eq!(status["members"].as_array().map(Vec::len), Some(3));
}

/// `kill -9` of the leader under write load: a new leader accepts writes and every
/// acknowledged write is still there; the killed node restarts and catches up.
#[test]
fn kill_leader_under_load_loses_no_acknowledged_write() {
    let _serial = serial();
    let mut cluster = TestCluster::start(3, &[]);
    let old_leader = cluster.wait_leader(LEADER_TIMEOUT);
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(std::sync::Mutex::new(BTreeMap::<String, String>::new()));
    let writers: Vec<_> = (0..4)
        .map(|writer| {
            let client = cluster.client();
            let stop = stop.clone();
            let acknowledged = acknowledged.clone();
            std::thread::spawn(move || {
                block_on(async move {
                    let mut sequence = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        sequence += 1;
                        let key = format!("load/{writer}/{sequence}");
                        let value = format!("v{writer}-{sequence}");
                        if client.put(&key, value.as_bytes(), WriteOptions::default()).await.is_ok() {
                            acknowledged.lock().unwrap().insert(key, value);
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                })
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let before_kill = acknowledged.lock().unwrap().len();
    assert!(before_kill > 10, "writes were acknowledged before the kill ({before_kill})");
    let killed = cluster.index_of(old_leader);
    cluster.kill(killed);
    let killed_at = Instant::now();
    let new_leader = cluster.wait_leader(LEADER_TIMEOUT);
    assert_ne!(new_leader, old_leader);
    // Writes are accepted again after the failover.
    let count_at_failover = acknowledged.lock().unwrap().len();
    cluster.wait_for(LEADER_TIMEOUT, "writes after the failover", |_| {
        acknowledged.lock().unwrap().len() > count_at_failover + 10
    });
    eprintln!("new leader {new_leader} accepting writes {:?} after the kill", killed_at.elapsed());
    cluster.restart(killed);
    std::thread::sleep(Duration::from_millis(1000));
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.join().expect("writer");
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    // Every acknowledged write is present, read linearizably through the cluster.
    let listed = block_on(cluster.client().list_all("load/")).expect("list");
    let present: BTreeMap<String, String> =
        listed.items.into_iter().map(|entry| (entry.key, String::from_utf8(entry.value).unwrap())).collect();
    for (key, value) in &acknowledged {
        assert_eq!(present.get(key), Some(value), "acknowledged write {key} lost");
    }
    // The restarted node catches up to the same state.
    let target = cluster.status(cluster.index_of(new_leader)).unwrap()["commit_index"].as_u64().unwrap();
    cluster.wait_for(CONDITION_TIMEOUT, "the restarted node to catch up", |c| {
        c.status(killed).and_then(|s| s["applied_index"].as_u64()).is_some_and(|applied| applied >= target)
    });
    let local = block_on(cluster.client_of(killed).list_all("load/")).expect("list on restarted node");
    assert!(
        local.items.len() >= acknowledged.len(),
        "restarted node has {} of {}",
        local.items.len(),
        acknowledged.len()
    );
}

/// A node joins a running cluster and catches up from a snapshot (forced by a small
/// snapshot threshold, so the log it would need has been purged).
#[test]
fn joining_node_catches_up_from_a_snapshot() {
    let _serial = serial();
    let mut cluster = TestCluster::start(3, &["--snapshot-threshold=20"]);
    cluster.wait_leader(LEADER_TIMEOUT);
    let client = cluster.client();
    for i in 0..200 {
        put(&client, &format!("snap/{i:03}"), &format!("value {i}"));
    }
    let join = cluster.join_args();
    let join: Vec<&str> = join.iter().map(String::as_str).collect();
    let new = cluster.add_node(4, &join);
    cluster.wait_for(CONDITION_TIMEOUT, "node 4 to become a voter", |c| c.voter_count(0) == 4);
    // Linearizable on node 4: it gets a read index from the leader and waits to apply it.
    let listed =
        block_on(cluster.client_of(new).list("snap/", None, Some(1000), Consistency::Linearizable)).expect("list");
    assert_eq!(listed.items.len(), 200, "node 4 holds every key");
    assert!(cluster.nodes[new].log().contains("snapshot installed"), "node 4 caught up through a snapshot");
    let status = cluster.status(new).unwrap();
    assert!(
        status["warnings"].as_array().unwrap().iter().any(|w| w.as_str().unwrap().contains("even number")),
        "{status}"
    );
}

/// Compare-and-swap and watch work across a leader change: a watcher that reconnects with
/// its last revision after 1,000 writes and a leader change resumes with nothing skipped
/// or repeated, and no 410.
#[test]
fn cas_and_watch_resume_across_a_leader_change() {
    let _serial = serial();
    let mut cluster = TestCluster::start(3, &[]);
    let leader = cluster.wait_leader(LEADER_TIMEOUT);
    let client = cluster.client();
    // CAS: create-only, then swap against the right and a wrong revision.
    let created =
        block_on(client.put("cas/k", b"1", WriteOptions { prev_revision: Some(0), ..Default::default() })).unwrap();
    let again = block_on(client.put("cas/k", b"x", WriteOptions { prev_revision: Some(0), ..Default::default() }));
    assert!(
        matches!(again, Err(haven_client::Error::CompareFailed { current_revision }) if current_revision == created.revision)
    );
    block_on(client.put("cas/k", b"2", WriteOptions { prev_revision: Some(created.revision), ..Default::default() }))
        .unwrap();

    let watched = (0..3).find(|i| cluster.nodes[*i].id != leader).unwrap();
    let start = cluster.status(watched).unwrap()["revision"].as_u64().unwrap();
    // A watcher takes the first 300 events and disconnects; 1,300 writes happen, with the
    // leader killed in the middle; the watcher then resumes from its last revision.
    let url = cluster.nodes[watched].client_url.clone();
    let (pins, token) = (cluster.pins.clone(), cluster.admin_token.clone());
    let first = std::thread::spawn(move || {
        let mut seen = Vec::new();
        read_watch(&url, &pins, &token, start, 300, &mut seen);
        seen
    });
    for i in 0..1300 {
        put(&client, &format!("w/{}", i % 50), &format!("{i}"));
        if i == 650 {
            let index = cluster.index_of(leader);
            cluster.kill(index);
            cluster.wait_leader(LEADER_TIMEOUT);
            // CAS against the pre-failover revision still compares correctly.
            let current = block_on(client.get("cas/k", Consistency::Linearizable)).unwrap().unwrap();
            let stale = block_on(client.put(
                "cas/k",
                b"3",
                WriteOptions { prev_revision: Some(created.revision), ..Default::default() },
            ));
            assert!(
                matches!(stale, Err(haven_client::Error::CompareFailed { current_revision }) if current_revision == current.mod_revision)
            );
        }
    }
    let mut seen = first.join().expect("first watcher");
    let last = *seen.last().expect("events");
    read_watch(&cluster.nodes[watched].client_url, &cluster.pins, &cluster.admin_token, last, 1000, &mut seen);
    let expected: Vec<u64> = (start + 1..=start + 1300).collect();
    assert_eq!(seen, expected, "every revision once, in order");
}

/// Reads `count` put events for prefix `w/` after `after_revision` from one node's watch
/// stream, appending their revisions; fails on a 410 or an error line.
fn read_watch(
    url: &str,
    pins: &haven_tls::PinSet,
    token: &str,
    after_revision: u64,
    count: usize,
    seen: &mut Vec<u64>,
) {
    use std::io::BufRead;
    use std::io::Write;
    let addr = url.trim_start_matches("https://");
    let socket = std::net::TcpStream::connect(addr).expect("connect");
    socket.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let config = Arc::new(haven_tls::client_config(pins.clone(), None).unwrap());
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut stream = rustls::StreamOwned::new(rustls::ClientConnection::new(config, name).unwrap(), socket);
    // HTTP/1.0: the body is delimited by the connection closing, not chunked, so each
    // line read is one NDJSON line.
    write!(
        stream,
        "GET /v1/watch?prefix=w/&after_revision={after_revision} HTTP/1.0\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\r\n"
    )
    .unwrap();
    let mut reader = std::io::BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).unwrap();
    assert!(status_line.contains(" 200 "), "watch answered {status_line}");
    let mut got = 0;
    let mut line = String::new();
    while got < count {
        line.clear();
        if reader.read_line(&mut line).expect("watch stream") == 0 {
            panic!("watch stream ended");
        }
        let Ok(event) = serde_json::from_str::<serde_json::Value>(line.trim()) else { continue };
        match event["type"].as_str() {
            Some("put") => {
                seen.push(event["revision"].as_u64().unwrap());
                got += 1;
            }
            Some("progress") => {}
            other => panic!("unexpected watch line {other:?}: {line}"),
        }
    }
}

/// A node whose data dir was wiped is refused as the member it was; the cluster is
/// unchanged.
#[test]
fn a_wiped_node_is_refused() {
    let _serial = serial();
    let mut cluster = TestCluster::start(3, &[]);
    cluster.wait_leader(LEADER_TIMEOUT);
    let victim = 2;
    let before = cluster.status(0).unwrap()["members"].clone();
    cluster.kill(victim);
    // Wipe the data dir but keep the node's key (restored from a backup, say): the TLS
    // layer then lets it in, and the incarnation check is what must refuse it.
    let data_dir = cluster.nodes[victim].data_dir.clone();
    let key = std::fs::read(data_dir.join("node.key")).unwrap();
    let cert = std::fs::read(data_dir.join("node.crt")).unwrap();
    std::fs::remove_dir_all(&data_dir).unwrap();
    std::fs::create_dir_all(&data_dir).unwrap();
    std::fs::write(data_dir.join("node.key"), key).unwrap();
    std::fs::write(data_dir.join("node.crt"), cert).unwrap();
    // Restarted with the same id and addresses and its join setting: refused, exits.
    cluster.restart(victim);
    let deadline = Instant::now() + CONDITION_TIMEOUT;
    while cluster.nodes[victim].is_running() {
        assert!(Instant::now() < deadline, "the wiped node kept running");
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = cluster.nodes[victim].log();
    assert!(log.contains("another data dir") && log.contains("haven members remove 3"), "{log}");
    let after = cluster.status(0).unwrap()["members"].clone();
    let ids =
        |members: &serde_json::Value| members.as_array().unwrap().iter().map(|m| m["id"].as_u64()).collect::<Vec<_>>();
    assert_eq!(ids(&before), ids(&after));
    // Started without join, it cannot take part: it trusts no member's key (its data dir
    // holds no membership) and the members expect its old incarnation.
    let index = cluster.index_of(3);
    cluster.nodes[index].extra_args.clear();
    cluster.restart(index);
    cluster.wait_for(CONDITION_TIMEOUT, "the wiped node's traffic to be refused", |c| {
        c.nodes.iter().any(|n| n.log().contains("incarnation mismatch")) || c.nodes[index].log().contains("not pinned")
    });
    // The cluster still commits with the two healthy nodes.
    put(&cluster.client_of(0), "after/wipe", "ok");
}

/// SIGTERM of the leader hands leadership to another voter first, exits 0 and removes
/// the pid file.
#[test]
fn graceful_stop_of_the_leader_hands_over() {
    let _serial = serial();
    let mut cluster = TestCluster::start(3, &[]);
    let leader = cluster.wait_leader(LEADER_TIMEOUT);
    let index = cluster.index_of(leader);
    let status = cluster.stop(index).expect("exit status");
    assert!(status.success(), "clean exit: {status:?}");
    assert!(!cluster.nodes[index].data_dir.join("haven.pid").exists(), "pid file removed");
    assert!(cluster.nodes[index].log().contains("leadership handed over"), "{}", cluster.nodes[index].log());
    let new_leader = cluster.wait_leader(LEADER_TIMEOUT);
    assert_ne!(new_leader, leader);
}

/// `members remove` refuses when the remaining voters could not form a majority of the
/// reachable ones, and `--force` overrides with a warning.
#[test]
fn member_removal_guards_quorum() {
    let _serial = serial();
    let mut cluster = TestCluster::start(3, &[]);
    let leader = cluster.wait_leader(LEADER_TIMEOUT);
    let others: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    let down = cluster.index_of(others[0]);
    cluster.kill(down);
    let client = cluster.client();
    // Removing the other healthy node would leave {leader, down}: only 1 of 2 reachable.
    cluster.wait_for(CONDITION_TIMEOUT, "the leader to see the node down", |c| {
        c.status(c.index_of(leader)).is_some_and(|s| {
            s["members"].as_array().unwrap().iter().any(|m| m["id"] == others[0] && m["reachable"] == false)
        })
    });
    let refused = block_on(client.remove_member(others[1], false));
    assert!(
        matches!(&refused, Err(haven_client::Error::Api { status: 409, code, .. }) if code == "quorum_at_risk"),
        "{refused:?}"
    );
    // Removing the dead node is safe: {leader, others[1]} are both reachable.
    let removed = block_on(client.remove_member(others[0], false)).expect("remove the dead node");
    assert_eq!(removed.removed, others[0]);
    cluster.wait_for(CONDITION_TIMEOUT, "two voters", |c| c.voter_count(c.index_of(leader)) == 2);
    put(&client, "after/remove", "ok");
}

/// A node started with `--learner` joins as a read replica and stays one: it holds the data
/// and serves linearizable reads, but is never promoted to voter.
#[test]
fn a_learner_stays_a_learner() {
    let _serial = serial();
    let mut cluster = TestCluster::start(1, &[]);
    cluster.wait_leader(LEADER_TIMEOUT);
    put(&cluster.client(), "replicated", "yes");
    let mut args = cluster.join_args();
    args.push("--learner".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let learner = cluster.add_node(2, &args);
    cluster.wait_for(CONDITION_TIMEOUT, "node 2 to be a member", |c| {
        c.status(0).is_some_and(|s| s["members"].as_array().is_some_and(|m| m.len() == 2))
    });
    // The leader lists it once the membership entry is appended, which can be before the
    // learner has heard from it: until then it knows neither a leader nor the tokens.
    cluster.wait_for(CONDITION_TIMEOUT, "node 2 to hear from its leader", |c| c.leader_of(learner) == Some(1));
    assert_eq!(get(&cluster.client_of(learner), "replicated", Consistency::Linearizable).as_deref(), Some("yes"));
    // Several promotion rounds later it is still a learner.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(cluster.voter_count(0), 1, "the learner was not promoted");
}

/// Switchover (seed 002's "swap roles") hands the primary role to a named voter, is a
/// no-op when the target already leads (issue 14 item 11: not an error), and without a
/// target picks another voter; no acknowledged write is lost across it.
#[test]
fn switchover_moves_the_primary_role() {
    let _serial = serial();
    let mut cluster = TestCluster::start(3, &[]);
    let leader = cluster.wait_leader(LEADER_TIMEOUT);
    let client = cluster.client();
    put(&client, "before/switchover", "1");
    let target = (1..=3).find(|id| *id != leader).unwrap();
    let result = block_on(client.switchover(Some(target))).expect("switchover");
    assert_eq!((result.from, result.to), (leader, target));
    assert_eq!(cluster.wait_leader(LEADER_TIMEOUT), target);
    let again = block_on(client.switchover(Some(target))).expect("a switchover to the primary is a no-op");
    assert_eq!((again.from, again.to), (target, target), "{again:?}");
    assert_eq!(cluster.wait_leader(LEADER_TIMEOUT), target);
    let result = block_on(client.switchover(None)).expect("switchover to any");
    assert_ne!(result.to, target);
    assert_eq!(cluster.wait_leader(LEADER_TIMEOUT), result.to);
    assert_eq!(get(&client, "before/switchover", Consistency::Linearizable).as_deref(), Some("1"));
    put(&client, "after/switchover", "2");
}

/// Maintenance mode (Patroni's "pause"): shown on every node; switchover still works; a
/// dead primary is not replaced automatically; `maintenance off` (even without a leader)
/// brings failover back.
#[test]
fn maintenance_blocks_failover() {
    let _serial = serial();
    let mut cluster = TestCluster::start(3, &[]);
    cluster.wait_leader(LEADER_TIMEOUT);
    let client = cluster.client();
    block_on(client.set_maintenance(true)).expect("maintenance on");
    cluster.wait_for(CONDITION_TIMEOUT, "every node to show maintenance", |c| {
        (0..3).all(|i| c.status(i).is_some_and(|s| s["maintenance"] == true))
    });
    let switched = block_on(client.switchover(None)).expect("switchover works in maintenance");
    let leader = cluster.wait_leader(LEADER_TIMEOUT);
    assert_eq!(leader, switched.to);
    let index = cluster.index_of(leader);
    cluster.kill(index);
    // Five times the longest election timeout: nobody takes over on its own.
    std::thread::sleep(Duration::from_secs(3));
    for i in (0..3).filter(|i| *i != index) {
        let view = cluster.leader_of(i);
        assert!(view.is_none() || view == Some(leader), "node {} elected {view:?} during maintenance", i + 1);
    }
    let survivors: Vec<String> = (0..3).filter(|i| *i != index).map(|i| cluster.nodes[i].client_url.clone()).collect();
    let survivor_client = cluster.client_for(&survivors.join(","), Some(&cluster.admin_token));
    block_on(survivor_client.set_maintenance(false)).expect("maintenance off without a leader");
    let new_leader = cluster.wait_leader(LEADER_TIMEOUT);
    assert_ne!(new_leader, leader);
    let survivor = (0..3).find(|i| *i != index).unwrap();
    assert_eq!(cluster.status(survivor).unwrap()["maintenance"], false);
    put(&survivor_client, "after/maintenance", "ok");
}
