//! The watcher: which paths of a pair changed, as hints for the next scan.
//!
//! This module owns the `notify` watcher of one pair root and turns its raw
//! events into [`WatchEvent`]s on a channel: changed paths (both ends of a
//! rename), "rescan" when events were lost, "root gone", and problems such as
//! an exhausted inotify watch limit. Events are hints only; the scanner
//! confirms them with `stat`. Paths the ignore rules exclude (editor swap
//! files, our temporary files) are dropped here, so an editor's
//! save-by-rename reports only the file it saved. It does not scan, hash or
//! debounce; batching and timing are the engine's job.
//!
//! On Linux we add one inotify watch per folder ourselves instead of using
//! notify's recursive mode, because that mode (notify 8.2) fails the whole
//! watch when a single subfolder cannot be watched (no read permission, or
//! vanished mid-walk) and spends watches on ignored folders such as `.git`
//! or `node_modules`. New and moved-in folders get watches as their events
//! arrive; anything created inside them before that is covered because the
//! folder itself is reported as changed and the engine scans its subtree.
//! Other platforms' native watchers are recursive by nature, so there we
//! watch the root recursively.
//!
//! notify's inotify backend subscribes to open and close events, which we
//! cannot turn off; they are dropped on arrival (except close-after-write,
//! which says a writer is done), so our own hashing never feeds the queue.
//!
//! Running out of inotify watches (`fs.inotify.max_user_watches`) while
//! starting is [`WatchError::TooManyWatches`]; later, when a new folder
//! cannot be watched, it is a [`WatchEvent::Problem`] and shows in
//! [`Watcher::health`]. It is never silent. A test cannot lower the sysctl,
//! so the error mapping is unit-tested instead.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, Weak};

use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::mpsc::UnboundedSender;

use crate::locks::LockExt;
use crate::model::RelPath;
use crate::tracker::ignore::IgnoreRules;

/// What the watcher tells the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// These paths (and, for folders, their subtrees) may have changed. A
    /// rename names both ends.
    Changed(Vec<RelPath>),
    /// Events were lost: rescan this subtree, or the whole root for `None`.
    Rescan(Option<RelPath>),
    /// The root folder itself was deleted or moved away (or its disk
    /// unmounted); nothing below it is watched any more.
    RootGone,
    /// Something the user should know, e.g. a folder that cannot be watched.
    Problem(String),
}

/// A running watch on one pair root. Dropping it stops watching.
pub struct Watcher {
    /// Owned only to be dropped: that stops notify, which ends our thread.
    _notify: Arc<Mutex<RecommendedWatcher>>,
    health: Arc<Mutex<WatchHealth>>,
    pump: Weak<Pump>,
}

/// How complete the watch is, for status reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchHealth {
    /// The system's inotify watch limit was hit: some folders are not
    /// watched, and changes in them are only found by periodic scans.
    pub limit_reached: bool,
    /// At least this many folders could not be watched (after the limit is
    /// reached, folders below one that failed are not counted).
    pub unwatched_folders: u64,
    /// The watched folder itself went away (deleted, moved, or its disk
    /// unmounted): the watch sees nothing any more, even where a folder
    /// made in its place has the same inode number.
    pub root_gone: bool,
}

/// Why a pair root cannot be watched.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error(
        "cannot watch {root}: the system limit on watched folders is reached. Raise it with `sudo sysctl fs.inotify.max_user_watches=524288` (add `fs.inotify.max_user_watches=524288` to /etc/sysctl.d/90-prism-sync.conf to keep it), or ignore large folders that need no syncing"
    )]
    TooManyWatches { root: PathBuf },
    #[error(
        "cannot watch {root}: too many file watchers are open. Raise the limit with `sudo sysctl fs.inotify.max_user_instances=1024` (add it to /etc/sysctl.d/ to keep it), or close programs that watch many folders"
    )]
    TooManyInstances { root: PathBuf },
    #[error("cannot watch {root}: {reason}")]
    Other { root: PathBuf, reason: String },
}

impl WatchError {
    /// Whether the system's inotify limits stopped the watch: trying again
    /// before they are raised fills the system's watches up to the limit
    /// on its way, and other watches fail meanwhile.
    pub fn is_limit(&self) -> bool {
        matches!(
            self,
            WatchError::TooManyWatches { .. } | WatchError::TooManyInstances { .. }
        )
    }
}

impl WatchHealth {
    pub fn is_ok(&self) -> bool {
        !self.limit_reached && self.unwatched_folders == 0 && !self.root_gone
    }
}

impl Watcher {
    pub fn health(&self) -> WatchHealth {
        self.health.locked().clone()
    }

    /// A handle on this watch that lives apart from the watcher.
    pub fn view(&self) -> WatchView {
        WatchView {
            health: self.health.clone(),
            pump: self.pump.clone(),
        }
    }
}

/// How complete a watch is, and which ignore rules it follows, for whoever
/// decides whether to poll. It keeps nothing alive: once the [`Watcher`]
/// is dropped, following new rules does nothing.
#[derive(Clone)]
pub struct WatchView {
    health: Arc<Mutex<WatchHealth>>,
    pump: Weak<Pump>,
}

impl WatchView {
    pub fn is_ok(&self) -> bool {
        self.health.locked().is_ok()
    }

