//! Ping targets (seed 002's HAPingMonitor1-3): the IO shell that probes them, for the pure
//! gate in `haven_core::ha::gating`.
//!
//! ```text
//!   TargetProber::start(targets, interval) ──▶ background task, one round per interval:
//!        for each target, concurrently, within probe_timeout(interval):
//!          parse_host ─▶ IP ─────────────────────────────┐
//!                    └▶ name ─▶ lookup_host (each round) ┴▶ ICMP echo request ─▶ matching reply?
//!        record per target: last_ok (monotonic), rtt, error, failures in a row
//!
//!   snapshot(now)         ─▶ Vec<TargetStatus>   (status page: "answered 350 ms ago")
//!   probes_for_gate(epoch) ─▶ Vec<TargetProbe>   ─▶ may_campaign(configured, probes, now_ms, window_ms)
//! ```
//!
//! ICMP without privileges where the system allows it: an ICMP datagram socket ("ping
//! socket", Linux allows it when `net.ipv4.ping_group_range` includes the process's group,
//! as most distributions configure), else a raw socket (root or `CAP_NET_RAW`). If neither
//! opens, every probe fails with an error saying so, shown in the status; nothing panics.
//!
//! Each probe opens its own socket, connects it to the target (the kernel then delivers
//! only packets from that address, and reports ICMP errors such as "host unreachable" as
//! a receive error), sends one echo request and waits for the echo reply carrying the same
//! sequence number and random payload. A raw socket also sees every other ICMP packet
//! from the target, including the echo requests of other probers and, on loopback, its own
//! request: those do not match and are skipped. With a datagram socket the kernel replaces
//! the identifier with the socket's port, so the identifier is only checked on raw sockets.
//!
//! The task stops when the `TargetProber` is dropped. It needs a Tokio runtime with IO and
//! time enabled (what `#[tokio::main]` gives), and opens its sockets on the runtime's
//! threads, so in their network namespace.

use std::io::Read as _;
use std::net::IpAddr;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::MutexGuard;
use std::sync::PoisonError;
use std::time::Duration;
use std::time::Instant;

use futures::future::join_all;
use haven_core::ha::gating::may_campaign;
use haven_core::ha::gating::Gate;
use haven_core::ha::gating::TargetProbe;
use haven_core::ha::gating::TARGET_PROBES_MISSED_MAX;
use haven_core::ha::syntax::parse_host;
use haven_core::ha::syntax::Host;
use serde::Serialize;
use socket2::Domain;
use socket2::Protocol;
use socket2::SockAddr;
use socket2::Socket;
use socket2::Type;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

/// Most targets probed: seed 002's HAPingMonitor1, 2 and 3, as the configuration checks.
/// Targets listed beyond it are shown with an error and never probed, so a list the core
/// would refuse cannot make this node send more probes than configured ones could.
pub const PING_TARGETS_MAX: usize = haven_core::ha::config::PING_TARGETS_MAX;

/// Shortest interval accepted (shorter ones are raised to it): a zero interval would spin,
/// and anything faster only floods the targets. Production uses
/// `gating::target_probe_interval_ms`, never under 1 s; tests use a few hundred ms.
pub const PROBE_INTERVAL_MIN: Duration = Duration::from_millis(50);

/// Longest wait for one target's answer in one round, name resolution included, when the
/// interval is longer (seed profile: 15 s). 5 s is glibc's default resolver timeout
/// (resolv.conf `timeout:5`) and far beyond any working network's round trip (under a
/// second around the globe), and it shows a failure in the status within 5 s.
pub const PROBE_TIMEOUT_MAX: Duration = Duration::from_secs(5);

/// Random bytes carried in each echo request: 16 make a reply to another prober (another
/// process, or another `TargetProber` in this one, whose replies a raw socket also sees)
/// impossible to mistake for ours, and keep the packet far below any MTU and below the
/// 56 bytes of `ping`, which no firewall treats as suspicious.
pub const PAYLOAD_BYTES: usize = 16;

