//! Authorization against real `haven` processes: default deny on every route of the
//! inventory, one-time join tokens, the bootstrap admin token, and secrets that never
//! leave the answer that created them.
//!
//! The inventory test is driven by `haven_server::api::ROUTES`, so a route added there is
//! tested here without anyone editing this file; a route added to the router without an
//! entry there does not build (the router asserts it).

mod common;

use std::collections::BTreeMap;
use std::process::Output;
use std::time::Duration;
use std::time::Instant;

use common::*;
use haven_core::auth::permits;
use haven_core::auth::Access;
use haven_core::auth::Role;
use reqwest::Method;
use serde_json::json;
use serde_json::Value;

/// One raw request to the node at `index` with `token` (or none): status, headers, body.
async fn call(
    cluster: &TestCluster,
    index: usize,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Vec<u8>,
) -> (u16, reqwest::header::HeaderMap, String) {
    let url = format!("{}{path}", cluster.nodes[index].client_url);
    let mut request = cluster.http().request(method, url).timeout(Duration::from_secs(10)).body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    // A watch that got through streams forever: its status and headers are the answer.
    let text = if path.starts_with("/v1/watch") && status == 200 {
        String::new()
    } else {
        response.text().await.unwrap_or_default()
    };
    (status, headers, text)
}

async fn admin_get(cluster: &TestCluster, path: &str) -> Value {
    let (status, _, text) = call(cluster, 0, Method::GET, path, Some(&cluster.admin_token), Vec::new()).await;
    assert_eq!(status, 200, "GET {path}: {text}");
    serde_json::from_str(&text).expect("json")
}

/// What a refused request must not have changed: the KV revision and the probe key, the
/// membership, and the token table (ids and use).
async fn observable_state(cluster: &TestCluster) -> Value {
    let status = admin_get(cluster, "/v1/status").await;
    let members = admin_get(cluster, "/v1/members").await;
    let tokens = admin_get(cluster, "/v1/tokens").await;
    let (_, _, key) =
        call(cluster, 0, Method::GET, "/v1/kv/inventory/key", Some(&cluster.admin_token), Vec::new()).await;
    let key: Value = serde_json::from_str(&key).unwrap_or(Value::Null);
    let member_ids: Vec<Value> =
        members["members"].as_array().into_iter().flatten().map(|m| json!([m["id"], m["voter"]])).collect();
    let token_ids: Vec<Value> =
        tokens["tokens"].as_array().into_iter().flatten().map(|t| json!([t["id"], t["role"], t["used"]])).collect();
    json!({
        "revision": status["revision"],
        "key": [key["value"], key["mod_revision"]],
        "members": member_ids,
        "tokens": token_ids,
    })
}

fn create_token(cluster: &TestCluster, role: &str, name: &str, ttl_seconds: Option<u64>) -> haven_client::CreatedToken {
    block_on(cluster.client().create_token(role, Some(name), ttl_seconds)).expect("create token")
}

/// A join request for a node that does not exist; the field set is the joiner's.
fn join_body(node_id: u64, dry_run: bool) -> Vec<u8> {
    json!({
        "node_id": node_id,
        "client_url": "https://127.0.0.1:9",
        "peer_addr": "127.0.0.1:9",
        "incarnation": "inventory-test",
        "fingerprint": format!("sha256:{}", "0".repeat(64)),
        "learner": true,
        "dry_run": dry_run,
    })
    .to_string()
    .into_bytes()
}

