//! Random sequences of tree operations on the primary, generations published at random
//! points, applies on the replica stopped at random steps (as a kill would stop them):
//! every path on the replica always holds what some committed generation has there, and
//! a full apply of the last generation makes the replica equal to it (issue 18: "random
//! sequences of tree operations and node faults end with every node's tree equal to one
//! committed generation").

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::ops::ControlFlow;
use std::os::unix::fs::symlink;

use common::*;
use haven_files::apply::apply;
use haven_files::apply::Replica;
use haven_files::apply::Step;
use haven_files::fetch::StoreSource;
use haven_files::manifest::Manifest;
use haven_files::path::TEMP_PREFIX;
use proptest::prelude::*;

/// A small universe of paths, so operations collide: a file where a directory was, a
/// rename over an existing name, a directory removed with its contents.
const PATHS: [&str; 8] = ["a", "b", "d", "d/x", "d/y", "d/e", "d/e/f", "g/h/i"];

#[derive(Debug, Clone)]
enum Op {
    Write {
        path: usize,
        seed: u64,
        large: bool,
    },
    Remove {
        path: usize,
    },
    Rename {
        from: usize,
        to: usize,
    },
    Chmod {
        path: usize,
        mode: u32,
    },
    Symlink {
        path: usize,
        target: usize,
    },
    Mkdir {
        path: usize,
    },
    Publish,
    /// Apply the last published generation on the replica, stopping after this many steps.
    Apply {
        stop_after: Option<usize>,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let path = 0..PATHS.len();
    prop_oneof![
        4 => (path.clone(), any::<u64>(), prop::bool::weighted(0.1)).prop_map(|(path, seed, large)| Op::Write { path, seed, large }),
        2 => path.clone().prop_map(|path| Op::Remove { path }),
        2 => (path.clone(), path.clone()).prop_map(|(from, to)| Op::Rename { from, to }),
        1 => (path.clone(), prop::sample::select(vec![0o644u32, 0o600, 0o755, 0o500])).prop_map(|(path, mode)| Op::Chmod { path, mode }),
        1 => (path.clone(), path.clone()).prop_map(|(path, target)| Op::Symlink { path, target }),
        1 => path.prop_map(|path| Op::Mkdir { path }),
        2 => Just(Op::Publish),
        2 => prop::option::of(0..40usize).prop_map(|stop_after| Op::Apply { stop_after }),
    ]
}

/// Carries out one operation on the primary; operations that make no sense in the
/// current tree (removing what is not there, writing under a file) simply fail.
fn perform(cluster: &Cluster, op: &Op) {
    let at = |index: usize| cluster.path(PATHS[index]);
    let _ = match op {
        Op::Write { path, seed, large } => {
            let len = if *large { 300 * 1024 } else { (*seed % 5000) as usize };
            let place = at(*path);
            place.parent().map(fs::create_dir_all).transpose().and_then(|_| fs::write(&place, noise(len, *seed)))
        }
        Op::Remove { path } => match fs::symlink_metadata(at(*path)) {
            Ok(meta) if meta.is_dir() => fs::remove_dir_all(at(*path)),
            _ => fs::remove_file(at(*path)),
        },
        Op::Rename { from, to } => fs::rename(at(*from), at(*to)),
        Op::Chmod { path, mode } => match fs::symlink_metadata(at(*path)) {
            // Directories stay searchable by their owner, so the test can walk them.
            Ok(meta) if meta.is_dir() => {
                fs::set_permissions(at(*path), std::os::unix::fs::PermissionsExt::from_mode(mode | 0o700))
            }
            Ok(meta) if meta.is_file() => {
                fs::set_permissions(at(*path), std::os::unix::fs::PermissionsExt::from_mode(*mode))
            }
            _ => Ok(()),
        },
        Op::Symlink { path, target } => symlink(PATHS[*target], at(*path)),
        Op::Mkdir { path } => fs::create_dir_all(at(*path)),
        Op::Publish | Op::Apply { .. } => Ok(()),
    };
}

fn run(ops: Vec<Op>) {
    let mut cluster = Cluster::new();
    let mut committed: Vec<(Manifest, BTreeMap<Vec<u8>, Node>)> = Vec::new();
    for op in &ops {
        perform(&cluster, op);
        match op {
            Op::Publish => {
                let manifest = cluster.scan();
                committed.push((manifest, snapshot(&cluster.primary.root)));
            }
            Op::Apply { stop_after } => {
                let Some((manifest, tree)) = committed.last() else { continue };
                let source = StoreSource::new(vec![(1, &cluster.primary.store)]);
                let replica = Replica { root: &cluster.replica.root, store: &cluster.replica.store };
                let mut steps = 0;
                let mut stop = |_: Step<'_>| {
                    steps += 1;
                    if stop_after.is_some_and(|limit| steps > limit) {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    }
                };
                match apply(replica, manifest, &source, &[1], &mut stop) {
                    Ok(_) => {
                        assert!(snapshot(&cluster.replica.root) == *tree, "a full apply did not reach its generation")
                    }
                    Err(haven_files::error::Error::Cancelled) => {}
                    Err(other) => panic!("apply failed: {other}"),
                }
                every_path_is_from_a_committed_generation(&snapshot(&cluster.replica.root), &committed);
            }
            _ => {}
        }
    }
    // The end: publish what the primary has, apply it fully.
    let (manifest, _) = cluster.replicate();
    assert!(haven_files::verify::verify(&cluster.replica.root, &manifest).unwrap().is_empty());
}

fn every_path_is_from_a_committed_generation(
    tree: &BTreeMap<Vec<u8>, Node>,
    committed: &[(Manifest, BTreeMap<Vec<u8>, Node>)],
) {
    for (path, node) in tree {
        if path.rsplit(|b| *b == b'/').next().unwrap().starts_with(TEMP_PREFIX) {
            continue;
        }
        let known = committed.iter().any(|(_, generation)| match (node, generation.get(path)) {
            (Node::Dir { .. }, Some(Node::Dir { .. })) => true,
            (_, Some(other)) => other == node,
            _ => false,
        });
        assert!(known, "{} is {}, in no committed generation", String::from_utf8_lossy(path), node.short());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn random_operations_and_stopped_applies_end_in_one_committed_generation(ops in prop::collection::vec(op(), 1..30)) {
        run(ops);
    }
}