/// ICMP and ICMPv6 headers: type, code, checksum, identifier, sequence number.
const ICMP_HEADER_BYTES: usize = 8;

/// Receive buffer: our reply is at most a 60-byte IPv4 header plus 8 + 16 bytes. Larger
/// ICMP packets a raw socket also sees are truncated to it, which is fine: only their
/// first bytes are read, to discard them.
const RECV_BUFFER_BYTES: usize = 2048;

const ICMPV4_ECHO_REQUEST: u8 = 8;
const ICMPV4_ECHO_REPLY: u8 = 0;
const ICMPV6_ECHO_REQUEST: u8 = 128;
const ICMPV6_ECHO_REPLY: u8 = 129;

/// Which ICMP socket a probe used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum IcmpSocketKind {
    /// Unprivileged ICMP datagram socket (`SOCK_DGRAM`, `IPPROTO_ICMP`/`IPPROTO_ICMPV6`).
    Datagram,
    /// Raw socket (`SOCK_RAW`): root or `CAP_NET_RAW`.
    Raw,
}

/// What is known about one configured target, for the status page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetStatus {
    /// As configured.
    pub target: String,
    /// The address the latest probe used (the target itself, or what its name resolved
    /// to); `None` if it could not be resolved or no probe has run yet.
    pub address: Option<IpAddr>,
    /// How long ago it last answered; `None` if never since the prober started (or since
    /// the target was added to the list).
    pub last_ok_ms_ago: Option<u64>,
    /// Round trip of its last answer, in microseconds (loopback answers in tens of them).
    pub last_rtt_us: Option<u64>,
    /// Why the latest probe failed; `None` when it answered or no probe has finished.
    pub last_error: Option<String>,
    /// Probes failed since the last answer.
    pub failed_in_a_row: u64,
    /// The socket the latest probe used, if it could open one.
    pub socket: Option<IcmpSocketKind>,
}

/// Probes the ping targets in the background. Dropping it stops the probing.
pub struct TargetProber {
    shared: Arc<Shared>,
    interval: Duration,
    task: JoinHandle<()>,
}

struct Shared {
    records: Mutex<Vec<Record>>,
    /// Wakes the task for an immediate round when the list changes.
    changed: Notify,
}

struct Record {
    target: String,
    /// What to probe, or why it is not probed (invalid, or beyond [`PING_TARGETS_MAX`]).
    host: Result<Host, String>,
    address: Option<IpAddr>,
    last_ok: Option<Instant>,
    last_rtt: Option<Duration>,
    last_error: Option<String>,
    failed_in_a_row: u64,
    socket: Option<IcmpSocketKind>,
}

impl Record {
    fn new(position: usize, target: String) -> Record {
        let host = host_at(position, &target);
        Record {
            last_error: host.as_ref().err().cloned(),
            target,
            host,
            address: None,
            last_ok: None,
            last_rtt: None,
            failed_in_a_row: 0,
            socket: None,
        }
    }

    fn record(&mut self, outcome: Outcome) {
        self.address = outcome.address;
        match outcome.result {
            Ok(echo) => {
                if self.last_ok.is_none() || self.failed_in_a_row >= TARGET_PROBES_MISSED_MAX {
                    tracing::info!(target = %self.target, rtt_us = echo.rtt.as_micros(), "ping target answers");
                }
                self.last_ok = Some(echo.at);
                self.last_rtt = Some(echo.rtt);
                self.last_error = None;
                self.failed_in_a_row = 0;
                self.socket = Some(echo.socket);
            }
            Err(failure) => {
                self.failed_in_a_row += 1;
                if self.failed_in_a_row == TARGET_PROBES_MISSED_MAX {
                    tracing::warn!(target = %self.target, error = %failure.error, "ping target silent");
                }
                self.last_error = Some(failure.error);
                self.socket = failure.socket.or(self.socket);
            }
        }
    }
}

