//! A node's data dir is its user's alone: after `haven dev`, after `haven serve` on a new
//! dir and after a snapshot, nothing under it has a group or other permission bit, and a
//! node refuses to start on a data dir that others can write.
//!
//! The test process sets the common umask 022 first, so what the nodes create would be
//! world-readable (0644 files, 0755 dirs) if they did not restrict their own mask: these
//! tests fail on a build without it (checked with `HAVEN_TEST_BINARY` on the old binary).

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::path::PathBuf;
use std::process::Child;

use common::CONDITION_TIMEOUT;

/// Every entry under `root` (symlinks not followed) with its permission bits, for those
/// that give anything to group or others.
fn readable_by_others(root: &Path) -> Vec<(PathBuf, u32)> {
    let mut found = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(path) = pending.pop() {
        let metadata = std::fs::symlink_metadata(&path).expect("metadata");
        let mode = metadata.permissions().mode() & 0o777;
        if !metadata.file_type().is_symlink() && mode & 0o077 != 0 {
            found.push((path.clone(), mode));
        }
        if metadata.is_dir() {
            for entry in std::fs::read_dir(&path).expect("list") {
                pending.push(entry.expect("entry").path());
            }
        }
    }
    found
}

/// Entries under `root`, to show the check looked at the files that matter.
fn names_under(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root)
        .expect("list")
        .map(|entry| entry.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn serve(data_dir: &Path, log: &Path) -> Child {
    let mut command = common::haven_command();
    command
        .args(["serve", "--node-id=1", "--bootstrap", "--snapshot-threshold=10"])
        .args(["--client-addr=127.0.0.1:0", "--peer-addr=127.0.0.1:0"])
        .arg(format!("--data-dir={}", data_dir.display()));
    common::log_to(&mut command, log);
    command.spawn().expect("spawn haven")
}

/// The test process's creation mask set to the common 022 (see the module docs), under
/// the serial lock (the mask is the whole process's), and a fresh temp dir.
fn with_umask_022() -> (std::sync::MutexGuard<'static, ()>, tempfile::TempDir) {
    let serial = common::serial();
    // SAFETY: umask only swaps the process's creation mask.
    unsafe { libc::umask(0o022) };
    (serial, tempfile::tempdir().expect("temp dir"))
}

/// `haven init` and `haven serve` on a dir that does not exist yet: they create it, its key,
/// database, token and address files, then a snapshot; none of it is readable by anyone else. Then a
/// data dir made group-writable is refused at start-up with the reason and the fix.
#[test]
fn serve_on_a_new_dir_keeps_everything_private_and_refuses_a_writable_dir() {
    let (_serial, root) = with_umask_022();
    let data_dir = root.path().join("new/n1");
    let log = root.path().join("n1.log");
    // A new cluster starts on a data dir `haven init` prepared (it makes the dir).
    common::init_node(&data_dir, 1);
    let mut child = serve(&data_dir, &log);
    let token_path = data_dir.join("admin.token");
    common::wait_until("admin.token and addr.json", &log, &mut child, || {
        token_path.exists() && data_dir.join("addr.json").exists()
    });
    let addr: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data_dir.join("addr.json")).expect("addr.json")).expect("json");
    let key = haven_tls::NodeIdentityKey::load(&data_dir).expect("key").expect("the node's key");
    let mut config =
        haven_client::ClientConfig::from_endpoints_str(addr["client_url"].as_str().expect("url")).expect("endpoints");
    config.server_fingerprints = vec![key.fingerprint().to_string()];
    config.token = Some(std::fs::read_to_string(&token_path).expect("token").trim().to_string());
    let client = haven_client::Client::new(config).expect("client");
    // Past the snapshot threshold (10 entries) a few times over.
    common::block_on(async {
        for i in 0..40 {
            client.put(&format!("k/{i}"), b"v", Default::default()).await.expect("put");
        }
    });
    let snapshot = data_dir.join("snapshot.bin");
    common::wait_until("a snapshot", &log, &mut child, || snapshot.exists());
    let names = names_under(&data_dir);
    for expected in ["addr.json", "admin.token", "haven.pid", "node.key", "raft.redb", "snapshot.bin"] {
        assert!(names.iter().any(|name| name == expected), "{expected} missing from {names:?}");
    }
    assert_eq!(readable_by_others(&data_dir), vec![], "under the data dir of haven serve");
    // `new/`, made on the way to the data dir, is private too.
    assert_eq!(readable_by_others(&root.path().join("new")), vec![]);
    let status = common::terminate(&mut child);
    assert!(status.is_some_and(|status| status.success()), "{}", std::fs::read_to_string(&log).unwrap_or_default());

    // Group-writable: refused, with the reason and the fix, and nothing is served.
    std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o770)).expect("chmod");
    let before = std::fs::read_to_string(&log).unwrap_or_default().len();
    let mut child = serve(&data_dir, &log);
    let status = common::wait_exit_within(&mut child, CONDITION_TIMEOUT)
        .expect("a node on a group-writable data dir kept running");
    let output = std::fs::read_to_string(&log).unwrap_or_default()[before..].to_string();
    assert!(!status.success(), "{output}");
    assert!(
        output.contains("refusing to start") && output.contains("writable by group or others"),
        "no clear refusal:\n{output}"
    );
    assert!(output.contains(&format!("chmod 700 {}", data_dir.display())), "the fix is not named:\n{output}");
    assert!(!data_dir.join("haven.pid").exists(), "it served anyway:\n{output}");
}

/// `haven dev --nodes 1`: its dir (lock, env file), the node's config, log and data are the
/// user's alone.
#[test]
fn haven_dev_keeps_everything_private() {
    let (_serial, root) = with_umask_022();
    let dir = root.path().join("dev");
    let log = root.path().join("dev.out");
    let mut command = common::haven_command();
    command.args(["dev", "--nodes=1"]).arg(format!("--dir={}", dir.display()));
    common::log_to(&mut command, &log);
    let mut child = command.spawn().expect("spawn haven dev");
    let n1 = dir.join("n1");
    common::wait_until("the dev cluster to be up", &log, &mut child, || {
        dir.join("env").exists() && n1.join("admin.token").exists() && n1.join("haven.pid").exists()
    });
    let names = names_under(&n1);
    for expected in ["admin.token", "haven.log", "haven.toml", "node.key", "raft.redb"] {
        assert!(names.iter().any(|name| name == expected), "{expected} missing from {names:?}");
    }
    assert_eq!(readable_by_others(&dir), vec![], "under the dir of haven dev");
    common::terminate(&mut child);
}
