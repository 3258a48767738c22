//! RFC 2136 dynamic update with TSIG against a real BIND 9 (Debian's `bind9` package;
//! .ci/run installs it). Each test starts its own `named` in the foreground on 127.0.0.1 on
//! a free port, from a temporary directory holding its configuration, a TSIG key
//! (hmac-sha256, a fresh random secret) and a dynamic zone `example.internal` whose
//! update-policy lets that key change the A and AAAA records of `mgmt.example.internal`
//! only. named runs as the current user (root here: without `-u` it keeps root and needs
//! no other account). Without `named` the tests print why they are skipped and pass.

use std::collections::BTreeSet;
use std::io::Read;
use std::net::IpAddr;
use std::net::SocketAddr;
use std::path::Path;
use std::path::PathBuf;
use std::process::Child;
use std::process::Command;
use std::process::Stdio;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use base64::Engine;
use haven_client::Backoff;
use haven_dns::update::FollowerTiming;
use haven_dns::update::ALARM_CONDITION;
use haven_dns::DynamicUpdater;
use haven_dns::KeyAlgorithm;
use haven_dns::UpdateError;
use haven_dns::UpdateFollower;
use haven_dns::UpdateSettings;
use haven_dns::UpdateStatus;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::tsig::TsigError;
use hickory_proto::rr::Name;
use tempfile::TempDir;
use tokio::sync::watch;

const ZONE: &str = "example.internal.";
const ALIAS: &str = "mgmt.example.internal.";
const KEY_NAME: &str = "haven-update";

/// Generous, for a machine shared with other builds: named starts in well under a second.
const NAMED_START_TIMEOUT: Duration = Duration::from_secs(60);
/// Ports tried before giving up on starting named.
const NAMED_START_ATTEMPTS: usize = 3;
/// How long a follower gets to reach a state; with the test timing it needs well under 1 s.
const FOLLOWER_TIMEOUT: Duration = Duration::from_secs(60);

/// `named`, if installed.
fn named_binary() -> Option<PathBuf> {
    ["named", "/usr/sbin/named"]
        .into_iter()
        .find(|candidate| Command::new(candidate).arg("-v").output().is_ok_and(|output| output.status.success()))
        .map(PathBuf::from)
}

fn skip(test: &str) -> bool {
    if named_binary().is_some() {
        return false;
    }
    eprintln!("SKIPPED {test}: BIND's `named` is not installed (apt-get install bind9; .ci/run does)");
    true
}

