//! A role's processes on its holder: started with no shell under a small guard process
//! that holds the role's lease end, so the role dies with its lease and with Haven, even
//! when Haven itself is paused or killed.
//!
//! ```text
//!   haven (this process)                 guard (haven --haven-role-guard, own group)
//!   ────────────────────                 ─────────────────────────────────────────────
//!   RoleProcess::start ── socket ──────▶ "lease <end>"   (CLOCK_BOOTTIME ms)
//!                                        spawns the start command:
//!                                          own process group, stdin /dev/null,
//!                                          PR_SET_PDEATHSIG = SIGKILL (dies with the guard),
//!                                          HAVEN_ROLE, HAVEN_EPOCH, HAVEN_NODE,
//!                                          HAVEN_CLUSTER_ID; stdout/stderr to haven
//!                      ◀────────────── "started <pid>"
//!   extend(end)        ──────────────▶ "lease <end>"   (never moves back)
//!   stop(): the stop command (bounded), then "stop <grace>" ─▶ SIGTERM to the group,
//!                                                              SIGKILL after the grace
//!   kill()             ──────────────▶ "kill"  ─▶ SIGKILL to the group now
//!                                        on its own, whatever haven does:
//!                                          lease end - grace - lead ─▶ SIGTERM the group
//!                                          lease end - lead ─────────▶ SIGKILL the group
//!                                          haven gone (EOF) ─────────▶ SIGTERM, SIGKILL
//!                                          start command exited ─────▶ SIGKILL leftovers
//!                      ◀────────────── "exited code=N" | "exited signal=N", guard exits
//! ```
//!
//! Why a guard and not only PR_SET_PDEATHSIG: the death signal reaches only the direct
//! child, not what it started, and never fires while Haven is merely stopped (SIGSTOP, a
//! stalled machine-wide freeze of this process): the role would run on past its lease,
//! beside the next holder. The guard is this same binary (`/proc/self/exe`, so an upgrade
//! on disk changes nothing), single-threaded, in its own process group (a signal meant for
//! Haven's group does not stop it); the start command gets PR_SET_PDEATHSIG from it,
//! which is reliable because the guard has one thread. The guard is also a child
//! subreaper, so a process that daemonized out of the role's group is still its child and
//! still killed. If the guard itself is killed, the start command dies by its death signal
//! and Haven, seeing the guard's socket close without an exit report, kills the rest of
//! the group.
//!
//! A binary that uses this module calls [`run_guard_if_requested`] first thing in `main`
//! (`haven` does; the tests' binary does).

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use haven_core::roles::definition::CommandLine;
use haven_core::roles::lease::KILL_LEAD_MS;
use haven_core::roles::lease::STOP_COMMAND_TIMEOUT_MS;
use haven_core::roles::lease::TERM_GRACE_MS;
use tokio::io::AsyncBufReadExt as _;
use tokio::io::AsyncWriteExt as _;

use crate::process::collect_output;
use crate::process::read_bounded;
use crate::process::run_bounded;
use crate::process::signal_group;
use crate::process::spawn_error;
use crate::process::Ended;
use crate::process::Output;
use crate::process::Ran;

/// The first argument that makes this binary a role guard.
pub const GUARD_ARG: &str = "--haven-role-guard";

/// How long the guard waits for its first lease before giving up, and Haven for the
/// guard's "started": a process start takes milliseconds; five seconds ride out a loaded
/// machine without leaving a guard waiting forever for a Haven that went away.
pub const GUARD_START_TIMEOUT_MS: u64 = 5_000;

/// How often the guard looks at its child when nothing else happens: the longest delay
/// between the start command's exit and the report (and the kill of its leftovers).
pub const GUARD_POLL_MS: u64 = 50;

/// How long the guard keeps passing on the role's last output once its processes are
/// gone (a pipe still held by a dying process closes within it).
pub const OUTPUT_DRAIN_MS: u64 = 200;

