//! How the benchmark talks to each system: one [`Connection`] type, two request shapes.
//!
//! Both systems are driven over plain HTTP/1.1 with keep-alive by the same `reqwest`
//! client configuration; only the request shapes differ:
//!
//! - Haven: `PUT /v1/kv/{key}` with the raw value as body, `GET /v1/kv/{key}`
//!   (linearizable by default), `GET /v1/status`, `GET /v1/health`.
//! - etcd: its gRPC-JSON gateway, `POST {prefix}/kv/put` and `POST {prefix}/kv/range`
//!   with base64 key and value (range is linearizable unless `serializable` is set),
//!   `POST {prefix}/maintenance/status`, `GET /health`.
//!
//! Every answer is checked; anything unexpected is an error the caller counts, never a panic.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde_json::Value;

/// Which wire protocol a connection speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Api {
    /// Haven's HTTP API under `/v1/`.
    Haven,
    /// etcd's JSON gateway under `prefix` (`/v3` or `/v3beta`, whichever the version serves).
    EtcdGateway { prefix: String },
}

impl Api {
    /// How the report names the API.
    pub fn describe(&self) -> String {
        match self {
            Api::Haven => "HTTP/JSON API: `PUT /v1/kv/{key}` (raw body), `GET /v1/kv/{key}` (linearizable)".into(),
            Api::EtcdGateway { prefix } => format!(
                "JSON gateway: `POST {prefix}/kv/put`, `POST {prefix}/kv/range` (linearizable), base64 key and value"
            ),
        }
    }
}

/// One member's view of the cluster, the same for both systems.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberStatus {
    /// The answering member's own id (etcd member id or Haven node id).
    pub self_id: u64,
    /// The leader it knows, if any.
    pub leader: Option<u64>,
    /// Its Raft term.
    pub term: u64,
    /// Voting members, where the answer says (Haven does, etcd's status does not).
    pub voters: Option<u64>,
}

/// Keys and values of the workload, pre-encoded for both APIs so encoding costs the same
/// little for each system.
pub struct Workload {
    /// The key strings (all `KEY_BYTES` long, ASCII).
    pub keys: Vec<String>,
    keys_base64: Vec<String>,
    /// Values (all `VALUE_BYTES` long, ASCII so Haven answers them as JSON strings).
    pub values: Vec<Vec<u8>>,
    values_base64: Vec<String>,
}

/// Key length the issue asks for.
pub const KEY_BYTES: usize = 24;
/// Value length the issue asks for.
pub const VALUE_BYTES: usize = 256;
/// Distinct values cycled through; enough that no two neighbouring writes carry the same bytes.
const VALUE_VARIANTS: usize = 64;
/// Key prefix; with a 14-digit index it makes a 24-byte key.
const KEY_PREFIX: &str = "bench/key/";

impl Workload {
    /// `key_count` keys and a few random values; `seed` makes the bytes reproducible.
    pub fn new(key_count: usize, seed: u64) -> Workload {
        use rand::Rng as _;
        use rand::SeedableRng as _;
        let digits = KEY_BYTES - KEY_PREFIX.len();
        let keys: Vec<String> = (0..key_count).map(|i| format!("{KEY_PREFIX}{i:0digits$}")).collect();
        debug_assert!(keys.iter().all(|key| key.len() == KEY_BYTES));
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        let values: Vec<Vec<u8>> = (0..VALUE_VARIANTS)
            .map(|_| (0..VALUE_BYTES).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())]).collect())
            .collect();
        Workload {
            keys_base64: keys.iter().map(|key| BASE64.encode(key)).collect(),
            values_base64: values.iter().map(|value| BASE64.encode(value)).collect(),
            keys,
            values,
        }
    }

    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    pub fn value_count(&self) -> usize {
        self.values.len()
    }
}