/// The issue's inventory test: for every protected route and method, no token, a malformed
/// token, a revoked and an expired admin token get 401, every role too weak gets 403, and
/// nothing changes; every role that is strong enough gets past the check. Public routes
/// answer without a token.
#[test]
fn every_route_is_default_deny() {
    let _serial = serial();
    let mut cluster = TestCluster::start(1, &[]);
    cluster.wait_leader(LEADER_TIMEOUT);
    let created_at = Instant::now();
    let expired = create_token(&cluster, "admin", "short-lived", Some(1));
    let revoked = create_token(&cluster, "admin", "to-revoke", None);
    block_on(cluster.client().revoke_token(&revoked.id)).expect("revoke");
    let by_role: BTreeMap<Role, String> = BTreeMap::from([
        (Role::Admin, cluster.admin_token.clone()),
        (Role::Operator, create_token(&cluster, "operator", "ops", None).token),
        (Role::Reader, create_token(&cluster, "reader", "dashboard", None).token),
        (Role::Join, create_token(&cluster, "join", "new-node", Some(600)).token),
    ]);
    let target = create_token(&cluster, "reader", "revoke-target", None);
    block_on(cluster.client().put("inventory/key", b"original", Default::default())).expect("put");
    std::thread::sleep(Duration::from_millis(1100).saturating_sub(created_at.elapsed()));

    block_on(async {
        let before = observable_state(&cluster).await;
        let mut checked = 0;
        for (path, methods) in haven_server::api::ROUTES {
            for (method_name, access) in *methods {
                let method = Method::from_bytes(method_name.to_uppercase().as_bytes()).unwrap();
                let concrete = path
                    .replace("{key}", "inventory/key")
                    .replace("{id}", if path.starts_with("/v1/tokens") { &target.id } else { "1" });
                // What a request that got through would do: change the key, admit a node,
                // mint or revoke a token, remove the only member.
                let body = match (*path, *method_name) {
                    ("/v1/kv/{key}", "put") => b"changed".to_vec(),
                    ("/v1/members/join", _) => join_body(9, false),
                    ("/v1/tokens", "post") => br#"{"role":"admin","name":"sneaky"}"#.to_vec(),
                    _ => Vec::new(),
                };
                let shown = format!("{method_name} {path}");
                if *access == Access::Public {
                    let (status, _, text) = call(&cluster, 0, method.clone(), &concrete, None, body).await;
                    assert!(status == 200 || status == 503, "{shown} is public: {status} {text}");
                    continue;
                }
                let mut cases: Vec<(String, Option<String>, u16)> = vec![
                    ("no token".into(), None, 401),
                    ("a malformed token".into(), Some("hvn_not-a-token".into()), 401),
                    ("a revoked admin token".into(), Some(revoked.token.clone()), 401),
                    ("an expired admin token".into(), Some(expired.token.clone()), 401),
                ];
                for (role, token) in &by_role {
                    if !permits(*role, *access) {
                        cases.push((format!("a {role} token"), Some(token.clone()), 403));
                    }
                }
                for (what, token, expected) in cases {
                    let (status, headers, text) =
                        call(&cluster, 0, method.clone(), &concrete, token.as_deref(), body.clone()).await;
                    assert_eq!(status, expected, "{shown} with {what}: {text}");
                    let json: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                    let code = if expected == 401 { "unauthorized" } else { "forbidden" };
                    assert_eq!(json["error"], code, "{shown} with {what}: {text}");
                    if expected == 401 {
                        assert!(headers.contains_key("www-authenticate"), "{shown} with {what}: no WWW-Authenticate");
                    } else {
                        let needed: Vec<Role> = access.roles();
                        assert_eq!(json["needed_roles"], json!(needed), "{shown} with {what}: {text}");
                    }
                    if let Some(token) = &token {
                        assert!(!text.contains(token.as_str()), "{shown} with {what}: the answer repeats the token");
                    }
                    checked += 1;
                }
                let after = observable_state(&cluster).await;
                assert_eq!(after, before, "{shown}: a refused request changed the state");
            }
        }
        assert!(checked >= 60, "only {checked} refusals were checked");

        // Every role that is strong enough gets past the check (with a body that changes
        // nothing where it could: the join is a dry run, the removal names no member).
        for (path, methods) in haven_server::api::ROUTES {
            for (method_name, access) in *methods {
                let method = Method::from_bytes(method_name.to_uppercase().as_bytes()).unwrap();
                for (role, token) in &by_role {
                    if *access == Access::Public || !permits(*role, *access) {
                        continue;
                    }
                    let id = match *path {
                        "/v1/tokens/{id}" => {
                            let throwaway = cluster.client().create_token("reader", Some("throwaway"), None).await;
                            throwaway.expect("create token").id
                        }
                        _ => "42".to_string(),
                    };
                    let concrete = path.replace("{key}", "inventory/key").replace("{id}", &id);
                    let body = match (*path, *method_name) {
                        ("/v1/kv/{key}", "put") => b"by-role".to_vec(),
                        ("/v1/members/join", _) => join_body(9, true),
                        ("/v1/tokens", "post") => br#"{"role":"reader","name":"made-by-test"}"#.to_vec(),
                        _ => Vec::new(),
                    };
                    let (status, _, text) = call(&cluster, 0, method.clone(), &concrete, Some(token), body).await;
                    let shown = format!("{method_name} {path} with a {role} token");
                    assert!(status != 401 && status != 403, "{shown} was refused: {status} {text}");
                    assert!(status < 500, "{shown}: {status} {text}");
                }
            }
        }
    });
}