/// A target at `position` in the list: parsed, or why it is not probed.
fn host_at(position: usize, target: &str) -> Result<Host, String> {
    if position >= PING_TARGETS_MAX {
        return Err(format!("not probed: at most {PING_TARGETS_MAX} ping targets (HAPingMonitor1-3)"));
    }
    parse_host(target).map_err(|error| format!("not a valid ping target: {error}"))
}

/// The wait for one target's answer in a round: the interval, so rounds never overlap and
/// one probe per target is in flight, but at most [`PROBE_TIMEOUT_MAX`].
pub fn probe_timeout(interval: Duration) -> Duration {
    interval.max(PROBE_INTERVAL_MIN).min(PROBE_TIMEOUT_MAX)
}

impl TargetProber {
    /// Starts probing `targets` (IP addresses or host names) every `interval` (at least
    /// [`PROBE_INTERVAL_MIN`]); the first round starts at once. Must be called inside a
    /// Tokio runtime with IO and time enabled.
    pub fn start(targets: Vec<String>, interval: Duration) -> TargetProber {
        let interval = interval.max(PROBE_INTERVAL_MIN);
        let shared = Arc::new(Shared { records: Mutex::new(Vec::new()), changed: Notify::new() });
        *lock(&shared.records) = records_for(targets, Vec::new());
        let task = tokio::spawn(run(Arc::clone(&shared), interval, rand::random()));
        TargetProber { shared, interval, task }
    }

    /// Replaces the list. Targets still listed keep what is known about them (when they
    /// last answered); new ones start as never answered and are probed at once. Duplicates
    /// (the same text twice) are listed once.
    pub fn set_targets(&self, targets: Vec<String>) {
        let mut records = lock(&self.shared.records);
        let old = std::mem::take(&mut *records);
        *records = records_for(targets, old);
        drop(records);
        self.shared.changed.notify_one();
    }

    /// The targets as configured, in order.
    pub fn targets(&self) -> Vec<String> {
        lock(&self.shared.records).iter().map(|record| record.target.clone()).collect()
    }

    /// The probe interval in use.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Per target, in configured order, as of `now`.
    pub fn snapshot(&self, now: Instant) -> Vec<TargetStatus> {
        lock(&self.shared.records)
            .iter()
            .map(|record| TargetStatus {
                target: record.target.clone(),
                address: record.address,
                last_ok_ms_ago: record.last_ok.map(|at| millis(now.saturating_duration_since(at))),
                last_rtt_us: record.last_rtt.map(|rtt| u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX)),
                last_error: record.last_error.clone(),
                failed_in_a_row: record.failed_in_a_row,
                socket: record.socket,
            })
            .collect()
    }

    /// The probes in the core's representation: `last_ok_ms` is milliseconds since `epoch`
    /// (the caller's monotonic zero; an answer before it counts as at 0). Pass
    /// `now - epoch` in milliseconds as `may_campaign`'s `now_ms`.
    pub fn probes_for_gate(&self, epoch: Instant) -> Vec<TargetProbe> {
        lock(&self.shared.records)
            .iter()
            .map(|record| TargetProbe {
                target: record.target.clone(),
                last_ok_ms: record.last_ok.map(|at| millis(at.saturating_duration_since(epoch))),
            })
            .collect()
    }

    /// `may_campaign` over this prober's list, as of `now`.
    pub fn gate(&self, epoch: Instant, now: Instant, window_ms: u64) -> Gate {
        let probes = self.probes_for_gate(epoch);
        may_campaign(probes.len(), &probes, millis(now.saturating_duration_since(epoch)), window_ms)
    }
}

