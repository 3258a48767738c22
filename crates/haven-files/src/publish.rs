//! The primary's publish loop: watcher and rescans feed the pure [`PublishState`]; when
//! it says scan, the tree is scanned and the new generation handed to the caller.
//!
//! ```text
//!   TreeWatcher ──notices──▶ PublishState ──Scan(reason)──▶ Scanner::scan ──▶ Published
//!        (inotify)               (pure)        WaitUntil ──▶ block on the watcher
//! ```

use std::path::Path;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use crate::error::Error;
use crate::hash::Hash;
use crate::manifest::Manifest;
use crate::policy::Decision;
use crate::policy::Policy;
use crate::policy::PublishState;
use crate::policy::Reason;
use crate::scan::ScanReport;
use crate::scan::Scanner;
use crate::store::ChunkStore;
use crate::watch::TreeWatcher;

/// How often a waiting publisher looks at its stop flag: one wake-up a second costs
/// nothing measurable and bounds how long a shutdown waits.
pub const STOP_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Publishes generations of one directory.
pub struct Publisher {
    root: PathBuf,
    watcher: Option<TreeWatcher>,
    state: PublishState,
    scanner: Scanner,
    last_digest: Option<Hash>,
    /// Why the watcher is not running, if it is not (shown by the caller, retried at scans).
    pub watch_error: Option<String>,
}

/// One scan's result.
#[derive(Debug)]
pub struct Published {
    pub reason: Reason,
    pub report: ScanReport,
    /// Whether the tree differs from the last generation this publisher produced (or the
    /// `previous` it started from): only then is there something to commit.
    pub changed: bool,
}

impl Publisher {
    /// Starts watching `root`. `previous` is the last generation of this directory the
    /// node has (it becomes primary with the tree at that generation).
    pub fn start(root: &Path, policy: Policy, previous: Manifest) -> Publisher {
        let last_digest = Some(previous.digest());
        let mut publisher = Publisher {
            root: root.to_path_buf(),
            watcher: None,
            state: PublishState::new(policy),
            scanner: Scanner::new(root, previous),
            last_digest,
            watch_error: None,
        };
        publisher.restart_watcher();
        publisher
    }

    fn restart_watcher(&mut self) {
        match TreeWatcher::start(&self.root) {
            Ok(watcher) => {
                self.watcher = Some(watcher);
                self.watch_error = None;
            }
            Err(error) => self.watch_error = Some(error.to_string()),
        }
        self.state.watching(self.watcher.is_some());
    }

    /// New parameters from a configuration change.
    pub fn set_policy(&mut self, policy: Policy) {
        self.state.set_policy(policy);
    }

    /// Blocks until a scan is due, runs it and returns its result; `None` once `stop` is set.
    pub fn next(&mut self, store: &ChunkStore, stop: &AtomicBool) -> Result<Option<Published>, Error> {
        loop {
            if stop.load(Ordering::Relaxed) {
                return Ok(None);
            }
            let now = Instant::now();
            match self.state.decide(now) {
                Decision::Scan(reason) => return self.scan(reason, now, store).map(Some),
                Decision::WaitUntil(until) => {
                    let until = until.min(now + STOP_CHECK_INTERVAL);
                    match &self.watcher {
                        Some(watcher) => {
                            let notices = watcher.wait(until);
                            if notices.lost {
                                self.state.overflowed();
                            }
                            self.state.noticed(Instant::now(), notices.paths.iter().map(Vec::as_slice));
                        }
                        None => std::thread::sleep(until.saturating_duration_since(Instant::now())),
                    }
                }
            }
        }
    }

    fn scan(&mut self, reason: Reason, now: Instant, store: &ChunkStore) -> Result<Published, Error> {
        if self.watcher.is_none() {
            self.restart_watcher();
        }
        self.state.scanning(now);
        let report = self.scanner.scan(store)?;
        let digest = report.manifest.digest();
        let changed = self.last_digest != Some(digest);
        self.last_digest = Some(digest);
        Ok(Published { reason, report, changed })
    }
}
