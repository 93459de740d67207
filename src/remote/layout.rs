//! How Prism Sync lays out its own files on a replica, beside the synced
//! ones: the metadata folder (`.prism-sync/`: the root marker of a remote,
//! the trash, the lease and the agents' records), the local root marker,
//! and the names of temporary and partial files. Every backend and the
//! careful file-system primitives (`fsops`) name them from here, and the
//! ignore rules (`tracker::ignore`) reserve them, so "is this one of
//! ours?" has one answer.

use std::sync::Mutex;
use std::time::SystemTime;

use crate::locks::LockExt;
use crate::model::MAX_NAME_BYTES;
use crate::timefmt;

/// Our metadata folder at the pair root (the remote trash lives there).
pub const METADATA_DIR: &str = ".prism-sync";

/// The marker file that tells a pair root from an empty mount point.
pub const ROOT_MARKER_FILE: &str = ".prism-sync-root";

/// Every temporary file we write starts with this prefix.
pub const TEMP_PREFIX: &str = ".prism-tmp-";

/// Length of the random part of a temporary name.
const TEMP_RANDOM_CHARS: usize = 8;

/// True for names of our temporary files (see [`temp_name_for`]).
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with(TEMP_PREFIX)
}

/// A fresh temporary name for writing `name` atomically in the same folder:
/// `.prism-tmp-<random>-<name>`, with `name` shortened (at a character
/// boundary) so the result stays within 255 bytes.
pub fn temp_name_for(name: &str) -> String {
    let random: String = std::iter::repeat_with(fastrand::alphanumeric)
        .take(TEMP_RANDOM_CHARS)
        .collect();
    let budget = MAX_NAME_BYTES - TEMP_PREFIX.len() - TEMP_RANDOM_CHARS - 1;
    let mut cut = name.len().min(budget);
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{TEMP_PREFIX}{random}-{}", &name[..cut])
}

/// What follows [`TEMP_PREFIX`] in the name of a partial download.
const PARTIAL_MARK: &str = "part-";

/// How many hex digits of the content hash a partial download's name
/// carries: enough that two versions never share a name by chance.
const PARTIAL_HASH_CHARS: usize = 32;

/// The name under which a download of `name` whose content hashes to
/// `hash_hex` is kept while it arrives: `.prism-tmp-part-<hash>-<name>`.
/// Unlike [`temp_name_for`] it is the same at every attempt, so an attempt
/// after a broken one finds the bytes that already arrived and continues
/// them; and it names the version, so bytes of another version of the same
/// file are never continued. Shortened like `temp_name_for`.
pub fn partial_name_for(name: &str, hash_hex: &str) -> String {
    let hash = &hash_hex[..hash_hex.len().min(PARTIAL_HASH_CHARS)];
    let budget = MAX_NAME_BYTES - TEMP_PREFIX.len() - PARTIAL_MARK.len() - hash.len() - 1;
    let mut cut = name.len().min(budget);
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{TEMP_PREFIX}{PARTIAL_MARK}{hash}-{}", &name[..cut])
}

/// True for names of partial downloads (see [`partial_name_for`]).
pub fn is_partial_name(name: &str) -> bool {
    name.strip_prefix(TEMP_PREFIX)
        .is_some_and(|rest| rest.starts_with(PARTIAL_MARK))
}

/// The folder of a remote's trash, below [`METADATA_DIR`].
pub const TRASH_DIR: &str = "trash";

/// The length of a trash batch's minute, `YYYYMMDD-HHMM`.
const BATCH_MINUTE_LEN: usize = 13;

/// Length of the random tag of a batch of its own.
const BATCH_TAG_CHARS: usize = 8;

/// The trash batch of versions trashed at `at`: a folder named after the
/// minute (`YYYYMMDD-HHMM`), so names sort as time and a purge can tell a
/// batch's age from its name. Below it, each version keeps the path it
/// had: `BATCH/notes/a.md`.
pub fn trash_batch(at: SystemTime) -> String {
    let mut stamp = timefmt::conflict_stamp(at);
    stamp.truncate(BATCH_MINUTE_LEN);
    stamp
}

