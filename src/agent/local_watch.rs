//! The watch on a pair's local folder, owned by the pair's scheduler:
//! started with the pair, or, where the folder was not there at start-up
//! (a disk mounted after login), once it is. A watch whose folder the
//! path no longer names (the disk unmounted and mounted again, the folder
//! replaced) is dead without inotify always saying so: the scheduler asks
//! [`LocalWatch::still_watching`] at each poll's time, and a lost watch
//! starts again after the sync that follows. A watch that could not start
//! is tried again: after a while, or, where the system's inotify limits
//! stopped it, once they were raised.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::ignore_file::IgnoreFile;
use super::pair::{PairStatus, WATCH_OK};
use crate::locks::LockExt;
use crate::tracker::ignore::IgnoreRules;
use crate::tracker::watch::{self, FolderIdentity, WatchEvent, WatchView, Watcher};

/// The watcher itself, shared with the pair's handle, whose status reads
/// its health.
pub type SharedWatcher = Arc<Mutex<Option<Watcher>>>;

pub struct LocalWatch {
    pair: String,
    root: PathBuf,
    sink: mpsc::UnboundedSender<WatchEvent>,
    watcher: SharedWatcher,
    view: Option<WatchView>,
    /// The folder was not there, or its watch was lost: the watch starts
    /// once it is there.
    waiting_for_root: bool,
    /// The folder the running watch started on.
    watched: Option<FolderIdentity>,
    /// A watch that failed to start, to be tried again.
    retry: Option<Retry>,
    /// What this watch last put in the pair's status, taken back once it
    /// watches again (another problem, the remote watch's, is cleared by a
    /// whole run).
    said: Option<String>,
    /// The folder's `.prismignore` as it was when its rules were loaded,
    /// for changes no event reports.
    ignore_file: IgnoreFile,
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
        // Before the watch walks the tree: a change of the file meanwhile
        // is one.
        let ignore_file = IgnoreFile::new(&root);
        let mut local = LocalWatch {
            pair: pair.to_owned(),
            root,
            sink,
            watcher: Arc::default(),
            view: None,
            waiting_for_root: false,
            watched: None,
            retry: None,
            said: None,
            ignore_file,
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
    /// (after a sync), or one that failed to start and is due to be tried
    /// again; true when it started, so that a listing follows: what
    /// changed before it began raised no event. The watch walks the tree
    /// (a whole disk, maybe): on a thread where blocking is allowed.
    pub async fn restart(&mut self, rules: Arc<IgnoreRules>, status: &Mutex<PairStatus>) -> bool {
        let retry_due = self.retry_due();
        if !(self.waiting_for_root || retry_due) {
            return false;
        }
        if !self.root.is_dir() {
            // Gone since: started after a sync that finds it there.
            self.waiting_for_root = true;
            self.retry = None;
            return false;
        }
        self.waiting_for_root = false;
        let (root, sink) = (self.root.clone(), self.sink.clone());
        match tokio::task::spawn_blocking(move || start_watch(&root, rules, sink)).await {
            Ok((identity, started)) => {
                self.watched = identity;
                self.install(started, status)
            }
            Err(e) => {
                tracing::warn!(pair = %self.pair, error = %e, "the watch's start did not finish");
                // Tried again after a sync, not at once in a loop.
                self.waiting_for_root = true;
                self.retry = None;
                false
            }
        }
    }

    /// When a watch that failed to start is next looked at, for the
    /// scheduler's timer ([`LocalWatch::restart`] then tries it).
    pub fn retry_at(&self) -> Option<Instant> {
        self.retry.map(|retry| retry.at)
    }

    /// Whether a watch that failed to start is to be tried now. One that
    /// failed on the system's limits is tried only once they were raised
    /// (see [`watch::WatchError::is_limit`]).
    fn retry_due(&mut self) -> bool {
        let Some(retry) = self.retry else {
            return false;
        };
        let now = Instant::now();
        if retry.at > now {
            return false;
        }
        let raised = |then: (u64, u64)| {
            watch::inotify_limits().is_none_or(|limits| limits.0 > then.0 || limits.1 > then.1)
        };
        match retry.limits {
            Some(then) if !raised(then) => {
                self.retry = Some(Retry {
                    at: now + FIRST_RETRY,
                    ..retry
                });
                false
            }
            _ => true,
        }
    }

    /// Whether `.prismignore` changed since its rules were loaded or since
    /// the last look, whether an event said so or not (see [`IgnoreFile`]).
    pub fn ignore_file_changed(&mut self) -> bool {
        self.ignore_file.changed()
    }

    /// Whether the watch still watches the folder the root names (one
    /// `statx`; a look that failed is not a loss) and has not seen it go.
    /// Also asked when a watch says its folder went away: the running one
    /// is asked, as a watch dropped and started again since may say so
    /// late (events carry no generation). A watch that does not is
    /// dropped, said in `status`, and started again by
    /// [`LocalWatch::restart`] once the folder is there; meanwhile a sync
    /// must look at the whole folder.
    pub fn still_watching(&mut self, status: &Mutex<PairStatus>) -> bool {
        let Some(view) = &self.view else {
            return true;
        };
        if !view.root_gone() && !watch::folder_lost(&self.root, self.watched) {
            return true;
        }
        self.lost(status);
        false
    }

    /// The folder the watch was on went away: the watch is dead, and
    /// starts again once the folder is there.
    fn lost(&mut self, status: &Mutex<PairStatus>) {
        if self.view.take().is_none() {
            return;
        }
        tracing::warn!(pair = %self.pair, root = %self.root.display(), "the watched local folder went away (moved, replaced, or its disk unmounted); watching it again once it is there");
        *self.watcher.locked() = None;
        self.waiting_for_root = true;
        let sentence = format!(
            "{} is not the folder that was watched (moved, replaced, or its disk \
             unmounted); watching starts again once it is there",
            self.root.display()
        );
        self.say(status, sentence);
    }

    fn try_start(&mut self, rules: Arc<IgnoreRules>, status: &Mutex<PairStatus>) -> bool {
        if !self.root.is_dir() {
            self.waiting_for_root = true;
            let missing = match self.root.exists() {
                true => format!(
                    "{} is not a folder; watching starts once a folder is there",
                    self.root.display()
                ),
                false => format!(
                    "{} does not exist yet; watching starts once it does",
                    self.root.display()
                ),
            };
            self.say(status, missing);
            return false;
        }
        self.waiting_for_root = false;
        let (identity, started) = start_watch(&self.root, rules, self.sink.clone());
        self.watched = identity;
        self.install(started, status)
    }

    /// Puts `sentence` in the pair's status as the watch's own.
    fn say(&mut self, status: &Mutex<PairStatus>, sentence: String) {
        status.locked().watcher = sentence.clone();
        self.said = Some(sentence);
    }

    /// Keeps a watch that started, or says in `status` why it did not.
    fn install(
        &mut self,
        started: Result<Watcher, watch::WatchError>,
        status: &Mutex<PairStatus>,
    ) -> bool {
        match started {
            Ok(watcher) => {
                self.retry = None;
                self.view = Some(watcher.view());
                *self.watcher.locked() = Some(watcher);
                // Only this watch's own sentence goes: another problem
                // (the remote watch's) is cleared by a whole run.
                let mut status = status.locked();
                if self.said.take().is_some_and(|said| status.watcher == said) {
                    status.watcher = WATCH_OK.to_owned();
                }
                true
            }
            Err(e) => {
                let limits = e.is_limit().then(watch::inotify_limits).flatten();
                let wait = match (limits, self.retry) {
                    (None, Some(retry)) => (retry.wait * 2).min(LAST_RETRY),
                    _ => FIRST_RETRY,
                };
                self.retry = Some(Retry {
                    at: Instant::now() + wait,
                    wait,
                    limits,
                });
                let when = match limits {
                    Some(_) => "tried again once the limit is raised".to_owned(),
                    None => format!("tried again in {} min", wait.as_secs().div_ceil(60)),
                };
                tracing::warn!(pair = %self.pair, error = %e, "cannot watch; relying on periodic scans, {when}");
                self.say(
                    status,
                    format!(
                        "{e}; changes are found by periodic scans until the watch starts ({when})"
                    ),
                );
                false
            }
        }
    }
}

/// A watch that failed to start, to be tried again.
#[derive(Clone, Copy, Debug)]
struct Retry {
    /// When it is looked at again.
    at: Instant,
    /// The wait before that look (doubled after each failure).
    wait: Duration,
    /// Where the system's inotify limits stopped it: the limits then. It
    /// is tried again once they rose, looked at every [`FIRST_RETRY`].
    limits: Option<(u64, u64)>,
}

/// The wait before a watch that failed to start is tried again, doubled
/// after each failure up to the last.
const FIRST_RETRY: Duration = Duration::from_secs(60);
const LAST_RETRY: Duration = Duration::from_secs(60 * 60);

/// Watches `root` (walking its tree), with the identity of the folder it
/// named just before: a folder swapped in meanwhile shows as another one
/// at the next [`LocalWatch::still_watching`].
fn start_watch(
    root: &Path,
    rules: Arc<IgnoreRules>,
    sink: mpsc::UnboundedSender<WatchEvent>,
) -> (Option<FolderIdentity>, Result<Watcher, watch::WatchError>) {
    let identity = watch::folder_identity(root);
    (identity, watch::watch(root, rules, sink))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn rules(root: &Path) -> Arc<IgnoreRules> {
        Arc::new(IgnoreRules::load(root, &[]).unwrap())
    }

    /// Waits for an event naming `name`.
    async fn expect_change(events: &mut mpsc::UnboundedReceiver<WatchEvent>, name: &str) {
        let wait = async {
            while let Some(event) = events.recv().await {
                if let WatchEvent::Changed(paths) = event
                    && paths.iter().any(|p| p.as_str() == name)
                {
                    return;
                }
            }
            panic!("the watch ended");
        };
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .unwrap_or_else(|_| panic!("no event for {name}"));
    }

    #[tokio::test]
    async fn a_watch_whose_folder_was_replaced_is_dropped_and_starts_again_on_the_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("mount/notes");
        std::fs::create_dir_all(&root).unwrap();
        let (mut local, mut events, status) = watching(&root);
        assert!(local.still_watching(&status));
        std::fs::write(root.join("before.txt"), "x").unwrap();
        expect_change(&mut events, "before.txt").await;

        // Another folder where the watched one was, as after a disk was
        // unmounted and mounted again: the old watch sees nothing there.
        std::fs::rename(dir.path().join("mount"), dir.path().join("old")).unwrap();
        std::fs::create_dir_all(&root).unwrap();
        assert!(!local.still_watching(&status));
        assert!(
            local.shared().locked().is_none(),
            "the dead watch is dropped"
        );
        let said = status.locked().watcher.clone();
        assert!(
            said.contains("is not the folder that was watched"),
            "{said}"
        );

        assert!(local.restart(rules(&root), &status).await);
        assert_eq!(status.locked().watcher, WATCH_OK);
        assert!(local.still_watching(&status));
        std::fs::write(root.join("after.txt"), "x").unwrap();
        expect_change(&mut events, "after.txt").await;
    }

