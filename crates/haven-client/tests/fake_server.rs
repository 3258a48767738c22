//! The client's HTTP paths against scripted fake servers on 127.0.0.1.
//!
//! Each fake answers every request through a script `(request, n) -> response`, where `n`
//! counts the requests it has seen, and records what it received, so a test can prove what
//! the client sent: how often, to which node, with which `request_id`. The real server's
//! behaviour is tested by the cluster tests; these prove the client's side of the contract
//! in `docs/http-api.md`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use axum::body::Body;
use axum::http::HeaderMap;
use axum::http::Request;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::response::Response;
use axum::Router;
use futures::StreamExt;
use haven_client::Backoff;
use haven_client::Client;
use haven_client::ClientConfig;
use haven_client::Consistency;
use haven_client::Error;
use haven_client::PutOptions;
use haven_client::RetryAdvice;
use haven_client::WatchEvent;
use serde_json::json;

#[derive(Debug, Clone)]
struct Seen {
    method: String,
    /// The path as sent (percent-encoded).
    path: String,
    query: HashMap<String, String>,
    authorization: Option<String>,
    body: Vec<u8>,
}

type Script = Arc<dyn Fn(&Seen, usize) -> Response + Send + Sync>;

struct Fake {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Fake {
    async fn start(script: impl Fn(&Seen, usize) -> Response + Send + Sync + 'static) -> Fake {
        let script: Script = Arc::new(script);
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let recorder = seen.clone();
        let app = Router::new().fallback(move |request: Request<Body>| {
            let script = script.clone();
            let recorder = recorder.clone();
            async move {
                let (parts, body) = request.into_parts();
                let body = axum::body::to_bytes(body, 1 << 20).await.unwrap().to_vec();
                let url = reqwest::Url::parse(&format!("http://fake{}", parts.uri)).unwrap();
                let seen = Seen {
                    method: parts.method.to_string(),
                    path: parts.uri.path().to_string(),
                    query: url.query_pairs().into_owned().collect(),
                    authorization: parts.headers.get("authorization").map(|v| v.to_str().unwrap().to_string()),
                    body,
                };
                let n = {
                    let mut all = recorder.lock().unwrap();
                    all.push(seen.clone());
                    all.len() - 1
                };
                let response = script(&seen, n);
                if let Some(Delay(delay)) = response.extensions().get::<Delay>().copied() {
                    tokio::time::sleep(delay).await;
                }
                response
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Fake { url, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

/// Marks a response the fake holds back for a while (a slow or stopped node).
#[derive(Debug, Clone, Copy)]
struct Delay(Duration);

fn delayed(delay_ms: u64, mut response: Response) -> Response {
    response.extensions_mut().insert(Delay(Duration::from_millis(delay_ms)));
    response
}

fn json_response(status: u16, body: serde_json::Value) -> Response {
    let mut response = (StatusCode::from_u16(status).unwrap(), body.to_string()).into_response();
    response.headers_mut().insert("content-type", "application/json".parse().unwrap());
    response
}

fn error(status: u16, code: &str) -> Response {
    json_response(status, json!({"error": code, "message": format!("fake {code}")}))
}

fn put_ok(revision: u64) -> Response {
    json_response(200, json!({"key": "k", "revision": revision, "prev_mod_revision": 0}))
}

/// The request timeout of the test clients.
const REQUEST_TIMEOUT_MS: u64 = 1000;
/// How long a "stopped" fake holds a response: well past the request timeout.
const STALL_MS: u64 = 3 * REQUEST_TIMEOUT_MS;

/// Short timeouts and back-off so a failing round costs milliseconds.
fn client(endpoints: &[&Fake], max_attempts: u32) -> Client {
    let list: Vec<String> = endpoints.iter().map(|f| f.url.clone()).collect();
    client_for(&list.join(","), max_attempts)
}

fn client_for(endpoints: &str, max_attempts: u32) -> Client {
    let mut config = ClientConfig::from_endpoints_str(endpoints).unwrap();
    // Generous against a loaded CI machine, yet far below the delays of a "stopped" node.
    config.request_timeout = Duration::from_millis(REQUEST_TIMEOUT_MS);
    config.max_attempts = max_attempts;
    config.deadline = Duration::from_secs(10);
    config.backoff = Backoff { base: Duration::from_millis(1), cap: Duration::from_millis(5) };
    config.jitter_seed = Some(1);
    Client::new(config).unwrap()
}

/// An address nothing listens on: bind, read the port, close.
async fn closed_endpoint() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    url
}

/// The example: 503 `no_leader` twice, then 200. The write succeeds, and all three
/// requests carry the same generated request_id, so the server applies it at most once.
#[tokio::test]
async fn a_write_is_retried_through_no_leader_with_one_request_id() {
    let fake = Fake::start(|_, n| if n < 2 { error(503, "no_leader") } else { put_ok(5) }).await;
    let result = client(&[&fake], 10).put("hosts/web 1", b"10.0.0.5", PutOptions::default()).await.unwrap();
    assert_eq!(result.revision, 5);
    let seen = fake.seen();
    assert_eq!(seen.len(), 3);
    let ids: Vec<&String> = seen.iter().map(|s| &s.query["request_id"]).collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "request ids differ: {ids:?}");
    assert_eq!(ids[0].len(), 32);
    for s in &seen {
        assert_eq!(
            (s.method.as_str(), s.path.as_str(), s.body.as_slice()),
            ("PUT", "/v1/kv/hosts/web%201", &b"10.0.0.5"[..])
        );
        assert!(!s.query.contains_key("prev_revision"));
    }
}

#[tokio::test]
async fn each_logical_write_gets_its_own_request_id_and_callers_ids_are_kept() {
    let fake = Fake::start(|_, _| put_ok(1)).await;
    let client = client(&[&fake], 3);
    client.put("a", b"1", PutOptions::default()).await.unwrap();
    client.put("a", b"1", PutOptions::default()).await.unwrap();
    let options = PutOptions { prev_revision: Some(0), request_id: Some("agent-7-op-1".into()) };
    client.put("a", b"1", options).await.unwrap();
    let seen = fake.seen();
    assert_ne!(seen[0].query["request_id"], seen[1].query["request_id"]);
    assert_eq!(seen[2].query["request_id"], "agent-7-op-1");
    assert_eq!(seen[2].query["prev_revision"], "0");
}

/// `503 outcome_unknown` on every attempt: the caller learns that the write may have
/// applied, and every attempt carried the same id (so it applied at most once).
#[tokio::test]
async fn outcome_unknown_on_every_attempt_is_reported_as_such() {
    let fake = Fake::start(|_, _| {
        json_response(503, json!({"error": "outcome_unknown", "message": "leader lost", "outcome": "unknown"}))
    })
    .await;
    let error = client(&[&fake], 3).put("k", b"v", PutOptions::default()).await.unwrap_err();
    assert_eq!(error.retry_advice(), RetryAdvice::OutcomeUnknown);
    let Error::OutcomeUnknown { request_id: Some(request_id), .. } = &error else { panic!("{error:?}") };
    let seen = fake.seen();
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|s| &s.query["request_id"] == request_id));
    assert_eq!(error.code(), Some("outcome_unknown"));
}

/// A request that timed out may have applied; the retry with the same id is safe and its
/// answer is the call's answer.
#[tokio::test]
async fn a_write_that_timed_out_is_retried_with_the_same_id() {
    let fake = Fake::start(|_, n| if n == 0 { delayed(STALL_MS, put_ok(8)) } else { put_ok(9) }).await;
    let result = client(&[&fake], 3).put("k", b"v", PutOptions::default()).await.unwrap();
    assert_eq!(result.revision, 9);
    let seen = fake.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].query["request_id"], seen[1].query["request_id"]);
}

#[tokio::test]
async fn timeouts_everywhere_are_outcome_unknown_for_writes_and_unavailable_for_reads() {
    let fake = Fake::start(|_, _| delayed(STALL_MS, put_ok(1))).await;
    let client = client(&[&fake], 2);
    let write = client.put("k", b"v", PutOptions::default()).await.unwrap_err();
    assert!(matches!(write, Error::OutcomeUnknown { .. }), "{write}");
    let read = client.get("k", Consistency::Linearizable).await.unwrap_err();
    let Error::Unavailable { last_error, .. } = &read else { panic!("{read:?}") };
    assert!(matches!(**last_error, Error::Timeout { .. }), "{read}");
    assert_eq!(read.retry_advice(), RetryAdvice::BackOff);
}

/// A node that refuses connections never received the write: no outcome is unknown.
#[tokio::test]
async fn refused_connections_everywhere_are_unavailable_even_for_writes() {
    let a = closed_endpoint().await;
    let b = closed_endpoint().await;
    let error = client_for(&format!("{a},{b}"), 4).put("k", b"v", PutOptions::default()).await.unwrap_err();
    let Error::Unavailable { tried, last_error } = &error else { panic!("{error:?}") };
    assert_eq!(tried, &[a.clone(), b.clone()]);
    assert!(matches!(**last_error, Error::Unreachable { .. }));
    assert_eq!(error.retry_advice(), RetryAdvice::BackOff);
    let message = error.to_string();
    assert!(message.starts_with(&format!("no endpoint answered (tried {a}, {b}): cannot connect to")), "{message}");
}

/// The client moves on from a node that is down or not serving, and starts the next call
/// at the node that answered.
#[tokio::test]
async fn it_fails_over_and_remembers_the_endpoint_that_answered() {
    let down = closed_endpoint().await;
    let unavailable = Fake::start(|_, _| error(503, "unavailable")).await;
    let serving = Fake::start(|_, _| {
        json_response(200, json!({"key":"k","value":"v","create_revision":1,"mod_revision":2,"version":2,"revision":3}))
    })
    .await;
    let client = client_for(&format!("{down},{},{}", unavailable.url, serving.url), 10);
    let entry = client.get("k", Consistency::Linearizable).await.unwrap().unwrap();
    assert_eq!((entry.value.as_slice(), entry.mod_revision, entry.revision), (&b"v"[..], 2, Some(3)));
    assert_eq!((unavailable.count(), serving.count()), (1, 1));
    client.get("k", Consistency::Stale).await.unwrap();
    assert_eq!((unavailable.count(), serving.count()), (1, 2));
    assert_eq!(serving.seen()[1].query["consistency"], "stale");
}

/// A node names the leader in `Haven-Leader`; the next write goes there first, reads stay
/// where they are.
#[tokio::test]
async fn writes_follow_the_leader_header() {
    let leader = Fake::start(|_, _| put_ok(2)).await;
    let leader_url = leader.url.clone();
    let follower = Fake::start(move |_, _| {
        let mut response = put_ok(1);
        response.headers_mut().insert("haven-leader", leader_url.parse().unwrap());
        response
    })
    .await;
    let client = client(&[&follower, &leader], 3);
    assert_eq!(client.put("k", b"v", PutOptions::default()).await.unwrap().revision, 1);
    assert_eq!(client.put("k", b"v", PutOptions::default()).await.unwrap().revision, 2);
    assert_eq!((follower.count(), leader.count()), (1, 1));
    assert_eq!(client.preferred_write_endpoint(), leader.url);
}

/// A leader hint that stops answering is dropped after one failed attempt, so later writes
/// do not keep paying for a dead node first.
#[tokio::test]
async fn a_dead_leader_hint_is_forgotten() {
    let dead = closed_endpoint().await;
    let dead_url = dead.clone();
    // The follower names the dead node once (its last known leader), then no leader.
    let follower = Fake::start(move |_, n| {
        let mut response = put_ok(1);
        if n == 0 {
            response.headers_mut().insert("haven-leader", dead_url.parse().unwrap());
        }
        response
    })
    .await;
    let client = client_for(&format!("{},{dead}", follower.url), 5);
    client.put("k", b"v", PutOptions::default()).await.unwrap();
    assert_eq!(client.preferred_write_endpoint(), dead);
    // This write tries the hint first, is refused, and succeeds at the follower...
    client.put("k", b"v", PutOptions::default()).await.unwrap();
    // ...and the hint is gone: the next write starts at the follower.
    assert_eq!(client.preferred_write_endpoint(), follower.url);
    assert_eq!(follower.count(), 2);
}

#[tokio::test]
async fn answers_about_the_request_are_not_retried() {
    let fake = Fake::start(|seen, _| match seen.method.as_str() {
        "PUT" => json_response(409, json!({"error":"compare_failed","message":"m","current_revision":3})),
        "DELETE" => error(400, "invalid_key"),
        _ => json_response(404, json!({"error":"not_found","message":"m","revision":8})),
    })
    .await;
    let client = client(&[&fake], 5);
    let options = PutOptions { prev_revision: Some(2), request_id: None };
    let error = client.put("k", b"v", options).await.unwrap_err();
    assert!(matches!(error, Error::CompareFailed { current_revision: 3 }), "{error:?}");
    assert_eq!(error.retry_advice(), RetryAdvice::DoNotRetry);
    let error = client.delete("k", PutOptions::default()).await.unwrap_err();
    assert!(matches!(&error, Error::Api { status: 400, code, .. } if code == "invalid_key"), "{error:?}");
    assert_eq!(client.get("k", Consistency::Linearizable).await.unwrap(), None);
    assert_eq!(fake.count(), 3);
}

#[tokio::test]
async fn malformed_answers_are_typed_errors() {
    let fake = Fake::start(|seen, _| match seen.path.as_str() {
        "/v1/status" => (StatusCode::OK, "{\"cluster_id\": ").into_response(),
        "/v1/members" => json_response(200, json!({"members": "nope"})),
        _ => {
            json_response(200, json!({"key":"k","value_base64":"!!","create_revision":1,"mod_revision":1,"version":1}))
        }
    })
    .await;
    let client = client(&[&fake], 3);
    for error in [
        client.status().await.unwrap_err(),
        client.members().await.unwrap_err(),
        client.get("k", Consistency::Linearizable).await.unwrap_err(),
    ] {
        assert!(matches!(error, Error::InvalidResponse { .. }), "{error:?}");
        assert_eq!(error.retry_advice(), RetryAdvice::DoNotRetry);
    }
}

#[tokio::test]
async fn the_token_is_sent_as_a_bearer_header() {
    let fake = Fake::start(|_, _| json_response(200, json!({"members": []}))).await;
    let mut config = ClientConfig::from_endpoints_str(&fake.url).unwrap();
    config.token = Some("t0k3n".into());
    Client::new(config).unwrap().members().await.unwrap();
    assert_eq!(fake.seen()[0].authorization.as_deref(), Some("Bearer t0k3n"));
    client(&[&fake], 1).members().await.unwrap();
    assert_eq!(fake.seen()[1].authorization, None);
}

#[tokio::test]
async fn list_all_follows_the_pages() {
    let fake = Fake::start(|seen, _| {
        let item = |key: &str| json!({"key": key, "value": "v", "create_revision": 1, "mod_revision": 1, "version": 1});
        match seen.query.get("after").map(String::as_str) {
            None => json_response(200, json!({"items": [item("p/a"), item("p/b")], "revision": 10, "more": true})),
            Some("p/b") => json_response(200, json!({"items": [item("p/c")], "revision": 11, "more": false})),
            Some(other) => panic!("unexpected after {other}"),
        }
    })
    .await;
    let all = client(&[&fake], 3).list_all("p/").await.unwrap();
    let keys: Vec<&str> = all.items.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["p/a", "p/b", "p/c"]);
    assert_eq!((all.revision, all.more), (10, false));
    assert!(fake.seen().iter().all(|s| s.query["prefix"] == "p/" && s.query["consistency"] == "linearizable"));
}