/// A port free on 127.0.0.1 for both UDP and TCP at the moment of asking.
fn free_port() -> u16 {
    loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom").unwrap().read_exact(&mut bytes).unwrap();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// named's directory: configuration, key and zone, for one port. [`BindZone::start`] runs it.
struct BindZone {
    dir: TempDir,
    port: u16,
    secret: String,
}

/// A running named with the test zone; killed when dropped.
struct Bind {
    zone: BindZone,
    child: Child,
}

impl std::ops::Deref for Bind {
    type Target = BindZone;

    fn deref(&self) -> &BindZone {
        &self.zone
    }
}

impl BindZone {
    fn new(port: u16) -> BindZone {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().display().to_string();
        let secret = random_secret();
        std::fs::write(
            dir.path().join("example.internal.db"),
            "$TTL 0\n\
             @    IN SOA ns.example.internal. hostmaster.example.internal. 1 3600 600 86400 0\n\
             @    IN NS  ns.example.internal.\n\
             ns   IN A   127.0.0.1\n\
             mgmt IN A   192.0.2.1\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("named.conf"),
            format!(
                r#"options {{
    directory "{path}";
    pid-file "{path}/named.pid";
    session-keyfile "{path}/session.key";
    listen-on port {port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    recursion no;
    dnssec-validation no;
}};
controls {{ }};
key "{KEY_NAME}" {{ algorithm hmac-sha256; secret "{secret}"; }};
zone "example.internal" {{
    type primary;
    file "{path}/example.internal.db";
    update-policy {{ grant {KEY_NAME} name {ALIAS} A AAAA; }};
}};
"#
            ),
        )
        .unwrap();
        BindZone { dir, port, secret }
    }

    /// Runs named in the foreground (`-g`), IPv4 only, one worker thread.
    fn start(self) -> Bind {
        let log = std::fs::File::create(self.dir.path().join("named.log")).unwrap();
        let child = Command::new(named_binary().expect("named is installed"))
            .args(["-g", "-4", "-n", "1", "-c"])
            .arg(self.dir.path().join("named.conf"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("named starts");
        Bind { zone: self, child }
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("named.log")).unwrap_or_default()
    }

    /// A new key file next to the configuration, in BIND's syntax.
    fn key_file(&self, name: &str, algorithm: &str, secret: &str) -> PathBuf {
        static FILES: AtomicUsize = AtomicUsize::new(0);
        let path = self.dir.path().join(format!("{name}-{}.key", FILES.fetch_add(1, Ordering::Relaxed)));
        std::fs::write(&path, format!("key \"{name}\" {{\n\talgorithm {algorithm};\n\tsecret \"{secret}\";\n}};\n"))
            .unwrap();
        path
    }

    fn settings(&self, key_file: &Path) -> UpdateSettings {
        UpdateSettings {
            server: self.addr(),
            zone: Name::from_ascii(ZONE).unwrap(),
            alias: Name::from_ascii(ALIAS).unwrap(),
            ttl_s: 0,
            key_name: Name::from_ascii(format!("{KEY_NAME}.")).unwrap(),
            key_algorithm: KeyAlgorithm::HmacSha256,
            key_secret_file: key_file.to_path_buf(),
        }
    }

    fn updater(&self) -> DynamicUpdater {
        let key_file = self.key_file(KEY_NAME, "hmac-sha256", &self.secret);
        DynamicUpdater::new(self.settings(&key_file))
    }

    /// What `dig` says the alias is (A and AAAA), or `None` when dig is not installed.
    fn dig(&self, name: &str) -> Option<BTreeSet<IpAddr>> {
        let mut addresses = BTreeSet::new();
        for rtype in ["A", "AAAA"] {
            let output = Command::new("dig")
                .args(["@127.0.0.1", "-p", &self.port.to_string(), "+short", "+tries=1", "+time=10", name, rtype])
                .output()
                .ok()?;
            let text = String::from_utf8(output.stdout).unwrap();
            addresses.extend(text.lines().map(|line| line.parse::<IpAddr>().expect("dig prints addresses")));
        }
        Some(addresses)
    }
}

impl Bind {
    /// Waits until named answers a signed query for the alias; the error holds named's log.
    async fn ready(&mut self, updater: &DynamicUpdater) -> Result<(), String> {
        let deadline = Instant::now() + NAMED_START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("named exited ({status}):\n{}", self.log()));
            }
            if updater.current().await.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("named did not answer within {NAMED_START_TIMEOUT:?}:\n{}", self.log()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Bind {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn set(addresses: &[&str]) -> BTreeSet<IpAddr> {
    addresses.iter().map(|address| address.parse().unwrap()).collect()
}

fn ips(addresses: &[&str]) -> Vec<IpAddr> {
    addresses.iter().map(|address| address.parse().unwrap()).collect()
}

/// A named that answers, with an updater holding the right key. The free port can be
/// taken by another process before named binds it; then another port is tried.
async fn started() -> (Bind, DynamicUpdater) {
    let mut attempt = 1;
    loop {
        let mut bind = BindZone::new(free_port()).start();
        let updater = bind.updater();
        match bind.ready(&updater).await {
            Ok(()) => return (bind, updater),
            Err(why) if attempt < NAMED_START_ATTEMPTS => eprintln!("named on port {}: {why}; another port", bind.port),
            Err(why) => panic!("named on port {}: {why}", bind.port),
        }
        attempt += 1;
    }
}

/// A failover as the updater sees it: the alias moves to the new primary's addresses
/// (both families), then to the next one's; BIND answers them (checked with a hickory
/// query and with dig).
#[tokio::test]
async fn an_update_moves_the_alias_at_bind() {
    if skip("an_update_moves_the_alias_at_bind") {
        return;
    }
    let (bind, updater) = started().await;
    assert_eq!(updater.current().await.unwrap(), set(&["192.0.2.1"]), "the zone file's address");

    updater.replace(&ips(&["192.0.2.2", "2001:db8::2"])).await.unwrap();
    assert_eq!(updater.current().await.unwrap(), set(&["192.0.2.2", "2001:db8::2"]));
    if let Some(dig) = bind.dig(ALIAS) {
        assert_eq!(dig, set(&["192.0.2.2", "2001:db8::2"]));
    }

    updater.replace(&ips(&["192.0.2.3"])).await.unwrap();
    assert_eq!(updater.current().await.unwrap(), set(&["192.0.2.3"]), "the old AAAA is gone too");
    if let Some(dig) = bind.dig(ALIAS) {
        assert_eq!(dig, set(&["192.0.2.3"]));
    } else {
        eprintln!("dig is not installed (bind9-dnsutils): checked with hickory only");
    }
    let log = bind.log();
    assert!(log.contains("adding an RR at 'mgmt.example.internal' A 192.0.2.3"), "{log}");

    // Nothing to point at: refused before anything is sent.
    assert!(matches!(updater.replace(&[]).await, Err(UpdateError::NoAddresses { .. })));
}

/// A wrong secret: BIND answers NOTAUTH with TSIG error BADSIG, which comes back as a clear,
/// non-transient error naming the key file; the alias is unchanged.
#[tokio::test]
async fn a_wrong_tsig_secret_is_a_clear_error() {
    if skip("a_wrong_tsig_secret_is_a_clear_error") {
        return;
    }
    let (bind, updater) = started().await;
    let wrong = bind.key_file(KEY_NAME, "hmac-sha256", &random_secret());
    let impostor = DynamicUpdater::new(bind.settings(&wrong));
    let error = impostor.replace(&ips(&["192.0.2.66"])).await.unwrap_err();
    match &error {
        UpdateError::Refused { rcode, tsig_error, .. } => {
            assert_eq!((*rcode, *tsig_error), (ResponseCode::NotAuth, Some(TsigError::BadSig)), "{error}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let text = error.to_string();
    assert!(text.contains("NOTAUTH (TSIG error BADSIG)") && text.contains("dns.update.key_secret_file"), "{text}");
    assert!(!error.is_transient());
    eprintln!("alarm: RaiseAlarm \"{ALARM_CONDITION}\" \"{text}\"");
    assert_eq!(updater.current().await.unwrap(), set(&["192.0.2.1"]), "nothing changed");
}

/// A key the server does not know (wrong name, or right name with another algorithm):
/// BADKEY, with advice about the name and algorithm.
#[tokio::test]
async fn an_unknown_key_is_a_clear_error() {
    if skip("an_unknown_key_is_a_clear_error") {
        return;
    }
    let (bind, updater) = started().await;
    let stranger = bind.key_file("someone-else", "hmac-sha256", &bind.secret);
    let mut settings = bind.settings(&stranger);
    settings.key_name = Name::from_ascii("someone-else.").unwrap();
    let error = DynamicUpdater::new(settings).replace(&ips(&["192.0.2.66"])).await.unwrap_err();
    assert!(matches!(error, UpdateError::Refused { tsig_error: Some(TsigError::BadKey), .. }), "{error:?}");
    assert!(error.to_string().contains("dns.update.key_algorithm"), "{error}");

    let sha512 = bind.key_file(KEY_NAME, "hmac-sha512", &bind.secret);
    let mut settings = bind.settings(&sha512);
    settings.key_algorithm = KeyAlgorithm::HmacSha512;
    let error = DynamicUpdater::new(settings).replace(&ips(&["192.0.2.66"])).await.unwrap_err();
    assert!(matches!(error, UpdateError::Refused { tsig_error: Some(TsigError::BadKey), .. }), "{error:?}");
    assert_eq!(updater.current().await.unwrap(), set(&["192.0.2.1"]), "nothing changed");
}

/// The right key, but the server's policy does not let it change this name: REFUSED, with
/// advice about the update policy. A key file that does not exist is named as such.
#[tokio::test]
async fn a_policy_refusal_and_a_missing_key_file_are_clear_errors() {
    if skip("a_policy_refusal_and_a_missing_key_file_are_clear_errors") {
        return;
    }
    let (bind, updater) = started().await;
    let mut settings = updater.settings().clone();
    settings.alias = Name::from_ascii("other.example.internal.").unwrap();
    let error = DynamicUpdater::new(settings).replace(&ips(&["192.0.2.66"])).await.unwrap_err();
    assert!(matches!(error, UpdateError::Refused { rcode: ResponseCode::Refused, tsig_error: None, .. }), "{error:?}");
    assert!(error.to_string().contains("update-policy"), "{error}");

    let missing = bind.settings(Path::new("/nonexistent/haven-dns.key"));
    let error = DynamicUpdater::new(missing).replace(&ips(&["192.0.2.66"])).await.unwrap_err();
    assert!(matches!(error, UpdateError::Key { .. }), "{error:?}");
    assert!(error.to_string().contains("/nonexistent/haven-dns.key: cannot read it"), "{error}");
}

fn test_timing() -> FollowerTiming {
    FollowerTiming {
        retry: Backoff { base: Duration::from_millis(50), cap: Duration::from_millis(200) },
        recheck_interval: Duration::from_millis(300),
    }
}

async fn wait_for(
    status: &mut watch::Receiver<UpdateStatus>,
    what: &str,
    done: impl Fn(&UpdateStatus) -> bool,
) -> UpdateStatus {
    let reached = tokio::time::timeout(FOLLOWER_TIMEOUT, status.wait_for(|status| done(status)))
        .await
        .map(|reached| reached.map(|status| status.clone()));
    match reached {
        Ok(Ok(status)) => status,
        _ => panic!("the follower did not reach {what} within {FOLLOWER_TIMEOUT:?}: {:?}", *status.borrow()),
    }
}

/// The follower as the server will use it: the DNS server is down at first (Failing,
/// transient, retried), comes up (Done); someone else changes the alias (written again at
/// the next check); a failover moves it (dig sees the new primary); after stop() nothing
/// more is sent.
#[tokio::test]
async fn the_follower_retries_restores_and_follows_a_failover() {
    if skip("the_follower_retries_restores_and_follows_a_failover") {
        return;
    }
    // The configuration (and the key) exist before the server runs.
    let zone = BindZone::new(free_port());
    let port = zone.port;
    let updater = zone.updater();
    let follower = UpdateFollower::spawn(updater.clone(), test_timing());
    let mut status = follower.status();
    assert_eq!(*status.borrow(), UpdateStatus::Idle);

    follower.follow(ips(&["192.0.2.2"]));
    let failing = wait_for(&mut status, "Failing (server down)", |s| matches!(s, UpdateStatus::Failing { .. })).await;
    let UpdateStatus::Failing { error, .. } = failing else { unreachable!() };
    assert!(matches!(error, UpdateError::Unreachable { .. }) && error.is_transient(), "{error:?}");

    // The server comes up.
    let bind = zone.start();
    let done = wait_for(&mut status, "Done", |s| matches!(s, UpdateStatus::Done { .. })).await;
    assert!(matches!(done, UpdateStatus::Done { attempts, .. } if attempts >= 2), "{done:?}");
    assert_eq!(updater.current().await.unwrap(), set(&["192.0.2.2"]));

    // Someone else (an old primary's late update, an operator) changes the alias.
    updater.replace(&ips(&["192.0.2.99"])).await.unwrap();
    let deadline = Instant::now() + FOLLOWER_TIMEOUT;
    while updater.current().await.unwrap() != set(&["192.0.2.2"]) {
        assert!(Instant::now() < deadline, "the follower did not write the alias again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Failover: the next primary's addresses.
    follower.follow(ips(&["192.0.2.3", "2001:db8::3"]));
    wait_for(
        &mut status,
        "Done for the new primary",
        |s| matches!(s, UpdateStatus::Done { addresses, .. } if addresses.len() == 2),
    )
    .await;
    assert_eq!(updater.current().await.unwrap(), set(&["192.0.2.3", "2001:db8::3"]));
    if let Some(dig) = bind.dig(ALIAS) {
        assert_eq!(dig, set(&["192.0.2.3", "2001:db8::3"]), "dig @127.0.0.1 -p {port} {ALIAS}");
    }

    // Not primary any more: a change by someone else stays.
    follower.stop();
    wait_for(&mut status, "Idle", |s| *s == UpdateStatus::Idle).await;
    updater.replace(&ips(&["192.0.2.4"])).await.unwrap();
    tokio::time::sleep(test_timing().recheck_interval * 3).await;
    assert_eq!(updater.current().await.unwrap(), set(&["192.0.2.4"]));
    follower.shutdown().await;
}

/// A wrong key is an alarm that stays until someone fixes the key file; then the next retry
/// succeeds without a restart (the file is read on every attempt).
#[tokio::test]
async fn a_wrong_key_alarms_until_the_file_is_fixed() {
    if skip("a_wrong_key_alarms_until_the_file_is_fixed") {
        return;
    }
    let (bind, _updater) = started().await;
    let key_file = bind.dir.path().join("fixable.key");
    std::fs::write(&key_file, random_secret()).unwrap();
    let updater = DynamicUpdater::new(bind.settings(&key_file));
    let follower = UpdateFollower::spawn(updater.clone(), test_timing());
    let mut status = follower.status();
    follower.follow(ips(&["192.0.2.7"]));
    let failing = wait_for(
        &mut status,
        "Failing (BADSIG)",
        |s| matches!(s, UpdateStatus::Failing { attempts, .. } if *attempts >= 2),
    )
    .await;
    let UpdateStatus::Failing { error, .. } = failing else { unreachable!() };
    assert!(matches!(error, UpdateError::Refused { tsig_error: Some(TsigError::BadSig), .. }), "{error:?}");

    std::fs::write(&key_file, &bind.secret).unwrap();
    wait_for(&mut status, "Done after the fix", |s| matches!(s, UpdateStatus::Done { .. })).await;
    assert_eq!(updater.current().await.unwrap(), set(&["192.0.2.7"]));
    follower.shutdown().await;
}