/// A revoked token stops working on every node (followers apply the revocation too), and a
/// watch opened with it ends with an `unauthorized` line instead of streaming on.
#[test]
fn revocation_reaches_every_node_and_ends_watches() {
    let _serial = serial();
    let mut cluster = TestCluster::start(3, &[]);
    cluster.wait_leader(LEADER_TIMEOUT);
    let reader = create_token(&cluster, "reader", "watcher", None);
    block_on(async {
        for index in 0..3 {
            let (status, _, text) =
                call(&cluster, index, Method::GET, "/v1/kv?prefix=", Some(&reader.token), vec![]).await;
            assert_eq!(status, 200, "node {index}: {text}");
        }
        let url = format!("{}/v1/watch?prefix=w/", cluster.nodes[2].client_url);
        let mut watch = cluster.http().get(url).bearer_auth(&reader.token).send().await.expect("watch");
        assert_eq!(watch.status(), 200);
        cluster.client().revoke_token(&reader.id).await.expect("revoke");
        let mut received = String::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !received.contains("\"unauthorized\"") {
            match tokio::time::timeout_at(deadline, watch.chunk()).await {
                Ok(Ok(Some(chunk))) => received.push_str(&String::from_utf8_lossy(&chunk)),
                other => panic!("the watch did not end with unauthorized: {other:?}; got {received}"),
            }
        }
        assert!(!received.contains(&reader.token), "{received}");
        // Every node refuses the token once it has applied the revocation (reads check
        // again after their barrier, so a linearizable read is refused at once).
        for index in 0..3 {
            let (status, _, text) =
                call(&cluster, index, Method::GET, "/v1/kv?prefix=", Some(&reader.token), vec![]).await;
            assert_eq!(status, 401, "node {index}: {text}");
        }
    });
}

/// Joining needs a token; a join token admits exactly one node, also when two nodes race
/// for it; a refused node leaves the membership as it was.
#[test]
fn join_tokens_admit_one_node_each() {
    let _serial = serial();
    let mut cluster = TestCluster::start(1, &[]);
    cluster.wait_leader(LEADER_TIMEOUT);
    let member_ids = |cluster: &TestCluster| -> Vec<u64> {
        let members = block_on(cluster.client().members()).expect("members");
        members.iter().map(|m| m.id).collect()
    };
    // The join flags without the admin token the harness would give.
    let without_token: Vec<String> =
        cluster.join_args().into_iter().filter(|arg| !arg.starts_with("--join-token")).collect();
    let args_with = |extra: &[String]| -> Vec<String> { without_token.iter().chain(extra).cloned().collect() };

    // No token: refused, and the node stops with the reason.
    let args = args_with(&[]);
    let index = cluster.add_node(2, &args.iter().map(String::as_str).collect::<Vec<_>>());
    cluster.wait_for(CONDITION_TIMEOUT, "the tokenless joiner to stop", |c| !c.nodes[index].is_running());
    assert!(cluster.nodes[index].log().contains("refused"), "{}", cluster.nodes[index].log());
    assert_eq!(member_ids(&cluster), [1]);

    // A join token admits node 3 ...
    let join = create_token(&cluster, "join", "for-node-3", Some(600));
    let token_file = cluster.dir.path().join("join.token");
    std::fs::write(&token_file, &join.token).unwrap();
    let with_token = args_with(&[format!("--join-token-file={}", token_file.display())]);
    let with_token: Vec<&str> = with_token.iter().map(String::as_str).collect();
    cluster.add_node(3, &with_token);
    cluster.wait_for(CONDITION_TIMEOUT, "node 3 to become a voter", |c| c.voter_count(0) == 2);
    // Spent by the admission: gone from the list.
    let listed = block_on(cluster.client().list_tokens()).expect("tokens");
    assert!(listed.iter().all(|t| t.id != join.id), "the spent join token is gone: {listed:?}");

    // ... and nobody after it.
    let index = cluster.add_node(4, &with_token);
    cluster.wait_for(CONDITION_TIMEOUT, "node 4 to be refused", |c| !c.nodes[index].is_running());
    let log = cluster.nodes[index].log();
    assert!(log.contains("refused to admit node 4 (401"), "{log}");
    assert_eq!(member_ids(&cluster), [1, 3]);

    // Two nodes racing with one fresh token: exactly one gets in.
    let race = create_token(&cluster, "join", "race", Some(600));
    std::fs::write(&token_file, &race.token).unwrap();
    let first = cluster.add_node(5, &with_token);
    let second = cluster.add_node(6, &with_token);
    cluster.wait_for(CONDITION_TIMEOUT, "one racer in, the other stopped", |c| {
        let ids = member_ids(c);
        let in_count = ids.iter().filter(|id| **id == 5 || **id == 6).count();
        let stopped = [first, second].iter().filter(|i| !c.nodes[**i].is_running()).count();
        in_count == 1 && stopped == 1
    });
    std::thread::sleep(Duration::from_millis(500));
    let ids = member_ids(&cluster);
    assert_eq!(ids.iter().filter(|id| **id == 5 || **id == 6).count(), 1, "{ids:?}");
    assert_eq!(ids.len(), 3, "{ids:?}");
    for index in [first, second] {
        assert!(!cluster.nodes[index].log().contains(&race.token), "a joiner logged its token");
    }
}

