//! One pair's scheduler: the loop that turns watcher hints, timers and
//! control requests into syncs, one at a time.
//!
//! Every trigger is a [`PairMsg`] or a timer in one `select!`, so all the
//! reasons a sync can start are visible here: a debounced batch of changed
//! paths, the remote poll, the jittered safety scan, a failing path's retry,
//! and a request from `prism-syncctl`. The sync itself runs on a blocking
//! thread; messages that arrive meanwhile are folded into the next batch.
//!
//! A remote in a folder on this machine is watched like the local folder
//! (see `remote_watch`): its events are changed paths like the local
//! side's, and while the watch sees everything the remote poll is not
//! even a timer. The safety scan is kept either way.
//!
//! A run that finds the remote unreachable puts the pair in
//! [`PairState::Offline`]: changes keep collecting, but only the back-off
//! timer (2 s doubling to 5 min, see `engine::backoff::Offline`) or an
//! explicit request starts the next attempt. A run that gave up waiting for
//! another agent's lease is no failure: its batch (and its API sync id) is
//! kept and tried again after a short jittered pause
//! (`engine::backoff::LeaseBusy`), and status says whom it waits for.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::engine::backoff::{LeaseBusy, Offline};
use crate::engine::conflicts::{ResolveError, Resolved};
use crate::engine::history::{RestoreError, Restored};
use crate::engine::{PairEngine, SyncReport, SyncRequest, dedupe_roots};
use crate::journal::{ConflictRow, SyncStatus};
use crate::locks::LockExt;
use crate::model::{RelPath, Scope, Strategy};
use crate::remote::Problem;
use crate::tracker::ignore::IgnoreRules;
use crate::tracker::watch::{WatchEvent, WatchView};

use super::local_watch::LocalWatch;
use super::remote_watch::RemoteWatch;

/// Above this many pending paths a full scan is cheaper than path lookups.
const MAX_PENDING_PATHS: usize = 2_000;
/// A batch that keeps growing is synced at the latest this long after its
/// first change (or after one quiet window, if that is longer), so a busy
/// file cannot starve the pair. It does not shrink with the quiet window: a
/// file being written for minutes (a large copy) is hashed at each of these
/// syncs, only to be held as still changing.
const MAX_BATCH_WAIT: Duration = Duration::from_secs(1);

/// Everything that can happen to a pair.
#[derive(Debug)]
pub enum PairMsg {
    Watch(WatchEvent),
    /// An event of the watch on a remote folder on this machine.
    RemoteWatch(WatchEvent),
    /// A sync requested through the API, with the id already handed out.
    SyncNow {
        sync_id: String,
    },
    Resolve {
        row: Box<ConflictRow>,
        strategy: Strategy,
        merged_file: Option<PathBuf>,
        reply: oneshot::Sender<Result<Resolved, ResolveError>>,
    },
    /// Brings a trashed version of a file back, between syncs.
    Restore {
        path: RelPath,
        version: String,
        /// The token that asked; `None` for the local socket's owner.
        by: Option<String>,
        reply: oneshot::Sender<Result<Restored, RestoreError>>,
    },
    Pause,
    Resume,
    ConfirmDeletions,
    Shutdown,
}

/// What status shows about a pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PairState {
    Idle,
    Syncing,
    Paused,
    WaitingForConfirmation,
    /// The remote cannot be reached; the pair retries on a back-off timer.
    Offline,
    Error,
}

impl PairState {
    pub fn as_str(self) -> &'static str {
        match self {
            PairState::Idle => "idle",
            PairState::Syncing => "syncing",
            PairState::Paused => "paused",
            PairState::WaitingForConfirmation => "waiting_for_confirmation",
            PairState::Offline => "offline",
            PairState::Error => "error",
        }
    }
}

/// [`PairStatus::watcher`] while the watches see everything.
pub(super) const WATCH_OK: &str = "ok";

/// The live status of a pair, shared with the API.
#[derive(Clone, Debug)]
pub struct PairStatus {
    pub state: PairState,
    pub detail: Option<String>,
    pub pending: usize,
    pub watcher: String,
    pub problems: Vec<Problem>,
    pub last_report: Option<SyncReport>,
}

