//! Carries out a plan on the two replicas and records each finished action
//! in the journal (in batches, once the replicas flushed its effects).
//!
//! The executor keeps the plan's order of effects: moves first (so later
//! paths are where the plan expects them), then deletions that make room
//! for a creation at the same path, then folders, then the copies in parallel
//! (bounded by `parallel_transfers`, streamed, verified by hash), then
//! deletions deepest first, then base-only updates. Every destructive step
//! passes the replica what the plan saw (an [`Expect`]); a replica refuses
//! if the target changed, and the path is simply re-planned. A failure is
//! recorded against its path and the rest carries on.
//!
//! It does not decide anything: what to do comes from `reconcile`, how
//! conflicts are settled from `conflicts`.

use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use crate::fsops::Expect;
use crate::journal::{BaseEdit, ChangeType, Step, TrashedVersion};
use crate::locks::LockExt;
use crate::model::{
    BaseEntry, Entry, FileMeta, Mode, RelPath, Side, SideEntry, SideTree, VersionToken,
};
use crate::reconcile::Action;
use crate::remote::{ReplicaError, Source, StagedWrite};

use super::progress::Direction;
use super::{EngineContext, RunTally};

/// The two snapshots the plan was made from, kept current as actions run
/// (a move rebases the paths below it), so every action finds what it must
/// expect at its target.
pub struct Trees {
    pub local: SideTree,
    pub remote: SideTree,
}

impl Trees {
    pub fn get(&self, side: Side) -> &SideTree {
        match side {
            Side::Local => &self.local,
            Side::Remote => &self.remote,
        }
    }

    fn get_mut(&mut self, side: Side) -> &mut SideTree {
        match side {
            Side::Local => &mut self.local,
            Side::Remote => &mut self.remote,
        }
    }

    /// What a destructive step on `side` at `path` must find there.
    pub fn expect(&self, side: Side, path: &RelPath) -> Expect {
        expect_of(self.get(side).get(path))
    }

    fn rebase(&mut self, side: Side, from: &RelPath, to: &RelPath) {
        let tree = self.get_mut(side);
        let moved: Vec<RelPath> = tree
            .range(from.clone()..)
            .take_while(|(p, _)| p.as_str().starts_with(from.as_str()))
            .filter(|(p, _)| p.is_within(from))
            .map(|(p, _)| p.clone())
            .collect();
        for path in moved {
            if let (Some(entry), Some(new_path)) = (tree.remove(&path), path.rebase(from, to)) {
                tree.insert(new_path, entry);
            }
        }
    }

    fn set(&mut self, side: Side, path: &RelPath, entry: Option<SideEntry>) {
        let tree = self.get_mut(side);
        match entry {
            Some(entry) => {
                tree.insert(path.clone(), entry);
            }
            None => {
                tree.remove(path);
            }
        }
    }
}

/// The expectation for a snapshot entry, with the version token its
/// listing carried.
pub fn expect_of(entry: Option<&SideEntry>) -> Expect {
    let version = entry.and_then(SideEntry::version_text);
    Expect::of_version(entry.map(|e| &e.entry), version.as_deref())
}

/// The journal's record of the version of `path` that `side` just moved
/// to its trash under `name`: none where nothing went (or a folder), or
/// the replica could not say where.
pub fn trashed_version(
    ctx: &EngineContext<'_>,
    side: Side,
    path: &RelPath,
    replaced: Option<&FileMeta>,
    name: Option<RelPath>,
) -> Vec<TrashedVersion> {
    match (replaced, name) {
        (Some(meta), Some(trash_name)) => vec![TrashedVersion {
            path: path.clone(),
            side,
            trash_name,
            hash: meta.hash,
            size: meta.size,
            mtime_ns: meta.mtime_ns,
            trashed_by: ctx.settings.device.clone(),
        }],
        _ => Vec::new(),
    }
}

/// What running a plan achieved.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Paths that changed under the plan's feet: re-plan them now.
    pub changed: Vec<RelPath>,
    /// Paths whose action failed, with the error.
    pub failed: Vec<(RelPath, ReplicaError)>,
}

