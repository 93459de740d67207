//! One pair's sync: snapshot both sides, reconcile, guard, execute, settle
//! conflicts, and repeat until nothing is left to do.
//!
//! [`PairEngine::sync`] is blocking and owns a whole run: the journal's
//! sync row, the remote lease, the rounds of plan-and-execute, and the final
//! status. Scheduling (when to sync, and which paths) is the agent's job;
//! deciding what to do is `reconcile`'s; doing it is the executor's.
//!
//! Architecture invariant: the engine never deletes or overwrites anything
//! except through a replica call that carries what the plan expected to
//! find, and every such call moves the old version to a trash.

pub mod backoff;
mod change_log;
pub mod conflicts;
pub mod executor;
pub mod guard;
pub mod history;
mod lease_keeper;
pub mod lease_wait;
mod lineage;
pub mod progress;
pub mod recorder;

use std::collections::BTreeSet;
use std::io::Read;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::clock::Clock;
use crate::journal::{
    BaseEdit, ChangeType, Journal, JournalError, NewChange, PairId, Step, SyncCounts, SyncStatus,
};
use crate::locks::LockExt;
use crate::model::{
    BaseTree, ContentHash, Entry, FileMeta, RelPath, Scope, Side, SideTree, Strategy,
};
use crate::reconcile::{self, Input, Policy};
use crate::remote::{Problem, Replica, ReplicaError, RootState};
use crate::tracker::ignore::IgnoreRules;

use backoff::Backoff;
use executor::Trees;
use guard::GuardTrip;
use lease_keeper::LeaseKeeper;
use progress::Progress;
use recorder::Recorder;

/// The counters of one run, as the journal stores them.
pub type RunTally = SyncCounts;

/// How one pair's engine behaves.
#[derive(Clone, Debug)]
pub struct EngineSettings {
    /// The pair's name.
    pub pair_name: String,
    /// The pair's configured ignore patterns, for reloading the rules
    /// when `.prismignore` changes.
    pub ignore_patterns: Vec<String>,
    /// The device name written to the change log and conflict copies.
    pub device: String,
    pub parallel_transfers: usize,
    /// The pair's default conflict strategy.
    pub strategy: Strategy,
    /// The local folder, for the agent's watcher and its reloads of
    /// `.prismignore`. The engine itself reaches the local side only
    /// through its local [`Replica`].
    pub local_root: PathBuf,
    /// How long the remote lease lasts before another agent may take it.
    pub lease_ttl: Duration,
    /// How long trashed versions are kept; the change log on the remote
    /// keeps its entries as long.
    pub trash_retention: Duration,
    /// Stamps conflict copies and merged files ([`Clock::system`] but in
    /// tests of devices whose clocks disagree).
    pub clock: Clock,
}

/// Files up to this size that are UTF-8 text keep their base content in
/// the journal, for three-way merges.
pub const MERGE_BASE_MAX_BYTES: u64 = 256 * 1024;

/// The device a version that came from the remote is credited to, in the
/// change log and in conflict-copy names. Which device wrote a remote
/// version is not known to the remote protocols, and it is never this one
/// (a version this device wrote and the remote still holds agrees with
/// the base or with the local side, so it cannot be in a conflict).
pub const REMOTE_ORIGIN: &str = "remote";

/// What a run needs from the engine, borrowed for its duration.
pub struct EngineContext<'a> {
    pub journal: &'a Mutex<Journal>,
    pub pair: PairId,
    pub settings: &'a EngineSettings,
    /// How this run settles conflicts: the pair's strategy, or `manual`
    /// while a restored journal is re-discovered.
    pub strategy: Strategy,
    pub progress: &'a Progress,
    pub sync_id: String,
    pub cancel: &'a AtomicBool,
    /// Raised when the remote lease could not be renewed: stop writing.
    pub lease_lost: &'a AtomicBool,
    pub local: &'a dyn Replica,
    pub remote: &'a dyn Replica,
    recorder: Recorder,
}

