//! HA alerts with real parts: real shell scripts as hooks, a real SMTP server
//! (Debian's `python3-aiosmtpd`) for the alert e-mail.
//!
//! The SMTP test needs `python3-aiosmtpd` (`apt-get install -y python3-aiosmtpd`); without
//! it the test fails and says so, unless `HAVEN_SKIP_SMTP_TEST=1`.

use std::net::TcpListener;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::path::PathBuf;
use std::process::Child;
use std::process::Command;
use std::process::Stdio;
use std::time::Duration;
use std::time::Instant;

use haven_core::ha::config::HaConfig;
use haven_server::alerts::AlertEvent;
use haven_server::alerts::AlertOutcome;
use haven_server::alerts::Alerter;
use haven_server::alerts::HookResult;
use haven_server::alerts::MailResult;
use haven_server::alerts::HOOK_QUEUE_MAX;

/// How long a hook or a mail to a local server may take to settle: generous for a loaded
/// CI machine (they take milliseconds).
const SETTLE_BOUND: Duration = Duration::from_secs(10);

const NODE_ID: u64 = 7;

/// Writes an executable script.
fn script(dir: &Path, name: &str, body: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.to_str().unwrap().to_string()
}

/// A directory for hook scripts that passes the hook rules (every directory from `/` down
/// belongs to root or this user and no one else can write it): under the target dir, not
/// under the world-writable `/tmp`.
fn hook_dir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("a temp dir under the target dir")
}

fn hook_config(script: &str, timeout_s: u64) -> HaConfig {
    HaConfig { hook_script: Some(script.to_string()), hook_timeout_s: timeout_s, ..HaConfig::default() }
}

