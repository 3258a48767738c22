//! HA alerts carried out: seed 002's HA custom script (HAAdminAlertScript) and alert
//! e-mail (HAAlertEmail).
//!
//! ```text
//!   HA shell ── fire(config, event) ──▶ outcome recorded (recent(), newest last)
//!                  │ (returns at once)
//!                  ├─▶ hook queue (FIFO, ≤ HOOK_QUEUE_MAX) ──▶ one hook at a time:
//!                  │     hook_script EVENT ARG2 [ARG3]   no shell, stdin null,
//!                  │     HAVEN_EVENT, HAVEN_NODE_ID      output captured (bounded), logged,
//!                  │                                     process group killed at the timeout
//!                  └─▶ mail queue (FIFO, ≤ MAIL_QUEUE_MAX) ──▶ one mail at a time:
//!                        "[haven] EVENT on node N" to alert_email over SMTP
//!                        (STARTTLS, implicit TLS on 465, or plain for a local relay)
//! ```
//!
//! The script gets exactly the seed's parameters ("Failover" <active host> <standby host>,
//! ...), each as its own argv entry: nothing is interpreted by a shell. The hook and the
//! mail of one event run independently, so a slow script never delays the mail and a
//! slow relay never delays the next script. Everything here reports failures in the
//! outcome and the log; nothing a configuration can hold makes it panic.

use std::collections::VecDeque;
use std::io::ErrorKind;
use std::os::fd::AsRawFd as _;
use std::path::Path;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::MutexGuard;
use std::time::Duration;
use std::time::Instant;
use std::time::SystemTime;

use haven_core::events::delivery::MAIL_SEND_TIMEOUT_MS;
use haven_core::events::sanitize_arg;
use haven_core::ha::config::HaConfig;
use haven_core::ha::config::SmtpConfig;
use haven_core::ha::config::HOOK_TIMEOUT_S_MAX;
use haven_core::ha::config::HOOK_TIMEOUT_S_MIN;
use haven_core::ha::syntax::check_absolute_path;
use haven_core::ha::syntax::check_host_name;
use haven_core::hook_file;
use haven_core::hook_file::EntryKind;
use haven_core::hook_file::EntryMeta;
use haven_core::secret_file;
use haven_core::secret_file::SecretFileMeta;
use haven_core::secret_file::SECRETS_DIR_DEFAULT;
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::Tls;
use lettre::transport::smtp::client::TlsParameters;
use lettre::transport::smtp::extension::ClientId;
use lettre::AsyncSmtpTransport;
use lettre::AsyncTransport as _;
use lettre::Message;
use lettre::Tokio1Executor;
use serde::Deserialize;
use serde::Serialize;

use crate::process::run_bounded;
use crate::process::spawn_error;
use crate::process::Ended;
use crate::process::Output;

/// Outcomes kept for status. HA events are rare (a failover, a standby going away and
/// coming back): 32 covers a bad day's worth, and with the bounded output of each hook
/// the whole ring stays well under a megabyte.
pub const RECENT_MAX: usize = 32;

/// Hooks waiting to run. Events are rare, and one hook runs at most
/// `hook_timeout_s` (10 minutes at most): 16 queued hooks means the script hangs or the
/// cluster flaps, and keeping more would only delay the newest news (the oldest is
/// dropped, with a warning, because the newest event describes the current state).
pub const HOOK_QUEUE_MAX: usize = 16;

/// Mails waiting to be sent, for the same reason as [`HOOK_QUEUE_MAX`]: a relay that is
/// down makes every send wait for [`MAIL_SEND_TIMEOUT`], and an operator needs the newest
/// alerts, not a backlog.
pub const MAIL_QUEUE_MAX: usize = 16;

/// Bytes of a hook's stdout, and again of its stderr, kept for the log and the outcome
/// (the shared runner's bound, `crate::process`).
pub use crate::process::OUTPUT_BYTES_MAX as HOOK_OUTPUT_BYTES_MAX;
/// How long to keep reading a hook's output after the script exited or was killed.
pub use crate::process::OUTPUT_GRACE as HOOK_OUTPUT_GRACE;
/// How long to wait for a killed hook to be reaped.
pub use crate::process::REAP_TIMEOUT as HOOK_REAP_TIMEOUT;
/// Longest argument passed to the script and put in the mail (defined with the events, in
/// `haven_core::events`).
pub use haven_core::events::ARG_BYTES_MAX;