impl EngineContext<'_> {
    /// Whether the run must stop at its next step: the agent is stopping,
    /// the remote lease was lost, or finished steps cannot be recorded.
    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
            || self.lease_lost.load(Ordering::Relaxed)
            || self.recorder.has_failed()
    }

    pub fn side(&self, side: Side) -> &dyn Replica {
        match side {
            Side::Local => self.local,
            Side::Remote => self.remote,
        }
    }

    /// Records one finished action's base edits and change rows, in a
    /// batch, once both replicas flushed its effects (see [`recorder`]).
    /// Should recording fail, the run is cancelled and [`Self::flush`]
    /// reports why.
    pub fn commit(&self, step: Step) {
        self.recorder.add(step);
    }

    /// Records every step committed so far and waits until it is done.
    pub fn flush(&self) -> Result<(), ReplicaError> {
        self.recorder.finish()
    }

    /// A change-log row carried by this run.
    pub fn change(
        &self,
        change_type: ChangeType,
        path: &RelPath,
        from: Option<&RelPath>,
        is_dir: bool,
        origin: Side,
        meta: Option<&FileMeta>,
    ) -> NewChange {
        NewChange {
            change_type,
            path: path.clone(),
            from_path: from.cloned(),
            is_dir,
            origin_side: origin,
            origin_device: match origin {
                Side::Local => self.settings.device.clone(),
                Side::Remote => REMOTE_ORIGIN.to_owned(),
            },
            sync_id: Some(self.sync_id.clone()),
            hash: meta.map(|m| m.hash),
            size: meta.map(|m| m.size),
        }
    }

    /// Which device made the version `hash` of `path`, if known (see
    /// `Journal::origin_of`): the other devices' changes read this run
    /// are included, so a version about to be applied or kept as a
    /// conflict copy can be named after its device.
    pub fn origin_of(&self, path: &RelPath, hash: &ContentHash) -> Option<String> {
        match self.journal.locked().origin_of(self.pair, path, hash) {
            Ok(origin) => origin.map(|o| o.device),
            Err(e) => {
                tracing::warn!(path = %path, error = %e, "cannot look up which device made a version");
                None
            }
        }
    }

    /// The base content to keep for a later three-way merge: small UTF-8
    /// text files only, and only for pairs that merge automatically.
    pub fn base_content(&self, path: &RelPath, meta: &FileMeta) -> Vec<(ContentHash, Vec<u8>)> {
        if self.settings.strategy != Strategy::AutoMerge || meta.size > MERGE_BASE_MAX_BYTES {
            return Vec::new();
        }
        // Read back from the local side, which holds the version now;
        // content that cannot be read or has changed again is not kept
        // (a later merge of this path then falls back to manual).
        let mut bytes = Vec::new();
        let read = self.local.open(path).and_then(|reader| {
            reader
                .take(MERGE_BASE_MAX_BYTES + 1)
                .read_to_end(&mut bytes)
                .map_err(|e| ReplicaError::io("read", path, e))
        });
        match read {
            Ok(_) if ContentHash::of_bytes(&bytes) == meta.hash && conflicts::is_text(&bytes) => {
                vec![(meta.hash, bytes)]
            }
            _ => Vec::new(),
        }
    }
}

/// What to sync and why.
#[derive(Clone, Debug)]
pub struct SyncRequest {
    pub scope: Scope,
    /// Why it runs: "start-up", "watch", "poll", "api", "retry"…
    pub trigger: String,
    /// A sync id already handed to a client, if any.
    pub sync_id: Option<String>,
    /// The user confirmed the deletions the guard stopped.
    pub confirmed: bool,
    /// Only the remote poll asked for this run, and the local folder's
    /// watch is whole: nothing local is known to have changed. A remote
    /// whose change marker is still the one the last quiet run saw (see
    /// [`Replica::change_marker`]) is then not even listed.
    pub poll_only: bool,
}

/// What a run did.
#[derive(Clone, Debug)]
pub struct SyncReport {
    pub sync_id: String,
    pub status: SyncStatus,
    pub counts: SyncCounts,
    /// Set when the mass-deletion guard stopped the run.
    pub guard: Option<GuardTrip>,
    pub problems: Vec<Problem>,
    pub error: Option<String>,
    /// The run stopped because a replica could not be reached at all
    /// (`error` says why): the scheduler retries the whole pair later
    /// instead of backing off each path.
    pub offline: bool,
    /// Paths that changed while the run worked on them: sync them again.
    pub unsettled: Vec<RelPath>,
    /// This run found the journal older than the remote (restored from a
    /// backup) and re-discovered the pair instead of trusting its base.
    pub journal_restored: bool,
    /// Set when the run found work but another agent kept the remote's
    /// lease for as long as the run waited: who holds it. The run did
    /// nothing, recorded nothing and is not a failure; the scheduler runs
    /// it again shortly (an API sync keeps its id).
    pub waiting: Option<String>,
}

/// A failure that stops a whole run.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("journal: {0}")]
    Journal(#[from] JournalError),
    #[error("{0}")]
    Replica(#[from] ReplicaError),
    #[error("{0}")]
    Guard(GuardTrip),
    /// Another agent held the lease for as long as the run waited.
    #[error("the remote is busy: {0}")]
    Busy(String),
    /// The run panicked (a bug); the sentence comes from [`crash_report`].
    /// What it finished and recorded stands; the rest is planned afresh by
    /// the next sync.
    #[error("{0}")]
    Crashed(String),
}

/// What a report says about a panic caught in a run, wherever it was
/// caught (the run's thread, the journal recorder).
pub fn crash_report(panic: &(dyn std::any::Any + Send)) -> String {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned());
    format!(
        "the sync stopped on an internal error ({message}); please report it. The pair is \
         synced again at its next change or poll"
    )
}

/// The most plan-and-execute rounds one run makes. A round repeats only
/// when something changed under it or a conflict copy must propagate.
const MAX_ROUNDS: usize = 4;

/// How a run says it could not update its records on the remote.
const RECORDS_PROBLEM: &str = "cannot update Prism Sync's records on the remote";

