//! The descriptor budget (issue 13, item 6) with a real node started under a low open-file
//! limit: it raises its soft limit to the hard one, derives its connection and watcher caps
//! from it, and refuses watchers with 429 before it runs out of descriptors, while writes
//! and reads go on. One token alone gets only its share of the watchers (issue 12: a
//! reader token could take every slot of a node).

mod common;

use std::io::Read;
use std::io::Write;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::*;
use haven_client::Consistency;
use haven_client::WriteOptions;

/// The node's limits: a soft limit below what Haven needs, a hard one it can raise it to
/// (low enough that the watchers fit under the per-source connection cap: the test connects
/// from one address).
const SOFT_LIMIT: u64 = 256;
const HARD_LIMIT: u64 = 800;

/// Watchers opened beyond the cap, each of which must get 429.
const WATCHERS_OVER_CAP: usize = 20;

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// Tokens the watchers are spread over once one token has its share: enough that none of
/// them reaches its share before the node is full.
const TOKENS: usize = 8;

/// Opens a watch stream with `token` on its own TLS connection; returns the status code and
/// the connection (kept open by the caller).
fn open_watch(cluster: &TestCluster, token: &str) -> (u16, Tls) {
    let mut tls = pinned_tls(&cluster.nodes[0].client_addr, &cluster.pins, Duration::from_secs(10)).expect("connect");
    let head = format!("GET /v1/watch HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\r\n");
    tls.write_all(head.as_bytes()).expect("send");
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    while !answer.ends_with(b"\r\n") {
        assert_eq!(tls.read(&mut byte).expect("read the status line"), 1, "the connection closed");
        answer.push(byte[0]);
    }
    let line = String::from_utf8_lossy(&answer).to_string();
    let status = line.split_whitespace().nth(1).and_then(|code| code.parse().ok()).expect("a status code");
    (status, tls)
}

#[test]
fn watchers_and_connections_are_capped_by_the_descriptors_available() {
    let _serial = serial();
    let wrapper_dir = tempfile::tempdir().unwrap();
    let wrapper = wrapper_dir.path().join("haven");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nulimit -Sn {SOFT_LIMIT} && ulimit -Hn {HARD_LIMIT} && exec '{}' \"$@\"\n",
            haven_binary().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::env::set_var("HAVEN_TEST_BINARY", &wrapper);
    let mut cluster = TestCluster::start(1, &[]);
    std::env::remove_var("HAVEN_TEST_BINARY");
    cluster.wait_leader(LEADER_TIMEOUT);

    // The soft limit was raised to the hard one.
    let pid = cluster.nodes[0].pid().unwrap();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let open_files = limits.lines().find(|line| line.starts_with("Max open files")).unwrap().to_string();
    let numbers: Vec<&str> = open_files.split_whitespace().skip(3).take(2).collect();
    assert_eq!(numbers, [HARD_LIMIT.to_string(), HARD_LIMIT.to_string()], "{open_files}");

    let budget = haven_server::fd_budget::budget_for(HARD_LIMIT).unwrap();
    let client = cluster.client();
    let tokens: Vec<String> = (0..TOKENS)
        .map(|i| block_on(client.create_token("reader", Some(&format!("watcher-{i}")), None)).expect("token").token)
        .collect();
    let mut streams = Vec::new();
    // Opens `count` watchers, the i-th with `token_for(i)`; returns how many got 429.
    let open = |count: usize, token_for: &dyn Fn(usize) -> usize, streams: &mut Vec<Tls>| {
        let mut refused = 0;
        for i in 0..count {
            let (status, stream) = open_watch(&cluster, &tokens[token_for(i)]);
            match status {
                200 => streams.push(stream),
                429 => refused += 1,
                other => panic!("a watcher got {other}"),
            }
        }
        refused
    };
    // One token: its share, then 429 while the node still has room.
    let share = budget.watchers_max / haven_server::token_slots::WATCHER_SHARES;
    assert!(share * (TOKENS - 1) >= budget.watchers_max, "too few tokens to fill the node: {budget:?}");
    let refused = open(share + WATCHERS_OVER_CAP, &|_| 0, &mut streams);
    assert_eq!((streams.len(), refused), (share, WATCHERS_OVER_CAP), "one token's share of {budget:?}");
    // The others fill the node up to its cap, then 429.
    let refused = open(budget.watchers_max - share + WATCHERS_OVER_CAP, &|i| 1 + i % (TOKENS - 1), &mut streams);
    assert_eq!((streams.len(), refused), (budget.watchers_max, WATCHERS_OVER_CAP));

    // With every watcher slot taken, writes and reads go on.
    block_on(client.put("still", b"writable", WriteOptions::default())).expect("write with watchers at the cap");
    let entry = block_on(client.get("still", Consistency::Linearizable)).expect("read").expect("present");
    assert_eq!(entry.value, b"writable");
    let log = cluster.nodes[0].log();
    assert!(!log.contains("Too many open files"), "the node ran out of descriptors:\n{log}");
    assert!(log.contains("file descriptor budget"), "{log}");
    drop(streams);
}
