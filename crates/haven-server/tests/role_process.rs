//! A role's processes with real processes: the start command runs under the guard with
//! the role's environment, in its own process group; stop runs the stop command, then
//! SIGTERM, then SIGKILL to the whole group; kill -9 of the supervising process (Haven)
//! or of the guard leaves no orphan; a supervising process stopped with SIGSTOP still
//! loses the role at its lease end and never restarts it after SIGCONT.
//!
//! The role is a shell script that appends `NODE EPOCH START` and, on SIGTERM,
//! `NODE EPOCH STOP` to a file (the shared-file test role), and keeps a child
//! running so that "the whole group" means something.
//!
//! No libtest harness: this binary is its own role guard (`main` calls
//! `run_guard_if_requested` first, as `haven` does), and it is its own "Haven" in the
//! tests that kill the supervising process (it re-runs itself with `ROLE_TEST_MODE`).
//! Run one test with `cargo test -p haven-server --test role_process -- NAME`.

use std::io::BufRead as _;
use std::io::BufReader;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;
use std::time::Instant;

use haven_core::roles::definition::CommandLine;
use haven_core::roles::lease::holder_step;
use haven_core::roles::lease::HolderAction;
use haven_core::roles::lease::HolderLease;
use haven_core::roles::lease::LEASE_DURATION_MS;
use haven_core::roles::lease::STOP_BUDGET_MS;
use haven_core::roles::lease::TERM_GRACE_MS;
use haven_server::role_process::boottime_ms;
use haven_server::role_process::is_live as alive;
use haven_server::role_process::live_group_members as live_members;
use haven_server::role_process::run_check;
use haven_server::role_process::run_guard_if_requested;
use haven_server::role_process::RoleEnv;
use haven_server::role_process::RoleExit;
use haven_server::role_process::RoleProcess;

/// How long anything in these tests may take to settle: generous for a loaded machine
/// (processes start and die in milliseconds).
const SETTLE: Duration = Duration::from_secs(15);

const NODE: u64 = 2;
const EPOCH: u64 = 7;

fn env() -> RoleEnv {
    RoleEnv { role: "mgmt".into(), epoch: EPOCH, node: NODE, cluster_id: "c-123".into() }
}

fn script(dir: &Path, name: &str, body: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.to_str().unwrap().to_string()
}

/// The test role: appends START, keeps a child sleeping, appends STOP on SIGTERM (the
/// trap is set before START is written, so a role seen started always writes STOP).
/// `$1` is the shared file; `$2` (optional) a file to write its environment into.
fn role_script(dir: &Path) -> String {
    script(
        dir,
        "role.sh",
        "#!/bin/sh\n\
         f=\"$1\"\n\
         trap 'echo \"$HAVEN_NODE $HAVEN_EPOCH STOP\" >> \"$f\"; exit 0' TERM\n\
         echo \"$HAVEN_NODE $HAVEN_EPOCH START\" >> \"$f\"\n\
         if [ -n \"$2\" ]; then echo \"$HAVEN_ROLE $HAVEN_EPOCH $HAVEN_NODE $HAVEN_CLUSTER_ID\" > \"$2\"; fi\n\
         echo \"role $HAVEN_ROLE up\"; echo \"role $HAVEN_ROLE warns\" >&2\n\
         while :; do sleep 1 & wait $!; done\n",
    )
}

/// A role whose child ignores SIGTERM (only SIGKILL ends it), and writes its pid (after
/// the role's own TERM trap is set).
fn stubborn_script(dir: &Path) -> String {
    script(
        dir,
        "stubborn.sh",
        "#!/bin/sh\n\
         trap 'exit 0' TERM\n\
         sh -c 'trap \"\" TERM; echo $$ > \"$1\"; while :; do sleep 1; done' stubborn \"$1\" &\n\
         while :; do sleep 1 & wait $!; done\n",
    )
}

