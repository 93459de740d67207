//! A pair's lineage and generation: what lets the engine tell a journal
//! that is older than the remote (restored from a backup, copied from
//! another machine) from the one that last synced the pair.
//!
//! The lineage is a random name given to this journal's copy of a pair when
//! the pair is recorded; the generation counts the transactions that
//! changed the pair's base. The engine keeps, on the remote, the generation
//! this lineage last reached (see `engine/lineage.rs`); a journal whose
//! generation is behind that record has lost base changes it once made, and
//! its base cannot be trusted. This module only stores the two values and
//! starts a new lineage when told to; it decides nothing.

use rusqlite::{Connection, Transaction, TransactionBehavior, params};

use super::{Journal, JournalError, PairId, during};

/// This journal's lineage of a pair and how far it got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lineage {
    /// 32 lowercase hex digits; safe as a file name.
    pub id: String,
    /// How many transactions changed the pair's base in this lineage.
    pub generation: u64,
}

impl Journal {
    /// The lineage of `pair` and its generation.
    pub fn lineage(&self, pair: PairId) -> Result<Lineage, JournalError> {
        during("read the pair's lineage", || read(&self.conn, pair))
    }

    /// Starts a new lineage for `pair`, whose base turned out to be older
    /// than the remote: forgets the base (the next sync compares both sides
    /// afresh, as for a new pair: equal files converge, differing ones are
    /// conflicts) and gives the pair a new lineage at generation 0, so the
    /// remote's record of the old one no longer applies. The old record is
    /// left on the remote: restoring the same backup again is detected
    /// again.
    pub fn start_new_lineage(&self, pair: PairId) -> Result<Lineage, JournalError> {
        during("start a new lineage of the pair", || {
            let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)?;
            tx.prepare_cached("DELETE FROM base WHERE pair_id = ?1")?
                .execute([pair.0])?;
            tx.prepare_cached(
                "UPDATE pairs SET lineage = lower(hex(randomblob(16))), generation = 0 \
                 WHERE id = ?1",
            )?
            .execute([pair.0])?;
            let lineage = read(&tx, pair)?;
            tx.commit()?;
            Ok(lineage)
        })
    }
}

/// Counts one more transaction that changed `pair`'s base; called inside
/// that transaction, so the generation and the base never disagree.
pub(super) fn advance(conn: &Connection, pair: PairId) -> Result<(), JournalError> {
    conn.prepare_cached("UPDATE pairs SET generation = generation + 1 WHERE id = ?1")?
        .execute(params![pair.0])?;
    Ok(())
}

fn read(conn: &Connection, pair: PairId) -> Result<Lineage, JournalError> {
    let (id, generation): (String, i64) = conn
        .prepare_cached("SELECT lineage, generation FROM pairs WHERE id = ?1")?
        .query_row([pair.0], |row| Ok((row.get(0)?, row.get(1)?)))?;
    // The lineage names a file on the remote: nothing but the hex digits
    // the journal generates may get there, whatever a hand edit left.
    let corrupt = |problem: &str| JournalError::CorruptRow {
        table: "pairs",
        row: format!("(id = {})", pair.0),
        problem: problem.to_owned(),
    };
    if id.len() != 32 || !id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(corrupt("the lineage is not 32 lowercase hex digits"));
    }
    let generation =
        u64::try_from(generation).map_err(|_| corrupt("the generation is negative"))?;
    Ok(Lineage { id, generation })
}