    /// Whether this watch saw its own folder go away ([`WatchHealth::root_gone`]).
    pub fn root_gone(&self) -> bool {
        self.health.locked().root_gone
    }

    /// Makes the watch follow `rules` from now on (`.prismignore` changed):
    /// events are filtered by them, every folder they let in is watched,
    /// and none they exclude. Walks the tree (call it where blocking is
    /// allowed), then
    /// asks for a rescan of the whole root: a file made in a newly let-in
    /// folder before its watch began raised no event.
    pub fn follow_rules(&self, rules: Arc<IgnoreRules>) {
        if let Some(pump) = self.pump.upgrade() {
            pump.follow_rules(rules);
        }
    }
}

/// Starts watching `root` and everything below it that `ignore` does not
/// exclude, sending events to `sink` from a background thread.
///
/// Every folder is watched before this returns, so it walks the tree: call
/// it from a blocking context for large pairs. When `.prismignore` changes
/// (reported like any change), the engine reloads the rules and the pair's
/// scheduler hands them on ([`WatchView::follow_rules`]); until then the
/// scheduler does not count this watch as seeing the whole folder (see
/// `agent::pair`).
pub fn watch(
    root: &Path,
    ignore: Arc<IgnoreRules>,
    sink: UnboundedSender<WatchEvent>,
) -> Result<Watcher, WatchError> {
    let root = std::path::absolute(root).map_err(|err| WatchError::Other {
        root: root.to_path_buf(),
        reason: err.to_string(),
    })?;
    let (raw_tx, raw_rx) = mpsc::channel();
    // notify calls this on its own thread; forwarding to ours lets us add
    // watches for new folders, which must not happen on notify's thread.
    let handler = move |res: notify::Result<notify::Event>| {
        // The receiver is gone only while shutting down.
        let _ = raw_tx.send(res);
    };
    let config = notify::Config::default().with_follow_symlinks(false);
    let watcher =
        RecommendedWatcher::new(handler, config).map_err(|err| watch_error(&root, err))?;
    let notify = Arc::new(Mutex::new(watcher));
    let health = Arc::new(Mutex::new(WatchHealth::default()));
    let pump = Arc::new(Pump {
        root,
        ignore: Mutex::new(ignore),
        sink,
        health: Arc::clone(&health),
        notify: Arc::downgrade(&notify),
    });

    {
        let mut watcher = notify.locked();
        let subfolders = watch_folder(&mut watcher, &pump.root, ROOT_MODE)
            .map_err(|err| watch_error(&pump.root, err))?;
        pump.watch_subtrees(&mut watcher, subfolders)?;
    }
    let root = pump.root.clone();
    let weak_pump = Arc::downgrade(&pump);
    std::thread::Builder::new()
        .name("prism-watch".to_owned())
        .spawn(move || pump.run(raw_rx))
        .map_err(|err| WatchError::Other {
            root,
            reason: format!("cannot start the watch thread: {err}"),
        })?;
    Ok(Watcher {
        _notify: notify,
        health,
        pump: weak_pump,
    })
}

/// Whether a watch on `root` sees every change made there, whoever makes
/// it: only on a file system of this machine's own disks (or memory). On a
/// network file system (NFS, SMB) or a FUSE mount (sshfs, rclone mount)
/// inotify reports this machine's own writes and nothing of the others',
/// so such a folder must still be listed to be seen. A file system not
/// known here to be local counts as not seeing: listing it is only slower.
pub fn sees_every_writer(root: &Path) -> bool {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::ffi::OsStrExt;
        let Ok(path) = std::ffi::CString::new(root.as_os_str().as_bytes()) else {
            return false;
        };
        // SAFETY: an all-zero statfs is a valid value for statfs to fill.
        let mut info: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: `path` is a NUL-terminated string alive for the call and
        // `info` a writable statfs.
        if unsafe { libc::statfs(path.as_ptr(), &mut info) } != 0 {
            return false;
        }
        // f_type's integer type differs between targets; the magic numbers
        // fit every one of them.
        #[allow(clippy::unnecessary_cast)]
        LOCAL_FILE_SYSTEMS.contains(&(info.f_type as i64))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = root;
        false
    }
}

/// Which folder a path names, and on which mount: a watch keeps watching
/// the folder it started on, so a path that names another one now (the
/// disk unmounted and mounted again, a parent folder replaced, a file
/// system mounted over it) has a dead watch, which inotify does not always
/// report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FolderIdentity {
    device: u64,
    inode: u64,
    /// The mount's id (Linux 5.8 and later; 0 where unknown): a disk
    /// mounted again keeps its device and inode numbers but not this.
    mount: u64,
}