impl Default for PairStatus {
    fn default() -> Self {
        PairStatus {
            state: PairState::Idle,
            detail: None,
            pending: 0,
            watcher: WATCH_OK.to_owned(),
            problems: Vec::new(),
            last_report: None,
        }
    }
}

/// The timing of a pair's triggers.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub debounce: Duration,
    pub remote_poll: Duration,
    pub safety_scan: Duration,
}

/// How long a confirmation of held deletions lasts while the runs it is
/// for keep waiting for another device's lease: long enough to ride out
/// the hand-overs of two busy agents, short enough that a disk unmounted
/// meanwhile is not swept by a confirmation given for something else.
const CONFIRMATION_LIFETIME: Duration = Duration::from_secs(120);

/// Changes waiting for the next sync, and checks asked for.
///
/// A change is something seen: a path the watcher named, a failing path
/// due for a retry, a path a run left unsettled, or changes the watcher
/// could not name (an overflow, a lost root). Changes wait for a quiet
/// window and are what status counts as pending. A check is a full scan
/// asked for by a timer or a request (start-up, the remote poll, the
/// safety scan, resume, an offline retry): nothing is known to have
/// changed, so it is not pending work, and with no change waiting it is
/// due at once.
#[derive(Debug, Default)]
struct Pending {
    paths: BTreeSet<RelPath>,
    full: bool,
    /// The watcher saw changes it could not name: one pending change.
    unnamed_changes: bool,
    first_event: Option<Instant>,
    last_event: Option<Instant>,
    /// When a check was first asked for, while no change waits.
    check_at: Option<Instant>,
    trigger: Option<&'static str>,
    /// Something besides the remote poll asked for this batch.
    not_only_polled: bool,
}

impl Pending {
    fn note(&mut self, now: Instant, trigger: &'static str) {
        self.first_event.get_or_insert(now);
        self.last_event = Some(now);
        self.trigger.get_or_insert(trigger);
    }

    fn add_paths(&mut self, paths: impl IntoIterator<Item = RelPath>, now: Instant) {
        self.not_only_polled = true;
        self.paths.extend(paths);
        if self.paths.len() > MAX_PENDING_PATHS {
            self.full = true;
        }
        self.note(now, "watch");
    }

    /// Changes somewhere in the pair that the watcher could not name.
    fn add_unnamed(&mut self, now: Instant, trigger: &'static str) {
        self.not_only_polled = true;
        self.full = true;
        self.unnamed_changes = true;
        self.note(now, trigger);
    }

    /// A full scan to look for changes, where none is known.
    fn add_check(&mut self, now: Instant, trigger: &'static str) {
        self.not_only_polled |= trigger != "poll";
        self.full = true;
        self.check_at.get_or_insert(now);
        self.trigger.get_or_insert(trigger);
    }

    fn is_empty(&self) -> bool {
        !self.full && self.paths.is_empty()
    }

    /// Only the remote poll asked for this batch: no local change, no
    /// retry, no request.
    fn only_polled(&self) -> bool {
        self.full && !self.not_only_polled
    }

    /// How many changes wait: status's `pending`.
    fn count(&self) -> usize {
        self.paths.len().max(usize::from(self.unnamed_changes))
    }

    /// When the batch is ready: after a quiet window, or at the latest
    /// [`MAX_BATCH_WAIT`] after its first change; a check alone at once.
    fn ready_at(&self, debounce: Duration) -> Option<Instant> {
        match (self.first_event, self.last_event) {
            (Some(first), Some(last)) => {
                Some((last + debounce).min(first + MAX_BATCH_WAIT.max(debounce)))
            }
            _ => self.check_at,
        }
    }

    fn take(&mut self) -> (Scope, &'static str) {
        let scope = if self.full {
            Scope::Full
        } else {
            Scope::Paths(dedupe_roots(
                std::mem::take(&mut self.paths).into_iter().collect(),
            ))
        };
        let trigger = self.trigger.unwrap_or("watch");
        *self = Pending::default();
        (scope, trigger)
    }
}

/// Whether the local watch sees every change the pair syncs: it is whole
/// (no folder left unwatched), it follows the rules the engine holds, and
/// it sees other programs' writes (a local folder on a network or FUSE
/// file system is watched for this machine's writes only: another
/// machine's are seen by listing it).
fn local_whole(
    engine: &PairEngine,
    local_watch: Option<&WatchView>,
    watched_rules: &Arc<IgnoreRules>,
) -> bool {
    local_watch.is_some_and(WatchView::is_ok)
        && Arc::ptr_eq(&engine.ignore_rules(), watched_rules)
        && engine
            .local()
            .watch_root()
            .is_some_and(crate::tracker::watch::sees_every_writer)
}

