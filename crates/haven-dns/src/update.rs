//! RFC 2136 dynamic update, signed with TSIG (RFC 8945), of an external DNS server: on
//! failover and switchover the alias's A/AAAA records are replaced by the new primary's
//! addresses, as seed 002's `nsupdate` hook script did by hand.
//!
//! ```text
//!   server: this node became primary ──▶ UpdateFollower::follow(addresses)
//!                                             │ (a task; the latest target wins)
//!        ┌────────────────────────────────────┘
//!        ▼
//!   DynamicUpdater::replace ── UPDATE zone: delete A, delete AAAA, add each address
//!        │  signed with the key read from dns.update.key_secret_file, over TCP
//!        ├─ NOERROR, signature verified ──▶ UpdateStatus::Done ── every RECHECK_INTERVAL:
//!        │                                  query the alias; changed behind our back? send again
//!        └─ error ──▶ UpdateStatus::Failing { error, retry_in } ── back-off, send again
//!   server: no longer primary ──▶ UpdateFollower::stop(): nothing more is sent
//! ```
//!
//! A failed or refused update is an [`UpdateError`] whose message says what is wrong and
//! what to do (a wrong secret is the server's BADSIG, an unknown key BADKEY, a policy that
//! does not allow the change REFUSED); the server turns `Failing` into an alarm (seed 002's
//! `RaiseAlarm`, [`ALARM_CONDITION`]) and `Done` into its clear. Every attempt reads the key
//! file again, so fixing the file (or the server's policy) is enough for the next retry to
//! succeed.
//!
//! Every answer that says "done" must carry a valid TSIG signature from the server: an
//! unsigned or badly signed NOERROR is not trusted (it could come from anyone on the path).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::net::SocketAddr;
use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;
use std::time::SystemTime;

use base64::Engine;
use haven_client::Backoff;
use hickory_proto::op::update_message::UpdateMessage;
use hickory_proto::op::Message;
use hickory_proto::op::OpCode;
use hickory_proto::op::Query;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::tsig::TsigAlgorithm;
use hickory_proto::rr::rdata::tsig::TsigError;
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::rdata::AAAA;
use hickory_proto::rr::DNSClass;
use hickory_proto::rr::Name;
use hickory_proto::rr::RData;
use hickory_proto::rr::Record;
use hickory_proto::rr::RecordType;
use hickory_proto::rr::TSigner;
use tokio::io::AsyncReadExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::answer::ANSWER_RECORDS_MAX;
use crate::config::KeyAlgorithm;
use crate::config::UpdateSettings;

/// One exchange with the DNS server (connect, send, answer). An authoritative server on a
/// LAN answers in milliseconds; 5 s rides out a busy server without holding a retry back
/// for long.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(5);

/// TSIG's allowed clock difference between this node and the server (RFC 8945 section
/// 10 recommends 300 s).
pub const TSIG_FUDGE_S: u16 = 300;

/// Largest key file read: a BIND key clause is about 100 bytes; a file of several keys
/// is still far below 64 KiB, and anything larger is not a key file.
pub const KEY_FILE_BYTES_MAX: u64 = 64 * 1024;

/// Shortest secret accepted. RFC 8945 section 6 asks for keys no shorter than the HMAC's
/// output (32 bytes for SHA-256; `tsig-keygen` makes exactly that); 16 bytes is the floor
/// below which a secret is a placeholder or a typo, not a key.
pub const SECRET_BYTES_MIN: usize = 16;
/// Longest secret accepted: far beyond any HMAC block size (128 bytes for SHA-512).
pub const SECRET_BYTES_MAX: usize = 1024;

/// Addresses written for the alias: the same bound as an answer of the responder.
pub const ADDRESSES_MAX: usize = ANSWER_RECORDS_MAX;

/// First retry window after a failed update: quick enough that a server that blinked is
/// updated within a second or two.
pub const RETRY_BASE: Duration = Duration::from_secs(1);
/// Longest wait between retries: a server that is down or refusing is asked once a minute,
/// which is nothing for it and soon enough after an operator fixes the cause.
pub const RETRY_CAP: Duration = Duration::from_secs(60);