/// A server that keeps answering the same page would loop a naive pager forever.
#[tokio::test]
async fn list_all_refuses_a_page_that_does_not_advance() {
    let fake = Fake::start(|_, _| {
        let item = json!({"key": "p/a", "value": "v", "create_revision": 1, "mod_revision": 1, "version": 1});
        json_response(200, json!({"items": [item], "revision": 10, "more": true}))
    })
    .await;
    let error = client(&[&fake], 3).list_all("p/").await.unwrap_err();
    assert!(matches!(error, Error::InvalidResponse { .. }), "{error:?}");
    assert_eq!(fake.count(), 2);
}

#[tokio::test]
async fn cluster_calls_send_what_the_doc_says() {
    let status = json!({"cluster_id":"c1","node_id":2,"view_of":2,"leader":1,"leader_url":"http://a",
        "term":4,"commit_index":9,"applied_index":9,"revision":5,"voters":3,"warnings":[],
        "members":[{"id":1,"client_url":"http://a","peer_addr":"a:1","voter":true,"reachable":true,"matched_index":9,"lag":0}]});
    let fake = Fake::start(move |seen, n| match (seen.method.as_str(), seen.path.as_str()) {
        ("GET", "/v1/status") => json_response(200, status.clone()),
        ("GET", "/v1/health") if n < 3 => json_response(200, json!({"ok": true})),
        ("GET", "/v1/health") => error(503, "no_leader"),
        ("GET", "/v1/health/primary") => error(503, "not_primary"),
        ("DELETE", "/v1/members/3") => json_response(200, json!({"removed": 3, "warning": "2 voters left"})),
        _ => error(404, "no_route"),
    })
    .await;
    let client = client(&[&fake], 3);
    let status = client.status_of(&fake.url).await.unwrap();
    assert_eq!((status.leader, status.members.len()), (Some(1), 1));
    let removed = client.remove_member(3, true).await.unwrap();
    assert_eq!((removed.removed, removed.warning.as_deref()), (3, Some("2 voters left")));
    assert!(client.health(&fake.url).await.unwrap());
    assert!(!client.health(&fake.url).await.unwrap());
    assert!(!client.health_primary(&fake.url).await.unwrap());
    let seen = fake.seen();
    assert_eq!(seen[1].query.get("force").map(String::as_str), Some("1"));
    assert!(!seen[1].query.contains_key("request_id"));
}

