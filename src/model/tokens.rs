//! Identities and version tokens, kept in the shape they usually have.
//!
//! A sync holds an identity and a version token for nearly every path, in
//! the base and in both sides' listings. Held as text, each was a heap
//! allocation of its own (32 bytes with the allocator's header for a
//! `DEV:INO` or `SIZE:MTIME`), more than the rest of a path's entry. The
//! usual shapes are numbers and hex digests, so they are kept as those,
//! inline; anything else is kept as it came.
//!
//! The text is what counts: the journal stores it, remotes are asked for
//! it, and two values are equal exactly when their texts are. A compact
//! shape is taken only when printing it gives back the very same text
//! (`007:1` stays text: printed as numbers it would read `7:1`), so no two
//! shapes ever hold the same text and equal shapes are equal texts. The
//! order of ids is not their texts' (inodes sort by number, before any
//! text): it only has to be a total order, for moves to be matched the same
//! way every time.

use std::borrow::Cow;
use std::fmt::{self, Write as _};

/// An identity a side gives a path that survives renames: an inode on a
/// local file system, a file id where a remote has one. Used only to detect
/// moves; never compared across sides.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId(IdShape);

/// 16 bytes: the text, which is rare, sits behind a second pointer so
/// that it takes no more room than the inode.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum IdShape {
    /// `DEV:INO`: a local file system's device and inode numbers. Linux
    /// device numbers fit in 32 bits (12 for the major, 20 for the
    /// minor); a larger one stays text.
    Inode {
        dev: u32,
        ino: u64,
    },
    Text(Box<Box<str>>),
}

impl FileId {
    /// A local file's identity: its device and inode numbers.
    pub fn inode(dev: u64, ino: u64) -> FileId {
        match u32::try_from(dev) {
            Ok(dev) => FileId(IdShape::Inode { dev, ino }),
            Err(_) => FileId::text(&format!("{dev}:{ino}")),
        }
    }

    /// An identity from its text (the journal's, or a remote's own).
    pub fn new(text: &str) -> FileId {
        match number_pair(text) {
            Some((dev, ino)) => FileId::inode(dev, ino),
            None => FileId::text(text),
        }
    }

    fn text(text: &str) -> FileId {
        FileId(IdShape::Text(Box::new(text.into())))
    }

    /// The identity's text, as the journal stores it.
    pub fn as_str(&self) -> Cow<'_, str> {
        match &self.0 {
            IdShape::Text(text) => Cow::Borrowed(&**text),
            IdShape::Inode { .. } => Cow::Owned(self.to_string()),
        }
    }
}

impl fmt::Display for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            IdShape::Inode { dev, ino } => write!(f, "{dev}:{ino}"),
            IdShape::Text(text) => f.write_str(text),
        }
    }
}

impl fmt::Debug for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FileId({:?})", self.as_str())
    }
}

/// A remote's version token: what a conditional write on the remote must
/// still find there (an ETag, a blob id, or size and mtime).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct VersionToken(TokenShape);

#[derive(Clone, PartialEq, Eq, Hash)]
enum TokenShape {
    /// `SIZE:MTIME` (a folder replica's size and mtime in nanoseconds;
    /// WebDAV's size and mtime where a server gives no ETag).
    SizeMtime {
        size: u64,
        mtime: i64,
    },
    /// `SIZE:MTIME:NONCE` (SFTP's size, mtime and atime in seconds). Both
    /// times fit in 32 bits until 2106; a later one stays text.
    SizeMtimeNonce {
        size: u64,
        mtime: u32,
        nonce: u32,
    },
    /// 40 lowercase hex digits (a git blob id).
    Hex20([u8; 20]),
    /// 32 lowercase hex digits in double quotes (an MD5 ETag, as S3 and
    /// many WebDAV servers give it).
    QuotedHex16([u8; 16]),
    Text(Box<str>),
}

impl VersionToken {
    /// The token a folder replica gives a file: its size and mtime.
    pub fn size_mtime(size: u64, mtime_ns: i64) -> VersionToken {
        VersionToken(TokenShape::SizeMtime {
            size,
            mtime: mtime_ns,
        })
    }