/// Runs `actions` in the order the plan gives (moves, deletions that make
/// room, folders, copies, other deletions, base updates), copies in
/// parallel.
pub fn execute(
    ctx: &EngineContext<'_>,
    trees: &mut Trees,
    actions: &[Action],
    tally: &mut RunTally,
) -> Outcome {
    let mut outcome = Outcome::default();
    // The plan's order is the order of execution (see `reconcile`): what
    // comes before the first copy (moves, deletions that make room for a
    // creation at the same path, folders) runs first, in that order.
    let first_copy = actions
        .iter()
        .position(|a| matches!(a, Action::Copy { .. }))
        .unwrap_or(actions.len());
    let (before, rest) = actions.split_at(first_copy);
    let (copies, after): (Vec<&Action>, Vec<&Action>) =
        rest.iter().partition(|a| matches!(a, Action::Copy { .. }));

    for action in before {
        if ctx.cancelled() {
            return outcome;
        }
        run_one(ctx, trees, action, tally, &mut outcome);
    }
    run_copies(ctx, trees, &copies, tally, &mut outcome);
    for action in after {
        if ctx.cancelled() {
            return outcome;
        }
        run_one(ctx, trees, action, tally, &mut outcome);
    }
    outcome
}

fn note_failure(outcome: &mut Outcome, path: &RelPath, error: ReplicaError) {
    if error.is_change() {
        outcome.changed.push(path.clone());
    } else {
        outcome.failed.push((path.clone(), error));
    }
}

fn run_one(
    ctx: &EngineContext<'_>,
    trees: &mut Trees,
    action: &Action,
    tally: &mut RunTally,
    outcome: &mut Outcome,
) {
    let result = match action {
        Action::Move { side, from, to } => move_path(ctx, trees, *side, from, to, tally),
        Action::Mkdir { side, path, mode } => mkdir(ctx, trees, *side, path, *mode),
        Action::SetMode {
            side,
            path,
            expected,
            mode,
        } => set_mode(ctx, trees, *side, path, expected, *mode),
        Action::Delete { side, path, .. } => delete(ctx, trees, *side, path, tally),
        Action::SetBase { path, entry } => set_base(ctx, trees, path, entry.as_ref()),
        Action::Copy { .. } => unreachable!("copies run in run_copies"),
    };
    if let Err(error) = result {
        note_failure(outcome, action.path(), error);
    }
}

fn move_path(
    ctx: &EngineContext<'_>,
    trees: &mut Trees,
    side: Side,
    from: &RelPath,
    to: &RelPath,
    tally: &mut RunTally,
) -> Result<(), ReplicaError> {
    let expect = trees.expect(side, from);
    ctx.side(side).rename(from, to, &expect)?;
    let is_dir = matches!(expect, Expect::Dir);
    trees.rebase(side, from, to);
    tally.moved += 1;
    ctx.commit(Step {
        base: vec![BaseEdit::MoveTree {
            from: from.clone(),
            to: to.clone(),
        }],
        changes: vec![ctx.change(
            ChangeType::Moved,
            to,
            Some(from),
            is_dir,
            side.other(),
            None,
        )],
        blobs: Vec::new(),
        trashed: Vec::new(),
    });
    Ok(())
}

fn mkdir(
    ctx: &EngineContext<'_>,
    trees: &mut Trees,
    side: Side,
    path: &RelPath,
    mode: Option<Mode>,
) -> Result<(), ReplicaError> {
    // Writable by its owner while it is filled (see `Action::Mkdir`).
    let created = ctx.side(side).mkdir(path, mode.map(Mode::fillable))?;
    // The mode the new folder has, or (where the side holds none) the one
    // it was made for.
    let base = Entry::dir(created.entry.mode().or(mode));
    trees.set(side, path, Some(created));
    let base = base_entry(trees, path, base);
    ctx.commit(Step {
        base: vec![BaseEdit::Put(path.clone(), base)],
        changes: vec![ctx.change(ChangeType::Created, path, None, true, side.other(), None)],
        blobs: Vec::new(),
        trashed: Vec::new(),
    });
    Ok(())
}

