//! The record a journal keeps on a pair's remote:
//! `.prism-sync/journals/LINEAGE`, one line `GENERATION DEVICE`, saying how
//! far that journal's lineage of the pair got (see `engine/lineage.rs` for
//! what is concluded from it). The device is there for a person looking;
//! only the generation is read back.
//!
//! Each lineage has a record of its own, written only by the agent whose
//! journal has that lineage, so devices taking turns never touch each
//! other's. How a record is read and replaced is each backend's business
//! ([`Replica::read_record`], [`Replica::write_record`]); its name and
//! content are decided here, once.

use super::{Replica, ReplicaError};

/// The record's name below `.prism-sync/`. `lineage` is hex digits (the
/// journal refuses anything else), so it cannot leave that folder.
fn name(lineage: &str) -> String {
    format!("journals/{lineage}")
}

/// The generation the remote holds for `lineage`, if it holds a record.
/// A record that does not read as one (damaged, or cut short by a crash
/// while it was replaced) counts as none: it is written again at the next
/// sync.
pub fn read(remote: &dyn Replica, lineage: &str) -> Result<Option<u64>, ReplicaError> {
    let Some(text) = remote.read_record(&name(lineage))? else {
        return Ok(None);
    };
    let generation = parse(&text);
    if generation.is_none() {
        tracing::warn!(
            remote = %remote.describe(),
            record = %name(lineage),
            "the remote's record of this journal is damaged; it will be written again"
        );
    }
    Ok(generation)
}

/// Records on the remote that `lineage` reached `generation`.
pub fn write(
    remote: &dyn Replica,
    lineage: &str,
    generation: u64,
    device: &str,
) -> Result<(), ReplicaError> {
    remote.write_record(&name(lineage), &content(generation, device))
}

fn content(generation: u64, device: &str) -> String {
    let device = device.split_whitespace().collect::<Vec<_>>().join("_");
    format!("{generation} {device}\n")
}

fn parse(text: &str) -> Option<u64> {
    text.lines().next()?.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_its_generation_and_a_damaged_one_reads_as_none() {
        assert_eq!(content(42, "my laptop\n"), "42 my_laptop\n");
        assert_eq!(parse(&content(42, "my laptop")), Some(42));
        assert_eq!(parse(&content(0, "")), Some(0));
        assert_eq!(parse(""), None);
        assert_eq!(parse("4x2 laptop\n"), None);
        assert_eq!(parse("-1 laptop\n"), None);
    }
}
