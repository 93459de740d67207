//! Conflict strategies: turning a [`Conflict`] that reconcile reported into
//! journal rows and into the steps that settle it, and the user's later
//! resolution of a conflict that waited.
//!
//! The rules, for every strategy: nothing is overwritten without the old
//! version going to a trash, and a conflict that is not settled by the
//! strategy leaves both versions in the tree.
//! - `manual`: the remote version is renamed aside on the remote to
//!   `name.conflict-STAMP-DEVICE.ext`, DEVICE being where that version came
//!   from ([`REMOTE_ORIGIN`], never this device, which did not write it);
//!   the next round uploads the local version to `name` and downloads the
//!   copy. For a deletion conflict the modified version is kept (restored
//!   on the side that deleted it).
//! - `keep_local` / `keep_remote`: the winner's version replaces the
//!   loser's, which goes to the loser's trash.
//! - `auto_merge`: a three-way text merge against the base content the
//!   journal kept; when it is not clean, `manual` applies and the conflict's
//!   note says why.

use std::fs;
use std::io::Read;
use std::path::Path;
use std::time::SystemTime;

use crate::fsops::Expect;
use crate::journal::{BaseEdit, ChangeType, ConflictRow, ConflictStatus, NewConflict, Step};
use crate::locks::LockExt;
use crate::model::{
    BaseEntry, BaseTree, ContentHash, Entry, FileMeta, Mode, RelPath, Side, Strategy,
};
use crate::reconcile::{self, Action, Conflict, ConflictKind};
use crate::remote::{Replica, ReplicaError};
use crate::timefmt;

use super::executor::{self, Trees};
use super::{EngineContext, PairEngine, REMOTE_ORIGIN, RunTally, forget};

/// The largest file a three-way merge reads.
pub const MERGE_MAX_BYTES: u64 = 4 * 1024 * 1024;

/// The largest file `resolve --strategy manual --from FILE` reads: it is
/// held in memory to hash it before it is written into the folder.
pub const MERGED_FILE_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// True for content a text merge can work on: UTF-8 without NUL bytes.
pub fn is_text(bytes: &[u8]) -> bool {
    !bytes.contains(&0) && std::str::from_utf8(bytes).is_ok()
}

fn entry(trees: &Trees, side: Side, path: &RelPath) -> Option<Entry> {
    trees.get(side).get(path).map(|e| e.entry)
}

fn modified_at(entry: Option<&Entry>) -> Option<String> {
    entry
        .and_then(Entry::file)
        .map(|m| timefmt::rfc3339(timefmt::from_unix_ns(m.mtime_ns)))
}

