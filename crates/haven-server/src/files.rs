//! Files a node keeps in its data dir for operators and tools (`haven.pid`, `addr.json`),
//! and the data dir's own protection: it holds every value, the token hashes and the node's
//! private key, so no other local user may read or change anything in it.

use std::path::Path;
use std::path::PathBuf;

use anyhow::Context as _;
use serde::Deserialize;
use serde::Serialize;

/// `DATA_DIR/addr.json`: where this node listens, for tools and tests that bind port 0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddrFile {
    pub node_id: u64,
    pub client_url: String,
    pub peer_addr: String,
    pub pid: u32,
}

pub fn pid_path(data_dir: &Path) -> PathBuf {
    data_dir.join("haven.pid")
}

pub fn addr_path(data_dir: &Path) -> PathBuf {
    data_dir.join("addr.json")
}

/// Writes `contents` to `path` atomically (temp file, then rename), so a reader never sees
/// half a file.
pub fn write_atomically(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents)?;
    std::fs::rename(&tmp, path)
}

pub fn write_pid_and_addr(data_dir: &Path, addr: &AddrFile) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(addr).map_err(std::io::Error::other)?;
    write_atomically(&addr_path(data_dir), &json)?;
    write_atomically(&pid_path(data_dir), format!("{}\n", addr.pid).as_bytes())
}

/// The pid in `haven.pid` if that process is alive (it may belong to another user): the
/// node of `data_dir` runs.
pub fn running_pid(data_dir: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(pid_path(data_dir)).ok()?.trim().parse().ok()?;
    let raw = libc::pid_t::try_from(pid).ok().filter(|pid| *pid > 0)?;
    // SAFETY: signal 0 only checks that the process exists.
    let alive =
        unsafe { libc::kill(raw, 0) } == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    alive.then_some(pid)
}

pub fn remove_pid(data_dir: &Path) {
    let _ = std::fs::remove_file(pid_path(data_dir));
}

/// The file creation mask of a process that runs nodes (`haven serve`, `haven dev`): what it
/// creates is readable by its own user only (directories 0700, files 0600).
pub const PRIVATE_UMASK: libc::mode_t = 0o077;

/// Sets [`PRIVATE_UMASK`] for this process (and the children it starts).
pub fn restrict_umask() {
    // SAFETY: umask only swaps the process's creation mask; it cannot fail.
    unsafe { libc::umask(PRIVATE_UMASK) };
}

/// Entries under a data dir that [`secure_data_dir`] looks at when it tightens an old one:
/// a data dir holds a few dozen files; the bound keeps a misconfigured path (a home
/// directory) from being walked for long.
pub const DATA_DIR_ENTRIES_MAX: usize = 100_000;

/// Makes sure `data_dir` is this user's alone before anything is read or written there:
/// creates it with mode 0700 when missing; refuses to start, with the reason and what to do,
/// when it is owned by another user or writable by group or others (anyone who can write
/// there can replace the node's key or its database); and takes group and other bits off an
/// existing dir and everything under it (data dirs of earlier versions were 0755 with 0644
/// files), saying so in the log.
pub fn secure_data_dir(data_dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    use std::os::unix::fs::MetadataExt as _;
    if !data_dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(data_dir)
            .with_context(|| format!("cannot create the data dir {}", data_dir.display()))?;
    }
    let metadata = std::fs::metadata(data_dir).with_context(|| format!("cannot read {}", data_dir.display()))?;
    if !metadata.is_dir() {
        anyhow::bail!("the data dir {} is not a directory", data_dir.display());
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let user = unsafe { libc::geteuid() };
    if metadata.uid() != user {
        anyhow::bail!(
            "refusing to start: the data dir {} belongs to user id {}, not to this user ({user}); another user could \
             read every value and replace this node's key. Run haven as the dir's owner, or `chown` the dir to it",
            data_dir.display(),
            metadata.uid()
        );
    }
    let mode = metadata.mode() & 0o777;
    if mode & 0o022 != 0 {
        anyhow::bail!(
            "refusing to start: the data dir {} has mode {mode:o}, writable by group or others, who could replace this \
             node's key or database. `chmod 700 {}`",
            data_dir.display(),
            data_dir.display()
        );
    }
    if mode & 0o077 != 0 {
        let tightened = tighten(data_dir)?;
        tracing::info!(
            data_dir = %data_dir.display(),
            tightened,
            "took group and other permissions off the data dir and its files (they held mode {mode:o})"
        );
    }
    Ok(())
}