/// Waits until at least `count` outcomes are recorded and all of them are final.
async fn settled(alerter: &Alerter, count: usize) -> Vec<AlertOutcome> {
    let start = Instant::now();
    loop {
        let recent = alerter.recent();
        if recent.len() >= count && recent.iter().all(AlertOutcome::is_final) {
            return recent;
        }
        assert!(start.elapsed() < SETTLE_BOUND, "alerts not settled within {SETTLE_BOUND:?}: {recent:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The script's record of one call, as the logging script below writes it.
fn record(args: &[String], node: u64) -> String {
    let mut text = format!("argc={}\n", args.len());
    for arg in args {
        text.push_str(arg);
        text.push('\n');
    }
    text.push_str(&format!("HAVEN_EVENT={} HAVEN_NODE_ID={node}\n--\n", args[0]));
    text
}

/// A script that appends its argument count, its arguments (one per line) and the
/// environment Haven sets to `calls`.
fn logging_script(dir: &Path) -> (String, PathBuf) {
    let calls = dir.join("calls");
    let body = format!(
        "#!/bin/sh\n\
         {{\n\
         printf 'argc=%s\\n' \"$#\"\n\
         for arg in \"$@\"; do printf '%s\\n' \"$arg\"; done\n\
         printf 'HAVEN_EVENT=%s HAVEN_NODE_ID=%s\\n--\\n' \"$HAVEN_EVENT\" \"$HAVEN_NODE_ID\"\n\
         }} >> '{}'\n\
         echo \"handled $1\"\n\
         echo \"to stderr\" >&2\n",
        calls.display()
    );
    (script(dir, "hook.sh", &body), calls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hook_gets_exactly_the_seed_parameters_in_order() {
    let dir = hook_dir();
    let (hook, calls) = logging_script(dir.path());
    let pwned = dir.path().join("pwned");
    let alerter = Alerter::new(NODE_ID);
    let config = hook_config(&hook, 5);

    let tricky_condition =
        format!("it's \"quoted\" $(touch {}) `touch {}` $HOME * ;|&", pwned.display(), pwned.display());
    let events = vec![
        AlertEvent::Failover { active: "n2.example".into(), standby: "n1.example".into() },
        AlertEvent::StandbyOffline { standby: "node 3".into(), active: "node 2".into() },
        AlertEvent::StandbyOnline { standby: "node 3".into(), active: "node 2".into() },
        AlertEvent::ManualSwitch { active: "n1.example".into(), standby: "n2.example".into() },
        AlertEvent::RaiseAlarm { condition: tricky_condition.clone(), error: "line one\nline  two\n".into() },
        AlertEvent::ClearAlarm { text: "replication recovered: 'a b' \"c\" $(id)".into() },
    ];
    // The seed's table, written out by hand.
    let expected_args: Vec<Vec<String>> = vec![
        vec!["Failover".into(), "n2.example".into(), "n1.example".into()],
        vec!["StandbyOffline".into(), "node 3".into(), "node 2".into()],
        vec!["StandbyOnline".into(), "node 3".into(), "node 2".into()],
        vec!["ManualSwitch".into(), "n1.example".into(), "n2.example".into()],
        vec!["RaiseAlarm".into(), tricky_condition, "line one\nline  two\n".into()],
        vec!["ClearAlarm".into(), "replication recovered: 'a b' \"c\" $(id)".into()],
    ];
    for (event, expected) in events.iter().zip(&expected_args) {
        assert_eq!(&event.args(), expected);
        assert_eq!(event.name(), expected[0]);
    }

    // All fired at once: they must still run one at a time, in order.
    let started = Instant::now();
    for event in events {
        alerter.fire(&config, event);
    }
    let outcomes = settled(&alerter, expected_args.len()).await;
    eprintln!("six hooks settled in {:?}", started.elapsed());

    let want: String = expected_args.iter().map(|args| record(args, NODE_ID)).collect();
    let got = std::fs::read_to_string(&calls).unwrap();
    assert_eq!(got, want, "the script's record");
    assert!(!pwned.exists(), "an argument was interpreted by a shell");

    for (outcome, args) in outcomes.iter().zip(&expected_args) {
        assert_eq!(&outcome.event, &args[0]);
        assert_eq!(&outcome.args, args);
        assert_eq!(outcome.mail, MailResult::NotConfigured);
        match &outcome.hook {
            HookResult::Exited { code: 0, stdout, stderr, .. } => {
                assert_eq!(stdout, &format!("handled {}\n", args[0]));
                assert_eq!(stderr, "to stderr\n");
            }
            other => panic!("{}: {other:?}", args[0]),
        }
    }
    let seqs: Vec<u64> = outcomes.iter().map(|outcome| outcome.seq).collect();
    assert_eq!(seqs, (1..=6).collect::<Vec<_>>());
}

/// Whether a process is gone (or a zombie nobody reaped yet).
fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_past_its_timeout_is_killed_with_what_it_started_and_the_next_one_runs() {
    let dir = hook_dir();
    let pid_file = dir.path().join("sleep.pid");
    let calls = dir.path().join("calls");
    let body = format!(
        "#!/bin/sh\n\
         if [ \"$1\" = Failover ]; then\n\
           echo started\n\
           sleep 30 &\n\
           echo $! > '{}'\n\
           wait\n\
           echo never\n\
         fi\n\
         echo \"$1\" >> '{}'\n",
        pid_file.display(),
        calls.display()
    );
    let hook = script(dir.path(), "slow.sh", &body);
    let alerter = Alerter::new(NODE_ID);
    let config = hook_config(&hook, 1);

    let started = Instant::now();
    alerter.fire(&config, AlertEvent::Failover { active: "a".into(), standby: "b".into() });
    alerter.fire(&config, AlertEvent::ClearAlarm { text: "after the slow one".into() });
    let outcomes = settled(&alerter, 2).await;
    let elapsed = started.elapsed();
    eprintln!("timed-out hook and the next one settled in {elapsed:?}");

    match &outcomes[0].hook {
        HookResult::TimedOut { timeout_s: 1, stdout, .. } => assert_eq!(stdout, "started\n"),
        other => panic!("expected a timeout: {other:?}"),
    }
    assert!(elapsed >= Duration::from_secs(1), "killed before its timeout: {elapsed:?}");
    assert!(elapsed < Duration::from_secs(8), "not killed promptly: {elapsed:?}");
    assert!(matches!(outcomes[1].hook, HookResult::Exited { code: 0, .. }), "{:?}", outcomes[1].hook);
    assert_eq!(std::fs::read_to_string(&calls).unwrap(), "ClearAlarm\n", "the killed script went on");

    let sleep_pid: u32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    let start = Instant::now();
    while !process_gone(sleep_pid) {
        assert!(start.elapsed() < Duration::from_secs(3), "the script's child {sleep_pid} survived the timeout");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_scripts_are_error_outcomes() {
    let dir = hook_dir();
    let missing = dir.path().join("missing.sh");
    let not_executable = dir.path().join("plain.sh");
    std::fs::write(&not_executable, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&not_executable, std::fs::Permissions::from_mode(0o644)).unwrap();
    let no_interpreter = script(dir.path(), "nointerp.sh", "#!/nonexistent/interpreter\nexit 0\n");
    let failing = script(dir.path(), "fails.sh", "#!/bin/sh\necho bad >&2\nexit 3\n");

    let alerter = Alerter::new(NODE_ID);
    let event = || AlertEvent::ClearAlarm { text: "x".into() };
    let cases: Vec<(String, &str)> = vec![
        (missing.to_str().unwrap().into(), "does not exist"),
        (not_executable.to_str().unwrap().into(), "not executable"),
        ("hook.sh".into(), "absolute path"),
        (dir.path().to_str().unwrap().into(), "not a regular file"),
        (no_interpreter, "interpreter"),
    ];
    for (path, _) in &cases {
        alerter.fire(&hook_config(path, 5), event());
    }
    alerter.fire(&hook_config(&failing, 5), event());
    alerter.fire(&HaConfig::default(), event());
    let outcomes = settled(&alerter, cases.len() + 2).await;

    for (outcome, (path, why)) in outcomes.iter().zip(&cases) {
        match &outcome.hook {
            HookResult::Failed { error } => assert!(error.contains(why), "{path}: {error:?} should say {why:?}"),
            other => panic!("{path}: {other:?}"),
        }
    }
    match &outcomes[cases.len()].hook {
        HookResult::Exited { code: 3, stderr, .. } => assert_eq!(stderr, "bad\n"),
        other => panic!("failing script: {other:?}"),
    }
    assert_eq!(outcomes[cases.len() + 1].hook, HookResult::NotConfigured);
    assert_eq!(outcomes[cases.len() + 1].mail, MailResult::NotConfigured);
}

#[test]
fn firing_outside_a_runtime_is_an_error_outcome_not_a_panic() {
    let alerter = Alerter::new(NODE_ID);
    let config = HaConfig {
        hook_script: Some("/bin/true".into()),
        alert_email: Some("ops@example.com".into()),
        smtp: haven_core::ha::config::SmtpConfig {
            host: Some("127.0.0.1".into()),
            from: Some("haven@example.com".into()),
            ..Default::default()
        },
        ..HaConfig::default()
    };
    alerter.fire(&config, AlertEvent::ClearAlarm { text: "x".into() });
    let outcome = &alerter.recent()[0];
    assert!(matches!(&outcome.hook, HookResult::Failed { error } if error.contains("runtime")), "{outcome:?}");
    assert!(matches!(&outcome.mail, MailResult::Failed { error } if error.contains("runtime")), "{outcome:?}");
}

/// A script that creates `NAME.ran` next to it when it runs (and nothing else).
fn marking_script(dir: &Path, name: &str) -> (String, PathBuf) {
    let marker = dir.join(format!("{name}.ran"));
    (script(dir, name, &format!("#!/bin/sh\ntouch '{}'\n", marker.display())), marker)
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Fires one event with `script` as the hook and waits for its outcome.
async fn fire_once(alerter: &Alerter, script: &str) -> HookResult {
    let before = alerter.recent().len();
    alerter.fire(&hook_config(script, 5), AlertEvent::ClearAlarm { text: "x".into() });
    settled(alerter, before + 1).await.pop().expect("an outcome").hook
}

/// Hooks that someone other than root or the node's user could change (a symlink on the
/// way, a directory or file group or others can write, a file of another user, `/bin/sh`
/// reached through symlinks) are refused when they would run, with the reason, and never
/// run; a hook that was fine and is swapped afterwards (made writable by others, replaced
/// by a symlink) is refused at its next run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_hooks_never_run_and_a_hook_swapped_after_its_check_is_refused() {
    let dir = hook_dir();
    let root = dir.path();
    let alerter = Alerter::new(NODE_ID);
    let mut cases: Vec<(String, PathBuf, &str)> = Vec::new();

    let (target, target_marker) = marking_script(root, "target.sh");
    let link = root.join("link.sh");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    cases.push((link.to_str().unwrap().into(), target_marker.clone(), "symbolic link"));
    std::fs::create_dir(root.join("real")).unwrap();
    let (_, in_linked_dir_marker) = marking_script(&root.join("real"), "hook.sh");
    std::os::unix::fs::symlink(root.join("real"), root.join("linked")).unwrap();
    let through_linked_dir = root.join("linked/hook.sh");
    cases.push((through_linked_dir.to_str().unwrap().into(), in_linked_dir_marker, "symbolic link"));
    for (name, mode) in [("open", 0o777), ("group", 0o775), ("sticky", 0o1777)] {
        let sub = root.join(name);
        std::fs::create_dir(&sub).unwrap();
        let (hook, marker) = marking_script(&sub, "hook.sh");
        chmod(&sub, mode);
        cases.push((hook, marker, "writable by group or others"));
    }
    for (name, mode) in [("other_writable.sh", 0o757), ("group_writable.sh", 0o775)] {
        let (hook, marker) = marking_script(root, name);
        chmod(Path::new(&hook), mode);
        cases.push((hook, marker, "writable by group or others"));
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        // A file of another user (`nobody`): a copy of a shell, and a script.
        let shell = root.join("sh");
        std::fs::copy("/usr/bin/dash", &shell).or_else(|_| std::fs::copy("/bin/bash", &shell)).unwrap();
        std::os::unix::fs::chown(&shell, Some(65534), Some(65534)).unwrap();
        let (hook, marker) = marking_script(root, "nobodys.sh");
        std::os::unix::fs::chown(&hook, Some(65534), Some(65534)).unwrap();
        cases.push((hook, marker, "belongs to user id 65534"));
        cases.push((shell.to_str().unwrap().into(), root.join("ClearAlarm"), "belongs to user id 65534"));
    } else {
        eprintln!("SKIPPED the files of another user: the test does not run as root");
    }
    if std::fs::symlink_metadata("/bin").is_ok_and(|m| m.file_type().is_symlink())
        || std::fs::symlink_metadata("/bin/sh").is_ok_and(|m| m.file_type().is_symlink())
    {
        // `/bin/sh ClearAlarm x` would look for a script `ClearAlarm` in `/` (the hook's
        // working directory); the marker is that file, so nothing can create it here.
        cases.push(("/bin/sh".into(), PathBuf::from("/ClearAlarm.never"), "symbolic link"));
    } else {
        eprintln!("SKIPPED /bin/sh: neither /bin nor /bin/sh is a symlink here");
    }

    for (hook, marker, why) in &cases {
        match fire_once(&alerter, hook).await {
            HookResult::Failed { error } => {
                assert!(error.contains(why) && error.contains("hook_script"), "{hook}: {error:?} should say {why:?}")
            }
            other => panic!("{hook} was not refused: {other:?}"),
        }
        assert!(!marker.exists(), "{hook} ran");
    }
    assert!(!target_marker.exists());

    // A good hook runs; swapped afterwards, it is refused at its next run.
    let (good, good_marker) = marking_script(root, "good.sh");
    assert!(matches!(fire_once(&alerter, &good).await, HookResult::Exited { code: 0, .. }));
    assert!(good_marker.exists(), "the good hook did not run");
    std::fs::remove_file(&good_marker).unwrap();
    chmod(Path::new(&good), 0o777);
    match fire_once(&alerter, &good).await {
        HookResult::Failed { error } => assert!(error.contains("writable by group or others"), "{error}"),
        other => panic!("a hook made writable by others ran: {other:?}"),
    }
    assert!(!good_marker.exists(), "a hook made writable by others ran");
    chmod(Path::new(&good), 0o755);
    assert!(matches!(fire_once(&alerter, &good).await, HookResult::Exited { code: 0, .. }));
    std::fs::remove_file(&good_marker).unwrap();
    std::fs::remove_file(&good).unwrap();
    std::os::unix::fs::symlink(&target, &good).unwrap();
    match fire_once(&alerter, &good).await {
        HookResult::Failed { error } => assert!(error.contains("symbolic link"), "{error}"),
        other => panic!("a hook replaced by a symlink ran: {other:?}"),
    }
    assert!(!good_marker.exists() && !target_marker.exists(), "a hook replaced by a symlink ran");
}

/// A current-thread runtime: `fire` returns before the hook worker first runs, so all
/// events are queued at once and the oldest ones are dropped deterministically.
#[tokio::test(flavor = "current_thread")]
async fn a_full_hook_queue_drops_the_oldest() {
    let dir = hook_dir();
    let (hook, calls) = logging_script(dir.path());
    let alerter = Alerter::new(NODE_ID);
    let config = hook_config(&hook, 5);
    let extra = 3;
    let total = HOOK_QUEUE_MAX + extra;
    for i in 0..total {
        alerter.fire(&config, AlertEvent::ClearAlarm { text: format!("event {i}") });
    }
    let outcomes = settled(&alerter, total).await;
    for outcome in &outcomes[..extra] {
        assert!(matches!(outcome.hook, HookResult::Dropped { .. }), "{outcome:?}");
    }
    for outcome in &outcomes[extra..] {
        assert!(matches!(outcome.hook, HookResult::Exited { code: 0, .. }), "{outcome:?}");
    }
    let want: String =
        (extra..total).map(|i| record(&["ClearAlarm".to_string(), format!("event {i}")], NODE_ID)).collect();
    assert_eq!(std::fs::read_to_string(&calls).unwrap(), want);
}

/// A test's helper process, killed with the test.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until a server just started on `port` accepts connections (and `ready` holds).
fn wait_listening(port: u16, what: &str, ready: impl Fn() -> bool) {
    let start = Instant::now();
    while !ready() || TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < SETTLE_BOUND, "{what} did not listen on port {port} within {SETTLE_BOUND:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A real SMTP server: `python3 -m aiosmtpd` writing what it receives to a maildir.
struct SmtpServer {
    _child: KillOnDrop,
    port: u16,
    maildir: PathBuf,
}

/// A Python interpreter that has aiosmtpd (Debian's package installs it for
/// /usr/bin/python3, which may not be the `python3` first on PATH).
fn python_with_aiosmtpd() -> Option<&'static str> {
    ["/usr/bin/python3", "python3"].into_iter().find(|python| {
        Command::new(python)
            .args(["-c", "import aiosmtpd"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    })
}

/// Installs Debian's package when this machine can (root with apt-get), as the benchmark
/// installs etcd: `cargo test` on a fresh Debian machine needs nothing beforehand.
fn install_aiosmtpd() {
    let root = unsafe { libc::geteuid() } == 0;
    if !root || Command::new("apt-get").arg("--version").stdout(Stdio::null()).status().is_err() {
        return;
    }
    eprintln!("installing python3-aiosmtpd with apt-get for the SMTP test");
    let quiet = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    };
    if !quiet(&["install", "-y", "-qq", "python3-aiosmtpd"]) {
        quiet(&["update", "-qq"]);
        quiet(&["install", "-y", "-qq", "python3-aiosmtpd"]);
    }
}

fn start_smtp_server(python: &str, dir: &Path) -> SmtpServer {
    let maildir = dir.join("maildir");
    // A free port: bind, read it, release it (aiosmtpd binds it right after).
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(python)
        .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}"), "-c", "aiosmtpd.handlers.Mailbox"])
        .arg(&maildir)
        .stdin(Stdio::null())
        .spawn()
        .expect("start python3 -m aiosmtpd");
    let server = SmtpServer { _child: KillOnDrop(child), port, maildir };
    wait_listening(port, "aiosmtpd", || true);
    server
}

fn messages(maildir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(maildir.join("new")) else { return Vec::new() };
    let mut paths: Vec<PathBuf> = entries.map(|entry| entry.unwrap().path()).collect();
    paths.sort();
    paths.iter().map(|path| std::fs::read_to_string(path).unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_mail_reaches_a_real_smtp_server() {
    let Some(python) = python_or_skip() else { return };
    let dir = tempfile::tempdir().unwrap();
    let server = start_smtp_server(python, dir.path());
    let alerter = Alerter::new(NODE_ID);
    let mut config = HaConfig { alert_email: Some("ops@example.com".into()), ..HaConfig::default() };
    config.smtp.host = Some("127.0.0.1".into());
    config.smtp.port = u64::from(server.port);
    config.smtp.from = Some("haven@example.com".into());
    config.smtp.starttls = false;

    let started = Instant::now();
    alerter.fire(&config, AlertEvent::Failover { active: "n2.example".into(), standby: "n1 \"old\"".into() });
    let outcome = settled(&alerter, 1).await.remove(0);
    eprintln!("mail settled in {:?}: {:?}", started.elapsed(), outcome.mail);
    assert!(matches!(&outcome.mail, MailResult::Sent { response, .. } if response.starts_with("250")), "{outcome:?}");
    assert_eq!(outcome.hook, HookResult::NotConfigured);

    let start = Instant::now();
    let mail = loop {
        if let Some(mail) = messages(&server.maildir).pop() {
            break mail;
        }
        assert!(start.elapsed() < SETTLE_BOUND, "no message in the maildir");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!("{mail}");
    assert!(mail.contains("X-RcptTo: ops@example.com"), "envelope recipient");
    assert!(mail.contains("X-MailFrom: haven@example.com"), "envelope sender");
    assert!(mail.contains("\nTo: ops@example.com"), "To header");
    assert!(mail.contains("\nSubject: [haven] Failover on node 7"), "subject");
    assert!(mail.contains(&format!("Message-ID: <haven.n7.{}.1@", outcome.at_ms)), "message id");
    assert!(mail.contains("Content-Type: text/plain"), "plain text");
    assert!(mail.contains("Haven HA event Failover on node 7"), "body");
    assert!(mail.contains("  $1: \"Failover\"\n  $2: \"n2.example\"\n  $3: \"n1 \\\"old\\\"\"\n"), "arguments");
    assert!(mail.contains(&format!("({} ms since the Unix epoch)", outcome.at_ms)), "time");

    // STARTTLS required but not offered: refused, nothing sent in the clear.
    config.smtp.starttls = true;
    alerter.fire(&config, AlertEvent::ClearAlarm { text: "must not go in the clear".into() });
    let outcomes = settled(&alerter, 2).await;
    assert!(matches!(&outcomes[1].mail, MailResult::Failed { .. }), "{:?}", outcomes[1]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(messages(&server.maildir).len(), 1, "only the first message may arrive");
}

/// An SMTP server that offers AUTH on a plaintext connection (aiosmtpd with
/// `auth_require_tls=False`) and writes every EHLO, AUTH and DATA it gets to a log file: the
/// relay an admin could point `smtp.host` at to collect a password.
struct GreedySmtpServer {
    _child: KillOnDrop,
    port: u16,
    log: PathBuf,
}

const GREEDY_SERVER: &str = r#"
import sys, time
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
log = open(sys.argv[2], "a", buffering=1)
def authenticator(server, session, envelope, mechanism, auth_data):
    log.write("AUTH %s %r\n" % (mechanism, auth_data))
    return AuthResult(success=True)
class Handler:
    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        log.write("EHLO\n")
        return responses
    async def handle_DATA(self, server, session, envelope):
        log.write("DATA\n")
        return "250 OK"
controller = Controller(Handler(), hostname="127.0.0.1", port=int(sys.argv[1]),
                        auth_require_tls=False, authenticator=authenticator)
controller.start()
open(sys.argv[2] + ".ready", "w").close()
while True:
    time.sleep(3600)
"#;

fn start_greedy_smtp_server(python: &str, dir: &Path) -> GreedySmtpServer {
    let log = dir.join("greedy.log");
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(python)
        .args(["-c", GREEDY_SERVER, &port.to_string()])
        .arg(&log)
        .stdin(Stdio::null())
        .spawn()
        .expect("start the aiosmtpd script");
    let server = GreedySmtpServer { _child: KillOnDrop(child), port, log: log.clone() };
    let ready = PathBuf::from(format!("{}.ready", log.display()));
    wait_listening(port, "the aiosmtpd script", || ready.exists());
    server
}

/// The Python that has aiosmtpd (installed first if this machine can); `None`, to skip,
/// only when `HAVEN_SKIP_SMTP_TEST=1` says so: otherwise its absence fails the test.
fn python_or_skip() -> Option<&'static str> {
    if python_with_aiosmtpd().is_none() {
        install_aiosmtpd();
    }
    let python = python_with_aiosmtpd();
    if python.is_none() {
        assert_eq!(
            std::env::var("HAVEN_SKIP_SMTP_TEST").as_deref(),
            Ok("1"),
            "the SMTP tests need a real SMTP server: Debian's python3-aiosmtpd is not installed (install it with \
             `apt-get install -y python3-aiosmtpd`, or set HAVEN_SKIP_SMTP_TEST=1 to skip)"
        );
        eprintln!("skipped: HAVEN_SKIP_SMTP_TEST=1 and aiosmtpd is not installed");
    }
    python
}

/// The password goes only from a private file of the node's user in its secrets dir, never
/// over plaintext, and never from a key or a token file: an admin cannot read a node's files
/// through `smtp.password_file` (issue 12). The relay here offers AUTH in the clear and
/// logs what it gets; every case must leave it with nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_smtp_password_comes_only_from_the_secrets_dir_and_never_goes_in_the_clear() {
    let Some(python) = python_or_skip() else { return };
    let dir = tempfile::tempdir().unwrap();
    let server = start_greedy_smtp_server(python, dir.path());
    let secrets = dir.path().join("secrets");
    std::fs::create_dir(&secrets).unwrap();
    let write = |path: &Path, text: &str, mode: u32| {
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    let password = secrets.join("smtp.pw");
    write(&password, "s3cret-Pa55\n", 0o600);
    let outside = dir.path().join("outside.pw");
    write(&outside, "s3cret-Pa55\n", 0o600);
    let readable = secrets.join("readable.pw");
    write(&readable, "s3cret-Pa55\n", 0o640);
    let key = secrets.join("node.key");
    write(
        &key,
        "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----\n",
        0o600,
    );
    let token = secrets.join("admin.token");
    write(&token, "hvn_abababababababab_0123456789012345678901234567890123456789012\n", 0o600);
    let escape = secrets.join("escape.pw");
    std::os::unix::fs::symlink(&outside, &escape).unwrap();

    let alerter = Alerter::with_secrets_dir(NODE_ID, secrets.clone());
    let mut config = HaConfig { alert_email: Some("ops@example.com".into()), ..HaConfig::default() };
    config.smtp.host = Some("127.0.0.1".into());
    config.smtp.port = u64::from(server.port);
    config.smtp.from = Some("haven@example.com".into());
    config.smtp.username = Some("haven".into());
    // (file, STARTTLS, what the refusal must say)
    let cases: [(&Path, bool, &str); 6] = [
        (&password, false, "never sent over an unencrypted connection"),
        (&outside, true, "outside the secrets directory"),
        (&escape, true, "outside the secrets directory"),
        (&readable, true, "chmod 600"),
        (&key, true, "PEM"),
        (&token, true, "Haven token"),
    ];
    for (file, starttls, _) in &cases {
        config.smtp.starttls = *starttls;
        config.smtp.password_file = Some(file.to_str().unwrap().into());
        alerter.fire(&config, AlertEvent::ClearAlarm { text: "credentials".into() });
    }
    let outcomes = settled(&alerter, cases.len()).await;
    for ((file, _, expected), outcome) in cases.iter().zip(&outcomes) {
        let MailResult::Failed { error } = &outcome.mail else { panic!("{file:?}: {outcome:?}") };
        assert!(error.contains(expected), "{file:?}: expected {expected:?} in {error}");
        assert!(
            !error.contains("s3cret") && !error.contains("MIGHAgEA") && !error.contains("abababab"),
            "leaked: {error}"
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = std::fs::read_to_string(&server.log).unwrap_or_default();
    assert_eq!(log, "", "the relay heard from the node");

    // The same relay, no credentials: the mail goes, so the server above was listening.
    config.smtp.username = None;
    config.smtp.password_file = None;
    config.smtp.starttls = false;
    alerter.fire(&config, AlertEvent::ClearAlarm { text: "no credentials".into() });
    let sent = settled(&alerter, cases.len() + 1).await.pop().unwrap();
    assert!(matches!(&sent.mail, MailResult::Sent { .. }), "{sent:?}");
    let log = std::fs::read_to_string(&server.log).unwrap_or_default();
    assert_eq!(log, "EHLO\nDATA\n");
}