impl Drop for TargetProber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock(records: &Mutex<Vec<Record>>) -> MutexGuard<'_, Vec<Record>> {
    // A panic while holding the lock cannot leave a record half updated in a way that
    // matters (each field is written whole), so keep serving rather than propagate it.
    records.lock().unwrap_or_else(PoisonError::into_inner)
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The new list's records, taking over the old record of each target still listed.
fn records_for(targets: Vec<String>, mut old: Vec<Record>) -> Vec<Record> {
    let mut records: Vec<Record> = Vec::with_capacity(targets.len());
    for target in targets {
        if records.iter().any(|record| record.target == target) {
            continue;
        }
        let position = records.len();
        match old.iter().position(|record| record.target == target) {
            Some(index) => {
                let mut record = old.swap_remove(index);
                record.host = host_at(position, &record.target);
                if let Err(error) = &record.host {
                    record.last_error = Some(error.clone());
                }
                records.push(record);
            }
            None => records.push(Record::new(position, target)),
        }
    }
    records
}

/// The background task: one round per interval, and one at once when the list changes.
async fn run(shared: Arc<Shared>, interval: Duration, identifier: u16) {
    let timeout = probe_timeout(interval);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut sequence: u16 = 0;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = shared.changed.notified() => ticker.reset(),
        }
        let round: Vec<(String, Result<Host, String>)> =
            lock(&shared.records).iter().map(|record| (record.target.clone(), record.host.clone())).collect();
        let probes = round.into_iter().map(|(target, host)| {
            sequence = sequence.wrapping_add(1);
            let probe = probe(host, identifier, sequence, timeout);
            async move { (target, probe.await) }
        });
        let outcomes = join_all(probes).await;
        let mut records = lock(&shared.records);
        for (target, outcome) in outcomes {
            // A target removed during the round is gone; its outcome is dropped.
            if let Some(record) = records.iter_mut().find(|record| record.target == target) {
                record.record(outcome);
            }
        }
    }
}

/// One probe of one target.
struct Outcome {
    address: Option<IpAddr>,
    result: Result<Echo, Failure>,
}

/// An answer.
#[derive(Debug, Clone, Copy)]
pub struct Echo {
    /// When the reply arrived.
    pub at: Instant,
    pub rtt: Duration,
    pub socket: IcmpSocketKind,
}

/// No answer.
struct Failure {
    error: String,
    socket: Option<IcmpSocketKind>,
}

async fn probe(host: Result<Host, String>, identifier: u16, sequence: u16, timeout: Duration) -> Outcome {
    let deadline = tokio::time::Instant::now() + timeout;
    let failed = |address, error| Outcome { address, result: Err(Failure { error, socket: None }) };
    let ip = match host {
        Err(error) => return failed(None, error),
        Ok(Host::Ip(ip)) => ip,
        Ok(Host::Name(name)) => {
            match tokio::time::timeout_at(deadline, tokio::net::lookup_host((name.as_str(), 0))).await {
                Err(_) => return failed(None, format!("resolving {name} took longer than {} ms", timeout.as_millis())),
                Ok(Err(error)) => return failed(None, format!("cannot resolve {name}: {error}")),
                Ok(Ok(mut addresses)) => match addresses.next() {
                    Some(address) => address.ip().to_canonical(),
                    None => return failed(None, format!("{name} resolves to no address")),
                },
            }
        }
    };
    let result = echo_until(ip, identifier, sequence, deadline, timeout).await;
    Outcome { address: Some(ip), result }
}

/// Sends one echo request to `ip` and waits until `timeout` for its reply. For a one-off
/// check (a command-line test of a target); the prober uses the same code.
pub async fn ping(ip: IpAddr, timeout: Duration) -> Result<Echo, String> {
    let deadline = tokio::time::Instant::now() + timeout.max(Duration::from_millis(1));
    echo_until(ip, rand::random(), rand::random(), deadline, timeout).await.map_err(|failure| failure.error)
}