/// Waits until `condition` holds, polling every 10 ms; the time it first held.
fn wait_until(what: &str, bound: Duration, mut condition: impl FnMut() -> bool) -> Instant {
    let started = Instant::now();
    loop {
        reap_orphans();
        if condition() {
            return Instant::now();
        }
        assert!(started.elapsed() < bound, "{what}: not within {bound:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// This process is a subreaper (below), so orphans of the killed supervisors end up
/// here: reap them so they do not linger as zombies.
fn reap_orphans() {
    loop {
        // SAFETY: waitpid with a null status pointer.
        let reaped = unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) };
        if reaped <= 0 {
            return;
        }
    }
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(str::to_string).collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// The start command gets the role's environment; stop runs the stop command first, then
/// the role gets SIGTERM and writes STOP; nothing of the group is left.
fn a_role_runs_with_its_environment_and_stops_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    let env_file = dir.path().join("env");
    let start = role_script(dir.path());
    let stop = script(
        dir.path(),
        "stop.sh",
        &format!("#!/bin/sh\necho \"stop-command $HAVEN_NODE $HAVEN_EPOCH $HAVEN_ROLE\" >> '{}'\n", shared.display()),
    );
    runtime().block_on(async {
        let start = CommandLine::new(start, &[shared.to_str().unwrap(), env_file.to_str().unwrap()]);
        let mut role = RoleProcess::start(&env(), &start, boottime_ms() + 60_000).await.unwrap();
        let pgid = role.pid();
        wait_until("the role wrote its environment", SETTLE, || env_file.exists() && !lines(&env_file).is_empty());
        assert_eq!(lines(&env_file), vec![format!("mgmt {EPOCH} {NODE} c-123")]);
        wait_until("the script and its child share the group", SETTLE, || live_members(pgid).len() >= 2);
        let report = role.stop(&env(), &CommandLine::new(stop, &[]), boottime_ms() + 60_000).await;
        assert!(report.stop_command.is_ok(), "{report:?}");
        assert_eq!(report.exit, RoleExit::Exited(0), "the script's TERM trap exits 0");
        assert_eq!(
            lines(&shared),
            vec![
                format!("{NODE} {EPOCH} START"),
                format!("stop-command {NODE} {EPOCH} mgmt"),
                format!("{NODE} {EPOCH} STOP"),
            ]
        );
        assert!(live_members(pgid).is_empty(), "left in the group: {:?}", live_members(pgid));
        let output = role.output().await;
        assert_eq!(output.stdout, "role mgmt up\n", "the role's stdout, through the guard");
        assert!(output.stderr.starts_with("role mgmt warns\n"), "{:?}", output.stderr);
    });
}

/// A child that ignores SIGTERM is killed with SIGKILL after the grace: the whole group
/// goes, not just the start command.
fn stop_kills_the_whole_group() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("stubborn.pid");
    let start = stubborn_script(dir.path());
    let noop = script(dir.path(), "noop.sh", "#!/bin/sh\nexit 0\n");
    runtime().block_on(async {
        let start = CommandLine::new(start, &[pid_file.to_str().unwrap()]);
        let mut role = RoleProcess::start(&env(), &start, boottime_ms() + 60_000).await.unwrap();
        let pgid = role.pid();
        wait_until("the stubborn child wrote its pid", SETTLE, || !lines(&pid_file).is_empty());
        let stubborn: u32 = lines(&pid_file)[0].parse().unwrap();
        assert!(alive(stubborn));
        let started = Instant::now();
        let report = role.stop(&env(), &CommandLine::new(noop, &[]), boottime_ms() + 60_000).await;
        let took = started.elapsed();
        assert!(!alive(stubborn), "the TERM-ignoring child was killed");
        assert!(took >= Duration::from_millis(TERM_GRACE_MS - 100), "SIGKILL came only after the grace: {took:?}");
        assert!(live_members(pgid).is_empty(), "left in the group: {:?}", live_members(pgid));
        assert_eq!(report.exit, RoleExit::Exited(0));
    });
}

