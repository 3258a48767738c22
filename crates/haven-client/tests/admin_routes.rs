//! The client's side of the HA control routes against scripted fake servers on 127.0.0.1:
//! what it sends (to which node, how often, with which body) and how it reads the answers.

use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::response::Response;
use axum::Router;
use haven_client::Client;
use haven_client::ClientConfig;
use haven_client::ConnectionEnd;
use haven_client::DraftEdit;
use haven_client::Error;
use haven_client::RecoverRequest;
use serde_json::json;
use serde_json::Value;

#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    query: Option<String>,
    body: Vec<u8>,
}

impl Seen {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
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
                let seen = Seen {
                    method: parts.method.to_string(),
                    path: parts.uri.path().to_string(),
                    query: parts.uri.query().map(str::to_string),
                    body,
                };
                let n = {
                    let mut all = recorder.lock().unwrap();
                    all.push(seen.clone());
                    all.len() - 1
                };
                script(&seen, n)
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

    fn calls(&self, method: &str, path: &str) -> usize {
        self.seen().iter().filter(|seen| seen.method == method && seen.path == path).count()
    }
}

fn json_response(status: u16, body: Value) -> Response {
    let mut response = (StatusCode::from_u16(status).unwrap(), body.to_string()).into_response();
    response.headers_mut().insert("content-type", "application/json".parse().unwrap());
    response
}

fn client(endpoints: &[&str]) -> Client {
    let mut config = ClientConfig::new(endpoints.iter().map(|e| e.to_string()).collect());
    config.request_timeout = Duration::from_millis(2000);
    config.deadline = Duration::from_secs(5);
    config.jitter_seed = Some(1);
    Client::new(config).unwrap()
}

fn status_with_members(urls: &[&str]) -> Value {
    let members: Vec<Value> = urls
        .iter()
        .enumerate()
        .map(|(index, url)| {
            json!({"id": index + 1, "client_url": url, "peer_addr": format!("127.0.0.1:{}", 9000 + index),
                   "voter": true, "reachable": true})
        })
        .collect();
    json!({"cluster_id": "c", "node_id": 1, "view_of": 1, "leader": 2, "term": 3, "commit_index": 9,
           "applied_index": 9, "revision": 4, "voters": urls.len(), "members": members})
}

/// A teardown sent to a follower is followed once to the primary the follower names, and
/// only because the cluster's status lists that URL as a member's.
#[tokio::test]
async fn teardown_follows_not_primary_once_to_a_member() {
    let primary = Fake::start(|_, _| {
        json_response(200, json!({"generation": 1, "standalone": 2, "detached": [1, 3], "cluster_id": "c"}))
    })
    .await;
    let primary_url = primary.url.clone();
    let follower = Fake::start(move |seen, _| match seen.path.as_str() {
        "/v1/status" => json_response(200, status_with_members(&["http://127.0.0.1:1", &primary_url])),
        _ => json_response(
            409,
            json!({"error": "not_primary", "message": "run teardown on the primary, node 2", "leader_url": primary_url}),
        ),
    })
    .await;
    let result = client(&[&follower.url]).teardown(true).await.unwrap();
    assert_eq!((result.generation, result.standalone, result.detached.as_slice()), (1, 2, &[1, 3][..]));
    assert_eq!(follower.calls("POST", "/v1/teardown"), 1);
    assert_eq!(follower.calls("GET", "/v1/status"), 1, "the members' keys are learned first");
    let sent = primary.seen();
    assert_eq!(sent.len(), 1, "followed once: {sent:?}");
    assert_eq!(sent[0].json(), json!({"force": true}));
    assert_eq!(sent[0].query, None, "no request_id: the route takes none");
}