/// `timeout` is only for the error message: the wait ends at `deadline`.
async fn echo_until(
    ip: IpAddr,
    identifier: u16,
    sequence: u16,
    deadline: tokio::time::Instant,
    timeout: Duration,
) -> Result<Echo, Failure> {
    let ipv6 = ip.is_ipv6();
    let (socket, kind) = open_icmp_socket(ipv6).map_err(|error| Failure { error, socket: None })?;
    let fail = |error: String| Failure { error, socket: Some(kind) };
    socket
        .connect(&SockAddr::from(SocketAddr::new(ip, 0)))
        .map_err(|error| fail(format!("cannot reach {ip}: {error}")))?;
    // ERROR too: an ICMP error about our request sets the socket's error without making
    // it readable, and waiting for READABLE alone would turn it into a timeout.
    // SAFETY: the `Socket` owns its descriptor, which stays open and the same until the
    // `AsyncFd` (which owns the `Socket`) is dropped: nothing here closes or replaces it.
    let fd = unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE | Interest::ERROR) }
        .map_err(|error| fail(format!("cannot watch the ICMP socket: {}", std::io::Error::from(error))))?;

    let payload: [u8; PAYLOAD_BYTES] = rand::random();
    let request = echo_request(ipv6, identifier, sequence, &payload);
    let sent = Instant::now();
    // A fresh datagram socket's send buffer is empty: the send completes at once or fails.
    fd.get_ref().send(&request).map_err(|error| fail(format!("cannot send an echo request to {ip}: {error}")))?;

    let mut buffer = [0_u8; RECV_BUFFER_BYTES];
    loop {
        let received = tokio::time::timeout_at(
            deadline,
            fd.async_io(Interest::READABLE | Interest::ERROR, |socket| {
                let mut socket = socket;
                socket.read(&mut buffer)
            }),
        )
        .await;
        let length = match received {
            Err(_) => return Err(fail(format!("no echo reply from {ip} within {} ms", timeout.as_millis()))),
            // An ICMP error about our request (host or network unreachable, ...), reported
            // by the kernel on the connected socket.
            Ok(Err(error)) => {
                return Err(fail(format!("an ICMP error came back instead of an echo reply from {ip}: {error}")))
            }
            Ok(Ok(length)) => length,
        };
        if is_our_reply(&buffer[..length], ipv6, kind, identifier, sequence, &payload) {
            let at = Instant::now();
            return Ok(Echo { at, rtt: at.saturating_duration_since(sent), socket: kind });
        }
    }
}

/// Opens a non-blocking ICMP (or ICMPv6) socket: the unprivileged datagram kind if the
/// system allows it, else a raw one; the error says why neither opened.
fn open_icmp_socket(ipv6: bool) -> Result<(Socket, IcmpSocketKind), String> {
    let (domain, protocol, name) =
        if ipv6 { (Domain::IPV6, Protocol::ICMPV6, "ICMPv6") } else { (Domain::IPV4, Protocol::ICMPV4, "ICMP") };
    let nonblocking = |socket: Socket, kind| match socket.set_nonblocking(true) {
        Ok(()) => Ok((socket, kind)),
        Err(error) => Err(format!("cannot make the {name} socket non-blocking: {error}")),
    };
    let datagram_error = match Socket::new(domain, Type::DGRAM, Some(protocol)) {
        Ok(socket) => return nonblocking(socket, IcmpSocketKind::Datagram),
        Err(error) => error,
    };
    let raw_error = match Socket::new(domain, Type::RAW, Some(protocol)) {
        Ok(socket) => return nonblocking(socket, IcmpSocketKind::Raw),
        Err(error) => error,
    };
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ping_group_range")
        .map(|text| text.split_whitespace().collect::<Vec<_>>().join("-"))
        .unwrap_or_else(|_| "unknown".into());
    Err(format!(
        "cannot open an {name} socket: the unprivileged datagram socket was refused ({datagram_error}; Linux allows \
         it when sysctl net.ipv4.ping_group_range, now {range}, includes the process's group {}) and the raw \
         socket was refused ({raw_error}; it needs root or CAP_NET_RAW)",
        effective_gid().unwrap_or_else(|| "(unknown)".into()),
    ))
}

/// The process's effective group, for the error message (from /proc: no unsafe call).
fn effective_gid() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("Gid:"))?;
    line.split_whitespace().nth(2).map(str::to_owned)
}

