//! Whether the journal is older than the remote, and the remote's record
//! of how far this journal got.
//!
//! A journal restored from a backup (or copied from another machine) has a
//! base older than what this device already agreed on with the remote.
//! Trusting it can destroy content silently: if another device reverts a
//! file to the content the old base holds, the stale base reads the
//! revert as "unchanged on the remote" and this device's newer version as
//! "changed locally", and uploads it over the revert. Nothing in the
//! folders tells such a journal from a current one; the remote has to.
//!
//! The journal gives each pair a *lineage* (a random name for this
//! journal's copy of the pair) and a *generation* (advanced by every
//! transaction that changes the pair's base; see `journal/lineage.rs`).
//! Each run writes the journal's generation to the lineage's own record on
//! the remote (`remote::journal_record`; only this journal writes it, so
//! it needs no lease, and a poll with nothing to do takes none),
//! always after the journal committed it, so for a journal that was never
//! put back, the record is at most its generation. A restored journal is
//! behind what its own lineage already recorded: that, and only that, is
//! the detection. Devices taking turns advance only their own records, so
//! one device's generation never compares with another's, and no number of
//! turns can look like a restore. A new journal (deleted, or a new device)
//! has a new lineage with no record: it syncs as a first sync, as before.
//!
//! A run that finds its journal behind does not trust any of the base: it
//! forgets it and starts a new lineage (`Journal::start_new_lineage`), and
//! the pair is compared afresh, as a new pair with both sides populated
//! is: equal files just get a base, differing ones become conflicts
//! settled by the pair's strategy with both versions kept. The old base
//! still serves that first listing as a hash cache (a file whose identity
//! and version match an entry is not read again), which is as sound as the
//! cache ever is and spares downloading a whole remote to hash it. The old
//! lineage's record stays on the remote, so restoring the same backup
//! again is found again; the new lineage also ends a journal copied to a
//! second machine taking turns with the first.
//!
//! RACE: a crash after a batch is committed in the journal and before the
//! run writes the record, followed by restoring a backup taken before that
//! batch and before any restart, is not detected: the record still shows
//! the older generation. Writing the record before the commit instead
//! would make every such crash look like a restore.

use std::sync::Mutex;

use crate::journal::{Journal, Lineage, PairId};
use crate::locks::LockExt;
use crate::model::BaseTree;
use crate::remote::{Problem, Replica, journal_record};

use super::SyncError;

/// What the start of a run found.
pub(super) enum JournalAge {
    /// The remote's record of this lineage is not ahead of the journal
    /// (or there is none yet).
    Current(Recorded),
    /// The journal was behind: the pair now has a new lineage and no base.
    /// `stale_base` is the forgotten base, for the listing's hash cache.
    Restored {
        recorded: Recorded,
        stale_base: BaseTree,
    },
}

/// What the remote's record holds for the journal, as far as this run
/// knows (`None`: no record).
pub(super) struct Recorded(Option<Lineage>);

/// What status and the log say when a run finds its journal behind.
pub(super) const RESTORED: &str = "the journal is older than the remote (restored from a \
     backup?); re-discovering the pair: its base is not trusted, files that differ on the two \
     sides become conflicts";

/// Compares the journal's lineage with the remote's record of it, starts a
/// new lineage when the journal is behind, and brings the record up to
/// the journal's generation.
pub(super) fn check(
    journal: &Mutex<Journal>,
    pair: PairId,
    remote: &dyn Replica,
    device: &str,
) -> Result<JournalAge, SyncError> {
    let lineage = journal.locked().lineage(pair)?;
    let on_remote = journal_record::read(remote, &lineage.id)?;
    let Some(ahead) = on_remote.filter(|&generation| generation > lineage.generation) else {
        let mut recorded = Recorded(on_remote.map(|generation| Lineage {
            id: lineage.id,
            generation,
        }));
        catch_up(journal, pair, remote, device, &mut recorded)?;
        return Ok(JournalAge::Current(recorded));
    };
    tracing::warn!(
        remote = %remote.describe(),
        journal_generation = lineage.generation,
        remote_generation = ahead,
        "{RESTORED}"
    );
    let stale_base = {
        let journal = journal.locked();
        let stale_base = journal.load_base(pair)?;
        journal.start_new_lineage(pair)?;
        stale_base
    };
    let mut recorded = Recorded(None);
    catch_up(journal, pair, remote, device, &mut recorded)?;
    Ok(JournalAge::Restored {
        recorded,
        stale_base,
    })
}

/// Writes the journal's generation to the remote's record when the journal
/// moved on since the record was last written or read. Call after the
/// journal committed.
pub(super) fn catch_up(
    journal: &Mutex<Journal>,
    pair: PairId,
    remote: &dyn Replica,
    device: &str,
    recorded: &mut Recorded,
) -> Result<(), SyncError> {
    let now = journal.locked().lineage(pair)?;
    if recorded.0.as_ref() == Some(&now) {
        return Ok(());
    }
    journal_record::write(remote, &now.id, now.generation, device)?;
    recorded.0 = Some(now);
    Ok(())
}

/// The note status shows once a run re-discovered the pair.
pub(super) fn restored_notice(at: &str) -> Problem {
    Problem {
        path: None,
        message: format!("{RESTORED} (found {at})"),
    }
}
