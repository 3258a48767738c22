//! The README tour, run step by step as written (issue 14): each line of the tour's shell
//! blocks runs in `bash` in a directory where `haven dev` runs, after `source`-ing the env
//! file the tour sourced, and its result is checked against what the tour's comment says.
//!
//! The README and this test must agree: every line of the tour must be a step below, in
//! the same order, and every step must be a line of the tour. A change to one without the
//! other fails here.

mod common;

use std::path::Path;
use std::path::PathBuf;
use std::process::Child;
use std::process::Command;
use std::process::Output;
use std::process::Stdio;
use std::time::Duration;
use std::time::Instant;

use common::*;

/// How a tour line is run and what it must show.
enum Step {
    /// `source FILE`: later lines run after sourcing it.
    Source,
    /// `NAME=VALUE`: later lines run after it (as in the one shell the reader types into).
    Assign,
    /// Runs once; must exit with the code and print every text.
    Run { code: i32, says: &'static [&'static str] },
    /// Runs again (up to `within`) until it exits with the code and prints every text: the
    /// tour says it happens "within about a second" or after the cluster settles.
    Until { code: i32, says: &'static [&'static str], within: Duration },
    /// Long-running ("in another terminal"): started in the background, left running.
    Background,
    /// Long-running, but must end by itself with the code and print every text.
    Ends { code: i32, says: &'static [&'static str] },
}

/// The tour's lines (without their comments) and how each is checked, block by block.
fn steps() -> Vec<Vec<(&'static str, Step)>> {
    let settle = Duration::from_secs(20);
    vec![
        vec![
            ("source haven-dev/env", Step::Source),
            ("haven status", Step::Until { code: 0, says: &["HA stable", "leader 1"], within: settle }),
            ("haven kv put greeting hello", Step::Run { code: 0, says: &["OK revision 1"] }),
            ("haven kv get greeting", Step::Run { code: 0, says: &["hello"] }),
        ],
        vec![
            ("PIN=$(haven fingerprint --dir haven-dev/n1 --curl)", Step::Assign),
            ("TOKEN=$(cat haven-dev/n1/admin.token)", Step::Assign),
            ("URL=${HAVEN_ENDPOINTS%%,*}", Step::Assign),
            (
                "curl -k --pinnedpubkey \"$PIN\" -H \"Authorization: Bearer $TOKEN\" -X PUT --data-binary hello \"$URL/v1/kv/greeting\"",
                Step::Run { code: 0, says: &["\"key\":\"greeting\"", "\"revision\":2"] },
            ),
        ],
        vec![
            ("haven kv watch ''", Step::Background),
            ("kill -9 $(cat haven-dev/n1/haven.pid)", Step::Run { code: 0, says: &[] }),
            (
                "haven status",
                Step::Until { code: 3, says: &["HA degraded", "node 1 (data voter) is unreachable"], within: settle },
            ),
            ("haven kv get greeting", Step::Run { code: 0, says: &["hello"] }),
            ("haven serve --config haven-dev/n1/haven.toml", Step::Background),
            ("haven switchover --to 1", Step::Until { code: 0, says: &["node 1 is the primary now"], within: settle }),
            ("haven maintenance on", Step::Run { code: 0, says: &["maintenance on"] }),
            ("haven maintenance off", Step::Run { code: 0, says: &["maintenance off"] }),
            ("haven tokens create --role reader", Step::Run { code: 0, says: &["hvn_", "created reader token"] }),
            ("haven config draft set nodes.3.role witness", Step::Run { code: 0, says: &["nodes.3.role"] }),
            (
                "haven config diff && haven config apply",
                Step::Run { code: 0, says: &["draft digest", "applied: HA configuration version 1"] },
            ),
            (
                "haven status; echo $?",
                Step::Until { code: 0, says: &["HA stable  (pair with witness", "\n0\n"], within: settle },
            ),
            ("haven audit", Step::Run { code: 0, says: &["config.apply", "switchover", "failover"] }),
            ("haven restart --rolling", Step::Run { code: 0, says: &["rolling restart done"] }),
            ("haven teardown --yes", Step::Run { code: 0, says: &["teardown generation 1", "detached: node(s)"] }),
        ],
        vec![
            ("source haven-dr/env", Step::Source),
            ("kill -9 $(cat haven-dr/n1/haven.pid) $(cat haven-dr/n3/haven.pid)", Step::Run { code: 0, says: &[] }),
            ("haven recover --dry-run", Step::Until { code: 0, says: &["--confirm-down 1,3"], within: settle }),
            ("haven recover --confirm-down 1,3", Step::Run { code: 0, says: &["node 2 (", "is back and leads the new cluster"] }),
            ("haven status", Step::Until { code: 7, says: &["HA standalone"], within: settle }),
            (
                "haven serve --config haven-dr/n1/haven.toml",
                Step::Ends { code: 78, says: &["recovered as cluster", "join cluster"] },
            ),
        ],
    ]
}

/// The shell blocks of the README's "A short tour" section, each as its lines without
/// their comments (a comment starts at two spaces and `#`; a line ending in `\` goes on
/// on the next one).
fn tour_blocks(readme: &str) -> Vec<Vec<String>> {
    let start = readme.find("## A short tour").expect("the README has a tour");
    let section = &readme[start..];
    let end = section[3..].find("\n## ").map_or(section.len(), |at| at + 3);
    let mut blocks = Vec::new();
    let mut current: Option<Vec<String>> = None;
    for line in section[..end].lines() {
        match (&mut current, line.trim_start()) {
            (None, "```sh") => current = Some(Vec::new()),
            (Some(_), "```") => blocks.extend(current.take()),
            (Some(block), line) => {
                let command = line.split_once("  #").map_or(line, |(command, _)| command).trim();
                let continued = block.last().filter(|last| last.ends_with('\\')).is_some();
                if continued {
                    let last = block.pop().unwrap_or_default();
                    block.push(format!("{} {command}", last.trim_end_matches('\\').trim_end()));
                } else if !command.is_empty() {
                    block.push(command.to_string());
                }
            }
            (None, _) => {}
        }
    }
    blocks
}