/// Longest control line either side accepts: the lines are a word and a number.
pub const CONTROL_LINE_BYTES_MAX: usize = 128;

/// How long Haven waits for the guard's exit report once the group was told to stop or
/// be killed: the grace, plus time to reap a process in uninterruptible sleep.
pub const EXIT_REPORT_TIMEOUT: Duration = Duration::from_millis(TERM_GRACE_MS + 5_000);

/// Milliseconds on CLOCK_BOOTTIME: monotonic, and counting time the machine was
/// suspended, so a lease measured on it cannot outlive a suspend. The guard and Haven
/// read the same clock.
pub fn boottime_ms() -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec it is given; CLOCK_BOOTTIME exists on
    // every Linux Haven runs on (2.6.39 and later).
    let result = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut now) };
    if result != 0 {
        return 0;
    }
    let secs = u64::try_from(now.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(now.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1000).saturating_add(nanos / 1_000_000)
}

/// The environment a role's commands (start, stop, check) get beside Haven's own: what
/// lets a service refuse a writer with an older epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleEnv {
    pub role: String,
    pub epoch: u64,
    pub node: u64,
    pub cluster_id: String,
}

impl RoleEnv {
    fn apply(&self, command: &mut tokio::process::Command) {
        command
            .env("HAVEN_ROLE", &self.role)
            .env("HAVEN_EPOCH", self.epoch.to_string())
            .env("HAVEN_NODE", self.node.to_string())
            .env("HAVEN_CLUSTER_ID", &self.cluster_id);
    }

    /// A command of the role, run directly: no shell, stdin `/dev/null`, working
    /// directory `/`, the role's environment.
    fn command(&self, program: &str, args: &[String]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(program);
        command.args(args).current_dir("/").stdin(Stdio::null());
        self.apply(&mut command);
        command
    }
}

/// How the start command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoleExit {
    Exited(i32),
    Signalled(i32),
    /// The guard went away without saying (killed); the group was killed by Haven.
    GuardLost,
}

/// What a stop did.
#[derive(Debug)]
pub struct StopReport {
    /// The stop command's run (`Err`: it could not start, in words).
    pub stop_command: Result<Ran, String>,
    pub exit: RoleExit,
}

/// A role's start command running under its guard.
pub struct RoleProcess {
    guard: tokio::process::Child,
    to_guard: tokio::net::unix::OwnedWriteHalf,
    from_guard: tokio::io::Lines<tokio::io::BufReader<tokio::io::Take<tokio::net::unix::OwnedReadHalf>>>,
    pid: u32,
    exit: Option<RoleExit>,
    stdout: Option<tokio::task::JoinHandle<(Vec<u8>, u64)>>,
    stderr: Option<tokio::task::JoinHandle<(Vec<u8>, u64)>>,
}

/// The guard's side of the control socket is read up to this much in all: it says
/// "started" (or an error of at most `ARG_BYTES_MAX`) and "exited" once each.
const CONTROL_READ_BYTES_MAX: u64 = (2 * haven_core::events::ARG_BYTES_MAX + 4 * CONTROL_LINE_BYTES_MAX) as u64;