/// Records `conflict` and applies the pair's strategy. Returns paths to
/// re-plan in the next round (where a copy or a forgotten base must now
/// propagate).
pub fn settle(
    ctx: &EngineContext<'_>,
    trees: &mut Trees,
    conflict: &Conflict,
    base: &BaseTree,
    tally: &mut RunTally,
) -> Result<Vec<RelPath>, ReplicaError> {
    let strategy = ctx.strategy;
    let path = &conflict.path;
    let local = entry(trees, Side::Local, path);
    let remote = entry(trees, Side::Remote, path);
    let record =
        |copy_path: Option<&RelPath>, note: Option<String>| -> Result<String, ReplicaError> {
            let new = NewConflict {
                pair: ctx.pair,
                path: path.clone(),
                kind: conflict.kind,
                base_hash: base.get(path).and_then(|b| b.entry.file()).map(|m| m.hash),
                local_hash: local.as_ref().and_then(Entry::file).map(|m| m.hash),
                local_modified_at: modified_at(local.as_ref()),
                local_size: local.as_ref().and_then(Entry::file).map(|m| m.size),
                remote_hash: remote.as_ref().and_then(Entry::file).map(|m| m.hash),
                remote_modified_at: modified_at(remote.as_ref()),
                remote_size: remote.as_ref().and_then(Entry::file).map(|m| m.size),
                copy_path: copy_path.cloned(),
                sync_id: Some(ctx.sync_id.to_owned()),
                note,
            };
            ctx.journal
                .locked()
                .record_conflict(&new)
                .map_err(|e| ReplicaError::Other(format!("cannot record the conflict: {e}")))
        };
    tally.conflicts += 1;

    if conflict.kind == ConflictKind::CaseCollision {
        let other = conflict
            .other_path
            .as_ref()
            .map(|p| p.to_string())
            .unwrap_or_default();
        record(
            None,
            Some(format!(
                "{path} and {other} differ only in case and cannot both exist on a case-insensitive side; rename one of them"
            )),
        )?;
        return Ok(Vec::new());
    }

    let winner = match strategy {
        Strategy::KeepLocal => Some(Side::Local),
        Strategy::KeepRemote => Some(Side::Remote),
        Strategy::Manual | Strategy::AutoMerge => None,
    };
    if let Some(winner) = winner {
        let id = record(None, None)?;
        let follow_up = keep(ctx, trees, path, winner, tally)?;
        if follow_up.is_empty() {
            resolve_row(ctx, &id, strategy, None)?;
        }
        return Ok(follow_up);
    }

    let mut note = None;
    if strategy == Strategy::AutoMerge {
        match try_merge(ctx, trees, conflict, base)? {
            MergeOutcome::Merged => {
                let id = record(None, None)?;
                resolve_row(ctx, &id, Strategy::AutoMerge, Some("merged cleanly"))?;
                return Ok(Vec::new());
            }
            MergeOutcome::NotMerged(why) => {
                note = Some(format!("auto_merge fell back to manual: {why}"))
            }
        }
    }

    // Manual, or a merge that was not clean.
    match conflict.kind {
        ConflictKind::LocalDeletedRemoteModified | ConflictKind::LocalModifiedRemoteDeleted => {
            let modified = if conflict.kind == ConflictKind::LocalDeletedRemoteModified {
                Side::Remote
            } else {
                Side::Local
            };
            let note = note.unwrap_or_else(|| {
                format!(
                    "the {} side deleted it while the {} side changed it; the changed version was kept",
                    modified.other(),
                    modified
                )
            });
            record(None, Some(note))?;
            keep(ctx, trees, path, modified, tally)
        }
        ConflictKind::BothModified | ConflictKind::BothCreated | ConflictKind::TypeChanged => {
            let Some(remote_entry) = trees.get(Side::Remote).get(path) else {
                record(None, note)?;
                ctx.commit(forget(path));
                return Ok(vec![path.clone()]);
            };
            let expect = executor::expect_of(Some(remote_entry));
            // The copy holds the remote version: it is named after that
            // version's origin, not after this device, which found the
            // conflict but whose version stays under the real name.
            let copy = rename_aside(
                ctx.remote,
                trees,
                path,
                &expect,
                REMOTE_ORIGIN,
                ctx.settings.clock.now(),
            )?;
            ctx.commit(forget(path));
            record(Some(&copy), note)?;
            Ok(vec![path.clone(), copy])
        }
        ConflictKind::CaseCollision => Ok(Vec::new()),
    }
}

