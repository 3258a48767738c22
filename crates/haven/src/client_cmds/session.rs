//! Which endpoints a command talks to, and what the CLI remembers between commands.
//!
//! ```text
//!   endpoints ──▶ every endpoint's GET /v1/health at once (no token, PROBE_TIMEOUT)
//!                   │ node id, cluster id, serving?
//!                   ▼
//!   pick_cluster: one cluster ──────────────────────▶ pin it
//!                 several, one of them remembered ──▶ pin that one, say so about the others
//!                 several, none remembered ─────────▶ the one that accepts the token;
//!                                                     two that do: refuse to mix them
//!   order: the remembered last good endpoint, then the others that answered (the
//!          leader first), then the silent ones; other clusters' endpoints dropped
//!                   ▼
//!   haven_client::Client pinned to the cluster (a node of another refuses the request)
//! ```
//!
//! Remembered per state file (`HAVEN_CLI_STATE`, which `haven dev` sets in its env file,
//! else `$XDG_STATE_HOME/haven/cli-state.json` or `~/.local/state/haven/cli-state.json`),
//! keyed by the endpoint list: the last endpoint that answered well, the cluster's id, and
//! the draft digest `haven config diff` showed. Issue 14: a stopped first endpoint cost
//! every command seconds, and two clusters behind one endpoint list were mixed silently.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use haven_client::Client;
use haven_client::ClientConfig;
use haven_client::HealthAnswer;
use serde::Deserialize;
use serde::Serialize;
use tokio::time::Instant;

use super::failure::Failure;
use super::failure::Kind;

/// The state file; empty or `none` remembers nothing.
pub const STATE_ENV: &str = "HAVEN_CLI_STATE";

/// Longest wait for the endpoints' health answers: a node that cannot say whether it
/// serves within a second is not the one to start with (it stays in the list, last).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// After the first endpoint that serves has answered, how long the others still get: long
/// enough for a healthy node's answer to arrive, short enough that a stopped node costs
/// every command no more than this.
pub const PROBE_GRACE: Duration = Duration::from_millis(300);

/// Endpoint lists one state file remembers; the least recently used is forgotten first.
pub const REMEMBERED_LISTS_MAX: usize = 32;

/// Largest state file read: a few hundred bytes per endpoint list.
pub const STATE_FILE_BYTES_MAX: u64 = 256 * 1024;

/// What one endpoint said about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probed {
    pub endpoint: String,
    /// `None` when it did not answer (the reason is in `error`).
    pub answer: Option<HealthAnswer>,
    pub error: Option<String>,
}

impl Probed {
    fn cluster_id(&self) -> Option<&str> {
        self.answer.as_ref().and_then(|answer| answer.cluster_id.as_deref())
    }
}

/// Which cluster to talk to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pick {
    /// This one (or none known yet); notes for the operator on stderr.
    Cluster { cluster_id: Option<String>, notes: Vec<String> },
    /// Several answered and none is remembered: the token decides. Each with its endpoints.
    Ambiguous(Vec<(String, Vec<String>)>),
}

/// Decides the cluster from the answers and the remembered one (pure).
pub fn pick_cluster(probes: &[Probed], remembered: Option<&str>) -> Pick {
    let mut clusters: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for probe in probes {
        if let Some(id) = probe.cluster_id() {
            clusters.entry(id.to_string()).or_default().push(probe.endpoint.clone());
        }
    }
    match clusters.len() {
        0 => Pick::Cluster { cluster_id: remembered.map(str::to_string), notes: Vec::new() },
        1 => {
            let (id, _) = clusters.into_iter().next().unwrap_or_default();
            let notes = match remembered {
                Some(old) if old != id => vec![format!(
                    "note: the cluster at these endpoints is now {id} (it was {old}: recovered or made anew); \
                     remembering the new one"
                )],
                _ => Vec::new(),
            };
            Pick::Cluster { cluster_id: Some(id), notes }
        }
        _ => match remembered.filter(|id| clusters.contains_key(*id)) {
            Some(id) => {
                let notes = clusters
                    .iter()
                    .filter(|(other, _)| other.as_str() != id)
                    .map(|(other, endpoints)| {
                        ignored_note(other, endpoints, "the cluster these endpoints were used with")
                    })
                    .collect();
                Pick::Cluster { cluster_id: Some(id.to_string()), notes }
            }
            None => Pick::Ambiguous(clusters.into_iter().collect()),
        },
    }
}

fn ignored_note(cluster: &str, endpoints: &[String], ours: &str) -> String {
    format!(
        "warning: ignoring {} (cluster {cluster}): not {ours}; a node wiped and started anew, or left behind by a \
         recovery? Fix HAVEN_ENDPOINTS / --endpoints",
        endpoints.join(", ")
    )
}

