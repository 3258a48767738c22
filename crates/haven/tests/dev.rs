//! `haven dev` as a script meets it: the env file the README says to source appears only
//! once the cluster has formed (issue 15).

mod common;

use std::collections::BTreeMap;

use serde_json::Value;

/// The `HAVEN_*` variables an env file written by `haven dev` exports (`export NAME='value'`
/// lines; PATH is left out).
fn exported_haven_vars(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("export HAVEN_"))
        .filter_map(|rest| rest.split_once('='))
        .map(|(name, value)| (format!("HAVEN_{name}"), value.trim_matches('\'').to_string()))
        .collect()
}

/// A script waits for `haven-dev/env` and runs the CLI at once: every member is already a
/// voter under a leader. On the old code the file was written before any node started,
/// so this status found no node answering.
#[test]
fn the_env_file_appears_once_every_member_is_a_voter() {
    let _serial = common::serial();
    let root = tempfile::tempdir().expect("temp dir");
    let dir = root.path().join("dev");
    let log = root.path().join("dev.out");
    let mut command = common::haven_command();
    command.args(["dev", "--nodes=3"]).arg(format!("--dir={}", dir.display()));
    common::log_to(&mut command, &log);
    let mut dev = common::StopOnDrop(command.spawn().expect("spawn haven dev"));
    let env_file = dir.join("env");
    common::wait_until("the env file", &log, &mut dev.0, || env_file.exists());

    let vars = exported_haven_vars(&std::fs::read_to_string(&env_file).expect("read the env file"));
    assert_eq!(
        vars.keys().map(String::as_str).collect::<Vec<_>>(),
        ["HAVEN_CLI_STATE", "HAVEN_ENDPOINTS", "HAVEN_SERVER_FINGERPRINTS", "HAVEN_TOKEN_FILE"],
        "{vars:?}"
    );
    let output =
        common::haven_command().args(["status", "--json", "--timeout-ms=2000"]).envs(&vars).output().expect("status");
    let status: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|_| panic!("no status: {}", String::from_utf8_lossy(&output.stderr)));
    assert!(status["leader"].as_u64().is_some(), "no leader: {status}");
    assert_eq!(status["voters"], 3, "{status}");
    let members = status["members"].as_array().expect("members");
    assert_eq!(members.len(), 3, "{status}");
    assert!(members.iter().all(|member| member["voter"] == true), "a member is not a voter yet: {status}");
    drop(dev);
}