/// The guard is the last line: with nobody renewing, it stops the role before the lease
/// end on its own.
fn the_guard_stops_the_role_before_its_lease_ends() {
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    let start = role_script(dir.path());
    runtime().block_on(async {
        // The guard's SIGTERM comes `TERM_GRACE_MS + KILL_LEAD_MS` (2.5 s) before the end:
        // 5.5 s after the start leaves a loaded machine ample time to have started the role.
        let lease_end_ms = boottime_ms() + 8_000;
        let start = CommandLine::new(start, &[shared.to_str().unwrap()]);
        let mut role = RoleProcess::start(&env(), &start, lease_end_ms).await.unwrap();
        let pgid = role.pid();
        let exit = tokio::time::timeout(SETTLE, role.exited()).await.expect("the guard ended the role");
        let gone_ms = boottime_ms();
        assert!(live_members(pgid).is_empty());
        assert!(gone_ms <= lease_end_ms, "gone {} ms after the lease end", gone_ms - lease_end_ms);
        assert_eq!(exit, RoleExit::Exited(0), "SIGTERM first: the script wrote STOP and exited");
        assert_eq!(lines(&shared), vec![format!("{NODE} {EPOCH} START"), format!("{NODE} {EPOCH} STOP")]);
        eprintln!("    role gone {} ms before its lease end", lease_end_ms - gone_ms);
    });
}

/// kill -9 of the guard: the start command dies by its death signal, and Haven kills
/// the rest of the group when the guard's socket closes without a report.
fn kill_9_of_the_guard_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("stubborn.pid");
    let start = stubborn_script(dir.path());
    runtime().block_on(async {
        let start = CommandLine::new(start, &[pid_file.to_str().unwrap()]);
        let mut role = RoleProcess::start(&env(), &start, boottime_ms() + 60_000).await.unwrap();
        let pgid = role.pid();
        wait_until("the stubborn child wrote its pid", SETTLE, || !lines(&pid_file).is_empty());
        let guard = role.guard_pid().unwrap();
        // SAFETY: kill(2) on our own child.
        unsafe {
            libc::kill(guard as i32, libc::SIGKILL);
        }
        let exit = tokio::time::timeout(SETTLE, role.exited()).await.unwrap();
        assert_eq!(exit, RoleExit::GuardLost);
        wait_until("the group is gone", SETTLE, || live_members(pgid).is_empty());
        assert!(!alive(pgid), "the start command died with its guard");
    });
}

/// A start command that cannot run is an error in words, and nothing is left running.
fn start_errors_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let not_executable = dir.path().join("plain");
    std::fs::write(&not_executable, "#!/bin/sh\n").unwrap();
    runtime().block_on(async {
        let lease = boottime_ms() + 60_000;
        let missing = RoleProcess::start(&env(), &CommandLine::new("/nonexistent/start", &[]), lease).await;
        let error = missing.err().unwrap();
        assert!(error.contains("start command /nonexistent/start cannot be started"), "{error}");
        let plain = CommandLine::new(not_executable.to_str().unwrap(), &[]);
        let error = RoleProcess::start(&env(), &plain, lease).await.err().unwrap();
        assert!(error.contains("permission denied"), "{error}");
        let ended = RoleProcess::start(&env(), &CommandLine::new("/bin/true", &[]), boottime_ms()).await;
        assert!(ended.err().unwrap().contains("already ended"));
    });
}

/// The check runs with the role's environment and a timeout that kills it.
fn checks_pass_fail_and_time_out() {
    let dir = tempfile::tempdir().unwrap();
    let check = script(
        dir.path(),
        "check.sh",
        "#!/bin/sh\n\
         [ \"$HAVEN_ROLE $HAVEN_EPOCH\" = \"mgmt 7\" ] || exit 9\n\
         case \"$1\" in ok) exit 0;; fail) echo 'port 8443 closed' >&2; exit 3;; *) sleep 30;; esac\n",
    );
    runtime().block_on(async {
        let run = |mode: &'static str, timeout_ms| {
            let check = CommandLine::new(check.clone(), &[mode]);
            async move { run_check(&env(), &check, timeout_ms).await }
        };
        let ok = run("ok", 5_000).await;
        assert!(ok.passed, "{ok:?}");
        let failed = run("fail", 5_000).await;
        assert!(!failed.passed);
        assert_eq!(failed.detail, "exit code 3: port 8443 closed");
        let started = Instant::now();
        let slow = run("hang", 300).await;
        assert!(!slow.passed);
        assert_eq!(slow.detail, "timed out after 300 ms");
        assert!(started.elapsed() < Duration::from_secs(10), "killed, not waited for");
        let missing = run_check(&env(), &CommandLine::new("/nonexistent/check", &[]), 1_000).await;
        assert!(!missing.passed && missing.detail.contains("cannot be started"), "{missing:?}");
    });
}

