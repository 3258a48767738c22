//! The JSON documents of `docs/http-api.md`, as Rust types.
//!
//! Values travel as `"value"` (when UTF-8) or `"value_base64"`; here they are always bytes,
//! decoded once at parse time so a malformed value is an error at the boundary rather than
//! a surprise later. Serializing a type gives back the server's shape, which is what the
//! CLI prints with `--json`.

use base64::engine::general_purpose::GeneralPurpose;
use base64::engine::general_purpose::GeneralPurposeConfig;
use base64::engine::DecodePaddingMode;
use std::collections::BTreeMap;

use base64::Engine;
use serde::Deserialize;
use serde::Deserializer;
use serde::Serialize;

/// Standard alphabet; padding optional on input (servers differ), present on output.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// How a read is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Consistency {
    /// Confirmed with the leader: sees every write acknowledged before the read started.
    #[default]
    Linearizable,
    /// Served by whichever node answers from its own state: may be behind, but works
    /// without a leader.
    Stale,
}

impl Consistency {
    /// The value of the `consistency` query parameter.
    pub fn as_query(self) -> &'static str {
        match self {
            Consistency::Linearizable => "linearizable",
            Consistency::Stale => "stale",
        }
    }
}

/// Answer to `PUT /v1/kv/{key}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutResult {
    pub key: String,
    /// The cluster revision this write created.
    pub revision: u64,
    /// The key's mod_revision before this write, 0 if it was absent.
    pub prev_mod_revision: u64,
    /// The `Haven-Ack` header: which leader acknowledged the write, as which log entry.
    /// Not part of the JSON body (so not serialized).
    #[serde(skip)]
    pub ack: Option<Ack>,
}

/// Answer to `DELETE /v1/kv/{key}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteResult {
    pub key: String,
    /// The new cluster revision, or the current one when nothing was deleted.
    pub revision: u64,
    /// False when the key was already absent.
    pub deleted: bool,
    /// The `Haven-Ack` header (see [`PutResult::ack`]).
    #[serde(skip)]
    pub ack: Option<Ack>,
}

/// Response header of the KV writes naming the acknowledging leader and log entry.
pub const HEADER_ACK: &str = haven_core::ack::ACK_HEADER;

/// The acknowledgement stamp of a committed write (defined once, in `haven_core::ack`).
pub use haven_core::ack::AckStamp as Ack;

/// The stamp in an answer's headers, when there is a well-formed one.
pub(crate) fn ack_from_headers(headers: &reqwest::header::HeaderMap) -> Option<Ack> {
    headers.get(HEADER_ACK).and_then(|value| value.to_str().ok()).and_then(|text| Ack::parse(text).ok())
}

/// One key with its value and revisions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "KvEntryWire", into = "KvEntryWire")]
pub struct KvEntry {
    pub key: String,
    pub value: Vec<u8>,
    /// Revision of the write that created the key (since its last deletion).
    pub create_revision: u64,
    /// Revision of the last write to the key; the `prev_revision` for a compare-and-set.
    pub mod_revision: u64,
    /// Writes to the key since it was created.
    pub version: u64,
    /// Cluster revision the read saw; given by single-key reads, not by list items.
    pub revision: Option<u64>,
}

impl KvEntry {
    /// The value as text, when it is UTF-8.
    pub fn value_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.value).ok()
    }
}

#[derive(Clone, Serialize, Deserialize)]
struct KvEntryWire {
    key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value_base64: Option<String>,
    create_revision: u64,
    mod_revision: u64,
    version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    revision: Option<u64>,
}

impl TryFrom<KvEntryWire> for KvEntry {
    type Error = String;

    fn try_from(wire: KvEntryWire) -> Result<Self, String> {
        let value = decode_value(&wire.key, wire.value, wire.value_base64)?;
        Ok(KvEntry {
            key: wire.key,
            value,
            create_revision: wire.create_revision,
            mod_revision: wire.mod_revision,
            version: wire.version,
            revision: wire.revision,
        })
    }
}

impl From<KvEntry> for KvEntryWire {
    fn from(entry: KvEntry) -> Self {
        let (value, value_base64) = encode_value(entry.value);
        KvEntryWire {
            key: entry.key,
            value,
            value_base64,
            create_revision: entry.create_revision,
            mod_revision: entry.mod_revision,
            version: entry.version,
            revision: entry.revision,
        }
    }
}

/// Exactly one of the two forms must be present.
fn decode_value(key: &str, value: Option<String>, value_base64: Option<String>) -> Result<Vec<u8>, String> {
    match (value, value_base64) {
        (Some(text), None) => Ok(text.into_bytes()),
        (None, Some(encoded)) => BASE64
            .decode(encoded.as_bytes())
            .map_err(|error| format!("value_base64 of key {key:?} is not base64: {error}")),
        (Some(_), Some(_)) => Err(format!("key {key:?} has both value and value_base64")),
        (None, None) => Err(format!("key {key:?} has neither value nor value_base64")),
    }
}