/// A pooled HTTP client plus the base URLs of one cluster's members.
pub struct Connection {
    pub api: Api,
    /// Base URLs (`http://127.0.0.1:PORT`), one per member, in member order.
    pub endpoints: Vec<String>,
    client: reqwest::Client,
}

/// The client configuration shared by both systems: HTTP/1.1 keep-alive, a pool as large
/// as the concurrency, Nagle off, and a per-request timeout.
fn client_builder(pool: usize, timeout: Duration) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .http1_only()
        .no_proxy()
        .pool_max_idle_per_host(pool)
        .tcp_nodelay(true)
        .connect_timeout(timeout)
        .timeout(timeout)
}

/// Everything Haven-specific about reaching its client port: base URLs, default headers,
/// client options. `token` is sent as `Authorization: Bearer` when the cluster has one
/// (builds with authentication write an admin token at bootstrap). TLS with pinned server
/// fingerprints goes here too once the benchmark drives Haven over TLS.
pub fn haven_connection(
    client_urls: &[String],
    token: Option<&str>,
    pool: usize,
    timeout: Duration,
) -> anyhow::Result<Connection> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = token {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    let client = client_builder(pool, timeout).default_headers(headers).build()?;
    Ok(Connection { api: Api::Haven, endpoints: client_urls.to_vec(), client })
}

/// A connection to etcd's JSON gateway under `prefix`.
pub fn etcd_connection(
    client_urls: &[String],
    prefix: &str,
    pool: usize,
    timeout: Duration,
) -> anyhow::Result<Connection> {
    let client = client_builder(pool, timeout).build()?;
    Ok(Connection { api: Api::EtcdGateway { prefix: prefix.to_string() }, endpoints: client_urls.to_vec(), client })
}

/// Why an operation did not succeed (only counted; the kind helps when reading a log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpError {
    /// Connection refused or reset, timeout, or an unreadable body.
    Transport,
    /// An HTTP status other than 200.
    Status(u16),
    /// A 200 whose body is not what a success looks like.
    Body,
}

impl Connection {
    /// Writes value `value` to key `key` (indexes into `workload`) through member `endpoint`.
    pub async fn put(&self, workload: &Workload, endpoint: usize, key: usize, value: usize) -> Result<(), OpError> {
        let base = &self.endpoints[endpoint % self.endpoints.len()];
        let request = match &self.api {
            Api::Haven => self
                .client
                .put(format!("{base}/v1/kv/{}", workload.keys[key]))
                .body(workload.values[value % workload.value_count()].clone()),
            Api::EtcdGateway { prefix } => self.client.post(format!("{base}{prefix}/kv/put")).body(format!(
                r#"{{"key":"{}","value":"{}"}}"#,
                workload.keys_base64[key],
                workload.values_base64[value % workload.value_count()]
            )),
        };
        let body = send(request).await?;
        let ok = match &self.api {
            Api::Haven => body.get("revision").and_then(Value::as_u64).is_some(),
            Api::EtcdGateway { .. } => body.get("header").and_then(|h| h.get("revision")).is_some(),
        };
        if ok {
            Ok(())
        } else {
            Err(OpError::Body)
        }
    }