/// A membership change has no request id: once it may have been delivered it is not sent
/// again, and the caller is told the outcome is unknown.
#[tokio::test]
async fn a_removal_that_timed_out_is_not_resent() {
    let fake = Fake::start(|_, _| delayed(STALL_MS, json_response(200, json!({"removed": 3})))).await;
    let error = client(&[&fake], 5).remove_member(3, false).await.unwrap_err();
    assert!(matches!(error, Error::OutcomeUnknown { request_id: None, .. }), "{error:?}");
    assert_eq!(fake.count(), 1);
}

/// A streaming body whose chunks arrive separately (with a pause between them), then ends.
fn ndjson_stream(chunks: Vec<&'static str>, then_hang: bool) -> Response {
    let stream = futures::stream::iter(chunks).then(|chunk| async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        Ok::<_, std::io::Error>(axum::body::Bytes::from_static(chunk.as_bytes()))
    });
    let stream = if then_hang { stream.chain(futures::stream::pending()).boxed() } else { stream.boxed() };
    let mut headers = HeaderMap::new();
    headers.insert("content-type", "application/x-ndjson".parse().unwrap());
    (headers, Body::from_stream(stream)).into_response()
}

/// The connection breaks mid-stream with a line split across chunks; the stream resumes
/// after the last revision it saw (progress included), drops the event the second node
/// repeats, and delivers the rest: none skipped, none repeated.
#[tokio::test]
async fn watch_resumes_after_a_break_without_gaps_or_repeats() {
    let fake = Fake::start(|seen, n| {
        assert_eq!(seen.path, "/v1/watch");
        match n {
            0 => ndjson_stream(
                vec![
                    "{\"type\":\"put\",\"key\":\"p/a\",\"val",
                    "ue\":\"1\",\"revision\":11,\"create_revision\":11,\"version\":1}\n{\"type\":\"progress\",",
                    "\"revision\":12}\n{\"type\":\"put\",\"key\":\"p/cut-off",
                ],
                false,
            ),
            _ => ndjson_stream(
                vec![
                    "{\"type\":\"put\",\"key\":\"p/a\",\"value\":\"1\",\"revision\":11,\"create_revision\":11,\"version\":1}\n",
                    "{\"type\":\"delete\",\"key\":\"p/a\",\"revision\":13}\n",
                    "{\"type\":\"put\",\"key\":\"p/b\",\"value_base64\":\"AP8=\",\"revision\":14,\"create_revision\":14,\"version\":1}\n",
                ],
                true,
            ),
        }
    })
    .await;
    let mut stream = client(&[&fake], 3).watch("p/", Some(10)).await.unwrap();
    let mut events = Vec::new();
    for _ in 0..4 {
        let event = tokio::time::timeout(Duration::from_secs(5), stream.next()).await.unwrap().unwrap().unwrap();
        events.push(event);
    }
    assert_eq!(
        events,
        [
            WatchEvent::Put { key: "p/a".into(), value: b"1".to_vec(), revision: 11, create_revision: 11, version: 1 },
            WatchEvent::Progress { revision: 12 },
            WatchEvent::Delete { key: "p/a".into(), revision: 13 },
            WatchEvent::Put { key: "p/b".into(), value: vec![0, 255], revision: 14, create_revision: 14, version: 1 },
        ]
    );
    let after: Vec<String> = fake.seen().iter().map(|s| s.query["after_revision"].clone()).collect();
    assert_eq!(after, ["10", "12"]);
    assert!(fake.seen().iter().all(|s| s.query["prefix"] == "p/"));
}