/// UTF-8 values travel as text so curl users can read them.
fn encode_value(bytes: Vec<u8>) -> (Option<String>, Option<String>) {
    match String::from_utf8(bytes) {
        Ok(text) => (Some(text), None),
        Err(error) => (None, Some(BASE64.encode(error.into_bytes()))),
    }
}

/// One page of `GET /v1/kv?prefix=...`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListPage {
    pub items: Vec<KvEntry>,
    /// The cluster revision the page was read at.
    pub revision: u64,
    /// More keys follow; ask again with `after` = the last key of this page.
    pub more: bool,
}

/// One line of `GET /v1/watch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "WatchEventWire", into = "WatchEventWire")]
pub enum WatchEvent {
    /// A key was created or changed.
    Put { key: String, value: Vec<u8>, revision: u64, create_revision: u64, version: u64 },
    /// A key was deleted.
    Delete { key: String, revision: u64 },
    /// Every event up to `revision` has been sent: a resume point even when nothing under
    /// the watched prefix changes.
    Progress { revision: u64 },
}

impl WatchEvent {
    /// The revision of the event (for progress: the revision everything up to was sent).
    pub fn revision(&self) -> u64 {
        match self {
            WatchEvent::Put { revision, .. }
            | WatchEvent::Delete { revision, .. }
            | WatchEvent::Progress { revision } => *revision,
        }
    }
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum WatchEventWire {
    Put {
        key: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        value: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        value_base64: Option<String>,
        revision: u64,
        create_revision: u64,
        version: u64,
    },
    Delete {
        key: String,
        revision: u64,
    },
    Progress {
        revision: u64,
    },
}

impl TryFrom<WatchEventWire> for WatchEvent {
    type Error = String;

    fn try_from(wire: WatchEventWire) -> Result<Self, String> {
        Ok(match wire {
            WatchEventWire::Put { key, value, value_base64, revision, create_revision, version } => {
                let value = decode_value(&key, value, value_base64)?;
                WatchEvent::Put { key, value, revision, create_revision, version }
            }
            WatchEventWire::Delete { key, revision } => WatchEvent::Delete { key, revision },
            WatchEventWire::Progress { revision } => WatchEvent::Progress { revision },
        })
    }
}

impl From<WatchEvent> for WatchEventWire {
    fn from(event: WatchEvent) -> Self {
        match event {
            WatchEvent::Put { key, value, revision, create_revision, version } => {
                let (value, value_base64) = encode_value(value);
                WatchEventWire::Put { key, value, value_base64, revision, create_revision, version }
            }
            WatchEvent::Delete { key, revision } => WatchEventWire::Delete { key, revision },
            WatchEvent::Progress { revision } => WatchEventWire::Progress { revision },
        }
    }
}

/// One member of the cluster as the answering node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: u64,
    pub client_url: String,
    pub peer_addr: String,
    /// The member's TLS key fingerprint (absent on `--insecure-dev` clusters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// False for a learner (a non-voting replica).
    pub voter: bool,
    /// Whether the answering node hears from it; `None` when it cannot tell.
    #[serde(default)]
    pub reachable: Option<bool>,
    /// Last log index known to be replicated to it (known on the leader).
    #[serde(default)]
    pub matched_index: Option<u64>,
    /// Log entries it is behind the leader's commit (known on the leader).
    #[serde(default)]
    pub lag: Option<u64>,
    /// Fields beyond `docs/http-api.md` (e.g. `last_error`), kept so `--json` prints
    /// everything the server said.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// Answer to `GET /v1/status`: the cluster as one node (`view_of`) sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// `None` on a node that has not joined or formed a cluster yet.
    #[serde(default, deserialize_with = "optional_string_or_number")]
    pub cluster_id: Option<String>,
    pub node_id: u64,
    pub view_of: u64,
    pub leader: Option<u64>,
    #[serde(default)]
    pub leader_url: Option<String>,
    pub term: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub revision: u64,
    pub voters: u64,
    #[serde(default)]
    pub warnings: Vec<String>,
    #[serde(default)]
    pub members: Vec<Member>,
    /// Fields beyond `docs/http-api.md` (e.g. `state`, `leader_has_quorum`), kept so
    /// `--json` prints everything the server said.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// Answer to `GET /v1/members`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Members {
    pub members: Vec<Member>,
}