/// A new batch for the minute of `at`, `YYYYMMDD-HHMM-TAG` with a random
/// tag: where a name in the minute's batch is taken (the same path
/// trashed twice in one minute; [`TrashBatches`] then sends the rest of
/// the minute there too), or where a backend cannot move without
/// replacing and agents racing could choose one name. The version
/// keeps its own path below it, never a suffixed one, so every name in
/// the trash is one the pair had (and an encrypted trash stays readable by
/// rclone's crypt, which skips names it cannot decrypt).
pub fn spare_trash_batch(at: SystemTime) -> String {
    tagged_trash_batch(at, &trash_batch_tag())
}

/// A random tag for [`tagged_trash_batch`].
pub fn trash_batch_tag() -> String {
    std::iter::repeat_with(|| fastrand::digit(36))
        .take(BATCH_TAG_CHARS)
        .collect()
}

/// The batch of the minute of `at` with `tag` (from [`trash_batch_tag`]):
/// a replica that cannot move without replacing keeps one tag, so agents
/// racing never share a batch while its own versions of one minute do.
pub fn tagged_trash_batch(at: SystemTime, tag: &str) -> String {
    format!("{}-{tag}", trash_batch(at))
}

/// Which batch a replica trashes into: the minute's own batch (or its
/// tagged one, see [`tagged_trash_batch`]) until a name there is taken
/// (the same path trashed twice in a minute, a file where a folder must
/// go); from then on, for the rest of the minute, a batch of its own
/// ([`spare_trash_batch`]), and a new one each time a name in that one is
/// taken. So a path saved ten times in a minute makes ten batches, but a
/// hundred paths each trashed twice make two, not a hundred and one: on a
/// remote every batch costs its folders to make.
#[derive(Debug, Default)]
pub struct TrashBatches {
    /// The tag of the minute's first batch, where a replica has one.
    tag: Option<String>,
    /// The minute (its batch's name) and the batch versions go to then.
    current: Mutex<Option<(String, String)>>,
}

impl TrashBatches {
    /// Batches that start each minute with [`trash_batch`].
    pub fn new() -> TrashBatches {
        TrashBatches::default()
    }

    /// Batches that start each minute with [`tagged_trash_batch`].
    pub fn tagged(tag: String) -> TrashBatches {
        TrashBatches {
            tag: Some(tag),
            current: Mutex::default(),
        }
    }

    /// The batch a version trashed at `at` goes to first.
    pub fn batch(&self, at: SystemTime) -> String {
        let minute = trash_batch(at);
        let current = self.current.locked();
        match &*current {
            Some((of, batch)) if *of == minute => batch.clone(),
            _ => self.first(at),
        }
    }

    /// The batch to try after a name in `batch` was found taken for a
    /// version trashed at `at`; later versions of the minute go there too.
    pub fn taken(&self, at: SystemTime, batch: &str) -> String {
        let minute = trash_batch(at);
        let mut current = self.current.locked();
        match &*current {
            // Another version of the minute moved on already.
            Some((of, newer)) if *of == minute && newer != batch => return newer.clone(),
            // A minute before the current one (a thread that read the clock
            // before the minute turned): a batch of its own, leaving the
            // current minute's alone.
            Some((of, _)) if minute < *of => return spare_trash_batch(at),
            _ => {}
        }
        let spare = spare_trash_batch(at);
        *current = Some((minute, spare.clone()));
        spare
    }

    fn first(&self, at: SystemTime) -> String {
        match &self.tag {
            Some(tag) => tagged_trash_batch(at, tag),
            None => trash_batch(at),
        }
    }
}

