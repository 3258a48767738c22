//! A full disk on a standby: reported, nothing half-applied (the tree stays exactly at the
//! generation it had), and the same apply succeeds once space is back (issue 18).
//!
//! Needs root to mount a small tmpfs; without it the test says so and passes vacuously
//! (CI runs as root).

mod common;

use std::path::Path;
use std::path::PathBuf;
use std::process::Command;

use common::*;
use haven_files::apply::apply;
use haven_files::apply::Replica;
use haven_files::fetch::StoreSource;
use haven_files::store::ChunkStore;

/// A tmpfs of a given size, unmounted on drop.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(at: &Path, size: &str) -> Option<SmallDisk> {
        std::fs::create_dir_all(at).unwrap();
        let status =
            Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(at).status();
        status.is_ok_and(|status| status.success()).then(|| SmallDisk(at.to_path_buf()))
    }

    fn resize(&self, size: &str) {
        let status = Command::new("mount").args(["-o", &format!("remount,size={size}")]).arg(&self.0).status().unwrap();
        assert!(status.success());
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_leaves_the_tree_at_its_generation_and_the_apply_resumes_when_space_is_back() {
    let mut cluster = Cluster::new();
    let place = tempfile::tempdir().unwrap();
    let Some(disk) = SmallDisk::mount(&place.path().join("disk"), "1m") else {
        eprintln!("skipped: cannot mount a tmpfs (needs root)");
        return;
    };
    let root = disk.0.join("tree");
    std::fs::create_dir(&root).unwrap();
    let store = ChunkStore::open(&place.path().join("store")).unwrap();
    let replica = Replica { root: &root, store: &store };

    write(&cluster.path("conf"), b"generation 1");
    write(&cluster.path("pkg/small"), &noise(100 * 1024, 1));
    let first = cluster.scan();
    let source = StoreSource::new(vec![(1, &cluster.primary.store)]);
    apply(replica, &first, &source, &[1], &mut ()).unwrap();
    let before = snapshot(&root);

    // Generation 2 needs about 3 MiB more than the disk has.
    write(&cluster.path("conf"), b"generation 2");
    write(&cluster.path("pkg/large-1"), &noise(1536 * 1024, 2));
    write(&cluster.path("pkg/large-2"), &noise(1536 * 1024, 3));
    std::fs::remove_file(cluster.path("pkg/small")).unwrap();
    let second = cluster.scan();
    let source = StoreSource::new(vec![(1, &cluster.primary.store)]);
    let error = apply(replica, &second, &source, &[1], &mut ()).unwrap_err();
    assert!(error.is_disk_full(), "{error}");
    assert!(error.to_string().contains("no file of this generation was put in place"), "{error}");
    assert!(snapshot(&root) == before, "the tree changed although the apply failed");
    assert!(haven_files::verify::verify(&root, &first).unwrap().is_empty());

    disk.resize("16m");
    let report = apply(replica, &second, &source, &[1], &mut ()).unwrap();
    // The chunks fetched before the disk filled are not fetched again.
    assert_eq!(report.fetched.bytes, 0);
    assert_same_tree(&cluster.primary.root, &root);
}
