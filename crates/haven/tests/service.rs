//! `haven serve` under a service manager: the sd_notify(3) messages systemd acts on
//! (deploy/haven.service is `Type=notify`), received on a real notify socket as systemd
//! would receive them.

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::Child;
use std::process::Command;
use std::time::Duration;
use std::time::Instant;

use common::CONDITION_TIMEOUT;

/// A started node with its notify socket and the files it writes.
struct NotifiedNode {
    _dir: tempfile::TempDir,
    data_dir: std::path::PathBuf,
    log_path: std::path::PathBuf,
    socket: UnixDatagram,
    child: Child,
}

impl NotifiedNode {
    /// Starts `haven serve` on fresh ports with `NOTIFY_SOCKET` pointing at a socket this
    /// test reads.
    fn start(extra_args: &[&str]) -> NotifiedNode {
        NotifiedNode::start_on("127.0.0.1:0", extra_args)
    }

    fn start_on(client_addr: &str, extra_args: &[&str]) -> NotifiedNode {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket_path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&socket_path).expect("notify socket");
        socket.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
        let data_dir = dir.path().join("n1");
        let log_path = dir.path().join("n1.log");
        if extra_args.contains(&"--bootstrap") {
            // A new cluster starts only on a data dir prepared for it.
            common::init_node(&data_dir, 1);
        }
        let mut command = common::haven_command();
        command
            .args(["serve", "--node-id=1", "--peer-addr=127.0.0.1:0"])
            .arg(format!("--client-addr={client_addr}"))
            .arg(format!("--data-dir={}", data_dir.display()))
            .args(extra_args)
            .env("NOTIFY_SOCKET", &socket_path);
        common::log_to(&mut command, &log_path);
        let child = command.spawn().expect("spawn haven");
        NotifiedNode { _dir: dir, data_dir, log_path, socket, child }
    }

    /// The next datagram on the notify socket, as lines.
    fn next_message(&mut self, waiting_for: &str) -> Vec<String> {
        let deadline = Instant::now() + CONDITION_TIMEOUT;
        let mut buffer = [0u8; 4096];
        loop {
            match self.socket.recv(&mut buffer) {
                Ok(length) => {
                    let text = String::from_utf8_lossy(&buffer[..length]).into_owned();
                    return text.lines().map(str::to_string).collect();
                }
                Err(error) if matches!(error.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                }
                Err(error) => panic!("notify socket: {error}"),
            }
            assert!(
                Instant::now() < deadline,
                "no notification ({waiting_for}) within {CONDITION_TIMEOUT:?}; node log:\n{}",
                self.log()
            );
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the node exited ({status}) before {waiting_for}; node log:\n{}", self.log());
            }
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// `addr.json` as the node wrote it, if it has.
    fn addr_file(&self) -> Option<serde_json::Value> {
        let text = std::fs::read_to_string(self.data_dir.join("addr.json")).ok()?;
        serde_json::from_str(&text).ok()
    }

    fn pins(&self) -> haven_tls::PinSet {
        let key = haven_tls::NodeIdentityKey::load(&self.data_dir).expect("key").expect("the node's key");
        let pins = haven_tls::PinSet::default();
        pins.insert(key.fingerprint().to_string());
        pins
    }

    /// Checks, at the moment `READY=1` arrived, that the node really serves: `addr.json`
    /// names this very process and the client port answers HTTPS with the node's key.
    fn assert_serving(&self, pid: u32) -> String {
        let addr = self.addr_file().unwrap_or_else(|| panic!("READY=1 before addr.json; log:\n{}", self.log()));
        assert_eq!(addr["pid"].as_u64(), Some(pid as u64), "READY=1 before this process wrote addr.json: {addr}");
        let client_url = addr["client_url"].as_str().expect("client_url").to_string();
        let health = common::https_get(&format!("{client_url}/v1/health"), &self.pins(), None);
        assert!(health.is_some(), "READY=1 but {client_url}/v1/health does not answer; log:\n{}", self.log());
        client_url
    }

    fn terminate(&self) {
        // SAFETY: kill(2) on our own child's pid.
        let result = unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        assert_eq!(result, 0, "kill SIGTERM");
    }

    /// Waits for the process to exit (after SIGTERM or a failed start).
    fn wait_exit(&mut self) -> std::process::ExitStatus {
        common::wait_exit_within(&mut self.child, CONDITION_TIMEOUT)
            .unwrap_or_else(|| panic!("the node did not exit after SIGTERM; log:\n{}", self.log()))
    }
}