impl RoleProcess {
    /// Starts `start` under a guard holding the lease until `lease_end_ms` (on
    /// [`boottime_ms`]). The guard is `/proc/self/exe` (this binary, whose `main` calls
    /// [`run_guard_if_requested`]).
    pub async fn start(env: &RoleEnv, start: &CommandLine, lease_end_ms: u64) -> Result<RoleProcess, String> {
        let guard_exe = PathBuf::from("/proc/self/exe");
        if boottime_ms() >= lease_end_ms {
            return Err(format!("the lease of epoch {} has already ended: not started", env.epoch));
        }
        let (ours, theirs) =
            std::os::unix::net::UnixStream::pair().map_err(|error| format!("control socket: {error}"))?;
        ours.set_nonblocking(true).map_err(|error| format!("control socket: {error}"))?;
        let ours = tokio::net::UnixStream::from_std(ours).map_err(|error| format!("control socket: {error}"))?;
        let mut command = tokio::process::Command::new(&guard_exe);
        command
            .arg(GUARD_ARG)
            .arg(&start.program)
            .args(&start.args)
            .current_dir("/")
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own group: a signal to Haven's group does not stop the guard.
            .process_group(0);
        env.apply(&mut command);
        let mut guard =
            command.spawn().map_err(|error| spawn_error("role guard", &guard_exe.display().to_string(), &error))?;
        let stdout = guard.stdout.take().map(|pipe| tokio::spawn(read_bounded(pipe)));
        let stderr = guard.stderr.take().map(|pipe| tokio::spawn(read_bounded(pipe)));
        let (read, write) = ours.into_split();
        let from_guard = tokio::io::BufReader::new(tokio::io::AsyncReadExt::take(read, CONTROL_READ_BYTES_MAX)).lines();
        let mut process = RoleProcess { guard, to_guard: write, from_guard, pid: 0, exit: None, stdout, stderr };
        process.send(&format!("lease {lease_end_ms}")).await?;
        let answer =
            tokio::time::timeout(Duration::from_millis(GUARD_START_TIMEOUT_MS), process.from_guard.next_line())
                .await
                .map_err(|_| format!("the role guard did not answer within {GUARD_START_TIMEOUT_MS} ms"))?;
        match answer {
            Ok(Some(line)) if line.starts_with("started ") => {
                process.pid =
                    line["started ".len()..].trim().parse().map_err(|_| format!("the role guard said {line:?}"))?;
                Ok(process)
            }
            Ok(Some(line)) if line.starts_with("error ") => {
                let _ = process.guard.wait().await;
                Err(line["error ".len()..].to_string())
            }
            Ok(Some(line)) => Err(format!("the role guard said {line:?}")),
            Ok(None) | Err(_) => {
                let _ = process.guard.wait().await;
                let stderr = collect_output(process.stderr.take()).await;
                Err(format!(
                    "the role guard ended before starting the role (is {} a Haven binary?): {stderr}",
                    guard_exe.display()
                ))
            }
        }
    }

    /// The start command's pid, which is also its process group id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The guard's pid.
    pub fn guard_pid(&self) -> Option<u32> {
        self.guard.id()
    }

    async fn send(&mut self, line: &str) -> Result<(), String> {
        let mut bytes = line.as_bytes().to_vec();
        bytes.push(b'\n');
        self.to_guard.write_all(&bytes).await.map_err(|error| format!("the role guard is gone: {error}"))
    }

    /// Extends the lease the guard enforces (a renewal was granted).
    pub async fn extend(&mut self, lease_end_ms: u64) -> Result<(), String> {
        self.send(&format!("lease {lease_end_ms}")).await
    }

    /// Waits for the start command to end (on its own, by its lease, by a stop); the
    /// group's leftovers are killed by then. Cancel-safe.
    pub async fn exited(&mut self) -> RoleExit {
        if let Some(exit) = &self.exit {
            return exit.clone();
        }
        let exit = loop {
            match self.from_guard.next_line().await {
                Ok(Some(line)) => {
                    if let Some(exit) = parse_exit(&line) {
                        break exit;
                    }
                    tracing::warn!(pid = self.pid, "role guard said {line:?}");
                }
                Ok(None) | Err(_) => {
                    // The guard died without reporting: the start command died with it
                    // (its death signal); whatever else is in the group goes now. The
                    // group still has members or its id is free: reuse within these
                    // milliseconds would need the pid space to wrap.
                    signal_group(self.pid, libc::SIGKILL);
                    break RoleExit::GuardLost;
                }
            }
        };
        let _ = self.guard.wait().await;
        self.exit = Some(exit.clone());
        exit
    }