/// Timeout of each SMTP step (connect, each command, TLS handshake). RFC 5321 section
/// 4.5.3.2 suggests minutes for a mail transfer agent; an alert goes to a relay that
/// answers in milliseconds, and 30 s rides out a loaded or distant one.
pub const SMTP_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Timeout of one whole send (all steps), so a relay that trickles answers cannot hold
/// the mail queue: two command timeouts. The event log's re-delivery bound counts on it
/// (`haven_core::events::delivery::MAIL_SEND_TIMEOUT_MS`).
pub const MAIL_SEND_TIMEOUT: Duration = Duration::from_millis(MAIL_SEND_TIMEOUT_MS);

/// Largest password file read (a password is a few dozen bytes; anything larger is the
/// wrong file and is refused rather than sent to the relay).
pub use haven_core::secret_file::SECRET_FILE_BYTES_MAX as PASSWORD_FILE_BYTES_MAX;

/// The SMTPS port (RFC 8314): with `smtp.starttls = true` this port gets implicit TLS,
/// every other port STARTTLS.
pub const SMTPS_PORT: u16 = 465;

/// An HA event, with what seed 002's custom script receives for it: the events and
/// their positional arguments are defined once, in `haven_core::events` (the replicated
/// event log keeps the same kinds).
pub use haven_core::events::EventKind as AlertEvent;

/// What became of an event's hook script.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum HookResult {
    /// No `hook_script` in the configuration.
    NotConfigured,
    /// Waiting behind earlier hooks.
    Queued,
    Running,
    /// The script ran to its end (0 is success; anything else is logged as a warning).
    Exited {
        code: i32,
        duration_ms: u64,
        stdout: String,
        stderr: String,
    },
    /// Ended by a signal Haven did not send.
    Signalled {
        signal: i32,
        duration_ms: u64,
        stdout: String,
        stderr: String,
    },
    /// Ran past `hook_timeout_s`: its process group was killed.
    TimedOut {
        timeout_s: u64,
        stdout: String,
        stderr: String,
    },
    /// Could not be started (missing, not executable, not an absolute path, ...).
    Failed {
        error: String,
    },
    /// Dropped from a full queue before it ran.
    Dropped {
        reason: String,
    },
}

impl HookResult {
    /// Whether nothing more will happen to it.
    pub fn is_final(&self) -> bool {
        !matches!(self, HookResult::Queued | HookResult::Running)
    }
}

/// What became of an event's e-mail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum MailResult {
    /// No `alert_email` or no `smtp.host` in the configuration.
    NotConfigured,
    Queued,
    Sending,
    /// Accepted by the relay; `response` is its answer (`250 ...`).
    Sent {
        duration_ms: u64,
        response: String,
    },
    Failed {
        error: String,
    },
    /// Dropped from a full queue before it was sent.
    Dropped {
        reason: String,
    },
}

impl MailResult {
    pub fn is_final(&self) -> bool {
        !matches!(self, MailResult::Queued | MailResult::Sending)
    }
}

/// One fired event and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertOutcome {
    /// Numbers events in the order they were fired on this node (from 1).
    pub seq: u64,
    pub event: String,
    /// The parameters as passed to the script (event first), after [`ARG_BYTES_MAX`].
    pub args: Vec<String>,
    /// When it was fired, ms since the Unix epoch (this node's clock).
    pub at_ms: u64,
    pub hook: HookResult,
    pub mail: MailResult,
}

impl AlertOutcome {
    /// Whether both the hook and the mail are done with.
    pub fn is_final(&self) -> bool {
        self.hook.is_final() && self.mail.is_final()
    }
}

/// Carries HA events out as hook runs and e-mails, in the background. Cheap to clone (one
/// shared queue per node).
#[derive(Clone)]
pub struct Alerter {
    shared: Arc<Shared>,
}

struct Shared {
    node_id: u64,
    /// The node's `secrets_dir`: the only place `smtp.password_file` is read from.
    secrets_dir: PathBuf,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Finished hook runs and mail sends, for `GET /metrics`.
    runs: crate::metrics::AlertRuns,
    next_seq: u64,
    recent: VecDeque<AlertOutcome>,
    hooks: VecDeque<HookJob>,
    hook_worker: bool,
    mails: VecDeque<MailJob>,
    mail_worker: bool,
}

struct HookJob {
    seq: u64,
    script: String,
    timeout_s: u64,
    event: &'static str,
    args: Vec<String>,
}