/// Answer to `DELETE /v1/members/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoveMemberResult {
    pub removed: u64,
    /// Set when the removal went ahead despite a risk (e.g. with `force`).
    #[serde(default)]
    pub warning: Option<String>,
}

/// One token as `GET /v1/tokens` lists it: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    /// 16 hex digits: what `revoke_token` takes.
    pub id: String,
    pub name: String,
    /// `admin`, `operator`, `reader` or `join`.
    pub role: String,
    /// Creation time, ms since the Unix epoch (the leader's clock).
    pub created_ms: u64,
    /// `None`: the token does not expire.
    #[serde(default)]
    pub expires_ms: Option<u64>,
    /// Expired by the answering node's clock.
    #[serde(default)]
    pub expired: bool,
    /// A join token that has admitted its node.
    #[serde(default)]
    pub used: bool,
    #[serde(default)]
    pub used_by_node: Option<u64>,
}

/// Answer to `GET /v1/tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenList {
    pub tokens: Vec<TokenInfo>,
}

/// Answer to `POST /v1/tokens`: the only time the secret is shown. `Debug` redacts it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedToken {
    /// `hvn_<id>_<secret>`: hand it over now, it cannot be read again.
    pub token: String,
    pub id: String,
    pub name: String,
    pub role: String,
    pub created_ms: u64,
    #[serde(default)]
    pub expires_ms: Option<u64>,
}

impl std::fmt::Debug for CreatedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedToken")
            .field("token", &"<redacted>")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("role", &self.role)
            .field("created_ms", &self.created_ms)
            .field("expires_ms", &self.expires_ms)
            .finish()
    }
}

/// Answer to `DELETE /v1/tokens/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokedToken {
    pub id: String,
    pub revoked: bool,
}