/// How often the primary checks that the server still has its addresses for the alias, and
/// writes them again if not: another writer (an old primary's late update, an operator's
/// nsupdate) cannot leave the alias wrong for longer than this.
pub const RECHECK_INTERVAL: Duration = Duration::from_secs(60);

/// The alarm's condition text (seed 002's `RaiseAlarm <condition> <message>`).
pub const ALARM_CONDITION: &str = "DNS update of the cluster alias failed";

/// A TSIG key: its name, algorithm and secret. The secret is never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct TsigKey {
    name: Name,
    algorithm: KeyAlgorithm,
    secret: Vec<u8>,
}

impl std::fmt::Debug for TsigKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TsigKey")
            .field("name", &self.name)
            .field("algorithm", &self.algorithm)
            .field("secret", &"(hidden)")
            .finish()
    }
}

impl TsigKey {
    pub fn new(name: Name, algorithm: KeyAlgorithm, secret: Vec<u8>) -> Result<TsigKey, String> {
        if secret.len() < SECRET_BYTES_MIN || secret.len() > SECRET_BYTES_MAX {
            return Err(format!(
                "the secret is {} bytes; a TSIG secret is {SECRET_BYTES_MIN}-{SECRET_BYTES_MAX} bytes (tsig-keygen \
                 makes 32 for hmac-sha256)",
                secret.len()
            ));
        }
        Ok(TsigKey { name, algorithm, secret })
    }

    /// Reads the key named in `settings` from its secret file.
    pub fn load(settings: &UpdateSettings) -> Result<TsigKey, UpdateError> {
        let path = &settings.key_secret_file;
        let key_error = |reason: String| UpdateError::Key { path: path.clone(), reason };
        let text = read_bounded(path).map_err(key_error)?;
        let secret = parse_key_file(&text, &settings.key_name, settings.key_algorithm).map_err(key_error)?;
        TsigKey::new(settings.key_name.clone(), settings.key_algorithm, secret).map_err(key_error)
    }

    fn signer(&self) -> Result<TSigner, String> {
        let algorithm = match self.algorithm {
            KeyAlgorithm::HmacSha256 => TsigAlgorithm::HmacSha256,
            KeyAlgorithm::HmacSha384 => TsigAlgorithm::HmacSha384,
            KeyAlgorithm::HmacSha512 => TsigAlgorithm::HmacSha512,
        };
        TSigner::new(self.secret.clone(), algorithm, self.name.clone(), TSIG_FUDGE_S)
            .map_err(|error| format!("cannot sign with {}: {error}", self.algorithm))
    }
}

fn read_bounded(path: &Path) -> Result<String, String> {
    let metadata = std::fs::metadata(path).map_err(|error| format!("cannot read it: {error}"))?;
    if !metadata.is_file() {
        return Err("not a regular file".into());
    }
    if metadata.len() > KEY_FILE_BYTES_MAX {
        return Err(format!("{} bytes; a key file is at most {KEY_FILE_BYTES_MAX}", metadata.len()));
    }
    std::fs::read_to_string(path).map_err(|error| format!("cannot read it: {error}"))
}

