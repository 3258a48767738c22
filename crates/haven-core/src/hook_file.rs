//! Which file a node may run as its HA hook (`hook_script`, named by an admin).
//!
//! An admin names the hook; the node runs it as its own user. Without these rules an admin
//! token (or any local user who can write the file or one of its directories) makes every
//! node run whatever they like: `/bin/sh`-style programs owned by someone else, a script in a
//! world-writable directory, a symlink that later points elsewhere. So, like sshd's
//! StrictModes, every directory from `/` down to the hook and the hook itself must belong to
//! root or to the node's user and be writable by no one else, no component may be a
//! symbolic link, and the hook must be an executable regular file. The decisions are pure
//! (what `fstat` says of each component in, a reason out); `haven-server::alerts` walks the
//! path (each component opened relative to the directory checked before it) and runs the
//! very file it checked.
//!
//! ```text
//!   /  ─▶  opt  ─▶  haven  ─▶  hook.sh
//!   dir    dir      dir        regular file, some x bit
//!   each: owner root or the node's user, no group/other write, not a symlink
//! ```

/// What a path component is, from `fstat` of the component opened without following a
/// symlink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Directory,
    Regular,
    Symlink,
    /// A device, FIFO or socket.
    Other,
}

/// What the file system says about one component of a hook's path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryMeta {
    pub kind: EntryKind,
    pub owner: u32,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
}

/// Who may own a hook and its directories: root, or the user the node runs as (the
/// effective uid of the `haven` process). Anyone else could change what the node runs.
pub fn trusted_owner(owner: u32, service_user: u32) -> bool {
    owner == 0 || owner == service_user
}

/// The checks every component shares: not a symlink (a link can be pointed elsewhere after
/// the check, and a hook names its file itself), a trusted owner, no group or other write
/// bit (without exception for the sticky bit: a hook does not belong in `/tmp`).
fn check_entry(meta: EntryMeta, service_user: u32) -> Result<(), String> {
    if meta.kind == EntryKind::Symlink {
        return Err("is a symbolic link: name the file itself (symlinks are not followed)".into());
    }
    if !trusted_owner(meta.owner, service_user) {
        return Err(format!(
            "belongs to user id {}, not to root or the user the node runs as ({service_user}): `chown root` it",
            meta.owner
        ));
    }
    if meta.mode & 0o022 != 0 {
        return Err(format!("has mode {:o}, writable by group or others: `chmod go-w` it", meta.mode));
    }
    Ok(())
}

/// A directory on the way to the hook (from `/` down) is safe to look up a name in.
pub fn check_directory(meta: EntryMeta, service_user: u32) -> Result<(), String> {
    check_entry(meta, service_user)?;
    if meta.kind != EntryKind::Directory {
        return Err("is not a directory".into());
    }
    Ok(())
}

/// The hook itself may be run.
pub fn check_hook(meta: EntryMeta, service_user: u32) -> Result<(), String> {
    check_entry(meta, service_user)?;
    if meta.kind != EntryKind::Regular {
        return Err("is not a regular file".into());
    }
    if meta.mode & 0o111 == 0 {
        return Err(format!("is not executable (mode {:o}): `chmod +x` it", meta.mode));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const USER: u32 = 998;

    #[test]
    fn directories_of_root_or_the_node_user_that_only_they_can_write() {
        let good = EntryMeta { kind: EntryKind::Directory, owner: 0, mode: 0o755 };
        assert_eq!(check_directory(good, USER), Ok(()));
        assert_eq!(check_directory(EntryMeta { owner: USER, mode: 0o700, ..good }, USER), Ok(()));
        let cases = [
            (EntryMeta { owner: 1000, ..good }, "belongs to user id 1000"),
            (EntryMeta { mode: 0o775, ..good }, "writable by group or others"),
            (EntryMeta { mode: 0o757, ..good }, "writable by group or others"),
            (EntryMeta { mode: 0o1777, ..good }, "writable by group or others"),
            (EntryMeta { kind: EntryKind::Symlink, mode: 0o777, ..good }, "symbolic link"),
            (EntryMeta { kind: EntryKind::Regular, ..good }, "not a directory"),
        ];
        for (meta, expected) in cases {
            let error = check_directory(meta, USER).unwrap_err();
            assert!(error.contains(expected), "{meta:?}: {error}");
        }
    }

    #[test]
    fn hooks_are_executable_regular_files_only_their_trusted_owner_can_change() {
        let good = EntryMeta { kind: EntryKind::Regular, owner: USER, mode: 0o750 };
        assert_eq!(check_hook(good, USER), Ok(()));
        assert_eq!(check_hook(EntryMeta { owner: 0, mode: 0o755, ..good }, USER), Ok(()));
        let cases = [
            (EntryMeta { owner: 65534, ..good }, "belongs to user id 65534"),
            (EntryMeta { mode: 0o770, ..good }, "writable by group or others"),
            (EntryMeta { mode: 0o757, ..good }, "writable by group or others"),
            (EntryMeta { mode: 0o644, ..good }, "not executable"),
            (EntryMeta { kind: EntryKind::Directory, ..good }, "not a regular file"),
            (EntryMeta { kind: EntryKind::Other, ..good }, "not a regular file"),
            (EntryMeta { kind: EntryKind::Symlink, mode: 0o777, ..good }, "symbolic link"),
        ];
        for (meta, expected) in cases {
            let error = check_hook(meta, USER).unwrap_err();
            assert!(error.contains(expected), "{meta:?}: {error}");
        }
    }
}