/// Renames the remote's `path` aside to a conflict copy name and returns
/// that name. Names carry the second and the device, so a second conflict
/// on the same path within one second (or after a crash that left the
/// first copy unrecorded) would collide with the first copy and fail on
/// every retry within that second: a name either side holds, or the remote
/// refuses as taken, is skipped for the next `-N` variant.
fn rename_aside(
    remote: &dyn Replica,
    trees: &Trees,
    path: &RelPath,
    expect: &Expect,
    device: &str,
    now: SystemTime,
) -> Result<RelPath, ReplicaError> {
    const ATTEMPTS: usize = 20;
    let stamp = timefmt::conflict_stamp(now);
    let taken = |p: &RelPath| trees.local.contains_key(p) || trees.remote.contains_key(p);
    let names = (1..).map(|attempt| path.conflict_copy(&stamp, device, attempt));
    let mut last = None;
    for copy in names.filter(|c| !taken(c)).take(ATTEMPTS) {
        match remote.rename(path, &copy, expect) {
            Ok(()) => return Ok(copy),
            Err(ReplicaError::Changed { path: p }) if p == copy.as_str() => {
                last = Some(ReplicaError::Changed { path: p });
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| ReplicaError::Changed {
        path: path.to_string(),
    }))
}

fn resolve_row(
    ctx: &EngineContext<'_>,
    id: &str,
    strategy: Strategy,
    note: Option<&str>,
) -> Result<(), ReplicaError> {
    ctx.journal
        .locked()
        .resolve_conflict(id, strategy, note)
        .map(|_| ())
        .map_err(|e| ReplicaError::Other(format!("cannot record the resolution: {e}")))
}

/// Makes `winner`'s version of `path` win: its file replaces the loser's,
/// or the loser's entry goes to the trash and the base is forgotten so the
/// next round propagates the winner's state.
fn keep(
    ctx: &EngineContext<'_>,
    trees: &mut Trees,
    path: &RelPath,
    winner: Side,
    tally: &mut RunTally,
) -> Result<Vec<RelPath>, ReplicaError> {
    let loser = winner.other();
    let won = entry(trees, winner, path);
    let lost = entry(trees, loser, path);
    let (actions, follow_up) = match (won, lost) {
        (Some(Entry::File(meta)), None | Some(Entry::File(_))) => (
            // The winner's version as it is, its mode included.
            vec![Action::Copy {
                to: loser,
                path: path.clone(),
                source: meta,
                replaces: lost,
                mode: meta.mode,
            }],
            Vec::new(),
        ),
        // The loser's entry goes to the trash: a folder file by file,
        // deepest first, each checked against what the snapshot saw, then
        // the emptied folder.
        (_, Some(_)) => {
            let below: Vec<Action> = trees
                .get(loser)
                .iter()
                .filter(|(p, _)| p.is_within(path))
                .rev()
                .map(|(p, e)| Action::Delete {
                    side: loser,
                    path: p.clone(),
                    expected: e.entry,
                })
                .collect();
            (below, vec![path.clone()])
        }
        (_, None) => (Vec::new(), vec![path.clone()]),
    };
    let outcome = executor::execute(ctx, trees, &actions, tally);
    if let Some((_, error)) = outcome.failed.into_iter().next() {
        return Err(error);
    }
    if !follow_up.is_empty() {
        ctx.commit(forget(path));
    }
    let mut again = follow_up;
    again.extend(outcome.changed);
    Ok(again)
}

enum MergeOutcome {
    Merged,
    NotMerged(String),
}

/// The content of the file a manual resolution names: a regular file of at
/// most [`MERGED_FILE_MAX_BYTES`]. A FIFO would block the pair's loop until
/// someone wrote to it, and a device such as `/dev/zero` never ends, so
/// what the opened file is (not what its name was a moment before) is
/// checked before a byte is read; the open itself does not wait for a
/// FIFO's writer.
fn read_merged_file(file: &Path) -> Result<Vec<u8>, ResolveError> {
    let refuse =
        |why: String| ResolveError::Invalid(format!("cannot use {}: {why}", file.display()));
    let mut options = fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY);
    }
    let opened = options.open(file).map_err(|e| refuse(e.to_string()))?;
    let meta = opened.metadata().map_err(|e| refuse(e.to_string()))?;
    if !meta.is_file() {
        return Err(refuse(
            "it is not a regular file; save the resolved version to a file and name that".into(),
        ));
    }
    let too_large = || {
        refuse(format!(
            "it is larger than {} MiB; put the resolved version in place of the conflicted \
             file yourself and resolve with --strategy keep_local",
            MERGED_FILE_MAX_BYTES / (1024 * 1024)
        ))
    };
    if meta.len() > MERGED_FILE_MAX_BYTES {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    // It may grow while it is read.
    opened
        .take(MERGED_FILE_MAX_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| refuse(e.to_string()))?;
    if bytes.len() as u64 > MERGED_FILE_MAX_BYTES {
        return Err(too_large());
    }
    Ok(bytes)
}

