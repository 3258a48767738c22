//! File-system notifications for the primary's tree (`notify`: inotify on Linux), turned
//! into what [`crate::policy::PublishState`] needs: changed paths and "notifications were
//! lost". The IO shell of the publish loop; the decisions are in `policy`.
//!
//! Notifications may miss the first files created in a brand-new directory (before its
//! watch is added: inotify's known race). The directory's creation is noticed, so a scan
//! follows within the interval and, being a full scan, finds them: only the change count
//! may fall short.
//!
//! Reads (`open` without a write) are ignored, so serving packages from the directory, or
//! scanning it, does not look like a change.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Instant;

use notify::event::AccessKind;
use notify::EventKind;
use notify::RecursiveMode;
use notify::Watcher;

use crate::error::Error;
use crate::path::show_path;

/// A recursive watch on one tree.
pub struct TreeWatcher {
    root: PathBuf,
    events: mpsc::Receiver<notify::Result<notify::Event>>,
    // Kept alive for as long as the watch should last.
    _watcher: notify::RecommendedWatcher,
}

/// What was noticed in one wait.
#[derive(Debug, Default)]
pub struct Notices {
    /// Changed paths relative to the root (may repeat).
    pub paths: Vec<Vec<u8>>,
    /// Notifications were lost (queue overflow, a watch that could not be added): only a
    /// full scan can tell what changed.
    pub lost: bool,
}

impl TreeWatcher {
    /// Starts watching `root` and everything below it. Fails when the system cannot watch
    /// it (typically the inotify watch limit, `fs.inotify.max_user_watches`); the caller
    /// then rescans every interval instead.
    pub fn start(root: &Path) -> Result<TreeWatcher, Error> {
        let (sender, events) = mpsc::channel();
        let fail = |error: notify::Error| Error::Unsafe {
            path: show_path(root),
            what: format!("cannot be watched ({error}); rescanning every interval instead"),
        };
        let mut watcher = notify::recommended_watcher(sender).map_err(fail)?;
        watcher.watch(root, RecursiveMode::Recursive).map_err(fail)?;
        Ok(TreeWatcher { root: root.to_path_buf(), events, _watcher: watcher })
    }

    /// Waits until something is noticed or `until` passes, then takes everything pending.
    pub fn wait(&self, until: Instant) -> Notices {
        let mut notices = Notices::default();
        let timeout = until.saturating_duration_since(Instant::now());
        match self.events.recv_timeout(timeout) {
            Ok(event) => self.take(event, &mut notices),
            Err(mpsc::RecvTimeoutError::Timeout) => return notices,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                notices.lost = true;
                return notices;
            }
        }
        while let Ok(event) = self.events.try_recv() {
            self.take(event, &mut notices);
        }
        notices
    }

    fn take(&self, event: notify::Result<notify::Event>, notices: &mut Notices) {
        let event = match event {
            Ok(event) => event,
            Err(_) => {
                notices.lost = true;
                return;
            }
        };
        if event.need_rescan() {
            notices.lost = true;
        }
        let is_read = matches!(
            event.kind,
            EventKind::Access(
                AccessKind::Open(_) | AccessKind::Read | AccessKind::Close(notify::event::AccessMode::Read)
            )
        );
        if is_read {
            return;
        }
        for path in event.paths {
            if let Ok(relative) = path.strip_prefix(&self.root) {
                notices.paths.push(relative.as_os_str().as_bytes().to_vec());
            }
        }
    }
}