/// The secret for `key_name` from a key file: either the base64 secret alone (one line),
/// or BIND's syntax as `tsig-keygen` writes it,
/// `key "NAME" { algorithm hmac-sha256; secret "BASE64"; };`, possibly several keys, in
/// which case the one named `key_name` is used and its algorithm must match.
pub fn parse_key_file(text: &str, key_name: &Name, algorithm: KeyAlgorithm) -> Result<Vec<u8>, String> {
    let tokens = tokenize(text)?;
    if !tokens.iter().any(|token| token.eq_ignore_ascii_case("key")) {
        let secret: String = text.split_whitespace().collect();
        return decode_secret(&secret);
    }
    let mut names = Vec::new();
    let mut rest = tokens.as_slice();
    while let Some(position) = rest.iter().position(|token| token.eq_ignore_ascii_case("key")) {
        let (name, body, after) = key_clause(&rest[position + 1..])?;
        rest = after;
        let matches = Name::from_ascii(&name).map(|mut name| {
            name.set_fqdn(true);
            name == *key_name
        });
        if !matches.unwrap_or(false) {
            names.push(name);
            continue;
        }
        let mut found_algorithm = None;
        let mut secret = None;
        for statement in body.split(|token| token == ";") {
            match statement {
                [word, value] if word.eq_ignore_ascii_case("algorithm") => found_algorithm = Some(value.clone()),
                [word, value] if word.eq_ignore_ascii_case("secret") => secret = Some(value.clone()),
                _ => {}
            }
        }
        if let Some(found) = found_algorithm {
            if KeyAlgorithm::from_name(&found) != Some(algorithm) {
                return Err(format!(
                    "key \"{name}\" in the file is {found}, but dns.update.key_algorithm is {algorithm}; make them the \
                     same as on the DNS server"
                ));
            }
        }
        return match secret {
            Some(secret) => decode_secret(&secret),
            None => Err(format!("key \"{name}\" in the file has no `secret \"...\";`")),
        };
    }
    let wanted = key_name.to_string();
    let wanted = wanted.trim_end_matches('.');
    if names.is_empty() {
        Err(format!("no key clause for \"{wanted}\" in the file"))
    } else {
        Err(format!(
            "the file has key(s) {} but not \"{wanted}\" (dns.update.key_name); give the name the DNS server knows",
            names.iter().map(|name| format!("\"{name}\"")).collect::<Vec<_>>().join(", ")
        ))
    }
}

/// `NAME { statements } ;` after the word `key`: the name, the statement tokens, and the
/// tokens after the clause.
fn key_clause(tokens: &[String]) -> Result<(String, &[String], &[String]), String> {
    let [name, open, rest @ ..] = tokens else {
        return Err("a `key` clause is cut short; expected key \"NAME\" { ... };".into());
    };
    if open != "{" {
        return Err(format!("expected `{{` after key \"{name}\""));
    }
    let close = rest.iter().position(|token| token == "}").ok_or(format!("key \"{name}\" has no closing `}}`"))?;
    Ok((name.trim_end_matches('.').to_string(), &rest[..close], &rest[close + 1..]))
}

/// Words, quoted strings (without the quotes) and the punctuation `{ } ;`, skipping `#`,
/// `//` and `/* */` comments.
fn tokenize(text: &str) -> Result<Vec<String>, String> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {}
            '#' => while chars.next_if(|c| *c != '\n').is_some() {},
            '/' if chars.peek() == Some(&'/') => while chars.next_if(|c| *c != '\n').is_some() {},
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut previous = ' ';
                loop {
                    match chars.next() {
                        Some('/') if previous == '*' => break,
                        Some(c) => previous = c,
                        None => return Err("a /* comment is not closed".into()),
                    }
                }
            }
            '"' => {
                let mut word = String::new();
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some(c) => word.push(c),
                        None => return Err("a quoted string is not closed".into()),
                    }
                }
                tokens.push(word);
            }
            '{' | '}' | ';' => tokens.push(c.to_string()),
            c => {
                let mut word = c.to_string();
                while let Some(c) = chars.next_if(|c| !c.is_whitespace() && !matches!(c, '{' | '}' | ';' | '"')) {
                    word.push(c);
                }
                tokens.push(word);
            }
        }
    }
    Ok(tokens)
}

fn decode_secret(text: &str) -> Result<Vec<u8>, String> {
    if text.is_empty() {
        return Err("empty; it should hold the key's base64 secret or a BIND key clause".into());
    }
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|error| format!("the secret is not valid base64 ({error})"))
}