/// Whether `problem` is about the run that reported it rather than about
/// what is in the folders (its records on the remote, a restored journal
/// found): every run reports it again while it holds, so a later run of
/// any scope that does not report it speaks for it.
pub fn is_about_the_run(problem: &Problem) -> bool {
    problem.path.is_none()
        && (problem.message.starts_with(RECORDS_PROBLEM)
            || problem.message.starts_with(lineage::RESTORED))
}

/// A pair and the machinery to sync it.
pub struct PairEngine {
    pub name: String,
    pub pair: PairId,
    /// The two sides, alike to the engine: the local folder is a replica
    /// as any remote is, and is read, stat'ed and written only through it.
    local: Box<dyn Replica>,
    remote: Box<dyn Replica>,
    journal: Arc<Mutex<Journal>>,
    settings: EngineSettings,
    ignore: Mutex<Arc<IgnoreRules>>,
    pub progress: Progress,
    backoff: Mutex<Backoff>,
    cancel: Arc<AtomicBool>,
    last_guard: Mutex<Option<GuardTrip>>,
    /// Set once a run found the journal older than the remote; shown with
    /// every later report's problems while the agent runs, so status keeps
    /// saying why conflicts appeared.
    restored_notice: Mutex<Option<Problem>>,
    /// While a run waits for another agent's lease: who holds it.
    lease_holder: Mutex<Option<String>>,
    /// This device's change and trash logs on the remote, once a run
    /// opened them.
    log_writers: Mutex<change_log::LogWriters>,
    /// The remote's change marker as the last run saw it, if that run was
    /// quiet: a full listing of both sides with nothing to do, nothing
    /// held and no problem. Any other run clears it.
    quiet_marker: Mutex<Option<String>>,
    /// Why `.prismignore` could not be loaded, while the rules before it
    /// stay in force: shown with every report's problems until it loads.
    ignore_problem: Mutex<Option<Problem>>,
}

impl PairEngine {
    pub fn new(
        pair: PairId,
        local: Box<dyn Replica>,
        remote: Box<dyn Replica>,
        journal: Arc<Mutex<Journal>>,
        settings: EngineSettings,
        ignore: IgnoreRules,
    ) -> PairEngine {
        PairEngine {
            name: settings.pair_name.clone(),
            pair,
            local,
            remote,
            journal,
            settings,
            ignore: Mutex::new(Arc::new(ignore)),
            progress: Progress::default(),
            backoff: Mutex::new(Backoff::default()),
            cancel: Arc::new(AtomicBool::new(false)),
            last_guard: Mutex::new(None),
            restored_notice: Mutex::new(None),
            lease_holder: Mutex::new(None),
            log_writers: Mutex::new(change_log::LogWriters::default()),
            quiet_marker: Mutex::new(None),
            ignore_problem: Mutex::new(None),
        }
    }

    pub fn settings(&self) -> &EngineSettings {
        &self.settings
    }

    pub fn local(&self) -> &dyn Replica {
        self.local.as_ref()
    }

    pub fn remote(&self) -> &dyn Replica {
        self.remote.as_ref()
    }

    /// The flag that stops a run between actions (set on shutdown).
    pub fn cancel_flag(&self) -> Arc<AtomicBool> {
        self.cancel.clone()
    }

    pub fn ignore_rules(&self) -> Arc<IgnoreRules> {
        self.ignore.locked().clone()
    }

    pub fn set_ignore_rules(&self, rules: IgnoreRules) {
        *self.ignore_problem.locked() = None;
        *self.ignore.locked() = Arc::new(rules);
        // Paths the old rules ignored were never compared.
        *self.quiet_marker.locked() = None;
    }

    /// Records why `.prismignore` could not be loaded: every report says
    /// so until rules load again ([`PairEngine::set_ignore_rules`]).
    pub fn keep_ignore_problem(&self, problem: Problem) {
        *self.ignore_problem.locked() = Some(problem);
    }

    /// Paths failing and waiting for their retry, with their last error.
    pub fn failing_paths(&self) -> Vec<(RelPath, String)> {
        self.backoff
            .locked()
            .failures()
            .map(|(p, f)| (p.clone(), f.error.clone()))
            .collect()
    }

    /// A new password was stored for the remote: the next sync logs in
    /// with it (see [`Replica::forget_login`]).
    pub fn forget_remote_login(&self) {
        self.remote.forget_login();
    }

    /// Whether the remote's replaces and deletes are only re-checked, not
    /// conditional ([`Replica::rechecked_writes`]).
    pub fn remote_writes_rechecked(&self) -> bool {
        self.remote.rechecked_writes()
    }

    /// How the agent reaches the remote, where a process of its own stands
    /// between ([`Replica::transport`]).
    pub fn remote_transport(&self) -> Option<String> {
        self.remote.transport()
    }

    /// Who holds the remote's lease while a run waits for it.
    pub fn waiting_for_lease(&self) -> Option<String> {
        self.lease_holder.locked().clone()
    }

    /// When the earliest failing path may be retried.
    pub fn next_retry(&self) -> Option<Instant> {
        self.backoff.locked().next_retry()
    }

