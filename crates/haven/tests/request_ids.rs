//! Request ids against real nodes (issue 11): an id is scoped to the token that sends it
//! and bound to the request it was first used for. A retry gets the first answer; the
//! same id with another request gets `409 request_id_reused` and writes nothing; another
//! token's same id is another request. Each test is one of the sequences, sent as
//! raw HTTP to a follower of a three-node cluster (so the forwarding path is covered too).

mod common;

use common::*;
use serde_json::json;
use serde_json::Value;

struct Http<'a> {
    cluster: &'a TestCluster,
    base: String,
}

impl Http<'_> {
    async fn send(&self, method: reqwest::Method, path: &str, token: &str, body: Vec<u8>) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let response =
            self.cluster.http().request(method, url).bearer_auth(token).body(body).send().await.expect("request");
        let status = response.status().as_u16();
        (status, response.json::<Value>().await.unwrap_or(Value::Null))
    }

    async fn put(&self, key: &str, value: &str, request_id: &str, token: &str) -> (u16, Value) {
        self.send(reqwest::Method::PUT, &format!("/v1/kv/{key}?request_id={request_id}"), token, value.into()).await
    }

    async fn get(&self, key: &str) -> (u16, Value) {
        self.send(reqwest::Method::GET, &format!("/v1/kv/{key}"), &self.cluster.admin_token, Vec::new()).await
    }

    /// Creates a token of `role` with the admin token; returns (id, token).
    async fn token(&self, role: &str) -> (String, String) {
        let body = serde_json::to_vec(&json!({ "role": role, "name": format!("test-{role}") })).unwrap();
        let (status, json) = self.send(reqwest::Method::POST, "/v1/tokens", &self.cluster.admin_token, body).await;
        assert_eq!(status, 200, "{json}");
        (json["id"].as_str().unwrap().to_string(), json["token"].as_str().unwrap().to_string())
    }
}

/// A follower's client URL: requests sent there are forwarded to the leader.
fn start() -> (TestCluster, String) {
    let mut cluster = TestCluster::start(3, &[]);
    let leader = cluster.wait_leader(LEADER_TIMEOUT);
    let follower = cluster.nodes.iter().find(|node| node.id != leader).expect("a follower").client_url.clone();
    (cluster, follower)
}

fn assert_reused(status: u16, json: &Value, id: &str) {
    assert_eq!((status, json["error"].as_str()), (409, Some("request_id_reused")), "{json}");
    let message = json["message"].as_str().unwrap_or_default();
    assert!(message.contains(&format!("{id:?}")) && message.contains("different request"), "{message}");
}

/// Sequence 1: `PUT a?request_id=req-42` then `PUT b?request_id=req-42` with the same
/// token. The second was answered 200 for key b and wrote nothing; now it is a 409 that
/// names the id, b stays absent, and a true retry of the first still gets its answer.
#[test]
fn a_reused_id_for_another_key_is_refused() {
    let _serial = serial();
    let (cluster, follower) = start();
    block_on(async {
        let http = Http { cluster: &cluster, base: follower };
        let admin = cluster.admin_token.clone();
        let (status, first) = http.put("a", "one", "req-42", &admin).await;
        assert_eq!(status, 200, "{first}");
        let (status, json) = http.put("b", "two", "req-42", &admin).await;
        assert_reused(status, &json, "req-42");
        assert_eq!(http.get("b").await.0, 404, "nothing was written");
        let (status, retry) = http.put("a", "one", "req-42", &admin).await;
        assert_eq!((status, &retry), (200, &first), "the retry gets the first answer, for key a");
        let (_, a) = http.get("a").await;
        assert_eq!((a["value"].as_str(), a["mod_revision"].as_u64()), (Some("one"), first["revision"].as_u64()));
    });
}

/// Sequence 2: an operator token's `PUT c?request_id=req-42` after the admin's
/// `PUT a?request_id=req-42` was answered 200 and wrote nothing; now it is written.
#[test]
fn another_tokens_same_id_is_another_request() {
    let _serial = serial();
    let (cluster, follower) = start();
    block_on(async {
        let http = Http { cluster: &cluster, base: follower };
        let (_, operator) = http.token("operator").await;
        let (status, json) = http.put("a", "one", "req-42", &cluster.admin_token).await;
        assert_eq!(status, 200, "{json}");
        let (status, json) = http.put("c", "three", "req-42", &operator).await;
        assert_eq!((status, json["key"].as_str()), (200, Some("c")), "{json}");
        let (status, c) = http.get("c").await;
        assert_eq!((status, c["value"].as_str()), (200, Some("three")), "{c}");
        assert_eq!(c["mod_revision"], json["revision"]);
    });
}

/// Sequence 3: across kinds of command. After a put with `request_id=0`, a revocation with
/// `request_id=0` by the same token was a 500 ("unexpected answer ... CompareFailed"); now
/// it is a 409 and the token stays. A revocation whose id another token used before was a
/// 404 for a token that exists; now it revokes.
#[test]
fn a_reused_id_across_commands_is_refused_or_independent() {
    let _serial = serial();
    let (cluster, follower) = start();
    block_on(async {
        let http = Http { cluster: &cluster, base: follower };
        let admin = cluster.admin_token.clone();
        let (victim_id, _) = http.token("reader").await;
        let (_, operator) = http.token("operator").await;
        let (status, json) = http.put("k", "v", "0", &admin).await;
        assert_eq!(status, 200, "{json}");
        let revoke = format!("/v1/tokens/{victim_id}?request_id=0");
        let (status, json) = http.send(reqwest::Method::DELETE, &revoke, &admin, Vec::new()).await;
        assert_reused(status, &json, "0");
        let (_, listed) = http.send(reqwest::Method::GET, "/v1/tokens", &admin, Vec::new()).await;
        assert!(listed.to_string().contains(&victim_id), "the token was not revoked: {listed}");

        let (status, json) = http.put("k2", "v", "7", &operator).await;
        assert_eq!(status, 200, "{json}");
        let revoke = format!("/v1/tokens/{victim_id}?request_id=7");
        let (status, json) = http.send(reqwest::Method::DELETE, &revoke, &admin, Vec::new()).await;
        assert_eq!((status, json["revoked"].as_bool()), (200, Some(true)), "{json}");
    });
}