/// The identity of the folder `path` names now; `None` when there is none.
pub fn folder_identity(path: &Path) -> Option<FolderIdentity> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
        // SAFETY: an all-zero statx is a valid value for statx to fill.
        let mut info: libc::statx = unsafe { std::mem::zeroed() };
        // SAFETY: `path` is a NUL-terminated string alive for the call and
        // `info` a writable statx.
        let rc = unsafe {
            libc::statx(
                libc::AT_FDCWD,
                path.as_ptr(),
                0,
                libc::STATX_INO | libc::STATX_MNT_ID,
                &mut info,
            )
        };
        if rc != 0 || info.stx_mode as u32 & libc::S_IFMT != libc::S_IFDIR {
            return None;
        }
        let mount = if info.stx_mask & libc::STATX_MNT_ID != 0 {
            info.stx_mnt_id
        } else {
            0
        };
        Some(FolderIdentity {
            device: (u64::from(info.stx_dev_major) << 32) | u64::from(info.stx_dev_minor),
            inode: info.stx_ino,
            mount,
        })
    }
    #[cfg(not(target_os = "linux"))]
    {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).ok().filter(|m| m.is_dir())?;
        Some(FolderIdentity {
            device: meta.dev(),
            inode: meta.ino(),
            mount: 0,
        })
    }
}

/// Whether a watch that started on the folder `watched` has lost it: `path`
/// names another folder now, or nothing, or something that is not a
/// folder. A look that failed (an I/O error, a stale NFS handle, a
/// permission taken away for a moment) says neither: it is not a loss, or
/// a watch would be dropped and its whole tree walked again for nothing.
pub fn folder_lost(path: &Path, watched: Option<FolderIdentity>) -> bool {
    match folder_identity(path) {
        Some(now) => Some(now) != watched,
        None => match std::fs::metadata(path) {
            Ok(meta) => !meta.is_dir(),
            Err(e) => says_nothing_is_there(&e),
        },
    }
}