    /// Stops the role in order, within its lease: the stop command (at most
    /// `STOP_COMMAND_TIMEOUT_MS`, and never past `lease_end_ms - grace - lead`), then
    /// SIGTERM to the group, SIGKILL after `TERM_GRACE_MS`.
    pub async fn stop(&mut self, env: &RoleEnv, stop: &CommandLine, lease_end_ms: u64) -> StopReport {
        let budget_ms = lease_end_ms.saturating_sub(boottime_ms()).saturating_sub(TERM_GRACE_MS + KILL_LEAD_MS);
        let timeout = Duration::from_millis(STOP_COMMAND_TIMEOUT_MS.min(budget_ms));
        let stop_command = if self.exit.is_some() || timeout.is_zero() {
            Err("not run: the role had already ended, or its lease leaves no time for it".to_string())
        } else {
            run_bounded(env.command(&stop.program, &stop.args), timeout)
                .await
                .map_err(|error| spawn_error("stop command", &stop.program, &error))
        };
        let _ = self.send(&format!("stop {TERM_GRACE_MS}")).await;
        let exit = match tokio::time::timeout(EXIT_REPORT_TIMEOUT, self.exited()).await {
            Ok(exit) => exit,
            Err(_) => self.kill().await,
        };
        StopReport { stop_command, exit }
    }

    /// SIGKILL to the whole group now, without the stop command (the lease has ended:
    /// another node may hold the role).
    pub async fn kill(&mut self) -> RoleExit {
        let _ = self.send("kill").await;
        match tokio::time::timeout(EXIT_REPORT_TIMEOUT, self.exited()).await {
            Ok(exit) => exit,
            Err(_) => {
                signal_group(self.pid, libc::SIGKILL);
                if let Some(pid) = self.guard.id() {
                    signal_group(pid, libc::SIGKILL);
                }
                let _ = self.guard.wait().await;
                self.exit = Some(RoleExit::GuardLost);
                RoleExit::GuardLost
            }
        }
    }

    /// The first `OUTPUT_BYTES_MAX` bytes of the role's stdout and stderr (the guard's
    /// own complaints among them), once it has ended.
    pub async fn output(&mut self) -> Output {
        Output { stdout: collect_output(self.stdout.take()).await, stderr: collect_output(self.stderr.take()).await }
    }
}

fn parse_exit(line: &str) -> Option<RoleExit> {
    let rest = line.strip_prefix("exited ")?;
    if let Some(code) = rest.strip_prefix("code=") {
        return code.parse().ok().map(RoleExit::Exited);
    }
    rest.strip_prefix("signal=")?.parse().ok().map(RoleExit::Signalled)
}

/// What a check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    pub passed: bool,
    /// "exit code 0", "exit code 3", "timed out after 10000 ms", "cannot be started: ...",
    /// with the first line of its stderr when it failed.
    pub detail: String,
}

/// Runs a role's check command with the role's environment, killed (with its group) at
/// `timeout_ms`: exit 0 passes, anything else fails.
pub async fn run_check(env: &RoleEnv, check: &CommandLine, timeout_ms: u64) -> CheckResult {
    let ran = match run_bounded(env.command(&check.program, &check.args), Duration::from_millis(timeout_ms)).await {
        Ok(ran) => ran,
        Err(error) => {
            return CheckResult { passed: false, detail: spawn_error("check command", &check.program, &error) }
        }
    };
    let first_error_line = ran.output.stderr.lines().next().map(|line| format!(": {line}")).unwrap_or_default();
    match ran.ended {
        Ok(Ended::Exited(0)) => CheckResult { passed: true, detail: "exit code 0".into() },
        Ok(Ended::Exited(code)) => CheckResult { passed: false, detail: format!("exit code {code}{first_error_line}") },
        Ok(Ended::Signalled(signal)) => {
            CheckResult { passed: false, detail: format!("ended by signal {signal}{first_error_line}") }
        }
        Ok(Ended::TimedOut) => CheckResult { passed: false, detail: format!("timed out after {timeout_ms} ms") },
        Err(error) => CheckResult { passed: false, detail: format!("waiting for it: {error}") },
    }
}