#[tokio::test]
async fn teardown_does_not_follow_strangers_or_a_second_redirect() {
    let stranger = Fake::start(|_, _| json_response(200, json!({}))).await;
    let stranger_url = stranger.url.clone();
    let follower = Fake::start(move |seen, _| match seen.path.as_str() {
        "/v1/status" => json_response(200, status_with_members(&["http://127.0.0.1:1"])),
        _ => json_response(409, json!({"error": "not_primary", "message": "m", "leader_url": stranger_url})),
    })
    .await;
    let error = client(&[&follower.url]).teardown(false).await.unwrap_err();
    assert!(matches!(&error, Error::NotPrimary { leader_url: Some(url), .. } if *url == stranger.url), "{error:?}");
    assert_eq!(stranger.seen().len(), 0, "a URL no member has is not followed");

    // The primary named moved on meanwhile: its own not_primary is the answer, no loop.
    let moved = Fake::start(|_, _| {
        json_response(409, json!({"error": "not_primary", "message": "moved", "leader_url": "http://127.0.0.1:1"}))
    })
    .await;
    let moved_url = moved.url.clone();
    let follower = Fake::start(move |seen, _| match seen.path.as_str() {
        "/v1/status" => json_response(200, status_with_members(&[&moved_url])),
        _ => json_response(409, json!({"error": "not_primary", "message": "m", "leader_url": moved_url})),
    })
    .await;
    let error = client(&[&follower.url]).teardown(false).await.unwrap_err();
    assert!(matches!(&error, Error::NotPrimary { message, .. } if message == "moved"), "{error:?}");
    assert_eq!(moved.seen().len(), 1);
    assert_eq!(follower.calls("POST", "/v1/teardown"), 1);
}

/// Apply sends the base version and reads every broken rule; a stale draft is a plain
/// 409 with the server's message; "nothing to apply" is an answer, not an error.
#[tokio::test]
async fn apply_sends_the_base_version_and_reads_refusals() {
    let fake = Fake::start(|seen, n| match (seen.path.as_str(), n) {
        ("/v1/config/apply", 0) => json_response(
            422,
            json!({"error": "invalid_config", "message": "the draft breaks 2 rule(s): ...", "errors": [
                {"key": "failed_pings", "value": "50", "kind": "out-of-range", "rule": "allowed 2-20"},
                {"key": "file_sync_interval_s", "value": "1", "kind": "out-of-range", "rule": "allowed 5-3600"}]}),
        ),
        ("/v1/config/apply", 1) => {
            json_response(409, json!({"error": "stale_draft", "message": "made from version 1"}))
        }
        _ => {
            json_response(200, json!({"applied": false, "version": 2, "message": "no configuration changes to apply"}))
        }
    })
    .await;
    let client = client(&[&fake.url]);
    let Err(Error::InvalidDraft { errors, .. }) = client.apply_config(Some(1)).await else { panic!("not invalid") };
    assert_eq!(errors.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(), ["failed_pings", "file_sync_interval_s"]);
    let stale = client.apply_config(Some(1)).await.unwrap_err();
    assert_eq!(stale.code(), Some("stale_draft"));
    let nothing = client.apply_config(None).await.unwrap();
    assert!(!nothing.applied);
    let sent: Vec<Value> = fake.seen().iter().map(Seen::json).collect();
    assert_eq!(sent, [json!({"base_version": 1}), json!({"base_version": 1}), json!({})]);
    assert_eq!(fake.seen().len(), 3, "refusals are not retried");
}

/// Draft edits and discards are idempotent: retried past a node that cannot serve.
#[tokio::test]
async fn draft_edits_are_retried_and_carry_set_and_unset() {
    let down = Fake::start(|_, _| json_response(503, json!({"error": "no_leader", "message": "election"}))).await;
    let up = Fake::start(|seen, _| match seen.method.as_str() {
        "PUT" => json_response(
            200,
            json!({"version": 0, "draft": {"base_version": 0, "changes": {"failed_pings": 6}},
                                           "preview": {"valid": true, "changes": [], "restart": []}}),
        ),
        _ => json_response(200, json!({"discarded": true})),
    })
    .await;
    let client = client(&[&down.url, &up.url]);
    let edit = DraftEdit::default().set_text("failed_pings", "6").unset("hook_script");
    let view = client.edit_config_draft(&edit).await.unwrap();
    assert_eq!(view.draft.unwrap().changes["failed_pings"], json!(6));
    client.discard_config_draft().await.unwrap();
    let sent = up.seen();
    assert_eq!(sent[0].json(), json!({"set": {"failed_pings": 6}, "unset": ["hook_script"]}));
    assert_eq!(sent[1].method, "DELETE");
    assert!(sent.iter().all(|seen| seen.query.is_none()), "no request_id: these routes take none");
    assert!(matches!(client.edit_config_draft(&DraftEdit::default()).await, Err(Error::InvalidRequest(_))));
}