/// Reads a replica's file for merging, refusing what is too large.
fn read_small(replica: &dyn Replica, path: &RelPath) -> Result<Vec<u8>, ReplicaError> {
    let mut bytes = Vec::new();
    replica
        .open(path)?
        .take(MERGE_MAX_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| ReplicaError::io("read", path, e))?;
    Ok(bytes)
}

/// A three-way text merge of both sides against the stored base content;
/// on success, writes the result to both sides.
fn try_merge(
    ctx: &EngineContext<'_>,
    trees: &mut Trees,
    conflict: &Conflict,
    base: &BaseTree,
) -> Result<MergeOutcome, ReplicaError> {
    let path = &conflict.path;
    if conflict.kind != ConflictKind::BothModified {
        return Ok(MergeOutcome::NotMerged(match conflict.kind {
            ConflictKind::BothCreated => {
                "both sides created it; there is no common base to merge from".into()
            }
            _ => "only two edited text files can be merged".into(),
        }));
    }
    let Some(base_hash) = base.get(path).and_then(|b| b.entry.file()).map(|m| m.hash) else {
        return Ok(MergeOutcome::NotMerged(
            "the base version is unknown".into(),
        ));
    };
    let stored = ctx
        .journal
        .locked()
        .blob(&base_hash)
        .map_err(|e| ReplicaError::Other(format!("journal: {e}")))?;
    let Some(base_bytes) = stored else {
        return Ok(MergeOutcome::NotMerged(
            "the base content was not kept (only small text files are)".into(),
        ));
    };
    let local_bytes = read_small(ctx.local, path)?;
    let remote_bytes = read_small(ctx.remote, path)?;
    let (Ok(base_text), Ok(local_text), Ok(remote_text)) = (
        std::str::from_utf8(&base_bytes),
        std::str::from_utf8(&local_bytes),
        std::str::from_utf8(&remote_bytes),
    ) else {
        return Ok(MergeOutcome::NotMerged("not a text file".into()));
    };
    if !is_text(&local_bytes)
        || !is_text(&remote_bytes)
        || local_bytes.len() as u64 > MERGE_MAX_BYTES
    {
        return Ok(MergeOutcome::NotMerged(
            "not a text file small enough to merge".into(),
        ));
    }
    let merged = match diffy::merge(base_text, local_text, remote_text) {
        Ok(merged) => merged.into_bytes(),
        Err(with_markers) => {
            let hunks = with_markers.matches("<<<<<<<").count();
            return Ok(MergeOutcome::NotMerged(format!(
                "{hunks} overlapping edit{} could not be merged",
                if hunks == 1 { "" } else { "s" }
            )));
        }
    };
    let hash = ContentHash::of_bytes(&merged);
    let now = timefmt::to_unix_ns(ctx.settings.clock.now());
    let local_expect = trees.expect(Side::Local, path);
    let remote_expect = trees.expect(Side::Remote, path);
    // Merged like any mode: the side that changed it wins, else only the
    // bits both allow.
    let mode_of = |entry: Option<Entry>| entry.and_then(|e| e.mode());
    let mode = reconcile::merge_modes(
        mode_of(base.get(path).map(|b| b.entry)),
        mode_of(entry(trees, Side::Local, path)),
        mode_of(entry(trees, Side::Remote, path)),
    );
    let replaced = |side| entry(trees, side, path).and_then(|e| e.file().copied());
    let (local_before, remote_before) = (replaced(Side::Local), replaced(Side::Remote));
    let (written_local, local_trash) =
        ctx.local
            .write_naming_trash(path, &mut &merged[..], &hash, now, mode, &local_expect)?;
    let (written_remote, remote_trash) =
        ctx.remote
            .write_naming_trash(path, &mut &merged[..], &hash, now, mode, &remote_expect)?;
    let mut trashed =
        executor::trashed_version(ctx, Side::Local, path, local_before.as_ref(), local_trash);
    trashed.extend(executor::trashed_version(
        ctx,
        Side::Remote,
        path,
        remote_before.as_ref(),
        remote_trash,
    ));
    let meta = FileMeta {
        hash,
        size: merged.len() as u64,
        mtime_ns: written_local.entry.file().map_or(now, |m| m.mtime_ns),
        mode: written_local.entry.mode().or(mode),
    };
    let base_entry = BaseEntry {
        entry: Entry::File(meta),
        local_id: written_local.id.clone(),
        remote_id: written_remote.id.clone(),
        remote_version: written_remote.version.clone(),
    };
    ctx.commit(Step {
        base: vec![BaseEdit::Put(path.clone(), base_entry)],
        changes: vec![ctx.change(
            ChangeType::Modified,
            path,
            None,
            false,
            Side::Local,
            Some(&meta),
        )],
        blobs: vec![(hash, merged)],
        trashed,
    });
    Ok(MergeOutcome::Merged)
}