struct MailJob {
    seq: u64,
    to: String,
    smtp: SmtpConfig,
    event: &'static str,
    args: Vec<String>,
    at_ms: u64,
}

impl State {
    fn outcome(&mut self, seq: u64) -> Option<&mut AlertOutcome> {
        self.recent.iter_mut().find(|outcome| outcome.seq == seq)
    }

    fn set_hook(&mut self, seq: u64, result: HookResult) {
        self.runs.hook(&result);
        if let Some(outcome) = self.outcome(seq) {
            outcome.hook = result;
        }
    }

    fn set_mail(&mut self, seq: u64, result: MailResult) {
        self.runs.mail(&result);
        if let Some(outcome) = self.outcome(seq) {
            outcome.mail = result;
        }
    }
}

impl Alerter {
    /// An alerter that reads secret files only from [`SECRETS_DIR_DEFAULT`].
    pub fn new(node_id: u64) -> Alerter {
        Alerter::with_secrets_dir(node_id, PathBuf::from(SECRETS_DIR_DEFAULT))
    }

    /// An alerter that reads secret files (`smtp.password_file`) only from `secrets_dir`.
    pub fn with_secrets_dir(node_id: u64, secrets_dir: PathBuf) -> Alerter {
        Alerter { shared: Arc::new(Shared { node_id, secrets_dir, state: Mutex::new(State::default()) }) }
    }

    /// Records the event and queues its hook run and e-mail as the configuration says.
    /// Never blocks the caller: the work runs on tokio tasks (outside a tokio runtime
    /// nothing can run, and the outcome says so).
    pub fn fire(&self, config: &HaConfig, event: AlertEvent) {
        let name = event.name();
        let args: Vec<String> = event.args().iter().map(|arg| sanitize_arg(arg)).collect();
        let at_ms = now_ms();
        let runtime = tokio::runtime::Handle::try_current().ok();
        let no_runtime = || "no tokio runtime to run it on (a bug in the caller)".to_string();
        tracing::info!(event = name, args = ?args, "HA alert");

        let mut state = self.shared.lock();
        state.next_seq += 1;
        let seq = state.next_seq;

        let hook = match (&config.hook_script, &runtime) {
            (None, _) => HookResult::NotConfigured,
            (Some(_), None) => HookResult::Failed { error: no_runtime() },
            (Some(script), Some(_)) => {
                state.hooks.push_back(HookJob {
                    seq,
                    script: script.clone(),
                    timeout_s: config.hook_timeout_s.clamp(HOOK_TIMEOUT_S_MIN, HOOK_TIMEOUT_S_MAX),
                    event: name,
                    args: args.clone(),
                });
                HookResult::Queued
            }
        };
        let mail = match (&config.alert_email, &config.smtp.host, &runtime) {
            (Some(_), Some(_), None) => MailResult::Failed { error: no_runtime() },
            (Some(to), Some(_), Some(_)) => {
                state.mails.push_back(MailJob {
                    seq,
                    to: to.clone(),
                    smtp: config.smtp.clone(),
                    event: name,
                    args: args.clone(),
                    at_ms,
                });
                MailResult::Queued
            }
            _ => MailResult::NotConfigured,
        };
        state.recent.push_back(AlertOutcome { seq, event: name.to_string(), args, at_ms, hook, mail });
        while state.recent.len() > RECENT_MAX {
            state.recent.pop_front();
        }

        while state.hooks.len() > HOOK_QUEUE_MAX {
            if let Some(dropped) = state.hooks.pop_front() {
                tracing::warn!(
                    event = dropped.event,
                    seq = dropped.seq,
                    "HA hook queue full ({HOOK_QUEUE_MAX} waiting): dropped the oldest hook run; is the script hanging?"
                );
                let reason = format!("hook queue full ({HOOK_QUEUE_MAX} waiting behind a running hook)");
                state.set_hook(dropped.seq, HookResult::Dropped { reason });
            }
        }
        while state.mails.len() > MAIL_QUEUE_MAX {
            if let Some(dropped) = state.mails.pop_front() {
                tracing::warn!(
                    event = dropped.event,
                    seq = dropped.seq,
                    "HA alert mail queue full ({MAIL_QUEUE_MAX} waiting): dropped the oldest mail; is the relay down?"
                );
                let reason = format!("mail queue full ({MAIL_QUEUE_MAX} waiting behind a send)");
                state.set_mail(dropped.seq, MailResult::Dropped { reason });
            }
        }

        if let Some(runtime) = runtime {
            if !state.hooks.is_empty() && !state.hook_worker {
                state.hook_worker = true;
                runtime.spawn(hook_worker(self.shared.clone()));
            }
            if !state.mails.is_empty() && !state.mail_worker {
                state.mail_worker = true;
                runtime.spawn(mail_worker(self.shared.clone()));
            }
        }
    }