/// Recovery and restart act on the node that receives them: never sent to another endpoint.
#[tokio::test]
async fn recover_and_restart_go_to_the_named_node_only() {
    let refusing = Fake::start(|seen, _| match seen.path.as_str() {
        "/v1/recover" => json_response(409, json!({"error": "recover_refused", "message": "a majority is reachable"})),
        _ => json_response(503, json!({"error": "unavailable", "message": "shutting down"})),
    })
    .await;
    let other = Fake::start(|_, _| json_response(200, json!({"restarting": 2}))).await;
    let client = client(&[&refusing.url, &other.url]);
    let request = RecoverRequest { confirm_down: vec![1, 3], standalone: false, dry_run: true };
    let error = client.recover(&refusing.url, &request).await.unwrap_err();
    assert_eq!(error.code(), Some("recover_refused"));
    assert_eq!(refusing.seen()[0].json(), json!({"confirm_down": [1, 3], "standalone": false, "dry_run": true}));
    let error = client.restart_node(&refusing.url, 1).await.unwrap_err();
    assert_eq!(error.code(), Some("unavailable"), "one answer, not retried elsewhere");
    assert!(other.seen().is_empty(), "the other endpoint was never asked");
    assert_eq!(client.restart_node(&other.url, 2).await.unwrap().restarting, 2);
    let sent = other.seen();
    assert_eq!(sent[0].json(), json!({"node_id": 2}), "the node is named, so no other node restarts");
}

/// A held connection ends when the serving side lets go of it, and tells an error line
/// (which says nothing about the process) from a close.
#[tokio::test]
async fn held_connections_end_when_the_server_lets_go() {
    fn stream(lines: &'static [&'static str], hold_ms: u64) -> Response {
        let body = futures::stream::unfold(0usize, move |index| async move {
            if index == lines.len() {
                tokio::time::sleep(Duration::from_millis(hold_ms)).await;
                return None;
            }
            Some((Ok::<_, std::convert::Infallible>(format!("{}\n", lines[index])), index + 1))
        });
        Response::new(Body::from_stream(body))
    }
    let closing = Fake::start(|_, _| stream(&[r#"{"type":"progress","revision":1}"#], 300)).await;
    let client = client(&[&closing.url]);
    let held = client.hold_connection(&closing.url).await.unwrap();
    let query = closing.seen()[0].query.clone().unwrap();
    assert!(query.starts_with("prefix=%01"), "a prefix no key can have: {query}");
    let ended = tokio::time::timeout(Duration::from_secs(5), held.closed()).await.expect("ends");
    assert_eq!(ended, ConnectionEnd::Closed);

    let erroring =
        Fake::start(|_, _| stream(&[r#"{"type":"error","error":"unauthorized","message":"m"}"#], 5000)).await;
    let held = client.hold_connection(&erroring.url).await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(2), held.closed()).await.expect("ends at the error line");
    assert!(matches!(ended, ConnectionEnd::ErrorLine(line) if line.contains("unauthorized")));
}

/// The audit log is read page by page until its last record.
#[tokio::test]
async fn the_whole_audit_log_is_read_page_by_page() {
    let fake = Fake::start(|seen, _| {
        let since: u64 = seen
            .query
            .as_deref()
            .and_then(|q| q.split('&').find_map(|p| p.strip_prefix("since=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let records: Vec<Value> = (since + 1..=(since + 2).min(5))
            .map(|seq| {
                json!({"seq": seq, "at_ms": 1000 * seq, "actor": "a", "node": 1, "action": "x",
                              "summary": "s", "changes": []})
            })
            .collect();
        json_response(200, json!({"records": records, "last_seq": 5}))
    })
    .await;
    let page = client(&[&fake.url]).audit_all(1).await.unwrap();
    assert_eq!(page.records.iter().map(|r| r.seq).collect::<Vec<_>>(), [2, 3, 4, 5]);
    assert_eq!(fake.seen().len(), 2, "since=1 then since=3; 5 is the last");
}
