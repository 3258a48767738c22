//! Bearer tokens and who may do what: the pure half of authorization.
//!
//! ```text
//!   HTTP request ── Authorization: Bearer hvn_<id>_<secret>
//!        │
//!        ▼  haven-server::auth (IO shell): parse_token, look the id up in the replicated
//!        │  KvState, verify the SHA-256 in constant time, permits(role, route's Access)
//!        ▼
//!   Request { auth: Some(Auth { token_id, access }), now_ms } ── Raft ──▶ KvState::apply
//!        re-checks the token against its state at apply time (revoked? expired at the
//!        leader's stamp? role still enough?) before anything changes
//! ```
//!
//! Tokens look like `hvn_<id>_<secret>`: `id` is 16 lowercase hex digits (not secret: it
//! names the token in lists and revocations), `secret` is 32 random bytes in unpadded
//! base64url (43 characters). The store keeps only the SHA-256 of the whole token text.
//! A fast hash is right here: a slow password hash exists to protect guessable passwords,
//! these secrets are 256 random bits, and a slow hash on every request would itself be a
//! denial of service.
//!
//! Nothing here draws random bytes or reads a clock: the caller passes both in, so every
//! decision is a plain function of its inputs (and the same on every replica).

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use serde::Deserialize;
use serde::Serialize;

/// Every token starts with this, so a token is recognisable in a config file or a leak
/// scanner and cannot be confused with another credential.
pub const TOKEN_PREFIX: &str = "hvn_";

/// Random bytes in a token id. Ids are not secret; 64 bits make a collision among the at
/// most `TOKENS_MAX` tokens of a cluster practically impossible (and a collision is refused
/// at apply time, never silently merged).
pub const TOKEN_ID_BYTES: usize = 8;

/// Characters of a token id: two hex digits per byte.
pub const TOKEN_ID_CHARS: usize = TOKEN_ID_BYTES * 2;

/// Random bytes in a token secret: 256 bits are beyond any online or offline guessing,
/// which is what lets the store keep a fast (SHA-256) hash instead of a slow one.
pub const TOKEN_SECRET_BYTES: usize = 32;

/// Characters of the secret: unpadded base64url of `TOKEN_SECRET_BYTES`.
pub const TOKEN_SECRET_CHARS: usize = (TOKEN_SECRET_BYTES * 4).div_ceil(3);

/// Length of a whole token: prefix, id, separator, secret.
pub const TOKEN_CHARS: usize = TOKEN_PREFIX.len() + TOKEN_ID_CHARS + 1 + TOKEN_SECRET_CHARS;

/// Characters of a SHA-256 in lowercase hex.
pub const SHA256_HEX_CHARS: usize = 64;

/// Longest token name in bytes: names are labels for people (`ci-deploy`, `alice`), shown
/// in one column of `haven tokens list`.
pub const TOKEN_NAME_BYTES_MAX: usize = 64;

/// Most tokens a cluster holds. Every token lives in every replica's memory and snapshot and
/// `GET /v1/tokens` returns them all in one answer; a fleet needs a few per operator and
/// per automation, so ten thousand is far beyond need while keeping the list under ~2 MiB.
pub const TOKENS_MAX: usize = 10_000;

/// Shortest token lifetime. The API speaks whole seconds, and nodes' clocks agree to well
/// under a second, so a one-second token still expires at the same moment everywhere.
pub const TOKEN_TTL_SECONDS_MIN: u64 = 1;

/// Lifetime of a join token created without one: an hour covers starting a new node, and a
/// join token forgotten in a provisioning script stops admitting anyone soon after.
pub const JOIN_TOKEN_TTL_SECONDS_DEFAULT: u64 = 60 * 60;

/// Longest token lifetime: ten years. A token that should never expire simply has no TTL;
/// the bound keeps `now + ttl` far from overflowing and catches unit mistakes (ms for s).
pub const TOKEN_TTL_SECONDS_MAX: u64 = 10 * 365 * 24 * 60 * 60;