    /// Linearizable read of key `key` through member `endpoint`; the key must exist.
    pub async fn get(&self, workload: &Workload, endpoint: usize, key: usize) -> Result<(), OpError> {
        let base = &self.endpoints[endpoint % self.endpoints.len()];
        let request = match &self.api {
            Api::Haven => self.client.get(format!("{base}/v1/kv/{}", workload.keys[key])),
            Api::EtcdGateway { prefix } => self
                .client
                .post(format!("{base}{prefix}/kv/range"))
                .body(format!(r#"{{"key":"{}"}}"#, workload.keys_base64[key])),
        };
        let body = send(request).await?;
        let ok = match &self.api {
            Api::Haven => body.get("mod_revision").and_then(Value::as_u64).is_some(),
            Api::EtcdGateway { .. } => body.get("kvs").and_then(Value::as_array).is_some_and(|kvs| kvs.len() == 1),
        };
        if ok {
            Ok(())
        } else {
            Err(OpError::Body)
        }
    }

    /// The member's view of leader and term; `None` when it does not answer properly.
    pub async fn status(&self, endpoint: usize) -> Option<MemberStatus> {
        let base = &self.endpoints[endpoint];
        match &self.api {
            Api::Haven => {
                let body = send(self.client.get(format!("{base}/v1/status"))).await.ok()?;
                Some(MemberStatus {
                    self_id: body.get("node_id")?.as_u64()?,
                    leader: body.get("leader").and_then(Value::as_u64),
                    term: body.get("term").and_then(Value::as_u64).unwrap_or(0),
                    voters: body.get("voters").and_then(Value::as_u64),
                })
            }
            Api::EtcdGateway { prefix } => {
                let body =
                    send(self.client.post(format!("{base}{prefix}/maintenance/status")).body("{}")).await.ok()?;
                let header = body.get("header")?;
                // The gateway encodes 64-bit integers as strings; 0 means "no leader".
                Some(MemberStatus {
                    self_id: json_u64(header.get("member_id")?)?,
                    leader: body.get("leader").and_then(json_u64).filter(|id| *id != 0),
                    term: header.get("raft_term").and_then(json_u64).unwrap_or(0),
                    voters: None,
                })
            }
        }
    }

    /// Whether the member says it serves (has a leader and is usable).
    pub async fn healthy(&self, endpoint: usize) -> bool {
        let base = &self.endpoints[endpoint];
        match &self.api {
            Api::Haven => send(self.client.get(format!("{base}/v1/health"))).await.is_ok(),
            Api::EtcdGateway { .. } => match send(self.client.get(format!("{base}/health"))).await {
                Ok(body) => body.get("health").and_then(Value::as_str) == Some("true"),
                Err(_) => false,
            },
        }
    }
}

/// Sends a request and reads a 200 answer as JSON.
async fn send(request: reqwest::RequestBuilder) -> Result<Value, OpError> {
    let response = request.send().await.map_err(|_| OpError::Transport)?;
    let status = response.status();
    let bytes = response.bytes().await.map_err(|_| OpError::Transport)?;
    if status != reqwest::StatusCode::OK {
        return Err(OpError::Status(status.as_u16()));
    }
    serde_json::from_slice(&bytes).map_err(|_| OpError::Body)
}

/// A JSON number or a decimal string (how grpc-gateway writes 64-bit integers).
fn json_u64(value: &Value) -> Option<u64> {
    value.as_u64().or_else(|| value.as_str()?.parse().ok())
}

/// Finds which gateway prefix an etcd member serves: `/v3` (3.4 and later) or `/v3beta`.
pub async fn probe_etcd_prefix(client_url: &str) -> Option<String> {
    let client = client_builder(1, Duration::from_secs(2)).build().ok()?;
    for prefix in ["/v3", "/v3beta"] {
        let request = client.post(format!("{client_url}{prefix}/kv/range")).body(r#"{"key":"AA=="}"#);
        if send(request).await.is_ok() {
            return Some(prefix.to_string());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_have_the_asked_sizes() {
        let workload = Workload::new(10_000, 1);
        assert_eq!(workload.key_count(), 10_000);
        assert!(workload.keys.iter().all(|key| key.len() == KEY_BYTES));
        assert!(workload.values.iter().all(|value| value.len() == VALUE_BYTES));
        assert_eq!(BASE64.decode(&workload.keys_base64[7]).unwrap(), workload.keys[7].as_bytes());
    }

    #[test]
    fn gateway_integers_parse_from_strings_and_numbers() {
        assert_eq!(json_u64(&serde_json::json!("18446744073709551615")), Some(u64::MAX));
        assert_eq!(json_u64(&serde_json::json!(7)), Some(7));
        assert_eq!(json_u64(&serde_json::json!("x")), None);
    }
}