/// Why an update did not happen. The message is one line for operators and alarms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpdateError {
    #[error("cannot use the TSIG key file {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("no address to point {alias} at; the alias is left as it is")]
    NoAddresses { alias: String },
    #[error("DNS server {server} could not be reached: {reason}; is it up, and reachable from this node over TCP?")]
    Unreachable { server: SocketAddr, reason: String },
    #[error(
        "DNS server {server} refused the update of {alias}: {}{}; {advice}",
        rcode_name(*.rcode),
        .tsig_error.map(|error| format!(" (TSIG error {})", tsig_error_name(error))).unwrap_or_default()
    )]
    Refused {
        server: SocketAddr,
        /// The alias, as a fully qualified name.
        alias: String,
        rcode: ResponseCode,
        tsig_error: Option<TsigError>,
        advice: String,
    },
    #[error("DNS server {server} sent an answer that cannot be trusted: {reason}")]
    BadAnswer { server: SocketAddr, reason: String },
}

impl UpdateError {
    /// True when the same update may well succeed on its own a moment later (the server
    /// was unreachable or failed); false when someone has to change something (the key,
    /// the server's policy). Both are retried by the follower; the distinction is for the
    /// alarm's wording and for callers that try once.
    pub fn is_transient(&self) -> bool {
        match self {
            UpdateError::Unreachable { .. } | UpdateError::BadAnswer { .. } => true,
            UpdateError::Refused { rcode, tsig_error, .. } => {
                tsig_error.is_none() && matches!(rcode, ResponseCode::ServFail)
            }
            UpdateError::Key { .. } | UpdateError::NoAddresses { .. } => false,
        }
    }
}

/// The mnemonic DNS tools print (RFC 1035, 2136): NOTAUTH, REFUSED, ...
fn rcode_name(rcode: ResponseCode) -> String {
    let name = match rcode {
        ResponseCode::NoError => "NOERROR",
        ResponseCode::FormErr => "FORMERR",
        ResponseCode::ServFail => "SERVFAIL",
        ResponseCode::NXDomain => "NXDOMAIN",
        ResponseCode::NotImp => "NOTIMP",
        ResponseCode::Refused => "REFUSED",
        ResponseCode::YXDomain => "YXDOMAIN",
        ResponseCode::YXRRSet => "YXRRSET",
        ResponseCode::NXRRSet => "NXRRSET",
        ResponseCode::NotAuth => "NOTAUTH",
        ResponseCode::NotZone => "NOTZONE",
        other => return format!("response code {}", u16::from(other)),
    };
    name.to_string()
}

fn tsig_error_name(error: TsigError) -> String {
    match error {
        TsigError::BadSig => "BADSIG".into(),
        TsigError::BadKey => "BADKEY".into(),
        TsigError::BadTime => "BADTIME".into(),
        TsigError::BadTrunc => "BADTRUNC".into(),
        TsigError::Unknown(code) => code.to_string(),
    }
}

/// What to do about a refusal, in words.
fn advice(rcode: ResponseCode, tsig_error: Option<TsigError>) -> String {
    match (tsig_error, rcode) {
        (Some(TsigError::BadSig), _) => "the server knows a key of this name with another secret: make \
                                         dns.update.key_secret_file hold the server's secret for dns.update.key_name"
            .into(),
        (Some(TsigError::BadKey), _) => {
            "the server knows no key of this name and algorithm: check dns.update.key_name \
                                         and dns.update.key_algorithm against the server's key"
                .into()
        }
        (Some(TsigError::BadTime), _) => {
            format!("this node's clock and the server's differ by more than {TSIG_FUDGE_S} s: fix time synchronisation")
        }
        (_, ResponseCode::Refused) => "the server's update policy does not let this key change the alias (BIND: \
                                       update-policy or allow-update of the zone)"
            .into(),
        (_, ResponseCode::NotAuth) => "the server is not the primary of dns.update.zone, or does not accept the key; \
                                       point dns.update.server at the zone's primary server"
            .into(),
        (_, ResponseCode::NotZone) => "the alias is outside dns.update.zone".into(),
        (_, ResponseCode::ServFail) => "the server failed; the update is retried".into(),
        _ => "see the DNS server's log".into(),
    }
}