/// Issue 12: a join token expires by default, every field of a join request is checked
/// before anything is spent (400, token untouched), a token is spent by the admission it
/// made (so it cannot re-admit its node after an admin removed it), a node keeps the key it
/// joined with, and an expired join token admits nobody.
#[test]
fn join_tokens_expire_are_spent_and_check_every_field() {
    let _serial = serial();
    let mut cluster = TestCluster::start(1, &[]);
    cluster.wait_leader(LEADER_TIMEOUT);
    let key = format!("sha256:{}", "a".repeat(64));
    let body = |node_id: u64, incarnation: &str, fingerprint: &str| {
        json!({
            "node_id": node_id,
            "client_url": "https://127.0.0.1:9",
            "peer_addr": "127.0.0.1:9",
            "incarnation": incarnation,
            "fingerprint": fingerprint,
            "learner": true,
        })
    };
    let join = |token: &str, body: Value| -> (u16, String) {
        let request = body.to_string().into_bytes();
        let (status, _, text) = block_on(call(&cluster, 0, Method::POST, "/v1/members/join", Some(token), request));
        (status, text)
    };
    let token_ids = || -> Vec<String> {
        block_on(cluster.client().list_tokens()).expect("tokens").into_iter().map(|t| t.id).collect()
    };

    // No TTL given: a join token still expires, after an hour.
    let made = create_token(&cluster, "join", "default-ttl", None);
    let expires_ms = made.expires_ms.expect("a join token expires");
    let lifetime_ms = expires_ms - made.created_ms;
    assert_eq!(lifetime_ms, haven_core::auth::JOIN_TOKEN_TTL_SECONDS_DEFAULT * 1000);

    // Every malformed field: 400, and the token is neither spent nor claimed.
    let mut malformed: Vec<(&str, Value)> = vec![
        ("no fingerprint", body(5, "inc-5", "")),
        ("a malformed fingerprint", body(5, "inc-5", "sha256:xyz")),
        ("an upper-case fingerprint", body(5, "inc-5", &key.to_uppercase())),
        ("node id 0", body(0, "inc-5", &key)),
        ("an incarnation with a newline", body(5, "inc\nforged", &key)),
    ];
    for (what, field, value) in [
        ("a URL with a newline", "client_url", "https://127.0.0.1:9\n2025-01-01T00:00:00Z INFO forged"),
        ("a plaintext URL", "client_url", "http://127.0.0.1:9"),
        ("a URL with a path", "client_url", "https://127.0.0.1:9/x"),
        ("a URL with user info", "client_url", "https://u@127.0.0.1:9"),
        ("a peer address without a port", "peer_addr", "127.0.0.1"),
        ("a peer address with a space", "peer_addr", "127.0.0.1 :9"),
    ] {
        let mut request = body(5, "inc-5", &key);
        request[field] = json!(value);
        malformed.push((what, request));
    }
    let mut long = body(5, "inc-5", &key);
    long["client_url"] = json!(format!("https://{}.example:9", "a".repeat(250)));
    malformed.push(("a 256-character URL", long));
    for (what, request) in malformed {
        let (status, text) = join(&made.token, request);
        assert_eq!(status, 400, "{what}: {text}");
    }
    let listed = block_on(cluster.client().list_tokens()).expect("tokens");
    let record = listed.iter().find(|t| t.id == made.id).expect("still there");
    assert!(!record.used, "a refused join claims nothing");

    // A good join admits node 5 and spends the token.
    let (status, text) = join(&made.token, body(5, "inc-5", &key));
    assert_eq!(status, 200, "{text}");
    assert!(!token_ids().contains(&made.id), "spent by the admission");
    // The same node, another key: refused even with an admin token.
    let other_key = format!("sha256:{}", "b".repeat(64));
    let (status, text) = join(&cluster.admin_token, body(5, "inc-5", &other_key));
    assert_eq!(status, 409, "a member keeps its key: {text}");

    // The admin removes node 5; its join token cannot bring it (or anyone) back.
    block_on(cluster.client().remove_member(5, false)).expect("remove node 5");
    let (status, text) = join(&made.token, body(5, "inc-5", &key));
    assert_eq!(status, 401, "reuse after removal: {text}");
    let members: Vec<u64> = block_on(cluster.client().members()).expect("members").iter().map(|m| m.id).collect();
    assert_eq!(members, [1]);

    // An expired join token admits nobody.
    let short = create_token(&cluster, "join", "short", Some(1));
    std::thread::sleep(Duration::from_millis(1500));
    let (status, text) = join(&short.token, body(6, "inc-6", &key));
    assert_eq!(status, 401, "expired: {text}");
}

/// Bootstrap writes the first admin token once, mode 0600, and says where, not what; a
/// restart of the bootstrapping node does not mint another.
#[test]
fn bootstrap_writes_one_admin_token() {
    use std::os::unix::fs::PermissionsExt as _;
    let _serial = serial();
    let mut cluster = TestCluster::start(1, &[]);
    cluster.wait_leader(LEADER_TIMEOUT);
    let path = cluster.nodes[0].data_dir.join(haven_server::auth::ADMIN_TOKEN_FILE);
    let mode = std::fs::metadata(&path).expect("admin.token").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let log = cluster.nodes[0].log();
    assert!(log.contains(&format!("admin token written to {}", path.display())), "{log}");
    let tokens = block_on(cluster.client().list_tokens()).expect("tokens");
    assert_eq!(tokens.len(), 1);
    assert_eq!((tokens[0].name.as_str(), tokens[0].role.as_str()), ("bootstrap-admin", "admin"));

    cluster.restart(0);
    cluster.wait_leader(LEADER_TIMEOUT);
    let token_again = std::fs::read_to_string(&path).expect("admin.token");
    assert_eq!(token_again.trim(), cluster.admin_token);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(block_on(cluster.client().list_tokens()).expect("tokens").len(), 1, "no second admin token");
}

