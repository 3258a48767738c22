//! Plain HTTP helpers for the harness's own questions (status, listings). Clients under
//! test do their own requests in `workload.rs`, since the history needs exact outcomes.

use std::time::Duration;

use serde_json::Value;

use crate::config::CLIENT_CONNECT_TIMEOUT;
use crate::config::STATUS_TIMEOUT;

/// Most listing pages the harness reads from one node: 1000 keys a page, far more than a
/// run writes; a node that keeps answering `more` beyond it is reported, not followed.
const LIST_PAGES_MAX: usize = 10_000;

/// Largest page the API serves (`LIST_PAGE_MAX`).
const LIST_PAGE_KEYS: usize = 1000;

/// How the harness reaches the nodes: TLS trusting exactly their pinned key fingerprints,
/// and the cluster's first admin token.
#[derive(Clone)]
pub struct Access {
    pub tls: rustls::ClientConfig,
    pub token: String,
}

/// An HTTPS client for the nodes that never uses a proxy from the environment (traffic stays
/// on this machine), sends the admin token, and gives up after `timeout`.
pub fn http_client(access: &Access, timeout: Option<Duration>) -> anyhow::Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    let bearer = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", access.token))
        .map_err(|_| anyhow::anyhow!("the admin token is not a valid header value"))?;
    headers.insert(reqwest::header::AUTHORIZATION, bearer);
    let mut builder = reqwest::Client::builder()
        .use_preconfigured_tls(access.tls.clone())
        .default_headers(headers)
        .no_proxy()
        .connect_timeout(CLIENT_CONNECT_TIMEOUT)
        .pool_max_idle_per_host(2);
    if let Some(timeout) = timeout {
        builder = builder.timeout(timeout);
    }
    Ok(builder.build()?)
}

/// Attempts at creating a client's token before the run gives up: a fresh cluster answers
/// the first; a few more cover a leader change right after it formed.
const TOKEN_CREATE_ATTEMPTS: usize = 5;

/// The pause between those attempts: longer than an election of the fast profile (about
/// 300 ms), so the next attempt finds the new leader.
const TOKEN_CREATE_PAUSE: Duration = Duration::from_millis(500);

/// Creates a token of `role` named `name` with the admin token, through the nodes in turn;
/// returns the token text.
pub async fn create_token(access: &Access, urls: &[String], name: &str, role: &str) -> anyhow::Result<String> {
    let http = http_client(access, Some(STATUS_TIMEOUT * 5))?;
    let mut last = String::from("no node answered");
    for attempt in 0..TOKEN_CREATE_ATTEMPTS {
        let url = &urls[attempt % urls.len()];
        let answer =
            http.post(format!("{url}/v1/tokens")).json(&serde_json::json!({ "name": name, "role": role })).send().await;
        match answer {
            Ok(response) if response.status().is_success() => {
                let body: Value = response.json().await?;
                if let Some(token) = body["token"].as_str() {
                    return Ok(token.to_string());
                }
                last = format!("{url} answered without a token: {body}");
            }
            Ok(response) => last = format!("{url} answered {}", response.status()),
            Err(error) => last = format!("{url}: {error}"),
        }
        tokio::time::sleep(TOKEN_CREATE_PAUSE).await;
    }
    anyhow::bail!("cannot create token {name}: {last}")
}

/// `GET url` as JSON with the status code; `None` on any transport or decoding failure.
pub async fn get_json(http: &reqwest::Client, url: &str, timeout: Duration) -> Option<(u16, Value)> {
    let response = http.get(url).timeout(timeout).send().await.ok()?;
    let status = response.status().as_u16();
    let body = response.json::<Value>().await.ok()?;
    Some((status, body))
}

/// A node's `/v1/status`, or `None` when it does not answer in time.
pub async fn status(http: &reqwest::Client, base: &str) -> Option<Value> {
    match get_json(http, &format!("{base}/v1/status"), STATUS_TIMEOUT).await {
        Some((200, body)) => Some(body),
        _ => None,
    }
}

/// Every `(key, value)` under `prefix` on node `base`, page by page. `stale` reads the
/// node's local state (to compare replicas); otherwise each page is linearizable.
pub async fn list_all(
    http: &reqwest::Client,
    base: &str,
    prefix: &str,
    stale: bool,
    timeout: Duration,
) -> Result<Vec<(String, String)>, String> {
    let mut items = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..LIST_PAGES_MAX {
        let mut url = reqwest::Url::parse(&format!("{base}/v1/kv")).map_err(|e| e.to_string())?;
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("prefix", prefix).append_pair("limit", &LIST_PAGE_KEYS.to_string());
            if stale {
                query.append_pair("consistency", "stale");
            }
            if let Some(after) = &after {
                query.append_pair("after", after);
            }
        }
        let (code, body) = get_json(http, url.as_str(), timeout).await.ok_or_else(|| format!("{base}: no answer"))?;
        if code != 200 {
            return Err(format!("{base}: listing answered {code}: {body}"));
        }
        let page = body["items"].as_array().cloned().unwrap_or_default();
        for item in &page {
            let key = item["key"].as_str().ok_or_else(|| format!("{base}: listing item without key: {item}"))?;
            let value = match (item["value"].as_str(), item["value_base64"].as_str()) {
                (Some(text), _) => text.to_string(),
                (None, Some(base64)) => format!("base64:{base64}"),
                (None, None) => return Err(format!("{base}: listing item without value: {item}")),
            };
            items.push((key.to_string(), value));
        }
        if body["more"] != true {
            return Ok(items);
        }
        after = items.last().map(|(key, _)| key.clone());
        if after.is_none() {
            return Err(format!("{base}: listing says more but returned nothing"));
        }
    }
    Err(format!("{base}: listing still had more after {LIST_PAGES_MAX} pages"))
}