/// Which ICMP socket this process can open for the family (opened and closed at once):
/// for a startup log line or a test's skip decision.
pub fn icmp_socket_kind(ipv6: bool) -> Result<IcmpSocketKind, String> {
    open_icmp_socket(ipv6).map(|(_, kind)| kind)
}

/// An echo request: the 8-byte header then the payload. The ICMPv4 checksum is computed
/// (a raw socket sends it as is; a datagram socket recomputes it after setting the
/// identifier). The ICMPv6 checksum covers a pseudo-header with the source address, which
/// only the kernel knows: it computes it for both socket kinds (RFC 3542 section 3.1).
fn echo_request(ipv6: bool, identifier: u16, sequence: u16, payload: &[u8]) -> Vec<u8> {
    let mut packet = vec![0_u8; ICMP_HEADER_BYTES + payload.len()];
    packet[0] = if ipv6 { ICMPV6_ECHO_REQUEST } else { ICMPV4_ECHO_REQUEST };
    packet[4..6].copy_from_slice(&identifier.to_be_bytes());
    packet[6..8].copy_from_slice(&sequence.to_be_bytes());
    packet[ICMP_HEADER_BYTES..].copy_from_slice(payload);
    if !ipv6 {
        let checksum = internet_checksum(&packet);
        packet[2..4].copy_from_slice(&checksum.to_be_bytes());
    }
    packet
}

/// Whether `data` (as received) is the echo reply to our request. A raw IPv4 socket
/// receives the IP header too (skipped: IHL × 4 bytes) and its packets' checksums are not
/// verified by the kernel, so it is verified here; datagram and ICMPv6 sockets deliver the
/// ICMP message alone, checksum verified.
fn is_our_reply(data: &[u8], ipv6: bool, kind: IcmpSocketKind, identifier: u16, sequence: u16, payload: &[u8]) -> bool {
    let message = if !ipv6 && kind == IcmpSocketKind::Raw {
        let Some(&first) = data.first() else { return false };
        let header_bytes = usize::from(first & 0x0f) * 4;
        if first >> 4 != 4 || data.len() < header_bytes || header_bytes < 20 {
            return false;
        }
        let total = usize::from(u16::from_be_bytes([data[2], data[3]])).min(data.len());
        let message = &data[header_bytes..total.max(header_bytes)];
        if internet_checksum(message) != 0 {
            return false;
        }
        message
    } else {
        data
    };
    let reply_type = if ipv6 { ICMPV6_ECHO_REPLY } else { ICMPV4_ECHO_REPLY };
    message.len() >= ICMP_HEADER_BYTES + payload.len()
        && message[0] == reply_type
        && message[1] == 0
        && (kind == IcmpSocketKind::Datagram || message[4..6] == identifier.to_be_bytes())
        && message[6..8] == sequence.to_be_bytes()
        && &message[ICMP_HEADER_BYTES..ICMP_HEADER_BYTES + payload.len()] == payload
}

