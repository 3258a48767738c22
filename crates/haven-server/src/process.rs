//! Running an operator's program the way Haven runs all of them (the HA hook script, a
//! role's stop and check commands): no shell, its own process group, output captured
//! bounded, and a timeout that kills the whole group.
//!
//! ```text
//!   run_bounded(command, timeout)
//!     spawn (own process group, stdout/stderr piped) ── error in words (spawn_error)
//!     ├─ read_bounded(stdout), read_bounded(stderr): first OUTPUT_BYTES_MAX kept,
//!     │    the rest read and counted (a chatty program never blocks on a full pipe)
//!     ├─ wait ≤ timeout ── past it: SIGKILL to the group, reap (≤ REAP_TIMEOUT)
//!     └─ collect_output (≤ OUTPUT_GRACE after the end: a leftover may hold the pipes)
//!   ──▶ Ran { status: Exited(code) | Signalled(sig) | TimedOut | WaitFailed, output }
//! ```

use std::io;
use std::os::unix::process::ExitStatusExt as _;
use std::process::Stdio;
use std::time::Duration;
use std::time::Instant;

use tokio::io::AsyncRead;
use tokio::io::AsyncReadExt as _;

/// Bytes of a program's stdout, and again of its stderr, kept for the log and the outcome.
/// Seed 002's example script prints a line or two (`nsupdate` with `debug yes` prints a
/// few hundred bytes); 4 KiB shows a whole error, the rest is read and counted but dropped
/// so a chatty program can neither block on a full pipe nor fill memory.
pub const OUTPUT_BYTES_MAX: usize = 4096;

/// How long to keep reading a program's output after it exited or was killed: a
/// background process it left behind may hold the pipes open forever.
pub const OUTPUT_GRACE: Duration = Duration::from_secs(1);

/// How long to wait for a killed program to be reaped. SIGKILL cannot be ignored; this
/// only bounds a process stuck in uninterruptible sleep (a dead NFS mount).
pub const REAP_TIMEOUT: Duration = Duration::from_secs(5);

/// The first [`OUTPUT_BYTES_MAX`] bytes of stdout and stderr, as text (with a note of
/// how much more there was).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
}

/// How a program ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Exited(i32),
    /// Ended by a signal Haven did not send.
    Signalled(i32),
    /// Ran past its timeout: its process group was killed.
    TimedOut,
}

/// A program that was started, and how it ended.
#[derive(Debug)]
pub struct Ran {
    /// `Err` if waiting for it failed (not expected on Linux).
    pub ended: Result<Ended, io::Error>,
    pub duration: Duration,
    pub output: Output,
}

impl Ran {
    pub fn duration_ms(&self) -> u64 {
        self.duration.as_millis().try_into().unwrap_or(u64::MAX)
    }
}

/// Why `program` (described as `what`, such as "hook script") could not be started, in
/// words that point at the cause rather than "No such file or directory".
pub fn spawn_error(what: &str, program: &str, error: &io::Error) -> String {
    match error.raw_os_error() {
        Some(libc::ENOEXEC) => format!("{what} {program} cannot be executed: {error} (missing #! line?)"),
        Some(libc::EACCES) => format!("{what} {program} cannot be executed: permission denied"),
        Some(libc::ENOENT) => format!("{what} {program} cannot be started: {error} (its #! interpreter missing?)"),
        _ => format!("{what} {program} cannot be started: {error}"),
    }
}

/// Sends `signal` to the process group led by `pid` (a child started in its own group).
/// The caller must not have reaped the leader, so the group id cannot have been reused.
pub fn signal_group(pid: u32, signal: i32) {
    if let Ok(pid) = i32::try_from(pid) {
        if pid > 0 {
            // SAFETY: kill(2) with a negative pid signals that process group; no memory is
            // involved.
            unsafe {
                libc::kill(-pid, signal);
            }
        }
    }
}

/// Runs `command` to its end or `timeout`, whichever comes first (see the module
/// picture). The caller sets the program, arguments, environment, stdin and working
/// directory; this sets the pipes and the process group. `Err` if it could not start.
pub async fn run_bounded(mut command: tokio::process::Command, timeout: Duration) -> io::Result<Ran> {
    command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so the timeout kills whatever it started too.
        .process_group(0)
        .kill_on_drop(true);
    let started = Instant::now();
    let mut child = command.spawn()?;
    let pid = child.id();
    let stdout = child.stdout.take().map(|pipe| tokio::spawn(read_bounded(pipe)));
    let stderr = child.stderr.take().map(|pipe| tokio::spawn(read_bounded(pipe)));
    let ended = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => Ok(match (status.code(), status.signal()) {
            (Some(code), _) => Ended::Exited(code),
            (None, signal) => Ended::Signalled(signal.unwrap_or(0)),
        }),
        Ok(Err(error)) => Err(error),
        Err(_elapsed) => {
            // Not yet reaped, so the pid (and group id) cannot have been reused.
            if let Some(pid) = pid {
                signal_group(pid, libc::SIGKILL);
            }
            let _ = child.start_kill();
            if tokio::time::timeout(REAP_TIMEOUT, child.wait()).await.is_err() {
                tracing::error!(pid, "a program killed after its timeout was not reaped within {REAP_TIMEOUT:?}");
            }
            Ok(Ended::TimedOut)
        }
    };
    let duration = started.elapsed();
    let output = Output { stdout: collect_output(stdout).await, stderr: collect_output(stderr).await };
    Ok(Ran { ended, duration, output })
}

/// Reads a pipe to its end, keeping the first [`OUTPUT_BYTES_MAX`] bytes and counting
/// the rest.
pub async fn read_bounded(mut pipe: impl AsyncRead + Unpin) -> (Vec<u8>, u64) {
    let mut kept = Vec::new();
    let mut dropped = 0u64;
    let mut buffer = [0u8; 4096];
    loop {
        match pipe.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let take = n.min(OUTPUT_BYTES_MAX - kept.len());
                kept.extend_from_slice(&buffer[..take]);
                dropped += (n - take) as u64;
            }
        }
    }
    (kept, dropped)
}

/// The output read so far as text (within [`OUTPUT_GRACE`] once the program ended).
pub async fn collect_output(reader: Option<tokio::task::JoinHandle<(Vec<u8>, u64)>>) -> String {
    let Some(mut reader) = reader else { return String::new() };
    match tokio::time::timeout(OUTPUT_GRACE, &mut reader).await {
        Ok(Ok((kept, dropped))) => {
            let mut text = String::from_utf8_lossy(&kept).into_owned();
            if dropped > 0 {
                text.push_str(&format!("\n[... {dropped} more bytes not kept]"));
            }
            text
        }
        Ok(Err(_join_error)) => String::new(),
        Err(_elapsed) => {
            reader.abort();
            "[output not collected: a process the program left behind holds it open]".to_string()
        }
    }
}
