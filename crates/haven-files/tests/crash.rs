//! An apply stopped at any step (as kill -9 would stop it) leaves every path either as it
//! was or as the target has it, never a torn or partial file under its name; applying
//! again converges to the target (issue 18: "no standby has a torn or partial file").

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::ops::ControlFlow;
use std::os::unix::fs::symlink;

use common::*;
use haven_files::apply::apply;
use haven_files::apply::Replica;
use haven_files::apply::Step;
use haven_files::error::Error;
use haven_files::fetch::StoreSource;
use haven_files::path::TEMP_PREFIX;

#[test]
fn an_apply_stopped_at_any_step_leaves_whole_files_and_applying_again_converges() {
    let mut cluster = Cluster::new();
    let root = cluster.primary.root.clone();
    // Generation 1.
    write(&root.join("big"), &noise(1024 * 1024, 1));
    write(&root.join("d/a"), b"old a");
    write(&root.join("d/gone"), b"deleted in generation 2");
    write(&root.join("retyped"), b"a file that becomes a directory");
    symlink("d/a", root.join("link")).unwrap();
    let (old, _) = cluster.replicate();
    let old_tree = snapshot(&cluster.replica.root);
    // Generation 2: a multi-chunk rewrite, a new file, a deletion, a type change, a link.
    write(&root.join("big"), &noise(1024 * 1024, 2));
    write(&root.join("d/a"), b"new a");
    write(&root.join("d/new"), &noise(300 * 1024, 3));
    fs::remove_file(root.join("d/gone")).unwrap();
    fs::remove_file(root.join("retyped")).unwrap();
    write(&root.join("retyped/inside"), b"now a directory");
    fs::remove_file(root.join("link")).unwrap();
    symlink("d/new", root.join("link")).unwrap();
    chmod(&root.join("d"), 0o750);
    let new = cluster.scan();
    let new_tree = snapshot(&root);

    let source = StoreSource::new(vec![(1, &cluster.primary.store)]);
    let replica = Replica { root: &cluster.replica.root, store: &cluster.replica.store };
    let mut stops = 0;
    for stop_at in 0.. {
        // Back to generation 1 (itself an apply from whatever state the last stop left),
        // with an empty store so the fetch steps are exercised every time.
        apply(replica, &old, &source, &[1], &mut ()).unwrap();
        assert!(snapshot(&cluster.replica.root) == old_tree, "not generation 1 again");
        cluster.replica.store.retain(&Default::default()).unwrap();
        let mut steps = 0;
        let mut stop = |_: Step<'_>| {
            steps += 1;
            if steps > stop_at {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        };
        match apply(replica, &new, &source, &[1], &mut stop) {
            Err(Error::Cancelled) => stops += 1,
            Ok(_) => break,
            Err(other) => panic!("stop after {stop_at} steps: {other}"),
        }
        check_each_path_is_old_or_new(&snapshot(&cluster.replica.root), &old_tree, &new_tree, stop_at);
        apply(replica, &new, &source, &[1], &mut ()).unwrap();
        assert!(
            snapshot(&cluster.replica.root) == new_tree,
            "not the target after a stop at step {stop_at} and a full apply"
        );
        assert!(haven_files::verify::verify(&cluster.replica.root, &new).unwrap().is_empty());
    }
    // Fetches (~20 chunks), writes, commits and deletions: every one was a stop point.
    assert!(stops > 25, "only {stops} stop points");
}

/// Every non-temporary path holds exactly what one of the generations has there.
fn check_each_path_is_old_or_new(
    tree: &BTreeMap<Vec<u8>, Node>,
    old: &BTreeMap<Vec<u8>, Node>,
    new: &BTreeMap<Vec<u8>, Node>,
    stop_at: usize,
) {
    for (path, node) in tree {
        let name = path.rsplit(|b| *b == b'/').next().unwrap();
        if name.starts_with(TEMP_PREFIX) {
            continue;
        }
        // Directories are created early with owner-only mode and get their mode at the
        // end; a file is what matters for torn content.
        let matches = |other: Option<&Node>| match (node, other) {
            (Node::Dir { .. }, Some(Node::Dir { .. })) => true,
            (_, Some(other)) => other == node,
            (_, None) => false,
        };
        assert!(
            matches(old.get(path)) || matches(new.get(path)),
            "stop at step {stop_at}: {} is {}, in neither generation",
            String::from_utf8_lossy(path),
            node.short()
        );
    }
}
