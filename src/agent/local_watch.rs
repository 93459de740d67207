//! The watch on a pair's local folder, owned by the pair's scheduler:
//! started with the pair, or, where the folder was not there at start-up
//! (a disk mounted after login), once it is.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::pair::{PairStatus, WATCH_OK};
use crate::locks::LockExt;
use crate::tracker::ignore::IgnoreRules;
use crate::tracker::watch::{self, WatchEvent, WatchView, Watcher};

/// The watcher itself, shared with the pair's handle, whose status reads
/// its health.
pub type SharedWatcher = Arc<Mutex<Option<Watcher>>>;

pub struct LocalWatch {
    pair: String,
    root: PathBuf,
    sink: mpsc::UnboundedSender<WatchEvent>,
    watcher: SharedWatcher,
    view: Option<WatchView>,
    /// The folder was not there: the watch starts once it is.
    waiting_for_root: bool,
}

impl LocalWatch {
    /// Watches `root` with `rules`, its events going to `sink`; what keeps
    /// it from watching is said in `status`.
    pub fn start(
        pair: &str,
        root: PathBuf,
        rules: Arc<IgnoreRules>,
        sink: mpsc::UnboundedSender<WatchEvent>,
        status: &Mutex<PairStatus>,
    ) -> LocalWatch {
        let mut local = LocalWatch {
            pair: pair.to_owned(),
            root,
            sink,
            watcher: Arc::default(),
            view: None,
            waiting_for_root: false,
        };
        local.try_start(rules, status);
        local
    }

    pub fn shared(&self) -> SharedWatcher {
        self.watcher.clone()
    }

    /// The running watch, if there is one.
    pub fn view(&self) -> Option<&WatchView> {
        self.view.as_ref()
    }

    /// Starts the watch of a folder that was not there before and is now
    /// (after a sync); true when it started, so that a listing follows:
    /// what changed before it began raised no event.
    pub fn restart(&mut self, rules: Arc<IgnoreRules>, status: &Mutex<PairStatus>) -> bool {
        self.waiting_for_root && self.root.is_dir() && self.try_start(rules, status)
    }

    fn try_start(&mut self, rules: Arc<IgnoreRules>, status: &Mutex<PairStatus>) -> bool {
        if !self.root.exists() {
            self.waiting_for_root = true;
            status.locked().watcher = format!(
                "{} does not exist yet; watching starts once it does",
                self.root.display()
            );
            return false;
        }
        self.waiting_for_root = false;
        match watch::watch(&self.root, rules, self.sink.clone()) {
            Ok(watcher) => {
                self.view = Some(watcher.view());
                *self.watcher.locked() = Some(watcher);
                status.locked().watcher = WATCH_OK.to_owned();
                true
            }
            Err(e) => {
                tracing::warn!(pair = %self.pair, error = %e, "cannot watch; relying on periodic scans");
                status.locked().watcher = format!("{e}; changes are found by periodic scans only");
                false
            }
        }
    }
}