/// Sends updates and checks for one alias at one server.
#[derive(Debug, Clone)]
pub struct DynamicUpdater {
    settings: UpdateSettings,
}

impl DynamicUpdater {
    pub fn new(settings: UpdateSettings) -> DynamicUpdater {
        DynamicUpdater { settings }
    }

    pub fn settings(&self) -> &UpdateSettings {
        &self.settings
    }

    /// One attempt: replaces the alias's A and AAAA records by `addresses` (at most
    /// [`ADDRESSES_MAX`]) in one atomic update. Reads the key file first.
    pub async fn replace(&self, addresses: &[IpAddr]) -> Result<(), UpdateError> {
        let settings = &self.settings;
        if addresses.is_empty() {
            return Err(UpdateError::NoAddresses { alias: settings.alias.to_string() });
        }
        let key = TsigKey::load(settings)?;
        let mut message = Message::query();
        message.metadata.op_code = OpCode::Update;
        message.metadata.recursion_desired = false;
        let mut zone = Query::query(settings.zone.clone(), RecordType::SOA);
        zone.set_query_class(DNSClass::IN);
        message.add_zone(zone);
        // RFC 2136 section 2.5.2: delete an RRset (class ANY, TTL 0, no data), then add.
        for rtype in [RecordType::A, RecordType::AAAA] {
            let mut delete = Record::update0(settings.alias.clone(), 0, rtype);
            delete.dns_class = DNSClass::ANY;
            message.add_update(delete);
        }
        for address in canonical(addresses) {
            let data = match address {
                IpAddr::V4(ip) => RData::A(A(ip)),
                IpAddr::V6(ip) => RData::AAAA(AAAA(ip)),
            };
            message.add_update(Record::from_rdata(settings.alias.clone(), settings.ttl_s, data));
        }
        let response = self.exchange(message, &key).await?;
        match response.metadata.response_code {
            ResponseCode::NoError => Ok(()),
            rcode => Err(self.refused(rcode, None)),
        }
    }

    /// The alias's A and AAAA addresses as the server has them now (signed queries).
    pub async fn current(&self) -> Result<BTreeSet<IpAddr>, UpdateError> {
        let key = TsigKey::load(&self.settings)?;
        let mut addresses = BTreeSet::new();
        for rtype in [RecordType::A, RecordType::AAAA] {
            let mut message = Message::query();
            message.metadata.recursion_desired = false;
            message.add_query(Query::query(self.settings.alias.clone(), rtype));
            let response = self.exchange(message, &key).await?;
            match response.metadata.response_code {
                ResponseCode::NoError | ResponseCode::NXDomain => {}
                rcode => return Err(self.refused(rcode, None)),
            }
            addresses.extend(response.answers.iter().filter(|record| record.name == self.settings.alias).filter_map(
                |record| match &record.data {
                    RData::A(a) => Some(IpAddr::V4(a.0)),
                    RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
                    _ => None,
                },
            ));
        }
        Ok(addresses)
    }

    fn refused(&self, rcode: ResponseCode, tsig_error: Option<TsigError>) -> UpdateError {
        UpdateError::Refused {
            server: self.settings.server,
            alias: self.settings.alias.to_string(),
            rcode,
            tsig_error,
            advice: advice(rcode, tsig_error),
        }
    }