const _: () = assert!(TOKEN_SECRET_CHARS == 43);
const _: () = assert!(TOKEN_CHARS == 64);
const _: () = assert!(TOKEN_TTL_SECONDS_MIN >= 1 && TOKEN_TTL_SECONDS_MIN <= TOKEN_TTL_SECONDS_MAX);
const _: () = assert!(
    JOIN_TOKEN_TTL_SECONDS_DEFAULT >= TOKEN_TTL_SECONDS_MIN && JOIN_TOKEN_TTL_SECONDS_DEFAULT <= TOKEN_TTL_SECONDS_MAX
);
// now_ms (about 2^41 today) + the longest TTL in ms must not come near u64::MAX.
const _: () = assert!(TOKEN_TTL_SECONDS_MAX.checked_mul(1000).is_some());

/// What a token may do. Appending a role keeps stored states decodable; reordering does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything: tokens, members (joins and removals), maintenance, the HA configuration
    /// (drafts and apply), teardown, restart, recovery; and all an operator may.
    Admin,
    /// Reads, KV writes, switchover; no configuration drafts or apply, no token or member
    /// management.
    Operator,
    /// Reads: keys, watches, status, metrics, members, the HA configuration and its draft,
    /// the audit log (without token details, see `admin::AuditRecord::for_non_admin`).
    Reader,
    /// Joining one node, once: the join claims the token for its node id and data dir, and
    /// the token is deleted once that node is admitted (so it admits nobody after, even when
    /// the node is removed). Expires after an hour unless created with another TTL.
    Join,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Admin, Role::Operator, Role::Reader, Role::Join];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Reader => "reader",
            Role::Join => "join",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(text: &str) -> Result<Role, String> {
        Role::ALL.into_iter().find(|role| role.as_str() == text).ok_or_else(|| {
            let names: Vec<&str> = Role::ALL.iter().map(|role| role.as_str()).collect();
            format!("unknown role {text:?}; the roles are {}", names.join(", "))
        })
    }
}

/// What a route (or a command) needs. Each route of the API is classified with one of
/// these in `haven_server::api::ROUTES`; an unclassified route cannot be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Access {
    /// No token at all: health checks for load balancers and supervisors.
    Public,
    /// Reading keys, watches, status, metrics (`GET /metrics`), the HA configuration, its
    /// draft and the audit log.
    Read,
    /// Reading the member list. Also open to join tokens: a joining node reads it first.
    ReadMembers,
    /// Changing keys, switchover.
    Write,
    /// Admitting a node into the cluster.
    Join,
    /// Tokens, member removal, maintenance, configuration drafts and apply, teardown,
    /// restart, recovery.
    Admin,
}

impl Access {
    pub const ALL: [Access; 6] =
        [Access::Public, Access::Read, Access::ReadMembers, Access::Write, Access::Join, Access::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Access::Public => "public",
            Access::Read => "read",
            Access::ReadMembers => "read-members",
            Access::Write => "write",
            Access::Join => "join",
            Access::Admin => "admin",
        }
    }

    /// The roles that may use it, strongest first (for "needs role X" messages).
    pub fn roles(self) -> Vec<Role> {
        Role::ALL.into_iter().filter(|role| permits(*role, self)).collect()
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The role table. Written out in full (no wildcard arm) so adding a role or an access
/// level does not compile until every pair has been decided.
pub const fn permits(role: Role, access: Access) -> bool {
    use Access as A;
    match role {
        Role::Admin => true,
        Role::Operator => match access {
            A::Public | A::Read | A::ReadMembers | A::Write => true,
            A::Join | A::Admin => false,
        },
        Role::Reader => match access {
            A::Public | A::Read | A::ReadMembers => true,
            A::Write | A::Join | A::Admin => false,
        },
        Role::Join => match access {
            A::Public | A::ReadMembers | A::Join => true,
            A::Read | A::Write | A::Admin => false,
        },
    }
}

/// The node a join token was spent on. The same node (same data dir) may repeat its join,
/// for example after a lost answer or a restart before its promotion; nobody else may.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinClaim {
    pub node_id: u64,
    pub incarnation: String,
}