/// The endpoints in the order to try them (pure): the remembered last good one if it
/// answered for the pinned cluster, then the others that answered for it (those that serve
/// and lead first), then those that did not answer; endpoints of other clusters are left
/// out.
pub fn order(probes: &[Probed], pinned: Option<&str>, last_good: Option<&str>) -> Vec<String> {
    let ours = |probe: &Probed| probe.answer.is_some() && (pinned.is_none() || probe.cluster_id() == pinned);
    let rank = |probe: &Probed| -> (u8, u8, u8) {
        let answer = probe.answer.as_ref();
        let remembered = Some(probe.endpoint.as_str()) == last_good && ours(probe);
        let serves = answer.is_some_and(|answer| answer.ok);
        let leads = answer.is_some_and(|answer| answer.leader == Some(answer.node_id));
        (u8::from(!remembered), u8::from(!(serves && ours(probe))), u8::from(!leads))
    };
    let mut kept: Vec<(usize, &Probed)> =
        probes.iter().enumerate().filter(|(_, probe)| probe.answer.is_none() || ours(probe)).collect();
    kept.sort_by_key(|(index, probe)| (u8::from(probe.answer.is_none()), rank(probe), *index));
    kept.into_iter().map(|(_, probe)| probe.endpoint.clone()).collect()
}

/// Asks every endpoint for its health at once, within [`PROBE_TIMEOUT`] and
/// [`PROBE_GRACE`]; the answers in the order of `config.endpoints`.
pub async fn probe_all(config: &ClientConfig) -> Vec<Probed> {
    let mut probe_config = config.clone();
    probe_config.request_timeout = PROBE_TIMEOUT;
    probe_config.deadline = PROBE_TIMEOUT;
    probe_config.max_attempts = 1;
    probe_config.cluster_id = None;
    let silent =
        |endpoint: &String, error: String| Probed { endpoint: endpoint.clone(), answer: None, error: Some(error) };
    let Ok(client) = Client::new(probe_config) else {
        return config.endpoints.iter().map(|endpoint| silent(endpoint, "not probed".into())).collect();
    };
    let mut pending: FuturesUnordered<_> = config
        .endpoints
        .iter()
        .enumerate()
        .map(|(index, endpoint)| {
            let client = client.clone();
            async move { (index, client.health_of(endpoint).await) }
        })
        .collect();
    let mut results: Vec<Probed> =
        config.endpoints.iter().map(|endpoint| silent(endpoint, "no answer within the probe time".into())).collect();
    let started = Instant::now();
    let mut deadline = started + PROBE_TIMEOUT;
    loop {
        let next = tokio::time::timeout_at(deadline, pending.next()).await;
        let Ok(Some((index, outcome))) = next else { break };
        match outcome {
            Ok(answer) => {
                if answer.ok {
                    deadline = deadline.min(Instant::now() + PROBE_GRACE);
                }
                results[index].answer = Some(answer);
                results[index].error = None;
            }
            Err(error) => results[index].error = Some(error.to_string()),
        }
    }
    results
}

/// What is remembered for one endpoint list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Memory {
    /// The endpoint that answered well last.
    pub last_good: Option<String>,
    /// The cluster these endpoints were used with.
    pub cluster_id: Option<String>,
    /// The draft `haven config diff` showed last (what `haven config apply` applies).
    pub reviewed_draft: Option<ReviewedDraft>,
    /// When it was last used (ms since the epoch), to forget the oldest list first.
    #[serde(default)]
    pub used_ms: u64,
}

/// A draft as it was reviewed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReviewedDraft {
    pub digest: String,
    pub base_version: u64,
}

/// The state file and the key of one endpoint list in it.
#[derive(Debug, Clone)]
pub struct MemoryFile {
    path: Option<PathBuf>,
    key: String,
}

impl MemoryFile {
    /// Where the memory of `endpoints` lives, by the environment (see the module docs).
    pub fn for_endpoints(endpoints: &[String]) -> MemoryFile {
        let explicit = std::env::var_os(STATE_ENV);
        let path = match explicit {
            Some(path) if path.is_empty() || path == "none" => None,
            Some(path) => Some(PathBuf::from(path)),
            None => std::env::var_os("XDG_STATE_HOME")
                .filter(|dir| !dir.is_empty())
                .map(PathBuf::from)
                .or_else(|| {
                    std::env::var_os("HOME")
                        .filter(|home| !home.is_empty())
                        .map(|home| PathBuf::from(home).join(".local/state"))
                })
                .map(|dir| dir.join("haven").join("cli-state.json")),
        };
        MemoryFile { path, key: endpoints.join(",") }
    }