/// The system's inotify limits (`max_user_watches`, `max_user_instances`):
/// a watch that failed on one starts once it was raised. `None` where
/// they cannot be read.
pub fn inotify_limits() -> Option<(u64, u64)> {
    let read = |name: &str| -> Option<u64> {
        std::fs::read_to_string(format!("/proc/sys/fs/inotify/{name}"))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    Some((read("max_user_watches")?, read("max_user_instances")?))
}

/// Whether a failed look at a path means nothing is there (rather than a
/// look that could not be made).
fn says_nothing_is_there(error: &std::io::Error) -> bool {
    error.kind() == std::io::ErrorKind::NotFound || error.raw_os_error() == Some(libc::ENOTDIR)
}

/// The magic numbers (`statfs`'s `f_type`) of Linux file systems that
/// live on this machine: ext2/3/4, XFS, Btrfs, tmpfs, ramfs, F2FS, ZFS,
/// bcachefs, overlayfs, JFS, ReiserFS, NILFS, FAT, exFAT, ntfs3, HFS+.
#[cfg(target_os = "linux")]
const LOCAL_FILE_SYSTEMS: [i64; 16] = [
    0xEF53,
    0x5846_5342,
    0x9123_683E,
    0x0102_1994,
    0x8584_58F6,
    0xF2F5_2010,
    0x2FC1_2FC1,
    0xCA45_1A4E,
    0x794C_7630,
    0x3153_464A,
    0x5265_4973,
    0x3434,
    0x4D44,
    0x2011_BAB0,
    0x7366_746E,
    0x482B,
];

/// How the root is watched: folder by folder on Linux (see the module
/// docs), by the OS's recursive watcher elsewhere.
const ROOT_MODE: RecursiveMode = if cfg!(target_os = "linux") {
    RecursiveMode::NonRecursive
} else {
    RecursiveMode::Recursive
};

/// Turns raw notify events into [`WatchEvent`]s; runs on its own thread.
struct Pump {
    root: PathBuf,
    /// Replaced when `.prismignore` changes ([`Pump::follow_rules`]).
    ignore: Mutex<Arc<IgnoreRules>>,
    sink: UnboundedSender<WatchEvent>,
    health: Arc<Mutex<WatchHealth>>,
    /// Weak, so that dropping the [`Watcher`] stops notify, which closes our
    /// event channel and ends the thread.
    notify: Weak<Mutex<RecommendedWatcher>>,
}

/// The events that arrived together, merged before they are sent.
#[derive(Default)]
struct Batch {
    changed: BTreeSet<RelPath>,
    rescan: BTreeSet<RelPath>,
    rescan_all: bool,
    root_gone: bool,
    problems: Vec<String>,
}

impl Pump {
    fn run(&self, raw: mpsc::Receiver<notify::Result<notify::Event>>) {
        while let Ok(first) = raw.recv() {
            let mut batch = Batch::default();
            self.absorb(first, &mut batch);
            while let Ok(next) = raw.try_recv() {
                self.absorb(next, &mut batch);
            }
            if self.send(batch).is_err() {
                // The engine stopped listening.
                return;
            }
        }
    }

    fn absorb(&self, raw: notify::Result<notify::Event>, batch: &mut Batch) {
        let event = match raw {
            Ok(event) => event,
            Err(err) => {
                // notify reports errors reading the event queue here; events
                // may have been lost with them.
                batch.problems.push(format!(
                    "watching {} failed ({err}); rescanning it",
                    self.root.display()
                ));
                batch.rescan_all = true;
                return;
            }
        };
        if event.need_rescan() {
            if event.paths.is_empty() {
                batch.rescan_all = true;
            }
            for path in &event.paths {
                match self.relative(path) {
                    Some(rel) => {
                        batch.rescan.insert(rel);
                    }
                    None => batch.rescan_all = true,
                }
            }
            return;
        }
        if !is_relevant(&event.kind) {
            return;
        }
        for path in &event.paths {
            if path == &self.root {
                batch.root_gone |= matches!(
                    event.kind,
                    EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(_))
                );
                continue;
            }
            let Some(rel) = self.relative(path) else {
                // A name that cannot be synced: the scanner reports it.
                continue;
            };
            let is_dir = fs::symlink_metadata(path).is_ok_and(|meta| meta.is_dir());
            if self.rules().is_ignored(&rel, is_dir) {
                continue;
            }
            if is_dir && adds_folder(&event.kind) {
                self.watch_new_folder(path);
            }
            batch.changed.insert(rel);
        }
    }

    fn send(&self, batch: Batch) -> Result<(), ()> {
        let mut events: Vec<WatchEvent> = batch
            .problems
            .into_iter()
            .map(WatchEvent::Problem)
            .collect();
        if !batch.changed.is_empty() {
            events.push(WatchEvent::Changed(batch.changed.into_iter().collect()));
        }
        if batch.rescan_all {
            events.push(WatchEvent::Rescan(None));
        } else {
            events.extend(
                batch
                    .rescan
                    .into_iter()
                    .map(|rel| WatchEvent::Rescan(Some(rel))),
            );
        }
        if batch.root_gone {
            // Before the event: whoever handles it asks this watch, not
            // the one that may have started since.
            self.health.locked().root_gone = true;
            events.push(WatchEvent::RootGone);
        }
        for event in events {
            self.sink.send(event).map_err(|_| ())?;
        }
        Ok(())
    }

    fn watch_new_folder(&self, path: &Path) {
        self.watch_below(path, false);
    }

    /// Watches `path` and every folder below it that the rules let in.
    /// With `recount` the walk covers every such folder of the root, so
    /// what it cannot watch is counted afresh: a folder the rules now
    /// exclude no longer counts, and one still unwatchable counts once.
    fn watch_below(&self, path: &Path, recount: bool) {
        let Some(notify) = self.notify.upgrade() else {
            return;
        };
        let mut watcher = notify.locked();
        let was_limited = {
            let mut health = self.health.locked();
            let was_limited = health.limit_reached;
            if recount {
                *health = WatchHealth {
                    root_gone: health.root_gone,
                    ..WatchHealth::default()
                };
            }
            was_limited
        };
        if let Err(err) = self.watch_subtrees(&mut watcher, vec![path.to_path_buf()])
            && !was_limited
        {
            let _ = self.sink.send(WatchEvent::Problem(format!(
                "{err}. Until then, changes in new folders are found only by periodic scans"
            )));
        }
    }

    fn rules(&self) -> Arc<IgnoreRules> {
        self.ignore.locked().clone()
    }

    fn follow_rules(&self, rules: Arc<IgnoreRules>) {
        let old = std::mem::replace(&mut *self.ignore.locked(), rules.clone());
        // Elsewhere the OS watches the whole tree already.
        if ROOT_MODE == RecursiveMode::NonRecursive {
            // First, so that the watches it frees are there for the walk.
            self.unwatch_excluded(&old, &rules);
            // Folders watched already are watched again: inotify keeps one
            // watch per folder, so that costs a call and no watch.
            self.watch_below(&self.root, true);
        }
        let _ = self.sink.send(WatchEvent::Rescan(None));
    }

    /// Removes the watches of the folders `old` let in and `new` excludes,
    /// and of those below them that `old` let in. Their events are dropped
    /// by the new rules, but each watch still wakes this thread at every
    /// write in there (a build folder just ignored), holds kernel memory,
    /// and counts against the user's watch limit: ignoring large folders
    /// is the way out of that limit that its message suggests.
    fn unwatch_excluded(&self, old: &IgnoreRules, new: &IgnoreRules) {
        let Some(notify) = self.notify.upgrade() else {
            return;
        };
        let mut watcher = notify.locked();
        let lets_in = |folder: &Path, rules: &IgnoreRules| {
            self.relative(folder)
                .is_some_and(|rel| !rel.too_deep() && !rules.is_ignored(&rel, true))
        };
        let mut kept = vec![self.root.clone()];
        let mut dropped = Vec::new();
        while let Some(dir) = kept.pop() {
            for sub in subfolders(&dir) {
                if !lets_in(&sub, old) {
                    continue;
                }
                if lets_in(&sub, new) {
                    kept.push(sub);
                } else {
                    dropped.push(sub);
                }
            }
        }
        while let Some(dir) = dropped.pop() {
            // One that was not watched (it could not be, or it is new) has
            // no watch to remove.
            let _ = watcher.unwatch(&dir);
            dropped.extend(subfolders(&dir).into_iter().filter(|sub| lets_in(sub, old)));
        }
    }

    /// Watches each folder in `pending` and every non-ignored folder below
    /// it. A folder that cannot be watched is reported and skipped; hitting
    /// the watch limit stops the walk, since every further watch would fail.
    fn watch_subtrees(
        &self,
        watcher: &mut RecommendedWatcher,
        mut pending: Vec<PathBuf>,
    ) -> Result<(), WatchError> {
        let rules = self.rules();
        while let Some(dir) = pending.pop() {
            match watch_folder(watcher, &dir, RecursiveMode::NonRecursive) {
                // Below the deepest synced level nothing is watched: the
                // scan holds it (see `RelPath::too_deep`).
                Ok(subfolders) => pending.extend(subfolders.into_iter().filter(|sub| {
                    self.relative(sub)
                        .is_some_and(|rel| !rel.too_deep() && !rules.is_ignored(&rel, true))
                })),
                Err(err) if is_gone(&err) => {}
                Err(err) => {
                    let mapped = watch_error(&self.root, err);
                    let mut health = self.health.locked();
                    health.unwatched_folders += 1;
                    if let WatchError::TooManyWatches { .. } = mapped {
                        health.limit_reached = true;
                        return Err(mapped);
                    }
                    drop(health);
                    let _ = self.sink.send(WatchEvent::Problem(format!(
                        "cannot watch the folder {}: {mapped}; changes in it are found only by periodic scans",
                        dir.display()
                    )));
                }
            }
        }
        Ok(())
    }

    fn relative(&self, path: &Path) -> Option<RelPath> {
        RelPath::from_fs(path.strip_prefix(&self.root).ok()?).ok()
    }
}