/// The doc leaves the cluster id's JSON type open; accept a string, a number or null.
fn optional_string_or_number<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Id {
        Text(String),
        Number(u64),
    }
    Ok(Option::<Id>::deserialize(deserializer)?.map(|id| match id {
        Id::Text(text) => text,
        Id::Number(number) => number.to_string(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_stamps_parse_from_the_header_and_back() {
        let ack = Ack::parse("node=2 term=7 index=1234 mono_ns=5678").unwrap();
        assert_eq!(ack, Ack { node: 2, term: 7, index: 1234, mono_ns: 5678 });
        assert_eq!(Ack::parse(&ack.to_string()).ok(), Some(ack));
        assert_eq!(Ack::parse("mono_ns=5678 index=1234  term=7 node=2").ok(), Some(ack));
        for bad in [
            "",
            "node=2 term=7 index=1234",
            "node=2 term=7 index=1234 mono_ns=x",
            "node=2 node=3 term=7 index=1 mono_ns=1",
            "node=2 term=7 index=1 mono_ns=1 extra=1",
            "node 2",
        ] {
            assert_eq!(Ack::parse(bad).ok(), None, "{bad:?}");
        }
        // The body never carries the stamp.
        let put: PutResult = serde_json::from_str(r#"{"key":"k","revision":3,"prev_mod_revision":0}"#).unwrap();
        assert_eq!(put.ack, None);
        let with_ack = PutResult { ack: Some(ack), ..put.clone() };
        assert_eq!(serde_json::to_value(&with_ack).unwrap(), serde_json::to_value(&put).unwrap());
    }

    #[test]
    fn entries_decode_text_and_base64_values() {
        let text: KvEntry = serde_json::from_str(
            r#"{"key":"a","value":"hi","create_revision":1,"mod_revision":2,"version":3,"revision":4}"#,
        )
        .unwrap();
        assert_eq!((text.value.as_slice(), text.revision), (&b"hi"[..], Some(4)));
        let binary: KvEntry = serde_json::from_str(
            r#"{"key":"b","value_base64":"/wA=","create_revision":1,"mod_revision":1,"version":1}"#,
        )
        .unwrap();
        assert_eq!(binary.value, [0xff, 0x00]);
        assert_eq!(binary.value_str(), None);
        // Unpadded base64 is accepted too.
        let unpadded: KvEntry = serde_json::from_str(
            r#"{"key":"b","value_base64":"/wA","create_revision":1,"mod_revision":1,"version":1}"#,
        )
        .unwrap();
        assert_eq!(unpadded.value, [0xff, 0x00]);
    }

    #[test]
    fn entries_round_trip_to_the_server_shape() {
        let binary = KvEntry {
            key: "k".into(),
            value: vec![0xff],
            create_revision: 1,
            mod_revision: 2,
            version: 1,
            revision: None,
        };
        let json = serde_json::to_value(&binary).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"key":"k","value_base64":"/w==","create_revision":1,"mod_revision":2,"version":1})
        );
        assert_eq!(serde_json::from_value::<KvEntry>(json).unwrap(), binary);
    }

    #[test]
    fn malformed_entries_are_errors_not_panics() {
        for body in [
            r#"{"key":"a","create_revision":1,"mod_revision":1,"version":1}"#,
            r#"{"key":"a","value":"x","value_base64":"eA==","create_revision":1,"mod_revision":1,"version":1}"#,
            r#"{"key":"a","value_base64":"***","create_revision":1,"mod_revision":1,"version":1}"#,
            r#"{"key":"a","value":"x","create_revision":-1,"mod_revision":1,"version":1}"#,
            r#"{"key":"a","value":"x"}"#,
        ] {
            assert!(serde_json::from_str::<KvEntry>(body).is_err(), "{body}");
        }
    }

    #[test]
    fn watch_events_parse_every_type() {
        let put: WatchEvent = serde_json::from_str(
            r#"{"type":"put","key":"a","value":"v","revision":5,"create_revision":5,"version":1}"#,
        )
        .unwrap();
        assert_eq!(
            put,
            WatchEvent::Put { key: "a".into(), value: b"v".to_vec(), revision: 5, create_revision: 5, version: 1 }
        );
        let delete: WatchEvent = serde_json::from_str(r#"{"type":"delete","key":"a","revision":6}"#).unwrap();
        assert_eq!(delete.revision(), 6);
        let progress: WatchEvent = serde_json::from_str(r#"{"type":"progress","revision":9}"#).unwrap();
        assert_eq!(progress, WatchEvent::Progress { revision: 9 });
        assert!(serde_json::from_str::<WatchEvent>(r#"{"type":"rename","revision":9}"#).is_err());
        assert_eq!(
            serde_json::to_string(&put).unwrap(),
            r#"{"type":"put","key":"a","value":"v","revision":5,"create_revision":5,"version":1}"#
        );
    }

    #[test]
    fn status_accepts_a_string_or_numeric_cluster_id_and_a_null_leader() {
        let body = r#"{"cluster_id":7,"node_id":1,"view_of":1,"leader":null,"leader_url":null,"term":3,
            "commit_index":10,"applied_index":10,"revision":4,"voters":3,"warnings":["w"],
            "members":[{"id":1,"client_url":"http://a","peer_addr":"a:1","voter":true,"reachable":true,
            "matched_index":10,"lag":0}]}"#;
        let status: Status = serde_json::from_str(body).unwrap();
        assert_eq!((status.cluster_id.as_deref(), status.leader), (Some("7"), None));
        assert_eq!(status.members[0].lag, Some(0));
        let named: Status = serde_json::from_str(&body.replace("\"cluster_id\":7", "\"cluster_id\":\"c-1\"")).unwrap();
        assert_eq!(named.cluster_id.as_deref(), Some("c-1"));
        let fresh: Status = serde_json::from_str(&body.replace("\"cluster_id\":7", "\"cluster_id\":null")).unwrap();
        assert_eq!(fresh.cluster_id, None);
        let absent: Status = serde_json::from_str(&body.replace("\"cluster_id\":7,", "")).unwrap();
        assert_eq!(absent.cluster_id, None);
    }

    /// Fields the doc does not name survive a round trip, so `--json` loses nothing.
    #[test]
    fn status_keeps_fields_beyond_the_doc() {
        let body = serde_json::json!({"cluster_id":"c","node_id":1,"view_of":1,"leader":1,"leader_url":"http://a",
            "term":3,"commit_index":10,"applied_index":10,"revision":4,"voters":1,"warnings":[],
            "state":"leader","leader_has_quorum":true,"joining":null,
            "members":[{"id":1,"client_url":"http://a","peer_addr":"a:1","voter":true,"reachable":true,
            "matched_index":10,"lag":0,"leader":true,"last_error":null}]});
        let status: Status = serde_json::from_value(body.clone()).unwrap();
        assert_eq!(status.extra["state"], "leader");
        assert_eq!(status.members[0].extra["last_error"], serde_json::Value::Null);
        assert_eq!(serde_json::to_value(&status).unwrap(), body);
    }
}

/// Answer to `POST /v1/switchover`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchoverResult {
    pub from: u64,
    pub to: u64,
    pub elapsed_ms: u64,
}

/// What a node says about itself on `GET /v1/health` (public).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthAnswer {
    /// It serves: it is a member and knows a leader.
    pub ok: bool,
    pub node_id: u64,
    #[serde(default)]
    pub leader: Option<u64>,
    /// Its cluster (absent from nodes of older versions, and before one is formed).
    #[serde(default)]
    pub cluster_id: Option<String>,
    /// Why it does not serve, in words.
    #[serde(default)]
    pub reason: Option<String>,
}