/// A token as the replicated store keeps it: never the secret, only its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: String,
    pub name: String,
    pub role: Role,
    /// SHA-256 of the whole token text, lowercase hex.
    pub sha256_hex: String,
    /// The leader's wall clock when the creation was proposed (ms since the Unix epoch).
    pub created_ms: u64,
    /// The token is refused at and after this time; `None`: it does not expire.
    pub expires_ms: Option<u64>,
    /// For join tokens: the join that consumed it.
    pub used_by: Option<JoinClaim>,
}

impl TokenRecord {
    pub fn used(&self) -> bool {
        self.used_by.is_some()
    }

    pub fn expired_at(&self, now_ms: u64) -> bool {
        self.expires_ms.is_some_and(|expires_ms| now_ms >= expires_ms)
    }

    /// Does `presented` carry this token's secret? Constant time in the secret.
    pub fn matches(&self, presented: &PresentedToken<'_>) -> bool {
        presented.id == self.id && presented.hashes_to(&self.sha256_hex)
    }
}

/// The authenticated caller of a request, as carried in the Raft log with the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Auth {
    /// The token's id (never its secret).
    pub token_id: String,
    /// What the route needed; checked again when the request is applied.
    pub access: Access,
}

/// A syntactically valid token as presented by a client. Borrowing: nothing is copied.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PresentedToken<'a> {
    pub id: &'a str,
    /// The whole token text, which is what is hashed.
    text: &'a str,
}

impl PresentedToken<'_> {
    /// Is `sha256_hex` the hash of this token's text? Hashes and compares in constant time
    /// in the secret.
    pub fn hashes_to(&self, sha256_hex: &str) -> bool {
        constant_time_eq(token_sha256_hex(self.text).as_bytes(), sha256_hex.as_bytes())
    }
}

/// Compared against when a presented token's id is unknown, so an unknown id costs the same
/// hash and comparison as a known id with a wrong secret. No token hashes to it.
pub const UNKNOWN_TOKEN_SHA256_HEX: &str = "0000000000000000000000000000000000000000000000000000000000000000";

const _: () = assert!(UNKNOWN_TOKEN_SHA256_HEX.len() == SHA256_HEX_CHARS);

impl fmt::Debug for PresentedToken<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The secret is never printed, not even in a debug dump.
        f.debug_struct("PresentedToken").field("id", &self.id).field("secret", &"<redacted>").finish()
    }
}

/// A client's bearer token as it presented it, kept only while its request is served.
///
/// A follower that forwards a client's request to the leader sends this along over the
/// mutually authenticated peer link, and the leader checks it against its own token table:
/// the forwarding node vouches for nothing, so a member (or a joined impostor) cannot make
/// the leader act for a token it does not hold. A token id alone would not do: ids are not
/// secret, and every member holds every token's hash. Never printed (`Debug` redacts it),
/// never logged, never stored.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Credential(String);

impl Credential {
    pub fn new(token: impl Into<String>) -> Credential {
        Credential(token.into())
    }

    /// The token it carries, if it is one (a peer may send anything).
    pub fn presented(&self) -> Result<PresentedToken<'_>, MalformedToken> {
        parse_token(&self.0)
    }

    /// The token text, for the one place that sends it on (an HTTP client's header).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Credential(<redacted>)")
    }
}

/// Why a text is not a token. Deliberately says nothing about the text itself, so error
/// messages and logs can never echo a (mistyped) secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MalformedToken;

impl fmt::Display for MalformedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not a Haven token (they look like {TOKEN_PREFIX}<16 hex digits>_<43 characters>)")
    }
}

impl std::error::Error for MalformedToken {}

/// Parses `hvn_<id>_<secret>`. Any input is safe: no panics, no allocation, and the error
/// does not quote the input.
pub fn parse_token(text: &str) -> Result<PresentedToken<'_>, MalformedToken> {
    // Byte-wise checks: every accepted byte is ASCII, so the slicing below is on char
    // boundaries by construction.
    let bytes = text.as_bytes();
    if bytes.len() != TOKEN_CHARS || !text.starts_with(TOKEN_PREFIX) {
        return Err(MalformedToken);
    }
    let id_end = TOKEN_PREFIX.len() + TOKEN_ID_CHARS;
    let id = &bytes[TOKEN_PREFIX.len()..id_end];
    let secret = &bytes[id_end + 1..];
    let id_ok = id.iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b));
    let secret_ok = secret.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_');
    if !id_ok || bytes[id_end] != b'_' || !secret_ok {
        return Err(MalformedToken);
    }
    Ok(PresentedToken { id: &text[TOKEN_PREFIX.len()..id_end], text })
}