/// Adds a watch on `dir` and, where we walk ourselves (Linux), lists the
/// folders directly inside it. Symbolic links are not folders here.
fn watch_folder(
    watcher: &mut RecommendedWatcher,
    dir: &Path,
    mode: RecursiveMode,
) -> notify::Result<Vec<PathBuf>> {
    watcher.watch(dir, mode)?;
    if mode == RecursiveMode::Recursive {
        return Ok(Vec::new());
    }
    Ok(subfolders(dir))
}

/// The folders directly inside `dir`. A folder we may watch but not list
/// (rare) yields none; the scanner reports it as unreadable.
fn subfolders(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|entry| entry.file_type().is_ok_and(|kind| kind.is_dir()))
        .map(|entry| entry.path())
        .collect()
}

/// Access events say nothing about content, except that a writer closed
/// the file: then the file may have become stable enough to sync.
fn is_relevant(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// Events after which a folder may exist that has no watch yet.
fn adds_folder(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Create(_)
            | EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Any))
    )
}

/// True when the folder vanished before it could be watched.
fn is_gone(err: &notify::Error) -> bool {
    match &err.kind {
        notify::ErrorKind::PathNotFound => true,
        notify::ErrorKind::Io(io_err) => matches!(
            io_err.kind(),
            io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
        ),
        _ => false,
    }
}