    /// Runs one sync to the end and records it in the journal. Never
    /// panics on bad input; a run that cannot start is reported as failed,
    /// and so is a run that panicked (a bug): the panic is caught here, so
    /// the pair's scheduler carries on and the locks it held are recovered
    /// (see `crate::locks`).
    ///
    /// A run that finds nothing to do leaves no trace in the journal
    /// unless a client asked for it (then it has a sync id already): an
    /// idle agent polling every 30 seconds must not grow the journal.
    pub fn sync(&self, request: &SyncRequest) -> SyncReport {
        let mut run = Run {
            engine: self,
            sync_id: request.sync_id.clone(),
            tally: RunTally::default(),
            problems: Vec::new(),
            failed: Vec::new(),
            unsettled: Vec::new(),
            journal_restored: false,
            listing_cache: None,
            held_any: false,
            quiet_at: None,
        };
        let looked_at = Instant::now();
        // The run's state is a report under construction and the engine's
        // is behind recovering locks: both are fit to report after a panic.
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| run.run(request)))
            .unwrap_or_else(|panic| Err(SyncError::Crashed(crash_report(panic.as_ref()))));
        // The deletions the user confirmed are carried out (or settled
        // otherwise): the guard's window starts again from here.
        if request.confirmed && !matches!(result, Err(SyncError::Busy(_) | SyncError::Guard(_))) {
            let confirmed = self
                .journal
                .locked()
                .confirm_deletions(self.pair, SystemTime::now());
            if let Err(e) = confirmed {
                tracing::warn!(pair = %self.name, error = %e, "cannot record the confirmation of deletions");
            }
        }
        if let Err(SyncError::Crashed(message)) = &result {
            tracing::error!(pair = %self.name, %message, "a sync crashed");
        }
        // Whatever the run did, only a quiet one vouches for the marker.
        let quiet = result.is_ok()
            && run.failed.is_empty()
            && run.problems.is_empty()
            && run.unsettled.is_empty()
            && !run.journal_restored
            && !self.cancel.load(Ordering::Relaxed);
        *self.quiet_marker.locked() = run.quiet_at.take().filter(|_| quiet);
        if result.is_ok() {
            let failed: BTreeSet<RelPath> = run.failed.iter().map(|(p, _)| p.clone()).collect();
            self.backoff
                .locked()
                .settle(&request.scope, looked_at, &failed);
        }
        let mut report = SyncReport {
            sync_id: String::new(),
            status: SyncStatus::Completed,
            counts: run.tally,
            guard: None,
            problems: run.problems,
            error: None,
            offline: false,
            unsettled: run.unsettled,
            journal_restored: run.journal_restored,
            waiting: None,
        };
        if let Some(notice) = self.restored_notice.locked().clone() {
            report.problems.insert(0, notice);
        }
        if let Some(problem) = self.ignore_problem.locked().clone() {
            report.problems.push(problem);
        }
        report.counts.errors = run.failed.len() as u64;
        match result {
            Err(SyncError::Busy(holder)) => {
                // Nothing was done: no row, no error, and an API sync
                // keeps its id (still in progress) for the retry.
                report.status = SyncStatus::Interrupted;
                report.waiting = Some(holder);
                report.sync_id = request.sync_id.clone().unwrap_or_default();
                return report;
            }
            Err(SyncError::Guard(trip)) => {
                report.status = SyncStatus::Failed;
                report.error = Some(format!(
                    "{trip}. If this is intended, run `prism-syncctl confirm-deletions {}`.",
                    self.name
                ));
                report.guard = Some(trip);
            }
            Err(e) => {
                report.status = SyncStatus::Failed;
                report.offline = matches!(&e, SyncError::Replica(error) if error.is_offline());
                report.error = Some(e.to_string());
            }
            Ok(()) if !run.failed.is_empty() => {
                report.status = SyncStatus::Failed;
                let first = &run.failed[0];
                report.error = Some(if run.failed.len() == 1 {
                    first.1.clone()
                } else {
                    format!("{} paths failed; first: {}", run.failed.len(), first.1)
                });
            }
            Ok(()) if self.cancel.load(Ordering::Relaxed) => {
                report.status = SyncStatus::Interrupted;
            }
            Ok(()) => {
                if self.unresolved_conflicts().unwrap_or(0) > 0 {
                    report.status = SyncStatus::CompletedWithConflicts;
                }
            }
        }
        // A guard that keeps tripping on every poll is recorded once.
        let repeated_guard = {
            let mut last = self.last_guard.locked();
            let repeated = match (&*last, &report.guard) {
                (Some(before), Some(now)) => before.same_kind(now),
                _ => false,
            };
            *last = report.guard.clone();
            repeated
        };
        let record = run.sync_id.is_some() || report.error.is_some() && !repeated_guard;
        if !record {
            return report;
        }
        let journal = self.journal.locked();
        let sync_id = match run.sync_id {
            Some(id) => id,
            None => match journal.begin_sync(self.pair, &request.trigger) {
                Ok(id) => id,
                Err(e) => {
                    tracing::error!(pair = %self.name, error = %e, "cannot record a sync");
                    return report;
                }
            },
        };
        if let Err(e) = journal.finish_sync(
            &sync_id,
            report.status,
            &report.counts,
            report.error.as_deref(),
        ) {
            tracing::error!(pair = %self.name, error = %e, "cannot record the end of a sync");
        }
        report.sync_id = sync_id;
        report
    }

    /// How many conflicts of this pair wait for the user.
    pub fn unresolved_conflicts(&self) -> Result<usize, JournalError> {
        let filter = crate::journal::ConflictFilter {
            pair: Some(self.name.clone()),
            include_resolved: false,
        };
        Ok(self.journal.locked().conflicts(&filter)?.len())
    }

    /// A run's context; its journal recorder runs on a thread in `threads`.
    fn context<'a, 'scope>(
        &'a self,
        sync_id: String,
        lease_lost: &'a AtomicBool,
        strategy: Strategy,
        threads: &'scope std::thread::Scope<'scope, '_>,
    ) -> EngineContext<'a>
    where
        'a: 'scope,
    {
        let (local, remote) = (self.local(), self.remote());
        let (journal, pair) = (&self.journal, self.pair);
        let recorder = Recorder::start(threads, move |steps| {
            local.flush()?;
            remote.flush()?;
            journal.locked().commit_batch(pair, steps).map_err(|e| {
                ReplicaError::Other(format!("cannot record the changes in the journal: {e}"))
            })
        });
        EngineContext {
            journal: &self.journal,
            pair: self.pair,
            settings: &self.settings,
            strategy,
            progress: &self.progress,
            sync_id,
            cancel: &self.cancel,
            lease_lost,
            local: self.local(),
            remote: self.remote(),
            recorder,
        }
    }

    fn policy(&self) -> Policy {
        Policy {
            local_case_insensitive: self.local.capabilities().case_insensitive,
            remote_case_insensitive: self.remote.capabilities().case_insensitive,
            local_modes: self.local.capabilities().modes,
            remote_modes: self.remote.capabilities().modes,
        }
    }
}