    /// The size and mtime a [`VersionToken::size_mtime`] token holds.
    pub fn as_size_mtime(&self) -> Option<(u64, i64)> {
        match self.0 {
            TokenShape::SizeMtime { size, mtime } => Some((size, mtime)),
            _ => None,
        }
    }

    /// A token from its text (the journal's, or a remote's own).
    pub fn new(text: &str) -> VersionToken {
        VersionToken(TokenShape::of(text))
    }

    /// The token's text.
    pub fn as_str(&self) -> Cow<'_, str> {
        match &self.0 {
            TokenShape::Text(text) => Cow::Borrowed(text),
            _ => Cow::Owned(self.to_string()),
        }
    }
}

impl TokenShape {
    fn of(text: &str) -> TokenShape {
        TokenShape::compact(text).unwrap_or_else(|| TokenShape::Text(text.into()))
    }

    /// The compact shape that prints as `text`, if one does.
    fn compact(text: &str) -> Option<TokenShape> {
        if let Some((size, rest)) = text.split_once(':') {
            let size = canonical_u64(size)?;
            if let Some(mtime) = canonical_i64(rest) {
                return Some(TokenShape::SizeMtime { size, mtime });
            }
            let (mtime, nonce) = rest.split_once(':')?;
            let mtime = u32::try_from(canonical_u64(mtime)?).ok()?;
            let nonce = u32::try_from(canonical_u64(nonce)?).ok()?;
            return Some(TokenShape::SizeMtimeNonce { size, mtime, nonce });
        }
        if let Some(bytes) = lower_hex::<20>(text) {
            return Some(TokenShape::Hex20(bytes));
        }
        let quoted = text.strip_prefix('"')?.strip_suffix('"')?;
        lower_hex::<16>(quoted).map(TokenShape::QuotedHex16)
    }
}

impl fmt::Display for VersionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            TokenShape::SizeMtime { size, mtime } => write!(f, "{size}:{mtime}"),
            TokenShape::SizeMtimeNonce { size, mtime, nonce } => {
                write!(f, "{size}:{mtime}:{nonce}")
            }
            TokenShape::Hex20(bytes) => write_hex(f, bytes),
            TokenShape::QuotedHex16(bytes) => {
                f.write_char('"')?;
                write_hex(f, bytes)?;
                f.write_char('"')
            }
            TokenShape::Text(text) => f.write_str(text),
        }
    }
}

impl fmt::Debug for VersionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.as_str(), f)
    }
}

impl From<&str> for VersionToken {
    fn from(text: &str) -> VersionToken {
        VersionToken::new(text)
    }
}

impl From<String> for VersionToken {
    fn from(text: String) -> VersionToken {
        VersionToken::new(&text)
    }
}

/// Compares without printing: a listing compares every file's token with
/// the base's.
impl PartialEq<str> for VersionToken {
    fn eq(&self, other: &str) -> bool {
        match &self.0 {
            TokenShape::Text(text) => **text == *other,
            shape => TokenShape::compact(other).as_ref() == Some(shape),
        }
    }
}