/// `bash -c` of `command` in `dir`, after the lines that set its environment (`source`
/// and assignments, when there are any).
fn shell(dir: &Path, prelude: Option<&str>, command: &str) -> Command {
    let script = match prelude {
        Some(prelude) => format!("{prelude}\n{command}"),
        None => command.to_string(),
    };
    let mut child = Command::new("bash");
    child.arg("-c").arg(script).current_dir(dir).env_remove("HAVEN_ENDPOINTS").env_remove("HAVEN_TOKEN");
    child
}

fn printed(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// `haven dev --dir DIR` in `cwd`, until it says the cluster runs.
// The child is returned to the caller, whose `Cleanup` stops and waits for it.
#[allow(clippy::zombie_processes)]
fn start_dev(cwd: &Path, dir: &str) -> Child {
    let log = std::fs::File::create(cwd.join(format!("{dir}.dev.log"))).expect("dev log");
    let mut child = Command::new(haven_binary())
        .args(["dev", "--dir", dir])
        .current_dir(cwd)
        .env("HAVEN_LOG", "info,openraft=warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("haven dev");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let said = std::fs::read_to_string(cwd.join(format!("{dir}.dev.log"))).unwrap_or_default();
        if said.contains("node(s) running") {
            return child;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("haven dev did not start:\n{said}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Stops what the tour started (common::terminate: gracefully first), also when a step
/// fails.
struct Cleanup(Vec<Child>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for child in &mut self.0 {
            terminate(child);
        }
    }
}

#[test]
fn the_readme_tour_runs_as_written() {
    let _serial = serial();
    let readme_path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
    let readme = std::fs::read_to_string(&readme_path).expect("README.md");
    let blocks = tour_blocks(&readme);
    let steps = steps();
    let written: Vec<Vec<&str>> = blocks.iter().map(|block| block.iter().map(String::as_str).collect()).collect();
    let tested: Vec<Vec<&str>> = steps.iter().map(|block| block.iter().map(|(line, _)| *line).collect()).collect();
    assert_eq!(written, tested, "the README tour and this test disagree");

    let cwd = tempfile::tempdir().expect("temp dir");
    let mut cleanup = Cleanup(Vec::new());
    // One shell, as the reader's: what a block sources or assigns holds for the next.
    let mut env: Option<String> = None;
    cleanup.0.push(start_dev(cwd.path(), "haven-dev"));
    for block in steps {
        if block.first().is_some_and(|(line, _)| *line == "source haven-dr/env") {
            // "with a second cluster running (`haven dev --dir haven-dr` in another terminal)"
            cleanup.0.push(start_dev(cwd.path(), "haven-dr"));
            env = None;
        }
        for (line, step) in block {
            eprintln!("tour: {line}");
            if line.starts_with("kill -9 $(cat haven-dev/n1/haven.pid)") {
                // The tour says n1 leads a new dev cluster: hold it to that.
                let status = shell(cwd.path(), env.as_deref(), "haven status").output().expect("status");
                assert!(printed(&status).contains("leader 1"), "n1 does not lead:\n{}", printed(&status));
            }
            match step {
                Step::Source => {
                    let output = shell(cwd.path(), None, line).output().expect("bash");
                    assert!(output.status.success(), "{line}:\n{}", printed(&output));
                    env = Some(line.to_string());
                }
                Step::Assign => {
                    let output = shell(cwd.path(), env.as_deref(), line).output().expect("bash");
                    assert!(output.status.success(), "{line}:\n{}", printed(&output));
                    env = Some(format!("{}\n{line}", env.unwrap_or_default()));
                }
                Step::Run { code, says } => {
                    let output = shell(cwd.path(), env.as_deref(), line).output().expect("bash");
                    check(line, &output, code, says);
                }
                Step::Until { code, says, within } => {
                    let deadline = Instant::now() + within;
                    loop {
                        let output = shell(cwd.path(), env.as_deref(), line).output().expect("bash");
                        let done =
                            output.status.code() == Some(code) && says.iter().all(|s| printed(&output).contains(s));
                        if done {
                            break;
                        }
                        if Instant::now() >= deadline {
                            check(line, &output, code, says);
                        }
                        std::thread::sleep(Duration::from_millis(300));
                    }
                }
                Step::Background => {
                    let child = shell(cwd.path(), env.as_deref(), &format!("exec {line}"))
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn()
                        .expect("bash");
                    cleanup.0.push(child);
                }
                Step::Ends { code, says } => {
                    let mut child = shell(cwd.path(), env.as_deref(), line)
                        .stdin(Stdio::null())
                        .stdout(Stdio::piped())
                        .stderr(Stdio::piped())
                        .spawn()
                        .expect("bash");
                    let deadline = Instant::now() + CONDITION_TIMEOUT;
                    while matches!(child.try_wait(), Ok(None)) {
                        if Instant::now() >= deadline {
                            let _ = child.kill();
                            panic!("{line} kept running");
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    check(line, &child.wait_with_output().expect("output"), code, says);
                }
            }
        }
    }
}

fn check(line: &str, output: &Output, code: i32, says: &[&str]) {
    let text = printed(output);
    assert_eq!(output.status.code(), Some(code), "`{line}` printed:\n{text}");
    for expected in says {
        assert!(text.contains(expected), "`{line}` did not say {expected:?}:\n{text}");
    }
}
