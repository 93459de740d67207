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
    /// what changed before it began raised no event. The watch walks the
    /// tree (a whole disk, maybe): on a thread where blocking is allowed.
    pub async fn restart(&mut self, rules: Arc<IgnoreRules>, status: &Mutex<PairStatus>) -> bool {
        if !self.waiting_for_root || !self.root.is_dir() {
            return false;
        }
        self.waiting_for_root = false;
        let (root, sink) = (self.root.clone(), self.sink.clone());
        match tokio::task::spawn_blocking(move || watch::watch(&root, rules, sink)).await {
            Ok(started) => self.install(started, status),
            Err(e) => {
                tracing::warn!(pair = %self.pair, error = %e, "the watch's start did not finish");
                self.waiting_for_root = true;
                false
            }
        }
    }

    fn try_start(&mut self, rules: Arc<IgnoreRules>, status: &Mutex<PairStatus>) -> bool {
        if !self.root.exists() {
            self.waiting_for_root = true;
            status.locked().watcher = self.missing();
            return false;
        }
        self.waiting_for_root = false;
        let started = watch::watch(&self.root, rules, self.sink.clone());
        self.install(started, status)
    }

    /// Keeps a watch that started, or says in `status` why it did not.
    fn install(
        &mut self,
        started: Result<Watcher, watch::WatchError>,
        status: &Mutex<PairStatus>,
    ) -> bool {
        match started {
            Ok(watcher) => {
                self.view = Some(watcher.view());
                *self.watcher.locked() = Some(watcher);
                // Only this watch's own sentence goes: another problem
                // (the remote watch's) is cleared by a whole run.
                let mut status = status.locked();
                if status.watcher == self.missing() {
                    status.watcher = WATCH_OK.to_owned();
                }
                true
            }
            Err(e) => {
                tracing::warn!(pair = %self.pair, error = %e, "cannot watch; relying on periodic scans");
                status.locked().watcher = format!("{e}; changes are found by periodic scans only");
                false
            }
        }
    }

    /// What status says while the folder is not there.
    fn missing(&self) -> String {
        format!(
            "{} does not exist yet; watching starts once it does",
            self.root.display()
        )
    }
}