    /// Signs `message`, sends it over TCP and returns the answer once its signature is
    /// verified; an answer that carries a TSIG error (unsigned, as RFC 8945 wants) is the
    /// server's refusal.
    async fn exchange(&self, mut message: Message, key: &TsigKey) -> Result<Message, UpdateError> {
        let server = self.settings.server;
        let bad_answer = |reason: String| UpdateError::BadAnswer { server, reason };
        let signer =
            key.signer().map_err(|reason| UpdateError::Key { path: self.settings.key_secret_file.clone(), reason })?;
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs();
        let verifier = message.finalize(&signer, now).map_err(|error| bad_answer(format!("cannot sign: {error}")))?;
        let bytes = message.to_vec().map_err(|error| bad_answer(format!("cannot encode the request: {error}")))?;
        let answer = tokio::time::timeout(EXCHANGE_TIMEOUT, send_over_tcp(server, &bytes))
            .await
            .map_err(|_| UpdateError::Unreachable { server, reason: format!("no answer within {EXCHANGE_TIMEOUT:?}") })?
            .map_err(|error| UpdateError::Unreachable { server, reason: error.to_string() })?;
        let response = Message::from_vec(&answer).map_err(|error| bad_answer(format!("undecodable: {error}")))?;
        if response.metadata.id != message.metadata.id {
            return Err(bad_answer("its id is not the request's".into()));
        }
        match response.signature.as_deref().map(|signature| signature.data.error) {
            Some(Some(tsig_error)) => return Err(self.refused(response.metadata.response_code, Some(tsig_error))),
            Some(None) => {
                let Some(mut verifier) = verifier else {
                    return Err(bad_answer("no verifier for a signed request".into()));
                };
                verifier
                    .verify(&answer)
                    .map_err(|error| bad_answer(format!("its TSIG signature does not verify ({error})")))?;
            }
            None if response.metadata.response_code == ResponseCode::NoError => {
                return Err(bad_answer(
                    "it is not signed, so it may not come from the server that holds the key".into(),
                ));
            }
            // An unsigned refusal (NOTAUTH, REFUSED, ...): reported as such; nothing was
            // changed either way.
            None => {}
        }
        Ok(response)
    }
}

/// The addresses in canonical form, without repeats, at most [`ADDRESSES_MAX`].
fn canonical(addresses: &[IpAddr]) -> Vec<IpAddr> {
    let mut seen = BTreeSet::new();
    addresses.iter().map(IpAddr::to_canonical).filter(|address| seen.insert(*address)).take(ADDRESSES_MAX).collect()
}

async fn send_over_tcp(server: SocketAddr, request: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(server).await?;
    let length = u16::try_from(request.len()).map_err(std::io::Error::other)?;
    let mut framed = Vec::with_capacity(request.len() + 2);
    framed.extend_from_slice(&length.to_be_bytes());
    framed.extend_from_slice(request);
    stream.write_all(&framed).await?;
    // The two-byte length bounds the answer at 64 KiB.
    let length = stream.read_u16().await?;
    let mut answer = vec![0; usize::from(length)];
    stream.read_exact(&mut answer).await?;
    Ok(answer)
}

/// Where the follower stands; the server raises an alarm on `Failing` and clears it on
/// `Done`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateStatus {
    /// Not following: this node is not the primary (or has not been told yet).
    Idle,
    /// The first attempt for these addresses is under way.
    Updating { addresses: Vec<IpAddr> },
    /// The server has these addresses for the alias (written, or checked since).
    Done { addresses: Vec<IpAddr>, attempts: u32 },
    /// The last attempt failed; the next comes after `retry_in`.
    Failing { addresses: Vec<IpAddr>, error: UpdateError, attempts: u32, retry_in: Duration },
}

/// Retry and re-check timing of the follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerTiming {
    pub retry: Backoff,
    pub recheck_interval: Duration,
}

impl Default for FollowerTiming {
    fn default() -> FollowerTiming {
        FollowerTiming { retry: Backoff { base: RETRY_BASE, cap: RETRY_CAP }, recheck_interval: RECHECK_INTERVAL }
    }
}

/// Keeps the alias at the server pointing at the addresses it is told to follow, until
/// told to stop; see the module picture.
pub struct UpdateFollower {
    target: watch::Sender<Option<Vec<IpAddr>>>,
    status: watch::Receiver<UpdateStatus>,
    task: JoinHandle<()>,
}