/// The state of one run.
struct Run<'a> {
    engine: &'a PairEngine,
    /// The journal's id of this run, taken once there is something to do.
    sync_id: Option<String>,
    tally: RunTally,
    problems: Vec<Problem>,
    failed: Vec<(RelPath, String)>,
    unsettled: Vec<RelPath>,
    /// The journal was found older than the remote in this run.
    journal_restored: bool,
    /// What the next listing uses as its hash cache instead of the base:
    /// the forgotten base of a re-discovered pair (see `lineage`).
    listing_cache: Option<BaseTree>,
    /// The latest listing left paths out (unreadable, still being
    /// written, backing off): its "nothing to do" is not about everything.
    held_any: bool,
    /// The remote's change marker at a full listing that found nothing to
    /// do: the state this run saw agree with the base everywhere.
    quiet_at: Option<String>,
}

impl Run<'_> {
    fn run(&mut self, request: &SyncRequest) -> Result<(), SyncError> {
        let engine = self.engine;
        let run_started = Instant::now();
        if request.poll_only && self.remote_unmoved() {
            return Ok(());
        }
        let mut base_files = engine.journal.locked().base_counts(engine.pair)?.0;
        self.check_root(engine.local(), Side::Local, base_files, request.confirmed)?;
        self.check_root(engine.remote(), Side::Remote, base_files, request.confirmed)?;
        // The lease is taken only once there is something to write, so a
        // poll that finds nothing to do never keeps another agent waiting.
        let mut keeper: Option<LeaseKeeper> = None;

        let mut scope = request.scope.clone();
        let device = &engine.settings.device;
        let mut recorded =
            match lineage::check(&engine.journal, engine.pair, engine.remote(), device)? {
                lineage::JournalAge::Current(recorded) => recorded,
                lineage::JournalAge::Restored {
                    recorded,
                    stale_base,
                } => {
                    // Nothing of the base is left: the whole pair is
                    // compared afresh, and no guard counts on old files.
                    self.journal_restored = true;
                    self.listing_cache = Some(stale_base);
                    base_files = 0;
                    scope = Scope::Full;
                    let now = crate::timefmt::rfc3339(engine.settings.clock.now());
                    let notice = lineage::restored_notice(&now);
                    *engine.restored_notice.locked() = Some(notice);
                    recorded
                }
            };
        // What an earlier run committed but could not log (it crashed, or
        // the remote went away) goes first.
        let published = self.publish();
        self.bookkeeping(published)?;
        tracing::debug!(pair = %engine.name, checked_ms = run_started.elapsed().as_millis() as u64, "roots and records checked");
        let mut pulled = false;
        let mut confirmed = request.confirmed;
        let mut carried_out = false;
        for round in 0..MAX_ROUNDS {
            if let Some(error) = keeper.as_mut().and_then(LeaseKeeper::failure) {
                return Err(SyncError::Replica(error));
            }
            if engine.cancel.load(Ordering::Relaxed) {
                return Ok(());
            }
            let started = Instant::now();
            let (base, mut trees) = self.snapshot(&scope)?;
            let listed = started.elapsed();
            // On every listing until a plan is carried out: after a wait
            // for the lease, the plan that runs comes from a later listing.
            if !carried_out && scope == Scope::Full && !confirmed {
                for (side, tree) in [(Side::Local, &trees.local), (Side::Remote, &trees.remote)] {
                    if let Some(trip) = guard::check_emptied(side, tree, base_files) {
                        return Err(SyncError::Guard(trip));
                    }
                }
            }
            let plan = reconcile::reconcile(Input {
                base: &base,
                local: &trees.local,
                remote: &trees.remote,
                policy: engine.policy(),
            });
            // Every round, with what earlier rounds and runs deleted: a
            // run whose rounds each delete a little is weighed as a whole.
            if !confirmed && let Some(trip) = self.check_deletions(&plan)? {
                return Err(SyncError::Guard(trip));
            }
            if plan.actions.is_empty() && plan.conflicts.is_empty() {
                tracing::debug!(pair = %engine.name, round, listed_ms = listed.as_millis() as u64, planned_ms = (started.elapsed() - listed).as_millis() as u64, "nothing to do");
                self.unsettled.clear();
                if scope == Scope::Full && !self.held_any {
                    self.quiet_at = engine.remote().listed_marker();
                }
                return Ok(());
            }
            let keeper = match &mut keeper {
                Some(keeper) => keeper,
                None => {
                    let acquired = self.take_lease()?;
                    let keeper = keeper.insert(LeaseKeeper::start(
                        acquired.lease,
                        engine.settings.lease_ttl / 3,
                    ));
                    // Another agent just wrote: plan again from what it
                    // left. RACE: without a wait, an agent may still have
                    // written while this one listed (the listing is taken
                    // without the lease); that is any other writer's
                    // change to the remote, and the executor re-checks
                    // every path against the plan before it touches it.
                    // A confirmation was for what the user saw before
                    // that agent wrote: the roots and the new plan are
                    // checked again, and a trip asks again.
                    if acquired.waited {
                        confirmed = false;
                        self.check_root(engine.local(), Side::Local, base_files, false)?;
                        self.check_root(engine.remote(), Side::Remote, base_files, false)?;
                        continue;
                    }
                    keeper
                }
            };
            tracing::debug!(pair = %engine.name, round, actions = plan.actions.len(), conflicts = plan.conflicts.len(), listed_ms = listed.as_millis() as u64, planned_ms = (started.elapsed() - listed).as_millis() as u64, "executing plan");
            // Read after the listing: every change it saw was made by a
            // device that logged it before giving up the lease.
            if !pulled {
                let pulled_logs = change_log::pull(
                    &engine.journal,
                    engine.pair,
                    engine.remote(),
                    engine.settings.trash_retention,
                );
                self.bookkeeping(pulled_logs)?;
                pulled = true;
            }
            let sync_id = match &self.sync_id {
                Some(id) => id.clone(),
                None => {
                    let id = engine
                        .journal
                        .locked()
                        .begin_sync(engine.pair, &request.trigger)?;
                    self.sync_id = Some(id.clone());
                    id
                }
            };
            let lease_lost = keeper.lost_flag();
            let mut executed = Duration::ZERO;
            carried_out = true;
            // Re-discovery keeps both versions of whatever differs, whatever
            // the pair's strategy: the journal cannot tell which is newer.
            let strategy = if self.journal_restored {
                Strategy::Manual
            } else {
                engine.settings.strategy
            };
            let (again, offline, refused) = std::thread::scope(|threads| {
                let ctx = engine.context(sync_id, lease_lost, strategy, threads);
                let outcome = executor::execute(&ctx, &mut trees, &plan.actions, &mut self.tally);
                let mut again: Vec<RelPath> = outcome.changed;
                let mut offline = self.note_outcome(&plan.actions, outcome.failed);
                for conflict in &plan.conflicts {
                    if offline.is_some() || ctx.cancelled() {
                        break;
                    }
                    match conflicts::settle(&ctx, &mut trees, conflict, &base, &mut self.tally) {
                        Ok(follow_up) => again.extend(follow_up),
                        // Someone changed a path the settling touches (or
                        // took the copy's name): re-plan it, as for any
                        // action.
                        Err(error) if error.is_change() => again.push(conflict.path.clone()),
                        Err(error) if error.is_offline() => offline = Some(error),
                        Err(error) => self.fail(&conflict.path, error),
                    }
                }
                executed = started.elapsed();
                match ctx.flush() {
                    Ok(()) => Ok((again, offline, false)),
                    // A replica refused a batch because its side changed
                    // (a git push lost to a commit on the same paths):
                    // nothing of that batch took effect or was recorded,
                    // so plan again now, from what that side holds.
                    Err(ReplicaError::Changed { path }) => {
                        tracing::info!(pair = %engine.name, path = %path, "a side changed under a batch; planning again");
                        again.extend(RelPath::new(&path).ok());
                        Ok((again, offline, true))
                    }
                    Err(error) => Err(error),
                }
            })
            .map_err(SyncError::Replica)?;
            tracing::debug!(pair = %engine.name, round, executed_ms = executed.as_millis() as u64, flushed_ms = (started.elapsed() - executed).as_millis() as u64, "round done");
            // What was done before the connection went is recorded (the
            // flush above); the rest waits for the pair-wide retry.
            if let Some(error) = offline {
                return Err(SyncError::Replica(error));
            }
            if let Some(error) = keeper.failure() {
                return Err(SyncError::Replica(error));
            }
            // The round's work is recorded: what is left is bookkeeping.
            self.unsettled = again.clone();
            let caught_up = lineage::catch_up(
                &engine.journal,
                engine.pair,
                engine.remote(),
                device,
                &mut recorded,
            )
            .and_then(|()| self.publish());
            self.bookkeeping(caught_up)?;
            if again.is_empty() && !refused {
                self.unsettled.clear();
                return Ok(());
            }
            scope = match scope {
                Scope::Full => Scope::Full,
                Scope::Paths(mut paths) => {
                    paths.extend(again);
                    Scope::Paths(dedupe_roots(paths))
                }
            };
        }
        Ok(())
    }

    /// Whether the remote is, by its change marker, as the last quiet run
    /// left it: then nothing changed on either side (the caller vouches
    /// for the local one) and the run is done before it starts. Any doubt
    /// (no marker, an error asking for it) makes a full run, which reports
    /// the error properly.
    fn remote_unmoved(&mut self) -> bool {
        let engine = self.engine;
        let Some(quiet) = engine.quiet_marker.locked().clone() else {
            return false;
        };
        match engine.remote().change_marker() {
            Ok(Some(now)) if now == quiet => {
                tracing::debug!(pair = %engine.name, "the remote has not moved since the last quiet run");
                self.quiet_at = Some(quiet);
                true
            }
            Ok(_) => false,
            Err(error) => {
                tracing::debug!(pair = %engine.name, %error, "cannot ask the remote whether it moved; listing it");
                false
            }
        }
    }

    /// Asks the mass-deletion guard about `plan`, with the pair's recent
    /// deletions from the journal.
    fn check_deletions(&self, plan: &reconcile::Plan) -> Result<Option<GuardTrip>, SyncError> {
        if guard::planned_deletions(plan) == 0 {
            return Ok(None);
        }
        let engine = self.engine;
        let journal = engine.journal.locked();
        let base_files = journal.base_counts(engine.pair)?.0;
        let start = guard::window_start(
            SystemTime::now(),
            journal.deletions_confirmed_at(engine.pair)?,
        );
        let recent = journal.deleted_files_since(engine.pair, start)?;
        Ok(guard::check_plan(plan, base_files, &recent, start))
    }

    /// Takes the remote's lease, waiting a while for another agent that
    /// holds it (status shows who, meanwhile).
    fn take_lease(&self) -> Result<lease_wait::Acquired, SyncError> {
        let engine = self.engine;
        let show = |holder: Option<&str>| *engine.lease_holder.locked() = holder.map(str::to_owned);
        lease_wait::acquire(
            engine.remote(),
            &engine.settings.device,
            engine.settings.lease_ttl,
            &engine.cancel,
            &show,
        )
        .map_err(|error| match error {
            ReplicaError::Busy(holder) => SyncError::Busy(holder),
            other => SyncError::Replica(other),
        })
    }

    /// Takes the outcome of writing or reading the run's records on the
    /// remote (the journal's lineage record, the change logs). They serve
    /// restore detection and the audit, not the files: a failure is shown
    /// and tried again by the next run, not a failed run, unless the
    /// remote is unreachable (then the whole run stops, as for any step).
    fn bookkeeping(&mut self, result: Result<(), SyncError>) -> Result<(), SyncError> {
        match result {
            Err(SyncError::Replica(error)) if !error.is_offline() => {
                tracing::warn!(pair = %self.engine.name, %error, "cannot update the records on the remote");
                self.problems.push(Problem {
                    path: None,
                    message: format!(
                        "{RECORDS_PROBLEM} ({error}); the files are synced, and the next sync \
                         tries again"
                    ),
                });
                Ok(())
            }
            other => other,
        }
    }

    /// Appends this device's committed changes to its log on the remote.
    fn publish(&self) -> Result<(), SyncError> {
        let engine = self.engine;
        change_log::publish(
            &engine.journal,
            engine.pair,
            engine.remote(),
            &engine.settings.device,
            engine.settings.trash_retention,
            &mut engine.log_writers.locked(),
        )
    }

    /// Refuses to sync into a missing or unmarked root that once held
    /// files; marks a fresh root.
    fn check_root(
        &mut self,
        replica: &dyn Replica,
        side: Side,
        base_files: u64,
        confirmed: bool,
    ) -> Result<(), SyncError> {
        let state = replica.root_state()?;
        let fresh = base_files == 0;
        match state {
            RootState::Ready => Ok(()),
            RootState::Missing if !fresh && !confirmed => {
                Err(SyncError::Guard(GuardTrip::RootMissing { side }))
            }
            RootState::Unmarked if !fresh && !confirmed => {
                Err(SyncError::Guard(GuardTrip::MarkerMissing { side }))
            }
            RootState::Missing | RootState::Unmarked => Ok(replica.mark_root()?),
        }
    }

    /// Lists both sides within `scope` and drops the paths that must be
    /// left alone this time (unreadable, still being written, backing off)
    /// from all three trees, so their absence never reads as a deletion.
    fn snapshot(&mut self, scope: &Scope) -> Result<(BaseTree, Trees), SyncError> {
        let engine = self.engine;
        let base = {
            let journal = engine.journal.locked();
            match scope {
                Scope::Full => journal.load_base(engine.pair)?,
                Scope::Paths(roots) => journal.load_base_within(engine.pair, roots)?,
            }
        };
        let ignore = engine.ignore_rules();
        let cache = self.listing_cache.take();
        let cache = cache.as_ref().unwrap_or(&base);
        // Both sides at once: a network remote's listing mostly waits for
        // round trips, which the local scan's disk and CPU work can fill.
        let started = Instant::now();
        let timed = |side: &dyn Replica| {
            let listing = side.list(scope, cache, &ignore);
            (listing, started.elapsed())
        };
        let ((local, local_listed), (remote, remote_listed)) = std::thread::scope(|threads| {
            let remote = threads.spawn(|| timed(engine.remote()));
            let local = timed(engine.local());
            let remote = remote
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (local, remote)
        });
        let (local, remote) = (local?, remote?);
        tracing::debug!(
            pair = %engine.name,
            base = base.len(),
            local_ms = local_listed.as_millis() as u64,
            remote_ms = remote_listed.as_millis() as u64,
            "listed both sides"
        );
        let mut held: Vec<RelPath> = local.held.into_iter().chain(remote.held).collect();
        held.extend(engine.backoff.locked().waiting(Instant::now()));
        self.held_any = !held.is_empty();
        self.problems.extend(local.problems);
        self.problems.extend(remote.problems);
        let mut base = base;
        let mut trees = Trees {
            local: local.tree,
            remote: remote.tree,
        };
        if !held.is_empty() {
            let held = dedupe_roots(held);
            let keep = |path: &RelPath| !held.iter().any(|h| path.is_within(h));
            base.retain(|p, _| keep(p));
            trees.local.retain(|p, _| keep(p));
            trees.remote.retain(|p, _| keep(p));
        }
        Ok((base, trees))
    }

    /// Settles the back-off of the actions a round ran. A failure because
    /// a replica is unreachable says nothing about its path, so it is not
    /// backed off; the first such error is returned to stop the run.
    fn note_outcome(
        &mut self,
        actions: &[reconcile::Action],
        failed: Vec<(RelPath, ReplicaError)>,
    ) -> Option<ReplicaError> {
        let failed_paths: BTreeSet<&RelPath> = failed.iter().map(|(p, _)| p).collect();
        {
            let mut backoff = self.engine.backoff.locked();
            for action in actions {
                if !failed_paths.contains(action.path()) {
                    backoff.succeed(action.path());
                }
            }
        }
        let mut offline = None;
        for (path, error) in failed {
            if error.is_offline() {
                tracing::debug!(pair = %self.engine.name, path = %path, error = %error, "action failed: the replica is offline");
                offline.get_or_insert(error);
            } else {
                self.fail(&path, error);
            }
        }
        offline
    }

    fn fail(&mut self, path: &RelPath, error: ReplicaError) {
        tracing::warn!(pair = %self.engine.name, path = %path, error = %error, "action failed");
        let message = format!("{path}: {error}");
        self.engine
            .backoff
            .locked()
            .fail(path, error.to_string(), Instant::now());
        self.problems.push(Problem {
            path: Some(path.clone()),
            message: error.to_string(),
        });
        self.failed.push((path.clone(), message));
    }
}

/// Removes roots already covered by another root.
pub fn dedupe_roots(mut paths: Vec<RelPath>) -> Vec<RelPath> {
    paths.sort();
    paths.dedup();
    let mut kept: Vec<RelPath> = Vec::new();
    for path in paths {
        if !kept.iter().any(|k| path.is_within(k)) {
            kept.push(path);
        }
    }
    kept
}

/// Counts the files of a tree, for the guard.
pub fn file_count(tree: &SideTree) -> u64 {
    tree.values()
        .filter(|e| matches!(e.entry, Entry::File(_)))
        .count() as u64
}

/// A base edit that forgets a path and everything below it.
pub fn forget(path: &RelPath) -> Step {
    Step {
        base: vec![BaseEdit::RemoveTree(path.clone())],
        changes: Vec::new(),
        blobs: Vec::new(),
        trashed: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedupe_keeps_outermost_roots() {
        let paths = ["a/b", "a", "c/d", "ab", "c/d/e"]
            .iter()
            .map(|s| RelPath::new(s).unwrap())
            .collect();
        let kept: Vec<String> = dedupe_roots(paths).iter().map(|p| p.to_string()).collect();
        assert_eq!(kept, ["a", "ab", "c/d"]);
    }
}