    /// The counters of finished hook runs and mail sends (`crate::metrics`).
    pub fn runs(&self) -> crate::metrics::AlertRuns {
        self.shared.lock().runs.clone()
    }

    /// The last [`RECENT_MAX`] outcomes, newest last.
    pub fn recent(&self) -> Vec<AlertOutcome> {
        self.shared.lock().recent.iter().cloned().collect()
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent at every step, so a panic elsewhere leaves it usable.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Runs queued hooks one at a time, in order; ends when the queue is empty.
async fn hook_worker(shared: Arc<Shared>) {
    loop {
        let job = {
            let mut state = shared.lock();
            match state.hooks.pop_front() {
                Some(job) => {
                    state.set_hook(job.seq, HookResult::Running);
                    job
                }
                None => {
                    state.hook_worker = false;
                    return;
                }
            }
        };
        let result = run_hook(shared.node_id, &job).await;
        shared.lock().set_hook(job.seq, result);
    }
}

/// Sends queued mails one at a time, in order; ends when the queue is empty.
async fn mail_worker(shared: Arc<Shared>) {
    loop {
        let job = {
            let mut state = shared.lock();
            match state.mails.pop_front() {
                Some(job) => {
                    state.set_mail(job.seq, MailResult::Sending);
                    job
                }
                None => {
                    state.mail_worker = false;
                    return;
                }
            }
        };
        let result = send_mail(shared.node_id, &shared.secrets_dir, &job).await;
        shared.lock().set_mail(job.seq, result);
    }
}

/// Opens the hook script `script` names for running, checked the way
/// `haven_core::hook_file` says: from `/` down, each component is opened (`O_PATH`,
/// `O_NOFOLLOW`) relative to the directory opened and checked just before it, and
/// `fstat`ed: every directory and the hook itself must belong to root or this node's user,
/// be writable by no one else and not be a symbolic link; the hook must be an executable
/// regular file. Because each step goes through the file descriptor of the step before, no
/// rename or symlink swap between two checks can slip another file in, and the returned
/// descriptor is the very file that was checked ([`run_hook`] executes it).
///
/// `Ok(None)`: the hook (or a directory on its way) does not exist; every directory that
/// does exist on the way passed. A draft may name a hook not yet installed on this node
/// (it must be installed on every node); a run refuses it.
pub fn open_hook_script(script: &str) -> Result<Option<std::fs::File>, String> {
    use std::os::fd::FromRawFd as _;
    use std::os::unix::ffi::OsStrExt as _;
    use std::os::unix::fs::MetadataExt as _;
    use std::path::Component;

    check_absolute_path(script).map_err(|why| format!("hook_script {script:?} {why}"))?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let service_user = unsafe { libc::geteuid() };
    // `at`: the directory `name` is looked up in (None: `name` is absolute).
    let open_at = |at: Option<&std::fs::File>, name: &std::ffi::OsStr| -> std::io::Result<std::fs::File> {
        let name = std::ffi::CString::new(name.as_bytes()).map_err(std::io::Error::other)?;
        let dir = at.map_or(libc::AT_FDCWD, |dir| dir.as_raw_fd());
        // SAFETY: `name` is a NUL-terminated string that outlives the call; `dir` is an open
        // descriptor (borrowed from `at`) or AT_FDCWD. O_PATH opens nothing for reading or
        // writing and has no side effect on a device or FIFO.
        let fd = unsafe { libc::openat(dir, name.as_ptr(), libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` was just opened and is owned by nothing else.
        Ok(unsafe { std::fs::File::from_raw_fd(fd) })
    };
    let entry_meta = |file: &std::fs::File, shown: &Path| -> Result<EntryMeta, String> {
        let metadata = file
            .metadata()
            .map_err(|error| format!("hook_script {script}: {} cannot be checked: {error}", shown.display()))?;
        let file_type = metadata.file_type();
        let kind = if file_type.is_symlink() {
            EntryKind::Symlink
        } else if file_type.is_dir() {
            EntryKind::Directory
        } else if file_type.is_file() {
            EntryKind::Regular
        } else {
            EntryKind::Other
        };
        Ok(EntryMeta { kind, owner: metadata.uid(), mode: metadata.mode() & 0o7777 })
    };

    let names: Vec<&std::ffi::OsStr> = Path::new(script)
        .components()
        .filter_map(|component| match component {
            Component::Normal(name) => Some(name),
            _ => None,
        })
        .collect();
    let mut shown = PathBuf::from("/");
    let mut current = open_at(None, shown.as_os_str())
        .map_err(|error| format!("hook_script {script}: / cannot be opened: {error}"))?;
    hook_file::check_directory(entry_meta(&current, &shown)?, service_user)
        .map_err(|why| format!("hook_script {script}: directory / {why}"))?;
    for (index, name) in names.iter().enumerate() {
        shown.push(name);
        let next = match open_at(Some(&current), name) {
            Ok(next) => next,
            Err(error) if error.kind() == ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(format!("hook_script {script}: {} cannot be opened: {error}", shown.display())),
        };
        let meta = entry_meta(&next, &shown)?;
        if index + 1 == names.len() {
            hook_file::check_hook(meta, service_user).map_err(|why| format!("hook_script {script} {why}"))?;
        } else {
            hook_file::check_directory(meta, service_user)
                .map_err(|why| format!("hook_script {script}: directory {} {why}", shown.display()))?;
        }
        current = next;
    }
    Ok(Some(current))
}

/// Checks, when a draft names `script` (or a draft naming it is applied), that this node
/// would run it: everything [`open_hook_script`] checks. A hook not installed yet is
/// accepted (it must be installed on every node, and each node checks again when it runs
/// it).
pub fn check_hook_script(script: &str) -> Result<(), String> {
    open_hook_script(script).map(drop)
}

async fn run_hook(node_id: u64, job: &HookJob) -> HookResult {
    let failed = |error: String| {
        tracing::error!(event = job.event, script = %job.script, "HA hook not run: {error}");
        HookResult::Failed { error }
    };
    let checked = match open_hook_script(&job.script) {
        Ok(Some(checked)) => checked,
        Ok(None) => {
            return failed(format!("hook script {} does not exist (install it on every node)", job.script));
        }
        Err(error) => return failed(error),
    };
    // What runs is the file checked, through its descriptor: `/proc/self/fd/N` names that
    // very inode in the child, whatever the path names by now (a rename, a symlink swapped
    // in), and only its owner (root or this node's user) can change its content or mode.
    // The descriptor stays open across exec (its close-on-exec flag is cleared in the
    // child only) because a `#!` script's interpreter opens the script by that name. The
    // program sees its configured path as argv[0]; a `#!` script sees `/proc/self/fd/N`
    // as its `$0`.
    let checked_fd = checked.as_raw_fd();
    let mut command = tokio::process::Command::new(format!("/proc/self/fd/{checked_fd}"));
    // SAFETY: runs in the forked child before exec; fcntl is async-signal-safe and changes
    // only the child's own descriptor table.
    unsafe {
        command.pre_exec(move || match libc::fcntl(checked_fd, libc::F_SETFD, 0) {
            -1 => Err(std::io::Error::last_os_error()),
            _ => Ok(()),
        });
    }
    // argv[1..] are exactly the seed's parameters, the event name first; no shell.
    command
        .arg0(&job.script)
        .args(&job.args)
        .env("HAVEN_EVENT", job.event)
        .env("HAVEN_NODE_ID", node_id.to_string())
        .current_dir("/")
        .stdin(Stdio::null());
    let ran = match run_bounded(command, Duration::from_secs(job.timeout_s)).await {
        Ok(ran) => ran,
        Err(error) => return failed(spawn_error("hook script", &job.script, &error)),
    };
    let duration_ms = ran.duration_ms();
    let Output { stdout, stderr } = ran.output;
    match ran.ended {
        Ok(Ended::TimedOut) => {
            tracing::error!(
                event = job.event,
                script = %job.script,
                stdout = %stdout,
                stderr = %stderr,
                "HA hook killed after its timeout of {} s",
                job.timeout_s
            );
            HookResult::TimedOut { timeout_s: job.timeout_s, stdout, stderr }
        }
        Err(error) => failed(format!("waiting for hook script {}: {error}", job.script)),
        Ok(Ended::Exited(code)) => {
            if code == 0 {
                tracing::info!(event = job.event, duration_ms, stdout = %stdout, stderr = %stderr, "HA hook ran");
            } else {
                tracing::warn!(
                    event = job.event,
                    duration_ms,
                    stdout = %stdout,
                    stderr = %stderr,
                    "HA hook exited with code {code}"
                );
            }
            HookResult::Exited { code, duration_ms, stdout, stderr }
        }
        Ok(Ended::Signalled(signal)) => {
            tracing::warn!(
                event = job.event,
                duration_ms,
                stdout = %stdout,
                stderr = %stderr,
                "HA hook ended by signal {signal}"
            );
            HookResult::Signalled { signal, duration_ms, stdout, stderr }
        }
    }
}

async fn send_mail(node_id: u64, secrets_dir: &Path, job: &MailJob) -> MailResult {
    let started = Instant::now();
    match tokio::time::timeout(MAIL_SEND_TIMEOUT, try_send_mail(node_id, secrets_dir, job)).await {
        Ok(Ok(response)) => {
            let duration_ms = started.elapsed().as_millis().try_into().unwrap_or(u64::MAX);
            tracing::info!(event = job.event, to = %job.to, duration_ms, "HA alert mail sent: {response}");
            MailResult::Sent { duration_ms, response }
        }
        Ok(Err(error)) => {
            tracing::error!(event = job.event, to = %job.to, "HA alert mail not sent: {error}");
            MailResult::Failed { error }
        }
        Err(_elapsed) => {
            let error = format!("the SMTP exchange took longer than {} s", MAIL_SEND_TIMEOUT.as_secs());
            tracing::error!(event = job.event, to = %job.to, "HA alert mail not sent: {error}");
            MailResult::Failed { error }
        }
    }
}

/// The subject of an alert mail.
pub fn mail_subject(event: &str, node_id: u64) -> String {
    format!("[haven] {event} on node {node_id}")
}

/// The plain-text body of an alert mail: the event, the node, the time and the
/// parameters (quoted as Rust strings, so newlines and odd characters are visible).
pub fn mail_body(node_id: u64, args: &[String], at_ms: u64) -> String {
    let event = args.first().map(String::as_str).unwrap_or("");
    let mut body = format!(
        "Haven HA event {event} on node {node_id}\n\
         Time: {} ({at_ms} ms since the Unix epoch)\n\
         \n\
         Parameters (as passed to the HA hook script):\n",
        format_utc_ms(at_ms)
    );
    for (index, arg) in args.iter().enumerate() {
        body.push_str(&format!("  ${}: {arg:?}\n", index + 1));
    }
    body
}

async fn try_send_mail(node_id: u64, secrets_dir: &Path, job: &MailJob) -> Result<String, String> {
    let smtp = &job.smtp;
    // Checked here too, not only when the configuration is applied: a password never
    // leaves the node in the clear, whatever configuration got through.
    if smtp.username.is_some() && !smtp.starttls {
        return Err("smtp.username is set but smtp.starttls is false: a password is never sent over an \
                    unencrypted connection, so nothing was sent"
            .into());
    }
    let host = smtp.host.as_deref().ok_or("smtp.host is unset")?;
    let from = smtp.from.as_deref().ok_or("smtp.from is unset: alerts need a sender address")?;
    let from: Mailbox = from.parse().map_err(|error| format!("smtp.from {from:?}: {error}"))?;
    let to: Mailbox = job.to.parse().map_err(|error| format!("alert_email {:?}: {error}", job.to))?;
    let port = u16::try_from(smtp.port)
        .ok()
        .filter(|port| *port > 0)
        .ok_or_else(|| format!("smtp.port {} is not a TCP port", smtp.port))?;
    let host_name = host_name();
    // Unique per node and event (seq restarts with the process, the time does not).
    let message_id =
        format!("<haven.n{node_id}.{}.{}@{}>", job.at_ms, job.seq, host_name.as_deref().unwrap_or("localhost"));
    let message = Message::builder()
        .message_id(Some(message_id))
        .from(from)
        .to(to)
        .subject(mail_subject(job.event, node_id))
        .header(ContentType::TEXT_PLAIN)
        .body(mail_body(node_id, &job.args, job.at_ms))
        .map_err(|error| format!("building the message: {error}"))?;

    let tls = if smtp.starttls {
        let parameters =
            TlsParameters::new(host.to_string()).map_err(|error| format!("TLS set-up for {host}: {error}"))?;
        if port == SMTPS_PORT {
            Tls::Wrapper(parameters)
        } else {
            Tls::Required(parameters)
        }
    } else {
        Tls::None
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
        .port(port)
        .tls(tls)
        .timeout(Some(SMTP_COMMAND_TIMEOUT));
    if let Some(name) = host_name {
        builder = builder.hello_name(ClientId::Domain(name));
    }
    if let Some(username) = &smtp.username {
        let path = smtp.password_file.as_deref().ok_or("smtp.username is set but smtp.password_file is not")?;
        let (path, secrets_dir) = (path.to_string(), secrets_dir.to_path_buf());
        let password = tokio::task::spawn_blocking(move || read_password_file(&path, &secrets_dir))
            .await
            .map_err(|error| format!("reading smtp.password_file: {error}"))??;
        builder = builder.credentials(Credentials::new(username.clone(), password));
    }
    let transport = builder.build();
    let response = transport.send(message).await.map_err(|error| format!("SMTP {host}:{port}: {error}"))?;
    let text = response.message().collect::<Vec<_>>().join(" ");
    Ok(format!("{} {text}", response.code()))
}

/// Reads the SMTP password (at send time, so a rotated password needs no restart; and when
/// a draft names the file, to refuse it at once). The file must lie inside `secrets_dir`
/// once every symlink is resolved, be opened without following a symlink, be a private
/// regular file of this node's user, and hold neither a PEM block nor a Haven token (see
/// `haven_core::secret_file`). One trailing newline is dropped (editors add it). The
/// content is never logged.
pub fn read_password_file(path: &str, secrets_dir: &Path) -> Result<String, String> {
    use std::io::Read as _;
    use std::os::unix::fs::MetadataExt as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let refused = |why: String| format!("smtp.password_file {path} {why}");
    check_absolute_path(path).map_err(|why| format!("smtp.password_file {path:?} {why}"))?;
    let resolved = std::fs::canonicalize(path).map_err(|error| refused(format!("cannot be read: {error}")))?;
    let secrets = std::fs::canonicalize(secrets_dir).map_err(|error| {
        refused(format!("cannot be checked: the secrets directory {}: {error}", secrets_dir.display()))
    })?;
    secret_file::check_inside(&resolved, &secrets).map_err(refused)?;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&resolved)
        .map_err(|error| refused(format!("cannot be opened: {error}")))?;
    let metadata = file.metadata().map_err(|error| refused(error.to_string()))?;
    let meta = SecretFileMeta {
        is_regular: metadata.is_file(),
        owner: metadata.uid(),
        mode: metadata.mode() & 0o7777,
        len: metadata.len(),
    };
    // SAFETY: geteuid has no preconditions and cannot fail.
    secret_file::check_meta(meta, unsafe { libc::geteuid() }).map_err(refused)?;
    let mut bytes = Vec::new();
    file.by_ref()
        .take(PASSWORD_FILE_BYTES_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(|error| refused(format!("cannot be read: {error}")))?;
    if bytes.len() as u64 > PASSWORD_FILE_BYTES_MAX {
        return Err(refused(format!("is larger than {PASSWORD_FILE_BYTES_MAX} bytes: not a password")));
    }
    secret_file::check_content(&bytes).map_err(refused)?;
    let mut password = String::from_utf8(bytes).map_err(|_| refused("is not UTF-8 text".into()))?;
    if password.ends_with('\n') {
        password.pop();
        if password.ends_with('\r') {
            password.pop();
        }
    }
    if password.is_empty() {
        return Err(refused("is empty".into()));
    }
    Ok(password)
}

/// This machine's host name for EHLO and the Message-ID, when it is a valid one (else
/// lettre's default EHLO, the address literal `[127.0.0.1]`, and `localhost`).
fn host_name() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    check_host_name(name).ok()?;
    Some(name.to_string())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis().try_into().unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// `2026-11-22T04:25:57.123Z` from ms since the Unix epoch (proleptic Gregorian, UTC).
pub fn format_utc_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z", rem / 3600, rem % 3600 / 60, rem % 60, ms % 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_times_format() {
        assert_eq!(format_utc_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_utc_ms(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(format_utc_ms(1_795_321_557_000), "2026-11-22T04:25:57.000Z");
        // No panic at the far end.
        let _ = format_utc_ms(u64::MAX);
    }
}
