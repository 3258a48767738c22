//! A full disk (docs/architecture.md, "Integrity"): a node whose data dir fills up fails
//! stop: its health stops claiming service as soon as its Raft core stops, it exits
//! non-zero naming the reason, the others go on without losing an acknowledged write, and
//! once there is space again a restart brings it back, caught up.
//!
//! The data dir is put on a small tmpfs, which needs root (to mount it); without root each
//! test says so and passes without running.

mod common;

use std::path::Path;
use std::path::PathBuf;
use std::process::Command;

use common::*;
use haven_client::Consistency;
use haven_client::WriteOptions;

/// Values written to fill the disk: large, so a few dozen fill it.
const VALUE_BYTES: usize = 256 * 1024;

/// Room left on the tmpfs beyond what the data dir holds when it is moved there.
const HEADROOM_BYTES: u64 = 8 << 20;

/// Writes tried before the test gives up waiting for the disk to fill.
const WRITES_MAX: usize = 400;

/// A tmpfs mounted by the test, unmounted when dropped.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: &Path, bytes: u64) -> Tmpfs {
        std::fs::create_dir_all(path).expect("mount point");
        // mode=0700: a tmpfs root is 1777 by default, and a node refuses a data dir that
        // others can write.
        let options = format!("size={}k,mode=0700", bytes / 1024);
        run("mount", &["-t", "tmpfs", "-o", &options, "tmpfs", &path.display().to_string()]);
        Tmpfs { path: path.to_path_buf() }
    }

    fn resize(&self, bytes: u64) {
        run("mount", &["-o", &format!("remount,size={}k", bytes / 1024), &self.path.display().to_string()]);
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

fn run(program: &str, args: &[&str]) {
    let status = Command::new(program).args(args).status().expect(program);
    assert!(status.success(), "{program} {args:?} failed");
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .expect("read dir")
        .filter_map(|entry| entry.ok()?.metadata().ok())
        .filter(|metadata| metadata.is_file())
        .map(|metadata| metadata.len())
        .sum()
}

/// Stops the node at `index`, moves its data dir onto a tmpfs with `HEADROOM_BYTES` free,
/// and starts it again there.
fn move_onto_tmpfs(cluster: &mut TestCluster, index: usize) -> Tmpfs {
    cluster.stop(index);
    let dir = cluster.nodes[index].data_dir.clone();
    let saved = dir.with_extension("saved");
    std::fs::rename(&dir, &saved).expect("move the data dir aside");
    let tmpfs = Tmpfs::mount(&dir, dir_bytes(&saved) + HEADROOM_BYTES);
    for entry in std::fs::read_dir(&saved).expect("read dir") {
        let entry = entry.expect("entry");
        if entry.metadata().expect("metadata").is_file() {
            std::fs::copy(entry.path(), dir.join(entry.file_name())).expect("copy onto the tmpfs");
        }
    }
    cluster.restart(index);
    tmpfs
}

/// Fills the disk of the node at `full` by writing large values through the cluster until
/// that node exits. Checks on the way that once its log says its core stopped, its health
/// never claims service. Returns the keys whose writes were acknowledged.
fn fill_until_exit(cluster: &mut TestCluster, full: usize) -> Vec<String> {
    let client = cluster.client();
    let health_url = format!("{}/v1/health", cluster.nodes[full].client_url);
    let mut acknowledged = Vec::new();
    for i in 0..WRITES_MAX {
        let key = format!("big/{i:04}");
        let value = vec![b'a' + (i % 26) as u8; VALUE_BYTES];
        if block_on(client.put(&key, &value, WriteOptions::default())).is_ok() {
            acknowledged.push(key);
        }
        let stopped = cluster.nodes[full].log().contains("the Raft core stopped");
        if stopped {
            if let Some(body) = https_get(&health_url, &cluster.pins, None) {
                assert!(!body.contains("\"ok\":true"), "health claims service after the core stopped: {body}");
            }
        }
        if !cluster.nodes[full].is_running() {
            assert!(stopped, "the node exited without saying its core stopped:\n{}", cluster.nodes[full].log());
            return acknowledged;
        }
    }
    cluster.dump_logs();
    let stopped = cluster.nodes[full].log().contains("the Raft core stopped");
    panic!(
        "the node did not exit within {WRITES_MAX} writes of {VALUE_BYTES} bytes (its log says its core stopped: \
         {stopped})"
    );
}

/// The whole scenario for the node at `full` (already on its tmpfs).
fn disk_full_fails_stop_and_recovers(cluster: &mut TestCluster, full: usize, tmpfs: &Tmpfs) {
    let acknowledged = fill_until_exit(cluster, full);
    let status = cluster.stop(full).expect("exit status");
    assert!(!status.success(), "the node with a full disk exited successfully");
    let log = cluster.nodes[full].log();
    assert!(log.contains("No space left on device"), "the reason is not named:\n{log}");

    // The others go on, with every acknowledged write.
    cluster.wait_for(CONDITION_TIMEOUT, "a leader among the others", |c| {
        (0..c.nodes.len()).filter(|i| *i != full).any(|i| c.leader_of(i).is_some_and(|id| id != c.nodes[full].id))
    });
    let client = cluster.client();
    if let Err(error) = block_on(client.put("after/full", b"still writable", WriteOptions::default())) {
        cluster.dump_logs();
        panic!("the others do not take writes after node {} stopped: {error:?}", cluster.nodes[full].id);
    }
    for key in &acknowledged {
        let entry = block_on(client.get(key, Consistency::Linearizable)).expect("read").expect("acknowledged write");
        assert_eq!(entry.value.len(), VALUE_BYTES, "{key}");
    }

    // Space again: a restart recovers, and the node catches up.
    tmpfs.resize(dir_bytes(&tmpfs.path) + 256 * 1024 * 1024);
    cluster.restart(full);
    cluster.wait_for(CONDITION_TIMEOUT, "the restarted node to catch up", |c| {
        block_on(c.client_of(full).get("after/full", Consistency::Stale)).is_ok_and(|entry| entry.is_some())
    });
    for key in &acknowledged {
        let entry = block_on(cluster.client_of(full).get(key, Consistency::Stale)).expect("read").expect("caught up");
        assert_eq!(entry.value.len(), VALUE_BYTES, "{key} on the restarted node");
    }
}

/// A running three-node cluster and its leader, or `None` (with a SKIPPED line) when the
/// test cannot mount a tmpfs.
fn three_nodes_as_root() -> Option<(std::sync::MutexGuard<'static, ()>, TestCluster, u64)> {
    if !is_root() {
        eprintln!("SKIPPED: mounting a tmpfs for the full disk needs root");
        return None;
    }
    let serial = serial();
    let mut cluster = TestCluster::start(3, &[]);
    let leader = cluster.wait_leader(LEADER_TIMEOUT);
    Some((serial, cluster, leader))
}

#[test]
fn a_follower_with_a_full_disk_fails_stop_and_recovers_after_a_restart() {
    let Some((_serial, mut cluster, leader)) = three_nodes_as_root() else { return };
    let follower = (0..3).find(|i| cluster.nodes[*i].id != leader).unwrap();
    let tmpfs = move_onto_tmpfs(&mut cluster, follower);
    cluster.wait_leader(LEADER_TIMEOUT);
    disk_full_fails_stop_and_recovers(&mut cluster, follower, &tmpfs);
}

#[test]
fn a_leader_with_a_full_disk_fails_stop_and_the_others_take_over() {
    let Some((_serial, mut cluster, leader)) = three_nodes_as_root() else { return };
    let index = cluster.index_of(leader);
    let tmpfs = move_onto_tmpfs(&mut cluster, index);
    // It comes back as a follower; hand it the leadership again.
    cluster.wait_for(CONDITION_TIMEOUT, "the moved node to be a caught-up voter", |c| c.status(index).is_some());
    cluster.wait_for(CONDITION_TIMEOUT, "the moved node to lead again", |c| {
        let output = c.cli(&["switchover", "--to", &leader.to_string()], &[]);
        output.status.success() || c.leader_of(index) == Some(leader)
    });
    cluster.wait_for(CONDITION_TIMEOUT, "everyone to agree it leads", |c| c.wait_leader(LEADER_TIMEOUT) == leader);
    disk_full_fails_stop_and_recovers(&mut cluster, index, &tmpfs);
}