    #[tokio::test]
    async fn the_old_watch_saying_its_folder_went_away_after_a_restart_keeps_the_new_watch() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("notes");
        std::fs::create_dir(&root).unwrap();
        let (mut local, mut events, status) = watching(&root);
        std::fs::rename(&root, dir.path().join("old")).unwrap();
        local.still_watching(&status);
        assert!(local.shared().locked().is_none(), "the folder is gone");
        std::fs::create_dir(&root).unwrap();
        assert!(local.restart(rules(&root), &status).await);

        // The old watch's word arrives after the new one started.
        local.still_watching(&status);
        assert!(local.shared().locked().is_some(), "the new watch is kept");
        assert_eq!(status.locked().watcher, WATCH_OK);
        std::fs::write(root.join("after.txt"), "x").unwrap();
        expect_change(&mut events, "after.txt").await;
    }

    /// A watch started on `root`, with its events and the pair's status.
    fn watching(
        root: &Path,
    ) -> (
        LocalWatch,
        mpsc::UnboundedReceiver<WatchEvent>,
        Mutex<PairStatus>,
    ) {
        let (sink, events) = mpsc::unbounded_channel();
        let status = Mutex::new(PairStatus::default());
        let local = LocalWatch::start("p", root.to_owned(), rules(root), sink, &status);
        (local, events, status)
    }

    /// A watch on `root` whose start failed with `error` (a test cannot
    /// make a real start fail on the system's limits without changing them
    /// for the whole machine).
    fn failed_watch(
        root: &Path,
        error: watch::WatchError,
    ) -> (
        LocalWatch,
        mpsc::UnboundedReceiver<WatchEvent>,
        Mutex<PairStatus>,
    ) {
        let (mut local, events, status) = watching(root);
        local.lost(&status);
        local.waiting_for_root = false;
        assert!(!local.install(Err(error), &status));
        (local, events, status)
    }

    /// Makes the retry of `local` due now.
    fn due_now(local: &mut LocalWatch) {
        let retry = local.retry.as_mut().expect("a retry");
        retry.at = Instant::now();
    }

    #[tokio::test]
    async fn a_watch_that_could_not_start_is_tried_again_later_and_less_often() {
        let dir = tempfile::tempdir().unwrap();
        let failed = || watch::WatchError::Other {
            root: dir.path().to_owned(),
            reason: "Permission denied".to_owned(),
        };
        let (mut local, mut events, status) = failed_watch(dir.path(), failed());
        let said = status.locked().watcher.clone();
        assert!(said.contains("tried again in 1 min"), "{said}");
        assert_eq!(local.retry_at(), local.retry.map(|r| r.at));
        assert!(
            !local.restart(rules(dir.path()), &status).await,
            "not before it is due"
        );
        assert!(!local.install(Err(failed()), &status));
        let said = status.locked().watcher.clone();
        assert!(said.contains("tried again in 2 min"), "{said}");

        due_now(&mut local);
        assert!(local.restart(rules(dir.path()), &status).await);
        assert_eq!(status.locked().watcher, WATCH_OK);
        assert!(local.retry_at().is_none());
        std::fs::write(dir.path().join("after.txt"), "x").unwrap();
        expect_change(&mut events, "after.txt").await;
    }

    #[tokio::test]
    async fn a_watch_stopped_by_the_system_limit_is_tried_again_once_the_limit_was_raised() {
        let dir = tempfile::tempdir().unwrap();
        let limit = watch::WatchError::TooManyWatches {
            root: dir.path().to_owned(),
        };
        let (mut local, mut events, status) = failed_watch(dir.path(), limit);
        let said = status.locked().watcher.clone();
        assert!(said.contains("max_user_watches"), "{said}");
        assert!(said.contains("once the limit is raised"), "{said}");

        // Due, but the limits are what they were: not tried, looked at
        // again later.
        due_now(&mut local);
        let looked = Instant::now();
        assert!(!local.restart(rules(dir.path()), &status).await);
        assert!(
            local
                .retry_at()
                .is_some_and(|at| at >= looked + FIRST_RETRY)
        );

        // As if the limit was lower when the watch failed.
        due_now(&mut local);
        let retry = local.retry.as_mut().unwrap();
        retry.limits = retry
            .limits
            .map(|(watches, instances)| (watches - 1, instances));
        assert!(local.restart(rules(dir.path()), &status).await);
        assert_eq!(status.locked().watcher, WATCH_OK);
        std::fs::write(dir.path().join("after.txt"), "x").unwrap();
        expect_change(&mut events, "after.txt").await;
    }

    #[tokio::test]
    async fn a_folder_removed_and_made_again_loses_its_watch_whatever_its_inode() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("notes");
        std::fs::create_dir(&root).unwrap();
        let (mut local, mut events, status) = watching(&root);
        std::fs::remove_dir(&root).unwrap();
        // ext4 and XFS often give the new folder the old one's inode: its
        // identity may be the watched one's, but the kernel dropped the
        // watch.
        std::fs::create_dir(&root).unwrap();
        let gone = async {
            while let Some(event) = events.recv().await {
                if event == WatchEvent::RootGone {
                    return;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), gone)
            .await
            .expect("the watch says its folder went away");
        local.still_watching(&status);
        assert!(
            local.shared().locked().is_none(),
            "the dead watch is dropped"
        );
        assert!(local.restart(rules(&root), &status).await);
        std::fs::write(root.join("after.txt"), "x").unwrap();
        expect_change(&mut events, "after.txt").await;
    }

    #[tokio::test]
    async fn a_lost_watch_does_not_take_back_another_problem_in_the_status() {
        let dir = tempfile::tempdir().unwrap();
        let (mut local, _events, status) = watching(dir.path());
        local.lost(&status);
        status.locked().watcher = "the remote folder cannot be watched".to_owned();
        assert!(local.restart(rules(dir.path()), &status).await);
        assert_eq!(
            status.locked().watcher,
            "the remote folder cannot be watched"
        );
    }
}