/// Hands rules the engine reloaded (`.prismignore` changed) to both
/// watches. Each walks its tree to watch the folders the rules let in, so
/// it runs where blocking is allowed, and then asks for a rescan.
async fn follow_rules(
    rules: &Arc<IgnoreRules>,
    local_watch: Option<&WatchView>,
    remote_watch: Option<&mut RemoteWatch>,
) {
    let views: Vec<WatchView> = local_watch
        .cloned()
        .into_iter()
        .chain(remote_watch.and_then(|watch| watch.set_rules(rules.clone())))
        .collect();
    if views.is_empty() {
        return;
    }
    let rules = rules.clone();
    let _ = tokio::task::spawn_blocking(move || {
        for view in views {
            view.follow_rules(rules.clone());
        }
    })
    .await;
}

/// A safety-scan interval with ±10 % jitter, so many agents (or pairs)
/// started together do not scan in lockstep.
fn jittered(interval: Duration) -> Duration {
    let factor = 0.9 + fastrand::f64() * 0.2;
    interval.mul_f64(factor)
}

/// Runs a pair's scheduler until `Shutdown`.
pub async fn run(
    engine: Arc<PairEngine>,
    mut inbox: mpsc::UnboundedReceiver<PairMsg>,
    status: Arc<Mutex<PairStatus>>,
    timing: Timing,
    mut remote_watch: Option<RemoteWatch>,
    mut local_watch: LocalWatch,
) {
    let mut pending = Pending::default();
    pending.add_check(Instant::now(), "start-up");
    let mut api_syncs: Vec<String> = Vec::new();
    let mut paused = false;
    // When the user confirmed held deletions (see `CONFIRMATION_LIFETIME`).
    let mut confirmed: Option<Instant> = None;
    let mut next_poll = Instant::now() + timing.remote_poll;
    let mut next_safety = Instant::now() + jittered(timing.safety_scan);
    let mut offline: Option<Offline> = None;
    let mut busy: Option<LeaseBusy> = None;
    // The last run stopped at the mass-deletion guard: failing paths are
    // not retried until the user answers or a poll finds the trip gone
    // (each retry would only trip it again).
    let mut held_by_guard = false;
    // The rules the watches follow: they watch no folder those rules
    // ignore and drop events about ignored paths, so from the moment
    // `.prismignore` changed until they follow the new rules they do not
    // see everything the pair syncs.
    let mut watched_rules = engine.ignore_rules();

    loop {
        let now = Instant::now();
        // A watched remote is not polled while the local folder's watch is
        // whole too (a poll lists both sides): at a poll's time only the
        // remote root's identity is looked at (one `statx`), and an idle
        // pair otherwise sleeps until an event or its safety scan. The
        // safety scan stays, because a watch can miss changes (an
        // overflowed queue, another machine's writes on a network file
        // system mounted there).
        let polled = remote_watch.as_ref().is_none_or(RemoteWatch::needs_polls)
            || !local_whole(&engine, local_watch.view(), &watched_rules);
        // A paused pair wakes only for messages and the slow timers, so a
        // batch it is not allowed to sync cannot make it spin. An offline
        // pair likewise holds its batch and wakes for its retry instead.
        let mut deadline = next_poll.min(next_safety);
        if let Some(retry) = local_watch.retry_at() {
            deadline = deadline.min(retry);
        }
        let busy_held = busy.is_some_and(|b| b.retry_at > now);
        if let Some(busy) = busy.filter(|_| !paused) {
            deadline = deadline.min(busy.retry_at);
        }
        if let Some(offline) = offline.filter(|_| !paused) {
            deadline = deadline.min(offline.retry_at);
        } else if !paused {
            if let Some(ready) = pending.ready_at(timing.debounce) {
                deadline = deadline.min(ready);
            }
            if let Some(retry) = engine.next_retry().filter(|_| !held_by_guard) {
                deadline = deadline.min(retry.max(now + Duration::from_millis(50)));
            }
        }
        let message = if api_syncs.is_empty() || busy_held {
            tokio::select! {
                message = inbox.recv() => message,
                _ = tokio::time::sleep_until(deadline.into()) => None,
            }
        } else {
            inbox.try_recv().ok()
        };
        let now = Instant::now();
        let mut ignore_event = false;
        if let Some(message) = message {
            match message {
                PairMsg::Shutdown => break,
                PairMsg::Watch(event) => {
                    // The watch is asked, and the folder looked at: the
                    // watch before a restart may say so late.
                    if matches!(event, WatchEvent::RootGone) {
                        local_watch.still_watching(&status);
                    }
                    ignore_event = names_the_ignore_file(&event);
                    on_watch(&engine, &status, &mut pending, event, now)
                }
                PairMsg::RemoteWatch(event) => on_remote_watch(
                    &engine,
                    &status,
                    &mut pending,
                    remote_watch.as_mut(),
                    event,
                    now,
                ),
                PairMsg::SyncNow { sync_id } => api_syncs.push(sync_id),
                PairMsg::Resolve {
                    row,
                    strategy,
                    merged_file,
                    reply,
                } => {
                    let engine_for_resolve = engine.clone();
                    let result = tokio::task::spawn_blocking(move || {
                        engine_for_resolve.resolve(&row, strategy, merged_file.as_deref())
                    })
                    .await
                    .unwrap_or_else(|e| {
                        Err(ResolveError::Invalid(format!(
                            "the resolution crashed: {e}"
                        )))
                    });
                    if let Ok(resolved) = &result {
                        pending.add_paths(resolved.paths.iter().cloned(), now);
                        pending.trigger = Some("api");
                    }
                    let _ = reply.send(result);
                }
                PairMsg::Restore {
                    path,
                    version,
                    by,
                    reply,
                } => {
                    let engine_for_restore = engine.clone();
                    let result = tokio::task::spawn_blocking(move || {
                        engine_for_restore.restore(&path, &version, by.as_deref())
                    })
                    .await
                    .unwrap_or_else(|e| {
                        Err(RestoreError::Invalid(format!("the restore crashed: {e}")))
                    });
                    // Synced like any local change: at once, or when a
                    // paused pair is resumed.
                    if let Ok(restored) = &result {
                        pending.add_paths(restored.paths.iter().cloned(), now);
                        pending.trigger = Some("api");
                    }
                    let _ = reply.send(result);
                }
                PairMsg::Pause => paused = true,
                PairMsg::Resume => {
                    paused = false;
                    pending.add_check(now, "resume");
                }
                PairMsg::ConfirmDeletions => {
                    confirmed = Some(now);
                    pending.add_check(now, "api");
                }
            }
        }
        // `.prismignore` changed: its rules are loaded, and the pair is
        // looked at whole under them. The file is looked at whether an
        // event said so or not (no watch, lost events), and an event
        // counts on its own (a same-size rewrite within one tick of the
        // file system's clock, two seconds on FAT, leaves its look alike).
        if local_watch.ignore_file_changed() | ignore_event {
            reload_ignore(&engine, &status);
            pending.add_check(now, "watch");
        }
        // The watches follow new rules before the sync the change asked
        // for, and the full rescan they ask for joins that sync's batch.
        let rules = engine.ignore_rules();
        if !Arc::ptr_eq(&rules, &watched_rules) {
            follow_rules(&rules, local_watch.view(), remote_watch.as_mut()).await;
            watched_rules = rules;
        }
        // A local watch that failed to start, due to be tried again.
        if local_watch.retry_at().is_some_and(|at| at <= now)
            && local_watch.restart(engine.ignore_rules(), &status).await
        {
            pending.add_check(now, "watch");
        }
        if now >= next_poll {
            if !local_watch.still_watching(&status) {
                pending.add_check(now, "watch");
            }
            if polled {
                pending.add_check(now, "poll");
            } else if let Some(watch) = remote_watch.as_mut()
                && !watch.still_watching()
            {
                pending.add_check(now, "watch");
            }
            next_poll = now + timing.remote_poll;
        }
        if now >= next_safety {
            pending.add_check(now, "schedule");
            next_safety = now + jittered(timing.safety_scan);
        }
        if !held_by_guard && engine.next_retry().is_some_and(|retry| retry <= now) {
            let failing: Vec<RelPath> =
                engine.failing_paths().into_iter().map(|(p, _)| p).collect();
            pending.add_paths(failing, now);
            pending.trigger = Some("retry");
        }
        show_pending(&status, &pending);
        let offline_due = offline.is_some_and(|o| o.retry_at <= now);
        if offline_due {
            pending.add_check(now, "retry");
            pending.trigger = Some("retry");
        }
        // A paused pair syncs only when a client asks for it explicitly.
        if paused && api_syncs.is_empty() {
            status.locked().state = PairState::Paused;
            continue;
        }
        let due = pending
            .ready_at(timing.debounce)
            .is_some_and(|at| at <= now);
        let busy_due = busy.is_some_and(|b| b.retry_at <= now);
        let held = offline.is_some() && !offline_due || busy.is_some() && !busy_due;
        let asked = !api_syncs.is_empty() && (busy.is_none() || busy_due);
        if asked || offline_due || busy_due || (!held && due && !pending.is_empty()) {
            let sync_id = (!api_syncs.is_empty()).then(|| api_syncs.remove(0));
            // The local side needs no look when its watch saw everything.
            let poll_only = sync_id.is_none()
                && pending.only_polled()
                && local_whole(&engine, local_watch.view(), &watched_rules);
            let (scope, trigger) = if sync_id.is_some() && pending.is_empty() {
                (Scope::Full, "api")
            } else if sync_id.is_some() {
                pending.add_check(now, "api");
                pending.take()
            } else {
                pending.take()
            };
            let request = SyncRequest {
                scope: scope.clone(),
                trigger: trigger.to_owned(),
                sync_id,
                confirmed: confirmed.is_some_and(|at| at.elapsed() < CONFIRMATION_LIFETIME),
                poll_only,
            };
            let report = sync(&engine, &status, request, &mut offline, &mut busy).await;
            // The run may have made the remote root, or it came back: a
            // watch that starts now saw nothing before, so a listing follows.
            let remote_restarted = match remote_watch.as_mut() {
                Some(watch) => watch.restart().await,
                None => false,
            };
            if remote_restarted {
                pending.add_check(Instant::now(), "watch");
            }
            // The local folder may have come (a disk mounted after the
            // agent started): likewise.
            if local_watch.restart(engine.ignore_rules(), &status).await {
                pending.add_check(Instant::now(), "watch");
            }
            // A watch problem said earlier (a folder a watch could not
            // watch, events it lost) is over once both watches are whole
            // again and a run has looked at the whole pair since (one that
            // waited, stopped at the guard or failed may not have).
            if matches!(scope, Scope::Full)
                && report.waiting.is_none()
                && report.guard.is_none()
                && report.error.is_none()
                && !report.offline
                && local_watch.view().is_some_and(WatchView::is_ok)
                && remote_watch
                    .as_ref()
                    .is_none_or(RemoteWatch::misses_no_folder)
            {
                let mut status = status.locked();
                if status.watcher != WATCH_OK {
                    tracing::info!(pair = %engine.name, "the watches see every folder again");
                    status.watcher = WATCH_OK.to_owned();
                }
            }
            // A paused pair synced only because a client asked: it stays
            // paused, and status must say so rather than idle.
            if paused {
                let mut status = status.locked();
                if status.state == PairState::Idle {
                    status.state = PairState::Paused;
                }
            }
            if report.waiting.is_some() {
                // Nothing was done: the same batch waits for the retry.
                match scope {
                    Scope::Full => pending.add_check(Instant::now(), trigger),
                    Scope::Paths(paths) => pending.add_paths(paths, Instant::now()),
                }
                pending.trigger = Some(trigger);
                if !report.sync_id.is_empty() {
                    api_syncs.insert(0, report.sync_id.clone());
                }
            }
            // A confirmation holds until a run gets past the guard (one
            // that only waited for the lease has not), for a short while:
            // what the user confirmed was what they saw then.
            if report.waiting.is_none() {
                held_by_guard = report.guard.is_some();
            }
            if report.guard.is_none() && report.waiting.is_none()
                || confirmed.is_some_and(|at| at.elapsed() >= CONFIRMATION_LIFETIME)
            {
                confirmed = None;
            }
            if !report.unsettled.is_empty() {
                pending.add_paths(report.unsettled.iter().cloned(), Instant::now());
            }
            // The batch the run took is done: status must not keep showing
            // it as pending until the next trigger arrives.
            show_pending(&status, &pending);
        }
    }
    status.locked().state = PairState::Idle;
}