fn delete(
    ctx: &EngineContext<'_>,
    trees: &mut Trees,
    side: Side,
    path: &RelPath,
    tally: &mut RunTally,
) -> Result<(), ReplicaError> {
    let expect = trees.expect(side, path);
    if expect == Expect::Absent {
        // Already gone on this side (a parent folder went to the trash
        // first, or someone else deleted it): only the base is left.
        ctx.commit(Step {
            base: vec![BaseEdit::RemoveTree(path.clone())],
            changes: Vec::new(),
            blobs: Vec::new(),
            trashed: Vec::new(),
        });
        return Ok(());
    }
    let is_dir = expect == Expect::Dir;
    let gone = trees
        .get(side)
        .get(path)
        .and_then(|e| e.entry.file().copied());
    let trash_name = ctx.side(side).remove_naming_trash(path, &expect)?;
    trees.set(side, path, None);
    match side {
        Side::Local => tally.deleted_local += 1,
        Side::Remote => tally.deleted_remote += 1,
    }
    ctx.commit(Step {
        base: vec![BaseEdit::RemoveTree(path.clone())],
        changes: vec![ctx.change(
            ChangeType::Deleted,
            path,
            None,
            is_dir,
            side.other(),
            gone.as_ref(),
        )],
        blobs: Vec::new(),
        trashed: trashed_version(ctx, side, path, gone.as_ref(), trash_name),
    });
    Ok(())
}

fn set_mode(
    ctx: &EngineContext<'_>,
    trees: &mut Trees,
    side: Side,
    path: &RelPath,
    expected: &Entry,
    mode: Mode,
) -> Result<(), ReplicaError> {
    // A mode change that goes with a copy (the side the content came from
    // takes the decided mode) waits for the copy: until both sides hold
    // the same content, the base cannot record what they agree on, and
    // the source side keeps its mode. The path is planned afresh.
    let agreed = match (trees.local.get(path), trees.remote.get(path)) {
        (Some(local), Some(remote)) => local.entry.same_content(&remote.entry),
        _ => false,
    };
    if !agreed {
        return Err(ReplicaError::Changed {
            path: path.to_string(),
        });
    }
    ctx.side(side).set_mode(path, expected, mode)?;
    let tree = trees.get_mut(side);
    let Some(changed) = tree.get_mut(path) else {
        return Err(ReplicaError::Changed {
            path: path.to_string(),
        });
    };
    changed.entry = changed.entry.with_mode(Some(mode));
    // Both sides hold the same content now (reconcile plans a mode change
    // only there); the base keeps the local side's metadata.
    let local_entry = trees
        .local
        .get(path)
        .map_or(*expected, |e| e.entry)
        .with_mode(Some(mode));
    let base = base_entry(trees, path, local_entry);
    ctx.commit(Step {
        base: vec![BaseEdit::Put(path.clone(), base)],
        changes: vec![ctx.change(
            ChangeType::Modified,
            path,
            None,
            expected.is_dir(),
            side.other(),
            expected.file(),
        )],
        blobs: Vec::new(),
        trashed: Vec::new(),
    });
    Ok(())
}

fn set_base(
    ctx: &EngineContext<'_>,
    trees: &Trees,
    path: &RelPath,
    entry: Option<&Entry>,
) -> Result<(), ReplicaError> {
    let edit = match entry {
        Some(entry) => {
            // The base records the local side's metadata (its mtime is the
            // local stat cache) and both sides' identities, with the mode
            // the plan decided.
            let local_entry = trees
                .local
                .get(path)
                .map_or(*entry, |e| e.entry.with_mode(entry.mode()));
            BaseEdit::Put(path.clone(), base_entry(trees, path, local_entry))
        }
        None => BaseEdit::Remove(path.clone()),
    };
    ctx.commit(Step {
        base: vec![edit],
        changes: Vec::new(),
        blobs: Vec::new(),
        trashed: Vec::new(),
    });
    Ok(())
}

/// The base entry for `path` once both sides hold `entry`.
fn base_entry(trees: &Trees, path: &RelPath, entry: Entry) -> BaseEntry {
    let local = trees.local.get(path);
    let remote = trees.remote.get(path);
    BaseEntry {
        entry,
        local_id: local.and_then(|e| e.id.clone()),
        remote_id: remote.and_then(|e| e.id.clone()),
        remote_version: remote.and_then(|e| e.version.clone()),
    }
}