impl PartialEq<&str> for VersionToken {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// Two unsigned decimal numbers joined by `:`, each as it prints.
fn number_pair(text: &str) -> Option<(u64, u64)> {
    let (a, b) = text.split_once(':')?;
    Some((canonical_u64(a)?, canonical_u64(b)?))
}

/// A number written as `u64` prints it, or `None`.
fn canonical_u64(text: &str) -> Option<u64> {
    let canonical = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    canonical.then(|| text.parse().ok()).flatten()
}

/// A number written as `i64` prints it (no `+`, no `-0`), or `None`.
fn canonical_i64(text: &str) -> Option<i64> {
    match text.strip_prefix('-') {
        Some(magnitude) => 0i64
            .checked_sub_unsigned(canonical_u64(magnitude)?)
            .filter(|n| *n < 0),
        None => i64::try_from(canonical_u64(text)?).ok(),
    }
}

/// Exactly `2 * N` lowercase hex digits, as bytes.
fn lower_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let digits = text.as_bytes();
    if digits.len() != 2 * N {
        return None;
    }
    let value = |digit: u8| match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        _ => None,
    };
    let mut out = [0; N];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = value(pair[0])? << 4 | value(pair[1])?;
    }
    Some(out)
}

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    bytes.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every text comes back as it went in, whatever shape holds it.
    #[test]
    fn texts_round_trip() {
        for text in [
            "4096:1733420000123456789",
            "0:0",
            "12:-5",
            "12:-0",
            "-1:5",
            "007:1",
            "1:01",
            ":1",
            "1:",
            "18446744073709551615:9223372036854775807",
            "18446744073709551616:1",
            "1:9223372036854775808",
            "1:-9223372036854775808",
            "1:-9223372036854775809",
            "5:1733420000:1733420007",
            "5:4294967296:1",
            "5:1:2:3",
            "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391",
            "E69DE29BB2D1D6434B8B29AE775AD8C2E48C5391",
            "e69de29bb2d1d6434b8b29ae775ad8c2e48c539",
            "\"d41d8cd98f00b204e9800998ecf8427e\"",
            "\"d41d8cd98f00b204e9800998ecf8427e-2\"",
            "d41d8cd98f00b204e9800998ecf8427e",
            "W/\"5-abc\"",
            "\"5-abc\"",
            "",
            "ünïcode:1",
        ] {
            let token = VersionToken::new(text);
            assert_eq!(token.to_string(), text, "{text}");
            assert_eq!(token.as_str(), text, "{text}");
            assert_eq!(FileId::new(text).to_string(), text, "{text}");
        }
    }

    #[test]
    fn usual_shapes_are_not_text() {
        for text in [
            "4096:1733420000123456789",
            "12:-5",
            "5:1733420000:1733420007",
            "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391",
            "\"d41d8cd98f00b204e9800998ecf8427e\"",
        ] {
            assert!(
                !matches!(VersionToken::new(text).0, TokenShape::Text(_)),
                "{text}"
            );
        }
        assert!(matches!(
            FileId::new("2049:1234567").0,
            IdShape::Inode {
                dev: 2049,
                ino: 1234567
            }
        ));
        // A device number past 32 bits keeps its text, and equals the
        // same identity read back from the journal.
        let big = FileId::inode(1 << 40, 7);
        assert!(matches!(big.0, IdShape::Text(_)));
        assert_eq!(big, FileId::new("1099511627776:7"));
        assert_eq!(big.to_string(), "1099511627776:7");
        for text in ["12:-0", "007:1", "1:-9223372036854775809", "5:4294967296:1"] {
            assert!(
                matches!(VersionToken::new(text).0, TokenShape::Text(_)),
                "{text}"
            );
        }
    }

    /// Equal exactly when the texts are: the shape taken never depends on
    /// how a token was made.
    #[test]
    fn equal_when_the_texts_are() {
        assert_eq!(
            VersionToken::size_mtime(4096, -3),
            VersionToken::new("4096:-3")
        );
        assert_eq!(FileId::inode(1, 2), FileId::new("1:2"));
        assert_ne!(VersionToken::new("1:2"), VersionToken::new("1:02"));
        assert_ne!(FileId::new("1:2"), FileId::new("01:2"));
        assert_eq!(VersionToken::new("\"abc\""), "\"abc\"");
        assert_eq!(VersionToken::new("1:2"), "1:2");
        assert_ne!(VersionToken::new("1:2"), "1:02");
        assert_ne!(VersionToken::new("1:02"), "1:2");
    }

    /// A token or identity costs no heap in its usual shapes, and no more
    /// room than the `String` it replaced (an identity two thirds of it).
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn they_stay_small() {
        use std::mem::size_of;
        assert_eq!(size_of::<Option<FileId>>(), 16);
        assert_eq!(size_of::<Option<VersionToken>>(), 24);
    }
}