/// The sentence status shows for an offline pair.
fn offline_detail(delay: Duration, reason: &str) -> String {
    format!(
        "offline, retrying in {} s: {reason}",
        delay.as_secs_f64().round() as u64
    )
}

/// The sentence status shows while a pair waits for another agent's lease.
pub fn waiting_detail(holder: &str) -> String {
    format!("waiting for another device: {holder}")
}

/// Publishes how many changes wait for the next sync ([`Pending::count`]).
fn show_pending(status: &Mutex<PairStatus>, pending: &Pending) {
    status.locked().pending = pending.count();
}

/// Runs one sync and publishes its outcome. `offline` is the pair's
/// back-off for an unreachable remote: a run that could not reach it
/// extends the back-off, any other outcome clears it. `busy` is the same
/// for a lease another agent keeps.
async fn sync(
    engine: &Arc<PairEngine>,
    status: &Arc<Mutex<PairStatus>>,
    request: SyncRequest,
    offline: &mut Option<Offline>,
    busy: &mut Option<LeaseBusy>,
) -> SyncReport {
    {
        let mut status = status.locked();
        status.state = PairState::Syncing;
        status.detail = None;
    }
    let trigger = request.trigger.clone();
    let scope = request.scope.clone();
    let engine_for_sync = engine.clone();
    let report = match tokio::task::spawn_blocking(move || engine_for_sync.sync(&request)).await {
        Ok(report) => report,
        Err(e) => {
            tracing::error!(pair = %engine.name, error = %e, "a sync crashed");
            let mut status = status.locked();
            status.state = PairState::Error;
            status.detail = Some(format!("a sync crashed: {e}"));
            return SyncReport {
                sync_id: String::new(),
                status: SyncStatus::Failed,
                counts: Default::default(),
                guard: None,
                problems: Vec::new(),
                error: Some(e.to_string()),
                offline: false,
                unsettled: Vec::new(),
                journal_restored: false,
                waiting: None,
            };
        }
    };
    if let Some(holder) = &report.waiting {
        let next = LeaseBusy::after(*busy, Instant::now(), fastrand::f64());
        *busy = Some(next);
        let pause = next.retry_at.saturating_duration_since(Instant::now());
        tracing::debug!(pair = %engine.name, %holder, pause_ms = pause.as_millis() as u64, "waiting for another agent's lease");
        let mut status = status.locked();
        status.state = PairState::Syncing;
        status.detail = Some(format!(
            "{}; trying again in {} s",
            waiting_detail(holder),
            pause.as_secs_f64().ceil() as u64
        ));
        return report;
    }
    *busy = None;
    // A run with nothing to do has no sync id and is not worth a log line
    // at the default level: an idle agent polls every 30 seconds.
    if report.sync_id.is_empty() {
        tracing::debug!(pair = %engine.name, trigger = %trigger, "nothing to sync");
    } else {
        tracing::info!(
            pair = %engine.name,
            sync_id = %report.sync_id,
            trigger = %trigger,
            status = report.status.as_str(),
            uploaded = report.counts.uploaded,
            downloaded = report.counts.downloaded,
            deleted = report.counts.deleted_local + report.counts.deleted_remote,
            moved = report.counts.moved,
            conflicts = report.counts.conflicts,
            errors = report.counts.errors,
            "sync finished"
        );
    }
    *offline = report
        .offline
        .then(|| Offline::after(*offline, Instant::now()));
    let mut status = status.locked();
    (status.state, status.detail) = match (*offline, &report.guard, &report.error) {
        (Some(offline), _, Some(error)) => {
            let detail = offline_detail(offline.delay_from(Instant::now()), error);
            tracing::warn!(pair = %engine.name, %detail, "the remote is offline");
            (PairState::Offline, Some(detail))
        }
        (_, Some(_), Some(error)) => (PairState::WaitingForConfirmation, Some(error.clone())),
        (_, _, Some(error)) => (PairState::Error, Some(error.clone())),
        _ => (PairState::Idle, None),
    };
    status.problems = problems_after(std::mem::take(&mut status.problems), &report, &scope);
    status.last_report = Some(report.clone());
    report
}