    fn read_all(&self) -> BTreeMap<String, Memory> {
        use std::io::Read as _;
        let Some(path) = &self.path else { return BTreeMap::new() };
        let Ok(file) = std::fs::File::open(path) else { return BTreeMap::new() };
        let mut bytes = Vec::new();
        if file.take(STATE_FILE_BYTES_MAX).read_to_end(&mut bytes).is_err() {
            return BTreeMap::new();
        }
        serde_json::from_slice(&bytes).unwrap_or_default()
    }

    /// What is remembered for these endpoints (nothing when unreadable: it is a cache).
    pub fn load(&self) -> Memory {
        self.read_all().remove(&self.key).unwrap_or_default()
    }

    /// Changes what is remembered for these endpoints. Best effort: a state file that
    /// cannot be written only means nothing is remembered.
    pub fn update(&self, change: impl FnOnce(&mut Memory)) {
        let Some(path) = &self.path else { return };
        let mut all = self.read_all();
        let memory = all.entry(self.key.clone()).or_default();
        change(memory);
        memory.used_ms = crate::client_cmds::now_ms();
        while all.len() > REMEMBERED_LISTS_MAX {
            let Some(oldest) = all.iter().min_by_key(|(_, memory)| memory.used_ms).map(|(key, _)| key.clone()) else {
                break;
            };
            all.remove(&oldest);
        }
        let Ok(bytes) = serde_json::to_vec_pretty(&all) else { return };
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let temporary = path.with_extension("tmp");
        let written = (|| -> std::io::Result<()> {
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            let _ = std::fs::remove_file(&temporary);
            let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&temporary)?;
            file.write_all(&bytes)?;
            std::fs::rename(&temporary, path)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&temporary);
        }
    }
}

/// A client for one command, with what the endpoints said and the memory of them.
pub struct Session {
    pub client: Client,
    pub probes: Vec<Probed>,
    pub memory: MemoryFile,
}

/// Builds the session: probes, picks the cluster (asking with the token when the answers
/// name several), orders the endpoints, remembers the result.
pub async fn connect(mut config: ClientConfig) -> anyhow::Result<Session> {
    let memory = MemoryFile::for_endpoints(&config.endpoints);
    let remembered = memory.load();
    let probes = probe_all(&config).await;
    let pinned = match pick_cluster(&probes, remembered.cluster_id.as_deref()) {
        Pick::Cluster { cluster_id, notes } => {
            for note in notes {
                eprintln!("{note}");
            }
            cluster_id
        }
        Pick::Ambiguous(clusters) => pick_by_token(&config, &clusters).await?,
    };
    config.endpoints = order(&probes, pinned.as_deref(), remembered.last_good.as_deref());
    if config.endpoints.is_empty() {
        return Err(Failure::new(Kind::Refused, "no endpoint of the cluster is left to talk to").into_error());
    }
    config.cluster_id = pinned.clone();
    let good = config
        .endpoints
        .iter()
        .find(|endpoint| {
            probes.iter().any(|probe| probe.endpoint == **endpoint && probe.answer.as_ref().is_some_and(|a| a.ok))
        })
        .cloned();
    memory.update(|memory| {
        if good.is_some() {
            memory.last_good = good;
        }
        if pinned.is_some() {
            memory.cluster_id = pinned;
        }
    });
    let client = Client::new(config)?;
    Ok(Session { client, probes, memory })
}