/// Whether `name`, a folder in a trash, is a batch made before the minute
/// of `cutoff` (and may be purged). Anything that is not a batch's name is
/// not ours to delete.
pub fn trash_batch_is_older(name: &str, cutoff: SystemTime) -> bool {
    let minute = name.get(..BATCH_MINUTE_LEN).filter(|minute| {
        minute.bytes().enumerate().all(|(i, b)| {
            if i == 8 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        })
    });
    let tag_ok = match name.get(BATCH_MINUTE_LEN..) {
        Some("") => true,
        Some(rest) => rest.strip_prefix('-').is_some_and(|tag| {
            tag.len() == BATCH_TAG_CHARS && tag.bytes().all(|b| b.is_ascii_alphanumeric())
        }),
        None => false,
    };
    minute.is_some_and(|minute| tag_ok && minute < trash_batch(cutoff).as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_are_ours_and_fit_in_a_file_name() {
        let name = temp_name_for("notes.md");
        assert!(is_temp_name(&name));
        assert!(name.ends_with("-notes.md"));
        assert_ne!(name, temp_name_for("notes.md"));
        assert!(!is_temp_name("notes.md"));

        let long = "é".repeat(127) + "x";
        let name = temp_name_for(&long);
        assert!(name.len() <= MAX_NAME_BYTES, "{} bytes", name.len());
        assert!(is_temp_name(&name));
    }

    #[test]
    fn partial_names_are_temporary_stable_and_name_the_version() {
        let v1 = "ab".repeat(32);
        let v2 = "cd".repeat(32);
        let name = partial_name_for("big.bin", &v1);
        assert!(is_temp_name(&name) && is_partial_name(&name));
        assert!(name.ends_with("-big.bin"));
        assert_eq!(name, partial_name_for("big.bin", &v1));
        assert_ne!(name, partial_name_for("big.bin", &v2));
        assert!(!is_partial_name(&temp_name_for("big.bin")));

        let long = "é".repeat(127) + "x";
        let name = partial_name_for(&long, &v1);
        assert!(name.len() <= MAX_NAME_BYTES, "{} bytes", name.len());
        assert!(is_partial_name(&name));
    }

    #[test]
    fn a_taken_name_moves_the_rest_of_the_minute_to_one_spare_batch() {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_764_950_400 + 5);
        let batches = TrashBatches::new();
        let minute = trash_batch(at);
        assert_eq!(batches.batch(at), minute);
        let spare = batches.taken(at, &minute);
        assert!(spare.starts_with(&format!("{minute}-")), "{spare}");
        // Later versions of the minute go to the spare, and a caller
        // that still held the minute's batch is sent there as well.
        assert_eq!(batches.batch(at), spare);
        assert_eq!(batches.taken(at, &minute), spare);
        // A name taken in the spare: a new one.
        let second = batches.taken(at, &spare);
        assert_ne!(second, spare);
        assert_eq!(batches.batch(at), second);
        // The next minute starts with its own batch again; a name found
        // taken in a minute before it (a thread that read the clock just
        // before the minute turned) leaves the current minute's alone.
        let later = at + std::time::Duration::from_secs(60);
        assert_eq!(batches.batch(later), trash_batch(later));
        let later_spare = batches.taken(later, &trash_batch(later));
        let late = batches.taken(at, &second);
        assert!(late.starts_with(&minute) && late != second, "{late}");
        assert_eq!(batches.batch(later), later_spare);

        let tagged = TrashBatches::tagged("abcd1234".into());
        assert_eq!(tagged.batch(at), format!("{minute}-abcd1234"));
        let spare = tagged.taken(at, &tagged.batch(at));
        assert_ne!(spare, format!("{minute}-abcd1234"));
        assert_eq!(tagged.batch(at), spare);
    }

    #[test]
    fn trash_batches_are_named_by_their_minute_and_purged_by_it() {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_764_950_400 + 95);
        let batch = trash_batch(at);
        assert_eq!(batch.len(), 13);
        let spare = spare_trash_batch(at);
        assert!(spare.starts_with(&format!("{batch}-")), "{spare}");
        assert_ne!(
            spare,
            spare_trash_batch(at),
            "spare batches are each their own"
        );
        let later = at + std::time::Duration::from_secs(120);
        for name in [&batch, &spare] {
            assert!(trash_batch_is_older(name, later), "{name}");
            assert!(
                !trash_batch_is_older(name, at),
                "{name}: not before its own minute"
            );
        }
        for foreign in [
            "notes",
            "20251205-1601x",
            "20251205-1601-short",
            "2025120501601",
            "",
        ] {
            assert!(
                !trash_batch_is_older(foreign, later),
                "{foreign:?} is not ours"
            );
        }
    }
}