/// The problems status shows after a run over `scope`. A run over some
/// paths (a watcher's) speaks only for them: what an earlier run found
/// about paths outside them still holds and stays shown until a full run
/// looks again. That includes problems of no path about what is in the
/// folders (a name no path can hold, one with a control character, found
/// only by the walk of its folder; a run that finds one again shows it
/// once), but not those about a run itself, which every run reports again
/// while they hold ([`crate::engine::is_about_the_run`]).
fn problems_after(previous: Vec<Problem>, report: &SyncReport, scope: &Scope) -> Vec<Problem> {
    let kept = match scope {
        Scope::Full => Vec::new(),
        Scope::Paths(_) => previous
            .into_iter()
            .filter(|p| !crate::engine::is_about_the_run(p))
            .filter(|p| !p.path.as_ref().is_some_and(|path| scope.contains(path)))
            .filter(|p| !report.problems.contains(p))
            .collect(),
    };
    kept.into_iter()
        .chain(report.problems.iter().cloned())
        .collect()
}

/// Whether a local watch event says `.prismignore` changed.
fn names_the_ignore_file(event: &WatchEvent) -> bool {
    matches!(event, WatchEvent::Changed(paths)
        if paths.iter().any(|p| p.as_str() == crate::tracker::ignore::PRISMIGNORE_FILE))
}