/// A copy the workers pick up: everything it needs, resolved up front.
struct CopyJob<'a> {
    to: Side,
    path: &'a RelPath,
    source: FileMeta,
    /// The source's version token, as listed.
    source_version: Option<String>,
    /// What the copy is made with (see `Action::Copy`).
    mode: Option<Mode>,
    expect: Expect,
    is_new: bool,
    /// The file the copy replaces, which goes to the trash.
    replaced: Option<FileMeta>,
}

fn run_copies(
    ctx: &EngineContext<'_>,
    trees: &mut Trees,
    copies: &[&Action],
    tally: &mut RunTally,
    outcome: &mut Outcome,
) {
    // Sized up front: one job per copy, and an initial sync has a copy
    // for every file, so growing the list would copy it and hold up to
    // twice its size.
    let mut jobs: Vec<CopyJob<'_>> = Vec::with_capacity(copies.len());
    jobs.extend(copies.iter().filter_map(|action| match action {
        Action::Copy {
            to,
            path,
            source,
            mode,
            ..
        } => {
            let current = trees.get(*to).get(path);
            Some(CopyJob {
                to: *to,
                path,
                source: *source,
                source_version: trees
                    .get(to.other())
                    .get(path)
                    .filter(|e| e.entry.file() == Some(source))
                    .and_then(|e| e.version.as_ref())
                    .map(VersionToken::to_string),
                mode: *mode,
                expect: expect_of(current),
                is_new: current.is_none(),
                replaced: current.and_then(|e| e.entry.file().copied()),
            })
        }
        _ => None,
    }));
    if jobs.is_empty() {
        return;
    }
    let next = Mutex::new(jobs.iter().enumerate());
    let local_only = ctx.local.capabilities().local_disk && ctx.remote.capabilities().local_disk;
    let workers = if local_only {
        ctx.settings
            .parallel_transfers
            .min(crate::parallel::cores())
    } else {
        ctx.settings.parallel_transfers
    }
    .clamp(1, jobs.len());
    // A pipeline of three stages, each on its own threads: workers stream
    // the bytes into staged files; a flushing thread gathers them into
    // batches and flushes each batch (many files at once); this thread
    // re-checks each file of a flushed batch and renames it in, while the
    // next batch is being flushed. The touched folders are flushed and the
    // batch recorded in one transaction later (see `recorder`). A crash
    // leaves at most some hidden staged files and unrecorded batches, never
    // a half-written file under a real name.
    std::thread::scope(|scope| {
        let (done, staged) = mpsc::channel::<(usize, Result<StagedWrite, ReplicaError>)>();
        for _ in 0..workers {
            let done = done.clone();
            let next = &next;
            scope.spawn(move || {
                while !ctx.cancelled() {
                    let job = { next.locked().next() };
                    let Some((index, job)) = job else { return };
                    if done.send((index, stage_one(ctx, job))).is_err() {
                        return;
                    }
                }
            });
        }
        drop(done);
        // Two flushed batches at most wait to be put in place.
        let (ready, flushed) = mpsc::sync_channel::<Flushed>(2);
        let jobs = &jobs;
        scope.spawn(move || flush_batches(ctx, jobs, staged, ready));
        for message in flushed {
            match message {
                Flushed::Batch(batch) => put_in_place(ctx, trees, jobs, batch, tally, outcome),
                Flushed::Failed(index, error) => note_failure(outcome, jobs[index].path, error),
            }
        }
    });
    // A cancelled run leaves copies no worker took: they are planned
    // afresh, never taken for done (a conflict kept by a copy is resolved
    // only once the copy happened).
    for (_, job) in next.into_inner().expect("job queue") {
        let path = job.path.to_string();
        note_failure(outcome, job.path, ReplicaError::Changed { path });
    }
}

/// Staged files are put in place in batches of at most this many, or
/// after at most [`STAGE_WINDOW`].
const STAGE_BATCH: usize = 256;
const STAGE_WINDOW: Duration = Duration::from_millis(200);