impl UpdateFollower {
    pub fn spawn(updater: DynamicUpdater, timing: FollowerTiming) -> UpdateFollower {
        let (target, target_receiver) = watch::channel(None);
        let (status_sender, status) = watch::channel(UpdateStatus::Idle);
        let task = tokio::spawn(follow(updater, timing, target_receiver, status_sender));
        UpdateFollower { target, status, task }
    }

    /// This node is the primary now: make the alias point at `addresses`. A newer call
    /// replaces an older one at once, even mid-attempt.
    pub fn follow(&self, addresses: Vec<IpAddr>) {
        self.target.send_if_modified(|target| {
            let new = Some(addresses);
            let changed = *target != new;
            *target = new;
            changed
        });
    }

    /// This node is no longer the primary: send nothing more (an attempt under way is
    /// abandoned).
    pub fn stop(&self) {
        self.target.send_if_modified(|target| target.take().is_some());
    }

    /// The follower's state, to watch for alarms.
    pub fn status(&self) -> watch::Receiver<UpdateStatus> {
        self.status.clone()
    }

    pub async fn shutdown(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// The follower's task.
async fn follow(
    updater: DynamicUpdater,
    timing: FollowerTiming,
    mut target: watch::Receiver<Option<Vec<IpAddr>>>,
    status: watch::Sender<UpdateStatus>,
) {
    loop {
        let Some(addresses) = target.borrow_and_update().clone() else {
            status.send_replace(UpdateStatus::Idle);
            if target.changed().await.is_err() {
                return;
            }
            continue;
        };
        status.send_replace(UpdateStatus::Updating { addresses: addresses.clone() });
        let wanted: BTreeSet<IpAddr> = canonical(&addresses).into_iter().collect();
        let mut retries = timing.retry.iter();
        let mut attempts: u32 = 0;
        // Each round sends the update; after success it re-checks until the alias differs
        // from `wanted` (send again) or the target changes (start over).
        'send: loop {
            attempts = attempts.saturating_add(1);
            let result = tokio::select! {
                result = updater.replace(&addresses) => result,
                _ = target.changed() => break 'send,
            };
            match result {
                Ok(()) => {
                    tracing::info!(alias = %updater.settings.alias, ?addresses, attempts, "DNS alias updated");
                    status.send_replace(UpdateStatus::Done { addresses: addresses.clone(), attempts });
                    retries = timing.retry.iter();
                    loop {
                        tokio::select! {
                            () = tokio::time::sleep(timing.recheck_interval) => {}
                            _ = target.changed() => break 'send,
                        }
                        match updater.current().await {
                            Ok(current) if current == wanted => {}
                            Ok(current) => {
                                tracing::warn!(
                                    alias = %updater.settings.alias, ?current, ?wanted,
                                    "the DNS alias was changed by someone else; writing it again"
                                );
                                attempts = 0;
                                continue 'send;
                            }
                            Err(error) => {
                                tracing::warn!(%error, "checking the DNS alias failed; writing it again");
                                continue 'send;
                            }
                        }
                    }
                }
                Err(error) => {
                    let retry_in = retries.next().unwrap_or(timing.retry.cap);
                    tracing::warn!(%error, attempts, ?retry_in, "DNS update failed");
                    status.send_replace(UpdateStatus::Failing {
                        addresses: addresses.clone(),
                        error,
                        attempts,
                        retry_in,
                    });
                    tokio::select! {
                        () = tokio::time::sleep(retry_in) => {}
                        _ = target.changed() => break 'send,
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> Name {
        Name::from_ascii(text).unwrap()
    }

    const SECRET: &str = "cVYHjpw/m8OB4WBo9c1V0UmQ05VzSrniDPOEPhHsnVw=";

    #[test]
    fn a_bare_base64_secret() {
        let secret = parse_key_file(&format!("{SECRET}\n"), &name("k."), KeyAlgorithm::HmacSha256).unwrap();
        assert_eq!(secret.len(), 32);
    }

    #[test]
    fn a_tsig_keygen_file_with_several_keys() {
        let text = format!(
            "# made by tsig-keygen\nkey \"other\" {{\n\talgorithm hmac-sha512;\n\tsecret \"AAAA\";\n}};\n\
             key \"haven-update\" {{\n\talgorithm hmac-sha256;\n\tsecret \"{SECRET}\";\n}};\n"
        );
        let secret = parse_key_file(&text, &name("Haven-Update."), KeyAlgorithm::HmacSha256).unwrap();
        assert_eq!(secret.len(), 32);
        let wrong_algorithm = parse_key_file(&text, &name("haven-update."), KeyAlgorithm::HmacSha512).unwrap_err();
        assert!(
            wrong_algorithm.contains("is hmac-sha256, but dns.update.key_algorithm is hmac-sha512"),
            "{wrong_algorithm}"
        );
        let missing = parse_key_file(&text, &name("nobody."), KeyAlgorithm::HmacSha256).unwrap_err();
        assert!(missing.contains("the file has key(s) \"other\", \"haven-update\" but not \"nobody\""), "{missing}");
    }

    #[test]
    fn broken_key_files_are_named() {
        let k = name("k.");
        let algorithm = KeyAlgorithm::HmacSha256;
        assert!(parse_key_file("", &k, algorithm).unwrap_err().contains("empty"));
        assert!(parse_key_file("not base64!", &k, algorithm).unwrap_err().contains("not valid base64"));
        assert!(parse_key_file("key \"k\" { secret \"abc", &k, algorithm).unwrap_err().contains("not closed"));
        assert!(parse_key_file("key \"k\" { algorithm hmac-sha256; };", &k, algorithm)
            .unwrap_err()
            .contains("no `secret"));
        assert!(parse_key_file("key \"k\" secret;", &k, algorithm).unwrap_err().contains("expected `{`"));
        assert!(parse_key_file("/* key", &k, algorithm).unwrap_err().contains("not closed"));
        let short = TsigKey::new(k, algorithm, vec![1; 8]).unwrap_err();
        assert!(short.contains("8 bytes"), "{short}");
    }

    #[test]
    fn the_secret_is_never_printed() {
        let key = TsigKey::new(name("k."), KeyAlgorithm::HmacSha256, vec![0x41; 32]).unwrap();
        let shown = format!("{key:?}");
        assert!(shown.contains("hidden") && !shown.contains("AAAA") && !shown.contains("65"), "{shown}");
    }

    #[test]
    fn refusals_say_what_to_do() {
        let error = UpdateError::Refused {
            server: "192.0.2.53:53".parse().unwrap(),
            alias: "mgmt.example.internal.".into(),
            rcode: ResponseCode::NotAuth,
            tsig_error: Some(TsigError::BadSig),
            advice: advice(ResponseCode::NotAuth, Some(TsigError::BadSig)),
        };
        let text = error.to_string();
        assert!(text.contains("refused the update of mgmt.example.internal.: NOTAUTH (TSIG error BADSIG)"), "{text}");
        assert!(text.contains("dns.update.key_secret_file"), "{text}");
        assert!(!error.is_transient());
        assert!(advice(ResponseCode::NotAuth, Some(TsigError::BadKey)).contains("key_algorithm"));
        assert!(advice(ResponseCode::Refused, None).contains("update-policy"));
        assert!(
            UpdateError::Unreachable { server: "192.0.2.53:53".parse().unwrap(), reason: "x".into() }.is_transient()
        );
    }

    #[test]
    fn addresses_are_canonical_unique_and_bounded() {
        let addresses: Vec<IpAddr> =
            ["::ffff:192.0.2.1", "192.0.2.1", "2001:db8::1"].iter().map(|a| a.parse().unwrap()).collect();
        assert_eq!(canonical(&addresses), [addresses[1], addresses[2]]);
        let many: Vec<IpAddr> = (0..40).map(|i| IpAddr::from([192, 0, 2, i])).collect();
        assert_eq!(canonical(&many).len(), ADDRESSES_MAX);
    }
}