impl Drop for NotifiedNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn assert_has(message: &[String], line: &str, what: &str) {
    assert!(message.iter().any(|l| l == line), "{what}: expected {line} in {message:?}");
}

/// A node with neither bootstrap nor join still serves (its status says it waits), so it
/// is ready: systemd must not wait for a cluster that the other machines' units form.
#[test]
fn ready_once_the_node_serves_and_stopping_on_sigterm() {
    let _serial = common::serial();
    let mut node = NotifiedNode::start(&[]);
    let pid = node.child.id();

    let message = node.next_message("READY=1");
    assert_has(&message, "READY=1", "the first notification");
    assert!(
        message.iter().any(|line| line.starts_with("STATUS=serving: node 1, clients on 127.0.0.1:")),
        "a status line for `systemctl status`: {message:?}"
    );
    node.assert_serving(pid);

    node.terminate();
    let message = node.next_message("STOPPING=1");
    assert_has(&message, "STOPPING=1", "after SIGTERM");
    let status = node.wait_exit();
    assert!(status.success(), "a stop by SIGTERM exits 0, got {status}; log:\n{}", node.log());
}

/// `haven restart` execs the node in place (same pid): systemd hears RELOADING=1 (with
/// MONOTONIC_USEC, which newer versions require) and then READY=1 from the new image,
/// so the unit stays up instead of being seen as stopped.
#[test]
fn an_in_place_restart_is_reloading_then_ready_again() {
    let _serial = common::serial();
    let mut node = NotifiedNode::start(&["--bootstrap"]);
    let pid = node.child.id();
    assert_has(&node.next_message("READY=1"), "READY=1", "the first notification");
    let client_url = node.assert_serving(pid);

    let token_file = node.data_dir.join("admin.token");
    let deadline = Instant::now() + CONDITION_TIMEOUT;
    while !token_file.exists() {
        assert!(Instant::now() < deadline, "no admin.token; log:\n{}", node.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let fingerprint = haven_tls::NodeIdentityKey::load(&node.data_dir).expect("key").expect("key");
    let restart = Command::new(common::haven_binary())
        .args(["restart", "--no-wait"])
        .env("HAVEN_ENDPOINTS", &client_url)
        .env("HAVEN_TOKEN_FILE", &token_file)
        .env("HAVEN_SERVER_FINGERPRINTS", fingerprint.fingerprint())
        .output()
        .expect("haven restart");
    assert!(
        restart.status.success(),
        "haven restart: {}{}",
        String::from_utf8_lossy(&restart.stdout),
        String::from_utf8_lossy(&restart.stderr)
    );

    let message = node.next_message("RELOADING=1");
    assert_has(&message, "RELOADING=1", "before the exec");
    assert!(message.iter().any(|line| line.starts_with("MONOTONIC_USEC=")), "MONOTONIC_USEC with it: {message:?}");
    let message = node.next_message("READY=1 after the restart");
    assert_has(&message, "READY=1", "from the new image");
    assert_eq!(node.child.id(), pid, "same child");
    assert!(node.child.try_wait().expect("wait").is_none(), "the process (same pid) still runs");
    node.assert_serving(pid);

    node.terminate();
    assert_has(&node.next_message("STOPPING=1"), "STOPPING=1", "after SIGTERM");
    assert!(node.wait_exit().success(), "exit 0; log:\n{}", node.log());
}

/// A node that cannot start says why in its status line before it exits, so
/// `systemctl status haven` shows the reason next to the failure; it never says READY=1.
#[test]
fn a_failed_start_says_why_and_is_never_ready() {
    let _serial = common::serial();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken = taken.local_addr().expect("addr").to_string();
    let mut node = NotifiedNode::start_on(&taken, &[]);
    let message = node.next_message("STATUS=failed");
    assert!(
        message.iter().any(|line| line.starts_with(&format!("STATUS=failed: cannot listen on client_addr {taken}"))),
        "the reason: {message:?}"
    );
    assert!(!message.iter().any(|line| line == "READY=1"), "not ready: {message:?}");
    let status = node.wait_exit();
    assert!(!status.success(), "a failed start exits non-zero (Restart=on-failure), got {status}");
}