fn on_watch(
    engine: &PairEngine,
    status: &Mutex<PairStatus>,
    pending: &mut Pending,
    event: WatchEvent,
    now: Instant,
) {
    match event {
        // A change of `.prismignore` is taken in by the scheduler, right
        // after the events.
        WatchEvent::Changed(paths) => pending.add_paths(paths, now),
        WatchEvent::Rescan(Some(path)) => pending.add_paths([path], now),
        WatchEvent::Rescan(None) | WatchEvent::RootGone => pending.add_unnamed(now, "watch"),
        WatchEvent::Problem(message) => {
            tracing::warn!(pair = %engine.name, %message, "watcher problem");
            status.locked().watcher = message;
            pending.add_unnamed(now, "watch");
        }
    }
}

/// An event on a watched remote folder: its paths are synced like the
/// local watcher's. Its `.prismignore` is not this device's rules until it
/// arrives in the local folder, which the local watcher reports.
fn on_remote_watch(
    engine: &PairEngine,
    status: &Mutex<PairStatus>,
    pending: &mut Pending,
    remote_watch: Option<&mut RemoteWatch>,
    event: WatchEvent,
    now: Instant,
) {
    match event {
        WatchEvent::Changed(paths) => pending.add_paths(paths, now),
        WatchEvent::RootGone => {
            // The watch is asked, and the folder looked at: the watch
            // before a restart may say so late.
            if let Some(remote_watch) = remote_watch {
                remote_watch.still_watching();
            }
            pending.add_unnamed(now, "watch");
        }
        other => on_watch(engine, status, pending, other, now),
    }
}

