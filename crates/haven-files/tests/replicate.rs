//! A replica's tree equals the primary's after every kind of change (issue 18's first
//! test), content is stored once, and a second apply has nothing to do.

mod common;

use std::fs;
use std::os::unix::fs::symlink;

use common::*;
use haven_files::apply::plan;
use haven_files::apply::Replica;

#[test]
fn every_kind_of_change_reaches_the_replica() {
    let mut cluster = Cluster::new();
    let root = cluster.primary.root.clone();
    // Generation 1: nested files (one of several chunks), an empty directory, symlinks
    // (relative, absolute, dangling: stored as links, never followed), names that are not
    // UTF-8 or hold a newline, an executable, a read-only directory.
    write(&root.join("etc/app.conf"), b"port = 8080\n");
    write(&root.join("dists/pkg-1.0.tar"), &noise(3 * 1024 * 1024, 1));
    write(&root.join("dists/small"), b"x");
    write(&root.join("dists/empty-file"), b"");
    fs::create_dir_all(root.join("var/empty")).unwrap();
    symlink("pkg-1.0.tar", root.join("dists/latest")).unwrap();
    symlink("/etc/passwd", root.join("etc/absolute")).unwrap();
    symlink("../nowhere", root.join("dangling")).unwrap();
    write(&bytes_name(&root, b"latin1-\xe9t\xe9"), b"not utf-8");
    write(&bytes_name(&root, b"two\nlines"), b"newline in the name");
    write(&root.join("bin/run"), b"#!/bin/sh\n");
    chmod(&root.join("bin/run"), 0o755);
    write(&root.join("ro/inside"), b"read-only dir");
    chmod(&root.join("ro"), 0o555);
    let (first, report) = cluster.replicate();
    assert!(report.fetched.bytes > 3 * 1024 * 1024);

    // Generation 2: modify, delete, rename, chmod, retarget a link, change types both
    // ways, remove the empty directory, add one.
    write(&root.join("etc/app.conf"), b"port = 9090\n");
    fs::remove_file(root.join("dists/small")).unwrap();
    fs::rename(root.join("dists/pkg-1.0.tar"), root.join("dists/pkg-1.1.tar")).unwrap();
    fs::remove_file(root.join("dists/latest")).unwrap();
    symlink("pkg-1.1.tar", root.join("dists/latest")).unwrap();
    chmod(&root.join("bin/run"), 0o700);
    chmod(&root.join("ro"), 0o755);
    fs::remove_file(root.join("dangling")).unwrap();
    write(&root.join("dangling/now-a-dir"), b"file became a directory");
    fs::remove_dir_all(root.join("etc")).unwrap();
    write(&root.join("etc"), b"directory became a file");
    fs::remove_dir(root.join("var/empty")).unwrap();
    fs::create_dir(root.join("var/new-empty")).unwrap();
    let (second, report) = cluster.replicate();
    assert_ne!(first.digest(), second.digest());
    // A rename moves content that the replica already has: nothing of it is fetched again.
    assert!(report.fetched.bytes < 1024, "fetched {} bytes after a rename", report.fetched.bytes);

    // Nothing changed: the same digest, and nothing to do on the replica.
    let (third, _) = cluster.replicate();
    assert_eq!(third.digest(), second.digest());
    let replica = Replica { root: &cluster.replica.root, store: &cluster.replica.store };
    assert!(plan(replica, &third).unwrap().is_empty());
}

#[test]
fn content_shared_by_many_paths_is_stored_once() {
    let mut cluster = Cluster::new();
    let root = cluster.primary.root.clone();
    let content = noise(500 * 1024, 7);
    for name in ["a", "b", "c/d", "c/e"] {
        write(&root.join(name), &content);
    }
    let (manifest, report) = cluster.replicate();
    let chunks = manifest.chunks();
    let stored =
        |store: &haven_files::store::ChunkStore| chunks.iter().filter(|h| store.chunk_file(h).exists()).count();
    assert_eq!(stored(&cluster.replica.store), chunks.len());
    // Four paths, one content: the replica fetched each chunk once.
    assert_eq!(report.fetched.bytes, content.len() as u64);
    assert_eq!(report.bytes_written, 4 * content.len() as u64);
}

#[test]
fn a_changed_large_file_transfers_only_its_changed_chunks() {
    let mut cluster = Cluster::new();
    let root = cluster.primary.root.clone();
    let mut content = noise(8 * 1024 * 1024, 3);
    write(&root.join("big"), &content);
    cluster.replicate();
    // Overwrite 1% in place, then insert 1 KiB elsewhere (shifting everything after it).
    let len = content.len();
    content[len / 2..len / 2 + len / 100].copy_from_slice(&noise(len / 100, 4));
    content.splice(len / 5..len / 5, noise(1024, 5));
    write(&root.join("big"), &content);
    let (_, report) = cluster.replicate();
    assert!(
        report.fetched.bytes < (len / 100 + 1024 + 4 * 256 * 1024) as u64,
        "fetched {} bytes for a 1% change of {len}",
        report.fetched.bytes
    );
}