/// A process's state letter and process group, from `/proc/PID/stat` ("pid (comm) state
/// ppid pgrp ..."; the command may hold spaces and parentheses, so the fields are read
/// after the last `)`).
fn stat_of(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let pgrp = fields.get(2)?.parse().ok()?;
    Some((state, pgrp))
}

/// Whether `pid` is a live process (not a zombie, not gone).
pub fn is_live(pid: u32) -> bool {
    stat_of(pid).is_some_and(|(state, _)| state != 'Z')
}

/// The live (not zombie) processes of process group `pgid`: what is left of a role.
pub fn live_group_members(pgid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| stat_of(pid).is_some_and(|(state, pgrp)| state != 'Z' && pgrp == pgid))
        .collect()
}

// ---------------------------------------------------------------------------------------
// The guard process.

/// If this process was started as a role guard, runs the guard and exits; otherwise
/// returns at once. Call it first in `main`, before any thread is started.
pub fn run_guard_if_requested() {
    let mut args = std::env::args_os();
    if args.nth(1).as_deref() != Some(std::ffi::OsStr::new(GUARD_ARG)) {
        return;
    }
    let Some(program) = args.next() else {
        eprintln!("haven-role-guard: no program to run");
        std::process::exit(2);
    };
    let rest: Vec<OsString> = args.collect();
    std::process::exit(guard::run(program, rest));
}

mod guard {
    //! The guard itself: one thread, no runtime, every wait bounded by `GUARD_POLL_MS`.

    use std::ffi::OsString;
    use std::io::Read as _;
    use std::io::Write as _;
    use std::mem::ManuallyDrop;
    use std::os::fd::AsRawFd as _;
    use std::os::fd::FromRawFd as _;
    use std::os::unix::process::CommandExt as _;
    use std::os::unix::process::ExitStatusExt as _;
    use std::process::Stdio;

    use super::boottime_ms;
    use super::live_group_members;
    use super::CONTROL_LINE_BYTES_MAX;
    use super::GUARD_POLL_MS;
    use super::GUARD_START_TIMEOUT_MS;
    use super::OUTPUT_DRAIN_MS;
    use crate::process::signal_group;
    use crate::process::spawn_error;
    use crate::process::REAP_TIMEOUT;
    use haven_core::events::sanitize_arg;
    use haven_core::roles::lease::KILL_LEAD_MS;
    use haven_core::roles::lease::TERM_GRACE_MS;

    enum Message {
        Lease(u64),
        Stop(u64),
        Kill,
        Eof,
        Garbled(String),
    }

    /// A complaint on stderr (Haven's pipe; gone with Haven: then it is dropped).
    fn say(text: &str) {
        let mut stderr = ManuallyDrop::new(
            // SAFETY: fd 2 is open for the life of the process and never closed here.
            unsafe { std::fs::File::from_raw_fd(2) },
        );
        let _ = stderr.write_all(format!("haven-role-guard: {text}\n").as_bytes());
    }

    /// The control socket on fd 0, and the start command's stdout and stderr, which the
    /// guard reads and passes on to its own (Haven's pipes). The role never writes to
    /// Haven directly: when Haven dies, a role that prints would otherwise die of
    /// SIGPIPE instead of stopping in order.
    struct Control {
        socket: ManuallyDrop<std::fs::File>,
        buffer: Vec<u8>,
        eof: bool,
        eof_reported: bool,
        /// The start command's stdout and stderr, passed on to fds 1 and 2 while open.
        outputs: [Option<std::fs::File>; 2],
    }

