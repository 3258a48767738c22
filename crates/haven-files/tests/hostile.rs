//! Nothing is written or removed through a symlink, whatever the replica's tree holds
//! and whatever the manifest asks (issue 18: "a path escaping the directory through `..`
//! or a symlink ... (refused)"). The manifest's own rules are tested in `manifest.rs`.

mod common;

use std::fs;
use std::os::unix::fs::symlink;

use common::*;

#[test]
fn a_local_symlink_where_the_generation_has_a_directory_is_replaced_not_followed() {
    let mut cluster = Cluster::new();
    let outside = tempfile::tempdir().unwrap();
    write(&outside.path().join("keep"), b"outside the tree");
    // The replica has `sub` as a symlink out of the tree; the generation has a directory.
    symlink(outside.path(), cluster.replica.root.join("sub")).unwrap();
    write(&cluster.path("sub/keep"), b"replicated");
    write(&cluster.path("sub/new"), b"replicated");
    cluster.replicate();
    assert_eq!(fs::read(outside.path().join("keep")).unwrap(), b"outside the tree");
    assert!(!outside.path().join("new").exists());
    assert!(fs::symlink_metadata(cluster.replica.root.join("sub")).unwrap().is_dir());
}

#[test]
fn a_directory_that_becomes_a_symlink_does_not_take_the_link_target_with_it() {
    let mut cluster = Cluster::new();
    let outside = tempfile::tempdir().unwrap();
    write(&outside.path().join("f"), b"outside the tree");
    write(&outside.path().join("g/h"), b"outside the tree");
    // Generation 1: `a` is a directory holding `f` and `g/h`, the same names as outside.
    write(&cluster.path("a/f"), b"inside");
    write(&cluster.path("a/g/h"), b"inside");
    cluster.replicate();
    // Generation 2: `a` is a symlink to the outside directory. Deleting the old `a/f` and
    // `a/g/h` after `a` became a link must not delete the outside files.
    fs::remove_dir_all(cluster.path("a")).unwrap();
    symlink(outside.path(), cluster.path("a")).unwrap();
    cluster.replicate();
    assert_eq!(fs::read(outside.path().join("f")).unwrap(), b"outside the tree");
    assert_eq!(fs::read(outside.path().join("g/h")).unwrap(), b"outside the tree");
}

#[test]
fn a_manifest_entry_under_a_symlink_or_with_dot_dot_is_refused_before_anything_is_written() {
    // Bytes as a hostile peer would send them: a mirror of the manifest's encoding.
    #[derive(serde::Serialize)]
    struct RawManifest {
        format: u8,
        entries: Vec<(Vec<u8>, RawKind)>,
    }
    #[derive(serde::Serialize)]
    enum RawKind {
        Dir {
            mode: u32,
        },
        #[allow(dead_code)]
        File,
        Symlink {
            target: Vec<u8>,
        },
    }
    let encode = |entries: Vec<(&[u8], RawKind)>| {
        let entries = entries.into_iter().map(|(path, kind)| (path.to_vec(), kind)).collect();
        haven_core::codec::encode(&RawManifest { format: 1, entries }).unwrap()
    };
    let through_link = encode(vec![
        (b"l", RawKind::Symlink { target: b"/etc".to_vec() }),
        (b"l/cron.d", RawKind::Dir { mode: 0o755 }),
    ]);
    let error = haven_files::manifest::Manifest::decode(&through_link).unwrap_err();
    assert!(error.to_string().contains("l/cron.d: its parent is not a directory"), "{error}");
    let dot_dot = encode(vec![(b"..", RawKind::Dir { mode: 0o755 })]);
    let error = haven_files::manifest::Manifest::decode(&dot_dot).unwrap_err();
    assert!(error.to_string().contains("`..`"), "{error}");
    let absolute = encode(vec![(b"/etc", RawKind::Dir { mode: 0o755 })]);
    let error = haven_files::manifest::Manifest::decode(&absolute).unwrap_err();
    assert!(error.to_string().contains("/etc: absolute path"), "{error}");
}