/// Takes group and other bits off `dir` and everything under it (symlinks are not
/// followed); returns how many entries changed.
fn tighten(dir: &Path) -> anyhow::Result<usize> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut changed = 0;
    let mut pending = vec![dir.to_path_buf()];
    let mut seen = 0;
    while let Some(path) = pending.pop() {
        seen += 1;
        if seen > DATA_DIR_ENTRIES_MAX {
            anyhow::bail!("more than {DATA_DIR_ENTRIES_MAX} entries under {}: is it a data dir?", dir.display());
        }
        let metadata = std::fs::symlink_metadata(&path).with_context(|| format!("cannot read {}", path.display()))?;
        if metadata.file_type().is_symlink() {
            continue;
        }
        let mode = metadata.permissions().mode();
        if mode & 0o077 != 0 {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode & !0o077))
                .with_context(|| format!("cannot restrict the permissions of {}", path.display()))?;
            changed += 1;
        }
        if metadata.is_dir() {
            for entry in std::fs::read_dir(&path).with_context(|| format!("cannot list {}", path.display()))? {
                pending.push(entry?.path());
            }
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_new_data_dir_is_private() {
        let root = tempfile::tempdir().unwrap();
        let data_dir = root.path().join("a/b/data");
        secure_data_dir(&data_dir).unwrap();
        assert_eq!(mode(&data_dir), 0o700);
    }

    /// A data dir of an earlier version (0755, files 0644) is tightened, all the way down.
    #[test]
    fn an_old_readable_data_dir_is_tightened() {
        let root = tempfile::tempdir().unwrap();
        let data_dir = root.path().join("data");
        std::fs::create_dir_all(data_dir.join("snapshots")).unwrap();
        std::fs::write(data_dir.join("raft.redb"), b"x").unwrap();
        std::fs::write(data_dir.join("snapshots/1.bin"), b"x").unwrap();
        for path in [data_dir.clone(), data_dir.join("snapshots")] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        for path in [data_dir.join("raft.redb"), data_dir.join("snapshots/1.bin")] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        secure_data_dir(&data_dir).unwrap();
        assert_eq!(mode(&data_dir), 0o700);
        assert_eq!(mode(&data_dir.join("snapshots")), 0o700);
        assert_eq!(mode(&data_dir.join("raft.redb")), 0o600);
        assert_eq!(mode(&data_dir.join("snapshots/1.bin")), 0o600);
    }

    #[test]
    fn a_writable_or_foreign_data_dir_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let data_dir = root.path().join("data");
        std::fs::create_dir(&data_dir).unwrap();
        for writable in [0o777, 0o770, 0o722] {
            std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(writable)).unwrap();
            let error = secure_data_dir(&data_dir).unwrap_err().to_string();
            assert!(error.contains("writable by group or others") && error.contains("chmod 700"), "{error}");
        }
        std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            // Root can hand the dir to another user (nobody) to show the ownership check.
            let path = std::ffi::CString::new(data_dir.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: a valid NUL-terminated path.
            assert_eq!(unsafe { libc::chown(path.as_ptr(), 65534, 65534) }, 0);
            let error = secure_data_dir(&data_dir).unwrap_err().to_string();
            assert!(error.contains("belongs to user id 65534"), "{error}");
        }
    }
}
