//! Watching a remote that is a folder on this machine (`file://`) instead
//! of listing it at every poll, where a watch sees every writer.
//!
//! An idle agent's only work was the remote poll: a full listing of every
//! pair's remote each `remote_poll_secs`. A remote whose files sit in a
//! local folder (`Replica::watch_root`) is watched like the local folder,
//! by `tracker::watch`, and its events are changed paths as the local
//! side's are, so the poll has nothing left to ask. Polling comes back
//! whenever the watch cannot be trusted to see everything: it could not
//! be set up (the inotify limit, a folder not there yet), the limit was
//! reached later, a folder could not be watched, or the remote root went
//! away. A folder on a network or FUSE file system is never watched: the
//! watch would show this machine's writes and none of the others'.
//! Watches can still miss what they should see (a queue overflow is
//! reported, a file system not known to be remote may still be one): the
//! pair's jittered safety scan, a full listing of both sides, stays in
//! force for that.
//!
//! The agent's own writes into the remote folder show up as events too.
//! They lead to one listing of the paths written, which finds them synced
//! and writes nothing, so they cannot feed each other. Prism Sync's own
//! files there (`.prism-sync/`: the lease, records, trash; temporary
//! names) are reserved by the ignore rules and raise no events at all.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::mpsc::UnboundedSender;

use crate::tracker::ignore::IgnoreRules;
use crate::tracker::watch::{self, FolderIdentity, WatchError, WatchEvent, WatchView, Watcher};

/// The watch on one pair's remote folder, and whether it replaces polls.
pub struct RemoteWatch {
    pair: String,
    root: PathBuf,
    ignore: Arc<IgnoreRules>,
    sink: UnboundedSender<WatchEvent>,
    watcher: Option<Watcher>,
    /// The folder the watch started on (see [`RemoteWatch::still_watching`]).
    watched: Option<FolderIdentity>,
    /// Starting may be tried again: the last attempt did not run into a
    /// system limit, which another walk of the tree would only hit again.
    may_retry: bool,
    /// A failure was logged: polling instead is said once, not per attempt.
    logged: bool,
}

impl RemoteWatch {
    /// A watch on `root`, started at once (walking the tree: call it where
    /// blocking is allowed). A watch that cannot start is logged and the
    /// remote polled as before.
    pub fn start(
        pair: &str,
        root: PathBuf,
        ignore: Arc<IgnoreRules>,
        sink: UnboundedSender<WatchEvent>,
    ) -> RemoteWatch {
        let mut remote_watch = RemoteWatch {
            pair: pair.to_owned(),
            root,
            ignore,
            sink,
            watcher: None,
            watched: None,
            may_retry: true,
            logged: false,
        };
        remote_watch.try_start();
        remote_watch
    }

    /// Whether the remote must still be polled: nothing watches it, or the
    /// watch misses folders.
    pub fn needs_polls(&self) -> bool {
        self.watcher
            .as_ref()
            .is_none_or(|watcher| !watcher.health().is_ok())
    }

    /// Whether no folder the watch should see is left unwatched. A remote
    /// that is not watched at all (polled) has none.
    pub fn misses_no_folder(&self) -> bool {
        self.watcher
            .as_ref()
            .is_none_or(|watcher| watcher.health().is_ok())
    }

    /// Whether the watch still watches the folder the root names: a path
    /// that names another folder now (the disk unmounted and mounted
    /// again, a parent folder replaced, a file system mounted over it) has
    /// a dead watch that inotify may never report. Such a watch is
    /// [`RemoteWatch::lost`], as is one that saw its folder go (a folder
    /// made in its place may have the old inode number). A look that
    /// failed (an I/O error, a stale handle) is not a loss. Asked at every
    /// poll that the watch spares: one `statx`.
    pub fn still_watching(&mut self) -> bool {
        let Some(watcher) = &self.watcher else {
            return true;
        };
        if !watcher.health().root_gone && !watch::folder_lost(&self.root, self.watched) {
            return true;
        }
        self.lost();
        false
    }

    /// The remote root went away: its watch is dead. Polls take over until
    /// [`RemoteWatch::restart`] succeeds.
    fn lost(&mut self) {
        if self.watcher.take().is_some() {
            // Said here; a failed restart while it stays away says no more.
            self.logged = true;
            tracing::warn!(pair = %self.pair, root = %self.root.display(), "the remote folder went away; polling it until it can be watched again");
        }
    }

    /// The ignore rules changed: the watch (and any watch started later)
    /// follows them. Returns the running watch's handle, to be told
    /// ([`WatchView::follow_rules`]) where blocking is allowed.
    pub fn set_rules(&mut self, rules: Arc<IgnoreRules>) -> Option<WatchView> {
        self.ignore = rules;
        self.watcher.as_ref().map(Watcher::view)
    }