/// Is `id` shaped like a token id (16 lowercase hex digits)?
pub fn is_token_id(id: &str) -> bool {
    id.len() == TOKEN_ID_CHARS && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A freshly made token: the only value that ever holds the secret. `Debug` redacts it.
pub struct NewToken {
    /// `hvn_<id>_<secret>`: give it to the user once, store it nowhere.
    pub token: String,
    pub id: String,
    pub sha256_hex: String,
}

impl fmt::Debug for NewToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewToken").field("id", &self.id).field("token", &"<redacted>").finish()
    }
}

/// Builds a token from random bytes the caller drew from the OS.
pub fn new_token(id_bytes: [u8; TOKEN_ID_BYTES], secret_bytes: [u8; TOKEN_SECRET_BYTES]) -> NewToken {
    let id = hex(&id_bytes);
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret_bytes);
    let token = format!("{TOKEN_PREFIX}{id}_{secret}");
    let sha256_hex = token_sha256_hex(&token);
    NewToken { token, id, sha256_hex }
}

/// SHA-256 of a token's text, lowercase hex.
pub fn token_sha256_hex(token: &str) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref())
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

/// Compares two byte strings in time that depends only on their lengths (which are public:
/// both are hex SHA-256s), so response times say nothing about how much of a hash matched.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // black_box: keep the optimiser from turning the fold into an early-exit comparison.
    std::hint::black_box(difference) == 0
}

/// Checks a token name: 1-`TOKEN_NAME_BYTES_MAX` bytes of letters, digits, `.`, `_`, `-`,
/// `@`, so it prints safely in a table and a log line.
pub fn validate_token_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > TOKEN_NAME_BYTES_MAX {
        return Err(format!("a token name must be 1-{TOKEN_NAME_BYTES_MAX} characters"));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@')) {
        return Err("a token name may hold letters, digits, `.`, `_`, `-` and `@` only".into());
    }
    Ok(())
}