/// What the flushing thread hands on to the one that puts files in place.
enum Flushed {
    /// Staged files that are on disk, in the plan's order.
    Batch(Vec<(usize, StagedWrite)>),
    /// A copy that could not be staged or flushed.
    Failed(usize, ReplicaError),
}

/// Gathers staged files into batches, flushes each and hands it on, until
/// every worker is done.
fn flush_batches(
    ctx: &EngineContext<'_>,
    jobs: &[CopyJob<'_>],
    staged: mpsc::Receiver<(usize, Result<StagedWrite, ReplicaError>)>,
    ready: mpsc::SyncSender<Flushed>,
) {
    let mut batch: Vec<(usize, StagedWrite)> = Vec::new();
    let mut oldest: Option<Instant> = None;
    loop {
        let received = staged.recv_timeout(STAGE_WINDOW);
        let all_in = matches!(received, Err(mpsc::RecvTimeoutError::Disconnected));
        match received {
            Ok((index, Ok(file))) => {
                oldest.get_or_insert_with(Instant::now);
                batch.push((index, file));
            }
            Ok((index, Err(error))) => {
                if ready.send(Flushed::Failed(index, error)).is_err() {
                    return discard(ctx, jobs, batch);
                }
            }
            Err(_) => {}
        }
        let due = batch.len() >= STAGE_BATCH || oldest.is_some_and(|t| t.elapsed() >= STAGE_WINDOW);
        if (due || all_in) && !batch.is_empty() {
            for message in flush_batch(ctx, jobs, std::mem::take(&mut batch)) {
                if let Err(mpsc::SendError(message)) = ready.send(message) {
                    if let Flushed::Batch(flushed) = message {
                        discard(ctx, jobs, flushed);
                    }
                    return;
                }
            }
            oldest = None;
        }
        if all_in {
            return;
        }
    }
}

/// Removes staged files nobody will put in place: the thread that renames
/// them in is gone (it panicked). Returning also drops the queue of staged
/// files, which stops the workers.
fn discard(ctx: &EngineContext<'_>, jobs: &[CopyJob<'_>], batch: Vec<(usize, StagedWrite)>) {
    for (index, staged) in batch {
        ctx.side(jobs[index].to).discard(staged);
    }
}