/// The shared-file checker over real copies of the role: two holders one after the
/// other (node 1 epoch 1 stopped before node 2 epoch 2 starts) pass; started the other
/// way round (node 3 epoch 3 while node 2 runs), it names the overlap.
fn the_holder_checker_passes_handovers_and_flags_a_real_overlap() {
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    let start = CommandLine::new(role_script(dir.path()), &[shared.to_str().unwrap()]);
    let noop = CommandLine::new(script(dir.path(), "noop.sh", "#!/bin/sh\n"), &[]);
    let holder = |node, epoch| RoleEnv { node, epoch, ..env() };
    let wait_lines = |count| wait_until("the role wrote its line", SETTLE, || lines(&shared).len() == count);
    runtime().block_on(async {
        let lease = boottime_ms() + 60_000;
        let mut first = RoleProcess::start(&holder(1, 1), &start, lease).await.unwrap();
        wait_lines(1);
        first.stop(&holder(1, 1), &noop, lease).await;
        let mut second = RoleProcess::start(&holder(2, 2), &start, lease).await.unwrap();
        wait_lines(3);
        let report = haven_check::check_holders(&std::fs::read_to_string(&shared).unwrap());
        assert!(report.passed(), "{report:?}");
        assert_eq!(report.running_at_end, Some(haven_check::RoleCopy { node: 2, epoch: 2 }));
        let mut third = RoleProcess::start(&holder(3, 3), &start, lease).await.unwrap();
        wait_lines(4);
        second.stop(&holder(2, 2), &noop, lease).await;
        third.stop(&holder(3, 3), &noop, lease).await;
        let report = haven_check::check_holders(&std::fs::read_to_string(&shared).unwrap());
        assert!(!report.passed());
        assert!(
            matches!(report.problems[0], haven_check::HolderProblem::Overlap { line: 4, .. }),
            "{:?}",
            report.problems
        );
    });
}

// ---------------------------------------------------------------------------------------
// A supervising process ("Haven") that can be killed or stopped: this binary again, in
// ROLE_TEST_MODE=supervise.