    /// Starts the watch again if it is not running and may be retried
    /// (after a sync: the run may have made the root). True when it started
    /// now, so that a listing must follow: what changed before the watch
    /// began raised no event. The start walks the tree (a whole disk,
    /// maybe): on a thread where blocking is allowed.
    pub async fn restart(&mut self) -> bool {
        if self.watcher.is_some() || !self.may_retry {
            return false;
        }
        let (root, ignore, sink) = (self.root.clone(), self.ignore.clone(), self.sink.clone());
        match tokio::task::spawn_blocking(move || Attempt::make(&root, ignore, sink)).await {
            Ok(attempt) => self.take(attempt),
            Err(e) => {
                tracing::warn!(pair = %self.pair, error = %e, "the remote watch's start did not finish");
                false
            }
        }
    }

    fn try_start(&mut self) -> bool {
        let attempt = Attempt::make(&self.root, self.ignore.clone(), self.sink.clone());
        self.take(attempt)
    }

    /// Takes in what an attempt to start gave; true when the watch runs.
    fn take(&mut self, attempt: Attempt) -> bool {
        match attempt {
            Attempt::NotLocal { root_exists } => {
                // Not a failure, and not worth retrying: the folder is
                // listed at every poll as any network remote is. Only a
                // root that is not there yet may turn out to be local later.
                self.may_retry = !root_exists;
                if !self.logged && !self.may_retry {
                    self.logged = true;
                    tracing::info!(pair = %self.pair, root = %self.root.display(), "the remote folder is not on a file system known to be this machine's own (a network or FUSE mount?), where a watch would miss other machines' writes; polling it");
                }
                false
            }
            Attempt::Started { watcher, identity } => {
                tracing::debug!(pair = %self.pair, root = %self.root.display(), "watching the remote folder instead of polling it");
                self.watched = identity;
                self.watcher = Some(watcher);
                self.logged = false;
                true
            }
            Attempt::Failed(e) => {
                self.may_retry = !e.is_limit();
                if !self.logged {
                    self.logged = true;
                    tracing::warn!(pair = %self.pair, error = %e, "cannot watch the remote folder; polling it instead");
                }
                false
            }
        }
    }
}

/// What one attempt to start the watch gave.
enum Attempt {
    /// The folder is not on a file system known to be this machine's own
    /// (or not there at all).
    NotLocal {
        root_exists: bool,
    },
    /// Watching, the root being the folder `identity` names.
    Started {
        watcher: Watcher,
        identity: Option<FolderIdentity>,
    },
    Failed(WatchError),
}

impl Attempt {
    /// Tries to watch `root` (walking its tree).
    fn make(
        root: &std::path::Path,
        ignore: Arc<IgnoreRules>,
        sink: UnboundedSender<WatchEvent>,
    ) -> Attempt {
        if !watch::sees_every_writer(root) {
            return Attempt::NotLocal {
                root_exists: root.exists(),
            };
        }
        // Before the watch starts: a folder swapped in meanwhile shows as
        // another identity at the next check.
        let identity = watch::folder_identity(root);
        match watch::watch(root, ignore, sink) {
            Ok(watcher) => Attempt::Started { watcher, identity },
            Err(e) => Attempt::Failed(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ignore(root: &std::path::Path) -> Arc<IgnoreRules> {
        Arc::new(IgnoreRules::load(root, &[]).unwrap())
    }

    #[tokio::test]
    async fn a_watched_folder_needs_no_polls_until_it_is_lost() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let mut remote = RemoteWatch::start("p", dir.path().to_owned(), ignore(dir.path()), tx);
        assert!(!remote.needs_polls());
        assert!(
            !remote.restart().await,
            "a running watch is not started twice"
        );

        remote.lost();
        assert!(remote.needs_polls());
        assert!(remote.restart().await, "the folder is back: watched again");
        assert!(!remote.needs_polls());
    }

    #[tokio::test]
    async fn a_root_that_names_another_folder_now_is_watched_again() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("parent/remote");
        std::fs::create_dir_all(&root).unwrap();
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let mut remote = RemoteWatch::start("p", root.clone(), ignore(dir.path()), tx);
        assert!(remote.still_watching());
        // The parent folder moved away and another put in its place: the
        // watch follows the old folder, the path names the new one.
        std::fs::rename(dir.path().join("parent"), dir.path().join("old")).unwrap();
        std::fs::create_dir_all(&root).unwrap();
        assert!(!remote.still_watching());
        assert!(remote.needs_polls());
        assert!(remote.restart().await);
        assert!(remote.still_watching());
        assert!(!remote.needs_polls());
    }

    #[tokio::test]
    async fn a_folder_that_is_not_there_yet_is_polled_until_it_can_be_watched() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("later");
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let mut remote = RemoteWatch::start("p", root.clone(), ignore(dir.path()), tx);
        assert!(remote.needs_polls());
        assert!(!remote.restart().await);
        assert!(remote.needs_polls());

        std::fs::create_dir(&root).unwrap();
        assert!(remote.restart().await);
        assert!(!remote.needs_polls());
    }
}