/// Checks a TTL in seconds against the bounds.
pub fn validate_ttl_seconds(ttl_seconds: u64) -> Result<(), String> {
    if !(TOKEN_TTL_SECONDS_MIN..=TOKEN_TTL_SECONDS_MAX).contains(&ttl_seconds) {
        return Err(format!(
            "the TTL must be {TOKEN_TTL_SECONDS_MIN}-{TOKEN_TTL_SECONDS_MAX} seconds (ten years); leave it out for a \
             token that does not expire"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every (role, access) pair, decided once more by hand: the table is the policy of the
    /// issue ("admin everything, operator reads + KV writes, reader reads, join joining").
    #[test]
    fn role_table() {
        use Access as A;
        #[rustfmt::skip]
        let expected: &[(Role, &[(Access, bool)])] = &[
            (Role::Admin,    &[(A::Public, true), (A::Read, true),  (A::ReadMembers, true), (A::Write, true),  (A::Join, true),  (A::Admin, true)]),
            (Role::Operator, &[(A::Public, true), (A::Read, true),  (A::ReadMembers, true), (A::Write, true),  (A::Join, false), (A::Admin, false)]),
            (Role::Reader,   &[(A::Public, true), (A::Read, true),  (A::ReadMembers, true), (A::Write, false), (A::Join, false), (A::Admin, false)]),
            (Role::Join,     &[(A::Public, true), (A::Read, false), (A::ReadMembers, true), (A::Write, false), (A::Join, true),  (A::Admin, false)]),
        ];
        let mut pairs = 0;
        for (role, row) in expected {
            for (access, allowed) in *row {
                assert_eq!(permits(*role, *access), *allowed, "{role} / {access}");
                pairs += 1;
            }
        }
        assert_eq!(pairs, Role::ALL.len() * Access::ALL.len(), "every pair is in the table");
        assert_eq!(Access::Write.roles(), [Role::Admin, Role::Operator]);
        assert_eq!(Access::Join.roles(), [Role::Admin, Role::Join]);
    }

    #[test]
    fn roles_parse_and_print() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
            assert_eq!(serde_json::to_string(&role).unwrap(), format!("\"{role}\""));
        }
        let error = "root".parse::<Role>().unwrap_err();
        assert!(error.contains("admin, operator, reader, join"), "{error}");
    }

    #[test]
    fn new_tokens_parse_and_verify() {
        let made = new_token([0xab; TOKEN_ID_BYTES], [7; TOKEN_SECRET_BYTES]);
        assert_eq!(made.token.len(), TOKEN_CHARS);
        assert!(made.token.starts_with("hvn_abababababababab_"));
        let presented = parse_token(&made.token).unwrap();
        assert_eq!(presented.id, made.id);
        let record = TokenRecord {
            id: made.id.clone(),
            name: "t".into(),
            role: Role::Reader,
            sha256_hex: made.sha256_hex.clone(),
            created_ms: 0,
            expires_ms: Some(10),
            used_by: None,
        };
        assert!(record.matches(&presented));
        // Same id, another secret: refused.
        let other = new_token([0xab; TOKEN_ID_BYTES], [8; TOKEN_SECRET_BYTES]);
        assert!(!record.matches(&parse_token(&other.token).unwrap()));
        assert!(!record.expired_at(9) && record.expired_at(10));
        let printed = format!("{made:?} {presented:?}");
        assert!(!printed.contains(&made.token[21..]), "debug output holds no secret: {printed}");
    }

    #[test]
    fn garbage_is_not_a_token_and_never_panics() {
        let good = new_token([1; TOKEN_ID_BYTES], [2; TOKEN_SECRET_BYTES]).token;
        let mut cases: Vec<String> = vec![
            String::new(),
            "hvn_".into(),
            "Bearer x".into(),
            good.to_uppercase(),
            good.replacen("hvn_", "hvx_", 1),
            format!("{good}x"),
            good[..good.len() - 1].to_string(),
            good.replacen('_', "-", 2),
            format!("hvn_{}_{}", "g".repeat(16), "a".repeat(43)),
            format!("hvn_{}_{}", "0".repeat(16), "=".repeat(43)),
            format!("hvn_{}_{}é", "0".repeat(16), "a".repeat(41)),
            format!("hvn_{}é_{}", "0".repeat(14), "a".repeat(43)),
            "\0".repeat(64),
        ];
        // Every truncation, and a two-byte character (same length in bytes) at every place.
        for end in 0..good.len() {
            cases.push(good[..end].to_string());
            if end + 2 <= good.len() {
                let mut shifted = good.clone();
                shifted.replace_range(end..end + 2, "é");
                assert_eq!(shifted.len(), TOKEN_CHARS);
                cases.push(shifted);
            }
        }
        for case in &cases {
            assert_eq!(parse_token(case), Err(MalformedToken), "{case:?}");
        }
        assert!(parse_token(&good).is_ok());
        assert!(!MalformedToken.to_string().contains(&good));
    }

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn names_ids_and_ttls_are_checked() {
        assert!(validate_token_name("ci-deploy_2@site.a").is_ok());
        for bad in ["", "two words", "tab\t", "é", &"n".repeat(TOKEN_NAME_BYTES_MAX + 1)] {
            assert!(validate_token_name(bad).is_err(), "{bad:?}");
        }
        assert!(is_token_id("0123456789abcdef"));
        assert!(!is_token_id("0123456789ABCDEF") && !is_token_id("0123") && !is_token_id("../../etc/passwd"));
        assert!(validate_ttl_seconds(TOKEN_TTL_SECONDS_MIN).is_ok());
        assert!(validate_ttl_seconds(TOKEN_TTL_SECONDS_MAX).is_ok());
        assert!(validate_ttl_seconds(0).is_err() && validate_ttl_seconds(TOKEN_TTL_SECONDS_MAX + 1).is_err());
    }
}