/// Runs the `haven` CLI against the cluster with the admin token file unless `env` says
/// otherwise; `HAVEN_TOKEN` from the test's own environment never leaks in.
fn haven(cluster: &TestCluster, args: &[&str], env: &[(&str, &str)]) -> Output {
    cluster.cli(args, env)
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// The issue's secrets test: tokens appear in the one answer that creates them and nowhere
/// else: not in any node's log, not in status output, not in token lists, not in any error
/// message, not even when a near miss of a token is sent.
#[test]
fn tokens_never_appear_in_logs_status_or_errors() {
    let _serial = serial();
    let mut cluster = TestCluster::start(3, &[]);
    cluster.wait_leader(LEADER_TIMEOUT);
    let mut secrets = vec![cluster.admin_token.clone()];
    let mut everything = String::new();

    // Created through the CLI: stdout is the token alone, stderr says what it is.
    let created = haven(&cluster, &["tokens", "create", "--role", "operator", "--name", "ops"], &[]);
    assert!(created.status.success(), "{}", text(&created));
    let operator = String::from_utf8(created.stdout.clone()).unwrap().trim().to_string();
    assert!(haven_core::auth::parse_token(&operator).is_ok(), "{operator}");
    let stderr = String::from_utf8_lossy(&created.stderr).to_string();
    assert!(stderr.contains("shown only this once"), "{stderr}");
    everything.push_str(&stderr);
    let created = haven(&cluster, &["tokens", "create", "--role", "reader", "--json"], &[]);
    assert!(created.status.success(), "{}", text(&created));
    let reader: Value = serde_json::from_slice(&created.stdout).expect("json");
    let reader = reader["token"].as_str().expect("token").to_string();
    let created = haven(&cluster, &["tokens", "create", "--role", "join", "--ttl", "10m"], &[]);
    assert!(created.status.success(), "{}", text(&created));
    let join = String::from_utf8(created.stdout.clone()).unwrap().trim().to_string();
    everything.push_str(&String::from_utf8_lossy(&created.stderr));
    secrets.extend([operator.clone(), reader.clone(), join.clone()]);

    // Used: from a file, from the environment, as a flag.
    let operator_file = cluster.dir.path().join("operator.token");
    std::fs::write(&operator_file, format!("{operator}\n")).unwrap();
    let file_arg = format!("--token-file={}", operator_file.display());
    let put = haven(&cluster, &["kv", "put", "app/k", "v", &file_arg], &[]);
    assert!(put.status.success(), "{}", text(&put));
    everything.push_str(&text(&put));
    let get = haven(&cluster, &["kv", "get", "app/k"], &[("HAVEN_TOKEN", &reader)]);
    assert!(get.status.success(), "{}", text(&get));
    everything.push_str(&text(&get));

    // Refused: too weak, revoked, a near miss, a missing file. Each says why in one line.
    let weak = haven(&cluster, &["kv", "put", "app/k", "w", "--token", &reader], &[]);
    assert!(!weak.status.success());
    assert!(text(&weak).contains("forbidden"), "{}", text(&weak));
    everything.push_str(&text(&weak));
    let operator_id = &operator[4..20];
    let revoke = haven(&cluster, &["tokens", "revoke", operator_id], &[]);
    assert!(revoke.status.success(), "{}", text(&revoke));
    everything.push_str(&text(&revoke));
    let revoked = haven(&cluster, &["kv", "put", "app/k", "x", &file_arg], &[]);
    assert!(!revoked.status.success());
    assert!(text(&revoked).contains("unauthorized"), "{}", text(&revoked));
    everything.push_str(&text(&revoked));
    let mut near = reader.clone();
    near.replace_range(30..31, if &reader[30..31] == "A" { "B" } else { "A" });
    let near_miss = haven(&cluster, &["kv", "get", "app/k", "--token", &near], &[]);
    assert!(!near_miss.status.success());
    everything.push_str(&text(&near_miss));
    secrets.push(near.clone());
    let malformed = format!("{near}x");
    let bad = haven(&cluster, &["kv", "get", "app/k"], &[("HAVEN_TOKEN", &malformed)]);
    assert!(!bad.status.success() && text(&bad).contains("not a Haven token"), "{}", text(&bad));
    everything.push_str(&text(&bad));
    let missing = haven(&cluster, &["status", "--token-file", "/nonexistent/token"], &[]);
    assert!(!missing.status.success() && text(&missing).contains("cannot read the token file"), "{}", text(&missing));
    everything.push_str(&text(&missing));
    // The same refusals over raw HTTP, on every node.
    block_on(async {
        for index in 0..3 {
            for token in [&operator, &near, &malformed, &join] {
                let (status, _, body) =
                    call(&cluster, index, Method::PUT, "/v1/kv/app/k", Some(token), b"y".to_vec()).await;
                assert!(status == 401 || status == 403, "node {index}: {status} {body}");
                everything.push_str(&body);
            }
        }
    });

    // Status and lists, as people and scripts see them.
    for args in [
        &["status"][..],
        &["status", "--json"],
        &["tokens", "list"],
        &["tokens", "list", "--json"],
        &["members", "list"],
    ] {
        let output = haven(&cluster, args, &[]);
        assert!(output.status.success(), "{args:?}: {}", text(&output));
        everything.push_str(&text(&output));
    }
    let listed = haven(&cluster, &["tokens", "list", "--json"], &[]);
    let listed: Value = serde_json::from_slice(&listed.stdout).expect("json");
    assert_eq!(listed["tokens"].as_array().map(Vec::len), Some(3), "admin, reader, join (operator revoked): {listed}");
    for index in 0..3 {
        let status = cluster.status(index).expect("status");
        everything.push_str(&status.to_string());
    }

    // Stop the nodes so their logs are complete, then read every one.
    for index in 0..cluster.nodes.len() {
        cluster.stop(index);
    }
    for node in &cluster.nodes {
        let log = node.log();
        assert!(!log.is_empty(), "node {} has a log", node.id);
        everything.push_str(&log);
    }
    assert!(everything.contains("admin token written to"), "the bootstrap says where the token is");
    for secret in &secrets {
        let secret_part = &secret[21..];
        assert!(!everything.contains(secret_part), "a token secret leaked (token id {})", &secret[4..20]);
        let hash = haven_core::auth::token_sha256_hex(secret);
        assert!(!everything.contains(&hash), "a token hash leaked (token id {})", &secret[4..20]);
    }
}

/// `haven restart --node N` sends the admin token only to an endpoint it was configured
/// with: with node 1 alone in `HAVEN_ENDPOINTS`, node 2's advertised URL (what an impostor
/// admitted with a join token would name) gets nothing, and node 2 keeps running; with
/// node 2 configured too, the restart goes ahead (issue 12).
#[test]
fn the_cli_sends_the_token_only_to_configured_endpoints() {
    let _serial = serial();
    let mut cluster = TestCluster::start(2, &[]);
    cluster.wait_leader(LEADER_TIMEOUT);
    let pid = cluster.nodes[1].pid();
    let first = cluster.nodes[0].client_url.clone();
    let output = cluster.cli(&["restart", "--node", "2", "--no-wait"], &[("HAVEN_ENDPOINTS", &first)]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("not one of your endpoints"), "{stderr}");
    std::thread::sleep(Duration::from_millis(500));
    assert!(cluster.nodes[1].is_running() && cluster.nodes[1].pid() == pid, "node 2 was restarted");
    assert!(!cluster.nodes[1].log().contains("restart requested"), "{}", cluster.nodes[1].log());
    // With node 2 configured, the same command reaches it (its answer may be lost as it
    // restarts, so the node's log is what shows it).
    cluster.cli(&["restart", "--node", "2", "--no-wait"], &[]);
    cluster
        .wait_for(CONDITION_TIMEOUT, "node 2 to get the restart", |c| c.nodes[1].log().contains("restart requested"));
}

/// A follower cut off from its leader honours tokens from its own table for at most
/// `TOKEN_TRUST_WITHOUT_LEADER`: a reader token revoked while it was away is refused once
/// that bound has passed, for status and stale reads alike, and so is a reader token still
/// valid (503 `stale_tokens`: the node cannot tell), while the admin token still reaches it
/// (status, restart, recovery). On the old code the revoked token read on, indefinitely
/// (issue 12).
#[test]
fn a_node_cut_off_from_its_leader_stops_honouring_tokens() {
    let _serial = serial();
    let mut cluster = TestCluster::start(3, &[]);
    let leader = cluster.wait_leader(LEADER_TIMEOUT);
    let follower = (0..3).find(|i| cluster.nodes[*i].id != leader).unwrap();
    let others: Vec<usize> = (0..3).filter(|i| *i != follower).collect();
    let reader = create_token(&cluster, "reader", "cut-off-reader", None);
    let still_valid = create_token(&cluster, "reader", "cut-off-valid-reader", None);
    block_on(cluster.client().put("k", b"v", Default::default())).expect("put");
    cluster.wait_for(CONDITION_TIMEOUT, "the follower to know the reader tokens", |c| {
        [&reader, &still_valid]
            .iter()
            .all(|token| common::call_as(c, follower, "GET", "/v1/status", None, &token.token).0 == 200)
    });
    // Away while the token is revoked, then alone.
    cluster.signal(follower, libc::SIGSTOP);
    block_on(cluster.client().revoke_token(&reader.id)).expect("revoke");
    for index in &others {
        cluster.signal(*index, libc::SIGSTOP);
    }
    cluster.signal(follower, libc::SIGCONT);
    // What the leader sent while the follower was stopped waits in the follower's socket
    // and is read now: it may hear of the revocation (then it answers 401) and counts
    // this moment as the last word from its leader. The bound runs from here.
    let resumed_at = Instant::now();
    let bound = haven_server::auth::TOKEN_TRUST_WITHOUT_LEADER;
    std::thread::sleep((bound + Duration::from_secs(2)).saturating_sub(resumed_at.elapsed()));
    for path in ["/v1/status", "/v1/kv/k?consistency=stale", "/v1/members"] {
        let (status, body) = common::call_as(&cluster, follower, "GET", path, None, &still_valid.token);
        assert_eq!((status, body["error"].as_str()), (503, Some("stale_tokens")), "{path}: {body}");
        let (status, body) = common::call_as(&cluster, follower, "GET", path, None, &reader.token);
        assert!(
            matches!((status, body["error"].as_str()), (503, Some("stale_tokens")) | (401, Some("unauthorized"))),
            "the revoked token is refused on {path}: {status} {body}"
        );
    }
    let (status, body) = common::call_as(&cluster, follower, "GET", "/v1/status", None, &cluster.admin_token);
    assert_eq!(status, 200, "the admin still reaches a cut-off node: {body}");
    for index in &others {
        cluster.signal(*index, libc::SIGCONT);
    }
}

/// `/v1/audit` is open to readers, but tokens are admin business: a reader sees that token
/// actions happened, never a token's id, name or role, nor the names of the tokens that
/// acted; an admin sees everything (issue 12).
#[test]
fn readers_see_no_tokens_in_the_audit_log() {
    let _serial = serial();
    let cluster = TestCluster::start(1, &[]);
    let secret_admin = create_token(&cluster, "admin", "deploy-bot-admin", None);
    let reader = create_token(&cluster, "reader", "dashboard", None);
    let (status, as_admin) = common::call_as(&cluster, 0, "GET", "/v1/audit", None, &cluster.admin_token);
    assert_eq!(status, 200, "{as_admin}");
    let as_admin = as_admin.to_string();
    assert!(as_admin.contains("deploy-bot-admin") && as_admin.contains(&secret_admin.id), "{as_admin}");
    let (status, as_reader) = common::call_as(&cluster, 0, "GET", "/v1/audit", None, &reader.token);
    assert_eq!(status, 200, "{as_reader}");
    assert!(as_reader["records"].as_array().is_some_and(|r| r.iter().any(|r| r["action"] == "token.create")));
    let as_reader = as_reader.to_string();
    for hidden in ["deploy-bot-admin", secret_admin.id.as_str(), "dashboard", reader.id.as_str(), "bootstrap-admin"] {
        assert!(!as_reader.contains(hidden), "{hidden} shown to a reader: {as_reader}");
    }
}

/// Switchovers are rate-limited cluster-wide: a write token in a loop gets
/// `SWITCHOVERS_PER_WINDOW_MAX` of them per window, then 429 `too_many_switchovers`, however
/// the primary moved in between (the count comes from the replicated audit log) (issue 12).
#[test]
fn switchovers_are_rate_limited() {
    use haven_core::admin::SWITCHOVERS_PER_WINDOW_MAX;
    let _serial = serial();
    let mut cluster = TestCluster::start(3, &[]);
    let writer = create_token(&cluster, "operator", "switcher", None);
    for done in 0..SWITCHOVERS_PER_WINDOW_MAX {
        let leader = cluster.wait_leader(LEADER_TIMEOUT);
        let index = cluster.index_of(leader);
        let (status, body) = common::call_as(&cluster, index, "POST", "/v1/switchover", Some(json!({})), &writer.token);
        assert_eq!(status, 200, "switchover {} of {SWITCHOVERS_PER_WINDOW_MAX}: {body}", done + 1);
    }
    let leader = cluster.wait_leader(LEADER_TIMEOUT);
    let index = cluster.index_of(leader);
    let (status, body) = common::call_as(&cluster, index, "POST", "/v1/switchover", Some(json!({})), &writer.token);
    assert_eq!((status, body["error"].as_str()), (429, Some("too_many_switchovers")), "{body}");
    assert_eq!(cluster.wait_leader(LEADER_TIMEOUT), leader, "the refused switchover moved nothing");
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>;

/// Reads an answer's head (through the blank line) from `tls`.
fn read_head(tls: &mut Tls) -> String {
    use std::io::Read as _;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match tls.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            other => panic!("the answer's head ended early ({other:?}): {}", String::from_utf8_lossy(&head)),
        }
    }
    String::from_utf8_lossy(&head).to_string()
}