/// How a problem with `.prismignore` ends.
const KEPT_RULES: &str = "; the previous rules stay in force";

fn reload_ignore(engine: &PairEngine, status: &Mutex<PairStatus>) {
    let root = engine.settings().local_root.clone();
    match IgnoreRules::load(&root, &engine.settings().ignore_patterns) {
        Ok(rules) => {
            engine.set_ignore_rules(rules);
            let ignore_file = RelPath::new(crate::tracker::ignore::PRISMIGNORE_FILE).ok();
            status
                .locked()
                .problems
                .retain(|p| !(p.path == ignore_file && p.message.ends_with(KEPT_RULES)));
        }
        Err(e) => {
            tracing::warn!(pair = %engine.name, error = %e, "keeping the previous ignore rules");
            let problem = Problem {
                path: RelPath::new(crate::tracker::ignore::PRISMIGNORE_FILE).ok(),
                message: format!("{e}{KEPT_RULES}"),
            };
            // Shown now, and by every run's report until the file loads.
            engine.keep_ignore_problem(problem.clone());
            let mut status = status.locked();
            status.problems.retain(|p| p != &problem);
            status.problems.push(problem);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    #[test]
    fn a_batch_waits_for_a_quiet_window_but_not_forever() {
        let debounce = Duration::from_millis(100);
        let start = Instant::now();
        let mut pending = Pending::default();
        pending.add_paths([p("a")], start);
        assert_eq!(pending.ready_at(debounce), Some(start + debounce));
        let later = start + Duration::from_millis(80);
        pending.add_paths([p("b")], later);
        assert_eq!(pending.ready_at(debounce), Some(later + debounce));
        let much_later = start + MAX_BATCH_WAIT;
        pending.add_paths([p("c")], much_later);
        assert_eq!(pending.ready_at(debounce), Some(start + MAX_BATCH_WAIT));

        // A quiet window longer than the cap is still honoured once.
        let long = MAX_BATCH_WAIT * 3;
        assert_eq!(pending.ready_at(long), Some(start + long));
    }

    #[test]
    fn a_check_is_due_at_once_and_is_not_pending_work() {
        let debounce = Duration::from_millis(100);
        let start = Instant::now();
        let mut pending = Pending::default();
        pending.add_check(start, "poll");
        assert_eq!(pending.ready_at(debounce), Some(start));
        assert_eq!(pending.count(), 0, "a poll of an idle pair is not pending");
        assert!(!pending.is_empty());
        assert_eq!(pending.take(), (Scope::Full, "poll"));

        // Changes the watcher could not name are one pending change, and
        // wait for the quiet window like named ones; a check meanwhile
        // waits with them.
        pending.add_unnamed(start, "watch");
        pending.add_check(start, "poll");
        assert_eq!(pending.count(), 1);
        assert_eq!(pending.ready_at(debounce), Some(start + debounce));
        pending.add_paths([p("a"), p("b")], start);
        assert_eq!(pending.count(), 2);
        assert_eq!(pending.take(), (Scope::Full, "watch"));
        assert_eq!(pending.count(), 0);
    }

    #[test]
    fn the_offline_detail_names_the_wait_and_the_reason() {
        assert_eq!(
            offline_detail(
                Duration::from_millis(3_900),
                "sftp://u@h:22/x cannot be reached: refused"
            ),
            "offline, retrying in 4 s: sftp://u@h:22/x cannot be reached: refused"
        );
    }

    #[test]
    fn a_run_over_some_paths_keeps_the_problems_found_elsewhere() {
        let problem = |path: Option<&str>, message: &str| Problem {
            path: path.map(p),
            message: message.to_owned(),
        };
        let previous = vec![
            problem(Some("links/out"), "a symbolic link"),
            problem(Some("docs/a.txt"), "unreadable"),
            problem(None, "the change log cannot be written"),
            problem(None, "bad\x1bname is not synced"),
            // About the run that found it: a later run that does not
            // report it speaks for it, whatever its scope.
            problem(
                None,
                "cannot update Prism Sync's records on the remote (refused)",
            ),
        ];
        let report = SyncReport {
            sync_id: String::new(),
            status: SyncStatus::Completed,
            counts: Default::default(),
            guard: None,
            problems: vec![
                problem(Some("docs/b.txt"), "unreadable"),
                problem(None, "the change log cannot be written"),
            ],
            error: None,
            offline: false,
            unsettled: Vec::new(),
            journal_restored: false,
            waiting: None,
        };
        let after = problems_after(previous.clone(), &report, &Scope::Paths(vec![p("docs")]));
        assert_eq!(
            after,
            [
                problem(Some("links/out"), "a symbolic link"),
                problem(None, "bad\x1bname is not synced"),
                problem(Some("docs/b.txt"), "unreadable"),
                problem(None, "the change log cannot be written"),
            ]
        );
        assert_eq!(
            problems_after(previous, &report, &Scope::Full),
            report.problems
        );
    }

    #[test]
    fn taking_a_batch_collapses_nested_paths() {
        let mut pending = Pending::default();
        pending.add_paths([p("a/b"), p("a"), p("c")], Instant::now());
        let (scope, trigger) = pending.take();
        assert_eq!(scope, Scope::Paths(vec![p("a"), p("c")]));
        assert_eq!(trigger, "watch");
        assert!(pending.is_empty());
    }

    #[test]
    fn too_many_paths_become_a_full_scan() {
        let mut pending = Pending::default();
        let paths = (0..=MAX_PENDING_PATHS).map(|i| p(&format!("f{i}")));
        pending.add_paths(paths, Instant::now());
        assert_eq!(pending.take().0, Scope::Full);
    }
}