/// Maps a notify error to what the user must do about it.
fn watch_error(root: &Path, err: notify::Error) -> WatchError {
    let root = root.to_path_buf();
    match &err.kind {
        notify::ErrorKind::MaxFilesWatch => WatchError::TooManyWatches { root },
        notify::ErrorKind::Io(io_err) if io_err.raw_os_error() == Some(libc::ENOSPC) => {
            WatchError::TooManyWatches { root }
        }
        notify::ErrorKind::Io(io_err) if io_err.raw_os_error() == Some(libc::EMFILE) => {
            WatchError::TooManyInstances { root }
        }
        _ => WatchError::Other {
            root,
            reason: err.to_string(),
        },
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::sync::mpsc::UnboundedReceiver;

    #[test]
    fn a_folder_is_lost_when_the_path_names_another_folder_a_file_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("notes");
        fs::create_dir(&root).unwrap();
        let watched = folder_identity(&root);
        assert!(watched.is_some());
        assert!(!folder_lost(&root, watched));

        fs::rename(&root, dir.path().join("old")).unwrap();
        assert!(folder_lost(&root, watched), "nothing there");
        fs::write(&root, "x").unwrap();
        assert!(folder_lost(&root, watched), "a file there");
        fs::remove_file(&root).unwrap();
        fs::create_dir(&root).unwrap();
        assert!(folder_lost(&root, watched), "another folder there");
        fs::write(dir.path().join("file"), "x").unwrap();
        assert!(folder_lost(&dir.path().join("file/notes"), watched));
    }

    #[test]
    fn a_look_that_failed_says_nothing_about_the_folder() {
        for gone in [libc::ENOENT, libc::ENOTDIR] {
            assert!(says_nothing_is_there(&std::io::Error::from_raw_os_error(
                gone
            )));
        }
        for failed in [
            libc::EIO,
            libc::ESTALE,
            libc::EACCES,
            libc::ELOOP,
            libc::ENOMEM,
        ] {
            let error = std::io::Error::from_raw_os_error(failed);
            assert!(!says_nothing_is_there(&error), "{error}");
        }
    }

    /// How long an expected event may take. inotify delivers in
    /// milliseconds; the margin is for a loaded CI machine.
    const PATIENCE: Duration = Duration::from_secs(5);

    struct Harness {
        _dir: tempfile::TempDir,
        root: PathBuf,
        rx: UnboundedReceiver<WatchEvent>,
        watcher: Watcher,
    }

    /// A watched root holding `files` (created before watching starts).
    fn start(config_patterns: &[&str], files: &[&str]) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs::create_dir(&root).unwrap();
        for file in files {
            let abs = root.join(file);
            fs::create_dir_all(abs.parent().unwrap()).unwrap();
            fs::write(abs, file.as_bytes()).unwrap();
        }
        let patterns: Vec<String> = config_patterns.iter().map(|p| p.to_string()).collect();
        let ignore = Arc::new(IgnoreRules::load(&root, &patterns).unwrap());
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let watcher = watch(&root, ignore, tx).unwrap();
        Harness {
            _dir: dir,
            root,
            rx,
            watcher,
        }
    }

    impl Harness {
        fn path(&self, rel: &str) -> PathBuf {
            self.root.join(rel)
        }

        /// Collects changed paths until all of `wanted` were seen, and
        /// returns everything seen. Fails after [`PATIENCE`].
        async fn expect_changed(&mut self, wanted: &[&str]) -> BTreeSet<String> {
            let mut seen = BTreeSet::new();
            let deadline = tokio::time::Instant::now() + PATIENCE;
            while !wanted.iter().all(|w| seen.contains(*w)) {
                match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                    Ok(Some(WatchEvent::Changed(paths))) => {
                        seen.extend(paths.iter().map(|p| p.as_str().to_owned()));
                    }
                    Ok(Some(WatchEvent::Problem(problem))) => {
                        panic!("unexpected problem: {problem}")
                    }
                    Ok(Some(other)) => panic!("unexpected {other:?} while waiting for {wanted:?}"),
                    Ok(None) => panic!("the watcher stopped"),
                    Err(_) => panic!("no event for {wanted:?} within {PATIENCE:?}; saw {seen:?}"),
                }
            }
            seen
        }

        /// Waits for a non-`Changed` event.
        async fn expect_event(&mut self, wanted: WatchEvent) {
            let deadline = tokio::time::Instant::now() + PATIENCE;
            loop {
                match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                    Ok(Some(event)) if event == wanted => return,
                    Ok(Some(_)) => {}
                    Ok(None) => panic!("the watcher stopped before {wanted:?}"),
                    Err(_) => panic!("no {wanted:?} within {PATIENCE:?}"),
                }
            }
        }
    }

    #[tokio::test]
    async fn creating_modifying_deleting_and_renaming_files_are_reported() {
        let mut h = start(&[], &["edit.txt", "delete.txt", "from.txt"]);
        assert!(h.watcher.health().is_ok());

        fs::write(h.path("new.txt"), b"new").unwrap();
        h.expect_changed(&["new.txt"]).await;

        fs::write(h.path("edit.txt"), b"edited").unwrap();
        h.expect_changed(&["edit.txt"]).await;

        fs::remove_file(h.path("delete.txt")).unwrap();
        h.expect_changed(&["delete.txt"]).await;

        fs::rename(h.path("from.txt"), h.path("to.txt")).unwrap();
        h.expect_changed(&["from.txt", "to.txt"]).await;
    }

    #[tokio::test]
    async fn renamed_and_new_folders_are_reported_and_watched() {
        let mut h = start(&[], &["old/inside.txt"]);

        fs::rename(h.path("old"), h.path("new")).unwrap();
        h.expect_changed(&["old", "new"]).await;
        // The moved folder is watched under its new name.
        fs::write(h.path("new/later.txt"), b"x").unwrap();
        h.expect_changed(&["new/later.txt"]).await;

        fs::create_dir(h.path("made")).unwrap();
        h.expect_changed(&["made"]).await;
        fs::write(h.path("made/file.txt"), b"x").unwrap();
        h.expect_changed(&["made/file.txt"]).await;

        // A folder tree moved in from outside is reported as its top folder
        // and watched all the way down.
        let outside = h.root.parent().unwrap().join("outside");
        fs::create_dir_all(outside.join("deep/deeper")).unwrap();
        fs::rename(&outside, h.path("moved-in")).unwrap();
        h.expect_changed(&["moved-in"]).await;
        fs::write(h.path("moved-in/deep/deeper/file.txt"), b"x").unwrap();
        h.expect_changed(&["moved-in/deep/deeper/file.txt"]).await;
    }

    #[tokio::test]
    async fn save_by_rename_reports_only_the_saved_file() {
        let mut h = start(&[], &["notes.md", "draft.md"]);

        // vim-style: write a backup name, then move it over the original.
        fs::write(h.path("notes.md~"), b"new notes").unwrap();
        fs::rename(h.path("notes.md~"), h.path("notes.md")).unwrap();
        // Our executor's atomic write does the same with a temporary name.
        let temp = crate::tracker::ignore::temp_name_for("draft.md");
        fs::write(h.path(&temp), b"new draft").unwrap();
        fs::rename(h.path(&temp), h.path("draft.md")).unwrap();

        let seen = h.expect_changed(&["notes.md", "draft.md"]).await;
        assert_eq!(seen, BTreeSet::from(["draft.md".into(), "notes.md".into()]));
    }

    #[tokio::test]
    async fn ignored_paths_and_reads_produce_no_events() {
        let mut h = start(&["build/"], &["read-me.txt"]);

        fs::write(h.path("swap.txt.swp"), b"x").unwrap();
        fs::write(h.path(&crate::tracker::ignore::temp_name_for("t")), b"x").unwrap();
        fs::create_dir(h.path("build")).unwrap();
        fs::write(h.path("build/out.o"), b"x").unwrap();
        fs::create_dir_all(h.path(".prism-sync/trash")).unwrap();
        fs::write(h.path(".prism-sync/trash/old"), b"x").unwrap();
        assert_eq!(fs::read(h.path("read-me.txt")).unwrap(), b"read-me.txt");
        // inotify keeps events in order, so once the sentinel arrives every
        // earlier event would have arrived too.
        fs::write(h.path("sentinel"), b"x").unwrap();

        let seen = h.expect_changed(&["sentinel"]).await;
        assert_eq!(seen, BTreeSet::from(["sentinel".into()]));
    }

    #[tokio::test]
    async fn a_prismignore_change_is_reported() {
        let mut h = start(&[], &[]);
        fs::write(h.path(".prismignore"), b"*.log\n").unwrap();
        h.expect_changed(&[".prismignore"]).await;
    }

    /// Hands `watcher` the rules of `root` with `patterns`, as the pair's
    /// scheduler does once `.prismignore` changed.
    async fn follow(watcher: &Watcher, root: &Path, patterns: &[&str]) {
        let patterns: Vec<String> = patterns.iter().map(|p| p.to_string()).collect();
        let rules = Arc::new(IgnoreRules::load(root, &patterns).unwrap());
        let view = watcher.view();
        tokio::task::spawn_blocking(move || view.follow_rules(rules))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn new_rules_are_followed_and_the_folders_they_let_in_are_watched() {
        let mut h = start(&["build/", "*.log"], &["build/deep/old.txt", "kept.txt"]);
        fs::write(h.path("build/deep/before.txt"), b"x").unwrap();
        fs::write(h.path("early.log"), b"x").unwrap();
        fs::write(h.path("sentinel-1"), b"x").unwrap();
        let seen = h.expect_changed(&["sentinel-1"]).await;
        assert_eq!(seen, BTreeSet::from(["sentinel-1".into()]));

        // `.prismignore` now lets both in (the engine reloaded the rules).
        follow(&h.watcher, &h.root, &[]).await;
        // What happened before the new watches began is found by a scan.
        h.expect_event(WatchEvent::Rescan(None)).await;

        fs::write(h.path("build/deep/after.txt"), b"x").unwrap();
        fs::write(h.path("late.log"), b"x").unwrap();
        h.expect_changed(&["build/deep/after.txt", "late.log"])
            .await;

        // And back: what the rules exclude again raises no event.
        follow(&h.watcher, &h.root, &["build/"]).await;
        h.expect_event(WatchEvent::Rescan(None)).await;
        fs::write(h.path("build/deep/ignored.txt"), b"x").unwrap();
        fs::write(h.path("sentinel-2"), b"x").unwrap();
        let seen = h.expect_changed(&["sentinel-2"]).await;
        assert_eq!(seen, BTreeSet::from(["sentinel-2".into()]));
    }

    /// Whether an inotify instance of this process watches the folder at
    /// `path` (`/proc/self/fdinfo` lists each watch with its inode).
    fn inotify_watches(path: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        let inode = format!(" ino:{:x} ", fs::metadata(path).unwrap().ino());
        fs::read_dir("/proc/self/fdinfo")
            .unwrap()
            .flatten()
            .any(|entry| {
                fs::read_to_string(entry.path()).is_ok_and(|info| {
                    info.lines()
                        .any(|line| line.starts_with("inotify wd:") && line.contains(&inode))
                })
            })
    }

    #[tokio::test]
    async fn folders_the_new_rules_exclude_are_no_longer_watched() {
        let mut h = start(&[], &["build/deep/a.txt", "kept/b.txt"]);
        for folder in ["build", "build/deep", "kept"] {
            assert!(inotify_watches(&h.path(folder)), "{folder} is not watched");
        }

        follow(&h.watcher, &h.root, &["build/"]).await;
        h.expect_event(WatchEvent::Rescan(None)).await;
        for folder in ["build", "build/deep"] {
            assert!(
                !inotify_watches(&h.path(folder)),
                "{folder} is still watched"
            );
        }
        assert!(inotify_watches(&h.path("kept")));
        assert!(h.watcher.health().is_ok());
    }

    /// Makes `root/long/…`, a folder that cannot be watched, and checks
    /// that its path below `root` is one Prism Sync syncs.
    fn make_unwatchable_folder(root: &Path) {
        let rel = unwatchable::make_unwatchable_folder(root);
        assert!(rel <= crate::model::MAX_PATH_BYTES, "{rel}");
    }

    /// Shared with the agent's end-to-end tests.
    mod unwatchable {
        include!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/support/unwatchable.rs"
        ));
    }

    #[tokio::test]
    async fn following_rules_counts_the_unwatched_folders_again() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs::create_dir(&root).unwrap();
        make_unwatchable_folder(&root);
        let ignore = Arc::new(IgnoreRules::load(&root, &[]).unwrap());
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let watcher = watch(&root, ignore, tx).unwrap();
        assert_eq!(watcher.health().unwatched_folders, 1);

        // Rules that still let it in: it is the one folder not watched, not
        // one more each time the rules change.
        follow(&watcher, &root, &["*.tmp"]).await;
        assert_eq!(watcher.health().unwatched_folders, 1);

        // Rules that exclude it: every folder they let in is watched, so
        // the watch is whole again (and the pair need not poll).
        follow(&watcher, &root, &["long/"]).await;
        assert!(watcher.health().is_ok(), "{:?}", watcher.health());
    }

    #[tokio::test]
    async fn removing_the_root_reports_root_gone() {
        let mut h = start(&[], &["a/b.txt"]);
        assert!(!h.watcher.view().root_gone());
        fs::remove_dir_all(&h.root).unwrap();
        h.expect_event(WatchEvent::RootGone).await;
        assert!(h.watcher.view().root_gone());
        assert!(!h.watcher.health().is_ok());
    }

    #[tokio::test]
    async fn dropping_the_watcher_stops_it() {
        let Harness {
            _dir,
            root,
            mut rx,
            watcher,
        } = start(&[], &[]);
        drop(watcher);
        fs::write(root.join("after.txt"), b"x").unwrap();
        // The thread ends and drops its sender, closing the channel. An
        // event already in flight when the watcher dropped may still come
        // first (a loaded machine shows it); the channel must close anyway.
        let closed =
            tokio::time::timeout(PATIENCE, async { while rx.recv().await.is_some() {} }).await;
        assert!(
            closed.is_ok(),
            "the watcher thread kept running after the drop"
        );
    }

    #[tokio::test]
    async fn an_unwatchable_folder_is_reported_not_fatal() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        fs::create_dir(root.join("locked")).unwrap();
        fs::set_permissions(root.join("locked"), fs::Permissions::from_mode(0o000)).unwrap();
        let ignore = Arc::new(IgnoreRules::load(&root, &[]).unwrap());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let watcher = watch(&root, ignore, tx).unwrap();
        fs::set_permissions(root.join("locked"), fs::Permissions::from_mode(0o755)).unwrap();

        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            // Permission bits do not restrict root (as in CI), so the folder
            // is watched like any other.
            assert!(watcher.health().is_ok());
        } else {
            assert_eq!(watcher.health().unwatched_folders, 1);
            assert!(!watcher.health().limit_reached);
            match rx.try_recv() {
                Ok(WatchEvent::Problem(message)) => {
                    assert!(message.contains("cannot watch the folder"), "{message}")
                }
                other => panic!("expected a problem, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_folder_on_a_local_disk_sees_every_writer_and_a_missing_one_does_not() {
        let dir = tempfile::tempdir().unwrap();
        // The test's temporary folder is on a local disk or tmpfs.
        assert_eq!(sees_every_writer(dir.path()), cfg!(target_os = "linux"));
        assert!(!sees_every_writer(&dir.path().join("missing")));
        // /proc is local, but no disk file system: not known to be one.
        assert!(!sees_every_writer(Path::new("/proc")));
    }

    #[test]
    fn watching_a_missing_root_fails() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("missing");
        let ignore = Arc::new(IgnoreRules::load(dir.path(), &[]).unwrap());
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let err = watch(&root, ignore, tx).err().unwrap();
        assert!(matches!(err, WatchError::Other { .. }), "{err:?}");
        assert!(err.to_string().contains("missing"), "{err}");
    }

    #[test]
    fn running_out_of_watches_says_how_to_raise_the_limit() {
        let root = Path::new("/home/u/Sync");
        let limit = notify::Error::new(notify::ErrorKind::MaxFilesWatch);
        let enospc = notify::Error::io(io::Error::from_raw_os_error(libc::ENOSPC));
        for err in [limit, enospc] {
            let mapped = watch_error(root, err);
            assert!(
                matches!(mapped, WatchError::TooManyWatches { .. }),
                "{mapped:?}"
            );
            let message = mapped.to_string();
            assert!(
                message.contains("sudo sysctl fs.inotify.max_user_watches="),
                "{message}"
            );
            assert!(message.contains("/home/u/Sync"), "{message}");
        }
        let emfile = notify::Error::io(io::Error::from_raw_os_error(libc::EMFILE));
        let mapped = watch_error(root, emfile);
        assert!(
            matches!(mapped, WatchError::TooManyInstances { .. }),
            "{mapped:?}"
        );
        assert!(mapped.to_string().contains("fs.inotify.max_user_instances"));
    }

    #[test]
    fn queue_overflow_asks_for_a_rescan_and_access_events_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let pump = Pump {
            ignore: Mutex::new(Arc::new(IgnoreRules::load(&root, &[]).unwrap())),
            sink: tx,
            health: Arc::default(),
            notify: Weak::new(),
            root,
        };

        let mut overflow = notify::Event::new(EventKind::Other);
        overflow.attrs.set_flag(notify::event::Flag::Rescan);
        let mut batch = Batch::default();
        pump.absorb(Ok(overflow), &mut batch);
        assert!(batch.rescan_all);

        let open = notify::Event::new(EventKind::Access(AccessKind::Open(AccessMode::Any)))
            .add_path(pump.root.join("a.txt"));
        let closed_after_write =
            notify::Event::new(EventKind::Access(AccessKind::Close(AccessMode::Write)))
                .add_path(pump.root.join("b.txt"));
        let mut batch = Batch::default();
        pump.absorb(Ok(open), &mut batch);
        pump.absorb(Ok(closed_after_write), &mut batch);
        let changed: Vec<&str> = batch.changed.iter().map(RelPath::as_str).collect();
        assert_eq!(changed, ["b.txt"]);
    }
}
