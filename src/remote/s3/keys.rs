//! Object keys: which ones the client sends, and what a listed key means
//! relative to the pair's prefix.
//!
//! A key the client addresses is the prefix plus a relative key that
//! passes [`RelPath::new`] (with one trailing `/` allowed, for a folder
//! marker), so no request can name a key with `.`, `..` or empty segments
//! (which URL handling would also fold away) or control characters.
//! A listed key is hostile input: it must be UTF-8, lie under the prefix,
//! be no longer than S3's limit and, relative to the prefix, pass
//! [`RelPath::new`]; anything else is refused with a reason, one key at a
//! time, and the rest of the listing goes on.

use crate::model::RelPath;

/// S3's limit on a key's length in bytes. A longer key cannot come from a
/// real S3 service; it is refused (this also bounds a key's depth: a
/// 1,000-deep key needs at least 1,999 bytes).
pub const MAX_KEY_BYTES: usize = 1024;

/// How much of a refused key a message shows.
const SHOWN_KEY_CHARS: usize = 120;

/// Checks a relative key the client is asked to address: a [`RelPath`],
/// or one followed by `/` (a folder marker). Returns the reason on refusal.
pub fn check_relative(rel: &str, prefix: &str) -> Result<(), String> {
    let path = rel.strip_suffix('/').unwrap_or(rel);
    RelPath::new(path).map_err(|e| e.to_string())?;
    if prefix.len() + rel.len() > MAX_KEY_BYTES {
        return Err(format!(
            "the key {} is longer than S3's {MAX_KEY_BYTES} bytes",
            shown(rel)
        ));
    }
    Ok(())
}

/// What one listed key is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Listed {
    /// A key below the prefix, relative to it (ending in `/` for a folder
    /// marker).
    Key(String),
    /// The prefix's own folder marker (`PREFIX/`): no entry.
    Prefix,
}

/// Maps a listed key (as bytes, after URL decoding) to its place below
/// `prefix` (empty, or ending in `/`), or says why it is refused.
pub fn relative_to_prefix(key: &[u8], prefix: &str) -> Result<Listed, String> {
    let Ok(key) = std::str::from_utf8(key) else {
        return Err(format!(
            "the key {} is not valid UTF-8",
            shown(&String::from_utf8_lossy(key))
        ));
    };
    if key.len() > MAX_KEY_BYTES {
        return Err(format!(
            "the key {} is longer than S3's {MAX_KEY_BYTES} bytes",
            shown(key)
        ));
    }
    let Some(rel) = key.strip_prefix(prefix) else {
        return Err(format!(
            "the key {} is not under the prefix {prefix:?} that was listed",
            shown(key)
        ));
    };
    if rel.is_empty() {
        return Ok(Listed::Prefix);
    }
    if rel.starts_with('/') {
        return Err(format!(
            "the key {} is absolute below the prefix",
            shown(key)
        ));
    }
    let path = rel.strip_suffix('/').unwrap_or(rel);
    match RelPath::new(path) {
        Ok(_) => Ok(Listed::Key(rel.to_owned())),
        Err(e) => Err(format!("the key {} is refused: {e}", shown(key))),
    }
}

/// A key for a message: escaped (control characters visible) and cut.
pub fn shown(key: &str) -> String {
    let cut: String = key.chars().take(SHOWN_KEY_CHARS).collect();
    if cut.len() < key.len() {
        format!("{:?}… ({} bytes)", cut, key.len())
    } else {
        format!("{cut:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_below_the_prefix_map_to_relative_keys_and_markers_keep_their_slash() {
        assert_eq!(
            relative_to_prefix(b"photos/2024/a.jpg", "photos/"),
            Ok(Listed::Key("2024/a.jpg".into()))
        );
        assert_eq!(
            relative_to_prefix(b"photos/2024/", "photos/"),
            Ok(Listed::Key("2024/".into()))
        );
        assert_eq!(
            relative_to_prefix(b"photos/", "photos/"),
            Ok(Listed::Prefix)
        );
        assert_eq!(
            relative_to_prefix(b"top.txt", ""),
            Ok(Listed::Key("top.txt".into()))
        );
    }

    #[test]
    fn hostile_keys_are_refused_each_with_its_reason() {
        let refused = |key: &[u8]| relative_to_prefix(key, "p/").unwrap_err();
        assert!(refused(b"p/a/../../etc/passwd").contains("`..`"));
        assert!(refused(b"p//etc/passwd").contains("absolute"));
        assert!(refused(b"/p/x").contains("not under the prefix"));
        assert!(refused(b"other/x").contains("not under the prefix"));
        assert!(refused(b"p/a\0b").contains("control character"));
        assert!(refused(b"p/a\xffb").contains("UTF-8"));
        assert!(refused(b"p/./a").contains("`.`"));
        assert!(refused(b"p/a//b").contains("empty"));
        assert!(refused(b"p/a\\..\\b").contains("control character"));
        let deep = format!("p/{}", "a/".repeat(1000));
        let message = refused(deep.as_bytes());
        assert!(message.contains("longer than"), "{message}");
        assert!(message.len() < 400, "the message is cut: {message}");
    }

    #[test]
    fn the_client_addresses_only_clean_relative_keys() {
        assert!(check_relative("a/b.txt", "p/").is_ok());
        assert!(check_relative("a/", "p/").is_ok());
        assert!(check_relative("a/../b", "p/").is_err());
        assert!(check_relative("/a", "p/").is_err());
        assert!(check_relative("a//", "p/").is_err());
        assert!(check_relative("", "p/").is_err());
        assert!(check_relative(&"x".repeat(1023), "p/").is_err());
    }
}