/// Several clusters answered and none is remembered: the one that accepts the token is
/// the operator's (issue 13: a node wiped and bootstrapped anew at an old address answers
/// 401 and must not stop the CLI there). Two that accept it are two clusters that came from
/// one (a recovery, a detached node started standalone): the CLI refuses to mix them.
async fn pick_by_token(config: &ClientConfig, clusters: &[(String, Vec<String>)]) -> anyhow::Result<Option<String>> {
    let mut accepted = Vec::new();
    let mut refused = Vec::new();
    for (cluster, endpoints) in clusters {
        let mut one = config.clone();
        one.endpoints = endpoints.clone();
        one.cluster_id = Some(cluster.clone());
        one.max_attempts = endpoints.len().max(1) as u32;
        one.deadline = PROBE_TIMEOUT * 2;
        let answer = match Client::new(one) {
            Ok(client) => client.members().await,
            Err(error) => Err(error),
        };
        match answer {
            Ok(_) => accepted.push((cluster, endpoints)),
            Err(error) if error.code() == Some("forbidden") => accepted.push((cluster, endpoints)),
            Err(_) => refused.push((cluster, endpoints)),
        }
    }
    match accepted.as_slice() {
        [(cluster, _)] => {
            for (other, endpoints) in &refused {
                eprintln!("{}", ignored_note(other, endpoints, "the cluster that accepts this token"));
            }
            Ok(Some((*cluster).clone()))
        }
        [] => Ok(None),
        several => {
            let list: Vec<String> = several
                .iter()
                .map(|(cluster, endpoints)| format!("cluster {cluster} at {}", endpoints.join(", ")))
                .collect();
            Err(Failure::new(
                Kind::Refused,
                format!(
                    "the endpoints belong to {} clusters that both accept this token: {}. One was probably left behind \
                     by `haven recover` or a teardown; refusing to mix them. Give the endpoints of one cluster \
                     (--endpoints / HAVEN_ENDPOINTS)",
                    several.len(),
                    list.join("; ")
                ),
            )
            .code("clusters_mixed")
            .into_error())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probed(endpoint: &str, cluster: Option<&str>, node_id: u64, leader: Option<u64>, ok: bool) -> Probed {
        Probed {
            endpoint: endpoint.into(),
            answer: Some(HealthAnswer { ok, node_id, leader, cluster_id: cluster.map(str::to_string), reason: None }),
            error: None,
        }
    }

    fn silent(endpoint: &str) -> Probed {
        Probed { endpoint: endpoint.into(), answer: None, error: Some("refused".into()) }
    }

    #[test]
    fn one_cluster_is_pinned_and_a_new_id_is_said() {
        let probes =
            [probed("a", Some("c1"), 1, Some(2), true), probed("b", Some("c1"), 2, Some(2), true), silent("c")];
        assert_eq!(pick_cluster(&probes, None), Pick::Cluster { cluster_id: Some("c1".into()), notes: vec![] });
        let Pick::Cluster { cluster_id, notes } = pick_cluster(&probes, Some("c0")) else { panic!() };
        assert_eq!(cluster_id.as_deref(), Some("c1"));
        assert!(notes[0].contains("now c1 (it was c0"), "{notes:?}");
        assert_eq!(
            pick_cluster(&[silent("a")], Some("c0")),
            Pick::Cluster { cluster_id: Some("c0".into()), notes: vec![] }
        );
    }

    /// Two clusters behind one endpoint list are never mixed: the remembered one wins with a
    /// warning about the other, and without a memory the token decides.
    #[test]
    fn two_clusters_are_never_mixed() {
        let probes = [
            probed("a", Some("old"), 1, Some(1), true),
            probed("b", Some("new"), 2, Some(2), true),
            probed("c", Some("old"), 3, Some(1), true),
        ];
        let Pick::Cluster { cluster_id, notes } = pick_cluster(&probes, Some("new")) else { panic!() };
        assert_eq!(cluster_id.as_deref(), Some("new"));
        assert!(notes[0].contains("ignoring a, c (cluster old)"), "{notes:?}");
        assert_eq!(order(&probes, Some("new"), None), ["b"]);
        assert_eq!(
            pick_cluster(&probes, None),
            Pick::Ambiguous(vec![("new".into(), vec!["b".into()]), ("old".into(), vec!["a".into(), "c".into()])])
        );
    }

    /// The remembered endpoint first when it answered, then those that serve and lead,
    /// then the silent ones; a silent remembered endpoint is not first.
    #[test]
    fn endpoints_are_ordered_by_what_they_said() {
        let probes = [
            silent("a"),
            probed("b", Some("c"), 2, Some(3), true),
            probed("c", Some("c"), 3, Some(3), true),
            probed("d", Some("c"), 4, None, false),
        ];
        assert_eq!(order(&probes, Some("c"), None), ["c", "b", "d", "a"]);
        assert_eq!(order(&probes, Some("c"), Some("b")), ["b", "c", "d", "a"]);
        assert_eq!(order(&probes, Some("c"), Some("a")), ["c", "b", "d", "a"]);
    }

    #[test]
    fn memory_is_kept_per_endpoint_list_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let file = |key: &str| MemoryFile { path: Some(path.clone()), key: key.into() };
        file("a,b").update(|memory| memory.cluster_id = Some("c1".into()));
        file("x").update(|memory| memory.last_good = Some("x".into()));
        assert_eq!(file("a,b").load().cluster_id.as_deref(), Some("c1"));
        assert_eq!(file("x").load().last_good.as_deref(), Some("x"));
        assert_eq!(file("other").load(), Memory::default());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        for i in 0..REMEMBERED_LISTS_MAX + 3 {
            file(&format!("list-{i}")).update(|_| {});
        }
        let all: BTreeMap<String, Memory> = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(all.len(), REMEMBERED_LISTS_MAX);
        std::fs::write(&path, "not json").unwrap();
        assert_eq!(file("a,b").load(), Memory::default(), "a broken file is an empty memory");
        let none = MemoryFile { path: None, key: "k".into() };
        none.update(|memory| memory.cluster_id = Some("c".into()));
        assert_eq!(none.load(), Memory::default());
    }
}
