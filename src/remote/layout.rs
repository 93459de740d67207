//! How Prism Sync lays out its own files on a replica, beside the synced
//! ones: the metadata folder (`.prism-sync/`: the root marker of a remote,
//! the trash, the lease and the agents' records), the local root marker,
//! and the names of temporary and partial files. Every backend and the
//! careful file-system primitives (`fsops`) name them from here, and the
//! ignore rules (`tracker::ignore`) reserve them, so "is this one of
//! ours?" has one answer.

use crate::model::MAX_NAME_BYTES;

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
}