    impl Control {
        fn new() -> Control {
            // SAFETY: fd 0 is the control socket Haven passed as stdin; it stays open for
            // the life of the process (ManuallyDrop: never closed here).
            let socket = ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(0) });
            Control { socket, buffer: Vec::new(), eof: false, eof_reported: false, outputs: [None, None] }
        }

        fn send(&mut self, line: &str) {
            // Haven may be gone: nothing to do about a failed write (SIGPIPE is ignored
            // by Rust's runtime, so it is an error, not a death).
            let _ = self.socket.write_all(format!("{line}\n").as_bytes());
        }

        /// Waits at most `wait_ms` for anything on the socket or the outputs; passes
        /// output on; returns a control message if one came.
        fn next(&mut self, wait_ms: u64) -> Option<Message> {
            if let Some(message) = self.take_line().or_else(|| self.take_eof()) {
                return Some(message);
            }
            self.poll_io(wait_ms, !self.eof);
            if self.buffer.len() > CONTROL_LINE_BYTES_MAX && !self.buffer.contains(&b'\n') {
                self.buffer.clear();
                return Some(Message::Garbled(format!("a control line longer than {CONTROL_LINE_BYTES_MAX} bytes")));
            }
            self.take_line().or_else(|| self.take_eof())
        }

        /// The end of the socket, reported once.
        fn take_eof(&mut self) -> Option<Message> {
            (self.eof && !self.eof_reported).then(|| {
                self.eof_reported = true;
                Message::Eof
            })
        }

        /// One wait of at most `wait_ms` on the outputs (and the socket, if `socket`):
        /// output is passed on, control bytes buffered.
        fn poll_io(&mut self, wait_ms: u64, socket: bool) {
            let fd = |file: &Option<std::fs::File>| file.as_ref().map_or(-1, |file| file.as_raw_fd());
            let mut polls = [
                libc::pollfd { fd: if socket { 0 } else { -1 }, events: libc::POLLIN, revents: 0 },
                libc::pollfd { fd: fd(&self.outputs[0]), events: libc::POLLIN, revents: 0 },
                libc::pollfd { fd: fd(&self.outputs[1]), events: libc::POLLIN, revents: 0 },
            ];
            if polls.iter().all(|poll| poll.fd < 0) {
                std::thread::sleep(std::time::Duration::from_millis(wait_ms));
                return;
            }
            let timeout = i32::try_from(wait_ms).unwrap_or(i32::MAX);
            // SAFETY: three pollfds, valid for the call (negative fds are ignored).
            let ready = unsafe { libc::poll(polls.as_mut_ptr(), 3, timeout) };
            if ready <= 0 {
                return;
            }
            let mut chunk = [0u8; 4096];
            for (index, poll) in polls.iter().enumerate().skip(1) {
                if poll.revents == 0 {
                    continue;
                }
                let Some(file) = self.outputs[index - 1].as_mut() else { continue };
                match file.read(&mut chunk) {
                    Ok(0) | Err(_) => self.outputs[index - 1] = None,
                    Ok(n) => {
                        let mut target = ManuallyDrop::new(
                            // SAFETY: fds 1 and 2 are open for the life of the process.
                            unsafe { std::fs::File::from_raw_fd(index as i32) },
                        );
                        let _ = target.write_all(&chunk[..n]);
                    }
                }
            }
            if polls[0].revents != 0 {
                match self.socket.read(&mut chunk[..256]) {
                    Ok(0) => self.eof = true,
                    Ok(n) => self.buffer.extend_from_slice(&chunk[..n]),
                    Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => self.eof = true,
                }
            }
        }

        /// Passes on what the outputs still hold, for at most `max_ms`.
        fn drain_outputs(&mut self, max_ms: u64) {
            let until_ms = boottime_ms() + max_ms;
            while self.outputs.iter().any(Option::is_some) && boottime_ms() < until_ms {
                self.poll_io(10, false);
            }
        }

        fn take_line(&mut self) -> Option<Message> {
            let end = self.buffer.iter().position(|&byte| byte == b'\n')?;
            let line: Vec<u8> = self.buffer.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line[..end]).into_owned();
            let number = |prefix: &str| line.strip_prefix(prefix).and_then(|rest| rest.trim().parse::<u64>().ok());
            Some(if let Some(end_ms) = number("lease ") {
                Message::Lease(end_ms)
            } else if let Some(grace_ms) = number("stop ") {
                Message::Stop(grace_ms)
            } else if line == "kill" {
                Message::Kill
            } else {
                Message::Garbled(line)
            })
        }
    }

    /// Whether `pid` has exited, without reaping it (so its process group id stays
    /// reserved while the group is killed).
    fn exited_unreaped(pid: i32) -> bool {
        // SAFETY: waitid fills the siginfo it is given; WNOWAIT leaves the child waitable.
        unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let result =
                libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, libc::WEXITED | libc::WNOHANG | libc::WNOWAIT);
            result == 0 && info.si_pid() != 0
        }
    }

    /// Kills and reaps every child left (processes that left the role's group and were
    /// re-parented here, this being a subreaper), for at most `REAP_TIMEOUT`.
    fn kill_and_reap_children() {
        let started = boottime_ms();
        loop {
            // SAFETY: getpid cannot fail.
            let me = unsafe { libc::getpid() };
            if let Ok(children) = std::fs::read_to_string(format!("/proc/{me}/task/{me}/children")) {
                for pid in children.split_whitespace().filter_map(|pid| pid.parse::<i32>().ok()) {
                    // SAFETY: kill(2) on our own child, not yet reaped.
                    unsafe {
                        libc::kill(pid, libc::SIGKILL);
                    }
                }
            }
            loop {
                // SAFETY: waitpid with a null status pointer.
                let reaped = unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) };
                if reaped == 0 {
                    break;
                }
                if reaped < 0 {
                    return; // ECHILD: nothing left
                }
            }
            if boottime_ms().saturating_sub(started) > REAP_TIMEOUT.as_millis() as u64 {
                say(&format!("processes of the role did not die within {REAP_TIMEOUT:?}"));
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// What Haven (or the end of the start command) asked for, before the lease would.
    #[derive(Default)]
    struct Asked {
        /// SIGTERM to the group from then on (the first request counts).
        term_at_ms: Option<u64>,
        /// SIGKILL to the group from then on (the earliest request counts).
        kill_at_ms: Option<u64>,
    }

    impl Asked {
        /// An orderly stop from `now_ms`: SIGTERM now, SIGKILL after `grace_ms`.
        fn stop(&mut self, now_ms: u64, grace_ms: u64) {
            self.term_at_ms.get_or_insert(now_ms);
            let kill_ms = now_ms.saturating_add(grace_ms);
            self.kill_at_ms = Some(self.kill_at_ms.map_or(kill_ms, |at| at.min(kill_ms)));
        }
    }

    pub(super) fn run(program: OsString, args: Vec<OsString>) -> i32 {
        let mut control = Control::new();
        let deadline_ms = boottime_ms() + GUARD_START_TIMEOUT_MS;
        let mut lease_end_ms = loop {
            let now_ms = boottime_ms();
            if now_ms >= deadline_ms {
                say(&format!("no lease within {GUARD_START_TIMEOUT_MS} ms; not starting"));
                return 2;
            }
            match control.next(deadline_ms - now_ms) {
                Some(Message::Lease(end_ms)) => break end_ms,
                Some(Message::Eof) => return 2,
                Some(_) => {
                    control.send("error the first control line must be the lease");
                    return 2;
                }
                None => {}
            }
        };
        if boottime_ms() >= lease_end_ms {
            control.send("error the lease had ended before the start: not started");
            return 2;
        }
        // SAFETY: prctl with integer arguments.
        unsafe {
            libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        }
        // SAFETY: getpid cannot fail.
        let guard_pid = unsafe { libc::getpid() };
        let mut command = std::process::Command::new(&program);
        command.args(&args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
        // SAFETY: only async-signal-safe calls between fork and exec (prctl, getppid).
        unsafe {
            command.pre_exec(move || {
                // Dies with the guard: reliable, the guard having a single thread.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The guard may have died between fork and prctl.
                if libc::getppid() != guard_pid {
                    return Err(std::io::Error::other("the role guard died while starting the role"));
                }
                Ok(())
            });
        }
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(error) => {
                let error = spawn_error("start command", &program.to_string_lossy(), &error);
                control.send(&format!("error {}", sanitize_arg(&error.replace('\n', " "))));
                return 2;
            }
        };
        let pid = child.id() as i32;
        control.outputs = [
            child.stdout.take().map(|pipe| std::fs::File::from(std::os::fd::OwnedFd::from(pipe))),
            child.stderr.take().map(|pipe| std::fs::File::from(std::os::fd::OwnedFd::from(pipe))),
        ];
        control.send(&format!("started {pid}"));

        let mut asked = Asked::default();
        let mut term_sent = false;
        let mut kill_sent = false;
        let mut leader_exited = false;
        loop {
            let now_ms = boottime_ms();
            // The lease bounds everything: SIGTERM early enough for the grace, SIGKILL
            // before the end.
            let lease_kill_ms = lease_end_ms.saturating_sub(KILL_LEAD_MS);
            let lease_term_ms = lease_kill_ms.saturating_sub(TERM_GRACE_MS);
            let term_due_ms = asked.term_at_ms.map_or(lease_term_ms, |at| at.min(lease_term_ms));
            let kill_due_ms = asked.kill_at_ms.map_or(lease_kill_ms, |at| at.min(lease_kill_ms));
            if !kill_sent && now_ms >= kill_due_ms {
                signal_group(pid as u32, libc::SIGKILL);
                kill_sent = true;
            } else if !term_sent && now_ms >= term_due_ms {
                signal_group(pid as u32, libc::SIGTERM);
                term_sent = true;
            }
            if !leader_exited && exited_unreaped(pid) {
                // The rest of the group gets what a stop gives it: SIGTERM, then SIGKILL
                // after the grace (systemd's control-group stop). The leader stays
                // unreaped meanwhile, so the group id stays reserved.
                leader_exited = true;
                if !term_sent {
                    signal_group(pid as u32, libc::SIGTERM);
                    term_sent = true;
                    asked.stop(boottime_ms(), TERM_GRACE_MS);
                }
            }
            if leader_exited && (kill_sent || live_group_members(pid as u32).is_empty()) {
                signal_group(pid as u32, libc::SIGKILL);
                let status = child.wait();
                kill_and_reap_children();
                control.drain_outputs(OUTPUT_DRAIN_MS);
                let report = match status {
                    Ok(status) => match (status.code(), status.signal()) {
                        (Some(code), _) => format!("exited code={code}"),
                        (None, signal) => format!("exited signal={}", signal.unwrap_or(0)),
                    },
                    // A report Haven can parse (an unparsable one reads as a lost guard).
                    Err(error) => {
                        say(&format!("cannot collect the start command's status: {error}"));
                        "exited signal=0".to_string()
                    }
                };
                control.send(&report);
                return 0;
            }
            let next_ms = [term_due_ms, kill_due_ms]
                .into_iter()
                .filter(|&due| due > now_ms)
                .map(|due| due - now_ms)
                .min()
                .unwrap_or(GUARD_POLL_MS)
                .min(GUARD_POLL_MS);
            match control.next(next_ms) {
                None => {}
                Some(Message::Lease(end_ms)) => lease_end_ms = lease_end_ms.max(end_ms),
                Some(Message::Stop(grace_ms)) => asked.stop(boottime_ms(), grace_ms),
                Some(Message::Kill) => asked.stop(boottime_ms(), 0),
                // Haven is gone (killed, or it dropped the role): stop in order.
                Some(Message::Eof) => asked.stop(boottime_ms(), TERM_GRACE_MS),
                Some(Message::Garbled(line)) => {
                    say(&format!("unexpected control line {line:?}; stopping the role"));
                    asked.stop(boottime_ms(), TERM_GRACE_MS);
                }
            }
        }
    }
}
