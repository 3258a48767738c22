//! Ping targets probed over real ICMP sockets (no mocks).
//!
//! Loopback targets run everywhere an ICMP socket opens (a datagram socket where
//! `net.ipv4.ping_group_range` allows it, else a raw one as root); without either the
//! tests print why and pass. The black hole, the unroutable address and the datagram
//! socket need a network namespace of their own (root and `ip`): the probing thread joins
//! it, so nothing on the host's network changes.

use std::fs::File;
use std::os::fd::AsRawFd as _;
use std::process::Command;
use std::time::Duration;
use std::time::Instant;

use haven_core::ha::gating::Gate;
use haven_server::targets::icmp_socket_kind;
use haven_server::targets::IcmpSocketKind;
use haven_server::targets::TargetProber;
use haven_server::targets::TargetStatus;

/// Probe interval in the tests: fast, yet far above loopback round trips.
const INTERVAL: Duration = Duration::from_millis(200);
/// How long a target that should answer may take to show it: generous for a loaded CI
/// machine (loopback answers in microseconds).
const ANSWER_BOUND: Duration = Duration::from_secs(5);

/// Whether ICMP probes can run here; prints why not.
fn icmp_usable(ipv6: bool) -> bool {
    match icmp_socket_kind(ipv6) {
        Ok(kind) => {
            eprintln!("ICMP{} socket: {kind:?}", if ipv6 { "v6" } else { "" });
            true
        }
        Err(error) => {
            eprintln!("skipped: {error}");
            false
        }
    }
}

fn status_of(prober: &TargetProber, target: &str) -> TargetStatus {
    let snapshot = prober.snapshot(Instant::now());
    snapshot
        .iter()
        .find(|status| status.target == target)
        .cloned()
        .unwrap_or_else(|| panic!("{target} not in {snapshot:?}"))
}

