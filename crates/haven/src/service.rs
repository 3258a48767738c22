//! Telling systemd where a `haven serve` process stands (`Type=notify` in
//! `deploy/haven.service`; the protocol is sd_notify(3)).
//!
//! ```text
//!   start ── store open, client and peer ports accepting ──▶ READY=1, STATUS=serving ...
//!   SIGTERM/SIGINT ──▶ STOPPING=1 (then leadership hand-over and drain, then exit)
//!   in-place restart (`haven restart`) ──▶ RELOADING=1 ──exec, same pid──▶ READY=1 again
//!   run fails ──▶ STATUS=failed: <reason> (then exit 1; the unit restarts on failure)
//! ```
//!
//! Readiness does not wait for a leader or for the join to finish: a cluster's machines
//! start their units independently, and a node that waits for the others would keep every
//! unit "activating" until a quorum is up (and past `TimeoutStartSec` on a slow one). The
//! HA state is `haven status`'s job, not the unit's.
//!
//! No watchdog (`WATCHDOG=1`): a keep-alive sent from a timer task would prove only that
//! the async runtime still runs, which a hung node can still do; a node whose storage fails
//! stops by itself and the unit's `Restart=on-failure` covers that.
//!
//! Logs: under systemd stderr goes to the journal, which stamps every line itself, so the
//! node's own timestamp is left out there (`stderr_is_journal`).
//!
//! Outside systemd `NOTIFY_SOCKET` is unset and every call here does nothing. The
//! variable is left in the environment on purpose: the in-place restart execs the same
//! binary, which must find it to say `READY=1` again (systemd accepts messages only from
//! the main pid, `NotifyAccess=main`, so hook scripts inheriting it cannot speak for us).

use sd_notify::NotifyState;

/// The node serves: `READY=1` with a one-line status for `systemctl status`.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A stop signal arrived: the node hands over leadership, drains and exits.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping: handing over leadership and draining")]);
}

/// The node is about to exec itself (same pid): systemd keeps the unit up, "reloading",
/// until the new image says `READY=1`. `MONOTONIC_USEC` is what newer systemd versions
/// require with `RELOADING=1`.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now, NotifyState::Status("restarting in place")]),
        Err(_) => send(&[NotifyState::Reloading, NotifyState::Status("restarting in place")]),
    }
}

/// The node stops on an error: the reason, for `systemctl status`, before the exit.
pub fn failed(reason: &str) {
    let line: String = reason.lines().next().unwrap_or_default().chars().take(STATUS_CHARS_MAX).collect();
    send(&[NotifyState::Status(&format!("failed: {line}"))]);
}

/// A status line longer than this is cut: systemd shows one line, and one datagram carries
/// the whole message.
const STATUS_CHARS_MAX: usize = 400;

fn send(states: &[NotifyState]) {
    // Not under systemd (or a socket that went away): nothing to tell, never a reason to stop.
    if let Err(error) = sd_notify::notify(states) {
        tracing::warn!(%error, "cannot notify the service manager (NOTIFY_SOCKET)");
    }
}

/// Whether stderr is the journal: systemd sets `JOURNAL_STREAM` to that stream's
/// `device:inode`; comparing it with stderr's own ignores the variable in a process that
/// inherited it with stderr redirected elsewhere.
pub fn stderr_is_journal() -> bool {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(stderr) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    let Ok(metadata) = std::fs::File::from(stderr).metadata() else {
        return false;
    };
    stream.to_str() == Some(format!("{}:{}", metadata.dev(), metadata.ino()).as_str())
}
