//! What a scan does with what it cannot (or must not) replicate: files that keep changing,
//! files it may not read, names and kinds it refuses. Each is reported with its path, and
//! nothing that was replicated before is dropped because of it (issue 18, "Limits and
//! bad input").

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use common::*;
use haven_files::limits::DEPTH_MAX;

#[test]
fn a_file_that_keeps_changing_is_left_for_the_next_generation() {
    let mut cluster = Cluster::new();
    // Large enough that each read takes long enough for the writer to get a turn even on
    // a loaded machine (the writer appends a byte per system call, without pause).
    write(&cluster.path("busy.log"), &noise(32 * 1024 * 1024, 1));
    write(&cluster.path("quiet"), b"quiet");
    let first = cluster.scan();
    let stop = Arc::new(AtomicBool::new(false));
    let writing = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, writing, path) = (stop.clone(), writing.clone(), cluster.path("busy.log"));
        std::thread::spawn(move || {
            let mut file = fs::OpenOptions::new().append(true).open(path).unwrap();
            while !stop.load(Ordering::Relaxed) {
                file.write_all(b"x").unwrap();
                writing.store(true, Ordering::Relaxed);
            }
        })
    };
    while !writing.load(Ordering::Relaxed) {
        std::thread::yield_now();
    }
    let report = cluster.scanner.scan(&cluster.primary.store).unwrap();
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert!(report.problems[0].contains("busy.log: changed while being read"), "{:?}", report.problems);
    // The generation keeps the file as it was, so a standby does not lose it.
    assert_eq!(report.manifest.get(b"busy.log"), first.get(b"busy.log"));
    // Once it is quiet, the next scan takes it.
    let settled = cluster.scan();
    assert_ne!(settled.get(b"busy.log"), first.get(b"busy.log"));
}

#[test]
fn unreadable_files_and_directories_are_reported_and_keep_their_previous_generation() {
    let mut cluster = Cluster::new();
    write(&cluster.path("secret"), b"version 1");
    write(&cluster.path("closed/inside"), b"version 1");
    write(&cluster.path("open"), b"version 1");
    let first = cluster.scan();
    write(&cluster.path("secret"), b"version 2");
    chmod(&cluster.path("secret"), 0o000);
    chmod(&cluster.path("closed"), 0o000);
    write(&cluster.path("open"), b"version 2");
    let report = as_unprivileged_user(&mut cluster, |cluster| cluster.scanner.scan(&cluster.primary.store).unwrap());
    chmod(&cluster.path("closed"), 0o755);
    assert_eq!(report.problems.len(), 2, "{:?}", report.problems);
    assert!(report.problems.iter().any(|p| p.contains("/secret: Permission denied")), "{:?}", report.problems);
    assert!(report.problems.iter().any(|p| p.contains("/closed: Permission denied")), "{:?}", report.problems);
    assert_eq!(report.manifest.get(b"secret"), first.get(b"secret"));
    assert_eq!(report.manifest.get(b"closed/inside"), first.get(b"closed/inside"));
    assert_ne!(report.manifest.get(b"open"), first.get(b"open"));
}

/// Runs `scan` with file-system permissions of an ordinary user (as root, permission bits
/// do not stop reads): `setfsuid` changes only this thread's file-system identity.
fn as_unprivileged_user<T>(cluster: &mut Cluster, scan: impl FnOnce(&mut Cluster) -> T) -> T {
    // SAFETY: geteuid and setfsuid have no memory-safety preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return scan(cluster);
    }
    // The way to the tree must be open to that user (temporary directories are 0700), and
    // the store writable (it belongs to the service user, as the tree does).
    let mut dir = cluster.primary.root.clone();
    while dir.pop() {
        if dir.starts_with(std::env::temp_dir()) && dir != std::env::temp_dir() {
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
    let store = cluster.primary.root.parent().unwrap().join("store");
    let status = std::process::Command::new("chmod").arg("-R").arg("a+rwX").arg(&store).status().unwrap();
    assert!(status.success());
    const NOBODY: libc::uid_t = 65534;
    // SAFETY: as above; the previous identity (root) is restored before returning.
    unsafe { libc::setfsuid(NOBODY) };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| scan(&mut *cluster)));
    unsafe { libc::setfsuid(0) };
    result.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

#[test]
fn names_and_kinds_that_cannot_be_replicated_are_reported_and_the_rest_published() {
    let mut cluster = Cluster::new();
    write(&cluster.path("normal"), b"replicated");
    let deep: Vec<String> = (0..=DEPTH_MAX).map(|n| format!("d{n}")).collect();
    write(&cluster.path(&deep.join("/")), b"too deep");
    write(&cluster.path(".haven-tmp.mine"), b"reserved name");
    let fifo = std::ffi::CString::new(cluster.path("pipe").into_os_string().into_encoded_bytes()).unwrap();
    // SAFETY: mkfifo reads a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    let report = cluster.scanner.scan(&cluster.primary.store).unwrap();
    let problems = report.problems.join("\n");
    assert!(problems.contains(&format!("nested deeper than {DEPTH_MAX} levels")), "{problems}");
    assert!(problems.contains(".haven-tmp.mine: name reserved"), "{problems}");
    assert!(problems.contains("pipe: not a file, directory or symlink"), "{problems}");
    assert_eq!(report.problems.len(), 3, "{problems}");
    assert!(report.manifest.get(b"normal").is_some());
    assert!(report.manifest.get(b"pipe").is_none());
    // The directories above the refused path are still replicated, down to the limit.
    assert!(report.manifest.get(deep[..DEPTH_MAX].join("/").as_bytes()).is_some());
}