/// The status code of an answer's head.
fn status_of(head: &str) -> u16 {
    head.split_whitespace().nth(1).and_then(|code| code.parse().ok()).unwrap_or_else(|| panic!("no status: {head}"))
}

/// One whole request (`Connection: close`) from `source` to node 0: status and body.
fn request_from(
    cluster: &TestCluster,
    source: std::net::IpAddr,
    token: &str,
    method: &str,
    path: &str,
) -> (u16, String) {
    use std::io::Read as _;
    use std::io::Write as _;
    let mut tls = pinned_tls_from(Some(source), &cluster.nodes[0].client_addr, &cluster.pins, Duration::from_secs(30))
        .expect("connect");
    let body = if method == "PUT" { "value" } else { "" };
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(request.as_bytes()).expect("send");
    let head = read_head(&mut tls);
    let mut rest = Vec::new();
    // The server may close without close_notify; what arrived is the answer (Connection: close).
    let _ = tls.read_to_end(&mut rest);
    (status_of(&head), String::from_utf8_lossy(&rest).to_string())
}

/// The per-token cap on requests in progress (issue 12: one token could take every request
/// a node serves), end to end. One operator token starts `REQUESTS_PER_TOKEN_MAX` writes
/// that each stay in progress: every one sends `Expect: 100-continue` and no body, so the
/// node answers `100 Continue` once the request is past the token check, holds its slot and
/// waits in the handler for the body. Then that token gets 429 `too_many_requests` on any
/// route, while a second token is served; once one held write ends (its body sent), the
/// first token is served again. The writes come from several loopback addresses, since one
/// address gets at most `per_source_max` connections.
#[test]
fn one_token_gets_at_most_its_cap_of_requests_in_progress_and_others_are_still_served() {
    use std::io::Write as _;
    let _serial = serial();
    let cluster = TestCluster::start(1, &[]);
    let cap = haven_server::token_slots::REQUESTS_PER_TOKEN_MAX;
    // Sources for the held writes: 64 connections each, well under any node's per-source cap.
    const PER_SOURCE: usize = 64;
    const { assert!(PER_SOURCE <= haven_net::accept::CLIENT_LIMITS.per_source_max) };
    let source = |i: usize| std::net::IpAddr::from([127, 0, 0, 2 + (i / PER_SOURCE) as u8]);
    let probe_source = std::net::IpAddr::from([127, 0, 0, 1]);
    // This process holds `cap` connections: its soft descriptor limit up to its hard one.
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit read and write the struct given, nothing else.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
    assert!(limit.rlim_cur as usize > cap + 256, "the test needs {} descriptors: {limit:?}", cap + 256);

    let busy = create_token(&cluster, "operator", "busy", None).token;
    let other = create_token(&cluster, "operator", "other", None).token;
    let started = Instant::now();
    let mut held: Vec<Tls> = (0..cap)
        .map(|i| {
            let mut tls =
                pinned_tls_from(Some(source(i)), &cluster.nodes[0].client_addr, &cluster.pins, Duration::from_secs(30))
                    .expect("connect");
            let head = format!(
                "PUT /v1/kv/held/{i} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {busy}\r\n\
                 Content-Length: 5\r\nExpect: 100-continue\r\n\r\n"
            );
            tls.write_all(head.as_bytes()).expect("send");
            let answer = read_head(&mut tls);
            assert_eq!(status_of(&answer), 100, "held write {i} is not in progress: {answer}");
            tls
        })
        .collect();
    eprintln!("{cap} writes in progress after {:?}", started.elapsed());

    for (method, path) in [("GET", "/v1/kv/held/0"), ("PUT", "/v1/kv/one-more"), ("GET", "/v1/status")] {
        let (status, body) = request_from(&cluster, probe_source, &busy, method, path);
        assert_eq!(status, 429, "{method} {path} with a token at its cap: {body}");
        assert!(body.contains("too_many_requests") && body.contains(&cap.to_string()), "{body}");
    }
    let (status, body) = request_from(&cluster, probe_source, &other, "PUT", "/v1/kv/other");
    assert_eq!(status, 200, "another token is served while the first is at its cap: {body}");
    let (status, body) = request_from(&cluster, probe_source, &other, "GET", "/v1/kv/other");
    assert_eq!(status, 200, "{body}");

    // One held write ends: its slot comes back to its token.
    let mut done = held.pop().expect("a held write");
    done.write_all(b"value").expect("send the body");
    let answer = read_head(&mut done);
    assert_eq!(status_of(&answer), 200, "{answer}");
    let (status, body) = request_from(&cluster, probe_source, &busy, "PUT", "/v1/kv/one-more");
    assert_eq!(status, 200, "the token is served again once a request of its ended: {body}");
    drop(held);
    eprintln!("done after {:?}", started.elapsed());
}