/// Without a start revision the watch reads the current one first, so even its first
/// reconnect has a resume point.
#[tokio::test]
async fn watch_from_now_starts_at_the_current_revision() {
    let fake = Fake::start(|seen, _| match seen.path.as_str() {
        "/v1/kv" => json_response(200, json!({"items": [], "revision": 42, "more": false})),
        _ => ndjson_stream(vec!["{\"type\":\"progress\",\"revision\":42}\n"], true),
    })
    .await;
    let mut stream = client(&[&fake], 3).watch("", None).await.unwrap();
    let event = tokio::time::timeout(Duration::from_secs(5), stream.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(event, WatchEvent::Progress { revision: 42 });
    let seen = fake.seen();
    assert_eq!((seen[0].query["limit"].as_str(), seen[0].query["consistency"].as_str()), ("1", "stale"));
    assert_eq!(seen[1].query["after_revision"], "42");
}

#[tokio::test]
async fn watch_reports_compaction_and_garbage() {
    let fake = Fake::start(|seen, _| match seen.query["after_revision"].as_str() {
        "1" => json_response(410, json!({"error":"compacted","message":"m","compact_revision":50})),
        _ => ndjson_stream(vec!["{\"type\":\"progress\",\"revision\":60}\nnot json\n"], true),
    })
    .await;
    let client = client(&[&fake], 3);
    let error = client.watch("", Some(1)).await.unwrap_err();
    assert!(matches!(error, Error::Compacted { compact_revision: 50 }), "{error:?}");
    let mut stream = client.watch("", Some(55)).await.unwrap();
    assert_eq!(stream.next().await.unwrap().unwrap(), WatchEvent::Progress { revision: 60 });
    let error = stream.next().await.unwrap().unwrap_err();
    assert!(matches!(error, Error::InvalidResponse { .. }), "{error:?}");
    assert!(stream.next().await.is_none());
}