/// Flushes a batch's staged files on both sides; when a side cannot, the
/// whole batch is discarded and each of its copies fails with that error.
fn flush_batch(
    ctx: &EngineContext<'_>,
    jobs: &[CopyJob<'_>],
    mut batch: Vec<(usize, StagedWrite)>,
) -> Vec<Flushed> {
    // Workers finish in any order; the journal records a batch in the
    // plan's order, so the change log reads the same on every run.
    batch.sort_by_key(|(index, _)| *index);
    for side in [Side::Local, Side::Remote] {
        let staged: Vec<&StagedWrite> = batch
            .iter()
            .filter(|(i, _)| jobs[*i].to == side)
            .map(|(_, s)| s)
            .collect();
        if staged.is_empty() {
            continue;
        }
        if let Err(error) = ctx.side(side).sync_staged(&staged) {
            let message = error.to_string();
            return batch
                .into_iter()
                .map(|(index, staged)| {
                    ctx.side(jobs[index].to).discard(staged);
                    Flushed::Failed(index, ReplicaError::Other(message.clone()))
                })
                .collect();
        }
    }
    vec![Flushed::Batch(batch)]
}

/// Renames a flushed batch's files in and records each finished copy.
fn put_in_place(
    ctx: &EngineContext<'_>,
    trees: &mut Trees,
    jobs: &[CopyJob<'_>],
    batch: Vec<(usize, StagedWrite)>,
    tally: &mut RunTally,
    outcome: &mut Outcome,
) {
    for (index, committed) in commit_batch(ctx, jobs, batch) {
        let job = &jobs[index];
        match committed {
            Ok((written, trash_name)) => {
                trees.set(job.to, job.path, Some(written));
                commit_copy(ctx, trees, job, trash_name, tally);
            }
            Err(error) => note_failure(outcome, job.path, error),
        }
    }
}

/// A copy put in place: what the destination holds now, and the name in
/// its trash of the version it replaced.
type CommittedCopy = (SideEntry, Option<RelPath>);

/// Renames a batch's staged files in (each re-checked against what the
/// plan saw), discarding those that could not be; returns the outcomes in
/// the batch's order.
///
/// A local rename takes microseconds, and renames into one folder from
/// several threads only contend for its lock, so local commits run one by
/// one. A remote commit costs several network round trips (check, trash,
/// rename, stat), so where the replica says so, a batch's commits run on
/// up to `parallel_transfers` threads at once: they touch different paths
/// and nothing in one depends on another.
fn commit_batch(
    ctx: &EngineContext<'_>,
    jobs: &[CopyJob<'_>],
    batch: Vec<(usize, StagedWrite)>,
) -> Vec<(usize, Result<CommittedCopy, ReplicaError>)> {
    let commit_one = |(index, staged): (usize, StagedWrite)| {
        let job = &jobs[index];
        let side = ctx.side(job.to);
        // Without the lease another agent may be writing the remote now,
        // and once recording failed nothing more would be recorded: nothing
        // more is put in place; the run ends with why, and these paths are
        // planned afresh next time.
        let committed = if ctx.cancelled() {
            Err(ReplicaError::Changed {
                path: job.path.to_string(),
            })
        } else {
            side.commit_staged_naming_trash(&staged, &job.expect)
        };
        if committed.is_err() {
            side.discard(staged);
        }
        (index, committed)
    };
    let parallel = batch
        .iter()
        .any(|(index, _)| ctx.side(jobs[*index].to).capabilities().parallel_commits);
    let workers = if parallel {
        ctx.settings.parallel_transfers
    } else {
        1
    };
    crate::parallel::map(batch, workers, commit_one)
}

fn stage_one(ctx: &EngineContext<'_>, job: &CopyJob<'_>) -> Result<StagedWrite, ReplicaError> {
    let direction = match job.to {
        Side::Remote => Direction::Upload,
        Side::Local => Direction::Download,
    };
    let transfer = ctx
        .progress
        .start_transfer(job.path, direction, job.source.size);
    let at = |done: u64| transfer.set_done(done);
    // The source can be reopened at an offset: the destination may continue
    // a partial transfer an earlier attempt left, and a read that breaks
    // on a connection error continues where it stopped.
    let cancelled = || ctx.cancelled();
    let source = Source::new(ctx.side(job.to.other()), job.path, job.source, &at)
        .with_version(job.source_version.clone())
        .with_cancel(&cancelled);
    ctx.side(job.to)
        .stage_from(job.path, &source, job.source.mtime_ns, job.mode)
        .map_err(|error| source.take_failure().unwrap_or(error))
}

fn commit_copy(
    ctx: &EngineContext<'_>,
    trees: &Trees,
    job: &CopyJob<'_>,
    trash_name: Option<RelPath>,
    tally: &mut RunTally,
) {
    // The mode the source side has, else the copy's: where the plan also
    // changes the source's mode, that step records the decided one, and
    // until it has, the base must not claim the source already has it.
    let source_mode = trees
        .get(job.to.other())
        .get(job.path)
        .and_then(|e| e.entry.mode());
    let local_entry = trees
        .local
        .get(job.path)
        .map(|e| e.entry)
        .unwrap_or(Entry::File(job.source));
    let local_entry = local_entry.with_mode(source_mode.or(job.mode).or(local_entry.mode()));
    let base = base_entry(trees, job.path, local_entry);
    match job.to {
        Side::Remote => {
            tally.uploaded += 1;
            tally.bytes_up += job.source.size;
        }
        Side::Local => {
            tally.downloaded += 1;
            tally.bytes_down += job.source.size;
        }
    }
    let change_type = if job.is_new {
        ChangeType::Created
    } else {
        ChangeType::Modified
    };
    let blobs = ctx.base_content(job.path, &job.source);
    ctx.commit(Step {
        base: vec![BaseEdit::Put(job.path.clone(), base)],
        changes: vec![ctx.change(
            change_type,
            job.path,
            None,
            false,
            job.to.other(),
            Some(&job.source),
        )],
        blobs,
        trashed: trashed_version(ctx, job.to, job.path, job.replaced.as_ref(), trash_name),
    });
}