/// The Internet checksum (RFC 1071): the ones' complement of the ones' complement sum of
/// the 16-bit big-endian words, an odd last byte padded with zero. Over a message that
/// carries its checksum it is 0.
pub fn internet_checksum(data: &[u8]) -> u16 {
    let mut words = data.chunks_exact(2);
    let mut sum: u64 = words.by_ref().map(|word| u64::from(u16::from_be_bytes([word[0], word[1]]))).sum();
    if let [last] = words.remainder() {
        sum += u64::from(*last) << 8;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 1071 section 3's example, an odd length, and a message verifying to 0.
    #[test]
    fn checksum() {
        let words = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(internet_checksum(&words), !0xddf2);
        assert_eq!(internet_checksum(&[0xff]), !0xff00);
        assert_eq!(internet_checksum(&[]), 0xffff);
        let request = echo_request(false, 0x1234, 7, b"0123456789abcdef");
        assert_eq!(internet_checksum(&request), 0);
    }

    /// A reply matches only with our type, sequence, payload (and identifier on raw
    /// sockets); a raw IPv4 reply is found past its IP header and must checksum.
    #[test]
    fn reply_matching() {
        let payload = [7_u8; PAYLOAD_BYTES];
        let mut reply = echo_request(false, 0x1234, 9, &payload);
        reply[0] = ICMPV4_ECHO_REPLY;
        reply[2..4].fill(0);
        let checksum = internet_checksum(&reply);
        reply[2..4].copy_from_slice(&checksum.to_be_bytes());
        let raw = |icmp: &[u8]| {
            let mut packet = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1];
            packet.extend_from_slice(icmp);
            let total = u16::try_from(packet.len()).unwrap();
            packet[2..4].copy_from_slice(&total.to_be_bytes());
            packet
        };
        let datagram = IcmpSocketKind::Datagram;
        assert!(is_our_reply(&reply, false, datagram, 0, 9, &payload), "identifier ignored on datagram sockets");
        assert!(!is_our_reply(&reply, false, datagram, 0, 10, &payload), "other sequence");
        assert!(!is_our_reply(&reply, false, datagram, 0, 9, &[8; PAYLOAD_BYTES]), "other payload");
        assert!(is_our_reply(&raw(&reply), false, IcmpSocketKind::Raw, 0x1234, 9, &payload));
        assert!(!is_our_reply(&raw(&reply), false, IcmpSocketKind::Raw, 0x1235, 9, &payload), "other identifier");
        let request = echo_request(false, 0x1234, 9, &payload);
        assert!(!is_our_reply(&raw(&request), false, IcmpSocketKind::Raw, 0x1234, 9, &payload), "our own request");
        let mut corrupt = raw(&reply);
        *corrupt.last_mut().unwrap() ^= 1;
        assert!(!is_our_reply(&corrupt, false, IcmpSocketKind::Raw, 0x1234, 9, &payload), "bad checksum");
        assert!(!is_our_reply(&raw(&reply)[..10], false, IcmpSocketKind::Raw, 0x1234, 9, &payload), "truncated");
        let mut reply6 = echo_request(true, 0x1234, 9, &payload);
        reply6[0] = ICMPV6_ECHO_REPLY;
        assert!(is_our_reply(&reply6, true, IcmpSocketKind::Raw, 0x1234, 9, &payload));
        assert!(!is_our_reply(
            &echo_request(true, 0x1234, 9, &payload),
            true,
            IcmpSocketKind::Raw,
            0x1234,
            9,
            &payload
        ));
    }

    /// The list keeps the history of targets still listed, drops duplicates, and refuses
    /// to probe beyond the limit or invalid names.
    #[test]
    fn list_changes_keep_history() {
        let at = Instant::now();
        let mut old = records_for(vec!["10.0.0.1".into(), "gw.example.com".into()], Vec::new());
        old[0].last_ok = Some(at);
        let records = records_for(
            vec!["gw.example.com".into(), "10.0.0.1".into(), "10.0.0.1".into(), "bad_name".into(), "10.0.0.4".into()],
            old,
        );
        let targets: Vec<&str> = records.iter().map(|record| record.target.as_str()).collect();
        assert_eq!(targets, ["gw.example.com", "10.0.0.1", "bad_name", "10.0.0.4"]);
        assert_eq!(records[1].last_ok, Some(at), "history kept");
        assert!(records[2].host.as_ref().unwrap_err().contains("not a valid ping target"));
        assert!(records[3].host.as_ref().unwrap_err().contains("not probed: at most 3"));
        assert!(records[3].last_error.is_some(), "shown before any round");
    }

    #[test]
    fn timeout_is_the_interval_within_bounds() {
        assert_eq!(probe_timeout(Duration::from_millis(200)), Duration::from_millis(200));
        assert_eq!(probe_timeout(Duration::ZERO), PROBE_INTERVAL_MIN);
        assert_eq!(probe_timeout(Duration::from_secs(15)), PROBE_TIMEOUT_MAX);
    }
}