/// Why a user's resolution was refused.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("conflict {0} is already resolved")]
    AlreadyResolved(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotClean(String),
    #[error("{0}")]
    Replica(#[from] ReplicaError),
    #[error("journal: {0}")]
    Journal(#[from] crate::journal::JournalError),
}

/// What a user's resolution did.
#[derive(Debug)]
pub struct Resolved {
    pub resolved_at: String,
    pub note: String,
    /// Paths to sync now so the resolution reaches the remote.
    pub paths: Vec<RelPath>,
}

/// The mode a file written in place of what `expect` found keeps: that
/// file's.
fn kept_mode(expect: &Expect) -> Option<Mode> {
    match expect {
        Expect::File { mode, .. } => *mode,
        Expect::Absent | Expect::Dir => None,
    }
}

/// Refuses a resolution when a folder above `path` is no longer a folder
/// here: a later change put a file in its place (or a later conflict moved
/// the folder aside as a copy and the file took its name), so the
/// conflict's files are not where the row says and nothing can be applied
/// to them in place.
fn ensure_folders_hold(
    local: &dyn Replica,
    path: &RelPath,
    row: &ConflictRow,
) -> Result<(), ResolveError> {
    for folder in path.ancestors() {
        match local.stat(&folder)? {
            Expect::Dir => {}
            Expect::Absent => return Ok(()),
            Expect::File { .. } => {
                return Err(ResolveError::Invalid(format!(
                    "{folder} is no longer a folder here (a later change or conflict replaced it), \
                     so conflict {} on {} cannot be applied in place; if its versions were moved \
                     with the folder, settle them by hand and acknowledge the conflict with \
                     --strategy manual",
                    row.id, row.path
                )));
            }
        }
    }
    Ok(())
}

impl PairEngine {
    /// Applies a user's resolution of a waiting conflict to the local
    /// folder; the caller then syncs the returned paths. Every replaced
    /// or removed version goes to the local trash.
    pub fn resolve(
        &self,
        row: &ConflictRow,
        strategy: Strategy,
        merged_file: Option<&Path>,
    ) -> Result<Resolved, ResolveError> {
        if row.status != ConflictStatus::Unresolved {
            return Err(ResolveError::AlreadyResolved(row.id.clone()));
        }
        if merged_file.is_some() && strategy != Strategy::Manual {
            return Err(ResolveError::Invalid(
                "--from FILE goes only with --strategy manual".into(),
            ));
        }
        let local = self.local();
        let path = &row.path;
        // Acknowledging needs nothing in place; every other resolution
        // works on the conflict's files where they were.
        if !(strategy == Strategy::Manual && merged_file.is_none()) {
            for touched in std::iter::once(path).chain(&row.copy_path) {
                ensure_folders_hold(local, touched, row)?;
            }
        }
        let remove_if_present = |p: &RelPath| -> Result<(), ReplicaError> {
            match local.stat(p)? {
                Expect::Absent => Ok(()),
                expect => {
                    self.trash_local_recorded(p, &expect, || local.remove_naming_trash(p, &expect))
                }
            }
        };
        let note = match (row.kind, &row.copy_path) {
            (
                ConflictKind::BothModified | ConflictKind::BothCreated | ConflictKind::TypeChanged,
                Some(copy),
            ) => match strategy {
                Strategy::KeepLocal => {
                    remove_if_present(copy)?;
                    format!("kept the local version; {copy} went to the trash")
                }
                Strategy::KeepRemote => {
                    let found = local.stat(copy)?;
                    if found == Expect::Absent {
                        return Err(ResolveError::Invalid(format!(
                            "the conflict copy {copy} is gone; nothing to restore"
                        )));
                    }
                    remove_if_present(path)?;
                    local.rename(copy, path, &found)?;
                    format!("kept the remote version (from {copy})")
                }
                Strategy::Manual => match merged_file {
                    Some(file) => {
                        self.write_local_from(path, file)?;
                        remove_if_present(copy)?;
                        format!("replaced with {}", file.display())
                    }
                    None => "kept both versions".to_owned(),
                },
                Strategy::AutoMerge => {
                    self.merge_copy(row, copy)?;
                    remove_if_present(copy)?;
                    "merged cleanly".to_owned()
                }
            },
            (ConflictKind::LocalDeletedRemoteModified, _) if strategy == Strategy::KeepLocal => {
                remove_if_present(path)?;
                "deleted it, as the local side had".to_owned()
            }
            (ConflictKind::LocalModifiedRemoteDeleted, _) if strategy == Strategy::KeepRemote => {
                remove_if_present(path)?;
                "deleted it, as the remote side had".to_owned()
            }
            (
                ConflictKind::LocalDeletedRemoteModified | ConflictKind::LocalModifiedRemoteDeleted,
                _,
            ) => "kept the changed version".to_owned(),
            (ConflictKind::CaseCollision, _) => "acknowledged".to_owned(),
            (_, None) => "acknowledged; both sides already agree".to_owned(),
        };
        let resolved_at = self
            .journal
            .locked()
            .resolve_conflict(&row.id, strategy, Some(&note))?;
        let mut paths = vec![path.clone()];
        paths.extend(row.copy_path.clone());
        Ok(Resolved {
            resolved_at,
            note,
            paths,
        })
    }

    fn write_local_from(&self, path: &RelPath, file: &Path) -> Result<(), ResolveError> {
        let bytes = read_merged_file(file)?;
        let hash = ContentHash::of_bytes(&bytes);
        let now = timefmt::to_unix_ns(self.settings.clock.now());
        let expect = self.local().stat(path)?;
        let mode = kept_mode(&expect);
        self.trash_local_recorded(path, &expect, || {
            self.local()
                .write_naming_trash(path, &mut &bytes[..], &hash, now, mode, &expect)
                .map(|(_, trashed)| trashed)
        })?;
        Ok(())
    }

    fn merge_copy(&self, row: &ConflictRow, copy: &RelPath) -> Result<(), ResolveError> {
        let base = match row.base_hash {
            Some(hash) => self.journal.locked().blob(&hash)?,
            None => None,
        };
        let Some(base) = base else {
            return Err(ResolveError::NotClean(
                "the base version was not kept, so a three-way merge is not possible; resolve with --strategy manual --from FILE".into(),
            ));
        };
        let local = read_small(self.local(), &row.path)?;
        let theirs = read_small(self.local(), copy)?;
        let (Ok(base), Ok(ours), Ok(theirs)) = (
            String::from_utf8(base),
            String::from_utf8(local),
            String::from_utf8(theirs),
        ) else {
            return Err(ResolveError::NotClean(
                "not a text file; resolve with another strategy".into(),
            ));
        };
        let merged = diffy::merge(&base, &ours, &theirs).map_err(|_| {
            ResolveError::NotClean(
                "the edits overlap and cannot be merged automatically; edit the file and resolve with --strategy manual --from FILE".into(),
            )
        })?;
        let bytes = merged.into_bytes();
        let hash = ContentHash::of_bytes(&bytes);
        let now = timefmt::to_unix_ns(self.settings.clock.now());
        let expect = self.local().stat(&row.path)?;
        let mode = kept_mode(&expect);
        self.trash_local_recorded(&row.path, &expect, || {
            self.local()
                .write_naming_trash(&row.path, &mut &bytes[..], &hash, now, mode, &expect)
                .map(|(_, trashed)| trashed)
        })?;
        Ok(())
    }
}