/// Starts the role with a lease (the real `LEASE_DURATION_MS`), prints `pgid P guard G`, then
/// renews every 300 ms as a holder would with a primary that always grants, printing
/// each lease end as `lease END`. Each round starts with the holder's decision, so after
/// a pause the lease is looked at before anything else.
fn supervise() {
    let start = std::env::var("ROLE_TEST_START").unwrap();
    let shared = std::env::var("ROLE_TEST_FILE").unwrap();
    runtime().block_on(async move {
        let mut lease = HolderLease::new(EPOCH);
        lease.renewed(boottime_ms());
        let end = lease.ends_at_ms.unwrap();
        let mut role = RoleProcess::start(&env(), &CommandLine::new(start, &[&shared]), end).await.unwrap();
        lease.started();
        println!("pgid {} guard {}", role.pid(), role.guard_pid().unwrap());
        println!("lease {end}");
        let mut running = true;
        let mut said = String::new();
        loop {
            if running && tokio::time::timeout(Duration::from_millis(300), role.exited()).await.is_ok() {
                running = false;
            }
            if !running {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            let now = boottime_ms();
            let line = match holder_step(&lease, Some(EPOCH), running, now) {
                HolderAction::Keep { .. } => {
                    lease.renewed(now);
                    let end = lease.ends_at_ms.unwrap();
                    let _ = role.extend(end).await;
                    format!("lease {end}")
                }
                HolderAction::Kill { reason } => {
                    role.kill().await;
                    running = false;
                    format!("kill: {reason}")
                }
                HolderAction::Stop { reason } => format!("stop: {reason}"),
                // Never expected (an epoch is started once); said so the test sees it.
                HolderAction::Start { .. } => "START AGAIN".to_string(),
                HolderAction::Idle { reason } => format!("idle: {reason}"),
            };
            if line != said || line.starts_with("lease") {
                println!("{line}");
                said = line;
            }
        }
    });
}

/// The test role under a supervisor, started (its START written), in a fresh dir: the
/// dir (kept for the test's life), the shared file, the supervisor.
fn supervised_role() -> (tempfile::TempDir, std::path::PathBuf, Supervisor) {
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    let supervisor = Supervisor::spawn(&role_script(dir.path()), &shared);
    wait_until("the role started", SETTLE, || lines(&shared).len() == 1);
    (dir, shared, supervisor)
}

struct Supervisor {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
    pgid: u32,
    guard: u32,
}

impl Supervisor {
    fn spawn(start: &str, shared: &Path) -> Supervisor {
        let mut child = std::process::Command::new("/proc/self/exe")
            .env("ROLE_TEST_MODE", "supervise")
            .env("ROLE_TEST_START", start)
            .env("ROLE_TEST_FILE", shared)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    return;
                }
            }
        });
        let first = lines.recv_timeout(SETTLE).expect("the supervisor started the role");
        let words: Vec<&str> = first.split_whitespace().collect();
        let (pgid, guard) = (words[1].parse().unwrap(), words[3].parse().unwrap());
        Supervisor { child, lines, pgid, guard }
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child.
        unsafe {
            libc::kill(self.child.id() as i32, signal);
        }
    }

    /// Every line printed so far.
    fn drain(&self) -> Vec<String> {
        self.lines.try_iter().collect()
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// kill -9 of the supervising process: its guard sees the socket close, stops the role in
/// order (STOP is written) and leaves nothing running, guard included. The role prints
/// (and its shell reports the killed `sleep` on stderr): its output goes through the
/// guard, so Haven's broken pipes do not kill it with SIGPIPE before its STOP.
fn kill_9_of_the_supervisor_leaves_no_orphan() {
    let (_dir, shared, supervisor) = supervised_role();
    assert!(!live_members(supervisor.pgid).is_empty());
    supervisor.signal(libc::SIGKILL);
    let killed = Instant::now();
    // Well before the guard's own lease enforcement could act (SIGTERM at the lease end
    // minus 2.5 s, that is 7.5 s after the last renewal): this is the guard seeing Haven
    // go, not the lease running out.
    let bound = Duration::from_millis(LEASE_DURATION_MS - STOP_BUDGET_MS);
    wait_until("the role's group is gone", bound, || live_members(supervisor.pgid).is_empty());
    wait_until("the guard is gone", SETTLE, || !alive(supervisor.guard));
    eprintln!("    role and guard gone {} ms after the kill", killed.elapsed().as_millis());
    assert_eq!(lines(&shared), vec![format!("{NODE} {EPOCH} START"), format!("{NODE} {EPOCH} STOP")]);
}

/// SIGSTOP of the supervising process: renewals stop, the guard stops the role before the
/// last lease it was given ends; after SIGCONT the supervisor sees the lease is gone
/// before anything else, and the role is never started again.
fn a_stopped_supervisor_loses_the_role_at_its_lease_end_and_never_restarts_it() {
    let (_dir, shared, supervisor) = supervised_role();
    std::thread::sleep(Duration::from_millis(1_000));
    supervisor.signal(libc::SIGSTOP);
    // A renewal printed just before the stop may still be in the pipe: wait a little.
    std::thread::sleep(Duration::from_millis(200));
    let last_end: u64 = supervisor
        .drain()
        .iter()
        .filter_map(|line| line.strip_prefix("lease ").and_then(|end| end.parse().ok()))
        .max()
        .expect("renewals before the stop");
    wait_until("the role's group is gone", SETTLE, || live_members(supervisor.pgid).is_empty());
    let gone_ms = boottime_ms();
    assert!(gone_ms <= last_end, "the role outlived its lease by {} ms", gone_ms - last_end);
    eprintln!("    role gone {} ms before the end of its last lease", last_end - gone_ms);
    assert_eq!(lines(&shared), vec![format!("{NODE} {EPOCH} START"), format!("{NODE} {EPOCH} STOP")]);
    std::thread::sleep(Duration::from_millis(last_end.saturating_sub(boottime_ms()) + 200));
    supervisor.signal(libc::SIGCONT);
    // Everything the supervisor says from its resumption until its decision that the epoch
    // is not started again, and for a second after it.
    let mut after: Vec<String> = Vec::new();
    wait_until("the resumed supervisor's decision", SETTLE, || {
        after.extend(supervisor.drain());
        after.iter().any(|line| line.starts_with("idle: "))
    });
    std::thread::sleep(Duration::from_millis(1_000));
    after.extend(supervisor.drain());
    assert!(
        after.iter().all(|line| !line.starts_with("lease ") && line != "START AGAIN"),
        "renewed or restarted after the pause: {after:?}"
    );
    assert!(after.iter().any(|line| line.starts_with("idle: epoch 7 was started here before")), "{after:?}");
    assert_eq!(lines(&shared).len(), 2, "nothing written after the pause: {:?}", lines(&shared));
}

/// PR_SET_PDEATHSIG on its own: with the supervising process stopped (so it cannot kill
/// the group) the guard is killed with SIGKILL; the start command dies with it. After
/// SIGCONT the supervisor sees the guard gone and kills what is left of the group.
fn the_start_command_dies_with_its_guard() {
    let (_dir, _shared, supervisor) = supervised_role();
    supervisor.signal(libc::SIGSTOP);
    // SAFETY: kill(2) on the guard, a grandchild of this process.
    unsafe {
        libc::kill(supervisor.guard as i32, libc::SIGKILL);
    }
    wait_until("the start command died with its guard", SETTLE, || !alive(supervisor.pgid));
    supervisor.signal(libc::SIGCONT);
    wait_until("the rest of the group is gone", SETTLE, || live_members(supervisor.pgid).is_empty());
}

fn main() {
    run_guard_if_requested();
    if std::env::var("ROLE_TEST_MODE").as_deref() == Ok("supervise") {
        supervise();
        return;
    }
    // Orphans of the supervisors killed here come to this process, which reaps them.
    // SAFETY: prctl with integer arguments.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
    let tests: &[(&str, fn())] = &[
        ("a_role_runs_with_its_environment_and_stops_in_order", a_role_runs_with_its_environment_and_stops_in_order),
        ("stop_kills_the_whole_group", stop_kills_the_whole_group),
        ("the_guard_stops_the_role_before_its_lease_ends", the_guard_stops_the_role_before_its_lease_ends),
        ("kill_9_of_the_guard_leaves_nothing", kill_9_of_the_guard_leaves_nothing),
        ("start_errors_are_reported", start_errors_are_reported),
        ("checks_pass_fail_and_time_out", checks_pass_fail_and_time_out),
        (
            "the_holder_checker_passes_handovers_and_flags_a_real_overlap",
            the_holder_checker_passes_handovers_and_flags_a_real_overlap,
        ),
        ("kill_9_of_the_supervisor_leaves_no_orphan", kill_9_of_the_supervisor_leaves_no_orphan),
        ("the_start_command_dies_with_its_guard", the_start_command_dies_with_its_guard),
        (
            "a_stopped_supervisor_loses_the_role_at_its_lease_end_and_never_restarts_it",
            a_stopped_supervisor_loses_the_role_at_its_lease_end_and_never_restarts_it,
        ),
    ];
    let filters: Vec<String> = std::env::args().skip(1).filter(|arg| !arg.starts_with('-')).collect();
    let mut failed = Vec::new();
    let mut ran = 0;
    for (name, test) in tests {
        if !filters.is_empty() && !filters.iter().any(|filter| name.contains(filter.as_str())) {
            continue;
        }
        ran += 1;
        eprintln!("test {name} ...");
        match std::panic::catch_unwind(test) {
            Ok(()) => eprintln!("test {name} ... ok"),
            Err(_) => {
                eprintln!("test {name} ... FAILED");
                failed.push(*name);
            }
        }
        reap_orphans();
    }
    eprintln!(
        "\ntest result: {}. {} passed; {} failed",
        if failed.is_empty() { "ok" } else { "FAILED" },
        ran - failed.len(),
        failed.len()
    );
    if !failed.is_empty() {
        eprintln!("failures: {failed:?}");
        std::process::exit(1);
    }
}