/// Waits until `target`'s status satisfies `done`, at most `bound`.
async fn wait_for(
    prober: &TargetProber,
    target: &str,
    bound: Duration,
    done: impl Fn(&TargetStatus) -> bool,
) -> TargetStatus {
    let start = Instant::now();
    loop {
        let status = status_of(prober, target);
        if done(&status) {
            return status;
        }
        assert!(start.elapsed() < bound, "{target} after {bound:?}: {:?}", prober.snapshot(Instant::now()));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_for_answer(prober: &TargetProber, target: &str) -> TargetStatus {
    let status = wait_for(prober, target, ANSWER_BOUND, |status| status.last_ok_ms_ago.is_some()).await;
    assert!(status.last_rtt_us.is_some() && status.last_error.is_none() && status.socket.is_some(), "{status:?}");
    status
}

/// Waits until `target` has failed `probes` times in a row and checks it never answered.
async fn wait_for_failures(prober: &TargetProber, target: &str, probes: u64) -> TargetStatus {
    let status = wait_for(prober, target, ANSWER_BOUND, |status| status.failed_in_a_row >= probes).await;
    assert_eq!(status.last_ok_ms_ago, None, "{status:?}");
    status
}

#[tokio::test]
async fn loopback_v4_answers() {
    if !icmp_usable(false) {
        return;
    }
    let prober = TargetProber::start(vec!["127.0.0.1".into()], INTERVAL);
    let status = wait_for_answer(&prober, "127.0.0.1").await;
    assert_eq!(status.address, Some("127.0.0.1".parse().unwrap()));
    eprintln!("{status:?}");
}

#[tokio::test]
async fn loopback_v6_answers_when_present() {
    if std::net::UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("skipped: no IPv6 loopback (::1) on this machine");
        return;
    }
    if !icmp_usable(true) {
        return;
    }
    let prober = TargetProber::start(vec!["::1".into()], INTERVAL);
    eprintln!("{:?}", wait_for_answer(&prober, "::1").await);
}

#[tokio::test]
async fn localhost_resolves_and_answers() {
    if !icmp_usable(false) || !icmp_usable(true) {
        return;
    }
    let prober = TargetProber::start(vec!["localhost".into()], INTERVAL);
    let status = wait_for_answer(&prober, "localhost").await;
    assert!(status.address.is_some_and(|address| address.is_loopback()), "{status:?}");
}

/// Invalid names and targets beyond the third are errors in the status; the valid target
/// in the same list is probed regardless.
#[tokio::test]
async fn invalid_targets_are_reported_not_fatal() {
    if !icmp_usable(false) {
        return;
    }
    let targets = ["127.0.0.1", "bad_name!", "-bad-", "10.0.0.4"];
    let prober = TargetProber::start(targets.iter().map(|&target| target.into()).collect(), INTERVAL);
    wait_for_answer(&prober, "127.0.0.1").await;
    for (target, error) in [
        ("bad_name!", "not a valid ping target"),
        ("-bad-", "not a valid ping target"),
        ("10.0.0.4", "not probed: at most 3 ping targets"),
    ] {
        let status = wait_for_failures(&prober, target, 1).await;
        let last_error = status.last_error.clone().unwrap_or_default();
        assert!(last_error.contains(error), "{target}: {status:?}");
        assert_eq!(status.address, None, "{status:?}");
    }
}

/// A changed list keeps what is known about targets still listed and drops the others.
#[tokio::test]
async fn set_targets_keeps_history() {
    if !icmp_usable(false) {
        return;
    }
    let prober = TargetProber::start(vec!["127.0.0.1".into(), "127.0.0.2".into()], INTERVAL);
    wait_for_answer(&prober, "127.0.0.1").await;
    wait_for_answer(&prober, "127.0.0.2").await;
    prober.set_targets(vec!["bad_name!".into(), "127.0.0.1".into()]);
    assert_eq!(prober.targets(), ["bad_name!", "127.0.0.1"]);
    assert!(status_of(&prober, "127.0.0.1").last_ok_ms_ago.is_some(), "history kept");
    prober.set_targets(vec!["127.0.0.2".into()]);
    assert_eq!(status_of(&prober, "127.0.0.2").last_ok_ms_ago, None, "removed and re-added: starts afresh");
    wait_for_answer(&prober, "127.0.0.2").await;
}

/// The gate: withheld until a target answers, allowed then; withheld with only a target
/// that cannot answer.
#[tokio::test]
async fn gate_follows_the_targets() {
    if !icmp_usable(false) {
        return;
    }
    let epoch = Instant::now();
    let window_ms = 2_000;
    let prober = TargetProber::start(vec!["127.0.0.1".into()], INTERVAL);
    assert!(!prober.gate(epoch, Instant::now(), window_ms).is_allowed(), "configured, not answered yet");
    wait_for_answer(&prober, "127.0.0.1").await;
    assert_eq!(prober.gate(epoch, Instant::now(), window_ms), Gate::Allowed);

    let silent = TargetProber::start(vec!["bad_name!".into()], INTERVAL);
    wait_for_failures(&silent, "bad_name!", 1).await;
    let Gate::Withheld { reason } = silent.gate(epoch, Instant::now(), window_ms) else { panic!("should withhold") };
    assert!(reason.contains("bad_name! never answered"), "{reason}");
}

/// A network namespace of this test's own, deleted when dropped.
struct Netns {
    name: String,
}

impl Netns {
    /// Creates it with loopback up; `None` (after printing why) without root or `ip`.
    fn create(tag: &str) -> Option<Netns> {
        let name = format!("haven-targets-{}-{tag}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        match Command::new("ip").args(["netns", "add", &name]).output() {
            Ok(output) if output.status.success() => {}
            Ok(output) => {
                eprintln!("skipped: ip netns add: {}", String::from_utf8_lossy(&output.stderr).trim());
                return None;
            }
            Err(error) => {
                eprintln!("skipped: cannot run ip: {error}");
                return None;
            }
        }
        let netns = Netns { name };
        netns.ip(&["link", "set", "lo", "up"]);
        Some(netns)
    }

    fn ip(&self, args: &[&str]) {
        let output = Command::new("ip").args(["-n", &self.name]).args(args).output().expect("ip");
        assert!(output.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    }

    /// Runs `test` on a thread that joined the namespace, under a runtime of its own on
    /// that thread (so the prober's sockets open in the namespace).
    fn run<F: std::future::Future<Output = ()>>(&self, test: impl FnOnce() -> F + Send + 'static) {
        let path = format!("/var/run/netns/{}", self.name);
        let thread = std::thread::spawn(move || {
            let netns = File::open(&path).expect("open the namespace");
            // SAFETY: setns only reads the descriptor, valid for the call; it moves this
            // thread alone (the test harness's other threads stay on the host).
            let rc = unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(test());
        });
        if let Err(panic) = thread.join() {
            std::panic::resume_unwind(panic);
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

/// Sets a sysctl of the calling thread's network namespace.
fn sysctl(key: &str, value: &str) {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    std::fs::write(&path, value).unwrap_or_else(|error| panic!("{path}: {error}"));
}

/// In a namespace with only loopback: an address routed into loopback but not local is
/// dropped without a word (forwarding is off), a true black hole; an address with no
/// route fails at once (network unreachable); neither answers, 127.0.0.1 does. A target
/// that answered and then goes silent closes the gate after the window, and reopens it.
#[test]
fn black_hole_and_unroutable_do_not_answer() {
    let Some(netns) = Netns::create("hole") else { return };
    netns.ip(&["route", "add", "10.77.0.0/24", "dev", "lo"]);
    netns.run(|| async {
        sysctl("net.ipv4.ping_group_range", "1 0");
        if !icmp_usable(false) {
            return;
        }
        let targets = ["127.0.0.1", "10.77.0.2", "192.0.2.1"];
        let prober = TargetProber::start(targets.iter().map(|&target| target.into()).collect(), INTERVAL);
        assert_eq!(wait_for_answer(&prober, "127.0.0.1").await.socket, Some(IcmpSocketKind::Raw));
        let hole = wait_for_failures(&prober, "10.77.0.2", 2).await;
        assert!(
            hole.last_error.as_deref().is_some_and(|error| error.contains("no echo reply from 10.77.0.2")),
            "{hole:?}"
        );
        let unroutable = wait_for_failures(&prober, "192.0.2.1", 2).await;
        let error = unroutable.last_error.clone().unwrap_or_default();
        assert!(error.to_lowercase().contains("unreachable"), "{unroutable:?}");
        eprintln!("{:#?}", prober.snapshot(Instant::now()));

        let epoch = Instant::now();
        let window_ms = 3 * u64::try_from(INTERVAL.as_millis()).unwrap();
        let silent = TargetProber::start(vec!["10.77.0.2".into(), "192.0.2.1".into()], INTERVAL);
        wait_for_failures(&silent, "10.77.0.2", 1).await;
        let Gate::Withheld { reason } = silent.gate(epoch, Instant::now(), window_ms) else { panic!("only silent") };
        assert!(reason.contains("10.77.0.2 never answered") && reason.contains("192.0.2.1 never answered"), "{reason}");
        drop(silent);

        prober.set_targets(vec!["127.0.0.1".into(), "10.77.0.2".into()]);
        assert_eq!(prober.gate(epoch, Instant::now(), window_ms), Gate::Allowed);
        sysctl("net.ipv4.icmp_echo_ignore_all", "1");
        let start = Instant::now();
        while prober.gate(epoch, Instant::now(), window_ms).is_allowed() {
            assert!(start.elapsed() < ANSWER_BOUND, "gate still open: {:?}", prober.snapshot(Instant::now()));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let closed_after = start.elapsed();
        let Gate::Withheld { reason } = prober.gate(epoch, Instant::now(), window_ms) else { unreachable!() };
        assert!(reason.contains("127.0.0.1 last answered"), "{reason}");
        eprintln!("closed {closed_after:?} after the target went silent (window {window_ms} ms): {reason}");
        sysctl("net.ipv4.icmp_echo_ignore_all", "0");
        let start = Instant::now();
        while !prober.gate(epoch, Instant::now(), window_ms).is_allowed() {
            assert!(start.elapsed() < ANSWER_BOUND, "gate still closed: {:?}", prober.snapshot(Instant::now()));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
}

/// Where `net.ipv4.ping_group_range` includes the process's group, the unprivileged
/// datagram socket is used (IPv4 and IPv6) and answers match despite the identifier the
/// kernel substitutes.
#[test]
fn datagram_socket_when_ping_group_range_allows() {
    let Some(netns) = Netns::create("dgram") else { return };
    netns.run(|| async {
        sysctl("net.ipv4.ping_group_range", "0 2147483647");
        assert_eq!(icmp_socket_kind(false), Ok(IcmpSocketKind::Datagram));
        let mut targets = vec!["127.0.0.1".to_string()];
        if std::net::UdpSocket::bind("[::1]:0").is_ok() {
            targets.push("::1".into());
        } else {
            eprintln!("no IPv6 loopback in the namespace: IPv4 only");
        }
        let prober = TargetProber::start(targets.clone(), INTERVAL);
        for target in &targets {
            let status = wait_for_answer(&prober, target).await;
            assert_eq!(status.socket, Some(IcmpSocketKind::Datagram), "{status:?}");
        }
    });
}
